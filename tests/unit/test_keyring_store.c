/*
 * The keyring over a database row (sp_keyring_open_storage on
 * sp_store_keyring_storage), on SQLite in a scratch directory.
 *
 * The keyring's rules are tested on its file storage in test_keyring.c;
 * here the question is whether a row keeps them: the life cycle moves as it
 * does on a file, two keyrings on one tenant's row see each other's changes
 * (and never lose one, a stale handle re-reading under the row's lock),
 * reload_if_changed reads again exactly when the row's generation moved,
 * a storage missing a callback is refused (and its context closed), and
 * allocation failures in open and rotate are clean.
 */
#include "sp_test_util.h"

#include "sealpost/store.h"

#define T0 ((int64_t)1700000000)

typedef struct {
    char dir[256];
    char url[400];
    char kms_config[400];
    sp_kms *kms;
} fixture;

static int fixture_setup(void **state) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-kr-store");
    if (f == NULL) return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/store.db", f->dir);
    snprintf(f->kms_config, sizeof f->kms_config, "local:path=%s/master.key;create=1", f->dir);
    *state = f;
    return sp_kms_open(f->kms_config, &f->kms) == SP_OK ? 0 : -1;
}

static int fixture_teardown(void **state) {
    fixture *f = *state;
    sp_kms_close(f->kms);
    return sp_test_fixture_free(f, f->dir);
}

static sp_keyring *open_row(fixture *f, const char *tenant) {
    sp_keyring_storage st;
    sp_keyring *kr = NULL;
    assert_ok(sp_store_keyring_storage(f->url, tenant, &st));
    assert_ok(sp_keyring_open_storage(&st, f->kms, &kr));
    return kr;
}

static sp_keyring_state state_of(const sp_keyring *kr, const char *channel, const char *version) {
    sp_keyring_entry e;
    assert_ok(sp_keyring_find(kr, "acme", channel, version, &e));
    return e.state;
}

static void test_life_cycle_on_a_row(void **state) {
    fixture *f = *state;
    sp_keyring *kr = open_row(f, "acme");
    assert_int_equal(sp_keyring_count(kr), 0);
    char v1[37], v2[37];
    assert_ok(sp_keyring_rotate(kr, "acme", "sms", T0, v1));
    assert_ok(sp_keyring_rotate(kr, "acme", "sms", T0 + 1, v2));
    assert_int_equal(state_of(kr, "sms", v1), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(kr, "sms", v2), SP_KEYRING_ACTIVE);
    assert_rc(sp_keyring_retire(kr, "acme", "sms", v2, T0 + 2), SP_ERR_ILLEGAL_TRANSITION);
    assert_ok(sp_keyring_retire(kr, "acme", "sms", v1, T0 + 2));
    assert_ok(sp_keyring_destroy(kr, "acme", "sms", v1, T0 + 3));
    /* the active key works through the row as through a file */
    sp_wire *w = NULL;
    assert_ok(sp_wire_new(&w));
    assert_ok(sp_keyring_load_wire(kr, "acme", "sms", w));
    assert_string_equal(sp_wire_active_version(w), v2);
    sp_wire_free(w);
    sp_keyring_close(kr);

    /* reopened: the same state */
    kr = open_row(f, "acme");
    assert_int_equal(sp_keyring_count(kr), 2);
    assert_int_equal(state_of(kr, "sms", v1), SP_KEYRING_DESTROYED);
    assert_int_equal(state_of(kr, "sms", v2), SP_KEYRING_ACTIVE);
    sp_keyring_close(kr);
    /* another tenant's row is another keyring */
    kr = open_row(f, "beta");
    assert_int_equal(sp_keyring_count(kr), 0);
    sp_keyring_close(kr);
}

