/* POST /v1/responses: OpenAI's Responses API on the chat routes of every provider. The request
 * (input as a string or items: messages, function_call, function_call_output, item_reference;
 * instructions; function tools; tool_choice; temperature; top_p; max_output_tokens;
 * text.format; previous_response_id; stream) becomes a chat request for the completion
 * pipeline, and what comes back becomes a response object, or, streamed, the Responses event
 * sequence with sequence numbers. Answers are kept in the response store (sophia/rstore.h)
 * unless "store": false, so item references and previous_response_id work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/api.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/log.h"
#include "sophia/route.h"
#include "sophia/rstore.h"

#define GET(o, k) cJSON_GetObjectItemCaseSensitive((o), (k))
#define MAX_CALLS 64
#define EVENT_MAX (8 * 1024 * 1024)
#define TEXT_MAX (64 * 1024 * 1024)

typedef struct call {
    char item_id[48];
    char call_id[128];
    char name[128];
    sg_buf_t args;
    int output_index;
} call_t;

typedef struct resp {
    sg_api_t a;   /* first */
    cJSON *req;   /* the client's Responses request */
    cJSON *input; /* its input items, references resolved (what the store keeps) */
    int stream;
    int store;
    char id[48];
    int64_t created;
    long est_prompt_tokens;
    long content_chunks;
    /* streaming state */
    int started;  /* response.created / in_progress sent */
    long seq;     /* the next sequence_number */
    int n_out;    /* output items so far */
    int msg_open; /* a message item is open */
    int msg_index;
    char msg_id[48];
    sg_buf_t text; /* the open (or last) message's text */
    call_t calls[MAX_CALLS];
    int n_calls, open_call; /* open_call: index into calls, -1 none */
    char finish[32];
    cJSON *output; /* finished output items */
    sg_buf_t ev;   /* one SSE event */
} resp_t;

static void resp_free(sg_api_t *a)
{
    resp_t *r = (resp_t *)a;
    cJSON_Delete(r->req);
    cJSON_Delete(r->input);
    cJSON_Delete(r->output);
    for (int i = 0; i < r->n_calls; i++) sg_buf_dispose(&r->calls[i].args);
    sg_buf_dispose(&r->text);
    sg_buf_dispose(&r->ev);
    free(r);
}

static void resp_settle(sg_api_t *a)
{
    resp_t *r = (resp_t *)a;
    if (a->rec.usage.known) return;
    a->rec.usage.prompt_tokens = r->est_prompt_tokens;
    a->rec.usage.completion_tokens = r->content_chunks;
}

static void new_id(char *out, size_t cap, const char *prefix)
{
    char rid[33];
    sg_request_id_new(rid);
    snprintf(out, cap, "%s_%s", prefix, rid);
}

/* ---- request translation ------------------------------------------------------------------ */

static int bad(sg_error_t *e, const char *code, const char *fmt, const char *arg)
{
    sg_error_set(e, 400, "invalid_request_error", code, fmt, arg);
    return -1;
}

