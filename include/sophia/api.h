/* What every endpoint handler (src/api/) shares: the request's lifetime (reference counted;
 * tracked for shutdown), its record, its pipeline, the client hooks, strict body parsing, and
 * answers with the X-Sophia-* headers that explain the route. A handler embeds sg_api_t as the
 * first member of its own request object and supplies the few operations that differ. */
#ifndef SOPHIA_API_H
#define SOPHIA_API_H

#include <cjson/cJSON.h>

#include "sophia/buf.h"
#include "sophia/gateway.h"
#include "sophia/pipeline.h"
#include "sophia/provider.h"
#include "sophia/record.h"

typedef struct sg_api sg_api_t;

typedef struct sg_api_ops {
    /* Frees the handler's own parts and the object itself (the last reference went). */
    void (*free)(sg_api_t *a);
    /* The shutdown grace period is over: tell the client (the pipeline is already let go),
     * then call sg_api_finish(a, "shutdown"). */
    void (*shutdown)(sg_api_t *a, const sg_error_t *e);
    /* Called by sg_api_finish before the record goes out (settle estimates). May be NULL. */
    void (*settle)(sg_api_t *a);
    /* The body of an error answer, when not OpenAI's shape (Anthropic's). May be NULL. */
    void (*error_body)(const sg_api_t *a, const sg_error_t *e, struct sg_buf *out);
} sg_api_ops_t;

struct sg_api {
    sg_active_t active; /* first: the gateway's shutdown reaches the request through it */
    const sg_api_ops_t *ops;
    int refs;
    int finished;
    sg_gateway_t *gw;
    sg_gen_t *gen;
    sg_http_req_t *req; /* NULL once answered or gone */
    sg_pipeline_t *pipe;
    sg_record_t rec;
    cJSON *body;   /* the client's parsed request, freed with the request */
    int streaming; /* the SSE answer has begun */
};

/* Starts a request for req on path (one reference, tracked for shutdown). */
void sg_api_init(sg_api_t *a, const sg_api_ops_t *ops, sg_gateway_t *gw, sg_http_req_t *req,
                 const char *path);
void sg_api_ref(sg_api_t *a);
void sg_api_unref(sg_api_t *a);
/* Registers the client hooks: when the client goes away the request ends ("client_closed");
 * when it drains, the pipeline resumes. */
void sg_api_watch(sg_api_t *a);
/* Notes the result r of a write to the client: -1 means it is gone. Returns r. */
int sg_api_io(sg_api_t *a, int r);
/* The X-Sophia-Provider / -Model / -Route lines for the route so far, then extra. */
void sg_api_headers(const sg_api_t *a, char *out, size_t cap, const char *extra);
/* Answers an OpenAI-shaped error (with the route headers and extra lines) and records it. */
void sg_api_respond_error(sg_api_t *a, const sg_error_t *e, const char *extra);
/* Answers 200 with a JSON body (and the route headers). */
void sg_api_respond_json(sg_api_t *a, const char *json, size_t len);
/* The SSE answer: begun once (200, the route headers, no caching or proxy buffering);
 * events written whole ("event: <type>" and one data line of json; ev is scratch space); then
 * ended. Each returns 0, or -1 when the client is gone (nothing more can be sent). */
int sg_api_stream_begin(sg_api_t *a);
int sg_api_stream_event(sg_api_t *a, struct sg_buf *ev, const char *type, const char *json);
int sg_api_stream_write(sg_api_t *a, const char *text, size_t len);
void sg_api_stream_end(sg_api_t *a);
/* Ends the request: the pipeline is let go, the record goes to the observers, the caller's
 * reference is dropped. Nothing may touch the request after this. */
void sg_api_finish(sg_api_t *a, const char *outcome);
/* The client's body, strict JSON (sophia/json.h), or NULL with a 400 in e. */
cJSON *sg_api_parse(const sg_http_req_t *req, sg_error_t *e);
/* Estimated tokens of a text: about 4 characters each. */
long sg_api_estimate_tokens(size_t chars);
/* Estimated prompt tokens of chat messages: their text (string or parts) plus framing. */
long sg_api_estimate_messages(const cJSON *messages);

#endif
