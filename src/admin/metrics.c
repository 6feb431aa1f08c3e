/* GET /metrics: the Prometheus text exposition (format 0.0.4). The request families are kept
 * by an observer of request records (sophia/metrics.h); the gauges are read from the gateway,
 * the scopes and the ledger when scraped. docs/metrics.md lists every family.
 *
 * The observer runs once per finished request, on the loop thread: it finds its series in
 * small hash tables (no allocation once they exist) and adds to counters and histograms whose
 * bucket bounds are integers fixed at creation (tokens, or nanoseconds). Formatting happens
 * only when scraped. */
#include "sophia/log.h"
#include "sophia/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/endpoint.h"
#include "sophia/gateway.h"
#include "sophia/ledger.h"

/* The largest exposition served (a text cut short is answered 500, never sent). */
#define EXPOSITION_MAX ((size_t)256 << 20)

/* ---- histograms ----------------------------------------------------------------------------- */

#define HIST_MAX 16

/* Upper bounds as written in the le label; the histogram's values are compared with them as
 * integers (tokens, or nanoseconds for the histograms of seconds). */
static const char *const TOKEN_LE[] = {"1",       "4",       "16",       "64",      "256",
                                       "1024",    "4096",    "16384",    "65536",   "262144",
                                       "1048576", "4194304", "16777216", "67108864"};
static const char *const DURATION_LE[] = {"0.01",  "0.02",  "0.04",  "0.08", "0.16",
                                          "0.32",  "0.64",  "1.28",  "2.56", "5.12",
                                          "10.24", "20.48", "40.96", "81.92"};
static const char *const TTFT_LE[] = {"0.001", "0.005", "0.01", "0.02", "0.04", "0.06",
                                      "0.08",  "0.1",   "0.25", "0.5",  "0.75", "1.0",
                                      "2.5",   "5.0",   "7.5",  "10.0"};
static const char *const OVERHEAD_LE[] = {"0.00005", "0.0001", "0.00025", "0.0005", "0.001",
                                          "0.0025",  "0.005",  "0.01",    "0.025",  "0.05",
                                          "0.1",     "0.25",   "0.5",     "1"};

_Static_assert(SG_ARRAY_LEN(TOKEN_LE) <= HIST_MAX, "token buckets");
_Static_assert(SG_ARRAY_LEN(DURATION_LE) <= HIST_MAX, "duration buckets");
_Static_assert(SG_ARRAY_LEN(TTFT_LE) <= HIST_MAX, "ttft buckets");
_Static_assert(SG_ARRAY_LEN(OVERHEAD_LE) <= HIST_MAX, "overhead buckets");

typedef struct hspec {
    size_t n;
    uint64_t bound[HIST_MAX + 1]; /* [n]: UINT64_MAX, the end of the search */
    const char *const *le;
    int seconds; /* values are nanoseconds, shown in seconds */
} hspec_t;

typedef struct hist {
    uint64_t bucket[HIST_MAX + 1]; /* per bucket, not cumulative; [n]: above every bound */
    uint64_t sum;                  /* tokens or nanoseconds */
    uint64_t count;
} hist_t;

static void hspec_init(hspec_t *s, const char *const *le, size_t n, int seconds)
{
    s->n = n;
    s->le = le;
    s->seconds = seconds;
    for (size_t i = 0; i < n; i++) {
        double v = strtod(le[i], NULL);
        s->bound[i] = (uint64_t)llround(seconds ? v * 1e9 : v);
    }
    s->bound[n] = UINT64_MAX;
}

static void hist_add(hist_t *h, const hspec_t *s, uint64_t v)
{
    size_t i = 0;
    while (v > s->bound[i]) i++;
    h->bucket[i]++;
    h->sum += v;
    h->count++;
}

/* ---- series: one hash table per labelled family ---------------------------------------------- */

/* A series is found by its label tuple: (a, b) strings for the (provider, model) series;
 * (parent, status) for the request counts and (parent, a = key) for the costs, parent being
 * the record's (provider, model) series. The strings live in the same allocation. */
typedef struct series {
    struct series *next;  /* hash chain */
    struct series *after; /* creation order (the exposition's) */
    const struct series *parent;
    uint64_t hash;
    int status;
    const char *a, *b; /* NULL when not part of the key */
} series_t;

