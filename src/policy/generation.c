/* Configuration generations (see sophia/generation.h). */
#include "sophia/generation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/log.h"

static void add_error(sg_config_errors_t *errs, const char *path, const char *msg)
{
    errs->items = sg_xrealloc(errs->items, (errs->n + 1) * sizeof(*errs->items));
    errs->items[errs->n].path = sg_xstrdup(path);
    errs->items[errs->n].message = sg_xstrdup(msg);
    errs->n++;
}

static void gen_free(sg_gen_t *g)
{
    if (g->state) {
        for (size_t i = 0; i < g->cfg.n_providers; i++) {
            const sg_provider_cfg_t *p = &g->cfg.providers[i];
            if (g->state[i] && p->ops->state_free) p->ops->state_free(g->state[i]);
        }
        free(g->state);
    }
    if (g->endpoints) {
        for (size_t i = 0; i < g->cfg.n_providers; i++) {
            for (size_t j = 0; g->endpoints[i] && j < g->cfg.providers[i].n_endpoints; j++)
                sg_endpoint_release(g->endpoints[i][j]);
            free(g->endpoints[i]);
        }
        free(g->endpoints);
    }
    sg_catalog_free(&g->catalog);
    sg_secrets_dispose(&g->secrets);
    sg_config_free(&g->cfg);
    free(g);
}

sg_gen_t *sg_gen_load(const char *path, const char *listen_override, uint64_t id,
                      sg_config_errors_t *errs)
{
    sg_gen_t *g = sg_xcalloc(1, sizeof(*g));
    g->refs = 1;
    g->id = id;
    size_t errs_before = errs->n;
    sg_config_load(&g->cfg, path, errs);
    if (listen_override) {
        char *host = NULL;
        int port = 0;
        const char *why = sg_config_parse_listen(listen_override, &host, &port);
        if (why) {
            add_error(errs, "--listen", why);
        } else {
            free(g->cfg.listen_host);
            g->cfg.listen_host = host;
            g->cfg.listen_port = port;
        }
    }
    /* The loopback rule needs the final listen address: the override above comes after the
     * configuration's own checks, so the rule is checked here. */
    char rule[512];
    if (g->cfg.access &&
        sg_keys_check_listen(g->cfg.access, g->cfg.listen_host, rule, sizeof(rule)))
        add_error(errs, "$.keys", rule);
    if (errs->n == errs_before) {
        g->state = sg_xcalloc(g->cfg.n_providers ? g->cfg.n_providers : 1, sizeof(*g->state));
        int64_t now = sg_unix_time();
        for (size_t i = 0; i < g->cfg.n_providers; i++) {
            const sg_provider_cfg_t *p = &g->cfg.providers[i];
            if (!p->ops->state_new) continue;
            char why[512];
            g->state[i] = p->ops->state_new(p, now, why, sizeof(why));
            if (!g->state[i]) {
                char where[300];
                snprintf(where, sizeof(where), "$.providers.%s", p->name);
                add_error(errs, where, why);
            }
        }
    }
    if (errs->n != errs_before) {
        gen_free(g);
        return NULL;
    }
    sg_catalog_build(&g->catalog, &g->cfg);
    g->endpoints = sg_xcalloc(g->cfg.n_providers ? g->cfg.n_providers : 1, sizeof(*g->endpoints));
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        g->endpoints[i] = sg_xcalloc(p->n_endpoints ? p->n_endpoints : 1, sizeof(**g->endpoints));
        for (size_t j = 0; j < p->n_endpoints; j++)
            g->endpoints[i][j] =
                sg_endpoint_acquire(p->name, p->endpoints[j].base_url, p->endpoints[j].weight);
        if (p->ops->secrets) p->ops->secrets(p, &g->secrets);
        for (size_t j = 0; j < p->n_endpoints; j++)
            sg_secrets_add_url(&g->secrets, p->endpoints[j].base_url);
    }
    return g;
}

sg_gen_t *sg_gen_ref(sg_gen_t *g)
{
    g->refs++;
    return g;
}

void sg_gen_unref(sg_gen_t *g)
{
    if (!g) return;
    SG_ASSERT(g->refs > 0);
    if (--g->refs == 0) gen_free(g);
}

void sg_gen_redact(const sg_gen_t *g, const sg_route_t *route, char *text, size_t cap)
{
    const char *extra[2] = {NULL, NULL};
    if (route && route->state && route->provider && route->provider->ops->live_secret)
        extra[0] = route->provider->ops->live_secret(route->state);
    sg_redact(&g->secrets, extra, text, cap);
}

