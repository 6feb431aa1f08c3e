/* Route selection: which provider and model serve a request, in this order:
 *  1. an explicit model: "provider/id", an alias, or a bare id one provider serves;
 *  2. a provider hint (X-Sophia-Provider header, or "sophia": {"provider": …} in the body)
 *     with a bare model id, or with model "auto";
 *  3. model "auto": a data-local prompt (a routing.data_keywords word) goes to the data
 *     provider (Cortex); otherwise the default provider (Lambda). The complexity (the client's
 *     "sophia.complexity", else estimated from the request) picks the tier: below
 *     routing.small_below a small model, above routing.large_above a large one, else medium.
 *     Cost priority "low_cost" takes the cheapest adequate model (tier at least the one needed,
 *     the capabilities the request uses) of any provider; "quality" one tier up.
 * Then the fallback chain configured for the chosen model (by name or alias) or its tier.
 * Every decision is explained in one line (plan.why). */
#ifndef SOPHIA_ROUTE_H
#define SOPHIA_ROUTE_H

#include <cjson/cJSON.h>

#include "sophia/generation.h"
#include "sophia/provider.h"

#define SG_PLAN_MAX 8

typedef enum { SG_COST_BALANCED = 0, SG_COST_LOW = 1, SG_COST_QUALITY = 2 } sg_cost_priority_t;

/* What the client said about routing. */
typedef struct sg_hints {
    char provider[64]; /* "" or "auto": none */
    double complexity; /* 0..1, or < 0 when not given */
    int cost;          /* sg_cost_priority_t */
} sg_hints_t;

typedef struct sg_plan {
    size_t n;
    char rule[64]; /* "explicit", "alias", "hint", "auto" */
    char why[384]; /* the decision in words (X-Sophia-Route) */
    /* candidates, in order; last, so that a plan kept for a request's lifetime can be cut to
     * its n routes (sg_plan_shrink) */
    sg_route_t routes[SG_PLAN_MAX];
} sg_plan_t;

/* Reads the hints: the X-Sophia-Provider header value (may be NULL) and the request's
 * "sophia" object (removed from req: it is the gateway's, never sent upstream). Returns 0, or
 * -1 with a 400 in err. */
int sg_hints_read(const char *header, cJSON *req, sg_hints_t *h, sg_error_t *err);

/* Plans a request for model (the client's "model") with hints, looking at req (the client's
 * chat request) for the automatic rules. Returns 0 with at least one candidate, or -1 with
 * err: 404 model_not_found, 400 for a hint naming no provider, 503 when no provider serves
 * the need. */
int sg_route_plan(const sg_gen_t *g, const char *model, const sg_hints_t *h, const cJSON *req,
                  sg_plan_t *plan, sg_error_t *err);

/* The complexity of a chat request, 0..1, estimated from its length, turns, tools, code and
 * reasoning cues; why receives the signals that counted. */
double sg_route_complexity(const cJSON *req, char *why, size_t cap);

struct sg_config_section;
extern const struct sg_config_section sg_routing_section;

#endif
