/* Endpoint registry, circuit breakers and balancing (see sophia/endpoint.h). */
#include "sophia/endpoint.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/log.h"

#define EWMA_ALPHA 0.2

static sg_endpoint_t **reg;
static size_t n_reg, cap_reg;

sg_endpoint_t *sg_endpoint_acquire(const char *provider, const char *base_url, unsigned weight)
{
    for (size_t i = 0; i < n_reg; i++) {
        sg_endpoint_t *ep = reg[i];
        if (strcmp(ep->provider, provider) == 0 && strcmp(ep->base_url, base_url) == 0) {
            ep->refs++;
            ep->weight = weight ? weight : 1; /* the newest configuration's weight */
            return ep;
        }
    }
    if (n_reg == cap_reg) {
        cap_reg = cap_reg ? cap_reg * 2 : 8;
        reg = sg_xrealloc(reg, cap_reg * sizeof(*reg));
    }
    sg_endpoint_t *ep = sg_xcalloc(1, sizeof(*ep));
    ep->provider = sg_xstrdup(provider);
    ep->base_url = sg_xstrdup(base_url);
    ep->weight = weight ? weight : 1;
    ep->refs = 1;
    reg[n_reg++] = ep;
    return ep;
}

void sg_endpoint_release(sg_endpoint_t *ep)
{
    if (!ep) return;
    SG_ASSERT(ep->refs > 0);
    if (--ep->refs > 0) return;
    /* A probe still running keeps a pointer: it is not freed before its exchange ends. */
    if (ep->probing || ep->inflight) return;
    for (size_t i = 0; i < n_reg; i++) {
        if (reg[i] != ep) continue;
        reg[i] = reg[--n_reg];
        break;
    }
    cJSON_Delete(ep->served);
    free(ep->provider);
    free(ep->base_url);
    free(ep);
    if (n_reg == 0) {
        free(reg);
        reg = NULL;
        cap_reg = 0;
    }
}

sg_endpoint_t *const *sg_endpoints_all(size_t *n)
{
    *n = n_reg;
    return reg;
}

void sg_endpoint_reap(sg_endpoint_t *ep)
{
    if (ep->refs == 0 && !ep->probing && !ep->inflight) {
        ep->refs = 1;
        sg_endpoint_release(ep);
    }
}

const char *sg_breaker_state_name(int state)
{
    return state == SG_BREAKER_OPEN        ? "open"
           : state == SG_BREAKER_HALF_OPEN ? "half_open"
                                           : "closed";
}

int sg_endpoint_state(const sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms)
{
    if (ep->state == SG_BREAKER_OPEN && now_ms >= ep->opened_ms + cfg->cooldown_ms)
        return SG_BREAKER_HALF_OPEN;
    return ep->state;
}

int sg_endpoint_available(const sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms)
{
    if (ep->health < 0) return 0;
    switch (sg_endpoint_state(ep, cfg, now_ms)) {
    case SG_BREAKER_OPEN:
        return 0;
    case SG_BREAKER_HALF_OPEN:
        return !ep->trial_inflight;
    default:
        return 1;
    }
}

/* Slides the two-bucket window forward to now. */
static void window_roll(sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms)
{
    if (now_ms < ep->win_start_ms + cfg->window_ms) return;
    if (now_ms < ep->win_start_ms + 2 * cfg->window_ms) {
        ep->prev_ok = ep->win_ok;
        ep->prev_fail = ep->win_fail;
    } else {
        ep->prev_ok = ep->prev_fail = 0;
    }
    ep->win_ok = ep->win_fail = 0;
    ep->win_start_ms = now_ms;
}

double sg_endpoint_error_rate(const sg_endpoint_t *ep)
{
    uint64_t fail = ep->win_fail + ep->prev_fail, all = fail + ep->win_ok + ep->prev_ok;
    return all ? (double)fail / (double)all : 0;
}

static void set_state(sg_endpoint_t *ep, int state, uint64_t now_ms, const char *why)
{
    if (ep->state == state) return;
    sg_logline_t l;
    sg_logline_begin(&l, state == SG_BREAKER_OPEN ? SG_LOG_WARN : SG_LOG_INFO,
                     state == SG_BREAKER_OPEN ? "circuit breaker opened"
                                              : "circuit breaker closed");
    sg_logline_str(&l, "provider", ep->provider);
    sg_logline_str(&l, "endpoint", ep->base_url);
    sg_logline_str(&l, "reason", why);
    sg_logline_emit(&l);
    ep->state = state;
    if (state == SG_BREAKER_OPEN) ep->opened_ms = now_ms;
    if (state == SG_BREAKER_CLOSED) ep->consecutive_failures = 0;
}

void sg_endpoint_begin(sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms)
{
    ep->inflight++;
    ep->requests++;
    if (sg_endpoint_state(ep, cfg, now_ms) == SG_BREAKER_HALF_OPEN) {
        ep->state = SG_BREAKER_HALF_OPEN;
        ep->trial_inflight = 1;
    }
}

