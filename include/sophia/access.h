/* Who may spend what: client keys, teams, the global section and per provider/model limits
 * (configuration, src/policy/keys.c), token buckets (src/policy/limits.c), budgets
 * (src/policy/budget.c), and the admission stage that charges them for one request
 * (src/pipeline/admission.c).
 *
 * Configuration (every field but a key's "hash" optional):
 *   "keys": [{"name", "hash": "sha256:<hex>", "team", "limits": {…}, "budget": {…},
 *             "models": ["pattern", …]}],
 *   "teams": [{"name", "limits", "budget"}],
 *   "global": {"limits", "budget"},
 *   "model_limits": [{"match": "<provider>" | "<public model name>", "limits"}],
 *   "admin_keys": ["sha256:<hex>" | "<the key itself, e.g. ${ADMIN_KEY}>"],
 *   "allow_unauthenticated": false,
 *   "throttle": {"queue_ms": 0, "default_max_tokens": 4096}
 * with "limits": {"rpm", "tpm", "usd_per_min", "concurrent"} and
 * "budget": {"daily_usd", "monthly_usd", "soft_pct", "mode": "hard" | "soft"}. */
#ifndef SOPHIA_ACCESS_H
#define SOPHIA_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "sophia/config.h"
#include "sophia/http.h"
#include "sophia/provider.h"
#include "sophia/record.h"

#define SG_KEY_HASH_LEN 32 /* SHA-256 */

typedef struct sg_limits_cfg {
    double rpm, tpm, usd_per_min; /* per minute; 0: no limit */
    uint64_t concurrent;          /* requests in flight; 0: no limit */
} sg_limits_cfg_t;

typedef struct sg_budget_cfg {
    double daily_usd, monthly_usd; /* UTC calendar day and month; 0: no budget */
    double soft_pct;               /* warn (log line, metric) once this share is spent (80) */
    int soft;                      /* mode "soft": over budget is recorded, not refused */
} sg_budget_cfg_t;

typedef struct sg_key_cfg {
    char *name;
    unsigned char hash[SG_KEY_HASH_LEN];
    char *team; /* NULL when none */
    sg_limits_cfg_t limits;
    sg_budget_cfg_t budget;
    char **models; /* allowed public model names ('*' matches any run of characters); none:
                      every model */
    size_t n_models;
} sg_key_cfg_t;

typedef struct sg_team_cfg {
    char *name;
    sg_limits_cfg_t limits;
    sg_budget_cfg_t budget;
} sg_team_cfg_t;

typedef struct sg_model_limits_cfg {
    char *match; /* a provider name, or a public model name (the route's) */
    sg_limits_cfg_t limits;
} sg_model_limits_cfg_t;

typedef struct sg_access_cfg {
    sg_key_cfg_t *keys; /* sorted by hash */
    size_t n_keys;
    sg_team_cfg_t *teams;
    size_t n_teams;
    sg_limits_cfg_t global_limits;
    sg_budget_cfg_t global_budget;
    sg_model_limits_cfg_t *model_limits;
    size_t n_model_limits;
    unsigned char (*admin)[SG_KEY_HASH_LEN]; /* admin key hashes (admin_keys, SOPHIA_ADMIN_KEY) */
    size_t n_admin;
    int allow_unauthenticated;
    uint64_t queue_ms;           /* wait up to this long for a limit instead of refusing (0) */
    uint64_t default_max_tokens; /* output assumed when a request sets no max_tokens (4096) */
} sg_access_cfg_t;

/* ---- keys (src/policy/keys.c) ------------------------------------------------------------- */

/* "sha256:<64 hex digits>" of a key (out holds at least 72 bytes). */
void sg_key_hash_text(const char *key, size_t len, char *out, size_t cap);
/* The client key presented on req (Authorization: Bearer, or x-api-key), compared in constant
 * time against every configured hash. Returns 0 with *key (NULL when no keys are configured
 * and the gateway serves without them), or -1 with a 401 invalid_api_key in e. */
int sg_keys_authenticate(const sg_access_cfg_t *a, const sg_http_req_t *req,
                         const sg_key_cfg_t **key, sg_error_t *e);
/* An admin key on req. Returns 0, or -1 with 401 (missing or wrong) or 403 (none configured)
 * in e. */
