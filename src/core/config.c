/* Gateway configuration: defaults, then one JSON file, then the environment.
 *
 * This file is the generic machinery (JSON paths in messages, ${ENV} / ${file:PATH}
 * interpolation, comments, unknown-key detection, typed reads, the registry of public model
 * names) and the sections that belong to no module: listen, log_level, limits, cors, upstream,
 * shutdown_grace_ms, and the common part of every provider (kind, base_url / endpoints,
 * models, discover, pinned). Each provider kind parses its own keys and environment variables
 * (the src/providers/ files named *_config.c, through sophia/config_parse.h). The README's
 * "Configuration" section documents every key.
 *
 * Errors carry a JSON path ("$" for the file as a whole, "$.limits.max_body_bytes",
 * "$.providers.lambda.models[2].price_in") or "env:NAME" for an environment variable. Error
 * messages never contain secrets, interpolated values, base URLs or environment values. */
#include "sophia/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sophia/buf.h"
#include "sophia/catalog.h"
#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/log.h"
#include "sophia/provider.h"

#define CONFIG_FILE_MAX (16u * 1024 * 1024)
#define MAX_JSON_INT 9007199254740991.0 /* 2^53 - 1: every integer a double holds exactly */
#define MAX_WEIGHT 1000

/* ---- messages --------------------------------------------------------------------------- */

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

static void add_item(sg_config_errors_t *errs, const char *path, char *msg)
{
    errs->items = sg_xrealloc(errs->items, (errs->n + 1) * sizeof(*errs->items));
    sg_config_error_t *e = &errs->items[errs->n++];
    e->path = sg_xstrdup(path);
    e->message = msg;
}

const char *sg_cfg_path(const sg_cfg_ctx_t *c)
{
    return c->path.data ? c->path.data : "$";
}

void sg_cfg_error_at(sg_cfg_ctx_t *c, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_item(c->errs, path, xvasprintf(fmt, ap));
    va_end(ap);
}

void sg_cfg_errf(sg_cfg_ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_item(c->errs, sg_cfg_path(c), xvasprintf(fmt, ap));
    va_end(ap);
}

void sg_cfg_warn_at(sg_cfg_ctx_t *c, const char *path, const char *fmt, ...)
{
    if (!c->cfg->warnings) c->cfg->warnings = sg_xcalloc(1, sizeof(*c->cfg->warnings));
    va_list ap;
    va_start(ap, fmt);
    add_item(c->cfg->warnings, path, xvasprintf(fmt, ap));
    va_end(ap);
}

/* ---- paths ------------------------------------------------------------------------------ */

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

size_t sg_cfg_push_key(sg_cfg_ctx_t *c, const char *key)
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

size_t sg_cfg_push_index(sg_cfg_ctx_t *c, size_t i)
{
    size_t old = c->path.len;
    sg_buf_printf(&c->path, "[%zu]", i);
    return old;
}

void sg_cfg_pop(sg_cfg_ctx_t *c, size_t old)
{
    c->path.len = old;
    if (c->path.data) c->path.data[old] = '\0';
}

/* ---- keys ------------------------------------------------------------------------------- */

const char *sg_cfg_type_name(const cJSON *it)
{
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "invalid";
}

int sg_cfg_expect_object(sg_cfg_ctx_t *c, const cJSON *it)
{
    if (cJSON_IsObject(it)) return 0;
    sg_cfg_errf(c, "must be an object, not %s", sg_cfg_type_name(it));
    return -1;
}

/* 1 when an earlier sibling of it has the same key. */
static int is_dup_key(const cJSON *obj, const cJSON *it);

/* Reports keys that appear twice in obj. */
static void check_dups(sg_cfg_ctx_t *c, const cJSON *obj)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (!is_dup_key(obj, it)) continue;
        size_t old = sg_cfg_push_key(c, it->string ? it->string : "");
        sg_cfg_errf(c, "duplicate key");
        sg_cfg_pop(c, old);
    }
}

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

void sg_cfg_check_keys(sg_cfg_ctx_t *c, const cJSON *obj, const char *const *allowed, size_t n,
                       const char *const *foreign, size_t nf, const char *foreign_msg)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        size_t old = sg_cfg_push_key(c, k);
        if (!in_list(allowed, n, k)) {
            if (foreign && in_list(foreign, nf, k))
                sg_cfg_errf(c, "%s", foreign_msg);
            else
                sg_cfg_errf(c, "unknown key");
        } else if (is_dup_key(obj, it)) {
            sg_cfg_errf(c, "duplicate key");
        }
        sg_cfg_pop(c, old);
    }
}

/* ---- values ----------------------------------------------------------------------------- */

static int is_env_name_char(char ch, int first)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Appends the content of a secret file (at most 64 KiB, trailing white space dropped).
 * Returns 0, or -1 after reporting (the message names the path, never the content). */
