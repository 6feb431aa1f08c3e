/* Streaming scale: N concurrent streamed chat completions against one address, opened at a
 * steady rate and all held open at once; prints the time to first token of each stream
 * (p50/p99, from the request written to the first "data:" event), the errors, the most
 * streams open at the same time and, with --pid, the resident memory of that process when
 * every stream is open and once they have all ended.
 *
 *   build/bench/streams --port 19180 --n 9000 [--host 127.0.0.1] [--rate 3000] [--pid PID]
 *                       [--model lambda/llama3.1-8b-instruct] [--key KEY]
 *
 * One line of output: "RESULT n=… ok=… errors=… max_open=… ttft_p50_us=… ttft_p99_us=…
 * rss_idle_kb=… rss_peak_kb=… rss_after_kb=…". A stream counts as ok when it answered 200 and
 * ended with "data: [DONE]". The mock must keep each stream open longer than the ramp
 * (N / rate seconds), e.g. --tokens 16 --itl-ms 500. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct stream {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    uint64_t sent_ns;
    uint64_t ttft_ns;
    int status;    /* HTTP status, 0 until read */
    int head_done; /* saw the end of the response headers */
    int done;      /* saw data: [DONE] */
    int failed;    /* connect/read error or bad status */
    char tail[16]; /* last bytes seen, for markers split across reads */
    size_t tail_len;
    char head[512]; /* the start of the response, for the status line */
    size_t head_len;
} stream_t;

static uv_loop_t *loop;
static stream_t *streams;
static int n_total, n_started, n_open, max_open, n_closed, n_first;
static int rate = 3000;
static const char *host = "127.0.0.1";
static int port;
static char request[1024];
static size_t request_len;
static struct sockaddr_in addr;
static int pid;
static long rss_idle, rss_peak, rss_after;
static uv_timer_t pacer, sampler;
static char readbuf[65536];

static long rss_kb(void)
{
    if (!pid) return 0;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
    if (++n_closed == n_total) uv_timer_stop(&sampler);
}

static void finish(stream_t *s)
{
    if (uv_is_closing((uv_handle_t *)&s->tcp)) return;
    n_open--;
    uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(readbuf, sizeof(readbuf));
}

/* Looks for needle in the stream's carried tail followed by the new bytes. */
static int seen(stream_t *s, const char *data, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    char join[64];
    size_t t = s->tail_len, k = len < nl ? len : nl;
    memcpy(join, s->tail, t);
    memcpy(join + t, data, k);
    for (size_t i = 0; i + nl <= t + k; i++)
        if (memcmp(join + i, needle, nl) == 0) return 1;
    for (size_t i = 0; i + nl <= len; i++)
        if (data[i] == needle[0] && memcmp(data + i, needle, nl) == 0) return 1;
    return 0;
}

static void keep_tail(stream_t *s, const char *data, size_t len)
{
    size_t keep = sizeof(s->tail) - 1;
    if (len >= keep) {
        memcpy(s->tail, data + len - keep, keep);
        s->tail_len = keep;
    } else {
        size_t drop = s->tail_len + len > keep ? s->tail_len + len - keep : 0;
        memmove(s->tail, s->tail + drop, s->tail_len - drop);
        s->tail_len -= drop;
        memcpy(s->tail + s->tail_len, data, len);
        s->tail_len += len;
    }
}

/* Resident memory is sampled every 100 ms while streams run; the peak is reported. */
static void on_sample(uv_timer_t *t)
{
    (void)t;
    long kb = rss_kb();
    if (kb > rss_peak) rss_peak = kb;
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    stream_t *s = h->data;
    if (nread < 0) {
        if (!s->done) s->failed = 1;
        finish(s);
        return;
    }
    const char *d = buf->base;
    size_t len = (size_t)nread;
    if (s->head_len < sizeof(s->head) - 1) {
        size_t k =
            len < sizeof(s->head) - 1 - s->head_len ? len : sizeof(s->head) - 1 - s->head_len;
        memcpy(s->head + s->head_len, d, k);
        s->head_len += k;
        s->head[s->head_len] = 0;
        if (!s->status && s->head_len >= 12) {
            s->status = atoi(s->head + 9);
            if (s->status != 200) {
                s->failed = 1;
                finish(s);
                return;
            }
        }
    }
    if (!s->ttft_ns && seen(s, d, len, "data:")) {
        s->ttft_ns = uv_hrtime() - s->sent_ns;
        n_first++;
    }
    if (seen(s, d, len, "[DONE]")) {
        s->done = 1;
        finish(s);
        return;
    }
    keep_tail(s, d, len);
}

