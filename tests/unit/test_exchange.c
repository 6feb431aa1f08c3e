/* Upstream exchanges (src/egress/exchange.c): transfers spread over several curl multi handles
 * under load and the extra ones close once idle; when the process has no file descriptor left for
 * the upstream socket, the exchange ends with SG_EX_NO_FDS (the pipeline answers 503
 * server_overloaded), not SG_EX_CONNECT ("upstream unreachable"); a refused connection is still
 * SG_EX_CONNECT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "sophia/core.h"
#include "sophia/egress.h"
#include "sophia/log.h"

static int done;
static sg_ex_result_t result;

static int on_data(sg_exchange_t *x, const char *data, size_t len, void *ud)
{
    SG_UNUSED(x);
    SG_UNUSED(data);
    SG_UNUSED(len);
    SG_UNUSED(ud);
    return SG_EX_DATA_OK;
}

static void on_done(sg_exchange_t *x, sg_ex_result_t r, const char *detail, void *ud)
{
    SG_UNUSED(x);
    SG_UNUSED(ud);
    if (getenv("TEST_DEBUG")) fprintf(stderr, "# %d %s\n", r, detail ? detail : "");
    result = r;
    done = 1;
}

/* Runs one GET to 127.0.0.1:1 (nothing listens there) to its end. */
static sg_ex_result_t run_one(uv_loop_t *loop, sg_curlm_t *m)
{
    static const sg_exchange_cbs_t cbs = {NULL, on_data, on_done};
    sg_exchange_req_t req = {.url = "http://127.0.0.1:1/v1/models",
                             .method = "GET",
                             .connect_timeout_ms = 2000,
                             .first_byte_timeout_ms = 2000,
                             .idle_timeout_ms = 2000,
                             .total_timeout_ms = 2000};
    done = 0;
    sg_exchange_t *x = sg_exchange_start(m, &req, &cbs, NULL);
    assert_non_null(x);
    while (!done) uv_run(loop, UV_RUN_ONCE);
    return result;
}

/* ---- many at once: a server that answers only once every request has arrived ---------------- */

#define BURST 300 /* more than two multi handles' worth (SHARD_TRANSFERS is 128) */

typedef struct held {
    uv_tcp_t tcp;
    char buf[1024];
    size_t len;
    int counted;
} held_t;

static held_t *held[BURST];
static int n_held, n_ok, n_finished;
static uv_write_t writes[BURST];

static void on_held_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    SG_UNUSED(hint);
    held_t *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void answer_all(void)
{
    static char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (int i = 0; i < n_held; i++) {
        uv_buf_t b = uv_buf_init(ok, sizeof(ok) - 1);
        uv_write(&writes[i], (uv_stream_t *)&held[i]->tcp, &b, 1, NULL);
    }
}

static void on_held_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    SG_UNUSED(b);
    held_t *c = s->data;
    if (n < 0) {
        uv_read_stop(s);
        return;
    }
    c->len += (size_t)n;
    if (!c->counted && c->len >= 4 && memmem(c->buf, c->len, "\r\n\r\n", 4)) {
        c->counted = 1;
        c->len = 0;
        held[n_held++] = c;
        if (n_held == BURST) answer_all();
    }
}

static void on_held_conn(uv_stream_t *srv, int status)
{
    assert_int_equal(status, 0);
    held_t *c = calloc(1, sizeof(*c));
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(srv, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_held_alloc, on_held_read);
}

static void on_burst_done(sg_exchange_t *x, sg_ex_result_t r, const char *detail, void *ud)
{
    SG_UNUSED(ud);
    SG_UNUSED(detail);
    if (r == SG_EX_OK && sg_exchange_status(x) == 200) n_ok++;
    n_finished++;
}

static void on_held_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_held(uv_handle_t *h, void *arg)
{
    SG_UNUSED(arg);
    if (!uv_is_closing(h)) uv_close(h, h->data ? on_held_closed : NULL);
}

/* 300 transfers in flight at once (the server answers none until all have arrived) spread over
 * three multi handles and all complete; once idle, the extra multi handles close (their idle
 * connections with them) and the first stays. */
static void test_burst_spreads_and_shrinks(void **state)
{
    SG_UNUSED(state);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t srv;
    uv_tcp_init(&loop, &srv);
    srv.data = NULL;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&srv, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv, 1024, on_held_conn), 0);
    struct sockaddr_in bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&srv, (struct sockaddr *)&bound, &blen);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ntohs(bound.sin_port));

    sg_curlm_t *m = sg_curlm_new(&loop);
    sg_curlm_set_shard_idle_ms(m, 50);
    static const sg_exchange_cbs_t cbs = {NULL, on_data, on_burst_done};
    for (int i = 0; i < BURST; i++) {
        sg_exchange_req_t req = {.url = url, .method = "GET", .stream = i % 2};
        assert_non_null(sg_exchange_start(m, &req, &cbs, NULL));
    }
    assert_int_equal(sg_curlm_active(m), BURST);
    assert_int_equal(sg_curlm_shards_open(m), 3);
    while (n_finished < BURST) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(n_ok, BURST);
    assert_int_equal(sg_curlm_active(m), 0);
    while (sg_curlm_shards_open(m) > 1) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(sg_curlm_shards_open(m), 1);

    sg_curlm_free(m);
    uv_walk(&loop, close_held, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The lowest descriptor number not open: with the limit set to it, the next socket() fails. */
static int next_free_fd(void)
{
    int fd = dup(0);
    assert_true(fd >= 0);
    close(fd);
    return fd;
}

static void test_no_fds_is_not_unreachable(void **state)
{
    SG_UNUSED(state);
    uv_loop_t loop;
    uv_loop_init(&loop);
    sg_curlm_t *m = sg_curlm_new(&loop);
    assert_int_equal(run_one(&loop, m), SG_EX_CONNECT);

    struct rlimit saved, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    low = saved;
    low.rlim_cur = (rlim_t)next_free_fd();
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    sg_ex_result_t r = run_one(&loop, m);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    assert_int_equal(r, SG_EX_NO_FDS);

    assert_int_equal(run_one(&loop, m), SG_EX_CONNECT);
    sg_curlm_free(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    sg_log_set_level(SG_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_fds_is_not_unreachable),
        cmocka_unit_test(test_burst_spreads_and_shrinks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