/* A Responses content (string or parts) → a chat content (string or parts). */
static cJSON *chat_content(const cJSON *content, sg_error_t *e)
{
    if (cJSON_IsString(content)) return cJSON_CreateString(content->valuestring);
    if (!cJSON_IsArray(content)) {
        bad(e, "invalid_type", "message content must be a string or a list of parts%s", "");
        return NULL;
    }
    cJSON *parts = cJSON_CreateArray();
    const cJSON *p;
    cJSON_ArrayForEach(p, content)
    {
        const cJSON *type = GET(p, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        cJSON *o = cJSON_CreateObject();
        if (strcmp(t, "input_text") == 0 || strcmp(t, "output_text") == 0 ||
            strcmp(t, "text") == 0) {
            const cJSON *text = GET(p, "text");
            cJSON_AddStringToObject(o, "type", "text");
            cJSON_AddStringToObject(o, "text", cJSON_IsString(text) ? text->valuestring : "");
        } else if (strcmp(t, "input_image") == 0) {
            const cJSON *url = GET(p, "image_url");
            if (!cJSON_IsString(url)) {
                cJSON_Delete(o);
                cJSON_Delete(parts);
                bad(e, "unsupported_value",
                    "input_image parts need an image_url (file ids are not supported)%s", "");
                return NULL;
            }
            cJSON_AddStringToObject(o, "type", "image_url");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "image_url"), "url",
                                    url->valuestring);
        } else if (strcmp(t, "refusal") == 0) {
            const cJSON *text = GET(p, "refusal");
            cJSON_AddStringToObject(o, "type", "text");
            cJSON_AddStringToObject(o, "text", cJSON_IsString(text) ? text->valuestring : "");
        } else {
            cJSON_Delete(o);
            cJSON_Delete(parts);
            bad(e, "unsupported_value", "content parts of type '%s' are not supported", t);
            return NULL;
        }
        cJSON_AddItemToArray(parts, o);
    }
    return parts;
}

/* The last chat message when it is an assistant message that may take tool calls. */
static cJSON *open_assistant(cJSON *msgs)
{
    cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
    const cJSON *role = GET(last, "role");
    if (cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0) return last;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddNullToObject(m, "content");
    cJSON_AddItemToArray(msgs, m);
    return m;
}

/* One input item (references already resolved) → chat messages appended to msgs. */
static int translate_item(const cJSON *it, cJSON *msgs, sg_error_t *e)
{
    const cJSON *type = GET(it, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "message";
    if (strcmp(t, "message") == 0) {
        const cJSON *role = GET(it, "role");
        if (!cJSON_IsString(role)) return bad(e, "invalid_value", "a message needs a role%s", "");
        const char *r = role->valuestring;
        if (strcmp(r, "developer") == 0) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return bad(e, "invalid_value", "message role '%s' is not supported", r);
        cJSON *content = chat_content(GET(it, "content"), e);
        if (!content) return -1;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", r);
        cJSON_AddItemToObject(m, "content", content);
        cJSON_AddItemToArray(msgs, m);
        return 0;
    }
    if (strcmp(t, "function_call") == 0) {
        const cJSON *call_id = GET(it, "call_id"), *name = GET(it, "name"),
                    *args = GET(it, "arguments");
        if (!cJSON_IsString(call_id) || !cJSON_IsString(name))
            return bad(e, "invalid_value", "a function_call item needs call_id and name%s", "");
        cJSON *m = open_assistant(msgs);
        cJSON *tcs = GET(m, "tool_calls");
        if (!tcs) tcs = cJSON_AddArrayToObject(m, "tool_calls");
        cJSON *tc = cJSON_CreateObject();
        cJSON_AddStringToObject(tc, "id", call_id->valuestring);
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(tc, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        cJSON_AddStringToObject(fn, "arguments", cJSON_IsString(args) ? args->valuestring : "{}");
        cJSON_AddItemToArray(tcs, tc);
        return 0;
    }
    if (strcmp(t, "function_call_output") == 0) {
        const cJSON *call_id = GET(it, "call_id"), *out = GET(it, "output");
        if (!cJSON_IsString(call_id))
            return bad(e, "invalid_value", "a function_call_output item needs call_id%s", "");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "tool");
        cJSON_AddStringToObject(m, "tool_call_id", call_id->valuestring);
        if (cJSON_IsString(out)) {
            cJSON_AddStringToObject(m, "content", out->valuestring);
        } else {
            cJSON *content = out ? chat_content(out, e) : cJSON_CreateString("");
            if (!content) {
                cJSON_Delete(m);
                return -1;
            }
            cJSON_AddItemToObject(m, "content", content);
        }
        cJSON_AddItemToArray(msgs, m);
        return 0;
    }
    if (strcmp(t, "reasoning") == 0) return 0; /* no chat equivalent: dropped */
    return bad(e, "unsupported_value", "input items of type '%s' are not supported", t);
}

/* Input items with item references resolved from the store, previous_response_id's
 * conversation first. Returns the list (caller deletes), or NULL with e. */
static cJSON *resolve_input(const cJSON *req, sg_error_t *e)
{
    int64_t now = sg_unix_time();
    cJSON *items = cJSON_CreateArray();
    const cJSON *prev = GET(req, "previous_response_id");
    if (cJSON_IsString(prev)) {
        const cJSON *in, *out;
        if (sg_rstore_get(prev->valuestring, now, &in, &out) != 0) {
            cJSON_Delete(items);
            sg_error_set(e, 400, "invalid_request_error", "previous_response_not_found",
                         "previous response '%.64s' is not known to this gateway (responses are "
                         "kept %d minutes, per gateway process): send the whole conversation as "
                         "input",
                         prev->valuestring, SG_RSTORE_TTL_S / 60);
            return NULL;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, in) cJSON_AddItemToArray(items, cJSON_Duplicate(it, 1));
        cJSON_ArrayForEach(it, out) cJSON_AddItemToArray(items, cJSON_Duplicate(it, 1));
    } else if (prev && !cJSON_IsNull(prev)) {
        cJSON_Delete(items);
        bad(e, "invalid_type", "'previous_response_id' must be a string%s", "");
        return NULL;
    }
    const cJSON *input = GET(req, "input");
    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "type", "message");
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(items, m);
        return items;
    }
    if (!cJSON_IsArray(input)) {
        cJSON_Delete(items);
        bad(e, "invalid_type", "'input' must be a string or a list of items%s", "");
        return NULL;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, input)
    {
        const cJSON *type = GET(it, "type");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "item_reference") == 0) {
            const cJSON *id = GET(it, "id");
            const cJSON *found = cJSON_IsString(id) ? sg_rstore_item(id->valuestring, now) : NULL;
            if (!found) {
                cJSON_Delete(items);
                sg_error_set(e, 400, "invalid_request_error", "item_not_found",
                             "item '%.64s' is not known to this gateway (responses are kept %d "
                             "minutes, per gateway process): send the item itself (with the AI "
                             "SDK: providerOptions.openai.store = false)",
                             cJSON_IsString(id) ? id->valuestring : "?", SG_RSTORE_TTL_S / 60);
                return NULL;
            }
            cJSON_AddItemToArray(items, cJSON_Duplicate(found, 1));
        } else {
            cJSON_AddItemToArray(items, cJSON_Duplicate(it, 1));
        }
    }
    if (!items->child) {
        cJSON_Delete(items);
        bad(e, "invalid_value", "'input' must not be empty%s", "");
        return NULL;
    }
    return items;
}

