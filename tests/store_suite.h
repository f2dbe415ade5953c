/*
 * The store's behaviour (include/sealpost/store.h), as one suite that runs
 * on every backend: tests/unit/test_store.c runs it on SQLite in a scratch
 * directory, tests/integration/test_store_pg.c on a throwaway PostgreSQL.
 *
 * The including file provides, before including this:
 *   static bool suite_new_database(char *url, size_t cap, const char *dir);
 *       a fresh, empty database for one test (dir is the test's scratch
 *       directory), its URL in url;
 *   static void suite_drop_database(const char *url);
 *   static void suite_set_schema_version(const char *url, int version);
 *       records `version` in schema_version behind the store's back.
 * and then lists SUITE_TESTS in its cmocka group.
 *
 * What is held on every backend: migrations run once and a newer schema is
 * refused; each operation does what the header says, including the error
 * for each way of getting it wrong, before touching the database; a
 * transaction rolled back leaves nothing; tenant and profile deletion take
 * everything they own; a second connection sees committed data only, and
 * concurrent writers lose nothing; every allocation failure is a clean
 * error that leaks nothing (LSan); the keyring's row storage counts
 * generations, and a keyring file moves into rows once.
 */
#ifndef SP_STORE_SUITE_H
#define SP_STORE_SUITE_H

#include "sp_test_util.h"

#include "sealpost/store.h"

#define T0 ((int64_t)1700000000)
#define CRED_A "6f1c1d9e-0a3b-4c5d-8e7f-9a0b1c2d3e4f"
#define CRED_B "7a2b3c4d-5e6f-4a1b-9c8d-7e6f5a4b3c2d"
#define CRED_C "8b3c4d5e-6f7a-4b2c-8d9e-0f1a2b3c4d5e"

static bool suite_new_database(char *url, size_t cap, const char *dir);
static void suite_drop_database(const char *url);
static void suite_set_schema_version(const char *url, int version);

typedef struct {
    char dir[256];
    char url[SP_STORE_MAX_URL + 1];
    sp_store *s;
} suite_fixture;

static int suite_teardown(void **state) {
    suite_fixture *f = *state;
    sp_store_close(f->s);
    if (f->url[0]) suite_drop_database(f->url);
    return sp_test_fixture_free(f, f->dir);
}

/* A fresh database with one tenant, "acme". */
static int suite_setup(void **state) {
    suite_fixture *f = SP_TEST_FIXTURE_NEW(suite_fixture, dir, "sp-store");
    if (f == NULL) return -1;
    *state = f;
    if (!suite_new_database(f->url, sizeof f->url, f->dir) || sp_store_open(f->url, &f->s) != SP_OK ||
        sp_store_tenant_create(f->s, "acme", "{}", 2, T0) != SP_OK) {
        (void)suite_teardown(state);
        return -1;
    }
    return 0;
}

/* ---- helpers ---- */

static sp_store_pii suite_pii(const char *field, const char *blob, const char *index) {
    sp_store_pii p = {field, (const uint8_t *)blob, strlen(blob), (const uint8_t *)index, index ? strlen(index) : 0};
    return p;
}

static bool suite_upsert(sp_store *s, const char *tenant, const char *id, const char *attrs, const sp_store_pii *pii,
                         size_t n, int64_t now) {
    sp_store_profile p = {tenant, id, attrs, strlen(attrs), pii, n};
    bool created = false;
    assert_ok(sp_store_profile_upsert(s, &p, now, &created));
    return created;
}

static void suite_event(sp_store *s, const char *tenant, const char *id, const char *profile, bool want_inserted) {
    sp_store_event e = {tenant, id, profile, "email.open", T0 * 1000, "{\"k\":1}", 7};
    bool inserted = !want_inserted;
    assert_ok(sp_store_event_insert(s, &e, T0, &inserted));
    assert_int_equal(inserted, want_inserted);
}

static uint64_t suite_profiles(sp_store *s, const char *tenant) {
    uint64_t n = 99;
    assert_ok(sp_store_profile_count(s, tenant, &n));
    return n;
}

static uint64_t suite_events(sp_store *s, const char *tenant, const char *profile) {
    uint64_t n = 99;
    assert_ok(sp_store_event_count(s, tenant, profile, &n));
    return n;
}

static sp_store_credential suite_cred(const char *id, const char *tenant, uint8_t key, uint8_t secret) {
    sp_store_credential c;
    memset(&c, 0, sizeof c);
    memcpy(c.id, id, strlen(id) + 1);
    memcpy(c.tenant, tenant, strlen(tenant) + 1);
    memset(c.client_key_hash, key, sizeof c.client_key_hash);
    memset(c.secret_hash, secret, sizeof c.secret_hash);
    c.created = T0;
    c.expires = T0 + 3600;
    return c;
}

typedef struct {
    char ids[16][SP_STORE_MAX_TENANT + 1];
    size_t n;
    size_t stop_at; /* 0: never */
} suite_names;

static sp_error suite_collect_tenant(void *arg, const sp_store_tenant *t) {
    suite_names *names = arg;
    if (names->stop_at && names->n == names->stop_at) return SP_ERR_UNAVAILABLE;
    if (names->n == 16 || strlen(t->settings) != t->settings_len) return SP_ERR_INVALID_ARGUMENT;
    memcpy(names->ids[names->n++], t->id, sizeof t->id);
    return SP_OK;
}

static sp_error suite_collect_cred(void *arg, const sp_store_credential *c) {
    suite_names *names = arg;
    if (names->n == 16) return SP_ERR_INVALID_ARGUMENT;
    memcpy(names->ids[names->n++], c->id, sizeof c->id);
    return SP_OK;
}

/* ---- tests ---- */