int sg_keys_admin(const sg_access_cfg_t *a, const sg_http_req_t *req, sg_error_t *e);
/* 1 when key may use the model with this public name (always with no key or no list). */
int sg_keys_model_allowed(const sg_key_cfg_t *key, const char *public_name);
/* The team of a key, or NULL. */
const sg_team_cfg_t *sg_access_team(const sg_access_cfg_t *a, const char *name);
/* `sophia-gateway hash-key`: reads a key on stdin, prints the "hash" line. Returns the exit
 * status. */
int sg_keys_hash_cli(void);
/* The SHA-256 of a key. */
void sg_key_hash(const char *key, size_t len, unsigned char out[SG_KEY_HASH_LEN]);
/* 1 when two hashes are equal, 0 otherwise; the time taken does not depend on where (or
 * whether) they differ. */
int sg_key_hash_equal(const unsigned char *a, const unsigned char *b);
/* The configured client key with this hash, or NULL (binary search on the first bytes, then
 * a constant-time comparison of the whole hash). */
const sg_key_cfg_t *sg_keys_find(const sg_access_cfg_t *a,
                                 const unsigned char hash[SG_KEY_HASH_LEN]);
/* 1 when pattern ('*' matches any run of characters, even none) matches name whole. */
int sg_keys_pattern_match(const char *pattern, const char *name);
/* 1 for a loopback listen host: 127.0.0.0/8, ::1 (also IPv4-mapped) or "localhost". */
int sg_host_is_loopback(const char *host);
/* The startup rule: with no client keys the gateway serves loopback only, unless
 * allow_unauthenticated. Returns NULL when a may serve on host, else the problem (in msg). */
const char *sg_keys_check_listen(const sg_access_cfg_t *a, const char *host, char *msg, size_t cap);

extern const struct sg_config_section sg_keys_section, sg_teams_section, sg_global_section,
    sg_model_limits_section, sg_admin_keys_section, sg_allow_unauth_section, sg_throttle_section,
    sg_ledger_section;

/* ---- scopes: the process-wide state of each key, team, global and provider/model ---------- */

typedef enum { SG_SCOPE_KEY, SG_SCOPE_TEAM, SG_SCOPE_GLOBAL, SG_SCOPE_MODEL } sg_scope_kind_t;

/* Worker processes (--workers N) at most, and this process's index (0 without workers). */
#define SG_WORKERS_MAX 64
extern int sg_worker_index, sg_worker_count;

typedef struct sg_scope {
    sg_scope_kind_t kind;
    char name[128]; /* the key's, team's or match's name; "" for global */
    /* token buckets (src/policy/limits.c): each holds up to its per-minute limit and refills
     * continuously; admission takes the estimate, the end gives back or takes the difference */
    sg_limits_cfg_t limits; /* as last configured */
    double req, tok, usd;
    uint64_t refill_ns;
    int primed;
    uint64_t inflight;
    /* budget (src/policy/budget.c) */
    sg_budget_cfg_t budget; /* as last configured */
    long day, month;        /* the UTC day (days since 1970) and month (year*12+month) */
    double day_spent, month_spent, reserved;
    /* each worker's share of reserved and inflight, given back if that worker dies */
    double reserved_by[SG_WORKERS_MAX];
    uint64_t inflight_by[SG_WORKERS_MAX];
    int warned_day, warned_month;
    /* counts, for the metrics */
    uint64_t throttled, budget_denied, soft_warnings;
    struct sg_scope *next;
} sg_scope_t;

/* The scope of kind and name, created on first use (never freed before sg_scopes_clear); NULL
 * only when the shared region is full. With workers, call it (and change scopes) between
 * sg_scopes_lock and sg_scopes_unlock. */
sg_scope_t *sg_scope_get(sg_scope_kind_t kind, const char *name);
/* Visits every scope (under the lock). */
void sg_scopes_each(void (*fn)(const sg_scope_t *s, void *ud), void *ud);
/* Puts the scopes in memory shared with processes forked afterwards (--workers), room for
 * max_scopes. Returns 0, or -1 when the region cannot be mapped. */