static int translate_tools(const cJSON *tools, cJSON *chat, sg_error_t *e)
{
    if (!tools || cJSON_IsNull(tools)) return 0;
    if (!cJSON_IsArray(tools)) return bad(e, "invalid_type", "'tools' must be a list%s", "");
    cJSON *out = cJSON_AddArrayToObject(chat, "tools");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *type = GET(t, "type");
        const char *ty = cJSON_IsString(type) ? type->valuestring : "?";
        if (strcmp(ty, "function") != 0)
            return bad(e, "unsupported_value",
                       "the built-in tool '%s' is not available through this gateway (function "
                       "tools only)",
                       ty);
        const cJSON *name = GET(t, "name");
        if (!cJSON_IsString(name))
            return bad(e, "invalid_value", "a function tool needs a name%s", "");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        static const char *const copy[] = {"description", "parameters", "strict"};
        for (size_t i = 0; i < SG_ARRAY_LEN(copy); i++) {
            const cJSON *v = GET(t, copy[i]);
            if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(fn, copy[i], cJSON_Duplicate(v, 1));
        }
        cJSON_AddItemToArray(out, o);
    }
    return 0;
}

static int translate_tool_choice(const cJSON *tc, cJSON *chat, sg_error_t *e)
{
    if (!tc || cJSON_IsNull(tc)) return 0;
    if (cJSON_IsString(tc)) {
        cJSON_AddStringToObject(chat, "tool_choice", tc->valuestring);
        return 0;
    }
    const cJSON *type = GET(tc, "type"), *name = GET(tc, "name");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "function") == 0 &&
        cJSON_IsString(name)) {
        cJSON *o = cJSON_AddObjectToObject(chat, "tool_choice");
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name", name->valuestring);
        return 0;
    }
    return bad(e, "unsupported_value",
               "tool_choice must be auto, none, required or {\"type\":\"function\",\"name\"}%s",
               "");
}

