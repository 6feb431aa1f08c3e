/* libFuzzer target for the SSE parser.
 *
 * Input layout: byte 0 picks the cap (small, so the too-large paths are reached), bytes 1..8
 * are a cycle of chunk sizes (0..31; empty feeds included), the rest is the stream. The stream
 * is parsed twice, in one feed and in those chunks; both runs must give the same result and
 * the same events. Every event must be well formed: NUL-terminated at its lengths, within the
 * cap, strlen(data) == data_len when the stream holds no NUL byte, and an id never holds NUL. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct run {
    sg_buf_t log; /* serialised events */
    size_t cap;
    int has_nul;
    size_t n;
} run_t;

static void check(int cond)
{
    if (!cond) abort();
}

static void log_field(sg_buf_t *log, const char *s, size_t n)
{
    check(sg_buf_printf(log, "%zu:", n) == 0);
    check(sg_buf_append(log, s, n) == 0);
}

static int on_event(void *ud, const sg_sse_event_t *ev)
{
    run_t *r = ud;
    check(ev->event && ev->data && ev->id);
    check(ev->event[ev->event_len] == '\0');
    check(ev->data[ev->data_len] == '\0');
    check(ev->id[ev->id_len] == '\0');
    check(ev->data_len <= r->cap && ev->event_len <= r->cap && ev->id_len <= r->cap);
    check(strlen(ev->id) == ev->id_len);
    if (!r->has_nul) {
        check(strlen(ev->data) == ev->data_len);
        check(strlen(ev->event) == ev->event_len);
    }
    log_field(&r->log, ev->event, ev->event_len);
    log_field(&r->log, ev->data, ev->data_len);
    log_field(&r->log, ev->id, ev->id_len);
    r->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9) return 0;
    size_t cap = 1 + data[0] % 64;
    uint8_t sizes[8];
    int any = 0;
    for (int i = 0; i < 8; i++) {
        sizes[i] = data[1 + i] % 32;
        any |= sizes[i];
    }
    if (!any) sizes[0] = 1;
    const char *s = (const char *)data + 9;
    size_t n = size - 9;

    run_t whole = {.cap = cap, .has_nul = memchr(s, '\0', n) != NULL};
    run_t split = whole;
    sg_buf_init(&whole.log, 1u << 24);
    sg_buf_init(&split.log, 1u << 24);

    sg_sse_parser_t p;
    sg_sse_parser_init(&p, cap, on_event, &whole);
    int rw = sg_sse_parser_feed(&p, s, n);
    if (rw == 0) rw = sg_sse_parser_finish(&p);
    sg_sse_parser_dispose(&p);

    sg_sse_parser_init(&p, cap, on_event, &split);
    int rs = 0;
    size_t off = 0;
    for (size_t k = 0; rs == 0 && off < n; k++) {
        size_t len = sizes[k % 8];
        if (len > n - off) len = n - off;
        rs = sg_sse_parser_feed(&p, s + off, len);
        off += len;
    }
    if (rs == 0) rs = sg_sse_parser_finish(&p);
    sg_sse_parser_dispose(&p);

    check(rw == 0 || rw == SG_ERR_TOO_LARGE);
    check(rw == rs);
    check(whole.n == split.n);
    check(whole.log.len == split.log.len);
    check(whole.log.len == 0 || memcmp(whole.log.data, split.log.data, whole.log.len) == 0);

    sg_buf_dispose(&whole.log);
    sg_buf_dispose(&split.log);
    return 0;
}
