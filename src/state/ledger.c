/* The durable usage ledger (see sophia/ledger.h and docs/ledger.md): the "ledger"
 * configuration section, the SQLite file and its schema, the observer that queues one row per
 * finished request (loop thread), the writer thread that commits the queue in batches, daily
 * retention, and the spend query that rebuilds budgets at start.
 *
 * Threads: sg_ledger_observer runs on the loop thread and only takes the queue's mutex for a
 * list append. Everything that touches the file after sg_ledger_open runs on the writer thread
 * (its own connection); sg_ledger_spend opens a read-only connection of its own. Log lines
 * from the writer thread are whole lines (one fwrite each, under stdio's lock). */
#include "sophia/ledger.h"

#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sophia/access.h"
#include "sophia/config_parse.h"
#include "sophia/core.h"
#include "sophia/log.h"

#define SCHEMA_VERSION 1
#define BUSY_TIMEOUT_MS 1000
#define RETENTION_EVERY_MS (24ull * 3600 * 1000)
#define WARN_EVERY_MS 1000
#define WRITER_NICE 10

/* ---- the "ledger" configuration section ---------------------------------------------------- */

static const sg_cfg_num_t ledger_fields[] = {
    SG_CFG_U64("flush_ms", ledger.flush_ms, 1, 60000, 200),
    SG_CFG_SIZE("queue_max", ledger.queue_max, 1, 16u * 1024 * 1024, 65536),
    SG_CFG_U64("retention_days", ledger.retention_days, 0, 36500, 90),
};

static void ledger_cfg_defaults(sg_config_t *cfg)
{
    cfg->ledger.enabled = 1;
    cfg->ledger.path = sg_xstrdup("sophia.db");
}

/* null turns the ledger off; an object sets any of path, flush_ms, queue_max, retention_days. */
static void ledger_cfg_parse(sg_cfg_ctx_t *c, const cJSON *obj)
{
    sg_ledger_cfg_t *lc = &c->cfg->ledger;
    if (cJSON_IsNull(obj)) {
        lc->enabled = 0;
        return;
    }
    if (!cJSON_IsObject(obj)) {
        sg_cfg_errf(c, "must be an object or null (null turns the ledger off), not %s",
                    sg_cfg_type_name(obj));
        return;
    }
    static const char *const extra[] = {"path", NULL};
    sg_cfg_parse_numbers(c, obj, ledger_fields, SG_ARRAY_LEN(ledger_fields), extra);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "path");
    if (!it) return;
    size_t old = sg_cfg_push_key(c, "path");
    char *s;
    int interp;
    if (sg_cfg_get_str(c, it, &s, &interp) == 0) {
        if (!*s) {
            sg_cfg_errf(c, "must not be empty (use \"ledger\": null to turn the ledger off)");
            free(s);
        } else {
            free(lc->path);
            lc->path = s;
        }
    }
    sg_cfg_pop(c, old);
}

static void ledger_cfg_free(sg_config_t *cfg)
{
    free(cfg->ledger.path);
    cfg->ledger.path = NULL;
}

const sg_config_section_t sg_ledger_section = {.key = "ledger",
                                               .fields = ledger_fields,
                                               .n_fields = SG_ARRAY_LEN(ledger_fields),
                                               .defaults = ledger_cfg_defaults,
                                               .parse = ledger_cfg_parse,
                                               .free = ledger_cfg_free,
                                               .any_type = 1};

/* ---- rows ---------------------------------------------------------------------------------- */

/* The text columns of a row, in the order they are packed. */
enum {
    T_REQUEST_ID,
    T_KEY,
    T_TEAM,
    T_PROVIDER,
    T_API,
    T_ENDPOINT,
    T_MODEL,
    T_ROUTE,
    T_RULE,
    T_WHY,
    T_OUTCOME,
    T_DENIED,
    T_ERROR,
    T_N
};

#define T_NULL 0xffffu

