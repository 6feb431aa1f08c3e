/* mockllm, Cortex's Anthropic Messages endpoint: POST /api/v2/cortex/v1/messages (Claude
 * models, Snowflake bearer auth). Snowflake's specification leaves the bodies open
 * (cortex-generic-anthropic.yaml: "additionalProperties: true"), so request, reply, stream
 * events and errors follow Anthropic's published Messages API:
 *   reply   {"id":"msg_…","type":"message","role":"assistant","model","content":[blocks],
 *            "stop_reason","stop_sequence":null,"usage":{"input_tokens","output_tokens"}}
 *   stream  message_start, content_block_start, ping, content_block_delta…,
 *           content_block_stop, message_delta, message_stop (each "event: NAME" + data)
 *   errors  {"type":"error","error":{"type","message"},"request_id"}
 * Scheduling, directives and statistics are the shared ones (mockllm.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/http.h"
#include "sophia/log.h"

#define MSG_TOOL_ID "toolu_mock_1"

/* ---- errors ------------------------------------------------------------------------------ */

/* Anthropic's error type for an HTTP status. */
static const char *msg_error_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* {"type":"error","error":{"type","message"},"request_id"} with X-Snowflake-Request-ID (the
 * same id), the instance header and extra. code is not part of Anthropic's shape. */
