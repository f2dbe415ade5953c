/*
 * The core layer every other layer builds on: result-propagation macros,
 * the allocation funnel (counted, with fault injection for tests), locked
 * memory for secrets, bounded write buffers and read cursors that replace
 * pointer arithmetic in parsers, strict base64, and the bulk CSPRNG.
 *
 * Internal: apps never include this; they use include/sealpost/.
 */
#ifndef SP_CORE_H
#define SP_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"

/* ---- result propagation (s2n-style guards) ---- */
#define SP_GUARD(expr)                                                                             \
    do {                                                                                           \
        sp_error sp_guard_rc_ = (expr);                                                            \
        if (sp_guard_rc_ != SP_OK) return sp_guard_rc_;                                            \
    } while (0)
#define SP_ENSURE(cond, err)                                                                       \
    do {                                                                                           \
        if (!(cond)) return (err);                                                                 \
    } while (0)
#define SP_GUARD_GOTO(expr, rc, label)                                                             \
    do {                                                                                           \
        (rc) = (expr);                                                                             \
        if ((rc) != SP_OK) goto label;                                                             \
    } while (0)
#define SP_ENSURE_GOTO(cond, err, rc, label)                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (rc) = (err);                                                                          \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define SP_INTERNAL __attribute__((visibility("hidden")))
#define SP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- allocation funnel ---- */
SP_INTERNAL void *sp_malloc(size_t n);
SP_INTERNAL void *sp_calloc(size_t count, size_t size);
SP_INTERNAL void sp_free(void *p);
/* Frees after wiping n bytes (for buffers that held plaintext). */
SP_INTERNAL void sp_free_wiped(void *p, size_t n);

/* Test hooks, reached by tests and benchmarks linked to the static library
 * and never exported from the shared one. sp_test_alloc_fail_at(n): the
 * n-th allocation from now fails (0 disables). sp_test_alloc_count():
 * allocations so far, including OpenSSL's and jansson's once sp_init has
 * run. */
SP_INTERNAL void sp_test_alloc_fail_at(uint64_t n);
SP_INTERNAL uint64_t sp_test_alloc_count(void);

/* Locked, non-dumpable, wiped-on-free memory (OpenSSL's secure heap). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_secure_heap_init(void);
SP_INTERNAL void *sp_secure_alloc(size_t n);
SP_INTERNAL void sp_secure_free(void *p, size_t n);

/* Wires jansson to the allocation funnel and makes every freed JSON buffer
 * wiped, since JSON here carries keys and payloads. */
SP_INTERNAL void sp_json_use_wiping_allocator(void);
/* Parses JSON (duplicate keys rejected) into *out. A failure is
 * SP_ERR_NO_MEMORY when an allocation failed during the parse (jansson
 * reports some of those as syntax errors, and the input may be fine),
 * otherwise `malformed`. */
struct json_t;
SP_INTERNAL SP_MUST_CHECK sp_error sp_json_load(const void *data, size_t len, sp_error malformed,
                                                struct json_t **out);

/* ---- bounded write buffer ---- */
typedef struct sp_wbuf {
    uint8_t *data;
    size_t cap;
    size_t len;
} sp_wbuf;

static inline sp_wbuf sp_wbuf_of(void *data, size_t cap) {
    sp_wbuf b = {(uint8_t *)data, cap, 0};
    return b;
}
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_put(sp_wbuf *b, const void *src, size_t n);
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_put_str(sp_wbuf *b, const char *s);
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_put_u64(sp_wbuf *b, uint64_t v);
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_put_b64(sp_wbuf *b, const uint8_t *src, size_t n, bool url);
/* Reserves n bytes and returns where they start, for in-place producers. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_reserve(sp_wbuf *b, size_t n, uint8_t **where);
/* Adds a NUL after the content without counting it. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_wbuf_terminate(sp_wbuf *b);

/* ---- read cursor ---- */
typedef struct sp_cursor {
    const uint8_t *data;
    size_t len;
    size_t pos;
} sp_cursor;

typedef struct sp_span {
    const uint8_t *data;
    size_t len;
} sp_span;

static inline sp_cursor sp_cursor_of(const void *data, size_t len) {
    sp_cursor c = {(const uint8_t *)data, len, 0};
    return c;
}
static inline size_t sp_cursor_left(const sp_cursor *c) { return c->len - c->pos; }
/* True and advances when the next bytes equal lit. */
SP_INTERNAL bool sp_cursor_accept(sp_cursor *c, const char *lit);
/* The bytes up to (not including) the next `stop`, advancing past `stop`;
 * false when there is no `stop`. */
SP_INTERNAL bool sp_cursor_take_until(sp_cursor *c, uint8_t stop, sp_span *out);
/* The rest of the input. */
SP_INTERNAL sp_span sp_cursor_rest(sp_cursor *c);

/* ---- base64 (RFC 4648), strict: canonical padding, no whitespace ---- */
static inline size_t sp_b64_encoded_len(size_t n, bool url) {
    return url ? (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0) : ((n + 2) / 3) * 4;
}
static inline size_t sp_b64_decoded_max(size_t n) { return (n / 4) * 3 + 3; }
/* url: base64url without padding (JOSE); otherwise standard with padding. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_b64_encode(const uint8_t *in, size_t in_len, char *out, size_t out_cap,
                                                 size_t *out_len, bool url);
SP_INTERNAL SP_MUST_CHECK sp_error sp_b64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                                                 size_t *out_len, bool url);
/* True when every byte is in the alphabet (padding allowed at the end for
 * standard base64); does not check length. */
SP_INTERNAL bool sp_b64_alphabet_ok(const char *in, size_t len, bool url);

/* ---- hex ---- */
SP_INTERNAL SP_MUST_CHECK sp_error sp_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                                                 size_t *out_len);
SP_INTERNAL void sp_hex_encode(const uint8_t *in, size_t len, char *out /* 2*len+1 */);

/* ---- private files (keys, key rings) ---- */
/* Reads a regular file (no symlink) that only its owner may access:
 * SP_ERR_INSECURE_PERMISSIONS otherwise, SP_ERR_TOO_LARGE over max. The
 * buffer (len + 1 bytes, NUL-terminated) is the caller's to sp_free_wiped. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_file_read_private(const char *path, size_t max, uint8_t **out, size_t *out_len);
/* Replaces path atomically with data, mode 0600: a crash leaves the old
 * file or the new one. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_file_replace(const char *path, const uint8_t *data, size_t len);
/* write(2) until all of data is written, through EINTR and short writes. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_fd_write_all(int fd, const void *data, size_t len);
/* An exclusive advisory lock on "<path>.lock" (0600), for read-modify-write. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_file_lock(const char *path, int *fd);
SP_INTERNAL void sp_file_unlock(int fd);

/* ---- misc ---- */
SP_INTERNAL bool sp_ascii_ieq(const char *a, size_t a_len, const char *b);
SP_INTERNAL SP_MUST_CHECK sp_error sp_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);
SP_INTERNAL int64_t sp_now_seconds(void);
/* The shortest decimal that reads back as the same finite double, whole
 * numbers below 1e15 without an exponent (%g would write 400000 as 4e+05).
 * NaN and the infinities are the caller's: JSON and Prometheus spell them
 * differently. */
SP_INTERNAL void sp_format_double(double v, char out[32]);

#include "core/banned.h"

#endif
