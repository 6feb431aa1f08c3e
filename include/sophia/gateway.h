/* The gateway: one loop owning the HTTP server, the upstream multi handle, configuration and
 * catalog. Handlers get it as their context. */
#ifndef SOPHIA_GATEWAY_H
#define SOPHIA_GATEWAY_H

#include <stdint.h>
#include <uv.h>

#include "sophia/egress.h"
#include "sophia/generation.h"
#include "sophia/http.h"

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
} sg_gateway_t;

/* Fills HTTP server options from a configuration (pointers into cfg are borrowed). */
void sg_gateway_http_opts(const sg_config_t *cfg, sg_http_opts_t *o);

/* Routes one request (method + path) to its handler. */
void sg_router_on_request(sg_http_req_t *req, void *ud);
/* POST /v1/chat/completions. */
void sg_chat_handle(sg_gateway_t *gw, sg_http_req_t *req);
/* Logs the one line for a request answered synchronously without the chat handler (404,
 * /healthz, …). The request stays readable until the next one on its connection begins. */
void sg_log_simple_request(const sg_http_req_t *req);

#endif
