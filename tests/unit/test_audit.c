/*
 * The audit log (include/sealpost/audit.h). Its whole point is to make
 * tampering visible, so most of these tests tamper: they write a real log in
 * a mkdtemp directory, then delete, edit, swap, forge and truncate lines, or
 * delete the head, and expect sp_audit_verify to name the first broken line
 * with a reason, and sp_audit_open to refuse to chain onto a broken log.
 *
 * The head is two checksummed slots updated in place, so its tests tear,
 * damage, swap and forge slots the way a crash mid-write or a careless hand
 * would, and expect verify and open to use the intact slot, accept exactly
 * the states a crash can leave, and call the rest malformed. Slots are built
 * here independently of the library (the checksum by EVP directly), so the
 * file format is pinned by the test, not just round-tripped.
 *
 * The rest hold the writer to its promises: the line format (checked here
 * against an independent recomputation of the hash), a chain that continues
 * across reopening, no lost or torn lines under four threads, a verify
 * running beside the writer that always sees a sound log, arguments refused
 * before anything is written, nothing in a line but what the caller gave,
 * and under every failed write or allocation a clean error that leaves the
 * log exactly as it was (ASan checks for leaks), or, where not even the
 * undoing works, a sound log and a handle that stops recording.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "sp_test_util.h"

#include "audit/sp_audit_internal.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define MAX_TEST_LINES 2100

/* ---- scratch directory ---- */

typedef struct {
    char dir[256];
    char path[300]; /* dir/audit.log */
    char head[310]; /* dir/audit.log.head */
} scratch;

static int scratch_setup(void **state) {
    scratch *s = SP_TEST_FIXTURE_NEW(scratch, dir, "sp-audit");
    if (s == NULL) return -1;
    snprintf(s->path, sizeof s->path, "%s/audit.log", s->dir);
    snprintf(s->head, sizeof s->head, "%s/audit.log.head", s->dir);
    *state = s;
    return 0;
}

static int scratch_teardown(void **state) {
    scratch *s = *state;
    return sp_test_fixture_free(s, s->dir);
}

/* ---- files ---- */

static void spit(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) fail_msg("cannot write %s", path);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The log as lines (without their newlines), each its own heap string. */
typedef struct {
    char *line[MAX_TEST_LINES];
    size_t n;
} lines_t;

static void read_lines(const char *path, lines_t *out) {
    size_t len = 0;
    char *text = sp_test_read_file(path, &len);
    out->n = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '\n') continue;
        assert_true(out->n < MAX_TEST_LINES);
        out->line[out->n] = strndup(text + start, i - start);
        assert_non_null(out->line[out->n]);
        out->n++;
        start = i + 1;
    }
    assert_int_equal(start, len); /* the writer always ends with a newline */
    free(text);
}

static void write_lines(const char *path, const lines_t *l) {
    size_t total = 0;
    for (size_t i = 0; i < l->n; i++) total += strlen(l->line[i]) + 1;
    char *text = malloc(total + 1);
    assert_non_null(text);
    size_t at = 0;
    for (size_t i = 0; i < l->n; i++) {
        size_t n = strlen(l->line[i]);
        memcpy(text + at, l->line[i], n);
        text[at + n] = '\n';
        at += n + 1;
    }
    spit(path, text, total);
    free(text);
}

static void free_lines(lines_t *l) {
    for (size_t i = 0; i < l->n; i++) free(l->line[i]);
    l->n = 0;
}

static void remove_line(lines_t *l, size_t index) {
    free(l->line[index]);
    memmove(&l->line[index], &l->line[index + 1], (l->n - index - 1) * sizeof l->line[0]);
    l->n--;
}

static unsigned file_mode(const char *path) {
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

/* ---- recording and verifying ---- */

static void record_n(sp_audit *a, unsigned from, unsigned n) {
    for (unsigned i = from; i < from + n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%u", i);
        sp_audit_field f[] = {{"actor", "alice"}, {"i", num}};
        assert_ok(sp_audit_record(a, "admin.test", f, 2));
    }
}

static void make_log(const scratch *s, unsigned n) {
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 1, n);
    sp_audit_close(a);
}

static void expect_ok(const char *path, uint64_t lines) {
    sp_audit_report rep;
    memset(&rep, 0x55, sizeof rep);
    sp_error rc = sp_audit_verify(path, &rep);
    if (rc != SP_OK) fail_msg("verify gave %s: line %" PRIu64 ": %s", sp_error_name(rc), rep.bad_line, rep.reason);
    assert_int_equal(rep.lines, lines);
    assert_int_equal(rep.bad_line, 0);
    assert_string_equal(rep.reason, "");
}

static void expect_broken(const char *path, uint64_t bad_line, const char *needle) {
    sp_audit_report rep;
    sp_error rc = sp_audit_verify(path, &rep);
    if (rc != SP_ERR_AUDIT_BROKEN) fail_msg("verify gave %s, expected SP_ERR_AUDIT_BROKEN", sp_error_name(rc));
    if (rep.bad_line != bad_line) {
        fail_msg("bad_line %" PRIu64 ", expected %" PRIu64 " (%s)", rep.bad_line, bad_line, rep.reason);
    }
    assert_int_equal(rep.lines, bad_line - 1);
    if (strstr(rep.reason, needle) == NULL) fail_msg("reason \"%s\" lacks \"%s\"", rep.reason, needle);
}

static void expect_open_refused(const char *path) {
    sp_audit *a = (sp_audit *)&a;
    assert_rc(sp_audit_open(path, &a), SP_ERR_AUDIT_BROKEN);
    assert_null(a);
}

/* The hash recomputed without the library's code: SHA-256 over prev, a
 * newline and the sorted compact JSON of the line minus "hash". */
