/* Router: method + path → handler. Every answer is OpenAI-shaped JSON. */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/log.h"

void sg_log_simple_request(const sg_http_req_t *req)
{
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "request");
    sg_logline_str(&l, "request_id", req->request_id);
    sg_logline_str(&l, "method", req->method_str);
    sg_logline_str(&l, "path", req->path);
    sg_logline_int(&l, "status", req->status);
    sg_logline_num(&l, "latency_ms", (double)(sg_now_ns() - req->start_ns) / 1e6);
    sg_logline_emit(&l);
}

static void respond_json(sg_http_req_t *req, int status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    SG_ASSERT(s != NULL);
    sg_http_respond(req, status, "application/json", s, strlen(s), NULL);
    free(s);
    cJSON_Delete(j);
}

static void handle_models(sg_gateway_t *gw, sg_http_req_t *req)
{
    respond_json(req, 200, sg_catalog_models_json(&gw->gen->catalog));
}

/* Per-provider status: kind, models, credentials and their expiry (never the secrets). */
static cJSON *providers_json(const sg_gen_t *g, int64_t now)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "kind", p->kind);
        cJSON_AddNumberToObject(o, "models", (double)p->n_models);
        const sg_sf_auth_t *a = g->sf_auth[i];
        if (a) {
            cJSON_AddStringToObject(o, "auth", sg_sf_auth_method(a));
            int64_t exp = sg_sf_auth_expires_at(a);
            if (exp) {
                cJSON_AddNumberToObject(o, "token_expires_at", (double)exp);
                cJSON_AddNumberToObject(o, "token_days_to_expiry", (double)(exp - now) / 86400.0);
            } else {
                cJSON_AddNullToObject(o, "token_expires_at");
            }
        } else {
            cJSON_AddStringToObject(o, "auth", p->api_key && p->api_key[0] ? "api_key" : "none");
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static void handle_providers(sg_gateway_t *gw, sg_http_req_t *req)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "generation", (double)gw->gen->id);
    cJSON_AddItemToObject(j, "providers", providers_json(gw->gen, sg_unix_time()));
    respond_json(req, 200, j);
}

/* Prometheus text exposition. */
static void handle_metrics(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_printf(&b,
                  "# TYPE sophia_requests_total counter\nsophia_requests_total %llu\n"
                  "# TYPE sophia_chats_active gauge\nsophia_chats_active %llu\n"
                  "# TYPE sophia_connections gauge\nsophia_connections %zu\n"
                  "# TYPE sophia_upstream_active gauge\nsophia_upstream_active %zu\n"
                  "# TYPE sophia_upstream_retries_total counter\nsophia_upstream_retries_total "
                  "%llu\n"
                  "# TYPE sophia_config_generation gauge\nsophia_config_generation %llu\n"
                  "# TYPE sophia_config_reloads_total counter\n"
                  "sophia_config_reloads_total{result=\"ok\"} %llu\n"
                  "sophia_config_reloads_total{result=\"failed\"} %llu\n",
                  (unsigned long long)gw->requests_total, (unsigned long long)gw->chats_active,
                  sg_http_server_conn_count(gw->http), sg_curlm_active(gw->curlm),
                  (unsigned long long)gw->upstream_retries, (unsigned long long)gw->gen->id,
                  (unsigned long long)gw->reloads_ok, (unsigned long long)gw->reloads_failed);
    sg_buf_append_str(&b, "# HELP sophia_provider_token_expiry_days Days until the provider's "
                          "credential expires (PAT expiry, or the current key-pair JWT).\n"
                          "# TYPE sophia_provider_token_expiry_days gauge\n");
    const sg_gen_t *g = gw->gen;
    int64_t now = sg_unix_time();
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_sf_auth_t *a = g->sf_auth[i];
        int64_t exp = a ? sg_sf_auth_expires_at(a) : 0;
        if (exp)
            sg_buf_printf(
                &b, "sophia_provider_token_expiry_days{provider=\"%s\",auth=\"%s\"} %.3f\n",
                g->cfg.providers[i].name, sg_sf_auth_method(a), (double)(exp - now) / 86400.0);
    }
    sg_http_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len, NULL);
    sg_buf_dispose(&b);
}

static void handle_health(sg_gateway_t *gw, sg_http_req_t *req)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", gw->draining ? "draining" : "ok");
    cJSON_AddNumberToObject(j, "connections", (double)sg_http_server_conn_count(gw->http));
    cJSON_AddNumberToObject(j, "upstream_active", (double)sg_curlm_active(gw->curlm));
    cJSON_AddNumberToObject(j, "chats_active", (double)gw->chats_active);
    cJSON_AddNumberToObject(j, "requests_total", (double)gw->requests_total);
    respond_json(req, gw->draining ? 503 : 200, j);
}

typedef struct route {
    const char *path;
    int method;
    void (*fn)(sg_gateway_t *gw, sg_http_req_t *req);
} route_t;

static void chat(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_chat_handle(gw, req);
}

static const route_t routes[] = {
    {"/v1/chat/completions", HTTP_POST, chat},     {"/chat/completions", HTTP_POST, chat},
    {"/v1/models", HTTP_GET, handle_models},       {"/models", HTTP_GET, handle_models},
    {"/healthz", HTTP_GET, handle_health},         {"/metrics", HTTP_GET, handle_metrics},
    {"/v1/providers", HTTP_GET, handle_providers},
};

void sg_router_on_request(sg_http_req_t *req, void *ud)
{
    sg_gateway_t *gw = ud;
    gw->requests_total++;

    int path_known = 0;
    for (size_t i = 0; i < SG_ARRAY_LEN(routes); i++) {
        if (strcmp(routes[i].path, req->path) != 0) continue;
        path_known = 1;
        int m = req->method;
        if (m == routes[i].method || (m == HTTP_HEAD && routes[i].method == HTTP_GET)) {
            /* The chat handler logs its own richer line when it ends. */
            if (routes[i].fn == chat) {
                sg_chat_handle(gw, req);
                return;
            }
            routes[i].fn(gw, req);
            sg_log_simple_request(req);
            return;
        }
    }
    if (path_known) {
        char extra[128];
        const char *allow = "GET, HEAD, OPTIONS";
        for (size_t i = 0; i < SG_ARRAY_LEN(routes); i++)
            if (strcmp(routes[i].path, req->path) == 0 && routes[i].method == HTTP_POST)
                allow = "POST, OPTIONS";
        if (req->method == HTTP_OPTIONS) {
            snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
            sg_http_respond(req, 204, NULL, NULL, 0, extra);
        } else {
            char msg[160];
            snprintf(msg, sizeof(msg), "method %s not allowed on %s (allowed: %s)", req->method_str,
                     req->path, allow);
            sg_http_respond_error(req, 405, "invalid_request_error", "method_not_allowed", msg);
        }
    } else {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown path %.200s", req->path);
        sg_http_respond_error(req, 404, "invalid_request_error", "not_found", msg);
    }
    sg_log_simple_request(req);
}
