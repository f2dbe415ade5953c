/*
 * The store's PostgreSQL driver: `postgresql://…` or `postgres://…`, handed
 * to libpq as it is, for several sealpostd processes sharing one database.
 *
 * Every statement is prepared once per connection (PQprepare, with the
 * parameter types of its first use) and run with PQexecPrepared, values
 * travelling separately from the SQL and in binary: bytes as bytea, numbers
 * as int8, text as its bytes. Results come back in binary too, so nothing is
 * parsed or unescaped. No SQL is ever built from values. The outbox's batch
 * updates take their seqs as one int8[] parameter, encoded in binary into a
 * buffer of the connection, so a batch of 1,000 is one statement and no
 * allocation of ours. Claims lock with FOR UPDATE SKIP LOCKED: processes
 * sharing the outbox pass over each other's rows instead of waiting.
 *
 * Migrations hold a transaction-scoped advisory lock, so processes starting
 * together migrate once. Text keys are COLLATE "C": ids compare and sort as
 * bytes, as in SQLite, so paging by id is the same on both backends.
 *
 * Errors map by SQLSTATE: serialization failure and deadlock are
 * SP_ERR_CONFLICT, a unique key SP_ERR_EXISTS, a missing parent row
 * SP_ERR_NOT_FOUND; a lost connection is SP_ERR_STORE until a ping, or the
 * next transaction, reconnects.
 */
#include <stdio.h>

#include <libpq-fe.h>

#include "store/store_internal.h"

#define SP_PG_OID_BYTEA 17
#define SP_PG_OID_INT8 20
#define SP_PG_OID_TEXT 25
#define SP_PG_OID_INT8_ARRAY 1016
/* int8[] in binary: ndim, has-nulls, element type, length, lower bound, then
 * each element as its length (8) and value */
#define SP_PG_ARRAY_HEADER 20
/* an int8[] of SP_STORE_MAX_BATCH, or a text[] of as many ids */
#define SP_PG_ARRAY_BYTES (SP_PG_ARRAY_HEADER + (4 + SP_STORE_MAX_ID) * SP_STORE_MAX_BATCH)
#define SP_PG_OID_TEXT_ARRAY 1009