static void independent_hash(const char *line, char out[65]) {
    json_error_t err;
    json_t *obj = json_loads(line, 0, &err);
    assert_non_null(obj);
    const char *prev = json_string_value(json_object_get(obj, "prev"));
    assert_non_null(prev);
    char prev_copy[65];
    snprintf(prev_copy, sizeof prev_copy, "%s", prev);
    assert_int_equal(json_object_del(obj, "hash"), 0);
    /* json_dumpb into our own buffer: json_dumps would hand back memory from
     * the library's wiping allocator, which plain free() cannot release */
    size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS);
    assert_true(n > 0);
    char *msg = malloc(64 + 1 + n);
    assert_non_null(msg);
    memcpy(msg, prev_copy, 64);
    msg[64] = '\n';
    assert_int_equal(json_dumpb(obj, msg + 65, n, JSON_COMPACT | JSON_SORT_KEYS), n);
    unsigned char d[32];
    unsigned int dn = 0;
    assert_int_equal(EVP_Digest(msg, 65 + n, d, &dn, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    free(msg);
    json_decref(obj);
}

static const char *member(json_t *obj, const char *name) {
    const char *v = json_string_value(json_object_get(obj, name));
    if (v == NULL) fail_msg("no string member \"%s\"", name);
    return v;
}

/* The hash of line `line` (1-based) of the log at path. */
static void line_hash(const char *path, size_t line, char out[65]) {
    lines_t l;
    read_lines(path, &l);
    assert_true(line >= 1 && line <= l.n);
    json_error_t err;
    json_t *obj = json_loads(l.line[line - 1], 0, &err);
    assert_non_null(obj);
    snprintf(out, 65, "%s", member(obj, "hash"));
    json_decref(obj);
    free_lines(&l);
}

/* ---- the head's slots, built without the library ---- */

#define SLOT_BYTES 195 /* the format below, pinned */
#define HEAD_BYTES (2 * SLOT_BYTES)
#define CHECKED_BYTES 123 /* everything before " check=" */

/* "sealpost-audit-head/2 slot=A seq=<20 digits> hash=<64 hex> check=<64 hex>\n",
 * check the SHA-256 of what comes before " check=". The hash is taken as
 * given (forged ones too); the checksum always matches what is written. */
static void make_slot(char out[SLOT_BYTES + 1], unsigned slot, uint64_t seq, const char *hash) {
    int n = snprintf(out, SLOT_BYTES + 1, "sealpost-audit-head/2 slot=%c seq=%020" PRIu64 " hash=%.64s",
                     'A' + (int)slot, seq, hash);
    assert_int_equal(n, CHECKED_BYTES);
    unsigned char d[32];
    unsigned int dn = 0;
    assert_int_equal(EVP_Digest(out, CHECKED_BYTES, d, &dn, EVP_sha256(), NULL), 1);
    char *at = out + CHECKED_BYTES;
    memcpy(at, " check=", 7);
    at += 7;
    for (int i = 0; i < 32; i++, at += 2) snprintf(at, 3, "%02x", d[i]);
    *at++ = '\n';
    *at = 0;
    assert_int_equal(at - out, SLOT_BYTES);
}

/* A head file of the two given slots' texts (each SLOT_BYTES, or anything
 * for a damaged one). */
static void write_head(const scratch *s, const char *a, const char *b) {
    char text[HEAD_BYTES];
    memcpy(text, a, SLOT_BYTES);
    memcpy(text + SLOT_BYTES, b, SLOT_BYTES);
    spit(s->head, text, sizeof text);
}

/* A head whose slots name (seq_a, hash_a) and (seq_b, hash_b). */
static void write_head_of(const scratch *s, uint64_t seq_a, const char *hash_a, uint64_t seq_b, const char *hash_b) {
    char a[SLOT_BYTES + 1], b[SLOT_BYTES + 1];
    make_slot(a, 0, seq_a, hash_a);
    make_slot(b, 1, seq_b, hash_b);
    write_head(s, a, b);
}

/* Slot `slot` of the head file as it is on disk. */
static void read_slot(const scratch *s, unsigned slot, char out[SLOT_BYTES + 1]) {
    size_t len = 0;
    char *text = sp_test_read_file(s->head, &len);
    assert_int_equal(len, HEAD_BYTES);
    memcpy(out, text + slot * SLOT_BYTES, SLOT_BYTES);
    out[SLOT_BYTES] = 0;
    free(text);
}

/* What the library reads from the head file: the newest seq it names. */
static sp_audit_head parsed_head(const scratch *s) {
    size_t len = 0;
    char *text = sp_test_read_file(s->head, &len);
    sp_audit_head h;
    assert_ok(sp_audit_parse_head(text, len, &h));
    free(text);
    return h;
}

/* Damages a slot the way a write cut short would: its first half new bytes,
 * the rest what was there. */
static void tear_slot(const scratch *s, unsigned slot, const char *new_text) {
    size_t len = 0;
    char *text = sp_test_read_file(s->head, &len);
    assert_int_equal(len, HEAD_BYTES);
    memcpy(text + slot * SLOT_BYTES, new_text, SLOT_BYTES / 2);
    spit(s->head, text, len);
    free(text);
}

/* ---- the format ---- */

static void test_append_and_verify(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    expect_ok(s->path, 0); /* a fresh log verifies: it has its head already */
    record_n(a, 1, 10);
    expect_ok(s->path, 10); /* while still open: each record is in the file */
    sp_audit_close(a);
    expect_ok(s->path, 10);
    assert_int_equal(file_mode(s->path), 0600);
    assert_int_equal(file_mode(s->head), 0600);

    lines_t l;
    read_lines(s->path, &l);
    assert_int_equal(l.n, 10);
    char prev[65] = ZERO_HASH;
    for (size_t i = 0; i < l.n; i++) {
        json_error_t err;
        json_t *obj = json_loads(l.line[i], JSON_REJECT_DUPLICATES, &err);
        assert_non_null(obj);
        /* sorted keys, no spaces */
        const char *start = "{\"actor\":\"alice\",\"event\":\"admin.test\",\"hash\":\"";
        assert_true(strncmp(l.line[i], start, strlen(start)) == 0);
        assert_null(strchr(l.line[i], ' '));
        assert_int_equal(json_integer_value(json_object_get(obj, "seq")), i + 1);
        assert_string_equal(member(obj, "prev"), prev);
        char want[65];
        independent_hash(l.line[i], want);
        assert_string_equal(member(obj, "hash"), want);
        const char *t = member(obj, "time");
        assert_int_equal(strlen(t), 20);
        assert_true(t[4] == '-' && t[10] == 'T' && t[19] == 'Z');
        snprintf(prev, sizeof prev, "%s", want);
        json_decref(obj);
    }
    free_lines(&l);

    /* the head: two slots that took turns, B holding line 1, A line 2 and
     * so on; the newest (A, line 10) and the one before it (B, line 9) */
    assert_int_equal(SP_AUDIT_HEAD_SLOT, SLOT_BYTES);
    assert_int_equal(sp_test_file_size(s->head), HEAD_BYTES);
    char want[SLOT_BYTES + 1], got[SLOT_BYTES + 1], hash9[65];
    make_slot(want, 0, 10, prev);
    read_slot(s, 0, got);
    assert_string_equal(got, want);
    line_hash(s->path, 9, hash9);
    make_slot(want, 1, 9, hash9);
    read_slot(s, 1, got);
    assert_string_equal(got, want);
    /* the library spells slots the same way */
    char lib[SP_AUDIT_HEAD_SLOT];
    assert_ok(sp_audit_head_slot(1, 9, hash9, lib));
    assert_memory_equal(lib, want, SLOT_BYTES);
}

/* Nothing but the caller's fields and the five the chain needs: a value is
 * written as given (keeping secrets out is the caller's job, documented in
 * the header), and no other state of the process leaks into a line. */
static void test_only_given_fields(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_field f[] = {{"user", "bob"}, {"note", "password=hunter2 \"quoted\" \\ / caf\xc3\xa9 \xf0\x9f\x94\x91"}};
    assert_ok(sp_audit_record(a, "admin.login", f, 2));
    assert_ok(sp_audit_record(a, "admin.logout", NULL, 0));
    sp_audit_close(a);
    expect_ok(s->path, 2);

    lines_t l;
    read_lines(s->path, &l);
    assert_int_equal(l.n, 2);
    json_error_t err;
    json_t *obj = json_loads(l.line[0], JSON_REJECT_DUPLICATES, &err);
    assert_non_null(obj);
    assert_int_equal(json_object_size(obj), 7);
    const char *expected[] = {"event", "hash", "note", "prev", "seq", "time", "user"};
    for (size_t i = 0; i < 7; i++) assert_non_null(json_object_get(obj, expected[i]));
    assert_string_equal(member(obj, "note"), f[1].value);
    assert_string_equal(member(obj, "user"), "bob");
    assert_string_equal(member(obj, "event"), "admin.login");
    json_decref(obj);
    /* UTF-8 stays UTF-8, '/' is not escaped */
    assert_non_null(strstr(l.line[0], "caf\xc3\xa9 \xf0\x9f\x94\x91"));
    assert_non_null(strstr(l.line[0], " / "));

    obj = json_loads(l.line[1], JSON_REJECT_DUPLICATES, &err);
    assert_non_null(obj);
    assert_int_equal(json_object_size(obj), 5);
    json_decref(obj);
    free_lines(&l);
}

/* ---- tampering ---- */

static void test_delete_middle_line(void **state) {
    scratch *s = *state;
    make_log(s, 10);
    lines_t l;
    read_lines(s->path, &l);
    remove_line(&l, 4); /* line 5 */
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 5, "line 5: sequence gap");
    expect_broken(s->path, 5, "(line removed)");
}

static void test_delete_first_line(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    lines_t l;
    read_lines(s->path, &l);
    remove_line(&l, 0);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 1, "line 1: sequence gap");
}

static void test_edit_value(void **state) {
    scratch *s = *state;
    make_log(s, 10);
    lines_t l;
    read_lines(s->path, &l);
    char *at = strstr(l.line[3], "alice");
    assert_non_null(at);
    memcpy(at, "mallo", 5);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 4, "line 4: hash mismatch (edited)");
    /* open looks at the end of the log only (it must not read a huge log
     * whole); the middle is verify's job */
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_close(a);
}

static void test_edit_last_line_refused_at_open(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    lines_t l;
    read_lines(s->path, &l);
    char *at = strstr(l.line[3], "alice");
    memcpy(at, "alicf", 5);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 4, "hash mismatch");
    expect_open_refused(s->path);
}

static void test_edit_not_canonical(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    lines_t l;
    read_lines(s->path, &l);
    char *original = strdup(l.line[1]);
    size_t n = strlen(original);

    /* the same JSON value, spelt differently: a space after the brace */
    char *spaced = malloc(n + 2);
    assert_non_null(spaced);
    spaced[0] = '{';
    spaced[1] = ' ';
    memcpy(spaced + 2, original + 1, n); /* with the NUL */
    free(l.line[1]);
    l.line[1] = spaced;
    write_lines(s->path, &l);
    expect_broken(s->path, 2, "line 2: not in canonical form");

    /* an escape where the writer writes the character: "\u0061lice" is "alice" */
    char *at = strstr(original, "\"alice\"");
    assert_non_null(at);
    size_t keep = (size_t)(at - original) + 1; /* up to and with the quote */
    char *escaped = malloc(n + 6);
    assert_non_null(escaped);
    memcpy(escaped, original, keep);
    memcpy(escaped + keep, "\\u0061", 6);
    memcpy(escaped + keep + 6, at + 2, n - keep); /* after the 'a', with the NUL */
    free(l.line[1]);
    l.line[1] = escaped;
    write_lines(s->path, &l);
    expect_broken(s->path, 2, "line 2: not in canonical form");
    free(original);
    free_lines(&l);
}

