/* The common part of every endpoint handler (see sophia/api.h). */
#include "sophia/api.h"

#include "sophia/access.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/log.h"

#define HEADERS_MAX 2048

static void on_shutdown(sg_active_t *act)
{
    sg_api_t *a = (sg_api_t *)act;
    sg_pipeline_release(a->pipe);
    a->pipe = NULL;
    sg_error_t e;
    sg_error_set(&e, 503, "api_error", "server_shutting_down",
                 "the gateway is shutting down; retry the request");
    if (a->ops->shutdown)
        a->ops->shutdown(a, &e);
    else
        sg_api_fail(a, &e, NULL, "shutdown");
}

void sg_api_init(sg_api_t *a, const sg_api_ops_t *ops, sg_gateway_t *gw, sg_http_req_t *req,
                 const char *path)
{
    a->ops = ops;
    a->refs = 1;
    a->gw = gw;
    a->gen = sg_gen_ref(gw->gen);
    a->req = req;
    a->active.shutdown = on_shutdown;
    sg_gateway_track(gw, &a->active);
    gw->chats_active++;
    sg_record_init(&a->rec, req, "POST", path);
    a->rec.ticket.key = req->client_key;
    const sg_key_cfg_t *key = req->client_key; /* set by the router, from this generation */
    if (key) {
        sg_strlcpy(a->rec.key, sizeof(a->rec.key), key->name);
        if (key->team) sg_strlcpy(a->rec.team, sizeof(a->rec.team), key->team);
    }
}

void sg_api_ref(sg_api_t *a)
{
    a->refs++;
}

void sg_api_unref(sg_api_t *a)
{
    SG_ASSERT(a->refs > 0);
    if (--a->refs > 0) return;
    cJSON_Delete(a->body);
    sg_gen_unref(a->gen);
    a->ops->free(a);
}

static void on_client_abort(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    sg_api_t *a = ud;
    a->rec.client_gone = 1;
    a->req = NULL;
    /* Releasing the pipeline aborts the upstream transfer in this loop iteration: an abandoned
     * generation must not keep running (and costing money). */
    sg_api_finish(a, "client_closed");
}

static void on_client_drain(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    sg_api_t *a = ud;
    if (!a->pipe) return;
    sg_api_ref(a); /* resume may deliver output that ends the request */
    sg_pipeline_resume(a->pipe);
    sg_api_unref(a);
}

void sg_api_watch(sg_api_t *a)
{
    sg_http_req_set_hooks(a->req, on_client_abort, on_client_drain, a);
}

int sg_api_io(sg_api_t *a, int r)
{
    if (r != 0) {
        a->rec.client_gone = 1;
        a->req = NULL;
    }
    return r;
}

/* Header lines built in place (no printf: this runs for every answer). Output that does not
 * fit is cut at a line's end; out stays NUL-terminated. */
typedef struct hdr {
    char *p;
    size_t n, cap;
    int cut; /* something did not fit */
} hdr_t;

static void h_put(hdr_t *h, const char *s, size_t len)
{
    if (h->cut) return; /* after a cut nothing more: the cut line goes */
    if (h->n + len >= h->cap) {
        h->cut = 1;
        return;
    }
    memcpy(h->p + h->n, s, len);
    h->n += len;
}

#define H_LIT(h, lit) h_put(h, lit, sizeof(lit) - 1)

/* A header value: printable ASCII only (anything else becomes '?'), at most max bytes. */
static void h_value(hdr_t *h, const char *s, size_t max)
{
    size_t i = 0;
    if (h->cut) return;
    for (; s[i] && i < max && h->n + 1 < h->cap; i++)
        h->p[h->n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i] && i < max) h->cut = 1;
}

