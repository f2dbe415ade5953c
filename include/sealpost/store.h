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
 * Callbacks (sp_store_tenant_fn, sp_store_credential_fn, and those of
 * channels, campaigns and the outbox) must not use the sp_store that calls
 * them; the row they get is valid during the call only.
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
/* Profiles of one tenant by id, n (1..SP_STORE_MAX_BATCH) at once, in one
 * statement (one round trip on PostgreSQL, one snapshot): out[i] gets
 * ids[i]'s profile as sp_store_profile_get would (clear each with
 * sp_store_profile_row_clear) and found[i] whether it exists; a missing
 * one is not an error. An id may appear more than once. On failure every
 * row is cleared and nothing is found. */
SP_API SP_MUST_CHECK sp_error sp_store_profile_get_many(sp_store *store, const char *tenant,
                                                        const char *const *ids, size_t n,
                                                        sp_store_profile_row *out, bool *found);
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

/* ---- channels ----
 * A channel is a tenant's way to a provider: a kind, the public JSON
 * configuration (endpoint, body template, batching, encryption choices),
 * and the secrets (provider credentials) sealed by the caller with the
 * vault: opaque bytes to the store. Ids are [a-z0-9_-]{1,64}. Channel and
 * campaign times (created, updated) are Unix seconds, like tenants'. */

#define SP_STORE_MAX_NAME 64                     /* channel and campaign ids */
#define SP_STORE_MAX_CHANNEL_CONFIG (64u << 10)
#define SP_STORE_MAX_CHANNEL_SECRETS (64u << 10)
#define SP_STORE_MAX_CAMPAIGN_SPEC (256u << 10)

typedef enum { SP_STORE_CHANNEL_EMAIL = 1, SP_STORE_CHANNEL_SMS = 2 } sp_store_channel_kind;

/* "email", "sms"; "" for anything else. */
SP_API const char *sp_store_channel_kind_name(sp_store_channel_kind kind);
/* SP_ERR_INVALID_ARGUMENT for a name that is not one of those. */
SP_API SP_MUST_CHECK sp_error sp_store_channel_kind_parse(const char *name, sp_store_channel_kind *out);

typedef struct sp_store_channel {
    const char *tenant;
    const char *id;
    sp_store_channel_kind kind;
    const char *config;                 /* JSON text, 1..SP_STORE_MAX_CHANNEL_CONFIG bytes */
    size_t config_len;
    const uint8_t *secrets;             /* sealed blob, ≤ SP_STORE_MAX_CHANNEL_SECRETS; NULL: none */
    size_t secrets_len;
} sp_store_channel;

typedef struct sp_store_channel_row {
    char id[SP_STORE_MAX_NAME + 1];
    sp_store_channel_kind kind;
    char *config;                       /* NUL-terminated JSON */
    size_t config_len;
    uint8_t *secrets;                   /* NULL when none */
    size_t secrets_len;
    int64_t created;
    int64_t updated;
} sp_store_channel_row;

/* Insert, or replace everything but `created` (kind included); created
 * tells which. The tenant must exist: SP_ERR_NOT_FOUND. */
SP_API SP_MUST_CHECK sp_error sp_store_channel_put(sp_store *store, const sp_store_channel *channel, int64_t now,
                                                   bool *created);
/* A copy the row owns (sp_store_channel_row_clear); SP_ERR_NOT_FOUND when
 * absent, and out untouched. */
SP_API SP_MUST_CHECK sp_error sp_store_channel_get(sp_store *store, const char *tenant, const char *id,
                                                   sp_store_channel_row *out);
/* Frees what the row owns, wiping the secrets. */
SP_API void sp_store_channel_row_clear(sp_store_channel_row *row);
/* A tenant's channels in id order after `after` ("" for the start), at
 * most limit (1..SP_STORE_MAX_LIST); the row's pointers are valid during
 * the call only (its config and secrets are not NUL-terminated copies: use
 * the lengths). A non-OK return from fn stops and is returned. */
