/* Gateway-wide helpers: HTTP options from the configuration, and the registry of requests in
 * progress that shutdown ends. */
#include "sophia/gateway.h"

#include <sys/resource.h>

#include "sophia/config.h"
#include "sophia/core.h"

void sg_gateway_http_opts(const sg_config_t *cfg, sg_http_opts_t *o)
{
    sg_http_opts_defaults(o);
    o->max_header_bytes = cfg->max_header_bytes;
    o->max_body_bytes = cfg->max_body_bytes;
    o->header_timeout_ms = cfg->header_timeout_ms;
    o->idle_timeout_ms = cfg->idle_timeout_ms;
    o->body_timeout_ms = cfg->body_timeout_ms;
    o->write_stall_timeout_ms = cfg->write_stall_timeout_ms;
    o->max_connections = sg_gateway_max_connections(cfg->max_connections);
    o->high_watermark = cfg->high_watermark;
    o->low_watermark = cfg->low_watermark;
    o->cors_origins = cfg->cors_origins;
    o->n_cors_origins = cfg->n_cors_origins;
    o->log_requests_errors = 1;
}

size_t sg_gateway_max_connections(size_t configured)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return configured;
    size_t lim = (size_t)rl.rlim_cur;
    size_t cap = lim > SG_FD_RESERVE + 16 ? (lim - SG_FD_RESERVE) / 2 : 8;
    return configured < cap ? configured : cap;
}

void sg_gateway_track(sg_gateway_t *gw, sg_active_t *a)
{
    a->prev = NULL;
    a->next = gw->active;
    if (gw->active) gw->active->prev = a;
    gw->active = a;
}

void sg_gateway_untrack(sg_gateway_t *gw, sg_active_t *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else if (gw->active == a)
        gw->active = a->next;
    if (a->next) a->next->prev = a->prev;
    a->prev = a->next = NULL;
}

void sg_gateway_shutdown_requests(sg_gateway_t *gw)
{
    /* Each callback unregisters (and may free) its own entry only. */
    while (gw->active) {
        sg_active_t *a = gw->active;
        a->shutdown(a);
        SG_ASSERT(gw->active != a);
    }
}
