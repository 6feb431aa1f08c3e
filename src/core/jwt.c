/* JSON Web Tokens for Snowflake: base64url, reading a PAT's "exp", and RS256 key-pair JWTs
 * signed with mbedTLS.
 *
 * Encrypted keys and Debian's mbedTLS 2.28: an "ENCRYPTED PRIVATE KEY" (PKCS#8) is decrypted
 * by mbedTLS itself, which in the 2.28 branch knows PBES2 only with DES-CBC / DES-EDE3-CBC
 * (any HMAC-SHA PRF, so OpenSSL 3's default hmacWithSHA256 is fine) and the PKCS#12 PBE
 * schemes (e.g. `-v1 PBE-SHA1-3DES`). PBES2 with AES (what `openssl pkcs8 -topk8 -v2
 * aes-256-cbc` and OpenSSL 3's default `-topk8` produce) fails with
 * MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE; we report that in plain words with the command that
 * re-encrypts the key with 3DES:
 *   openssl pkcs8 -in key.p8 -topk8 -v2 des3 -out key-des3.p8
 * (Legacy PKCS#1 PEM "Proc-Type: 4,ENCRYPTED" with AES in DEK-Info also works; AES-PBES2
 * support arrived in mbedTLS 3.5.) */
#include "sophia/jwt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/pkcs12.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/cipher.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>

#include "sophia/core.h"

#define KEY_FILE_MAX (1u << 20)
#define MIN_RSA_BITS 2048

struct sg_keypair {
    mbedtls_pk_context pk;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    char fingerprint[64]; /* "SHA256:" + 44 base64 chars */
};

/* ---- base64url ---- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *sg_base64url_encode(const unsigned char *in, size_t n)
{
    size_t out_len = n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
    char *out = sg_xmalloc(out_len + 1);
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    SG_ASSERT(o == out_len);
    out[o] = '\0';
    return out;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

int sg_base64url_decode(const char *in, size_t n, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    /* Optional padding: when present it must complete the last quantum. */
    size_t pad = 0;
    while (pad < n && pad < 3 && in[n - 1 - pad] == '=') pad++;
    if (pad > 0) {
        if (pad > 2 || n % 4 != 0) return -1;
        n -= pad;
        if (n % 4 + pad != 4) return -1;
    }
    if (n % 4 == 1) return -1;
    size_t len = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    unsigned char *buf = sg_xmalloc(len + 1);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    SG_ASSERT(o == len);
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
}

/* ---- reading a JWT ---- */

/* Decodes one base64url part into a JSON object, or NULL. */
static cJSON *decode_json_part(const char *s, size_t n)
{
    if (n == 0) return NULL;
    unsigned char *raw;
    size_t raw_len;
    if (sg_base64url_decode(s, n, &raw, &raw_len) != 0) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)raw, raw_len);
    free(raw);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

int sg_jwt_peek_exp(const char *token, int64_t *exp)
{
    if (!token) return -1;
    const char *d1 = strchr(token, '.');
    if (!d1) return -1;
    const char *d2 = strchr(d1 + 1, '.');
    if (!d2 || strchr(d2 + 1, '.')) return -1;
    /* The signature part must be base64url too (it may be empty only for alg "none"). */
    for (const char *p = d2 + 1; *p; p++)
        if (b64url_value((unsigned char)*p) < 0 && *p != '=') return -1;
    cJSON *header = decode_json_part(token, (size_t)(d1 - token));
    if (!header) return -1;
    cJSON_Delete(header);
    cJSON *payload = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!payload) return -1;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(payload, "exp");
    int rc = -1;
    if (cJSON_IsNumber(e) && isfinite(e->valuedouble) && e->valuedouble >= 0 &&
        e->valuedouble < 9.2e18) {
        *exp = (int64_t)e->valuedouble;
        rc = 0;
    }
    cJSON_Delete(payload);
    return rc;
}

/* ---- key pair ---- */