static int translate_format(const cJSON *text, cJSON *chat, sg_error_t *e)
{
    const cJSON *fmt = GET(text, "format");
    if (!fmt || cJSON_IsNull(fmt)) return 0;
    const cJSON *type = GET(fmt, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "?";
    if (strcmp(t, "text") == 0) return 0;
    cJSON *rf = cJSON_AddObjectToObject(chat, "response_format");
    if (strcmp(t, "json_object") == 0) {
        cJSON_AddStringToObject(rf, "type", "json_object");
        return 0;
    }
    if (strcmp(t, "json_schema") != 0)
        return bad(e, "unsupported_value", "text.format type '%s' is not supported", t);
    cJSON_AddStringToObject(rf, "type", "json_schema");
    cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
    static const char *const copy[] = {"name", "schema", "strict", "description"};
    for (size_t i = 0; i < SG_ARRAY_LEN(copy); i++) {
        const cJSON *v = GET(fmt, copy[i]);
        if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(js, copy[i], cJSON_Duplicate(v, 1));
    }
    if (!GET(js, "name")) cJSON_AddStringToObject(js, "name", "response");
    return 0;
}

/* The chat request for a Responses request (its input resolved into r->input). */
static cJSON *to_chat(resp_t *r, sg_error_t *e)
{
    const cJSON *req = r->req;
    const cJSON *model = GET(req, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        sg_error_set(e, 400, "invalid_request_error", "missing_required_parameter",
                     "you must provide a model parameter");
        return NULL;
    }
    r->input = resolve_input(req, e);
    if (!r->input) return NULL;
    cJSON *chat = cJSON_CreateObject();
    cJSON_AddStringToObject(chat, "model", model->valuestring);
    cJSON *msgs = cJSON_AddArrayToObject(chat, "messages");
    const cJSON *instr = GET(req, "instructions");
    if (cJSON_IsString(instr) && instr->valuestring[0]) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", instr->valuestring);
        cJSON_AddItemToArray(msgs, m);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, r->input)
    {
        if (translate_item(it, msgs, e) != 0) goto fail;
    }
    if (!msgs->child) {
        bad(e, "invalid_value", "'input' must not be empty%s", "");
        goto fail;
    }
    static const struct {
        const char *from, *to;
    } nums[] = {{"temperature", "temperature"},
                {"top_p", "top_p"},
                {"max_output_tokens", "max_tokens"},
                {"parallel_tool_calls", "parallel_tool_calls"}};
    for (size_t i = 0; i < SG_ARRAY_LEN(nums); i++) {
        const cJSON *v = GET(req, nums[i].from);
        if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(chat, nums[i].to, cJSON_Duplicate(v, 1));
    }
    if (translate_tools(GET(req, "tools"), chat, e) != 0 ||
        translate_tool_choice(GET(req, "tool_choice"), chat, e) != 0 ||
        translate_format(GET(req, "text"), chat, e) != 0)
        goto fail;
    if (r->stream) {
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

/* ---- the response object ------------------------------------------------------------------ */

static cJSON *usage_json(const sg_usage_t *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "input_tokens_details"), "cached_tokens",
                            (double)u->cached_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "output_tokens_details"), "reasoning_tokens",
                            0);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->prompt_tokens + u->completion_tokens));
    return o;
}

