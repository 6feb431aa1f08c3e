/* The completion pipeline: attempts, fallbacks, retries and decoding for one request (see
 * sophia/pipeline.h). */
#include "sophia/pipeline.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "sophia/access.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/log.h"
#include "sophia/redact.h"

#define UPSTREAM_BODY_MAX (16 * 1024 * 1024) /* a non-streamed answer */
#define UPSTREAM_ERROR_MAX (64 * 1024)       /* error bodies kept for mapping */
#define RETRY_MAX_MS 30000                   /* longest backoff (Snowflake's client: 30 s) */
#define MAX_ENDPOINTS 64
#define HELD_MAX 4 /* contentless chunks held back until the first content */

/* The backoff timer: its own allocation because the handle closes asynchronously, possibly
 * after the pipeline is gone. */
typedef struct retry_timer {
    uv_timer_t timer;
    sg_pipeline_t *p; /* NULL once the pipeline let go of it */
} retry_timer_t;

struct sg_pipeline {
    int refs;
    int released; /* the handler let go: no callbacks */
    int finished; /* done or fail was delivered */
    sg_gateway_t *gw;
    sg_gen_t *gen;
    sg_plan_t *plan; /* a copy of the handler's, cut to its routes */
    size_t ci;       /* the candidate being tried */
    unsigned char tried[SG_PLAN_MAX][MAX_ENDPOINTS];
    const cJSON *body;
    sg_op_t op;
    int stream;
    sg_record_t *rec;
    sg_pipeline_sink_t sink;
    const sg_provider_vt_t *vt;   /* the provider's adapter: builds, maps errors */
    const sg_provider_vt_t *wire; /* decodes the answer: vt, or the Messages wire format */
    sg_route_t *route;            /* &plan.routes[ci] */
    sg_exchange_t *x;
    sg_endpoint_t *ep; /* the running attempt's endpoint (its outcome not yet counted) */
    uint64_t attempt_ns;
    void *dec;
    long status;
    int committed; /* a chunk with content reached the sink: no fallback any more */
    /* Chunks without content (the role chunk) wait for the first content, so that an attempt
     * that fails before any content can still fall back without the client seeing it. */
    struct held {
        cJSON *chunk; /* NULL: raw only */
        char *raw;
        size_t len;
    } held[HELD_MAX];
    int n_held;
    int upstream_end, finish_seen;
    int sink_stopped; /* the sink asked to stop */
    int have_err;     /* err holds the decoder's or the body's error */
    sg_error_t err;
    sg_buf_t body_buf;
    int attempts;
    uint64_t deadline_ms;
    char retry_after[16];
    char *rl_headers; /* the last answer's Retry-After and x-ratelimit-* lines, or NULL */
    retry_timer_t *retry;
    int admitting;     /* queued by admission: the timer admits again, then attempts */
    uint64_t start_ms; /* when the pipeline started (admission's queue wait counts from it) */
};

static void drop_held(sg_pipeline_t *p);

static void p_ref(sg_pipeline_t *p)
{
    p->refs++;
}

/* Pipelines come and go with requests; a few are kept for reuse (loop thread only). */
static sg_pool_t pipe_pool = SG_POOL_INIT(sizeof(sg_pipeline_t), 64);

static void p_unref(sg_pipeline_t *p)
{
    SG_ASSERT(p->refs > 0);
    if (--p->refs > 0) return;
    SG_ASSERT(!p->x && !p->ep);
    if (p->dec) p->wire->decoder_free(p->dec);
    drop_held(p);
    sg_buf_dispose(&p->body_buf);
    sg_gen_unref(p->gen);
    free(p->plan);
    free(p->rl_headers);
    sg_pool_put(&pipe_pool, p);
}

static void on_retry_closed(uv_handle_t *h)
{
    free(h->data);
}

static void retry_drop(sg_pipeline_t *p)
{
    if (!p->retry) return;
    p->retry->p = NULL;
    uv_timer_stop(&p->retry->timer);
    uv_close((uv_handle_t *)&p->retry->timer, on_retry_closed);
    p->retry = NULL;
}

/* Counts the running attempt's outcome on its endpoint (once), and its exchange's time in the
 * record's upstream_ns. */
