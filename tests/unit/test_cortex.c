/* Unit tests for the Snowflake Cortex adapter (src/providers/cortex.c): the stream decoder on
 * recorded streams of every chunk shape (split at every byte boundary), request translation,
 * non-streaming conversion and error mapping. Routes have sf_auth NULL: build_chat then sends
 * no Authorization (see cx_headers), so no credentials are needed here. */
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
#include "sophia/redact.h"

extern const sg_provider_vt_t sg_provider_cortex;

#define VT sg_provider_cortex
#define PUBLIC_NAME "cortex/claude-3-5-sonnet"
#define LOG_CAP (1u << 22)
#define MAX_TOOLS 8

/* ---- routes ----------------------------------------------------------------------------- */

typedef struct fixture_route {
    sg_provider_cfg_t prov;
    sg_cortex_cfg_t cortex;
    sg_model_cfg_t model;
    sg_route_t route;
} fixture_route_t;

static void route_init(fixture_route_t *f, const char *api)
{
    memset(f, 0, sizeof(*f));
    f->prov.name = "cortex";
    f->prov.kind = "cortex";
    f->prov.ext = &f->cortex;
    f->prov.ops = &sg_kind_cortex;
    f->route.base_url = "https://myorg-myacct.snowflakecomputing.com";
    f->cortex.role = "ANALYST"; /* never sent: not part of a Cortex REST request */
    f->cortex.warehouse = "COMPUTE_WH";
    f->model.id = "sonnet";
    f->model.upstream_id = "claude-3-5-sonnet";
    f->model.api = (char *)api;
    f->route.provider = &f->prov;
    f->route.model = &f->model;
    snprintf(f->route.public_name, sizeof(f->route.public_name), "%s", PUBLIC_NAME);
    f->route.state = NULL;
}

/* ---- recording sink --------------------------------------------------------------------- */

typedef struct rec {
    sg_buf_t log; /* every sink call serialised (chunk ids and created left out) */
    sg_buf_t content;
    sg_buf_t args[MAX_TOOLS];
    char *tool_id[MAX_TOOLS];
    char *tool_name[MAX_TOOLS];
    int n_tools;
    char finish[32];
    char id[128];
    sg_usage_t usage;
    int usages, ends, errors, chunks, roles, with_raw;
    int stop_after; /* when non-zero, chunk returns 1 for chunk number stop_after */
    int ret;        /* decode / decode_finish result */
    sg_error_t err;
} rec_t;

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof(*r));
    sg_buf_init(&r->log, LOG_CAP);
    sg_buf_init(&r->content, LOG_CAP);
    for (int i = 0; i < MAX_TOOLS; i++) sg_buf_init(&r->args[i], LOG_CAP);
}

static void rec_dispose(rec_t *r)
{
    sg_buf_dispose(&r->log);
    sg_buf_dispose(&r->content);
    for (int i = 0; i < MAX_TOOLS; i++) {
        sg_buf_dispose(&r->args[i]);
        free(r->tool_id[i]);
        free(r->tool_name[i]);
    }
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int rec_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    rec_t *r = ud;
    if (raw) {
        /* Only the OpenAI-compatible variant forwards upstream text. */
        assert_true(raw_len > 0);
        r->with_raw++;
    }
    assert_int_equal(r->ends, 0);
    assert_int_equal(r->errors, 0);
    if (!raw) assert_string_equal(r->finish, ""); /* nothing after the finish chunk */
    const char *id = str_of(chunk, "id");
    assert_non_null(id);
    if (!r->id[0])
        snprintf(r->id, sizeof(r->id), "%s", id);
    else
        assert_string_equal(r->id, id);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *ch = cJSON_GetArrayItem(choices, 0);
    if (!raw) {
        assert_string_equal(str_of(chunk, "object"), "chat.completion.chunk");
        assert_string_equal(str_of(chunk, "model"), PUBLIC_NAME);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(chunk, "created")));
        assert_int_equal(cJSON_GetArraySize(choices), 1);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(ch, "index")->valueint, 0);
        assert_non_null(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason"));
    }
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
    const char *role = str_of(delta, "role");
    if (role) {
        assert_string_equal(role, "assistant");
        assert_int_equal(r->chunks, 0); /* on the first chunk only */
        r->roles++;
    }
    const char *content = str_of(delta, "content");
    if (content) assert_int_equal(sg_buf_append_str(&r->content, content), 0);
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"))
    {
        int idx = cJSON_GetObjectItemCaseSensitive(tc, "index")->valueint;
        assert_true(idx >= 0 && idx < MAX_TOOLS);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const char *tid = str_of(tc, "id");
        if (tid) {
            assert_int_equal(idx, r->n_tools); /* a new call gets the next index */
            assert_string_equal(str_of(tc, "type"), "function");
            r->tool_id[idx] = sg_xstrdup(tid);
            r->tool_name[idx] = sg_xstrdup(str_of(fn, "name"));
            r->n_tools++;
        } else {
            assert_true(idx < r->n_tools);
        }
        const char *args = str_of(fn, "arguments");
        assert_non_null(args);
        assert_int_equal(sg_buf_append_str(&r->args[idx], args), 0);
    }
    const char *fr = str_of(ch, "finish_reason");
    if (fr && !raw) {
        /* The finish chunk carries nothing but the finish (and the role if it is first). */
        assert_null(content);
        assert_null(cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"));
    }
    if (fr) snprintf(r->finish, sizeof(r->finish), "%s", fr);
    if (!raw && !fr) {
        /* No chunk without content: usage-only and empty deltas are not forwarded. */
        assert_true((content && content[0]) ||
                    cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(delta, "tool_calls")) == 1);
    }
    cJSON *copy = cJSON_Duplicate(chunk, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "created");
    char *s = cJSON_PrintUnformatted(copy);
    cJSON_Delete(copy);
    assert_int_equal(sg_buf_printf(&r->log, "C %s\n", s), 0);
    free(s);
    r->chunks++;
    if (r->stop_after && r->chunks == r->stop_after) return 1;
    return 0;
}

static void rec_usage(void *ud, const sg_usage_t *u)
{
    rec_t *r = ud;
    assert_int_equal(r->ends, 0);
    assert_true(u->known);
    r->usage = *u;
    r->usages++;
    assert_int_equal(sg_buf_printf(&r->log, "U %ld %ld\n", u->prompt_tokens, u->completion_tokens),
                     0);
}

static void rec_end(void *ud)
{
    rec_t *r = ud;
    r->ends++;
    assert_int_equal(sg_buf_printf(&r->log, "E\n"), 0);
}

