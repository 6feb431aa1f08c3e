/* Unit tests for the Responses store (src/state/rstore.c): what is kept is found again by
 * response id and by item id, and the store stays bounded in count, bytes and age, the oldest
 * going first. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/rstore.h"

static cJSON *items(const char *item_id, size_t pad)
{
    cJSON *a = cJSON_CreateArray();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", item_id);
    char *text = calloc(1, pad + 1);
    memset(text, 'x', pad);
    cJSON_AddStringToObject(o, "text", text);
    free(text);
    cJSON_AddItemToArray(a, o);
    return a;
}

static void put(int i, size_t pad, int64_t now)
{
    char id[32], item[32];
    snprintf(id, sizeof(id), "resp_%d", i);
    snprintf(item, sizeof(item), "msg_%d", i);
    sg_rstore_put(id, items("in", 0), items(item, pad), now);
}

static int has(int i, int64_t now)
{
    char id[32];
    snprintf(id, sizeof(id), "resp_%d", i);
    const cJSON *in, *out;
    return sg_rstore_get(id, now, &in, &out) == 0;
}

static void test_found_again(void **state)
{
    (void)state;
    put(1, 10, 1000);
    const cJSON *in, *out;
    assert_int_equal(sg_rstore_get("resp_1", 1000, &in, &out), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(out, 0), "id")->valuestring,
                        "msg_1");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(in, 0), "id")->valuestring, "in");
    const cJSON *it = sg_rstore_item("msg_1", 1000);
    assert_non_null(it);
    assert_int_equal(strlen(cJSON_GetObjectItem(it, "text")->valuestring), 10);
    assert_int_equal(sg_rstore_get("resp_2", 1000, &in, &out), -1);
    assert_null(sg_rstore_item("msg_2", 1000));
    sg_rstore_clear();
    assert_false(has(1, 1000));
}

static void test_bounded_by_age(void **state)
{
    (void)state;
    put(1, 10, 1000);
    put(2, 10, 1000 + SG_RSTORE_TTL_S);
    assert_true(has(1, 1000 + SG_RSTORE_TTL_S));
    assert_false(has(1, 1000 + SG_RSTORE_TTL_S + 1)); /* older than the TTL: gone */
    assert_null(sg_rstore_item("msg_1", 1000 + SG_RSTORE_TTL_S + 1));
    assert_true(has(2, 1000 + SG_RSTORE_TTL_S + 1));
    sg_rstore_clear();
}

static void test_bounded_by_count(void **state)
{
    (void)state;
    for (int i = 0; i < SG_RSTORE_MAX + 10; i++) put(i, 0, 1000);
    for (int i = 0; i < 10; i++) assert_false(has(i, 1000)); /* the oldest went first */
    assert_true(has(10, 1000));
    assert_true(has(SG_RSTORE_MAX + 9, 1000));
    sg_rstore_clear();
}

static void test_bounded_by_bytes(void **state)
{
    (void)state;
    size_t pad = 4u * 1024 * 1024; /* 4 MiB each: 16 fit in 64 MiB with room to spare */
    int n = (int)(SG_RSTORE_BYTES / pad) + 4;
    for (int i = 0; i < n; i++) put(i, pad, 1000);
    int kept = 0;
    for (int i = 0; i < n; i++) kept += has(i, 1000);
    assert_true(kept < n);
    assert_true((size_t)kept * pad <= SG_RSTORE_BYTES);
    assert_false(has(0, 1000));
    assert_true(has(n - 1, 1000));
    sg_rstore_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found_again),
        cmocka_unit_test(test_bounded_by_age),
        cmocka_unit_test(test_bounded_by_count),
        cmocka_unit_test(test_bounded_by_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
