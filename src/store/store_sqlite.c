/*
 * The store's SQLite driver: `sqlite:PATH`, one file, embedded.
 *
 * The file is made 0600 before SQLite opens it (SQLite gives its -wal and
 * -shm files the database's mode), and an existing one others can read is
 * refused, as key files are. Each connection runs in WAL mode with
 * synchronous=NORMAL (FULL for the keyring's connection, whose commits are
 * key material that must survive a power cut), foreign keys on,
 * secure_delete on (a deleted profile's pages are overwritten, not just
 * unlinked), and a 5 s busy timeout: a writer that waited that long gets
 * SP_ERR_CONFLICT. Write transactions start with BEGIN IMMEDIATE, so two
 * writers queue at the start instead of deadlocking on a lock upgrade.
 * Writers of one process queue on a mutex per database file before that
 * (the write gate): SQLite's busy handler waits by sleeping 1, 2, 5 … 100
 * ms, so two threads taking turns through it would spend most of their time
 * asleep; a mutex hands the lock over the moment it is free. The busy
 * handler is left for writers in other processes. Holding the gate, a write
 * transaction runs on the process's one writer connection rather than the
 * caller's: SQLite drops a connection's page cache whenever another one has
 * written, so separate writers would re-read every page they touch.
 *
 * Connections go through the VFS of sqlite_vfs.c, which writes a
 * commit's WAL frames in a few large writes instead of two per page.
 *
 * Checkpoints (copying the WAL back into the database file, and its fsync)
 * run on a thread of their own per file, with a connection of its own, in
 * PASSIVE mode, so they never hold the write lock and a request's commit
 * never pays for one. Connections opened before it started, or when it could
 * not start, keep SQLite's automatic checkpoint.
 *
 * Statements are prepared once per connection, the first time they run,
 * and reset after each use; binding uses the caller's buffers
 * (SQLITE_STATIC), so a batch of upserts allocates nothing of ours per row.
 * SQLite has no array parameters: the outbox's batch updates (the *_MANY
 * statements) take their seqs as one JSON array text walked by json_each,
 * so a batch is one statement here too. An outbox claim is BEGIN IMMEDIATE (the
 * write gate) and UPDATE … RETURNING.
 *
 * Two SQL functions are ours. sp_uuid_v7() names each message an expanded
 * campaign adds, inside its one INSERT … SELECT. Merging a profile's
 * attributes is sp_json_merge: a
 * shallow merge that copies member texts verbatim. SQLite's json_patch
 * would drop members whose new value is null, and re-encoding through a
 * JSON library would rewrite numbers (0.1 as 0.10000000000000001).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "sealpost/crypto.h"
#include "store/store_internal.h"

#define SP_SQLITE_BUSY_MS 5000
/* A 64 MiB page cache per connection: ingestion's inserts land at random
 * places of the blind-index B-tree, and every page missed is a read. */
#define SP_SQLITE_PRAGMAS "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384; PRAGMA mmap_size = 1073741824"

static const char *const sp_sqlite_sql[SP_Q__COUNT] = {
    [SP_Q_BEGIN] = "BEGIN IMMEDIATE",
    [SP_Q_BEGIN_READ] = "BEGIN",
    [SP_Q_COMMIT] = "COMMIT",
    [SP_Q_ROLLBACK] = "ROLLBACK",
    [SP_Q_MIGRATE_BEGIN] = "BEGIN IMMEDIATE",
    [SP_Q_VERSION_TABLE] = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL, "
                           "applied INTEGER NOT NULL)",
    [SP_Q_VERSION_GET] = "SELECT COALESCE(MAX(version), 0) FROM schema_version",
    [SP_Q_VERSION_ADD] = "INSERT INTO schema_version (version, applied) VALUES (?1, ?2)",
    [SP_Q_PING] = "SELECT 1",
    [SP_Q_TENANT_INSERT] = "INSERT INTO tenants (id, settings, created, updated, disabled) VALUES (?1, ?2, ?3, ?3, 0)",
    [SP_Q_TENANT_UPDATE] = "UPDATE tenants SET settings = ?2, disabled = ?3, updated = ?4 WHERE id = ?1",
    [SP_Q_TENANT_GET] = "SELECT id, settings, created, updated, disabled FROM tenants WHERE id = ?1",
    [SP_Q_TENANT_LIST] = "SELECT id, settings, created, updated, disabled FROM tenants WHERE id > ?1 ORDER BY id "
                         "LIMIT ?2",
    [SP_Q_TENANT_DELETE] = "DELETE FROM tenants WHERE id = ?1",
    [SP_Q_TENANT_DELETE_CREDS] = "DELETE FROM credentials WHERE tenant = ?1",
    [SP_Q_TENANT_DELETE_KEYRING] = "DELETE FROM keyrings WHERE tenant = ?1",
    [SP_Q_TENANT_EXISTS] = "SELECT 1 FROM tenants WHERE id = ?1",
    [SP_Q_CRED_COUNT_KEY] = "SELECT COUNT(*) FROM credentials WHERE client_key_hash = ?1",
    [SP_Q_CRED_INSERT] = "INSERT INTO credentials (id, tenant, client_key_hash, secret_hash, created, expires, revoked) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SP_Q_CRED_FIND] = "SELECT id, tenant, client_key_hash, secret_hash, created, expires, revoked FROM credentials "
                       "WHERE client_key_hash = ?1 ORDER BY created, id LIMIT ?2",
    [SP_Q_CRED_LIST] = "SELECT id, tenant, client_key_hash, secret_hash, created, expires, revoked FROM credentials "
                       "WHERE tenant = ?1 ORDER BY created, id",
    [SP_Q_CRED_REVOKE] = "UPDATE credentials SET revoked = CASE WHEN revoked = 0 THEN ?3 ELSE revoked END "
                         "WHERE tenant = ?1 AND id = ?2",
    [SP_Q_PROFILE_INSERT] = "INSERT INTO profiles (tenant, id, attributes, created, updated) "
                            "VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_PROFILE_MERGE] = "UPDATE profiles SET attributes = sp_json_merge(attributes, ?3), updated = ?4 "
                           "WHERE tenant = ?1 AND id = ?2",
    [SP_Q_PII_UPSERT] = "INSERT INTO profile_pii (tenant, profile_id, field, blob, blind_index, updated) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, profile_id, field) DO UPDATE SET "
                        "blob = excluded.blob, blind_index = excluded.blind_index, updated = excluded.updated",
    [SP_Q_PII_UPSERT2] = "INSERT INTO profile_pii (tenant, profile_id, field, blob, blind_index, updated) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6), (?1, ?2, ?7, ?8, ?9, ?6) "
                         "ON CONFLICT (tenant, profile_id, field) DO UPDATE SET "
                         "blob = excluded.blob, blind_index = excluded.blind_index, updated = excluded.updated",
    [SP_Q_PII_COUNT] = "SELECT COUNT(*) FROM profile_pii WHERE tenant = ?1 AND profile_id = ?2",
    /* The index covers the lookup and its order; without statistics the
     * planner would otherwise walk the tenant's primary-key range. */
    [SP_Q_PROFILE_FIND_INDEX] = "SELECT profile_id FROM profile_pii INDEXED BY profile_pii_index WHERE tenant = ?1 "
                                "AND field = ?2 AND "
                                "blind_index = ?3 ORDER BY updated DESC, profile_id DESC LIMIT 1",
    [SP_Q_PROFILE_GET] = "SELECT id, attributes, created, updated FROM profiles WHERE tenant = ?1 AND id = ?2",
    [SP_Q_PII_GET] = "SELECT field, blob FROM profile_pii WHERE tenant = ?1 AND profile_id = ?2 ORDER BY field",
    [SP_Q_PROFILE_GET_MANY] = "SELECT j.key, p.id, p.attributes, p.created, p.updated, x.field, x.blob "
                              "FROM json_each(?2) j JOIN profiles p ON p.tenant = ?1 AND p.id = j.value "
                              "LEFT JOIN profile_pii x ON x.tenant = ?1 AND x.profile_id = p.id "
                              "ORDER BY j.key, x.field",
    [SP_Q_PROFILE_DELETE] = "DELETE FROM profiles WHERE tenant = ?1 AND id = ?2",
    [SP_Q_PROFILE_COUNT] = "SELECT COUNT(*) FROM profiles WHERE tenant = ?1",
    [SP_Q_EVENT_INSERT] = "INSERT INTO events (tenant, id, profile_id, name, ts, properties, created) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_EVENT_COUNT] = "SELECT COUNT(*) FROM events WHERE tenant = ?1",
    [SP_Q_EVENT_COUNT_PROFILE] = "SELECT COUNT(*) FROM events WHERE tenant = ?1 AND profile_id = ?2",
    [SP_Q_KEYRING_ENSURE] = "INSERT INTO keyrings (tenant, generation, doc) VALUES (?1, ?2, NULL) "
                            "ON CONFLICT (tenant) DO NOTHING",
    /* BEGIN IMMEDIATE already holds the database's write lock */
    [SP_Q_KEYRING_LOCK] = "SELECT generation FROM keyrings WHERE tenant = ?1",
    [SP_Q_KEYRING_READ] = "SELECT generation, doc FROM keyrings WHERE tenant = ?1",
    [SP_Q_KEYRING_GENERATION] = "SELECT generation FROM keyrings WHERE tenant = ?1",
    [SP_Q_KEYRING_WRITE] = "UPDATE keyrings SET doc = ?2, generation = generation + 1 WHERE tenant = ?1",
    [SP_Q_CHANNEL_INSERT] = "INSERT INTO channels (tenant, id, kind, config, secrets, created, updated) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_CHANNEL_UPDATE] = "UPDATE channels SET kind = ?3, config = ?4, secrets = ?5, updated = ?6 "
                            "WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CHANNEL_GET] = "SELECT id, kind, config, secrets, created, updated FROM channels WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CHANNEL_LIST] = "SELECT id, kind, config, secrets, created, updated FROM channels WHERE tenant = ?1 "
                          "AND id > ?2 ORDER BY id LIMIT ?3",
    [SP_Q_CHANNEL_LOCK] = "SELECT 1 FROM channels WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CHANNEL_USERS] = "SELECT COUNT(*) FROM campaigns WHERE tenant = ?1 AND channel = ?2",
    /* `state IN (…)` spelled as in the partial index, so the planner may use it */
    [SP_Q_CHANNEL_LIVE] = "SELECT COUNT(*) FROM outbox WHERE tenant = ?1 AND channel = ?2 AND campaign IS NULL "
                          "AND state IN ('queued', 'sending')",
    [SP_Q_CHANNEL_DELETE_SENDS] = "DELETE FROM outbox WHERE tenant = ?1 AND channel = ?2 AND campaign IS NULL",
    [SP_Q_CHANNEL_DELETE] = "DELETE FROM channels WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_INSERT] = "INSERT INTO campaigns (tenant, id, channel, spec, state, send_at, total, created, updated) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, NULLIF(?6, 0), 0, ?7, ?7)",
    [SP_Q_CAMPAIGN_GET] = "SELECT id, channel, spec, state, send_at, total, created, updated FROM campaigns "
                          "WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_LIST] = "SELECT id, channel, spec, state, send_at, total, created, updated FROM campaigns "
                           "WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [SP_Q_CAMPAIGN_DUE] = "SELECT tenant, id FROM campaigns WHERE state = 'scheduled' AND send_at <= ?1 "
                          "ORDER BY send_at, tenant, id LIMIT ?2",
    /* BEGIN IMMEDIATE already holds the database's write lock */
    [SP_Q_CAMPAIGN_LOCK] = "SELECT state, channel, send_at, expanded_to FROM campaigns WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_STALE] = "SELECT tenant, id FROM campaigns INDEXED BY campaigns_expanding WHERE state = 'queued' "
                            "AND updated < ?1 ORDER BY updated LIMIT ?2",
    [SP_Q_CAMPAIGN_EXPANDED] = "UPDATE campaigns SET expanded_to = ?3, total = total + ?4, updated = ?5 "
                               "WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_SET_STATE] = "UPDATE campaigns SET state = ?3, updated = ?4 WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_ADD_TOTAL] = "UPDATE campaigns SET total = total + ?3, updated = ?4 WHERE tenant = ?1 AND id = ?2",
    [SP_Q_CAMPAIGN_CANCEL_SENDS] = "UPDATE outbox SET state = 'failed', last_error = 'cancelled', updated = ?3 "
                                   "WHERE tenant = ?1 AND campaign = ?2 AND state = 'queued'",
    [SP_Q_CAMPAIGN_DELETE] = "DELETE FROM campaigns WHERE tenant = ?1 AND id = ?2",
