/*
 * The core layer: strict base64, hex, bounded write buffers, read cursors,
 * number parsing, the CSPRNG front end and the error table.
 *
 * Base64 matters most: a signature covers the text of headers, so the
 * decoder must give every byte string exactly one accepted spelling. The
 * tests therefore spend most of their effort on what must be refused
 * (whitespace, misplaced padding, non-canonical trailing bits, the other
 * alphabet) and on inputs long enough to cross the decoder's internal chunks.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sp_test_util.h"

/* ---- base64 ---- */

typedef struct {
    const char *raw, *std, *url;
} b64_vector;

/* RFC 4648 section 10, plus the url form (no padding) of each */
static const b64_vector rfc4648[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void expect_decode(const char *text, bool url, const void *raw, size_t raw_len) {
    uint8_t out[64];
    size_t n = 99;
    sp_error rc = sp_b64_decode(text, strlen(text), out, sizeof out, &n, url);
    if (rc != SP_OK) fail_msg("\"%s\" (%s) refused: %s", text, url ? "url" : "std", sp_error_name(rc));
    assert_int_equal(n, raw_len);
    if (raw_len) assert_memory_equal(out, raw, raw_len);
}

static void expect_refused(const char *text, size_t len, bool url) {
    uint8_t out[64];
    size_t n = 0;
    sp_error rc = sp_b64_decode(text, len, out, sizeof out, &n, url);
    if (rc != SP_ERR_BAD_BASE64) {
        fail_msg("\"%.*s\" (%s) gave %s, not SP_ERR_BAD_BASE64", (int)len, text, url ? "url" : "std",
                 sp_error_name(rc));
    }
}

static void test_b64_rfc4648(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(rfc4648); i++) {
        const b64_vector *v = &rfc4648[i];
        size_t raw_len = strlen(v->raw);
        char text[32];
        size_t n = 0;
        for (int url = 0; url <= 1; url++) {
            const char *want = url ? v->url : v->std;
            assert_int_equal(sp_b64_encoded_len(raw_len, url), strlen(want));
            assert_int_equal(sp_b64_encode((const uint8_t *)v->raw, raw_len, text, sizeof text, &n, url), SP_OK);
            assert_int_equal(n, strlen(want));
            assert_string_equal(text, want); /* NUL-terminated too */
            expect_decode(want, url, v->raw, raw_len);
        }
    }
}

/* The public encoders: the same RFC 4648 answers, sizes from the header's
 * macros (exactly enough is enough, one less is refused and untouched), and
 * bad arguments. */
