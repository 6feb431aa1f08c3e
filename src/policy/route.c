/* Route selection and the "routing" configuration section (see sophia/route.h). */
#include "sophia/route.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/json.h"

static const char *const default_keywords[] = {
    "sql",       "query",     "queries", "database", "databases", "data",     "dataset",
    "datasets",  "analytics", "table",   "tables",   "warehouse", "schema",   "snowflake",
    "dashboard", "revenue",   "kpi",     "cohort",   "join",      "aggregate"};

static const char *const tier_names[] = {"small", "medium", "large"};

/* ---- hints ------------------------------------------------------------------------------ */

static int level(const cJSON *v, double *out)
{
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0 &&
        v->valuedouble <= 1) {
        *out = v->valuedouble;
        return 0;
    }
    static const struct {
        const char *name;
        double v;
    } names[] = {{"low", 0.15}, {"medium", 0.5}, {"high", 0.85}};
    for (size_t i = 0; cJSON_IsString(v) && i < SG_ARRAY_LEN(names); i++)
        if (strcmp(v->valuestring, names[i].name) == 0) {
            *out = names[i].v;
            return 0;
        }
    return -1;
}

int sg_hints_read(const char *header, cJSON *req, sg_hints_t *h, sg_error_t *err)
{
    memset(h, 0, sizeof(*h));
    h->complexity = -1;
    if (header && header[0]) sg_strlcpy(h->provider, sizeof(h->provider), header);
    cJSON *s = cJSON_DetachItemFromObjectCaseSensitive(req, "sophia");
    if (!s || cJSON_IsNull(s)) {
        cJSON_Delete(s);
        return 0;
    }
    int rc = -1;
    if (!cJSON_IsObject(s)) {
        sg_error_set(
            err, 400, "invalid_request_error", "invalid_type",
            "'sophia' must be an object: {\"provider\", \"complexity\", \"cost_priority\"}");
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, s)
    {
        if (strcmp(it->string, "provider") == 0) {
            if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof(h->provider)) {
                sg_error_set(err, 400, "invalid_request_error", "invalid_type",
                             "'sophia.provider' must be a provider name or \"auto\"");
                goto out;
            }
            if (!h->provider[0]) sg_strlcpy(h->provider, sizeof(h->provider), it->valuestring);
        } else if (strcmp(it->string, "complexity") == 0) {
            if (level(it, &h->complexity) != 0) {
                sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                             "'sophia.complexity' must be a number from 0 to 1, or \"low\", "
                             "\"medium\" or \"high\"");
                goto out;
            }
        } else if (strcmp(it->string, "cost_priority") == 0) {
            static const struct {
                const char *name;
                int v;
            } names[] = {{"low_cost", SG_COST_LOW},      {"low", SG_COST_LOW},
                         {"balanced", SG_COST_BALANCED}, {"medium", SG_COST_BALANCED},
                         {"quality", SG_COST_QUALITY},   {"high", SG_COST_QUALITY}};
            size_t i = 0;
            while (i < SG_ARRAY_LEN(names) &&
                   !(cJSON_IsString(it) && strcmp(it->valuestring, names[i].name) == 0))
                i++;
            if (i == SG_ARRAY_LEN(names)) {
                sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                             "'sophia.cost_priority' must be \"low_cost\" (the cheapest adequate "
                             "model), \"balanced\" or \"quality\"");
                goto out;
            }
            h->cost = names[i].v;
        } else {
            sg_error_set(err, 400, "invalid_request_error", "unknown_parameter",
                         "unknown key in 'sophia': use provider, complexity, cost_priority");
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(s);
    return rc;
}

/* ---- request signals --------------------------------------------------------------------- */

/* Calls fn on every text of the request's messages (string content, text parts). */
static void each_text(const cJSON *req, void (*fn)(const char *s, void *ud), void *ud)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages"))
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(c)) {
            fn(c->valuestring, ud);
        } else if (cJSON_IsArray(c)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, c)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (cJSON_IsString(t)) fn(t->valuestring, ud);
            }
        }
    }
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Does s contain word w (case-insensitive, on word boundaries)? */
static int has_word(const char *s, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = s; *p; p++) {
        if ((p == s || !word_char(p[-1])) && sg_strncaseeq(p, w, n) && !word_char(p[n])) return 1;
    }
    return 0;
}

typedef struct scan {
    const char *const *words;
    size_t n_words;
    const char *found;
    size_t chars;
    int code, cues;
} scan_t;

static void scan_keywords(const char *s, void *ud)
{
    scan_t *sc = ud;
    for (size_t i = 0; i < sc->n_words && !sc->found; i++)
        if (has_word(s, sc->words[i])) sc->found = sc->words[i];
}

