/* mockllm, Snowflake Cortex REST dialect (see docs/providers.md, "Snowflake Cortex"):
 *   POST /api/v2/cortex/inference:complete   Cortex's own chat format, three chunk shapes,
 *                                            multi-turn tools (tool_use / tool_results)
 *   POST /api/v2/cortex/v1/chat/completions  the OpenAI-compatible endpoint
 *   POST /api/v2/cortex/v1/messages          the Anthropic Messages endpoint (mock_messages.c)
 *   POST /api/v2/cortex/inference:embed      embeddings (mock_embed.c)
 *   GET  /api/v2/cortex/models
 * plus the Snowflake bearer-token check and error JSON {"message","code","request_id"} with
 * the X-Snowflake-Request-ID header. Scheduling, directives and statistics are shared with
 * the OpenAI dialect (mockllm.c); this file only frames events and replies. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mock.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/http.h"
#include "sophia/log.h"

/* ---- request ids and errors -------------------------------------------------------------- */

void mock_sf_request_id(char out[37])
{
    char hex[33];
    sg_request_id_new(hex);
    /* 8-4-4-4-12, version 4 / variant 10 like a random UUID. */
    hex[12] = '4';
    hex[16] = "89ab"[hex[16] % 4];
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

typedef struct sf_error {
    int status;
    const char *message;
} sf_error_t;

/* Texts of injected failures (status=CODE); the code is "390" + status ("390144" for 401). */
static const sf_error_t sf_errors[] = {
    {400, "invalid options object"},
    {402, "budget exceeded"},
    {403, "Not Authorized: the current role lacks the SNOWFLAKE.CORTEX_USER database role"},
    {404, "model not found"},
    {429, "Too many requests"},
    {500, "internal error"},
    {503, "inference timed out"},
    {504, "gateway timeout"},
};

void mock_sf_respond_error(const mock_app_t *app, sg_http_req_t *req, int status, const char *code,
                           const char *message, const char *extra)
{
    char rid[37], codebuf[16], msgbuf[96];
    mock_sf_request_id(rid);
    if (!code) {
        if (status == 401) {
            code = "390144";
        } else {
            snprintf(codebuf, sizeof(codebuf), "390%d", status);
            code = codebuf;
        }
    }
    if (!message && status == 401) {
        snprintf(msgbuf, sizeof(msgbuf), "JWT token is invalid. [%s]", rid);
        message = msgbuf;
    }
    for (size_t i = 0; !message && i < SG_ARRAY_LEN(sf_errors); i++)
        if (sf_errors[i].status == status) message = sf_errors[i].message;
    if (!message) {
        snprintf(msgbuf, sizeof(msgbuf), "mock failure %d", status);
        message = msgbuf;
    }
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    sg_buf_append_str(&b, "{\"message\":");
    sg_json_escape_append(&b, message, strlen(message));
    sg_buf_append_str(&b, ",\"code\":");
    sg_json_escape_append(&b, code, strlen(code));
    sg_buf_printf(&b, ",\"request_id\":\"%s\"}", rid);
    char hdr[MOCK_HDRS_MAX];
    snprintf(hdr, sizeof(hdr), "X-Snowflake-Request-ID: %s\r\n%s", rid, extra ? extra : "");
    sg_http_respond(req, status, "application/json", b.data, b.len,
                    mock_headers(app, hdr, hdr, sizeof(hdr)));
    sg_buf_dispose(&b);
}

/* ---- auth -------------------------------------------------------------------------------- */

/* The token in --snowflake-token-file, trimmed, read now; "" when unreadable. */
static const char *sf_token_from_file(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return buf;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) e--;
    *e = '\0';
    return s;
}

