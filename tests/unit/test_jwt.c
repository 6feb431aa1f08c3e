/* Unit tests for JWT handling (src/core/jwt.c) and Snowflake credentials
 * (src/providers/snowflake_auth.c). Keys are generated here with the openssl CLI, and every
 * signature is verified independently with it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sophia/config.h"
#include "sophia/core.h"
#include "sophia/jwt.h"
#include "sophia/log.h"
#include "sophia/provider.h"
#include "sophia/snowflake_auth.h"

#define PASS "correct-horse-battery"
#define T0 INT64_C(1700000000) /* 2023-11-14T22:13:20Z */

static char g_dir[64];

/* ---- helpers ---- */

static char *path_in(const char *name)
{
    size_t n = strlen(g_dir) + 1 + strlen(name) + 1;
    char *p = sg_xmalloc(n);
    snprintf(p, n, "%s/%s", g_dir, name);
    return p;
}

static int shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int shell(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* Runs a command and returns its stdout (trailing newlines removed). */
static char *shell_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *shell_out(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    sg_buf_t b;
    sg_buf_init(&b, 1 << 16);
    char tmp[512];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) assert_int_equal(sg_buf_append(&b, tmp, n), 0);
    pclose(f);
    size_t len;
    char *s = sg_buf_steal(&b, &len);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r')) s[--len] = '\0';
    return s;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Captures what is written to stderr (the log) between begin and end. */
static int g_saved_stderr = -1;
static char *g_capture_path;

static void capture_begin(void)
{
    fflush(stderr);
    g_capture_path = path_in("stderr.log");
    int fd = open(g_capture_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    g_saved_stderr = dup(2);
    assert_true(g_saved_stderr >= 0);
    assert_true(dup2(fd, 2) >= 0);
    close(fd);
}

static char *capture_end(void)
{
    fflush(stderr);
    assert_true(dup2(g_saved_stderr, 2) >= 0);
    close(g_saved_stderr);
    g_saved_stderr = -1;
    char *out = shell_out("cat '%s'", g_capture_path);
    unlink(g_capture_path);
    free(g_capture_path);
    g_capture_path = NULL;
    return out;
}

static char *make_jwt(const char *header_json, const char *payload_json)
{
    char *h = sg_base64url_encode((const unsigned char *)header_json, strlen(header_json));
    char *p = sg_base64url_encode((const unsigned char *)payload_json, strlen(payload_json));
    size_t n = strlen(h) + strlen(p) + 32;
    char *t = sg_xmalloc(n);
    snprintf(t, n, "%s.%s.c2lnbmF0dXJlLWJ5dGVz", h, p);
    free(h);
    free(p);
    return t;
}

static char *pat_with_exp(int64_t exp)
{
    char payload[128];
    snprintf(payload, sizeof(payload), "{\"p\":\"abc123\",\"r\":\"SYSADMIN\",\"exp\":%lld}",
             (long long)exp);
    return make_jwt("{\"kid\":\"123\",\"alg\":\"ES256\"}", payload);
}

/* Splits token into its three parts (each NUL-terminated copies). */
static void split_token(const char *token, char **h, char **p, char **s)
{
    const char *d1 = strchr(token, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    *h = sg_xstrndup(token, (size_t)(d1 - token));
    *p = sg_xstrndup(d1 + 1, (size_t)(d2 - d1 - 1));
    *s = sg_xstrdup(d2 + 1);
}

static cJSON *decode_part(const char *part)
{
    unsigned char *raw;
    size_t n;
    assert_int_equal(sg_base64url_decode(part, strlen(part), &raw, &n), 0);
    cJSON *j = cJSON_ParseWithLength((const char *)raw, n);
    free(raw);
    assert_non_null(j);
    return j;
}

/* Verifies token's RS256 signature with `openssl dgst` against pub_pem and checks its claims. */
static void verify_snowflake_jwt(const char *token, const char *pub_pem, const char *iss,
                                 const char *sub, int64_t iat, int64_t exp)
{
    char *h, *p, *s;
    split_token(token, &h, &p, &s);

    cJSON *header = decode_part(h);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(header, "alg")->valuestring, "RS256");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(header, "typ")->valuestring, "JWT");
    cJSON_Delete(header);

    cJSON *payload = decode_part(p);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(payload, "iss")->valuestring, iss);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(payload, "sub")->valuestring, sub);
    assert_true(cJSON_GetObjectItemCaseSensitive(payload, "iat")->valuedouble == (double)iat);
    assert_true(cJSON_GetObjectItemCaseSensitive(payload, "exp")->valuedouble == (double)exp);
    cJSON_Delete(payload);

    int64_t peeked = 0;
    assert_int_equal(sg_jwt_peek_exp(token, &peeked), 0);
    assert_int_equal(peeked, exp);

    char *data_path = path_in("data.txt");
    char *sig_path = path_in("sig.bin");
    size_t signing_len = strlen(h) + 1 + strlen(p);
    write_file(data_path, token, signing_len);
    unsigned char *sig;
    size_t sig_len;
    assert_int_equal(sg_base64url_decode(s, strlen(s), &sig, &sig_len), 0);
    assert_int_equal(sig_len, 256); /* 2048-bit RSA */
    write_file(sig_path, sig, sig_len);
    free(sig);
    char *out = shell_out("openssl dgst -sha256 -verify '%s' -signature '%s' '%s' 2>&1", pub_pem,
                          sig_path, data_path);
    assert_string_equal(out, "Verified OK");
    free(out);

    /* A tampered payload must fail verification (the check above is meaningful). */
    char *tampered = sg_xstrndup(token, signing_len);
    tampered[strlen(h) + 1] = tampered[strlen(h) + 1] == 'e' ? 'f' : 'e';
    write_file(data_path, tampered, signing_len);
    free(tampered);
    out = shell_out("openssl dgst -sha256 -verify '%s' -signature '%s' '%s' 2>&1", pub_pem,
                    sig_path, data_path);
    assert_null(strstr(out, "Verified OK"));
    free(out);

    unlink(data_path);
    unlink(sig_path);
    free(data_path);
    free(sig_path);
    free(h);
    free(p);
    free(s);
}

