/* mockllm: a mock LLM upstream for tests and benchmarks. One process speaks two dialects,
 * chosen by the request path: OpenAI-compatible (vLLM-like, /v1/...) and Snowflake Cortex
 * REST (/api/v2/cortex/..., in mock_cortex.c, with the Anthropic Messages endpoint in
 * mock_messages.c); embeddings of both are in mock_embed.c, json=1 documents in
 * mock_schema.c.
 *
 * One libuv loop, the project's HTTP server (sg_http_*). The code is layered so each wire
 * format is one mock_wire_t plus a route:
 *   1. token generation   deterministic token text and prompt token counting
 *   2. directives         per-request behaviour switches ([mock:k=v,...] / X-Mock header)
 *   3. jobs               per-request scheduling: one uv_timer per request, backpressure,
 *                         abort handling, statistics, close-delimited streams
 *   4. wire formats       framing of chunks / whole replies / errors (OpenAI here, Cortex in
 *                         mock_cortex.c)
 *   5. routes             /v1/chat/completions, /v1/embeddings, /v1/models, /stats, /healthz,
 *                         /api/v2/...
 *   6. main               CLI, signals, shutdown
 * Per request the state is one mock_job_t (~250 bytes plus the escaped model name); events
 * are formatted into a stack buffer, so producing tokens allocates nothing. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "mock.h"
#include "sophia/buf.h"
#include "sophia/config.h"
#include "sophia/core.h"
#include "sophia/http.h"
#include "sophia/json.h"
#include "sophia/log.h"

/* ---- 1. token generation ----------------------------------------------------------------- */

/* Token i (0-based) is word i % 16 of this list followed by one space. */
#define MOCK_N_WORDS 16
static const char *const mock_words[MOCK_N_WORDS] = {
    "The", "quick", "brown", "fox",    "jumps",  "over",     "the", "lazy",
    "dog", "while", "mock",  "tokens", "stream", "steadily", "to",  "clients",
};

const char *mock_token_word(uint32_t i)
{
    return mock_words[i % MOCK_N_WORDS];
}

/* The same words with their trailing space: the text items of a reply. */
static const char *const mock_words_sp[MOCK_N_WORDS] = {
    "The ", "quick ", "brown ", "fox ",    "jumps ",  "over ",     "the ", "lazy ",
    "dog ", "while ", "mock ",  "tokens ", "stream ", "steadily ", "to ",  "clients ",
};

const char *mock_job_piece(const mock_job_t *j, uint32_t i, int *len)
{
    if (!j->text) {
        const char *w = mock_words_sp[i % MOCK_N_WORDS];
        *len = (int)strlen(w);
        return w;
    }
    uint32_t start = i ? j->piece_end[i - 1] : 0;
    *len = (int)(j->piece_end[i] - start);
    return j->text + start;
}

void mock_job_text_append(const mock_job_t *j, sg_buf_t *b)
{
    if (j->text) {
        sg_buf_append(b, j->text, j->n_tokens ? j->piece_end[j->n_tokens - 1] : 0);
        return;
    }
    for (uint32_t i = 0; i < j->n_tokens; i++) {
        int n;
        const char *p = mock_job_piece(j, i, &n);
        sg_buf_append(b, p, (size_t)n);
    }
}

/* Does a reply-text piece end after byte c? */
static int mock_piece_break(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == ',' || c == ':';
}

/* Cuts s[0..n) into pieces (each ends after a space, newline, ',' or ':' and the white space
 * that follows, or at about MOCK_PIECE_MAX bytes, never inside a UTF-8 sequence) and stores
 * them escaped in j. Returns the number of pieces. */
static uint32_t mock_job_split(mock_job_t *j, const char *s, size_t n)
{
    sg_buf_t b;
    sg_buf_init(&b, 6 * n + 16);
    j->piece_end = sg_xcalloc(n + 1, sizeof(*j->piece_end));
    uint32_t count = 0;
    size_t start = 0;
    while (start < n) {
        size_t end = start;
        while (end < n) {
            char c = s[end++];
            if (mock_piece_break(c)) {
                /* white space after the break stays with it */
                while (end < n && end - start < MOCK_PIECE_MAX &&
                       (s[end] == ' ' || s[end] == '\n' || s[end] == '\t' || s[end] == '\r'))
                    end++;
                break;
            }
            if (end - start >= MOCK_PIECE_MAX) {
                while (end < n && ((unsigned char)s[end] & 0xC0) == 0x80) end++;
                break;
            }
        }
        size_t at = b.len;
        sg_json_escape_append(&b, s + start, end - start);
        /* drop the quotes sg_json_escape_append puts around the piece */
        memmove(b.data + at, b.data + at + 1, b.len - at - 2);
        b.len -= 2;
        j->piece_end[count++] = (uint32_t)b.len;
        start = end;
    }
    size_t len;
    j->text = sg_buf_steal(&b, &len);
    j->text_len = len;
    return count;
}

void mock_chat_tool_reply(mock_chat_t *c, const char *text, size_t n)
{
    static const char prefix[] = "Tool result received: ";
    size_t pn = sizeof(prefix) - 1;
    if (n > MOCK_REPLY_MAX - pn) n = sg_utf8_cut(text, MOCK_REPLY_MAX - pn);
    free(c->reply);
    c->reply = sg_xmalloc(pn + n + 1);
    memcpy(c->reply, prefix, pn);
    if (n) memcpy(c->reply + pn, text, n);
    c->reply[pn + n] = '\0';
    c->reply_len = pn + n;
    c->tool_reply = 1;
}

/* Appends s[0..n) to b, as much as fits below b's cap. */
static void mock_append_capped(sg_buf_t *b, const char *s, size_t n)
{
    size_t room = b->max > b->len ? b->max - b->len : 0;
    sg_buf_append(b, s, n < room ? n : room);
}

void mock_result_text_append(sg_buf_t *b, const cJSON *content)
{
    if (cJSON_IsString(content)) {
        mock_append_capped(b, content->valuestring, strlen(content->valuestring));
        return;
    }
    const cJSON *item;
    int first = 1;
    cJSON_ArrayForEach(item, content)
    {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(item, "text");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
        const cJSON *json = cJSON_GetObjectItemCaseSensitive(item, "json");
        char *printed = NULL;
        const char *t = NULL;
        if (cJSON_IsString(text)) {
            t = text->valuestring;
        } else if (cJSON_IsString(type) && strcmp(type->valuestring, "json") == 0 && json) {
            t = printed = cJSON_PrintUnformatted(json);
        }
        if (t) {
            if (!first) mock_append_capped(b, " ", 1);
            mock_append_capped(b, t, strlen(t));
            first = 0;
        }
        free(printed);
    }
}

static const char *const mock_tool_frags[MOCK_TOOL_FRAGS] = {
    "{\\\"city\\\"", ":\\\"Paris\\\"", ",\\\"unit\\\"", ":\\\"celsius\\\"", "}",
};

const char *mock_tool_frag_json(uint32_t k)
{
    return mock_tool_frags[k % MOCK_TOOL_FRAGS];
}

static int mock_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

uint32_t mock_count_words(const char *s, size_t n)
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

/* ---- 2. directives ----------------------------------------------------------------------- */

void mock_directives_init(mock_directives_t *d)
{
    memset(d, 0, sizeof(*d));
    d->tokens = d->ttft_ms = d->itl_ms = d->headers_delay_ms = -1;
    d->cut_after = d->midstream_error = d->fail_times = d->fail_key = d->retry_after = -1;
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

/* Integer-valued directives: name, field offset, maximum. */
typedef struct mock_int_directive {
    const char *name;
    size_t off;
    long long max;
} mock_int_directive_t;

static const mock_int_directive_t mock_int_directives[] = {
    {"tokens", offsetof(mock_directives_t, tokens), MOCK_MAX_TOKENS},
    {"ttft_ms", offsetof(mock_directives_t, ttft_ms), MOCK_MAX_DELAY_MS},
    {"itl_ms", offsetof(mock_directives_t, itl_ms), MOCK_MAX_DELAY_MS},
    {"headers_delay_ms", offsetof(mock_directives_t, headers_delay_ms), MOCK_MAX_DELAY_MS},
    {"cut_after", offsetof(mock_directives_t, cut_after), MOCK_MAX_TOKENS},
    {"midstream_error", offsetof(mock_directives_t, midstream_error), MOCK_MAX_TOKENS},
    {"fail_times", offsetof(mock_directives_t, fail_times), MOCK_MAX_TOKENS},
    {"fail_key", offsetof(mock_directives_t, fail_key), INT32_MAX},
    {"retry_after", offsetof(mock_directives_t, retry_after), MOCK_RETRY_AFTER_MAX},
};

/* Flag directives (any non-zero value sets them). */
typedef struct mock_flag_directive {
    const char *name;
    size_t off;
} mock_flag_directive_t;

static const mock_flag_directive_t mock_flag_directives[] = {
    {"hang", offsetof(mock_directives_t, hang)},
    {"garbage", offsetof(mock_directives_t, garbage)},
    {"no_usage", offsetof(mock_directives_t, no_usage)},
    {"prohibited", offsetof(mock_directives_t, prohibited)},
    {"tool", offsetof(mock_directives_t, tool)},
    {"close_delimited", offsetof(mock_directives_t, close_delimited)},
    {"no_done", offsetof(mock_directives_t, no_done)},
    {"json", offsetof(mock_directives_t, json)},
};

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
        int kshow = (int)(kn > 64 ? 64 : kn);
        long long val = 0;
        int ok = vn > 0 && vn <= 10;
        for (size_t x = 0; ok && x < vn; x++) {
            if (v[x] < '0' || v[x] > '9')
                ok = 0;
            else
                val = val * 10 + (v[x] - '0');
        }
        if (!ok) {
            snprintf(err, errlen, "mock directive '%.*s' needs a non-negative integer", kshow, k);
            return -1;
        }
        int found = 0;
        for (size_t x = 0; !found && x < SG_ARRAY_LEN(mock_int_directives); x++) {
            const mock_int_directive_t *id = &mock_int_directives[x];
            if (!mock_key_is(k, kn, id->name)) continue;
            if (val > id->max) {
                snprintf(err, errlen, "mock directive '%.*s' is above %lld", kshow, k, id->max);
                return -1;
            }
            *(int32_t *)((char *)d + id->off) = (int32_t)val;
            found = 1;
        }
        for (size_t x = 0; !found && x < SG_ARRAY_LEN(mock_flag_directives); x++) {
            if (!mock_key_is(k, kn, mock_flag_directives[x].name)) continue;
            *(int8_t *)((char *)d + mock_flag_directives[x].off) = val != 0;
            found = 1;
        }
        if (found) continue;
        if (mock_key_is(k, kn, "status")) {
            if (val != 200 && (val < 400 || val > 599)) {
                snprintf(err, errlen, "mock directive status must be 200 or 400..599");
                return -1;
            }
            d->status = (int32_t)val;
        } else if (mock_key_is(k, kn, "shape")) {
            if (val < 1 || val > 3) {
                snprintf(err, errlen, "mock directive shape must be 1, 2 or 3");
                return -1;
            }
            d->shape = (int8_t)val;
        } else {
            snprintf(err, errlen, "unknown mock directive '%.*s'", kshow, k);
            return -1;
        }
    }
    return 0;
}