#define SP_SQLITE_EXPAND_FROM                                                                                 \
    "FROM profiles p WHERE p.tenant = ?1 AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.tenant = ?1 "     \
    "AND x.profile_id = p.id AND x.kind = (SELECT c.kind FROM channels c WHERE c.tenant = ?1 AND c.id = ?3)) "
#define SP_SQLITE_EXPAND                                                                                             \
    "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, created, " \
    "updated) SELECT ?1, ?2, ?3, p.id, 'msg_' || sp_uuid_v7(), 'queued', 0, ?4, ?4, ?4 " SP_SQLITE_EXPAND_FROM
#define SP_SQLITE_EXPAND_END " ON CONFLICT (tenant, campaign, profile_id) DO NOTHING"
    /* a claim's row from the start, as SP_Q_OUTBOX_CLAIM leaves it */
#define SP_SQLITE_LEASED                                                                                             \
    "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, "          \
    "lease_owner, lease_until, created, updated) SELECT ?1, ?2, ?3, p.id, 'msg_' || sp_uuid_v7(), 'sending', 1, ?10, " \
    "?9, ?10, ?4, ?4 " SP_SQLITE_EXPAND_FROM
#define SP_SQLITE_LEASED_END SP_SQLITE_EXPAND_END
    [SP_Q_OUTBOX_EXPAND_ALL] = SP_SQLITE_EXPAND SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ID] = SP_SQLITE_EXPAND "AND p.id = ?5" SP_SQLITE_EXPAND_END,
    /* json_extract gives a JSON string as TEXT, a number as INTEGER or REAL,
     * but an object as its text and true as 1: the type check keeps those
     * out. The key is quoted into the path, so any key is one label. */
#define SP_SQLITE_TEXT_MATCH                                                                                     \
    "AND json_extract(p.attributes, '$.\"' || ?5 || '\"') = ?6 "                                                      \
    "AND json_type(p.attributes, '$.\"' || ?5 || '\"') = 'text' "
#define SP_SQLITE_NUMBER_MATCH                                                                                   \
    "AND json_extract(p.attributes, '$.\"' || ?5 || '\"') = CAST(?6 AS REAL) "                                       \
    "AND json_type(p.attributes, '$.\"' || ?5 || '\"') IN ('integer', 'real') "
    [SP_Q_OUTBOX_EXPAND_TEXT] = SP_SQLITE_EXPAND SP_SQLITE_TEXT_MATCH SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER] = SP_SQLITE_EXPAND SP_SQLITE_NUMBER_MATCH SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ALL_RANGE] = SP_SQLITE_EXPAND "AND p.id > ?5 AND p.id <= ?6" SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_TEXT_RANGE] = SP_SQLITE_EXPAND "AND p.id > ?7 AND p.id <= ?8 " SP_SQLITE_TEXT_MATCH
                                      SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER_RANGE] = SP_SQLITE_EXPAND "AND p.id > ?7 AND p.id <= ?8 "
                                        SP_SQLITE_NUMBER_MATCH SP_SQLITE_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ID_LEASED] = SP_SQLITE_LEASED "AND p.id = ?5" SP_SQLITE_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_ALL_LEASED] = SP_SQLITE_LEASED "AND p.id > ?5 AND p.id <= ?6" SP_SQLITE_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_TEXT_LEASED] = SP_SQLITE_LEASED "AND p.id > ?7 AND p.id <= ?8 " SP_SQLITE_TEXT_MATCH
                                       SP_SQLITE_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER_LEASED] = SP_SQLITE_LEASED "AND p.id > ?7 AND p.id <= ?8 " SP_SQLITE_NUMBER_MATCH
                                         SP_SQLITE_LEASED_END,
    [SP_Q_OUTBOX_SEQ_MAX] = "SELECT COALESCE(MAX(seq), 0) FROM outbox",
    [SP_Q_OUTBOX_ADDED_AFTER] = "SELECT seq, profile_id, message_id FROM outbox WHERE seq > ?1 ORDER BY seq",
#undef SP_SQLITE_TEXT_MATCH
#undef SP_SQLITE_NUMBER_MATCH
#undef SP_SQLITE_EXPAND
#undef SP_SQLITE_EXPAND_END
#undef SP_SQLITE_EXPAND_FROM
#undef SP_SQLITE_LEASED
#undef SP_SQLITE_LEASED_END
    [SP_Q_PROFILE_PAGE_END] = "SELECT id FROM profiles WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT 1 OFFSET ?3",
    [SP_Q_PROFILE_LAST] = "SELECT id FROM profiles WHERE tenant = ?1 AND id > ?2 ORDER BY id DESC LIMIT 1",
    [SP_Q_OUTBOX_ENQUEUE] = "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, "
                            "next_attempt, created, updated) SELECT ?1, NULL, c.id, p.id, ?4, 'queued', 0, ?5, ?5, ?5 "
                            "FROM channels c, profiles p WHERE c.tenant = ?1 AND c.id = ?2 AND p.tenant = ?1 "
                            "AND p.id = ?3 RETURNING seq",
    /* A claimed row's next_attempt is its lease's end: a crashed worker's
     * rows come back through the same index range as queued ones. */
    [SP_Q_OUTBOX_CLAIM] = "UPDATE outbox SET state = 'sending', lease_owner = ?1, lease_until = ?3, next_attempt = ?3, "
                          "attempts = attempts + 1, updated = ?2 WHERE seq IN (SELECT seq FROM outbox "
                          "INDEXED BY outbox_claim WHERE state IN ('queued', 'sending') AND next_attempt <= ?2 "
                          "ORDER BY next_attempt, seq LIMIT ?4) "
                          "RETURNING seq, tenant, campaign, channel, profile_id, message_id, attempts",
    [SP_Q_OUTBOX_RENEW_ONE] = "UPDATE outbox SET lease_until = ?3, next_attempt = ?3 "
                              "WHERE seq = ?2 AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_DONE_ONE] = "UPDATE outbox SET state = 'sent', sent_at = ?3, updated = ?3 "
                             "WHERE seq = ?2 AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_RETRY_ONE] = "UPDATE outbox SET state = CASE WHEN attempts >= ?6 THEN 'dead' "
                              "WHEN campaign IS NOT NULL AND EXISTS (SELECT 1 FROM campaigns c WHERE c.tenant = "
                              "outbox.tenant AND c.id = outbox.campaign AND c.state = 'cancelled') THEN 'failed' "
                              "ELSE 'queued' END, next_attempt = ?3, last_error = ?4, provider_status = ?5, "
                              "updated = ?7 WHERE seq = ?2 AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_FAIL_ONE] = "UPDATE outbox SET state = ?3, last_error = ?4, provider_status = ?5, updated = ?6 "
                             "WHERE seq = ?2 AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_DEFER_ONE] = "UPDATE outbox SET state = 'queued', attempts = MAX(attempts - 1, 0), next_attempt = ?3, "
                              "last_error = ?4, updated = ?5 WHERE seq = ?2 AND state = 'sending' AND lease_owner = ?1",
