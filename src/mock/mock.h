/* mockllm internals shared by its source files: mockllm.c (token generation, directives, jobs,
 * the OpenAI wire format, routes, main), mock_cortex.c (the Snowflake Cortex wire formats, auth
 * and routes), mock_messages.c (Cortex's Anthropic Messages endpoint), mock_embed.c (both
 * dialects' embeddings) and mock_schema.c (json=1 documents). Not a public interface of the
 * gateway. */
#ifndef SOPHIA_MOCK_H
#define SOPHIA_MOCK_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sophia/buf.h"
#include "sophia/http.h"

#define MOCK_MAX_TOKENS 1000000u  /* cap on tokens=/--tokens */
#define MOCK_MAX_DELAY_MS 3600000 /* cap on every *_ms value */
#define MOCK_MODEL_MAX 256        /* longest model name accepted (bytes) */
#define MOCK_TOOL_NAME_MAX 64     /* longest tool name accepted (bytes) */
#define MOCK_FAIL_KEYS 256        /* fail_key=K slots remembered (oldest reused) */
#define MOCK_MODELS_MAX 64        /* names in --models */
#define MOCK_NAME_MAX 64          /* longest --name */
#define MOCK_RETRY_AFTER_MAX 3600 /* cap on retry_after= (seconds) */
#define MOCK_HDRS_MAX 512         /* extra response header lines of one reply (bytes) */
#define MOCK_REPLY_MAX 65536      /* longest reply text other than tokens (tool results cut) */
#define MOCK_PIECE_MAX 16         /* a reply text is streamed in pieces of at most ~this */
#define MOCK_EMBED_DIMS 16        /* default --embed-dims */
#define MOCK_EMBED_DIMS_MAX 3072  /* largest --embed-dims */
#define MOCK_EMBED_ITEMS_MAX 2048 /* most inputs of one embeddings request */
#define MOCK_ERR_MAX 512          /* error messages of request checks (bytes) */

/* ---- token generation -------------------------------------------------------------------- */

/* Token i (0-based) is word i % 16 of a fixed list followed by one space. */
const char *mock_token_word(uint32_t i);
/* Number of whitespace-separated words in s[0..n) (the mock's token count of a text). */
uint32_t mock_count_words(const char *s, size_t n);

/* tool=1: a tool call after the text tokens. Item n_tokens is the call's head (id, name), then
 * MOCK_TOOL_FRAGS argument fragments whose concatenation is MOCK_TOOL_ARGS. */
#define MOCK_TOOL_FRAGS 5
#define MOCK_TOOL_ITEMS (1 + MOCK_TOOL_FRAGS)
#define MOCK_TOOL_ARGS "{\"city\":\"Paris\",\"unit\":\"celsius\"}"
#define MOCK_TOOL_ARGS_JSON "{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"celsius\\\"}"
/* Fragment k, already escaped for use inside a JSON string literal. */
const char *mock_tool_frag_json(uint32_t k);

/* ---- directives -------------------------------------------------------------------------- */

/* Per-request switches; -1 (or 0 for flags/status) means "not given". */
typedef struct mock_directives {
    int32_t tokens;
    int32_t ttft_ms;
    int32_t itl_ms;
    int32_t headers_delay_ms;
    int32_t status;          /* 0: none; 200 or 400..599 */
    int32_t cut_after;       /* -1: none */
    int32_t midstream_error; /* -1: none */
    int32_t fail_times;      /* -1: none */
    int32_t fail_key;        /* -1: none (key 0) */
    int32_t retry_after;     /* -1: none; seconds for Retry-After on status= errors */
    int8_t shape;            /* 0: default */
    int8_t hang, garbage, no_usage, prohibited, tool, close_delimited, no_done, json;
} mock_directives_t;

void mock_directives_init(mock_directives_t *d);
/* Applies every "[mock:...]" found in text[0..n). Returns 0, or -1 with err set. */
int mock_directives_scan(mock_directives_t *d, const char *text, size_t n, char *err,
                         size_t errlen);
/* Walks chat messages: sums prompt tokens (words + 3 per message; string "content", the
 * "text" of array content parts and of "content_list" items) and applies directives found in
 * those texts. */
int mock_scan_messages(const cJSON *messages, mock_directives_t *d, uint32_t *prompt_tokens,
                       char *err, size_t errlen);

