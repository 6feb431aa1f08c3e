/* Adapter for Snowflake Cortex REST (see docs/providers.md, "Snowflake Cortex").
 *
 * Two Snowflake endpoints, chosen per model (sg_model_cfg_t.api):
 * - "complete" (default): POST <host>/api/v2/cortex/inference:complete. The client's OpenAI
 *   request is translated into Cortex's own format (and refused with a 400 naming what cannot
 *   be translated); the Cortex stream (SSE without [DONE], three chunk shapes seen over time)
 *   is turned into OpenAI chat.completion.chunk objects, and the non-streaming answer into
 *   an OpenAI chat.completion.
 * - "openai": POST <host>/api/v2/cortex/v1/chat/completions, OpenAI-compatible: the body is
 *   forwarded (max_tokens renamed max_completion_tokens, which that endpoint requires) and the
 *   response decoded by the OpenAI-compatible adapter.
 *
 * Authentication is a bearer token from route->state (the provider's sg_sf_auth_t: PAT or
 * key-pair JWT). The role,
 * warehouse, database and schema of the provider are not part of a Cortex REST request:
 * there is no header or body field for them (a PAT's ROLE_RESTRICTION or the user's default
 * role decides), so none is sent. */
#include <math.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/provider.h"
#include "sophia/snowflake_auth.h"
#include "sophia/sse.h"

#define SSE_EVENT_MAX (4 * 1024 * 1024)
#define AGG_TEXT_MAX (64 * 1024 * 1024)

#define GET(obj, key) cJSON_GetObjectItemCaseSensitive((obj), (key))

static int is_openai_api(const sg_route_t *route)
{
    return route->model && route->model->api && strcmp(route->model->api, "openai") == 0;
}

static const char *upstream_model(const sg_route_t *route)
{
    return route->model->upstream_id ? route->model->upstream_id : route->model->id;
}

/* Sets a 502 api_error about the upstream (the gateway redacts secrets before it is sent). */
static void upstream_error(sg_error_t *e, const char *code, const char *what)
{
    sg_error_set(e, 502, "api_error", code, "Snowflake Cortex error: %s", what);
}

/* The message of an error value: a string, or an object with "message" (or "error"). */
static const char *error_message(const cJSON *errj, const cJSON *outer)
{
    if (cJSON_IsString(errj) && errj->valuestring[0]) return errj->valuestring;
    if (cJSON_IsObject(errj)) {
        const cJSON *m = GET(errj, "message");
        if (cJSON_IsString(m)) return m->valuestring;
        m = GET(errj, "error");
        if (cJSON_IsString(m)) return m->valuestring;
    }
    const cJSON *m = outer ? GET(outer, "message") : NULL;
    if (cJSON_IsString(m)) return m->valuestring;
    return "unknown error";
}

/* ---- request translation (inference:complete) ------------------------------------------ */

static int bad_request(sg_error_t *err, const char *code, const char *msg)
{
    sg_error_set(err, 400, "invalid_request_error", code, "%s", msg);
    return -1;
}

/* Client parameters that are accepted and not sent: "user", "safety_identifier",
 * "prompt_cache_key", "store" and "metadata" concern only OpenAI-side bookkeeping;
 * "parallel_tool_calls" has no Cortex equivalent (Cortex decides). stream_options is handled by the
 * gateway (usage is always reported). */
static const char *const dropped_params[] = {
    "model",    "messages",           "stream",           "stream_options",
    "user",     "safety_identifier",  "prompt_cache_key", "store",
    "metadata", "parallel_tool_calls"};
static const char *const handled_params[] = {
    "temperature",     "top_p", "max_tokens", "max_completion_tokens",
    "response_format", "tools", "tool_choice"};

/* Parameters Cortex has no equivalent for, allowed only with a value that asks for the
 * default behaviour (null, false, 0, 1 for n, an empty list or object). */
static int is_default_value(const char *key, const cJSON *v)
{
    if (cJSON_IsFalse(v)) return 1;
    if (cJSON_IsNumber(v)) {
        if (strcmp(key, "n") == 0) return v->valuedouble == 1;
        return v->valuedouble == 0 && strcmp(key, "seed") != 0;
    }
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child == NULL;
    return 0;
}

static int in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0) return 1;
    return 0;
}

static int check_params(const cJSON *client, sg_error_t *err)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, client)
    {
        const char *k = it->string;
        if (!k || cJSON_IsNull(it)) continue;
        if (in_list(k, dropped_params, SG_ARRAY_LEN(dropped_params)) ||
            in_list(k, handled_params, SG_ARRAY_LEN(handled_params)))
            continue;
        if (is_default_value(k, it)) continue;
        if (strcmp(k, "n") == 0) {
            sg_error_set(err, 400, "invalid_request_error", "unsupported_parameter",
                         "parameter 'n': Snowflake Cortex returns a single choice, only n=1 is "
                         "supported");
            return -1;
        }
        sg_error_set(err, 400, "invalid_request_error", "unsupported_parameter",
                     "parameter '%s' is not supported by Snowflake Cortex (inference:complete)", k);
        return -1;
    }
    return 0;
}

/* OpenAI message content (a string or a list of parts) → Cortex string content. */
static int translate_content(const cJSON *content, size_t idx, const char *role, cJSON *out,
                             sg_error_t *err)
{
    if (cJSON_IsString(content)) {
        cJSON_AddStringToObject(out, "content", content->valuestring);
        return 0;
    }
    if (cJSON_IsNull(content) || !content) {
        if (strcmp(role, "assistant") == 0) {
            cJSON_AddStringToObject(out, "content", "");
            return 0;
        }
        sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                     "messages[%zu].content is missing", idx);
        return -1;
    }
    if (!cJSON_IsArray(content)) {
        sg_error_set(err, 400, "invalid_request_error", "invalid_type",
                     "messages[%zu].content must be a string or an array of content parts", idx);
        return -1;
    }
    /* Text parts are joined with a newline: Cortex takes one string per message. */
    sg_buf_t text;
    sg_buf_init(&text, AGG_TEXT_MAX);
    size_t pi = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = GET(part, "type");
        const cJSON *t = GET(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(t)) {
            sg_error_set(err, 400, "invalid_request_error", "unsupported_content",
                         "messages[%zu].content[%zu]: content parts of type '%s' cannot be sent "
                         "to Snowflake Cortex by this gateway (only text parts are supported)",
                         idx, pi, cJSON_IsString(type) ? type->valuestring : "?");
            sg_buf_dispose(&text);
            return -1;
        }
        if ((pi > 0 && sg_buf_append(&text, "\n", 1) != 0) ||
            sg_buf_append_str(&text, t->valuestring) != 0) {
            sg_buf_dispose(&text);
            return bad_request(err, "invalid_value", "message content is too large");
        }
        pi++;
    }
    cJSON_AddStringToObject(out, "content", text.data ? text.data : "");
    sg_buf_dispose(&text);
    return 0;
}

/* The text of an OpenAI message content (a string, or text parts joined), for a tool result. */
static char *content_text(const cJSON *content)
{
    if (cJSON_IsString(content)) return sg_xstrdup(content->valuestring);
    sg_buf_t b;
    sg_buf_init(&b, AGG_TEXT_MAX);
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *t = GET(part, "text");
        if (!cJSON_IsString(t)) continue;
        if (b.len) sg_buf_append(&b, "\n", 1);
        sg_buf_append_str(&b, t->valuestring);
    }
    return sg_buf_steal(&b, NULL);
}

