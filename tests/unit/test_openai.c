/* The OpenAI-compatible adapter's stream decoder: chunks are forwarded without parsing when
 * they can be (raw_chunk), and that fast path must judge content and finish_reason exactly as
 * the full parse does, for every JSON formatting. The upstream request body names the upstream
 * model id and, for a stream, asks for usage, whichever way it is printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sophia/core.h"
#include "sophia/egress.h"
#include "sophia/provider.h"
#include "sophia/route.h"
#include "test_gen.h"

typedef struct rec {
    int raw, parsed, content, finish, usage, ends, errors;
    char last_raw[512];
} rec_t;

static int count_parsed(rec_t *r, cJSON *chunk)
{
    r->parsed++;
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
    {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if ((cJSON_IsString(content) && content->valuestring[0]) ||
            cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(delta, "tool_calls")))
            r->content++;
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason"))) r->finish++;
    }
    return 0;
}

static int on_chunk(void *ud, cJSON *chunk, const char *raw, size_t len)
{
    SG_UNUSED(raw);
    SG_UNUSED(len);
    return count_parsed(ud, chunk);
}

static int on_raw(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    rec_t *r = ud;
    r->raw++;
    r->content += has_content;
    r->finish += has_finish;
    snprintf(r->last_raw, sizeof(r->last_raw), "%.*s", (int)len, raw);
    return 0;
}

static void on_usage(void *ud, const sg_usage_t *u)
{
    rec_t *r = ud;
    r->usage += (int)u->completion_tokens;
}

static void on_end(void *ud)
{
    ((rec_t *)ud)->ends++;
}

static void on_error(void *ud, const sg_error_t *e)
{
    SG_UNUSED(e);
    ((rec_t *)ud)->errors++;
}

static const sg_provider_cfg_t prov = {.name = "lambda", .kind = "openai"};
static const sg_model_cfg_t model = {.id = "m"};

/* Decodes a whole stream; returns decode's result. */
static int run(const char *stream, int fast, rec_t *r)
{
    memset(r, 0, sizeof(*r));
    sg_route_t route = {.provider = &prov, .model = &model, .public_name = "lambda/m"};
    sg_decode_sink_t sink = {on_chunk, on_usage, on_end, on_error, r, fast ? on_raw : NULL};
    void *d = sg_provider_openai.decoder_new(&route, &sink);
    int rc = sg_provider_openai.decode(d, stream, strlen(stream));
    if (rc == 0) sg_provider_openai.decode_finish(d);
    sg_provider_openai.decoder_free(d);
    return rc;
}

/* Every chunk of these streams is judged the same with and without the fast path. */
static const char *const streams[] = {
    /* compact (vLLM / pydantic) */
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"content\\\":"
    "\\\"x\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}"
    "\n\ndata: [DONE]\n\n",
    /* spaced (Python json.dumps defaults) */
    "data: {\"id\": \"c2\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"a\"}, "
    "\"finish_reason\": null}]}\n\n"
    "data: {\"id\": \"c2\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": null}, "
    "\"finish_reason\": \"length\"}]}\n\n"
    "data: {\"id\": \"c2\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"b\"}}], "
    "\"usage\": null}\n\n"
    "data: [DONE]\n\n",
    /* tool calls */
    "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
    "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"id\":\"t1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: [DONE]\n\n",
};

static void test_fast_path_agrees_with_full_parse(void **state)
{
    SG_UNUSED(state);
    for (size_t i = 0; i < SG_ARRAY_LEN(streams); i++) {
        rec_t slow, fast;
        assert_int_equal(run(streams[i], 0, &slow), 0);
        assert_int_equal(run(streams[i], 1, &fast), 0);
        assert_int_equal(slow.raw, 0);
        assert_true(fast.raw > 0);
        assert_int_equal(fast.content, slow.content);
        assert_int_equal(fast.finish, slow.finish);
        assert_int_equal(fast.usage, slow.usage);
        assert_int_equal(fast.ends, 1);
        assert_int_equal(fast.errors, 0);
    }
    rec_t r;
    run(streams[0], 1, &r);
    assert_int_equal(r.content, 2); /* "" does not count; the escaped lookalike does */
    assert_int_equal(r.finish, 1);
    assert_int_equal(r.usage, 2);
    assert_int_equal(r.parsed, 2); /* the first chunk and the usage chunk */
    run(streams[1], 1, &r);
    assert_int_equal(r.content, 2);
    assert_int_equal(r.finish, 1);
    run(streams[2], 1, &r);
    assert_int_equal(r.content, 2);
    assert_int_equal(r.finish, 1);
}