int mock_directives_scan(mock_directives_t *d, const char *text, size_t n, char *err, size_t errlen)
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

/* Counts the words of the "text" members of the parts of an array and applies directives. */
static int mock_scan_parts(const cJSON *parts, mock_directives_t *d, uint32_t *total, char *err,
                           size_t errlen)
{
    const cJSON *part;
    cJSON_ArrayForEach(part, parts)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t)) continue;
        size_t n = strlen(t->valuestring);
        *total += mock_count_words(t->valuestring, n);
        if (mock_directives_scan(d, t->valuestring, n, err, errlen) != 0) return -1;
    }
    return 0;
}

int mock_scan_messages(const cJSON *messages, mock_directives_t *d, uint32_t *prompt_tokens,
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
            if (mock_scan_parts(content, d, &total, err, errlen) != 0) return -1;
        }
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(m, "content_list");
        if (cJSON_IsArray(list) && mock_scan_parts(list, d, &total, err, errlen) != 0) return -1;
    }
    *prompt_tokens = total;
    return 0;
}

/* fail_times/fail_key: counts requests per key; returns the count including this one. */
static uint32_t mock_fail_count(mock_app_t *app, uint32_t key)
{
    for (size_t i = 0; i < app->n_fail; i++)
        if (app->fail[i].key == key) return ++app->fail[i].count;
    mock_fail_slot_t *s;
    if (app->n_fail < MOCK_FAIL_KEYS) {
        s = &app->fail[app->n_fail++];
    } else {
        s = &app->fail[app->fail_next];
        app->fail_next = (app->fail_next + 1) % MOCK_FAIL_KEYS;
    }
    s->key = key;
    s->count = 1;
    return 1;
}

/* After the first fail_times requests of a key, the failure directives are dropped. */
static void mock_apply_fail_times(mock_app_t *app, mock_directives_t *d)
{
    if (d->fail_times < 0) return;
    uint32_t key = d->fail_key >= 0 ? (uint32_t)d->fail_key : 0;
    if (mock_fail_count(app, key) <= (uint32_t)d->fail_times) return;
    d->status = 0;
    d->cut_after = d->midstream_error = d->headers_delay_ms = -1;
    d->hang = d->garbage = 0;
}

/* ---- 3. jobs: per-request scheduling ----------------------------------------------------- */

void mock_out_printf(mock_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->data + o->len, MOCK_OUT_CAP - o->len, fmt, ap);
    va_end(ap);
    SG_ASSERT(n >= 0 && (size_t)n < MOCK_OUT_CAP - o->len);
    o->len += (size_t)n;
}

void mock_out_append(mock_out_t *o, const char *s, size_t n)
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

typedef enum { MOCK_PH_HEAD, MOCK_PH_TOKENS, MOCK_PH_HANG } mock_phase_t;
typedef enum {
    MOCK_DONE_OK,
    MOCK_DONE_ABORTED,
    MOCK_DONE_CUT,
    MOCK_DONE_ERROR,
    MOCK_DONE_MIDSTREAM,
} mock_outcome_t;

static void job_step(mock_job_t *j);
static void job_head(mock_job_t *j);

static void job_free_cb(uv_handle_t *h)
{
    mock_job_t *j = h->data;
    free(j->text);
    free(j->piece_end);
    free(j);
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
    case MOCK_DONE_MIDSTREAM:
        return "midstream_error";
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
    case MOCK_DONE_MIDSTREAM:
        s->midstream_errors++;
        break;
    }
    if (sg_log_enabled(SG_LOG_INFO)) {
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_INFO, "chat request finished");
        sg_logline_int(&l, "id", (long long)j->id);
        sg_logline_str(&l, "wire", j->wire->name);
        sg_logline_bool(&l, "stream", j->stream);
        sg_logline_str(&l, "outcome", mock_outcome_name(how));
        sg_logline_int(&l, "tokens_sent", j->stream ? j->next : j->n_items);
        if (j->status) sg_logline_int(&l, "status", j->status);
        sg_logline_emit(&l);
    }
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, job_free_cb);
}

/* ---- timers, hooks, output --------------------------------------------------------------- */

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
    if (r < 0 && !j->dead) job_finish(j, MOCK_DONE_ABORTED); /* connection already gone */
    o->len = 0;
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

/* cut_after=N: after min(N, items) content events the connection is closed. */
static int job_cut_due(const mock_job_t *j)
{
    if (j->cut_after < 0) return 0;
    uint32_t at = (uint32_t)j->cut_after < j->n_items ? (uint32_t)j->cut_after : j->n_items;
    return j->next >= at;
}

/* midstream_error=N: after min(N, items) content events an error event ends the stream. */
static int job_midstream_due(const mock_job_t *j)
{
    if (j->midstream_error < 0 || !j->wire->stream_error) return 0;
    uint32_t at =
        (uint32_t)j->midstream_error < j->n_items ? (uint32_t)j->midstream_error : j->n_items;
    return j->next >= at;
}

static void job_cut(mock_job_t *j, mock_out_t *o)
{
    if (o && job_flush(j, o) < 0) return;
    sg_http_req_close(j->req); /* the abort hook does not fire */
    job_finish(j, MOCK_DONE_CUT);
}

/* Ends a started stream after queuing o: the chunked terminator (then, for wires that end
 * streams by closing, the connection closes), or the close that ends a close-delimited one. */
static void job_end(mock_job_t *j, mock_out_t *o, mock_outcome_t how)
{
    sg_http_req_t *req = j->req;
    int r = sg_http_stream_end(req, o->data, o->len);
    o->len = 0;
    if (r != 0) {
        job_finish(j, MOCK_DONE_ABORTED); /* the connection is gone (no abort hook follows) */
        return;
    }
    /* The response is complete and written; the connection (still alive: handles close
     * asynchronously) goes away too, as announced by "Connection: close". */
    if (j->wire->close_at_end && !j->close_delimited) sg_http_req_close(req);
    job_finish(j, how);
}

static const char mock_garbage1[] = "\x00\xffgarbage{{{\n\n";
static const char mock_garbage2[] = "data: not-json\n\n";

/* Produces events of a started stream: the opening events and the first item at ttft, then
 * one item per itl (all at once when itl is 0), then the closing events. */
