/* POST /v1/chat/completions: the OpenAI chat protocol on the client's side. Parses (strict
 * JSON) and validates the request, plans its route (sophia/route.h), hands the upstream side
 * to the completion pipeline (sophia/pipeline.h), and writes what comes back as SSE events or
 * one JSON body, with the X-Sophia-* headers that explain the route. The request record
 * (sophia/record.h) goes to the observers when the request ends. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    sg_active_t active; /* first: the gateway's shutdown reaches the chat through it */
    int refs;
    sg_gateway_t *gw;
    sg_gen_t *gen;
    sg_http_req_t *req; /* NULL once answered or gone */
    sg_pipeline_t *pipe;
    sg_record_t rec;
    cJSON *body; /* the client's request ("sophia" removed) */
    int stream, include_usage;
    int head_sent;  /* the SSE response head went out */
    int usage_sent; /* a usage chunk went to the client */
    int usage_bad;  /* the last usage the upstream reported was out of range */
    int finished;
    long est_prompt_tokens;
    long content_chunks;
    int created;
    char chunk_id[64];
    sg_buf_t out; /* one SSE event */
    heartbeat_t *hb;
} chat_t;

static void chat_unref(chat_t *c)
{
    SG_ASSERT(c->refs > 0);
    if (--c->refs > 0) return;
    cJSON_Delete(c->body);
    sg_gen_unref(c->gen);
    sg_buf_dispose(&c->out);
    free(c);
}

static void on_hb_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Ends the request: the record goes to the observers, the pipeline is let go. Nothing may
 * touch the chat's request after this. */