static const char *const reasoning_cues[] = {
    "step by step", "prove",     "proof",      "derive",   "analyze",   "analyse",
    "explain why",  "reasoning", "trade-off",  "tradeoff", "optimize",  "architecture",
    "algorithm",    "theorem",   "debug",      "compare",  "evaluate",  "design a",
    "plan a",       "refactor",  "root cause", "rigorous", "edge cases"};

static void scan_complexity(const char *s, void *ud)
{
    scan_t *sc = ud;
    sc->chars += strlen(s);
    if (strstr(s, "```") || strstr(s, "#include") || strstr(s, "def ") || strstr(s, "function ") ||
        strstr(s, "SELECT ") || strstr(s, "=>") || strstr(s, "};"))
        sc->code = 1;
    for (size_t i = 0; i < SG_ARRAY_LEN(reasoning_cues); i++) {
        const char *c = reasoning_cues[i];
        for (const char *p = s; *p; p++)
            if (sg_strncaseeq(p, c, strlen(c))) {
                sc->cues++;
                break;
            }
    }
}

double sg_route_complexity(const cJSON *req, char *why, size_t cap)
{
    scan_t sc = {0};
    each_text(req, scan_complexity, &sc);
    int turns = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(req, "messages"));
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    int has_tools = cJSON_IsArray(tools) && tools->child;
    double len = (double)sc.chars / 6000.0;
    double score = (len > 0.35 ? 0.35 : len) + (turns > 1 ? (turns - 1) * 0.03 : 0);
    if (score > 0.5) score = 0.5;
    if (has_tools) score += 0.15;
    if (sc.code) score += 0.2;
    score += (sc.cues > 5 ? 5 : sc.cues) * 0.15;
    if (score > 1) score = 1;
    if (why) {
        snprintf(why, cap, "%zu chars, %d turn%s%s%s%s", sc.chars, turns, turns == 1 ? "" : "s",
                 has_tools ? ", tools" : "", sc.code ? ", code" : "",
                 sc.cues ? ", reasoning cues" : "");
    }
    return score;
}

/* The capabilities the request uses. */
static unsigned needed_caps(const cJSON *req)
{
    unsigned caps = 0;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    if (cJSON_IsArray(tools) && tools->child) caps |= SG_CAP_TOOLS;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(req, "response_format");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "json_schema") == 0)
        caps |= SG_CAP_JSON_SCHEMA;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages"))
    {
        const cJSON *part;
        cJSON_ArrayForEach(part, cJSON_GetObjectItemCaseSensitive(m, "content"))
        {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
            if (cJSON_IsString(t) && strcmp(t->valuestring, "image_url") == 0)
                caps |= SG_CAP_VISION;
        }
    }
    return caps;
}

/* ---- automatic choice --------------------------------------------------------------------- */

typedef struct choice {
    const sg_gen_t *g;
    const sg_provider_cfg_t *only; /* NULL: any provider */
    int tier, cost;
    unsigned caps;
    sg_route_t best;
    double best_score;
    int have;
} choice_t;

/* Lower is better: distance from the wanted tier (a smaller tier is worse than a larger one:
 * it may not be adequate), then the price. configured: m belongs to the configuration (else it
 * is a discovered model, valid only during the call). */
static void consider(choice_t *ch, const sg_provider_cfg_t *p, const sg_model_cfg_t *m,
                     int configured)
{
    if ((m->caps & ch->caps) != ch->caps || (m->caps & SG_CAP_EMBED)) return;
    if (ch->cost == SG_COST_LOW && m->tier < ch->tier) return; /* never inadequate */
    double d = m->tier >= ch->tier ? (m->tier - ch->tier) * 10.0 : (ch->tier - m->tier) * 100.0;
    double price = m->price_in_per_mtok + m->price_out_per_mtok;
    double score = ch->cost == SG_COST_LOW ? price * 1000 + d : d * 1000 + price;
    if (ch->have && score >= ch->best_score) return;
    ch->have = 1;
    ch->best_score = score;
    memset(&ch->best, 0, sizeof(ch->best));
    ch->best.provider = p;
    if (configured)
        ch->best.model = m;
    else
        sg_gen_model_for(p, m->id, &ch->best);
    snprintf(ch->best.public_name, sizeof(ch->best.public_name), "%s/%s", p->name,
             ch->best.model->id);
}

