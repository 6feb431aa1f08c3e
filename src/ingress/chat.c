/* POST /v1/chat/completions: parse → choose route → build upstream request via the provider
 * adapter → exchange → decode → OpenAI response (SSE or JSON) → finish (usage, log). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/json.h"
#include "sophia/log.h"
#include "sophia/provider.h"

#define UPSTREAM_BODY_MAX (16 * 1024 * 1024) /* non-stream response */
#define UPSTREAM_ERROR_MAX (64 * 1024)       /* error bodies kept for mapping */
#define SSE_OUT_MAX (8 * 1024 * 1024)

typedef struct chat {
    sg_active_t active; /* first: the gateway's shutdown reaches the chat through it */
    sg_gateway_t *gw;
    sg_http_req_t *req; /* NULL once the client is gone */
    sg_exchange_t *x;
    sg_route_t route;
    const sg_provider_vt_t *vt;
    void *dec;
    int stream;
    int include_usage;
    int head_sent;    /* SSE response head sent */
    int client_gone;  /* client left before the response ended */
    int in_upstream;  /* inside an exchange callback */
    int upstream_end; /* decoder saw the end marker */
    int finish_seen;  /* a chunk carried a finish_reason */
    int usage_sent;   /* a usage chunk went to the client */
    int usage_bad;    /* the last usage the upstream reported was out of range */
    long status;      /* upstream HTTP status */
    int out_status;   /* status sent to the client */
    sg_buf_t body;    /* non-stream body or error body */
    sg_buf_t out;     /* scratch for one SSE event */
    sg_usage_t usage;
    long est_prompt_tokens;
    long content_chunks;
    uint64_t start_ns, first_token_ns;
    char request_id[SG_HTTP_REQUEST_ID_MAX + 1];
    char chunk_id[64];
    char error_msg[512];
    char retry_after[16]; /* the upstream's Retry-After, if any */
    int created;
    sg_gen_t *gen;      /* the configuration generation this request runs on */
    cJSON *client_json; /* the client's request, kept to rebuild a retried attempt */
    int attempt;        /* upstream attempts made */
    struct retry_timer *retry;
} chat_t;

/* The backoff timer of a retried attempt; its own allocation because the handle closes
 * asynchronously, possibly after the chat is gone. */
typedef struct retry_timer {
    uv_timer_t timer;
    chat_t *chat; /* NULL once the chat is gone */
} retry_timer_t;

/* The longest backoff before a retried attempt (Snowflake's own client: min(2^i, 30) s). */
#define RETRY_MAX_MS 30000

static void chat_finish(chat_t *c, const char *outcome);
static int maybe_retry(chat_t *c, long retry_after_s);

/* Logs the request's one line, releases everything. */
static void on_retry_closed(uv_handle_t *h)
{
    free(h->data);
}

static void chat_free(chat_t *c)
{
    if (c->retry) {
        c->retry->chat = NULL;
        uv_close((uv_handle_t *)&c->retry->timer, on_retry_closed);
    }
    if (c->dec) c->vt->decoder_free(c->dec);
    cJSON_Delete(c->client_json);
    sg_gen_unref(c->gen);
    sg_buf_dispose(&c->body);
    sg_buf_dispose(&c->out);
    sg_gateway_untrack(c->gw, &c->active);
    c->gw->chats_active--;
    free(c);
}