static void test_errors_and_non_json_take_the_full_path(void **state)
{
    SG_UNUSED(state);
    rec_t r;
    assert_int_not_equal(
        run("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
            "data: {\"error\":{\"message\":\"boom\"}}\n\n",
            1, &r),
        0);
    assert_int_equal(r.errors, 1);
    memset(&r, 0, sizeof(r));
    sg_route_t route = {.provider = &prov, .model = &model, .public_name = "lambda/m"};
    sg_decode_sink_t sink = {on_chunk, on_usage, on_end, on_error, &r, on_raw};
    void *d = sg_provider_openai.decoder_new(&route, &sink);
    const char *s = "data: {\"id\":\"c\",\"choices\":[]}\n\ndata: not-json\n\n";
    assert_int_not_equal(sg_provider_openai.decode(d, s, strlen(s)), 0);
    sg_provider_openai.decoder_free(d);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.raw, 0);
}

/* The body oa_build_chat sends for a client request (stream or not), parsed. */
static cJSON *upstream_request(const char *client_json, int stream)
{
    sg_gen_t *g = test_gen_load(
        "{\"providers\":{\"lambda\":{\"base_url\":\"http://127.0.0.1:1/v1\",\"api_key\":null,"
        "\"models\":[{\"id\":\"m\",\"upstream_id\":\"org/Model-8B\"}]}}}");
    assert_non_null(g);
    cJSON *client = cJSON_Parse(client_json);
    sg_hints_t h;
    sg_plan_t plan;
    sg_error_t e = {0};
    assert_int_equal(sg_hints_read(NULL, client, &h, &e), 0);
    assert_int_equal(sg_route_plan(g, "lambda/m", &h, client, &plan, &e), 0);
    assert_int_equal(sg_gen_pick_endpoint(g, &plan.routes[0], NULL, 0), 0);
    sg_exchange_req_t xr = {0};
    char url[256];
    sg_upstream_opts_t uo = {1000, 1000, 1000, 1000};
    assert_int_equal(sg_provider_openai.build_chat(&plan.routes[0], client, stream, &uo, &xr, url,
                                                   sizeof(url), &e),
                     0);
    assert_string_equal(url, "http://127.0.0.1:1/v1/chat/completions");
    cJSON *body = cJSON_ParseWithLength(xr.body, xr.body_len);
    assert_non_null(body);
    /* The client's tree is left as it was. */
    assert_string_equal(cJSON_GetObjectItem(client, "model")->valuestring, "lambda/m");
    free(xr.body);
    curl_slist_free_all(xr.headers);
    cJSON_Delete(client);
    sg_gen_unref(g);
    return body;
}

static void test_upstream_body(void **state)
{
    SG_UNUSED(state);
    const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"there\\\"\"}]";
    char req[512];
    struct {
        const char *extra;
        int stream, want_usage;
    } cases[] = {
        {"", 0, -1},                /* plain */
        {",\"stream\":true", 1, 1}, /* stream_options added */
        {",\"stream\":true,\"stream_options\":{\"include_usage\":true}", 1, 1},  /* kept */
        {",\"stream\":true,\"stream_options\":{\"include_usage\":false}", 1, 1}, /* changed */
        {",\"stream\":true,\"stream_options\":{}", 1, 1},                        /* completed */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req), "{\"model\":\"lambda/m\",%s%s,\"temperature\":0.5}", msgs,
                 cases[i].extra);
        cJSON *b = upstream_request(req, cases[i].stream);
        assert_string_equal(cJSON_GetObjectItem(b, "model")->valuestring, "org/Model-8B");
        assert_string_equal(
            cJSON_GetArrayItem(cJSON_GetObjectItem(b, "messages"), 0)->child->next->valuestring,
            "hi \"there\"");
        assert_true(cJSON_GetObjectItem(b, "temperature")->valuedouble == 0.5);
        const cJSON *so = cJSON_GetObjectItem(b, "stream_options");
        if (cases[i].want_usage < 0)
            assert_null(so);
        else
            assert_true(cJSON_IsTrue(cJSON_GetObjectItem(so, "include_usage")));
        cJSON_Delete(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_path_agrees_with_full_parse),
        cmocka_unit_test(test_errors_and_non_json_take_the_full_path),
        cmocka_unit_test(test_upstream_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
