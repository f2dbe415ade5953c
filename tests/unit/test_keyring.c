/*
 * The provider keyring (include/sealpost/keyring.h) over a local KMS.
 *
 * The keyring decides which key seals and which keys still open provider
 * traffic, and it is shared by several processes through one file, so the
 * tests hold it to:
 *  - the life cycle, forward only (active -> decrypt-only -> retired ->
 *    destroyed), with exactly one active key per (tenant, channel) at every
 *    moment, channels independent of each other;
 *  - what a rotation is for: a message sealed before it still opens after
 *    it (overlap), and stops opening once its version is retired or falls
 *    below the channel's minimum version;
 *  - the scheduled part (maintain) with synthetic clocks, counting exactly;
 *  - the file: private, holding only wrapped keys (no spelling of any key's
 *    bytes appears in it), destroyed keys' blobs really gone, and changes by
 *    two handles or two processes never lost;
 *  - master-key rotation (rewrap): every key moves to the new master key
 *    with its bytes unchanged, and a run killed between batches resumes
 *    doing only what was left;
 *  - every allocation failure leaves the file parseable with exactly one
 *    active key per channel, and leaks nothing (LSan, and the secure-heap
 *    byte count for keys).
 *
 * Every test works in its own mkdtemp directory and removes it afterwards.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "sp_test_util.h"

#include "kms/sp_kms.h"

#define UNKNOWN_VERSION "0e9a5c3b-f712-4d68-b4a1-c6e8207d95fb"
#define T0 ((int64_t)1700000000)

/* ---- fixture: a scratch directory, master keys A and B, a keyring ---- */

typedef struct {
    char dir[256];
    char path[300]; /* dir/keyring.json */
    char config_a[400], config_b[400];
    sp_kms *a, *b;
    sp_keyring *kr; /* opened with a */
} fixture;

static int fixture_teardown(void **state);

static int fixture_setup(void **state) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-keyring");
    if (f == NULL) return -1;
    snprintf(f->path, sizeof f->path, "%s/keyring.json", f->dir);
    snprintf(f->config_a, sizeof f->config_a, "local:path=%s/master-a.key;create=1", f->dir);
    snprintf(f->config_b, sizeof f->config_b, "local:path=%s/master-b.key;create=1", f->dir);
    *state = f;
    if (sp_kms_open(f->config_a, &f->a) != SP_OK || sp_kms_open(f->config_b, &f->b) != SP_OK ||
        sp_keyring_open(f->path, f->a, &f->kr) != SP_OK) {
        (void)fixture_teardown(state);
        return -1;
    }
    return 0;
}

static int fixture_teardown(void **state) {
    fixture *f = *state;
    sp_keyring_close(f->kr);
    sp_kms_close(f->a);
    sp_kms_close(f->b);
    return sp_test_fixture_free(f, f->dir);
}

/* ---- helpers ---- */

static size_t secure_used(void) { return CRYPTO_secure_used(); }

static json_t *load_json(const char *path) {
    json_t *root = sp_test_load_json(path, JSON_REJECT_DUPLICATES);
    assert_true(json_is_object(root));
    assert_true(json_is_array(json_object_get(root, "keys")));
    return root;
}

/* root as compact JSON in a malloc'd string: json_dumps' own buffer would
 * come from the library's prefixed allocator and cannot go to free(). */
static char *dump_json(const json_t *root) {
    size_t n = json_dumpb(root, NULL, 0, 0);
    assert_true(n > 0);
    char *text = malloc(n + 1);
    assert_non_null(text);
    assert_int_equal(json_dumpb(root, text, n, 0), n);
    text[n] = 0;
    return text;
}

/* The file's entry for a version, or NULL. Borrowed from root. */
static json_t *json_entry(json_t *root, const char *version) {
    json_t *keys = json_object_get(root, "keys");
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *e = json_array_get(keys, i);
        if (strcmp(json_string_value(json_object_get(e, "version")), version) == 0) return e;
    }
    return NULL;
}

static sp_keyring_entry entry(const sp_keyring *kr, const char *tenant, const char *channel, const char *version) {
    sp_keyring_entry e;
    assert_ok(sp_keyring_find(kr, tenant, channel, version, &e));
    return e;
}

static sp_keyring_state state_of(const sp_keyring *kr, const char *tenant, const char *channel, const char *version) {
    return entry(kr, tenant, channel, version).state;
}

/* Exactly one active entry for every (tenant, channel) the keyring knows,
 * and the count of entries. */
static size_t assert_one_active_each(const sp_keyring *kr) {
    size_t n = sp_keyring_count(kr);
    for (size_t i = 0; i < n; i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(kr, i, &e));
        size_t active = 0;
        for (size_t j = 0; j < n; j++) {
            sp_keyring_entry o;
            assert_ok(sp_keyring_get(kr, j, &o));
            if (strcmp(o.tenant, e.tenant) == 0 && strcmp(o.channel, e.channel) == 0 && o.state == SP_KEYRING_ACTIVE)
                active++;
        }
        if (active != 1) fail_msg("%s/%s has %zu active keys", e.tenant, e.channel, active);
    }
    return n;
}

static void rotate(sp_keyring *kr, const char *tenant, const char *channel, int64_t now, char *version) {
    char v[SP_KEY_VERSION_CHARS + 1];
    assert_ok(sp_keyring_rotate(kr, tenant, channel, now, v));
    assert_true(sp_uuid_is_valid(v, strlen(v)));
    if (version != NULL) memcpy(version, v, sizeof v);
}

static void key_bytes(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                      uint8_t out[SP_KEY_BYTES]) {
    sp_key *k = NULL;
    assert_ok(sp_keyring_unwrap(kr, tenant, channel, version, &k));
    assert_ok(sp_key_export(k, out));
    sp_key_free(k);
}

/* A sealed message, kept where it was sealed: its headers point into it. */
typedef struct {
    sp_sealed sealed;
    uint8_t body[512];
} message;

static void seal(sp_wire *w, const char *version, message *m) {
    sp_seal_params p;
    memset(&p, 0, sizeof p);
    p.key_version = version;
    static const char text[] = "{\"to\":\"+14155550100\",\"body\":\"hello\"}";
    assert_ok(sp_seal(w, &p, (const uint8_t *)text, sizeof text - 1, m->body, sizeof m->body, &m->sealed));
}

static sp_error open_message(sp_wire *w, const message *m, char *version_out) {
    uint8_t out[512];
    size_t out_len = 0;
    sp_opened info;
    sp_error rc = sp_open(w, m->sealed.headers, m->sealed.n_headers, m->body, m->sealed.body_len, 0, out, sizeof out,
                          &out_len, &info);
    if (rc == SP_OK && version_out != NULL) memcpy(version_out, info.key_version, sizeof info.key_version);
    return rc;
}

static sp_wire *fresh_wire(sp_keyring *kr, const char *tenant, const char *channel) {
    sp_wire *w = NULL;
    assert_ok(sp_wire_new(&w));
    assert_ok(sp_keyring_load_wire(kr, tenant, channel, w));
    return w;
}

/* ---- life cycle ---- */

