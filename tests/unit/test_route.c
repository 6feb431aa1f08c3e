/* Route selection (src/policy/route.c) as a table: explicit names and aliases, provider
 * hints, model "auto" with the data, complexity, cost and capability rules, fallback chains,
 * discovered models and pass-through; plus the complexity estimate and the tier guess. */
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

#include "sophia/catalog.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/log.h"
#include "sophia/route.h"

static const char CONFIG[] =
    "{\"providers\":{\n"
    " \"lambda\":{\"base_url\":\"http://127.0.0.1:1/v1\",\"api_key\":null,\"discover\":true,\n"
    "   \"models\":[{\"id\":\"small-m\",\"upstream_id\":\"meta-llama/Llama-3.1-8B-Instruct\","
    "\"tier\":\"small\",\"price_in\":0.02,\"price_out\":0.04},\n"
    "     {\"id\":\"mid-m\",\"tier\":\"medium\",\"price_in\":0.1,\"price_out\":0.3},\n"
    "     {\"id\":\"big-m\",\"tier\":\"large\",\"price_in\":0.8,\"price_out\":0.8},\n"
    "     {\"id\":\"vision-m\",\"tier\":\"medium\",\"price_in\":0.5,\"price_out\":0.5,"
    "\"capabilities\":[\"vision\",\"tools\"]}]},\n"
    " \"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"tok-123456\","
    "\"base_url\":\"http://127.0.0.1:1\",\n"
    "   \"models\":[{\"id\":\"llama3.1-8b\"},{\"id\":\"mistral-large2\"},"
    "{\"id\":\"claude-sonnet-4-5\",\"aliases\":[\"sonnet\"]}]}},\n"
    " \"routing\":{\"fallbacks\":{\"cortex/mistral-large2\":[\"lambda/big-m\"],"
    "\"small\":[\"cortex/llama3.1-8b\"]}}}";

static sg_gen_t *gen;

static int setup(void **state)
{
    SG_UNUSED(state);
    gen = test_gen_load(CONFIG);
    return gen ? 0 : -1;
}

static int teardown(void **state)
{
    SG_UNUSED(state);
    sg_gen_unref(gen);
    return 0;
}

typedef struct row {
    const char *model;
    const char *header; /* X-Sophia-Provider */
    const char *body;   /* the rest of the request: messages etc. */
    int status;         /* 0: planned */
    const char *route;  /* first candidate */
    const char *rule;
    const char *fallback; /* second candidate, or NULL */
} row_t;

#define MSG(t) "\"messages\":[{\"role\":\"user\",\"content\":\"" t "\"}]"

static const row_t rows[] = {
    {"lambda/mid-m", NULL, MSG("hi"), 0, "lambda/mid-m", "explicit", NULL},
    {"sonnet", NULL, MSG("hi"), 0, "cortex/claude-sonnet-4-5", "alias", NULL},
    {"mid-m", NULL, MSG("hi"), 0, "lambda/mid-m", "alias", NULL},
    {"llama3.1-8b", "cortex", MSG("hi"), 0, "cortex/llama3.1-8b", "alias", NULL},
    {"auto", NULL, MSG("hi"), 0, "lambda/small-m", "auto", "cortex/llama3.1-8b"},
    {"auto", NULL, MSG("Write a SQL query over the orders table"), 0, "cortex/llama3.1-8b", "auto",
     NULL},
    {"auto", NULL,
     MSG("Prove step by step that the algorithm is correct, analyze the trade-offs, then design "
         "the architecture: ```def f(x): return x```"),
     0, "lambda/big-m", "auto", NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"complexity\":\"high\"}", 0, "lambda/big-m", "auto",
     NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"complexity\":0.5}", 0, "lambda/mid-m", "auto", NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"provider\":\"cortex\",\"complexity\":0.9}", 0,
     "cortex/mistral-large2", "auto", "lambda/big-m"},
    {"auto", "cortex", MSG("hi") ",\"sophia\":{\"complexity\":0.9}", 0, "cortex/mistral-large2",
     "auto", "lambda/big-m"},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"complexity\":0.5,\"cost_priority\":\"low_cost\"}", 0,
     "lambda/mid-m", "auto", NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"complexity\":0.1,\"cost_priority\":\"quality\"}", 0,
     "lambda/mid-m", "auto", NULL},
    {"auto", NULL,
     "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is "
     "this\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]}]",
     0, "lambda/vision-m", "auto", NULL},
    {"auto", NULL,
     MSG("Query the sales table") ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
                                  "\"run\"}}]",
     0, "cortex/mistral-large2", "auto", "lambda/big-m"},
    {"lambda/some-new-model", NULL, MSG("hi"), 0, "lambda/some-new-model", "explicit", NULL},
    {"cortex/not-a-model", NULL, MSG("hi"), 404, NULL, NULL, NULL},
    {"nope", NULL, MSG("hi"), 404, NULL, NULL, NULL},
    {"auto", "nope-provider", MSG("hi"), 400, NULL, NULL, NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"complexity\":7}", 400, NULL, NULL, NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"cost_priority\":\"free\"}", 400, NULL, NULL, NULL},
    {"auto", NULL, MSG("hi") ",\"sophia\":{\"colour\":1}", 400, NULL, NULL, NULL},
    {"cortex/mistral-large2", NULL, MSG("hi"), 0, "cortex/mistral-large2", "explicit",
     "lambda/big-m"},
    {"lambda/small-m", NULL, MSG("hi"), 0, "lambda/small-m", "explicit", "cortex/llama3.1-8b"},
};

