/*
 * The key file (include/sealpost/keyfile.h): how keys get to the CLI and to
 * tests. A key file is a secret at rest, so besides parsing the tests hold it
 * to the rules that protect it: created 0600, refused when others can read
 * it or when it is a symlink (someone else's file in our place), rotated
 * with exactly one active key, replaced atomically so a failure leaves the
 * old file intact, and parsed strictly (a key of the wrong length or an
 * ambiguous file is an error, never a guess).
 *
 * Every test works in its own mkdtemp directory and removes it afterwards.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sp_test_util.h"

#define VER1 "3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d13"
#define VER2 "b2d84e07-61f3-4c95-a8e0-17c9d3f2a540"
#define VER3 "0e9a5c3b-f712-4d68-b4a1-c6e8207d95fb"
/* base64 of bytes 0..31 and of bytes 32..63 */
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

/* ---- scratch directory ---- */

typedef struct {
    char dir[256];
    char path[300]; /* dir/keys.json */
} scratch;

static int scratch_setup(void **state) {
    scratch *s = SP_TEST_FIXTURE_NEW(scratch, dir, "sp-keyfile");
    if (s == NULL) return -1;
    snprintf(s->path, sizeof s->path, "%s/keys.json", s->dir);
    *state = s;
    return 0;
}

static int scratch_teardown(void **state) {
    scratch *s = *state;
    return sp_test_fixture_free(s, s->dir);
}

/* Names in the directory other than the key file and its lock file: what a
 * failed write might leave behind. */
static size_t stray_files(const scratch *s) {
    DIR *d = opendir(s->dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (strcmp(e->d_name, "keys.json") == 0 || strcmp(e->d_name, "keys.json.lock") == 0) continue;
        n++;
    }
    closedir(d);
    return n;
}

static size_t count_active(const sp_keyfile *f) {
    size_t active = 0;
    for (size_t i = 0; i < sp_keyfile_count(f); i++) {
        sp_key_state st;
        assert_ok(sp_keyfile_entry(f, i, NULL, NULL, &st));
        assert_true(st == SP_KEY_STATE_ACTIVE || st == SP_KEY_STATE_DECRYPT_ONLY);
        active += st == SP_KEY_STATE_ACTIVE;
    }
    return active;
}

static const char *active_version(const sp_keyfile *f) {
    for (size_t i = 0; i < sp_keyfile_count(f); i++) {
        const char *v;
        sp_key_state st;
        assert_ok(sp_keyfile_entry(f, i, &v, NULL, &st));
        if (st == SP_KEY_STATE_ACTIVE) return v;
    }
    return NULL;
}

static void key_bytes(const sp_keyfile *f, const char *version, uint8_t out[SP_KEY_BYTES]) {
    for (size_t i = 0; i < sp_keyfile_count(f); i++) {
        const char *v;
        const sp_key *k;
        assert_ok(sp_keyfile_entry(f, i, &v, &k, NULL));
        if (strcmp(v, version) == 0) {
            assert_ok(sp_key_export(k, out));
            return;
        }
    }
    fail_msg("no version %s", version);
}

/* ---- generate ---- */

