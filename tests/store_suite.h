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
 *       records `version` in schema_version behind the store's back;
 *   static void suite_downgrade_to_1(const char *url);
static void suite_downgrade_to_2(const char *url);
 *       takes the objects of schema versions 2 and 3 away, as a version 1
 *       database;
 *   static void suite_downgrade_to_2(const char *url);
 *       takes schema version 3's objects away, as a version 2 database.
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
static void suite_downgrade_to_1(const char *url);
static void suite_downgrade_to_2(const char *url);

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

/* Several profiles at once equal what one at a time gives: attributes,
 * times and every PII field in field order; a missing id, another
 * tenant's and an id given twice; ids with the characters a JSON array or
 * a text[] must escape. */
static void test_profile_get_many(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    sp_store_pii pii[2] = {suite_pii("phone", "blob-phone", NULL), suite_pii("email", "blob-email", "index-many")};
    assert_true(suite_upsert(s, "acme", "with \"pii\"", "{\"a\":1}", pii, 2, T0));
    assert_true(suite_upsert(s, "acme", "back\\slash, {x}", "{}", NULL, 0, T0 + 1));
    assert_true(suite_upsert(s, "acme", "one", "{\"b\":[1,2]}", &pii[0], 1, T0 + 2));
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    assert_true(suite_upsert(s, "other", "theirs", "{}", NULL, 0, T0));

    const char *ids[] = {"one", "nobody", "with \"pii\"", "theirs", "back\\slash, {x}", "one"};
    enum { N = sizeof ids / sizeof ids[0] };
    sp_store_profile_row rows[N];
    bool found[N];
    assert_ok(sp_store_profile_get_many(s, "acme", ids, N, rows, found));
    const bool expect[N] = {true, false, true, false, true, true};
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(found[i], expect[i]);
        if (!found[i]) {
            assert_null(rows[i].attributes);
            assert_int_equal(rows[i].n_pii, 0);
            continue;
        }
        sp_store_profile_row one;
        assert_ok(sp_store_profile_get(s, "acme", ids[i], &one));
        assert_string_equal(rows[i].id, one.id);
        assert_string_equal(rows[i].attributes, one.attributes);
        assert_int_equal(rows[i].attributes_len, one.attributes_len);
        assert_int_equal(rows[i].created, one.created);
        assert_int_equal(rows[i].updated, one.updated);
        assert_int_equal(rows[i].n_pii, one.n_pii);
        for (size_t k = 0; k < one.n_pii; k++) {
            assert_string_equal(rows[i].pii[k].field, one.pii[k].field);
            assert_int_equal(rows[i].pii[k].blob_len, one.pii[k].blob_len);
            assert_memory_equal(rows[i].pii[k].blob, one.pii[k].blob, one.pii[k].blob_len);
        }
        sp_store_profile_row_clear(&one);
    }
    assert_int_equal(rows[2].n_pii, 2);
    assert_string_equal(rows[2].pii[0].field, "email");
    assert_int_equal(rows[4].n_pii, 0);
    for (size_t i = 0; i < N; i++) sp_store_profile_row_clear(&rows[i]);

    /* the limits */
    assert_rc(sp_store_profile_get_many(s, "acme", ids, 0, rows, found), SP_ERR_INVALID_ARGUMENT);
    const char *bad[] = {"one", ""};
    assert_rc(sp_store_profile_get_many(s, "acme", bad, 2, rows, found), SP_ERR_INVALID_ARGUMENT);
    static const char *many[SP_STORE_MAX_BATCH + 1];
    static sp_store_profile_row many_rows[SP_STORE_MAX_BATCH + 1];
    static bool many_found[SP_STORE_MAX_BATCH + 1];
    /* the longest id, every byte escaped: the largest array there is */
    char longest[SP_STORE_MAX_ID + 1];
    memset(longest, '\\', SP_STORE_MAX_ID);
    longest[SP_STORE_MAX_ID] = 0;
    assert_true(suite_upsert(s, "acme", longest, "{}", NULL, 0, T0));
    for (size_t i = 0; i <= SP_STORE_MAX_BATCH; i++) many[i] = i % 2 ? longest : "nobody";
    assert_rc(sp_store_profile_get_many(s, "acme", many, SP_STORE_MAX_BATCH + 1, many_rows, many_found),
              SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_profile_get_many(s, "acme", many, SP_STORE_MAX_BATCH, many_rows, many_found));
    for (size_t i = 0; i < SP_STORE_MAX_BATCH; i++) {
        assert_int_equal(many_found[i], i % 2 == 1);
        if (many_found[i]) assert_string_equal(many_rows[i].id, longest);
        sp_store_profile_row_clear(&many_rows[i]);
    }
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

/* ---- channels, campaigns and the outbox (schema version 2) ---- */

#define MS0 (T0 * 1000) /* the outbox's clock */

static void suite_channel(sp_store *s, const char *tenant, const char *id) {
    const char *config = "{\"endpoint\":\"https://provider.example/send\"}";
    sp_store_channel c = {tenant, id, SP_STORE_CHANNEL_SMS, config, strlen(config), NULL, 0};
    assert_ok(sp_store_channel_put(s, &c, T0, NULL));
}

static void suite_campaign(sp_store *s, const char *tenant, const char *id, const char *channel) {
    const char *spec = "{\"template\":\"Hi {{first_name}}\",\"audience\":\"all\"}";
    sp_store_campaign c = {tenant, id, channel, spec, strlen(spec), SP_STORE_CAMPAIGN_DRAFT, 0};
    assert_ok(sp_store_campaign_create(s, &c, T0));
}

static sp_store_outbox_counts suite_counts(sp_store *s, const char *tenant, const char *campaign) {
    sp_store_outbox_counts c;
    memset(&c, 0x5a, sizeof c);
    assert_ok(sp_store_outbox_counts_get(s, tenant, campaign, &c));
    return c;
}

static uint64_t suite_expand_all(sp_store *s, const char *tenant, const char *campaign, int64_t now) {
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
    uint64_t added = 99;
    assert_ok(sp_store_outbox_expand(s, tenant, campaign, &all, now, &added));
    return added;
}

/* What claims hand out, kept by the test. */
typedef struct {
    sp_store_outbox_msg msgs[64];
    uint64_t seqs[64];
    size_t n;
    size_t fail_at; /* 1-based; 0: never */
} suite_claimed;

static sp_error suite_take(void *arg, const sp_store_outbox_msg *m) {
    suite_claimed *c = arg;
    if (c->fail_at && c->n + 1 == c->fail_at) return SP_ERR_UNAVAILABLE;
    if (c->n == 64) return SP_ERR_TOO_LARGE;
    c->msgs[c->n] = *m;
    c->seqs[c->n++] = m->seq;
    return SP_OK;
}

static size_t suite_claim(sp_store *s, const char *owner, int64_t now, int64_t lease, size_t max, suite_claimed *c) {
    memset(c, 0, sizeof *c);
    size_t n = 99;
    assert_ok(sp_store_outbox_claim(s, owner, now, lease, max, suite_take, c, &n));
    assert_int_equal(n, c->n);
    return n;
}

static sp_store_outbox_row suite_message(sp_store *s, const char *message_id) {
    sp_store_outbox_row r;
    assert_ok(sp_store_outbox_get(s, message_id, &r));
    return r;
}

/* A database made at schema version 1 (the version 2 objects taken away
 * behind the store's back) is brought to the current version on open, and
 * keeps what it held. */
