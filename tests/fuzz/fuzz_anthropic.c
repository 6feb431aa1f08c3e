/* libFuzzer target for the Anthropic Messages wire format (src/providers/anthropic.c): the
 * stream decoder fed in chunks whose sizes come from the input, and the whole-answer
 * conversion, on arbitrary bytes. Invariants: no crash or leak, every forwarded event is SSE
 * text ending in a blank line, the end is reported at most once and never after an error,
 * nothing is forwarded after an error, and usage counts are in range. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
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
    SG_UNUSED(ud);
    SG_UNUSED(chunk);
    SG_UNUSED(raw);
    SG_UNUSED(raw_len);
    check(0); /* events go to raw_chunk */
    return 1;
}

static int on_raw(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    seen_t *s = ud;
    SG_UNUSED(has_content);
    SG_UNUSED(has_finish);
    if (s->errors || s->ends) s->after_error++;
    check(len >= 8 && memcmp(raw, "event: ", 7) == 0);
    check(raw[len - 1] == '\n' && raw[len - 2] == '\n');
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
    check(!s->errors);
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
    sg_route_t route = {.public_name = "cortex/claude-sonnet-4-5"};
    size_t step = (size_t)(data[0] % 64) + 1;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    seen_t s = {0};
    sg_decode_sink_t sink = {on_chunk, on_usage, on_end, on_error, &s, on_raw};
    void *dec = sg_wire_anthropic.decoder_new(&route, &sink);
    int stopped = 0;
    for (size_t off = 0; off < len && !stopped; off += step) {
        size_t n = len - off < step ? len - off : step;
        stopped = sg_wire_anthropic.decode(dec, body + off, n) != 0;
    }
    if (!stopped) sg_wire_anthropic.decode_finish(dec);
    sg_wire_anthropic.decoder_free(dec);
    check(s.ends <= 1 && s.errors <= 1 && s.after_error == 0);

    sg_usage_t u = {0};
    sg_error_t e;
    cJSON *j = sg_wire_anthropic.convert_response(&route, body, len, &u, &e);
    if (j) {
        check(cJSON_IsObject(j));
        if (u.known) check(u.prompt_tokens >= 0 && u.completion_tokens >= 0);
    } else {
        check(e.status >= 400 && e.status <= 599);
    }
    cJSON_Delete(j);
    return 0;
}
