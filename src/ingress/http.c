/* HTTP/1.1 server: listener, connection state machine (llhttp), limits, responses. */
#include "sophia/http.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/log.h"
#include "sophia/workers.h"

/* Bytes of pipelined input kept while a request is being handled; past it reading stops. */
#define PENDING_INPUT_MAX (64 * 1024)
/* Streamed output is corked and written once per loop iteration (after the I/O callbacks that
 * produced it: no delay, fewer syscalls); past this many bytes it is written at once. */
#define CORK_MAX (32 * 1024)

typedef enum {
    CS_IDLE,     /* waiting for the first byte of a request */
    CS_HEAD,     /* reading request line and headers */
    CS_BODY,     /* reading the body */
    CS_HANDLING, /* handler owns the request */
    CS_CLOSING,  /* shutting down / closing */
} conn_state_t;

struct sg_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    sg_http_opts_t opts;
    sg_http_request_cb on_request;
    void *ud;
    sg_http_conn_t *conns; /* intrusive list */
    size_t n_conns;
    int stopping;
    int listener_closed;
    sg_http_closed_cb on_closed;
    void *closed_ud;
    int port;
    uv_check_t cork_check; /* flushes corked connections after each loop's I/O phase */
    uv_idle_t cork_idle;   /* keeps the loop from blocking while output is corked */
    int cork_active;
    int cork_handles_open;
    sg_http_conn_t *corked; /* connections with corked output */
};

struct sg_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    sg_http_server_t *srv;
    sg_http_conn_t *prev, *next;
    llhttp_t parser;
    conn_state_t state;
    int handles_open; /* tcp + timer; freed when both closed */
    int reading;
    int keep_alive;    /* current request allows keep-alive */
    int close_after;   /* close once the current response is written */
    int in_process;    /* inside process_input: do not re-enter */
    int need_process;  /* pending input should be parsed (deferred to the timer) */
    int eof;           /* client half-closed */
    int over_high;     /* queued went above the high watermark */
    int shutting_down; /* uv_shutdown issued */
    int req_ready;     /* message complete, dispatch after llhttp_execute returns */
    int abort_pending; /* closed under a running request: its abort hook fires on close */
    int parse_error;   /* status to answer a protocol error with (0 none) */
    const char *parse_reason;
    int in_url;
    size_t queued;          /* bytes in uv_write requests not yet completed */
    uint64_t last_activity; /* ms: last read */
    uint64_t last_progress; /* ms: last write completion or when queue became non-empty */
    uint64_t req_start_ms;
    uint64_t body_start_ms;                 /* head complete: the body deadline counts from here */
    sg_buf_t hbuf;                          /* url + header names/values, NUL-separated */
    uint32_t name_off[SG_HTTP_MAX_HEADERS]; /* hbuf is capped below 4 GiB */
    uint32_t value_off[SG_HTTP_MAX_HEADERS];
    size_t n_hdr;
    size_t url_len;
    int in_field;       /* inside a header name */
    size_t field_start; /* hbuf offset of the header name being read */
    sg_buf_t body;
    sg_buf_t pending; /* unparsed input */
    sg_buf_t cork;    /* streamed output not yet handed to the socket */
    sg_http_conn_t *cork_prev, *cork_next;
    int in_cork_list;
    sg_http_req_t req;
    char origin_ok; /* the request's Origin is allowed by CORS */
    char *origin;   /* borrowed pointer into hbuf */
};

typedef struct write_req {
    uv_write_t w;
    sg_http_conn_t *conn;
    size_t len;
    char data[];
} write_req_t;

static void conn_close(sg_http_conn_t *c);
static void on_timer(uv_timer_t *t);
static void update_io(sg_http_conn_t *c);
static void process_input(sg_http_conn_t *c);
static void finish_request(sg_http_conn_t *c);
static void maybe_server_closed(sg_http_server_t *srv);

void sg_http_opts_defaults(sg_http_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->max_header_bytes = 16384;
    o->max_body_bytes = 1024 * 1024;
    o->header_timeout_ms = 10000;
    o->idle_timeout_ms = 60000;
    o->body_timeout_ms = 30000;
    o->write_stall_timeout_ms = 30000;
    o->max_connections = 10000;
    o->high_watermark = 65536;
    o->low_watermark = 16384;
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    sg_http_conn_t *c = wr->conn;
    SG_ASSERT(c->queued >= wr->len);
    c->queued -= wr->len;
    free(wr);
    if (c->state == CS_CLOSING) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->last_progress = sg_now_ms();
    if (c->over_high && c->queued <= c->srv->opts.low_watermark) {
        c->over_high = 0;
        if (!c->req.done && c->req.drain_cb) c->req.drain_cb(&c->req, c->req.hook_ud);
    }
    if (c->state != CS_CLOSING) update_io(c);
}

