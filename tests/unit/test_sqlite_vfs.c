/*
 * The WAL-gathering VFS (src/store/sqlite_vfs.c). Under it sits a counting
 * VFS, registered as SQLite's default before ours first looks for one, so
 * the tests see what reaches the file: a commit's frames in a few writes,
 * and nothing a reader needs still held back. Readers are other
 * connections of this process on SQLite's own VFS and a forked child; a
 * spilled (cache_size) transaction rolled back; a commit the file system
 * refuses (RLIMIT_FSIZE) failing cleanly and leaving the database whole.
 */
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "sp_test_util.h"
#include "store/store_internal.h"

/* ---- the counting VFS below ours ---- */

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    bool wal;
} counted_file;

static sqlite3_vfs *unix_vfs;
static sqlite3_vfs counting_vfs;
static sqlite3_io_methods counted_methods;
static long wal_writes, wal_write_bytes;

static int c_close(sqlite3_file *f) { return ((counted_file *)f)->real->pMethods->xClose(((counted_file *)f)->real); }
static int c_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xRead(r, b, n, o);
}
static int c_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
    counted_file *cf = (counted_file *)f;
    if (cf->wal) {
        wal_writes++;
        wal_write_bytes += n;
    }
    return cf->real->pMethods->xWrite(cf->real, b, n, o);
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 s) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xTruncate(r, s);
}
static int c_sync(sqlite3_file *f, int fl) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xSync(r, fl);
}
static int c_size(sqlite3_file *f, sqlite3_int64 *s) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xFileSize(r, s);
}
static int c_lock(sqlite3_file *f, int l) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xLock(r, l);
}
static int c_unlock(sqlite3_file *f, int l) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xUnlock(r, l);
}
static int c_reserved(sqlite3_file *f, int *o) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xCheckReservedLock(r, o);
}
static int c_fcntl(sqlite3_file *f, int op, void *a) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xFileControl(r, op, a);
}
static int c_sector(sqlite3_file *f) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xSectorSize(r);
}
static int c_device(sqlite3_file *f) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xDeviceCharacteristics(r);
}
static int c_shm_map(sqlite3_file *f, int p, int s, int e, void volatile **o) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xShmMap(r, p, s, e, o);
}
static int c_shm_lock(sqlite3_file *f, int o, int n, int fl) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xShmLock(r, o, n, fl);
}
static void c_shm_barrier(sqlite3_file *f) {
    sqlite3_file *r = ((counted_file *)f)->real;
    r->pMethods->xShmBarrier(r);
}
static int c_shm_unmap(sqlite3_file *f, int d) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xShmUnmap(r, d);
}
static int c_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xFetch(r, o, n, p);
}
static int c_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) {
    sqlite3_file *r = ((counted_file *)f)->real;
    return r->pMethods->xUnfetch(r, o, p);
}

static int c_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out) {
    (void)v;
    counted_file *cf = (counted_file *)f;
    cf->real = (sqlite3_file *)(cf + 1);
    cf->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = unix_vfs->xOpen(unix_vfs, name, cf->real, flags, out);
    cf->base.pMethods = rc == SQLITE_OK && cf->real->pMethods != NULL ? &counted_methods : NULL;
    return rc;
}

/* the rest of the VFS is unix's own, called with unix's vfs pointer */
static int c_delete(sqlite3_vfs *v, const char *n, int s) {
    (void)v;
    return unix_vfs->xDelete(unix_vfs, n, s);
}
static int c_access(sqlite3_vfs *v, const char *n, int fl, int *o) {
    (void)v;
    return unix_vfs->xAccess(unix_vfs, n, fl, o);
}
static int c_full(sqlite3_vfs *v, const char *n, int m, char *o) {
    (void)v;
    return unix_vfs->xFullPathname(unix_vfs, n, m, o);
}
static int c_random(sqlite3_vfs *v, int n, char *o) {
    (void)v;
    return unix_vfs->xRandomness(unix_vfs, n, o);
}
static int c_sleep(sqlite3_vfs *v, int us) {
    (void)v;
    return unix_vfs->xSleep(unix_vfs, us);
}
static int c_time(sqlite3_vfs *v, double *o) {
    (void)v;
    return unix_vfs->xCurrentTime(unix_vfs, o);
}
static int c_time64(sqlite3_vfs *v, sqlite3_int64 *o) {
    (void)v;
    return unix_vfs->xCurrentTimeInt64(unix_vfs, o);
}

static int group_setup(void **state) {
    (void)state;
    unix_vfs = sqlite3_vfs_find("unix");
    if (unix_vfs == NULL) return -1;
    counted_methods = (sqlite3_io_methods){3,         c_close,    c_read,   c_write,  c_truncate,    c_sync,
                                           c_size,    c_lock,     c_unlock, c_reserved, c_fcntl,     c_sector,
                                           c_device,  c_shm_map,  c_shm_lock, c_shm_barrier, c_shm_unmap, c_fetch,
                                           c_unfetch};
    counting_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(counted_file) + unix_vfs->szOsFile,
        .mxPathname = unix_vfs->mxPathname,
        .zName = "counting",
        .xOpen = c_open,
        .xDelete = c_delete,
        .xAccess = c_access,
        .xFullPathname = c_full,
        .xRandomness = c_random,
        .xSleep = c_sleep,
        .xCurrentTime = c_time,
        .xCurrentTimeInt64 = c_time64,
    };
    /* the default from now on: sp_sqlite_vfs() wraps it */
    if (sqlite3_vfs_register(&counting_vfs, 1) != SQLITE_OK) return -1;
    return sp_sqlite_vfs() != NULL ? 0 : -1;
}

