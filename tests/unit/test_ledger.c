/* Unit tests for the usage ledger (src/state/ledger.c) and the usage analytics
 * (src/admin/usage.c): every column of a row written through the observer, reopening an
 * existing file, files that are not SQLite, a full queue counted and a failed write survived,
 * rows visible before close, spend per UTC day and month, retention, and the grouped answer
 * (totals, nearest-rank percentiles, error rate, estimated share) over known rows. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sophia/core.h"
#include "sophia/ledger.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* cmocka's float assertion rounds to float: too coarse for costs. */
#define assert_double_equal(a, b, eps) assert_double_near((a), (b), (eps), #a, __LINE__)

static void assert_double_near(double a, double b, double eps, const char *what, int line)
{
    if (!(a - b <= eps && b - a <= eps))
        fail_msg("line %d: %s = %.12g, expected %.12g", line, what, a, b);
}

static char g_dir[64];
static char g_path[128];

/* A fresh directory per test; g_path is the ledger file inside it (not created). */
static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/sg_test_ledger_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof(g_path), "%s/l.db", g_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static sg_ledger_cfg_t cfg_of(uint64_t flush_ms, size_t queue_max, uint64_t retention_days)
{
    sg_ledger_cfg_t c = {1, g_path, flush_ms, queue_max, retention_days};
    return c;
}

static sg_ledger_t *open_ok(uint64_t flush_ms, size_t queue_max, uint64_t retention_days)
{
    sg_ledger_cfg_t c = cfg_of(flush_ms, queue_max, retention_days);
    char err[256] = "";
    sg_ledger_t *l = sg_ledger_open(&c, err, sizeof(err));
    if (!l) fprintf(stderr, "# %s\n", err);
    assert_non_null(l);
    return l;
}

static sqlite3 *db_open(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(g_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "# %s: %s\n", sql, msg);
        sqlite3_free(msg);
        fail();
    }
}

static long long count_rows(void)
{
    sqlite3 *db = db_open();
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM requests", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A record as the pipeline hands it over: every field set. */
static void full_record(sg_record_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->request_id, sizeof(r->request_id), "req-1");
    r->method = "POST";
    r->path = "/v1/chat/completions";
    snprintf(r->key, sizeof(r->key), "alice");
    snprintf(r->team, sizeof(r->team), "research");
    snprintf(r->model, sizeof(r->model), "fast");
    snprintf(r->route, sizeof(r->route), "lambda/llama3.1-8b-instruct");
    snprintf(r->provider, sizeof(r->provider), "lambda");
    snprintf(r->endpoint, sizeof(r->endpoint), "http://10.0.0.5:8000/v1");
    snprintf(r->rule, sizeof(r->rule), "alias");
    snprintf(r->why, sizeof(r->why), "alias fast -> lambda/llama3.1-8b-instruct");
    r->stream = 1;
    r->status = 200;
    r->attempts = 2;
    r->usage.prompt_tokens = 100;
    r->usage.completion_tokens = 50;
    r->usage.cached_tokens = 20;
    r->usage.guard_tokens = 7;
    r->usage.known = 1;
    r->cost_in_usd = 0.25;
    r->cost_out_usd = 0.5;
    r->cost_usd = 0.75;
    r->upstream_ns = 98765432;
    r->start_ns = 1000000000ull;
    r->ttft_ns = r->start_ns + 45678000ull;
    r->end_ns = r->start_ns + 123456789ull;
    r->outcome = "ok";
}

/* The columns of the one row with this request id, in a statement positioned on it. */
static sqlite3_stmt *row_of(sqlite3 *db, const char *request_id)
{
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT ts, request_id, key, team, provider, api, endpoint, model,"
                           " route, rule, route_reason, attempts, prompt_tokens,"
                           " completion_tokens, cached_tokens, guard_tokens, cost_in_usd,"
                           " cost_out_usd, cost_usd, estimated, ttft_ms, latency_ms, upstream_ms,"
                           " status, outcome, partial, stream, denied, error"
                           " FROM requests WHERE request_id = ?1",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    return st;
}

