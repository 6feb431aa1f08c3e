/* Provider adapters: a small vtable per upstream wire format. An adapter builds the upstream
 * request from the client's OpenAI request, decodes response bytes into OpenAI
 * chat.completion.chunk objects (streaming) or one chat.completion (non-streaming), extracts
 * usage, and maps upstream errors to OpenAI errors. Adding a provider is adding one file. */
#ifndef SOPHIA_PROVIDER_H
#define SOPHIA_PROVIDER_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "sophia/config.h"
#include "sophia/egress.h"

typedef struct sg_usage {
    long prompt_tokens;
    long completion_tokens;
    int known;    /* reported by the upstream (else estimated by the gateway) */
    int rejected; /* the upstream reported counts that are not whole numbers in
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

typedef struct sg_route {
    const sg_provider_cfg_t *provider;
    const sg_model_cfg_t *model;
    char public_name[256];      /* "lambda/hermes3-70b" */
    struct sg_sf_auth *sf_auth; /* kind "cortex": the provider's Snowflake credentials */
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
    /* Maps an upstream error response (status >= 400) of route's provider to an OpenAI error
     * whose message says where the problem lies (the gateway's credentials, its base URL, the
     * client's request). */
    void (*map_error)(const sg_route_t *route, long status, const char *body, size_t len,
                      sg_error_t *err);
} sg_provider_vt_t;

/* Returns the adapter for a provider kind ("openai"), or NULL. */
const sg_provider_vt_t *sg_provider_find(const char *kind);

extern const sg_provider_vt_t sg_provider_openai;
extern const sg_provider_vt_t sg_provider_cortex;

/* Fills out as a JSON POST to url (kept as a pointer: url must outlive the exchange start),
 * taking over headers and printing then deleting body, with the upstream timeouts. */
void sg_upstream_post_json(sg_exchange_req_t *out, const char *url, struct curl_slist *headers,
                           cJSON *body, const sg_upstream_opts_t *uo);

/* Appends "Authorization: Bearer <token>" to h (nothing when token is NULL or empty); the
 * temporary copy of the secret is wiped. Returns the list. */
struct curl_slist *sg_header_bearer(struct curl_slist *h, const char *token);

/* Extracts an OpenAI-shaped usage object into u: u->known set when it holds valid counts,
 * u->rejected when it holds counts out of range (they are then not used). An object without
 * counts (Cortex sends {} until the end) leaves u unchanged. */
void sg_usage_from_json(const cJSON *usage, sg_usage_t *u);

#endif
