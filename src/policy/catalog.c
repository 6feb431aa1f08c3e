/* Model catalog built from the configured providers. */
#include "sophia/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"

static void add(sg_catalog_t *cat, char *name, const sg_provider_cfg_t *p, const sg_model_cfg_t *m,
                int alias)
{
    cat->items = sg_xrealloc(cat->items, (cat->n + 1) * sizeof(*cat->items));
    cat->items[cat->n++] = (sg_catalog_entry_t){name, p, m, alias};
}

void sg_catalog_build(sg_catalog_t *cat, const sg_config_t *cfg)
{
    cat->items = NULL;
    cat->n = 0;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const sg_provider_cfg_t *p = &cfg->providers[i];
        for (size_t j = 0; j < p->n_models; j++) {
            const sg_model_cfg_t *m = &p->models[j];
            size_t n = strlen(p->name) + strlen(m->id) + 2;
            char *name = sg_xmalloc(n);
            snprintf(name, n, "%s/%s", p->name, m->id);
            add(cat, name, p, m, 0);
            for (size_t k = 0; k < m->n_aliases; k++) add(cat, sg_xstrdup(m->aliases[k]), p, m, 1);
        }
    }
}

void sg_catalog_free(sg_catalog_t *cat)
{
    for (size_t i = 0; i < cat->n; i++) free(cat->items[i].name);
    free(cat->items);
    cat->items = NULL;
    cat->n = 0;
}

static void fill(const sg_catalog_entry_t *e, sg_route_t *route)
{
    route->provider = e->provider;
    route->model = e->model;
    snprintf(route->public_name, sizeof(route->public_name), "%s/%s", e->provider->name,
             e->model->id);
}

int sg_catalog_resolve(const sg_catalog_t *cat, const char *name, sg_route_t *route)
{
    for (size_t i = 0; i < cat->n; i++) {
        if (strcmp(cat->items[i].name, name) == 0) {
            fill(&cat->items[i], route);
            return 0;
        }
    }
    /* A bare model id is accepted when exactly one provider offers it. */
    const sg_catalog_entry_t *found = NULL;
    for (size_t i = 0; i < cat->n; i++) {
        const sg_catalog_entry_t *e = &cat->items[i];
        if (!e->is_alias && strcmp(e->model->id, name) == 0) {
            if (found) return -1;
            found = e;
        }
    }
    if (!found) return -1;
    fill(found, route);
    return 0;
}

cJSON *sg_catalog_models_json(const sg_catalog_t *cat)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (size_t i = 0; i < cat->n; i++) {
        const sg_catalog_entry_t *e = &cat->items[i];
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", e->name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", e->provider->name);
        if (e->is_alias) {
            char target[256];
            snprintf(target, sizeof(target), "%s/%s", e->provider->name, e->model->id);
            cJSON_AddStringToObject(m, "alias_of", target);
        }
        cJSON_AddItemToArray(data, m);
    }
    return root;
}
