/* JSON Web Tokens for Snowflake: reading a PAT's expiry, and RS256 key-pair JWTs signed with
 * mbedTLS from a PKCS#8 PEM key. */
#ifndef SOPHIA_JWT_H
#define SOPHIA_JWT_H

#include <stddef.h>
#include <stdint.h>

/* base64url without padding. Returns a NUL-terminated string the caller frees. */
char *sg_base64url_encode(const unsigned char *in, size_t n);
/* Decodes base64url (padding optional). Returns 0 and a buffer the caller frees (NUL added
 * after *out_len bytes), or -1 on malformed input. */
int sg_base64url_decode(const char *in, size_t n, unsigned char **out, size_t *out_len);

/* When token is a three-part JWS (a.b.c, base64url) whose payload is a JSON object with a
 * numeric "exp", sets *exp (epoch seconds) and returns 0; otherwise -1. Never logs. */
int sg_jwt_peek_exp(const char *token, int64_t *exp);

typedef struct sg_keypair sg_keypair_t;

/* Loads an RSA private key (>= 2048 bits) from a PEM file: PKCS#8 ("PRIVATE KEY" or
 * "ENCRYPTED PRIVATE KEY" with passphrase) or PKCS#1. Computes the public key fingerprint
 * "SHA256:" + base64(SHA-256(DER SubjectPublicKeyInfo)). Returns NULL and writes a reason
 * (never key material or the passphrase) into err on failure. */
sg_keypair_t *sg_keypair_load(const char *path, const char *passphrase, char *err, size_t errlen);
void sg_keypair_free(sg_keypair_t *kp);
/* "SHA256:<base64>" */
const char *sg_keypair_fingerprint(const sg_keypair_t *kp);

/* The account part of Snowflake JWT claims: upper-cased; an account locator loses its
 * region/cloud segments (cut at the first '.'); with ".global" (replication) it is cut at the
 * first '-' instead, as Snowflake's own connectors do. */
void sg_snowflake_jwt_account(const char *account, char *out, size_t cap);

/* Builds and signs (RS256) a Snowflake key-pair JWT: iss = ACCOUNT.USER.SHA256:<fp>,
 * sub = ACCOUNT.USER, iat = now, exp = now + lifetime_s (1..3600). Returns the token (caller
 * frees) or NULL. */
char *sg_snowflake_jwt(const sg_keypair_t *kp, const char *account, const char *user, int64_t now,
                       int lifetime_s);

#endif
