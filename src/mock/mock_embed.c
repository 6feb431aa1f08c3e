/* mockllm, embeddings in both dialects:
 *   POST /v1/embeddings                  OpenAI's shape: input (string, strings, token ids),
 *                                        encoding_format float|base64, dimensions
 *   POST /api/v2/cortex/inference:embed  Cortex's shape (snowflake-rest-api-specs,
 *                                        specifications/cortex-embed.yaml): model, text[]
 * Vectors are deterministic: each whitespace-separated word of a text seeds a pseudo-random
 * vector, the text's vector is their normalised sum, so texts sharing words are close. The
 * request is parsed and the "data" array built up front; the shared job machinery then
 * applies the delay and failure directives and sends the reply. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/http.h"
#include "sophia/json.h"
#include "sophia/log.h"

/* ---- vectors ----------------------------------------------------------------------------- */

static uint64_t emb_fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* splitmix64's finaliser: a well-spread 64-bit value for x. */
static uint64_t emb_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Adds the vector of the word with hash h to acc[0..dims). */
static void emb_add_word(uint64_t h, uint32_t dims, double *acc)
{
    for (uint32_t d = 0; d < dims; d++) {
        uint64_t x = emb_mix(h + (uint64_t)(d + 1) * 0x9e3779b97f4a7c15ull);
        acc[d] += (double)(x >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    }
}

static int emb_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void mock_embed_vector(const char *s, size_t n, uint32_t dims, float *out)
{
    double acc[MOCK_EMBED_DIMS_MAX];
    SG_ASSERT(dims >= 1 && dims <= MOCK_EMBED_DIMS_MAX);
    memset(acc, 0, sizeof(double) * dims);
    int words = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && emb_is_space(s[i])) i++;
        size_t start = i;
        while (i < n && !emb_is_space(s[i])) i++;
        if (i > start) {
            emb_add_word(emb_fnv1a(s + start, i - start), dims, acc);
            words++;
        }
    }
    if (!words) emb_add_word(emb_fnv1a(s, n), dims, acc);
    double norm = 0;
    for (uint32_t d = 0; d < dims; d++) norm += acc[d] * acc[d];
    norm = sqrt(norm);
    if (norm == 0) {
        acc[0] = norm = 1;
    }
    for (uint32_t d = 0; d < dims; d++) out[d] = (float)(acc[d] / norm);
}

/* v[0..len) scaled back to unit length (after a cut). */
static void emb_renormalise(float *v, uint32_t len)
{
    double norm = 0;
    for (uint32_t d = 0; d < len; d++) norm += (double)v[d] * v[d];
    norm = sqrt(norm);
    if (norm == 0) {
        v[0] = 1;
        return;
    }
    for (uint32_t d = 0; d < len; d++) v[d] = (float)(v[d] / norm);
}

/* ---- the "data" array -------------------------------------------------------------------- */

typedef struct emb_out {
    sg_buf_t b;
    int cortex;     /* Cortex's item shape */
    int base64;     /* OpenAI encoding_format "base64" */
    uint32_t dims;  /* computed vector length (--embed-dims) */
    uint32_t keep;  /* length sent (dimensions, else dims) */
    uint32_t count; /* items written */
    float v[MOCK_EMBED_DIMS_MAX];
} emb_out_t;

static void emb_base64(sg_buf_t *b, const float *v, uint32_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char tri[3];
    size_t have = 0;
    char quad[4];
    for (uint32_t d = 0; d < len; d++) {
        uint32_t bits;
        memcpy(&bits, &v[d], sizeof(bits));
        for (int k = 0; k < 4; k++) { /* little-endian float32 */
            tri[have++] = (unsigned char)(bits >> (8 * k));
            if (have < 3) continue;
            quad[0] = tab[tri[0] >> 2];
            quad[1] = tab[((tri[0] & 3) << 4) | (tri[1] >> 4)];
            quad[2] = tab[((tri[1] & 15) << 2) | (tri[2] >> 6)];
            quad[3] = tab[tri[2] & 63];
            sg_buf_append(b, quad, 4);
            have = 0;
        }
    }
    if (have) {
        if (have == 1) tri[1] = 0;
        quad[0] = tab[tri[0] >> 2];
        quad[1] = tab[((tri[0] & 3) << 4) | (tri[1] >> 4)];
        quad[2] = have == 2 ? tab[(tri[1] & 15) << 2] : '=';
        quad[3] = '=';
        sg_buf_append(b, quad, 4);
    }
}