static void job_step(mock_job_t *j)
{
    mock_out_t o;
    o.len = 0;
    if (j->garbage) {
        mock_out_append(&o, mock_garbage1, sizeof(mock_garbage1) - 1);
        mock_out_append(&o, mock_garbage2, sizeof(mock_garbage2) - 1);
        job_end(j, &o, MOCK_DONE_OK);
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
    while (j->next < j->n_items && !job_midstream_due(j)) {
        j->wire->stream_token(j, j->next, &o);
        j->next++;
        batch++;
        if (job_cut_due(j)) {
            job_cut(j, &o);
            return;
        }
        if (j->next == j->n_items) break;
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
    if (job_midstream_due(j)) {
        j->wire->stream_error(j, &o);
        job_end(j, &o, MOCK_DONE_MIDSTREAM);
        return;
    }
    j->wire->stream_close(j, &o);
    job_end(j, &o, MOCK_DONE_OK);
}

static int mock_client_wants_close(const sg_http_req_t *req)
{
    const char *c = sg_http_req_header(req, "connection");
    return c && strcasestr(c, "close") != NULL;
}

const char *mock_headers(const mock_app_t *app, const char *extra, char *buf, size_t cap)
{
    size_t en = extra ? strlen(extra) : 0, nn = strlen(app->name_hdr);
    if (en + nn == 0) return NULL;
    SG_ASSERT(en + nn < cap);
    if (en) memmove(buf, extra, en);
    memcpy(buf + en, app->name_hdr, nn + 1);
    return buf;
}

const char *mock_reply_headers(const mock_job_t *j, char *buf, size_t cap)
{
    static const char sf[] = "X-Snowflake-Request-ID: ";
    size_t n = 0;
    if (j->wire->snowflake) {
        size_t idn = strlen(j->sf_id);
        SG_ASSERT(sizeof(sf) + idn + 2 < cap);
        memcpy(buf, sf, sizeof(sf) - 1);
        n = sizeof(sf) - 1;
        memcpy(buf + n, j->sf_id, idn);
        n += idn;
        memcpy(buf + n, "\r\n", 2);
        n += 2;
    }
    buf[n] = '\0';
    return mock_headers(j->app, buf, buf, cap);
}

/* Sends the response head (or the whole reply when not streaming). */
static void job_head(mock_job_t *j)
{
    if (j->status) {
        char extra[40] = "";
        if (j->retry_after >= 0)
            snprintf(extra, sizeof(extra), "Retry-After: %" PRId32 "\r\n", j->retry_after);
        j->wire->respond_error(j->app, j->req, j->status, NULL, NULL, extra[0] ? extra : NULL);
        if (!j->dead) job_finish(j, MOCK_DONE_ERROR);
        return;
    }
    if (!j->stream) {
        if (j->cut_after >= 0) {
            job_cut(j, NULL);
            return;
        }
        if (j->garbage) {
            char hb[MOCK_HDRS_MAX];
            sg_http_respond(j->req, 200, "application/json", mock_garbage1,
                            sizeof(mock_garbage1) - 1, mock_reply_headers(j, hb, sizeof(hb)));
        } else {
            j->wire->respond(j);
        }
        if (!j->dead) job_finish(j, MOCK_DONE_OK);
        return;
    }
    {
        /* close_delimited=1: no framing, the close of the connection ends the body (the HTTP
         * layer then sends "Connection: close" itself). */
        int announce_close =
            j->wire->close_at_end && !j->close_delimited && !mock_client_wants_close(j->req);
        char hdrs[MOCK_HDRS_MAX];
        snprintf(hdrs, sizeof(hdrs), "%s%s%s%s%s%s", j->wire->stream_headers,
                 j->wire->snowflake ? "X-Snowflake-Request-ID: " : "",
                 j->wire->snowflake ? j->sf_id : "", j->wire->snowflake ? "\r\n" : "",
                 announce_close ? "Connection: close\r\n" : "", j->app->name_hdr);
        if (j->close_delimited) j->app->stats.close_delimited++;
        int r = j->close_delimited
                    ? sg_http_stream_begin_close_delimited(j->req, 200,
                                                           j->wire->stream_content_type, hdrs)
                    : sg_http_stream_begin(j->req, 200, j->wire->stream_content_type, hdrs);
        if (j->dead) return;
        if (r < 0) {
            job_finish(j, MOCK_DONE_ABORTED);
            return;
        }
    }
    if (j->dead) return;
    j->app->stats.streams_started++;
    j->phase = MOCK_PH_TOKENS;
    j->due = uv_now(j->app->loop) + j->ttft_ms;
    if (j->ttft_ms > 0)
        job_schedule(j, j->due);
    else
        job_step(j);
}

static uint32_t pick(int32_t directive, uint32_t dflt)
{
    return directive >= 0 ? (uint32_t)directive : dflt;
}

/* Creates the job for a parsed request and starts it (it may finish before this returns).
 * The job takes c's reply. */
static void job_start(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire, mock_chat_t *c)
{
    sg_buf_t lit;
    sg_buf_init(&lit, 8 * (MOCK_MODEL_MAX + MOCK_TOOL_NAME_MAX));
    sg_json_escape_append(&lit, c->model, strlen(c->model));
    size_t tool_off = lit.len + 1;
    sg_buf_append(&lit, "", 1);
    const char *tool = c->tool_name ? c->tool_name : "get_weather";
    sg_json_escape_append(&lit, tool, strlen(tool));
    mock_job_t *j = sg_xcalloc(1, sizeof(*j) + lit.len + 1);
    memcpy(j->lit, lit.data, lit.len);
    sg_buf_dispose(&lit);
    j->tool_off = (uint16_t)tool_off;
    j->timer.data = j;
    uv_timer_init(app->loop, &j->timer);
    j->app = app;
    j->req = req;
    j->wire = wire;
    j->id = ++app->next_id;
    j->created = sg_unix_time();
    if (wire->snowflake) mock_sf_request_id(j->sf_id);
    j->prompt_tokens = c->prompt_tokens;
    int embed = wire->kind == MOCK_KIND_EMBED;
    if (embed) {
        /* the prebuilt "data" array; no text items */
        j->text = c->reply;
        j->text_len = c->reply_len;
        j->n_tokens = 0;
    } else if (c->reply) {
        j->n_tokens = mock_job_split(j, c->reply, c->reply_len);
        free(c->reply);
    } else {
        j->n_tokens = pick(c->d.tokens, app->tokens);
    }
    c->reply = NULL;
    c->reply_len = 0;
    if (!embed && c->max_tokens >= 0 && (unsigned long long)c->max_tokens < j->n_tokens) {
        j->n_tokens = (uint32_t)c->max_tokens;
        j->finish_length = 1;
    }
    j->tool = !embed && c->d.tool != 0 && !c->tool_reply;
    j->n_items = j->n_tokens + (j->tool ? MOCK_TOOL_ITEMS : 0);
    j->ttft_ms = embed ? 0 : pick(c->d.ttft_ms, app->ttft_ms);
    j->itl_ms = embed ? 0 : pick(c->d.itl_ms, app->itl_ms);
    j->headers_delay_ms = pick(c->d.headers_delay_ms, 0);
    j->cut_after = c->d.cut_after;
    j->midstream_error = c->d.midstream_error;
    j->retry_after = c->d.retry_after;
    j->status = (uint16_t)(c->d.status == 200 ? 0 : c->d.status);
    j->stream = c->stream != 0;
    j->want_usage = c->include_usage && !c->d.no_usage;
    j->garbage = c->d.garbage != 0;
    j->prohibited = c->d.prohibited != 0;
    j->close_delimited = c->d.close_delimited != 0;
    j->no_done = c->d.no_done != 0;
    j->guard = c->guard != 0;
    j->shape = (uint8_t)(c->d.shape ? c->d.shape : 3);
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
        /* A whole reply arrives when the last item would have. */
        delay += j->ttft_ms;
        if (j->n_items > 1) delay += (uint64_t)j->itl_ms * (j->n_items - 1);
    }
    if (delay > 0)
        uv_timer_start(&j->timer, job_on_timer, delay, 0);
    else
        job_head(j);
}

/* ---- 4. wire format: OpenAI chat completions --------------------------------------------- */

static void oai_chunk_begin(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "data: {\"id\":\"chatcmpl-mock-%" PRIu64
                    "\",\"object\":\"chat.completion.chunk\",\"created\":%" PRId64 ",\"model\":%s,",
                    j->id, j->created, mock_job_model(j));
}

