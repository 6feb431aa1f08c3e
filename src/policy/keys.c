/* Client keys, teams, the global section, per provider/model limits, admin keys and the
 * throttle settings: their configuration sections, and authentication (see sophia/access.h).
 *
 * A key is configured by its SHA-256 only ("hash": "sha256:<hex>"); the gateway never holds a
 * client key's text. A presented key is hashed, found by binary search over the hashes
 * (sorted with memcmp) on their first bytes, then compared in full in constant time. Admin
 * keys may also be written as the key itself (typically "${ADMIN_KEY}"): they are hashed as
 * they are read and the text is wiped. Messages never contain a key or a hash value: a value
 * put in "hash" by mistake may well be the key itself. */
#include "sophia/access.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

#include "sophia/config_parse.h"
#include "sophia/core.h"

#define HASH_PREFIX "sha256:"
#define HASH_PREFIX_LEN 7
#define NAME_MAX_LEN 63      /* fits the request record's key and team fields */
#define MAX_AMOUNT 1e15      /* the largest limit or budget accepted */
#define LOOKUP_PREFIX 8      /* bytes of the hash the binary search orders by */
#define CLI_KEY_MAX 4096     /* the longest key hash-key reads */
#define ADMIN_KEY_MIN_LEN 16 /* shorter admin keys are accepted with a warning */

/* ---- hashes ------------------------------------------------------------------------------- */

void sg_key_hash(const char *key, size_t len, unsigned char out[SG_KEY_HASH_LEN])
{
    if (mbedtls_sha256_ret((const unsigned char *)key, len, out, 0) != 0)
        SG_ASSERT(!"SHA-256 failed");
}

static void hex_of(const unsigned char *h, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[2 * n] = '\0';
}

