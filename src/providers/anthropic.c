/* The Anthropic Messages wire format, as upstreams that speak it answer (Snowflake Cortex's
 * /api/v2/cortex/v1/messages for Claude models): a streamed answer is SSE whose events
 * (message_start, content_block_start, content_block_delta, content_block_stop, message_delta,
 * message_stop, ping, error) each carry one JSON object whose "type" names the event; a whole
 * answer is one "message" object. The gateway forwards these as they are; this decoder checks
 * each event, reports usage (input tokens from message_start, output tokens from
 * message_delta, which counts up), the end (message_stop) and errors, and hands every event on
 * as its SSE text through the sink's raw_chunk: has_content for content blocks, has_finish for
 * message_delta. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/provider.h"
#include "sophia/sse.h"

#define SSE_EVENT_MAX (4 * 1024 * 1024)
#define GET(o, k) cJSON_GetObjectItemCaseSensitive((o), (k))

typedef struct an_decoder {
    sg_sse_parser_t sse;
    sg_decode_sink_t sink;
    sg_buf_t out; /* the event being forwarded */
    long input;   /* tokens: from message_start (and message_delta when it says) */
    int started;  /* message_start seen */
    int ended;    /* message_stop seen */
    int stopped;  /* sink said stop, or an error was reported */
} an_decoder_t;

/* An Anthropic error type for an HTTP status, and back. */
static const struct {
    int status;
    const char *type;
} error_types[] = {
    {400, "invalid_request_error"}, {401, "authentication_error"}, {403, "permission_error"},
    {404, "not_found_error"},       {413, "request_too_large"},    {429, "rate_limit_error"},
    {504, "timeout_error"},         {529, "overloaded_error"},     {500, "api_error"},
};

const char *sg_anthropic_error_type(int status)
{
    if (status == 503) return "overloaded_error";
    for (size_t i = 0; i < SG_ARRAY_LEN(error_types); i++)
        if (error_types[i].status == status) return error_types[i].type;
    return status >= 500 ? "api_error" : "invalid_request_error";
}

int sg_anthropic_error_status(const char *type)
{
    for (size_t i = 0; i < SG_ARRAY_LEN(error_types); i++)
        if (strcmp(error_types[i].type, type) == 0) return error_types[i].status;
    return 502;
}

/* {"type":"error","error":{"type","message"}} → e (status from the error's type). */
static void error_from_json(const cJSON *j, sg_error_t *e)
{
    const cJSON *err = GET(j, "error");
    const cJSON *type = GET(err, "type"), *msg = GET(err, "message");
    const char *t = cJSON_IsString(type) ? type->valuestring : "api_error";
    int status = sg_anthropic_error_status(t);
    char m[400];
    sg_strlcpy(m, sizeof(m), cJSON_IsString(msg) ? msg->valuestring : "no message");
    sg_utf8_sanitize(m, strlen(m));
    sg_error_set(e, status, status < 500 ? "invalid_request_error" : "api_error",
                 status == 429 ? "rate_limit_exceeded" : "upstream_error",
                 "upstream error (%s): %s", t, m);
}

static void fail(an_decoder_t *d, const sg_error_t *e)
{
    d->stopped = 1;
    d->sink.error(d->sink.ud, e);
}

static void bad_stream(an_decoder_t *d, const char *what)
{
    sg_error_t e;
    sg_error_set(&e, 502, "api_error", "upstream_bad_stream", "upstream Messages stream: %s", what);
    fail(d, &e);
}

/* Reads usage counts of an Anthropic usage object: input (input_tokens plus the cache's
 * tokens, all billed as input) and output. Each is -1 when absent; 1 when a count is not
 * believable. */
static int read_usage(const cJSON *usage, long *input, long *output)
{
    *input = *output = -1;
    if (!cJSON_IsObject(usage)) return 0;
    static const char *const in_keys[] = {"input_tokens", "cache_creation_input_tokens",
                                          "cache_read_input_tokens"};
    for (size_t i = 0; i < SG_ARRAY_LEN(in_keys); i++) {
        const cJSON *v = GET(usage, in_keys[i]);
        if (!v || cJSON_IsNull(v)) continue;
        long long n;
        if (sg_json_count(v, SG_TOKENS_MAX, &n) != 0) return 1;
        *input = (*input < 0 ? 0 : *input) + (long)n;
    }
    const cJSON *v = GET(usage, "output_tokens");
    if (v && !cJSON_IsNull(v)) {
        long long n;
        if (sg_json_count(v, SG_TOKENS_MAX, &n) != 0) return 1;
        *output = (long)n;
    }
    return 0;
}

static void report_usage(an_decoder_t *d, const cJSON *usage, int final)
{
    long in, out;
    sg_usage_t u = {0};
    if (read_usage(usage, &in, &out) != 0) {
        u.rejected = 1;
        d->sink.usage(d->sink.ud, &u);
        return;
    }
    if (in >= 0) d->input = in;
    if (!final || out < 0) return;
    u.prompt_tokens = d->input;
    u.completion_tokens = out;
    u.known = 1;
    d->sink.usage(d->sink.ud, &u);
}

