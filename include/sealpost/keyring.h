/*
 * The provider keyring: the AES-256 keys that encrypt traffic with each CPaaS
 * provider, one series per tenant and channel, each key a UUID version.
 *
 * Life cycle, forward only:
 *   active (exactly one per channel, seals and opens)
 *     -> decrypt-only (opens messages still in flight after a rotation)
 *     -> retired (refused) -> destroyed (wrapped material erased).
 * Any other change is SP_ERR_ILLEGAL_TRANSITION.
 *
 * Keys are stored only wrapped by the tenant's master key (sp_kms); plaintext
 * key material exists only in locked memory. The keyring is one JSON
 * document kept by a storage: a private file replaced atomically under a
 * lock (sp_keyring_open), or a row of the database (sp_store_keyring_storage
 * in store.h, one document per tenant). Several processes can share either;
 * every change locks, re-reads, changes and writes the document.
 */
#ifndef SEALPOST_KEYRING_H
#define SEALPOST_KEYRING_H

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"
#include "sealpost/kms.h"
#include "sealpost/wire.h"

SP_BEGIN_DECLS

#define SP_KEYRING_MAX_NAME 64    /* tenant and channel names: [A-Za-z0-9_.-] */
#define SP_KEYRING_MAX_KEYS 100000
#define SP_KEYRING_MAX_FILE (64u << 20)
/* Channels named "vault.*" hold the PII vault's keys; the vault runs their
 * life cycle and sp_keyring_maintain leaves them alone. */
#define SP_KEYRING_MANAGED_PREFIX "vault."

typedef enum sp_keyring_state {
    SP_KEYRING_ACTIVE = 1,
    SP_KEYRING_DECRYPT_ONLY = 2,
    SP_KEYRING_RETIRED = 3,
    SP_KEYRING_DESTROYED = 4,
} sp_keyring_state;

typedef struct sp_keyring_entry {
    char tenant[SP_KEYRING_MAX_NAME + 1];
    char channel[SP_KEYRING_MAX_NAME + 1];
    char version[SP_KEY_VERSION_CHARS + 1];
    sp_keyring_state state;
    int64_t created;     /* Unix seconds; also when it became active */
    int64_t deactivated; /* became decrypt-only, or 0 */
    int64_t retired;     /* or 0 */
    int64_t destroyed;   /* or 0 */
    char master_key[SP_KMS_MAX_KEY_ID + 1]; /* the master key that wraps it ("" once destroyed) */
} sp_keyring_entry;

typedef struct sp_keyring sp_keyring;

/* Where the keyring document lives. Every call returns SP_OK or an error
 * (SP_ERR_IO, SP_ERR_STORE, SP_ERR_CONFLICT, SP_ERR_NO_MEMORY, …). */
typedef struct sp_keyring_storage {
    void *ctx;
    /* The document (NULL and 0 when none was written yet) and its
     * generation, which changes with every write. The caller releases the
     * document with free_doc. */
    sp_error (*read)(void *ctx, uint8_t **doc, size_t *len, uint64_t *generation);
    /* The current generation only: a cheap "has it changed?". */
    sp_error (*generation)(void *ctx, uint64_t *generation);
    /* Exclusive access across processes, held from lock to unlock; read and
     * write are called in between. */
    sp_error (*lock)(void *ctx);
    /* Replaces the document; visible to others only once unlock commits. */
    sp_error (*write)(void *ctx, const uint8_t *doc, size_t len);
    /* commit false abandons what was written since lock. */
    sp_error (*unlock)(void *ctx, bool commit);
    void (*free_doc)(void *ctx, uint8_t *doc, size_t len);
    /* Called once by sp_keyring_close (or a failed open). */
    void (*close)(void *ctx);
} sp_keyring_storage;

/* Opens the keyring file (created empty if missing). kms is not owned and
 * must outlive the keyring; with a NULL kms the keyring can only be listed
 * (anything else is SP_ERR_BAD_CONFIG). */
SP_API SP_MUST_CHECK sp_error sp_keyring_open(const char *path, sp_kms *kms, sp_keyring **out);
/* The same over any storage; the keyring takes ownership of the storage's
 * ctx (closed with it, also when opening fails). */
SP_API SP_MUST_CHECK sp_error sp_keyring_open_storage(const sp_keyring_storage *storage, sp_kms *kms,
                                                      sp_keyring **out);
SP_API void sp_keyring_close(sp_keyring *kr);
/* Re-reads the document (another process may have changed it). */
SP_API SP_MUST_CHECK sp_error sp_keyring_reload(sp_keyring *kr);
/* The same, only when the document is not the one last read (a stat of the
 * file, the generation of a database row); reloaded (may be NULL) says
 * which. */
SP_API SP_MUST_CHECK sp_error sp_keyring_reload_if_changed(sp_keyring *kr, bool *reloaded);

