/* Unit tests of the Prometheus metrics (src/admin/metrics.c): request records fed to the
 * observer, the exposition checked line by line (counts, cumulative buckets, sums, escaping,
 * "none" labels, the series cap, the gateway overhead), the scope and ledger families from
 * made-up scopes and statistics, and the whole text through promtool when it is installed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sophia/access.h"
#include "sophia/buf.h"
#include "sophia/ledger.h"
#include "sophia/core.h"
#include "sophia/metrics.h"

#define MS 1000000ULL /* nanoseconds */

static sg_record_t rec(const char *provider, const char *route, int status)
{
    sg_record_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.provider, sizeof(r.provider), "%s", provider);
    snprintf(r.route, sizeof(r.route), "%s", route);
    snprintf(r.model, sizeof(r.model), "%s", route[0] ? route : "asked-model");
    r.status = status;
    r.outcome = "ok";
    r.start_ns = 1000 * MS;
    r.end_ns = r.start_ns + 100 * MS;
    return r;
}

static char *render(const sg_metrics_t *m)
{
    sg_buf_t b;
    sg_buf_init(&b, 64u << 20);
    assert_int_equal(sg_metrics_render(m, &b), 0);
    size_t len;
    return sg_buf_steal(&b, &len);
}

/* Whether text has this exact line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

#define assert_line(text, line)                                                                    \
    do {                                                                                           \
        if (!has_line(text, line)) fail_msg("missing line: %s\n--- text:\n%s", line, text);        \
    } while (0)

#define assert_no_line(text, line)                                                                 \
    do {                                                                                           \
        if (has_line(text, line)) fail_msg("unexpected line: %s", line);                           \
    } while (0)

static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, len) == 0) n++;
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

#define LAB "gen_ai_system=\"lambda\",gen_ai_request_model=\"m1\""

static void test_counts_buckets_and_sums(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "m1", 200);
    r.usage.prompt_tokens = 10;
    r.usage.completion_tokens = 300;
    r.usage.known = 1;
    r.ttft_ns = r.start_ns + 30 * MS; /* 0.03 s */
    sg_metrics_observer(&r, m);
    r.usage.prompt_tokens = 1;
    r.usage.completion_tokens = 5000;
    r.ttft_ns = 0;                     /* no first token: no ttft observation */
    r.end_ns = r.start_ns + 2500 * MS; /* 2.5 s */
    sg_metrics_observer(&r, m);
    r.status = 502;
    r.end_ns = r.start_ns + 1234567; /* 0.001234567 s */
    sg_metrics_observer(&r, m);
    char *t = render(m);

    assert_line(t, "# HELP sophia_requests_total Requests that reached an API handler, by "
                   "provider, model (the public name that served; none when no route was "
                   "chosen) and HTTP status (499: the client left).");
    assert_line(t, "# TYPE sophia_requests_total counter");
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"m1\",status=\"200\"} 2");
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"m1\",status=\"502\"} 1");

    /* input tokens 10, 1, 1: le=1 holds 2, le=4 still 2, le=16 all 3 */
    assert_line(t, "# TYPE gen_ai_client_token_usage histogram");
    assert_line(t,
                "gen_ai_client_token_usage_bucket{" LAB ",gen_ai_token_type=\"input\",le=\"1\"} 2");
    assert_line(t,
                "gen_ai_client_token_usage_bucket{" LAB ",gen_ai_token_type=\"input\",le=\"4\"} 2");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"input\",le=\"16\"} 3");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"input\",le=\"+Inf\"} 3");
    assert_line(t, "gen_ai_client_token_usage_sum{" LAB ",gen_ai_token_type=\"input\"} 12");
    assert_line(t, "gen_ai_client_token_usage_count{" LAB ",gen_ai_token_type=\"input\"} 3");
    /* output 300, 5000, 5000: 300 <= 1024; 5000 <= 16384 */
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"output\",le=\"256\"} 0");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"output\",le=\"1024\"} 1");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"output\",le=\"4096\"} 1");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"output\",le=\"16384\"} 3");
    assert_line(t, "gen_ai_client_token_usage_bucket{" LAB
                   ",gen_ai_token_type=\"output\",le=\"67108864\"} 3");
    assert_line(t, "gen_ai_client_token_usage_sum{" LAB ",gen_ai_token_type=\"output\"} 10300");

    /* durations 0.1, 2.5, 0.001234567 s */
    assert_line(t, "# TYPE gen_ai_client_operation_duration_seconds histogram");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"0.01\"} 1");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"0.08\"} 1");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"0.16\"} 2");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"2.56\"} 3");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"81.92\"} 3");
    assert_line(t, "gen_ai_client_operation_duration_seconds_bucket{" LAB ",le=\"+Inf\"} 3");
    assert_line(t, "gen_ai_client_operation_duration_seconds_sum{" LAB "} 2.601234567");
    assert_line(t, "gen_ai_client_operation_duration_seconds_count{" LAB "} 3");

    /* one time to first token, 0.03 s; an exact bound counts in its bucket (le: <=) */
    assert_line(t, "gen_ai_server_time_to_first_token_seconds_bucket{" LAB ",le=\"0.02\"} 0");
    assert_line(t, "gen_ai_server_time_to_first_token_seconds_bucket{" LAB ",le=\"0.04\"} 1");
    assert_line(t, "gen_ai_server_time_to_first_token_seconds_bucket{" LAB ",le=\"10.0\"} 1");
    assert_line(t, "gen_ai_server_time_to_first_token_seconds_sum{" LAB "} 0.03");
    assert_line(t, "gen_ai_server_time_to_first_token_seconds_count{" LAB "} 1");

    assert_line(t, "sophia_tokens_estimated_total 0");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"sophia_requests_total\"} 0");
    free(t);
    sg_metrics_free(m);
}

