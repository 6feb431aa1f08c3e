/* POST /v1/messages: Anthropic's Messages API, for the Anthropic SDKs and the tools built on
 * them. Two ways through:
 * - as it is: when every candidate route's model takes a Messages request unchanged (Claude
 *   models on Snowflake Cortex, whose /api/v2/cortex/v1/messages speaks this API), the
 *   client's request goes to the upstream with only the model name changed, and the answer
 *   (the message object, or its event stream) comes back as the upstream sent it, the model
 *   named as the client asked for it;
 * - translated: otherwise the request becomes a chat request for the completion pipeline
 *   (system, text and image blocks, tool_use and tool_result blocks, tools, tool_choice,
 *   max_tokens, temperature, top_p, stop_sequences, output_config.format), and its answer a message
 * object or the Messages event sequence (message_start, content_block_start, content_block_delta,
 *   content_block_stop, message_delta, message_stop).
 * Errors have Anthropic's shape ({"type":"error","error":{"type","message"}}). The client's
 * x-api-key is not forwarded: the gateway authenticates to the upstream itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/api.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/route.h"

#define GET(o, k) cJSON_GetObjectItemCaseSensitive((o), (k))
#define EVENT_MAX (8 * 1024 * 1024)
#define TEXT_MAX (64 * 1024 * 1024)

enum { BLOCK_NONE, BLOCK_TEXT, BLOCK_TOOL };

typedef struct msgs {
    sg_api_t a; /* first */
    cJSON *req; /* the client's request (a->body is what the pipeline gets) */
    int native; /* forwarded as it is */
    int stream;
    char id[48]; /* msg_… (translated answers) */
    long est_prompt_tokens;
    long content_chunks;
    /* translated streaming */
    int started; /* message_start sent */
    int block;   /* BLOCK_*: the open content block */
    int n_blocks;
    char finish[32];
    sg_buf_t ev;
} msgs_t;

static void msgs_free(sg_api_t *a)
{
    msgs_t *m = (msgs_t *)a;
    cJSON_Delete(m->req);
    sg_buf_dispose(&m->ev);
    free(m);
}

static void msgs_settle(sg_api_t *a)
{
    msgs_t *m = (msgs_t *)a;
    if (a->rec.usage.known) return;
    a->rec.usage.prompt_tokens = m->est_prompt_tokens;
    a->rec.usage.completion_tokens = m->content_chunks;
}

static void error_json(cJSON *o, const sg_error_t *e)
{
    cJSON_AddStringToObject(o, "type", "error");
    cJSON *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "type", sg_anthropic_error_type(e->status));
    cJSON_AddStringToObject(err, "message", e->message);
}

static void msgs_error_body(const sg_api_t *a, const sg_error_t *e, sg_buf_t *out)
{
    cJSON *o = cJSON_CreateObject();
    error_json(o, e);
    cJSON_AddStringToObject(o, "request_id", a->rec.request_id);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    SG_ASSERT(s != NULL);
    sg_buf_append_str(out, s);
    free(s);
}

/* ---- request translation ------------------------------------------------------------------ */

static int bad(sg_error_t *e, const char *fmt, const char *arg)
{
    sg_error_set(e, 400, "invalid_request_error", "invalid_value", fmt, arg);
    return -1;
}

