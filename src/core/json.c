/* Strict JSON validation and checked number reads (see sophia/json.h). */
#include "sophia/json.h"

#include <math.h>

#include "sophia/buf.h"
#include "sophia/log.h"
#include <stdlib.h>
#include <string.h>

typedef struct vctx {
    const unsigned char *start, *p, *end;
    const char *what;
    const unsigned char *at;
    sg_json_member_t *want; /* top-level members to locate on the way (may be NULL) */
    size_t n_want;
} vctx_t;

static int fail(vctx_t *v, const unsigned char *at, const char *what)
{
    v->at = at;
    v->what = what;
    return -1;
}

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* U+D800..U+DFFF are not characters */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if ((size_t)(end - p) < need + 1) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i <= need; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return need + 1;
}

size_t sg_utf8_seq_len(const char *s, size_t n)
{
    return utf8_len((const unsigned char *)s, (const unsigned char *)s + n);
}

void sg_utf8_sanitize(char *s, size_t n)
{
    unsigned char *p = (unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t l = utf8_len(p, end);
        if (l) {
            p += l;
        } else {
            *p++ = '?';
        }
    }
}

int sg_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t l = utf8_len(p, end);
        if (!l) return 0;
        p += l;
    }
    return 1;
}

size_t sg_utf8_cut(const char *s, size_t n)
{
    size_t i = n, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, k++;
    if (i == 0) return n;
    unsigned char lead = (unsigned char)s[i - 1];
    if (lead < 0xC0) return n; /* ASCII (or invalid input, left as it is) */
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    return k + 1 < want ? i - 1 : n;
}

static void skip_ws(vctx_t *v)
{
    while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r'))
        v->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    if (end - p < 4) return -1;
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        x = x * 16 + d;
    }
    *out = x;
    return 0;
}

static int v_string(vctx_t *v)
{
    const unsigned char *open = v->p;
    v->p++; /* the opening quote */
    while (v->p < v->end) {
        unsigned char c = *v->p;
        if (c == '"') {
            v->p++;
            return 0;
        }
        if (c < 0x20) return fail(v, v->p, "control character inside a string (escape it)");
        if (c == '\\') {
            const unsigned char *esc = v->p;
            if (v->end - v->p < 2) break;
            unsigned char e = v->p[1];
            if (e == 'u') {
                unsigned cp;
                if (hex4(v->p + 2, v->end, &cp) != 0) return fail(v, esc, "invalid \\u escape");
                v->p += 6;
                if (cp == 0) return fail(v, esc, "\\u0000 is not allowed in strings");
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(v, esc, "unpaired UTF-16 surrogate in a \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (v->end - v->p < 6 || v->p[0] != '\\' || v->p[1] != 'u' ||
                        hex4(v->p + 2, v->end, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                        return fail(v, esc, "unpaired UTF-16 surrogate in a \\u escape");
                    v->p += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0)
                return fail(v, esc, "invalid escape in a string");
            v->p += 2;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_len(v->p, v->end);
            if (!l) return fail(v, v->p, "invalid UTF-8 in a string");
            v->p += l;
            continue;
        }
        v->p++;
    }
    return fail(v, open, "unterminated string");
}

static int digits(vctx_t *v)
{
    const unsigned char *s = v->p;
    while (v->p < v->end && *v->p >= '0' && *v->p <= '9') v->p++;
    return v->p > s ? 0 : -1;
}

static int v_number(vctx_t *v)
{
    const unsigned char *s = v->p;
    if (*v->p == '-') v->p++;
    if (v->p < v->end && *v->p == '0') {
        v->p++;
    } else if (digits(v) != 0) {
        return fail(v, s, "invalid number");
    }
    if (v->p < v->end && *v->p == '.') {
        v->p++;
        if (digits(v) != 0) return fail(v, s, "invalid number");
    }
    if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
        v->p++;
        if (v->p < v->end && (*v->p == '+' || *v->p == '-')) v->p++;
        if (digits(v) != 0) return fail(v, s, "invalid number");
    }
    return 0;
}

static int v_literal(vctx_t *v, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(v->end - v->p) < n || memcmp(v->p, lit, n) != 0)
        return fail(v, v->p, "unexpected character");
    v->p += n;
    return 0;
}

static int v_value(vctx_t *v, int depth);

