/* Unit tests for client and admin keys (src/policy/keys.c): the configuration sections, the
 * lookup, the constant-time comparison, model patterns, hashing, authentication of a request
 * and the loopback rule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sophia/access.h"
#include "sophia/config.h"
#include "sophia/generation.h"
#include "sophia/log.h"

/* SHA-256("abc") and of "" (FIPS 180-2 test vectors). */
#define ABC_HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define EMPTY_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Hashes made up for lookups: A and B share their first 8 bytes. */
#define HASH_A "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define HASH_B "sha256:0011223344556677ffffffffffffffffffffffffffffffffffffffffffffffff"
#define HASH_C "sha256:FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100"

#define SECRET "plain-Secret-KEY-in-hash-field"

static const char *const env_vars[] = {"LAMBDA_BASE_URL",   "LAMBDA_API_KEY",   "SNOWFLAKE_ACCOUNT",
                                       "SOPHIA_LISTEN",     "SOPHIA_ADMIN_KEY", "SG_TEST_SECRET",
                                       "SG_TEST_ADMIN_KEY", "SG_TEST_NAME"};

static int clear_env(void **state)
{
    (void)state;
    sg_log_set_level(SG_LOG_ERROR);
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) unsetenv(env_vars[i]);
    return 0;
}

static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/sg_test_keys_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static int load_text(const char *text, sg_config_t *cfg, sg_config_errors_t *errs)
{
    const char *path = write_tmp(text);
    int rc = sg_config_load(cfg, path, errs);
    unlink(path);
    return rc;
}

static void dump(const char *what, const sg_config_errors_t *errs)
{
    for (size_t i = 0; errs && i < errs->n; i++)
        fprintf(stderr, "# %s %s: %s\n", what, errs->items[i].path, errs->items[i].message);
}

static int has_item(const sg_config_errors_t *errs, const char *path, const char *needle)
{
    for (size_t i = 0; errs && i < errs->n; i++)
        if (strcmp(errs->items[i].path, path) == 0 && strstr(errs->items[i].message, needle))
            return 1;
    return 0;
}

static void assert_has_error(const sg_config_errors_t *errs, const char *path, const char *needle)
{
    if (!has_item(errs, path, needle)) {
        fprintf(stderr, "# expected an error at %s containing \"%s\"\n", path, needle);
        dump("error", errs);
        fail();
    }
}

static void assert_never_echoed(const sg_config_errors_t *errs, const char *value)
{
    for (size_t i = 0; errs && i < errs->n; i++) {
        assert_null(strstr(errs->items[i].path, value));
        assert_null(strstr(errs->items[i].message, value));
    }
}

static void load_ok(const char *text, sg_config_t *cfg)
{
    sg_config_errors_t errs = {0};
    int rc = load_text(text, cfg, &errs);
    if (rc != 0) dump("error", &errs);
    assert_int_equal(rc, 0);
    sg_config_errors_free(&errs);
}

/* Loads text expecting an error at path containing needle; returns nothing, frees all. */
static void load_err(const char *text, const char *path, const char *needle)
{
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(load_text(text, &cfg, &errs), -1);
    assert_has_error(&errs, path, needle);
    sg_config_errors_free(&errs);
    sg_config_free(&cfg);
}

