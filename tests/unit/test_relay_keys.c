/*
 * The relay's view of the provider key file: wires built from it open what
 * its versions sealed; a rotation written to the file is picked up by a
 * refresh (new active version, old one still opening) without reopening;
 * a file that stops loading (truncated mid-write) keeps the previous keys;
 * wires are pooled and rebuilt only when the file changed; describe lists
 * versions and states and never key material.
 */
#include "sp_test_util.h"

#include "relay.h"

typedef struct fixture {
    char dir[256];
    char path[300];
} fixture;

static int setup(void **state) {
    fixture *f = sp_test_fixture_new(sizeof *f, offsetof(fixture, dir), sizeof f->dir, "relaykeys");
    if (!f) return -1;
    snprintf(f->path, sizeof f->path, "%s/keys.json", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    return sp_test_fixture_free(f, f->dir);
}

/* Seals with w's active version, opens with o. */
static void round_trip(sp_wire *w, sp_wire *o, const char *want_version) {
    static const uint8_t pt[] = "{\"kind\":\"sms\"}";
    uint8_t body[512], out[512];
    sp_sealed sealed;
    assert_ok(sp_seal(w, NULL, pt, sizeof pt - 1, body, sizeof body, &sealed));
    size_t out_len = 0;
    sp_opened info;
    assert_ok(sp_open(o, sealed.headers, sealed.n_headers, body, sealed.body_len, 0, out, sizeof out, &out_len, &info));
    assert_int_equal(out_len, sizeof pt - 1);
    if (want_version) assert_string_equal(info.key_version, want_version);
}

static void test_rotation_and_reload(void **state) {
    fixture *f = *state;
    char v1[37], v2[37];
    assert_ok(sp_keyfile_generate(f->path, v1));
    relay_keys *k = NULL;
    assert_ok(relay_keys_open(f->path, 1u << 20, 300, &k));
    uint64_t g1 = relay_keys_generation(k);
    sp_wire *w1 = NULL;
    assert_ok(relay_keys_acquire(k, &w1));
    assert_string_equal(sp_wire_active_version(w1), v1);
    relay_keys_release(k, w1);
    /* the same wire comes back while nothing changed */
    sp_wire *again = NULL;
    assert_ok(relay_keys_acquire(k, &again));
    assert_ptr_equal(again, w1);
    relay_keys_release(k, again);

    /* mtime granularity: make sure the rewrite is seen as a change */
    sp_test_sleep_ms(20);
    assert_ok(sp_keyfile_generate(f->path, v2));
    relay_keys_refresh(k, true);
    assert_int_equal(relay_keys_generation(k), g1 + 1);
    sp_wire *w2 = NULL;
    assert_ok(relay_keys_acquire(k, &w2));
    assert_string_equal(sp_wire_active_version(w2), v2);
    /* sealing with the new active version; the old one still opens */
    sp_wire *other = NULL;
    assert_ok(relay_keys_acquire(k, &other));
    assert_ptr_not_equal(other, w2);
    round_trip(w2, other, v2);
    assert_ok(sp_wire_set_active(other, v1));
    round_trip(other, w2, v1);
    relay_keys_release(k, other);
    relay_keys_release(k, w2);
    char desc[512];
    relay_keys_describe(k, desc, sizeof desc);
    assert_non_null(strstr(desc, v2));
    assert_non_null(strstr(desc, "(active)"));
    assert_non_null(strstr(desc, "(decrypt-only)"));
    size_t len = 0;
    char *text = sp_test_read_file(f->path, &len);
    json_t *doc = json_loadb(text, len, 0, NULL);
    json_t *key0 = json_object_get(json_array_get(json_object_get(doc, "keys"), 0), "key");
    assert_non_null(json_string_value(key0));
    assert_null(strstr(desc, json_string_value(key0)));
    json_decref(doc);

    /* a broken file keeps the keys we have */
    sp_test_sleep_ms(20);
    sp_test_write_file(f->path, text, len / 2, 0600);
    relay_keys_refresh(k, true);
    assert_int_equal(relay_keys_generation(k), g1 + 1);
    assert_ok(relay_keys_acquire(k, &w2));
    assert_string_equal(sp_wire_active_version(w2), v2);
    relay_keys_release(k, w2);
    /* and the next good write is picked up */
    sp_test_sleep_ms(20);
    sp_test_write_file(f->path, text, len, 0600);
    relay_keys_refresh(k, true);
    assert_int_equal(relay_keys_generation(k), g1 + 2);
    free(text);
    relay_keys_close(k);
}

static void test_open_failures(void **state) {
    fixture *f = *state;
    relay_keys *k = NULL;
    assert_int_not_equal(relay_keys_open(f->path, 1u << 20, 300, &k), SP_OK); /* no file */
    assert_null(k);
    sp_test_write_file(f->path, "{}", 2, 0600);
    assert_int_not_equal(relay_keys_open(f->path, 1u << 20, 300, &k), SP_OK);
    assert_null(k);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