static void test_generate_creates_and_rotates(void **state) {
    scratch *s = *state;
    char v1[37], v2[37], v3[37];
    memset(v1, 'x', sizeof v1);
    assert_ok(sp_keyfile_generate(s->path, v1));
    assert_true(sp_uuid_is_valid(v1, strlen(v1)));
    assert_int_equal(sp_test_file_mode(s->path), 0600);

    sp_keyfile *f = NULL;
    assert_ok(sp_keyfile_load(s->path, &f));
    assert_int_equal(sp_keyfile_count(f), 1);
    assert_int_equal(count_active(f), 1);
    assert_string_equal(active_version(f), v1);
    uint8_t k1[SP_KEY_BYTES], again[SP_KEY_BYTES];
    key_bytes(f, v1, k1);
    sp_keyfile_free(f);

    /* a second call adds a version; the old active becomes decrypt-only and
     * keeps its key */
    assert_ok(sp_keyfile_generate(s->path, v2));
    assert_string_not_equal(v1, v2);
    assert_int_equal(sp_test_file_mode(s->path), 0600);
    assert_ok(sp_keyfile_load(s->path, &f));
    assert_int_equal(sp_keyfile_count(f), 2);
    assert_int_equal(count_active(f), 1);
    assert_string_equal(active_version(f), v2);
    key_bytes(f, v1, again);
    assert_memory_equal(k1, again, SP_KEY_BYTES);
    uint8_t k2[SP_KEY_BYTES];
    key_bytes(f, v2, k2);
    assert_memory_not_equal(k1, k2, SP_KEY_BYTES);
    for (size_t i = 0; i < 2; i++) {
        const char *v;
        sp_key_state st;
        assert_ok(sp_keyfile_entry(f, i, &v, NULL, &st));
        assert_int_equal(st, strcmp(v, v2) == 0 ? SP_KEY_STATE_ACTIVE : SP_KEY_STATE_DECRYPT_ONLY);
    }
    sp_keyfile_free(f);

    assert_ok(sp_keyfile_generate(s->path, v3));
    assert_ok(sp_keyfile_load(s->path, &f));
    assert_int_equal(sp_keyfile_count(f), 3);
    assert_int_equal(count_active(f), 1);
    assert_string_equal(active_version(f), v3);
    key_bytes(f, v1, again);
    assert_memory_equal(k1, again, SP_KEY_BYTES);
    key_bytes(f, v2, again);
    assert_memory_equal(k2, again, SP_KEY_BYTES);
    sp_keyfile_free(f);
    assert_int_equal(stray_files(s), 0);
}

/* A process's own key: the file made on first use, the same key derived
 * from it every time, another for another label, a new one after the
 * file's key is rotated, and none from a file without an active key. */
static void test_derive_active(void **state) {
    scratch *s = *state;
    sp_key *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    uint8_t ka[SP_KEY_BYTES], kb[SP_KEY_BYTES], kc[SP_KEY_BYTES], kd[SP_KEY_BYTES];
    assert_ok(sp_keyfile_derive_active(s->path, "salt", "state v1", &a));
    assert_int_equal(sp_test_file_mode(s->path), 0600);
    sp_keyfile *f = NULL;
    assert_ok(sp_keyfile_load(s->path, &f));
    assert_int_equal(sp_keyfile_count(f), 1);
    uint8_t raw[SP_KEY_BYTES];
    key_bytes(f, active_version(f), raw);
    sp_keyfile_free(f);
    assert_ok(sp_keyfile_derive_active(s->path, "salt", "state v1", &b));
    assert_ok(sp_keyfile_derive_active(s->path, "salt", "pepper v1", &c));
    assert_ok(sp_key_export(a, ka));
    assert_ok(sp_key_export(b, kb));
    assert_ok(sp_key_export(c, kc));
    assert_memory_equal(ka, kb, SP_KEY_BYTES);      /* the file is reused, not replaced */
    assert_memory_not_equal(ka, kc, SP_KEY_BYTES);  /* info separates uses */
    assert_memory_not_equal(ka, raw, SP_KEY_BYTES); /* derived, never the stored key itself */
    char v[37];
    assert_ok(sp_keyfile_generate(s->path, v));
    assert_ok(sp_keyfile_derive_active(s->path, "salt", "state v1", &d));
    assert_ok(sp_key_export(d, kd));
    assert_memory_not_equal(ka, kd, SP_KEY_BYTES);
    sp_key_free(a);
    sp_key_free(b);
    sp_key_free(c);
    sp_key_free(d);

    sp_key *none = (sp_key *)&none;
    assert_rc(sp_keyfile_derive_active(NULL, "salt", "info", &none), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyfile_derive_active(s->path, NULL, "info", &none), SP_ERR_INVALID_ARGUMENT);
    /* a file whose keys are all decrypt-only: refused, nothing derived, the file left as it is */
    char path[600];
    snprintf(path, sizeof path, "%s/no-active.json", s->dir);
    static const char doc[] = "{\"format\": \"sealpost-keyfile\", \"version\": 1, \"keys\": [{\"version\": \"" VER1
                              "\", \"key\": \"" KEY_A "\", \"state\": \"decrypt-only\", \"created\": 1700000000}]}";
    sp_test_write_file(path, doc, sizeof doc - 1, 0600);
    assert_rc(sp_keyfile_load(path, &f), SP_ERR_BAD_KEYFILE); /* a file needs an active key */
    none = (sp_key *)&none;
    sp_error rc = sp_keyfile_derive_active(path, "salt", "info", &none);
    assert_true(rc == SP_ERR_BAD_KEYFILE);
    assert_null(none);
    size_t len = 0;
    char *after = sp_test_read_file(path, &len);
    assert_int_equal(len, sizeof doc - 1);
    assert_memory_equal(after, doc, len);
    free(after);
}