/* An assistant message's tool_calls → Cortex tool_use items (content_list); each call's name is
 * remembered by id for the tool results that answer it. */
static int translate_tool_calls(const cJSON *tcs, size_t idx, cJSON *cm, cJSON *names,
                                sg_error_t *err)
{
    cJSON *list = cJSON_AddArrayToObject(cm, "content_list");
    size_t k = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, tcs)
    {
        const cJSON *id = GET(tc, "id");
        const cJSON *fn = GET(tc, "function");
        const cJSON *name = cJSON_IsObject(fn) ? GET(fn, "name") : NULL;
        const cJSON *args = cJSON_IsObject(fn) ? GET(fn, "arguments") : NULL;
        if (!cJSON_IsString(id) || !id->valuestring[0] || !cJSON_IsString(name)) {
            sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                         "messages[%zu].tool_calls[%zu] needs an 'id' and a 'function.name'", idx,
                         k);
            return -1;
        }
        cJSON *input = NULL;
        if (cJSON_IsString(args) && args->valuestring[0]) {
            input = cJSON_Parse(args->valuestring);
        } else if (!args || cJSON_IsNull(args) || cJSON_IsString(args)) {
            input = cJSON_CreateObject();
        }
        if (!cJSON_IsObject(input)) {
            cJSON_Delete(input);
            sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                         "messages[%zu].tool_calls[%zu].function.arguments must be a JSON object "
                         "(Snowflake Cortex takes tool input as an object)",
                         idx, k);
            return -1;
        }
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "type", "tool_use");
        cJSON *tu = cJSON_AddObjectToObject(item, "tool_use");
        cJSON_AddStringToObject(tu, "tool_use_id", id->valuestring);
        cJSON_AddStringToObject(tu, "name", name->valuestring);
        cJSON_AddItemToObject(tu, "input", input);
        cJSON_AddItemToArray(list, item);
        cJSON_DeleteItemFromObjectCaseSensitive(names, id->valuestring);
        cJSON_AddStringToObject(names, id->valuestring, name->valuestring);
        k++;
    }
    return 0;
}

/* A role "tool" message → a Cortex tool_results item on a user message (consecutive results,
 * and a user message that follows them, share one: Cortex wants user and assistant to
 * alternate). */
static int translate_tool_result(const cJSON *m, size_t idx, cJSON *out, const cJSON *names,
                                 sg_error_t *err)
{
    const cJSON *id = GET(m, "tool_call_id");
    if (!cJSON_IsString(id) || !id->valuestring[0]) {
        sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                     "messages[%zu]: a tool message needs a 'tool_call_id'", idx);
        return -1;
    }
    const cJSON *name = GET(names, id->valuestring);
    if (!cJSON_IsString(name)) {
        sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                     "messages[%zu].tool_call_id '%.64s' answers no earlier assistant tool call",
                     idx, id->valuestring);
        return -1;
    }
    cJSON *last = cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1);
    const cJSON *lr = GET(last, "role");
    if (!cJSON_IsString(lr) || strcmp(lr->valuestring, "user") != 0) {
        last = cJSON_CreateObject();
        cJSON_AddStringToObject(last, "role", "user");
        cJSON_AddStringToObject(last, "content", "");
        cJSON_AddItemToArray(out, last);
    }
    cJSON *list = GET(last, "content_list");
    if (!list) list = cJSON_AddArrayToObject(last, "content_list");
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "type", "tool_results");
    cJSON *tr = cJSON_AddObjectToObject(item, "tool_results");
    cJSON_AddStringToObject(tr, "tool_use_id", id->valuestring);
    cJSON_AddStringToObject(tr, "name", name->valuestring);
    cJSON *content = cJSON_AddArrayToObject(tr, "content");
    cJSON *text = cJSON_CreateObject();
    cJSON_AddStringToObject(text, "type", "text");
    char *t = content_text(GET(m, "content"));
    cJSON_AddStringToObject(text, "text", t);
    free(t);
    cJSON_AddItemToArray(content, text);
    cJSON_AddItemToArray(list, item);
    return 0;
}

static cJSON *translate_messages(const cJSON *msgs, sg_error_t *err)
{
    if (!cJSON_IsArray(msgs) || !msgs->child) {
        bad_request(err, "invalid_value", "'messages' must be a non-empty array");
        return NULL;
    }
    cJSON *out = cJSON_CreateArray();
    cJSON *names = cJSON_CreateObject(); /* tool call id → tool name */
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = GET(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                         "messages[%zu] must be an object with a string 'role'", i);
            goto fail;
        }
        const char *r = role->valuestring;
        if (strcmp(r, "tool") == 0) {
            if (translate_tool_result(m, i, out, names, err) != 0) goto fail;
            i++;
            continue;
        }
        /* "developer" is OpenAI's newer name for system instructions. */
        if (strcmp(r, "developer") == 0) r = "system";
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
            sg_error_set(err, 400, "invalid_request_error", "unsupported_value",
                         "messages[%zu]: role '%s' cannot be sent to Snowflake Cortex (roles "
                         "system, user, assistant and tool only)",
                         i, r);
            goto fail;
        }
        const cJSON *fc = GET(m, "function_call");
        if (fc && !cJSON_IsNull(fc)) {
            bad_request(err, "unsupported_value",
                        "the legacy 'function_call' message field cannot be sent to Snowflake "
                        "Cortex: use 'tool_calls'");
            goto fail;
        }
        cJSON *last = cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1);
        const cJSON *lr = GET(last, "role");
        const cJSON *lc = GET(last, "content");
        if (strcmp(r, "user") == 0 && cJSON_IsString(lr) && strcmp(lr->valuestring, "user") == 0 &&
            GET(last, "content_list") && cJSON_IsString(lc) && !lc->valuestring[0]) {
            /* A user message after tool results joins them. */
            cJSON_DeleteItemFromObjectCaseSensitive(last, "content");
            if (translate_content(GET(m, "content"), i, r, last, err) != 0) goto fail;
            i++;
            continue;
        }
        cJSON *cm = cJSON_CreateObject();
        cJSON_AddStringToObject(cm, "role", r);
        cJSON_AddItemToArray(out, cm);
        /* "name" has no Cortex equivalent and is dropped. */
        if (translate_content(GET(m, "content"), i, r, cm, err) != 0) goto fail;
        const cJSON *tc = GET(m, "tool_calls");
        if (strcmp(r, "assistant") == 0 && cJSON_IsArray(tc) && tc->child &&
            translate_tool_calls(tc, i, cm, names, err) != 0)
            goto fail;
        i++;
    }
    const cJSON *lr = GET(cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1), "role");
    if (!cJSON_IsString(lr) || strcmp(lr->valuestring, "user") != 0) {
        bad_request(err, "invalid_value",
                    "Snowflake Cortex requires the last message to be from the user (or a tool "
                    "result)");
        goto fail;
    }
    cJSON_Delete(names);
    return out;
fail:
    cJSON_Delete(names);
    cJSON_Delete(out);
    return NULL;
}

static int copy_number(const cJSON *client, const char *from, cJSON *body, const char *to,
                       sg_error_t *err)
{
    const cJSON *v = GET(client, from);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        sg_error_set(err, 400, "invalid_request_error", "invalid_type", "'%s' must be a number",
                     from);
        return -1;
    }
    cJSON_AddNumberToObject(body, to, v->valuedouble);
    return 0;
}