/* One queued row: the numbers, then the strings packed after the struct (each NUL-terminated;
 * len T_NULL for SQL NULL), so a row costs one allocation of about its real size. */
typedef struct row {
    struct row *next;
    double ts;
    long attempts, prompt, completion, cached, guard;
    double cost_in, cost_out, cost;
    double ttft_ms; /* < 0: none */
    double latency_ms, upstream_ms;
    int status, estimated, partial, stream;
    unsigned short len[T_N];
    char text[];
} row_t;

/* The wall clock in unix seconds, to the millisecond (a row's ts). */
static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1e3;
}

/* Milliseconds between two monotonic instants, to the microsecond. */
static double ms_between(uint64_t from_ns, uint64_t to_ns)
{
    if (to_ns < from_ns) return 0;
    return (double)((to_ns - from_ns) / 1000) / 1e3;
}

/* Token counts are never negative in the file. */
static long nonneg(long v)
{
    return v > 0 ? v : 0;
}

/* Copies r into one new row (texts "" become NULL). */
static row_t *row_from_record(const sg_record_t *r)
{
    const char *t[T_N] = {r->request_id, r->key,    r->team,  r->provider, r->path,
                          r->endpoint,   r->model,  r->route, r->rule,     r->why,
                          r->outcome,    r->denied, r->error};
    size_t n[T_N], total = 0;
    for (int i = 0; i < T_N; i++) {
        n[i] = t[i] ? strnlen(t[i], 4096) : 0;
        total += n[i] + 1;
    }
    row_t *w = sg_xmalloc(sizeof(*w) + total);
    char *p = w->text;
    for (int i = 0; i < T_N; i++) {
        w->len[i] = n[i] ? (unsigned short)n[i] : T_NULL;
        memcpy(p, n[i] ? t[i] : "", n[i]);
        p[n[i]] = 0;
        p += n[i] + 1;
    }
    w->next = NULL;
    w->ts = wall_now();
    w->attempts = r->attempts;
    w->prompt = nonneg(r->usage.prompt_tokens);
    w->completion = nonneg(r->usage.completion_tokens);
    w->cached = nonneg(r->usage.cached_tokens);
    w->guard = nonneg(r->usage.guard_tokens);
    w->cost_in = r->cost_in_usd;
    w->cost_out = r->cost_out_usd;
    w->cost = r->cost_usd;
    w->ttft_ms = r->ttft_ns ? ms_between(r->start_ns, r->ttft_ns) : -1;
    w->latency_ms = ms_between(r->start_ns, r->end_ns);
    w->upstream_ms = (double)(r->upstream_ns / 1000) / 1e3;
    w->status = r->client_gone ? 499 : r->status;
    w->estimated = !r->usage.known;
    w->partial = r->client_gone || !r->outcome || strcmp(r->outcome, "ok") != 0;
    w->stream = r->stream ? 1 : 0;
    return w;
}

/* Frees a list of rows. */
static void rows_free(row_t *w)
{
    while (w) {
        row_t *next = w->next;
        free(w);
        w = next;
    }
}

/* ---- the ledger ---------------------------------------------------------------------------- */

struct sg_ledger {
    char *path;
    uint64_t flush_ms;
    size_t queue_max;
    size_t wake_at; /* depth that wakes the writer before flush_ms */
    uint64_t retention_days;
    sqlite3 *db; /* the writer's connection */
    sqlite3_stmt *insert;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* under mu */
    row_t *head, *tail;
    size_t depth;
    int stop, held;
    uint64_t queued, written, dropped;
    uint64_t drop_unlogged; /* queue-full drops not yet in a warning */
    uint64_t drop_warned_ms;
    int drop_warned;
};