int mock_sf_authorize(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire)
{
    mock_stats_t *s = &app->stats;
    const char *auth = sg_http_req_header(req, "authorization");
    const char *tok = NULL;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        tok = auth + 7;
        while (*tok == ' ') tok++;
    }
    const char *type = sg_http_req_header(req, "x-snowflake-authorization-token-type");
    sg_strlcpy(s->last_token_type, sizeof(s->last_token_type), type ? type : "");
    size_t tn = tok ? strlen(tok) : 0;
    snprintf(s->last_sf_token_suffix, sizeof(s->last_sf_token_suffix), "%s",
             tok ? tok + (tn > 4 ? tn - 4 : 0) : "");
    s->last_authorization_seen = auth != NULL;
    if (!app->sf_token && !app->sf_token_file) return 1;
    int ok = tok && app->sf_token && strcmp(tok, app->sf_token) == 0;
    if (!ok && tok && app->sf_token_file) {
        char buf[16384];
        const char *ft = sf_token_from_file(app->sf_token_file, buf, sizeof(buf));
        ok = *ft && strcmp(tok, ft) == 0;
    }
    if (ok) return 1;
    s->sf_auth_failures++;
    wire->respond_error(app, req, 401, NULL, NULL, NULL); /* Snowflake's: 390144 */
    return 0;
}

/* ---- wire format: inference:complete ----------------------------------------------------- */

/* Cortex streams carry every chunk as an SSE event of type "message". */
static void cx_event_begin(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o, "event: message\ndata: {\"id\":\"%s\",\"model\":%s,\"choices\":[{\"delta\":",
                    j->sf_id, mock_job_model(j));
}

static uint64_t cx_guard_tokens(const mock_job_t *j)
{
    return j->guard ? (uint64_t)j->prompt_tokens + j->n_items : 0;
}

/* usage of shapes 2 and 3 (shape 3 adds guard_tokens); "{}" with no_usage. */
static void cx_usage(const mock_job_t *j, int guard, mock_out_t *o)
{
    if (!j->want_usage) {
        mock_out_printf(o, "{}");
        return;
    }
    mock_out_printf(o,
                    "{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
                    ",\"total_tokens\":%" PRIu64,
                    j->prompt_tokens, j->n_items, (uint64_t)j->prompt_tokens + j->n_items);
    if (guard) mock_out_printf(o, ",\"guard_tokens\":%" PRIu64, cx_guard_tokens(j));
    mock_out_printf(o, "}");
}

/* The delta of a tool item (k = item - n_tokens) as one JSON object. */
static void cx_tool_delta(const mock_job_t *j, uint32_t k, mock_out_t *o)
{
    if (k == 0)
        mock_out_printf(o, "{\"type\":\"tool_use\",\"tool_use_id\":\"toolu_1\",\"name\":%s}",
                        mock_job_tool(j));
    else
        mock_out_printf(o, "{\"type\":\"tool_use\",\"input\":\"%s\"}", mock_tool_frag_json(k - 1));
}

static const char cx_prohibited[] = ",\"finish_reason\":\"prohibited_content\"";

/* Shape 1: pretty-printed over several data: lines, usage (counting up) in every chunk. The
 * chunk for item i (or, with i == n_items == 0, an empty one). */
static void cx1_chunk(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    int last = i + 1 >= j->n_items;
    uint32_t done = j->n_items ? i + 1 : 0;
    mock_out_printf(o,
                    "event: message\n"
                    "data: {\n"
                    "data:   \"id\": \"%s\",\n"
                    "data:   \"model\": %s,\n"
                    "data:   \"choices\": [\n"
                    "data:     {\n"
                    "data:       \"delta\": {\n",
                    j->sf_id, mock_job_model(j));
    if (i < j->n_tokens || j->n_items == 0) {
        int n = 0;
        const char *t = j->n_items ? mock_job_piece(j, i, &n) : "";
        mock_out_printf(o, "data:         \"content\": \"%.*s\"\n", n, t);
    } else if (i == j->n_tokens) {
        mock_out_printf(o,
                        "data:         \"type\": \"tool_use\",\n"
                        "data:         \"tool_use_id\": \"toolu_1\",\n"
                        "data:         \"name\": %s\n",
                        mock_job_tool(j));
    } else {
        mock_out_printf(o,
                        "data:         \"type\": \"tool_use\",\n"
                        "data:         \"input\": \"%s\"\n",
                        mock_tool_frag_json(i - j->n_tokens - 1));
    }
    mock_out_printf(o, "data:       }%s\n", last && j->prohibited ? "," : "");
    if (last && j->prohibited)
        mock_out_printf(o, "data:       \"finish_reason\": \"prohibited_content\"\n");
    mock_out_printf(o, "data:     }\n"
                       "data:   ],\n");
    if (j->want_usage)
        mock_out_printf(o,
                        "data:   \"usage\": {\n"
                        "data:     \"prompt_tokens\": %" PRIu32 ",\n"
                        "data:     \"completion_tokens\": %" PRIu32 ",\n"
                        "data:     \"total_tokens\": %" PRIu64 "\n"
                        "data:   }\n",
                        j->prompt_tokens, done, (uint64_t)j->prompt_tokens + done);
    else
        mock_out_printf(o, "data:   \"usage\": {}\n");
    mock_out_printf(o, "data: }\n\n");
}