/* ---- application ------------------------------------------------------------------------- */

typedef struct mock_stats {
    uint64_t requests, streams_started, streams_completed, streams_aborted, active;
    uint64_t nonstream_completed, nonstream_aborted, auth_failures, max_active, paused;
    uint64_t cut, errors_injected, midstream_errors, close_delimited;
    uint64_t cortex_requests, sf_auth_failures, embed_requests, messages_requests;
    uint64_t models_requests, model_not_found, control_requests;
    char last_model[MOCK_MODEL_MAX + 1];
    char last_token_type[65];     /* X-Snowflake-Authorization-Token-Type of the last call */
    char last_sf_token_suffix[5]; /* last 4 chars of the last Cortex bearer token */
    int last_authorization_seen;
} mock_stats_t;

typedef struct mock_fail_slot {
    uint32_t key, count;
} mock_fail_slot_t;

typedef struct mock_app {
    uv_loop_t *loop;
    sg_http_server_t *srv;
    uv_signal_t sig_int, sig_term;
    int stopping;
    int quiet;
    const char *api_key;
    const char *sf_token;             /* --snowflake-token */
    const char *sf_token_file;        /* --snowflake-token-file (re-read on every request) */
    uint32_t tokens, ttft_ms, itl_ms; /* defaults from the command line */
    uint32_t embed_dims;              /* --embed-dims */
    uint64_t next_id;
    int64_t started; /* unix time, "created" of /v1/models */
    mock_stats_t stats;
    mock_fail_slot_t fail[MOCK_FAIL_KEYS];
    size_t n_fail, fail_next;
    char name[MOCK_NAME_MAX + 1];                     /* --name; "" when not given */
    char name_hdr[MOCK_NAME_MAX + 20];                /* "X-Mock-Instance: NAME\r\n", or "" */
    char models[MOCK_MODELS_MAX][MOCK_MODEL_MAX + 1]; /* --models */
    size_t n_models;                                  /* 0: no --models */
    int fail_status;                                  /* POST /control: 0 or 400..599 */
    int hang;                                         /* POST /control: never answer */
} mock_app_t;

/* Extra header lines of a reply: extra (NULL or "Name: value\r\n" lines; it may live in buf)
 * followed by the X-Mock-Instance line of --name, written to buf[cap] (at least
 * MOCK_HDRS_MAX). Returns buf, or NULL when there are no lines. */
const char *mock_headers(const mock_app_t *app, const char *extra, char *buf, size_t cap);

/* ---- output buffer ----------------------------------------------------------------------- */

/* Bounded output buffer on the stack: events are formatted here, then written as one chunk. */
#define MOCK_OUT_CAP 32768
#define MOCK_EVENT_MAX 4096 /* one event; model ≤ 1538 and tool name ≤ 386 bytes escaped */
typedef struct mock_out {
    size_t len;
    char data[MOCK_OUT_CAP];
} mock_out_t;

