/*
 * The metrics registry behind /metrics. Series are created rarely (a new
 * route, a new status code) and updated on every request, so the two paths
 * are split: creation and rendering take the registry's mutex, updates are
 * C11 atomics on the series itself and take no lock. Callers look a series
 * up once and keep the pointer.
 *
 * Families keep their first series' type, help and buckets; series hang off
 * their family in creation order, which is also the order of the output, so
 * the exposition is stable from one scrape to the next. The table is fixed
 * (SP_METRICS_MAX_SERIES) because label values come from code paths an
 * attacker can reach; an unbounded registry would be a memory leak on demand.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/sp_core.h"
#include "sealpost/metrics.h"

#define SP_METRIC_NAME_MAX 128
#define SP_METRIC_LABELS_MAX 1024
#define SP_METRIC_HELP_MAX 1024

typedef struct sp_family {
    char name[SP_METRIC_NAME_MAX + 1];
    char *help;
    sp_metric_type type;
    double bounds[SP_METRICS_MAX_BUCKETS];
    size_t n_bounds;
    sp_metric *first, *last;
} sp_family;

struct sp_metric {
    sp_metric_type type;
    sp_family *family;
    sp_metric *next;
    _Atomic uint64_t value;    /* counter value, or a gauge's double as bits */
    _Atomic uint64_t sum_bits; /* histogram: the sum as double bits */
    const char *labels;        /* "" without labels; lives in this block */
    size_t n_buckets;          /* histogram: bounds + the +Inf bucket */
    _Atomic uint64_t buckets[]; /* per bucket, not cumulative */
};

struct sp_metrics {
    pthread_mutex_t lock;
    sp_family **families;
    size_t n_families;
    size_t n_series;
};

static uint64_t sp_dbits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double sp_bitsd(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

sp_error sp_metrics_new(sp_metrics **out) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    sp_metrics *m = sp_calloc(1, sizeof *m);
    SP_ENSURE(m != NULL, SP_ERR_NO_MEMORY);
    /* a family exists only with a series, so this bound is never reached
     * before the series limit */
    m->families = sp_calloc(SP_METRICS_MAX_SERIES, sizeof *m->families);
    if (m->families == NULL || pthread_mutex_init(&m->lock, NULL) != 0) {
        sp_free(m->families);
        sp_free(m);
        return SP_ERR_NO_MEMORY;
    }
    *out = m;
    return SP_OK;
}

void sp_metrics_free(sp_metrics *metrics) {
    if (metrics == NULL) return;
    for (size_t i = 0; i < metrics->n_families; i++) {
        sp_family *f = metrics->families[i];
        for (sp_metric *s = f->first, *next; s != NULL; s = next) {
            next = s->next;
            sp_free(s);
        }
        sp_free(f->help);
        sp_free(f);
    }
    pthread_mutex_destroy(&metrics->lock);
    sp_free(metrics->families);
    sp_free(metrics);
}

/* ---- validation ---- */

static bool sp_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > SP_METRIC_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static bool sp_label_name_char(char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

/* k="v"(,k="v")*: names [a-zA-Z_][a-zA-Z0-9_]*, not "__"-reserved, not "le"
 * on a histogram (that one is ours), no name twice; values with only the
 * three escapes the format knows and no raw newline. */
static bool sp_labels_ok(const char *labels, bool histogram) {
    size_t len = strlen(labels);
    if (len > SP_METRIC_LABELS_MAX) return false;
    sp_span names[64];
    size_t n_names = 0;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        if (!sp_label_name_char(labels[i], true)) return false;
        while (i < len && sp_label_name_char(labels[i], false)) i++;
        sp_span name = {(const uint8_t *)labels + start, i - start};
        if (name.len >= 2 && labels[start] == '_' && labels[start + 1] == '_') return false;
        if (histogram && name.len == 2 && memcmp(name.data, "le", 2) == 0) return false;
        for (size_t k = 0; k < n_names; k++) {
            if (names[k].len == name.len && memcmp(names[k].data, name.data, name.len) == 0) return false;
        }
        if (n_names == SP_ARRAY_LEN(names)) return false;
        names[n_names++] = name;
        if (i + 1 >= len || labels[i] != '=' || labels[i + 1] != '"') return false;
        i += 2;
        for (;;) {
            if (i >= len) return false;
            char c = labels[i];
            if (c == '"') break;
            if (c == '\n') return false;
            if (c == '\\') {
                if (i + 1 >= len) return false;
                char e = labels[i + 1];
                if (e != '\\' && e != '"' && e != 'n') return false;
                i++;
            }
            i++;
        }
        i++; /* the closing quote */
        if (i == len) break;
        if (labels[i] != ',' || i + 1 == len) return false;
        i++;
    }
    return true;
}