typedef sp_error (*sp_store_channel_fn)(void *arg, const sp_store_channel_row *channel);
SP_API SP_MUST_CHECK sp_error sp_store_channel_list(sp_store *store, const char *tenant, const char *after,
                                                    size_t limit, sp_store_channel_fn fn, void *arg);
/* SP_ERR_NOT_FOUND when absent. A channel in use is refused with
 * SP_ERR_EXISTS (dependents exist; retrying will not help, unlike
 * SP_ERR_CONFLICT): any campaign names it (delete those first), or a test
 * send through it is still queued or sending. Its finished test sends go
 * with it. */
SP_API SP_MUST_CHECK sp_error sp_store_channel_delete(sp_store *store, const char *tenant, const char *id);

/* ---- campaigns ----
 * A campaign sends one spec (template and audience, JSON) through one
 * channel of its tenant. Its life cycle, every other move being
 * SP_ERR_ILLEGAL_TRANSITION:
 *
 *   draft ⇄ scheduled;  draft, scheduled → queued → sending → done;
 *   draft, scheduled, queued, sending → cancelled;  done, cancelled: final.
 *
 * Setting the state it already has is allowed and changes nothing (two
 * schedulers moving the same campaign both succeed; `was` tells the second
 * it was already done). Cancelling fails its still-queued messages
 * (state 'failed', last_error "cancelled"); messages being sent finish their
 * attempt, and a retry of one becomes 'failed' instead of 'queued'. */

typedef enum {
    SP_STORE_CAMPAIGN_DRAFT = 1,
    SP_STORE_CAMPAIGN_SCHEDULED,
    SP_STORE_CAMPAIGN_QUEUED,
    SP_STORE_CAMPAIGN_SENDING,
    SP_STORE_CAMPAIGN_DONE,
    SP_STORE_CAMPAIGN_CANCELLED
} sp_store_campaign_state;

/* "draft", "scheduled", "queued", "sending", "done", "cancelled"; "" else. */
SP_API const char *sp_store_campaign_state_name(sp_store_campaign_state state);
SP_API SP_MUST_CHECK sp_error sp_store_campaign_state_parse(const char *name, sp_store_campaign_state *out);

typedef struct sp_store_campaign {
    const char *tenant;
    const char *id;
    const char *channel;                /* must exist: SP_ERR_NOT_FOUND otherwise */
    const char *spec;                   /* JSON text, 1..SP_STORE_MAX_CAMPAIGN_SPEC bytes */
    size_t spec_len;
    sp_store_campaign_state state;      /* the first: draft, scheduled or queued */
    int64_t send_at_ms;                 /* Unix milliseconds; 0: none (required when scheduled) */
} sp_store_campaign;

typedef struct sp_store_campaign_row {
    char id[SP_STORE_MAX_NAME + 1];
    char channel[SP_STORE_MAX_NAME + 1];
    char *spec;                         /* NUL-terminated JSON; in a list callback, not terminated: use spec_len */
    size_t spec_len;
    sp_store_campaign_state state;
    int64_t send_at_ms;                 /* 0: none */
    uint64_t total;                     /* messages expanded into the outbox */
    int64_t created;
    int64_t updated;
} sp_store_campaign_row;

/* SP_ERR_EXISTS when the id is taken; SP_ERR_NOT_FOUND for an unknown
 * tenant or channel. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_create(sp_store *store, const sp_store_campaign *campaign,
                                                       int64_t now);
SP_API SP_MUST_CHECK sp_error sp_store_campaign_get(sp_store *store, const char *tenant, const char *id,
                                                    sp_store_campaign_row *out);
SP_API void sp_store_campaign_row_clear(sp_store_campaign_row *row);
typedef sp_error (*sp_store_campaign_fn)(void *arg, const sp_store_campaign_row *campaign);
/* As sp_store_channel_list. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_list(sp_store *store, const char *tenant, const char *after,
                                                     size_t limit, sp_store_campaign_fn fn, void *arg);
/* Scheduled campaigns of every tenant whose send_at_ms ≤ now_ms, earliest
 * first, at most limit (1..SP_STORE_MAX_LIST): fn gets tenant and id. */
