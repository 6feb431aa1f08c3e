/* Adapter for OpenAI-compatible upstreams (Lambda-hosted vLLM / SGLang / TGI). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/openai.h"
#include "sophia/provider.h"
#include "sophia/sse.h"

#define SSE_EVENT_MAX (4 * 1024 * 1024)

void sg_error_set(sg_error_t *e, int status, const char *type, const char *code, const char *fmt,
                  ...)
{
    e->status = status;
    e->type = type;
    sg_strlcpy(e->code, sizeof(e->code), code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    /* Messages carry upstream text and may be cut mid-character: keep them valid UTF-8. */
    sg_utf8_sanitize(e->message, strlen(e->message));
    sg_utf8_sanitize(e->code, strlen(e->code));
}

static void post_text(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                      char *json, const sg_upstream_opts_t *uo)
{
    out->url = url;
    out->method = "POST";
    out->headers = headers;
    out->body = json;
    out->body_len = strlen(json);
    out->connect_timeout_ms = uo->connect_timeout_ms;
    out->first_byte_timeout_ms = uo->first_byte_timeout_ms;
    out->idle_timeout_ms = uo->idle_timeout_ms;
    out->total_timeout_ms = uo->total_timeout_ms;
}

void sg_upstream_post_json(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                           cJSON *body, const sg_upstream_opts_t *uo)
{
    char *json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    SG_ASSERT(json != NULL);
    post_text(out, url, headers, json, uo);
}

/* One count of a usage object: absent or null is 0; anything else must be valid. */
static int usage_count(const cJSON *v, long long *out)
{
    *out = 0;
    if (!v || cJSON_IsNull(v)) return 0;
    return sg_json_count(v, SG_TOKENS_MAX, out);
}

void sg_usage_from_json(const cJSON *usage, sg_usage_t *u)
{
    if (!cJSON_IsObject(usage)) return;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if ((!p || cJSON_IsNull(p)) && (!c || cJSON_IsNull(c))) return;
    long long pv, cv;
    if (usage_count(p, &pv) != 0 || usage_count(c, &cv) != 0) {
        u->rejected = 1;
        return;
    }
    u->prompt_tokens = (long)pv;
    u->completion_tokens = (long)cv;
    u->known = 1;
    u->rejected = 0;
    /* Details, when reported and believable (else 0): OpenAI's cached prompt tokens, Cortex
     * Guard's tokens. */
    long long v;
    const cJSON *det = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
    const cJSON *cached = cJSON_GetObjectItemCaseSensitive(det, "cached_tokens");
    u->cached_tokens = cached && usage_count(cached, &v) == 0 && v <= pv ? (long)v : 0;
    const cJSON *guard = cJSON_GetObjectItemCaseSensitive(usage, "guard_tokens");
    u->guard_tokens = guard && usage_count(guard, &v) == 0 ? (long)v : 0;
}

void sg_upstream_get(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                     const sg_upstream_opts_t *uo)
{
    out->url = url;
    out->method = "GET";
    out->headers = headers;
    out->body = NULL;
    out->body_len = 0;
    out->connect_timeout_ms = uo->connect_timeout_ms;
    out->first_byte_timeout_ms = uo->first_byte_timeout_ms;
    out->idle_timeout_ms = uo->idle_timeout_ms;
    out->total_timeout_ms = uo->total_timeout_ms;
}

struct curl_slist *sg_header_bearer(struct curl_slist *h, const char *token)
{
    if (!token || !token[0]) return h;
    size_t n = strlen(token) + 32;
    char *line = sg_xmalloc(n);
    snprintf(line, n, "Authorization: Bearer %s", token);
    h = curl_slist_append(h, line);
    memset(line, 0, n);
    free(line);
    return h;
}

static struct curl_slist *auth_headers(const sg_provider_cfg_t *p, int stream)
{
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, stream ? "Accept: text/event-stream" : "Accept: application/json");
    return sg_header_bearer(h, sg_openai_cfg(p)->api_key);
}

/* The client's request as the upstream gets it: a copy naming the upstream model id. NULL
 * with a 503 in err when the provider has no base URL. */