static void chat_log(chat_t *c, const char *outcome)
{
    uint64_t now = sg_now_ns();
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "request");
    sg_logline_str(&l, "request_id", c->request_id);
    sg_logline_str(&l, "method", "POST");
    sg_logline_str(&l, "path", "/v1/chat/completions");
    sg_logline_str(&l, "route", c->route.public_name[0] ? c->route.public_name : NULL);
    sg_logline_int(&l, "status", c->client_gone ? 499 : c->out_status);
    sg_logline_bool(&l, "stream", c->stream);
    sg_logline_num(&l, "latency_ms", (double)(now - c->start_ns) / 1e6);
    if (c->first_token_ns)
        sg_logline_num(&l, "ttft_ms", (double)(c->first_token_ns - c->start_ns) / 1e6);
    else
        sg_logline_str(&l, "ttft_ms", NULL);
    sg_logline_int(&l, "prompt_tokens", c->usage.prompt_tokens);
    sg_logline_int(&l, "completion_tokens", c->usage.completion_tokens);
    sg_logline_str(&l, "usage_source", c->usage.known ? "upstream" : "estimated");
    sg_logline_bool(&l, "partial", c->client_gone || strcmp(outcome, "ok") != 0);
    sg_logline_str(&l, "outcome", outcome);
    if (c->attempt > 1) sg_logline_int(&l, "attempts", c->attempt);
    if (c->upstream_end || c->status) sg_logline_int(&l, "upstream_status", c->status);
    if (c->error_msg[0]) sg_logline_str(&l, "error", c->error_msg);
    sg_logline_emit(&l);
}

/* Usage not reported by the upstream is estimated: ~4 characters per prompt token, one token
 * per content chunk. Accounting then still sees every request. */
static void settle_usage(chat_t *c)
{
    if (c->usage.known) return;
    c->usage.prompt_tokens = c->est_prompt_tokens;
    c->usage.completion_tokens = c->content_chunks;
}

static void chat_finish(chat_t *c, const char *outcome)
{
    if (c->client_gone) outcome = "client_closed";
    settle_usage(c);
    chat_log(c, outcome);
    chat_free(c);
}

/* Notes the result of a write to the client: -1 means the client is gone (the HTTP layer
 * then fires no abort hook, so this is where the chat learns it). Returns r. */
static int client_io(chat_t *c, int r)
{
    if (r != 0) {
        c->client_gone = 1;
        c->req = NULL;
    }
    return r;
}

/* Every error that reaches the client or the log passes here first: upstream text may echo a
 * provider secret. */
static const sg_error_t *redacted(chat_t *c, const sg_error_t *in, sg_error_t *out)
{
    *out = *in;
    sg_gen_redact(c->gen, &c->route, out->message, sizeof(out->message));
    sg_gen_redact(c->gen, &c->route, out->code, sizeof(out->code));
    return out;
}

static void respond_error(chat_t *c, const sg_error_t *err)
{
    sg_error_t copy;
    const sg_error_t *e = redacted(c, err, &copy);
    snprintf(c->error_msg, sizeof(c->error_msg), "%s", e->message);
    c->out_status = e->status;
    if (!c->req) return;
    sg_http_req_t *req = c->req;
    c->req = NULL; /* answered: the request object is reused for the next one */
    client_io(
        c, sg_http_respond_error(req, e->status, e->type, e->code[0] ? e->code : NULL, e->message));
}

/* Ends the streamed response. */
static void stream_end(chat_t *c)
{
    if (!c->req) return;
    sg_http_req_t *req = c->req;
    c->req = NULL;
    client_io(c, sg_http_stream_end(req, NULL, 0));
}

/* ---- SSE output ------------------------------------------------------------------------- */

static int send_head(chat_t *c)
{
    if (!c->req) return -1;
    if (c->head_sent) return 0;
    c->head_sent = 1;
    c->out_status = 200;
    return client_io(c,
                     sg_http_stream_begin(c->req, 200, "text/event-stream",
                                          "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"));
}

/* Sends one SSE event. The HTTP layer corks stream output until the end of the loop
 * iteration, so events that arrive together leave in one write, with no added delay. */
static int send_event_json(chat_t *c, const char *json, size_t len)
{
    if (send_head(c) || !c->req) return -1;
    sg_buf_reset(&c->out);
    if (sg_buf_append(&c->out, "data: ", 6) || sg_buf_append(&c->out, json, len) ||
        sg_buf_append(&c->out, "\n\n", 2))
        return -1;
    return client_io(c, sg_http_stream_write(c->req, c->out.data, c->out.len));
}

static int send_event_obj(chat_t *c, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    SG_ASSERT(s != NULL);
    int r = send_event_json(c, s, strlen(s));
    free(s);
    return r;
}