static bool sp_bounds_ok(const double *bounds, size_t n) {
    if (bounds == NULL || n == 0 || n > SP_METRICS_MAX_BUCKETS) return false;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i])) return false;
        if (i > 0 && !(bounds[i] > bounds[i - 1])) return false;
    }
    return true;
}

sp_error sp_metrics_label_escape(const char *value, char *out, size_t cap) {
    SP_ENSURE(value != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_wbuf b = sp_wbuf_of(out, cap);
    for (const char *p = value; *p; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        if (esc != NULL) {
            SP_GUARD(sp_wbuf_put(&b, esc, 2));
        } else {
            SP_GUARD(sp_wbuf_put(&b, p, 1));
        }
    }
    return sp_wbuf_terminate(&b);
}

/* ---- lookup and creation ---- */

static sp_family *sp_family_find(sp_metrics *m, const char *name) {
    for (size_t i = 0; i < m->n_families; i++) {
        if (strcmp(m->families[i]->name, name) == 0) return m->families[i];
    }
    return NULL;
}

static sp_error sp_family_new(sp_metrics *m, sp_metric_type type, const char *name, const char *help,
                              const double *bounds, size_t n_bounds, sp_family **out) {
    SP_ENSURE(m->n_families < SP_METRICS_MAX_SERIES, SP_ERR_TOO_LARGE);
    sp_family *f = sp_calloc(1, sizeof *f);
    SP_ENSURE(f != NULL, SP_ERR_NO_MEMORY);
    size_t help_len = strlen(help);
    f->help = sp_malloc(help_len + 1);
    if (f->help == NULL) {
        sp_free(f);
        return SP_ERR_NO_MEMORY;
    }
    memcpy(f->help, help, help_len + 1);
    memcpy(f->name, name, strlen(name) + 1);
    f->type = type;
    if (type == SP_METRIC_HISTOGRAM) {
        memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
        f->n_bounds = n_bounds;
    }
    m->families[m->n_families++] = f;
    *out = f;
    return SP_OK;
}

static sp_error sp_series_new(sp_family *f, const char *labels, sp_metric **out) {
    size_t n_buckets = f->type == SP_METRIC_HISTOGRAM ? f->n_bounds + 1 : 0;
    size_t labels_len = strlen(labels);
    size_t head = sizeof(sp_metric) + n_buckets * sizeof(_Atomic uint64_t);
    sp_metric *s = sp_calloc(1, head + labels_len + 1);
    SP_ENSURE(s != NULL, SP_ERR_NO_MEMORY);
    char *label_copy = (char *)s + head;
    memcpy(label_copy, labels, labels_len + 1);
    s->type = f->type;
    s->family = f;
    s->labels = label_copy;
    s->n_buckets = n_buckets;
    atomic_init(&s->value, f->type == SP_METRIC_GAUGE ? sp_dbits(0.0) : 0);
    atomic_init(&s->sum_bits, sp_dbits(0.0));
    for (size_t i = 0; i < n_buckets; i++) atomic_init(&s->buckets[i], 0);
    if (f->last != NULL) {
        f->last->next = s;
    } else {
        f->first = s;
    }
    f->last = s;
    *out = s;
    return SP_OK;
}

sp_error sp_metrics_get(sp_metrics *metrics, sp_metric_type type, const char *name, const char *help,
                        const char *labels, const double *bounds, size_t n_bounds, sp_metric **out) {
    SP_ENSURE(metrics != NULL && name != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_ENSURE(type == SP_METRIC_COUNTER || type == SP_METRIC_GAUGE || type == SP_METRIC_HISTOGRAM,
              SP_ERR_INVALID_ARGUMENT);
    if (labels == NULL) labels = "";
    if (help == NULL) help = "";
    bool histogram = type == SP_METRIC_HISTOGRAM;
    SP_ENSURE(sp_name_ok(name), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_labels_ok(labels, histogram), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(strlen(help) <= SP_METRIC_HELP_MAX, SP_ERR_INVALID_ARGUMENT);
    if (histogram) {
        SP_ENSURE(sp_bounds_ok(bounds, n_bounds), SP_ERR_INVALID_ARGUMENT);
    } else {
        SP_ENSURE(bounds == NULL && n_bounds == 0, SP_ERR_INVALID_ARGUMENT);
    }

    sp_error rc = SP_OK;
    pthread_mutex_lock(&metrics->lock);
    sp_family *f = sp_family_find(metrics, name);
    if (f != NULL) {
        SP_ENSURE_GOTO(f->type == type, SP_ERR_INVALID_ARGUMENT, rc, out);
        if (histogram) {
            SP_ENSURE_GOTO(f->n_bounds == n_bounds && memcmp(f->bounds, bounds, n_bounds * sizeof *bounds) == 0,
                           SP_ERR_INVALID_ARGUMENT, rc, out);
        }
        for (sp_metric *s = f->first; s != NULL; s = s->next) {
            if (strcmp(s->labels, labels) == 0) {
                *out = s;
                goto out;
            }
        }
    }
    SP_ENSURE_GOTO(metrics->n_series < SP_METRICS_MAX_SERIES, SP_ERR_TOO_LARGE, rc, out);
    bool new_family = f == NULL;
    if (new_family) SP_GUARD_GOTO(sp_family_new(metrics, type, name, help, bounds, n_bounds, &f), rc, out);
    rc = sp_series_new(f, labels, out);
    if (rc != SP_OK) {
        if (new_family) {
            /* the family was the last one added: take it back */
            metrics->n_families--;
            sp_free(f->help);
            sp_free(f);
        }
        goto out;
    }
    metrics->n_series++;
out:
    pthread_mutex_unlock(&metrics->lock);
    return rc;
}

/* ---- updates: lock-free ---- */

void sp_metric_add(sp_metric *metric, uint64_t n) {
    if (metric == NULL || metric->type != SP_METRIC_COUNTER) return;
    atomic_fetch_add_explicit(&metric->value, n, memory_order_relaxed);
}

void sp_metric_set(sp_metric *metric, double value) {
    if (metric == NULL || metric->type != SP_METRIC_GAUGE) return;
    atomic_store_explicit(&metric->value, sp_dbits(value), memory_order_relaxed);
}

static void sp_atomic_double_add(_Atomic uint64_t *slot, double delta) {
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(slot, &old, sp_dbits(sp_bitsd(old) + delta), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

void sp_metric_gauge_add(sp_metric *metric, double delta) {
    if (metric == NULL || metric->type != SP_METRIC_GAUGE) return;
    sp_atomic_double_add(&metric->value, delta);
}

void sp_metric_observe(sp_metric *metric, double value) {
    if (metric == NULL || metric->type != SP_METRIC_HISTOGRAM || isnan(value)) return;
    const sp_family *f = metric->family;
    size_t i = 0;
    while (i < f->n_bounds && value > f->bounds[i]) i++;
    atomic_fetch_add_explicit(&metric->buckets[i], 1, memory_order_relaxed);
    sp_atomic_double_add(&metric->sum_bits, value);
}

uint64_t sp_metric_count(const sp_metric *metric) {
    if (metric == NULL) return 0;
    if (metric->type == SP_METRIC_COUNTER) return atomic_load_explicit(&metric->value, memory_order_relaxed);
    if (metric->type != SP_METRIC_HISTOGRAM) return 0;
    uint64_t total = 0;
    for (size_t i = 0; i < metric->n_buckets; i++) {
        total += atomic_load_explicit(&metric->buckets[i], memory_order_relaxed);
    }
    return total;
}

/* ---- rendering ---- */

typedef struct sp_text {
    char *data;
    size_t len, cap;
    sp_error rc;
} sp_text;

static void sp_text_put(sp_text *t, const char *s, size_t n) {
    if (t->rc != SP_OK) return;
    if (t->cap - t->len <= n) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= n) cap *= 2;
        char *grown = sp_malloc(cap);
        if (grown == NULL) {
            t->rc = SP_ERR_NO_MEMORY;
            return;
        }
        if (t->len) memcpy(grown, t->data, t->len);
        sp_free(t->data);
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = 0;
}

static void sp_text_str(sp_text *t, const char *s) { sp_text_put(t, s, strlen(s)); }

/* The shortest decimal that reads back as the same double, in the
 * spelling Prometheus expects for the special values. */
static void sp_format_prom_double(double v, char out[32]) {
    if (isnan(v)) {
        memcpy(out, "NaN", 4);
        return;
    }
    if (isinf(v)) {
        memcpy(out, v > 0 ? "+Inf" : "-Inf", 5);
        return;
    }
    sp_format_double(v, out);
}

static void sp_text_u64(sp_text *t, uint64_t v) {
    char digits[24];
    sp_wbuf b = sp_wbuf_of(digits, sizeof digits);
    if (sp_wbuf_put_u64(&b, v) == SP_OK) sp_text_put(t, digits, b.len);
}

static void sp_text_help(sp_text *t, const char *help) {
    for (const char *p = help; *p; p++) {
        if (*p == '\\') {
            sp_text_str(t, "\\\\");
        } else if (*p == '\n') {
            sp_text_str(t, "\\n");
        } else {
            sp_text_put(t, p, 1);
        }
    }
}

/* name{labels[,extra]} with the braces left out when both are empty. */
static void sp_text_series(sp_text *t, const char *name, const char *suffix, const char *labels, const char *extra) {
    sp_text_str(t, name);
    sp_text_str(t, suffix);
    bool has_labels = labels[0] != 0, has_extra = extra != NULL;
    if (!has_labels && !has_extra) {
        sp_text_str(t, " ");
        return;
    }
    sp_text_str(t, "{");
    sp_text_str(t, labels);
    if (has_labels && has_extra) sp_text_str(t, ",");
    if (has_extra) sp_text_str(t, extra);
    sp_text_str(t, "} ");
}

static void sp_render_histogram(sp_text *t, const sp_family *f, const sp_metric *s) {
    uint64_t cumulative = 0;
    char num[32], le[48];
    for (size_t i = 0; i < s->n_buckets; i++) {
        cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->n_bounds) {
            sp_format_prom_double(f->bounds[i], num);
        } else {
            memcpy(num, "+Inf", 5);
        }
        (void)snprintf(le, sizeof le, "le=\"%s\"", num);
        sp_text_series(t, f->name, "_bucket", s->labels, le);
        sp_text_u64(t, cumulative);
        sp_text_str(t, "\n");
    }
    sp_format_prom_double(sp_bitsd(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)), num);
    sp_text_series(t, f->name, "_sum", s->labels, NULL);
    sp_text_str(t, num);
    sp_text_str(t, "\n");
    /* the count is the +Inf bucket as summed above, so the two always agree
     * within one scrape even while observations go on */
    sp_text_series(t, f->name, "_count", s->labels, NULL);
    sp_text_u64(t, cumulative);
    sp_text_str(t, "\n");
}

sp_error sp_metrics_render(sp_metrics *metrics, char **text, size_t *len) {
    SP_ENSURE(metrics != NULL && text != NULL && len != NULL, SP_ERR_INVALID_ARGUMENT);
    *text = NULL;
    *len = 0;
    sp_text t = {0};
    static const char *const type_names[] = {"", "counter", "gauge", "histogram"};
    pthread_mutex_lock(&metrics->lock);
    sp_text_put(&t, "", 0); /* an empty registry is still a string */
    for (size_t i = 0; i < metrics->n_families; i++) {
        const sp_family *f = metrics->families[i];
        sp_text_str(&t, "# HELP ");
        sp_text_str(&t, f->name);
        sp_text_str(&t, " ");
        sp_text_help(&t, f->help);
        sp_text_str(&t, "\n# TYPE ");
        sp_text_str(&t, f->name);
        sp_text_str(&t, " ");
        sp_text_str(&t, type_names[f->type]);
        sp_text_str(&t, "\n");
        for (const sp_metric *s = f->first; s != NULL; s = s->next) {
            if (f->type == SP_METRIC_HISTOGRAM) {
                sp_render_histogram(&t, f, s);
                continue;
            }
            sp_text_series(&t, f->name, "", s->labels, NULL);
            uint64_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
            if (f->type == SP_METRIC_COUNTER) {
                sp_text_u64(&t, v);
            } else {
                char num[32];
                sp_format_prom_double(sp_bitsd(v), num);
                sp_text_str(&t, num);
            }
            sp_text_str(&t, "\n");
        }
    }
    pthread_mutex_unlock(&metrics->lock);
    if (t.rc != SP_OK) {
        sp_free(t.data);
        return t.rc;
    }
    *text = t.data;
    *len = t.len;
    return SP_OK;
}

void sp_metrics_text_free(char *text) { sp_free(text); }
