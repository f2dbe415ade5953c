/*
 * What the store's dispatcher (store.c) asks of a database driver.
 *
 * The store's operations are written once, in store.c, over a handful of
 * numbered statements; a driver (store_sqlite.c, store_pg.c) supplies the
 * SQL text of each number in its own dialect, its schema migrations, and the
 * few primitives below: connect, run a statement with bound parameters,
 * walk its rows, read columns. Statements are prepared once per connection,
 * the first time they run, and reused; nothing on the per-row path of an
 * ingestion batch allocates in the dispatcher.
 *
 * One statement is in flight at a time per connection: run, step through
 * its rows, finish. Errors come back already mapped: SP_ERR_CONFLICT (busy,
 * serialization failure, deadlock), SP_ERR_EXISTS (a unique key taken),
 * SP_ERR_NOT_FOUND (a foreign key with no parent), SP_ERR_NO_MEMORY,
 * SP_ERR_INVALID_ARGUMENT (text the database refuses as encoding), and
 * SP_ERR_STORE for everything else.
 */
#ifndef SP_STORE_INTERNAL_H
#define SP_STORE_INTERNAL_H

#include "core/sp_core.h"
#include "sealpost/store.h"

/* The statements, the same logical SQL in every dialect. */
typedef enum sp_store_q {
    /* scripts: no parameters, no rows (driver->script) */
    SP_Q_BEGIN,         /* a write transaction */
    SP_Q_BEGIN_READ,    /* a read-only snapshot */
    SP_Q_COMMIT,
    SP_Q_ROLLBACK,
    SP_Q_MIGRATE_BEGIN, /* a write transaction holding the migration lock */
    SP_Q_VERSION_TABLE, /* creates schema_version when missing */
    SP_Q__SCRIPTS,
    /* statements (driver->run) */
    SP_Q_VERSION_GET = SP_Q__SCRIPTS, /* -> max version or 0 */
    SP_Q_VERSION_ADD,                 /* version, applied */
    SP_Q_PING,
    SP_Q_TENANT_INSERT,        /* id, settings, now */
    SP_Q_TENANT_UPDATE,        /* id, settings, disabled, now */
    SP_Q_TENANT_GET,           /* id -> id, settings, created, updated, disabled */
    SP_Q_TENANT_LIST,          /* after, limit -> as get */
    SP_Q_TENANT_DELETE,        /* id (profiles, PII rows, events cascade) */
    SP_Q_TENANT_DELETE_CREDS,  /* id */
    SP_Q_TENANT_DELETE_KEYRING,/* id */
    SP_Q_TENANT_EXISTS,        /* id -> 1 */
    SP_Q_CRED_COUNT_KEY,       /* hash -> count */
    SP_Q_CRED_INSERT,          /* id, tenant, key hash, secret hash, created, expires, revoked */
    SP_Q_CRED_FIND,            /* hash, limit -> id, tenant, key hash, secret hash, created, expires, revoked */
    SP_Q_CRED_LIST,            /* tenant -> as find */
    SP_Q_CRED_REVOKE,          /* tenant, id, now */
    SP_Q_PROFILE_INSERT,       /* tenant, id, attributes, now */
    SP_Q_PROFILE_MERGE,        /* tenant, id, attributes, now */
    SP_Q_PII_UPSERT,           /* tenant, profile, field, blob, index or NULL, now */
    SP_Q_PII_UPSERT2,          /* as SP_Q_PII_UPSERT, then field, blob, index of a second row */
    SP_Q_PII_COUNT,            /* tenant, profile -> count */
    SP_Q_PROFILE_FIND_INDEX,   /* tenant, field, index -> id */
    SP_Q_PROFILE_GET,          /* tenant, id -> id, attributes, created, updated */
    SP_Q_PII_GET,              /* tenant, profile -> field, blob */
    SP_Q_PROFILE_GET_MANY,     /* tenant, ids (text array) -> index, id, attributes, created, updated, field,
                                  blob (a row per PII field, NULLs for none), by index then field */
    SP_Q_PROFILE_DELETE,       /* tenant, id (PII rows and events cascade) */
    SP_Q_PROFILE_COUNT,        /* tenant -> count */
    SP_Q_EVENT_INSERT,         /* tenant, id, profile, name, ts, properties, now */
    SP_Q_EVENT_COUNT,          /* tenant -> count */
    SP_Q_EVENT_COUNT_PROFILE,  /* tenant, profile -> count */
    SP_Q_KEYRING_ENSURE,       /* tenant, first generation */
    SP_Q_KEYRING_LOCK,         /* tenant -> generation (row-locked where the dialect can) */
    SP_Q_KEYRING_READ,         /* tenant -> generation, doc */
    SP_Q_KEYRING_GENERATION,   /* tenant -> generation */
    SP_Q_KEYRING_WRITE,        /* tenant, doc */
    /* migration 2: channels, campaigns, the outbox */
    SP_Q_CHANNEL_INSERT,       /* tenant, id, kind, config, secrets or NULL, now (DO NOTHING on a taken id) */
    SP_Q_CHANNEL_UPDATE,       /* tenant, id, kind, config, secrets or NULL, now */
    SP_Q_CHANNEL_GET,          /* tenant, id -> id, kind, config, secrets, created, updated */
    SP_Q_CHANNEL_LIST,         /* tenant, after, limit -> as get */
    SP_Q_CHANNEL_LOCK,         /* tenant, id -> 1 (row-locked where the dialect can) */
    SP_Q_CHANNEL_USERS,        /* tenant, id -> campaigns using it */
    SP_Q_CHANNEL_LIVE,         /* tenant, id -> its queued or sending test sends */
    SP_Q_CHANNEL_DELETE_SENDS, /* tenant, id: its finished test sends */
    SP_Q_CHANNEL_DELETE,       /* tenant, id */
    SP_Q_CAMPAIGN_INSERT,      /* tenant, id, channel, spec, state, send_at (0: NULL), now */
    SP_Q_CAMPAIGN_GET,         /* tenant, id -> id, channel, spec, state, send_at, total, created, updated */
    SP_Q_CAMPAIGN_LIST,        /* tenant, after, limit -> as get */
    SP_Q_CAMPAIGN_DUE,         /* now, limit -> tenant, id (scheduled, send_at <= now) */
    SP_Q_CAMPAIGN_STALE,       /* updated before, limit -> tenant, id (queued, its expansion idle) */
    SP_Q_CAMPAIGN_LOCK,        /* tenant, id -> state, channel, send_at, expanded_to (row-locked where the
                                  dialect can) */
    SP_Q_CAMPAIGN_EXPANDED,    /* tenant, id, expanded_to, added, now */
    SP_Q_CAMPAIGN_SET_STATE,   /* tenant, id, state, now */
    SP_Q_CAMPAIGN_ADD_TOTAL,   /* tenant, id, added, now */
    SP_Q_CAMPAIGN_CANCEL_SENDS,/* tenant, id, now: its queued messages -> failed */
    SP_Q_CAMPAIGN_DELETE,      /* tenant, id (its messages cascade) */
    SP_Q_OUTBOX_EXPAND_ALL,    /* tenant, campaign, channel, now */
    SP_Q_OUTBOX_EXPAND_ID,     /* tenant, campaign, channel, now, profile id */
    SP_Q_OUTBOX_EXPAND_TEXT,   /* tenant, campaign, channel, now, JSON path/key, text */
    SP_Q_OUTBOX_EXPAND_NUMBER, /* tenant, campaign, channel, now, JSON path/key, number as text */
    SP_Q_PROFILE_PAGE_END,     /* tenant, after, n - 1 -> the n-th profile id after `after` */
    SP_Q_PROFILE_LAST,         /* tenant, after -> the last profile id, if after `after` */
    /* the expansions over the profile ids in (from, to]: */
    SP_Q_OUTBOX_EXPAND_ALL_RANGE,    /* tenant, campaign, channel, now, from, to */
    SP_Q_OUTBOX_EXPAND_TEXT_RANGE,   /* tenant, campaign, channel, now, key, text, from, to */
    SP_Q_OUTBOX_EXPAND_NUMBER_RANGE, /* tenant, campaign, channel, now, key, number, from, to */
    /* the same, each message leased at once ('sending', one attempt) to
     * ?9/$9 until ?10/$10 (parameters 5..8 as above, unused ones bound to
     * anything) -> seq, profile id, message id of each row added, where
     * SP_Q_OUTBOX_ADDED_AFTER is NULL (RETURNING) */
    SP_Q_OUTBOX_EXPAND_ID_LEASED,
    SP_Q_OUTBOX_EXPAND_ALL_LEASED,
    SP_Q_OUTBOX_EXPAND_TEXT_LEASED,
    SP_Q_OUTBOX_EXPAND_NUMBER_LEASED,
    /* where one writer at a time makes seqs in order (SQLite), the rows a
     * transaction added are those after the largest seq before: reading
     * them back is cheaper than RETURNING, which SQLite copies through a
     * temporary table. NULL elsewhere. */
    SP_Q_OUTBOX_SEQ_MAX,      /* -> the largest seq, 0 when none */
    SP_Q_OUTBOX_ADDED_AFTER,  /* seq -> seq, profile id, message id of each row after it */
    SP_Q_OUTBOX_ENQUEUE,       /* tenant, channel, profile, message id, now -> seq */
    SP_Q_OUTBOX_CLAIM,         /* owner, now, lease until, max -> seq, tenant, campaign, channel, profile,
                                  message id, attempts */
    SP_Q_OUTBOX_DONE_ONE,      /* owner, seq, now */
    SP_Q_OUTBOX_DONE_MANY,     /* owner, seqs (array), now; NULL in dialects without arrays */
    SP_Q_OUTBOX_RENEW_ONE,     /* owner, seq, lease until */
    SP_Q_OUTBOX_RENEW_MANY,    /* owner, seqs (array), lease until */
    SP_Q_OUTBOX_RETRY_ONE,     /* owner, seq, next attempt, error, status, max attempts, now */
    SP_Q_OUTBOX_RETRY_MANY,    /* as one, seqs (array) */
    SP_Q_OUTBOX_FAIL_ONE,      /* owner, seq, state, error, status, now */
    SP_Q_OUTBOX_FAIL_MANY,     /* as one, seqs (array) */
    SP_Q_OUTBOX_RELEASE,       /* owner, now */
    SP_Q_OUTBOX_REPLAY,        /* tenant, now */
    SP_Q_OUTBOX_REPLAY_CAMPAIGN, /* tenant, now, campaign */
    SP_Q_OUTBOX_COUNTS,        /* tenant -> state, count */
    SP_Q_OUTBOX_LIVE,          /* -> messages queued or sending, every tenant's */
    SP_Q_OUTBOX_COUNTS_CAMPAIGN, /* tenant, campaign -> state, count */
    SP_Q_OUTBOX_GET,           /* message id -> seq, tenant, campaign, channel, profile, message id, state,
                                  attempts, next attempt, lease owner, lease until, error, status, created,
                                  updated, sent at */
    SP_Q_OUTBOX_DEFER_ONE,     /* owner, seq, next attempt, error, now */
    SP_Q_OUTBOX_DEFER_MANY,    /* as one, seqs (array) */
    /* migration 3: callbacks, delivery tracking, suppressions */
    SP_Q_CALLBACK_SEEN,        /* tenant, webhook id -> 1 */
    SP_Q_CALLBACK_RECORD,      /* tenant, webhook id, now (DO NOTHING when recorded) */
    SP_Q_CALLBACK_PRUNE,       /* before, limit */
    SP_Q_DELIVERY_READ,        /* tenant, message id -> seq, delivery, delivery at, failure code, opened, clicked,
                                  replied, unsubscribed, complained (row-locked where the dialect can) */
    SP_Q_DELIVERY_WRITE,       /* seq, delivery or NULL, delivery at, failure code, opened, clicked, replied,
                                  unsubscribed, complained (times: 0 is NULL), callback at, encrypted */
    SP_Q_MESSAGE_PROFILE,      /* tenant, message id -> profile, channel kind */
    SP_Q_MESSAGE_STATUS,       /* tenant, message id -> as SP_Q_OUTBOX_GET, then delivery, delivery at,
                                  failure code, opened, clicked, replied, unsubscribed, complained, callback at,
                                  encrypted */
    SP_Q_SUPPRESS_INSERT,      /* tenant, profile, kind, reason, now (DO NOTHING when suppressed) */
    SP_Q_SUPPRESS_CANCEL,      /* tenant, profile, kind, now, last_error: its queued messages of that kind */
    SP_Q_SUPPRESSED,           /* tenant, profile, kind -> reason */
    SP_Q_UNSUPPRESS,           /* tenant, profile, kind */
    SP_Q_STATS,                /* tenant, campaign -> shown state, count, opened, clicked, replied, unsubscribed,
                                  complained (counts) */
    SP_Q_STATS_TESTS,          /* tenant -> as stats, over the test sends */
    SP_Q_FAILURE_CODES,        /* tenant, campaign -> code, failed, bounced (in code order) */
    SP_Q_FAILURE_CODES_TESTS,  /* tenant -> as codes */
    SP_Q_TIMELINE,             /* tenant, campaign, bucket ms, max buckets -> start, sent, delivered, failed,
                                  bounced, opened, clicked, replied */
    SP_Q_TIMELINE_TESTS,       /* tenant, bucket ms, max buckets -> as timeline */
    SP_Q__COUNT
} sp_store_q;

