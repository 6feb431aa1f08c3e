/* Unit tests of the hard limits: bounded buffers (src/core/buf.c) and the HTTP server's
 * request limits, timeouts, connection cap, pipelining and write backpressure
 * (src/ingress/http.c), driven in-process: the server runs on a uv loop on the main thread
 * and a plain blocking socket client runs in a pthread. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/http.h"

/* ==== sg_buf_t ============================================================================ */

static void fill(char *p, size_t n, char ch)
{
    memset(p, ch, n);
}

static void test_buf_append_exact_cap(void **state)
{
    (void)state;
    sg_buf_t b;
    sg_buf_init(&b, 100);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 100);
    char a[100], z[100];
    fill(a, sizeof(a), 'a');
    fill(z, sizeof(z), 'z');
    assert_int_equal(sg_buf_append(&b, a, 60), 0);
    assert_int_equal(sg_buf_append(&b, z, 40), 0);
    assert_int_equal(b.len, 100);
    assert_true(b.cap >= 101);
    assert_int_equal(b.data[100], '\0');
    assert_memory_equal(b.data, a, 60);
    assert_memory_equal(b.data + 60, z, 40);

    /* One byte more: refused, nothing changes. */
    char *data = b.data;
    size_t cap = b.cap;
    assert_int_equal(sg_buf_append(&b, "x", 1), SG_ERR_TOO_LARGE);
    assert_int_equal(sg_buf_append_str(&b, "x"), SG_ERR_TOO_LARGE);
    assert_int_equal(sg_buf_append(&b, a, 100), SG_ERR_TOO_LARGE);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.len, 100);
    assert_int_equal(b.max, 100);
    assert_int_equal(b.data[100], '\0');
    assert_memory_equal(b.data, a, 60);
    assert_memory_equal(b.data + 60, z, 40);

    /* Zero bytes always fit. */
    assert_int_equal(sg_buf_append(&b, "", 0), 0);
    assert_int_equal(sg_buf_append_str(&b, ""), 0);
    assert_int_equal(b.len, 100);
    sg_buf_dispose(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    /* A single append larger than the cap on a fresh buffer fails and allocates nothing. */
    sg_buf_init(&b, 10);
    assert_int_equal(sg_buf_append(&b, a, 11), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    assert_int_equal(sg_buf_append(&b, a, 10), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(b.data[10], '\0');
    sg_buf_dispose(&b);

    /* Many small appends up to a large cap. */
    sg_buf_init(&b, 5000);
    for (int i = 0; i < 5000; i++) assert_int_equal(sg_buf_append(&b, "q", 1), 0);
    assert_int_equal(sg_buf_append(&b, "q", 1), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 5000);
    assert_int_equal(strlen(b.data), 5000);
    sg_buf_dispose(&b);
}

static void test_buf_printf_cap(void **state)
{
    (void)state;
    sg_buf_t b;
    sg_buf_init(&b, 10);
    assert_int_equal(sg_buf_printf(&b, "%d", 12345), 0);
    assert_int_equal(sg_buf_printf(&b, "%s", "678901"), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_int_equal(sg_buf_printf(&b, "%s", "67890"), 0);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "1234567890");
    assert_int_equal(sg_buf_printf(&b, "%c", 'x'), SG_ERR_TOO_LARGE);
    assert_int_equal(sg_buf_printf(&b, "%s", ""), 0);
    assert_string_equal(b.data, "1234567890");
    sg_buf_dispose(&b);

    /* Long outputs (past any small stack buffer an implementation may use). */
    char s[1001];
    fill(s, 1000, 'L');
    s[1000] = '\0';
    sg_buf_init(&b, 1000);
    assert_int_equal(sg_buf_printf(&b, "%.600s", s), 0);
    assert_int_equal(b.len, 600);
    char *data = b.data;
    assert_int_equal(sg_buf_printf(&b, "%.401s", s), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 600);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.data[600], '\0');
    assert_int_equal(strlen(b.data), 600);
    assert_int_equal(sg_buf_printf(&b, "%.400s", s), 0);
    assert_int_equal(b.len, 1000);
    assert_int_equal(strlen(b.data), 1000);
    assert_memory_equal(b.data, s, 1000);
    sg_buf_dispose(&b);

    /* Outputs of exactly 255, 256 and 257 bytes, to the exact cap. */
    for (size_t n = 255; n <= 257; n++) {
        sg_buf_init(&b, n);
        assert_int_equal(sg_buf_printf(&b, "%.*s", (int)n + 1, s), SG_ERR_TOO_LARGE);
        assert_int_equal(b.len, 0);
        assert_int_equal(sg_buf_printf(&b, "%.*s", (int)n, s), 0);
        assert_int_equal(b.len, n);
        assert_int_equal(b.data[n], '\0');
        assert_int_equal(sg_buf_printf(&b, "%s", "x"), SG_ERR_TOO_LARGE);
        assert_int_equal(b.len, n);
        sg_buf_dispose(&b);
    }
}

static void test_buf_consume_reset_steal(void **state)
{
    (void)state;
    sg_buf_t b;
    sg_buf_init(&b, 11);
    assert_int_equal(sg_buf_append_str(&b, "hello world"), 0);
    sg_buf_consume(&b, 0);
    assert_string_equal(b.data, "hello world");
    sg_buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "world");
    /* Consumed bytes free room under the cap again. */
    assert_int_equal(sg_buf_append_str(&b, "!!!!!!"), 0);
    assert_string_equal(b.data, "world!!!!!!");
    assert_int_equal(sg_buf_append_str(&b, "?"), SG_ERR_TOO_LARGE);
    sg_buf_consume(&b, b.len);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");

    /* reset keeps the storage and the cap. */
    assert_int_equal(sg_buf_append_str(&b, "abc"), 0);
    char *data = b.data;
    size_t cap = b.cap;
    sg_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "");
    assert_int_equal(sg_buf_append_str(&b, "0123456789a"), 0);
    assert_int_equal(sg_buf_append_str(&b, "b"), SG_ERR_TOO_LARGE);

    /* steal hands over a NUL-terminated copy and leaves an empty, reusable buffer. */
    size_t len = 0;
    char *p = sg_buf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 11);
    assert_string_equal(p, "0123456789a");
    free(p);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 11);
    assert_int_equal(sg_buf_append_str(&b, "0123456789a"), 0);
    assert_int_equal(sg_buf_append_str(&b, "b"), SG_ERR_TOO_LARGE);
    p = sg_buf_steal(&b, NULL);
    assert_string_equal(p, "0123456789a");
    free(p);

    /* steal of a never-used buffer: never NULL, empty string. */
    sg_buf_init(&b, 100);
    len = 99;
    p = sg_buf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
    sg_buf_dispose(&b);

    /* reset/consume on a never-allocated buffer are harmless. */
    sg_buf_init(&b, 4);
    sg_buf_reset(&b);
    sg_buf_consume(&b, 0);
    assert_int_equal(b.len, 0);
    sg_buf_dispose(&b);
    sg_buf_dispose(&b); /* dispose twice is fine */
}