typedef struct model_series {
    series_t s; /* a = provider, b = model */
    hist_t tok_in, tok_out, duration, ttft;
} model_series_t;

typedef struct req_series {
    series_t s; /* parent, status */
    uint64_t n;
} req_series_t;

typedef struct cost_series {
    series_t s; /* parent, a = key */
    double usd;
} cost_series_t;

typedef struct table {
    series_t **slot;
    size_t mask; /* slots - 1 (a power of two) */
    size_t n;
    series_t *first, *last;
    uint64_t dropped; /* observations refused at the cap */
} table_t;

enum { T_MODEL, T_REQUESTS, T_COST, T_N };
/* The family label of sophia_metrics_series_dropped_total ("gen_ai": the three gen_ai_*
 * histograms, which share their series). */
static const char *const TABLE_FAMILY[T_N] = {"gen_ai", "sophia_requests_total",
                                              "sophia_cost_usd_total"};

enum { D_THROTTLED, D_BUDGET, D_FORBIDDEN, D_OTHER, D_N };
static const char *const DENIED[D_N] = {"throttled", "budget", "forbidden", "other"};

struct sg_metrics {
    hspec_t tokens, duration, ttft, overhead;
    table_t t[T_N];
    hist_t overhead_h;
    uint64_t denied[D_N];
    uint64_t estimated;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Hashes s into h eight bytes at a time, its length included (so that ("ab","c") and
 * ("a","bc") differ). */
static uint64_t hash_str(uint64_t h, const char *s)
{
    size_t n = strlen(s);
    h = (h ^ n) * 0x9e3779b97f4a7c15ULL;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)s[i] << (8 * i);
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static int same(const char *x, const char *y)
{
    return x == y || (x && y && strcmp(x, y) == 0);
}

static void table_init(table_t *t)
{
    t->mask = 63;
    t->slot = sg_xcalloc(t->mask + 1, sizeof(*t->slot));
}

static void table_free(table_t *t)
{
    for (series_t *s = t->first, *next; s; s = next) {
        next = s->after;
        free(s);
    }
    free(t->slot);
}

static void table_grow(table_t *t)
{
    size_t slots = (t->mask + 1) * 2;
    series_t **slot = sg_xcalloc(slots, sizeof(*slot));
    for (series_t *s = t->first; s; s = s->after) {
        series_t **head = &slot[s->hash & (slots - 1)];
        s->next = *head;
        *head = s;
    }
    free(t->slot);
    t->slot = slot;
    t->mask = slots - 1;
}

/* The series with this key, created (size bytes, zeroed) when new; NULL at the cap. */
static series_t *table_get(table_t *t, uint64_t h, const series_t *parent, int status,
                           const char *a, const char *b, size_t size)
{
    for (series_t *s = t->slot[h & t->mask]; s; s = s->next)
        if (s->hash == h && s->parent == parent && s->status == status && same(s->a, a) &&
            same(s->b, b))
            return s;
    if (t->n >= SG_METRICS_SERIES_MAX) {
        t->dropped++;
        return NULL;
    }
    size_t la = a ? strlen(a) + 1 : 0, lb = b ? strlen(b) + 1 : 0;
    series_t *s = sg_xcalloc(1, size + la + lb);
    char *text = (char *)s + size;
    if (a) s->a = memcpy(text, a, la);
    if (b) s->b = memcpy(text + la, b, lb);
    s->parent = parent;
    s->status = status;
    s->hash = h;
    if (t->n >= t->mask + 1) table_grow(t);
    series_t **head = &t->slot[h & t->mask];
    s->next = *head;
    *head = s;
    if (t->last)
        t->last->after = s;
    else
        t->first = s;
    t->last = s;
    t->n++;
    return s;
}

/* ---- the observer ------------------------------------------------------------------------- */

sg_metrics_t *sg_metrics_new(void)
{
    sg_metrics_t *m = sg_xcalloc(1, sizeof(*m));
    hspec_init(&m->tokens, TOKEN_LE, SG_ARRAY_LEN(TOKEN_LE), 0);
    hspec_init(&m->duration, DURATION_LE, SG_ARRAY_LEN(DURATION_LE), 1);
    hspec_init(&m->ttft, TTFT_LE, SG_ARRAY_LEN(TTFT_LE), 1);
    hspec_init(&m->overhead, OVERHEAD_LE, SG_ARRAY_LEN(OVERHEAD_LE), 1);
    for (int i = 0; i < T_N; i++) table_init(&m->t[i]);
    return m;
}

void sg_metrics_free(sg_metrics_t *m)
{
    if (!m) return;
    for (int i = 0; i < T_N; i++) table_free(&m->t[i]);
    free(m);
}

static uint64_t tokens(long n)
{
    return n > 0 ? (uint64_t)n : 0;
}

static int denied_index(const char *why)
{
    for (int i = 0; i < D_OTHER; i++)
        if (strcmp(why, DENIED[i]) == 0) return i;
    return D_OTHER;
}

void sg_metrics_observer(const sg_record_t *r, void *ud)
{
    sg_metrics_t *m = ud;
    /* Labels are configured (or discovered) names only: provider and route are set once a
     * route was planned; before that the model the client asked for is free text, and so is a
     * route passed through unlisted. */
    int routed = r->provider[0] != '\0';
    const char *prov = routed ? r->provider : "none";
    const char *model = r->route[0] && !r->route_unlisted ? r->route : "none";
    int status = r->client_gone ? 499 : r->status;
    uint64_t dur = r->end_ns > r->start_ns ? r->end_ns - r->start_ns : 0;

    hist_add(&m->overhead_h, &m->overhead, dur > r->upstream_ns ? dur - r->upstream_ns : 0);
    if (r->denied) m->denied[denied_index(r->denied)]++;
    if (routed && !r->usage.known) m->estimated++;

    uint64_t h = hash_str(hash_str(0, prov), model);
    model_series_t *ms = (model_series_t *)table_get(&m->t[T_MODEL], h, NULL, 0, prov, model,
                                                     sizeof(model_series_t));
    if (!ms) {
        m->t[T_REQUESTS].dropped++;
        if (routed) m->t[T_COST].dropped++;
        return;
    }
    hist_add(&ms->duration, &m->duration, dur);
    if (r->ttft_ns > r->start_ns) hist_add(&ms->ttft, &m->ttft, r->ttft_ns - r->start_ns);
    if (routed) {
        hist_add(&ms->tok_in, &m->tokens, tokens(r->usage.prompt_tokens));
        hist_add(&ms->tok_out, &m->tokens, tokens(r->usage.completion_tokens));
    }

    req_series_t *rs = (req_series_t *)table_get(&m->t[T_REQUESTS], mix(h ^ (uint64_t)status),
                                                 &ms->s, status, NULL, NULL, sizeof(*rs));
    if (rs) rs->n++;

    if (!routed) return;
    const char *key = r->key[0] ? r->key : "none";
    cost_series_t *cs = (cost_series_t *)table_get(&m->t[T_COST], mix(hash_str(h, key)), &ms->s, 0,
                                                   key, NULL, sizeof(*cs));
    if (cs && r->cost_usd > 0) cs->usd += r->cost_usd; /* NaN and negatives never count */
}

/* ---- writing the exposition --------------------------------------------------------------- */

typedef struct out {
    sg_buf_t *b;
    int err;
} out_t;

static void put(out_t *o, const char *s)
{
    if (!o->err && sg_buf_append_str(o->b, s) != 0) o->err = 1;
}

static void put_u64(out_t *o, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    *--p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, p);
}