static void msg_respond_error(const mock_app_t *app, sg_http_req_t *req, int status,
                              const char *code, const char *message, const char *extra)
{
    SG_UNUSED(code);
    char rid[37], msgbuf[96];
    mock_sf_request_id(rid);
    if (!message) {
        if (status == 401)
            snprintf(msgbuf, sizeof(msgbuf), "JWT token is invalid. [%s]", rid);
        else
            snprintf(msgbuf, sizeof(msgbuf), "mock failure %d", status);
        message = msgbuf;
    }
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    sg_buf_printf(
        &b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", msg_error_type(status));
    sg_json_escape_append(&b, message, strlen(message));
    sg_buf_printf(&b, "},\"request_id\":\"%s\"}", rid);
    char hdr[MOCK_HDRS_MAX];
    snprintf(hdr, sizeof(hdr), "X-Snowflake-Request-ID: %s\r\n%s", rid, extra ? extra : "");
    sg_http_respond(req, status, "application/json", b.data, b.len,
                    mock_headers(app, hdr, hdr, sizeof(hdr)));
    sg_buf_dispose(&b);
}

/* ---- wire format ------------------------------------------------------------------------- */

static const char *msg_stop_reason(const mock_job_t *j)
{
    if (j->prohibited) return "refusal";
    if (j->tool) return "tool_use";
    return j->finish_length ? "max_tokens" : "end_turn";
}

/* Index of the tool_use block: after the text block when there is text. */
static unsigned msg_tool_index(const mock_job_t *j)
{
    return j->n_tokens ? 1 : 0;
}

static void msg_stream_open(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                    "{\"id\":\"msg_mock_%" PRIu64 "\",\"type\":\"message\",\"role\":"
                    "\"assistant\",\"model\":%s,\"content\":[],\"stop_reason\":null,"
                    "\"stop_sequence\":null",
                    j->id, mock_job_model(j));
    if (j->want_usage)
        mock_out_printf(o, ",\"usage\":{\"input_tokens\":%" PRIu32 ",\"output_tokens\":1}",
                        j->prompt_tokens);
    mock_out_printf(o, "}}\n\n");
    if (j->n_tokens)
        mock_out_printf(o, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                           "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    mock_out_printf(o, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

static void msg_stream_token(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    if (i < j->n_tokens) {
        int n;
        const char *t = mock_job_piece(j, i, &n);
        mock_out_printf(o,
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"%.*s\"}}\n\n",
                        n, t);
    } else if (i == j->n_tokens) {
        if (j->n_tokens)
            mock_out_printf(o, "event: content_block_stop\ndata: {\"type\":"
                               "\"content_block_stop\",\"index\":0}\n\n");
        mock_out_printf(
            o,
            "event: content_block_start\ndata: {\"type\":\"content_block_start\","
            "\"index\":%u,\"content_block\":{\"type\":\"tool_use\",\"id\":\"" MSG_TOOL_ID
            "\",\"name\":%s,\"input\":{}}}\n\n",
            msg_tool_index(j), mock_job_tool(j));
    } else {
        mock_out_printf(o,
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%u,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                        "\"%s\"}}\n\n",
                        msg_tool_index(j), mock_tool_frag_json(i - j->n_tokens - 1));
    }
}

static void msg_stream_close(const mock_job_t *j, mock_out_t *o)
{
    if (j->n_items)
        mock_out_printf(o,
                        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                        "\"index\":%u}\n\n",
                        j->tool ? msg_tool_index(j) : 0);
    mock_out_printf(o,
                    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                    "{\"stop_reason\":\"%s\",\"stop_sequence\":null}",
                    msg_stop_reason(j));
    if (j->want_usage) mock_out_printf(o, ",\"usage\":{\"output_tokens\":%" PRIu32 "}", j->n_items);
    mock_out_printf(o, "}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

/* Anthropic's error event in the middle of a stream; the stream then ends. */
static void msg_stream_error(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                    "\"message\":\"mock mid-stream error after %" PRIu32 " tokens\"}}\n\n",
                    j->next);
}

static void msg_respond(mock_job_t *j)
{
    sg_buf_t b;
    sg_buf_init(&b, (size_t)j->n_tokens * 10 + j->text_len + 8192);
    sg_buf_printf(&b,
                  "{\"id\":\"msg_mock_%" PRIu64 "\",\"type\":\"message\",\"role\":\"assistant\","
                  "\"model\":%s,\"content\":[",
                  j->id, mock_job_model(j));
    if (j->n_tokens) {
        sg_buf_append_str(&b, "{\"type\":\"text\",\"text\":\"");
        mock_job_text_append(j, &b);
        sg_buf_append_str(&b, "\"}");
    }
    if (j->tool)
        sg_buf_printf(&b,
                      "%s{\"type\":\"tool_use\",\"id\":\"" MSG_TOOL_ID "\",\"name\":%s,"
                      "\"input\":" MOCK_TOOL_ARGS "}",
                      j->n_tokens ? "," : "", mock_job_tool(j));
    sg_buf_printf(&b, "],\"stop_reason\":\"%s\",\"stop_sequence\":null", msg_stop_reason(j));
    if (j->want_usage)
        sg_buf_printf(&b, ",\"usage\":{\"input_tokens\":%" PRIu32 ",\"output_tokens\":%" PRIu32 "}",
                      j->prompt_tokens, j->n_items);
    sg_buf_append_str(&b, "}");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(j->req, 200, "application/json", b.data, b.len,
                    mock_reply_headers(j, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

const mock_wire_t mock_wire_messages = {
    .name = "cortex-messages",
    .kind = MOCK_KIND_MESSAGES,
    .json_hint = "output_config {\"format\":{\"type\":\"json_schema\",\"schema\":{...}}} (or "
                 "the beta output_format {\"type\":\"json_schema\",\"schema\":{...}})",
    .stream_content_type = "text/event-stream",
    .stream_headers = "Cache-Control: no-cache\r\n",
    .snowflake = 1,
    .stream_open = msg_stream_open,
    .stream_token = msg_stream_token,
    .stream_close = msg_stream_close,
    .stream_error = msg_stream_error,
    .respond = msg_respond,
    .respond_error = msg_respond_error,
};

/* ---- request parsing --------------------------------------------------------------------- */

static const cJSON *msg_get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *msg_role(const cJSON *m)
{
    const cJSON *r = msg_get(m, "role");
    return cJSON_IsString(r) ? r->valuestring : "";
}

/* Is there a tool_use block with this id in message m? */
static int msg_has_tool_use(const cJSON *m, const char *id)
{
    const cJSON *b;
    cJSON_ArrayForEach(b, msg_get(m, "content"))
    {
        const cJSON *type = msg_get(b, "type"), *bid = msg_get(b, "id");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "tool_use") == 0 &&
            cJSON_IsString(bid) && strcmp(bid->valuestring, id) == 0)
            return 1;
    }
    return 0;
}

/* Is there a tool_result block for this id in message m? */
static int msg_has_tool_result(const cJSON *m, const char *id)
{
    const cJSON *b;
    cJSON_ArrayForEach(b, msg_get(m, "content"))
    {
        const cJSON *type = msg_get(b, "type"), *bid = msg_get(b, "tool_use_id");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "tool_result") == 0 &&
            cJSON_IsString(bid) && strcmp(bid->valuestring, id) == 0)
            return 1;
    }
    return 0;
}

/* A tool_result's content: absent, a string, or an array of blocks with a string type (text
 * blocks with a string text). */
static int msg_result_content_ok(const cJSON *content)
{
    if (!content || cJSON_IsString(content)) return 1;
    if (!cJSON_IsArray(content)) return 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *type = msg_get(b, "type");
        if (!cJSON_IsString(type)) return 0;
        if (strcmp(type->valuestring, "text") == 0 && !cJSON_IsString(msg_get(b, "text"))) return 0;
    }
    return 1;
}

/* The blocks of messages[idx] (m; prev: the message before it or NULL); with results set, the
 * text of each tool_result is appended ("; " between them) and counted in *n_results. */
static int msg_check_blocks(const cJSON *m, const cJSON *prev, int idx, sg_buf_t *results,
                            int *n_results, char *err, size_t errlen)
{
    const char *role = msg_role(m);
    int k = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, msg_get(m, "content"))
    {
        const cJSON *type = msg_get(b, "type");
        if (!cJSON_IsObject(b) || !cJSON_IsString(type)) {
            snprintf(err, errlen, "messages.%d.content.%d.type: Field required", idx, k);
            return -1;
        }
        const char *t = type->valuestring;
        const char *bad = NULL;
        if (strcmp(t, "text") == 0) {
            if (!cJSON_IsString(msg_get(b, "text"))) bad = "text: Input should be a valid string";
        } else if (strcmp(t, "tool_use") == 0) {
            const cJSON *id = msg_get(b, "id");
            if (strcmp(role, "assistant") != 0)
                bad = "tool_use blocks are only allowed in assistant messages";
            else if (!cJSON_IsString(id) || !id->valuestring[0])
                bad = "id: Field required";
            else if (!cJSON_IsString(msg_get(b, "name")))
                bad = "name: Field required";
            else if (!cJSON_IsObject(msg_get(b, "input")))
                bad = "input: Input should be a valid dictionary";
        } else if (strcmp(t, "tool_result") == 0) {
            const cJSON *id = msg_get(b, "tool_use_id");
            const cJSON *is_error = msg_get(b, "is_error");
            if (strcmp(role, "user") != 0) {
                bad = "tool_result blocks are only allowed in user messages";
            } else if (!cJSON_IsString(id) || !id->valuestring[0]) {
                bad = "tool_use_id: Field required";
            } else if (!msg_result_content_ok(msg_get(b, "content"))) {
                bad = "content: Input should be a valid string or a list of content blocks";
            } else if (is_error && !cJSON_IsBool(is_error)) {
                bad = "is_error: Input should be a valid boolean";
            } else if (!prev || !msg_has_tool_use(prev, id->valuestring)) {
                snprintf(err, errlen,
                         "messages.%d.content.%d: unexpected `tool_use_id` found in "
                         "`tool_result` blocks: %.64s. Each `tool_result` block must have a "
                         "corresponding `tool_use` block in the previous message.",
                         idx, k, id->valuestring);
                return -1;
            } else if (results) {
                if ((*n_results)++) sg_buf_append(results, "; ", 2);
                mock_result_text_append(results, msg_get(b, "content"));
            }
        }
        if (bad) {
            snprintf(err, errlen, "messages.%d.content.%d.%s: %s", idx, k, t, bad);
            return -1;
        }
        k++;
    }
    return 0;
}

