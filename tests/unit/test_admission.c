/* Cost arithmetic, token buckets, budgets and admission (src/pipeline/record.c cost,
 * src/policy/limits.c, src/policy/budget.c, src/pipeline/admission.c), on a configuration
 * with known prices and an access configuration built here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_gen.h"

#include "sophia/access.h"
#include "sophia/api.h"
#include "sophia/core.h"
#include "sophia/log.h"
#include "sophia/pipeline.h"
#include "sophia/route.h"

static const char CONFIG[] =
    "{\"providers\":{\n"
    " \"lambda\":{\"base_url\":\"http://127.0.0.1:1/v1\",\"api_key\":null,\n"
    "   \"models\":[{\"id\":\"small-m\",\"tier\":\"small\",\"price_in\":1,\"price_out\":2},\n"
    "     {\"id\":\"big-m\",\"tier\":\"large\",\"price_in\":10,\"price_out\":30}]},\n"
    " \"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"tok-123456\","
    "\"base_url\":\"http://127.0.0.1:1\",\"models\":[{\"id\":\"llama3.1-8b\"}]}},\n"
    " \"routing\":{\"fallbacks\":{\"lambda/small-m\":[\"lambda/big-m\"]}}}";

static sg_gen_t *gen;
static sg_access_cfg_t acc;
static struct sg_access_cfg *saved;
static sg_key_cfg_t key;

static int setup(void **state)
{
    SG_UNUSED(state);
    gen = test_gen_load(CONFIG);
    if (!gen) return -1;
    saved = gen->cfg.access;
    gen->cfg.access = &acc;
    return 0;
}

static int teardown(void **state)
{
    SG_UNUSED(state);
    gen->cfg.access = saved;
    sg_gen_unref(gen);
    sg_scopes_clear();
    return 0;
}

/* Each test starts from fresh scopes and an access configuration with one key. */
static int fresh(void **state)
{
    SG_UNUSED(state);
    sg_scopes_clear();
    memset(&acc, 0, sizeof(acc));
    acc.default_max_tokens = 1000;
    memset(&key, 0, sizeof(key));
    key.name = "alice";
    return 0;
}

static cJSON *chat_body(long max_tokens)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "model", "lambda/small-m");
    if (max_tokens) cJSON_AddNumberToObject(b, "max_tokens", (double)max_tokens);
    return b;
}

static void plan_for(const char *model, sg_plan_t *plan)
{
    sg_hints_t h = {.complexity = -1};
    sg_error_t e;
    assert_int_equal(sg_route_plan(gen, model, &h, NULL, plan, &e), 0);
}

/* Admits one request for model with prompt_est and max_tokens; returns the outcome. */
static sg_admit_t admit(sg_record_t *rec, const char *model, long prompt, long max_tokens,
                        sg_error_t *e)
{
    sg_plan_t plan;
    plan_for(model, &plan);
    memset(rec, 0, sizeof(*rec));
    rec->ticket.key = &key;
    rec->ticket.prompt_est = prompt;
    cJSON *b = chat_body(max_tokens);
    uint64_t wait = 0;
    sg_admit_t a = sg_admit(gen, &plan, b, SG_OP_CHAT, rec, 0, &wait, e);
    cJSON_Delete(b);
    rec->price_in = plan.routes[0].model->price_in_per_mtok;
    rec->price_out = plan.routes[0].model->price_out_per_mtok;
    return a;
}

static void finish(sg_record_t *rec, long prompt, long completion)
{
    rec->usage.prompt_tokens = prompt;
    rec->usage.completion_tokens = completion;
    rec->usage.known = 1;
    sg_record_cost(rec);
    sg_admit_settle(rec);
}

/* ---- cost ---------------------------------------------------------------------------------- */

static void test_cost_arithmetic(void **state)
{
    SG_UNUSED(state);
    /* Input and output apart; guard tokens at the input price; cached ones are part of the
     * prompt. */
    sg_usage_t u = {.prompt_tokens = 1000,
                    .completion_tokens = 500,
                    .cached_tokens = 200,
                    .guard_tokens = 100,
                    .known = 1};
    double in, out;
    double c = sg_usage_cost(&u, 3.0, 15.0, &in, &out);
    assert_true(in > 0.0033 - 1e-12 && in < 0.0033 + 1e-12);
    assert_true(out > 0.0075 - 1e-12 && out < 0.0075 + 1e-12);
    assert_true(c > 0.0108 - 1e-12 && c < 0.0108 + 1e-12);
    /* Negative counts never make a negative cost. */
    sg_usage_t bad = {.prompt_tokens = -5, .completion_tokens = -1};
    assert_true(sg_usage_cost(&bad, 3, 15, NULL, NULL) == 0);
}