static int translate_response_format(const cJSON *rf, cJSON *body, sg_error_t *err)
{
    if (!rf || cJSON_IsNull(rf)) return 0;
    const cJSON *type = GET(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type))
        return bad_request(err, "invalid_value", "'response_format' must be an object with a type");
    const char *t = type->valuestring;
    if (strcmp(t, "text") == 0) return 0;
    if (strcmp(t, "json_object") == 0)
        return bad_request(err, "unsupported_value",
                           "response_format {\"type\":\"json_object\"} is not supported by "
                           "Snowflake Cortex, which needs a JSON schema: use "
                           "{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{…}}}");
    if (strcmp(t, "json_schema") != 0) {
        sg_error_set(err, 400, "invalid_request_error", "unsupported_value",
                     "response_format type '%s' is not supported by Snowflake Cortex", t);
        return -1;
    }
    const cJSON *js = GET(rf, "json_schema");
    const cJSON *schema = cJSON_IsObject(js) ? GET(js, "schema") : NULL;
    if (!cJSON_IsObject(schema))
        return bad_request(err, "invalid_value",
                           "response_format json_schema needs a 'json_schema.schema' object");
    cJSON *o = cJSON_AddObjectToObject(body, "response_format");
    cJSON_AddStringToObject(o, "type", "json");
    cJSON_AddItemToObject(o, "schema", cJSON_Duplicate(schema, 1));
    return 0;
}

static int translate_tools(const cJSON *tools, cJSON *body, sg_error_t *err)
{
    if (!tools || cJSON_IsNull(tools)) return 0;
    if (!cJSON_IsArray(tools)) return bad_request(err, "invalid_type", "'tools' must be an array");
    if (!tools->child) return 0;
    cJSON *out = cJSON_CreateArray();
    size_t i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *type = GET(t, "type");
        const cJSON *fn = GET(t, "function");
        const cJSON *name = cJSON_IsObject(fn) ? GET(fn, "name") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0 ||
            !cJSON_IsString(name)) {
            cJSON_Delete(out);
            sg_error_set(err, 400, "invalid_request_error", "unsupported_value",
                         "tools[%zu]: only tools of type 'function' with a name can be sent "
                         "to Snowflake Cortex",
                         i);
            return -1;
        }
        const cJSON *desc = GET(fn, "description");
        const cJSON *params = GET(fn, "parameters");
        cJSON *spec = cJSON_CreateObject();
        cJSON_AddStringToObject(spec, "type", "generic");
        cJSON_AddStringToObject(spec, "name", name->valuestring);
        if (cJSON_IsString(desc)) cJSON_AddStringToObject(spec, "description", desc->valuestring);
        if (cJSON_IsObject(params)) {
            cJSON_AddItemToObject(spec, "input_schema", cJSON_Duplicate(params, 1));
        } else {
            cJSON *s = cJSON_AddObjectToObject(spec, "input_schema");
            cJSON_AddStringToObject(s, "type", "object");
            cJSON_AddObjectToObject(s, "properties");
        }
        cJSON *wrap = cJSON_CreateObject();
        cJSON_AddItemToObject(wrap, "tool_spec", spec);
        cJSON_AddItemToArray(out, wrap);
        i++;
    }
    cJSON_AddItemToObject(body, "tools", out);
    return 0;
}

static int translate_tool_choice(const cJSON *tc, cJSON *body, sg_error_t *err)
{
    if (!tc || cJSON_IsNull(tc)) return 0;
    if (cJSON_IsString(tc)) {
        const char *s = tc->valuestring;
        if (strcmp(s, "auto") != 0 && strcmp(s, "required") != 0 && strcmp(s, "none") != 0) {
            sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                         "tool_choice '%s' is not supported (auto, required, none or a "
                         "function)",
                         s);
            return -1;
        }
        cJSON *o = cJSON_AddObjectToObject(body, "tool_choice");
        cJSON_AddStringToObject(o, "type", s);
        return 0;
    }
    const cJSON *type = GET(tc, "type");
    const cJSON *fn = GET(tc, "function");
    const cJSON *name = cJSON_IsObject(fn) ? GET(fn, "name") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0 ||
        !cJSON_IsString(name))
        return bad_request(err, "invalid_value",
                           "tool_choice must be auto, required, none or "
                           "{\"type\":\"function\",\"function\":{\"name\":…}}");
    cJSON *o = cJSON_AddObjectToObject(body, "tool_choice");
    cJSON_AddStringToObject(o, "type", "tool");
    cJSON *names = cJSON_AddArrayToObject(o, "name");
    cJSON_AddItemToArray(names, cJSON_CreateString(name->valuestring));
    return 0;
}

/* The inference:complete body for the client's OpenAI request, or NULL with err set. */
static cJSON *complete_body(const sg_route_t *route, const cJSON *client, int stream,
                            sg_error_t *err)
{
    if (check_params(client, err) != 0) return NULL;
    cJSON *msgs = translate_messages(GET(client, "messages"), err);
    if (!msgs) return NULL;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "model", upstream_model(route));
    cJSON_AddItemToObject(body, "messages", msgs);
    /* max_completion_tokens (the current OpenAI name) wins over the legacy max_tokens. */
    const cJSON *mct = GET(client, "max_completion_tokens");
    const char *max_from = mct && !cJSON_IsNull(mct) ? "max_completion_tokens" : "max_tokens";
    if (copy_number(client, "temperature", body, "temperature", err) != 0 ||
        copy_number(client, "top_p", body, "top_p", err) != 0 ||
        copy_number(client, max_from, body, "max_tokens", err) != 0 ||
        translate_response_format(GET(client, "response_format"), body, err) != 0 ||
        translate_tools(GET(client, "tools"), body, err) != 0 ||
        translate_tool_choice(GET(client, "tool_choice"), body, err) != 0) {
        cJSON_Delete(body);
        return NULL;
    }
    /* Cortex streams by default: always say which one is wanted. */
    cJSON_AddBoolToObject(body, "stream", stream ? 1 : 0);
    return body;
}

/* The /v1/chat/completions body: the client's, with the upstream model, max_tokens renamed
 * (that endpoint rejects it) and usage always requested when streaming. */
