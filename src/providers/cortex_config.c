/* Kind "cortex" (Snowflake Cortex REST): its configuration keys, environment (SNOWFLAKE_*),
 * built-in catalog, credentials (the runtime state: snowflake_auth.c), secrets, status and
 * model-list probe. The wire adapter is cortex.c.
 *
 * Keys (besides the common kind, base_url / endpoints, models, discover, pinned):
 *   "account": "${SNOWFLAKE_ACCOUNT}"  required; "myorg-myacct" or a locator
 *                                      "xy12345.us-east-1" (letters, digits, '-', '_', '.')
 *   "user": "SVC_GATEWAY"              required
 *   "role", "warehouse", "database", "schema"   optional strings (or null); checked, not sent
 *   "pat": "${SNOWFLAKE_PAT}"          a programmatic access token, OR
 *   "private_key_path": "/k.p8"        a PKCS#8 PEM RSA key (readable file), with an optional
 *   "private_key_passphrase"           (only with private_key_path)
 *   "pat_warn_days": 7                 0-3650: warn when the PAT expires sooner
 * A model may say "api": "complete" (default) or "openai" (Cortex's OpenAI-compatible
 * endpoint). The base URL is the host (default https://<account lower-cased, '_' → '-'>
 * .snowflakecomputing.com); one containing /api/v2 is refused. A provider named "cortex"
 * takes what the file leaves out from SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER, SNOWFLAKE_ROLE,
 * SNOWFLAKE_WAREHOUSE, SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA, SNOWFLAKE_BASE_URL and (when the
 * file sets neither pat nor private_key_path) SNOWFLAKE_PAT / SNOWFLAKE_PRIVATE_KEY_PATH (+
 * SNOWFLAKE_PRIVATE_KEY_PASSPHRASE); without any cortex provider in the file, SNOWFLAKE_ACCOUNT
 * creates one with the built-in catalog. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/cortex.h"
#include "sophia/log.h"
#include "sophia/redact.h"
#include "sophia/snowflake_auth.h"

#define NAME "cortex"
#define PAT_WARN_DAYS_DEFAULT 7
#define PAT_WARN_DAYS_MAX 3650
#define SF_HOST_SUFFIX ".snowflakecomputing.com"

/* ---- built-in catalog ------------------------------------------------------------------
 * DEFAULTS ONLY, overridable by configuration: the models of a cortex provider configured
 * without "models", and the prices of cortex models that omit price_in / price_out. Names are
 * the current Cortex names (docs/providers.md). Prices are USD per 1M tokens at $2.00 per AI
 * credit:
 *  - from the published credits per 1M tokens (one rate for input and output): llama3.1-8b
 *    0.19, llama3.1-70b 1.21, llama3.1-405b 3.00, mistral-large2 1.95, mistral-7b 0.12,
 *    claude-3-5-sonnet 2.55 (e.g. 1.21 credits x $2.00 = $2.42);
 *  - every other entry is an ESTIMATE (no published credit price): the model vendor's public
 *    list price plus 10% for the Claude and OpenAI models, and a guess close to comparable
 *    open models for llama4-maverick, deepseek-r1 and snowflake-llama-3.3-70b. Configure real
 *    prices with price_in / price_out. */
#define CREDIT_USD 2.00
#define TJ (SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA)
#define TJV (SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA | SG_CAP_VISION)

