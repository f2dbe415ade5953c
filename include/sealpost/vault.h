/*
 * The PII vault (Bring Your Own Key): profile fields marked as PII (email and
 * phone by default) are encrypted the moment they arrive, with data keys
 * (DEKs) wrapped by the tenant's own master key, and decrypted only in memory
 * at send time, each such decrypt written to the audit log.
 *
 * A field becomes one compact blob (docs/VAULT.md): format, algorithm, the
 * DEK's 16-byte id, a 12-byte nonce, the AES-256-GCM ciphertext and tag
 * (46 bytes of overhead), with the tenant, the profile id and the field name
 * as additional data, so a ciphertext moved to another row or field does not
 * decrypt. A blind index (HMAC-SHA256 of the normalised value under a
 * per-tenant, per-field key, truncated) finds and de-duplicates profiles by
 * email or phone without decrypting anything.
 *
 * DEKs and index keys live in the provider keyring's store (sp_keyring) as
 * channels of the tenant: "vault.dek" and "vault.index.<field>", so they
 * share its wrapping, life cycle, crypto-erase and resumable master-key
 * rewrap. A DEK encrypts new values for a limited time, then a new one is
 * made. Unwrapped DEKs are cached for a TTL counted from the unwrap, with a
 * use limit and a refresh ahead of expiry; after a revocation the tenant's
 * data (and its blind indexes) become unusable within that TTL. Key bytes
 * pass through locked memory; the AES key schedules OpenSSL expands from
 * them live in its ordinary heap, so servers call sp_harden_process().
 *
 * An sp_vault serves one tenant and is not thread-safe: one per thread (they
 * may share the keyring file and the KMS).
 */
#ifndef SEALPOST_VAULT_H
#define SEALPOST_VAULT_H

#include "sealpost/audit.h"
#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"
#include "sealpost/keyring.h"
#include "sealpost/kms.h"

SP_BEGIN_DECLS

#define SP_VAULT_FORMAT_VERSION 1
#define SP_VAULT_OVERHEAD 46            /* blob bytes beyond the plaintext */
#define SP_VAULT_MAX_VALUE (64u << 10)  /* largest field value */
#define SP_VAULT_MAX_PROFILE_ID 128
#define SP_VAULT_MAX_FIELD 48           /* field names: [a-z0-9_] */
#define SP_VAULT_MAX_PII_FIELDS 32
#define SP_VAULT_MAX_PURPOSE 64
#define SP_VAULT_INDEX_MIN 8
#define SP_VAULT_INDEX_MAX 32
#define SP_VAULT_DEK_CHANNEL "vault.dek"
#define SP_VAULT_INDEX_CHANNEL_PREFIX "vault.index."

typedef enum sp_vault_field_kind {
    SP_VAULT_FIELD_TEXT = 0,  /* indexed as given (trimmed) */
    SP_VAULT_FIELD_EMAIL = 1, /* indexed lower-cased and trimmed */
    SP_VAULT_FIELD_PHONE = 2, /* indexed in E.164 */
} sp_vault_field_kind;

typedef struct sp_vault_field {
    const char *name;
    sp_vault_field_kind kind;
} sp_vault_field;

typedef struct sp_vault_options {
    const char *tenant;                 /* [A-Za-z0-9_.-], 1..64 */
    const sp_vault_field *pii_fields;   /* NULL: "email" (email) and "phone" (phone) */
    size_t n_pii_fields;
    int64_t dek_lifetime_s;             /* how long a DEK encrypts new values; 0: 1800 */
    int64_t cache_ttl_s;                /* unwrapped DEKs kept this long after unwrap; 0: 1800 */
    uint64_t cache_max_uses;            /* then unwrapped again; 0: 1,000,000 */
    int64_t refresh_ahead_s;            /* re-unwrap this long before expiry; 0: 60 (< cache_ttl_s) */
    size_t index_bytes;                 /* blind index length, 8..32; 0: 16 */
    const char *default_country_code;   /* for phone numbers without one, e.g. "1" or "44"; NULL: refuse them */
    sp_audit *audit;                    /* where send-time decrypts are recorded; NULL: refused */
} sp_vault_options;

typedef struct sp_vault sp_vault;

/* The keyring (which holds the KMS it unwraps with) is not owned and must
 * outlive the vault. */
