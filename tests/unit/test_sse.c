/* Unit tests for the incremental SSE parser (src/core/sse.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/sse.h"

#define MAX_EVENTS 64
#define BIG_CAP (1u << 20)

typedef struct rec {
    char *event, *data, *id;
    size_t event_len, data_len, id_len;
} rec_t;

typedef struct collector {
    rec_t ev[MAX_EVENTS];
    size_t n;
    size_t stop_at; /* when non-zero, the callback returns stop_ret for event number stop_at */
    int stop_ret;
    sg_buf_t log; /* every event serialised, to compare whole runs */
} collector_t;

static char *dup_bytes(const char *s, size_t n)
{
    char *p = sg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void log_field(sg_buf_t *log, const char *s, size_t n)
{
    assert_int_equal(sg_buf_printf(log, "%zu:", n), 0);
    assert_int_equal(sg_buf_append(log, s, n), 0);
    assert_int_equal(sg_buf_append(log, ";", 1), 0);
}

static int on_event(void *ud, const sg_sse_event_t *ev)
{
    collector_t *c = ud;
    /* Every string is NUL-terminated at its length. */
    assert_non_null(ev->event);
    assert_non_null(ev->data);
    assert_non_null(ev->id);
    assert_int_equal(ev->event[ev->event_len], '\0');
    assert_int_equal(ev->data[ev->data_len], '\0');
    assert_int_equal(ev->id[ev->id_len], '\0');
    assert_true(c->n < MAX_EVENTS);
    rec_t *r = &c->ev[c->n++];
    r->event = dup_bytes(ev->event, ev->event_len);
    r->event_len = ev->event_len;
    r->data = dup_bytes(ev->data, ev->data_len);
    r->data_len = ev->data_len;
    r->id = dup_bytes(ev->id, ev->id_len);
    r->id_len = ev->id_len;
    log_field(&c->log, ev->event, ev->event_len);
    log_field(&c->log, ev->data, ev->data_len);
    log_field(&c->log, ev->id, ev->id_len);
    assert_int_equal(sg_buf_append(&c->log, "\n", 1), 0);
    if (c->stop_at && c->n == c->stop_at) return c->stop_ret;
    return 0;
}

static void collector_init(collector_t *c)
{
    memset(c, 0, sizeof(*c));
    sg_buf_init(&c->log, BIG_CAP);
}

static void collector_dispose(collector_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->ev[i].event);
        free(c->ev[i].data);
        free(c->ev[i].id);
    }
    c->n = 0;
    sg_buf_dispose(&c->log);
}

/* Parses the whole of s in one feed plus finish; returns the first non-zero result. */
static int parse_all(collector_t *c, size_t cap, const char *s, size_t n)
{
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, cap, on_event, c);
    int r = sg_sse_parser_feed(&p, s, n);
    if (r == 0) r = sg_sse_parser_finish(&p);
    sg_sse_parser_dispose(&p);
    return r;
}

static int parse_str(collector_t *c, const char *s)
{
    return parse_all(c, BIG_CAP, s, strlen(s));
}

static void assert_event(const collector_t *c, size_t i, const char *event, const char *data,
                         const char *id)
{
    assert_true(i < c->n);
    assert_string_equal(c->ev[i].event, event);
    assert_int_equal(c->ev[i].event_len, strlen(event));
    assert_string_equal(c->ev[i].data, data);
    assert_int_equal(c->ev[i].data_len, strlen(data));
    assert_string_equal(c->ev[i].id, id);
    assert_int_equal(c->ev[i].id_len, strlen(id));
}

/* ---- basic events ---- */

static void test_single_event(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data: hello\n\n"), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "hello", "");
    collector_dispose(&c);
}

static void test_no_dispatch_before_blank_line(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: a\n", 8), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\n", 1), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a", "");
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