/* Formats an error that names the file. */
static void set_err(char *err, size_t cap, const char *fmt, const char *path, const char *why)
{
    if (err && cap) snprintf(err, cap, fmt, path, why);
}

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);"
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', 1);"
    "CREATE TABLE IF NOT EXISTS requests ("
    " ts REAL NOT NULL, request_id TEXT, \"key\" TEXT, team TEXT, provider TEXT, api TEXT,"
    " endpoint TEXT, model TEXT, route TEXT, rule TEXT, route_reason TEXT, attempts INTEGER,"
    " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER,"
    " guard_tokens INTEGER, cost_in_usd REAL, cost_out_usd REAL, cost_usd REAL,"
    " estimated INTEGER, ttft_ms REAL, latency_ms REAL, upstream_ms REAL, status INTEGER,"
    " outcome TEXT, partial INTEGER, stream INTEGER, denied TEXT, error TEXT);"
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);"
    "CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (\"key\", ts);";

static const char *const insert_sql =
    "INSERT INTO requests (ts, request_id, \"key\", team, provider, api, endpoint, model, route,"
    " rule, route_reason, outcome, denied, error, attempts, prompt_tokens, completion_tokens,"
    " cached_tokens, guard_tokens, cost_in_usd, cost_out_usd, cost_usd, estimated, ttft_ms,"
    " latency_ms, upstream_ms, status, partial, stream) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
    " ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26,"
    " ?27, ?28, ?29)";

/* One integer from a query (the first column of its first row), or -1. */
static long long query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* WAL journal, NORMAL synchronous (a commit is durable against a crash of the process; the
 * last ones may be lost to a power cut), then the schema. 0, or -1 with err. */
static int prepare_file(sqlite3 *db, const char *path, char *err, size_t cap)
{
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK) {
        set_err(err, cap, "ledger %s: %s", path, sqlite3_errmsg(db));
        return -1;
    }
    int rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        set_err(err, cap, "ledger %s: %s", path,
                rc == SQLITE_ROW ? "the file system does not support WAL journal mode"
                                 : sqlite3_errmsg(db));
        return -1;
    }
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, cap, "ledger %s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    long long v = query_int(db, "SELECT value FROM meta WHERE name = 'schema_version'");
    if (v != SCHEMA_VERSION) {
        char why[128];
        snprintf(why, sizeof(why), "schema version %lld, this gateway writes version %d", v,
                 SCHEMA_VERSION);
        set_err(err, cap, "ledger %s: %s", path, why);
        return -1;
    }
    return 0;
}

/* Deletes the rows older than the retention period. Returns how many, or -1. */
static long long retention_delete(sqlite3 *db, uint64_t days)
{
    if (!days) return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "DELETE FROM requests WHERE ts < ?1", -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_double(st, 1, wall_now() - (double)days * 86400.0);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
}

/* ---- the writer thread ---------------------------------------------------------------------- */

/* Binds text column t of a row (s points into its packed strings), or NULL. */
static void bind_text(sqlite3_stmt *st, int col, const row_t *w, int t, const char *s)
{
    if (w->len[t] == T_NULL)
        sqlite3_bind_null(st, col);
    else
        sqlite3_bind_text(st, col, s, (int)w->len[t], SQLITE_STATIC);
}

