/*
 * Strict base64 (RFC 4648 section 4) and base64url without padding (section
 * 5, as JOSE uses it). OpenSSL's block codec does the arithmetic; this file
 * adds what it lacks: refusing whitespace, misplaced padding and
 * non-canonical trailing bits, so every value has exactly one encoding and a
 * signature over the text means one thing, and translating the URL alphabet.
 * Work happens in fixed stack chunks: nothing is allocated. The two encoders
 * are public too (sp_base64_encode, sp_base64url_encode).
 */
#include <limits.h>

#include <openssl/evp.h>

#include "core/sp_core.h"

#define SP_B64_CHUNK 256 /* characters per decode step, a multiple of 4 */

/* 0..63 for alphabet characters, 0xff otherwise; [0] standard, [1] url. A
 * table, not a chain of comparisons: on ciphertext text the branches of a
 * comparison chain mispredict on nearly every character. */
static uint8_t sp_b64_table[2][256];

__attribute__((constructor)) static void sp_b64_table_init(void) {
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(sp_b64_table, 0xff, sizeof sp_b64_table);
    for (uint8_t i = 0; i < 64; i++) {
        sp_b64_table[0][(uint8_t)std[i]] = i;
        sp_b64_table[1][(uint8_t)(i == 62 ? '-' : i == 63 ? '_' : std[i])] = i;
    }
}

static int sp_b64_value(char ch, bool url) {
    uint8_t v = sp_b64_table[url][(uint8_t)ch];
    return v == 0xff ? -1 : v;
}

bool sp_b64_alphabet_ok(const char *in, size_t len, bool url) {
    size_t pad = 0;
    if (!url) {
        while (pad < 2 && pad < len && in[len - 1 - pad] == '=') pad++;
    }
    /* Range comparisons without branches, so the loop vectorises; the
     * characters that differ between the alphabets are handled apart. */
    const unsigned char c62 = url ? '-' : '+', c63 = url ? '_' : '/';
    unsigned char bad = 0;
    for (size_t i = 0; i < len - pad; i++) {
        unsigned char ch = (unsigned char)in[i];
        unsigned char ok = (unsigned char)(((unsigned char)(ch - 'A') < 26u) | ((unsigned char)(ch - 'a') < 26u) |
                                           ((unsigned char)(ch - '0') < 10u) | (ch == c62) | (ch == c63));
        bad |= (unsigned char)(ok ^ 1u);
    }
    return bad == 0;
}

/* Counts padding and checks shape; returns the decoded length. */
static sp_error sp_b64_shape(const char *in, size_t in_len, bool url, size_t *data_chars, size_t *decoded) {
    size_t chars = in_len;
    if (!url) {
        SP_ENSURE(in_len % 4 == 0, SP_ERR_BAD_BASE64);
        if (chars > 0 && in[chars - 1] == '=') chars--;
        if (chars > 0 && in[chars - 1] == '=') chars--;
    }
    SP_ENSURE(chars % 4 != 1, SP_ERR_BAD_BASE64);
    SP_ENSURE(sp_b64_alphabet_ok(in, chars, url), SP_ERR_BAD_BASE64);
    /* canonical: the unused low bits of the last character are zero */
    size_t rem = chars % 4;
    if (rem != 0) {
        int last = sp_b64_value(in[chars - 1], url);
        SP_ENSURE((rem == 2 && (last & 0x0f) == 0) || (rem == 3 && (last & 0x03) == 0), SP_ERR_BAD_BASE64);
    }
    *data_chars = chars;
    *decoded = (chars / 4) * 3 + (rem ? rem - 1 : 0);
    return SP_OK;
}