static void test_multiple_events(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data: one\n\ndata: two\n\n\n\ndata: three\n\n"), 0);
    assert_int_equal(c.n, 3);
    assert_event(&c, 0, "", "one", "");
    assert_event(&c, 1, "", "two", "");
    assert_event(&c, 2, "", "three", "");
    collector_dispose(&c);
}

static void test_multi_line_data_joined_with_lf(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data: a\ndata: b\ndata:c\n\n"), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a\nb\nc", "");
    collector_dispose(&c);
}

/* ---- line endings ---- */

static void test_lf_line_endings(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "event: x\ndata: 1\ndata: 2\n\ndata: 3\n\n"), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 0, "x", "1\n2", "");
    assert_event(&c, 1, "", "3", "");
    collector_dispose(&c);
}

static void test_crlf_line_endings(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "event: x\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n"), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 0, "x", "1\n2", "");
    assert_event(&c, 1, "", "3", "");
    collector_dispose(&c);
}

static void test_cr_line_endings(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "event: x\rdata: 1\rdata: 2\r\rdata: 3\r\r"), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 0, "x", "1\n2", "");
    assert_event(&c, 1, "", "3", "");
    collector_dispose(&c);
}

static void test_mixed_line_endings(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    /* LF CR is two line endings (a blank line), CR LF is one. */
    assert_int_equal(parse_str(&c, "data: a\r\ndata: b\n\rdata: c\r\r\ndata: d\n\r\n"), 0);
    assert_int_equal(c.n, 3);
    assert_event(&c, 0, "", "a\nb", "");
    assert_event(&c, 1, "", "c", "");
    assert_event(&c, 2, "", "d", "");
    collector_dispose(&c);
}

static void test_cr_at_end_of_feed_then_lf(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    /* The LF that starts the next feed completes the CR line ending: it is no blank line. */
    assert_int_equal(sg_sse_parser_feed(&p, "data: a\r", 8), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "", 0), 0); /* an empty feed keeps the CR state */
    assert_int_equal(sg_sse_parser_feed(&p, "\ndata: b\r", 9), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\n", 1), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\r", 1), 0); /* the blank line */
    assert_int_equal(c.n, 1);
    assert_int_equal(sg_sse_parser_feed(&p, "\n", 1), 0); /* ends that CR, no new line */
    assert_int_equal(sg_sse_parser_feed(&p, "data: c\n\n", 9), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 1, "", "c", "");
    assert_event(&c, 0, "", "a\nb", "");
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

static void test_cr_at_end_of_feed_then_cr(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: a\r", 8), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\r", 1), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a", "");
    /* A later LF is a blank line of its own, not part of an earlier CR. */
    assert_int_equal(sg_sse_parser_feed(&p, "data: b\n", 8), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\n", 1), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 1, "", "b", "");
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

/* ---- comments and fields ---- */

static void test_comment_lines_ignored(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, ": keep-alive\n\n:\n: data: no\n"
                                   "data: a\n: between data lines\ndata: b\n\n"),
                     0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a\nb", "");
    collector_dispose(&c);
}

static void test_comment_only_stream_has_no_events(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, ": ping\n\n: ping\r\n\r\n:ping"), 0);
    assert_int_equal(c.n, 0);
    collector_dispose(&c);
}

static void test_event_type(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "event: add\ndata: 1\n\n"
                                   "data: 2\n\n"
                                   "event: first\nevent: second\ndata: 3\n\n"),
                     0);
    assert_int_equal(c.n, 3);
    assert_event(&c, 0, "add", "1", "");
    assert_event(&c, 1, "", "2", ""); /* the type is cleared after dispatch */
    assert_event(&c, 2, "second", "3", "");
    collector_dispose(&c);
}

static void test_event_type_cleared_by_blank_line_without_data(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "event: lost\n\ndata: x\n\n"), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "x", "");
    collector_dispose(&c);
}