static void test_buf_max_zero(void **state)
{
    (void)state;
    sg_buf_t b;
    sg_buf_init(&b, 0);
    assert_int_equal(sg_buf_append(&b, "", 0), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(sg_buf_append(&b, "x", 1), SG_ERR_TOO_LARGE);
    assert_int_equal(sg_buf_append_str(&b, "x"), SG_ERR_TOO_LARGE);
    assert_int_equal(sg_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(sg_buf_printf(&b, "%d", 7), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 0);
    if (b.data) assert_int_equal(b.data[0], '\0');
    sg_buf_reset(&b);
    sg_buf_consume(&b, 0);
    size_t len = 5;
    char *p = sg_buf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
    assert_int_equal(sg_buf_append(&b, "y", 1), SG_ERR_TOO_LARGE);
    sg_buf_dispose(&b);
}

/* ==== HTTP server limits ================================================================== */

#define MAX_HEADER 1024
#define MAX_BODY 2048
#define HEADER_TIMEOUT 200
#define IDLE_TIMEOUT 300
#define STALL_TIMEOUT 300
#define MAX_CONNS 2
#define HIGH_WM 4096
#define LOW_WM 1024

#define CHUNK 8192 /* default stream write size */
#define CHUNK_MAX 65536
#define STREAM_TOTAL (1024 * 1024)
#define NCONN 6
#define RESP_CAP 16384
#define CLIENT_TIMEOUT_MS 2000

enum { END_NONE, END_EOF, END_RESET, END_TIMEOUT, END_ERROR, END_DONE, END_FULL };

/* What a client read on one connection. */
typedef struct conn_res {
    char data[RESP_CAP]; /* NUL-terminated */
    size_t len;
    int end; /* END_*: how reading stopped */
    long ms; /* case-specific elapsed time */
} conn_res_t;

typedef struct harness harness_t;
typedef void (*client_fn)(harness_t *h);

struct harness {
    uv_loop_t loop;
    uv_async_t done;
    uv_timer_t work;  /* producer of the "async" stream */
    uv_timer_t defer; /* deferred responses */
    sg_http_server_t *srv;
    int port;
    int closed_calls;
    client_fn client;
    pthread_t thr;

    /* written by the client thread, read after join */
    conn_res_t res[NCONN];
    long val[8];

    /* stream handler state (loop thread) */
    sg_http_req_t *sreq;
    int async;
    size_t chunk; /* bytes per stream write */
    size_t written;
    size_t max_queued;
    int congested_seen; /* times the producer paused */
    int drains;
    int aborts;
    int ended;
    int mismatch;    /* congested() disagreed with queued >= high watermark */
    int write_fails; /* stream_write returned non-zero */
    uint64_t start_ms, abort_ms;
    atomic_int aborted_flag;

    /* deferred request (loop thread) */
    sg_http_req_t *dreq;
    int requests;
};

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- server side (loop thread) ---- */

static void stream_pump(harness_t *h)
{
    static char chunk[CHUNK_MAX];
    while (h->sreq && !h->ended && h->written < STREAM_TOTAL) {
        sg_http_req_t *req = h->sreq;
        if (sg_http_req_congested(req)) {
            h->congested_seen++;
            return;
        }
        size_t n = STREAM_TOTAL - h->written;
        if (n > h->chunk) n = h->chunk;
        for (size_t i = 0; i < n; i++) chunk[i] = (char)('a' + (h->written + i) % 26);
        if (sg_http_stream_write(req, chunk, n) != 0) {
            h->write_fails++;
            return;
        }
        h->written += n;
        size_t q = sg_http_req_queued(req);
        if (q > h->max_queued) h->max_queued = q;
        if ((q >= HIGH_WM) != (sg_http_req_congested(req) != 0)) h->mismatch++;
    }
    if (h->sreq && !h->ended && h->written == STREAM_TOTAL) {
        sg_http_req_t *req = h->sreq;
        h->sreq = NULL;
        h->ended = 1;
        sg_http_stream_end(req, NULL, 0);
    }
}

static void on_work(uv_timer_t *t)
{
    stream_pump(t->data);
}

static void on_stream_drain(sg_http_req_t *req, void *ud)
{
    harness_t *h = ud;
    (void)req;
    h->drains++;
    if (h->async)
        uv_timer_start(&h->work, on_work, 0, 0);
    else
        stream_pump(h);
}

static void on_stream_abort(sg_http_req_t *req, void *ud)
{
    harness_t *h = ud;
    (void)req;
    h->aborts++;
    h->abort_ms = sg_now_ms();
    h->sreq = NULL;
    uv_timer_stop(&h->work);
    atomic_store(&h->aborted_flag, 1);
}

static void respond_ok(sg_http_req_t *req)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "ok %s %zu", req->path, req->body_len);
    sg_http_respond(req, 200, "text/plain", body, (size_t)n, NULL);
}

