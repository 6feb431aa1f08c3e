/* Snowflake credentials of one cortex provider: a programmatic access token (PAT), or an RS256
 * key-pair JWT that is cached and renewed before it expires.
 *
 * The object owns copies of everything it uses (name, PAT, account, user, the loaded key), so
 * a configuration reload may free the settings it was built from while requests in
 * flight still use it. It is not locked: use it from one thread (the event loop). */
#include "sophia/snowflake_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/platform_util.h>

#include "sophia/core.h"
#include "sophia/jwt.h"
#include "sophia/log.h"

#define TYPE_PAT "PROGRAMMATIC_ACCESS_TOKEN"
#define TYPE_JWT "KEYPAIR_JWT"

struct sg_sf_auth {
    int keypair; /* 0: PAT, 1: key pair */
    char *name;  /* provider name, for messages */

    char *pat;       /* secret */
    int64_t pat_exp; /* 0 when unknown (opaque PAT) */

    sg_keypair_t *kp;
    char *account; /* as configured; normalised when signing */
    char *user;
    char *jwt; /* current token, or NULL */
    int64_t jwt_iat, jwt_exp;
};

static const char *pname(const char *name)
{
    return name ? name : "(unnamed)";
}

/* "2025-01-02T03:04:05Z" */
static void fmt_utc(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "@%lld", (long long)t);
}

static void free_secret(char *s)
{
    if (!s) return;
    mbedtls_platform_zeroize(s, strlen(s));
    free(s);
}

/* Role names that should not be used for inference traffic. */
static void warn_role(const char *name, const sg_cortex_cfg_t *p)
{
    static const char *const admin_roles[] = {"ACCOUNTADMIN", "SECURITYADMIN", "ORGADMIN"};
    if (!p->role) return;
    const char *r = p->role;
    size_t n = strlen(r);
    if (n >= 2 && r[0] == '"' && r[n - 1] == '"') {
        r++;
        n -= 2;
    }
    for (size_t i = 0; i < SG_ARRAY_LEN(admin_roles); i++) {
        if (n == strlen(admin_roles[i]) && sg_strncaseeq(r, admin_roles[i], n)) {
            sg_log(SG_LOG_WARN,
                   "snowflake provider '%s' uses the administrative role %s; grant "
                   "SNOWFLAKE.CORTEX_USER to a dedicated least-privilege role instead",
                   pname(name), admin_roles[i]);
            return;
        }
    }
}

/* Returns 0 when the PAT can go in an Authorization header, else -1 with err set. */
static int check_pat(const char *name, const sg_cortex_cfg_t *p, char *err, size_t errlen)
{
    const char *t = p->pat;
    if (!t || !*t) {
        snprintf(err, errlen, "provider '%s': the programmatic access token (pat) is empty",
                 pname(name));
        return -1;
    }
    for (size_t i = 0; t[i]; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c == 0x7f) {
            snprintf(err, errlen,
                     "provider '%s': the programmatic access token contains %s at byte %zu; "
                     "check for a stray space or newline",
                     pname(name),
                     c == ' ' || c == '\t' || c == '\n' || c == '\r' ? "whitespace"
                                                                     : "a control character",
                     i);
            return -1;
        }
        if (c >= 0x80) {
            snprintf(err, errlen,
                     "provider '%s': the programmatic access token contains a non-ASCII byte "
                     "at byte %zu",
                     pname(name), i);
            return -1;
        }
    }
    return 0;
}

static void report_pat_expiry(const char *name, const sg_cortex_cfg_t *p, int64_t exp, int64_t now)
{
    char when[40];
    fmt_utc(exp, when, sizeof(when));
    if (exp <= now) {
        sg_log(SG_LOG_ERROR,
               "snowflake provider '%s': the programmatic access token expired at %s; requests "
               "will fail until it is rotated",
               pname(name), when);
        return;
    }
    int64_t left = exp - now;
    if (p->pat_warn_days > 0 && left < (int64_t)p->pat_warn_days * 86400) {
        sg_log(SG_LOG_WARN,
               "snowflake provider '%s': the programmatic access token expires at %s (in %lld "
               "days %lld hours); rotate it soon",
               pname(name), when, (long long)(left / 86400), (long long)(left % 86400 / 3600));
    }
}

static int renew_jwt(sg_sf_auth_t *a, int64_t now)
{
    char *t = sg_snowflake_jwt(a->kp, a->account, a->user, now, SG_SF_JWT_LIFETIME_S);
    if (!t) return -1;
    free_secret(a->jwt);
    a->jwt = t;
    a->jwt_iat = now;
    a->jwt_exp = now + SG_SF_JWT_LIFETIME_S;
    return 0;
}

