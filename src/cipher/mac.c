/*
 * HMAC-SHA256 and HKDF-SHA256. The HMAC context is keyed once and re-armed
 * per message (EVP_MAC_init with a NULL key keeps the key), so signing a
 * message neither fetches nor allocates.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "cipher/sp_cipher.h"

struct sp_hmac {
    EVP_MAC_CTX *ctx;
};

void sp_hmac_free(sp_hmac *h) {
    if (h == NULL) return;
    EVP_MAC_CTX_free(h->ctx);
    sp_free(h);
}

sp_error sp_hmac_new(const uint8_t *key, size_t key_len, sp_hmac **out) {
    SP_ENSURE(out != NULL && (key != NULL || key_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_hmac *h = sp_calloc(1, sizeof *h);
    SP_ENSURE(h != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = SP_OK;
    h->ctx = EVP_MAC_CTX_new(sp_fetched_hmac());
    SP_ENSURE_GOTO(h->ctx != NULL, SP_ERR_NO_MEMORY, rc, fail);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(uintptr_t) "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    /* OpenSSL treats a NULL key as "keep the old one"; an empty key must be
     * passed as a real zero-length buffer. */
    static const uint8_t empty[1];
    SP_ENSURE_GOTO(EVP_MAC_init(h->ctx, key_len ? key : empty, key_len, params) == 1, SP_ERR_CRYPTO_BACKEND, rc,
                   fail);
    *out = h;
    return SP_OK;
fail:
    sp_hmac_free(h);
    return rc;
}

sp_error sp_hmac_begin(sp_hmac *h) {
    SP_ENSURE(EVP_MAC_init(h->ctx, NULL, 0, NULL) == 1, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

sp_error sp_hmac_update(sp_hmac *h, const void *data, size_t len) {
    if (len == 0) return SP_OK;
    SP_ENSURE(EVP_MAC_update(h->ctx, data, len) == 1, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

sp_error sp_hmac_final(sp_hmac *h, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    size_t n = 0;
    SP_ENSURE(EVP_MAC_final(h->ctx, out, &n, SP_HMAC_SHA256_BYTES) == 1 && n == SP_HMAC_SHA256_BYTES,
              SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

sp_error sp_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                        uint8_t out[SP_HMAC_SHA256_BYTES]) {
    sp_hmac *h = NULL;
    SP_GUARD(sp_hmac_new(key, key_len, &h));
    sp_error rc = sp_hmac_update(h, msg, msg_len);
    if (rc == SP_OK) rc = sp_hmac_final(h, out);
    sp_hmac_free(h);
    return rc;
}

sp_error sp_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                        const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len) {
    SP_ENSURE(out != NULL && out_len > 0 && out_len <= 255 * SP_HMAC_SHA256_BYTES, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE((ikm != NULL || ikm_len == 0) && (salt != NULL || salt_len == 0) && (info != NULL || info_len == 0),
              SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(sp_fetched_hkdf());
    SP_ENSURE(kctx != NULL, SP_ERR_NO_MEMORY);
    static uint8_t empty[1];
    OSSL_PARAM params[5];
    size_t p = 0;
    params[p++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)(uintptr_t) "SHA256", 0);
    params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm_len ? (void *)(uintptr_t)ikm : empty,
                                                    ikm_len);
    if (salt_len) params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(uintptr_t)salt, salt_len);
    if (info_len) params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)(uintptr_t)info, info_len);
    params[p] = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(kctx, out, out_len, params);
    EVP_KDF_CTX_free(kctx);
    SP_ENSURE(ok == 1, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}
