/* Gateway configuration: defaults, then one JSON file, then the environment.
 *
 * FILE FORMAT (every key optional unless noted; unknown keys are errors, to catch typos):
 *
 * {
 *   "listen": "127.0.0.1:8080",        // "HOST:PORT" or "[IPv6]:PORT"; port 0-65535 (0 = any)
 *   "log_level": "info",               // "debug" | "info" | "warn" | "error"
 *   "limits": {
 *     "max_header_bytes": 16384,       // integer >= 1; larger request head → 431
 *     "max_body_bytes": 1048576,       // integer >= 1; larger request body → 413
 *     "header_timeout_ms": 10000,      // integer >= 1; head not received in time → 408
 *     "idle_timeout_ms": 60000,        // integer >= 1; keep-alive idle, and between body bytes
 *     "body_timeout_ms": 30000,        // integer >= 1; whole body not received in time → 408
 *     "write_stall_timeout_ms": 30000, // integer >= 1; client not reading → close
 *     "max_connections": 10000,        // integer >= 1
 *     "high_watermark": 65536,         // integer >= 1; bytes queued per client
 *     "low_watermark": 16384           // integer >= 0; must be < high_watermark
 *   },
 *   "cors": {"allowed_origins": ["https://app.example.com"]},  // "*" or scheme://host[:port]
 *   "upstream": {                      // every value an integer >= 1 (max_retries >= 0)
 *     "connect_timeout_ms": 5000, "first_byte_timeout_ms": 60000,
 *     "idle_timeout_ms": 60000, "total_timeout_ms": 600000,
 *     "max_retries": 2, "retry_base_ms": 250  // 429/503/504 retried before any output
 *   },
 *   "shutdown_grace_ms": 10000,        // integer >= 0
 *   "providers": {                     // object keyed by provider name ([A-Za-z0-9_.-]+)
 *     "lambda": {
 *       "kind": "openai",              // required ("openai" | "cortex"), except that "lambda"
 *                                      // defaults to "openai" and "cortex" to "cortex"
 *       "base_url": "${LAMBDA_BASE_URL}", // required http:// or https:// URL; a trailing '/'
 *                                      // is stripped; "lambda" falls back to LAMBDA_BASE_URL
 *       "api_key": "${LAMBDA_API_KEY}", // string or null (no Authorization header); when the
 *                                      // key is absent "lambda" falls back to LAMBDA_API_KEY
 *       "models": [                    // required non-empty array, except "lambda" without
 *                                      // "models" gets the built-in Lambda catalog below
 *         {"id": "hermes3-70b",        // required; public name, unique in the whole config
 *          "upstream_id": "hermes3-70b", // optional, defaults to id
 *          "aliases": ["fast"],        // optional; extra public names, unique too
 *          "price_in": 0.12,           // optional USD per 1M prompt tokens, >= 0
 *          "price_out": 0.30}          // optional USD per 1M completion tokens, >= 0
 *       ]                              // (missing prices: the built-in catalog price for
 *     },                               // "lambda" models it knows, else 0)
 *     "cortex": {                      // Snowflake Cortex REST (kind "cortex")
 *       "kind": "cortex",              // optional for a provider named "cortex"
 *       "account": "${SNOWFLAKE_ACCOUNT}", // required; account identifier, e.g.
 *                                      // "myorg-myacct" or a locator "xy12345.us-east-1"
 *                                      // (letters, digits, '-', '_', '.')
 *       "user": "SVC_GATEWAY",         // required, non-empty
 *       "role": "CORTEX_ROLE",         // optional (string or null), like the next three
 *       "warehouse": "WH", "database": "DB", "schema": "PUBLIC",
 *       "pat": "${SNOWFLAKE_PAT}",     // programmatic access token (no whitespace/control
 *                                      // characters), OR
 *       "private_key_path": "/path/key.p8", // PKCS#8 PEM RSA key; must be a readable file
 *       "private_key_passphrase": "${SNOWFLAKE_PRIVATE_KEY_PASSPHRASE}", // optional, only
 *                                      // with private_key_path (string or null)
 *                                      // exactly one of "pat" and "private_key_path"
 *       "base_url": "https://…",       // optional http(s) override; default
 *                                      // https://<host>.snowflakecomputing.com where host is
 *                                      // the account lower-cased with '_' → '-' (dots kept)
 *       "pat_warn_days": 7,            // integer 0-3650: warn when the PAT expires sooner
 *       "models": [                    // optional: without it, the built-in Cortex catalog
 *         {"id": "llama3.1-70b", "upstream_id": "llama3.1-70b", "aliases": ["big"],
 *          "price_in": 2.42, "price_out": 2.42, // default: built-in Cortex catalog price
 *          "api": "complete"}          // "complete" (default; /api/v2/cortex/inference:
 *       ]                              // complete) or "openai" (/api/v2/cortex/v1/chat/
 *     }                                // completions); only on kind "cortex" models
 *   }
 * }
 * "api_key" is an error on a cortex provider (cortex uses pat or private_key_path), and the
 * Snowflake keys (account, user, role, warehouse, database, schema, pat, private_key_path,
 * private_key_passphrase, pat_warn_days) and a model's "api" are unknown keys elsewhere.
 *
 * Every string value may contain ${NAME} (replaced by that environment variable; unset is
 * an error), ${file:PATH} (the file's content minus trailing white space; for secrets that
 * are rotated with SIGHUP) and $$ (a literal $); any other $ is kept as is. // line and block
 * comments are allowed. Environment (applied after the file): SOPHIA_LISTEN overrides "listen",
 * SOPHIA_LOG_LEVEL overrides "log_level"; LAMBDA_BASE_URL / LAMBDA_API_KEY as described
 * above, and when the file defines no "lambda" provider and LAMBDA_BASE_URL is set, a
 * "lambda" provider is created with the built-in catalog. SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER,
 * SNOWFLAKE_ROLE, SNOWFLAKE_WAREHOUSE, SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA,
 * SNOWFLAKE_BASE_URL, SNOWFLAKE_PAT, SNOWFLAKE_PRIVATE_KEY_PATH and
 * SNOWFLAKE_PRIVATE_KEY_PASSPHRASE fill the keys the provider named "cortex" leaves out
 * (SNOWFLAKE_BASE_URL thus replaces the derived default; the credential variables are used
 * only when the file sets neither "pat" nor "private_key_path", and setting both
 * SNOWFLAKE_PAT and SNOWFLAKE_PRIVATE_KEY_PATH then is an error). When the file has no
 * provider named "cortex" or of kind "cortex" and SNOWFLAKE_ACCOUNT is set, a "cortex"
 * provider is created from these variables with the built-in Cortex catalog, validated
 * like the file (errors at "env:SNOWFLAKE_..."). Empty environment variables count as unset
 * (except inside ${NAME}, where the empty value is used).
 *
 * Errors carry a JSON path ("$" for the file as a whole, "$.limits.max_body_bytes",
 * "$.providers.lambda.models[2].price_in") or "env:NAME" for an environment variable.
 * Error messages never contain api_key, pat or passphrase values, interpolated values, base
 * URLs or environment values (a private_key_path written literally in the file may appear). */
#include "sophia/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/log.h"

#define CONFIG_FILE_MAX (16u * 1024 * 1024)
#define MAX_JSON_INT 9007199254740991.0 /* 2^53 - 1: every integer a double holds exactly */
#define BUILTIN_PATH "(built-in Lambda catalog)"
#define CORTEX_BUILTIN_PATH "(built-in Cortex catalog)"
#define PAT_WARN_DAYS_DEFAULT 7
#define PAT_WARN_DAYS_MAX 3650

/* ---- built-in Lambda model catalog ----------------------------------------------------
 * DEFAULTS ONLY, overridable by configuration: used for the "lambda" provider when it is
 * created from the environment or configured without "models", and for the prices of
 * "lambda" models that omit price_in / price_out. Prices are USD per 1M tokens (in / out);
 * see docs/providers.md (8B 0.025/0.04, 70B 0.12/0.30, 405B 0.80/0.80; the others vary
 * by source). */
typedef struct catalog_entry {
    const char *id;
    double price_in;
    double price_out;
    const char *alias; /* or NULL */
} catalog_entry_t;