void sg_key_hash_text(const char *key, size_t len, char *out, size_t cap)
{
    unsigned char h[SG_KEY_HASH_LEN];
    char hex[2 * SG_KEY_HASH_LEN + 1];
    sg_key_hash(key, len, h);
    hex_of(h, sizeof(h), hex);
    snprintf(out, cap, HASH_PREFIX "%s", hex);
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* "sha256:" and 64 hex digits (either case). Returns 0, or -1. */
static int parse_hash_text(const char *s, unsigned char out[SG_KEY_HASH_LEN])
{
    if (strncmp(s, HASH_PREFIX, HASH_PREFIX_LEN) != 0) return -1;
    s += HASH_PREFIX_LEN;
    if (strlen(s) != 2 * SG_KEY_HASH_LEN) return -1;
    for (size_t i = 0; i < SG_KEY_HASH_LEN; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int sg_key_hash_equal(const unsigned char *a, const unsigned char *b)
{
    /* Every byte is looked at whatever the earlier ones were: no early exit. */
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < SG_KEY_HASH_LEN; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static int cmp_key_hash(const void *x, const void *y)
{
    return memcmp(((const sg_key_cfg_t *)x)->hash, ((const sg_key_cfg_t *)y)->hash,
                  SG_KEY_HASH_LEN);
}

const sg_key_cfg_t *sg_keys_find(const sg_access_cfg_t *a,
                                 const unsigned char hash[SG_KEY_HASH_LEN])
{
    if (!a || !a->n_keys) return NULL;
    size_t lo = 0, hi = a->n_keys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(a->keys[mid].hash, hash, LOOKUP_PREFIX) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    const sg_key_cfg_t *found = NULL;
    for (size_t i = lo; i < a->n_keys && memcmp(a->keys[i].hash, hash, LOOKUP_PREFIX) == 0; i++)
        if (sg_key_hash_equal(a->keys[i].hash, hash)) found = &a->keys[i];
    return found;
}

/* ---- authentication ------------------------------------------------------------------------ */

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* The key on req: the credential of "Authorization: Bearer <key>" (scheme in any case), else
 * the x-api-key header. NULL when neither carries one. */
static const char *presented_key(const sg_http_req_t *req, size_t *len)
{
    const char *v = sg_http_req_header(req, "authorization");
    const char *key = NULL;
    if (v) {
        while (is_space(*v)) v++;
        if (strlen(v) > 6 && sg_strncaseeq(v, "bearer", 6) && is_space(v[6])) key = v + 7;
    }
    if (!key || !*key) key = sg_http_req_header(req, "x-api-key");
    if (!key) return NULL;
    while (is_space(*key)) key++;
    size_t n = strlen(key);
    while (n && is_space(key[n - 1])) n--;
    if (!n) return NULL;
    *len = n;
    return key;
}

#define MISSING_KEY_HOW                                                                            \
    "Send it in the Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY) "      \
    "or in an x-api-key header."

int sg_keys_authenticate(const sg_access_cfg_t *a, const sg_http_req_t *req,
                         const sg_key_cfg_t **key, sg_error_t *e)
{
    *key = NULL;
    if (!a || a->n_keys == 0) return 0;
    size_t len = 0;
    const char *k = presented_key(req, &len);
    if (!k) {
        sg_error_set(e, 401, "invalid_request_error", "invalid_api_key",
                     "You didn't provide an API key. " MISSING_KEY_HOW);
        return -1;
    }
    unsigned char h[SG_KEY_HASH_LEN];
    sg_key_hash(k, len, h);
    *key = sg_keys_find(a, h);
    if (!*key) {
        sg_error_set(e, 401, "invalid_request_error", "invalid_api_key",
                     "Incorrect API key provided. Use a key issued for this gateway.");
        return -1;
    }
    return 0;
}

int sg_keys_admin(const sg_access_cfg_t *a, const sg_http_req_t *req, sg_error_t *e)
{
    if (!a || a->n_admin == 0) {
        sg_error_set(e, 403, "invalid_request_error", "admin_keys_not_configured",
                     "admin endpoints need an admin key: set SOPHIA_ADMIN_KEY or \"admin_keys\"");
        return -1;
    }
    size_t len = 0;
    const char *k = presented_key(req, &len);
    if (!k) {
        sg_error_set(e, 401, "invalid_request_error", "invalid_api_key",
                     "You didn't provide an admin key. " MISSING_KEY_HOW);
        return -1;
    }
    unsigned char h[SG_KEY_HASH_LEN];
    sg_key_hash(k, len, h);
    int found = 0;
    for (size_t i = 0; i < a->n_admin; i++) found |= sg_key_hash_equal(a->admin[i], h);
    if (!found) {
        sg_error_set(e, 401, "invalid_request_error", "invalid_api_key",
                     "Incorrect admin key provided.");
        return -1;
    }
    return 0;
}

int sg_keys_pattern_match(const char *p, const char *s)
{
    /* Greedy with one backtrack point (the last '*'): linear in practice, never exponential. */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*') p++;
    return *p == '\0';
}

int sg_keys_model_allowed(const sg_key_cfg_t *key, const char *public_name)
{
    if (!key || key->n_models == 0) return 1;
    if (!public_name) return 0;
    for (size_t i = 0; i < key->n_models; i++)
        if (sg_keys_pattern_match(key->models[i], public_name)) return 1;
    return 0;
}

const sg_team_cfg_t *sg_access_team(const sg_access_cfg_t *a, const char *name)
{
    if (!a || !name) return NULL;
    for (size_t i = 0; i < a->n_teams; i++)
        if (strcmp(a->teams[i].name, name) == 0) return &a->teams[i];
    return NULL;
}

/* ---- the loopback rule -------------------------------------------------------------------- */

int sg_host_is_loopback(const char *host)
{
    if (!host) return 0;
    if (strlen(host) == 9 && sg_strncaseeq(host, "localhost", 9)) return 1;
    unsigned char a4[4], a6[16];
    if (inet_pton(AF_INET, host, a4) == 1) return a4[0] == 127;
    if (inet_pton(AF_INET6, host, a6) == 1) {
        static const unsigned char loop6[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
        if (memcmp(a6, loop6, 16) == 0) return 1;
        return memcmp(a6, mapped, 12) == 0 && a6[12] == 127;
    }
    return 0;
}

const char *sg_keys_check_listen(const sg_access_cfg_t *a, const char *host, char *msg, size_t cap)
{
    if (!a || a->n_keys > 0 || a->allow_unauthenticated || sg_host_is_loopback(host)) return NULL;
    int v6 = host && strchr(host, ':');
    snprintf(msg, cap,
             "no client keys configured and listening on %s%s%s: create a key with "
             "`sophia-gateway hash-key` and add it to \"keys\", or set "
             "\"allow_unauthenticated\": true",
             v6 ? "[" : "", host ? host : "", v6 ? "]" : "");
    return msg;
}

/* ---- `sophia-gateway hash-key` --------------------------------------------------------------- */

int sg_keys_hash_cli(void)
{
    int tty = isatty(STDIN_FILENO);
    struct termios saved;
    int restore = 0;
    if (tty) {
        fprintf(stderr, "key (not echoed), then Enter: ");
        if (tcgetattr(STDIN_FILENO, &saved) == 0) {
            struct termios quiet = saved;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
        }
    }
    char *buf = sg_xcalloc(1, CLI_KEY_MAX + 2);
    size_t n = 0;
    int too_long = 0;
    for (;;) {
        int ch = getchar();
        if (ch == EOF) break;
        if (n == CLI_KEY_MAX + 1) {
            too_long = 1;
            continue; /* drain the rest */
        }
        buf[n++] = (char)ch;
        if (tty && ch == '\n') break; /* a terminal gives one line */
    }
    if (restore) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    if (tty) fputc('\n', stderr);
    /* One trailing newline (as `echo` or a file writes it) is not part of the key. */
    if (n && buf[n - 1] == '\n') {
        n--;
        if (n && buf[n - 1] == '\r') n--;
    }
    const char *why = NULL;
    if (too_long || n > CLI_KEY_MAX)
        why = "the key is too long (at most 4096 bytes)";
    else if (n == 0)
        why = "no key on standard input (pipe it in: printf '%s' \"$KEY\" | sophia-gateway "
              "hash-key)";
    for (size_t i = 0; !why && i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            why = "the key contains a control character or a line break (only one trailing "
                  "newline is removed)";
    int rc = 1;
    if (why) {
        fprintf(stderr, "sophia-gateway hash-key: %s\n", why);
    } else {
        char text[80];
        sg_key_hash_text(buf, n, text, sizeof(text));
        printf("\"hash\": \"%s\"\n", text);
        rc = fflush(stdout) == 0 ? 0 : 1;
    }
    volatile char *w = buf;
    for (size_t i = 0; i < CLI_KEY_MAX + 2; i++) w[i] = 0;
    free(buf);
    return rc;
}

/* ---- configuration: shared parts ---------------------------------------------------------- */

static sg_access_cfg_t *acc(sg_cfg_ctx_t *c)
{
    return c->cfg->access;
}

static void budget_defaults(sg_budget_cfg_t *b)
{
    memset(b, 0, sizeof(*b));
    b->soft_pct = 80;
}

/* Reports and returns -1 unless it is an array. */
static int expect_array(sg_cfg_ctx_t *c, const cJSON *it, const char *of)
{
    if (cJSON_IsArray(it)) return 0;
    sg_cfg_errf(c, "must be an array of %s, not %s", of, sg_cfg_type_name(it));
    return -1;
}

/* "limits": {"rpm", "tpm", "usd_per_min", "concurrent"} at the current path. */
static void limits_at(sg_cfg_ctx_t *c, const cJSON *obj, sg_limits_cfg_t *l)
{
    if (sg_cfg_expect_object(c, obj) != 0) return;
    static const char *const keys[] = {"rpm", "tpm", "usd_per_min", "concurrent"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    double *nums[] = {&l->rpm, &l->tpm, &l->usd_per_min};
    for (size_t i = 0; i < SG_ARRAY_LEN(nums); i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, keys[i]);
        if (!it) continue;
        size_t old = sg_cfg_push_key(c, keys[i]);
        sg_cfg_get_num(c, it, 0, MAX_AMOUNT, nums[i]);
        sg_cfg_pop(c, old);
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "concurrent");
    if (it) {
        size_t old = sg_cfg_push_key(c, "concurrent");
        sg_cfg_get_uint(c, it, 0, &l->concurrent);
        sg_cfg_pop(c, old);
    }
}

/* "budget": {"daily_usd", "monthly_usd", "soft_pct", "mode"} at the current path. */
static void budget_at(sg_cfg_ctx_t *c, const cJSON *obj, sg_budget_cfg_t *b)
{
    if (sg_cfg_expect_object(c, obj) != 0) return;
    static const char *const keys[] = {"daily_usd", "monthly_usd", "soft_pct", "mode"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    double *nums[] = {&b->daily_usd, &b->monthly_usd};
    for (size_t i = 0; i < SG_ARRAY_LEN(nums); i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, keys[i]);
        if (!it) continue;
        size_t old = sg_cfg_push_key(c, keys[i]);
        sg_cfg_get_num(c, it, 0, MAX_AMOUNT, nums[i]);
        sg_cfg_pop(c, old);
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "soft_pct");
    if (it) {
        size_t old = sg_cfg_push_key(c, "soft_pct");
        if (!cJSON_IsNumber(it))
            sg_cfg_errf(c, "must be a number, not %s", sg_cfg_type_name(it));
        else if (!(it->valuedouble > 0 && it->valuedouble <= 100))
            sg_cfg_errf(c, "must be a percentage above 0 and at most 100");
        else
            b->soft_pct = it->valuedouble;
        sg_cfg_pop(c, old);
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "mode");
    if (it) {
        size_t old = sg_cfg_push_key(c, "mode");
        char *s;
        int interp;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            if (strcmp(s, "hard") == 0)
                b->soft = 0;
            else if (strcmp(s, "soft") == 0)
                b->soft = 1;
            else
                sg_cfg_errf(c, "must be \"hard\" (refuse once spent) or \"soft\" (record only)");
            free(s);
        }
        sg_cfg_pop(c, old);
    }
}

/* The "limits" member of parent (a key, a team, "global", a model_limits entry), if any. */
static void parse_limits(sg_cfg_ctx_t *c, const cJSON *parent, sg_limits_cfg_t *l)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(parent, "limits");
    if (!it) return;
    size_t old = sg_cfg_push_key(c, "limits");
    limits_at(c, it, l);
    sg_cfg_pop(c, old);
}

/* The "budget" member of parent (a key, a team, "global"), if any. */
static void parse_budget(sg_cfg_ctx_t *c, const cJSON *parent, sg_budget_cfg_t *b)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(parent, "budget");
    if (!it) return;
    size_t old = sg_cfg_push_key(c, "budget");
    budget_at(c, it, b);
    sg_cfg_pop(c, old);
}

/* A key's or team's name at the current path: a non-empty string of at most NAME_MAX_LEN
 * bytes without control characters. Returns it (caller frees), or NULL after reporting;
 * *interp tells whether it came from interpolation. */
static char *parse_name(sg_cfg_ctx_t *c, const cJSON *it, int *interp)
{
    char *s;
    if (sg_cfg_get_str(c, it, &s, interp) != 0) return NULL;
    const char *why = sg_cfg_check_token(s);
    if (!why && !*s) why = "must not be empty";
    if (!why && strlen(s) > NAME_MAX_LEN) why = "must be at most 63 bytes";
    if (why) {
        sg_cfg_errf(c, "%s", why);
        free(s);
        return NULL;
    }
    return s;
}

/* Where each parsed entry came from, to report duplicates at their paths. */
typedef struct origin {
    size_t index; /* in the configured array */
    const char *name;
    int explicit_name; /* "name" was given (else it is a default) */
    int secret;        /* the name came from interpolation */
} origin_t;

static int cmp_origin_name(const void *x, const void *y)
{
    const origin_t *a = x, *b = y;
    int r = strcmp(a->name, b->name);
    if (r) return r;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Reports names used twice in an array (base: its path, e.g. "$.keys"; field: ".name";
 * what: "key name"). Sorts o. */
static void report_duplicates(sg_cfg_ctx_t *c, const char *base, const char *field,
                              const char *what, origin_t *o, size_t n)
{
    qsort(o, n, sizeof(*o), cmp_origin_name);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(o[i].name, o[i - 1].name) != 0) continue;
        size_t first = i - 1;
        while (first > 0 && strcmp(o[first - 1].name, o[i].name) == 0) first--;
        char path[256], prev[256];
        snprintf(path, sizeof(path), "%s[%zu]%s", base, o[i].index,
                 o[i].explicit_name ? field : "");
        snprintf(prev, sizeof(prev), "%s[%zu]", base, o[first].index);
        const char *hint = o[i].explicit_name && o[first].explicit_name
                               ? ""
                               : "; a key without \"name\" is named after its hash: give it one";
        if (o[i].secret || o[first].secret)
            sg_cfg_error_at(c, path, "duplicate %s (already used at %s)%s", what, prev, hint);
        else
            sg_cfg_error_at(c, path, "duplicate %s \"%s\" (already used at %s)%s", what, o[i].name,
                            prev, hint);
    }
}

/* ---- "teams" ------------------------------------------------------------------------------ */

static void teams_parse(sg_cfg_ctx_t *c, const cJSON *arr)
{
    if (expect_array(c, arr, "teams ({\"name\", \"limits\", \"budget\"})") != 0) return;
    sg_access_cfg_t *a = acc(c);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    a->teams = sg_xcalloc(n ? n : 1, sizeof(*a->teams));
    origin_t *o = sg_xcalloc(n ? n : 1, sizeof(*o));
    size_t i = 0;
    for (const cJSON *t = arr->child; t; t = t->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        if (sg_cfg_expect_object(c, t) != 0) {
            sg_cfg_pop(c, old);
            continue;
        }
        static const char *const keys[] = {"name", "limits", "budget"};
        sg_cfg_check_keys(c, t, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
        sg_team_cfg_t team = {0};
        budget_defaults(&team.budget);
        int interp = 0;
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(t, "name");
        if (!it) {
            sg_cfg_errf(c, "missing \"name\"");
        } else {
            size_t o2 = sg_cfg_push_key(c, "name");
            team.name = parse_name(c, it, &interp);
            sg_cfg_pop(c, o2);
        }
        parse_limits(c, t, &team.limits);
        parse_budget(c, t, &team.budget);
        if (team.name) {
            o[a->n_teams] = (origin_t){i, team.name, 1, interp};
            a->teams[a->n_teams++] = team;
        }
        sg_cfg_pop(c, old);
    }
    report_duplicates(c, sg_cfg_path(c), ".name", "team name", o, a->n_teams);
    free(o);
}

/* ---- "keys" ------------------------------------------------------------------------------- */

static void free_key(sg_key_cfg_t *k)
{
    free(k->name);
    free(k->team);
    for (size_t i = 0; i < k->n_models; i++) free(k->models[i]);
    free(k->models);
}

static void parse_models(sg_cfg_ctx_t *c, const cJSON *arr, sg_key_cfg_t *k)
{
    if (expect_array(c, arr, "model names or patterns") != 0) return;
    if (!arr->child) {
        sg_cfg_errf(c, "must not be empty (leave \"models\" out to allow every model)");
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    k->models = sg_xcalloc(n, sizeof(char *));
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        char *s;
        int interp;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            const char *why = sg_cfg_check_token(s);
            if (!why && !*s) why = "must not be empty";
            if (why) {
                sg_cfg_errf(c, "%s", why);
                free(s);
            } else {
                k->models[k->n_models++] = s;
            }
        }
        sg_cfg_pop(c, old);
    }
}

/* One key object at the current path. Returns 0 when it has a valid hash (then *k is filled,
 * name included), -1 otherwise (*k freed). */
static int parse_key(sg_cfg_ctx_t *c, const cJSON *obj, sg_key_cfg_t *k, origin_t *o)
{
    memset(k, 0, sizeof(*k));
    budget_defaults(&k->budget);
    if (sg_cfg_expect_object(c, obj) != 0) return -1;
    static const char *const keys[] = {"name", "hash", "team", "limits", "budget", "models"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    int ok = 1, interp = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "hash");
    if (!it) {
        sg_cfg_errf(c, "missing \"hash\" (\"sha256:<64 hex digits>\": make it with "
                       "`sophia-gateway hash-key`)");
        ok = 0;
    } else {
        size_t old = sg_cfg_push_key(c, "hash");
        char *s;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            /* Never echoed, interpolated or not: it may be the key itself, put here by
             * mistake. */
            if (parse_hash_text(s, k->hash) != 0) {
                sg_cfg_errf(c, "must be \"sha256:\" followed by 64 hex digits (the key's "
                               "SHA-256: make it with `sophia-gateway hash-key`)");
                ok = 0;
            }
            sg_secret_free(s);
        } else {
            ok = 0;
        }
        sg_cfg_pop(c, old);
    }
    o->explicit_name = 0;
    o->secret = 0;
    if ((it = cJSON_GetObjectItemCaseSensitive(obj, "name")) && !cJSON_IsNull(it)) {
        size_t old = sg_cfg_push_key(c, "name");
        k->name = parse_name(c, it, &o->secret);
        o->explicit_name = 1;
        if (!k->name) ok = 0;
        sg_cfg_pop(c, old);
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(obj, "team")) && !cJSON_IsNull(it)) {
        size_t old = sg_cfg_push_key(c, "team");
        k->team = parse_name(c, it, &interp);
        /* A team not listed in "teams" is a label: it groups keys in the records and the
         * ledger but has no limits or budget of its own. When "teams" lists some, an unlisted
         * one is probably a typo. */
        if (k->team && acc(c)->n_teams && !sg_access_team(acc(c), k->team))
            sg_cfg_warn_at(c, sg_cfg_path(c),
                           "names no team listed in \"teams\": the key counts under this team "
                           "but no team limits or budget apply");
        sg_cfg_pop(c, old);
    }
    parse_limits(c, obj, &k->limits);
    parse_budget(c, obj, &k->budget);
    if ((it = cJSON_GetObjectItemCaseSensitive(obj, "models"))) {
        size_t old = sg_cfg_push_key(c, "models");
        parse_models(c, it, k);
        sg_cfg_pop(c, old);
    }
    if (!ok) {
        free_key(k);
        memset(k, 0, sizeof(*k));
        return -1;
    }
    if (!k->name) {
        char hex[2 * SG_KEY_HASH_LEN + 1];
        hex_of(k->hash, SG_KEY_HASH_LEN, hex);
        char name[16];
        snprintf(name, sizeof(name), "key-%.8s", hex);
        k->name = sg_xstrdup(name);
    }
    return 0;
}

