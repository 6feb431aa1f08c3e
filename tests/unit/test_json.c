/* The strict JSON validator, UTF-8 helpers and checked number reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/log.h"

static int valid(const char *s)
{
    sg_json_problem_t p;
    return sg_json_validate(s, strlen(s), &p) == 0;
}

static const char *why(const char *s, size_t n, size_t *line, size_t *col)
{
    static sg_json_problem_t p;
    if (sg_json_validate(s, n, &p) == 0) return NULL;
    if (line) *line = p.line;
    if (col) *col = p.col;
    return p.what;
}

static void test_accepts_rfc8259(void **state)
{
    SG_UNUSED(state);
    const char *ok[] = {"{}",
                        "[]",
                        " \t\r\n{ \"a\" : [1, -0, 0.5, -1.5e+10, 2E-3, true, false, null] } \n",
                        "\"x\"",
                        "0",
                        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
                        "{\"utf8\":\"é€😀\"}",
                        "[[[[]]]]"};
    for (size_t i = 0; i < SG_ARRAY_LEN(ok); i++) assert_true(valid(ok[i]));
}

static void test_refuses_what_cjson_lets_through(void **state)
{
    SG_UNUSED(state);
    size_t line = 0, col = 0;
    assert_string_equal(why("{} x", 4, &line, &col), "unexpected data after the JSON value");
    assert_int_equal(line, 1);
    assert_int_equal(col, 4);
    assert_non_null(why("{}{}", 4, NULL, NULL));
    assert_non_null(why("{\"a\":\"x\ty\"}", 11, NULL, NULL));
    assert_non_null(why("{\"a\":\"x\\u0000y\"}", 16, NULL, NULL));
    assert_non_null(why("\"\\ud800\"", 8, NULL, NULL));
    assert_non_null(why("\"\\udc00\"", 8, NULL, NULL));
    assert_non_null(why("\"\\ud800\\u0041\"", 14, NULL, NULL));
    assert_non_null(why("\"\xff\"", 3, NULL, NULL));
    assert_non_null(why("\"\xc0\xaf\"", 4, NULL, NULL));         /* overlong '/' */
    assert_non_null(why("\"\xed\xa0\x80\"", 5, NULL, NULL));     /* UTF-8 surrogate */
    assert_non_null(why("\"\xf4\x90\x80\x80\"", 6, NULL, NULL)); /* above U+10FFFF */
    assert_non_null(why("\"\xe2\x82\"", 4, NULL, NULL));         /* cut sequence */
    assert_non_null(why("{\"a\":1,}", 8, NULL, NULL));
    assert_non_null(why("[1,]", 4, NULL, NULL));
    assert_non_null(why("01", 2, NULL, NULL));
    assert_non_null(why("1.", 2, NULL, NULL));
    assert_non_null(why("-", 1, NULL, NULL));
    assert_non_null(why("{'a':1}", 7, NULL, NULL));
    assert_non_null(why("\"a\\x\"", 5, NULL, NULL));
    assert_non_null(why("", 0, NULL, NULL));
    assert_non_null(why("{\"a\":1} \0", 9, NULL, NULL));
    assert_non_null(why("\"unterminated", 13, NULL, NULL));
    assert_string_equal(why("{\n  \"a\": tru\n}", 14, &line, &col), "unexpected character");
    assert_int_equal(line, 2);
    assert_int_equal(col, 8);
}

static void test_depth_limit(void **state)
{
    SG_UNUSED(state);
    char deep[2 * SG_JSON_MAX_DEPTH + 4];
    size_t n = 0;
    for (int i = 0; i < SG_JSON_MAX_DEPTH; i++) deep[n++] = '[';
    for (int i = 0; i < SG_JSON_MAX_DEPTH; i++) deep[n++] = ']';
    assert_null(why(deep, n, NULL, NULL));
    n = 0;
    for (int i = 0; i < SG_JSON_MAX_DEPTH + 1; i++) deep[n++] = '[';
    for (int i = 0; i < SG_JSON_MAX_DEPTH + 1; i++) deep[n++] = ']';
    assert_string_equal(why(deep, n, NULL, NULL), "nesting too deep");
}

static void test_duplicate_keys(void **state)
{
    SG_UNUSED(state);
    sg_json_problem_t p;
    const char *s = "{\"model\":\"a\",\"x\":{\"k\":1},\"model\":\"b\"}";
    assert_null(sg_json_parse_strict(s, strlen(s), &p));
    assert_string_equal(p.what, "duplicate key in an object");
    s = "[{\"k\":1,\"k\":2}]";
    assert_null(sg_json_parse_strict(s, strlen(s), &p));
    /* Many keys take the sorted path. */
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_append_str(&b, "{");
    for (int i = 0; i < 100; i++) sg_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    sg_buf_append_str(&b, "}");
    cJSON *j = sg_json_parse_strict(b.data, b.len, &p);
    assert_non_null(j);
    cJSON_Delete(j);
    b.len--;
    sg_buf_append_str(&b, ",\"k42\":0}");
    assert_null(sg_json_parse_strict(b.data, b.len, &p));
    sg_buf_dispose(&b);
}