static const char *text(sqlite3_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(st, col);
}

/* Waits until the writer has committed n rows (or 5 s). */
static void wait_written(sg_ledger_t *l, uint64_t n)
{
    sg_ledger_stats_t s;
    for (int i = 0; i < 500; i++) {
        sg_ledger_stats(l, &s);
        if (s.written >= n) return;
        usleep(10000);
    }
    fail_msg("the writer committed %llu rows, not %llu", (unsigned long long)s.written,
             (unsigned long long)n);
}

/* ---- the ledger -------------------------------------------------------------------------- */

static void test_every_column(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(200, 100, 90);
    assert_string_equal(sg_ledger_path(l), g_path);
    sg_record_t r;
    full_record(&r);
    sg_ledger_observer(&r, l);
    /* the second: client gone, estimated, no ttft, denied and an error, no key */
    full_record(&r);
    snprintf(r.request_id, sizeof(r.request_id), "req-2");
    r.key[0] = r.team[0] = 0;
    r.stream = 0;
    r.client_gone = 1;
    r.usage.known = 0;
    r.ttft_ns = 0;
    r.denied = "budget";
    r.outcome = "client_closed";
    snprintf(r.error, sizeof(r.error), "budget exceeded");
    sg_ledger_observer(&r, l);
    double before = (double)time(NULL);
    sg_ledger_close(l);

    sqlite3 *db = db_open();
    sqlite3_stmt *st = row_of(db, "req-1");
    assert_true(sqlite3_column_double(st, 0) > before - 5 &&
                sqlite3_column_double(st, 0) < before + 5);
    assert_string_equal(text(st, 1), "req-1");
    assert_string_equal(text(st, 2), "alice");
    assert_string_equal(text(st, 3), "research");
    assert_string_equal(text(st, 4), "lambda");
    assert_string_equal(text(st, 5), "/v1/chat/completions");
    assert_string_equal(text(st, 6), "http://10.0.0.5:8000/v1");
    assert_string_equal(text(st, 7), "fast");
    assert_string_equal(text(st, 8), "lambda/llama3.1-8b-instruct");
    assert_string_equal(text(st, 9), "alias");
    assert_string_equal(text(st, 10), "alias fast -> lambda/llama3.1-8b-instruct");
    assert_int_equal(sqlite3_column_int(st, 11), 2);
    assert_int_equal(sqlite3_column_int(st, 12), 100);
    assert_int_equal(sqlite3_column_int(st, 13), 50);
    assert_int_equal(sqlite3_column_int(st, 14), 20);
    assert_int_equal(sqlite3_column_int(st, 15), 7);
    assert_double_equal(sqlite3_column_double(st, 16), 0.25, 1e-12);
    assert_double_equal(sqlite3_column_double(st, 17), 0.5, 1e-12);
    assert_double_equal(sqlite3_column_double(st, 18), 0.75, 1e-12);
    assert_int_equal(sqlite3_column_int(st, 19), 0);
    assert_double_equal(sqlite3_column_double(st, 20), 45.678, 1e-9);
    assert_double_equal(sqlite3_column_double(st, 21), 123.456, 1e-9);
    assert_double_equal(sqlite3_column_double(st, 22), 98.765, 1e-9);
    assert_int_equal(sqlite3_column_int(st, 23), 200);
    assert_string_equal(text(st, 24), "ok");
    assert_int_equal(sqlite3_column_int(st, 25), 0);
    assert_int_equal(sqlite3_column_int(st, 26), 1);
    assert_int_equal(sqlite3_column_type(st, 27), SQLITE_NULL);
    assert_int_equal(sqlite3_column_type(st, 28), SQLITE_NULL);
    sqlite3_finalize(st);

    st = row_of(db, "req-2");
    assert_int_equal(sqlite3_column_type(st, 2), SQLITE_NULL); /* no key */
    assert_int_equal(sqlite3_column_type(st, 3), SQLITE_NULL);
    assert_int_equal(sqlite3_column_int(st, 19), 1);            /* estimated */
    assert_int_equal(sqlite3_column_type(st, 20), SQLITE_NULL); /* no ttft */
    assert_int_equal(sqlite3_column_int(st, 23), 499);          /* the client left */
    assert_string_equal(text(st, 24), "client_closed");
    assert_int_equal(sqlite3_column_int(st, 25), 1); /* partial */
    assert_int_equal(sqlite3_column_int(st, 26), 0);
    assert_string_equal(text(st, 27), "budget");
    assert_string_equal(text(st, 28), "budget exceeded");
    sqlite3_finalize(st);

    /* WAL and the schema version */
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = 'schema_version'", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_reopen_keeps_rows(void **state)
{
    (void)state;
    sg_record_t r;
    full_record(&r);
    for (int round = 0; round < 3; round++) {
        sg_ledger_t *l = open_ok(200, 100, 90);
        sg_ledger_observer(&r, l);
        sg_ledger_close(l);
    }
    assert_int_equal(count_rows(), 3);
}

static void test_not_a_database(void **state)
{
    (void)state;
    FILE *f = fopen(g_path, "w");
    assert_non_null(f);
    fputs("this is not a SQLite file, just some text that is long enough to look like a header"
          " of something else entirely\n",
          f);
    fclose(f);
    sg_ledger_cfg_t c = cfg_of(200, 100, 90);
    char err[256] = "";
    assert_null(sg_ledger_open(&c, err, sizeof(err)));
    assert_non_null(strstr(err, g_path));
    assert_non_null(strstr(err, "not a database"));

    /* a directory that does not exist */
    snprintf(g_path, sizeof(g_path), "%s/missing/l.db", g_dir);
    c = cfg_of(200, 100, 90);
    err[0] = 0;
    assert_null(sg_ledger_open(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "unable to open"));
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    sg_ledger_close(open_ok(200, 100, 90));
    sqlite3 *db = db_open();
    exec(db, "UPDATE meta SET value = 2 WHERE name = 'schema_version'");
    sqlite3_close(db);
    sg_ledger_cfg_t c = cfg_of(200, 100, 90);
    char err[256] = "";
    assert_null(sg_ledger_open(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "schema version 2"));
}

static void test_full_queue_counted(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(10, 3, 90);
    sg_ledger_hold(l, 1); /* the writer takes nothing: the queue fills */
    sg_record_t r;
    full_record(&r);
    for (int i = 0; i < 5; i++) sg_ledger_observer(&r, l);
    sg_ledger_stats_t s;
    sg_ledger_stats(l, &s);
    assert_int_equal(s.queued, 5);
    assert_int_equal(s.dropped, 2);
    assert_int_equal(s.depth, 3);
    assert_int_equal(s.written, 0);
    sg_ledger_hold(l, 0);
    wait_written(l, 3);
    sg_ledger_stats(l, &s);
    assert_int_equal(s.depth, 0);
    /* room again */
    sg_ledger_observer(&r, l);
    wait_written(l, 4);
    sg_ledger_close(l);
    assert_int_equal(count_rows(), 4);
}

static void test_close_writes_held_rows(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(60000, 100, 90);
    sg_ledger_hold(l, 1);
    sg_record_t r;
    full_record(&r);
    for (int i = 0; i < 7; i++) sg_ledger_observer(&r, l);
    sg_ledger_close(l);
    assert_int_equal(count_rows(), 7);
}

static void test_rows_visible_before_close(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(20, 100, 90);
    sg_record_t r;
    full_record(&r);
    sg_ledger_observer(&r, l);
    wait_written(l, 1);
    assert_int_equal(count_rows(), 1); /* another connection reads while the ledger is open */
    sg_ledger_close(l);
}

static void test_write_error_survived(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(10, 100, 90);
    sqlite3 *db = db_open();
    exec(db, "BEGIN IMMEDIATE"); /* holds the write lock: the writer's batch fails when its busy
                                    timeout ends */
    sg_record_t r;
    full_record(&r);
    sg_ledger_observer(&r, l);
    sg_ledger_observer(&r, l);
    sg_ledger_stats_t s;
    for (int i = 0; i < 500; i++) {
        sg_ledger_stats(l, &s);
        if (s.dropped == 2) break;
        usleep(10000);
    }
    assert_int_equal(s.dropped, 2);
    assert_int_equal(s.written, 0);
    exec(db, "COMMIT");
    sqlite3_close(db);
    sg_ledger_observer(&r, l); /* the writer goes on */
    wait_written(l, 1);
    sg_ledger_close(l);
    assert_int_equal(count_rows(), 1);
}

/* Inserts a row with the fields the analytics read. ttft < 0: NULL. */
static void insert(sqlite3 *db, double ts, const char *key, const char *team, const char *model,
                   const char *provider, long prompt, long completion, double cost, double latency,
                   double ttft, int status, const char *outcome, int estimated)
{
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "INSERT INTO requests (ts, key, team, model, route, provider,"
                           " prompt_tokens, completion_tokens, cost_usd, latency_ms, ttft_ms,"
                           " status, outcome, estimated) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7,"
                           " ?8, ?9, ?10, ?11, ?12, ?13)",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_double(st, 1, ts);
    const char *t[] = {key, team, model, provider};
    for (int i = 0; i < 4; i++)
        if (t[i]) sqlite3_bind_text(st, 2 + i, t[i], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, prompt);
    sqlite3_bind_int64(st, 7, completion);
    sqlite3_bind_double(st, 8, cost);
    sqlite3_bind_double(st, 9, latency);
    if (ttft >= 0) sqlite3_bind_double(st, 10, ttft);
    sqlite3_bind_int(st, 11, status);
    sqlite3_bind_text(st, 12, outcome, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 13, estimated);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

#define T0 1710460800.0 /* 2024-03-15T00:00:00Z */

typedef struct spent {
    char key[32], team[32];
    double day, month;
} spent_t;

typedef struct spends {
    spent_t s[8];
    int n;
} spends_t;

static void on_spend(const char *key, const char *team, double day, double month, void *ud)
{
    spends_t *sp = ud;
    assert_true(sp->n < 8);
    spent_t *s = &sp->s[sp->n++];
    snprintf(s->key, sizeof(s->key), "%s", key);
    snprintf(s->team, sizeof(s->team), "%s", team);
    s->day = day;
    s->month = month;
}

static const spent_t *find_spend(const spends_t *sp, const char *key, const char *team)
{
    for (int i = 0; i < sp->n; i++)
        if (strcmp(sp->s[i].key, key) == 0 && strcmp(sp->s[i].team, team) == 0) return &sp->s[i];
    return NULL;
}

static void test_spend_day_and_month(void **state)
{
    (void)state;
    sg_ledger_t *l = open_ok(200, 100, 0); /* retention 0: the 2024 rows stay */
    sqlite3 *db = db_open();
    double noon = T0 + 12 * 3600;
    insert(db, noon - 60, "a", "t", "m", "p", 0, 0, 1.0, 1, -1, 200, "ok", 0);       /* today */
    insert(db, T0 - 86400 * 10, "a", "t", "m", "p", 0, 0, 2.0, 1, -1, 200, "ok", 0); /* 5th */
    insert(db, T0 - 86400 * 15, "a", "t", "m", "p", 0, 0, 4.0, 1, -1, 200, "ok", 0); /* Feb */
    insert(db, T0, "a", NULL, "m", "p", 0, 0, 0.125, 1, -1, 200, "ok", 0); /* midnight: today */
    insert(db, T0 - 0.001, "b", NULL, "m", "p", 0, 0, 0.5, 1, -1, 200, "ok", 0); /* yesterday */
    insert(db, noon, NULL, NULL, "m", "p", 0, 0, 0.25, 1, -1, 200, "ok", 0);
    insert(db, T0 + 86400, "a", "t", "m", "p", 0, 0, 8.0, 1, -1, 200, "ok", 0); /* tomorrow */
    sqlite3_close(db);

    spends_t sp = {0};
    char err[256];
    assert_int_equal(sg_ledger_spend(l, (int64_t)noon, on_spend, &sp, err, sizeof(err)), 0);
    assert_int_equal(sp.n, 4);
    const spent_t *s = find_spend(&sp, "a", "t");
    assert_non_null(s);
    assert_double_equal(s->day, 1.0, 1e-12);
    assert_double_equal(s->month, 3.0, 1e-12);
    s = find_spend(&sp, "a", "");
    assert_non_null(s);
    assert_double_equal(s->day, 0.125, 1e-12);
    assert_double_equal(s->month, 0.125, 1e-12);
    s = find_spend(&sp, "b", "");
    assert_non_null(s);
    assert_double_equal(s->day, 0, 1e-12);
    assert_double_equal(s->month, 0.5, 1e-12);
    s = find_spend(&sp, "", "");
    assert_non_null(s);
    assert_double_equal(s->day, 0.25, 1e-12);

    /* on the 1st of a month the month is the day */
    sp.n = 0;
    assert_int_equal(
        sg_ledger_spend(l, (int64_t)(T0 - 86400 * 14 + 5), on_spend, &sp, err, sizeof(err)),
        0); /* 2024-03-01T00:00:05Z */
    assert_int_equal(sp.n, 0);
    sg_ledger_close(l);
}

static void test_retention(void **state)
{
    (void)state;
    sg_ledger_close(open_ok(200, 100, 0));
    sqlite3 *db = db_open();
    double now = (double)time(NULL);
    insert(db, now - 86400 * 31, "old", NULL, "m", "p", 0, 0, 1, 1, -1, 200, "ok", 0);
    insert(db, now - 86400 * 29, "kept", NULL, "m", "p", 0, 0, 1, 1, -1, 200, "ok", 0);
    sqlite3_close(db);
    sg_ledger_close(open_ok(200, 100, 0)); /* 0: kept forever */
    assert_int_equal(count_rows(), 2);
    sg_ledger_close(open_ok(200, 100, 30));
    assert_int_equal(count_rows(), 1);
    db = db_open();
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT key FROM requests", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(text(st, 0), "kept");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- analytics ----------------------------------------------------------------------------- */

/* Known rows over two days (and two outside the range). */
static void seed(void)
{
    sg_ledger_close(open_ok(200, 100, 0));
    sqlite3 *db = db_open();
    insert(db, T0 + 10, "k1", "t1", "m1", "p1", 10, 20, 0.001, 100, 50, 200, "ok", 0);
    insert(db, T0 + 20, "k1", "t1", "m1", "p1", 30, 40, 0.002, 300, 70, 200, "ok", 1);
    insert(db, T0 + 30, "k1", "t1", "m1", "p1", 5, 0, 0.0005, 200, -1, 502, "upstream_error", 1);
    insert(db, T0 + 40, "k1", "t1", "m1", "p1", 0, 0, 0, 50, -1, 499, "client_closed", 0);
    insert(db, T0 + 86400 + 5, "k2", NULL, "m2", "p2", 100, 200, 0.01, 1000, 400, 200, "ok", 0);
    insert(db, T0 + 86400 + 6, "k2", NULL, "m2", "p2", 1, 1, 0.00001, 10, 5, 200,
           "upstream_truncated", 0);
    insert(db, T0 - 1, "k1", "t1", "m1", "p1", 1000, 1000, 1, 1, 1, 200, "ok", 0);
    insert(db, T0 + 2 * 86400, "k1", "t1", "m1", "p1", 1000, 1000, 1, 1, 1, 200, "ok", 0);
    sqlite3_close(db);
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void assert_pair(const cJSON *o, const char *k, double p50, double p95)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsObject(v));
    assert_double_equal(num(v, "p50"), p50, 1e-9);
    assert_double_equal(num(v, "p95"), p95, 1e-9);
}

/* The figures of rows 1-4 (m1, k1, t1, 2024-03-15). */
static void assert_m1(const cJSON *g)
{
    assert_int_equal(num(g, "requests"), 4);
    assert_int_equal(num(g, "prompt_tokens"), 45);
    assert_int_equal(num(g, "completion_tokens"), 60);
    assert_int_equal(num(g, "total_tokens"), 105);
    assert_double_equal(num(g, "cost_usd"), 0.0035, 1e-12);
    assert_pair(g, "latency_ms", 100, 300); /* 50 100 200 300: ranks 2 and 4 */
    assert_pair(g, "ttft_ms", 50, 70);
    assert_double_equal(num(g, "error_rate"), 0.25, 1e-12); /* the 502; a 499 is no error */
    assert_double_equal(num(g, "estimated_share"), 0.5, 1e-12);
}

/* Rows 5-6 (m2, k2, no team, 2024-03-16). */
static void assert_m2(const cJSON *g)
{
    assert_int_equal(num(g, "requests"), 2);
    assert_int_equal(num(g, "prompt_tokens"), 101);
    assert_int_equal(num(g, "completion_tokens"), 201);
    assert_int_equal(num(g, "total_tokens"), 302);
    assert_double_equal(num(g, "cost_usd"), 0.01001, 1e-12);
    assert_pair(g, "latency_ms", 10, 1000);
    assert_pair(g, "ttft_ms", 5, 400);
    assert_double_equal(num(g, "error_rate"), 0.5, 1e-12); /* a 200 that was cut short */
    assert_double_equal(num(g, "estimated_share"), 0, 1e-12);
}

static const char *group_name(const cJSON *g)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, "group");
    if (cJSON_IsNull(v)) return NULL;
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static cJSON *query_ok(int64_t from, int64_t to, const char *by)
{
    char err[256] = "";
    cJSON *j = sg_usage_query(g_path, from, to, by, err, sizeof(err));
    if (!j) fprintf(stderr, "# %s\n", err);
    assert_non_null(j);
    return j;
}

static void test_usage_groups(void **state)
{
    (void)state;
    seed();
    static const struct {
        const char *by, *first, *second; /* m2's group first (it cost more) */
    } cases[] = {{"model", "m2", "m1"}, {"key", "k2", "k1"},
                 {"team", NULL, "t1"},  {"provider", "p2", "p1"},
                 {"route", "m2", "m1"}, {"day", "2024-03-16", "2024-03-15"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *j = query_ok((int64_t)T0, (int64_t)T0 + 2 * 86400, cases[i].by);
        assert_string_equal(cJSON_GetObjectItem(j, "group_by")->valuestring, cases[i].by);
        assert_int_equal(num(j, "from"), (int64_t)T0);
        const cJSON *groups = cJSON_GetObjectItem(j, "groups");
        assert_int_equal(cJSON_GetArraySize(groups), 2);
        const cJSON *g0 = cJSON_GetArrayItem(groups, 0), *g1 = cJSON_GetArrayItem(groups, 1);
        if (cases[i].first)
            assert_string_equal(group_name(g0), cases[i].first);
        else
            assert_null(group_name(g0));
        assert_string_equal(group_name(g1), cases[i].second);
        assert_m2(g0);
        assert_m1(g1);
        cJSON_Delete(j);
    }
}

static void test_usage_totals(void **state)
{
    (void)state;
    seed();
    const char *bys[] = {NULL, "none", "model"};
    for (size_t i = 0; i < 3; i++) {
        cJSON *j = query_ok((int64_t)T0, (int64_t)T0 + 2 * 86400, bys[i]);
        const cJSON *t = cJSON_GetObjectItem(j, "totals");
        assert_int_equal(num(t, "requests"), 6);
        assert_int_equal(num(t, "prompt_tokens"), 146);
        assert_int_equal(num(t, "completion_tokens"), 261);
        assert_int_equal(num(t, "total_tokens"), 407);
        assert_double_equal(num(t, "cost_usd"), 0.01351, 1e-12);
        assert_pair(t, "latency_ms", 100, 1000); /* 10 50 100 200 300 1000: ranks 3 and 6 */
        assert_pair(t, "ttft_ms", 50, 400);      /* 5 50 70 400: ranks 2 and 4 */
        assert_double_equal(num(t, "error_rate"), 0.333333, 1e-12);
        assert_double_equal(num(t, "estimated_share"), 0.333333, 1e-12);
        if (i < 2) {
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "group_by")));
            const cJSON *groups = cJSON_GetObjectItem(j, "groups");
            assert_int_equal(cJSON_GetArraySize(groups), 1);
            assert_null(group_name(cJSON_GetArrayItem(groups, 0)));
            assert_int_equal(num(cJSON_GetArrayItem(groups, 0), "requests"), 6);
        }
        cJSON_Delete(j);
    }
}