static void consider_provider(choice_t *ch, const sg_provider_cfg_t *p)
{
    for (size_t j = 0; j < p->n_models; j++) consider(ch, p, &p->models[j], 1);
    if (!p->discover) return;
    size_t n;
    sg_endpoint_t *const *eps = sg_gen_endpoints(ch->g, p, &n);
    for (size_t k = 0; k < n; k++) {
        const cJSON *id;
        cJSON_ArrayForEach(id, eps[k]->served)
        {
            sg_route_t r;
            sg_gen_model_for(p, id->valuestring, &r);
            consider(ch, p, r.model, 0);
        }
    }
}

static const sg_provider_cfg_t *provider_named(const sg_gen_t *g, const char *name)
{
    return name && name[0] ? sg_config_provider(&g->cfg, name) : NULL;
}

static const sg_provider_cfg_t *default_provider(const sg_gen_t *g)
{
    const sg_provider_cfg_t *p = provider_named(g, g->cfg.routing.default_provider);
    if (!p) p = sg_config_provider(&g->cfg, "lambda");
    if (!p && g->cfg.n_providers) p = &g->cfg.providers[0];
    return p;
}

static const sg_provider_cfg_t *data_provider(const sg_gen_t *g)
{
    const sg_provider_cfg_t *p = provider_named(g, g->cfg.routing.data_provider);
    return p ? p : sg_config_provider_of_kind(&g->cfg, "cortex");
}

/* Is any endpoint of p usable now? */
static int provider_up(const sg_gen_t *g, const sg_provider_cfg_t *p)
{
    size_t n;
    sg_endpoint_t *const *eps = sg_gen_endpoints(g, p, &n);
    uint64_t now = sg_now_ms();
    for (size_t i = 0; i < n; i++)
        if (sg_endpoint_available(eps[i], &g->cfg.breaker, now)) return 1;
    return 0;
}

static int plan_auto(const sg_gen_t *g, const sg_hints_t *h, const cJSON *req, sg_plan_t *plan,
                     sg_error_t *err)
{
    const sg_routing_cfg_t *rc = &g->cfg.routing;
    choice_t ch = {.g = g, .caps = needed_caps(req), .cost = h->cost};
    const char *provider_why = "";
    char buf[160];
    if (h->provider[0] && strcmp(h->provider, "auto") != 0) {
        ch.only = provider_named(g, h->provider);
        provider_why = "provider hint";
    } else {
        scan_t sc = {.words = rc->n_data_keywords ? (const char *const *)rc->data_keywords
                                                  : default_keywords,
                     .n_words = rc->n_data_keywords ? rc->n_data_keywords
                                                    : SG_ARRAY_LEN(default_keywords)};
        each_text(req, scan_keywords, &sc);
        const sg_provider_cfg_t *dp = data_provider(g);
        if (sc.found && dp && provider_up(g, dp)) {
            ch.only = dp;
            snprintf(buf, sizeof(buf), "data-local prompt ('%s')", sc.found);
            provider_why = buf;
        } else if (h->cost != SG_COST_LOW) {
            ch.only = default_provider(g);
            provider_why = "default provider";
        } else {
            provider_why = "any provider";
        }
    }
    char cwhy[160] = "given";
    double cx = h->complexity >= 0 ? h->complexity : sg_route_complexity(req, cwhy, sizeof(cwhy));
    ch.tier = cx < rc->small_below   ? SG_TIER_SMALL
              : cx > rc->large_above ? SG_TIER_LARGE
                                     : SG_TIER_MEDIUM;
    if (h->cost == SG_COST_QUALITY && ch.tier < SG_TIER_LARGE) ch.tier++;
    if (ch.only) {
        consider_provider(&ch, ch.only);
    } else {
        for (size_t i = 0; i < g->cfg.n_providers; i++)
            if (provider_up(g, &g->cfg.providers[i])) consider_provider(&ch, &g->cfg.providers[i]);
    }
    if (!ch.have) {
        sg_error_set(err, 503, "api_error", "no_route",
                     "no model can serve this request automatically (%s%s%s; tier %s%s)",
                     provider_why, ch.only ? ": " : "", ch.only ? ch.only->name : "",
                     tier_names[ch.tier], ch.caps ? ", with the capabilities it uses" : "");
        return -1;
    }
    ch.best.state = sg_gen_state(g, ch.best.provider);
    sg_route_copy(&plan->routes[plan->n++], &ch.best);
    snprintf(plan->rule, sizeof(plan->rule), "auto");
    snprintf(plan->why, sizeof(plan->why), "auto: %s -> %s; complexity %.2f (%s) -> %s%s",
             provider_why, ch.best.provider->name, cx, cwhy, tier_names[ch.tier],
             h->cost == SG_COST_LOW       ? "; cheapest adequate model"
             : h->cost == SG_COST_QUALITY ? "; quality first"
                                          : "");
    return 0;
}