static void endpoint_done(sg_pipeline_t *p, int ok)
{
    if (!p->ep) return;
    sg_endpoint_t *ep = p->ep;
    p->ep = NULL;
    p->rec->upstream_ns += sg_now_ns() - p->attempt_ns;
    double ttfb = p->rec->ttfb_ns && ok ? (double)(p->rec->ttfb_ns - p->attempt_ns) / 1e6 : -1;
    sg_endpoint_end(ep, &p->gen->cfg.breaker, ok, ttfb, sg_now_ms());
}

static void drop_held(sg_pipeline_t *p)
{
    for (int i = 0; i < p->n_held; i++) {
        cJSON_Delete(p->held[i].chunk);
        free(p->held[i].raw);
    }
    p->n_held = 0;
}

static void drop_decoder(sg_pipeline_t *p)
{
    if (p->dec) p->wire->decoder_free(p->dec);
    p->dec = NULL;
}

/* ---- the end ----------------------------------------------------------------------------- */

static int status_retryable(long status)
{
    return status == 408 || status == 409 || status == 429 || status >= 500;
}

static void finish_fail(sg_pipeline_t *p, const sg_error_t *in, long status)
{
    if (p->finished || p->released) return;
    p->finished = 1;
    sg_error_t e = *in;
    sg_gen_redact(p->gen, p->route, e.message, sizeof(e.message));
    sg_gen_redact(p->gen, p->route, e.code, sizeof(e.code));
    char headers[1024];
    size_t n = 0;
    headers[0] = '\0';
    if (status == 429 || status == 503)
        n += (size_t)snprintf(headers, sizeof(headers), "%s", p->rl_headers ? p->rl_headers : "");
    /* The gateway did the retrying: an SDK retrying again only multiplies the attempts. */
    if (status_retryable(e.status) && n < sizeof(headers))
        snprintf(headers + n, sizeof(headers) - n, "x-should-retry: false\r\n");
    p->sink.fail(p->sink.ud, &e, headers[0] ? headers : NULL);
}

/* ---- attempts ---------------------------------------------------------------------------- */

static void why_append(sg_pipeline_t *p, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(p->rec->why);
    if (n + 2 >= sizeof(p->rec->why)) return;
    snprintf(p->rec->why + n, sizeof(p->rec->why) - n, fmt, a, b);
}

static const sg_exchange_cbs_t upstream_cbs;

/* Starts an attempt on the next available endpoint of the current candidate, or of the next
 * ones. Returns 0 (running), -1 when no endpoint of any remaining candidate is available (e
 * says why when nothing else did), or -2 when the request itself cannot be sent (e: do not
 * try further). */
/* The upstream request of one attempt, by what the request asks. */
static int build(sg_pipeline_t *p, const sg_provider_vt_t *vt, const sg_route_t *r,
                 const sg_upstream_opts_t *uo, sg_exchange_req_t *xr, char *url, size_t url_cap,
                 sg_error_t *e)
{
    switch (p->op) {
    case SG_OP_EMBED:
        if (vt->build_embed) return vt->build_embed(r, p->body, uo, xr, url, url_cap, e);
        sg_error_set(e, 400, "invalid_request_error", "unsupported_value",
                     "provider '%s' serves no embeddings", r->provider->name);
        return -1;
    case SG_OP_MESSAGES:
        if (vt->build_messages && vt->messages_native(r))
            return vt->build_messages(r, p->body, p->stream, uo, xr, url, url_cap, e);
        sg_error_set(e, 400, "invalid_request_error", "unsupported_value",
                     "model '%s' does not take Messages requests as they are", r->public_name);
        return -1;
    default:
        return vt->build_chat(r, p->body, p->stream, uo, xr, url, url_cap, e);
    }
}