static void test_state_machine(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    char v1[37], v2[37], v3[37];
    assert_int_equal(sp_keyring_count(kr), 0);
    /* the file appears with the first change, private */
    assert_int_equal(access(f->path, F_OK), -1);

    rotate(kr, "acme", "sms", T0, v1);
    assert_int_equal(sp_test_file_mode(f->path), 0600);
    sp_keyring_entry e = entry(kr, "acme", "sms", v1);
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);
    assert_string_equal(e.tenant, "acme");
    assert_string_equal(e.channel, "sms");
    assert_string_equal(e.version, v1);
    assert_int_equal(e.created, T0);
    assert_int_equal(e.deactivated, 0);
    assert_int_equal(e.retired, 0);
    assert_int_equal(e.destroyed, 0);
    assert_string_equal(e.master_key, sp_kms_key_id(f->a));
    assert_int_equal(assert_one_active_each(kr), 1);

    /* a second rotation: the previous key opens only */
    rotate(kr, "acme", "sms", T0 + 10, v2);
    assert_string_not_equal(v1, v2);
    e = entry(kr, "acme", "sms", v1);
    assert_int_equal(e.state, SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(e.deactivated, T0 + 10);
    assert_int_equal(state_of(kr, "acme", "sms", v2), SP_KEYRING_ACTIVE);
    assert_int_equal(assert_one_active_each(kr), 2);

    /* the active key cannot be retired or destroyed, a decrypt-only one not destroyed */
    assert_rc(sp_keyring_retire(kr, "acme", "sms", v2, T0 + 20), SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_keyring_destroy(kr, "acme", "sms", v2, T0 + 20), SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_keyring_destroy(kr, "acme", "sms", v1, T0 + 20), SP_ERR_ILLEGAL_TRANSITION);
    assert_int_equal(state_of(kr, "acme", "sms", v1), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "acme", "sms", v2), SP_KEYRING_ACTIVE);

    /* decrypt-only -> retired */
    assert_ok(sp_keyring_retire(kr, "acme", "sms", v1, T0 + 30));
    e = entry(kr, "acme", "sms", v1);
    assert_int_equal(e.state, SP_KEYRING_RETIRED);
    assert_int_equal(e.retired, T0 + 30);
    assert_int_equal(e.deactivated, T0 + 10);
    sp_key *k = NULL;
    assert_rc(sp_keyring_unwrap(kr, "acme", "sms", v1, &k), SP_ERR_KEY_RETIRED);
    assert_null(k);
    assert_rc(sp_keyring_retire(kr, "acme", "sms", v1, T0 + 31), SP_ERR_ILLEGAL_TRANSITION);

    /* retired -> destroyed: the wrapped blob leaves the file */
    json_t *root = load_json(f->path);
    json_t *je = json_entry(root, v1);
    assert_non_null(je);
    char *blob = strdup(json_string_value(json_object_get(je, "wrapped")));
    assert_non_null(blob);
    assert_true(strlen(blob) > 40);
    json_decref(root);
    assert_ok(sp_keyring_destroy(kr, "acme", "sms", v1, T0 + 40));
    e = entry(kr, "acme", "sms", v1);
    assert_int_equal(e.state, SP_KEYRING_DESTROYED);
    assert_int_equal(e.destroyed, T0 + 40);
    assert_string_equal(e.master_key, "");
    char *text = sp_test_read_file(f->path, NULL);
    assert_null(strstr(text, blob));
    free(text);
    root = load_json(f->path);
    je = json_entry(root, v1);
    assert_non_null(je);
    assert_null(json_object_get(je, "wrapped"));
    assert_string_equal(json_string_value(json_object_get(je, "state")), "destroyed");
    json_decref(root);
    free(blob);

    /* nothing leaves destroyed */
    assert_rc(sp_keyring_retire(kr, "acme", "sms", v1, T0 + 50), SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_keyring_destroy(kr, "acme", "sms", v1, T0 + 50), SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_keyring_unwrap(kr, "acme", "sms", v1, &k), SP_ERR_KEY_RETIRED);
    assert_int_equal(state_of(kr, "acme", "sms", v1), SP_KEYRING_DESTROYED);

    /* a third rotation: v2 decrypt-only, v3 active, v1 stays destroyed */
    rotate(kr, "acme", "sms", T0 + 60, v3);
    assert_int_equal(state_of(kr, "acme", "sms", v2), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "acme", "sms", v3), SP_KEYRING_ACTIVE);
    assert_int_equal(state_of(kr, "acme", "sms", v1), SP_KEYRING_DESTROYED);
    assert_int_equal(assert_one_active_each(kr), 3);
    /* no version: the active one */
    assert_ok(sp_keyring_find(kr, "acme", "sms", NULL, &e));
    assert_string_equal(e.version, v3);
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);
    assert_rc(sp_keyring_find(kr, "acme", "nope", NULL, &e), SP_ERR_NOT_FOUND);

    /* versions that do not exist, or exist in another channel */
    assert_rc(sp_keyring_retire(kr, "acme", "sms", UNKNOWN_VERSION, T0), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_destroy(kr, "acme", "sms", UNKNOWN_VERSION, T0), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_set_min_version(kr, "acme", "sms", UNKNOWN_VERSION, T0), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_unwrap(kr, "acme", "sms", UNKNOWN_VERSION, &k), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_find(kr, "acme", "sms", UNKNOWN_VERSION, &e), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_retire(kr, "acme", "email", v2, T0), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_retire(kr, "other", "sms", v2, T0), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_find(kr, "acme", "email", v2, &e), SP_ERR_NOT_FOUND);

    /* names of the states */
    assert_string_equal(sp_keyring_state_name(SP_KEYRING_ACTIVE), "active");
    assert_string_equal(sp_keyring_state_name(SP_KEYRING_DECRYPT_ONLY), "decrypt-only");
    assert_string_equal(sp_keyring_state_name(SP_KEYRING_RETIRED), "retired");
    assert_string_equal(sp_keyring_state_name(SP_KEYRING_DESTROYED), "destroyed");
    assert_non_null(sp_keyring_state_name((sp_keyring_state)0));
    assert_non_null(sp_keyring_state_name((sp_keyring_state)99));

    /* index past the end */
    assert_rc(sp_keyring_get(kr, sp_keyring_count(kr), &e), SP_ERR_INVALID_ARGUMENT);

    /* a reopened keyring sees the same */
    sp_keyring *again = NULL;
    assert_ok(sp_keyring_open(f->path, f->a, &again));
    assert_int_equal(sp_keyring_count(again), 3);
    assert_int_equal(state_of(again, "acme", "sms", v1), SP_KEYRING_DESTROYED);
    assert_int_equal(state_of(again, "acme", "sms", v2), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(again, "acme", "sms", v3), SP_KEYRING_ACTIVE);
    sp_keyring_close(again);
}

