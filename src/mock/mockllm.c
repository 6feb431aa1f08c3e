/* mockllm: a mock OpenAI-compatible LLM upstream for tests and benchmarks.
 *
 * One libuv loop, the project's HTTP server (sg_http_*). The code is layered so another wire
 * format (e.g. Snowflake Cortex) can be added as one more mock_wire_t plus a route:
 *   1. token generation   deterministic token text and prompt token counting
 *   2. directives         per-request behaviour switches ([mock:k=v,...] / X-Mock header)
 *   3. jobs               per-request scheduling: one uv_timer per request, backpressure,
 *                         abort handling, statistics
 *   4. wire formats       framing of chunks / whole replies / errors (OpenAI here)
 *   5. routes             /v1/chat/completions, /v1/models, /stats, /healthz
 *   6. main               CLI, signals, shutdown
 * Per request the state is one mock_job_t (~200 bytes plus the escaped model name); events
 * are formatted into a stack buffer, so producing tokens allocates nothing. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/http.h"
#include "sophia/log.h"

#define MOCK_MAX_TOKENS 1000000u  /* cap on tokens=/--tokens */
#define MOCK_MAX_DELAY_MS 3600000 /* cap on every *_ms value */
#define MOCK_MODEL_MAX 256        /* longest model name accepted (bytes) */

/* ---- 1. token generation ---------------------------------------------------------------- */

/* Token i (0-based) is word i % 16 of this list followed by one space. */
#define MOCK_N_WORDS 16
static const char *const mock_words[MOCK_N_WORDS] = {
    "The", "quick", "brown", "fox",    "jumps",  "over",     "the", "lazy",
    "dog", "while", "mock",  "tokens", "stream", "steadily", "to",  "clients",
};

static const char *mock_token_word(uint32_t i)
{
    return mock_words[i % MOCK_N_WORDS];
}

static int mock_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Number of whitespace-separated words in s[0..n). */
static uint32_t mock_count_words(const char *s, size_t n)
{
    uint32_t words = 0;
    int in_word = 0;
    for (size_t i = 0; i < n; i++) {
        if (mock_is_space(s[i])) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return words;
}

/* ---- 2. directives ---------------------------------------------------------------------- */

/* Per-request switches; -1 (or 0 for flags/status) means "not given". */
typedef struct mock_directives {
    int32_t tokens;
    int32_t ttft_ms;
    int32_t itl_ms;
    int32_t headers_delay_ms;
    int32_t status;    /* 0: none; 200 or 400..599 */
    int32_t cut_after; /* -1: none */
    int8_t hang, garbage, no_usage;
} mock_directives_t;

static void mock_directives_init(mock_directives_t *d)
{
    d->tokens = d->ttft_ms = d->itl_ms = d->headers_delay_ms = -1;
    d->status = 0;
    d->cut_after = -1;
    d->hang = d->garbage = d->no_usage = 0;
}

static void mock_trim(const char **s, size_t *n)
{
    while (*n && mock_is_space(**s)) (*s)++, (*n)--;
    while (*n && mock_is_space((*s)[*n - 1])) (*n)--;
}

static int mock_key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

/* Parses "k=v,k=v,..." (s[0..n)) into d; later keys override earlier ones. Returns 0, or -1
 * with a message in err. */
static int mock_directives_parse(mock_directives_t *d, const char *s, size_t n, char *err,
                                 size_t errlen)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ',') j++;
        const char *item = s + i;
        size_t len = j - i;
        i = j + 1;
        mock_trim(&item, &len);
        if (len == 0) continue;
        const char *eq = memchr(item, '=', len);
        if (!eq) {
            snprintf(err, errlen, "mock directive '%.*s' has no value", (int)(len > 64 ? 64 : len),
                     item);
            return -1;
        }
        const char *k = item, *v = eq + 1;
        size_t kn = (size_t)(eq - item), vn = len - kn - 1;
        mock_trim(&k, &kn);
        mock_trim(&v, &vn);
        long long val = 0;
        int ok = vn > 0 && vn <= 10;
        for (size_t x = 0; ok && x < vn; x++) {
            if (v[x] < '0' || v[x] > '9')
                ok = 0;
            else
                val = val * 10 + (v[x] - '0');
        }
        if (!ok) {
            snprintf(err, errlen, "mock directive '%.*s' needs a non-negative integer",
                     (int)(kn > 64 ? 64 : kn), k);
            return -1;
        }
        int32_t *target = NULL;
        long long max = MOCK_MAX_DELAY_MS;
        if (mock_key_is(k, kn, "tokens")) {
            target = &d->tokens;
            max = MOCK_MAX_TOKENS;
        } else if (mock_key_is(k, kn, "ttft_ms")) {
            target = &d->ttft_ms;
        } else if (mock_key_is(k, kn, "itl_ms")) {
            target = &d->itl_ms;
        } else if (mock_key_is(k, kn, "headers_delay_ms")) {
            target = &d->headers_delay_ms;
        } else if (mock_key_is(k, kn, "cut_after")) {
            target = &d->cut_after;
            max = MOCK_MAX_TOKENS;
        } else if (mock_key_is(k, kn, "status")) {
            if (val != 200 && (val < 400 || val > 599)) {
                snprintf(err, errlen, "mock directive status must be 200 or 400..599");
                return -1;
            }
            d->status = (int32_t)val;
            continue;
        } else if (mock_key_is(k, kn, "hang")) {
            d->hang = val != 0;
            continue;
        } else if (mock_key_is(k, kn, "garbage")) {
            d->garbage = val != 0;
            continue;
        } else if (mock_key_is(k, kn, "no_usage")) {
            d->no_usage = val != 0;
            continue;
        } else {
            snprintf(err, errlen, "unknown mock directive '%.*s'", (int)(kn > 64 ? 64 : kn), k);
            return -1;
        }
        if (val > max) {
            snprintf(err, errlen, "mock directive '%.*s' is above %lld", (int)kn, k, max);
            return -1;
        }
        *target = (int32_t)val;
    }
    return 0;
}