static int attempt_start(sg_pipeline_t *p, sg_error_t *e)
{
    const sg_config_t *cfg = &p->gen->cfg;
    for (; p->ci < p->plan->n; p->ci++) {
        sg_route_t *r = &p->plan->routes[p->ci];
        const sg_provider_vt_t *vt = sg_provider_find(r->provider->kind);
        if (!vt) continue;
        int idx = sg_gen_pick_endpoint(p->gen, r, p->tried[p->ci], sg_now_ms());
        if (idx < 0) {
            if (!p->have_err)
                sg_error_set(e, 503, "api_error", "no_healthy_endpoint",
                             "no endpoint of provider '%s' is available (circuit breaker open or "
                             "failing health checks)",
                             r->provider->name);
            continue;
        }
        if (idx < MAX_ENDPOINTS) p->tried[p->ci][idx] = 1;
        sg_upstream_opts_t uo = {cfg->connect_timeout_ms, cfg->first_byte_timeout_ms,
                                 cfg->upstream_idle_timeout_ms, cfg->total_timeout_ms};
        sg_exchange_req_t xr = {0};
        sg_error_t be;
        /* Only needed until the exchange starts: curl keeps its own copy of the URL. */
        char url[1024];
        int built = build(p, vt, r, &uo, &xr, url, sizeof(url), &be);
        if (built == 0) {
            /* The upstream's logs can be matched with the gateway's. */
            char rid[SG_HTTP_REQUEST_ID_MAX + 16];
            snprintf(rid, sizeof(rid), "X-Request-Id: %s", p->rec->request_id);
            xr.headers = curl_slist_append(xr.headers, rid);
            xr.stream = p->stream;
        } else {
            *e = be;
            if (be.status < 500) return -2; /* the request cannot be translated */
            /* The provider cannot be used now (an expired token): the next candidate may. */
            p->have_err = 1;
            p->err = be;
            memset(p->tried[p->ci], 1, sizeof(p->tried[p->ci]));
            continue;
        }
        drop_decoder(p); /* with the adapter that made it */
        drop_held(p);
        p->vt = vt;
        p->wire = p->op == SG_OP_MESSAGES ? &sg_wire_anthropic : vt;
        p->route = r;
        p->status = 0;
        p->upstream_end = p->finish_seen = 0;
        p->have_err = 0;
        p->retry_after[0] = '\0';
        free(p->rl_headers);
        p->rl_headers = NULL;
        sg_buf_reset(&p->body_buf);
        p->attempts++;
        sg_record_t *rec = p->rec;
        if (p->attempts > 1) {
            p->gw->fallbacks++;
            rec->fallbacks++;
        }
        rec->attempts = p->attempts;
        rec->upstream_status = 0;
        rec->ttfb_ns = 0;
        sg_record_route(rec, r);
        rec->price_in = r->model->price_in_per_mtok;
        rec->price_out = r->model->price_out_per_mtok;
        sg_url_redact(r->base_url, rec->endpoint, sizeof(rec->endpoint));
        p->ep = r->endpoint;
        p->attempt_ns = sg_now_ns();
        sg_endpoint_begin(p->ep, &cfg->breaker, sg_now_ms());
        p->x = sg_exchange_start(p->gw->curlm, &xr, &upstream_cbs, p);
        if (!p->x) {
            curl_slist_free_all(xr.headers);
            free(xr.body);
            endpoint_done(p, 1);
            sg_error_set(e, 500, "api_error", "upstream_start_failed",
                         "could not start the upstream request");
            return -2;
        }
        return 0;
    }
    if (p->have_err) *e = p->err;
    return -1;
}

static int admit(sg_pipeline_t *p, sg_error_t *e);

static void on_retry_timer(uv_timer_t *t)
{
    retry_timer_t *rt = t->data;
    sg_pipeline_t *p = rt->p;
    if (!p || p->released) return;
    p_ref(p);
    sg_error_t e = p->err;
    long st = p->status;
    int a = p->admitting ? admit(p, &e) : 0;
    if (a < 0) {
        /* Refused after queueing: the client may retry after Retry-After (no
         * x-should-retry: false, which finish_fail adds for upstream failures). */
        p->finished = 1;
        p->sink.fail(p->sink.ud, &e, NULL);
    } else if (a == 0) {
        int r = attempt_start(p, &e);
        if (r != 0) finish_fail(p, &e, r == -1 ? st : e.status);
    }
    p_unref(p);
}

/* Runs the timer (attempt again, or admission again when queued) in delay ms. */
static void retry_in(sg_pipeline_t *p, uint64_t delay)
{
    if (!p->retry) {
        p->retry = sg_xcalloc(1, sizeof(*p->retry));
        uv_timer_init(p->gw->loop, &p->retry->timer);
        p->retry->timer.data = p->retry;
        p->retry->p = p;
    }
    uv_timer_start(&p->retry->timer, on_retry_timer, delay, 0);
}