/* The text of a string or a list of text blocks (other blocks refused), joined by newlines. */
static int block_text(const cJSON *content, const char *what, sg_buf_t *out, sg_error_t *e)
{
    if (cJSON_IsString(content)) {
        sg_buf_append_str(out, content->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(content)) return bad(e, "%s must be a string or a list of blocks", what);
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *type = GET(b, "type"), *text = GET(b, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return bad(e, "%s may only hold text blocks here", what);
        if (out->len) sg_buf_append(out, "\n", 1);
        sg_buf_append_str(out, text->valuestring);
    }
    return 0;
}

/* An image block → a chat image_url part. */
static cJSON *image_part(const cJSON *b, sg_error_t *e)
{
    const cJSON *src = GET(b, "source");
    const cJSON *type = GET(src, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    sg_buf_t url;
    sg_buf_init(&url, TEXT_MAX);
    if (strcmp(t, "base64") == 0) {
        const cJSON *mt = GET(src, "media_type"), *data = GET(src, "data");
        if (!cJSON_IsString(mt) || !cJSON_IsString(data)) {
            sg_buf_dispose(&url);
            bad(e, "a base64 image needs media_type and data%s", "");
            return NULL;
        }
        sg_buf_printf(&url, "data:%s;base64,", mt->valuestring);
        sg_buf_append_str(&url, data->valuestring);
    } else if (strcmp(t, "url") == 0 && cJSON_IsString(GET(src, "url"))) {
        sg_buf_append_str(&url, GET(src, "url")->valuestring);
    } else {
        sg_buf_dispose(&url);
        bad(e, "image sources of type '%s' are not supported (base64 or url)", t);
        return NULL;
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "image_url");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(p, "image_url"), "url", url.data);
    sg_buf_dispose(&url);
    return p;
}

/* A user message: tool_result blocks become tool messages (first, as chat wants them right
 * after the assistant's calls), the rest one user message. */
static int user_message(const cJSON *content, cJSON *msgs, sg_error_t *e)
{
    if (cJSON_IsString(content)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", content->valuestring);
        cJSON_AddItemToArray(msgs, m);
        return 0;
    }
    if (!cJSON_IsArray(content)) return bad(e, "message content must be a string or blocks%s", "");
    cJSON *parts = cJSON_CreateArray();
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *type = GET(b, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "?";
        if (strcmp(t, "text") == 0) {
            const cJSON *text = GET(b, "text");
            if (!cJSON_IsString(text)) goto bad_block;
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "type", "text");
            cJSON_AddStringToObject(p, "text", text->valuestring);
            cJSON_AddItemToArray(parts, p);
        } else if (strcmp(t, "image") == 0) {
            cJSON *p = image_part(b, e);
            if (!p) goto fail;
            cJSON_AddItemToArray(parts, p);
        } else if (strcmp(t, "tool_result") == 0) {
            const cJSON *id = GET(b, "tool_use_id");
            if (!cJSON_IsString(id)) goto bad_block;
            sg_buf_t text;
            sg_buf_init(&text, TEXT_MAX);
            const cJSON *c = GET(b, "content");
            if (c && block_text(c, "tool_result content", &text, e) != 0) {
                sg_buf_dispose(&text);
                goto fail;
            }
            if (cJSON_IsTrue(GET(b, "is_error"))) {
                sg_buf_t t2;
                sg_buf_init(&t2, TEXT_MAX);
                sg_buf_printf(&t2, "Error: %s", text.data ? text.data : "");
                sg_buf_dispose(&text);
                text = t2;
            }
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id", id->valuestring);
            cJSON_AddStringToObject(m, "content", text.data ? text.data : "");
            sg_buf_dispose(&text);
            cJSON_AddItemToArray(msgs, m);
        } else {
            bad(e, "content blocks of type '%s' are not supported for this model", t);
            goto fail;
        }
    }
    if (parts->child) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        if (!parts->child->next && strcmp(GET(parts->child, "type")->valuestring, "text") == 0) {
            cJSON_AddStringToObject(m, "content", GET(parts->child, "text")->valuestring);
            cJSON_Delete(parts);
        } else {
            cJSON_AddItemToObject(m, "content", parts);
        }
        cJSON_AddItemToArray(msgs, m);
    } else {
        cJSON_Delete(parts);
    }
    return 0;
bad_block:
    bad(e, "a user content block is missing its fields%s", "");
fail:
    cJSON_Delete(parts);
    return -1;
}