static int v_container(vctx_t *v, int depth, int object)
{
    if (depth >= SG_JSON_MAX_DEPTH) return fail(v, v->p, "nesting too deep");
    unsigned char close = object ? '}' : ']';
    v->p++;
    skip_ws(v);
    if (v->p < v->end && *v->p == close) {
        v->p++;
        return 0;
    }
    for (;;) {
        skip_ws(v);
        sg_json_member_t *m = NULL;
        if (object) {
            if (v->p >= v->end || *v->p != '"')
                return fail(v, v->p, "expected a string key in an object");
            const unsigned char *key = v->p + 1;
            if (v_string(v) != 0) return -1;
            /* A wanted top-level key (as written, first occurrence): remember its value. */
            size_t kl = (size_t)(v->p - 1 - key);
            for (size_t i = 0; depth == 0 && i < v->n_want; i++)
                if (!v->want[i].val && strlen(v->want[i].key) == kl &&
                    memcmp(v->want[i].key, key, kl) == 0)
                    m = &v->want[i];
            skip_ws(v);
            if (v->p >= v->end || *v->p != ':') return fail(v, v->p, "expected ':' after a key");
            v->p++;
            skip_ws(v);
        }
        const unsigned char *vstart = v->p;
        if (v_value(v, depth + 1) != 0) return -1;
        if (m) {
            m->val = (const char *)vstart;
            m->len = (size_t)(v->p - vstart);
        }
        skip_ws(v);
        if (v->p >= v->end) break;
        if (*v->p == ',') {
            v->p++;
            continue;
        }
        if (*v->p == close) {
            v->p++;
            return 0;
        }
        return fail(v, v->p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    return fail(v, v->p, "unexpected end of input");
}

static int v_value(vctx_t *v, int depth)
{
    skip_ws(v);
    if (v->p >= v->end) return fail(v, v->p, "unexpected end of input");
    switch (*v->p) {
    case '{':
        return v_container(v, depth, 1);
    case '[':
        return v_container(v, depth, 0);
    case '"':
        return v_string(v);
    case 't':
        return v_literal(v, "true");
    case 'f':
        return v_literal(v, "false");
    case 'n':
        return v_literal(v, "null");
    default:
        if (*v->p == '-' || (*v->p >= '0' && *v->p <= '9')) return v_number(v);
        return fail(v, v->p, "unexpected character");
    }
}

static void locate(const char *s, size_t off, sg_json_problem_t *p)
{
    p->offset = off;
    p->line = 1;
    p->col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            p->line++;
            p->col = 1;
        } else {
            p->col++;
        }
    }
}

int sg_json_validate(const char *s, size_t n, sg_json_problem_t *p)
{
    return sg_json_validate_members(s, n, NULL, 0, p);
}

int sg_json_validate_members(const char *s, size_t n, sg_json_member_t *want, size_t n_want,
                             sg_json_problem_t *p)
{
    for (size_t i = 0; i < n_want; i++) want[i].val = NULL, want[i].len = 0;
    vctx_t v = {(const unsigned char *)s,
                (const unsigned char *)s,
                (const unsigned char *)s + n,
                NULL,
                NULL,
                want,
                n_want};
    if (v_value(&v, 0) == 0) {
        skip_ws(&v);
        if (v.p == v.end) return 0;
        fail(&v, v.p, "unexpected data after the JSON value");
    }
    locate(s, (size_t)(v.at - v.start), p);
    p->what = v.what;
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first member of an object (searched depth-first) whose key repeats an earlier one. */
static const cJSON *find_duplicate(const cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return NULL;
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const cJSON *d = find_duplicate(it);
        if (d) return d;
        n++;
    }
    if (!cJSON_IsObject(j) || n < 2) return NULL;
    if (n <= 16) {
        for (const cJSON *a = j->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0) return b;
        return NULL;
    }
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys) abort();
    size_t i = 0;
    cJSON_ArrayForEach(it, j) keys[i++] = it->string;
    qsort(keys, n, sizeof(*keys), cmp_str);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) dup = keys[i];
    free(keys);
    if (!dup) return NULL;
    const cJSON *first = NULL;
    cJSON_ArrayForEach(it, j)
    {
        if (strcmp(it->string, dup) != 0) continue;
        if (first) return it;
        first = it;
    }
    return NULL;
}

cJSON *sg_json_parse_strict(const char *s, size_t n, sg_json_problem_t *p)
{
    if (sg_json_validate(s, n, p) != 0) return NULL;
    cJSON *j = cJSON_ParseWithLength(s, n);
    if (!j) {
        /* Valid JSON that cJSON refuses: nesting or a number it cannot hold. */
        const char *ep = cJSON_GetErrorPtr();
        locate(s, ep && ep >= s && ep <= s + n ? (size_t)(ep - s) : 0, p);
        p->what = "JSON value not supported";
        return NULL;
    }
    const cJSON *dup = find_duplicate(j);
    if (dup) {
        /* Parsers disagree on which of two equal keys wins: refuse instead of guessing. */
        p->offset = p->line = p->col = 0; /* cJSON keeps no positions */
        p->what = "duplicate key in an object";
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

int sg_json_int_in(const cJSON *v, double min, double max, long long *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < min || d > max || d != floor(d)) return -1;
    *out = (long long)d;
    return 0;
}

int sg_json_count(const cJSON *v, double max, long long *out)
{
    return sg_json_int_in(v, 0, max, out);
}

int sg_json_splice_string(const char *s, size_t n, const char *key, const char *value,
                          sg_buf_t *out)
{
    size_t kl = strlen(key);
    const char *end = s + n, *p = s;
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q || (size_t)(end - q) < kl + 2) return -1;
        if (memcmp(q + 1, key, kl) != 0 || q[kl + 1] != '"') {
            p = q + 1;
            continue;
        }
        const char *v = q + kl + 2;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) v++;
        if (v >= end || *v != ':') {
            p = q + 1;
            continue;
        }
        v++;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) v++;
        if (v >= end || *v != '"') return -1;
        const char *e = v + 1;
        while (e < end && *e != '"') e += *e == '\\' ? 2 : 1;
        if (e >= end) return -1;
        if (sg_buf_append(out, s, (size_t)(v - s)) != 0) return -1;
        sg_json_escape_append(out, value, strlen(value));
        return sg_buf_append(out, e + 1, (size_t)(end - e - 1)) == 0 ? 0 : -1;
    }
    return -1;
}