/* Every tool_use of messages[idx] (an assistant message that is not the last) needs its
 * tool_result in the next message. */
static int msg_check_answered(const cJSON *m, const cJSON *next, int idx, char *err, size_t errlen)
{
    const cJSON *b;
    cJSON_ArrayForEach(b, msg_get(m, "content"))
    {
        const cJSON *type = msg_get(b, "type"), *id = msg_get(b, "id");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "tool_use") != 0) continue;
        if (next && msg_has_tool_result(next, id->valuestring)) continue;
        snprintf(err, errlen,
                 "messages.%d: `tool_use` ids were found without `tool_result` blocks "
                 "immediately after: %.64s. Each `tool_use` block must have a corresponding "
                 "`tool_result` block in the next message.",
                 idx, id->valuestring);
        return -1;
    }
    return 0;
}

static int msg_check_messages(const cJSON *messages, mock_chat_t *c, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(messages), idx = 0;
    const cJSON *m, *prev = NULL;
    cJSON_ArrayForEach(m, messages)
    {
        if (!cJSON_IsObject(m)) {
            snprintf(err, errlen, "messages.%d: Input should be a valid dictionary", idx);
            return -1;
        }
        const char *role = msg_role(m);
        if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
            if (strcmp(role, "system") == 0)
                snprintf(err, errlen,
                         "messages.%d.role: Unexpected role \"system\". The Messages API "
                         "accepts a top-level `system` parameter, not \"system\" as an input "
                         "message role.",
                         idx);
            else
                snprintf(err, errlen, "messages.%d.role: Input should be 'user' or 'assistant'",
                         idx);
            return -1;
        }
        const cJSON *content = msg_get(m, "content");
        if (!cJSON_IsString(content) && !cJSON_IsArray(content)) {
            snprintf(err, errlen,
                     "messages.%d.content: Input should be a valid string or a list of "
                     "content blocks",
                     idx);
            return -1;
        }
        if (idx == n - 1) {
            sg_buf_t results;
            sg_buf_init(&results, MOCK_REPLY_MAX);
            int n_results = 0;
            int rc = msg_check_blocks(m, prev, idx, &results, &n_results, err, errlen);
            if (rc == 0 && n_results)
                mock_chat_tool_reply(c, results.data ? results.data : "", results.len);
            sg_buf_dispose(&results);
            if (rc != 0) return -1;
        } else if (msg_check_blocks(m, prev, idx, NULL, NULL, err, errlen) != 0 ||
                   (strcmp(role, "assistant") == 0 &&
                    msg_check_answered(m, m->next, idx, err, errlen) != 0)) {
            return -1;
        }
        prev = m;
        idx++;
    }
    return 0;
}

