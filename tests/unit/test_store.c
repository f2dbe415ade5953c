/*
 * The store on SQLite: the shared suite (tests/store_suite.h) on a fresh
 * database file in a scratch directory per test, and what only SQLite has:
 * the file's mode, the refusal of a file others can read, a writer that
 * waits out the busy timeout getting SP_ERR_CONFLICT, and the background
 * checkpoint.
 */
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_suite.h"
#include "store/store_internal.h"

static bool suite_new_database(char *url, size_t cap, const char *dir) {
    int n = snprintf(url, cap, "sqlite:%s/store.db", dir);
    return n > 0 && (size_t)n < cap;
}

static void suite_drop_database(const char *url) {
    (void)url; /* the scratch directory goes with the fixture */
}

static void suite_set_schema_version(const char *url, int version) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(url + strlen("sqlite:"), &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO schema_version (version, applied) VALUES (%d, 0)", version);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void suite_downgrade_to_1(const char *url) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TABLE callbacks_seen; DROP TABLE suppressions; "
                                  "DROP TABLE outbox; DROP TABLE campaigns; DROP TABLE channels; "
                                  "DELETE FROM schema_version WHERE version >= 2",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
}

static void suite_downgrade_to_2(const char *url) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TABLE callbacks_seen; DROP TABLE suppressions; DROP INDEX outbox_profile; "
                                  "ALTER TABLE outbox DROP COLUMN delivery; ALTER TABLE outbox DROP COLUMN delivery_at; "
                                  "ALTER TABLE outbox DROP COLUMN failure_code; ALTER TABLE outbox DROP COLUMN opened_at; "
                                  "ALTER TABLE outbox DROP COLUMN clicked_at; ALTER TABLE outbox DROP COLUMN replied_at; "
                                  "ALTER TABLE outbox DROP COLUMN unsubscribed_at; "
                                  "ALTER TABLE outbox DROP COLUMN complained_at; "
                                  "ALTER TABLE outbox DROP COLUMN callback_at; "
                                  "ALTER TABLE outbox DROP COLUMN callback_encrypted; "
                                  "DROP INDEX campaigns_expanding; ALTER TABLE campaigns DROP COLUMN expanded_to; "
                                  "DELETE FROM schema_version WHERE version >= 3",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
}

static void test_sqlite_file(void **state) {
    suite_fixture *f = *state;
    const char *path = f->url + strlen("sqlite:");
    assert_int_equal(sp_test_file_mode(path), 0600);
    assert_string_equal(sp_store_backend_name(f->s), "sqlite");
    /* the WAL file, once there, is private too */
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_equal(sp_test_file_mode(wal), 0600);

    /* a database others may read is refused, as key files are */
    char open_url[400], open_path[320];
    snprintf(open_path, sizeof open_path, "%s/open.db", f->dir);
    snprintf(open_url, sizeof open_url, "sqlite:%s", open_path);
    sp_test_write_file(open_path, "", 0, 0644);
    sp_store *s = NULL;
    assert_rc(sp_store_open(open_url, &s), SP_ERR_INSECURE_PERMISSIONS);
    assert_null(s);
    /* a directory that does not exist is a configuration error */
    assert_rc(sp_store_open("sqlite:/nonexistent-dir/x/store.db", &s), SP_ERR_BAD_CONFIG);
    /* and a file that is not a database is the store's failure */
    snprintf(open_path, sizeof open_path, "%s/junk.db", f->dir);
    snprintf(open_url, sizeof open_url, "sqlite:%s", open_path);
    sp_test_write_file(open_path, "this is not a database file, not at all......", 46, 0600);
    assert_rc(sp_store_open(open_url, &s), SP_ERR_STORE);
    assert_null(s);
}

/* One writer holds the write lock; the other waits the busy timeout out and
 * is told to retry, while readers go on. */
static void test_sqlite_busy_is_conflict(void **state) {
    suite_fixture *f = *state;
    sp_store *other = NULL;
    assert_ok(sp_store_open(f->url, &other));
    assert_ok(sp_store_begin(f->s));
    suite_upsert(f->s, "acme", "held", "{}", NULL, 0, T0);
    int64_t t = sp_test_now_ms();
    assert_rc(sp_store_begin(other), SP_ERR_CONFLICT);
    assert_true(sp_test_now_ms() - t >= 1000); /* it waited rather than failing at once */
    sp_store_profile p = {"acme", "x", "{}", 2, NULL, 0};
    assert_rc(sp_store_profile_upsert(other, &p, T0, NULL), SP_ERR_CONFLICT);
    assert_int_equal(suite_profiles(other, "acme"), 0);
    assert_ok(sp_store_commit(f->s));
    assert_ok(sp_store_profile_upsert(other, &p, T0, NULL));
    assert_int_equal(suite_profiles(other, "acme"), 2);
    sp_store_close(other);
}

