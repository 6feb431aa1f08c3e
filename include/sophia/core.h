/* Core helpers shared by every module: allocation that aborts on failure, assertions that
 * stay on in release builds, clocks and error codes. */
#ifndef SOPHIA_CORE_H
#define SOPHIA_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The gateway's version, as upstreams see it in User-Agent: sophia-gateway/<version>. */
#define SG_VERSION "0.2.0"
#define SG_USER_AGENT "sophia-gateway/" SG_VERSION

/* Error codes: functions return 0 on success or one of these (negative). */
enum {
    SG_OK = 0,
    SG_ERR = -1,           /* generic failure */
    SG_ERR_TOO_LARGE = -2, /* a bounded buffer would exceed its cap */
    SG_ERR_PARSE = -3,     /* malformed input */
    SG_ERR_NOMEM = -4,     /* never returned: allocation failure aborts */
    SG_ERR_STOP = -5,      /* a callback asked to stop */
};

#define SG_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) sg_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)

#define SG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SG_UNUSED(x) ((void)(x))

/* snprintf(dst, cap, "%s", src) without the format machinery (about 30 instructions instead
 * of 500 for a short name): copies what fits of src (NULL: ""), always terminated when
 * cap > 0. */
static inline void sg_strlcpy(char *dst, size_t cap, const char *src)
{
    if (!cap) return;
    if (!src) src = "";
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Prints the failed assertion and aborts. Never returns. */
_Noreturn void sg_assert_fail(const char *expr, const char *file, int line);

/* Allocation wrappers: they never return NULL; on failure they log and abort. The caller
 * owns the result and frees it with free(). */
void *sg_xmalloc(size_t n);
void *sg_xcalloc(size_t n, size_t size);

/* A free list of objects of one size, for the loop thread's per-request objects that are too
 * large for malloc's fast path (a chat, a pipeline: ~3 KiB): get hands out a zeroed object,
 * put keeps up to max of them for reuse and frees the rest. Under AddressSanitizer it is plain
 * calloc/free, so that a use after free is still caught. */
typedef struct sg_pool {
    size_t size, max, n;
    void **free;
} sg_pool_t;
#define SG_POOL_INIT(size, max)                                                                    \
    {                                                                                              \
        (size), (max), 0, NULL                                                                     \
    }
void *sg_pool_get(sg_pool_t *p);
void sg_pool_put(sg_pool_t *p, void *obj);
void *sg_xrealloc(void *p, size_t n);
char *sg_xstrdup(const char *s);
char *sg_xstrndup(const char *s, size_t n);

/* Monotonic clock in milliseconds / nanoseconds (not tied to a loop). */
uint64_t sg_now_ms(void);
uint64_t sg_now_ns(void);
/* Wall clock, seconds since the epoch. */
int64_t sg_unix_time(void);

/* Writes a new random request id (32 hex chars + NUL) into out[33]. */
void sg_request_id_new(char out[33]);

/* Raises the soft open-file limit to the hard one (servers holding thousands of
 * connections); logs a warning when that fails. */
void sg_raise_nofile_limit(void);
/* Makes the kernel size the process's descriptor table for the open-file limit (up to 65,536)
 * now, while the process has one thread: growing it later, with threads running, waits for an
 * RCU grace period each time it doubles, and stalls the loop (measured: the first 1,000
 * streams of a process had a time-to-first-token p99 of ~20 ms, later ones ~1.5 ms). */
void sg_presize_fd_table(void);

/* Overwrites a secret string with zeros, then frees it (NULL is fine). */
void sg_secret_free(char *s);

/* Case-insensitive ASCII compare of n bytes; returns 1 when equal. */
int sg_strncaseeq(const char *a, const char *b, size_t n);

#endif