static void echo(cJSON *o, const cJSON *req, const char *key, cJSON *dflt)
{
    const cJSON *v = GET(req, key);
    if (v) {
        cJSON_Delete(dflt);
        cJSON_AddItemToObject(o, key, cJSON_Duplicate(v, 1));
    } else {
        cJSON_AddItemToObject(o, key, dflt);
    }
}

static cJSON *usage_with_cost(resp_t *r)
{
    cJSON *u = usage_json(&r->a.rec.usage);
    sg_api_usage_cost(&r->a, u);
    return u;
}

/* The response object in its state now (status "in_progress", "completed", "incomplete",
 * "failed"); output and usage included when given. */
static cJSON *response_json(resp_t *r, const char *status, const cJSON *output, const sg_error_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)r->created);
    cJSON_AddStringToObject(o, "status", status);
    if (e) {
        cJSON *err = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(err, "code", e->code[0] ? e->code : "server_error");
        cJSON_AddStringToObject(err, "message", e->message);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    if (strcmp(status, "incomplete") == 0) {
        cJSON *d = cJSON_AddObjectToObject(o, "incomplete_details");
        cJSON_AddStringToObject(d, "reason",
                                strcmp(r->finish, "content_filter") == 0 ? "content_filter"
                                                                         : "max_output_tokens");
    } else {
        cJSON_AddNullToObject(o, "incomplete_details");
    }
    echo(o, r->req, "instructions", cJSON_CreateNull());
    echo(o, r->req, "max_output_tokens", cJSON_CreateNull());
    cJSON_AddStringToObject(o, "model", r->a.rec.route);
    cJSON_AddItemToObject(o, "output", output ? cJSON_Duplicate(output, 1) : cJSON_CreateArray());
    echo(o, r->req, "parallel_tool_calls", cJSON_CreateTrue());
    echo(o, r->req, "previous_response_id", cJSON_CreateNull());
    cJSON *reasoning = cJSON_AddObjectToObject(o, "reasoning");
    cJSON_AddNullToObject(reasoning, "effort");
    cJSON_AddNullToObject(reasoning, "summary");
    cJSON_AddBoolToObject(o, "store", r->store);
    echo(o, r->req, "temperature", cJSON_CreateNumber(1));
    cJSON *text = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(text, "format"), "type", "text");
    echo(o, r->req, "text", text);
    echo(o, r->req, "tool_choice", cJSON_CreateString("auto"));
    echo(o, r->req, "tools", cJSON_CreateArray());
    echo(o, r->req, "top_p", cJSON_CreateNumber(1));
    cJSON_AddStringToObject(o, "truncation", "disabled");
    if (strcmp(status, "in_progress") == 0)
        cJSON_AddNullToObject(o, "usage");
    else
        cJSON_AddItemToObject(o, "usage", usage_with_cost(r));
    echo(o, r->req, "user", cJSON_CreateNull());
    echo(o, r->req, "metadata", cJSON_CreateObject());
    return o;
}

static cJSON *message_item(const char *id, const char *text, const char *status)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "status", status);
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (text) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "output_text");
        cJSON_AddStringToObject(p, "text", text);
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddItemToArray(content, p);
    }
    return m;
}

static cJSON *call_item(const char *id, const char *call_id, const char *name, const char *args,
                        const char *status)
{
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", "function_call");
    cJSON_AddStringToObject(f, "id", id);
    cJSON_AddStringToObject(f, "call_id", call_id);
    cJSON_AddStringToObject(f, "name", name);
    cJSON_AddStringToObject(f, "arguments", args);
    cJSON_AddStringToObject(f, "status", status);
    return f;
}

static void keep(resp_t *r)
{
    if (!r->store || !r->output) return;
    sg_rstore_put(r->id, r->input, cJSON_Duplicate(r->output, 1), sg_unix_time());
    r->input = NULL;
}

static const char *final_status(const resp_t *r)
{
    return strcmp(r->finish, "length") == 0 || strcmp(r->finish, "content_filter") == 0
               ? "incomplete"
               : "completed";
}

/* ---- streaming ---------------------------------------------------------------------------- */