void *sg_gen_state(const sg_gen_t *g, const sg_provider_cfg_t *p)
{
    if (p < g->cfg.providers || p >= g->cfg.providers + g->cfg.n_providers) return NULL;
    return g->state[p - g->cfg.providers];
}

struct sg_endpoint *const *sg_gen_endpoints(const sg_gen_t *g, const sg_provider_cfg_t *p,
                                            size_t *n)
{
    *n = 0;
    if (p < g->cfg.providers || p >= g->cfg.providers + g->cfg.n_providers) return NULL;
    *n = p->n_endpoints;
    return g->endpoints[p - g->cfg.providers];
}

void sg_route_copy(sg_route_t *dst, const sg_route_t *src)
{
    memcpy(dst, src, sizeof(*dst));
    if (src->model == &src->passthrough) {
        dst->model = &dst->passthrough;
        dst->passthrough.id = dst->passthrough.upstream_id = dst->passthrough_id;
    }
}

void sg_gen_model_for(const sg_provider_cfg_t *p, const char *id, sg_route_t *route)
{
    sg_model_cfg_t *m = &route->passthrough;
    memset(m, 0, sizeof(*m));
    sg_strlcpy(route->passthrough_id, sizeof(route->passthrough_id), id);
    m->id = m->upstream_id = route->passthrough_id;
    const sg_builtin_model_t *b = sg_builtin_match(p->ops, id);
    if (b) {
        m->price_in_per_mtok = b->price_in;
        m->price_out_per_mtok = b->price_out;
        m->tier = b->tier;
        m->context_window = b->context_window;
        m->caps = b->caps;
    } else {
        m->tier = sg_tier_guess(id);
        m->caps = SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA;
    }
    route->model = m;
}

/* A served id's public alias: its built-in entry's, unless a configured name took it. */
static const char *served_alias(const sg_gen_t *g, const sg_provider_cfg_t *p, const char *id)
{
    const sg_builtin_model_t *b = sg_builtin_match(p->ops, id);
    if (!b || !b->alias) return NULL;
    sg_route_t tmp;
    if (sg_catalog_resolve(&g->catalog, b->alias, &tmp) == 0) return NULL;
    return b->alias;
}

/* Calls fn for every (provider, served id) of the discovering providers, once per id; stops
 * when fn returns non-zero and returns that. */
static int each_served(const sg_gen_t *g,
                       int (*fn)(const sg_gen_t *, const sg_provider_cfg_t *, const char *, void *),
                       void *ud)
{
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        if (!p->discover) continue;
        for (size_t j = 0; j < p->n_endpoints; j++) {
            const cJSON *id;
            cJSON_ArrayForEach(id, g->endpoints[i][j]->served)
            {
                int dup = 0; /* listed by an earlier endpoint too */
                for (size_t k = 0; k < j && !dup; k++) {
                    const cJSON *o;
                    cJSON_ArrayForEach(o, g->endpoints[i][k]->served) dup |=
                        strcmp(o->valuestring, id->valuestring) == 0;
                }
                if (dup) continue;
                int r = fn(g, p, id->valuestring, ud);
                if (r) return r;
            }
        }
    }
    return 0;
}

typedef struct find_served {
    const char *name;
    const sg_provider_cfg_t *provider;
    char id[256];
    int matches; /* bare ids: how many providers serve it */
} find_served_t;

static int match_served(const sg_gen_t *g, const sg_provider_cfg_t *p, const char *id, void *ud)
{
    find_served_t *f = ud;
    size_t pl = strlen(p->name);
    const char *alias = served_alias(g, p, id);
    if ((strncmp(f->name, p->name, pl) == 0 && f->name[pl] == '/' &&
         strcmp(f->name + pl + 1, id) == 0) ||
        (alias && strcmp(alias, f->name) == 0)) {
        f->provider = p;
        sg_strlcpy(f->id, sizeof(f->id), id);
        f->matches = 1;
        return 1;
    }
    if (strcmp(f->name, id) == 0) {
        if (f->matches++ == 0) {
            f->provider = p;
            sg_strlcpy(f->id, sizeof(f->id), id);
        }
    }
    return 0;
}

int sg_gen_resolve(const sg_gen_t *g, const char *model, sg_route_t *route)
{
    memset(route, 0, sizeof(*route));
    if (sg_catalog_resolve(&g->catalog, model, route) != 0) {
        find_served_t f = {.name = model};
        each_served(g, match_served, &f);
        if (f.matches == 1) {
            route->provider = f.provider;
            sg_gen_model_for(f.provider, f.id, route);
        } else {
            /* "<provider>/<id>" not (yet) listed: the upstream decides, unless pinned. */
            const char *slash = strchr(model, '/');
            const sg_provider_cfg_t *p = NULL;
            if (slash && slash[1]) {
                char name[128];
                snprintf(name, sizeof(name), "%.*s", (int)(slash - model), model);
                p = sg_config_provider(&g->cfg, name);
            }
            if (!p || !p->discover || p->pinned) return -1;
            route->provider = p;
            sg_gen_model_for(p, slash + 1, route);
            route->unlisted = 1;
        }
        snprintf(route->public_name, sizeof(route->public_name), "%s/%s", route->provider->name,
                 route->model->id);
    }
    route->state = sg_gen_state(g, route->provider);
    return 0;
}