static void test_swap_lines(void **state) {
    scratch *s = *state;
    make_log(s, 6);
    lines_t l;
    read_lines(s->path, &l);
    char *t = l.line[2];
    l.line[2] = l.line[3];
    l.line[3] = t;
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 3, "line 3: sequence gap");
}

static void test_duplicate_line(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    lines_t l;
    read_lines(s->path, &l);
    free(l.line[2]);
    l.line[2] = strdup(l.line[1]);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 3, "line 3: sequence goes back");
}

/* Replaces line 5 with a forged one whose own hash is right: what someone
 * who knows the format, but not the lines after, would write. */
static void forge_line_5(scratch *s) {
    lines_t l;
    read_lines(s->path, &l);
    json_error_t err;
    json_t *line4 = json_loads(l.line[3], 0, &err);
    assert_non_null(line4);
    char line[SP_AUDIT_MAX_LINE + 1], hash[65];
    size_t len = 0;
    sp_audit_field f[] = {{"actor", "mallory"}, {"i", "5"}};
    assert_ok(sp_audit_format_line(member(line4, "hash"), 5, 1700000000, "admin.test", f, 2, line, sizeof line, &len,
                                   hash));
    json_decref(line4);
    free(l.line[4]);
    l.line[4] = strndup(line, len);
    write_lines(s->path, &l);
    free_lines(&l);
}

/* A forger who recomputes the hash of the line they changed still breaks
 * the link to the next line. */
static void test_forged_line_breaks_next(void **state) {
    scratch *s = *state;
    make_log(s, 8);
    forge_line_5(s);
    expect_broken(s->path, 6, "line 6: prev does not match the line before");
}

/* The same forgery on the last line: the chain holds, the head does not. */
static void test_forged_last_line_vs_head(void **state) {
    scratch *s = *state;
    make_log(s, 5);
    forge_line_5(s);
    expect_broken(s->path, 5, "line 5: hash differs from the head");
    expect_open_refused(s->path);
}

static void test_truncate_last_line(void **state) {
    scratch *s = *state;
    make_log(s, 10);
    lines_t l;
    read_lines(s->path, &l);
    remove_line(&l, 9);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 10, "end: head says seq 10, log ends at 9 (lines removed from the end)");
    expect_open_refused(s->path);

    /* emptied altogether */
    spit(s->path, "", 0);
    expect_broken(s->path, 1, "end: head says seq 10, log ends at 0");
    expect_open_refused(s->path);
}

static void test_delete_head(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    assert_int_equal(unlink(s->head), 0);
    expect_broken(s->path, 4, "end: head file missing");
    expect_open_refused(s->path);
    /* ... and together with a truncation, which is what deleting it would hide */
    lines_t l;
    read_lines(s->path, &l);
    remove_line(&l, 2);
    write_lines(s->path, &l);
    free_lines(&l);
    expect_broken(s->path, 3, "end: head file missing");
}

/* Heads that are neither format: empty, JSON that is not a head record
 * (the legacy format's near misses), anything else. */
static void test_malformed_head(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    const char *bad[] = {"", "{}", "{\"seq\":3}", "{\"seq\":-1,\"hash\":\"" ZERO_HASH "\"}",
                         "{\"seq\":3,\"hash\":\"00\"}", "{\"seq\":3,\"hash\":\"" ZERO_HASH "\",\"x\":1}", "[3]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        spit(s->head, bad[i], strlen(bad[i]));
        expect_broken(s->path, 4, "end: head file malformed");
        expect_open_refused(s->path);
    }
}

static void test_cut_short_line(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    size_t len = 0;
    char *text = sp_test_read_file(s->path, &len);
    spit(s->path, text, len - 10); /* a crash mid-write */
    free(text);
    expect_broken(s->path, 3, "line 3: no newline at the end (cut short)");
    expect_open_refused(s->path);
}

static void test_overlong_line(void **state) {
    scratch *s = *state;
    make_log(s, 2);
    size_t len = 0;
    char *text = sp_test_read_file(s->path, &len);
    size_t big = 3 * SP_AUDIT_MAX_LINE;
    char *more = malloc(len + big + 1);
    assert_non_null(more);
    memcpy(more, text, len);
    memset(more + len, 'x', big);
    more[len + big] = '\n';
    spit(s->path, more, len + big + 1);
    expect_broken(s->path, 3, "line 3: longer than 8192 bytes");
    expect_open_refused(s->path);
    /* an empty line */
    memcpy(more + len, "\n", 1);
    spit(s->path, more, len + 1);
    expect_broken(s->path, 3, "line 3: empty line");
    expect_open_refused(s->path);
    /* not JSON */
    memcpy(more + len, "hello\n", 6);
    spit(s->path, more, len + 6);
    expect_broken(s->path, 3, "line 3: not valid JSON");
    free(more);
    free(text);
}

/* ---- reopening ---- */

static void test_reopen_continues(void **state) {
    scratch *s = *state;
    make_log(s, 5);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 6, 5);
    sp_audit_close(a);
    expect_ok(s->path, 10);
    lines_t l;
    read_lines(s->path, &l);
    assert_int_equal(l.n, 10);
    for (size_t i = 0; i < l.n; i++) {
        char want[32];
        snprintf(want, sizeof want, "\"seq\":%zu,", i + 1);
        assert_non_null(strstr(l.line[i], want));
    }
    free_lines(&l);
    /* an empty log reopens too */
    assert_int_equal(unlink(s->path), 0);
    assert_int_equal(unlink(s->head), 0);
    make_log(s, 0);
    make_log(s, 0);
    expect_ok(s->path, 0);
}

/* A process killed between writing a line and writing its slot leaves the
 * head one line behind: open accepts that and repairs it. Two lines behind
 * cannot happen that way, so it is refused. */
static void test_head_one_behind(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    char h2[65], h3[65];
    line_hash(s->path, 2, h2);
    line_hash(s->path, 3, h3);
    /* slots as line 3 left them (A line 2, B line 3); line 4 is in the log,
     * its slot never written */
    write_head_of(s, 2, h2, 3, h3);
    expect_ok(s->path, 4); /* verify: a head behind the log names a line of the chain */
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_head h = parsed_head(s); /* repaired on disk by open itself */
    assert_true(h.valid);
    assert_int_equal(h.seq, 4);
    assert_int_equal(h.newest, 0); /* into the slot that held the older line */
    record_n(a, 5, 1);
    sp_audit_close(a);
    expect_ok(s->path, 5);
    h = parsed_head(s);
    assert_int_equal(h.seq, 5);
    assert_int_equal(h.newest, 1);

    /* two behind, the lines chaining on from the head: the state a crash
     * between a batch's lines and its slot leaves (sp_audit_record_many),
     * accepted and repaired like one behind */
    write_head_of(s, 2, h2, 3, h3);
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_close(a);
    assert_int_equal(parsed_head(s).seq, 5);
    /* a head behind that names no line of the chain */
    char forged[65];
    memcpy(forged, h3, sizeof forged);
    forged[20] = forged[20] == 'a' ? 'b' : 'a';
    write_head_of(s, 2, h2, 3, forged);
    expect_broken(s->path, 3, "line 3: hash differs from the head");
    expect_open_refused(s->path);
}

/* Lines of a batch: chained among themselves and with single records, one
 * head update naming the last, all or nothing. */