void sg_endpoint_end(sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, int ok, double ttfb_ms,
                     uint64_t now_ms)
{
    SG_ASSERT(ep->inflight > 0);
    ep->inflight--;
    window_roll(ep, cfg, now_ms);
    int trial = ep->state == SG_BREAKER_HALF_OPEN && ep->trial_inflight;
    if (trial) ep->trial_inflight = 0;
    if (ok) {
        ep->win_ok++;
        ep->consecutive_failures = 0;
        if (ttfb_ms >= 0) {
            ep->ewma_ms =
                ep->has_ewma ? (1 - EWMA_ALPHA) * ep->ewma_ms + EWMA_ALPHA * ttfb_ms : ttfb_ms;
            ep->has_ewma = 1;
        }
        if (trial) set_state(ep, SG_BREAKER_CLOSED, now_ms, "the trial request succeeded");
    } else {
        ep->win_fail++;
        ep->failures++;
        ep->consecutive_failures++;
        uint64_t fail = ep->win_fail + ep->prev_fail, all = fail + ep->win_ok + ep->prev_ok;
        if (trial) {
            set_state(ep, SG_BREAKER_OPEN, now_ms, "the trial request failed");
            ep->opened_ms = now_ms;
        } else if (ep->state == SG_BREAKER_CLOSED && cfg->failures &&
                   ep->consecutive_failures >= cfg->failures) {
            set_state(ep, SG_BREAKER_OPEN, now_ms, "consecutive failures");
        } else if (ep->state == SG_BREAKER_CLOSED && cfg->min_requests &&
                   all >= cfg->min_requests && fail * 100 >= all * cfg->error_pct) {
            set_state(ep, SG_BREAKER_OPEN, now_ms, "error rate over the window");
        }
    }
    sg_endpoint_reap(ep);
}

int sg_endpoint_pick(sg_endpoint_t *const *eps, size_t n, const unsigned char *tried,
                     const sg_breaker_cfg_t *cfg, uint64_t now_ms)
{
    int cand[64];
    size_t nc = 0;
    unsigned total = 0;
    /* Available endpoints first; when every one failed its health check (but no breaker is
     * open), those are tried anyway: the check may be stale, and the request's own error says
     * more than "no endpoint". */
    for (int panic = 0; panic < 2 && nc == 0; panic++) {
        for (size_t i = 0; i < n && nc < SG_ARRAY_LEN(cand); i++) {
            if (tried && tried[i]) continue;
            if (!sg_endpoint_available(eps[i], cfg, now_ms)) {
                if (!panic || eps[i]->health >= 0) continue;
                sg_endpoint_t tmp = *eps[i];
                tmp.health = 1;
                if (!sg_endpoint_available(&tmp, cfg, now_ms)) continue;
            }
            cand[nc++] = (int)i;
            total += eps[i]->weight;
        }
    }
    if (nc == 0) return -1;
    if (nc == 1) return cand[0];
    /* Two different choices drawn by weight, the better one wins. */
    int pick[2];
    size_t first = 0;
    for (int k = 0; k < 2; k++) {
        uint32_t r = 0;
        uv_random(NULL, NULL, &r, sizeof(r), 0, NULL);
        unsigned left = k ? total - eps[cand[first]]->weight : total;
        unsigned x = r % left;
        size_t j = 0;
        for (;; j++) {
            if (k && j == first) continue;
            if (x < eps[cand[j]]->weight) break;
            x -= eps[cand[j]]->weight;
        }
        if (k == 0) first = j;
        pick[k] = cand[j];
    }
    const sg_endpoint_t *a = eps[pick[0]], *b = eps[pick[1]];
    /* Fewer outstanding requests (relative to weight) wins. */
    double la = (double)a->inflight / a->weight, lb = (double)b->inflight / b->weight;
    if (la != lb) return la < lb ? pick[0] : pick[1];
    /* Equally loaded: a clearly faster endpoint wins (unmeasured ones count as fast, so that
     * they get measured); otherwise the first draw, which follows the weights. */
    double ea = a->has_ewma ? a->ewma_ms : 0, eb = b->has_ewma ? b->ewma_ms : 0;
    double lo = ea < eb ? ea : eb, hi = ea < eb ? eb : ea;
    if (hi - lo > 5 && hi > lo * 1.5) return ea < eb ? pick[0] : pick[1];
    return pick[0];
}

/* ---- the "breaker" section ---------------------------------------------------------------- */

static const sg_cfg_num_t breaker_fields[] = {
    SG_CFG_U64("failures", breaker.failures, 0, 1000, 5),
    SG_CFG_U64("error_pct", breaker.error_pct, 1, 100, 50),
    SG_CFG_U64("min_requests", breaker.min_requests, 0, 1000000, 20),
    SG_CFG_U64("window_ms", breaker.window_ms, 1, 0, 30000),
    SG_CFG_U64("cooldown_ms", breaker.cooldown_ms, 1, 0, 10000),
};

const sg_config_section_t sg_breaker_section = {
    .key = "breaker", .fields = breaker_fields, .n_fields = SG_ARRAY_LEN(breaker_fields)};