static void test_names_and_arguments(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    char v[37];
    rotate(kr, "acme", "sms", T0, v);
    char long_name[SP_KEYRING_MAX_NAME + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[SP_KEYRING_MAX_NAME + 1] = 0; /* 65 characters */
    const char *bad[] = {"", "has space", "slash/name", "dots:colon", "caf\xc3\xa9", "new\nline", long_name, NULL};
    sp_keyring_entry e;
    sp_key *k = NULL;
    sp_wire *w = NULL;
    assert_ok(sp_wire_new(&w));
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        const char *b = bad[i];
        assert_rc(sp_keyring_rotate(kr, b, "sms", T0, v), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_rotate(kr, "acme", b, T0, v), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_retire(kr, b, "sms", UNKNOWN_VERSION, T0), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_destroy(kr, "acme", b, UNKNOWN_VERSION, T0), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_set_min_version(kr, b, "sms", UNKNOWN_VERSION, T0), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_find(kr, "acme", b, UNKNOWN_VERSION, &e), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_unwrap(kr, b, "sms", UNKNOWN_VERSION, &k), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_keyring_load_wire(kr, "acme", b, w), SP_ERR_INVALID_ARGUMENT);
    }
    /* the longest name, and every allowed character */
    long_name[SP_KEYRING_MAX_NAME] = 0;
    rotate(kr, long_name, "A-Z.a_z-0.9", T0, NULL);

    const char *uuids[] = {"not-a-uuid", "0E9A5C3B-F712-4D68-B4A1-C6E8207D95FB", "0e9a5c3b-f712-4d68-b4a1-c6e8207d95f",
                           "0e9a5c3bf7124d68b4a1c6e8207d95fb", ""};
    for (size_t i = 0; i < SP_ARRAY_LEN(uuids); i++) {
        assert_rc(sp_keyring_retire(kr, "acme", "sms", uuids[i], T0), SP_ERR_BAD_UUID);
        assert_rc(sp_keyring_destroy(kr, "acme", "sms", uuids[i], T0), SP_ERR_BAD_UUID);
        assert_rc(sp_keyring_set_min_version(kr, "acme", "sms", uuids[i], T0), SP_ERR_BAD_UUID);
        assert_rc(sp_keyring_find(kr, "acme", "sms", uuids[i], &e), SP_ERR_BAD_UUID);
        assert_rc(sp_keyring_unwrap(kr, "acme", "sms", uuids[i], &k), SP_ERR_BAD_UUID);
    }
    /* times are Unix seconds after 1970 */
    assert_rc(sp_keyring_rotate(kr, "acme", "sms", 0, v), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_rotate(kr, "acme", "sms", -5, v), SP_ERR_INVALID_ARGUMENT);
    /* NULLs */
    assert_rc(sp_keyring_rotate(NULL, "acme", "sms", T0, v), SP_ERR_INVALID_ARGUMENT);
    sp_keyring *none = NULL;
    assert_rc(sp_keyring_open(NULL, f->a, &none), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_open(f->path, f->a, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_null(none);
    assert_rc(sp_keyring_find(f->kr, "acme", "sms", v, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_reload(NULL), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_keyring_count(NULL), 0);
    sp_keyring_close(NULL);
    /* nothing above changed the file */
    assert_int_equal(assert_one_active_each(f->kr), 2);
    /* a load_wire for a channel without keys */
    assert_rc(sp_keyring_load_wire(f->kr, "acme", "email", w), SP_ERR_NOT_FOUND);
    sp_wire_free(w);
    /* rotate without asking for the version */
    assert_ok(sp_keyring_rotate(f->kr, "acme", "sms", T0 + 1, NULL));
    assert_int_equal(assert_one_active_each(f->kr), 3);
}

static void test_channels_independent(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    static const char *const tenants[] = {"acme", "globex"};
    static const char *const channels[] = {"sms", "email", "whatsapp"};
    char active[2][3][37];
    int64_t now = T0;
    for (int round = 0; round < 3; round++) {
        for (int t = 0; t < 2; t++) {
            for (int c = 0; c < 3; c++) {
                if (round > 0 && (t + c + round) % 2 == 0) continue; /* rotate some channels only */
                char before[2][3][37];
                memcpy(before, active, sizeof before);
                rotate(kr, tenants[t], channels[c], ++now, active[t][c]);
                assert_one_active_each(kr);
                /* every other channel kept its active key */
                for (int t2 = 0; t2 < 2; t2++) {
                    for (int c2 = 0; c2 < 3; c2++) {
                        if ((t2 == t && c2 == c) || (round == 0 && (t2 > t || (t2 == t && c2 > c)))) continue;
                        assert_int_equal(state_of(kr, tenants[t2], channels[c2], before[t2][c2]), SP_KEYRING_ACTIVE);
                    }
                }
            }
        }
    }
    /* a key of one channel is unknown to the others, even for the same tenant */
    assert_rc(sp_keyring_retire(kr, "acme", "email", active[0][0], now), SP_ERR_NOT_FOUND);
    assert_rc(sp_keyring_retire(kr, "globex", "sms", active[0][0], now), SP_ERR_NOT_FOUND);
    /* a message for acme/sms opens with acme/sms's wire only */
    sp_wire *sms = fresh_wire(kr, "acme", "sms"), *email = fresh_wire(kr, "acme", "email");
    sp_wire *other = fresh_wire(kr, "globex", "sms");
    message m;
    seal(sms, NULL, &m);
    assert_ok(open_message(sms, &m, NULL));
    assert_rc(open_message(email, &m, NULL), SP_ERR_UNKNOWN_KEY_VERSION);
    assert_rc(open_message(other, &m, NULL), SP_ERR_UNKNOWN_KEY_VERSION);
    sp_wire_free(sms);
    sp_wire_free(email);
    sp_wire_free(other);
}

/* ---- wire loading and overlap ---- */

static void test_load_wire_overlap(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    char v1[37], v2[37], got[SP_KEY_VERSION_CHARS + 1];
    rotate(kr, "acme", "sms", T0, v1);
    sp_wire *w1 = fresh_wire(kr, "acme", "sms");
    assert_string_equal(sp_wire_active_version(w1), v1);
    message m1;
    seal(w1, NULL, &m1); /* in flight across the rotation */

    rotate(kr, "acme", "sms", T0 + 100, v2);
    sp_wire *w2 = fresh_wire(kr, "acme", "sms");
    assert_string_equal(sp_wire_active_version(w2), v2);
    assert_ok(open_message(w2, &m1, got));
    assert_string_equal(got, v1);
    message m2;
    seal(w2, NULL, &m2);
    assert_ok(open_message(w2, &m2, got));
    assert_string_equal(got, v2);
    /* loading again into the same wire is harmless */
    assert_ok(sp_keyring_load_wire(kr, "acme", "sms", w2));
    assert_string_equal(sp_wire_active_version(w2), v2);
    /* the old wire, reloaded, seals with the new version from now on */
    assert_ok(sp_keyring_load_wire(kr, "acme", "sms", w1));
    assert_string_equal(sp_wire_active_version(w1), v2);
    assert_ok(open_message(w1, &m2, NULL));
    /* the keys are the ones the keyring unwraps */
    uint8_t a[SP_KEY_BYTES], b[SP_KEY_BYTES];
    key_bytes(kr, "acme", "sms", v1, a);
    key_bytes(kr, "acme", "sms", v2, b);
    assert_memory_not_equal(a, b, SP_KEY_BYTES);

    /* v1 retired: a fresh wire no longer opens m1 */
    assert_ok(sp_keyring_retire(kr, "acme", "sms", v1, T0 + 200));
    sp_wire *w3 = fresh_wire(kr, "acme", "sms");
    assert_rc(open_message(w3, &m1, NULL), SP_ERR_UNKNOWN_KEY_VERSION);
    assert_ok(open_message(w3, &m2, NULL));
    assert_string_equal(sp_wire_active_version(w3), v2);
    sp_wire_free(w1);
    sp_wire_free(w2);
    sp_wire_free(w3);
}

/* ---- minimum version ---- */

static void test_min_version(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    char v[5][37];
    message m[5];
    /* seal one message under each version as it becomes active */
    for (int i = 0; i < 5; i++) {
        rotate(kr, "acme", "sms", T0 + i, v[i]);
        sp_wire *w = fresh_wire(kr, "acme", "sms");
        seal(w, NULL, &m[i]);
        sp_wire_free(w);
    }
    rotate(kr, "acme", "email", T0, NULL); /* a bystander channel */
    rotate(kr, "acme", "email", T0 + 1, NULL);

    assert_ok(sp_keyring_set_min_version(kr, "acme", "sms", v[2], T0 + 10));
    for (int i = 0; i < 2; i++) {
        sp_keyring_entry e = entry(kr, "acme", "sms", v[i]);
        assert_int_equal(e.state, SP_KEYRING_RETIRED);
        assert_int_equal(e.retired, T0 + 10);
    }
    assert_int_equal(state_of(kr, "acme", "sms", v[2]), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "acme", "sms", v[3]), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "acme", "sms", v[4]), SP_KEYRING_ACTIVE);
    /* other channels untouched */
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(kr, i, &e));
        if (strcmp(e.channel, "email") == 0) assert_true(e.state != SP_KEYRING_RETIRED);
    }
    sp_wire *w = fresh_wire(kr, "acme", "sms");
    for (int i = 0; i < 5; i++) assert_rc(open_message(w, &m[i], NULL), i < 2 ? SP_ERR_UNKNOWN_KEY_VERSION : SP_OK);
    sp_wire_free(w);

    /* the same minimum again is fine; a lower one is refused and changes nothing */
    assert_ok(sp_keyring_set_min_version(kr, "acme", "sms", v[2], T0 + 11));
    sp_error rc = sp_keyring_set_min_version(kr, "acme", "sms", v[1], T0 + 12);
    if (rc != SP_ERR_ILLEGAL_TRANSITION && rc != SP_ERR_KEY_RETIRED)
        fail_msg("lowering the minimum version gave %s", sp_error_name(rc));
    assert_int_equal(state_of(kr, "acme", "sms", v[2]), SP_KEYRING_DECRYPT_ONLY);

    /* raising it to the active version retires every decrypt-only one */
    assert_ok(sp_keyring_set_min_version(kr, "acme", "sms", v[4], T0 + 13));
    assert_int_equal(state_of(kr, "acme", "sms", v[2]), SP_KEYRING_RETIRED);
    assert_int_equal(state_of(kr, "acme", "sms", v[3]), SP_KEYRING_RETIRED);
    assert_int_equal(state_of(kr, "acme", "sms", v[4]), SP_KEYRING_ACTIVE);
    rc = sp_keyring_set_min_version(kr, "acme", "sms", v[3], T0 + 14);
    if (rc != SP_ERR_ILLEGAL_TRANSITION && rc != SP_ERR_KEY_RETIRED)
        fail_msg("lowering the minimum version gave %s", sp_error_name(rc));
    w = fresh_wire(kr, "acme", "sms");
    for (int i = 0; i < 5; i++) assert_rc(open_message(w, &m[i], NULL), i < 4 ? SP_ERR_UNKNOWN_KEY_VERSION : SP_OK);
    sp_wire_free(w);
    assert_one_active_each(kr);

    /* a rotation after the minimum: the new version is above it and loads */
    char v5[37];
    rotate(kr, "acme", "sms", T0 + 20, v5);
    w = fresh_wire(kr, "acme", "sms");
    assert_string_equal(sp_wire_active_version(w), v5);
    assert_ok(open_message(w, &m[4], NULL));
    sp_wire_free(w);
}