static cJSON *upstream_body(const sg_route_t *route, const cJSON *client, sg_error_t *err)
{
    if (!route->base_url || !route->base_url[0]) {
        sg_error_set(err, 503, "api_error", "provider_not_configured",
                     "provider '%s' has no base URL configured", route->provider->name);
        return NULL;
    }
    cJSON *body = cJSON_Duplicate(client, 1);
    SG_ASSERT(body != NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(body, "model");
    cJSON_AddStringToObject(
        body, "model", route->model->upstream_id ? route->model->upstream_id : route->model->id);
    return body;
}

/* The usual chat request printed for the upstream without copying its tree: the client's
 * object with the model's name swapped for the printing, and for a stream without
 * stream_options, {"include_usage":true} added at the end. NULL when the request needs the
 * general path (no base URL, or stream_options that must be changed). */
static char *print_upstream_chat(const sg_route_t *route, const cJSON *client, int stream)
{
    if (!route->base_url || !route->base_url[0]) return NULL;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(client, "stream_options");
    if (stream && so && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage")))
        return NULL;
    cJSON *m = cJSON_GetObjectItemCaseSensitive(client, "model");
    if (!cJSON_IsString(m)) return NULL;
    /* The tree is the handler's and nothing else runs meanwhile: borrow its model string. */
    char *saved = m->valuestring;
    m->valuestring =
        (char *)(route->model->upstream_id ? route->model->upstream_id : route->model->id);
    char *json = cJSON_PrintUnformatted(client);
    m->valuestring = saved;
    SG_ASSERT(json != NULL);
    if (stream && !so) {
        static const char add[] = ",\"stream_options\":{\"include_usage\":true}}";
        size_t n = strlen(json);
        SG_ASSERT(n > 2 && json[n - 1] == '}'); /* has at least model and messages */
        json = sg_xrealloc(json, n + sizeof(add));
        memcpy(json + n - 1, add, sizeof(add));
    }
    return json;
}

static int oa_build_chat(const sg_route_t *route, const cJSON *client, int stream,
                         const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                         size_t url_cap, sg_error_t *err)
{
    const sg_provider_cfg_t *p = route->provider;
    char *text = print_upstream_chat(route, client, stream);
    if (text) {
        snprintf(url_buf, url_cap, "%s/chat/completions", route->base_url);
        post_text(out, url_buf, auth_headers(p, stream), text, uo);
        return 0;
    }
    cJSON *body = upstream_body(route, client, err);
    if (!body) return -1;
    if (stream) {
        /* Always ask for usage so every token is accounted; the gateway drops the usage chunk
         * when the client did not ask for it. */
        cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
        if (!cJSON_IsObject(so)) {
            cJSON_DeleteItemFromObjectCaseSensitive(body, "stream_options");
            so = cJSON_AddObjectToObject(body, "stream_options");
        }
        cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
        cJSON_AddTrueToObject(so, "include_usage");
    }
    snprintf(url_buf, url_cap, "%s/chat/completions", route->base_url);
    sg_upstream_post_json(out, url_buf, auth_headers(p, stream), body, uo);
    return 0;
}

typedef struct oa_decoder {
    sg_sse_parser_t sse;
    sg_decode_sink_t sink;
    int parsed_first; /* the first chunk is always parsed (the sink learns its id) */
    int ended;
    int stopped;
} oa_decoder_t;

/* Finds the JSON key "name" (with its quotes) in s and returns the first byte of its value,
 * or NULL. Inside a JSON string every quote is escaped, so "name" followed by a colon can
 * only be a key. */
static const char *json_key_value(const char *s, size_t n, const char *key, size_t klen)
{
    const char *end = s + n, *p = s;
    while ((p = memmem(p, (size_t)(end - p), key, klen)) != NULL) {
        const char *v = p + klen;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) v++;
        if (v < end && *v == ':') {
            v++;
            while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) v++;
            return v < end ? v : NULL;
        }
        p += klen;
    }
    return NULL;
}

/* Decides whether a chunk can be forwarded without parsing: a valid JSON object with no
 * "usage" and no "error" key. Then tells whether it carries content (a non-empty string content, or
 * tool_calls) and a finish_reason. Returns 0 when the chunk needs the full parse. */
static int oa_scan(const char *s, size_t n, int *has_content, int *has_finish)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t')) n--;
    while (n && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) s++, n--;
    if (n < 2 || s[0] != '{' || s[n - 1] != '}') return 0;
    if (memmem(s, n, "\"usage\"", 7) || memmem(s, n, "\"error\"", 7)) return 0;
    /* Forwarded bytes must be JSON a client can parse; the full path turns anything else
     * into an error event. */
    sg_json_problem_t p;
    if (sg_json_validate(s, n, &p) != 0) return 0;
    const char *v = json_key_value(s, n, "\"content\"", 9);
    *has_content = (v && *v == '"' && v + 1 < s + n && v[1] != '"') ||
                   memmem(s, n, "\"tool_calls\"", 12) != NULL;
    v = json_key_value(s, n, "\"finish_reason\"", 15);
    *has_finish = v && *v == '"';
    return 1;
}