static void hash_of(const char *hex_text, unsigned char out[SG_KEY_HASH_LEN])
{
    const char *h = hex_text + 7;
    for (size_t i = 0; i < SG_KEY_HASH_LEN; i++) {
        unsigned v;
        assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

/* ---- configuration ------------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok("{}", &cfg);
    const sg_access_cfg_t *a = cfg.access;
    assert_non_null(a);
    assert_int_equal(a->n_keys, 0);
    assert_int_equal(a->n_teams, 0);
    assert_int_equal(a->n_admin, 0);
    assert_int_equal(a->n_model_limits, 0);
    assert_int_equal(a->allow_unauthenticated, 0);
    assert_int_equal(a->queue_ms, 0);
    assert_int_equal(a->default_max_tokens, 4096);
    assert_true(a->global_budget.soft_pct == 80);
    assert_int_equal(a->global_budget.soft, 0);
    sg_config_free(&cfg);
    assert_null(cfg.access);
    sg_config_free(&cfg); /* idempotent */

    sg_config_defaults(&cfg); /* the defaults alone allocate it too */
    assert_non_null(cfg.access);
    sg_config_free(&cfg);
}

static void test_valid(void **state)
{
    (void)state;
    setenv("SG_TEST_ADMIN_KEY", "admin-key-from-the-environment", 1);
    sg_config_t cfg;
    load_ok("{\"teams\": [{\"name\": \"research\", \"limits\": {\"rpm\": 100, \"concurrent\": 4},"
            "            \"budget\": {\"daily_usd\": 5, \"monthly_usd\": 100, \"soft_pct\": 90}},"
            "           {\"name\": \"ops\"}],"
            " \"keys\": [{\"name\": \"alice\", \"hash\": \"" HASH_C "\", \"team\": \"research\","
            "            \"limits\": {\"rpm\": 60, \"tpm\": 100000, \"usd_per_min\": 0.5,"
            "                       \"concurrent\": 2},"
            "            \"budget\": {\"daily_usd\": 1.5, \"mode\": \"soft\"},"
            "            \"models\": [\"lambda/*\", \"*-8b*\", \"small\"]},"
            "           {\"hash\": \"sha256:" ABC_HEX "\"},"
            "           {\"name\": \"bob\", \"hash\": \"" HASH_A "\", \"team\": null}],"
            " \"global\": {\"limits\": {\"tpm\": 1000000}, \"budget\": {\"monthly_usd\": 1000}},"
            " \"model_limits\": [{\"match\": \"lambda\", \"limits\": {\"rpm\": 600}}],"
            " \"admin_keys\": [\"sha256:" EMPTY_HEX "\", \"${SG_TEST_ADMIN_KEY}\"],"
            " \"allow_unauthenticated\": true,"
            " \"throttle\": {\"queue_ms\": 2500, \"default_max_tokens\": 1024}}",
            &cfg);
    const sg_access_cfg_t *a = cfg.access;
    assert_int_equal(a->n_teams, 2);
    assert_string_equal(a->teams[0].name, "research");
    assert_true(a->teams[0].limits.rpm == 100);
    assert_int_equal(a->teams[0].limits.concurrent, 4);
    assert_true(a->teams[0].budget.daily_usd == 5);
    assert_true(a->teams[0].budget.monthly_usd == 100);
    assert_true(a->teams[0].budget.soft_pct == 90);
    assert_true(a->teams[1].budget.soft_pct == 80);
    assert_ptr_equal(sg_access_team(a, "ops"), &a->teams[1]);
    assert_null(sg_access_team(a, "nobody"));
    assert_null(sg_access_team(a, NULL));

    assert_int_equal(a->n_keys, 3);
    /* Sorted by hash: A (00…), abc (ba…), C (ff…). */
    assert_string_equal(a->keys[0].name, "bob");
    assert_null(a->keys[0].team);
    assert_string_equal(a->keys[1].name, "key-ba7816bf");
    assert_true(a->keys[1].budget.soft_pct == 80);
    assert_int_equal(a->keys[1].budget.soft, 0);
    assert_int_equal(a->keys[1].n_models, 0);
    const sg_key_cfg_t *alice = &a->keys[2];
    assert_string_equal(alice->name, "alice");
    assert_string_equal(alice->team, "research");
    assert_true(alice->limits.rpm == 60);
    assert_true(alice->limits.tpm == 100000);
    assert_true(alice->limits.usd_per_min == 0.5);
    assert_int_equal(alice->limits.concurrent, 2);
    assert_true(alice->budget.daily_usd == 1.5);
    assert_int_equal(alice->budget.soft, 1);
    assert_int_equal(alice->n_models, 3);
    unsigned char h[SG_KEY_HASH_LEN];
    hash_of(HASH_C, h); /* upper-case hex is read too */
    assert_memory_equal(alice->hash, h, SG_KEY_HASH_LEN);

    assert_true(a->global_limits.tpm == 1000000);
    assert_true(a->global_budget.monthly_usd == 1000);
    assert_true(a->global_budget.soft_pct == 80);
    assert_int_equal(a->n_model_limits, 1);
    assert_string_equal(a->model_limits[0].match, "lambda");
    assert_true(a->model_limits[0].limits.rpm == 600);
    assert_int_equal(a->n_admin, 2);
    unsigned char want[SG_KEY_HASH_LEN];
    sg_key_hash("admin-key-from-the-environment", 30, want);
    assert_memory_equal(a->admin[1], want, SG_KEY_HASH_LEN);
    assert_int_equal(a->allow_unauthenticated, 1);
    assert_int_equal(a->queue_ms, 2500);
    assert_int_equal(a->default_max_tokens, 1024);
    /* an interpolated admin key draws no warning */
    assert_false(has_item(cfg.warnings, "$.admin_keys[1]", "configuration file"));
    sg_config_free(&cfg);
}

static void test_key_errors(void **state)
{
    (void)state;
    load_err("{\"keys\": {}}", "$.keys", "must be an array");
    load_err("{\"keys\": [42]}", "$.keys[0]", "must be an object");
    load_err("{\"keys\": [{\"name\": \"x\"}]}", "$.keys[0]", "missing \"hash\"");
    load_err("{\"keys\": [{\"hash\": 7}]}", "$.keys[0].hash", "must be a string");
    load_err("{\"keys\": [{\"hash\": \"sha256:abc\"}]}", "$.keys[0].hash", "64 hex digits");
    load_err("{\"keys\": [{\"hash\": \"" ABC_HEX "\"}]}", "$.keys[0].hash", "64 hex digits");
    load_err("{\"keys\": [{\"hash\": \"sha256:" ABC_HEX "0\"}]}", "$.keys[0].hash",
             "64 hex digits");
    load_err("{\"keys\": [{\"hash\": \"sha256:"
             "g a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\"}]}",
             "$.keys[0].hash", "64 hex digits");
    load_err("{\"keys\": [{\"hash\": \"sha512:" ABC_HEX "\"}]}", "$.keys[0].hash", "64 hex digits");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"nope\": 1}]}", "$.keys[0].nope",
             "unknown key");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"name\": \"\"}]}", "$.keys[0].name",
             "must not be empty");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"name\": \"a\\nb\"}]}", "$.keys[0].name",
             "control characters");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"name\": \""
             "0123456789012345678901234567890123456789012345678901234567890123\"}]}",
             "$.keys[0].name", "at most 63 bytes");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"rpm\": -1}}]}",
             "$.keys[0].limits.rpm", "must be a number from 0");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"tpm\": \"5\"}}]}",
             "$.keys[0].limits.tpm", "must be a number");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"usd_per_min\": -0.1}}]}",
             "$.keys[0].limits.usd_per_min", "must be a number from 0");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"concurrent\": 1.5}}]}",
             "$.keys[0].limits.concurrent", "fraction");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"concurrent\": -1}}]}",
             "$.keys[0].limits.concurrent", "non-negative");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": {\"rps\": 1}}]}",
             "$.keys[0].limits.rps", "unknown key");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"limits\": []}]}", "$.keys[0].limits",
             "must be an object");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"budget\": {\"daily_usd\": -5}}]}",
             "$.keys[0].budget.daily_usd", "must be a number from 0");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"budget\": {\"monthly_usd\": true}}]}",
             "$.keys[0].budget.monthly_usd", "must be a number");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"budget\": {\"soft_pct\": 0}}]}",
             "$.keys[0].budget.soft_pct", "above 0 and at most 100");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"budget\": {\"soft_pct\": 100.5}}]}",
             "$.keys[0].budget.soft_pct", "above 0 and at most 100");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"budget\": {\"mode\": \"medium\"}}]}",
             "$.keys[0].budget.mode", "\"hard\"");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"models\": []}]}", "$.keys[0].models",
             "must not be empty");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"models\": \"lambda/*\"}]}",
             "$.keys[0].models", "must be an array");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"models\": [\"\"]}]}", "$.keys[0].models[0]",
             "must not be empty");
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\", \"team\": 3}]}", "$.keys[0].team",
             "must be a string");
    /* the same hash twice (in either case), names twice */
    load_err("{\"keys\": [{\"hash\": \"" HASH_A "\"}, {\"hash\": \"" HASH_B "\"},"
             " {\"hash\": "
             "\"sha256:00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF\"}]}",
             "$.keys[2].hash", "the same hash as $.keys[0].hash");
    load_err("{\"keys\": [{\"name\": \"k\", \"hash\": \"" HASH_A "\"},"
             " {\"name\": \"k\", \"hash\": \"" HASH_B "\"}]}",
             "$.keys[1].name", "duplicate key name \"k\" (already used at $.keys[0])");
    /* a default name taken by an explicit one */
    load_err("{\"keys\": [{\"name\": \"key-00112233\", \"hash\": \"" HASH_B "\"},"
             " {\"hash\": \"" HASH_A "\"}]}",
             "$.keys[1]", "named after its hash: give it one");
}

