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

int sg_tier_guess(const char *id)
{
    /* The largest "<digits>b" (or "<digits>.<digits>b") not followed by a letter or digit. */
    double best = -1;
    for (const char *p = id; *p; p++) {
        if (!(*p >= '0' && *p <= '9') ||
            (p > id && ((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.')))
            continue;
        char *end;
        double v = strtod(p, &end);
        if ((*end == 'b' || *end == 'B') &&
            !((end[1] >= 'a' && end[1] <= 'z') || (end[1] >= 'A' && end[1] <= 'Z') ||
              (end[1] >= '0' && end[1] <= '9')) &&
            v > best)
            best = v;
    }
    if (best < 0) return SG_TIER_MEDIUM;
    return best <= 15 ? SG_TIER_SMALL : best <= 100 ? SG_TIER_MEDIUM : SG_TIER_LARGE;
}

/* Lower-case letters and digits of the part after the last '/', without a trailing "fp8". */
static void loose(const char *id, char *out, size_t cap)
{
    const char *slash = strrchr(id, '/');
    if (slash) id = slash + 1;
    size_t n = 0;
    for (; *id && n + 1 < cap; id++) {
        char ch = *id;
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) out[n++] = ch;
    }
    out[n] = '\0';
    if (n >= 3 && strcmp(out + n - 3, "fp8") == 0) out[n - 3] = '\0';
}

const sg_builtin_model_t *sg_builtin_match(const sg_provider_kind_t *k, const char *id)
{
    if (!k) return NULL;
    char want[256], have[256];
    loose(id, want, sizeof(want));
    if (!want[0]) return NULL;
    for (size_t i = 0; i < k->n_builtin; i++) {
        if (strcmp(k->builtin[i].id, id) == 0) return &k->builtin[i];
        loose(k->builtin[i].id, have, sizeof(have));
        if (strcmp(have, want) == 0) return &k->builtin[i];
    }
    return NULL;
}