/* Writes bufs in order: as much as the kernel takes now, the rest copied into one queued
 * write. Returns 0, or -1 when the connection is closing or the write failed (then closing). */
static int conn_write(sg_http_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
    if (c->state == CS_CLOSING || c->shutting_down) return -1;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) return 0;
    size_t skip = 0;
    if (c->queued == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n > 0) {
            skip = (size_t)n;
        } else if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return -1;
        }
        if (skip == total) return 0;
    }
    size_t rest = total - skip;
    write_req_t *wr = sg_xmalloc(sizeof(*wr) + rest);
    wr->conn = c;
    wr->len = rest;
    size_t off = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(wr->data + off, bufs[i].base + skip, l - skip);
        off += l - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
    int r = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        free(wr);
        conn_close(c);
        return -1;
    }
    if (c->queued == 0) c->last_progress = sg_now_ms();
    c->queued += rest;
    /* Bytes now wait on the client: make sure the stall deadline is armed even when this
     * write came from outside the server's own callbacks (an upstream or timer callback). */
    if (!uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, on_timer, c->srv->opts.write_stall_timeout_ms, 0);
    if (c->queued >= c->srv->opts.high_watermark) c->over_high = 1;
    return 0;
}

static void cork_unlink(sg_http_conn_t *c)
{
    if (!c->in_cork_list) return;
    if (c->cork_prev)
        c->cork_prev->cork_next = c->cork_next;
    else
        c->srv->corked = c->cork_next;
    if (c->cork_next) c->cork_next->cork_prev = c->cork_prev;
    c->cork_prev = c->cork_next = NULL;
    c->in_cork_list = 0;
}

/* Hands corked output to the socket. Returns like conn_write. */
static int cork_flush(sg_http_conn_t *c)
{
    cork_unlink(c);
    if (c->cork.len == 0 || c->state == CS_CLOSING) return c->state == CS_CLOSING ? -1 : 0;
    uv_buf_t b = uv_buf_init(c->cork.data, (unsigned)c->cork.len);
    int r = conn_write(c, &b, 1);
    sg_buf_reset(&c->cork);
    return r;
}

static void on_cork_check(uv_check_t *h)
{
    sg_http_server_t *srv = h->data;
    while (srv->corked) {
        sg_http_conn_t *c = srv->corked;
        cork_flush(c);
        if (c->state != CS_CLOSING) update_io(c);
    }
    uv_check_stop(&srv->cork_check);
    uv_idle_stop(&srv->cork_idle);
    srv->cork_active = 0;
}

static void on_cork_idle(uv_idle_t *h)
{
    SG_UNUSED(h);
}

/* Queues bytes for the end of this loop iteration. */
static int cork_append(sg_http_conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->state == CS_CLOSING || c->shutting_down) return -1;
    /* While the server stops, its cork handles are closing: write straight through. */
    if (c->srv->stopping) return conn_write(c, (uv_buf_t *)bufs, nbufs);
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    size_t limit = c->srv->opts.high_watermark < CORK_MAX ? c->srv->opts.high_watermark : CORK_MAX;
    if (c->cork.len + total > limit) {
        if (cork_flush(c) != 0) return -1;
        if (total > limit) return conn_write(c, (uv_buf_t *)bufs, nbufs);
    }
    for (unsigned i = 0; i < nbufs; i++)
        SG_ASSERT(sg_buf_append(&c->cork, bufs[i].base, bufs[i].len) == 0);
    if (!c->in_cork_list) {
        sg_http_server_t *srv = c->srv;
        c->in_cork_list = 1;
        c->cork_prev = NULL;
        c->cork_next = srv->corked;
        if (srv->corked) srv->corked->cork_prev = c;
        srv->corked = c;
        if (!srv->cork_active) {
            srv->cork_active = 1;
            uv_check_start(&srv->cork_check, on_cork_check);
            uv_idle_start(&srv->cork_idle, on_cork_idle);
        }
    }
    return 0;
}

static void append_common_headers(sg_http_conn_t *c, sg_buf_t *h)
{
    sg_buf_cat(h, "X-Request-Id: ", c->req.request_id, "\r\n", NULL);
    if (c->origin_ok && c->origin) {
        sg_buf_printf(h,
                      "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
                      "Access-Control-Expose-Headers: X-Request-Id, X-Sophia-Provider, "
                      "X-Sophia-Model, X-Sophia-Route, Retry-After, x-should-retry\r\n",
                      c->origin);
    }
}

/* A streamed body is chunked on HTTP/1.1 unless it was started close-delimited. */
static int chunked(const sg_http_req_t *req)
{
    const sg_http_conn_t *c = req->conn;
    return !req->close_delimited && c->parser.http_major == 1 && c->parser.http_minor >= 1;
}