typedef sp_error (*sp_store_campaign_due_fn)(void *arg, const char *tenant, const char *id);
SP_API SP_MUST_CHECK sp_error sp_store_campaign_due(sp_store *store, int64_t now_ms, size_t limit,
                                                    sp_store_campaign_due_fn fn, void *arg);
/* Queued campaigns whose expansion (sp_store_campaign_expand_page) last
 * moved before idle_since_s (Unix seconds), longest idle first, at most
 * limit (1..SP_STORE_MAX_LIST): whoever was expanding them stopped (a crash,
 * a failed write), and anyone may go on. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_stale(sp_store *store, int64_t idle_since_s, size_t limit,
                                                      sp_store_campaign_due_fn fn, void *arg);
/* Moves the campaign to `to` (see the life cycle above); was (may be NULL)
 * gets the state before. SP_ERR_NOT_FOUND when absent. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_set_state(sp_store *store, const char *tenant, const char *id,
                                                          sp_store_campaign_state to, int64_t now,
                                                          sp_store_campaign_state *was);
/* Removes a campaign and its messages. A campaign queued or sending is
 * SP_ERR_ILLEGAL_TRANSITION (cancel it first); SP_ERR_NOT_FOUND when absent. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_delete(sp_store *store, const char *tenant, const char *id);

/* ---- the outbox ----
 * One row per message, written before anything is sent, and moved by the
 * workers that send:
 *
 *   queued --claim--> sending --done--> sent
 *                       |  |--retry--> queued (attempts < max) | dead (attempts ≥ max)
 *                       |  |--fail---> failed | dead
 *                       |  '--release (shutdown)--> queued, the attempt not counted
 *                       '--lease expired (a crashed worker)--> claimable again
 *   dead --replay--> queued (attempts reset)
 *
 * A claim hands a row to one owner (a process or worker id,
 * [A-Za-z0-9_.:-]{1,64}) for lease_ms; done, retry and fail change only
 * rows still 'sending' under that owner, so a worker whose lease ran out and
 * was taken over changes nothing (and learns it from the count). On
 * PostgreSQL, processes claim with FOR UPDATE SKIP LOCKED: each row goes to
 * one of them. Every message has a message_id ("msg_" and a UUIDv7), the
 * webhook-id a provider uses to drop the repeat of a message sent again
 * after a crash. All outbox times are Unix milliseconds. Batches are at
 * most SP_STORE_MAX_BATCH rows. Calls without an open transaction are
 * atomic on their own; inside one, they are part of it. */

#define SP_STORE_MAX_BATCH 1000
#define SP_STORE_MAX_OWNER 64
#define SP_STORE_MAX_MESSAGE_ID 64        /* [A-Za-z0-9_.:-]{1,64}; ours are 40 */
#define SP_STORE_MAX_ERROR 128            /* last_error: printable ASCII, an error name and status, no PII */
#define SP_STORE_MAX_AUDIENCE_IDS 1000
#define SP_STORE_MAX_LEASE_MS (24 * 3600 * 1000)

typedef enum {
    SP_STORE_OUTBOX_QUEUED = 1,
    SP_STORE_OUTBOX_SENDING,
    SP_STORE_OUTBOX_SENT,
    SP_STORE_OUTBOX_FAILED,
    SP_STORE_OUTBOX_DEAD
} sp_store_outbox_state;

/* "queued", "sending", "sent", "failed", "dead"; "" else. */
SP_API const char *sp_store_outbox_state_name(sp_store_outbox_state state);

typedef enum {
    SP_STORE_AUDIENCE_ALL = 1,        /* every profile of the tenant */
    SP_STORE_AUDIENCE_IDS,            /* these profile ids (unknown ones are skipped) */
    SP_STORE_AUDIENCE_ATTRIBUTE       /* profiles whose top-level attribute equals a string or a number */
} sp_store_audience_kind;

