/* Admission: the pipeline stage that runs before a request's first attempt (see
 * sophia/access.h). It finds the scopes that apply (the client's key, its team, the whole
 * gateway, the provider or model of the route), checks the models the key may use, the token
 * buckets and the budgets, and charges them all at once; the end of the request settles each
 * to the real figures (sg_admit_settle, called before the record reaches the observers).
 *
 * The estimate: the handler's prompt estimate (about 4 characters per token) plus the
 * request's max_tokens (max_completion_tokens, max_tokens; throttle.default_max_tokens when it
 * sets none) at the dearest candidate's prices, so a fallback can never cost more than was
 * reserved. A stream that outgrows its reservation reserves more as it goes
 * (sg_admit_stream), and is ended when the hard budgets have nothing left. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/generation.h"
#include "sophia/pipeline.h"
#include "sophia/route.h"

static const sg_limits_cfg_t no_limits;
static const sg_budget_cfg_t no_budget;

/* The output the request may produce: its own cap, else the configured default. */
static long max_output(const sg_access_cfg_t *ac, const cJSON *body, int op)
{
    if (op == SG_OP_EMBED) return 0;
    static const char *const names[] = {"max_completion_tokens", "max_tokens", "max_output_tokens"};
    for (size_t i = 0; i < SG_ARRAY_LEN(names); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, names[i]);
        if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= SG_TOKENS_MAX)
            return (long)v->valuedouble;
    }
    return (long)ac->default_max_tokens;
}

/* Drops the candidates the key may not use. Returns -1 (e: 403) when the client named a model
 * it may not use, or none is left. */
static int filter_models(const sg_key_cfg_t *key, sg_plan_t *plan, sg_error_t *e)
{
    if (!key || key->n_models == 0) return 0;
    size_t kept = 0;
    const char *first = plan->routes[0].public_name;
    int first_ok = sg_keys_model_allowed(key, first);
    if (!first_ok && strcmp(plan->rule, "auto") != 0) {
        sg_error_set(e, 403, "invalid_request_error", "model_not_allowed",
                     "the API key '%s' may not use the model '%s'", key->name, first);
        return -1;
    }
    for (size_t i = 0; i < plan->n; i++) {
        if (!sg_keys_model_allowed(key, plan->routes[i].public_name)) continue;
        if (kept != i) {
            sg_route_t tmp;
            sg_route_copy(&tmp, &plan->routes[i]);
            sg_route_copy(&plan->routes[kept], &tmp);
        }
        kept++;
    }
    if (kept == 0) {
        sg_error_set(e, 403, "invalid_request_error", "model_not_allowed",
                     "the API key '%s' may not use any model this request could be routed to "
                     "(first choice '%s')",
                     key->name, first);
        return -1;
    }
    plan->n = kept;
    return 0;
}

/* The model_limits entry for a route: its public name, else its provider's name. */
static const sg_model_limits_cfg_t *model_limits(const sg_access_cfg_t *ac, const sg_route_t *r)
{
    for (size_t i = 0; i < ac->n_model_limits; i++)
        if (strcmp(ac->model_limits[i].match, r->public_name) == 0) return &ac->model_limits[i];
    for (size_t i = 0; i < ac->n_model_limits; i++)
        if (strcmp(ac->model_limits[i].match, r->provider->name) == 0) return &ac->model_limits[i];
    return NULL;
}

/* Collects the scopes of the request with the limits and budget each has now. */
static int scopes_for(const sg_access_cfg_t *ac, const sg_key_cfg_t *key, const sg_route_t *r,
                      sg_scope_t **out, const sg_limits_cfg_t **lim)
{
    int n = 0;
    if (key) {
        out[n] = sg_scope_get(SG_SCOPE_KEY, key->name);
        if (!out[n]) return -1;
        out[n]->budget = key->budget;
        lim[n++] = &key->limits;
        if (key->team) {
            const sg_team_cfg_t *t = sg_access_team(ac, key->team);
            out[n] = sg_scope_get(SG_SCOPE_TEAM, key->team);
            if (!out[n]) return -1;
            out[n]->budget = t ? t->budget : no_budget;
            lim[n++] = t ? &t->limits : &no_limits;
        }
    }
    out[n] = sg_scope_get(SG_SCOPE_GLOBAL, "");
    if (!out[n]) return -1;
    out[n]->budget = ac->global_budget;
    lim[n++] = &ac->global_limits;
    const sg_model_limits_cfg_t *ml = model_limits(ac, r);
    if (ml) {
        out[n] = sg_scope_get(SG_SCOPE_MODEL, ml->match);
        if (!out[n]) return -1;
        out[n]->budget = no_budget;
        lim[n++] = &ml->limits;
    }
    return n;
}

/* Adds to what this process has reserved on s (also kept per worker, see limits.c). */
static void reserve(sg_scope_t *s, double usd)
{
    s->reserved += usd;
    s->reserved_by[sg_worker_index] += usd;
}

