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
     * then call sg_api_finish(a, "shutdown"). NULL: sg_api_fail's way (error answer, or
     * stream_error once streaming). */
    void (*shutdown)(sg_api_t *a, const sg_error_t *e);
    /* Called by sg_api_finish before the record goes out (settle estimates). May be NULL. */
    void (*settle)(sg_api_t *a);
    /* The body of an error answer, when not OpenAI's shape (Anthropic's). May be NULL. */
    void (*error_body)(const sg_api_t *a, const sg_error_t *e, struct sg_buf *out);
    /* Ends a begun SSE answer with the protocol's error event(s). NULL when never streamed. */
    void (*stream_error)(sg_api_t *a, const sg_error_t *e);
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
    cJSON *body;        /* the client's parsed request, freed with the request */
    int streaming;      /* the SSE answer has begun */
    int stream_counted; /* counted in gw->streams_active (sg_api_stream_counted) */
    int usage_bad;      /* the upstream reported usage out of range (warned once) */
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
/* The X-Sophia-Provider / -Model / -Route lines for the route so far, admission's
 * Retry-After and x-ratelimit-* lines, X-Sophia-Cost-USD on a whole 200 answer, then extra. */
void sg_api_headers(const sg_api_t *a, char *out, size_t cap, const char *extra);
/* Adds "cost_usd" (the record's cost so far, from its usage and prices) to a usage object. */
void sg_api_usage_cost(sg_api_t *a, cJSON *usage);
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
/* Counts the request's SSE answer in gw->streams_active (once, until sg_api_finish); for a
 * handler that begins its answer itself (sg_api_stream_begin counts it). */
void sg_api_stream_counted(sg_api_t *a);
/* A request that failed (the pipeline sink's fail, or shutdown): a client already gone
 * (499) ends it as "client_closed"; otherwise the error is recorded and answered (an error
 * answer, or stream_error once streaming) and the request ends with outcome (NULL: from the
 * error's code: "upstream_timeout", "upstream_truncated" or "upstream_error"). */
void sg_api_fail(sg_api_t *a, const sg_error_t *e, const char *headers, const char *outcome);
/* Pipeline sink callbacks for a handler whose ud is its sg_api_t: fail is sg_api_fail;
 * congested says whether the client's queue is full. */
void sg_api_sink_fail(void *ud, const sg_error_t *e, const char *headers);
/* The pipeline sink's usage: recorded; usage that cannot be true is never used (one warning,
 * the tokens are then estimated). */
void sg_api_sink_usage(void *ud, const sg_usage_t *u);
int sg_api_sink_congested(void *ud);
/* Ends the request: the pipeline is let go, the record goes to the observers, the caller's
 * reference is dropped. Nothing may touch the request after this. */
void sg_api_finish(sg_api_t *a, const char *outcome);
/* The client's body, strict JSON (sophia/json.h), or NULL with a 400 in e. */
cJSON *sg_api_parse(const sg_http_req_t *req, sg_error_t *e);
/* What a protocol that translates chat chunks does with their parts. */
typedef struct sg_chunk_visitor {
    int (*text)(void *ud, const char *text);       /* a non-empty content delta */
    int (*tool)(void *ud, const cJSON *tool_call); /* a tool_calls[] delta */
} sg_chunk_visitor_t;
/* Walks a chat.completion.chunk's choices: content and tool-call deltas go to v (the first one
 * sets the record's time to first token; content counts in *content_chunks), a finish_reason
 * is copied into finish. Returns 0, or 1 once a callback returned non-zero. */
int sg_api_chunk_each(sg_api_t *a, const cJSON *chunk, const sg_chunk_visitor_t *v, void *ud,
                      char *finish, size_t cap, long *content_chunks);
/* Estimated tokens of a text: about 4 characters each. */
long sg_api_estimate_tokens(size_t chars);
/* Estimated prompt tokens of chat messages: their text (string or parts) plus framing. */
long sg_api_estimate_messages(const cJSON *messages);

#endif