static int send_head(sg_http_req_t *req, int status, const char *ctype, const char *extra,
                     long long content_length, const char *body, size_t body_len)
{
    sg_http_conn_t *c = req->conn;
    if (req->done || req->status) return -1;
    req->status = status;
    sg_buf_t h;
    sg_buf_init(&h, 16384);
    sg_buf_reserve(&h, 512 + (extra ? strlen(extra) : 0));
    char st[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                  (char)('0' + status % 10), 0};
    sg_buf_cat(&h, "HTTP/1.1 ", st, " ", sg_http_reason(status), "\r\n", NULL);
    if (ctype) sg_buf_cat(&h, "Content-Type: ", ctype, "\r\n", NULL);
    if (content_length >= 0 && sg_buf_append_str(&h, "Content-Length: ") == 0)
        sg_buf_append_int(&h, content_length), sg_buf_append_str(&h, "\r\n");
    else if (chunked(req))
        sg_buf_append_str(&h, "Transfer-Encoding: chunked\r\n");
    else
        c->close_after = 1;
    append_common_headers(c, &h);
    if (extra) sg_buf_append_str(&h, extra);
    if (c->srv->stopping) c->close_after = 1;
    if (!c->keep_alive || c->close_after)
        sg_buf_append_str(&h, "Connection: close\r\n\r\n");
    else if (c->parser.http_minor == 0)
        sg_buf_append_str(&h, "Connection: keep-alive\r\n\r\n");
    else
        sg_buf_append_str(&h, "\r\n");
    uv_buf_t bufs[2] = {uv_buf_init(h.data, (unsigned)h.len),
                        uv_buf_init((char *)(body ? body : ""), (unsigned)body_len)};
    /* A HEAD response carries the headers of the GET, never its body. A stream's head waits
     * in the cork for its first bytes. */
    int r = content_length < 0 ? cork_append(c, bufs, 1)
                               : conn_write(c, bufs, body_len && req->method != HTTP_HEAD ? 2 : 1);
    sg_buf_dispose(&h);
    req->bytes_sent += body_len;
    return r;
}

/* A call on the request failed. When that is because the connection is gone, the handler
 * now knows it from the return value: the abort hook will not fire as well. */
static int req_gone(sg_http_req_t *req)
{
    if (req->conn->state == CS_CLOSING) {
        req->abort_cb = NULL;
        req->drain_cb = NULL;
    }
    return -1;
}

int sg_http_respond(sg_http_req_t *req, int status, const char *content_type, const char *body,
                    size_t len, const char *extra_headers)
{
    sg_http_conn_t *c = req->conn;
    if (req->done) return req_gone(req);
    int r = send_head(req, status, content_type, extra_headers, (long long)len, body, len);
    if (!req->done && c->state != CS_CLOSING) finish_request(c);
    return r == 0 ? 0 : req_gone(req);
}

int sg_http_respond_error(sg_http_req_t *req, int status, const char *type, const char *code,
                          const char *message)
{
    return sg_http_respond_error_ex(req, status, type, code, message, NULL);
}

int sg_http_respond_error_ex(sg_http_req_t *req, int status, const char *type, const char *code,
                             const char *message, const char *extra_headers)
{
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    sg_buf_append_str(&b, "{\"error\":{\"message\":");
    sg_json_escape_append(&b, message, strlen(message));
    sg_buf_append_str(&b, ",\"type\":");
    sg_json_escape_append(&b, type, strlen(type));
    sg_buf_append_str(&b, ",\"param\":null,\"code\":");
    if (code)
        sg_json_escape_append(&b, code, strlen(code));
    else
        sg_buf_append_str(&b, "null");
    sg_buf_append_str(&b, "}}");
    int r = sg_http_respond(req, status, "application/json", b.data, b.len, extra_headers);
    sg_buf_dispose(&b);
    return r;
}

int sg_http_stream_begin(sg_http_req_t *req, int status, const char *content_type,
                         const char *extra_headers)
{
    if (req->done) return req_gone(req);
    req->streaming = 1;
    return send_head(req, status, content_type, extra_headers, -1, NULL, 0) == 0 ? 0
                                                                                 : req_gone(req);
}

int sg_http_stream_begin_close_delimited(sg_http_req_t *req, int status, const char *content_type,
                                         const char *extra_headers)
{
    if (req->done) return req_gone(req);
    req->close_delimited = 1;
    return sg_http_stream_begin(req, status, content_type, extra_headers);
}

int sg_http_stream_write(sg_http_req_t *req, const char *data, size_t len)
{
    sg_http_conn_t *c = req->conn;
    if (req->done) return req_gone(req);
    if (!req->streaming || len == 0) return 0;
    req->bytes_sent += len;
    int r;
    if (!chunked(req)) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        r = cork_append(c, &b, 1);
    } else {
        char head[24];
        int hl = snprintf(head, sizeof(head), "%zx\r\n", len);
        uv_buf_t bufs[3] = {uv_buf_init(head, (unsigned)hl),
                            uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
        r = cork_append(c, bufs, 3);
    }
    return r == 0 ? 0 : req_gone(req);
}