typedef struct sp_store_audience {
    sp_store_audience_kind kind;
    const char *const *ids;           /* IDS: 1..SP_STORE_MAX_AUDIENCE_IDS profile ids */
    size_t n_ids;
    const char *attribute;            /* ATTRIBUTE: a key, [A-Za-z0-9_.-]{1,64} */
    const char *text;                 /* ATTRIBUTE: the string it must equal ... */
    const char *number;               /* ... or a JSON number (as text) it must equal; exactly one of the two */
} sp_store_audience;

/* Adds one 'queued' message (next attempt now) per profile of the audience
 * to the campaign, through the campaign's channel, in one statement per
 * call (one per id for IDS); a profile already in the campaign is skipped,
 * so expanding again adds only profiles that are new. added (may be NULL)
 * gets how many rows were added; the campaign's total grows by as many.
 * SP_ERR_NOT_FOUND for an unknown campaign; a done or cancelled one is
 * SP_ERR_ILLEGAL_TRANSITION. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_expand(sp_store *store, const char *tenant, const char *campaign,
                                                     const sp_store_audience *audience, int64_t now_ms,
                                                     uint64_t *added);

/* How a queued campaign's audience reaches the outbox without one long
 * transaction: each call, in a transaction of its own (or the caller's),
 * takes the next max_profiles profiles (1..SP_STORE_MAX_EXPAND_PAGE) in id
 * order after the last page, adds a 'queued' message for each that the
 * audience selects and that is neither suppressed nor already in the
 * campaign, and remembers the page's last id in the campaign's row; an IDS
 * audience is one page. The page that reaches the last profile also moves
 * the campaign to sending, and *finished says so (as it does, adding
 * nothing, when the campaign already is sending: a concurrent expander
 * finished it). Where the previous page ended is read from the row, so
 * any number of callers, in any number of processes, may take turns and
 * pick up after a crash; the row lock orders them. A profile made during
 * the expansion is in the audience if its id sorts after the page under
 * way. SP_ERR_ILLEGAL_TRANSITION unless queued or sending (a cancelled
 * campaign stops its expansion there). */
#define SP_STORE_MAX_EXPAND_PAGE 100000
SP_API SP_MUST_CHECK sp_error sp_store_campaign_expand_page(sp_store *store, const char *tenant, const char *campaign,
                                                            const sp_store_audience *audience, size_t max_profiles,
                                                            int64_t now_ms, uint64_t *added, bool *finished);

/* One message without a campaign (a test send) to a stored profile through
 * a stored channel (SP_ERR_NOT_FOUND for either). message_id: NULL makes
 * one; the id used is copied to message_id_out (may be NULL), the row's
 * seq to seq (may be NULL). A message id already used is SP_ERR_EXISTS. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_enqueue(sp_store *store, const char *tenant, const char *channel,
                                                      const char *profile_id, const char *message_id, int64_t now_ms,
                                                      char message_id_out[SP_STORE_MAX_MESSAGE_ID + 1],
                                                      uint64_t *seq);

/* A claimed message; the texts are copies, NUL-terminated. */
typedef struct sp_store_outbox_msg {
    uint64_t seq;
    char tenant[SP_STORE_MAX_TENANT + 1];
    char campaign[SP_STORE_MAX_NAME + 1]; /* "" for a test send */
    char channel[SP_STORE_MAX_NAME + 1];
    char profile_id[SP_STORE_MAX_ID + 1];
    char message_id[SP_STORE_MAX_MESSAGE_ID + 1];
    uint32_t attempts;                    /* this one included */
} sp_store_outbox_msg;

typedef sp_error (*sp_store_outbox_fn)(void *arg, const sp_store_outbox_msg *msg);

/* A page's messages claimed as they are made: the sender that expands a
 * campaign hands each page straight to its workers, so a message costs
 * one write before it is sent instead of two (the insert and the claim's
 * update). */
typedef struct sp_store_lease {
    const char *owner;     /* as sp_store_outbox_claim's */
    int64_t lease_ms;      /* 1..SP_STORE_MAX_LEASE_MS from now_ms */
    sp_store_outbox_fn fn; /* each message added, before the page commits; must not use the store */
    void *arg;
} sp_store_lease;