static void test_hash_never_echoed(void **state)
{
    (void)state;
    setenv("SG_TEST_SECRET", SECRET, 1);
    const char *texts[] = {
        "{\"keys\": [{\"hash\": \"${SG_TEST_SECRET}\"}]}",
        "{\"keys\": [{\"hash\": \"" SECRET "\"}]}",
        "{\"keys\": [{\"hash\": \"sha256:${SG_TEST_SECRET}\"}]}",
        "{\"admin_keys\": [\"sha256:" SECRET "\"]}",
        "{\"admin_keys\": [\"sha256:${SG_TEST_SECRET}\"]}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        sg_config_t cfg;
        sg_config_errors_t errs = {0};
        assert_int_equal(load_text(texts[i], &cfg, &errs), -1);
        assert_true(errs.n >= 1);
        assert_never_echoed(&errs, SECRET);
        assert_never_echoed(cfg.warnings, SECRET);
        sg_config_errors_free(&errs);
        sg_config_free(&cfg);
    }
    /* an interpolated duplicate name is not echoed either */
    setenv("SG_TEST_NAME", "hidden-name-value", 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(load_text("{\"keys\": [{\"name\": \"${SG_TEST_NAME}\", \"hash\": \"" HASH_A
                               "\"}, {\"name\": \"hidden-name-value\", \"hash\": \"" HASH_B "\"}]}",
                               &cfg, &errs),
                     -1);
    assert_has_error(&errs, "$.keys[1].name", "duplicate key name (already used at $.keys[0])");
    assert_never_echoed(&errs, "hidden-name-value");
    sg_config_errors_free(&errs);
    sg_config_free(&cfg);
}

static void test_other_section_errors(void **state)
{
    (void)state;
    load_err("{\"teams\": [{\"limits\": {}}]}", "$.teams[0]", "missing \"name\"");
    load_err("{\"teams\": [{\"name\": \"t\"}, {\"name\": \"t\"}]}", "$.teams[1].name",
             "duplicate team name \"t\"");
    load_err("{\"teams\": [{\"name\": \"t\", \"budget\": {\"mode\": \"x\"}}]}",
             "$.teams[0].budget.mode", "\"soft\"");
    load_err("{\"teams\": [{\"name\": \"t\", \"extra\": 1}]}", "$.teams[0].extra", "unknown key");
    load_err("{\"teams\": {\"name\": \"t\"}}", "$.teams", "must be an array");
    load_err("{\"global\": []}", "$.global", "must be an object");
    load_err("{\"global\": {\"limits\": {\"rpm\": -2}}}", "$.global.limits.rpm", "from 0");
    load_err("{\"global\": {\"budget\": {\"soft_pct\": \"80\"}}}", "$.global.budget.soft_pct",
             "must be a number");
    load_err("{\"global\": {\"keys\": 1}}", "$.global.keys", "unknown key");
    load_err("{\"model_limits\": [{\"limits\": {\"rpm\": 1}}]}", "$.model_limits[0]",
             "missing \"match\"");
    load_err("{\"model_limits\": [{\"match\": \"\"}]}", "$.model_limits[0].match",
             "must not be empty");
    load_err("{\"model_limits\": [{\"match\": \"lambda\"}, {\"match\": \"lambda\"}]}",
             "$.model_limits[1].match", "duplicate match \"lambda\"");
    load_err("{\"model_limits\": [{\"match\": \"lambda\", \"limits\": {\"tpm\": -1}}]}",
             "$.model_limits[0].limits.tpm", "from 0");
    load_err("{\"model_limits\": {}}", "$.model_limits", "must be an array");
    load_err("{\"admin_keys\": \"sha256:" ABC_HEX "\"}", "$.admin_keys", "must be an array");
    load_err("{\"admin_keys\": [\"sha256:abc\"]}", "$.admin_keys[0]", "64 hex digits");
    load_err("{\"admin_keys\": [\"\"]}", "$.admin_keys[0]", "must not be empty");
    load_err("{\"admin_keys\": [5]}", "$.admin_keys[0]", "must be a string");
    load_err("{\"admin_keys\": [\"${SG_TEST_UNSET_VARIABLE}\"]}", "$.admin_keys[0]",
             "SG_TEST_UNSET_VARIABLE");
    load_err("{\"allow_unauthenticated\": \"yes\"}", "$.allow_unauthenticated",
             "must be true or false");
    load_err("{\"throttle\": {\"default_max_tokens\": 0}}", "$.throttle.default_max_tokens",
             "positive integer");
    load_err("{\"throttle\": {\"queue_ms\": -5}}", "$.throttle.queue_ms", "non-negative");
    load_err("{\"throttle\": {\"queue\": 5}}", "$.throttle.queue", "unknown key");
    load_err("{\"throttle\": 5}", "$.throttle", "must be an object");

    setenv("SOPHIA_ADMIN_KEY", "bad\tkey-value-0123456789", 1);
    load_err("{}", "env:SOPHIA_ADMIN_KEY", "control characters");
    unsetenv("SOPHIA_ADMIN_KEY");
}

static void test_warnings(void **state)
{
    (void)state;
    sg_config_t cfg;
    /* teams listed: an unlisted team is probably a typo */
    load_ok("{\"teams\": [{\"name\": \"research\"}],"
            " \"keys\": [{\"hash\": \"" HASH_A "\", \"team\": \"reserch\"}],"
            " \"admin_keys\": [\"tiny1\"],"
            " \"model_limits\": [{\"match\": \"nothing-like-this\"}, {\"match\": \"x/y\"}]}",
            &cfg);
    assert_true(has_item(cfg.warnings, "$.keys[0].team", "no team listed"));
    assert_true(has_item(cfg.warnings, "$.admin_keys[0]", "configuration file"));
    assert_true(has_item(cfg.warnings, "$.admin_keys[0]", "easy to guess"));
    assert_true(has_item(cfg.warnings, "$.model_limits[0].match", "matches no"));
    assert_false(has_item(cfg.warnings, "$.model_limits[1].match", "matches no"));
    assert_never_echoed(cfg.warnings, "tiny1");
    assert_string_equal(cfg.access->keys[0].team, "reserch");
    assert_null(sg_access_team(cfg.access, "reserch"));
    sg_config_free(&cfg);
    /* no teams at all: a team is a label (no warning) */
    load_ok("{\"keys\": [{\"hash\": \"" HASH_A "\", \"team\": \"anyone\"}]}", &cfg);
    assert_false(has_item(cfg.warnings, "$.keys[0].team", "no team listed"));
    assert_string_equal(cfg.access->keys[0].team, "anyone");
    sg_config_free(&cfg);
}

/* ---- lookup and comparison ---------------------------------------------------------------- */

static void test_sorted_lookup(void **state)
{
    (void)state;
    /* 40 keys in a scrambled order, and the two that share a prefix */
    char text[16384];
    size_t off = (size_t)snprintf(text, sizeof(text),
                                  "{\"keys\": [{\"name\": \"a\", \"hash\": \"" HASH_A
                                  "\"}, {\"name\": \"b\", \"hash\": \"" HASH_B "\"}");
    for (int i = 0; i < 40; i++) {
        char key[32], h[80];
        snprintf(key, sizeof(key), "key-number-%d", (i * 17) % 40);
        sg_key_hash_text(key, strlen(key), h, sizeof(h));
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                ", {\"name\": \"%s\", \"hash\": \"%s\"}", key, h);
    }
    snprintf(text + off, sizeof(text) - off, "]}");
    sg_config_t cfg;
    load_ok(text, &cfg);
    const sg_access_cfg_t *a = cfg.access;
    assert_int_equal(a->n_keys, 42);
    for (size_t i = 1; i < a->n_keys; i++)
        assert_true(memcmp(a->keys[i - 1].hash, a->keys[i].hash, SG_KEY_HASH_LEN) < 0);
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof(key), "key-number-%d", i);
        unsigned char h[SG_KEY_HASH_LEN];
        sg_key_hash(key, strlen(key), h);
        const sg_key_cfg_t *k = sg_keys_find(a, h);
        assert_non_null(k);
        assert_string_equal(k->name, key);
    }
    unsigned char h[SG_KEY_HASH_LEN];
    hash_of(HASH_A, h);
    assert_string_equal(sg_keys_find(a, h)->name, "a");
    hash_of(HASH_B, h);
    assert_string_equal(sg_keys_find(a, h)->name, "b");
    h[31] ^= 1; /* same first bytes as A and B, equal to neither */
    assert_null(sg_keys_find(a, h));
    sg_key_hash("key-number-40", 13, h);
    assert_null(sg_keys_find(a, h));
    memset(h, 0, sizeof(h));
    assert_null(sg_keys_find(a, h));
    memset(h, 0xff, sizeof(h));
    assert_null(sg_keys_find(a, h));
    assert_null(sg_keys_find(NULL, h));
    sg_config_free(&cfg);
}