/* Shape 2: one line per chunk, "usage":{} until the final chunk. */
static void cx2_chunk(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    cx_event_begin(j, o);
    if (i < j->n_tokens) {
        int n;
        const char *t = mock_job_piece(j, i, &n);
        mock_out_printf(o, "{\"content\":\"%.*s\"}", n, t);
    } else
        cx_tool_delta(j, i - j->n_tokens, o);
    mock_out_printf(o, "}],\"usage\":{}}\n\n");
}

/* Shape 3 (current): typed deltas with content_list; usage on the last content chunk. The
 * chunk for item i (or, with i == n_items == 0, one with empty text). */
static void cx3_chunk(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    int last = i + 1 >= j->n_items;
    cx_event_begin(j, o);
    if (i < j->n_tokens || j->n_items == 0) {
        int n = 0;
        const char *t = j->n_items ? mock_job_piece(j, i, &n) : "";
        mock_out_printf(o,
                        "{\"type\":\"text\",\"content\":\"%.*s\",\"content_list\":[{\"type\":"
                        "\"text\",\"text\":\"%.*s\"}],\"text\":\"%.*s\"}",
                        n, t, n, t, n, t);
    } else {
        cx_tool_delta(j, i - j->n_tokens, o);
    }
    mock_out_printf(o, "%s}],\"usage\":", last && j->prohibited ? cx_prohibited : "");
    if (last)
        cx_usage(j, 1, o);
    else
        mock_out_printf(o, "{}");
    mock_out_printf(o, "}\n\n");
}

static void cx_stream_open(const mock_job_t *j, mock_out_t *o)
{
    SG_UNUSED(j);
    SG_UNUSED(o);
}

static void cx_stream_token(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    if (j->shape == 1)
        cx1_chunk(j, i, o);
    else if (j->shape == 2)
        cx2_chunk(j, i, o);
    else
        cx3_chunk(j, i, o);
}

/* No [DONE]: after these events the stream ends with the connection. */
static void cx_stream_close(const mock_job_t *j, mock_out_t *o)
{
    if (j->shape == 2) {
        cx_event_begin(j, o);
        mock_out_printf(o, "{}%s}],\"usage\":", j->prohibited ? cx_prohibited : "");
        cx_usage(j, 0, o);
        mock_out_printf(o, "}\n\n");
    } else if (j->n_items == 0) {
        cx_stream_token(j, 0, o); /* the usage still arrives, in a chunk with empty text */
    }
}

/* A chunk with a top-level "error" key: a mid-stream error (snowflake-ml-python raises
 * MidStreamException with str(error)). */
static void cx_stream_error(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "event: message\ndata: {\"error\":\"mock mid-stream error after %" PRIu32
                    " tokens\",\"code\":\"390500\",\"request_id\":\"%s\"}\n\n",
                    j->next, j->sf_id);
}

static const char *cx_finish_reason(const mock_job_t *j)
{
    if (j->prohibited) return "prohibited_content";
    if (j->tool) return "tool_use";
    return j->finish_length ? "length" : "stop";
}