static void rec_error(void *ud, const sg_error_t *e)
{
    rec_t *r = ud;
    r->errors++;
    r->err = *e;
    assert_int_equal(
        sg_buf_printf(&r->log, "X %d %s %s %s\n", e->status, e->type, e->code, e->message), 0);
}

/* Decodes s with the bytes cut into two feeds at split, or one byte per feed (bytewise). */
static void run(const sg_route_t *route, const char *s, size_t n, size_t split, int bytewise,
                rec_t *r)
{
    sg_decode_sink_t sink = {rec_chunk, rec_usage, rec_end, rec_error, r, NULL};
    void *d = VT.decoder_new(route, &sink);
    assert_non_null(d);
    int ret = 0;
    if (bytewise) {
        for (size_t i = 0; i < n && ret == 0; i++) ret = VT.decode(d, s + i, 1);
    } else {
        ret = VT.decode(d, s, split);
        if (ret == 0) ret = VT.decode(d, s + split, n - split);
    }
    /* The gateway stops at the first failure: no finish then. */
    if (ret == 0) ret = VT.decode_finish(d);
    r->ret = ret;
    assert_int_equal(sg_buf_printf(&r->log, "R %d\n", ret), 0);
    VT.decoder_free(d);
    if (ret == 0 && r->stop_after == 0) {
        assert_int_equal(r->ends, 1);
        assert_int_equal(r->errors, 0);
    } else {
        assert_int_equal(r->ends, 0);
    }
    assert_true(r->errors <= 1);
}

/* Decodes s whole, then split at every byte boundary, then one byte at a time, asserting
 * identical sink output each time. whole receives the first run (caller disposes it). */
static void run_all_splits(const sg_route_t *route, const char *s, size_t n, rec_t *whole)
{
    rec_init(whole);
    run(route, s, n, n, 0, whole);
    for (size_t split = 0; split <= n; split++) {
        rec_t r;
        rec_init(&r);
        run(route, s, n, split, 0, &r);
        if (strcmp(r.log.data, whole->log.data) != 0)
            fail_msg("split at %zu differs:\n%s\n--- vs whole ---\n%s", split, r.log.data,
                     whole->log.data);
        rec_dispose(&r);
    }
    rec_t b;
    rec_init(&b);
    run(route, s, n, 0, 1, &b);
    assert_string_equal(b.log.data, whole->log.data);
    rec_dispose(&b);
}

static char *to_crlf(const char *s)
{
    size_t n = strlen(s), k = 0;
    char *out = sg_xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') out[k++] = '\r';
        out[k++] = s[i];
    }
    out[k] = '\0';
    return out;
}

static void run_fixture(const char *s, rec_t *whole)
{
    fixture_route_t f;
    route_init(&f, NULL);
    run_all_splits(&f.route, s, strlen(s), whole);
}

/* ---- recorded streams ------------------------------------------------------------------- */

/* Shape 1: pretty-printed JSON over several data lines, usage in every chunk counting up. */
static const char SHAPE1[] = "data: {\n"
                             "data:   \"id\": \"5e1f3c2a-8b7d-4c1e-9f0a-2d3b4c5d6e7f\",\n"
                             "data:   \"model\": \"mistral-large2\",\n"
                             "data:   \"choices\": [\n"
                             "data:     {\n"
                             "data:       \"delta\": {\n"
                             "data:         \"content\": \"Hello\"\n"
                             "data:       }\n"
                             "data:     }\n"
                             "data:   ],\n"
                             "data:   \"usage\": {\n"
                             "data:     \"prompt_tokens\": 14,\n"
                             "data:     \"completion_tokens\": 1,\n"
                             "data:     \"total_tokens\": 15\n"
                             "data:   }\n"
                             "data: }\n"
                             "\n"
                             "data: {\n"
                             "data:   \"id\": \"5e1f3c2a-8b7d-4c1e-9f0a-2d3b4c5d6e7f\",\n"
                             "data:   \"model\": \"mistral-large2\",\n"
                             "data:   \"choices\": [\n"
                             "data:     {\n"
                             "data:       \"delta\": {\n"
                             "data:         \"content\": \" world\"\n"
                             "data:       }\n"
                             "data:     }\n"
                             "data:   ],\n"
                             "data:   \"usage\": {\n"
                             "data:     \"prompt_tokens\": 14,\n"
                             "data:     \"completion_tokens\": 2,\n"
                             "data:     \"total_tokens\": 16\n"
                             "data:   }\n"
                             "data: }\n"
                             "\n"
                             "data: {\n"
                             "data:   \"id\": \"5e1f3c2a-8b7d-4c1e-9f0a-2d3b4c5d6e7f\",\n"
                             "data:   \"model\": \"mistral-large2\",\n"
                             "data:   \"choices\": [\n"
                             "data:     {\n"
                             "data:       \"delta\": {\n"
                             "data:         \"content\": \"!\"\n"
                             "data:       }\n"
                             "data:     }\n"
                             "data:   ],\n"
                             "data:   \"usage\": {\n"
                             "data:     \"prompt_tokens\": 14,\n"
                             "data:     \"completion_tokens\": 3,\n"
                             "data:     \"total_tokens\": 17\n"
                             "data:   }\n"
                             "data: }\n"
                             "\n";