static char *openssl_fingerprint(const char *key_pem)
{
    char *b64 = shell_out("openssl pkey -in '%s' -pubout -outform DER | openssl dgst -sha256 "
                          "-binary | base64",
                          key_pem);
    size_t n = strlen(b64) + 8;
    char *fp = sg_xmalloc(n);
    snprintf(fp, n, "SHA256:%s", b64);
    free(b64);
    return fp;
}

/* ---- group setup: keys made with the openssl CLI ---- */

static int group_setup(void **state)
{
    (void)state;
    sg_log_set_level(SG_LOG_INFO);
    snprintf(g_dir, sizeof(g_dir), "/tmp/sg-test-jwt-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    const char *d = g_dir;
    int rc = 0;
    rc |= shell("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s/key.pem "
                "2>/dev/null",
                d);
    rc |= shell("openssl pkey -in %s/key.pem -pubout -out %s/pub.pem", d, d);
    rc |= shell("openssl pkcs8 -topk8 -v2 des3 -in %s/key.pem -out %s/key_des3.p8 "
                "-passout pass:" PASS,
                d, d);
    rc |= shell("openssl pkcs8 -topk8 -v2 aes-256-cbc -in %s/key.pem -out %s/key_aes.p8 "
                "-passout pass:" PASS,
                d, d);
    rc |= shell("openssl rsa -in %s/key.pem -traditional -out %s/key_pkcs1.pem 2>/dev/null", d, d);
    rc |= shell("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
                "-out %s/key_1024.pem 2>/dev/null",
                d);
    rc |= shell("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
                "-out %s/key_ec.pem 2>/dev/null",
                d);
    rc |= shell("openssl genpkey -algorithm ED25519 -out %s/key_ed25519.pem 2>/dev/null", d);
    rc |= shell("printf 'not a key\\n' > %s/garbage.pem", d);
    return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_dir[0] && strncmp(g_dir, "/tmp/sg-test-jwt-", 17) == 0) shell("rm -rf '%s'", g_dir);
    return 0;
}

/* ---- base64url ---- */

static void check_encode(const char *in, const char *want)
{
    char *s = sg_base64url_encode((const unsigned char *)in, strlen(in));
    assert_string_equal(s, want);
    free(s);
    unsigned char *out;
    size_t n;
    assert_int_equal(sg_base64url_decode(want, strlen(want), &out, &n), 0);
    assert_int_equal(n, strlen(in));
    assert_memory_equal(out, in, n);
    assert_int_equal(out[n], '\0');
    free(out);
}

static void test_b64url_rfc4648_vectors(void **state)
{
    (void)state;
    check_encode("", "");
    check_encode("f", "Zg");
    check_encode("fo", "Zm8");
    check_encode("foo", "Zm9v");
    check_encode("foob", "Zm9vYg");
    check_encode("fooba", "Zm9vYmE");
    check_encode("foobar", "Zm9vYmFy");
    check_encode("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9");
}