static void test_migrations(void **state) {
    suite_fixture *f = *state;
    int v = sp_store_schema_version(f->s);
    assert_true(v >= 1);
    /* a second open finds the schema in place and keeps the data */
    sp_store *again = NULL;
    assert_ok(sp_store_open(f->url, &again));
    assert_int_equal(sp_store_schema_version(again), v);
    assert_string_equal(sp_store_backend_name(again), sp_store_backend_name(f->s));
    assert_ok(sp_store_ping(again));
    sp_store_tenant t;
    assert_ok(sp_store_tenant_get(again, "acme", &t));
    sp_store_tenant_clear(&t);
    sp_store_close(again);

    /* a schema from a later build is refused, not used */
    suite_set_schema_version(f->url, v + 1);
    sp_store *newer = NULL;
    assert_rc(sp_store_open(f->url, &newer), SP_ERR_SCHEMA);
    assert_null(newer);
}

static void test_tenants(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    const char *settings = "{\"name\":\"Beta\"}";
    assert_ok(sp_store_tenant_create(s, "beta", settings, strlen(settings), T0 + 1));
    assert_rc(sp_store_tenant_create(s, "beta", "{}", 2, T0 + 2), SP_ERR_EXISTS);

    sp_store_tenant t;
    assert_ok(sp_store_tenant_get(s, "beta", &t));
    assert_string_equal(t.id, "beta");
    assert_string_equal(t.settings, settings);
    assert_int_equal(t.settings_len, strlen(settings));
    assert_int_equal(t.created, T0 + 1);
    assert_int_equal(t.updated, T0 + 1);
    assert_false(t.disabled);
    sp_store_tenant_clear(&t);
    assert_null(t.settings);

    assert_ok(sp_store_tenant_update(s, "beta", "{\"name\":\"B\"}", 12, true, T0 + 5));
    assert_ok(sp_store_tenant_get(s, "beta", &t));
    assert_string_equal(t.settings, "{\"name\":\"B\"}");
    assert_true(t.disabled);
    assert_int_equal(t.created, T0 + 1);
    assert_int_equal(t.updated, T0 + 5);
    sp_store_tenant_clear(&t);
    assert_rc(sp_store_tenant_update(s, "nope", "{}", 2, false, T0), SP_ERR_NOT_FOUND);

    /* the output is left alone on failure */
    memset(&t, 0x5a, sizeof t);
    assert_rc(sp_store_tenant_get(s, "nope", &t), SP_ERR_NOT_FOUND);
    assert_int_equal((uint8_t)t.id[0], 0x5a);

    /* paging in id order */
    const char *more[] = {"t-3", "t_1", "t2", "a0"};
    for (size_t i = 0; i < 4; i++) assert_ok(sp_store_tenant_create(s, more[i], "{}", 2, T0));
    const char *order[] = {"a0", "acme", "beta", "t-3", "t2", "t_1"}; /* bytewise: '-' < '2' < '_' */
    suite_names names = {.n = 0};
    char after[SP_STORE_MAX_TENANT + 1] = "";
    size_t pages = 0;
    for (;;) {
        size_t before = names.n;
        assert_ok(sp_store_tenant_list(s, after, 4, suite_collect_tenant, &names));
        if (names.n == before) break;
        memcpy(after, names.ids[names.n - 1], sizeof after);
        pages++;
    }
    assert_int_equal(pages, 2);
    assert_int_equal(names.n, 6);
    for (size_t i = 0; i < 6; i++) assert_string_equal(names.ids[i], order[i]);
    /* a callback's error stops the walk and comes back */
    suite_names stop = {.n = 0, .stop_at = 2};
    assert_rc(sp_store_tenant_list(s, "", 10, suite_collect_tenant, &stop), SP_ERR_UNAVAILABLE);
    assert_int_equal(stop.n, 2);

    assert_ok(sp_store_tenant_delete(s, "beta"));
    assert_rc(sp_store_tenant_get(s, "beta", &t), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_tenant_delete(s, "beta"), SP_ERR_NOT_FOUND);
}