/* An assistant message: text (joined) and tool_use blocks as tool_calls; thinking dropped. */
static int assistant_message(const cJSON *content, cJSON *msgs, sg_error_t *e)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    if (cJSON_IsString(content)) {
        cJSON_AddStringToObject(m, "content", content->valuestring);
        cJSON_AddItemToArray(msgs, m);
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(m);
        return bad(e, "message content must be a string or blocks%s", "");
    }
    sg_buf_t text;
    sg_buf_init(&text, TEXT_MAX);
    cJSON *calls = NULL;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *type = GET(b, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "?";
        if (strcmp(t, "text") == 0 && cJSON_IsString(GET(b, "text"))) {
            sg_buf_append_str(&text, GET(b, "text")->valuestring);
        } else if (strcmp(t, "tool_use") == 0) {
            const cJSON *id = GET(b, "id"), *name = GET(b, "name"), *input = GET(b, "input");
            if (!cJSON_IsString(id) || !cJSON_IsString(name)) {
                bad(e, "a tool_use block needs id and name%s", "");
                goto fail;
            }
            if (!calls) calls = cJSON_CreateArray();
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddStringToObject(tc, "id", id->valuestring);
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", name->valuestring);
            char *args = input ? cJSON_PrintUnformatted(input) : NULL;
            cJSON_AddStringToObject(fn, "arguments", args ? args : "{}");
            free(args);
            cJSON_AddItemToArray(calls, tc);
        } else if (strcmp(t, "thinking") != 0 && strcmp(t, "redacted_thinking") != 0) {
            bad(e, "assistant content blocks of type '%s' are not supported for this model", t);
            goto fail;
        }
    }
    if (text.len)
        cJSON_AddStringToObject(m, "content", text.data);
    else if (calls)
        cJSON_AddNullToObject(m, "content");
    else
        cJSON_AddStringToObject(m, "content", "");
    if (calls) cJSON_AddItemToObject(m, "tool_calls", calls);
    sg_buf_dispose(&text);
    cJSON_AddItemToArray(msgs, m);
    return 0;
fail:
    sg_buf_dispose(&text);
    cJSON_Delete(calls);
    cJSON_Delete(m);
    return -1;
}

static int translate_tools(const cJSON *tools, cJSON *chat, sg_error_t *e)
{
    if (!tools || cJSON_IsNull(tools)) return 0;
    if (!cJSON_IsArray(tools)) return bad(e, "'tools' must be a list%s", "");
    cJSON *out = cJSON_AddArrayToObject(chat, "tools");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *type = GET(t, "type"), *name = GET(t, "name");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "custom") != 0)
            return bad(e,
                       "the server tool '%s' is not available for this model (custom tools "
                       "with an input_schema only)",
                       type->valuestring);
        if (!cJSON_IsString(name)) return bad(e, "a tool needs a name%s", "");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        const cJSON *d = GET(t, "description"), *schema = GET(t, "input_schema");
        if (cJSON_IsString(d)) cJSON_AddStringToObject(fn, "description", d->valuestring);
        if (cJSON_IsObject(schema))
            cJSON_AddItemToObject(fn, "parameters", cJSON_Duplicate(schema, 1));
        cJSON_AddItemToArray(out, o);
    }
    return 0;
}

static int translate_tool_choice(const cJSON *tc, cJSON *chat, sg_error_t *e)
{
    if (!tc || cJSON_IsNull(tc)) return 0;
    const cJSON *type = GET(tc, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "?";
    if (cJSON_IsTrue(GET(tc, "disable_parallel_tool_use")))
        cJSON_AddFalseToObject(chat, "parallel_tool_calls");
    if (strcmp(t, "auto") == 0 || strcmp(t, "none") == 0) {
        cJSON_AddStringToObject(chat, "tool_choice", t);
    } else if (strcmp(t, "any") == 0) {
        cJSON_AddStringToObject(chat, "tool_choice", "required");
    } else if (strcmp(t, "tool") == 0 && cJSON_IsString(GET(tc, "name"))) {
        cJSON *o = cJSON_AddObjectToObject(chat, "tool_choice");
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name",
                                GET(tc, "name")->valuestring);
    } else {
        return bad(e, "tool_choice type '%s' is not supported (auto, any, tool, none)", t);
    }
    return 0;
}

