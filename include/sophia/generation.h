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
#include "sophia/snowflake_auth.h"

typedef struct sg_gen {
    int refs;
    uint64_t id;
    sg_config_t cfg;
    sg_catalog_t catalog;
    sg_sf_auth_t **sf_auth; /* per cfg.providers index; NULL for non-cortex providers */
    sg_secrets_t secrets;   /* every configured secret value, for redaction */
} sg_gen_t;

/* Loads a generation: the configuration (path may be NULL: environment only), the listen
 * override (HOST:PORT, may be NULL), the catalog and every provider's credentials. Returns it
 * with one reference, or NULL with every problem appended to errs. */
sg_gen_t *sg_gen_load(const char *path, const char *listen_override, uint64_t id,
                      sg_config_errors_t *errs);
sg_gen_t *sg_gen_ref(sg_gen_t *g);
/* Drops a reference; the last one frees the generation. */
void sg_gen_unref(sg_gen_t *g);
/* Resolves a model name within the generation (route->sf_auth filled for cortex). */
int sg_gen_resolve(const sg_gen_t *g, const char *model, sg_route_t *route);
/* Redacts, in place, the secrets of this generation (and of the route's credentials: the
 * key-pair JWT in use) from text that came from an upstream. route may be NULL. */
void sg_gen_redact(const sg_gen_t *g, const sg_route_t *route, char *text, size_t cap);
/* Credentials of a provider of this generation, or NULL. */
sg_sf_auth_t *sg_gen_sf_auth(const sg_gen_t *g, const sg_provider_cfg_t *p);

#endif