/* sp_store_campaign_expand_page, but each message added is 'sending' under
 * lease->owner until now_ms + lease->lease_ms with its first attempt, as a
 * claim would leave it, and is handed to lease->fn. Should the owner not
 * settle it in time, its lease runs out and any claim takes it. When the
 * call fails (fn's error included, which stops it), nothing was added:
 * drop what fn got. */
SP_API SP_MUST_CHECK sp_error sp_store_campaign_expand_page_leased(sp_store *store, const char *tenant,
                                                                   const char *campaign,
                                                                   const sp_store_audience *audience,
                                                                   size_t max_profiles, int64_t now_ms,
                                                                   const sp_store_lease *lease, uint64_t *added,
                                                                   bool *finished);

/* Claims up to max (1..SP_STORE_MAX_BATCH) claimable messages, earliest
 * next attempt first: 'queued' ones due by now_ms, and 'sending' ones whose
 * lease has run out. Each becomes 'sending' under owner until now_ms +
 * lease_ms (1..SP_STORE_MAX_LEASE_MS) with one more attempt, and is handed
 * to fn, in no particular order, before the claim commits; n (may be NULL)
 * gets how many. fn must not use the store. When the call fails (fn's
 * error included, which stops it), nothing was claimed: drop what fn got. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_claim(sp_store *store, const char *owner, int64_t now_ms,
                                                    int64_t lease_ms, size_t max, sp_store_outbox_fn fn, void *arg,
                                                    size_t *n);
/* Extends the lease of messages still 'sending' under owner to until_ms
 * (their next attempt too, as a claim sets it), for messages that waited
 * before their owner got to them; changed (may be NULL) gets how many. A
 * lease that ran out may already be someone else's: renew in time. n is
 * 1..SP_STORE_MAX_BATCH. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_renew(sp_store *store, const char *owner, const uint64_t *seqs,
                                                    size_t n, int64_t until_ms, uint64_t *changed);
/* The messages were delivered: 'sent' at now_ms. Only rows 'sending' under
 * owner change; changed (may be NULL) gets how many did. n is
 * 1..SP_STORE_MAX_BATCH. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_done(sp_store *store, const char *owner, const uint64_t *seqs,
                                                   size_t n, int64_t now_ms, uint64_t *changed);
/* A failed attempt to try again at next_attempt_ms, or 'dead' when the
 * row's attempts have reached max_attempts (≥ 1). error: what went wrong,
 * for operators (e.g. "SP_ERR_PROVIDER_UNAVAILABLE 503"), never a payload
 * or PII; provider_status: the provider's HTTP status, 0 when none. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_retry(sp_store *store, const char *owner, const uint64_t *seqs,
                                                    size_t n, int64_t next_attempt_ms, const char *error,
                                                    int provider_status, uint32_t max_attempts, int64_t now_ms,
                                                    uint64_t *changed);
/* A final failure: state is SP_STORE_OUTBOX_FAILED (refused for good: not
 * replayed) or SP_STORE_OUTBOX_DEAD (dead-lettered: replayable). */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_fail(sp_store *store, const char *owner, const uint64_t *seqs,
                                                   size_t n, sp_store_outbox_state state, const char *error,
                                                   int provider_status, int64_t now_ms, uint64_t *changed);