static cJSON *openai_body(const sg_route_t *route, const cJSON *client, int stream)
{
    cJSON *body = cJSON_Duplicate(client, 1);
    SG_ASSERT(body != NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(body, "model");
    cJSON_AddStringToObject(body, "model", upstream_model(route));
    cJSON *mt = cJSON_DetachItemFromObjectCaseSensitive(body, "max_tokens");
    const cJSON *mct = GET(body, "max_completion_tokens");
    if (mt && !cJSON_IsNull(mt) && (!mct || cJSON_IsNull(mct))) {
        cJSON_DeleteItemFromObjectCaseSensitive(body, "max_completion_tokens");
        cJSON_AddItemToObject(body, "max_completion_tokens", mt);
        mt = NULL;
    }
    cJSON_Delete(mt);
    cJSON_DeleteItemFromObjectCaseSensitive(body, "stream");
    cJSON_AddBoolToObject(body, "stream", stream ? 1 : 0);
    if (stream) {
        cJSON *so = GET(body, "stream_options");
        if (!cJSON_IsObject(so)) {
            cJSON_DeleteItemFromObjectCaseSensitive(body, "stream_options");
            so = cJSON_AddObjectToObject(body, "stream_options");
        }
        cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
        cJSON_AddTrueToObject(so, "include_usage");
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(body, "stream_options");
    }
    return body;
}

struct curl_slist *sg_cortex_headers(const char *token, const char *token_type)
{
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    if (token && token[0]) {
        h = sg_header_bearer(h, token);
        if (token_type && token_type[0]) {
            char tl[128];
            snprintf(tl, sizeof(tl), "X-Snowflake-Authorization-Token-Type: %s", token_type);
            h = curl_slist_append(h, tl);
        }
    }
    return h;
}

/* Writes <host><path> into url_buf. Returns 0, or -1 with err (no host, or too long). */
static int cx_url(const sg_route_t *route, const char *path, char *url_buf, size_t url_cap,
                  sg_error_t *err)
{
    const char *name = route->provider->name;
    if (!route->base_url || !route->base_url[0]) {
        sg_error_set(err, 503, "api_error", "provider_not_configured",
                     "provider '%s' has no Snowflake host URL configured", name);
        return -1;
    }
    int n = snprintf(url_buf, url_cap, "%s%s", route->base_url, path);
    if (n < 0 || (size_t)n >= url_cap) {
        sg_error_set(err, 500, "api_error", "provider_not_configured",
                     "provider '%s' has a Snowflake host URL that is too long", name);
        return -1;
    }
    return 0;
}

/* Posts body (taken over) to url_buf with the provider's bearer token and, when given, one
 * extra header line. Returns 0 with out filled, or -1 with err (body freed). */
static int cx_post(const sg_route_t *route, cJSON *body, const char *extra,
                   const sg_upstream_opts_t *uo, sg_exchange_req_t *out, const char *url_buf,
                   sg_error_t *err)
{
    const char *token = NULL, *token_type = NULL;
    if (route->state &&
        sg_sf_auth_token(route->state, sg_unix_time(), &token, &token_type, err) != 0) {
        cJSON_Delete(body);
        return -1;
    }
    struct curl_slist *h = sg_cortex_headers(token, token_type);
    if (extra) h = curl_slist_append(h, extra);
    sg_upstream_post_json(out, url_buf, h, body, uo);
    return 0;
}

static int cx_build_chat(const sg_route_t *route, const cJSON *client, int stream,
                         const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                         size_t url_cap, sg_error_t *err)
{
    int oa = is_openai_api(route);
    if (cx_url(route,
               oa ? "/api/v2/cortex/v1/chat/completions" : "/api/v2/cortex/inference:complete",
               url_buf, url_cap, err) != 0)
        return -1;
    cJSON *body =
        oa ? openai_body(route, client, stream) : complete_body(route, client, stream, err);
    if (!body) return -1;
    return cx_post(route, body, NULL, uo, out, url_buf, err);
}

/* ---- streaming decoder (inference:complete) -------------------------------------------- */

typedef struct cx_decoder {
    void *oa; /* api "openai": the OpenAI-compatible adapter's decoder does everything */
    sg_sse_parser_t sse;
    sg_decode_sink_t sink;
    char model[256]; /* the public name, reported in every chunk */
    char id[128];
    int64_t created;
    int role_sent;
    long events;      /* chunks decoded */
    int n_tools;      /* tool calls started */
    char *tool_id;    /* upstream id of the current tool call */
    int tool_id_made; /* tool_id was generated (the upstream gave none yet) */
    char finish[32];  /* Cortex finish_reason seen so far */
    sg_usage_t usage; /* last usage reported */
    int ended, stopped;
} cx_decoder_t;

static void fail(cx_decoder_t *d, const sg_error_t *e)
{
    d->stopped = 1;
    d->sink.error(d->sink.ud, e);
}

/* A new chunk with its single choice; *delta receives the delta object to fill. */
static cJSON *chunk_new(cx_decoder_t *d, cJSON **delta)
{
    if (!d->id[0]) {
        char rid[33];
        sg_request_id_new(rid);
        snprintf(d->id, sizeof(d->id), "chatcmpl-cortex-%s", rid);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", d->id);
    cJSON_AddStringToObject(j, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(j, "created", (double)d->created);
    cJSON_AddStringToObject(j, "model", d->model);
    cJSON *choices = cJSON_AddArrayToObject(j, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    *delta = cJSON_AddObjectToObject(ch, "delta");
    if (!d->role_sent) {
        cJSON_AddStringToObject(*delta, "role", "assistant");
        d->role_sent = 1;
    }
    return j;
}

/* Sets the chunk's finish_reason (NULL: null), hands it to the sink and frees it. */
static int chunk_send(cx_decoder_t *d, cJSON *j, const char *finish)
{
    cJSON *ch = cJSON_GetArrayItem(GET(j, "choices"), 0);
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    int r = d->sink.chunk(d->sink.ud, j, NULL, 0);
    cJSON_Delete(j);
    if (r) d->stopped = 1;
    return r;
}

static int emit_text(cx_decoder_t *d, const char *s)
{
    if (!s || !s[0]) return 0;
    cJSON *delta;
    cJSON *j = chunk_new(d, &delta);
    cJSON_AddStringToObject(delta, "content", s);
    return chunk_send(d, j, NULL);
}

static int emit_tool_start(cx_decoder_t *d, const char *name)
{
    cJSON *delta;
    cJSON *j = chunk_new(d, &delta);
    cJSON *tcs = cJSON_AddArrayToObject(delta, "tool_calls");
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddItemToArray(tcs, tc);
    cJSON_AddNumberToObject(tc, "index", d->n_tools - 1);
    cJSON_AddStringToObject(tc, "id", d->tool_id);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", name ? name : "");
    cJSON_AddStringToObject(fn, "arguments", "");
    return chunk_send(d, j, NULL);
}

static int emit_tool_args(cx_decoder_t *d, const char *frag)
{
    if (!frag || !frag[0]) return 0;
    cJSON *delta;
    cJSON *j = chunk_new(d, &delta);
    cJSON *tcs = cJSON_AddArrayToObject(delta, "tool_calls");
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddItemToArray(tcs, tc);
    cJSON_AddNumberToObject(tc, "index", d->n_tools - 1);
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "arguments", frag);
    return chunk_send(d, j, NULL);
}

/* One piece of a tool call: {tool_use_id?, name?, input?}. A tool_use_id that differs from
 * the current one starts a new call (OpenAI index + 1); input is a JSON text fragment (a
 * string), or a whole input object. */
static int tool_piece(cx_decoder_t *d, const cJSON *t)
{
    const cJSON *id = GET(t, "tool_use_id");
    const cJSON *name = GET(t, "name");
    const cJSON *input = GET(t, "input");
    const char *ids = cJSON_IsString(id) && id->valuestring[0] ? id->valuestring : NULL;
    if (ids && d->tool_id && d->tool_id_made) {
        /* The upstream named the call only after its first piece: keep the index. */
        free(d->tool_id);
        d->tool_id = sg_xstrdup(ids);
        d->tool_id_made = 0;
    } else if ((ids && (!d->tool_id || strcmp(ids, d->tool_id) != 0)) || !d->tool_id) {
        free(d->tool_id);
        if (ids) {
            d->tool_id = sg_xstrdup(ids);
            d->tool_id_made = 0;
        } else {
            char tmp[64];
            snprintf(tmp, sizeof(tmp), "call_cortex_%d", d->n_tools);
            d->tool_id = sg_xstrdup(tmp);
            d->tool_id_made = 1;
        }
        d->n_tools++;
        int r = emit_tool_start(d, cJSON_IsString(name) ? name->valuestring : NULL);
        if (r) return r;
    }
    if (cJSON_IsString(input)) return emit_tool_args(d, input->valuestring);
    if ((cJSON_IsObject(input) || cJSON_IsArray(input)) && input->child) {
        char *s = cJSON_PrintUnformatted(input);
        SG_ASSERT(s != NULL);
        int r = emit_tool_args(d, s);
        free(s);
        return r;
    }
    return 0;
}

/* One delta (shapes 1–3): text in content, text or content_list[], or a tool_use piece. */
static int handle_delta(cx_decoder_t *d, const cJSON *delta)
{
    if (!cJSON_IsObject(delta)) return 0;
    const cJSON *type = GET(delta, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "tool_use") == 0)
        return tool_piece(d, delta); /* its content_list repeats the same piece */
    /* Shape 3 repeats the text in content, text and content_list: use one of them. */
    const cJSON *content = GET(delta, "content");
    if (cJSON_IsString(content) && content->valuestring[0])
        return emit_text(d, content->valuestring);
    const cJSON *text = GET(delta, "text");
    if (cJSON_IsString(text) && text->valuestring[0]) return emit_text(d, text->valuestring);
    const cJSON *item;
    cJSON_ArrayForEach(item, GET(delta, "content_list"))
    {
        const cJSON *it = GET(item, "type");
        int r = 0;
        if (cJSON_IsString(it) && strcmp(it->valuestring, "tool_use") == 0) {
            const cJSON *inner = GET(item, "tool_use");
            r = tool_piece(d, cJSON_IsObject(inner) ? inner : item);
        } else if (!cJSON_IsString(it) || strcmp(it->valuestring, "text") == 0) {
            const cJSON *t = GET(item, "text");
            if (cJSON_IsString(t)) r = emit_text(d, t->valuestring);
        }
        if (r) return r;
    }
    return 0;
}

static void note_finish(char *dst, size_t cap, const cJSON *fr)
{
    if (!cJSON_IsString(fr) || !fr->valuestring[0]) return;
    if (strcmp(dst, "prohibited_content") == 0) return; /* a Guard block stays the outcome */
    sg_strlcpy(dst, cap, fr->valuestring);
}

/* The OpenAI finish_reason for what Cortex said and whether tool calls were produced. */
static const char *map_finish(const char *cortex, int tools)
{
    if (strcmp(cortex, "prohibited_content") == 0 || strcmp(cortex, "content_filter") == 0)
        return "content_filter";
    if (strcmp(cortex, "length") == 0 || strcmp(cortex, "max_tokens") == 0) return "length";
    return tools ? "tool_calls" : "stop";
}

/* The stream is over: the final chunk (empty delta, finish_reason), then the end. */
static int finish_stream(cx_decoder_t *d)
{
    d->ended = 1;
    cJSON *delta;
    cJSON *j = chunk_new(d, &delta);
    if (chunk_send(d, j, map_finish(d->finish, d->n_tools > 0)) != 0) return -1;
    d->sink.end(d->sink.ud);
    return 0;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

static int cx_on_event(void *ud, const sg_sse_event_t *ev)
{
    cx_decoder_t *d = ud;
    if (d->ended) return 0;
    int error_event = ev->event_len && strcmp(ev->event, "error") == 0;
    if (ev->event_len && !error_event && strcmp(ev->event, "message") != 0)
        return 0; /* other event types are not part of the completion */
    if (blank(ev->data, ev->data_len)) return 0;
    if (!error_event && ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0)
        return finish_stream(d) ? 1 : 0; /* not sent by Cortex today; accepted */
    sg_error_t e;
    cJSON *j = cJSON_ParseWithLength(ev->data, ev->data_len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        if (error_event)
            upstream_error(&e, "upstream_error", ev->data);
        else
            sg_error_set(&e, 502, "api_error", "upstream_bad_stream",
                         "Snowflake Cortex sent a stream event that is not a JSON object");
        fail(d, &e);
        return 1;
    }
    const cJSON *errj = GET(j, "error");
    if (error_event || (errj && !cJSON_IsNull(errj))) {
        upstream_error(&e, "upstream_error", error_message(errj, j));
        cJSON_Delete(j);
        fail(d, &e);
        return 1;
    }
    d->events++;
    const cJSON *id = GET(j, "id");
    if (!d->id[0] && cJSON_IsString(id) && id->valuestring[0])
        sg_strlcpy(d->id, sizeof(d->id), id->valuestring);
    /* Usage: in every chunk counting up (shape 1), or {} until the last chunks (2, 3). The
     * last non-empty one is reported as given; guard_tokens (Cortex Guard, billed
     * separately) are not folded into completion_tokens. */
    sg_usage_t u = {0};
    sg_usage_from_json(GET(j, "usage"), &u);
    if (u.rejected) {
        d->sink.usage(d->sink.ud, &u);
    } else if (u.known && (u.prompt_tokens != d->usage.prompt_tokens ||
                           u.completion_tokens != d->usage.completion_tokens || !d->usage.known)) {
        d->usage = u;
        d->sink.usage(d->sink.ud, &u);
    }
    note_finish(d->finish, sizeof(d->finish), GET(j, "finish_reason"));
    int r = 0;
    const cJSON *ch = cJSON_GetArrayItem(GET(j, "choices"), 0);
    if (cJSON_IsObject(ch)) {
        note_finish(d->finish, sizeof(d->finish), GET(ch, "finish_reason"));
        r = handle_delta(d, GET(ch, "delta"));
    }
    cJSON_Delete(j);
    return r ? 1 : 0;
}

static void *cx_decoder_new(const sg_route_t *route, const sg_decode_sink_t *sink)
{
    cx_decoder_t *d = sg_xcalloc(1, sizeof(*d));
    d->sink = *sink;
    if (is_openai_api(route)) {
        d->oa = sg_provider_openai.decoder_new(route, sink);
        return d;
    }
    sg_strlcpy(d->model, sizeof(d->model), route->public_name);
    d->created = sg_unix_time();
    sg_sse_parser_init(&d->sse, SSE_EVENT_MAX, cx_on_event, d);
    return d;
}

static int check_feed(cx_decoder_t *d, int r)
{
    if (r == SG_ERR_TOO_LARGE && !d->stopped) {
        sg_error_t e;
        sg_error_set(&e, 502, "api_error", "upstream_bad_stream",
                     "Snowflake Cortex stream event exceeds %d bytes", SSE_EVENT_MAX);
        fail(d, &e);
    }
    return r == 0 && !d->stopped ? 0 : -1;
}

static int cx_decode(void *dec, const char *data, size_t len)
{
    cx_decoder_t *d = dec;
    if (d->oa) return sg_provider_openai.decode(d->oa, data, len);
    if (d->stopped) return -1;
    return check_feed(d, sg_sse_parser_feed(&d->sse, data, len));
}

/* Cortex sends no end marker: the connection closing is the end of a stream. */
static int cx_decode_finish(void *dec)
{
    cx_decoder_t *d = dec;
    if (d->oa) return sg_provider_openai.decode_finish(d->oa);
    if (d->stopped) return -1;
    if (check_feed(d, sg_sse_parser_finish(&d->sse)) != 0) return -1;
    if (d->ended) return 0;
    if (!d->events) {
        sg_error_t e;
        sg_error_set(&e, 502, "api_error", "upstream_bad_stream",
                     "Snowflake Cortex closed the stream without sending a completion");
        fail(d, &e);
        return -1;
    }
    return finish_stream(d);
}

static void cx_decoder_free(void *dec)
{
    cx_decoder_t *d = dec;
    if (!d) return;
    if (d->oa)
        sg_provider_openai.decoder_free(d->oa);
    else
        sg_sse_parser_dispose(&d->sse);
    free(d->tool_id);
    free(d);
}

/* ---- non-streaming response ------------------------------------------------------------ */

static cJSON *completion_new(const char *id, int64_t created, const char *model,
                             const char *content, cJSON *tool_calls, const char *finish,
                             const sg_usage_t *u)
{
    cJSON *j = cJSON_CreateObject();
    if (id && id[0]) {
        cJSON_AddStringToObject(j, "id", id);
    } else {
        char rid[33], buf[64];
        sg_request_id_new(rid);
        snprintf(buf, sizeof(buf), "chatcmpl-cortex-%s", rid);
        cJSON_AddStringToObject(j, "id", buf);
    }
    cJSON_AddStringToObject(j, "object", "chat.completion");
    cJSON_AddNumberToObject(j, "created", (double)created);
    cJSON_AddStringToObject(j, "model", model);
    cJSON *choices = cJSON_AddArrayToObject(j, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (content)
        cJSON_AddStringToObject(msg, "content", content);
    else
        cJSON_AddNullToObject(msg, "content");
    if (tool_calls) cJSON_AddItemToObject(msg, "tool_calls", tool_calls);
    cJSON_AddStringToObject(ch, "finish_reason", finish);
    if (u->known) {
        cJSON *uj = cJSON_AddObjectToObject(j, "usage");
        cJSON_AddNumberToObject(uj, "prompt_tokens", (double)u->prompt_tokens);
        cJSON_AddNumberToObject(uj, "completion_tokens", (double)u->completion_tokens);
        cJSON_AddNumberToObject(uj, "total_tokens",
                                (double)(u->prompt_tokens + u->completion_tokens));
    }
    return j;
}

/* Aggregates the decoder's chunks when Cortex answered stream:false with an SSE body. */
typedef struct cx_agg {
    sg_buf_t text;
    cJSON *tools; /* OpenAI tool_calls */
    char id[128];
    char finish[32];
    sg_usage_t usage;
    int ended, failed;
    sg_error_t err;
} cx_agg_t;

static void agg_append_args(cJSON *fn, const char *frag)
{
    const cJSON *old = GET(fn, "arguments");
    const char *o = cJSON_IsString(old) ? old->valuestring : "";
    size_t n = strlen(o) + strlen(frag) + 1;
    char *s = sg_xmalloc(n);
    snprintf(s, n, "%s%s", o, frag);
    cJSON_DeleteItemFromObjectCaseSensitive(fn, "arguments");
    cJSON_AddStringToObject(fn, "arguments", s);
    free(s);
}

static int agg_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    SG_UNUSED(raw);
    SG_UNUSED(raw_len);
    cx_agg_t *a = ud;
    const cJSON *id = GET(chunk, "id");
    if (!a->id[0] && cJSON_IsString(id)) sg_strlcpy(a->id, sizeof(a->id), id->valuestring);
    const cJSON *ch = cJSON_GetArrayItem(GET(chunk, "choices"), 0);
    const cJSON *delta = GET(ch, "delta");
    const cJSON *content = GET(delta, "content");
    if (cJSON_IsString(content) && sg_buf_append_str(&a->text, content->valuestring) != 0) return 1;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, GET(delta, "tool_calls"))
    {
        long long idx = 0;
        if (sg_json_count(GET(tc, "index"), 1000, &idx) != 0) continue;
        cJSON *slot = cJSON_GetArrayItem(a->tools, (int)idx);
        const cJSON *fn = GET(tc, "function");
        if (!slot) {
            slot = cJSON_CreateObject();
            const cJSON *tid = GET(tc, "id");
            cJSON_AddStringToObject(slot, "id", cJSON_IsString(tid) ? tid->valuestring : "");
            cJSON_AddStringToObject(slot, "type", "function");
            cJSON *sfn = cJSON_AddObjectToObject(slot, "function");
            const cJSON *name = GET(fn, "name");
            cJSON_AddStringToObject(sfn, "name", cJSON_IsString(name) ? name->valuestring : "");
            cJSON_AddStringToObject(sfn, "arguments", "");
            cJSON_AddItemToArray(a->tools, slot);
        }
        const cJSON *args = GET(fn, "arguments");
        if (cJSON_IsString(args) && args->valuestring[0])
            agg_append_args(GET(slot, "function"), args->valuestring);
    }
    const cJSON *fr = GET(ch, "finish_reason");
    if (cJSON_IsString(fr)) sg_strlcpy(a->finish, sizeof(a->finish), fr->valuestring);
    return 0;
}

static void agg_usage(void *ud, const sg_usage_t *u)
{
    ((cx_agg_t *)ud)->usage = *u;
}

static void agg_end(void *ud)
{
    ((cx_agg_t *)ud)->ended = 1;
}

static void agg_error(void *ud, const sg_error_t *e)
{
    cx_agg_t *a = ud;
    a->failed = 1;
    a->err = *e;
}

static cJSON *convert_sse(const sg_route_t *route, const char *body, size_t len, sg_usage_t *usage,
                          sg_error_t *err)
{
    cx_agg_t a;
    memset(&a, 0, sizeof(a));
    sg_buf_init(&a.text, AGG_TEXT_MAX);
    a.tools = cJSON_CreateArray();
    sg_decode_sink_t sink = {agg_chunk, agg_usage, agg_end, agg_error, &a, NULL};
    cx_decoder_t *d = cx_decoder_new(route, &sink);
    int r = cx_decode(d, body, len);
    if (r == 0) r = cx_decode_finish(d);
    int64_t created = d->created;
    cx_decoder_free(d);
    cJSON *out = NULL;
    if (a.failed) {
        *err = a.err;
    } else if (r != 0 || !a.ended) {
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "Snowflake Cortex response could not be aggregated");
    } else {
        int has_tools = cJSON_GetArraySize(a.tools) > 0;
        const char *text = a.text.data ? a.text.data : "";
        *usage = a.usage;
        out = completion_new(a.id, created, route->public_name, has_tools && !text[0] ? NULL : text,
                             has_tools ? a.tools : NULL, a.finish[0] ? a.finish : "stop", &a.usage);
        if (has_tools) a.tools = NULL;
    }
    cJSON_Delete(a.tools);
    sg_buf_dispose(&a.text);
    return out;
}

/* OpenAI tool_calls for the tool_use items of a Cortex content_list, or NULL if none. */
static cJSON *tool_calls_from(const cJSON *content_list)
{
    cJSON *out = NULL;
    int n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, content_list)
    {
        const cJSON *type = GET(item, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "tool_use") != 0) continue;
        const cJSON *inner = GET(item, "tool_use");
        const cJSON *t = cJSON_IsObject(inner) ? inner : item;
        const cJSON *id = GET(t, "tool_use_id");
        const cJSON *name = GET(t, "name");
        const cJSON *input = GET(t, "input");
        if (!out) out = cJSON_CreateArray();
        cJSON *tc = cJSON_CreateObject();
        cJSON_AddItemToArray(out, tc);
        if (cJSON_IsString(id) && id->valuestring[0]) {
            cJSON_AddStringToObject(tc, "id", id->valuestring);
        } else {
            char tmp[64];
            snprintf(tmp, sizeof(tmp), "call_cortex_%d", n);
            cJSON_AddStringToObject(tc, "id", tmp);
        }
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(tc, "function");
        cJSON_AddStringToObject(fn, "name", cJSON_IsString(name) ? name->valuestring : "");
        if (cJSON_IsString(input)) {
            cJSON_AddStringToObject(fn, "arguments", input->valuestring);
        } else if (input && !cJSON_IsNull(input)) {
            char *s = cJSON_PrintUnformatted(input);
            SG_ASSERT(s != NULL);
            cJSON_AddStringToObject(fn, "arguments", s);
            free(s);
        } else {
            cJSON_AddStringToObject(fn, "arguments", "{}");
        }
        n++;
    }
    return out;
}

