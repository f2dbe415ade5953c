/*
 * The timing and reporting every benchmark in bench/ shares.
 *
 * bench_wire, bench_vault, bench_kms and bench_audit each carried a copy of
 * the monotonic clock read, the SP_BENCH_SECONDS parser, the JSON line they
 * print per figure and (wire, vault) the batched timing loop. They live here
 * once, as static functions of a header, since CMake builds each bench from
 * its one .c file.
 *
 * A bench that cannot run is a failure: the including file defines
 *     static void bench_die(const char *what);
 * (declared below, noreturn), which reports `what` the program's own way
 * (its name first, its own cleanup) and exits non-zero.
 *
 * The JSON line's format is what scripts and the docs read: keep it
 * byte-for-byte.
 */
#ifndef SP_BENCH_UTIL_H
#define SP_BENCH_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_UTIL static __attribute__((unused))

static void bench_die(const char *what) __attribute__((noreturn));

typedef bool (*bench_fn)(void *arg);

BENCH_UTIL double bench_now(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) bench_die("clock_gettime(CLOCK_MONOTONIC) failed");
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* SP_BENCH_SECONDS, a number of seconds in (0, 60], or `fallback` when it
 * is unset or empty. */
BENCH_UTIL double bench_seconds(double fallback) {
    const char *s = getenv("SP_BENCH_SECONDS");
    if (s == NULL || *s == '\0') return fallback;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0 && v <= 60))
        bench_die("SP_BENCH_SECONDS must be a number of seconds in (0, 60]");
    return v;
}

/* Calls fn for at least `seconds` and gives calls per second through rate
 * (and the number of calls through calls, unless NULL); false as soon as fn
 * fails. The clock is read once per batch, and the batch grows until a batch
 * takes about a millisecond, so that for a tens-of-nanoseconds call the
 * clock read does not become part of what is measured. */
BENCH_UTIL bool bench_run_for(bench_fn fn, void *arg, double seconds, double *rate, uint64_t *calls) {
    uint64_t n = 0;
    uint64_t batch = 1;
    double start = bench_now();
    double last = start;
    double t = start;
    do {
        for (uint64_t i = 0; i < batch; i++) {
            if (!fn(arg)) return false;
        }
        n += batch;
        t = bench_now();
        if (t - last < 0.001 && batch < ((uint64_t)1 << 20)) batch *= 2;
        last = t;
    } while (t - start < seconds);
    *rate = (double)n / (t - start);
    if (calls != NULL) *calls = n;
    return true;
}

/* One result as a JSON line on stdout, flushed: ours against the reference
 * in `unit`, and their ratio (0 without a reference). */
BENCH_UTIL void bench_emit(const char *name, const char *unit, double ours, double reference) {
    double ratio = reference > 0 ? ours / reference : 0;
    printf("{\"bench\":\"%s\",\"unit\":\"%s\",\"ours\":%.0f,\"reference\":%.0f,\"ratio\":%.3f}\n", name, unit, ours,
           reference, ratio);
    fflush(stdout);
}

#endif