static int read_secret_file(sg_cfg_ctx_t *c, const char *path, sg_buf_t *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sg_cfg_errf(c, "cannot read secret file %s: %s", path, strerror(errno));
        return -1;
    }
    char *data = sg_xmalloc(65537);
    size_t n = fread(data, 1, 65537, f);
    int err = ferror(f);
    fclose(f);
    int rc = 0;
    if (err) {
        sg_cfg_errf(c, "cannot read secret file %s", path);
        rc = -1;
    } else if (n > 65536) {
        sg_cfg_errf(c, "secret file %s is larger than 64 KiB", path);
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
static int interpolate(sg_cfg_ctx_t *c, const char *in, char **out, int *interp)
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
            sg_cfg_errf(c, "unterminated ${ (missing '}')");
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
            sg_cfg_errf(c,
                        "invalid environment variable name in ${...} (use letters, digits, '_')");
            bad = 1;
        } else {
            char *var = sg_xstrndup(name, n);
            const char *val = getenv(var);
            if (!val) {
                sg_cfg_errf(c, "environment variable %s is not set", var);
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

int sg_cfg_get_str(sg_cfg_ctx_t *c, const cJSON *it, char **out, int *interp)
{
    *out = NULL;
    *interp = 0;
    if (!cJSON_IsString(it)) {
        sg_cfg_errf(c, "must be a string, not %s", sg_cfg_type_name(it));
        return -1;
    }
    return interpolate(c, it->valuestring, out, interp);
}

int sg_cfg_get_opt_str(sg_cfg_ctx_t *c, const cJSON *it, char **out, int *interp)
{
    *out = NULL;
    *interp = 0;
    if (cJSON_IsNull(it)) return 0;
    if (!cJSON_IsString(it)) {
        sg_cfg_errf(c, "must be a string or null, not %s", sg_cfg_type_name(it));
        return -1;
    }
    if (interpolate(c, it->valuestring, out, interp) != 0) return -1;
    if (!**out) {
        free(*out);
        *out = NULL;
    }
    return 0;
}

int sg_cfg_get_uint(sg_cfg_ctx_t *c, const cJSON *it, uint64_t min, uint64_t *out)
{
    const char *want = min >= 1 ? "a positive integer" : "a non-negative integer";
    if (!cJSON_IsNumber(it)) {
        sg_cfg_errf(c, "must be %s, not %s", want, sg_cfg_type_name(it));
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v)) {
        sg_cfg_errf(c, "must be %s (got a fraction)", want);
        return -1;
    }
    if (v < (double)min) {
        sg_cfg_errf(c, "must be %s (got %.0f)", want, v);
        return -1;
    }
    if (v > MAX_JSON_INT) {
        sg_cfg_errf(c, "is too large (at most %.0f)", MAX_JSON_INT);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int sg_cfg_get_num(sg_cfg_ctx_t *c, const cJSON *it, double min, double max, double *out)
{
    if (!cJSON_IsNumber(it)) {
        sg_cfg_errf(c, "must be a number, not %s", sg_cfg_type_name(it));
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v < min || v > max) {
        sg_cfg_errf(c, "must be a number from %g to %g", min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int sg_cfg_get_bool(sg_cfg_ctx_t *c, const cJSON *it, int *out)
{
    if (!cJSON_IsBool(it)) {
        sg_cfg_errf(c, "must be true or false, not %s", sg_cfg_type_name(it));
        return -1;
    }
    *out = cJSON_IsTrue(it);
    return 0;
}

int sg_cfg_get_price(sg_cfg_ctx_t *c, const cJSON *it, double *out)
{
    if (!cJSON_IsNumber(it)) {
        sg_cfg_errf(c, "must be a number (USD per 1M tokens), not %s", sg_cfg_type_name(it));
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v < 0) {
        sg_cfg_errf(c, "must be a non-negative number (USD per 1M tokens)");
        return -1;
    }
    *out = v;
    return 0;
}

const char *sg_cfg_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
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

const char *sg_cfg_check_base_url(char *url)
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

const char *sg_cfg_check_token(const char *s)
{
    for (const char *p = s; *p; p++)
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

static const sg_cfg_name_t *name_find(const sg_cfg_ctx_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_names; i++)
        if (strcmp(c->names[i].name, name) == 0) return &c->names[i];
    return NULL;
}

const char *sg_cfg_name_used(const sg_cfg_ctx_t *c, const char *name)
{
    const sg_cfg_name_t *n = name_find(c, name);
    return n ? n->path : NULL;
}

static void name_add(sg_cfg_ctx_t *c, const char *name, const char *path, int secret)
{
    if (c->n_names == c->cap_names) {
        c->cap_names = c->cap_names ? c->cap_names * 2 : 32;
        c->names = sg_xrealloc(c->names, c->cap_names * sizeof(*c->names));
    }
    c->names[c->n_names++] = (sg_cfg_name_t){name, sg_xstrdup(path), secret};
}

void sg_cfg_name_add(sg_cfg_ctx_t *c, const char *name, const char *label)
{
    name_add(c, name, label, 0);
}

void sg_cfg_name_register(sg_cfg_ctx_t *c, const char *name, int secret)
{
    const sg_cfg_name_t *prev = name_find(c, name);
    if (prev) {
        if (secret || prev->secret)
            sg_cfg_errf(c, "duplicate model name (already used at %s)", prev->path);
        else
            sg_cfg_errf(c, "duplicate model name \"%s\" (already used at %s)", name, prev->path);
        return;
    }
    name_add(c, name, sg_cfg_path(c), secret);
}

/* ---- sections -------------------------------------------------------------------------- */

static const sg_cfg_num_t limit_fields[] = {
    SG_CFG_SIZE("max_header_bytes", max_header_bytes, 1, 0, 16384),
    SG_CFG_SIZE("max_body_bytes", max_body_bytes, 1, 0, 1024 * 1024),
    SG_CFG_U64("header_timeout_ms", header_timeout_ms, 1, 0, 10000),
    SG_CFG_U64("idle_timeout_ms", idle_timeout_ms, 1, 0, 60000),
    SG_CFG_U64("body_timeout_ms", body_timeout_ms, 1, 0, 30000),
    SG_CFG_U64("write_stall_timeout_ms", write_stall_timeout_ms, 1, 0, 30000),
    SG_CFG_SIZE("max_connections", max_connections, 1, 0, 10000),
    SG_CFG_SIZE("high_watermark", high_watermark, 1, 0, 65536),
    SG_CFG_SIZE("low_watermark", low_watermark, 0, 0, 16384),
};

static const sg_cfg_num_t upstream_fields[] = {
    SG_CFG_U64("connect_timeout_ms", connect_timeout_ms, 1, 0, 5000),
    SG_CFG_U64("first_byte_timeout_ms", first_byte_timeout_ms, 1, 0, 60000),
    SG_CFG_U64("idle_timeout_ms", upstream_idle_timeout_ms, 1, 0, 60000),
    SG_CFG_U64("total_timeout_ms", total_timeout_ms, 1, 0, 600000),
    SG_CFG_SIZE("max_retries", max_retries, 0, 20, 2),
    SG_CFG_U64("retry_base_ms", retry_base_ms, 1, 0, 250),
    SG_CFG_U64("deadline_ms", deadline_ms, 1, 0, 120000),
    SG_CFG_U64("sse_heartbeat_ms", sse_heartbeat_ms, 0, 0, 15000),
};

static void set_num(sg_config_t *cfg, const sg_cfg_num_t *f, uint64_t v)
{
    char *base = (char *)cfg;
    if (f->is_size)
        *(size_t *)(base + f->off) = (size_t)v;
    else
        *(uint64_t *)(base + f->off) = v;
}

void sg_cfg_num_defaults(sg_config_t *cfg, const sg_cfg_num_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) set_num(cfg, &f[i], f[i].def);
}

void sg_cfg_parse_numbers(sg_cfg_ctx_t *c, const cJSON *obj, const sg_cfg_num_t *f, size_t n,
                          const char *const *extra)
{
    const char *keys[32] = {0};
    size_t nk = 0;
    for (size_t i = 0; i < n && nk < SG_ARRAY_LEN(keys); i++) keys[nk++] = f[i].key;
    for (size_t i = 0; extra && extra[i] && nk < SG_ARRAY_LEN(keys); i++) keys[nk++] = extra[i];
    sg_cfg_check_keys(c, obj, keys, nk, NULL, 0, NULL);
    for (size_t i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, f[i].key);
        if (!it) continue;
        size_t old = sg_cfg_push_key(c, f[i].key);
        uint64_t v;
        if (sg_cfg_get_uint(c, it, f[i].min, &v) == 0) {
            if (f[i].max && v > f[i].max)
                sg_cfg_errf(c, "must be at most %llu", (unsigned long long)f[i].max);
            else
                set_num(c->cfg, &f[i], v);
        }
        sg_cfg_pop(c, old);
    }
}

static void parse_cors(sg_cfg_ctx_t *c, const cJSON *obj)
{
    static const char *const keys[] = {"allowed_origins"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "allowed_origins");
    if (!arr) return;
    size_t old = sg_cfg_push_key(c, "allowed_origins");
    if (!cJSON_IsArray(arr)) {
        sg_cfg_errf(c, "must be an array of strings, not %s", sg_cfg_type_name(arr));
        sg_cfg_pop(c, old);
        return;
    }
    sg_config_t *cfg = c->cfg;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    cfg->cors_origins = sg_xcalloc(n, sizeof(char *));
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t o2 = sg_cfg_push_index(c, i);
        char *s;
        int interp;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            const char *why = check_origin(s);
            if (why) {
                sg_cfg_errf(c, "%s", why);
                free(s);
            } else {
                cfg->cors_origins[cfg->n_cors_origins++] = s;
            }
        }
        sg_cfg_pop(c, o2);
    }
    sg_cfg_pop(c, old);
}

/* ---- models ------------------------------------------------------------------------------ */

static const char *const model_keys[] = {
    "id",        "upstream_id", "aliases",        "price_in",
    "price_out", "tier",        "context_window", "capabilities"};

static const char *const tier_names[] = {"small", "medium", "large"};

static void parse_tier(sg_cfg_ctx_t *c, const cJSON *it, int *tier)
{
    if (cJSON_IsString(it))
        for (int i = 0; i < 3; i++)
            if (strcmp(it->valuestring, tier_names[i]) == 0) {
                *tier = i;
                return;
            }
    sg_cfg_errf(c, "must be \"small\", \"medium\" or \"large\"");
}

static void parse_caps(sg_cfg_ctx_t *c, const cJSON *it, unsigned *caps)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"tools", SG_CAP_TOOLS}, {"json_schema", SG_CAP_JSON_SCHEMA}, {"vision", SG_CAP_VISION}};
    if (!cJSON_IsArray(it)) {
        sg_cfg_errf(c, "must be an array of \"tools\", \"json_schema\", \"vision\"");
        return;
    }
    *caps = 0;
    size_t i = 0;
    for (const cJSON *v = it->child; v; v = v->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        size_t k = 0;
        while (k < SG_ARRAY_LEN(names) &&
               !(cJSON_IsString(v) && strcmp(v->valuestring, names[k].name) == 0))
            k++;
        if (k == SG_ARRAY_LEN(names))
            sg_cfg_errf(c, "must be \"tools\", \"json_schema\" or \"vision\"");
        else
            *caps |= names[k].bit;
        sg_cfg_pop(c, old);
    }
}