/* Sends one event: "event: <type>" and its data with type and sequence_number. */
static int emit(resp_t *r, const char *type, cJSON *data)
{
    sg_api_t *a = &r->a;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddNumberToObject(o, "sequence_number", (double)r->seq++);
    for (cJSON *it = data ? data->child : NULL; it;) {
        cJSON *next = it->next;
        cJSON_AddItemToObject(o, it->string, cJSON_DetachItemViaPointer(data, it));
        it = next;
    }
    cJSON_Delete(data);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    SG_ASSERT(s != NULL);
    int rc = sg_api_stream_event(a, &r->ev, type, s);
    free(s);
    return rc;
}

static int start_events(resp_t *r)
{
    if (r->started) return 0;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "response", response_json(r, "in_progress", NULL, NULL));
    if (emit(r, "response.created", d) != 0) return -1;
    r->started = 1;
    d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "response", response_json(r, "in_progress", NULL, NULL));
    return emit(r, "response.in_progress", d);
}

static cJSON *part_json(const char *text)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddStringToObject(p, "text", text);
    cJSON_AddArrayToObject(p, "annotations");
    return p;
}

static int close_message(resp_t *r)
{
    if (!r->msg_open) return 0;
    r->msg_open = 0;
    const char *text = r->text.data ? r->text.data : "";
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "item_id", r->msg_id);
    cJSON_AddNumberToObject(d, "output_index", r->msg_index);
    cJSON_AddNumberToObject(d, "content_index", 0);
    cJSON_AddStringToObject(d, "text", text);
    if (emit(r, "response.output_text.done", d) != 0) return -1;
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "item_id", r->msg_id);
    cJSON_AddNumberToObject(d, "output_index", r->msg_index);
    cJSON_AddNumberToObject(d, "content_index", 0);
    cJSON_AddItemToObject(d, "part", part_json(text));
    if (emit(r, "response.content_part.done", d) != 0) return -1;
    cJSON *item = message_item(r->msg_id, text, final_status(r));
    cJSON_AddItemToArray(r->output, cJSON_Duplicate(item, 1));
    d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "output_index", r->msg_index);
    cJSON_AddItemToObject(d, "item", item);
    return emit(r, "response.output_item.done", d);
}

static int close_call(resp_t *r)
{
    if (r->open_call < 0) return 0;
    call_t *c = &r->calls[r->open_call];
    r->open_call = -1;
    const char *args = c->args.data ? c->args.data : "";
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "item_id", c->item_id);
    cJSON_AddNumberToObject(d, "output_index", c->output_index);
    cJSON_AddStringToObject(d, "arguments", args);
    if (emit(r, "response.function_call_arguments.done", d) != 0) return -1;
    cJSON *item = call_item(c->item_id, c->call_id, c->name, args, final_status(r));
    cJSON_AddItemToArray(r->output, cJSON_Duplicate(item, 1));
    d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "output_index", c->output_index);
    cJSON_AddItemToObject(d, "item", item);
    return emit(r, "response.output_item.done", d);
}

static int text_delta(void *ud, const char *delta)
{
    resp_t *r = ud;
    if (!r->msg_open) {
        if (close_call(r) != 0) return -1;
        r->msg_open = 1;
        r->msg_index = r->n_out++;
        new_id(r->msg_id, sizeof(r->msg_id), "msg");
        sg_buf_reset(&r->text);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "output_index", r->msg_index);
        cJSON_AddItemToObject(d, "item", message_item(r->msg_id, NULL, "in_progress"));
        if (emit(r, "response.output_item.added", d) != 0) return -1;
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "item_id", r->msg_id);
        cJSON_AddNumberToObject(d, "output_index", r->msg_index);
        cJSON_AddNumberToObject(d, "content_index", 0);
        cJSON_AddItemToObject(d, "part", part_json(""));
        if (emit(r, "response.content_part.added", d) != 0) return -1;
    }
    sg_buf_append_str(&r->text, delta);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "item_id", r->msg_id);
    cJSON_AddNumberToObject(d, "output_index", r->msg_index);
    cJSON_AddNumberToObject(d, "content_index", 0);
    cJSON_AddStringToObject(d, "delta", delta);
    return emit(r, "response.output_text.delta", d);
}