/* A USD amount with 8 decimals ("0.00012300"). */
static void h_usd(hdr_t *h, double usd)
{
    char buf[48];
    if (!(usd >= 0 && usd < 1e9)) {
        int n = snprintf(buf, sizeof(buf), "%.8f", usd);
        if (n > 0) h_put(h, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
        return;
    }
    uint64_t v = (uint64_t)llround(usd * 1e8), ip = v / 100000000u, fp = v % 100000000u;
    size_t n = sizeof(buf);
    for (int i = 0; i < 8; i++, fp /= 10) buf[--n] = (char)('0' + fp % 10);
    buf[--n] = '.';
    do buf[--n] = (char)('0' + ip % 10);
    while ((ip /= 10) != 0);
    h_put(h, buf + n, sizeof(buf) - n);
}

void sg_api_headers(const sg_api_t *a, char *out, size_t cap, const char *extra)
{
    const sg_record_t *r = &a->rec;
    hdr_t h = {out, 0, cap, 0};
    if (r->provider[0]) {
        H_LIT(&h, "X-Sophia-Provider: ");
        h_value(&h, r->provider, 79);
        H_LIT(&h, "\r\nX-Sophia-Model: ");
        h_value(&h, r->route, 299);
        H_LIT(&h, "\r\nX-Sophia-Route: ");
        h_value(&h, r->why, 599);
        H_LIT(&h, "\r\n");
    }
    /* The admission's Retry-After and x-ratelimit-* lines, and a whole answer's cost. */
    char acct[640];
    size_t n = sg_admit_headers(r, acct, sizeof(acct));
    h_put(&h, acct, n);
    if (r->status == 200 && !a->streaming && r->provider[0]) {
        H_LIT(&h, "X-Sophia-Cost-USD: ");
        h_usd(&h, sg_usage_cost(&r->usage, r->price_in, r->price_out, NULL, NULL));
        H_LIT(&h, "\r\n");
    }
    if (extra) h_put(&h, extra, strlen(extra));
    if (h.cut) /* only whole lines go out */
        while (h.n >= 2 && !(out[h.n - 2] == '\r' && out[h.n - 1] == '\n')) h.n--;
    if (h.cut && h.n < 2) h.n = 0;
    if (cap) out[h.n < cap ? h.n : cap - 1] = '\0';
}

void sg_api_usage_cost(sg_api_t *a, cJSON *usage)
{
    cJSON_AddNumberToObject(usage, "cost_usd", sg_record_cost(&a->rec));
}

void sg_api_respond_error(sg_api_t *a, const sg_error_t *e, const char *extra)
{
    sg_strlcpy(a->rec.error, sizeof(a->rec.error), e->message);
    a->rec.status = e->status;
    if (!a->req) return;
    sg_http_req_t *req = a->req;
    a->req = NULL; /* answered: the request object is reused for the next one */
    char h[HEADERS_MAX];
    sg_api_headers(a, h, sizeof(h), extra);
    if (a->ops->error_body) {
        sg_buf_t b;
        sg_buf_init(&b, 64 * 1024);
        a->ops->error_body(a, e, &b);
        sg_api_io(a, sg_http_respond(req, e->status, "application/json", b.data, b.len, h));
        sg_buf_dispose(&b);
        return;
    }
    sg_api_io(a, sg_http_respond_error_ex(req, e->status, e->type, e->code[0] ? e->code : NULL,
                                          e->message, h));
}

void sg_api_stream_counted(sg_api_t *a)
{
    if (a->stream_counted || a->finished) return;
    a->stream_counted = 1;
    a->gw->streams_active++;
}

int sg_api_stream_begin(sg_api_t *a)
{
    if (a->streaming) return a->req ? 0 : -1;
    if (!a->req) return -1;
    a->streaming = 1;
    sg_api_stream_counted(a);
    a->rec.status = 200;
    char h[HEADERS_MAX];
    sg_api_headers(a, h, sizeof(h), "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    return sg_api_io(a, sg_http_stream_begin(a->req, 200, "text/event-stream", h));
}

int sg_api_stream_write(sg_api_t *a, const char *text, size_t len)
{
    if (sg_api_stream_begin(a) != 0) return -1;
    return sg_api_io(a, sg_http_stream_write(a->req, text, len));
}

int sg_api_stream_event(sg_api_t *a, sg_buf_t *ev, const char *type, const char *json)
{
    sg_buf_reset(ev);
    sg_buf_printf(ev, "event: %s\ndata: ", type);
    sg_buf_append_str(ev, json);
    sg_buf_append(ev, "\n\n", 2);
    return sg_api_stream_write(a, ev->data, ev->len);
}

void sg_api_stream_end(sg_api_t *a)
{
    if (!a->req || !a->streaming) return;
    sg_http_req_t *req = a->req;
    a->req = NULL;
    sg_api_io(a, sg_http_stream_end(req, NULL, 0));
}

void sg_api_respond_json(sg_api_t *a, const char *json, size_t len)
{
    a->rec.status = 200;
    if (!a->req) return;
    sg_http_req_t *req = a->req;
    a->req = NULL;
    char h[HEADERS_MAX];
    sg_api_headers(a, h, sizeof(h), NULL);
    sg_api_io(a, sg_http_respond(req, 200, "application/json", json, len, h));
}

void sg_api_fail(sg_api_t *a, const sg_error_t *e, const char *headers, const char *outcome)
{
    if (e->status == 499) {
        sg_api_finish(a, "client_closed");
        return;
    }
    if (!outcome) {
        if (strcmp(e->code, "upstream_timeout") == 0)
            outcome = "upstream_timeout";
        else if (strcmp(e->code, "upstream_stream_truncated") == 0)
            outcome = "upstream_truncated";
        else
            outcome = "upstream_error";
    }
    if (a->streaming && a->ops->stream_error) {
        sg_strlcpy(a->rec.error, sizeof(a->rec.error), e->message);
        a->ops->stream_error(a, e);
    } else {
        sg_api_respond_error(a, e, headers);
    }
    sg_api_finish(a, outcome);
}

void sg_api_sink_fail(void *ud, const sg_error_t *e, const char *headers)
{
    sg_api_fail(ud, e, headers, NULL);
}

void sg_api_sink_usage(void *ud, const sg_usage_t *u)
{
    sg_api_t *a = ud;
    if (!u->rejected) {
        a->rec.usage = *u;
        return;
    }
    if (a->usage_bad) return;
    a->usage_bad = 1;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "upstream usage out of range; tokens estimated");
    sg_logline_str(&l, "request_id", a->rec.request_id);
    sg_logline_str(&l, "route", a->rec.route);
    sg_logline_emit(&l);
}

int sg_api_sink_congested(void *ud)
{
    sg_api_t *a = ud;
    return a->req && sg_http_req_congested(a->req);
}

void sg_api_finish(sg_api_t *a, const char *outcome)
{
    if (a->finished) return;
    a->finished = 1;
    if (a->rec.client_gone) outcome = "client_closed";
    a->rec.outcome = outcome;
    if (a->ops->settle) a->ops->settle(a);
    sg_pipeline_release(a->pipe);
    a->pipe = NULL;
    /* Accounting: the real cost replaces what admission reserved, before the observers (the
     * ledger, the metrics) see the record. */
    sg_record_cost(&a->rec);
    sg_admit_settle(&a->rec);
    sg_record_finish(a->gw, &a->rec);
    sg_gateway_untrack(a->gw, &a->active);
    a->gw->chats_active--;
    if (a->stream_counted) {
        a->stream_counted = 0;
        SG_ASSERT(a->gw->streams_active > 0);
        a->gw->streams_active--;
    }
    a->req = NULL;
    sg_api_unref(a);
}

cJSON *sg_api_parse(const sg_http_req_t *req, sg_error_t *e)
{
    sg_json_problem_t p;
    cJSON *j = sg_json_parse_strict(req->body, req->body_len, &p);
    if (cJSON_IsObject(j)) return j;
    if (j) {
        cJSON_Delete(j);
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body must be a JSON object");
    } else if (p.line) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body is not valid JSON: %s (line %zu, column %zu)", p.what, p.line,
                     p.col);
    } else {
        sg_error_set(e, 400, "invalid_request_error", "invalid_json",
                     "request body is not valid JSON: %s", p.what);
    }
    return NULL;
}

int sg_api_chunk_each(sg_api_t *a, const cJSON *chunk, const sg_chunk_visitor_t *v, void *ud,
                      char *finish, size_t cap, long *content_chunks)
{
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
    {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content) && content->valuestring[0]) {
            (*content_chunks)++;
            if (!a->rec.ttft_ns) a->rec.ttft_ns = sg_now_ns();
            if (v->text(ud, content->valuestring) != 0) return 1;
        }
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"))
        {
            if (!a->rec.ttft_ns) a->rec.ttft_ns = sg_now_ns();
            if (v->tool(ud, tc) != 0) return 1;
        }
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(fr)) sg_strlcpy(finish, cap, fr->valuestring);
    }
    return 0;
}

long sg_api_estimate_tokens(size_t chars)
{
    return (long)((chars + 3) / 4);
}

long sg_api_estimate_messages(const cJSON *messages)
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
    return sg_api_estimate_tokens(chars);
}