typedef struct key_slot {
    sg_key_cfg_t key;
    size_t index;
} key_slot_t;

static int cmp_slot_hash(const void *x, const void *y)
{
    const key_slot_t *a = x, *b = y;
    int r = cmp_key_hash(&a->key, &b->key);
    if (r) return r;
    return a->index < b->index ? -1 : a->index > b->index;
}

static void keys_parse(sg_cfg_ctx_t *c, const cJSON *arr)
{
    if (expect_array(c, arr, "keys ({\"name\", \"hash\", \"team\", …})") != 0) return;
    sg_access_cfg_t *a = acc(c);
    size_t n = (size_t)cJSON_GetArraySize(arr), k = 0, i = 0;
    key_slot_t *slots = sg_xcalloc(n ? n : 1, sizeof(*slots));
    origin_t *o = sg_xcalloc(n ? n : 1, sizeof(*o));
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        if (parse_key(c, it, &slots[k].key, &o[k]) == 0) {
            slots[k].index = i;
            o[k].index = i;
            o[k].name = slots[k].key.name;
            k++;
        }
        sg_cfg_pop(c, old);
    }
    const char *base = sg_cfg_path(c);
    report_duplicates(c, base, ".name", "key name", o, k);
    free(o);
    /* Sorted by hash for the lookup; equal hashes end up side by side. */
    qsort(slots, k, sizeof(*slots), cmp_slot_hash);
    for (size_t j = 1; j < k; j++) {
        if (cmp_key_hash(&slots[j].key, &slots[j - 1].key) != 0) continue;
        size_t first = j - 1;
        while (first > 0 && cmp_key_hash(&slots[first - 1].key, &slots[j].key) == 0) first--;
        char path[256];
        snprintf(path, sizeof(path), "%s[%zu].hash", base, slots[j].index);
        sg_cfg_error_at(c, path, "the same hash as %s[%zu].hash: each key must be different", base,
                        slots[first].index);
    }
    a->keys = sg_xcalloc(k ? k : 1, sizeof(*a->keys));
    for (size_t j = 0; j < k; j++) a->keys[j] = slots[j].key;
    a->n_keys = k;
    free(slots);
}