static const sg_builtin_model_t *builtin_find(const sg_provider_kind_t *k, const char *id)
{
    for (size_t i = 0; k && i < k->n_builtin; i++)
        if (strcmp(k->builtin[i].id, id) == 0) return &k->builtin[i];
    return NULL;
}

/* The defaults of a model: its built-in entry when the kind knows the id, else a guess. */
static void model_defaults(const sg_provider_kind_t *k, sg_model_cfg_t *m)
{
    const sg_builtin_model_t *def = m->upstream_id ? builtin_find(k, m->upstream_id) : NULL;
    if (!def && m->id) def = builtin_find(k, m->id);
    m->price_in_per_mtok = def ? def->price_in : 0;
    m->price_out_per_mtok = def ? def->price_out : 0;
    m->tier = def ? def->tier : sg_tier_guess(m->upstream_id ? m->upstream_id : "");
    m->context_window = def ? def->context_window : 0;
    m->caps = def ? def->caps : SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA;
}

/* The kind whose model keys include key (for the message about a foreign model key). */
static const sg_provider_kind_t *model_key_owner(const char *key)
{
    for (size_t i = 0; sg_provider_kinds[i]; i++)
        if (in_list(sg_provider_kinds[i]->model_keys, sg_provider_kinds[i]->n_model_keys, key))
            return sg_provider_kinds[i];
    return NULL;
}

