/* What the gateway says about itself: GET /healthz (liveness), GET /readyz (a route can be
 * served), GET /v1/providers (providers and their credentials' state), GET /admin/providers
 * (every endpoint: breaker, latency, errors, in-flight, served models). GET /metrics is
 * src/admin/metrics.c. Never a secret. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/gateway.h"
#include "sophia/redact.h"

static void respond_json(sg_http_req_t *req, int status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    SG_ASSERT(s != NULL);
    sg_http_respond(req, status, "application/json", s, strlen(s), NULL);
    free(s);
    cJSON_Delete(j);
}

/* Per provider: kind, models, credentials and their expiry; with detail, every endpoint. */
static cJSON *providers_json(const sg_gen_t *g, int64_t now, int detail)
{
    cJSON *arr = cJSON_CreateArray();
    uint64_t now_ms = sg_now_ms();
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "kind", p->kind);
        cJSON_AddNumberToObject(o, "models", (double)p->n_models);
        cJSON_AddBoolToObject(o, "discover", p->discover);
        if (p->ops->describe) p->ops->describe(p, g->state[i], now, o);
        if (detail) {
            cJSON *eps = cJSON_AddArrayToObject(o, "endpoints");
            size_t n;
            sg_endpoint_t *const *ep = sg_gen_endpoints(g, p, &n);
            for (size_t j = 0; j < n; j++) {
                cJSON *e = cJSON_CreateObject();
                char url[1024];
                sg_url_redact(ep[j]->base_url, url, sizeof(url));
                cJSON_AddStringToObject(e, "base_url", url);
                cJSON_AddNumberToObject(e, "weight", ep[j]->weight);
                cJSON_AddStringToObject(
                    e, "breaker",
                    sg_breaker_state_name(sg_endpoint_state(ep[j], &g->cfg.breaker, now_ms)));
                cJSON_AddBoolToObject(e, "available",
                                      sg_endpoint_available(ep[j], &g->cfg.breaker, now_ms));
                cJSON_AddStringToObject(e, "health",
                                        ep[j]->health > 0   ? "up"
                                        : ep[j]->health < 0 ? "down"
                                                            : "unknown");
                if (ep[j]->check_error[0])
                    cJSON_AddStringToObject(e, "health_error", ep[j]->check_error);
                if (ep[j]->has_ewma)
                    cJSON_AddNumberToObject(e, "latency_ewma_ms", ep[j]->ewma_ms);
                else
                    cJSON_AddNullToObject(e, "latency_ewma_ms");
                cJSON_AddNumberToObject(e, "error_rate", sg_endpoint_error_rate(ep[j]));
                cJSON_AddNumberToObject(e, "in_flight", ep[j]->inflight);
                cJSON_AddNumberToObject(e, "requests", (double)ep[j]->requests);
                cJSON_AddNumberToObject(e, "failures", (double)ep[j]->failures);
                if (ep[j]->served)
                    cJSON_AddItemToObject(e, "served_models", cJSON_Duplicate(ep[j]->served, 1));
                else
                    cJSON_AddNullToObject(e, "served_models");
                cJSON_AddItemToArray(eps, e);
            }
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

void sg_status_providers(sg_gateway_t *gw, sg_http_req_t *req, int detail)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "generation", (double)gw->gen->id);
    cJSON_AddItemToObject(j, "providers", providers_json(gw->gen, sg_unix_time(), detail));
    respond_json(req, 200, j);
}

void sg_status_health(sg_gateway_t *gw, sg_http_req_t *req)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", gw->draining ? "draining" : "ok");
    cJSON_AddNumberToObject(j, "connections", (double)sg_http_server_conn_count(gw->http));
    cJSON_AddNumberToObject(j, "upstream_active", (double)sg_curlm_active(gw->curlm));
    cJSON_AddNumberToObject(j, "chats_active", (double)gw->chats_active);
    cJSON_AddNumberToObject(j, "requests_total", (double)gw->requests_total);
    respond_json(req, gw->draining ? 503 : 200, j);
}

/* Ready while some endpoint of some provider can take a request. */
void sg_status_ready(sg_gateway_t *gw, sg_http_req_t *req)
{
    const sg_gen_t *g = gw->gen;
    uint64_t now = sg_now_ms();
    cJSON *j = cJSON_CreateObject();
    cJSON *why = cJSON_CreateArray();
    int ready = 0;
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        size_t n;
        sg_endpoint_t *const *ep = sg_gen_endpoints(g, p, &n);
        for (size_t k = 0; k < n; k++) {
            if (sg_endpoint_available(ep[k], &g->cfg.breaker, now)) {
                ready = 1;
                continue;
            }
            char url[1024], line[1400];
            sg_url_redact(ep[k]->base_url, url, sizeof(url));
            snprintf(line, sizeof(line), "%s %s: %s", p->name, url,
                     ep[k]->health < 0 ? ep[k]->check_error : "circuit breaker open");
            cJSON_AddItemToArray(why, cJSON_CreateString(line));
        }
    }
    if (gw->draining) ready = 0;
    cJSON_AddStringToObject(j, "status", ready ? "ready" : "unavailable");
    if (gw->draining)
        cJSON_AddStringToObject(j, "reason", "shutting down");
    else if (!ready && g->cfg.n_providers == 0)
        cJSON_AddStringToObject(j, "reason", "no provider configured");
    else if (!ready)
        cJSON_AddStringToObject(j, "reason", "no endpoint of any provider is available");
    cJSON_AddItemToObject(j, "unavailable", why);
    respond_json(req, ready ? 200 : 503, j);
}