/* The section that owns cfg->access: allocated with the defaults, so it is never NULL. */
static void access_defaults(sg_config_t *cfg)
{
    sg_access_cfg_t *a = sg_xcalloc(1, sizeof(*a));
    budget_defaults(&a->global_budget);
    a->queue_ms = 0;
    a->default_max_tokens = 4096;
    cfg->access = a;
}

static void access_free(sg_config_t *cfg)
{
    sg_access_cfg_t *a = cfg->access;
    if (!a) return;
    for (size_t i = 0; i < a->n_keys; i++) free_key(&a->keys[i]);
    free(a->keys);
    for (size_t i = 0; i < a->n_teams; i++) free(a->teams[i].name);
    free(a->teams);
    for (size_t i = 0; i < a->n_model_limits; i++) free(a->model_limits[i].match);
    free(a->model_limits);
    if (a->admin) {
        volatile unsigned char *w = (volatile unsigned char *)a->admin;
        for (size_t i = 0; i < a->n_admin * SG_KEY_HASH_LEN; i++) w[i] = 0;
    }
    free(a->admin);
    free(a);
    cfg->access = NULL;
}

/* ---- "global" ----------------------------------------------------------------------------- */

static void global_parse(sg_cfg_ctx_t *c, const cJSON *obj)
{
    static const char *const keys[] = {"limits", "budget"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    sg_access_cfg_t *a = acc(c);
    parse_limits(c, obj, &a->global_limits);
    parse_budget(c, obj, &a->global_budget);
}

/* ---- "model_limits" ----------------------------------------------------------------------- */

static void model_limits_parse(sg_cfg_ctx_t *c, const cJSON *arr)
{
    if (expect_array(c, arr, "{\"match\", \"limits\"} objects") != 0) return;
    sg_access_cfg_t *a = acc(c);
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    a->model_limits = sg_xcalloc(n ? n : 1, sizeof(*a->model_limits));
    origin_t *o = sg_xcalloc(n ? n : 1, sizeof(*o));
    for (const cJSON *m = arr->child; m; m = m->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        if (sg_cfg_expect_object(c, m) != 0) {
            sg_cfg_pop(c, old);
            continue;
        }
        static const char *const keys[] = {"match", "limits"};
        sg_cfg_check_keys(c, m, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
        sg_model_limits_cfg_t ml = {0};
        int interp = 0;
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(m, "match");
        if (!it) {
            sg_cfg_errf(c, "missing \"match\" (a provider name or a public model name)");
        } else {
            size_t o2 = sg_cfg_push_key(c, "match");
            if (sg_cfg_get_str(c, it, &ml.match, &interp) == 0) {
                const char *why = sg_cfg_check_token(ml.match);
                if (!why && !*ml.match) why = "must not be empty";
                if (!why && strlen(ml.match) >= sizeof(((sg_scope_t *)0)->name))
                    why = "must be at most 127 bytes";
                if (why) {
                    sg_cfg_errf(c, "%s", why);
                    free(ml.match);
                    ml.match = NULL;
                }
            }
            sg_cfg_pop(c, o2);
        }
        parse_limits(c, m, &ml.limits);
        if (ml.match) {
            o[a->n_model_limits] = (origin_t){i, ml.match, 1, interp};
            a->model_limits[a->n_model_limits++] = ml;
        }
        sg_cfg_pop(c, old);
    }
    report_duplicates(c, sg_cfg_path(c), ".match", "match", o, a->n_model_limits);
    free(o);
}

/* A match that names neither a provider nor a configured or built-in model name is probably
 * a typo (a provider/<id> name a provider discovers later is not known yet: not warned). */
static void model_limits_check(sg_cfg_ctx_t *c)
{
    const sg_access_cfg_t *a = acc(c);
    for (size_t i = 0; a && i < a->n_model_limits; i++) {
        const char *m = a->model_limits[i].match;
        if (sg_config_provider(c->cfg, m) || sg_cfg_name_used(c, m) || strchr(m, '/')) continue;
        char path[64];
        snprintf(path, sizeof(path), "$.model_limits[%zu].match", i);
        sg_cfg_warn_at(c, path, "matches no configured provider or model name");
    }
}

/* ---- "admin_keys" and SOPHIA_ADMIN_KEY ---------------------------------------------------- */

static void admin_add(sg_access_cfg_t *a, const unsigned char h[SG_KEY_HASH_LEN])
{
    for (size_t i = 0; i < a->n_admin; i++)
        if (memcmp(a->admin[i], h, SG_KEY_HASH_LEN) == 0) return; /* listed twice: once */
    a->admin = sg_xrealloc(a->admin, (a->n_admin + 1) * sizeof(*a->admin));
    memcpy(a->admin[a->n_admin++], h, SG_KEY_HASH_LEN);
}

static void admin_keys_parse(sg_cfg_ctx_t *c, const cJSON *arr)
{
    if (expect_array(c, arr, "strings (\"sha256:<hex>\" or the key, e.g. \"${ADMIN_KEY}\")") != 0)
        return;
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t old = sg_cfg_push_index(c, i);
        char *s;
        int interp;
        if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
            unsigned char h[SG_KEY_HASH_LEN];
            if (strncmp(s, HASH_PREFIX, HASH_PREFIX_LEN) == 0) {
                if (parse_hash_text(s, h) == 0)
                    admin_add(acc(c), h);
                else
                    sg_cfg_errf(c, "a value starting with \"sha256:\" must be followed by 64 hex "
                                   "digits (make it with `sophia-gateway hash-key`)");
            } else if (!*s) {
                sg_cfg_errf(c, "must not be empty");
            } else if (sg_cfg_check_token(s)) {
                sg_cfg_errf(c, "%s", sg_cfg_check_token(s));
            } else {
                sg_key_hash(s, strlen(s), h);
                admin_add(acc(c), h);
                if (!interp)
                    sg_cfg_warn_at(c, sg_cfg_path(c),
                                   "an admin key written in the configuration file: prefer "
                                   "\"${ADMIN_KEY}\" or its hash (`sophia-gateway hash-key`)");
                if (strlen(s) < ADMIN_KEY_MIN_LEN)
                    sg_cfg_warn_at(c, sg_cfg_path(c),
                                   "an admin key shorter than %d characters is easy to guess",
                                   ADMIN_KEY_MIN_LEN);
            }
            sg_secret_free(s);
        }
        sg_cfg_pop(c, old);
    }
}

