/* Gateway configuration: one JSON file (with ${ENV} interpolation in string values) plus
 * environment variables for the simple case. */
#ifndef SOPHIA_CONFIG_H
#define SOPHIA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_model_cfg {
    char *id;          /* public model id within its provider, e.g. "hermes3-70b" */
    char *upstream_id; /* id sent upstream; defaults to id */
    char **aliases;    /* extra public names, e.g. "fast" */
    size_t n_aliases;
    double price_in_per_mtok;  /* USD per 1M prompt tokens */
    double price_out_per_mtok; /* USD per 1M completion tokens */
    /* kind "cortex" only: which Snowflake endpoint serves the model: "complete"
     * (/api/v2/cortex/inference:complete, the default) or "openai"
     * (/api/v2/cortex/v1/chat/completions). NULL for other kinds. */
    char *api;
} sg_model_cfg_t;

typedef struct sg_provider_cfg {
    char *name;     /* "lambda" */
    char *kind;     /* adapter: "openai" (OpenAI-compatible) or "cortex" (Snowflake) */
    char *base_url; /* e.g. "http://127.0.0.1:9000/v1" (no trailing slash after load); for
                       cortex the Snowflake host URL, default
                       https://<account host part>.snowflakecomputing.com */
    char *api_key;  /* secret; may be NULL (no Authorization sent) */
    sg_model_cfg_t *models;
    size_t n_models;

    /* kind "cortex" (Snowflake). account and user are required; exactly one of pat and
     * private_key_path. */
    char *account; /* account identifier as given, e.g. "myorg-myacct" */
    char *user;
    char *role;                   /* may be NULL */
    char *warehouse;              /* may be NULL */
    char *database;               /* may be NULL */
    char *schema;                 /* may be NULL */
    char *pat;                    /* secret: programmatic access token */
    char *private_key_path;       /* PKCS#8 PEM (RSA), possibly encrypted */
    char *private_key_passphrase; /* secret; may be NULL */
    int pat_warn_days;            /* warn when the PAT expires within this many days (7) */
} sg_provider_cfg_t;

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
    size_t max_retries;                /* retries of 429/503/504 before any output, default 2 */
    uint64_t retry_base_ms;            /* first backoff, doubled each retry, default 250 */

    uint64_t shutdown_grace_ms; /* default 10000 */

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
 * applies the file, then the environment: LAMBDA_BASE_URL and LAMBDA_API_KEY fill the
 * "lambda" provider's base_url / api_key when the file leaves them unset (and create the
 * provider, with the built-in Lambda model catalog, when the file has none and
 * LAMBDA_BASE_URL is set); SNOWFLAKE_* likewise fill or create the "cortex" provider (see
 * config.c). String values in the file may contain ${NAME} (replaced by the environment
 * variable; an unset variable is an error naming it), ${file:PATH} (a secret file's content)
 * and $$ for a literal $.
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

#endif