static const sg_builtin_model_t cortex_models[] = {
    {"claude-sonnet-4-5", 3.30, 16.50, "cortex-smart", SG_TIER_LARGE, 200000, TJV}, /* est. */
    {"claude-haiku-4-5", 1.10, 5.50, NULL, SG_TIER_SMALL, 200000, TJV},             /* est. */
    {"claude-3-7-sonnet", 3.30, 16.50, NULL, SG_TIER_LARGE, 200000, TJV},           /* est. */
    {"claude-3-5-sonnet", 2.55 * CREDIT_USD, 2.55 * CREDIT_USD, NULL, SG_TIER_LARGE, 200000, TJV},
    {"openai-gpt-4.1", 2.20, 8.80, NULL, SG_TIER_LARGE, 1047576, TJV},   /* estimate */
    {"openai-gpt-5", 1.38, 11.00, NULL, SG_TIER_LARGE, 400000, TJV},     /* estimate */
    {"openai-gpt-5-mini", 0.28, 2.20, NULL, SG_TIER_SMALL, 400000, TJV}, /* estimate */
    {"llama4-maverick", 0.50, 0.50, NULL, SG_TIER_LARGE, 128000, TJ},    /* est. (0.25 credits) */
    {"llama3.1-8b", 0.19 * CREDIT_USD, 0.19 * CREDIT_USD, "cortex-fast", SG_TIER_SMALL, 128000,
     SG_CAP_JSON_SCHEMA},
    {"llama3.1-70b", 1.21 * CREDIT_USD, 1.21 * CREDIT_USD, NULL, SG_TIER_MEDIUM, 128000, TJ},
    {"llama3.1-405b", 3.00 * CREDIT_USD, 3.00 * CREDIT_USD, NULL, SG_TIER_LARGE, 128000, TJ},
    {"deepseek-r1", 2.70, 2.70, NULL, SG_TIER_LARGE, 32768, SG_CAP_JSON_SCHEMA}, /* est. */
    {"mistral-7b", 0.12 * CREDIT_USD, 0.12 * CREDIT_USD, NULL, SG_TIER_SMALL, 32000,
     SG_CAP_JSON_SCHEMA},
    {"mistral-large2", 1.95 * CREDIT_USD, 1.95 * CREDIT_USD, NULL, SG_TIER_LARGE, 128000, TJ},
    {"snowflake-llama-3.3-70b", 1.20, 1.20, NULL, SG_TIER_MEDIUM, 128000, TJ}, /* est. */
    /* Embedding models (POST /v1/embeddings), priced per 1M input tokens. */
    {"snowflake-arctic-embed-m-v1.5", 0.03 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 512, SG_CAP_EMBED},
    {"snowflake-arctic-embed-l-v2.0", 0.05 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 8192,
     SG_CAP_EMBED},
    {"e5-base-v2", 0.03 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 512, SG_CAP_EMBED},
    {"nv-embed-qa-4", 0.05 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 512, SG_CAP_EMBED},
    {"multilingual-e5-large", 0.05 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 512, SG_CAP_EMBED},
    {"voyage-multilingual-2", 0.07 * CREDIT_USD, 0, NULL, SG_TIER_SMALL, 32000, SG_CAP_EMBED},
};

/* ---- settings ---------------------------------------------------------------------------- */

/* The string settings, each from the file or its environment variable. */
enum {
    SF_ACCOUNT,
    SF_USER,
    SF_ROLE,
    SF_WAREHOUSE,
    SF_DATABASE,
    SF_SCHEMA,
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
    size_t off;        /* offsetof(sg_cortex_cfg_t, ...) */
    int optional;      /* may be null or empty (= unset) */
} sf_field_t;

#define SF_FIELD(k, e, l, f, o)                                                                    \
    {                                                                                              \
        k, e, l, offsetof(sg_cortex_cfg_t, f), o                                                   \
    }

static const sf_field_t sf_fields[SF_N] = {
    SF_FIELD("account", "SNOWFLAKE_ACCOUNT", "account", account, 0),
    SF_FIELD("user", "SNOWFLAKE_USER", "user", user, 0),
    SF_FIELD("role", "SNOWFLAKE_ROLE", "role", role, 1),
    SF_FIELD("warehouse", "SNOWFLAKE_WAREHOUSE", "warehouse", warehouse, 1),
    SF_FIELD("database", "SNOWFLAKE_DATABASE", "database", database, 1),
    SF_FIELD("schema", "SNOWFLAKE_SCHEMA", "schema", schema, 1),
    SF_FIELD("pat", "SNOWFLAKE_PAT", "PAT", pat, 0),
    SF_FIELD("private_key_path", "SNOWFLAKE_PRIVATE_KEY_PATH", "private key path", private_key_path,
             0),
    SF_FIELD("private_key_passphrase", "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "private key passphrase",
             private_key_passphrase, 1),
};