/* Admission (src/pipeline/admission.c): 0 admitted, 1 queued (the timer admits again), -1
 * refused (e). */
static int admit(sg_pipeline_t *p, sg_error_t *e)
{
    uint64_t wait = 0, now = sg_now_ms();
    sg_admit_t a =
        sg_admit(p->gen, p->plan, p->body, (int)p->op, p->rec, now - p->start_ms, &wait, e);
    p->admitting = a == SG_ADMIT_WAIT;
    if (a == SG_ADMIT_WAIT) retry_in(p, wait);
    return a == SG_ADMIT_OK ? 0 : a == SG_ADMIT_WAIT ? 1 : -1;
}

/* The attempt failed before anything reached the client: tries another endpoint or model at
 * once, or the same one after a backoff when it is throttled or overloaded, or gives up. */
static void next_or_fail(sg_pipeline_t *p, const sg_error_t *e, long status, int transient)
{
    const sg_config_t *cfg = &p->gen->cfg;
    const char *tried_route = p->route->public_name;
    char reason[64];
    if (status)
        snprintf(reason, sizeof(reason), "HTTP %ld", status);
    else
        sg_strlcpy(reason, sizeof(reason), e->code[0] ? e->code : "failed");
    uint64_t now = sg_now_ms();
    if ((size_t)p->attempts > cfg->max_retries || now >= p->deadline_ms) {
        finish_fail(p, e, status);
        return;
    }
    size_t failed_ci = p->ci;
    sg_error_t next = *e;
    p->err = *e;
    p->have_err = 1;
    p->status = status;
    int r = attempt_start(p, &next);
    if (r == 0) {
        why_append(p, "; %s failed (%s)", tried_route, reason);
        if (strcmp(p->route->public_name, tried_route) == 0)
            why_append(p, ", then another endpoint%s%s", "", "");
        else
            why_append(p, ", then fallback to %s%s", p->route->public_name, "");
        return;
    }
    if (r == -2 || !transient) {
        finish_fail(p, r == -2 ? &next : e, r == -2 ? next.status : status);
        return;
    }
    /* Nothing else to try now: the same candidate again after a backoff (jittered, at least
     * the upstream's Retry-After), if the deadline allows. */
    uint64_t delay = cfg->retry_base_ms << (p->attempts - 1 < 16 ? p->attempts - 1 : 16);
    uint32_t rnd = 0;
    uv_random(NULL, NULL, &rnd, sizeof(rnd), 0, NULL);
    delay = delay * (80 + rnd % 41) / 100;
    long ra = p->retry_after[0] ? atol(p->retry_after) : 0;
    if (ra > 0 && ra < 3600 && (uint64_t)ra * 1000 > delay) delay = (uint64_t)ra * 1000;
    if (delay > RETRY_MAX_MS) delay = RETRY_MAX_MS;
    if (now + delay >= p->deadline_ms) {
        finish_fail(p, e, status);
        return;
    }
    p->ci = failed_ci;
    memset(p->tried[p->ci], 0, sizeof(p->tried[p->ci]));
    p->gw->upstream_retries++;
    why_append(p, "; %s failed (%s), retried after a backoff", tried_route, reason);
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "upstream retry");
    sg_logline_str(&l, "request_id", p->rec->request_id);
    sg_logline_str(&l, "route", tried_route);
    sg_logline_int(&l, "upstream_status", status);
    sg_logline_int(&l, "attempt", p->attempts + 1);
    sg_logline_int(&l, "delay_ms", (long long)delay);
    sg_logline_emit(&l);
    retry_in(p, delay);
}

/* ---- the decoder's sink ------------------------------------------------------------------- */

static void note_finish(sg_pipeline_t *p, const cJSON *chunk)
{
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
    {
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")))
            p->finish_seen = 1;
    }
}