/* One transaction of n small profiles, ids PREFIX-ROUND-i. */
static void commit_profiles(sp_store *s, const char *prefix, int round, int n) {
    assert_ok(sp_store_begin(s));
    for (int i = 0; i < n; i++) {
        char id[48];
        snprintf(id, sizeof id, "%s-%d-%d", prefix, round, i);
        suite_upsert(s, "acme", id, "{\"n\":\"some attribute text to fill the pages\"}", NULL, 0, T0);
    }
    assert_ok(sp_store_commit(s));
}

/* Commits only append to the WAL; the checkpointer thread copies them into
 * the database file while the connection stays open, without anyone
 * writing again. */
static void test_sqlite_background_checkpoint(void **state) {
    suite_fixture *f = *state;
    char path[600];
    snprintf(path, sizeof path, "%s", f->url + strlen("sqlite:"));
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    assert_ok(sp_store_begin(f->s));
    for (int i = 0; i < 2000; i++) {
        char id[32];
        snprintf(id, sizeof id, "ck-%d", i);
        suite_upsert(f->s, "acme", id, "{\"n\":\"some attribute text\"}", NULL, 0, T0);
    }
    assert_ok(sp_store_commit(f->s));
    bool grew = false;
    for (int i = 0; i < 100 && !grew; i++) {
        assert_int_equal(stat(path, &after), 0);
        grew = after.st_size > before.st_size + 64 * 1024;
        if (!grew) sp_test_sleep_ms(50);
    }
    assert_true(grew);
    assert_int_equal(suite_profiles(f->s, "acme"), 2000);
}

/* Under a steady stream of small commits the checkpointer leaves the WAL
 * alone (a checkpoint a second copied the same pages again and again): the
 * WAL file grows with every commit, which it would not once a checkpoint
 * had let the next writer start it over. Once the commits stop, the WAL
 * is copied back within a couple of idle periods. */
static void test_sqlite_checkpoint_waits_for_quiet(void **state) {
    suite_fixture *f = *state;
    char path[600], wal[620];
    snprintf(path, sizeof path, "%s", f->url + strlen("sqlite:"));
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    off_t wal_size = 0;
    for (int round = 0; round < 25; round++) {
        commit_profiles(f->s, "q", round, 50);
        assert_int_equal(stat(wal, &st), 0);
        if (st.st_size <= wal_size) fail_msg("the WAL was started over at round %d: checkpointed under load", round);
        wal_size = st.st_size;
        sp_test_sleep_ms(100);
    }
    assert_int_equal(stat(path, &st), 0);
    off_t before = st.st_size;
    bool grew = false;
    for (int i = 0; i < 100 && !grew; i++) {
        sp_test_sleep_ms(50);
        assert_int_equal(stat(path, &st), 0);
        grew = st.st_size > before;
    }
    assert_true(grew);
    assert_int_equal(suite_profiles(f->s, "acme"), 25 * 50);
}

/* The WAL header's checkpoint sequence number: SQLite adds one at each
 * restart of the WAL. */
static uint32_t wal_restarts(const char *wal) {
    uint8_t h[32];
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = pread(fd, h, sizeof h, 0);
    close(fd);
    if (n != (ssize_t)sizeof h) return 0;
    return (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 | (uint32_t)h[14] << 8 | h[15];
}

/* Writes that never pause: the checkpointer still gets the WAL copied back
 * and restarted (without that it grows with every commit), and every row
 * written meanwhile is there. */
static void test_sqlite_wal_restarts_under_writes(void **state) {
    suite_fixture *f = *state;
    const char *path = f->url + strlen("sqlite:");
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    sp_sqlite_set_checkpoint_frames(128);
    assert_ok(sp_store_begin(f->s));
    suite_upsert(f->s, "acme", "first", "{}", NULL, 0, T0);
    assert_ok(sp_store_commit(f->s));
    uint32_t restarts0 = wal_restarts(wal);
    int rounds = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* about 500 commits here; without the restarts under the gate, the WAL
     * got copied to its end between two commits only after 60,000 */
    for (int round = 0; round < 5000 && wal_restarts(wal) < restarts0 + 3; round++, rounds++) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 30) break;
        commit_profiles(f->s, "w", round, 10);
    }
    sp_sqlite_set_checkpoint_frames(0);
    assert_true(wal_restarts(wal) >= restarts0 + 3);
    assert_int_equal(suite_profiles(f->s, "acme"), 1 + 10 * rounds);
}

