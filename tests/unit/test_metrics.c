/*
 * The metrics registry: the exact exposition text of a small registry,
 * label and name validation, family type and bucket clashes, the series
 * limit, lock-free updates from several threads summing exactly, and every
 * allocation failure of creation and rendering.
 */
#include <math.h>
#include <pthread.h>

#include "sp_test_util.h"

static void test_render_exact(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    sp_metric *c1, *c2, *g, *h, *plain;
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "req_total", "Requests.", "route=\"/a\",code=\"200\"", NULL, 0,
                             &c1));
    assert_ok(sp_metrics_get(m, SP_METRIC_GAUGE, "temp", "A \\ gauge\nwith two lines", NULL, NULL, 0, &g));
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "req_total", "ignored", "route=\"/b\",code=\"404\"", NULL, 0,
                             &c2));
    const double bounds[] = {0.5, 1, 2.5};
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "lat_seconds", "Latency.", "route=\"/a\"", bounds, 3, &h));
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "plain_total", NULL, NULL, NULL, 0, &plain));
    /* the same series again is the same pointer */
    sp_metric *again = NULL;
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "req_total", NULL, "route=\"/a\",code=\"200\"", NULL, 0, &again));
    assert_ptr_equal(again, c1);

    sp_metric_add(c1, 3);
    sp_metric_add(c2, 1);
    sp_metric_set(g, -1.5);
    sp_metric_gauge_add(g, 0.25);
    sp_metric_observe(h, 0.1);
    sp_metric_observe(h, 0.5); /* on the bound: that bucket (le) */
    sp_metric_observe(h, 2);
    sp_metric_observe(h, 100);
    sp_metric_observe(h, NAN); /* ignored */
    /* updates of the wrong type and NULL are no-ops */
    sp_metric_add(g, 7);
    sp_metric_set(c1, 9);
    sp_metric_observe(c1, 1);
    sp_metric_add(NULL, 1);
    assert_int_equal(sp_metric_count(c1), 3);
    assert_int_equal(sp_metric_count(h), 4);

    char *text = NULL;
    size_t len = 0;
    assert_ok(sp_metrics_render(m, &text, &len));
    const char *want = "# HELP req_total Requests.\n"
                       "# TYPE req_total counter\n"
                       "req_total{route=\"/a\",code=\"200\"} 3\n"
                       "req_total{route=\"/b\",code=\"404\"} 1\n"
                       "# HELP temp A \\\\ gauge\\nwith two lines\n"
                       "# TYPE temp gauge\n"
                       "temp -1.25\n"
                       "# HELP lat_seconds Latency.\n"
                       "# TYPE lat_seconds histogram\n"
                       "lat_seconds_bucket{route=\"/a\",le=\"0.5\"} 2\n"
                       "lat_seconds_bucket{route=\"/a\",le=\"1\"} 2\n"
                       "lat_seconds_bucket{route=\"/a\",le=\"2.5\"} 3\n"
                       "lat_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
                       "lat_seconds_sum{route=\"/a\"} 102.6\n"
                       "lat_seconds_count{route=\"/a\"} 4\n"
                       "# HELP plain_total \n"
                       "# TYPE plain_total counter\n"
                       "plain_total 0\n";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    sp_metrics_text_free(text);
    sp_metrics_free(m);
}

static void test_histogram_without_labels_and_specials(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    const double bounds[] = {0.0005, 5};
    sp_metric *h, *g;
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "d", "h", NULL, bounds, 2, &h));
    assert_ok(sp_metrics_get(m, SP_METRIC_GAUGE, "g", "h", "a=\"x\"", NULL, 0, &g));
    sp_metric_observe(h, 0.0001);
    sp_metric_set(g, INFINITY);
    char *text = NULL;
    size_t len = 0;
    assert_ok(sp_metrics_render(m, &text, &len));
    assert_string_equal(text, "# HELP d h\n# TYPE d histogram\n"
                              "d_bucket{le=\"0.0005\"} 1\nd_bucket{le=\"5\"} 1\nd_bucket{le=\"+Inf\"} 1\n"
                              "d_sum 0.0001\nd_count 1\n"
                              "# HELP g h\n# TYPE g gauge\ng{a=\"x\"} +Inf\n");
    sp_metrics_text_free(text);
    sp_metrics_free(m);
}

