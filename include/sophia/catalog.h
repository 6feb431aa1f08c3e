/* Model catalog: every public model name ("provider/id" and aliases) → provider and model. */
#ifndef SOPHIA_CATALOG_H
#define SOPHIA_CATALOG_H

#include <cjson/cJSON.h>

#include "sophia/config.h"
#include "sophia/provider.h"

typedef struct sg_catalog_entry {
    char *name; /* public name */
    const sg_provider_cfg_t *provider;
    const sg_model_cfg_t *model;
    int is_alias;
} sg_catalog_entry_t;

typedef struct sg_catalog {
    sg_catalog_entry_t *items;
    size_t n;
} sg_catalog_t;

/* Builds the catalog from cfg (which must outlive it). */
void sg_catalog_build(sg_catalog_t *cat, const sg_config_t *cfg);
void sg_catalog_free(sg_catalog_t *cat);
/* Resolves a client's model name: "provider/id", an alias, or a bare id that only one
 * provider offers. Returns 0 and fills route, or -1 (unknown or ambiguous). */
int sg_catalog_resolve(const sg_catalog_t *cat, const char *name, sg_route_t *route);
/* The built-in entry of kind k for a model id a server lists, compared loosely (case, the
 * organisation prefix before '/', punctuation and a trailing "fp8" ignored:
 * "meta-llama/Llama-3.1-8B-Instruct" matches "llama3.1-8b-instruct"), or NULL. */
const sg_builtin_model_t *sg_builtin_match(const sg_provider_kind_t *k, const char *id);
/* A model's tier guessed from its name: the parameter count ("8b", "70B", "405b") when it
 * has one (up to 15B small, up to 100B medium, above large), else medium. */
int sg_tier_guess(const char *id);

#endif
