/* Gateway configuration: one JSON file (with ${ENV} interpolation in string values) plus
 * environment variables for the simple case. */
#ifndef SOPHIA_CONFIG_H
#define SOPHIA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* A model's size class, for automatic routing. */
typedef enum { SG_TIER_SMALL = 0, SG_TIER_MEDIUM = 1, SG_TIER_LARGE = 2 } sg_tier_t;

/* Model capabilities (sg_model_cfg_t.caps). */
#define SG_CAP_TOOLS 1u
#define SG_CAP_JSON_SCHEMA 2u
#define SG_CAP_VISION 4u
#define SG_CAP_EMBED 8u /* an embedding model (POST /v1/embeddings), not a chat model */

typedef struct sg_model_cfg {
    char *id;          /* public model id within its provider, e.g. "hermes3-70b" */
    char *upstream_id; /* id sent upstream; defaults to id */
    char **aliases;    /* extra public names, e.g. "fast" */
    size_t n_aliases;
    double price_in_per_mtok;  /* USD per 1M prompt tokens */
    double price_out_per_mtok; /* USD per 1M completion tokens */
    int tier;                  /* sg_tier_t */
    long context_window;       /* tokens; 0 when unknown */
    unsigned caps;             /* SG_CAP_* */
    /* The provider kind's variant of the model, or NULL. Kind "cortex": which Snowflake
     * endpoint serves it, "complete" (/api/v2/cortex/inference:complete, the default) or
     * "openai" (/api/v2/cortex/v1/chat/completions). */
    char *api;
} sg_model_cfg_t;

/* One upstream server of a provider. */
typedef struct sg_endpoint_cfg {
    char *base_url;  /* no trailing slash; e.g. "http://10.0.0.5:8000/v1" */
    unsigned weight; /* share of requests relative to the provider's other endpoints (1) */
} sg_endpoint_cfg_t;

struct sg_provider_kind;

typedef struct sg_provider_cfg {
    char *name;                         /* "lambda" */
    char *kind;                         /* "openai" (OpenAI-compatible) or "cortex" (Snowflake) */
    const struct sg_provider_kind *ops; /* the kind's code (sophia/provider.h) */
    sg_endpoint_cfg_t *endpoints;       /* at least one once loaded */
    size_t n_endpoints;
    sg_model_cfg_t *models; /* configured (or built-in) models */
    size_t n_models;
    int discover; /* also serve the models the endpoints list (GET /models) */
    int pinned;   /* only the listed models: an unknown provider/<id> is refused, not passed on */
    void *ext;    /* the kind's own settings, owned (e.g. sg_cortex_cfg_t) */
} sg_provider_cfg_t;

/* A fallback chain: when a request for `from` (a public model name, an alias, or a tier name
 * "small" / "medium" / "large") cannot be served, the models in `to` are tried in order. */
typedef struct sg_fallback_cfg {
    char *from;
    char **to;
    size_t n_to;
} sg_fallback_cfg_t;

/* "routing": how model "auto" and provider hints are resolved (src/policy/route.c). */
typedef struct sg_routing_cfg {
    char *default_provider; /* NULL: "lambda" when configured, else the first provider */
    char *data_provider;    /* NULL: the first provider of kind "cortex" */
    char **data_keywords;   /* words that make a prompt data-local */
    size_t n_data_keywords;
    double small_below; /* complexity below this → a small model (0.3) */
    double large_above; /* complexity above this → a large model (0.7) */
    sg_fallback_cfg_t *fallbacks;
    size_t n_fallbacks;
} sg_routing_cfg_t;

/* "breaker": when an endpoint is taken out of rotation (src/policy/endpoint.c). */
typedef struct sg_breaker_cfg {
    uint64_t failures;     /* consecutive failures that open it (5) */
    uint64_t error_pct;    /* or this share of failures in the window (50) … */
    uint64_t min_requests; /* … once the window holds this many outcomes (20) */
    uint64_t window_ms;    /* (30000) */
    uint64_t cooldown_ms;  /* open → half-open: one trial request (10000) */
} sg_breaker_cfg_t;

/* "health": active checks of every endpoint (src/policy/health.c). */
typedef struct sg_health_cfg {
    uint64_t interval_ms;     /* between probes of one endpoint; 0: no active checks (30000) */
    uint64_t timeout_ms;      /* a probe's deadline (5000) */
    uint64_t startup_wait_ms; /* at start, wait this long for the first probes (3000) */
} sg_health_cfg_t;