static void test_id_persists_across_events(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "id: 1\ndata: a\n\n"
                                   "data: b\n\n"
                                   "id: 2\n\n" /* an id without data still updates it */
                                   "data: c\n\n"
                                   "id\ndata: d\n\n" /* an empty id resets it */
                                   "id: 3\ndata: e\n\n"),
                     0);
    assert_int_equal(c.n, 5);
    assert_event(&c, 0, "", "a", "1");
    assert_event(&c, 1, "", "b", "1");
    assert_event(&c, 2, "", "c", "2");
    assert_event(&c, 3, "", "d", "");
    assert_event(&c, 4, "", "e", "3");
    collector_dispose(&c);
}

static void test_id_with_nul_ignored(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    static const char s[] = "id: 7\ndata: a\n\nid: x\0y\ndata: b\n\n";
    assert_int_equal(parse_all(&c, BIG_CAP, s, sizeof(s) - 1), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 0, "", "a", "7");
    assert_event(&c, 1, "", "b", "7");
    collector_dispose(&c);
}

static void test_retry_and_unknown_fields_ignored(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "retry: 1000\nfoo: bar\nDATA: upper\ndatax: y\n\n"
                                   "retry: 5\ndata: ok\nretry\n\n"),
                     0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "ok", "");
    collector_dispose(&c);
}

static void test_empty_data_line_dispatches(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data:\n\ndata: \n\ndata:\ndata:\n\ndata:\ndata: x\n\n"), 0);
    assert_int_equal(c.n, 4);
    assert_event(&c, 0, "", "", "");
    assert_event(&c, 1, "", "", "");
    assert_event(&c, 2, "", "\n", "");
    assert_event(&c, 3, "", "\nx", "");
    collector_dispose(&c);
}

static void test_field_without_colon_has_empty_value(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data\n\n"
                                   "event: e\nevent\ndata\ndata\n\n"
                                   "unknown\n\n"),
                     0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 0, "", "", "");
    assert_event(&c, 1, "", "\n", ""); /* "event" with no colon reset the type */
    collector_dispose(&c);
}

static void test_only_one_leading_space_stripped(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "data:  two\n\n"
                                   "data:none\n\n"
                                   "data:\tx\n\n"
                                   "data: a: b:c \n\n"
                                   "event:   e \ndata: y\n\n"),
                     0);
    assert_int_equal(c.n, 5);
    assert_event(&c, 0, "", " two", "");
    assert_event(&c, 1, "", "none", "");
    assert_event(&c, 2, "", "\tx", "");
    assert_event(&c, 3, "", "a: b:c ", "");
    assert_event(&c, 4, "  e ", "y", "");
    collector_dispose(&c);
}

static void test_nul_byte_in_data_kept(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    static const char s[] = "data: a\0b\n\n";
    assert_int_equal(parse_all(&c, BIG_CAP, s, sizeof(s) - 1), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0].data_len, 3);
    assert_memory_equal(c.ev[0].data, "a\0b", 4);
    collector_dispose(&c);
}

/* ---- BOM ---- */

static void test_bom_skipped_at_start(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_str(&c, "\xEF\xBB\xBF"
                                   "data: x\n\n"),
                     0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "x", "");
    collector_dispose(&c);
}

static void test_bom_split_across_feeds(void **state)
{
    (void)state;
    static const char s[] = "\xEF\xBB\xBF"
                            "data: x\n\n";
    for (size_t i = 0; i <= 4; i++) {
        for (size_t j = i; j <= 4; j++) {
            collector_t c;
            collector_init(&c);
            sg_sse_parser_t p;
            sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
            assert_int_equal(sg_sse_parser_feed(&p, s, i), 0);
            assert_int_equal(sg_sse_parser_feed(&p, s + i, j - i), 0);
            assert_int_equal(sg_sse_parser_feed(&p, s + j, sizeof(s) - 1 - j), 0);
            assert_int_equal(sg_sse_parser_finish(&p), 0);
            assert_int_equal(c.n, 1);
            assert_event(&c, 0, "", "x", "");
            sg_sse_parser_dispose(&p);
            collector_dispose(&c);
        }
    }
}

