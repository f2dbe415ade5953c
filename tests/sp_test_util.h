/*
 * Scaffolding shared by the cmocka programs in tests/unit and
 * tests/integration.
 *
 * Each test file used to carry its own copy of the same few helpers: the
 * assert_rc/assert_ok macros, a mkdtemp scratch directory and an nftw
 * "rm -rf" for it, whole-file read and write, loading a JSON file, a hex
 * decoder for known answers, comparing keys, an RLIMIT_FSIZE guard that
 * makes appends fail, fork/waitpid plumbing for the tests that need a second
 * process, and the bookkeeping around the allocation funnel's fault
 * injection. The copies had started to drift (one
 * teardown emptied its directory by hand and could not remove a
 * subdirectory, one file reader stopped at a fixed size, one writer skipped
 * the chmod), so they live here once.
 *
 * CMake builds every tests/{unit,integration}/test_*.c as its own program
 * with src/ and tests/ on the include path and nothing else linked in, so
 * this is a header of static functions: each program includes it once and
 * uses what it needs. They are marked unused so that -Wall -Werror does not
 * object to the ones a program leaves alone.
 *
 * Include it ahead of the src/ headers: core/sp_core.h poisons sprintf and
 * friends, and the system headers included here declare them.
 *
 * The helpers fail the running cmocka test themselves (assert_*, fail_msg);
 * a failure is reported at a line of this file, with the message saying what
 * was being done. The hex decoder is deliberately independent of
 * sp_hex_decode, so a bug there cannot hide in the vectors that test it.
 */
#ifndef SP_TEST_UTIL_H
#define SP_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "sealpost/sealpost.h"

#include "core/sp_core.h"

#define SP_TEST_HELPER static inline __attribute__((unused))

/* ---- result codes ---- */

/* expr must give exactly `want`; the message names both codes. */
#define assert_rc(expr, want)                                                                                    \
    do {                                                                                                         \
        sp_error rc_ = (expr);                                                                                   \
        if (rc_ != (want)) fail_msg("%s gave %s, expected %s", #expr, sp_error_name(rc_), sp_error_name(want)); \
    } while (0)
#define assert_ok(expr) assert_rc(expr, SP_OK)

/* ---- set-up ---- */

/* A group set-up that initialises the library before any test runs: it
 * swaps jansson's allocator, so it must come before any jansson call of the
 * tests, and counting allocations only makes sense after it. */
SP_TEST_HELPER int sp_test_group_init(void **state) {
    (void)state;
    return sp_init() == SP_OK ? 0 : -1;
}

/* ---- scratch directories ---- */

/* Makes a fresh directory $TMPDIR/<prefix>-XXXXXX (/tmp without TMPDIR)
 * into dir; false when the name does not fit or mkdtemp fails. */
SP_TEST_HELPER bool sp_test_mkdtemp(char *dir, size_t cap, const char *prefix) {
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(dir, cap, "%s/%s-XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp", prefix);
    return n > 0 && (size_t)n < cap && mkdtemp(dir) != NULL;
}

/* A zeroed fixture of `size` bytes whose char array at dir_offset (of
 * dir_cap bytes) holds a fresh scratch directory; NULL on failure. Use it
 * through SP_TEST_FIXTURE_NEW. */
SP_TEST_HELPER void *sp_test_fixture_new(size_t size, size_t dir_offset, size_t dir_cap, const char *prefix) {
    char *f = calloc(1, size);
    if (f != NULL && !sp_test_mkdtemp(f + dir_offset, dir_cap, prefix)) {
        free(f);
        f = NULL;
    }
    return f;
}
#define SP_TEST_FIXTURE_NEW(type, dir_member, prefix)                                                          \
    ((type *)sp_test_fixture_new(sizeof(type), offsetof(type, dir_member), sizeof(((type *)0)->dir_member), \
                                 prefix))

SP_TEST_HELPER int sp_test_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path, without following symlinks; 0 when everything went. */
SP_TEST_HELPER int sp_test_rm_tree(const char *path) {
    return nftw(path, sp_test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The other half of SP_TEST_FIXTURE_NEW, for a teardown to return: removes
 * the fixture's directory (dir, inside it) and frees it; -1 when something
 * in the directory could not be removed. */
SP_TEST_HELPER int sp_test_fixture_free(void *fixture, const char *dir) {
    int rc = sp_test_rm_tree(dir);
    free(fixture);
    return rc == 0 ? 0 : -1;
}

#ifdef SQLITE3_H
/* For tests that drive SQLite directly (sqlite3.h included first): runs
 * sql, failing the test with SQLite's message. */
SP_TEST_HELPER void sp_test_sqlite_exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, err ? err : sqlite3_errstr(rc));
}
#endif

/* ---- files ---- */

/* Replaces path with exactly len bytes of data, then sets its mode. The file
 * is created 0600 and exclusively, so it is nobody else's while written. */
SP_TEST_HELPER void sp_test_write_file(const char *path, const void *data, size_t len, mode_t mode) {
    (void)unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) fail_msg("cannot create %s: %s", path, strerror(errno));
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        assert_true(n > 0);
        done += (size_t)n;
    }
    assert_int_equal(close(fd), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* The whole file, NUL-terminated, its length through len_out (may be NULL);
 * the caller frees it. */
SP_TEST_HELPER char *sp_test_read_file(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) fail_msg("cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0, n;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while ((n = fread(buf + len, 1, cap - 1 - len, f)) > 0) {
        len += n;
        if (len == cap - 1) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            assert_non_null(grown);
            buf = grown;
        }
    }
    assert_int_equal(ferror(f), 0);
    assert_int_equal(fclose(f), 0);
    buf[len] = 0;
    if (len_out != NULL) *len_out = len;
    return buf;
}

