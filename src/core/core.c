/* Allocation, assertions, clocks and request ids. */
#include "sophia/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "sophia/log.h"

_Noreturn void sg_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"assertion failed: %s at %s:%d\"}\n", expr, file,
            line);
    abort();
}

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory allocating %zu bytes\"}\n", n);
    abort();
}

void *sg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *sg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

#if defined(__SANITIZE_ADDRESS__)
#define POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_OFF 1
#endif
#endif

void *sg_pool_get(sg_pool_t *p)
{
#ifndef POOL_OFF
    if (p->n) {
        void *o = p->free[--p->n];
        memset(o, 0, p->size);
        return o;
    }
#endif
    return sg_xcalloc(1, p->size);
}

void sg_pool_put(sg_pool_t *p, void *obj)
{
    SG_UNUSED(p);
    if (!obj) return;
#ifndef POOL_OFF
    if (!p->free) p->free = sg_xmalloc(p->max * sizeof(*p->free));
    if (p->n < p->max) {
        p->free[p->n++] = obj;
        return;
    }
#endif
    free(obj);
}

void *sg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *sg_xstrdup(const char *s)
{
    return sg_xstrndup(s, strlen(s));
}

char *sg_xstrndup(const char *s, size_t n)
{
    char *p = sg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

uint64_t sg_now_ns(void)
{
    return uv_hrtime();
}

uint64_t sg_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

int64_t sg_unix_time(void)
{
    return (int64_t)time(NULL);
}

/* xorshift128+ seeded from the OS once: request ids need uniqueness, not secrecy. */
static uint64_t rid_s[2];

static uint64_t rid_next(void)
{
    uint64_t s1 = rid_s[0];
    const uint64_t s0 = rid_s[1];
    rid_s[0] = s0;
    s1 ^= s1 << 23;
    rid_s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rid_s[1] + s0;
}

void sg_request_id_new(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    if (rid_s[0] == 0 && rid_s[1] == 0) {
        if (uv_random(NULL, NULL, rid_s, sizeof(rid_s), 0, NULL) != 0 ||
            (rid_s[0] == 0 && rid_s[1] == 0)) {
            rid_s[0] = uv_hrtime() | 1;
            rid_s[1] = (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
        }
    }
    uint64_t a = rid_next(), b = rid_next();
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (i * 4)) & 15];
        out[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[32] = '\0';
}

void sg_raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        sg_log(SG_LOG_WARN, "cannot raise the open file limit: %s", strerror(errno));
}

void sg_presize_fd_table(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t top = rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur;
    if (top < 2) return;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    int hi = dup3(fd, (int)top - 1, O_CLOEXEC);
    if (hi >= 0) close(hi);
    close(fd);
}

int sg_strncaseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return 0;
    }
    return 1;
}

void sg_secret_free(char *s)
{
    if (!s) return;
    volatile char *k = s;
    while (*k) *k++ = '\0';
    free(s);
}