/* Applies every "[mock:...]" found in text[0..n). Returns 0, or -1 with err set. */
static int mock_directives_scan(mock_directives_t *d, const char *text, size_t n, char *err,
                                size_t errlen)
{
    static const char tag[] = "[mock:";
    const size_t tn = sizeof(tag) - 1;
    const char *p = text, *end = text + n;
    while ((size_t)(end - p) >= tn) {
        const char *hit = memmem(p, (size_t)(end - p), tag, tn);
        if (!hit) break;
        const char *body = hit + tn;
        const char *close = memchr(body, ']', (size_t)(end - body));
        if (!close) {
            snprintf(err, errlen, "mock directive is missing its closing ']'");
            return -1;
        }
        if (mock_directives_parse(d, body, (size_t)(close - body), err, errlen) != 0) return -1;
        p = close + 1;
    }
    return 0;
}

/* The X-Mock header: "k=v,..." (a "[mock:...]" wrapper is accepted too). */
static int mock_directives_header(mock_directives_t *d, const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    mock_trim(&v, &n);
    if (n >= 7 && memcmp(v, "[mock:", 6) == 0 && v[n - 1] == ']') {
        v += 6;
        n -= 7;
    }
    return mock_directives_parse(d, v, n, err, errlen);
}

/* Walks OpenAI-style messages: sums prompt tokens (words + 3 per message; string content or
 * the "text" of array parts) and applies directives found in the content. */
static int mock_scan_messages(const cJSON *messages, mock_directives_t *d, uint32_t *prompt_tokens,
                              char *err, size_t errlen)
{
    uint32_t total = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        total += 3;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(content)) {
            const char *s = content->valuestring;
            size_t n = strlen(s);
            total += mock_count_words(s, n);
            if (mock_directives_scan(d, s, n, err, errlen) != 0) return -1;
        } else if (cJSON_IsArray(content)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(t)) continue;
                size_t n = strlen(t->valuestring);
                total += mock_count_words(t->valuestring, n);
                if (mock_directives_scan(d, t->valuestring, n, err, errlen) != 0) return -1;
            }
        }
    }
    *prompt_tokens = total;
    return 0;
}

/* ---- 3. jobs: per-request scheduling ---------------------------------------------------- */

typedef struct mock_stats {
    uint64_t requests, streams_started, streams_completed, streams_aborted, active;
    uint64_t nonstream_completed, nonstream_aborted, auth_failures, max_active, paused;
    uint64_t cut, errors_injected;
    char last_model[MOCK_MODEL_MAX + 1];
    int last_authorization_seen;
} mock_stats_t;

typedef struct mock_app {
    uv_loop_t *loop;
    sg_http_server_t *srv;
    uv_signal_t sig_int, sig_term;
    int stopping;
    int quiet;
    const char *api_key;
    uint32_t tokens, ttft_ms, itl_ms; /* defaults from the command line */
    uint64_t next_id;
    int64_t started; /* unix time, "created" of /v1/models */
    mock_stats_t stats;
} mock_app_t;

typedef struct mock_job mock_job_t;

/* Bounded output buffer on the stack: events are formatted here, then written as one chunk. */
#define MOCK_OUT_CAP 32768
#define MOCK_EVENT_MAX 4096 /* one event; the model name (≤ 256 bytes) is escaped to ≤ 1538 */
typedef struct mock_out {
    size_t len;
    char data[MOCK_OUT_CAP];
} mock_out_t;

__attribute__((format(printf, 2, 3))) static void mock_out_printf(mock_out_t *o, const char *fmt,
                                                                  ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->data + o->len, MOCK_OUT_CAP - o->len, fmt, ap);
    va_end(ap);
    SG_ASSERT(n >= 0 && (size_t)n < MOCK_OUT_CAP - o->len);
    o->len += (size_t)n;
}

static void mock_out_append(mock_out_t *o, const char *s, size_t n)
{
    SG_ASSERT(n < MOCK_OUT_CAP - o->len);
    memcpy(o->data + o->len, s, n);
    o->len += n;
}

/* Room left for at least a few more events? */
static int mock_out_full(const mock_out_t *o)
{
    return MOCK_OUT_CAP - o->len < 4 * MOCK_EVENT_MAX;
}

