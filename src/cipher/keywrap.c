/*
 * AES key wrap (RFC 3394) and key wrap with padding (RFC 5649), used to wrap
 * data keys under key-encryption keys. Wrapping is rare, so a context is made
 * per call; what matters is that every unwrap failure is SP_ERR_AUTH and
 * leaves nothing in the output.
 */
#include <openssl/err.h>
#include <openssl/evp.h>

#include "cipher/sp_cipher.h"

static sp_error sp_wrap_run(bool wrap, const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in,
                            size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    SP_ENSURE(kek != NULL && out != NULL && out_len != NULL && (in != NULL || in_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(in_len <= SP_CIPHER_MAX_INPUT, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_init());
    const EVP_CIPHER *cipher = sp_fetched_wrap(kek_len, pad);
    SP_ENSURE(cipher != NULL, SP_ERR_BAD_KEY_LENGTH);
    size_t need = wrap ? ((in_len + 7) / 8) * 8 + 8 : in_len;
    SP_ENSURE(out_cap >= need, SP_ERR_BUFFER_TOO_SMALL);
    sp_error failure = wrap ? SP_ERR_INVALID_ARGUMENT : SP_ERR_AUTH;
    if (!wrap) {
        SP_ENSURE(in_len >= 16 && in_len % 8 == 0, SP_ERR_AUTH);
    } else if (!pad) {
        SP_ENSURE(in_len >= 16 && in_len % 8 == 0, SP_ERR_INVALID_ARGUMENT);
    } else {
        SP_ENSURE(in_len >= 1, SP_ERR_INVALID_ARGUMENT);
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    SP_ENSURE(ctx != NULL, SP_ERR_NO_MEMORY);
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    sp_error rc = SP_OK;
    int n = 0, fin = 0;
    SP_ENSURE_GOTO(EVP_CipherInit_ex2(ctx, cipher, kek, NULL, wrap ? 1 : 0, NULL) == 1, SP_ERR_CRYPTO_BACKEND, rc,
                   done);
    SP_ENSURE_GOTO(EVP_CipherUpdate(ctx, out, &n, in, (int)in_len) == 1 && n >= 0, failure, rc, done);
    SP_ENSURE_GOTO(EVP_CipherFinal_ex(ctx, out + n, &fin) == 1, failure, rc, done);
    *out_len = (size_t)n + (size_t)fin;
done:
    EVP_CIPHER_CTX_free(ctx);
    if (rc != SP_OK) {
        sp_wipe(out, out_cap < need ? out_cap : need);
        ERR_clear_error();
    }
    return rc;
}

sp_error sp_aes_key_wrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len) {
    return sp_wrap_run(true, kek, kek_len, pad, in, in_len, out, out_cap, out_len);
}

sp_error sp_aes_key_unwrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t in_len,
                           uint8_t *out, size_t out_cap, size_t *out_len) {
    return sp_wrap_run(false, kek, kek_len, pad, in, in_len, out, out_cap, out_len);
}
