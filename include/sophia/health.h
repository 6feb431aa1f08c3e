/* Active health checks and model discovery: every endpoint of the current configuration is
 * probed with its provider kind's model-list request (GET <base>/models for OpenAI-compatible
 * servers, GET /api/v2/cortex/models for Cortex) at start and every health.interval_ms. A
 * probe that cannot connect, times out or gets a 5xx marks the endpoint down (skipped until a
 * probe succeeds); any other answer marks it up, and a model list it returns becomes the
 * endpoint's served models (what a discovering provider serves). */
#ifndef SOPHIA_HEALTH_H
#define SOPHIA_HEALTH_H

#include "sophia/gateway.h"

typedef struct sg_health sg_health_t;

/* Starts the checks. on_ready fires once, from the loop (never inside this call), when every
 * endpoint has been probed once or health.startup_wait_ms has passed. */
sg_health_t *sg_health_start(sg_gateway_t *gw, void (*on_ready)(void *ud), void *ud);
/* Probes the endpoints of a new configuration that were never checked, now. */
void sg_health_kick(sg_health_t *h);
/* Stops: running probes are cancelled; the memory goes with the timer's close callback. */
void sg_health_stop(sg_health_t *h);

struct sg_config_section;
extern const struct sg_config_section sg_health_section;

#endif