/* The chat request for a Messages request, or NULL with e. */
static cJSON *to_chat(const cJSON *req, int stream, sg_error_t *e)
{
    cJSON *chat = cJSON_CreateObject();
    cJSON_AddStringToObject(chat, "model", GET(req, "model")->valuestring);
    cJSON *msgs = cJSON_AddArrayToObject(chat, "messages");
    const cJSON *system = GET(req, "system");
    if (system && !cJSON_IsNull(system)) {
        sg_buf_t text;
        sg_buf_init(&text, TEXT_MAX);
        int r = block_text(system, "'system'", &text, e);
        if (r == 0 && text.len) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "system");
            cJSON_AddStringToObject(m, "content", text.data);
            cJSON_AddItemToArray(msgs, m);
        }
        sg_buf_dispose(&text);
        if (r != 0) goto fail;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, GET(req, "messages"))
    {
        const cJSON *role = GET(m, "role");
        const char *r = cJSON_IsString(role) ? role->valuestring : "?";
        int rc;
        if (strcmp(r, "user") == 0)
            rc = user_message(GET(m, "content"), msgs, e);
        else if (strcmp(r, "assistant") == 0)
            rc = assistant_message(GET(m, "content"), msgs, e);
        else
            rc = bad(e, "message role '%s' is not supported (user or assistant)", r);
        if (rc != 0) goto fail;
    }
    cJSON_AddItemToObject(chat, "max_tokens", cJSON_Duplicate(GET(req, "max_tokens"), 1));
    static const char *const nums[] = {"temperature", "top_p"};
    for (size_t i = 0; i < SG_ARRAY_LEN(nums); i++) {
        const cJSON *v = GET(req, nums[i]);
        if (cJSON_IsNumber(v)) cJSON_AddNumberToObject(chat, nums[i], v->valuedouble);
    }
    const cJSON *stop = GET(req, "stop_sequences");
    if (cJSON_IsArray(stop) && stop->child)
        cJSON_AddItemToObject(chat, "stop", cJSON_Duplicate(stop, 1));
    /* Structured output: output_config.format (or the beta's output_format). */
    const cJSON *fmt = GET(GET(req, "output_config"), "format");
    if (!fmt) fmt = GET(req, "output_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        const cJSON *ft = GET(fmt, "type"), *schema = GET(fmt, "schema");
        if (!cJSON_IsString(ft) || strcmp(ft->valuestring, "json_schema") ||
            !cJSON_IsObject(schema)) {
            bad(e, "output format must be {\"type\":\"json_schema\",\"schema\":{…}}%s", "");
            goto fail;
        }
        cJSON *rf = cJSON_AddObjectToObject(chat, "response_format");
        cJSON_AddStringToObject(rf, "type", "json_schema");
        cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
        cJSON_AddStringToObject(js, "name", "response");
        cJSON_AddItemToObject(js, "schema", cJSON_Duplicate(schema, 1));
    }
    if (translate_tools(GET(req, "tools"), chat, e) != 0 ||
        translate_tool_choice(GET(req, "tool_choice"), chat, e) != 0)
        goto fail;
    if (stream) {
        cJSON_AddTrueToObject(chat, "stream");
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(chat, "stream_options"), "include_usage");
    }
    const cJSON *s = GET(req, "sophia");
    if (s) cJSON_AddItemToObject(chat, "sophia", cJSON_Duplicate(s, 1));
    return chat;
fail:
    cJSON_Delete(chat);
    return NULL;
}

/* What every Messages request needs, whichever way it goes. */
static int check_request(const cJSON *req, sg_error_t *e)
{
    const cJSON *model = GET(req, "model"), *mt = GET(req, "max_tokens"),
                *msgs = GET(req, "messages"), *stream = GET(req, "stream");
    long long n;
    if (!cJSON_IsString(model) || !model->valuestring[0])
        return bad(e, "model: Field required%s", "");
    if (!mt) return bad(e, "max_tokens: Field required%s", "");
    if (sg_json_count(mt, 1e9, &n) != 0 || n < 1)
        return bad(e, "max_tokens: must be a whole number of at least 1%s", "");
    if (!cJSON_IsArray(msgs) || !msgs->child)
        return bad(e, "messages: must be a non-empty list%s", "");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream))
        return bad(e, "stream: must be a boolean%s", "");
    return 0;
}

/* 1 when every candidate takes the request as it is. */
static int plan_native(const sg_plan_t *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const sg_provider_vt_t *vt = sg_provider_find(plan->routes[i].provider->kind);
        if (!vt || !vt->messages_native || !vt->messages_native(&plan->routes[i])) return 0;
    }
    return plan->n > 0;
}

/* ---- answers ------------------------------------------------------------------------------ */

