/*
 * sealpost's symmetric primitives: AES-256 in the three modes CPaaS providers
 * speak (CBC/PKCS#7, GCM, CTR), keys held in locked memory, and IVs from the
 * OS CSPRNG.
 *
 * The handles are opaque and sizes are constants, so there is one obvious way
 * to call each thing. An sp_cipher keeps its OpenSSL contexts (and the AES key
 * schedule) between messages; it is not thread-safe: give each thread its own.
 */
#ifndef SEALPOST_CRYPTO_H
#define SEALPOST_CRYPTO_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_KEY_BYTES 32
#define SP_CBC_IV_BYTES 16
#define SP_CTR_IV_BYTES 16
#define SP_GCM_IV_BYTES 12
#define SP_GCM_TAG_BYTES 16
#define SP_AES_BLOCK_BYTES 16
#define SP_HMAC_SHA256_BYTES 32
#define SP_MAX_IV_BYTES 16
#define SP_KEY_VERSION_CHARS 36 /* a lowercase UUID, without the NUL */

typedef enum sp_alg {
    SP_ALG_AES_256_CBC = 1, /* Java AES/CBC/PKCS5Padding, 16-byte IV */
    SP_ALG_AES_256_GCM = 2, /* Java AES/GCM/NoPadding, 12-byte IV, tag appended */
    SP_ALG_AES_256_CTR = 3, /* Java AES/CTR/NoPadding, IV = whole counter block */
} sp_alg;

/* Prepares the library: fetches the OpenSSL algorithms once, sets up the
 * locked secure heap, makes JSON buffers wipe on free. Idempotent and
 * thread-safe; every other call also runs it on first use. */
SP_API SP_MUST_CHECK sp_error sp_init(void);

/* For applications: no core dumps and no ptrace of this process, so key
 * schedules that OpenSSL keeps in ordinary memory never reach a dump. */
SP_API SP_MUST_CHECK sp_error sp_harden_process(void);

/* "AES-256-CBC", "AES-256-GCM", "AES-256-CTR" (the X-AES-ALGORITHM values). */
SP_API const char *sp_alg_name(sp_alg alg);
/* Accepts the names above, case-insensitively, and the CLI spellings
 * aes-256-cbc etc. */
SP_API SP_MUST_CHECK sp_error sp_alg_from_name(const char *name, size_t len, sp_alg *out);
SP_API size_t sp_alg_iv_bytes(sp_alg alg);
/* Exact ciphertext length for a plaintext length (GCM includes the tag,
 * CBC includes padding). 0 for an unknown algorithm, and for CTR of an
 * empty plaintext: check the algorithm with sp_alg_iv_bytes() first. */
SP_API size_t sp_alg_ciphertext_bytes(sp_alg alg, size_t plaintext_len);

/* An AES-256 key in locked, non-dumpable memory, wiped when freed. */
typedef struct sp_key sp_key;
SP_API SP_MUST_CHECK sp_error sp_key_new(const uint8_t *bytes, size_t len, sp_key **out);
SP_API SP_MUST_CHECK sp_error sp_key_generate(sp_key **out);
/* Copies the key bytes out, e.g. for wrapping; the caller must wipe them. */
SP_API SP_MUST_CHECK sp_error sp_key_export(const sp_key *key, uint8_t out[SP_KEY_BYTES]);
SP_API void sp_key_free(sp_key *key);

/* One key, one algorithm, reusable contexts. */
typedef struct sp_cipher sp_cipher;
SP_API SP_MUST_CHECK sp_error sp_cipher_new(const sp_key *key, sp_alg alg, sp_cipher **out);
SP_API void sp_cipher_free(sp_cipher *cipher);
SP_API sp_alg sp_cipher_alg(const sp_cipher *cipher);

/* Encrypts in_len bytes. iv_len must equal sp_alg_iv_bytes(). aad is only
 * allowed with GCM. out must hold sp_alg_ciphertext_bytes(alg, in_len); for
 * GCM the 16-byte tag is appended to the ciphertext. in and out may not
 * overlap. */
SP_API SP_MUST_CHECK sp_error sp_cipher_encrypt(sp_cipher *cipher, const uint8_t *iv, size_t iv_len,
                                                const uint8_t *aad, size_t aad_len, const uint8_t *in,
                                                size_t in_len, uint8_t *out, size_t out_cap,
                                                size_t *out_len);