/* A wire format: how a chat reply is framed. Each stream_* function appends whole events. */
typedef struct mock_wire {
    const char *name;
    const char *stream_content_type;
    const char *stream_headers; /* extra response header lines for streams */
    /* Events before the first token (OpenAI: the role chunk). */
    void (*stream_open)(const mock_job_t *j, mock_out_t *o);
    /* The event carrying token i. */
    void (*stream_token)(const mock_job_t *j, uint32_t i, mock_out_t *o);
    /* Events after the last token (finish, usage, terminator). */
    void (*stream_close)(const mock_job_t *j, mock_out_t *o);
    /* The whole non-streamed reply; must end the request (sg_http_respond). */
    void (*respond)(mock_job_t *j);
    /* An error reply in this format; code may be NULL. */
    void (*respond_error)(sg_http_req_t *req, int status, const char *code, const char *message);
} mock_wire_t;

typedef enum { MOCK_PH_HEAD, MOCK_PH_TOKENS, MOCK_PH_HANG } mock_phase_t;
typedef enum { MOCK_DONE_OK, MOCK_DONE_ABORTED, MOCK_DONE_CUT, MOCK_DONE_ERROR } mock_outcome_t;

struct mock_job {
    uv_timer_t timer; /* data = job; closed (then the job freed) when the job finishes */
    mock_app_t *app;
    sg_http_req_t *req; /* NULL once the request has ended */
    const mock_wire_t *wire;
    uint64_t id;
    int64_t created;
    uint64_t due;      /* loop time (ms) the next timed event is due: no drift under load */
    uint32_t n_tokens; /* tokens to produce */
    uint32_t next;     /* next token index */
    uint32_t prompt_tokens;
    uint32_t ttft_ms, itl_ms, headers_delay_ms;
    int32_t cut_after;
    uint16_t status;
    uint8_t phase;
    unsigned stream : 1, want_usage : 1, finish_length : 1, garbage : 1, opened : 1, paused : 1,
        dead : 1;
    char model_json[]; /* the model as a JSON string literal (with quotes) */
};

static void job_step(mock_job_t *j);
static void job_head(mock_job_t *j);

static void job_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static const char *mock_outcome_name(mock_outcome_t how)
{
    switch (how) {
    case MOCK_DONE_OK:
        return "completed";
    case MOCK_DONE_ABORTED:
        return "aborted";
    case MOCK_DONE_CUT:
        return "cut";
    case MOCK_DONE_ERROR:
        return "error";
    }
    return "?";
}

/* Ends the job once (accounting, log line) and frees it after its timer has closed. The
 * request must not be touched afterwards. */
static void job_finish(mock_job_t *j, mock_outcome_t how)
{
    if (j->dead) return;
    j->dead = 1;
    j->req = NULL;
    mock_stats_t *s = &j->app->stats;
    s->active--;
    switch (how) {
    case MOCK_DONE_OK:
        if (j->stream)
            s->streams_completed++;
        else
            s->nonstream_completed++;
        break;
    case MOCK_DONE_ABORTED:
        if (j->stream)
            s->streams_aborted++;
        else
            s->nonstream_aborted++;
        break;
    case MOCK_DONE_CUT:
        s->cut++;
        break;
    case MOCK_DONE_ERROR:
        s->errors_injected++;
        break;
    }
    if (sg_log_enabled(SG_LOG_INFO)) {
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_INFO, "chat request finished");
        sg_logline_int(&l, "id", (long long)j->id);
        sg_logline_str(&l, "wire", j->wire->name);
        sg_logline_bool(&l, "stream", j->stream);
        sg_logline_str(&l, "outcome", mock_outcome_name(how));
        sg_logline_int(&l, "tokens_sent", j->stream ? j->next : j->n_tokens);
        if (j->status) sg_logline_int(&l, "status", j->status);
        sg_logline_emit(&l);
    }
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, job_free_cb);
}

static void job_on_timer(uv_timer_t *t)
{
    mock_job_t *j = t->data;
    if (j->dead) return;
    if (j->phase == MOCK_PH_HEAD)
        job_head(j);
    else if (j->phase == MOCK_PH_TOKENS)
        job_step(j);
}

/* Runs the job's next step at loop time due (now when already past). */
static void job_schedule(mock_job_t *j, uint64_t due)
{
    uint64_t now = uv_now(j->app->loop);
    j->due = due;
    uv_timer_start(&j->timer, job_on_timer, due > now ? due - now : 0, 0);
}

static void job_on_abort(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    job_finish(ud, MOCK_DONE_ABORTED);
}

static void job_on_drain(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    mock_job_t *j = ud;
    if (j->dead || !j->paused || j->phase != MOCK_PH_TOKENS) return;
    j->paused = 0;
    /* Resume from the loop, not from inside the write completion. */
    job_schedule(j, uv_now(j->app->loop) + j->itl_ms);
}

/* Writes what o holds as one chunk. Returns 0, or -1 when the request died (then finished). */
static int job_flush(mock_job_t *j, mock_out_t *o)
{
    if (o->len == 0) return j->dead ? -1 : 0;
    int r = sg_http_stream_write(j->req, o->data, o->len);
    o->len = 0;
    if (r < 0 && !j->dead) job_finish(j, MOCK_DONE_ABORTED); /* connection already gone */
    return j->dead ? -1 : 0;
}