int sg_http_stream_end(sg_http_req_t *req, const char *data, size_t len)
{
    sg_http_conn_t *c = req->conn;
    if (req->done) return req_gone(req);
    if (!req->streaming) return -1;
    int r = 0;
    if (chunked(req)) {
        req->bytes_sent += len;
        char head[24];
        int hl = len ? snprintf(head, sizeof(head), "%zx\r\n", len) : 0;
        uv_buf_t bufs[4] = {uv_buf_init(head, (unsigned)hl),
                            uv_buf_init((char *)(data ? data : ""), (unsigned)len),
                            uv_buf_init("\r\n", len ? 2 : 0), uv_buf_init("0\r\n\r\n", 5)};
        r = cork_append(c, bufs, 4);
    } else if (len) {
        r = sg_http_stream_write(req, data, len);
    }
    /* The response is complete: write it now, before the connection moves on or closes. */
    if (r == 0) r = cork_flush(c);
    if (!req->done && c->state != CS_CLOSING) finish_request(c);
    return r == 0 ? 0 : req_gone(req);
}

size_t sg_http_req_queued(const sg_http_req_t *req)
{
    return req->conn->queued;
}

int sg_http_req_congested(const sg_http_req_t *req)
{
    return req->conn->queued >= req->conn->srv->opts.high_watermark;
}

void sg_http_req_set_hooks(sg_http_req_t *req, sg_http_abort_cb on_abort, sg_http_drain_cb on_drain,
                           void *ud)
{
    req->abort_cb = on_abort;
    req->drain_cb = on_drain;
    req->hook_ud = ud;
}

const char *sg_http_req_header(const sg_http_req_t *req, const char *lname)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, lname) == 0) return req->headers[i].value;
    return NULL;
}

/* ---- connection lifecycle --------------------------------------------------------------- */

static void conn_free_if_closed(sg_http_conn_t *c)
{
    if (--c->handles_open > 0) return;
    sg_http_server_t *srv = c->srv;
    sg_buf_dispose(&c->hbuf);
    sg_buf_dispose(&c->body);
    sg_buf_dispose(&c->pending);
    sg_buf_dispose(&c->cork);
    free(c);
    maybe_server_closed(srv);
}

static void on_handle_closed(uv_handle_t *h)
{
    sg_http_conn_t *c = h->data;
    if (c->abort_pending) {
        c->abort_pending = 0;
        if (c->req.abort_cb) c->req.abort_cb(&c->req, c->req.hook_ud);
    }
    conn_free_if_closed(c);
}

/* Closes the connection now. A request still running is aborted: its hook fires once, from the
 * close callback, unless the handler learns it first from a failed sg_http_* call. */