/* The batch forms: SQLite has no array parameters, so the seqs come as
 * one JSON array text (sp_sqlite_run) walked by json_each, and the
 * statement runs once per batch, not once per row. */
#define SP_SQLITE_SEQS "seq IN (SELECT value FROM json_each(?2))"
    [SP_Q_OUTBOX_RENEW_MANY] = "UPDATE outbox SET lease_until = ?3, next_attempt = ?3 "
                               "WHERE " SP_SQLITE_SEQS " AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_DONE_MANY] = "UPDATE outbox SET state = 'sent', sent_at = ?3, updated = ?3 "
                              "WHERE " SP_SQLITE_SEQS " AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_RETRY_MANY] = "UPDATE outbox SET state = CASE WHEN attempts >= ?6 THEN 'dead' "
                               "WHEN campaign IS NOT NULL AND EXISTS (SELECT 1 FROM campaigns c WHERE c.tenant = "
                               "outbox.tenant AND c.id = outbox.campaign AND c.state = 'cancelled') THEN 'failed' "
                               "ELSE 'queued' END, next_attempt = ?3, last_error = ?4, provider_status = ?5, "
                               "updated = ?7 WHERE " SP_SQLITE_SEQS " AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_FAIL_MANY] = "UPDATE outbox SET state = ?3, last_error = ?4, provider_status = ?5, updated = ?6 "
                              "WHERE " SP_SQLITE_SEQS " AND state = 'sending' AND lease_owner = ?1",
    [SP_Q_OUTBOX_DEFER_MANY] = "UPDATE outbox SET state = 'queued', attempts = MAX(attempts - 1, 0), next_attempt = ?3, "
                               "last_error = ?4, updated = ?5 WHERE " SP_SQLITE_SEQS " AND state = 'sending' "
                               "AND lease_owner = ?1",
#undef SP_SQLITE_SEQS
    [SP_Q_OUTBOX_RELEASE] = "UPDATE outbox SET state = 'queued', attempts = MAX(attempts - 1, 0), next_attempt = ?2, "
                            "updated = ?2 WHERE state IN ('queued', 'sending') AND state = 'sending' "
                            "AND lease_owner = ?1",
    [SP_Q_OUTBOX_REPLAY] = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt = ?2, updated = ?2 "
                           "WHERE tenant = ?1 AND state = 'dead'",
    [SP_Q_OUTBOX_REPLAY_CAMPAIGN] = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt = ?2, "
                                    "updated = ?2 WHERE tenant = ?1 AND campaign = ?3 AND state = 'dead'",
    /* the claim index holds exactly these rows: no scan of what was sent */
    [SP_Q_OUTBOX_LIVE] = "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')",
    [SP_Q_OUTBOX_COUNTS] = "SELECT state, COUNT(*) FROM outbox WHERE tenant = ?1 GROUP BY state",
    [SP_Q_OUTBOX_COUNTS_CAMPAIGN] = "SELECT state, COUNT(*) FROM outbox WHERE tenant = ?1 AND campaign = ?2 "
                                    "GROUP BY state",
    [SP_Q_OUTBOX_GET] = "SELECT seq, tenant, campaign, channel, profile_id, message_id, state, attempts, "
                        "next_attempt, lease_owner, lease_until, last_error, provider_status, created, updated, "
                        "sent_at FROM outbox WHERE message_id = ?1",
    [SP_Q_CALLBACK_SEEN] = "SELECT 1 FROM callbacks_seen WHERE tenant = ?1 AND webhook_id = ?2",
    [SP_Q_CALLBACK_RECORD] = "INSERT INTO callbacks_seen (tenant, webhook_id, received) VALUES (?1, ?2, ?3) "
                             "ON CONFLICT (tenant, webhook_id) DO NOTHING",
    [SP_Q_CALLBACK_PRUNE] = "DELETE FROM callbacks_seen WHERE (tenant, webhook_id) IN (SELECT tenant, webhook_id "
                            "FROM callbacks_seen WHERE received < ?1 LIMIT ?2)",
    /* BEGIN IMMEDIATE already holds the database's write lock */
    [SP_Q_DELIVERY_READ] = "SELECT seq, delivery, delivery_at, failure_code, opened_at, clicked_at, replied_at, "
                           "unsubscribed_at, complained_at, channel FROM outbox WHERE message_id = ?2 AND tenant = ?1",
    [SP_Q_DELIVERY_WRITE] = "UPDATE outbox SET delivery = ?2, delivery_at = NULLIF(?3, 0), failure_code = ?4, "
                            "opened_at = NULLIF(?5, 0), clicked_at = NULLIF(?6, 0), replied_at = NULLIF(?7, 0), "
                            "unsubscribed_at = NULLIF(?8, 0), complained_at = NULLIF(?9, 0), callback_at = ?10, "
                            "callback_encrypted = ?11 WHERE seq = ?1",
    [SP_Q_MESSAGE_PROFILE] = "SELECT o.profile_id, c.kind FROM outbox o JOIN channels c ON c.tenant = o.tenant "
                             "AND c.id = o.channel WHERE o.message_id = ?2 AND o.tenant = ?1",
    [SP_Q_MESSAGE_STATUS] = "SELECT seq, tenant, campaign, channel, profile_id, message_id, state, attempts, "
                            "next_attempt, lease_owner, lease_until, last_error, provider_status, created, updated, "
                            "sent_at, delivery, delivery_at, failure_code, opened_at, clicked_at, replied_at, "
                            "unsubscribed_at, complained_at, callback_at, callback_encrypted FROM outbox "
                            "WHERE message_id = ?2 AND tenant = ?1",
    /* only for a profile there: a foreign-key error would spoil a
     * PostgreSQL transaction the caller means to go on with */
    [SP_Q_SUPPRESS_INSERT] = "INSERT INTO suppressions (tenant, profile_id, kind, reason, created) "
                             "SELECT tenant, id, ?3, ?4, ?5 FROM profiles WHERE tenant = ?1 AND id = ?2 "
                             "ON CONFLICT (tenant, profile_id, kind) DO NOTHING",
    [SP_Q_SUPPRESS_CANCEL] = "UPDATE outbox SET state = 'failed', last_error = ?5, updated = ?4 "
                             "WHERE tenant = ?1 AND profile_id = ?2 AND state = 'queued' AND channel IN "
                             "(SELECT id FROM channels WHERE tenant = ?1 AND kind = ?3)",
    [SP_Q_SUPPRESSED] = "SELECT reason FROM suppressions WHERE tenant = ?1 AND profile_id = ?2 AND kind = ?3",
    [SP_Q_UNSUPPRESS] = "DELETE FROM suppressions WHERE tenant = ?1 AND profile_id = ?2 AND kind = ?3",
/* What a user sees: the delivery state once there is one, else the outbox
 * state ('failed' from either is one group). */
#define SP_SQLITE_STATS                                                                                         \
    "SELECT COALESCE(delivery, state), COUNT(*), COUNT(opened_at), COUNT(clicked_at), COUNT(replied_at), "       \
    "COUNT(unsubscribed_at), COUNT(complained_at) FROM outbox WHERE tenant = ?1 AND campaign "
    [SP_Q_STATS] = SP_SQLITE_STATS "= ?2 GROUP BY 1",
    [SP_Q_STATS_TESTS] = SP_SQLITE_STATS "IS NULL GROUP BY 1",
#undef SP_SQLITE_STATS
#define SP_SQLITE_CODES                                                                                         \
    "SELECT failure_code, SUM(delivery = 'failed'), SUM(delivery = 'bounced') FROM outbox WHERE tenant = ?1 "    \
    "AND delivery IN ('failed', 'bounced') AND campaign "
    [SP_Q_FAILURE_CODES] = SP_SQLITE_CODES "= ?2 GROUP BY failure_code ORDER BY failure_code",
    [SP_Q_FAILURE_CODES_TESTS] = SP_SQLITE_CODES "IS NULL GROUP BY failure_code ORDER BY failure_code",
