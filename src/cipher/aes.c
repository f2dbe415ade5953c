/*
 * AES keys and reusable cipher contexts.
 *
 * An sp_key sits in the secure heap. An sp_cipher binds one key to one mode
 * and keeps an encrypt and a decrypt EVP context whose key schedule is set up
 * once; each message only re-arms the IV, which is what makes small messages
 * cheap. Failed decryptions wipe whatever was written to the output, so a
 * caller that ignores the error still never sees unauthenticated plaintext.
 */
#include <limits.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "cipher/sp_cipher.h"

struct sp_key {
    uint8_t bytes[SP_KEY_BYTES];
};

struct sp_cipher {
    sp_aes_mode mode;
    sp_alg alg;
    EVP_CIPHER_CTX *ctx[2]; /* [0] decrypt, [1] encrypt */
    size_t gcm_iv_len[2];
};

/* ---- algorithm descriptions ---- */
static const struct {
    sp_alg alg;
    sp_aes_mode mode;
    const char *name;
    const char *cli_name;
    size_t iv_bytes;
} sp_alg_table[] = {
    {SP_ALG_AES_256_CBC, SP_AES_CBC, "AES-256-CBC", "aes-256-cbc", SP_CBC_IV_BYTES},
    {SP_ALG_AES_256_GCM, SP_AES_GCM, "AES-256-GCM", "aes-256-gcm", SP_GCM_IV_BYTES},
    {SP_ALG_AES_256_CTR, SP_AES_CTR, "AES-256-CTR", "aes-256-ctr", SP_CTR_IV_BYTES},
};

static int sp_alg_slot(sp_alg alg) {
    for (size_t i = 0; i < SP_ARRAY_LEN(sp_alg_table); i++) {
        if (sp_alg_table[i].alg == alg) return (int)i;
    }
    return -1;
}

const char *sp_alg_name(sp_alg alg) {
    int i = sp_alg_slot(alg);
    return i < 0 ? "unknown" : sp_alg_table[i].name;
}

sp_error sp_alg_from_name(const char *name, size_t len, sp_alg *out) {
    SP_ENSURE(name != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < SP_ARRAY_LEN(sp_alg_table); i++) {
        if (sp_ascii_ieq(name, len, sp_alg_table[i].name)) {
            *out = sp_alg_table[i].alg;
            return SP_OK;
        }
    }
    return SP_ERR_UNKNOWN_ALGORITHM;
}

size_t sp_alg_iv_bytes(sp_alg alg) {
    int i = sp_alg_slot(alg);
    return i < 0 ? 0 : sp_alg_table[i].iv_bytes;
}

size_t sp_alg_ciphertext_bytes(sp_alg alg, size_t plaintext_len) {
    if (plaintext_len > SP_CIPHER_MAX_INPUT) return 0;
    switch (alg) {
    case SP_ALG_AES_256_CBC: return (plaintext_len / SP_AES_BLOCK_BYTES + 1) * SP_AES_BLOCK_BYTES;
    case SP_ALG_AES_256_GCM: return plaintext_len + SP_GCM_TAG_BYTES;
    case SP_ALG_AES_256_CTR: return plaintext_len;
    default: return 0;
    }
}

/* ---- keys ---- */
sp_error sp_key_new(const uint8_t *bytes, size_t len, sp_key **out) {
    SP_ENSURE(bytes != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len == SP_KEY_BYTES, SP_ERR_BAD_KEY_LENGTH);
    SP_GUARD(sp_init());
    sp_key *k = sp_secure_alloc(sizeof *k);
    SP_ENSURE(k != NULL, SP_ERR_NO_MEMORY);
    memcpy(k->bytes, bytes, SP_KEY_BYTES);
    *out = k;
    return SP_OK;
}

sp_error sp_key_generate(sp_key **out) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_key *k = sp_secure_alloc(sizeof *k);
    SP_ENSURE(k != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = sp_random(k->bytes, SP_KEY_BYTES);
    if (rc != SP_OK) {
        sp_secure_free(k, sizeof *k);
        return rc;
    }
    *out = k;
    return SP_OK;
}