/* Shape 2: one line per event, "usage":{} until a final chunk with an empty delta. */
static const char SHAPE2[] =
    "event: message\n"
    "data: {\"id\":\"b2c3d4e5-0000-4111-8222-333344445555\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{\"content\":\"The\"}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"b2c3d4e5-0000-4111-8222-333344445555\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{\"content\":\" answer\"}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"b2c3d4e5-0000-4111-8222-333344445555\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{\"content\":\" is 42.\"}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"b2c3d4e5-0000-4111-8222-333344445555\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":4,"
    "\"total_tokens\":24}}\n"
    "\n";

/* Shape 3 (current): type/content/content_list/text repeat the same text; usage on the last
 * content chunk. A keep-alive comment and an unknown event type in between. */
static const char SHAPE3[] =
    ": keep-alive\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"c3d4e5f6-1111-4222-8333-444455556666\",\"model\":\"claude-3-5-sonnet\","
    "\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":\"I\",\"content_list\":"
    "[{\"type\":\"text\",\"text\":\"I\"}],\"text\":\"I\"}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"c3d4e5f6-1111-4222-8333-444455556666\",\"model\":\"claude-3-5-sonnet\","
    "\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":\" like\",\"content_list\":"
    "[{\"type\":\"text\",\"text\":\" like\"}],\"text\":\" like\"}}],\"usage\":{}}\n"
    "\n"
    "event: ping\n"
    "data: {}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"c3d4e5f6-1111-4222-8333-444455556666\",\"model\":\"claude-3-5-sonnet\","
    "\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":\" caf\xC3\xA9 \xE2\x98\x95\","
    "\"content_list\":[{\"type\":\"text\",\"text\":\" caf\xC3\xA9 \xE2\x98\x95\"}],"
    "\"text\":\" caf\xC3\xA9 \xE2\x98\x95\"}}],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":5,\"total_tokens\":14,\"guard_tokens\":0}}\n"
    "\n";

/* Shape 3 with tools: a text preamble, then two tool_use calls streamed as input fragments;
 * finish_reason "tool_use" and the usage on the last chunk. */
static const char TOOLS[] =
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":\"Let me check.\",\"conten"
    "t_list\":[{\"type\":\"text\",\"text\":\"Let me check.\"}],\"text\":\"Let me check.\""
    "}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Q1w2E3r4"
    "\",\"name\":\"get_weather\",\"input\":\"\",\"content_list\":[{\"type\":\"tool_use\","
    "\"tool_use_id\":\"tooluse_Q1w2E3r4\",\"name\":\"get_weather\",\"input\":\"\"}]}}],\""
    "usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Q1w2E3r4"
    "\",\"name\":\"get_weather\",\"input\":\"{\\\"city\\\": \",\"content_list\":[{\"type"
    "\":\"tool_use\",\"tool_use_id\":\"tooluse_Q1w2E3r4\",\"name\":\"get_weather\",\"inpu"
    "t\":\"{\\\"city\\\": \"}]}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Q1w2E3r4"
    "\",\"name\":\"get_weather\",\"input\":\"\\\"Paris\\\"}\",\"content_list\":[{\"type\""
    ":\"tool_use\",\"tool_use_id\":\"tooluse_Q1w2E3r4\",\"name\":\"get_weather\",\"input"
    "\":\"\\\"Paris\\\"}\"}]}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Z9x8C7v6"
    "\",\"name\":\"get_time\",\"input\":\"\",\"content_list\":[{\"type\":\"tool_use\",\"t"
    "ool_use_id\":\"tooluse_Z9x8C7v6\",\"name\":\"get_time\",\"input\":\"\"}]}}],\"usage"
    "\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Z9x8C7v6"
    "\",\"name\":\"get_time\",\"input\":\"{\\\"tz\\\":\\\"CET\\\"}\",\"content_list\":[{"
    "\"type\":\"tool_use\",\"tool_use_id\":\"tooluse_Z9x8C7v6\",\"name\":\"get_time\",\"i"
    "nput\":\"{\\\"tz\\\":\\\"CET\\\"}\"}]}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"d4e5f6a7-2222-4333-8444-555566667777\",\"model\":\"claude-3-5-sonnet"
    "\",\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":\"\",\"content_list\":[],"
    "\"text\":\"\"},\"finish_reason\":\"tool_use\"}],\"usage\":{\"prompt_tokens\":312,\"c"
    "ompletion_tokens\":58,\"total_tokens\":370}}\n"
    "\n";

/* Cortex Guard blocked the output. */
static const char PROHIBITED[] =
    "data: {\"id\":\"e5f6a7b8-3333-4444-8555-666677778888\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{\"content\":\"Sure, here is\"}}],\"usage\":{}}\n"
    "\n"
    "data: {\"id\":\"e5f6a7b8-3333-4444-8555-666677778888\",\"model\":\"llama3.1-70b\","
    "\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"prohibited_content\"}],"
    "\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":3,\"total_tokens\":43,"
    "\"guard_tokens\":57}}\n"
    "\n";

/* An error chunk in the middle of a 200 stream; what follows is ignored. */
static const char MIDERROR[] =
    "event: message\n"
    "data: {\"id\":\"f6a7b8c9-4444-4555-8666-777788889999\",\"model\":\"mistral-large2\","
    "\"choices\":[{\"delta\":{\"content\":\"Once\"}}],\"usage\":{}}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"f6a7b8c9-4444-4555-8666-777788889999\",\"model\":\"mistral-large2\","
    "\"choices\":[{\"delta\":{\"content\":\" upon\"}}],\"usage\":{\"prompt_tokens\":7,"
    "\"completion_tokens\":2,\"total_tokens\":9}}\n"
    "\n"
    "event: message\n"
    "data: {\"error\":{\"message\":\"inference request timed out\",\"code\":\"503\"},"
    "\"request_id\":\"01b2c3d4-0000-1111-2222-333344445555\"}\n"
    "\n"
    "event: message\n"
    "data: {\"id\":\"f6a7b8c9-4444-4555-8666-777788889999\",\"model\":\"mistral-large2\","
    "\"choices\":[{\"delta\":{\"content\":\" a time\"}}],\"usage\":{}}\n"
    "\n";

/* ---- decoder tests ---------------------------------------------------------------------- */

static void test_stream_shape1_pretty_multiline(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(SHAPE1, &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "Hello world!");
    assert_string_equal(r.id, "5e1f3c2a-8b7d-4c1e-9f0a-2d3b4c5d6e7f");
    assert_string_equal(r.finish, "stop");
    assert_int_equal(r.usage.prompt_tokens, 14);
    assert_int_equal(r.usage.completion_tokens, 3);
    assert_int_equal(r.usages, 3); /* counting up: each new value reported, the last wins */
    assert_int_equal(r.chunks, 4); /* three content chunks and the finish chunk */
    assert_int_equal(r.roles, 1);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.n_tools, 0);
    rec_dispose(&r);
}

static void test_stream_shape2_final_usage_chunk(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(SHAPE2, &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "The answer is 42.");
    assert_string_equal(r.finish, "stop");
    assert_int_equal(r.usage.prompt_tokens, 20);
    assert_int_equal(r.usage.completion_tokens, 4);
    assert_int_equal(r.usages, 1);
    assert_int_equal(r.chunks, 4); /* the usage-only chunk produced none */
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_shape2_crlf(void **state)
{
    (void)state;
    char *crlf = to_crlf(SHAPE2);
    rec_t r;
    run_fixture(crlf, &r);
    rec_t lf;
    run_fixture(SHAPE2, &lf);
    assert_string_equal(r.log.data, lf.log.data);
    assert_string_equal(r.content.data, "The answer is 42.");
    rec_dispose(&r);
    rec_dispose(&lf);
    free(crlf);
}

static void test_stream_shape1_crlf(void **state)
{
    (void)state;
    char *crlf = to_crlf(SHAPE1);
    rec_t r;
    run_fixture(crlf, &r);
    assert_string_equal(r.content.data, "Hello world!");
    assert_int_equal(r.usage.completion_tokens, 3);
    rec_dispose(&r);
    free(crlf);
}

static void test_stream_shape3_current(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(SHAPE3, &r);
    assert_int_equal(r.ret, 0);
    /* Text repeated in content, content_list and text is emitted once. */
    assert_string_equal(r.content.data, "I like caf\xC3\xA9 \xE2\x98\x95");
    assert_string_equal(r.finish, "stop");
    assert_int_equal(r.usage.prompt_tokens, 9);
    assert_int_equal(r.usage.completion_tokens, 5);
    assert_int_equal(r.chunks, 4);
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_tool_use(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(TOOLS, &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "Let me check.");
    assert_int_equal(r.n_tools, 2);
    assert_string_equal(r.tool_id[0], "tooluse_Q1w2E3r4");
    assert_string_equal(r.tool_name[0], "get_weather");
    assert_string_equal(r.args[0].data, "{\"city\": \"Paris\"}");
    assert_string_equal(r.tool_id[1], "tooluse_Z9x8C7v6");
    assert_string_equal(r.tool_name[1], "get_time");
    assert_string_equal(r.args[1].data, "{\"tz\":\"CET\"}");
    assert_string_equal(r.finish, "tool_calls");
    assert_int_equal(r.usage.prompt_tokens, 312);
    assert_int_equal(r.usage.completion_tokens, 58);
    /* text, start + 2 fragments, start + 1 fragment, finish */
    assert_int_equal(r.chunks, 7);
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_prohibited_content(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(PROHIBITED, &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "Sure, here is");
    assert_string_equal(r.finish, "content_filter");
    assert_int_equal(r.usage.prompt_tokens, 40);
    assert_int_equal(r.usage.completion_tokens, 3);
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_guard_block_stays_content_filter(void **state)
{
    (void)state;
    /* A later chunk saying "stop" does not hide that Cortex Guard blocked the output. */
    rec_t r;
    run_fixture("data: {\"id\":\"g1\",\"choices\":[{\"delta\":{\"content\":\"x\"},"
                "\"finish_reason\":\"prohibited_content\"}]}\n\n"
                "data: {\"id\":\"g1\",\"choices\":[{\"delta\":{}}],\"finish_reason\":\"stop\","
                "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n",
                &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.finish, "content_filter");
    rec_dispose(&r);
}

static void test_stream_mid_stream_error(void **state)
{
    (void)state;
    rec_t r;
    run_fixture(MIDERROR, &r);
    assert_int_equal(r.ret, -1);
    assert_string_equal(r.content.data, "Once upon");
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.ends, 0);
    assert_int_equal(r.err.status, 502);
    assert_string_equal(r.err.type, "api_error");
    assert_non_null(strstr(r.err.message, "inference request timed out"));
    assert_string_equal(r.finish, "");
    assert_int_equal(r.usage.completion_tokens, 2); /* partial usage was reported */
    rec_dispose(&r);
}

static void test_stream_error_string_shape(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("data: {\"error\":\"model overloaded, try again\"}\n\n", &r);
    assert_int_equal(r.ret, -1);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err.status, 502);
    assert_non_null(strstr(r.err.message, "model overloaded, try again"));
    assert_int_equal(r.chunks, 0);
    rec_dispose(&r);
}

static void test_stream_error_event_type(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("event: error\ndata: {\"message\":\"quota exhausted\",\"code\":\"402\"}\n\n", &r);
    assert_int_equal(r.errors, 1);
    assert_non_null(strstr(r.err.message, "quota exhausted"));
    rec_dispose(&r);
}

static void test_stream_undecodable_json(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("data: {\"id\":\"x1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
                "data: {not json\n\n"
                "data: {\"id\":\"x1\",\"choices\":[{\"delta\":{\"content\":\"more\"}}]}\n\n",
                &r);
    assert_int_equal(r.ret, -1);
    assert_string_equal(r.content.data, "hi");
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err.status, 502);
    assert_string_equal(r.err.type, "api_error");
    assert_int_equal(r.ends, 0);
    rec_dispose(&r);
}

static void test_stream_cut_mid_event(void **state)
{
    (void)state;
    /* The connection closed in the middle of a chunk: an error, never a clean end. */
    rec_t r;
    run_fixture("data: {\"id\":\"x2\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                "data: {\"id\":\"x2\",\"choices\":[{\"del",
                &r);
    assert_int_equal(r.ret, -1);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.ends, 0);
    rec_dispose(&r);
}

static void test_stream_empty_body_is_error(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("", &r);
    assert_int_equal(r.ret, -1);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.ends, 0);
    rec_dispose(&r);
    run_fixture(": nothing but a comment\n\n", &r);
    assert_int_equal(r.errors, 1);
    rec_dispose(&r);
}

static void test_stream_last_event_without_blank_line(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("data: {\"id\":\"x3\",\"choices\":[{\"delta\":{\"content\":\"ok\"}}],"
                "\"finish_reason\":\"length\",\"usage\":{\"prompt_tokens\":3,"
                "\"completion_tokens\":1}}",
                &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "ok");
    assert_string_equal(r.finish, "length");
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_done_marker_accepted(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("data: {\"id\":\"x4\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                "data: [DONE]\n\n"
                "data: {\"id\":\"x4\",\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
                &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "a");
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

static void test_stream_content_list_only(void **state)
{
    (void)state;
    rec_t r;
    run_fixture("data: {\"choices\":[{\"delta\":{\"content_list\":[{\"type\":\"text\","
                "\"text\":\"A\"},{\"type\":\"text\",\"text\":\"B\"}]}}]}\n\n"
                "data: {\"choices\":[{\"delta\":{\"text\":\"C\"}}]}\n\n",
                &r);
    assert_int_equal(r.ret, 0);
    assert_string_equal(r.content.data, "ABC");
    assert_int_equal(strncmp(r.id, "chatcmpl-cortex-", 16), 0); /* generated: none upstream */
    rec_dispose(&r);
}

static void test_stream_sink_stop(void **state)
{
    (void)state;
    fixture_route_t f;
    route_init(&f, NULL);
    rec_t r;
    rec_init(&r);
    r.stop_after = 1;
    run(&f.route, SHAPE2, strlen(SHAPE2), strlen(SHAPE2), 0, &r);
    assert_int_equal(r.ret, -1);
    assert_int_equal(r.chunks, 1);
    assert_int_equal(r.ends, 0);
    assert_int_equal(r.errors, 0);
    rec_dispose(&r);
}

static void test_stream_openai_variant_delegates(void **state)
{
    (void)state;
    fixture_route_t f;
    route_init(&f, "openai");
    static const char s[] =
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"claude-3-5-sonnet\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
        "\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"claude-3-5-sonnet\",\"choices\":[{\"index\":0,\"delta\":{},"
        "\"finish_reason\":\"stop\"}]}\n\n"
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"claude-3-5-sonnet\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
        "\"completion_tokens\":1,\"total_tokens\":6}}\n\n"
        "data: [DONE]\n\n";
    rec_t r;
    rec_init(&r);
    run(&f.route, s, strlen(s), strlen(s), 0, &r);
    assert_int_equal(r.ret, 0);
    assert_int_equal(r.with_raw, 3);
    assert_string_equal(r.content.data, "Hi");
    assert_int_equal(r.usage.prompt_tokens, 5);
    assert_int_equal(r.ends, 1);
    rec_dispose(&r);
}

/* ---- request translation ---------------------------------------------------------------- */

typedef struct built {
    int rc;
    sg_error_t err;
    char url[512];
    cJSON *body;
    char **headers;
    size_t n_headers;
} built_t;

static void build(const char *api, const char *client_json, int stream, built_t *b)
{
    memset(b, 0, sizeof(*b));
    fixture_route_t f;
    route_init(&f, api);
    cJSON *client = cJSON_Parse(client_json);
    assert_non_null(client);
    sg_upstream_opts_t uo = {1000, 2000, 3000, 4000};
    sg_exchange_req_t out;
    memset(&out, 0, sizeof(out));
    b->rc = VT.build_chat(&f.route, client, stream, &uo, &out, b->url, sizeof(b->url), &b->err);
    cJSON_Delete(client);
    if (b->rc != 0) {
        assert_int_equal(b->rc, -1);
        assert_null(out.body);
        assert_null(out.headers);
        return;
    }
    assert_ptr_equal(out.url, b->url);
    assert_string_equal(out.method, "POST");
    assert_int_equal(out.total_timeout_ms, 4000);
    assert_int_equal(out.body_len, strlen(out.body));
    b->body = cJSON_Parse(out.body);
    assert_non_null(b->body);
    free(out.body);
    for (struct curl_slist *h = out.headers; h; h = h->next) {
        b->headers = sg_xrealloc(b->headers, (b->n_headers + 1) * sizeof(char *));
        b->headers[b->n_headers++] = sg_xstrdup(h->data);
    }
    curl_slist_free_all(out.headers);
}

static void built_free(built_t *b)
{
    cJSON_Delete(b->body);
    for (size_t i = 0; i < b->n_headers; i++) free(b->headers[i]);
    free(b->headers);
}

static int has_header(const built_t *b, const char *line)
{
    for (size_t i = 0; i < b->n_headers; i++)
        if (strcmp(b->headers[i], line) == 0) return 1;
    return 0;
}

static int has_header_prefix(const built_t *b, const char *prefix)
{
    for (size_t i = 0; i < b->n_headers; i++)
        if (strncasecmp(b->headers[i], prefix, strlen(prefix)) == 0) return 1;
    return 0;
}

static char *print(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    assert_non_null(s);
    return s;
}

static void assert_json(const cJSON *j, const char *expected)
{
    cJSON *e = cJSON_Parse(expected);
    assert_non_null(e);
    if (!cJSON_Compare(j, e, 1)) {
        char *a = print(j);
        fail_msg("JSON differs:\n got %s\nwant %s", a, expected);
    }
    cJSON_Delete(e);
}

/* Multi-turn tool use: tool_calls → tool_use items, tool results (and a user message after
 * them) → one user message with tool_results items, as Snowflake's specification shapes them. */
static void test_build_tool_results(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"},"
          "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
          "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
          "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
          "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
          "\"arguments\":\"\"}}]},"
          "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"18C\"},"
          "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":[{\"type\":\"text\","
          "\"text\":\"noon\"}]},"
          "{\"role\":\"user\",\"content\":\"and tomorrow?\"}]}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "messages"),
                "[{\"role\":\"user\",\"content\":\"weather?\"},"
                "{\"role\":\"assistant\",\"content\":\"\",\"content_list\":["
                "{\"type\":\"tool_use\",\"tool_use\":{\"tool_use_id\":\"c1\",\"name\":"
                "\"get_weather\",\"input\":{\"city\":\"Paris\"}}},"
                "{\"type\":\"tool_use\",\"tool_use\":{\"tool_use_id\":\"c2\",\"name\":"
                "\"get_time\",\"input\":{}}}]},"
                "{\"role\":\"user\",\"content_list\":["
                "{\"type\":\"tool_results\",\"tool_results\":{\"tool_use_id\":\"c1\",\"name\":"
                "\"get_weather\",\"content\":[{\"type\":\"text\",\"text\":\"18C\"}]}},"
                "{\"type\":\"tool_results\",\"tool_results\":{\"tool_use_id\":\"c2\",\"name\":"
                "\"get_time\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]}}],"
                "\"content\":\"and tomorrow?\"}]");
    built_free(&b);
}

static void assert_rejected(const char *client_json, const char *needle)
{
    built_t b;
    build(NULL, client_json, 0, &b);
    if (b.rc == 0) {
        char *s = print(b.body);
        fail_msg("accepted: %s", s);
    }
    assert_int_equal(b.err.status, 400);
    assert_string_equal(b.err.type, "invalid_request_error");
    if (!strstr(b.err.message, needle)) fail_msg("message '%s' lacks '%s'", b.err.message, needle);
    built_free(&b);
}

static void test_build_system_user(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"cortex/sonnet\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
          "brief.\"},{\"role\":\"user\",\"content\":\"Hi\",\"name\":\"alice\"}],"
          "\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":100,\"user\":\"u-1\","
          "\"stream_options\":{\"include_usage\":true},\"n\":1,\"presence_penalty\":0,"
          "\"frequency_penalty\":0,\"logprobs\":false,\"stop\":null,\"seed\":null}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_string_equal(
        b.url, "https://myorg-myacct.snowflakecomputing.com/api/v2/cortex/inference:complete");
    assert_json(b.body, "{\"model\":\"claude-3-5-sonnet\",\"messages\":[{\"role\":\"system\","
                        "\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"}],"
                        "\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":100,\"stream\":false}");
    assert_true(has_header(&b, "Content-Type: application/json"));
    assert_true(has_header(&b, "Accept: application/json, text/event-stream"));
    /* User-Agent is set on every upstream request by the exchange (CURLOPT_USERAGENT). */
    /* sf_auth NULL: no credentials; and no invented role/warehouse headers. */
    assert_false(has_header_prefix(&b, "Authorization:"));
    assert_false(has_header_prefix(&b, "X-Snowflake-Authorization-Token-Type:"));
    assert_false(has_header_prefix(&b, "X-Snowflake-Role"));
    assert_false(has_header_prefix(&b, "X-Snowflake-Warehouse"));
    built_free(&b);
}

static void test_build_stream_flag(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
          "\"Hi\"}]}",
          1, &b);
    assert_int_equal(b.rc, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b.body, "stream")));
    built_free(&b);
}