/* Ends a stream that failed after the head was sent: an error event, then the end. The
 * OpenAI SDKs raise an APIError on it, so the truncation is never silent. */
static void stream_fail(chat_t *c, const sg_error_t *in)
{
    sg_error_t copy;
    const sg_error_t *e = redacted(c, in, &copy);
    snprintf(c->error_msg, sizeof(c->error_msg), "%s", e->message);
    cJSON *j = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type);
    if (e->code[0])
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    send_event_obj(c, j);
    cJSON_Delete(j);
    stream_end(c);
}

static void fail_or_respond(chat_t *c, const sg_error_t *e)
{
    if (c->head_sent)
        stream_fail(c, e);
    else
        respond_error(c, e);
}

static void send_usage_chunk(chat_t *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", c->chunk_id[0] ? c->chunk_id : c->request_id);
    cJSON_AddStringToObject(j, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(j, "created", c->created);
    cJSON_AddStringToObject(j, "model", c->route.public_name);
    cJSON_AddArrayToObject(j, "choices");
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)c->usage.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c->usage.completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens",
                            (double)(c->usage.prompt_tokens + c->usage.completion_tokens));
    send_event_obj(c, j);
    cJSON_Delete(j);
    c->usage_sent = 1;
}

/* ---- decoder sink ----------------------------------------------------------------------- */

static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    chat_t *c = ud;
    if (c->client_gone) return 1;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    int n_choices = cJSON_GetArraySize(choices);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(chunk, "id");
    if (!c->chunk_id[0] && cJSON_IsString(id))
        snprintf(c->chunk_id, sizeof(c->chunk_id), "%s", id->valuestring);
    if (n_choices == 0) {
        /* The usage-only chunk: forwarded only when the client asked for it, and then after
         * any estimate is settled (in finish) if the upstream never sends one. */
        if (!cJSON_GetObjectItemCaseSensitive(chunk, "usage")) return 0;
        if (!c->include_usage || c->usage_bad) return 0;
        c->usage_sent = 1;
    } else {
        const cJSON *ch;
        cJSON_ArrayForEach(ch, choices)
        {
            const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
            const cJSON *tools = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
            if ((cJSON_IsString(content) && content->valuestring[0]) || cJSON_IsArray(tools)) {
                c->content_chunks++;
                if (!c->first_token_ns) c->first_token_ns = sg_now_ns();
            }
            const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
            if (cJSON_IsString(fr)) c->finish_seen = 1;
        }
        /* Per-chunk usage (vLLM continuous usage) is not forwarded unless asked for. */
        if ((!c->include_usage || c->usage_bad) &&
            cJSON_GetObjectItemCaseSensitive(chunk, "usage")) {
            cJSON_DeleteItemFromObjectCaseSensitive(chunk, "usage");
            raw = NULL;
        }
    }
    if ((raw ? send_event_json(c, raw, raw_len) : send_event_obj(c, chunk)) != 0) return 1;
    return c->client_gone ? 1 : 0;
}

/* A chunk forwarded without parsing (see sg_decode_sink_t.raw_chunk). */
static int sink_raw_chunk(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    chat_t *c = ud;
    if (c->client_gone) return 1;
    if (has_content) {
        c->content_chunks++;
        if (!c->first_token_ns) c->first_token_ns = sg_now_ns();
    }
    if (has_finish) c->finish_seen = 1;
    if (send_event_json(c, raw, len) != 0) return 1;
    return c->client_gone ? 1 : 0;
}

/* Upstream usage that cannot be true is never used: warn once, estimate instead. */
static void usage_rejected(chat_t *c)
{
    if (c->usage_bad) return;
    c->usage_bad = 1;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "upstream usage out of range; tokens estimated");
    sg_logline_str(&l, "request_id", c->request_id);
    sg_logline_str(&l, "route", c->route.public_name);
    sg_logline_emit(&l);
}

static void sink_usage(void *ud, const sg_usage_t *u)
{
    chat_t *c = ud;
    if (u->rejected) {
        usage_rejected(c);
        return;
    }
    c->usage = *u;
}

