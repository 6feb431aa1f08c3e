/* Router: method + path → handler. Every answer is OpenAI-shaped JSON. The handlers live in
 * src/api/ (the client protocols) and src/admin/ (what the gateway says about itself).
 *
 * Each route has an access level: the client routes need a client key (when keys are
 * configured; src/policy/keys.c), every path under /admin/ needs an admin key (checked before
 * anything else, so an unknown admin path tells nothing without one), and the probes
 * (/healthz, /readyz, /metrics) are open. CORS preflights and OPTIONS need no key. */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/json.h"
#include "sophia/ledger.h"
#include "sophia/log.h"

void sg_log_simple_request(const sg_http_req_t *req)
{
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "request");
    sg_logline_str(&l, "request_id", req->request_id);
    sg_logline_str(&l, "method", req->method_str);
    sg_logline_str(&l, "path", req->path);
    sg_logline_int(&l, "status", req->status);
    if (req->client_key) sg_logline_str(&l, "key", ((const sg_key_cfg_t *)req->client_key)->name);
    sg_logline_num(&l, "latency_ms", (double)(sg_now_ns() - req->start_ns) / 1e6);
    sg_logline_emit(&l);
}

static void models(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_models_handle(gw, req, NULL);
}

static void providers(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_status_providers(gw, req, 0);
}

static void admin_providers(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_status_providers(gw, req, 1);
}

typedef enum {
    OPEN,   /* no key */
    CLIENT, /* a client key, when keys are configured */
    ADMIN,  /* an admin key (every /admin/ path: checked before routing) */
} access_t;

typedef struct route {
    const char *path;
    int method;
    void (*fn)(sg_gateway_t *gw, sg_http_req_t *req);
    int logs_itself; /* the handler writes its own richer log line */
    access_t access;
} route_t;

static const route_t routes[] = {
    {"/v1/chat/completions", HTTP_POST, sg_chat_handle, 1, CLIENT},
    {"/chat/completions", HTTP_POST, sg_chat_handle, 1, CLIENT},
    {"/v1/embeddings", HTTP_POST, sg_embeddings_handle, 1, CLIENT},
    {"/embeddings", HTTP_POST, sg_embeddings_handle, 1, CLIENT},
    {"/v1/responses", HTTP_POST, sg_responses_handle, 1, CLIENT},
    {"/responses", HTTP_POST, sg_responses_handle, 1, CLIENT},
    {"/v1/messages", HTTP_POST, sg_messages_handle, 1, CLIENT},
    {"/v1/models", HTTP_GET, models, 0, CLIENT},
    {"/models", HTTP_GET, models, 0, CLIENT},
    {"/healthz", HTTP_GET, sg_status_health, 0, OPEN},
    {"/readyz", HTTP_GET, sg_status_ready, 0, OPEN},
    {"/metrics", HTTP_GET, sg_status_metrics, 0, OPEN},
    {"/v1/providers", HTTP_GET, providers, 0, CLIENT},
    {"/admin/providers", HTTP_GET, admin_providers, 0, ADMIN},
    {"/admin/usage", HTTP_GET, sg_usage_handle, 1, ADMIN},
};

#define MODELS_PREFIX "/v1/models/"
#define ADMIN_PREFIX "/admin/"

/* Checks the key a route needs. Returns 0 (req->client_key set for a client route), or -1
 * after answering the error and logging the request. */
static int authorize(sg_gateway_t *gw, sg_http_req_t *req, access_t level)
{
    if (level == OPEN) return 0;
    const sg_access_cfg_t *a = gw->gen->cfg.access;
    sg_error_t e;
    int rc;
    if (level == ADMIN) {
        rc = sg_keys_admin(a, req, &e);
    } else {
        const sg_key_cfg_t *key = NULL;
        rc = sg_keys_authenticate(a, req, &key, &e);
        req->client_key = key;
    }
    if (rc == 0) return 0;
    sg_http_respond_error(req, e.status, e.type, e.code[0] ? e.code : NULL, e.message);
    sg_log_simple_request(req);
    return -1;
}

static void method_not_allowed(sg_http_req_t *req, const char *allow)
{
    if (req->method == HTTP_OPTIONS) {
        char extra[128];
        snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
        sg_http_respond(req, 204, NULL, NULL, 0, extra);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "method %s not allowed on %.*s (allowed: %s)", req->method_str,
             (int)sg_utf8_cut(req->path, strnlen(req->path, 160)), req->path, allow);
    sg_http_respond_error(req, 405, "invalid_request_error", "method_not_allowed", msg);
}

void sg_router_on_request(sg_http_req_t *req, void *ud)
{
    sg_gateway_t *gw = ud;
    gw->requests_total++;
    int get = req->method == HTTP_GET || req->method == HTTP_HEAD;
    req->client_key = NULL;

    if (req->method != HTTP_OPTIONS &&
        (strncmp(req->path, ADMIN_PREFIX, strlen(ADMIN_PREFIX)) == 0 ||
         strcmp(req->path, "/admin") == 0) &&
        authorize(gw, req, ADMIN) != 0)
        return;

    int path_known = 0;
    for (size_t i = 0; i < SG_ARRAY_LEN(routes); i++) {
        if (strcmp(routes[i].path, req->path) != 0) continue;
        path_known = 1;
        if (req->method == routes[i].method || (get && routes[i].method == HTTP_GET)) {
            if (routes[i].access == CLIENT && authorize(gw, req, CLIENT) != 0) return;
            routes[i].fn(gw, req);
            if (!routes[i].logs_itself) sg_log_simple_request(req);
            return;
        }
    }
    if (!path_known && strncmp(req->path, MODELS_PREFIX, strlen(MODELS_PREFIX)) == 0 &&
        req->path[strlen(MODELS_PREFIX)]) {
        if (get) {
            if (authorize(gw, req, CLIENT) != 0) return;
            sg_models_handle(gw, req, req->path + strlen(MODELS_PREFIX));
        } else
            method_not_allowed(req, "GET, HEAD, OPTIONS");
        sg_log_simple_request(req);
        return;
    }
    if (path_known) {
        const char *allow = "GET, HEAD, OPTIONS";
        for (size_t i = 0; i < SG_ARRAY_LEN(routes); i++)
            if (strcmp(routes[i].path, req->path) == 0 && routes[i].method == HTTP_POST)
                allow = "POST, OPTIONS";
        method_not_allowed(req, allow);
    } else {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown path %.*s",
                 (int)sg_utf8_cut(req->path, strnlen(req->path, 200)), req->path);
        sg_http_respond_error(req, 404, "invalid_request_error", "not_found", msg);
    }
    sg_log_simple_request(req);
}
