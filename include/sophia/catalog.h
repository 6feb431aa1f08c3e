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
/* The OpenAI /v1/models list (caller frees). */
cJSON *sg_catalog_models_json(const sg_catalog_t *cat);

#endif
