/* Upstream HTTP client: one curl multi handle driven by the libuv loop (socket callback →
 * uv_poll, timer callback → uv_timer), and exchanges (one upstream request each) with
 * first-byte, idle and total timeouts, pause/resume for backpressure and immediate cancel. */
#ifndef SOPHIA_EGRESS_H
#define SOPHIA_EGRESS_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sg_curlm sg_curlm_t;
typedef struct sg_exchange sg_exchange_t;

/* Outcome of an exchange, passed to on_done. */
typedef enum {
    SG_EX_OK = 0,   /* transfer completed (whatever the HTTP status) */
    SG_EX_CONNECT,  /* could not connect / resolve / TLS handshake failed */
    SG_EX_BROKEN,   /* connection reset or closed early, malformed framing */
    SG_EX_TIMEOUT,  /* connect, first-byte, idle or total timeout */
    SG_EX_ABORTED,  /* the owner asked to stop (on_data returned SG_EX_DATA_ABORT) */
    SG_EX_INTERNAL, /* anything else */
    SG_EX_NO_FDS,   /* no socket: the process is out of file descriptors (EMFILE, ENFILE) */
} sg_ex_result_t;

/* on_data return values */
#define SG_EX_DATA_OK 0
#define SG_EX_DATA_PAUSE 1 /* keep the bytes, redeliver them after sg_exchange_resume */
#define SG_EX_DATA_ABORT 2 /* stop the transfer: on_done follows with SG_EX_ABORTED */

typedef struct sg_exchange_cbs {
    /* Response status line and headers received (final, not 1xx). May be NULL. */
    void (*on_head)(sg_exchange_t *x, long status, void *ud);
    /* Body bytes as they arrive. Returns one of SG_EX_DATA_*. */
    int (*on_data)(sg_exchange_t *x, const char *data, size_t len, void *ud);
    /* The exchange ended; x is freed right after this returns. Not called after cancel. */
    void (*on_done)(sg_exchange_t *x, sg_ex_result_t result, const char *detail, void *ud);
} sg_exchange_cbs_t;

typedef struct sg_exchange_req {
    const char *url;
    const char *method;         /* "POST", "GET" */
    struct curl_slist *headers; /* taken over by the exchange */
    char *body;                 /* taken over by the exchange (free()d); may be NULL */
    size_t body_len;
    int stream; /* the answer is an event stream, held open: a smaller receive buffer */
    uint64_t connect_timeout_ms;
    uint64_t first_byte_timeout_ms; /* from start to the first response byte */
    uint64_t idle_timeout_ms;       /* between body bytes, not counting time paused by us */
    uint64_t total_timeout_ms;
} sg_exchange_req_t;

/* Creates the multi handle on loop. Never NULL (aborts if curl cannot initialise). */
sg_curlm_t *sg_curlm_new(uv_loop_t *loop);
/* Cancels every exchange still running (no callbacks) and frees the multi; the uv handles
 * close through the loop, so run the loop afterwards until it is empty. */
void sg_curlm_free(sg_curlm_t *m);
size_t sg_curlm_active(const sg_curlm_t *m);
/* Multi handles open now (transfers are spread over several; see exchange.c). */
size_t sg_curlm_shards_open(const sg_curlm_t *m);
/* How long an extra multi handle may sit with nothing running before it is closed, with its
 * idle connections (default 5 s). */
void sg_curlm_set_shard_idle_ms(sg_curlm_t *m, uint64_t ms);

/* Starts an exchange. Returns it, or NULL (callbacks never fire then) when curl refuses the
 * request. Callbacks fire from the loop, never from inside this call. */
sg_exchange_t *sg_exchange_start(sg_curlm_t *m, sg_exchange_req_t *req,
                                 const sg_exchange_cbs_t *cbs, void *ud);
/* Stops the exchange now (the upstream connection is closed in this loop iteration) and
 * frees it. No callback fires afterwards. Safe to call from inside its own callbacks. */
void sg_exchange_cancel(sg_exchange_t *x);
/* Resumes delivery after on_data returned SG_EX_DATA_PAUSE. May call on_data before
 * returning. */
void sg_exchange_resume(sg_exchange_t *x);
int sg_exchange_paused(const sg_exchange_t *x);
long sg_exchange_status(const sg_exchange_t *x);
/* A response header's value (case-insensitive name), or NULL. Valid until the exchange ends. */
const char *sg_exchange_header(const sg_exchange_t *x, const char *name);
/* Milliseconds from start to the first response byte (0 if none yet). */
uint64_t sg_exchange_ttfb_ms(const sg_exchange_t *x);

#endif