void mock_out_printf(mock_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mock_out_append(mock_out_t *o, const char *s, size_t n);

/* ---- wire formats and jobs --------------------------------------------------------------- */

typedef struct mock_job mock_job_t;

/* What a wire's requests are: counted and scheduled accordingly. */
typedef enum {
    MOCK_KIND_CHAT,     /* chat completions (requests; cortex_requests on Snowflake wires) */
    MOCK_KIND_MESSAGES, /* Anthropic messages (requests, cortex_requests, messages_requests) */
    MOCK_KIND_EMBED,    /* embeddings (embed_requests only; never streamed, no tokens) */
} mock_kind_t;

/* A wire format: how a reply is framed. Each stream_* function appends whole events (embed
 * wires, never streamed, have none). */
typedef struct mock_wire {
    const char *name;
    mock_kind_t kind;
    int vllm_models;       /* --models applies (vLLM's 404; the first model when none given) */
    const char *json_hint; /* how a request asks for structured output (json=1's 400) */
    const char *stream_content_type;
    const char *stream_headers; /* extra response header lines for streams */
    int snowflake;              /* X-Snowflake-Request-ID on every reply */
    int close_at_end;           /* streams end by closing the connection (Connection: close) */
    /* Events before the first item (OpenAI: the role chunk). */
    void (*stream_open)(const mock_job_t *j, mock_out_t *o);
    /* The event carrying item i: text token i (i < n_tokens) or tool item i - n_tokens. */
    void (*stream_token)(const mock_job_t *j, uint32_t i, mock_out_t *o);
    /* Events after the last item (finish, usage, terminator). */
    void (*stream_close)(const mock_job_t *j, mock_out_t *o);
    /* A mid-stream error event (and whatever ends the stream after it). */
    void (*stream_error)(const mock_job_t *j, mock_out_t *o);
    /* The whole non-streamed reply; must end the request (sg_http_respond). */
    void (*respond)(mock_job_t *j);
    /* An error reply in this format; code may be NULL; message NULL means "an injected
     * status= failure" (the wire picks the text); extra: NULL or more header lines (the
     * instance header is added). */
    void (*respond_error)(const mock_app_t *app, sg_http_req_t *req, int status, const char *code,
                          const char *message, const char *extra);
} mock_wire_t;

struct mock_job {
    uv_timer_t timer; /* data = job; closed (then the job freed) when the job finishes */
    mock_app_t *app;
    sg_http_req_t *req; /* NULL once the request has ended */
    const mock_wire_t *wire;
    uint64_t id;
    int64_t created;
    uint64_t due;      /* loop time (ms) the next timed event is due: no drift under load */
    uint32_t n_tokens; /* text tokens to produce */
    uint32_t n_items;  /* n_tokens + tool items */
    uint32_t next;     /* next item index */
    uint32_t prompt_tokens;
    uint32_t ttft_ms, itl_ms, headers_delay_ms;
    int32_t cut_after;
    int32_t midstream_error;
    int32_t retry_after; /* -1: no Retry-After on the status= error */
    uint16_t status;
    uint8_t phase;
    uint8_t shape; /* Cortex chunk shape 1..3 */
    unsigned stream : 1, want_usage : 1, finish_length : 1, garbage : 1, opened : 1, paused : 1,
        dead : 1, tool : 1, prohibited : 1, close_delimited : 1, no_done : 1, guard : 1;
    char sf_id[37];    /* Snowflake request id (UUID) */
    uint16_t tool_off; /* offset of the tool name literal in lit[] */
    /* The reply text when it is not the usual tokens (NULL: tokens): chats hold it escaped
     * for a JSON string, piece i (a text item) ending at piece_end[i]; embed wires hold their
     * prebuilt "data" array (no pieces). Owned. */
    char *text;
    size_t text_len;
    uint32_t *piece_end;
    char lit[]; /* model as a JSON string literal, NUL, tool name literal, NUL */
};

/* The model as a JSON string literal (with quotes). */
static inline const char *mock_job_model(const mock_job_t *j)
{
    return j->lit;
}
/* The tool name as a JSON string literal (with quotes). */
static inline const char *mock_job_tool(const mock_job_t *j)
{
    return j->lit + j->tool_off;
}

/* Text item i (< n_tokens) of job j, escaped for a JSON string (no quotes), *len bytes:
 * token word i%16 plus a space, or piece i of the reply text. */
const char *mock_job_piece(const mock_job_t *j, uint32_t i, int *len);
/* Appends the whole reply text of j (its first n_tokens items), escaped, to b. */
void mock_job_text_append(const mock_job_t *j, sg_buf_t *b);

/* A parsed request, independent of the wire format. */
typedef struct mock_chat {
    const char *model;     /* borrowed from the request JSON */
    const char *tool_name; /* borrowed; NULL: "get_weather" */
    const cJSON *schema;   /* borrowed: the structured-output schema asked for, or NULL */
    int stream;
    int include_usage;
    int guard;            /* Cortex guardrails requested */
    long long max_tokens; /* -1: not given */
    uint32_t prompt_tokens;
    mock_directives_t d;
    /* Owned (malloc): the reply text instead of the tokens (a tool result's echo, a json=1
     * document), or, for embed wires, the prebuilt "data" array; NULL when none. */
    char *reply;
    size_t reply_len;
    int tool_reply; /* the reply answers tool results: no new tool call (tool=1 ignored) */
} mock_chat_t;

/* Reads a request of one wire format. Returns 0, or -1 with err set (answered with 400 in
 * the wire's error shape). */
typedef int (*mock_parse_fn)(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                             size_t errlen);

/* Sets c's reply to "Tool result received: " followed by text[0..n) (cut to fit
 * MOCK_REPLY_MAX at a character boundary). */
void mock_chat_tool_reply(mock_chat_t *c, const char *text, size_t n);
/* Appends the text of a result's content to b: a string as is; of an array, the "text" of
 * text items and the compact JSON of "json" items (Cortex), separated by one space. */
void mock_result_text_append(sg_buf_t *b, const cJSON *content);

/* Answers a chat request: auth (the wire's), JSON body, parse, directives, then the job. */
void mock_handle_chat(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire,
                      mock_parse_fn parse);

/* Extra header lines for a whole reply of job j ("X-Snowflake-Request-ID: …\r\n" for
 * Snowflake wires, the instance header), in buf[cap] (at least MOCK_HDRS_MAX); NULL when
 * there are none. */
const char *mock_reply_headers(const mock_job_t *j, char *buf, size_t cap);

/* ---- OpenAI wire (mockllm.c) ------------------------------------------------------------- */

extern const mock_wire_t mock_wire_openai;
/* OpenAI chat request; with reject_max_tokens set "max_tokens" is refused (Cortex's
 * OpenAI-compatible endpoint). */
int mock_oai_parse(const cJSON *root, mock_chat_t *c, int reject_max_tokens, char *err,
                   size_t errlen);
/* The OpenAI error body {"error":{"message","type","param":null,"code"}} for status with the
 * instance header and extra (NULL or header lines); 429 adds OpenAI's rate-limit headers. */
void mock_oai_respond_error(const mock_app_t *app, sg_http_req_t *req, int status, const char *code,
                            const char *message, const char *extra);
/* Authorizes a request on the /v1 paths (--api-key); on failure answers 401 in wire's shape. */
int mock_oai_authorize(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire);
void mock_oai_stream_open(const mock_job_t *j, mock_out_t *o);
void mock_oai_stream_token(const mock_job_t *j, uint32_t i, mock_out_t *o);
void mock_oai_stream_close(const mock_job_t *j, mock_out_t *o);
void mock_oai_stream_error(const mock_job_t *j, mock_out_t *o);
void mock_oai_respond(mock_job_t *j);

/* ---- Snowflake Cortex (mock_cortex.c) ---------------------------------------------------- */

extern const mock_wire_t mock_wire_cortex;
extern const mock_wire_t mock_wire_sf_openai;
/* Writes a new Snowflake-style request id (UUID, 36 chars + NUL). */
void mock_sf_request_id(char out[37]);
/* Snowflake error JSON {"message","code","request_id"} with X-Snowflake-Request-ID, the
 * instance header and extra (NULL or header lines). */
void mock_sf_respond_error(const mock_app_t *app, sg_http_req_t *req, int status, const char *code,
                           const char *message, const char *extra);
/* Checks the Snowflake bearer token (records the stats); on failure answers 401 in wire's
 * error shape and returns 0. */
int mock_sf_authorize(mock_app_t *app, sg_http_req_t *req, const mock_wire_t *wire);
/* Routes /api/v2/cortex/... Returns 1 when the path belongs to Cortex (answered), else 0. */
int mock_cortex_route(mock_app_t *app, sg_http_req_t *req);

/* ---- Cortex's Anthropic Messages endpoint (mock_messages.c) ------------------------------ */

extern const mock_wire_t mock_wire_messages;
int mock_messages_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                        size_t errlen);

/* ---- embeddings (mock_embed.c) ----------------------------------------------------------- */

extern const mock_wire_t mock_wire_embed_openai;
extern const mock_wire_t mock_wire_embed_cortex;
int mock_embed_oai_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                         size_t errlen);
int mock_embed_cortex_parse(const mock_app_t *app, const cJSON *root, mock_chat_t *c, char *err,
                            size_t errlen);
/* The unit vector of text s[0..n) in dims dimensions: the sum over its whitespace-separated
 * words (the whole text when it has none) of a pseudo-random vector seeded by the word's
 * hash, normalised. */
void mock_embed_vector(const char *s, size_t n, uint32_t dims, float *out);

/* ---- json=1 documents (mock_schema.c) ---------------------------------------------------- */

/* A compact JSON document that validates against schema (malloc, *len bytes), or NULL with
 * err set when the schema is beyond the mock (too large, unresolvable $ref). */
char *mock_schema_example(const cJSON *schema, size_t *len, char *err, size_t errlen);

#endif
