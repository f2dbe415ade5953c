/*
 * The page cache layer (src/store/sqlite_pcache.c). It decides which of
 * SQLite's truncations of a connection's page cache may be skipped, so a
 * wrong decision would leave a page past the end of the database in the
 * cache, to be handed out later with stale content. The tests make SQLite
 * truncate in every way it does (commits that split pages out of order,
 * rollbacks of a growing transaction, auto-vacuum shrinking the file,
 * another connection's commit) and check the data and the database's
 * integrity after each, through fresh connections too, and that the
 * commits of random inserts were spared the walk.
 */
#include <sqlite3.h>

#include "sp_test_util.h"
#include "store/store_internal.h"

typedef struct {
    char dir[256];
    char path[320];
    sqlite3 *db;
} fixture;

static int group_setup(void **state) {
    (void)state;
    /* the first use of SQLite in this process: the layer must go in */
    return sp_sqlite_pcache_install() && sp_sqlite_pcache_install() ? 0 : -1;
}

static int open_db(const char *path, sqlite3 **db) {
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) return -1;
    return sqlite3_exec(*db, "PRAGMA journal_mode = WAL; PRAGMA cache_size = -65536", NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : -1;
}

static int setup_common(void **state, const char *schema) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-pcache");
    if (f == NULL) return -1;
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    if (sqlite3_open_v2(f->path, &f->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) return -1;
    if (sqlite3_exec(f->db, schema, NULL, NULL, NULL) != SQLITE_OK) return -1;
    if (sqlite3_exec(f->db, "PRAGMA journal_mode = WAL; PRAGMA cache_size = -65536", NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state) {
    return setup_common(state, "CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;");
}

/* auto_vacuum must be set before the first table */
static int setup_vacuum(void **state) {
    return setup_common(state, "PRAGMA auto_vacuum = FULL; CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;");
}

static int teardown(void **state) {
    fixture *f = *state;
    sqlite3_close(f->db);
    return sp_test_fixture_free(f, f->dir);
}

static long long int_of(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* integrity, the row count and every value still starting with its key,
 * on this connection and on a fresh one (whose cache holds nothing yet) */
static void check_db(fixture *f, long long rows) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(f->db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(int_of(f->db, "SELECT count(*) FROM t"), rows);
    /* every value names its key: a stale page would break the pairing */
    assert_int_equal(int_of(f->db, "SELECT count(*) FROM t WHERE substr(v, 1, 16) != k"), 0);
    sqlite3 *other = NULL;
    assert_int_equal(open_db(f->path, &other), 0);
    assert_int_equal(int_of(other, "SELECT count(*) FROM t"), rows);
    assert_int_equal(int_of(other, "SELECT count(*) FROM t WHERE substr(v, 1, 16) != k"), 0);
    sqlite3_close(other);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* n random keys, each value its key then filler bytes, in one transaction
 * ended by `end` (no SQL of its own that would open temporary caches) */
static void insert(sqlite3 *db, int n, int filler, const char *end) {
    sqlite3_stmt *st = NULL;
    uint8_t v[16 + 400];
    assert_true(filler >= 0 && (size_t)filler <= sizeof v - 16);
    sp_test_sqlite_exec(db, "BEGIN IMMEDIATE");
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2)", -1, &st, NULL), SQLITE_OK);
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < 16 + (size_t)filler; k += 8) {
            uint64_t r = rng();
            memcpy(v + k, &r, sizeof v - k < 8 ? sizeof v - k : 8);
        }
        assert_int_equal(sqlite3_bind_blob(st, 1, v, 16, SQLITE_STATIC), SQLITE_OK);
        assert_int_equal(sqlite3_bind_blob(st, 2, v, 16 + filler, SQLITE_STATIC), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sp_test_sqlite_exec(db, end);
}

/* Commits of a few random keys each split leaves out of order: SQLite moves
 * pages through a number far past the end, and the commits that follow are
 * spared the walk through the whole cache. */
static void test_random_commits_spared(void **state) {
    fixture *f = *state;
    insert(f->db, 2000, 40, "COMMIT");
    uint64_t passed0, spared0, moved0;
    sp_sqlite_pcache_counts(&passed0, &spared0, &moved0);
    for (int i = 0; i < 1500; i++) insert(f->db, 2, 40, "COMMIT");
    uint64_t passed, spared, moved;
    sp_sqlite_pcache_counts(&passed, &spared, &moved);
    assert_true(moved > moved0);          /* the case this layer is for happened */
    assert_true(spared - spared0 >= 1500); /* every commit spared */
    assert_true(passed - passed0 <= 10);   /* nothing to drop: nothing passed on */
    check_db(f, 2000 + 3000);
}

/* A rolled-back transaction grew the database: its pages past the old end
 * must leave the cache, or the next growth would find them. */
static void test_rollback_of_growth(void **state) {
    fixture *f = *state;
    insert(f->db, 500, 200, "COMMIT");
    long long pages = int_of(f->db, "PRAGMA page_count");
    uint64_t passed0, spared0, moved0;
    sp_sqlite_pcache_counts(&passed0, &spared0, &moved0);
    insert(f->db, 3000, 300, "ROLLBACK");
    uint64_t passed, spared, moved;
    sp_sqlite_pcache_counts(&passed, &spared, &moved);
    assert_true(passed > passed0);
    assert_int_equal(int_of(f->db, "PRAGMA page_count"), pages);
    check_db(f, 500);
    /* the same page numbers again, with other content */
    insert(f->db, 3000, 100, "COMMIT");
    check_db(f, 3500);
    for (int i = 0; i < 20; i++) {
        insert(f->db, 300, 200, "ROLLBACK");
        insert(f->db, 10, 40, "COMMIT");
    }
    check_db(f, 3500 + 200);
}

/* Auto-vacuum moves pages down and shortens the file at commit: what was
 * cached past the new end must go. */
static void test_vacuum_shrinks(void **state) {
    fixture *f = *state;
    insert(f->db, 4000, 200, "COMMIT");
    long long before = int_of(f->db, "PRAGMA page_count");
    uint64_t passed0, spared0, moved0, passed, spared, moved;
    sp_sqlite_pcache_counts(&passed0, &spared0, &moved0);
    sp_test_sqlite_exec(f->db, "DELETE FROM t WHERE k < x'80'");
    sp_sqlite_pcache_counts(&passed, &spared, &moved);
    assert_true(passed > passed0); /* the file got shorter: passed on */
    long long rows = int_of(f->db, "SELECT count(*) FROM t");
    assert_true(rows > 1000 && rows < 3000);
    assert_true(int_of(f->db, "PRAGMA page_count") < before);
    check_db(f, rows);
    insert(f->db, 2000, 300, "COMMIT");
    check_db(f, rows + 2000);
    sp_test_sqlite_exec(f->db, "DELETE FROM t");
    check_db(f, 0);
    insert(f->db, 1000, 100, "COMMIT");
    check_db(f, 1000);
}

/* Another connection's commits: this one's cache is dropped (a truncation
 * to nothing, always passed on) and what it reads next is the new data. */
static void test_other_writer(void **state) {
    fixture *f = *state;
    sqlite3 *other = NULL;
    assert_int_equal(open_db(f->path, &other), 0);
    insert(f->db, 1000, 40, "COMMIT");
    assert_int_equal(int_of(other, "SELECT count(*) FROM t"), 1000);
    for (int i = 0; i < 50; i++) {
        insert(other, 20, 40, "COMMIT");
        assert_int_equal(int_of(f->db, "SELECT count(*) FROM t"), 1000 + 20 * (i + 1) + 3 * i);
        insert(f->db, 3, 40, "COMMIT");
        assert_int_equal(int_of(other, "SELECT count(*) FROM t WHERE substr(v, 1, 16) != k"), 0);
    }
    sqlite3_close(other);
    check_db(f, 1000 + 50 * 23);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_random_commits_spared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_of_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vacuum_shrinks, setup_vacuum, teardown),
        cmocka_unit_test_setup_teardown(test_other_writer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
