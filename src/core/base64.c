/*
 * Strict base64 (RFC 4648 section 4) and base64url without padding (section
 * 5, as JOSE uses it). OpenSSL's block codec does the arithmetic; this file
 * adds what it lacks: refusing whitespace, misplaced padding and
 * non-canonical trailing bits, so every value has exactly one encoding and a
 * signature over the text means one thing, and translating the URL alphabet.
 * Work happens in fixed stack chunks: nothing is allocated.
 */
#include <limits.h>

#include <openssl/evp.h>

#include "core/sp_core.h"

#define SP_B64_CHUNK 256 /* characters per decode step, a multiple of 4 */

static int sp_b64_value(char ch, bool url) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == (url ? '-' : '+')) return 62;
    if (ch == (url ? '_' : '/')) return 63;
    return -1;
}

bool sp_b64_alphabet_ok(const char *in, size_t len, bool url) {
    size_t pad = 0;
    if (!url) {
        while (pad < 2 && pad < len && in[len - 1 - pad] == '=') pad++;
    }
    for (size_t i = 0; i < len - pad; i++) {
        if (sp_b64_value(in[i], url) < 0) return false;
    }
    return true;
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
        if (EVP_DecodeBlock(bytes, chunk, (int)padded) < 0) return SP_ERR_BAD_BASE64;
        size_t got = (n / 4) * 3 + (n % 4 ? n % 4 - 1 : 0);
        memcpy(out + written, bytes, got);
        written += got;
        done_chars += n;
    }
    sp_wipe(bytes, sizeof bytes);
    *out_len = written;
    return SP_OK;
}

sp_error sp_b64_encode(const uint8_t *in, size_t in_len, char *out, size_t out_cap, size_t *out_len, bool url) {
    size_t need = sp_b64_encoded_len(in_len, url);
    SP_ENSURE(in_len <= SIZE_MAX / 2 && need < out_cap, SP_ERR_BUFFER_TOO_SMALL);
    size_t done = 0, written = 0;
    /* EVP_EncodeBlock takes an int length: go in chunks of whole triples */
    const size_t step = 3 * 4096;
    while (done < in_len) {
        size_t n = in_len - done < step ? in_len - done : step;
        int wrote = EVP_EncodeBlock((unsigned char *)out + written, in + done, (int)n);
        if (wrote < 0) return SP_ERR_CRYPTO_BACKEND;
        written += (size_t)wrote;
        done += n;
    }
    if (url) {
        while (written > 0 && out[written - 1] == '=') written--;
        for (size_t i = 0; i < written; i++) {
            if (out[i] == '+') out[i] = '-';
            else if (out[i] == '/') out[i] = '_';
        }
    }
    out[written] = 0;
    *out_len = written;
    return SP_OK;
}