static void test_two_keyrings_one_row(void **state) {
    fixture *f = *state;
    sp_keyring *one = open_row(f, "acme"), *two = open_row(f, "acme");
    bool reloaded = true;
    assert_ok(sp_keyring_reload_if_changed(two, &reloaded));
    assert_false(reloaded);

    char v1[37], v2[37], v3[37];
    assert_ok(sp_keyring_rotate(one, "acme", "sms", T0, v1));
    assert_int_equal(sp_keyring_count(two), 0); /* a snapshot until it reloads */
    assert_ok(sp_keyring_reload_if_changed(two, &reloaded));
    assert_true(reloaded);
    assert_int_equal(sp_keyring_count(two), 1);
    assert_ok(sp_keyring_reload_if_changed(two, &reloaded));
    assert_false(reloaded);

    /* changes through a stale handle re-read first: none is lost */
    assert_ok(sp_keyring_rotate(one, "acme", "email", T0 + 1, v2));
    assert_ok(sp_keyring_rotate(two, "acme", "sms", T0 + 2, v3));
    assert_int_equal(sp_keyring_count(two), 3);
    assert_int_equal(state_of(two, "sms", v1), SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(state_of(two, "email", v2), SP_KEYRING_ACTIVE);
    assert_ok(sp_keyring_reload_if_changed(one, &reloaded));
    assert_true(reloaded);
    assert_int_equal(state_of(one, "sms", v3), SP_KEYRING_ACTIVE);
    /* a stale retire sees the current state */
    assert_ok(sp_keyring_retire(one, "acme", "sms", v1, T0 + 3));
    assert_rc(sp_keyring_retire(two, "acme", "sms", v1, T0 + 4), SP_ERR_ILLEGAL_TRANSITION);
    assert_int_equal(state_of(two, "sms", v1), SP_KEYRING_RETIRED);

    /* rotate_if_older decided under the row's lock: one rotation, not two */
    bool rotated_one = false, rotated_two = false;
    char a[37], b[37];
    assert_ok(sp_keyring_rotate_if_older(one, "acme", "push", T0 + 5, 3600, a, &rotated_one));
    assert_ok(sp_keyring_rotate_if_older(two, "acme", "push", T0 + 5, 3600, b, &rotated_two));
    assert_true(rotated_one);
    assert_false(rotated_two);
    assert_string_equal(a, b);

    /* deleting the tenant's rows empties the keyring for the next reload */
    sp_store *s = NULL;
    assert_ok(sp_store_open(f->url, &s));
    assert_ok(sp_store_tenant_create(s, "acme", "{}", 2, T0));
    assert_ok(sp_store_tenant_delete(s, "acme"));
    sp_store_close(s);
    assert_ok(sp_keyring_reload_if_changed(one, &reloaded));
    assert_true(reloaded);
    assert_int_equal(sp_keyring_count(one), 0);
    sp_keyring_close(one);
    sp_keyring_close(two);
}

/* Open without a KMS: listing only, and the row is left alone. */
static void test_read_only_row(void **state) {
    fixture *f = *state;
    sp_keyring *kr = open_row(f, "acme");
    assert_ok(sp_keyring_rotate(kr, "acme", "sms", T0, NULL));
    sp_keyring_close(kr);
    sp_keyring_storage st;
    assert_ok(sp_store_keyring_storage(f->url, "acme", &st));
    assert_ok(sp_keyring_open_storage(&st, NULL, &kr));
    assert_int_equal(sp_keyring_count(kr), 1);
    assert_rc(sp_keyring_rotate(kr, "acme", "sms", T0 + 1, NULL), SP_ERR_BAD_CONFIG);
    sp_keyring_close(kr);
}

static int closes;
static void counting_close(void *ctx) {
    (void)ctx;
    closes++;
}

static void test_incomplete_storage(void **state) {
    (void)state;
    sp_keyring *kr = NULL;
    sp_keyring_storage st;
    memset(&st, 0, sizeof st);
    st.close = counting_close;
    closes = 0;
    assert_rc(sp_keyring_open_storage(&st, NULL, &kr), SP_ERR_INVALID_ARGUMENT);
    assert_null(kr);
    assert_int_equal(closes, 1); /* owned from the call on, even when refused */
    assert_rc(sp_keyring_open_storage(NULL, NULL, &kr), SP_ERR_INVALID_ARGUMENT);
}

/* A document in the row that is not a keyring is refused whole. */
static void test_bad_document(void **state) {
    fixture *f = *state;
    sp_keyring_storage st;
    assert_ok(sp_store_keyring_storage(f->url, "acme", &st));
    assert_ok(st.lock(st.ctx));
    assert_ok(st.write(st.ctx, (const uint8_t *)"{\"format\":\"other\"}", 18));
    assert_ok(st.unlock(st.ctx, true));
    sp_keyring *kr = NULL;
    assert_rc(sp_keyring_open_storage(&st, f->kms, &kr), SP_ERR_BAD_KEYFILE);
    assert_null(kr);
}

static bool clean_failure(sp_error rc) {
    return rc == SP_ERR_NO_MEMORY || rc == SP_ERR_CRYPTO_BACKEND || rc == SP_ERR_SECURE_MEMORY || rc == SP_ERR_RANDOM;
}

/* Open and rotate with the n-th allocation failing: every failure clean,
 * and the row always holds whole keyrings with one active key. */
static void test_allocation_failures(void **state) {
    fixture *f = *state;
    sp_keyring *setup = open_row(f, "acme");
    assert_ok(sp_keyring_rotate(setup, "acme", "sms", T0, NULL));
    sp_keyring_close(setup);
    size_t keys = 1, failures = 0;
    uint64_t n;
    for (n = 1; n < 100000; n++) {
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_keyring_storage st;
        sp_keyring *kr = NULL;
        sp_error rc = sp_store_keyring_storage(f->url, "acme", &st);
        if (rc == SP_OK) rc = sp_keyring_open_storage(&st, f->kms, &kr);
        if (rc == SP_OK) rc = sp_keyring_rotate(kr, "acme", "sms", T0 + (int64_t)n, NULL);
        bool reached = sp_test_fault_disarm(fault);
        sp_keyring_close(kr);
        if (rc == SP_OK) keys++;
        else if (!clean_failure(rc)) fail_msg("allocation %llu failed: %s", (unsigned long long)n, sp_error_name(rc));
        else failures++;
        sp_keyring *check = open_row(f, "acme");
        assert_int_equal(sp_keyring_count(check), keys);
        size_t active = 0;
        for (size_t i = 0; i < keys; i++) {
            sp_keyring_entry e;
            assert_ok(sp_keyring_get(check, i, &e));
            if (e.state == SP_KEYRING_ACTIVE) active++;
        }
        assert_int_equal(active, 1);
        sp_keyring_close(check);
        if (!reached) break;
    }
    assert_true(n < 100000);
    assert_true(failures > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_life_cycle_on_a_row, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_two_keyrings_one_row, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_read_only_row, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_incomplete_storage, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bad_document, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
