/* Secret redaction: configured values, secret-shaped tokens, URL user-info. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/redact.h"

static void red(const sg_secrets_t *s, const char *const *extra, const char *in, char *out,
                size_t cap)
{
    snprintf(out, cap, "%s", in);
    sg_redact(s, extra, out, cap);
}

static void test_configured_values(void **state)
{
    SG_UNUSED(state);
    sg_secrets_t s = {0};
    sg_secrets_add(&s, "lambda-key-123456");
    sg_secrets_add(&s, "sfpat_opaque_token_9");
    sg_secrets_add(&s, "short"); /* below SG_SECRET_MIN_LEN: ignored */
    sg_secrets_add(&s, NULL);
    sg_secrets_add(&s, "lambda-key-123456"); /* once */
    assert_int_equal(s.n, 2);
    char out[256];
    red(&s, NULL, "invalid key lambda-key-123456, try again (sfpat_opaque_token_9)", out,
        sizeof(out));
    assert_string_equal(out, "invalid key [redacted], try again ([redacted])");
    red(&s, NULL, "short words stay", out, sizeof(out));
    assert_string_equal(out, "short words stay");
    const char *extra[] = {"eyJhbGciOiJSUzI1NiJ9.dynamic-jwt", NULL};
    red(&s, extra, "tok=eyJhbGciOiJSUzI1NiJ9.dynamic-jwt!", out, sizeof(out));
    assert_string_equal(out, "tok=[redacted]!");
    sg_secrets_dispose(&s);
    assert_int_equal(s.n, 0);
}

static void test_shapes(void **state)
{
    SG_UNUSED(state);
    char out[256];
    red(NULL, NULL, "JWT token eyJhbGciOiJFUzI1NiJ9.eyJwIjoiMSJ9.c2lnbmF0dXJl is invalid", out,
        sizeof(out));
    assert_string_equal(out, "JWT token [redacted] is invalid");
    red(NULL, NULL, "header was Authorization: Bearer abc.DEF-123_x end", out, sizeof(out));
    assert_string_equal(out, "header was Authorization: Bearer [redacted] end");
    red(NULL, NULL, "basic dXNlcjpwYXNz", out, sizeof(out));
    assert_string_equal(out, "basic [redacted]");
    red(NULL, NULL, "see https://user:pw@host:8000/v1/x and http://host/y", out, sizeof(out));
    assert_string_equal(out, "see https://[redacted]@host:8000/v1/x and http://host/y");
    red(NULL, NULL, "nothing here: eyJ short, Bearer", out, sizeof(out));
    assert_string_equal(out, "nothing here: eyJ short, Bearer");
}

static void test_growth_is_cut_to_cap(void **state)
{
    SG_UNUSED(state);
    char out[24];
    red(NULL, NULL, "Bearer a Bearer b é", out, sizeof(out));
    assert_true(strlen(out) < sizeof(out));
    assert_true(sg_utf8_valid(out, strlen(out)));
    assert_null(strstr(out, " a "));
}

static void test_urls(void **state)
{
    SG_UNUSED(state);
    char out[256];
    sg_url_redact("http://u:secretpw@127.0.0.1:9000/v1", out, sizeof(out));
    assert_string_equal(out, "http://[redacted]@127.0.0.1:9000/v1");
    sg_url_redact("http://127.0.0.1:9000/v1?a=b@c", out, sizeof(out));
    assert_string_equal(out, "http://127.0.0.1:9000/v1?a=b@c");
    sg_secrets_t s = {0};
    sg_secrets_add_url(&s, "https://user:hunter22@h/v1");
    sg_secrets_add_url(&s, "https://h/v1");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.v[0], "hunter22");
    sg_secrets_dispose(&s);
}

