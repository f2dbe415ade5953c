/*
 * HMAC-SHA256 and HKDF-SHA256.
 *
 * The per-message HMAC must not allocate, and OpenSSL 3.0's EVP_MAC cannot
 * re-arm a keyed context without duplicating digest contexts on the heap
 * (twice per message). So the reusable sp_hmac keeps the two SHA-256 states
 * that follow absorbing the key XOR ipad and XOR opad (RFC 2104), computed
 * once per key with OpenSSL's SHA-256, and each message starts from a copy
 * of them: a struct assignment. The states are key-equivalent and are wiped.
 * One-shot HMAC goes through EVP_MAC, and the tests hold both paths to the
 * same Wycheproof vectors. The one-shot forms and the sp_key ones (which
 * read the key where it lies, in locked memory) are public, so applications
 * need no OpenSSL of their own for keyed hashes and derived keys.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: the only allocation-free SHA-256 state in 3.0 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>

#include "cipher/sp_cipher.h"

#define SP_SHA256_BLOCK 64

struct sp_hmac {
    SHA256_CTX inner_start, outer_start; /* after key^ipad, key^opad */
    SHA256_CTX inner;                    /* the message in progress */
};

void sp_hmac_free(sp_hmac *h) { sp_free_wiped(h, h ? sizeof *h : 0); }

/* Keys a state where it lies (the heap for sp_hmac_new, the stack for a
 * one-shot), so a one-shot HMAC allocates nothing. */
static sp_error sp_hmac_init(sp_hmac *h, const uint8_t *key, size_t key_len) {
    uint8_t block[SP_SHA256_BLOCK] = {0}, pad[SP_SHA256_BLOCK];
    if (key_len > SP_SHA256_BLOCK) {
        (void)SHA256(key, key_len, block);
    } else if (key_len > 0) {
        memcpy(block, key, key_len);
    }
    bool ok = true;
    for (size_t i = 0; i < SP_SHA256_BLOCK; i++) pad[i] = (uint8_t)(block[i] ^ 0x36);
    ok &= SHA256_Init(&h->inner_start) == 1 && SHA256_Update(&h->inner_start, pad, sizeof pad) == 1;
    for (size_t i = 0; i < SP_SHA256_BLOCK; i++) pad[i] = (uint8_t)(block[i] ^ 0x5c);
    ok &= SHA256_Init(&h->outer_start) == 1 && SHA256_Update(&h->outer_start, pad, sizeof pad) == 1;
    sp_wipe(block, sizeof block);
    sp_wipe(pad, sizeof pad);
    h->inner = h->inner_start;
    return ok ? SP_OK : SP_ERR_CRYPTO_BACKEND;
}

sp_error sp_hmac_new(const uint8_t *key, size_t key_len, sp_hmac **out) {
    SP_ENSURE(out != NULL && (key != NULL || key_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_hmac *h = sp_calloc(1, sizeof *h);
    SP_ENSURE(h != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = sp_hmac_init(h, key, key_len);
    if (rc != SP_OK) {
        sp_hmac_free(h);
        return rc;
    }
    *out = h;
    return SP_OK;
}

sp_error sp_hmac_begin(sp_hmac *h) {
    h->inner = h->inner_start;
    return SP_OK;
}

sp_error sp_hmac_update(sp_hmac *h, const void *data, size_t len) {
    if (len == 0) return SP_OK;
    SP_ENSURE(SHA256_Update(&h->inner, data, len) == 1, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

sp_error sp_hmac_final(sp_hmac *h, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    uint8_t inner_digest[SP_HMAC_SHA256_BYTES];
    SHA256_CTX outer = h->outer_start;
    bool ok = SHA256_Final(inner_digest, &h->inner) == 1 && SHA256_Update(&outer, inner_digest, sizeof inner_digest) == 1 &&
              SHA256_Final(out, &outer) == 1;
    sp_wipe(inner_digest, sizeof inner_digest);
    sp_wipe(&outer, sizeof outer);
    h->inner = h->inner_start;
    return ok ? SP_OK : SP_ERR_CRYPTO_BACKEND;
}

sp_error sp_sha256(const void *const *pieces, const size_t *lens, size_t n, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    SHA256_CTX ctx;
    bool ok = SHA256_Init(&ctx) == 1;
    for (size_t i = 0; i < n && ok; i++) ok = lens[i] == 0 || SHA256_Update(&ctx, pieces[i], lens[i]) == 1;
    ok = ok && SHA256_Final(out, &ctx) == 1;
    sp_wipe(&ctx, sizeof ctx);
    return ok ? SP_OK : SP_ERR_CRYPTO_BACKEND;
}

sp_error sp_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                        uint8_t out[SP_HMAC_SHA256_BYTES]) {
    SP_ENSURE(out != NULL && (key != NULL || key_len == 0) && (msg != NULL || msg_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(sp_fetched_hmac());
    SP_ENSURE(ctx != NULL, SP_ERR_NO_MEMORY);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(uintptr_t) "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    /* a NULL key means "keep the previous key" to OpenSSL: pass a real empty one */
    static const uint8_t empty[1];
    size_t n = 0;
    bool ok = EVP_MAC_init(ctx, key_len ? key : empty, key_len, params) == 1 &&
              (msg_len == 0 || EVP_MAC_update(ctx, msg, msg_len) == 1) &&
              EVP_MAC_final(ctx, out, &n, SP_HMAC_SHA256_BYTES) == 1 && n == SP_HMAC_SHA256_BYTES;
    EVP_MAC_CTX_free(ctx);
    return ok ? SP_OK : SP_ERR_CRYPTO_BACKEND;
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

sp_error sp_key_hmac_sha256(const sp_key *key, const char *label, const uint8_t *msg, size_t msg_len,
                            uint8_t out[SP_HMAC_SHA256_BYTES]) {
    SP_ENSURE(key != NULL && label != NULL && label[0] != '\0' && out != NULL && (msg != NULL || msg_len == 0),
              SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_hmac h;
    sp_error rc = sp_hmac_init(&h, sp_key_bytes(key), SP_KEY_BYTES);
    /* the label's NUL separates it from the message */
    if (rc == SP_OK) rc = sp_hmac_update(&h, label, strlen(label) + 1);
    if (rc == SP_OK) rc = sp_hmac_update(&h, msg, msg_len);
    if (rc == SP_OK) rc = sp_hmac_final(&h, out);
    sp_wipe(&h, sizeof h);
    return rc;
}

sp_error sp_key_derive(const sp_key *ikm, const uint8_t *salt, size_t salt_len, const uint8_t *info, size_t info_len,
                       sp_key **out) {
    SP_ENSURE(ikm != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t bytes[SP_KEY_BYTES];
    sp_error rc = sp_hkdf_sha256(sp_key_bytes(ikm), SP_KEY_BYTES, salt, salt_len, info, info_len, bytes, sizeof bytes);
    if (rc == SP_OK) rc = sp_key_new(bytes, sizeof bytes, out);
    sp_wipe(bytes, sizeof bytes);
    return rc;
}