#undef SP_SQLITE_CODES
/* One pass over the campaign's rows, each row read once and seen under
 * each of its times (CROSS JOIN keeps the outbox as the outer loop). */
#define SP_SQLITE_TIMELINE(campaign, b, max)                                                                    \
    "SELECT t / " b " * " b " AS start, SUM(k = 1), SUM(k = 2), SUM(k = 3), SUM(k = 4), SUM(k = 5), "             \
    "SUM(k = 6), SUM(k = 7) FROM (SELECT CASE w.value WHEN 1 THEN o.sent_at WHEN 2 THEN o.delivery_at "          \
    "WHEN 3 THEN o.opened_at WHEN 4 THEN o.clicked_at ELSE o.replied_at END AS t, CASE w.value WHEN 1 THEN 1 "   \
    "WHEN 2 THEN CASE o.delivery WHEN 'delivered' THEN 2 WHEN 'failed' THEN 3 ELSE 4 END ELSE w.value + 2 END "  \
    "AS k FROM outbox o CROSS JOIN json_each('[1,2,3,4,5]') w WHERE o.tenant = ?1 AND o.campaign " campaign     \
    ") WHERE t IS NOT NULL GROUP BY start ORDER BY start LIMIT " max
    [SP_Q_TIMELINE] = SP_SQLITE_TIMELINE("= ?2", "?3", "?4"),
    [SP_Q_TIMELINE_TESTS] = SP_SQLITE_TIMELINE("IS NULL", "?2", "?3"),
#undef SP_SQLITE_TIMELINE
};

/* Version 1: the whole schema. Later versions append here; a shipped entry
 * never changes. */
static const char *const sp_sqlite_migrations[] = {
    "CREATE TABLE tenants (id TEXT PRIMARY KEY NOT NULL, settings TEXT NOT NULL, created INTEGER NOT NULL, "
    "  updated INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE credentials (id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL, client_key_hash BLOB NOT NULL, "
    "  secret_hash BLOB NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL, revoked INTEGER NOT NULL);"
    "CREATE INDEX credentials_key ON credentials (client_key_hash);"
    "CREATE INDEX credentials_tenant ON credentials (tenant);"
    "CREATE TABLE profiles (tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id TEXT NOT NULL, "
    "  attributes TEXT NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY (tenant, id)) "
    "  WITHOUT ROWID;"
    "CREATE TABLE profile_pii (tenant TEXT NOT NULL, profile_id TEXT NOT NULL, field TEXT NOT NULL, "
    "  blob BLOB NOT NULL, blind_index BLOB, updated INTEGER NOT NULL, PRIMARY KEY (tenant, profile_id, field), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE) WITHOUT ROWID;"
    "CREATE INDEX profile_pii_index ON profile_pii (tenant, field, blind_index, updated, profile_id);"
    "CREATE TABLE events (tenant TEXT NOT NULL, id TEXT NOT NULL, profile_id TEXT NOT NULL, name TEXT NOT NULL, "
    "  ts INTEGER NOT NULL, properties TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (tenant, id), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE);"
    "CREATE INDEX events_profile ON events (tenant, profile_id);"
    "CREATE TABLE keyrings (tenant TEXT PRIMARY KEY NOT NULL, generation INTEGER NOT NULL, doc BLOB);",

    /* Version 2: channels, campaigns and the outbox. A campaign's channel
     * is NO ACTION rather than RESTRICT: checked at the end of the
     * statement, so a tenant's delete may cascade through both; the store
     * refuses deleting a channel in use before SQLite would. */
    "CREATE TABLE channels (tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id TEXT NOT NULL, "
    "  kind TEXT NOT NULL CHECK (kind IN ('email', 'sms')), config TEXT NOT NULL, secrets BLOB, "
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY (tenant, id));"
    "CREATE TABLE campaigns (tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id TEXT NOT NULL, "
    "  channel TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', "
    "  'queued', 'sending', 'done', 'cancelled')), send_at INTEGER, total INTEGER NOT NULL DEFAULT 0, "
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY (tenant, id), "
    "  FOREIGN KEY (tenant, channel) REFERENCES channels (tenant, id));"
    "CREATE INDEX campaigns_channel ON campaigns (tenant, channel);"
    "CREATE INDEX campaigns_due ON campaigns (send_at) WHERE state = 'scheduled';"
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  campaign TEXT, channel TEXT NOT NULL, profile_id TEXT NOT NULL, message_id TEXT NOT NULL UNIQUE, "
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead')), "
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER, "
    "  last_error TEXT, provider_status INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL, "
    "  updated INTEGER NOT NULL, sent_at INTEGER, "
    "  FOREIGN KEY (tenant, campaign) REFERENCES campaigns (tenant, id) ON DELETE CASCADE);"
    /* a campaign's rows once each (a test send has no campaign: NULLs differ) */
    "CREATE UNIQUE INDEX outbox_campaign ON outbox (tenant, campaign, profile_id);"
    /* only live rows: the claim's range stays as small as the backlog */
    "CREATE INDEX outbox_claim ON outbox (next_attempt) WHERE state IN ('queued', 'sending');"
    "CREATE INDEX outbox_sends ON outbox (tenant, channel, state) WHERE campaign IS NULL;",

    /* Version 3: what providers report back. A webhook-id is remembered per
     * tenant (callbacks_seen, pruned by age through its index on received);
     * a message's delivery state and first engagement times are columns of
     * its outbox row, so a campaign's numbers are counted over the outbox
     * index (tenant, campaign, profile_id) that version 2 made; suppressions
     * go with their profile. outbox_profile finds a profile's queued
     * messages when it is suppressed. */
    "CREATE TABLE callbacks_seen (tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  webhook_id TEXT NOT NULL, received INTEGER NOT NULL, PRIMARY KEY (tenant, webhook_id)) WITHOUT ROWID;"
    "CREATE INDEX callbacks_seen_received ON callbacks_seen (received);"
    "CREATE TABLE suppressions (tenant TEXT NOT NULL, profile_id TEXT NOT NULL, "
    "  kind TEXT NOT NULL CHECK (kind IN ('email', 'sms')), reason TEXT NOT NULL, created INTEGER NOT NULL, "
    "  PRIMARY KEY (tenant, profile_id, kind), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE) WITHOUT ROWID;"
    "ALTER TABLE outbox ADD COLUMN delivery TEXT CHECK (delivery IN ('delivered', 'failed', 'bounced'));"
    "ALTER TABLE outbox ADD COLUMN delivery_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN failure_code INTEGER;"
    "ALTER TABLE outbox ADD COLUMN opened_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN clicked_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN replied_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN unsubscribed_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN complained_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN callback_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN callback_encrypted INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX outbox_profile ON outbox (tenant, profile_id);",

    /* Version 4: the outbox again, its CHECKs on state and delivery
     * written as comparisons. SQLite 3.40 tests a list of three or more
     * values (x IN ('a', 'b', 'c')) by building a temporary B-tree of the
     * list, and a CHECK is tested for every row an UPDATE changes: the
     * claim and the settle of each message, and each delivery report,
     * opened and filled one (a page cache, a B-tree, mallocs), which was
     * half the cost of the delivery report's update. A CHECK cannot be
     * altered, so the table is copied (SQLite's procedure for other
     * schema changes: new table, copy, drop, rename, indexes again), every
     * column and rowid as it was; no other table refers to the outbox. */
    "CREATE TABLE outbox_v4 (seq INTEGER PRIMARY KEY, "
    "  tenant TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, campaign TEXT, channel TEXT NOT NULL, "
    "  profile_id TEXT NOT NULL, message_id TEXT NOT NULL UNIQUE, "
    "  state TEXT NOT NULL "
    "CHECK (state = 'queued' OR state = 'sending' OR state = 'sent' OR state = 'failed' OR state = 'dead'), "
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER, "
    "  last_error TEXT, provider_status INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL, "
    "  updated INTEGER NOT NULL, sent_at INTEGER, "
    "  delivery TEXT CHECK (delivery = 'delivered' OR delivery = 'failed' OR delivery = 'bounced'), "
    "  delivery_at INTEGER, failure_code INTEGER, opened_at INTEGER, clicked_at INTEGER, replied_at INTEGER, "
    "  unsubscribed_at INTEGER, complained_at INTEGER, callback_at INTEGER, "
    "  callback_encrypted INTEGER NOT NULL DEFAULT 0, "
    "  FOREIGN KEY (tenant, campaign) REFERENCES campaigns (tenant, id) ON DELETE CASCADE);"
    "INSERT INTO outbox_v4 (seq, tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, "
    "  lease_owner, lease_until, last_error, provider_status, created, updated, sent_at, delivery, delivery_at, "
    "  failure_code, opened_at, clicked_at, replied_at, unsubscribed_at, complained_at, callback_at, "
    "  callback_encrypted) "
    "SELECT seq, tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, lease_owner, "
    "  lease_until, last_error, provider_status, created, updated, sent_at, delivery, delivery_at, failure_code, "
    "  opened_at, clicked_at, replied_at, unsubscribed_at, complained_at, callback_at, callback_encrypted "
    "FROM outbox ORDER BY seq;"
    "DROP TABLE outbox;"
    "ALTER TABLE outbox_v4 RENAME TO outbox;"
    "CREATE UNIQUE INDEX outbox_campaign ON outbox (tenant, campaign, profile_id);"
    "CREATE INDEX outbox_claim ON outbox (next_attempt) WHERE state IN ('queued', 'sending');"
    "CREATE INDEX outbox_sends ON outbox (tenant, channel, state) WHERE campaign IS NULL;"
    "CREATE INDEX outbox_profile ON outbox (tenant, profile_id);",

    /* Version 5: a campaign's audience goes into the outbox a page at a
     * time, each page its own transaction (so sending starts after the
     * first, and no write waits for the whole audience), and expanded_to
     * is the last profile id done: whoever takes the campaign up again
     * after a crash goes on from there. campaigns_expanding finds the
     * campaigns whose expansion stopped. */
    ("ALTER TABLE campaigns ADD COLUMN expanded_to TEXT;"
     "CREATE INDEX campaigns_expanding ON campaigns (updated) WHERE state = 'queued';"),
};