int sg_gen_pick_endpoint(const sg_gen_t *g, sg_route_t *route, const unsigned char *tried,
                         uint64_t now_ms)
{
    size_t n;
    struct sg_endpoint *const *eps = sg_gen_endpoints(g, route->provider, &n);
    int i = sg_endpoint_pick(eps, n, tried, &g->cfg.breaker, now_ms);
    if (i < 0) return -1;
    route->endpoint = eps[i];
    route->base_url = route->provider->endpoints[i].base_url;
    return i;
}

static cJSON *model_json(const char *name, const sg_provider_cfg_t *p, const sg_model_cfg_t *m,
                         const char *alias_of, int discovered)
{
    static const char *const tiers[] = {"small", "medium", "large"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", name);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", 0);
    cJSON_AddStringToObject(o, "owned_by", p->name);
    if (alias_of) cJSON_AddStringToObject(o, "alias_of", alias_of);
    cJSON *x = cJSON_AddObjectToObject(o, "sophia");
    cJSON_AddStringToObject(x, "provider", p->name);
    cJSON_AddStringToObject(x, "upstream_id", m->upstream_id ? m->upstream_id : m->id);
    cJSON_AddStringToObject(x, "tier", tiers[m->tier >= 0 && m->tier <= 2 ? m->tier : 1]);
    if (m->context_window)
        cJSON_AddNumberToObject(x, "context_window", (double)m->context_window);
    else
        cJSON_AddNullToObject(x, "context_window");
    cJSON_AddNumberToObject(x, "price_in", m->price_in_per_mtok);
    cJSON_AddNumberToObject(x, "price_out", m->price_out_per_mtok);
    cJSON *caps = cJSON_AddArrayToObject(x, "capabilities");
    if (m->caps & SG_CAP_TOOLS) cJSON_AddItemToArray(caps, cJSON_CreateString("tools"));
    if (m->caps & SG_CAP_JSON_SCHEMA) cJSON_AddItemToArray(caps, cJSON_CreateString("json_schema"));
    if (m->caps & SG_CAP_VISION) cJSON_AddItemToArray(caps, cJSON_CreateString("vision"));
    cJSON_AddBoolToObject(x, "discovered", discovered);
    return o;
}

typedef struct list_ctx {
    cJSON *data;
    const char *only;
    cJSON *found;
} list_ctx_t;

static void list_add(list_ctx_t *l, cJSON *o)
{
    const char *id = cJSON_GetObjectItemCaseSensitive(o, "id")->valuestring;
    const cJSON *e;
    cJSON_ArrayForEach(e, l->data)
    {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(e, "id")->valuestring, id) == 0) {
            cJSON_Delete(o); /* configured names come first and win */
            return;
        }
    }
    if (l->only && strcmp(l->only, id) == 0 && !l->found) l->found = cJSON_Duplicate(o, 1);
    cJSON_AddItemToArray(l->data, o);
}

static int list_served(const sg_gen_t *g, const sg_provider_cfg_t *p, const char *id, void *ud)
{
    list_ctx_t *l = ud;
    sg_route_t r;
    sg_gen_model_for(p, id, &r);
    char name[512];
    snprintf(name, sizeof(name), "%s/%s", p->name, id);
    list_add(l, model_json(name, p, r.model, NULL, 1));
    const char *alias = served_alias(g, p, id);
    if (alias) list_add(l, model_json(alias, p, r.model, name, 1));
    return 0;
}

cJSON *sg_gen_models_json(const sg_gen_t *g, const char *id)
{
    list_ctx_t l = {cJSON_CreateArray(), id, NULL};
    for (size_t i = 0; i < g->catalog.n; i++) {
        const sg_catalog_entry_t *e = &g->catalog.items[i];
        char target[512];
        snprintf(target, sizeof(target), "%s/%s", e->provider->name, e->model->id);
        list_add(&l, model_json(e->name, e->provider, e->model, e->is_alias ? target : NULL, 0));
    }
    each_served(g, list_served, &l);
    if (id) {
        cJSON_Delete(l.data);
        return l.found;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddItemToObject(root, "data", l.data);
    return root;
}