/* Appends the fallback chain configured for the first candidate (by the name the client
 * used, its public name, or its tier). */
static void plan_fallbacks(const sg_gen_t *g, const char *asked, sg_plan_t *plan)
{
    const sg_routing_cfg_t *rc = &g->cfg.routing;
    const sg_route_t *first = &plan->routes[0];
    const sg_fallback_cfg_t *fb = NULL;
    for (size_t i = 0; i < rc->n_fallbacks && !fb; i++)
        if (strcmp(rc->fallbacks[i].from, asked) == 0 ||
            strcmp(rc->fallbacks[i].from, first->public_name) == 0)
            fb = &rc->fallbacks[i];
    for (size_t i = 0; i < rc->n_fallbacks && !fb; i++)
        if (strcmp(rc->fallbacks[i].from, tier_names[first->model->tier]) == 0)
            fb = &rc->fallbacks[i];
    if (!fb) return;
    for (size_t i = 0; i < fb->n_to && plan->n < SG_PLAN_MAX; i++) {
        sg_route_t *r = &plan->routes[plan->n];
        if (sg_gen_resolve(g, fb->to[i], r) != 0) continue;
        int dup = 0;
        for (size_t k = 0; k < plan->n && !dup; k++)
            dup = strcmp(plan->routes[k].public_name, r->public_name) == 0;
        if (dup) continue;
        plan->n++;
    }
}

int sg_route_plan(const sg_gen_t *g, const char *model, const sg_hints_t *h, const cJSON *req,
                  sg_plan_t *plan, sg_error_t *err)
{
    plan->n = 0;
    plan->rule[0] = plan->why[0] = '\0';
    if (h->provider[0] && strcmp(h->provider, "auto") != 0 && !provider_named(g, h->provider)) {
        sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                     "the provider hint '%.64s' names no configured provider (GET /v1/providers "
                     "lists them; \"auto\" lets the gateway choose)",
                     h->provider);
        return -1;
    }
    if (strcmp(model, "auto") == 0) {
        if (plan_auto(g, h, req, plan, err) != 0) return -1;
    } else {
        sg_route_t *r = &plan->routes[0];
        int ok = sg_gen_resolve(g, model, r) == 0;
        const char *rule = "explicit";
        if (ok && h->provider[0] && strcmp(h->provider, "auto") != 0 &&
            strcmp(r->provider->name, h->provider) != 0 && !strchr(model, '/')) {
            /* A bare id or alias that the hinted provider also serves. */
            char name[320];
            snprintf(name, sizeof(name), "%s/%s", h->provider, model);
            sg_route_t alt;
            if (sg_gen_resolve(g, name, &alt) == 0 && alt.model != &alt.passthrough) {
                sg_route_copy(r, &alt);
                rule = "hint";
            }
        } else if (!ok && h->provider[0] && strcmp(h->provider, "auto") != 0) {
            char name[320];
            snprintf(name, sizeof(name), "%s/%s", h->provider, model);
            ok = sg_gen_resolve(g, name, r) == 0;
            rule = "hint";
        }
        if (!ok) {
            char shown[220];
            snprintf(shown, sizeof(shown), "%.*s", (int)sg_utf8_cut(model, strnlen(model, 200)),
                     model);
            sg_error_set(err, 404, "invalid_request_error", "model_not_found",
                         "The model '%s' does not exist or is not served by this gateway (GET "
                         "/v1/models lists them; \"auto\" lets the gateway choose)",
                         shown);
            return -1;
        }
        if (strcmp(rule, "explicit") == 0 && strcmp(model, r->public_name) != 0 &&
            strchr(model, '/') == NULL)
            rule = "alias";
        plan->n = 1;
        sg_strlcpy(plan->rule, sizeof(plan->rule), rule);
        snprintf(plan->why, sizeof(plan->why), "%s: %.100s -> %.200s", rule, model, r->public_name);
    }
    plan_fallbacks(g, model, plan);
    return 0;
}

/* ---- the "routing" section ---------------------------------------------------------------- */

static void routing_defaults(sg_config_t *cfg)
{
    cfg->routing.small_below = 0.3;
    cfg->routing.large_above = 0.7;
}