/* Runs after the file and the environment: SOPHIA_ADMIN_KEY adds an admin key. */
static void admin_keys_check(sg_cfg_ctx_t *c)
{
    const char *v = sg_cfg_env("SOPHIA_ADMIN_KEY");
    if (!v || !acc(c)) return;
    const char *why = sg_cfg_check_token(v);
    if (why) {
        sg_cfg_error_at(c, "env:SOPHIA_ADMIN_KEY", "%s", why);
        return;
    }
    unsigned char h[SG_KEY_HASH_LEN];
    sg_key_hash(v, strlen(v), h);
    admin_add(acc(c), h);
    if (strlen(v) < ADMIN_KEY_MIN_LEN)
        sg_cfg_warn_at(c, "env:SOPHIA_ADMIN_KEY",
                       "an admin key shorter than %d characters is easy to guess",
                       ADMIN_KEY_MIN_LEN);
}

/* ---- "allow_unauthenticated" and "throttle" ---------------------------------------------- */

static void allow_unauth_parse(sg_cfg_ctx_t *c, const cJSON *it)
{
    sg_cfg_get_bool(c, it, &acc(c)->allow_unauthenticated);
}

static void throttle_parse(sg_cfg_ctx_t *c, const cJSON *obj)
{
    static const char *const keys[] = {"queue_ms", "default_max_tokens"};
    sg_cfg_check_keys(c, obj, keys, SG_ARRAY_LEN(keys), NULL, 0, NULL);
    sg_access_cfg_t *a = acc(c);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "queue_ms");
    if (it) {
        size_t old = sg_cfg_push_key(c, "queue_ms");
        sg_cfg_get_uint(c, it, 0, &a->queue_ms);
        sg_cfg_pop(c, old);
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(obj, "default_max_tokens"))) {
        size_t old = sg_cfg_push_key(c, "default_max_tokens");
        sg_cfg_get_uint(c, it, 1, &a->default_max_tokens);
        sg_cfg_pop(c, old);
    }
}

/* ---- the sections ------------------------------------------------------------------------- */

/* "keys" owns cfg->access (allocation in its defaults, release in its free); the others only
 * fill it. The loopback rule is checked where the final listen address is known: after the
 * --listen override, in sg_gen_load (src/policy/generation.c). */
const sg_config_section_t sg_keys_section = {.key = "keys",
                                             .defaults = access_defaults,
                                             .parse = keys_parse,
                                             .free = access_free,
                                             .any_type = 1};
const sg_config_section_t sg_teams_section = {.key = "teams", .parse = teams_parse, .any_type = 1};
const sg_config_section_t sg_global_section = {.key = "global", .parse = global_parse};
const sg_config_section_t sg_model_limits_section = {
    .key = "model_limits", .parse = model_limits_parse, .check = model_limits_check, .any_type = 1};
const sg_config_section_t sg_admin_keys_section = {
    .key = "admin_keys", .parse = admin_keys_parse, .check = admin_keys_check, .any_type = 1};
const sg_config_section_t sg_allow_unauth_section = {
    .key = "allow_unauthenticated", .parse = allow_unauth_parse, .any_type = 1};
const sg_config_section_t sg_throttle_section = {.key = "throttle", .parse = throttle_parse};