/* Pauses the job when the client is not keeping up; the drain hook resumes it. */
static int job_pause_if_congested(mock_job_t *j)
{
    if (!sg_http_req_congested(j->req)) return 0;
    j->paused = 1;
    j->app->stats.paused++;
    uv_timer_stop(&j->timer);
    return 1;
}

/* cut_after=N: after min(N, tokens) content events the connection is closed. */
static int job_cut_due(const mock_job_t *j)
{
    if (j->cut_after < 0) return 0;
    uint32_t at = (uint32_t)j->cut_after < j->n_tokens ? (uint32_t)j->cut_after : j->n_tokens;
    return j->next >= at;
}

static void job_cut(mock_job_t *j, mock_out_t *o)
{
    if (o && job_flush(j, o) < 0) return;
    sg_http_req_close(j->req); /* the abort hook does not fire */
    job_finish(j, MOCK_DONE_CUT);
}

static const char mock_garbage1[] = "\x00\xffgarbage{{{\n\n";
static const char mock_garbage2[] = "data: not-json\n\n";

/* Produces events of a started stream: the opening events and the first token at ttft, then
 * one token per itl (all at once when itl is 0), then the closing events. */
static void job_step(mock_job_t *j)
{
    mock_out_t o;
    o.len = 0;
    if (j->garbage) {
        mock_out_append(&o, mock_garbage1, sizeof(mock_garbage1) - 1);
        mock_out_append(&o, mock_garbage2, sizeof(mock_garbage2) - 1);
        if (job_flush(j, &o) < 0) return;
        sg_http_stream_end(j->req, NULL, 0);
        if (!j->dead) job_finish(j, MOCK_DONE_OK);
        return;
    }
    if (!j->opened) {
        j->opened = 1;
        j->wire->stream_open(j, &o);
        if (job_cut_due(j)) {
            job_cut(j, &o);
            return;
        }
    }
    unsigned batch = 0;
    while (j->next < j->n_tokens) {
        j->wire->stream_token(j, j->next, &o);
        j->next++;
        batch++;
        if (job_cut_due(j)) {
            job_cut(j, &o);
            return;
        }
        if (j->next == j->n_tokens) break;
        /* With itl 0, yield to the loop every 256 tokens so other streams get their turn. */
        if (j->itl_ms > 0 || mock_out_full(&o) || batch >= 256) {
            if (job_flush(j, &o) < 0) return;
            if (job_pause_if_congested(j)) return;
            if (j->itl_ms > 0 || batch >= 256) {
                job_schedule(j, j->due + j->itl_ms);
                return;
            }
        }
    }
    j->wire->stream_close(j, &o);
    if (job_flush(j, &o) < 0) return;
    sg_http_stream_end(j->req, NULL, 0);
    if (!j->dead) job_finish(j, MOCK_DONE_OK);
}

/* Sends the response head (or the whole reply when not streaming). */
static void job_head(mock_job_t *j)
{
    if (j->status) {
        char msg[64];
        snprintf(msg, sizeof(msg), "mock failure %d", (int)j->status);
        j->wire->respond_error(j->req, j->status, NULL, msg);
        if (!j->dead) job_finish(j, MOCK_DONE_ERROR);
        return;
    }
    if (!j->stream) {
        if (j->cut_after >= 0) {
            job_cut(j, NULL);
            return;
        }
        if (j->garbage)
            sg_http_respond(j->req, 200, "application/json", mock_garbage1,
                            sizeof(mock_garbage1) - 1, NULL);
        else
            j->wire->respond(j);
        if (!j->dead) job_finish(j, MOCK_DONE_OK);
        return;
    }
    int r =
        sg_http_stream_begin(j->req, 200, j->wire->stream_content_type, j->wire->stream_headers);
    if (j->dead) return;
    if (r < 0) {
        job_finish(j, MOCK_DONE_ABORTED);
        return;
    }
    j->app->stats.streams_started++;
    j->phase = MOCK_PH_TOKENS;
    j->due = uv_now(j->app->loop) + j->ttft_ms;
    if (j->ttft_ms > 0)
        job_schedule(j, j->due);
    else
        job_step(j);
}

/* A parsed chat request, independent of the wire format. */
typedef struct mock_chat {
    const char *model; /* borrowed from the request JSON */
    int stream;
    int include_usage;
    long long max_tokens; /* -1: not given */
    uint32_t prompt_tokens;
    mock_directives_t d;
} mock_chat_t;

static uint32_t pick(int32_t directive, uint32_t dflt)
{
    return directive >= 0 ? (uint32_t)directive : dflt;
}