static void test_credentials(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store_credential a = suite_cred(CRED_A, "acme", 0x11, 0x21);
    sp_store_credential b = suite_cred(CRED_B, "acme", 0x11, 0x22); /* a second secret, same client key */
    sp_store_credential admin = suite_cred(CRED_C, "", 0x33, 0x23);
    b.created = T0 + 10;
    b.expires = 0;
    assert_ok(sp_store_credential_add(s, &a));
    assert_ok(sp_store_credential_add(s, &b));
    assert_ok(sp_store_credential_add(s, &admin));
    assert_rc(sp_store_credential_add(s, &a), SP_ERR_EXISTS);
    sp_store_credential ghost = suite_cred("9c4d5e6f-7a8b-4c3d-9e0f-1a2b3c4d5e6f", "ghost", 0x44, 0x24);
    assert_rc(sp_store_credential_add(s, &ghost), SP_ERR_NOT_FOUND);

    sp_store_credential found[SP_STORE_MAX_CREDENTIALS_PER_KEY];
    size_t n = 0;
    assert_ok(sp_store_credential_find(s, a.client_key_hash, found, SP_ARRAY_LEN(found), &n));
    assert_int_equal(n, 2);
    assert_string_equal(found[0].id, CRED_A);
    assert_string_equal(found[0].tenant, "acme");
    assert_memory_equal(found[0].secret_hash, a.secret_hash, SP_STORE_HASH_BYTES);
    assert_int_equal(found[0].expires, T0 + 3600);
    assert_string_equal(found[1].id, CRED_B);
    assert_int_equal(found[1].expires, 0);
    assert_int_equal(found[1].revoked, 0);
    assert_ok(sp_store_credential_find(s, a.client_key_hash, found, 1, &n));
    assert_int_equal(n, 1);
    uint8_t unknown[SP_STORE_HASH_BYTES];
    memset(unknown, 0x99, sizeof unknown);
    assert_ok(sp_store_credential_find(s, unknown, found, SP_ARRAY_LEN(found), &n));
    assert_int_equal(n, 0);

    suite_names names = {.n = 0};
    assert_ok(sp_store_credential_list(s, "acme", suite_collect_cred, &names));
    assert_int_equal(names.n, 2);
    names.n = 0;
    assert_ok(sp_store_credential_list(s, "", suite_collect_cred, &names));
    assert_int_equal(names.n, 1);
    assert_string_equal(names.ids[0], CRED_C);

    /* revoking: only under its own tenant, once (the first time sticks) */
    assert_rc(sp_store_credential_revoke(s, "", CRED_A, T0 + 20), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_credential_revoke(s, "acme", "0e9a5c3b-f712-4d68-b4a1-c6e8207d95fb", T0 + 20),
              SP_ERR_NOT_FOUND);
    assert_ok(sp_store_credential_revoke(s, "acme", CRED_A, T0 + 20));
    assert_ok(sp_store_credential_revoke(s, "acme", CRED_A, T0 + 30));
    assert_ok(sp_store_credential_find(s, a.client_key_hash, found, SP_ARRAY_LEN(found), &n));
    assert_int_equal(found[0].revoked, T0 + 20);
    assert_int_equal(found[1].revoked, 0);

    /* at most SP_STORE_MAX_CREDENTIALS_PER_KEY secrets per client key */
    for (int i = 2; i < SP_STORE_MAX_CREDENTIALS_PER_KEY; i++) {
        char id[37];
        assert_ok(sp_uuid_v4(id));
        sp_store_credential more = suite_cred(id, "acme", 0x11, (uint8_t)i);
        assert_ok(sp_store_credential_add(s, &more));
    }
    char id[37];
    assert_ok(sp_uuid_v4(id));
    sp_store_credential over = suite_cred(id, "acme", 0x11, 0x77);
    assert_rc(sp_store_credential_add(s, &over), SP_ERR_TOO_LARGE);
}

