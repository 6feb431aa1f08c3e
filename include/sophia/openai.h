/* Kind "openai" (OpenAI-compatible servers: Lambda GPU instances running vLLM, SGLang, TGI):
 * its own settings, kept in sg_provider_cfg_t.ext. */
#ifndef SOPHIA_OPENAI_H
#define SOPHIA_OPENAI_H

#include "sophia/config.h"
#include "sophia/provider.h"

typedef struct sg_openai_cfg {
    char *api_key; /* secret; NULL: no Authorization header */
} sg_openai_cfg_t;

/* The settings of a provider of kind "openai". */
static inline const sg_openai_cfg_t *sg_openai_cfg(const sg_provider_cfg_t *p)
{
    return (const sg_openai_cfg_t *)p->ext;
}

extern const sg_provider_kind_t sg_kind_openai;

#endif