/* Creates the job for a parsed request and starts it (it may finish before this returns). */
static void job_start(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire,
                      const mock_chat_t *c)
{
    sg_buf_t mj;
    sg_buf_init(&mj, 8 * MOCK_MODEL_MAX);
    sg_json_escape_append(&mj, c->model, strlen(c->model));
    mock_job_t *j = sg_xcalloc(1, sizeof(*j) + mj.len + 1);
    memcpy(j->model_json, mj.data, mj.len);
    sg_buf_dispose(&mj);
    j->timer.data = j;
    uv_timer_init(app->loop, &j->timer);
    j->app = app;
    j->req = req;
    j->wire = wire;
    j->id = ++app->next_id;
    j->created = sg_unix_time();
    j->prompt_tokens = c->prompt_tokens;
    j->n_tokens = pick(c->d.tokens, app->tokens);
    if (c->max_tokens >= 0 && (unsigned long long)c->max_tokens < j->n_tokens) {
        j->n_tokens = (uint32_t)c->max_tokens;
        j->finish_length = 1;
    }
    j->ttft_ms = pick(c->d.ttft_ms, app->ttft_ms);
    j->itl_ms = pick(c->d.itl_ms, app->itl_ms);
    j->headers_delay_ms = pick(c->d.headers_delay_ms, 0);
    j->cut_after = c->d.cut_after;
    j->status = (uint16_t)(c->d.status == 200 ? 0 : c->d.status);
    j->stream = c->stream != 0;
    j->want_usage = c->include_usage && !c->d.no_usage;
    j->garbage = c->d.garbage != 0;
    mock_stats_t *s = &app->stats;
    if (++s->active > s->max_active) s->max_active = s->active;
    sg_http_req_set_hooks(req, job_on_abort, job_on_drain, j);
    if (c->d.hang) {
        j->phase = MOCK_PH_HANG; /* never answered; ends when the client leaves */
        return;
    }
    j->phase = MOCK_PH_HEAD;
    uint64_t delay = j->headers_delay_ms;
    if (!j->stream && !j->status) {
        /* A whole reply arrives when the last token would have. */
        delay += j->ttft_ms;
        if (j->n_tokens > 1) delay += (uint64_t)j->itl_ms * (j->n_tokens - 1);
    }
    if (delay > 0)
        uv_timer_start(&j->timer, job_on_timer, delay, 0);
    else
        job_head(j);
}

/* ---- 4. wire format: OpenAI chat completions -------------------------------------------- */

static void oai_chunk_begin(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "data: {\"id\":\"chatcmpl-mock-%" PRIu64
                    "\",\"object\":\"chat.completion.chunk\",\"created\":%" PRId64 ",\"model\":%s,",
                    j->id, j->created, j->model_json);
}

static void oai_stream_open(const mock_job_t *j, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    mock_out_printf(o, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                       "\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

static void oai_stream_token(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    mock_out_printf(o,
                    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s \"},\"logprobs\":null,"
                    "\"finish_reason\":null}]}\n\n",
                    mock_token_word(i));
}

static void oai_usage(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "\"usage\":{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
                    ",\"total_tokens\":%" PRIu64 "}",
                    j->prompt_tokens, j->n_tokens, (uint64_t)j->prompt_tokens + j->n_tokens);
}

static void oai_stream_close(const mock_job_t *j, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    mock_out_printf(o,
                    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                    "\"finish_reason\":\"%s\"}]}\n\n",
                    j->finish_length ? "length" : "stop");
    if (j->want_usage) {
        oai_chunk_begin(j, o);
        mock_out_printf(o, "\"choices\":[],");
        oai_usage(j, o);
        mock_out_printf(o, "}\n\n");
    }
    mock_out_printf(o, "data: [DONE]\n\n");
}

static void oai_respond(mock_job_t *j)
{
    sg_buf_t b;
    sg_buf_init(&b, (size_t)j->n_tokens * 10 + 4096);
    sg_buf_printf(&b,
                  "{\"id\":\"chatcmpl-mock-%" PRIu64
                  "\",\"object\":\"chat.completion\",\"created\":%" PRId64
                  ",\"model\":%s,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                  "\"content\":\"",
                  j->id, j->created, j->model_json);
    for (uint32_t i = 0; i < j->n_tokens; i++) {
        const char *w = mock_token_word(i);
        size_t n = strlen(w);
        sg_buf_append(&b, w, n);
        sg_buf_append(&b, " ", 1);
    }
    sg_buf_printf(
        &b,
        "\"},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":{\"prompt_tokens\":%" PRIu32
        ",\"completion_tokens\":%" PRIu32 ",\"total_tokens\":%" PRIu64 "}}",
        j->finish_length ? "length" : "stop", j->prompt_tokens, j->n_tokens,
        (uint64_t)j->prompt_tokens + j->n_tokens);
    sg_http_respond(j->req, 200, "application/json", b.data, b.len, NULL);
    sg_buf_dispose(&b);
}

static void oai_respond_error(sg_http_req_t *req, int status, const char *code, const char *message)
{
    const char *type = "invalid_request_error";
    if (status == 429) {
        type = "requests";
        if (!code) code = "rate_limit_exceeded";
    } else if (status >= 500) {
        type = "server_error";
    }
    sg_http_respond_error(req, status, type, code, message);
}

static const mock_wire_t mock_wire_openai = {
    .name = "openai",
    .stream_content_type = "text/event-stream",
    .stream_headers = "Cache-Control: no-cache\r\n",
    .stream_open = oai_stream_open,
    .stream_token = oai_stream_token,
    .stream_close = oai_stream_close,
    .respond = oai_respond,
    .respond_error = oai_respond_error,
};

/* Reads an OpenAI chat request. Returns 0, or -1 with err set (answered with 400). */
static int oai_parse(const cJSON *root, mock_chat_t *c, char *err, size_t errlen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    c->model = cJSON_IsString(model) ? model->valuestring : "";
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        snprintf(err, errlen, "'messages' must be a non-empty array");
        return -1;
    }
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    c->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    c->max_tokens = -1;
    static const char *const limits[] = {"max_tokens", "max_completion_tokens"};
    for (size_t i = 0; i < SG_ARRAY_LEN(limits); i++) {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, limits[i]);
        if (cJSON_IsNull(mt) || !mt) continue;
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 0) {
            snprintf(err, errlen, "'%s' must be a non-negative integer", limits[i]);
            return -1;
        }
        long long v = mt->valuedouble > 1e12 ? (long long)1e12 : (long long)mt->valuedouble;
        if (c->max_tokens < 0 || v < c->max_tokens) c->max_tokens = v;
    }
    return mock_scan_messages(messages, &c->d, &c->prompt_tokens, err, errlen);
}

