/* Unit tests for the Anthropic Messages wire format (src/providers/anthropic.c) and Cortex's
 * Messages request (cx_build_messages): a recorded Messages stream decoded at every split
 * point (events forwarded whole, flags, usage, end), errors inside the stream, malformed
 * streams, whole answers, and the upstream request for a Claude model. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/cortex.h"
#include "sophia/provider.h"

#define W sg_wire_anthropic

typedef struct got {
    sg_buf_t out; /* every forwarded event, concatenated */
    int events, content, finish, ends, errors;
    sg_usage_t usage;
    int usage_calls;
    sg_error_t err;
    int stop_after; /* return 1 from raw_chunk after this many events (0: never) */
} got_t;

static int g_chunk(void *ud, cJSON *chunk, const char *raw, size_t len)
{
    SG_UNUSED(ud);
    SG_UNUSED(chunk);
    SG_UNUSED(raw);
    SG_UNUSED(len);
    fail_msg("the Messages decoder hands events to raw_chunk only");
    return 1;
}

static int g_raw(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    got_t *g = ud;
    sg_buf_append(&g->out, raw, len);
    g->events++;
    g->content += has_content;
    g->finish += has_finish;
    return g->stop_after && g->events >= g->stop_after;
}

static void g_usage(void *ud, const sg_usage_t *u)
{
    got_t *g = ud;
    g->usage = *u;
    g->usage_calls++;
}

static void g_end(void *ud)
{
    ((got_t *)ud)->ends++;
}

static void g_error(void *ud, const sg_error_t *e)
{
    got_t *g = ud;
    g->errors++;
    g->err = *e;
}

static const sg_route_t route = {.public_name = "cortex/claude-sonnet-4-5"};

/* Decodes body fed in pieces of step bytes (0: whole). Returns decode_finish's result, or -1
 * when decode stopped. */
static int decode(got_t *g, const char *body, size_t step)
{
    memset(g, 0, sizeof(*g));
    sg_buf_init(&g->out, 1 << 20);
    sg_decode_sink_t sink = {g_chunk, g_usage, g_end, g_error, g, g_raw};
    void *d = W.decoder_new(&route, &sink);
    size_t len = strlen(body);
    if (!step) step = len ? len : 1;
    int r = 0;
    for (size_t off = 0; off < len && r == 0; off += step)
        r = W.decode(d, body + off, len - off < step ? len - off : step);
    if (r == 0) r = W.decode_finish(d);
    W.decoder_free(d);
    return r;
}

#define START                                                                                      \
    "event: message_start\n"                                                                       \
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","        \
    "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,"  \
    "\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n"

static const char stream_ok[] = START
    "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\r\n\r\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hé\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
    "\"usage\":{\"output_tokens\":7}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static void test_stream_every_split(void **state)
{
    SG_UNUSED(state);
    for (size_t step = 0; step < 40; step++) {
        got_t g;
        assert_int_equal(decode(&g, stream_ok, step), 0);
        assert_int_equal(g.events, 7);
        assert_int_equal(g.content, 2);
        assert_int_equal(g.finish, 1);
        assert_int_equal(g.ends, 1);
        assert_int_equal(g.errors, 0);
        assert_true(g.usage.known);
        assert_int_equal(g.usage.prompt_tokens, 15); /* input plus cache reads */
        assert_int_equal(g.usage.completion_tokens, 7);
        /* Forwarded whole, in SSE form with LF endings. */
        assert_non_null(strstr(g.out.data, "event: content_block_start\ndata: {\"type\":"
                                           "\"content_block_start\",\"index\":0,"));
        assert_non_null(strstr(g.out.data, "\"text\":\"Hé\"}}\n\nevent: content_block_stop"));
        assert_non_null(strstr(g.out.data, "event: message_stop\ndata: {\"type\":"
                                           "\"message_stop\"}\n\n"));
        sg_buf_dispose(&g.out);
    }
}

static void test_stream_error_event(void **state)
{
    SG_UNUSED(state);
    got_t g;
    const char *s = START "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                          "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    assert_int_not_equal(decode(&g, s, 0), 0);
    assert_int_equal(g.errors, 1);
    assert_int_equal(g.err.status, 529);
    assert_non_null(strstr(g.err.message, "Overloaded"));
    assert_int_equal(g.ends, 0);
    sg_buf_dispose(&g.out);
}

static void test_stream_malformed(void **state)
{
    SG_UNUSED(state);
    static const char *const bad[] = {
        /* not JSON */
        START "event: content_block_delta\ndata: {oops\n\n",
        /* name and type differ */
        START "event: message_stop\ndata: {\"type\":\"message_delta\"}\n\n",
        /* content before message_start */
        "event: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n",
        /* message_start twice */
        START START,
        /* ends without message_stop */
        START,
        /* usage that cannot be true is reported as rejected, then the cut stream fails */
        START "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":"
              "{\"output_tokens\":-4}}\n\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        got_t g;
        assert_int_not_equal(decode(&g, bad[i], 0), 0);
        assert_int_equal(g.errors, 1);
        assert_int_equal(g.err.status, 502);
        assert_int_equal(g.ends, 0);
        if (i == 5) assert_true(g.usage.rejected);
        sg_buf_dispose(&g.out);
    }
}

