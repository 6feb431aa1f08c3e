/* Bounded byte buffers: every buffer has a hard cap fixed at creation. */
#ifndef SOPHIA_BUF_H
#define SOPHIA_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct sg_buf {
    char *data; /* NUL-terminated when len < cap (always kept so) */
    size_t len;
    size_t cap; /* allocated bytes */
    size_t max; /* hard cap on len */
} sg_buf_t;

/* Initialises an empty buffer that may hold at most max bytes. Allocates lazily. */
void sg_buf_init(sg_buf_t *b, size_t max);
/* Frees the storage; the buffer may be initialised again. */
void sg_buf_dispose(sg_buf_t *b);
/* Appends n bytes. Returns 0, or SG_ERR_TOO_LARGE (buffer unchanged) past the cap. */
int sg_buf_append(sg_buf_t *b, const void *p, size_t n);
/* Appends a NUL-terminated string; same returns as sg_buf_append. */
int sg_buf_append_str(sg_buf_t *b, const char *s);
/* Appends each string up to the NULL that ends the list (no format: cheaper than
 * sg_buf_printf for text made of pieces); same returns as sg_buf_append. */
int sg_buf_cat(sg_buf_t *b, ...) __attribute__((sentinel));
/* Appends v in decimal; same returns. */
int sg_buf_append_int(sg_buf_t *b, long long v);
/* Makes room for n bytes in all (one allocation instead of several while growing). */
void sg_buf_reserve(sg_buf_t *b, size_t n);
/* printf-style append; same returns as sg_buf_append. */
int sg_buf_printf(sg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap);
/* Drops the first n bytes (n <= len). */
void sg_buf_consume(sg_buf_t *b, size_t n);
/* Empties the buffer, keeping its storage. */
void sg_buf_reset(sg_buf_t *b);
/* Hands the storage to the caller (who frees it) and leaves the buffer empty. Never NULL. */
char *sg_buf_steal(sg_buf_t *b, size_t *len);

#endif
