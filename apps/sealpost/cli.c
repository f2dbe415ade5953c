/*
 * The sealpost CLI's shared helpers: one-line errors, usage errors, and
 * bounded reads and writes of standard input and output that wipe the
 * buffers they used, since those buffers hold payloads and keys.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char *g_command = "sealpost";

int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sealpost: %s: ", g_command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_FAILURE;
}

int fail_sp(const char *what, sp_error err) {
    return fail("%s: %s (%s)", what, sp_strerror(err), sp_error_name(err));
}

int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sealpost: %s: ", g_command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'sealpost %s --help')\n", g_command);
    va_end(ap);
    return EXIT_USAGE;
}

/* ---- small helpers ---- */
void buffer_wipe_free(buffer *b) {
    if (b->data != NULL) {
        sp_wipe(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof *b);
}

/* Reads all of standard input, at most limit bytes. On failure the buffer,
 * which may already hold a payload or a key, is wiped and freed here. */
int read_stdin(buffer *out, size_t limit) {
    memset(out, 0, sizeof *out);
    const char *why = NULL;
    int err = 0;
    for (;;) {
        if (out->cap - out->len < 65536) {
            size_t cap = out->cap ? out->cap * 2 : 65536;
            if (cap > limit + 1) cap = limit + 1;
            if (cap <= out->len) {
                why = "too large";
                break;
            }
            uint8_t *grown = malloc(cap);
            if (grown == NULL) {
                why = "out of memory";
                break;
            }
            if (out->len) memcpy(grown, out->data, out->len);
            buffer_wipe_free(&(buffer){out->data, out->len, out->cap});
            out->data = grown;
            out->cap = cap;
        }
        ssize_t n = read(STDIN_FILENO, out->data + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            err = errno;
            why = "read error";
            break;
        }
        if (n == 0) break;
        out->len += (size_t)n;
        if (out->len > limit) {
            why = "too large";
            break;
        }
    }
    if (why == NULL) return 0;
    buffer_wipe_free(out);
    if (err != 0) return fail("reading standard input: %s", strerror(err));
    if (strcmp(why, "too large") == 0) return fail("input larger than %zu bytes", limit);
    return fail("out of memory");
}

int write_stdout(const void *data, size_t len) {
    if (len > 0 && fwrite(data, 1, len, stdout) != len) return fail("writing standard output failed");
    if (fflush(stdout) != 0) return fail("writing standard output failed");
    return 0;
}

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decodes hex into out (cap bytes); returns the length or -1. */
long parse_hex(const char *hex, uint8_t *out, size_t cap) {
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > cap) return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

int parse_i64(const char *text, const char *name, int64_t min, int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != 0 || v < min || v > max)
        return usage_error("%s must be an integer from %lld to %lld", name, (long long)min, (long long)max);
    *out = (int64_t)v;
    return 0;
}

int bad_option(char **argv) {
    const char *arg = argv[optind - 1];
    if (optopt != 0 && optopt < 1000) return usage_error("option '-%c' is unknown or lacks its value", optopt);
    return usage_error("option '%s' is unknown or lacks its value", arg);
}

int parse_alg(const char *text, sp_alg *out) {
    if (sp_alg_from_name(text, strlen(text), out) != SP_OK)
        return usage_error("unknown algorithm '%s' (aes-256-cbc, aes-256-gcm, aes-256-ctr)", text);
    return 0;
}