static void parse_model(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    const sg_provider_kind_t *k = p->ops;
    if (sg_cfg_expect_object(c, obj) != 0) return;
    const char *allowed[32];
    size_t n = 0;
    for (size_t i = 0; i < SG_ARRAY_LEN(model_keys); i++) allowed[n++] = model_keys[i];
    for (size_t i = 0; k && i < k->n_model_keys && n < SG_ARRAY_LEN(allowed); i++)
        allowed[n++] = k->model_keys[i];
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        if (in_list(allowed, n, key)) continue;
        const sg_provider_kind_t *owner = model_key_owner(key);
        size_t old = sg_cfg_push_key(c, key);
        if (owner)
            sg_cfg_errf(c, "unknown key (\"%s\" applies only to models of kind \"%s\")", key,
                        owner->kind);
        else
            sg_cfg_errf(c, "unknown key");
        sg_cfg_pop(c, old);
    }
    check_dups(c, obj);
    sg_model_cfg_t *m = &p->models[p->n_models];
    int interp;
    size_t old;

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "id");
    if (!it) {
        sg_cfg_errf(c, "missing required key \"id\"");
    } else {
        old = sg_cfg_push_key(c, "id");
        if (sg_cfg_get_str(c, it, &m->id, &interp) != 0) {
            /* reported */
        } else if (!*m->id) {
            sg_cfg_errf(c, "must not be empty");
        } else {
            sg_cfg_name_register(c, m->id, interp);
        }
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(obj, "upstream_id");
    if (it) {
        old = sg_cfg_push_key(c, "upstream_id");
        if (sg_cfg_get_str(c, it, &m->upstream_id, &interp) == 0 && !*m->upstream_id)
            sg_cfg_errf(c, "must not be empty");
        sg_cfg_pop(c, old);
    }
    if (!m->upstream_id && m->id) m->upstream_id = sg_xstrdup(m->id);

    it = cJSON_GetObjectItemCaseSensitive(obj, "aliases");
    if (it) {
        old = sg_cfg_push_key(c, "aliases");
        if (!cJSON_IsArray(it)) {
            sg_cfg_errf(c, "must be an array of strings, not %s", sg_cfg_type_name(it));
        } else {
            m->aliases = sg_xcalloc((size_t)cJSON_GetArraySize(it), sizeof(char *));
            size_t i = 0;
            for (const cJSON *a = it->child; a; a = a->next, i++) {
                size_t o2 = sg_cfg_push_index(c, i);
                char *s;
                if (sg_cfg_get_str(c, a, &s, &interp) != 0) {
                    /* reported */
                } else if (!*s) {
                    sg_cfg_errf(c, "must not be empty");
                    free(s);
                } else {
                    m->aliases[m->n_aliases++] = s;
                    sg_cfg_name_register(c, s, interp);
                }
                sg_cfg_pop(c, o2);
            }
        }
        sg_cfg_pop(c, old);
    }

    model_defaults(k, m);
    static const struct {
        const char *key;
        size_t off;
    } prices[] = {{"price_in", offsetof(sg_model_cfg_t, price_in_per_mtok)},
                  {"price_out", offsetof(sg_model_cfg_t, price_out_per_mtok)}};
    for (size_t i = 0; i < SG_ARRAY_LEN(prices); i++) {
        it = cJSON_GetObjectItemCaseSensitive(obj, prices[i].key);
        if (!it) continue;
        old = sg_cfg_push_key(c, prices[i].key);
        sg_cfg_get_price(c, it, (double *)(void *)((char *)m + prices[i].off));
        sg_cfg_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "tier");
    if (it) {
        old = sg_cfg_push_key(c, "tier");
        parse_tier(c, it, &m->tier);
        sg_cfg_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "context_window");
    if (it) {
        old = sg_cfg_push_key(c, "context_window");
        uint64_t v;
        if (sg_cfg_get_uint(c, it, 1, &v) == 0) m->context_window = (long)v;
        sg_cfg_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "capabilities");
    if (it) {
        old = sg_cfg_push_key(c, "capabilities");
        parse_caps(c, it, &m->caps);
        sg_cfg_pop(c, old);
    }
    if (k && k->parse_model) k->parse_model(c, obj, m);
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

/* Fills p->models with its kind's built-in models, dropping every id or alias already used. */
static void fill_builtin(sg_cfg_ctx_t *c, sg_provider_cfg_t *p)
{
    const sg_provider_kind_t *k = p->ops;
    SG_ASSERT(p->n_models == 0 && p->models == NULL);
    p->models = sg_xcalloc(k->n_builtin ? k->n_builtin : 1, sizeof(*p->models));
    for (size_t i = 0; i < k->n_builtin; i++) {
        const sg_builtin_model_t *e = &k->builtin[i];
        if (name_find(c, e->id)) continue;
        sg_model_cfg_t *m = &p->models[p->n_models++];
        m->id = sg_xstrdup(e->id);
        m->upstream_id = sg_xstrdup(e->id);
        model_defaults(k, m);
        if (k->parse_model) k->parse_model(c, NULL, m);
        name_add(c, m->id, k->builtin_label, 0);
        if (e->alias && !name_find(c, e->alias)) {
            m->aliases = sg_xcalloc(1, sizeof(char *));
            m->aliases[m->n_aliases++] = sg_xstrdup(e->alias);
            name_add(c, m->aliases[0], k->builtin_label, 0);
        }
    }
}

/* ---- providers --------------------------------------------------------------------------- */

static const char *const common_provider_keys[] = {"kind",   "base_url", "endpoints",
                                                   "models", "discover", "pinned"};

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

/* "\"openai\", \"cortex\"" */
static void kind_list(char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; sg_provider_kinds[i] && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s\"%s\"", i ? ", " : "",
                              sg_provider_kinds[i]->kind);
}

