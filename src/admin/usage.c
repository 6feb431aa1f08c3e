/* Usage analytics over the ledger (see sophia/ledger.h and docs/ledger.md): one query that
 * groups the rows of a time range (sg_usage_query), GET /admin/usage (the query runs on libuv's
 * thread pool, never on the loop) and `sophia-gateway usage` (the same as a table).
 *
 * The file is opened read-only: WAL lets the query read a consistent snapshot while the
 * gateway keeps writing. Memory stays bounded by the number of groups: the percentiles are
 * read off rows that SQLite returns sorted (its sorter spills to temporary files), never from
 * arrays of every row. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/ledger.h"
#include "sophia/log.h"

#define BUSY_TIMEOUT_MS 2000

/* ---- time parameters ----------------------------------------------------------------------- */

/* Gregorian leap years. */
static int is_leap(long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days in month m (1-12) of year y. */
static unsigned month_days(long y, unsigned m)
{
    static const unsigned d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Reads exactly n digits at s. Returns the value, or -1. */
static long digits(const char *s, int n)
{
    long v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" (UTC). Returns 0 with *out, or -1. */
static int parse_iso(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if ((n != 10 && n != 20) || s[4] != '-' || s[7] != '-') return -1;
    long y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > (long)month_days(y, (unsigned)mo)) return -1;
    long h = 0, mi = 0, se = 0;
    if (n == 20) {
        if (s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z') return -1;
        h = digits(s + 11, 2);
        mi = digits(s + 14, 2);
        se = digits(s + 17, 2);
        if (h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59) return -1;
    }
    *out = sg_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
    return 0;
}

int sg_usage_parse_time(const char *s, int64_t now, int64_t *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 12) return parse_iso(s, out);
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    if (s[n] == 0) { /* unix seconds */
        *out = v;
        return 0;
    }
    if (s[n + 1] != 0) return parse_iso(s, out);
    static const struct {
        char unit;
        int64_t seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
    for (size_t i = 0; i < SG_ARRAY_LEN(units); i++)
        if (s[n] == units[i].unit) {
            *out = now - v * units[i].seconds;
            return 0;
        }
    return -1;
}

/* ---- the query ----------------------------------------------------------------------------- */

#define GROUPS_VALID "key, team, model, provider, route, day, none"

/* The SQL expression a group_by names, or NULL when it names none. "none" (or NULL): one
 * group. */
static const char *group_expr(const char *by)
{
    static const struct {
        const char *name, *sql;
    } g[] = {{"key", "\"key\""}, {"team", "team"},
             {"model", "model"}, {"provider", "provider"},
             {"route", "route"}, {"day", "strftime('%Y-%m-%d', ts, 'unixepoch')"},
             {"none", "NULL"}};
    if (!by || !*by) return "NULL";
    for (size_t i = 0; i < SG_ARRAY_LEN(g); i++)
        if (strcmp(by, g[i].name) == 0) return g[i].sql;
    return NULL;
}

/* What counts as an error: an error status (a client that left, 499, is not one), or an
 * outcome other than ok and client_closed (a stream that began with 200 and then failed). */
#define IS_ERROR                                                                                   \
    "((status >= 400 AND status <> 499) OR coalesce(outcome, '') NOT IN ('ok', 'client_closed'))"

typedef struct agg {
    char *group; /* NULL: SQL NULL (no key, no team…) */
    int64_t n, prompt, completion, errors, estimated;
    int64_t n_lat, n_ttft; /* rows with a latency / a time to first token */
    double cost;
    double lat[2], ttft[2]; /* p50, p95 */
} agg_t;

typedef struct query {
    sqlite3 *db;
    const char *gexpr;
    double from, to;
    agg_t *a;
    size_t n;
    char *err;
    size_t cap;
} query_t;

/* Reports the connection's last error. Returns -1. */
static int sql_fail(query_t *q)
{
    snprintf(q->err, q->cap, "ledger query failed: %s", sqlite3_errmsg(q->db));
    return -1;
}

/* Prepares sql (with %s replaced by the group expression and the column) and binds the time
 * range. */
static sqlite3_stmt *prepare(query_t *q, const char *fmt, const char *col)
{
    char sql[1024];
    if (col)
        snprintf(sql, sizeof(sql), fmt, q->gexpr, col, col, col);
    else
        snprintf(sql, sizeof(sql), fmt, q->gexpr);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_double(st, 1, q->from);
    sqlite3_bind_double(st, 2, q->to);
    return st;
}

/* Counts and sums per group (in group order). */
static int aggregate(query_t *q)
{
    static const char fmt[] =
        "SELECT %s AS g, count(*), sum(coalesce(prompt_tokens, 0)),"
        " sum(coalesce(completion_tokens, 0)), total(cost_usd), count(latency_ms),"
        " count(ttft_ms), sum(" IS_ERROR "), sum(coalesce(estimated, 0) <> 0)"
        " FROM requests WHERE ts >= ?1 AND ts < ?2 GROUP BY g ORDER BY g";
    sqlite3_stmt *st = prepare(q, fmt, NULL);
    if (!st) return sql_fail(q);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (q->n == cap) {
            cap = cap ? cap * 2 : 16;
            q->a = sg_xrealloc(q->a, cap * sizeof(*q->a));
        }
        agg_t *a = &q->a[q->n++];
        memset(a, 0, sizeof(*a));
        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
            a->group = sg_xstrdup((const char *)sqlite3_column_text(st, 0));
        a->n = sqlite3_column_int64(st, 1);
        a->prompt = sqlite3_column_int64(st, 2);
        a->completion = sqlite3_column_int64(st, 3);
        a->cost = sqlite3_column_double(st, 4);
        a->n_lat = sqlite3_column_int64(st, 5);
        a->n_ttft = sqlite3_column_int64(st, 6);
        a->errors = sqlite3_column_int64(st, 7);
        a->estimated = sqlite3_column_int64(st, 8);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(q);
}

/* Whether the row's group (column 0) is a's. */
static int same_group(const agg_t *a, sqlite3_stmt *st)
{
    if (sqlite3_column_type(st, 0) == SQLITE_NULL) return a->group == NULL;
    const char *v = (const char *)sqlite3_column_text(st, 0);
    return a->group && v && strcmp(a->group, v) == 0;
}

/* The nearest rank (1-based) of percentile p among n sorted values. */
static int64_t rank(int p, int64_t n)
{
    return (p * n + 99) / 100;
}

/* p50 and p95 of a column per group, exact (nearest rank), read off the rows sorted by group
 * then value. */
static int percentiles(query_t *q, const char *col, int ttft)
{
    static const char fmt[] = "SELECT %s AS g, %s FROM requests WHERE ts >= ?1 AND ts < ?2"
                              " AND %s IS NOT NULL ORDER BY g, %s";
    sqlite3_stmt *st = prepare(q, fmt, col);
    if (!st) return sql_fail(q);
    size_t gi = 0;
    int64_t k = 0;
    int started = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!started || !same_group(&q->a[gi], st)) {
            gi += started;
            while (gi < q->n && !same_group(&q->a[gi], st)) gi++;
            if (gi >= q->n) break; /* cannot happen within one snapshot */
            started = 1;
            k = 0;
        }
        agg_t *a = &q->a[gi];
        int64_t n = ttft ? a->n_ttft : a->n_lat;
        double *out = ttft ? a->ttft : a->lat;
        k++;
        if (k == rank(50, n)) out[0] = sqlite3_column_double(st, 1);
        if (k == rank(95, n)) out[1] = sqlite3_column_double(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_fail(q);
}

/* Fills q->a for q->gexpr. */
static int run_groups(query_t *q)
{
    if (aggregate(q) != 0) return -1;
    if (percentiles(q, "latency_ms", 0) != 0) return -1;
    return percentiles(q, "ttft_ms", 1);
}

/* Frees the groups of a query. */
static void aggs_free(agg_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) free(a[i].group);
    free(a);
}

/* v rounded to 1/scale (the closest double to a whole number of billionths is printed as
 * such). */
static double round_to(double v, double scale)
{
    return round(v * scale) / scale;
}

/* {"p50", "p95"}, or null when the group has no value at all. */
static cJSON *pair_json(int64_t n, const double *v)
{
    if (!n) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "p50", v[0]);
    cJSON_AddNumberToObject(o, "p95", v[1]);
    return o;
}

/* One group's (or the totals') fields. Costs are rounded to a billionth of a dollar, shares to
 * a millionth. */
static void agg_fields(cJSON *o, const agg_t *a)
{
    cJSON_AddNumberToObject(o, "requests", (double)a->n);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)a->prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)a->completion);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(a->prompt + a->completion));
    cJSON_AddNumberToObject(o, "cost_usd", round_to(a->cost, 1e9));
    cJSON_AddItemToObject(o, "latency_ms", pair_json(a->n_lat, a->lat));
    cJSON_AddItemToObject(o, "ttft_ms", pair_json(a->n_ttft, a->ttft));
    double n = a->n ? (double)a->n : 1;
    cJSON_AddNumberToObject(o, "error_rate", round_to((double)a->errors / n, 1e6));
    cJSON_AddNumberToObject(o, "estimated_share", round_to((double)a->estimated / n, 1e6));
}