/* Appends the item for text s[0..n) to the data array. */
static void emb_item(emb_out_t *e, const char *s, size_t n)
{
    mock_embed_vector(s, n, e->dims, e->v);
    if (e->keep < e->dims) emb_renormalise(e->v, e->keep);
    sg_buf_t *b = &e->b;
    sg_buf_append_str(b, e->count ? "," : "[");
    if (e->cortex) {
        sg_buf_append_str(b, "{\"object\":\"embedding\",\"embedding\":[[");
    } else {
        sg_buf_printf(b,
                      "{\"object\":\"embedding\",\"index\":%" PRIu32 ",\"embedding\":", e->count);
        sg_buf_append_str(b, e->base64 ? "\"" : "[");
    }
    if (e->base64) {
        emb_base64(b, e->v, e->keep);
    } else {
        for (uint32_t d = 0; d < e->keep; d++) sg_buf_printf(b, d ? ",%.9g" : "%.9g", e->v[d]);
    }
    if (e->cortex)
        sg_buf_printf(b, "]],\"index\":%" PRIu32 "}", e->count);
    else
        sg_buf_append_str(b, e->base64 ? "\"}" : "]}");
    e->count++;
}

static void emb_begin(emb_out_t *e, uint32_t items)
{
    /* a float prints in at most 16 bytes plus the comma; base64 takes 4/3 of 4 bytes */
    sg_buf_init(&e->b, (size_t)items * ((size_t)e->keep * 17 + 128) + 64);
}

/* Hands the data array to c (the job sends it). */
static void emb_finish(emb_out_t *e, mock_chat_t *c)
{
    sg_buf_append_str(&e->b, e->count ? "]" : "[]");
    c->reply = sg_buf_steal(&e->b, &c->reply_len);
    c->stream = 0;
    c->include_usage = 1;
    c->max_tokens = -1;
}

/* A text input: directives, prompt tokens (its words), its item. */
static int emb_text(emb_out_t *e, mock_chat_t *c, const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (mock_directives_scan(&c->d, s, n, err, errlen) != 0) return -1;
    c->prompt_tokens += mock_count_words(s, n);
    emb_item(e, s, n);
    return 0;
}

/* A token-id input (a non-empty array of integers): one prompt token per id; the vector is
 * the text of the ids in decimal, separated by spaces. Returns 0, or -1 when not such an
 * array. */
static int emb_tokens(emb_out_t *e, mock_chat_t *c, const cJSON *ids)
{
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) == 0) return -1;
    sg_buf_t t;
    sg_buf_init(&t, (size_t)cJSON_GetArraySize(ids) * 12 + 16);
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        long long v;
        if (sg_json_int_in(id, 0, 4294967295.0, &v) != 0) {
            sg_buf_dispose(&t);
            return -1;
        }
        sg_buf_printf(&t, t.len ? " %lld" : "%lld", v);
        c->prompt_tokens++;
    }
    emb_item(e, t.data, t.len);
    sg_buf_dispose(&t);
    return 0;
}

/* ---- OpenAI: POST /v1/embeddings --------------------------------------------------------- */

int mock_embed_oai_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                         size_t errlen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) {
        snprintf(err, errlen, "Invalid type for 'model': expected a string");
        return -1;
    }
    c->model = cJSON_IsString(model) ? model->valuestring : "";
    emb_out_t *e = sg_xcalloc(1, sizeof(*e));
    e->dims = e->keep = app->embed_dims;
    int rc = -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "float") != 0 && strcmp(fmt->valuestring, "base64") != 0)) {
            snprintf(err, errlen,
                     "Invalid value for 'encoding_format': expected 'float' or 'base64'");
            goto out;
        }
        e->base64 = strcmp(fmt->valuestring, "base64") == 0;
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(root, "dimensions");
    if (dims && !cJSON_IsNull(dims)) {
        long long v;
        if (sg_json_int_in(dims, 1, app->embed_dims, &v) != 0) {
            snprintf(err, errlen,
                     "Invalid value for 'dimensions': expected an integer from 1 to %" PRIu32
                     " (this model's vector length)",
                     app->embed_dims);
            goto out;
        }
        e->keep = (uint32_t)v;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (cJSON_IsString(input)) {
        if (!input->valuestring[0]) {
            snprintf(err, errlen, "'input' cannot be an empty string");
            goto out;
        }
        emb_begin(e, 1);
        if (emb_text(e, c, input->valuestring, err, errlen) != 0) goto out;
    } else if (cJSON_IsArray(input)) {
        int n = cJSON_GetArraySize(input);
        if (n == 0) {
            snprintf(err, errlen, "'input' cannot be an empty array");
            goto out;
        }
        if (n > MOCK_EMBED_ITEMS_MAX) {
            snprintf(err, errlen, "'input' has %d items; at most %d are allowed", n,
                     MOCK_EMBED_ITEMS_MAX);
            goto out;
        }
        if (cJSON_IsNumber(input->child)) { /* one input given as token ids */
            emb_begin(e, 1);
            if (emb_tokens(e, c, input) != 0) {
                snprintf(err, errlen, "'input' as token ids must be an array of integers");
                goto out;
            }
        } else {
            emb_begin(e, (uint32_t)n);
            int i = 0;
            const cJSON *it;
            cJSON_ArrayForEach(it, input)
            {
                if (cJSON_IsString(it) && it->valuestring[0]) {
                    if (emb_text(e, c, it->valuestring, err, errlen) != 0) goto out;
                } else if (emb_tokens(e, c, it) != 0) {
                    snprintf(err, errlen,
                             "'input[%d]' must be a non-empty string or a non-empty array of "
                             "integer token ids",
                             i);
                    goto out;
                }
                i++;
            }
        }
    } else {
        snprintf(err, errlen,
                 "'input' is required: a string, an array of strings, or an array of "
                 "token-id arrays");
        goto out;
    }
    emb_finish(e, c);
    rc = 0;
out:
    sg_buf_dispose(&e->b);
    free(e);
    return rc;
}

