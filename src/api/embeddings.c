/* POST /v1/embeddings: OpenAI's embeddings request (input as a string, a list of strings or a
 * list of token-id lists; encoding_format float or base64; dimensions) for any provider that
 * embeds: OpenAI-compatible servers get it as it is, Cortex through inference:embed
 * (src/providers/cortex.c). The answer is OpenAI's embeddings list with usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/api.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/route.h"

#define MAX_INPUTS 2048

typedef struct embed {
    sg_api_t a; /* first */
    long est_tokens;
} embed_t;

static void embed_free(sg_api_t *a)
{
    free(a);
}

static void embed_settle(sg_api_t *a)
{
    embed_t *m = (embed_t *)a;
    if (!a->rec.usage.known) a->rec.usage.prompt_tokens = m->est_tokens;
}

static const sg_api_ops_t embed_ops = {embed_free, NULL, embed_settle, NULL, NULL};

static int sink_chunk(void *ud, cJSON *chunk, const char *raw, size_t len)
{
    SG_UNUSED(ud);
    SG_UNUSED(chunk);
    SG_UNUSED(raw);
    SG_UNUSED(len);
    return 0; /* never streamed */
}

static void sink_done(void *ud, cJSON *resp, const char *body, size_t len)
{
    embed_t *m = ud;
    sg_api_t *a = &m->a;
    a->rec.ttft_ns = sg_now_ns();
    sg_buf_t b;
    sg_buf_init(&b, len + 1024);
    if (body && sg_json_splice_string(body, len, "model", a->rec.route, &b) == 0) {
        sg_api_respond_json(a, b.data, b.len);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(resp, "model");
        cJSON_AddStringToObject(resp, "model", a->rec.route);
        char *s = cJSON_PrintUnformatted(resp);
        SG_ASSERT(s != NULL);
        sg_api_respond_json(a, s, strlen(s));
        free(s);
    }
    sg_buf_dispose(&b);
    sg_api_finish(a, "ok");
}

/* Checks the request; counts its characters for the estimate. Returns 0 or -1 with e. */
static int validate(const cJSON *j, size_t *chars, sg_error_t *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        sg_error_set(e, 400, "invalid_request_error", "missing_required_parameter",
                     "'model' must be a non-empty string (an embedding model)");
        return -1;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(j, "input");
    *chars = 0;
    if (cJSON_IsString(input)) {
        *chars = strlen(input->valuestring);
        if (!*chars) goto empty;
    } else if (cJSON_IsArray(input) && input->child) {
        int n = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, input)
        {
            if (++n > MAX_INPUTS) {
                sg_error_set(e, 400, "invalid_request_error", "invalid_value",
                             "'input' may hold at most %d items", MAX_INPUTS);
                return -1;
            }
            if (cJSON_IsString(it)) {
                if (!it->valuestring[0]) goto empty;
                *chars += strlen(it->valuestring);
            } else if (cJSON_IsNumber(it) || cJSON_IsArray(it)) {
                *chars += 4 * (size_t)(cJSON_IsArray(it) ? cJSON_GetArraySize(it) : 1);
            } else {
                goto type;
            }
        }
    } else {
        goto type;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt) &&
        !(cJSON_IsString(fmt) &&
          (strcmp(fmt->valuestring, "float") == 0 || strcmp(fmt->valuestring, "base64") == 0))) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_value",
                     "'encoding_format' must be \"float\" or \"base64\"");
        return -1;
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(j, "dimensions");
    long long d;
    if (dims && !cJSON_IsNull(dims) && (sg_json_count(dims, 65536, &d) != 0 || d < 1)) {
        sg_error_set(e, 400, "invalid_request_error", "invalid_value",
                     "'dimensions' must be a positive integer");
        return -1;
    }
    return 0;
empty:
    sg_error_set(e, 400, "invalid_request_error", "invalid_value",
                 "'input' must not be empty (nor hold an empty string)");
    return -1;
type:
    sg_error_set(e, 400, "invalid_request_error", "invalid_type",
                 "'input' must be a string, an array of strings, or an array of token arrays");
    return -1;
}

void sg_embeddings_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    embed_t *m = sg_xcalloc(1, sizeof(*m));
    sg_api_t *a = &m->a;
    sg_api_init(a, &embed_ops, gw, req, "/v1/embeddings");
    sg_error_t e;
    sg_plan_t plan; /* copied by the pipeline */
    size_t chars;
    sg_hints_t hints;
    a->body = sg_api_parse(req, &e);
    if (!a->body || validate(a->body, &chars, &e) != 0) goto fail;
    m->est_tokens = sg_api_estimate_tokens(chars);
    m->a.rec.ticket.prompt_est = m->est_tokens;
    if (sg_hints_read(sg_http_req_header(req, "x-sophia-provider"), a->body, &hints, &e) != 0)
        goto fail;
    const char *model = cJSON_GetObjectItemCaseSensitive(a->body, "model")->valuestring;
    sg_strlcpy(a->rec.model, sizeof(a->rec.model), model);
    if (strcmp(model, "auto") == 0) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_value",
                     "embeddings need a named model (GET /v1/models lists them); \"auto\" "
                     "chooses chat models only");
        goto fail;
    }
    if (sg_route_plan(a->gen, model, &hints, a->body, &plan, &e) != 0) goto fail;
    const sg_route_t *r = &plan.routes[0];
    if (r->provider->ops->builtin_serves && !(r->model->caps & SG_CAP_EMBED)) {
        sg_error_set(&e, 400, "invalid_request_error", "invalid_value",
                     "'%s' is a chat model, not an embedding model (GET /v1/models lists them)",
                     r->public_name);
        goto fail;
    }
    sg_record_route(&a->rec, r);
    sg_pipeline_sink_t sink = {
        sink_chunk, NULL, sg_api_sink_usage, sink_done, sg_api_sink_fail, NULL, m, 0};
    a->pipe = sg_pipeline_start(gw, a->gen, &plan, SG_OP_EMBED, a->body, 0, &a->rec, &sink, &e);
    if (!a->pipe) goto fail;
    sg_api_watch(a);
    return;
fail:
    sg_api_respond_error(a, &e, NULL);
    sg_api_finish(a, "rejected");
}