/* ---- the write gate: one per database file in this process ---- */
#define SP_SQLITE_MAX_GATES 64

/* A connection and the statements prepared on it. */
typedef struct {
    sqlite3 *db;
    sqlite3_stmt *stmts[SP_Q__COUNT];
} sp_sqlite_conn;

typedef struct {
    dev_t dev;
    ino_t ino;
    /* The process that made the gate. A forked child inherits the table but
     * not the checkpointer thread, and must never touch a connection opened
     * before the fork (SQLite forbids it): it opens gates of its own. */
    pid_t owner;
    unsigned users;
    pthread_mutex_t lock;
    char *path;
    /* The one connection every write transaction of this process uses, in
     * turn under `lock`: a connection's page cache is dropped whenever
     * another connection has written, so writers sharing one keep it warm
     * instead of re-reading the pages each commit touched. */
    sp_sqlite_conn *writer;
    /* the checkpointer */
    bool checkpointer;
    pthread_t thread;
    pthread_mutex_t ck_lock;
    pthread_cond_t ck_wake;
    atomic_uint_fast64_t commits; /* write commits so far (the WAL hook counts them) */
    bool ck_stop;
    bool ck_started;
} sp_sqlite_gate;

/* A checkpoint once the WAL holds this many frames (128 MiB of 4 KiB pages):
 * pages written by many commits in between are copied once, and the WAL
 * restarts (each a short hold of the write gate) less often: at 64 MiB
 * that was five times a second under ingestion, and a WAL twice as long
 * took ingestion from 30,000 to 35,000 profiles/s. When idle (no commit of
 * this process for SP_SQLITE_CHECKPOINT_IDLE_MS), one anyway. */
#define SP_SQLITE_CHECKPOINT_FRAMES 32768
static _Atomic int sp_checkpoint_frames = SP_SQLITE_CHECKPOINT_FRAMES;

void sp_sqlite_set_checkpoint_frames(int frames) {
    atomic_store(&sp_checkpoint_frames, frames > 0 ? frames : SP_SQLITE_CHECKPOINT_FRAMES);
}
#define SP_SQLITE_CHECKPOINT_IDLE_MS 1000
/* Passes that catch up on a long WAL before the one under the write gate,
 * and the frames that may come in during one for the next to be the last:
 * 256 frames are a megabyte, a few ms of fsync on a slow disk. */
#define SP_SQLITE_CATCH_UP_PASSES 6
#define SP_SQLITE_GATED_FRAMES 256
/* how long a RESTART checkpoint, holding the write gate, waits for readers */
#define SP_SQLITE_RESTART_WAIT_MS 2
/* the database file's growth step (see sp_conn_open) */
#define SP_SQLITE_CHUNK (4 << 20)

static pthread_mutex_t sp_gates_lock = PTHREAD_MUTEX_INITIALIZER;
static sp_sqlite_gate sp_gates[SP_SQLITE_MAX_GATES];

/* Around fork(): the table's lock and every checkpointer's ck_lock are held,
 * so no checkpointer is inside SQLite (it drops ck_lock only to checkpoint)
 * and the child does not inherit one of SQLite's own mutexes locked by a
 * thread it does not have. */
static void sp_gates_before_fork(void) {
    pthread_mutex_lock(&sp_gates_lock);
    for (size_t i = 0; i < SP_SQLITE_MAX_GATES; i++)
        if (sp_gates[i].users > 0 && sp_gates[i].checkpointer) pthread_mutex_lock(&sp_gates[i].ck_lock);
}

static void sp_gates_after_fork_parent(void) {
    for (size_t i = 0; i < SP_SQLITE_MAX_GATES; i++)
        if (sp_gates[i].users > 0 && sp_gates[i].checkpointer) pthread_mutex_unlock(&sp_gates[i].ck_lock);
    pthread_mutex_unlock(&sp_gates_lock);
}

/* The child keeps its inherited gates' slots (their stores may still be
 * closed here) but marks them as having no checkpointer to wake or join. */
static void sp_gates_after_fork_child(void) {
    for (size_t i = 0; i < SP_SQLITE_MAX_GATES; i++) {
        sp_sqlite_gate *g = &sp_gates[i];
        if (g->users == 0 || !g->checkpointer) continue;
        pthread_mutex_unlock(&g->ck_lock);
        g->checkpointer = false;
    }
    pthread_mutex_unlock(&sp_gates_lock);
}

static pthread_once_t sp_gates_once = PTHREAD_ONCE_INIT;
static void sp_gates_register_fork(void) {
    (void)pthread_atfork(sp_gates_before_fork, sp_gates_after_fork_parent, sp_gates_after_fork_child);
    /* SQLite's memory statistics take one process-wide mutex around every
     * allocation, which every connection's threads then queue on; nothing
     * here reads them. Only possible before SQLite initialises: when the
     * process already used SQLite this is refused, harmlessly. */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)sp_sqlite_pcache_install();
}

/* A pass that did not reach the WAL's end (writes came in meanwhile)
 * copies its frames into the database file without syncing it: SQLite
 * syncs the file only in the pass that catches up, here the RESTART under
 * the write gate, which then waited on the writeback of everything the
 * passes copied (tens of megabytes: 40-50 ms of stalled writers). So the
 * database file is synced here first, outside the gate, then the WAL (the
 * RESTART syncs it before copying): the RESTART's own syncs find only what
 * came in since. Through the connection's own file handles: another
 * descriptor of the database, once closed, would drop this process's locks
 * on it. */
static void sp_checkpointer_presync(sqlite3 *db) {
    static const int ops[] = {SQLITE_FCNTL_FILE_POINTER, SQLITE_FCNTL_JOURNAL_POINTER};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        sqlite3_file *file = NULL;
        if (sqlite3_file_control(db, "main", ops[i], &file) == SQLITE_OK && file != NULL && file->pMethods != NULL)
            (void)file->pMethods->xSync(file, SQLITE_SYNC_NORMAL);
    }
}

/* Woken by a commit that left the WAL long (sp_wal_hook), or idle: a
 * PASSIVE checkpoint copies what no reader still needs and waits for
 * nobody. SQLite restarts the WAL from its beginning only when a writer
 * finds all of it copied, which never happens while writes keep coming:
 * the WAL then grows without end (2 GB in ten seconds of ingestion), and
 * every frame lands on a page the kernel must first allocate and zero.
 * So a long WAL is copied in passes while writes go on, each catching up
 * on what came in during the one before and followed by syncs of its own
 * (sp_checkpointer_presync), until few frames came in; then a RESTART
 * checkpoint under the write gate copies those, waits for readers of older
 * frames, and makes the next commit start over at the beginning of the
 * file, whose pages are still cached. Writers of this process wait for the
 * gate only during that last, short pass, whose fsyncs find little to
 * write: about 2 ms where one pass and a RESTART held it for 50 ms on this
 * disk under callbacks. Another process's writers: SQLite's busy
 * handler makes them wait, or the checkpoint gives up (busy) and tries
 * again at the next wake-up. */