/* Cost descending, then requests descending, then the group's name (none first). */
static int by_cost(const void *x, const void *y)
{
    const agg_t *a = x, *b = y;
    if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
    if (a->n != b->n) return a->n > b->n ? -1 : 1;
    if (!a->group || !b->group) return a->group ? 1 : b->group ? -1 : 0;
    return strcmp(a->group, b->group);
}

/* The JSON answer of a query. */
static cJSON *answer(const query_t *groups, const agg_t *totals, int64_t from, int64_t to,
                     const char *by)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "from", (double)from);
    cJSON_AddNumberToObject(o, "to", (double)to);
    if (by && *by && strcmp(by, "none") != 0)
        cJSON_AddStringToObject(o, "group_by", by);
    else
        cJSON_AddNullToObject(o, "group_by");
    cJSON *arr = cJSON_AddArrayToObject(o, "groups");
    for (size_t i = 0; i < groups->n; i++) {
        cJSON *g = cJSON_CreateObject();
        if (groups->a[i].group)
            cJSON_AddStringToObject(g, "group", groups->a[i].group);
        else
            cJSON_AddNullToObject(g, "group");
        agg_fields(g, &groups->a[i]);
        cJSON_AddItemToArray(arr, g);
    }
    agg_fields(cJSON_AddObjectToObject(o, "totals"), totals);
    return o;
}