static void put_double(out_t *o, double v)
{
    char tmp[40];
    if (isnan(v))
        put(o, "NaN");
    else if (isinf(v))
        put(o, v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(tmp, sizeof(tmp), "%.15g", v);
        put(o, tmp);
    }
}

/* Nanoseconds as seconds, exactly: "1.5", "0.000123", "2". */
static void put_seconds(out_t *o, uint64_t ns)
{
    put_u64(o, ns / 1000000000u);
    uint64_t frac = ns % 1000000000u;
    if (!frac) return;
    char tmp[11];
    tmp[0] = '.';
    for (int i = 9; i >= 1; i--) {
        tmp[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int end = 10;
    while (tmp[end - 1] == '0') end--;
    tmp[end] = '\0';
    put(o, tmp);
}

/* A label value, escaped: backslash, double quote and newline. */
static void put_value(out_t *o, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (!esc) continue;
        if (!o->err && sg_buf_append(o->b, run, (size_t)(s - run)) != 0) o->err = 1;
        put(o, esc);
        run = s + 1;
    }
    put(o, run);
}

/* name="value" (a value "" is shown as "none"), after a comma unless first. */
static void put_label(out_t *o, int first, const char *name, const char *value)
{
    if (!first) put(o, ",");
    put(o, name);
    put(o, "=\"");
    put_value(o, value && value[0] ? value : "none");
    put(o, "\"");
}

static void put_family(out_t *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP ");
    put(o, name);
    put(o, " ");
    put(o, help);
    put(o, "\n# TYPE ");
    put(o, name);
    put(o, " ");
    put(o, type);
    put(o, "\n");
}

/* One unlabelled sample. */
static void put_sample_u64(out_t *o, const char *name, uint64_t v)
{
    put(o, name);
    put(o, " ");
    put_u64(o, v);
    put(o, "\n");
}

/* One histogram series; labels: its labels already written ("" for none). */
static void put_hist(out_t *o, const char *name, const char *labels, const hspec_t *s,
                     const hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= s->n; i++) {
        cum += h->bucket[i];
        put(o, name);
        put(o, "_bucket{");
        put(o, labels);
        if (labels[0]) put(o, ",");
        put(o, "le=\"");
        put(o, i < s->n ? s->le[i] : "+Inf");
        put(o, "\"} ");
        put_u64(o, cum);
        put(o, "\n");
    }
    const char *const part[2] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        put(o, name);
        put(o, part[k]);
        if (labels[0]) {
            put(o, "{");
            put(o, labels);
            put(o, "}");
        }
        put(o, " ");
        if (k == 1)
            put_u64(o, h->count);
        else if (s->seconds)
            put_seconds(o, h->sum);
        else
            put_u64(o, h->sum);
        put(o, "\n");
    }
}

