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
 * Checkpoints (copying the WAL back into the database file, and its fsync)
 * run on a thread of their own per file, with a connection of its own, in
 * PASSIVE mode, so they never hold the write lock and a request's commit
 * never pays for one. Connections opened before it started, or when it could
 * not start, keep SQLite's automatic checkpoint.
 *
 * Statements are prepared once per connection, the first time they run,
 * and reset after each use; binding uses the caller's buffers
 * (SQLITE_STATIC), so a batch of upserts allocates nothing of ours per row.
 *
 * Merging a profile's attributes is a function of ours, sp_json_merge: a
 * shallow merge that copies member texts verbatim. SQLite's json_patch
 * would drop members whose new value is null, and re-encoding through a
 * JSON library would rewrite numbers (0.1 as 0.10000000000000001).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

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
    [SP_Q_PII_COUNT] = "SELECT COUNT(*) FROM profile_pii WHERE tenant = ?1 AND profile_id = ?2",
    /* The index covers the lookup and its order; without statistics the
     * planner would otherwise walk the tenant's primary-key range. */
    [SP_Q_PROFILE_FIND_INDEX] = "SELECT profile_id FROM profile_pii INDEXED BY profile_pii_index WHERE tenant = ?1 "
                                "AND field = ?2 AND "
                                "blind_index = ?3 ORDER BY updated DESC, profile_id DESC LIMIT 1",
    [SP_Q_PROFILE_GET] = "SELECT id, attributes, created, updated FROM profiles WHERE tenant = ?1 AND id = ?2",
    [SP_Q_PII_GET] = "SELECT field, blob FROM profile_pii WHERE tenant = ?1 AND profile_id = ?2 ORDER BY field",
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
    bool ck_stop;
    bool ck_started;
} sp_sqlite_gate;

/* A checkpoint once the WAL holds this many frames (64 MiB of 4 KiB pages):
 * pages written by many commits in between are copied once. When idle, one
 * anyway every SP_SQLITE_CHECKPOINT_IDLE_MS. */
#define SP_SQLITE_CHECKPOINT_FRAMES 16384
#define SP_SQLITE_CHECKPOINT_IDLE_MS 1000

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
}

/* Woken by a commit that left the WAL long (sp_wal_hook), or idle: a
 * PASSIVE checkpoint copies what no reader still needs and waits for
 * nobody. SQLite restarts the WAL from its beginning once all of it is
 * copied; the file keeps its size, so rewriting it allocates no blocks. */
static void *sp_checkpointer(void *arg) {
    sp_sqlite_gate *g = arg;
    sqlite3 *db = NULL;
    /* ck_lock is held whenever this thread is inside SQLite (it is released
     * only while waiting), so sp_gates_before_fork can keep it out */
    pthread_mutex_lock(&g->ck_lock);
    if (sqlite3_open_v2(g->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL) ==
        SQLITE_OK) {
        sqlite3_busy_timeout(db, 50);
        /* reading the schema opens the file and its WAL: a connection that
         * has not is not in WAL mode yet, and its checkpoints do nothing */
        (void)sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    }
    g->ck_started = true;
    pthread_cond_broadcast(&g->ck_wake);
    while (!g->ck_stop) {
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        at.tv_sec += SP_SQLITE_CHECKPOINT_IDLE_MS / 1000;
        if (at.tv_nsec >= 1000000000L) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&g->ck_wake, &g->ck_lock, &at);
        if (g->ck_stop || db == NULL) continue;
        int wal_frames = -1;
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, NULL);
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
    if (frames >= SP_SQLITE_CHECKPOINT_FRAMES && pthread_mutex_trylock(&g->ck_lock) == 0) {
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
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sp_error err = rc == SQLITE_OK ? SP_OK : sp_sqlite_err(sqlite3_extended_errcode(db));
    /* the gate (and the shared writer) is held exactly while a write
     * transaction is open */
    if (sqlite3_get_autocommit(db)) sp_gate_leave(d);
    return err;
}

/* The database file, made private before SQLite touches it. */
static sp_error sp_sqlite_prepare_file(const char *path, struct stat *st) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    SP_ENSURE(fd >= 0, errno == ENOENT || errno == ENOTDIR ? SP_ERR_BAD_CONFIG : SP_ERR_IO);
    sp_error rc = fstat(fd, st) == 0 ? SP_OK : SP_ERR_IO;
    if (rc == SP_OK && !S_ISREG(st->st_mode)) rc = SP_ERR_IO;
    if (rc == SP_OK && (st->st_mode & 077) != 0) rc = SP_ERR_INSECURE_PERMISSIONS;
    close(fd);
    return rc;
}

static sp_error sp_exec(sqlite3 *db, const char *sql) {
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? SP_OK : sp_sqlite_err(sqlite3_extended_errcode(db));
}

static sp_error sp_conn_open(const char *path, bool durable, sp_sqlite_gate *gate, sp_sqlite_conn *c) {
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    sp_error err = rc == SQLITE_OK ? SP_OK : (rc == SQLITE_NOMEM ? SP_ERR_NO_MEMORY : SP_ERR_STORE);
    if (err == SP_OK) {
        sqlite3_extended_result_codes(c->db, 1);
        sqlite3_busy_timeout(c->db, SP_SQLITE_BUSY_MS);
        err = sp_exec(c->db, "PRAGMA journal_mode = WAL");
    }
    if (err == SP_OK)
        err = sp_exec(c->db, durable ? "PRAGMA synchronous = FULL; " SP_SQLITE_PRAGMAS
                                     : "PRAGMA synchronous = NORMAL; " SP_SQLITE_PRAGMAS);
    /* the hook replaces SQLite's automatic checkpoint on this connection */
    if (err == SP_OK && gate != NULL && gate->checkpointer) (void)sqlite3_wal_hook(c->db, sp_wal_hook, gate);
    if (err == SP_OK &&
        sqlite3_create_function_v2(c->db, "sp_json_merge", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                   sp_sqlite_merge, NULL, NULL, NULL) != SQLITE_OK)
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
        if (p[i].type == SP_STORE_INT) rc = sqlite3_bind_int64(st, col, p[i].i);
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