static void test_b64url_url_alphabet(void **state)
{
    (void)state;
    const unsigned char in[] = {0xfb, 0xff, 0xbf, 0xfe};
    char *s = sg_base64url_encode(in, sizeof(in));
    assert_string_equal(s, "-_-__g"); /* standard base64: "+/+//g==" */
    free(s);
    unsigned char *out;
    size_t n;
    assert_int_equal(sg_base64url_decode("-_-__g", 6, &out, &n), 0);
    assert_int_equal(n, sizeof(in));
    assert_memory_equal(out, in, n);
    free(out);
    /* The standard alphabet's + and / are not base64url. */
    assert_int_equal(sg_base64url_decode("+/+//g", 6, &out, &n), -1);
    assert_null(out);
}

static void test_b64url_round_trips(void **state)
{
    (void)state;
    unsigned char in[300];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(in); i++) {
        x = x * 1103515245u + 12345u;
        in[i] = (unsigned char)(i < 256 ? i : x >> 16);
    }
    for (size_t len = 0; len <= sizeof(in); len++) {
        char *s = sg_base64url_encode(in, len);
        assert_int_equal(strlen(s), (len * 4 + 2) / 3);
        for (const char *p = s; *p; p++) assert_null(strchr("+/=", *p));
        unsigned char *out;
        size_t n;
        assert_int_equal(sg_base64url_decode(s, strlen(s), &out, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(out, in, len);
        free(out);
        free(s);
    }
}

static void test_b64url_padding_and_errors(void **state)
{
    (void)state;
    unsigned char *out;
    size_t n;
    /* Padding is optional but must be correct when present. */
    assert_int_equal(sg_base64url_decode("Zg==", 4, &out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 'f');
    free(out);
    assert_int_equal(sg_base64url_decode("Zm8=", 4, &out, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "fo", 2);
    free(out);
    /* Only n bytes are read. */
    assert_int_equal(sg_base64url_decode("Zm9vYmFy!!!", 8, &out, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "foobar", 6);
    free(out);

    static const char *const bad[] = {
        "Z",         /* a lone 6 bits */
        "Zm9vY",     /* 4n+1 characters */
        "Zg=",       /* incomplete padding */
        "Zg===",     /* too much padding */
        "Zm9v====",  /* padding on a full quantum */
        "=",         /* padding only */
        "====",      /* padding only */
        "Zg==Zg==",  /* padding inside */
        "Zm=8",      /* padding inside */
        "Zm9v Zg",   /* space */
        "Zm9v\nZg",  /* newline */
        "Zm9vYm.y",  /* dot */
        "Zm9vYmFy+", /* standard alphabet */
    };
    for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
        out = (unsigned char *)"x";
        assert_int_equal(sg_base64url_decode(bad[i], strlen(bad[i]), &out, &n), -1);
        assert_null(out);
    }
}

/* ---- sg_jwt_peek_exp ---- */

static void test_peek_exp_crafted(void **state)
{
    (void)state;
    int64_t exp = 0;
    char *t = make_jwt("{\"alg\":\"ES256\",\"kid\":\"k\"}", "{\"sub\":\"x\",\"exp\":1760000000}");
    assert_int_equal(sg_jwt_peek_exp(t, &exp), 0);
    assert_int_equal(exp, 1760000000);
    free(t);

    /* A fractional exp is truncated. */
    t = make_jwt("{\"alg\":\"HS256\"}", "{\"exp\":1760000000.75,\"iat\":1}");
    assert_int_equal(sg_jwt_peek_exp(t, &exp), 0);
    assert_int_equal(exp, 1760000000);
    free(t);

    /* A well-known JWT (jwt.io style), exp added: {"sub":"1234567890","exp":1516239022}. */
    const char *known = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                        "eyJzdWIiOiIxMjM0NTY3ODkwIiwiZXhwIjoxNTE2MjM5MDIyfQ."
                        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert_int_equal(sg_jwt_peek_exp(known, &exp), 0);
    assert_int_equal(exp, 1516239022);
}

static void test_peek_exp_not_a_jwt(void **state)
{
    (void)state;
    int64_t exp = 42;
    static const char *const not_jwt[] = {
        "",
        "abc",
        "ver:1-hint:1234-ETMsDgAAAYxyzSECRET",
        "a.b",
        "..",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.sig.extra",
        "eyJhbGciOiJIUzI1NiJ9..sig", /* empty payload */
        ".eyJleHAiOjF9.sig",         /* empty header */
        "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.si*g",
        "eyJhbGciOiJIUzI1NiJ9.eyJl+HAiOjF9.sig",
    };
    for (size_t i = 0; i < SG_ARRAY_LEN(not_jwt); i++)
        assert_int_equal(sg_jwt_peek_exp(not_jwt[i], &exp), -1);
    assert_int_equal(sg_jwt_peek_exp(NULL, &exp), -1);
    assert_int_equal(exp, 42);
}

static void test_peek_exp_malformed_payloads(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "not json",
        "[1,2,3]",
        "\"exp\"",
        "{\"exp\":\"1760000000\"}",
        "{\"exp\":null}",
        "{\"exp\":true}",
        "{\"exp\":-5}",
        "{\"exp\":1e300}",
        "{\"iat\":1760000000}",
        "{\"exp\":1760000000",
        "{}",
    };
    int64_t exp = 42;
    for (size_t i = 0; i < SG_ARRAY_LEN(payloads); i++) {
        char *t = make_jwt("{\"alg\":\"ES256\"}", payloads[i]);
        assert_int_equal(sg_jwt_peek_exp(t, &exp), -1);
        free(t);
    }
    /* The header must be a JSON object too. */
    char *t = make_jwt("not json", "{\"exp\":1760000000}");
    assert_int_equal(sg_jwt_peek_exp(t, &exp), -1);
    free(t);
    assert_int_equal(exp, 42);
}

/* ---- account normalisation ---- */

static void check_account(const char *in, const char *want)
{
    char out[128];
    sg_snowflake_jwt_account(in, out, sizeof(out));
    assert_string_equal(out, want);
}

static void test_account_normalisation(void **state)
{
    (void)state;
    check_account("xy12345.us-east-2.aws", "XY12345");
    check_account("xy12345.us-east-1", "XY12345");
    check_account("XY12345", "XY12345");
    check_account("xy12345", "XY12345");
    check_account("myorg-myacct", "MYORG-MYACCT");
    check_account("MyOrg-MyAcct", "MYORG-MYACCT");
    check_account("myorg-myacct.privatelink", "MYORG-MYACCT");
    check_account("myacct-abc123.global", "MYACCT");
    check_account("MYACCT-ABC123.GLOBAL", "MYACCT");
    check_account("my_org-my_acct", "MY_ORG-MY_ACCT");
    check_account("", "");
    /* Truncated to the capacity. */
    char small[4];
    sg_snowflake_jwt_account("abcdef", small, sizeof(small));
    assert_string_equal(small, "ABC");
}

/* ---- key pairs ---- */

static void test_keypair_sign_verify_with_openssl(void **state)
{
    (void)state;
    char *key = path_in("key.pem"), *pub = path_in("pub.pem");
    char err[512];
    sg_keypair_t *kp = sg_keypair_load(key, NULL, err, sizeof(err));
    assert_non_null(kp);

    char *want_fp = openssl_fingerprint(key);
    assert_string_equal(sg_keypair_fingerprint(kp), want_fp);
    assert_int_equal(strlen(want_fp), 7 + 44); /* padded standard base64 of 32 bytes */
    assert_int_equal(want_fp[strlen(want_fp) - 1], '=');

    char *tok = sg_snowflake_jwt(kp, "xy12345.us-east-2.aws", "jdoe", T0, 3540);
    assert_non_null(tok);
    char iss[256];
    snprintf(iss, sizeof(iss), "XY12345.JDOE.%s", want_fp);
    verify_snowflake_jwt(tok, pub, iss, "XY12345.JDOE", T0, T0 + 3540);
    free(tok);

    tok = sg_snowflake_jwt(kp, "myorg-myacct", "Svc.User", T0 + 10, 3600);
    assert_non_null(tok);
    snprintf(iss, sizeof(iss), "MYORG-MYACCT.SVC.USER.%s", want_fp);
    verify_snowflake_jwt(tok, pub, iss, "MYORG-MYACCT.SVC.USER", T0 + 10, T0 + 3610);
    free(tok);

    /* Lifetime bounds and required claims. */
    assert_null(sg_snowflake_jwt(kp, "a", "b", T0, 0));
    assert_null(sg_snowflake_jwt(kp, "a", "b", T0, 3601));
    assert_null(sg_snowflake_jwt(kp, "", "b", T0, 60));
    assert_null(sg_snowflake_jwt(kp, "a", "", T0, 60));
    assert_null(sg_snowflake_jwt(kp, NULL, "b", T0, 60));

    free(want_fp);
    sg_keypair_free(kp);
    free(key);
    free(pub);
}

static void test_keypair_pkcs8_des3_encrypted(void **state)
{
    (void)state;
    char *key = path_in("key_des3.p8"), *plain = path_in("key.pem"), *pub = path_in("pub.pem");
    char *head = shell_out("head -1 '%s'", key);
    assert_string_equal(head, "-----BEGIN ENCRYPTED PRIVATE KEY-----");
    free(head);

    char err[512];
    sg_keypair_t *kp = sg_keypair_load(key, PASS, err, sizeof(err));
    assert_non_null(kp);
    char *want_fp = openssl_fingerprint(plain);
    assert_string_equal(sg_keypair_fingerprint(kp), want_fp);
    char *tok = sg_snowflake_jwt(kp, "xy12345", "u", T0, 60);
    char iss[256];
    snprintf(iss, sizeof(iss), "XY12345.U.%s", want_fp);
    verify_snowflake_jwt(tok, pub, iss, "XY12345.U", T0, T0 + 60);
    free(tok);
    sg_keypair_free(kp);

    /* Wrong passphrase: a clear error that does not repeat the passphrase. */
    kp = sg_keypair_load(key, "wrong-passphrase", err, sizeof(err));
    assert_null(kp);
    assert_non_null(strstr(err, "wrong passphrase"));
    assert_null(strstr(err, "wrong-passphrase"));
    assert_null(strstr(err, PASS));

    /* No passphrase. */
    kp = sg_keypair_load(key, NULL, err, sizeof(err));
    assert_null(kp);
    assert_non_null(strstr(err, "encrypted"));
    assert_non_null(strstr(err, "private_key_passphrase"));
    kp = sg_keypair_load(key, "", err, sizeof(err));
    assert_null(kp);
    assert_non_null(strstr(err, "private_key_passphrase"));

    /* A passphrase given for an unencrypted key is harmless. */
    kp = sg_keypair_load(plain, PASS, err, sizeof(err));
    assert_non_null(kp);
    sg_keypair_free(kp);

    free(want_fp);
    free(key);
    free(plain);
    free(pub);
}

static void test_keypair_pkcs8_aes_unsupported(void **state)
{
    (void)state;
    char *key = path_in("key_aes.p8");
    char err[512];
    sg_keypair_t *kp = sg_keypair_load(key, PASS, err, sizeof(err));
    assert_null(kp);
    assert_non_null(strstr(err, "AES-encrypted PKCS#8"));
    assert_non_null(strstr(err, "unsupported"));
    assert_non_null(strstr(err, "openssl pkcs8"));
    assert_non_null(strstr(err, "-topk8 -v2 des3"));
    assert_null(strstr(err, PASS));
    /* Same answer with a wrong passphrase: the cipher is the problem. */
    kp = sg_keypair_load(key, "nope", err, sizeof(err));
    assert_null(kp);
    assert_non_null(strstr(err, "-v2 des3"));
    free(key);
}

static void test_keypair_pkcs1(void **state)
{
    (void)state;
    char *key = path_in("key_pkcs1.pem"), *plain = path_in("key.pem");
    char *head = shell_out("head -1 '%s'", key);
    assert_string_equal(head, "-----BEGIN RSA PRIVATE KEY-----");
    free(head);
    char err[512];
    sg_keypair_t *kp = sg_keypair_load(key, NULL, err, sizeof(err));
    assert_non_null(kp);
    char *want_fp = openssl_fingerprint(plain);
    assert_string_equal(sg_keypair_fingerprint(kp), want_fp);
    free(want_fp);
    sg_keypair_free(kp);
    free(key);
    free(plain);
}

static void test_keypair_rejects_unusable_keys(void **state)
{
    (void)state;
    char err[512];
    char *p = path_in("key_1024.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "1024-bit"));
    assert_non_null(strstr(err, "at least 2048"));
    free(p);

    p = path_in("key_ec.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "not an RSA key"));
    free(p);

    p = path_in("key_ed25519.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "not an RSA key"));
    free(p);

    p = path_in("pub.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "public key"));
    free(p);

    p = path_in("garbage.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot parse private key"));
    free(p);

    p = path_in("does-not-exist.pem");
    assert_null(sg_keypair_load(p, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
    assert_non_null(strstr(err, "No such file"));
    free(p);

    assert_null(sg_keypair_load(NULL, NULL, err, sizeof(err)));
    assert_true(err[0] != '\0');
    sg_keypair_free(NULL);
}

/* ---- Snowflake credentials ---- */

/* A provider config whose strings are heap copies, freed with cfg_free (as a reload would). */
static sg_cortex_cfg_t cfg_make(const char *pat, const char *key, const char *pass)
{
    sg_cortex_cfg_t p;
    memset(&p, 0, sizeof(p));
    p.account = sg_xstrdup("myorg-myacct");
    p.user = sg_xstrdup("svc_user");
    p.role = sg_xstrdup("CORTEX_APP");
    p.pat = pat ? sg_xstrdup(pat) : NULL;
    p.private_key_path = key ? path_in(key) : NULL;
    p.private_key_passphrase = pass ? sg_xstrdup(pass) : NULL;
    p.pat_warn_days = 7;
    return p;
}

static void cfg_free(sg_cortex_cfg_t *p)
{
    /* Overwrite before freeing so a kept pointer would be caught by the checks (and ASan). */
    char **fields[] = {
        &p->account, &p->user, &p->role, &p->pat, &p->private_key_path, &p->private_key_passphrase};
    for (size_t i = 0; i < SG_ARRAY_LEN(fields); i++) {
        if (*fields[i]) memset(*fields[i], 'X', strlen(*fields[i]));
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

static void test_sf_auth_pat_expiring_soon_warns(void **state)
{
    (void)state;
    int64_t now = T0;
    int64_t exp = now + 3 * 86400;
    char *pat = pat_with_exp(exp);
    sg_cortex_cfg_t p = cfg_make(pat, NULL, NULL);
    free(p.role);
    p.role = sg_xstrdup("accountAdmin");
    char err[512];
    capture_begin();
    sg_sf_auth_t *a = sg_sf_auth_new("sf", &p, now, err, sizeof(err));
    char *log = capture_end();
    assert_non_null(a);
    cfg_free(&p); /* a reload frees the old config */

    assert_non_null(strstr(log, "'sf'"));
    assert_non_null(strstr(log, "expires at 2023-11-17T22:13:20Z"));
    assert_non_null(strstr(log, "in 3 days"));
    assert_non_null(strstr(log, "ACCOUNTADMIN"));
    assert_null(strstr(log, pat));
    assert_null(strstr(log, strchr(pat, '.') + 1)); /* nor its payload or signature */
    assert_null(strstr(log, "c2lnbmF0dXJl"));
    free(log);

    assert_string_equal(sg_sf_auth_method(a), "pat");
    assert_int_equal(sg_sf_auth_expires_at(a), exp);
    const char *tok = NULL, *type = NULL;
    sg_error_t e;
    memset(&e, 0, sizeof(e));
    assert_int_equal(sg_sf_auth_token(a, now + 86400, &tok, &type, &e), 0);
    assert_string_equal(tok, pat);
    assert_string_equal(type, "PROGRAMMATIC_ACCESS_TOKEN");
    /* One second before expiry it still works; at expiry it does not. */
    assert_int_equal(sg_sf_auth_token(a, exp - 1, &tok, &type, &e), 0);
    assert_int_equal(sg_sf_auth_token(a, exp, &tok, &type, &e), -1);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "snowflake_token_expired");
    sg_sf_auth_free(a);
    free(pat);
}

static void test_sf_auth_pat_far_expiry_and_other_roles_quiet(void **state)
{
    (void)state;
    char *pat = pat_with_exp(T0 + 30 * 86400);
    sg_cortex_cfg_t p = cfg_make(pat, NULL, NULL);
    char err[512];
    capture_begin();
    sg_sf_auth_t *a = sg_sf_auth_new("sf", &p, T0, err, sizeof(err));
    char *log = capture_end();
    assert_non_null(a);
    assert_string_equal(log, "");
    free(log);
    sg_sf_auth_free(a);
    cfg_free(&p);

    /* Each administrative role warns, case-insensitively; similar names do not. */
    static const struct {
        const char *role;
        int warns;
    } roles[] = {{"SECURITYADMIN", 1}, {"orgadmin", 1},      {"\"AccountAdmin\"", 1},
                 {"SYSADMIN", 0},      {"ACCOUNTADMIN2", 0}, {"ORGADMI", 0}};
    for (size_t i = 0; i < SG_ARRAY_LEN(roles); i++) {
        p = cfg_make(pat, NULL, NULL);
        free(p.role);
        p.role = sg_xstrdup(roles[i].role);
        capture_begin();
        a = sg_sf_auth_new("sf", &p, T0, err, sizeof(err));
        log = capture_end();
        assert_non_null(a);
        assert_int_equal(strstr(log, "administrative role") != NULL, roles[i].warns);
        free(log);
        sg_sf_auth_free(a);
        cfg_free(&p);
    }
    free(pat);
}

static void test_sf_auth_pat_expired(void **state)
{
    (void)state;
    char *pat = pat_with_exp(T0);
    sg_cortex_cfg_t p = cfg_make(pat, NULL, NULL);
    char err[512];
    capture_begin();
    sg_sf_auth_t *a = sg_sf_auth_new("sf", &p, T0 + 3600, err, sizeof(err));
    char *log = capture_end();
    assert_non_null(a); /* accepted: requests get a clear 503 until it is rotated */
    cfg_free(&p);
    assert_non_null(strstr(log, "expired at 2023-11-14T22:13:20Z"));
    assert_null(strstr(log, pat));
    free(log);

    const char *tok = NULL, *type = NULL;
    sg_error_t e;
    memset(&e, 0, sizeof(e));
    assert_int_equal(sg_sf_auth_token(a, T0 + 3600, &tok, &type, &e), -1);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.type, "api_error");
    assert_string_equal(e.code, "snowflake_token_expired");
    assert_non_null(strstr(e.message, "provider 'sf'"));
    assert_non_null(strstr(e.message, "expired at 2023-11-14T22:13:20Z"));
    assert_non_null(strstr(e.message, "rotate it"));
    assert_non_null(strstr(e.message, "ROTATE PROGRAMMATIC ACCESS TOKEN"));
    assert_non_null(strstr(e.message, "SIGHUP"));
    assert_null(strstr(e.message, pat));
    sg_sf_auth_free(a);
    free(pat);
}

static void test_sf_auth_opaque_pat(void **state)
{
    (void)state;
    const char *pat = "ver:1-hint:4711-ETMsDgAAAYopaqueSECRETvalue==";
    sg_cortex_cfg_t p = cfg_make(pat, NULL, NULL);
    char err[512];
    capture_begin();
    sg_sf_auth_t *a = sg_sf_auth_new("sf", &p, T0, err, sizeof(err));
    char *log = capture_end();
    assert_non_null(a);
    cfg_free(&p);
    assert_non_null(strstr(log, "not JWT-shaped"));
    assert_non_null(strstr(log, "'sf'"));
    assert_null(strstr(log, "SECRET"));
    free(log);
    assert_int_equal(sg_sf_auth_expires_at(a), 0);
    const char *tok = NULL, *type = NULL;
    sg_error_t e;
    assert_int_equal(sg_sf_auth_token(a, T0 + 400 * 86400, &tok, &type, &e), 0);
    assert_string_equal(tok, pat);
    assert_string_equal(type, "PROGRAMMATIC_ACCESS_TOKEN");
    sg_sf_auth_free(a);
}

static void test_sf_auth_pat_rejects_bad_characters(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "abc def",       "abcSECRET\n", "\tabcSECRET",       "abc\x01SECRET",
        "abc\x7fSECRET", "abc\rSECRET", "abc\xc3\xa9SECRET", "",
    };
    char err[512];
    for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
        sg_cortex_cfg_t p = cfg_make(bad[i], NULL, NULL);
        err[0] = '\0';
        assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
        assert_non_null(strstr(err, "provider 'sf'"));
        assert_non_null(strstr(err, "programmatic access token"));
        assert_null(strstr(err, "SECRET"));
        cfg_free(&p);
    }
    sg_cortex_cfg_t p = cfg_make("abc def", NULL, NULL);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "whitespace"));
    cfg_free(&p);
    p = cfg_make("abc\x01", NULL, NULL);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "control character"));
    cfg_free(&p);

    /* Neither or both credentials. */
    p = cfg_make(NULL, NULL, NULL);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "no Snowflake credentials"));
    cfg_free(&p);
    p = cfg_make("tokenSECRET", "key.pem", NULL);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "not both"));
    assert_null(strstr(err, "SECRET"));
    cfg_free(&p);
}