/* Even a version someone brought back to decrypt-only by editing the file
 * stays unloaded when it is below the channel's minimum. */
static void test_min_version_holds_against_edits(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    char v[3][37];
    message m[3];
    for (int i = 0; i < 3; i++) {
        rotate(kr, "acme", "sms", T0 + i, v[i]);
        sp_wire *w = fresh_wire(kr, "acme", "sms");
        seal(w, NULL, &m[i]);
        sp_wire_free(w);
    }
    assert_ok(sp_keyring_set_min_version(kr, "acme", "sms", v[1], T0 + 10));
    assert_int_equal(state_of(kr, "acme", "sms", v[0]), SP_KEYRING_RETIRED);

    json_t *root = load_json(f->path);
    json_t *e = json_entry(root, v[0]);
    assert_non_null(e);
    assert_int_equal(json_object_set_new(e, "state", json_string("decrypt-only")), 0);
    assert_int_equal(json_object_set_new(e, "retired", json_integer(0)), 0);
    char *text = dump_json(root);
    assert_non_null(text);
    json_decref(root);
    sp_test_write_file(f->path, text, strlen(text), 0600);
    free(text);

    assert_ok(sp_keyring_reload(kr));
    assert_int_equal(state_of(kr, "acme", "sms", v[0]), SP_KEYRING_DECRYPT_ONLY);
    sp_wire *w = fresh_wire(kr, "acme", "sms");
    assert_rc(open_message(w, &m[0], NULL), SP_ERR_UNKNOWN_KEY_VERSION);
    assert_ok(open_message(w, &m[1], NULL));
    assert_ok(open_message(w, &m[2], NULL));
    sp_wire_free(w);
    sp_key *k = NULL;
    assert_rc(sp_keyring_unwrap(kr, "acme", "sms", v[0], &k), SP_ERR_KEY_RETIRED);
    assert_null(k);
}

/* ---- scheduled maintenance ---- */

static void maintain(sp_keyring *kr, const sp_keyring_policy *p, int64_t now, size_t want_rotated,
                     size_t want_retired) {
    size_t rotated = 99, retired = 99;
    assert_ok(sp_keyring_maintain(kr, p, now, &rotated, &retired));
    if (rotated != want_rotated || retired != want_retired)
        fail_msg("maintain at %lld: rotated %zu retired %zu, expected %zu and %zu", (long long)(now - T0), rotated,
                 retired, want_rotated, want_retired);
    assert_one_active_each(kr);
}

/* The version that is active in a channel now. */
static void active_of(const sp_keyring *kr, const char *tenant, const char *channel, char out[37]) {
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(kr, i, &e));
        if (e.state == SP_KEYRING_ACTIVE && strcmp(e.tenant, tenant) == 0 && strcmp(e.channel, channel) == 0) {
            memcpy(out, e.version, 37);
            return;
        }
    }
    fail_msg("%s/%s has no active key", tenant, channel);
}

/* The schedule leaves the vault's channels alone: rotating a vault.index.*
 * key would break every blind-index lookup of older rows, and the vault
 * rotates its DEKs itself. */
static void test_maintain_leaves_vault_channels(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    const sp_keyring_policy p = {.rotate_after_s = 100, .overlap_s = 50};
    char idx[37], dek[37], dek2[37], sms[37];
    rotate(kr, "t1", "vault.index.email", T0, idx);
    rotate(kr, "t1", "vault.dek", T0, dek);
    rotate(kr, "t1", "vault.dek", T0 + 1, dek2); /* dek is now decrypt-only */
    rotate(kr, "t1", "sms", T0, sms);
    maintain(kr, &p, T0 + 1000, 1, 0); /* only the provider channel */
    assert_int_equal(state_of(kr, "t1", "vault.index.email", idx), SP_KEYRING_ACTIVE);
    assert_int_equal(state_of(kr, "t1", "vault.dek", dek2), SP_KEYRING_ACTIVE);
    assert_int_equal(state_of(kr, "t1", "vault.dek", dek), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "t1", "sms", sms), SP_KEYRING_DECRYPT_ONLY);
}