/* Opens the file read-only (it is never created here). */
static sqlite3 *open_ro(const char *path, char *err, size_t cap)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, cap, "cannot open the ledger %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    return db;
}

cJSON *sg_usage_query(const char *db_path, int64_t from, int64_t to, const char *group_by,
                      char *err, size_t cap)
{
    const char *gexpr = group_expr(group_by);
    if (!gexpr) {
        snprintf(err, cap, "group_by must be one of: " GROUPS_VALID);
        return NULL;
    }
    if (from >= to) {
        snprintf(err, cap, "from must be before to");
        return NULL;
    }
    sqlite3 *db = open_ro(db_path, err, cap);
    if (!db) return NULL;
    query_t g = {db, gexpr, (double)from, (double)to, NULL, 0, err, cap};
    query_t t = {db, "NULL", (double)from, (double)to, NULL, 0, err, cap};
    cJSON *out = NULL;
    /* One read transaction: every pass sees the same snapshot. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        sql_fail(&g);
    } else if (run_groups(&g) == 0 && run_groups(&t) == 0) {
        if (g.n) qsort(g.a, g.n, sizeof(*g.a), by_cost);
        agg_t none = {0};
        out = answer(&g, t.n ? &t.a[0] : &none, from, to, group_by);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    aggs_free(g.a, g.n);
    aggs_free(t.a, t.n);
    sqlite3_close(db);
    return out;
}

/* ---- GET /admin/usage ---------------------------------------------------------------------- */

typedef struct usage_job {
    uv_work_t work;
    sg_http_req_t *req; /* NULL once the client went away */
    char *path;
    int64_t from, to;
    char group_by[64];
    cJSON *result;
    char err[512];
} usage_job_t;

/* The value of a hex digit, or -1. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes n bytes of a query component (%XX, '+' as space) into out. -1 when malformed or too
 * long. */
static int url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == 0 || k + 1 >= cap) return -1;
        out[k++] = c;
    }
    out[k] = 0;
    return 0;
}

