/* Prometheus metrics (GET /metrics, src/admin/metrics.c): an observer of request records keeps
 * counters and histograms (OpenTelemetry GenAI names where they exist); gauges are read from
 * the gateway, the scopes and the ledger when scraped. */
#ifndef SOPHIA_METRICS_H
#define SOPHIA_METRICS_H

#include "sophia/record.h"

typedef struct sg_metrics sg_metrics_t;

sg_metrics_t *sg_metrics_new(void);
void sg_metrics_free(sg_metrics_t *m);
/* The observer (ud is the metrics). */
void sg_metrics_observer(const sg_record_t *r, void *ud);

#endif