SP_API SP_MUST_CHECK sp_error sp_vault_open(const sp_vault_options *options, sp_keyring *keyring, sp_vault **out);
SP_API void sp_vault_close(sp_vault *vault);

SP_API bool sp_vault_is_pii(const sp_vault *vault, const char *field);

/* Encrypts one field value (0..SP_VAULT_MAX_VALUE bytes, any bytes; UTF-8
 * for text) into out (value length + SP_VAULT_OVERHEAD bytes). Works without
 * the KMS while the current DEK is cached, and with an asymmetric master key
 * (RSA-OAEP) also when the KMS is unreachable or revoked; otherwise
 * SP_ERR_KMS_* tells the caller to retry later. now: Unix seconds (0: clock). */
SP_API SP_MUST_CHECK sp_error sp_vault_encrypt(sp_vault *vault, const char *profile_id, const char *field,
                                               const uint8_t *value, size_t len, int64_t now, uint8_t *out,
                                               size_t cap, size_t *out_len);

/* Decrypts at send time into a caller-owned buffer (wipe it after use) and
 * records one audit line: tenant, DEK id, field, purpose and a keyed hash of
 * the profile id (never the value). Any blob, key or context mismatch is
 * SP_ERR_AUTH; a refused audit line refuses the decrypt. */
SP_API SP_MUST_CHECK sp_error sp_vault_decrypt(sp_vault *vault, const char *profile_id, const char *field,
                                               const uint8_t *blob, size_t len, const char *purpose, int64_t now,
                                               uint8_t *out, size_t cap, size_t *out_len);

/* One decrypt of a batch: the arguments of sp_vault_decrypt, and its
 * result. */
typedef struct sp_vault_decrypt_item {
    const char *profile_id;
    const char *field;
    const uint8_t *blob;
    size_t len;
    uint8_t *out;
    size_t cap;
    size_t out_len; /* set: the plaintext's length when rc is SP_OK */
    sp_error rc;    /* set: this item's result, as sp_vault_decrypt would give it */
} sp_vault_decrypt_item;

#define SP_VAULT_MAX_BATCH 1024

/* sp_vault_decrypt for n items (1..SP_VAULT_MAX_BATCH) at once, their audit
 * lines written together (sp_audit_record_many: one write for the batch).
 * SP_OK when every line was recorded: each item's rc then says whether its
 * plaintext is in out; a failed item's out holds zeros. Once an item
 * fails for the KMS (SP_ERR_KMS_*), the items after it get the same error
 * without asking the KMS again (each try could wait out its timeout), and
 * their lines say so. Any other return
 * (bad arguments, the audit key, the audit log): no item has a plaintext,
 * every out is zeroed, every rc is that error. */
SP_API SP_MUST_CHECK sp_error sp_vault_decrypt_many(sp_vault *vault, sp_vault_decrypt_item *items, size_t n,
                                                    const char *purpose, int64_t now);

/* The blind index of a value of a PII field: HMAC-SHA256 of the normalised
 * value, truncated to index_bytes. SP_ERR_INVALID_ARGUMENT when the value
 * does not normalise (not an email address, not a phone number). */
SP_API SP_MUST_CHECK sp_error sp_vault_index(sp_vault *vault, const char *field, const uint8_t *value, size_t len,
                                             uint8_t *out, size_t cap, size_t *out_len);

/* Normalisation on its own (what the index hashes), for callers that store
 * or compare it: lower-cased trimmed email; E.164 phone (+ and 8..15
 * digits). out needs len + 8 bytes; NUL-terminated. */
SP_API SP_MUST_CHECK sp_error sp_vault_normalize(sp_vault_field_kind kind, const char *default_country_code,
                                                 const uint8_t *value, size_t len, char *out, size_t cap,
                                                 size_t *out_len);

/* Crypto-erase: every DEK and index key of the tenant is retired and
 * destroyed, so all of its ciphertexts are unreadable for good. */
SP_API SP_MUST_CHECK sp_error sp_vault_erase_tenant(sp_vault *vault, int64_t now);

/* The DEK id a blob names (its 16 bytes as a UUID), without decrypting;
 * SP_ERR_AUTH for anything that is not a blob of this format. */
SP_API SP_MUST_CHECK sp_error sp_vault_blob_dek(const uint8_t *blob, size_t len, char dek_id[SP_KEY_VERSION_CHARS + 1]);

SP_END_DECLS

#endif