static void test_exact_bound_and_inf(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("p", "m1", 200);
    r.end_ns = r.start_ns + 10 * MS; /* exactly 0.01 */
    r.upstream_ns = 10 * MS;         /* no overhead */
    r.usage.prompt_tokens = 67108864;
    r.usage.completion_tokens = 67108865; /* past the last bound */
    sg_metrics_observer(&r, m);
    char *t = render(m);
    const char *lab = "gen_ai_system=\"p\",gen_ai_request_model=\"m1\"";
    char line[512];
    snprintf(line, sizeof(line),
             "gen_ai_client_operation_duration_seconds_bucket{%s,le=\"0.01\"} 1", lab);
    assert_line(t, line);
    snprintf(line, sizeof(line),
             "gen_ai_client_token_usage_bucket{%s,gen_ai_token_type=\"input\",le=\"67108864\"} 1",
             lab);
    assert_line(t, line);
    snprintf(line, sizeof(line),
             "gen_ai_client_token_usage_bucket{%s,gen_ai_token_type=\"output\",le=\"67108864\"} 0",
             lab);
    assert_line(t, line);
    snprintf(line, sizeof(line),
             "gen_ai_client_token_usage_bucket{%s,gen_ai_token_type=\"output\",le=\"+Inf\"} 1",
             lab);
    assert_line(t, line);
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"0.00005\"} 1");
    assert_line(t, "sophia_gateway_overhead_seconds_sum 0");
    free(t);
    sg_metrics_free(m);
}

static void test_overhead(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("p", "m1", 200);
    r.end_ns = r.start_ns + 1000 * MS;
    r.upstream_ns = 1000 * MS - 300000; /* 0.0003 s of the gateway's own */
    sg_metrics_observer(&r, m);
    r.upstream_ns = 0; /* never reached an upstream: all of it, 1 s */
    sg_metrics_observer(&r, m);
    r.upstream_ns = 2000 * MS; /* more than the whole: none (never negative) */
    sg_metrics_observer(&r, m);
    r.end_ns = r.start_ns + 1500 * MS;
    r.upstream_ns = 0; /* 1.5 s: above every bound */
    sg_metrics_observer(&r, m);
    char *t = render(m);
    assert_line(t, "# HELP sophia_gateway_overhead_seconds Time of each request not spent "
                   "waiting on an upstream: its whole duration minus the time of its upstream "
                   "exchanges.");
    assert_line(t, "# TYPE sophia_gateway_overhead_seconds histogram");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"0.00005\"} 1");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"0.00025\"} 1");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"0.0005\"} 2");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"0.5\"} 2");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"1\"} 3");
    assert_line(t, "sophia_gateway_overhead_seconds_bucket{le=\"+Inf\"} 4");
    assert_line(t, "sophia_gateway_overhead_seconds_sum 2.5003");
    assert_line(t, "sophia_gateway_overhead_seconds_count 4");
    free(t);
    sg_metrics_free(m);
}