static const catalog_entry_t lambda_catalog[] = {
    {"llama3.1-8b-instruct", 0.025, 0.04, "fast"},
    {"llama3.1-70b-instruct-fp8", 0.12, 0.30, NULL},
    {"llama3.3-70b-instruct-fp8", 0.12, 0.30, "smart"},
    {"llama3.1-405b-instruct-fp8", 0.80, 0.80, NULL},
    {"hermes3-8b", 0.025, 0.04, NULL},
    {"hermes3-70b", 0.12, 0.30, NULL},
    {"hermes3-405b", 0.80, 0.80, NULL},
    {"llama-4-maverick-17b-128e-instruct-fp8", 0.18, 0.60, NULL},
    {"llama-4-scout-17b-16e-instruct", 0.08, 0.30, NULL},
    {"deepseek-r1-0528", 0.54, 2.19, NULL},
    {"deepseek-v3-0324", 0.34, 0.88, NULL},
    {"qwen25-coder-32b-instruct", 0.07, 0.16, NULL},
    {"qwen3-32b-fp8", 0.10, 0.30, NULL},
    {"lfm-40b", 0.10, 0.20, NULL},
};

/* ---- built-in Snowflake Cortex model catalog ------------------------------------------
 * DEFAULTS ONLY, overridable by configuration: used for a kind "cortex" provider created
 * from the environment or configured without "models", and for the prices of cortex models
 * that omit price_in / price_out. Names are the current Cortex names (docs/providers.md
 * ). Prices are USD per 1M tokens at $2.00 per AI credit:
 *  - from docs/providers.md, credits per 1M tokens (one rate for input and output): llama3.1-8b
 *    0.19, llama3.1-70b 1.21, llama3.1-405b 3.00, mistral-large2 1.95, mistral-7b 0.12,
 *    claude-3-5-sonnet 2.55 (e.g. 1.21 credits x $2.00 = $2.42);
 *  - every other entry is an ESTIMATE (no published credit price): the model vendor's
 *    public list price plus 10% for the Claude and OpenAI models, and a guess close to
 *    comparable open models for llama4-maverick, deepseek-r1 and snowflake-llama-3.3-70b.
 *    Configure real prices with price_in / price_out. */
#define CREDIT_USD 2.00

static const catalog_entry_t cortex_catalog[] = {
    {"claude-sonnet-4-5", 3.30, 16.50, "cortex-smart"}, /* estimate */
    {"claude-haiku-4-5", 1.10, 5.50, NULL},             /* estimate */
    {"claude-3-7-sonnet", 3.30, 16.50, NULL},           /* estimate */
    {"claude-3-5-sonnet", 2.55 * CREDIT_USD, 2.55 * CREDIT_USD, NULL},
    {"openai-gpt-4.1", 2.20, 8.80, NULL},    /* estimate */
    {"openai-gpt-5", 1.38, 11.00, NULL},     /* estimate */
    {"openai-gpt-5-mini", 0.28, 2.20, NULL}, /* estimate */
    {"llama4-maverick", 0.50, 0.50, NULL},   /* estimate (0.25 credits) */
    {"llama3.1-8b", 0.19 * CREDIT_USD, 0.19 * CREDIT_USD, "cortex-fast"},
    {"llama3.1-70b", 1.21 * CREDIT_USD, 1.21 * CREDIT_USD, NULL},
    {"llama3.1-405b", 3.00 * CREDIT_USD, 3.00 * CREDIT_USD, NULL},
    {"deepseek-r1", 2.70, 2.70, NULL}, /* estimate (1.35 credits) */
    {"mistral-7b", 0.12 * CREDIT_USD, 0.12 * CREDIT_USD, NULL},
    {"mistral-large2", 1.95 * CREDIT_USD, 1.95 * CREDIT_USD, NULL},
    {"snowflake-llama-3.3-70b", 1.20, 1.20, NULL}, /* estimate (0.60 credits) */
};

typedef struct catalog {
    const catalog_entry_t *entries;
    size_t n;
    const char *label; /* shown as the "already used at" place of its names */
    const char *api;   /* the models' "api" (cortex), or NULL */
} catalog_t;

static const catalog_t lambda_cat = {lambda_catalog, SG_ARRAY_LEN(lambda_catalog), BUILTIN_PATH,
                                     NULL};
static const catalog_t cortex_cat = {cortex_catalog, SG_ARRAY_LEN(cortex_catalog),
                                     CORTEX_BUILTIN_PATH, "complete"};

static const catalog_entry_t *catalog_find(const catalog_t *cat, const char *id)
{
    for (size_t i = 0; i < cat->n; i++)
        if (strcmp(cat->entries[i].id, id) == 0) return &cat->entries[i];
    return NULL;
}

/* ---- loading context ------------------------------------------------------------------ */

typedef struct name_ref {
    const char *name; /* borrowed from the config */
    char *path;
    int secret; /* came from interpolation: never echo it */
} name_ref_t;

typedef struct ctx {
    sg_config_t *cfg;
    sg_config_errors_t *errs;
    sg_buf_t path; /* current JSON path */
    name_ref_t *names;
    size_t n_names, cap_names;
} ctx_t;

static char *xvasprintf(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    SG_ASSERT(n >= 0);
    char *s = sg_xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

__attribute__((format(printf, 3, 4))) static void add_error(sg_config_errors_t *errs,
                                                            const char *path, const char *fmt, ...)
{
    errs->items = sg_xrealloc(errs->items, (errs->n + 1) * sizeof(*errs->items));
    sg_config_error_t *e = &errs->items[errs->n++];
    e->path = sg_xstrdup(path);
    va_list ap;
    va_start(ap, fmt);
    e->message = xvasprintf(fmt, ap);
    va_end(ap);
}

static const char *cur_path(ctx_t *c)
{
    return c->path.data ? c->path.data : "$";
}

/* A warning (the configuration works but is probably a mistake) at path. */
__attribute__((format(printf, 3, 4))) static void add_warning(ctx_t *c, const char *path,
                                                              const char *fmt, ...)
{
    if (!c->cfg->warnings) c->cfg->warnings = sg_xcalloc(1, sizeof(*c->cfg->warnings));
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    add_error(c->cfg->warnings, path, "%s", msg);
    free(msg);
}

/* Error at the current path. */
__attribute__((format(printf, 2, 3))) static void errf(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    add_error(c->errs, cur_path(c), "%s", msg);
    free(msg);
}

static int is_ident(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (s++; *s; s++) {
        char ch = *s;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* Appends .key (or ["key"] when key is not identifier-like); returns the length to restore. */
static size_t path_push_key(ctx_t *c, const char *key)
{
    size_t old = c->path.len;
    if (is_ident(key)) {
        sg_buf_printf(&c->path, ".%s", key);
    } else {
        sg_buf_append(&c->path, "[", 1);
        sg_json_escape_append(&c->path, key, strlen(key));
        sg_buf_append(&c->path, "]", 1);
    }
    return old;
}

static size_t path_push_index(ctx_t *c, size_t i)
{
    size_t old = c->path.len;
    sg_buf_printf(&c->path, "[%zu]", i);
    return old;
}

static void path_pop(ctx_t *c, size_t old)
{
    c->path.len = old;
    if (c->path.data) c->path.data[old] = '\0';
}

static const char *json_type_name(const cJSON *it)
{
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "invalid";
}

/* 1 when an earlier sibling of it has the same key. */
static int is_dup_key(const cJSON *obj, const cJSON *it)
{
    for (const cJSON *p = obj->child; p && p != it; p = p->next)
        if (p->string && it->string && strcmp(p->string, it->string) == 0) return 1;
    return 0;
}

static int in_list(const char *const *list, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], k) == 0) return 1;
    return 0;
}

/* Reports unknown and duplicate keys of obj (at the current path). Keys in foreign (which
 * belong to another provider kind) are reported with foreign_msg instead of "unknown key". */
static void check_keys_ex(ctx_t *c, const cJSON *obj, const char *const *allowed, size_t n,
                          const char *const *foreign, size_t nf, const char *foreign_msg)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        size_t old = path_push_key(c, k);
        if (!in_list(allowed, n, k)) {
            if (foreign && in_list(foreign, nf, k))
                errf(c, "%s", foreign_msg);
            else
                errf(c, "unknown key");
        } else if (is_dup_key(obj, it)) {
            errf(c, "duplicate key");
        }
        path_pop(c, old);
    }
}

static void check_keys(ctx_t *c, const cJSON *obj, const char *const *allowed, size_t n)
{
    check_keys_ex(c, obj, allowed, n, NULL, 0, NULL);
}

/* ---- values ---------------------------------------------------------------------------- */