/* The parameters of the query string. Returns 0, or -1 with the reason in msg. */
static int parse_params(const char *query, int64_t now, usage_job_t *job, char *msg, size_t cap)
{
    char from[64] = "", to[64] = "";
    for (const char *p = query; *p;) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : len;
        char name[32], val[64];
        const char *v = eq ? eq + 1 : p + len;
        if (url_decode(p, nlen, name, sizeof(name)) != 0 ||
            url_decode(v, (size_t)(p + len - v), val, sizeof(val)) != 0) {
            snprintf(msg, cap, "malformed or overlong query parameter");
            return -1;
        }
        if (strcmp(name, "from") == 0)
            sg_strlcpy(from, sizeof(from), val);
        else if (strcmp(name, "to") == 0)
            sg_strlcpy(to, sizeof(to), val);
        else if (strcmp(name, "group_by") == 0)
            sg_strlcpy(job->group_by, sizeof(job->group_by), val);
        else if (nlen) {
            snprintf(msg, cap, "unknown parameter \"%.31s\" (known: from, to, group_by)", name);
            return -1;
        }
        p += len + (p[len] == '&');
    }
    if (!group_expr(job->group_by)) {
        snprintf(msg, cap, "group_by must be one of: " GROUPS_VALID);
        return -1;
    }
    job->to = now;
    if (*to && sg_usage_parse_time(to, now, &job->to) != 0) {
        snprintf(msg, cap, "to: expected unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
        return -1;
    }
    job->from = job->to - 86400;
    if (*from && sg_usage_parse_time(from, now, &job->from) != 0) {
        snprintf(msg, cap, "from: expected unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
        return -1;
    }
    if (job->from >= job->to) {
        snprintf(msg, cap, "from must be before to");
        return -1;
    }
    return 0;
}

/* Frees a query job (its answer too, if nobody took it). */
static void job_free(usage_job_t *job)
{
    cJSON_Delete(job->result);
    free(job->path);
    free(job);
}

/* The client went away while the query ran: the request is dead, the answer is dropped. */
static void on_usage_abort(sg_http_req_t *req, void *ud)
{
    SG_UNUSED(req);
    ((usage_job_t *)ud)->req = NULL;
}

/* Thread pool: the query itself (touches nothing of the loop's). */
static void usage_work(uv_work_t *w)
{
    usage_job_t *job = w->data;
    job->result =
        sg_usage_query(job->path, job->from, job->to, job->group_by, job->err, sizeof(job->err));
}

/* Loop thread: answers the client, if it is still there. */
static void usage_done(uv_work_t *w, int status)
{
    usage_job_t *job = w->data;
    sg_http_req_t *req = job->req;
    if (req) {
        sg_http_req_set_hooks(req, NULL, NULL, NULL);
        if (job->result && status == 0) {
            char *s = cJSON_PrintUnformatted(job->result);
            SG_ASSERT(s != NULL);
            sg_http_respond(req, 200, "application/json", s, strlen(s), NULL);
            free(s);
        } else {
            sg_http_respond_error(req, 500, "api_error", "ledger_error",
                                  job->err[0] ? job->err : "the usage query was cancelled");
        }
        sg_log_simple_request(req);
    }
    job_free(job);
}

void sg_usage_handle(sg_gateway_t *gw, sg_http_req_t *req)
{
    if (!gw->ledger) {
        sg_http_respond_error(req, 503, "api_error", "ledger_disabled",
                              "the usage ledger is off (\"ledger\": null in the configuration)");
        sg_log_simple_request(req);
        return;
    }
    usage_job_t *job = sg_xcalloc(1, sizeof(*job));
    char msg[256];
    if (parse_params(req->query, sg_unix_time(), job, msg, sizeof(msg)) != 0) {
        sg_http_respond_error(req, 400, "invalid_request_error", "invalid_parameter", msg);
        sg_log_simple_request(req);
        job_free(job);
        return;
    }
    job->req = req;
    job->path = sg_xstrdup(sg_ledger_path(gw->ledger));
    job->work.data = job;
    sg_http_req_set_hooks(req, on_usage_abort, NULL, job);
    int rc = uv_queue_work(gw->loop, &job->work, usage_work, usage_done);
    if (rc != 0) {
        sg_http_req_set_hooks(req, NULL, NULL, NULL);
        sg_http_respond_error(req, 500, "api_error", "ledger_error", uv_strerror(rc));
        sg_log_simple_request(req);
        job_free(job);
    }
}

/* ---- sophia-gateway usage ------------------------------------------------------------------ */

/* The usage command's help. */
static void cli_help(FILE *f)
{
    fprintf(f,
            "usage: sophia-gateway usage [--db PATH] [--since WHEN] [--until WHEN] [--by GROUP]\n"
            "                            [--json]\n"
            "\n"
            "  --db PATH      the ledger file (default sophia.db)\n"
            "  --since WHEN   start of the range (default 24h): a duration before now (30m, 24h,\n"
            "                 7d), a UTC date YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or unix seconds\n"
            "  --until WHEN   end of the range, excluded (default now); same forms\n"
            "  --by GROUP     one line per key, team, model, provider, route or day\n"
            "  --json         the JSON answer of GET /admin/usage instead of the table\n");
}

typedef struct cli_opts {
    const char *db, *since, *until, *by;
    int json;
} cli_opts_t;

/* The value of option name at argv[*i] ("--name VALUE" or "--name=VALUE"), or NULL when
 * argv[*i] is another option. Sets *missing when the value is absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* Reads the options. Returns 0, 1 for --help, or -1 after printing the problem. */
static int cli_args(int argc, char **argv, cli_opts_t *o)
{
    static const char *const names[] = {"--db", "--since", "--until", "--by"};
    const char **slots[] = {&o->db, &o->since, &o->until, &o->by};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
        if (strcmp(argv[i], "--json") == 0) {
            o->json = 1;
            continue;
        }
        int found = 0, missing = 0;
        for (size_t k = 0; k < SG_ARRAY_LEN(names) && !found && !missing; k++) {
            const char *v = opt_value(argc, argv, &i, names[k], &missing);
            if (v) *slots[k] = v;
            found = v != NULL;
        }
        if (missing || !found) {
            fprintf(stderr, "sophia-gateway usage: %s '%s'\n",
                    missing ? "missing value for" : "unknown argument", argv[i]);
            return -1;
        }
    }
    return 0;
}