/* ---- 5. routes -------------------------------------------------------------------------- */

static int mock_authorized(const mock_app_t *app, const sg_http_req_t *req)
{
    if (!app->api_key) return 1;
    const char *auth = sg_http_req_header(req, "authorization");
    return auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, app->api_key) == 0;
}

static void mock_reject_auth(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire)
{
    app->stats.auth_failures++;
    wire->respond_error(req, 401, "invalid_api_key", "invalid api key");
}

typedef int (*mock_parse_fn)(const cJSON *root, mock_chat_t *c, char *err, size_t errlen);

static void handle_chat(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire,
                        mock_parse_fn parse)
{
    mock_stats_t *s = &app->stats;
    s->requests++;
    s->last_authorization_seen = sg_http_req_header(req, "authorization") != NULL;
    if (!mock_authorized(app, req)) {
        mock_reject_auth(app, req, wire);
        return;
    }
    cJSON *root = cJSON_ParseWithLength(req->body, req->body_len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        wire->respond_error(req, 400, NULL, "request body is not a JSON object");
        return;
    }
    mock_chat_t c;
    memset(&c, 0, sizeof(c));
    mock_directives_init(&c.d);
    char err[256] = "";
    int r = parse(root, &c, err, sizeof(err));
    if (r == 0) snprintf(s->last_model, sizeof(s->last_model), "%s", c.model);
    const char *hdr = sg_http_req_header(req, "x-mock");
    if (r == 0 && hdr) r = mock_directives_header(&c.d, hdr, err, sizeof(err));
    if (r == 0 && strlen(c.model) > MOCK_MODEL_MAX) {
        snprintf(err, sizeof(err), "model name longer than %d bytes", MOCK_MODEL_MAX);
        r = -1;
    }
    if (r != 0) {
        wire->respond_error(req, 400, NULL, err);
    } else {
        job_start(app, req, wire, &c);
    }
    cJSON_Delete(root);
}

static const char *const mock_models[] = {
    "llama3.1-8b-instruct",
    "llama3.1-70b-instruct-fp8",
    "llama3.3-70b-instruct-fp8",
    "llama3.1-405b-instruct-fp8",
    "hermes3-8b",
    "hermes3-70b",
    "hermes3-405b",
    "deepseek-r1-0528",
    "qwen25-coder-32b-instruct",
};

static void handle_models(mock_app_t *app, sg_http_req_t *req)
{
    if (!mock_authorized(app, req)) {
        mock_reject_auth(app, req, &mock_wire_openai);
        return;
    }
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < SG_ARRAY_LEN(mock_models); i++)
        sg_buf_printf(&b,
                      "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":%" PRId64
                      ",\"owned_by\":\"lambda\"}",
                      i ? "," : "", mock_models[i], app->started);
    sg_buf_append_str(&b, "]}");
    sg_http_respond(req, 200, "application/json", b.data, b.len, NULL);
    sg_buf_dispose(&b);
}

static void handle_stats(mock_app_t *app, sg_http_req_t *req)
{
    const mock_stats_t *s = &app->stats;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_printf(&b,
                  "{\"requests\":%" PRIu64 ",\"streams_started\":%" PRIu64
                  ",\"streams_completed\":%" PRIu64 ",\"streams_aborted\":%" PRIu64
                  ",\"active\":%" PRIu64 ",\"nonstream_completed\":%" PRIu64
                  ",\"nonstream_aborted\":%" PRIu64 ",\"auth_failures\":%" PRIu64
                  ",\"max_active\":%" PRIu64 ",\"paused\":%" PRIu64 ",\"cut\":%" PRIu64
                  ",\"errors_injected\":%" PRIu64 ",\"last_model\":",
                  s->requests, s->streams_started, s->streams_completed, s->streams_aborted,
                  s->active, s->nonstream_completed, s->nonstream_aborted, s->auth_failures,
                  s->max_active, s->paused, s->cut, s->errors_injected);
    sg_json_escape_append(&b, s->last_model, strlen(s->last_model));
    sg_buf_printf(&b, ",\"last_authorization_seen\":%s}",
                  s->last_authorization_seen ? "true" : "false");
    sg_http_respond(req, 200, "application/json", b.data, b.len, NULL);
    sg_buf_dispose(&b);
}