static void test_record_many(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 1, 2);
    char nums[3][8];
    sp_audit_field f[3][2];
    sp_audit_entry e[3];
    for (int i = 0; i < 3; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", 3 + i);
        f[i][0] = (sp_audit_field){"actor", "bob"};
        f[i][1] = (sp_audit_field){"i", nums[i]};
        e[i] = (sp_audit_entry){"vault.decrypt", f[i], 2};
    }
    assert_ok(sp_audit_record_many(a, e, 3));
    assert_int_equal(parsed_head(s).seq, 5);
    record_n(a, 6, 1);
    expect_ok(s->path, 6);
    lines_t l;
    read_lines(s->path, &l);
    assert_int_equal(l.n, 6);
    assert_non_null(strstr(l.line[3], "\"i\":\"4\""));
    assert_non_null(strstr(l.line[3], "\"seq\":4"));
    assert_non_null(strstr(l.line[3], "vault.decrypt"));
    free_lines(&l);

    /* refused before anything is written */
    off_t size = sp_test_file_size(s->path);
    assert_rc(sp_audit_record_many(a, e, 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_record_many(a, NULL, 1), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_record_many(NULL, e, 1), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_record_many(a, e, SP_AUDIT_MAX_BATCH + 1), SP_ERR_TOO_LARGE);
    sp_audit_field bad[] = {{"Bad Name", "x"}};
    e[1] = (sp_audit_entry){"vault.decrypt", bad, 1};
    assert_rc(sp_audit_record_many(a, e, 3), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_test_file_size(s->path), size);
    assert_int_equal(parsed_head(s).seq, 6);

    /* the disk refuses: nothing of the batch stays, and the next works */
    e[1] = (sp_audit_entry){"vault.decrypt", f[1], 2};
    sp_test_fsize_guard guard;
    sp_test_fsize_limit(&guard, (rlim_t)size + 100);
    sp_error rc = sp_audit_record_many(a, e, 3);
    sp_test_fsize_restore(&guard);
    assert_rc(rc, SP_ERR_IO);
    assert_int_equal(sp_test_file_size(s->path), size);
    assert_int_equal(parsed_head(s).seq, 6);
    assert_ok(sp_audit_record_many(a, e, 3));
    sp_audit_close(a);
    expect_ok(s->path, 9);

    /* no memory for the batch's buffer: nothing written */
    assert_ok(sp_audit_open(s->path, &a));
    uint64_t lines = 9;
    bool failed = false;
    for (uint64_t n = 1; n < 50 && !failed; n++) {
        size = sp_test_file_size(s->path);
        sp_test_alloc_fail_at(n);
        rc = sp_audit_record_many(a, e, 3);
        sp_test_alloc_fail_at(0);
        if (rc == SP_ERR_NO_MEMORY) {
            failed = true;
            assert_int_equal(sp_test_file_size(s->path), size);
        } else {
            assert_ok(rc);
            lines += 3;
        }
    }
    assert_true(failed);
    sp_audit_close(a);
    expect_ok(s->path, lines);
}

/* A crash after a batch's lines and before its slot: open finds the head a
 * batch behind, checks that those lines chain on from it, and repairs it;
 * more than a batch behind, or lines that do not chain, it refuses. */
static void test_head_batch_behind(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    size_t old_len = 0;
    char *old_head = sp_test_read_file(s->head, &old_len);
    assert_non_null(old_head);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_field f[] = {{"actor", "carol"}};
    sp_audit_entry e[10];
    for (int i = 0; i < 10; i++) e[i] = (sp_audit_entry){"vault.decrypt", f, 1};
    assert_ok(sp_audit_record_many(a, e, 10));
    sp_audit_close(a);
    spit(s->head, old_head, old_len); /* the slot never written */
    assert_int_equal(parsed_head(s).seq, 3);
    expect_ok(s->path, 13);
    assert_ok(sp_audit_open(s->path, &a));
    assert_int_equal(parsed_head(s).seq, 13);
    record_n(a, 14, 1);
    sp_audit_close(a);
    expect_ok(s->path, 14);

    /* a line of the batch edited: no chain back to the head */
    spit(s->head, old_head, old_len);
    lines_t l;
    read_lines(s->path, &l);
    char *at = strstr(l.line[7], "carol");
    assert_non_null(at);
    at[0] = 'k';
    write_lines(s->path, &l);
    free_lines(&l);
    expect_open_refused(s->path);
    free(old_head);
}

static void test_head_too_far_behind(void **state) {
    scratch *s = *state;
    make_log(s, SP_AUDIT_MAX_BATCH + 3);
    char h1[65], h2[65], h3[65];
    line_hash(s->path, 1, h1);
    line_hash(s->path, 2, h2);
    line_hash(s->path, 3, h3);
    write_head_of(s, 1, h1, 2, h2); /* a batch and one more behind */
    expect_open_refused(s->path);
    write_head_of(s, 3, h3, 2, h2); /* exactly a batch behind */
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_close(a);
    expect_ok(s->path, SP_AUDIT_MAX_BATCH + 3);
}

/* A record pwrites the slot that does not hold the newest line, so the file
 * keeps its inode and its size: nothing is renamed or created per record. */