/* The labels of a (provider, model) series in the GenAI names, into scratch. */
static const char *genai_labels(sg_buf_t *scratch, const series_t *s, const char *token_type)
{
    sg_buf_reset(scratch);
    out_t o = {scratch, 0};
    put_label(&o, 1, "gen_ai_system", s->a);
    put_label(&o, 0, "gen_ai_request_model", s->b);
    if (token_type) put_label(&o, 0, "gen_ai_token_type", token_type);
    return o.err ? "" : scratch->data ? scratch->data : "";
}

int sg_metrics_render(const sg_metrics_t *m, sg_buf_t *b)
{
    out_t o = {b, 0};
    sg_buf_t scratch;
    sg_buf_init(&scratch, 4096);

    put_family(&o, "sophia_requests_total", "counter",
               "Requests that reached an API handler, by provider, model (the public name that "
               "served; none when no route was chosen) and HTTP status (499: the client left).");
    for (const series_t *s = m->t[T_REQUESTS].first; s; s = s->after) {
        put(&o, "sophia_requests_total{");
        put_label(&o, 1, "provider", s->parent->a);
        put_label(&o, 0, "model", s->parent->b);
        put(&o, ",status=\"");
        char st[16];
        snprintf(st, sizeof(st), "%d", s->status);
        put(&o, st);
        put(&o, "\"} ");
        put_u64(&o, ((const req_series_t *)s)->n);
        put(&o, "\n");
    }

    put_family(&o, "gen_ai_client_token_usage", "histogram",
               "Tokens per routed request, input (prompt) and output (completion), as reported "
               "by the upstream or estimated by the gateway.");
    for (const series_t *s = m->t[T_MODEL].first; s; s = s->after) {
        const model_series_t *ms = (const model_series_t *)s;
        if (!ms->tok_in.count) continue;
        put_hist(&o, "gen_ai_client_token_usage", genai_labels(&scratch, s, "input"), &m->tokens,
                 &ms->tok_in);
        put_hist(&o, "gen_ai_client_token_usage", genai_labels(&scratch, s, "output"), &m->tokens,
                 &ms->tok_out);
    }

    put_family(&o, "gen_ai_client_operation_duration_seconds", "histogram",
               "Time from the request's arrival to its end, every request.");
    for (const series_t *s = m->t[T_MODEL].first; s; s = s->after)
        put_hist(&o, "gen_ai_client_operation_duration_seconds", genai_labels(&scratch, s, NULL),
                 &m->duration, &((const model_series_t *)s)->duration);

    put_family(&o, "gen_ai_server_time_to_first_token_seconds", "histogram",
               "Time from the request's arrival to the first token sent to the client (requests "
               "that sent one).");
    for (const series_t *s = m->t[T_MODEL].first; s; s = s->after) {
        const model_series_t *ms = (const model_series_t *)s;
        if (ms->ttft.count)
            put_hist(&o, "gen_ai_server_time_to_first_token_seconds",
                     genai_labels(&scratch, s, NULL), &m->ttft, &ms->ttft);
    }

    put_family(&o, "sophia_cost_usd_total", "counter",
               "Cost of routed requests in US dollars at the configured prices, by provider, "
               "model and client key (none without a key).");
    for (const series_t *s = m->t[T_COST].first; s; s = s->after) {
        put(&o, "sophia_cost_usd_total{");
        put_label(&o, 1, "provider", s->parent->a);
        put_label(&o, 0, "model", s->parent->b);
        put_label(&o, 0, "key", s->a);
        put(&o, "} ");
        put_double(&o, ((const cost_series_t *)s)->usd);
        put(&o, "\n");
    }

    put_family(&o, "sophia_tokens_estimated_total", "counter",
               "Routed requests whose token counts the gateway estimated (the upstream reported "
               "none, or counts out of range).");
    put_sample_u64(&o, "sophia_tokens_estimated_total", m->estimated);

    put_family(&o, "sophia_gateway_overhead_seconds", "histogram",
               "Time of each request not spent waiting on an upstream: its whole duration minus "
               "the time of its upstream exchanges.");
    put_hist(&o, "sophia_gateway_overhead_seconds", "", &m->overhead, &m->overhead_h);

    put_family(&o, "sophia_requests_denied_total", "counter",
               "Requests refused by admission, by reason: throttled (a rate or concurrency "
               "limit), budget (a hard budget spent), forbidden (the key may not use the model).");
    for (int i = 0; i < D_N; i++) {
        if (i == D_OTHER && !m->denied[i]) continue;
        put(&o, "sophia_requests_denied_total{reason=\"");
        put(&o, DENIED[i]);
        put(&o, "\"} ");
        put_u64(&o, m->denied[i]);
        put(&o, "\n");
    }

    put_family(&o, "sophia_metrics_series_dropped_total", "counter",
               "Observations not recorded because their family already held the most series "
               "it may (10000).");
    for (int i = 0; i < T_N; i++) {
        put(&o, "sophia_metrics_series_dropped_total{family=\"");
        put(&o, TABLE_FAMILY[i]);
        put(&o, "\"} ");
        put_u64(&o, m->t[i].dropped);
        put(&o, "\n");
    }
    sg_buf_dispose(&scratch);
    return o.err ? -1 : 0;
}

