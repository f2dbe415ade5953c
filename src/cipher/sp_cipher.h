/*
 * The cipher layer's internal interface. The public API (sealpost/crypto.h)
 * offers AES-256 only, with the IV and tag sizes the protocol fixes; this
 * layer underneath also takes AES-128/192 keys, other GCM IV and tag lengths,
 * HMAC, HKDF and AES key wrap, so the KMS layer and the Wycheproof tests can
 * reach the same code the protocol runs.
 */
#ifndef SP_CIPHER_H
#define SP_CIPHER_H

#include "core/sp_core.h"

typedef enum sp_aes_mode {
    SP_AES_CBC = 0,
    SP_AES_GCM = 1,
    SP_AES_CTR = 2,
} sp_aes_mode;

/* The largest input one call accepts (OpenSSL lengths are int). */
#define SP_CIPHER_MAX_INPUT ((size_t)1 << 30)

/* An sp_cipher over a raw AES key of 16, 24 or 32 bytes. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_cipher_new_raw(sp_aes_mode mode, const uint8_t *key, size_t key_len,
                                                     sp_cipher **out);
/* Any IV length OpenSSL accepts for the mode; for GCM the tag (tag_len bytes)
 * follows the ciphertext on output (encrypt) and on input (decrypt). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_cipher_run(sp_cipher *c, bool encrypt, const uint8_t *iv, size_t iv_len,
                                                 const uint8_t *aad, size_t aad_len, const uint8_t *in,
                                                 size_t in_len, size_t tag_len, uint8_t *out, size_t out_cap,
                                                 size_t *out_len);

/* HMAC-SHA256 with a reusable keyed context: begin/update/final per message
 * reuses the key schedule without allocating. */
typedef struct sp_hmac sp_hmac;
SP_INTERNAL SP_MUST_CHECK sp_error sp_hmac_new(const uint8_t *key, size_t key_len, sp_hmac **out);
SP_INTERNAL SP_MUST_CHECK sp_error sp_hmac_begin(sp_hmac *h);
SP_INTERNAL SP_MUST_CHECK sp_error sp_hmac_update(sp_hmac *h, const void *data, size_t len);
SP_INTERNAL SP_MUST_CHECK sp_error sp_hmac_final(sp_hmac *h, uint8_t out[SP_HMAC_SHA256_BYTES]);
SP_INTERNAL void sp_hmac_free(sp_hmac *h);
/* One-shot HMAC-SHA256 is public: sp_hmac_sha256 in sealpost/crypto.h. */

/* SHA-256 of the concatenation of n pieces, on the stack: no allocation and
 * no algorithm fetch (the audit log hashes every record with it). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_sha256(const void *const *pieces, const size_t *lens, size_t n,
                                             uint8_t out[SP_HMAC_SHA256_BYTES]);

/* HKDF-SHA256 is public too: sp_hkdf_sha256 in sealpost/crypto.h. */

/* AES key wrap: RFC 3394 (pad = false, input a multiple of 8, >= 16) or
 * RFC 5649 (pad = true). Unwrap failures are SP_ERR_AUTH. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_aes_key_wrap(const uint8_t *kek, size_t kek_len, bool pad,
                                                   const uint8_t *in, size_t in_len, uint8_t *out,
                                                   size_t out_cap, size_t *out_len);
SP_INTERNAL SP_MUST_CHECK sp_error sp_aes_key_unwrap(const uint8_t *kek, size_t kek_len, bool pad,
                                                     const uint8_t *in, size_t in_len, uint8_t *out,
                                                     size_t out_cap, size_t *out_len);

/* Raw access to a key's bytes, for layers inside the library. */
SP_INTERNAL const uint8_t *sp_key_bytes(const sp_key *key);

/* The fetched algorithms, valid after sp_init. */
struct evp_cipher_st;
struct evp_mac_st;
struct evp_kdf_st;
SP_INTERNAL const struct evp_cipher_st *sp_fetched_aes(sp_aes_mode mode, size_t key_len);
SP_INTERNAL const struct evp_cipher_st *sp_fetched_wrap(size_t key_len, bool pad);
SP_INTERNAL struct evp_mac_st *sp_fetched_hmac(void);
SP_INTERNAL struct evp_kdf_st *sp_fetched_hkdf(void);

#endif