static void test_head_updated_in_place(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    struct stat before, after;
    assert_int_equal(stat(s->head, &before), 0);
    assert_int_equal(before.st_size, HEAD_BYTES);
    /* a fresh log's head: both slots name "line 0" */
    char want[SLOT_BYTES + 1], got[SLOT_BYTES + 1];
    make_slot(want, 0, 0, ZERO_HASH);
    read_slot(s, 0, got);
    assert_string_equal(got, want);
    make_slot(want, 1, 0, ZERO_HASH);
    read_slot(s, 1, got);
    assert_string_equal(got, want);
    for (unsigned i = 1; i <= 50; i++) {
        record_n(a, i, 1);
        sp_audit_head h = parsed_head(s);
        assert_true(h.valid);
        assert_int_equal(h.seq, i);
        assert_int_equal(h.newest, i % 2 ? 1 : 0);
        /* the other slot names the line before */
        char older[65];
        if (i > 1) line_hash(s->path, i - 1, older);
        make_slot(want, h.newest ^ 1u, i - 1, i > 1 ? older : ZERO_HASH);
        read_slot(s, h.newest ^ 1u, got);
        assert_string_equal(got, want);
    }
    assert_int_equal(stat(s->head, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(after.st_size, HEAD_BYTES);
    sp_audit_close(a);
    assert_int_equal(stat(s->head, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(file_mode(s->head), 0600);
    expect_ok(s->path, 50);
}

/* The slot that does not hold the newest line torn (a crash mid-write, or a
 * record whose slot write failed): the other slot is the head. Recording
 * goes on, into the torn slot, which is whole again afterwards. */
static void test_head_older_slot_torn(void **state) {
    scratch *s = *state;
    make_log(s, 6); /* A line 6, B line 5 */
    char junk[SLOT_BYTES + 1];
    memset(junk, 'x', SLOT_BYTES);
    junk[SLOT_BYTES] = 0;
    tear_slot(s, 1, junk);
    sp_audit_head h = parsed_head(s);
    assert_true(h.valid);
    assert_int_equal(h.seq, 6);
    expect_ok(s->path, 6);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 7, 1);
    sp_audit_close(a);
    expect_ok(s->path, 7);
    char want[SLOT_BYTES + 1], got[SLOT_BYTES + 1], h7[65];
    line_hash(s->path, 7, h7);
    make_slot(want, 1, 7, h7);
    read_slot(s, 1, got);
    assert_string_equal(got, want);
}

/* A crash while writing the slot of line 7: the line is in the log, its
 * slot half written. The intact slot names line 6, one behind, which verify
 * accepts and open repairs. */
static void test_head_crash_mid_slot_write(void **state) {
    scratch *s = *state;
    make_log(s, 6); /* A line 6, B line 5 */
    char h6[65], line[SP_AUDIT_MAX_LINE + 2], h7[65];
    line_hash(s->path, 6, h6);
    size_t len = 0;
    sp_audit_field f[] = {{"actor", "alice"}, {"i", "7"}};
    assert_ok(sp_audit_format_line(h6, 7, 1700000000, "admin.test", f, 2, line, sizeof line - 1, &len, h7));
    line[len] = '\n';
    size_t old_len = 0;
    char *old = sp_test_read_file(s->path, &old_len);
    char *grown = malloc(old_len + len + 1);
    assert_non_null(grown);
    memcpy(grown, old, old_len);
    memcpy(grown + old_len, line, len + 1);
    spit(s->path, grown, old_len + len + 1);
    free(grown);
    free(old);
    char slot7[SLOT_BYTES + 1];
    make_slot(slot7, 1, 7, h7);
    tear_slot(s, 1, slot7);

    expect_ok(s->path, 7);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    char got[SLOT_BYTES + 1];
    read_slot(s, 1, got);
    assert_string_equal(got, slot7); /* repaired: exactly what the record would have written */
    record_n(a, 8, 1);
    sp_audit_close(a);
    expect_ok(s->path, 8);
}

/* The newest slot damaged while the log is whole: what is left is a head
 * one line behind, which is all a torn write can ever cost, and open repairs
 * it. (Cutting a line off the end as well would go unseen, like forging a
 * head one line back: someone who may write both files can do either.) */
static void test_head_newest_slot_damaged(void **state) {
    scratch *s = *state;
    make_log(s, 6); /* A line 6, B line 5 */
    char junk[SLOT_BYTES + 1];
    memset(junk, '\0', SLOT_BYTES);
    tear_slot(s, 0, junk);
    sp_audit_head h = parsed_head(s);
    assert_true(h.valid);
    assert_int_equal(h.seq, 5);
    expect_ok(s->path, 6);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    assert_int_equal(parsed_head(s).seq, 6);
    sp_audit_close(a);
    expect_ok(s->path, 6);
}

/* No intact slot: the head says nothing, and a head that says nothing is
 * malformed, at open and in verify (it could otherwise hide a truncation,
 * like a deleted head). */
static void test_head_both_slots_corrupted(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    char a[SLOT_BYTES + 1], b[SLOT_BYTES + 1];
    read_slot(s, 0, a);
    read_slot(s, 1, b);
    /* one byte changed in each: the checksums catch it */
    a[40] = a[40] == '1' ? '2' : '1';
    b[100] = b[100] == 'a' ? 'b' : 'a';
    write_head(s, a, b);
    expect_broken(s->path, 5, "end: head file malformed (no intact slot)");
    expect_open_refused(s->path);
    /* both torn */
    char junk[SLOT_BYTES + 1];
    memset(junk, ' ', SLOT_BYTES);
    write_head(s, junk, junk);
    expect_broken(s->path, 5, "end: head file malformed (no intact slot)");
    expect_open_refused(s->path);
}

/* Slots that are well-formed text yet not what the writer writes, and files
 * of the wrong size. With the other slot intact the damaged one is ignored;
 * alone, the head is malformed. */
static void test_head_malformed_slots(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    char h4[65], good[SLOT_BYTES + 1], bad[SLOT_BYTES + 1];
    line_hash(s->path, 4, h4);
    make_slot(good, 0, 4, h4);

    char upper[65];
    memcpy(upper, h4, sizeof upper);
    for (size_t i = 0; i < 64; i++) upper[i] = (char)(upper[i] >= 'a' ? upper[i] - 'a' + 'A' : upper[i]);
    const struct {
        const char *what;
        uint64_t seq;
        const char *hash;
        unsigned letter; /* the slot named in the text */
    } cases[] = {
        {"uppercase hash", 4, upper, 1},
        {"seq above INT64_MAX", UINT64_C(9223372036854775808), h4, 1},
        {"slot A's text in B's place", 4, h4, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        make_slot(bad, cases[i].letter, cases[i].seq, cases[i].hash);
        write_head(s, good, bad);
        expect_ok(s->path, 4); /* slot A still says line 4 */
        char torn[SLOT_BYTES + 1];
        memcpy(torn, good, sizeof torn); /* and with A torn as well: nothing left */
        memset(torn + SLOT_BYTES / 2, '#', SLOT_BYTES / 2);
        write_head(s, torn, bad);
        sp_audit_report rep;
        assert_rc(sp_audit_verify(s->path, &rep), SP_ERR_AUDIT_BROKEN);
        if (strstr(rep.reason, "head file malformed") == NULL) fail_msg("%s: \"%s\"", cases[i].what, rep.reason);
        expect_open_refused(s->path);
    }

    /* a bad checksum, a missing newline, a non-digit in seq */
    make_slot(bad, 1, 4, h4);
    bad[SLOT_BYTES - 2] = bad[SLOT_BYTES - 2] == '0' ? '1' : '0';
    write_head(s, bad, bad);
    expect_broken(s->path, 5, "end: head file malformed (no intact slot)");
    make_slot(bad, 1, 4, h4);
    bad[SLOT_BYTES - 1] = ' ';
    write_head(s, good, bad);
    expect_ok(s->path, 4);
    make_slot(bad, 1, 4, h4);
    memcpy(bad + 40, "x", 1);
    write_head(s, good, bad);
    expect_ok(s->path, 4);

    /* two intact slots giving one seq different hashes: the writer never
     * leaves that, so neither is believed */
    char h3[65];
    line_hash(s->path, 3, h3);
    write_head_of(s, 4, h4, 4, h3);
    expect_broken(s->path, 5, "end: head file malformed (both slots give one seq different hashes)");
    expect_open_refused(s->path);

    /* the wrong size: one slot, a byte more, a byte less */
    char text[HEAD_BYTES + 1];
    make_slot(text, 0, 4, h4);
    make_slot(text + SLOT_BYTES, 1, 3, h3);
    text[HEAD_BYTES] = '\n';
    const size_t sizes[] = {SLOT_BYTES, HEAD_BYTES + 1, HEAD_BYTES - 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        spit(s->head, text, sizes[i]);
        expect_broken(s->path, 5, "end: head file malformed (not two slots)");
        expect_open_refused(s->path);
    }
    spit(s->head, text, HEAD_BYTES);
    expect_ok(s->path, 4);
}

/* An intact slot naming a line past the end of the log is a truncation,
 * whatever the other slot says. */
static void test_head_slot_ahead_of_log(void **state) {
    scratch *s = *state;
    make_log(s, 5);
    char h5[65];
    line_hash(s->path, 5, h5);
    write_head_of(s, 5, h5, 7, h5);
    expect_broken(s->path, 6, "end: head says seq 7, log ends at 5 (lines removed from the end)");
    expect_open_refused(s->path);
}

/* A log written before the slots has a one-record JSON head: verify reads
 * it, open checks it like any head and replaces it with the two-slot file
 * (repairing one line of lag as usual). */
static void test_legacy_head(void **state) {
    scratch *s = *state;
    make_log(s, 4);
    char h3[65], h4[65], text[160];
    line_hash(s->path, 3, h3);
    line_hash(s->path, 4, h4);
    snprintf(text, sizeof text, "{\"seq\":4,\"hash\":\"%s\"}\n", h4);
    spit(s->head, text, strlen(text));
    expect_ok(s->path, 4);
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    assert_int_equal(sp_test_file_size(s->head), HEAD_BYTES);
    char want[SLOT_BYTES + 1], got[SLOT_BYTES + 1];
    make_slot(want, 0, 4, h4);
    read_slot(s, 0, got);
    assert_string_equal(got, want);
    record_n(a, 5, 2);
    sp_audit_close(a);
    expect_ok(s->path, 6);

    /* behind, and without its newline */
    snprintf(text, sizeof text, "{\"seq\":3,\"hash\":\"%s\"}", h3);
    spit(s->head, text, strlen(text));
    expect_ok(s->path, 6);
    expect_open_refused(s->path); /* three behind */
    char h5[65];
    line_hash(s->path, 5, h5);
    snprintf(text, sizeof text, "{\"seq\":5,\"hash\":\"%s\"}", h5);
    spit(s->head, text, strlen(text));
    assert_ok(sp_audit_open(s->path, &a));
    sp_audit_close(a);
    assert_int_equal(parsed_head(s).seq, 6);
    expect_ok(s->path, 6);

    /* an empty log's legacy head */
    char empty_log[400];
    snprintf(empty_log, sizeof empty_log, "%s/empty.log", s->dir);
    char empty_head[410];
    snprintf(empty_head, sizeof empty_head, "%s.head", empty_log);
    spit(empty_log, "", 0);
    snprintf(text, sizeof text, "{\"seq\":0,\"hash\":\"%s\"}\n", ZERO_HASH);
    spit(empty_head, text, strlen(text));
    expect_ok(empty_log, 0);
    assert_ok(sp_audit_open(empty_log, &a));
    assert_int_equal(sp_test_file_size(empty_head), HEAD_BYTES);
    sp_audit_close(a);
    expect_ok(empty_log, 0);

    /* a legacy head still guards the end */
    snprintf(text, sizeof text, "{\"seq\":9,\"hash\":\"%s\"}\n", h4);
    spit(s->head, text, strlen(text));
    expect_broken(s->path, 7, "end: head says seq 9, log ends at 6");
    expect_open_refused(s->path);
}

static void test_open_refusals(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL, *b = NULL;
    assert_rc(sp_audit_open(NULL, &a), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_open(s->path, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_open("", &a), SP_ERR_INVALID_ARGUMENT);
    /* a second writer would fork the chain */
    assert_ok(sp_audit_open(s->path, &a));
    assert_rc(sp_audit_open(s->path, &b), SP_ERR_IO);
    assert_null(b);
    record_n(a, 1, 1);
    sp_audit_close(a);
    /* someone else's file in our place */
    char link[400];
    snprintf(link, sizeof link, "%s/link.log", s->dir);
    assert_int_equal(symlink(s->path, link), 0);
    assert_rc(sp_audit_open(link, &a), SP_ERR_IO);
    /* a directory */
    char sub[400];
    snprintf(sub, sizeof sub, "%s/sub", s->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_rc(sp_audit_open(sub, &a), SP_ERR_IO);
    assert_int_equal(rmdir(sub), 0);
    /* no log at all, and a head saying there were lines: the log was deleted */
    assert_int_equal(unlink(s->path), 0);
    expect_broken(s->path, 1, "end: head says seq 1, log ends at 0");
    expect_open_refused(s->path);
    sp_audit_close(NULL);
}

static void test_verify_refusals(void **state) {
    scratch *s = *state;
    sp_audit_report rep;
    assert_rc(sp_audit_verify(NULL, &rep), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_audit_verify(s->path, &rep), SP_ERR_IO); /* nothing there */
    make_log(s, 2);
    assert_ok(sp_audit_verify(s->path, NULL));
    /* an empty log without a head is a log nobody wrote to yet */
    assert_int_equal(unlink(s->head), 0);
    spit(s->path, "", 0);
    expect_ok(s->path, 0);
}

/* ---- threads ---- */

#define THREADS 4
#define PER_THREAD 500

typedef struct {
    sp_audit *audit;
    unsigned id;
    unsigned failures;
} worker_t;

static void *worker(void *p) {
    worker_t *w = p;
    char t[8];
    snprintf(t, sizeof t, "%u", w->id);
    for (unsigned i = 0; i < PER_THREAD; i++) {
        char num[16];
        snprintf(num, sizeof num, "%u", i);
        sp_audit_field f[] = {{"thread", t}, {"i", num}};
        if (sp_audit_record(w->audit, "kms.unwrap", f, 2) != SP_OK) w->failures++;
    }
    return NULL;
}

static void test_concurrent_appends(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker_t){a, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    sp_audit_close(a);
    expect_ok(s->path, THREADS * PER_THREAD);

    /* every record exactly once, each thread's in its own order */
    lines_t l;
    read_lines(s->path, &l);
    assert_int_equal(l.n, THREADS * PER_THREAD);
    static bool seen[THREADS][PER_THREAD];
    memset(seen, 0, sizeof seen);
    long last[THREADS] = {-1, -1, -1, -1};
    for (size_t i = 0; i < l.n; i++) {
        json_error_t err;
        json_t *obj = json_loads(l.line[i], 0, &err);
        assert_non_null(obj);
        unsigned t = (unsigned)strtoul(member(obj, "thread"), NULL, 10);
        long n = strtol(member(obj, "i"), NULL, 10);
        assert_true(t < THREADS && n >= 0 && n < PER_THREAD);
        assert_false(seen[t][n]);
        seen[t][n] = true;
        assert_true(n > last[t]);
        last[t] = n;
        json_decref(obj);
    }
    free_lines(&l);
}

/* verify beside a writer: it reads the head, then the log, while slots
 * are being overwritten in place, and must never see anything but a sound
 * log (a slot caught mid-write is read past: the other one is intact). */
typedef struct {
    sp_audit *audit;
    unsigned records;
    atomic_bool done;
    bool failed;
} busy_writer_t;

static void *busy_writer(void *p) {
    busy_writer_t *w = p;
    for (unsigned i = 0; i < w->records && !w->failed; i++) {
        char num[16];
        snprintf(num, sizeof num, "%u", i);
        sp_audit_field f[] = {{"actor", "vault"}, {"i", num}};
        if (sp_audit_record(w->audit, "vault.decrypt", f, 2) != SP_OK) w->failed = true;
    }
    atomic_store(&w->done, true);
    return NULL;
}

static void test_verify_while_recording(void **state) {
    scratch *s = *state;
    busy_writer_t w = {.records = 20000, .failed = false};
    atomic_init(&w.done, false);
    assert_ok(sp_audit_open(s->path, &w.audit));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, busy_writer, &w), 0);
    unsigned verifies = 0;
    uint64_t last = 0;
    do {
        sp_audit_report rep;
        sp_error rc = sp_audit_verify(s->path, &rep);
        if (rc != SP_OK) {
            fail_msg("verify beside the writer gave %s: line %" PRIu64 ": %s", sp_error_name(rc), rep.bad_line,
                     rep.reason);
        }
        assert_true(rep.lines >= last); /* the log only grows */
        last = rep.lines;
        verifies++;
    } while (!atomic_load(&w.done));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_false(w.failed);
    assert_true(verifies >= 1);
    sp_audit_close(w.audit);
    expect_ok(s->path, w.records);
}

/* ---- arguments ---- */

static void expect_refused_record(sp_audit *a, const char *path, const char *event, const sp_audit_field *f,
                                  size_t n) {
    off_t before = sp_test_file_size(path);
    sp_error rc = sp_audit_record(a, event, f, n);
    if (rc != SP_ERR_INVALID_ARGUMENT) {
        fail_msg("event \"%s\" with %zu fields (first \"%s\"=\"%s\") gave %s", event ? event : "(null)", n,
                 n && f && f[0].name ? f[0].name : "", n && f && f[0].value ? f[0].value : "", sp_error_name(rc));
    }
    assert_int_equal(sp_test_file_size(path), before);
}

static void test_invalid_arguments(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 1, 1);

    const char *bad_names[] = {"", "Upper", "with-dash", "with.dot", "a b", "seq", "time", "event", "prev", "hash",
                               "caf\xc3\xa9", "abcdefghijklmnopqrstuvwxyz0123456" /* 33 */};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        sp_audit_field f[] = {{"ok", "v"}, {bad_names[i], "v"}};
        expect_refused_record(a, s->path, "admin.test", f, 2);
    }
    sp_audit_field null_name[] = {{NULL, "v"}};
    expect_refused_record(a, s->path, "admin.test", null_name, 1);

    char v257[258], v256[257];
    memset(v257, 'v', 257);
    v257[257] = 0;
    memset(v256, 'v', 256);
    v256[256] = 0;
    const char *bad_values[] = {
        "line\nbreak", "tab\there", "nul?\x01", "del\x7f", "c1\xc2\x85",                   /* controls */
        "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", /* not UTF-8 */
        "\xe2\x80\xae" "evil", "\xe2\x81\xa6", "\xe2\x80\xa8", "\xef\xbb\xbf", "\xe2\x80\x8f", /* invisible */
        v257,
    };
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        sp_audit_field f[] = {{"ok", "v"}, {"value", bad_values[i]}};
        expect_refused_record(a, s->path, "admin.test", f, 2);
    }
    sp_audit_field null_value[] = {{"name", NULL}};
    expect_refused_record(a, s->path, "admin.test", null_value, 1);

    char event65[66];
    memset(event65, 'e', 65);
    event65[65] = 0;
    const char *bad_events[] = {"", "Admin.test", "admin test", "admin/test", "admin-test", event65};
    for (size_t i = 0; i < sizeof bad_events / sizeof bad_events[0]; i++) {
        expect_refused_record(a, s->path, bad_events[i], NULL, 0);
    }
    expect_refused_record(a, s->path, NULL, NULL, 0);

    sp_audit_field dup[] = {{"user", "a"}, {"other", "b"}, {"user", "c"}};
    expect_refused_record(a, s->path, "admin.test", dup, 3);
    expect_refused_record(a, s->path, "admin.test", NULL, 1);
    assert_rc(sp_audit_record(NULL, "admin.test", NULL, 0), SP_ERR_INVALID_ARGUMENT);

    /* 17 fields, and 16 whose escaped values make the line too long */
    char names[SP_AUDIT_MAX_FIELDS + 1][8];
    sp_audit_field many[SP_AUDIT_MAX_FIELDS + 1];
    for (size_t i = 0; i <= SP_AUDIT_MAX_FIELDS; i++) {
        snprintf(names[i], sizeof names[i], "f%zu", i);
        many[i] = (sp_audit_field){names[i], v256};
    }
    expect_refused_record(a, s->path, "admin.test", many, SP_AUDIT_MAX_FIELDS + 1);
    assert_ok(sp_audit_record(a, "admin.test", many, SP_AUDIT_MAX_FIELDS)); /* the limits themselves */
    char quotes[257];
    memset(quotes, '"', 256);
    quotes[256] = 0;
    for (size_t i = 0; i < SP_AUDIT_MAX_FIELDS; i++) many[i].value = quotes;
    expect_refused_record(a, s->path, "admin.test", many, SP_AUDIT_MAX_FIELDS);

    /* what is allowed at the edges */
    const char *event64 = "a12345678901234567890123456789012345678901234567890123456789012.";
    assert_int_equal(strlen(event64), 64);
    sp_audit_field edges[] = {{"abcdefghijklmnopqrstuvwxyz_01234", ""},
                              {"u", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 ~"}};
    assert_ok(sp_audit_record(a, event64, edges, 2));
    sp_audit_close(a);
    expect_ok(s->path, 3);
}

static void test_validators(void **state) {
    (void)state;
    assert_true(sp_audit_name_ok("a_1", 3));
    assert_false(sp_audit_name_ok("seq", 3));
    assert_true(sp_audit_name_ok("seqs", 4));
    assert_true(sp_audit_name_ok("seqs", 3) == false); /* "seq" */
    assert_true(sp_audit_event_ok("kms.open", 8));
    assert_false(sp_audit_event_ok("kms.open", 0));
    assert_true(sp_audit_value_ok("", 0));
    assert_true(sp_audit_value_ok("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    assert_false(sp_audit_value_ok("\xf4\x8f\xbf", 3));   /* cut short */
    assert_false(sp_audit_value_ok("a\0b", 3));
    assert_false(sp_audit_value_ok(NULL, 0));
}

/* check_line's reasons, straight, on lines the writer makes. */
static void test_check_line(void **state) {
    (void)state;
    char line[SP_AUDIT_MAX_LINE + 1], hash[65], reason[96];
    size_t len = 0;
    sp_audit_field f[] = {{"k", "v"}};
    assert_ok(sp_audit_format_line(ZERO_HASH, 1, 1795478399, "a.b", f, 1, line, sizeof line, &len, hash));
    line[len] = 0;
    assert_non_null(strstr(line, "\"time\":\"2026-11-23T23:59:59Z\""));
    sp_audit_line info;
    assert_ok(sp_audit_check_line(ZERO_HASH, 1, line, len, &info, reason, sizeof reason));
    assert_ok(sp_audit_check_line(NULL, 0, line, len, &info, reason, sizeof reason));
    assert_int_equal(info.seq, 1);
    assert_string_equal(info.hash, hash);
    assert_string_equal(info.prev, ZERO_HASH);
    assert_rc(sp_audit_check_line(NULL, 2, line, len, &info, reason, sizeof reason), SP_ERR_AUDIT_BROKEN);
    assert_non_null(strstr(reason, "sequence goes back"));
    assert_rc(sp_audit_check_line(hash, 1, line, len, &info, reason, sizeof reason), SP_ERR_AUDIT_BROKEN);
    assert_non_null(strstr(reason, "prev does not match"));
    /* seq 1 whose prev is not zero cannot start a chain */
    char line2[SP_AUDIT_MAX_LINE + 1], hash2[65];
    size_t len2 = 0;
    assert_ok(sp_audit_format_line(hash, 1, 0, "a.b", NULL, 0, line2, sizeof line2, &len2, hash2));
    assert_rc(sp_audit_check_line(NULL, 0, line2, len2, &info, reason, sizeof reason), SP_ERR_AUDIT_BROKEN);
    assert_ok(sp_audit_check_line(hash, 0, line2, len2, &info, reason, sizeof reason));
    /* each byte changed in turn: never accepted */
    for (size_t i = 0; i < len; i++) {
        char saved = line[i];
        line[i] = (char)(saved ^ 0x01);
        sp_error rc = sp_audit_check_line(ZERO_HASH, 1, line, len, &info, reason, sizeof reason);
        line[i] = saved;
        if (rc != SP_ERR_AUDIT_BROKEN) fail_msg("byte %zu flipped gave %s", i, sp_error_name(rc));
    }
    /* lines the scanner or the schema refuses, and the reason given */
#define HP "\"hash\":\"" ZERO_HASH "\",\"prev\":\"" ZERO_HASH "\""
#define TM "\"time\":\"2026-11-23T23:59:59Z\""
    const struct {
        const char *line, *reason;
    } bad[] = {
        {"[]", "not a JSON object"},
        {"{\"event\":\"a\"", "not valid JSON"},
        {"{\"event\":\"a\"," HP ",\"seq\":1,\"seq\":1," TM "}", "not valid JSON"}, /* duplicate */
        {"{\"event\":\"a\"," HP ",\"seq\":1," TM ",\"x\":true}", "a value of a kind the log never holds"},
        {"{\"event\":\"a\"," HP ",\"seq\":1," TM ",\"x\":\"\\n\"}", "a value of a kind the log never holds"},
        {"{\"event\":\"a\"," HP ",\"seq\":1.0," TM "}", "a value of a kind the log never holds"},
        {"{\"event\":\"a\"," HP ",\"seq\":01," TM "}", "not valid JSON"},
        {"{\"event\":\"a\"," HP ",\"seq\":1," TM ",\"x\":\"\\/\"}", "not in canonical form"},
        {"{\"seq\":1,\"event\":\"a\"," HP "," TM "}", "not in canonical form"}, /* unsorted */
        {"{\"event\":\"a\"," HP ",\"seq\":1}", "missing or malformed \"time\""},
        {"{\"event\":\"a\"," HP ",\"seq\":0," TM "}", "missing or malformed \"seq\""},
        {"{\"event\":\"A\"," HP ",\"seq\":1," TM "}", "missing or malformed \"event\""},
        {"{\"event\":\"a\"," HP ",\"seq\":1,\"time\":\"2026-13-23T23:59:59Z\"}", "missing or malformed \"time\""},
        {"{\"event\":\"a\",\"hash\":\"00\",\"prev\":\"" ZERO_HASH "\",\"seq\":1," TM "}", "malformed \"hash\""},
        {"{\"X\":\"v\",\"event\":\"a\"," HP ",\"seq\":1," TM "}", "malformed field name"},
        {"{\"a\":1,\"event\":\"a\"," HP ",\"seq\":1," TM "}", "malformed field value"},
        {"{\"a\":\"\xc3\",\"event\":\"a\"," HP ",\"seq\":1," TM "}", "malformed field value"},
    };
#undef HP
#undef TM
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_error rc = sp_audit_check_line(NULL, 0, bad[i].line, strlen(bad[i].line), &info, reason, sizeof reason);
        if (rc != SP_ERR_AUDIT_BROKEN) fail_msg("\"%s\" gave %s", bad[i].line, sp_error_name(rc));
        if (strstr(reason, bad[i].reason) == NULL) fail_msg("\"%s\": reason \"%s\"", bad[i].line, reason);
    }
    /* the right shape with a wrong hash */
    const char *wrong = "{\"event\":\"a\",\"hash\":\"" ZERO_HASH "\",\"prev\":\"" ZERO_HASH
                        "\",\"seq\":1,\"time\":\"2026-11-23T23:59:59Z\"}";
    assert_rc(sp_audit_check_line(NULL, 0, wrong, strlen(wrong), &info, reason, sizeof reason), SP_ERR_AUDIT_BROKEN);
    assert_string_equal(reason, "hash mismatch (edited)");
    /* reasons are cut, not overrun */
    char tiny[8];
    assert_rc(sp_audit_check_line(NULL, 0, wrong, strlen(wrong), &info, tiny, sizeof tiny), SP_ERR_AUDIT_BROKEN);
    assert_int_equal(strlen(tiny), 7);
    assert_rc(sp_audit_format_line(ZERO_HASH, 1, -1, "a.b", NULL, 0, line, sizeof line, &len, hash),
              SP_ERR_BAD_TIMESTAMP);
    assert_rc(sp_audit_format_line(ZERO_HASH, 1, 0, "a.b", NULL, 0, line, 10, &len, hash), SP_ERR_BUFFER_TOO_SMALL);
    assert_rc(sp_audit_format_line("00", 1, 0, "a.b", NULL, 0, line, sizeof line, &len, hash),
              SP_ERR_INVALID_ARGUMENT);
}

/* ---- failed writes ---- */

/* The descriptor this process holds on path (the audit handle's), found by
 * inode, so a test can swap what is behind it; -1 when there is none. */
static int fd_open_on(const char *path) {
    struct stat want;
    assert_int_equal(stat(path, &want), 0);
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int found = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int fd = (int)strtol(e->d_name, NULL, 10);
        struct stat st;
        if (fd == dirfd(d) || fstat(fd, &st) != 0) continue;
        if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) found = fd;
    }
    closedir(d);
    return found;
}

/* A write the kernel cuts short (here: the file size limit, as a full disk
 * would) and a slot that cannot be written (here: the handle's descriptor on
 * the head swapped for a read-only one, so the pwrite fails as on an I/O
 * error) both fail the record and leave the log exactly as it was: the
 * partial or unvouched line is truncated away, the head still names the
 * last line, the chain goes on afterwards. */
static void test_failed_writes_roll_back(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 1, 2);
    off_t before = sp_test_file_size(s->path);

    struct rlimit saved, tight;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    tight = saved;
    tight.rlim_cur = (rlim_t)before + 20; /* room for part of a line */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tight), 0);
    sp_audit_field f[] = {{"actor", "alice"}};
    sp_error rc = sp_audit_record(a, "admin.test", f, 1);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    assert_rc(rc, SP_ERR_IO);
    assert_int_equal(sp_test_file_size(s->path), before);
    expect_ok(s->path, 2);

    int head_fd = fd_open_on(s->head);
    assert_true(head_fd >= 0);
    int saved_fd = dup(head_fd), read_only = open(s->head, O_RDONLY);
    assert_true(saved_fd >= 0 && read_only >= 0);
    assert_int_equal(dup2(read_only, head_fd), head_fd);
    assert_rc(sp_audit_record(a, "admin.test", f, 1), SP_ERR_IO);
    assert_rc(sp_audit_record(a, "admin.test", f, 1), SP_ERR_IO);
    assert_int_equal(dup2(saved_fd, head_fd), head_fd);
    close(saved_fd);
    close(read_only);
    assert_int_equal(sp_test_file_size(s->path), before);
    assert_int_equal(parsed_head(s).seq, 2);
    expect_ok(s->path, 2);

    record_n(a, 3, 2);
    sp_audit_close(a);
    expect_ok(s->path, 4);
}