/* The keys of a generated file work with the wire layer: what the CLI does. */
static void test_generated_keys_seal_and_open(void **state) {
    scratch *s = *state;
    char v1[37], v2[37];
    assert_ok(sp_keyfile_generate(s->path, v1));
    assert_ok(sp_keyfile_generate(s->path, v2));
    sp_keyfile *f = NULL;
    assert_ok(sp_keyfile_load(s->path, &f));
    sp_wire *w = NULL;
    assert_ok(sp_wire_new(&w));
    for (size_t i = 0; i < sp_keyfile_count(f); i++) {
        const char *v;
        const sp_key *k;
        sp_key_state st;
        assert_ok(sp_keyfile_entry(f, i, &v, &k, &st));
        assert_ok(sp_wire_add_key(w, v, k, st == SP_KEY_STATE_ACTIVE));
    }
    sp_keyfile_free(f);
    assert_string_equal(sp_wire_active_version(w), v2);
    uint8_t body[512], out[64];
    sp_sealed sealed;
    sp_seal_params p = {.key_version = v1};
    assert_ok(sp_seal(w, &p, (const uint8_t *)"rotated", 7, body, sizeof body, &sealed));
    size_t out_len = 0;
    assert_ok(sp_open(w, sealed.headers, sealed.n_headers, body, sealed.body_len, 0, out, sizeof out, &out_len, NULL));
    assert_int_equal(out_len, 7);
    assert_memory_equal(out, "rotated", 7);
    sp_wire_free(w);
}