static void on_defer(uv_timer_t *t)
{
    harness_t *h = t->data;
    sg_http_req_t *req = h->dreq;
    h->dreq = NULL;
    if (req) respond_ok(req);
}

static void on_defer_abort(sg_http_req_t *req, void *ud)
{
    harness_t *h = ud;
    (void)req;
    h->dreq = NULL;
    uv_timer_stop(&h->defer);
}

static void on_request(sg_http_req_t *req, void *ud)
{
    harness_t *h = ud;
    h->requests++;
    if (strcmp(req->path, "/stream") == 0 || strcmp(req->path, "/stream-async") == 0) {
        h->async = strcmp(req->path, "/stream-async") == 0;
        h->chunk = CHUNK;
        if (strncmp(req->query, "chunk=", 6) == 0) h->chunk = (size_t)atoi(req->query + 6);
        assert_true(h->chunk > 0 && h->chunk <= CHUNK_MAX);
        h->sreq = req;
        h->start_ms = sg_now_ms();
        sg_http_req_set_hooks(req, on_stream_abort, on_stream_drain, h);
        assert_int_equal(sg_http_stream_begin(req, 200, "text/plain", NULL), 0);
        if (h->async)
            uv_timer_start(&h->work, on_work, 1, 0); /* produce outside any server callback */
        else
            stream_pump(h);
        return;
    }
    if (strncmp(req->path, "/defer", 6) == 0) {
        h->dreq = req;
        sg_http_req_set_hooks(req, on_defer_abort, NULL, h);
        uv_timer_start(&h->defer, on_defer, 20, 0);
        return;
    }
    respond_ok(req);
}

static void on_server_closed(sg_http_server_t *srv, void *ud)
{
    harness_t *h = ud;
    (void)srv;
    h->closed_calls++;
}

/* The client thread is done: stop the server and close every handle so uv_run returns. */
static void on_client_done(uv_async_t *a)
{
    harness_t *h = a->data;
    sg_http_server_stop(h->srv, on_server_closed, h);
    sg_http_server_close_all(h->srv);
    uv_close((uv_handle_t *)&h->done, NULL);
    uv_close((uv_handle_t *)&h->work, NULL);
    uv_close((uv_handle_t *)&h->defer, NULL);
}

static void *client_main(void *arg)
{
    harness_t *h = arg;
    h->client(h);
    uv_async_send(&h->done);
    return NULL;
}

static void limit_opts(sg_http_opts_t *o)
{
    sg_http_opts_defaults(o);
    o->max_header_bytes = MAX_HEADER;
    o->max_body_bytes = MAX_BODY;
    o->header_timeout_ms = HEADER_TIMEOUT;
    o->idle_timeout_ms = IDLE_TIMEOUT;
    o->max_connections = MAX_CONNS;
    o->write_stall_timeout_ms = STALL_TIMEOUT;
    o->high_watermark = HIGH_WM;
    o->low_watermark = LOW_WM;
    o->log_requests_errors = 0;
}

/* Loopback sockets start with send buffers of megabytes, enough to swallow a whole test
 * stream: shrink the listener's (accepted sockets inherit it) so backpressure shows. */
static void shrink_sndbuf(uv_handle_t *hd, void *arg)
{
    (void)arg;
    if (hd->type != UV_TCP) return;
    int v = 4096;
    assert_int_equal(uv_send_buffer_size(hd, &v), 0);
}

static harness_t *g_harness; /* the last case's, freed by the next one or at the end */

static int free_harness(void **state)
{
    (void)state;
    free(g_harness);
    g_harness = NULL;
    return 0;
}

/* Runs one case: server on a fresh loop, client in a thread, then a full shutdown that must
 * leave no handle behind. The caller checks h (owned by g_harness). */