/* Does a parsed chunk carry content, tool calls, a finish_reason or usage? */
static int chunk_matters(const cJSON *chunk)
{
    if (cJSON_GetObjectItemCaseSensitive(chunk, "usage")) return 1;
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
    {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if ((cJSON_IsString(content) && content->valuestring[0]) ||
            cJSON_GetObjectItemCaseSensitive(delta, "tool_calls") ||
            cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")))
            return 1;
    }
    return 0;
}

static int hold(sg_pipeline_t *p, const cJSON *chunk, const char *raw, size_t len)
{
    if (p->n_held >= HELD_MAX) return 0;
    struct held *h = &p->held[p->n_held++];
    h->chunk = chunk ? cJSON_Duplicate(chunk, 1) : NULL;
    h->raw = raw ? sg_xstrndup(raw, len) : NULL;
    h->len = raw ? len : 0;
    return 1;
}

/* The first content: what was held goes first, and the route is final from now on. */
static int commit(sg_pipeline_t *p)
{
    p->committed = 1;
    int n = p->n_held;
    p->n_held = 0;
    int stop = 0;
    for (int i = 0; i < n; i++) {
        struct held *h = &p->held[i];
        if (!stop) {
            if (h->chunk)
                stop = p->sink.chunk(p->sink.ud, h->chunk, h->raw, h->len) != 0;
            else
                stop = p->sink.raw_chunk(p->sink.ud, h->raw, h->len, 0, 0) != 0;
        }
        cJSON_Delete(h->chunk);
        free(h->raw);
    }
    if (stop) p->sink_stopped = 1;
    return stop || p->released;
}

/* Output relayed is charged against the budgets as it goes (sg_admit_stream): a stream that
 * would pass what the hard budgets have left stops here, and ends with the error. */
static int charge(sg_pipeline_t *p, long tokens)
{
    if (!tokens) return 0;
    sg_error_t e;
    if (sg_admit_stream(p->rec, tokens, &e) == 0) return 0;
    p->err = e;
    p->have_err = 1;
    return 1;
}

/* The output tokens of a chunk, estimated: ~4 characters of content or tool-call arguments. */
static long chunk_tokens(const cJSON *chunk)
{
    size_t chars = 0;
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(chunk, "choices"))
    {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content)) chars += strlen(content->valuestring);
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"))
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (cJSON_IsString(args)) chars += strlen(args->valuestring);
        }
    }
    return (long)((chars + 3) / 4);
}

static int w_chunk(void *ud, cJSON *chunk, const char *raw, size_t raw_len)
{
    sg_pipeline_t *p = ud;
    if (p->released || p->sink_stopped) return 1;
    if (!p->committed) {
        if (!chunk_matters(chunk) && hold(p, chunk, raw, raw_len)) return 0;
        if (commit(p)) return 1;
    }
    /* Counting a chunk's tokens is only needed when a hard budget could end the stream. */
    if (p->rec->ticket.hard_budget && charge(p, chunk_tokens(chunk))) return 1;
    note_finish(p, chunk);
    if (p->sink.chunk(p->sink.ud, chunk, raw, raw_len) != 0) p->sink_stopped = 1;
    return p->sink_stopped || p->released;
}

static int w_raw_chunk(void *ud, const char *raw, size_t len, int has_content, int has_finish)
{
    sg_pipeline_t *p = ud;
    if (p->released || p->sink_stopped) return 1;
    if (!p->committed) {
        /* Raw chunks name neither usage nor error; tool_calls count as content. */
        if (!has_content && !has_finish && hold(p, NULL, raw, len)) return 0;
        if (commit(p)) return 1;
    }
    /* one token per chunk, as the upstream sends */
    if (has_content && p->rec->ticket.hard_budget && charge(p, 1)) return 1;
    if (has_finish) p->finish_seen = 1;
    if (p->sink.raw_chunk(p->sink.ud, raw, len, has_content, has_finish) != 0) p->sink_stopped = 1;
    return p->sink_stopped || p->released;
}

static void w_usage(void *ud, const sg_usage_t *u)
{
    sg_pipeline_t *p = ud;
    if (!p->released) p->sink.usage(p->sink.ud, u);
}

static void w_end(void *ud)
{
    ((sg_pipeline_t *)ud)->upstream_end = 1;
}

static void w_error(void *ud, const sg_error_t *e)
{
    sg_pipeline_t *p = ud;
    if (p->have_err) return;
    p->have_err = 1;
    p->err = *e;
}