/* sg_strlcpy (which replaced snprintf(dst, cap, "%s", src) for copies of names and texts). */
static void test_strlcpy_cuts_like_snprintf(void **state)
{
    SG_UNUSED(state);
    char a[8], b[8];
    const char *cases[] = {"", "short", "exactly", "longer than eight"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(a, 'x', sizeof(a));
        memset(b, 'x', sizeof(b));
        sg_strlcpy(a, sizeof(a), cases[i]);
        snprintf(b, sizeof(b), "%s", cases[i]);
        assert_memory_equal(a, b, strlen(b) + 1);
    }
    sg_strlcpy(a, 1, "abc");
    assert_string_equal(a, "");
    a[0] = 'z';
    sg_strlcpy(a, 0, "abc"); /* nothing written */
    assert_int_equal(a[0], 'z');
    sg_strlcpy(a, sizeof(a), NULL);
    assert_string_equal(a, "");
}

/* sg_buf_cat and sg_buf_append_int (the response head is built with them), sg_buf_reserve. */
static void test_buf_pieces(void **state)
{
    SG_UNUSED(state);
    sg_buf_t b;
    sg_buf_init(&b, 64);
    sg_buf_reserve(&b, 40);
    assert_true(b.cap >= 41);
    assert_int_equal(sg_buf_cat(&b, "HTTP/1.1 ", "200", " OK", "\r\n", NULL), 0);
    long long vs[] = {0, 7, -1, 1234567890123LL, -9223372036854775807LL - 1};
    const char *want[] = {"0", "7", "-1", "1234567890123", "-9223372036854775808"};
    for (size_t i = 0; i < 5; i++) {
        sg_buf_reset(&b);
        assert_int_equal(sg_buf_append_int(&b, vs[i]), 0);
        assert_string_equal(b.data, want[i]);
    }
    sg_buf_reset(&b);
    /* Past the cap: refused, the buffer holds what fitted before. */
    assert_int_equal(sg_buf_cat(&b, "0123456789012345678901234567890123456789", "x", NULL), 0);
    assert_int_equal(sg_buf_cat(&b, "0123456789012345678901234", NULL), SG_ERR_TOO_LARGE);
    assert_int_equal(b.len, 41);
    sg_buf_dispose(&b);
}

/* sg_pool_t: objects come back zeroed whether new or reused; at most max are kept. */
static void test_pool_hands_out_zeroed_objects(void **state)
{
    SG_UNUSED(state);
    sg_pool_t pool = SG_POOL_INIT(3000, 2);
    unsigned char *o[3];
    for (int i = 0; i < 3; i++) {
        o[i] = sg_pool_get(&pool);
        memset(o[i], 0xAB, 3000);
    }
    for (int i = 0; i < 3; i++) sg_pool_put(&pool, o[i]);
    assert_true(pool.n <= 2); /* the third was freed (0 under ASan: nothing kept) */
    for (int i = 0; i < 3; i++) {
        o[i] = sg_pool_get(&pool);
        for (size_t k = 0; k < 3000; k++) assert_int_equal(o[i][k], 0);
    }
    for (int i = 0; i < 3; i++) sg_pool_put(&pool, o[i]);
    while (pool.n) free(pool.free[--pool.n]);
    free(pool.free);
}

/* sg_presize_fd_table: the kernel's descriptor table (FDSize) covers the open-file limit (up to
 * 65,536) at once, instead of doubling under load. */
static void test_fd_table_presized(void **state)
{
    SG_UNUSED(state);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    long want = rl.rlim_cur > 65536 ? 65536 : (long)rl.rlim_cur;
    sg_presize_fd_table();
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long size = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "FDSize:", 7) == 0) size = atol(line + 7);
    fclose(f);
    assert_true(size >= want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configured_values),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_growth_is_cut_to_cap),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_strlcpy_cuts_like_snprintf),
        cmocka_unit_test(test_buf_pieces),
        cmocka_unit_test(test_pool_hands_out_zeroed_objects),
        cmocka_unit_test(test_fd_table_presized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