static int tool_delta(void *ud, const cJSON *tc)
{
    resp_t *r = ud;
    const cJSON *id = GET(tc, "id");
    const cJSON *fn = GET(tc, "function");
    const cJSON *name = GET(fn, "name");
    const cJSON *args = GET(fn, "arguments");
    if (cJSON_IsString(id) && id->valuestring[0]) {
        /* A new call. */
        if (close_message(r) != 0 || close_call(r) != 0) return -1;
        if (r->n_calls >= MAX_CALLS) return 0;
        call_t *c = &r->calls[r->n_calls];
        r->open_call = r->n_calls++;
        new_id(c->item_id, sizeof(c->item_id), "fc");
        sg_strlcpy(c->call_id, sizeof(c->call_id), id->valuestring);
        sg_strlcpy(c->name, sizeof(c->name), cJSON_IsString(name) ? name->valuestring : "");
        sg_buf_init(&c->args, TEXT_MAX);
        c->output_index = r->n_out++;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "output_index", c->output_index);
        cJSON_AddItemToObject(d, "item",
                              call_item(c->item_id, c->call_id, c->name, "", "in_progress"));
        if (emit(r, "response.output_item.added", d) != 0) return -1;
    }
    if (r->open_call < 0 || !cJSON_IsString(args) || !args->valuestring[0]) return 0;
    call_t *c = &r->calls[r->open_call];
    sg_buf_append_str(&c->args, args->valuestring);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "item_id", c->item_id);
    cJSON_AddNumberToObject(d, "output_index", c->output_index);
    cJSON_AddStringToObject(d, "delta", args->valuestring);
    return emit(r, "response.function_call_arguments.delta", d);
}

static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t len)
{
    SG_UNUSED(raw);
    SG_UNUSED(len);
    resp_t *r = ud;
    if (!r->a.req) return 1;
    if (start_events(r) != 0) return 1;
    static const sg_chunk_visitor_t v = {text_delta, tool_delta};
    return sg_api_chunk_each(&r->a, chunk, &v, r, r->finish, sizeof(r->finish), &r->content_chunks);
}

/* ---- the end ------------------------------------------------------------------------------ */

/* Non-streamed: the chat.completion becomes the response object. */
static void done_whole(resp_t *r, cJSON *completion)
{
    const cJSON *ch = cJSON_GetArrayItem(GET(completion, "choices"), 0);
    const cJSON *msg = GET(ch, "message");
    const cJSON *content = GET(msg, "content");
    const cJSON *fr = GET(ch, "finish_reason");
    if (cJSON_IsString(fr)) sg_strlcpy(r->finish, sizeof(r->finish), fr->valuestring);
    if (cJSON_IsString(content) && content->valuestring[0]) {
        char id[48];
        new_id(id, sizeof(id), "msg");
        cJSON_AddItemToArray(r->output, message_item(id, content->valuestring, final_status(r)));
        r->content_chunks += (long)strlen(content->valuestring) / 4;
    }
    const cJSON *tc;
    cJSON_ArrayForEach(tc, GET(msg, "tool_calls"))
    {
        const cJSON *fn = GET(tc, "function");
        const cJSON *id = GET(tc, "id"), *name = GET(fn, "name"), *args = GET(fn, "arguments");
        char fid[48];
        new_id(fid, sizeof(fid), "fc");
        cJSON_AddItemToArray(r->output, call_item(fid, cJSON_IsString(id) ? id->valuestring : fid,
                                                  cJSON_IsString(name) ? name->valuestring : "",
                                                  cJSON_IsString(args) ? args->valuestring : "{}",
                                                  final_status(r)));
    }
    r->a.rec.ttft_ns = sg_now_ns();
    resp_settle(&r->a);
    cJSON *o = response_json(r, final_status(r), r->output, NULL);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    SG_ASSERT(s != NULL);
    sg_api_respond_json(&r->a, s, strlen(s));
    free(s);
}