static harness_t *run_case(client_fn client)
{
    free_harness(NULL);
    harness_t *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    g_harness = h;
    atomic_init(&h->aborted_flag, 0);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    sg_http_opts_t o;
    limit_opts(&o);
    h->srv = sg_http_server_new(&h->loop, "127.0.0.1", 0, &o, on_request, h);
    assert_non_null(h->srv);
    h->port = sg_http_server_port(h->srv);
    uv_walk(&h->loop, shrink_sndbuf, NULL); /* before any other TCP handle exists */
    assert_true(h->port > 0);
    assert_int_equal(uv_async_init(&h->loop, &h->done, on_client_done), 0);
    h->done.data = h;
    uv_timer_init(&h->loop, &h->work);
    h->work.data = h;
    uv_timer_init(&h->loop, &h->defer);
    h->defer.data = h;
    h->client = client;
    assert_int_equal(pthread_create(&h->thr, NULL, client_main, h), 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    pthread_join(h->thr, NULL);
    assert_int_equal(h->closed_calls, 1);
    assert_int_equal(sg_http_server_conn_count(h->srv), 0);
    sg_http_server_free(h->srv);
    h->srv = NULL;
    assert_int_equal(uv_loop_close(&h->loop), 0);
    return h;
}

/* ---- client side (client thread) ---- */

static int cli_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct timeval tv = {CLIENT_TIMEOUT_MS / 1000, (CLIENT_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int cli_send(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cli_send_str(int fd, const char *s)
{
    return cli_send(fd, s, strlen(s));
}

/* One parsed response (fixed-length bodies only). */
typedef struct parsed {
    int status;
    const char *body;
    size_t body_len;
    const char *head;
    size_t head_len;
} parsed_t;

/* Parses the complete responses at the start of d (1xx included). Returns how many. */
static size_t parse_responses(const char *d, size_t n, parsed_t *out, size_t max)
{
    size_t pos = 0, k = 0;
    while (k < max && pos < n) {
        const char *end = memmem(d + pos, n - pos, "\r\n\r\n", 4);
        if (!end || n - pos < 12 || strncmp(d + pos, "HTTP/1.", 7) != 0) break;
        size_t hlen = (size_t)(end - (d + pos)) + 4;
        parsed_t p;
        p.status = atoi(d + pos + 9);
        p.head = d + pos;
        p.head_len = hlen;
        p.body = d + pos + hlen;
        p.body_len = 0;
        if (p.status >= 200) {
            char head[4096];
            size_t hl = hlen < sizeof(head) - 1 ? hlen : sizeof(head) - 1;
            memcpy(head, d + pos, hl);
            head[hl] = '\0';
            const char *cl = strcasestr(head, "\r\ncontent-length:");
            if (!cl) break;
            p.body_len = (size_t)strtoul(cl + 17, NULL, 10);
        }
        if (pos + hlen + p.body_len > n) break;
        out[k++] = p;
        pos += hlen + p.body_len;
    }
    return k;
}

static size_t count_final(const conn_res_t *r)
{
    parsed_t p[16];
    size_t n = parse_responses(r->data, r->len, p, 16), f = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i].status >= 200) f++;
    return f;
}

/* Reads into r until the peer closes, a timeout, or (want > 0) want final responses have
 * arrived complete. */
static void cli_read(int fd, conn_res_t *r, size_t want)
{
    for (;;) {
        if (want && count_final(r) >= want) {
            r->end = END_DONE;
            return;
        }
        if (r->len >= RESP_CAP - 1) {
            r->end = END_FULL;
            return;
        }
        ssize_t n = recv(fd, r->data + r->len, RESP_CAP - 1 - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
            r->data[r->len] = '\0';
            continue;
        }
        if (n == 0) {
            r->end = END_EOF;
            return;
        }
        if (errno == EINTR) continue;
        r->end = errno == EAGAIN || errno == EWOULDBLOCK ? END_TIMEOUT
                 : errno == ECONNRESET                   ? END_RESET
                                                         : END_ERROR;
        return;
    }
}

/* Connects, sends req, reads until close (want 0) or want responses; closes. */
static void cli_exchange(harness_t *h, conn_res_t *r, const char *req, size_t len, size_t want)
{
    int fd = cli_connect(h->port, 0);
    if (fd < 0) {
        r->end = END_ERROR;
        return;
    }
    long t0 = mono_ms();
    if (cli_send(fd, req, len) != 0) r->end = END_ERROR;
    cli_read(fd, r, want);
    r->ms = mono_ms() - t0;
    close(fd);
}

static char *repeat(char ch, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) abort();
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* ---- assertions on what a client saw ---- */

static int closed(const conn_res_t *r)
{
    return r->end == END_EOF || r->end == END_RESET;
}

/* Exactly one response with this status, then the connection closed. */
static void assert_rejected(const conn_res_t *r, int status)
{
    parsed_t p[4];
    size_t n = parse_responses(r->data, r->len, p, 4);
    if (n != 1 || p[0].status != status || !closed(r))
        print_error("expected one %d then close; got end=%d len=%zu:\n%s\n", status, r->end, r->len,
                    r->data);
    assert_int_equal(n, 1);
    assert_int_equal(p[0].status, status);
    assert_true(closed(r));
    assert_non_null(strstr(r->data, "Connection: close\r\n"));
    assert_non_null(strstr(r->data, "\"error\""));
    /* Nothing after the response. */
    assert_int_equal(p[0].head_len + p[0].body_len, r->len);
}

static void assert_ok_body(const parsed_t *p, const char *body)
{
    assert_int_equal(p->status, 200);
    assert_int_equal(p->body_len, strlen(body));
    assert_memory_equal(p->body, body, p->body_len);
}

/* ---- case: header limits ---- */

static void cl_headers(harness_t *h)
{
    char req[8192];
    char *big = repeat('a', 2000);
    /* 0: one oversize header */
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
    cli_exchange(h, &h->res[0], req, (size_t)n, 0);
    /* 1: oversize request target */
    n = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", big);
    cli_exchange(h, &h->res[1], req, (size_t)n, 0);
    /* 2: headers under the limit are fine */
    n = snprintf(req, sizeof(req), "GET /small HTTP/1.1\r\nHost: x\r\nX-Mid: %.600s\r\n\r\n", big);
    cli_exchange(h, &h->res[2], req, (size_t)n, 1);
    /* 3: more than SG_HTTP_MAX_HEADERS headers, small in bytes */
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < SG_HTTP_MAX_HEADERS + 1; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "h%d: 1\r\n", i);
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    cli_exchange(h, &h->res[3], req, (size_t)n, 0);
    /* 4: oversize headers split over several sends, the limit hit mid-stream */
    int fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        cli_send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\nX-A: ");
        for (int i = 0; i < 4; i++) {
            sleep_ms(5);
            cli_send(fd, big, 400);
        }
        cli_send_str(fd, "\r\n\r\n");
        cli_read(fd, &h->res[4], 0);
        close(fd);
    }
    free(big);
}

