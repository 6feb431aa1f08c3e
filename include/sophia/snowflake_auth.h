/* Snowflake credentials for one provider: a programmatic access token (PAT) or a key-pair
 * JWT that is cached and renewed before it expires. */
#ifndef SOPHIA_SNOWFLAKE_AUTH_H
#define SOPHIA_SNOWFLAKE_AUTH_H

#include <stdint.h>

#include "sophia/config.h"
#include "sophia/cortex.h"
#include "sophia/provider.h"

typedef struct sg_sf_auth sg_sf_auth_t;

/* Lifetime of generated key-pair JWTs, and how early they are renewed. */
#define SG_SF_JWT_LIFETIME_S (59 * 60)
#define SG_SF_JWT_RENEW_BEFORE_S (5 * 60)

/* Sets up the credentials of a cortex provider. PAT: checked (present, no whitespace or
 * control characters); when it parses as a JWT its exp is the expiry, a warning is logged
 * under pat_warn_days, and one warning when it is not JWT-shaped (accepted: the format is
 * undocumented). Key pair: the key is loaded and the fingerprint computed. A warning is logged
 * when the role is ACCOUNTADMIN, SECURITYADMIN or ORGADMIN. Returns NULL with a reason in
 * err (never a secret) when the credentials are unusable. */
sg_sf_auth_t *sg_sf_auth_new(const char *name, const sg_cortex_cfg_t *p, int64_t now, char *err,
                             size_t errlen);
void sg_sf_auth_free(sg_sf_auth_t *a);

/* The bearer token to send now and its X-Snowflake-Authorization-Token-Type value
 * ("PROGRAMMATIC_ACCESS_TOKEN" or "KEYPAIR_JWT"). A key-pair JWT is renewed when it is
 * within SG_SF_JWT_RENEW_BEFORE_S of expiring. Returns 0, or -1 with err set: an expired
 * PAT gives a 503 that says the token expired and how to rotate it. Pointers stay valid
 * until the next call or sg_sf_auth_free. */
int sg_sf_auth_token(sg_sf_auth_t *a, int64_t now, const char **token, const char **type,
                     sg_error_t *err);

/* The key-pair JWT last generated (a secret, for redaction), or NULL for a PAT. */
const char *sg_sf_auth_current(const sg_sf_auth_t *a);

/* "pat" or "keypair". */
const char *sg_sf_auth_method(const sg_sf_auth_t *a);
/* Expiry (epoch seconds) of the PAT, or of the current JWT; 0 when unknown (opaque PAT). */
int64_t sg_sf_auth_expires_at(const sg_sf_auth_t *a);

#endif
