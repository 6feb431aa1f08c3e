/* The provider kinds this gateway knows: the one list to extend when a provider is added. */
#include <string.h>

#include "sophia/cortex.h"
#include "sophia/openai.h"
#include "sophia/provider.h"

const sg_provider_kind_t *const sg_provider_kinds[] = {&sg_kind_openai, &sg_kind_cortex, NULL};

const sg_provider_kind_t *sg_provider_kind_find(const char *kind)
{
    for (size_t i = 0; kind && sg_provider_kinds[i]; i++)
        if (strcmp(sg_provider_kinds[i]->kind, kind) == 0) return sg_provider_kinds[i];
    return NULL;
}

const sg_provider_kind_t *sg_provider_kind_for_name(const char *name)
{
    for (size_t i = 0; name && sg_provider_kinds[i]; i++)
        if (sg_provider_kinds[i]->default_name &&
            strcmp(sg_provider_kinds[i]->default_name, name) == 0)
            return sg_provider_kinds[i];
    return NULL;
}

const sg_provider_vt_t *sg_provider_find(const char *kind)
{
    const sg_provider_kind_t *k = sg_provider_kind_find(kind);
    return k ? k->vt : NULL;
}