sg_sf_auth_t *sg_sf_auth_new(const char *name, const sg_cortex_cfg_t *p, int64_t now, char *err,
                             size_t errlen)
{
    if (errlen) err[0] = '\0';
    int has_pat = p->pat && *p->pat;
    int has_key = p->private_key_path && *p->private_key_path;
    if (has_pat && has_key) {
        snprintf(err, errlen, "provider '%s': set either pat or private_key_path, not both",
                 pname(name));
        return NULL;
    }
    if (!has_pat && !has_key) {
        if (p->pat) { /* present but empty */
            check_pat(name, p, err, errlen);
            return NULL;
        }
        snprintf(err, errlen,
                 "provider '%s': no Snowflake credentials (set pat or private_key_path)",
                 pname(name));
        return NULL;
    }

    sg_sf_auth_t *a = sg_xcalloc(1, sizeof(*a));
    a->name = sg_xstrdup(pname(name));
    if (has_pat) {
        if (check_pat(name, p, err, errlen) != 0) goto fail;
        a->pat = sg_xstrdup(p->pat);
        int64_t exp;
        if (sg_jwt_peek_exp(p->pat, &exp) == 0) {
            a->pat_exp = exp;
            report_pat_expiry(name, p, exp, now);
        } else {
            sg_log(SG_LOG_WARN,
                   "snowflake provider '%s': the programmatic access token is not JWT-shaped, "
                   "so its expiry is unknown (accepted: the format is undocumented)",
                   pname(name));
        }
    } else {
        if (!p->account || !*p->account || !p->user || !*p->user) {
            snprintf(err, errlen, "provider '%s': key-pair authentication needs account and user",
                     pname(name));
            goto fail;
        }
        char why[512];
        a->kp = sg_keypair_load(p->private_key_path, p->private_key_passphrase, why, sizeof(why));
        if (!a->kp) {
            snprintf(err, errlen, "provider '%s': %s", pname(name), why);
            goto fail;
        }
        a->keypair = 1;
        a->account = sg_xstrdup(p->account);
        a->user = sg_xstrdup(p->user);
        if (renew_jwt(a, now) != 0) {
            snprintf(err, errlen, "provider '%s': cannot sign a key-pair JWT", pname(name));
            goto fail;
        }
        sg_log(SG_LOG_INFO,
               "snowflake provider '%s': key-pair authentication, public key fingerprint %s",
               pname(name), sg_keypair_fingerprint(a->kp));
    }
    warn_role(name, p);
    return a;

fail:
    sg_sf_auth_free(a);
    return NULL;
}

void sg_sf_auth_free(sg_sf_auth_t *a)
{
    if (!a) return;
    free(a->name);
    free_secret(a->pat);
    sg_keypair_free(a->kp);
    free(a->account);
    free(a->user);
    free_secret(a->jwt);
    free(a);
}

int sg_sf_auth_token(sg_sf_auth_t *a, int64_t now, const char **token, const char **type,
                     sg_error_t *err)
{
    if (!a->keypair) {
        if (a->pat_exp != 0 && now >= a->pat_exp) {
            char when[40];
            fmt_utc(a->pat_exp, when, sizeof(when));
            sg_error_set(err, 503, "api_error", "snowflake_token_expired",
                         "the Snowflake programmatic access token for provider '%s' expired at "
                         "%s; rotate it (ALTER USER … ROTATE PROGRAMMATIC ACCESS TOKEN …), set "
                         "the new secret and send SIGHUP",
                         a->name, when);
            return -1;
        }
        *token = a->pat;
        *type = TYPE_PAT;
        return 0;
    }
    /* Renew near expiry, and when the clock went back before the token's iat. */
    if (!a->jwt || now >= a->jwt_exp - SG_SF_JWT_RENEW_BEFORE_S || now < a->jwt_iat) {
        if (renew_jwt(a, now) != 0) {
            sg_error_set(err, 500, "api_error", "snowflake_auth_failed",
                         "could not sign a Snowflake key-pair JWT for provider '%s'", a->name);
            return -1;
        }
    }
    *token = a->jwt;
    *type = TYPE_JWT;
    return 0;
}

const char *sg_sf_auth_method(const sg_sf_auth_t *a)
{
    return a->keypair ? "keypair" : "pat";
}

int64_t sg_sf_auth_expires_at(const sg_sf_auth_t *a)
{
    return a->keypair ? a->jwt_exp : a->pat_exp;
}

const char *sg_sf_auth_current(const sg_sf_auth_t *a)
{
    return a->keypair ? a->jwt : NULL;
}