static void test_build_text_parts_joined(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":"
          "\"text\",\"text\":\"Rule one.\"}]},{\"role\":\"user\",\"content\":\"Q1\"},"
          "{\"role\":\"assistant\",\"content\":\"A1\"},{\"role\":\"user\",\"content\":"
          "[{\"type\":\"text\",\"text\":\"Part A\"},{\"type\":\"text\",\"text\":\"Part B\"}]}]}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "messages"),
                "[{\"role\":\"system\",\"content\":\"Rule one.\"},{\"role\":\"user\","
                "\"content\":\"Q1\"},{\"role\":\"assistant\",\"content\":\"A1\"},"
                "{\"role\":\"user\",\"content\":\"Part A\\nPart B\"}]");
    built_free(&b);
}

static void test_build_response_format(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\","
          "\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
          "\"string\"}},\"required\":[\"a\"]}}}}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "response_format"),
                "{\"type\":\"json\",\"schema\":{\"type\":\"object\",\"properties\":{\"a\":"
                "{\"type\":\"string\"}},\"required\":[\"a\"]}}");
    built_free(&b);
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"response_format\":{\"type\":\"text\"}}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(b.body, "response_format"));
    built_free(&b);
}

static void test_build_tools_and_tool_choice(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
          "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
          "\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
          "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
          "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}],"
          "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
          "\"parallel_tool_calls\":true}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "tools"),
                "[{\"tool_spec\":{\"type\":\"generic\",\"name\":\"get_weather\","
                "\"description\":\"Current weather\",\"input_schema\":{\"type\":\"object\","
                "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
                "{\"tool_spec\":{\"type\":\"generic\",\"name\":\"now\",\"input_schema\":"
                "{\"type\":\"object\",\"properties\":{}}}}]");
    assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "tool_choice"),
                "{\"type\":\"tool\",\"name\":[\"get_weather\"]}");
    built_free(&b);
    static const char *const choices[] = {"auto", "required", "none"};
    for (size_t i = 0; i < 3; i++) {
        char req[256], want[64];
        snprintf(req, sizeof(req),
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"tool_choice\":\"%s\"}",
                 choices[i]);
        snprintf(want, sizeof(want), "{\"type\":\"%s\"}", choices[i]);
        build(NULL, req, 0, &b);
        assert_int_equal(b.rc, 0);
        assert_json(cJSON_GetObjectItemCaseSensitive(b.body, "tool_choice"), want);
        built_free(&b);
    }
}