/* ---- exchange callbacks --------------------------------------------------------------------- */

static void capture_headers(sg_pipeline_t *p, sg_exchange_t *x)
{
    static const char *const names[] = {"retry-after",
                                        "x-ratelimit-limit-requests",
                                        "x-ratelimit-remaining-requests",
                                        "x-ratelimit-reset-requests",
                                        "x-ratelimit-limit-tokens",
                                        "x-ratelimit-remaining-tokens",
                                        "x-ratelimit-reset-tokens"};
    size_t n = 0;
    char lines[768];
    for (size_t i = 0; i < SG_ARRAY_LEN(names); i++) {
        const char *v = sg_exchange_header(x, names[i]);
        if (!v || strlen(v) > 64 || strpbrk(v, "\r\n")) continue;
        if (i == 0) snprintf(p->retry_after, sizeof(p->retry_after), "%.15s", v);
        int w = snprintf(lines + n, sizeof(lines) - n, "%s: %s\r\n", names[i], v);
        if (w < 0 || (size_t)w >= sizeof(lines) - n) break;
        n += (size_t)w;
    }
    /* Kept on the heap only when there are some: a stream holds its pipeline for long. */
    free(p->rl_headers);
    p->rl_headers = n ? sg_xstrndup(lines, n) : NULL;
}

static void on_up_head(sg_exchange_t *x, long status, void *ud)
{
    sg_pipeline_t *p = ud;
    p->status = status;
    p->rec->upstream_status = status;
    p->rec->ttfb_ns = sg_now_ns();
    capture_headers(p, x);
    if (status >= 200 && status < 300 && p->stream) {
        sg_decode_sink_t sink = {w_chunk, w_usage, w_end,
                                 w_error, p,       p->sink.raw_chunk ? w_raw_chunk : NULL};
        p->dec = p->wire->decoder_new(p->route, &sink);
    }
}

static int on_up_data(sg_exchange_t *x, const char *data, size_t len, void *ud)
{
    SG_UNUSED(x);
    sg_pipeline_t *p = ud;
    if (p->released || p->sink_stopped) return SG_EX_DATA_ABORT;
    if (p->status < 200 || p->status >= 300) {
        /* Error body: its start is kept for mapping; the rest is dropped. */
        size_t room = UPSTREAM_ERROR_MAX - p->body_buf.len;
        sg_buf_append(&p->body_buf, data, len < room ? len : room);
        return SG_EX_DATA_OK;
    }
    if (!p->stream) {
        if (sg_buf_append(&p->body_buf, data, len) != 0) {
            sg_error_set(&p->err, 502, "api_error", "upstream_response_too_large",
                         "upstream response exceeds %d bytes", UPSTREAM_BODY_MAX);
            p->have_err = 1;
            return SG_EX_DATA_ABORT;
        }
        return SG_EX_DATA_OK;
    }
    /* Backpressure: the client's queue is full; the bytes stay with curl until it drains. */
    if (p->sink.congested && p->sink.congested(p->sink.ud)) return SG_EX_DATA_PAUSE;
    p_ref(p);
    int r = p->wire->decode(p->dec, data, len);
    int stop = r != 0 || p->released || p->sink_stopped;
    p_unref(p);
    return stop ? SG_EX_DATA_ABORT : SG_EX_DATA_OK;
}

/* A client-visible error for a failed exchange. */
static void transport_error(sg_pipeline_t *p, sg_ex_result_t res, const char *detail, sg_error_t *e)
{
    const char *name = p->route->provider->name;
    switch (res) {
    case SG_EX_TIMEOUT:
        sg_error_set(e, 504, "api_error", "upstream_timeout",
                     "upstream provider '%s' timed out: %s", name,
                     detail ? detail : "no answer in time");
        break;
    case SG_EX_CONNECT:
        sg_error_set(e, 502, "api_error", "upstream_unreachable",
                     "cannot reach upstream provider '%s': %s", name,
                     detail ? detail : "connection failed");
        break;
    default:
        sg_error_set(e, 502, "api_error", "upstream_connection_error",
                     "upstream connection failed: %s", detail ? detail : "broken");
    }
}