/* The event as SSE text: "event: <type>" and its data (one data line per line). */
static void event_text(an_decoder_t *d, const char *type, const char *data, size_t len)
{
    sg_buf_reset(&d->out);
    sg_buf_printf(&d->out, "event: %s\n", type);
    size_t i = 0;
    while (i <= len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (data + i)) : len - i;
        sg_buf_append(&d->out, "data: ", 6);
        sg_buf_append(&d->out, data + i, n);
        sg_buf_append(&d->out, "\n", 1);
        i += n + 1;
        if (!nl) break;
    }
    sg_buf_append(&d->out, "\n", 1);
}

static int an_on_event(void *ud, const sg_sse_event_t *ev)
{
    an_decoder_t *d = ud;
    if (d->ended || d->stopped) return d->stopped;
    sg_json_problem_t pr;
    cJSON *j = sg_json_parse_strict(ev->data, ev->data_len, &pr);
    const cJSON *type = GET(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type)) {
        cJSON_Delete(j);
        bad_stream(d, "an event is not a JSON object with a type");
        return 1;
    }
    const char *t = type->valuestring;
    if (ev->event_len && strcmp(ev->event, t) != 0) {
        cJSON_Delete(j);
        bad_stream(d, "an event's name and type differ");
        return 1;
    }
    if (strcmp(t, "error") == 0) {
        sg_error_t e;
        error_from_json(j, &e);
        cJSON_Delete(j);
        fail(d, &e);
        return 1;
    }
    int has_content = 0, has_finish = 0;
    if (strcmp(t, "message_start") == 0) {
        const cJSON *msg = GET(j, "message");
        if (d->started || !cJSON_IsObject(msg)) {
            cJSON_Delete(j);
            bad_stream(d, "message_start is missing its message or repeated");
            return 1;
        }
        d->started = 1;
        report_usage(d, GET(msg, "usage"), 0);
    } else if (!d->started && strcmp(t, "ping") != 0) {
        cJSON_Delete(j);
        bad_stream(d, "an event came before message_start");
        return 1;
    } else if (strcmp(t, "content_block_start") == 0 || strcmp(t, "content_block_delta") == 0) {
        has_content = 1;
    } else if (strcmp(t, "message_delta") == 0) {
        has_finish = 1;
        report_usage(d, GET(j, "usage"), 1);
    } else if (strcmp(t, "message_stop") == 0) {
        d->ended = 1;
    }
    event_text(d, t, ev->data, ev->data_len);
    cJSON_Delete(j);
    int r = d->sink.raw_chunk(d->sink.ud, d->out.data, d->out.len, has_content, has_finish);
    if (r) {
        d->stopped = 1;
        return 1;
    }
    if (d->ended) d->sink.end(d->sink.ud);
    return 0;
}

static void *an_decoder_new(const sg_route_t *route, const sg_decode_sink_t *sink)
{
    SG_UNUSED(route);
    SG_ASSERT(sink->raw_chunk != NULL);
    an_decoder_t *d = sg_xcalloc(1, sizeof(*d));
    d->sink = *sink;
    sg_buf_init(&d->out, SSE_EVENT_MAX * 2);
    sg_sse_parser_init(&d->sse, SSE_EVENT_MAX, an_on_event, d);
    return d;
}

static int an_check(an_decoder_t *d, int r)
{
    if (r == SG_ERR_TOO_LARGE && !d->stopped) bad_stream(d, "an event is too large");
    return r == 0 && !d->stopped ? 0 : -1;
}

static int an_decode(void *dec, const char *data, size_t len)
{
    an_decoder_t *d = dec;
    if (d->stopped) return -1;
    return an_check(d, sg_sse_parser_feed(&d->sse, data, len));
}

static int an_decode_finish(void *dec)
{
    an_decoder_t *d = dec;
    if (d->stopped) return -1;
    if (an_check(d, sg_sse_parser_finish(&d->sse)) != 0) return -1;
    if (!d->ended) {
        bad_stream(d, "the stream ended before message_stop");
        return -1;
    }
    return 0;
}

static void an_decoder_free(void *dec)
{
    an_decoder_t *d = dec;
    if (!d) return;
    sg_sse_parser_dispose(&d->sse);
    sg_buf_dispose(&d->out);
    free(d);
}

/* A whole answer: a "message" object with a content list; usage read. */
static cJSON *an_convert_response(const sg_route_t *route, const char *body, size_t len,
                                  sg_usage_t *usage, sg_error_t *err)
{
    SG_UNUSED(route);
    sg_json_problem_t pr;
    cJSON *j = sg_json_parse_strict(body, len, &pr);
    const cJSON *type = GET(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type) || strcmp(type->valuestring, "message") ||
        !cJSON_IsArray(GET(j, "content"))) {
        if (cJSON_IsString(type) && strcmp(type->valuestring, "error") == 0)
            error_from_json(j, err);
        else
            sg_error_set(err, 502, "api_error", "upstream_bad_response",
                         "upstream Messages answer is not a message object");
        cJSON_Delete(j);
        return NULL;
    }
    long in, out;
    if (read_usage(GET(j, "usage"), &in, &out) != 0) {
        usage->rejected = 1;
    } else if (in >= 0 && out >= 0) {
        usage->prompt_tokens = in;
        usage->completion_tokens = out;
        usage->known = 1;
    }
    return j;
}

const sg_provider_vt_t sg_wire_anthropic = {
    .kind = "anthropic-messages",
    .passthrough_response = 1,
    .decoder_new = an_decoder_new,
    .decode = an_decode,
    .decode_finish = an_decode_finish,
    .decoder_free = an_decoder_free,
    .convert_response = an_convert_response,
};
