/*
 * Bounded write buffers and read cursors. Parsers walk input through an
 * sp_cursor and producers fill an sp_wbuf, so no code outside this file does
 * pointer arithmetic against a length it has to remember to check.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/sp_core.h"

sp_error sp_wbuf_reserve(sp_wbuf *b, size_t n, uint8_t **where) {
    SP_ENSURE(b->len <= b->cap && n <= b->cap - b->len, SP_ERR_BUFFER_TOO_SMALL);
    *where = b->data + b->len;
    b->len += n;
    return SP_OK;
}

sp_error sp_wbuf_put(sp_wbuf *b, const void *src, size_t n) {
    uint8_t *dst;
    SP_GUARD(sp_wbuf_reserve(b, n, &dst));
    if (n) memcpy(dst, src, n);
    return SP_OK;
}

sp_error sp_wbuf_put_str(sp_wbuf *b, const char *s) { return sp_wbuf_put(b, s, strlen(s)); }

sp_error sp_wbuf_put_u64(sp_wbuf *b, uint64_t v) {
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    uint8_t *dst;
    SP_GUARD(sp_wbuf_reserve(b, n, &dst));
    for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)digits[n - 1 - i];
    return SP_OK;
}

sp_error sp_wbuf_put_b64(sp_wbuf *b, const uint8_t *src, size_t n, bool url) {
    size_t need = sp_b64_encoded_len(n, url), written = 0;
    SP_ENSURE(b->len <= b->cap && need < b->cap - b->len, SP_ERR_BUFFER_TOO_SMALL);
    /* the encoder NUL-terminates, hence the strict < above */
    SP_GUARD(sp_b64_encode(src, n, (char *)b->data + b->len, b->cap - b->len, &written, url));
    b->len += written;
    return SP_OK;
}

sp_error sp_wbuf_terminate(sp_wbuf *b) {
    SP_ENSURE(b->len < b->cap, SP_ERR_BUFFER_TOO_SMALL);
    b->data[b->len] = 0;
    return SP_OK;
}

bool sp_cursor_accept(sp_cursor *c, const char *lit) {
    size_t n = strlen(lit);
    if (n == 0) return true;
    if (sp_cursor_left(c) < n || memcmp(c->data + c->pos, lit, n) != 0) return false;
    c->pos += n;
    return true;
}

bool sp_cursor_take_until(sp_cursor *c, uint8_t stop, sp_span *out) {
    if (sp_cursor_left(c) == 0) return false;
    const uint8_t *start = c->data + c->pos;
    const uint8_t *hit = memchr(start, stop, sp_cursor_left(c));
    if (hit == NULL) return false;
    out->data = start;
    out->len = (size_t)(hit - start);
    c->pos += out->len + 1;
    return true;
}

sp_span sp_cursor_rest(sp_cursor *c) {
    /* an empty cursor may have a NULL base: no arithmetic on it */
    sp_span s = {sp_cursor_left(c) ? c->data + c->pos : c->data, sp_cursor_left(c)};
    c->pos = c->len;
    return s;
}

bool sp_ascii_ieq(const char *a, size_t a_len, const char *b) {
    size_t b_len = strlen(b);
    if (a_len != b_len) return false;
    for (size_t i = 0; i < a_len; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return false;
    }
    return true;
}

sp_error sp_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out) {
    SP_ENSURE(len > 0 && len <= 20, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(!(len > 1 && s[0] == '0'), SP_ERR_INVALID_ARGUMENT);
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        SP_ENSURE(s[i] >= '0' && s[i] <= '9', SP_ERR_INVALID_ARGUMENT);
        uint64_t d = (uint64_t)(s[i] - '0');
        SP_ENSURE(d <= max && v <= (max - d) / 10, SP_ERR_INVALID_ARGUMENT);
        v = v * 10 + d;
    }
    *out = v;
    return SP_OK;
}

int64_t sp_now_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec;
}

static int sp_hex_nibble(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

sp_error sp_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    SP_ENSURE(in_len % 2 == 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(in_len / 2 <= out_cap, SP_ERR_BUFFER_TOO_SMALL);
    for (size_t i = 0; i < in_len / 2; i++) {
        int hi = sp_hex_nibble(in[2 * i]), lo = sp_hex_nibble(in[2 * i + 1]);
        SP_ENSURE(hi >= 0 && lo >= 0, SP_ERR_INVALID_ARGUMENT);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *out_len = in_len / 2;
    return SP_OK;
}

void sp_hex_encode(const uint8_t *in, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = 0;
}

void sp_format_double(double v, char out[32]) {
    if (v == floor(v) && fabs(v) < 1e15) {
        (void)snprintf(out, 32, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        (void)snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}
