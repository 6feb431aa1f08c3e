/* Kind "openai": OpenAI-compatible servers (Lambda GPU instances running vLLM, SGLang, TGI).
 * Its configuration keys, environment (LAMBDA_BASE_URL, LAMBDA_API_KEY), built-in price list,
 * secrets, status and model-list probe. The wire adapter is openai_compat.c.
 *
 * Keys (besides the common kind, base_url / endpoints, models, discover, pinned):
 *   "api_key": "${LAMBDA_API_KEY}"   string or null (no Authorization header); a provider
 *                                    named "lambda" without it takes LAMBDA_API_KEY
 * A provider named "lambda" without base_url / endpoints takes LAMBDA_BASE_URL (a comma-
 * separated list gives several endpoints); when the file has no "lambda" provider and
 * LAMBDA_BASE_URL is set, one is created, serving the models its endpoints list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/log.h"
#include "sophia/openai.h"
#include "sophia/redact.h"

#define NAME "lambda"

/* Prices and sizes of the models Lambda's hosted API served until September 2025 (USD per
 * 1M tokens in / out; see docs/providers.md). Not a list of models (a server serves what it
 * lists): a table applied to the ids it matches. */
static const sg_builtin_model_t lambda_models[] = {
    {"llama3.1-8b-instruct", 0.025, 0.04, "fast", SG_TIER_SMALL, 131072,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"llama3.1-70b-instruct-fp8", 0.12, 0.30, NULL, SG_TIER_MEDIUM, 131072,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"llama3.3-70b-instruct-fp8", 0.12, 0.30, "smart", SG_TIER_MEDIUM, 131072,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"llama3.1-405b-instruct-fp8", 0.80, 0.80, NULL, SG_TIER_LARGE, 131072,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"hermes3-8b", 0.025, 0.04, NULL, SG_TIER_SMALL, 131072, SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"hermes3-70b", 0.12, 0.30, NULL, SG_TIER_MEDIUM, 131072, SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"hermes3-405b", 0.80, 0.80, NULL, SG_TIER_LARGE, 131072, SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"llama-4-maverick-17b-128e-instruct-fp8", 0.18, 0.60, NULL, SG_TIER_LARGE, 1048576,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA | SG_CAP_VISION},
    {"llama-4-scout-17b-16e-instruct", 0.08, 0.30, NULL, SG_TIER_MEDIUM, 1048576,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA | SG_CAP_VISION},
    {"deepseek-r1-0528", 0.54, 2.19, NULL, SG_TIER_LARGE, 163840, SG_CAP_JSON_SCHEMA},
    {"deepseek-v3-0324", 0.34, 0.88, NULL, SG_TIER_LARGE, 163840,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"qwen25-coder-32b-instruct", 0.07, 0.16, NULL, SG_TIER_MEDIUM, 32768,
     SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"qwen3-32b-fp8", 0.10, 0.30, NULL, SG_TIER_MEDIUM, 32768, SG_CAP_TOOLS | SG_CAP_JSON_SCHEMA},
    {"lfm-40b", 0.10, 0.20, NULL, SG_TIER_MEDIUM, 32768, SG_CAP_JSON_SCHEMA},
};

static const char *const keys[] = {"api_key"};

static void free_ext(void *ext)
{
    sg_openai_cfg_t *x = ext;
    if (!x) return;
    sg_secret_free(x->api_key);
    free(x);
}

/* OpenAI-compatible servers (vLLM, SGLang, TGI) serve the API under /v1. */
static const char *check_url(sg_cfg_ctx_t *c, const char *where, char *url)
{
    size_t n = strlen(url);
    if (!(n >= 3 && strcmp(url + n - 3, "/v1") == 0))
        sg_cfg_warn_at(c, where,
                       "the base URL does not end in /v1, where OpenAI-compatible servers (vLLM, "
                       "SGLang, TGI) serve the API: requests go to <base URL>/chat/completions "
                       "(e.g. http://<host>:8000/v1)");
    return NULL;
}

/* LAMBDA_API_KEY into x (validated). */
static void env_api_key(sg_cfg_ctx_t *c, sg_openai_cfg_t *x)
{
    const char *v = sg_cfg_env("LAMBDA_API_KEY");
    if (!v) return;
    const char *why = sg_cfg_check_token(v);
    if (why) {
        sg_cfg_error_at(c, "env:LAMBDA_API_KEY", "API key %s", why);
        return;
    }
    x->api_key = sg_xstrdup(v);
}