static const char *const sp_pg_sql[SP_Q__COUNT] = {
    [SP_Q_BEGIN] = "BEGIN",
    [SP_Q_BEGIN_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    [SP_Q_COMMIT] = "COMMIT",
    [SP_Q_ROLLBACK] = "ROLLBACK",
    /* the number is arbitrary, the same in every sealpost process */
    [SP_Q_MIGRATE_BEGIN] = "BEGIN; SELECT pg_advisory_xact_lock(7306081936120117)",
    [SP_Q_VERSION_TABLE] = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, "
                           "applied BIGINT NOT NULL)",
    [SP_Q_VERSION_GET] = "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
    [SP_Q_VERSION_ADD] = "INSERT INTO schema_version (version, applied) VALUES ($1, $2)",
    [SP_Q_PING] = "SELECT 1::BIGINT",
    [SP_Q_TENANT_INSERT] = "INSERT INTO tenants (id, settings, created, updated, disabled) VALUES ($1, $2, $3, $3, 0)",
    [SP_Q_TENANT_UPDATE] = "UPDATE tenants SET settings = $2, disabled = $3, updated = $4 WHERE id = $1",
    [SP_Q_TENANT_GET] = "SELECT id, settings, created, updated, disabled FROM tenants WHERE id = $1",
    [SP_Q_TENANT_LIST] = "SELECT id, settings, created, updated, disabled FROM tenants WHERE id > $1 ORDER BY id "
                         "LIMIT $2",
    [SP_Q_TENANT_DELETE] = "DELETE FROM tenants WHERE id = $1",
    [SP_Q_TENANT_DELETE_CREDS] = "DELETE FROM credentials WHERE tenant = $1",
    [SP_Q_TENANT_DELETE_KEYRING] = "DELETE FROM keyrings WHERE tenant = $1",
    [SP_Q_TENANT_EXISTS] = "SELECT 1::BIGINT FROM tenants WHERE id = $1",
    [SP_Q_CRED_COUNT_KEY] = "SELECT COUNT(*) FROM credentials WHERE client_key_hash = $1",
    [SP_Q_CRED_INSERT] = "INSERT INTO credentials (id, tenant, client_key_hash, secret_hash, created, expires, revoked) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7)",
    [SP_Q_CRED_FIND] = "SELECT id, tenant, client_key_hash, secret_hash, created, expires, revoked FROM credentials "
                       "WHERE client_key_hash = $1 ORDER BY created, id LIMIT $2",
    [SP_Q_CRED_LIST] = "SELECT id, tenant, client_key_hash, secret_hash, created, expires, revoked FROM credentials "
                       "WHERE tenant = $1 ORDER BY created, id",
    [SP_Q_CRED_REVOKE] = "UPDATE credentials SET revoked = CASE WHEN revoked = 0 THEN $3 ELSE revoked END "
                         "WHERE tenant = $1 AND id = $2",
    [SP_Q_PROFILE_INSERT] = "INSERT INTO profiles (tenant, id, attributes, created, updated) "
                            "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_PROFILE_MERGE] = "UPDATE profiles SET attributes = (attributes::jsonb || $3::jsonb)::text, updated = $4 "
                           "WHERE tenant = $1 AND id = $2",
    [SP_Q_PII_UPSERT] = "INSERT INTO profile_pii (tenant, profile_id, field, blob, blind_index, updated) "
                        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, profile_id, field) DO UPDATE SET "
                        "blob = excluded.blob, blind_index = excluded.blind_index, updated = excluded.updated",
    [SP_Q_PII_UPSERT2] = "INSERT INTO profile_pii (tenant, profile_id, field, blob, blind_index, updated) "
                         "VALUES ($1, $2, $3, $4, $5, $6), ($1, $2, $7, $8, $9, $6) "
                         "ON CONFLICT (tenant, profile_id, field) DO UPDATE SET "
                         "blob = excluded.blob, blind_index = excluded.blind_index, updated = excluded.updated",
    [SP_Q_PII_COUNT] = "SELECT COUNT(*) FROM profile_pii WHERE tenant = $1 AND profile_id = $2",
    [SP_Q_PROFILE_FIND_INDEX] = "SELECT profile_id FROM profile_pii WHERE tenant = $1 AND field = $2 AND "
                                "blind_index = $3 ORDER BY updated DESC, profile_id DESC LIMIT 1",
    [SP_Q_PROFILE_GET] = "SELECT id, attributes, created, updated FROM profiles WHERE tenant = $1 AND id = $2",
    [SP_Q_PII_GET] = "SELECT field, blob FROM profile_pii WHERE tenant = $1 AND profile_id = $2 ORDER BY field",
    [SP_Q_PROFILE_GET_MANY] = "SELECT j.key - 1, p.id, p.attributes, p.created, p.updated, x.field, x.blob "
                              "FROM unnest($2::text[]) WITH ORDINALITY AS j(value, key) "
                              "JOIN profiles p ON p.tenant = $1 AND p.id = j.value "
                              "LEFT JOIN profile_pii x ON x.tenant = $1 AND x.profile_id = p.id "
                              "ORDER BY j.key, x.field",
    [SP_Q_PROFILE_DELETE] = "DELETE FROM profiles WHERE tenant = $1 AND id = $2",
    [SP_Q_PROFILE_COUNT] = "SELECT COUNT(*) FROM profiles WHERE tenant = $1",
    [SP_Q_EVENT_INSERT] = "INSERT INTO events (tenant, id, profile_id, name, ts, properties, created) "
                          "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_EVENT_COUNT] = "SELECT COUNT(*) FROM events WHERE tenant = $1",
    [SP_Q_EVENT_COUNT_PROFILE] = "SELECT COUNT(*) FROM events WHERE tenant = $1 AND profile_id = $2",
    [SP_Q_KEYRING_ENSURE] = "INSERT INTO keyrings (tenant, generation, doc) VALUES ($1, $2, NULL) "
                            "ON CONFLICT (tenant) DO NOTHING",
    [SP_Q_KEYRING_LOCK] = "SELECT generation FROM keyrings WHERE tenant = $1 FOR UPDATE",
    [SP_Q_KEYRING_READ] = "SELECT generation, doc FROM keyrings WHERE tenant = $1",
    [SP_Q_KEYRING_GENERATION] = "SELECT generation FROM keyrings WHERE tenant = $1",
    [SP_Q_KEYRING_WRITE] = "UPDATE keyrings SET doc = $2, generation = generation + 1 WHERE tenant = $1",
    [SP_Q_CHANNEL_INSERT] = "INSERT INTO channels (tenant, id, kind, config, secrets, created, updated) "
                            "VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (tenant, id) DO NOTHING",
    [SP_Q_CHANNEL_UPDATE] = "UPDATE channels SET kind = $3, config = $4, secrets = $5, updated = $6 "
                            "WHERE tenant = $1 AND id = $2",
    [SP_Q_CHANNEL_GET] = "SELECT id, kind, config, secrets, created, updated FROM channels WHERE tenant = $1 AND id = $2",
    [SP_Q_CHANNEL_LIST] = "SELECT id, kind, config, secrets, created, updated FROM channels WHERE tenant = $1 "
                          "AND id > $2 ORDER BY id LIMIT $3",
    /* a campaign made meanwhile waits for this delete (its foreign key
     * check shares the row), then finds the channel gone */
    [SP_Q_CHANNEL_LOCK] = "SELECT 1::BIGINT FROM channels WHERE tenant = $1 AND id = $2 FOR UPDATE",
    [SP_Q_CHANNEL_USERS] = "SELECT COUNT(*) FROM campaigns WHERE tenant = $1 AND channel = $2",
    [SP_Q_CHANNEL_LIVE] = "SELECT COUNT(*) FROM outbox WHERE tenant = $1 AND channel = $2 AND campaign IS NULL "
                          "AND state IN ('queued', 'sending')",
    [SP_Q_CHANNEL_DELETE_SENDS] = "DELETE FROM outbox WHERE tenant = $1 AND channel = $2 AND campaign IS NULL",
    [SP_Q_CHANNEL_DELETE] = "DELETE FROM channels WHERE tenant = $1 AND id = $2",
    [SP_Q_CAMPAIGN_INSERT] = "INSERT INTO campaigns (tenant, id, channel, spec, state, send_at, total, created, updated) "
                             "VALUES ($1, $2, $3, $4, $5, NULLIF($6, 0), 0, $7, $7)",
    [SP_Q_CAMPAIGN_GET] = "SELECT id, channel, spec, state, send_at, total, created, updated FROM campaigns "
                          "WHERE tenant = $1 AND id = $2",
    [SP_Q_CAMPAIGN_LIST] = "SELECT id, channel, spec, state, send_at, total, created, updated FROM campaigns "
                           "WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3",
    [SP_Q_CAMPAIGN_DUE] = "SELECT tenant, id FROM campaigns WHERE state = 'scheduled' AND send_at <= $1 "
                          "ORDER BY send_at, tenant, id LIMIT $2",
    [SP_Q_CAMPAIGN_LOCK] = "SELECT state, channel, send_at, expanded_to FROM campaigns WHERE tenant = $1 AND id = $2 "
                           "FOR UPDATE",
    [SP_Q_CAMPAIGN_STALE] = "SELECT tenant, id FROM campaigns WHERE state = 'queued' AND updated < $1 "
                            "ORDER BY updated LIMIT $2",
    [SP_Q_CAMPAIGN_EXPANDED] = "UPDATE campaigns SET expanded_to = $3, total = total + $4, updated = $5 "
                               "WHERE tenant = $1 AND id = $2",
    [SP_Q_CAMPAIGN_SET_STATE] = "UPDATE campaigns SET state = $3, updated = $4 WHERE tenant = $1 AND id = $2",
    [SP_Q_CAMPAIGN_ADD_TOTAL] = "UPDATE campaigns SET total = total + $3, updated = $4 WHERE tenant = $1 AND id = $2",
    [SP_Q_CAMPAIGN_CANCEL_SENDS] = "UPDATE outbox SET state = 'failed', last_error = 'cancelled', updated = $3 "
                                   "WHERE tenant = $1 AND campaign = $2 AND state = 'queued'",
    [SP_Q_CAMPAIGN_DELETE] = "DELETE FROM campaigns WHERE tenant = $1 AND id = $2",
#define SP_PG_EXPAND_FROM                                                                                     \
    "FROM profiles p WHERE p.tenant = $1 AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.tenant = $1 "     \
    "AND x.profile_id = p.id AND x.kind = (SELECT c.kind FROM channels c WHERE c.tenant = $1 AND c.id = $3)) "
#define SP_PG_EXPAND                                                                                                 \
    "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, created, " \
    "updated) SELECT $1, $2, $3, p.id, 'msg_' || sp_uuid_v7()::text, 'queued', 0, $4, $4, $4 " SP_PG_EXPAND_FROM
#define SP_PG_EXPAND_END " ON CONFLICT (tenant, campaign, profile_id) DO NOTHING"
    /* a claim's row from the start, as SP_Q_OUTBOX_CLAIM leaves it */
#define SP_PG_LEASED                                                                                                 \
    "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, next_attempt, "          \
    "lease_owner, lease_until, created, updated) SELECT $1, $2, $3, p.id, 'msg_' || sp_uuid_v7()::text, 'sending', " \
    "1, $10, $9, $10, $4, $4 " SP_PG_EXPAND_FROM
#define SP_PG_LEASED_END SP_PG_EXPAND_END " RETURNING seq, profile_id, message_id"
    [SP_Q_OUTBOX_EXPAND_ALL] = SP_PG_EXPAND SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ID] = SP_PG_EXPAND "AND p.id = $5" SP_PG_EXPAND_END,
    /* jsonb equality: a string never equals a number, 42 equals 42.0 */