static void test_cost_per_provider(void **state)
{
    SG_UNUSED(state);
    /* Lambda: the configured prices; Cortex: credits × the credit price, from the built-in
     * table (a positive price per 1M tokens). */
    sg_plan_t plan;
    plan_for("lambda/big-m", &plan);
    assert_true(plan.routes[0].model->price_in_per_mtok == 10);
    sg_record_t r = {.price_in = 10, .price_out = 30};
    r.usage = (sg_usage_t){.prompt_tokens = 2000, .completion_tokens = 1000, .known = 1};
    assert_true(sg_record_cost(&r) > 0.05 - 1e-12 && r.cost_usd < 0.05 + 1e-12);
    assert_true(r.cost_in_usd > 0.02 - 1e-12 && r.cost_out_usd > 0.03 - 1e-12);
    plan_for("cortex/llama3.1-8b", &plan);
    const sg_model_cfg_t *m = plan.routes[0].model;
    assert_true(m->price_in_per_mtok > 0 && m->price_out_per_mtok > 0);
    sg_record_t cr = {.price_in = m->price_in_per_mtok, .price_out = m->price_out_per_mtok};
    cr.usage = (sg_usage_t){.prompt_tokens = 1000000, .completion_tokens = 0, .known = 1};
    double c = sg_record_cost(&cr);
    assert_true(c > m->price_in_per_mtok - 1e-9 && c < m->price_in_per_mtok + 1e-9);
}

/* ---- token buckets --------------------------------------------------------------------------- */

static void test_bucket_refill_and_wait(void **state)
{
    SG_UNUSED(state);
    sg_scope_t *s = sg_scope_get(SG_SCOPE_KEY, "b");
    sg_limits_cfg_t l = {.rpm = 2, .tpm = 600};
    uint64_t t0 = 1000000000ull;
    const char *what;
    sg_limits_refill(s, &l, t0);
    assert_int_equal(sg_limits_wait_ms(s, 100, 0, &what), 0);
    sg_limits_take(s, 100, 0);
    sg_limits_take(s, 100, 0);
    /* No request left: one refills in 30 s (2 per minute). */
    assert_int_equal(sg_limits_wait_ms(s, 100, 0, &what), 30000);
    assert_string_equal(what, "requests");
    sg_limits_refill(s, &l, t0 + 15000000000ull);
    assert_int_equal(sg_limits_wait_ms(s, 100, 0, &what), 15000);
    sg_limits_refill(s, &l, t0 + 30000000000ull);
    assert_int_equal(sg_limits_wait_ms(s, 100, 0, &what), 0);
    /* Tokens: 400 left + 150 refilled in 15 s; 700 more than the limit: never. */
    assert_int_equal(sg_limits_wait_ms(s, 700, 0, &what), UINT64_MAX);
    /* Settling below the estimate gives tokens back (never above the limit). */
    sg_limits_settle(s, 100, 10, 0, 0);
    sg_limits_settle(s, 100, 10, 0, 0);
    assert_true(s->tok <= 600);
    /* A full bucket never grows past its limit. */
    sg_limits_refill(s, &l, t0 + 600000000000ull);
    assert_true(s->req == 2 && s->tok == 600);
}

static void test_concurrency_and_headers(void **state)
{
    SG_UNUSED(state);
    key.limits.concurrent = 1;
    key.limits.rpm = 60;
    key.limits.tpm = 100000;
    sg_record_t a, b;
    sg_error_t e;
    assert_int_equal(admit(&a, "lambda/small-m", 10, 10, &e), SG_ADMIT_OK);
    assert_int_equal(admit(&b, "lambda/small-m", 10, 10, &e), SG_ADMIT_DENY);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.code, "rate_limit_exceeded");
    assert_non_null(strstr(e.message, "concurrent"));
    assert_string_equal(b.denied, "throttled");
    char h[1024];
    sg_admit_headers(&b, h, sizeof(h));
    assert_non_null(strstr(h, "Retry-After: 1\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-limit-requests: 60\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-remaining-requests: 59\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-limit-tokens: 100000\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-remaining-tokens: 99980\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-reset-requests: 1s\r\n"));
    finish(&a, 10, 10);
    assert_int_equal(admit(&b, "lambda/small-m", 10, 10, &e), SG_ADMIT_OK);
    finish(&b, 10, 10);
}