/* Checks the provider object's keys: the common ones and its kind's; another kind's keys are
 * named as such. */
static void check_provider_keys(sg_cfg_ctx_t *c, const cJSON *obj, const sg_provider_kind_t *k)
{
    const char *allowed[64];
    size_t n = 0;
    for (size_t i = 0; i < SG_ARRAY_LEN(common_provider_keys); i++)
        allowed[n++] = common_provider_keys[i];
    for (size_t i = 0; k && i < k->n_keys && n < SG_ARRAY_LEN(allowed); i++)
        allowed[n++] = k->keys[i];
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *key = it->string ? it->string : "";
        if (in_list(allowed, n, key)) continue;
        size_t old = sg_cfg_push_key(c, key);
        const sg_provider_kind_t *owner = NULL;
        for (size_t i = 0; sg_provider_kinds[i] && !owner; i++)
            if (sg_provider_kinds[i] != k &&
                in_list(sg_provider_kinds[i]->keys, sg_provider_kinds[i]->n_keys, key))
                owner = sg_provider_kinds[i];
        if (owner && k && k->foreign_msg)
            sg_cfg_errf(c, "%s", k->foreign_msg);
        else if (owner && k)
            sg_cfg_errf(c, "unknown key (only providers of kind \"%s\" take it)", owner->kind);
        else if (!k && owner)
            ; /* the kind is unknown: reported there */
        else
            sg_cfg_errf(c, "unknown key");
        sg_cfg_pop(c, old);
    }
    check_dups(c, obj);
}

/* Adds an endpoint (url owned) to p after the kind's check; reports at where. */
static void add_endpoint(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, const char *where, char *url,
                         unsigned weight)
{
    const char *why = sg_cfg_check_base_url(url);
    if (!why && p->ops && p->ops->check_url) why = p->ops->check_url(c, where, url);
    if (why) {
        sg_cfg_error_at(c, where, "base URL %s", why);
        free(url);
        return;
    }
    sg_config_endpoint_add(p, url, weight);
}

void sg_config_endpoint_add(sg_provider_cfg_t *p, char *url, unsigned weight)
{
    p->endpoints = sg_xrealloc(p->endpoints, (p->n_endpoints + 1) * sizeof(*p->endpoints));
    p->endpoints[p->n_endpoints++] = (sg_endpoint_cfg_t){url, weight ? weight : 1};
}

