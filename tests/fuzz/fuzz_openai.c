/* libFuzzer target for the OpenAI-compatible adapter: the stream decoder with its raw-chunk
 * fast path (fed in chunks whose sizes come from the input), the same stream without the
 * fast path, the non-stream conversion, the error mapping and the request building.
 * Invariants: no crash or leak; both decodings see the same number of events, ends and
 * errors; a raw-forwarded chunk is a JSON object without "usage" or "error"; accepted usage
 * is within [0, SG_TOKENS_MAX]; the end is reported at most once and nothing follows an
 * error. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
#include "sophia/openai.h"
#include "sophia/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    int events, ends, errors, after_error;
} seen_t;

static void check(int cond)
{
    if (!cond) abort();
}

static int on_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    seen_t *s = ud;
    SG_UNUSED(raw);
    SG_UNUSED(raw_len);
    if (s->errors) s->after_error++;
    check(cJSON_IsObject(chunk));
    s->events++;
    return 0;
}

static int on_raw(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    seen_t *s = ud;
    SG_UNUSED(has_content);
    SG_UNUSED(has_finish);
    if (s->errors) s->after_error++;
    cJSON *j = cJSON_ParseWithLength(raw, len);
    /* The fast path only looks at the edges: a forwarded chunk is at least brace-delimited
     * and names neither usage nor error. */
    check(len >= 2);
    check(memmem(raw, len, "\"usage\"", 7) == NULL && memmem(raw, len, "\"error\"", 7) == NULL);
    cJSON_Delete(j);
    s->events++;
    return 0;
}

static void on_usage(void *ud, const sg_usage_t *u)
{
    SG_UNUSED(ud);
    check(u->known || u->rejected);
    if (u->known)
        check(u->prompt_tokens >= 0 && u->prompt_tokens <= SG_TOKENS_MAX &&
              u->completion_tokens >= 0 && u->completion_tokens <= SG_TOKENS_MAX);
}

static void on_end(void *ud)
{
    ((seen_t *)ud)->ends++;
}

static void on_error(void *ud, const sg_error_t *e)
{
    seen_t *s = ud;
    s->errors++;
    check(e->status >= 400 && e->status <= 599);
}

static void decode(const sg_route_t *route, const char *body, size_t len, size_t step, int fast,
                   seen_t *s)
{
    sg_decode_sink_t sink = {on_chunk, on_usage, on_end, on_error, s, fast ? on_raw : NULL};
    void *dec = sg_provider_openai.decoder_new(route, &sink);
    int stopped = 0;
    for (size_t off = 0; off < len && !stopped; off += step) {
        size_t n = len - off < step ? len - off : step;
        stopped = sg_provider_openai.decode(dec, body + off, n) != 0;
    }
    if (!stopped) sg_provider_openai.decode_finish(dec);
    sg_provider_openai.decoder_free(dec);
    check(s->ends <= 1);
    check(s->after_error == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static sg_openai_cfg_t oa = {.api_key = "k"};
    static sg_provider_cfg_t prov = {.name = "lambda", .kind = "openai", .ext = &oa};
    static sg_model_cfg_t model = {.id = "m"};
    sg_route_t route = {.provider = &prov,
                        .model = &model,
                        .public_name = "lambda/m",
                        .base_url = "http://127.0.0.1:1/v1"};
    size_t step = (size_t)(data[0] % 64) + 1;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    seen_t fast = {0}, slow = {0};
    decode(&route, body, len, step, 1, &fast);
    decode(&route, body, len, len, 0, &slow);
    check(fast.ends == slow.ends);
    check(fast.errors == slow.errors);
    check(fast.events == slow.events);

    sg_usage_t u = {0};
    sg_error_t err;
    cJSON *resp = sg_provider_openai.convert_response(&route, body, len, &u, &err);
    if (resp) check(cJSON_IsObject(resp));
    if (u.known) check(u.prompt_tokens >= 0 && u.completion_tokens >= 0);
    cJSON_Delete(resp);
    sg_provider_openai.map_error(&route, 400 + data[0] % 200, body, len, &err);
    check(err.status >= 400 && err.status <= 599);

    cJSON *client = cJSON_ParseWithLength(body, len);
    if (cJSON_IsObject(client)) {
        sg_exchange_req_t xr = {0};
        sg_upstream_opts_t uo = {1000, 1000, 1000, 1000};
        char url[512];
        if (sg_provider_openai.build_chat(&route, client, data[0] & 1, &uo, &xr, url, sizeof(url),
                                          &err) == 0) {
            curl_slist_free_all(xr.headers);
            free(xr.body);
        }
    }
    cJSON_Delete(client);
    return 0;
}