/* One SSE event of an OpenAI-compatible stream. */
static int oa_on_event(void *ud, const sg_sse_event_t *ev)
{
    oa_decoder_t *d = ud;
    if (d->ended) return 0; /* anything after [DONE] is ignored */
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        d->ended = 1;
        d->sink.end(d->sink.ud);
        return 0;
    }
    if (ev->event_len && strcmp(ev->event, "message") != 0 && strcmp(ev->event, "error") != 0)
        return 0; /* unknown event types are not part of the completion */
    int has_content, has_finish;
    if (d->sink.raw_chunk && d->parsed_first &&
        oa_scan(ev->data, ev->data_len, &has_content, &has_finish)) {
        int rr = d->sink.raw_chunk(d->sink.ud, ev->data, ev->data_len, has_content, has_finish);
        if (rr) d->stopped = 1;
        return rr;
    }
    d->parsed_first = 1;
    cJSON *j = cJSON_ParseWithLength(ev->data, ev->data_len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        sg_error_t e;
        sg_error_set(&e, 502, "api_error", "upstream_bad_stream",
                     "upstream sent an event that is not a JSON object");
        d->sink.error(d->sink.ud, &e);
        d->stopped = 1;
        return 1;
    }
    const cJSON *errj = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (errj && !cJSON_IsNull(errj)) {
        sg_error_t e;
        const cJSON *msg =
            cJSON_IsObject(errj) ? cJSON_GetObjectItemCaseSensitive(errj, "message") : errj;
        sg_error_set(&e, 502, "api_error", "upstream_error", "upstream error: %s",
                     cJSON_IsString(msg) ? msg->valuestring : "unknown");
        cJSON_Delete(j);
        d->sink.error(d->sink.ud, &e);
        d->stopped = 1;
        return 1;
    }
    sg_usage_t u = {0};
    sg_usage_from_json(cJSON_GetObjectItemCaseSensitive(j, "usage"), &u);
    if (u.known || u.rejected) d->sink.usage(d->sink.ud, &u);
    int r = d->sink.chunk(d->sink.ud, j, ev->data, ev->data_len);
    cJSON_Delete(j);
    if (r) d->stopped = 1;
    return r;
}

static void *oa_decoder_new(const sg_route_t *route, const sg_decode_sink_t *sink)
{
    SG_UNUSED(route);
    oa_decoder_t *d = sg_xcalloc(1, sizeof(*d));
    d->sink = *sink;
    sg_sse_parser_init(&d->sse, SSE_EVENT_MAX, oa_on_event, d);
    return d;
}

static int oa_decode(void *dec, const char *data, size_t len)
{
    oa_decoder_t *d = dec;
    if (d->stopped) return -1;
    int r = sg_sse_parser_feed(&d->sse, data, len);
    if (r == SG_ERR_TOO_LARGE) {
        sg_error_t e;
        sg_error_set(&e, 502, "api_error", "upstream_bad_stream",
                     "upstream stream event exceeds %d bytes", SSE_EVENT_MAX);
        d->sink.error(d->sink.ud, &e);
        d->stopped = 1;
    }
    return r == 0 ? 0 : -1;
}

static int oa_decode_finish(void *dec)
{
    oa_decoder_t *d = dec;
    if (d->stopped) return -1;
    return sg_sse_parser_finish(&d->sse) == 0 ? 0 : -1;
}

static void oa_decoder_free(void *dec)
{
    oa_decoder_t *d = dec;
    if (!d) return;
    sg_sse_parser_dispose(&d->sse);
    free(d);
}

static cJSON *oa_convert_response(const sg_route_t *route, const char *body, size_t len,
                                  sg_usage_t *usage, sg_error_t *err)
{
    SG_UNUSED(route);
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "choices"))) {
        cJSON_Delete(j);
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "upstream response is not a chat completion");
        return NULL;
    }
    sg_usage_from_json(cJSON_GetObjectItemCaseSensitive(j, "usage"), usage);
    return j;
}

/* convert_response without the tree: the body must be strictly valid JSON, an object with a
 * "choices" array; its "usage" object alone is parsed. */