/* Words and directives of one system text. */
static int msg_system_text(const char *t, mock_chat_t *c, char *err, size_t errlen)
{
    size_t n = strlen(t);
    c->prompt_tokens += mock_count_words(t, n);
    return mock_directives_scan(&c->d, t, n, err, errlen);
}

/* system: a string or a list of text blocks; its words count as prompt tokens and its text
 * may carry directives. */
static int msg_system(const cJSON *root, mock_chat_t *c, char *err, size_t errlen)
{
    const cJSON *sys = msg_get(root, "system");
    if (!sys || cJSON_IsNull(sys)) return 0;
    if (cJSON_IsString(sys)) return msg_system_text(sys->valuestring, c, err, errlen);
    int ok = cJSON_IsArray(sys);
    const cJSON *blocks = ok ? sys : NULL, *b;
    cJSON_ArrayForEach(b, blocks)
    {
        const cJSON *type = msg_get(b, "type"), *text = msg_get(b, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text)) {
            ok = 0;
            break;
        }
        if (msg_system_text(text->valuestring, c, err, errlen) != 0) return -1;
    }
    if (ok) return 0;
    snprintf(err, errlen, "system: Input should be a valid string or a list of text blocks");
    return -1;
}

/* tools: each {name, input_schema (custom tools), ...}; the first one's name is tool=1's. */
static int msg_tools(const cJSON *root, mock_chat_t *c, char *err, size_t errlen)
{
    const cJSON *tools = msg_get(root, "tools");
    if (!tools || cJSON_IsNull(tools)) return 0;
    if (!cJSON_IsArray(tools)) {
        snprintf(err, errlen, "tools: Input should be a valid list");
        return -1;
    }
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *name = msg_get(t, "name"), *type = msg_get(t, "type");
        int custom = !type || (cJSON_IsString(type) && strcmp(type->valuestring, "custom") == 0);
        if (!cJSON_IsObject(t) || !cJSON_IsString(name) || !name->valuestring[0]) {
            snprintf(err, errlen, "tools.%d.name: Field required", k);
            return -1;
        }
        if (custom && !cJSON_IsObject(msg_get(t, "input_schema"))) {
            snprintf(err, errlen, "tools.%d.custom.input_schema: Field required", k);
            return -1;
        }
        if (k == 0) c->tool_name = name->valuestring;
        k++;
    }
    return 0;
}