/* Binds one row to the prepared INSERT and runs it. */
static int insert_row(sqlite3_stmt *st, const row_t *w)
{
    sqlite3_bind_double(st, 1, w->ts);
    const char *p = w->text;
    for (int t = 0; t < T_N; t++) {
        bind_text(st, 2 + t, w, t, p);
        p += (w->len[t] == T_NULL ? 0 : w->len[t]) + 1;
    }
    const long ints[] = {w->attempts, w->prompt, w->completion, w->cached, w->guard};
    for (int i = 0; i < 5; i++) sqlite3_bind_int64(st, 15 + i, ints[i]);
    sqlite3_bind_double(st, 20, w->cost_in);
    sqlite3_bind_double(st, 21, w->cost_out);
    sqlite3_bind_double(st, 22, w->cost);
    sqlite3_bind_int(st, 23, w->estimated);
    if (w->ttft_ms < 0)
        sqlite3_bind_null(st, 24);
    else
        sqlite3_bind_double(st, 24, w->ttft_ms);
    sqlite3_bind_double(st, 25, w->latency_ms);
    sqlite3_bind_double(st, 26, w->upstream_ms);
    sqlite3_bind_int(st, 27, w->status);
    sqlite3_bind_int(st, 28, w->partial);
    sqlite3_bind_int(st, 29, w->stream);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Writes a batch in one transaction. Returns 0, or -1 (rolled back) with the reason. */
static int write_batch(sg_ledger_t *l, const row_t *w, char *why, size_t cap)
{
    if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sg_strlcpy(why, cap, sqlite3_errmsg(l->db));
        return -1;
    }
    for (; w; w = w->next) {
        if (insert_row(l->insert, w) != 0) {
            sg_strlcpy(why, cap, sqlite3_errmsg(l->db));
            sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sg_strlcpy(why, cap, sqlite3_errmsg(l->db));
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* The rows in a batch. */
static size_t count_rows(const row_t *w)
{
    size_t n = 0;
    for (; w; w = w->next) n++;
    return n;
}

/* Writes one batch taken off the queue and updates the counters; a failed write loses the
 * batch (counted, logged at most once a second) and the next batch tries again. */
static void flush_batch(sg_ledger_t *l, row_t *batch, uint64_t *warned_ms)
{
    size_t n = count_rows(batch);
    char why[256];
    int rc = write_batch(l, batch, why, sizeof(why));
    rows_free(batch);
    pthread_mutex_lock(&l->mu);
    if (rc == 0)
        l->written += n;
    else
        l->dropped += n;
    uint64_t dropped = l->dropped;
    pthread_mutex_unlock(&l->mu);
    uint64_t now = sg_now_ms();
    if (rc == 0 || (*warned_ms && now - *warned_ms < WARN_EVERY_MS)) return;
    *warned_ms = now;
    sg_logline_t line;
    sg_logline_begin(&line, SG_LOG_ERROR, "ledger write failed; rows dropped");
    sg_logline_str(&line, "path", l->path);
    sg_logline_str(&line, "error", why);
    sg_logline_int(&line, "rows", (long long)n);
    sg_logline_int(&line, "dropped_total", (long long)dropped);
    sg_logline_emit(&line);
}

/* Deletes expired rows once a day. */
static void daily_retention(sg_ledger_t *l, uint64_t *next_ms)
{
    uint64_t now = sg_now_ms();
    if (!l->retention_days || now < *next_ms) return;
    *next_ms = now + RETENTION_EVERY_MS;
    long long n = retention_delete(l->db, l->retention_days);
    if (n < 0)
        sg_log(SG_LOG_ERROR, "ledger retention failed: %s", sqlite3_errmsg(l->db));
    else if (n > 0)
        sg_log(SG_LOG_INFO, "ledger retention deleted %lld row(s) older than %llu day(s)", n,
               (unsigned long long)l->retention_days);
}

/* CLOCK_MONOTONIC time ms from now (the condition variable's clock). */
static struct timespec deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits (mu held) until flush_ms passed, the queue is deep enough, or close; returns the
 * queue taken off, or NULL. */
static row_t *take_batch(sg_ledger_t *l)
{
    struct timespec until = deadline_in(l->flush_ms);
    while (!l->stop && (l->held || l->depth < l->wake_at)) {
        int rc = pthread_cond_timedwait(&l->cond, &l->mu, &until);
        if (rc == ETIMEDOUT && !l->held) break;
        if (rc == ETIMEDOUT) until = deadline_in(l->flush_ms);
    }
    row_t *batch = l->head;
    l->head = l->tail = NULL;
    l->depth = 0;
    return batch;
}

/* The writer: batches until close, then whatever is still queued. */
static void *writer_main(void *arg)
{
    sg_ledger_t *l = arg;
    /* The loop thread comes first: when both want the same core (a gateway pinned to one),
     * the writer yields to it and catches up in larger batches. Linux nices threads one by
     * one. Failure only means the default priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), WRITER_NICE);
    uint64_t warned_ms = 0, next_retention = sg_now_ms() + RETENTION_EVERY_MS;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        row_t *batch = take_batch(l);
        int stop = l->stop;
        pthread_mutex_unlock(&l->mu);
        if (batch) flush_batch(l, batch, &warned_ms);
        daily_retention(l, &next_retention);
        pthread_mutex_lock(&l->mu);
        if (stop && !l->head) break;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Starts the writer with every signal blocked (they belong to the loop thread). */
static int start_writer(sg_ledger_t *l)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, writer_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) pthread_setname_np(l->thread, "sg-ledger"); /* seen in top, gdb */
    return rc;
}

/* ---- public API -------------------------------------------------------------------------- */

/* Logs what was found at open. */
static void log_open(const sg_ledger_t *l, long long rows, long long deleted)
{
    sg_logline_t line;
    sg_logline_begin(&line, SG_LOG_INFO, "ledger open");
    sg_logline_str(&line, "path", l->path);
    sg_logline_int(&line, "rows", rows);
    if (deleted > 0) sg_logline_int(&line, "retention_deleted", deleted);
    sg_logline_int(&line, "retention_days", (long long)l->retention_days);
    sg_logline_int(&line, "flush_ms", (long long)l->flush_ms);
    sg_logline_emit(&line);
}

/* Frees the ledger once its writer is gone (or never started). */
static void ledger_free(sg_ledger_t *l)
{
    sqlite3_finalize(l->insert);
    sqlite3_close(l->db);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mu);
    free(l->path);
    free(l);
}

/* The queue's mutex and the writer's condition variable (timed on the monotonic clock, so
 * a change of the wall clock does not stretch a flush). */
static void init_sync(sg_ledger_t *l)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->mu, NULL);
}