/* Does the body look like an event stream rather than a JSON document? */
static int looks_like_sse(const char *body, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) i = 3;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    const char *s = body + i;
    size_t n = len - i;
    return (n >= 5 && memcmp(s, "data:", 5) == 0) || (n >= 6 && memcmp(s, "event:", 6) == 0) ||
           (n >= 3 && memcmp(s, "id:", 3) == 0) || (n >= 1 && s[0] == ':');
}

static cJSON *cx_convert_response(const sg_route_t *route, const char *body, size_t len,
                                  sg_usage_t *usage, sg_error_t *err)
{
    if (is_openai_api(route)) {
        cJSON *j = sg_provider_openai.convert_response(route, body, len, usage, err);
        if (j) {
            /* Printed by the gateway (passthrough_response is 0): report the public name. */
            cJSON_DeleteItemFromObjectCaseSensitive(j, "model");
            cJSON_AddStringToObject(j, "model", route->public_name);
        }
        return j;
    }
    if (body && looks_like_sse(body, len)) return convert_sse(route, body, len, usage, err);
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "Snowflake Cortex response is not a JSON object");
        return NULL;
    }
    const cJSON *errj = GET(j, "error");
    if (errj && !cJSON_IsNull(errj)) {
        upstream_error(err, "upstream_error", error_message(errj, j));
        cJSON_Delete(j);
        return NULL;
    }
    const cJSON *ch = cJSON_GetArrayItem(GET(j, "choices"), 0);
    if (!cJSON_IsObject(ch)) {
        cJSON_Delete(j);
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "Snowflake Cortex response has no choices");
        return NULL;
    }
    const cJSON *msg = GET(ch, "message");
    const cJSON *content = GET(msg, "content");
    const cJSON *list = GET(msg, "content_list");
    sg_buf_t text;
    sg_buf_init(&text, AGG_TEXT_MAX);
    if (cJSON_IsString(content)) {
        sg_buf_append_str(&text, content->valuestring);
    } else {
        const cJSON *legacy = GET(ch, "messages"); /* older shape: the text itself */
        if (cJSON_IsString(legacy)) sg_buf_append_str(&text, legacy->valuestring);
        const cJSON *item;
        cJSON_ArrayForEach(item, list)
        {
            const cJSON *type = GET(item, "type");
            const cJSON *t = GET(item, "text");
            if ((!cJSON_IsString(type) || strcmp(type->valuestring, "text") == 0) &&
                cJSON_IsString(t))
                sg_buf_append_str(&text, t->valuestring);
        }
    }
    cJSON *tools = tool_calls_from(list);
    char finish[32] = "";
    note_finish(finish, sizeof(finish), GET(j, "finish_reason"));
    note_finish(finish, sizeof(finish), GET(ch, "finish_reason"));
    sg_usage_t u = {0};
    sg_usage_from_json(GET(j, "usage"), &u);
    if (u.known || u.rejected) *usage = u;
    const cJSON *id = GET(j, "id");
    long long created;
    if (sg_json_int_in(GET(j, "created"), 0, SG_UNIX_TIME_MAX, &created) != 0)
        created = sg_unix_time();
    const char *t = text.data ? text.data : "";
    cJSON *out =
        completion_new(cJSON_IsString(id) ? id->valuestring : NULL, created, route->public_name,
                       tools && !t[0] ? NULL : t, tools, map_finish(finish, tools != NULL), &u);
    sg_buf_dispose(&text);
    cJSON_Delete(j);
    return out;
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Snowflake error bodies ({"message","code","request_id"}, or OpenAI {"error":{…}} from the
 * OpenAI-compatible endpoint) → an OpenAI error with the same status. */