/* A slot write cut short after part of it reached the file (the file size
 * limit again, now falling inside slot B): the slot cannot be undone either,
 * so the record fails, its complete line stays (the slot could otherwise
 * name a line that is gone), the handle refuses further records, and what is
 * on disk is a sound log whose head is one line behind, which open repairs. */
static void test_failed_slot_write_wedges(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a)); /* record 1 goes to slot B, bytes 195..389 */
    struct rlimit saved, tight;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    tight = saved;
    tight.rlim_cur = 300; /* the line fits below it, slot B does not */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tight), 0);
    sp_audit_field f[] = {{"actor", "alice"}};
    sp_error rc = sp_audit_record(a, "admin.test", f, 1);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    assert_rc(rc, SP_ERR_IO);
    assert_rc(sp_audit_record(a, "admin.test", f, 1), SP_ERR_AUDIT_BROKEN);
    expect_ok(s->path, 1);
    sp_audit_head h = parsed_head(s);
    assert_true(h.valid);
    assert_int_equal(h.seq, 0); /* slot A; slot B is torn */
    sp_audit_close(a);
    assert_ok(sp_audit_open(s->path, &a));
    assert_int_equal(parsed_head(s).seq, 1);
    record_n(a, 2, 1);
    sp_audit_close(a);
    expect_ok(s->path, 2);
}