static void sink_end(void *ud)
{
    chat_t *c = ud;
    c->upstream_end = 1;
}

static void sink_error(void *ud, const sg_error_t *e)
{
    chat_t *c = ud;
    if (c->client_gone) return;
    fail_or_respond(c, e);
}

/* ---- client hooks ----------------------------------------------------------------------- */

static void on_client_abort(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    chat_t *c = ud;
    c->client_gone = 1;
    c->req = NULL;
    if (c->in_upstream) {
        /* Inside an exchange callback: it returns an abort, and on_done finishes. */
        return;
    }
    /* Abort the upstream transfer in this loop iteration: an abandoned generation must not
     * keep running (and costing money). */
    if (c->x) sg_exchange_cancel(c->x);
    c->x = NULL;
    chat_finish(c, "client_closed");
}

static void on_client_drain(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    chat_t *c = ud;
    if (c->x && sg_exchange_paused(c->x)) sg_exchange_resume(c->x);
}

/* ---- exchange callbacks ----------------------------------------------------------------- */

static void on_up_head(sg_exchange_t *x, long status, void *ud)
{
    SG_UNUSED(x);
    chat_t *c = ud;
    c->status = status;
    const char *ra = sg_exchange_header(x, "retry-after");
    snprintf(c->retry_after, sizeof(c->retry_after), "%s", ra ? ra : "");
    if (status >= 200 && status < 300 && c->stream) {
        sg_decode_sink_t sink = {sink_chunk, sink_usage, sink_end, sink_error, c, sink_raw_chunk};
        c->dec = c->vt->decoder_new(&c->route, &sink);
    }
}

static int on_up_data(sg_exchange_t *x, const char *data, size_t len, void *ud)
{
    SG_UNUSED(x);
    chat_t *c = ud;
    if (c->client_gone || !c->req) return SG_EX_DATA_ABORT;
    if (c->status < 200 || c->status >= 300) {
        /* Error body: keep the start for mapping; the rest is dropped. */
        size_t room = c->body.max - c->body.len;
        sg_buf_append(&c->body, data, len < room ? len : room);
        return SG_EX_DATA_OK;
    }
    if (!c->stream) {
        if (sg_buf_append(&c->body, data, len) != 0) {
            sg_error_t e;
            sg_error_set(&e, 502, "api_error", "upstream_response_too_large",
                         "upstream response exceeds %d bytes", UPSTREAM_BODY_MAX);
            c->in_upstream = 1;
            respond_error(c, &e);
            c->in_upstream = 0;
            return SG_EX_DATA_ABORT;
        }
        return SG_EX_DATA_OK;
    }
    /* Backpressure: the client has a full queue; keep the bytes in curl until it drains. */
    if (c->req && sg_http_req_congested(c->req)) return SG_EX_DATA_PAUSE;
    c->in_upstream = 1;
    int r = c->vt->decode(c->dec, data, len);
    c->in_upstream = 0;
    if (c->client_gone || !c->req || r != 0) return SG_EX_DATA_ABORT;
    return SG_EX_DATA_OK;
}

/* The upstream exchange ended; produces the rest of the client's answer. Returns the
 * outcome for the log. Runs with in_upstream set, so a client abort only marks the chat. */