static void test_build_max_completion_tokens(void **state)
{
    (void)state;
    built_t b;
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"max_completion_tokens\":256}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(b.body, "max_tokens")->valueint, 256);
    assert_null(cJSON_GetObjectItemCaseSensitive(b.body, "max_completion_tokens"));
    built_free(&b);
    build(NULL,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"max_tokens\":10,\"max_completion_tokens\":20}",
          0, &b);
    assert_int_equal(b.rc, 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(b.body, "max_tokens")->valueint, 20);
    built_free(&b);
}

#define USER_MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"

static void test_build_rejections(void **state)
{
    (void)state;
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                    "\"text\",\"text\":\"what is this?\"},{\"type\":\"image_url\",\"image_url\":"
                    "{\"url\":\"https://x/y.png\"}}]}]}",
                    "'image_url'");
    /* A tool result must answer an earlier tool call; arguments must be an object. */
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}]}",
                    "answers no earlier assistant tool call");
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                    "{\"role\":\"tool\",\"content\":\"42\"}]}",
                    "needs a 'tool_call_id'");
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
                    "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}]}",
                    "must be a JSON object");
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"function\",\"name\":\"f\","
                    "\"content\":\"1\"},{\"role\":\"user\",\"content\":\"x\"}]}",
                    "role 'function'");
    assert_rejected("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                    "{\"role\":\"assistant\",\"content\":\"prefill\"}]}",
                    "last message to be from the user");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"response_format\":{\"type\":"
                    "\"json_object\"}}",
                    "json_object");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"response_format\":{\"type\":"
                    "\"json_schema\",\"json_schema\":{\"name\":\"x\"}}}",
                    "json_schema.schema");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"n\":2}", "'n'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"logprobs\":true}", "'logprobs'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"presence_penalty\":0.5}",
                    "'presence_penalty'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"frequency_penalty\":1}",
                    "'frequency_penalty'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"stop\":[\"\\n\"]}", "'stop'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"seed\":42}", "'seed'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"temperature\":\"hot\"}", "'temperature'");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"tools\":[{\"type\":\"code_interpreter\"}]}",
                    "tools[0]");
    assert_rejected("{\"model\":\"m\"," USER_MSG ",\"tool_choice\":\"any\"}", "tool_choice");
    assert_rejected("{\"model\":\"m\",\"messages\":[]}", "messages");
}