static void test_migration_to_outbox(void **state) {
    suite_fixture *f = *state;
    suite_upsert(f->s, "acme", "kept", "{\"plan\":\"pro\"}", NULL, 0, T0);
    sp_store_close(f->s);
    f->s = NULL;
    suite_downgrade_to_1(f->url);
    assert_ok(sp_store_open(f->url, &f->s));
    assert_int_equal(sp_store_schema_version(f->s), 5);
    assert_int_equal(suite_profiles(f->s, "acme"), 1);
    suite_channel(f->s, "acme", "sms");
    suite_campaign(f->s, "acme", "c1", "sms");
    assert_int_equal(suite_expand_all(f->s, "acme", "c1", MS0), 1);
    assert_int_equal(suite_counts(f->s, "acme", "c1").queued, 1);
    /* and version 3's: a suppression, a webhook-id */
    assert_ok(sp_store_suppress(f->s, "acme", "kept", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    bool fresh = false;
    assert_ok(sp_store_callback_record(f->s, "acme", "wh", MS0, &fresh));
    assert_true(fresh);
}

typedef struct {
    char ids[8][SP_STORE_MAX_NAME + 1];
    size_t n;
} suite_ids;

static sp_error suite_collect_channel(void *arg, const sp_store_channel_row *c) {
    suite_ids *ids = arg;
    if (ids->n == 8 || c->config_len == 0 || c->kind != SP_STORE_CHANNEL_SMS) return SP_ERR_INVALID_ARGUMENT;
    memcpy(ids->ids[ids->n++], c->id, sizeof c->id);
    return SP_OK;
}

static sp_error suite_collect_campaign(void *arg, const sp_store_campaign_row *c) {
    suite_ids *ids = arg;
    if (ids->n == 8 || c->spec_len == 0) return SP_ERR_INVALID_ARGUMENT;
    memcpy(ids->ids[ids->n++], c->id, sizeof c->id);
    return SP_OK;
}

static sp_error suite_collect_due(void *arg, const char *tenant, const char *id) {
    suite_ids *ids = arg;
    if (ids->n == 8 || strcmp(tenant, "acme") != 0) return SP_ERR_INVALID_ARGUMENT;
    snprintf(ids->ids[ids->n++], sizeof ids->ids[0], "%s", id);
    return SP_OK;
}

static void test_channels(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    const uint8_t sealed[] = {0x00, 0x01, 0xfe, 0xff, 0x00, 0x42};
    sp_store_channel c = {"acme", "email-main", SP_STORE_CHANNEL_EMAIL, "{\"a\":1}", 7, sealed, sizeof sealed};
    bool created = false;
    assert_ok(sp_store_channel_put(s, &c, T0, &created));
    assert_true(created);
    sp_store_channel_row row;
    assert_ok(sp_store_channel_get(s, "acme", "email-main", &row));
    assert_string_equal(row.id, "email-main");
    assert_int_equal(row.kind, SP_STORE_CHANNEL_EMAIL);
    assert_string_equal(row.config, "{\"a\":1}");
    assert_int_equal(row.secrets_len, sizeof sealed);
    assert_memory_equal(row.secrets, sealed, sizeof sealed);
    assert_int_equal(row.created, T0);
    assert_int_equal(row.updated, T0);
    sp_store_channel_row_clear(&row);
    assert_null(row.secrets);

    /* replaced: everything but created, the secrets removed */
    c.config = "{\"a\":2}";
    c.secrets = NULL;
    c.secrets_len = 0;
    c.kind = SP_STORE_CHANNEL_SMS;
    assert_ok(sp_store_channel_put(s, &c, T0 + 5, &created));
    assert_false(created);
    assert_ok(sp_store_channel_get(s, "acme", "email-main", &row));
    assert_string_equal(row.config, "{\"a\":2}");
    assert_null(row.secrets);
    assert_int_equal(row.kind, SP_STORE_CHANNEL_SMS);
    assert_int_equal(row.created, T0);
    assert_int_equal(row.updated, T0 + 5);
    sp_store_channel_row_clear(&row);
    memset(&row, 0x5a, sizeof row);
    assert_rc(sp_store_channel_get(s, "acme", "nope", &row), SP_ERR_NOT_FOUND);
    assert_int_equal((uint8_t)row.id[0], 0x5a);
    sp_store_channel ghost = {"ghost", "x", SP_STORE_CHANNEL_SMS, "{}", 2, NULL, 0};
    assert_rc(sp_store_channel_put(s, &ghost, T0, NULL), SP_ERR_NOT_FOUND);

    /* paging in id order, per tenant */
    suite_channel(s, "acme", "b");
    suite_channel(s, "acme", "a");
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    suite_channel(s, "other", "a");
    suite_ids ids = {.n = 0};
    assert_ok(sp_store_channel_list(s, "acme", "", 2, suite_collect_channel, &ids));
    assert_ok(sp_store_channel_list(s, "acme", ids.ids[1], 2, suite_collect_channel, &ids));
    assert_int_equal(ids.n, 3);
    assert_string_equal(ids.ids[0], "a");
    assert_string_equal(ids.ids[1], "b");
    assert_string_equal(ids.ids[2], "email-main");

    /* in use by a campaign: refused until the campaign goes */
    suite_campaign(s, "acme", "camp", "a");
    assert_rc(sp_store_channel_delete(s, "acme", "a"), SP_ERR_EXISTS);
    assert_ok(sp_store_campaign_delete(s, "acme", "camp"));
    /* in use by a test send still queued: refused until it is finished */
    suite_upsert(s, "acme", "p1", "{}", NULL, 0, T0);
    char mid[SP_STORE_MAX_MESSAGE_ID + 1];
    uint64_t seq = 0;
    assert_ok(sp_store_outbox_enqueue(s, "acme", "a", "p1", NULL, MS0, mid, &seq));
    assert_rc(sp_store_channel_delete(s, "acme", "a"), SP_ERR_EXISTS);
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w1", MS0, 1000, 10, &got), 1);
    assert_rc(sp_store_channel_delete(s, "acme", "a"), SP_ERR_EXISTS);
    uint64_t changed = 0;
    assert_ok(sp_store_outbox_done(s, "w1", &seq, 1, MS0 + 1, &changed));
    assert_int_equal(changed, 1);
    assert_ok(sp_store_channel_delete(s, "acme", "a"));
    /* its finished test sends went with it; the other tenant's "a" stays */
    sp_store_outbox_row r;
    assert_rc(sp_store_outbox_get(s, mid, &r), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_channel_delete(s, "acme", "a"), SP_ERR_NOT_FOUND);
    assert_ok(sp_store_channel_get(s, "other", "a", &row));
    sp_store_channel_row_clear(&row);

    /* the tenant's delete takes channels, campaigns and messages */
    suite_campaign(s, "acme", "camp2", "b");
    assert_int_equal(suite_expand_all(s, "acme", "camp2", MS0), 1);
    assert_ok(sp_store_outbox_enqueue(s, "acme", "b", "p1", "msg_test-1", MS0, NULL, NULL));
    assert_ok(sp_store_tenant_delete(s, "acme"));
    assert_rc(sp_store_channel_get(s, "acme", "b", &row), SP_ERR_NOT_FOUND);
    sp_store_campaign_row cr;
    assert_rc(sp_store_campaign_get(s, "acme", "camp2", &cr), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_outbox_get(s, "msg_test-1", &r), SP_ERR_NOT_FOUND);
    sp_store_outbox_counts n = suite_counts(s, "acme", NULL);
    assert_int_equal(n.queued + n.sending + n.sent + n.failed + n.dead, 0);
}

static void test_campaigns(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    const char *spec = "{\"template\":\"x\"}";
    sp_store_campaign c = {"acme", "spring", "sms", spec, strlen(spec), SP_STORE_CAMPAIGN_SCHEDULED, MS0 + 60000};
    assert_ok(sp_store_campaign_create(s, &c, T0));
    assert_rc(sp_store_campaign_create(s, &c, T0), SP_ERR_EXISTS);
    sp_store_campaign bad = c;
    bad.id = "other";
    bad.channel = "nope";
    assert_rc(sp_store_campaign_create(s, &bad, T0), SP_ERR_NOT_FOUND);
    bad.channel = "sms";
    bad.send_at_ms = 0; /* scheduled, but for no time */
    assert_rc(sp_store_campaign_create(s, &bad, T0), SP_ERR_INVALID_ARGUMENT);
    bad.state = SP_STORE_CAMPAIGN_SENDING;
    assert_rc(sp_store_campaign_create(s, &bad, T0), SP_ERR_INVALID_ARGUMENT);

    sp_store_campaign_row row;
    assert_ok(sp_store_campaign_get(s, "acme", "spring", &row));
    assert_string_equal(row.id, "spring");
    assert_string_equal(row.channel, "sms");
    assert_string_equal(row.spec, spec);
    assert_int_equal(row.state, SP_STORE_CAMPAIGN_SCHEDULED);
    assert_int_equal(row.send_at_ms, MS0 + 60000);
    assert_int_equal(row.total, 0);
    sp_store_campaign_row_clear(&row);
    assert_null(row.spec);

    /* due only once its time has come, and only while scheduled */
    suite_campaign(s, "acme", "draft", "sms");
    suite_ids ids = {.n = 0};
    assert_ok(sp_store_campaign_due(s, MS0 + 59999, 10, suite_collect_due, &ids));
    assert_int_equal(ids.n, 0);
    assert_ok(sp_store_campaign_due(s, MS0 + 60000, 10, suite_collect_due, &ids));
    assert_int_equal(ids.n, 1);
    assert_string_equal(ids.ids[0], "spring");
    ids.n = 0;
    assert_ok(sp_store_campaign_list(s, "acme", "", 10, suite_collect_campaign, &ids));
    assert_int_equal(ids.n, 2);
    assert_string_equal(ids.ids[0], "draft");
    assert_string_equal(ids.ids[1], "spring");

    /* the life cycle */
    sp_store_campaign_state was = 0;
    assert_rc(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_DONE, T0, &was),
              SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_store_campaign_set_state(s, "acme", "draft", SP_STORE_CAMPAIGN_SCHEDULED, T0, &was),
              SP_ERR_INVALID_ARGUMENT); /* no send_at */
    assert_ok(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_QUEUED, T0 + 1, &was));
    assert_int_equal(was, SP_STORE_CAMPAIGN_SCHEDULED);
    assert_ok(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_QUEUED, T0 + 2, &was));
    assert_int_equal(was, SP_STORE_CAMPAIGN_QUEUED); /* a second scheduler: nothing to do */
    assert_rc(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_DRAFT, T0, NULL),
              SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_store_campaign_delete(s, "acme", "spring"), SP_ERR_ILLEGAL_TRANSITION);
    assert_ok(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_SENDING, T0 + 3, NULL));
    assert_ok(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_DONE, T0 + 4, NULL));
    assert_rc(sp_store_campaign_set_state(s, "acme", "spring", SP_STORE_CAMPAIGN_CANCELLED, T0, NULL),
              SP_ERR_ILLEGAL_TRANSITION);
    assert_ok(sp_store_campaign_get(s, "acme", "spring", &row));
    assert_int_equal(row.state, SP_STORE_CAMPAIGN_DONE);
    assert_int_equal(row.updated, T0 + 4);
    assert_int_equal(row.created, T0);
    sp_store_campaign_row_clear(&row);
    assert_rc(sp_store_campaign_set_state(s, "acme", "nope", SP_STORE_CAMPAIGN_DONE, T0, NULL), SP_ERR_NOT_FOUND);

    /* cancelling fails the queued messages; the one being sent finishes,
     * and a retry of it does not queue it again */
    suite_upsert(s, "acme", "p1", "{}", NULL, 0, T0);
    suite_upsert(s, "acme", "p2", "{}", NULL, 0, T0);
    suite_upsert(s, "acme", "p3", "{}", NULL, 0, T0);
    assert_int_equal(suite_expand_all(s, "acme", "draft", MS0), 3);
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w1", MS0, 1000, 1, &got), 1);
    assert_ok(sp_store_campaign_set_state(s, "acme", "draft", SP_STORE_CAMPAIGN_CANCELLED, T0 + 5, NULL));
    sp_store_outbox_counts n = suite_counts(s, "acme", "draft");
    assert_int_equal(n.failed, 2);
    assert_int_equal(n.sending, 1);
    assert_int_equal(n.queued, 0);
    uint64_t changed = 0;
    assert_ok(sp_store_outbox_retry(s, "w1", got.seqs, 1, MS0 + 10, "SP_ERR_NETWORK", 0, 5, MS0 + 1, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(suite_counts(s, "acme", "draft").failed, 3);
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
    assert_rc(sp_store_outbox_expand(s, "acme", "draft", &all, MS0, NULL), SP_ERR_ILLEGAL_TRANSITION);
    /* a cancelled campaign may go, and its messages with it */
    assert_ok(sp_store_campaign_delete(s, "acme", "draft"));
    assert_rc(sp_store_campaign_delete(s, "acme", "draft"), SP_ERR_NOT_FOUND);
    assert_int_equal(suite_counts(s, "acme", NULL).failed, 0);
}

static void test_outbox_expand(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    suite_upsert(s, "acme", "p1", "{\"plan\":\"pro\",\"age\":30}", NULL, 0, T0);
    suite_upsert(s, "acme", "p2", "{\"plan\":\"free\",\"age\":30.0}", NULL, 0, T0);
    suite_upsert(s, "acme", "p3", "{\"plan\":\"pro\",\"age\":\"30\"}", NULL, 0, T0);
    suite_upsert(s, "acme", "p4", "{\"plan\":{\"x\":1},\"age\":true,\"n\":1}", NULL, 0, T0);
    suite_upsert(s, "acme", "p 5", "{}", NULL, 0, T0);
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    suite_upsert(s, "other", "p1", "{\"plan\":\"pro\"}", NULL, 0, T0);

    /* everyone, once: again adds nothing */
    suite_campaign(s, "acme", "all", "sms");
    assert_int_equal(suite_expand_all(s, "acme", "all", MS0), 5);
    assert_int_equal(suite_expand_all(s, "acme", "all", MS0), 0);
    suite_upsert(s, "acme", "p6", "{}", NULL, 0, T0);
    assert_int_equal(suite_expand_all(s, "acme", "all", MS0), 1); /* only the newcomer */
    assert_int_equal(suite_counts(s, "acme", "all").queued, 6);
    sp_store_campaign_row row;
    assert_ok(sp_store_campaign_get(s, "acme", "all", &row));
    assert_int_equal(row.total, 6);
    sp_store_campaign_row_clear(&row);

    /* a list of ids: unknown ones skipped, repeats once */
    suite_campaign(s, "acme", "list", "sms");
    const char *list[] = {"p1", "p 5", "nobody", "p1"};
    sp_store_audience ids = {.kind = SP_STORE_AUDIENCE_IDS, .ids = list, .n_ids = 4};
    uint64_t added = 0;
    assert_ok(sp_store_outbox_expand(s, "acme", "list", &ids, MS0, &added));
    assert_int_equal(added, 2);
    assert_ok(sp_store_outbox_expand(s, "acme", "list", &ids, MS0, &added));
    assert_int_equal(added, 0);

    /* an attribute equal to a string: not an object, not another tenant's */
    suite_campaign(s, "acme", "pro", "sms");
    sp_store_audience pro = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = "pro"};
    assert_ok(sp_store_outbox_expand(s, "acme", "pro", &pro, MS0, &added));
    assert_int_equal(added, 2);
    sp_store_audience obj = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = "{\"x\":1}"};
    assert_ok(sp_store_outbox_expand(s, "acme", "pro", &obj, MS0, &added));
    assert_int_equal(added, 0);
    /* equal to a number: 30 and 30.0, not the string "30"; 1 is not true */
    suite_campaign(s, "acme", "thirty", "sms");
    sp_store_audience age = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "age", .number = "3e1"};
    assert_ok(sp_store_outbox_expand(s, "acme", "thirty", &age, MS0, &added));
    assert_int_equal(added, 2);
    sp_store_audience one = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "age", .number = "1"};
    assert_ok(sp_store_outbox_expand(s, "acme", "thirty", &one, MS0, &added));
    assert_int_equal(added, 0);
    sp_store_audience n1 = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "n", .number = "1.0"};
    assert_ok(sp_store_outbox_expand(s, "acme", "thirty", &n1, MS0, &added));
    assert_int_equal(added, 1);
    sp_store_audience str30 = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "age", .text = "30"};
    assert_ok(sp_store_outbox_expand(s, "acme", "thirty", &str30, MS0, &added));
    assert_int_equal(added, 1); /* p3, now in the campaign too */
    assert_int_equal(suite_counts(s, "acme", "thirty").queued, 4);

    /* every message has its own webhook id, and the campaign's channel */
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w1", MS0, 1000, 64, &got), 6 + 2 + 2 + 4);
    for (size_t i = 0; i < got.n; i++) {
        assert_int_equal(strlen(got.msgs[i].message_id), 40);
        assert_memory_equal(got.msgs[i].message_id, "msg_", 4);
        assert_true(sp_uuid_is_valid(got.msgs[i].message_id + 4, 36));
        assert_int_equal(got.msgs[i].message_id[4 + 14], '7'); /* version 7 */
        assert_string_equal(got.msgs[i].channel, "sms");
        assert_string_equal(got.msgs[i].tenant, "acme");
        assert_int_equal(got.msgs[i].attempts, 1);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(got.msgs[i].message_id, got.msgs[j].message_id);
    }
    assert_int_equal(suite_counts(s, "acme", NULL).sending, got.n);

    /* unknown and finished campaigns */
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
    assert_rc(sp_store_outbox_expand(s, "acme", "nope", &all, MS0, &added), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_outbox_expand(s, "other", "all", &all, MS0, &added), SP_ERR_NOT_FOUND);
    assert_ok(sp_store_campaign_set_state(s, "acme", "pro", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_ok(sp_store_campaign_set_state(s, "acme", "pro", SP_STORE_CAMPAIGN_SENDING, T0, NULL));
    assert_ok(sp_store_campaign_set_state(s, "acme", "pro", SP_STORE_CAMPAIGN_DONE, T0, NULL));
    assert_rc(sp_store_outbox_expand(s, "acme", "pro", &all, MS0, &added), SP_ERR_ILLEGAL_TRANSITION);
}

/* sp_store_campaign_expand_page's moves, one page per call. */
static uint64_t suite_page(sp_store *s, const char *campaign, const sp_store_audience *au, size_t n, bool finished) {
    uint64_t added = 99;
    bool done = !finished;
    assert_ok(sp_store_campaign_expand_page(s, "acme", campaign, au, n, MS0, &added, &done));
    assert_int_equal(done, finished);
    return added;
}

static sp_store_campaign_state suite_campaign_state(sp_store *s, const char *id, uint64_t *total) {
    sp_store_campaign_row row;
    assert_ok(sp_store_campaign_get(s, "acme", id, &row));
    sp_store_campaign_state st = row.state;
    if (total) *total = row.total;
    sp_store_campaign_row_clear(&row);
    return st;
}

typedef struct {
    char ids[8][SP_STORE_MAX_NAME + 1];
    size_t n;
} suite_campaign_names;

static sp_error suite_name_one(void *arg, const char *tenant, const char *id) {
    suite_campaign_names *l = arg;
    assert_string_equal(tenant, "acme");
    if (l->n == 8) return SP_ERR_TOO_LARGE;
    snprintf(l->ids[l->n++], sizeof l->ids[0], "%s", id);
    return SP_OK;
}

/* A queued campaign's audience in pages over the profile ids: each page
 * its own transaction, the position kept in the campaign's row (so a
 * second expander or a restarted one goes on where the last stopped), the
 * last page moving the campaign to sending; suppressed profiles, other
 * tenants' and repeats stay out; a cancelled campaign stops; idle
 * expansions are listed for the scheduler. */
static void test_campaign_expand_pages(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    for (int i = 0; i < 25; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%02d", i);
        suite_upsert(s, "acme", id, i % 2 ? "{\"plan\":\"pro\"}" : "{}", NULL, 0, T0);
    }
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    suite_upsert(s, "other", "p99", "{}", NULL, 0, T0);
    assert_ok(sp_store_suppress(s, "acme", "p03", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};

    /* only a queued campaign expands */
    suite_campaign(s, "acme", "c", "sms");
    uint64_t added = 0, total = 0;
    bool finished = false;
    assert_rc(sp_store_campaign_expand_page(s, "acme", "c", &all, 10, MS0, &added, &finished),
              SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_store_campaign_expand_page(s, "acme", "nope", &all, 10, MS0, &added, &finished), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_campaign_expand_page(s, "acme", "c", &all, 0, MS0, &added, &finished),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_expand_page(s, "acme", "c", &all, SP_STORE_MAX_EXPAND_PAGE + 1, MS0, &added,
                                            &finished),
              SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_campaign_set_state(s, "acme", "c", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));

    /* p00..p09 less the suppressed p03, committed and claimable at once */
    assert_int_equal(suite_page(s, "c", &all, 10, false), 9);
    assert_int_equal(suite_campaign_state(s, "c", &total), SP_STORE_CAMPAIGN_QUEUED);
    assert_int_equal(total, 9);
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w1", MS0, 1000, 64, &got), 9);
    /* a newcomer after the position is in, one before it is not */
    suite_upsert(s, "acme", "p005", "{}", NULL, 0, T0);
    suite_upsert(s, "acme", "p30", "{}", NULL, 0, T0);
    assert_int_equal(suite_page(s, "c", &all, 10, false), 10);
    assert_int_equal(suite_page(s, "c", &all, 10, true), 6); /* p20..p24, p30 */
    assert_int_equal(suite_campaign_state(s, "c", &total), SP_STORE_CAMPAIGN_SENDING);
    assert_int_equal(total, 25);
    assert_int_equal(suite_counts(s, "acme", "c").queued, 16);
    /* finished: nothing more, whoever asks */
    assert_int_equal(suite_page(s, "c", &all, 10, true), 0);
    assert_int_equal(suite_counts(s, "acme", "c").queued + suite_counts(s, "acme", "c").sending, 25);

    /* an attribute audience over pages that end exactly at the last
     * profile: the page after finds nothing and finishes */
    sp_store_audience pro = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = "pro"};
    suite_campaign(s, "acme", "pro", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "pro", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    uint64_t sum = 0;
    for (int i = 0; i < 27 / 9; i++) sum += suite_page(s, "pro", &pro, 9, false);
    assert_int_equal(sum + suite_page(s, "pro", &pro, 9, true), 11); /* 12 odd ids, p03 suppressed */
    assert_int_equal(suite_campaign_state(s, "pro", &total), SP_STORE_CAMPAIGN_SENDING);
    assert_int_equal(total, 11);
    sp_store_audience age = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .number = "1"};
    suite_campaign(s, "acme", "num", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "num", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_int_equal(suite_page(s, "num", &age, 1000, true), 0);

    /* a list of ids is one page */
    const char *list[] = {"p01", "p03", "nobody", "p01", "p24"};
    sp_store_audience ids = {.kind = SP_STORE_AUDIENCE_IDS, .ids = list, .n_ids = 5};
    suite_campaign(s, "acme", "list", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "list", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_int_equal(suite_page(s, "list", &ids, 1, true), 2);

    /* two expanders taking turns (another process, or one restarted after
     * a crash) share the position: each profile once */
    suite_campaign(s, "acme", "turns", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "turns", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    sp_store *second = NULL;
    assert_ok(sp_store_open(f->url, &second));
    assert_int_equal(suite_page(s, "turns", &all, 7, false), 6);
    assert_int_equal(suite_page(second, "turns", &all, 7, false), 7);
    assert_int_equal(suite_page(s, "turns", &all, 7, false), 7);
    assert_int_equal(suite_page(second, "turns", &all, 7, true), 6);
    sp_store_close(second);
    assert_int_equal(suite_campaign_state(s, "turns", &total), SP_STORE_CAMPAIGN_SENDING);
    assert_int_equal(total, 26);
    assert_int_equal(suite_counts(s, "acme", "turns").queued, 26);

    /* stopped half way: listed as idle once its row is older than asked */
    suite_campaign(s, "acme", "idle", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "idle", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_int_equal(suite_page(s, "idle", &all, 5, false), 4); /* p00, p005, p01, p02 */
    suite_campaign_names idle = {.n = 0};
    assert_ok(sp_store_campaign_stale(s, T0, 8, suite_name_one, &idle));
    assert_int_equal(idle.n, 0); /* moved at T0: not idle before T0 */
    assert_ok(sp_store_campaign_stale(s, T0 + 30, 8, suite_name_one, &idle));
    assert_int_equal(idle.n, 1);
    assert_string_equal(idle.ids[0], "idle");
    assert_rc(sp_store_campaign_stale(s, T0, 0, suite_name_one, &idle), SP_ERR_INVALID_ARGUMENT);

    /* cancelled half way: the expansion stops, its queued messages fail */
    assert_ok(sp_store_campaign_set_state(s, "acme", "idle", SP_STORE_CAMPAIGN_CANCELLED, T0 + 1, NULL));
    assert_rc(sp_store_campaign_expand_page(s, "acme", "idle", &all, 5, MS0, &added, &finished),
              SP_ERR_ILLEGAL_TRANSITION);
    assert_int_equal(suite_counts(s, "acme", "idle").failed, 4);
    assert_int_equal(suite_counts(s, "acme", "idle").queued, 0);
    idle.n = 0;
    assert_ok(sp_store_campaign_stale(s, T0 + 30, 8, suite_name_one, &idle));
    assert_int_equal(idle.n, 0);
}

/* Pages leased as they are made: each message added is handed over as a
 * claim would hand it and is 'sending' under the expander's lease, so no
 * claim takes it until that runs out; the owner settles it like a claimed
 * one; a handler's failure adds nothing and leaves the position; every
 * audience kind leases. */
static void test_campaign_expand_leased(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    for (int i = 0; i < 12; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%02d", i);
        suite_upsert(s, "acme", id, i % 3 ? "{}" : "{\"plan\":\"pro\",\"n\":3}", NULL, 0, T0);
    }
    assert_ok(sp_store_suppress(s, "acme", "p01", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
    suite_campaign(s, "acme", "c", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "c", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    suite_claimed got;
    memset(&got, 0, sizeof got);
    sp_store_lease lease = {"host:1:x", 60000, suite_take, &got};
    uint64_t added = 0, total = 0;
    bool finished = true;

    /* refused: no handler, a bad owner or lease */
    sp_store_lease bad = lease;
    bad.fn = NULL;
    assert_rc(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, &bad, &added, &finished),
              SP_ERR_INVALID_ARGUMENT);
    bad = lease;
    bad.lease_ms = 0;
    assert_rc(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, &bad, &added, &finished),
              SP_ERR_INVALID_ARGUMENT);
    bad = lease;
    bad.owner = "";
    assert_rc(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, &bad, &added, &finished),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, NULL, &added, &finished),
              SP_ERR_INVALID_ARGUMENT);

    /* a handler that fails on the third message: nothing added, the
     * position unchanged, the same page again next time */
    got.fail_at = 3;
    assert_rc(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, &lease, &added, &finished),
              SP_ERR_UNAVAILABLE);
    assert_int_equal(suite_counts(s, "acme", "c").sending + suite_counts(s, "acme", "c").queued, 0);
    assert_int_equal(suite_campaign_state(s, "c", &total), SP_STORE_CAMPAIGN_QUEUED);
    assert_int_equal(total, 0);
    memset(&got, 0, sizeof got);

    /* p00..p04 less the suppressed p01 */
    assert_ok(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 5, MS0, &lease, &added, &finished));
    assert_int_equal(added, 4);
    assert_false(finished);
    assert_int_equal(got.n, 4);
    const char *want[] = {"p00", "p02", "p03", "p04"};
    for (size_t i = 0; i < got.n; i++) {
        assert_string_equal(got.msgs[i].tenant, "acme");
        assert_string_equal(got.msgs[i].campaign, "c");
        assert_string_equal(got.msgs[i].channel, "sms");
        assert_string_equal(got.msgs[i].profile_id, want[i]);
        assert_int_equal(got.msgs[i].attempts, 1);
        sp_store_outbox_row r = suite_message(s, got.msgs[i].message_id);
        assert_int_equal(r.seq, got.msgs[i].seq);
        assert_int_equal(r.state, SP_STORE_OUTBOX_SENDING);
        assert_string_equal(r.lease_owner, "host:1:x");
        assert_int_equal(r.lease_until, MS0 + 60000);
        assert_int_equal(r.next_attempt, MS0 + 60000);
        assert_int_equal(r.attempts, 1);
    }
    assert_int_equal(suite_campaign_state(s, "c", &total), SP_STORE_CAMPAIGN_QUEUED);
    assert_int_equal(total, 4);
    /* nobody claims them while the lease holds */
    suite_claimed other;
    assert_int_equal(suite_claim(s, "w2", MS0 + 59999, 1000, 64, &other), 0);
    /* renewed by their owner only, lease and next attempt alike; a row
     * that was claimed away after its lease ran out is not */
    uint64_t renewed = 99;
    assert_ok(sp_store_outbox_renew(s, "w2", got.seqs, 4, MS0 + 90000, &renewed));
    assert_int_equal(renewed, 0);
    assert_ok(sp_store_outbox_renew(s, "host:1:x", got.seqs, 3, MS0 + 90000, &renewed));
    assert_int_equal(renewed, 3);
    sp_store_outbox_row rr = suite_message(s, got.msgs[0].message_id);
    assert_int_equal(rr.lease_until, MS0 + 90000);
    assert_int_equal(rr.next_attempt, MS0 + 90000);
    assert_int_equal(rr.state, SP_STORE_OUTBOX_SENDING);
    assert_int_equal(rr.attempts, 1);
    assert_int_equal(suite_claim(s, "w2", MS0 + 60000, 1000, 64, &other), 1); /* p04, not renewed */
    assert_string_equal(other.msgs[0].profile_id, "p04");
    assert_ok(sp_store_outbox_renew(s, "host:1:x", got.seqs + 3, 1, MS0 + 90000, &renewed));
    assert_int_equal(renewed, 0); /* w2's now */
    assert_rc(sp_store_outbox_renew(s, "host:1:x", got.seqs, 0, MS0 + 90000, &renewed), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_outbox_done(s, "w2", other.seqs, 1, MS0 + 60001, &renewed));
    assert_int_equal(renewed, 1);
    got.n = 3; /* p04 is settled */

    /* the rest: one page queued as before, the last leased again */
    assert_int_equal(suite_page(s, "c", &all, 4, false), 4); /* p05..p08 */
    assert_ok(sp_store_campaign_expand_page_leased(s, "acme", "c", &all, 4, MS0, &lease, &added, &finished));
    assert_int_equal(added, 3); /* p09..p11 */
    assert_true(finished);
    assert_int_equal(got.n, 6);
    assert_int_equal(suite_campaign_state(s, "c", &total), SP_STORE_CAMPAIGN_SENDING);
    assert_int_equal(total, 11);
    sp_store_outbox_counts cc = suite_counts(s, "acme", "c");
    assert_int_equal(cc.sending, 6);
    assert_int_equal(cc.queued, 4);
    assert_int_equal(cc.sent, 1);

    /* the owner settles its leased messages as claimed ones; someone
     * else's settle changes nothing */
    uint64_t changed = 99;
    assert_ok(sp_store_outbox_done(s, "w2", got.seqs, 2, MS0 + 10, &changed));
    assert_int_equal(changed, 0);
    assert_ok(sp_store_outbox_done(s, "host:1:x", got.seqs, 2, MS0 + 10, &changed));
    assert_int_equal(changed, 2);
    assert_ok(sp_store_outbox_retry(s, "host:1:x", got.seqs + 2, 1, MS0 + 20, "SP_ERR_PROVIDER_UNAVAILABLE 503", 503,
                                    5, MS0 + 10, &changed));
    assert_int_equal(changed, 1);
    /* a lease that ran out: the next claim takes what was not settled,
     * the retried one when due, each with one more attempt */
    assert_int_equal(suite_claim(s, "w2", MS0 + 90000, 1000, 64, &other), 3 + 1 + 4);
    for (size_t i = 0; i < other.n; i++)
        if (strcmp(other.msgs[i].profile_id, "p05") < 0 || strcmp(other.msgs[i].profile_id, "p08") > 0)
            assert_int_equal(other.msgs[i].attempts, 2);
    assert_int_equal(suite_counts(s, "acme", "c").sent, 3);

    /* an attribute audience and a list of ids lease too */
    memset(&got, 0, sizeof got);
    sp_store_audience pro = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = "pro"};
    suite_campaign(s, "acme", "pro", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "pro", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_ok(sp_store_campaign_expand_page_leased(s, "acme", "pro", &pro, 100, MS0, &lease, &added, &finished));
    assert_int_equal(added, 4); /* p00, p03, p06, p09 */
    assert_true(finished);
    sp_store_audience three = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "n", .number = "3.0"};
    suite_campaign(s, "acme", "three", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "three", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_ok(sp_store_campaign_expand_page_leased(s, "acme", "three", &three, 100, MS0, &lease, &added, &finished));
    assert_int_equal(added, 4);
    const char *list[] = {"p02", "p01", "nobody", "p02", "p11"};
    sp_store_audience ids = {.kind = SP_STORE_AUDIENCE_IDS, .ids = list, .n_ids = 5};
    suite_campaign(s, "acme", "list", "sms");
    assert_ok(sp_store_campaign_set_state(s, "acme", "list", SP_STORE_CAMPAIGN_QUEUED, T0, NULL));
    assert_ok(sp_store_campaign_expand_page_leased(s, "acme", "list", &ids, 1, MS0, &lease, &added, &finished));
    assert_int_equal(added, 2); /* p01 suppressed, nobody unknown, p02 once */
    assert_true(finished);
    assert_int_equal(got.n, 4 + 4 + 2);
    assert_string_equal(got.msgs[8].profile_id, "p02");
    assert_string_equal(got.msgs[9].profile_id, "p11");
    assert_string_equal(got.msgs[9].campaign, "list");
    assert_int_equal(suite_counts(s, "acme", "list").sending, 2);
    assert_int_equal(suite_counts(s, "acme", "list").queued, 0);
}

static void test_outbox_state_machine(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    suite_campaign(s, "acme", "c", "sms");
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        suite_upsert(s, "acme", id, "{}", NULL, 0, T0);
    }
    assert_int_equal(suite_expand_all(s, "acme", "c", MS0), 5);
    char test_id[SP_STORE_MAX_MESSAGE_ID + 1];
    uint64_t test_seq = 0;
    assert_ok(sp_store_outbox_enqueue(s, "acme", "sms", "p0", NULL, MS0 + 100, test_id, &test_seq));
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "p0", test_id, MS0, NULL, NULL), SP_ERR_EXISTS);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "nope", "p0", NULL, MS0, NULL, NULL), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "nobody", NULL, MS0, NULL, NULL), SP_ERR_NOT_FOUND);
    sp_store_outbox_row r = suite_message(s, test_id);
    assert_int_equal(r.seq, test_seq);
    assert_string_equal(r.campaign, "");
    assert_string_equal(r.profile_id, "p0");
    assert_int_equal(r.state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(r.attempts, 0);
    assert_string_equal(r.lease_owner, "");

    /* claims take the earliest first and only what is due */
    suite_claimed a, b;
    assert_int_equal(suite_claim(s, "w1", MS0, 30000, 3, &a), 3);
    assert_int_equal(suite_claim(s, "w2", MS0, 30000, 10, &b), 2); /* the test send is not due yet */
    for (size_t i = 0; i < b.n; i++) assert_string_equal(b.msgs[i].campaign, "c");
    assert_int_equal(suite_claim(s, "w3", MS0 + 100, 30000, 10, &b), 1);
    assert_int_equal(b.seqs[0], test_seq);
    assert_int_equal(suite_claim(s, "w3", MS0 + 200, 30000, 10, &b), 0);
    r = suite_message(s, a.msgs[0].message_id);
    assert_int_equal(r.state, SP_STORE_OUTBOX_SENDING);
    assert_string_equal(r.lease_owner, "w1");
    assert_int_equal(r.lease_until, MS0 + 30000);
    assert_int_equal(r.attempts, 1);

    /* done: w1's rows only */
    uint64_t changed = 99;
    assert_ok(sp_store_outbox_done(s, "w2", a.seqs, 1, MS0 + 5, &changed));
    assert_int_equal(changed, 0);
    assert_ok(sp_store_outbox_done(s, "w1", a.seqs, 1, MS0 + 5, &changed));
    assert_int_equal(changed, 1);
    assert_ok(sp_store_outbox_done(s, "w1", a.seqs, 1, MS0 + 6, &changed));
    assert_int_equal(changed, 0); /* once */
    r = suite_message(s, a.msgs[0].message_id);
    assert_int_equal(r.state, SP_STORE_OUTBOX_SENT);
    assert_int_equal(r.sent_at, MS0 + 5);

    /* retry: queued again for later, with its reason */
    assert_ok(sp_store_outbox_retry(s, "w1", a.seqs + 1, 1, MS0 + 1000, "SP_ERR_PROVIDER_UNAVAILABLE 503", 503, 2,
                                    MS0 + 10, &changed));
    assert_int_equal(changed, 1);
    r = suite_message(s, a.msgs[1].message_id);
    assert_int_equal(r.state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(r.next_attempt, MS0 + 1000);
    assert_string_equal(r.last_error, "SP_ERR_PROVIDER_UNAVAILABLE 503");
    assert_int_equal(r.provider_status, 503);
    assert_int_equal(suite_claim(s, "w1", MS0 + 999, 30000, 10, &b), 0);
    assert_int_equal(suite_claim(s, "w1", MS0 + 1000, 30000, 10, &b), 1);
    assert_int_equal(b.msgs[0].attempts, 2);
    /* the second failure reaches max_attempts: dead */
    assert_ok(sp_store_outbox_retry(s, "w1", b.seqs, 1, MS0 + 2000, "SP_ERR_NETWORK", 0, 2, MS0 + 1001, &changed));
    assert_int_equal(suite_message(s, b.msgs[0].message_id).state, SP_STORE_OUTBOX_DEAD);

    /* fail: for good, or dead-lettered at once */
    assert_ok(sp_store_outbox_fail(s, "w1", a.seqs + 2, 1, SP_STORE_OUTBOX_FAILED, "SP_ERR_PROVIDER_REJECTED 400",
                                   400, MS0 + 11, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(suite_message(s, a.msgs[2].message_id).state, SP_STORE_OUTBOX_FAILED);
    sp_store_outbox_counts n = suite_counts(s, "acme", "c");
    assert_int_equal(n.sent, 1);
    assert_int_equal(n.dead, 1);
    assert_int_equal(n.failed, 1);
    assert_int_equal(n.sending, 2); /* w2's */
    assert_int_equal(n.queued, 0);
    n = suite_counts(s, "acme", NULL);
    assert_int_equal(n.sending, 3); /* the test send too */
    /* the backlog of every tenant: only live rows count */
    uint64_t live = 99;
    assert_ok(sp_store_outbox_live(s, &live));
    assert_int_equal(live, n.queued + n.sending);
    assert_rc(sp_store_outbox_live(s, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_live(NULL, &live), SP_ERR_INVALID_ARGUMENT);

    /* release: w2's rows back, the attempt not counted */
    assert_ok(sp_store_outbox_release(s, "w2", MS0 + 20, &changed));
    assert_int_equal(changed, 2);
    assert_int_equal(suite_counts(s, "acme", "c").queued, 2);
    assert_int_equal(suite_claim(s, "w4", MS0 + 20, 30000, 10, &b), 2);
    for (size_t i = 0; i < b.n; i++) assert_int_equal(b.msgs[i].attempts, 1);
    assert_ok(sp_store_outbox_fail(s, "w4", b.seqs, b.n, SP_STORE_OUTBOX_DEAD, "SP_ERR_KMS_KEY_DISABLED", 0,
                                   MS0 + 21, &changed));
    assert_int_equal(changed, 2);

    /* replay: the campaign's dead back to queued with attempts reset */
    assert_ok(sp_store_outbox_replay(s, "acme", "other", MS0 + 30, &changed));
    assert_int_equal(changed, 0);
    assert_ok(sp_store_outbox_replay(s, "acme", "c", MS0 + 30, &changed));
    assert_int_equal(changed, 3);
    assert_int_equal(suite_claim(s, "w5", MS0 + 30, 30000, 10, &b), 3);
    for (size_t i = 0; i < b.n; i++) assert_int_equal(b.msgs[i].attempts, 1);
    assert_ok(sp_store_outbox_done(s, "w5", b.seqs, b.n, MS0 + 31, &changed));
    assert_int_equal(changed, 3);
    /* tenant-wide replay takes the test send too */
    assert_ok(sp_store_outbox_fail(s, "w3", &test_seq, 1, SP_STORE_OUTBOX_DEAD, "SP_ERR_NETWORK", 0, MS0, &changed));
    assert_int_equal(changed, 1);
    assert_ok(sp_store_outbox_replay(s, "acme", NULL, MS0 + 40, &changed));
    assert_int_equal(changed, 1);
    n = suite_counts(s, "acme", "c");
    assert_int_equal(n.sent, 4);
    assert_int_equal(n.failed, 1);
    assert_int_equal(n.queued + n.sending + n.dead, 0);

    /* a claim whose callback fails claims nothing */
    memset(&b, 0, sizeof b);
    b.fail_at = 1;
    size_t claimed = 99;
    assert_rc(sp_store_outbox_claim(s, "w6", MS0 + 50, 1000, 10, suite_take, &b, &claimed), SP_ERR_UNAVAILABLE);
    assert_int_equal(claimed, 0);
    assert_int_equal(suite_message(s, test_id).state, SP_STORE_OUTBOX_QUEUED);
    /* and a read-only transaction refuses every outbox write */
    assert_ok(sp_store_begin_read(s));
    assert_rc(sp_store_outbox_claim(s, "w6", MS0 + 50, 1000, 10, suite_take, &b, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "p0", NULL, MS0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_release(s, "w6", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_rollback(s);
}

/* A deferral (the tenant's KMS down: nothing reached the provider) puts
 * the message back without using up an attempt, so a long outage never
 * dead-letters it; only the owner's rows move. */
static void test_outbox_defer(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    suite_campaign(s, "acme", "c", "sms");
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        suite_upsert(s, "acme", id, "{}", NULL, 0, T0);
    }
    assert_int_equal(suite_expand_all(s, "acme", "c", MS0), 3);
    suite_claimed a, b;
    assert_int_equal(suite_claim(s, "w1", MS0, 30000, 10, &a), 3);
    uint64_t changed = 99;
    assert_ok(sp_store_outbox_defer(s, "w2", a.seqs, 2, MS0 + 500, "SP_ERR_KMS_UNAVAILABLE", MS0 + 1, &changed));
    assert_int_equal(changed, 0); /* not w2's */
    for (int round = 0; round < 5; round++) {
        assert_ok(sp_store_outbox_defer(s, "w1", a.seqs, 2, MS0 + 500, "SP_ERR_KMS_UNAVAILABLE", MS0 + 1, &changed));
        assert_int_equal(changed, 2);
        assert_int_equal(suite_counts(s, "acme", "c").queued, 2);
        assert_int_equal(suite_claim(s, "w1", MS0 + 100, 30000, 10, &b), 0); /* not due yet */
        assert_int_equal(suite_claim(s, "w1", MS0 + 500, 30000, 10, &b), 2);
        for (size_t i = 0; i < b.n; i++) assert_int_equal(b.msgs[i].attempts, 1);
    }
    sp_store_outbox_row r = suite_message(s, b.msgs[0].message_id);
    assert_string_equal(r.last_error, "SP_ERR_KMS_UNAVAILABLE");
    assert_int_equal(r.state, SP_STORE_OUTBOX_SENDING);
    /* a real failure now counts as the first attempt */
    assert_ok(sp_store_outbox_retry(s, "w1", b.seqs, b.n, MS0 + 600, "SP_ERR_NETWORK", 0, 2, MS0 + 501, &changed));
    assert_int_equal(changed, 2);
    assert_int_equal(suite_counts(s, "acme", "c").dead, 0);
    assert_rc(sp_store_outbox_defer(s, "w1", a.seqs, 0, MS0, "x", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_defer(s, "w1", a.seqs, 1, 0, "x", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_defer(s, "bad owner!", a.seqs, 1, MS0, "x", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_defer(s, "w1", a.seqs, 1, MS0, "line\nbreak", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* A worker that stopped answering: its lease runs out, another worker takes
 * the message over, and the first one's late done changes nothing. */
static void test_outbox_lease_expiry(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel(s, "acme", "sms");
    suite_upsert(s, "acme", "p", "{}", NULL, 0, T0);
    char id[SP_STORE_MAX_MESSAGE_ID + 1];
    assert_ok(sp_store_outbox_enqueue(s, "acme", "sms", "p", NULL, MS0, id, NULL));
    suite_claimed a, b;
    assert_int_equal(suite_claim(s, "host-a:1", MS0, 1000, 10, &a), 1);
    assert_int_equal(suite_claim(s, "host-b:1", MS0 + 999, 1000, 10, &b), 0);
    assert_int_equal(suite_claim(s, "host-b:1", MS0 + 1000, 1000, 10, &b), 1);
    assert_int_equal(b.msgs[0].seq, a.msgs[0].seq);
    assert_string_equal(b.msgs[0].message_id, id); /* the same webhook id: the provider drops a repeat */
    assert_int_equal(b.msgs[0].attempts, 2);
    uint64_t changed = 99;
    assert_ok(sp_store_outbox_done(s, "host-a:1", a.seqs, 1, MS0 + 1001, &changed));
    assert_int_equal(changed, 0);
    assert_ok(sp_store_outbox_retry(s, "host-a:1", a.seqs, 1, MS0, "late", 0, 9, MS0 + 1001, &changed));
    assert_int_equal(changed, 0);
    assert_ok(sp_store_outbox_release(s, "host-a:1", MS0 + 1001, &changed));
    assert_int_equal(changed, 0);
    assert_int_equal(suite_message(s, id).state, SP_STORE_OUTBOX_SENDING);
    assert_string_equal(suite_message(s, id).lease_owner, "host-b:1");
    assert_ok(sp_store_outbox_done(s, "host-b:1", b.seqs, 1, MS0 + 1002, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(suite_message(s, id).state, SP_STORE_OUTBOX_SENT);
    /* a sent message's lease never brings it back */
    assert_int_equal(suite_claim(s, "host-c:1", MS0 + 100000, 1000, 10, &b), 0);
}

static void test_outbox_arguments(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_claimed c;
    uint64_t seq = 1, changed = 0;
    size_t n = 0;
    const char *bad_owners[] = {NULL, "", "has space", "with/slash",
                                "an-owner-name-much-longer-than-sixty-four-characters-is-refused-here"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_owners); i++) {
        assert_rc(sp_store_outbox_claim(s, bad_owners[i], MS0, 1000, 10, suite_take, &c, &n), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_store_outbox_done(s, bad_owners[i], &seq, 1, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_store_outbox_release(s, bad_owners[i], MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    }
    assert_rc(sp_store_outbox_claim(s, "w", MS0, 1000, 0, suite_take, &c, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_claim(s, "w", MS0, 1000, SP_STORE_MAX_BATCH + 1, suite_take, &c, &n),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_claim(s, "w", MS0, 0, 10, suite_take, &c, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_claim(s, "w", MS0, SP_STORE_MAX_LEASE_MS + 1, 10, suite_take, &c, &n),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_claim(s, "w", 0, 1000, 10, suite_take, &c, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_claim(s, "w", MS0, 1000, 10, NULL, &c, &n), SP_ERR_INVALID_ARGUMENT);
    uint64_t *many = calloc(SP_STORE_MAX_BATCH + 1, sizeof *many);
    assert_non_null(many);
    for (size_t i = 0; i <= SP_STORE_MAX_BATCH; i++) many[i] = i + 1;
    assert_ok(sp_store_outbox_done(s, "w", many, SP_STORE_MAX_BATCH, MS0, &changed)); /* the most: fine */
    assert_int_equal(changed, 0);
    assert_rc(sp_store_outbox_done(s, "w", many, SP_STORE_MAX_BATCH + 1, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_done(s, "w", many, 0, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_done(s, "w", NULL, 1, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    many[3] = 0;
    assert_rc(sp_store_outbox_done(s, "w", many, 5, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    many[3] = (uint64_t)INT64_MAX + 1;
    assert_rc(sp_store_outbox_done(s, "w", many, 5, MS0, &changed), SP_ERR_INVALID_ARGUMENT);
    free(many);
    const char *bad_errors[] = {NULL, "", "line\nbreak", "caf\xc3\xa9"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_errors); i++) {
        assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, MS0, bad_errors[i], 0, 3, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_store_outbox_fail(s, "w", &seq, 1, SP_STORE_OUTBOX_DEAD, bad_errors[i], 0, MS0, NULL),
                  SP_ERR_INVALID_ARGUMENT);
    }
    char long_error[SP_STORE_MAX_ERROR + 2];
    memset(long_error, 'e', sizeof long_error - 1);
    long_error[sizeof long_error - 1] = 0;
    assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, MS0, long_error, 0, 3, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, MS0, "x", 1000, 3, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, MS0, "x", -1, 3, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, MS0, "x", 0, 0, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_retry(s, "w", &seq, 1, 0, "x", 0, 3, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_fail(s, "w", &seq, 1, SP_STORE_OUTBOX_SENT, "x", 0, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_fail(s, "w", &seq, 1, SP_STORE_OUTBOX_QUEUED, "x", 0, MS0, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_replay(s, "acme", "Bad", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_replay(s, "", NULL, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_outbox_counts counts;
    assert_rc(sp_store_outbox_counts_get(s, "acme", "c", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_counts_get(s, "acme", "C", &counts), SP_ERR_INVALID_ARGUMENT);
    sp_store_outbox_row row;
    assert_rc(sp_store_outbox_get(s, "", &row), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_get(s, "msg id", &row), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_get(s, "msg_nope", &row), SP_ERR_NOT_FOUND);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "p", "bad id", MS0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "SMS", "p", NULL, MS0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "", NULL, MS0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_enqueue(s, "acme", "sms", "p", NULL, 0, NULL, NULL), SP_ERR_INVALID_ARGUMENT);

    /* audiences */
    const char *ids[SP_STORE_MAX_AUDIENCE_IDS + 1];
    for (size_t i = 0; i <= SP_STORE_MAX_AUDIENCE_IDS; i++) ids[i] = "p";
    sp_store_audience bad[] = {
        {.kind = 0},
        {.kind = SP_STORE_AUDIENCE_IDS, .ids = NULL, .n_ids = 1},
        {.kind = SP_STORE_AUDIENCE_IDS, .ids = ids, .n_ids = 0},
        {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan"},
        {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = "a", .number = "1"},
        {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "pl\"an", .text = "a"},
        {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "", .text = "a"},
        {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "plan", .text = ""},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++)
        assert_rc(sp_store_outbox_expand(s, "acme", "c", &bad[i], MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    const char *bad_numbers[] = {"", "01", "1.", ".5", "+1", "1e", "0x10", "NaN", "1 ", "--1"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_numbers); i++) {
        sp_store_audience a = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "age", .number = bad_numbers[i]};
        assert_rc(sp_store_outbox_expand(s, "acme", "c", &a, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    }
    sp_store_audience too_many = {.kind = SP_STORE_AUDIENCE_IDS, .ids = ids, .n_ids = SP_STORE_MAX_AUDIENCE_IDS + 1};
    assert_rc(sp_store_outbox_expand(s, "acme", "c", &too_many, MS0, NULL), SP_ERR_TOO_LARGE);
    ids[3] = "tab\there";
    sp_store_audience bad_id = {.kind = SP_STORE_AUDIENCE_IDS, .ids = ids, .n_ids = 5};
    assert_rc(sp_store_outbox_expand(s, "acme", "c", &bad_id, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
    assert_rc(sp_store_outbox_expand(s, "acme", "c", NULL, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_expand(s, "acme", "c", &all, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_outbox_expand(s, "acme", "", &all, MS0, NULL), SP_ERR_INVALID_ARGUMENT);

    /* channels and campaigns */
    char *big = malloc(SP_STORE_MAX_CAMPAIGN_SPEC + 2);
    assert_non_null(big);
    memset(big, ' ', SP_STORE_MAX_CAMPAIGN_SPEC + 1);
    sp_store_channel ch = {"acme", "sms", SP_STORE_CHANNEL_SMS, "{}", 2, NULL, 0};
    sp_store_channel bc = ch;
    bc.id = "Upper";
    assert_rc(sp_store_channel_put(s, &bc, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    bc = ch;
    bc.kind = 0;
    assert_rc(sp_store_channel_put(s, &bc, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    bc = ch;
    bc.config = big;
    bc.config_len = SP_STORE_MAX_CHANNEL_CONFIG + 1;
    assert_rc(sp_store_channel_put(s, &bc, T0, NULL), SP_ERR_TOO_LARGE);
    bc = ch;
    bc.secrets = (const uint8_t *)big;
    bc.secrets_len = 0;
    assert_rc(sp_store_channel_put(s, &bc, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    bc.secrets_len = SP_STORE_MAX_CHANNEL_SECRETS + 1;
    assert_rc(sp_store_channel_put(s, &bc, T0, NULL), SP_ERR_TOO_LARGE);
    assert_rc(sp_store_channel_put(s, &ch, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_channel_list(s, "acme", "", 0, suite_collect_channel, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_channel_list(s, "acme", "A", 1, suite_collect_channel, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_channel_delete(s, "acme", ""), SP_ERR_INVALID_ARGUMENT);
    sp_store_campaign cp = {"acme", "c", "sms", "{}", 2, SP_STORE_CAMPAIGN_DRAFT, 0};
    sp_store_campaign bp = cp;
    bp.spec = big;
    bp.spec_len = SP_STORE_MAX_CAMPAIGN_SPEC + 1;
    assert_rc(sp_store_campaign_create(s, &bp, T0), SP_ERR_TOO_LARGE);
    bp = cp;
    bp.send_at_ms = -1;
    assert_rc(sp_store_campaign_create(s, &bp, T0), SP_ERR_INVALID_ARGUMENT);
    bp = cp;
    bp.channel = "a b";
    assert_rc(sp_store_campaign_create(s, &bp, T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_set_state(s, "acme", "c", 0, T0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_due(s, MS0, 0, suite_collect_due, NULL), SP_ERR_INVALID_ARGUMENT);
    free(big);

    /* names */
    sp_store_channel_kind kind = 0;
    assert_ok(sp_store_channel_kind_parse("email", &kind));
    assert_int_equal(kind, SP_STORE_CHANNEL_EMAIL);
    assert_rc(sp_store_channel_kind_parse("fax", &kind), SP_ERR_INVALID_ARGUMENT);
    sp_store_campaign_state cs = 0;
    assert_ok(sp_store_campaign_state_parse("cancelled", &cs));
    assert_int_equal(cs, SP_STORE_CAMPAIGN_CANCELLED);
    assert_rc(sp_store_campaign_state_parse("cancel", &cs), SP_ERR_INVALID_ARGUMENT);
    assert_string_equal(sp_store_outbox_state_name(SP_STORE_OUTBOX_DEAD), "dead");
    assert_string_equal(sp_store_outbox_state_name(0), "");
    assert_string_equal(sp_store_campaign_state_name(99), "");

    /* nothing above reached the database */
    sp_store_outbox_counts none = suite_counts(s, "acme", NULL);
    assert_int_equal(none.queued + none.sending + none.sent + none.failed + none.dead, 0);
}

/* Every allocation of ours on the way (the copies channel and campaign gets
 * make; the rest of the outbox's path allocates nothing of ours) failing in
 * turn: SP_ERR_NO_MEMORY, nothing leaked, nothing half-claimed. */
static void test_outbox_allocation_failures(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    const uint8_t sealed[] = {1, 2, 3};
    sp_store_channel ch = {"acme", "sms", SP_STORE_CHANNEL_SMS, "{}", 2, sealed, 3};
    assert_ok(sp_store_channel_put(s, &ch, T0, NULL));
    suite_campaign(s, "acme", "c", "sms");
    suite_upsert(s, "acme", "p", "{}", NULL, 0, T0);
    size_t failures = 0;
    uint64_t n;
    for (n = 1; n < 1000; n++) {
        sp_store_channel_row chr;
        sp_store_campaign_row cr;
        memset(&chr, 0, sizeof chr);
        memset(&cr, 0, sizeof cr);
        suite_claimed got;
        memset(&got, 0, sizeof got);
        sp_store_audience all = {.kind = SP_STORE_AUDIENCE_ALL};
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_store_channel_get(s, "acme", "sms", &chr);
        if (rc == SP_OK) rc = sp_store_campaign_get(s, "acme", "c", &cr);
        if (rc == SP_OK) rc = sp_store_outbox_expand(s, "acme", "c", &all, MS0, NULL);
        if (rc == SP_OK) rc = sp_store_outbox_claim(s, "w", MS0 + (int64_t)n, 1, 10, suite_take, &got, NULL);
        if (rc == SP_OK && got.n > 0) rc = sp_store_outbox_done(s, "w", got.seqs, got.n, MS0, NULL);
        sp_store_delivery_event ev = {got.msgs[0].message_id, SP_STORE_EVENT_OPENED, MS0 + (int64_t)n, 0};
        sp_store_applied applied = 0;
        sp_store_campaign_stats stats;
        memset(&stats, 0, sizeof stats);
        if (rc == SP_OK && got.n > 0) rc = sp_store_delivery_apply(s, "acme", NULL, &ev, 1, true, MS0, &applied);
        if (rc == SP_OK) rc = sp_store_campaign_stats_get(s, "acme", "c", &stats);
        bool reached = sp_test_fault_disarm(fault);
        if (rc != SP_OK) {
            failures++;
            if (rc != SP_ERR_NO_MEMORY) fail_msg("allocation %llu failed: %s", (unsigned long long)n, sp_error_name(rc));
        } else {
            assert_memory_equal(chr.secrets, sealed, 3);
            assert_string_equal(cr.spec, "{\"template\":\"Hi {{first_name}}\",\"audience\":\"all\"}");
            assert_int_equal(stats.total, 1);
            assert_int_equal(stats.opened, 1);
            if (got.n > 0) assert_true(applied == SP_STORE_APPLIED_CHANGED || applied == SP_STORE_APPLIED_SAME);
        }
        sp_store_channel_row_clear(&chr);
        sp_store_campaign_row_clear(&cr);
        if (!reached) {
            assert_ok(rc);
            break;
        }
    }
    assert_true(n < 1000);
    assert_true(failures > 0);
    sp_store_outbox_counts c = suite_counts(s, "acme", "c");
    assert_int_equal(c.queued + c.sending + c.sent, 1);
}

/* Two processes claim from one outbox at once, in batches, until it is
 * empty: each message is claimed by exactly one of them, once. Each child
 * writes the seqs it got to a file of its own; the parent counts. */
static void suite_claimer(const char *url, const char *owner, const char *out_path, int start) {
    FILE *out = fopen(out_path, "w");
    sp_store *s = NULL;
    if (out == NULL || sp_store_open(url, &s) != SP_OK) _exit(10);
    char go;
    if (read(start, &go, 1) != 0) _exit(14); /* both start when the parent closes the pipe */
    for (int idle = 0; idle < 3;) {
        suite_claimed c;
        memset(&c, 0, sizeof c);
        size_t n = 0;
        sp_error rc = sp_store_outbox_claim(s, owner, MS0, 60000, 10, suite_take, &c, &n);
        if (rc == SP_ERR_CONFLICT) continue;
        if (rc != SP_OK) _exit(11);
        if (n == 0) {
            idle++;
            continue;
        }
        idle = 0;
        for (size_t i = 0; i < n; i++) fprintf(out, "%llu\n", (unsigned long long)c.seqs[i]);
        sp_test_sleep_ms(1); /* the sending, between claim and done */
        uint64_t changed = 0;
        do rc = sp_store_outbox_done(s, owner, c.seqs, n, MS0 + 1, &changed);
        while (rc == SP_ERR_CONFLICT);
        if (rc != SP_OK || changed != n) _exit(12);
    }
    sp_store_close(s);
    if (fclose(out) != 0) _exit(13);
    _exit(0);
}

static void test_outbox_two_processes(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    enum { N = 2000 };
    suite_channel(s, "acme", "sms");
    suite_campaign(s, "acme", "big", "sms");
    assert_ok(sp_store_begin(s));
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "u%05d", i);
        suite_upsert(s, "acme", id, "{}", NULL, 0, T0);
    }
    assert_ok(sp_store_commit(s));
    assert_int_equal(suite_expand_all(s, "acme", "big", MS0), N);
    char paths[2][300];
    pid_t pids[2];
    int start[2];
    assert_int_equal(pipe(start), 0);
    for (int w = 0; w < 2; w++) {
        snprintf(paths[w], sizeof paths[w], "%s/claimed-%d", f->dir, w);
        pids[w] = sp_test_fork();
        if (pids[w] == 0) {
            close(start[1]);
            suite_claimer(f->url, w == 0 ? "worker-0" : "worker-1", paths[w], start[0]);
        }
    }
    close(start[0]);
    close(start[1]);
    for (int w = 0; w < 2; w++) assert_int_equal(sp_test_wait(pids[w]), 0);
    /* seqs of one expand are consecutive: a table indexed by seq - min */
    unsigned char *seen = calloc(1, 1 << 20);
    assert_non_null(seen);
    uint64_t lo = UINT64_MAX, total = 0, per[2] = {0, 0};
    uint64_t *all = calloc(2 * N + 1, sizeof *all);
    assert_non_null(all);
    for (int w = 0; w < 2; w++) {
        char *text = sp_test_read_file(paths[w], NULL);
        for (char *line = text, *end = NULL; *line; line = end + 1) {
            uint64_t v = strtoull(line, &end, 10);
            assert_true(end > line && *end == '\n');
            assert_true(total < 2 * N);
            all[total++] = v;
            per[w]++;
            if (v < lo) lo = v;
        }
        free(text);
    }
    assert_int_equal(total, N);
    for (uint64_t i = 0; i < total; i++) {
        uint64_t k = all[i] - lo;
        assert_true(k < (1u << 20));
        assert_int_equal(seen[k], 0); /* claimed once */
        seen[k] = 1;
    }
    /* how the work was shared is up to the scheduler: not asserted */
    print_message("claims: worker-0 %llu, worker-1 %llu\n", (unsigned long long)per[0], (unsigned long long)per[1]);
    sp_store_outbox_counts c = suite_counts(s, "acme", "big");
    assert_int_equal(c.sent, N);
    assert_int_equal(c.queued + c.sending + c.failed + c.dead, 0);
    free(seen);
    free(all);
}


/* ---- callbacks and delivery tracking (schema version 3) ---- */

static void suite_channel_kind(sp_store *s, const char *tenant, const char *id, sp_store_channel_kind kind) {
    sp_store_channel c = {tenant, id, kind, "{}", 2, NULL, 0};
    assert_ok(sp_store_channel_put(s, &c, T0, NULL));
}

static void suite_send(sp_store *s, const char *tenant, const char *channel, const char *profile, const char *mid) {
    assert_ok(sp_store_outbox_enqueue(s, tenant, channel, profile, mid, MS0, NULL, NULL));
}

static sp_store_applied suite_apply(sp_store *s, const char *tenant, const char *mid, sp_store_event_kind kind,
                                    int64_t ts, int code) {
    sp_store_delivery_event e = {mid, kind, ts, code};
    sp_store_applied r = 0;
    assert_ok(sp_store_delivery_apply(s, tenant, NULL, &e, 1, true, MS0 + 999, &r));
    return r;
}

static sp_store_message_status suite_status(sp_store *s, const char *tenant, const char *mid) {
    sp_store_message_status m;
    memset(&m, 0x5a, sizeof m);
    assert_ok(sp_store_message_status_get(s, tenant, mid, &m));
    return m;
}

static bool suite_seen(sp_store *s, const char *tenant, const char *id) {
    bool seen = false;
    assert_ok(sp_store_callback_seen(s, tenant, id, &seen));
    return seen;
}

static void test_callbacks_seen(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    bool fresh = false;
    assert_false(suite_seen(s, "acme", "wh_1"));
    assert_ok(sp_store_callback_record(s, "acme", "wh_1", MS0, &fresh));
    assert_true(fresh);
    assert_true(suite_seen(s, "acme", "wh_1"));
    /* a retry: recorded already, nothing changes */
    assert_ok(sp_store_callback_record(s, "acme", "wh_1", MS0 + 5000, &fresh));
    assert_false(fresh);
    /* per tenant: the same id elsewhere is new */
    assert_false(suite_seen(s, "other", "wh_1"));
    assert_ok(sp_store_callback_record(s, "other", "wh_1", MS0 + 1, &fresh));
    assert_true(fresh);
    /* every printable character but the space */
    char full[SP_STORE_MAX_WEBHOOK_ID + 1];
    for (size_t i = 0; i < SP_STORE_MAX_WEBHOOK_ID; i++) full[i] = (char)(0x21 + i % 94);
    full[SP_STORE_MAX_WEBHOOK_ID] = 0;
    assert_ok(sp_store_callback_record(s, "acme", full, MS0 + 2, &fresh));
    assert_true(fresh && suite_seen(s, "acme", full));
    /* recorded inside a transaction rolled back: forgotten */
    assert_ok(sp_store_begin(s));
    assert_ok(sp_store_callback_record(s, "acme", "wh_rolled", MS0, &fresh));
    assert_true(fresh);
    sp_store_rollback(s);
    assert_false(suite_seen(s, "acme", "wh_rolled"));

    /* pruning: strictly before the time, at most `limit` per call */
    for (int i = 0; i < 10; i++) {
        char id[32];
        snprintf(id, sizeof id, "old-%d", i);
        assert_ok(sp_store_callback_record(s, "acme", id, MS0 - 100000 + i, &fresh));
    }
    uint64_t removed = 99;
    assert_ok(sp_store_callback_prune(s, MS0 - 100000, 100, &removed));
    assert_int_equal(removed, 0);
    assert_ok(sp_store_callback_prune(s, MS0, 4, &removed));
    assert_int_equal(removed, 4);
    assert_ok(sp_store_callback_prune(s, MS0, 4, &removed));
    assert_int_equal(removed, 4);
    assert_ok(sp_store_callback_prune(s, MS0, 4, NULL));
    assert_ok(sp_store_callback_prune(s, MS0, 4, &removed));
    assert_int_equal(removed, 0);
    for (int i = 0; i < 10; i++) {
        char id[32];
        snprintf(id, sizeof id, "old-%d", i);
        assert_false(suite_seen(s, "acme", id));
    }
    /* the ones at or after the time stay, every tenant's */
    assert_true(suite_seen(s, "acme", "wh_1"));
    assert_true(suite_seen(s, "other", "wh_1"));
    assert_ok(sp_store_callback_prune(s, MS0 + 2, 100000, &removed));
    assert_int_equal(removed, 2); /* acme's and other's wh_1 */
    assert_true(suite_seen(s, "acme", full));

    /* a tenant's delete takes its ids */
    assert_ok(sp_store_callback_record(s, "other", "wh_2", MS0 + 10, &fresh));
    assert_ok(sp_store_tenant_delete(s, "other"));
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    assert_false(suite_seen(s, "other", "wh_2"));
    assert_rc(sp_store_callback_record(s, "ghost", "wh_1", MS0, &fresh), SP_ERR_NOT_FOUND);
}

static void test_delivery_apply(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel_kind(s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(s, "acme", "p1", "{}", NULL, 0, T0);
    suite_send(s, "acme", "sms", "p1", "msg_a");
    suite_send(s, "acme", "sms", "p1", "msg_b");

    /* untouched: no tracking at all */
    sp_store_message_status m = suite_status(s, "acme", "msg_a");
    assert_string_equal(m.outbox.message_id, "msg_a");
    assert_string_equal(m.outbox.profile_id, "p1");
    assert_int_equal(m.outbox.state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_NONE);
    assert_int_equal(m.delivery_at + m.failure_code + m.opened_at + m.clicked_at + m.replied_at, 0);
    assert_int_equal(m.unsubscribed_at + m.complained_at + m.callback_at, 0);
    assert_false(m.callback_encrypted);

    /* a delivery report before our own 'sent' is recorded: kept beside it */
    sp_store_delivery_event e = {"msg_a", SP_STORE_EVENT_DELIVERED, MS0 + 10, 0};
    sp_store_applied r = 0;
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, &e, 1, false, MS0 + 50, &r));
    assert_int_equal(r, SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_a");
    assert_int_equal(m.outbox.state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_DELIVERED);
    assert_int_equal(m.delivery_at, MS0 + 10);
    assert_int_equal(m.callback_at, MS0 + 50);
    assert_false(m.callback_encrypted);
    /* the same again: nothing new, but the callback's time and seal are kept */
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, &e, 1, true, MS0 + 60, &r));
    assert_int_equal(r, SP_STORE_APPLIED_SAME);
    m = suite_status(s, "acme", "msg_a");
    assert_int_equal(m.callback_at, MS0 + 60);
    assert_true(m.callback_encrypted);

    /* every engagement keeps its first time */
    const sp_store_event_kind kinds[] = {SP_STORE_EVENT_OPENED, SP_STORE_EVENT_CLICKED, SP_STORE_EVENT_REPLIED,
                                         SP_STORE_EVENT_UNSUBSCRIBED, SP_STORE_EVENT_COMPLAINED};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(suite_apply(s, "acme", "msg_a", kinds[i], MS0 + 100 + (int64_t)i, 0),
                         SP_STORE_APPLIED_CHANGED);
        assert_int_equal(suite_apply(s, "acme", "msg_a", kinds[i], MS0 + 500, 0), SP_STORE_APPLIED_SAME);
    }
    assert_int_equal(suite_apply(s, "acme", "msg_a", SP_STORE_EVENT_OPENED, MS0 + 90, 0), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_a");
    assert_int_equal(m.opened_at, MS0 + 90);
    assert_int_equal(m.clicked_at, MS0 + 101);
    assert_int_equal(m.replied_at, MS0 + 102);
    assert_int_equal(m.unsubscribed_at, MS0 + 103);
    assert_int_equal(m.complained_at, MS0 + 104);
    /* engagement on a delivered message leaves its delivery alone */
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_DELIVERED);
    assert_int_equal(m.delivery_at, MS0 + 10);

    /* failures and bounces carry their codes; a later failure wins */
    assert_int_equal(suite_apply(s, "acme", "msg_b", SP_STORE_EVENT_FAILED, MS0 + 10, 471), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_b");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_FAILED);
    assert_int_equal(m.failure_code, 471);
    assert_int_equal(suite_apply(s, "acme", "msg_b", SP_STORE_EVENT_BOUNCED, MS0 + 20, 550), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_b");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(m.delivery_at, MS0 + 20);
    assert_int_equal(m.failure_code, 550);
    /* an unsubscribe proves nothing about delivery */
    suite_send(s, "acme", "sms", "p1", "msg_c");
    assert_int_equal(suite_apply(s, "acme", "msg_c", SP_STORE_EVENT_UNSUBSCRIBED, MS0 + 5, 0),
                     SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_c", SP_STORE_EVENT_COMPLAINED, MS0 + 6, 0), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_c");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_NONE);
    assert_int_equal(m.unsubscribed_at, MS0 + 5);
    assert_int_equal(m.complained_at, MS0 + 6);

    /* a batch: in order, one result each, unknown ids ignored */
    sp_store_delivery_event batch[] = {{"msg_nope", SP_STORE_EVENT_DELIVERED, MS0, 0},
                                       {"msg_c", SP_STORE_EVENT_DELIVERED, MS0 + 7, 0},
                                       {"msg_c", SP_STORE_EVENT_DELIVERED, MS0 + 7, 0},
                                       {"msg_c", SP_STORE_EVENT_FAILED, MS0 + 8, 3}};
    sp_store_applied rs[4] = {0};
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, batch, 4, false, MS0 + 70, rs));
    assert_int_equal(rs[0], SP_STORE_APPLIED_UNKNOWN);
    assert_int_equal(rs[1], SP_STORE_APPLIED_CHANGED);
    assert_int_equal(rs[2], SP_STORE_APPLIED_SAME);
    assert_int_equal(rs[3], SP_STORE_APPLIED_CHANGED);
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, batch, 4, false, MS0 + 70, NULL));
    m = suite_status(s, "acme", "msg_c");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_FAILED);
    assert_int_equal(m.failure_code, 3);
    assert_string_equal(sp_store_delivery_name(SP_STORE_DELIVERY_BOUNCED), "bounced");
    assert_string_equal(sp_store_delivery_name(SP_STORE_DELIVERY_NONE), "");

    /* another tenant's message is unknown to this one, and left alone */
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    sp_store_delivery_event foreign = {"msg_b", SP_STORE_EVENT_DELIVERED, MS0 + 900, 0};
    assert_ok(sp_store_delivery_apply(s, "other", NULL, &foreign, 1, false, MS0 + 5555, &r));
    assert_int_equal(r, SP_STORE_APPLIED_UNKNOWN);
    m = suite_status(s, "acme", "msg_b");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(m.callback_at, MS0 + 999);
    assert_true(m.callback_encrypted);
    /* so is another channel's, to a caller that names its channel */
    suite_channel_kind(s, "acme", "mail", SP_STORE_CHANNEL_EMAIL);
    assert_ok(sp_store_delivery_apply(s, "acme", "mail", &foreign, 1, false, MS0 + 6666, &r));
    assert_int_equal(r, SP_STORE_APPLIED_UNKNOWN);
    m = suite_status(s, "acme", "msg_b");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(m.callback_at, MS0 + 999);
    sp_store_delivery_event stale = {"msg_b", SP_STORE_EVENT_DELIVERED, 1, 0};
    assert_ok(sp_store_delivery_apply(s, "acme", "sms", &stale, 1, false, MS0 + 7777, &r));
    assert_int_equal(r, SP_STORE_APPLIED_SAME); /* older than the bounce, but its own channel's: seen */
    assert_int_equal(suite_status(s, "acme", "msg_b").callback_at, MS0 + 7777);
    assert_rc(sp_store_delivery_apply(s, "acme", "bad name!", &foreign, 1, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_message_status none;
    memset(&none, 0x5a, sizeof none);
    assert_rc(sp_store_message_status_get(s, "other", "msg_b", &none), SP_ERR_NOT_FOUND);
    assert_int_equal((uint8_t)none.outbox.message_id[0], 0x5a);
    char profile[SP_STORE_MAX_ID + 1];
    sp_store_channel_kind kind = 0;
    assert_rc(sp_store_message_profile(s, "other", "msg_b", profile, &kind), SP_ERR_NOT_FOUND);
    assert_ok(sp_store_message_profile(s, "acme", "msg_b", profile, &kind));
    assert_string_equal(profile, "p1");
    assert_int_equal(kind, SP_STORE_CHANNEL_SMS);

    /* applied inside a transaction rolled back: nothing stays */
    suite_send(s, "acme", "sms", "p1", "msg_d");
    assert_ok(sp_store_begin(s));
    assert_int_equal(suite_apply(s, "acme", "msg_d", SP_STORE_EVENT_BOUNCED, MS0, 1), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_d", SP_STORE_EVENT_OPENED, MS0, 0), SP_STORE_APPLIED_CHANGED);
    sp_store_rollback(s);
    m = suite_status(s, "acme", "msg_d");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_NONE);
    assert_int_equal(m.opened_at + m.callback_at, 0);
    /* and a batch failing half-way leaves nothing either (here: a read-only
     * transaction refuses it before anything) */
    assert_ok(sp_store_begin_read(s));
    sp_store_delivery_event d = {"msg_d", SP_STORE_EVENT_DELIVERED, MS0, 0};
    assert_rc(sp_store_delivery_apply(s, "acme", NULL, &d, 1, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_rollback(s);
    assert_int_equal(suite_status(s, "acme", "msg_d").delivery, SP_STORE_DELIVERY_NONE);
}

/* Reports arriving in any order end in one outcome. */
static void test_delivery_out_of_order(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel_kind(s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(s, "acme", "p1", "{}", NULL, 0, T0);
    const char *ids[] = {"msg_1", "msg_2", "msg_3", "msg_4", "msg_5", "msg_6"};
    for (size_t i = 0; i < 6; i++) suite_send(s, "acme", "sms", "p1", ids[i]);

    /* a delivery older than the failure there: stays failed */
    assert_int_equal(suite_apply(s, "acme", "msg_1", SP_STORE_EVENT_FAILED, MS0 + 20, 7), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_1", SP_STORE_EVENT_DELIVERED, MS0 + 10, 0), SP_STORE_APPLIED_SAME);
    sp_store_message_status m = suite_status(s, "acme", "msg_1");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_FAILED);
    assert_int_equal(m.delivery_at, MS0 + 20);
    assert_int_equal(m.failure_code, 7);
    /* a bounce after a delivery, later: the bounce */
    assert_int_equal(suite_apply(s, "acme", "msg_2", SP_STORE_EVENT_DELIVERED, MS0 + 10, 0), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_2", SP_STORE_EVENT_BOUNCED, MS0 + 30, 550), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_status(s, "acme", "msg_2").delivery, SP_STORE_DELIVERY_BOUNCED);
    /* a tie goes to the graver, whichever came first */
    assert_int_equal(suite_apply(s, "acme", "msg_3", SP_STORE_EVENT_BOUNCED, MS0 + 10, 1), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_3", SP_STORE_EVENT_FAILED, MS0 + 10, 2), SP_STORE_APPLIED_SAME);
    assert_int_equal(suite_apply(s, "acme", "msg_3", SP_STORE_EVENT_DELIVERED, MS0 + 10, 0), SP_STORE_APPLIED_SAME);
    assert_int_equal(suite_apply(s, "acme", "msg_4", SP_STORE_EVENT_DELIVERED, MS0 + 10, 0), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_4", SP_STORE_EVENT_FAILED, MS0 + 10, 2), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_4", SP_STORE_EVENT_BOUNCED, MS0 + 10, 1), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_status(s, "acme", "msg_3").delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(suite_status(s, "acme", "msg_4").delivery, SP_STORE_DELIVERY_BOUNCED);
    assert_int_equal(suite_status(s, "acme", "msg_4").failure_code, 1);
    /* an open before the delivery report: delivered at the open, and the
     * report, older, changes nothing */
    assert_int_equal(suite_apply(s, "acme", "msg_5", SP_STORE_EVENT_OPENED, MS0 + 40, 0), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_5");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_DELIVERED);
    assert_int_equal(m.delivery_at, MS0 + 40);
    assert_int_equal(suite_apply(s, "acme", "msg_5", SP_STORE_EVENT_DELIVERED, MS0 + 35, 0), SP_STORE_APPLIED_SAME);
    assert_int_equal(suite_status(s, "acme", "msg_5").delivery_at, MS0 + 40);
    /* a click after a failure report: the click is kept, the failure too */
    assert_int_equal(suite_apply(s, "acme", "msg_6", SP_STORE_EVENT_FAILED, MS0 + 10, 4), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_apply(s, "acme", "msg_6", SP_STORE_EVENT_CLICKED, MS0 + 50, 0), SP_STORE_APPLIED_CHANGED);
    m = suite_status(s, "acme", "msg_6");
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_FAILED);
    assert_int_equal(m.failure_code, 4);
    assert_int_equal(m.clicked_at, MS0 + 50);

    /* every order of two sets of five reports: the same end each time */
    const sp_store_delivery_event sets[2][5] = {
        {{NULL, SP_STORE_EVENT_DELIVERED, MS0 + 10, 0},
         {NULL, SP_STORE_EVENT_DELIVERED, MS0 + 30, 0},
         {NULL, SP_STORE_EVENT_FAILED, MS0 + 20, 5},
         {NULL, SP_STORE_EVENT_OPENED, MS0 + 15, 0},
         {NULL, SP_STORE_EVENT_CLICKED, MS0 + 5, 0}},
        {{NULL, SP_STORE_EVENT_DELIVERED, MS0 + 10, 0},
         {NULL, SP_STORE_EVENT_FAILED, MS0 + 20, 5},
         {NULL, SP_STORE_EVENT_BOUNCED, MS0 + 20, 7},
         {NULL, SP_STORE_EVENT_OPENED, MS0 + 15, 0},
         {NULL, SP_STORE_EVENT_FAILED, MS0 + 20, 9}},
    };
    const sp_store_delivery want_state[2] = {SP_STORE_DELIVERY_DELIVERED, SP_STORE_DELIVERY_BOUNCED};
    const int64_t want_at[2] = {MS0 + 30, MS0 + 20};
    const int want_code[2] = {0, 7};
    const int64_t want_clicked[2] = {MS0 + 5, 0};
    assert_ok(sp_store_begin(s));
    for (int set = 0; set < 2; set++) {
        for (int perm = 0; perm < 120; perm++) {
            /* the perm-th permutation, by its factorial digits */
            int pool[5] = {0, 1, 2, 3, 4}, left = 5, k = perm;
            sp_store_delivery_event ev[5];
            char mid[32];
            snprintf(mid, sizeof mid, "msg_p%d_%d", set, perm);
            suite_send(s, "acme", "sms", "p1", mid);
            for (int i = 0; i < 5; i++) {
                int fact = 1;
                for (int j = 2; j < left; j++) fact *= j;
                int pick = k / fact;
                k %= fact;
                ev[i] = sets[set][pool[pick]];
                ev[i].message_id = mid;
                for (int j = pick; j < left - 1; j++) pool[j] = pool[j + 1];
                left--;
            }
            /* one event per call for half of them, one batch for the others */
            if (perm % 2) {
                for (int i = 0; i < 5; i++) assert_ok(sp_store_delivery_apply(s, "acme", NULL, &ev[i], 1, false, MS0, NULL));
            } else {
                assert_ok(sp_store_delivery_apply(s, "acme", NULL, ev, 5, false, MS0, NULL));
            }
            m = suite_status(s, "acme", mid);
            assert_int_equal(m.delivery, want_state[set]);
            assert_int_equal(m.delivery_at, want_at[set]);
            assert_int_equal(m.failure_code, want_code[set]);
            assert_int_equal(m.opened_at, MS0 + 15);
            assert_int_equal(m.clicked_at, want_clicked[set]);
        }
    }
    assert_ok(sp_store_commit(s));
}

typedef struct {
    int codes[8];
    uint64_t failed[8], bounced[8];
    size_t n;
    sp_store_stats_bucket buckets[16];
    size_t nb;
} suite_report;

static sp_error suite_collect_code(void *arg, int code, uint64_t failed, uint64_t bounced) {
    suite_report *r = arg;
    if (r->n == 8) return SP_ERR_TOO_LARGE;
    r->codes[r->n] = code;
    r->failed[r->n] = failed;
    r->bounced[r->n++] = bounced;
    return SP_OK;
}

static sp_error suite_collect_bucket(void *arg, const sp_store_stats_bucket *b) {
    suite_report *r = arg;
    if (r->nb == 16) return SP_ERR_TOO_LARGE;
    r->buckets[r->nb++] = *b;
    return SP_OK;
}

static sp_store_campaign_stats suite_stats(sp_store *s, const char *tenant, const char *campaign) {
    sp_store_campaign_stats c;
    memset(&c, 0x5a, sizeof c);
    assert_ok(sp_store_campaign_stats_get(s, tenant, campaign, &c));
    return c;
}

/* A campaign whose every message's fate is known: 40 messages in eight
 * patterns of five, plus three more left queued or sending. The expected
 * numbers are counted here from the patterns, not from the store's rules. */
static void test_campaign_stats(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    enum { N = 40, MIN = 60000 };
    suite_channel_kind(s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_campaign(s, "acme", "camp", "sms");
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "u%02d", i);
        suite_upsert(s, "acme", id, "{}", NULL, 0, T0);
    }
    assert_int_equal(suite_expand_all(s, "acme", "camp", MS0), N);
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w", MS0, 60000, 64, &got), N);
    /* time zero of the campaign: a minute boundary */
    const int64_t base = (MS0 / MIN + 10) * MIN;
    struct {
        int sent, delivered, failed, bounced, dead, opened, clicked, replied, unsub, complained;
    } want = {0};
    int64_t want_sent[8] = {0}, want_delivered[8] = {0}, want_failed[8] = {0}, want_bounced[8] = {0},
            want_opened[8] = {0}, want_clicked[8] = {0}, want_replied[8] = {0}; /* per minute after base */
    uint64_t want_code_failed[2] = {0}, want_code_bounced[2] = {0};     /* codes 30, 550 */
    for (size_t i = 0; i < got.n; i++) {
        const char *mid = got.msgs[i].message_id;
        uint64_t seq = got.seqs[i];
        int pattern = (int)(i % 8);
        int64_t sent_at = base + (int64_t)(i % 3) * MIN; /* minutes 0..2 */
        int64_t t = base + 3 * MIN + (int64_t)(i % 2) * MIN; /* reports: minutes 3..4 */
        int sm = (int)(i % 3), tm = 3 + (int)(i % 2);
        if (pattern == 5) {
            assert_ok(sp_store_outbox_fail(s, "w", &seq, 1, SP_STORE_OUTBOX_FAILED, "refused", 400, sent_at, NULL));
            want.failed++;
            continue;
        }
        if (pattern == 6) {
            assert_ok(sp_store_outbox_fail(s, "w", &seq, 1, SP_STORE_OUTBOX_DEAD, "gone", 503, sent_at, NULL));
            want.dead++;
            continue;
        }
        assert_ok(sp_store_outbox_done(s, "w", &seq, 1, sent_at, NULL));
        want_sent[sm]++;
        switch (pattern) {
        case 0: /* no report yet */
            want.sent++;
            break;
        case 1:
            suite_apply(s, "acme", mid, SP_STORE_EVENT_DELIVERED, t, 0);
            want.delivered++;
            want_delivered[tm]++;
            break;
        case 2:
            suite_apply(s, "acme", mid, SP_STORE_EVENT_DELIVERED, t, 0);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_OPENED, t + 2 * MIN, 0);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_CLICKED, t + 3 * MIN, 0);
            want.delivered++;
            want.opened++;
            want.clicked++;
            want_delivered[tm]++;
            want_opened[tm + 2]++;
            want_clicked[tm + 3]++;
            break;
        case 3:
            suite_apply(s, "acme", mid, SP_STORE_EVENT_FAILED, t, 30);
            want.failed++;
            want_failed[tm]++;
            want_code_failed[0]++;
            break;
        case 4:
            suite_apply(s, "acme", mid, SP_STORE_EVENT_BOUNCED, t, 550);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_DELIVERED, t - 1, 0);
            want.bounced++;
            want_bounced[tm]++;
            want_code_bounced[1]++;
            break;
        default: /* 7: engagement only */
            suite_apply(s, "acme", mid, SP_STORE_EVENT_OPENED, t, 0);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_REPLIED, t, 0);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_UNSUBSCRIBED, t + MIN, 0);
            suite_apply(s, "acme", mid, SP_STORE_EVENT_COMPLAINED, t + MIN, 0);
            want.delivered++;
            want.opened++;
            want.replied++;
            want.unsub++;
            want.complained++;
            want_delivered[tm]++;
            want_opened[tm]++;
            want_replied[tm]++;
            break;
        }
    }
    /* three newcomers: two stay queued, one is being sent */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "late%d", i);
        suite_upsert(s, "acme", id, "{}", NULL, 0, T0);
    }
    assert_int_equal(suite_expand_all(s, "acme", "camp", MS0 + 1), 3);
    assert_int_equal(suite_claim(s, "w", MS0 + 1, 60000, 1, &got), 1);

    sp_store_campaign_stats c = suite_stats(s, "acme", "camp");
    assert_int_equal(c.total, N + 3);
    assert_int_equal(c.queued, 2);
    assert_int_equal(c.sending, 1);
    assert_int_equal(c.sent, want.sent);
    assert_int_equal(c.delivered, want.delivered);
    assert_int_equal(c.failed, want.failed);
    assert_int_equal(c.bounced, want.bounced);
    assert_int_equal(c.dead, want.dead);
    assert_int_equal(c.queued + c.sending + c.sent + c.delivered + c.failed + c.bounced + c.dead, c.total);
    assert_int_equal(c.opened, want.opened);
    assert_int_equal(c.clicked, want.clicked);
    assert_int_equal(c.replied, want.replied);
    assert_int_equal(c.unsubscribed, want.unsub);
    assert_int_equal(c.complained, want.complained);

    suite_report r;
    memset(&r, 0, sizeof r);
    assert_ok(sp_store_campaign_failure_codes(s, "acme", "camp", suite_collect_code, &r));
    assert_int_equal(r.n, 2);
    assert_int_equal(r.codes[0], 30);
    assert_int_equal(r.failed[0], want_code_failed[0]);
    assert_int_equal(r.bounced[0], 0);
    assert_int_equal(r.codes[1], 550);
    assert_int_equal(r.failed[1], 0);
    assert_int_equal(r.bounced[1], want_code_bounced[1]);

    assert_ok(sp_store_campaign_timeline(s, "acme", "camp", MIN, 100, suite_collect_bucket, &r));
    size_t nb = 0;
    for (int m = 0; m < 8; m++) {
        bool any = want_sent[m] || want_delivered[m] || want_failed[m] || want_bounced[m] || want_opened[m] ||
                   want_clicked[m] || want_replied[m];
        if (!any) continue;
        assert_true(nb < r.nb);
        const sp_store_stats_bucket *b = &r.buckets[nb++];
        assert_int_equal(b->start_ms, base + m * MIN);
        assert_int_equal(b->sent, want_sent[m]);
        assert_int_equal(b->delivered, want_delivered[m]);
        assert_int_equal(b->failed, want_failed[m]);
        assert_int_equal(b->bounced, want_bounced[m]);
        assert_int_equal(b->opened, want_opened[m]);
        assert_int_equal(b->clicked, want_clicked[m]);
        assert_int_equal(b->replied, want_replied[m]);
    }
    assert_int_equal(r.nb, nb);
    /* at most max_buckets, the earliest; one big bucket holds everything */
    r.nb = 0;
    assert_ok(sp_store_campaign_timeline(s, "acme", "camp", MIN, 2, suite_collect_bucket, &r));
    assert_int_equal(r.nb, 2);
    assert_int_equal(r.buckets[0].start_ms, base);
    assert_int_equal(r.buckets[1].start_ms, base + MIN);
    r.nb = 0;
    const int64_t day = (int64_t)24 * 3600 * 1000;
    assert_ok(sp_store_campaign_timeline(s, "acme", "camp", day, 10, suite_collect_bucket, &r));
    assert_true(r.nb >= 1 && r.nb <= 2); /* base may sit near a day's end */
    uint64_t sent_total = 0;
    for (size_t i = 0; i < r.nb; i++) {
        assert_int_equal(r.buckets[i].start_ms % day, 0);
        sent_total += r.buckets[i].sent;
    }
    assert_int_equal(sent_total, N - 2 * (N / 8));

    /* a callback's error stops the walk and is returned */
    r.nb = 16;
    assert_rc(sp_store_campaign_timeline(s, "acme", "camp", MIN, 100, suite_collect_bucket, &r), SP_ERR_TOO_LARGE);

    /* test sends count apart, under campaign NULL; other campaigns and
     * tenants count nothing here */
    suite_upsert(s, "acme", "tester", "{}", NULL, 0, T0);
    suite_send(s, "acme", "sms", "tester", "msg_test_1");
    suite_send(s, "acme", "sms", "tester", "msg_test_2");
    suite_apply(s, "acme", "msg_test_1", SP_STORE_EVENT_FAILED, base, 12);
    c = suite_stats(s, "acme", NULL);
    assert_int_equal(c.total, 2);
    assert_int_equal(c.queued, 1);
    assert_int_equal(c.failed, 1);
    memset(&r, 0, sizeof r);
    assert_ok(sp_store_campaign_failure_codes(s, "acme", NULL, suite_collect_code, &r));
    assert_int_equal(r.n, 1);
    assert_int_equal(r.codes[0], 12);
    assert_ok(sp_store_campaign_timeline(s, "acme", NULL, MIN, 100, suite_collect_bucket, &r));
    assert_int_equal(r.nb, 1);
    assert_int_equal(r.buckets[0].failed, 1);
    assert_int_equal(r.buckets[0].sent, 0);
    c = suite_stats(s, "acme", "nope");
    assert_int_equal(c.total + c.queued + c.opened, 0);
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    c = suite_stats(s, "other", "camp");
    assert_int_equal(c.total, 0);
}

static bool suite_is_suppressed(sp_store *s, const char *profile, sp_store_channel_kind kind, const char *why) {
    bool suppressed = false;
    char reason[SP_STORE_MAX_REASON + 1] = "x";
    assert_ok(sp_store_suppressed(s, "acme", profile, kind, &suppressed, reason));
    if (suppressed && why) assert_string_equal(reason, why);
    if (!suppressed) assert_string_equal(reason, "");
    return suppressed;
}

static void test_suppression(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel_kind(s, "acme", "mail", SP_STORE_CHANNEL_EMAIL);
    suite_channel_kind(s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(s, "acme", "p1", "{}", NULL, 0, T0);
    suite_upsert(s, "acme", "p2", "{}", NULL, 0, T0);
    suite_campaign(s, "acme", "mails", "mail");
    assert_int_equal(suite_expand_all(s, "acme", "mails", MS0), 2);
    suite_send(s, "acme", "mail", "p1", "msg_mail_test");
    suite_send(s, "acme", "sms", "p1", "msg_sms_test");
    suite_send(s, "acme", "mail", "p1", "msg_mail_claimed");
    /* one email of p1's is being sent: it finishes its attempt */
    suite_claimed got;
    assert_int_equal(suite_claim(s, "w", MS0, 60000, 64, &got), 5);
    uint64_t keep[4];
    size_t nkeep = 0;
    for (size_t i = 0; i < got.n; i++)
        if (strcmp(got.msgs[i].message_id, "msg_mail_claimed") != 0) keep[nkeep++] = got.seqs[i];
    assert_int_equal(nkeep, 4);
    assert_ok(sp_store_outbox_defer(s, "w", keep, nkeep, MS0, "kms", MS0, NULL)); /* back to queued */

    assert_false(suite_is_suppressed(s, "p1", SP_STORE_CHANNEL_EMAIL, NULL));
    uint64_t cancelled = 99;
    assert_ok(sp_store_suppress(s, "acme", "p1", SP_STORE_CHANNEL_EMAIL, "hard_bounce", MS0 + 5, &cancelled));
    assert_int_equal(cancelled, 2); /* the campaign's email and the test email */
    assert_true(suite_is_suppressed(s, "p1", SP_STORE_CHANNEL_EMAIL, "hard_bounce"));
    assert_false(suite_is_suppressed(s, "p1", SP_STORE_CHANNEL_SMS, NULL));
    assert_false(suite_is_suppressed(s, "p2", SP_STORE_CHANNEL_EMAIL, NULL));
    sp_store_outbox_row row = suite_message(s, "msg_mail_test");
    assert_int_equal(row.state, SP_STORE_OUTBOX_FAILED);
    assert_string_equal(row.last_error, "suppressed: hard_bounce");
    assert_int_equal(row.updated, MS0 + 5);
    assert_int_equal(suite_message(s, "msg_sms_test").state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(suite_message(s, "msg_mail_claimed").state, SP_STORE_OUTBOX_SENDING);
    sp_store_outbox_counts n = suite_counts(s, "acme", "mails");
    assert_int_equal(n.failed, 1);
    assert_int_equal(n.queued, 1); /* p2's */
    /* again: the first reason stays; what was queued since is cancelled */
    suite_send(s, "acme", "mail", "p1", "msg_mail_later");
    assert_ok(sp_store_suppress(s, "acme", "p1", SP_STORE_CHANNEL_EMAIL, "complained", MS0 + 9, &cancelled));
    assert_int_equal(cancelled, 1);
    assert_true(suite_is_suppressed(s, "p1", SP_STORE_CHANNEL_EMAIL, "hard_bounce"));
    assert_string_equal(suite_message(s, "msg_mail_later").last_error, "suppressed: hard_bounce");
    assert_ok(sp_store_suppress(s, "acme", "p1", SP_STORE_CHANNEL_EMAIL, "complained", MS0 + 9, NULL));

    /* expanding skips p1 for email, not for SMS */
    suite_upsert(s, "acme", "p3", "{}", NULL, 0, T0);
    suite_campaign(s, "acme", "mails2", "mail");
    const char *list[] = {"p1", "p3"};
    sp_store_audience ids = {.kind = SP_STORE_AUDIENCE_IDS, .ids = list, .n_ids = 2};
    uint64_t added = 0;
    assert_ok(sp_store_outbox_expand(s, "acme", "mails2", &ids, MS0, &added));
    assert_int_equal(added, 1);
    assert_int_equal(suite_expand_all(s, "acme", "mails2", MS0), 1); /* p2 */
    sp_store_audience attr = {.kind = SP_STORE_AUDIENCE_ATTRIBUTE, .attribute = "a", .text = "b"};
    suite_upsert(s, "acme", "p1", "{\"a\":\"b\"}", NULL, 0, T0);
    assert_ok(sp_store_outbox_expand(s, "acme", "mails2", &attr, MS0, &added));
    assert_int_equal(added, 0);
    suite_campaign(s, "acme", "texts", "sms");
    assert_int_equal(suite_expand_all(s, "acme", "texts", MS0), 3);

    /* lifted: expand takes p1 again */
    assert_ok(sp_store_unsuppress(s, "acme", "p1", SP_STORE_CHANNEL_EMAIL));
    assert_rc(sp_store_unsuppress(s, "acme", "p1", SP_STORE_CHANNEL_EMAIL), SP_ERR_NOT_FOUND);
    assert_false(suite_is_suppressed(s, "p1", SP_STORE_CHANNEL_EMAIL, NULL));
    assert_ok(sp_store_outbox_expand(s, "acme", "mails2", &attr, MS0, &added));
    assert_int_equal(added, 1);

    /* an unknown profile: NOT_FOUND, and the transaction goes on */
    assert_ok(sp_store_begin(s));
    assert_rc(sp_store_suppress(s, "acme", "ghost", SP_STORE_CHANNEL_SMS, "opt_out", MS0, &cancelled),
              SP_ERR_NOT_FOUND);
    assert_ok(sp_store_suppress(s, "acme", "p2", SP_STORE_CHANNEL_SMS, "opt_out", MS0, &cancelled));
    assert_int_equal(cancelled, 1); /* p2's text */
    assert_ok(sp_store_commit(s));
    assert_true(suite_is_suppressed(s, "p2", SP_STORE_CHANNEL_SMS, "opt_out"));
    /* rolled back: never suppressed */
    assert_ok(sp_store_begin(s));
    assert_ok(sp_store_suppress(s, "acme", "p3", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    sp_store_rollback(s);
    assert_false(suite_is_suppressed(s, "p3", SP_STORE_CHANNEL_SMS, NULL));

    /* a profile's delete takes its suppressions */
    assert_ok(sp_store_suppress(s, "acme", "p3", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    assert_ok(sp_store_profile_delete(s, "acme", "p3"));
    suite_upsert(s, "acme", "p3", "{}", NULL, 0, T0);
    assert_false(suite_is_suppressed(s, "p3", SP_STORE_CHANNEL_SMS, NULL));
    /* and another tenant's profile of the same id is another profile */
    assert_ok(sp_store_tenant_create(s, "other", "{}", 2, T0));
    assert_rc(sp_store_suppress(s, "other", "p2", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL), SP_ERR_NOT_FOUND);
}

/* A version 2 database (the version 3 objects taken away behind the
 * store's back) is brought to the current version and keeps its messages, which can
 * then be tracked. */
static void test_migration_to_tracking(void **state) {
    suite_fixture *f = *state;
    suite_channel_kind(f->s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(f->s, "acme", "p1", "{}", NULL, 0, T0);
    suite_send(f->s, "acme", "sms", "p1", "msg_old");
    sp_store_close(f->s);
    f->s = NULL;
    suite_downgrade_to_2(f->url);
    assert_ok(sp_store_open(f->url, &f->s));
    assert_int_equal(sp_store_schema_version(f->s), 5);
    sp_store_message_status m = suite_status(f->s, "acme", "msg_old");
    assert_int_equal(m.outbox.state, SP_STORE_OUTBOX_QUEUED);
    assert_int_equal(m.delivery, SP_STORE_DELIVERY_NONE);
    assert_false(m.callback_encrypted);
    assert_int_equal(suite_apply(f->s, "acme", "msg_old", SP_STORE_EVENT_DELIVERED, MS0, 0), SP_STORE_APPLIED_CHANGED);
    assert_int_equal(suite_stats(f->s, "acme", NULL).delivered, 1);
    assert_ok(sp_store_suppress(f->s, "acme", "p1", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL));
    bool fresh = false;
    assert_ok(sp_store_callback_record(f->s, "acme", "wh", MS0, &fresh));
    assert_true(fresh);
}

static sp_error suite_no_code(void *arg, int code, uint64_t failed, uint64_t bounced) {
    (void)arg;
    (void)code;
    (void)failed;
    (void)bounced;
    return SP_OK;
}

static sp_error suite_no_bucket(void *arg, const sp_store_stats_bucket *b) {
    (void)arg;
    (void)b;
    return SP_OK;
}

static void test_tracking_arguments(void **state) {
    suite_fixture *f = *state;
    sp_store *s = f->s;
    suite_channel_kind(s, "acme", "sms", SP_STORE_CHANNEL_SMS);
    suite_upsert(s, "acme", "p", "{}", NULL, 0, T0);
    suite_send(s, "acme", "sms", "p", "msg_x");
    bool b = false;
    char long_id[SP_STORE_MAX_WEBHOOK_ID + 2];
    memset(long_id, 'w', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    const char *bad_ids[] = {NULL, "", "with space", "tab\t", "caf\xc3\xa9", "del\x7f", long_id};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_ids); i++) {
        assert_rc(sp_store_callback_seen(s, "acme", bad_ids[i], &b), SP_ERR_INVALID_ARGUMENT);
        assert_rc(sp_store_callback_record(s, "acme", bad_ids[i], MS0, &b), SP_ERR_INVALID_ARGUMENT);
    }
    assert_rc(sp_store_callback_seen(NULL, "acme", "w", &b), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_seen(s, "Acme", "w", &b), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_seen(s, "acme", "w", NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_record(s, "acme", "w", 0, &b), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_record(s, "acme", "w", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_prune(s, 0, 10, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_prune(s, MS0, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_callback_prune(s, MS0, 100001, NULL), SP_ERR_INVALID_ARGUMENT);

    /* events: every field checked, the whole batch refused for one */
    sp_store_delivery_event good = {"msg_x", SP_STORE_EVENT_DELIVERED, MS0, 0};
    sp_store_delivery_event bad[] = {
        {NULL, SP_STORE_EVENT_DELIVERED, MS0, 0},     {"", SP_STORE_EVENT_DELIVERED, MS0, 0},
        {"msg x", SP_STORE_EVENT_DELIVERED, MS0, 0},  {"msg_x", 0, MS0, 0},
        {"msg_x", SP_STORE_EVENT_COMPLAINED + 1, MS0, 0}, {"msg_x", SP_STORE_EVENT_DELIVERED, 0, 0},
        {"msg_x", SP_STORE_EVENT_FAILED, MS0, -1},    {"msg_x", SP_STORE_EVENT_BOUNCED, MS0, 100000},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        sp_store_delivery_event two[2] = {good, bad[i]};
        assert_rc(sp_store_delivery_apply(s, "acme", NULL, two, 2, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    }
    sp_store_delivery_event *many = calloc(SP_STORE_MAX_BATCH + 1, sizeof *many);
    assert_non_null(many);
    for (size_t i = 0; i <= SP_STORE_MAX_BATCH; i++) many[i] = good;
    assert_rc(sp_store_delivery_apply(s, "acme", NULL, many, SP_STORE_MAX_BATCH + 1, false, MS0, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_delivery_apply(s, "acme", NULL, many, 0, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    free(many);
    assert_rc(sp_store_delivery_apply(s, "acme", NULL, NULL, 1, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_delivery_apply(s, "acme", NULL, &good, 1, false, 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_delivery_apply(s, "", NULL, &good, 1, false, MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    /* the top code is allowed; any code on a non-failure is ignored */
    sp_store_delivery_event top = {"msg_x", SP_STORE_EVENT_FAILED, MS0, 99999};
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, &top, 1, false, MS0, NULL));
    sp_store_delivery_event later = {"msg_x", SP_STORE_EVENT_DELIVERED, MS0 + 1, 42};
    assert_ok(sp_store_delivery_apply(s, "acme", NULL, &later, 1, false, MS0, NULL));
    assert_int_equal(suite_status(s, "acme", "msg_x").failure_code, 0);

    char profile[SP_STORE_MAX_ID + 1];
    sp_store_channel_kind kind;
    assert_rc(sp_store_message_profile(s, "acme", "msg x", profile, &kind), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_message_profile(s, "acme", "msg_x", NULL, &kind), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_message_profile(s, "acme", "msg_x", profile, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_store_message_status st;
    assert_rc(sp_store_message_status_get(s, "acme", "", &st), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_message_status_get(s, "acme", "msg_x", NULL), SP_ERR_INVALID_ARGUMENT);

    /* suppressions */
    char long_reason[SP_STORE_MAX_REASON + 2];
    memset(long_reason, 'r', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = 0;
    const char *bad_reasons[] = {NULL, "", "Hard_bounce", "hard-bounce", "opt out", "x1", long_reason};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_reasons); i++)
        assert_rc(sp_store_suppress(s, "acme", "p", SP_STORE_CHANNEL_SMS, bad_reasons[i], MS0, NULL),
                  SP_ERR_INVALID_ARGUMENT);
    long_reason[SP_STORE_MAX_REASON] = 0;
    assert_ok(sp_store_suppress(s, "acme", "p", SP_STORE_CHANNEL_EMAIL, long_reason, MS0, NULL));
    assert_rc(sp_store_suppress(s, "acme", "p", 0, "opt_out", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_suppress(s, "acme", "p", 3, "opt_out", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_suppress(s, "acme", "", SP_STORE_CHANNEL_SMS, "opt_out", MS0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_suppress(s, "acme", "p", SP_STORE_CHANNEL_SMS, "opt_out", 0, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_suppressed(s, "acme", "p", SP_STORE_CHANNEL_SMS, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_suppressed(s, "acme", "p", 9, &b, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_suppressed(s, "acme", "p", SP_STORE_CHANNEL_EMAIL, &b, NULL));
    assert_true(b);
    assert_rc(sp_store_unsuppress(s, "acme", "p", 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_unsuppress(s, "acme", "p\n", SP_STORE_CHANNEL_SMS), SP_ERR_INVALID_ARGUMENT);

    /* statistics */
    sp_store_campaign_stats cs;
    assert_rc(sp_store_campaign_stats_get(s, "acme", "Bad", &cs), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_stats_get(s, "acme", NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_failure_codes(s, "acme", "c", NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_failure_codes(s, "a b", "c", suite_no_code, NULL), SP_ERR_INVALID_ARGUMENT);
    const int64_t day = (int64_t)24 * 3600 * 1000;
    assert_rc(sp_store_campaign_timeline(s, "acme", "c", 999, 10, suite_no_bucket, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_timeline(s, "acme", "c", 31 * day + 1, 10, suite_no_bucket, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_timeline(s, "acme", "c", 1000, 0, suite_no_bucket, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_timeline(s, "acme", "c", 1000, 10001, suite_no_bucket, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_store_campaign_timeline(s, "acme", "c", 1000, 10, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_store_campaign_timeline(s, "acme", NULL, 31 * day, 10000, suite_no_bucket, NULL));
    assert_ok(sp_store_campaign_timeline(s, "acme", "c", 1000, 1, suite_no_bucket, NULL));
}

#define SUITE_TEST(fn) cmocka_unit_test_setup_teardown(fn, suite_setup, suite_teardown)
#define SUITE_TESTS                                                                                              \
    SUITE_TEST(test_migrations), SUITE_TEST(test_tenants), SUITE_TEST(test_credentials), SUITE_TEST(test_profiles), \
        SUITE_TEST(test_find_by_index), SUITE_TEST(test_profile_get_many), SUITE_TEST(test_delete_and_events),                                      \
        SUITE_TEST(test_tenant_delete_takes_everything), SUITE_TEST(test_transactions), SUITE_TEST(test_arguments), \
        SUITE_TEST(test_allocation_failures), SUITE_TEST(test_two_connections), SUITE_TEST(test_keyring_storage), \
        SUITE_TEST(test_import_keyring_file), SUITE_TEST(test_migration_to_outbox), SUITE_TEST(test_channels),   \
        SUITE_TEST(test_campaigns), SUITE_TEST(test_outbox_expand), SUITE_TEST(test_campaign_expand_pages), SUITE_TEST(test_campaign_expand_leased), SUITE_TEST(test_outbox_state_machine), SUITE_TEST(test_outbox_defer),       \
        SUITE_TEST(test_outbox_lease_expiry), SUITE_TEST(test_outbox_arguments),                                 \
        SUITE_TEST(test_outbox_allocation_failures), SUITE_TEST(test_outbox_two_processes),                    \
        SUITE_TEST(test_callbacks_seen), SUITE_TEST(test_delivery_apply), SUITE_TEST(test_delivery_out_of_order), \
        SUITE_TEST(test_campaign_stats), SUITE_TEST(test_suppression), SUITE_TEST(test_migration_to_tracking),    \
        SUITE_TEST(test_tracking_arguments)

#endif
