/* curl multi ↔ libuv glue (after curl's multi-uv example, with its gaps closed) and the
 * exchange lifecycle. */
#include "sophia/egress.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/log.h"

#define RESP_HEADERS_MAX 16384
/* Easy handles kept for reuse: curl_easy_reset is cheaper than cleanup + init. */
#define EASY_POOL_MAX 256
/* Transfers are spread over several multi handles ("shards"): libcurl 7.88 walks every
 * connection of a multi handle's cache to the same host when a transfer starts and ends, so
 * with one multi handle the cost of a new stream grows with the number of open streams. A
 * new exchange goes to the first shard with fewer than SHARD_TRANSFERS running, which keeps
 * light traffic on shard 0 (and its warm connections) and bounds each walk. */
#define SHARD_TRANSFERS 128
#define SHARD_MAX 128
/* Each shard's cache: its running transfers plus as many idle connections. */
#define SHARD_MAXCONNECTS (2 * SHARD_TRANSFERS)
/* A shard other than the first with nothing running for this long is cleaned up: its idle
 * connections close and their memory goes back to the system. */
#define SHARD_IDLE_MS 5000
#define STREAM_RECV_BUFFER 4096L

typedef struct shard {
    sg_curlm_t *m;
    CURLM *multi; /* NULL until first used, and again once reaped */
    uv_timer_t timer;
    uv_timer_t reap;
    size_t n_active;
} shard_t;

typedef struct poll_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    sg_curlm_t *m;
    shard_t *s; /* the multi handle the socket's connection belongs to */
    struct poll_ctx *prev, *next;
} poll_ctx_t;

struct sg_curlm {
    uv_loop_t *loop;
    shard_t shards[SHARD_MAX];
    size_t n_shards; /* shards initialised (their timers exist) */
    size_t closing;  /* timers still closing in sg_curlm_free */
    uint64_t shard_idle_ms;
    poll_ctx_t *polls;
    /* Poll handles by socket, kept while curl keeps the connection (also idle in its pool),
     * so reusing a connection costs no handle setup; destroyed when curl closes the socket. */
    poll_ctx_t **by_fd;
    size_t n_by_fd;
    sg_exchange_t *exchanges;
    size_t n_active;
    int in_action; /* inside curl_multi_socket_action of any shard */
    /* Reset easy handles, reused by the next exchanges: [1] for event streams (small receive
     * buffer), [0] for the rest (curl's default), so a handle's buffer size never changes. */
    CURL *idle_easy[2][EASY_POOL_MAX];
    size_t n_idle_easy[2];
};

struct sg_exchange {
    sg_curlm_t *m;
    shard_t *s;
    CURL *easy;
    sg_exchange_t *prev, *next;
    struct curl_slist *headers;
    char *body;
    uv_timer_t timer;
    sg_exchange_cbs_t cbs;
    void *ud;
    sg_buf_t resp_headers; /* "name: value\0" pairs of the final response */
    long status;
    int got_head;
    int paused;
    int in_cb;        /* inside one of curl's callbacks for this handle */
    int cancelled;    /* owner cancelled from inside a callback */
    int socket_errno; /* why the last socket() for this exchange failed, 0 when none */
    int finished;
    int stream; /* which easy pool the handle goes back to */
    uint64_t start_ms, first_byte_ms, last_byte_ms;
    uint64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, total_timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
};

static void check_multi_info(shard_t *s);
static void exchange_free(sg_exchange_t *x);
static void exchange_arm_timer(sg_exchange_t *x);

