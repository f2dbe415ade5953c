/*
 * The store: everything sealpostd keeps, behind one interface with two
 * backends, one file each:
 *
 *   sqlite:PATH                       embedded default, one file (WAL), 0600
 *   postgresql://user@host:port/db    several sealpostd processes share it
 *   (also postgres://…; any libpq connection URI)
 *
 * An sp_store is one connection: not thread-safe, one per thread. Opening
 * applies the pending schema migrations (numbered, each in a transaction,
 * under a lock so that processes starting together migrate once); a schema
 * newer than this build is SP_ERR_SCHEMA.
 *
 * Writes of one request go in one transaction (sp_store_begin/commit): a
 * request that fails leaves nothing behind. A commit or statement that loses
 * to a concurrent writer is SP_ERR_CONFLICT: roll back and retry the whole
 * request. Every other database failure is SP_ERR_STORE. After any error
 * inside sp_store_begin/commit, roll back: PostgreSQL refuses every further
 * statement of a transaction that saw an error. A failed commit has already
 * rolled back.
 *
 * Without an open transaction, each write call is atomic on its own (a
 * profile with its PII rows, a tenant with everything it owns).
 *
 * Callbacks (sp_store_tenant_fn, sp_store_credential_fn) must not use the
 * sp_store that calls them; the row they get is valid during the call only.
 *
 * Only ciphertext reaches the store: PII fields arrive as vault blobs and
 * blind indexes, keys as KMS-wrapped documents, secrets as keyed hashes.
 */
#ifndef SEALPOST_STORE_H
#define SEALPOST_STORE_H

#include "sealpost/common.h"
#include "sealpost/error.h"
#include "sealpost/keyring.h"
#include "sealpost/vault.h"

SP_BEGIN_DECLS

#define SP_STORE_MAX_URL 1024
#define SP_STORE_MAX_ID 128              /* tenant ids: [a-z0-9_-]{1,64}; profile ids: printable ASCII 1..128 */
#define SP_STORE_MAX_TENANT SP_KEYRING_MAX_NAME
#define SP_STORE_MAX_SETTINGS (64u << 10) /* a tenant's settings document (JSON) */
#define SP_STORE_MAX_ATTRIBUTES (64u << 10)
#define SP_STORE_MAX_EVENT_NAME 128
#define SP_STORE_HASH_BYTES 32            /* keyed hashes of credentials */
#define SP_STORE_MAX_CREDENTIALS_PER_KEY 16
#define SP_STORE_MAX_PROPERTIES (256u << 10) /* an event's properties: PII values grow into base64 blobs */
#define SP_STORE_MAX_BLOB (SP_VAULT_MAX_VALUE + SP_VAULT_OVERHEAD) /* one PII field's vault blob */
#define SP_STORE_MAX_LIST 1000           /* limit of one sp_store_tenant_list page */

typedef struct sp_store sp_store;

SP_API SP_MUST_CHECK sp_error sp_store_open(const char *url, sp_store **out);
SP_API void sp_store_close(sp_store *store);
/* "sqlite" or "postgresql". */
SP_API const char *sp_store_backend_name(const sp_store *store);
/* The schema version after migrations. */
SP_API int sp_store_schema_version(const sp_store *store);
/* Cheap liveness check (for /healthz). */
SP_API SP_MUST_CHECK sp_error sp_store_ping(sp_store *store);

/* One transaction at a time per connection; nesting is
 * SP_ERR_INVALID_ARGUMENT. rollback is safe to call when none is open. */
SP_API SP_MUST_CHECK sp_error sp_store_begin(sp_store *store);
/* A read-only transaction: one snapshot and one lock for many reads (a
 * batch of lookups), never the write lock. Writes inside it are
 * SP_ERR_INVALID_ARGUMENT; end it with commit or rollback. */
SP_API SP_MUST_CHECK sp_error sp_store_begin_read(sp_store *store);
SP_API SP_MUST_CHECK sp_error sp_store_commit(sp_store *store);
SP_API void sp_store_rollback(sp_store *store);

/* ---- tenants ---- */

typedef struct sp_store_tenant {
    char id[SP_STORE_MAX_TENANT + 1];
    char *settings;      /* JSON text owned by the row (sp_store_tenant_clear), NUL-terminated */
    size_t settings_len;
    int64_t created;     /* Unix seconds */
    int64_t updated;
    bool disabled;
} sp_store_tenant;