static void test_http_header_limits(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_headers);
    assert_rejected(&h->res[0], 431);
    assert_rejected(&h->res[1], 414);
    parsed_t p[2];
    assert_int_equal(parse_responses(h->res[2].data, h->res[2].len, p, 2), 1);
    assert_ok_body(&p[0], "ok /small 0");
    assert_rejected(&h->res[3], 431);
    assert_rejected(&h->res[4], 431);
    assert_int_equal(h->requests, 1);
}

/* ---- case: body limits ---- */

static void cl_body(harness_t *h)
{
    char req[8192];
    char *body = repeat('b', 4096);
    /* 0: Content-Length over the cap, headers only: refused before any body is read */
    const char *r0 = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n";
    cli_exchange(h, &h->res[0], r0, strlen(r0), 0);
    /* 1: same with Expect: 100-continue: no interim 100, a final 413 */
    const char *r1 = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n"
                     "Expect: 100-continue\r\n\r\n";
    cli_exchange(h, &h->res[1], r1, strlen(r1), 0);
    /* 2: Content-Length exactly at the cap is accepted */
    int n =
        snprintf(req, sizeof(req), "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%.*s",
                 MAX_BODY, MAX_BODY, body);
    cli_exchange(h, &h->res[2], req, (size_t)n, 1);
    /* 3: Expect: 100-continue under the cap: 100 Continue, then the body, then 200 */
    int fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        cli_send_str(fd, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                         "Expect: 100-continue\r\n\r\n");
        conn_res_t *r = &h->res[3];
        while (r->len < 25) {
            ssize_t k = recv(fd, r->data + r->len, 25 - r->len, 0);
            if (k <= 0) break;
            r->len += (size_t)k;
        }
        cli_send_str(fd, "0123456789");
        cli_read(fd, r, 1);
        close(fd);
    }
    /* 4: Content-Length over the cap with the body sent along */
    n = snprintf(req, sizeof(req), "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%.*s",
                 MAX_BODY + 1, MAX_BODY + 1, body);
    cli_exchange(h, &h->res[4], req, (size_t)n, 0);
    free(body);
}

static void test_http_body_limit_content_length(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_body);
    assert_rejected(&h->res[0], 413);
    assert_rejected(&h->res[1], 413);
    assert_null(strstr(h->res[1].data, "100 Continue"));
    parsed_t p[4];
    assert_int_equal(parse_responses(h->res[2].data, h->res[2].len, p, 4), 1);
    assert_ok_body(&p[0], "ok /up 2048");
    assert_int_equal(parse_responses(h->res[3].data, h->res[3].len, p, 4), 2);
    assert_int_equal(p[0].status, 100);
    assert_int_equal(strncmp(h->res[3].data, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0);
    assert_ok_body(&p[1], "ok /up 10");
    assert_rejected(&h->res[4], 413);
    assert_int_equal(h->requests, 2);
}

static void cl_chunked(harness_t *h)
{
    char req[8192];
    char *body = repeat('c', 1024);
    /* 0: three chunks of 1000 bytes: the cap is crossed in the third */
    int n = snprintf(req, sizeof(req),
                     "POST /up HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "3e8\r\n%.1000s\r\n", body);
    n += snprintf(req + n, sizeof(req) - (size_t)n, "0\r\n\r\n");
    cli_exchange(h, &h->res[0], req, (size_t)n, 0);
    /* 1: two chunks of 1024: exactly at the cap */
    n = snprintf(req, sizeof(req),
                 "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "400\r\n%s\r\n400\r\n%s\r\n0\r\n\r\n",
                 body, body);
    cli_exchange(h, &h->res[1], req, (size_t)n, 1);
    /* 2: one chunk whose declared size is over the cap, body trickled */
    int fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        cli_send_str(fd, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "1000\r\n");
        for (int i = 0; i < 4 && cli_send(fd, body, 1024) == 0; i++) sleep_ms(5);
        cli_read(fd, &h->res[2], 0);
        close(fd);
    }
    free(body);
}

static void test_http_body_limit_chunked(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_chunked);
    assert_rejected(&h->res[0], 413);
    parsed_t p[2];
    assert_int_equal(parse_responses(h->res[1].data, h->res[1].len, p, 2), 1);
    assert_ok_body(&p[0], "ok /up 2048");
    assert_rejected(&h->res[2], 413);
    assert_int_equal(h->requests, 1);
}

/* ---- case: header and body timeouts ---- */