#define SP_PG_TEXT_MATCH "AND p.attributes::jsonb -> $5 = to_jsonb($6::text)"
#define SP_PG_NUMBER_MATCH "AND p.attributes::jsonb -> $5 = to_jsonb($6::numeric)"
    [SP_Q_OUTBOX_EXPAND_TEXT] = SP_PG_EXPAND SP_PG_TEXT_MATCH SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER] = SP_PG_EXPAND SP_PG_NUMBER_MATCH SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ALL_RANGE] = SP_PG_EXPAND "AND p.id > $5 AND p.id <= $6" SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_TEXT_RANGE] = SP_PG_EXPAND "AND p.id > $7 AND p.id <= $8 " SP_PG_TEXT_MATCH SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER_RANGE] = SP_PG_EXPAND "AND p.id > $7 AND p.id <= $8 " SP_PG_NUMBER_MATCH
                                        SP_PG_EXPAND_END,
    [SP_Q_OUTBOX_EXPAND_ID_LEASED] = SP_PG_LEASED "AND p.id = $5" SP_PG_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_ALL_LEASED] = SP_PG_LEASED "AND p.id > $5 AND p.id <= $6" SP_PG_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_TEXT_LEASED] = SP_PG_LEASED "AND p.id > $7 AND p.id <= $8 " SP_PG_TEXT_MATCH
                                       SP_PG_LEASED_END,
    [SP_Q_OUTBOX_EXPAND_NUMBER_LEASED] = SP_PG_LEASED "AND p.id > $7 AND p.id <= $8 " SP_PG_NUMBER_MATCH
                                         SP_PG_LEASED_END,
#undef SP_PG_TEXT_MATCH
#undef SP_PG_NUMBER_MATCH
#undef SP_PG_EXPAND
#undef SP_PG_EXPAND_END
#undef SP_PG_EXPAND_FROM
#undef SP_PG_LEASED
#undef SP_PG_LEASED_END
    [SP_Q_PROFILE_PAGE_END] = "SELECT id FROM profiles WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT 1 OFFSET $3",
    [SP_Q_PROFILE_LAST] = "SELECT id FROM profiles WHERE tenant = $1 AND id > $2 ORDER BY id DESC LIMIT 1",
    [SP_Q_OUTBOX_ENQUEUE] = "INSERT INTO outbox (tenant, campaign, channel, profile_id, message_id, state, attempts, "
                            "next_attempt, created, updated) SELECT $1, NULL, c.id, p.id, $4, 'queued', 0, $5, $5, $5 "
                            "FROM channels c, profiles p WHERE c.tenant = $1 AND c.id = $2 AND p.tenant = $1 "
                            "AND p.id = $3 RETURNING seq",
    /* The inner select locks the rows it picks and passes over rows other
     * claimers hold (SKIP LOCKED); ARRAY(…) runs it once, before the update.
     * A claimed row's next_attempt is its lease's end, so a crashed
     * worker's rows come back through the same index range. */
    [SP_Q_OUTBOX_CLAIM] = "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $3, next_attempt = $3, "
                          "attempts = attempts + 1, updated = $2 WHERE seq = ANY(ARRAY(SELECT seq FROM outbox "
                          "WHERE state IN ('queued', 'sending') AND next_attempt <= $2 ORDER BY next_attempt, seq "
                          "LIMIT $4 FOR UPDATE SKIP LOCKED)) "
                          "RETURNING seq, tenant, campaign, channel, profile_id, message_id, attempts",
    [SP_Q_OUTBOX_RENEW_ONE] = "UPDATE outbox SET lease_until = $3, next_attempt = $3 "
                              "WHERE seq = $2 AND state = 'sending' AND lease_owner = $1",
    [SP_Q_OUTBOX_RENEW_MANY] = "UPDATE outbox SET lease_until = $3, next_attempt = $3 "
                               "WHERE seq = ANY($2) AND state = 'sending' AND lease_owner = $1",
    [SP_Q_OUTBOX_DONE_ONE] = "UPDATE outbox SET state = 'sent', sent_at = $3, updated = $3 "
                             "WHERE seq = $2 AND state = 'sending' AND lease_owner = $1",
    [SP_Q_OUTBOX_DONE_MANY] = "UPDATE outbox SET state = 'sent', sent_at = $3, updated = $3 "
                              "WHERE seq = ANY($2) AND state = 'sending' AND lease_owner = $1",