static void cx_map_error(const sg_route_t *route, long status, const char *body, size_t len,
                         sg_error_t *err)
{
    SG_UNUSED(route);
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const char *msg = NULL, *rid = NULL;
    char code[64] = "";
    if (cJSON_IsObject(j)) {
        const cJSON *e = GET(j, "error");
        const cJSON *src = cJSON_IsObject(e) ? e : j;
        const cJSON *m = GET(src, "message");
        if (cJSON_IsString(e) && e->valuestring[0]) m = e;
        if (cJSON_IsString(m) && m->valuestring[0]) msg = m->valuestring;
        const cJSON *c = GET(src, "code");
        long long num;
        if (cJSON_IsString(c))
            sg_strlcpy(code, sizeof(code), c->valuestring);
        else if (sg_json_int_in(c, -1e15, 1e15, &num) == 0)
            snprintf(code, sizeof(code), "%lld", num);
        const cJSON *r = GET(j, "request_id");
        if (cJSON_IsString(r) && r->valuestring[0]) rid = r->valuestring;
    }
    int st = status >= 400 && status <= 599 ? (int)status : 502;
    const char *type = st < 500 ? "invalid_request_error" : "api_error";
    char what[320];
    if (msg)
        sg_strlcpy(what, sizeof(what), msg);
    else
        snprintf(what, sizeof(what), "HTTP %ld", status);
    const char *hint = "";
    switch (st) {
    case 401:
        type = "authentication_error";
        hint = " (the gateway's Snowflake credentials were rejected)";
        break;
    case 402:
        type = "insufficient_quota";
        snprintf(code, sizeof(code), "insufficient_quota");
        break;
    case 403:
        type = "permission_error";
        hint = " (the Snowflake role used by the gateway needs the SNOWFLAKE.CORTEX_USER "
               "database role and access to this model)";
        break;
    case 404:
        type = "not_found_error";
        break;
    case 429:
        type = "rate_limit_error";
        snprintf(code, sizeof(code), "rate_limit_exceeded");
        break;
    default:
        break;
    }
    char ridtxt[160] = "";
    /* Snowflake often puts the request id in the message already ("… [<id>]"). */
    if (rid && !strstr(what, rid))
        snprintf(ridtxt, sizeof(ridtxt), " (Snowflake request id %.100s)", rid);
    sg_error_set(err, st, type, code, "Snowflake Cortex: %s%s%s", what, hint, ridtxt);
    cJSON_Delete(j);
}