/* The JSON document in path, parsed with jansson's flags (the caller
 * decrefs). sp_init must have run first: it gives jansson the library's
 * allocator, and a value made before that would be freed by the wrong one. */
SP_TEST_HELPER json_t *sp_test_load_json(const char *path, size_t flags) {
    json_error_t err;
    json_t *root = json_load_file(path, flags, &err);
    if (root == NULL) fail_msg("%s: line %d: %s", path, err.line, err.text);
    return root;
}

/* The permission bits of path itself (a symlink is not followed). */
SP_TEST_HELPER mode_t sp_test_file_mode(const char *path) {
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

/* The size of path in bytes. */
SP_TEST_HELPER off_t sp_test_file_size(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Makes every append to files of this process fail from now on, for files
 * already `limit` bytes long: RLIMIT_FSIZE turns write(2) past it into
 * EFBIG (SIGXFSZ ignored). This reaches an already-open O_APPEND descriptor
 * (the audit log's), which chmod or replacing the path could not, and works
 * for root too. sp_test_fsize_restore puts the limit and handler back. */
typedef struct {
    struct rlimit old;
    void (*old_handler)(int);
} sp_test_fsize_guard;

SP_TEST_HELPER void sp_test_fsize_limit(sp_test_fsize_guard *g, rlim_t limit) {
    g->old_handler = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &g->old), 0);
    struct rlimit now = g->old;
    now.rlim_cur = limit;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &now), 0);
}

SP_TEST_HELPER void sp_test_fsize_restore(sp_test_fsize_guard *g) {
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &g->old), 0);
    signal(SIGXFSZ, g->old_handler);
}

/* ---- bytes ---- */

SP_TEST_HELPER int sp_test_nibble(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Hex digits to bytes; spaces, '|' and newlines are skipped so that long
 * vectors can be laid out by field. Any other character, an odd number of
 * digits or more than cap bytes fails the test. Returns the byte count. */
SP_TEST_HELPER size_t sp_test_unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        if (*s == ' ' || *s == '|' || *s == '\n') continue;
        int v = sp_test_nibble(*s);
        if (v < 0) fail_msg("not a hex digit: '%c'", *s);
        if (hi < 0) {
            hi = v;
            continue;
        }
        assert_true(n < cap);
        out[n++] = (uint8_t)(hi << 4 | v);
        hi = -1;
    }
    assert_int_equal(hi, -1);
    return n;
}

/* True when all n bytes at p are zero. */
SP_TEST_HELPER bool sp_test_all_zero(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) return false;
    }
    return true;
}

/* ---- keys ---- */

/* True when a and b export to the same bytes; no cmocka call, so a worker
 * thread may use it. */
