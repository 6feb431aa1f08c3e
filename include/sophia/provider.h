/* Provider adapters: a small vtable per upstream wire format. An adapter builds the upstream
 * request from the client's OpenAI request, decodes response bytes into OpenAI
 * chat.completion.chunk objects (streaming) or one chat.completion (non-streaming), extracts
 * usage, and maps upstream errors to OpenAI errors. Adding a provider is adding one file. */
#ifndef SOPHIA_PROVIDER_H
#define SOPHIA_PROVIDER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "sophia/config.h"
#include "sophia/egress.h"

typedef struct sg_usage {
    long prompt_tokens;
    long completion_tokens;
    long cached_tokens; /* of prompt_tokens, served from a prompt cache (when reported) */
    long guard_tokens;  /* Cortex Guard's tokens (when reported), billed beside the prompt */
    int known;          /* reported by the upstream (else estimated by the gateway) */
    int rejected;       /* the upstream reported counts that are not whole numbers in
                           [0, SG_TOKENS_MAX]: ignored (known stays 0), the gateway estimates */
} sg_usage_t;

/* The largest token count accepted from an upstream for one request. */
#define SG_TOKENS_MAX 1e9

/* An OpenAI-style error to send the client. */
typedef struct sg_error {
    int status;
    const char *type; /* static string: "invalid_request_error", "api_error", … */
    char code[64];    /* "" for null */
    char message[512];
} sg_error_t;