static int is_env_name_char(char ch, int first)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Appends the content of a secret file (at most 64 KiB, trailing white space dropped).
 * Returns 0, or -1 after reporting (the message names the path, never the content). */
static int read_secret_file(ctx_t *c, const char *path, sg_buf_t *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        errf(c, "cannot read secret file %s: %s", path, strerror(errno));
        return -1;
    }
    char *data = sg_xmalloc(65537);
    size_t n = fread(data, 1, 65537, f);
    int err = ferror(f);
    fclose(f);
    int rc = 0;
    if (err) {
        errf(c, "cannot read secret file %s", path);
        rc = -1;
    } else if (n > 65536) {
        errf(c, "secret file %s is larger than 64 KiB", path);
        rc = -1;
    } else {
        while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r' || data[n - 1] == ' ' ||
                         data[n - 1] == '\t'))
            n--;
        sg_buf_append(b, data, n);
    }
    memset(data, 0, 65537);
    free(data);
    return rc;
}

/* Expands ${NAME}, ${file:PATH} and $$ in in. Returns 0 with *out (caller frees), or -1 after
 * reporting every problem at the current path. *interp is set when a variable was substituted. */
static int interpolate(ctx_t *c, const char *in, char **out, int *interp)
{
    sg_buf_t b;
    sg_buf_init(&b, (size_t)-2);
    int bad = 0;
    *interp = 0;
    *out = NULL;
    for (const char *p = in; *p;) {
        if (p[0] != '$' || (p[1] != '$' && p[1] != '{')) {
            sg_buf_append(&b, p, 1);
            p++;
            continue;
        }
        if (p[1] == '$') {
            sg_buf_append(&b, "$", 1);
            p += 2;
            continue;
        }
        const char *name = p + 2;
        const char *end = strchr(name, '}');
        if (!end) {
            errf(c, "unterminated ${ (missing '}')");
            bad = 1;
            break;
        }
        size_t n = (size_t)(end - name);
        if (n > 5 && strncmp(name, "file:", 5) == 0) {
            /* ${file:PATH}: the file's content without trailing white space, so secrets can
             * live in files (mounted secrets) and be rotated with SIGHUP. */
            char *path = sg_xstrndup(name + 5, n - 5);
            if (read_secret_file(c, path, &b) != 0)
                bad = 1;
            else
                *interp = 1;
            free(path);
            p = end + 1;
            continue;
        }
        int valid = n > 0;
        for (size_t i = 0; i < n && valid; i++) valid = is_env_name_char(name[i], i == 0);
        if (!valid) {
            errf(c, "invalid environment variable name in ${...} (use letters, digits, '_')");
            bad = 1;
        } else {
            char *var = sg_xstrndup(name, n);
            const char *val = getenv(var);
            if (!val) {
                errf(c, "environment variable %s is not set", var);
                bad = 1;
            } else {
                sg_buf_append_str(&b, val);
                *interp = 1;
            }
            free(var);
        }
        p = end + 1;
    }
    if (bad) {
        sg_buf_dispose(&b);
        return -1;
    }
    *out = sg_buf_steal(&b, NULL);
    return 0;
}

/* Reads a string value (with interpolation). Returns 0 with *out, or -1 after reporting. */
static int get_str(ctx_t *c, const cJSON *it, char **out, int *interp)
{
    *out = NULL;
    *interp = 0;
    if (!cJSON_IsString(it)) {
        errf(c, "must be a string, not %s", json_type_name(it));
        return -1;
    }
    return interpolate(c, it->valuestring, out, interp);
}

/* Reads an integer in [min, 2^53). Returns 0, or -1 after reporting. */
static int get_uint(ctx_t *c, const cJSON *it, uint64_t min, uint64_t *out)
{
    const char *want = min >= 1 ? "a positive integer" : "a non-negative integer";
    if (!cJSON_IsNumber(it)) {
        errf(c, "must be %s, not %s", want, json_type_name(it));
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v)) {
        errf(c, "must be %s (got a fraction)", want);
        return -1;
    }
    if (v < (double)min) {
        errf(c, "must be %s (got %.0f)", want, v);
        return -1;
    }
    if (v > MAX_JSON_INT) {
        errf(c, "is too large (at most %.0f)", MAX_JSON_INT);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int get_price(ctx_t *c, const cJSON *it, double *out)
{
    if (!cJSON_IsNumber(it)) {
        errf(c, "must be a number (USD per 1M tokens), not %s", json_type_name(it));
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v < 0) {
        errf(c, "must be a non-negative number (USD per 1M tokens)");
        return -1;
    }
    *out = v;
    return 0;
}

const char *sg_config_parse_listen(const char *s, char **host, int *port)
{
    const char *colon;
    const char *h;
    size_t hn;
    *host = NULL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) return "missing ']' after an IPv6 address (expected [IPv6]:PORT)";
        if (close[1] != ':') return "expected [IPv6]:PORT";
        h = s + 1;
        hn = (size_t)(close - h);
        colon = close + 1;
        char tmp[INET6_ADDRSTRLEN + 1];
        unsigned char addr[16];
        if (hn == 0 || hn >= sizeof(tmp)) return "invalid IPv6 address";
        memcpy(tmp, h, hn);
        tmp[hn] = '\0';
        if (inet_pton(AF_INET6, tmp, addr) != 1) return "invalid IPv6 address";
    } else {
        colon = strrchr(s, ':');
        if (!colon) return "expected HOST:PORT or [IPv6]:PORT";
        h = s;
        hn = (size_t)(colon - s);
        if (hn == 0) return "missing host (expected HOST:PORT, e.g. 0.0.0.0:8080)";
        if (memchr(h, ':', hn)) return "an IPv6 address must be in brackets: [IPv6]:PORT";
        for (size_t i = 0; i < hn; i++) {
            char ch = h[i];
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
                return "invalid character in host";
        }
    }
    const char *ps = colon + 1;
    if (!*ps) return "missing port (expected HOST:PORT)";
    long v = 0;
    for (const char *q = ps; *q; q++) {
        if (*q < '0' || *q > '9') return "port must be a decimal number";
        v = v * 10 + (*q - '0');
        if (v > 65535) return "port out of range (0-65535)";
    }
    *host = sg_xstrndup(h, hn);
    *port = (int)v;
    return NULL;
}

/* Checks a base URL and strips trailing '/'. Returns NULL, or the reason it is invalid
 * (never containing the URL). */
static const char *check_base_url(char *url)
{
    size_t skip;
    if (sg_strncaseeq(url, "http://", 7))
        skip = 7;
    else if (sg_strncaseeq(url, "https://", 8))
        skip = 8;
    else
        return "must start with http:// or https://";
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain spaces or control characters";
    if (url[skip] == '\0' || url[skip] == '/') return "has no host";
    size_t n = strlen(url);
    while (n > skip + 1 && url[n - 1] == '/') url[--n] = '\0';
    return NULL;
}

/* OpenAI-compatible servers (vLLM, SGLang, TGI) serve the API under /v1. */
static void warn_no_v1(ctx_t *c, const char *where, const char *url)
{
    size_t n = strlen(url);
    if (n >= 3 && strcmp(url + n - 3, "/v1") == 0) return;
    add_warning(c, where,
                "the base URL does not end in /v1, where OpenAI-compatible servers (vLLM, SGLang, "
                "TGI) serve the API: requests go to <base URL>/chat/completions (e.g. "
                "http://<host>:8000/v1)");
}

/* A Snowflake base URL is the host: the gateway adds /api/v2/cortex/... itself. */
static const char *check_snowflake_url(char *url)
{
    const char *why = check_base_url(url);
    if (why) return why;
    if (strstr(url, "/api/v2"))
        return "must be the Snowflake host only (https://<account>.snowflakecomputing.com), "
               "without /api/v2: the gateway adds the API paths";
    return NULL;
}

static const char *check_api_key(const char *key)
{
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "must not contain control characters or line breaks";
    return NULL;
}

static const char *check_origin(const char *o)
{
    if (strcmp(o, "*") == 0) return NULL;
    size_t skip;
    if (strncmp(o, "http://", 7) == 0)
        skip = 7;
    else if (strncmp(o, "https://", 8) == 0)
        skip = 8;
    else
        return "must be \"*\" or an origin like https://app.example.com";
    if (o[skip] == '\0') return "has no host";
    for (const char *p = o + skip; *p; p++) {
        if (*p == '/') return "must be scheme://host[:port] without a path or trailing '/'";
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain spaces or control characters";
    }
    return NULL;
}

