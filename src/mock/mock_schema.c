/* mockllm, json=1: a JSON document that validates against the JSON Schema a structured-output
 * request carries (OpenAI response_format json_schema, Cortex response_format json, Anthropic
 * output_config.format). Every property of an object (required ones first), the first value
 * of enum/const, the first alternative of anyOf/oneOf/allOf, local $refs; scalars are fixed
 * ("example", 1, 1.5, true) within the schema's bounds. Below SCH_DEPTH_LEAN levels objects
 * get only their required properties and arrays only minItems items, so schemas that recurse
 * through optional parts still end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

#define SCH_DEPTH_MAX 32    /* nesting of the document (and $ref chains) */
#define SCH_DEPTH_LEAN 16   /* from here on only what the schema requires (ends recursion) */
#define SCH_NODES_MAX 10000 /* values in one document */

typedef struct sch_ctx {
    const cJSON *root; /* for $ref */
    size_t nodes;
    char *err;
    size_t errlen;
} sch_ctx_t;

static cJSON *sch_value(sch_ctx_t *x, const cJSON *s, int depth);

static const cJSON *sch_get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* Resolves a local reference "#/a/b" (JSON pointer with ~0 ~1 escapes), or NULL. */
static const cJSON *sch_resolve(const cJSON *root, const char *ref)
{
    if (ref[0] != '#') return NULL;
    const cJSON *cur = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char key[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~' && (*p == '0' || *p == '1')) c = *p++ == '0' ? '~' : '/';
            if (n + 1 >= sizeof(key)) return NULL;
            key[n++] = c;
        }
        key[n] = '\0';
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(key, &end, 10);
            cur = *key && !*end ? cJSON_GetArrayItem(cur, (int)i) : NULL;
        } else {
            cur = sch_get(cur, key);
        }
        if (!cur) return NULL;
    }
    return *p ? NULL : cur;
}

/* The schema's type: a string, or the first non-"null" of an array ("null" when only that);
 * NULL when not given. */
static const char *sch_type(const cJSON *s)
{
    const cJSON *t = sch_get(s, "type");
    if (cJSON_IsString(t)) return t->valuestring;
    if (!cJSON_IsArray(t)) return NULL;
    const cJSON *it;
    const char *only_null = NULL;
    cJSON_ArrayForEach(it, t)
    {
        if (!cJSON_IsString(it)) continue;
        if (strcmp(it->valuestring, "null") != 0) return it->valuestring;
        only_null = it->valuestring;
    }
    return only_null;
}

/* value clamped into [minimum, maximum] (exclusive bounds move it inside); integers rounded
 * towards the inside. */
static double sch_clamp(const cJSON *s, double v, int integer)
{
    const cJSON *mn = sch_get(s, "minimum"), *mx = sch_get(s, "maximum");
    const cJSON *xmn = sch_get(s, "exclusiveMinimum"), *xmx = sch_get(s, "exclusiveMaximum");
    double step = integer ? 1 : 0.5;
    if (cJSON_IsNumber(mn) && v < mn->valuedouble)
        v = integer ? ceil(mn->valuedouble) : mn->valuedouble;
    if (cJSON_IsNumber(xmn) && v <= xmn->valuedouble)
        v = integer ? floor(xmn->valuedouble) + 1 : xmn->valuedouble + step;
    if (cJSON_IsNumber(mx) && v > mx->valuedouble)
        v = integer ? floor(mx->valuedouble) : mx->valuedouble;
    if (cJSON_IsNumber(xmx) && v >= xmx->valuedouble)
        v = integer ? ceil(xmx->valuedouble) - 1 : xmx->valuedouble - step;
    return v;
}

/* A string for the schema: by format, else "example", padded or cut to min/maxLength. */
static cJSON *sch_string(const cJSON *s)
{
    static const struct {
        const char *format, *value;
    } formats[] = {
        {"date-time", "2024-01-01T00:00:00Z"},
        {"date", "2024-01-01"},
        {"time", "00:00:00Z"},
        {"email", "user@example.com"},
        {"uri", "https://example.com/"},
        {"uuid", "00000000-0000-4000-8000-000000000000"},
        {"ipv4", "192.0.2.1"},
        {"ipv6", "2001:db8::1"},
        {"hostname", "example.com"},
    };
    const char *v = "example";
    const cJSON *f = sch_get(s, "format");
    for (size_t i = 0; cJSON_IsString(f) && i < sizeof(formats) / sizeof(formats[0]); i++)
        if (strcmp(f->valuestring, formats[i].format) == 0) v = formats[i].value;
    char buf[256];
    size_t n = strlen(v);
    memcpy(buf, v, n);
    const cJSON *mn = sch_get(s, "minLength"), *mx = sch_get(s, "maxLength");
    if (cJSON_IsNumber(mn))
        while (n < (double)mn->valuedouble && n + 1 < sizeof(buf)) buf[n++] = 'x';
    if (cJSON_IsNumber(mx) && mx->valuedouble >= 0 && n > (double)mx->valuedouble)
        n = (size_t)mx->valuedouble;
    buf[n] = '\0';
    return cJSON_CreateString(buf);
}