sp_error sp_key_export(const sp_key *key, uint8_t out[SP_KEY_BYTES]) {
    SP_ENSURE(key != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    memcpy(out, key->bytes, SP_KEY_BYTES);
    return SP_OK;
}

const uint8_t *sp_key_bytes(const sp_key *key) { return key->bytes; }

void sp_key_free(sp_key *key) { sp_secure_free(key, sizeof *key); }

/* ---- cipher contexts ---- */
void sp_cipher_free(sp_cipher *c) {
    if (c == NULL) return;
    EVP_CIPHER_CTX_free(c->ctx[0]); /* OpenSSL wipes the key schedule */
    EVP_CIPHER_CTX_free(c->ctx[1]);
    sp_free(c);
}

sp_error sp_cipher_new_raw(sp_aes_mode mode, const uint8_t *key, size_t key_len, sp_cipher **out) {
    SP_ENSURE(key != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    const EVP_CIPHER *cipher = sp_fetched_aes(mode, key_len);
    SP_ENSURE(cipher != NULL, SP_ERR_BAD_KEY_LENGTH);
    sp_cipher *c = sp_calloc(1, sizeof *c);
    SP_ENSURE(c != NULL, SP_ERR_NO_MEMORY);
    c->mode = mode;
    sp_error rc = SP_OK;
    for (int enc = 0; enc < 2; enc++) {
        c->ctx[enc] = EVP_CIPHER_CTX_new();
        SP_ENSURE_GOTO(c->ctx[enc] != NULL, SP_ERR_NO_MEMORY, rc, fail);
        SP_ENSURE_GOTO(EVP_CipherInit_ex2(c->ctx[enc], cipher, key, NULL, enc, NULL) == 1,
                       SP_ERR_CRYPTO_BACKEND, rc, fail);
        c->gcm_iv_len[enc] = SP_GCM_IV_BYTES;
    }
    *out = c;
    return SP_OK;
fail:
    sp_cipher_free(c);
    return rc;
}

sp_error sp_cipher_new(const sp_key *key, sp_alg alg, sp_cipher **out) {
    SP_ENSURE(key != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    int slot = sp_alg_slot(alg);
    SP_ENSURE(slot >= 0, SP_ERR_UNKNOWN_ALGORITHM);
    SP_GUARD(sp_cipher_new_raw(sp_alg_table[slot].mode, key->bytes, SP_KEY_BYTES, out));
    (*out)->alg = alg;
    return SP_OK;
}

sp_alg sp_cipher_alg(const sp_cipher *c) { return c->alg; }

static sp_error sp_cipher_arm(sp_cipher *c, int enc, const uint8_t *iv, size_t iv_len) {
    EVP_CIPHER_CTX *ctx = c->ctx[enc];
    if (c->mode == SP_AES_GCM) {
        /* OpenSSL 3's GCM takes IVs of 1 to 128 bytes; the protocol uses 12 */
        SP_ENSURE(iv_len > 0 && iv_len <= 128, SP_ERR_BAD_IV_LENGTH);
        if (c->gcm_iv_len[enc] != iv_len) {
            SP_ENSURE(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)iv_len, NULL) == 1,
                      SP_ERR_BAD_IV_LENGTH);
            c->gcm_iv_len[enc] = iv_len;
        }
    } else {
        SP_ENSURE(iv_len == SP_AES_BLOCK_BYTES, SP_ERR_BAD_IV_LENGTH);
    }
    SP_ENSURE(EVP_CipherInit_ex2(ctx, NULL, NULL, iv, enc, NULL) == 1, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

static sp_error sp_cipher_encrypt_raw(sp_cipher *c, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
                                      size_t aad_len, const uint8_t *in, size_t in_len, size_t tag_len,
                                      uint8_t *out, size_t out_cap, size_t *out_len) {
    EVP_CIPHER_CTX *ctx = c->ctx[1];
    size_t need = in_len;
    if (c->mode == SP_AES_CBC) need = (in_len / SP_AES_BLOCK_BYTES + 1) * SP_AES_BLOCK_BYTES;
    if (c->mode == SP_AES_GCM) need = in_len + tag_len;
    SP_ENSURE(out_cap >= need, SP_ERR_BUFFER_TOO_SMALL);
    SP_GUARD(sp_cipher_arm(c, 1, iv, iv_len));
    int n = 0, fin = 0;
    if (aad_len > 0) {
        SP_ENSURE(EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1, SP_ERR_CRYPTO_BACKEND);
    }
    n = 0;
    if (in_len > 0) {
        SP_ENSURE(EVP_EncryptUpdate(ctx, out, &n, in, (int)in_len) == 1, SP_ERR_CRYPTO_BACKEND);
    }
    SP_ENSURE(EVP_EncryptFinal_ex(ctx, out + n, &fin) == 1, SP_ERR_CRYPTO_BACKEND);
    size_t total = (size_t)n + (size_t)fin;
    if (c->mode == SP_AES_GCM) {
        SP_ENSURE(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, (int)tag_len, out + total) == 1,
                  SP_ERR_CRYPTO_BACKEND);
        total += tag_len;
    }
    *out_len = total;
    return SP_OK;
}

static sp_error sp_cipher_decrypt_raw(sp_cipher *c, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
                                      size_t aad_len, const uint8_t *in, size_t in_len, size_t tag_len,
                                      uint8_t *out, size_t out_cap, size_t *out_len) {
    EVP_CIPHER_CTX *ctx = c->ctx[0];
    size_t body_len = in_len;
    if (c->mode == SP_AES_GCM) {
        SP_ENSURE(in_len >= tag_len, SP_ERR_AUTH);
        body_len = in_len - tag_len;
    }
    if (c->mode == SP_AES_CBC) {
        SP_ENSURE(in_len >= SP_AES_BLOCK_BYTES && in_len % SP_AES_BLOCK_BYTES == 0, SP_ERR_AUTH);
    }
    SP_ENSURE(out_cap >= body_len, SP_ERR_BUFFER_TOO_SMALL);
    SP_GUARD(sp_cipher_arm(c, 0, iv, iv_len));
    int n = 0, fin = 0;
    if (aad_len > 0) {
        SP_ENSURE(EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1, SP_ERR_CRYPTO_BACKEND);
    }
    n = 0;
    /* From here on out may hold unauthenticated plaintext: every failure
     * wipes it. */
    sp_error rc = SP_OK;
    if (body_len > 0 && EVP_DecryptUpdate(ctx, out, &n, in, (int)body_len) != 1) rc = SP_ERR_CRYPTO_BACKEND;
    /* the ctrl takes a non-const pointer but only reads the tag */
    if (rc == SP_OK && c->mode == SP_AES_GCM &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, (int)tag_len, (void *)(uintptr_t)(in + body_len)) != 1)
        rc = SP_ERR_AUTH;
    if (rc == SP_OK && EVP_DecryptFinal_ex(ctx, out + n, &fin) != 1) rc = SP_ERR_AUTH;
    if (rc != SP_OK) {
        sp_wipe(out, body_len);
        ERR_clear_error(); /* nothing a caller could act on, and one answer for all causes */
        return rc;
    }
    *out_len = (size_t)n + (size_t)fin;
    return SP_OK;
}

sp_error sp_cipher_run(sp_cipher *c, bool encrypt, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
                       size_t aad_len, const uint8_t *in, size_t in_len, size_t tag_len, uint8_t *out,
                       size_t out_cap, size_t *out_len) {
    SP_ENSURE(c != NULL && out_len != NULL && (iv != NULL || iv_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE((in != NULL || in_len == 0) && (aad != NULL || aad_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(out != NULL || out_cap == 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(in_len <= SP_CIPHER_MAX_INPUT && aad_len <= SP_CIPHER_MAX_INPUT, SP_ERR_TOO_LARGE);
    SP_ENSURE(aad_len == 0 || c->mode == SP_AES_GCM, SP_ERR_INVALID_ARGUMENT);
    if (c->mode == SP_AES_GCM) {
        SP_ENSURE(tag_len >= 4 && tag_len <= 16, SP_ERR_INVALID_ARGUMENT);
    } else {
        tag_len = 0;
    }
    /* an empty CTR message may come with no buffer at all; OpenSSL still
     * wants somewhere to write its zero bytes */
    uint8_t none[SP_AES_BLOCK_BYTES];
    if (out == NULL) out = none;
    if (encrypt) return sp_cipher_encrypt_raw(c, iv, iv_len, aad, aad_len, in, in_len, tag_len, out, out_cap, out_len);
    return sp_cipher_decrypt_raw(c, iv, iv_len, aad, aad_len, in, in_len, tag_len, out, out_cap, out_len);
}

static sp_error sp_cipher_public(sp_cipher *c, bool encrypt, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
                                 size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
                                 size_t *out_len) {
    SP_ENSURE(c != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_alg_slot(c->alg) >= 0, SP_ERR_UNKNOWN_ALGORITHM);
    SP_ENSURE(iv_len == sp_alg_iv_bytes(c->alg), SP_ERR_BAD_IV_LENGTH);
    return sp_cipher_run(c, encrypt, iv, iv_len, aad, aad_len, in, in_len, SP_GCM_TAG_BYTES, out, out_cap, out_len);
}

sp_error sp_cipher_encrypt(sp_cipher *c, const uint8_t *iv, size_t iv_len, const uint8_t *aad, size_t aad_len,
                           const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    return sp_cipher_public(c, true, iv, iv_len, aad, aad_len, in, in_len, out, out_cap, out_len);
}

sp_error sp_cipher_decrypt(sp_cipher *c, const uint8_t *iv, size_t iv_len, const uint8_t *aad, size_t aad_len,
                           const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    return sp_cipher_public(c, false, iv, iv_len, aad, aad_len, in, in_len, out, out_cap, out_len);
}