#define SP_PG_RETRY                                                                                                 \
    "UPDATE outbox SET state = CASE WHEN attempts >= $6 THEN 'dead' WHEN campaign IS NOT NULL AND EXISTS (SELECT 1 " \
    "FROM campaigns c WHERE c.tenant = outbox.tenant AND c.id = outbox.campaign AND c.state = 'cancelled') "       \
    "THEN 'failed' ELSE 'queued' END, next_attempt = $3, last_error = $4, provider_status = $5, updated = $7 "     \
    "WHERE state = 'sending' AND lease_owner = $1 AND seq "
    [SP_Q_OUTBOX_RETRY_ONE] = SP_PG_RETRY "= $2",
    [SP_Q_OUTBOX_RETRY_MANY] = SP_PG_RETRY "= ANY($2)",
#undef SP_PG_RETRY
    [SP_Q_OUTBOX_FAIL_ONE] = "UPDATE outbox SET state = $3, last_error = $4, provider_status = $5, updated = $6 "
                             "WHERE seq = $2 AND state = 'sending' AND lease_owner = $1",
    [SP_Q_OUTBOX_FAIL_MANY] = "UPDATE outbox SET state = $3, last_error = $4, provider_status = $5, updated = $6 "
                              "WHERE seq = ANY($2) AND state = 'sending' AND lease_owner = $1",
#define SP_PG_DEFER                                                                                          \
    "UPDATE outbox SET state = 'queued', attempts = GREATEST(attempts - 1, 0), next_attempt = $3, last_error = $4, " \
    "updated = $5 WHERE state = 'sending' AND lease_owner = $1 AND seq "
    [SP_Q_OUTBOX_DEFER_ONE] = SP_PG_DEFER "= $2",
    [SP_Q_OUTBOX_DEFER_MANY] = SP_PG_DEFER "= ANY($2)",
#undef SP_PG_DEFER
    [SP_Q_OUTBOX_RELEASE] = "UPDATE outbox SET state = 'queued', attempts = GREATEST(attempts - 1, 0), "
                            "next_attempt = $2, updated = $2 WHERE state IN ('queued', 'sending') "
                            "AND state = 'sending' AND lease_owner = $1",
    [SP_Q_OUTBOX_REPLAY] = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt = $2, updated = $2 "
                           "WHERE tenant = $1 AND state = 'dead'",
    [SP_Q_OUTBOX_REPLAY_CAMPAIGN] = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt = $2, "
                                    "updated = $2 WHERE tenant = $1 AND campaign = $3 AND state = 'dead'",
    /* the claim index holds exactly these rows: no scan of what was sent */
    [SP_Q_OUTBOX_LIVE] = "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')",
    [SP_Q_OUTBOX_COUNTS] = "SELECT state, COUNT(*) FROM outbox WHERE tenant = $1 GROUP BY state",
    [SP_Q_OUTBOX_COUNTS_CAMPAIGN] = "SELECT state, COUNT(*) FROM outbox WHERE tenant = $1 AND campaign = $2 "
                                    "GROUP BY state",
    [SP_Q_OUTBOX_GET] = "SELECT seq, tenant, campaign, channel, profile_id, message_id, state, attempts, "
                        "next_attempt, lease_owner, lease_until, last_error, provider_status, created, updated, "
                        "sent_at FROM outbox WHERE message_id = $1",
    [SP_Q_CALLBACK_SEEN] = "SELECT 1::BIGINT FROM callbacks_seen WHERE tenant = $1 AND webhook_id = $2",
    [SP_Q_CALLBACK_RECORD] = "INSERT INTO callbacks_seen (tenant, webhook_id, received) VALUES ($1, $2, $3) "
                             "ON CONFLICT (tenant, webhook_id) DO NOTHING",
    /* processes pruning together pass over each other's rows */
    [SP_Q_CALLBACK_PRUNE] = "DELETE FROM callbacks_seen WHERE (tenant, webhook_id) IN (SELECT tenant, webhook_id "
                            "FROM callbacks_seen WHERE received < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    /* two processes applying reports on one message take turns */
    [SP_Q_DELIVERY_READ] = "SELECT seq, delivery, delivery_at, failure_code, opened_at, clicked_at, replied_at, "
                           "unsubscribed_at, complained_at, channel FROM outbox WHERE message_id = $2 AND tenant = $1 "
                           "FOR UPDATE",
    [SP_Q_DELIVERY_WRITE] = "UPDATE outbox SET delivery = $2, delivery_at = NULLIF($3, 0), failure_code = $4, "
                            "opened_at = NULLIF($5, 0), clicked_at = NULLIF($6, 0), replied_at = NULLIF($7, 0), "
                            "unsubscribed_at = NULLIF($8, 0), complained_at = NULLIF($9, 0), callback_at = $10, "
                            "callback_encrypted = $11 WHERE seq = $1",
    [SP_Q_MESSAGE_PROFILE] = "SELECT o.profile_id, c.kind FROM outbox o JOIN channels c ON c.tenant = o.tenant "
                             "AND c.id = o.channel WHERE o.message_id = $2 AND o.tenant = $1",
    [SP_Q_MESSAGE_STATUS] = "SELECT seq, tenant, campaign, channel, profile_id, message_id, state, attempts, "
                            "next_attempt, lease_owner, lease_until, last_error, provider_status, created, updated, "
                            "sent_at, delivery, delivery_at, failure_code, opened_at, clicked_at, replied_at, "
                            "unsubscribed_at, complained_at, callback_at, callback_encrypted FROM outbox "
                            "WHERE message_id = $2 AND tenant = $1",
    /* only for a profile there: a foreign-key error would spoil a
     * PostgreSQL transaction the caller means to go on with */
    [SP_Q_SUPPRESS_INSERT] = "INSERT INTO suppressions (tenant, profile_id, kind, reason, created) "
                             "SELECT tenant, id, $3, $4, $5 FROM profiles WHERE tenant = $1 AND id = $2 "
                             "ON CONFLICT (tenant, profile_id, kind) DO NOTHING",
    [SP_Q_SUPPRESS_CANCEL] = "UPDATE outbox SET state = 'failed', last_error = $5, updated = $4 "
                             "WHERE tenant = $1 AND profile_id = $2 AND state = 'queued' AND channel IN "
                             "(SELECT id FROM channels WHERE tenant = $1 AND kind = $3)",
    [SP_Q_SUPPRESSED] = "SELECT reason FROM suppressions WHERE tenant = $1 AND profile_id = $2 AND kind = $3",
    [SP_Q_UNSUPPRESS] = "DELETE FROM suppressions WHERE tenant = $1 AND profile_id = $2 AND kind = $3",