static const char *public_model(msgs_t *m)
{
    const sg_route_t *r = m->a.pipe ? sg_pipeline_route(m->a.pipe) : NULL;
    return r ? r->public_name : m->a.rec.route;
}

static const char *stop_reason(const char *finish)
{
    if (strcmp(finish, "length") == 0) return "max_tokens";
    if (strcmp(finish, "tool_calls") == 0) return "tool_use";
    if (strcmp(finish, "content_filter") == 0) return "refusal";
    return "end_turn";
}

static cJSON *usage_json(const sg_usage_t *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", (double)u->completion_tokens);
    return o;
}

/* A tool call's arguments as the input object (an object even when they are not one). */
static cJSON *tool_input(const char *args)
{
    cJSON *in = args ? cJSON_Parse(args) : NULL;
    if (cJSON_IsObject(in)) return in;
    cJSON_Delete(in);
    return cJSON_CreateObject();
}

static int emit(msgs_t *m, const char *type, cJSON *data)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    for (cJSON *it = data ? data->child : NULL; it;) {
        cJSON *next = it->next;
        cJSON_AddItemToObject(o, it->string, cJSON_DetachItemViaPointer(data, it));
        it = next;
    }
    cJSON_Delete(data);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    SG_ASSERT(s != NULL);
    int rc = sg_api_stream_event(&m->a, &m->ev, type, s);
    free(s);
    return rc;
}

static cJSON *message_json(msgs_t *m, cJSON *content, const char *stop, const sg_usage_t *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    cJSON_AddStringToObject(o, "model", public_model(m));
    cJSON_AddItemToObject(o, "content", content);
    if (stop)
        cJSON_AddStringToObject(o, "stop_reason", stop);
    else
        cJSON_AddNullToObject(o, "stop_reason");
    cJSON_AddNullToObject(o, "stop_sequence");
    cJSON_AddItemToObject(o, "usage", usage_json(u));
    return o;
}

static int start_message(msgs_t *m)
{
    if (m->started) return 0;
    m->started = 1;
    sg_usage_t u = {.prompt_tokens = m->est_prompt_tokens};
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "message", message_json(m, cJSON_CreateArray(), NULL, &u));
    return emit(m, "message_start", d);
}

static int close_block(msgs_t *m)
{
    if (m->block == BLOCK_NONE) return 0;
    m->block = BLOCK_NONE;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "index", m->n_blocks - 1);
    return emit(m, "content_block_stop", d);
}

static int open_block(msgs_t *m, int kind, cJSON *block)
{
    if (close_block(m) != 0) {
        cJSON_Delete(block);
        return -1;
    }
    m->block = kind;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "index", m->n_blocks++);
    cJSON_AddItemToObject(d, "content_block", block);
    return emit(m, "content_block_start", d);
}

static int delta(msgs_t *m, const char *dtype, const char *key, const char *value)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "index", m->n_blocks - 1);
    cJSON *dd = cJSON_AddObjectToObject(d, "delta");
    cJSON_AddStringToObject(dd, "type", dtype);
    cJSON_AddStringToObject(dd, key, value);
    return emit(m, "content_block_delta", d);
}

static int text_delta(void *ud, const char *text)
{
    msgs_t *m = ud;
    if (m->block != BLOCK_TEXT) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", "");
        if (open_block(m, BLOCK_TEXT, b) != 0) return -1;
    }
    return delta(m, "text_delta", "text", text);
}

static int tool_delta(void *ud, const cJSON *tc)
{
    msgs_t *m = ud;
    const cJSON *id = GET(tc, "id"), *fn = GET(tc, "function");
    const cJSON *name = GET(fn, "name"), *args = GET(fn, "arguments");
    if (cJSON_IsString(id) && id->valuestring[0]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", id->valuestring);
        cJSON_AddStringToObject(b, "name", cJSON_IsString(name) ? name->valuestring : "");
        cJSON_AddObjectToObject(b, "input");
        if (open_block(m, BLOCK_TOOL, b) != 0) return -1;
    }
    if (m->block != BLOCK_TOOL || !cJSON_IsString(args) || !args->valuestring[0]) return 0;
    return delta(m, "input_json_delta", "partial_json", args->valuestring);
}