sg_ledger_t *sg_ledger_open(const sg_ledger_cfg_t *cfg, char *err, size_t cap)
{
    const char *path = cfg->path ? cfg->path : "sophia.db";
    sg_ledger_t *l = sg_xcalloc(1, sizeof(*l));
    init_sync(l);
    l->path = sg_xstrdup(path);
    l->flush_ms = cfg->flush_ms ? cfg->flush_ms : 200;
    l->queue_max = cfg->queue_max ? cfg->queue_max : 1;
    l->wake_at = l->queue_max / 2 ? l->queue_max / 2 : 1;
    l->retention_days = cfg->retention_days;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &l->db, flags, NULL) != SQLITE_OK) {
        set_err(err, cap, "ledger %s: %s", path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
        ledger_free(l);
        return NULL;
    }
    if (prepare_file(l->db, path, err, cap) != 0) {
        ledger_free(l);
        return NULL;
    }
    long long deleted = retention_delete(l->db, l->retention_days);
    if (deleted < 0 || sqlite3_prepare_v2(l->db, insert_sql, -1, &l->insert, NULL) != SQLITE_OK) {
        set_err(err, cap, "ledger %s: %s", path, sqlite3_errmsg(l->db));
        ledger_free(l);
        return NULL;
    }
    log_open(l, query_int(l->db, "SELECT count(*) FROM requests"), deleted);
    if (start_writer(l) != 0) {
        set_err(err, cap, "ledger %s: %s", path, "cannot start the writer thread");
        ledger_free(l);
        return NULL;
    }
    return l;
}

/* Warns that the queue was full, with the rows lost since the last warning. Loop thread. */
static void log_dropped(const sg_ledger_t *l, uint64_t n, uint64_t total)
{
    sg_logline_t line;
    sg_logline_begin(&line, SG_LOG_WARN, "ledger queue full; rows dropped");
    sg_logline_str(&line, "path", l->path);
    sg_logline_int(&line, "dropped", (long long)n);
    sg_logline_int(&line, "dropped_total", (long long)total);
    sg_logline_int(&line, "queue_max", (long long)l->queue_max);
    sg_logline_emit(&line);
}