/* What a user sees: the delivery state once there is one, else the outbox
 * state ('failed' from either is one group). */
#define SP_PG_STATS                                                                                             \
    "SELECT COALESCE(delivery, state), COUNT(*), COUNT(opened_at), COUNT(clicked_at), COUNT(replied_at), "       \
    "COUNT(unsubscribed_at), COUNT(complained_at) FROM outbox WHERE tenant = $1 AND campaign "
    [SP_Q_STATS] = SP_PG_STATS "= $2 GROUP BY 1",
    [SP_Q_STATS_TESTS] = SP_PG_STATS "IS NULL GROUP BY 1",
#undef SP_PG_STATS
#define SP_PG_CODES                                                                                             \
    "SELECT failure_code, COUNT(*) FILTER (WHERE delivery = 'failed'), COUNT(*) FILTER (WHERE delivery = "       \
    "'bounced') FROM outbox WHERE tenant = $1 AND delivery IN ('failed', 'bounced') AND campaign "
    [SP_Q_FAILURE_CODES] = SP_PG_CODES "= $2 GROUP BY failure_code ORDER BY failure_code",
    [SP_Q_FAILURE_CODES_TESTS] = SP_PG_CODES "IS NULL GROUP BY failure_code ORDER BY failure_code",
#undef SP_PG_CODES
/* One pass over the campaign's rows, each seen under each of its times. */
#define SP_PG_TIMELINE(campaign, b, max)                                                                        \
    "SELECT x.t / " b " * " b ", COUNT(*) FILTER (WHERE x.k = 1), COUNT(*) FILTER (WHERE x.k = 2), "             \
    "COUNT(*) FILTER (WHERE x.k = 3), COUNT(*) FILTER (WHERE x.k = 4), COUNT(*) FILTER (WHERE x.k = 5), "        \
    "COUNT(*) FILTER (WHERE x.k = 6), COUNT(*) FILTER (WHERE x.k = 7) FROM outbox o CROSS JOIN LATERAL "         \
    "(VALUES (o.sent_at, 1), (o.delivery_at, CASE o.delivery WHEN 'delivered' THEN 2 WHEN 'failed' THEN 3 "      \
    "ELSE 4 END), (o.opened_at, 5), (o.clicked_at, 6), (o.replied_at, 7)) x (t, k) WHERE o.tenant = $1 "        \
    "AND x.t IS NOT NULL AND o.campaign " campaign " GROUP BY 1 ORDER BY 1 LIMIT " max
    [SP_Q_TIMELINE] = SP_PG_TIMELINE("= $2", "$3", "$4"),
    [SP_Q_TIMELINE_TESTS] = SP_PG_TIMELINE("IS NULL", "$2", "$3"),
#undef SP_PG_TIMELINE
};

/* Version 1: the whole schema. Later versions append here; a shipped entry
 * never changes. */