static void test_stream_sink_stop(void **state)
{
    SG_UNUSED(state);
    got_t g;
    memset(&g, 0, sizeof(g));
    sg_buf_init(&g.out, 1 << 20);
    g.stop_after = 2;
    sg_decode_sink_t sink = {g_chunk, g_usage, g_end, g_error, &g, g_raw};
    void *d = W.decoder_new(&route, &sink);
    assert_int_not_equal(W.decode(d, stream_ok, strlen(stream_ok)), 0);
    assert_int_equal(g.events, 2);
    assert_int_equal(g.errors, 0);
    W.decoder_free(d);
    sg_buf_dispose(&g.out);
}

static void test_whole_answer(void **state)
{
    SG_UNUSED(state);
    const char *ok = "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":"
                     "[{\"type\":\"text\",\"text\":\"hi\"}],\"model\":\"claude-sonnet-4-5\","
                     "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":4,"
                     "\"output_tokens\":2}}";
    sg_usage_t u = {0};
    sg_error_t e;
    cJSON *j = W.convert_response(&route, ok, strlen(ok), &u, &e);
    assert_non_null(j);
    assert_true(u.known);
    assert_int_equal(u.prompt_tokens, 4);
    assert_int_equal(u.completion_tokens, 2);
    assert_int_equal(W.passthrough_response, 1);
    cJSON_Delete(j);
    static const char *const bad[] = {"{\"type\":\"message\"}", "[]",
                                      "{\"type\":\"message\","
                                      "\"content\":[]} x"};
    for (size_t i = 0; i < 3; i++) {
        sg_usage_t u2 = {0};
        assert_null(W.convert_response(&route, bad[i], strlen(bad[i]), &u2, &e));
        assert_int_equal(e.status, 502);
    }
    const char *err = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                      "\"message\":\"slow down\"}}";
    assert_null(W.convert_response(&route, err, strlen(err), &u, &e));
    assert_int_equal(e.status, 429);
}

static void test_error_types(void **state)
{
    SG_UNUSED(state);
    assert_string_equal(sg_anthropic_error_type(400), "invalid_request_error");
    assert_string_equal(sg_anthropic_error_type(401), "authentication_error");
    assert_string_equal(sg_anthropic_error_type(404), "not_found_error");
    assert_string_equal(sg_anthropic_error_type(429), "rate_limit_error");
    assert_string_equal(sg_anthropic_error_type(503), "overloaded_error");
    assert_string_equal(sg_anthropic_error_type(502), "api_error");
    assert_string_equal(sg_anthropic_error_type(422), "invalid_request_error");
    assert_int_equal(sg_anthropic_error_status("overloaded_error"), 529);
    assert_int_equal(sg_anthropic_error_status("something_new"), 502);
}

/* Cortex: Claude models take Messages requests as they are; others do not. */
static void test_cortex_build_messages(void **state)
{
    SG_UNUSED(state);
    sg_cortex_cfg_t cx = {.account = "a", .user = "u"};
    sg_provider_cfg_t prov = {.name = "cortex", .kind = "cortex", .ext = &cx};
    sg_model_cfg_t claude = {.id = "claude-sonnet-4-5"};
    sg_model_cfg_t llama = {.id = "llama3.1-70b"};
    sg_route_t r = {.provider = &prov,
                    .model = &claude,
                    .public_name = "cortex/claude-sonnet-4-5",
                    .base_url = "https://a.snowflakecomputing.com"};
    const sg_provider_vt_t *vt = &sg_provider_cortex;
    assert_int_equal(vt->messages_native(&r), 1);
    sg_route_t r2 = r;
    r2.model = &llama;
    assert_int_equal(vt->messages_native(&r2), 0);
    assert_null(sg_provider_openai.messages_native);

    cJSON *client = cJSON_Parse("{\"model\":\"cortex/claude-sonnet-4-5\",\"max_tokens\":5,"
                                "\"stream\":true,\"sophia\":{\"tier\":\"large\"},\"messages\":"
                                "[{\"role\":\"user\",\"content\":\"hi\"}],\"top_k\":3}");
    sg_upstream_opts_t uo = {1000, 1000, 1000, 1000};
    sg_exchange_req_t xr = {0};
    char url[512];
    sg_error_t e;
    assert_int_equal(vt->build_messages(&r, client, 1, &uo, &xr, url, sizeof(url), &e), 0);
    assert_string_equal(url, "https://a.snowflakecomputing.com/api/v2/cortex/v1/messages");
    cJSON *body = cJSON_ParseWithLength(xr.body, xr.body_len);
    assert_string_equal(cJSON_GetObjectItem(body, "model")->valuestring, "claude-sonnet-4-5");
    assert_null(cJSON_GetObjectItem(body, "sophia"));
    assert_int_equal(cJSON_GetObjectItem(body, "top_k")->valueint, 3); /* as it is */
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(body, "stream")));
    int version = 0;
    for (struct curl_slist *h = xr.headers; h; h = h->next)
        if (strcmp(h->data, "anthropic-version: 2023-06-01") == 0) version = 1;
    assert_true(version);
    cJSON_Delete(body);
    cJSON_Delete(client);
    curl_slist_free_all(xr.headers);
    free(xr.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_every_split),    cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_stream_malformed),      cmocka_unit_test(test_stream_sink_stop),
        cmocka_unit_test(test_whole_answer),          cmocka_unit_test(test_error_types),
        cmocka_unit_test(test_cortex_build_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
