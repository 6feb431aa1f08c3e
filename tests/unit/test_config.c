/* Unit tests for the configuration loader (src/core/config.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sophia/config.h"
#include "sophia/cortex.h"
#include "sophia/openai.h"

#define BASE(p) ((p)->n_endpoints ? (p)->endpoints[0].base_url : NULL)
#define OA(p) sg_openai_cfg(p)
#define CX(p) sg_cortex_cfg(p)

#define SECRET "s3cr3t-TOKEN-value"

static const char *const env_vars[] = {
    "LAMBDA_BASE_URL",
    "LAMBDA_API_KEY",
    "SOPHIA_LISTEN",
    "SOPHIA_LOG_LEVEL",
    "SG_TEST_SECRET",
    "SG_TEST_HOST",
    "SG_TEST_PORT",
    "SG_TEST_UNSET",
    "SG_TEST_UNSET2",
    "SG_TEST_EMPTY",
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_USER",
    "SNOWFLAKE_PAT",
    "SNOWFLAKE_PRIVATE_KEY_PATH",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    "SNOWFLAKE_ROLE",
    "SNOWFLAKE_WAREHOUSE",
    "SNOWFLAKE_DATABASE",
    "SNOWFLAKE_SCHEMA",
    "SNOWFLAKE_BASE_URL",
};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) unsetenv(env_vars[i]);
    return 0;
}

/* Writes text to a fresh temp file; returns its path in a static buffer. */
static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/sg_test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Loads text as a config file (the temp file is removed again). */
static int load_text(const char *text, sg_config_t *cfg, sg_config_errors_t *errs)
{
    const char *path = write_tmp(text);
    int rc = sg_config_load(cfg, path, errs);
    unlink(path);
    return rc;
}

static void dump_errors(const sg_config_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "# error %s: %s\n", errs->items[i].path, errs->items[i].message);
}

/* 1 when some error has exactly this path and a message containing needle. */
static int has_error(const sg_config_errors_t *errs, const char *path, const char *needle)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strcmp(errs->items[i].path, path) == 0 && strstr(errs->items[i].message, needle))
            return 1;
    return 0;
}

static void assert_has_error(const sg_config_errors_t *errs, const char *path, const char *needle)
{
    if (!has_error(errs, path, needle)) {
        fprintf(stderr, "# expected error at %s containing \"%s\"\n", path, needle);
        dump_errors(errs);
        fail();
    }
}

static void assert_no_secret(const sg_config_errors_t *errs, const char *secret)
{
    for (size_t i = 0; i < errs->n; i++) {
        assert_null(strstr(errs->items[i].path, secret));
        assert_null(strstr(errs->items[i].message, secret));
    }
}

static const sg_model_cfg_t *find_model(const sg_provider_cfg_t *p, const char *id)
{
    for (size_t i = 0; i < p->n_models; i++)
        if (strcmp(p->models[i].id, id) == 0) return &p->models[i];
    return NULL;
}

static int model_has_alias(const sg_model_cfg_t *m, const char *alias)
{
    for (size_t i = 0; i < m->n_aliases; i++)
        if (strcmp(m->aliases[i], alias) == 0) return 1;
    return 0;
}

/* Loads text expecting success. */
static void load_ok(const char *text, sg_config_t *cfg)
{
    sg_config_errors_t errs = {0};
    int rc = load_text(text, cfg, &errs);
    if (rc != 0) dump_errors(&errs);
    assert_int_equal(rc, 0);
    assert_int_equal(errs.n, 0);
    sg_config_errors_free(&errs);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_defaults(&cfg);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.max_header_bytes, 16384);
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.idle_timeout_ms, 60000);
    assert_int_equal(cfg.write_stall_timeout_ms, 30000);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.high_watermark, 65536);
    assert_int_equal(cfg.low_watermark, 16384);
    assert_int_equal(cfg.n_cors_origins, 0);
    assert_int_equal(cfg.connect_timeout_ms, 5000);
    assert_int_equal(cfg.first_byte_timeout_ms, 60000);
    assert_int_equal(cfg.upstream_idle_timeout_ms, 60000);
    assert_int_equal(cfg.total_timeout_ms, 600000);
    assert_int_equal(cfg.shutdown_grace_ms, 10000);
    assert_int_equal(cfg.n_providers, 0);
    sg_config_free(&cfg);
    sg_config_free(&cfg); /* idempotent after free */

    /* No file and no environment: the defaults, no providers, no errors. */
    sg_config_errors_t errs = {0};
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    assert_int_equal(errs.n, 0);
    assert_int_equal(cfg.listen_port, 8080);
    assert_int_equal(cfg.n_providers, 0);
    assert_null(sg_config_provider(&cfg, "lambda"));
    sg_config_free(&cfg);

    /* An empty object is valid too. */
    load_ok("{}", &cfg);
    assert_int_equal(cfg.n_providers, 0);
    sg_config_free(&cfg);

    /* errs may be NULL */
    assert_int_equal(sg_config_load(&cfg, NULL, NULL), 0);
    sg_config_free(&cfg);
}

static const char full_config[] =
    "{\n"
    "  \"listen\": \"0.0.0.0:9090\",\n"
    "  \"log_level\": \"debug\",\n"
    "  \"limits\": {\"max_header_bytes\":8192, \"max_body_bytes\":2097152,\n"
    "             \"header_timeout_ms\":5000, \"idle_timeout_ms\":30000,\n"
    "             \"write_stall_timeout_ms\":15000, \"max_connections\":500,\n"
    "             \"high_watermark\":131072, \"low_watermark\":32768},\n"
    "  \"cors\": {\"allowed_origins\": [\"https://app.example.com\", \"http://localhost:3000\"]},\n"
    "  \"upstream\": {\"connect_timeout_ms\":2000, \"first_byte_timeout_ms\":30000,\n"
    "               \"idle_timeout_ms\":20000, \"total_timeout_ms\":300000},\n"
    "  \"shutdown_grace_ms\": 0,\n"
    "  \"providers\": {\n"
    "    \"lambda\": {\"kind\":\"openai\", \"base_url\":\"${LAMBDA_BASE_URL}\",\n"
    "               \"api_key\":\"${LAMBDA_API_KEY}\",\n"
    "               \"models\":[{\"id\":\"hermes3-70b\",\"upstream_id\":\"hermes3-70b\",\n"
    "                          \"aliases\":[\"fast\"],\"price_in\":0.12,\"price_out\":0.30},\n"
    "                         {\"id\":\"big\",\"upstream_id\":\"hermes3-405b\"},\n"
    "                         {\"id\":\"custom\",\"price_in\":1.5}]},\n"
    "    \"local-vllm\": {\"kind\":\"openai\", \"base_url\":\"http://10.0.0.5:8000/v1\",\n"
    "                   \"api_key\": null,\n"
    "                   \"models\":[{\"id\":\"my-model\",\"upstream_id\":\"org/My-Model-7B\"}]}\n"
    "  }\n"
    "}\n";

static void test_full_valid_file(void **state)
{
    (void)state;
    setenv("LAMBDA_BASE_URL", "https://lambda.example.com/v1/", 1);
    setenv("LAMBDA_API_KEY", SECRET, 1);
    sg_config_t cfg;
    load_ok(full_config, &cfg);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9090);
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.max_header_bytes, 8192);
    assert_int_equal(cfg.max_body_bytes, 2097152);
    assert_int_equal(cfg.header_timeout_ms, 5000);
    assert_int_equal(cfg.idle_timeout_ms, 30000);
    assert_int_equal(cfg.write_stall_timeout_ms, 15000);
    assert_int_equal(cfg.max_connections, 500);
    assert_int_equal(cfg.high_watermark, 131072);
    assert_int_equal(cfg.low_watermark, 32768);
    assert_int_equal(cfg.n_cors_origins, 2);
    assert_string_equal(cfg.cors_origins[0], "https://app.example.com");
    assert_string_equal(cfg.cors_origins[1], "http://localhost:3000");
    assert_int_equal(cfg.connect_timeout_ms, 2000);
    assert_int_equal(cfg.first_byte_timeout_ms, 30000);
    assert_int_equal(cfg.upstream_idle_timeout_ms, 20000);
    assert_int_equal(cfg.total_timeout_ms, 300000);
    assert_int_equal(cfg.shutdown_grace_ms, 0);

    assert_int_equal(cfg.n_providers, 2);
    const sg_provider_cfg_t *l = sg_config_provider(&cfg, "lambda");
    assert_non_null(l);
    assert_string_equal(l->name, "lambda");
    assert_string_equal(l->kind, "openai");
    assert_string_equal(BASE(l), "https://lambda.example.com/v1");
    assert_string_equal(OA(l)->api_key, SECRET);
    assert_int_equal(l->n_models, 3);
    assert_string_equal(l->models[0].id, "hermes3-70b");
    assert_string_equal(l->models[0].upstream_id, "hermes3-70b");
    assert_int_equal(l->models[0].n_aliases, 1);
    assert_string_equal(l->models[0].aliases[0], "fast");
    assert_true(l->models[0].price_in_per_mtok == 0.12);
    assert_true(l->models[0].price_out_per_mtok == 0.30);
    /* missing prices of a known Lambda model come from the built-in catalog */
    assert_string_equal(l->models[1].upstream_id, "hermes3-405b");
    assert_true(l->models[1].price_in_per_mtok == 0.80);
    assert_true(l->models[1].price_out_per_mtok == 0.80);
    /* unknown model: upstream_id defaults to id; a missing price is 0 */
    assert_string_equal(l->models[2].upstream_id, "custom");
    assert_true(l->models[2].price_in_per_mtok == 1.5);
    assert_true(l->models[2].price_out_per_mtok == 0);

    const sg_provider_cfg_t *v = sg_config_provider(&cfg, "local-vllm");
    assert_non_null(v);
    assert_string_equal(BASE(v), "http://10.0.0.5:8000/v1");
    assert_null(OA(v)->api_key);
    assert_int_equal(v->n_models, 1);
    assert_string_equal(v->models[0].upstream_id, "org/My-Model-7B");
    assert_int_equal(v->models[0].n_aliases, 0);
    assert_null(sg_config_provider(&cfg, "nope"));
    sg_config_free(&cfg);
}

