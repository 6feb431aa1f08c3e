/* Incremental Server-Sent Events parser.
 *
 * Lines are found with memchr (the next CR and the next LF positions are each searched once
 * and reused until passed, so a chunk is scanned in linear time). A line lying entirely in the
 * current chunk is processed in place; only a line split across feeds is copied into the line
 * buffer. */
#include "sophia/sse.h"

#include <string.h>

#include "sophia/core.h"

static const unsigned char k_bom[3] = {0xEF, 0xBB, 0xBF};

void sg_sse_parser_init(sg_sse_parser_t *p, size_t max_event_bytes, sg_sse_event_cb cb, void *ud)
{
    sg_buf_init(&p->line, max_event_bytes);
    sg_buf_init(&p->data, max_event_bytes);
    sg_buf_init(&p->event, max_event_bytes);
    sg_buf_init(&p->id, max_event_bytes);
    p->have_data = 0;
    p->last_was_cr = 0;
    p->bom_state = 0;
    p->max_event_bytes = max_event_bytes;
    p->cb = cb;
    p->ud = ud;
}

void sg_sse_parser_dispose(sg_sse_parser_t *p)
{
    sg_buf_dispose(&p->line);
    sg_buf_dispose(&p->data);
    sg_buf_dispose(&p->event);
    sg_buf_dispose(&p->id);
    p->have_data = 0;
}

static const char *buf_str(const sg_buf_t *b)
{
    return b->data ? b->data : "";
}

/* Dispatches the event being built (the caller checked have_data), then clears it. */
static int dispatch(sg_sse_parser_t *p)
{
    sg_sse_event_t ev = {
        .event = buf_str(&p->event),
        .event_len = p->event.len,
        .data = buf_str(&p->data),
        .data_len = p->data.len,
        .id = buf_str(&p->id),
        .id_len = p->id.len,
    };
    int r = p->cb ? p->cb(p->ud, &ev) : 0;
    sg_buf_reset(&p->data);
    sg_buf_reset(&p->event);
    p->have_data = 0;
    return r;
}

/* Interprets one complete line (without its terminator). */
static int process_line(sg_sse_parser_t *p, const char *line, size_t n)
{
    if (n == 0) {
        if (p->have_data) return dispatch(p);
        sg_buf_reset(&p->event);
        return 0;
    }
    if (line[0] == ':') return 0;

    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t)(colon - line) : n;
    const char *val = line + n;
    size_t vlen = 0;
    if (colon) {
        val = colon + 1;
        vlen = n - flen - 1;
        if (vlen && *val == ' ') val++, vlen--;
    }

    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        sg_buf_t *d = &p->data;
        /* One check up front so the buffer is never left half-appended. */
        if (vlen + (p->have_data ? 1u : 0u) > d->max - d->len) return SG_ERR_TOO_LARGE;
        if (p->have_data) sg_buf_append(d, "\n", 1);
        sg_buf_append(d, val, vlen);
        p->have_data = 1;
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        sg_buf_reset(&p->event);
        if (sg_buf_append(&p->event, val, vlen)) return SG_ERR_TOO_LARGE;
    } else if (flen == 2 && memcmp(line, "id", 2) == 0) {
        /* Per the spec an id containing NUL is ignored. */
        if (!memchr(val, '\0', vlen)) {
            sg_buf_reset(&p->id);
            if (sg_buf_append(&p->id, val, vlen)) return SG_ERR_TOO_LARGE;
        }
    }
    /* "retry" (reconnection time) and unknown fields are ignored: the gateway never
     * reconnects an upstream stream. */
    return 0;
}

/* Consumes a UTF-8 BOM at the very start of the stream, possibly split across feeds.
 * Advances *s past the bytes it consumed. */
static int skip_bom(sg_sse_parser_t *p, const char **s, const char *end)
{
    while (p->bom_state >= 0 && *s < end) {
        if ((unsigned char)**s == k_bom[p->bom_state]) {
            (*s)++;
            if (++p->bom_state == 3) p->bom_state = -1;
        } else {
            /* Not a BOM after all: the bytes matched so far start the first line. */
            size_t m = (size_t)p->bom_state;
            p->bom_state = -1;
            if (m && sg_buf_append(&p->line, k_bom, m)) return SG_ERR_TOO_LARGE;
        }
    }
    return 0;
}

int sg_sse_parser_feed(sg_sse_parser_t *p, const char *buf, size_t len)
{
    if (len == 0) return 0;
    const char *s = buf, *end = buf + len;

    if (p->bom_state >= 0) {
        if (skip_bom(p, &s, end)) return SG_ERR_TOO_LARGE;
        if (s == end) return 0;
    }
    if (p->last_was_cr) {
        p->last_was_cr = 0;
        if (*s == '\n') s++;
    }

    const char *cr = NULL, *lf = NULL; /* next CR / LF at or after s; end when none */
    while (s < end) {
        if (!lf || lf < s) {
            lf = memchr(s, '\n', (size_t)(end - s));
            if (!lf) lf = end;
        }
        if (!cr || cr < s) {
            cr = memchr(s, '\r', (size_t)(end - s));
            if (!cr) cr = end;
        }
        const char *eol = lf < cr ? lf : cr;
        if (eol == end) {
            /* Partial line: keep it for the next feed. */
            if (sg_buf_append(&p->line, s, (size_t)(end - s))) return SG_ERR_TOO_LARGE;
            return 0;
        }

        const char *line;
        size_t n;
        int buffered = p->line.len > 0;
        if (buffered) {
            if (sg_buf_append(&p->line, s, (size_t)(eol - s))) return SG_ERR_TOO_LARGE;
            line = p->line.data;
            n = p->line.len;
        } else {
            line = s;
            n = (size_t)(eol - s);
            if (n > p->max_event_bytes) return SG_ERR_TOO_LARGE;
        }

        s = eol + 1;
        if (*eol == '\r') {
            if (s < end) {
                if (*s == '\n') s++;
            } else {
                p->last_was_cr = 1;
            }
        }

        int r = process_line(p, line, n);
        if (buffered) sg_buf_reset(&p->line);
        if (r) return r;
    }
    return 0;
}

int sg_sse_parser_finish(sg_sse_parser_t *p)
{
    if (p->bom_state > 0) {
        size_t m = (size_t)p->bom_state;
        if (sg_buf_append(&p->line, k_bom, m)) return SG_ERR_TOO_LARGE;
    }
    p->bom_state = -1;
    p->last_was_cr = 0;
    if (p->line.len) {
        int r = process_line(p, p->line.data, p->line.len);
        sg_buf_reset(&p->line);
        if (r) return r;
    }
    if (p->have_data) return dispatch(p);
    return 0;
}
