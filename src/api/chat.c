/* POST /v1/chat/completions: the OpenAI chat protocol on the client's side. Parses (strict
 * JSON) and validates the request, plans its route (sophia/route.h), hands the upstream side
 * to the completion pipeline (sophia/pipeline.h), and writes what comes back as SSE events or
 * one JSON body, with the X-Sophia-* headers that explain the route. The request record
 * (sophia/record.h) goes to the observers when the request ends. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/api.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/json.h"
#include "sophia/log.h"
#include "sophia/pipeline.h"
#include "sophia/record.h"
#include "sophia/route.h"

#define SSE_OUT_MAX (8 * 1024 * 1024)
#define HEADERS_MAX 2048

typedef struct heartbeat {
    uv_timer_t timer;
    struct chat *c; /* NULL once the chat is gone */
} heartbeat_t;

typedef struct chat {
    sg_api_t a; /* first */
    int stream, include_usage;
    int head_sent; /* the SSE response head went out */
    long est_prompt_tokens;
    long content_chunks;
    int created;
    char chunk_id[64];
    sg_buf_t out; /* one SSE event */
    heartbeat_t *hb;
} chat_t;

static void on_hb_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Chats come and go with requests; a few are kept for reuse (loop thread only). */
static sg_pool_t chat_pool = SG_POOL_INIT(sizeof(chat_t), 64);

static void chat_free(sg_api_t *a)
{
    chat_t *c = (chat_t *)a;
    sg_buf_dispose(&c->out);
    sg_pool_put(&chat_pool, c);
}

/* Usage not reported by the upstream is estimated: ~4 characters per prompt token, one token
 * per content chunk. Accounting then still sees every request. */
static void settle_usage(chat_t *c)
{
    if (c->a.rec.usage.known) return;
    c->a.rec.usage.prompt_tokens = c->est_prompt_tokens;
    c->a.rec.usage.completion_tokens = c->content_chunks;
}

static void chat_settle(sg_api_t *a)
{
    chat_t *c = (chat_t *)a;
    settle_usage(c);
    if (c->hb) {
        c->hb->c = NULL;
        uv_close((uv_handle_t *)&c->hb->timer, on_hb_closed);
        c->hb = NULL;
    }
}

static void chat_finish(chat_t *c, const char *outcome)
{
    sg_api_finish(&c->a, outcome);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int client_io(chat_t *c, int r)
{
    return sg_api_io(&c->a, r);
}

static void respond_error(chat_t *c, const sg_error_t *e, const char *headers)
{
    sg_api_respond_error(&c->a, e, headers);
}

static int send_head(chat_t *c)
{
    if (!c->a.req) return -1;
    if (c->head_sent) return 0;
    c->head_sent = 1;
    c->a.rec.status = 200;
    sg_api_stream_counted(&c->a);
    char h[HEADERS_MAX];
    sg_api_headers(&c->a, h, sizeof(h), "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    return client_io(c, sg_http_stream_begin(c->a.req, 200, "text/event-stream", h));
}

/* Sends one SSE event. The HTTP layer corks stream output until the end of the loop
 * iteration, so events that arrive together leave in one write, with no added delay. */
static int send_event_json(chat_t *c, const char *json, size_t len)
{
    if (send_head(c) || !c->a.req) return -1;
    sg_buf_reset(&c->out);
    if (sg_buf_append(&c->out, "data: ", 6) || sg_buf_append(&c->out, json, len) ||
        sg_buf_append(&c->out, "\n\n", 2))
        return -1;
    return client_io(c, sg_http_stream_write(c->a.req, c->out.data, c->out.len));
}

/* Sends an upstream chunk as it is, but with "model" set to the gateway's public name (what
 * every response reports, whatever the upstream calls the model). */
static int send_chunk_raw(chat_t *c, const char *json, size_t len)
{
    if (send_head(c) || !c->a.req) return -1;
    sg_buf_reset(&c->out);
    if (sg_buf_append(&c->out, "data: ", 6) ||
        (sg_json_splice_string(json, len, "model", c->a.rec.route, &c->out) != 0 &&
         sg_buf_append(&c->out, json, len)) ||
        sg_buf_append(&c->out, "\n\n", 2))
        return -1;
    return client_io(c, sg_http_stream_write(c->a.req, c->out.data, c->out.len));
}

static void set_model(chat_t *c, cJSON *obj)
{
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "model");
    cJSON_AddStringToObject(obj, "model", c->a.rec.route);
}

static int send_event_obj(chat_t *c, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    SG_ASSERT(s != NULL);
    int r = send_event_json(c, s, strlen(s));
    free(s);
    return r;
}

static void stream_end(chat_t *c)
{
    if (!c->a.req) return;
    sg_http_req_t *req = c->a.req;
    c->a.req = NULL;
    client_io(c, sg_http_stream_end(req, NULL, 0));
}

/* Ends a stream that failed after the head was sent: an error event, then the end. The
 * OpenAI SDKs raise an APIError on it, so the truncation is never silent. */
static void stream_fail(chat_t *c, const sg_error_t *e)
{
    sg_strlcpy(c->a.rec.error, sizeof(c->a.rec.error), e->message);
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

static void fail_or_respond(chat_t *c, const sg_error_t *e, const char *headers)
{
    if (c->head_sent)
        stream_fail(c, e);
    else
        respond_error(c, e, headers);
}

static cJSON *usage_json(const sg_usage_t *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->prompt_tokens + u->completion_tokens));
    return o;
}