/* ---- allocation failures ---- */

/* Every allocation sp_audit_record makes, failed in turn: a clean error,
 * nothing written (the file keeps its exact size), and the log verifies
 * and keeps growing from where it was. */
static void test_record_allocation_failures(void **state) {
    scratch *s = *state;
    sp_audit *a = NULL;
    assert_ok(sp_audit_open(s->path, &a));
    record_n(a, 1, 3);
    uint64_t lines = 3;
    size_t n, failures = 0;
    for (n = 1; n < 10000; n++) {
        off_t before = sp_test_file_size(s->path);
        sp_audit_field f[] = {{"actor", "alice"}, {"i", "x"}, {"zone", "eu"}};
        uint64_t start = sp_test_alloc_count();
        sp_test_alloc_fail_at(n);
        sp_error rc = sp_audit_record(a, "admin.test", f, 3);
        sp_test_alloc_fail_at(0);
        bool reached = sp_test_alloc_count() - start >= n;
        if (rc == SP_OK) {
            lines++;
            assert_true(sp_test_file_size(s->path) > before);
        } else {
            if (rc != SP_ERR_NO_MEMORY && rc != SP_ERR_CRYPTO_BACKEND) {
                fail_msg("allocation %zu failed, record said %s", n, sp_error_name(rc));
            }
            assert_int_equal(sp_test_file_size(s->path), before);
            failures++;
        }
        expect_ok(s->path, lines);
        if (!reached) {
            assert_int_equal(rc, SP_OK);
            break;
        }
    }
    assert_true(n < 10000);
    /* A record allocates nothing at all (hashes on the stack), so there is
     * no allocation to fail: the walk above stays as the guard should one
     * ever come back, and this pins the property itself. */
    assert_int_equal(failures, 0);
    uint64_t before_count = sp_test_alloc_count();
    sp_audit_field g[] = {{"actor", "alice"}, {"i", "y"}, {"zone", "eu"}};
    assert_ok(sp_audit_record(a, "admin.test", g, 3));
    assert_int_equal(sp_test_alloc_count(), before_count);
    lines++;
    sp_audit_close(a);
    expect_ok(s->path, lines);
}