static void test_utf8_helpers(void **state)
{
    SG_UNUSED(state);
    const char *e = "a\xc3\xa9"; /* "aé" */
    assert_int_equal(sg_utf8_cut(e, 3), 3);
    assert_int_equal(sg_utf8_cut(e, 2), 1);
    const char *euro = "\xe2\x82\xac";
    assert_int_equal(sg_utf8_cut(euro, 2), 0);
    assert_int_equal(sg_utf8_cut(euro, 1), 0);
    assert_int_equal(sg_utf8_cut(euro, 3), 3);
    const char *emoji = "x\xf0\x9f\x98\x80";
    assert_int_equal(sg_utf8_cut(emoji, 4), 1);
    assert_int_equal(sg_utf8_cut(emoji, 5), 5);
    char bad[] = "ok\xff\xe2\x82";
    sg_utf8_sanitize(bad, strlen(bad));
    assert_string_equal(bad, "ok???");
    assert_true(sg_utf8_valid("é€😀", strlen("é€😀")));
    /* The JSON escaper never copies invalid UTF-8. */
    sg_buf_t b;
    sg_buf_init(&b, 256);
    sg_json_escape_append(&b,
                          "a\xff"
                          "é\x01",
                          5);
    assert_string_equal(b.data, "\"a\\ufffdé\\u0001\"");
    sg_buf_dispose(&b);
}

static void test_checked_numbers(void **state)
{
    SG_UNUSED(state);
    const char *in[] = {"5", "0", "1e9", "1e10", "-1", "2.5", "1e43", "-9.2e18", "\"5\"", "null"};
    const int ok[] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < SG_ARRAY_LEN(in); i++) {
        cJSON *j = cJSON_Parse(in[i]);
        long long v = -7;
        assert_int_equal(sg_json_count(j, 1e9, &v) == 0, ok[i]);
        if (ok[i]) assert_true(v >= 0);
        cJSON_Delete(j);
    }
    assert_int_not_equal(sg_json_count(NULL, 10, &(long long){0}), 0);
    cJSON *j = cJSON_Parse("-42");
    long long v;
    assert_int_equal(sg_json_int_in(j, -100, 100, &v), 0);
    assert_int_equal(v, -42);
    assert_int_not_equal(sg_json_int_in(j, 0, 100, &v), 0);
    cJSON_Delete(j);
}

/* Top-level members located while validating (the non-streamed chat answer's choices and usage). */
static void test_members_without_a_tree(void **state)
{
    SG_UNUSED(state);
    const char *doc =
        " { \"id\" : \"x\\\"usage\\\":1\", \"choices\": [{\"message\": {\"usage\": 7}}],"
        "\"n\":-1.5e3 ,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}} ";
    sg_json_problem_t p;
    sg_json_member_t m[4] = {
        {"usage", NULL, 0}, {"n", NULL, 0}, {"choices", NULL, 0}, {"message", NULL, 0}};
    assert_int_equal(sg_json_validate_members(doc, strlen(doc), m, 4, &p), 0);
    assert_int_equal(m[0].len, strlen("{\"prompt_tokens\":3,\"completion_tokens\":4}"));
    assert_memory_equal(m[0].val, "{\"prompt_tokens\":3", 17);
    assert_int_equal(m[1].len, 6);
    assert_memory_equal(m[1].val, "-1.5e3", 6);
    assert_true(m[2].val[0] == '[' && m[2].val[m[2].len - 1] == ']');
    assert_null(m[3].val); /* nested only */
    assert_int_equal(sg_json_validate_members("[1,{\"usage\":2}]", 15, m, 1, &p), 0);
    assert_null(m[0].val);
    assert_int_equal(sg_json_validate_members("{}", 2, m, 1, &p), 0);
    assert_null(m[0].val);
    /* Invalid text: -1, whatever was found before the problem. */
    assert_int_equal(sg_json_validate_members("{\"usage\":1,}", 12, m, 1, &p), -1);
    /* The first of two members with the same name. */
    assert_int_equal(sg_json_validate_members("{\"n\":1,\"n\":22}", 14, m + 1, 1, &p), 0);
    assert_int_equal(m[1].len, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_rfc8259),
        cmocka_unit_test(test_refuses_what_cjson_lets_through),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_utf8_helpers),
        cmocka_unit_test(test_checked_numbers),
        cmocka_unit_test(test_members_without_a_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