static void parse_endpoints(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    const cJSON *bu = cJSON_GetObjectItemCaseSensitive(obj, "base_url");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(obj, "endpoints");
    int interp;
    if (bu && eps) {
        size_t old = sg_cfg_push_key(c, "endpoints");
        sg_cfg_errf(c, "give either \"base_url\" or \"endpoints\", not both");
        sg_cfg_pop(c, old);
        return;
    }
    if (bu) {
        size_t old = sg_cfg_push_key(c, "base_url");
        char *url;
        if (sg_cfg_get_str(c, bu, &url, &interp) == 0) add_endpoint(c, p, sg_cfg_path(c), url, 1);
        sg_cfg_pop(c, old);
        return;
    }
    if (!eps) return;
    size_t old = sg_cfg_push_key(c, "endpoints");
    if (!cJSON_IsArray(eps) || !eps->child) {
        sg_cfg_errf(c, "must be a non-empty array of {\"base_url\", \"weight\"} objects");
        sg_cfg_pop(c, old);
        return;
    }
    size_t i = 0;
    for (const cJSON *e = eps->child; e; e = e->next, i++) {
        size_t o2 = sg_cfg_push_index(c, i);
        static const char *const keys[] = {"base_url", "weight"};
        if (sg_cfg_expect_object(c, e) == 0) {
            sg_cfg_check_keys(c, e, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
            uint64_t weight = 1;
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "weight");
            if (w) {
                size_t o3 = sg_cfg_push_key(c, "weight");
                if (sg_cfg_get_uint(c, w, 1, &weight) == 0 && weight > MAX_WEIGHT) {
                    sg_cfg_errf(c, "must be at most %d", MAX_WEIGHT);
                    weight = 1;
                }
                sg_cfg_pop(c, o3);
            }
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(e, "base_url");
            if (!u) {
                sg_cfg_errf(c, "missing required key \"base_url\"");
            } else {
                size_t o3 = sg_cfg_push_key(c, "base_url");
                char *url;
                if (sg_cfg_get_str(c, u, &url, &interp) == 0)
                    add_endpoint(c, p, sg_cfg_path(c), url, (unsigned)weight);
                sg_cfg_pop(c, o3);
            }
        }
        sg_cfg_pop(c, o2);
    }
    sg_cfg_pop(c, old);
}

void sg_config_endpoints_from_list(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, const char *where,
                                   const char *list)
{
    /* "url1,url2,…" (white space around the commas is ignored). */
    const char *s = list;
    while (*s) {
        while (*s == ' ' || *s == ',') s++;
        if (!*s) break;
        size_t n = strcspn(s, ",");
        size_t m = n;
        while (m > 0 && s[m - 1] == ' ') m--;
        add_endpoint(c, p, where, sg_xstrndup(s, m), 1);
        s += n;
    }
}

/* Parses "models" (at the provider's path). Returns 1 when absent. */
static int parse_models(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "models");
    if (!it) return 1;
    size_t old = sg_cfg_push_key(c, "models");
    if (!cJSON_IsArray(it)) {
        sg_cfg_errf(c, "must be an array of model objects, not %s", sg_cfg_type_name(it));
    } else if (cJSON_GetArraySize(it) == 0) {
        sg_cfg_errf(c, "must contain at least one model");
    } else {
        p->models = sg_xcalloc((size_t)cJSON_GetArraySize(it), sizeof(*p->models));
        size_t i = 0;
        for (const cJSON *m = it->child; m; m = m->next, i++) {
            size_t o2 = sg_cfg_push_index(c, i);
            parse_model(c, m, p);
            sg_cfg_pop(c, o2);
        }
    }
    sg_cfg_pop(c, old);
    return 0;
}

/* Parses one provider object (at the current path). *want_builtin is set when its kind's
 * built-in models should fill it once every configured name is known. */
static void parse_provider(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p,
                           int *want_builtin)
{
    const sg_provider_kind_t *k = NULL;
    int interp;
    size_t old;
    *want_builtin = 0;

    if (!valid_provider_name(p->name))
        sg_cfg_errf(c,
                    "provider name must be non-empty and use only letters, digits, '_', '-', '.'");
    if (sg_cfg_expect_object(c, obj) != 0) return;

    char kinds[128];
    kind_list(kinds, sizeof(kinds));
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "kind");
    if (it) {
        old = sg_cfg_push_key(c, "kind");
        char *name;
        if (sg_cfg_get_str(c, it, &name, &interp) == 0) {
            k = sg_provider_kind_find(name);
            if (!k && interp)
                sg_cfg_errf(c, "unsupported provider kind (supported: %s)", kinds);
            else if (!k)
                sg_cfg_errf(c, "unsupported provider kind \"%s\" (supported: %s)", name, kinds);
            free(name);
        }
        sg_cfg_pop(c, old);
    } else {
        k = sg_provider_kind_for_name(p->name);
        if (!k) sg_cfg_errf(c, "missing required key \"kind\" (supported: %s)", kinds);
    }
    check_provider_keys(c, obj, k);
    if (!k) {
        /* The common parts can still be checked. */
        parse_endpoints(c, obj, p);
        parse_models(c, obj, p);
        return;
    }
    p->ops = k;
    p->kind = sg_xstrdup(k->kind);

    parse_endpoints(c, obj, p);
    k->parse(c, obj, p);

    int absent = parse_models(c, obj, p);
    int discover = absent && !k->builtin_serves;
    it = cJSON_GetObjectItemCaseSensitive(obj, "discover");
    if (it) {
        old = sg_cfg_push_key(c, "discover");
        sg_cfg_get_bool(c, it, &discover);
        if (discover && !k->build_probe) {
            sg_cfg_errf(c, "providers of kind \"%s\" cannot list their models", k->kind);
            discover = 0;
        }
        sg_cfg_pop(c, old);
    }
    p->discover = discover;
    it = cJSON_GetObjectItemCaseSensitive(obj, "pinned");
    if (it) {
        old = sg_cfg_push_key(c, "pinned");
        sg_cfg_get_bool(c, it, &p->pinned);
        if (p->pinned && absent && !k->builtin_serves)
            sg_cfg_errf(c, "\"pinned\" needs \"models\" (the only models served)");
        sg_cfg_pop(c, old);
    }
    if (absent && k->builtin_serves) {
        *want_builtin = 1;
    } else if (absent && !discover) {
        sg_cfg_errf(c, "missing required key \"models\" (or leave \"discover\" on to serve the "
                       "models the endpoints list)");
    }
}