/* Structured output: output_config.format (GA) or output_format (beta), each
 * {"type":"json_schema","schema":{...}}. */
static int msg_output_format(const cJSON *root, mock_chat_t *c, char *err, size_t errlen)
{
    const cJSON *fmt = msg_get(msg_get(root, "output_config"), "format");
    const char *where = "output_config.format";
    if (!fmt || cJSON_IsNull(fmt)) {
        fmt = msg_get(root, "output_format");
        where = "output_format";
    }
    if (!fmt || cJSON_IsNull(fmt)) return 0;
    const cJSON *type = msg_get(fmt, "type"), *schema = msg_get(fmt, "schema");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "json_schema") != 0 ||
        !cJSON_IsObject(schema)) {
        snprintf(err, errlen, "%s: Input should be {\"type\":\"json_schema\",\"schema\":{...}}",
                 where);
        return -1;
    }
    c->schema = schema;
    return 0;
}

int mock_messages_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                        size_t errlen)
{
    SG_UNUSED(app);
    const cJSON *model = msg_get(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        snprintf(err, errlen, "model: Field required");
        return -1;
    }
    c->model = model->valuestring;
    const cJSON *mt = msg_get(root, "max_tokens");
    if (!mt || cJSON_IsNull(mt)) {
        snprintf(err, errlen, "max_tokens: Field required");
        return -1;
    }
    if (!cJSON_IsNumber(mt) || mt->valuedouble != (double)(long long)mt->valuedouble) {
        snprintf(err, errlen, "max_tokens: Input should be a valid integer");
        return -1;
    }
    if (mt->valuedouble < 1) {
        snprintf(err, errlen, "max_tokens: Input should be greater than or equal to 1");
        return -1;
    }
    c->max_tokens = mt->valuedouble > 1e12 ? (long long)1e12 : (long long)mt->valuedouble;
    const cJSON *messages = msg_get(root, "messages");
    if (!cJSON_IsArray(messages)) {
        snprintf(err, errlen, "messages: Field required");
        return -1;
    }
    if (cJSON_GetArraySize(messages) == 0) {
        snprintf(err, errlen, "messages: at least one message is required");
        return -1;
    }
    const cJSON *stream = msg_get(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        snprintf(err, errlen, "stream: Input should be a valid boolean");
        return -1;
    }
    c->stream = cJSON_IsTrue(stream);
    c->include_usage = 1;
    if (msg_check_messages(messages, c, err, errlen) != 0 || msg_tools(root, c, err, errlen) != 0 ||
        msg_output_format(root, c, err, errlen) != 0)
        return -1;
    if (mock_scan_messages(messages, &c->d, &c->prompt_tokens, err, errlen) != 0) return -1;
    return msg_system(root, c, err, errlen);
}