/* ---- multi glue ------------------------------------------------------------------------- */

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void poll_destroy(poll_ctx_t *p)
{
    sg_curlm_t *m = p->m;
    if ((size_t)p->fd < m->n_by_fd && m->by_fd[p->fd] == p) m->by_fd[p->fd] = NULL;
    if (p->prev)
        p->prev->next = p->next;
    else
        m->polls = p->next;
    if (p->next) p->next->prev = p->prev;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, on_poll_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_ctx_t *p = h->data;
    shard_t *s = p->s;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    s->m->in_action = 1;
    curl_multi_socket_action(s->multi, p->fd, flags, &running);
    s->m->in_action = 0;
    check_multi_info(s);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    SG_UNUSED(easy);
    shard_t *sh = userp;
    sg_curlm_t *m = sh->m;
    poll_ctx_t *p = socketp;
    if (action == CURL_POLL_REMOVE) {
        /* The connection is idle or going away: stop watching, keep the handle until
         * curl closes the socket (on_close_socket). */
        if (p) {
            uv_poll_stop(&p->poll);
            curl_multi_assign(sh->multi, s, NULL);
        }
        return 0;
    }
    if (!p && s >= 0 && (size_t)s < m->n_by_fd) p = m->by_fd[s];
    if (!p) {
        if (s < 0) return -1;
        if ((size_t)s >= m->n_by_fd) {
            size_t n = m->n_by_fd ? m->n_by_fd : 64;
            while (n <= (size_t)s) n *= 2;
            m->by_fd = sg_xrealloc(m->by_fd, n * sizeof(*m->by_fd));
            memset(m->by_fd + m->n_by_fd, 0, (n - m->n_by_fd) * sizeof(*m->by_fd));
            m->n_by_fd = n;
        }
        p = sg_xcalloc(1, sizeof(*p));
        p->fd = s;
        p->m = m;
        p->s = sh;
        if (uv_poll_init_socket(m->loop, &p->poll, s) != 0) {
            free(p);
            return -1;
        }
        p->poll.data = p;
        p->next = m->polls;
        if (m->polls) m->polls->prev = p;
        m->polls = p;
        m->by_fd[s] = p;
    }
    p->s = sh;
    curl_multi_assign(sh->multi, s, p);
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT) events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT) events |= UV_WRITABLE;
    uv_poll_start(&p->poll, events, on_poll);
    return 0;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the poll handle goes first (libuv must stop watching the
 * descriptor before its number can be reused), then the socket. */
static int on_close_socket(void *clientp, curl_socket_t s)
{
    sg_curlm_t *m = clientp;
    if (s >= 0 && (size_t)s < m->n_by_fd && m->by_fd[s]) poll_destroy(m->by_fd[s]);
    return close(s);
}

static void on_multi_timer(uv_timer_t *t)
{
    shard_t *s = t->data;
    int running;
    s->m->in_action = 1;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s->m->in_action = 0;
    check_multi_info(s);
}

/* CURLMOPT_TIMERFUNCTION: never calls curl from here; a 0 timeout runs on the next loop
 * iteration's timer phase. */
static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    SG_UNUSED(multi);
    shard_t *s = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_multi_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void shard_open(shard_t *s)
{
    s->multi = curl_multi_init();
    SG_ASSERT(s->multi != NULL);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    /* Keep idle upstream connections for reuse under load. */
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)SHARD_MAXCONNECTS);
}

/* Closes a shard's multi handle and with it its idle connections (each through
 * on_close_socket). Only with nothing running on it and outside curl's callbacks. */
static void shard_close(shard_t *s)
{
    if (!s->multi) return;
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->reap);
}

static void on_shard_idle(uv_timer_t *t)
{
    shard_t *s = t->data;
    if (s->n_active || s->m->in_action) return;
    shard_close(s);
    /* A burst of streams leaves freed memory scattered over the heap; hand it back. */
    int any = 0;
    for (size_t i = 1; i < s->m->n_shards; i++) any |= s->m->shards[i].multi != NULL;
    if (!any) malloc_trim(0);
}

/* The shard for a new exchange: the first with room, opened (or reopened) on demand. */
static shard_t *shard_pick(sg_curlm_t *m)
{
    shard_t *best = NULL;
    for (size_t i = 0; i < m->n_shards; i++) {
        shard_t *s = &m->shards[i];
        if (s->n_active < SHARD_TRANSFERS) {
            best = s;
            break;
        }
    }
    if (!best && m->n_shards < SHARD_MAX) {
        best = &m->shards[m->n_shards++];
        best->m = m;
        uv_timer_init(m->loop, &best->timer);
        best->timer.data = best;
        uv_timer_init(m->loop, &best->reap);
        best->reap.data = best;
    }
    if (!best) { /* every shard is full: the least loaded */
        best = &m->shards[0];
        for (size_t i = 1; i < m->n_shards; i++)
            if (m->shards[i].n_active < best->n_active) best = &m->shards[i];
    }
    if (!best->multi) shard_open(best);
    uv_timer_stop(&best->reap);
    return best;
}