/* "ledger": the durable usage ledger, a SQLite file (src/state/ledger.c). */
typedef struct sg_ledger_cfg {
    int enabled;             /* "ledger": null turns it off (on by default) */
    char *path;              /* "sophia.db" in the working directory */
    uint64_t flush_ms;       /* rows are written at least this often (200) */
    size_t queue_max;        /* rows waiting to be written; beyond, counted and dropped (65536) */
    uint64_t retention_days; /* older rows are deleted at start and daily; 0: kept (90) */
} sg_ledger_cfg_t;

struct sg_access_cfg;

typedef struct sg_config {
    char *listen_host; /* default "127.0.0.1" */
    int listen_port;   /* default 8080 */
    char *log_level;   /* "debug|info|warn|error", default "info" */

    /* ingress limits */
    size_t max_header_bytes;         /* default 16384 → 431 */
    size_t max_body_bytes;           /* default 1 MiB → 413 */
    uint64_t header_timeout_ms;      /* default 10000 → 408 then close */
    uint64_t idle_timeout_ms;        /* keep-alive idle and between body bytes, default 60000 */
    uint64_t body_timeout_ms;        /* whole request body, default 30000 → 408 then close */
    uint64_t write_stall_timeout_ms; /* client not reading, default 30000 → close */
    size_t max_connections;          /* default 10000 */
    size_t high_watermark;           /* default 65536 bytes queued per client */
    size_t low_watermark;            /* default 16384 */

    char **cors_origins; /* allowed origins; "*" allows any */
    size_t n_cors_origins;

    /* egress */
    uint64_t connect_timeout_ms;       /* default 5000 */
    uint64_t first_byte_timeout_ms;    /* default 60000 */
    uint64_t upstream_idle_timeout_ms; /* between bytes, default 60000 */
    uint64_t total_timeout_ms;         /* default 600000 */
    size_t max_retries;                /* extra attempts before any output, default 2 */
    uint64_t retry_base_ms;            /* first backoff, doubled each retry, default 250 */
    uint64_t deadline_ms;              /* a request's attempts, backoffs included (120000) */
    uint64_t sse_heartbeat_ms;         /* ": keep-alive" lines while a stream waits (15000) */

    sg_routing_cfg_t routing;
    sg_breaker_cfg_t breaker;
    sg_health_cfg_t health;

    uint64_t shutdown_grace_ms; /* default 10000 */

    struct sg_access_cfg *access; /* keys, teams, limits, budgets (sophia/access.h); never NULL
                                     once loaded */
    sg_ledger_cfg_t ledger;

    sg_provider_cfg_t *providers;
    size_t n_providers;

    struct sg_config_errors *warnings; /* what works but is probably a mistake (may be NULL) */
} sg_config_t;

/* One problem found while loading: a JSON path like "$.limits.max_body_bytes" and a message. */
typedef struct sg_config_error {
    char *path;
    char *message;
} sg_config_error_t;

/* Problems (or warnings) in the order found. */
typedef struct sg_config_errors {
    sg_config_error_t *items;
    size_t n;
} sg_config_errors_t;

/* Fills cfg with the defaults (no providers). */
void sg_config_defaults(sg_config_t *cfg);

/* Loads the configuration. path may be NULL (environment only). Starts from the defaults,
 * applies the file, then the environment (each provider kind reads its own variables:
 * LAMBDA_* for "openai", SNOWFLAKE_* for "cortex"). String values in the file may contain
 * ${NAME} (replaced by the environment variable; an unset variable is an error naming it),
 * ${file:PATH} (a secret file's content) and $$ for a literal $.
 * Every problem is appended to errs (all of them, not just the first); returns 0 when errs
 * is empty, -1 otherwise. On return cfg is always safe to sg_config_free. */
int sg_config_load(sg_config_t *cfg, const char *path, sg_config_errors_t *errs);

/* Parses "HOST:PORT" or "[IPv6]:PORT". Returns NULL with *host (caller frees) and *port, or
 * the reason it is invalid (a static string). */
const char *sg_config_parse_listen(const char *s, char **host, int *port);

/* Frees everything cfg owns (not cfg itself). */
void sg_config_free(sg_config_t *cfg);
void sg_config_errors_free(sg_config_errors_t *errs);

/* Finds a provider by name, or NULL. */
const sg_provider_cfg_t *sg_config_provider(const sg_config_t *cfg, const char *name);
/* The first provider of a kind ("cortex"), or NULL. */
const sg_provider_cfg_t *sg_config_provider_of_kind(const sg_config_t *cfg, const char *kind);

#endif