SP_TEST_HELPER bool sp_test_same_key(const sp_key *a, const sp_key *b) {
    uint8_t x[SP_KEY_BYTES], y[SP_KEY_BYTES];
    bool same = sp_key_export(a, x) == SP_OK && sp_key_export(b, y) == SP_OK && memcmp(x, y, sizeof x) == 0;
    sp_wipe(x, sizeof x);
    sp_wipe(y, sizeof y);
    return same;
}

/* a and b hold the same key bytes (compared through exports, then wiped). */
SP_TEST_HELPER void sp_test_assert_same_key(const sp_key *a, const sp_key *b) {
    uint8_t x[SP_KEY_BYTES], y[SP_KEY_BYTES];
    assert_ok(sp_key_export(a, x));
    assert_ok(sp_key_export(b, y));
    assert_memory_equal(x, y, SP_KEY_BYTES);
    sp_wipe(x, sizeof x);
    sp_wipe(y, sizeof y);
}

/* kms opens the wrapped blob to a key with want's bytes. */
SP_TEST_HELPER void sp_test_assert_unwraps_to(sp_kms *kms, const uint8_t *blob, size_t len, const sp_key *want) {
    sp_key *back = NULL;
    assert_ok(sp_kms_unwrap_key(kms, blob, len, &back));
    sp_test_assert_same_key(want, back);
    sp_key_free(back);
}

/* No spelling a careless log line or file could give the key appears in
 * text: hex in either case, base64 with and without padding, base64url. */
SP_TEST_HELPER void sp_test_assert_key_absent(const char *text, const uint8_t key[SP_KEY_BYTES]) {
    char hex[2 * SP_KEY_BYTES + 1], b64[64];
    size_t n = 0;
    sp_hex_encode(key, SP_KEY_BYTES, hex);
    assert_null(strstr(text, hex));
    for (char *p = hex; *p; p++) {
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
    }
    assert_null(strstr(text, hex));
    assert_ok(sp_b64_encode(key, SP_KEY_BYTES, b64, sizeof b64, &n, false));
    b64[n] = 0;
    assert_null(strstr(text, b64));
    b64[n - 1] = 0; /* one '=' fewer */
    assert_null(strstr(text, b64));
    assert_ok(sp_b64_encode(key, SP_KEY_BYTES, b64, sizeof b64, &n, true));
    b64[n] = 0;
    assert_null(strstr(text, b64));
}

/* Key-exchange items equal one by one: version, expiry and key bytes. */
SP_TEST_HELPER void sp_test_assert_same_items(const sp_keyx_item *want, const sp_keyx_item *got, size_t n) {
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(want[i].version, got[i].version);
        assert_int_equal(want[i].expires, got[i].expires);
        sp_test_assert_same_key(want[i].key, got[i].key);
    }
}

/* ---- time ---- */

/* Milliseconds on the monotonic clock. */
SP_TEST_HELPER int64_t sp_test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

SP_TEST_HELPER void sp_test_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- child processes ---- */

/* fork(), with stdio flushed first so the child cannot print the parent's
 * buffered output a second time. */
SP_TEST_HELPER pid_t sp_test_fork(void) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    return pid;
}

/* Reaps the child pid: its exit status, or minus the number of the signal
 * that ended it. */
SP_TEST_HELPER int sp_test_wait(pid_t pid) {
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* ---- allocation fault injection ----
 *
 * The walks fail the n-th allocation of a call for n = 1, 2, ... until the
 * call no longer reaches the n-th one:
 *
 *     sp_test_fault fault = sp_test_fault_arm(n);
 *     rc = the_call(...);
 *     bool reached = sp_test_fault_disarm(fault);
 *     ...
 *     if (!reached) break;   (the call made fewer than n allocations)
 */
typedef struct {
    uint64_t n;     /* the allocation that fails, counted from arming */
    uint64_t start; /* the funnel's count when armed */
} sp_test_fault;

SP_TEST_HELPER sp_test_fault sp_test_fault_arm(uint64_t n) {
    sp_test_fault fault = {n, sp_test_alloc_count()};
    sp_test_alloc_fail_at(n);
    return fault;
}

/* Stops failing allocations; true when the armed one was reached. */
SP_TEST_HELPER bool sp_test_fault_disarm(sp_test_fault fault) {
    sp_test_alloc_fail_at(0);
    return sp_test_alloc_count() - fault.start >= fault.n;
}

#endif