static void stats_reset(mock_app_t *app)
{
    uint64_t active = app->stats.active; /* a gauge, not a counter */
    memset(&app->stats, 0, sizeof(app->stats));
    app->stats.active = active;
    app->stats.max_active = active;
}

static int method_is(const sg_http_req_t *req, const char *m)
{
    return req->method_str && strcmp(req->method_str, m) == 0;
}

static void on_request(sg_http_req_t *req, void *ud)
{
    mock_app_t *app = ud;
    const char *p = req->path;
    const char *want = NULL; /* the method the path takes */
    if (strcmp(p, "/v1/chat/completions") == 0) {
        want = "POST";
        if (method_is(req, want)) {
            handle_chat(app, req, &mock_wire_openai, oai_parse);
            return;
        }
    } else if (strcmp(p, "/v1/models") == 0) {
        want = "GET";
        if (method_is(req, want)) {
            handle_models(app, req);
            return;
        }
    } else if (strcmp(p, "/stats") == 0) {
        want = "GET";
        if (method_is(req, want)) {
            handle_stats(app, req);
            return;
        }
    } else if (strcmp(p, "/stats/reset") == 0) {
        want = "POST";
        if (method_is(req, want)) {
            stats_reset(app);
            handle_stats(app, req);
            return;
        }
    } else if (strcmp(p, "/healthz") == 0) {
        want = "GET";
        if (method_is(req, want)) {
            static const char ok[] = "{\"status\":\"ok\"}";
            sg_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
            return;
        }
    }
    char msg[160];
    if (want) {
        snprintf(msg, sizeof(msg), "method %.16s not allowed on %.64s (use %s)", req->method_str, p,
                 want);
        sg_http_respond_error(req, 405, "invalid_request_error", "method_not_allowed", msg);
    } else {
        snprintf(msg, sizeof(msg), "no route for %.64s", p);
        sg_http_respond_error(req, 404, "invalid_request_error", "not_found", msg);
    }
}

/* ---- 6. main ---------------------------------------------------------------------------- */

static const char mock_usage[] =
    "Usage: mockllm [--listen HOST:PORT] [--ttft-ms N] [--itl-ms N] [--tokens N]\n"
    "               [--api-key KEY] [--quiet]\n"
    "\n"
    "A mock OpenAI-compatible LLM upstream (vLLM-like) for tests and benchmarks.\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT  listen address (default 127.0.0.1:9000; port 0 picks a free one;\n"
    "                      IPv6 as [::1]:9000). When ready it prints\n"
    "                      \"mockllm listening on HOST:PORT\" (the actual port) to stdout.\n"
    "  --ttft-ms N         delay before the first token (default 0)\n"
    "  --itl-ms N          delay between tokens (default 0: all tokens at once, still one\n"
    "                      event per token)\n"
    "  --tokens N          completion tokens per reply (default 16, at most 1000000)\n"
    "  --api-key KEY       require \"Authorization: Bearer KEY\" on /v1/*; otherwise 401\n"
    "                      invalid_api_key (counted in auth_failures)\n"
    "  --quiet             no per-request log lines (warnings and errors only)\n"
    "  --help              print this text\n"
    "\n"
    "Endpoints:\n"
    "  POST /v1/chat/completions  OpenAI chat completions; model is echoed, stream=true gives\n"
    "                             SSE: role chunk, one chunk per token, finish chunk, a usage\n"
    "                             chunk (\"choices\":[]) when stream_options.include_usage,\n"
    "                             then data: [DONE]. max_tokens/max_completion_tokens below the\n"
    "                             token count cut the reply (finish_reason \"length\").\n"
    "  GET  /v1/models            a few Lambda model ids\n"
    "  GET  /stats                counters as JSON;  POST /stats/reset zeroes them\n"
    "  GET  /healthz              {\"status\":\"ok\"}\n"
    "\n"
    "Reply text: token i (0-based) is word i%16 of \"The quick brown fox jumps over the lazy\n"
    "dog while mock tokens stream steadily to clients\" plus one space. prompt_tokens = words\n"
    "in all message contents (string content, or the text parts of array content) + 3 per\n"
    "message; completion_tokens = tokens produced.\n"
    "Timing: stream head at once (after headers_delay_ms), role chunk and first token after\n"
    "ttft, then one token per itl. A non-streamed reply is sent when the last token would be:\n"
    "headers_delay + ttft + itl*(tokens-1).\n"
    "\n"
    "Directives (per request, for tests): \"[mock:k=v,k=v]\" anywhere in a message content,\n"
    "or the header \"X-Mock: k=v,k=v\" (the header wins). Values are non-negative integers.\n"
    "  tokens=N            completion tokens for this request\n"
    "  ttft_ms=N, itl_ms=N timing for this request\n"
    "  headers_delay_ms=N  wait N ms before sending the response head\n"
    "  status=CODE         answer CODE (400..599) with an OpenAI error \"mock failure CODE\"\n"
    "  cut_after=N         stream: after min(N,tokens) content chunks close the connection\n"
    "                      without the chunked terminator; non-stream: close instead of replying\n"
    "  hang=1              never answer; the request stays open until the client leaves\n"
    "  garbage=1           stream: 200 text/event-stream with non-SSE bytes, then\n"
    "                      \"data: not-json\", then a clean end; non-stream: 200 with a non-JSON "
    "body\n"
    "  no_usage=1          omit the usage chunk even when include_usage is true\n"
    "\n"
    "Stats (GET /stats): requests (chat requests received, rejected ones included),\n"
    "streams_started (stream heads sent), streams_completed, streams_aborted (the client left\n"
    "before the end), nonstream_completed, nonstream_aborted, active (requests in progress),\n"
    "max_active, auth_failures, paused (times a stream paused because the client was not\n"
    "reading), cut (cut_after closes), errors_injected (status= replies), last_model,\n"
    "last_authorization_seen (the last chat request carried an Authorization header).\n"
    "SIGINT/SIGTERM close every connection and exit 0.\n";

