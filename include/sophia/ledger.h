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
 * than cfg->retention_days, and starts the writer. NULL with err on failure. */
sg_ledger_t *sg_ledger_open(const sg_ledger_cfg_t *cfg, char *err, size_t cap);
/* The observer: queues r's row (ud is the ledger). */
void sg_ledger_observer(const sg_record_t *r, void *ud);
/* Writes every queued row, stops the writer, closes the file. NULL is ignored. */
void sg_ledger_close(sg_ledger_t *l);
void sg_ledger_stats(const sg_ledger_t *l, sg_ledger_stats_t *s);
const char *sg_ledger_path(const sg_ledger_t *l);
/* The spend so far of the UTC day and month that contain unix_now, per (key, team) pair found
 * in the ledger: fn once per pair ("" for none). Returns 0, or -1 with err. */
int sg_ledger_spend(const sg_ledger_t *l, int64_t unix_now,
                    void (*fn)(const char *key, const char *team, double day_usd, double month_usd,
                               void *ud),
                    void *ud, char *err, size_t cap);

/* ---- usage analytics (src/admin/usage.c) --------------------------------------------------- */

/* Totals of the rows with from <= time < to (unix seconds), grouped by group_by ("key", "team",
 * "model", "provider", "route", "day", or NULL for one group): requests, tokens, cost, p50/p95
 * latency and time to first token, error rate, estimated share. Returns a JSON object (caller
 * deletes), or NULL with err (a bad group_by, an unreadable file). */
struct cJSON *sg_usage_query(const char *db_path, int64_t from, int64_t to, const char *group_by,
                             char *err, size_t cap);
/* `sophia-gateway usage --db PATH [--since 7d] [--by model]`: the same as a table. Returns
 * the exit status. */
int sg_usage_cli(int argc, char **argv);

#endif