/* ---- scopes and ledger ------------------------------------------------------------------ */

enum { SC_THROTTLED, SC_DENIED, SC_WARNINGS, SC_REMAINING, SC_SPENT };

typedef struct scope_pass {
    out_t *o;
    int what;
    const char *name;
} scope_pass_t;

static void scope_labels(out_t *o, const char *name, const sg_scope_t *s, const char *period)
{
    put(o, name);
    put(o, "{");
    put_label(o, 1, "scope", sg_scope_kind_name(s->kind));
    put_label(o, 0, "name", s->name);
    if (period) put_label(o, 0, "period", period);
    put(o, "} ");
}

static void scope_visit(const sg_scope_t *s, void *ud)
{
    scope_pass_t *p = ud;
    out_t *o = p->o;
    if (p->what <= SC_WARNINGS) {
        scope_labels(o, p->name, s, NULL);
        put_u64(o, p->what == SC_THROTTLED ? s->throttled
                   : p->what == SC_DENIED  ? s->budget_denied
                                           : s->soft_warnings);
        put(o, "\n");
        return;
    }
    for (int monthly = 0; monthly < 2; monthly++) {
        double limit = monthly ? s->budget.monthly_usd : s->budget.daily_usd;
        if (!(limit > 0)) continue;
        double spent = sg_budget_spent(s, monthly, sg_unix_time());
        scope_labels(o, p->name, s, monthly ? "monthly" : "daily");
        put_double(o, p->what == SC_SPENT ? spent : limit - spent - s->reserved);
        put(o, "\n");
    }
}

