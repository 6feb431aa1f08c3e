/* Configuration generations (see sophia/generation.h). */
#include "sophia/generation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
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
    if (g->sf_auth) {
        for (size_t i = 0; i < g->cfg.n_providers; i++)
            if (g->sf_auth[i]) sg_sf_auth_free(g->sf_auth[i]);
        free(g->sf_auth);
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
    if (errs->n == errs_before) {
        g->sf_auth = sg_xcalloc(g->cfg.n_providers ? g->cfg.n_providers : 1, sizeof(*g->sf_auth));
        int64_t now = sg_unix_time();
        for (size_t i = 0; i < g->cfg.n_providers; i++) {
            const sg_provider_cfg_t *p = &g->cfg.providers[i];
            if (!p->kind || strcmp(p->kind, "cortex") != 0) continue;
            char why[512];
            g->sf_auth[i] = sg_sf_auth_new(p, now, why, sizeof(why));
            if (!g->sf_auth[i]) {
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
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        sg_secrets_add(&g->secrets, p->api_key);
        sg_secrets_add(&g->secrets, p->pat);
        sg_secrets_add(&g->secrets, p->private_key_passphrase);
        sg_secrets_add_url(&g->secrets, p->base_url);
    }
    return g;
}

void sg_gen_redact(const sg_gen_t *g, const sg_route_t *route, char *text, size_t cap)
{
    const char *extra[2] = {route && route->sf_auth ? sg_sf_auth_current(route->sf_auth) : NULL,
                            NULL};
    sg_redact(&g->secrets, extra, text, cap);
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

sg_sf_auth_t *sg_gen_sf_auth(const sg_gen_t *g, const sg_provider_cfg_t *p)
{
    if (p < g->cfg.providers || p >= g->cfg.providers + g->cfg.n_providers) return NULL;
    return g->sf_auth[p - g->cfg.providers];
}

int sg_gen_resolve(const sg_gen_t *g, const char *model, sg_route_t *route)
{
    if (sg_catalog_resolve(&g->catalog, model, route) != 0) return -1;
    route->sf_auth = sg_gen_sf_auth(g, route->provider);
    return 0;
}