static const char *finish_upstream(chat_t *c, sg_ex_result_t res, const char *detail)
{
    sg_error_t e;
    if (c->client_gone) return "client_closed";
    if (!c->req) return "upstream_error"; /* already answered: decoder error, oversized body */
    if (res != SG_EX_OK && res != SG_EX_ABORTED) {
        switch (res) {
        case SG_EX_TIMEOUT:
            sg_error_set(&e, 504, "api_error", "upstream_timeout",
                         "upstream provider '%s' timed out: %s", c->route.provider->name,
                         detail ? detail : "no answer in time");
            break;
        case SG_EX_CONNECT:
            sg_error_set(&e, 502, "api_error", "upstream_unreachable",
                         "cannot reach upstream provider '%s': %s", c->route.provider->name,
                         detail ? detail : "connection failed");
            break;
        default:
            sg_error_set(&e, 502, "api_error", "upstream_connection_error",
                         "upstream connection failed: %s", detail ? detail : "broken");
        }
        fail_or_respond(c, &e);
        return res == SG_EX_TIMEOUT ? "upstream_timeout" : "upstream_error";
    }
    if (c->status < 200 || c->status >= 300) {
        const char *ra = c->retry_after[0] ? c->retry_after : NULL;
        if (maybe_retry(c, ra ? atol(ra) : 0)) return NULL;
        c->vt->map_error(&c->route, c->status, c->body.data, c->body.len, &e);
        respond_error(c, &e);
        return "upstream_error";
    }
    if (!c->stream) {
        cJSON *resp = c->vt->convert_response(&c->route, c->body.data, c->body.len, &c->usage, &e);
        if (!resp) {
            respond_error(c, &e);
            return "upstream_error";
        }
        const cJSON *ch;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(resp, "choices"))
        {
            const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
            if (cJSON_IsString(content))
                c->content_chunks += (long)strlen(content->valuestring) / 4;
        }
        c->first_token_ns = sg_now_ns();
        c->out_status = 200;
        int passthrough = c->vt->passthrough_response;
        if (!c->usage.known) {
            /* The client sees the estimate the gateway accounts. */
            if (c->usage.rejected) usage_rejected(c);
            settle_usage(c);
            cJSON *u = cJSON_CreateObject();
            cJSON_AddNumberToObject(u, "prompt_tokens", (double)c->usage.prompt_tokens);
            cJSON_AddNumberToObject(u, "completion_tokens", (double)c->usage.completion_tokens);
            cJSON_AddNumberToObject(u, "total_tokens",
                                    (double)(c->usage.prompt_tokens + c->usage.completion_tokens));
            cJSON_DeleteItemFromObjectCaseSensitive(resp, "usage");
            cJSON_AddItemToObject(resp, "usage", u);
            passthrough = 0;
        }
        sg_http_req_t *req = c->req;
        c->req = NULL;
        if (passthrough) {
            /* Already an OpenAI chat.completion: forwarded without re-printing. */
            client_io(
                c, sg_http_respond(req, 200, "application/json", c->body.data, c->body.len, NULL));
        } else {
            char *s = cJSON_PrintUnformatted(resp);
            SG_ASSERT(s != NULL);
            client_io(c, sg_http_respond(req, 200, "application/json", s, strlen(s), NULL));
            free(s);
        }
        cJSON_Delete(resp);
        return c->client_gone ? "client_closed" : "ok";
    }
    /* Streaming: flush the decoder (an upstream may close without a final blank line). */
    int r = c->dec ? c->vt->decode_finish(c->dec) : -1;
    if (c->client_gone) return "client_closed";
    if (!c->req) return "upstream_error";
    if (r != 0 || (!c->upstream_end && !c->finish_seen)) {
        sg_error_set(&e, 502, "api_error", "upstream_stream_truncated",
                     "upstream stream ended before the completion finished");
        fail_or_respond(c, &e);
        return "upstream_truncated";
    }
    settle_usage(c);
    if (c->include_usage && !c->usage_sent) send_usage_chunk(c);
    send_event_json(c, "[DONE]", 6);
    if (send_head(c) != 0) return "client_closed";
    stream_end(c);
    return c->client_gone ? "client_closed" : "ok";
}

static void on_up_done(sg_exchange_t *x, sg_ex_result_t res, const char *detail, void *ud)
{
    SG_UNUSED(x);
    chat_t *c = ud;
    c->x = NULL;
    c->in_upstream = 1;
    const char *outcome = finish_upstream(c, res, detail);
    if (!outcome) {
        c->in_upstream = 0; /* a retry is scheduled; the chat lives on */
        return;
    }
    chat_finish(c, outcome);
}

/* ---- request parsing -------------------------------------------------------------------- */