static const char *const keys[] = {"account",
                                   "user",
                                   "role",
                                   "warehouse",
                                   "database",
                                   "schema",
                                   "pat",
                                   "private_key_path",
                                   "private_key_passphrase",
                                   "pat_warn_days"};
static const char *const model_keys[] = {"api"};

static char **sf_slot(sg_cortex_cfg_t *x, int f)
{
    return (char **)(void *)((char *)x + sf_fields[f].off);
}

static void free_ext(void *ext)
{
    sg_cortex_cfg_t *x = ext;
    if (!x) return;
    free(x->account);
    free(x->user);
    free(x->role);
    free(x->warehouse);
    free(x->database);
    free(x->schema);
    sg_secret_free(x->pat);
    free(x->private_key_path);
    sg_secret_free(x->private_key_passphrase);
    free(x);
}

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

/* A Snowflake base URL is the host: the gateway adds /api/v2/cortex/... itself. */
static const char *check_url(sg_cfg_ctx_t *c, const char *where, char *url)
{
    SG_UNUSED(c);
    SG_UNUSED(where);
    if (strstr(url, "/api/v2"))
        return "must be the Snowflake host only (https://<account>.snowflakecomputing.com), "
               "without /api/v2: the gateway adds the API paths";
    return NULL;
}

/* Validates v (owned) for setting f and stores it in x, or reports the problem at where and
 * frees v. Only a private key path written literally (echo) may appear in the message. */
static void sf_set(sg_cfg_ctx_t *c, sg_cortex_cfg_t *x, int f, char *v, const char *where, int echo)
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
        case SF_PAT:
            why = check_pat(v);
            break;
        case SF_PASSPHRASE:
            break;
        case SF_KEY_PATH: {
            char reason[160];
            if (check_key_file(v, reason, sizeof(reason)) != 0) {
                if (echo)
                    sg_cfg_error_at(c, where, "private key file %s %s", v, reason);
                else
                    sg_cfg_error_at(c, where, "private key file %s", reason);
                free(v);
                return;
            }
            break;
        }
        default:
            why = sg_cfg_check_token(v);
            break; /* user, role, warehouse, database, schema */
        }
    }
    if (why) {
        sg_cfg_error_at(c, where, "%s %s", fd->label, why);
        if (f == SF_PAT || f == SF_PASSPHRASE)
            sg_secret_free(v);
        else
            free(v);
        return;
    }
    char **slot = sf_slot(x, f);
    free(*slot);
    *slot = v;
}

static void sf_env_set(sg_cfg_ctx_t *c, sg_cortex_cfg_t *x, unsigned char *src, int f)
{
    const char *v = sg_cfg_env(sf_fields[f].env);
    if (!v) return;
    char where[64];
    snprintf(where, sizeof(where), "env:%s", sf_fields[f].env);
    src[f] = SRC_ENV;
    sf_set(c, x, f, sg_xstrdup(v), where, 0);
}

/* Fills the settings the file left out from SNOWFLAKE_*. The credential variables count only
 * when the file sets neither "pat" nor "private_key_path"; the passphrase only with a key. */
static void sf_env_fill(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, unsigned char *src, int base_set)
{
    sg_cortex_cfg_t *x = p->ext;
    int file_creds = src[SF_PAT] != SRC_NONE || src[SF_KEY_PATH] != SRC_NONE;
    for (int f = 0; f < SF_N; f++) {
        if (src[f] != SRC_NONE || f == SF_PASSPHRASE) continue;
        if ((f == SF_PAT || f == SF_KEY_PATH) && file_creds) continue;
        sf_env_set(c, x, src, f);
    }
    if (src[SF_PASSPHRASE] == SRC_NONE && src[SF_KEY_PATH] != SRC_NONE)
        sf_env_set(c, x, src, SF_PASSPHRASE);
    const char *url = sg_cfg_env("SNOWFLAKE_BASE_URL");
    if (!base_set && url) sg_config_endpoints_from_list(c, p, "env:SNOWFLAKE_BASE_URL", url);
}

/* Reports missing / conflicting settings (at the provider's path, or at env:SNOWFLAKE_* for
 * a provider made from the environment) and derives the default base URL. */