static void on_server_closed(sg_http_server_t *srv, void *ud)
{
    SG_UNUSED(srv);
    mock_app_t *app = ud;
    uv_close((uv_handle_t *)&app->sig_int, NULL);
    uv_close((uv_handle_t *)&app->sig_term, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    mock_app_t *app = h->data;
    if (app->stopping) return;
    app->stopping = 1;
    if (!app->quiet) sg_log(SG_LOG_INFO, "signal %d: shutting down", signum);
    sg_http_server_stop(app->srv, on_server_closed, app);
    sg_http_server_close_all(app->srv);
}

static int parse_uint(const char *s, uint32_t max, uint32_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-' || v > max) return -1;
    *out = (uint32_t)v;
    return 0;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT". */
static int parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *h = "127.0.0.1";
    size_t hn = strlen(h);
    const char *ps = s;
    if (colon) {
        ps = colon + 1;
        if (colon > s) {
            h = s;
            hn = (size_t)(colon - s);
            if (h[0] == '[') {
                if (hn < 2 || h[hn - 1] != ']') return -1;
                h++;
                hn -= 2;
            }
        }
    }
    uint32_t p;
    if (hn == 0 || hn >= hostlen || parse_uint(ps, 65535, &p) != 0) return -1;
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (int)p;
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur == rl.rlim_max) return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        sg_log(SG_LOG_WARN, "cannot raise the open file limit: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    static mock_app_t app;
    app.tokens = 16;
    char host[256] = "127.0.0.1";
    int port = 9000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(mock_usage, stdout);
            return 0;
        } else if (strcmp(a, "--quiet") == 0) {
            app.quiet = 1;
            continue;
        } else if (strcmp(a, "--listen") == 0) {
            bad = !v || parse_listen(v, host, sizeof(host), &port) != 0;
        } else if (strcmp(a, "--ttft-ms") == 0) {
            bad = parse_uint(v, MOCK_MAX_DELAY_MS, &app.ttft_ms) != 0;
        } else if (strcmp(a, "--itl-ms") == 0) {
            bad = parse_uint(v, MOCK_MAX_DELAY_MS, &app.itl_ms) != 0;
        } else if (strcmp(a, "--tokens") == 0) {
            bad = parse_uint(v, MOCK_MAX_TOKENS, &app.tokens) != 0;
        } else if (strcmp(a, "--api-key") == 0) {
            bad = !v || !*v;
            app.api_key = v;
        } else {
            fprintf(stderr, "mockllm: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "mockllm: %s needs a valid value (see --help)\n", a);
            return 2;
        }
        i++;
    }
    if (app.quiet) sg_log_set_level(SG_LOG_WARN);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return 1;
    app.loop = &loop;
    app.started = sg_unix_time();

    sg_http_opts_t opts;
    sg_http_opts_defaults(&opts);
    opts.max_connections = 100000;
    opts.max_body_bytes = 8 * 1024 * 1024;
    opts.idle_timeout_ms = 120000;
    opts.write_stall_timeout_ms = 60000;
    opts.log_requests_errors = !app.quiet;
    app.srv = sg_http_server_new(&loop, host, port, &opts, on_request, &app);
    if (!app.srv) {
        uv_run(&loop, UV_RUN_DEFAULT); /* lets the failed listener close */
        uv_loop_close(&loop);
        return 1;
    }
    if (strchr(host, ':'))
        printf("mockllm listening on [%s]:%d\n", host, sg_http_server_port(app.srv));
    else
        printf("mockllm listening on %s:%d\n", host, sg_http_server_port(app.srv));
    fflush(stdout);

    uv_signal_init(&loop, &app.sig_int);
    uv_signal_init(&loop, &app.sig_term);
    app.sig_int.data = app.sig_term.data = &app;
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);

    uv_run(&loop, UV_RUN_DEFAULT);
    sg_http_server_free(app.srv);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        sg_log(SG_LOG_ERROR, "event loop did not close cleanly: %s", uv_strerror(rc));
        return 1;
    }
    return 0;
}