/* SP_ERR_EXISTS when the id is taken; update is SP_ERR_NOT_FOUND when the
 * id is not. */
SP_API SP_MUST_CHECK sp_error sp_store_tenant_create(sp_store *store, const char *id, const char *settings,
                                                     size_t settings_len, int64_t now);
SP_API SP_MUST_CHECK sp_error sp_store_tenant_update(sp_store *store, const char *id, const char *settings,
                                                     size_t settings_len, bool disabled, int64_t now);
/* SP_ERR_NOT_FOUND when absent. */
SP_API SP_MUST_CHECK sp_error sp_store_tenant_get(sp_store *store, const char *id, sp_store_tenant *out);
SP_API void sp_store_tenant_clear(sp_store_tenant *tenant);
/* Calls fn for each tenant in id order, from after `after` ("" for the
 * start), at most `limit`; a non-OK return from fn stops and is returned. */
typedef sp_error (*sp_store_tenant_fn)(void *arg, const sp_store_tenant *tenant);
SP_API SP_MUST_CHECK sp_error sp_store_tenant_list(sp_store *store, const char *after, size_t limit,
                                                   sp_store_tenant_fn fn, void *arg);
/* Removes the tenant and everything it owns (credentials, profiles, events,
 * its keyring document). SP_ERR_NOT_FOUND when absent. */
SP_API SP_MUST_CHECK sp_error sp_store_tenant_delete(sp_store *store, const char *id);

/* ---- credentials ----
 * A credential is a client access key and an API secret, both stored only as
 * keyed hashes (the caller hashes; the store never sees them). One client
 * access key may carry several secrets with their own expiry, so a new
 * secret is issued before the old one expires. Admin credentials have an
 * empty tenant. */

typedef struct sp_store_credential {
    char id[SP_KEY_VERSION_CHARS + 1];   /* a UUID, public, names the credential in logs and the API */
    char tenant[SP_STORE_MAX_TENANT + 1]; /* "" for an admin credential */
    uint8_t client_key_hash[SP_STORE_HASH_BYTES];
    uint8_t secret_hash[SP_STORE_HASH_BYTES];
    int64_t created;
    int64_t expires;                     /* 0: never */
    int64_t revoked;                     /* 0: not revoked */
} sp_store_credential;

/* SP_ERR_EXISTS for an id already used, SP_ERR_NOT_FOUND for an unknown
 * tenant, SP_ERR_TOO_LARGE past SP_STORE_MAX_CREDENTIALS_PER_KEY under one
 * client key. */
SP_API SP_MUST_CHECK sp_error sp_store_credential_add(sp_store *store, const sp_store_credential *credential);
/* Every credential (revoked and expired included) under one client access
 * key hash, up to cap (SP_STORE_MAX_CREDENTIALS_PER_KEY is enough). */
SP_API SP_MUST_CHECK sp_error sp_store_credential_find(sp_store *store,
                                                       const uint8_t client_key_hash[SP_STORE_HASH_BYTES],
                                                       sp_store_credential *out, size_t cap, size_t *count);
/* tenant "" lists admin credentials. */
typedef sp_error (*sp_store_credential_fn)(void *arg, const sp_store_credential *credential);
SP_API SP_MUST_CHECK sp_error sp_store_credential_list(sp_store *store, const char *tenant,
                                                       sp_store_credential_fn fn, void *arg);
/* SP_ERR_NOT_FOUND when the id does not exist under that tenant. */
SP_API SP_MUST_CHECK sp_error sp_store_credential_revoke(sp_store *store, const char *tenant, const char *id,
                                                         int64_t now);

/* ---- profiles ----
 * A profile is a user of a tenant: an id, non-PII attributes (a JSON
 * object), and PII fields, each a vault blob with its blind index. */

typedef struct sp_store_pii {
    const char *field;                  /* [a-z0-9_]{1,48} */
    const uint8_t *blob;                /* sp_vault_encrypt output */
    size_t blob_len;
    const uint8_t *index;               /* blind index, SP_VAULT_INDEX_MIN..MAX bytes; NULL for unindexed fields */
    size_t index_len;
} sp_store_pii;

typedef struct sp_store_profile {
    const char *tenant;
    const char *id;
    const char *attributes;             /* JSON object text */
    size_t attributes_len;
    const sp_store_pii *pii;            /* replaces these fields; other stored PII fields stay */
    size_t n_pii;
} sp_store_profile;

