/* Upstream exchanges (src/egress/exchange.c): when the process has no file descriptor left for
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
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