/* A child forked while the parent's checkpointer thread is inside SQLite
 * (here: just starting, as after every first open of a file) must still
 * get a working store of its own; the alarm turns a deadlock into a
 * failure instead of a hung suite. */
static void test_sqlite_fork_while_checkpointing(void **state) {
    suite_fixture *f = *state;
    enum { ROUNDS = 100 };
    for (int round = 0; round < ROUNDS; round++) {
        sp_store_close(f->s);
        f->s = NULL;
        assert_ok(sp_store_open(f->url, &f->s));
        char id[32];
        pid_t child = sp_test_fork();
        if (child == 0) {
            alarm(20);
            sp_store *s = NULL;
            if (sp_store_open(f->url, &s) != SP_OK) _exit(10);
            snprintf(id, sizeof id, "child-%d", round);
            sp_store_profile p = {"acme", id, "{}", 2, NULL, 0};
            if (sp_store_begin(s) != SP_OK) _exit(11);
            if (sp_store_profile_upsert(s, &p, T0, NULL) != SP_OK) _exit(12);
            if (sp_store_commit(s) != SP_OK) _exit(13);
            sp_store_close(s);
            _exit(0);
        }
        assert_int_equal(sp_test_wait(child), 0);
        /* and the parent's own writer, opened after the fork, still works */
        snprintf(id, sizeof id, "parent-%d", round);
        assert_ok(sp_store_begin(f->s));
        suite_upsert(f->s, "acme", id, "{}", NULL, 0, T0);
        assert_ok(sp_store_commit(f->s));
    }
    assert_int_equal(suite_profiles(f->s, "acme"), 2 * ROUNDS);
}

/* Another process that closes its last connection deletes the WAL when it
 * can lock the database file exclusively. That must stay impossible while
 * this process has connections open, however many it opened since: a
 * close() of any descriptor of the file would drop every lock this process
 * holds on it, SQLite's included. Asked of the kernel directly (F_GETLK
 * over SQLite's shared-lock bytes) from a child process. */
static void test_sqlite_wal_survives_other_process(void **state) {
    suite_fixture *f = *state;
    const char *path = f->url + strlen("sqlite:");
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_ok(sp_store_begin(f->s));
    suite_upsert(f->s, "acme", "before", "{}", NULL, 0, T0);
    assert_ok(sp_store_commit(f->s));
    assert_int_equal(suite_profiles(f->s, "acme"), 1);
    sp_store *second = NULL;
    assert_ok(sp_store_open(f->url, &second)); /* a later open in this process */
    assert_int_equal(suite_profiles(second, "acme"), 1);
    pid_t child = sp_test_fork();
    if (child == 0) {
        alarm(20);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) _exit(10);
        /* SQLite's SHARED lock range: PENDING_BYTE + 2, 510 bytes */
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0x40000002, .l_len = 510};
        if (fcntl(fd, F_GETLK, &fl) != 0) _exit(11);
        _exit(fl.l_type == F_UNLCK ? 12 : 0);
    }
    assert_int_equal(sp_test_wait(child), 0);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    sp_store_close(second);
}

/* How many temporary B-trees (OpenEphemeral) the program of `sql` opens. */
static int sqlite_ephemerals(sqlite3 *db, const char *sql) {
    char explain[512];
    snprintf(explain, sizeof explain, "EXPLAIN %s", sql);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, explain, -1, &st, NULL), SQLITE_OK);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (strcmp((const char *)sqlite3_column_text(st, 1), "OpenEphemeral") == 0) n++;
    sqlite3_finalize(st);
    return n;
}

/* Version 4 copies the outbox so that its CHECKs on state and delivery are
 * comparisons: an IN list of three or more values made every updated row
 * build a temporary B-tree. A version 3 database (the lists put back
 * behind the store's back) keeps every message and every tracked column
 * through the copy, the updates of state and delivery then build nothing,
 * and the CHECKs still refuse what they refused. */