static void *sp_checkpointer(void *arg) {
    sp_sqlite_gate *g = arg;
    sqlite3 *db = NULL;
    /* ck_lock is held whenever this thread is inside SQLite (it is released
     * only while waiting), so sp_gates_before_fork can keep it out */
    pthread_mutex_lock(&g->ck_lock);
    if (sqlite3_open_v2(g->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL) ==
        SQLITE_OK) {
        sqlite3_busy_timeout(db, 50);
        int chunk = SP_SQLITE_CHUNK; /* checkpoints are what extend the file */
        (void)sqlite3_file_control(db, "main", SQLITE_FCNTL_CHUNK_SIZE, &chunk);
        /* reading the schema opens the file and its WAL: a connection that
         * has not is not in WAL mode yet, and its checkpoints do nothing */
        (void)sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    }
    g->ck_started = true;
    pthread_cond_broadcast(&g->ck_wake);
    uint_fast64_t commits_seen = atomic_load(&g->commits);
    while (!g->ck_stop) {
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_sec += SP_SQLITE_CHECKPOINT_IDLE_MS / 1000;
        if (at.tv_nsec >= 1000000000L) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000L;
        }
        bool timed_out = pthread_cond_timedwait(&g->ck_wake, &g->ck_lock, &at) == ETIMEDOUT;
        if (g->ck_stop || db == NULL) continue;
        /* On the timer, only when nothing was committed since the last
         * look: a checkpoint copies each page once however many frames of
         * it the WAL holds, so under a steady load it waits for the WAL's
         * limit (the hook's wake-up) and copies far fewer pages than one a
         * second did (the callbacks writer dirties pages all over the
         * outbox: a tenth of the process's time went to copying them). */
        uint_fast64_t commits = atomic_load(&g->commits);
        bool quiet = commits == commits_seen;
        commits_seen = commits;
        if (timed_out && !quiet) continue;
        int wal_frames = -1, long_wal = atomic_load(&sp_checkpoint_frames);
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, NULL);
        for (int pass = 0; wal_frames >= long_wal; pass++) {
            sp_checkpointer_presync(db);
            if (pass == SP_SQLITE_CATCH_UP_PASSES) break;
            int before = wal_frames; /* the frames there when the last pass began */
            (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, NULL);
            if (wal_frames - before <= SP_SQLITE_GATED_FRAMES) {
                sp_checkpointer_presync(db);
                break;
            }
        }
        if (wal_frames >= long_wal) {
            /* writers wait meanwhile, so a reader still on older frames is
             * waited for only briefly: busy, the restart is left for the
             * next wake-up */
            sqlite3_busy_timeout(db, SP_SQLITE_RESTART_WAIT_MS);
            pthread_mutex_lock(&g->lock);
            (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, &wal_frames, NULL);
            pthread_mutex_unlock(&g->lock);
            sqlite3_busy_timeout(db, 50);
        }
        /* opened before the first connection switched the file to WAL: a
         * read makes this connection notice */
        if (wal_frames < 0) (void)sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    }
    if (db != NULL) {
        /* the last connection is closing: leave the WAL copied back */
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        sqlite3_close(db);
    }
    pthread_mutex_unlock(&g->ck_lock);
    return NULL;
}

/* Runs on the committing connection, after its commit: only a wake-up,
 * and never a wait. When the lock is taken the checkpointer is at work
 * already (or a fork is being prepared); the next commit wakes it again. */
static int sp_wal_hook(void *arg, sqlite3 *db, const char *name, int frames) {
    (void)db;
    (void)name;
    sp_sqlite_gate *g = arg;
    atomic_fetch_add_explicit(&g->commits, 1, memory_order_relaxed);
    if (frames >= atomic_load(&sp_checkpoint_frames) && pthread_mutex_trylock(&g->ck_lock) == 0) {
        pthread_cond_signal(&g->ck_wake);
        pthread_mutex_unlock(&g->ck_lock);
    }
    return SQLITE_OK;
}

static void sp_checkpointer_start(sp_sqlite_gate *g) {
    g->ck_stop = false;
    g->ck_started = false;
    if (pthread_mutex_init(&g->ck_lock, NULL) != 0) goto fail;
    if (pthread_cond_init(&g->ck_wake, NULL) != 0) {
        pthread_mutex_destroy(&g->ck_lock);
        goto fail;
    }
    if (pthread_create(&g->thread, NULL, sp_checkpointer, g) != 0) {
        pthread_cond_destroy(&g->ck_wake);
        pthread_mutex_destroy(&g->ck_lock);
        goto fail;
    }
    /* Returns once the thread is up and has opened its connection: a fork
     * from now on finds it either waiting or holding ck_lock, never in the
     * middle of starting (where a sanitizer's allocator, unlike glibc's,
     * may hold a lock the child would inherit locked). */
    pthread_mutex_lock(&g->ck_lock);
    while (!g->ck_started) pthread_cond_wait(&g->ck_wake, &g->ck_lock);
    pthread_mutex_unlock(&g->ck_lock);
    g->checkpointer = true;
    return;
fail:
    return;
}

static void sp_checkpointer_stop(sp_sqlite_gate *g) {
    if (!g->checkpointer) return;
    pthread_mutex_lock(&g->ck_lock);
    g->ck_stop = true;
    pthread_cond_signal(&g->ck_wake);
    pthread_mutex_unlock(&g->ck_lock);
    pthread_join(g->thread, NULL);
    pthread_cond_destroy(&g->ck_wake);
    pthread_mutex_destroy(&g->ck_lock);
    g->checkpointer = false;
}

static void sp_conn_close(sp_sqlite_conn *c) {
    for (size_t i = 0; i < SP_Q__COUNT; i++) {
        sqlite3_finalize(c->stmts[i]);
        c->stmts[i] = NULL;
    }
    sqlite3_close(c->db);
    c->db = NULL;
}

static sp_sqlite_gate *sp_gate_acquire_ref(const struct stat *st, const char *path) {
    (void)pthread_once(&sp_gates_once, sp_gates_register_fork);
    sp_sqlite_gate *found = NULL, *free_slot = NULL;
    pid_t self = getpid();
    pthread_mutex_lock(&sp_gates_lock);
    for (size_t i = 0; i < SP_SQLITE_MAX_GATES && found == NULL; i++) {
        sp_sqlite_gate *g = &sp_gates[i];
        if (g->users > 0 && g->owner == self && g->dev == st->st_dev && g->ino == st->st_ino) found = g;
        else if (g->users == 0 && free_slot == NULL) free_slot = g;
    }
    size_t n = strlen(path) + 1;
    if (found == NULL && free_slot != NULL && (free_slot->path = sp_malloc(n)) != NULL) {
        if (pthread_mutex_init(&free_slot->lock, NULL) == 0) {
            memcpy(free_slot->path, path, n);
            free_slot->dev = st->st_dev;
            free_slot->ino = st->st_ino;
            free_slot->owner = self;
            free_slot->writer = NULL;
            found = free_slot;
            sp_checkpointer_start(found);
        } else {
            sp_free(free_slot->path);
            free_slot->path = NULL;
        }
    }
    if (found != NULL) found->users++;
    pthread_mutex_unlock(&sp_gates_lock);
    return found;
}

static void sp_gate_release_ref(sp_sqlite_gate *g) {
    if (g == NULL) return;
    pthread_mutex_lock(&sp_gates_lock);
    if (--g->users == 0 && g->owner != getpid()) {
        /* inherited across fork: the parent's writer is not ours to close */
        g->writer = NULL;
        sp_free(g->path);
        g->path = NULL;
    } else if (g->users == 0) {
        if (g->writer != NULL) {
            sp_conn_close(g->writer);
            sp_free(g->writer);
            g->writer = NULL;
        }
        sp_checkpointer_stop(g);
        pthread_mutex_destroy(&g->lock);
        sp_free(g->path);
        g->path = NULL;
    }
    pthread_mutex_unlock(&sp_gates_lock);
}

typedef struct {
    sp_sqlite_conn own;
    sp_sqlite_conn *conn; /* own, or the gate's writer while a write transaction is open */
    bool durable;         /* the keyring's: synchronous=FULL, so never the shared writer */
    sp_sqlite_gate *gate; /* NULL past SP_SQLITE_MAX_GATES files: the busy handler alone */
    bool gate_held;
    sqlite3_stmt *cur;   /* the statement in flight */
    bool first_pending;  /* run stepped onto a row step has not handed out yet */
    bool done;
} sp_sqlite;

static sp_error sp_sqlite_err(int rc) {
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return SP_ERR_CONFLICT;
    case SQLITE_NOMEM:
        return SP_ERR_NO_MEMORY;
    case SQLITE_TOOBIG:
        return SP_ERR_TOO_LARGE;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) return SP_ERR_EXISTS;
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return SP_ERR_NOT_FOUND;
        return SP_ERR_STORE;
    default:
        return SP_ERR_STORE;
    }
}

/* ---- sp_json_merge(old, new): shallow merge of two JSON objects ---- */