#define SP_STORE_MAX_PARAMS 12

/* SP_STORE_INT_ARRAY: data points at len int64_t values, bound as one
 * bigint[] (only statements a dialect has an array form of: *_MANY).
 * SP_STORE_TEXT_ARRAY: data points at len (1..SP_STORE_MAX_BATCH) const
 * char * strings of printable ASCII, at most SP_STORE_MAX_ID bytes each,
 * bound as one text[] (SQLite: a JSON array for json_each). A statement
 * has at most one array parameter. */
typedef enum { SP_STORE_TEXT, SP_STORE_BLOB, SP_STORE_INT, SP_STORE_INT_ARRAY, SP_STORE_TEXT_ARRAY } sp_store_ptype;

/* One bound parameter; data NULL (text or blob) binds SQL NULL. */
typedef struct sp_store_param {
    sp_store_ptype type;
    const void *data;
    size_t len;
    int64_t i;
} sp_store_param;

typedef struct sp_store_driver {
    const char *name;                     /* "sqlite", "postgresql" */
    const char *const *sql;               /* SP_Q__COUNT texts; a *_MANY may be NULL (no array parameters) */
    const char *const *migrations;        /* migrations[i] takes the schema to version i + 1 */
    size_t n_migrations;
    /* conninfo: the URL without the driver's scheme where it has one.
     * durable: every commit reaches the disk (the keyring's connection). */
    sp_error (*connect)(const char *conninfo, bool durable, void **db);
    void (*disconnect)(void *db);
    sp_error (*script)(void *db, const char *sql);
    /* Runs statement q; changes (may be NULL) gets the rows it wrote. Rows
     * are read with step and the columns; finish ends it, also after an
     * error. */
    sp_error (*run)(void *db, sp_store_q q, const sp_store_param *params, size_t n, uint64_t *changes);
    sp_error (*step)(void *db, bool *row);
    int64_t (*col_int)(void *db, int col);
    /* Text or blob bytes, valid until the next step or finish; NULL for SQL
     * NULL (an empty value is a non-NULL pointer with len 0). */
    const uint8_t *(*col_bytes)(void *db, int col, size_t *len);
    void (*finish)(void *db);
    /* After a lost connection: reconnects when it can (outside a
     * transaction only). */
    sp_error (*ping)(void *db);
} sp_store_driver;