static void test_none_labels(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    /* Rejected before routing: the model the client asked for is never a label. */
    sg_record_t r = rec("", "", 404);
    snprintf(r.model, sizeof(r.model), "%s", "client \"free\" text");
    r.outcome = "rejected";
    sg_metrics_observer(&r, m);
    r.status = 400;
    snprintf(r.model, sizeof(r.model), "%s", "another");
    sg_metrics_observer(&r, m);
    /* Passed through to a provider under a name the client made up: the provider only. */
    sg_record_t u = rec("lambda", "lambda/made-up-by-the-client", 404);
    u.route_unlisted = 1;
    sg_metrics_observer(&u, m);
    /* Routed, client left: 499, no key. */
    sg_record_t g = rec("lambda", "m1", 200);
    g.client_gone = 1;
    g.cost_usd = 0.25;
    sg_metrics_observer(&g, m);
    char *t = render(m);
    assert_line(t, "sophia_requests_total{provider=\"none\",model=\"none\",status=\"404\"} 1");
    assert_line(t, "sophia_requests_total{provider=\"none\",model=\"none\",status=\"400\"} 1");
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"m1\",status=\"499\"} 1");
    assert_no_line(t, "sophia_requests_total{provider=\"lambda\",model=\"m1\",status=\"200\"} 1");
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"none\",status=\"404\"} 1");
    assert_null(strstr(t, "made-up"));
    assert_null(strstr(t, "free"));
    assert_null(strstr(t, "another"));
    /* No tokens or cost for what never reached a provider; its duration counts. */
    assert_null(strstr(t, "gen_ai_client_token_usage_count{gen_ai_system=\"none\""));
    assert_line(t, "gen_ai_client_operation_duration_seconds_count{gen_ai_system=\"none\","
                   "gen_ai_request_model=\"none\"} 2");
    assert_line(t, "sophia_cost_usd_total{provider=\"lambda\",model=\"m1\",key=\"none\"} 0.25");
    assert_line(t, "sophia_cost_usd_total{provider=\"lambda\",model=\"none\",key=\"none\"} 0");
    assert_int_equal(count_prefix(t, "sophia_cost_usd_total{"), 2);
    assert_null(strstr(t, "sophia_cost_usd_total{provider=\"none\""));
    /* Routed, usage not reported: estimated (both routed records). */
    assert_line(t, "sophia_tokens_estimated_total 2");
    free(t);
    sg_metrics_free(m);
}

static void test_cost_by_key(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "m1", 200);
    r.usage.known = 1;
    snprintf(r.key, sizeof(r.key), "%s", "alice");
    r.cost_usd = 0.0003;
    sg_metrics_observer(&r, m);
    sg_metrics_observer(&r, m);
    snprintf(r.key, sizeof(r.key), "%s", "bob");
    r.cost_usd = 1.5;
    sg_metrics_observer(&r, m);
    r.cost_usd = -1; /* never subtracts */
    sg_metrics_observer(&r, m);
    char *t = render(m);
    assert_line(t, "# TYPE sophia_cost_usd_total counter");
    assert_line(t, "sophia_cost_usd_total{provider=\"lambda\",model=\"m1\",key=\"alice\"} 0.0006");
    assert_line(t, "sophia_cost_usd_total{provider=\"lambda\",model=\"m1\",key=\"bob\"} 1.5");
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"m1\",status=\"200\"} 4");
    assert_line(t, "sophia_tokens_estimated_total 0");
    free(t);
    sg_metrics_free(m);
}