static void test_rpm_retry_after_and_queue(void **state)
{
    SG_UNUSED(state);
    key.limits.rpm = 1;
    sg_record_t a, b;
    sg_error_t e;
    assert_int_equal(admit(&a, "lambda/small-m", 10, 10, &e), SG_ADMIT_OK);
    finish(&a, 10, 10);
    assert_int_equal(admit(&b, "lambda/small-m", 10, 10, &e), SG_ADMIT_DENY);
    assert_true(b.ticket.retry_after_s >= 59 && b.ticket.retry_after_s <= 60);
    /* Queue mode: a wait within queue_ms is a wait, not a refusal. */
    acc.queue_ms = 120000;
    sg_plan_t plan;
    plan_for("lambda/small-m", &plan);
    cJSON *body = chat_body(10);
    uint64_t wait = 0;
    memset(&b, 0, sizeof(b));
    b.ticket.key = &key;
    assert_int_equal(sg_admit(gen, &plan, body, SG_OP_CHAT, &b, 0, &wait, &e), SG_ADMIT_WAIT);
    assert_true(wait > 58000 && wait <= 60000);
    /* … but not past queue_ms in all. */
    assert_int_equal(sg_admit(gen, &plan, body, SG_OP_CHAT, &b, 70000, &wait, &e), SG_ADMIT_DENY);
    cJSON_Delete(body);
}

static void test_too_large_for_tpm(void **state)
{
    SG_UNUSED(state);
    key.limits.tpm = 500;
    sg_record_t r;
    sg_error_t e;
    assert_int_equal(admit(&r, "lambda/small-m", 100, 1000, &e), SG_ADMIT_DENY);
    assert_non_null(strstr(e.message, "too large"));
    assert_int_equal(r.ticket.retry_after_s, 0);
    /* max_tokens absent: the configured default counts. */
    acc.default_max_tokens = 300;
    assert_int_equal(admit(&r, "lambda/small-m", 100, 0, &e), SG_ADMIT_OK);
    assert_int_equal(r.ticket.est_tokens, 400);
    finish(&r, 100, 50);
}

/* ---- budgets ------------------------------------------------------------------------------- */

static void test_budget_exactly_n_in_flight(void **state)
{
    SG_UNUSED(state);
    /* Worst case of one request: 1000 in × $10 + 1000 out × $30 per 1M (big-m, the fallback,
     * is the dearest candidate) = $0.04. A budget of exactly 10 of them. */
    key.budget.daily_usd = 0.40;
    static sg_record_t recs[1000];
    sg_error_t e;
    int admitted = 0;
    for (int i = 0; i < 1000; i++)
        if (admit(&recs[i], "lambda/small-m", 1000, 1000, &e) == SG_ADMIT_OK) admitted++;
    assert_int_equal(admitted, 10);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.code, "budget_exceeded");
    assert_string_equal(e.type, "insufficient_quota");
    assert_non_null(strstr(e.message, "daily budget of key 'alice'"));
    assert_non_null(strstr(e.message, "resets at"));
    assert_true(recs[999].ticket.retry_after_s > 0 && recs[999].ticket.retry_after_s <= 86400);
    /* They settle at a tenth of the worst case (small-m served, 100 tokens out): $0.0012 each,
     * so what they freed admits more. */
    for (int i = 0; i < 10; i++) finish(&recs[i], 1000, 100);
    sg_scope_t *s = sg_scope_get(SG_SCOPE_KEY, "alice");
    assert_true(s->day_spent > 0.012 - 1e-9 && s->day_spent < 0.012 + 1e-9);
    assert_true(s->reserved < 1e-9);
    admitted = 0;
    for (int i = 0; i < 1000; i++)
        if (admit(&recs[i], "lambda/small-m", 1000, 1000, &e) == SG_ADMIT_OK) admitted++;
    assert_int_equal(admitted, 9); /* (0.40 - 0.012) / 0.04 = 9.7 */
    for (int i = 0; i < 1000; i++) finish(&recs[i], 0, 0);
}

