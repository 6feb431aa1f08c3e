/* Router: method + path → handler. Every answer is OpenAI-shaped JSON. */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    respond_json(req, 200, sg_catalog_models_json(&gw->catalog));
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
    {"/v1/chat/completions", HTTP_POST, chat}, {"/chat/completions", HTTP_POST, chat},
    {"/v1/models", HTTP_GET, handle_models},   {"/models", HTTP_GET, handle_models},
    {"/healthz", HTTP_GET, handle_health},
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