void mock_oai_stream_open(const mock_job_t *j, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    mock_out_printf(o, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                       "\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

void mock_oai_stream_token(const mock_job_t *j, uint32_t i, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    if (i < j->n_tokens) {
        int n;
        const char *t = mock_job_piece(j, i, &n);
        mock_out_printf(o, "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%.*s\"}", n, t);
    } else if (i == j->n_tokens) {
        mock_out_printf(o,
                        "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                        "\"id\":\"call_mock_1\",\"type\":\"function\",\"function\":{\"name\":%s,"
                        "\"arguments\":\"\"}}]}",
                        mock_job_tool(j));
    } else {
        mock_out_printf(o,
                        "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                        "\"function\":{\"arguments\":\"%s\"}}]}",
                        mock_tool_frag_json(i - j->n_tokens - 1));
    }
    mock_out_printf(o, ",\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

static void oai_usage(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "\"usage\":{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
                    ",\"total_tokens\":%" PRIu64 "}",
                    j->prompt_tokens, j->n_items, (uint64_t)j->prompt_tokens + j->n_items);
}

static const char *oai_finish_reason(const mock_job_t *j)
{
    return j->tool ? "tool_calls" : j->finish_length ? "length" : "stop";
}

void mock_oai_stream_close(const mock_job_t *j, mock_out_t *o)
{
    oai_chunk_begin(j, o);
    mock_out_printf(o,
                    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                    "\"finish_reason\":\"%s\"}]}\n\n",
                    oai_finish_reason(j));
    if (j->want_usage) {
        oai_chunk_begin(j, o);
        mock_out_printf(o, "\"choices\":[],");
        oai_usage(j, o);
        mock_out_printf(o, "}\n\n");
    }
    if (!j->no_done) mock_out_printf(o, "data: [DONE]\n\n");
}

/* vLLM's shape for an error after the stream started: an error object as a data event. */
void mock_oai_stream_error(const mock_job_t *j, mock_out_t *o)
{
    mock_out_printf(o,
                    "data: {\"error\":{\"message\":\"mock mid-stream error after %" PRIu32
                    " tokens\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                    j->next);
    if (!j->no_done) mock_out_printf(o, "data: [DONE]\n\n");
}

void mock_oai_respond(mock_job_t *j)
{
    sg_buf_t b;
    sg_buf_init(&b, (size_t)j->n_tokens * 10 + j->text_len + 8192);
    sg_buf_printf(&b,
                  "{\"id\":\"chatcmpl-mock-%" PRIu64
                  "\",\"object\":\"chat.completion\",\"created\":%" PRId64
                  ",\"model\":%s,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                  "\"content\":\"",
                  j->id, j->created, mock_job_model(j));
    mock_job_text_append(j, &b);
    sg_buf_append_str(&b, "\"");
    if (j->tool)
        sg_buf_printf(&b,
                      ",\"tool_calls\":[{\"id\":\"call_mock_1\",\"type\":\"function\","
                      "\"function\":{\"name\":%s,\"arguments\":\"" MOCK_TOOL_ARGS_JSON "\"}}]",
                      mock_job_tool(j));
    sg_buf_printf(&b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],", oai_finish_reason(j));
    sg_buf_printf(&b,
                  "\"usage\":{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
                  ",\"total_tokens\":%" PRIu64 "}}",
                  j->prompt_tokens, j->n_items, (uint64_t)j->prompt_tokens + j->n_items);
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(j->req, 200, "application/json", b.data, b.len,
                    mock_reply_headers(j, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

/* sg_http_respond_error's shape {"error":{"message","type","param":null,"code"}} (code NULL:
 * JSON null) with the instance header and extra (NULL or header lines). */
static void mock_respond_oai_error(const mock_app_t *app, sg_http_req_t *req, int status,
                                   const char *type, const char *code, const char *message,
                                   const char *extra)
{
    char hb[MOCK_HDRS_MAX];
    sg_http_respond_error_ex(req, status, type, code, message,
                             mock_headers(app, extra, hb, sizeof(hb)));
}

/* What OpenAI's API sends with every 429. */
static const char oai_ratelimit_headers[] = "x-ratelimit-limit-requests: 60\r\n"
                                            "x-ratelimit-remaining-requests: 0\r\n"
                                            "x-ratelimit-reset-requests: 1s\r\n"
                                            "x-ratelimit-limit-tokens: 100000\r\n"
                                            "x-ratelimit-remaining-tokens: 0\r\n"
                                            "x-ratelimit-reset-tokens: 1s\r\n";

void mock_oai_respond_error(const mock_app_t *app, sg_http_req_t *req, int status, const char *code,
                            const char *message, const char *extra)
{
    char msg[64];
    if (!message) {
        snprintf(msg, sizeof(msg), "mock failure %d", status);
        message = msg;
    }
    const char *type = "invalid_request_error";
    char hdrs[MOCK_HDRS_MAX];
    if (status == 429) {
        type = "requests";
        if (!code) code = "rate_limit_exceeded";
        snprintf(hdrs, sizeof(hdrs), "%s%s", extra ? extra : "", oai_ratelimit_headers);
        extra = hdrs;
    } else if (status >= 500) {
        type = "server_error";
    }
    mock_respond_oai_error(app, req, status, type, code, message, extra);
}

const mock_wire_t mock_wire_openai = {
    .name = "openai",
    .kind = MOCK_KIND_CHAT,
    .vllm_models = 1,
    .json_hint = "response_format {\"type\":\"json_schema\",\"json_schema\":{\"name\":...,"
                 "\"schema\":{...}}}",
    .stream_content_type = "text/event-stream",
    .stream_headers = "Cache-Control: no-cache\r\n",
    .stream_open = mock_oai_stream_open,
    .stream_token = mock_oai_stream_token,
    .stream_close = mock_oai_stream_close,
    .stream_error = mock_oai_stream_error,
    .respond = mock_oai_respond,
    .respond_error = mock_oai_respond_error,
};

/* The name of the first tool of an OpenAI "tools" array, or NULL. */
static const char *oai_tool_name(const cJSON *root)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    return cJSON_IsString(name) ? name->valuestring : NULL;
}

/* Does an assistant message among messages[0..before) have a tool call with this id? */
static int oai_call_known(const cJSON *messages, int before, const char *id)
{
    int idx = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (idx++ >= before) break;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role) || strcmp(role->valuestring, "assistant") != 0) continue;
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"))
        {
            const cJSON *tid = cJSON_GetObjectItemCaseSensitive(tc, "id");
            if (cJSON_IsString(tid) && strcmp(tid->valuestring, id) == 0) return 1;
        }
    }
    return 0;
}

/* The assistant tool_calls (id, function.name, function.arguments) and the role "tool"
 * messages, each answering an earlier call; a last "tool" message sets the reply. */
static int oai_check_tools(const cJSON *messages, mock_chat_t *c, char *err, size_t errlen)
{
    int idx = 0, n = cJSON_GetArraySize(messages);
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        if (strcmp(r, "assistant") == 0) {
            const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
            if (tcs && !cJSON_IsNull(tcs) && !cJSON_IsArray(tcs)) {
                snprintf(err, errlen,
                         "Invalid type for 'messages[%d].tool_calls': expected an array", idx);
                return -1;
            }
            int k = 0;
            const cJSON *tc;
            cJSON_ArrayForEach(tc, tcs)
            {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
                const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
                const char *missing =
                    !cJSON_IsString(id) || !id->valuestring[0] ? "id"
                    : !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "name"))
                        ? "function.name"
                    : !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "arguments"))
                        ? "function.arguments"
                        : NULL;
                if (missing) {
                    snprintf(err, errlen,
                             "Missing required parameter: 'messages[%d].tool_calls[%d].%s' (a "
                             "string)",
                             idx, k, missing);
                    return -1;
                }
                k++;
            }
        } else if (strcmp(r, "tool") == 0) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            if (!cJSON_IsString(id) || !id->valuestring[0]) {
                snprintf(err, errlen,
                         "Missing parameter 'tool_call_id': messages with role 'tool' must "
                         "have a 'tool_call_id' (messages[%d])",
                         idx);
                return -1;
            }
            if (!oai_call_known(messages, idx, id->valuestring)) {
                snprintf(err, errlen,
                         "Invalid parameter: messages with role 'tool' must be a response to a "
                         "preceding message with 'tool_calls' (messages[%d].tool_call_id "
                         "'%.64s' matches none)",
                         idx, id->valuestring);
                return -1;
            }
            if (idx == n - 1) {
                sg_buf_t t;
                sg_buf_init(&t, MOCK_REPLY_MAX);
                mock_result_text_append(&t, cJSON_GetObjectItemCaseSensitive(m, "content"));
                mock_chat_tool_reply(c, t.data ? t.data : "", t.len);
                sg_buf_dispose(&t);
            }
        }
        idx++;
    }
    return 0;
}

/* response_format {"type":"json_schema","json_schema":{"schema":{...}}}: the schema. */
static int oai_response_format(const cJSON *root, mock_chat_t *c, char *err, size_t errlen)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (!rf || cJSON_IsNull(rf)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type)) {
        snprintf(err, errlen, "Invalid 'response_format': expected an object with a 'type'");
        return -1;
    }
    if (strcmp(type->valuestring, "json_schema") != 0) return 0;
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    if (!cJSON_IsObject(js)) {
        snprintf(err, errlen, "Missing required parameter: 'response_format.json_schema'");
        return -1;
    }
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (schema && !cJSON_IsObject(schema)) {
        snprintf(err, errlen,
                 "Invalid type for 'response_format.json_schema.schema': expected an object");
        return -1;
    }
    c->schema = schema;
    return 0;
}

int mock_oai_parse(const cJSON *root, mock_chat_t *c, int reject_max_tokens, char *err,
                   size_t errlen)
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
    c->tool_name = oai_tool_name(root);
    c->max_tokens = -1;
    if (reject_max_tokens) {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
        if (mt && !cJSON_IsNull(mt)) {
            snprintf(err, errlen,
                     "max_tokens is not supported on this endpoint; use max_completion_tokens");
            return -1;
        }
    }
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
    if (oai_response_format(root, c, err, errlen) != 0 ||
        oai_check_tools(messages, c, err, errlen) != 0)
        return -1;
    return mock_scan_messages(messages, &c->d, &c->prompt_tokens, err, errlen);
}

static int oai_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                     size_t errlen)
{
    SG_UNUSED(app);
    return mock_oai_parse(root, c, 0, err, errlen);
}

/* ---- 5. routes --------------------------------------------------------------------------- */

static int mock_authorized(const mock_app_t *app, const sg_http_req_t *req)
{
    if (!app->api_key) return 1;
    const char *auth = sg_http_req_header(req, "authorization");
    return auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, app->api_key) == 0;
}

static void mock_reject_auth(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire)
{
    app->stats.auth_failures++;
    wire->respond_error(app, req, 401, "invalid_api_key", "invalid api key", NULL);
}

int mock_oai_authorize(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire)
{
    app->stats.last_authorization_seen = sg_http_req_header(req, "authorization") != NULL;
    if (mock_authorized(app, req)) return 1;
    mock_reject_auth(app, req, wire);
    return 0;
}

/* Index of model in --models, or -1. */
static int mock_model_index(const mock_app_t *app, const char *model)
{
    for (size_t i = 0; i < app->n_models; i++)
        if (strcmp(app->models[i], model) == 0) return (int)i;
    return -1;
}