static void emb_respond(mock_job_t *j, int cortex)
{
    sg_buf_t b;
    sg_buf_init(&b, j->text_len + 4096);
    sg_buf_append_str(&b, "{\"object\":\"list\",\"data\":");
    sg_buf_append(&b, j->text ? j->text : "[]", j->text ? j->text_len : 2);
    sg_buf_printf(&b, ",\"model\":%s,\"usage\":{", mock_job_model(j));
    if (!cortex) sg_buf_printf(&b, "\"prompt_tokens\":%" PRIu32 ",", j->prompt_tokens);
    sg_buf_printf(&b, "\"total_tokens\":%" PRIu32 "}}", j->prompt_tokens);
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(j->req, 200, "application/json", b.data, b.len,
                    mock_reply_headers(j, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

static void emb_oai_respond(mock_job_t *j)
{
    emb_respond(j, 0);
}

const mock_wire_t mock_wire_embed_openai = {
    .name = "embed-openai",
    .kind = MOCK_KIND_EMBED,
    .vllm_models = 1,
    .respond = emb_oai_respond,
    .respond_error = mock_oai_respond_error,
};

/* ---- Cortex: POST /api/v2/cortex/inference:embed ----------------------------------------- */

int mock_embed_cortex_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                            size_t errlen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        snprintf(err, errlen, "request is missing the required field 'model'");
        return -1;
    }
    c->model = model->valuestring;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    int n = cJSON_GetArraySize(text);
    if (!cJSON_IsArray(text) || n == 0) {
        snprintf(err, errlen,
                 "request is missing the required field 'text' (a non-empty array of "
                 "strings)");
        return -1;
    }
    if (n > MOCK_EMBED_ITEMS_MAX) {
        snprintf(err, errlen, "'text' has %d items; the mock takes at most %d", n,
                 MOCK_EMBED_ITEMS_MAX);
        return -1;
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "provisioned_throughput_id");
    if (pt && !cJSON_IsNull(pt) && !cJSON_IsString(pt)) {
        snprintf(err, errlen,
                 "invalid options object: 'provisioned_throughput_id' must be a string");
        return -1;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, text)
    {
        if (!cJSON_IsString(it)) {
            snprintf(err, errlen, "text[%d] must be a string", i);
            return -1;
        }
        i++;
    }
    emb_out_t *e = sg_xcalloc(1, sizeof(*e));
    e->cortex = 1;
    e->dims = e->keep = app->embed_dims;
    emb_begin(e, (uint32_t)n);
    int rc = 0;
    cJSON_ArrayForEach(it, text)
    {
        if (emb_text(e, c, it->valuestring, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0) emb_finish(e, c);
    sg_buf_dispose(&e->b);
    free(e);
    return rc;
}

static void emb_cx_respond(mock_job_t *j)
{
    emb_respond(j, 1);
}

const mock_wire_t mock_wire_embed_cortex = {
    .name = "embed-cortex",
    .kind = MOCK_KIND_EMBED,
    .snowflake = 1,
    .respond = emb_cx_respond,
    .respond_error = mock_sf_respond_error,
};
