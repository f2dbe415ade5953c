/*
 * The relay's own state, one SQLite file (WAL), so that a restart loses
 * nothing it promised:
 *   seen    webhook-ids already processed (PROTOCOL.md §6: kept >= 4 days)
 *   handed  messages handed on: where their reports go, and for SMS an
 *           HMAC tag of the recipient's number to match replies by
 *   queue   callbacks not yet delivered, with their attempt count and due
 *           time
 *
 * Nothing personal reaches the file in the clear: a queued callback body
 * (it may carry an inbound message's text and sender) is AES-256-GCM
 * encrypted under the state key, with the row id as additional data, and
 * numbers are kept only as HMACs under it. The state key is a sealpost key
 * file beside the database (PATH.key, 0600), made on first start.
 *
 * One connection serialised by a mutex: the relay's writes are small and
 * few (one per message or report), far below what one SQLite writer does.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay.h"

struct relay_state {
    sqlite3 *db;
    pthread_mutex_t lock;
    sp_key *key;
    sp_cipher *gcm;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS seen(id TEXT PRIMARY KEY, at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS seen_at ON seen(at);"
    "CREATE TABLE IF NOT EXISTS handed(message_id TEXT PRIMARY KEY, kind INTEGER NOT NULL, dlr_url TEXT NOT NULL,"
    " inbound_url TEXT NOT NULL, phone_tag BLOB, at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS handed_phone ON handed(phone_tag, at);"
    "CREATE INDEX IF NOT EXISTS handed_at ON handed(at);"
    "CREATE TABLE IF NOT EXISTS queue(id TEXT PRIMARY KEY, url TEXT NOT NULL, iv BLOB NOT NULL, body BLOB NOT NULL,"
    " attempt INTEGER NOT NULL, due_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS queue_due ON queue(due_ms);";

static sp_error load_key(const char *db_path, sp_key **out) {
    char path[RELAY_MAX_PATH + 8];
    int n = snprintf(path, sizeof path, "%s.key", db_path);
    if (n < 0 || (size_t)n >= sizeof path) return SP_ERR_TOO_LARGE;
    return sp_keyfile_derive_active(path, "sealpost-relay", "sealpost-relay state v1", out);
}

sp_error relay_state_open(const char *path, relay_state **out) {
    *out = NULL;
    relay_state *st = calloc(1, sizeof *st);
    if (!st) return SP_ERR_NO_MEMORY;
    pthread_mutex_init(&st->lock, NULL);
    sp_error rc = load_key(path, &st->key);
    if (rc == SP_OK) rc = sp_cipher_new(st->key, SP_ALG_AES_256_GCM, &st->gcm);
    if (rc != SP_OK) {
        relay_state_close(st);
        return rc;
    }
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(st->db, 5000) != SQLITE_OK || sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        relay_state_close(st);
        return SP_ERR_STORE;
    }
    chmod(path, 0600);
    *out = st;
    return SP_OK;
}

void relay_state_close(relay_state *st) {
    if (!st) return;
    if (st->db) sqlite3_close(st->db);
    sp_cipher_free(st->gcm);
    sp_key_free(st->key);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static sp_error prepare(relay_state *st, const char *sql, sqlite3_stmt **stmt) {
    return sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) == SQLITE_OK ? SP_OK : SP_ERR_STORE;
}

static sp_error exec_step(sqlite3_stmt *stmt) {
    int r = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return r == SQLITE_DONE || r == SQLITE_ROW ? SP_OK : SP_ERR_STORE;
}

sp_error relay_state_seen(relay_state *st, const char *webhook_id, int64_t now, int64_t keep_s, bool *seen) {
    *seen = false;
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "SELECT 1 FROM seen WHERE id = ?1 AND at >= ?2", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, webhook_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, now - keep_s);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) *seen = true;
        else if (r != SQLITE_DONE) rc = SP_ERR_STORE;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_remember(relay_state *st, const char *webhook_id, int64_t now) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "INSERT OR REPLACE INTO seen(id, at) VALUES(?1, ?2)", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, webhook_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, now);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_handed(relay_state *st, const char *message_id, bool *handed) {
    *handed = false;
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "SELECT 1 FROM handed WHERE message_id = ?1", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, message_id, -1, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) *handed = true;
        else if (r != SQLITE_DONE) rc = SP_ERR_STORE;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_message_put(relay_state *st, const char *message_id, relay_kind kind, const char *dlr_url,
                                 const char *inbound_url, const uint8_t *phone_tag, int64_t now) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st,
                          "INSERT OR REPLACE INTO handed(message_id, kind, dlr_url, inbound_url, phone_tag, at) "
                          "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                          &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, message_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)kind);
        sqlite3_bind_text(s, 3, dlr_url, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, inbound_url, -1, SQLITE_STATIC);
        if (phone_tag) sqlite3_bind_blob(s, 5, phone_tag, 32, SQLITE_STATIC);
        else sqlite3_bind_null(s, 5);
        sqlite3_bind_int64(s, 6, now);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static void copy_col(sqlite3_stmt *s, int col, char *out, size_t cap) {
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

/* The two text columns of the first row a lookup finds, its key a text
 * (key_len < 0) or a blob; SP_ERR_NOT_FOUND without a row. */