/* vLLM's answer to a model it does not serve (the model is at most MOCK_MODEL_MAX bytes). */
static void oai_model_not_found(mock_app_t *app, sg_http_req_t *req, const char *model)
{
    app->stats.model_not_found++;
    char msg[MOCK_MODEL_MAX + 64];
    snprintf(msg, sizeof(msg), "The model `%s` does not exist.", model);
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    sg_buf_append_str(&b, "{\"object\":\"error\",\"message\":");
    sg_json_escape_append(&b, msg, strlen(msg));
    sg_buf_append_str(&b, ",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(req, 404, "application/json", b.data, b.len,
                    mock_headers(app, NULL, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

/* The hang switch: the request becomes a job that is never answered (as hang=1), echoing
 * what of the request can be read. */
static void mock_hang_chat(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire,
                           mock_parse_fn parse)
{
    mock_chat_t c;
    memset(&c, 0, sizeof(c));
    mock_directives_init(&c.d);
    char err[MOCK_ERR_MAX];
    cJSON *root = cJSON_ParseWithLength(req->body, req->body_len);
    if (!cJSON_IsObject(root) || parse(app, root, &c, err, sizeof(err)) != 0 ||
        strlen(c.model) > MOCK_MODEL_MAX) {
        free(c.reply);
        memset(&c, 0, sizeof(c));
        c.model = "";
    }
    free(c.reply); /* never answered: no reply text needed */
    c.reply = NULL;
    c.tool_name = NULL;
    c.max_tokens = -1;
    mock_directives_init(&c.d);
    c.d.hang = 1;
    job_start(app, req, wire, &c);
    cJSON_Delete(root);
}

/* json=1: the reply becomes a document for the request's schema (a 400 without one). */
static int mock_apply_json(const mock_wire_t *wire, mock_chat_t *c, char *err, size_t errlen)
{
    if (!c->d.json || wire->kind == MOCK_KIND_EMBED) return 0;
    if (!c->schema) {
        snprintf(err, errlen,
                 "mock directive json=1 needs a structured-output request with a JSON schema: "
                 "%s",
                 wire->json_hint ? wire->json_hint : "none on this endpoint");
        return -1;
    }
    size_t n;
    char *doc = mock_schema_example(c->schema, &n, err, errlen);
    if (!doc) return -1;
    free(c->reply);
    c->reply = doc;
    c->reply_len = n;
    return 0;
}

void mock_handle_chat(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire,
                      mock_parse_fn parse)
{
    mock_stats_t *s = &app->stats;
    if (wire->kind == MOCK_KIND_EMBED) {
        s->embed_requests++;
    } else {
        s->requests++;
        if (wire->snowflake) s->cortex_requests++;
        if (wire->kind == MOCK_KIND_MESSAGES) s->messages_requests++;
    }
    /* The /control switches win over everything, auth included. */
    if (app->fail_status) {
        s->errors_injected++;
        wire->respond_error(app, req, app->fail_status, NULL, NULL, NULL);
        return;
    }
    if (app->hang) {
        mock_hang_chat(app, req, wire, parse);
        return;
    }
    if (wire->snowflake ? !mock_sf_authorize(app, req, wire) : !mock_oai_authorize(app, req, wire))
        return;
    cJSON *root = cJSON_ParseWithLength(req->body, req->body_len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        wire->respond_error(app, req, 400, NULL, "request body is not a JSON object", NULL);
        return;
    }
    mock_chat_t c;
    memset(&c, 0, sizeof(c));
    mock_directives_init(&c.d);
    char err[MOCK_ERR_MAX] = "";
    int r = parse(app, root, &c, err, sizeof(err));
    if (r == 0) sg_strlcpy(s->last_model, sizeof(s->last_model), c.model);
    const char *hdr = sg_http_req_header(req, "x-mock");
    if (r == 0 && hdr) r = mock_directives_header(&c.d, hdr, err, sizeof(err));
    if (r == 0 && strlen(c.model) > MOCK_MODEL_MAX) {
        snprintf(err, sizeof(err), "model name longer than %d bytes", MOCK_MODEL_MAX);
        r = -1;
    }
    if (r == 0 && c.tool_name && strlen(c.tool_name) > MOCK_TOOL_NAME_MAX) {
        if (c.d.tool) {
            snprintf(err, sizeof(err), "tool name longer than %d bytes", MOCK_TOOL_NAME_MAX);
            r = -1;
        }
        c.tool_name = NULL; /* only tool=1 echoes it */
    }
    if (r == 0) r = mock_apply_json(wire, &c, err, sizeof(err));
    if (r != 0) {
        wire->respond_error(app, req, 400, NULL, err, NULL);
    } else if (wire->vllm_models && app->n_models && c.model[0] &&
               mock_model_index(app, c.model) < 0) {
        oai_model_not_found(app, req, c.model);
    } else {
        /* vLLM serves a request without a model with its (first) model. */
        if (wire->vllm_models && app->n_models && !c.model[0]) c.model = app->models[0];
        mock_apply_fail_times(app, &c.d);
        job_start(app, req, wire, &c);
    }
    free(c.reply);
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

/* --models: vLLM's model cards. */
static void models_vllm(const mock_app_t *app, sg_buf_t *b)
{
    int64_t now = sg_unix_time();
    for (size_t i = 0; i < app->n_models; i++) {
        const char *m = app->models[i];
        size_t n = strlen(m);
        sg_buf_append_str(b, i ? ",{\"id\":" : "{\"id\":");
        sg_json_escape_append(b, m, n);
        sg_buf_printf(
            b,
            ",\"object\":\"model\",\"created\":%" PRId64 ",\"owned_by\":\"vllm\",\"root\":", now);
        sg_json_escape_append(b, m, n);
        sg_buf_append_str(b, ",\"parent\":null,\"max_model_len\":32768,\"permission\":[]}");
    }
}

static void handle_models(mock_app_t *app, sg_http_req_t *req)
{
    app->stats.models_requests++;
    if (app->fail_status) {
        mock_oai_respond_error(app, req, app->fail_status, NULL, NULL, NULL);
        return;
    }
    if (app->hang) return; /* never answered; the connection ends when the client leaves */
    if (!mock_authorized(app, req)) {
        mock_reject_auth(app, req, &mock_wire_openai);
        return;
    }
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    if (app->n_models) {
        models_vllm(app, &b);
    } else {
        for (size_t i = 0; i < SG_ARRAY_LEN(mock_models); i++)
            sg_buf_printf(&b,
                          "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":%" PRId64
                          ",\"owned_by\":\"lambda\"}",
                          i ? "," : "", mock_models[i], app->started);
    }
    sg_buf_append_str(&b, "]}");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(req, 200, "application/json", b.data, b.len,
                    mock_headers(app, NULL, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

static void handle_stats(mock_app_t *app, sg_http_req_t *req)
{
    const mock_stats_t *s = &app->stats;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_printf(
        &b,
        "{\"requests\":%" PRIu64 ",\"streams_started\":%" PRIu64 ",\"streams_completed\":%" PRIu64
        ",\"streams_aborted\":%" PRIu64 ",\"active\":%" PRIu64 ",\"nonstream_completed\":%" PRIu64
        ",\"nonstream_aborted\":%" PRIu64 ",\"auth_failures\":%" PRIu64 ",\"max_active\":%" PRIu64
        ",\"paused\":%" PRIu64 ",\"cut\":%" PRIu64 ",\"errors_injected\":%" PRIu64
        ",\"midstream_errors\":%" PRIu64 ",\"close_delimited\":%" PRIu64
        ",\"cortex_requests\":%" PRIu64 ",\"sf_auth_failures\":%" PRIu64
        ",\"embed_requests\":%" PRIu64 ",\"messages_requests\":%" PRIu64
        ",\"models_requests\":%" PRIu64 ",\"model_not_found\":%" PRIu64
        ",\"control_requests\":%" PRIu64 ",\"last_model\":",
        s->requests, s->streams_started, s->streams_completed, s->streams_aborted, s->active,
        s->nonstream_completed, s->nonstream_aborted, s->auth_failures, s->max_active, s->paused,
        s->cut, s->errors_injected, s->midstream_errors, s->close_delimited, s->cortex_requests,
        s->sf_auth_failures, s->embed_requests, s->messages_requests, s->models_requests,
        s->model_not_found, s->control_requests);
    sg_json_escape_append(&b, s->last_model, strlen(s->last_model));
    sg_buf_printf(&b, ",\"last_authorization_seen\":%s,\"last_token_type\":",
                  s->last_authorization_seen ? "true" : "false");
    sg_json_escape_append(&b, s->last_token_type, strlen(s->last_token_type));
    sg_buf_append_str(&b, ",\"last_sf_token_suffix\":");
    sg_json_escape_append(&b, s->last_sf_token_suffix, strlen(s->last_sf_token_suffix));
    sg_buf_append_str(&b, ",\"instance\":");
    sg_json_escape_append(&b, app->name, strlen(app->name));
    sg_buf_append_str(&b, "}");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(req, 200, "application/json", b.data, b.len,
                    mock_headers(app, NULL, hb, sizeof(hb)));
    sg_buf_dispose(&b);
}

static void stats_reset(mock_app_t *app)
{
    uint64_t active = app->stats.active; /* a gauge, not a counter */
    memset(&app->stats, 0, sizeof(app->stats));
    app->stats.active = active;
    app->stats.max_active = active;
    app->n_fail = app->fail_next = 0; /* fail_key counters start over */
}

/* Reads a POST /control body into *fail_status / *hang (left alone when not given). Returns
 * 0, or -1 with err set; nothing is applied on error. */
static int control_parse(const cJSON *root, int *fail_status, int *hang, char *err, size_t errlen)
{
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "body must be a JSON object");
        return -1;
    }
    int fs = *fail_status, hg = *hang, given = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const char *k = item->string ? item->string : "";
        given = 1;
        if (strcmp(k, "fail_status") == 0) {
            double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
            if (v < 0 || v > 599 || v != (double)(int)v || (v != 0 && v < 400)) {
                snprintf(err, errlen, "'fail_status' must be 0 or an integer 400..599");
                return -1;
            }
        } else if (strcmp(k, "hang") == 0 || strcmp(k, "reset") == 0) {
            if (!cJSON_IsBool(item)) {
                snprintf(err, errlen, "'%s' must be a boolean", k);
                return -1;
            }
        } else {
            snprintf(err, errlen, "unknown control key '%.64s' (fail_status, hang, reset)", k);
            return -1;
        }
    }
    if (!given) {
        snprintf(err, errlen, "give at least one of fail_status, hang, reset");
        return -1;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "reset"))) fs = hg = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "fail_status");
    if (v) fs = (int)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(root, "hang");
    if (v) hg = cJSON_IsTrue(v);
    *fail_status = fs;
    *hang = hg;
    return 0;
}

/* POST /control: the runtime fault switches. */
static void handle_control(mock_app_t *app, sg_http_req_t *req)
{
    app->stats.control_requests++;
    cJSON *root = cJSON_ParseWithLength(req->body, req->body_len);
    char err[160];
    int r = control_parse(root, &app->fail_status, &app->hang, err, sizeof(err));
    cJSON_Delete(root);
    if (r != 0) {
        mock_respond_oai_error(app, req, 400, "invalid_request_error", NULL, err, NULL);
        return;
    }
    if (sg_log_enabled(SG_LOG_INFO)) {
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_INFO, "control");
        sg_logline_int(&l, "fail_status", app->fail_status);
        sg_logline_bool(&l, "hang", app->hang);
        sg_logline_emit(&l);
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"fail_status\":%d,\"hang\":%s}", app->fail_status,
                     app->hang ? "true" : "false");
    char hb[MOCK_HDRS_MAX];
    sg_http_respond(req, 200, "application/json", body, (size_t)n,
                    mock_headers(app, NULL, hb, sizeof(hb)));
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
    if (mock_cortex_route(app, req)) return;
    if (strcmp(p, "/v1/chat/completions") == 0) {
        want = "POST";
        if (method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_openai, oai_parse);
            return;
        }
    } else if (strcmp(p, "/v1/embeddings") == 0) {
        want = "POST";
        if (method_is(req, want)) {
            mock_handle_chat(app, req, &mock_wire_embed_openai, mock_embed_oai_parse);
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
    } else if (strcmp(p, "/control") == 0) {
        want = "POST";
        if (method_is(req, want)) {
            handle_control(app, req);
            return;
        }
    } else if (strcmp(p, "/healthz") == 0) {
        want = "GET";
        if (method_is(req, want)) {
            static const char ok[] = "{\"status\":\"ok\"}";
            char hb[MOCK_HDRS_MAX];
            sg_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1,
                            mock_headers(app, NULL, hb, sizeof(hb)));
            return;
        }
    }
    char msg[160];
    if (want) {
        snprintf(msg, sizeof(msg), "method %.16s not allowed on %.64s (use %s)", req->method_str, p,
                 want);
        mock_respond_oai_error(app, req, 405, "invalid_request_error", "method_not_allowed", msg,
                               NULL);
    } else {
        snprintf(msg, sizeof(msg), "no route for %.64s", p);
        mock_respond_oai_error(app, req, 404, "invalid_request_error", "not_found", msg, NULL);
    }
}