static void test_build_no_base_url(void **state)
{
    (void)state;
    fixture_route_t f;
    route_init(&f, NULL);
    f.route.base_url = NULL;
    cJSON *client = cJSON_Parse("{\"model\":\"m\"," USER_MSG "}");
    sg_upstream_opts_t uo = {0};
    sg_exchange_req_t out;
    memset(&out, 0, sizeof(out));
    char url[256];
    sg_error_t e;
    assert_int_equal(VT.build_chat(&f.route, client, 0, &uo, &out, url, sizeof(url), &e), -1);
    assert_int_equal(e.status, 503);
    cJSON_Delete(client);
}

static void test_build_openai_variant(void **state)
{
    (void)state;
    built_t b;
    build("openai",
          "{\"model\":\"cortex/sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
          "\"max_tokens\":50,\"stream\":true,\"stream_options\":{\"include_usage\":false},"
          "\"temperature\":0.5}",
          1, &b);
    assert_int_equal(b.rc, 0);
    assert_string_equal(
        b.url, "https://myorg-myacct.snowflakecomputing.com/api/v2/cortex/v1/chat/completions");
    assert_json(b.body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                        "\"temperature\":0.5,\"model\":\"claude-3-5-sonnet\","
                        "\"max_completion_tokens\":50,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true}}");
    assert_true(has_header(&b, "Accept: application/json, text/event-stream"));
    built_free(&b);
    build("openai",
          "{\"model\":\"cortex/sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0,
          &b);
    assert_int_equal(b.rc, 0);
    assert_json(b.body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                        "\"model\":\"claude-3-5-sonnet\",\"stream\":false}");
    built_free(&b);
}