static cJSON *sch_object(sch_ctx_t *x, const cJSON *s, int depth)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *props = sch_get(s, "properties");
    const cJSON *req = sch_get(s, "required");
    const cJSON *it;
    /* Required properties first, in the order "required" lists them. */
    cJSON_ArrayForEach(it, req)
    {
        if (!cJSON_IsString(it) || sch_get(o, it->valuestring)) continue;
        const cJSON *ps = sch_get(props, it->valuestring);
        cJSON *v = ps ? sch_value(x, ps, depth + 1) : cJSON_CreateString("example");
        if (!v) goto fail;
        cJSON_AddItemToObject(o, it->valuestring, v);
    }
    const cJSON *optional = depth >= SCH_DEPTH_LEAN ? NULL : props;
    cJSON_ArrayForEach(it, optional)
    {
        if (!it->string || sch_get(o, it->string)) continue;
        cJSON *v = sch_value(x, it, depth + 1);
        if (!v) goto fail;
        cJSON_AddItemToObject(o, it->string, v);
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *sch_array(sch_ctx_t *x, const cJSON *s, int depth)
{
    cJSON *a = cJSON_CreateArray();
    const cJSON *items = sch_get(s, "items");
    const cJSON *prefix = sch_get(s, "prefixItems");
    const cJSON *mn = sch_get(s, "minItems"), *mx = sch_get(s, "maxItems");
    double want = depth >= SCH_DEPTH_LEAN ? 0 : 1;
    if (cJSON_IsNumber(mn) && mn->valuedouble > want) want = mn->valuedouble;
    if (cJSON_IsArray(prefix) && cJSON_GetArraySize(prefix) > want)
        want = cJSON_GetArraySize(prefix);
    if (cJSON_IsNumber(mx) && mx->valuedouble < want)
        want = mx->valuedouble < 0 ? 0 : mx->valuedouble;
    for (int i = 0; i < want; i++) {
        if (x->nodes >= SCH_NODES_MAX) {
            snprintf(x->err, x->errlen, "json=1: the schema asks for more than %d values",
                     SCH_NODES_MAX);
            goto fail;
        }
        const cJSON *is = cJSON_GetArrayItem(prefix, i);
        if (!is) is = cJSON_IsObject(items) || cJSON_IsBool(items) ? items : NULL;
        cJSON *v = is ? sch_value(x, is, depth + 1) : cJSON_CreateString("example");
        if (!v) goto fail;
        cJSON_AddItemToArray(a, v);
    }
    return a;
fail:
    cJSON_Delete(a);
    return NULL;
}

static cJSON *sch_value(sch_ctx_t *x, const cJSON *s, int depth)
{
    if (depth > SCH_DEPTH_MAX) {
        snprintf(x->err, x->errlen, "json=1: the schema nests deeper than %d levels",
                 SCH_DEPTH_MAX);
        return NULL;
    }
    if (++x->nodes > SCH_NODES_MAX) {
        snprintf(x->err, x->errlen, "json=1: the schema asks for more than %d values",
                 SCH_NODES_MAX);
        return NULL;
    }
    if (cJSON_IsFalse(s)) {
        snprintf(x->err, x->errlen, "json=1: the schema 'false' accepts no document");
        return NULL;
    }
    if (!cJSON_IsObject(s)) return cJSON_CreateString("example"); /* true, or not a schema */
    const cJSON *ref = sch_get(s, "$ref");
    if (cJSON_IsString(ref)) {
        const cJSON *target = sch_resolve(x->root, ref->valuestring);
        if (!target) {
            snprintf(x->err, x->errlen,
                     "json=1: cannot resolve $ref '%.128s' (only local "
                     "references such as #/$defs/NAME)",
                     ref->valuestring);
            return NULL;
        }
        return sch_value(x, target, depth + 1);
    }
    const cJSON *c = sch_get(s, "const");
    if (c) return cJSON_Duplicate(c, 1);
    const cJSON *e = sch_get(s, "enum");
    if (cJSON_IsArray(e) && cJSON_GetArraySize(e) > 0) return cJSON_Duplicate(e->child, 1);
    static const char *const combos[] = {"anyOf", "oneOf", "allOf"};
    for (size_t i = 0; i < sizeof(combos) / sizeof(combos[0]); i++) {
        const cJSON *alt = sch_get(s, combos[i]);
        if (cJSON_IsArray(alt) && cJSON_GetArraySize(alt) > 0)
            return sch_value(x, alt->child, depth + 1);
    }
    const char *t = sch_type(s);
    if (!t) t = sch_get(s, "properties") ? "object" : sch_get(s, "items") ? "array" : "string";
    if (strcmp(t, "object") == 0) return sch_object(x, s, depth);
    if (strcmp(t, "array") == 0) return sch_array(x, s, depth);
    if (strcmp(t, "integer") == 0) return cJSON_CreateNumber(sch_clamp(s, 1, 1));
    if (strcmp(t, "number") == 0) return cJSON_CreateNumber(sch_clamp(s, 1.5, 0));
    if (strcmp(t, "boolean") == 0) return cJSON_CreateTrue();
    if (strcmp(t, "null") == 0) return cJSON_CreateNull();
    return sch_string(s);
}

char *mock_schema_example(const cJSON *schema, size_t *len, char *err, size_t errlen)
{
    sch_ctx_t x = {.root = schema, .err = err, .errlen = errlen};
    cJSON *doc = sch_value(&x, schema, 0);
    if (!doc) return NULL;
    char *out = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!out) {
        snprintf(err, errlen, "json=1: out of memory");
        return NULL;
    }
    *len = strlen(out);
    if (*len > MOCK_REPLY_MAX) {
        snprintf(err, errlen, "json=1: the document for this schema is over %d bytes",
                 MOCK_REPLY_MAX);
        free(out);
        return NULL;
    }
    return out;
}