static void parse(sg_cfg_ctx_t *c, const cJSON *obj, sg_provider_cfg_t *p)
{
    sg_openai_cfg_t *x = sg_xcalloc(1, sizeof(*x));
    p->ext = x;
    int named = strcmp(p->name, NAME) == 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "api_key");
    if (it) {
        size_t old = sg_cfg_push_key(c, "api_key");
        int interp;
        char *key;
        if (sg_cfg_get_opt_str(c, it, &key, &interp) == 0 && key) {
            const char *why = sg_cfg_check_token(key);
            if (why) {
                sg_cfg_errf(c, "API key %s", why);
                sg_secret_free(key);
            } else {
                x->api_key = key;
            }
        }
        sg_cfg_pop(c, old);
    } else if (named) {
        env_api_key(c, x);
    }
    if (p->n_endpoints > 0 || cJSON_GetObjectItemCaseSensitive(obj, "base_url") ||
        cJSON_GetObjectItemCaseSensitive(obj, "endpoints"))
        return;
    if (named && sg_cfg_env("LAMBDA_BASE_URL"))
        sg_config_endpoints_from_list(c, p, "env:LAMBDA_BASE_URL", sg_cfg_env("LAMBDA_BASE_URL"));
    else if (named)
        sg_cfg_errf(c, "missing required key \"base_url\" (or set LAMBDA_BASE_URL)");
    else
        sg_cfg_errf(c, "missing required key \"base_url\"");
}

static void from_env(sg_cfg_ctx_t *c)
{
    if (sg_config_provider(c->cfg, NAME)) return;
    const char *urls = sg_cfg_env("LAMBDA_BASE_URL");
    if (!urls) {
        if (sg_cfg_env("LAMBDA_API_KEY"))
            sg_cfg_warn_at(c, "env:LAMBDA_API_KEY",
                           "LAMBDA_API_KEY is set but LAMBDA_BASE_URL is not set, so there is no "
                           "lambda provider and the key is unused: set LAMBDA_BASE_URL to the "
                           "OpenAI-compatible server (e.g. http://<instance>:8000/v1)");
        return;
    }
    sg_provider_cfg_t p = {0};
    p.name = sg_xstrdup(NAME);
    p.kind = sg_xstrdup("openai");
    p.ops = &sg_kind_openai;
    p.discover = 1;
    sg_openai_cfg_t *x = sg_xcalloc(1, sizeof(*x));
    p.ext = x;
    sg_config_endpoints_from_list(c, &p, "env:LAMBDA_BASE_URL", urls);
    env_api_key(c, x);
    sg_config_provider_add(c, &p, 0);
}

static void secrets(const sg_provider_cfg_t *p, sg_secrets_t *out)
{
    sg_secrets_add(out, sg_openai_cfg(p)->api_key);
}

static void describe(const sg_provider_cfg_t *p, const void *state, int64_t now, cJSON *obj)
{
    SG_UNUSED(state);
    SG_UNUSED(now);
    const char *key = sg_openai_cfg(p)->api_key;
    cJSON_AddStringToObject(obj, "auth", key && key[0] ? "api_key" : "none");
}

static void log_fields(const sg_provider_cfg_t *p, const void *state, int64_t now, sg_logline_t *l)
{
    SG_UNUSED(state);
    SG_UNUSED(now);
    const char *key = sg_openai_cfg(p)->api_key;
    sg_logline_bool(l, "api_key_set", key && key[0]);
}

static int build_probe(const sg_provider_cfg_t *p, void *state, const char *base_url,
                       const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                       size_t url_cap, sg_error_t *err)
{
    SG_UNUSED(state);
    int n = snprintf(url_buf, url_cap, "%s/models", base_url);
    if (n < 0 || (size_t)n >= url_cap) {
        sg_error_set(err, 500, "api_error", "provider_not_configured", "base URL too long");
        return -1;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    h = sg_header_bearer(h, sg_openai_cfg(p)->api_key);
    sg_upstream_get(out, url_buf, h, uo);
    return 0;
}

/* {"object":"list","data":[{"id":…},…]} → ["…",…] */
static cJSON *probe_models(const char *body, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsArray(data)) {
        cJSON_Delete(j);
        return NULL;
    }
    cJSON *ids = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, data)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        if (cJSON_IsString(id) && id->valuestring[0] && strlen(id->valuestring) < 200)
            cJSON_AddItemToArray(ids, cJSON_CreateString(id->valuestring));
    }
    cJSON_Delete(j);
    return ids;
}

const sg_provider_kind_t sg_kind_openai = {
    .kind = "openai",
    .default_name = NAME,
    .keys = keys,
    .n_keys = SG_ARRAY_LEN(keys),
    .builtin = lambda_models,
    .n_builtin = SG_ARRAY_LEN(lambda_models),
    .builtin_label = "(built-in Lambda price list)",
    .builtin_serves = 0,
    .parse = parse,
    .check_url = check_url,
    .from_env = from_env,
    .free_ext = free_ext,
    .secrets = secrets,
    .describe = describe,
    .log_fields = log_fields,
    .build_probe = build_probe,
    .probe_models = probe_models,
    .vt = &sg_provider_openai,
};