/* The attempt did not happen for a reason on our side, not the
 * provider's (the tenant's KMS unavailable, its key access revoked): back
 * to 'queued' at next_attempt_ms with the attempt not counted, so a long
 * outage never dead-letters a message; error is kept for operators. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_defer(sp_store *store, const char *owner, const uint64_t *seqs,
                                                    size_t n, int64_t next_attempt_ms, const char *error,
                                                    int64_t now_ms, uint64_t *changed);
/* Graceful shutdown: every row 'sending' under owner back to 'queued', due
 * now_ms, the attempt it was claimed for not counted. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_release(sp_store *store, const char *owner, int64_t now_ms,
                                                      uint64_t *changed);
/* Dead messages of the tenant (of one campaign, or every one when campaign
 * is NULL, test sends included) back to 'queued', due now_ms, attempts 0. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_replay(sp_store *store, const char *tenant, const char *campaign,
                                                     int64_t now_ms, uint64_t *changed);

typedef struct sp_store_outbox_counts {
    uint64_t queued, sending, sent, failed, dead;
} sp_store_outbox_counts;

/* Messages per state, of one campaign or (campaign NULL) of the tenant. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_counts_get(sp_store *store, const char *tenant, const char *campaign,
                                                         sp_store_outbox_counts *out);

/* Messages queued or being sent, of every tenant: the outbox's backlog,
 * counted through the claim index, so its cost follows the backlog and not
 * the outbox's history. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_live(sp_store *store, uint64_t *count);

typedef struct sp_store_outbox_row {
    uint64_t seq;
    char tenant[SP_STORE_MAX_TENANT + 1];
    char campaign[SP_STORE_MAX_NAME + 1]; /* "" for a test send */
    char channel[SP_STORE_MAX_NAME + 1];
    char profile_id[SP_STORE_MAX_ID + 1];
    char message_id[SP_STORE_MAX_MESSAGE_ID + 1];
    sp_store_outbox_state state;
    uint32_t attempts;
    int64_t next_attempt;
    char lease_owner[SP_STORE_MAX_OWNER + 1]; /* the last claimer; "" when never claimed */
    int64_t lease_until;                       /* 0 when never claimed */
    char last_error[SP_STORE_MAX_ERROR + 1];   /* "" when none */
    int provider_status;
    int64_t created;
    int64_t updated;
    int64_t sent_at;                           /* 0 until sent */
} sp_store_outbox_row;

/* One message by its id (a provider's callback names it); SP_ERR_NOT_FOUND
 * when none, out untouched. */
SP_API SP_MUST_CHECK sp_error sp_store_outbox_get(sp_store *store, const char *message_id, sp_store_outbox_row *out);

/* ---- callbacks and delivery tracking ----
 * What providers report back about sent messages. A message's delivery
 * state is kept beside its outbox state:
 *
 *   outbox:   queued -> sending -> sent | failed | dead   (our side)
 *   delivery: none -> delivered | failed | bounced          (the provider's)
 *
 * and what a user sees is the delivery state once there is one, else the
 * outbox state. Reports may come late, twice or out of order (a delivery
 * report before our own 'sent' is recorded, a bounce after a delivery): the
 * delivery state follows the event with the latest event time, a tie going
 * to the graver one (bounced over failed over delivered), then to the
 * greater failure code, so the order of arrival never changes the outcome.
 * Engagement (opened, clicked, replied, unsubscribed, complained) keeps the
 * first time of each. An open, a click or a reply on a message without a
 * delivery state makes it delivered at the engagement's time; engagement is
 * never weighed against reports otherwise, so the one place arrival order
 * still shows is a message with both (its delivery_at, or a failure report
 * contradicting an open). An unsubscribe or a complaint sets its own time
 * only. Counts are counted from these columns, never incremented, so no
 * event is counted twice.
 *
 * A provider's retries are recognised by webhook-id: callback_seen
 * remembers each one for at least SP_STORE_CALLBACK_KEEP_MS. */

#define SP_STORE_CALLBACK_KEEP_MS ((int64_t)4 * 24 * 3600 * 1000) /* the shortest keep allowed */
#define SP_STORE_MAX_WEBHOOK_ID 128 /* printable ASCII without spaces */
#define SP_STORE_MAX_REASON 32      /* suppression reasons: [a-z_]{1,32} */

/* Whether the tenant has seen this webhook-id (a read: no transaction
 * needed). For the cheap check before a callback is decrypted. */
SP_API SP_MUST_CHECK sp_error sp_store_callback_seen(sp_store *store, const char *tenant, const char *webhook_id,
                                                     bool *seen);
/* Records a webhook-id at now_ms; fresh (never NULL) is false when it was
 * recorded already, and then nothing changes: the caller drops the
 * callback. Run it in the transaction that applies the callback's events,
 * so the two are kept or lost together. */