void sg_error_set(sg_error_t *e, int status, const char *type, const char *code, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

/* What a decoder reports while decoding a response. */
typedef struct sg_decode_sink {
    /* An OpenAI chat.completion.chunk (streaming). Borrowed: valid during the call. raw is
     * the chunk's JSON text when the upstream sent it in OpenAI form (the sink may forward it
     * as it is when it changes nothing), else NULL. Returns 0, or non-zero to stop decoding
     * (the client is gone). */
    int (*chunk)(void *ud, cJSON *chunk, const char *raw, size_t raw_len);
    /* Usage reported by the upstream. */
    void (*usage)(void *ud, const sg_usage_t *u);
    /* The upstream ended the stream normally ([DONE] or its equivalent). */
    void (*end)(void *ud);
    /* The upstream reported an error inside a 200 stream. */
    void (*error)(void *ud, const sg_error_t *e);
    void *ud;
    /* Optional fast path: a chunk already in OpenAI form that carries no usage and no error,
     * to forward as it is (raw is its JSON text). has_content: a non-empty content or
     * tool_calls delta; has_finish: a finish_reason. Same return as chunk. When NULL, every
     * chunk goes through chunk. */
    int (*raw_chunk)(void *ud, const char *raw, size_t len, int has_content, int has_finish);
} sg_decode_sink_t;

/* Where one attempt goes: a provider, one of its models and one of its endpoints. */
typedef struct sg_route {
    const sg_provider_cfg_t *provider;
    const sg_model_cfg_t *model;
    char public_name[256]; /* "lambda/hermes3-70b" */
    void *state;           /* the provider's runtime state (kind "cortex": its credentials) */
    const char *base_url;  /* the endpoint this attempt uses */
    struct sg_endpoint *endpoint; /* its runtime state (sophia/endpoint.h), or NULL */
    /* A model the catalog does not list (passed to the upstream as named): model points here. */
    sg_model_cfg_t passthrough;
    char passthrough_id[256];
    int unlisted; /* passed through as the client named it: neither in the catalog nor
                     discovered (so never a metric label) */
} sg_route_t;

typedef struct sg_upstream_opts {
    uint64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, total_timeout_ms;
} sg_upstream_opts_t;

typedef struct sg_provider_vt {
    const char *kind;
    /* 1 when a 2xx non-streaming body is already an OpenAI chat.completion and can be
     * forwarded byte for byte once convert_response accepted it. */
    int passthrough_response;
    /* Builds the upstream request for a chat completion. client is the client's request
     * (validated: has model and messages); stream says whether the client streams. Fills out
     * (url/headers/body owned by out; the url is written into url_buf) or returns -1 with
     * err set. */
    int (*build_chat)(const sg_route_t *route, const cJSON *client, int stream,
                      const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                      size_t url_cap, sg_error_t *err);
    /* Creates a streaming decoder (owned by the caller; free with decoder_free). */
    void *(*decoder_new)(const sg_route_t *route, const sg_decode_sink_t *sink);
    /* Feeds response body bytes of a 2xx streaming response. Returns 0, or -1 when decoding
     * stopped (sink said stop, or the upstream sent something undecodable: error reported to
     * the sink). */
    int (*decode)(void *dec, const char *data, size_t len);
    /* The upstream closed the stream; flushes what is pending. */
    int (*decode_finish)(void *dec);
    void (*decoder_free)(void *dec);
    /* Turns a complete 2xx non-streaming body into an OpenAI chat.completion object
     * (returned, caller frees), filling usage. NULL with err set when the body is unusable. */
    cJSON *(*convert_response)(const sg_route_t *route, const char *body, size_t len,
                               sg_usage_t *usage, sg_error_t *err);
    /* Optional, with passthrough_response: checks a 2xx non-streaming body (strictly valid
     * JSON, a chat completion) and fills usage without building the object; 0, or -1 with err.
     * The pipeline uses it instead of convert_response when the sink parses lazily. */
    int (*scan_response)(const sg_route_t *route, const char *body, size_t len, sg_usage_t *usage,
                         sg_error_t *err);
    /* Embeddings (NULL when the kind has none): builds the upstream request for the client's
     * OpenAI embeddings request (validated: model, input, encoding_format, dimensions), as
     * build_chat does; and turns a 2xx answer into an OpenAI embeddings list honouring the
     * client's encoding_format and dimensions (returned, caller frees; usage filled), or NULL
     * with err. */
    int (*build_embed)(const sg_route_t *route, const cJSON *client, const sg_upstream_opts_t *uo,
                       sg_exchange_req_t *out, char *url_buf, size_t url_cap, sg_error_t *err);
    cJSON *(*convert_embed)(const sg_route_t *route, const cJSON *client, const char *body,
                            size_t len, sg_usage_t *usage, sg_error_t *err);
    /* Anthropic Messages as they are (NULL when the kind has none): messages_native says
     * whether route's model takes a Messages request unchanged; build_messages builds it (the
     * client's Messages request, with the upstream's model name), as build_chat does. The
     * answer is decoded by sg_wire_anthropic. */
    int (*messages_native)(const sg_route_t *route);
    int (*build_messages)(const sg_route_t *route, const cJSON *client, int stream,
                          const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                          size_t url_cap, sg_error_t *err);
    /* Maps an upstream error response (status >= 400) of route's provider to an OpenAI error
     * whose message says where the problem lies (the gateway's credentials, its base URL, the
     * client's request). */
    void (*map_error)(const sg_route_t *route, long status, const char *body, size_t len,
                      sg_error_t *err);
} sg_provider_vt_t;

/* ---- provider kinds ----------------------------------------------------------------------
 * Everything the gateway knows about one kind of provider: its configuration (parsed with the
 * loader's machinery, sophia/config_parse.h, into sg_provider_cfg_t.ext), its environment
 * variables, its built-in models, its runtime state (credentials), what of it is secret, how
 * it describes itself, how its endpoints are probed, and its wire adapter. Adding a provider
 * is adding one of these under src/providers/ and listing it in src/providers/registry.c. */

struct sg_cfg_ctx;
struct sg_secrets;
struct sg_logline;

/* A built-in model: defaults only, every value overridable by configuration. */
typedef struct sg_builtin_model {
    const char *id;
    double price_in, price_out; /* USD per 1M tokens */
    const char *alias;          /* or NULL */
    int tier;                   /* sg_tier_t */
    long context_window;
    unsigned caps; /* SG_CAP_* */
} sg_builtin_model_t;

typedef struct sg_provider_kind {
    const char *kind;         /* "openai" */
    const char *default_name; /* a provider of this name is of this kind unless it says */
    /* The provider-object keys of this kind, besides the common ones (kind, base_url,
     * endpoints, models, discover, pinned), and how other kinds report them. */
    const char *const *keys;
    size_t n_keys;
    const char *foreign_msg;
    /* Model keys of this kind besides the common ones (NULL when none). */
    const char *const *model_keys;
    size_t n_model_keys;
    /* Built-in models. builtin_serves: 1 when they are the provider's models when it lists
     * none; 0 when they are only a table of prices, tiers and aliases for the models its
     * endpoints serve. */
    const sg_builtin_model_t *builtin;
    size_t n_builtin;
    const char *builtin_label; /* "(built-in Lambda catalog)" */
    int builtin_serves;

    /* Parses the kind's settings of provider object obj (at the current path) into p->ext;
     * a provider named default_name also takes what obj leaves out from the environment.
     * May set p->endpoints (when derived, as Cortex's host from the account). */
    void (*parse)(struct sg_cfg_ctx *c, const cJSON *obj, sg_provider_cfg_t *p);
    /* Parses the kind's model keys (at the model's path). May be NULL. */
    void (*parse_model)(struct sg_cfg_ctx *c, const cJSON *obj, sg_model_cfg_t *m);
    /* Checks a configured base URL (may warn at where). Returns NULL, or why it is refused. */
    const char *(*check_url)(struct sg_cfg_ctx *c, const char *where, char *url);
    /* After the file: creates this kind's provider from the environment when the file has
     * none, and reports environment settings that cannot work. */
    void (*from_env)(struct sg_cfg_ctx *c);
    /* Frees p->ext (wiping secrets). */
    void (*free_ext)(void *ext);

    /* Runtime state of a provider for one configuration generation (credentials). NULL when
     * the kind has none; returns NULL with err when the settings are unusable. */
    void *(*state_new)(const sg_provider_cfg_t *p, int64_t now, char *err, size_t errlen);
    void (*state_free)(void *state);
    /* Adds every secret value of the settings (for redaction). */
    void (*secrets)(const sg_provider_cfg_t *p, struct sg_secrets *out);
    /* A secret that changes at run time (a key-pair JWT in use), or NULL. */
    const char *(*live_secret)(const void *state);
    /* Adds the provider's status (auth method, expiry…; never a secret) to obj. */
    void (*describe)(const sg_provider_cfg_t *p, const void *state, int64_t now, cJSON *obj);
    /* Adds fields to the start-up log line of the provider. */
    void (*log_fields)(const sg_provider_cfg_t *p, const void *state, int64_t now,
                       struct sg_logline *l);

    /* The request that lists an endpoint's models (health check and discovery). Returns 0
     * with out filled (as build_chat), or -1 with err. */
    int (*build_probe)(const sg_provider_cfg_t *p, void *state, const char *base_url,
                       const sg_upstream_opts_t *uo, sg_exchange_req_t *out, char *url_buf,
                       size_t url_cap, sg_error_t *err);
    /* Reads the model ids from a 2xx probe answer. Returns a cJSON array of strings (caller
     * deletes), or NULL when the body is not a model list. */
    cJSON *(*probe_models)(const char *body, size_t len);

    const sg_provider_vt_t *vt; /* the wire adapter */
} sg_provider_kind_t;

/* The kind named kind ("openai", "cortex"), or NULL. */
const sg_provider_kind_t *sg_provider_kind_find(const char *kind);
/* The kind a provider named name has when it does not say (its default_name), or NULL. */
const sg_provider_kind_t *sg_provider_kind_for_name(const char *name);
/* Every kind, NULL-terminated. */
extern const sg_provider_kind_t *const sg_provider_kinds[];

/* Returns the adapter for a provider kind ("openai"), or NULL. */
const sg_provider_vt_t *sg_provider_find(const char *kind);

extern const sg_provider_vt_t sg_provider_openai;
extern const sg_provider_vt_t sg_provider_cortex;

/* The Anthropic Messages wire format (src/providers/anthropic.c), for upstreams that take a
 * Messages request as it is: decoder_new/decode/decode_finish/decoder_free (each event goes to
 * the sink's raw_chunk, required, as its SSE text) and convert_response (a "message" object,
 * forwardable as it is). It builds no request and maps no error statuses (the provider's
 * adapter does both). */
extern const sg_provider_vt_t sg_wire_anthropic;
/* Anthropic's error type for an HTTP status ("overloaded_error" for 503 and 529), and the
 * status for an error type (502 when unknown). */
const char *sg_anthropic_error_type(int status);
int sg_anthropic_error_status(const char *type);

/* Fills out as a JSON POST to url (kept as a pointer: url must outlive the exchange start),
 * taking over headers and printing then deleting body, with the upstream timeouts. */
void sg_upstream_post_json(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                           cJSON *body, const sg_upstream_opts_t *uo);

/* Fills out as a GET of url (kept as a pointer), taking over headers. */
void sg_upstream_get(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                     const sg_upstream_opts_t *uo);

/* Appends "Authorization: Bearer <token>" to h (nothing when token is NULL or empty); the
 * temporary copy of the secret is wiped. Returns the list. */
struct curl_slist *sg_header_bearer(struct curl_slist *h, const char *token);

/* Extracts an OpenAI-shaped usage object into u: u->known set when it holds valid counts,
 * u->rejected when it holds counts out of range (they are then not used). An object without
 * counts (Cortex sends {} until the end) leaves u unchanged. */
void sg_usage_from_json(const cJSON *usage, sg_usage_t *u);

#endif