static long estimate_prompt_tokens(const cJSON *messages)
{
    size_t chars = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(content)) {
            chars += strlen(content->valuestring);
        } else if (cJSON_IsArray(content)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (cJSON_IsString(t)) chars += strlen(t->valuestring);
            }
        }
        chars += 12; /* role and framing */
    }
    return (long)(chars + 3) / 4;
}

/* Validates the client's request; returns 0 or -1 with e set. */
static int validate(const cJSON *j, sg_error_t *e)
{
    if (!cJSON_IsObject(j)) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body must be a JSON object");
        return -1;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!model) {
        sg_error_set(e, 400, "invalid_request_error", "missing_required_parameter",
                     "you must provide a model parameter");
        return -1;
    }
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_type",
                     "'model' must be a non-empty string");
        return -1;
    }
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!messages) {
        sg_error_set(e, 400, "invalid_request_error", "missing_required_parameter",
                     "missing required parameter: 'messages'");
        return -1;
    }
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_type",
                     "'messages' must be a non-empty array");
        return -1;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            sg_error_set(e, 400, "invalid_request_error", "invalid_type",
                         "'messages[%d]' must be an object with a string 'role'", i);
            return -1;
        }
        i++;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(j, "stream");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_type", "'stream' must be a boolean");
        return -1;
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    if (so && !cJSON_IsNull(so) && !cJSON_IsObject(so)) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_type",
                     "'stream_options' must be an object");
        return -1;
    }
    return 0;
}

/* Parses the client's body strictly (sophia/json.h); NULL with e set when it is refused. */
static cJSON *parse_body(const char *body, size_t len, sg_error_t *e)
{
    sg_json_problem_t p;
    cJSON *j = sg_json_parse_strict(body, len, &p);
    if (j) return j;
    if (p.line)
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body is not valid JSON: %s (line %zu, column %zu)", p.what, p.line,
                     p.col);
    else
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body is not valid JSON: %s", p.what);
    return NULL;
}

static const sg_exchange_cbs_t upstream_cbs = {on_up_head, on_up_data, on_up_done};

/* Builds and starts one upstream attempt. Returns 0, or -1 with e set. */
static int start_attempt(chat_t *c, sg_error_t *e)
{
    const sg_config_t *cfg = &c->gen->cfg;
    sg_upstream_opts_t uo = {cfg->connect_timeout_ms, cfg->first_byte_timeout_ms,
                             cfg->upstream_idle_timeout_ms, cfg->total_timeout_ms};
    sg_exchange_req_t xr = {0};
    char url[1024];
    if (c->vt->build_chat(&c->route, c->client_json, c->stream, &uo, &xr, url, sizeof(url), e) != 0)
        return -1;
    c->attempt++;
    c->status = 0;
    c->upstream_end = 0;
    c->finish_seen = 0;
    sg_buf_reset(&c->body);
    c->x = sg_exchange_start(c->gw->curlm, &xr, &upstream_cbs, c);
    if (!c->x) {
        curl_slist_free_all(xr.headers);
        free(xr.body);
        sg_error_set(e, 500, "api_error", "upstream_start_failed",
                     "could not start the upstream request");
        return -1;
    }
    return 0;
}

static void on_retry_timer(uv_timer_t *t)
{
    retry_timer_t *rt = t->data;
    chat_t *c = rt->chat;
    if (!c) return;
    sg_error_t e;
    if (start_attempt(c, &e) != 0) {
        respond_error(c, &e);
        chat_finish(c, "upstream_error");
    }
}

/* Decides whether a failed attempt is retried: 429/503/504 from the upstream, retries left
 * (upstream.max_retries), and nothing sent to the client yet. Schedules it (exponential backoff
 * with jitter, at least the upstream's Retry-After, at most RETRY_MAX_MS) and returns 1; else 0. */