/* ---- model names (unique across the whole config) ------------------------------------- */

static const name_ref_t *name_find(ctx_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_names; i++)
        if (strcmp(c->names[i].name, name) == 0) return &c->names[i];
    return NULL;
}

static void name_add(ctx_t *c, const char *name, const char *path, int secret)
{
    if (c->n_names == c->cap_names) {
        c->cap_names = c->cap_names ? c->cap_names * 2 : 32;
        c->names = sg_xrealloc(c->names, c->cap_names * sizeof(*c->names));
    }
    c->names[c->n_names++] = (name_ref_t){name, sg_xstrdup(path), secret};
}

/* Registers a public model name found at the current path; reports a duplicate. */
static void name_register(ctx_t *c, const char *name, int secret)
{
    const name_ref_t *prev = name_find(c, name);
    if (prev) {
        if (secret || prev->secret)
            errf(c, "duplicate model name (already used at %s)", prev->path);
        else
            errf(c, "duplicate model name \"%s\" (already used at %s)", name, prev->path);
        return;
    }
    name_add(c, name, cur_path(c), secret);
}

/* ---- sections -------------------------------------------------------------------------- */

typedef struct num_field {
    const char *key;
    size_t off;
    int is_size; /* size_t, else uint64_t */
    uint64_t min;
} num_field_t;

#define NUM_SIZE(k, f, m)                                                                          \
    {                                                                                              \
        k, offsetof(sg_config_t, f), 1, m                                                          \
    }
#define NUM_U64(k, f, m)                                                                           \
    {                                                                                              \
        k, offsetof(sg_config_t, f), 0, m                                                          \
    }

static const num_field_t limit_fields[] = {
    NUM_SIZE("max_header_bytes", max_header_bytes, 1),
    NUM_SIZE("max_body_bytes", max_body_bytes, 1),
    NUM_U64("header_timeout_ms", header_timeout_ms, 1),
    NUM_U64("idle_timeout_ms", idle_timeout_ms, 1),
    NUM_U64("body_timeout_ms", body_timeout_ms, 1),
    NUM_U64("write_stall_timeout_ms", write_stall_timeout_ms, 1),
    NUM_SIZE("max_connections", max_connections, 1),
    NUM_SIZE("high_watermark", high_watermark, 1),
    NUM_SIZE("low_watermark", low_watermark, 0),
};

static const num_field_t upstream_fields[] = {
    NUM_U64("connect_timeout_ms", connect_timeout_ms, 1),
    NUM_U64("first_byte_timeout_ms", first_byte_timeout_ms, 1),
    NUM_U64("idle_timeout_ms", upstream_idle_timeout_ms, 1),
    NUM_U64("total_timeout_ms", total_timeout_ms, 1),
    NUM_SIZE("max_retries", max_retries, 0),
    NUM_U64("retry_base_ms", retry_base_ms, 1),
};

/* Reads the numeric fields of obj (an object at the current path) into the config. */
static void parse_num_section(ctx_t *c, const cJSON *obj, const num_field_t *f, size_t n)
{
    const char *keys[16] = {0};
    SG_ASSERT(n <= SG_ARRAY_LEN(keys));
    for (size_t i = 0; i < n; i++) keys[i] = f[i].key;
    check_keys(c, obj, keys, n);
    for (size_t i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, f[i].key);
        if (!it) continue;
        size_t old = path_push_key(c, f[i].key);
        uint64_t v;
        if (get_uint(c, it, f[i].min, &v) == 0) {
            char *base = (char *)c->cfg;
            if (f[i].is_size)
                *(size_t *)(base + f[i].off) = (size_t)v;
            else
                *(uint64_t *)(base + f[i].off) = v;
        }
        path_pop(c, old);
    }
}

static int expect_object(ctx_t *c, const cJSON *it)
{
    if (cJSON_IsObject(it)) return 0;
    errf(c, "must be an object, not %s", json_type_name(it));
    return -1;
}

static void parse_cors(ctx_t *c, const cJSON *obj)
{
    static const char *const keys[] = {"allowed_origins"};
    check_keys(c, obj, keys, SG_ARRAY_LEN(keys));
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "allowed_origins");
    if (!arr) return;
    size_t old = path_push_key(c, "allowed_origins");
    if (!cJSON_IsArray(arr)) {
        errf(c, "must be an array of strings, not %s", json_type_name(arr));
        path_pop(c, old);
        return;
    }
    sg_config_t *cfg = c->cfg;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    cfg->cors_origins = sg_xcalloc(n, sizeof(char *));
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t o2 = path_push_index(c, i);
        char *s;
        int interp;
        if (get_str(c, it, &s, &interp) == 0) {
            const char *why = check_origin(s);
            if (why) {
                errf(c, "%s", why);
                free(s);
            } else {
                cfg->cors_origins[cfg->n_cors_origins++] = s;
            }
        }
        path_pop(c, o2);
    }
    path_pop(c, old);
}

typedef enum { KIND_UNKNOWN, KIND_OPENAI, KIND_CORTEX } kind_t;

/* Provider keys only kind "cortex" takes. */
static const char *const cortex_only_keys[] = {"account",
                                               "user",
                                               "role",
                                               "warehouse",
                                               "database",
                                               "schema",
                                               "pat",
                                               "private_key_path",
                                               "private_key_passphrase",
                                               "pat_warn_days"};

