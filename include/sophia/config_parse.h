/* The configuration loader's machinery, for the modules that parse their own sections (each
 * provider kind parses its provider objects): JSON paths in messages, ${ENV} / ${file:PATH}
 * interpolation, typed reads that report at the current path, unknown-key detection, the
 * registry of public model names, warnings. Used only while sg_config_load runs. */
#ifndef SOPHIA_CONFIG_PARSE_H
#define SOPHIA_CONFIG_PARSE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "sophia/buf.h"
#include "sophia/config.h"

typedef struct sg_cfg_name {
    const char *name; /* borrowed from the config */
    char *path;
    int secret; /* came from interpolation: never echo it */
} sg_cfg_name_t;

typedef struct sg_cfg_ctx {
    sg_config_t *cfg;
    sg_config_errors_t *errs;
    sg_buf_t path; /* current JSON path, "$…" */
    sg_cfg_name_t *names;
    size_t n_names, cap_names;
} sg_cfg_ctx_t;

/* ---- paths and messages ---------------------------------------------------------------- */

const char *sg_cfg_path(const sg_cfg_ctx_t *c);
/* Appends .key (or ["key"]) / [i] to the path; returns the length to restore with pop. */
size_t sg_cfg_push_key(sg_cfg_ctx_t *c, const char *key);
size_t sg_cfg_push_index(sg_cfg_ctx_t *c, size_t i);
void sg_cfg_pop(sg_cfg_ctx_t *c, size_t old);
/* A problem at the current path / at path ("env:NAME" for an environment variable). */
void sg_cfg_errf(sg_cfg_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sg_cfg_error_at(sg_cfg_ctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A warning (works, but is probably a mistake) at path. */
void sg_cfg_warn_at(sg_cfg_ctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- values ---------------------------------------------------------------------------- */

/* "a string", "an object", … */
const char *sg_cfg_type_name(const cJSON *it);
/* Reports and returns -1 unless it is an object. */
int sg_cfg_expect_object(sg_cfg_ctx_t *c, const cJSON *it);
/* Reports unknown and repeated keys of obj. Keys in foreign (which belong elsewhere, e.g. to
 * another provider kind) are reported with foreign_msg instead of "unknown key". */
void sg_cfg_check_keys(sg_cfg_ctx_t *c, const cJSON *obj, const char *const *allowed, size_t n,
                       const char *const *foreign, size_t nf, const char *foreign_msg);
/* A string with ${…} expanded. Returns 0 with *out (caller frees) and *interp (a variable or
 * file was substituted: never echo the value), or -1 after reporting. */
int sg_cfg_get_str(sg_cfg_ctx_t *c, const cJSON *it, char **out, int *interp);
/* A string or null (null and "" leave *out NULL). Same returns. */
int sg_cfg_get_opt_str(sg_cfg_ctx_t *c, const cJSON *it, char **out, int *interp);
/* An integer in [min, 2^53). Returns 0, or -1 after reporting. */
int sg_cfg_get_uint(sg_cfg_ctx_t *c, const cJSON *it, uint64_t min, uint64_t *out);
/* A number in [min, max]. Same returns. */
int sg_cfg_get_num(sg_cfg_ctx_t *c, const cJSON *it, double min, double max, double *out);
/* A boolean. Same returns. */
int sg_cfg_get_bool(sg_cfg_ctx_t *c, const cJSON *it, int *out);
/* A price in USD per 1M tokens (>= 0). Same returns. */
int sg_cfg_get_price(sg_cfg_ctx_t *c, const cJSON *it, double *out);
/* An environment variable, or NULL when unset or empty. */
const char *sg_cfg_env(const char *name);

/* ---- checks (return NULL, or the reason: never containing the value) -------------------- */

/* http:// or https:// URL with a host; strips trailing '/' in place. */
const char *sg_cfg_check_base_url(char *url);
/* No control characters or line breaks (keys, user names). */
const char *sg_cfg_check_token(const char *s);

/* ---- public model names (unique across the configuration) ------------------------------ */

/* The place a name was first used, or NULL. */
const char *sg_cfg_name_used(const sg_cfg_ctx_t *c, const char *name);
/* Registers a name found at the current path; reports a duplicate. */
void sg_cfg_name_register(sg_cfg_ctx_t *c, const char *name, int secret);
/* Registers a name at a label (a built-in catalog). */
void sg_cfg_name_add(sg_cfg_ctx_t *c, const char *name, const char *label);

/* ---- sections ---------------------------------------------------------------------------- */

/* A numeric setting at offset off of sg_config_t (size_t when is_size, else uint64_t), its
 * bounds and its default (the one place that defines it). */
typedef struct sg_cfg_num {
    const char *key;
    size_t off;
    int is_size;
    uint64_t min, max; /* max 0: no upper bound */
    uint64_t def;
} sg_cfg_num_t;

#define SG_CFG_U64(k, f, lo, hi, d)                                                                \
    {                                                                                              \
        k, offsetof(sg_config_t, f), 0, lo, hi, d                                                  \
    }
#define SG_CFG_SIZE(k, f, lo, hi, d)                                                               \
    {                                                                                              \
        k, offsetof(sg_config_t, f), 1, lo, hi, d                                                  \
    }

/* Sets every field of f to its default. */
void sg_cfg_num_defaults(sg_config_t *cfg, const sg_cfg_num_t *f, size_t n);

/* Reads the numeric fields of obj (an object at the current path), reporting unknown keys
 * (extra, NULL-terminated, lists other keys the caller parses itself). */
void sg_cfg_parse_numbers(sg_cfg_ctx_t *c, const cJSON *obj, const sg_cfg_num_t *f, size_t n,
                          const char *const *extra);

/* A top-level section that a module owns ("routing", "breaker", "health"): either numbers
 * only (fields: defaults and parsing come from the table) or its own functions. */
typedef struct sg_config_section {
    const char *key;
    const sg_cfg_num_t *fields; /* may be NULL */
    size_t n_fields;
    void (*defaults)(sg_config_t *cfg);               /* may be NULL */
    void (*parse)(sg_cfg_ctx_t *c, const cJSON *obj); /* NULL: the fields; obj at its path */
    void (*check)(sg_cfg_ctx_t *c);                   /* after everything is loaded; may be NULL */
    void (*free)(sg_config_t *cfg);                   /* may be NULL */
    int any_type; /* parse gets the value whatever its type (an array, a boolean, null) */
} sg_config_section_t;

/* Every module section, NULL-terminated (src/policy/sections.c). */
extern const sg_config_section_t *const sg_config_sections[];

/* ---- providers --------------------------------------------------------------------------- */

/* Appends an endpoint (url taken over, already checked) to p. */
void sg_config_endpoint_add(sg_provider_cfg_t *p, char *url, unsigned weight);
/* Adds the endpoints of a comma-separated list of base URLs (an environment variable), each
 * checked like a configured one; problems reported at where. */
void sg_config_endpoints_from_list(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, const char *where,
                                   const char *list);
/* Appends a provider built from the environment (taken over; p->ops set); builtin: give it its
 * kind's built-in models. */
void sg_config_provider_add(sg_cfg_ctx_t *c, sg_provider_cfg_t *p, int builtin);

#endif