sg_curlm_t *sg_curlm_new(uv_loop_t *loop)
{
    static int global_done;
    if (!global_done) {
        SG_ASSERT(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
        global_done = 1;
    }
    sg_curlm_t *m = sg_xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->shard_idle_ms = SHARD_IDLE_MS;
    return m;
}

static void on_shard_timer_closed(uv_handle_t *h)
{
    shard_t *s = h->data;
    sg_curlm_t *m = s->m;
    if (--m->closing == 0) free(m);
}

void sg_curlm_free(sg_curlm_t *m)
{
    while (m->exchanges) sg_exchange_cancel(m->exchanges);
    for (int k = 0; k < 2; k++)
        while (m->n_idle_easy[k]) curl_easy_cleanup(m->idle_easy[k][--m->n_idle_easy[k]]);
    for (size_t i = 0; i < m->n_shards; i++) shard_close(&m->shards[i]);
    while (m->polls) poll_destroy(m->polls);
    free(m->by_fd);
    if (m->n_shards == 0) {
        free(m);
        return;
    }
    m->closing = 2 * m->n_shards;
    for (size_t i = 0; i < m->n_shards; i++) {
        uv_close((uv_handle_t *)&m->shards[i].timer, on_shard_timer_closed);
        uv_close((uv_handle_t *)&m->shards[i].reap, on_shard_timer_closed);
    }
}

size_t sg_curlm_active(const sg_curlm_t *m)
{
    return m->n_active;
}

size_t sg_curlm_shards_open(const sg_curlm_t *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_shards; i++) n += m->shards[i].multi != NULL;
    return n;
}

void sg_curlm_set_shard_idle_ms(sg_curlm_t *m, uint64_t ms)
{
    m->shard_idle_ms = ms;
}

/* ---- exchanges -------------------------------------------------------------------------- */

/* Opens the upstream socket as curl would, remembering why it failed: curl reports every
 * failure as "couldn't connect", and EMFILE must not read as an unreachable upstream. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    sg_exchange_t *x = clientp;
    SG_UNUSED(purpose);
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    x->socket_errno = fd < 0 ? errno : 0;
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

static sg_ex_result_t map_curl_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return SG_EX_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return SG_EX_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return SG_EX_TIMEOUT;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return SG_EX_ABORTED;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
        return SG_EX_BROKEN;
    default:
        return SG_EX_INTERNAL;
    }
}

static void mark_first_byte(sg_exchange_t *x)
{
    uint64_t now = sg_now_ms();
    if (!x->first_byte_ms) x->first_byte_ms = now;
    x->last_byte_ms = now;
}

static size_t on_header(char *buf, size_t size, size_t n, void *userp)
{
    sg_exchange_t *x = userp;
    size_t len = size * n;
    if (x->cancelled) return 0;
    mark_first_byte(x);
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new status line (after 1xx, or a redirect): start over. */
        sg_buf_reset(&x->resp_headers);
        return len;
    }
    if (len <= 2 && (len == 0 || buf[0] == '\r' || buf[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !x->got_head) {
            x->got_head = 1;
            x->status = status;
            if (x->cbs.on_head) {
                x->in_cb = 1;
                x->cbs.on_head(x, status, x->ud);
                x->in_cb = 0;
                if (x->cancelled) return 0;
            }
        }
        return len;
    }
    /* Keep "name: value" lines (trimmed) for sg_exchange_header; over the cap they are dropped. */
    size_t l = len;
    while (l > 0 && (buf[l - 1] == '\r' || buf[l - 1] == '\n')) l--;
    if (sg_buf_append(&x->resp_headers, buf, l) == 0) sg_buf_append(&x->resp_headers, "\0", 1);
    return len;
}