#define NCOL 10
#define CELL 96

static const char *const col_names[NCOL] = {"group",    "requests",   "tokens in", "tokens out",
                                            "cost USD", "p50 ms",     "p95 ms",    "p50 ttft ms",
                                            "error %",  "estimated %"};

/* A number field of the answer (0 when absent). */
static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* "p50"/"p95" of a {"p50","p95"} field, or "-" when it is null. */
static void pct_cell(char *cell, const cJSON *o, const char *k, const char *p)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsObject(v))
        snprintf(cell, CELL, "%.1f", num(v, p));
    else
        snprintf(cell, CELL, "-");
}

/* The cells of one line of the table. */
static void cells_of(const cJSON *o, const char *label, char cells[NCOL][CELL])
{
    sg_strlcpy(cells[0], CELL, label);
    snprintf(cells[1], CELL, "%.0f", num(o, "requests"));
    snprintf(cells[2], CELL, "%.0f", num(o, "prompt_tokens"));
    snprintf(cells[3], CELL, "%.0f", num(o, "completion_tokens"));
    snprintf(cells[4], CELL, "%.6f", num(o, "cost_usd"));
    pct_cell(cells[5], o, "latency_ms", "p50");
    pct_cell(cells[6], o, "latency_ms", "p95");
    pct_cell(cells[7], o, "ttft_ms", "p50");
    snprintf(cells[8], CELL, "%.1f", num(o, "error_rate") * 100);
    snprintf(cells[9], CELL, "%.1f", num(o, "estimated_share") * 100);
}

/* One line of the table: the group left-aligned, the figures right-aligned. */
static void print_line(char cells[NCOL][CELL], const size_t *w)
{
    for (int c = 0; c < NCOL; c++) printf(c == 0 ? "%-*s" : "  %*s", (int)w[c], cells[c]);
    printf("\n");
}