/* Reads a whole (small) file, NUL-terminated; *len excludes the NUL. */
static unsigned char *read_key_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open private key file '%s': %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = sg_xmalloc(KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, KEY_FILE_MAX + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || n > KEY_FILE_MAX) {
        mbedtls_platform_zeroize(buf, n);
        free(buf);
        snprintf(err, errlen, "cannot read private key file '%s': %s", path,
                 rerr ? "read error" : "file too large");
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int is_feature_unavailable(int rc)
{
    return rc == MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE ||
           rc == MBEDTLS_ERR_PKCS12_FEATURE_UNAVAILABLE ||
           rc == MBEDTLS_ERR_CIPHER_FEATURE_UNAVAILABLE || rc == MBEDTLS_ERR_PK_FEATURE_UNAVAILABLE;
}

/* mbedTLS adds a low-level code (< 0x80, e.g. ASN.1) to a high-level one; keep the latter. */
static int high_level(int rc)
{
    return rc < 0 ? -((-rc) & 0xff80) : rc;
}

static void describe_parse_error(int rc, const char *path, const unsigned char *pem, int has_pass,
                                 char *err, size_t errlen)
{
    const char *s = (const char *)pem;
    int hl = high_level(rc);
    int pkcs8_encrypted = strstr(s, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL;
    int encrypted = pkcs8_encrypted || strstr(s, "Proc-Type: 4,ENCRYPTED") != NULL;
    if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        snprintf(err, errlen,
                 "private key '%s' is encrypted but no passphrase is configured "
                 "(set private_key_passphrase)",
                 path);
    } else if (rc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH ||
               (encrypted && has_pass && hl == MBEDTLS_ERR_PK_KEY_INVALID_FORMAT)) {
        snprintf(err, errlen,
                 "cannot decrypt private key '%s': wrong passphrase "
                 "(check private_key_passphrase)",
                 path);
    } else if (pkcs8_encrypted && (is_feature_unavailable(rc) || is_feature_unavailable(hl))) {
        snprintf(err, errlen,
                 "private key '%s' is PKCS#8 encrypted with a cipher this build's mbedTLS 2.28 "
                 "cannot decrypt: AES-encrypted PKCS#8 (PBES2 with AES, OpenSSL's default) is "
                 "unsupported, only 3DES is; re-encrypt it with: openssl pkcs8 -in '%s' -topk8 "
                 "-v2 des3 -out key-des3.p8",
                 path, path);
    } else if (rc == MBEDTLS_ERR_PK_UNKNOWN_PK_ALG) {
        snprintf(err, errlen,
                 "private key '%s' is not an RSA key (unsupported key algorithm); Snowflake "
                 "key-pair authentication needs an RSA key of at least %d bits",
                 path, MIN_RSA_BITS);
    } else if (!strstr(s, "PRIVATE KEY-----") && strstr(s, "-----BEGIN PUBLIC KEY-----")) {
        snprintf(err, errlen,
                 "'%s' holds a public key; private_key_path must name the RSA private key", path);
    } else {
        char why[128];
        mbedtls_strerror(rc, why, sizeof(why));
        snprintf(err, errlen,
                 "cannot parse private key '%s' (expected a PEM RSA key, PKCS#8 or PKCS#1): %s",
                 path, why);
    }
}

static int compute_fingerprint(sg_keypair_t *kp)
{
    unsigned char der[4096];
    int n = mbedtls_pk_write_pubkey_der(&kp->pk, der, sizeof(der));
    if (n <= 0) return -1;
    /* mbedtls writes the DER at the end of the buffer. */
    unsigned char hash[32];
    if (mbedtls_sha256_ret(der + sizeof(der) - (size_t)n, (size_t)n, hash, 0) != 0) return -1;
    memcpy(kp->fingerprint, "SHA256:", 7);
    size_t olen = 0;
    if (mbedtls_base64_encode((unsigned char *)kp->fingerprint + 7, sizeof(kp->fingerprint) - 7,
                              &olen, hash, sizeof(hash)) != 0)
        return -1;
    kp->fingerprint[7 + olen] = '\0';
    return 0;
}

sg_keypair_t *sg_keypair_load(const char *path, const char *passphrase, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    if (!path || !*path) {
        snprintf(err, errlen, "no private key path");
        return NULL;
    }
    size_t len = 0;
    unsigned char *pem = read_key_file(path, &len, err, errlen);
    if (!pem) return NULL;

    sg_keypair_t *kp = sg_xcalloc(1, sizeof(*kp));
    mbedtls_pk_init(&kp->pk);
    mbedtls_entropy_init(&kp->entropy);
    mbedtls_ctr_drbg_init(&kp->drbg);

    /* The passphrase is handed to mbedTLS as it is: no copy to zero. */
    size_t pass_len = passphrase ? strlen(passphrase) : 0;
    int rc = mbedtls_pk_parse_key(&kp->pk, pem, len + 1,
                                  pass_len ? (const unsigned char *)passphrase : NULL, pass_len);
    if (rc != 0) {
        describe_parse_error(rc, path, pem, pass_len > 0, err, errlen);
        goto fail;
    }
    if (mbedtls_pk_get_type(&kp->pk) != MBEDTLS_PK_RSA) {
        snprintf(err, errlen,
                 "private key '%s' is not an RSA key (it is %s); Snowflake key-pair "
                 "authentication needs an RSA key of at least %d bits",
                 path, mbedtls_pk_get_name(&kp->pk), MIN_RSA_BITS);
        goto fail;
    }
    size_t bits = mbedtls_pk_get_bitlen(&kp->pk);
    if (bits < MIN_RSA_BITS) {
        snprintf(err, errlen,
                 "private key '%s' is a %zu-bit RSA key; Snowflake requires at least %d bits", path,
                 bits, MIN_RSA_BITS);
        goto fail;
    }
    /* RS256 is RSASSA-PKCS1-v1_5 with SHA-256. */
    mbedtls_rsa_set_padding(mbedtls_pk_rsa(kp->pk), MBEDTLS_RSA_PKCS_V15, MBEDTLS_MD_NONE);
    static const char pers[] = "sophia-gateway-jwt";
    if (mbedtls_ctr_drbg_seed(&kp->drbg, mbedtls_entropy_func, &kp->entropy,
                              (const unsigned char *)pers, sizeof(pers) - 1) != 0) {
        snprintf(err, errlen, "cannot seed the random generator for signing");
        goto fail;
    }
    if (compute_fingerprint(kp) != 0) {
        snprintf(err, errlen, "cannot compute the public key fingerprint of '%s'", path);
        goto fail;
    }
    mbedtls_platform_zeroize(pem, len);
    free(pem);
    return kp;

fail:
    mbedtls_platform_zeroize(pem, len);
    free(pem);
    sg_keypair_free(kp);
    return NULL;
}

void sg_keypair_free(sg_keypair_t *kp)
{
    if (!kp) return;
    mbedtls_pk_free(&kp->pk);
    mbedtls_ctr_drbg_free(&kp->drbg);
    mbedtls_entropy_free(&kp->entropy);
    mbedtls_platform_zeroize(kp, sizeof(*kp));
    free(kp);
}

const char *sg_keypair_fingerprint(const sg_keypair_t *kp)
{
    return kp->fingerprint;
}

/* ---- Snowflake claims ---- */

static void upper_copy(char *out, size_t cap, const char *s, size_t n)
{
    if (cap == 0) return;
    if (n >= cap) n = cap - 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    out[n] = '\0';
}

static int has_global_suffix(const char *s)
{
    for (const char *p = s; (p = strchr(p, '.')) != NULL; p++)
        if (sg_strncaseeq(p, ".global", 7) && (p[7] == '\0' || p[7] == '.')) return 1;
    return 0;
}

void sg_snowflake_jwt_account(const char *account, char *out, size_t cap)
{
    if (cap == 0) return;
    if (!account) {
        out[0] = '\0';
        return;
    }
    size_t n = strlen(account);
    if (has_global_suffix(account)) {
        /* "myacct-abc123.global": the account name is what precedes the first '-'. Without a
         * '-' fall back to the locator rule so no period reaches the claim. */
        const char *dash = strchr(account, '-');
        const char *dot = strchr(account, '.');
        if (dash && dash > account)
            n = (size_t)(dash - account);
        else if (dot && dot > account)
            n = (size_t)(dot - account);
    } else {
        /* "xy12345.us-east-2.aws" → "xy12345"; "myorg-myacct" stays whole. */
        const char *dot = strchr(account, '.');
        if (dot && dot > account) n = (size_t)(dot - account);
    }
    upper_copy(out, cap, account, n);
    /* Any period left (a leading one) becomes a hyphen, as Snowflake expects. */
    for (char *p = out; *p; p++)
        if (*p == '.') *p = '-';
}

char *sg_snowflake_jwt(const sg_keypair_t *kp, const char *account, const char *user, int64_t now,
                       int lifetime_s)
{
    if (!kp || !account || !user || !*account || !*user) return NULL;
    if (lifetime_s < 1 || lifetime_s > 3600) return NULL;
    char acct[256], usr[256];
    sg_snowflake_jwt_account(account, acct, sizeof(acct));
    upper_copy(usr, sizeof(usr), user, strlen(user));
    if (!acct[0]) return NULL;

    char sub[600], iss[700];
    snprintf(sub, sizeof(sub), "%s.%s", acct, usr);
    snprintf(iss, sizeof(iss), "%s.%s", sub, kp->fingerprint);

    cJSON *payload = cJSON_CreateObject();
    SG_ASSERT(payload != NULL);
    cJSON_AddStringToObject(payload, "iss", iss);
    cJSON_AddStringToObject(payload, "sub", sub);
    cJSON_AddNumberToObject(payload, "iat", (double)now);
    cJSON_AddNumberToObject(payload, "exp", (double)(now + lifetime_s));
    char *payload_json = cJSON_PrintUnformatted(payload);
    cJSON_Delete(payload);
    SG_ASSERT(payload_json != NULL);

    static const char header_json[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    char *h64 = sg_base64url_encode((const unsigned char *)header_json, sizeof(header_json) - 1);
    char *p64 = sg_base64url_encode((const unsigned char *)payload_json, strlen(payload_json));
    free(payload_json);

    size_t hl = strlen(h64), pl = strlen(p64);
    size_t signing_len = hl + 1 + pl;
    char *token = NULL;
    char *signing = sg_xmalloc(signing_len + 1);
    memcpy(signing, h64, hl);
    signing[hl] = '.';
    memcpy(signing + hl + 1, p64, pl);
    signing[signing_len] = '\0';
    free(h64);
    free(p64);

    unsigned char hash[32];
    unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0;
    /* Signing draws from the key pair's DRBG (RSA blinding); mbedTLS is built with
     * MBEDTLS_THREADING_C, which guards the DRBG and the RSA context with mutexes. */
    sg_keypair_t *mkp = (sg_keypair_t *)kp;
    if (mbedtls_sha256_ret((const unsigned char *)signing, signing_len, hash, 0) != 0 ||
        mbedtls_pk_sign(&mkp->pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, &sig_len,
                        mbedtls_ctr_drbg_random, &mkp->drbg) != 0) {
        free(signing);
        return NULL;
    }
    char *s64 = sg_base64url_encode(sig, sig_len);
    size_t sl = strlen(s64);
    token = sg_xmalloc(signing_len + 1 + sl + 1);
    memcpy(token, signing, signing_len);
    token[signing_len] = '.';
    memcpy(token + signing_len + 1, s64, sl + 1);
    free(signing);
    free(s64);
    return token;
}