static void test_generate_refuses_insecure_file(void **state) {
    scratch *s = *state;
    char v[37];
    assert_ok(sp_keyfile_generate(s->path, v));
    assert_int_equal(chmod(s->path, 0644), 0);
    struct stat before, after;
    assert_int_equal(stat(s->path, &before), 0);
    char v2[37];
    assert_rc(sp_keyfile_generate(s->path, v2), SP_ERR_INSECURE_PERMISSIONS);
    assert_int_equal(stat(s->path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino); /* not replaced */
    assert_int_equal(before.st_size, after.st_size);
    /* a directory that does not exist */
    char missing[400];
    snprintf(missing, sizeof missing, "%s/no/such/dir/keys.json", s->dir);
    assert_rc(sp_keyfile_generate(missing, v2), SP_ERR_IO);
    assert_rc(sp_keyfile_generate(NULL, v2), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyfile_generate(s->path, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* ---- load ---- */

static const char valid_file[] = "{\n"
                                 "  \"format\": \"sealpost-keyfile\",\n"
                                 "  \"version\": 1,\n"
                                 "  \"keys\": [\n"
                                 "    {\"version\": \"" VER1 "\", \"key\": \"" KEY_A "\",\n"
                                 "     \"state\": \"decrypt-only\", \"created\": 1700000000},\n"
                                 "    {\"version\": \"" VER2 "\", \"key\": \"" KEY_B "\",\n"
                                 "     \"state\": \"active\", \"created\": 1714000000}\n"
                                 "  ]\n"
                                 "}\n";

static void test_load_permissions(void **state) {
    scratch *s = *state;
    sp_keyfile *f = NULL;
    static const mode_t refused[] = {0644, 0640, 0604, 0660, 0606, 0666, 0610, 0601, 0700 | 0020};
    for (size_t i = 0; i < SP_ARRAY_LEN(refused); i++) {
        sp_test_write_file(s->path, valid_file, strlen(valid_file), refused[i]);
        f = (sp_keyfile *)&f; /* must not be touched on failure */
        sp_error rc = sp_keyfile_load(s->path, &f);
        if (rc != SP_ERR_INSECURE_PERMISSIONS) fail_msg("mode %04o: %s", (unsigned)refused[i], sp_error_name(rc));
        assert_ptr_equal(f, (sp_keyfile *)&f);
    }
    static const mode_t allowed[] = {0600, 0400, 0700};
    for (size_t i = 0; i < SP_ARRAY_LEN(allowed); i++) {
        sp_test_write_file(s->path, valid_file, strlen(valid_file), allowed[i]);
        f = NULL;
        assert_ok(sp_keyfile_load(s->path, &f));
        assert_int_equal(sp_keyfile_count(f), 2);
        sp_keyfile_free(f);
    }
    (void)chmod(s->path, 0600);
}

static void test_load_refuses_symlink_and_others(void **state) {
    scratch *s = *state;
    char target[400], link_path[400];
    snprintf(target, sizeof target, "%s/real.json", s->dir);
    snprintf(link_path, sizeof link_path, "%s/link.json", s->dir);
    sp_test_write_file(target, valid_file, strlen(valid_file), 0600);
    sp_keyfile *f = NULL;
    assert_ok(sp_keyfile_load(target, &f));
    sp_keyfile_free(f);
    f = NULL;
    assert_int_equal(symlink(target, link_path), 0);
    assert_rc(sp_keyfile_load(link_path, &f), SP_ERR_IO);
    assert_null(f);
    /* nor may generate write through one */
    char v[37];
    assert_rc(sp_keyfile_generate(link_path, v), SP_ERR_IO);
    struct stat st;
    assert_int_equal(lstat(link_path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    /* a directory, a missing file */
    assert_rc(sp_keyfile_load(s->dir, &f), SP_ERR_IO);
    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing.json", s->dir);
    assert_rc(sp_keyfile_load(missing, &f), SP_ERR_NOT_FOUND); /* the CLI tells "no such file" apart */
    assert_rc(sp_keyfile_load(NULL, &f), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyfile_load(target, NULL), SP_ERR_INVALID_ARGUMENT);
    /* an oversized file is refused before it is read */
    size_t big_len = SP_KEYFILE_MAX_BYTES + 1;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, ' ', big_len);
    sp_test_write_file(s->path, big, big_len, 0600);
    free(big);
    assert_rc(sp_keyfile_load(s->path, &f), SP_ERR_TOO_LARGE);
}

/* ---- parse ---- */

static sp_error parse(const char *text, sp_keyfile **out) {
    return sp_keyfile_parse((const uint8_t *)text, strlen(text), out);
}

static void test_parse_valid(void **state) {
    (void)state;
    sp_keyfile *f = NULL;
    assert_ok(parse(valid_file, &f));
    assert_int_equal(sp_keyfile_count(f), 2);
    const char *v;
    const sp_key *k;
    sp_key_state st;
    uint8_t raw[SP_KEY_BYTES];
    assert_ok(sp_keyfile_entry(f, 0, &v, &k, &st));
    assert_string_equal(v, VER1);
    assert_int_equal(st, SP_KEY_STATE_DECRYPT_ONLY);
    assert_ok(sp_key_export(k, raw));
    for (size_t i = 0; i < SP_KEY_BYTES; i++) assert_int_equal(raw[i], i);
    assert_ok(sp_keyfile_entry(f, 1, &v, &k, &st));
    assert_string_equal(v, VER2);
    assert_int_equal(st, SP_KEY_STATE_ACTIVE);
    assert_ok(sp_key_export(k, raw));
    for (size_t i = 0; i < SP_KEY_BYTES; i++) assert_int_equal(raw[i], 32 + i);
    /* NULL outputs are allowed; an index past the end is not */
    assert_ok(sp_keyfile_entry(f, 1, NULL, NULL, NULL));
    assert_rc(sp_keyfile_entry(f, 2, &v, &k, &st), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyfile_entry(NULL, 0, &v, &k, &st), SP_ERR_INVALID_ARGUMENT);
    sp_keyfile_free(f);
    assert_int_equal(sp_keyfile_count(NULL), 0);
    sp_keyfile_free(NULL);

    /* the smallest file: one key, no "created"; members in any order, extra
     * members ignored */
    static const char minimal[] = "{\"keys\":[{\"state\":\"active\",\"key\":\"" KEY_A "\",\"version\":\"" VER3
                                  "\",\"note\":\"ci\"}],\"version\":1,\"format\":\"sealpost-keyfile\",\"x\":[]}";
    assert_ok(parse(minimal, &f));
    assert_int_equal(sp_keyfile_count(f), 1);
    assert_ok(sp_keyfile_entry(f, 0, &v, NULL, &st));
    assert_string_equal(v, VER3);
    assert_int_equal(st, SP_KEY_STATE_ACTIVE);
    sp_keyfile_free(f);
}

/* A file wrapped around a keys array, for the cases below. */
static char *file_with_keys(const char *keys) {
    size_t cap = strlen(keys) + 128;
    char *text = malloc(cap);
    assert_non_null(text);
    snprintf(text, cap, "{\"format\":\"sealpost-keyfile\",\"version\":1,\"keys\":[%s]}", keys);
    return text;
}

#define ENTRY(ver, key, state) "{\"version\":\"" ver "\",\"key\":\"" key "\",\"state\":\"" state "\"}"

static void test_parse_rejects(void **state) {
    (void)state;
    static const struct {
        const char *what, *text;
    } whole[] = {
        {"not JSON", "format=sealpost-keyfile"},
        {"empty", ""},
        {"truncated", "{\"format\":\"sealpost-keyfile\",\"version\":1,\"keys\":["},
        {"array", "[\"sealpost-keyfile\",1,[]]"},
        {"wrong format", "{\"format\":\"sealpost-keys\",\"version\":1,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"format case", "{\"format\":\"Sealpost-Keyfile\",\"version\":1,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"no format", "{\"version\":1,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"format not string", "{\"format\":1,\"version\":1,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"version 2", "{\"format\":\"sealpost-keyfile\",\"version\":2,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"version 0", "{\"format\":\"sealpost-keyfile\",\"version\":0,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"version string",
         "{\"format\":\"sealpost-keyfile\",\"version\":\"1\",\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"version real", "{\"format\":\"sealpost-keyfile\",\"version\":1.0,\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"no version", "{\"format\":\"sealpost-keyfile\",\"keys\":[" ENTRY(VER1, KEY_A, "active") "]}"},
        {"no keys", "{\"format\":\"sealpost-keyfile\",\"version\":1}"},
        {"keys object", "{\"format\":\"sealpost-keyfile\",\"version\":1,\"keys\":" ENTRY(VER1, KEY_A, "active") "}"},
        {"duplicate member",
         "{\"format\":\"sealpost-keyfile\",\"version\":1,\"keys\":[" ENTRY(VER1, KEY_A, "active") "],\"keys\":[" ENTRY(
             VER2, KEY_B, "active") "]}"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(whole); i++) {
        sp_keyfile *f = NULL;
        sp_error rc = parse(whole[i].text, &f);
        if (rc != SP_ERR_BAD_KEYFILE) fail_msg("%s: %s", whole[i].what, sp_error_name(rc));
        assert_null(f);
    }

    static const struct {
        const char *what, *keys;
    } entries[] = {
        {"no keys at all", ""},
        {"zero active", ENTRY(VER1, KEY_A, "decrypt-only") "," ENTRY(VER2, KEY_B, "decrypt-only")},
        {"two active", ENTRY(VER1, KEY_A, "active") "," ENTRY(VER2, KEY_B, "active")},
        {"duplicate version", ENTRY(VER1, KEY_A, "active") "," ENTRY(VER1, KEY_B, "decrypt-only")},
        {"duplicate version and key", ENTRY(VER1, KEY_A, "active") "," ENTRY(VER1, KEY_A, "decrypt-only")},
        {"uppercase uuid", ENTRY("3F6C1A52-8D0E-4B7A-9C21-5E4F0A7B6D13", KEY_A, "active")},
        {"short uuid", ENTRY("3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d1", KEY_A, "active")},
        {"uuid without dashes", ENTRY("3f6c1a528d0e4b7a9c215e4f0a7b6d13", KEY_A, "active")},
        {"uuid with braces", ENTRY("{3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d13}", KEY_A, "active")},
        {"empty version", ENTRY("", KEY_A, "active")},
        {"key base64url", ENTRY(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "active")},
        {"key with space", ENTRY(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMU FRYXGBkaGxwdHh8=", "active")},
        {"key non-canonical", ENTRY(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=", "active")},
        {"key not base64", ENTRY(VER1, "this is not a key at all, not even close!!!!", "active")},
        {"state capitalised", ENTRY(VER1, KEY_A, "Active")},
        {"state unknown", ENTRY(VER1, KEY_A, "retired")},
        {"state empty", ENTRY(VER1, KEY_A, "")},
        {"no state", "{\"version\":\"" VER1 "\",\"key\":\"" KEY_A "\"}"},
        {"no key", "{\"version\":\"" VER1 "\",\"state\":\"active\"}"},
        {"no version member", "{\"key\":\"" KEY_A "\",\"state\":\"active\"}"},
        {"key not string", "{\"version\":\"" VER1 "\",\"key\":32,\"state\":\"active\"}"},
        {"created string", "{\"version\":\"" VER1 "\",\"key\":\"" KEY_A "\",\"state\":\"active\",\"created\":\"now\"}"},
        {"created real", "{\"version\":\"" VER1 "\",\"key\":\"" KEY_A "\",\"state\":\"active\",\"created\":1.5}"},
        {"entry not object", "\"" VER1 "\""},
        {"entry duplicate member",
         "{\"version\":\"" VER1 "\",\"key\":\"" KEY_B "\",\"key\":\"" KEY_A "\",\"state\":\"active\"}"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(entries); i++) {
        char *text = file_with_keys(entries[i].keys);
        sp_keyfile *f = NULL;
        sp_error rc = parse(text, &f);
        if (rc != SP_ERR_BAD_KEYFILE) fail_msg("%s: %s", entries[i].what, sp_error_name(rc));
        assert_null(f);
        free(text);
    }
}

/* Keys of the wrong size, whatever their encoding: refused as such. */
static void test_parse_key_length(void **state) {
    (void)state;
    static const size_t sizes[] = {0, 1, 16, 24, 31, 33, 34, 35, 36, 48, 64, 100};
    uint8_t raw[100];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)i;
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
        char b64[200], entry[400];
        size_t n = 0;
        assert_ok(sp_b64_encode(raw, sizes[i], b64, sizeof b64, &n, false));
        snprintf(entry, sizeof entry, "{\"version\":\"" VER1 "\",\"key\":\"%s\",\"state\":\"active\"}", b64);
        char *text = file_with_keys(entry);
        sp_keyfile *f = NULL;
        sp_error rc = parse(text, &f);
        if (rc != SP_ERR_BAD_KEY_LENGTH && rc != SP_ERR_BAD_KEYFILE)
            fail_msg("a %zu-byte key gave %s", sizes[i], sp_error_name(rc));
        assert_null(f);
        free(text);
    }
}

static void test_parse_limits(void **state) {
    (void)state;
    sp_keyfile *f = NULL;
    /* more bytes than a key file may have, even if they are valid JSON */
    size_t len = SP_KEYFILE_MAX_BYTES + 1;
    char *big = malloc(len + 1);
    assert_non_null(big);
    size_t head = (size_t)snprintf(big, len + 1, "{\"format\":\"sealpost-keyfile\",\"version\":1,\"keys\":[" ENTRY(
                                                     VER1, KEY_A, "active") "],\"pad\":\"");
    memset(big + head, 'p', len - head - 2);
    memcpy(big + len - 2, "\"}", 2);
    big[len] = 0;
    assert_rc(sp_keyfile_parse((const uint8_t *)big, len, &f), SP_ERR_TOO_LARGE);
    /* one byte less is fine */
    memcpy(big + len - 3, "\"}", 2);
    assert_ok(sp_keyfile_parse((const uint8_t *)big, len - 1, &f));
    sp_keyfile_free(f);
    free(big);

    /* SP_KEYFILE_MAX_KEYS keys are accepted, one more is not */
    const size_t entry_len = 160; /* one entry below, with its comma */
    char *keys = malloc(entry_len * (SP_KEYFILE_MAX_KEYS + 1) + 1);
    assert_non_null(keys);
    for (size_t count = SP_KEYFILE_MAX_KEYS; count <= SP_KEYFILE_MAX_KEYS + 1; count++) {
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            off += (size_t)snprintf(keys + off, entry_len + 1, "%s{\"version\":\"00000000-0000-4000-8000-%012zx\","
                                                             "\"key\":\"" KEY_A "\",\"state\":\"%s\"}",
                                    i ? "," : "", i, i == 0 ? "active" : "decrypt-only");
        }
        char *text = file_with_keys(keys);
        f = NULL;
        sp_error rc = parse(text, &f);
        if (count <= SP_KEYFILE_MAX_KEYS) {
            assert_int_equal(rc, SP_OK);
            assert_int_equal(sp_keyfile_count(f), count);
            sp_keyfile_free(f);
        } else {
            assert_int_equal(rc, SP_ERR_BAD_KEYFILE);
        }
        free(text);
    }
    free(keys);
    assert_rc(sp_keyfile_parse(NULL, 0, &f), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyfile_parse((const uint8_t *)"{}", 2, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* ---- allocation failures ---- */

/* parse(valid_file) with its n-th allocation failing; *reached says
 * whether it got that far. */
static sp_error parse_failing(uint64_t n, sp_keyfile **f, bool *reached) {
    *f = NULL;
    sp_test_fault fault = sp_test_fault_arm(n);
    sp_error rc = parse(valid_file, f);
    *reached = sp_test_fault_disarm(fault);
    return rc;
}

/* Every allocation sp_keyfile_parse makes, failed in turn: an error each
 * time, never a half-built key file, nothing leaked (ASan). */
static void test_parse_allocation_failures(void **state) {
    (void)state;
    size_t failures = 0, n;
    for (n = 1; n < 10000; n++) {
        sp_keyfile *f;
        bool reached;
        sp_error rc = parse_failing(n, &f, &reached);
        if (rc == SP_OK) {
            /* a success must be the whole file, intact */
            assert_int_equal(sp_keyfile_count(f), 2);
            uint8_t raw[SP_KEY_BYTES];
            key_bytes(f, VER2, raw);
            for (size_t i = 0; i < SP_KEY_BYTES; i++) assert_int_equal(raw[i], 32 + i);
            sp_keyfile_free(f);
        } else {
            assert_null(f);
            failures++;
        }
        if (!reached) {
            assert_int_equal(rc, SP_OK);
            break;
        }
    }
    assert_true(n < 10000);
    assert_true(failures > 0);
}

/* The same walk, asking what a caller is told: an allocation failure must
 * not be reported as a malformed file (the CLI would tell the user to fix a
 * file that is fine). */
static void test_parse_allocation_failure_is_not_bad_file(void **state) {
    (void)state;
    size_t wrong = 0, n;
    for (n = 1; n < 10000; n++) {
        sp_keyfile *f;
        bool reached;
        sp_error rc = parse_failing(n, &f, &reached);
        if (rc == SP_OK) sp_keyfile_free(f);
        if (rc != SP_OK && rc != SP_ERR_NO_MEMORY && rc != SP_ERR_SECURE_MEMORY) {
            print_error("allocation %zu failed, sp_keyfile_parse said %s\n", n, sp_error_name(rc));
            wrong++;
        }
        if (!reached) break;
    }
    if (wrong) fail_msg("%zu allocation failures reported as a bad key file", wrong);
}

/* generate under allocation failure: it fails or succeeds, and either way
 * the file on disk is complete (the old one or the new one) and no
 * temporary file is left behind. */
static void test_generate_allocation_failures(void **state) {
    scratch *s = *state;
    char v[37];
    assert_ok(sp_keyfile_generate(s->path, v));
    size_t keys = 1, n, failures = 0;
    for (n = 1; n < 10000; n++) {
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_keyfile_generate(s->path, v);
        bool reached = sp_test_fault_disarm(fault);
        if (rc == SP_OK) keys++;
        else failures++;
        sp_keyfile *f = NULL;
        assert_ok(sp_keyfile_load(s->path, &f));
        assert_int_equal(sp_keyfile_count(f), keys);
        assert_int_equal(count_active(f), 1);
        sp_keyfile_free(f);
        assert_int_equal(sp_test_file_mode(s->path), 0600);
        assert_int_equal(stray_files(s), 0);
        if (!reached) break;
    }
    assert_true(n < 10000);
    assert_true(failures > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_creates_and_rotates, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_derive_active, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_generated_keys_seal_and_open, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_generate_refuses_insecure_file, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_load_permissions, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_symlink_and_others, scratch_setup, scratch_teardown),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_key_length),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_parse_allocation_failures),
        cmocka_unit_test(test_parse_allocation_failure_is_not_bad_file),
        cmocka_unit_test_setup_teardown(test_generate_allocation_failures, scratch_setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
