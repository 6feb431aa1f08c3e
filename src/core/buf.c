/* Bounded byte buffers. */
#include "sophia/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"

void sg_buf_init(sg_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void sg_buf_dispose(sg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void reserve(sg_buf_t *b, size_t need)
{
    if (need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need + 1) cap *= 2;
    if (cap > b->max + 1 && need + 1 <= b->max + 1) cap = b->max + 1;
    b->data = sg_xrealloc(b->data, cap);
    b->cap = cap;
}

int sg_buf_append(sg_buf_t *b, const void *p, size_t n)
{
    if (n > b->max - b->len) return SG_ERR_TOO_LARGE;
    reserve(b, b->len + n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int sg_buf_append_str(sg_buf_t *b, const char *s)
{
    return sg_buf_append(b, s, strlen(s));
}

int sg_buf_cat(sg_buf_t *b, ...)
{
    va_list ap;
    va_start(ap, b);
    int r = 0;
    for (const char *s; r == 0 && (s = va_arg(ap, const char *)) != NULL;)
        r = sg_buf_append(b, s, strlen(s));
    va_end(ap);
    return r;
}

int sg_buf_append_int(sg_buf_t *b, long long v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--p = '-';
    return sg_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void sg_buf_reserve(sg_buf_t *b, size_t n)
{
    if (n <= b->max) reserve(b, n);
}

int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0) return SG_ERR;
    if ((size_t)n < sizeof(tmp)) return sg_buf_append(b, tmp, (size_t)n);
    if ((size_t)n > b->max - b->len) return SG_ERR_TOO_LARGE;
    reserve(b, b->len + (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sg_buf_printf(sg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = sg_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

void sg_buf_consume(sg_buf_t *b, size_t n)
{
    SG_ASSERT(n <= b->len);
    if (n == b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void sg_buf_reset(sg_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

char *sg_buf_steal(sg_buf_t *b, size_t *len)
{
    if (!b->data) reserve(b, 0), b->data[0] = '\0';
    char *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