/* The process ran out of file descriptors for an upstream socket: a 503 server_overloaded,
 * counted, and a warning at most once a second (with how many since the last one). */
static void out_of_fds(sg_pipeline_t *p, sg_error_t *e)
{
    static uint64_t last_warn_ms, unwarned;
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    p->gw->fd_exhausted++;
    unwarned++;
    sg_error_set(e, 503, "api_error", "server_overloaded",
                 "the gateway is out of file descriptors (open file limit %llu) and cannot open "
                 "an upstream connection now; retry shortly",
                 (unsigned long long)rl.rlim_cur);
    uint64_t now = sg_now_ms();
    if (now - last_warn_ms < 1000) return;
    last_warn_ms = now;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN, "out of file descriptors: requests refused with 503");
    sg_logline_int(&l, "open_file_limit", (long long)rl.rlim_cur);
    sg_logline_int(&l, "refused", (long long)unwarned);
    sg_logline_int(&l, "connections", (long long)sg_http_server_conn_count(p->gw->http));
    sg_logline_int(&l, "upstream_active", (long long)sg_curlm_active(p->gw->curlm));
    sg_logline_emit(&l);
    unwarned = 0;
}

static void stream_done(sg_pipeline_t *p)
{
    int r = p->dec ? p->wire->decode_finish(p->dec) : -1;
    if (p->released || p->sink_stopped) {
        endpoint_done(p, 1);
        if (p->sink_stopped && !p->finished) {
            sg_error_t e;
            sg_error_set(&e, 499, "api_error", "client_gone", "the client went away");
            p->finished = 1;
            p->sink.fail(p->sink.ud, &e, NULL);
        }
        return;
    }
    if (r != 0 || p->have_err || (!p->upstream_end && !p->finish_seen)) {
        sg_error_t e = p->err;
        if (!p->have_err)
            sg_error_set(&e, 502, "api_error", "upstream_stream_truncated",
                         "upstream stream ended before the completion finished");
        endpoint_done(p, 0);
        if (!p->committed)
            next_or_fail(p, &e, 0, 0);
        else
            finish_fail(p, &e, 0);
        return;
    }
    endpoint_done(p, 1);
    if (!p->committed && commit(p)) {
        p->finished = 1;
        sg_error_t e;
        sg_error_set(&e, 499, "api_error", "client_gone", "the client went away");
        p->sink.fail(p->sink.ud, &e, NULL);
        return;
    }
    p->finished = 1;
    p->sink.done(p->sink.ud, NULL, NULL, 0);
}

static void on_up_done(sg_exchange_t *x, sg_ex_result_t res, const char *detail, void *ud)
{
    SG_UNUSED(x);
    sg_pipeline_t *p = ud;
    p->x = NULL;
    p_ref(p);
    sg_error_t e;
    if (p->released) {
        endpoint_done(p, 1);
    } else if (res == SG_EX_NO_FDS) {
        /* Local exhaustion, not the upstream's fault: no breaker, no fallback (it would fail
         * the same way); the client may retry shortly. */
        endpoint_done(p, 1);
        out_of_fds(p, &e);
        p->finished = 1;
        p->sink.fail(p->sink.ud, &e, "Retry-After: 1\r\n");
    } else if (res != SG_EX_OK && res != SG_EX_ABORTED) {
        transport_error(p, res, detail, &e);
        endpoint_done(p, 0);
        if (p->committed)
            finish_fail(p, &e, 0);
        else
            next_or_fail(p, &e, 0, 0);
    } else if (p->status < 200 || p->status >= 300) {
        p->vt->map_error(p->route, p->status, p->body_buf.data, p->body_buf.len, &e);
        endpoint_done(p, p->status < 500);
        int retry = p->status == 429 || p->status >= 500;
        if (retry)
            next_or_fail(p, &e, p->status,
                         p->status == 429 || p->status == 503 || p->status == 504);
        else
            finish_fail(p, &e, p->status);
    } else if (p->stream) {
        stream_done(p);
    } else if (p->have_err) {
        endpoint_done(p, 0);
        finish_fail(p, &p->err, 0);
    } else {
        sg_usage_t u = {0};
        const char *bd = p->body_buf.data ? p->body_buf.data : "";
        /* A chat completion the client takes as it is need not become a tree here. */
        int lazy = p->op == SG_OP_CHAT && p->sink.lazy_response && p->wire->scan_response &&
                   p->wire->passthrough_response;
        cJSON *resp = NULL;
        int ok;
        if (lazy) {
            ok = p->wire->scan_response(p->route, bd, p->body_buf.len, &u, &e) == 0;
        } else {
            resp = p->op == SG_OP_EMBED
                       ? p->vt->convert_embed(p->route, p->body, bd, p->body_buf.len, &u, &e)
                       : p->wire->convert_response(p->route, bd, p->body_buf.len, &u, &e);
            ok = resp != NULL;
        }
        if (!ok) {
            endpoint_done(p, 0);
            next_or_fail(p, &e, 0, 0);
        } else {
            endpoint_done(p, 1);
            if (u.known || u.rejected) p->sink.usage(p->sink.ud, &u);
            p->finished = 1;
            p->committed = 1;
            if (!p->released)
                p->sink.done(p->sink.ud, resp,
                             p->wire->passthrough_response ? p->body_buf.data : NULL,
                             p->body_buf.len);
            cJSON_Delete(resp);
        }
    }
    p_unref(p);
}