static void test_sqlite_outbox_checks_without_temporary_tables(void **state) {
    suite_fixture *f = *state;
    static const char update[] = "UPDATE outbox SET state = ?2, delivery = ?3 WHERE seq = ?1";
    suite_channel_kind(f->s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(f->s, "acme", "p1", "{}", NULL, 0, T0);
    suite_upsert(f->s, "acme", "p2", "{}", NULL, 0, T0);
    suite_send(f->s, "acme", "sms", "p1", "msg_tracked");
    suite_send(f->s, "acme", "sms", "p2", "msg_queued");
    assert_int_equal(suite_apply(f->s, "acme", "msg_tracked", SP_STORE_EVENT_BOUNCED, MS0 + 5, 910),
                     SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(f->s, "acme", "msg_tracked", SP_STORE_EVENT_CLICKED, MS0 + 7, 0),
                     SP_STORE_APPLIED_CHANGED);
    const char *ids[2] = {"msg_tracked", "msg_queued"};
    sp_store_message_status before[2] = {suite_status(f->s, "acme", ids[0]), suite_status(f->s, "acme", ids[1])};
    assert_int_equal(before[0].delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(before[0].failure_code, 910);
    assert_int_not_equal(before[0].clicked_at, 0);
    sp_store_close(f->s);
    f->s = NULL;

    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite_ephemerals(db, update), 0);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA writable_schema = ON; "
                                  "UPDATE sqlite_schema SET sql = replace(replace(sql, "
                                  "'state = ''queued'' OR state = ''sending'' OR state = ''sent'' OR "
                                  "state = ''failed'' OR state = ''dead''', "
                                  "'state IN (''queued'', ''sending'', ''sent'', ''failed'', ''dead'')'), "
                                  "'delivery = ''delivered'' OR delivery = ''failed'' OR delivery = ''bounced''', "
                                  "'delivery IN (''delivered'', ''failed'', ''bounced'')') "
                                  "WHERE type = 'table' AND name = 'outbox'; "
                                  "PRAGMA writable_schema = OFF; "
                                  "DROP INDEX campaigns_expanding; ALTER TABLE campaigns DROP COLUMN expanded_to; "
                                  "DELETE FROM schema_version WHERE version >= 4",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    db = NULL;
    /* what version 3 was: each list a temporary B-tree per row */
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite_ephemerals(db, update), 2);
    sqlite3_close(db);
    db = NULL;

    assert_ok(sp_store_open(f->url, &f->s));
    assert_int_equal(sp_store_schema_version(f->s), 5);
    for (size_t i = 0; i < 2; i++) {
        sp_store_message_status after = suite_status(f->s, "acme", ids[i]);
        assert_memory_equal(&after, &before[i], sizeof after);
    }
    /* the copy is the outbox: its indexes, its later messages and tracking */
    suite_upsert(f->s, "acme", "p3", "{}", NULL, 0, T0);
    suite_send(f->s, "acme", "sms", "p3", "msg_after");
    assert_true(suite_status(f->s, "acme", "msg_after").outbox.seq > before[1].outbox.seq);
    assert_int_equal(suite_apply(f->s, "acme", "msg_queued", SP_STORE_EVENT_DELIVERED, MS0 + 9, 0),
                     SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_stats(f->s, "acme", NULL).delivered, 1);

    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite_ephemerals(db, update), 0);
    static const char *const refused[] = {"UPDATE outbox SET state = 'lost'", "UPDATE outbox SET delivery = 'read'",
                                          "UPDATE outbox SET state = NULL"};
    for (size_t i = 0; i < SP_ARRAY_LEN(refused); i++)
        assert_int_equal(sqlite3_exec(db, refused[i], NULL, NULL, NULL), SQLITE_CONSTRAINT);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE outbox SET delivery = NULL WHERE message_id = 'msg_queued'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        SUITE_TESTS,
        SUITE_TEST(test_sqlite_file),
        SUITE_TEST(test_sqlite_busy_is_conflict),
        SUITE_TEST(test_sqlite_background_checkpoint),
        SUITE_TEST(test_sqlite_checkpoint_waits_for_quiet),
        SUITE_TEST(test_sqlite_wal_restarts_under_writes),
        SUITE_TEST(test_sqlite_fork_while_checkpointing),
        SUITE_TEST(test_sqlite_wal_survives_other_process),
        SUITE_TEST(test_sqlite_outbox_checks_without_temporary_tables),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