static void test_base64_public(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(rfc4648); i++) {
        const b64_vector *v = &rfc4648[i];
        size_t raw_len = strlen(v->raw);
        const uint8_t *raw = (const uint8_t *)v->raw;
        char text[32];
        size_t n = 99;
        assert_int_equal(SP_BASE64_CHARS(raw_len), strlen(v->std));
        assert_int_equal(SP_BASE64URL_CHARS(raw_len), strlen(v->url));
        assert_ok(sp_base64_encode(raw, raw_len, text, SP_BASE64_CHARS(raw_len) + 1, &n));
        assert_int_equal(n, strlen(v->std));
        assert_string_equal(text, v->std);
        assert_ok(sp_base64url_encode(raw, raw_len, text, SP_BASE64URL_CHARS(raw_len) + 1, &n));
        assert_int_equal(n, strlen(v->url));
        assert_string_equal(text, v->url);

        memset(text, '#', sizeof text);
        assert_rc(sp_base64_encode(raw, raw_len, text, SP_BASE64_CHARS(raw_len), &n), SP_ERR_BUFFER_TOO_SMALL);
        assert_rc(sp_base64url_encode(raw, raw_len, text, SP_BASE64URL_CHARS(raw_len), &n),
                  SP_ERR_BUFFER_TOO_SMALL);
        assert_int_equal(text[0], '#');
    }
    /* the url alphabet: 0xfb 0xff encodes to "+/8=" and "-_8" */
    static const uint8_t high[] = {0xfb, 0xff};
    char text[8];
    size_t n = 0;
    assert_ok(sp_base64_encode(high, sizeof high, text, sizeof text, &n));
    assert_string_equal(text, "+/8=");
    assert_ok(sp_base64url_encode(high, sizeof high, text, sizeof text, &n));
    assert_string_equal(text, "-_8");

    assert_rc(sp_base64_encode(NULL, 1, text, sizeof text, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_base64_encode(high, 1, NULL, sizeof text, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_base64_encode(high, 1, text, sizeof text, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_base64url_encode(NULL, 1, text, sizeof text, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_base64url_encode(high, 1, text, 0, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_ok(sp_base64_encode(NULL, 0, text, 1, &n)); /* nothing encodes to "" */
    assert_int_equal(n, 0);
    assert_string_equal(text, "");
}

/* Shared by the log (JSON) and the metrics (Prometheus) renderers. */
static void test_format_double(void **state) {
    (void)state;
    const struct {
        double v;
        const char *text;
    } v[] = {
        {0, "0"},          {400000, "400000"}, {-3, "-3"},       {0.1, "0.1"},
        {-2.5, "-2.5"},    {1e20, "1e+20"},    {1.0 / 3, "0.3333333333333333"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(v); i++) {
        char out[32];
        sp_format_double(v[i].v, out);
        assert_string_equal(out, v[i].text);
        assert_true(strtod(out, NULL) == v[i].v);
    }
}

static void test_b64_refuses(void **state) {
    (void)state;
    /* whitespace anywhere: headers are compared byte for byte */
    const char *std_bad[] = {
        " Zm9v", "Zm9v ", "Zm 9v", "Zm9v\n", "Zm9v\r\n", "Zm\t9v", "Zg==\n",
        /* length not a multiple of 4 */
        "Z", "Zg", "Zg=", "Zm9", "Zm9vY", "Zm9vYg=",
        /* padding where it cannot be */
        "=Zm9", "Z=m9", "Zm=9", "Zg=a", "Z===", "====", "Zg==Zg==", "Zm9v====", "Zm8=Zm9v", "Zg======",
        /* non-canonical: unused low bits set */
        "QR==", "Zh==", "Zm9=", "QUJ=",
        /* the url alphabet in a standard field */
        "-_8=", "Zm-v", "Zm_v",
        /* outside any alphabet */
        "Zm9*", "Zm9.", "Zm\x80v",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(std_bad); i++) {
        expect_refused(std_bad[i], strlen(std_bad[i]), false);
    }
    /* an embedded NUL is a byte like any other */
    expect_refused("Zm9\0", 4, false);
    expect_refused("Zm\0v", 4, true);

    const char *url_bad[] = {
        "Zg==", "Zm8=", "Z", "Zm9vY", "Zh", "Zm9", "+/8", "Zm+v", "Zm/v", " Zg", "Zg ", "Z g", "Zm9v\n", "=",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(url_bad); i++) expect_refused(url_bad[i], strlen(url_bad[i]), true);
}

static void test_b64_canonical_bits(void **state) {
    (void)state;
    /* "A" is 0x41 = 010000 01(0000): only 'Q' followed by a character with
     * zero low bits is canonical */
    expect_decode("QQ==", false, "A", 1);
    expect_decode("QQ", true, "A", 1);
    const char *twins[] = {"QR==", "QS==", "QT==", "QU==", "QV==", "QW==", "QX==", "QY==", "QZ==", "Qa==",
                           "Qb==", "Qc==", "Qd==", "Qe==", "Qf=="};
    for (size_t i = 0; i < SP_ARRAY_LEN(twins); i++) {
        expect_refused(twins[i], 4, false);
        expect_refused(twins[i], 2, true);
    }
    /* "AB" is 0x41 0x42: the third character carries two unused bits */
    expect_decode("QUI=", false, "AB", 2);
    expect_refused("QUJ=", 4, false);
    expect_refused("QUK=", 4, false);
    expect_refused("QUL=", 4, false);
    expect_decode("QUI", true, "AB", 2);
    expect_refused("QUJ", 3, true);

    /* exhaustively for one byte: exactly 256 two-character strings decode,
     * one per byte value, each the encoder's own output */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int accepted = 0;
    for (int i = 0; i < 64; i++) {
        for (int j = 0; j < 64; j++) {
            char text[5] = {alphabet[i], alphabet[j], '=', '=', 0};
            uint8_t out[4];
            size_t n = 0;
            if (sp_b64_decode(text, 4, out, sizeof out, &n, false) != SP_OK) continue;
            accepted++;
            char again[8];
            size_t m = 0;
            assert_int_equal(n, 1);
            assert_int_equal(sp_b64_encode(out, 1, again, sizeof again, &m, false), SP_OK);
            assert_string_equal(again, text);
        }
    }
    assert_int_equal(accepted, 256);
}

static void test_b64_url_alphabet(void **state) {
    (void)state;
    /* fb ff bf: 111110 111111 111110 111111 uses both of the alphabet's
     * differing characters */
    const uint8_t raw[] = {0xfb, 0xff, 0xbf, 0xfb, 0xf0};
    char text[16];
    size_t n = 0;
    assert_int_equal(sp_b64_encode(raw, sizeof raw, text, sizeof text, &n, false), SP_OK);
    assert_string_equal(text, "+/+/+/A=");
    assert_int_equal(sp_b64_encode(raw, sizeof raw, text, sizeof text, &n, true), SP_OK);
    assert_string_equal(text, "-_-_-_A");
    expect_decode("+/+/+/A=", false, raw, sizeof raw);
    expect_decode("-_-_-_A", true, raw, sizeof raw);
    expect_refused("+/+/+/A", 7, true);
    expect_refused("-_-_-_A=", 8, false);

    assert_true(sp_b64_alphabet_ok("-_Az09", 6, true));
    assert_false(sp_b64_alphabet_ok("+/", 2, true));
    assert_true(sp_b64_alphabet_ok("+/Az==", 6, false));
    assert_false(sp_b64_alphabet_ok("-_", 2, false));
    assert_false(sp_b64_alphabet_ok("Zg==", 4, true));
}

static void test_b64_long(void **state) {
    (void)state;
    /* The decoder works in 256-character chunks: every length around and
     * well past a chunk, both alphabets, must come back exactly. */
    enum { MAX = 1200 };
    static uint8_t raw[MAX], back[MAX + 3];
    static char text[MAX * 2];
    for (size_t i = 0; i < MAX; i++) raw[i] = (uint8_t)(i * 131u + 7u);
    for (size_t len = 0; len <= MAX; len += (len < 400 ? 1 : 97)) {
        for (int url = 0; url <= 1; url++) {
            size_t n = 0, m = 0;
            assert_int_equal(sp_b64_encode(raw, len, text, sizeof text, &n, url), SP_OK);
            assert_int_equal(n, sp_b64_encoded_len(len, url));
            assert_int_equal(strlen(text), n);
            assert_true(len <= sp_b64_decoded_max(n));
            assert_int_equal(sp_b64_decode(text, n, back, sizeof back, &m, url), SP_OK);
            assert_int_equal(m, len);
            if (len) assert_memory_equal(back, raw, len);
        }
    }
    /* a fault well past the first chunk is still found */
    size_t n = 0, m = 0;
    assert_int_equal(sp_b64_encode(raw, 900, text, sizeof text, &n, false), SP_OK);
    text[700] = ' ';
    assert_int_equal(sp_b64_decode(text, n, back, sizeof back, &m, false), SP_ERR_BAD_BASE64);
    text[700] = '=';
    assert_int_equal(sp_b64_decode(text, n, back, sizeof back, &m, false), SP_ERR_BAD_BASE64);
}

static void test_b64_buffers(void **state) {
    (void)state;
    uint8_t out[8];
    size_t n = 0;
    /* decode: exactly the decoded size is enough, one less is not */
    assert_int_equal(sp_b64_decode("Zm9vYmFy", 8, out, 5, &n, false), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_decode("Zm9vYmFy", 8, out, 6, &n, false), SP_OK);
    assert_int_equal(sp_b64_decode("Zm9vYg==", 8, out, 3, &n, false), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_decode("Zm9vYg==", 8, out, 4, &n, false), SP_OK);
    assert_int_equal(n, 4);
    assert_int_equal(sp_b64_decode("Zm9vYg", 6, out, 3, &n, true), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_decode("", 0, NULL, 0, &n, false), SP_OK);
    assert_int_equal(n, 0);

    /* encode: the text plus its NUL */
    char text[9];
    assert_int_equal(sp_b64_encode((const uint8_t *)"foobar", 6, text, 8, &n, false), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_encode((const uint8_t *)"foobar", 6, text, 9, &n, false), SP_OK);
    assert_string_equal(text, "Zm9vYmFy");
    assert_int_equal(sp_b64_encode((const uint8_t *)"f", 1, text, 2, &n, true), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_encode((const uint8_t *)"f", 1, text, 3, &n, true), SP_OK);
    assert_string_equal(text, "Zg");
    assert_int_equal(sp_b64_encode((const uint8_t *)"", 0, text, 0, &n, false), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_b64_encode((const uint8_t *)"", 0, text, 1, &n, false), SP_OK);
    assert_string_equal(text, "");
}

/* ---- hex ---- */

static void test_hex(void **state) {
    (void)state;
    uint8_t out[8];
    size_t n = 0;
    assert_int_equal(sp_hex_decode("00ff10AbcD7e", 12, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, 6);
    const uint8_t want[] = {0x00, 0xff, 0x10, 0xab, 0xcd, 0x7e};
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(sp_hex_decode("", 0, out, 0, &n), SP_OK);
    assert_int_equal(n, 0);

    assert_int_equal(sp_hex_decode("abc", 3, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
    const char *bad[] = {"0g", "g0", " 0", "0 ", "0x", "-1", "+1", "\0\0"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        assert_int_equal(sp_hex_decode(bad[i], 2, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
    }
    assert_int_equal(sp_hex_decode("00112233", 8, out, 3, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_hex_decode("00112233", 8, out, 4, &n), SP_OK);

    char text[2 * sizeof want + 1];
    memset(text, 'x', sizeof text);
    sp_hex_encode(want, sizeof want, text);
    assert_string_equal(text, "00ff10abcd7e"); /* lowercase, NUL-terminated */
    sp_hex_encode(want, 0, text);
    assert_string_equal(text, "");
}

/* ---- write buffer ---- */

static void test_wbuf(void **state) {
    (void)state;
    char mem[16];
    memset(mem, '#', sizeof mem);
    sp_wbuf b = sp_wbuf_of(mem, 10);
    assert_int_equal(sp_wbuf_put_str(&b, "abc"), SP_OK);
    assert_int_equal(sp_wbuf_put(&b, "de", 2), SP_OK);
    assert_int_equal(sp_wbuf_put(&b, NULL, 0), SP_OK);
    assert_int_equal(b.len, 5);
    /* too much: refused whole, nothing written, length unchanged */
    assert_int_equal(sp_wbuf_put(&b, "123456", 6), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(b.len, 5);
    assert_int_equal(mem[5], '#');
    /* filling to the last byte is fine... */
    assert_int_equal(sp_wbuf_put(&b, "12345", 5), SP_OK);
    assert_int_equal(b.len, 10);
    assert_memory_equal(mem, "abcde12345", 10);
    /* ...but then there is no room for a terminator or anything else */
    assert_int_equal(sp_wbuf_terminate(&b), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_wbuf_put(&b, "x", 1), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_wbuf_put_u64(&b, 0), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(mem[10], '#');

    /* a reservation too large for the room left, including one that would
     * wrap around SIZE_MAX if the check were an addition */
    uint8_t *where = NULL;
    sp_wbuf r = sp_wbuf_of(mem, 16);
    assert_int_equal(sp_wbuf_put(&r, "ab", 2), SP_OK);
    assert_int_equal(sp_wbuf_reserve(&r, SIZE_MAX, &where), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_wbuf_reserve(&r, SIZE_MAX - 1, &where), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_wbuf_reserve(&r, 14, &where), SP_OK);
    assert_ptr_equal(where, (uint8_t *)mem + 2);
    assert_int_equal(r.len, 16);

    sp_wbuf t = sp_wbuf_of(mem, 4);
    assert_int_equal(sp_wbuf_put_str(&t, "abc"), SP_OK);
    assert_int_equal(sp_wbuf_terminate(&t), SP_OK);
    assert_int_equal(t.len, 3); /* the NUL is not content */
    assert_string_equal(mem, "abc");
}

static void expect_u64(uint64_t v, const char *text) {
    char mem[32];
    sp_wbuf b = sp_wbuf_of(mem, sizeof mem);
    assert_int_equal(sp_wbuf_put_u64(&b, v), SP_OK);
    assert_int_equal(sp_wbuf_terminate(&b), SP_OK);
    assert_string_equal(mem, text);
}

static void test_wbuf_u64(void **state) {
    (void)state;
    expect_u64(0, "0");
    expect_u64(7, "7");
    expect_u64(10, "10");
    expect_u64(1712345678, "1712345678");
    expect_u64(UINT64_MAX, "18446744073709551615");

    /* 20 digits need 20 bytes: 19 is refused whole */
    char mem[20];
    memset(mem, '#', sizeof mem);
    sp_wbuf b = sp_wbuf_of(mem, 19);
    assert_int_equal(sp_wbuf_put_u64(&b, UINT64_MAX), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(b.len, 0);
    assert_int_equal(mem[0], '#');
    b = sp_wbuf_of(mem, 20);
    assert_int_equal(sp_wbuf_put_u64(&b, UINT64_MAX), SP_OK);
    assert_int_equal(b.len, 20);
}

static void test_wbuf_b64(void **state) {
    (void)state;
    char mem[9];
    sp_wbuf b = sp_wbuf_of(mem, sizeof mem);
    assert_int_equal(sp_wbuf_put_str(&b, "v1,"), SP_OK);
    /* 4 characters and the encoder's NUL need 5 bytes; 6 are left */
    assert_int_equal(sp_wbuf_put_b64(&b, (const uint8_t *)"foo", 3, false), SP_OK);
    assert_int_equal(b.len, 7);
    assert_memory_equal(mem, "v1,Zm9v", 7);
    /* 2 left: "Zg" plus NUL does not fit */
    assert_int_equal(sp_wbuf_put_b64(&b, (const uint8_t *)"f", 1, true), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(b.len, 7);
}

/* ---- read cursor ---- */

static void test_cursor(void **state) {
    (void)state;
    const char text[] = "v1,abc def";
    sp_cursor c = sp_cursor_of(text, sizeof text - 1);
    assert_false(sp_cursor_accept(&c, "v2,"));
    assert_int_equal(c.pos, 0);
    assert_true(sp_cursor_accept(&c, "v1,"));
    assert_int_equal(c.pos, 3);
    assert_true(sp_cursor_accept(&c, "")); /* the empty literal always matches */
    assert_int_equal(c.pos, 3);

    sp_span s = {NULL, 0};
    assert_true(sp_cursor_take_until(&c, ' ', &s));
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.data, "abc", 3);
    assert_int_equal(c.pos, 7); /* past the separator */
    assert_false(sp_cursor_take_until(&c, ' ', &s));
    assert_int_equal(c.pos, 7); /* a miss does not move */
    assert_int_equal(sp_cursor_left(&c), 3);
    assert_false(sp_cursor_accept(&c, "defg")); /* longer than what is left */
    assert_int_equal(c.pos, 7);

    sp_span rest = sp_cursor_rest(&c);
    assert_int_equal(rest.len, 3);
    assert_memory_equal(rest.data, "def", 3);
    assert_int_equal(sp_cursor_left(&c), 0);
    rest = sp_cursor_rest(&c);
    assert_int_equal(rest.len, 0);
    assert_false(sp_cursor_accept(&c, "d"));
    assert_true(sp_cursor_accept(&c, ""));
    assert_false(sp_cursor_take_until(&c, 'f', &s));

    /* separators back to back give empty spans */
    sp_cursor d = sp_cursor_of("..x", 3);
    assert_true(sp_cursor_take_until(&d, '.', &s));
    assert_int_equal(s.len, 0);
    assert_true(sp_cursor_take_until(&d, '.', &s));
    assert_int_equal(s.len, 0);
    assert_false(sp_cursor_take_until(&d, '.', &s));
    /* the cursor never looks past its length, even at a matching byte */
    sp_cursor e = sp_cursor_of("ab.", 2);
    assert_false(sp_cursor_take_until(&e, '.', &s));
    assert_false(sp_cursor_accept(&e, "ab."));
}

/* An empty input may well arrive as (NULL, 0), e.g. an empty HTTP body. */
static void test_cursor_empty_null(void **state) {
    (void)state;
    sp_cursor c = sp_cursor_of(NULL, 0);
    sp_span s = {NULL, 0};
    assert_int_equal(sp_cursor_left(&c), 0);
    assert_false(sp_cursor_accept(&c, "x"));
    assert_true(sp_cursor_accept(&c, ""));
    assert_false(sp_cursor_take_until(&c, '.', &s));
    s = sp_cursor_rest(&c);
    assert_int_equal(s.len, 0);
}

/* ---- numbers and case-insensitive compare ---- */

static void expect_u64_parse(const char *s, uint64_t max, uint64_t want) {
    uint64_t v = 12345;
    sp_error rc = sp_parse_u64(s, strlen(s), max, &v);
    if (rc != SP_OK) fail_msg("\"%s\" refused: %s", s, sp_error_name(rc));
    assert_int_equal(v, want);
}

static void expect_u64_refused(const char *s, size_t len, uint64_t max) {
    uint64_t v = 12345;
    sp_error rc = sp_parse_u64(s, len, max, &v);
    if (rc != SP_ERR_INVALID_ARGUMENT) fail_msg("\"%.*s\" (max %llu) gave %s", (int)len, s, (unsigned long long)max,
                                                sp_error_name(rc));
    assert_int_equal(v, 12345); /* untouched */
}

static void test_parse_u64(void **state) {
    (void)state;
    expect_u64_parse("0", UINT64_MAX, 0);
    expect_u64_parse("7", UINT64_MAX, 7);
    expect_u64_parse("1712345678", UINT64_MAX, 1712345678);
    expect_u64_parse("18446744073709551615", UINT64_MAX, UINT64_MAX);
    expect_u64_parse("300", 300, 300);

    const char *bad[] = {
        /* empty, leading zeros, signs, spaces, other notations */
        "", "00", "01", "007", "-1", "+1", " 1", "1 ", "1a", "a1", "1.5", "1e3", "0x10",
        /* past UINT64_MAX, and longer than any uint64 */
        "18446744073709551616", "18446744073709551620", "99999999999999999999", "100000000000000000000",
        "000000000000000000001",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) expect_u64_refused(bad[i], strlen(bad[i]), UINT64_MAX);
    expect_u64_refused("301", 3, 300);
    expect_u64_refused("1000", 4, 300);
    expect_u64_refused("12", 2, 11);
    expect_u64_refused("1\0", 2, 100);
}

/* A maximum below 9 must also be honoured by a single digit. */
static void test_parse_u64_small_max(void **state) {
    (void)state;
    expect_u64_parse("0", 0, 0);
    expect_u64_parse("5", 5, 5);
    expect_u64_refused("1", 1, 0);
    expect_u64_refused("6", 1, 5);
    expect_u64_refused("9", 1, 8);
}

static void test_ascii_ieq(void **state) {
    (void)state;
    assert_true(sp_ascii_ieq("Content-Type", 12, "content-type"));
    assert_true(sp_ascii_ieq("X-AES-IV", 8, "x-aes-iv"));
    assert_true(sp_ascii_ieq("", 0, ""));
    assert_true(sp_ascii_ieq("webhook-idXYZ", 10, "WEBHOOK-ID")); /* a_len bounds a */
    assert_false(sp_ascii_ieq("webhook-id", 10, "webhook-ids"));
    assert_false(sp_ascii_ieq("webhook-id", 9, "webhook-id"));
    /* only letters fold: these pairs differ by 0x20 but are not letters */
    assert_false(sp_ascii_ieq("@", 1, "`"));
    assert_false(sp_ascii_ieq("[", 1, "{"));
    assert_false(sp_ascii_ieq("]", 1, "}"));
    assert_false(sp_ascii_ieq("\x01", 1, "!"));
    /* and nothing outside ASCII folds (e.g. Latin-1 capitals) */
    assert_false(sp_ascii_ieq("\xc9", 1, "\xe9"));
}

/* ---- randomness ---- */

static void test_random(void **state) {
    (void)state;
    uint8_t a[64] = {0}, b[64] = {0};
    assert_int_equal(sp_random(a, sizeof a), SP_OK);
    assert_int_equal(sp_random(b, sizeof b), SP_OK);
    bool a_zero = true;
    for (size_t i = 0; i < sizeof a; i++) a_zero = a_zero && a[i] == 0;
    assert_false(a_zero);
    assert_memory_not_equal(a, b, sizeof a);

    /* requests that drain the pool, refill it and bypass it */
    static uint8_t big[3][5000];
    const size_t sizes[] = {1, 17, 1023, 1024, 1025, 4096, 5000};
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
        memset(big, 0, sizeof big);
        for (int k = 0; k < 3; k++) assert_int_equal(sp_random(big[k], sizes[i]), SP_OK);
        if (sizes[i] >= 16) {
            assert_memory_not_equal(big[0], big[1], sizes[i]);
            assert_memory_not_equal(big[1], big[2], sizes[i]);
            /* a filled request of this size has no 16 zero bytes in its tail */
            uint8_t zero[16] = {0};
            assert_memory_not_equal(big[2] + sizes[i] - 16, zero, 16);
        }
    }
    assert_int_equal(sp_random(NULL, 1), SP_ERR_INVALID_ARGUMENT);
}

/* sp_random documents (NULL, 0) as a valid request for nothing. */
static void test_random_empty(void **state) {
    (void)state;
    uint8_t one[1] = {0};
    assert_int_equal(sp_random(one, 0), SP_OK);
    assert_int_equal(sp_random(NULL, 0), SP_OK);
}

static void test_random_after_fork(void **state) {
    (void)state;
    /* leave the pool part used, so a child that kept it would hand out
     * exactly the bytes the parent is about to */
    uint8_t warm[16];
    assert_int_equal(sp_random(warm, sizeof warm), SP_OK);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = sp_test_fork();
    if (pid == 0) {
        uint8_t mine[64];
        int ok = sp_random(mine, sizeof mine) == SP_OK && write(fds[1], mine, sizeof mine) == (ssize_t)sizeof mine;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    uint8_t parent[64], child[64];
    assert_int_equal(sp_random(parent, sizeof parent), SP_OK);
    size_t got = 0;
    while (got < sizeof child) {
        ssize_t n = read(fds[0], child + got, sizeof child - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fds[0]);
    assert_int_equal(sp_test_wait(pid), 0);
    assert_int_equal(got, sizeof child);
    assert_memory_not_equal(parent, child, sizeof parent);
    /* nor is the child's output anywhere in what the parent gets next */
    uint8_t later[256];
    assert_int_equal(sp_random(later, sizeof later), SP_OK);
    for (size_t off = 0; off + 16 <= sizeof later; off++) assert_memory_not_equal(later + off, child, 16);
}

/* ---- errors ---- */

static void test_error_table(void **state) {
    (void)state;
    for (int i = 0; i < SP_ERR__COUNT; i++) {
        const char *text = sp_strerror((sp_error)i), *name = sp_error_name((sp_error)i);
        assert_non_null(text);
        assert_non_null(name);
        assert_true(strlen(text) > 0);
        if (strcmp(text, "unknown error") == 0) fail_msg("code %d has no text", i);
        if (strncmp(name, "SP_", 3) != 0 || strcmp(name, "SP_ERR_UNKNOWN") == 0) fail_msg("code %d: name %s", i, name);
        for (int j = 0; j < i; j++) {
            if (strcmp(text, sp_strerror((sp_error)j)) == 0) fail_msg("codes %d and %d share a text", j, i);
            if (strcmp(name, sp_error_name((sp_error)j)) == 0) fail_msg("codes %d and %d share a name", j, i);
        }
    }
    assert_string_equal(sp_error_name(SP_OK), "SP_OK");
    assert_string_equal(sp_error_name(SP_ERR_AUTH), "SP_ERR_AUTH");
    assert_string_equal(sp_error_name(SP_ERR_BAD_MESSAGE_ID), "SP_ERR_BAD_MESSAGE_ID");
    /* the numbers are a published contract */
    assert_int_equal(SP_ERR_AUTH, 5);
    assert_int_equal(SP_ERR_BAD_BASE64, 7);

    const int out_of_range[] = {SP_ERR__COUNT, SP_ERR__COUNT + 1, 1000, -1, INT32_MIN};
    for (size_t i = 0; i < SP_ARRAY_LEN(out_of_range); i++) {
        assert_string_equal(sp_strerror((sp_error)out_of_range[i]), "unknown error");
        assert_string_equal(sp_error_name((sp_error)out_of_range[i]), "SP_ERR_UNKNOWN");
        assert_false(sp_error_is_kms((sp_error)out_of_range[i]));
    }
    /* exactly the KMS's own failures: its name says so */
    for (int i = 0; i < SP_ERR__COUNT; i++) {
        bool kms = strncmp(sp_error_name((sp_error)i), "SP_ERR_KMS_", 11) == 0;
        if (sp_error_is_kms((sp_error)i) != kms) fail_msg("sp_error_is_kms(%s)", sp_error_name((sp_error)i));
    }
}

/* ---- wiping ---- */

static void test_wipe(void **state) {
    (void)state;
    uint8_t buf[37];
    memset(buf, 0xA5, sizeof buf);
    sp_wipe(buf + 1, 35);
    assert_int_equal(buf[0], 0xA5);
    for (size_t i = 1; i < 36; i++) assert_int_equal(buf[i], 0);
    assert_int_equal(buf[36], 0xA5);
    sp_wipe(NULL, 10);
    sp_wipe(buf, 0);
    assert_int_equal(buf[0], 0xA5);
}

/* Both kinds are canonical; v7 carries the clock in its first 48 bits, so
 * ids made later sort after earlier ones (at millisecond granularity) and
 * the rest is random. */
static void test_uuid_versions(void **state) {
    (void)state;
    char a[37], b[37], c[37];
    assert_ok(sp_uuid_v4(a));
    assert_true(sp_uuid_is_valid(a, strlen(a)));
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);

    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    assert_ok(sp_uuid_v7(b));
    assert_true(sp_uuid_is_valid(b, strlen(b)));
    assert_int_equal(b[14], '7');
    assert_true(strchr("89ab", b[19]) != NULL);
    char hex[13] = {0};
    memcpy(hex, b, 8);
    memcpy(hex + 8, b + 9, 4);
    unsigned long long ms = strtoull(hex, NULL, 16);
    unsigned long long now = (unsigned long long)t0.tv_sec * 1000ull + (unsigned long long)t0.tv_nsec / 1000000ull;
    assert_true(ms >= now && ms <= now + 1000);
    struct timespec pause = {0, 3 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_ok(sp_uuid_v7(c));
    assert_true(strcmp(b, c) < 0);
    assert_ok(sp_uuid_v7(c));
    assert_true(strcmp(b + 14, c + 14) != 0 || strcmp(b, c) != 0);
    assert_rc(sp_uuid_v7(NULL), SP_ERR_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_rfc4648),
        cmocka_unit_test(test_base64_public),
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_b64_refuses),
        cmocka_unit_test(test_b64_canonical_bits),
        cmocka_unit_test(test_b64_url_alphabet),
        cmocka_unit_test(test_b64_long),
        cmocka_unit_test(test_b64_buffers),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_wbuf),
        cmocka_unit_test(test_wbuf_u64),
        cmocka_unit_test(test_wbuf_b64),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_parse_u64),
        cmocka_unit_test(test_ascii_ieq),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_random_after_fork),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_wipe),
        /* Edge cases last: under UBSan a failure here aborts the process,
         * and everything above should have had its say by then. */
        cmocka_unit_test(test_parse_u64_small_max),
        cmocka_unit_test(test_random_empty),
        cmocka_unit_test(test_cursor_empty_null),
        cmocka_unit_test(test_uuid_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