static void parse_model(ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p, kind_t kind,
                        const catalog_t *cat)
{
    static const char *const keys[] = {"id",       "upstream_id", "aliases",
                                       "price_in", "price_out",   "api"};
    static const char *const api_keys[] = {"api"};
    if (expect_object(c, obj) != 0) return;
    if (kind == KIND_OPENAI)
        check_keys_ex(c, obj, keys, SG_ARRAY_LEN(keys) - 1, api_keys, 1,
                      "unknown key (\"api\" applies only to models of kind \"cortex\")");
    else
        check_keys(c, obj, keys, SG_ARRAY_LEN(keys));
    sg_model_cfg_t *m = &p->models[p->n_models];
    int interp;
    size_t old;

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "id");
    if (!it) {
        errf(c, "missing required key \"id\"");
    } else {
        old = path_push_key(c, "id");
        if (get_str(c, it, &m->id, &interp) != 0) {
            /* reported */
        } else if (!*m->id) {
            errf(c, "must not be empty");
        } else {
            name_register(c, m->id, interp);
        }
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(obj, "upstream_id");
    if (it) {
        old = path_push_key(c, "upstream_id");
        if (get_str(c, it, &m->upstream_id, &interp) == 0 && !*m->upstream_id)
            errf(c, "must not be empty");
        path_pop(c, old);
    }
    if (!m->upstream_id && m->id) m->upstream_id = sg_xstrdup(m->id);

    it = cJSON_GetObjectItemCaseSensitive(obj, "aliases");
    if (it) {
        old = path_push_key(c, "aliases");
        if (!cJSON_IsArray(it)) {
            errf(c, "must be an array of strings, not %s", json_type_name(it));
        } else {
            m->aliases = sg_xcalloc((size_t)cJSON_GetArraySize(it), sizeof(char *));
            size_t i = 0;
            for (const cJSON *a = it->child; a; a = a->next, i++) {
                size_t o2 = path_push_index(c, i);
                char *s;
                if (get_str(c, a, &s, &interp) != 0) {
                    /* reported */
                } else if (!*s) {
                    errf(c, "must not be empty");
                    free(s);
                } else {
                    m->aliases[m->n_aliases++] = s;
                    name_register(c, s, interp);
                }
                path_pop(c, o2);
            }
        }
        path_pop(c, old);
    }

    const catalog_entry_t *def = NULL;
    if (cat && m->upstream_id) def = catalog_find(cat, m->upstream_id);
    if (cat && !def && m->id) def = catalog_find(cat, m->id);
    m->price_in_per_mtok = def ? def->price_in : 0;
    m->price_out_per_mtok = def ? def->price_out : 0;
    it = cJSON_GetObjectItemCaseSensitive(obj, "price_in");
    if (it) {
        old = path_push_key(c, "price_in");
        get_price(c, it, &m->price_in_per_mtok);
        path_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "price_out");
    if (it) {
        old = path_push_key(c, "price_out");
        get_price(c, it, &m->price_out_per_mtok);
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(obj, "api");
    if (it && kind != KIND_OPENAI) {
        old = path_push_key(c, "api");
        char *api;
        if (get_str(c, it, &api, &interp) == 0) {
            if (strcmp(api, "complete") != 0 && strcmp(api, "openai") != 0) {
                errf(c, "must be \"complete\" or \"openai\"");
                free(api);
            } else if (kind == KIND_CORTEX) {
                m->api = api;
            } else {
                free(api); /* unknown provider kind: reported there */
            }
        }
        path_pop(c, old);
    }
    if (kind == KIND_CORTEX && !m->api) m->api = sg_xstrdup("complete");
    /* Keep the entry even when invalid so that every string it owns is freed with it. */
    p->n_models++;
}

static void free_model(sg_model_cfg_t *m)
{
    free(m->id);
    free(m->upstream_id);
    for (size_t i = 0; i < m->n_aliases; i++) free(m->aliases[i]);
    free(m->aliases);
    free(m->api);
}

/* Fills p->models with a built-in catalog, dropping every id or alias already used. */
static void fill_catalog(ctx_t *c, sg_provider_cfg_t *p, const catalog_t *cat)
{
    SG_ASSERT(p->n_models == 0 && p->models == NULL);
    p->models = sg_xcalloc(cat->n, sizeof(*p->models));
    for (size_t i = 0; i < cat->n; i++) {
        const catalog_entry_t *e = &cat->entries[i];
        if (name_find(c, e->id)) continue;
        sg_model_cfg_t *m = &p->models[p->n_models++];
        m->id = sg_xstrdup(e->id);
        m->upstream_id = sg_xstrdup(e->id);
        m->price_in_per_mtok = e->price_in;
        m->price_out_per_mtok = e->price_out;
        if (cat->api) m->api = sg_xstrdup(cat->api);
        name_add(c, m->id, cat->label, 0);
        if (e->alias && !name_find(c, e->alias)) {
            m->aliases = sg_xcalloc(1, sizeof(char *));
            m->aliases[m->n_aliases++] = sg_xstrdup(e->alias);
            name_add(c, m->aliases[0], cat->label, 0);
        }
    }
}

/* Reads LAMBDA_BASE_URL into p->base_url (validated). Returns 0, or -1 when unset/invalid. */
static int lambda_env_base_url(ctx_t *c, sg_provider_cfg_t *p)
{
    const char *v = getenv("LAMBDA_BASE_URL");
    if (!v || !*v) return -1;
    char *url = sg_xstrdup(v);
    const char *why = check_base_url(url);
    if (why) {
        add_error(c->errs, "env:LAMBDA_BASE_URL", "base URL %s", why);
        free(url);
        return -1;
    }
    warn_no_v1(c, "env:LAMBDA_BASE_URL", url);
    p->base_url = url;
    return 0;
}

static void lambda_env_api_key(ctx_t *c, sg_provider_cfg_t *p)
{
    const char *v = getenv("LAMBDA_API_KEY");
    if (!v || !*v) return;
    const char *why = check_api_key(v);
    if (why) {
        add_error(c->errs, "env:LAMBDA_API_KEY", "API key %s", why);
        return;
    }
    p->api_key = sg_xstrdup(v);
}

static int valid_provider_name(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* ---- Snowflake Cortex providers ----------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The string settings of a cortex provider, each from the file or its environment variable. */
enum {
    SF_ACCOUNT,
    SF_USER,
    SF_ROLE,
    SF_WAREHOUSE,
    SF_DATABASE,
    SF_SCHEMA,
    SF_BASE_URL,
    SF_PAT,
    SF_KEY_PATH,
    SF_PASSPHRASE,
    SF_N
};

enum { SRC_NONE, SRC_FILE, SRC_ENV }; /* where a setting came from (even when invalid) */

typedef struct sf_field {
    const char *key;   /* JSON key */
    const char *env;   /* environment variable */
    const char *label; /* for messages */
    size_t off;        /* offsetof(sg_provider_cfg_t, ...) */
    int optional;      /* may be null or empty (= unset) */
} sf_field_t;

#define SF_FIELD(k, e, l, f, o)                                                                    \
    {                                                                                              \
        k, e, l, offsetof(sg_provider_cfg_t, f), o                                                 \
    }

static const sf_field_t sf_fields[SF_N] = {
    SF_FIELD("account", "SNOWFLAKE_ACCOUNT", "account", account, 0),
    SF_FIELD("user", "SNOWFLAKE_USER", "user", user, 0),
    SF_FIELD("role", "SNOWFLAKE_ROLE", "role", role, 1),
    SF_FIELD("warehouse", "SNOWFLAKE_WAREHOUSE", "warehouse", warehouse, 1),
    SF_FIELD("database", "SNOWFLAKE_DATABASE", "database", database, 1),
    SF_FIELD("schema", "SNOWFLAKE_SCHEMA", "schema", schema, 1),
    SF_FIELD("base_url", "SNOWFLAKE_BASE_URL", "base URL", base_url, 0),
    SF_FIELD("pat", "SNOWFLAKE_PAT", "PAT", pat, 0),
    SF_FIELD("private_key_path", "SNOWFLAKE_PRIVATE_KEY_PATH", "private key path", private_key_path,
             0),
    SF_FIELD("private_key_passphrase", "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "private key passphrase",
             private_key_passphrase, 1),
};

static char **sf_slot(sg_provider_cfg_t *p, int f)
{
    return (char **)(void *)((char *)p + sf_fields[f].off);
}

/* Overwrites a secret before freeing it. */
static void free_secret(char *s)
{
    if (!s) return;
    volatile char *k = s;
    while (*k) *k++ = '\0';
    free(s);
}

#define SF_HOST_SUFFIX ".snowflakecomputing.com"

static const char *check_account(const char *a)
{
    for (const char *q = a; *q; q++) {
        char ch = *q;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return "must be an account identifier (letters, digits, '-', '_', '.'), e.g. "
                   "myorg-myacct";
    }
    size_t n = strlen(a), sn = strlen(SF_HOST_SUFFIX);
    if (n >= sn && sg_strncaseeq(a + n - sn, SF_HOST_SUFFIX, sn))
        return "must be the account identifier without " SF_HOST_SUFFIX;
    if (a[0] == '.' || a[n - 1] == '.') return "must not start or end with '.'";
    return NULL;
}

static const char *check_pat(const char *t)
{
    for (const char *q = t; *q; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return "must not contain whitespace or control characters";
    return NULL;
}

/* Checks that path names a readable regular file (without reading it). Returns 0, or -1
 * with the reason in why. */
static int check_key_file(const char *path, char *why, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(why, n, "cannot be opened: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!ok) {
        snprintf(why, n, "is not a regular file");
        return -1;
    }
    return 0;
}

/* Validates v (owned) for setting f and stores it in p, or reports the problem at where and
 * frees v. Only a private key path written literally (echo) may appear in the message. */
static void sf_set(ctx_t *c, sg_provider_cfg_t *p, int f, char *v, const char *where, int echo)
{
    const sf_field_t *fd = &sf_fields[f];
    const char *why = NULL;
    if (!*v) {
        if (fd->optional) {
            free(v); /* empty: unset */
            return;
        }
        why = "must not be empty";
    } else {
        switch (f) {
        case SF_ACCOUNT:
            why = check_account(v);
            break;
        case SF_BASE_URL:
            why = check_snowflake_url(v);
            break;
        case SF_PAT:
            why = check_pat(v);
            break;
        case SF_PASSPHRASE:
            break;
        case SF_KEY_PATH: {
            char reason[160];
            if (check_key_file(v, reason, sizeof(reason)) != 0) {
                if (echo)
                    add_error(c->errs, where, "private key file %s %s", v, reason);
                else
                    add_error(c->errs, where, "private key file %s", reason);
                free(v);
                return;
            }
            break;
        }
        default:
            why = check_api_key(v);
            break; /* user, role, warehouse, database, schema */
        }
    }
    if (why) {
        add_error(c->errs, where, "%s %s", fd->label, why);
        if (f == SF_PAT || f == SF_PASSPHRASE)
            free_secret(v);
        else
            free(v);
        return;
    }
    char **slot = sf_slot(p, f);
    free(*slot);
    *slot = v;
}

static void sf_env_set(ctx_t *c, sg_provider_cfg_t *p, unsigned char *src, int f)
{
    const char *v = env_nonempty(sf_fields[f].env);
    if (!v) return;
    char where[64];
    snprintf(where, sizeof(where), "env:%s", sf_fields[f].env);
    src[f] = SRC_ENV;
    sf_set(c, p, f, sg_xstrdup(v), where, 0);
}

/* Fills the settings the file left out from SNOWFLAKE_*. The credential variables count only
 * when the file sets neither "pat" nor "private_key_path"; the passphrase only with a key. */
static void sf_env_fill(ctx_t *c, sg_provider_cfg_t *p, unsigned char *src)
{
    int file_creds = src[SF_PAT] != SRC_NONE || src[SF_KEY_PATH] != SRC_NONE;
    for (int f = 0; f < SF_N; f++) {
        if (src[f] != SRC_NONE || f == SF_PASSPHRASE) continue;
        if ((f == SF_PAT || f == SF_KEY_PATH) && file_creds) continue;
        sf_env_set(c, p, src, f);
    }
    if (src[SF_PASSPHRASE] == SRC_NONE && src[SF_KEY_PATH] != SRC_NONE)
        sf_env_set(c, p, src, SF_PASSPHRASE);
}

/* Reports missing / conflicting settings (at the provider's path, or at env:SNOWFLAKE_* for
 * a provider made from the environment) and derives the default base URL. */
static void sf_finish(ctx_t *c, sg_provider_cfg_t *p, const unsigned char *src, int from_env)
{
    int named = strcmp(p->name, "cortex") == 0;
    static const int required[] = {SF_ACCOUNT, SF_USER};
    for (size_t i = 0; i < SG_ARRAY_LEN(required); i++) {
        const sf_field_t *fd = &sf_fields[required[i]];
        if (src[required[i]] != SRC_NONE) continue;
        if (from_env) {
            char where[64];
            snprintf(where, sizeof(where), "env:%s", fd->env);
            add_error(c->errs, where, "%s is not set (required with SNOWFLAKE_ACCOUNT)", fd->env);
        } else if (named) {
            errf(c, "missing required key \"%s\" (or set %s)", fd->key, fd->env);
        } else {
            errf(c, "missing required key \"%s\"", fd->key);
        }
    }

    int has_pat = src[SF_PAT] != SRC_NONE, has_key = src[SF_KEY_PATH] != SRC_NONE;
    if (!has_pat && !has_key) {
        if (from_env)
            add_error(c->errs, "env:SNOWFLAKE_PAT",
                      "neither SNOWFLAKE_PAT nor SNOWFLAKE_PRIVATE_KEY_PATH is set (set one)");
        else if (named)
            errf(c, "missing credentials: set exactly one of \"pat\" and \"private_key_path\" "
                    "(or SNOWFLAKE_PAT / SNOWFLAKE_PRIVATE_KEY_PATH)");
        else
            errf(c, "missing credentials: set exactly one of \"pat\" and \"private_key_path\"");
    } else if (has_pat && has_key) {
        if (src[SF_PAT] == SRC_ENV)
            add_error(c->errs, "env:SNOWFLAKE_PRIVATE_KEY_PATH",
                      "set only one of SNOWFLAKE_PAT and SNOWFLAKE_PRIVATE_KEY_PATH");
        else
            errf(c, "set exactly one of \"pat\" and \"private_key_path\", not both");
    }
    if (src[SF_PASSPHRASE] == SRC_FILE && !has_key) {
        size_t old = path_push_key(c, "private_key_passphrase");
        errf(c, "private_key_passphrase is only used with \"private_key_path\"");
        path_pop(c, old);
    }

    if (src[SF_BASE_URL] == SRC_NONE && p->account && !p->base_url) {
        /* https://<account lower-cased, '_' → '-'>.snowflakecomputing.com */
        sg_buf_t b;
        sg_buf_init(&b, (size_t)-2);
        sg_buf_append_str(&b, "https://");
        for (const char *q = p->account; *q; q++) {
            char ch = *q == '_' ? '-' : (*q >= 'A' && *q <= 'Z') ? (char)(*q - 'A' + 'a') : *q;
            sg_buf_append(&b, &ch, 1);
        }
        sg_buf_append_str(&b, SF_HOST_SUFFIX);
        p->base_url = sg_buf_steal(&b, NULL);
    }
}

/* Parses the Snowflake settings of a kind "cortex" provider object (at its path). */
static void parse_cortex(ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    unsigned char src[SF_N] = {0};
    int interp;
    p->pat_warn_days = PAT_WARN_DAYS_DEFAULT;
    for (int f = 0; f < SF_N; f++) {
        const sf_field_t *fd = &sf_fields[f];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, fd->key);
        if (!it) continue;
        src[f] = SRC_FILE;
        size_t old = path_push_key(c, fd->key);
        char *v;
        if (fd->optional && cJSON_IsNull(it)) {
            /* explicitly unset */
        } else if (fd->optional && !cJSON_IsString(it)) {
            errf(c, "must be a string or null, not %s", json_type_name(it));
        } else if (get_str(c, it, &v, &interp) == 0) {
            sf_set(c, p, f, v, cur_path(c), !interp);
        }
        path_pop(c, old);
    }

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "pat_warn_days");
    if (it) {
        size_t old = path_push_key(c, "pat_warn_days");
        uint64_t v;
        if (get_uint(c, it, 0, &v) == 0) {
            if (v > PAT_WARN_DAYS_MAX)
                errf(c, "must be at most %d", PAT_WARN_DAYS_MAX);
            else
                p->pat_warn_days = (int)v;
        }
        path_pop(c, old);
    }

    if (strcmp(p->name, "cortex") == 0) sf_env_fill(c, p, src);
    sf_finish(c, p, src, 0);
}

/* Parses "models" (at the provider's path); *want_catalog is set to cat when it is absent and
 * cat may fill it. */
static void parse_models(ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p, kind_t kind,
                         const catalog_t *cat, int catalog_ok, const catalog_t **want_catalog)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "models");
    if (it) {
        size_t old = path_push_key(c, "models");
        if (!cJSON_IsArray(it)) {
            errf(c, "must be an array of model objects, not %s", json_type_name(it));
        } else if (cJSON_GetArraySize(it) == 0) {
            errf(c, "must contain at least one model");
        } else {
            p->models = sg_xcalloc((size_t)cJSON_GetArraySize(it), sizeof(*p->models));
            size_t i = 0;
            for (const cJSON *m = it->child; m; m = m->next, i++) {
                size_t o2 = path_push_index(c, i);
                parse_model(c, m, p, kind, cat);
                path_pop(c, o2);
            }
        }
        path_pop(c, old);
    } else if (catalog_ok) {
        *want_catalog = cat;
    } else {
        errf(c, "missing required key \"models\"");
    }
}