static const char *scope_label(const sg_scope_t *s, char *buf, size_t cap)
{
    if (s->kind == SG_SCOPE_GLOBAL)
        snprintf(buf, cap, "the gateway");
    else
        snprintf(buf, cap, "%s '%s'",
                 s->kind == SG_SCOPE_MODEL ? "route" : sg_scope_kind_name(s->kind), s->name);
    return buf;
}

static void deny_rate(sg_record_t *rec, sg_scope_t *s, const char *what, uint64_t wait,
                      sg_error_t *e)
{
    char who[160];
    scope_label(s, who, sizeof(who));
    s->throttled++;
    rec->denied = "throttled";
    if (wait == UINT64_MAX) {
        /* More than a whole minute's allowance: waiting cannot help. */
        rec->ticket.retry_after_s = 0;
        sg_error_set(e, 429, "rate_limit_error", "rate_limit_exceeded",
                     "request too large for the %s limit of %s: it needs about %ld tokens "
                     "(prompt and max_tokens) and the limit is %.0f per minute; lower "
                     "max_tokens or shorten the prompt",
                     what, who, rec->ticket.est_tokens,
                     strcmp(what, "usd") == 0 ? s->limits.usd_per_min : s->limits.tpm);
        return;
    }
    rec->ticket.retry_after_s = (long)((wait + 999) / 1000);
    const char *unit = strcmp(what, "requests") == 0 ? "requests per minute"
                       : strcmp(what, "tokens") == 0 ? "tokens per minute"
                       : strcmp(what, "usd") == 0    ? "USD per minute"
                                                     : "concurrent requests";
    double limit = strcmp(what, "requests") == 0 ? s->limits.rpm
                   : strcmp(what, "tokens") == 0 ? s->limits.tpm
                   : strcmp(what, "usd") == 0    ? s->limits.usd_per_min
                                                 : (double)s->limits.concurrent;
    sg_error_set(e, 429, "rate_limit_error", "rate_limit_exceeded",
                 "rate limit reached for %s: %g %s; retry in %ld s", who, limit, unit,
                 rec->ticket.retry_after_s);
}

static void deny_budget(sg_record_t *rec, sg_scope_t *s, const char *period, long reset_s,
                        sg_error_t *e, const char *how)
{
    char who[160], when[32];
    scope_label(s, who, sizeof(who));
    s->budget_denied++;
    rec->denied = "budget";
    rec->ticket.retry_after_s = reset_s;
    time_t t = (time_t)(sg_unix_time() + reset_s);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    double limit = strcmp(period, "daily") == 0 ? s->budget.daily_usd : s->budget.monthly_usd;
    sg_error_set(e, 429, "insufficient_quota", "budget_exceeded",
                 "%s: the %s budget of %s ($%.2f) %s; it resets at %s (in %ld s)", how, period, who,
                 limit, "is exhausted", when, reset_s);
}

static sg_admit_t admit(const sg_gen_t *g, sg_plan_t *plan, const cJSON *body, int op,
                        sg_record_t *rec, uint64_t waited_ms, uint64_t *wait_ms, sg_error_t *e)
{
    static const sg_access_cfg_t open_access = {.default_max_tokens = 4096};
    const sg_access_cfg_t *ac = g->cfg.access ? g->cfg.access : &open_access;
    sg_ticket_t *t = &rec->ticket;
    if (filter_models(t->key, plan, e) != 0) {
        rec->denied = "forbidden";
        return SG_ADMIT_DENY;
    }
    long out = max_output(ac, body, op);
    double worst = 0;
    for (size_t i = 0; i < plan->n; i++) {
        const sg_model_cfg_t *m = plan->routes[i].model;
        double c =
            ((double)t->prompt_est * m->price_in_per_mtok + (double)out * m->price_out_per_mtok) /
            1e6;
        if (c > worst) worst = c;
    }
    t->est_tokens = t->prompt_est + out;
    sg_scope_t *sc[4];
    const sg_limits_cfg_t *lim[4];
    int n = scopes_for(ac, t->key, &plan->routes[0], sc, lim);
    if (n < 0) {
        sg_error_set(e, 503, "api_error", "server_overloaded",
                     "the table of rate limit and budget scopes shared by the workers is full");
        rec->denied = "scopes_full";
        return SG_ADMIT_DENY;
    }
    for (int i = 0; i < n; i++) t->scopes[i] = sc[i]; /* for the x-ratelimit-* headers */
    t->n = n;
    uint64_t now_ns = sg_now_ns(), wait = 0;
    int64_t now = sg_unix_time();
    sg_scope_t *slow = NULL;
    const char *slow_what = NULL;
    for (int i = 0; i < n; i++) {
        sg_limits_refill(sc[i], lim[i], now_ns);
        const char *what;
        uint64_t w = sg_limits_wait_ms(sc[i], t->est_tokens, worst, &what);
        if (w > wait) wait = w, slow = sc[i], slow_what = what;
    }
    if (wait) {
        if (wait != UINT64_MAX && waited_ms + wait <= ac->queue_ms) {
            *wait_ms = wait;
            return SG_ADMIT_WAIT;
        }
        deny_rate(rec, slow, slow_what, wait, e);
        return SG_ADMIT_DENY;
    }
    for (int i = 0; i < n; i++) {
        sg_budget_roll(sc[i], now);
        const char *period;
        long reset_s;
        if (sg_budget_check(sc[i], worst, &period, now, &reset_s) != 0) {
            deny_budget(rec, sc[i], period, reset_s, e, "budget exceeded");
            return SG_ADMIT_DENY;
        }
    }
    for (int i = 0; i < n; i++) {
        sg_limits_take(sc[i], t->est_tokens, worst);
        reserve(sc[i], worst);
        const sg_budget_cfg_t *b = &sc[i]->budget;
        if (!b->soft && (b->daily_usd > 0 || b->monthly_usd > 0)) t->hard_budget = 1;
    }
    t->est_usd = worst;
    t->reserved_usd = worst;
    t->admitted = 1;
    return SG_ADMIT_OK;
}