/* ---- convert_response ------------------------------------------------------------------- */

static cJSON *convert(const char *api, const char *body, sg_usage_t *u, sg_error_t *e)
{
    fixture_route_t f;
    route_init(&f, api);
    memset(u, 0, sizeof(*u));
    return VT.convert_response(&f.route, body, strlen(body), u, e);
}

static const cJSON *message_of(const cJSON *resp)
{
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    return cJSON_GetObjectItemCaseSensitive(ch, "message");
}

static const char *finish_of(const cJSON *resp)
{
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    return str_of(ch, "finish_reason");
}

static void test_convert_basic(void **state)
{
    (void)state;
    assert_int_equal(VT.passthrough_response, 0);
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert(NULL,
                       "{\"choices\":[{\"message\":{\"content\":\"Paris.\",\"content_list\":"
                       "[{\"type\":\"text\",\"text\":\"Paris.\"}]}}],\"finish_reason\":\"stop\","
                       "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,"
                       "\"total_tokens\":13,\"guard_tokens\":0}}",
                       &u, &e);
    assert_non_null(r);
    assert_int_equal(strncmp(str_of(r, "id"), "chatcmpl-cortex-", 16), 0);
    assert_string_equal(str_of(r, "object"), "chat.completion");
    assert_string_equal(str_of(r, "model"), PUBLIC_NAME);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "created")));
    assert_json(message_of(r), "{\"role\":\"assistant\",\"content\":\"Paris.\"}");
    assert_string_equal(finish_of(r), "stop");
    assert_json(cJSON_GetObjectItemCaseSensitive(r, "usage"),
                "{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13}");
    assert_true(u.known);
    assert_int_equal(u.prompt_tokens, 11);
    assert_int_equal(u.completion_tokens, 2);
    cJSON_Delete(r);
}

static void test_convert_content_list_only_and_id(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert(NULL,
                       "{\"id\":\"abc-123\",\"created\":1700000000,\"choices\":[{\"message\":"
                       "{\"content_list\":[{\"type\":\"text\",\"text\":\"Hello \"},{\"type\":"
                       "\"text\",\"text\":\"there\"}]},\"finish_reason\":\"length\"}],"
                       "\"usage\":{}}",
                       &u, &e);
    assert_non_null(r);
    assert_string_equal(str_of(r, "id"), "abc-123");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(r, "created")->valuedouble, 1700000000);
    assert_string_equal(str_of(message_of(r), "content"), "Hello there");
    assert_string_equal(finish_of(r), "length");
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "usage"));
    assert_false(u.known);
    cJSON_Delete(r);
}

static void test_convert_tool_use(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert(NULL,
                       "{\"choices\":[{\"message\":{\"content\":\"\",\"content_list\":[{\"type\":"
                       "\"tool_use\",\"tool_use\":{\"tool_use_id\":\"tooluse_1\",\"name\":"
                       "\"get_weather\",\"input\":{\"city\":\"Paris\"}}},{\"type\":\"tool_use\","
                       "\"tool_use_id\":\"tooluse_2\",\"name\":\"now\",\"input\":{}}]}}],"
                       "\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20}}",
                       &u, &e);
    assert_non_null(r);
    assert_json(message_of(r),
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"tooluse_1\","
                "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
                "\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"id\":\"tooluse_2\",\"type\":\"function\","
                "\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]}");
    assert_string_equal(finish_of(r), "tool_calls");
    cJSON_Delete(r);
}

static void test_convert_prohibited(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert(NULL,
                       "{\"choices\":[{\"message\":{\"content\":\"Response filtered by Cortex "
                       "Guard\"},\"finish_reason\":\"prohibited_content\"}],\"finish_reason\":"
                       "\"stop\"}",
                       &u, &e);
    assert_non_null(r);
    assert_string_equal(finish_of(r), "content_filter");
    cJSON_Delete(r);
}

static void test_convert_sse_body(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert(NULL, SHAPE3, &u, &e);
    assert_non_null(r);
    assert_string_equal(str_of(r, "id"), "c3d4e5f6-1111-4222-8333-444455556666");
    assert_string_equal(str_of(r, "object"), "chat.completion");
    assert_json(message_of(r),
                "{\"role\":\"assistant\",\"content\":\"I like caf\xC3\xA9 \xE2\x98\x95\"}");
    assert_string_equal(finish_of(r), "stop");
    assert_int_equal(u.prompt_tokens, 9);
    assert_int_equal(u.completion_tokens, 5);
    cJSON_Delete(r);

    r = convert(NULL, TOOLS, &u, &e);
    assert_non_null(r);
    assert_json(message_of(r),
                "{\"role\":\"assistant\",\"content\":\"Let me check.\",\"tool_calls\":["
                "{\"id\":\"tooluse_Q1w2E3r4\",\"type\":\"function\",\"function\":{\"name\":"
                "\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
                "{\"id\":\"tooluse_Z9x8C7v6\",\"type\":\"function\",\"function\":{\"name\":"
                "\"get_time\",\"arguments\":\"{\\\"tz\\\":\\\"CET\\\"}\"}}]}");
    assert_string_equal(finish_of(r), "tool_calls");
    assert_int_equal(u.completion_tokens, 58);
    cJSON_Delete(r);

    assert_null(convert(NULL, MIDERROR, &u, &e));
    assert_int_equal(e.status, 502);
    assert_non_null(strstr(e.message, "inference request timed out"));
}

static void test_convert_errors(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    assert_null(convert(NULL, "<html>oops</html>", &u, &e));
    assert_int_equal(e.status, 502);
    assert_string_equal(e.type, "api_error");
    assert_null(convert(NULL, "{\"choices\":[]}", &u, &e));
    assert_int_equal(e.status, 502);
    assert_null(convert(NULL, "{\"error\":{\"message\":\"boom\"}}", &u, &e));
    assert_int_equal(e.status, 502);
    assert_non_null(strstr(e.message, "boom"));
}