static void test_routing_table(void **state)
{
    SG_UNUSED(state);
    for (size_t i = 0; i < SG_ARRAY_LEN(rows); i++) {
        const row_t *r = &rows[i];
        char text[2048];
        snprintf(text, sizeof(text), "{\"model\":\"%s\",%s}", r->model, r->body);
        cJSON *req = cJSON_Parse(text);
        assert_non_null(req);
        sg_hints_t h;
        sg_plan_t plan;
        sg_error_t e = {0};
        int rc = sg_hints_read(r->header, req, &h, &e);
        if (rc == 0) rc = sg_route_plan(gen, r->model, &h, req, &plan, &e);
        if (r->status) {
            if (rc == 0)
                fail_msg("row %zu (%s): planned %s, want %d", i, text, plan.routes[0].public_name,
                         r->status);
            assert_int_equal(e.status, r->status);
        } else {
            if (rc != 0) fail_msg("row %zu (%s): %d %s", i, text, e.status, e.message);
            if (strcmp(plan.routes[0].public_name, r->route) != 0 || strcmp(plan.rule, r->rule))
                fail_msg("row %zu (%s): %s (%s, %s), want %s (%s)", i, text,
                         plan.routes[0].public_name, plan.rule, plan.why, r->route, r->rule);
            if (r->fallback) {
                assert_true(plan.n >= 2);
                assert_string_equal(plan.routes[1].public_name, r->fallback);
            } else {
                assert_int_equal(plan.n, 1);
            }
            assert_true(plan.why[0] != '\0');
            assert_null(cJSON_GetObjectItemCaseSensitive(req, "sophia")); /* never sent on */
        }
        cJSON_Delete(req);
    }
}

static void test_discovered_models(void **state)
{
    SG_UNUSED(state);
    const sg_provider_cfg_t *p = sg_config_provider(&gen->cfg, "lambda");
    size_t n;
    sg_endpoint_t *const *eps = sg_gen_endpoints(gen, p, &n);
    assert_int_equal(n, 1);
    eps[0]->served = cJSON_Parse("[\"meta-llama/Llama-3.3-70B-Instruct\",\"Qwen/Qwen2.5-7B\"]");
    sg_route_t r;
    assert_int_equal(sg_gen_resolve(gen, "lambda/meta-llama/Llama-3.3-70B-Instruct", &r), 0);
    assert_string_equal(r.model->upstream_id, "meta-llama/Llama-3.3-70B-Instruct");
    assert_true(r.model->price_in_per_mtok == 0.12); /* the built-in table, matched loosely */
    assert_int_equal(r.model->tier, SG_TIER_MEDIUM);
    assert_int_equal(r.unlisted, 0);
    /* Neither configured nor served: passed through as the client named it, marked so. */
    assert_int_equal(sg_gen_resolve(gen, "lambda/not-served-anywhere", &r), 0);
    assert_string_equal(r.public_name, "lambda/not-served-anywhere");
    assert_int_equal(r.unlisted, 1);
    assert_int_equal(sg_gen_resolve(gen, "lambda/meta-llama/Llama-3.3-70B-Instruct", &r), 0);
    assert_int_equal(r.unlisted, 0);
    assert_int_equal(sg_gen_resolve(gen, "smart", &r), 0); /* its built-in alias */
    assert_string_equal(r.public_name, "lambda/meta-llama/Llama-3.3-70B-Instruct");
    assert_int_equal(sg_gen_resolve(gen, "Qwen/Qwen2.5-7B", &r), 0); /* a bare id */
    assert_int_equal(r.model->tier, SG_TIER_SMALL);
    cJSON *list = sg_gen_models_json(gen, NULL);
    char *s = cJSON_PrintUnformatted(list);
    assert_non_null(strstr(s, "\"lambda/meta-llama/Llama-3.3-70B-Instruct\""));
    assert_non_null(strstr(s, "\"alias_of\":\"lambda/meta-llama/Llama-3.3-70B-Instruct\""));
    free(s);
    cJSON_Delete(list);
    cJSON *one = sg_gen_models_json(gen, "lambda/Qwen/Qwen2.5-7B");
    assert_non_null(one);
    cJSON_Delete(one);
    assert_null(sg_gen_models_json(gen, "lambda/none"));
    cJSON_Delete(eps[0]->served);
    eps[0]->served = NULL;
}

static void test_complexity_and_tiers(void **state)
{
    SG_UNUSED(state);
    cJSON *easy = cJSON_Parse("{" MSG("hi") "}");
    cJSON *hard = cJSON_Parse(
        "{" MSG("Prove step by step, analyze the trade-offs and design the architecture: "
                "```int main(){}```") ",\"tools\":[{\"type\":\"function\"}]}");
    char why[160];
    double e = sg_route_complexity(easy, why, sizeof(why));
    double h = sg_route_complexity(hard, why, sizeof(why));
    assert_true(e < 0.3);
    assert_true(h > 0.7);
    assert_non_null(strstr(why, "code"));
    cJSON_Delete(easy);
    cJSON_Delete(hard);
    assert_int_equal(sg_tier_guess("llama3.1-8b-instruct"), SG_TIER_SMALL);
    assert_int_equal(sg_tier_guess("meta-llama/Llama-3.3-70B-Instruct"), SG_TIER_MEDIUM);
    assert_int_equal(sg_tier_guess("hermes3-405b"), SG_TIER_LARGE);
    assert_int_equal(sg_tier_guess("Qwen2.5-7B"), SG_TIER_SMALL);
    assert_int_equal(sg_tier_guess("deepseek-r1"), SG_TIER_MEDIUM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing_table),
        cmocka_unit_test(test_discovered_models),
        cmocka_unit_test(test_complexity_and_tiers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