static void test_bom_only_skipped_once_and_only_whole(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    /* A second BOM is part of the field name, so the line is an unknown field. */
    assert_int_equal(parse_str(&c, "\xEF\xBB\xBF\xEF\xBB\xBF"
                                   "data: x\n\n"),
                     0);
    assert_int_equal(c.n, 0);
    /* A BOM later in the stream is not skipped either. */
    assert_int_equal(parse_str(&c, "data: a\n\n\xEF\xBB\xBF"
                                   "data: b\n\n"),
                     0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a", "");
    collector_dispose(&c);

    /* A partial BOM is kept as line bytes, also when split across feeds. */
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "\xEF", 1), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\xBB", 1), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "data: x\n\ndata: y\n\n", 18), 0);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "y", "");
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);

    /* A partial BOM pending at finish becomes the last line. */
    collector_init(&c);
    sg_sse_parser_init(&p, 2, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "\xEF\xBB", 2), 0);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, 0);
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

/* ---- caps ---- */

static void test_line_at_cap_accepted(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    /* "data: 12345" is 11 bytes; the data is 5. */
    assert_int_equal(parse_all(&c, 11, "data: 12345\n\n", 13), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "12345", "");
    collector_dispose(&c);
}

static void test_line_over_cap_in_one_feed(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    assert_int_equal(parse_all(&c, 10, "data: a\n\ndata: 12345\n\ndata: b\n\n", 31),
                     SG_ERR_TOO_LARGE);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a", "");
    collector_dispose(&c);
}

static void test_line_over_cap_across_feeds(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, 10, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: 12", 8), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "34", 2), 0); /* 10 bytes: still fine */
    assert_int_equal(sg_sse_parser_feed(&p, "5", 1), SG_ERR_TOO_LARGE);
    assert_int_equal(c.n, 0);
    sg_sse_parser_dispose(&p);

    /* An unterminated over-long line at the end of one feed fails too. */
    sg_sse_parser_init(&p, 10, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: 12345", 11), SG_ERR_TOO_LARGE);
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

static void test_event_data_over_cap(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    /* Each line fits in 10 bytes but the joined data "abcd\nefgh\nij" (12) does not. */
    assert_int_equal(parse_all(&c, 10, "data:abcd\ndata:efgh\ndata:ij\n\n", 29), SG_ERR_TOO_LARGE);
    assert_int_equal(c.n, 0);
    /* Exactly at the cap is fine: "abcd\nefgh" is 9, plus "\n" is 10. */
    assert_int_equal(parse_all(&c, 10, "data:abcd\ndata:efgh\ndata\n\n", 26), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "abcd\nefgh\n", "");
    collector_dispose(&c);
}

static void test_large_data_in_small_feeds(void **state)
{
    (void)state;
    enum { N = 20000 };
    char *s = sg_xmalloc(N + 16);
    memcpy(s, "data: ", 6);
    for (size_t i = 0; i < N; i++) s[6 + i] = (char)('a' + i % 26);
    memcpy(s + 6 + N, "\r\n\r\n", 4);
    size_t n = 6 + N + 4;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, N + 6, on_event, &c);
    for (size_t off = 0; off < n; off += 7) {
        size_t k = n - off < 7 ? n - off : 7;
        assert_int_equal(sg_sse_parser_feed(&p, s + off, k), 0);
    }
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0].data_len, N);
    assert_memory_equal(c.ev[0].data, s + 6, N);
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
    free(s);
}

/* ---- finish ---- */

