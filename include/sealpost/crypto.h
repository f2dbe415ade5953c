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
/* True for a canonical lowercase UUID of 36 characters. */
SP_API bool sp_uuid_is_valid(const char *s, size_t len);

/* Overwrites memory in a way the compiler cannot elide. */
SP_API void sp_wipe(void *p, size_t len);

SP_END_DECLS

#endif