static void test_label_escape(void **state) {
    (void)state;
    char out[64];
    assert_ok(sp_metrics_label_escape("a\"b\\c\nd", out, sizeof out));
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    assert_rc(sp_metrics_label_escape("abcdef", out, 6), SP_ERR_BUFFER_TOO_SMALL);
    assert_ok(sp_metrics_label_escape("abcde", out, 6));
    assert_rc(sp_metrics_label_escape("\"", out, 2), SP_ERR_BUFFER_TOO_SMALL);

    /* an escaped value round-trips into a series and renders as given */
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    char labels[96];
    assert_ok(sp_metrics_label_escape("x\"} evil 1\n", out, sizeof out));
    assert_true(snprintf(labels, sizeof labels, "v=\"%s\"", out) < (int)sizeof labels);
    sp_metric *c;
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "c", "h", labels, NULL, 0, &c));
    char *text = NULL;
    size_t len = 0;
    assert_ok(sp_metrics_render(m, &text, &len));
    assert_string_equal(text, "# HELP c h\n# TYPE c counter\nc{v=\"x\\\"} evil 1\\n\"} 0\n");
    sp_metrics_text_free(text);
    sp_metrics_free(m);
}

static void test_invalid_names_and_labels(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    sp_metric *s = (sp_metric *)1;
    const char *bad_names[] = {"", "9abc", "Abc", "a-b", "a b", "a{", "a\n"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_names); i++) {
        assert_rc(sp_metrics_get(m, SP_METRIC_COUNTER, bad_names[i], "h", NULL, NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
        assert_null(s);
    }
    char long_name[200];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    assert_rc(sp_metrics_get(m, SP_METRIC_COUNTER, long_name, "h", NULL, NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    const char *bad_labels[] = {
        "a",          "a=",           "a=\"x",        "a=x",           "=\"x\"",         "a=\"x\",",
        ",a=\"x\"",   "a=\"x\"b=\"y\"", "a=\"x\\q\"",   "a=\"x\ny\"",    "a=\"x\",a=\"y\"", "__a=\"x\"",
        "9a=\"x\"",   "a =\"x\"",     "a=\"x\" ",     "a=\"\\\"",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_labels); i++) {
        if (sp_metrics_get(m, SP_METRIC_COUNTER, "c", "h", bad_labels[i], NULL, 0, &s) != SP_ERR_INVALID_ARGUMENT) {
            fail_msg("labels accepted: %s", bad_labels[i]);
        }
    }
    const char *good_labels[] = {"a=\"\"", "a=\"x\",B_2=\"y\"", "a=\"\\\\\\\"\\n\"", "a=\"é\""};
    for (size_t i = 0; i < SP_ARRAY_LEN(good_labels); i++) {
        assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "c", "h", good_labels[i], NULL, 0, &s));
        assert_non_null(s);
    }
    /* a histogram's le is the registry's own */
    const double b[] = {1, 2};
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", "le=\"1\"", b, 2, &s), SP_ERR_INVALID_ARGUMENT);
    /* buckets: ascending, finite, 1..max, and only on histograms */
    const double desc[] = {2, 1}, dup[] = {1, 1}, inf[] = {1, INFINITY};
    double many[SP_METRICS_MAX_BUCKETS + 1];
    for (size_t i = 0; i < SP_ARRAY_LEN(many); i++) many[i] = (double)i;
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, desc, 2, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, dup, 2, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, inf, 2, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, many, SP_ARRAY_LEN(many), &s),
              SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "h", "h", NULL, many, SP_METRICS_MAX_BUCKETS, &s));
    assert_rc(sp_metrics_get(m, SP_METRIC_COUNTER, "k", "h", NULL, b, 2, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, (sp_metric_type)9, "k", "h", NULL, NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(NULL, SP_METRIC_COUNTER, "k", "h", NULL, NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    sp_metrics_free(m);
}

static void test_type_and_bounds_clash(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    sp_metric *s;
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "x", "h", "a=\"1\"", NULL, 0, &s));
    assert_rc(sp_metrics_get(m, SP_METRIC_GAUGE, "x", "h", "a=\"2\"", NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_GAUGE, "x", "h", "a=\"1\"", NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
    const double b1[] = {1, 2}, b2[] = {1, 3};
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "y", "h", "a=\"1\"", b1, 2, &s));
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "y", "h", "a=\"2\"", b2, 2, &s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "y", "h", "a=\"2\"", b1, 1, &s), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "y", "h", "a=\"2\"", b1, 2, &s));
    sp_metrics_free(m);
}

static void test_series_limit(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    char labels[32];
    sp_metric *s;
    for (unsigned i = 0; i < SP_METRICS_MAX_SERIES; i++) {
        assert_true(snprintf(labels, sizeof labels, "i=\"%u\"", i) < (int)sizeof labels);
        assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, i % 2 ? "odd" : "even", "h", labels, NULL, 0, &s));
    }
    assert_rc(sp_metrics_get(m, SP_METRIC_COUNTER, "odd", "h", "i=\"new\"", NULL, 0, &s), SP_ERR_TOO_LARGE);
    assert_rc(sp_metrics_get(m, SP_METRIC_GAUGE, "other", "h", NULL, NULL, 0, &s), SP_ERR_TOO_LARGE);
    /* existing series are still found */
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "odd", "h", "i=\"7\"", NULL, 0, &s));
    char *text = NULL;
    size_t len = 0;
    assert_ok(sp_metrics_render(m, &text, &len));
    assert_non_null(strstr(text, "even{i=\"4094\"} 0\n"));
    assert_null(strstr(text, "other"));
    sp_metrics_text_free(text);
    sp_metrics_free(m);
}

