/* The usage ledger: one row per finished request in a SQLite file (WAL), written in batches by
 * its own thread so that no request ever waits for the disk. The loop thread only appends the
 * row to a bounded queue (an observer of request records); a full queue drops the row, counts
 * it and logs it (rate-limited), never silently. The writer commits at least every flush_ms,
 * so `kill -9` loses at most that much; sg_ledger_close writes everything still queued.
 *
 * Schema (table "requests", one row per request): see docs/ledger.md. */
#ifndef SOPHIA_LEDGER_H
#define SOPHIA_LEDGER_H

#include <stdint.h>

#include "sophia/config.h"
#include "sophia/record.h"

typedef struct sg_ledger sg_ledger_t;

typedef struct sg_ledger_stats {
    uint64_t queued;  /* rows handed to the ledger */
    uint64_t written; /* rows committed */
    uint64_t dropped; /* rows lost to a full queue or a write error */
    uint64_t depth;   /* rows waiting now */
} sg_ledger_stats_t;

/* Opens (creating the file and schema when needed) the ledger at cfg->path, deletes rows older
 * than cfg->retention_days, and starts the writer. NULL with err (naming the file and the
 * reason: a missing directory, not a SQLite file, a newer schema) on failure. */
sg_ledger_t *sg_ledger_open(const sg_ledger_cfg_t *cfg, char *err, size_t cap);
/* The observer (loop thread; ud is the ledger): copies r's row onto the queue, stamped with the
 * wall-clock time it ended; a full queue drops it (counted). Never waits for the disk. */
void sg_ledger_observer(const sg_record_t *r, void *ud);
/* Writes every queued row, stops the writer, closes the file. NULL is ignored. */
void sg_ledger_close(sg_ledger_t *l);
/* The counters, from any thread (zeros for NULL). */
void sg_ledger_stats(const sg_ledger_t *l, sg_ledger_stats_t *s);
/* The file's path as configured (NULL for NULL). */
const char *sg_ledger_path(const sg_ledger_t *l);
/* Tests and the benchmark: while held (hold 1) the writer takes no rows, so the queue fills up
 * to queue_max; hold 0 lets it go on. sg_ledger_close writes everything even when held. */
void sg_ledger_hold(sg_ledger_t *l, int hold);
/* The spend so far of the UTC day and month that contain unix_now, per (key, team) pair found
 * in the ledger: fn once per pair ("" for none). Returns 0, or -1 with err. */
int sg_ledger_spend(const sg_ledger_t *l, int64_t unix_now,
                    void (*fn)(const char *key, const char *team, double day_usd, double month_usd,
                               void *ud),
                    void *ud, char *err, size_t cap);

/* Days since 1970-01-01 of the civil date y-m-d (proleptic Gregorian calendar, UTC). */
int64_t sg_days_from_civil(int64_t y, unsigned m, unsigned d);

/* ---- usage analytics (src/admin/usage.c) --------------------------------------------------- */

struct sg_gateway;

/* Totals of the rows with from <= time < to (unix seconds), grouped by group_by ("key", "team",
 * "model", "provider", "route", "day" (UTC date), or NULL / "none" for one group): requests,
 * tokens, cost, p50/p95 latency and time to first token, error rate, estimated share. Returns a
 * JSON object (caller deletes), or NULL with err (a bad group_by, an unreadable file). */
struct cJSON *sg_usage_query(const char *db_path, int64_t from, int64_t to, const char *group_by,
                             char *err, size_t cap);
/* `sophia-gateway usage --db PATH [--since 7d] [--by model]`: the same as a table. Returns
 * the exit status. */
int sg_usage_cli(int argc, char **argv);
/* A time for the usage query: unix seconds ("1700000000"), a UTC date ("2024-05-01", its
 * midnight), a UTC time ("2024-05-01T12:30:00Z"), or a duration before now ("30m", "24h",
 * "7d", "90s"). Returns 0 with *out, or -1 when s is none of these. */
int sg_usage_parse_time(const char *s, int64_t now, int64_t *out);
/* GET /admin/usage?from=&to=&group_by= : sg_usage_query's answer, computed on libuv's thread
 * pool (never on the loop); 400 for a bad parameter, 503 when the ledger is off. Logs its own
 * request line. */
void sg_usage_handle(struct sg_gateway *gw, sg_http_req_t *req);

#endif
