/* The gateway: one loop owning the HTTP server, the upstream multi handle, configuration and
 * catalog. Handlers get it as their context. */
#ifndef SOPHIA_GATEWAY_H
#define SOPHIA_GATEWAY_H

#include <stdint.h>
#include <uv.h>

#include "sophia/egress.h"
#include "sophia/generation.h"
#include "sophia/http.h"

struct sg_record;
struct sg_health;

/* A request in progress that the gateway ends itself when the shutdown grace period is over
 * (embedded in the handler's request object). */
typedef struct sg_active sg_active_t;
struct sg_active {
    sg_active_t *prev, *next;
    /* Ends the request now: answers the client (an error event on a started stream, else a
     * 503), stops upstream work and unregisters. */
    void (*shutdown)(sg_active_t *a);
};

typedef struct sg_gateway {
    uv_loop_t *loop;
    sg_gen_t *gen; /* current configuration generation (requests hold their own reference) */
    sg_http_server_t *http;
    sg_curlm_t *curlm;
    int draining;
    /* counters for /healthz and logs */
    uint64_t requests_total;
    uint64_t chats_active;
    uint64_t reloads_ok, reloads_failed;
    uint64_t upstream_retries;
    sg_active_t *active; /* requests in progress (sg_gateway_track) */
    struct {
        void (*fn)(const struct sg_record *r, void *ud);
        void *ud;
    } observers[16]; /* sg_observe */
    size_t n_observers;
    struct sg_health *health;
    uint64_t fallbacks;       /* attempts moved to another endpoint or model */
    uint64_t streams_active;  /* SSE answers in progress */
    uint64_t fd_exhausted;    /* requests refused: no file descriptor for an upstream socket */
    struct sg_ledger *ledger; /* NULL when "ledger": null */
    struct sg_metrics *metrics;
} sg_gateway_t;

/* Registers / unregisters a request in progress. */
void sg_gateway_track(sg_gateway_t *gw, sg_active_t *a);
void sg_gateway_untrack(sg_gateway_t *gw, sg_active_t *a);
/* Ends every request in progress through its shutdown callback (grace period over). */
void sg_gateway_shutdown_requests(sg_gateway_t *gw);

/* Descriptors kept for everything but client and upstream sockets (the loop, signals, the
 * ledger, logs, health checks). */
#define SG_FD_RESERVE 32
/* The connections the gateway can hold: the configured max_connections, or fewer when the
 * open file limit cannot give each one a client and an upstream socket. */
size_t sg_gateway_max_connections(size_t configured);
/* Fills HTTP server options from a configuration (pointers into cfg are borrowed). */
void sg_gateway_http_opts(const sg_config_t *cfg, sg_http_opts_t *o);

/* Routes one request (method + path) to its handler. */
void sg_router_on_request(sg_http_req_t *req, void *ud);
/* POST /v1/chat/completions (src/api/chat.c). */
void sg_chat_handle(sg_gateway_t *gw, sg_http_req_t *req);
/* POST /v1/embeddings (src/api/embeddings.c). */
void sg_embeddings_handle(sg_gateway_t *gw, sg_http_req_t *req);
/* POST /v1/responses (src/api/responses.c). */
void sg_responses_handle(sg_gateway_t *gw, sg_http_req_t *req);
/* POST /v1/messages, Anthropic's Messages API (src/api/messages.c). */
void sg_messages_handle(sg_gateway_t *gw, sg_http_req_t *req);
/* GET /v1/models (id NULL) and /v1/models/{id} (id URL-encoded) (src/api/models.c). */
void sg_models_handle(sg_gateway_t *gw, sg_http_req_t *req, const char *id);
/* src/admin/status.c: GET /healthz, /readyz, /v1/providers (detail 0) and /admin/providers
 * (detail 1: every endpoint). */
void sg_status_health(sg_gateway_t *gw, sg_http_req_t *req);
void sg_status_ready(sg_gateway_t *gw, sg_http_req_t *req);
/* GET /metrics, the Prometheus text exposition (src/admin/metrics.c). */
void sg_status_metrics(sg_gateway_t *gw, sg_http_req_t *req);
void sg_status_providers(sg_gateway_t *gw, sg_http_req_t *req, int detail);
/* Logs the one line for a request answered synchronously without the chat handler (404,
 * /healthz, …). The request stays readable until the next one on its connection begins. */
void sg_log_simple_request(const sg_http_req_t *req);

#endif