static void test_budget_team_global_month(void **state)
{
    SG_UNUSED(state);
    sg_team_cfg_t team = {.name = "ml", .budget = {.monthly_usd = 0.04}};
    acc.teams = &team;
    acc.n_teams = 1;
    key.team = "ml";
    sg_record_t r;
    sg_error_t e;
    assert_int_equal(admit(&r, "lambda/small-m", 1000, 1000, &e), SG_ADMIT_OK);
    assert_int_equal(r.ticket.n, 3); /* key, team, global */
    finish(&r, 1000, 1000);          /* real cost: $0.003 */
    sg_record_t r2;
    assert_int_equal(admit(&r2, "lambda/small-m", 1000, 1000, &e), SG_ADMIT_DENY);
    assert_non_null(strstr(e.message, "monthly budget of team 'ml'"));
    /* The global budget counts every key. */
    acc.n_teams = 0;
    key.team = NULL;
    acc.global_budget.daily_usd = 0.02;
    assert_int_equal(admit(&r2, "lambda/small-m", 1000, 1000, &e), SG_ADMIT_DENY);
    assert_non_null(strstr(e.message, "the gateway"));
}

static void test_soft_budget_records(void **state)
{
    SG_UNUSED(state);
    key.budget.daily_usd = 0.01;
    key.budget.soft = 1;
    key.budget.soft_pct = 50;
    sg_record_t r;
    sg_error_t e;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(admit(&r, "lambda/small-m", 1000, 1000, &e), SG_ADMIT_OK);
        finish(&r, 1000, 1000); /* $0.003 each: 50 % after 2, over after 4 */
    }
    sg_scope_t *s = sg_scope_get(SG_SCOPE_KEY, "alice");
    assert_int_equal(s->soft_warnings, 2); /* the threshold, then the budget itself */
    assert_true(s->day_spent > 0.015 - 1e-9);
}

static void test_stream_cut_and_extension(void **state)
{
    SG_UNUSED(state);
    /* big-m ($10 in, $30 out per 1M): 100 prompt + 10 max_tokens reserve $0.0013. */
    key.budget.daily_usd = 0.004;
    sg_record_t r;
    sg_error_t e;
    assert_int_equal(admit(&r, "lambda/big-m", 100, 10, &e), SG_ADMIT_OK);
    double reserved = r.ticket.reserved_usd;
    assert_true(reserved > 0.0013 - 1e-12 && reserved < 0.0013 + 1e-12);
    /* Within the reservation nothing changes. */
    assert_int_equal(sg_admit_stream(&r, 5, &e), 0);
    assert_true(r.ticket.reserved_usd == reserved);
    /* Beyond it, more is reserved while the budget allows (70 tokens: $0.0031) … */
    assert_int_equal(sg_admit_stream(&r, 65, &e), 0);
    assert_true(r.ticket.reserved_usd > 0.0031 - 1e-12 && r.ticket.reserved_usd < 0.0031 + 1e-12);
    /* … and the stream ends when it does not (110 tokens: $0.0043 > $0.004). */
    assert_int_equal(sg_admit_stream(&r, 40, &e), -1);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.code, "budget_exceeded");
    assert_non_null(strstr(e.message, "stream ended"));
    finish(&r, 100, 110);
    sg_scope_t *s = sg_scope_get(SG_SCOPE_KEY, "alice");
    assert_true(s->reserved < 1e-12);
    assert_true(s->day_spent > 0.0043 - 1e-12);
}

static void test_models_allowed(void **state)
{
    SG_UNUSED(state);
    char *models[] = {"lambda/small-m"};
    key.models = models;
    key.n_models = 1;
    sg_record_t r;
    sg_error_t e;
    /* The fallback the key may not use is dropped from the plan. */
    sg_plan_t plan;
    plan_for("lambda/small-m", &plan);
    assert_int_equal(plan.n, 2);
    memset(&r, 0, sizeof(r));
    r.ticket.key = &key;
    cJSON *b = chat_body(10);
    uint64_t w;
    assert_int_equal(sg_admit(gen, &plan, b, SG_OP_CHAT, &r, 0, &w, &e), SG_ADMIT_OK);
    assert_int_equal(plan.n, 1);
    finish(&r, 1, 1);
    cJSON_Delete(b);
    /* A model the key may not use: 403. */
    assert_int_equal(admit(&r, "lambda/big-m", 10, 10, &e), SG_ADMIT_DENY);
    assert_int_equal(e.status, 403);
    assert_string_equal(e.code, "model_not_allowed");
    assert_string_equal(r.denied, "forbidden");
}