static void cl_slow(harness_t *h)
{
    /* 0: headers never finish */
    const char *part = "GET / HTTP/1.1\r\nHost: x\r\n";
    cli_exchange(h, &h->res[0], part, strlen(part), 0);
    /* 1: headers trickled: activity must not extend the header deadline */
    int fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        conn_res_t *r = &h->res[1];
        long t0 = mono_ms();
        cli_send_str(fd, "GET / HTTP/1.1\r\n");
        r->ms = -1;
        for (int i = 0; i < 25; i++) {
            sleep_ms(40);
            ssize_t k = recv(fd, r->data, RESP_CAP - 1, MSG_DONTWAIT);
            if (k >= 0) {
                r->ms = mono_ms() - t0;
                r->len = (size_t)k;
                r->data[r->len] = '\0';
                break;
            }
            cli_send_str(fd, "X-T: 1\r\n");
        }
        if (r->ms < 0) r->ms = mono_ms() - t0;
        cli_read(fd, r, 0);
        close(fd);
    }
    /* 2: body never finishes: 408 after the idle timeout */
    const char *partial = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";
    cli_exchange(h, &h->res[2], partial, strlen(partial), 0);
}

static void test_http_timeouts_408(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_slow);
    assert_rejected(&h->res[0], 408);
    assert_true(h->res[0].ms >= HEADER_TIMEOUT - 10);
    assert_true(h->res[0].ms < HEADER_TIMEOUT + 800);
    assert_rejected(&h->res[1], 408);
    if (h->res[1].ms >= HEADER_TIMEOUT + 300)
        print_error("trickle 408 after %ld ms\n", h->res[1].ms);
    assert_true(h->res[1].ms >= HEADER_TIMEOUT - 10);
    assert_true(h->res[1].ms < HEADER_TIMEOUT + 300);
    assert_rejected(&h->res[2], 408);
    assert_true(h->res[2].ms >= IDLE_TIMEOUT - 10);
    assert_true(h->res[2].ms < IDLE_TIMEOUT + 800);
    assert_int_equal(h->requests, 0);
}

/* ---- case: idle keep-alive ---- */

