/* Scopes (a key, a team, the whole gateway, a provider or model) and their token buckets (see
 * sophia/access.h). A scope's state is process-wide and outlives configuration reloads, so a
 * reload never refills a bucket or forgets what was spent; its limits are the ones the current
 * configuration gives it, copied in at each admission.
 *
 * With --workers N the scopes live in one shared memory region mapped before the workers are
 * forked (the same address in each), guarded by a process-shared robust mutex: every worker
 * charges the same buckets and budgets. Each scope also keeps what each worker has reserved
 * and has in flight, so that a crashed worker's share can be given back when it restarts.
 *
 * Each limit per minute is a bucket holding up to that limit and refilling continuously at
 * limit/60 per second. Admission takes the request's estimate (1 request, its tokens, its
 * worst-case cost); the end of the request gives back or takes the difference with the real
 * figures, so a bucket may go below zero (debt) after an underestimate. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sophia/access.h"
#include "sophia/core.h"

#define SCOPE_BUCKETS 256
#define NS_PER_MIN 60e9

/* The table and, when shared, the scopes themselves. */
typedef struct space {
    pthread_mutex_t mu;
    sg_scope_t *table[SCOPE_BUCKETS];
    size_t used, cap; /* slots handed out, of cap (shared only) */
    sg_scope_t slots[];
} space_t;

static space_t local;
static space_t *sp = &local;
static int shared;

int sg_scopes_share(size_t max_scopes)
{
    size_t bytes = sizeof(space_t) + max_scopes * sizeof(sg_scope_t);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return -1;
    space_t *s = mem; /* zero-filled; pages are touched only as scopes are made */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->mu, &a);
    pthread_mutexattr_destroy(&a);
    s->cap = max_scopes;
    sp = s;
    shared = 1;
    return 0;
}

void sg_scopes_lock(void)
{
    if (!shared) return;
    /* A worker that died holding the lock left the scopes as they were between two updates of
     * one request: usable. */
    if (pthread_mutex_lock(&sp->mu) == EOWNERDEAD) pthread_mutex_consistent(&sp->mu);
}

void sg_scopes_unlock(void)
{
    if (shared) pthread_mutex_unlock(&sp->mu);
}

void sg_scopes_release_worker(int worker)
{
    if (worker < 0 || worker >= SG_WORKERS_MAX) return;
    sg_scopes_lock();
    for (size_t i = 0; i < SCOPE_BUCKETS; i++)
        for (sg_scope_t *s = sp->table[i]; s; s = s->next) {
            s->reserved -= s->reserved_by[worker];
            if (s->reserved < 0) s->reserved = 0;
            s->inflight -=
                s->inflight_by[worker] < s->inflight ? s->inflight_by[worker] : s->inflight;
            s->reserved_by[worker] = 0;
            s->inflight_by[worker] = 0;
        }
    sg_scopes_unlock();
}

static sg_scope_t *scope_alloc(void)
{
    if (!shared) return sg_xcalloc(1, sizeof(sg_scope_t));
    if (sp->used == sp->cap) return NULL;
    return &sp->slots[sp->used++];
}

static unsigned scope_hash(sg_scope_kind_t kind, const char *name)
{
    unsigned h = 2166136261u ^ (unsigned)kind;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
    return h % SCOPE_BUCKETS;
}

sg_scope_t *sg_scope_get(sg_scope_kind_t kind, const char *name)
{
    if (!name) name = "";
    unsigned h = scope_hash(kind, name);
    for (sg_scope_t *s = sp->table[h]; s; s = s->next)
        if (s->kind == kind && strcmp(s->name, name) == 0) return s;
    sg_scope_t *s = scope_alloc();
    if (!s) return NULL;
    s->kind = kind;
    sg_strlcpy(s->name, sizeof(s->name), name);
    s->next = sp->table[h];
    sp->table[h] = s;
    return s;
}

void sg_scopes_each(void (*fn)(const sg_scope_t *s, void *ud), void *ud)
{
    sg_scopes_lock();
    for (size_t i = 0; i < SCOPE_BUCKETS; i++)
        for (const sg_scope_t *s = sp->table[i]; s; s = s->next) fn(s, ud);
    sg_scopes_unlock();
}

void sg_scopes_clear(void)
{
    if (shared) return; /* the region goes with the last process */
    for (size_t i = 0; i < SCOPE_BUCKETS; i++) {
        sg_scope_t *s = sp->table[i];
        while (s) {
            sg_scope_t *next = s->next;
            free(s);
            s = next;
        }
        sp->table[i] = NULL;
    }
}

const char *sg_scope_kind_name(sg_scope_kind_t k)
{
    switch (k) {
    case SG_SCOPE_KEY:
        return "key";
    case SG_SCOPE_TEAM:
        return "team";
    case SG_SCOPE_GLOBAL:
        return "global";
    default:
        return "model";
    }
}