static void chat_finish(chat_t *c, const char *outcome)
{
    if (c->finished) return;
    c->finished = 1;
    if (c->rec.client_gone) outcome = "client_closed";
    if (!c->rec.usage.known) {
        /* Usage not reported by the upstream is estimated: ~4 characters per prompt token,
         * one token per content chunk. Accounting then still sees every request. */
        c->rec.usage.prompt_tokens = c->est_prompt_tokens;
        c->rec.usage.completion_tokens = c->content_chunks;
    }
    c->rec.outcome = outcome;
    if (c->hb) {
        c->hb->c = NULL;
        uv_close((uv_handle_t *)&c->hb->timer, on_hb_closed);
        c->hb = NULL;
    }
    sg_pipeline_release(c->pipe);
    c->pipe = NULL;
    sg_record_finish(c->gw, &c->rec);
    sg_gateway_untrack(c->gw, &c->active);
    c->gw->chats_active--;
    c->req = NULL;
    chat_unref(c);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Notes the result of a write to the client: -1 means the client is gone (the HTTP layer then
 * fires no abort hook, so this is where the chat learns it). Returns r. */
static int client_io(chat_t *c, int r)
{
    if (r != 0) {
        c->rec.client_gone = 1;
        c->req = NULL;
    }
    return r;
}

/* Copies s into a header value: printable ASCII only. */
static void header_value(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 1 < cap; s++) dst[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    dst[n] = '\0';
}

/* The X-Sophia-* headers that explain the route (plus extra lines). */
static void route_headers(chat_t *c, char *out, size_t cap, const char *extra)
{
    char prov[80], model[300], why[600];
    header_value(prov, sizeof(prov), c->rec.provider);
    header_value(model, sizeof(model), c->rec.route);
    header_value(why, sizeof(why), c->rec.why);
    if (prov[0])
        snprintf(out, cap,
                 "X-Sophia-Provider: %s\r\nX-Sophia-Model: %s\r\nX-Sophia-Route: %s\r\n%s", prov,
                 model, why, extra ? extra : "");
    else
        snprintf(out, cap, "%s", extra ? extra : "");
}

static void respond_error(chat_t *c, const sg_error_t *e, const char *headers)
{
    snprintf(c->rec.error, sizeof(c->rec.error), "%s", e->message);
    c->rec.status = e->status;
    if (!c->req) return;
    sg_http_req_t *req = c->req;
    c->req = NULL; /* answered: the request object is reused for the next one */
    char h[HEADERS_MAX];
    route_headers(c, h, sizeof(h), headers);
    client_io(c, sg_http_respond_error_ex(req, e->status, e->type, e->code[0] ? e->code : NULL,
                                          e->message, h));
}

static int send_head(chat_t *c)
{
    if (!c->req) return -1;
    if (c->head_sent) return 0;
    c->head_sent = 1;
    c->rec.status = 200;
    char h[HEADERS_MAX];
    route_headers(c, h, sizeof(h), "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    return client_io(c, sg_http_stream_begin(c->req, 200, "text/event-stream", h));
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

static void stream_end(chat_t *c)
{
    if (!c->req) return;
    sg_http_req_t *req = c->req;
    c->req = NULL;
    client_io(c, sg_http_stream_end(req, NULL, 0));
}

/* Ends a stream that failed after the head was sent: an error event, then the end. The
 * OpenAI SDKs raise an APIError on it, so the truncation is never silent. */
static void stream_fail(chat_t *c, const sg_error_t *e)
{
    snprintf(c->rec.error, sizeof(c->rec.error), "%s", e->message);
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

static void settle_usage(chat_t *c)
{
    if (c->rec.usage.known) return;
    c->rec.usage.prompt_tokens = c->est_prompt_tokens;
    c->rec.usage.completion_tokens = c->content_chunks;
}

static void send_usage_chunk(chat_t *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", c->chunk_id[0] ? c->chunk_id : c->rec.request_id);
    cJSON_AddStringToObject(j, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(j, "created", c->created);
    cJSON_AddStringToObject(j, "model", c->rec.route);
    cJSON_AddArrayToObject(j, "choices");
    cJSON_AddItemToObject(j, "usage", usage_json(&c->rec.usage));
    send_event_obj(c, j);
    cJSON_Delete(j);
    c->usage_sent = 1;
}

static void first_token(chat_t *c)
{
    c->content_chunks++;
    if (!c->rec.ttft_ns) c->rec.ttft_ns = sg_now_ns();
}

/* ---- the pipeline's sink ------------------------------------------------------------------ */

static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    chat_t *c = ud;
    if (!c->req) return 1;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(chunk, "id");
    if (!c->chunk_id[0] && cJSON_IsString(id))
        snprintf(c->chunk_id, sizeof(c->chunk_id), "%s", id->valuestring);
    if (cJSON_GetArraySize(choices) == 0) {
        /* The usage-only chunk: forwarded only when the client asked for it (and it is
         * believable); an estimate is sent at the end otherwise. */
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
            if ((cJSON_IsString(content) && content->valuestring[0]) || cJSON_IsArray(tools))
                first_token(c);
        }
        /* Per-chunk usage (vLLM continuous usage) is not forwarded unless asked for. */
        if ((!c->include_usage || c->usage_bad) &&
            cJSON_GetObjectItemCaseSensitive(chunk, "usage")) {
            cJSON_DeleteItemFromObjectCaseSensitive(chunk, "usage");
            raw = NULL;
        }
    }
    return (raw ? send_event_json(c, raw, raw_len) : send_event_obj(c, chunk)) != 0;
}

static int sink_raw_chunk(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    chat_t *c = ud;
    SG_UNUSED(has_finish);
    if (!c->req) return 1;
    if (has_content) first_token(c);
    return send_event_json(c, raw, len) != 0;
}

/* Upstream usage that cannot be true is never used: warn once, estimate instead. */
static void usage_rejected(chat_t *c)
{
    if (c->usage_bad) return;
    c->usage_bad = 1;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "upstream usage out of range; tokens estimated");
    sg_logline_str(&l, "request_id", c->rec.request_id);
    sg_logline_str(&l, "route", c->rec.route);
    sg_logline_emit(&l);
}

static void sink_usage(void *ud, const sg_usage_t *u)
{
    chat_t *c = ud;
    if (u->rejected) {
        usage_rejected(c);
        return;
    }
    c->rec.usage = *u;
}

static void sink_done(void *ud, cJSON *resp, const char *body, size_t len)
{
    chat_t *c = ud;
    if (!c->stream) {
        const cJSON *ch;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(resp, "choices"))
        {
            const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
            if (cJSON_IsString(content))
                c->content_chunks += (long)strlen(content->valuestring) / 4;
        }
        c->rec.ttft_ns = sg_now_ns();
        c->rec.status = 200;
        if (!c->rec.usage.known) {
            /* The client sees the estimate the gateway accounts. */
            settle_usage(c);
            cJSON_DeleteItemFromObjectCaseSensitive(resp, "usage");
            cJSON_AddItemToObject(resp, "usage", usage_json(&c->rec.usage));
            body = NULL;
        }
        if (c->req) {
            sg_http_req_t *req = c->req;
            c->req = NULL;
            char h[HEADERS_MAX];
            route_headers(c, h, sizeof(h), NULL);
            if (body) {
                /* Already an OpenAI chat.completion: forwarded without re-printing. */
                client_io(c, sg_http_respond(req, 200, "application/json", body, len, h));
            } else {
                char *s = cJSON_PrintUnformatted(resp);
                SG_ASSERT(s != NULL);
                client_io(c, sg_http_respond(req, 200, "application/json", s, strlen(s), h));
                free(s);
            }
        }
        chat_finish(c, "ok");
        return;
    }
    settle_usage(c);
    if (c->include_usage && !c->usage_sent) send_usage_chunk(c);
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
    return c->req && sg_http_req_congested(c->req);
}

/* ---- client hooks and timers -------------------------------------------------------------- */

static void on_client_abort(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    chat_t *c = ud;
    c->rec.client_gone = 1;
    c->req = NULL;
    /* Release aborts the upstream transfer in this loop iteration: an abandoned generation
     * must not keep running (and costing money). */
    chat_finish(c, "client_closed");
}

static void on_client_drain(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    chat_t *c = ud;
    if (!c->pipe) return;
    c->refs++; /* resume may deliver chunks that end the chat */
    sg_pipeline_resume(c->pipe);
    chat_unref(c);
}

/* While the first token takes long, SSE comment lines keep proxies from closing the stream. */
static void on_heartbeat(uv_timer_t *t)
{
    heartbeat_t *hb = t->data;
    chat_t *c = hb->c;
    if (!c || !c->req || c->content_chunks || (c->pipe && sg_pipeline_committed(c->pipe))) return;
    if (send_head(c) == 0 && c->req)
        client_io(c, sg_http_stream_write(c->req, ": keep-alive\n\n", 14));
    if (!c->req) {
        chat_finish(c, "client_closed");
        return;
    }
    uv_timer_start(&hb->timer, on_heartbeat, c->gen->cfg.sse_heartbeat_ms, 0);
}

/* The shutdown grace period is over: the client hears why its request ends. */
static void on_gateway_shutdown(sg_active_t *a)
{
    chat_t *c = (chat_t *)a;
    sg_pipeline_release(c->pipe);
    c->pipe = NULL;
    sg_error_t e;
    sg_error_set(&e, 503, "api_error", "server_shutting_down",
                 "the gateway is shutting down; retry the request");
    fail_or_respond(c, &e, NULL);
    chat_finish(c, "shutdown");
}

/* ---- request parsing ---------------------------------------------------------------------- */

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

void sg_chat_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    chat_t *c = sg_xcalloc(1, sizeof(*c));
    c->refs = 1;
    c->active.shutdown = on_gateway_shutdown;
    sg_gateway_track(gw, &c->active);
    gw->chats_active++;
    c->gw = gw;
    c->gen = sg_gen_ref(gw->gen);
    c->req = req;
    c->created = (int)sg_unix_time();
    sg_record_init(&c->rec, req, "POST", "/v1/chat/completions");
    sg_buf_init(&c->out, SSE_OUT_MAX);
    sg_error_t e;
    sg_hints_t hints;
    sg_plan_t *plan = NULL;

    c->body = parse_body(req->body, req->body_len, &e);
    if (!c->body || validate(c->body, &e) != 0) goto fail;
    if (sg_hints_read(sg_http_req_header(req, "x-sophia-provider"), c->body, &hints, &e) != 0)
        goto fail;
    const char *model = cJSON_GetObjectItemCaseSensitive(c->body, "model")->valuestring;
    snprintf(c->rec.model, sizeof(c->rec.model), "%s", model);
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c->body, "stream"));
    c->rec.stream = c->stream;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(c->body, "stream_options");
    c->include_usage =
        c->stream && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    c->est_prompt_tokens =
        estimate_prompt_tokens(cJSON_GetObjectItemCaseSensitive(c->body, "messages"));

    plan = sg_xmalloc(sizeof(*plan));
    if (sg_route_plan(c->gen, model, &hints, c->body, plan, &e) != 0) goto fail;
    snprintf(c->rec.route, sizeof(c->rec.route), "%s", plan->routes[0].public_name);
    snprintf(c->rec.provider, sizeof(c->rec.provider), "%s", plan->routes[0].provider->name);
    sg_pipeline_sink_t sink = {sink_chunk, sink_raw_chunk, sink_usage, sink_done,
                               sink_fail,  sink_congested, c};
    c->pipe = sg_pipeline_start(gw, c->gen, plan, c->body, c->stream, &c->rec, &sink, &e);
    free(plan);
    plan = NULL;
    if (!c->pipe) goto fail;
    sg_http_req_set_hooks(req, on_client_abort, on_client_drain, c);
    if (c->stream && c->gen->cfg.sse_heartbeat_ms) {
        c->hb = sg_xcalloc(1, sizeof(*c->hb));
        uv_timer_init(gw->loop, &c->hb->timer);
        c->hb->timer.data = c->hb;
        c->hb->c = c;
        uv_timer_start(&c->hb->timer, on_heartbeat, c->gen->cfg.sse_heartbeat_ms, 0);
    }
    return;

fail:
    free(plan);
    respond_error(c, &e, NULL);
    chat_finish(c, "rejected");
}