static void test_budget_rollover_and_seed(void **state)
{
    SG_UNUSED(state);
    sg_budget_seed("alice", "ml", 0.5, 2.0);
    sg_scope_t *s = sg_scope_get(SG_SCOPE_KEY, "alice");
    sg_scope_t *t = sg_scope_get(SG_SCOPE_TEAM, "ml");
    sg_scope_t *g = sg_scope_get(SG_SCOPE_GLOBAL, "");
    assert_true(s->day_spent == 0.5 && t->month_spent == 2.0 && g->day_spent == 0.5);
    /* A restart keeps the budget: seeded spend counts. */
    key.budget.daily_usd = 0.5;
    sg_record_t r;
    sg_error_t e;
    assert_int_equal(admit(&r, "lambda/small-m", 10, 10, &e), SG_ADMIT_DENY);
    /* The next UTC day starts with nothing spent (the month keeps its spend). */
    sg_budget_roll(s, (int64_t)(s->day + 1) * 86400 + 5);
    assert_true(s->day_spent == 0);
    const char *period;
    long reset = 0;
    assert_int_equal(sg_budget_check(s, 0.1, &period, (int64_t)(s->day) * 86400 + 5, &reset), 0);
}

static void test_response_headers(void **state)
{
    SG_UNUSED(state);
    static sg_api_t a;
    memset(&a, 0, sizeof(a));
    snprintf(a.rec.provider, sizeof(a.rec.provider), "lambda");
    snprintf(a.rec.route, sizeof(a.rec.route), "lambda/m\x01");
    snprintf(a.rec.why, sizeof(a.rec.why), "explicit");
    a.rec.status = 200;
    a.rec.usage = (sg_usage_t){.prompt_tokens = 12, .completion_tokens = 34, .known = 1};
    a.rec.price_in = 1;
    a.rec.price_out = 2;
    char h[2048];
    sg_api_headers(&a, h, sizeof(h), "X-Extra: 1\r\n");
    assert_string_equal(h, "X-Sophia-Provider: lambda\r\nX-Sophia-Model: lambda/m?\r\n"
                           "X-Sophia-Route: explicit\r\nX-Sophia-Cost-USD: 0.00008000\r\n"
                           "X-Extra: 1\r\n");
    /* Costs of every size, rounded to 8 decimals. */
    a.rec.usage = (sg_usage_t){.prompt_tokens = 1234567, .completion_tokens = 0, .known = 1};
    a.rec.price_in = 3.25;
    sg_api_headers(&a, h, sizeof(h), NULL);
    assert_non_null(strstr(h, "X-Sophia-Cost-USD: 4.01234275\r\n"));
    /* Streaming (the head went out before the cost is known): no cost line. */
    a.streaming = 1;
    sg_api_headers(&a, h, sizeof(h), NULL);
    assert_null(strstr(h, "Cost"));
    /* What does not fit is left out whole: never half a line. */
    char small[64];
    sg_api_headers(&a, small, sizeof(small), NULL);
    assert_string_equal(small, "X-Sophia-Provider: lambda\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_cost_arithmetic, fresh),
        cmocka_unit_test_setup(test_cost_per_provider, fresh),
        cmocka_unit_test_setup(test_bucket_refill_and_wait, fresh),
        cmocka_unit_test_setup(test_concurrency_and_headers, fresh),
        cmocka_unit_test_setup(test_rpm_retry_after_and_queue, fresh),
        cmocka_unit_test_setup(test_too_large_for_tpm, fresh),
        cmocka_unit_test_setup(test_budget_exactly_n_in_flight, fresh),
        cmocka_unit_test_setup(test_budget_team_global_month, fresh),
        cmocka_unit_test_setup(test_soft_budget_records, fresh),
        cmocka_unit_test_setup(test_stream_cut_and_extension, fresh),
        cmocka_unit_test_setup(test_models_allowed, fresh),
        cmocka_unit_test_setup(test_budget_rollover_and_seed, fresh),
        cmocka_unit_test_setup(test_response_headers, fresh),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