static void send_usage_chunk(chat_t *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", c->chunk_id[0] ? c->chunk_id : c->a.rec.request_id);
    cJSON_AddStringToObject(j, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(j, "created", c->created);
    cJSON_AddStringToObject(j, "model", c->a.rec.route);
    cJSON_AddArrayToObject(j, "choices");
    cJSON *u = usage_json(&c->a.rec.usage);
    sg_api_usage_cost(&c->a, u);
    cJSON_AddItemToObject(j, "usage", u);
    send_event_obj(c, j);
    cJSON_Delete(j);
}

static void first_token(chat_t *c)
{
    c->content_chunks++;
    if (!c->a.rec.ttft_ns) c->a.rec.ttft_ns = sg_now_ns();
}

/* ---- the pipeline's sink ------------------------------------------------------------------ */

static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    chat_t *c = ud;
    if (!c->a.req) return 1;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(chunk, "id");
    if (!c->chunk_id[0] && cJSON_IsString(id))
        sg_strlcpy(c->chunk_id, sizeof(c->chunk_id), id->valuestring);
    if (cJSON_GetArraySize(choices) == 0) {
        /* The usage-only chunk: never forwarded as it is; when the client asked for usage, the
         * end sends the gateway's own, with the cost (send_usage_chunk). */
        return 0;
    } else {
        const cJSON *ch;
        cJSON_ArrayForEach(ch, choices)
        {
            const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
            const cJSON *tools = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
            if ((cJSON_IsString(content) && content->valuestring[0]) || cJSON_IsArray(tools))
                first_token(c);
        }
        /* Per-chunk usage (vLLM continuous usage) is not forwarded unless asked for. */
        if ((!c->include_usage || c->a.usage_bad) &&
            cJSON_GetObjectItemCaseSensitive(chunk, "usage")) {
            cJSON_DeleteItemFromObjectCaseSensitive(chunk, "usage");
            raw = NULL;
        }
    }
    if (raw) return send_chunk_raw(c, raw, raw_len) != 0;
    set_model(c, chunk);
    return send_event_obj(c, chunk) != 0;
}

static int sink_raw_chunk(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    chat_t *c = ud;
    SG_UNUSED(has_finish);
    if (!c->a.req) return 1;
    if (has_content) first_token(c);
    return send_chunk_raw(c, raw, len) != 0;
}

static void sink_done(void *ud, cJSON *resp, const char *body, size_t len)
{
    chat_t *c = ud;
    if (!c->stream) {
        /* resp is NULL when the adapter only checked the body (lazy_response): it is parsed
         * here only when the gateway has to change more than the model name. */
        cJSON *parsed = NULL;
        if (!resp && !c->a.rec.usage.known) resp = parsed = cJSON_ParseWithLength(body, len);
        const cJSON *ch;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(resp, "choices"))
        {
            const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
            if (cJSON_IsString(content))
                c->content_chunks += (long)strlen(content->valuestring) / 4;
        }
        c->a.rec.ttft_ns = sg_now_ns();
        c->a.rec.status = 200;
        if (!c->a.rec.usage.known) {
            /* The client sees the estimate the gateway accounts. */
            settle_usage(c);
            cJSON_DeleteItemFromObjectCaseSensitive(resp, "usage");
            cJSON_AddItemToObject(resp, "usage", usage_json(&c->a.rec.usage));
            body = NULL;
        }
        if (c->a.req) {
            sg_http_req_t *req = c->a.req;
            c->a.req = NULL;
            char h[HEADERS_MAX];
            sg_api_headers(&c->a, h, sizeof(h), NULL);
            sg_buf_t b;
            sg_buf_init(&b, len + 1024);
            if (body && sg_json_splice_string(body, len, "model", c->a.rec.route, &b) == 0) {
                /* Already an OpenAI chat.completion: forwarded without re-printing. */
                client_io(c, sg_http_respond(req, 200, "application/json", b.data, b.len, h));
            } else {
                if (!resp) resp = parsed = cJSON_ParseWithLength(body, len);
                SG_ASSERT(resp != NULL); /* the adapter checked it is valid JSON */
                set_model(c, resp);
                char *s = cJSON_PrintUnformatted(resp);
                SG_ASSERT(s != NULL);
                client_io(c, sg_http_respond(req, 200, "application/json", s, strlen(s), h));
                free(s);
            }
            sg_buf_dispose(&b);
        }
        cJSON_Delete(parsed);
        chat_finish(c, "ok");
        return;
    }
    settle_usage(c);
    if (c->include_usage) send_usage_chunk(c);
    send_event_json(c, "[DONE]", 6);
    stream_end(c);
    chat_finish(c, "ok");
}