static void cx_respond(mock_job_t *j)
{
    sg_buf_t text, b;
    sg_buf_init(&text, (size_t)j->n_tokens * 10 + j->text_len + 16);
    mock_job_text_append(j, &text);
    sg_buf_init(&b, 2 * text.len + 8192);
    sg_buf_printf(&b, "{\"id\":\"%s\",\"model\":%s,\"choices\":[{\"message\":{\"content\":\"",
                  j->sf_id, mock_job_model(j));
    sg_buf_append(&b, text.data ? text.data : "", text.len);
    sg_buf_append_str(&b, "\",\"content_list\":[");
    if (j->n_tokens || !j->tool) {
        sg_buf_append_str(&b, "{\"type\":\"text\",\"text\":\"");
        sg_buf_append(&b, text.data ? text.data : "", text.len);
        sg_buf_append_str(&b, "\"}");
    }
    if (j->tool)
        sg_buf_printf(&b,
                      "%s{\"type\":\"tool_use\",\"tool_use\":{\"tool_use_id\":\"toolu_1\","
                      "\"name\":%s,\"input\":" MOCK_TOOL_ARGS "}}",
                      j->n_tokens ? "," : "", mock_job_tool(j));
    sg_buf_printf(&b, "]}}],\"finish_reason\":\"%s\",\"usage\":", cx_finish_reason(j));
    if (j->want_usage)
        sg_buf_printf(&b,
                      "{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
                      ",\"total_tokens\":%" PRIu64 ",\"guard_tokens\":%" PRIu64 "}}",
                      j->prompt_tokens, j->n_items, (uint64_t)j->prompt_tokens + j->n_items,
                      cx_guard_tokens(j));
    else
        sg_buf_append_str(&b, "{}}");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(j->req, 200, "application/json", b.data, b.len,
                    mock_reply_headers(j, hb, sizeof(hb)));
    sg_buf_dispose(&b);
    sg_buf_dispose(&text);
}

const mock_wire_t mock_wire_cortex = {
    .name = "cortex",
    .kind = MOCK_KIND_CHAT,
    .json_hint = "response_format {\"type\":\"json\",\"schema\":{...}}",
    .stream_content_type = "text/event-stream",
    .stream_headers = "Cache-Control: no-cache\r\n",
    .snowflake = 1,
    .close_at_end = 1,
    .stream_open = cx_stream_open,
    .stream_token = cx_stream_token,
    .stream_close = cx_stream_close,
    .stream_error = cx_stream_error,
    .respond = cx_respond,
    .respond_error = mock_sf_respond_error,
};

/* The OpenAI-compatible endpoint: OpenAI framing, Snowflake auth/errors/request ids. */
const mock_wire_t mock_wire_sf_openai = {
    .name = "cortex-openai",
    .kind = MOCK_KIND_CHAT,
    .json_hint = "response_format {\"type\":\"json_schema\",\"json_schema\":{\"name\":...,"
                 "\"schema\":{...}}}",
    .stream_content_type = "text/event-stream",
    .stream_headers = "Cache-Control: no-cache\r\n",
    .snowflake = 1,
    .stream_open = mock_oai_stream_open,
    .stream_token = mock_oai_stream_token,
    .stream_close = mock_oai_stream_close,
    .stream_error = mock_oai_stream_error,
    .respond = mock_oai_respond,
    .respond_error = mock_sf_respond_error,
};

/* ---- request parsing --------------------------------------------------------------------- */

static int cx_opt_number(const cJSON *root, const char *name, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v) || cJSON_IsNumber(v)) return 0;
    snprintf(err, errlen, "invalid options object: '%s' must be a number", name);
    return -1;
}

/* Does a content_list item {"type":"tool_use","tool_use":{"tool_use_id":id,...}} occur in
 * messages[0..before)? */
static int cx_tool_use_known(const cJSON *messages, int before, const char *id)
{
    int idx = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (idx++ >= before) break;
        const cJSON *item;
        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(m, "content_list"))
        {
            const cJSON *tu = cJSON_GetObjectItemCaseSensitive(item, "tool_use");
            const cJSON *tid = cJSON_GetObjectItemCaseSensitive(tu, "tool_use_id");
            if (cJSON_IsString(tid) && strcmp(tid->valuestring, id) == 0) return 1;
        }
    }
    return 0;
}

/* Is o[k] a string (non-empty when nonempty)? */
static int cx_is_str(const cJSON *o, const char *k, int nonempty)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) && (!nonempty || v->valuestring[0]);
}