static void sf_finish(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, const unsigned char *src, int from_env,
                      int base_set)
{
    sg_cortex_cfg_t *x = p->ext;
    int named = strcmp(p->name, NAME) == 0;
    static const int required[] = {SF_ACCOUNT, SF_USER};
    for (size_t i = 0; i < SG_ARRAY_LEN(required); i++) {
        const sf_field_t *fd = &sf_fields[required[i]];
        if (src[required[i]] != SRC_NONE) continue;
        if (from_env) {
            char where[64];
            snprintf(where, sizeof(where), "env:%s", fd->env);
            sg_cfg_error_at(c, where, "%s is not set (required with SNOWFLAKE_ACCOUNT)", fd->env);
        } else if (named) {
            sg_cfg_errf(c, "missing required key \"%s\" (or set %s)", fd->key, fd->env);
        } else {
            sg_cfg_errf(c, "missing required key \"%s\"", fd->key);
        }
    }

    int has_pat = src[SF_PAT] != SRC_NONE, has_key = src[SF_KEY_PATH] != SRC_NONE;
    if (!has_pat && !has_key) {
        if (from_env)
            sg_cfg_error_at(
                c, "env:SNOWFLAKE_PAT",
                "neither SNOWFLAKE_PAT nor SNOWFLAKE_PRIVATE_KEY_PATH is set (set one)");
        else if (named)
            sg_cfg_errf(c, "missing credentials: set exactly one of \"pat\" and "
                           "\"private_key_path\" (or SNOWFLAKE_PAT / SNOWFLAKE_PRIVATE_KEY_PATH)");
        else
            sg_cfg_errf(c,
                        "missing credentials: set exactly one of \"pat\" and \"private_key_path\"");
    } else if (has_pat && has_key) {
        if (src[SF_PAT] == SRC_ENV)
            sg_cfg_error_at(c, "env:SNOWFLAKE_PRIVATE_KEY_PATH",
                            "set only one of SNOWFLAKE_PAT and SNOWFLAKE_PRIVATE_KEY_PATH");
        else
            sg_cfg_errf(c, "set exactly one of \"pat\" and \"private_key_path\", not both");
    }
    if (src[SF_PASSPHRASE] == SRC_FILE && !has_key) {
        size_t old = sg_cfg_push_key(c, "private_key_passphrase");
        sg_cfg_errf(c, "private_key_passphrase is only used with \"private_key_path\"");
        sg_cfg_pop(c, old);
    }

    if (!base_set && p->n_endpoints == 0 && x->account) {
        /* https://<account lower-cased, '_' → '-'>.snowflakecomputing.com */
        sg_buf_t b;
        sg_buf_init(&b, (size_t)-2);
        sg_buf_append_str(&b, "https://");
        for (const char *q = x->account; *q; q++) {
            char ch = *q == '_' ? '-' : (*q >= 'A' && *q <= 'Z') ? (char)(*q - 'A' + 'a') : *q;
            sg_buf_append(&b, &ch, 1);
        }
        sg_buf_append_str(&b, SF_HOST_SUFFIX);
        sg_config_endpoint_add(p, sg_buf_steal(&b, NULL), 1);
    }
}

