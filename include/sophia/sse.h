/* Incremental Server-Sent Events parser (WHATWG "event stream" interpretation).
 *
 * Bytes may arrive split anywhere. Lines end in CRLF, LF or CR (a CR at the end of one feed
 * followed by LF at the start of the next counts as one line ending). Lines starting with ':'
 * are comments and ignored. Fields: "event", "data", "id", "retry" ("field: value" — one
 * leading space after the colon is removed; a line with no colon is a field with an empty
 * value). Several "data" lines in one event are joined with '\n'. A blank line dispatches the
 * event if it has any data line (even an empty one); the event type and data are then
 * cleared. A UTF-8 BOM at the very start of the stream is skipped. */
#ifndef SOPHIA_SSE_H
#define SOPHIA_SSE_H

#include <stddef.h>

#include "sophia/buf.h"

typedef struct sg_sse_event {
    const char *event; /* "" when no event field was given; NUL-terminated */
    size_t event_len;
    const char *data; /* NUL-terminated */
    size_t data_len;
    const char *id; /* last event id seen so far ("" if none); NUL-terminated */
    size_t id_len;
} sg_sse_event_t;

/* Called once per dispatched event. Pointers are valid only during the call. Return 0 to go
 * on, any other value to stop: feed then returns that value at once. */
typedef int (*sg_sse_event_cb)(void *ud, const sg_sse_event_t *ev);

typedef struct sg_sse_parser {
    sg_buf_t line;   /* partial line */
    sg_buf_t data;   /* data of the event being built */
    sg_buf_t event;  /* event type of the event being built */
    sg_buf_t id;     /* last event id */
    int have_data;   /* a data field has been seen in this event */
    int last_was_cr; /* the previous feed ended in CR: skip a leading LF */
    int bom_state;   /* BOM bytes matched at the stream start so far; -1 once past it */
    size_t max_event_bytes;
    sg_sse_event_cb cb;
    void *ud;
} sg_sse_parser_t;

/* Initialises a parser. max_event_bytes caps one line and one event's data (each). */
void sg_sse_parser_init(sg_sse_parser_t *p, size_t max_event_bytes, sg_sse_event_cb cb, void *ud);
/* Feeds bytes. Returns 0, SG_ERR_TOO_LARGE when a line or event exceeds the cap (the parser
 * must then be disposed), or the callback's non-zero return. */
int sg_sse_parser_feed(sg_sse_parser_t *p, const char *buf, size_t len);
/* End of stream. A pending last line is processed as if terminated, and a pending event with
 * data is dispatched (lenient: some upstreams close without the final blank line). Returns
 * like feed. */
int sg_sse_parser_finish(sg_sse_parser_t *p);
/* Frees the parser's buffers. */
void sg_sse_parser_dispose(sg_sse_parser_t *p);

#endif