static void test_finish_dispatches_unterminated_event(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;

    /* Last line without a line ending. */
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: a\n\nevent: e\ndata: b\ndata: c", 33), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, 2);
    assert_event(&c, 1, "e", "b\nc", "");
    assert_int_equal(sg_sse_parser_finish(&p), 0); /* nothing left */
    assert_int_equal(c.n, 2);
    sg_sse_parser_dispose(&p);

    /* Line ended but no blank line; and a trailing CR. */
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: d\ndata: e\r", 16), 0);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, 3);
    assert_event(&c, 2, "", "d\ne", "");
    sg_sse_parser_dispose(&p);

    collector_dispose(&c);
}

static void test_finish_without_pending_data(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_finish(&p), 0); /* empty stream */
    sg_sse_parser_dispose(&p);
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: a\n\nevent: e\nid: 1\n: c", 27), 0);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    sg_sse_parser_dispose(&p);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "a", "");
    collector_dispose(&c);
}

/* ---- callback stop ---- */

static void test_callback_stop_return_value(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    c.stop_at = 2;
    c.stop_ret = 42;
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27), 42);
    assert_int_equal(c.n, 2);
    assert_event(&c, 1, "", "2", "");
    sg_sse_parser_dispose(&p);

    /* finish returns the callback's value too. */
    c.stop_at = 3;
    c.stop_ret = SG_ERR_STOP;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, "data: 3", 7), 0);
    assert_int_equal(sg_sse_parser_finish(&p), SG_ERR_STOP);
    assert_int_equal(c.n, 3);
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

static void test_empty_feeds_are_harmless(void **state)
{
    (void)state;
    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, BIG_CAP, on_event, &c);
    assert_int_equal(sg_sse_parser_feed(&p, NULL, 0), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "data: x", 7), 0);
    assert_int_equal(sg_sse_parser_feed(&p, NULL, 0), 0);
    assert_int_equal(sg_sse_parser_feed(&p, "\n\n", 2), 0);
    assert_int_equal(c.n, 1);
    assert_event(&c, 0, "", "x", "");
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
}

/* ---- recorded streams, split everywhere ---- */

typedef struct expected {
    const char *event, *data, *id;
} expected_t;

static const char k_openai_stream[] =
    "data: "
    "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    "data: "
    "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,"
    "\"finish_reason\":null}]}\n\n"
    ": keep-alive\n\n"
    "data: "
    "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\\n\"},\"logprobs\":null,"
    "\"finish_reason\":null}]}\n\n"
    "data: "
    "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}"
    "\n\n"
    "data: "
    "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,"
    "\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

static const expected_t k_openai_expected[] = {
    {"",
     "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
     "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
     "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
     "\"logprobs\":null,\"finish_reason\":null}]}",
     ""},
    {"",
     "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
     "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
     "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,"
     "\"finish_reason\":null}]}",
     ""},
    {"",
     "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
     "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
     "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\\n\"},\"logprobs\":null,"
     "\"finish_reason\":null}]}",
     ""},
    {"",
     "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
     "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
     "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
     ""},
    {"",
     "{\"id\":\"chatcmpl-9xYz\",\"object\":\"chat.completion.chunk\",\"created\":1719000000,"
     "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","
     "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,"
     "\"total_tokens\":12}}",
     ""},
    {"", "[DONE]", ""},
};

/* Pretty-printed multi-line data with event types, ids, comments, a BOM, a retry field, mixed
 * line endings and a last event that the upstream never terminates (dispatched by finish). */
static const char k_pretty_stream[] = "\xEF\xBB\xBF: stream opened\r\n"
                                      "retry: 3000\r\n"
                                      "\r\n"
                                      "event: message_start\r\n"
                                      "id: 1\r\n"
                                      "data: {\r\n"
                                      "data:   \"type\": \"message_start\",\r\n"
                                      "data:   \"message\": {\"id\": \"msg_01\"}\r\n"
                                      "data: }\r\n"
                                      "\r\n"
                                      ": ping\n"
                                      "event: content_block_delta\n"
                                      "id: 2\n"
                                      "data: {\n"
                                      "data:   \"delta\": {\"text\": \"Hi\\nthere\"}\n"
                                      "data: }\n"
                                      "\n"
                                      "data:\n"
                                      "data\n"
                                      "\n"
                                      "event: message_stop\r"
                                      "data: {\"type\": \"message_stop\"}\r"
                                      "\r"
                                      "event: tail\n"
                                      "data: last";