static void test_sf_auth_keypair_renews_before_expiry(void **state)
{
    (void)state;
    char *pub = path_in("pub.pem"), *plain = path_in("key.pem");
    char *fp = openssl_fingerprint(plain);
    sg_cortex_cfg_t p = cfg_make(NULL, "key_des3.p8", PASS);
    char err[512];
    int64_t now = T0;
    capture_begin();
    sg_sf_auth_t *a = sg_sf_auth_new("sf", &p, now, err, sizeof(err));
    char *log = capture_end();
    assert_non_null(a);
    assert_non_null(strstr(log, fp)); /* the public fingerprint is logged, to compare */
    assert_null(strstr(log, PASS));
    free(log);
    cfg_free(&p);

    assert_string_equal(sg_sf_auth_method(a), "keypair");
    int64_t exp1 = sg_sf_auth_expires_at(a);
    assert_int_equal(exp1, now + SG_SF_JWT_LIFETIME_S);

    const char *tok = NULL, *type = NULL;
    sg_error_t e;
    memset(&e, 0, sizeof(e));
    assert_int_equal(sg_sf_auth_token(a, now, &tok, &type, &e), 0);
    assert_string_equal(type, "KEYPAIR_JWT");
    char *tok1 = sg_xstrdup(tok);
    char iss[256];
    snprintf(iss, sizeof(iss), "MYORG-MYACCT.SVC_USER.%s", fp);
    verify_snowflake_jwt(tok1, pub, iss, "MYORG-MYACCT.SVC_USER", now, exp1);

    /* Not renewed until within SG_SF_JWT_RENEW_BEFORE_S of expiry. */
    int64_t t = exp1 - SG_SF_JWT_RENEW_BEFORE_S - 1;
    assert_int_equal(sg_sf_auth_token(a, now + 60, &tok, &type, &e), 0);
    assert_string_equal(tok, tok1);
    assert_int_equal(sg_sf_auth_token(a, t, &tok, &type, &e), 0);
    assert_string_equal(tok, tok1);
    assert_int_equal(sg_sf_auth_expires_at(a), exp1);

    /* At exp - 5 min a new token with a later exp. */
    t = exp1 - SG_SF_JWT_RENEW_BEFORE_S;
    assert_int_equal(sg_sf_auth_token(a, t, &tok, &type, &e), 0);
    assert_string_not_equal(tok, tok1);
    int64_t exp2 = sg_sf_auth_expires_at(a);
    assert_int_equal(exp2, t + SG_SF_JWT_LIFETIME_S);
    assert_true(exp2 > exp1);
    verify_snowflake_jwt(tok, pub, iss, "MYORG-MYACCT.SVC_USER", t, exp2);
    char *tok2 = sg_xstrdup(tok);

    /* And it is then stable again. */
    assert_int_equal(sg_sf_auth_token(a, t + 600, &tok, &type, &e), 0);
    assert_string_equal(tok, tok2);

    free(tok1);
    free(tok2);
    free(fp);
    free(pub);
    free(plain);
    sg_sf_auth_free(a);
}