static void test_escaping(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("p\"q", "a\\b\nc", 200);
    snprintf(r.key, sizeof(r.key), "%s", "k\"\\\n");
    sg_metrics_observer(&r, m);
    char *t = render(m);
    assert_line(t,
                "sophia_requests_total{provider=\"p\\\"q\",model=\"a\\\\b\\nc\",status=\"200\"} 1");
    assert_line(
        t,
        "sophia_cost_usd_total{provider=\"p\\\"q\",model=\"a\\\\b\\nc\",key=\"k\\\"\\\\\\n\"} 0");
    assert_line(t, "gen_ai_client_operation_duration_seconds_count{gen_ai_system=\"p\\\"q\","
                   "gen_ai_request_model=\"a\\\\b\\nc\"} 1");
    free(t);
    sg_metrics_free(m);
}

static void test_denied(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "m1", 429);
    r.denied = "throttled";
    sg_metrics_observer(&r, m);
    sg_metrics_observer(&r, m);
    r.denied = "budget";
    sg_metrics_observer(&r, m);
    r.status = 403;
    r.denied = "forbidden";
    sg_metrics_observer(&r, m);
    char *t = render(m);
    assert_line(t, "# TYPE sophia_requests_denied_total counter");
    assert_line(t, "sophia_requests_denied_total{reason=\"throttled\"} 2");
    assert_line(t, "sophia_requests_denied_total{reason=\"budget\"} 1");
    assert_line(t, "sophia_requests_denied_total{reason=\"forbidden\"} 1");
    assert_null(strstr(t, "reason=\"other\""));
    free(t);
    r.denied = "something new";
    sg_metrics_observer(&r, m);
    t = render(m);
    assert_line(t, "sophia_requests_denied_total{reason=\"other\"} 1");
    free(t);
    sg_metrics_free(m);
}

static void test_series_cap(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "", 200);
    for (int i = 0; i < SG_METRICS_SERIES_MAX + 5; i++) {
        snprintf(r.route, sizeof(r.route), "model-%d", i);
        sg_metrics_observer(&r, m);
    }
    /* Existing series still count once the cap is reached. */
    snprintf(r.route, sizeof(r.route), "model-%d", 7);
    sg_metrics_observer(&r, m);
    char *t = render(m);
    assert_int_equal(count_prefix(t, "sophia_requests_total{"), SG_METRICS_SERIES_MAX);
    assert_int_equal(count_prefix(t, "sophia_cost_usd_total{"), SG_METRICS_SERIES_MAX);
    assert_int_equal(count_prefix(t, "gen_ai_client_operation_duration_seconds_count{"),
                     SG_METRICS_SERIES_MAX);
    assert_line(t, "sophia_requests_total{provider=\"lambda\",model=\"model-7\",status=\"200\"} 2");
    assert_line(t,
                "sophia_requests_total{provider=\"lambda\",model=\"model-9999\",status=\"200\"} 1");
    assert_null(strstr(t, "model-10000"));
    assert_line(t, "# TYPE sophia_metrics_series_dropped_total counter");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"gen_ai\"} 5");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"sophia_requests_total\"} 5");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"sophia_cost_usd_total\"} 5");
    free(t);
    sg_metrics_free(m);

    /* Statuses of one model fill the request family alone. */
    m = sg_metrics_new();
    r = rec("lambda", "m1", 0);
    for (int i = 0; i < SG_METRICS_SERIES_MAX + 3; i++) {
        r.status = i;
        sg_metrics_observer(&r, m);
    }
    t = render(m);
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"gen_ai\"} 0");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"sophia_requests_total\"} 3");
    assert_line(t, "sophia_metrics_series_dropped_total{family=\"sophia_cost_usd_total\"} 0");
    free(t);
    sg_metrics_free(m);
}

static void test_render_cut_short(void **state)
{
    (void)state;
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "m1", 200);
    sg_metrics_observer(&r, m);
    sg_buf_t b;
    sg_buf_init(&b, 1000);
    assert_int_equal(sg_metrics_render(m, &b), -1);
    sg_buf_dispose(&b);
    sg_metrics_free(m);
    sg_metrics_free(NULL);
}