static size_t on_write_body(char *buf, size_t size, size_t n, void *userp)
{
    sg_exchange_t *x = userp;
    size_t len = size * n;
    if (x->cancelled) return CURL_WRITEFUNC_ERROR;
    mark_first_byte(x);
    x->in_cb = 1;
    int r = x->cbs.on_data(x, buf, len, x->ud);
    x->in_cb = 0;
    if (x->cancelled || r == SG_EX_DATA_ABORT) return CURL_WRITEFUNC_ERROR;
    if (r == SG_EX_DATA_PAUSE) {
        x->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    return len;
}

static void on_x_timer(uv_timer_t *t);

static void exchange_arm_timer(sg_exchange_t *x)
{
    uint64_t now = sg_now_ms();
    uint64_t deadline = x->start_ms + x->total_timeout_ms;
    if (!x->first_byte_ms) {
        uint64_t d = x->start_ms + x->first_byte_timeout_ms;
        if (d < deadline) deadline = d;
    } else if (!x->paused) {
        uint64_t d = x->last_byte_ms + x->idle_timeout_ms;
        if (d < deadline) deadline = d;
    }
    uv_timer_start(&x->timer, on_x_timer, deadline > now ? deadline - now : 0, 0);
}

static void exchange_unlink(sg_exchange_t *x)
{
    sg_curlm_t *m = x->m;
    if (x->prev)
        x->prev->next = x->next;
    else
        m->exchanges = x->next;
    if (x->next) x->next->prev = x->prev;
    m->n_active--;
    if (--x->s->n_active == 0 && x->s != &m->shards[0])
        uv_timer_start(&x->s->reap, on_shard_idle, m->shard_idle_ms, 0);
}

/* Removes the easy handle and notifies the owner (unless cancelled), then frees. */
static void exchange_finish(sg_exchange_t *x, sg_ex_result_t res, const char *detail)
{
    x->finished = 1;
    exchange_unlink(x);
    curl_multi_remove_handle(x->s->multi, x->easy);
    uv_timer_stop(&x->timer);
    if (!x->cancelled && x->cbs.on_done) x->cbs.on_done(x, res, detail, x->ud);
    exchange_free(x);
}

static void on_x_timer(uv_timer_t *t)
{
    sg_exchange_t *x = t->data;
    if (x->finished) return;
    if (x->cancelled) {
        exchange_finish(x, SG_EX_ABORTED, NULL);
        return;
    }
    /* Which deadline passed, with its setting and value, so the operator knows what to tune. */
    uint64_t now = sg_now_ms();
    char *what = x->errbuf;
    if (now >= x->start_ms + x->total_timeout_ms)
        snprintf(what, sizeof(x->errbuf),
                 "the response took longer than %llu ms in all (upstream.total_timeout_ms)",
                 (unsigned long long)x->total_timeout_ms);
    else if (!x->first_byte_ms && now >= x->start_ms + x->first_byte_timeout_ms)
        snprintf(what, sizeof(x->errbuf),
                 "no response within %llu ms (upstream.first_byte_timeout_ms)",
                 (unsigned long long)x->first_byte_timeout_ms);
    else if (x->first_byte_ms && !x->paused && now >= x->last_byte_ms + x->idle_timeout_ms)
        snprintf(what, sizeof(x->errbuf),
                 "no data for %llu ms in the middle of the response (upstream.idle_timeout_ms)",
                 (unsigned long long)x->idle_timeout_ms);
    else
        what = NULL;
    if (!what) {
        exchange_arm_timer(x);
        return;
    }
    exchange_finish(x, SG_EX_TIMEOUT, what);
}

static void on_x_timer_closed(uv_handle_t *h)
{
    sg_exchange_t *x = h->data;
    sg_buf_dispose(&x->resp_headers);
    free(x);
}

static void exchange_free(sg_exchange_t *x)
{
    sg_curlm_t *m = x->m;
    if (m->n_idle_easy[x->stream] < EASY_POOL_MAX) {
        curl_easy_reset(x->easy);
        m->idle_easy[x->stream][m->n_idle_easy[x->stream]++] = x->easy;
    } else {
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    free(x->body);
    uv_close((uv_handle_t *)&x->timer, on_x_timer_closed);
}

static void check_multi_info(shard_t *s)
{
    CURLMsg *msg;
    int left;
    /* A finished exchange may be the shard's last; the shard is reaped from its own timer
     * only, so s->multi stays valid through this loop. */
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        sg_exchange_t *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        SG_ASSERT(x != NULL);
        sg_ex_result_t res = map_curl_error(rc);
        /* No socket could be made: the process is out of descriptors, not the upstream
         * unreachable (curl reports both as CURLE_COULDNT_CONNECT, without the errno). */
        if (res == SG_EX_CONNECT && (x->socket_errno == EMFILE || x->socket_errno == ENFILE))
            res = SG_EX_NO_FDS;
        const char *detail = rc == CURLE_OK ? NULL
                             : x->errbuf[0] ? x->errbuf
                                            : curl_easy_strerror(rc);
        char hint[CURL_ERROR_SIZE + 160];
        if (rc == CURLE_OPERATION_TIMEDOUT) {
            /* curl's only deadline here is the connect timeout (the others are ours). */
            snprintf(hint, sizeof(hint),
                     "could not connect within %llu ms (%s; "
                     "upstream.connect_timeout_ms)",
                     (unsigned long long)x->connect_timeout_ms, detail);
            detail = hint;
        } else if (rc == CURLE_SSL_CONNECT_ERROR && strstr(detail, "wrong version number")) {
            snprintf(hint, sizeof(hint),
                     "%s: the upstream does not speak TLS on this port; if it "
                     "is plain HTTP, use http:// in its base URL",
                     detail);
            detail = hint;
        }
        exchange_finish(x, res, detail);
    }
}

sg_exchange_t *sg_exchange_start(sg_curlm_t *m, sg_exchange_req_t *req,
                                 const sg_exchange_cbs_t *cbs, void *ud)
{
    sg_exchange_t *x = sg_xcalloc(1, sizeof(*x));
    x->m = m;
    x->s = shard_pick(m);
    x->cbs = *cbs;
    x->ud = ud;
    x->headers = req->headers;
    x->body = req->body;
    req->headers = NULL;
    req->body = NULL;
    sg_buf_init(&x->resp_headers, RESP_HEADERS_MAX);
    x->stream = req->stream ? 1 : 0;
    size_t *n_idle = &m->n_idle_easy[x->stream];
    x->easy = *n_idle ? m->idle_easy[x->stream][--*n_idle] : curl_easy_init();
    SG_ASSERT(x->easy != NULL);
    x->start_ms = sg_now_ms();
    x->connect_timeout_ms = req->connect_timeout_ms ? req->connect_timeout_ms : 5000;
    x->first_byte_timeout_ms = req->first_byte_timeout_ms ? req->first_byte_timeout_ms : 60000;
    x->idle_timeout_ms = req->idle_timeout_ms ? req->idle_timeout_ms : 60000;
    x->total_timeout_ms = req->total_timeout_ms ? req->total_timeout_ms : 600000;
    /* No Expect: 100-continue round trip on upstream POSTs. The User-Agent goes as a header
     * line too: CURLOPT_USERAGENT costs a formatted copy per request inside libcurl. */
    x->headers = curl_slist_append(x->headers, "Expect:");
    x->headers = curl_slist_append(x->headers, "User-Agent: " SG_USER_AGENT);
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, m);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)x->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    /* Bytes are forwarded as they are; no decompression surprises. */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
    /* Events are small and a stream is held open for long: 4 KiB instead of curl's 16 KiB
     * per open stream (the buffer lives as long as the handle). */
    if (x->stream) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, STREAM_RECV_BUFFER);
    if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body ? x->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    }
    uv_timer_init(m->loop, &x->timer);
    x->timer.data = x;
    if (curl_multi_add_handle(x->s->multi, e) != CURLM_OK) {
        if (x->s->n_active == 0 && x->s != &m->shards[0])
            uv_timer_start(&x->s->reap, on_shard_idle, m->shard_idle_ms, 0);
        curl_easy_cleanup(x->easy);
        curl_slist_free_all(x->headers);
        free(x->body);
        x->easy = NULL;
        x->headers = NULL;
        x->body = NULL;
        uv_close((uv_handle_t *)&x->timer, on_x_timer_closed);
        return NULL;
    }
    x->next = m->exchanges;
    if (m->exchanges) m->exchanges->prev = x;
    m->exchanges = x;
    m->n_active++;
    x->s->n_active++;
    exchange_arm_timer(x);
    return x;
}