static void test_sf_auth_keypair_errors(void **state)
{
    (void)state;
    char err[512];
    sg_cortex_cfg_t p = cfg_make(NULL, "key_1024.pem", NULL);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "provider 'sf'"));
    assert_non_null(strstr(err, "2048"));
    cfg_free(&p);

    p = cfg_make(NULL, "key_des3.p8", "bad-guessSECRET");
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "provider 'sf'"));
    assert_non_null(strstr(err, "wrong passphrase"));
    assert_null(strstr(err, "SECRET"));
    cfg_free(&p);

    p = cfg_make(NULL, "key_aes.p8", PASS);
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "-v2 des3"));
    cfg_free(&p);

    p = cfg_make(NULL, "key.pem", NULL);
    free(p.user);
    p.user = NULL;
    assert_null(sg_sf_auth_new("sf", &p, T0, err, sizeof(err)));
    assert_non_null(strstr(err, "account and user"));
    cfg_free(&p);

    sg_sf_auth_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_rfc4648_vectors),
        cmocka_unit_test(test_b64url_url_alphabet),
        cmocka_unit_test(test_b64url_round_trips),
        cmocka_unit_test(test_b64url_padding_and_errors),
        cmocka_unit_test(test_peek_exp_crafted),
        cmocka_unit_test(test_peek_exp_not_a_jwt),
        cmocka_unit_test(test_peek_exp_malformed_payloads),
        cmocka_unit_test(test_account_normalisation),
        cmocka_unit_test(test_keypair_sign_verify_with_openssl),
        cmocka_unit_test(test_keypair_pkcs8_des3_encrypted),
        cmocka_unit_test(test_keypair_pkcs8_aes_unsupported),
        cmocka_unit_test(test_keypair_pkcs1),
        cmocka_unit_test(test_keypair_rejects_unusable_keys),
        cmocka_unit_test(test_sf_auth_pat_expiring_soon_warns),
        cmocka_unit_test(test_sf_auth_pat_far_expiry_and_other_roles_quiet),
        cmocka_unit_test(test_sf_auth_pat_expired),
        cmocka_unit_test(test_sf_auth_opaque_pat),
        cmocka_unit_test(test_sf_auth_pat_rejects_bad_characters),
        cmocka_unit_test(test_sf_auth_keypair_renews_before_expiry),
        cmocka_unit_test(test_sf_auth_keypair_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