sg_admit_t sg_admit(const sg_gen_t *g, sg_plan_t *plan, const cJSON *body, int op, sg_record_t *rec,
                    uint64_t waited_ms, uint64_t *wait_ms, sg_error_t *e)
{
    sg_scopes_lock();
    sg_admit_t r = admit(g, plan, body, op, rec, waited_ms, wait_ms, e);
    sg_scopes_unlock();
    return r;
}

static int admit_stream(sg_record_t *rec, long tokens, sg_error_t *e)
{
    sg_ticket_t *t = &rec->ticket;
    if (!t->admitted || t->settled || !t->hard_budget) return 0;
    t->out_tokens += tokens;
    double running =
        ((double)t->prompt_est * rec->price_in + (double)t->out_tokens * rec->price_out) / 1e6;
    if (running <= t->reserved_usd) return 0;
    double need = running - t->reserved_usd;
    int64_t now = sg_unix_time();
    for (int i = 0; i < t->n; i++) {
        const char *period;
        long reset_s;
        sg_budget_roll(t->scopes[i], now);
        if (sg_budget_check(t->scopes[i], need, &period, now, &reset_s) != 0) {
            deny_budget(rec, t->scopes[i], period, reset_s, e, "stream ended");
            rec->ticket.retry_after_s = 0; /* the head has gone out */
            return -1;
        }
    }
    for (int i = 0; i < t->n; i++) reserve(t->scopes[i], need);
    t->reserved_usd += need;
    return 0;
}

int sg_admit_stream(sg_record_t *rec, long tokens, sg_error_t *e)
{
    const sg_ticket_t *t = &rec->ticket;
    if (!t->admitted || t->settled || !t->hard_budget) return 0;
    sg_scopes_lock();
    int r = admit_stream(rec, tokens, e);
    sg_scopes_unlock();
    return r;
}

void sg_admit_settle(sg_record_t *rec)
{
    sg_ticket_t *t = &rec->ticket;
    if (!t->admitted || t->settled) return;
    t->settled = 1;
    long tokens = rec->usage.prompt_tokens + rec->usage.completion_tokens;
    int64_t now = sg_unix_time();
    sg_scopes_lock();
    for (int i = 0; i < t->n; i++) {
        sg_limits_settle(t->scopes[i], t->est_tokens, tokens, t->est_usd, rec->cost_usd);
        sg_budget_settle(t->scopes[i], t->reserved_usd, rec->cost_usd, now);
    }
    sg_scopes_unlock();
}

size_t sg_admit_headers(const sg_record_t *rec, char *out, size_t cap)
{
    const sg_ticket_t *t = &rec->ticket;
    size_t n = 0;
    if (cap) out[0] = '\0';
    if (t->retry_after_s > 0) {
        int w = snprintf(out, cap, "Retry-After: %ld\r\n", t->retry_after_s);
        if (w > 0 && (size_t)w < cap) n = (size_t)w;
    }
    /* Per limit, the scope with the least left (as a share of its limit). */
    const sg_scope_t *rs = NULL, *ts = NULL;
    if (t->n == 0) return n;
    sg_scopes_lock();
    for (int i = 0; i < t->n; i++) {
        const sg_scope_t *s = t->scopes[i];
        if (s->limits.rpm > 0 && (!rs || s->req / s->limits.rpm < rs->req / rs->limits.rpm)) rs = s;
        if (s->limits.tpm > 0 && (!ts || s->tok / s->limits.tpm < ts->tok / ts->limits.tpm)) ts = s;
    }
    n += sg_limits_headers(rs, ts, out + n, cap - n);
    sg_scopes_unlock();
    return n;
}