static void test_usage_edges(void **state)
{
    (void)state;
    seed();
    /* rows 3 and 4 only: no ttft at all */
    cJSON *j = query_ok((int64_t)T0 + 30, (int64_t)T0 + 41, "model");
    const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(g, "ttft_ms")));
    assert_pair(g, "latency_ms", 50, 200);
    assert_double_equal(num(g, "error_rate"), 0.5, 1e-12);
    cJSON_Delete(j);
    /* nothing in range */
    j = query_ok(1000, 2000, "model");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "groups")), 0);
    const cJSON *t = cJSON_GetObjectItem(j, "totals");
    assert_int_equal(num(t, "requests"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(t, "latency_ms")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(t, "ttft_ms")));
    cJSON_Delete(j);

    char err[256] = "";
    assert_null(sg_usage_query(g_path, 0, 10, "colour", err, sizeof(err)));
    assert_non_null(strstr(err, "key, team, model, provider, route, day"));
    assert_null(sg_usage_query(g_path, 10, 10, "model", err, sizeof(err)));
    assert_non_null(strstr(err, "from must be before to"));
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/none.db", g_dir);
    assert_null(sg_usage_query(missing, 0, 10, "model", err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open the ledger"));
    assert_int_equal(access(missing, F_OK), -1); /* never created by a query */
}

static void test_parse_time(void **state)
{
    (void)state;
    int64_t t = 0, now = 1000000;
    assert_int_equal(sg_usage_parse_time("1700000000", now, &t), 0);
    assert_int_equal(t, 1700000000);
    assert_int_equal(sg_usage_parse_time("2024-03-15", now, &t), 0);
    assert_int_equal(t, 1710460800);
    assert_int_equal(sg_usage_parse_time("2024-03-15T01:02:03Z", now, &t), 0);
    assert_int_equal(t, 1710460800 + 3723);
    assert_int_equal(sg_usage_parse_time("2024-02-29", now, &t), 0);
    assert_int_equal(t, 1709164800);
    assert_int_equal(sg_usage_parse_time("1970-01-01", now, &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(sg_usage_parse_time("7d", now, &t), 0);
    assert_int_equal(t, now - 7 * 86400);
    assert_int_equal(sg_usage_parse_time("24h", now, &t), 0);
    assert_int_equal(t, now - 86400);
    assert_int_equal(sg_usage_parse_time("30m", now, &t), 0);
    assert_int_equal(t, now - 1800);
    assert_int_equal(sg_usage_parse_time("90s", now, &t), 0);
    assert_int_equal(t, now - 90);
    const char *bad[] = {"",
                         "abc",
                         "7x",
                         "7dd",
                         "2023-02-29",
                         "2024-13-01",
                         "2024-00-10",
                         "2024-04-31",
                         "2024-3-15",
                         "2024-03-15T25:00:00Z",
                         "2024-03-15T01:02:03",
                         "1969-12-31",
                         "2024-03-15 01:02:03Z",
                         "-5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sg_usage_parse_time(bad[i], now, &t) == 0) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(sg_days_from_civil(2000, 3, 1), 11017);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_column, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_writes_held_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_visible_before_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_survived, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spend_day_and_month, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_edges, setup, teardown),
        cmocka_unit_test(test_parse_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
