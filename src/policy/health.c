/* Active health checks and model discovery (see sophia/health.h). */
#include "sophia/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/log.h"
#include "sophia/provider.h"

#define TICK_MS 500
#define PROBE_BODY_MAX (1024 * 1024)

struct sg_health {
    sg_gateway_t *gw;
    uv_timer_t timer;
    void (*on_ready)(void *ud);
    void *ready_ud;
    uint64_t started_ms;
    int ready_sent;
    int stopping;
    struct probe *probes; /* running */
};

typedef struct probe {
    sg_health_t *h; /* NULL once the checker stopped */
    struct probe *next, *prev;
    sg_endpoint_t *ep;
    sg_gen_t *gen; /* keeps the provider's settings and state alive */
    const sg_provider_cfg_t *provider;
    sg_exchange_t *x;
    long status;
    sg_buf_t body;
    char url[1024];
} probe_t;

static void probe_unlink(probe_t *pr)
{
    if (!pr->h) return;
    if (pr->prev)
        pr->prev->next = pr->next;
    else
        pr->h->probes = pr->next;
    if (pr->next) pr->next->prev = pr->prev;
}

static void probe_free(probe_t *pr)
{
    probe_unlink(pr);
    pr->ep->probing = 0;
    sg_endpoint_reap(pr->ep);
    sg_gen_unref(pr->gen);
    sg_buf_dispose(&pr->body);
    free(pr);
}

/* Records a probe's result on its endpoint, logging changes of health. */
static void set_health(sg_endpoint_t *ep, int up, const char *why)
{
    uint64_t now = sg_now_ms();
    int was = ep->health;
    ep->health = up ? 1 : -1;
    ep->checked_ms = now;
    sg_strlcpy(ep->check_error, sizeof(ep->check_error), up ? "" : why);
    if (was == ep->health) return;
    if (!up || was < 0) {
        sg_logline_t l;
        sg_logline_begin(&l, up ? SG_LOG_INFO : SG_LOG_WARN,
                         up ? "endpoint healthy again" : "endpoint failed its health check");
        sg_logline_str(&l, "provider", ep->provider);
        sg_logline_str(&l, "endpoint", ep->base_url);
        if (!up) sg_logline_str(&l, "error", why);
        sg_logline_emit(&l);
    }
}

/* A configured model the endpoint does not list is probably misnamed (a vLLM server serves
 * "meta-llama/Llama-3.1-8B-Instruct", not the retired hosted name): say what it serves, once
 * per list that changed. */
static void warn_unserved(const probe_t *pr, const cJSON *ids)
{
    const sg_provider_cfg_t *p = pr->provider;
    if (p->ops->builtin_serves) return; /* a built-in catalog, not the operator's list */
    for (size_t i = 0; i < p->n_models; i++) {
        const char *want = p->models[i].upstream_id ? p->models[i].upstream_id : p->models[i].id;
        int found = 0;
        const cJSON *id;
        cJSON_ArrayForEach(id, ids) found |= strcmp(id->valuestring, want) == 0;
        if (found) continue;
        char *served = cJSON_PrintUnformatted(ids);
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_WARN, "configured model not served by the endpoint");
        sg_logline_str(&l, "provider", p->name);
        sg_logline_str(&l, "endpoint", pr->ep->base_url);
        sg_logline_str(&l, "model", p->models[i].id);
        sg_logline_str(&l, "upstream_id", want);
        sg_logline_str(&l, "served", served);
        sg_logline_emit(&l);
        free(served);
    }
}

static void on_probe_head(sg_exchange_t *x, long status, void *ud)
{
    SG_UNUSED(x);
    ((probe_t *)ud)->status = status;
}

static int on_probe_data(sg_exchange_t *x, const char *data, size_t len, void *ud)
{
    SG_UNUSED(x);
    probe_t *pr = ud;
    if (sg_buf_append(&pr->body, data, len) != 0) return SG_EX_DATA_ABORT;
    return SG_EX_DATA_OK;
}

static void on_probe_done(sg_exchange_t *x, sg_ex_result_t res, const char *detail, void *ud)
{
    SG_UNUSED(x);
    probe_t *pr = ud;
    pr->x = NULL;
    sg_endpoint_t *ep = pr->ep;
    char why[200];
    if (res != SG_EX_OK && !(res == SG_EX_ABORTED && pr->status >= 200 && pr->status < 300)) {
        sg_strlcpy(why, sizeof(why), detail ? detail : "no answer");
        sg_gen_redact(pr->gen, NULL, why, sizeof(why));
        set_health(ep, 0, why);
    } else if (pr->status >= 500) {
        snprintf(why, sizeof(why), "the model list answered HTTP %ld", pr->status);
        set_health(ep, 0, why);
    } else {
        set_health(ep, 1, "");
        cJSON *ids =
            pr->status >= 200 && pr->status < 300 && pr->provider->ops->probe_models
                ? pr->provider->ops->probe_models(pr->body.data ? pr->body.data : "", pr->body.len)
                : NULL;
        if (ids) {
            if (!ep->served || !cJSON_Compare(ep->served, ids, 1)) warn_unserved(pr, ids);
            cJSON_Delete(ep->served);
            ep->served = ids;
            ep->served_at_ms = sg_now_ms();
        }
    }
    probe_free(pr);
}