/* Parses one provider object (at the current path). *want_catalog is set when a built-in
 * catalog should fill its models once every configured name is known. */
static void parse_provider(ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p,
                           const catalog_t **want_catalog)
{
    static const char *const openai_keys[] = {"kind", "base_url", "api_key", "models"};
    static const char *const cortex_keys[] = {
        "kind",         "base_url", "models",           "account",
        "user",         "role",     "warehouse",        "database",
        "schema",       "pat",      "private_key_path", "private_key_passphrase",
        "pat_warn_days"};
    static const char *const any_keys[] = {"kind",
                                           "base_url",
                                           "api_key",
                                           "models",
                                           "account",
                                           "user",
                                           "role",
                                           "warehouse",
                                           "database",
                                           "schema",
                                           "pat",
                                           "private_key_path",
                                           "private_key_passphrase",
                                           "pat_warn_days"};
    static const char *const api_key_key[] = {"api_key"};
    int named_lambda = strcmp(p->name, "lambda") == 0;
    int named_cortex = strcmp(p->name, "cortex") == 0;
    kind_t kind = KIND_UNKNOWN;
    int interp;
    size_t old;
    *want_catalog = NULL;

    if (!valid_provider_name(p->name))
        errf(c, "provider name must be non-empty and use only letters, digits, '_', '-', '.'");
    if (expect_object(c, obj) != 0) return;

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "kind");
    if (it) {
        old = path_push_key(c, "kind");
        char *k;
        if (get_str(c, it, &k, &interp) == 0) {
            if (strcmp(k, "openai") == 0 || strcmp(k, "cortex") == 0) {
                kind = strcmp(k, "openai") == 0 ? KIND_OPENAI : KIND_CORTEX;
                p->kind = k;
            } else {
                if (interp)
                    errf(c, "unsupported provider kind (supported: \"openai\", \"cortex\")");
                else
                    errf(c, "unsupported provider kind \"%s\" (supported: \"openai\", \"cortex\")",
                         k);
                free(k);
            }
        }
        path_pop(c, old);
    } else if (named_lambda || named_cortex) {
        kind = named_cortex ? KIND_CORTEX : KIND_OPENAI;
        p->kind = sg_xstrdup(named_cortex ? "cortex" : "openai");
    } else {
        errf(c, "missing required key \"kind\" (supported: \"openai\", \"cortex\")");
    }

    if (kind == KIND_OPENAI)
        check_keys_ex(c, obj, openai_keys, SG_ARRAY_LEN(openai_keys), cortex_only_keys,
                      SG_ARRAY_LEN(cortex_only_keys),
                      "unknown key (only providers of kind \"cortex\" take it)");
    else if (kind == KIND_CORTEX)
        check_keys_ex(c, obj, cortex_keys, SG_ARRAY_LEN(cortex_keys), api_key_key, 1,
                      "api_key is not used by kind \"cortex\": cortex uses pat or "
                      "private_key_path");
    else
        check_keys(c, obj, any_keys, SG_ARRAY_LEN(any_keys));

    if (kind == KIND_CORTEX) {
        parse_cortex(c, obj, p);
        parse_models(c, obj, p, kind, &cortex_cat, 1, want_catalog);
        return;
    }

    int is_lambda = named_lambda;
    it = cJSON_GetObjectItemCaseSensitive(obj, "base_url");
    if (it) {
        old = path_push_key(c, "base_url");
        char *url;
        if (get_str(c, it, &url, &interp) == 0) {
            const char *why = check_base_url(url);
            if (why) {
                errf(c, "base URL %s", why);
                free(url);
            } else {
                warn_no_v1(c, cur_path(c), url);
                p->base_url = url;
            }
        }
        path_pop(c, old);
    } else if (is_lambda) {
        if (!getenv("LAMBDA_BASE_URL") || !*getenv("LAMBDA_BASE_URL"))
            errf(c, "missing required key \"base_url\" (or set LAMBDA_BASE_URL)");
        else
            lambda_env_base_url(c, p);
    } else {
        errf(c, "missing required key \"base_url\"");
    }

    it = cJSON_GetObjectItemCaseSensitive(obj, "api_key");
    if (it) {
        old = path_push_key(c, "api_key");
        char *key;
        if (cJSON_IsNull(it)) {
            /* explicitly no key */
        } else if (!cJSON_IsString(it)) {
            errf(c, "must be a string or null, not %s", json_type_name(it));
        } else if (get_str(c, it, &key, &interp) == 0) {
            const char *why = check_api_key(key);
            if (why) {
                errf(c, "API key %s", why);
                free(key);
            } else if (!*key) {
                free(key); /* empty: no Authorization header */
            } else {
                p->api_key = key;
            }
        }
        path_pop(c, old);
    } else if (is_lambda) {
        lambda_env_api_key(c, p);
    }

    parse_models(c, obj, p, kind, is_lambda ? &lambda_cat : NULL, is_lambda, want_catalog);
}

