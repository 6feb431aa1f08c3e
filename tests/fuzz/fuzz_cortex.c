/* libFuzzer target for the Cortex adapter: the streaming decoder (fed in chunks whose sizes
 * come from the input), the non-stream conversion, the error mapping and the request
 * translation, on arbitrary bytes. Invariants: no crash or leak, every emitted chunk is an
 * object with a choices array, the end is reported at most once, and nothing is reported
 * after an error. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
#include "sophia/cortex.h"
#include "sophia/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    int ends, errors, after_error;
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
    check(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(chunk, "choices")));
    return 0;
}

static void on_usage(void *ud, const sg_usage_t *u)
{
    SG_UNUSED(ud);
    check(u->known || u->rejected);
    if (u->known) check(u->prompt_tokens >= 0 && u->completion_tokens >= 0);
}

static void on_end(void *ud)
{
    seen_t *s = ud;
    s->ends++;
}

static void on_error(void *ud, const sg_error_t *e)
{
    seen_t *s = ud;
    s->errors++;
    check(e->status >= 400 && e->status <= 599);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static sg_cortex_cfg_t cx = {.account = "a", .user = "u"};
    static sg_provider_cfg_t prov = {.name = "cortex", .kind = "cortex", .ext = &cx};
    static sg_model_cfg_t model = {.id = "llama3.1-8b", .api = "complete"};
    sg_route_t route = {.provider = &prov,
                        .model = &model,
                        .public_name = "cortex/llama3.1-8b",
                        .base_url = "http://127.0.0.1:1"};
    size_t step = (size_t)(data[0] % 64) + 1;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    seen_t s = {0};
    sg_decode_sink_t sink = {on_chunk, on_usage, on_end, on_error, &s, NULL};
    void *dec = sg_provider_cortex.decoder_new(&route, &sink);
    int stopped = 0;
    for (size_t off = 0; off < len && !stopped; off += step) {
        size_t n = len - off < step ? len - off : step;
        stopped = sg_provider_cortex.decode(dec, body + off, n) != 0;
    }
    if (!stopped) sg_provider_cortex.decode_finish(dec);
    sg_provider_cortex.decoder_free(dec);
    check(s.ends <= 1);
    check(s.after_error == 0);

    sg_usage_t u = {0};
    sg_error_t err;
    cJSON *resp = sg_provider_cortex.convert_response(&route, body, len, &u, &err);
    if (resp) check(cJSON_IsObject(resp));
    cJSON_Delete(resp);
    sg_provider_cortex.map_error(&route, 400 + data[0] % 200, body, len, &err);
    check(err.status >= 400 && err.status <= 599);

    cJSON *client = cJSON_ParseWithLength(body, len);
    if (cJSON_IsObject(client)) {
        sg_exchange_req_t xr = {0};
        sg_upstream_opts_t uo = {1000, 1000, 1000, 1000};
        char url[512];
        if (sg_provider_cortex.build_chat(&route, client, data[0] & 1, &uo, &xr, url, sizeof(url),
                                          &err) == 0) {
            curl_slist_free_all(xr.headers);
            free(xr.body);
        }
    }
    cJSON_Delete(client);
    return 0;
}