SP_API const char *sp_keyring_state_name(sp_keyring_state state);
SP_API size_t sp_keyring_count(const sp_keyring *kr);
SP_API SP_MUST_CHECK sp_error sp_keyring_get(const sp_keyring *kr, size_t index, sp_keyring_entry *out);
/* One version of a channel's key, or with version NULL the active one;
 * SP_ERR_NOT_FOUND when there is none. */
SP_API SP_MUST_CHECK sp_error sp_keyring_find(const sp_keyring *kr, const char *tenant, const char *channel,
                                              const char *version, sp_keyring_entry *out);

/* A new active version; the previous active one becomes decrypt-only. */
SP_API SP_MUST_CHECK sp_error sp_keyring_rotate(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                                char version_out[SP_KEY_VERSION_CHARS + 1]);
/* The channel's active version, rotating first only when there is none or
 * it is at least max_age_s old; decided under the storage's lock, so processes
 * sharing the keyring rotate once, not once each. */
SP_API SP_MUST_CHECK sp_error sp_keyring_rotate_if_older(sp_keyring *kr, const char *tenant, const char *channel,
                                                         int64_t now, int64_t max_age_s,
                                                         char version_out[SP_KEY_VERSION_CHARS + 1],
                                                         bool *rotated);
SP_API SP_MUST_CHECK sp_error sp_keyring_retire(sp_keyring *kr, const char *tenant, const char *channel,
                                                const char *version, int64_t now);
SP_API SP_MUST_CHECK sp_error sp_keyring_destroy(sp_keyring *kr, const char *tenant, const char *channel,
                                                 const char *version, int64_t now);
/* Minimum decryption version: every decrypt-only version older than
 * `version` is retired now, and none older is ever loaded again. */
SP_API SP_MUST_CHECK sp_error sp_keyring_set_min_version(sp_keyring *kr, const char *tenant, const char *channel,
                                                         const char *version, int64_t now);

typedef struct sp_keyring_policy {
    int64_t rotate_after_s; /* rotate an active key this old (0: never) */
    int64_t overlap_s;      /* retire a decrypt-only key this long after it was rotated out */
} sp_keyring_policy;
/* The scheduled part of rotation, for every channel except the vault's
 * ("vault.*"); counts what it did. */
SP_API SP_MUST_CHECK sp_error sp_keyring_maintain(sp_keyring *kr, const sp_keyring_policy *policy, int64_t now,
                                                  size_t *rotated, size_t *retired);

/* Adds the channel's usable versions (active and decrypt-only) to wire and
 * makes the active one current. */
SP_API SP_MUST_CHECK sp_error sp_keyring_load_wire(sp_keyring *kr, const char *tenant, const char *channel,
                                                   sp_wire *wire);
/* The key of one usable version (for the key exchange); the caller frees. */
SP_API SP_MUST_CHECK sp_error sp_keyring_unwrap(sp_keyring *kr, const char *tenant, const char *channel,
                                                const char *version, sp_key **out);

/* Master-key rotation: rewraps every stored key from the keyring's KMS to
 * new_kms without touching any data, `batch` keys per atomic file write.
 * Keys already under new_kms are skipped, so running it again after a crash
 * resumes where it stopped. progress (may be NULL) is called after each
 * batch; returning non-OK stops the rewrap there (what was written stays).
 * On success the keyring uses new_kms from then on. */
typedef sp_error (*sp_keyring_progress_fn)(void *arg, size_t done, size_t total);
SP_API SP_MUST_CHECK sp_error sp_keyring_rewrap(sp_keyring *kr, sp_kms *new_kms, size_t batch,
                                                sp_keyring_progress_fn progress, void *arg, size_t *rewrapped);

/* ---- for the PII vault (include/sealpost/vault.h) ---- */

/* Crypto-erase of one channel: every version not yet destroyed, the active
 * one included, passes through the whole life cycle at once (its
 * deactivated, retired and destroyed times all set to now where unset) and
 * its wrapped material is erased, in one atomic change of the file. Needs no
 * KMS. The channel has no active version afterwards: the next rotation
 * starts a new series. erased (may be NULL) counts the versions destroyed;
 * a channel with nothing left to erase is SP_OK with 0. */
SP_API SP_MUST_CHECK sp_error sp_keyring_erase_channel(sp_keyring *kr, const char *tenant, const char *channel,
                                                       int64_t now, size_t *erased);
/* sp_keyring_rotate that also hands back the new key (the caller frees it),
 * so it can be used without an unwrap: with a master key that wraps on this
 * host (RSA-OAEP) that works while the KMS cannot unwrap. */
SP_API SP_MUST_CHECK sp_error sp_keyring_rotate_with_key(sp_keyring *kr, const char *tenant, const char *channel,
                                                         int64_t now, char version_out[SP_KEY_VERSION_CHARS + 1],
                                                         sp_key **key_out);

SP_END_DECLS

#endif