/* A tool_use item's payload: tool_use_id, name, input (cortex-inference.yaml, ToolUse). */
static int cx_check_tool_use(const cJSON *tu, int idx, int k, char *err, size_t errlen)
{
    const char *bad = !cJSON_IsObject(tu)                ? "tool_use (an object)"
                      : !cx_is_str(tu, "tool_use_id", 1) ? "tool_use.tool_use_id (a string)"
                      : !cx_is_str(tu, "name", 0)        ? "tool_use.name (a string)"
                      : !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(tu, "input"))
                          ? "tool_use.input (an object)"
                          : NULL;
    if (!bad) return 0;
    snprintf(err, errlen, "invalid messages: messages[%d].content_list[%d] needs %s", idx, k, bad);
    return -1;
}

/* A tool_results item's payload: tool_use_id (of an earlier tool_use), name, content (text
 * and json items), status and result optional (cortex-inference.yaml, ToolResults). */
static int cx_check_tool_results(const cJSON *messages, int idx, int k, const cJSON *tr, char *err,
                                 size_t errlen)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(tr, "content");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(tr, "status");
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(tr, "result");
    const char *bad = !cJSON_IsObject(tr)                ? "tool_results (an object)"
                      : !cx_is_str(tr, "tool_use_id", 1) ? "tool_results.tool_use_id (a string)"
                      : !cx_is_str(tr, "name", 0)        ? "tool_results.name (a string)"
                      : !cJSON_IsArray(content)          ? "tool_results.content (an array)"
                      : status && !cJSON_IsNull(status) && !cJSON_IsString(status)
                          ? "tool_results.status to be a string"
                      : result && !cJSON_IsNull(result) && !cJSON_IsObject(result)
                          ? "tool_results.result to be an object"
                          : NULL;
    if (bad) {
        snprintf(err, errlen, "invalid messages: messages[%d].content_list[%d] needs %s", idx, k,
                 bad);
        return -1;
    }
    int x = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        int ok = (strcmp(t, "text") == 0 && cx_is_str(it, "text", 0)) ||
                 (strcmp(t, "json") == 0 &&
                  cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(it, "json")));
        if (!ok) {
            snprintf(err, errlen,
                     "invalid messages: messages[%d].content_list[%d].tool_results.content[%d] "
                     "must be {\"type\":\"text\",\"text\":STRING} or "
                     "{\"type\":\"json\",\"json\":OBJECT}",
                     idx, k, x);
            return -1;
        }
        x++;
    }
    const char *id = cJSON_GetObjectItemCaseSensitive(tr, "tool_use_id")->valuestring;
    if (!cx_tool_use_known(messages, idx, id)) {
        snprintf(err, errlen,
                 "invalid messages: messages[%d].content_list[%d].tool_results.tool_use_id "
                 "'%.64s' does not match a tool_use of an earlier message",
                 idx, k, id);
        return -1;
    }
    return 0;
}

/* The content_list items of messages[idx]: objects with a string type; text, tool_use and
 * tool_results checked (others, such as image, passed). With results set, the text of each
 * tool result is appended to it ("; " between results); *n_results counts them. */
static int cx_check_items(const cJSON *messages, int idx, const cJSON *list, sg_buf_t *results,
                          int *n_results, char *err, size_t errlen)
{
    int k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
        if (!cJSON_IsObject(item) || !cJSON_IsString(type)) {
            snprintf(err, errlen,
                     "invalid messages: messages[%d].content_list[%d] must be an object with a "
                     "string 'type'",
                     idx, k);
            return -1;
        }
        const char *t = type->valuestring;
        if (strcmp(t, "text") == 0 && !cx_is_str(item, "text", 0)) {
            snprintf(err, errlen,
                     "invalid messages: messages[%d].content_list[%d].text must be "
                     "a string",
                     idx, k);
            return -1;
        }
        if (strcmp(t, "tool_use") == 0 &&
            cx_check_tool_use(cJSON_GetObjectItemCaseSensitive(item, "tool_use"), idx, k, err,
                              errlen) != 0)
            return -1;
        /* The spec's ToolResults item has type "tool_results"; its discriminator mapping names
         * it "tool_result". Both are accepted; the payload is under "tool_results". */
        if (strcmp(t, "tool_results") == 0 || strcmp(t, "tool_result") == 0) {
            const cJSON *tr = cJSON_GetObjectItemCaseSensitive(item, "tool_results");
            if (cx_check_tool_results(messages, idx, k, tr, err, errlen) != 0) return -1;
            if (results) {
                if ((*n_results)++) sg_buf_append(results, "; ", 2);
                mock_result_text_append(results, cJSON_GetObjectItemCaseSensitive(tr, "content"));
            }
        }
        k++;
    }
    return 0;
}

