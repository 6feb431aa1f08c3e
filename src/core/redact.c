/* Secret redaction (see sophia/redact.h). */
#include "sophia/redact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"

void sg_secrets_add(sg_secrets_t *s, const char *value)
{
    if (!value || strlen(value) < SG_SECRET_MIN_LEN) return;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], value) == 0) return;
    s->v = sg_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
    s->v[s->n++] = sg_xstrdup(value);
}

/* The user-info of a URL: [start, end) of "user:password" before '@' in the authority. */
static int url_userinfo(const char *url, const char **start, const char **end)
{
    const char *p = strstr(url, "://");
    if (!p) return 0;
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth; i++)
        if (p[i] == '@') at = p + i;
    if (!at) return 0;
    *start = p;
    *end = at;
    return 1;
}

void sg_secrets_add_url(sg_secrets_t *s, const char *url)
{
    const char *a, *b;
    if (!url || !url_userinfo(url, &a, &b)) return;
    const char *colon = memchr(a, ':', (size_t)(b - a));
    char *pw = sg_xstrndup(colon ? colon + 1 : a, (size_t)(b - (colon ? colon + 1 : a)));
    sg_secrets_add(s, pw);
    memset(pw, 0, strlen(pw));
    free(pw);
}

void sg_secrets_dispose(sg_secrets_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        memset(s->v[i], 0, strlen(s->v[i]));
        free(s->v[i]);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static int tok_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '=' || c == '+' || c == '/' || c == '~';
}

/* Length of a secret-shaped token starting at p, or 0: a JWT/JWS ("eyJ" and 20+ token
 * characters), or the credential after an auth scheme. */
static size_t secret_shape(const char *text, const char *p)
{
    if (strncmp(p, "eyJ", 3) == 0 && (p == text || !tok_char(p[-1]))) {
        size_t n = 0;
        while (tok_char(p[n])) n++;
        return n >= 20 ? n : 0;
    }
    return 0;
}

/* After "Bearer " / "Basic " (any case): the credential that follows. */
static size_t after_scheme(const char *p)
{
    static const char *const schemes[] = {"bearer ", "basic "};
    for (size_t i = 0; i < SG_ARRAY_LEN(schemes); i++) {
        size_t l = strlen(schemes[i]);
        if (sg_strncaseeq(p, schemes[i], l)) {
            size_t n = 0;
            while (tok_char(p[l + n])) n++;
            return n ? l : 0;
        }
    }
    return 0;
}

void sg_redact(const sg_secrets_t *s, const char *const *extra, char *text, size_t cap)
{
    if (!text || cap == 0) return;
    size_t len = strlen(text);
    sg_buf_t out;
    sg_buf_init(&out, len * 12 + 64); /* "Bearer x" grows tenfold */
    int changed = 0;
    const char *p = text;
    while (*p) {
        size_t skip = 0;
        /* Configured values first: they may contain anything. Longest match wins. */
        size_t best = 0;
        for (size_t i = 0; s && i < s->n; i++) {
            size_t l = strlen(s->v[i]);
            if (l > best && strncmp(p, s->v[i], l) == 0) best = l;
        }
        for (size_t i = 0; extra && extra[i]; i++) {
            size_t l = strlen(extra[i]);
            if (l >= SG_SECRET_MIN_LEN && l > best && strncmp(p, extra[i], l) == 0) best = l;
        }
        if (best) {
            skip = best;
        } else if ((skip = secret_shape(text, p)) == 0) {
            size_t sl = after_scheme(p);
            if (sl) {
                sg_buf_append(&out, p, sl);
                p += sl;
                skip = 0;
                while (tok_char(p[skip])) skip++;
            }
        }
        if (skip) {
            sg_buf_append_str(&out, SG_REDACTED);
            p += skip;
            changed = 1;
            continue;
        }
        /* URL user-info: scheme://user:pass@host → scheme://[redacted]@host */
        if (strncmp(p, "://", 3) == 0) {
            const char *a, *b;
            if (url_userinfo(p, &a, &b)) {
                sg_buf_append(&out, p, 3);
                sg_buf_append_str(&out, SG_REDACTED);
                p = b;
                changed = 1;
                continue;
            }
        }
        sg_buf_append(&out, p, 1);
        p++;
    }
    if (changed) {
        size_t n = out.len < cap - 1 ? out.len : cap - 1;
        n = sg_utf8_cut(out.data, n);
        memcpy(text, out.data, n);
        text[n] = '\0';
    }
    sg_buf_dispose(&out);
}

void sg_url_redact(const char *url, char *out, size_t cap)
{
    const char *a, *b;
    if (!url) {
        sg_strlcpy(out, cap, "");
        return;
    }
    if (!url_userinfo(url, &a, &b)) {
        sg_strlcpy(out, cap, url);
        return;
    }
    snprintf(out, cap, "%.*s%s%s", (int)(a - url), url, SG_REDACTED, b);
}