static const expected_t k_pretty_expected[] = {
    {"message_start", "{\n  \"type\": \"message_start\",\n  \"message\": {\"id\": \"msg_01\"}\n}",
     "1"},
    {"content_block_delta", "{\n  \"delta\": {\"text\": \"Hi\\nthere\"}\n}", "2"},
    {"", "\n", "2"},
    {"message_stop", "{\"type\": \"message_stop\"}", "2"},
    {"tail", "last", "2"},
};

static void build_expected_log(sg_buf_t *log, const expected_t *ex, size_t n)
{
    sg_buf_init(log, BIG_CAP);
    for (size_t i = 0; i < n; i++) {
        log_field(log, ex[i].event, strlen(ex[i].event));
        log_field(log, ex[i].data, strlen(ex[i].data));
        log_field(log, ex[i].id, strlen(ex[i].id));
        assert_int_equal(sg_buf_append(log, "\n", 1), 0);
    }
}

static void assert_same_log(const collector_t *c, const sg_buf_t *want)
{
    assert_int_equal(c->log.len, want->len);
    assert_memory_equal(c->log.data, want->data, want->len);
}

/* Feeds s as [0,i) and [i,n) for every i, then one byte at a time; each run must produce
 * exactly the expected events. */
static void check_every_split(const char *s, size_t n, const expected_t *ex, size_t nex)
{
    sg_buf_t want;
    build_expected_log(&want, ex, nex);

    for (size_t i = 0; i <= n; i++) {
        collector_t c;
        collector_init(&c);
        sg_sse_parser_t p;
        sg_sse_parser_init(&p, 4096, on_event, &c);
        assert_int_equal(sg_sse_parser_feed(&p, s, i), 0);
        assert_int_equal(sg_sse_parser_feed(&p, s + i, n - i), 0);
        assert_int_equal(sg_sse_parser_finish(&p), 0);
        assert_int_equal(c.n, nex);
        assert_same_log(&c, &want);
        sg_sse_parser_dispose(&p);
        collector_dispose(&c);
    }

    collector_t c;
    collector_init(&c);
    sg_sse_parser_t p;
    sg_sse_parser_init(&p, 4096, on_event, &c);
    for (size_t i = 0; i < n; i++) assert_int_equal(sg_sse_parser_feed(&p, s + i, 1), 0);
    assert_int_equal(sg_sse_parser_finish(&p), 0);
    assert_int_equal(c.n, nex);
    assert_same_log(&c, &want);
    for (size_t i = 0; i < nex; i++) assert_event(&c, i, ex[i].event, ex[i].data, ex[i].id);
    sg_sse_parser_dispose(&p);
    collector_dispose(&c);
    sg_buf_dispose(&want);
}

static void test_openai_stream_split_at_every_byte(void **state)
{
    (void)state;
    check_every_split(k_openai_stream, sizeof(k_openai_stream) - 1, k_openai_expected,
                      SG_ARRAY_LEN(k_openai_expected));
}

static void test_openai_stream_crlf_split_at_every_byte(void **state)
{
    (void)state;
    /* The same stream with CRLF line endings (as some proxies rewrite it). */
    sg_buf_t s;
    sg_buf_init(&s, BIG_CAP);
    for (size_t i = 0; i + 1 < sizeof(k_openai_stream); i++) {
        if (k_openai_stream[i] == '\n') assert_int_equal(sg_buf_append(&s, "\r", 1), 0);
        assert_int_equal(sg_buf_append(&s, &k_openai_stream[i], 1), 0);
    }
    check_every_split(s.data, s.len, k_openai_expected, SG_ARRAY_LEN(k_openai_expected));
    sg_buf_dispose(&s);
}