static void on_written(uv_write_t *w, int status)
{
    stream_t *s = w->data;
    if (status < 0) {
        s->failed = 1;
        finish(s);
        return;
    }
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

static void on_connect(uv_connect_t *c, int status)
{
    stream_t *s = c->data;
    if (status < 0) {
        s->failed = 1;
        finish(s);
        return;
    }
    uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
    s->wr.data = s;
    s->sent_ns = uv_hrtime();
    uv_write(&s->wr, (uv_stream_t *)&s->tcp, &b, 1, on_written);
}

static void start_one(void)
{
    stream_t *s = &streams[n_started++];
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    s->conn.data = s;
    n_open++;
    if (n_open > max_open) max_open = n_open;
    if (uv_tcp_connect(&s->conn, &s->tcp, (const struct sockaddr *)&addr, on_connect) != 0) {
        s->failed = 1;
        finish(s);
    }
}

static uint64_t ramp_start;

static void on_pace(uv_timer_t *t)
{
    /* Start as many as the rate allows by now (the loop's timer may fire late). */
    uint64_t elapsed_ms = (uv_hrtime() - ramp_start) / 1000000;
    int due = (int)((elapsed_ms + 1) * (uint64_t)rate / 1000);
    if (due > n_total) due = n_total;
    while (n_started < due) start_one();
    if (n_started == n_total) uv_timer_stop(t);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *model = "lambda/llama3.1-8b-instruct", *key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "streams: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--host") == 0)
            host = v;
        else if (strcmp(a, "--n") == 0)
            n_total = atoi(v);
        else if (strcmp(a, "--rate") == 0)
            rate = atoi(v);
        else if (strcmp(a, "--pid") == 0)
            pid = atoi(v);
        else if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--key") == 0)
            key = v;
        else {
            fprintf(stderr, "streams: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (port <= 0 || n_total <= 0 || rate <= 0) {
        fprintf(stderr, "usage: streams --port P --n N [--host H] [--rate R] [--pid PID] "
                        "[--model M] [--key K]\n");
        return 2;
    }
    char body[256];
    int bl = snprintf(body, sizeof(body),
                      "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                      "\"content\":\"Say hello to the benchmark\"}]}",
                      model);
    char auth[160] = "";
    if (key) snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                                   "Content-Type: application/json\r\n%sContent-Length: %d\r\n"
                                   "Connection: close\r\n\r\n%s",
                                   host, port, auth, bl, body);
    uv_ip4_addr(host, port, &addr);
    streams = calloc((size_t)n_total, sizeof(*streams));
    if (!streams) return 1;
    loop = uv_default_loop();
    uv_timer_init(loop, &pacer);
    uv_timer_init(loop, &sampler);
    if (pid) uv_timer_start(&sampler, on_sample, 100, 100);
    rss_idle = rss_kb();
    ramp_start = uv_hrtime();
    uv_timer_start(&pacer, on_pace, 0, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    /* Everything has ended: give the process a moment to hand memory back. */
    uv_sleep(1500);
    rss_after = rss_kb();

    uint64_t *t = calloc((size_t)n_total, sizeof(*t));
    int ok = 0, errors = 0, nt = 0;
    for (int i = 0; i < n_total; i++) {
        stream_t *s = &streams[i];
        if (s->done && !s->failed && s->status == 200)
            ok++;
        else
            errors++;
        if (s->ttft_ns) t[nt++] = s->ttft_ns;
    }
    qsort(t, (size_t)nt, sizeof(*t), cmp_u64);
    uint64_t p50 = nt ? t[nt / 2] : 0, p99 = nt ? t[(size_t)((double)nt * 0.99)] : 0;
    if (nt && (size_t)((double)nt * 0.99) >= (size_t)nt) p99 = t[nt - 1];
    printf("RESULT n=%d ok=%d errors=%d max_open=%d ttft_p50_us=%llu ttft_p99_us=%llu "
           "rss_idle_kb=%ld rss_peak_kb=%ld rss_after_kb=%ld\n",
           n_total, ok, errors, max_open, (unsigned long long)(p50 / 1000),
           (unsigned long long)(p99 / 1000), rss_idle, rss_peak, rss_after);
    free(t);
    free(streams);
    return errors ? 1 : 0;
}