static const sg_exchange_cbs_t probe_cbs = {on_probe_head, on_probe_data, on_probe_done};

static void probe_start(sg_health_t *h, sg_gen_t *g, const sg_provider_cfg_t *p, size_t j,
                        sg_endpoint_t *ep)
{
    const sg_health_cfg_t *hc = &g->cfg.health;
    sg_upstream_opts_t uo = {hc->timeout_ms < g->cfg.connect_timeout_ms ? hc->timeout_ms
                                                                        : g->cfg.connect_timeout_ms,
                             hc->timeout_ms, hc->timeout_ms, hc->timeout_ms};
    probe_t *pr = sg_xcalloc(1, sizeof(*pr));
    pr->ep = ep;
    pr->gen = sg_gen_ref(g);
    pr->provider = p;
    sg_buf_init(&pr->body, PROBE_BODY_MAX);
    sg_exchange_req_t xr = {0};
    sg_error_t err;
    ep->probing = 1;
    ep->checked_ms = sg_now_ms();
    if (p->ops->build_probe(p, sg_gen_state(g, p), p->endpoints[j].base_url, &uo, &xr, pr->url,
                            sizeof(pr->url), &err) != 0) {
        /* No request could be built (an expired token, say): the endpoint is not judged. */
        pr->h = NULL;
        probe_free(pr);
        return;
    }
    pr->x = sg_exchange_start(h->gw->curlm, &xr, &probe_cbs, pr);
    if (!pr->x) {
        curl_slist_free_all(xr.headers);
        free(xr.body);
        pr->h = NULL;
        probe_free(pr);
        return;
    }
    pr->h = h;
    pr->next = h->probes;
    if (h->probes) h->probes->prev = pr;
    h->probes = pr;
}

/* Starts the probes that are due: every endpoint never checked, and those whose last check is
 * health.interval_ms old (when that is not 0). */
static void probe_due(sg_health_t *h)
{
    sg_gen_t *g = h->gw->gen;
    const sg_health_cfg_t *hc = &g->cfg.health;
    uint64_t now = sg_now_ms();
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        if (!p->ops->build_probe) continue;
        size_t n;
        sg_endpoint_t *const *eps = sg_gen_endpoints(g, p, &n);
        for (size_t j = 0; j < n; j++) {
            sg_endpoint_t *ep = eps[j];
            if (ep->probing) continue;
            if (ep->checked_ms && (hc->interval_ms == 0 || now < ep->checked_ms + hc->interval_ms))
                continue;
            probe_start(h, g, p, j, ep);
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    sg_health_t *h = t->data;
    probe_due(h);
    if (!h->ready_sent &&
        (!h->probes || sg_now_ms() - h->started_ms >= h->gw->gen->cfg.health.startup_wait_ms)) {
        h->ready_sent = 1;
        h->on_ready(h->ready_ud);
    }
    /* Quick ticks until the first round is in, then a slow beat. */
    uv_timer_start(&h->timer, on_tick, h->ready_sent ? TICK_MS : 10, 0);
}

sg_health_t *sg_health_start(sg_gateway_t *gw, void (*on_ready)(void *ud), void *ud)
{
    sg_health_t *h = sg_xcalloc(1, sizeof(*h));
    h->gw = gw;
    h->on_ready = on_ready;
    h->ready_ud = ud;
    h->started_ms = sg_now_ms();
    uv_timer_init(gw->loop, &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, on_tick, 0, 0);
    return h;
}

void sg_health_kick(sg_health_t *h)
{
    if (h && !h->stopping) probe_due(h);
}

static void on_timer_closed(uv_handle_t *t)
{
    free(t->data);
}

void sg_health_stop(sg_health_t *h)
{
    if (!h || h->stopping) return;
    h->stopping = 1;
    while (h->probes) {
        probe_t *pr = h->probes;
        h->probes = pr->next;
        pr->h = NULL;
        if (pr->x) sg_exchange_cancel(pr->x);
        pr->x = NULL;
        probe_free(pr);
    }
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

/* ---- the "health" section ----------------------------------------------------------------- */

static const sg_cfg_num_t health_fields[] = {
    SG_CFG_U64("interval_ms", health.interval_ms, 0, 0, 30000),
    SG_CFG_U64("timeout_ms", health.timeout_ms, 1, 0, 5000),
    SG_CFG_U64("startup_wait_ms", health.startup_wait_ms, 0, 600000, 3000),
};

const sg_config_section_t sg_health_section = {
    .key = "health", .fields = health_fields, .n_fields = SG_ARRAY_LEN(health_fields)};