static void parse(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    sg_cortex_cfg_t *x = sg_xcalloc(1, sizeof(*x));
    p->ext = x;
    x->pat_warn_days = PAT_WARN_DAYS_DEFAULT;
    unsigned char src[SF_N] = {0};
    int interp;
    for (int f = 0; f < SF_N; f++) {
        const sf_field_t *fd = &sf_fields[f];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, fd->key);
        if (!it) continue;
        src[f] = SRC_FILE;
        size_t old = sg_cfg_push_key(c, fd->key);
        char *v;
        if (fd->optional && cJSON_IsNull(it)) {
            /* explicitly unset */
        } else if (fd->optional && !cJSON_IsString(it)) {
            sg_cfg_errf(c, "must be a string or null, not %s", sg_cfg_type_name(it));
        } else if (sg_cfg_get_str(c, it, &v, &interp) == 0) {
            sf_set(c, x, f, v, sg_cfg_path(c), !interp);
        }
        sg_cfg_pop(c, old);
    }

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "pat_warn_days");
    if (it) {
        size_t old = sg_cfg_push_key(c, "pat_warn_days");
        uint64_t v;
        if (sg_cfg_get_uint(c, it, 0, &v) == 0) {
            if (v > PAT_WARN_DAYS_MAX)
                sg_cfg_errf(c, "must be at most %d", PAT_WARN_DAYS_MAX);
            else
                x->pat_warn_days = (int)v;
        }
        sg_cfg_pop(c, old);
    }

    int base_set = cJSON_GetObjectItemCaseSensitive(obj, "base_url") != NULL ||
                   cJSON_GetObjectItemCaseSensitive(obj, "endpoints") != NULL;
    if (strcmp(p->name, NAME) == 0) sf_env_fill(c, p, src, base_set);
    sf_finish(c, p, src, 0, base_set || p->n_endpoints > 0);
}

static void parse_model(sg_cfg_ctx_t *c, const cJSON *obj, sg_model_cfg_t *m)
{
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, "api") : NULL;
    if (it) {
        size_t old = sg_cfg_push_key(c, "api");
        char *api;
        int interp;
        if (sg_cfg_get_str(c, it, &api, &interp) == 0) {
            if (strcmp(api, "complete") != 0 && strcmp(api, "openai") != 0) {
                sg_cfg_errf(c, "must be \"complete\" or \"openai\"");
                free(api);
            } else {
                m->api = api;
            }
        }
        sg_cfg_pop(c, old);
    }
    if (!m->api) m->api = sg_xstrdup("complete");
}

static void from_env(sg_cfg_ctx_t *c)
{
    sg_config_t *cfg = c->cfg;
    if (sg_config_provider(cfg, NAME) || sg_config_provider_of_kind(cfg, "cortex")) return;
    if (!sg_cfg_env("SNOWFLAKE_ACCOUNT")) {
        /* Snowflake settings without the account create nothing: say so. */
        static const char *const vars[] = {"SNOWFLAKE_USER", "SNOWFLAKE_PAT",
                                           "SNOWFLAKE_PRIVATE_KEY_PATH"};
        sg_buf_t set;
        sg_buf_init(&set, 256);
        int n = 0;
        for (size_t i = 0; i < SG_ARRAY_LEN(vars); i++)
            if (sg_cfg_env(vars[i])) sg_buf_printf(&set, "%s%s", n++ ? " and " : "", vars[i]);
        if (n)
            sg_cfg_error_at(c, "env:SNOWFLAKE_ACCOUNT",
                            "%s %s set but SNOWFLAKE_ACCOUNT is not, so no cortex provider exists: "
                            "set SNOWFLAKE_ACCOUNT to the account identifier (e.g. "
                            "myorg-myaccount)",
                            set.data, n > 1 ? "are" : "is");
        sg_buf_dispose(&set);
        return;
    }
    sg_provider_cfg_t p = {0};
    unsigned char src[SF_N] = {0};
    p.name = sg_xstrdup(NAME);
    p.kind = sg_xstrdup("cortex");
    p.ops = &sg_kind_cortex;
    sg_cortex_cfg_t *x = sg_xcalloc(1, sizeof(*x));
    x->pat_warn_days = PAT_WARN_DAYS_DEFAULT;
    p.ext = x;
    sf_env_fill(c, &p, src, 0);
    sf_finish(c, &p, src, 1, p.n_endpoints > 0);
    sg_config_provider_add(c, &p, 1);
}

/* ---- runtime ----------------------------------------------------------------------------- */

static void *state_new(const sg_provider_cfg_t *p, int64_t now, char *err, size_t errlen)
{
    return sg_sf_auth_new(p->name, sg_cortex_cfg(p), now, err, errlen);
}

static void state_free(void *state)
{
    sg_sf_auth_free(state);
}

static void secrets(const sg_provider_cfg_t *p, sg_secrets_t *out)
{
    const sg_cortex_cfg_t *x = sg_cortex_cfg(p);
    sg_secrets_add(out, x->pat);
    sg_secrets_add(out, x->private_key_passphrase);
}