static void test_convert_openai_variant(void **state)
{
    (void)state;
    sg_usage_t u;
    sg_error_t e;
    cJSON *r = convert("openai",
                       "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion\",\"created\":1,"
                       "\"model\":\"claude-3-5-sonnet\",\"choices\":[{\"index\":0,\"message\":"
                       "{\"role\":\"assistant\",\"content\":\"Yo\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,"
                       "\"total_tokens\":4}}",
                       &u, &e);
    assert_non_null(r);
    assert_string_equal(str_of(r, "id"), "chatcmpl-9");
    assert_string_equal(str_of(r, "model"), PUBLIC_NAME);
    assert_string_equal(str_of(message_of(r), "content"), "Yo");
    assert_int_equal(u.prompt_tokens, 3);
    cJSON_Delete(r);
}

/* ---- map_error -------------------------------------------------------------------------- */

static void map(long status, const char *body, sg_error_t *e)
{
    memset(e, 0, sizeof(*e));
    static sg_provider_cfg_t prov = {.name = "cortex", .kind = "cortex"};
    static sg_model_cfg_t model = {.id = "m", .api = "complete"};
    static sg_route_t route = {.provider = &prov, .model = &model, .public_name = "cortex/m"};
    VT.map_error(&route, status, body, body ? strlen(body) : 0, e);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("'%s' lacks '%s'", hay, needle);
}

static void test_map_error_statuses(void **state)
{
    (void)state;
    sg_error_t e;
    map(400,
        "{\"message\":\"unknown model \\\"foo\\\"\",\"code\":\"390142\",\"request_id\":"
        "\"8d4a1b2c-0000-4000-8000-000000000001\"}",
        &e);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    assert_string_equal(e.code, "390142");
    assert_contains(e.message, "unknown model \"foo\"");
    assert_contains(e.message, "(Snowflake request id 8d4a1b2c-0000-4000-8000-000000000001)");

    map(401, "{\"code\":\"390144\",\"message\":\"JWT token is invalid. [abc]\"}", &e);
    assert_int_equal(e.status, 401);
    assert_string_equal(e.type, "authentication_error");
    assert_contains(e.message, "JWT token is invalid.");

    map(402, "{\"message\":\"Budget exceeded for Cortex AI\",\"request_id\":\"r-2\"}", &e);
    assert_int_equal(e.status, 402);
    assert_string_equal(e.type, "insufficient_quota");
    assert_string_equal(e.code, "insufficient_quota");
    assert_contains(e.message, "Budget exceeded for Cortex AI");
    assert_contains(e.message, "(Snowflake request id r-2)");

    map(403, "{\"message\":\"Not authorized\",\"code\":\"399505\"}", &e);
    assert_int_equal(e.status, 403);
    assert_string_equal(e.type, "permission_error");
    assert_contains(e.message, "Not authorized");
    assert_contains(e.message, "SNOWFLAKE.CORTEX_USER");

    map(404, "{\"message\":\"model not found\"}", &e);
    assert_int_equal(e.status, 404);
    assert_string_equal(e.type, "not_found_error");

    map(429, "{\"message\":\"Too many requests. Please retry later.\",\"request_id\":\"r-3\"}", &e);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.type, "rate_limit_error");
    assert_contains(e.message, "Too many requests. Please retry later.");

    map(503, "{\"message\":\"inference timed out\",\"code\":\"503\"}", &e);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.type, "api_error");
    assert_contains(e.message, "inference timed out");

    map(504, NULL, &e);
    assert_int_equal(e.status, 504);
    assert_string_equal(e.type, "api_error");
    assert_contains(e.message, "HTTP 504");

    map(502, "<html><body>Bad gateway</body></html>", &e);
    assert_int_equal(e.status, 502);
    assert_string_equal(e.type, "api_error");

    map(400,
        "{\"error\":{\"message\":\"max_tokens is not supported\",\"type\":"
        "\"invalid_request_error\"}}",
        &e);
    assert_int_equal(e.status, 400);
    assert_contains(e.message, "max_tokens is not supported");
}

/* The adapter passes the upstream's words on; the gateway redacts every error before it
 * leaves (sg_gen_redact), which is what this checks on a mapped error. */
static void test_map_error_never_leaks_tokens(void **state)
{
    (void)state;
    sg_error_t e;
    map(401,
        "{\"message\":\"Invalid token eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBQ0NULlVT"
        "RVIifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ for user\",\"code\":\"390144\"}",
        &e);
    sg_redact(NULL, NULL, e.message, sizeof(e.message));
    assert_null(strstr(e.message, "eyJ"));
    assert_contains(e.message, "Invalid token [redacted] for user");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_shape1_pretty_multiline),
        cmocka_unit_test(test_stream_shape2_final_usage_chunk),
        cmocka_unit_test(test_stream_shape2_crlf),
        cmocka_unit_test(test_stream_shape1_crlf),
        cmocka_unit_test(test_stream_shape3_current),
        cmocka_unit_test(test_stream_tool_use),
        cmocka_unit_test(test_stream_prohibited_content),
        cmocka_unit_test(test_stream_guard_block_stays_content_filter),
        cmocka_unit_test(test_stream_mid_stream_error),
        cmocka_unit_test(test_stream_error_string_shape),
        cmocka_unit_test(test_stream_error_event_type),
        cmocka_unit_test(test_stream_undecodable_json),
        cmocka_unit_test(test_stream_cut_mid_event),
        cmocka_unit_test(test_stream_empty_body_is_error),
        cmocka_unit_test(test_stream_last_event_without_blank_line),
        cmocka_unit_test(test_stream_done_marker_accepted),
        cmocka_unit_test(test_stream_content_list_only),
        cmocka_unit_test(test_stream_sink_stop),
        cmocka_unit_test(test_stream_openai_variant_delegates),
        cmocka_unit_test(test_build_system_user),
        cmocka_unit_test(test_build_stream_flag),
        cmocka_unit_test(test_build_text_parts_joined),
        cmocka_unit_test(test_build_response_format),
        cmocka_unit_test(test_build_tools_and_tool_choice),
        cmocka_unit_test(test_build_max_completion_tokens),
        cmocka_unit_test(test_build_rejections),
        cmocka_unit_test(test_build_tool_results),
        cmocka_unit_test(test_build_no_base_url),
        cmocka_unit_test(test_build_openai_variant),
        cmocka_unit_test(test_convert_basic),
        cmocka_unit_test(test_convert_content_list_only_and_id),
        cmocka_unit_test(test_convert_tool_use),
        cmocka_unit_test(test_convert_prohibited),
        cmocka_unit_test(test_convert_sse_body),
        cmocka_unit_test(test_convert_errors),
        cmocka_unit_test(test_convert_openai_variant),
        cmocka_unit_test(test_map_error_statuses),
        cmocka_unit_test(test_map_error_never_leaks_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
