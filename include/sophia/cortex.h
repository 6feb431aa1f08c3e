/* Kind "cortex" (Snowflake Cortex REST): its own settings, kept in sg_provider_cfg_t.ext. */
#ifndef SOPHIA_CORTEX_H
#define SOPHIA_CORTEX_H

#include "sophia/config.h"
#include "sophia/provider.h"

typedef struct sg_cortex_cfg {
    char *account; /* account identifier as given, e.g. "myorg-myacct" */
    char *user;
    char *role;                   /* may be NULL; checked, not sent (see docs/providers.md) */
    char *warehouse;              /* may be NULL; not sent */
    char *database;               /* may be NULL; not sent */
    char *schema;                 /* may be NULL; not sent */
    char *pat;                    /* secret: programmatic access token */
    char *private_key_path;       /* PKCS#8 PEM (RSA), possibly encrypted */
    char *private_key_passphrase; /* secret; may be NULL */
    int pat_warn_days;            /* warn when the PAT expires within this many days (7) */
} sg_cortex_cfg_t;

/* The settings of a provider of kind "cortex". */
static inline const sg_cortex_cfg_t *sg_cortex_cfg(const sg_provider_cfg_t *p)
{
    return (const sg_cortex_cfg_t *)p->ext;
}

extern const sg_provider_kind_t sg_kind_cortex;

/* The request headers of a Cortex call: JSON in, JSON or SSE out, and the bearer token with
 * its X-Snowflake-Authorization-Token-Type (none when token is NULL: Snowflake answers 401). */
struct curl_slist *sg_cortex_headers(const char *token, const char *token_type);

#endif