static size_t sp_ws(const char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* *i at a '"': moves past the closing one. */
static bool sp_skip_string(const char *s, size_t n, size_t *i) {
    size_t j = *i + 1;
    while (j < n) {
        if (s[j] == '\\') {
            j += 2;
        } else if (s[j] == '"') {
            *i = j + 1;
            return true;
        } else {
            j++;
        }
    }
    return false;
}

/* *i at a value: moves past it. Nested values are skipped by bracket depth;
 * the texts come from a JSON encoder, so the shape is all that matters. */
static bool sp_skip_value(const char *s, size_t n, size_t *i) {
    size_t j = *i;
    if (j >= n) return false;
    if (s[j] == '"') return sp_skip_string(s, n, i);
    if (s[j] == '{' || s[j] == '[') {
        size_t depth = 0;
        while (j < n) {
            char c = s[j];
            if (c == '"') {
                if (!sp_skip_string(s, n, &j)) return false;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            if (c == '}' || c == ']') {
                if (--depth == 0) {
                    *i = j + 1;
                    return true;
                }
            }
            j++;
        }
        return false;
    }
    while (j < n && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' &&
           s[j] != '\r')
        j++;
    if (j == *i) return false;
    *i = j;
    return true;
}

/* Member spans of an object, one at a time: *i at '{' first. */
typedef struct {
    const char *s;
    size_t n, i;
    bool open;
} sp_members;

typedef struct {
    size_t key, key_end, end; /* "key" at [key, key_end), the member up to end */
} sp_member;

/* 1: a member; 0: the end of the object; -1: malformed. */
static int sp_next_member(sp_members *m, sp_member *out) {
    size_t i = sp_ws(m->s, m->i, m->n);
    if (!m->open) {
        if (i >= m->n || m->s[i] != '{') return -1;
        m->open = true;
        i = sp_ws(m->s, i + 1, m->n);
        if (i < m->n && m->s[i] == '}') {
            m->i = i + 1;
            return sp_ws(m->s, m->i, m->n) == m->n ? 0 : -1;
        }
    } else {
        if (i >= m->n) return -1;
        if (m->s[i] == '}') {
            m->i = i + 1;
            return sp_ws(m->s, m->i, m->n) == m->n ? 0 : -1;
        }
        if (m->s[i] != ',') return -1;
        i = sp_ws(m->s, i + 1, m->n);
    }
    if (i >= m->n || m->s[i] != '"') return -1;
    out->key = i;
    if (!sp_skip_string(m->s, m->n, &i)) return -1;
    out->key_end = i;
    i = sp_ws(m->s, i, m->n);
    if (i >= m->n || m->s[i] != ':') return -1;
    i = sp_ws(m->s, i + 1, m->n);
    if (!sp_skip_value(m->s, m->n, &i)) return -1;
    out->end = i;
    m->i = i;
    return 1;
}

/* True when the object b has a member whose key is spelled like a's. */
static bool sp_has_key(const char *b, size_t bn, const char *key, size_t key_len) {
    sp_members m = {b, bn, 0, false};
    sp_member mb;
    while (sp_next_member(&m, &mb) == 1) {
        if (mb.key_end - mb.key == key_len && memcmp(b + mb.key, key, key_len) == 0) return true;
    }
    return false;
}

static void sp_sqlite_merge(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    const char *a = (const char *)sqlite3_value_text(argv[0]);
    size_t an = (size_t)sqlite3_value_bytes(argv[0]);
    const char *b = (const char *)sqlite3_value_text(argv[1]);
    size_t bn = (size_t)sqlite3_value_bytes(argv[1]);
    if (a == NULL || b == NULL) {
        sqlite3_result_error(ctx, "sp_json_merge: NULL", -1);
        return;
    }
    char *out = sp_malloc(an + bn + 2);
    if (out == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    size_t len = 0;
    out[len++] = '{';
    int r;
    sp_members m = {a, an, 0, false};
    sp_member mem;
    while ((r = sp_next_member(&m, &mem)) == 1) {
        if (sp_has_key(b, bn, a + mem.key, mem.key_end - mem.key)) continue;
        if (len > 1) out[len++] = ',';
        memcpy(out + len, a + mem.key, mem.end - mem.key);
        len += mem.end - mem.key;
    }
    if (r == 0) {
        m = (sp_members){b, bn, 0, false};
        while ((r = sp_next_member(&m, &mem)) == 1) {
            if (len > 1) out[len++] = ',';
            memcpy(out + len, b + mem.key, mem.end - mem.key);
            len += mem.end - mem.key;
        }
    }
    if (r != 0) {
        sp_free(out);
        sqlite3_result_error(ctx, "sp_json_merge: not a JSON object", -1);
        return;
    }
    out[len++] = '}';
    sqlite3_result_text64(ctx, out, len, sp_free, SQLITE_UTF8);
}

/* ---- sp_uuid_v7(): a fresh time-ordered UUID per call ---- */

/* Message ids of an expanded campaign are made inside its INSERT … SELECT;
 * time-ordered, they land at the end of the message_id index instead of at
 * random pages. */
static void sp_sqlite_uuid_v7(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    (void)argv;
    char id[37];
    if (sp_uuid_v7(id) != SP_OK) {
        sqlite3_result_error(ctx, "sp_uuid_v7: no randomness", -1);
        return;
    }
    sqlite3_result_text(ctx, id, 36, SQLITE_TRANSIENT);
}

/* ---- the driver ---- */

static void sp_gate_leave(sp_sqlite *d) {
    if (!d->gate_held) return;
    d->gate_held = false;
    d->conn = &d->own;
    pthread_mutex_unlock(&d->gate->lock);
}

static void sp_sqlite_disconnect(void *vd) {
    sp_sqlite *d = vd;
    if (d == NULL) return;
    if (d->gate_held && d->conn != &d->own) (void)sqlite3_exec(d->conn->db, "ROLLBACK", NULL, NULL, NULL);
    sp_gate_leave(d);
    sp_conn_close(&d->own);
    sp_gate_release_ref(d->gate);
    sp_free(d);
}

/* Waits for this process's other writers as long as SQLite would wait for
 * another process's: then it is the same SP_ERR_CONFLICT. */
static sp_error sp_gate_enter(sp_sqlite *d) {
    if (d->gate == NULL || d->gate_held) return SP_OK;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SP_SQLITE_BUSY_MS / 1000;
    int rc = pthread_mutex_timedlock(&d->gate->lock, &deadline);
    if (rc == ETIMEDOUT) return SP_ERR_CONFLICT;
    SP_ENSURE(rc == 0, SP_ERR_STORE);
    d->gate_held = true;
    return SP_OK;
}

static sp_error sp_conn_open(const char *path, bool durable, sp_sqlite_gate *gate, sp_sqlite_conn *c);

/* Under the gate: the shared writer, opened by the first write. */
static sp_error sp_gate_writer(sp_sqlite *d) {
    sp_sqlite_gate *g = d->gate;
    if (g->writer == NULL) {
        sp_sqlite_conn *w = sp_calloc(1, sizeof *w);
        SP_ENSURE(w != NULL, SP_ERR_NO_MEMORY);
        sp_error rc = sp_conn_open(g->path, false, g, w);
        if (rc != SP_OK) {
            sp_free(w);
            return rc;
        }
        g->writer = w;
    }
    d->conn = g->writer;
    return SP_OK;
}

/* A transaction's BEGIN, COMMIT and ROLLBACK run from statements prepared
 * once per connection: parsing them again each time was a tenth of a small
 * transaction's cost. Other scripts (migrations) go through sqlite3_exec. */
static int sp_conn_exec(sp_sqlite_conn *c, const char *sql) {
    static const sp_store_q single[] = {SP_Q_BEGIN, SP_Q_BEGIN_READ, SP_Q_COMMIT, SP_Q_ROLLBACK};
    sp_store_q q = SP_Q__COUNT;
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++)
        if (sql == sp_sqlite_sql[single[i]]) q = single[i];
    if (q == SP_Q__COUNT) {
        int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? rc : sqlite3_extended_errcode(c->db);
    }
    if (c->stmts[q] == NULL &&
        sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->stmts[q], NULL) != SQLITE_OK)
        return sqlite3_extended_errcode(c->db);
    int rc = sqlite3_step(c->stmts[q]);
    if (rc != SQLITE_DONE) rc = sqlite3_extended_errcode(c->db);
    else rc = SQLITE_OK;
    (void)sqlite3_reset(c->stmts[q]);
    return rc;
}

static sp_error sp_sqlite_script(void *vd, const char *sql) {
    sp_sqlite *d = vd;
    bool write_begin = sql == sp_sqlite_sql[SP_Q_BEGIN] || sql == sp_sqlite_sql[SP_Q_MIGRATE_BEGIN];
    if (write_begin && d->gate != NULL && !d->gate_held) {
        SP_GUARD(sp_gate_enter(d));
        sp_error rc = d->durable ? SP_OK : sp_gate_writer(d);
        if (rc != SP_OK) {
            sp_gate_leave(d);
            return rc;
        }
    }
    sqlite3 *db = d->conn->db;
    int rc = sp_conn_exec(d->conn, sql);
    sp_error err = rc == SQLITE_OK ? SP_OK : sp_sqlite_err(rc);
    /* the gate (and the shared writer) is held exactly while a write
     * transaction is open */
    if (sqlite3_get_autocommit(db)) sp_gate_leave(d);
    return err;
}

/* The database file, made private before SQLite touches it. An existing
 * file is only looked at (lstat), never opened here: closing any descriptor
 * of a file drops every POSIX lock this process holds on it, SQLite's
 * included, and another process would then believe it is alone, check-
 * point, and delete the WAL under our connections' feet. A missing one is
 * created exclusively, while nobody can hold a lock on it yet. */
static sp_error sp_sqlite_prepare_file(const char *path, struct stat *st) {
    if (lstat(path, st) != 0) {
        SP_ENSURE(errno == ENOENT, errno == ENOTDIR ? SP_ERR_BAD_CONFIG : SP_ERR_IO);
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) close(fd);
        else SP_ENSURE(errno == EEXIST, errno == ENOENT || errno == ENOTDIR ? SP_ERR_BAD_CONFIG : SP_ERR_IO);
        SP_ENSURE(lstat(path, st) == 0, SP_ERR_IO);
    }
    SP_ENSURE(S_ISREG(st->st_mode), SP_ERR_IO);
    SP_ENSURE((st->st_mode & 077) == 0, SP_ERR_INSECURE_PERMISSIONS);
    return SP_OK;
}

static sp_error sp_exec(sqlite3 *db, const char *sql) {
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? SP_OK : sp_sqlite_err(sqlite3_extended_errcode(db));
}