/* The reverse. out must hold in_len bytes (CBC, CTR) or in_len - 16 (GCM),
 * since padding is only known once it is authenticated. Any tag or padding
 * failure is SP_ERR_AUTH and out is wiped. */
SP_API SP_MUST_CHECK sp_error sp_cipher_decrypt(sp_cipher *cipher, const uint8_t *iv, size_t iv_len,
                                                const uint8_t *aad, size_t aad_len, const uint8_t *in,
                                                size_t in_len, uint8_t *out, size_t out_cap,
                                                size_t *out_len);

/* Fills buf from a per-thread buffer of OS-CSPRNG bytes refilled in bulk; the
 * buffer is discarded in a forked child so parent and child never share IVs. */
SP_API SP_MUST_CHECK sp_error sp_random(uint8_t *buf, size_t len);

/* Constant-time equality of two equal-length byte strings. */
SP_API bool sp_ct_equal(const void *a, const void *b, size_t len);

/* A fresh random key-version id: a version-4 UUID in lowercase, NUL-terminated. */
SP_API SP_MUST_CHECK sp_error sp_uuid_v4(char out[37]);
/* A time-ordered id (RFC 9562 version 7: Unix milliseconds, then 74 random
 * bits), for database keys that should land at the end of their index
 * rather than at random pages. */
SP_API SP_MUST_CHECK sp_error sp_uuid_v7(char out[37]);
/* True for a canonical lowercase UUID of 36 characters. */
SP_API bool sp_uuid_is_valid(const char *s, size_t len);

/* Overwrites memory in a way the compiler cannot elide. */
SP_API void sp_wipe(void *p, size_t len);

/* ---- keyed hashes, key derivation, base64 ---- */

/* HMAC-SHA256 (RFC 2104) of msg under a raw key of any length (an empty
 * key and an empty message are allowed). */
SP_API SP_MUST_CHECK sp_error sp_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                                             uint8_t out[SP_HMAC_SHA256_BYTES]);
/* HMAC-SHA256 under a key held in locked memory (its bytes never leave it),
 * of label, one zero byte, then msg: the label (non-empty) keeps hashes made
 * for different purposes under one key apart. */
SP_API SP_MUST_CHECK sp_error sp_key_hmac_sha256(const sp_key *key, const char *label, const uint8_t *msg,
                                                 size_t msg_len, uint8_t out[SP_HMAC_SHA256_BYTES]);
/* HKDF-SHA256 (RFC 5869), extract then expand; 1 <= out_len <= 255 * 32.
 * An empty salt means the RFC's string of zeros. */
SP_API SP_MUST_CHECK sp_error sp_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                                             const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);
/* A new key derived from ikm with HKDF-SHA256 (salt and info as above),
 * straight into locked memory; free it with sp_key_free. */
SP_API SP_MUST_CHECK sp_error sp_key_derive(const sp_key *ikm, const uint8_t *salt, size_t salt_len,
                                            const uint8_t *info, size_t info_len, sp_key **out);

/* Characters of the base64 text of n bytes, without the NUL: standard
 * (RFC 4648 section 4, '=' padded) and base64url without padding (section 5,
 * as in JOSE and URL-safe tokens). */
#define SP_BASE64_CHARS(n) ((((size_t)(n) + 2) / 3) * 4)
#define SP_BASE64URL_CHARS(n) (((size_t)(n) / 3) * 4 + ((size_t)(n) % 3 ? (size_t)(n) % 3 + 1 : 0))
/* Encodes len bytes into out followed by a NUL, so cap must be at least
 * SP_BASE64_CHARS(len) + 1 (SP_ERR_BUFFER_TOO_SMALL otherwise, out untouched);
 * *out_len gets the characters written, without the NUL. */
SP_API SP_MUST_CHECK sp_error sp_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap, size_t *out_len);
/* The same in base64url without padding; cap >= SP_BASE64URL_CHARS(len) + 1. */
SP_API SP_MUST_CHECK sp_error sp_base64url_encode(const uint8_t *in, size_t len, char *out, size_t cap,
                                                  size_t *out_len);

SP_END_DECLS

#endif
