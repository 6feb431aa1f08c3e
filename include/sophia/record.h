/* The request record: everything known about one request, filled as it runs (by the endpoint
 * handler and the completion pipeline) and handed, once, when it ends, to the observers: the
 * log line, the metrics, and whatever later modules register (ledger, budgets). Observers read
 * the record only; nothing reads request internals. */
#ifndef SOPHIA_RECORD_H
#define SOPHIA_RECORD_H

#include <stdint.h>

#include "sophia/http.h"
#include "sophia/provider.h"

struct sg_scope;

/* What admission charged for a request (src/pipeline/admission.c): the scopes whose token
 * buckets, concurrency slots and budgets it holds, and the amounts reserved, given back or
 * settled to the real figures when the request ends. */
typedef struct sg_ticket {
    const struct sg_key_cfg *key; /* the client's key (its generation's), NULL when none */
    struct sg_scope *scopes[4]; /* key, team, global, provider/model (process-wide, never freed) */
    int n;
    int admitted;
    int settled;
    long prompt_est;     /* estimated prompt tokens */
    long est_tokens;     /* taken from the tokens/min buckets: prompt_est + max output */
    double est_usd;      /* taken from the USD/min buckets (the worst case) */
    double reserved_usd; /* held against the budgets (worst case; grows as a stream runs) */
    long out_tokens;     /* a stream's output so far (estimated as it is relayed) */
    int hard_budget;     /* some scope has a hard budget: a stream's output is charged as it
                            goes (sg_admit_stream); otherwise nothing can end it early */
    long retry_after_s;  /* a refusal's Retry-After, 0 when none */
} sg_ticket_t;

typedef struct sg_record {
    char request_id[SG_HTTP_REQUEST_ID_MAX + 1];
    const char *method; /* static strings */
    const char *path;
    char key[64];       /* the client key's name, "" when none */
    char team[64];      /* its team, "" when none */
    char model[256];    /* what the client asked for */
    char route[256];    /* the public model name that served it (the last attempt's) */
    int route_unlisted; /* route is a name the client chose, passed through unlisted (not a
                           configured or discovered model: metrics label it "none") */
    char provider[64];
    char endpoint[256]; /* the last attempt's base URL, user-info redacted */
    char rule[32];      /* how the route was chosen: explicit, alias, hint, auto */
    char why[512];      /* the decision and the chain tried (X-Sophia-Route) */
    int stream;
    int status;           /* HTTP status sent to the client (0: none) */
    int client_gone;      /* the client left before the end */
    long upstream_status; /* the last attempt's */
    int attempts;
    int fallbacks;              /* attempts that went to another model or endpoint */
    sg_usage_t usage;           /* final counts; usage.known 0: estimated by the gateway */
    double price_in, price_out; /* USD per 1M tokens of the model that served (the last
                                   attempt's route) */
    double cost_in_usd, cost_out_usd, cost_usd; /* sg_record_cost() */
    uint64_t upstream_ns; /* time spent waiting on the upstream (every attempt's exchange,
                             from its start to its end) */
    sg_ticket_t ticket;
    const char *denied; /* NULL, or why admission refused: "throttled", "budget", "forbidden" */
    uint64_t start_ns, ttfb_ns, ttft_ns, end_ns; /* ttfb: upstream's first byte; ttft: first
                                                    token to the client; 0 when none */
    const char *outcome; /* ok, client_closed, upstream_error, upstream_timeout,
                            upstream_truncated, rejected, shutdown */
    char error[512];     /* what went wrong (redacted), "" when nothing */
} sg_record_t;

struct sg_gateway;
typedef void (*sg_observer_fn)(const sg_record_t *r, void *ud);

/* Starts a record for req (id, method, path, start time) in zeroed memory. */
void sg_record_init(sg_record_t *r, const sg_http_req_t *req, const char *method, const char *path);
/* Notes the route that serves the request: public name, provider, whether it is unlisted. */
void sg_record_route(sg_record_t *r, const sg_route_t *route);
/* Registers an observer (called in registration order for every finished request). */
void sg_observe(struct sg_gateway *gw, sg_observer_fn fn, void *ud);
/* Ends the record (end time) and hands it to every observer. */
void sg_record_finish(struct sg_gateway *gw, sg_record_t *r);

/* The cost of usage u at prices in USD per 1M tokens: prompt tokens (cached ones included)
 * and Cortex Guard tokens at the input price, completion tokens at the output price. in_usd
 * and out_usd (may be NULL) receive the two parts. */
double sg_usage_cost(const sg_usage_t *u, double price_in, double price_out, double *in_usd,
                     double *out_usd);
/* Fills the record's cost fields from its usage and prices. Returns cost_usd. */
double sg_record_cost(sg_record_t *r);

/* The observer that writes the one log line per request. */
void sg_log_observer(const sg_record_t *r, void *ud);

#endif