SP_API SP_MUST_CHECK sp_error sp_store_callback_record(sp_store *store, const char *tenant, const char *webhook_id,
                                                       int64_t now_ms, bool *fresh);
/* Forgets webhook-ids recorded before before_ms (every tenant's); removed
 * (may be NULL) counts them. At most `limit` (1..100000) per call, so a
 * large backlog never holds the write lock for long: call again while
 * removed == limit. */
SP_API SP_MUST_CHECK sp_error sp_store_callback_prune(sp_store *store, int64_t before_ms, size_t limit,
                                                      uint64_t *removed);

typedef enum {
    SP_STORE_DELIVERY_NONE = 0,
    SP_STORE_DELIVERY_DELIVERED = 1,
    SP_STORE_DELIVERY_FAILED = 2,
    SP_STORE_DELIVERY_BOUNCED = 3,
} sp_store_delivery;

/* "", "delivered", "failed", "bounced". */
SP_API const char *sp_store_delivery_name(sp_store_delivery delivery);

typedef enum {
    SP_STORE_EVENT_DELIVERED = 1,
    SP_STORE_EVENT_FAILED,       /* delivery failed (soft bounces too) */
    SP_STORE_EVENT_BOUNCED,      /* hard bounce */
    SP_STORE_EVENT_OPENED,
    SP_STORE_EVENT_CLICKED,
    SP_STORE_EVENT_REPLIED,
    SP_STORE_EVENT_UNSUBSCRIBED,
    SP_STORE_EVENT_COMPLAINED,   /* marked as spam */
} sp_store_event_kind;

typedef struct sp_store_delivery_event {
    const char *message_id;  /* an outbox message id of the tenant */
    sp_store_event_kind kind;
    int64_t ts_ms;           /* the event's time (Unix ms; > 0) */
    int code;                /* failure code for FAILED/BOUNCED (0..99999); ignored for the others */
} sp_store_delivery_event;

/* What applying one event did. */
typedef enum {
    SP_STORE_APPLIED_CHANGED = 1,  /* the message's state or engagement moved */
    SP_STORE_APPLIED_SAME = 2,     /* known message, nothing new (a repeat, or older than what is there) */
    SP_STORE_APPLIED_UNKNOWN = 3,  /* no such message for this tenant: ignored */
} sp_store_applied;

/* Applies events (1..SP_STORE_MAX_BATCH) to the tenant's messages sent
 * through `channel` (NULL: any of its channels; a callback names its
 * channel, and one channel's provider must not report on another's
 * messages: those are UNKNOWN to it), in order, by the rules above; encrypted says whether the callback that
 * carried them was sealed (kept per message for the test-send report).
 * results (may be NULL) gets one sp_store_applied per event. Atomic: runs
 * in the caller's transaction or one of its own. Each event is one indexed
 * read of its message (locked on PostgreSQL) and one write of it; every
 * known message's callback_at and callback_encrypted are written, whether
 * or not the event changed anything else. */
SP_API SP_MUST_CHECK sp_error sp_store_delivery_apply(sp_store *store, const char *tenant, const char *channel,
                                                      const sp_store_delivery_event *events, size_t n,
                                                      bool encrypted, int64_t now_ms, sp_store_applied *results);

/* The profile behind a message and its channel's kind, for suppression
 * (SP_ERR_NOT_FOUND when the tenant has no such message). */
SP_API SP_MUST_CHECK sp_error sp_store_message_profile(sp_store *store, const char *tenant, const char *message_id,
                                                       char profile_id[SP_STORE_MAX_ID + 1],
                                                       sp_store_channel_kind *kind);

/* Stops sends of one kind (email or SMS) to a profile, with a reason
 * ([a-z_]{1,32}, e.g. "hard_bounce", "unsubscribed", "complained",
 * "opt_out"): its messages of that kind still 'queued' become 'failed' with
 * last_error "suppressed: <reason>" (cancelled, may be NULL, counts them),
 * and expanding a campaign skips the profile from now on (test sends and
 * messages already claimed are not stopped). Suppressing again keeps the
 * first reason and time, and cancels what has been queued since. Unknown
 * profile: SP_ERR_NOT_FOUND, without spoiling an open transaction, so the
 * caller may go on with it. A profile's suppressions go with it. */