static const char *live_secret(const void *state)
{
    return sg_sf_auth_current(state);
}

/* The key pair's JWT lives 59 minutes and is renewed: what expires is a PAT, never the key. */
static void describe(const sg_provider_cfg_t *p, const void *state, int64_t now, cJSON *obj)
{
    const sg_cortex_cfg_t *x = sg_cortex_cfg(p);
    cJSON_AddStringToObject(obj, "account", x->account ? x->account : "");
    cJSON_AddStringToObject(obj, "user", x->user ? x->user : "");
    if (x->role) cJSON_AddStringToObject(obj, "role", x->role);
    if (!state) return;
    const char *method = sg_sf_auth_method(state);
    cJSON_AddStringToObject(obj, "auth", method);
    int64_t exp = sg_sf_auth_expires_at(state);
    if (strcmp(method, "pat") == 0 && exp) {
        cJSON_AddNumberToObject(obj, "token_expires_at", (double)exp);
        cJSON_AddNumberToObject(obj, "token_days_to_expiry", (double)(exp - now) / 86400.0);
    } else if (strcmp(method, "pat") == 0) {
        cJSON_AddNullToObject(obj, "token_expires_at");
    } else {
        cJSON_AddStringToObject(obj, "credential_expiry", "never (key pair; JWTs renewed hourly)");
    }
}

static void log_fields(const sg_provider_cfg_t *p, const void *state, int64_t now, sg_logline_t *l)
{
    SG_UNUSED(p);
    if (!state) return;
    sg_logline_str(l, "auth", sg_sf_auth_method(state));
    int64_t exp = sg_sf_auth_expires_at(state);
    if (exp && strcmp(sg_sf_auth_method(state), "pat") == 0)
        sg_logline_num(l, "token_days_left", (double)(exp - now) / 86400.0);
}

static int build_probe(const sg_provider_cfg_t *p, void *state, const char *base_url,
                       const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                       size_t url_cap, sg_error_t *err)
{
    SG_UNUSED(p);
    int n = snprintf(url_buf, url_cap, "%s/api/v2/cortex/models", base_url);
    if (n < 0 || (size_t)n >= url_cap) {
        sg_error_set(err, 500, "api_error", "provider_not_configured", "base URL too long");
        return -1;
    }
    const char *token = NULL, *type = NULL;
    if (state && sg_sf_auth_token(state, sg_unix_time(), &token, &type, err) != 0) return -1;
    sg_upstream_get(out, url_buf, sg_cortex_headers(token, type), uo);
    return 0;
}

/* {"models":[{"name":…} | "…", …]} → ["…",…] */
static cJSON *probe_models(const char *body, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    if (!cJSON_IsArray(models)) {
        cJSON_Delete(j);
        return NULL;
    }
    cJSON *ids = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        const cJSON *name = cJSON_IsString(m) ? m : cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(name) && name->valuestring[0] && strlen(name->valuestring) < 200)
            cJSON_AddItemToArray(ids, cJSON_CreateString(name->valuestring));
    }
    cJSON_Delete(j);
    return ids;
}

const sg_provider_kind_t sg_kind_cortex = {
    .kind = "cortex",
    .default_name = NAME,
    .keys = keys,
    .n_keys = SG_ARRAY_LEN(keys),
    .foreign_msg = "api_key is not used by kind \"cortex\": cortex uses pat or private_key_path",
    .model_keys = model_keys,
    .n_model_keys = SG_ARRAY_LEN(model_keys),
    .builtin = cortex_models,
    .n_builtin = SG_ARRAY_LEN(cortex_models),
    .builtin_label = "(built-in Cortex catalog)",
    .builtin_serves = 1,
    .parse = parse,
    .parse_model = parse_model,
    .check_url = check_url,
    .from_env = from_env,
    .free_ext = free_ext,
    .state_new = state_new,
    .state_free = state_free,
    .secrets = secrets,
    .live_secret = live_secret,
    .describe = describe,
    .log_fields = log_fields,
    .build_probe = build_probe,
    .probe_models = probe_models,
    .vt = &sg_provider_cortex,
};