/* ---- fixture ---- */

typedef struct {
    char dir[256];
    char path[320];
    sqlite3 *db; /* ours */
} fixture;

static int setup(void **state) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-vfs");
    if (f == NULL) return -1;
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    if (sqlite3_open_v2(f->path, &f->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, sp_sqlite_vfs()) != SQLITE_OK)
        return -1;
    if (sqlite3_exec(f->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;"
                     "CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;",
                     NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sqlite3_close(f->db);
    return sp_test_fixture_free(f, f->dir);
}

/* n rows of random keys (so they land on pages all over the tree) and
 * value_len-byte values, in one transaction */
static int insert_rows(sqlite3 *db, int n, int value_len, bool commit) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d) "
             "INSERT INTO t SELECT randomblob(16), zeroblob(%d) FROM c",
             n, value_len);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, commit ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    if (rc != SQLITE_OK) (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static long count_rows(sqlite3 *db) {
    sqlite3_stmt *st = NULL;
    long n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void assert_whole(sqlite3 *db) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* ---- tests ---- */

/* A commit of hundreds of pages reaches the WAL in a handful of writes,
 * each below the unix VFS's 128 KiB limit, and every byte of it. */
static void test_commit_gathered(void **state) {
    fixture *f = *state;
    assert_int_equal(insert_rows(f->db, 4000, 100, true), SQLITE_OK); /* a tree to scatter into */
    wal_writes = wal_write_bytes = 0;
    assert_int_equal(insert_rows(f->db, 300, 100, true), SQLITE_OK);
    sqlite3_int64 pages = 0;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(f->db, "PRAGMA page_size", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int page = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    pages = wal_write_bytes / (page + 24);
    assert_true(pages >= 100);                          /* random keys dirtied many pages */
    assert_int_equal(wal_write_bytes % (page + 24), 0); /* whole frames, nothing held back */
    assert_true(wal_writes <= 1 + wal_write_bytes / (124 << 10)); /* not two per page */
    assert_int_equal(count_rows(f->db), 4300);
}

/* What a commit wrote is there for a reader the moment it returns: another
 * connection on SQLite's own VFS, and another process. */
static void test_readers_see_commits(void **state) {
    fixture *f = *state;
    sqlite3 *plain = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &plain, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    for (int round = 1; round <= 20; round++) {
        assert_int_equal(insert_rows(f->db, 50 * round, 200, true), SQLITE_OK);
        long expect = 25L * round * (round + 1);
        assert_int_equal(count_rows(plain), expect);
        assert_whole(plain);
    }
    pid_t pid = sp_test_fork();
    if (pid == 0) {
        sqlite3 *child = NULL;
        int ok = sqlite3_open_v2(f->path, &child, SQLITE_OPEN_READONLY, "unix") == SQLITE_OK &&
                 count_rows(child) == 25L * 20 * 21;
        sqlite3_close(child);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sqlite3_close(plain);
}

/* A transaction larger than the page cache spills frames before its
 * commit, and reads them back; rolled back, none of it counts; the next
 * commit, larger than the 4 MiB buffer, lands whole. */
static void test_spill_rollback_and_large(void **state) {
    fixture *f = *state;
    sp_test_sqlite_exec(f->db, "PRAGMA cache_size = 20");
    assert_int_equal(insert_rows(f->db, 3000, 500, false), SQLITE_OK);
    assert_int_equal(count_rows(f->db), 0);
    assert_int_equal(insert_rows(f->db, 3000, 500, true), SQLITE_OK);
    sp_test_sqlite_exec(f->db, "PRAGMA cache_size = -65536");
    assert_int_equal(insert_rows(f->db, 12000, 500, true), SQLITE_OK); /* about 7 MiB of frames */
    sqlite3 *plain = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &plain, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    assert_int_equal(count_rows(plain), 15000);
    assert_whole(plain);
    /* and a checkpoint copies it all back */
    sp_test_sqlite_exec(plain, "PRAGMA wal_checkpoint(TRUNCATE)");
    assert_int_equal(count_rows(f->db), 15000);
    sqlite3_close(plain);
}

/* The file system refuses the WAL's growth: the commit fails with an I/O
 * or full-disk error, not later and not silently, and once there is room
 * again the database holds exactly the earlier commits. */
static void test_failed_flush(void **state) {
    fixture *f = *state;
    assert_int_equal(insert_rows(f->db, 500, 100, true), SQLITE_OK);
    char wal[340];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    sp_test_fsize_guard guard;
    sp_test_fsize_limit(&guard, (rlim_t)st.st_size + 8192);
    int rc = insert_rows(f->db, 3000, 300, true);
    sp_test_fsize_restore(&guard);
    assert_true((rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR);
    assert_int_equal(count_rows(f->db), 500);
    assert_int_equal(insert_rows(f->db, 100, 100, true), SQLITE_OK);
    sqlite3 *plain = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &plain, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    assert_int_equal(count_rows(plain), 600);
    assert_whole(plain);
    sqlite3_close(plain);
}

/* The VFS names itself over the one below, as SQLite's layered VFSs do. */
static void test_vfs_name(void **state) {
    fixture *f = *state;
    char *name = NULL;
    assert_int_equal(sqlite3_file_control(f->db, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
    assert_non_null(name);
    assert_true(strncmp(name, "sp-wal/", 7) == 0);
    sqlite3_free(name);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_gathered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_see_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spill_rollback_and_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vfs_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