/* A line of dashes as wide as the table. */
static void print_rule(const size_t *w)
{
    size_t total = 0;
    for (int c = 0; c < NCOL; c++) total += w[c] + (c ? 2 : 0);
    for (size_t i = 0; i < total; i++) putchar('-');
    putchar('\n');
}

/* Days sort by date in the table (the JSON keeps the cost order). */
static int by_name(const void *x, const void *y)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(*(cJSON *const *)x, "group");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(*(cJSON *const *)y, "group");
    const char *sa = cJSON_IsString(a) ? a->valuestring : "",
               *sb = cJSON_IsString(b) ? b->valuestring : "";
    return strcmp(sa, sb);
}

/* The table: a header, one line per group (none without --by), the totals. */
static void print_table(const cJSON *res, const char *by)
{
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(res, "groups");
    size_t n = by ? (size_t)cJSON_GetArraySize(groups) : 0;
    char(*cells)[NCOL][CELL] = sg_xcalloc(n + 2, sizeof(*cells));
    cJSON **items = sg_xcalloc(n ? n : 1, sizeof(*items));
    size_t k = 0;
    for (cJSON *g = groups ? groups->child : NULL; g && k < n; g = g->next) items[k++] = g;
    if (by && strcmp(by, "day") == 0) qsort(items, n, sizeof(*items), by_name);
    for (int c = 0; c < NCOL; c++) sg_strlcpy(cells[0][c], CELL, col_names[c]);
    for (size_t i = 0; i < n; i++) {
        const cJSON *gv = cJSON_GetObjectItemCaseSensitive(items[i], "group");
        cells_of(items[i], cJSON_IsString(gv) ? gv->valuestring : "(none)", cells[i + 1]);
    }
    cells_of(cJSON_GetObjectItemCaseSensitive(res, "totals"), "total", cells[n + 1]);
    size_t w[NCOL] = {0};
    for (size_t r = 0; r < n + 2; r++)
        for (int c = 0; c < NCOL; c++)
            if (strlen(cells[r][c]) > w[c]) w[c] = strlen(cells[r][c]);
    print_line(cells[0], w);
    print_rule(w);
    for (size_t r = 1; r <= n; r++) print_line(cells[r], w);
    if (n) print_rule(w);
    print_line(cells[n + 1], w);
    free(items);
    free(cells);
}

/* A unix time as YYYY-MM-DDTHH:MM:SSZ. */
static void fmt_time(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int sg_usage_cli(int argc, char **argv)
{
    cli_opts_t o = {"sophia.db", "24h", NULL, NULL, 0};
    int rc = cli_args(argc, argv, &o);
    if (rc != 0) {
        cli_help(rc > 0 ? stdout : stderr);
        return rc > 0 ? 0 : 2;
    }
    int64_t now = sg_unix_time(), from, to = now;
    if ((o.until && sg_usage_parse_time(o.until, now, &to) != 0) ||
        sg_usage_parse_time(o.since, now, &from) != 0) {
        fprintf(stderr,
                "sophia-gateway usage: bad time '%s' (expected 30m, 24h, 7d, "
                "YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or unix seconds)\n",
                o.until && sg_usage_parse_time(o.until, now, &to) != 0 ? o.until : o.since);
        return 2;
    }
    char err[512];
    cJSON *res = sg_usage_query(o.db, from, to, o.by, err, sizeof(err));
    if (!res) {
        fprintf(stderr, "sophia-gateway usage: %s\n", err);
        return group_expr(o.by) && from < to ? 1 : 2;
    }
    if (o.json) {
        char *s = cJSON_Print(res);
        printf("%s\n", s);
        free(s);
    } else {
        char a[32], b[32];
        fmt_time(from, a, sizeof(a));
        fmt_time(to, b, sizeof(b));
        printf("usage from %s to %s (ledger %s)\n\n", a, b, o.db);
        print_table(res, o.by && strcmp(o.by, "none") != 0 ? o.by : NULL);
    }
    cJSON_Delete(res);
    return 0;
}