static void test_profiles(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store_pii pii[2] = {suite_pii("email", "blob-email-1", "index-email-1"), suite_pii("phone", "blob-phone-1", NULL)};
    assert_true(suite_upsert(s, "acme", "user 1", "{\"a\":1,\"b\":\"x\",\"n\":0.1}", pii, 2, T0));
    assert_int_equal(suite_profiles(s, "acme"), 1);

    /* an update merges attributes and replaces only the fields given */
    sp_store_pii email2 = suite_pii("email", "blob-email-2", "index-email-2");
    assert_false(suite_upsert(s, "acme", "user 1", "{\"b\":null,\"c\":true}", &email2, 1, T0 + 5));
    assert_int_equal(suite_profiles(s, "acme"), 1);

    sp_store_profile_row row;
    assert_ok(sp_store_profile_get(s, "acme", "user 1", &row));
    assert_string_equal(row.id, "user 1");
    assert_int_equal(row.created, T0);
    assert_int_equal(row.updated, T0 + 5);
    assert_int_equal(strlen(row.attributes), row.attributes_len);
    json_error_t err;
    json_t *attrs = json_loads(row.attributes, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(attrs);
    assert_int_equal(json_object_size(attrs), 4);
    assert_int_equal(json_integer_value(json_object_get(attrs, "a")), 1);
    assert_true(json_is_null(json_object_get(attrs, "b")));
    assert_true(json_is_true(json_object_get(attrs, "c")));
    assert_true(json_real_value(json_object_get(attrs, "n")) == 0.1);
    json_decref(attrs);
    assert_null(strstr(row.attributes, "0.10000")); /* numbers kept as written */
    assert_int_equal(row.n_pii, 2);
    assert_string_equal(row.pii[0].field, "email");
    assert_int_equal(row.pii[0].blob_len, 12);
    assert_memory_equal(row.pii[0].blob, "blob-email-2", 12);
    assert_string_equal(row.pii[1].field, "phone");
    assert_memory_equal(row.pii[1].blob, "blob-phone-1", 12);
    sp_store_profile_row_clear(&row);
    assert_null(row.attributes);
    assert_int_equal(row.n_pii, 0);

    /* a profile without PII, and one in another tenant under the same id */
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    assert_true(suite_upsert(s, "other", "user 1", "{}", NULL, 0, T0));
    assert_ok(sp_store_profile_get(s, "other", "user 1", &row));
    assert_int_equal(row.n_pii, 0);
    assert_string_equal(row.attributes, "{}");
    sp_store_profile_row_clear(&row);
    memset(&row, 0x5a, sizeof row);
    assert_rc(sp_store_profile_get(s, "acme", "nobody", &row), SP_ERR_NOT_FOUND);
    assert_int_equal((uint8_t)row.id[0], 0x5a);

    /* an unknown tenant has no profiles to hold */
    sp_store_profile ghost = {"ghost", "u", "{}", 2, NULL, 0};
    assert_rc(sp_store_profile_upsert(s, &ghost, T0, NULL), SP_ERR_NOT_FOUND);

    /* fields gathered over several upserts stay within SP_VAULT_MAX_PII_FIELDS */
    char names[SP_VAULT_MAX_PII_FIELDS + 1][16];
    for (int i = 0; i <= SP_VAULT_MAX_PII_FIELDS; i++) {
        snprintf(names[i], sizeof names[i], "f%d", i);
        sp_store_pii one = suite_pii(names[i], "blob", NULL);
        sp_store_profile p = {"acme", "many", "{}", 2, &one, 1};
        sp_error rc = sp_store_profile_upsert(s, &p, T0 + i, NULL);
        if (i < SP_VAULT_MAX_PII_FIELDS) assert_ok(rc);
        else assert_rc(rc, SP_ERR_TOO_LARGE);
    }
    assert_ok(sp_store_profile_get(s, "acme", "many", &row));
    assert_int_equal(row.n_pii, SP_VAULT_MAX_PII_FIELDS);
    sp_store_profile_row_clear(&row);
}

static void test_find_by_index(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store_pii same = suite_pii("email", "blob", "index-shared-1");
    suite_upsert(s, "acme", "p1", "{}", &same, 1, T0 + 1);
    suite_upsert(s, "acme", "p3", "{}", &same, 1, T0 + 3);
    suite_upsert(s, "acme", "p2", "{}", &same, 1, T0 + 2);
    char id[SP_STORE_MAX_ID + 1];
    assert_ok(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-shared-1", 14, id));
    assert_string_equal(id, "p3");
    /* p1 written again: now the most recent */
    suite_upsert(s, "acme", "p1", "{}", &same, 1, T0 + 9);
    assert_ok(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-shared-1", 14, id));
    assert_string_equal(id, "p1");
    /* another field, tenant or index finds nothing */
    memcpy(id, "untouched", 10);
    assert_rc(sp_store_profile_find_by_index(s, "acme", "phone", (const uint8_t *)"index-shared-1", 14, id),
              SP_ERR_NOT_FOUND);
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    assert_rc(sp_store_profile_find_by_index(s, "other", "email", (const uint8_t *)"index-shared-1", 14, id),
              SP_ERR_NOT_FOUND);
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-shared-2", 14, id),
              SP_ERR_NOT_FOUND);
    assert_string_equal(id, "untouched");
    /* a replaced index no longer finds the profile */
    sp_store_pii moved = suite_pii("email", "blob", "index-moved-01");
    suite_upsert(s, "acme", "p1", "{}", &moved, 1, T0 + 10);
    assert_ok(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-shared-1", 14, id));
    assert_string_equal(id, "p3");
}

static void test_delete_and_events(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store_pii pii[2] = {suite_pii("email", "blob-e", "index-email-x"), suite_pii("phone", "blob-p", "index-phone-x")};
    suite_upsert(s, "acme", "gone", "{}", pii, 2, T0);
    suite_upsert(s, "acme", "kept", "{}", NULL, 0, T0);
    suite_event(s, "acme", "e1", "gone", true);
    suite_event(s, "acme", "e1", "gone", false); /* retried: counted once */
    suite_event(s, "acme", "e2", "gone", true);
    suite_event(s, "acme", "e3", "kept", true);
    sp_store_event unknown = {"acme", "e4", "nobody", "x", 0, "{}", 2};
    assert_rc(sp_store_event_insert(s, &unknown, T0, NULL), SP_ERR_NOT_FOUND);
    assert_int_equal(suite_events(s, "acme", NULL), 3);
    assert_int_equal(suite_events(s, "acme", "gone"), 2);
    assert_int_equal(suite_events(s, "acme", "kept"), 1);

    assert_ok(sp_store_profile_delete(s, "acme", "gone"));
    assert_rc(sp_store_profile_delete(s, "acme", "gone"), SP_ERR_NOT_FOUND);
    assert_int_equal(suite_profiles(s, "acme"), 1);
    assert_int_equal(suite_events(s, "acme", "gone"), 0);
    assert_int_equal(suite_events(s, "acme", NULL), 1);
    char id[SP_STORE_MAX_ID + 1];
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-email-x", 13, id),
              SP_ERR_NOT_FOUND);
    /* made again under the same id: no PII or events come back with it */
    suite_upsert(s, "acme", "gone", "{}", NULL, 0, T0 + 1);
    sp_store_profile_row row;
    assert_ok(sp_store_profile_get(s, "acme", "gone", &row));
    assert_int_equal(row.n_pii, 0);
    sp_store_profile_row_clear(&row);
    assert_int_equal(suite_events(s, "acme", "gone"), 0);
}

static void test_tenant_delete_takes_everything(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    sp_store_pii pii = suite_pii("email", "blob", "index-email-t");
    suite_upsert(s, "acme", "p", "{}", &pii, 1, T0);
    suite_upsert(s, "other", "p", "{}", &pii, 1, T0);
    suite_event(s, "acme", "e", "p", true);
    suite_event(s, "other", "e", "p", true);
    sp_store_credential c = suite_cred(CRED_A, "acme", 0x11, 0x21);
    sp_store_credential admin = suite_cred(CRED_B, "", 0x12, 0x22);
    assert_ok(sp_store_credential_add(s, &c));
    assert_ok(sp_store_credential_add(s, &admin));
    sp_keyring_storage st;
    assert_ok(sp_store_keyring_storage(f->url, "acme", &st));
    assert_ok(st.lock(st.ctx));
    assert_ok(st.write(st.ctx, (const uint8_t *)"{}", 2));
    assert_ok(st.unlock(st.ctx, true));

    /* inside the caller's transaction: undone by its rollback */
    assert_ok(sp_store_begin(s));
    assert_ok(sp_store_tenant_delete(s, "acme"));
    sp_store_rollback(s);
    assert_int_equal(suite_profiles(s, "acme"), 1);

    assert_ok(sp_store_tenant_delete(s, "acme"));
    assert_int_equal(suite_profiles(s, "acme"), 0);
    assert_int_equal(suite_events(s, "acme", NULL), 0);
    sp_store_credential found[4];
    size_t n = 9;
    assert_ok(sp_store_credential_find(s, c.client_key_hash, found, 4, &n));
    assert_int_equal(n, 0);
    char id[SP_STORE_MAX_ID + 1];
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-email-t", 13, id),
              SP_ERR_NOT_FOUND);
    uint8_t *doc = (uint8_t *)"x";
    size_t len = 9;
    uint64_t gen = 9;
    assert_ok(st.read(st.ctx, &doc, &len, &gen));
    assert_null(doc);
    assert_int_equal(len, 0);
    assert_int_equal(gen, 0);
    st.close(st.ctx);
    /* the other tenant and the admin credential are untouched */
    assert_int_equal(suite_profiles(s, "other"), 1);
    assert_int_equal(suite_events(s, "other", NULL), 1);
    assert_ok(sp_store_credential_find(s, admin.client_key_hash, found, 4, &n));
    assert_int_equal(n, 1);
}

static void test_transactions(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    /* nesting is refused, ending what is not open too; rollback is safe */
    assert_rc(sp_store_commit(s), SP_ERR_INVALID_ARGUMENT);
    sp_store_rollback(s);
    assert_ok(sp_store_begin(s));
    assert_rc(sp_store_begin(s), SP_ERR_INVALID_ARGUMENT);

    /* several writes, rolled back: nothing of them stays */
    assert_ok(sp_store_tenant_create(s, "temp", "{}", 2, T0));
    sp_store_pii pii = suite_pii("email", "blob", "index-rollback");
    suite_upsert(s, "acme", "p", "{}", &pii, 1, T0);
    suite_upsert(s, "temp", "q", "{}", NULL, 0, T0);
    suite_event(s, "acme", "e", "p", true);
    sp_store_credential c = suite_cred(CRED_A, "acme", 0x11, 0x21);
    assert_ok(sp_store_credential_add(s, &c));
    sp_store_rollback(s);
    sp_store_rollback(s);
    sp_store_tenant t;
    assert_rc(sp_store_tenant_get(s, "temp", &t), SP_ERR_NOT_FOUND);
    assert_int_equal(suite_profiles(s, "acme"), 0);
    assert_int_equal(suite_profiles(s, "temp"), 0);
    assert_int_equal(suite_events(s, "acme", NULL), 0);
    sp_store_credential found[2];
    size_t n = 9;
    assert_ok(sp_store_credential_find(s, c.client_key_hash, found, 2, &n));
    assert_int_equal(n, 0);
    char id[SP_STORE_MAX_ID + 1];
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-rollback", 14, id),
              SP_ERR_NOT_FOUND);

    /* the same, committed */
    assert_ok(sp_store_begin(s));
    suite_upsert(s, "acme", "p", "{}", &pii, 1, T0);
    suite_event(s, "acme", "e", "p", true);
    assert_ok(sp_store_commit(s));
    assert_int_equal(suite_profiles(s, "acme"), 1);
    assert_int_equal(suite_events(s, "acme", NULL), 1);
    /* after an error inside a transaction, rollback makes the store usable */
    assert_ok(sp_store_begin(s));
    assert_rc(sp_store_tenant_create(s, "acme", "{}", 2, T0), SP_ERR_EXISTS);
    sp_store_rollback(s);
    assert_ok(sp_store_ping(s));
    assert_int_equal(suite_profiles(s, "acme"), 1);

    /* a read-only transaction: reads work, every kind of write is refused
     * (and leaves nothing), and it ends like any other */
    assert_ok(sp_store_begin_read(s));
    assert_rc(sp_store_begin(s), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_begin_read(s), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-rollback", 14, id));
    assert_string_equal(id, "p");
    assert_rc(sp_store_tenant_create(s, "temp2", "{}", 2, T0), SP_ERR_INVALID_ARGUMENT);
    sp_store_profile pr = {.tenant = "acme", .id = "r", .attributes = "{}", .attributes_len = 2};
    bool created = false;
    assert_rc(sp_store_profile_upsert(s, &pr, T0, &created), SP_ERR_INVALID_ARGUMENT);
    sp_store_event ev = {.tenant = "acme", .id = "e2", .profile_id = "p", .name = "x", .ts = 1,
                         .properties = "{}", .properties_len = 2};
    bool inserted = false;
    assert_rc(sp_store_event_insert(s, &ev, T0, &inserted), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_delete(s, "acme", "p"), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_commit(s));
    assert_int_equal(suite_profiles(s, "acme"), 1);
    assert_int_equal(suite_events(s, "acme", NULL), 1);
    assert_rc(sp_store_tenant_get(s, "temp2", &t), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_begin_read(NULL), SP_ERR_INVALID_ARGUMENT);
}

static void test_arguments(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store *none = NULL;
    char long_tenant[SP_STORE_MAX_TENANT + 2], long_id[SP_STORE_MAX_ID + 2];
    memset(long_tenant, 'a', sizeof long_tenant - 1);
    long_tenant[sizeof long_tenant - 1] = 0;
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    char *big = malloc(SP_STORE_MAX_PROPERTIES + 2);
    assert_non_null(big);
    memset(big, ' ', SP_STORE_MAX_PROPERTIES + 1);
    big[0] = '{';
    big[SP_STORE_MAX_PROPERTIES] = '}';
    big[SP_STORE_MAX_PROPERTIES + 1] = 0;

    /* opening */
    assert_rc(sp_store_open(NULL, &none), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_open(f->url, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_open("", &none), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_open("sqlite:", &none), SP_ERR_BAD_CONFIG);
    assert_rc(sp_store_open("mysql://localhost/x", &none), SP_ERR_BAD_CONFIG);
    assert_rc(sp_store_open(big, &none), SP_ERR_TOO_LARGE);
    assert_null(none);
    assert_rc(sp_store_ping(NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_begin(NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_close(NULL);
    sp_store_rollback(NULL);

    /* tenants */
    const char *bad_tenants[] = {"", "Acme", "a.b", "a b", "é", long_tenant};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_tenants); i++) {
        assert_rc(sp_store_tenant_create(s, bad_tenants[i], "{}", 2, T0), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_store_tenant_delete(s, bad_tenants[i]), SP_ERR_INVALID_ARGUMENT);
    }
    assert_rc(sp_store_tenant_create(NULL, "x", "{}", 2, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, NULL, "{}", 2, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, "x", NULL, 2, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, "x", "{}", 0, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, "x", "{}", 2, 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, "x", "{\0}", 3, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_create(s, "x", big, SP_STORE_MAX_SETTINGS + 1, T0), SP_ERR_TOO_LARGE);
    assert_rc(sp_store_tenant_update(s, "acme", big, SP_STORE_MAX_SETTINGS + 1, false, T0), SP_ERR_TOO_LARGE);
    assert_rc(sp_store_tenant_update(s, "acme", NULL, 2, false, T0), SP_ERR_INVALID_ARGUMENT);
    sp_store_tenant t;
    assert_rc(sp_store_tenant_get(s, "acme", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_get(s, "ACME", &t), SP_ERR_INVALID_ARGUMENT);
    suite_names names = {.n = 0};
    assert_rc(sp_store_tenant_list(s, NULL, 10, suite_collect_tenant, &names), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_list(s, "", 0, suite_collect_tenant, &names), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_list(s, "", SP_STORE_MAX_LIST + 1, suite_collect_tenant, &names),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_list(s, "", 10, NULL, &names), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_tenant_list(s, "A", 10, suite_collect_tenant, &names), SP_ERR_INVALID_ARGUMENT);
    sp_store_tenant_clear(NULL);

    /* credentials */
    sp_store_credential c = suite_cred(CRED_A, "acme", 1, 2);
    sp_store_credential bad = c;
    memcpy(bad.id, "not-a-uuid", 11);
    assert_rc(sp_store_credential_add(s, &bad), SP_ERR_INVALID_ARGUMENT);
    bad = c;
    memset(bad.id, 'a', sizeof bad.id); /* unterminated */
    assert_rc(sp_store_credential_add(s, &bad), SP_ERR_INVALID_ARGUMENT);
    bad = c;
    memcpy(bad.tenant, "Acme", 5);
    assert_rc(sp_store_credential_add(s, &bad), SP_ERR_INVALID_ARGUMENT);
    bad = c;
    bad.created = 0;
    assert_rc(sp_store_credential_add(s, &bad), SP_ERR_INVALID_ARGUMENT);
    bad = c;
    bad.expires = -1;
    assert_rc(sp_store_credential_add(s, &bad), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_add(s, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_credential found[2];
    size_t n = 0;
    assert_rc(sp_store_credential_find(s, NULL, found, 2, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_find(s, c.client_key_hash, NULL, 2, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_find(s, c.client_key_hash, found, 0, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_find(s, c.client_key_hash, found, 2, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_list(s, "A", suite_collect_cred, &names), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_list(s, "acme", NULL, &names), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_revoke(s, "acme", "nope", T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_revoke(s, "acme", CRED_A, 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_credential_revoke(s, NULL, CRED_A, T0), SP_ERR_INVALID_ARGUMENT);

    /* profiles */
    sp_store_pii good = suite_pii("email", "blob", "index-ok");
    sp_store_profile p = {"acme", "u", "{}", 2, &good, 1};
    sp_store_profile q;
    const char *bad_ids[] = {"", "tab\tid", "nul\x7f", long_id};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_ids); i++) {
        q = p;
        q.id = bad_ids[i];
        assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    }
    q = p;
    q.tenant = "A";
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    q = p;
    q.attributes = NULL;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    q = p;
    q.attributes = big;
    q.attributes_len = SP_STORE_MAX_ATTRIBUTES + 1;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_TOO_LARGE);
    q = p;
    q.pii = NULL;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    q = p;
    q.n_pii = SP_VAULT_MAX_PII_FIELDS + 1;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_TOO_LARGE);
    sp_store_pii bad_pii[] = {
        suite_pii("Email", "blob", NULL),      suite_pii("", "blob", NULL),
        suite_pii("e-mail", "blob", NULL),     suite_pii("email", "", NULL),
        suite_pii("email", "blob", "short"),   suite_pii("email", "blob", "an index far too long to be a blind one!"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_pii); i++) {
        q = p;
        q.pii = &bad_pii[i];
        assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    }
    sp_store_pii huge = {"email", (const uint8_t *)big, SP_STORE_MAX_BLOB + 1, NULL, 0};
    q = p;
    q.pii = &huge;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_TOO_LARGE);
    sp_store_pii twice[2] = {good, good};
    q = p;
    q.pii = twice;
    q.n_pii = 2;
    assert_rc(sp_store_profile_upsert(s, &q, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_upsert(s, &p, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_upsert(s, NULL, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    char id[SP_STORE_MAX_ID + 1];
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"short", 5, id),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_find_by_index(s, "acme", "E", (const uint8_t *)"index-ok", 8, id),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", NULL, 8, id), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_find_by_index(s, "acme", "email", (const uint8_t *)"index-ok", 8, NULL),
              SP_ERR_INVALID_ARGUMENT);
    sp_store_profile_row row;
    assert_rc(sp_store_profile_get(s, "acme", "", &row), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_get(s, "acme", "u", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_delete(s, "acme", long_id), SP_ERR_INVALID_ARGUMENT);
    uint64_t count = 0;
    assert_rc(sp_store_profile_count(s, "acme", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_profile_count(s, "", &count), SP_ERR_INVALID_ARGUMENT);
    sp_store_profile_row_clear(NULL);

    /* events */
    sp_store_event e = {"acme", "e", "u", "email.open", T0, "{}", 2};
    sp_store_event ev;
    ev = e;
    ev.name = "has space";
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    ev = e;
    ev.name = "";
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    ev = e;
    ev.id = long_id;
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    ev = e;
    ev.profile_id = NULL;
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    ev = e;
    ev.ts = -1;
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    ev = e;
    ev.properties = big;
    ev.properties_len = SP_STORE_MAX_PROPERTIES + 1;
    assert_rc(sp_store_event_insert(s, &ev, T0, NULL), SP_ERR_TOO_LARGE);
    assert_rc(sp_store_event_insert(s, &e, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_event_count(s, "acme", "", &count), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_event_count(s, "acme", NULL, NULL), SP_ERR_INVALID_ARGUMENT);

    /* the keyring's storage and import */
    sp_keyring_storage st;
    assert_rc(sp_store_keyring_storage(f->url, "bad name", &st), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_keyring_storage(f->url, "acme", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_keyring_storage(NULL, "acme", &st), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_import_keyring_file(f->url, NULL, &n), SP_ERR_INVALID_ARGUMENT);

    /* nothing above reached the database */
    assert_int_equal(suite_profiles(s, "acme"), 0);
    assert_int_equal(suite_events(s, "acme", NULL), 0);
    free(big);
}

/* open + upsert + get with the n-th allocation failing, for every n until
 * all three succeed: each failure is SP_ERR_NO_MEMORY and leaks nothing. */
static void test_allocation_failures(void **state) {
    suite_fixture *f = *state;
    sp_store_pii pii[2] = {suite_pii("email", "blob-email", "index-email-a"), suite_pii("phone", "blob-phone", NULL)};
    size_t failures = 0;
    uint64_t n;
    for (n = 1; n < 10000; n++) {
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_store *s = NULL;
        sp_store_profile_row row;
        memset(&row, 0, sizeof row);
        sp_store_profile p = {"acme", "faulty", "{\"k\":1}", 7, pii, 2};
        sp_error rc = sp_store_open(f->url, &s);
        if (rc == SP_OK) rc = sp_store_profile_upsert(s, &p, T0 + (int64_t)n, NULL);
        if (rc == SP_OK) rc = sp_store_profile_get(s, "acme", "faulty", &row);
        bool reached = sp_test_fault_disarm(fault);
        if (rc != SP_OK) {
            failures++;
            if (rc != SP_ERR_NO_MEMORY) fail_msg("allocation %llu failed: %s", (unsigned long long)n, sp_error_name(rc));
        } else {
            assert_int_equal(row.n_pii, 2);
        }
        sp_store_profile_row_clear(&row);
        sp_store_close(s);
        if (!reached) {
            assert_ok(rc);
            break;
        }
    }
    assert_true(n < 10000);
    assert_true(failures > 0);
    assert_int_equal(suite_profiles(f->s, "acme"), 1);
}

/* A worker process: `rounds` transactions of 5 upserts and 5 events over
 * ids shared with the other worker, retried on SP_ERR_CONFLICT. Exits 0 on
 * success; cmocka is the parent's. */
static void suite_worker(const char *url, int who, int rounds) {
    sp_store *s = NULL;
    if (sp_store_open(url, &s) != SP_OK) _exit(10);
    for (int r = 0; r < rounds; r++) {
        for (int attempt = 0;; attempt++) {
            if (attempt > 50) _exit(11);
            sp_error rc = sp_store_begin(s);
            for (int i = 0; rc == SP_OK && i < 5; i++) {
                char id[32], ev[32];
                snprintf(id, sizeof id, "shared-%d", (r * 5 + i) % 40);
                snprintf(ev, sizeof ev, "w%d-%d-%d", who, r, i);
                sp_store_profile p = {"acme", id, "{\"w\":1}", 7, NULL, 0};
                rc = sp_store_profile_upsert(s, &p, T0 + r, NULL);
                sp_store_event e = {"acme", ev, id, "x", 0, "{}", 2};
                if (rc == SP_OK) rc = sp_store_event_insert(s, &e, T0, NULL);
            }
            if (rc == SP_OK) rc = sp_store_commit(s);
            else sp_store_rollback(s);
            if (rc == SP_OK) break;
            if (rc != SP_ERR_CONFLICT) _exit(12);
        }
    }
    sp_store_close(s);
    _exit(0);
}

static void test_two_connections(void **state) {
    suite_fixture *f = *state;
    sp_store *other = NULL;
    assert_ok(sp_store_open(f->url, &other));
    /* uncommitted writes are this connection's own until commit */
    assert_ok(sp_store_begin(f->s));
    suite_upsert(f->s, "acme", "seen", "{}", NULL, 0, T0);
    assert_int_equal(suite_profiles(other, "acme"), 0);
    assert_ok(sp_store_commit(f->s));
    assert_int_equal(suite_profiles(other, "acme"), 1);
    sp_store_profile_row row;
    assert_ok(sp_store_profile_get(other, "acme", "seen", &row));
    sp_store_profile_row_clear(&row);
    sp_store_close(other);

    /* two processes writing the same rows at once: every transaction lands
     * (after waiting or retrying), none half */
    enum { ROUNDS = 20 };
    pid_t a = sp_test_fork();
    if (a == 0) suite_worker(f->url, 1, ROUNDS);
    pid_t b = sp_test_fork();
    if (b == 0) suite_worker(f->url, 2, ROUNDS);
    assert_int_equal(sp_test_wait(a), 0);
    assert_int_equal(sp_test_wait(b), 0);
    assert_int_equal(suite_profiles(f->s, "acme"), 1 + 40);
    assert_int_equal(suite_events(f->s, "acme", NULL), 2 * ROUNDS * 5);
}

static void test_keyring_storage(void **state) {
    suite_fixture *f = *state;
    sp_keyring_storage one, two;
    assert_ok(sp_store_keyring_storage(f->url, "Tenant.A", &one));
    assert_ok(sp_store_keyring_storage(f->url, "Tenant.A", &two));
    uint8_t *doc = NULL;
    size_t len = 0;
    uint64_t gen = 99, g2 = 99;
    assert_ok(one.read(one.ctx, &doc, &len, &gen));
    assert_null(doc);
    assert_int_equal(gen, 0);
    assert_ok(one.generation(one.ctx, &g2));
    assert_int_equal(g2, 0);

    /* a write is seen by the other connection only once committed */
    assert_ok(one.lock(one.ctx));
    assert_ok(one.write(one.ctx, (const uint8_t *)"first", 5));
    assert_ok(two.read(two.ctx, &doc, &len, &gen));
    assert_null(doc);
    assert_ok(one.unlock(one.ctx, true));
    assert_ok(two.read(two.ctx, &doc, &len, &gen));
    assert_non_null(doc);
    assert_int_equal(len, 5);
    assert_memory_equal(doc, "first", 5);
    two.free_doc(two.ctx, doc, len);
    uint64_t g_first = gen;
    assert_true(g_first > 0);
    assert_ok(one.generation(one.ctx, &g2));
    assert_int_equal(g2, g_first);

    /* every write moves the generation; an abandoned one changes nothing */
    assert_ok(two.lock(two.ctx));
    assert_ok(two.write(two.ctx, (const uint8_t *)"second", 6));
    assert_ok(two.unlock(two.ctx, true));
    assert_ok(one.read(one.ctx, &doc, &len, &gen));
    assert_memory_equal(doc, "second", 6);
    one.free_doc(one.ctx, doc, len);
    assert_int_equal(gen, g_first + 1);
    assert_ok(one.lock(one.ctx));
    assert_ok(one.write(one.ctx, (const uint8_t *)"dropped", 7));
    assert_ok(one.unlock(one.ctx, false));
    assert_ok(two.generation(two.ctx, &g2));
    assert_int_equal(g2, g_first + 1);
    /* rows are per tenant */
    sp_keyring_storage other;
    assert_ok(sp_store_keyring_storage(f->url, "Tenant.B", &other));
    assert_ok(other.read(other.ctx, &doc, &len, &gen));
    assert_null(doc);
    other.close(other.ctx);
    one.close(one.ctx);
    two.close(two.ctx);
}

static void test_import_keyring_file(void **state) {
    suite_fixture *f = *state;
    char kms_config[400], path[300];
    snprintf(kms_config, sizeof kms_config, "local:path=%s/master.key;create=1", f->dir);
    snprintf(path, sizeof path, "%s/keyring.json", f->dir);
    sp_kms *kms = NULL;
    sp_keyring *file = NULL;
    assert_ok(sp_kms_open(kms_config, &kms));
    assert_ok(sp_keyring_open(path, kms, &file));
    char va[37], vb[37], vb2[37];
    assert_ok(sp_keyring_rotate(file, "acme", "sms", T0, va));
    assert_ok(sp_keyring_rotate(file, "beta", "sms", T0, vb));
    assert_ok(sp_keyring_rotate(file, "beta", "email", T0 + 1, vb2));
    assert_ok(sp_keyring_set_min_version(file, "beta", "sms", vb, T0 + 2));
    sp_key *want = NULL;
    assert_ok(sp_keyring_unwrap(file, "beta", "email", vb2, &want));

    size_t imported = 99;
    assert_ok(sp_store_import_keyring_file(f->url, path, &imported));
    assert_int_equal(imported, 2);
    assert_ok(sp_store_import_keyring_file(f->url, path, &imported));
    assert_int_equal(imported, 0);

    /* each row holds its tenant's keys only, usable as they were */
    sp_keyring_storage st;
    sp_keyring *kr = NULL;
    assert_ok(sp_store_keyring_storage(f->url, "beta", &st));
    assert_ok(sp_keyring_open_storage(&st, kms, &kr));
    assert_int_equal(sp_keyring_count(kr), 2);
    sp_keyring_entry e;
    assert_rc(sp_keyring_find(kr, "acme", "sms", va, &e), SP_ERR_NOT_FOUND);
    sp_key *got = NULL;
    assert_ok(sp_keyring_unwrap(kr, "beta", "email", vb2, &got));
    sp_test_assert_same_key(want, got);
    sp_key_free(got);
    sp_key_free(want);
    sp_keyring_close(kr);
    assert_ok(sp_store_keyring_storage(f->url, "acme", &st));
    assert_ok(sp_keyring_open_storage(&st, kms, &kr));
    assert_int_equal(sp_keyring_count(kr), 1);
    sp_keyring_close(kr);

    sp_keyring_close(file);
    sp_kms_close(kms);
    char missing[320];
    snprintf(missing, sizeof missing, "%s/missing.json", f->dir);
    /* a file that is not there is reported, not imported as empty (nor made) */
    imported = 99;
    assert_rc(sp_store_import_keyring_file(f->url, missing, &imported), SP_ERR_NOT_FOUND);
    assert_int_equal(imported, 99);
    assert_int_equal(access(missing, F_OK), -1);
}

#define SUITE_TEST(fn) cmocka_unit_test_setup_teardown(fn, suite_setup, suite_teardown)
#define SUITE_TESTS                                                                                              \
    SUITE_TEST(test_migrations), SUITE_TEST(test_tenants), SUITE_TEST(test_credentials), SUITE_TEST(test_profiles), \
        SUITE_TEST(test_find_by_index), SUITE_TEST(test_delete_and_events),                                      \
        SUITE_TEST(test_tenant_delete_takes_everything), SUITE_TEST(test_transactions), SUITE_TEST(test_arguments), \
        SUITE_TEST(test_allocation_failures), SUITE_TEST(test_two_connections), SUITE_TEST(test_keyring_storage), \
        SUITE_TEST(test_import_keyring_file)

#endif