/* open and verify under the same walk: never a crash or a leak, and an
 * allocation failure is never reported as a broken log. */
static void test_open_verify_allocation_failures(void **state) {
    scratch *s = *state;
    make_log(s, 3);
    size_t n;
    for (n = 1; n < 10000; n++) {
        sp_audit *a = NULL;
        uint64_t start = sp_test_alloc_count();
        sp_test_alloc_fail_at(n);
        sp_error rc = sp_audit_open(s->path, &a);
        sp_test_alloc_fail_at(0);
        bool reached = sp_test_alloc_count() - start >= n;
        if (rc == SP_OK) {
            sp_audit_close(a);
        } else if (rc != SP_ERR_NO_MEMORY && rc != SP_ERR_CRYPTO_BACKEND) {
            fail_msg("allocation %zu failed, open said %s", n, sp_error_name(rc));
        }
        if (!reached) break;
    }
    assert_true(n < 10000);
    for (n = 1; n < 10000; n++) {
        sp_audit_report rep;
        uint64_t start = sp_test_alloc_count();
        sp_test_alloc_fail_at(n);
        sp_error rc = sp_audit_verify(s->path, &rep);
        sp_test_alloc_fail_at(0);
        bool reached = sp_test_alloc_count() - start >= n;
        if (rc != SP_OK && rc != SP_ERR_NO_MEMORY && rc != SP_ERR_CRYPTO_BACKEND) {
            fail_msg("allocation %zu failed, verify said %s (%s)", n, sp_error_name(rc), rep.reason);
        }
        if (!reached) break;
    }
    assert_true(n < 10000);
    expect_ok(s->path, 3);
}

#define SCRATCH_TEST(t) cmocka_unit_test_setup_teardown(t, scratch_setup, scratch_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        SCRATCH_TEST(test_append_and_verify),
        SCRATCH_TEST(test_only_given_fields),
        SCRATCH_TEST(test_delete_middle_line),
        SCRATCH_TEST(test_delete_first_line),
        SCRATCH_TEST(test_edit_value),
        SCRATCH_TEST(test_edit_last_line_refused_at_open),
        SCRATCH_TEST(test_edit_not_canonical),
        SCRATCH_TEST(test_swap_lines),
        SCRATCH_TEST(test_duplicate_line),
        SCRATCH_TEST(test_forged_line_breaks_next),
        SCRATCH_TEST(test_forged_last_line_vs_head),
        SCRATCH_TEST(test_truncate_last_line),
        SCRATCH_TEST(test_delete_head),
        SCRATCH_TEST(test_malformed_head),
        SCRATCH_TEST(test_cut_short_line),
        SCRATCH_TEST(test_overlong_line),
        SCRATCH_TEST(test_reopen_continues),
        SCRATCH_TEST(test_head_one_behind),
        SCRATCH_TEST(test_record_many),
        SCRATCH_TEST(test_head_batch_behind),
        SCRATCH_TEST(test_head_too_far_behind),
        SCRATCH_TEST(test_head_updated_in_place),
        SCRATCH_TEST(test_head_older_slot_torn),
        SCRATCH_TEST(test_head_crash_mid_slot_write),
        SCRATCH_TEST(test_head_newest_slot_damaged),
        SCRATCH_TEST(test_head_both_slots_corrupted),
        SCRATCH_TEST(test_head_malformed_slots),
        SCRATCH_TEST(test_head_slot_ahead_of_log),
        SCRATCH_TEST(test_legacy_head),
        SCRATCH_TEST(test_open_refusals),
        SCRATCH_TEST(test_verify_refusals),
        SCRATCH_TEST(test_concurrent_appends),
        SCRATCH_TEST(test_verify_while_recording),
        SCRATCH_TEST(test_invalid_arguments),
        SCRATCH_TEST(test_failed_writes_roll_back),
        SCRATCH_TEST(test_failed_slot_write_wedges),
        cmocka_unit_test(test_validators),
        cmocka_unit_test(test_check_line),
        SCRATCH_TEST(test_record_allocation_failures),
        SCRATCH_TEST(test_open_verify_allocation_failures),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