/* Reads an inference:complete request, checked as Snowflake checks it. */
static int cx_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                    size_t errlen)
{
    SG_UNUSED(app);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        snprintf(err, errlen, "request is missing the required field 'model'");
        return -1;
    }
    c->model = model->valuestring;
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        snprintf(err, errlen,
                 "request is missing the required field 'messages' (a non-empty "
                 "array)");
        return -1;
    }
    int idx = 0, n = cJSON_GetArraySize(messages);
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (!cJSON_IsObject(m)) {
            snprintf(err, errlen, "messages[%d] must be an object", idx);
            return -1;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const char *r = NULL;
        if (role && !cJSON_IsNull(role)) {
            r = cJSON_IsString(role) ? role->valuestring : "";
            if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
                snprintf(err, errlen,
                         "messages[%d].role must be one of 'system', 'user', 'assistant'", idx);
                return -1;
            }
            if (strcmp(r, "system") == 0 && idx != 0) {
                snprintf(err, errlen, "messages[%d]: a system message must be the first message",
                         idx);
                return -1;
            }
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(m, "content_list");
        if (!cJSON_IsString(content) && !cJSON_IsArray(list)) {
            snprintf(err, errlen, "messages[%d] needs a string 'content' or a 'content_list' array",
                     idx);
            return -1;
        }
        if (idx == n - 1 && r && strcmp(r, "user") != 0) {
            snprintf(err, errlen, "the last message must have the role 'user' (got '%.16s')", r);
            return -1;
        }
        if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list)) {
            snprintf(err, errlen, "invalid messages: messages[%d].content_list must be an array",
                     idx);
            return -1;
        }
        if (idx == n - 1) {
            sg_buf_t results;
            sg_buf_init(&results, MOCK_REPLY_MAX);
            int n_results = 0;
            int rc = cx_check_items(messages, idx, list, &results, &n_results, err, errlen);
            if (rc == 0 && n_results)
                mock_chat_tool_reply(c, results.data ? results.data : "", results.len);
            sg_buf_dispose(&results);
            if (rc != 0) return -1;
        } else if (cx_check_items(messages, idx, list, NULL, NULL, err, errlen) != 0) {
            return -1;
        }
        idx++;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        snprintf(err, errlen, "invalid options object: 'stream' must be a boolean");
        return -1;
    }
    c->stream = !stream || cJSON_IsNull(stream) || cJSON_IsTrue(stream); /* default: true */
    if (cx_opt_number(root, "temperature", err, errlen) != 0 ||
        cx_opt_number(root, "top_p", err, errlen) != 0)
        return -1;
    c->max_tokens = -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 0 ||
            mt->valuedouble != (double)(long long)mt->valuedouble) {
            snprintf(err, errlen,
                     "invalid options object: 'max_tokens' must be a non-negative "
                     "integer");
            return -1;
        }
        c->max_tokens = mt->valuedouble > 1e12 ? (long long)1e12 : (long long)mt->valuedouble;
    }
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (rf && !cJSON_IsNull(rf)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(rf, "schema");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(type) || strcmp(type->valuestring, "json") ||
            (schema && !cJSON_IsObject(schema))) {
            snprintf(err, errlen,
                     "invalid options object: 'response_format' must be "
                     "{\"type\":\"json\",\"schema\":{...}}");
            return -1;
        }
        c->schema = schema;
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) {
        snprintf(err, errlen, "invalid options object: 'tools' must be an array");
        return -1;
    }
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "tool_spec");
    const cJSON *tname = cJSON_GetObjectItemCaseSensitive(spec, "name");
    c->tool_name = cJSON_IsString(tname) ? tname->valuestring : NULL;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (tc && !cJSON_IsNull(tc) && !cJSON_IsObject(tc)) {
        snprintf(err, errlen, "invalid options object: 'tool_choice' must be an object");
        return -1;
    }
    const cJSON *guard = cJSON_GetObjectItemCaseSensitive(root, "guardrails");
    if (guard && !cJSON_IsNull(guard) && !cJSON_IsBool(guard) && !cJSON_IsObject(guard)) {
        snprintf(err, errlen,
                 "invalid options object: 'guardrails' must be a boolean or an "
                 "object");
        return -1;
    }
    c->guard = cJSON_IsTrue(guard) || cJSON_IsObject(guard);
    c->include_usage = 1;
    return mock_scan_messages(messages, &c->d, &c->prompt_tokens, err, errlen);
}