sp_error sp_b64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, bool url) {
    size_t chars, decoded;
    SP_GUARD(sp_b64_shape(in, in_len, url, &chars, &decoded));
    SP_ENSURE(decoded <= out_cap, SP_ERR_BUFFER_TOO_SMALL);
    unsigned char chunk[SP_B64_CHUNK];
    unsigned char bytes[SP_B64_CHUNK / 4 * 3];
    size_t done_chars = 0, written = 0;
    if (!url && chars >= 4) {
        /* Standard alphabet, already validated: every quad before the last
         * one holds no padding and decodes straight from the input. */
        size_t whole = (chars - 1) / 4 * 4;
        for (size_t off = 0; off < whole;) {
            size_t n = whole - off < ((size_t)1 << 20) ? whole - off : ((size_t)1 << 20);
            if (EVP_DecodeBlock(out + written, (const unsigned char *)in + off, (int)n) < 0) return SP_ERR_BAD_BASE64;
            written += n / 4 * 3;
            off += n;
        }
        done_chars = whole;
    }
    while (done_chars < chars) {
        size_t n = chars - done_chars;
        if (n > SP_B64_CHUNK) n = SP_B64_CHUNK;
        size_t padded = (n + 3) / 4 * 4;
        for (size_t i = 0; i < n; i++) {
            char ch = in[done_chars + i];
            if (url) ch = ch == '-' ? '+' : ch == '_' ? '/' : ch;
            chunk[i] = (unsigned char)ch;
        }
        for (size_t i = n; i < padded; i++) chunk[i] = '=';
        if (EVP_DecodeBlock(bytes, chunk, (int)padded) < 0) {
            sp_wipe(chunk, sizeof chunk);
            sp_wipe(bytes, sizeof bytes);
            return SP_ERR_BAD_BASE64;
        }
        size_t got = (n / 4) * 3 + (n % 4 ? n % 4 - 1 : 0);
        memcpy(out + written, bytes, got);
        written += got;
        done_chars += n;
    }
    /* both held pieces of what may be a key */
    sp_wipe(chunk, sizeof chunk);
    sp_wipe(bytes, sizeof bytes);
    *out_len = written;
    return SP_OK;
}

sp_error sp_b64_encode(const uint8_t *in, size_t in_len, char *out, size_t out_cap, size_t *out_len, bool url) {
    SP_ENSURE(in_len <= SIZE_MAX / 2, SP_ERR_TOO_LARGE);
    size_t need = sp_b64_encoded_len(in_len, url);
    SP_ENSURE(need < out_cap, SP_ERR_BUFFER_TOO_SMALL);
    /* Whole triples go straight to out (4 characters each, then a NUL that
     * the next step overwrites). The last 1 or 2 bytes go through a small
     * buffer, because EVP_EncodeBlock pads them to 4 characters and base64url
     * keeps only 2 or 3: writing them in place would pass out_cap. */
    size_t whole = in_len / 3 * 3, done = 0, written = 0;
    const size_t step = 3 * 4096; /* EVP_EncodeBlock takes an int length */
    while (done < whole) {
        size_t n = whole - done < step ? whole - done : step;
        int wrote = EVP_EncodeBlock((unsigned char *)out + written, in + done, (int)n);
        if (wrote < 0) return SP_ERR_CRYPTO_BACKEND;
        written += (size_t)wrote;
        done += n;
    }
    if (done < in_len) {
        unsigned char tail[5];
        if (EVP_EncodeBlock(tail, in + done, (int)(in_len - done)) != 4) return SP_ERR_CRYPTO_BACKEND;
        size_t keep = url ? in_len - done + 1 : 4;
        memcpy(out + written, tail, keep);
        written += keep;
    }
    if (url) {
        for (size_t i = 0; i < written; i++) {
            if (out[i] == '+') out[i] = '-';
            else if (out[i] == '/') out[i] = '_';
        }
    }
    out[written] = 0;
    *out_len = written;
    return SP_OK;
}

sp_error sp_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap, size_t *out_len) {
    SP_ENSURE(out != NULL && out_len != NULL && (in != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    return sp_b64_encode(in, len, out, cap, out_len, false);
}

sp_error sp_base64url_encode(const uint8_t *in, size_t len, char *out, size_t cap, size_t *out_len) {
    SP_ENSURE(out != NULL && out_len != NULL && (in != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    return sp_b64_encode(in, len, out, cap, out_len, true);
}