static int oa_scan_response(const sg_route_t *route, const char *body, size_t len,
                            sg_usage_t *usage, sg_error_t *err)
{
    SG_UNUSED(route);
    sg_json_problem_t prob;
    sg_json_member_t m[2] = {{"choices", NULL, 0}, {"usage", NULL, 0}};
    /* One pass: validated, and the two members found on the way. */
    if (sg_json_validate_members(body, len, m, 2, &prob) != 0 || !m[0].val || *m[0].val != '[') {
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "upstream response is not a chat completion");
        return -1;
    }
    if (m[1].val && *m[1].val == '{') {
        cJSON *u = cJSON_ParseWithLength(m[1].val, m[1].len);
        sg_usage_from_json(u, usage);
        cJSON_Delete(u);
    }
    return 0;
}

static const char *status_type(long status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* An upstream error body (OpenAI {"error":{…}} or anything else) becomes an OpenAI error with
 * the same status, saying when the gateway's own settings are the likely cause. */
static void oa_map_error(const sg_route_t *route, long status, const char *body, size_t len,
                         sg_error_t *err)
{
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const char *msg = NULL, *code = NULL;
    if (cJSON_IsObject(j)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *src = cJSON_IsObject(e) ? e : j;
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(src, "message");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(src, "code");
        if (cJSON_IsString(e)) m = e;
        if (cJSON_IsString(m)) msg = m->valuestring;
        if (cJSON_IsString(c)) code = c->valuestring;
    }
    int st = status >= 400 && status <= 599 ? (int)status : 502;
    const sg_provider_cfg_t *p = route->provider;
    char what[320];
    if (msg)
        sg_strlcpy(what, sizeof(what), msg);
    else
        snprintf(what, sizeof(what), "HTTP %ld", status);
    const char *base = route->base_url ? route->base_url : "";
    size_t bl = strlen(base);
    if (st == 401 || st == 403)
        sg_error_set(err, st, status_type(status), code,
                     "the gateway's credentials for provider '%s' were rejected by the upstream "
                     "(upstream said: %s); the client's own key is not the cause: check the "
                     "provider's api_key (LAMBDA_API_KEY for lambda)",
                     p->name, what);
    else if (st == 404 && !(bl >= 3 && strcmp(base + bl - 3, "/v1") == 0))
        sg_error_set(err, st, status_type(status), code,
                     "upstream: %s (provider '%s' answered 404 for <base URL>/chat/completions: "
                     "its base URL does not end in /v1, where OpenAI-compatible servers serve "
                     "the API; is /v1 missing?)",
                     what, p->name);
    else
        sg_error_set(err, st, status_type(status), code, "upstream: %s", what);
    cJSON_Delete(j);
}

/* The body for {base}/embeddings: the client's, with the upstream model id. */
static int oa_build_embed(const sg_route_t *route, const cJSON *client,
                          const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                          size_t url_cap, sg_error_t *err)
{
    const sg_provider_cfg_t *p = route->provider;
    cJSON *body = upstream_body(route, client, err);
    if (!body) return -1;
    snprintf(url_buf, url_cap, "%s/embeddings", route->base_url);
    sg_upstream_post_json(out, url_buf, auth_headers(p, 0), body, uo);
    return 0;
}

/* An OpenAI embeddings list is forwarded as it is (the server did the encoding and the
 * dimensions); this checks its shape and reads the usage. */
static cJSON *oa_convert_embed(const sg_route_t *route, const cJSON *client, const char *body,
                               size_t len, sg_usage_t *usage, sg_error_t *err)
{
    SG_UNUSED(route);
    SG_UNUSED(client);
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "data"))) {
        cJSON_Delete(j);
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "upstream response is not an embeddings list");
        return NULL;
    }
    sg_usage_from_json(cJSON_GetObjectItemCaseSensitive(j, "usage"), usage);
    return j;
}

const sg_provider_vt_t sg_provider_openai = {
    .kind = "openai",
    .passthrough_response = 1,
    .build_chat = oa_build_chat,
    .decoder_new = oa_decoder_new,
    .decode = oa_decode,
    .decode_finish = oa_decode_finish,
    .decoder_free = oa_decoder_free,
    .convert_response = oa_convert_response,
    .scan_response = oa_scan_response,
    .build_embed = oa_build_embed,
    .convert_embed = oa_convert_embed,
    .map_error = oa_map_error,
};