static const char *const sp_pg_migrations[] = {
    "CREATE TABLE tenants (id TEXT COLLATE \"C\" PRIMARY KEY, settings TEXT NOT NULL, created BIGINT NOT NULL, "
    "  updated BIGINT NOT NULL, disabled BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE credentials (id TEXT COLLATE \"C\" PRIMARY KEY, tenant TEXT COLLATE \"C\" NOT NULL, "
    "  client_key_hash BYTEA NOT NULL, secret_hash BYTEA NOT NULL, created BIGINT NOT NULL, "
    "  expires BIGINT NOT NULL, revoked BIGINT NOT NULL);"
    "CREATE INDEX credentials_key ON credentials (client_key_hash);"
    "CREATE INDEX credentials_tenant ON credentials (tenant);"
    "CREATE TABLE profiles (tenant TEXT COLLATE \"C\" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  id TEXT COLLATE \"C\" NOT NULL, attributes TEXT NOT NULL, created BIGINT NOT NULL, "
    "  updated BIGINT NOT NULL, PRIMARY KEY (tenant, id));"
    "CREATE TABLE profile_pii (tenant TEXT COLLATE \"C\" NOT NULL, profile_id TEXT COLLATE \"C\" NOT NULL, "
    "  field TEXT COLLATE \"C\" NOT NULL, blob BYTEA NOT NULL, blind_index BYTEA, updated BIGINT NOT NULL, "
    "  PRIMARY KEY (tenant, profile_id, field), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE);"
    "CREATE INDEX profile_pii_index ON profile_pii (tenant, field, blind_index, updated DESC, profile_id DESC);"
    "CREATE TABLE events (tenant TEXT COLLATE \"C\" NOT NULL, id TEXT COLLATE \"C\" NOT NULL, "
    "  profile_id TEXT COLLATE \"C\" NOT NULL, name TEXT NOT NULL, ts BIGINT NOT NULL, properties TEXT NOT NULL, "
    "  created BIGINT NOT NULL, PRIMARY KEY (tenant, id), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE);"
    "CREATE INDEX events_profile ON events (tenant, profile_id);"
    "CREATE TABLE keyrings (tenant TEXT COLLATE \"C\" PRIMARY KEY, generation BIGINT NOT NULL, doc BYTEA);",

    /* Version 2: channels, campaigns and the outbox. A campaign's channel
     * is NO ACTION rather than RESTRICT: checked after the cascades, so a
     * tenant's delete may go through both; the store refuses deleting a
     * channel in use before the database would. sp_uuid_v7() makes the
     * message ids of an expanded campaign: a random (v4) UUID whose first
     * 48 bits become Unix milliseconds and whose version nibble becomes 7
     * (bits 52 and 53 of the bytea are the 0x10 and 0x20 of byte 6). */
    "CREATE FUNCTION sp_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$ "
    "  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING "
    "    substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), "
    "    52, 1), 53, 1), 'hex')::uuid $$;"
    "CREATE TABLE channels (tenant TEXT COLLATE \"C\" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  id TEXT COLLATE \"C\" NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('email', 'sms')), config TEXT NOT NULL, "
    "  secrets BYTEA, created BIGINT NOT NULL, updated BIGINT NOT NULL, PRIMARY KEY (tenant, id));"
    "CREATE TABLE campaigns (tenant TEXT COLLATE \"C\" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  id TEXT COLLATE \"C\" NOT NULL, channel TEXT COLLATE \"C\" NOT NULL, spec TEXT NOT NULL, "
    "  state TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', 'queued', 'sending', 'done', 'cancelled')), "
    "  send_at BIGINT, total BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL, updated BIGINT NOT NULL, "
    "  PRIMARY KEY (tenant, id), FOREIGN KEY (tenant, channel) REFERENCES channels (tenant, id));"
    "CREATE INDEX campaigns_channel ON campaigns (tenant, channel);"
    "CREATE INDEX campaigns_due ON campaigns (send_at) WHERE state = 'scheduled';"
    "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, "
    "  tenant TEXT COLLATE \"C\" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, campaign TEXT COLLATE \"C\", "
    "  channel TEXT COLLATE \"C\" NOT NULL, profile_id TEXT COLLATE \"C\" NOT NULL, "
    "  message_id TEXT COLLATE \"C\" NOT NULL UNIQUE, "
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead')), "
    "  attempts BIGINT NOT NULL DEFAULT 0, next_attempt BIGINT NOT NULL, lease_owner TEXT, lease_until BIGINT, "
    "  last_error TEXT, provider_status BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL, "
    "  updated BIGINT NOT NULL, sent_at BIGINT, "
    "  FOREIGN KEY (tenant, campaign) REFERENCES campaigns (tenant, id) ON DELETE CASCADE);"
    "CREATE UNIQUE INDEX outbox_campaign ON outbox (tenant, campaign, profile_id);"
    "CREATE INDEX outbox_claim ON outbox (next_attempt, seq) WHERE state IN ('queued', 'sending');"
    "CREATE INDEX outbox_sends ON outbox (tenant, channel, state) WHERE campaign IS NULL;",

    /* Version 3: what providers report back. A webhook-id is remembered per
     * tenant (callbacks_seen, pruned by age through its index on received);
     * a message's delivery state and first engagement times are columns of
     * its outbox row, so a campaign's numbers are counted over the outbox
     * index (tenant, campaign, profile_id) that version 2 made; suppressions
     * go with their profile. outbox_profile finds a profile's queued
     * messages when it is suppressed. Added columns are NULL or a constant
     * default: no table rewrite. */
    "CREATE TABLE callbacks_seen (tenant TEXT COLLATE \"C\" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, "
    "  webhook_id TEXT COLLATE \"C\" NOT NULL, received BIGINT NOT NULL, PRIMARY KEY (tenant, webhook_id));"
    "CREATE INDEX callbacks_seen_received ON callbacks_seen (received);"
    "CREATE TABLE suppressions (tenant TEXT COLLATE \"C\" NOT NULL, profile_id TEXT COLLATE \"C\" NOT NULL, "
    "  kind TEXT NOT NULL CHECK (kind IN ('email', 'sms')), reason TEXT NOT NULL, created BIGINT NOT NULL, "
    "  PRIMARY KEY (tenant, profile_id, kind), "
    "  FOREIGN KEY (tenant, profile_id) REFERENCES profiles (tenant, id) ON DELETE CASCADE);"
    "ALTER TABLE outbox ADD COLUMN delivery TEXT CHECK (delivery IN ('delivered', 'failed', 'bounced')), "
    "  ADD COLUMN delivery_at BIGINT, ADD COLUMN failure_code BIGINT, ADD COLUMN opened_at BIGINT, "
    "  ADD COLUMN clicked_at BIGINT, ADD COLUMN replied_at BIGINT, ADD COLUMN unsubscribed_at BIGINT, "
    "  ADD COLUMN complained_at BIGINT, ADD COLUMN callback_at BIGINT, "
    "  ADD COLUMN callback_encrypted BIGINT NOT NULL DEFAULT 0;"
    "CREATE INDEX outbox_profile ON outbox (tenant, profile_id);",

    /* Version 4: nothing to do here. SQLite's version 4 rewrites its
     * outbox's CHECKs; PostgreSQL tests an IN list in place. The versions
     * stay one count across both dialects. */
    "SELECT 1;",

    /* Version 5: a campaign's expansion in pages, resumable (SQLite's
     * version 5 says why). */
    ("ALTER TABLE campaigns ADD COLUMN expanded_to TEXT COLLATE \"C\";"
     "CREATE INDEX campaigns_expanding ON campaigns (updated) WHERE state = 'queued';"),
};

