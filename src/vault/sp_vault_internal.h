/*
 * The PII vault's inside, shared by vault.c, normalize.c, the unit test and
 * the fuzz target: the blob layout, the rules for the names that go into
 * the additional data, normalisation into a caller's buffer, and two doors
 * that only tests and benchmarks use (the decrypt without its audit line,
 * and the cache's counters).
 *
 * Blob (docs/VAULT.md):
 *   [0] format (1)  [1] algorithm (1: AES-256-GCM)  [2..18) DEK id (the 16
 *   bytes of its keyring version UUID)  [18..30) nonce  [30..n-16)
 *   ciphertext  [n-16..n) tag.
 * AAD: "sealpost-vault-v1" || u8 len || tenant || u8 len || profile id ||
 *   u8 len || field || blob[0..18).
 */
#ifndef SP_VAULT_INTERNAL_H
#define SP_VAULT_INTERNAL_H

#include "cipher/sp_cipher.h"
#include "sealpost/vault.h"

#define SP_VAULT_ALG_AES_256_GCM 1
#define SP_VAULT_DEK_ID_BYTES 16
#define SP_VAULT_HEADER_BYTES 18 /* format, algorithm, DEK id: also bound by the AAD */
#define SP_VAULT_NONCE_BYTES 12
#define SP_VAULT_BODY_OFFSET (SP_VAULT_HEADER_BYTES + SP_VAULT_NONCE_BYTES)
#define SP_VAULT_TAG_BYTES 16
#define SP_VAULT_AAD_LABEL "sealpost-vault-v1"
#define SP_VAULT_MAX_TENANT 64
#define SP_VAULT_MAX_AAD                                                                                        \
    (sizeof SP_VAULT_AAD_LABEL - 1 + 1 + SP_VAULT_MAX_TENANT + 1 + SP_VAULT_MAX_PROFILE_ID + 1 +              \
     SP_VAULT_MAX_FIELD + SP_VAULT_HEADER_BYTES)

#define SP_VAULT_AUDIT_CHANNEL "vault.audit"
#define SP_VAULT_CHANNEL_PREFIX "vault."
#define SP_VAULT_MAX_EMAIL 254
#define SP_VAULT_PHONE_MIN_DIGITS 8
#define SP_VAULT_PHONE_MAX_DIGITS 15
#define SP_VAULT_MAX_COUNTRY_CODE 3
/* The most bytes any normalised email or phone number takes, with its NUL. */
#define SP_VAULT_NORM_BUF (SP_VAULT_MAX_EMAIL + 1)

/* The DEK cache: a fixed slab of entries and an open-addressing index over
 * it at most half full, so a lookup allocates nothing and probes little. */
#define SP_VAULT_CACHE_ENTRIES 256
#define SP_VAULT_CACHE_SLOTS 512
/* Random 96-bit nonces: stay far below 2^32 messages per key (NIST SP
 * 800-38D). One vault rotates its DEK after this many encryptions. */
#define SP_VAULT_MAX_SEALS_PER_DEK ((uint64_t)1 << 30)

/* [a-z0-9_], 1..SP_VAULT_MAX_FIELD. */
SP_INTERNAL bool sp_vault_field_name_ok(const char *s, size_t *len_out);
/* Visible ASCII (0x21..0x7e), 1..SP_VAULT_MAX_PROFILE_ID. */
SP_INTERNAL bool sp_vault_profile_id_ok(const char *s, size_t *len_out);
/* [a-z0-9_.-], 1..SP_VAULT_MAX_PURPOSE. */
SP_INTERNAL bool sp_vault_purpose_ok(const char *s);
/* 1..3 digits, the first not 0 (an ITU country calling code). */
SP_INTERNAL bool sp_vault_country_code_ok(const char *s);

/* value without leading and trailing ASCII whitespace. */
SP_INTERNAL sp_span sp_vault_trim(const uint8_t *value, size_t len);
/* Appends the normalised value to out (no NUL). SP_ERR_INVALID_ARGUMENT
 * when it does not normalise, SP_ERR_BUFFER_TOO_SMALL when out is full;
 * out->len is unchanged on failure. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_vault_normalize_into(sp_vault_field_kind kind, const char *default_country_code,
                                                           const uint8_t *value, size_t len, sp_wbuf *out);

/* sp_vault_decrypt without the audit line: the warm path the benchmark
 * measures and the tests prove allocation-free. Never exported from the
 * shared library; the public decrypt is always audited. profile_id and
 * field are checked by the caller. dek_uuid (may be NULL) receives the
 * UUID the blob names when it names one, else "". */
SP_INTERNAL SP_MUST_CHECK sp_error sp_vault_decrypt_unaudited(sp_vault *vault, const char *profile_id,
                                                              size_t profile_len, const char *field,
                                                              size_t field_len, const uint8_t *blob, size_t len,
                                                              int64_t now, uint8_t *out, size_t cap,
                                                              size_t *out_len,
                                                              char dek_uuid[SP_KEY_VERSION_CHARS + 1]);

typedef struct sp_vault_stats {
    uint64_t unwraps;    /* DEKs unwrapped through the KMS (misses, expiries, refreshes) */
    uint64_t refreshes;  /* re-unwraps ahead of expiry that succeeded */
    uint64_t refresh_failures;
    uint64_t expired;    /* entries dropped for age or use count */
    uint64_t evictions;  /* entries dropped because the cache was full */
    uint64_t reloads;    /* keyring re-reads for a DEK id it did not know */
    uint64_t rotations;  /* new DEKs this vault made */
    uint64_t fallbacks;  /* of which: made because the current DEK could not be unwrapped */
    size_t cached;       /* entries in the cache now */
} sp_vault_stats;

SP_INTERNAL void sp_vault_get_stats(const sp_vault *vault, sp_vault_stats *out);

#endif
