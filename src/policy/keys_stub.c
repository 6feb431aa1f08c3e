/* TEMPORARY until src/policy/keys.c lands. */
#include <string.h>

#include "sophia/access.h"

int sg_keys_model_allowed(const sg_key_cfg_t *key, const char *public_name)
{
    if (!key || !key->n_models) return 1;
    for (size_t i = 0; i < key->n_models; i++)
        if (strcmp(key->models[i], public_name) == 0) return 1;
    return 0;
}

const sg_team_cfg_t *sg_access_team(const sg_access_cfg_t *a, const char *name)
{
    for (size_t i = 0; i < a->n_teams; i++)
        if (strcmp(a->teams[i].name, name) == 0) return &a->teams[i];
    return NULL;
}