typedef struct {
    PGconn *conn;
    bool prepared[SP_Q__COUNT];
    PGresult *res; /* of the statement in flight */
    int row, rows;
    uint8_t array[SP_PG_ARRAY_BYTES]; /* the one array parameter a statement may have, encoded */
} sp_pg;

static sp_error sp_pg_err(sp_pg *d, const PGresult *res) {
    if (PQstatus(d->conn) != CONNECTION_OK) return SP_ERR_STORE;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL) return SP_ERR_STORE;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
        return SP_ERR_CONFLICT;
    if (strcmp(state, "23505") == 0) return SP_ERR_EXISTS;
    if (strcmp(state, "23503") == 0) return SP_ERR_NOT_FOUND;
    /* text the server refuses: bad encoding, or not JSON where a merge needs it */
    if (strcmp(state, "22021") == 0 || strcmp(state, "22P02") == 0 || strcmp(state, "22P05") == 0)
        return SP_ERR_INVALID_ARGUMENT;
    if (strcmp(state, "53200") == 0) return SP_ERR_NO_MEMORY;
    return SP_ERR_STORE;
}

static void sp_pg_quiet(void *arg, const char *message) {
    (void)arg;
    (void)message; /* notices ("already exists, skipping") are not errors */
}

static void sp_pg_disconnect(void *vd) {
    sp_pg *d = vd;
    if (d == NULL) return;
    PQclear(d->res);
    PQfinish(d->conn);
    sp_free(d);
}

static sp_error sp_pg_connect(const char *url, bool durable, void **out) {
    (void)durable; /* every PostgreSQL commit is durable unless the server says otherwise */
    sp_pg *d = sp_calloc(1, sizeof *d);
    SP_ENSURE(d != NULL, SP_ERR_NO_MEMORY);
    d->conn = PQconnectdb(url);
    sp_error rc = SP_OK;
    if (d->conn == NULL) rc = SP_ERR_NO_MEMORY;
    else if (PQstatus(d->conn) != CONNECTION_OK || PQsetClientEncoding(d->conn, "UTF8") != 0) rc = SP_ERR_STORE;
    if (rc != SP_OK) {
        sp_pg_disconnect(d);
        return rc;
    }
    PQsetNoticeProcessor(d->conn, sp_pg_quiet, NULL);
    *out = d;
    return SP_OK;
}