/* ---- embeddings (inference:embed) ------------------------------------------------------- */

/* POST /api/v2/cortex/inference:embed {"model", "text": [strings]} (docs/providers.md). */
static int cx_build_embed(const sg_route_t *route, const cJSON *client,
                          const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                          size_t url_cap, sg_error_t *err)
{
    if (cx_url(route, "/api/v2/cortex/inference:embed", url_buf, url_cap, err) != 0) return -1;
    const cJSON *input = GET(client, "input");
    cJSON *text = cJSON_CreateArray();
    if (cJSON_IsString(input)) {
        cJSON_AddItemToArray(text, cJSON_CreateString(input->valuestring));
    } else {
        const cJSON *it;
        cJSON_ArrayForEach(it, input)
        {
            if (!cJSON_IsString(it)) {
                cJSON_Delete(text);
                return bad_request(err, "unsupported_value",
                                   "Snowflake Cortex embeds text: 'input' must be a string or an "
                                   "array of strings (not token ids)");
            }
            cJSON_AddItemToArray(text, cJSON_CreateString(it->valuestring));
        }
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "model", upstream_model(route));
    cJSON_AddItemToObject(body, "text", text);
    return cx_post(route, body, NULL, uo, out, url_buf, err);
}

/* One vector of a Cortex answer: the specification nests it ([[…]]); a flat array is accepted
 * too. Returns the count (0 when it is not an array of finite numbers). */