int sg_metrics_render_scopes(sg_buf_t *b,
                             void (*each)(void (*fn)(const sg_scope_t *s, void *ud), void *ud))
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        [SC_THROTTLED] = {"sophia_throttled_total", "counter",
                          "Requests refused or queued past their wait by a rate or concurrency "
                          "limit of this scope."},
        [SC_DENIED] = {"sophia_budget_denied_total", "counter",
                       "Requests refused because this scope's hard budget was spent."},
        [SC_WARNINGS] = {"sophia_budget_soft_warnings_total", "counter",
                         "Times this scope's spend passed the warning share of a budget."},
        [SC_REMAINING] = {"sophia_budget_remaining_usd", "gauge",
                          "Budget left in the period in US dollars: the limit minus what was "
                          "spent and what requests in flight hold (negative once overspent)."},
        [SC_SPENT] = {"sophia_budget_spent_usd", "gauge",
                      "US dollars spent in the period, for scopes with a budget for it."},
    };
    out_t o = {b, 0};
    for (int i = 0; i < (int)SG_ARRAY_LEN(fam); i++) {
        put_family(&o, fam[i].name, fam[i].type, fam[i].help);
        scope_pass_t p = {&o, i, fam[i].name};
        each(scope_visit, &p);
    }
    return o.err ? -1 : 0;
}

int sg_metrics_render_ledger(sg_buf_t *b, const sg_ledger_stats_t *s)
{
    out_t o = {b, 0};
    put_family(&o, "sophia_ledger_queue_depth", "gauge", "Ledger rows waiting to be written.");
    put_sample_u64(&o, "sophia_ledger_queue_depth", s->depth);
    put_family(&o, "sophia_ledger_rows_written_total", "counter",
               "Ledger rows committed to the database.");
    put_sample_u64(&o, "sophia_ledger_rows_written_total", s->written);
    put_family(&o, "sophia_ledger_rows_dropped_total", "counter",
               "Ledger rows lost (a full queue or a write error).");
    put_sample_u64(&o, "sophia_ledger_rows_dropped_total", s->dropped);
    return o.err ? -1 : 0;
}

/* ---- GET /metrics ------------------------------------------------------------------------- */

static void put_gauge_u64(out_t *o, const char *name, const char *type, const char *help,
                          uint64_t v)
{
    put_family(o, name, type, help);
    put_sample_u64(o, name, v);
}

