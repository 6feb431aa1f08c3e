/* Redaction of secrets from text that came from outside (an upstream's error message echoing
 * a token, a URL with user-info) before it reaches a client, a log line or an admin endpoint.
 * A set holds the configured secret values; sg_redact also removes what looks like a secret
 * whatever the set holds: JWT/JWS-shaped tokens ("eyJ…"), the credential after "Bearer " or
 * "Basic ", and URL user-info. */
#ifndef SOPHIA_REDACT_H
#define SOPHIA_REDACT_H

#include <stddef.h>

#define SG_REDACTED "[redacted]"
/* Values shorter than this are not redacted by value (they would blank ordinary words);
 * the configuration warns about such secrets. */
#define SG_SECRET_MIN_LEN 6

typedef struct sg_secrets {
    char **v;
    size_t n;
} sg_secrets_t;

/* Adds a copy of a secret value (NULL, empty and too-short values are ignored). For a URL,
 * adds the password of its user-info. */
void sg_secrets_add(sg_secrets_t *s, const char *value);
void sg_secrets_add_url(sg_secrets_t *s, const char *url);
/* Wipes and frees every value. */
void sg_secrets_dispose(sg_secrets_t *s);

/* Rewrites the NUL-terminated text (capacity cap bytes) in place with every secret of s
 * (may be NULL), every extra value (NULL-terminated list, may be NULL) and every secret-shaped
 * token replaced by SG_REDACTED. The result is cut to fit cap, at a UTF-8 boundary. */
void sg_redact(const sg_secrets_t *s, const char *const *extra, char *text, size_t cap);

/* Writes url with its user-info (user:password@) replaced by SG_REDACTED "@" into out. */
void sg_url_redact(const char *url, char *out, size_t cap);

#endif