static size_t embedding_values(const cJSON *emb, double **out)
{
    if (cJSON_IsArray(emb) && cJSON_IsArray(emb->child)) emb = emb->child;
    int n = cJSON_GetArraySize(emb);
    if (!cJSON_IsArray(emb) || n <= 0) return 0;
    double *v = sg_xmalloc((size_t)n * sizeof(*v));
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, emb)
    {
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) {
            free(v);
            return 0;
        }
        v[i++] = x->valuedouble;
    }
    *out = v;
    return (size_t)n;
}

/* The OpenAI form of a vector: numbers, or base64 of little-endian float32. */
static cJSON *embedding_json(const double *v, size_t n, int base64)
{
    if (!base64) return cJSON_CreateDoubleArray(v, (int)n);
    unsigned char *raw = sg_xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        float f = (float)v[i];
        unsigned char b[4];
        memcpy(b, &f, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (int k = 0; k < 4; k++) raw[i * 4 + k] = b[3 - k];
#else
        memcpy(raw + i * 4, b, 4);
#endif
    }
    size_t olen = 0;
    mbedtls_base64_encode(NULL, 0, &olen, raw, n * 4);
    unsigned char *s = sg_xmalloc(olen + 1);
    SG_ASSERT(mbedtls_base64_encode(s, olen + 1, &olen, raw, n * 4) == 0);
    s[olen] = '\0';
    cJSON *j = cJSON_CreateString((char *)s);
    free(s);
    free(raw);
    return j;
}

/* Cortex's list → OpenAI's, honouring encoding_format and dimensions (the vector is cut and
 * re-normalised, as OpenAI does for its text-embedding-3 models). */
static cJSON *cx_convert_embed(const sg_route_t *route, const cJSON *client, const char *body,
                               size_t len, sg_usage_t *usage, sg_error_t *err)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *data = GET(j, "data");
    if (!cJSON_IsArray(data)) {
        cJSON_Delete(j);
        sg_error_set(err, 502, "api_error", "upstream_bad_response",
                     "Snowflake Cortex embed response has no data list");
        return NULL;
    }
    const cJSON *fmt = GET(client, "encoding_format");
    int base64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    long long dims = 0;
    sg_json_count(GET(client, "dimensions"), 1e6, &dims);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "object", "list");
    cJSON *list = cJSON_AddArrayToObject(out, "data");
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, data)
    {
        double *v = NULL;
        size_t n = embedding_values(GET(item, "embedding"), &v);
        if (!n || (dims && (size_t)dims > n)) {
            free(v);
            cJSON_Delete(out);
            cJSON_Delete(j);
            if (n)
                sg_error_set(err, 400, "invalid_request_error", "invalid_value",
                             "'dimensions' %lld is more than the %zu of %s", dims, n,
                             route->public_name);
            else
                sg_error_set(err, 502, "api_error", "upstream_bad_response",
                             "Snowflake Cortex embed response has no usable vector");
            return NULL;
        }
        if (dims && (size_t)dims < n) {
            n = (size_t)dims;
            double norm = 0;
            for (size_t k = 0; k < n; k++) norm += v[k] * v[k];
            norm = sqrt(norm);
            for (size_t k = 0; norm > 0 && k < n; k++) v[k] /= norm;
        }
        long long index = i;
        sg_json_count(GET(item, "index"), 1e6, &index);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", (double)index);
        cJSON_AddItemToObject(e, "embedding", embedding_json(v, n, base64));
        cJSON_AddItemToArray(list, e);
        free(v);
        i++;
    }
    cJSON_AddStringToObject(out, "model", route->public_name);
    long long total = 0;
    const cJSON *u = GET(j, "usage");
    if (sg_json_count(GET(u, "total_tokens"), SG_TOKENS_MAX, &total) == 0) {
        usage->prompt_tokens = (long)total;
        usage->completion_tokens = 0;
        usage->known = 1;
    } else if (GET(u, "total_tokens")) {
        usage->rejected = 1;
    }
    cJSON *ou = cJSON_AddObjectToObject(out, "usage");
    cJSON_AddNumberToObject(ou, "prompt_tokens", (double)usage->prompt_tokens);
    cJSON_AddNumberToObject(ou, "total_tokens", (double)usage->prompt_tokens);
    cJSON_Delete(j);
    return out;
}

/* ---- Anthropic Messages (Claude models) -------------------------------------------------- */

/* Cortex's Messages endpoint serves Claude models only. */
static int cx_messages_native(const sg_route_t *route)
{
    return strncmp(upstream_model(route), "claude-", 7) == 0;
}

/* POST /api/v2/cortex/v1/messages: the client's Messages request as it is, with the model's
 * Snowflake name and the gateway's bearer token (the client's x-api-key is not forwarded). */
static int cx_build_messages(const sg_route_t *route, const cJSON *client, int stream,
                             const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                             size_t url_cap, sg_error_t *err)
{
    SG_UNUSED(stream);
    if (cx_url(route, "/api/v2/cortex/v1/messages", url_buf, url_cap, err) != 0) return -1;
    cJSON *body = cJSON_Duplicate(client, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(body, "sophia");
    cJSON_DeleteItemFromObjectCaseSensitive(body, "model");
    cJSON_AddStringToObject(body, "model", upstream_model(route));
    /* The version Anthropic's SDKs send; Snowflake's examples use those SDKs. */
    return cx_post(route, body, "anthropic-version: 2023-06-01", uo, out, url_buf, err);
}

const sg_provider_vt_t sg_provider_cortex = {
    .kind = "cortex",
    .passthrough_response = 0,
    .build_chat = cx_build_chat,
    .decoder_new = cx_decoder_new,
    .decode = cx_decode,
    .decode_finish = cx_decode_finish,
    .decoder_free = cx_decoder_free,
    .convert_response = cx_convert_response,
    .build_embed = cx_build_embed,
    .convert_embed = cx_convert_embed,
    .messages_native = cx_messages_native,
    .build_messages = cx_build_messages,
    .map_error = cx_map_error,
};