static void conn_close(sg_http_conn_t *c)
{
    if (c->state == CS_CLOSING) return;
    int had_req = c->state == CS_HANDLING && !c->req.done;
    c->state = CS_CLOSING;
    cork_unlink(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->srv->n_conns--;
    if (had_req) {
        /* Never call the handler from here: conn_close may run inside one of its own
         * sg_http_* calls. The hook fires from the close callback, a later loop phase. */
        c->req.done = 1;
        c->abort_pending = 1;
    }
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    SG_UNUSED(status);
    sg_http_conn_t *c = s->data;
    free(s);
    conn_close(c);
}

/* Closes after queued bytes are flushed. */
static void conn_close_graceful(sg_http_conn_t *c)
{
    if (c->state == CS_CLOSING || c->shutting_down) return;
    if (c->queued == 0) {
        conn_close(c);
        return;
    }
    uv_shutdown_t *s = sg_xmalloc(sizeof(*s));
    s->data = c;
    if (uv_shutdown(s, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(s);
        conn_close(c);
        return;
    }
    c->shutting_down = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    update_io(c);
}

void sg_http_req_close(sg_http_req_t *req)
{
    sg_http_conn_t *c = req->conn;
    req->abort_cb = NULL;
    req->drain_cb = NULL;
    req->done = 1;
    c->close_after = 1;
    /* What was already produced still goes out; then the connection ends mid-response. */
    if (cork_flush(c) == 0) conn_close_graceful(c);
}

static void reset_request_state(sg_http_conn_t *c)
{
    sg_buf_reset(&c->hbuf);
    sg_buf_reset(&c->body);
    c->n_hdr = 0;
    c->url_len = 0;
    c->in_field = 0;
    c->in_url = 1;
    c->parse_error = 0;
    c->parse_reason = NULL;
    c->req_ready = 0;
    c->origin = NULL;
    c->origin_ok = 0;
    memset(&c->req, 0, sizeof(c->req));
    c->req.conn = c;
}

static void log_protocol_error(sg_http_conn_t *c, int status, const char *reason)
{
    if (!c->srv->opts.log_requests_errors) return;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "request rejected");
    sg_logline_str(&l, "request_id", c->req.request_id[0] ? c->req.request_id : NULL);
    sg_logline_int(&l, "status", status);
    sg_logline_str(&l, "reason", reason);
    sg_logline_emit(&l);
}

/* Answers a protocol-level error and closes the connection (the stream cannot be resynced). */
static void reject(sg_http_conn_t *c, int status, const char *type, const char *message)
{
    if (!c->req.request_id[0]) sg_request_id_new(c->req.request_id);
    log_protocol_error(c, status, message);
    c->close_after = 1;
    c->keep_alive = 0;
    c->state = CS_HANDLING;
    sg_http_respond_error(&c->req, status, type, NULL, message);
}

static void finish_request(sg_http_conn_t *c)
{
    c->req.done = 1;
    if (c->close_after || !c->keep_alive || c->srv->stopping) {
        conn_close_graceful(c);
        return;
    }
    c->state = CS_IDLE;
    c->over_high = 0;
    c->last_activity = sg_now_ms();
    /* The request stays readable (status, id, path) until the next message begins. */
    if (c->pending.len && !c->in_process) c->need_process = 1;
    update_io(c);
}

static void on_timer(uv_timer_t *t)
{
    sg_http_conn_t *c = t->data;
    uint64_t now = sg_now_ms();
    const sg_http_opts_t *o = &c->srv->opts;
    if (c->need_process && c->state != CS_HANDLING) {
        process_input(c);
        return;
    }
    switch (c->state) {
    case CS_IDLE:
        if (now - c->last_activity >= o->idle_timeout_ms) {
            conn_close(c);
            return;
        }
        break;
    case CS_HEAD:
    case CS_BODY:
        if (now - c->req_start_ms >= o->header_timeout_ms && c->state == CS_HEAD) {
            reject(c, 408, "invalid_request_error", "request headers not received in time");
            return;
        }
        if (c->state == CS_BODY && now - c->last_activity >= o->idle_timeout_ms) {
            reject(c, 408, "invalid_request_error", "request body not received in time");
            return;
        }
        if (c->state == CS_BODY && now - c->body_start_ms >= o->body_timeout_ms) {
            reject(c, 408, "invalid_request_error",
                   "request body not received in time (limits.body_timeout_ms)");
            return;
        }
        break;
    case CS_HANDLING:
        if (c->queued > 0 && now - c->last_progress >= o->write_stall_timeout_ms) {
            sg_logline_t l;
            sg_logline_begin(&l, SG_LOG_WARN, "client stalled; closing");
            sg_logline_str(&l, "request_id", c->req.request_id);
            sg_logline_int(&l, "stalled_ms", (long long)(now - c->last_progress));
            sg_logline_int(&l, "queued_bytes", (long long)c->queued);
            sg_logline_emit(&l);
            conn_close(c);
            return;
        }
        break;
    case CS_CLOSING:
        return;
    }
    update_io(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    SG_UNUSED(h);
    SG_UNUSED(suggested);
    /* One read buffer for the whole loop: reads are consumed before the next one. */
    static char slab[65536];
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Recomputes reading and the single timer from the connection's state. */
static void update_io(sg_http_conn_t *c)
{
    if (c->state == CS_CLOSING) return;
    const sg_http_opts_t *o = &c->srv->opts;
    int want_read = !c->eof && !c->shutting_down &&
                    !(c->state == CS_HANDLING && c->pending.len >= PENDING_INPUT_MAX);
    if (want_read && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uint64_t now = sg_now_ms(), deadline = 0;
    if (c->need_process && c->state != CS_HANDLING) {
        deadline = now;
    } else if (c->shutting_down) {
        deadline = c->last_progress + o->write_stall_timeout_ms;
    } else {
        switch (c->state) {
        case CS_IDLE:
            deadline = c->last_activity + o->idle_timeout_ms;
            break;
        case CS_HEAD:
            deadline = c->req_start_ms + o->header_timeout_ms;
            break;
        case CS_BODY:
            deadline = c->last_activity + o->idle_timeout_ms;
            if (c->body_start_ms + o->body_timeout_ms < deadline)
                deadline = c->body_start_ms + o->body_timeout_ms;
            break;
        case CS_HANDLING:
            if (c->queued > 0) deadline = c->last_progress + o->write_stall_timeout_ms;
            break;
        case CS_CLOSING:
            break;
        }
    }
    if (deadline) {
        uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
    } else {
        uv_timer_stop(&c->timer);
    }
}

/* ---- parsing ---------------------------------------------------------------------------- */

static int hbuf_add(sg_http_conn_t *c, const char *at, size_t len)
{
    if (sg_buf_append(&c->hbuf, at, len) != 0) {
        c->parse_error = c->in_url ? 414 : 431;
        c->parse_reason = c->in_url ? "request target too long" : "request headers too large";
        return HPE_USER;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    if (c->state == CS_IDLE) {
        reset_request_state(c);
        c->state = CS_HEAD;
        c->req_start_ms = sg_now_ms();
        c->req.start_ns = sg_now_ns();
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sg_http_conn_t *c = p->data;
    int r = hbuf_add(c, at, len);
    c->url_len += len;
    return r;
}

static int on_url_complete(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    c->in_url = 0;
    /* NUL after url; header strings follow. */
    return hbuf_add(c, "", 1);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sg_http_conn_t *c = p->data;
    if (!c->in_field) {
        if (c->n_hdr >= SG_HTTP_MAX_HEADERS) {
            c->parse_error = 431;
            c->parse_reason = "too many request headers";
            return HPE_USER;
        }
        c->in_field = 1;
        c->field_start = c->hbuf.len;
    }
    return hbuf_add(c, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    if (!c->in_field) c->field_start = c->hbuf.len; /* empty name cannot happen; be safe */
    for (size_t i = c->field_start; i < c->hbuf.len; i++) {
        char ch = c->hbuf.data[i];
        if (ch >= 'A' && ch <= 'Z') c->hbuf.data[i] = (char)(ch + 32);
    }
    c->in_field = 0;
    c->name_off[c->n_hdr] = (uint32_t)c->field_start;
    int r = hbuf_add(c, "", 1);
    if (r) return r;
    c->value_off[c->n_hdr] = (uint32_t)c->hbuf.len;
    c->n_hdr++;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    return hbuf_add(p->data, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    return hbuf_add(c, "", 1);
}

static int valid_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SG_HTTP_REQUEST_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':'))
            return 0;
    }
    return 1;
}

static int origin_allowed(const sg_http_opts_t *o, const char *origin)
{
    for (size_t i = 0; i < o->n_cors_origins; i++)
        if (strcmp(o->cors_origins[i], "*") == 0 || strcmp(o->cors_origins[i], origin) == 0)
            return 1;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    sg_http_req_t *r = &c->req;
    const sg_http_opts_t *o = &c->srv->opts;
    c->state = CS_BODY;
    c->body_start_ms = sg_now_ms();
    /* Build the request view. The hbuf will not grow any more for this request, so
     * pointers into it stay valid. */
    char *url = c->hbuf.data;
    char *q = memchr(url, '?', c->url_len);
    if (q) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    r->path = url;
    r->n_headers = c->n_hdr;
    for (size_t i = 0; i < c->n_hdr; i++) {
        r->headers[i].name = c->hbuf.data + c->name_off[i];
        r->headers[i].value = c->hbuf.data + c->value_off[i];
    }
    r->method = p->method;
    r->method_str = llhttp_method_name((llhttp_method_t)p->method);
    const char *rid = sg_http_req_header(r, "x-request-id");
    if (rid && valid_request_id(rid)) {
        sg_strlcpy(r->request_id, sizeof(r->request_id), rid);
    } else {
        sg_request_id_new(r->request_id);
    }
    const char *origin = sg_http_req_header(r, "origin");
    if (origin && origin_allowed(o, origin)) {
        c->origin = (char *)origin;
        c->origin_ok = 1;
    }
    c->keep_alive = llhttp_should_keep_alive(p);
    if (p->upgrade || p->method == HTTP_CONNECT) {
        c->parse_error = 501;
        c->parse_reason = "protocol upgrades and CONNECT are not supported";
        return HPE_USER;
    }
    uint64_t cl = p->content_length;
    int has_cl = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_cl && cl > o->max_body_bytes) {
        c->parse_error = 413;
        c->parse_reason = "request body too large";
        return HPE_USER;
    }
    const char *expect = sg_http_req_header(r, "expect");
    if (expect) {
        if (strlen(expect) == 12 && sg_strncaseeq(expect, "100-continue", 12)) {
            uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
            if (conn_write(c, &b, 1) != 0) return HPE_USER;
        } else {
            c->parse_error = 417;
            c->parse_reason = "unsupported Expect header";
            return HPE_USER;
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sg_http_conn_t *c = p->data;
    if (sg_buf_append(&c->body, at, len) != 0) {
        c->parse_error = 413;
        c->parse_reason = "request body too large";
        return HPE_USER;
    }
    return 0;
}

/* A chunk of a chunked body announces its size first: one that cannot fit is refused now,
 * not after its bytes (or a timeout). */
static int on_chunk_header(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    if (p->content_length > c->srv->opts.max_body_bytes - c->body.len) {
        c->parse_error = 413;
        c->parse_reason = "request body too large";
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    sg_http_conn_t *c = p->data;
    c->req_ready = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* Handles CORS preflight itself; returns 1 when the request was answered. */
static int handle_preflight(sg_http_conn_t *c)
{
    sg_http_req_t *r = &c->req;
    if (r->method != HTTP_OPTIONS) return 0;
    const char *origin = sg_http_req_header(r, "origin");
    const char *acrm = sg_http_req_header(r, "access-control-request-method");
    if (!origin || !acrm) return 0;
    if (!c->origin_ok) {
        sg_http_respond_error(r, 403, "invalid_request_error", "origin_not_allowed",
                              "origin not allowed by CORS configuration");
        return 1;
    }
    const char *acrh = sg_http_req_header(r, "access-control-request-headers");
    char extra[1024];
    snprintf(extra, sizeof(extra),
             "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
             "Access-Control-Allow-Headers: %s\r\n"
             "Access-Control-Max-Age: 600\r\n",
             acrh && strlen(acrh) < 512 && !strpbrk(acrh, "\r\n")
                 ? acrh
                 : "authorization, content-type, x-request-id");
    sg_http_respond(r, 204, NULL, NULL, 0, extra);
    return 1;
}

static void dispatch(sg_http_conn_t *c)
{
    sg_http_req_t *r = &c->req;
    c->state = CS_HANDLING;
    c->req_ready = 0;
    r->body = c->body.data ? c->body.data : "";
    r->body_len = c->body.len;
    if (handle_preflight(c)) return;
    c->srv->on_request(r, c->srv->ud);
}

/* Runs llhttp over data; sets *consumed. Stops after one complete message (paused). */
static void execute(sg_http_conn_t *c, const char *data, size_t len, size_t *consumed)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK) {
        *consumed = len;
        return;
    }
    if (e == HPE_PAUSED) {
        *consumed = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        llhttp_resume(&c->parser);
        return;
    }
    *consumed = len;
    if (!c->parse_error) {
        c->parse_error = 400;
        c->parse_reason = llhttp_get_error_reason(&c->parser);
        if (!c->parse_reason) c->parse_reason = "malformed HTTP request";
    }
}

static void handle_parse_error(sg_http_conn_t *c)
{
    char msg[256];
    if (c->parse_error == 400)
        snprintf(msg, sizeof(msg), "malformed HTTP request: %s", c->parse_reason);
    else
        sg_strlcpy(msg, sizeof(msg), c->parse_reason ? c->parse_reason : "bad request");
    reject(c, c->parse_error, "invalid_request_error", msg);
}

/* Parses data until it is used up or a request is being handled, dispatching each complete
 * request. Returns the bytes used (all of them once the connection is closing). */
static size_t parse_some(sg_http_conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && c->state != CS_CLOSING && c->state != CS_HANDLING) {
        size_t used = 0;
        execute(c, data + off, len - off, &used);
        off += used;
        if (c->state == CS_CLOSING) return len;
        if (c->parse_error) {
            handle_parse_error(c);
            return len;
        }
        if (c->req_ready) dispatch(c);
    }
    return off;
}

/* Parses the buffered (pipelined) input. Runs from the timer, never inside a handler. */
static void process_input(sg_http_conn_t *c)
{
    if (c->in_process) return;
    c->in_process = 1;
    c->need_process = 0;
    while (c->pending.len > 0 && c->state != CS_CLOSING && c->state != CS_HANDLING) {
        size_t used = parse_some(c, c->pending.data, c->pending.len);
        if (c->state == CS_CLOSING) break;
        sg_buf_consume(&c->pending, used);
    }
    c->in_process = 0;
    if (c->state != CS_CLOSING) update_io(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sg_http_conn_t *c = s->data;
    if (c->state == CS_CLOSING) return;
    if (nread < 0) {
        /* EOF or error: the client is gone. A half-close while a response is pending counts
         * as abandonment, as nginx does by default: the upstream work is cancelled. */
        conn_close(c);
        return;
    }
    if (nread == 0) return;
    c->last_activity = sg_now_ms();
    if (c->state == CS_HANDLING || c->pending.len > 0) {
        if (sg_buf_append(&c->pending, buf->base, (size_t)nread) != 0) {
            conn_close(c);
            return;
        }
        if (c->state != CS_HANDLING)
            process_input(c);
        else
            update_io(c);
        return;
    }
    /* Fast path: parse straight from the read buffer; keep only what is left unparsed. */
    c->in_process = 1;
    size_t used = parse_some(c, buf->base, (size_t)nread);
    c->in_process = 0;
    if (c->state == CS_CLOSING) return;
    if (used < (size_t)nread &&
        sg_buf_append(&c->pending, buf->base + used, (size_t)nread - used) != 0) {
        conn_close(c);
        return;
    }
    update_io(c);
}

/* ---- server ----------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *ls, int status)
{
    sg_http_server_t *srv = ls->data;
    if (status < 0 || srv->stopping) return;
    sg_http_conn_t *c = sg_xcalloc(1, sizeof(*c));
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    sg_buf_init(&c->hbuf, srv->opts.max_header_bytes < UINT32_MAX ? srv->opts.max_header_bytes
                                                                  : UINT32_MAX - 1);
    sg_buf_init(&c->body, srv->opts.max_body_bytes);
    sg_buf_init(&c->pending, PENDING_INPUT_MAX + 65536);
    sg_buf_init(&c->cork, CORK_MAX + 64);
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    reset_request_state(c);
    c->state = CS_IDLE;
    c->last_activity = sg_now_ms();
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->n_conns > srv->opts.max_connections) {
#define BUSY_BODY                                                                                  \
    "{\"error\":{\"message\":\"too many connections: the gateway is at capacity; retry "           \
    "shortly\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_overloaded\"}}"
        char busy[512];
        int n = snprintf(busy, sizeof(busy),
                         "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         "Connection: close\r\nRetry-After: 1\r\nContent-Length: %zu\r\n\r\n%s",
                         sizeof(BUSY_BODY) - 1, BUSY_BODY);
        uv_buf_t b = uv_buf_init(busy, (unsigned)n);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (srv->opts.log_requests_errors)
            sg_log(SG_LOG_WARN, "connection refused: %zu connections open (max %zu)",
                   srv->n_conns - 1, srv->opts.max_connections);
        conn_close(c);
        return;
    }
    update_io(c);
}

static void on_failed_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

sg_http_server_t *sg_http_server_new(uv_loop_t *loop, const char *host, int port,
                                     const sg_http_opts_t *opts, sg_http_request_cb on_request,
                                     void *ud)
{
    sg_http_server_t *srv = sg_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->opts = *opts;
    srv->on_request = on_request;
    srv->ud = ud;
    struct sockaddr_storage ss;
    int r;
    if (strchr(host, ':'))
        r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    else
        r = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (r != 0) {
        sg_log(SG_LOG_ERROR, "invalid listen address %s: %s", host, uv_strerror(r));
        free(srv);
        return NULL;
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    r = sg_listener_bind(&srv->listener, (const struct sockaddr *)&ss, opts->reuseport);
    if (r == 0) r = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
    if (r != 0) {
        sg_log(SG_LOG_ERROR, "cannot listen on %s:%d: %s", host, port, uv_strerror(r));
        /* The handle must be closed through the loop; free the server in its callback. */
        srv->stopping = 1;
        uv_close((uv_handle_t *)&srv->listener, on_failed_listener_closed);
        return NULL;
    }
    uv_check_init(loop, &srv->cork_check);
    uv_idle_init(loop, &srv->cork_idle);
    srv->cork_check.data = srv->cork_idle.data = srv;
    srv->cork_handles_open = 2;
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    return srv;
}

int sg_http_server_port(const sg_http_server_t *srv)
{
    return srv->port;
}

void sg_http_server_set_opts(sg_http_server_t *srv, const sg_http_opts_t *opts)
{
    srv->opts = *opts;
}

size_t sg_http_server_conn_count(const sg_http_server_t *srv)
{
    return srv->n_conns;
}

static void maybe_server_closed(sg_http_server_t *srv)
{
    if (srv->stopping && srv->listener_closed && srv->n_conns == 0 && srv->cork_handles_open == 0 &&
        srv->on_closed) {
        sg_http_closed_cb cb = srv->on_closed;
        srv->on_closed = NULL;
        cb(srv, srv->closed_ud);
    }
}

static void on_listener_closed(uv_handle_t *h)
{
    sg_http_server_t *srv = h->data;
    srv->listener_closed = 1;
    maybe_server_closed(srv);
}

static void on_cork_handle_closed(uv_handle_t *h)
{
    sg_http_server_t *srv = h->data;
    srv->cork_handles_open--;
    maybe_server_closed(srv);
}

void sg_http_server_stop(sg_http_server_t *srv, sg_http_closed_cb on_closed, void *ud)
{
    if (srv->stopping) return;
    srv->stopping = 1;
    srv->on_closed = on_closed;
    srv->closed_ud = ud;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    sg_http_conn_t *c = srv->conns;
    /* Corked bytes must reach the connections that stay to finish. */
    while (srv->corked) cork_flush(srv->corked);
    uv_close((uv_handle_t *)&srv->cork_check, on_cork_handle_closed);
    uv_close((uv_handle_t *)&srv->cork_idle, on_cork_handle_closed);
    while (c) {
        sg_http_conn_t *next = c->next;
        if (c->state == CS_IDLE)
            conn_close(c);
        else
            c->close_after = 1;
        c = next;
    }
}

void sg_http_server_close_all(sg_http_server_t *srv)
{
    while (srv->conns) conn_close(srv->conns);
}

void sg_http_server_free(sg_http_server_t *srv)
{
    if (!srv) return;
    SG_ASSERT(srv->n_conns == 0 && srv->listener_closed && srv->cork_handles_open == 0);
    free(srv);
}