/* Translated streaming: chat chunks → Messages events. */
static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t len)
{
    SG_UNUSED(raw);
    SG_UNUSED(len);
    msgs_t *m = ud;
    if (!m->a.req || start_message(m) != 0) return 1;
    static const sg_chunk_visitor_t v = {text_delta, tool_delta};
    return sg_api_chunk_each(&m->a, chunk, &v, m, m->finish, sizeof(m->finish), &m->content_chunks);
}

/* Forwarded streaming: each event as the upstream sent it; message_start names the model as
 * the client asked for it. */
static int sink_raw(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    SG_UNUSED(has_finish);
    msgs_t *m = ud;
    if (!m->a.req) return 1;
    if (has_content) {
        m->content_chunks++;
        if (!m->a.rec.ttft_ns) m->a.rec.ttft_ns = sg_now_ns();
    }
    static const char start[] = "event: message_start\ndata: ";
    if (len > sizeof(start) && memcmp(raw, start, sizeof(start) - 1) == 0) {
        cJSON *j = cJSON_ParseWithLength(raw + sizeof(start) - 1, len - (sizeof(start) - 1));
        cJSON *msg = GET(j, "message");
        if (cJSON_IsObject(msg)) {
            cJSON_DeleteItemFromObjectCaseSensitive(msg, "model");
            cJSON_AddStringToObject(msg, "model", public_model(m));
            char *s = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            SG_ASSERT(s != NULL);
            int rc = sg_api_stream_event(&m->a, &m->ev, "message_start", s);
            free(s);
            return rc != 0;
        }
        cJSON_Delete(j);
    }
    return sg_api_stream_write(&m->a, raw, len) != 0;
}

/* A whole translated answer: the chat.completion as a message object. */
static cJSON *message_from_completion(msgs_t *m, const cJSON *completion)
{
    const cJSON *ch = cJSON_GetArrayItem(GET(completion, "choices"), 0);
    const cJSON *msg = GET(ch, "message");
    const cJSON *content = GET(msg, "content"), *fr = GET(ch, "finish_reason");
    if (cJSON_IsString(fr)) sg_strlcpy(m->finish, sizeof(m->finish), fr->valuestring);
    cJSON *blocks = cJSON_CreateArray();
    if (cJSON_IsString(content) && content->valuestring[0]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", content->valuestring);
        cJSON_AddItemToArray(blocks, b);
        m->content_chunks += (long)strlen(content->valuestring) / 4;
    }
    const cJSON *tc;
    cJSON_ArrayForEach(tc, GET(msg, "tool_calls"))
    {
        const cJSON *fn = GET(tc, "function");
        const cJSON *id = GET(tc, "id"), *name = GET(fn, "name"), *args = GET(fn, "arguments");
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", cJSON_IsString(id) ? id->valuestring : m->id);
        cJSON_AddStringToObject(b, "name", cJSON_IsString(name) ? name->valuestring : "");
        cJSON_AddItemToObject(b, "input",
                              tool_input(cJSON_IsString(args) ? args->valuestring : NULL));
        cJSON_AddItemToArray(blocks, b);
    }
    msgs_settle(&m->a);
    return message_json(m, blocks, stop_reason(m->finish), &m->a.rec.usage);
}