static void test_pretty_multiline_stream_split_at_every_byte(void **state)
{
    (void)state;
    check_every_split(k_pretty_stream, sizeof(k_pretty_stream) - 1, k_pretty_expected,
                      SG_ARRAY_LEN(k_pretty_expected));
}

static void test_cap_error_same_at_every_split(void **state)
{
    (void)state;
    /* "data: second" is 12 bytes against a cap of 11: every split fails on that line, after
     * the first event and before anything later. */
    static const char s[] = "data: first\n\ndata: second\n\ndata: x\n\n";
    size_t n = sizeof(s) - 1;
    for (size_t i = 0; i <= n; i++) {
        collector_t c;
        collector_init(&c);
        sg_sse_parser_t p;
        sg_sse_parser_init(&p, 11, on_event, &c);
        int r = sg_sse_parser_feed(&p, s, i);
        if (r == 0) r = sg_sse_parser_feed(&p, s + i, n - i);
        if (r == 0) r = sg_sse_parser_finish(&p);
        assert_int_equal(r, SG_ERR_TOO_LARGE);
        assert_int_equal(c.n, 1);
        assert_event(&c, 0, "", "first", "");
        sg_sse_parser_dispose(&p);
        collector_dispose(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_event),
        cmocka_unit_test(test_no_dispatch_before_blank_line),
        cmocka_unit_test(test_multiple_events),
        cmocka_unit_test(test_multi_line_data_joined_with_lf),
        cmocka_unit_test(test_lf_line_endings),
        cmocka_unit_test(test_crlf_line_endings),
        cmocka_unit_test(test_cr_line_endings),
        cmocka_unit_test(test_mixed_line_endings),
        cmocka_unit_test(test_cr_at_end_of_feed_then_lf),
        cmocka_unit_test(test_cr_at_end_of_feed_then_cr),
        cmocka_unit_test(test_comment_lines_ignored),
        cmocka_unit_test(test_comment_only_stream_has_no_events),
        cmocka_unit_test(test_event_type),
        cmocka_unit_test(test_event_type_cleared_by_blank_line_without_data),
        cmocka_unit_test(test_id_persists_across_events),
        cmocka_unit_test(test_id_with_nul_ignored),
        cmocka_unit_test(test_retry_and_unknown_fields_ignored),
        cmocka_unit_test(test_empty_data_line_dispatches),
        cmocka_unit_test(test_field_without_colon_has_empty_value),
        cmocka_unit_test(test_only_one_leading_space_stripped),
        cmocka_unit_test(test_nul_byte_in_data_kept),
        cmocka_unit_test(test_bom_skipped_at_start),
        cmocka_unit_test(test_bom_split_across_feeds),
        cmocka_unit_test(test_bom_only_skipped_once_and_only_whole),
        cmocka_unit_test(test_line_at_cap_accepted),
        cmocka_unit_test(test_line_over_cap_in_one_feed),
        cmocka_unit_test(test_line_over_cap_across_feeds),
        cmocka_unit_test(test_event_data_over_cap),
        cmocka_unit_test(test_large_data_in_small_feeds),
        cmocka_unit_test(test_finish_dispatches_unterminated_event),
        cmocka_unit_test(test_finish_without_pending_data),
        cmocka_unit_test(test_callback_stop_return_value),
        cmocka_unit_test(test_empty_feeds_are_harmless),
        cmocka_unit_test(test_openai_stream_split_at_every_byte),
        cmocka_unit_test(test_openai_stream_crlf_split_at_every_byte),
        cmocka_unit_test(test_pretty_multiline_stream_split_at_every_byte),
        cmocka_unit_test(test_cap_error_same_at_every_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