static void render_gateway(out_t *o, sg_gateway_t *gw)
{
    put_gauge_u64(o, "sophia_http_requests_total", "counter",
                  "HTTP requests received, every path (health checks and scrapes too).",
                  gw->requests_total);
    put_gauge_u64(o, "sophia_chats_active", "gauge", "API requests in progress.", gw->chats_active);
    put_gauge_u64(o, "sophia_streams_active", "gauge", "SSE answers in progress.",
                  gw->streams_active);
    put_gauge_u64(o, "sophia_fd_exhausted_total", "counter",
                  "Requests refused with 503 server_overloaded: no file descriptor was left for "
                  "an upstream connection.",
                  gw->fd_exhausted);
    uint64_t log_dropped = 0;
    size_t log_buffered = 0;
    sg_log_writer_stats(&log_dropped, &log_buffered);
    put_gauge_u64(o, "sophia_log_lines_dropped_total", "counter",
                  "Log lines lost because stderr was not read fast enough (the buffer was full).",
                  log_dropped);
    put_gauge_u64(o, "sophia_log_buffered_bytes", "gauge",
                  "Log bytes waiting for the log writer thread.", log_buffered);
    put_gauge_u64(o, "sophia_connections", "gauge", "Client connections open.",
                  sg_http_server_conn_count(gw->http));
    put_gauge_u64(o, "sophia_upstream_active", "gauge", "Upstream transfers in progress.",
                  sg_curlm_active(gw->curlm));
    put_gauge_u64(o, "sophia_upstream_multi_handles", "gauge",
                  "curl multi handles open (transfers are spread over them, 128 each).",
                  sg_curlm_shards_open(gw->curlm));
    put_gauge_u64(o, "sophia_worker", "gauge",
                  "The worker process that answered this scrape (0 without --workers).",
                  (uint64_t)sg_worker_index);
    put_gauge_u64(o, "sophia_workers", "gauge",
                  "Worker processes on the port (--workers; 1 without).",
                  (uint64_t)sg_worker_count);
    put_gauge_u64(o, "sophia_upstream_retries_total", "counter",
                  "Upstream attempts retried on the same route.", gw->upstream_retries);
    put_gauge_u64(o, "sophia_upstream_fallbacks_total", "counter",
                  "Upstream attempts moved to another endpoint or model.", gw->fallbacks);
    put_gauge_u64(o, "sophia_config_generation", "gauge",
                  "The configuration generation in force (1 at start, one more per reload).",
                  gw->gen->id);
    put_family(o, "sophia_config_reloads_total", "counter",
               "Configuration reloads (SIGHUP), by result.");
    put(o, "sophia_config_reloads_total{result=\"ok\"} ");
    put_u64(o, gw->reloads_ok);
    put(o, "\nsophia_config_reloads_total{result=\"failed\"} ");
    put_u64(o, gw->reloads_failed);
    put(o, "\n");

    const sg_gen_t *g = gw->gen;
    uint64_t now = sg_now_ms();
    put_family(o, "sophia_endpoint_breaker_state", "gauge",
               "Circuit breaker of each endpoint (its index in the provider's list): 0 closed, "
               "1 open, 2 half-open.");
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        size_t n;
        sg_endpoint_t *const *ep = sg_gen_endpoints(g, &g->cfg.providers[i], &n);
        for (size_t k = 0; k < n; k++) {
            put(o, "sophia_endpoint_breaker_state{");
            put_label(o, 1, "provider", g->cfg.providers[i].name);
            put(o, ",endpoint=\"");
            put_u64(o, k);
            put(o, "\"} ");
            put_u64(o, (uint64_t)sg_endpoint_state(ep[k], &g->cfg.breaker, now));
            put(o, "\n");
        }
    }

    put_family(o, "sophia_provider_token_expiry_days", "gauge",
               "Days until the provider's credential expires (a PAT; a key pair does not "
               "expire).");
    int64_t unix_now = sg_unix_time();
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        if (!p->ops->describe) continue;
        cJSON *d = cJSON_CreateObject();
        p->ops->describe(p, g->state[i], unix_now, d);
        const cJSON *days = cJSON_GetObjectItemCaseSensitive(d, "token_days_to_expiry");
        const cJSON *auth = cJSON_GetObjectItemCaseSensitive(d, "auth");
        if (cJSON_IsNumber(days) && cJSON_IsString(auth)) {
            char v[40];
            snprintf(v, sizeof(v), "%.3f", days->valuedouble);
            put(o, "sophia_provider_token_expiry_days{");
            put_label(o, 1, "provider", p->name);
            put_label(o, 0, "auth", auth->valuestring);
            put(o, "} ");
            put(o, v);
            put(o, "\n");
        }
        cJSON_Delete(d);
    }
}

void sg_status_metrics(sg_gateway_t *gw, sg_http_req_t *req)
{
    sg_buf_t b;
    sg_buf_init(&b, EXPOSITION_MAX);
    out_t o = {&b, 0};
    render_gateway(&o, gw);
    int err = o.err;
    if (gw->metrics) err |= sg_metrics_render(gw->metrics, &b);
    err |= sg_metrics_render_scopes(&b, sg_scopes_each);
    if (gw->ledger) {
        sg_ledger_stats_t s;
        memset(&s, 0, sizeof(s));
        sg_ledger_stats(gw->ledger, &s);
        err |= sg_metrics_render_ledger(&b, &s);
    }
    if (err)
        sg_http_respond_error(req, 500, "api_error", "metrics_too_large",
                              "the metrics exposition exceeds its size limit");
    else
        sg_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    sg_buf_dispose(&b);
}