static sp_error sp_pg_script(void *vd, const char *sql) {
    sp_pg *d = vd;
    PGresult *res = PQexec(d->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    sp_error rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? SP_OK : sp_pg_err(d, res);
    /* COMMIT of a transaction that saw an error answers ROLLBACK, not an error */
    if (rc == SP_OK && strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) rc = SP_ERR_STORE;
    PQclear(res);
    return rc;
}

static void sp_pg_put32(uint8_t *out, uint32_t v) {
    for (int b = 0; b < 4; b++) out[b] = (uint8_t)(v >> (24 - 8 * b));
}

/* n values as a one-dimensional int8[] without NULLs, in array_recv's
 * binary layout. */
static void sp_pg_put_array(uint8_t *out, const int64_t *v, size_t n) {
    sp_pg_put32(out, 1);
    sp_pg_put32(out + 4, 0);
    sp_pg_put32(out + 8, SP_PG_OID_INT8);
    sp_pg_put32(out + 12, (uint32_t)n);
    sp_pg_put32(out + 16, 1);
    uint8_t *e = out + SP_PG_ARRAY_HEADER;
    for (size_t i = 0; i < n; i++, e += 12) {
        sp_pg_put32(e, 8);
        sp_pg_put32(e + 4, (uint32_t)((uint64_t)v[i] >> 32));
        sp_pg_put32(e + 8, (uint32_t)(uint64_t)v[i]);
    }
}

/* Strings as a text[] in the binary layout; false past the limits. */
static bool sp_pg_put_texts(uint8_t *out, const char *const *v, size_t n, size_t *len) {
    sp_pg_put32(out, 1);
    sp_pg_put32(out + 4, 0);
    sp_pg_put32(out + 8, SP_PG_OID_TEXT);
    sp_pg_put32(out + 12, (uint32_t)n);
    sp_pg_put32(out + 16, 1);
    size_t at = SP_PG_ARRAY_HEADER;
    for (size_t i = 0; i < n; i++) {
        size_t k = v[i] != NULL ? strnlen(v[i], SP_STORE_MAX_ID + 1) : SP_STORE_MAX_ID + 1;
        if (k > SP_STORE_MAX_ID) return false;
        sp_pg_put32(out + at, (uint32_t)k);
        memcpy(out + at + 4, v[i], k);
        at += 4 + k;
    }
    *len = at;
    return true;
}

static void sp_pg_name(sp_store_q q, char name[16]) {
    (void)snprintf(name, 16, "sp_q%d", (int)q);
}

static sp_error sp_pg_run(void *vd, sp_store_q q, const sp_store_param *p, size_t n, uint64_t *changes) {
    sp_pg *d = vd;
    SP_ENSURE(q >= SP_Q__SCRIPTS && q < SP_Q__COUNT && n <= SP_STORE_MAX_PARAMS, SP_ERR_INVALID_ARGUMENT);
    char name[16];
    sp_pg_name(q, name);
    if (!d->prepared[q]) {
        Oid types[SP_STORE_MAX_PARAMS];
        for (size_t i = 0; i < n; i++) {
            types[i] = p[i].type == SP_STORE_INT         ? SP_PG_OID_INT8
                       : p[i].type == SP_STORE_INT_ARRAY ? SP_PG_OID_INT8_ARRAY
                       : p[i].type == SP_STORE_TEXT_ARRAY ? SP_PG_OID_TEXT_ARRAY
                       : p[i].type == SP_STORE_BLOB      ? SP_PG_OID_BYTEA
                                                         : SP_PG_OID_TEXT;
        }
        PGresult *res = PQprepare(d->conn, name, sp_pg_sql[q], (int)n, types);
        sp_error rc = PQresultStatus(res) == PGRES_COMMAND_OK ? SP_OK : sp_pg_err(d, res);
        PQclear(res);
        SP_GUARD(rc);
        d->prepared[q] = true;
    }
    const char *values[SP_STORE_MAX_PARAMS];
    int lengths[SP_STORE_MAX_PARAMS], formats[SP_STORE_MAX_PARAMS];
    uint8_t ints[SP_STORE_MAX_PARAMS][8];
    bool array_used = false;
    for (size_t i = 0; i < n; i++) {
        formats[i] = 1;
        if (p[i].type == SP_STORE_INT_ARRAY) {
            SP_ENSURE(!array_used && p[i].data != NULL && p[i].len >= 1 && p[i].len <= SP_STORE_MAX_BATCH,
                      SP_ERR_INVALID_ARGUMENT);
            array_used = true;
            sp_pg_put_array(d->array, p[i].data, p[i].len);
            values[i] = (const char *)d->array;
            lengths[i] = (int)(SP_PG_ARRAY_HEADER + 12 * p[i].len);
        } else if (p[i].type == SP_STORE_TEXT_ARRAY) {
            SP_ENSURE(!array_used && p[i].data != NULL && p[i].len >= 1 && p[i].len <= SP_STORE_MAX_BATCH,
                      SP_ERR_INVALID_ARGUMENT);
            array_used = true;
            size_t len = 0;
            SP_ENSURE(sp_pg_put_texts(d->array, p[i].data, p[i].len, &len), SP_ERR_INVALID_ARGUMENT);
            values[i] = (const char *)d->array;
            lengths[i] = (int)len;
        } else if (p[i].type == SP_STORE_INT) {
            uint64_t v = (uint64_t)p[i].i;
            for (int b = 0; b < 8; b++) ints[i][b] = (uint8_t)(v >> (56 - 8 * b));
            values[i] = (const char *)ints[i];
            lengths[i] = 8;
        } else {
            values[i] = p[i].data; /* NULL: SQL NULL */
            lengths[i] = (int)p[i].len;
        }
    }
    PQclear(d->res);
    d->res = PQexecPrepared(d->conn, name, (int)n, values, lengths, formats, 1);
    d->row = -1;
    d->rows = 0;
    ExecStatusType st = PQresultStatus(d->res);
    if (st == PGRES_TUPLES_OK) {
        d->rows = PQntuples(d->res);
        return SP_OK;
    }
    if (st != PGRES_COMMAND_OK) return sp_pg_err(d, d->res);
    if (changes) {
        const char *t = PQcmdTuples(d->res);
        uint64_t v = 0;
        if (t != NULL && *t && sp_parse_u64(t, strlen(t), UINT64_MAX, &v) != SP_OK) return SP_ERR_STORE;
        *changes = v;
    }
    return SP_OK;
}

static sp_error sp_pg_step(void *vd, bool *row) {
    sp_pg *d = vd;
    *row = false;
    if (d->res == NULL || d->row >= d->rows) return SP_OK;
    d->row++;
    *row = d->row < d->rows;
    return SP_OK;
}

static int64_t sp_pg_col_int(void *vd, int col) {
    sp_pg *d = vd;
    if (PQgetisnull(d->res, d->row, col)) return 0;
    const uint8_t *v = (const uint8_t *)PQgetvalue(d->res, d->row, col);
    int len = PQgetlength(d->res, d->row, col);
    if (len != 8 && len != 4 && len != 2 && len != 1) return 0;
    uint64_t u = 0;
    for (int i = 0; i < len; i++) u = u << 8 | v[i];
    /* sign-extend the narrower integer types */
    if (len < 8 && (v[0] & 0x80) && len > 1) u |= ~(uint64_t)0 << (8 * len);
    return (int64_t)u;
}

static const uint8_t *sp_pg_col_bytes(void *vd, int col, size_t *len) {
    sp_pg *d = vd;
    *len = 0;
    if (PQgetisnull(d->res, d->row, col)) return NULL;
    *len = (size_t)PQgetlength(d->res, d->row, col);
    return (const uint8_t *)PQgetvalue(d->res, d->row, col); /* libpq NUL-terminates even binary values */
}

static void sp_pg_finish(void *vd) {
    sp_pg *d = vd;
    PQclear(d->res);
    d->res = NULL;
    d->row = d->rows = 0;
}

static sp_error sp_pg_ping(void *vd) {
    sp_pg *d = vd;
    if (PQstatus(d->conn) == CONNECTION_OK) return SP_OK;
    PQreset(d->conn);
    SP_ENSURE(PQstatus(d->conn) == CONNECTION_OK, SP_ERR_STORE);
    memset(d->prepared, 0, sizeof d->prepared); /* a new session knows none */
    if (PQsetClientEncoding(d->conn, "UTF8") != 0) return SP_ERR_STORE;
    return SP_OK;
}

const sp_store_driver sp_store_pg_driver = {
    .name = "postgresql",
    .sql = sp_pg_sql,
    .migrations = sp_pg_migrations,
    .n_migrations = SP_ARRAY_LEN(sp_pg_migrations),
    .connect = sp_pg_connect,
    .disconnect = sp_pg_disconnect,
    .script = sp_pg_script,
    .run = sp_pg_run,
    .step = sp_pg_step,
    .col_int = sp_pg_col_int,
    .col_bytes = sp_pg_col_bytes,
    .finish = sp_pg_finish,
    .ping = sp_pg_ping,
};
