/* Prometheus metrics (GET /metrics, src/admin/metrics.c): an observer of request records keeps
 * counters and histograms (OpenTelemetry GenAI names where they exist); gauges are read from
 * the gateway, the scopes and the ledger when scraped. Every family is listed in
 * docs/metrics.md.
 *
 * Memory is bounded: label values are configured names only (provider, public model name,
 * key; "none" when empty, and a model the client asked for that was never routed is "none"),
 * and each labelled family holds at most SG_METRICS_SERIES_MAX series; an observation that
 * would need one more is counted in sophia_metrics_series_dropped_total instead. */
#ifndef SOPHIA_METRICS_H
#define SOPHIA_METRICS_H

#include "sophia/record.h"

#define SG_METRICS_SERIES_MAX 10000

typedef struct sg_metrics sg_metrics_t;

struct sg_buf;
struct sg_scope;
struct sg_ledger_stats;

sg_metrics_t *sg_metrics_new(void);
/* NULL is ignored. */
void sg_metrics_free(sg_metrics_t *m);
/* The observer (ud is the metrics). No allocation once a record's series exist. */
void sg_metrics_observer(const sg_record_t *r, void *ud);

/* The exposition (text format 0.0.4) in parts, each appending whole families to out; each
 * returns 0, or -1 when out's cap was reached (the text is then cut short). */
/* The families the observer keeps. */
int sg_metrics_render(const sg_metrics_t *m, struct sg_buf *out);
/* The per-scope families (throttled, budget refusals and warnings, budget spent and
 * remaining), visiting the scopes with each (sg_scopes_each). */
int sg_metrics_render_scopes(struct sg_buf *out,
                             void (*each)(void (*fn)(const struct sg_scope *s, void *ud),
                                          void *ud));
/* The ledger's families. */
int sg_metrics_render_ledger(struct sg_buf *out, const struct sg_ledger_stats *s);

#endif