typedef struct {
    sp_metric *c, *g, *h;
} sp_hammer_arg;

#define HAMMER_ROUNDS 100000

static void *sp_hammer(void *p) {
    sp_hammer_arg *a = p;
    for (int i = 0; i < HAMMER_ROUNDS; i++) {
        sp_metric_add(a->c, 1);
        sp_metric_gauge_add(a->g, 1);
        sp_metric_observe(a->h, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5: sums exactly in binary */
    }
    return NULL;
}

static void test_concurrent_updates(void **state) {
    (void)state;
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    sp_hammer_arg a;
    const double b[] = {0.5, 1};
    assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "c", "h", NULL, NULL, 0, &a.c));
    assert_ok(sp_metrics_get(m, SP_METRIC_GAUGE, "g", "h", NULL, NULL, 0, &a.g));
    assert_ok(sp_metrics_get(m, SP_METRIC_HISTOGRAM, "hh", "h", NULL, b, 2, &a.h));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, sp_hammer, &a), 0);
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(sp_metric_count(a.c), 4 * HAMMER_ROUNDS);
    assert_int_equal(sp_metric_count(a.h), 4 * HAMMER_ROUNDS);
    char *text = NULL;
    size_t len = 0;
    assert_ok(sp_metrics_render(m, &text, &len));
    assert_non_null(strstr(text, "\nc 400000\n"));
    assert_non_null(strstr(text, "\ng 400000\n"));
    assert_non_null(strstr(text, "hh_bucket{le=\"0.5\"} 200000\n"));
    assert_non_null(strstr(text, "hh_bucket{le=\"1\"} 300000\n"));
    assert_non_null(strstr(text, "hh_bucket{le=\"+Inf\"} 400000\n"));
    assert_non_null(strstr(text, "hh_sum 300000\n"));
    sp_metrics_text_free(text);
    sp_metrics_free(m);
}

static void test_allocation_failures(void **state) {
    (void)state;
    /* new */
    for (uint64_t n = 1;; n++) {
        sp_metrics *m = NULL;
        sp_test_fault f = sp_test_fault_arm(n);
        sp_error rc = sp_metrics_new(&m);
        bool reached = sp_test_fault_disarm(f);
        if (!reached) {
            assert_ok(rc);
            sp_metrics_free(m);
            break;
        }
        assert_rc(rc, SP_ERR_NO_MEMORY);
        assert_null(m);
    }
    /* get: a failed creation leaves nothing behind and can be retried */
    sp_metrics *m = NULL;
    assert_ok(sp_metrics_new(&m));
    for (uint64_t n = 1;; n++) {
        sp_metric *s = NULL;
        sp_test_fault f = sp_test_fault_arm(n);
        sp_error rc = sp_metrics_get(m, SP_METRIC_COUNTER, "fresh", "h", "a=\"b\"", NULL, 0, &s);
        bool reached = sp_test_fault_disarm(f);
        if (!reached) {
            assert_ok(rc);
            break;
        }
        assert_rc(rc, SP_ERR_NO_MEMORY);
        char *text = NULL;
        size_t len = 0;
        assert_ok(sp_metrics_render(m, &text, &len));
        assert_string_equal(text, "");
        sp_metrics_text_free(text);
    }
    /* render */
    sp_metric *s;
    for (int i = 0; i < 200; i++) {
        char labels[32];
        assert_true(snprintf(labels, sizeof labels, "i=\"%d\"", i) < (int)sizeof labels);
        assert_ok(sp_metrics_get(m, SP_METRIC_COUNTER, "fresh", "h", labels, NULL, 0, &s));
    }
    for (uint64_t n = 1;; n++) {
        char *text = (char *)1;
        size_t len = 7;
        sp_test_fault f = sp_test_fault_arm(n);
        sp_error rc = sp_metrics_render(m, &text, &len);
        bool reached = sp_test_fault_disarm(f);
        if (!reached) {
            assert_ok(rc);
            sp_metrics_text_free(text);
            break;
        }
        assert_rc(rc, SP_ERR_NO_MEMORY);
        assert_null(text);
        assert_int_equal(len, 0);
    }
    sp_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_histogram_without_labels_and_specials),
        cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_invalid_names_and_labels),
        cmocka_unit_test(test_type_and_bounds_clash),
        cmocka_unit_test(test_series_limit),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