void sg_config_provider_add(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, int builtin)
{
    if (builtin) fill_builtin(c, p);
    sg_config_t *cfg = c->cfg;
    cfg->providers = sg_xrealloc(cfg->providers, (cfg->n_providers + 1) * sizeof(*cfg->providers));
    cfg->providers[cfg->n_providers++] = *p;
}

/* ---- root --------------------------------------------------------------------------------- */

static void set_str(char **dst, char *val)
{
    free(*dst);
    *dst = val;
}

static void apply_listen(sg_cfg_ctx_t *c, const char *value, int echo, const char *err_path)
{
    char *host;
    int port;
    const char *why = sg_config_parse_listen(value, &host, &port);
    if (why) {
        if (echo)
            sg_cfg_error_at(c, err_path, "invalid listen address \"%s\": %s", value, why);
        else
            sg_cfg_error_at(c, err_path, "invalid listen address: %s", why);
        return;
    }
    set_str(&c->cfg->listen_host, host);
    c->cfg->listen_port = port;
}

static void apply_log_level(sg_cfg_ctx_t *c, char *value, int echo, const char *err_path)
{
    sg_log_level_t lvl;
    if (sg_log_level_parse(value, &lvl) != 0) {
        if (echo)
            sg_cfg_error_at(c, err_path,
                            "invalid log level \"%s\" (expected debug, info, warn or error)",
                            value);
        else
            sg_cfg_error_at(c, err_path, "invalid log level (expected debug, info, warn or error)");
        free(value);
        return;
    }
    set_str(&c->cfg->log_level, value);
}

static void parse_providers(sg_cfg_ctx_t *c, const cJSON *provs)
{
    sg_config_t *cfg = c->cfg;
    size_t old = sg_cfg_push_key(c, "providers");
    if (sg_cfg_expect_object(c, provs) == 0) {
        size_t n = (size_t)cJSON_GetArraySize(provs);
        cfg->providers = sg_xcalloc(n ? n : 1, sizeof(*cfg->providers));
        int *want = sg_xcalloc(n ? n : 1, sizeof(*want));
        for (const cJSON *pj = provs->child; pj; pj = pj->next) {
            size_t o2 = sg_cfg_push_key(c, pj->string ? pj->string : "");
            if (is_dup_key(provs, pj)) {
                sg_cfg_errf(c, "duplicate provider");
            } else {
                size_t k = cfg->n_providers++;
                cfg->providers[k].name = sg_xstrdup(pj->string ? pj->string : "");
                parse_provider(c, pj, &cfg->providers[k], &want[k]);
            }
            sg_cfg_pop(c, o2);
        }
        /* Built-in models go last so that configured names win over their defaults. */
        for (size_t k = 0; k < cfg->n_providers; k++)
            if (want[k]) fill_builtin(c, &cfg->providers[k]);
        free(want);
    }
    sg_cfg_pop(c, old);
}

static void parse_root(sg_cfg_ctx_t *c, const cJSON *root)
{
    const char *keys[32] = {"listen",   "log_level",         "limits",   "cors",
                            "upstream", "shutdown_grace_ms", "providers"};
    size_t nk = 7;
    for (size_t i = 0; sg_config_sections[i] && nk < SG_ARRAY_LEN(keys); i++)
        keys[nk++] = sg_config_sections[i]->key;
    sg_config_t *cfg = c->cfg;
    int interp;
    size_t old;
    if (sg_cfg_expect_object(c, root) != 0) return;
    sg_cfg_check_keys(c, root, keys, nk, NULL, 0, NULL);

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "listen");
    if (it) {
        old = sg_cfg_push_key(c, "listen");
        char *s;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            apply_listen(c, s, !interp, sg_cfg_path(c));
            free(s);
        }
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "log_level");
    if (it) {
        old = sg_cfg_push_key(c, "log_level");
        char *s;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) apply_log_level(c, s, !interp, sg_cfg_path(c));
        sg_cfg_pop(c, old);
    }

    const cJSON *limits = cJSON_GetObjectItemCaseSensitive(root, "limits");
    if (limits) {
        old = sg_cfg_push_key(c, "limits");
        if (sg_cfg_expect_object(c, limits) == 0)
            sg_cfg_parse_numbers(c, limits, limit_fields, SG_ARRAY_LEN(limit_fields), NULL);
        sg_cfg_pop(c, old);
    }
    if (cfg->low_watermark >= cfg->high_watermark) {
        int low_set = cJSON_IsObject(limits) &&
                      cJSON_GetObjectItemCaseSensitive(limits, "low_watermark") != NULL;
        old = sg_cfg_push_key(c, "limits");
        size_t o2 = sg_cfg_push_key(c, low_set ? "low_watermark" : "high_watermark");
        sg_cfg_errf(c, "low_watermark (%zu) must be less than high_watermark (%zu)",
                    cfg->low_watermark, cfg->high_watermark);
        sg_cfg_pop(c, o2);
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "cors");
    if (it) {
        old = sg_cfg_push_key(c, "cors");
        if (sg_cfg_expect_object(c, it) == 0) parse_cors(c, it);
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "upstream");
    if (it) {
        old = sg_cfg_push_key(c, "upstream");
        if (sg_cfg_expect_object(c, it) == 0)
            sg_cfg_parse_numbers(c, it, upstream_fields, SG_ARRAY_LEN(upstream_fields), NULL);
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "shutdown_grace_ms");
    if (it) {
        old = sg_cfg_push_key(c, "shutdown_grace_ms");
        sg_cfg_get_uint(c, it, 0, &cfg->shutdown_grace_ms);
        sg_cfg_pop(c, old);
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (it) parse_providers(c, it);

    for (size_t i = 0; sg_config_sections[i]; i++) {
        const sg_config_section_t *sec = sg_config_sections[i];
        it = cJSON_GetObjectItemCaseSensitive(root, sec->key);
        if (!it) continue;
        old = sg_cfg_push_key(c, sec->key);
        if (sec->any_type || sg_cfg_expect_object(c, it) == 0) {
            if (sec->parse)
                sec->parse(c, it);
            else
                sg_cfg_parse_numbers(c, it, sec->fields, sec->n_fields, NULL);
        }
        sg_cfg_pop(c, old);
    }
}

