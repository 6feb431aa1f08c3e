/* The completion pipeline: the upstream side of one request, and nothing of the client's
 * connection. Given a plan (candidate routes, sophia/route.h) it makes attempts: picks an
 * endpoint (breakers, balancing), has the provider adapter build the upstream request, runs it
 * as an exchange, and decodes the answer into OpenAI chat.completion chunks (streaming) or one
 * chat.completion (not streaming), which it hands to its sink (the endpoint handler).
 *
 * Until the first chunk reaches the sink, a failed attempt (connection error, timeout, 429,
 * 5xx, an unusable answer) moves on: to another endpoint of the same provider, then to the next
 * candidate (fallback), or, for a throttled or overloaded single endpoint, to the same one after
 * a backoff (jittered, exponential, at least the upstream's Retry-After), within
 * upstream.max_retries extra attempts and the request's upstream.deadline_ms. After the first
 * chunk, a failure ends the stream (the sink's fail).
 *
 * Lifetime: the handler holds one reference from sg_pipeline_start to sg_pipeline_release.
 * Sink callbacks come from the loop (never from inside sg_pipeline_start or
 * sg_pipeline_release; sg_pipeline_resume may deliver chunks before it returns). After done or
 * fail, no callback follows. The handler may release the pipeline from inside a callback. */
#ifndef SOPHIA_PIPELINE_H
#define SOPHIA_PIPELINE_H

#include <cjson/cJSON.h>

#include "sophia/gateway.h"
#include "sophia/provider.h"
#include "sophia/record.h"
#include "sophia/route.h"

typedef struct sg_pipeline sg_pipeline_t;

/* What the request asks of the upstream. */
typedef enum {
    SG_OP_CHAT = 0, /* a chat completion (streamed or not) */
    SG_OP_EMBED,    /* embeddings (never streamed) */
    SG_OP_MESSAGES, /* an Anthropic Messages request forwarded as it is, to routes whose
                       adapter says messages_native; each streamed event reaches raw_chunk as
                       its SSE text, and done gets the "message" object */
} sg_op_t;

typedef struct sg_pipeline_sink {
    /* Streaming output, as sg_decode_sink_t's chunk and raw_chunk (raw_chunk may be NULL).
     * Return 0, or non-zero to stop (the client is gone). */
    int (*chunk)(void *ud, cJSON *chunk, const char *raw, size_t raw_len);
    int (*raw_chunk)(void *ud, const char *raw, size_t len, int has_content, int has_finish);
    /* Usage the upstream reported (usage->rejected: out of range, not to be used). */
    void (*usage)(void *ud, const sg_usage_t *u);
    /* Success. Not streaming: resp is the chat.completion (the pipeline frees it after the
     * call), body/len the upstream's bytes when they may be forwarded as they are (else NULL).
     * Streaming: resp is NULL (the stream ended normally). */
    void (*done)(void *ud, cJSON *resp, const char *body, size_t len);
    /* Failure (e redacted). headers: NULL or "Name: value\r\n" lines for the client: the last
     * upstream's Retry-After and x-ratelimit-* and, when retrying is pointless,
     * x-should-retry: false. */
    void (*fail)(void *ud, const sg_error_t *e, const char *headers);
    /* 1 when the client cannot take more output now (the transfer pauses until
     * sg_pipeline_resume). */
    int (*congested)(void *ud);
    void *ud;
    /* 1: done may get resp NULL with the upstream's body (a chat completion the adapter has
     * checked and taken the usage from); the sink parses it only if it needs the object. */
    int lazy_response;
} sg_pipeline_sink_t;

/* Starts the first attempt of plan (copied: the pipeline keeps its routes) for the client's
 * request body (borrowed: it must outlive the pipeline): a chat request (OpenAI shape) for
 * SG_OP_CHAT, an embeddings request for SG_OP_EMBED (whose answer comes to done as an OpenAI
 * embeddings list). rec is filled as attempts run (route, provider, endpoint, attempts, statuses,
 * the chain tried in why, ttfb) until release. Returns the pipeline, or NULL with err when no
 * attempt could start (no sink callback then). */
sg_pipeline_t *sg_pipeline_start(sg_gateway_t *gw, sg_gen_t *gen, const sg_plan_t *plan, sg_op_t op,
                                 const cJSON *body, int stream, sg_record_t *rec,
                                 const sg_pipeline_sink_t *sink, sg_error_t *err);
/* The client drained: resumes a paused transfer (may deliver chunks before returning). */
void sg_pipeline_resume(sg_pipeline_t *p);
/* The handler is done with p: upstream work stops now (in this loop iteration) and no
 * callback follows. */
void sg_pipeline_release(sg_pipeline_t *p);
/* The route of the attempt running (or the last one). */
const sg_route_t *sg_pipeline_route(const sg_pipeline_t *p);
/* 1 once the first chunk reached the sink (no fallback any more). */
int sg_pipeline_committed(const sg_pipeline_t *p);

#endif