/* One bucket refilled over elapsed ns at cap per minute, never above cap. */
static double refill(double level, double cap, uint64_t elapsed_ns)
{
    if (cap <= 0) return 0;
    level += cap * (double)elapsed_ns / NS_PER_MIN;
    return level > cap ? cap : level;
}

void sg_limits_refill(sg_scope_t *s, const sg_limits_cfg_t *l, uint64_t now_ns)
{
    if (!s->primed) {
        /* A new scope (or one that had no limits) starts with full buckets. */
        s->req = l->rpm;
        s->tok = l->tpm;
        s->usd = l->usd_per_min;
        s->primed = 1;
    } else {
        uint64_t dt = now_ns > s->refill_ns ? now_ns - s->refill_ns : 0;
        /* A limit that appeared since starts full; a lowered one clamps the level. */
        s->req = s->limits.rpm > 0 ? refill(s->req, l->rpm, dt) : l->rpm;
        s->tok = s->limits.tpm > 0 ? refill(s->tok, l->tpm, dt) : l->tpm;
        s->usd = s->limits.usd_per_min > 0 ? refill(s->usd, l->usd_per_min, dt) : l->usd_per_min;
    }
    s->limits = *l;
    s->refill_ns = now_ns;
}

/* Milliseconds until a bucket at level holds need (cap per minute). */
static uint64_t wait_for(double level, double need, double cap)
{
    if (cap <= 0 || level >= need) return 0;
    if (need > cap) return UINT64_MAX;
    double ms = (need - level) * 60000.0 / cap;
    return (uint64_t)ceil(ms < 1 ? 1 : ms);
}

uint64_t sg_limits_wait_ms(const sg_scope_t *s, long tokens, double usd, const char **what)
{
    const sg_limits_cfg_t *l = &s->limits;
    uint64_t w = 0, x;
    *what = NULL;
    if ((x = wait_for(s->req, 1, l->rpm)) > w) w = x, *what = "requests";
    if ((x = wait_for(s->tok, (double)tokens, l->tpm)) > w) w = x, *what = "tokens";
    if ((x = wait_for(s->usd, usd, l->usd_per_min)) > w) w = x, *what = "usd";
    if (l->concurrent && s->inflight >= l->concurrent && w == 0) {
        /* A slot frees when some request ends: nothing to compute; look again soon. */
        w = 25;
        *what = "concurrent";
    }
    return w;
}

void sg_limits_take(sg_scope_t *s, long tokens, double usd)
{
    if (s->limits.rpm > 0) s->req -= 1;
    if (s->limits.tpm > 0) s->tok -= (double)tokens;
    if (s->limits.usd_per_min > 0) s->usd -= usd;
    s->inflight++;
    s->inflight_by[sg_worker_index]++;
}

void sg_limits_settle(sg_scope_t *s, long est_tokens, long tokens, double est_usd, double usd)
{
    if (s->inflight) s->inflight--;
    if (s->inflight_by[sg_worker_index]) s->inflight_by[sg_worker_index]--;
    if (s->limits.tpm > 0) {
        s->tok += (double)(est_tokens - tokens);
        if (s->tok > s->limits.tpm) s->tok = s->limits.tpm;
    }
    if (s->limits.usd_per_min > 0) {
        s->usd += est_usd - usd;
        if (s->usd > s->limits.usd_per_min) s->usd = s->limits.usd_per_min;
    }
}

/* OpenAI's reset format: "20ms", "1.5s", "6m0s". */
static void reset_text(double ms, char *out, size_t cap)
{
    ms = ms < 0 ? 0 : ceil(ms);
    if (ms < 1000)
        snprintf(out, cap, "%dms", (int)ceil(ms));
    else if (ms < 60000)
        snprintf(out, cap, "%.3gs", ms / 1000);
    else
        snprintf(out, cap, "%dm%ds", (int)(ms / 60000), (int)fmod(ms / 1000, 60));
}

static size_t header_set(char *out, size_t cap, const char *what, double limit, double level)
{
    char reset[32];
    double left = level < 0 ? 0 : floor(level);
    reset_text((limit - level) * 60000.0 / limit, reset, sizeof(reset));
    int n = snprintf(out, cap,
                     "x-ratelimit-limit-%s: %.0f\r\nx-ratelimit-remaining-%s: %.0f\r\n"
                     "x-ratelimit-reset-%s: %s\r\n",
                     what, limit, what, left, what, reset);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t sg_limits_headers(const sg_scope_t *rs, const sg_scope_t *ts, char *out, size_t cap)
{
    size_t n = 0;
    if (cap) out[0] = '\0';
    if (rs && rs->limits.rpm > 0)
        n += header_set(out + n, cap - n, "requests", rs->limits.rpm, rs->req);
    if (ts && ts->limits.tpm > 0)
        n += header_set(out + n, cap - n, "tokens", ts->limits.tpm, ts->tok);
    return n;
}