/* ---- scopes and ledger ---------------------------------------------------------------------- */

static sg_scope_t scopes[3];

static void each_scope(void (*fn)(const sg_scope_t *s, void *ud), void *ud)
{
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) fn(&scopes[i], ud);
}

static void setup_scopes(void)
{
    memset(scopes, 0, sizeof(scopes));
    /* in the current UTC day and month (spend of a past period shows as 0) */
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++)
        sg_budget_roll(&scopes[i], sg_unix_time());
    scopes[0].kind = SG_SCOPE_KEY;
    snprintf(scopes[0].name, sizeof(scopes[0].name), "%s", "al\"ice");
    scopes[0].budget.daily_usd = 10;
    scopes[0].day_spent = 2.5;
    scopes[0].month_spent = 40;
    scopes[0].reserved = 0.5;
    scopes[0].throttled = 3;
    scopes[0].budget_denied = 1;
    scopes[0].soft_warnings = 2;
    scopes[1].kind = SG_SCOPE_GLOBAL; /* name "" */
    scopes[1].budget.daily_usd = 100;
    scopes[1].budget.monthly_usd = 1000;
    scopes[1].day_spent = 120; /* soft mode, overspent */
    scopes[1].month_spent = 300;
    scopes[2].kind = SG_SCOPE_TEAM; /* no budget */
    snprintf(scopes[2].name, sizeof(scopes[2].name), "%s", "research");
}

static void test_scopes(void **state)
{
    (void)state;
    setup_scopes();
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    assert_int_equal(sg_metrics_render_scopes(&b, each_scope), 0);
    const char *t = b.data;
    assert_line(t, "# TYPE sophia_throttled_total counter");
    assert_line(t, "sophia_throttled_total{scope=\"key\",name=\"al\\\"ice\"} 3");
    assert_line(t, "sophia_throttled_total{scope=\"global\",name=\"none\"} 0");
    assert_line(t, "sophia_throttled_total{scope=\"team\",name=\"research\"} 0");
    assert_line(t, "# TYPE sophia_budget_denied_total counter");
    assert_line(t, "sophia_budget_denied_total{scope=\"key\",name=\"al\\\"ice\"} 1");
    assert_line(t, "# TYPE sophia_budget_soft_warnings_total counter");
    assert_line(t, "sophia_budget_soft_warnings_total{scope=\"key\",name=\"al\\\"ice\"} 2");
    assert_line(t, "# TYPE sophia_budget_remaining_usd gauge");
    assert_line(t, "sophia_budget_remaining_usd{scope=\"key\",name=\"al\\\"ice\",period=\"daily\"} "
                   "7");
    assert_null(strstr(t, "sophia_budget_remaining_usd{scope=\"key\",name=\"al\\\"ice\","
                          "period=\"monthly\"}"));
    assert_line(t, "sophia_budget_remaining_usd{scope=\"global\",name=\"none\",period=\"daily\"} "
                   "-20");
    assert_line(t, "sophia_budget_remaining_usd{scope=\"global\",name=\"none\",period=\"monthly\"} "
                   "700");
    assert_null(strstr(t, "sophia_budget_remaining_usd{scope=\"team\""));
    assert_line(t, "# TYPE sophia_budget_spent_usd gauge");
    assert_line(t,
                "sophia_budget_spent_usd{scope=\"key\",name=\"al\\\"ice\",period=\"daily\"} 2.5");
    assert_line(t,
                "sophia_budget_spent_usd{scope=\"global\",name=\"none\",period=\"monthly\"} 300");
    assert_null(strstr(t, "sophia_budget_spent_usd{scope=\"team\""));
    sg_buf_dispose(&b);
}