static void test_maintain(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    const sp_keyring_policy p = {.rotate_after_s = 100, .overlap_s = 50};
    char a1[37], b1[37], c1[37], a2[37], b2[37], c2[37], a3[37], c3[37];
    rotate(kr, "t1", "a", T0, a1);
    rotate(kr, "t1", "b", T0, b1);
    rotate(kr, "t2", "a", T0 + 60, c1);

    maintain(kr, &p, T0 + 99, 0, 0); /* nothing is old enough */
    maintain(kr, &p, T0 + 100, 2, 0); /* t1's keys are 100 s old */
    active_of(kr, "t1", "a", a2);
    active_of(kr, "t1", "b", b2);
    assert_string_not_equal(a1, a2);
    sp_keyring_entry e = entry(kr, "t1", "a", a1);
    assert_int_equal(e.state, SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(e.deactivated, T0 + 100);
    assert_int_equal(entry(kr, "t1", "a", a2).created, T0 + 100);
    assert_int_equal(state_of(kr, "t2", "a", c1), SP_KEYRING_ACTIVE);

    maintain(kr, &p, T0 + 149, 0, 0); /* overlap not over yet */
    maintain(kr, &p, T0 + 150, 0, 2); /* now it is */
    e = entry(kr, "t1", "a", a1);
    assert_int_equal(e.state, SP_KEYRING_RETIRED);
    assert_int_equal(e.retired, T0 + 150);
    assert_int_equal(state_of(kr, "t1", "b", b1), SP_KEYRING_RETIRED);

    maintain(kr, &p, T0 + 160, 1, 0); /* t2's key is 100 s old */
    active_of(kr, "t2", "a", c2);
    assert_int_equal(state_of(kr, "t2", "a", c1), SP_KEYRING_DECRYPT_ONLY);

    /* one pass that does both: t1's and t2's actives are stale, c1's
     * overlap is over; the keys rotated out in this pass are not retired
     * in the same pass */
    maintain(kr, &p, T0 + 300, 3, 1);
    assert_int_equal(state_of(kr, "t2", "a", c1), SP_KEYRING_RETIRED);
    assert_int_equal(state_of(kr, "t1", "a", a2), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "t1", "b", b2), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "t2", "a", c2), SP_KEYRING_DECRYPT_ONLY);
    active_of(kr, "t1", "a", a3);
    active_of(kr, "t2", "a", c3);
    assert_int_equal(entry(kr, "t1", "a", a3).created, T0 + 300);
    maintain(kr, &p, T0 + 300, 0, 0); /* idempotent at the same instant */
    assert_int_equal(sp_keyring_count(kr), 9);

    /* zero means never */
    const sp_keyring_policy never = {0, 0};
    maintain(kr, &never, T0 + 1000000, 0, 0);
    const sp_keyring_policy retire_only = {0, 50};
    maintain(kr, &retire_only, T0 + 350, 0, 3);
    assert_int_equal(state_of(kr, "t1", "a", a2), SP_KEYRING_RETIRED);
    assert_int_equal(sp_keyring_count(kr), 9);
    /* NULL counters are allowed */
    assert_ok(sp_keyring_maintain(kr, &p, T0 + 351, NULL, NULL));

    const sp_keyring_policy negative = {-1, 50}, negative2 = {100, -1};
    assert_rc(sp_keyring_maintain(kr, &negative, T0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_maintain(kr, &negative2, T0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_maintain(kr, NULL, T0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_maintain(kr, &p, 0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* ---- the file ---- */

static void test_file_holds_no_key_material(void **state) {
    fixture *f = *state;
    sp_keyring *kr = f->kr;
    enum { KEYS = 12 };
    uint8_t keys[KEYS][SP_KEY_BYTES];
    char versions[KEYS][37];
    static const char *const channels[] = {"sms", "email", "push"};
    for (int i = 0; i < KEYS; i++) {
        const char *channel = channels[i % 3];
        rotate(kr, "acme", channel, T0 + i, versions[i]);
        key_bytes(kr, "acme", channel, versions[i], keys[i]);
    }
    /* take some keys through the rest of the life cycle */
    assert_ok(sp_keyring_retire(kr, "acme", "sms", versions[0], T0 + 100));
    assert_ok(sp_keyring_retire(kr, "acme", "email", versions[1], T0 + 100));
    assert_ok(sp_keyring_destroy(kr, "acme", "sms", versions[0], T0 + 101));
    char *text = sp_test_read_file(f->path, NULL);
    for (int i = 0; i < KEYS; i++) sp_test_assert_key_absent(text, keys[i]);
    free(text);
    assert_int_equal(sp_test_file_mode(f->path), 0600);
    /* the wrapped blobs in it are what the KMS made, under master key A */
    json_t *root = load_json(f->path);
    json_t *list = json_object_get(root, "keys");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *w = json_object_get(json_array_get(list, i), "wrapped");
        if (w == NULL) continue;
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t n = 0;
        assert_ok(sp_b64_decode(json_string_value(w), json_string_length(w), blob, sizeof blob, &n, false));
        assert_true(sp_kms_owns(f->a, blob, n));
        for (int k = 0; k < KEYS; k++) assert_null(memmem(blob, n, keys[k], 8));
    }
    json_decref(root);
}

static void test_file_refused_when_unsafe_or_malformed(void **state) {
    fixture *f = *state;
    char v1[37], v2[37];
    rotate(f->kr, "acme", "sms", T0, v1);
    rotate(f->kr, "acme", "sms", T0 + 1, v2);
    char *good = sp_test_read_file(f->path, NULL);
    sp_keyring *kr = NULL;

    /* readable by others */
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_rc(sp_keyring_open(f->path, f->a, &kr), SP_ERR_INSECURE_PERMISSIONS);
    assert_null(kr);
    assert_int_equal(chmod(f->path, 0600), 0);

    /* broken in ways only an edit or a bug could make; each one refused
     * whole, never half-loaded */
    json_t *root = load_json(f->path);
    json_t *keys = json_object_get(root, "keys");
    json_t *first = json_array_get(keys, 0), *second = json_array_get(keys, 1);
    char *edits[6];
    size_t nedits = 0;
    /* the same version twice */
    assert_int_equal(json_array_append(keys, first), 0);
    edits[nedits++] = dump_json(root);
    assert_int_equal(json_array_remove(keys, 2), 0);
    /* two active keys in one channel */
    json_t *state_before = json_deep_copy(json_object_get(first, "state"));
    assert_int_equal(json_object_set_new(first, "state", json_string("active")), 0);
    edits[nedits++] = dump_json(root);
    assert_int_equal(json_object_set_new(first, "state", state_before), 0);
    /* an unknown state */
    assert_int_equal(json_object_set_new(second, "state", json_string("paused")), 0);
    edits[nedits++] = dump_json(root);
    assert_int_equal(json_object_set_new(second, "state", json_string("active")), 0);
    /* a destroyed key that still has its blob */
    assert_int_equal(json_object_set_new(first, "state", json_string("destroyed")), 0);
    edits[nedits++] = dump_json(root);
    json_decref(root);
    edits[nedits++] = strdup("{\"format\":\"sealpost-keyring\",\"version\":2,\"keys\":[],\"channels\":[]}");
    edits[nedits++] = strdup("{\"format\":\"sealpost-keyring\",\"version\":1,\"keys\":[");
    for (size_t i = 0; i < nedits; i++) {
        assert_non_null(edits[i]);
        sp_test_write_file(f->path, edits[i], strlen(edits[i]), 0600);
        sp_error rc = sp_keyring_open(f->path, f->a, &kr);
        if (rc != SP_ERR_BAD_KEYFILE) fail_msg("edit #%zu gave %s", i, sp_error_name(rc));
        assert_null(kr);
        /* and a handle already open refuses the reload and every change */
        assert_rc(sp_keyring_reload(f->kr), SP_ERR_BAD_KEYFILE);
        assert_rc(sp_keyring_rotate(f->kr, "acme", "sms", T0 + 5, NULL), SP_ERR_BAD_KEYFILE);
        free(edits[i]);
    }
    /* the file was never replaced by the failed changes */
    sp_test_write_file(f->path, good, strlen(good), 0600);
    assert_ok(sp_keyring_reload(f->kr));
    assert_int_equal(assert_one_active_each(f->kr), 2);
    free(good);
}

/* A keyring opened without a KMS lists what is there and refuses
 * everything that needs a master key, leaving the file alone. */
static void test_read_only_handle(void **state) {
    fixture *f = *state;
    char v1[37], v2[37];
    rotate(f->kr, "acme", "sms", T0, v1);
    rotate(f->kr, "acme", "sms", T0 + 1, v2);
    char *before = sp_test_read_file(f->path, NULL);
    sp_keyring *ro = NULL;
    assert_ok(sp_keyring_open(f->path, NULL, &ro));
    assert_int_equal(sp_keyring_count(ro), 2);
    assert_int_equal(state_of(ro, "acme", "sms", v1), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(ro, "acme", "sms", v2), SP_KEYRING_ACTIVE);
    assert_ok(sp_keyring_reload(ro));

    const sp_keyring_policy p = {1, 1};
    sp_key *k = NULL;
    sp_wire *w = NULL;
    assert_ok(sp_wire_new(&w));
    assert_rc(sp_keyring_rotate(ro, "acme", "sms", T0 + 2, NULL), SP_ERR_BAD_CONFIG);
    assert_rc(sp_keyring_retire(ro, "acme", "sms", v1, T0 + 2), SP_ERR_BAD_CONFIG);
    assert_rc(sp_keyring_destroy(ro, "acme", "sms", v1, T0 + 2), SP_ERR_BAD_CONFIG);
    assert_rc(sp_keyring_set_min_version(ro, "acme", "sms", v2, T0 + 2), SP_ERR_BAD_CONFIG);
    assert_rc(sp_keyring_maintain(ro, &p, T0 + 1000, NULL, NULL), SP_ERR_BAD_CONFIG);
    assert_rc(sp_keyring_unwrap(ro, "acme", "sms", v2, &k), SP_ERR_BAD_CONFIG);
    assert_null(k);
    assert_rc(sp_keyring_load_wire(ro, "acme", "sms", w), SP_ERR_BAD_CONFIG);
    assert_null(sp_wire_active_version(w));
    assert_rc(sp_keyring_rewrap(ro, f->b, 7, NULL, NULL, NULL), SP_ERR_BAD_CONFIG);
    sp_wire_free(w);
    sp_keyring_close(ro);
    char *after = sp_test_read_file(f->path, NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* Two handles on one file, as two processes would have. */
static void test_two_handles(void **state) {
    fixture *f = *state;
    sp_keyring *one = f->kr, *two = NULL;
    assert_ok(sp_keyring_open(f->path, f->a, &two));
    char v1[37], v2[37], v3[37];
    rotate(one, "acme", "sms", T0, v1);
    /* two's view is a snapshot until it reloads */
    assert_int_equal(sp_keyring_count(two), 0);
    assert_ok(sp_keyring_reload(two));
    assert_int_equal(sp_keyring_count(two), 1);
    assert_int_equal(state_of(two, "acme", "sms", v1), SP_KEYRING_ACTIVE);

    /* changes through a stale handle re-read first: nothing is lost */
    rotate(one, "acme", "email", T0 + 1, v2);
    rotate(two, "acme", "push", T0 + 2, v3);
    assert_int_equal(sp_keyring_count(two), 3);
    assert_int_equal(state_of(two, "acme", "email", v2), SP_KEYRING_ACTIVE);
    assert_ok(sp_keyring_reload(one));
    assert_int_equal(sp_keyring_count(one), 3);
    assert_int_equal(state_of(one, "acme", "push", v3), SP_KEYRING_ACTIVE);

    /* a stale rotation of the same channel still demotes the real active key */
    char v4[37], v5[37];
    rotate(one, "acme", "sms", T0 + 3, v4); /* two does not know v4 */
    rotate(two, "acme", "sms", T0 + 4, v5);
    assert_int_equal(state_of(two, "acme", "sms", v4), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(two, "acme", "sms", v1), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(assert_one_active_each(two), 5);
    /* a stale retire sees the current state too */
    assert_ok(sp_keyring_retire(one, "acme", "sms", v4, T0 + 5));
    assert_rc(sp_keyring_retire(two, "acme", "sms", v4, T0 + 6), SP_ERR_ILLEGAL_TRANSITION);
    sp_keyring_close(two);
}

/* Two processes rotating at the same time: 2 x 20 rotations, all kept. */
static void test_two_processes(void **state) {
    fixture *f = *state;
    enum { ROUNDS = 10 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pid = sp_test_fork();
    if (pid == 0) {
        close(gate[1]);
        char go;
        if (read(gate[0], &go, 1) < 0) _exit(2);
        sp_kms *kms = NULL;
        sp_keyring *kr = NULL;
        int bad = sp_kms_open(f->config_a, &kms) != SP_OK || sp_keyring_open(f->path, kms, &kr) != SP_OK;
        for (int i = 0; i < ROUNDS && !bad; i++) {
            bad |= sp_keyring_rotate(kr, "acme", "shared", T0 + i, NULL) != SP_OK;
            bad |= sp_keyring_rotate(kr, "acme", "child", T0 + i, NULL) != SP_OK;
        }
        sp_keyring_close(kr);
        sp_kms_close(kms);
        _exit(bad ? 1 : 0);
    }
    close(gate[0]);
    close(gate[1]); /* both start now */
    int bad = 0;
    for (int i = 0; i < ROUNDS; i++) {
        bad |= sp_keyring_rotate(f->kr, "acme", "shared", T0 + i, NULL) != SP_OK;
        bad |= sp_keyring_rotate(f->kr, "acme", "parent", T0 + i, NULL) != SP_OK;
    }
    assert_int_equal(sp_test_wait(pid), 0);
    assert_int_equal(bad, 0);
    assert_ok(sp_keyring_reload(f->kr));
    assert_int_equal(assert_one_active_each(f->kr), 4 * ROUNDS);
    size_t shared = 0;
    for (size_t i = 0; i < sp_keyring_count(f->kr); i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(f->kr, i, &e));
        if (strcmp(e.channel, "shared") == 0) shared++;
    }
    assert_int_equal(shared, 2 * ROUNDS);
}

/* ---- master-key rotation ---- */

enum { REWRAP_KEYS = 50 };

typedef struct {
    char tenant[16], channel[16], version[37];
    uint8_t key[SP_KEY_BYTES];
} known_key;

/* 50 wrapped keys over five tenants and two channels (five versions each),
 * plus one destroyed key that has nothing left to rewrap. */
static void populate(sp_keyring *kr, known_key *known) {
    static const char *const channels[] = {"sms", "email"};
    size_t n = 0;
    int64_t now = T0;
    char doomed[37];
    rotate(kr, "t0", "sms", now++, doomed);
    for (int t = 0; t < 5; t++) {
        for (int c = 0; c < 2; c++) {
            for (int i = 0; i < 5; i++) {
                known_key *k = &known[n++];
                snprintf(k->tenant, sizeof k->tenant, "t%d", t);
                snprintf(k->channel, sizeof k->channel, "%s", channels[c]);
                rotate(kr, k->tenant, k->channel, now++, k->version);
                key_bytes(kr, k->tenant, k->channel, k->version, k->key);
            }
        }
    }
    assert_int_equal(n, REWRAP_KEYS);
    assert_ok(sp_keyring_retire(kr, "t0", "sms", doomed, now));
    assert_ok(sp_keyring_destroy(kr, "t0", "sms", doomed, now));
    assert_int_equal(sp_keyring_count(kr), REWRAP_KEYS + 1);
}

/* Counts the file's blobs by owner, and checks each entry's master_key
 * names its blob's owner. */
static void count_owners(const fixture *f, size_t *under_a, size_t *under_b) {
    *under_a = *under_b = 0;
    json_t *root = load_json(f->path);
    json_t *list = json_object_get(root, "keys");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        json_t *w = json_object_get(e, "wrapped");
        const char *master = json_string_value(json_object_get(e, "master_key"));
        assert_non_null(master);
        if (w == NULL) {
            assert_string_equal(master, "");
            continue;
        }
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t n = 0;
        assert_ok(sp_b64_decode(json_string_value(w), json_string_length(w), blob, sizeof blob, &n, false));
        bool a = sp_kms_owns(f->a, blob, n), b = sp_kms_owns(f->b, blob, n);
        assert_true(a != b);
        assert_string_equal(master, sp_kms_key_id(a ? f->a : f->b));
        if (a) (*under_a)++;
        else (*under_b)++;
    }
    json_decref(root);
}

/* Every known key unwraps through kr with its original bytes. */
static void assert_keys_intact(sp_keyring *kr, const known_key *known) {
    for (size_t i = 0; i < REWRAP_KEYS; i++) {
        uint8_t now[SP_KEY_BYTES];
        key_bytes(kr, known[i].tenant, known[i].channel, known[i].version, now);
        assert_memory_equal(now, known[i].key, SP_KEY_BYTES);
    }
}

typedef struct {
    int calls;
    int exit_at;  /* _exit(3) on this call (0: never) */
    int fail_at;  /* return fail_with on this call (0: never) */
    sp_error fail_with;
    size_t done[32], total[32];
} progress_log;

static sp_error on_progress(void *arg, size_t done, size_t total) {
    progress_log *p = arg;
    if (p->calls < 32) {
        p->done[p->calls] = done;
        p->total[p->calls] = total;
    }
    p->calls++;
    if (p->exit_at != 0 && p->calls == p->exit_at) _exit(3); /* a crash right after a batch */
    if (p->fail_at != 0 && p->calls == p->fail_at) return p->fail_with;
    return SP_OK;
}

static void test_rewrap(void **state) {
    fixture *f = *state;
    known_key known[REWRAP_KEYS];
    populate(f->kr, known);
    size_t under_a = 0, under_b = 0;
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_a, REWRAP_KEYS);

    progress_log p;
    memset(&p, 0, sizeof p);
    size_t rewrapped = 0;
    assert_ok(sp_keyring_rewrap(f->kr, f->b, 7, on_progress, &p, &rewrapped));
    assert_int_equal(rewrapped, REWRAP_KEYS);
    /* seven per batch: 7, 14, ... 49, then 50 */
    assert_int_equal(p.calls, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(p.done[i], i < 7 ? (size_t)(7 * (i + 1)) : REWRAP_KEYS);
        assert_int_equal(p.total[i], REWRAP_KEYS);
    }
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_a, 0);
    assert_int_equal(under_b, REWRAP_KEYS);
    for (size_t i = 0; i < REWRAP_KEYS; i++)
        assert_string_equal(entry(f->kr, known[i].tenant, known[i].channel, known[i].version).master_key,
                            sp_kms_key_id(f->b));
    /* the keyring now uses B; the key bytes did not change */
    assert_keys_intact(f->kr, known);
    sp_keyring *with_b = NULL, *with_a = NULL;
    assert_ok(sp_keyring_open(f->path, f->b, &with_b));
    assert_keys_intact(with_b, known);
    assert_ok(sp_keyring_open(f->path, f->a, &with_a));
    sp_key *k = NULL;
    assert_rc(sp_keyring_unwrap(with_a, known[0].tenant, known[0].channel, known[0].version, &k), SP_ERR_AUTH);
    assert_null(k);
    /* states and times are untouched */
    for (size_t i = 0; i < REWRAP_KEYS; i++) {
        sp_keyring_entry e = entry(with_b, known[i].tenant, known[i].channel, known[i].version);
        assert_int_equal(e.state, i % 5 == 4 ? SP_KEYRING_ACTIVE : SP_KEYRING_DECRYPT_ONLY);
    }
    assert_one_active_each(with_b);
    sp_keyring_close(with_a);
    sp_keyring_close(with_b);

    /* new keys go under B */
    char v[37];
    rotate(f->kr, "t0", "sms", T0 + 1000, v);
    assert_string_equal(entry(f->kr, "t0", "sms", v).master_key, sp_kms_key_id(f->b));
    /* nothing left to do: no batch, no callback */
    memset(&p, 0, sizeof p);
    assert_ok(sp_keyring_rewrap(f->kr, f->b, 7, on_progress, &p, &rewrapped));
    assert_int_equal(rewrapped, 0);
    assert_int_equal(p.calls, 0);
    /* NULL progress and counter are allowed; batch 0 is not */
    assert_ok(sp_keyring_rewrap(f->kr, f->b, 1, NULL, NULL, NULL));
    assert_rc(sp_keyring_rewrap(f->kr, f->b, 0, NULL, NULL, &rewrapped), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_rewrap(f->kr, NULL, 7, NULL, NULL, &rewrapped), SP_ERR_INVALID_ARGUMENT);
}

/* A child rewraps and dies (_exit) right after its third batch; the parent
 * finds a valid file half under each master key and resumes. */
static void test_rewrap_crash_and_resume(void **state) {
    fixture *f = *state;
    known_key known[REWRAP_KEYS];
    populate(f->kr, known);
    pid_t pid = sp_test_fork();
    if (pid == 0) {
        sp_kms *a = NULL, *b = NULL;
        sp_keyring *kr = NULL;
        if (sp_kms_open(f->config_a, &a) != SP_OK || sp_kms_open(f->config_b, &b) != SP_OK ||
            sp_keyring_open(f->path, a, &kr) != SP_OK)
            _exit(1);
        progress_log p;
        memset(&p, 0, sizeof p);
        p.exit_at = 3;
        size_t n = 0;
        sp_error rc = sp_keyring_rewrap(kr, b, 7, on_progress, &p, &n);
        _exit(rc == SP_OK ? 4 : 5); /* should not get here */
    }
    assert_int_equal(sp_test_wait(pid), 3); /* the exit in on_progress */

    /* valid, with three batches under B */
    size_t under_a = 0, under_b = 0;
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_b, 21);
    assert_int_equal(under_a, REWRAP_KEYS - 21);
    /* nothing half-written beside it */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) assert_null(strstr(de->d_name, ".tmp"));
    closedir(d);

    /* resume with a fresh handle that still uses A */
    sp_keyring *kr = NULL;
    assert_ok(sp_keyring_open(f->path, f->a, &kr));
    progress_log p;
    memset(&p, 0, sizeof p);
    size_t rewrapped = 0;
    assert_ok(sp_keyring_rewrap(kr, f->b, 7, on_progress, &p, &rewrapped));
    assert_int_equal(rewrapped, REWRAP_KEYS - 21);
    assert_int_equal(p.calls, 5); /* 29 = 4 x 7 + 1 */
    assert_int_equal(p.done[0], 28);
    assert_int_equal(p.done[4], REWRAP_KEYS);
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_a, 0);
    assert_int_equal(under_b, REWRAP_KEYS);
    assert_keys_intact(kr, known);
    sp_keyring_close(kr);
    sp_keyring *with_b = NULL;
    assert_ok(sp_keyring_open(f->path, f->b, &with_b));
    assert_keys_intact(with_b, known);
    assert_int_equal(assert_one_active_each(with_b), REWRAP_KEYS + 1);
    sp_keyring_close(with_b);
}

static void test_rewrap_stopped_by_progress(void **state) {
    fixture *f = *state;
    known_key known[REWRAP_KEYS];
    populate(f->kr, known);
    progress_log p;
    memset(&p, 0, sizeof p);
    p.fail_at = 2;
    p.fail_with = SP_ERR_IO;
    size_t rewrapped = 12345;
    assert_rc(sp_keyring_rewrap(f->kr, f->b, 7, on_progress, &p, &rewrapped), SP_ERR_IO);
    assert_int_equal(p.calls, 2);
    /* the two written batches stay written */
    size_t under_a = 0, under_b = 0;
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_b, 14);
    assert_int_equal(under_a, REWRAP_KEYS - 14);
    assert_int_equal(assert_one_active_each(f->kr), REWRAP_KEYS + 1);
    /* and the same handle resumes */
    memset(&p, 0, sizeof p);
    assert_ok(sp_keyring_rewrap(f->kr, f->b, 7, on_progress, &p, &rewrapped));
    assert_int_equal(rewrapped, REWRAP_KEYS - 14);
    count_owners(f, &under_a, &under_b);
    assert_int_equal(under_b, REWRAP_KEYS);
    assert_keys_intact(f->kr, known);
}