static void sink_done(void *ud, cJSON *resp, const char *body, size_t len)
{
    SG_UNUSED(body);
    SG_UNUSED(len);
    msgs_t *m = ud;
    m->a.rec.ttft_ns = m->a.rec.ttft_ns ? m->a.rec.ttft_ns : sg_now_ns();
    if (!m->stream) {
        cJSON *o;
        if (m->native) {
            o = cJSON_Duplicate(resp, 1);
            cJSON_DeleteItemFromObjectCaseSensitive(o, "model");
            cJSON_AddStringToObject(o, "model", public_model(m));
        } else {
            o = message_from_completion(m, resp);
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        SG_ASSERT(s != NULL);
        sg_api_respond_json(&m->a, s, strlen(s));
        free(s);
    } else if (m->native) {
        sg_api_stream_end(&m->a);
    } else if (start_message(m) == 0 && close_block(m) == 0) {
        msgs_settle(&m->a);
        cJSON *d = cJSON_CreateObject();
        cJSON *dd = cJSON_AddObjectToObject(d, "delta");
        cJSON_AddStringToObject(dd, "stop_reason", stop_reason(m->finish));
        cJSON_AddNullToObject(dd, "stop_sequence");
        cJSON *u = usage_json(&m->a.rec.usage);
        sg_api_usage_cost(&m->a, u);
        cJSON_AddItemToObject(d, "usage", u);
        if (emit(m, "message_delta", d) == 0 && emit(m, "message_stop", NULL) == 0)
            sg_api_stream_end(&m->a);
    }
    sg_api_finish(&m->a, "ok");
}

/* After the stream began, an error is an "error" event (Anthropic's SDKs raise it). */
static void fail_stream(sg_api_t *a, const sg_error_t *e)
{
    msgs_t *m = (msgs_t *)a;
    cJSON *o = cJSON_CreateObject();
    error_json(o, e);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    SG_ASSERT(s != NULL);
    if (sg_api_stream_event(&m->a, &m->ev, "error", s) == 0) sg_api_stream_end(&m->a);
    free(s);
}

static const sg_api_ops_t msgs_ops = {msgs_free, NULL, msgs_settle, msgs_error_body, fail_stream};

void sg_messages_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    msgs_t *m = sg_xcalloc(1, sizeof(*m));
    sg_api_t *a = &m->a;
    sg_api_init(a, &msgs_ops, gw, req, "/v1/messages");
    sg_buf_init(&m->ev, EVENT_MAX);
    char rid[33];
    sg_request_id_new(rid);
    snprintf(m->id, sizeof(m->id), "msg_%s", rid);
    sg_error_t e, te;
    sg_hints_t hints;
    sg_plan_t plan; /* copied by the pipeline */
    cJSON *chat = NULL;

    m->req = sg_api_parse(req, &e);
    if (!m->req || check_request(m->req, &e) != 0) goto fail;
    m->stream = cJSON_IsTrue(GET(m->req, "stream"));
    a->rec.stream = m->stream;
    const char *model = GET(m->req, "model")->valuestring;
    sg_strlcpy(a->rec.model, sizeof(a->rec.model), model);
    m->est_prompt_tokens = sg_api_estimate_messages(GET(m->req, "messages"));
    m->a.rec.ticket.prompt_est = m->est_prompt_tokens;
    /* Routing reads a chat request; when the translation fails, the model alone decides
     * (a request for a model that takes it as it is needs no translation). */
    chat = to_chat(m->req, m->stream, &te);
    cJSON *route_body = chat;
    if (!route_body) {
        route_body = cJSON_CreateObject();
        cJSON_AddStringToObject(route_body, "model", model);
        cJSON_AddArrayToObject(route_body, "messages");
    }
    int hr = sg_hints_read(sg_http_req_header(req, "x-sophia-provider"), route_body, &hints, &e);
    int pr = hr == 0 ? sg_route_plan(a->gen, model, &hints, route_body, &plan, &e) : -1;
    if (!chat) cJSON_Delete(route_body);
    if (pr != 0) goto fail;
    if (plan.routes[0].model->caps & SG_CAP_EMBED) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_value",
                     "'%s' is an embedding model: use POST /v1/embeddings",
                     plan.routes[0].public_name);
        goto fail;
    }
    m->native = plan_native(&plan);
    if (m->native) {
        a->body = m->req;
        m->req = NULL;
        cJSON_Delete(chat);
    } else if (!chat) {
        e = te;
        goto fail;
    } else {
        a->body = chat;
    }
    chat = NULL;
    sg_record_route(&a->rec, &plan.routes[0]);
    sg_pipeline_sink_t sink = {
        sink_chunk, sink_raw, sg_api_sink_usage, sink_done, sg_api_sink_fail, sg_api_sink_congested,
        m,          0};
    if (!m->native) sink.raw_chunk = NULL;
    a->pipe = sg_pipeline_start(gw, a->gen, &plan, m->native ? SG_OP_MESSAGES : SG_OP_CHAT, a->body,
                                m->stream, &a->rec, &sink, &e);
    if (!a->pipe) goto fail;
    sg_api_watch(a);
    return;
fail:
    cJSON_Delete(chat);
    sg_api_respond_error(a, &e, NULL);
    sg_api_finish(a, "rejected");
}
