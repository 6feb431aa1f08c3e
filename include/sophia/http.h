/* HTTP/1.1 server on libuv + llhttp: listener, connections, request parsing with hard limits,
 * keep-alive, pipelining (answered in order), CORS, and response writers (whole bodies and
 * chunked streams) with write-queue watermarks for backpressure.
 *
 * One request per connection is handled at a time; bytes of pipelined requests wait in a
 * bounded buffer. The server owns connections and requests; a handler gets a request and must
 * end it with sg_http_respond() or sg_http_stream_begin()…sg_http_stream_end().
 *
 * When the client goes away first, the handler learns it exactly once, and never from inside
 * a call of its own: either one of its sg_http_* calls on the request returns -1 (then the
 * request is dead and the abort hook will not fire), or, when it makes none, the abort hook
 * fires from a later loop phase (the connection's close callback, still in the same loop
 * iteration). After either, the handler must not touch the request. */
#ifndef SOPHIA_HTTP_H
#define SOPHIA_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sg_http_server sg_http_server_t;
typedef struct sg_http_conn sg_http_conn_t;
typedef struct sg_http_req sg_http_req_t;

typedef struct sg_http_header {
    const char *name; /* lower-cased */
    const char *value;
} sg_http_header_t;

#define SG_HTTP_MAX_HEADERS 100
#define SG_HTTP_REQUEST_ID_MAX 128

/* Called when the client goes away (or the server closes the connection) before the
 * response ended, unless a failed sg_http_* call told the handler first. Never called from
 * inside an sg_http_* call. The request is dead after this returns. */
typedef void (*sg_http_abort_cb)(sg_http_req_t *req, void *ud);
/* Called when bytes queued for the client fall below the low watermark after having been
 * above the high watermark. */
typedef void (*sg_http_drain_cb)(sg_http_req_t *req, void *ud);

struct sg_http_req {
    sg_http_conn_t *conn;
    int method;             /* llhttp_method_t */
    const char *method_str; /* "GET", … */
    const char *path;       /* target up to '?' */
    const char *query;      /* after '?', or "" */
    sg_http_header_t headers[SG_HTTP_MAX_HEADERS];
    size_t n_headers;
    const char *body; /* NUL-terminated; body_len bytes */
    size_t body_len;
    char request_id[SG_HTTP_REQUEST_ID_MAX + 1];
    uint64_t start_ns;      /* first byte of the request seen */
    int status;             /* status sent, 0 until then */
    size_t bytes_sent;      /* body bytes handed to the socket layer */
    const void *client_key; /* the authenticated client key (sg_key_cfg_t, set by the router),
                               NULL when none */
    /* private */
    sg_http_abort_cb abort_cb;
    sg_http_drain_cb drain_cb;
    void *hook_ud;
    int streaming;
    int close_delimited; /* streamed body ends with the connection */
    int done;
};

typedef void (*sg_http_request_cb)(sg_http_req_t *req, void *ud);
/* Called once when the server has stopped and its last connection has closed. */
typedef void (*sg_http_closed_cb)(sg_http_server_t *srv, void *ud);

typedef struct sg_http_opts {
    size_t max_header_bytes;
    size_t max_body_bytes;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t body_timeout_ms; /* from the end of the head to the end of the body */
    uint64_t write_stall_timeout_ms;
    size_t max_connections;
    size_t high_watermark;
    size_t low_watermark;
    char *const *cors_origins; /* borrowed; must outlive the server */
    size_t n_cors_origins;
    int log_requests_errors; /* log protocol-level errors (400/408/413/414/431/503) */
    int reuseport;           /* one of several processes on the port (SO_REUSEPORT) */
} sg_http_opts_t;

/* Fills opts with the defaults documented in sophia/config.h. */
void sg_http_opts_defaults(sg_http_opts_t *opts);

/* Creates a server listening on host:port (port 0 picks a free one; see sg_http_server_port).
 * Returns NULL and logs the reason on failure. on_request is called for each request. */
sg_http_server_t *sg_http_server_new(uv_loop_t *loop, const char *host, int port,
                                     const sg_http_opts_t *opts, sg_http_request_cb on_request,
                                     void *ud);
int sg_http_server_port(const sg_http_server_t *srv);
/* Replaces the limits for connections accepted from now on (and timeouts of existing ones). */
void sg_http_server_set_opts(sg_http_server_t *srv, const sg_http_opts_t *opts);
/* Stops accepting; idle connections close now, busy ones after their current response.
 * on_closed fires once all connections and the listener are closed; afterwards free the
 * server with sg_http_server_free. */
void sg_http_server_stop(sg_http_server_t *srv, sg_http_closed_cb on_closed, void *ud);
/* Closes every connection now (requests in flight are aborted). Only after _stop. */
void sg_http_server_close_all(sg_http_server_t *srv);
void sg_http_server_free(sg_http_server_t *srv);
size_t sg_http_server_conn_count(const sg_http_server_t *srv);

/* Returns the first header with this lower-case name, or NULL. */
const char *sg_http_req_header(const sg_http_req_t *req, const char *lname);
/* Registers the per-request hooks (either may be NULL). */
void sg_http_req_set_hooks(sg_http_req_t *req, sg_http_abort_cb on_abort, sg_http_drain_cb on_drain,
                           void *ud);
/* Bytes queued for the client but not yet accepted by the kernel. */
size_t sg_http_req_queued(const sg_http_req_t *req);
/* 1 when queued bytes are at or above the high watermark (the producer should pause). */
int sg_http_req_congested(const sg_http_req_t *req);

/* Sends a whole response and ends the request. extra_headers: NULL or complete
 * "Name: value\r\n" lines. Returns 0, or -1 when the connection is already gone. */
int sg_http_respond(sg_http_req_t *req, int status, const char *content_type, const char *body,
                    size_t len, const char *extra_headers);
/* Sends a response in OpenAI error shape {"error":{"message","type","code"}}; code may be NULL
 * (then JSON null). */
int sg_http_respond_error(sg_http_req_t *req, int status, const char *type, const char *code,
                          const char *message);
/* The same with extra header lines (NULL or complete "Name: value\r\n" lines). */
int sg_http_respond_error_ex(sg_http_req_t *req, int status, const char *type, const char *code,
                             const char *message, const char *extra_headers);
/* Starts a streamed response (chunked on HTTP/1.1, close-delimited on HTTP/1.0). */
int sg_http_stream_begin(sg_http_req_t *req, int status, const char *content_type,
                         const char *extra_headers);
/* Starts a streamed response whose end is the close of the connection: no chunked framing,
 * no Content-Length, "Connection: close" (RFC 9112 section 6.3). sg_http_stream_end then
 * writes what is queued and closes. For upstream simulations; clients prefer chunked. */
int sg_http_stream_begin_close_delimited(sg_http_req_t *req, int status, const char *content_type,
                                         const char *extra_headers);
/* Queues body bytes of a streamed response. Never blocks; check sg_http_req_congested. */
int sg_http_stream_write(sg_http_req_t *req, const char *data, size_t len);
/* Ends a streamed response and the request, after queuing data (may be NULL) in the same
 * write. */
int sg_http_stream_end(sg_http_req_t *req, const char *data, size_t len);

/* Ends the connection in the middle of the response: bytes already produced are sent, then
 * the connection closes (the client sees a truncated reply). The abort hook does not fire;
 * the request is dead afterwards. */
void sg_http_req_close(sg_http_req_t *req);

/* Standard reason phrase for a status code. */
const char *sg_http_reason(int status);

#endif
