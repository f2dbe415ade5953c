/*
 * Fuzz target for the strict base64 codec (src/core/base64.c), both the
 * standard alphabet with padding and unpadded base64url.
 *
 * The codec's promise is that every byte string has exactly one accepted
 * text form, because signatures are computed over the text. So whatever the
 * decoder accepts must re-encode to the very same characters; a decoder that
 * tolerated a stray '=' or non-zero trailing bits would break that and the
 * harness aborts. Along the way it checks the buffer contracts: decoding into
 * exactly the decoded size works, one byte less is refused with
 * SP_ERR_BUFFER_TOO_SMALL, the encoder needs room for its NUL. The input is
 * also used the other way round, as bytes to encode and decode again.
 */
#include "fuzz_util.h"

#include "core/sp_core.h"

static void fuzz_decode_side(const char *text, size_t len, bool url) {
    size_t max = sp_b64_decoded_max(len);
    uint8_t *out = malloc(max);
    FUZZ_CHECK(out != NULL);
    size_t out_len = 0;
    sp_error rc = sp_b64_decode(text, len, out, max, &out_len, url);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_BAD_BASE64);
        free(out);
        return;
    }
    FUZZ_CHECK(out_len <= max);
    FUZZ_CHECK(sp_b64_alphabet_ok(text, len, url));
    FUZZ_CHECK(sp_b64_encoded_len(out_len, url) == len);

    /* the same decode into a buffer of exactly the decoded size */
    uint8_t *exact = fuzz_alloc(out_len);
    size_t exact_len = 0;
    FUZZ_CHECK(sp_b64_decode(text, len, exact, out_len, &exact_len, url) == SP_OK);
    FUZZ_CHECK(exact_len == out_len && memcmp(exact, out, out_len) == 0);
    if (out_len > 0) {
        FUZZ_CHECK(sp_b64_decode(text, len, exact, out_len - 1, &exact_len, url) == SP_ERR_BUFFER_TOO_SMALL);
    }
    free(exact);

    /* canonical form: re-encoding gives back the input, byte for byte */
    size_t need = sp_b64_encoded_len(out_len, url);
    char *again = fuzz_alloc(need + 1);
    size_t again_len = 0;
    FUZZ_CHECK(sp_b64_encode(out, out_len, again, need + 1, &again_len, url) == SP_OK);
    FUZZ_CHECK(again_len == len);
    FUZZ_CHECK(len == 0 || memcmp(again, text, len) == 0);
    FUZZ_CHECK(again[again_len] == '\0');
    free(again);
    free(out);
}

static void fuzz_encode_side(const uint8_t *data, size_t len, bool url) {
    size_t need = sp_b64_encoded_len(len, url);
    char *text = fuzz_alloc(need + 1);
    size_t text_len = 0;
    /* the encoder writes a NUL, so exactly `need` bytes is one too few */
    FUZZ_CHECK(sp_b64_encode(data, len, text, need, &text_len, url) == SP_ERR_BUFFER_TOO_SMALL);
    FUZZ_CHECK(sp_b64_encode(data, len, text, need + 1, &text_len, url) == SP_OK);
    FUZZ_CHECK(text_len == need);
    FUZZ_CHECK(sp_b64_alphabet_ok(text, text_len, url));

    uint8_t *back = fuzz_alloc(len);
    size_t back_len = 0;
    FUZZ_CHECK(sp_b64_decode(text, text_len, back, len, &back_len, url) == SP_OK);
    FUZZ_CHECK(back_len == len && (len == 0 || memcmp(back, data, len) == 0));
    free(back);
    free(text);
}

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup(data, size);
    fuzz_decode_side(text, size, false);
    fuzz_decode_side(text, size, true);
    fuzz_encode_side(data, size, false);
    fuzz_encode_side(data, size, true);
    free(text);
    return 0;
}