/* ---- 6. main ----------------------------------------------------------------------------- */

static const char mock_usage[] =
    "Usage: mockllm [--listen HOST:PORT] [--ttft-ms N] [--itl-ms N] [--tokens N]\n"
    "               [--embed-dims N] [--api-key KEY] [--snowflake-token TOKEN]\n"
    "               [--snowflake-token-file PATH] [--models LIST] [--name NAME]\n"
    "               [--quiet]\n"
    "\n"
    "A mock LLM upstream for tests and benchmarks. One process speaks two dialects, chosen\n"
    "by the path: OpenAI-compatible (vLLM-like, /v1/...) and Snowflake Cortex REST\n"
    "(/api/v2/cortex/...).\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT  listen address (default 127.0.0.1:9000; port 0 picks a free one;\n"
    "                      IPv6 as [::1]:9000). When ready it prints\n"
    "                      \"mockllm listening on HOST:PORT\" (the actual port) to stdout.\n"
    "  --ttft-ms N         delay before the first token (default 0)\n"
    "  --itl-ms N          delay between tokens (default 0: all tokens at once, still one\n"
    "                      event per token)\n"
    "  --tokens N          completion tokens per reply (default 16, at most 1000000)\n"
    "  --embed-dims N      length of embedding vectors (default 16, at most 3072), both\n"
    "                      dialects; OpenAI's \"dimensions\" may ask for fewer\n"
    "  --api-key KEY       require \"Authorization: Bearer KEY\" on /v1/*; otherwise 401\n"
    "                      invalid_api_key (counted in auth_failures)\n"
    "  --snowflake-token TOKEN\n"
    "                      require \"Authorization: Bearer TOKEN\" on /api/v2/cortex/*;\n"
    "                      otherwise 401 {\"message\":\"JWT token is invalid. [ID]\",\n"
    "                      \"code\":\"390144\",\"request_id\":ID} (counted in sf_auth_failures).\n"
    "                      Without this option and --snowflake-token-file, Cortex requests\n"
    "                      are not checked.\n"
    "  --snowflake-token-file PATH\n"
    "                      also accept the content of PATH (surrounding whitespace trimmed),\n"
    "                      re-read on every request so tests can rotate the token; a missing\n"
    "                      or empty file accepts nothing. With both options either token\n"
    "                      passes.\n"
    "  --models LIST       comma-separated model names (at most 64, each 1..256 bytes of\n"
    "                      printable ASCII without spaces or commas, e.g.\n"
    "                      meta-llama/Llama-3.1-8B-Instruct,Qwen/Qwen2.5-7B-Instruct; no\n"
    "                      duplicates). GET /v1/models then lists exactly these in vLLM's\n"
    "                      shape, and /v1/chat/completions and /v1/embeddings answer a model\n"
    "                      not in the list with vLLM's 404 (see below). Cortex endpoints are\n"
    "                      not affected.\n"
    "  --name NAME         instance label, 1..64 chars of [A-Za-z0-9_.-] (default: none).\n"
    "                      Every response of the mock's routes (both dialects, errors\n"
    "                      included; not the HTTP layer's own protocol errors such as\n"
    "                      413/431) then carries \"X-Mock-Instance: NAME\"; /stats shows it\n"
    "                      as \"instance\".\n"
    "  --quiet             no per-request log lines (warnings and errors only)\n"
    "  --help              print this text\n"
    "\n"
    "OpenAI endpoints:\n"
    "  POST /v1/chat/completions  OpenAI chat completions; model is echoed, stream=true gives\n"
    "                             SSE: role chunk, one chunk per token, finish chunk, a usage\n"
    "                             chunk (\"choices\":[]) when stream_options.include_usage,\n"
    "                             then data: [DONE]. max_tokens/max_completion_tokens below the\n"
    "                             token count cut the reply (finish_reason \"length\").\n"
    "                             With --models, a model not in the list is answered 404\n"
    "                             {\"object\":\"error\",\"message\":\"The model `NAME` does not\n"
    "                             "
    "exist.\",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}\n"
    "                             (after the auth and body checks, before directives; counted\n"
    "                             in model_not_found); a request without a model gets the\n"
    "                             first listed one, as vLLM does.\n"
    "                             Tools: every assistant tool_calls item needs a string id,\n"
    "                             function.name and function.arguments, and every role \"tool\"\n"
    "                             message a tool_call_id that an earlier assistant tool_calls\n"
    "                             id has; else 400. When the last message has role \"tool\" the\n"
    "                             reply text is \"Tool result received: \" + its content (a\n"
    "                             string, or the texts of its parts joined by spaces).\n"
    "                             response_format "
    "{\"type\":\"json_schema\",\"json_schema\":{\"name\",\n"
    "                             \"schema\":{...}}} is the schema json=1 fills.\n"
    "  POST /v1/embeddings        body: model (optional, as chat), input (a non-empty string,\n"
    "                             an array of 1..2048 non-empty strings, an array of integer\n"
    "                             token ids, or an array of such arrays), encoding_format\n"
    "                             (\"float\" default, or \"base64\": the float32 values\n"
    "                             little-endian, base64), dimensions (1..--embed-dims: the\n"
    "                             vector cut to that length and re-normalised). Reply\n"
    "                             "
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":I,\n"
    "                             \"embedding\":[F,...] or \"BASE64\"},...],\"model\":MODEL,\n"
    "                             \"usage\":{\"prompt_tokens\":N,\"total_tokens\":N}}; N = words "
    "of\n"
    "                             the texts + 1 per token id. Bad input is 400 in OpenAI's\n"
    "                             shape; auth and --models as for chat.\n"
    "  GET  /v1/models            a few Lambda model ids; with --models exactly those:\n"
    "                             "
    "{\"object\":\"list\",\"data\":[{\"id\":NAME,\"object\":\"model\",\n"
    "                             \"created\":UNIX_TIME,\"owned_by\":\"vllm\",\"root\":NAME,\n"
    "                             "
    "\"parent\":null,\"max_model_len\":32768,\"permission\":[]},...]}\n"
    "\n"
    "Snowflake Cortex endpoints (every reply carries X-Snowflake-Request-ID; errors are\n"
    "{\"message\",\"code\",\"request_id\"} with code \"390\"+status, \"390144\" for 401, except "
    "on\n"
    "/api/v2/cortex/v1/messages, which answers in Anthropic's shape):\n"
    "  POST /api/v2/cortex/inference:complete  (also /api/v2/cortex/inference/complete)\n"
    "      Body: model, messages [{role?, content | content_list}], temperature, top_p,\n"
    "      max_tokens, response_format {type:\"json\",schema}, guardrails, tools, tool_choice,\n"
    "      stream. Checked like Snowflake (400): model required; messages a non-empty array;\n"
    "      roles system|user|assistant, system only first; the last message has role user\n"
    "      or none; options of the wrong type; content_list items (below). stream defaults\n"
    "      to TRUE: text/event-stream,\n"
    "      \"event: message\\ndata: <json>\\n\\n\" per chunk, no [DONE]; the response carries\n"
    "      \"Connection: close\" and ends with the chunked terminator followed by the close of\n"
    "      the connection (close_delimited=1: no framing, the close alone ends the body).\n"
    "      Chunk shape by directive shape=N (default 3):\n"
    "        1  pretty-printed JSON over several data: lines, usage in every chunk with\n"
    "           completion_tokens counting up\n"
    "        2  one line per chunk, \"usage\":{} until a final chunk\n"
    "           {\"choices\":[{\"delta\":{}}],\"usage\":{...}}\n"
    "        3  {\"id\",\"model\",\"choices\":[{\"delta\":{\"type\":\"text\",\"content\":T,\n"
    "           \"content_list\":[{\"type\":\"text\",\"text\":T}],\"text\":T}}],\"usage\":{}},\n"
    "           usage (prompt_tokens, completion_tokens, total_tokens, guard_tokens) on the\n"
    "           last chunk (a chunk with empty text when there are no tokens)\n"
    "      stream:false: {\"id\",\"model\",\"choices\":[{\"message\":{\"content\":TEXT,\n"
    "      \"content_list\":[{\"type\":\"text\",\"text\":TEXT}]}}],\"finish_reason\":\"stop\",\n"
    "      \"usage\":{...}}; finish_reason (top level) is \"length\" when max_tokens cut the\n"
    "      reply, \"tool_use\" with tool=1, \"prohibited_content\" with prohibited=1.\n"
    "      guard_tokens = prompt + completion tokens when guardrails is true or an object,\n"
    "      else 0. The chunk/reply id is the X-Snowflake-Request-ID.\n"
    "      content_list items (snowflake-rest-api-specs cortex-inference.yaml) must be\n"
    "      objects with a string type: {\"type\":\"text\",\"text\":S};\n"
    "      {\"type\":\"tool_use\",\"tool_use\":{\"tool_use_id\":S,\"name\":S,\"input\":{...}}};\n"
    "      "
    "{\"type\":\"tool_results\",\"tool_results\":{\"tool_use_id\":S,\"name\":S,\"content\":[\n"
    "      {\"type\":\"text\",\"text\":S} | {\"type\":\"json\",\"json\":{...}}, "
    "...],\"status\"?:S,\n"
    "      \"result\"?:{...}}} (type \"tool_result\", the spec's discriminator name, is taken\n"
    "      too), its tool_use_id that of a tool_use in an earlier message; other types\n"
    "      pass. Anything else is 400 \"invalid messages: ...\". When the last message has\n"
    "      tool_results the reply text is \"Tool result received: \" + each result's content\n"
    "      (texts, and json items as compact JSON, joined by spaces; results joined by\n"
    "      \"; \").\n"
    "  POST /api/v2/cortex/inference:embed  (also inference%3Aembed; cortex-embed.yaml)\n"
    "      Body: model (required), text (required: a non-empty array of strings; the mock\n"
    "      takes at most 2048), provisioned_throughput_id (optional string). Reply\n"
    "      "
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":[[F,...]],\"index\":I},"
    "\n"
    "      ...],\"model\":MODEL,\"usage\":{\"total_tokens\":N}} (the spec's embedding is an array\n"
    "      of float arrays: here one vector of --embed-dims floats per text; N = words).\n"
    "  POST /api/v2/cortex/v1/chat/completions  Cortex's OpenAI-compatible endpoint: OpenAI\n"
    "      shapes as /v1/chat/completions (stream defaults to false), Snowflake auth and\n"
    "      error JSON; max_completion_tokens accepted, max_tokens refused with 400.\n"
    "  POST /api/v2/cortex/v1/messages  Anthropic's Messages API (Snowflake's spec leaves\n"
    "      the bodies open; the mock follows Anthropic's). Body: model, max_tokens\n"
    "      (required, integer >= 1), messages [{role user|assistant, content: a string or\n"
    "      blocks text {text} | tool_use {id,name,input} (assistant) | tool_result\n"
    "      {tool_use_id, content?: string or text blocks, is_error?} (user) | others}],\n"
    "      system (a string or text blocks), stream, tools [{name, input_schema}],\n"
    "      output_config {\"format\":{\"type\":\"json_schema\",\"schema\":{...}}} (or the beta\n"
    "      output_format {\"type\":\"json_schema\",\"schema\"}) for json=1. A tool_result must\n"
    "      answer a tool_use of the previous message and every tool_use of an earlier\n"
    "      assistant message needs its tool_result in the next one. Errors:\n"
    "      {\"type\":\"error\",\"error\":{\"type\":T,\"message\":M},\"request_id\":ID} with T\n"
    "      invalid_request_error (400), authentication_error (401, the Snowflake token),\n"
    "      billing_error (402), permission_error (403), not_found_error (404),\n"
    "      request_too_large (413), rate_limit_error (429), timeout_error (504),\n"
    "      overloaded_error (529), api_error (other 5xx). Reply {\"id\":\"msg_mock_N\",\n"
    "      "
    "\"type\":\"message\",\"role\":\"assistant\",\"model\":MODEL,\"content\":[{\"type\":\"text\",\n"
    "      \"text\":TEXT}, tool_use block with "
    "tool=1],\"stop_reason\":\"end_turn\"|\"max_tokens\"|\n"
    "      \"tool_use\"|\"refusal\" (prohibited=1),\"stop_sequence\":null,\"usage\":{\n"
    "      \"input_tokens\":N,\"output_tokens\":N}}. stream:true: \"event: NAME\" + data per\n"
    "      event: message_start (content [], usage with output_tokens 1),\n"
    "      content_block_start (text), ping, content_block_delta {\"type\":\"text_delta\",\n"
    "      \"text\":T} per token, content_block_stop, with tool=1 a tool_use block\n"
    "      {\"type\":\"tool_use\",\"id\":\"toolu_mock_1\",\"name\":NAME,\"input\":{}} and its\n"
    "      {\"type\":\"input_json_delta\",\"partial_json\":FRAGMENT} deltas, message_delta\n"
    "      {\"delta\":{\"stop_reason\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":N}},\n"
    "      message_stop; midstream_error=N sends event: error {\"type\":\"error\",\"error\":\n"
    "      {\"type\":\"api_error\",...}}. A last user message with tool_result blocks gets the\n"
    "      reply text \"Tool result received: \" + their contents (\"; \" between results).\n"
    "      input_tokens count system text words too.\n"
    "  GET  /api/v2/cortex/models  {\"models\":[{\"name\":\"claude-sonnet-4-5\"},...]}\n"
    "\n"
    "Other endpoints:\n"
    "  GET  /stats                counters as JSON;  POST /stats/reset zeroes them (and the\n"
    "                             fail_key counters)\n"
    "  GET  /healthz              {\"status\":\"ok\"}\n"
    "  POST /control              runtime fault switches, for taking the instance \"down\"\n"
    "                             without restarting it. JSON body with any of:\n"
    "                               \"fail_status\": CODE  400..599: from now on every chat,\n"
    "                                 messages and embeddings request (both dialects) and\n"
    "                                 GET /v1/models and GET /api/v2/cortex/models answer\n"
    "                                 CODE with the dialect's error body for CODE (as\n"
    "                                 status=CODE; no Retry-After); 0 turns it off\n"
    "                               \"hang\": true|false  chat, messages and embeddings\n"
    "                                 requests and model listings are never answered (as\n"
    "                                 hang=1); requests already hanging stay so when it is\n"
    "                                 turned off\n"
    "                               \"reset\": true  every switch off (applied first)\n"
    "                             200 {\"fail_status\":N,\"hang\":B} (the resulting state);\n"
    "                             any other body 400. A switch that is on wins over\n"
    "                             directives and is checked first (before auth and body\n"
    "                             checks; fail_status before hang). /healthz, /stats,\n"
    "                             /stats/reset and /control are never affected; POST\n"
    "                             /stats/reset leaves the switches alone.\n"
    "\n"
    "Reply text: token i (0-based) is word i%16 of \"The quick brown fox jumps over the lazy\n"
    "dog while mock tokens stream steadily to clients\" plus one space. prompt_tokens = words\n"
    "in all message texts (string content, text parts of array content or content_list) + 3\n"
    "per message; completion_tokens = tokens produced (tool events included).\n"
    "A tool result's echo or a json=1 document replaces the tokens (tokens= is then\n"
    "ignored; max_tokens still cuts): it is sent in pieces, one per event, each ending after\n"
    "a space, newline, ',' or ':' (and the white space after it) or at about 16 bytes, never\n"
    "inside a UTF-8 character; the pieces concatenate to the text and count as the\n"
    "completion tokens. Tool results longer than 64 KiB are cut.\n"
    "Timing: stream head at once (after headers_delay_ms), first event after ttft, then one\n"
    "event per itl. A non-streamed reply is sent when the last event would be:\n"
    "headers_delay + ttft + itl*(events-1).\n"
    "\n"
    "Directives (per request, for tests): \"[mock:k=v,k=v]\" anywhere in a message text (the\n"
    "Messages endpoint's system text and embedding input texts too), or the header\n"
    "\"X-Mock: k=v,k=v\" (the header wins). Values are non-negative integers. Both dialects\n"
    "unless noted; the Messages endpoint as Cortex's chat where it makes sense (errors,\n"
    "events and stop reasons in Anthropic's shapes, as described there). Embeddings take\n"
    "only status, retry_after, headers_delay_ms, hang, garbage, cut_after (non-stream\n"
    "meanings) and fail_times/fail_key; the others are accepted and ignored.\n"
    "  tokens=N            completion tokens for this request\n"
    "  ttft_ms=N, itl_ms=N timing for this request\n"
    "  headers_delay_ms=N  wait N ms before sending the response head\n"
    "  status=CODE         answer CODE (400..599) with an error: OpenAI and Messages \"mock\n"
    "                      failure CODE\";\n"
    "                      Cortex 400 \"invalid options object\", 401 \"JWT token is invalid\",\n"
    "                      402 \"budget exceeded\", 403 \"Not Authorized: ...CORTEX_USER...\",\n"
    "                      404 \"model not found\", 429 \"Too many requests\",\n"
    "                      500 \"internal error\", 503 \"inference timed out\", 504 \"gateway\n"
    "                      timeout\", others \"mock failure CODE\". Every OpenAI 429 (this\n"
    "                      one and the fail_status switch's) carries x-ratelimit-limit-requests:\n"
    "                      60, x-ratelimit-remaining-requests: 0, x-ratelimit-reset-requests:\n"
    "                      1s, x-ratelimit-limit-tokens: 100000, x-ratelimit-remaining-tokens:\n"
    "                      0, x-ratelimit-reset-tokens: 1s (as OpenAI's API); Cortex sends no\n"
    "                      rate-limit headers (as Snowflake)\n"
    "  retry_after=N       with status=CODE (400..599): the error carries \"Retry-After: N\"\n"
    "                      (seconds, 0..3600), both dialects\n"
    "  fail_times=N        only the first N requests with the same fail_key apply the failure\n"
    "  fail_key=K          directives (status, cut_after, midstream_error, hang, garbage,\n"
    "                      headers_delay_ms); later ones succeed. Key default 0; the last 256\n"
    "                      keys are remembered; POST /stats/reset forgets them.\n"
    "  cut_after=N         stream: after min(N,events) content events close the connection\n"
    "                      without the chunked terminator; non-stream: close instead of replying\n"
    "  midstream_error=N   stream: after min(N,events) content events send an error event and\n"
    "                      end the stream. OpenAI: data: {\"error\":{\"message\":\"mock "
    "mid-stream\n"
    "                      error after N tokens\",\"type\":\"server_error\",...}} then [DONE];\n"
    "                      Cortex: event: message / data: {\"error\":\"mock mid-stream error\n"
    "                      after N tokens\",\"code\":\"390500\",\"request_id\":ID}, then the "
    "close\n"
    "  hang=1              never answer; the request stays open until the client leaves\n"
    "  garbage=1           stream: 200 text/event-stream with non-SSE bytes, then\n"
    "                      \"data: not-json\", then a clean end; non-stream: 200 with a non-JSON "
    "body\n"
    "  no_usage=1          omit usage (OpenAI: the usage chunk even with include_usage;\n"
    "                      Cortex: \"usage\":{} everywhere; Messages: no usage objects)\n"
    "  tool=1              after the text tokens, a tool call (name: the request's first tool,\n"
    "                      else get_weather; arguments {\"city\":\"Paris\",\"unit\":\"celsius\"} "
    "in 5\n"
    "                      fragments; 6 events). Cortex: delta {\"type\":\"tool_use\",\n"
    "                      \"tool_use_id\":\"toolu_1\",\"name\":NAME}, then "
    "{\"type\":\"tool_use\",\n"
    "                      \"input\":FRAGMENT}...; OpenAI: delta.tool_calls (id call_mock_1),\n"
    "                      finish_reason \"tool_calls\"; Messages: a tool_use block (above).\n"
    "                      Not in a reply to tool results (so agent loops end).\n"
    "  close_delimited=1   stream: no chunked framing and no Content-Length; the body ends when\n"
    "                      the connection closes (counted in close_delimited)\n"
    "  shape=1|2|3         Cortex inference:complete chunk shape (default 3)\n"
    "  prohibited=1        Cortex: \"finish_reason\":\"prohibited_content\" in the choice of the\n"
    "                      last chunk (shape 2: the final chunk), top level when non-stream\n"
    "  no_done=1           OpenAI framing: no data: [DONE]\n"
    "  json=1              structured output: the reply text is a compact JSON document valid\n"
    "                      for the request's schema (OpenAI response_format json_schema's\n"
    "                      schema, Cortex response_format {\"type\":\"json\",\"schema\"}, "
    "Messages\n"
    "                      output_config.format): objects with every property (required\n"
    "                      ones first), enum/const: the first value, anyOf/oneOf/allOf: the\n"
    "                      first alternative, local $ref, strings \"example\" (or a value for\n"
    "                      date-time, date, time, email, uri, uuid, ipv4, ipv6, hostname;\n"
    "                      min/maxLength kept), integers 1 and numbers 1.5 (moved inside\n"
    "                      minimum/maximum), booleans true, null, arrays with one item (or\n"
    "                      minItems). Below 16 levels only required properties and minItems\n"
    "                      items (so recursive schemas end). Streamed in pieces (see Reply\n"
    "                      text). Without a schema in the request: 400 saying how to give\n"
    "                      one; a schema past 32 levels, 10000 values or 64 KiB, or with an\n"
    "                      unresolvable $ref: 400.\n"
    "\n"
    "Stats (GET /stats): requests (chat and messages requests received, rejected ones\n"
    "included), streams_started (stream heads sent), streams_completed, streams_aborted (the\n"
    "client left before the end), nonstream_completed, nonstream_aborted, active (requests in\n"
    "progress), max_active, auth_failures, paused (times a stream paused because the client\n"
    "was not reading), cut (cut_after closes), errors_injected (status= replies and requests\n"
    "failed by the fail_status switch), midstream_errors, close_delimited (close-delimited\n"
    "streams started), cortex_requests (chat and messages requests on /api/v2/cortex/),\n"
    "sf_auth_failures, embed_requests (POST /v1/embeddings and\n"
    "/api/v2/cortex/inference:embed, rejected ones included; not in requests),\n"
    "messages_requests (POST /api/v2/cortex/v1/messages, rejected ones included),\n"
    "models_requests (GET /v1/models and GET /api/v2/cortex/models, those failed or held by a\n"
    "switch included), model_not_found (--models 404s), control_requests (POST /control,\n"
    "rejected ones included), last_model, last_authorization_seen (the last chat request\n"
    "carried an Authorization header), last_token_type (the\n"
    "X-Snowflake-Authorization-Token-Type of the last Cortex request, \"\" when absent),\n"
    "last_sf_token_suffix (the last 4 characters of its bearer token), instance (--name; \"\"\n"
    "without). Both dialects count in the shared counters; embeddings requests count in\n"
    "active, max_active, nonstream_completed, nonstream_aborted, errors_injected, cut, the\n"
    "auth failures, last_model and last_authorization_seen like non-streamed chats. Chat\n"
    "requests held by the hang switch count in requests and active (and, when the client\n"
    "leaves, in *_aborted) like hang=1.\n"
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

