/* Request records and their observers (see sophia/record.h). */
#include "sophia/record.h"

#include <stdio.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/log.h"

void sg_record_init(sg_record_t *r, const sg_http_req_t *req, const char *method, const char *path)
{
    /* r is zeroed memory already (the handler's object comes from calloc): not cleared twice. */
    sg_strlcpy(r->request_id, sizeof(r->request_id), req->request_id);
    r->method = method;
    r->path = path;
    r->start_ns = req->start_ns ? req->start_ns : sg_now_ns();
}

void sg_record_route(sg_record_t *r, const sg_route_t *route)
{
    sg_strlcpy(r->route, sizeof(r->route), route->public_name);
    sg_strlcpy(r->provider, sizeof(r->provider), route->provider->name);
    r->route_unlisted = route->unlisted;
}

void sg_observe(sg_gateway_t *gw, sg_observer_fn fn, void *ud)
{
    SG_ASSERT(gw->n_observers < SG_ARRAY_LEN(gw->observers));
    gw->observers[gw->n_observers].fn = fn;
    gw->observers[gw->n_observers].ud = ud;
    gw->n_observers++;
}

void sg_record_finish(sg_gateway_t *gw, sg_record_t *r)
{
    r->end_ns = sg_now_ns();
    for (size_t i = 0; i < gw->n_observers; i++) gw->observers[i].fn(r, gw->observers[i].ud);
}

double sg_usage_cost(const sg_usage_t *u, double price_in, double price_out, double *in_usd,
                     double *out_usd)
{
    /* Cached prompt tokens are part of prompt_tokens; guard tokens are counted beside them. */
    double in = (double)(u->prompt_tokens > 0 ? u->prompt_tokens : 0) +
                (double)(u->guard_tokens > 0 ? u->guard_tokens : 0);
    double out = (double)(u->completion_tokens > 0 ? u->completion_tokens : 0);
    double ci = in * price_in / 1e6, co = out * price_out / 1e6;
    if (in_usd) *in_usd = ci;
    if (out_usd) *out_usd = co;
    return ci + co;
}

double sg_record_cost(sg_record_t *r)
{
    r->cost_usd =
        sg_usage_cost(&r->usage, r->price_in, r->price_out, &r->cost_in_usd, &r->cost_out_usd);
    return r->cost_usd;
}

static double ms_since(uint64_t start, uint64_t t)
{
    return (double)(t - start) / 1e6;
}

void sg_log_observer(const sg_record_t *r, void *ud)
{
    SG_UNUSED(ud);
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "request");
    sg_logline_str(&l, "request_id", r->request_id);
    sg_logline_str(&l, "method", r->method);
    sg_logline_str(&l, "path", r->path);
    if (sg_worker_count > 1) sg_logline_int(&l, "worker", sg_worker_index);
    if (r->key[0]) sg_logline_str(&l, "key", r->key);
    if (r->team[0]) sg_logline_str(&l, "team", r->team);
    sg_logline_str(&l, "route", r->route[0] ? r->route : NULL);
    if (r->provider[0]) sg_logline_str(&l, "provider", r->provider);
    if (r->rule[0]) sg_logline_str(&l, "rule", r->rule);
    if (r->why[0]) sg_logline_str(&l, "route_reason", r->why);
    sg_logline_int(&l, "status", r->client_gone ? 499 : r->status);
    sg_logline_bool(&l, "stream", r->stream);
    sg_logline_num(&l, "latency_ms", ms_since(r->start_ns, r->end_ns));
    if (r->ttft_ns)
        sg_logline_num(&l, "ttft_ms", ms_since(r->start_ns, r->ttft_ns));
    else
        sg_logline_str(&l, "ttft_ms", NULL);
    sg_logline_int(&l, "prompt_tokens", r->usage.prompt_tokens);
    sg_logline_int(&l, "completion_tokens", r->usage.completion_tokens);
    sg_logline_str(&l, "usage_source", r->usage.known ? "upstream" : "estimated");
    if (r->provider[0]) sg_logline_num(&l, "cost_usd", r->cost_usd);
    if (r->denied) sg_logline_str(&l, "denied", r->denied);
    sg_logline_bool(&l, "partial", r->client_gone || strcmp(r->outcome, "ok") != 0);
    sg_logline_str(&l, "outcome", r->outcome);
    if (r->attempts > 1) sg_logline_int(&l, "attempts", r->attempts);
    if (r->fallbacks) sg_logline_int(&l, "fallbacks", r->fallbacks);
    if (r->upstream_status) sg_logline_int(&l, "upstream_status", r->upstream_status);
    if (r->endpoint[0]) sg_logline_str(&l, "endpoint", r->endpoint);
    if (r->error[0]) sg_logline_str(&l, "error", r->error);
    sg_logline_emit(&l);
}