static int cx_oai_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                        size_t errlen)
{
    SG_UNUSED(app);
    return mock_oai_parse(root, c, 1, err, errlen);
}

/* ---- routes ------------------------------------------------------------------------------ */

static const char *const cx_models[] = {
    "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-7-sonnet",       "claude-3-5-sonnet",
    "openai-gpt-4.1",    "openai-gpt-5",     "openai-gpt-5-mini",       "llama4-maverick",
    "llama3.1-8b",       "llama3.1-70b",     "llama3.1-405b",           "deepseek-r1",
    "mistral-7b",        "mistral-large2",   "snowflake-llama-3.3-70b",
};

static void cx_handle_models(mock_app_t *app, sg_http_req_t *req)
{
    app->stats.models_requests++;
    if (app->fail_status) {
        mock_sf_respond_error(app, req, app->fail_status, NULL, NULL, NULL);
        return;
    }
    if (app->hang) return; /* never answered; the connection ends when the client leaves */
    if (!mock_sf_authorize(app, req, &mock_wire_cortex)) return;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_append_str(&b, "{\"models\":[");
    for (size_t i = 0; i < SG_ARRAY_LEN(cx_models); i++)
        sg_buf_printf(&b, "%s{\"name\":\"%s\"}", i ? "," : "", cx_models[i]);
    sg_buf_append_str(&b, "]}");
    char rid[37], hdr[MOCK_HDRS_MAX];
    mock_sf_request_id(rid);
    snprintf(hdr, sizeof(hdr), "X-Snowflake-Request-ID: %s\r\n", rid);
    sg_http_respond(req, 200, "application/json", b.data, b.len,
                    mock_headers(app, hdr, hdr, sizeof(hdr)));
    sg_buf_dispose(&b);
}

static int cx_method_is(const sg_http_req_t *req, const char *m)
{
    return req->method_str && strcmp(req->method_str, m) == 0;
}

int mock_cortex_route(mock_app_t *app, sg_http_req_t *req)
{
    const char *p = req->path;
    if (strncmp(p, "/api/v2/", 8) != 0) return 0;
    const char *want = NULL;
    if (strcmp(p, "/api/v2/cortex/inference:complete") == 0 ||
        strcmp(p, "/api/v2/cortex/inference/complete") == 0 ||
        strcasecmp(p, "/api/v2/cortex/inference%3Acomplete") == 0) {
        want = "POST";
        if (cx_method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_cortex, cx_parse);
            return 1;
        }
    } else if (strcmp(p, "/api/v2/cortex/v1/chat/completions") == 0) {
        want = "POST";
        if (cx_method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_sf_openai, cx_oai_parse);
            return 1;
        }
    } else if (strcmp(p, "/api/v2/cortex/v1/messages") == 0) {
        want = "POST";
        if (cx_method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_messages, mock_messages_parse);
            return 1;
        }
    } else if (strcmp(p, "/api/v2/cortex/inference:embed") == 0 ||
               strcasecmp(p, "/api/v2/cortex/inference%3Aembed") == 0) {
        want = "POST";
        if (cx_method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_embed_cortex, mock_embed_cortex_parse);
            return 1;
        }
    } else if (strcmp(p, "/api/v2/cortex/models") == 0) {
        want = "GET";
        if (cx_method_is(req, want)) {
            cx_handle_models(app, req);
            return 1;
        }
    }
    char msg[160];
    if (want) {
        snprintf(msg, sizeof(msg), "method %.16s not allowed on %.64s (use %s)", req->method_str, p,
                 want);
        mock_sf_respond_error(app, req, 405, NULL, msg, NULL);
    } else {
        snprintf(msg, sizeof(msg), "no route for %.64s", p);
        mock_sf_respond_error(app, req, 404, NULL, msg, NULL);
    }
    return 1;
}