static const sg_exchange_cbs_t upstream_cbs = {on_up_head, on_up_data, on_up_done};

/* ---- public ------------------------------------------------------------------------------- */

sg_pipeline_t *sg_pipeline_start(sg_gateway_t *gw, sg_gen_t *gen, const sg_plan_t *plan, sg_op_t op,
                                 const cJSON *body, int stream, sg_record_t *rec,
                                 const sg_pipeline_sink_t *sink, sg_error_t *err)
{
    sg_pipeline_t *p = sg_pool_get(&pipe_pool);
    p->refs = 1;
    p->gw = gw;
    p->gen = sg_gen_ref(gen);
    /* Kept cut to the routes it has: a stream holds it for its whole life (routes past n are
     * never read). Copied route by route, never moved with realloc: a route may point into
     * itself (sg_route_copy). */
    p->plan = sg_xmalloc(offsetof(sg_plan_t, routes) + plan->n * sizeof(sg_route_t));
    memcpy(p->plan, plan, offsetof(sg_plan_t, routes));
    for (size_t i = 0; i < plan->n; i++) sg_route_copy(&p->plan->routes[i], &plan->routes[i]);
    plan = p->plan;
    p->body = body;
    p->op = op;
    p->stream = op != SG_OP_EMBED && stream;
    p->rec = rec;
    p->sink = *sink;
    p->deadline_ms = sg_now_ms() + gen->cfg.deadline_ms;
    p->route = &p->plan->routes[0];
    sg_buf_init(&p->body_buf, stream ? UPSTREAM_ERROR_MAX : UPSTREAM_BODY_MAX);
    snprintf(rec->rule, sizeof(rec->rule), "%.31s", plan->rule);
    sg_strlcpy(rec->why, sizeof(rec->why), plan->why);
    p->start_ms = sg_now_ms();
    sg_error_t e;
    int r = admit(p, &e);
    if (r == 1) return p; /* queued: the timer admits it (or refuses it) later */
    /* The first candidates' failures to start (an expired token) fall back like any other. */
    if (r == 0) r = attempt_start(p, &e);
    if (r != 0) {
        *err = e;
        sg_gen_redact(gen, p->route, err->message, sizeof(err->message));
        p->released = 1;
        p_unref(p);
        return NULL;
    }
    return p;
}

void sg_pipeline_resume(sg_pipeline_t *p)
{
    if (p->released || !p->x || !sg_exchange_paused(p->x)) return;
    p_ref(p);
    sg_exchange_resume(p->x);
    p_unref(p);
}

void sg_pipeline_release(sg_pipeline_t *p)
{
    if (!p || p->released) return;
    p->released = 1;
    if (p->x) {
        sg_exchange_cancel(p->x);
        p->x = NULL;
    }
    endpoint_done(p, 1);
    retry_drop(p);
    p_unref(p);
}

const sg_route_t *sg_pipeline_route(const sg_pipeline_t *p)
{
    return p->route;
}

int sg_pipeline_committed(const sg_pipeline_t *p)
{
    return p->committed;
}