static void cl_idle(harness_t *h)
{
    /* 0: one request, then idle on the kept-alive connection */
    int fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        conn_res_t *r = &h->res[0];
        cli_send_str(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        cli_read(fd, r, 1);
        long t0 = mono_ms();
        h->val[0] = r->end;
        cli_read(fd, r, 0);
        r->ms = mono_ms() - t0;
        close(fd);
    }
    /* 1: a connection that never sends a byte */
    cli_exchange(h, &h->res[1], "", 0, 0);
    /* 2: keep-alive still works before the idle timeout */
    fd = cli_connect(h->port, 0);
    if (fd >= 0) {
        conn_res_t *r = &h->res[2];
        cli_send_str(fd, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        cli_read(fd, r, 1);
        sleep_ms(IDLE_TIMEOUT / 2);
        cli_send_str(fd, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
        cli_read(fd, r, 2);
        close(fd);
    }
}

static void test_http_idle_timeout(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_idle);
    parsed_t p[4];
    assert_int_equal(h->val[0], END_DONE);
    assert_int_equal(parse_responses(h->res[0].data, h->res[0].len, p, 4), 1);
    assert_ok_body(&p[0], "ok /a 0");
    assert_null(strstr(h->res[0].data, "Connection: close"));
    assert_int_equal(h->res[0].end, END_EOF);
    assert_true(h->res[0].ms >= IDLE_TIMEOUT - 60);
    assert_true(h->res[0].ms < IDLE_TIMEOUT + 800);

    assert_int_equal(h->res[1].end, END_EOF);
    assert_int_equal(h->res[1].len, 0);
    assert_true(h->res[1].ms >= IDLE_TIMEOUT - 10);
    assert_true(h->res[1].ms < IDLE_TIMEOUT + 800);

    assert_int_equal(h->res[2].end, END_DONE);
    assert_int_equal(parse_responses(h->res[2].data, h->res[2].len, p, 4), 2);
    assert_ok_body(&p[0], "ok /b 0");
    assert_ok_body(&p[1], "ok /c 0");
}

/* ---- case: connection cap ---- */

static void cl_maxconn(harness_t *h)
{
    int a = cli_connect(h->port, 0);
    int b = cli_connect(h->port, 0);
    sleep_ms(30);
    /* 0: the third connection is refused with 503 */
    cli_exchange(h, &h->res[0], "GET /c HTTP/1.1\r\nHost: x\r\n\r\n", 28, 0);
    /* 1: the first two still work */
    if (a >= 0) {
        cli_send_str(a, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        cli_read(a, &h->res[1], 1);
    }
    if (b >= 0) {
        cli_send_str(b, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        cli_read(b, &h->res[2], 1);
    }
    /* 3: once one closes, a new connection is served */
    if (a >= 0) close(a);
    sleep_ms(30);
    cli_exchange(h, &h->res[3], "GET /d HTTP/1.1\r\nHost: x\r\n\r\n", 28, 1);
    h->val[0] = a >= 0 && b >= 0;
    if (b >= 0) close(b);
}

static void test_http_max_connections_503(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_maxconn);
    assert_true(h->val[0]);
    parsed_t p[2];
    const conn_res_t *r0 = &h->res[0];
    assert_int_equal(strncmp(r0->data, "HTTP/1.1 503 ", 13), 0);
    /* The declared Content-Length must match the body sent before the close. */
    const char *hend = strstr(r0->data, "\r\n\r\n");
    const char *cl = strcasestr(r0->data, "\r\nContent-Length:");
    assert_non_null(hend);
    assert_non_null(cl);
    size_t declared = (size_t)strtoul(cl + 17, NULL, 10);
    size_t actual = r0->len - (size_t)(hend + 4 - r0->data);
    if (declared != actual)
        print_error("503: Content-Length %zu but %zu body bytes before close\n", declared, actual);
    assert_int_equal(declared, actual);
    assert_int_equal(parse_responses(r0->data, r0->len, p, 2), 1);
    assert_int_equal(p[0].status, 503);
    assert_true(closed(&h->res[0]));
    assert_non_null(strstr(h->res[0].data, "Connection: close\r\n"));
    assert_non_null(strstr(h->res[0].data, "server_overloaded"));
    assert_int_equal(p[0].head_len + p[0].body_len, h->res[0].len);
    assert_int_equal(parse_responses(h->res[1].data, h->res[1].len, p, 2), 1);
    assert_ok_body(&p[0], "ok /a 0");
    assert_int_equal(parse_responses(h->res[2].data, h->res[2].len, p, 2), 1);
    assert_ok_body(&p[0], "ok /b 0");
    assert_int_equal(parse_responses(h->res[3].data, h->res[3].len, p, 2), 1);
    assert_ok_body(&p[0], "ok /d 0");
    assert_int_equal(h->requests, 3);
}

/* ---- case: pipelining ---- */

static void cl_pipeline(harness_t *h)
{
    /* 0: three requests in one write, answered synchronously */
    const char *three = "GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
                        "GET /p3 HTTP/1.1\r\nHost: x\r\n\r\n";
    cli_exchange(h, &h->res[0], three, strlen(three), 3);
    /* 1: two requests in one write, answered later by the handler */
    const char *two = "GET /defer1 HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /defer2 HTTP/1.1\r\nHost: x\r\n\r\n";
    cli_exchange(h, &h->res[1], two, strlen(two), 2);
    /* 2: a pair whose second request ends in Connection: close: two responses, then EOF */
    const char *pair = "GET /q1 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /defer-q2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    cli_exchange(h, &h->res[2], pair, strlen(pair), 0);
}

static void test_http_pipelining(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_pipeline);
    parsed_t p[4];
    assert_int_equal(h->res[0].end, END_DONE);
    assert_int_equal(parse_responses(h->res[0].data, h->res[0].len, p, 4), 3);
    assert_ok_body(&p[0], "ok /p1 0");
    assert_ok_body(&p[1], "ok /p2 3");
    assert_ok_body(&p[2], "ok /p3 0");
    assert_int_equal(h->res[1].end, END_DONE);
    assert_int_equal(parse_responses(h->res[1].data, h->res[1].len, p, 4), 2);
    assert_ok_body(&p[0], "ok /defer1 0");
    assert_ok_body(&p[1], "ok /defer2 0");
    assert_int_equal(h->res[2].end, END_EOF);
    assert_int_equal(parse_responses(h->res[2].data, h->res[2].len, p, 4), 2);
    assert_ok_body(&p[0], "ok /q1 0");
    assert_ok_body(&p[1], "ok /defer-q2 0");
    assert_int_equal(p[1].head_len + p[1].body_len + (size_t)(p[1].head - h->res[2].data),
                     h->res[2].len);
    assert_int_equal(h->requests, 7);
}

/* ---- case: write backpressure and stalled clients ---- */

/* Client that asks for a big stream and never reads; waits for the server's abort hook, then
 * drains what the kernel buffered to check the reply is a truncated 200. */
static void cl_stall_common(harness_t *h, const char *path)
{
    int fd = cli_connect(h->port, 4096);
    if (fd < 0) return;
    char req[128];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    long t0 = mono_ms();
    cli_send(fd, req, (size_t)n);
    h->val[0] = 0;
    while (mono_ms() - t0 < 1500) {
        if (atomic_load(&h->aborted_flag)) {
            h->val[0] = 1;
            break;
        }
        sleep_ms(5);
    }
    h->val[1] = mono_ms() - t0;
    /* Read all that is left; the server has closed (or the timeout cuts it short). */
    size_t cap = 2 * STREAM_TOTAL, len = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    int end = END_NONE;
    for (;;) {
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k > 0) {
            len += (size_t)k;
            if (len == cap) {
                end = END_FULL;
                break;
            }
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        end = k == 0                                    ? END_EOF
              : errno == EAGAIN || errno == EWOULDBLOCK ? END_TIMEOUT
              : errno == ECONNRESET                     ? END_RESET
                                                        : END_ERROR;
        break;
    }
    h->val[2] = (long)len;
    h->val[3] = end;
    h->val[4] = len >= 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0;
    h->val[5] = len >= 7 && memcmp(buf + len - 7, "\r\n0\r\n\r\n", 7) == 0;
    free(buf);
    close(fd);
}

static void cl_stall(harness_t *h)
{
    cl_stall_common(h, "/stream");
}

static void cl_stall_async_5000(harness_t *h)
{
    cl_stall_common(h, "/stream-async?chunk=5000");
}

static void cl_stall_async_20000(harness_t *h)
{
    cl_stall_common(h, "/stream-async?chunk=20000");
}

static void assert_stalled(harness_t *h)
{
    if (h->aborts != 1)
        print_error("abort hook calls: %d (written %zu, max queued %zu, congested %d, drains "
                    "%d, client waited %ld ms)\n",
                    h->aborts, h->written, h->max_queued, h->congested_seen, h->drains, h->val[1]);
    assert_int_equal(h->aborts, 1);
    /* The producer hit the high watermark and kept the queue bounded. */
    assert_true(h->congested_seen >= 1);
    assert_int_equal(h->mismatch, 0);
    assert_true(h->max_queued >= HIGH_WM);
    assert_true(h->max_queued < HIGH_WM + h->chunk + 64);
    assert_true(h->written < STREAM_TOTAL);
    assert_int_equal(h->ended, 0);
    /* The connection was closed for stalling, with the abort hook, after the timeout. */
    assert_int_equal(h->val[0], 1);
    assert_true(h->abort_ms - h->start_ms >= STALL_TIMEOUT - 10);
    assert_true(h->abort_ms - h->start_ms < STALL_TIMEOUT + 1000);
    /* The client got the start of a 200 and no terminating chunk, then the close. */
    assert_true(h->val[4]);
    assert_false(h->val[5]);
    assert_true(h->val[3] == END_EOF || h->val[3] == END_RESET);
    assert_true((size_t)h->val[2] < STREAM_TOTAL);
}

static void test_http_stream_stall_closes(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_stall);
    assert_int_equal(h->async, 0);
    assert_stalled(h);
}

