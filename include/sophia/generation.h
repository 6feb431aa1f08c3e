/* A configuration generation: the configuration, the model catalog built from it and the
 * providers' credentials, reference-counted. Requests hold the generation they started with,
 * so a reload (SIGHUP) lets streams in flight finish on the old credentials while new requests
 * use the new ones. */
#ifndef SOPHIA_GENERATION_H
#define SOPHIA_GENERATION_H

#include <stdint.h>

#include "sophia/catalog.h"
#include "sophia/config.h"
#include "sophia/redact.h"
#include "sophia/provider.h"

typedef struct sg_gen {
    int refs;
    uint64_t id;
    sg_config_t cfg;
    sg_catalog_t catalog;
    void **state; /* per cfg.providers index: the provider's runtime state, or NULL */
    struct sg_endpoint ***endpoints; /* per provider: its endpoints' runtime state */
    sg_secrets_t secrets;            /* every configured secret value, for redaction */
} sg_gen_t;

/* Loads a generation: the configuration (path may be NULL: environment only), the listen
 * override (HOST:PORT, may be NULL), the catalog and every provider's credentials. Returns it
 * with one reference, or NULL with every problem appended to errs. */
sg_gen_t *sg_gen_load(const char *path, const char *listen_override, uint64_t id,
                      sg_config_errors_t *errs);
sg_gen_t *sg_gen_ref(sg_gen_t *g);
/* Drops a reference; the last one frees the generation. */
void sg_gen_unref(sg_gen_t *g);
/* Resolves a model name: a configured (or built-in) public name or alias; a model an endpoint
 * lists ("lambda/<id>", a built-in alias of such an id, or a bare id only one provider
 * serves); else "<provider>/<id>" for a provider that discovers and is not pinned, passed to
 * the upstream as named. Fills route (provider, model, public name, state; not the
 * endpoint: sg_gen_pick_endpoint chooses it per attempt). Returns 0, or -1 when unknown. */
int sg_gen_resolve(const sg_gen_t *g, const char *model, sg_route_t *route);
/* Chooses the endpoint of route's provider for an attempt (sg_endpoint_pick; tried marks
 * endpoints used by earlier attempts, may be NULL) and sets route->endpoint and base_url.
 * Returns the endpoint's index, or -1 when none is available. */
int sg_gen_pick_endpoint(const sg_gen_t *g, sg_route_t *route, const unsigned char *tried,
                         uint64_t now_ms);
/* The endpoints of a provider of this generation. */
struct sg_endpoint *const *sg_gen_endpoints(const sg_gen_t *g, const sg_provider_cfg_t *p,
                                            size_t *n);
/* Every model this generation serves, configured and discovered, as an OpenAI model list
 * (caller deletes); or only the one named id (NULL when unknown). */
cJSON *sg_gen_models_json(const sg_gen_t *g, const char *id);
/* Copies a route (a route's pass-through model points into the route itself). */
void sg_route_copy(sg_route_t *dst, const sg_route_t *src);
/* Fills route->passthrough as a model with this upstream id, with the prices, tier and
 * capabilities the provider kind's built-in table gives a matching id. */
void sg_gen_model_for(const sg_provider_cfg_t *p, const char *id, sg_route_t *route);
/* Redacts, in place, the secrets of this generation (and of the route's credentials: the
 * key-pair JWT in use) from text that came from an upstream. route may be NULL. */
void sg_gen_redact(const sg_gen_t *g, const sg_route_t *route, char *text, size_t cap);
/* The runtime state of a provider of this generation (its kind's state_new), or NULL. */
void *sg_gen_state(const sg_gen_t *g, const sg_provider_cfg_t *p);

#endif