static void sink_done(void *ud, cJSON *resp, const char *body, size_t len)
{
    SG_UNUSED(body);
    SG_UNUSED(len);
    resp_t *r = ud;
    if (!r->stream) {
        done_whole(r, resp);
    } else if (start_events(r) == 0 && close_message(r) == 0 && close_call(r) == 0) {
        resp_settle(&r->a);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "response", response_json(r, final_status(r), r->output, NULL));
        const char *type = strcmp(final_status(r), "completed") == 0 ? "response.completed"
                                                                     : "response.incomplete";
        if (emit(r, type, d) == 0) sg_api_stream_end(&r->a);
    }
    keep(r);
    sg_api_finish(&r->a, "ok");
}

static void fail_stream(sg_api_t *a, const sg_error_t *e)
{
    resp_t *r = (resp_t *)a;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "response", response_json(r, "failed", r->output, e));
    emit(r, "response.failed", d);
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "code", e->code[0] ? e->code : "server_error");
    cJSON_AddStringToObject(d, "message", e->message);
    cJSON_AddNullToObject(d, "param");
    emit(r, "error", d);
    sg_api_stream_end(&r->a);
}

static const sg_api_ops_t resp_ops = {resp_free, NULL, resp_settle, NULL, fail_stream};

void sg_responses_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    resp_t *r = sg_xcalloc(1, sizeof(*r));
    sg_api_t *a = &r->a;
    sg_api_init(a, &resp_ops, gw, req, "/v1/responses");
    new_id(r->id, sizeof(r->id), "resp");
    r->created = sg_unix_time();
    r->open_call = -1;
    r->output = cJSON_CreateArray();
    sg_buf_init(&r->text, TEXT_MAX);
    sg_buf_init(&r->ev, EVENT_MAX);
    sg_error_t e;
    sg_hints_t hints;
    sg_plan_t plan; /* copied by the pipeline */

    r->req = sg_api_parse(req, &e);
    if (!r->req) goto fail;
    const cJSON *stream = GET(r->req, "stream");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_type",
                     "'stream' must be a boolean");
        goto fail;
    }
    r->stream = cJSON_IsTrue(stream);
    r->store = !cJSON_IsFalse(GET(r->req, "store"));
    a->rec.stream = r->stream;
    a->body = to_chat(r, &e);
    if (!a->body) goto fail;
    if (sg_hints_read(sg_http_req_header(req, "x-sophia-provider"), a->body, &hints, &e) != 0)
        goto fail;
    const char *model = GET(a->body, "model")->valuestring;
    sg_strlcpy(a->rec.model, sizeof(a->rec.model), model);
    r->est_prompt_tokens = sg_api_estimate_messages(GET(a->body, "messages"));
    a->rec.ticket.prompt_est = r->est_prompt_tokens;
    if (sg_route_plan(a->gen, model, &hints, a->body, &plan, &e) != 0) goto fail;
    if (plan.routes[0].model->caps & SG_CAP_EMBED) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_value",
                     "'%s' is an embedding model: use POST /v1/embeddings",
                     plan.routes[0].public_name);
        goto fail;
    }
    sg_record_route(&a->rec, &plan.routes[0]);
    sg_pipeline_sink_t sink = {
        sink_chunk, NULL, sg_api_sink_usage, sink_done, sg_api_sink_fail, sg_api_sink_congested,
        r,          0};
    a->pipe =
        sg_pipeline_start(gw, a->gen, &plan, SG_OP_CHAT, a->body, r->stream, &a->rec, &sink, &e);
    if (!a->pipe) goto fail;
    sg_api_watch(a);
    return;
fail:
    sg_api_respond_error(a, &e, NULL);
    sg_api_finish(a, "rejected");
}
