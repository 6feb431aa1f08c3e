/* The log writer: once started, finished log lines are appended to a bounded in-memory buffer
 * and written to stderr by a thread of their own, so that a slow reader of stderr (a full pipe,
 * a stalled terminal, a log shipper that fell behind) never blocks the event loop. Lines keep
 * their order. When the buffer is full a line is dropped and counted; the next line written
 * after space frees up says how many were lost. Stopping writes everything still buffered.
 * Before start and after stop, lines are written directly (start-up, the command-line tools,
 * the unit tests). */
#include "sophia/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sophia/core.h"

#define LOG_BUFFER_BYTES (1024 * 1024)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop, idle;
    char *buf; /* a ring of LOG_BUFFER_BYTES */
    size_t head, len;
    uint64_t dropped, dropped_reported, written;
} w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Writes all of data to stderr, retrying short writes and EINTR; gives up on other errors. */
static void write_all(const char *data, size_t n)
{
    while (n) {
        ssize_t r = write(STDERR_FILENO, data, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        data += r;
        n -= (size_t)r;
    }
}

/* Appends to the ring (the caller holds the lock and checked the room). */
static void ring_put(const char *data, size_t n)
{
    size_t tail = (w.head + w.len) % LOG_BUFFER_BYTES;
    size_t first = LOG_BUFFER_BYTES - tail < n ? LOG_BUFFER_BYTES - tail : n;
    memcpy(w.buf + tail, data, first);
    memcpy(w.buf, data + first, n - first);
    w.len += n;
}

static void *writer_main(void *arg)
{
    SG_UNUSED(arg);
    char *out = sg_xmalloc(LOG_BUFFER_BYTES);
    pthread_mutex_lock(&w.mu);
    for (;;) {
        while (!w.len && !w.stop) {
            w.idle = 1;
            pthread_cond_wait(&w.cv, &w.mu);
            w.idle = 0;
        }
        if (!w.len && w.stop) break;
        /* Take everything buffered, then write it without the lock. */
        size_t n = w.len, first = LOG_BUFFER_BYTES - w.head < n ? LOG_BUFFER_BYTES - w.head : n;
        memcpy(out, w.buf + w.head, first);
        memcpy(out + first, w.buf, n - first);
        w.head = (w.head + n) % LOG_BUFFER_BYTES;
        w.len = 0;
        pthread_mutex_unlock(&w.mu);
        write_all(out, n);
        pthread_mutex_lock(&w.mu);
        w.written += n;
    }
    pthread_mutex_unlock(&w.mu);
    free(out);
    return NULL;
}

/* The line that reports lines lost to a full buffer. */
static size_t dropped_line(char *out, size_t cap, uint64_t n)
{
    int r = snprintf(out, cap,
                     "{\"level\":\"warn\",\"msg\":\"log lines dropped: stderr is not read fast "
                     "enough\",\"dropped\":%llu}\n",
                     (unsigned long long)n);
    return r > 0 && (size_t)r < cap ? (size_t)r : 0;
}

void sg_log_write(const char *line, size_t n)
{
    pthread_mutex_lock(&w.mu);
    if (!w.running) {
        pthread_mutex_unlock(&w.mu);
        write_all(line, n);
        return;
    }
    if (w.dropped > w.dropped_reported) {
        char d[160];
        size_t dn = dropped_line(d, sizeof(d), w.dropped - w.dropped_reported);
        if (dn && LOG_BUFFER_BYTES - w.len >= dn + n) {
            ring_put(d, dn);
            w.dropped_reported = w.dropped;
        }
    }
    if (LOG_BUFFER_BYTES - w.len >= n)
        ring_put(line, n);
    else
        w.dropped++;
    if (w.idle) pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
}

int sg_log_writer_start(void)
{
    pthread_mutex_lock(&w.mu);
    if (w.running) {
        pthread_mutex_unlock(&w.mu);
        return 0;
    }
    w.buf = sg_xmalloc(LOG_BUFFER_BYTES);
    w.head = w.len = 0;
    w.stop = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        pthread_setname_np(w.thread, "sg-log");
        w.running = 1;
    } else {
        free(w.buf);
        w.buf = NULL;
    }
    pthread_mutex_unlock(&w.mu);
    return rc == 0 ? 0 : -1;
}

void sg_log_writer_stop(void)
{
    pthread_mutex_lock(&w.mu);
    if (!w.running) {
        pthread_mutex_unlock(&w.mu);
        return;
    }
    w.stop = 1;
    pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(w.thread, NULL);
    pthread_mutex_lock(&w.mu);
    w.running = 0;
    free(w.buf);
    w.buf = NULL;
    uint64_t lost = w.dropped - w.dropped_reported;
    w.dropped_reported = w.dropped;
    pthread_mutex_unlock(&w.mu);
    if (lost) {
        char d[160];
        write_all(d, dropped_line(d, sizeof(d), lost));
    }
}

void sg_log_writer_stats(uint64_t *dropped, size_t *buffered)
{
    pthread_mutex_lock(&w.mu);
    if (dropped) *dropped = w.dropped;
    if (buffered) *buffered = w.len;
    pthread_mutex_unlock(&w.mu);
}