static const char *fail_outcome(const sg_error_t *e)
{
    if (strcmp(e->code, "upstream_timeout") == 0) return "upstream_timeout";
    if (strcmp(e->code, "upstream_stream_truncated") == 0) return "upstream_truncated";
    return "upstream_error";
}

static void sink_fail(void *ud, const sg_error_t *e, const char *headers)
{
    chat_t *c = ud;
    if (e->status == 499) {
        chat_finish(c, "client_closed");
        return;
    }
    fail_or_respond(c, e, headers);
    chat_finish(c, fail_outcome(e));
}

static int sink_congested(void *ud)
{
    chat_t *c = ud;
    return c->a.req && sg_http_req_congested(c->a.req);
}

/* ---- timers and shutdown ------------------------------------------------------------------ */

/* While the first token takes long, SSE comment lines keep proxies from closing the stream. */
static void on_heartbeat(uv_timer_t *t)
{
    heartbeat_t *hb = t->data;
    chat_t *c = hb->c;
    if (!c || !c->a.req || c->content_chunks || (c->a.pipe && sg_pipeline_committed(c->a.pipe)))
        return;
    if (send_head(c) == 0 && c->a.req)
        client_io(c, sg_http_stream_write(c->a.req, ": keep-alive\n\n", 14));
    if (!c->a.req) {
        chat_finish(c, "client_closed");
        return;
    }
    uv_timer_start(&hb->timer, on_heartbeat, c->a.gen->cfg.sse_heartbeat_ms, 0);
}

/* The shutdown grace period is over: the client hears why its request ends. */
static void chat_shutdown(sg_api_t *a, const sg_error_t *e)
{
    chat_t *c = (chat_t *)a;
    fail_or_respond(c, e, NULL);
    chat_finish(c, "shutdown");
}

static const sg_api_ops_t chat_ops = {chat_free, chat_shutdown, chat_settle, NULL, NULL};

/* ---- request parsing ---------------------------------------------------------------------- */

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

void sg_chat_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    chat_t *c = sg_pool_get(&chat_pool);
    sg_api_init(&c->a, &chat_ops, gw, req, "/v1/chat/completions");
    c->created = (int)sg_unix_time();
    sg_buf_init(&c->out, SSE_OUT_MAX);
    sg_error_t e;
    sg_hints_t hints;
    sg_plan_t plan; /* copied by the pipeline */

    c->a.body = sg_api_parse(req, &e);
    if (!c->a.body || validate(c->a.body, &e) != 0) goto fail;
    if (sg_hints_read(sg_http_req_header(req, "x-sophia-provider"), c->a.body, &hints, &e) != 0)
        goto fail;
    const char *model = cJSON_GetObjectItemCaseSensitive(c->a.body, "model")->valuestring;
    sg_strlcpy(c->a.rec.model, sizeof(c->a.rec.model), model);
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c->a.body, "stream"));
    c->a.rec.stream = c->stream;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(c->a.body, "stream_options");
    c->include_usage =
        c->stream && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    c->est_prompt_tokens =
        sg_api_estimate_messages(cJSON_GetObjectItemCaseSensitive(c->a.body, "messages"));
    c->a.rec.ticket.prompt_est = c->est_prompt_tokens;

    if (sg_route_plan(c->a.gen, model, &hints, c->a.body, &plan, &e) != 0) goto fail;
    if (plan.routes[0].model->caps & SG_CAP_EMBED) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_value",
                     "'%s' is an embedding model: use POST /v1/embeddings",
                     plan.routes[0].public_name);
        goto fail;
    }
    sg_record_route(&c->a.rec, &plan.routes[0]);
    sg_pipeline_sink_t sink = {
        sink_chunk, sink_raw_chunk, sg_api_sink_usage, sink_done, sink_fail, sink_congested, c, 1};
    c->a.pipe = sg_pipeline_start(gw, c->a.gen, &plan, SG_OP_CHAT, c->a.body, c->stream, &c->a.rec,
                                  &sink, &e);
    if (!c->a.pipe) goto fail;
    sg_api_watch(&c->a);
    if (c->stream && c->a.gen->cfg.sse_heartbeat_ms) {
        c->hb = sg_xcalloc(1, sizeof(*c->hb));
        uv_timer_init(gw->loop, &c->hb->timer);
        c->hb->timer.data = c->hb;
        c->hb->c = c;
        uv_timer_start(&c->hb->timer, on_heartbeat, c->a.gen->cfg.sse_heartbeat_ms, 0);
    }
    return;

fail:
    respond_error(c, &e, NULL);
    chat_finish(c, "rejected");
}