static sp_error two_columns(relay_state *st, const char *sql, const void *key, int key_len, char *a, size_t a_cap,
                            char *b, size_t b_cap) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, sql, &s);
    if (rc == SP_OK) {
        if (key_len < 0) sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        else sqlite3_bind_blob(s, 1, key, key_len, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            copy_col(s, 0, a, a_cap);
            copy_col(s, 1, b, b_cap);
        } else {
            rc = r == SQLITE_DONE ? SP_ERR_NOT_FOUND : SP_ERR_STORE;
        }
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_message_get(relay_state *st, const char *message_id, char *dlr_url, size_t dlr_cap,
                                 char *inbound_url, size_t inbound_cap) {
    return two_columns(st, "SELECT dlr_url, inbound_url FROM handed WHERE message_id = ?1", message_id, -1, dlr_url,
                       dlr_cap, inbound_url, inbound_cap);
}

sp_error relay_state_last_to(relay_state *st, const uint8_t *phone_tag, char *message_id, size_t id_cap,
                             char *inbound_url, size_t inbound_cap) {
    return two_columns(st,
                       "SELECT message_id, inbound_url FROM handed WHERE phone_tag = ?1 "
                       "ORDER BY at DESC, rowid DESC LIMIT 1",
                       phone_tag, 32, message_id, id_cap, inbound_url, inbound_cap);
}

sp_error relay_state_phone_tag(relay_state *st, const char *phone, uint8_t out[32]) {
    /* "+14155550100" and "14155550100" are one number to Kannel */
    const char *digits = phone[0] == '+' ? phone + 1 : phone;
    return sp_key_hmac_sha256(st->key, "sealpost-relay phone tag", (const uint8_t *)digits, strlen(digits), out);
}

sp_error relay_state_dlr_tag(relay_state *st, const char *message_id, char out[RELAY_DLR_TAG_CHARS + 1]) {
    uint8_t mac[32];
    sp_error rc = sp_key_hmac_sha256(st->key, "sealpost-relay dlr tag", (const uint8_t *)message_id,
                                     strlen(message_id), mac);
    if (rc != SP_OK) return rc;
    for (size_t i = 0; i < RELAY_DLR_TAG_CHARS / 2; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    sp_wipe(mac, sizeof mac);
    return SP_OK;
}

sp_error relay_state_enqueue(relay_state *st, const char *id, const char *url, const uint8_t *body, size_t len,
                             int64_t due_ms) {
    uint8_t iv[SP_GCM_IV_BYTES];
    size_t ct_cap = len + SP_GCM_TAG_BYTES, ct_len = 0;
    uint8_t *ct = malloc(ct_cap);
    if (!ct) return SP_ERR_NO_MEMORY;
    pthread_mutex_lock(&st->lock);
    sp_error rc = sp_random(iv, sizeof iv);
    if (rc == SP_OK)
        rc = sp_cipher_encrypt(st->gcm, iv, sizeof iv, (const uint8_t *)id, strlen(id), body, len, ct, ct_cap, &ct_len);
    sqlite3_stmt *s = NULL;
    if (rc == SP_OK)
        rc = prepare(st, "INSERT INTO queue(id, url, iv, body, attempt, due_ms) VALUES(?1, ?2, ?3, ?4, 0, ?5)", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, url, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, iv, sizeof iv, SQLITE_STATIC);
        sqlite3_bind_blob(s, 4, ct, (int)ct_len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, due_ms);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    free(ct);
    return rc;
}

void relay_queued_clear(relay_queued *q) {
    relay_wiped_free(q->body, q->body_len);
    memset(q, 0, sizeof *q);
}

sp_error relay_state_due(relay_state *st, int64_t now_ms, relay_queued *out, size_t cap, size_t *n) {
    *n = 0;
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st,
                          "SELECT id, url, iv, body, attempt FROM queue WHERE due_ms <= ?1 "
                          "ORDER BY due_ms LIMIT ?2",
                          &s);
    if (rc == SP_OK) {
        sqlite3_bind_int64(s, 1, now_ms);
        sqlite3_bind_int64(s, 2, (int64_t)cap);
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW && *n < cap) {
            relay_queued *q = &out[*n];
            memset(q, 0, sizeof *q);
            copy_col(s, 0, q->id, sizeof q->id);
            copy_col(s, 1, q->url, sizeof q->url);
            const void *iv = sqlite3_column_blob(s, 2);
            int iv_len = sqlite3_column_bytes(s, 2);
            const void *ct = sqlite3_column_blob(s, 3);
            int ct_len = sqlite3_column_bytes(s, 3);
            q->attempt = (unsigned)sqlite3_column_int(s, 4);
            if (!iv || iv_len != SP_GCM_IV_BYTES || !ct || ct_len < SP_GCM_TAG_BYTES) {
                rc = SP_ERR_STORE;
                break;
            }
            q->body = malloc((size_t)ct_len);
            if (!q->body) {
                rc = SP_ERR_NO_MEMORY;
                break;
            }
            rc = sp_cipher_decrypt(st->gcm, iv, (size_t)iv_len, (const uint8_t *)q->id, strlen(q->id), ct,
                                   (size_t)ct_len, q->body, (size_t)ct_len, &q->body_len);
            if (rc != SP_OK) {
                free(q->body);
                q->body = NULL;
                break;
            }
            (*n)++;
        }
        if (rc == SP_OK && r != SQLITE_ROW && r != SQLITE_DONE) rc = SP_ERR_STORE;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    if (rc != SP_OK) {
        for (size_t i = 0; i < *n; i++) relay_queued_clear(&out[i]);
        *n = 0;
    }
    return rc;
}

sp_error relay_state_reschedule(relay_state *st, const char *id, unsigned attempt, int64_t due_ms) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "UPDATE queue SET attempt = ?2, due_ms = ?3 WHERE id = ?1", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)attempt);
        sqlite3_bind_int64(s, 3, due_ms);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_dequeue(relay_state *st, const char *id) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "DELETE FROM queue WHERE id = ?1", &s);
    if (rc == SP_OK) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_queue_depth(relay_state *st, int64_t *depth) {
    *depth = 0;
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "SELECT count(*) FROM queue", &s);
    if (rc == SP_OK) {
        if (sqlite3_step(s) == SQLITE_ROW) *depth = sqlite3_column_int64(s, 0);
        else rc = SP_ERR_STORE;
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

sp_error relay_state_prune(relay_state *st, int64_t now, int64_t keep_s) {
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = NULL;
    sp_error rc = prepare(st, "DELETE FROM seen WHERE at < ?1", &s);
    if (rc == SP_OK) {
        sqlite3_bind_int64(s, 1, now - keep_s);
        rc = exec_step(s);
    }
    if (rc == SP_OK) rc = prepare(st, "DELETE FROM handed WHERE at < ?1", &s);
    if (rc == SP_OK) {
        sqlite3_bind_int64(s, 1, now - keep_s);
        rc = exec_step(s);
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}