static int maybe_retry(chat_t *c, long retry_after_s)
{
    const sg_config_t *cfg = &c->gen->cfg;
    if (c->head_sent || !c->req || c->client_gone || (size_t)c->attempt > cfg->max_retries)
        return 0;
    if (c->status != 429 && c->status != 503 && c->status != 504) return 0;
    uint64_t delay = cfg->retry_base_ms << (c->attempt - 1 < 16 ? c->attempt - 1 : 16);
    uint32_t r = 0;
    uv_random(NULL, NULL, &r, sizeof(r), 0, NULL);
    delay = delay * (80 + r % 41) / 100; /* ±20% so retries of many requests spread out */
    if (retry_after_s > 0 && (uint64_t)retry_after_s * 1000 > delay)
        delay = (uint64_t)retry_after_s * 1000;
    if (delay > RETRY_MAX_MS) delay = RETRY_MAX_MS;
    if (!c->retry) {
        c->retry = sg_xcalloc(1, sizeof(*c->retry));
        uv_timer_init(c->gw->loop, &c->retry->timer);
        c->retry->timer.data = c->retry;
        c->retry->chat = c;
    }
    if (c->dec) {
        c->vt->decoder_free(c->dec);
        c->dec = NULL;
    }
    c->gw->upstream_retries++;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "upstream retry");
    sg_logline_str(&l, "request_id", c->request_id);
    sg_logline_str(&l, "route", c->route.public_name);
    sg_logline_int(&l, "upstream_status", c->status);
    sg_logline_int(&l, "attempt", c->attempt + 1);
    sg_logline_int(&l, "delay_ms", (long long)delay);
    sg_logline_emit(&l);
    uv_timer_start(&c->retry->timer, on_retry_timer, delay, 0);
    return 1;
}

/* The shutdown grace period is over: the client hears why its request ends. */
static void on_gateway_shutdown(sg_active_t *a)
{
    chat_t *c = (chat_t *)a;
    if (c->x) sg_exchange_cancel(c->x);
    c->x = NULL;
    sg_error_t e;
    sg_error_set(&e, 503, "api_error", "server_shutting_down",
                 "the gateway is shutting down; retry the request");
    fail_or_respond(c, &e);
    chat_finish(c, "shutdown");
}

void sg_chat_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    chat_t *c = sg_xcalloc(1, sizeof(*c));
    c->active.shutdown = on_gateway_shutdown;
    sg_gateway_track(gw, &c->active);
    gw->chats_active++;
    c->gw = gw;
    c->gen = sg_gen_ref(gw->gen);
    c->req = req;
    c->start_ns = req->start_ns ? req->start_ns : sg_now_ns();
    c->created = (int)sg_unix_time();
    snprintf(c->request_id, sizeof(c->request_id), "%s", req->request_id);
    sg_buf_init(&c->out, SSE_OUT_MAX);
    sg_error_t e;

    cJSON *j = parse_body(req->body, req->body_len, &e);
    if (!j) goto fail;
    if (validate(j, &e) != 0) goto fail;
    const char *model = cJSON_GetObjectItemCaseSensitive(j, "model")->valuestring;
    if (sg_gen_resolve(c->gen, model, &c->route) != 0) {
        sg_error_set(&e, 404, "invalid_request_error", "model_not_found",
                     "The model '%.*s' does not exist or is not served by this gateway "
                     "(GET /v1/models lists them)",
                     (int)sg_utf8_cut(model, strnlen(model, 200)), model);
        goto fail;
    }
    c->vt = sg_provider_find(c->route.provider->kind);
    if (!c->vt) {
        sg_error_set(&e, 500, "api_error", "provider_unavailable",
                     "no adapter for provider kind '%s'", c->route.provider->kind);
        goto fail;
    }
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    c->include_usage =
        c->stream && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    c->est_prompt_tokens = estimate_prompt_tokens(cJSON_GetObjectItemCaseSensitive(j, "messages"));
    sg_buf_init(&c->body, c->stream ? UPSTREAM_ERROR_MAX : UPSTREAM_BODY_MAX);

    c->client_json = j;
    j = NULL;
    if (start_attempt(c, &e) != 0) goto fail;
    sg_http_req_set_hooks(req, on_client_abort, on_client_drain, c);
    return;

fail:
    cJSON_Delete(j);
    respond_error(c, &e);
    chat_finish(c, "rejected");
}