/* --models: comma-separated names into app->models. Returns 0, or -1 with err set. */
static int parse_models(mock_app_t *app, const char *s, char *err, size_t errlen)
{
    app->n_models = 0;
    if (!s || !*s) {
        snprintf(err, errlen, "an empty list");
        return -1;
    }
    for (;;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || n > MOCK_MODEL_MAX) {
            snprintf(err, errlen, "model %zu must be 1..%d bytes", app->n_models + 1,
                     MOCK_MODEL_MAX);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (s[i] <= ' ' || s[i] > '~') {
                snprintf(err, errlen, "model %zu has a space or a non-printable byte",
                         app->n_models + 1);
                return -1;
            }
        }
        if (app->n_models == MOCK_MODELS_MAX) {
            snprintf(err, errlen, "more than %d models", MOCK_MODELS_MAX);
            return -1;
        }
        char *m = app->models[app->n_models];
        memcpy(m, s, n);
        m[n] = '\0';
        if (mock_model_index(app, m) >= 0) {
            snprintf(err, errlen, "model %.64s is listed twice", m);
            return -1;
        }
        app->n_models++;
        if (!e) return 0;
        s = e + 1;
    }
}

/* --name: 1..MOCK_NAME_MAX chars of [A-Za-z0-9_.-]; sets the instance header too. */
static int parse_name(mock_app_t *app, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > MOCK_NAME_MAX) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok) return -1;
    }
    sg_strlcpy(app->name, sizeof(app->name), s);
    snprintf(app->name_hdr, sizeof(app->name_hdr), "X-Mock-Instance: %s\r\n", s);
    return 0;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (the last two on 127.0.0.1). */