SP_API SP_MUST_CHECK sp_error sp_store_suppress(sp_store *store, const char *tenant, const char *profile_id,
                                                sp_store_channel_kind kind, const char *reason, int64_t now_ms,
                                                uint64_t *cancelled);
/* Whether a profile is suppressed for a kind; reason (may be NULL) gets why. */
SP_API SP_MUST_CHECK sp_error sp_store_suppressed(sp_store *store, const char *tenant, const char *profile_id,
                                                  sp_store_channel_kind kind, bool *suppressed,
                                                  char reason[SP_STORE_MAX_REASON + 1]);
/* Lifts a suppression (a user who opts back in); SP_ERR_NOT_FOUND when there was none. */
SP_API SP_MUST_CHECK sp_error sp_store_unsuppress(sp_store *store, const char *tenant, const char *profile_id,
                                                  sp_store_channel_kind kind);

/* One message with its delivery tracking. */
typedef struct sp_store_message_status {
    sp_store_outbox_row outbox;
    sp_store_delivery delivery;
    int64_t delivery_at;     /* event time (ms) of the event that set delivery; 0 if none */
    int failure_code;        /* of the failure or bounce that set delivery; 0 if none */
    int64_t opened_at, clicked_at, replied_at, unsubscribed_at, complained_at; /* first times (ms), 0 if never */
    int64_t callback_at;     /* when the last callback about it arrived (ms); 0 if none */
    bool callback_encrypted; /* whether that callback was sealed */
} sp_store_message_status;

/* SP_ERR_NOT_FOUND when the tenant has no such message. */
SP_API SP_MUST_CHECK sp_error sp_store_message_status_get(sp_store *store, const char *tenant,
                                                          const char *message_id, sp_store_message_status *out);

/* A campaign's (or, campaign NULL, the tenant's test sends') messages by
 * what a user sees: each message counts once among queued..bounced ('failed'
 * both when our side gave up and when the provider reported a failure);
 * total counts them all, and each engagement counts the messages that have
 * its time. An unknown campaign has no messages: all zero. */
typedef struct sp_store_campaign_stats {
    uint64_t total;
    uint64_t queued, sending, sent, delivered, failed, bounced, dead;
    uint64_t opened, clicked, replied, unsubscribed, complained;
} sp_store_campaign_stats;

SP_API SP_MUST_CHECK sp_error sp_store_campaign_stats_get(sp_store *store, const char *tenant, const char *campaign,
                                                          sp_store_campaign_stats *out);
/* Failed and bounced messages (by delivery state) per failure code, codes
 * in increasing order. fn must not use the store. */
typedef sp_error (*sp_store_code_count_fn)(void *arg, int code, uint64_t failed, uint64_t bounced);
SP_API SP_MUST_CHECK sp_error sp_store_campaign_failure_codes(sp_store *store, const char *tenant,
                                                              const char *campaign, sp_store_code_count_fn fn,
                                                              void *arg);

/* Activity over time: per bucket of bucket_ms (1000 .. 31 days in ms)
 * starting at a multiple of bucket_ms, how many messages were sent
 * (sent_at), reached each delivery state (delivery_at) and were first
 * opened, clicked, replied to in it. Buckets with nothing are left out; at
 * most max_buckets (1..10000), the earliest first. fn must not use the
 * store. */
typedef struct sp_store_stats_bucket {
    int64_t start_ms;
    uint64_t sent, delivered, failed, bounced, opened, clicked, replied;
} sp_store_stats_bucket;
typedef sp_error (*sp_store_bucket_fn)(void *arg, const sp_store_stats_bucket *bucket);
SP_API SP_MUST_CHECK sp_error sp_store_campaign_timeline(sp_store *store, const char *tenant, const char *campaign,
                                                         int64_t bucket_ms, size_t max_buckets,
                                                         sp_store_bucket_fn fn, void *arg);

SP_END_DECLS

#endif