SP_INTERNAL extern const sp_store_driver sp_store_sqlite_driver;
/* sqlite_vfs.c: the name of the VFS that writes a commit's WAL frames at
 * once, registered on first call; NULL when it could not be (connections
 * then use SQLite's default VFS). */
#define SP_SQLITE_VFS "sp-wal"
SP_INTERNAL const char *sp_sqlite_vfs(void);
/* sqlite_pcache.c: SQLite's page cache behind a tighter bound on what a
 * truncation must drop; false when SQLite was initialised before (its own
 * cache then serves unchanged). The counts, for tests: truncations passed
 * on to SQLite's cache, truncations spared, and pages moved past the
 * bound. */
SP_INTERNAL bool sp_sqlite_pcache_install(void);
SP_INTERNAL void sp_sqlite_pcache_counts(uint64_t *passed, uint64_t *spared, uint64_t *moved);
/* store_sqlite.c: the WAL length (frames) that has the checkpointer copy
 * it back and restart it; 0 restores the default. For tests. */
SP_INTERNAL void sp_sqlite_set_checkpoint_frames(int frames);
SP_INTERNAL extern const sp_store_driver sp_store_pg_driver;

struct sp_store {
    const sp_store_driver *drv;
    void *db;
    int version;
    bool in_tx;
    bool read_only; /* the open transaction came from sp_store_begin_read */
};

#endif