static void routing_free(sg_config_t *cfg)
{
    sg_routing_cfg_t *r = &cfg->routing;
    free(r->default_provider);
    free(r->data_provider);
    for (size_t i = 0; i < r->n_data_keywords; i++) free(r->data_keywords[i]);
    free(r->data_keywords);
    for (size_t i = 0; i < r->n_fallbacks; i++) {
        free(r->fallbacks[i].from);
        for (size_t j = 0; j < r->fallbacks[i].n_to; j++) free(r->fallbacks[i].to[j]);
        free(r->fallbacks[i].to);
    }
    free(r->fallbacks);
    memset(r, 0, sizeof(*r));
}

/* A non-empty array of non-empty strings. Returns the count (0 after reporting). */
static size_t string_list(sg_cfg_ctx_t *c, const cJSON *arr, char ***out)
{
    if (!cJSON_IsArray(arr) || !arr->child) {
        sg_cfg_errf(c, "must be a non-empty array of strings");
        return 0;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr), k = 0, i = 0;
    *out = sg_xcalloc(n, sizeof(char *));
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        char *s;
        int interp;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            if (!*s) {
                sg_cfg_errf(c, "must not be empty");
                free(s);
            } else {
                (*out)[k++] = s;
            }
        }
        sg_cfg_pop(c, old);
    }
    return k;
}

static void routing_parse(sg_cfg_ctx_t *c, const cJSON *obj)
{
    static const char *const keys[] = {"default_provider", "data_provider", "data_keywords",
                                       "small_below",      "large_above",   "fallbacks"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    sg_routing_cfg_t *r = &c->cfg->routing;
    int interp;
    static const struct {
        const char *key;
        size_t off;
    } strs[] = {{"default_provider", offsetof(sg_routing_cfg_t, default_provider)},
                {"data_provider", offsetof(sg_routing_cfg_t, data_provider)}};
    for (size_t i = 0; i < SG_ARRAY_LEN(strs); i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, strs[i].key);
        if (!it) continue;
        size_t old = sg_cfg_push_key(c, strs[i].key);
        char **slot = (char **)(void *)((char *)r + strs[i].off);
        sg_cfg_get_opt_str(c, it, slot, &interp);
        sg_cfg_pop(c, old);
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "data_keywords");
    if (it) {
        size_t old = sg_cfg_push_key(c, "data_keywords");
        r->n_data_keywords = string_list(c, it, &r->data_keywords);
        sg_cfg_pop(c, old);
    }
    static const struct {
        const char *key;
        size_t off;
    } nums[] = {{"small_below", offsetof(sg_routing_cfg_t, small_below)},
                {"large_above", offsetof(sg_routing_cfg_t, large_above)}};
    for (size_t i = 0; i < SG_ARRAY_LEN(nums); i++) {
        it = cJSON_GetObjectItemCaseSensitive(obj, nums[i].key);
        if (!it) continue;
        size_t old = sg_cfg_push_key(c, nums[i].key);
        sg_cfg_get_num(c, it, 0, 1, (double *)(void *)((char *)r + nums[i].off));
        sg_cfg_pop(c, old);
    }
    if (r->small_below > r->large_above) {
        size_t old = sg_cfg_push_key(c, "small_below");
        sg_cfg_errf(c, "must not be above large_above");
        sg_cfg_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "fallbacks");
    if (it) {
        size_t old = sg_cfg_push_key(c, "fallbacks");
        if (sg_cfg_expect_object(c, it) == 0) {
            size_t n = (size_t)cJSON_GetArraySize(it);
            r->fallbacks = sg_xcalloc(n ? n : 1, sizeof(*r->fallbacks));
            for (const cJSON *f = it->child; f; f = f->next) {
                size_t o2 = sg_cfg_push_key(c, f->string);
                sg_fallback_cfg_t *fb = &r->fallbacks[r->n_fallbacks];
                fb->n_to = string_list(c, f, &fb->to);
                fb->from = sg_xstrdup(f->string);
                r->n_fallbacks++;
                sg_cfg_pop(c, o2);
            }
        }
        sg_cfg_pop(c, old);
    }
}

/* Provider names the routing section uses must exist. */
static void routing_check(sg_cfg_ctx_t *c)
{
    const sg_routing_cfg_t *r = &c->cfg->routing;
    const char *names[] = {r->default_provider, r->data_provider};
    const char *keys[] = {"default_provider", "data_provider"};
    for (size_t i = 0; i < 2; i++)
        if (names[i] && !sg_config_provider(c->cfg, names[i]))
            sg_cfg_error_at(c, i ? "$.routing.data_provider" : "$.routing.default_provider",
                            "%s names no configured provider", keys[i]);
}

const sg_config_section_t sg_routing_section = {.key = "routing",
                                                .defaults = routing_defaults,
                                                .parse = routing_parse,
                                                .check = routing_check,
                                                .free = routing_free};