/* Appends r's row to the queue, or counts it dropped when the queue is full (a warning at
 * most once a second). Never waits for the disk: the lock is only held for the append. */
void sg_ledger_observer(const sg_record_t *r, void *ud)
{
    sg_ledger_t *l = ud;
    row_t *w = row_from_record(r);
    uint64_t warn_n = 0, total = 0;
    pthread_mutex_lock(&l->mu);
    l->queued++;
    if (l->depth < l->queue_max) {
        if (l->tail)
            l->tail->next = w;
        else
            l->head = w;
        l->tail = w;
        w = NULL;
        if (++l->depth == l->wake_at) pthread_cond_signal(&l->cond);
    } else {
        l->dropped++;
        l->drop_unlogged++;
        uint64_t now = sg_now_ms();
        if (!l->drop_warned || now - l->drop_warned_ms >= WARN_EVERY_MS) {
            l->drop_warned = 1;
            l->drop_warned_ms = now;
            warn_n = l->drop_unlogged;
            total = l->dropped;
            l->drop_unlogged = 0;
        }
    }
    pthread_mutex_unlock(&l->mu);
    free(w);
    if (warn_n) log_dropped(l, warn_n, total);
}

void sg_ledger_hold(sg_ledger_t *l, int hold)
{
    pthread_mutex_lock(&l->mu);
    l->held = hold;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

void sg_ledger_close(sg_ledger_t *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    sg_logline_t line;
    sg_logline_begin(&line, l->dropped ? SG_LOG_WARN : SG_LOG_INFO, "ledger closed");
    sg_logline_str(&line, "path", l->path);
    sg_logline_int(&line, "written", (long long)l->written);
    sg_logline_int(&line, "dropped", (long long)l->dropped);
    sg_logline_emit(&line);
    rows_free(l->head);
    ledger_free(l);
}

void sg_ledger_stats(const sg_ledger_t *l, sg_ledger_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    if (!l) return;
    pthread_mutex_t *mu = (pthread_mutex_t *)&l->mu; /* the counters' lock, not the ledger */
    pthread_mutex_lock(mu);
    s->queued = l->queued;
    s->written = l->written;
    s->dropped = l->dropped;
    s->depth = l->depth;
    pthread_mutex_unlock(mu);
}

const char *sg_ledger_path(const sg_ledger_t *l)
{
    return l ? l->path : NULL;
}

/* ---- spend at start ---------------------------------------------------------------------- */

int64_t sg_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The unix times at which the UTC day and the UTC month that hold now began. */
static void period_starts(int64_t now, int64_t *day, int64_t *month)
{
    int64_t days = now >= 0 ? now / 86400 : (now - 86399) / 86400;
    *day = days * 86400;
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    *month = sg_days_from_civil(tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, 1) * 86400;
}

int sg_ledger_spend(const sg_ledger_t *l, int64_t unix_now,
                    void (*fn)(const char *key, const char *team, double day_usd, double month_usd,
                               void *ud),
                    void *ud, char *err, size_t cap)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(l->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        set_err(err, cap, "ledger %s: %s", l->path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    int64_t day, month;
    period_starts(unix_now, &day, &month);
    static const char sql[] = "SELECT coalesce(\"key\", ''), coalesce(team, ''),"
                              " total(CASE WHEN ts >= ?1 THEN cost_usd ELSE 0 END), total(cost_usd)"
                              " FROM requests WHERE ts >= ?2 AND ts < ?3 GROUP BY 1, 2";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_double(st, 1, (double)day);
        sqlite3_bind_double(st, 2, (double)month);
        sqlite3_bind_double(st, 3, (double)(day + 86400));
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               sqlite3_column_double(st, 2), sqlite3_column_double(st, 3), ud);
    }
    if (rc != SQLITE_DONE) set_err(err, cap, "ledger %s: %s", l->path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_DONE ? 0 : -1;
}