static void set_str(char **dst, char *val)
{
    free(*dst);
    *dst = val;
}

static void apply_listen(ctx_t *c, const char *value, int echo, const char *err_path)
{
    char *host;
    int port;
    const char *why = sg_config_parse_listen(value, &host, &port);
    if (why) {
        if (echo)
            add_error(c->errs, err_path, "invalid listen address \"%s\": %s", value, why);
        else
            add_error(c->errs, err_path, "invalid listen address: %s", why);
        return;
    }
    set_str(&c->cfg->listen_host, host);
    c->cfg->listen_port = port;
}

static void apply_log_level(ctx_t *c, char *value, int echo, const char *err_path)
{
    sg_log_level_t lvl;
    if (sg_log_level_parse(value, &lvl) != 0) {
        if (echo)
            add_error(c->errs, err_path,
                      "invalid log level \"%s\" (expected debug, info, warn or error)", value);
        else
            add_error(c->errs, err_path, "invalid log level (expected debug, info, warn or error)");
        free(value);
        return;
    }
    set_str(&c->cfg->log_level, value);
}

static void parse_root(ctx_t *c, const cJSON *root)
{
    static const char *const keys[] = {"listen",   "log_level",         "limits",   "cors",
                                       "upstream", "shutdown_grace_ms", "providers"};
    sg_config_t *cfg = c->cfg;
    int interp;
    size_t old;
    if (expect_object(c, root) != 0) return;
    check_keys(c, root, keys, SG_ARRAY_LEN(keys));

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "listen");
    if (it) {
        old = path_push_key(c, "listen");
        char *s;
        if (get_str(c, it, &s, &interp) == 0) {
            apply_listen(c, s, !interp, cur_path(c));
            free(s);
        }
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "log_level");
    if (it) {
        old = path_push_key(c, "log_level");
        char *s;
        if (get_str(c, it, &s, &interp) == 0) apply_log_level(c, s, !interp, cur_path(c));
        path_pop(c, old);
    }

    const cJSON *limits = cJSON_GetObjectItemCaseSensitive(root, "limits");
    if (limits) {
        old = path_push_key(c, "limits");
        if (expect_object(c, limits) == 0)
            parse_num_section(c, limits, limit_fields, SG_ARRAY_LEN(limit_fields));
        path_pop(c, old);
    }
    if (cfg->low_watermark >= cfg->high_watermark) {
        int low_set = cJSON_IsObject(limits) &&
                      cJSON_GetObjectItemCaseSensitive(limits, "low_watermark") != NULL;
        old = path_push_key(c, "limits");
        size_t o2 = path_push_key(c, low_set ? "low_watermark" : "high_watermark");
        errf(c, "low_watermark (%zu) must be less than high_watermark (%zu)", cfg->low_watermark,
             cfg->high_watermark);
        path_pop(c, o2);
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "cors");
    if (it) {
        old = path_push_key(c, "cors");
        if (expect_object(c, it) == 0) parse_cors(c, it);
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "upstream");
    if (it) {
        old = path_push_key(c, "upstream");
        if (expect_object(c, it) == 0)
            parse_num_section(c, it, upstream_fields, SG_ARRAY_LEN(upstream_fields));
        path_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "shutdown_grace_ms");
    if (it) {
        old = path_push_key(c, "shutdown_grace_ms");
        get_uint(c, it, 0, &cfg->shutdown_grace_ms);
        path_pop(c, old);
    }

    const cJSON *provs = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (!provs) return;
    old = path_push_key(c, "providers");
    if (expect_object(c, provs) == 0) {
        size_t n = (size_t)cJSON_GetArraySize(provs);
        cfg->providers = sg_xcalloc(n, sizeof(*cfg->providers));
        const catalog_t **want = sg_xcalloc(n, sizeof(*want));
        for (const cJSON *pj = provs->child; pj; pj = pj->next) {
            size_t o2 = path_push_key(c, pj->string ? pj->string : "");
            if (is_dup_key(provs, pj)) {
                errf(c, "duplicate provider");
            } else {
                size_t k = cfg->n_providers++;
                cfg->providers[k].name = sg_xstrdup(pj->string ? pj->string : "");
                parse_provider(c, pj, &cfg->providers[k], &want[k]);
            }
            path_pop(c, o2);
        }
        /* The built-in catalog goes last so that configured names win over its defaults. */
        for (size_t k = 0; k < cfg->n_providers; k++)
            if (want[k]) fill_catalog(c, &cfg->providers[k], want[k]);
        free((void *)want);
    }
    path_pop(c, old);
}

/* ---- file ----------------------------------------------------------------------------- */

/* Reads the whole file (NUL-terminated). Returns NULL after reporting. */
static char *read_file(ctx_t *c, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        add_error(c->errs, "$", "cannot open config file %s: %s", path, strerror(errno));
        return NULL;
    }
    sg_buf_t b;
    sg_buf_init(&b, CONFIG_FILE_MAX);
    char chunk[8192];
    size_t n;
    int too_large = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sg_buf_append(&b, chunk, n) != 0) {
            too_large = 1;
            break;
        }
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (too_large || err) {
        if (too_large)
            add_error(c->errs, "$", "config file %s is too large (over %u bytes)", path,
                      CONFIG_FILE_MAX);
        else
            add_error(c->errs, "$", "cannot read config file %s: %s", path, strerror(err));
        sg_buf_dispose(&b);
        return NULL;
    }
    return sg_buf_steal(&b, len);
}