static void test_ledger(void **state)
{
    (void)state;
    sg_ledger_stats_t s = {.queued = 10, .written = 7, .dropped = 2, .depth = 1};
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    assert_int_equal(sg_metrics_render_ledger(&b, &s), 0);
    const char *t = b.data;
    assert_line(t, "# TYPE sophia_ledger_queue_depth gauge");
    assert_line(t, "sophia_ledger_queue_depth 1");
    assert_line(t, "# TYPE sophia_ledger_rows_written_total counter");
    assert_line(t, "sophia_ledger_rows_written_total 7");
    assert_line(t, "# TYPE sophia_ledger_rows_dropped_total counter");
    assert_line(t, "sophia_ledger_rows_dropped_total 2");
    sg_buf_dispose(&b);
}

/* Everything this module renders, with every kind of series present, through promtool. */
static void test_promtool(void **state)
{
    (void)state;
    if (access("/usr/bin/promtool", X_OK) != 0) skip();
    sg_metrics_t *m = sg_metrics_new();
    sg_record_t r = rec("lambda", "m\"1\n", 200);
    r.ttft_ns = r.start_ns + 5 * MS;
    r.cost_usd = 0.001;
    snprintf(r.key, sizeof(r.key), "%s", "k\\1");
    r.usage.known = 1;
    sg_metrics_observer(&r, m);
    r = rec("", "", 404);
    r.denied = "forbidden";
    sg_metrics_observer(&r, m);
    r.denied = "other thing";
    sg_metrics_observer(&r, m);
    setup_scopes();
    sg_ledger_stats_t s = {.queued = 1, .written = 1};
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    assert_int_equal(sg_metrics_render(m, &b), 0);
    assert_int_equal(sg_metrics_render_scopes(&b, each_scope), 0);
    assert_int_equal(sg_metrics_render_ledger(&b, &s), 0);
    char path[] = "/tmp/sg-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    if (rc != 0) fail_msg("promtool check metrics failed (%d) on:\n%s", rc, b.data);
    sg_buf_dispose(&b);
    sg_metrics_free(m);
}

/* Many records over a few existing series: what the observer costs per call (run under
 * callgrind, see docs/metrics.md), and that nothing drifts. */
static void test_many_records(void **state)
{
    (void)state;
    enum { N = 200000 };
    sg_metrics_t *m = sg_metrics_new();
    static const char *const routes[] = {"lambda/llama3.1-8b-instruct", "lambda/qwen3-32b",
                                         "cortex/claude-sonnet-4-5", "auto-fast"};
    static const int statuses[] = {200, 200, 200, 429, 200, 502, 200, 499};
    sg_record_t r[4 * 8];
    for (int i = 0; i < 4 * 8; i++) {
        r[i] = rec(i % 2 ? "cortex" : "lambda", routes[i % 4], statuses[i % 8]);
        snprintf(r[i].key, sizeof(r[i].key), "key-%d", i % 3);
        r[i].usage.prompt_tokens = 100 + i * 37;
        r[i].usage.completion_tokens = 20 + i * 101;
        r[i].usage.known = i % 5 != 0;
        r[i].ttft_ns = i % 3 ? r[i].start_ns + (uint64_t)(i + 1) * 7 * MS : 0;
        r[i].end_ns = r[i].start_ns + (uint64_t)(i + 1) * 90 * MS;
        r[i].upstream_ns = (uint64_t)(i + 1) * 90 * MS - 40000;
        r[i].cost_usd = 0.0001 * i;
    }
    for (int i = 0; i < N; i++) sg_metrics_observer(&r[i % (4 * 8)], m);
    char *t = render(m);
    assert_line(t, "sophia_gateway_overhead_seconds_count 200000");
    free(t);
    sg_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_buckets_and_sums),
        cmocka_unit_test(test_exact_bound_and_inf),
        cmocka_unit_test(test_overhead),
        cmocka_unit_test(test_none_labels),
        cmocka_unit_test(test_cost_by_key),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_denied),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_render_cut_short),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_ledger),
        cmocka_unit_test(test_promtool),
        cmocka_unit_test(test_many_records),
    };
    /* SG_TEST_FILTER=test_many_records runs that one alone (under callgrind). */
    if (getenv("SG_TEST_FILTER")) cmocka_set_test_filter(getenv("SG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