static void test_hash_equal(void **state)
{
    (void)state;
    unsigned char a[SG_KEY_HASH_LEN], b[SG_KEY_HASH_LEN];
    for (size_t i = 0; i < SG_KEY_HASH_LEN; i++) a[i] = (unsigned char)(i * 7 + 3);
    memcpy(b, a, sizeof(a));
    assert_int_equal(sg_key_hash_equal(a, b), 1);
    for (size_t i = 0; i < SG_KEY_HASH_LEN; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(sg_key_hash_equal(a, b), 0);
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    assert_int_equal(sg_key_hash_equal(a, b), 1);
    memset(b, 0, sizeof(b));
    assert_int_equal(sg_key_hash_equal(a, b), 0);
    memset(a, 0, sizeof(a));
    assert_int_equal(sg_key_hash_equal(a, b), 1);
}

static void test_hash_text(void **state)
{
    (void)state;
    char out[80];
    sg_key_hash_text("abc", 3, out, sizeof(out));
    assert_string_equal(out, "sha256:" ABC_HEX);
    sg_key_hash_text("", 0, out, sizeof(out));
    assert_string_equal(out, "sha256:" EMPTY_HEX);
    assert_int_equal(strlen(out), 71);
    unsigned char h[SG_KEY_HASH_LEN], want[SG_KEY_HASH_LEN];
    sg_key_hash("abc", 3, h);
    hash_of("sha256:" ABC_HEX, want);
    assert_memory_equal(h, want, SG_KEY_HASH_LEN);
}

static void test_patterns(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *name;
        int match;
    } rows[] = {
        {"small", "small", 1},
        {"small", "smaller", 0},
        {"small", "smal", 0},
        {"lambda/*", "lambda/llama3.1-8b-instruct", 1},
        {"lambda/*", "lambda/", 1},
        {"lambda/*", "cortex/llama3.1-8b", 0},
        {"*-8b*", "lambda/llama3.1-8b-instruct", 1},
        {"*-8b*", "cortex/llama3.1-8b", 1},
        {"*-8b*", "cortex/llama3.1-70b", 0},
        {"*", "anything", 1},
        {"*", "", 1},
        {"", "", 1},
        {"", "x", 0},
        {"a*b*c", "abc", 1},
        {"a*b*c", "axxbyyc", 1},
        {"a*b*c", "axxbyy", 0},
        {"a*b", "abab", 1},
        {"a*b", "abac", 0},
        {"**x", "yyx", 1},
        {"*aaa*", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", 1},
        {"*aab", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
        {"cortex/claude-*", "cortex/claude-sonnet-4-5", 1},
        {"Small", "small", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (sg_keys_pattern_match(rows[i].pattern, rows[i].name) != rows[i].match) {
            fprintf(stderr, "# pattern \"%s\" on \"%s\": expected %d\n", rows[i].pattern,
                    rows[i].name, rows[i].match);
            fail();
        }
    }
    sg_config_t cfg;
    load_ok("{\"keys\": [{\"hash\": \"" HASH_A "\", \"models\": [\"lambda/*\", \"*-8b*\","
            " \"small\"]}, {\"hash\": \"" HASH_C "\"}]}",
            &cfg);
    const sg_key_cfg_t *k = &cfg.access->keys[0];
    assert_int_equal(k->n_models, 3);
    assert_true(sg_keys_model_allowed(k, "lambda/hermes3-405b"));
    assert_true(sg_keys_model_allowed(k, "cortex/llama3.1-8b"));
    assert_true(sg_keys_model_allowed(k, "small"));
    assert_false(sg_keys_model_allowed(k, "cortex/claude-sonnet-4-5"));
    assert_false(sg_keys_model_allowed(k, NULL));
    assert_true(sg_keys_model_allowed(&cfg.access->keys[1], "cortex/claude-sonnet-4-5"));
    assert_true(sg_keys_model_allowed(NULL, "anything"));
    sg_config_free(&cfg);
}

/* ---- authentication ----------------------------------------------------------------------- */

static void req_with(sg_http_req_t *req, const char *name, const char *value, const char *name2,
                     const char *value2)
{
    memset(req, 0, sizeof(*req));
    if (name) req->headers[req->n_headers++] = (sg_http_header_t){name, value};
    if (name2) req->headers[req->n_headers++] = (sg_http_header_t){name2, value2};
}

static void assert_401(const sg_error_t *e, const char *needle, const char *key)
{
    assert_int_equal(e->status, 401);
    assert_string_equal(e->type, "invalid_request_error");
    assert_string_equal(e->code, "invalid_api_key");
    assert_non_null(strstr(e->message, needle));
    if (key) assert_null(strstr(e->message, key));
}

static void test_authenticate(void **state)
{
    (void)state;
    char h1[80];
    sg_key_hash_text("sk-client-one", 13, h1, sizeof(h1));
    char text[512];
    snprintf(text, sizeof(text),
             "{\"keys\": [{\"name\": \"one\", \"team\": \"t\", \"hash\": \"%s\"},"
             " {\"name\": \"other\", \"hash\": \"" HASH_A "\"}]}",
             h1);
    sg_config_t cfg;
    load_ok(text, &cfg);
    const sg_access_cfg_t *a = cfg.access;
    sg_http_req_t req;
    const sg_key_cfg_t *key;
    sg_error_t e;

    static const struct {
        const char *name, *value;
    } ok[] = {{"authorization", "Bearer sk-client-one"},
              {"authorization", "bearer sk-client-one"},
              {"authorization", "BEARER   sk-client-one  "},
              {"authorization", " Bearer\tsk-client-one"},
              {"x-api-key", "sk-client-one"},
              {"x-api-key", " sk-client-one "}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        req_with(&req, ok[i].name, ok[i].value, NULL, NULL);
        key = NULL;
        assert_int_equal(sg_keys_authenticate(a, &req, &key, &e), 0);
        assert_non_null(key);
        assert_string_equal(key->name, "one");
        assert_string_equal(key->team, "t");
    }
    /* Bearer wins over x-api-key; a non-Bearer Authorization leaves x-api-key in charge */
    req_with(&req, "authorization", "Bearer sk-client-one", "x-api-key", "wrong-key");
    assert_int_equal(sg_keys_authenticate(a, &req, &key, &e), 0);
    req_with(&req, "authorization", "Basic dXNlcjpwYXNz", "x-api-key", "sk-client-one");
    assert_int_equal(sg_keys_authenticate(a, &req, &key, &e), 0);
    assert_string_equal(key->name, "one");

    /* missing */
    const char *missing[][2] = {{NULL, NULL},
                                {"authorization", ""},
                                {"authorization", "Bearer"},
                                {"authorization", "Bearer   "},
                                {"authorization", "Basic dXNlcjpwYXNz"},
                                {"x-api-key", ""},
                                {"x-api-key", "  "}};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        req_with(&req, missing[i][0], missing[i][1], NULL, NULL);
        key = (const sg_key_cfg_t *)1;
        assert_int_equal(sg_keys_authenticate(a, &req, &key, &e), -1);
        assert_null(key);
        assert_401(&e, "You didn't provide an API key", NULL);
    }
    /* wrong: never echoed */
    const char *wrong[][2] = {
        {"authorization", "Bearer sk-client-onE"}, {"authorization", "Bearer sk-client-one2"},
        {"authorization", "Token sk-client-one"},  {"authorization", "Bearersk-client-one"},
        {"x-api-key", "Bearer sk-client-one"},     {"x-api-key", "sk-wrong-secret-value"}};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        req_with(&req, wrong[i][0], wrong[i][1], NULL, NULL);
        int rc = sg_keys_authenticate(a, &req, &key, &e);
        assert_int_equal(rc, -1);
        assert_null(key);
        if (strncmp(wrong[i][1], "Token", 5) == 0 || strncmp(wrong[i][1], "Bearersk", 8) == 0)
            assert_401(&e, "You didn't provide an API key", "sk-client");
        else
            assert_401(&e, "Incorrect API key provided", "sk-");
    }
    sg_config_free(&cfg);

    /* no keys configured: allowed, no key */
    load_ok("{}", &cfg);
    req_with(&req, "authorization", "Bearer whatever", NULL, NULL);
    key = (const sg_key_cfg_t *)1;
    assert_int_equal(sg_keys_authenticate(cfg.access, &req, &key, &e), 0);
    assert_null(key);
    req_with(&req, NULL, NULL, NULL, NULL);
    assert_int_equal(sg_keys_authenticate(cfg.access, &req, &key, &e), 0);
    assert_null(key);
    sg_config_free(&cfg);
}

static void test_admin(void **state)
{
    (void)state;
    sg_http_req_t req;
    sg_error_t e;
    sg_config_t cfg;
    /* none configured: 403, whatever is sent */
    load_ok("{\"keys\": [{\"hash\": \"" HASH_A "\"}]}", &cfg);
    req_with(&req, "authorization", "Bearer anything", NULL, NULL);
    assert_int_equal(sg_keys_admin(cfg.access, &req, &e), -1);
    assert_int_equal(e.status, 403);
    assert_string_equal(
        e.message, "admin endpoints need an admin key: set SOPHIA_ADMIN_KEY or \"admin_keys\"");
    sg_config_free(&cfg);

    setenv("SOPHIA_ADMIN_KEY", "env-admin-key-0123456789", 1);
    setenv("SG_TEST_ADMIN_KEY", "file-admin-key-0123456789", 1);
    load_ok("{\"admin_keys\": [\"${SG_TEST_ADMIN_KEY}\", \"sha256:" ABC_HEX "\"]}", &cfg);
    assert_int_equal(cfg.access->n_admin, 3);
    const char *good[] = {"Bearer env-admin-key-0123456789", "Bearer file-admin-key-0123456789",
                          "bearer abc"};
    for (size_t i = 0; i < 3; i++) {
        req_with(&req, "authorization", good[i], NULL, NULL);
        assert_int_equal(sg_keys_admin(cfg.access, &req, &e), 0);
    }
    req_with(&req, "x-api-key", "env-admin-key-0123456789", NULL, NULL);
    assert_int_equal(sg_keys_admin(cfg.access, &req, &e), 0);
    req_with(&req, NULL, NULL, NULL, NULL);
    assert_int_equal(sg_keys_admin(cfg.access, &req, &e), -1);
    assert_401(&e, "You didn't provide an admin key", NULL);
    req_with(&req, "authorization", "Bearer env-admin-key-012345678", NULL, NULL);
    assert_int_equal(sg_keys_admin(cfg.access, &req, &e), -1);
    assert_401(&e, "Incorrect admin key", "env-admin");
    sg_config_free(&cfg);

    /* the same key twice (file and environment) counts once */
    setenv("SG_TEST_ADMIN_KEY", "env-admin-key-0123456789", 1);
    load_ok("{\"admin_keys\": [\"${SG_TEST_ADMIN_KEY}\"]}", &cfg);
    assert_int_equal(cfg.access->n_admin, 1);
    sg_config_free(&cfg);
}

/* ---- the loopback rule -------------------------------------------------------------------- */

static void test_loopback_hosts(void **state)
{
    (void)state;
    const char *loop[] = {"127.0.0.1",       "127.1.2.3",        "127.255.255.255", "::1",
                          "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost",       "LocalHost"};
    const char *open[] = {"0.0.0.0",
                          "::",
                          "10.0.0.1",
                          "128.0.0.1",
                          "126.0.0.1",
                          "192.168.1.5",
                          "::2",
                          "::ffff:10.0.0.1",
                          "example.com",
                          "localhost.example.com",
                          "",
                          "fe80::1"};
    for (size_t i = 0; i < sizeof(loop) / sizeof(loop[0]); i++)
        if (!sg_host_is_loopback(loop[i])) {
            fprintf(stderr, "# %s should be loopback\n", loop[i]);
            fail();
        }
    for (size_t i = 0; i < sizeof(open) / sizeof(open[0]); i++)
        if (sg_host_is_loopback(open[i])) {
            fprintf(stderr, "# %s should not be loopback\n", open[i]);
            fail();
        }
    assert_false(sg_host_is_loopback(NULL));

    sg_access_cfg_t a = {0};
    char msg[512];
    assert_null(sg_keys_check_listen(&a, "127.0.0.1", msg, sizeof(msg)));
    assert_null(sg_keys_check_listen(&a, "::1", msg, sizeof(msg)));
    const char *why = sg_keys_check_listen(&a, "0.0.0.0", msg, sizeof(msg));
    assert_non_null(why);
    assert_string_equal(why, "no client keys configured and listening on 0.0.0.0: create a key "
                             "with `sophia-gateway hash-key` and add it to \"keys\", or set "
                             "\"allow_unauthenticated\": true");
    why = sg_keys_check_listen(&a, "::", msg, sizeof(msg));
    assert_non_null(why);
    assert_non_null(strstr(why, "listening on [::]:"));
    a.allow_unauthenticated = 1;
    assert_null(sg_keys_check_listen(&a, "0.0.0.0", msg, sizeof(msg)));
    a.allow_unauthenticated = 0;
    sg_key_cfg_t k = {0};
    a.keys = &k;
    a.n_keys = 1;
    assert_null(sg_keys_check_listen(&a, "0.0.0.0", msg, sizeof(msg)));
}

/* sg_gen_load: errors at $.keys, or a generation. */
static sg_gen_t *gen_load(const char *text, const char *listen, sg_config_errors_t *errs)
{
    const char *path = write_tmp(text);
    sg_gen_t *g = sg_gen_load(path, listen, 1, errs);
    unlink(path);
    return g;
}

static void test_loopback_rule(void **state)
{
    (void)state;
    sg_config_errors_t errs = {0};
    /* the --listen override is what counts, whichever way it goes */
    sg_gen_t *g = gen_load("{}", "0.0.0.0:0", &errs);
    assert_null(g);
    assert_has_error(&errs, "$.keys", "no client keys configured and listening on 0.0.0.0");
    sg_config_errors_free(&errs);
    g = gen_load("{}", "[::]:0", &errs);
    assert_null(g);
    assert_has_error(&errs, "$.keys", "listening on [::]");
    sg_config_errors_free(&errs);
    g = gen_load("{\"listen\": \"0.0.0.0:8080\"}", NULL, &errs);
    assert_null(g);
    assert_has_error(&errs, "$.keys", "listening on 0.0.0.0");
    sg_config_errors_free(&errs);
    g = gen_load("{\"listen\": \"0.0.0.0:8080\"}", "127.0.0.1:0", &errs);
    assert_non_null(g);
    assert_int_equal(errs.n, 0);
    sg_gen_unref(g);
    g = gen_load("{}", "[::1]:0", &errs);
    assert_non_null(g);
    sg_gen_unref(g);
    g = gen_load("{}", "localhost:0", &errs);
    assert_non_null(g);
    sg_gen_unref(g);
    setenv("SOPHIA_LISTEN", "0.0.0.0:9000", 1);
    g = gen_load("{}", NULL, &errs);
    assert_null(g);
    assert_has_error(&errs, "$.keys", "listening on 0.0.0.0");
    sg_config_errors_free(&errs);
    unsetenv("SOPHIA_LISTEN");
    /* allowed off loopback: with a key, or with allow_unauthenticated */
    g = gen_load("{\"allow_unauthenticated\": true}", "0.0.0.0:0", &errs);
    assert_non_null(g);
    sg_gen_unref(g);
    g = gen_load("{\"keys\": [{\"hash\": \"" HASH_A "\"}]}", "0.0.0.0:0", &errs);
    assert_non_null(g);
    assert_int_equal(errs.n, 0);
    sg_gen_unref(g);
    /* an admin key is not a client key */
    setenv("SOPHIA_ADMIN_KEY", "env-admin-key-0123456789", 1);
    g = gen_load("{}", "0.0.0.0:0", &errs);
    assert_null(g);
    sg_config_errors_free(&errs);
    unsetenv("SOPHIA_ADMIN_KEY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_valid, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_key_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_hash_never_echoed, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_other_section_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_warnings, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_sorted_lookup, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_hash_equal, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_hash_text, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_patterns, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_authenticate, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_admin, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_loopback_hosts, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_loopback_rule, clear_env, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
