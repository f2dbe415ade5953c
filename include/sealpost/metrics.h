/*
 * Metrics for /metrics in the Prometheus text format (version 0.0.4):
 * counters, gauges and histograms with fixed buckets. A series is a family
 * name plus a label set; looking one up takes a lock once, updating it is a
 * lock-free atomic, so handlers keep the sp_metric pointer.
 */
#ifndef SEALPOST_METRICS_H
#define SEALPOST_METRICS_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_METRICS_MAX_SERIES 4096
#define SP_METRICS_MAX_BUCKETS 16

typedef struct sp_metrics sp_metrics;
typedef struct sp_metric sp_metric;

typedef enum sp_metric_type {
    SP_METRIC_COUNTER = 1,
    SP_METRIC_GAUGE = 2,
    SP_METRIC_HISTOGRAM = 3,
} sp_metric_type;

SP_API SP_MUST_CHECK sp_error sp_metrics_new(sp_metrics **out);
SP_API void sp_metrics_free(sp_metrics *metrics);

/* Finds or creates a series. name: [a-z_][a-z0-9_]*; labels: NULL or
 * "k=\"v\",k2=\"v2\"" as it appears in the output (values escaped by the
 * caller; sp_metrics_label_escape helps). A family keeps the type and help of
 * its first series; another type is SP_ERR_INVALID_ARGUMENT. bounds (upper
 * bucket bounds, ascending, +Inf implied) only for histograms; every series
 * of a histogram family must use the same bounds. Past
 * SP_METRICS_MAX_SERIES, SP_ERR_TOO_LARGE. The pointer lives as long as the
 * registry. */
SP_API SP_MUST_CHECK sp_error sp_metrics_get(sp_metrics *metrics, sp_metric_type type, const char *name,
                                             const char *help, const char *labels, const double *bounds,
                                             size_t n_bounds, sp_metric **out);

SP_API void sp_metric_add(sp_metric *metric, uint64_t n);   /* counters */
SP_API void sp_metric_set(sp_metric *metric, double value); /* gauges */
/* Adds delta (negative to lower) to a gauge atomically: for gauges that
 * several threads move, such as requests in flight. */
SP_API void sp_metric_gauge_add(sp_metric *metric, double delta);
SP_API void sp_metric_observe(sp_metric *metric, double value); /* histograms */
SP_API uint64_t sp_metric_count(const sp_metric *metric);   /* counter value or observations */
/* The updates above accept NULL (no registry configured) and do nothing
 * when called on a series of another type. */

/* Escapes a label value (backslash, quote, newline) into out, NUL
 * included; SP_ERR_BUFFER_TOO_SMALL when it does not fit. */
SP_API SP_MUST_CHECK sp_error sp_metrics_label_escape(const char *value, char *out, size_t cap);

/* The whole registry as exposition text; free it with sp_metrics_text_free. */
SP_API SP_MUST_CHECK sp_error sp_metrics_render(sp_metrics *metrics, char **text, size_t *len);
SP_API void sp_metrics_text_free(char *text);

SP_END_DECLS

#endif