int sg_scopes_share(size_t max_scopes);
/* The lock of shared scopes (no-ops in a single process). */
void sg_scopes_lock(void);
void sg_scopes_unlock(void);
/* Gives back what a dead worker had reserved and in flight (its requests died with it). */
void sg_scopes_release_worker(int worker);
/* Frees every scope (at exit). */
void sg_scopes_clear(void);
const char *sg_scope_kind_name(sg_scope_kind_t k);

/* ---- token buckets (src/policy/limits.c) -------------------------------------------------- */

/* Refills s's buckets to now under limits l. */
void sg_limits_refill(sg_scope_t *s, const sg_limits_cfg_t *l, uint64_t now_ns);
/* Whether one request of tokens and usd fits now; 0, or the milliseconds until it would
 * (UINT64_MAX when it never can: more than a whole minute's limit), with what names the limit
 * ("requests", "tokens", "usd", "concurrent"). */
uint64_t sg_limits_wait_ms(const sg_scope_t *s, long tokens, double usd, const char **what);
void sg_limits_take(sg_scope_t *s, long tokens, double usd);
/* The request ended: its slot is freed and the buckets settle to the real figures. */
void sg_limits_settle(sg_scope_t *s, long est_tokens, long tokens, double est_usd, double usd);
/* OpenAI's x-ratelimit-{limit,remaining,reset}-requests lines for rs and -tokens lines for ts
 * (either may be NULL; nothing for a limit the scope does not have). */
size_t sg_limits_headers(const sg_scope_t *rs, const sg_scope_t *ts, char *out, size_t cap);

/* ---- budgets (src/policy/budget.c) -------------------------------------------------------- */

/* Moves s to the current UTC day and month (a new period starts with nothing spent). */
void sg_budget_roll(sg_scope_t *s, int64_t unix_now);
/* What s has spent in the current UTC day (monthly 0) or month, as of unix_now (0 once a new
 * period began, even before a request moved s into it). */
double sg_budget_spent(const sg_scope_t *s, int monthly, int64_t unix_now);
/* Whether usd more can be reserved under s's budget: 0, or -1 with the period that is
 * exhausted ("daily", "monthly") and the seconds until it resets. */
int sg_budget_check(const sg_scope_t *s, double usd, const char **period, int64_t unix_now,
                    long *reset_s);
/* Records a request's cost (reserved is the amount it held). Warns at soft_pct. */
void sg_budget_settle(sg_scope_t *s, double reserved, double cost, int64_t unix_now);
/* Adds spend found in the ledger at start (day and month so far) to the key's, its team's
 * and the global scope. */
void sg_budget_seed(const char *key, const char *team, double day_usd, double month_usd);

/* ---- admission (src/pipeline/admission.c) ------------------------------------------------- */

typedef enum { SG_ADMIT_OK = 0, SG_ADMIT_WAIT = 1, SG_ADMIT_DENY = -1 } sg_admit_t;

struct sg_plan;
struct sg_gen;

/* Charges the request (rec->ticket.key, rec->team) against every scope that applies, for the
 * plan's worst case: the prompt estimate plus max_tokens (or throttle.default_max_tokens)
 * at the dearest candidate's prices. OK: admitted (the plan may have lost candidates the
 * key may not use). WAIT: *wait_ms until a limit allows it (queue mode). DENY: e holds 403
 * (model not allowed), 429 rate_limit_exceeded or budget_exceeded (rec->ticket.retry_after_s
 * set). op is the pipeline's sg_op_t (what the body is). */
sg_admit_t sg_admit(const struct sg_gen *g, struct sg_plan *plan, const cJSON *body, int op,
                    sg_record_t *rec, uint64_t waited_ms, uint64_t *wait_ms, sg_error_t *e);
/* A stream relayed `tokens` more output tokens: 0, or -1 when its running cost passes what
 * the hard budgets have left (e: 429 budget_exceeded). */
int sg_admit_stream(sg_record_t *rec, long tokens, sg_error_t *e);
/* The request ended (rec's cost computed): every scope settles. Idempotent. */
void sg_admit_settle(sg_record_t *rec);
/* The lines for the client: Retry-After of a refusal, and x-ratelimit-* (per limit, the scope
 * with the least left). */
size_t sg_admit_headers(const sg_record_t *rec, char *out, size_t cap);

#endif