/* ---- allocation failures ---- */

static bool clean_failure(sp_error rc) {
    return rc == SP_ERR_NO_MEMORY || rc == SP_ERR_CRYPTO_BACKEND || rc == SP_ERR_SECURE_MEMORY || rc == SP_ERR_RANDOM;
}

/* The file as another process would read it now: parseable, n entries,
 * one active key per channel. */
static void assert_file_consistent(const fixture *f, size_t n) {
    sp_keyring *other = NULL;
    assert_ok(sp_keyring_open(f->path, f->a, &other));
    assert_int_equal(assert_one_active_each(other), n);
    sp_keyring_close(other);
    assert_int_equal(sp_test_file_mode(f->path), 0600);
}

static void test_rotate_alloc_failures(void **state) {
    fixture *f = *state;
    rotate(f->kr, "acme", "sms", T0, NULL);
    rotate(f->kr, "acme", "sms", T0 + 1, NULL);
    rotate(f->kr, "acme", "email", T0, NULL);
    size_t keys = 3, failures = 0, baseline = secure_used();
    uint64_t n;
    for (n = 1; n < 100000; n++) {
        sp_test_fault fault = sp_test_fault_arm(n);
        char v[37] = "";
        sp_error rc = sp_keyring_rotate(f->kr, "acme", n % 2 ? "sms" : "email", T0 + 10 + (int64_t)n, v);
        bool reached = sp_test_fault_disarm(fault);
        if (rc == SP_OK) {
            keys++;
        } else {
            failures++;
            if (!clean_failure(rc)) fail_msg("allocation %llu failed, rotate said %s", (unsigned long long)n,
                                             sp_error_name(rc));
        }
        /* this handle's view and the file agree, with one active key each */
        assert_int_equal(assert_one_active_each(f->kr), keys);
        assert_file_consistent(f, keys);
        if (secure_used() != baseline)
            fail_msg("allocation %llu failed: %zu secure-heap bytes leaked", (unsigned long long)n,
                     secure_used() - baseline);
        if (!reached) break;
    }
    assert_true(n < 100000);
    assert_true(failures > 0);
    /* no temporary file left behind by any failed write */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) assert_null(strstr(de->d_name, ".tmp"));
    closedir(d);
}