/* ---- file ----------------------------------------------------------------------------- */

/* Reads the whole file (NUL-terminated). Returns NULL after reporting. */
static char *read_file(sg_cfg_ctx_t *c, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sg_cfg_error_at(c, "$", "cannot open config file %s: %s", path, strerror(errno));
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
            sg_cfg_error_at(c, "$", "config file %s is too large (over %u bytes)", path,
                            CONFIG_FILE_MAX);
        else
            sg_cfg_error_at(c, "$", "cannot read config file %s: %s", path, strerror(err));
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

static void load_file(sg_cfg_ctx_t *c, const char *path)
{
    size_t len;
    char *buf = read_file(c, path, &len);
    if (!buf) return;
    size_t line, col;
    size_t unterminated = blank_comments(buf, len);
    if (unterminated) {
        line_col(buf, unterminated - 1, &line, &col);
        sg_cfg_error_at(c, "$", "unterminated /* comment at line %zu, column %zu", line, col);
        free(buf);
        return;
    }
    if (memchr(buf, '\0', len)) {
        sg_cfg_error_at(c, "$", "config file %s contains a NUL byte", path);
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
            sg_cfg_error_at(c, "$", "invalid JSON: the file is empty");
        else
            sg_cfg_error_at(c, "$", "invalid JSON at line %zu, column %zu", line, col);
        free(buf);
        return;
    }
    parse_root(c, root);
    cJSON_Delete(root);
    free(buf);
}

/* ---- environment ------------------------------------------------------------------------ */

static void apply_env(sg_cfg_ctx_t *c)
{
    const char *v = sg_cfg_env("SOPHIA_LISTEN");
    if (v) apply_listen(c, v, 0, "env:SOPHIA_LISTEN");
    v = sg_cfg_env("SOPHIA_LOG_LEVEL");
    if (v) apply_log_level(c, sg_xstrdup(v), 0, "env:SOPHIA_LOG_LEVEL");
    for (size_t i = 0; sg_provider_kinds[i]; i++)
        if (sg_provider_kinds[i]->from_env) sg_provider_kinds[i]->from_env(c);
}

/* ---- public API ------------------------------------------------------------------------- */

void sg_config_defaults(sg_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_host = sg_xstrdup("127.0.0.1");
    cfg->listen_port = 8080;
    cfg->log_level = sg_xstrdup("info");
    sg_cfg_num_defaults(cfg, limit_fields, SG_ARRAY_LEN(limit_fields));
    sg_cfg_num_defaults(cfg, upstream_fields, SG_ARRAY_LEN(upstream_fields));
    cfg->shutdown_grace_ms = 10000;
    for (size_t i = 0; sg_config_sections[i]; i++) {
        const sg_config_section_t *sec = sg_config_sections[i];
        sg_cfg_num_defaults(cfg, sec->fields, sec->n_fields);
        if (sec->defaults) sec->defaults(cfg);
    }
}

int sg_config_load(sg_config_t *cfg, const char *path, sg_config_errors_t *errs)
{
    sg_config_errors_t local = {0};
    sg_cfg_ctx_t c = {0};
    c.cfg = cfg;
    c.errs = errs ? errs : &local;
    sg_buf_init(&c.path, 64 * 1024);
    sg_buf_append(&c.path, "$", 1);

    sg_config_defaults(cfg);
    if (path) load_file(&c, path);
    apply_env(&c);
    for (size_t i = 0; sg_config_sections[i]; i++)
        if (sg_config_sections[i]->check) sg_config_sections[i]->check(&c);

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
        for (size_t j = 0; j < p->n_endpoints; j++) free(p->endpoints[j].base_url);
        free(p->endpoints);
        if (p->ext && p->ops && p->ops->free_ext) p->ops->free_ext(p->ext);
        for (size_t j = 0; j < p->n_models; j++) free_model(&p->models[j]);
        free(p->models);
    }
    free(cfg->providers);
    for (size_t i = 0; sg_config_sections[i]; i++)
        if (sg_config_sections[i]->free) sg_config_sections[i]->free(cfg);
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

const sg_provider_cfg_t *sg_config_provider_of_kind(const sg_config_t *cfg, const char *kind)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (cfg->providers[i].kind && strcmp(cfg->providers[i].kind, kind) == 0)
            return &cfg->providers[i];
    return NULL;
}