/* Same, with the producer writing from its own timer (as an upstream proxy does) instead of
 * inside the server's request callback, in writes larger than any output coalescing. */
static void test_http_stream_stall_closes_async_producer(void **state)
{
    (void)state;
    client_fn clients[] = {cl_stall_async_5000, cl_stall_async_20000};
    size_t chunks[] = {5000, 20000};
    for (size_t i = 0; i < 2; i++) {
        harness_t *h = run_case(clients[i]);
        assert_int_equal(h->async, 1);
        assert_int_equal(h->chunk, chunks[i]);
        assert_stalled(h);
    }
}

/* Decodes a chunked body checking the 'a'..'z' pattern; returns its length or -1. */
static long decode_chunked(const char *d, size_t n)
{
    const char *end = memmem(d, n, "\r\n\r\n", 4);
    if (!end) return -1;
    size_t pos = (size_t)(end - d) + 4;
    long total = 0;
    for (;;) {
        char *e = NULL;
        unsigned long sz = strtoul(d + pos, &e, 16);
        if (!e || e[0] != '\r' || e[1] != '\n') return -1;
        pos = (size_t)(e - d) + 2;
        if (sz == 0) return pos + 2 == n && memcmp(d + pos, "\r\n", 2) == 0 ? total : -1;
        if (pos + sz + 2 > n) return -1;
        for (size_t i = 0; i < sz; i++)
            if (d[pos + i] != (char)('a' + ((size_t)total + i) % 26)) return -1;
        total += (long)sz;
        pos += sz;
        if (memcmp(d + pos, "\r\n", 2) != 0) return -1;
        pos += 2;
    }
}

/* A client with a small receive buffer that reads everything: the producer pauses at the high
 * watermark, resumes on the drain hook, and the whole body arrives intact. */
static void cl_drain(harness_t *h)
{
    int fd = cli_connect(h->port, 4096);
    if (fd < 0) return;
    cli_send_str(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t cap = 2 * STREAM_TOTAL, len = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    int end = END_NONE;
    int reads = 0;
    while (len < cap) {
        ssize_t k = recv(fd, buf + len, cap - len < 4096 ? cap - len : 4096, 0);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            end = k == 0 ? END_EOF : END_ERROR;
            break;
        }
        len += (size_t)k;
        /* Slow down a little at first so the queue certainly builds up. */
        if (++reads < 20) sleep_ms(2);
        if (len >= 7 && memcmp(buf + len - 7, "\r\n0\r\n\r\n", 7) == 0) {
            end = END_DONE;
            break;
        }
    }
    h->val[0] = end;
    h->val[1] = len >= 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0;
    h->val[2] = end == END_DONE ? decode_chunked(buf, len) : -1;
    free(buf);
    close(fd);
}

static void test_http_stream_backpressure_drain(void **state)
{
    (void)state;
    harness_t *h = run_case(cl_drain);
    assert_int_equal(h->val[0], END_DONE);
    assert_true(h->val[1]);
    assert_int_equal(h->val[2], STREAM_TOTAL);
    assert_int_equal(h->written, STREAM_TOTAL);
    assert_int_equal(h->ended, 1);
    assert_int_equal(h->aborts, 0);
    assert_int_equal(h->write_fails, 0);
    assert_int_equal(h->mismatch, 0);
    /* Paused at least once, and every pause ended with a drain. */
    assert_true(h->congested_seen >= 1);
    assert_int_equal(h->drains, h->congested_seen);
    assert_true(h->max_queued >= HIGH_WM);
    assert_true(h->max_queued < HIGH_WM + h->chunk + 64);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_exact_cap),
        cmocka_unit_test(test_buf_printf_cap),
        cmocka_unit_test(test_buf_consume_reset_steal),
        cmocka_unit_test(test_buf_max_zero),
        cmocka_unit_test(test_http_header_limits),
        cmocka_unit_test(test_http_body_limit_content_length),
        cmocka_unit_test(test_http_body_limit_chunked),
        cmocka_unit_test(test_http_timeouts_408),
        cmocka_unit_test(test_http_idle_timeout),
        cmocka_unit_test(test_http_max_connections_503),
        cmocka_unit_test(test_http_pipelining),
        cmocka_unit_test(test_http_stream_stall_closes),
        cmocka_unit_test(test_http_stream_stall_closes_async_producer),
        cmocka_unit_test(test_http_stream_backpressure_drain),
    };
    return cmocka_run_group_tests(tests, NULL, free_harness);
}