static int parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    char buf[320];
    if (s[0] == ':' || !strchr(s, ':')) {
        snprintf(buf, sizeof(buf), "127.0.0.1%s%s", s[0] == ':' ? "" : ":", s);
        s = buf;
    }
    char *h = NULL;
    if (sg_config_parse_listen(s, &h, port) != NULL) return -1;
    int ok = strlen(h) < hostlen;
    if (ok) sg_strlcpy(host, hostlen, h);
    free(h);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    static mock_app_t app;
    app.tokens = 16;
    app.embed_dims = MOCK_EMBED_DIMS;
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
        } else if (strcmp(a, "--embed-dims") == 0) {
            bad = parse_uint(v, MOCK_EMBED_DIMS_MAX, &app.embed_dims) != 0 || app.embed_dims == 0;
        } else if (strcmp(a, "--api-key") == 0) {
            bad = !v || !*v;
            app.api_key = v;
        } else if (strcmp(a, "--snowflake-token") == 0) {
            bad = !v || !*v;
            app.sf_token = v;
        } else if (strcmp(a, "--snowflake-token-file") == 0) {
            bad = !v || !*v;
            app.sf_token_file = v;
        } else if (strcmp(a, "--models") == 0) {
            char err[128];
            if (v && parse_models(&app, v, err, sizeof(err)) != 0) {
                fprintf(stderr, "mockllm: bad --models: %s (see --help)\n", err);
                return 2;
            }
            bad = !v;
        } else if (strcmp(a, "--name") == 0) {
            bad = parse_name(&app, v) != 0;
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
    sg_raise_nofile_limit();
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