/* Insert or update by (tenant, id); created tells which. An update merges
 * the attributes at the top level (given keys replace, others stay) and
 * replaces the given PII fields, keeping the others; a profile may hold at
 * most SP_VAULT_MAX_PII_FIELDS fields (SP_ERR_TOO_LARGE past that). Profile
 * ids are printable ASCII (0x20..0x7e), 1..SP_STORE_MAX_ID. The tenant must
 * exist: SP_ERR_NOT_FOUND otherwise. */
SP_API SP_MUST_CHECK sp_error sp_store_profile_upsert(sp_store *store, const sp_store_profile *profile, int64_t now,
                                                      bool *created);
/* The id of the most recently updated profile whose `field` has this blind
 * index (the field's last write decides; ties go to the greater id);
 * SP_ERR_NOT_FOUND when none. */
SP_API SP_MUST_CHECK sp_error sp_store_profile_find_by_index(sp_store *store, const char *tenant, const char *field,
                                                             const uint8_t *index, size_t index_len,
                                                             char id_out[SP_STORE_MAX_ID + 1]);

typedef struct sp_store_pii_row {
    char field[SP_VAULT_MAX_FIELD + 1];
    uint8_t *blob;                      /* owned by the row */
    size_t blob_len;
} sp_store_pii_row;

typedef struct sp_store_profile_row {
    char id[SP_STORE_MAX_ID + 1];
    char *attributes;                   /* owned, NUL-terminated JSON */
    size_t attributes_len;
    sp_store_pii_row pii[SP_VAULT_MAX_PII_FIELDS];
    size_t n_pii;
    int64_t created;
    int64_t updated;
} sp_store_profile_row;

SP_API SP_MUST_CHECK sp_error sp_store_profile_get(sp_store *store, const char *tenant, const char *id,
                                                   sp_store_profile_row *out);
/* Frees and wipes what the row owns. */
SP_API void sp_store_profile_row_clear(sp_store_profile_row *row);
/* Removes the profile, its PII rows and its events; SP_ERR_NOT_FOUND when
 * absent. With SQLite, secure_delete overwrites the freed pages. */
SP_API SP_MUST_CHECK sp_error sp_store_profile_delete(sp_store *store, const char *tenant, const char *id);
SP_API SP_MUST_CHECK sp_error sp_store_profile_count(sp_store *store, const char *tenant, uint64_t *count);

/* ---- events ---- */

typedef struct sp_store_event {
    const char *tenant;
    const char *id;                     /* the client's event id (idempotency) or a fresh UUID */
    const char *profile_id;
    const char *name;                   /* 1..SP_STORE_MAX_EVENT_NAME */
    int64_t ts;                         /* when it happened, Unix milliseconds */
    const char *properties;             /* JSON object text; PII values already replaced by vault blobs */
    size_t properties_len;
} sp_store_event;

/* inserted is false when (tenant, id) was already stored: a retried batch
 * counts once. An unknown profile_id is SP_ERR_NOT_FOUND. */
SP_API SP_MUST_CHECK sp_error sp_store_event_insert(sp_store *store, const sp_store_event *event, int64_t now,
                                                    bool *inserted);
/* profile_id NULL counts the tenant's events. */
SP_API SP_MUST_CHECK sp_error sp_store_event_count(sp_store *store, const char *tenant, const char *profile_id,
                                                   uint64_t *count);

/* ---- the keyring, moved into the store ----
 * Fills *storage so that sp_keyring_open_storage keeps one tenant's keyring
 * document in this database. It opens a connection of its own (so keyring
 * changes never nest inside a request's transaction); the keyring closes it.
 * Changes lock the tenant's row (BEGIN IMMEDIATE / SELECT … FOR UPDATE), so
 * processes sharing the database rotate once, not once each. The tenant is
 * a keyring name ([A-Za-z0-9_.-]{1,64}); it need not be a stored tenant. The
 * generation counts writes from a start taken from the clock when the row
 * is made, so a tenant deleted and made again never repeats a generation a
 * running keyring saw. */
SP_API SP_MUST_CHECK sp_error sp_store_keyring_storage(const char *url, const char *tenant,
                                                       sp_keyring_storage *storage);

/* Moves a keyring file's tenants into the database (each tenant's document
 * once; tenants already stored are left alone) and reports how many. */
SP_API SP_MUST_CHECK sp_error sp_store_import_keyring_file(const char *url, const char *path, size_t *imported);

SP_END_DECLS

#endif
