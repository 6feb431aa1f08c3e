/* Endpoints: the runtime side of one upstream server (a provider's base URL). Outlives
 * configuration reloads (found again by provider name and base URL), so its circuit breaker,
 * latency average, in-flight count and discovered models survive a SIGHUP. One registry per
 * process (one loop: no locks).
 *
 * Circuit breaker: closed → open after breaker.failures consecutive failures, or when
 * breaker.error_pct of the outcomes in the last breaker.window_ms failed (once there are
 * breaker.min_requests of them); open → half-open after breaker.cooldown_ms, which lets one
 * trial request through: its success closes the breaker, its failure opens it again. An active
 * health check that fails marks the endpoint down (skipped like an open breaker) until one
 * succeeds. */
#ifndef SOPHIA_ENDPOINT_H
#define SOPHIA_ENDPOINT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "sophia/config.h"

typedef enum { SG_BREAKER_CLOSED = 0, SG_BREAKER_OPEN, SG_BREAKER_HALF_OPEN } sg_breaker_state_t;

typedef struct sg_endpoint {
    char *provider; /* provider name */
    char *base_url;
    unsigned weight;
    int refs; /* configuration generations using it */

    unsigned inflight; /* attempts running now */
    double ewma_ms;    /* time to the first response byte, exponentially averaged */
    int has_ewma;

    int state; /* sg_breaker_state_t */
    uint64_t consecutive_failures;
    uint64_t opened_ms; /* when it last opened */
    int trial_inflight; /* half-open: the one trial request is running */
    uint64_t win_start_ms;
    uint64_t win_ok, win_fail;   /* current window */
    uint64_t prev_ok, prev_fail; /* the window before */

    int health; /* 1 up, -1 down (the last active check failed), 0 not checked yet */
    uint64_t checked_ms;
    char check_error[200];
    cJSON *served; /* model ids the last listing returned, or NULL */
    uint64_t served_at_ms;
    int probing; /* a check is running */

    uint64_t requests, failures; /* since start */
} sg_endpoint_t;

/* The endpoint for (provider, base_url), created on first use; adds a reference. */
sg_endpoint_t *sg_endpoint_acquire(const char *provider, const char *base_url, unsigned weight);
/* Drops a reference; the last one frees it. */
void sg_endpoint_release(sg_endpoint_t *ep);
/* Frees ep when it lost its last reference while an attempt or a probe was running (call
 * once that ended: inflight and probing cleared). */
void sg_endpoint_reap(sg_endpoint_t *ep);
/* Every endpoint in use (refs > 0); the array is valid until the next acquire or release. */
sg_endpoint_t *const *sg_endpoints_all(size_t *n);

/* May an attempt go to ep now? (not open, not down; half-open admits one trial). */
int sg_endpoint_available(const sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms);
/* An attempt starts (counts in-flight; takes the half-open trial). */
void sg_endpoint_begin(sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms);
/* An attempt ended: ok says whether the endpoint served it (a 4xx other than 429 counts as ok:
 * the endpoint works); ttfb_ms feeds the latency average when ok. Moves the breaker. */
void sg_endpoint_end(sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, int ok, double ttfb_ms,
                     uint64_t now_ms);
/* The breaker's state now (open becomes half-open once the cooldown passed). */
int sg_endpoint_state(const sg_endpoint_t *ep, const sg_breaker_cfg_t *cfg, uint64_t now_ms);
/* Failures / outcomes over the current and previous window, 0..1 (0 with no outcomes). */
double sg_endpoint_error_rate(const sg_endpoint_t *ep);
const char *sg_breaker_state_name(int state);

/* Picks one of eps[0..n) for an attempt: available ones not in tried[0..n) (tried may be
 * NULL). Power of two random choices: two different endpoints drawn by weight; the one with
 * fewer outstanding requests per unit of weight wins; equally loaded, a clearly faster one
 * (average time to first byte 5 ms and 50 % lower) wins, else the first draw. When none is
 * available but some are only failing their health checks (breaker not open), those are
 * picked from. Returns the index, or -1 when none can be used. */
int sg_endpoint_pick(sg_endpoint_t *const *eps, size_t n, const unsigned char *tried,
                     const sg_breaker_cfg_t *cfg, uint64_t now_ms);

/* The "breaker" configuration section. */
struct sg_config_section;
extern const struct sg_config_section sg_breaker_section;

#endif