static sp_error sp_conn_open(const char *path, bool durable, sp_sqlite_gate *gate, sp_sqlite_conn *c) {
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                             sp_sqlite_vfs());
    sp_error err = rc == SQLITE_OK ? SP_OK : (rc == SQLITE_NOMEM ? SP_ERR_NO_MEMORY : SP_ERR_STORE);
    if (err == SP_OK) {
        sqlite3_extended_result_codes(c->db, 1);
        sqlite3_busy_timeout(c->db, SP_SQLITE_BUSY_MS);
        err = sp_exec(c->db, "PRAGMA journal_mode = WAL");
    }
    if (err == SP_OK)
        err = sp_exec(c->db, durable ? "PRAGMA synchronous = FULL; " SP_SQLITE_PRAGMAS
                                     : "PRAGMA synchronous = NORMAL; " SP_SQLITE_PRAGMAS);
    /* The database file grows in steps of SP_SQLITE_CHUNK rather than a
     * page at a time: a reader maps the file (mmap_size) and remaps all of
     * it whenever the file has grown, which with page-sized growth was
     * hundreds of munmaps a second, each a TLB shootdown and page faults. */
    if (err == SP_OK) {
        int chunk = SP_SQLITE_CHUNK;
        (void)sqlite3_file_control(c->db, "main", SQLITE_FCNTL_CHUNK_SIZE, &chunk);
    }
    /* the hook replaces SQLite's automatic checkpoint on this connection */
    if (err == SP_OK && gate != NULL && gate->checkpointer) (void)sqlite3_wal_hook(c->db, sp_wal_hook, gate);
    if (err == SP_OK &&
        sqlite3_create_function_v2(c->db, "sp_json_merge", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                   sp_sqlite_merge, NULL, NULL, NULL) != SQLITE_OK)
        err = SP_ERR_STORE;
    if (err == SP_OK && sqlite3_create_function_v2(c->db, "sp_uuid_v7", 0, SQLITE_UTF8, NULL, sp_sqlite_uuid_v7, NULL,
                                                   NULL, NULL) != SQLITE_OK)
        err = SP_ERR_STORE;
    if (err != SP_OK) sp_conn_close(c);
    return err;
}

static sp_error sp_sqlite_connect(const char *path, bool durable, void **out) {
    struct stat st;
    SP_GUARD(sp_sqlite_prepare_file(path, &st));
    sp_sqlite *d = sp_calloc(1, sizeof *d);
    SP_ENSURE(d != NULL, SP_ERR_NO_MEMORY);
    d->conn = &d->own;
    d->durable = durable;
    d->gate = sp_gate_acquire_ref(&st, path);
    sp_error err = sp_conn_open(path, durable, d->gate, &d->own);
    if (err != SP_OK) {
        sp_sqlite_disconnect(d);
        return err;
    }
    *out = d;
    return SP_OK;
}

/* An array of integers as the JSON text json_each reads ("[1,2,3]"),
 * bound as a copy: at most SP_STORE_MAX_BATCH values of 20 digits. */
static int sp_sqlite_bind_ints(sqlite3_stmt *st, int col, const void *data, size_t n) {
    if (n > SP_STORE_MAX_BATCH) return SQLITE_TOOBIG;
    char text[SP_STORE_MAX_BATCH * 21 + 2];
    size_t len = 0;
    const int64_t *v = data;
    text[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0) return SQLITE_MISMATCH; /* seqs are positive */
        if (i) text[len++] = ',';
        char digits[20];
        size_t k = 0;
        uint64_t x = (uint64_t)v[i];
        do {
            digits[k++] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
        while (k) text[len++] = digits[--k];
    }
    text[len++] = ']';
    return sqlite3_bind_text(st, col, text, (int)len, SQLITE_TRANSIENT);
}

/* Strings as one JSON array text (printable ASCII: only '"' and '\\' are
 * escaped), in memory SQLite frees once it is done with the binding. */
static int sp_sqlite_bind_texts(sqlite3_stmt *st, int col, const void *data, size_t n) {
    if (n > SP_STORE_MAX_BATCH) return SQLITE_TOOBIG;
    const char *const *v = data;
    uint64_t need = 2;
    for (size_t i = 0; i < n; i++) {
        size_t k = v[i] != NULL ? strnlen(v[i], SP_STORE_MAX_ID + 1) : SP_STORE_MAX_ID + 1;
        if (k > SP_STORE_MAX_ID) return SQLITE_MISMATCH;
        need += 3 + 2 * (uint64_t)k; /* quotes, comma, every byte escaped at worst */
    }
    char *text = sqlite3_malloc64(need);
    if (text == NULL) return SQLITE_NOMEM;
    size_t len = 0;
    text[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(v[i]);
        if (i) text[len++] = ',';
        text[len++] = '"';
        for (size_t j = 0; j < k; j++) {
            if (v[i][j] == '"' || v[i][j] == '\\') text[len++] = '\\';
            text[len++] = v[i][j];
        }
        text[len++] = '"';
    }
    text[len++] = ']';
    return sqlite3_bind_text64(st, col, text, len, sqlite3_free, SQLITE_UTF8);
}

static sp_error sp_sqlite_run(void *vd, sp_store_q q, const sp_store_param *p, size_t n, uint64_t *changes) {
    sp_sqlite *d = vd;
    SP_ENSURE(q >= SP_Q__SCRIPTS && q < SP_Q__COUNT && n <= SP_STORE_MAX_PARAMS, SP_ERR_INVALID_ARGUMENT);
    sqlite3_stmt *st = d->conn->stmts[q];
    if (st == NULL) {
        int rc = sqlite3_prepare_v3(d->conn->db, sp_sqlite_sql[q], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK) return sp_sqlite_err(rc);
        d->conn->stmts[q] = st;
    }
    d->cur = st;
    d->first_pending = false;
    d->done = true;
    for (size_t i = 0; i < n; i++) {
        int col = (int)i + 1, rc;
        if (p[i].type == SP_STORE_INT_ARRAY) rc = sp_sqlite_bind_ints(st, col, p[i].data, p[i].len);
        else if (p[i].type == SP_STORE_TEXT_ARRAY) rc = sp_sqlite_bind_texts(st, col, p[i].data, p[i].len);
        else if (p[i].type == SP_STORE_INT) rc = sqlite3_bind_int64(st, col, p[i].i);
        else if (p[i].data == NULL) rc = sqlite3_bind_null(st, col);
        else if (p[i].type == SP_STORE_TEXT) rc = sqlite3_bind_text(st, col, p[i].data, (int)p[i].len, SQLITE_STATIC);
        else rc = sqlite3_bind_blob(st, col, p[i].data, (int)p[i].len, SQLITE_STATIC);
        if (rc != SQLITE_OK) return sp_sqlite_err(rc);
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        d->first_pending = true;
        d->done = false;
        return SP_OK;
    }
    if (rc != SQLITE_DONE) return sp_sqlite_err(rc);
    if (changes) *changes = (uint64_t)sqlite3_changes64(d->conn->db);
    return SP_OK;
}

static sp_error sp_sqlite_step(void *vd, bool *row) {
    sp_sqlite *d = vd;
    *row = false;
    if (d->cur == NULL || d->done) return SP_OK;
    if (d->first_pending) {
        d->first_pending = false;
        *row = true;
        return SP_OK;
    }
    int rc = sqlite3_step(d->cur);
    if (rc == SQLITE_ROW) {
        *row = true;
        return SP_OK;
    }
    d->done = true;
    return rc == SQLITE_DONE ? SP_OK : sp_sqlite_err(rc);
}

static int64_t sp_sqlite_col_int(void *vd, int col) {
    sp_sqlite *d = vd;
    return sqlite3_column_int64(d->cur, col);
}

static const uint8_t *sp_sqlite_col_bytes(void *vd, int col, size_t *len) {
    sp_sqlite *d = vd;
    *len = 0;
    int type = sqlite3_column_type(d->cur, col);
    if (type == SQLITE_NULL) return NULL;
    const uint8_t *b = type == SQLITE_BLOB ? sqlite3_column_blob(d->cur, col) : sqlite3_column_text(d->cur, col);
    *len = (size_t)sqlite3_column_bytes(d->cur, col);
    return b != NULL ? b : (const uint8_t *)""; /* an empty blob reads as NULL */
}

static void sp_sqlite_finish(void *vd) {
    sp_sqlite *d = vd;
    if (d->cur == NULL) return;
    sqlite3_reset(d->cur);
    sqlite3_clear_bindings(d->cur);
    d->cur = NULL;
    d->first_pending = false;
    d->done = true;
}

static sp_error sp_sqlite_ping(void *vd) {
    (void)vd;
    return SP_OK;
}

const sp_store_driver sp_store_sqlite_driver = {
    .name = "sqlite",
    .sql = sp_sqlite_sql,
    .migrations = sp_sqlite_migrations,
    .n_migrations = SP_ARRAY_LEN(sp_sqlite_migrations),
    .connect = sp_sqlite_connect,
    .disconnect = sp_sqlite_disconnect,
    .script = sp_sqlite_script,
    .run = sp_sqlite_run,
    .step = sp_sqlite_step,
    .col_int = sp_sqlite_col_int,
    .col_bytes = sp_sqlite_col_bytes,
    .finish = sp_sqlite_finish,
    .ping = sp_sqlite_ping,
};