void sg_exchange_cancel(sg_exchange_t *x)
{
    if (x->finished || x->cancelled) return;
    x->cancelled = 1;
    if (x->in_cb || x->m->in_action) {
        /* curl forbids removing a handle from inside its callbacks: the callback returns
         * an error instead, curl stops the transfer, and check_multi_info frees it without
         * telling the owner; if curl does not call back first (another handle's callback,
         * or a paused transfer), the timer removes it on the next loop iteration. */
        uv_timer_start(&x->timer, on_x_timer, 0, 0);
        return;
    }
    exchange_finish(x, SG_EX_ABORTED, NULL);
}

void sg_exchange_resume(sg_exchange_t *x)
{
    if (x->finished || x->cancelled || !x->paused) return;
    x->paused = 0;
    /* Time spent paused by us does not count against the idle timeout. */
    x->last_byte_ms = sg_now_ms();
    exchange_arm_timer(x);
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

int sg_exchange_paused(const sg_exchange_t *x)
{
    return x->paused;
}

long sg_exchange_status(const sg_exchange_t *x)
{
    return x->status;
}

const char *sg_exchange_header(const sg_exchange_t *x, const char *name)
{
    size_t nl = strlen(name);
    const char *p = x->resp_headers.data, *end = p + x->resp_headers.len;
    while (p && p < end) {
        size_t l = strlen(p);
        if (l > nl && p[nl] == ':' && sg_strncaseeq(p, name, nl)) {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            return v;
        }
        p += l + 1;
    }
    return NULL;
}

uint64_t sg_exchange_ttfb_ms(const sg_exchange_t *x)
{
    return x->first_byte_ms ? x->first_byte_ms - x->start_ms : 0;
}