/* rewrap with the n-th allocation failing, from the same starting file
 * each time: whatever was written, every key is under A or B with its
 * bytes unchanged, and a second run completes. */
static void test_rewrap_alloc_failures(void **state) {
    fixture *f = *state;
    enum { SMALL = 6 };
    char versions[SMALL][37];
    uint8_t keys[SMALL][SP_KEY_BYTES];
    for (int i = 0; i < SMALL; i++) {
        rotate(f->kr, "acme", i % 2 ? "sms" : "email", T0 + i, versions[i]);
        key_bytes(f->kr, "acme", i % 2 ? "sms" : "email", versions[i], keys[i]);
    }
    char *original = sp_test_read_file(f->path, NULL);
    size_t baseline = secure_used(), failures = 0;
    uint64_t n;
    for (n = 1; n < 100000; n++) {
        sp_test_write_file(f->path, original, strlen(original), 0600);
        sp_keyring *kr = NULL;
        assert_ok(sp_keyring_open(f->path, f->a, &kr));
        sp_test_fault fault = sp_test_fault_arm(n);
        size_t done = 0;
        sp_error rc = sp_keyring_rewrap(kr, f->b, 4, NULL, NULL, &done);
        bool reached = sp_test_fault_disarm(fault);
        if (rc != SP_OK) {
            failures++;
            if (!clean_failure(rc)) fail_msg("allocation %llu failed, rewrap said %s", (unsigned long long)n,
                                             sp_error_name(rc));
        }
        sp_keyring_close(kr);
        /* every blob opens under the master key it names, to the same key */
        json_t *root = load_json(f->path);
        json_t *list = json_object_get(root, "keys");
        assert_int_equal(json_array_size(list), SMALL);
        for (size_t i = 0; i < SMALL; i++) {
            json_t *e = json_array_get(list, i), *w = json_object_get(e, "wrapped");
            const char *version = json_string_value(json_object_get(e, "version"));
            uint8_t blob[SP_KMS_MAX_WRAPPED], now[SP_KEY_BYTES];
            size_t len = 0;
            assert_ok(sp_b64_decode(json_string_value(w), json_string_length(w), blob, sizeof blob, &len, false));
            sp_kms *owner = sp_kms_owns(f->a, blob, len) ? f->a : f->b;
            assert_string_equal(json_string_value(json_object_get(e, "master_key")), sp_kms_key_id(owner));
            sp_key *k = NULL;
            assert_ok(sp_kms_unwrap_key(owner, blob, len, &k));
            assert_ok(sp_key_export(k, now));
            sp_key_free(k);
            size_t j = 0;
            while (j < SMALL && strcmp(versions[j], version) != 0) j++;
            assert_true(j < SMALL);
            assert_memory_equal(now, keys[j], SP_KEY_BYTES);
        }
        json_decref(root);
        /* and resuming finishes the job */
        if (rc != SP_OK) {
            assert_ok(sp_keyring_open(f->path, f->a, &kr));
            assert_ok(sp_keyring_rewrap(kr, f->b, 4, NULL, NULL, &done));
            size_t under_a = 0, under_b = 0;
            count_owners(f, &under_a, &under_b);
            assert_int_equal(under_b, SMALL);
            sp_keyring_close(kr);
        }
        if (secure_used() != baseline)
            fail_msg("allocation %llu failed: %zu secure-heap bytes leaked", (unsigned long long)n,
                     secure_used() - baseline);
        if (!reached) break;
    }
    free(original);
    assert_true(n < 100000);
    assert_true(failures > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_machine, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_names_and_arguments, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_channels_independent, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_load_wire_overlap, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_min_version, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_min_version_holds_against_edits, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_maintain, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_maintain_leaves_vault_channels, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_file_holds_no_key_material, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_file_refused_when_unsafe_or_malformed, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_read_only_handle, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_two_processes, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rewrap, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rewrap_crash_and_resume, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rewrap_stopped_by_progress, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_alloc_failures, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rewrap_alloc_failures, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