static void test_comments_allowed(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok("// leading comment\n"
            "{\n"
            "  \"listen\": \"127.0.0.1:7000\", // trailing \"quoted\" comment\n"
            "  /* block\n   comment */ \"log_level\": \"warn\",\n"
            "  \"providers\": {\"p\": {\"kind\": \"openai\", /* inline */\n"
            "    \"base_url\": \"http://h/v1//\", \"models\": [{\"id\": \"a/*b*/c\"}]}}\n"
            "}\n",
            &cfg);
    assert_int_equal(cfg.listen_port, 7000);
    assert_string_equal(cfg.log_level, "warn");
    /* comment markers inside strings are kept */
    assert_string_equal(BASE(&cfg.providers[0]), "http://h/v1");
    assert_string_equal(cfg.providers[0].models[0].id, "a/*b*/c");
    sg_config_free(&cfg);
    /* "//" inside a string is not a comment: that origin has a path and is rejected */
    sg_config_errors_t errs = {0};
    assert_int_equal(
        load_text("{\"cors\": {\"allowed_origins\": [\"https://a.example//x\"]}}", &cfg, &errs),
        -1);
    assert_has_error(&errs, "$.cors.allowed_origins[0]", "without a path");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    assert_int_equal(load_text("{\n /* never closed\n}", &cfg, &errs), -1);
    assert_has_error(&errs, "$", "unterminated /* comment at line 2, column 2");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_env_only(void **state)
{
    (void)state;
    setenv("LAMBDA_BASE_URL", "http://127.0.0.1:9000/v1/", 1);
    setenv("LAMBDA_API_KEY", SECRET, 1);
    setenv("SOPHIA_LISTEN", "[::1]:8443", 1);
    setenv("SOPHIA_LOG_LEVEL", "error", 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    assert_int_equal(errs.n, 0);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8443);
    assert_string_equal(cfg.log_level, "error");
    assert_int_equal(cfg.n_providers, 1);
    const sg_provider_cfg_t *l = sg_config_provider(&cfg, "lambda");
    assert_non_null(l);
    assert_string_equal(l->kind, "openai");
    assert_string_equal(BASE(l), "http://127.0.0.1:9000/v1");
    assert_string_equal(OA(l)->api_key, SECRET);
    /* no models configured: the provider serves what its endpoint lists (discovery) */
    assert_int_equal(l->n_models, 0);
    assert_true(l->discover);
    assert_false(l->pinned);
    sg_config_free(&cfg);

    /* a comma-separated LAMBDA_BASE_URL gives one endpoint each */
    setenv("LAMBDA_BASE_URL", "http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1/", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    l = sg_config_provider(&cfg, "lambda");
    assert_int_equal(l->n_endpoints, 2);
    assert_string_equal(l->endpoints[0].base_url, "http://10.0.0.1:8000/v1");
    assert_string_equal(l->endpoints[1].base_url, "http://10.0.0.2:8000/v1");
    assert_int_equal(l->endpoints[1].weight, 1);
    sg_config_free(&cfg);
    setenv("LAMBDA_BASE_URL", "http://127.0.0.1:9000/v1/", 1);

    /* without an API key: no Authorization */
    unsetenv("LAMBDA_API_KEY");
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    assert_null(OA(sg_config_provider(&cfg, "lambda"))->api_key);
    sg_config_free(&cfg);

    /* the environment overrides the file's listen / log_level */
    load_ok("{\"listen\":\"1.2.3.4:1\",\"log_level\":\"debug\"}", &cfg);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8443);
    assert_string_equal(cfg.log_level, "error");
    sg_config_free(&cfg);

    /* without LAMBDA_BASE_URL (or with it empty) there is no provider */
    setenv("LAMBDA_BASE_URL", "", 1);
    setenv("LAMBDA_API_KEY", SECRET, 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    assert_int_equal(cfg.n_providers, 0);
    sg_config_free(&cfg);

    /* a file with other providers still gets "lambda" from the environment */
    setenv("LAMBDA_BASE_URL", "https://lambda.example.com/v1", 1);
    load_ok("{\"providers\":{\"other\":{\"kind\":\"openai\",\"base_url\":\"http://h/v1\","
            "\"models\":[{\"id\":\"m\",\"aliases\":[\"smart\"]}]}}}",
            &cfg);
    assert_int_equal(cfg.n_providers, 2);
    l = sg_config_provider(&cfg, "lambda");
    assert_non_null(l);
    assert_true(l->discover);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_env_errors(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    setenv("SOPHIA_LISTEN", SECRET, 1);
    setenv("SOPHIA_LOG_LEVEL", SECRET, 1);
    setenv("LAMBDA_BASE_URL", "ftp://" SECRET, 1);
    setenv("LAMBDA_API_KEY", "abc\r\nX-Injected: 1", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_has_error(&errs, "env:SOPHIA_LISTEN", "invalid listen address");
    assert_has_error(&errs, "env:SOPHIA_LOG_LEVEL", "invalid log level");
    assert_has_error(&errs, "env:LAMBDA_BASE_URL", "http:// or https://");
    assert_no_secret(&errs, SECRET);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    setenv("LAMBDA_BASE_URL", "https://ok.example.com", 1);
    unsetenv("SOPHIA_LISTEN");
    unsetenv("SOPHIA_LOG_LEVEL");
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_int_equal(errs.n, 1);
    assert_has_error(&errs, "env:LAMBDA_API_KEY", "control characters");
    assert_no_secret(&errs, "X-Injected");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_interpolation(void **state)
{
    (void)state;
    setenv("SG_TEST_HOST", "10.1.2.3", 1);
    setenv("SG_TEST_PORT", "7777", 1);
    setenv("SG_TEST_SECRET", SECRET, 1);
    setenv("SG_TEST_EMPTY", "", 1);
    sg_config_t cfg;
    load_ok(
        "{\"listen\":\"${SG_TEST_HOST}:${SG_TEST_PORT}\",\n"
        " \"providers\":{\"p\":{\"kind\":\"openai\",\n"
        "   \"base_url\":\"http://${SG_TEST_HOST}/v1\",\n"
        "   \"api_key\":\"a$$b${SG_TEST_SECRET}c$5$\",\n"
        "   \"models\":[{\"id\":\"m$$1\",\"upstream_id\":\"x${SG_TEST_EMPTY}y\"}]},\n"
        "  \"q\":{\"kind\":\"openai\",\"base_url\":\"http://h\",\"api_key\":\"${SG_TEST_EMPTY}\","
        "   \"models\":[{\"id\":\"n\"}]}}}",
        &cfg);
    assert_string_equal(cfg.listen_host, "10.1.2.3");
    assert_int_equal(cfg.listen_port, 7777);
    const sg_provider_cfg_t *p = sg_config_provider(&cfg, "p");
    assert_non_null(p);
    assert_string_equal(BASE(p), "http://10.1.2.3/v1");
    assert_string_equal(OA(p)->api_key, "a$b" SECRET "c$5$");
    assert_string_equal(p->models[0].id, "m$1");
    assert_string_equal(p->models[0].upstream_id, "xy");
    /* an empty api_key means no key */
    assert_null(OA(sg_config_provider(&cfg, "q"))->api_key);
    sg_config_free(&cfg);
}

static void test_interpolation_errors_hide_secrets(void **state)
{
    (void)state;
    setenv("SG_TEST_SECRET", SECRET, 1);
    setenv("LAMBDA_API_KEY", SECRET, 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    int rc =
        load_text("{\"listen\":\"${SG_TEST_SECRET}\",\n"
                  " \"log_level\":\"${SG_TEST_SECRET}\",\n"
                  " \"cors\":{\"allowed_origins\":[\"${SG_TEST_SECRET}\"]},\n"
                  " \"providers\":{\n"
                  "  \"lambda\":{\"base_url\":\"http://h\",\"api_key\":\"${SG_TEST_UNSET}\",\n"
                  "    "
                  "\"models\":[{\"id\":\"${SG_TEST_SECRET}\"},{\"id\":\"x\",\"aliases\":[\"${SG_"
                  "TEST_SECRET}\"]},\n"
                  "                {\"id\":\"${SG_TEST_UNSET2}-${SG_TEST_UNSET}\"}]},\n"
                  "  \"p\":{\"kind\":\"${SG_TEST_SECRET}\",\"base_url\":\"${SG_TEST_SECRET}\",\n"
                  "       \"api_key\":\"${SG_TEST_SECRET}\\n\",\"models\":[{\"id\":\"m\"}]}}}",
                  &cfg, &errs);
    assert_int_equal(rc, -1);
    assert_has_error(&errs, "$.providers.lambda.api_key",
                     "environment variable SG_TEST_UNSET is not set");
    assert_has_error(&errs, "$.providers.lambda.models[2].id",
                     "environment variable SG_TEST_UNSET2 is not set");
    assert_has_error(&errs, "$.providers.lambda.models[2].id",
                     "environment variable SG_TEST_UNSET is not set");
    assert_has_error(&errs, "$.listen", "invalid listen address");
    assert_has_error(&errs, "$.log_level", "invalid log level");
    assert_has_error(&errs, "$.cors.allowed_origins[0]", "origin");
    assert_has_error(&errs, "$.providers.lambda.models[1].aliases[0]", "duplicate model name");
    assert_has_error(&errs, "$.providers.p.kind", "unsupported provider kind");
    /* with an unknown kind, only the keys every kind shares are checked */
    assert_has_error(&errs, "$.providers.p.base_url", "http:// or https://");
    assert_no_secret(&errs, SECRET);
    /* not even a fragment of it */
    assert_no_secret(&errs, "s3cr3t");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_unterminated_and_bad_var(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(
        load_text("{\"listen\":\"${SG_TEST_HOST:8080\",\"log_level\":\"${}\","
                  "\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
                  "\"models\":[{\"id\":\"${A-B}\"}]}}}",
                  &cfg, &errs),
        -1);
    assert_has_error(&errs, "$.listen", "unterminated ${");
    assert_has_error(&errs, "$.log_level", "invalid environment variable name");
    assert_has_error(&errs, "$.providers.p.models[0].id", "invalid environment variable name");
    assert_int_equal(errs.n, 3);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

typedef struct bad_case {
    const char *json;
    const char *path;
    const char *needle;
} bad_case_t;

#define P(body) "{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\"," body "}}}"
#define M(body) P("\"models\":[{\"id\":\"m\"}," body "]")
/* a cortex provider with account and user (add credentials in body) */
#define C(body) "{\"providers\":{\"cortex\":{\"account\":\"acct\",\"user\":\"u\"," body "}}}"
#define CP(body) C("\"pat\":\"tok\"," body)

static const bad_case_t bad_cases[] = {
    /* top level */
    {"[]", "$", "must be an object"},
    {"{\"listn\":\"1.2.3.4:80\"}", "$.listn", "unknown key"},
    {"{\"listen\":8080}", "$.listen", "must be a string"},
    {"{\"listen\":\"localhost\"}", "$.listen", "HOST:PORT"},
    {"{\"listen\":\":8080\"}", "$.listen", "missing host"},
    {"{\"listen\":\"localhost:\"}", "$.listen", "missing port"},
    {"{\"listen\":\"localhost:http\"}", "$.listen", "decimal number"},
    {"{\"listen\":\"localhost:65536\"}", "$.listen", "port out of range"},
    {"{\"listen\":\"localhost:-1\"}", "$.listen", "decimal number"},
    {"{\"listen\":\"::1:80\"}", "$.listen", "brackets"},
    {"{\"listen\":\"[::1:80\"}", "$.listen", "missing ']'"},
    {"{\"listen\":\"[::1]80\"}", "$.listen", "[IPv6]:PORT"},
    {"{\"listen\":\"[zz::1]:80\"}", "$.listen", "invalid IPv6"},
    {"{\"listen\":\"a b:80\"}", "$.listen", "invalid character"},
    {"{\"log_level\":\"verbose\"}", "$.log_level", "invalid log level \"verbose\""},
    {"{\"log_level\":null}", "$.log_level", "must be a string, not null"},
    {"{\"log_level\":\"info\",\"log_level\":\"debug\"}", "$.log_level", "duplicate key"},
    {"{\"shutdown_grace_ms\":-1}", "$.shutdown_grace_ms", "non-negative integer"},
    {"{\"shutdown_grace_ms\":\"10\"}", "$.shutdown_grace_ms", "not a string"},
    /* limits */
    {"{\"limits\":[]}", "$.limits", "must be an object"},
    {"{\"limits\":{\"max_body_byte\":1}}", "$.limits.max_body_byte", "unknown key"},
    {"{\"limits\":{\"max_body_bytes\":0}}", "$.limits.max_body_bytes", "positive integer"},
    {"{\"limits\":{\"max_body_bytes\":-5}}", "$.limits.max_body_bytes", "positive integer"},
    {"{\"limits\":{\"max_body_bytes\":1.5}}", "$.limits.max_body_bytes", "fraction"},
    {"{\"limits\":{\"max_body_bytes\":1e300}}", "$.limits.max_body_bytes", "too large"},
    {"{\"limits\":{\"max_body_bytes\":\"1MB\"}}", "$.limits.max_body_bytes", "not a string"},
    {"{\"limits\":{\"max_header_bytes\":0}}", "$.limits.max_header_bytes", "positive"},
    {"{\"limits\":{\"header_timeout_ms\":0}}", "$.limits.header_timeout_ms", "positive"},
    {"{\"limits\":{\"idle_timeout_ms\":true}}", "$.limits.idle_timeout_ms", "not a boolean"},
    {"{\"limits\":{\"write_stall_timeout_ms\":0}}", "$.limits.write_stall_timeout_ms", "positive"},
    {"{\"limits\":{\"max_connections\":-1}}", "$.limits.max_connections", "positive"},
    {"{\"limits\":{\"high_watermark\":0}}", "$.limits.high_watermark", "positive"},
    {"{\"limits\":{\"low_watermark\":-1}}", "$.limits.low_watermark", "non-negative"},
    {"{\"limits\":{\"low_watermark\":65536}}", "$.limits.low_watermark",
     "must be less than high_watermark"},
    {"{\"limits\":{\"high_watermark\":100,\"low_watermark\":200}}", "$.limits.low_watermark",
     "must be less than high_watermark"},
    {"{\"limits\":{\"high_watermark\":1000}}", "$.limits.high_watermark",
     "must be less than high_watermark"},
    /* cors */
    {"{\"cors\":{\"origins\":[]}}", "$.cors.origins", "unknown key"},
    {"{\"cors\":{\"allowed_origins\":\"*\"}}", "$.cors.allowed_origins", "array of strings"},
    {"{\"cors\":{\"allowed_origins\":[\"*\",1]}}", "$.cors.allowed_origins[1]", "must be a string"},
    {"{\"cors\":{\"allowed_origins\":[\"app.example.com\"]}}", "$.cors.allowed_origins[0]",
     "origin"},
    {"{\"cors\":{\"allowed_origins\":[\"https://a.example.com/\"]}}", "$.cors.allowed_origins[0]",
     "trailing"},
    /* upstream */
    {"{\"upstream\":{\"connect_timeout\":1}}", "$.upstream.connect_timeout", "unknown key"},
    {"{\"upstream\":{\"connect_timeout_ms\":0}}", "$.upstream.connect_timeout_ms", "positive"},
    {"{\"upstream\":{\"first_byte_timeout_ms\":-1}}", "$.upstream.first_byte_timeout_ms",
     "positive"},
    {"{\"upstream\":{\"idle_timeout_ms\":0}}", "$.upstream.idle_timeout_ms", "positive"},
    {"{\"upstream\":{\"total_timeout_ms\":0.5}}", "$.upstream.total_timeout_ms", "fraction"},
    /* providers */
    {"{\"providers\":[]}", "$.providers", "must be an object"},
    {"{\"providers\":{\"p\":1}}", "$.providers.p", "must be an object"},
    {"{\"providers\":{\"p\":{\"base_url\":\"http://h\",\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p", "missing required key \"kind\""},
    {"{\"providers\":{\"a b\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers[\"a b\"]", "provider name"},
    {"{\"providers\":{\"p\":{\"kind\":\"anthropic\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p.kind", "unsupported provider kind \"anthropic\""},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"models\":[{\"id\":\"m\"}]}}}", "$.providers.p",
     "missing required key \"base_url\""},
    {"{\"providers\":{\"lambda\":{\"models\":[{\"id\":\"m\"}]}}}", "$.providers.lambda",
     "LAMBDA_BASE_URL"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"ftp://h\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p.base_url", "http:// or https://"},
    {P("\"models\":[{\"id\":\"m\"}],\"base_url\":\"http://h2\""), "$.providers.p.base_url",
     "duplicate key"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"https://\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p.base_url", "no host"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://a b\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p.base_url", "spaces"},
    {P("\"models\":[{\"id\":\"m\"}],\"api_key\":5"), "$.providers.p.api_key", "string or null"},
    {P("\"models\":[{\"id\":\"m\"}],\"apikey\":\"x\""), "$.providers.p.apikey", "unknown key"},
    {P("\"models\":[{\"id\":\"m\"}],\"api_key\":\"a\\nb\""), "$.providers.p.api_key",
     "control characters"},
    {P("\"models\":{}"), "$.providers.p.models", "array of model objects"},
    {P("\"models\":[]"), "$.providers.p.models", "at least one model"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\",\"discover\":false}}}",
     "$.providers.p", "missing required key \"models\""},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\",\"discover\":1}}}",
     "$.providers.p.discover", "true or false"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
     "\"endpoints\":[{\"base_url\":\"http://i\"}]}}}",
     "$.providers.p.endpoints", "not both"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"endpoints\":[]}}}", "$.providers.p.endpoints",
     "non-empty array"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"endpoints\":[{\"base_url\":\"http://i\","
     "\"weight\":0}]}}}",
     "$.providers.p.endpoints[0].weight", "positive integer"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"endpoints\":[{\"weight\":2}]}}}",
     "$.providers.p.endpoints[0]", "missing required key \"base_url\""},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"endpoints\":[{\"base_url\":\"ftp://i\"}]}}}",
     "$.providers.p.endpoints[0].base_url", "http:// or https://"},
    {M("{\"id\":\"x\",\"tier\":\"huge\"}"), "$.providers.p.models[1].tier", "\"small\""},
    {M("{\"id\":\"x\",\"context_window\":0}"), "$.providers.p.models[1].context_window",
     "positive"},
    {M("{\"id\":\"x\",\"capabilities\":[\"tools\",\"telepathy\"]}"),
     "$.providers.p.models[1].capabilities[1]", "\"tools\""},
    {CP("\"base_url\":\"https://x.snowflakecomputing.com/api/v2\""), "$.providers.cortex.base_url",
     "without /api/v2"},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"m\"}]},"
     "\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\",\"models\":[{\"id\":\"n\"}]}}}",
     "$.providers.p", "duplicate provider"},
    /* models */
    {M("\"m2\""), "$.providers.p.models[1]", "must be an object"},
    {M("{}"), "$.providers.p.models[1]", "missing required key \"id\""},
    {M("{\"id\":\"\"}"), "$.providers.p.models[1].id", "must not be empty"},
    {M("{\"id\":7}"), "$.providers.p.models[1].id", "must be a string"},
    {M("{\"id\":\"x\",\"price\":1}"), "$.providers.p.models[1].price", "unknown key"},
    {M("{\"id\":\"x\",\"upstream_id\":\"\"}"), "$.providers.p.models[1].upstream_id",
     "must not be empty"},
    {M("{\"id\":\"x\",\"aliases\":\"y\"}"), "$.providers.p.models[1].aliases", "array of strings"},
    {M("{\"id\":\"x\",\"aliases\":[\"y\",\"\"]}"), "$.providers.p.models[1].aliases[1]",
     "must not be empty"},
    {M("{\"id\":\"x\",\"price_in\":-0.1}"), "$.providers.p.models[1].price_in", "non-negative"},
    {M("{\"id\":\"x\",\"price_out\":\"0.3\"}"), "$.providers.p.models[1].price_out",
     "must be a number"},
    {M("{\"id\":\"m\"}"), "$.providers.p.models[1].id",
     "duplicate model name \"m\" (already used at $.providers.p.models[0].id)"},
    {M("{\"id\":\"x\",\"aliases\":[\"m\"]}"), "$.providers.p.models[1].aliases[0]",
     "duplicate model name \"m\""},
    {M("{\"id\":\"x\",\"aliases\":[\"y\",\"y\"]}"), "$.providers.p.models[1].aliases[1]",
     "duplicate model name \"y\""},
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"m\",\"aliases\":[\"fast\"]}]},"
     "\"q\":{\"kind\":\"openai\",\"base_url\":\"http://h\",\"models\":[{\"id\":\"fast\"}]}}}",
     "$.providers.q.models[0].id",
     "duplicate model name \"fast\" (already used at $.providers.p.models[0].aliases[0])"},
    /* cortex providers */
    {"{\"providers\":{\"cortex\":{\"user\":\"u\",\"pat\":\"t\"}}}", "$.providers.cortex",
     "missing required key \"account\" (or set SNOWFLAKE_ACCOUNT)"},
    {"{\"providers\":{\"cortex\":{\"account\":\"a\",\"pat\":\"t\"}}}", "$.providers.cortex",
     "missing required key \"user\" (or set SNOWFLAKE_USER)"},
    {"{\"providers\":{\"sf\":{\"kind\":\"cortex\",\"user\":\"u\",\"pat\":\"t\"}}}",
     "$.providers.sf", "missing required key \"account\""},
    {"{\"providers\":{\"cortex\":{\"account\":\"\",\"user\":\"u\",\"pat\":\"t\"}}}",
     "$.providers.cortex.account", "must not be empty"},
    {"{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"\",\"pat\":\"t\"}}}",
     "$.providers.cortex.user", "must not be empty"},
    {"{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\\n\",\"pat\":\"t\"}}}",
     "$.providers.cortex.user", "control characters"},
    {"{\"providers\":{\"cortex\":{\"account\":null,\"user\":\"u\",\"pat\":\"t\"}}}",
     "$.providers.cortex.account", "must be a string, not null"},
    {CP("\"account\":\"b\""), "$.providers.cortex.account", "duplicate key"},
    {C("\"role\":\"r\""), "$.providers.cortex",
     "missing credentials: set exactly one of \"pat\" and \"private_key_path\""},
    {C("\"pat\":\"t\",\"private_key_path\":\"/etc/passwd\""), "$.providers.cortex",
     "exactly one of \"pat\" and \"private_key_path\", not both"},
    {C("\"pat\":\"\""), "$.providers.cortex.pat", "must not be empty"},
    {C("\"pat\":\"ab cd\""), "$.providers.cortex.pat", "whitespace or control characters"},
    {C("\"pat\":\"ab\\tcd\""), "$.providers.cortex.pat", "whitespace or control characters"},
    {C("\"pat\":\"ab\\r\\nX: y\""), "$.providers.cortex.pat", "whitespace"},
    {C("\"pat\":7"), "$.providers.cortex.pat", "must be a string"},
    {C("\"private_key_path\":\"/nonexistent/sg-key.p8\""), "$.providers.cortex.private_key_path",
     "private key file /nonexistent/sg-key.p8 cannot be opened: No such file"},
    {C("\"private_key_path\":\"/tmp\""), "$.providers.cortex.private_key_path",
     "is not a regular file"},
    {C("\"private_key_path\":\"\""), "$.providers.cortex.private_key_path", "must not be empty"},
    {CP("\"private_key_passphrase\":\"x\""), "$.providers.cortex.private_key_passphrase",
     "only used with \"private_key_path\""},
    {CP("\"private_key_passphrase\":1"), "$.providers.cortex.private_key_passphrase",
     "string or null"},
    {CP("\"role\":5"), "$.providers.cortex.role", "must be a string or null, not a number"},
    {CP("\"warehouse\":\"w\\n\""), "$.providers.cortex.warehouse", "control characters"},
    {CP("\"database\":[]"), "$.providers.cortex.database", "string or null"},
    {CP("\"schema\":\"s\\u0001\""), "$.providers.cortex.schema", "control characters"},
    {CP("\"pat_warn_days\":-1"), "$.providers.cortex.pat_warn_days", "non-negative integer"},
    {CP("\"pat_warn_days\":1.5"), "$.providers.cortex.pat_warn_days", "fraction"},
    {CP("\"pat_warn_days\":\"7\""), "$.providers.cortex.pat_warn_days", "not a string"},
    {CP("\"pat_warn_days\":5000"), "$.providers.cortex.pat_warn_days", "at most 3650"},
    {CP("\"base_url\":\"ftp://h\""), "$.providers.cortex.base_url", "http:// or https://"},
    {CP("\"base_url\":\"https://\""), "$.providers.cortex.base_url", "no host"},
    {CP("\"api_key\":\"k\""), "$.providers.cortex.api_key", "cortex uses pat or private_key_path"},
    {CP("\"api_key\":null"), "$.providers.cortex.api_key", "cortex uses pat or private_key_path"},
    {CP("\"acount\":\"x\""), "$.providers.cortex.acount", "unknown key"},
    {"{\"providers\":{\"cortex\":{\"account\":\"https://x.example\",\"user\":\"u\","
     "\"pat\":\"t\"}}}",
     "$.providers.cortex.account", "account identifier"},
    {"{\"providers\":{\"cortex\":{\"account\":\"MyAcct.snowflakecomputing.com\",\"user\":"
     "\"u\",\"pat\":\"t\"}}}",
     "$.providers.cortex.account", "without .snowflakecomputing.com"},
    {"{\"providers\":{\"cortex\":{\"account\":\"a b\",\"user\":\"u\",\"pat\":\"t\"}}}",
     "$.providers.cortex.account", "letters, digits"},
    {CP("\"models\":[]"), "$.providers.cortex.models", "at least one model"},
    {CP("\"models\":[{\"id\":\"x\",\"api\":\"chat\"}]"), "$.providers.cortex.models[0].api",
     "must be \"complete\" or \"openai\""},
    {CP("\"models\":[{\"id\":\"x\",\"api\":1}]"), "$.providers.cortex.models[0].api",
     "must be a string"},
    {CP("\"kind\":\"openai\",\"base_url\":\"http://h\",\"models\":[{\"id\":\"x\"}]"),
     "$.providers.cortex.account", "only providers of kind \"cortex\""},
    /* Snowflake keys and "api" elsewhere */
    {P("\"models\":[{\"id\":\"m\"}],\"account\":\"a\""), "$.providers.p.account", "unknown key"},
    {P("\"models\":[{\"id\":\"m\"}],\"pat\":\"t\""), "$.providers.p.pat", "unknown key"},
    {P("\"models\":[{\"id\":\"m\"}],\"private_key_path\":\"/k\""), "$.providers.p.private_key_path",
     "unknown key"},
    {P("\"models\":[{\"id\":\"m\"}],\"pat_warn_days\":1"), "$.providers.p.pat_warn_days",
     "unknown key"},
    {M("{\"id\":\"x\",\"api\":\"openai\"}"), "$.providers.p.models[1].api", "unknown key"},
    {"{\"providers\":{\"lambda\":{\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"x\",\"api\":\"openai\"}]}}}",
     "$.providers.lambda.models[0].api", "unknown key (\"api\" applies only to models of kind"},
    {"{\"providers\":{\"p\":{\"kind\":\"grpc\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"m\"}]}}}",
     "$.providers.p.kind", "supported: \"openai\", \"cortex\""},
    /* ids unique across providers: a configured cortex model may not reuse another's id */
    {"{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
     "\"models\":[{\"id\":\"llama3.1-8b\"}]},"
     "\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\","
     "\"models\":[{\"id\":\"llama3.1-8b\"}]}}}",
     "$.providers.cortex.models[0].id", "duplicate model name \"llama3.1-8b\""},
};

static void test_each_validation(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const bad_case_t *bc = &bad_cases[i];
        sg_config_t cfg;
        sg_config_errors_t errs = {0};
        int rc = load_text(bc->json, &cfg, &errs);
        if (rc != -1 || !has_error(&errs, bc->path, bc->needle)) {
            fprintf(stderr, "# case %zu: %s\n# expected error at %s containing \"%s\"\n", i,
                    bc->json, bc->path, bc->needle);
            dump_errors(&errs);
            fail();
        }
        sg_config_free(&cfg);
        sg_config_errors_free(&errs);
    }
}

static void test_multiple_errors(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    int rc = load_text("{\"listen\":\"nohost\",\"log_level\":\"loud\",\"bogus\":1,\n"
                       " \"limits\":{\"max_body_bytes\":0,\"high_watermark\":10,"
                       "\"low_watermark\":10},\n"
                       " \"upstream\":{\"total_timeout_ms\":-1},\n"
                       " \"providers\":{\"x\":{\"kind\":\"grpc\",\"base_url\":\"h\","
                       "\"models\":[{\"id\":\"a\",\"price_in\":-1},{\"id\":\"a\"}]}}}",
                       &cfg, &errs);
    assert_int_equal(rc, -1);
    assert_has_error(&errs, "$.listen", "HOST:PORT");
    assert_has_error(&errs, "$.log_level", "invalid log level");
    assert_has_error(&errs, "$.bogus", "unknown key");
    assert_has_error(&errs, "$.limits.max_body_bytes", "positive");
    assert_has_error(&errs, "$.limits.low_watermark", "less than");
    assert_has_error(&errs, "$.upstream.total_timeout_ms", "positive");
    assert_has_error(&errs, "$.providers.x.kind", "unsupported");
    assert_has_error(&errs, "$.providers.x.base_url", "http://");
    assert_has_error(&errs, "$.providers.x.models[0].price_in", "non-negative");
    assert_has_error(&errs, "$.providers.x.models[1].id", "duplicate model name");
    assert_int_equal(errs.n, 10);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_malformed_json(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(
        load_text("{\n  \"listen\": \"a:1\",\n  \"log_level\" \"info\"\n}", &cfg, &errs), -1);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_has_error(&errs, "$", "invalid JSON at line 3");
    /* the loader still leaves the defaults in place */
    assert_int_equal(cfg.listen_port, 8080);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    assert_int_equal(load_text("{\"a\":1} trailing", &cfg, &errs), -1);
    assert_has_error(&errs, "$", "invalid JSON at line 1");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    assert_int_equal(load_text("  \n", &cfg, &errs), -1);
    assert_has_error(&errs, "$", "empty");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* the error never quotes the file, which may hold a key */
    assert_int_equal(
        load_text("{\"providers\":{\"p\":{\"api_key\":\"" SECRET "\",}}}", &cfg, &errs), -1);
    assert_has_error(&errs, "$", "invalid JSON");
    assert_no_secret(&errs, SECRET);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_file_missing(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    const char *path = "/tmp/sg_test_config_does_not_exist.json";
    assert_int_equal(sg_config_load(&cfg, path, &errs), -1);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_non_null(strstr(errs.items[0].message, path));
    assert_non_null(strstr(errs.items[0].message, "No such file or directory"));
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* a directory is not a readable config file either */
    assert_int_equal(sg_config_load(&cfg, "/tmp", &errs), -1);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_non_null(strstr(errs.items[0].message, "/tmp"));
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_trailing_slash(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok(
        "{\"providers\":{"
        "\"a\":{\"kind\":\"openai\",\"base_url\":\"http://h:1/v1/\",\"models\":[{\"id\":\"m1\"}]},"
        "\"b\":{\"kind\":\"openai\",\"base_url\":\"HTTPS://h//\",\"models\":[{\"id\":\"m2\"}]},"
        "\"c\":{\"kind\":\"openai\",\"base_url\":\"https://h\",\"models\":[{\"id\":\"m3\"}]}}}",
        &cfg);
    assert_string_equal(BASE(sg_config_provider(&cfg, "a")), "http://h:1/v1");
    assert_string_equal(BASE(sg_config_provider(&cfg, "b")), "HTTPS://h");
    assert_string_equal(BASE(sg_config_provider(&cfg, "c")), "https://h");
    sg_config_free(&cfg);
}

static void test_builtin_catalog(void **state)
{
    (void)state;
    setenv("LAMBDA_API_KEY", SECRET, 1);
    sg_config_t cfg;
    load_ok("{\"providers\":{\"lambda\":{\"base_url\":\"http://127.0.0.1:9000/v1\"}}}", &cfg);
    const sg_provider_cfg_t *l = sg_config_provider(&cfg, "lambda");
    assert_non_null(l);
    assert_string_equal(l->kind, "openai");
    assert_string_equal(OA(l)->api_key, SECRET); /* api_key absent: taken from LAMBDA_API_KEY */
    assert_int_equal(l->n_models, 0);            /* served models are discovered */
    assert_true(l->discover);
    sg_config_free(&cfg);

    /* the built-in table gives prices, tiers and aliases to the ids it knows */
    load_ok("{\"providers\":{\"lambda\":{\"base_url\":\"http://127.0.0.1:9000/v1\","
            "\"models\":[{\"id\":\"llama3.1-8b-instruct\"},{\"id\":\"hermes3-8b\"},"
            "{\"id\":\"llama3.1-70b-instruct-fp8\"},{\"id\":\"llama3.3-70b-instruct-fp8\"},"
            "{\"id\":\"hermes3-70b\"},{\"id\":\"llama3.1-405b-instruct-fp8\"},"
            "{\"id\":\"hermes3-405b\"},{\"id\":\"llama-4-maverick-17b-128e-instruct-fp8\"},"
            "{\"id\":\"llama-4-scout-17b-16e-instruct\"},{\"id\":\"deepseek-r1-0528\"},"
            "{\"id\":\"deepseek-v3-0324\"},{\"id\":\"qwen25-coder-32b-instruct\"},"
            "{\"id\":\"qwen3-32b-fp8\"},{\"id\":\"lfm-40b\"}]}}}",
            &cfg);
    l = sg_config_provider(&cfg, "lambda");
    assert_false(l->discover); /* models given: only those unless "discover": true */
    assert_int_equal(find_model(l, "llama3.1-8b-instruct")->tier, SG_TIER_SMALL);
    assert_int_equal(find_model(l, "hermes3-405b")->tier, SG_TIER_LARGE);
    assert_int_equal(find_model(l, "hermes3-70b")->tier, SG_TIER_MEDIUM);
    static const struct {
        const char *id;
        double in, out;
    } want[] = {
        {"llama3.1-8b-instruct", 0.025, 0.04},
        {"hermes3-8b", 0.025, 0.04},
        {"llama3.1-70b-instruct-fp8", 0.12, 0.30},
        {"llama3.3-70b-instruct-fp8", 0.12, 0.30},
        {"hermes3-70b", 0.12, 0.30},
        {"llama3.1-405b-instruct-fp8", 0.80, 0.80},
        {"hermes3-405b", 0.80, 0.80},
        {"llama-4-maverick-17b-128e-instruct-fp8", 0.18, 0.60},
        {"llama-4-scout-17b-16e-instruct", 0.08, 0.30},
        {"deepseek-r1-0528", 0.54, 2.19},
        {"deepseek-v3-0324", 0.34, 0.88},
        {"qwen25-coder-32b-instruct", 0.07, 0.16},
        {"qwen3-32b-fp8", 0.10, 0.30},
        {"lfm-40b", 0.10, 0.20},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const sg_model_cfg_t *m = find_model(l, want[i].id);
        assert_non_null(m);
        assert_string_equal(m->upstream_id, want[i].id);
        assert_true(m->price_in_per_mtok == want[i].in);
        assert_true(m->price_out_per_mtok == want[i].out);
    }
    sg_config_free(&cfg);

    /* explicit null api_key: no key even with LAMBDA_API_KEY set */
    load_ok("{\"providers\":{\"lambda\":{\"base_url\":\"http://h\",\"api_key\":null}}}", &cfg);
    assert_null(OA(sg_config_provider(&cfg, "lambda"))->api_key);
    sg_config_free(&cfg);

    /* "discover": false needs models; "pinned" needs models */
    sg_config_errors_t errs = {0};
    assert_int_equal(load_text("{\"providers\":{\"lambda\":{\"base_url\":\"http://h/v1\","
                               "\"discover\":false}}}",
                               &cfg, &errs),
                     -1);
    assert_has_error(&errs, "$.providers.lambda", "missing required key \"models\"");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    assert_int_equal(load_text("{\"providers\":{\"lambda\":{\"base_url\":\"http://h/v1\","
                               "\"pinned\":true}}}",
                               &cfg, &errs),
                     -1);
    assert_has_error(&errs, "$.providers.lambda.pinned", "needs \"models\"");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* base_url absent in the file: LAMBDA_BASE_URL fills it */
    setenv("LAMBDA_BASE_URL", "https://env.example.com/v1/", 1);
    load_ok("{\"providers\":{\"lambda\":{\"models\":[{\"id\":\"hermes3-70b\"}]}}}", &cfg);
    l = sg_config_provider(&cfg, "lambda");
    assert_int_equal(cfg.n_providers, 1);
    assert_string_equal(BASE(l), "https://env.example.com/v1");
    assert_int_equal(l->n_models, 1);
    assert_true(l->models[0].price_in_per_mtok == 0.12);
    sg_config_free(&cfg);
}

static void test_listen_forms(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok("{\"listen\":\"[::]:0\"}", &cfg);
    assert_string_equal(cfg.listen_host, "::");
    assert_int_equal(cfg.listen_port, 0);
    sg_config_free(&cfg);
    load_ok("{\"listen\":\"localhost:65535\"}", &cfg);
    assert_string_equal(cfg.listen_host, "localhost");
    assert_int_equal(cfg.listen_port, 65535);
    sg_config_free(&cfg);
}

static void test_failed_load_is_freeable(void **state)
{
    (void)state;
    /* Partially built providers/models must be freed without leaks (LeakSanitizer). */
    setenv("LAMBDA_API_KEY", SECRET, 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(
        load_text(
            "{\"cors\":{\"allowed_origins\":[\"*\",\"bad\"]},"
            "\"providers\":{\"lambda\":{\"base_url\":\"http://h\",\"models\":["
            "{\"id\":\"a\",\"aliases\":[\"b\",\"c\",\"\",3]},{\"id\":\"a\",\"price_in\":\"x\"},"
            "{\"upstream_id\":\"u\"},7]},"
            "\"q\":{\"kind\":\"k\",\"base_url\":\"http://q\",\"api_key\":\"k\","
            "\"models\":[{\"id\":\"q\"}]}}}",
            &cfg, &errs),
        -1);
    assert_true(errs.n >= 5);
    assert_int_equal(cfg.n_cors_origins, 1);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    sg_config_errors_free(&errs);
}

/* ---- Snowflake Cortex ------------------------------------------------------------------ */

#define PAT_SECRET "pat-S3CRET-abc.def.ghi"
#define PASS_SECRET "pass-S3CRET-phrase"

/* Creates a dummy (unparsed) private key file; returns its path in a static buffer. */
static const char *write_key_file(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/sg_test_key_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char pem[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_int_equal(write(fd, pem, sizeof(pem) - 1), (ssize_t)(sizeof(pem) - 1));
    close(fd);
    return path;
}

static const char *const cortex_names[] = {
    "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-7-sonnet",       "claude-3-5-sonnet",
    "openai-gpt-4.1",    "openai-gpt-5",     "openai-gpt-5-mini",       "llama4-maverick",
    "llama3.1-8b",       "llama3.1-70b",     "llama3.1-405b",           "deepseek-r1",
    "mistral-7b",        "mistral-large2",   "snowflake-llama-3.3-70b",
};

static void test_cortex_full_file(void **state)
{
    (void)state;
    setenv("SNOWFLAKE_ACCOUNT", "MyOrg-My_Acct", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET, 1);
    sg_config_t cfg;
    load_ok("{\"providers\":{\"cortex\":{\n"
            "  \"kind\":\"cortex\", \"account\":\"${SNOWFLAKE_ACCOUNT}\", \"user\":\"SVC_GW\",\n"
            "  \"role\":\"CORTEX_ROLE\", \"warehouse\":\"WH\", \"database\":\"DB\",\n"
            "  \"schema\":\"PUBLIC\", \"pat\":\"${SNOWFLAKE_PAT}\", \"pat_warn_days\":14,\n"
            "  \"models\":[{\"id\":\"llama3.1-70b\",\"aliases\":[\"big\"]},\n"
            "             {\"id\":\"sonnet\",\"upstream_id\":\"claude-sonnet-4-5\",\n"
            "              \"price_in\":3,\"price_out\":15,\"api\":\"openai\"},\n"
            "             {\"id\":\"m7\",\"upstream_id\":\"mistral-7b\",\"api\":\"complete\"},\n"
            "             {\"id\":\"custom-ft\"}]}}}",
            &cfg);
    assert_int_equal(cfg.n_providers, 1);
    const sg_provider_cfg_t *p = sg_config_provider(&cfg, "cortex");
    assert_non_null(p);
    assert_string_equal(p->kind, "cortex");
    assert_string_equal(CX(p)->account, "MyOrg-My_Acct");
    assert_string_equal(CX(p)->user, "SVC_GW");
    assert_string_equal(CX(p)->role, "CORTEX_ROLE");
    assert_string_equal(CX(p)->warehouse, "WH");
    assert_string_equal(CX(p)->database, "DB");
    assert_string_equal(CX(p)->schema, "PUBLIC");
    assert_string_equal(CX(p)->pat, PAT_SECRET);
    assert_null(CX(p)->private_key_path);
    assert_null(CX(p)->private_key_passphrase);
    assert_int_equal(CX(p)->pat_warn_days, 14);
    assert_string_equal(BASE(p), "https://myorg-my-acct.snowflakecomputing.com");
    assert_int_equal(p->n_models, 4);
    /* "api" defaults to "complete"; a missing price comes from the built-in Cortex catalog */
    assert_string_equal(p->models[0].upstream_id, "llama3.1-70b");
    assert_string_equal(p->models[0].api, "complete");
    assert_true(p->models[0].price_in_per_mtok == 2.42);
    assert_true(p->models[0].price_out_per_mtok == 2.42);
    assert_true(model_has_alias(&p->models[0], "big"));
    assert_string_equal(p->models[1].api, "openai");
    assert_true(p->models[1].price_in_per_mtok == 3);
    assert_true(p->models[1].price_out_per_mtok == 15);
    assert_string_equal(p->models[2].api, "complete");
    assert_true(p->models[2].price_in_per_mtok == 0.24); /* 0.12 credits x $2 */
    assert_true(p->models[3].price_in_per_mtok == 0);
    assert_string_equal(p->models[3].api, "complete");
    sg_config_free(&cfg);

    /* key pair, optional keys as null, a non-"cortex" name (no environment fallback) */
    const char *key = write_key_file();
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"providers\":{\"snow\":{\"kind\":\"cortex\",\"account\":\"xy12345.us-east-1\","
             "\"user\":\"u\",\"private_key_path\":\"%s\","
             "\"private_key_passphrase\":\"" PASS_SECRET "\",\"role\":null,\"warehouse\":\"\","
             "\"models\":[{\"id\":\"mistral-large2\"}]}}}",
             key);
    load_ok(text, &cfg);
    p = sg_config_provider(&cfg, "snow");
    assert_non_null(p);
    assert_string_equal(p->kind, "cortex");
    assert_string_equal(CX(p)->private_key_path, key);
    assert_string_equal(CX(p)->private_key_passphrase, PASS_SECRET);
    assert_null(CX(p)->pat);
    assert_null(CX(p)->role);
    assert_null(CX(p)->warehouse); /* empty = unset */
    assert_int_equal(CX(p)->pat_warn_days, 7);
    assert_string_equal(BASE(p), "https://xy12345.us-east-1.snowflakecomputing.com");
    assert_true(p->models[0].price_out_per_mtok == 3.90);
    /* SNOWFLAKE_ACCOUNT is set, but a cortex provider exists: none is created */
    assert_int_equal(cfg.n_providers, 1);
    assert_null(sg_config_provider(&cfg, "cortex"));
    sg_config_free(&cfg);
    unlink(key);
}

static void test_cortex_env_only(void **state)
{
    (void)state;
    setenv("SNOWFLAKE_ACCOUNT", "myorg-acct", 1);
    setenv("SNOWFLAKE_USER", "svc", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET, 1);
    setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", PASS_SECRET, 1); /* ignored with a PAT */
    setenv("SNOWFLAKE_ROLE", "R", 1);
    setenv("SNOWFLAKE_WAREHOUSE", "W", 1);
    setenv("SNOWFLAKE_DATABASE", "D", 1);
    setenv("SNOWFLAKE_SCHEMA", "S", 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    assert_int_equal(errs.n, 0);
    assert_int_equal(cfg.n_providers, 1);
    const sg_provider_cfg_t *p = sg_config_provider(&cfg, "cortex");
    assert_non_null(p);
    assert_string_equal(p->kind, "cortex");
    assert_string_equal(CX(p)->account, "myorg-acct");
    assert_string_equal(CX(p)->user, "svc");
    assert_string_equal(CX(p)->pat, PAT_SECRET);
    assert_null(CX(p)->private_key_path);
    assert_null(CX(p)->private_key_passphrase);
    assert_string_equal(CX(p)->role, "R");
    assert_string_equal(CX(p)->warehouse, "W");
    assert_string_equal(CX(p)->database, "D");
    assert_string_equal(CX(p)->schema, "S");
    assert_int_equal(CX(p)->pat_warn_days, 7);
    assert_string_equal(BASE(p), "https://myorg-acct.snowflakecomputing.com");
    assert_int_equal(p->n_models, 21); /* 15 chat + 6 embedding models */
    sg_config_free(&cfg);

    /* key pair from the environment, the base URL pointed at a mock */
    const char *key = write_key_file();
    unsetenv("SNOWFLAKE_PAT");
    setenv("SNOWFLAKE_PRIVATE_KEY_PATH", key, 1);
    setenv("SNOWFLAKE_BASE_URL", "http://127.0.0.1:18080/", 1);
    unsetenv("SNOWFLAKE_ROLE");
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0);
    p = sg_config_provider(&cfg, "cortex");
    assert_non_null(p);
    assert_null(CX(p)->pat);
    assert_string_equal(CX(p)->private_key_path, key);
    assert_string_equal(CX(p)->private_key_passphrase, PASS_SECRET);
    assert_null(CX(p)->role);
    assert_string_equal(BASE(p), "http://127.0.0.1:18080");
    sg_config_free(&cfg);

    /* the environment fills what the file's "cortex" provider leaves out, and only that */
    setenv("SNOWFLAKE_PAT", "unused-because-the-file-has-a-key", 1);
    load_ok("{\"providers\":{\"cortex\":{\"user\":\"file-user\",\"role\":null,"
            "\"private_key_path\":\"${SNOWFLAKE_PRIVATE_KEY_PATH}\","
            "\"models\":[{\"id\":\"llama3.1-8b\"}]}}}",
            &cfg);
    assert_int_equal(cfg.n_providers, 1);
    p = sg_config_provider(&cfg, "cortex");
    assert_string_equal(p->kind, "cortex");
    assert_string_equal(CX(p)->account, "myorg-acct");
    assert_string_equal(CX(p)->user, "file-user");
    assert_null(CX(p)->role); /* explicit null: not taken from SNOWFLAKE_ROLE (unset anyway) */
    assert_string_equal(CX(p)->warehouse, "W");
    assert_null(CX(p)->pat);
    assert_string_equal(CX(p)->private_key_path, key);
    assert_string_equal(CX(p)->private_key_passphrase, PASS_SECRET);
    assert_string_equal(BASE(p), "http://127.0.0.1:18080");
    sg_config_free(&cfg);

    /* without SNOWFLAKE_ACCOUNT no provider is created, and the other SNOWFLAKE_* settings
     * are an error that names the missing variable (they cannot work alone) */
    unsetenv("SNOWFLAKE_ACCOUNT");
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_int_equal(cfg.n_providers, 0);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0].path, "env:SNOWFLAKE_ACCOUNT");
    assert_non_null(strstr(errs.items[0].message, "set SNOWFLAKE_ACCOUNT"));
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    setenv("SNOWFLAKE_ACCOUNT", "", 1); /* empty = unset */
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_int_equal(cfg.n_providers, 0);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    unsetenv("SNOWFLAKE_USER");
    unsetenv("SNOWFLAKE_PAT");
    unsetenv("SNOWFLAKE_PRIVATE_KEY_PATH");
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), 0); /* nothing Snowflake: fine */
    assert_int_equal(cfg.n_providers, 0);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    unlink(key);
}

static void test_cortex_env_errors(void **state)
{
    (void)state;
    sg_config_t cfg;
    sg_config_errors_t errs = {0};

    /* account alone: user and credentials missing */
    setenv("SNOWFLAKE_ACCOUNT", "acct", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_has_error(&errs, "env:SNOWFLAKE_USER", "SNOWFLAKE_USER is not set");
    assert_has_error(&errs, "env:SNOWFLAKE_PAT", "neither SNOWFLAKE_PAT nor");
    assert_int_equal(errs.n, 2);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* both credentials */
    setenv("SNOWFLAKE_USER", "u", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET, 1);
    setenv("SNOWFLAKE_PRIVATE_KEY_PATH", "/etc/passwd", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_has_error(&errs, "env:SNOWFLAKE_PRIVATE_KEY_PATH",
                     "set only one of SNOWFLAKE_PAT and SNOWFLAKE_PRIVATE_KEY_PATH");
    assert_int_equal(errs.n, 1);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* invalid values: reported at env:NAME, never echoed */
    setenv("SNOWFLAKE_ACCOUNT", "https://" SECRET, 1);
    setenv("SNOWFLAKE_USER", SECRET "\n", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET " x", 1);
    unsetenv("SNOWFLAKE_PRIVATE_KEY_PATH");
    setenv("SNOWFLAKE_BASE_URL", "ftp://" SECRET, 1);
    setenv("SNOWFLAKE_ROLE", SECRET "\r", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_has_error(&errs, "env:SNOWFLAKE_ACCOUNT", "account identifier");
    assert_has_error(&errs, "env:SNOWFLAKE_USER", "control characters");
    assert_has_error(&errs, "env:SNOWFLAKE_PAT", "whitespace or control characters");
    assert_has_error(&errs, "env:SNOWFLAKE_BASE_URL", "http:// or https://");
    assert_has_error(&errs, "env:SNOWFLAKE_ROLE", "control characters");
    assert_int_equal(errs.n, 5);
    assert_no_secret(&errs, SECRET);
    assert_no_secret(&errs, PAT_SECRET);
    assert_no_secret(&errs, "S3CRET");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* a missing key file: the environment's path is not echoed */
    setenv("SNOWFLAKE_ACCOUNT", "acct", 1);
    setenv("SNOWFLAKE_USER", "u", 1);
    unsetenv("SNOWFLAKE_PAT");
    unsetenv("SNOWFLAKE_BASE_URL");
    unsetenv("SNOWFLAKE_ROLE");
    setenv("SNOWFLAKE_PRIVATE_KEY_PATH", "/nonexistent/" SECRET ".p8", 1);
    setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", PASS_SECRET, 1);
    assert_int_equal(sg_config_load(&cfg, NULL, &errs), -1);
    assert_has_error(&errs, "env:SNOWFLAKE_PRIVATE_KEY_PATH", "cannot be opened");
    assert_int_equal(errs.n, 1);
    assert_no_secret(&errs, SECRET);
    assert_no_secret(&errs, PASS_SECRET);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* a file's "cortex" provider: missing keys mention the variables, bad ones are env: */
    unsetenv("SNOWFLAKE_ACCOUNT");
    setenv("SNOWFLAKE_USER", "bad\x01user", 1);
    unsetenv("SNOWFLAKE_PRIVATE_KEY_PATH");
    assert_int_equal(load_text("{\"providers\":{\"cortex\":{}}}", &cfg, &errs), -1);
    assert_has_error(&errs, "$.providers.cortex", "missing required key \"account\" (or set");
    assert_has_error(&errs, "$.providers.cortex",
                     "(or SNOWFLAKE_PAT / SNOWFLAKE_PRIVATE_KEY_PATH)");
    assert_has_error(&errs, "env:SNOWFLAKE_USER", "control characters");
    assert_int_equal(errs.n, 3);
    assert_int_equal(cfg.n_providers, 1); /* no second "cortex" from the environment */
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_cortex_secrets_never_in_errors(void **state)
{
    (void)state;
    setenv("SG_TEST_SECRET", SECRET " with space", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET "\n", 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    int rc = load_text(
        "{\"providers\":{\n"
        " \"cortex\":{\"account\":\"${SG_TEST_SECRET}\",\"user\":\"u\",\n"
        "   \"pat\":\"${SG_TEST_SECRET}\",\"private_key_passphrase\":\"" PASS_SECRET "\",\n"
        "   \"api_key\":\"" SECRET "\",\"base_url\":\"${SG_TEST_SECRET}\",\n"
        "   \"models\":[{\"id\":\"a\",\"api\":\"${SG_TEST_SECRET}\"}]},\n"
        " \"sf\":{\"kind\":\"cortex\",\"account\":\"a\",\"user\":\"u\",\n"
        "   \"private_key_path\":\"/nonexistent/${SG_TEST_SECRET}\"},\n"
        " \"sf2\":{\"kind\":\"cortex\",\"account\":\"a\",\"user\":\"u\",\"pat\":\"" PAT_SECRET
        " \"}}}",
        &cfg, &errs);
    assert_int_equal(rc, -1);
    assert_has_error(&errs, "$.providers.cortex.account", "account identifier");
    assert_has_error(&errs, "$.providers.cortex.pat", "whitespace");
    assert_has_error(&errs, "$.providers.cortex.private_key_passphrase", "only used with");
    assert_has_error(&errs, "$.providers.cortex.api_key", "cortex uses pat or private_key_path");
    assert_has_error(&errs, "$.providers.cortex.base_url", "http:// or https://");
    assert_has_error(&errs, "$.providers.cortex.models[0].api", "\"complete\" or \"openai\"");
    assert_has_error(&errs, "$.providers.sf.private_key_path", "private key file cannot be opened");
    assert_has_error(&errs, "$.providers.sf2.pat", "whitespace");
    assert_no_secret(&errs, SECRET);
    assert_no_secret(&errs, PAT_SECRET);
    assert_no_secret(&errs, PASS_SECRET);
    assert_no_secret(&errs, "S3CRET");
    assert_no_secret(&errs, "s3cr3t");
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_cortex_base_url(void **state)
{
    (void)state;
    static const struct {
        const char *account, *url;
    } cases[] = {
        {"MyOrg-My_Acct", "https://myorg-my-acct.snowflakecomputing.com"},
        {"myorg-myacct", "https://myorg-myacct.snowflakecomputing.com"},
        {"XY12345", "https://xy12345.snowflakecomputing.com"},
        {"xy12345.us-east-2.aws", "https://xy12345.us-east-2.aws.snowflakecomputing.com"},
        {"MYORG.MY_ACCT", "https://myorg.my-acct.snowflakecomputing.com"},
    };
    sg_config_t cfg;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "{\"providers\":{\"cortex\":{\"account\":\"%s\",\"user\":\"u\",\"pat\":\"t\"}}}",
                 cases[i].account);
        load_ok(text, &cfg);
        const sg_provider_cfg_t *p = sg_config_provider(&cfg, "cortex");
        assert_string_equal(BASE(p), cases[i].url);
        assert_string_equal(CX(p)->account, cases[i].account); /* kept as given */
        sg_config_free(&cfg);
    }

    /* an explicit override loses its trailing '/' */
    load_ok("{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\","
            "\"base_url\":\"https://proxy.example.com/snow//\"}}}",
            &cfg);
    assert_string_equal(BASE(sg_config_provider(&cfg, "cortex")), "https://proxy.example.com/snow");
    sg_config_free(&cfg);

    /* SNOWFLAKE_BASE_URL replaces the derived default (e.g. a local mock) ... */
    setenv("SNOWFLAKE_BASE_URL", "http://127.0.0.1:9999", 1);
    load_ok("{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\"}}}", &cfg);
    assert_string_equal(BASE(sg_config_provider(&cfg, "cortex")), "http://127.0.0.1:9999");
    sg_config_free(&cfg);
    /* ... but not a base_url the file sets, nor one of a provider with another name */
    load_ok("{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\","
            "\"base_url\":\"https://file.example.com\"},"
            "\"sf\":{\"kind\":\"cortex\",\"account\":\"b\",\"user\":\"u\",\"pat\":\"t\","
            "\"models\":[{\"id\":\"x\"}]}}}",
            &cfg);
    assert_string_equal(BASE(sg_config_provider(&cfg, "cortex")), "https://file.example.com");
    assert_string_equal(BASE(sg_config_provider(&cfg, "sf")), "https://b.snowflakecomputing.com");
    sg_config_free(&cfg);
}

static void test_cortex_catalog(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok("{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\"}}}", &cfg);
    const sg_provider_cfg_t *p = sg_config_provider(&cfg, "cortex");
    assert_int_equal(p->n_models, 21); /* 15 chat + 6 embedding models */
    for (size_t i = 0; i < sizeof(cortex_names) / sizeof(cortex_names[0]); i++) {
        const sg_model_cfg_t *m = find_model(p, cortex_names[i]);
        if (!m) fprintf(stderr, "# missing %s\n", cortex_names[i]);
        assert_non_null(m);
        assert_string_equal(m->upstream_id, cortex_names[i]);
        assert_string_equal(m->api, "complete");
        assert_true(m->price_in_per_mtok > 0);
        assert_true(m->price_out_per_mtok >= m->price_in_per_mtok);
    }
    /* The embedding models: input priced, no output, never a chat route. */
    static const char *const embed_names[] = {"snowflake-arctic-embed-m-v1.5",
                                              "snowflake-arctic-embed-l-v2.0",
                                              "e5-base-v2",
                                              "nv-embed-qa-4",
                                              "multilingual-e5-large",
                                              "voyage-multilingual-2"};
    for (size_t i = 0; i < sizeof(embed_names) / sizeof(embed_names[0]); i++) {
        const sg_model_cfg_t *m = find_model(p, embed_names[i]);
        assert_non_null(m);
        assert_true(m->caps & SG_CAP_EMBED);
        assert_true(m->price_in_per_mtok > 0);
        assert_true(m->price_out_per_mtok == 0);
    }
    /* credits per 1M tokens x $2.00 */
    static const struct {
        const char *id;
        double usd;
    } priced[] = {
        {"llama3.1-8b", 0.38},    {"llama3.1-70b", 2.42}, {"llama3.1-405b", 6.00},
        {"mistral-large2", 3.90}, {"mistral-7b", 0.24},   {"claude-3-5-sonnet", 5.10},
    };
    for (size_t i = 0; i < sizeof(priced) / sizeof(priced[0]); i++) {
        const sg_model_cfg_t *m = find_model(p, priced[i].id);
        assert_true(m->price_in_per_mtok == priced[i].usd);
        assert_true(m->price_out_per_mtok == priced[i].usd);
    }
    assert_true(model_has_alias(find_model(p, "llama3.1-8b"), "cortex-fast"));
    assert_true(model_has_alias(find_model(p, "claude-sonnet-4-5"), "cortex-smart"));
    sg_config_free(&cfg);

    /* ids and aliases configured elsewhere win silently over the built-in ones */
    load_ok(
        "{\"providers\":{\"cortex\":{\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\"},"
        "\"other\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
        "\"models\":[{\"id\":\"llama3.1-8b\"},{\"id\":\"x\",\"aliases\":[\"cortex-smart\"]}]}}}",
        &cfg);
    p = sg_config_provider(&cfg, "cortex");
    assert_int_equal(p->n_models, 20);
    assert_null(find_model(p, "llama3.1-8b"));
    assert_false(model_has_alias(find_model(p, "claude-sonnet-4-5"), "cortex-smart"));
    assert_non_null(find_model(sg_config_provider(&cfg, "other"), "llama3.1-8b"));
    sg_config_free(&cfg);

    /* the same for the catalog of an environment-made provider */
    setenv("SNOWFLAKE_ACCOUNT", "a", 1);
    setenv("SNOWFLAKE_USER", "u", 1);
    setenv("SNOWFLAKE_PAT", "t", 1);
    load_ok("{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
            "\"models\":[{\"id\":\"mistral-7b\",\"aliases\":[\"cortex-fast\"]}]}}}",
            &cfg);
    assert_int_equal(cfg.n_providers, 2);
    p = sg_config_provider(&cfg, "cortex");
    assert_int_equal(p->n_models, 20);
    assert_null(find_model(p, "mistral-7b"));
    assert_false(model_has_alias(find_model(p, "llama3.1-8b"), "cortex-fast"));
    sg_config_free(&cfg);
}

static void test_lambda_and_cortex_together(void **state)
{
    (void)state;
    /* both from the environment: lambda discovers, cortex has its 21 built-in models */
    setenv("LAMBDA_BASE_URL", "http://127.0.0.1:9000/v1", 1);
    setenv("LAMBDA_API_KEY", SECRET, 1);
    setenv("SNOWFLAKE_ACCOUNT", "acct", 1);
    setenv("SNOWFLAKE_USER", "u", 1);
    setenv("SNOWFLAKE_PAT", PAT_SECRET, 1);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    int rc = sg_config_load(&cfg, NULL, &errs);
    if (rc != 0) dump_errors(&errs);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.n_providers, 2);
    const sg_provider_cfg_t *l = sg_config_provider(&cfg, "lambda");
    const sg_provider_cfg_t *x = sg_config_provider(&cfg, "cortex");
    assert_non_null(l);
    assert_non_null(x);
    assert_int_equal(l->n_models, 0);
    assert_true(l->discover);
    assert_int_equal(x->n_models, 21);
    assert_false(x->discover);
    assert_true(model_has_alias(find_model(x, "llama3.1-8b"), "cortex-fast"));
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);

    /* both in the file; "api" accepted on the cortex model */
    load_ok("{\"providers\":{\n"
            " \"lambda\":{\"models\":[{\"id\":\"llama3.1-8b-instruct\"}]},\n"
            " \"cortex\":{\"models\":[{\"id\":\"llama3.1-8b\",\"api\":\"openai\"}]}}}",
            &cfg);
    assert_int_equal(cfg.n_providers, 2);
    l = sg_config_provider(&cfg, "lambda");
    x = sg_config_provider(&cfg, "cortex");
    assert_string_equal(l->kind, "openai");
    assert_string_equal(BASE(l), "http://127.0.0.1:9000/v1");
    assert_true(l->models[0].price_in_per_mtok == 0.025);
    assert_null(l->models[0].api);
    assert_string_equal(x->kind, "cortex");
    assert_string_equal(CX(x)->pat, PAT_SECRET);
    assert_string_equal(x->models[0].api, "openai");
    assert_true(x->models[0].price_in_per_mtok == 0.38);
    sg_config_free(&cfg);

    /* "api" rejected on a lambda model */
    assert_int_equal(load_text("{\"providers\":{\"lambda\":{\"models\":[{\"id\":\"hermes3-8b\","
                               "\"api\":\"openai\"}]}}}",
                               &cfg, &errs),
                     -1);
    assert_has_error(&errs, "$.providers.lambda.models[0].api", "unknown key");
    assert_int_equal(errs.n, 1);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
}

static void test_cortex_failed_load_is_freeable(void **state)
{
    (void)state;
    const char *key = write_key_file();
    setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", PASS_SECRET, 1);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"providers\":{"
             "\"cortex\":{\"account\":\"a b\",\"user\":\"u\",\"role\":\"r\",\"warehouse\":\"w\","
             "\"database\":\"d\",\"schema\":\"s\",\"pat\":\"t\",\"private_key_path\":\"%s\","
             "\"base_url\":\"http://x/\",\"models\":[{\"id\":\"m\",\"api\":\"openai\"},"
             "{\"id\":\"m\",\"api\":\"bad\"},3]},"
             "\"sf\":{\"kind\":\"cortex\",\"account\":\"a\",\"user\":\"u\",\"pat\":\"t\","
             "\"private_key_passphrase\":\"p\",\"pat_warn_days\":-3}}}",
             key);
    sg_config_t cfg;
    sg_config_errors_t errs = {0};
    assert_int_equal(load_text(text, &cfg, &errs), -1);
    assert_true(errs.n >= 5);
    sg_config_free(&cfg);
    sg_config_errors_free(&errs);
    unlink(key);
}

/* ${file:PATH} reads a secret file (trailing white space dropped); a missing file is an error
 * that names the path but never a secret; retries are configurable. */
static void test_file_secrets_and_retries(void **state)
{
    (void)state;
    char secret_path[64];
    snprintf(secret_path, sizeof(secret_path), "%s", write_tmp("file-secret-VALUE-42\n\n"));
    char text[512];
    snprintf(text, sizeof(text),
             "{\"upstream\":{\"max_retries\":0,\"retry_base_ms\":10},"
             "\"providers\":{\"lambda\":{\"base_url\":\"http://127.0.0.1:1/v1\","
             "\"api_key\":\"${file:%s}\"}}}",
             secret_path);
    sg_config_t cfg;
    load_ok(text, &cfg);
    assert_int_equal(cfg.max_retries, 0);
    assert_int_equal(cfg.retry_base_ms, 10);
    assert_string_equal(OA(&cfg.providers[0])->api_key, "file-secret-VALUE-42");
    sg_config_free(&cfg);
    unlink(secret_path);

    sg_config_errors_t errs = {0};
    snprintf(text, sizeof(text),
             "{\"upstream\":{\"retry_base_ms\":0},\"providers\":{\"lambda\":{"
             "\"base_url\":\"http://127.0.0.1:1/v1\",\"api_key\":\"${file:%s}\"}}}",
             secret_path);
    assert_int_equal(load_text(text, &cfg, &errs), -1);
    assert_has_error(&errs, "$.providers.lambda.api_key", "cannot read secret file");
    assert_has_error(&errs, "$.upstream.retry_base_ms", "");
    assert_no_secret(&errs, "file-secret-VALUE-42");
    sg_config_errors_free(&errs);
    sg_config_free(&cfg);

    /* defaults */
    load_ok("{}", &cfg);
    assert_int_equal(cfg.max_retries, 2);
    assert_int_equal(cfg.retry_base_ms, 250);
    sg_config_free(&cfg);
}

/* "ledger": on by default, null turns it off, an object sets its fields; mistakes are named by
 * their path. */
static void test_ledger_section(void **state)
{
    (void)state;
    sg_config_t cfg;
    load_ok("{}", &cfg);
    assert_int_equal(cfg.ledger.enabled, 1);
    assert_string_equal(cfg.ledger.path, "sophia.db");
    assert_int_equal(cfg.ledger.flush_ms, 200);
    assert_int_equal(cfg.ledger.queue_max, 65536);
    assert_int_equal(cfg.ledger.retention_days, 90);
    sg_config_free(&cfg);

    load_ok("{\"ledger\": null}", &cfg);
    assert_int_equal(cfg.ledger.enabled, 0);
    sg_config_free(&cfg);

    setenv("SG_TEST_HOST", "/var/lib/sophia", 1);
    load_ok("{\"ledger\": {\"path\": \"${SG_TEST_HOST}/usage.db\", \"flush_ms\": 50,"
            " \"queue_max\": 1000, \"retention_days\": 0}}",
            &cfg);
    assert_int_equal(cfg.ledger.enabled, 1);
    assert_string_equal(cfg.ledger.path, "/var/lib/sophia/usage.db");
    assert_int_equal(cfg.ledger.flush_ms, 50);
    assert_int_equal(cfg.ledger.queue_max, 1000);
    assert_int_equal(cfg.ledger.retention_days, 0);
    sg_config_free(&cfg);

    load_ok("{\"ledger\": {}}", &cfg);
    assert_int_equal(cfg.ledger.enabled, 1);
    assert_string_equal(cfg.ledger.path, "sophia.db");
    sg_config_free(&cfg);

    static const struct {
        const char *json, *path, *needle;
    } bad[] = {
        {"{\"ledger\": false}", "$.ledger", "must be an object or null"},
        {"{\"ledger\": \"x.db\"}", "$.ledger", "must be an object or null"},
        {"{\"ledger\": {\"pth\": \"x.db\"}}", "$.ledger.pth", "unknown key"},
        {"{\"ledger\": {\"path\": \"\"}}", "$.ledger.path", "must not be empty"},
        {"{\"ledger\": {\"path\": 5}}", "$.ledger.path", "string"},
        {"{\"ledger\": {\"flush_ms\": 0}}", "$.ledger.flush_ms", ""},
        {"{\"ledger\": {\"flush_ms\": 600000}}", "$.ledger.flush_ms", "at most 60000"},
        {"{\"ledger\": {\"queue_max\": -1}}", "$.ledger.queue_max", ""},
        {"{\"ledger\": {\"queue_max\": 0}}", "$.ledger.queue_max", ""},
        {"{\"ledger\": {\"retention_days\": \"90\"}}", "$.ledger.retention_days", ""},
        {"{\"ledger\": {\"retention_days\": 1.5}}", "$.ledger.retention_days", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sg_config_errors_t errs = {0};
        int rc = load_text(bad[i].json, &cfg, &errs);
        if (rc != -1 || !has_error(&errs, bad[i].path, bad[i].needle)) {
            fprintf(stderr, "# case %s: expected an error at %s containing \"%s\"\n", bad[i].json,
                    bad[i].path, bad[i].needle);
            dump_errors(&errs);
            fail();
        }
        sg_config_free(&cfg);
        sg_config_errors_free(&errs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_full_valid_file, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_comments_allowed, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_env_only, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_env_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_interpolation, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_interpolation_errors_hide_secrets, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_unterminated_and_bad_var, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_each_validation, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_multiple_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_malformed_json, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_file_missing, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_trailing_slash, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_builtin_catalog, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_listen_forms, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_failed_load_is_freeable, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_full_file, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_env_only, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_env_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_secrets_never_in_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_base_url, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_catalog, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_lambda_and_cortex_together, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cortex_failed_load_is_freeable, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_file_secrets_and_retries, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_ledger_section, clear_env, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