static void line_col(const char *buf, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Replaces // and block comments outside strings with spaces (newlines kept, so error
 * positions stay right). Returns 0, or the offset + 1 of an unterminated block comment. */
static size_t blank_comments(char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\' && i + 1 < n) i++;
            i++;
        } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n') s[i++] = ' ';
        } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
            size_t start = i;
            s[i] = s[i + 1] = ' ';
            i += 2;
            while (i < n && !(s[i] == '*' && i + 1 < n && s[i + 1] == '/')) {
                if (s[i] != '\n') s[i] = ' ';
                i++;
            }
            if (i >= n) return start + 1;
            s[i] = s[i + 1] = ' ';
            i += 2;
        } else {
            i++;
        }
    }
    return 0;
}

static void load_file(ctx_t *c, const char *path)
{
    size_t len;
    char *buf = read_file(c, path, &len);
    if (!buf) return;
    size_t line, col;
    size_t unterminated = blank_comments(buf, len);
    if (unterminated) {
        line_col(buf, unterminated - 1, &line, &col);
        add_error(c->errs, "$", "unterminated /* comment at line %zu, column %zu", line, col);
        free(buf);
        return;
    }
    if (memchr(buf, '\0', len)) {
        add_error(c->errs, "$", "config file %s contains a NUL byte", path);
        free(buf);
        return;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (!root) {
        size_t off = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : len;
        line_col(buf, off, &line, &col);
        const char *p = buf;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p)
            add_error(c->errs, "$", "invalid JSON: the file is empty");
        else
            add_error(c->errs, "$", "invalid JSON at line %zu, column %zu", line, col);
        free(buf);
        return;
    }
    parse_root(c, root);
    cJSON_Delete(root);
    free(buf);
}

/* ---- environment ------------------------------------------------------------------------ */

static void add_provider(sg_config_t *cfg, const sg_provider_cfg_t *p)
{
    cfg->providers = sg_xrealloc(cfg->providers, (cfg->n_providers + 1) * sizeof(*cfg->providers));
    cfg->providers[cfg->n_providers++] = *p;
}

static void apply_env(ctx_t *c)
{
    sg_config_t *cfg = c->cfg;
    const char *v = env_nonempty("SOPHIA_LISTEN");
    if (v) apply_listen(c, v, 0, "env:SOPHIA_LISTEN");
    v = env_nonempty("SOPHIA_LOG_LEVEL");
    if (v) apply_log_level(c, sg_xstrdup(v), 0, "env:SOPHIA_LOG_LEVEL");

    if (env_nonempty("LAMBDA_BASE_URL") && !sg_config_provider(cfg, "lambda")) {
        sg_provider_cfg_t p = {0};
        if (lambda_env_base_url(c, &p) == 0) {
            p.name = sg_xstrdup("lambda");
            p.kind = sg_xstrdup("openai");
            lambda_env_api_key(c, &p);
            fill_catalog(c, &p, &lambda_cat);
            add_provider(cfg, &p);
        }
    }

    /* A "cortex" provider from SNOWFLAKE_* when the file configures none (by name or kind). */
    int have_cortex = sg_config_provider(cfg, "cortex") != NULL;
    for (size_t i = 0; i < cfg->n_providers && !have_cortex; i++)
        have_cortex = cfg->providers[i].kind && strcmp(cfg->providers[i].kind, "cortex") == 0;
    if (!env_nonempty("SNOWFLAKE_ACCOUNT") && !have_cortex) {
        /* Snowflake settings without the account create nothing: say so. */
        static const char *const vars[] = {"SNOWFLAKE_USER", "SNOWFLAKE_PAT",
                                           "SNOWFLAKE_PRIVATE_KEY_PATH"};
        sg_buf_t set;
        sg_buf_init(&set, 256);
        for (size_t i = 0; i < SG_ARRAY_LEN(vars); i++)
            if (env_nonempty(vars[i])) sg_buf_printf(&set, "%s%s", set.len ? " and " : "", vars[i]);
        if (set.len)
            add_error(c->errs, "env:SNOWFLAKE_ACCOUNT",
                      "%s %s set but SNOWFLAKE_ACCOUNT is not, so no cortex provider exists: set "
                      "SNOWFLAKE_ACCOUNT to the account identifier (e.g. myorg-myaccount)",
                      set.data, strstr(set.data, " and ") ? "are" : "is");
        sg_buf_dispose(&set);
    }
    if (!sg_config_provider(cfg, "lambda") && env_nonempty("LAMBDA_API_KEY") &&
        !env_nonempty("LAMBDA_BASE_URL"))
        add_warning(c, "env:LAMBDA_API_KEY",
                    "LAMBDA_API_KEY is set but LAMBDA_BASE_URL is not set, so there is no lambda "
                    "provider and the key is unused: set LAMBDA_BASE_URL to the OpenAI-compatible "
                    "server (e.g. http://<instance>:8000/v1)");
    if (env_nonempty("SNOWFLAKE_ACCOUNT") && !have_cortex) {
        sg_provider_cfg_t p = {0};
        unsigned char src[SF_N] = {0};
        p.name = sg_xstrdup("cortex");
        p.kind = sg_xstrdup("cortex");
        p.pat_warn_days = PAT_WARN_DAYS_DEFAULT;
        sf_env_fill(c, &p, src);
        sf_finish(c, &p, src, 1);
        fill_catalog(c, &p, &cortex_cat);
        add_provider(cfg, &p);
    }
}

/* ---- public API ------------------------------------------------------------------------- */

void sg_config_defaults(sg_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_host = sg_xstrdup("127.0.0.1");
    cfg->listen_port = 8080;
    cfg->log_level = sg_xstrdup("info");
    cfg->max_header_bytes = 16384;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 30000;
    cfg->write_stall_timeout_ms = 30000;
    cfg->max_connections = 10000;
    cfg->high_watermark = 65536;
    cfg->low_watermark = 16384;
    cfg->connect_timeout_ms = 5000;
    cfg->max_retries = 2;
    cfg->retry_base_ms = 250;
    cfg->first_byte_timeout_ms = 60000;
    cfg->upstream_idle_timeout_ms = 60000;
    cfg->total_timeout_ms = 600000;
    cfg->shutdown_grace_ms = 10000;
}

int sg_config_load(sg_config_t *cfg, const char *path, sg_config_errors_t *errs)
{
    sg_config_errors_t local = {0};
    ctx_t c = {0};
    c.cfg = cfg;
    c.errs = errs ? errs : &local;
    sg_buf_init(&c.path, 64 * 1024);
    sg_buf_append(&c.path, "$", 1);

    sg_config_defaults(cfg);
    if (path) load_file(&c, path);
    apply_env(&c);

    for (size_t i = 0; i < c.n_names; i++) free(c.names[i].path);
    free(c.names);
    sg_buf_dispose(&c.path);
    int rc = c.errs->n == 0 ? 0 : -1;
    sg_config_errors_free(&local);
    return rc;
}

void sg_config_free(sg_config_t *cfg)
{
    if (!cfg) return;
    free(cfg->listen_host);
    free(cfg->log_level);
    for (size_t i = 0; i < cfg->n_cors_origins; i++) free(cfg->cors_origins[i]);
    free(cfg->cors_origins);
    for (size_t i = 0; i < cfg->n_providers; i++) {
        sg_provider_cfg_t *p = &cfg->providers[i];
        free(p->name);
        free(p->kind);
        free(p->base_url);
        /* scrub the secrets before handing the memory back */
        free_secret(p->api_key);
        free(p->account);
        free(p->user);
        free(p->role);
        free(p->warehouse);
        free(p->database);
        free(p->schema);
        free_secret(p->pat);
        free(p->private_key_path);
        free_secret(p->private_key_passphrase);
        for (size_t j = 0; j < p->n_models; j++) free_model(&p->models[j]);
        free(p->models);
    }
    free(cfg->providers);
    if (cfg->warnings) {
        sg_config_errors_free(cfg->warnings);
        free(cfg->warnings);
    }
    memset(cfg, 0, sizeof(*cfg));
}

void sg_config_errors_free(sg_config_errors_t *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->items[i].path);
        free(errs->items[i].message);
    }
    free(errs->items);
    errs->items = NULL;
    errs->n = 0;
}

const sg_provider_cfg_t *sg_config_provider(const sg_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (cfg->providers[i].name && strcmp(cfg->providers[i].name, name) == 0)
            return &cfg->providers[i];
    return NULL;
}
