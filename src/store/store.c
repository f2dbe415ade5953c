/*
 * The store (include/sealpost/store.h): the dispatcher.
 *
 * A URL picks the driver (sqlite: or postgres[ql]://), and everything above
 * the driver lives here once: checking every argument before the database
 * sees it (names by charset and length, documents by size, no NUL bytes in
 * text), the schema migrations, transactions, and each operation as a few
 * numbered statements the driver runs in its own dialect. A write that
 * takes several statements runs in a transaction of its own unless the
 * caller has one open, so a failure never leaves half of it behind.
 *
 * The keyring's storage (sp_keyring_storage over one row of `keyrings`) and
 * the import of keyring files are here too: they are a few statements on a
 * connection of their own.
 */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "keyring/keyring_internal.h"
#include "sealpost/crypto.h"
#include "store/store_internal.h"

/* ---- argument checks ---- */

static bool sp_chars_ok(const char *s, size_t min, size_t max, const char *extra, bool upper) {
    if (s == NULL) return false;
    size_t n = strnlen(s, max + 1);
    if (n < min || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper && c >= 'A' && c <= 'Z') ||
                  (c != 0 && strchr(extra, c) != NULL);
        if (!ok) return false;
    }
    return true;
}

/* Tenant ids: [a-z0-9_-]{1,64}. */
static bool sp_tenant_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_TENANT, "_-", false); }
/* Keyring names: [A-Za-z0-9_.-]{1,64}. */
static bool sp_keyring_name_ok(const char *s) { return sp_chars_ok(s, 1, SP_KEYRING_MAX_NAME, "_.-", true); }
static bool sp_field_ok(const char *s) { return sp_chars_ok(s, 1, SP_VAULT_MAX_FIELD, "_", false); }
static bool sp_event_name_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_EVENT_NAME, "_.:-", true); }

/* Profile and event ids: printable ASCII, 1..SP_STORE_MAX_ID. */
static bool sp_id_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_STORE_MAX_ID + 1);
    if (n < 1 || n > SP_STORE_MAX_ID) return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e) return false;
    }
    return true;
}

/* A document: present, 1..max bytes, no NUL inside (both databases keep
 * text, and one of them refuses NUL in it). */
static sp_error sp_doc_ok(const char *doc, size_t len, size_t max) {
    SP_ENSURE(doc != NULL && len > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len <= max, SP_ERR_TOO_LARGE);
    SP_ENSURE(memchr(doc, 0, len) == NULL, SP_ERR_INVALID_ARGUMENT);
    return SP_OK;
}

/* ---- parameters ---- */

static sp_store_param sp_p_text(const char *s) { return (sp_store_param){SP_STORE_TEXT, s, strlen(s), 0}; }
static sp_store_param sp_p_textn(const char *s, size_t n) { return (sp_store_param){SP_STORE_TEXT, s, n, 0}; }
static sp_store_param sp_p_blob(const void *b, size_t n) { return (sp_store_param){SP_STORE_BLOB, b, n, 0}; }
static sp_store_param sp_p_int(int64_t v) { return (sp_store_param){SP_STORE_INT, NULL, 0, v}; }

/* ---- running statements ---- */

/* Every write goes through here, so a read-only transaction refuses them
 * all in one place. */
static sp_error sp_q_exec(sp_store *s, sp_store_q q, const sp_store_param *p, size_t n, uint64_t *changes) {
    SP_ENSURE(!(s->in_tx && s->read_only), SP_ERR_INVALID_ARGUMENT);
    sp_error rc = s->drv->run(s->db, q, p, n, changes);
    s->drv->finish(s->db);
    return rc;
}

/* The first column of the first row as an integer; found false without a
 * row. */
static sp_error sp_q_int(sp_store *s, sp_store_q q, const sp_store_param *p, size_t n, int64_t *out, bool *found) {
    bool row = false;
    sp_error rc = s->drv->run(s->db, q, p, n, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && row) *out = s->drv->col_int(s->db, 0);
    s->drv->finish(s->db);
    if (found) *found = row;
    return rc;
}

static sp_error sp_q_count(sp_store *s, sp_store_q q, const sp_store_param *p, size_t n, uint64_t *count) {
    int64_t v = 0;
    SP_GUARD(sp_q_int(s, q, p, n, &v, NULL));
    *count = v > 0 ? (uint64_t)v : 0;
    return SP_OK;
}

/* Copies a text column into a NUL-terminated buffer of cap bytes. */
static sp_error sp_col_name(sp_store *s, int col, char *out, size_t cap) {
    size_t len = 0;
    const uint8_t *b = s->drv->col_bytes(s->db, col, &len);
    SP_ENSURE(b != NULL && len < cap, SP_ERR_STORE);
    memcpy(out, b, len);
    out[len] = 0;
    return SP_OK;
}

/* ---- transactions ---- */

static sp_error sp_store_begin_as(sp_store *store, sp_store_q begin, bool read_only) {
    SP_ENSURE(store != NULL && !store->in_tx, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(store->drv->ping(store->db)); /* a lost connection comes back here, between requests */
    SP_GUARD(store->drv->script(store->db, store->drv->sql[begin]));
    store->in_tx = true;
    store->read_only = read_only;
    return SP_OK;
}

sp_error sp_store_begin(sp_store *store) {
    return sp_store_begin_as(store, SP_Q_BEGIN, false);
}

sp_error sp_store_begin_read(sp_store *store) {
    return sp_store_begin_as(store, SP_Q_BEGIN_READ, true);
}

sp_error sp_store_commit(sp_store *store) {
    SP_ENSURE(store != NULL && store->in_tx, SP_ERR_INVALID_ARGUMENT);
    sp_error rc = store->drv->script(store->db, store->drv->sql[SP_Q_COMMIT]);
    /* a commit that lost leaves the transaction open in SQLite: end it, so
     * the caller's retry starts clean on either database */
    if (rc != SP_OK) (void)store->drv->script(store->db, store->drv->sql[SP_Q_ROLLBACK]);
    store->in_tx = false;
    return rc;
}

void sp_store_rollback(sp_store *store) {
    if (store == NULL || !store->in_tx) return;
    (void)store->drv->script(store->db, store->drv->sql[SP_Q_ROLLBACK]);
    store->in_tx = false;
}

/* Runs fn inside the caller's transaction, or in one of its own. */
typedef sp_error (*sp_store_op)(sp_store *s, void *arg);

static sp_error sp_store_atomic(sp_store *s, sp_store_op fn, void *arg) {
    if (s->in_tx) return fn(s, arg);
    SP_GUARD(sp_store_begin(s));
    sp_error rc = fn(s, arg);
    if (rc == SP_OK) return sp_store_commit(s);
    sp_store_rollback(s);
    return rc;
}

/* ---- open / migrate ---- */

static sp_error sp_store_migrate(sp_store *s) {
    const sp_store_driver *d = s->drv;
    int64_t v = 0;
    SP_GUARD(d->script(s->db, d->sql[SP_Q_MIGRATE_BEGIN]));
    sp_error rc = d->script(s->db, d->sql[SP_Q_VERSION_TABLE]);
    if (rc == SP_OK) rc = sp_q_int(s, SP_Q_VERSION_GET, NULL, 0, &v, NULL);
    if (rc == SP_OK) rc = d->script(s->db, d->sql[SP_Q_COMMIT]);
    if (rc != SP_OK) {
        (void)d->script(s->db, d->sql[SP_Q_ROLLBACK]);
        return rc;
    }
    SP_ENSURE(v >= 0 && (uint64_t)v <= d->n_migrations, SP_ERR_SCHEMA);
    /* One transaction per migration, each re-reading the version under the
     * migration lock: of processes starting together, the first applies it
     * and the others find it done. */
    for (size_t i = (size_t)v; i < d->n_migrations; i++) {
        int64_t now_v = 0;
        rc = d->script(s->db, d->sql[SP_Q_MIGRATE_BEGIN]);
        if (rc != SP_OK) return rc;
        rc = sp_q_int(s, SP_Q_VERSION_GET, NULL, 0, &now_v, NULL);
        if (rc == SP_OK && (now_v < 0 || (uint64_t)now_v > d->n_migrations)) rc = SP_ERR_SCHEMA;
        if (rc == SP_OK && (uint64_t)now_v <= i) {
            sp_store_param p[2] = {sp_p_int((int64_t)i + 1), sp_p_int(sp_now_seconds())};
            rc = d->script(s->db, d->migrations[i]);
            if (rc == SP_OK) rc = sp_q_exec(s, SP_Q_VERSION_ADD, p, 2, NULL);
        }
        if (rc == SP_OK) rc = d->script(s->db, d->sql[SP_Q_COMMIT]);
        if (rc != SP_OK) {
            (void)d->script(s->db, d->sql[SP_Q_ROLLBACK]);
            return rc;
        }
    }
    s->version = (int)d->n_migrations;
    return SP_OK;
}

static sp_error sp_store_open_as(const char *url, bool durable, sp_store **out) {
    SP_ENSURE(url != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    size_t n = strnlen(url, SP_STORE_MAX_URL + 1);
    SP_ENSURE(n > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n <= SP_STORE_MAX_URL, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_init()); /* jansson's allocator, for SQLite's attribute merge */
    const sp_store_driver *drv = NULL;
    const char *conninfo = url;
    if (strncmp(url, "sqlite:", 7) == 0) {
        drv = &sp_store_sqlite_driver;
        conninfo = url + 7;
        SP_ENSURE(*conninfo != 0, SP_ERR_BAD_CONFIG);
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        drv = &sp_store_pg_driver;
    }
    SP_ENSURE(drv != NULL, SP_ERR_BAD_CONFIG);
    sp_store *s = sp_calloc(1, sizeof *s);
    SP_ENSURE(s != NULL, SP_ERR_NO_MEMORY);
    s->drv = drv;
    sp_error rc = drv->connect(conninfo, durable, &s->db);
    if (rc == SP_OK) rc = sp_store_migrate(s);
    if (rc != SP_OK) {
        sp_store_close(s);
        return rc;
    }
    *out = s;
    return SP_OK;
}

sp_error sp_store_open(const char *url, sp_store **out) { return sp_store_open_as(url, false, out); }

void sp_store_close(sp_store *store) {
    if (store == NULL) return;
    sp_store_rollback(store);
    if (store->db != NULL) store->drv->disconnect(store->db);
    sp_free(store);
}

const char *sp_store_backend_name(const sp_store *store) { return store ? store->drv->name : ""; }

int sp_store_schema_version(const sp_store *store) { return store ? store->version : 0; }

sp_error sp_store_ping(sp_store *store) {
    SP_ENSURE(store != NULL, SP_ERR_INVALID_ARGUMENT);
    if (!store->in_tx) SP_GUARD(store->drv->ping(store->db));
    int64_t one = 0;
    return sp_q_int(store, SP_Q_PING, NULL, 0, &one, NULL);
}

/* ---- tenants ---- */

sp_error sp_store_tenant_create(sp_store *store, const char *id, const char *settings, size_t settings_len,
                                int64_t now) {
    SP_ENSURE(store != NULL && sp_tenant_ok(id) && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(settings, settings_len, SP_STORE_MAX_SETTINGS));
    sp_store_param p[3] = {sp_p_text(id), sp_p_textn(settings, settings_len), sp_p_int(now)};
    return sp_q_exec(store, SP_Q_TENANT_INSERT, p, 3, NULL);
}

sp_error sp_store_tenant_update(sp_store *store, const char *id, const char *settings, size_t settings_len,
                                bool disabled, int64_t now) {
    SP_ENSURE(store != NULL && sp_tenant_ok(id) && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(settings, settings_len, SP_STORE_MAX_SETTINGS));
    sp_store_param p[4] = {sp_p_text(id), sp_p_textn(settings, settings_len), sp_p_int(disabled ? 1 : 0),
                           sp_p_int(now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_TENANT_UPDATE, p, 4, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

/* The current row as a tenant whose settings point into the row. */
static sp_error sp_tenant_row(sp_store *s, sp_store_tenant *t) {
    memset(t, 0, sizeof *t);
    SP_GUARD(sp_col_name(s, 0, t->id, sizeof t->id));
    const uint8_t *settings = s->drv->col_bytes(s->db, 1, &t->settings_len);
    SP_ENSURE(settings != NULL, SP_ERR_STORE);
    t->settings = (char *)(uintptr_t)settings;
    t->created = s->drv->col_int(s->db, 2);
    t->updated = s->drv->col_int(s->db, 3);
    t->disabled = s->drv->col_int(s->db, 4) != 0;
    return SP_OK;
}

sp_error sp_store_tenant_get(sp_store *store, const char *id, sp_store_tenant *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(id) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[1] = {sp_p_text(id)};
    sp_store_tenant t;
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_TENANT_GET, p, 1, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_tenant_row(store, &t);
    if (rc == SP_OK) {
        char *copy = sp_malloc(t.settings_len + 1);
        if (copy == NULL) {
            rc = SP_ERR_NO_MEMORY;
        } else {
            memcpy(copy, t.settings, t.settings_len);
            copy[t.settings_len] = 0;
            t.settings = copy;
        }
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = t;
    return rc;
}

void sp_store_tenant_clear(sp_store_tenant *tenant) {
    if (tenant == NULL) return;
    if (tenant->settings != NULL) sp_free_wiped(tenant->settings, tenant->settings_len + 1);
    memset(tenant, 0, sizeof *tenant);
}

sp_error sp_store_tenant_list(sp_store *store, const char *after, size_t limit, sp_store_tenant_fn fn, void *arg) {
    SP_ENSURE(store != NULL && after != NULL && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(*after == 0 || sp_tenant_ok(after), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(limit >= 1 && limit <= SP_STORE_MAX_LIST, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(after), sp_p_int((int64_t)limit)};
    sp_error rc = store->drv->run(store->db, SP_Q_TENANT_LIST, p, 2, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_tenant t;
        rc = sp_tenant_row(store, &t);
        if (rc == SP_OK) rc = fn(arg, &t);
    }
    store->drv->finish(store->db);
    return rc;
}

static sp_error sp_tenant_delete_op(sp_store *s, void *arg) {
    const char *id = arg;
    sp_store_param p[1] = {sp_p_text(id)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_TENANT_DELETE, p, 1, &changes));
    SP_ENSURE(changes > 0, SP_ERR_NOT_FOUND);
    SP_GUARD(sp_q_exec(s, SP_Q_TENANT_DELETE_CREDS, p, 1, NULL));
    return sp_q_exec(s, SP_Q_TENANT_DELETE_KEYRING, p, 1, NULL);
}

sp_error sp_store_tenant_delete(sp_store *store, const char *id) {
    SP_ENSURE(store != NULL && sp_tenant_ok(id), SP_ERR_INVALID_ARGUMENT);
    return sp_store_atomic(store, sp_tenant_delete_op, (void *)(uintptr_t)id);
}

/* ---- credentials ---- */

static bool sp_cred_tenant_ok(const char *t) {
    return t != NULL && (*t == 0 || sp_tenant_ok(t));
}

static sp_error sp_cred_add_op(sp_store *s, void *arg) {
    const sp_store_credential *c = arg;
    if (c->tenant[0] != 0) {
        sp_store_param t[1] = {sp_p_text(c->tenant)};
        int64_t one = 0;
        bool found = false;
        SP_GUARD(sp_q_int(s, SP_Q_TENANT_EXISTS, t, 1, &one, &found));
        SP_ENSURE(found, SP_ERR_NOT_FOUND);
    }
    sp_store_param h[1] = {sp_p_blob(c->client_key_hash, SP_STORE_HASH_BYTES)};
    uint64_t under_key = 0;
    SP_GUARD(sp_q_count(s, SP_Q_CRED_COUNT_KEY, h, 1, &under_key));
    SP_ENSURE(under_key < SP_STORE_MAX_CREDENTIALS_PER_KEY, SP_ERR_TOO_LARGE);
    sp_store_param p[7] = {sp_p_text(c->id),
                           sp_p_text(c->tenant),
                           sp_p_blob(c->client_key_hash, SP_STORE_HASH_BYTES),
                           sp_p_blob(c->secret_hash, SP_STORE_HASH_BYTES),
                           sp_p_int(c->created),
                           sp_p_int(c->expires),
                           sp_p_int(c->revoked)};
    return sp_q_exec(s, SP_Q_CRED_INSERT, p, 7, NULL);
}

sp_error sp_store_credential_add(sp_store *store, const sp_store_credential *c) {
    SP_ENSURE(store != NULL && c != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(memchr(c->id, 0, sizeof c->id) != NULL && sp_uuid_is_valid(c->id, strlen(c->id)),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(memchr(c->tenant, 0, sizeof c->tenant) != NULL && sp_cred_tenant_ok(c->tenant),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(c->created > 0 && c->expires >= 0 && c->revoked >= 0, SP_ERR_INVALID_ARGUMENT);
    sp_store_credential copy = *c;
    return sp_store_atomic(store, sp_cred_add_op, &copy);
}

static sp_error sp_cred_row(sp_store *s, sp_store_credential *c) {
    memset(c, 0, sizeof *c);
    size_t kl = 0, sl = 0;
    SP_GUARD(sp_col_name(s, 0, c->id, sizeof c->id));
    SP_GUARD(sp_col_name(s, 1, c->tenant, sizeof c->tenant));
    const uint8_t *k = s->drv->col_bytes(s->db, 2, &kl), *sec = s->drv->col_bytes(s->db, 3, &sl);
    SP_ENSURE(k != NULL && sec != NULL && kl == SP_STORE_HASH_BYTES && sl == SP_STORE_HASH_BYTES, SP_ERR_STORE);
    memcpy(c->client_key_hash, k, SP_STORE_HASH_BYTES);
    memcpy(c->secret_hash, sec, SP_STORE_HASH_BYTES);
    c->created = s->drv->col_int(s->db, 4);
    c->expires = s->drv->col_int(s->db, 5);
    c->revoked = s->drv->col_int(s->db, 6);
    return SP_OK;
}

sp_error sp_store_credential_find(sp_store *store, const uint8_t client_key_hash[SP_STORE_HASH_BYTES],
                                  sp_store_credential *out, size_t cap, size_t *count) {
    SP_ENSURE(store != NULL && client_key_hash != NULL && out != NULL && count != NULL && cap > 0,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cap <= SP_STORE_MAX_CREDENTIALS_PER_KEY * 4, SP_ERR_TOO_LARGE);
    sp_store_param p[2] = {sp_p_blob(client_key_hash, SP_STORE_HASH_BYTES), sp_p_int((int64_t)cap)};
    size_t n = 0;
    sp_error rc = store->drv->run(store->db, SP_Q_CRED_FIND, p, 2, NULL);
    while (rc == SP_OK && n < cap) {
        bool row = false;
        rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_credential c;
        rc = sp_cred_row(store, &c);
        if (rc == SP_OK) out[n++] = c; /* out is the caller's scratch until count says what holds */
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *count = n;
    return rc;
}

sp_error sp_store_credential_list(sp_store *store, const char *tenant, sp_store_credential_fn fn, void *arg) {
    SP_ENSURE(store != NULL && sp_cred_tenant_ok(tenant) && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[1] = {sp_p_text(tenant)};
    sp_error rc = store->drv->run(store->db, SP_Q_CRED_LIST, p, 1, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_credential c;
        rc = sp_cred_row(store, &c);
        if (rc == SP_OK) rc = fn(arg, &c);
    }
    store->drv->finish(store->db);
    return rc;
}

sp_error sp_store_credential_revoke(sp_store *store, const char *tenant, const char *id, int64_t now) {
    SP_ENSURE(store != NULL && sp_cred_tenant_ok(tenant) && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(id != NULL && sp_uuid_is_valid(id, strnlen(id, SP_KEY_VERSION_CHARS + 1)), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_text(id), sp_p_int(now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_CRED_REVOKE, p, 3, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

/* ---- profiles ---- */

typedef struct {
    const sp_store_profile *p;
    int64_t now;
    bool created;
} sp_upsert_args;

static sp_error sp_upsert_op(sp_store *s, void *arg) {
    sp_upsert_args *a = arg;
    const sp_store_profile *pr = a->p;
    sp_store_param p[9] = {sp_p_text(pr->tenant), sp_p_text(pr->id), sp_p_textn(pr->attributes, pr->attributes_len),
                           sp_p_int(a->now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_PROFILE_INSERT, p, 4, &changes));
    a->created = changes > 0;
    if (!a->created) SP_GUARD(sp_q_exec(s, SP_Q_PROFILE_MERGE, p, 4, NULL));
    /* two rows a statement: a profile's fields are mostly an email and a
     * phone, and each statement run is a fixed cost in the write lock */
    for (size_t i = 0; i < pr->n_pii;) {
        size_t rows = pr->n_pii - i >= 2 ? 2 : 1;
        for (size_t k = 0; k < rows; k++) {
            const sp_store_pii *f = &pr->pii[i + k];
            size_t at = k == 0 ? 2 : 6;
            p[at] = sp_p_text(f->field);
            p[at + 1] = sp_p_blob(f->blob, f->blob_len);
            p[at + 2] = sp_p_blob(f->index, f->index ? f->index_len : 0);
        }
        p[5] = sp_p_int(a->now);
        SP_GUARD(sp_q_exec(s, rows == 2 ? SP_Q_PII_UPSERT2 : SP_Q_PII_UPSERT, p, rows == 2 ? 9 : 6, NULL));
        i += rows;
    }
    /* a new profile has at most the fields of one call; an old one may have
     * gathered more over several */
    if (!a->created && pr->n_pii > 0) {
        uint64_t fields = 0;
        SP_GUARD(sp_q_count(s, SP_Q_PII_COUNT, p, 2, &fields));
        SP_ENSURE(fields <= SP_VAULT_MAX_PII_FIELDS, SP_ERR_TOO_LARGE);
    }
    return SP_OK;
}

static sp_error sp_profile_check(const sp_store_profile *pr) {
    SP_ENSURE(sp_tenant_ok(pr->tenant) && sp_id_ok(pr->id), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(pr->attributes, pr->attributes_len, SP_STORE_MAX_ATTRIBUTES));
    SP_ENSURE(pr->n_pii == 0 || pr->pii != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(pr->n_pii <= SP_VAULT_MAX_PII_FIELDS, SP_ERR_TOO_LARGE);
    for (size_t i = 0; i < pr->n_pii; i++) {
        const sp_store_pii *f = &pr->pii[i];
        SP_ENSURE(sp_field_ok(f->field) && f->blob != NULL && f->blob_len > 0, SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(f->blob_len <= SP_STORE_MAX_BLOB, SP_ERR_TOO_LARGE);
        SP_ENSURE(f->index == NULL || (f->index_len >= SP_VAULT_INDEX_MIN && f->index_len <= SP_VAULT_INDEX_MAX),
                  SP_ERR_INVALID_ARGUMENT);
        for (size_t j = 0; j < i; j++) SP_ENSURE(strcmp(pr->pii[j].field, f->field) != 0, SP_ERR_INVALID_ARGUMENT);
    }
    return SP_OK;
}

sp_error sp_store_profile_upsert(sp_store *store, const sp_store_profile *profile, int64_t now, bool *created) {
    SP_ENSURE(store != NULL && profile != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_profile_check(profile));
    sp_upsert_args a = {profile, now, false};
    SP_GUARD(sp_store_atomic(store, sp_upsert_op, &a));
    if (created) *created = a.created;
    return SP_OK;
}

sp_error sp_store_profile_find_by_index(sp_store *store, const char *tenant, const char *field, const uint8_t *index,
                                        size_t index_len, char id_out[SP_STORE_MAX_ID + 1]) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_field_ok(field) && index != NULL && id_out != NULL,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(index_len >= SP_VAULT_INDEX_MIN && index_len <= SP_VAULT_INDEX_MAX, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_text(field), sp_p_blob(index, index_len)};
    char id[SP_STORE_MAX_ID + 1];
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_PROFILE_FIND_INDEX, p, 3, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_col_name(store, 0, id, sizeof id);
    store->drv->finish(store->db);
    if (rc == SP_OK) memcpy(id_out, id, strlen(id) + 1);
    return rc;
}

void sp_store_profile_row_clear(sp_store_profile_row *row) {
    if (row == NULL) return;
    if (row->attributes != NULL) sp_free_wiped(row->attributes, row->attributes_len + 1);
    for (size_t i = 0; i < row->n_pii && i < SP_VAULT_MAX_PII_FIELDS; i++) {
        if (row->pii[i].blob != NULL) sp_free_wiped(row->pii[i].blob, row->pii[i].blob_len);
    }
    memset(row, 0, sizeof *row);
}

/* The current row's profile columns (id, attributes, created, updated from
 * column `col` on) into r, the attributes copied. */
static sp_error sp_profile_take(sp_store *s, int col, sp_store_profile_row *r) {
    SP_GUARD(sp_col_name(s, col, r->id, sizeof r->id));
    size_t len = 0;
    const uint8_t *attrs = s->drv->col_bytes(s->db, col + 1, &len);
    SP_ENSURE(attrs != NULL, SP_ERR_STORE);
    r->attributes = sp_malloc(len + 1);
    SP_ENSURE(r->attributes != NULL, SP_ERR_NO_MEMORY);
    memcpy(r->attributes, attrs, len);
    r->attributes[len] = 0;
    r->attributes_len = len;
    r->created = s->drv->col_int(s->db, col + 2);
    r->updated = s->drv->col_int(s->db, col + 3);
    return SP_OK;
}

/* The current row's PII field (field, blob from column `col` on) appended
 * to r, the blob copied. */
static sp_error sp_profile_take_pii(sp_store *s, int col, sp_store_profile_row *r) {
    SP_ENSURE(r->n_pii < SP_VAULT_MAX_PII_FIELDS, SP_ERR_TOO_LARGE);
    sp_store_pii_row *f = &r->pii[r->n_pii];
    size_t len = 0;
    SP_GUARD(sp_col_name(s, col, f->field, sizeof f->field));
    const uint8_t *blob = s->drv->col_bytes(s->db, col + 1, &len);
    SP_ENSURE(blob != NULL && len > 0, SP_ERR_STORE);
    f->blob = sp_malloc(len);
    SP_ENSURE(f->blob != NULL, SP_ERR_NO_MEMORY);
    memcpy(f->blob, blob, len);
    f->blob_len = len;
    r->n_pii++;
    return SP_OK;
}

static sp_error sp_profile_get_into(sp_store *s, const sp_store_param *p, sp_store_profile_row *r) {
    bool row = false;
    sp_error rc = s->drv->run(s->db, SP_Q_PROFILE_GET, p, 2, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_profile_take(s, 0, r);
    s->drv->finish(s->db);
    SP_GUARD(rc);
    rc = s->drv->run(s->db, SP_Q_PII_GET, p, 2, NULL);
    for (;;) {
        if (rc == SP_OK) rc = s->drv->step(s->db, &row);
        if (rc != SP_OK || !row) break;
        rc = sp_profile_take_pii(s, 0, r);
    }
    s->drv->finish(s->db);
    return rc;
}

sp_error sp_store_profile_get(sp_store *store, const char *tenant, const char *id, sp_store_profile_row *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_id_ok(id) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    sp_store_profile_row r;
    memset(&r, 0, sizeof r);
    /* two reads: one snapshot for both when the caller has no transaction */
    sp_error rc = store->in_tx ? SP_OK : store->drv->script(store->db, store->drv->sql[SP_Q_BEGIN_READ]);
    bool own = rc == SP_OK && !store->in_tx;
    if (rc == SP_OK) rc = sp_profile_get_into(store, p, &r);
    if (own) (void)store->drv->script(store->db, store->drv->sql[SP_Q_ROLLBACK]);
    if (rc != SP_OK) {
        sp_store_profile_row_clear(&r);
        return rc;
    }
    *out = r;
    return SP_OK;
}

/* One result row of SP_Q_PROFILE_GET_MANY into out[index]: the profile's
 * columns on its first row, a PII field on each row that has one. */
static sp_error sp_profile_many_row(sp_store *s, size_t n, sp_store_profile_row *out, bool *found) {
    int64_t index = s->drv->col_int(s->db, 0);
    SP_ENSURE(index >= 0 && (uint64_t)index < n, SP_ERR_STORE);
    sp_store_profile_row *r = &out[index];
    if (!found[index]) {
        found[index] = true;
        SP_GUARD(sp_profile_take(s, 1, r));
    }
    size_t field_len = 0;
    const uint8_t *field = s->drv->col_bytes(s->db, 5, &field_len);
    if (field == NULL || field_len == 0) return SP_OK; /* a profile without PII */
    return sp_profile_take_pii(s, 5, r);
}

sp_error sp_store_profile_get_many(sp_store *store, const char *tenant, const char *const *ids, size_t n,
                                   sp_store_profile_row *out, bool *found) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && ids != NULL && out != NULL && found != NULL,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n >= 1 && n <= SP_STORE_MAX_BATCH, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++) SP_ENSURE(sp_id_ok(ids[i]), SP_ERR_INVALID_ARGUMENT);
    memset(out, 0, n * sizeof *out);
    memset(found, 0, n * sizeof *found);
    sp_store_param p[2] = {sp_p_text(tenant), {SP_STORE_TEXT_ARRAY, ids, n, 0}};
    /* one statement, so one snapshot even without the caller's transaction */
    sp_error rc = store->drv->run(store->db, SP_Q_PROFILE_GET_MANY, p, 2, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        rc = sp_profile_many_row(store, n, out, found);
    }
    store->drv->finish(store->db);
    if (rc != SP_OK) {
        for (size_t i = 0; i < n; i++) sp_store_profile_row_clear(&out[i]);
        memset(found, 0, n * sizeof *found);
    }
    return rc;
}

static sp_error sp_profile_delete_op(sp_store *s, void *arg) {
    const sp_store_param *p = arg;
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_PROFILE_DELETE, p, 2, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

sp_error sp_store_profile_delete(sp_store *store, const char *tenant, const char *id) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_id_ok(id), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    return sp_store_atomic(store, sp_profile_delete_op, p);
}

sp_error sp_store_profile_count(sp_store *store, const char *tenant, uint64_t *count) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && count != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[1] = {sp_p_text(tenant)};
    return sp_q_count(store, SP_Q_PROFILE_COUNT, p, 1, count);
}

/* ---- events ---- */

sp_error sp_store_event_insert(sp_store *store, const sp_store_event *ev, int64_t now, bool *inserted) {
    SP_ENSURE(store != NULL && ev != NULL && now > 0 && ev->ts >= 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_tenant_ok(ev->tenant) && sp_id_ok(ev->id) && sp_id_ok(ev->profile_id) && sp_event_name_ok(ev->name),
              SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(ev->properties, ev->properties_len, SP_STORE_MAX_PROPERTIES));
    sp_store_param p[7] = {sp_p_text(ev->tenant),
                           sp_p_text(ev->id),
                           sp_p_text(ev->profile_id),
                           sp_p_text(ev->name),
                           sp_p_int(ev->ts),
                           sp_p_textn(ev->properties, ev->properties_len),
                           sp_p_int(now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_EVENT_INSERT, p, 7, &changes));
    if (inserted) *inserted = changes > 0;
    return SP_OK;
}

sp_error sp_store_event_count(sp_store *store, const char *tenant, const char *profile_id, uint64_t *count) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && count != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(profile_id == NULL || sp_id_ok(profile_id), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(profile_id ? profile_id : "")};
    if (profile_id == NULL) return sp_q_count(store, SP_Q_EVENT_COUNT, p, 1, count);
    return sp_q_count(store, SP_Q_EVENT_COUNT_PROFILE, p, 2, count);
}

/* ---- names of states and kinds ---- */

static const char *const sp_kind_names[] = {[SP_STORE_CHANNEL_EMAIL] = "email", [SP_STORE_CHANNEL_SMS] = "sms"};
static const char *const sp_campaign_names[] = {
    [SP_STORE_CAMPAIGN_DRAFT] = "draft",     [SP_STORE_CAMPAIGN_SCHEDULED] = "scheduled",
    [SP_STORE_CAMPAIGN_QUEUED] = "queued",   [SP_STORE_CAMPAIGN_SENDING] = "sending",
    [SP_STORE_CAMPAIGN_DONE] = "done",       [SP_STORE_CAMPAIGN_CANCELLED] = "cancelled"};
static const char *const sp_outbox_names[] = {
    [SP_STORE_OUTBOX_QUEUED] = "queued", [SP_STORE_OUTBOX_SENDING] = "sending", [SP_STORE_OUTBOX_SENT] = "sent",
    [SP_STORE_OUTBOX_FAILED] = "failed", [SP_STORE_OUTBOX_DEAD] = "dead"};

static const char *sp_name_of(const char *const *names, size_t n, int v) {
    return v > 0 && (size_t)v < n ? names[v] : "";
}

/* The index of a name of the table, from bytes that need not be
 * NUL-terminated; 0 when none. */
static int sp_index_of(const char *const *names, size_t n, const uint8_t *b, size_t len) {
    for (size_t i = 1; b != NULL && i < n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], b, len) == 0) return (int)i;
    }
    return 0;
}

const char *sp_store_channel_kind_name(sp_store_channel_kind kind) {
    return sp_name_of(sp_kind_names, SP_ARRAY_LEN(sp_kind_names), (int)kind);
}

sp_error sp_store_channel_kind_parse(const char *name, sp_store_channel_kind *out) {
    SP_ENSURE(name != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    int v = sp_index_of(sp_kind_names, SP_ARRAY_LEN(sp_kind_names), (const uint8_t *)name, strnlen(name, 16));
    SP_ENSURE(v != 0, SP_ERR_INVALID_ARGUMENT);
    *out = (sp_store_channel_kind)v;
    return SP_OK;
}

const char *sp_store_campaign_state_name(sp_store_campaign_state state) {
    return sp_name_of(sp_campaign_names, SP_ARRAY_LEN(sp_campaign_names), (int)state);
}

sp_error sp_store_campaign_state_parse(const char *name, sp_store_campaign_state *out) {
    SP_ENSURE(name != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    int v = sp_index_of(sp_campaign_names, SP_ARRAY_LEN(sp_campaign_names), (const uint8_t *)name, strnlen(name, 16));
    SP_ENSURE(v != 0, SP_ERR_INVALID_ARGUMENT);
    *out = (sp_store_campaign_state)v;
    return SP_OK;
}

const char *sp_store_outbox_state_name(sp_store_outbox_state state) {
    return sp_name_of(sp_outbox_names, SP_ARRAY_LEN(sp_outbox_names), (int)state);
}

/* ---- checks for channels, campaigns and the outbox ---- */

/* Channel and campaign ids share the tenant id's charset. */
static bool sp_name_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_NAME, "_-", false); }
static bool sp_owner_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_OWNER, "_.:-", true); }
static bool sp_message_id_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_MESSAGE_ID, "_.:-", true); }
static bool sp_attribute_ok(const char *s) { return sp_chars_ok(s, 1, SP_STORE_MAX_NAME, "_.-", true); }

/* An operator's note: printable ASCII, 1..SP_STORE_MAX_ERROR. */
static bool sp_error_text_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_STORE_MAX_ERROR + 1);
    if (n < 1 || n > SP_STORE_MAX_ERROR) return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e) return false;
    }
    return true;
}

static bool sp_digits(const char *s, size_t *i) {
    size_t start = *i;
    while (s[*i] >= '0' && s[*i] <= '9') (*i)++;
    return *i > start;
}

/* A JSON number, as RFC 8259 spells one, of at most 64 characters: both
 * databases parse it, so anything else is refused before they see it. */
static bool sp_json_number_ok(const char *s) {
    if (s == NULL || strnlen(s, 65) > 64) return false;
    size_t i = 0;
    if (s[i] == '-') i++;
    if (s[i] == '0') i++;
    else if (!sp_digits(s, &i)) return false;
    if (s[i] == '.') {
        i++;
        if (!sp_digits(s, &i)) return false;
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-') i++;
        if (!sp_digits(s, &i)) return false;
    }
    return s[i] == 0;
}

/* Bytes of a column (NULL: "") copied into a NUL-terminated buffer. */
static sp_error sp_col_opt_name(sp_store *s, int col, char *out, size_t cap) {
    size_t len = 0;
    const uint8_t *b = s->drv->col_bytes(s->db, col, &len);
    if (b == NULL) {
        out[0] = 0;
        return SP_OK;
    }
    SP_ENSURE(len < cap, SP_ERR_STORE);
    memcpy(out, b, len);
    out[len] = 0;
    return SP_OK;
}

/* Statements that write and return rows come through here, as sp_q_exec's
 * writes do: a read-only transaction refuses them. */
static sp_error sp_q_write_rows(sp_store *s, sp_store_q q, const sp_store_param *p, size_t n) {
    SP_ENSURE(!(s->in_tx && s->read_only), SP_ERR_INVALID_ARGUMENT);
    return s->drv->run(s->db, q, p, n, NULL);
}

/* A copy of a column's bytes, NUL-terminated; NULL stays NULL. */
static sp_error sp_col_dup(sp_store *s, int col, bool required, uint8_t **out, size_t *out_len) {
    size_t len = 0;
    const uint8_t *b = s->drv->col_bytes(s->db, col, &len);
    *out = NULL;
    *out_len = 0;
    if (b == NULL) return required ? SP_ERR_STORE : SP_OK;
    uint8_t *copy = sp_malloc(len + 1);
    SP_ENSURE(copy != NULL, SP_ERR_NO_MEMORY);
    memcpy(copy, b, len);
    copy[len] = 0;
    *out = copy;
    *out_len = len;
    return SP_OK;
}

/* ---- channels ---- */

typedef struct {
    const sp_store_channel *c;
    int64_t now;
    bool created;
} sp_channel_put_args;

static sp_error sp_channel_put_op(sp_store *s, void *arg) {
    sp_channel_put_args *a = arg;
    const sp_store_channel *c = a->c;
    sp_store_param p[6] = {sp_p_text(c->tenant),
                           sp_p_text(c->id),
                           sp_p_text(sp_store_channel_kind_name(c->kind)),
                           sp_p_textn(c->config, c->config_len),
                           sp_p_blob(c->secrets, c->secrets ? c->secrets_len : 0),
                           sp_p_int(a->now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_CHANNEL_INSERT, p, 6, &changes));
    a->created = changes > 0;
    if (a->created) return SP_OK;
    SP_GUARD(sp_q_exec(s, SP_Q_CHANNEL_UPDATE, p, 6, &changes));
    return changes ? SP_OK : SP_ERR_STORE;
}

sp_error sp_store_channel_put(sp_store *store, const sp_store_channel *channel, int64_t now, bool *created) {
    SP_ENSURE(store != NULL && channel != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_tenant_ok(channel->tenant) && sp_name_ok(channel->id), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(*sp_store_channel_kind_name(channel->kind) != 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(channel->config, channel->config_len, SP_STORE_MAX_CHANNEL_CONFIG));
    SP_ENSURE(channel->secrets == NULL || channel->secrets_len > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(channel->secrets == NULL || channel->secrets_len <= SP_STORE_MAX_CHANNEL_SECRETS, SP_ERR_TOO_LARGE);
    sp_channel_put_args a = {channel, now, false};
    SP_GUARD(sp_store_atomic(store, sp_channel_put_op, &a));
    if (created) *created = a.created;
    return SP_OK;
}

/* The current row as a channel whose config and secrets point into it. */
static sp_error sp_channel_row(sp_store *s, sp_store_channel_row *c) {
    memset(c, 0, sizeof *c);
    SP_GUARD(sp_col_name(s, 0, c->id, sizeof c->id));
    size_t len = 0;
    const uint8_t *kind = s->drv->col_bytes(s->db, 1, &len);
    c->kind = (sp_store_channel_kind)sp_index_of(sp_kind_names, SP_ARRAY_LEN(sp_kind_names), kind, len);
    SP_ENSURE(c->kind != 0, SP_ERR_STORE);
    const uint8_t *config = s->drv->col_bytes(s->db, 2, &c->config_len);
    SP_ENSURE(config != NULL, SP_ERR_STORE);
    c->config = (char *)(uintptr_t)config;
    c->secrets = (uint8_t *)(uintptr_t)s->drv->col_bytes(s->db, 3, &c->secrets_len);
    c->created = s->drv->col_int(s->db, 4);
    c->updated = s->drv->col_int(s->db, 5);
    return SP_OK;
}

void sp_store_channel_row_clear(sp_store_channel_row *row) {
    if (row == NULL) return;
    if (row->config != NULL) sp_free_wiped(row->config, row->config_len + 1);
    if (row->secrets != NULL) sp_free_wiped(row->secrets, row->secrets_len + 1);
    memset(row, 0, sizeof *row);
}

sp_error sp_store_channel_get(sp_store *store, const char *tenant, const char *id, sp_store_channel_row *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(id) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    sp_store_channel_row c;
    memset(&c, 0, sizeof c);
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_CHANNEL_GET, p, 2, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_channel_row(store, &c);
    if (rc == SP_OK) {
        uint8_t *config = NULL, *secrets = NULL;
        size_t config_len = 0, secrets_len = 0;
        rc = sp_col_dup(store, 2, true, &config, &config_len);
        if (rc == SP_OK) rc = sp_col_dup(store, 3, false, &secrets, &secrets_len);
        c.config = (char *)config;
        c.secrets = secrets;
        if (rc != SP_OK) {
            /* nothing of the row's own may stay behind in the copy */
            c.config = NULL;
            c.secrets = NULL;
            if (config) sp_free_wiped(config, config_len + 1);
        }
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = c;
    return rc;
}

sp_error sp_store_channel_list(sp_store *store, const char *tenant, const char *after, size_t limit,
                               sp_store_channel_fn fn, void *arg) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && after != NULL && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(*after == 0 || sp_name_ok(after), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(limit >= 1 && limit <= SP_STORE_MAX_LIST, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_text(after), sp_p_int((int64_t)limit)};
    sp_error rc = store->drv->run(store->db, SP_Q_CHANNEL_LIST, p, 3, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_channel_row c;
        rc = sp_channel_row(store, &c);
        if (rc == SP_OK) rc = fn(arg, &c);
    }
    store->drv->finish(store->db);
    return rc;
}

static sp_error sp_channel_delete_op(sp_store *s, void *arg) {
    const sp_store_param *p = arg;
    int64_t one = 0;
    bool found = false;
    uint64_t users = 0, live = 0, changes = 0;
    SP_GUARD(sp_q_int(s, SP_Q_CHANNEL_LOCK, p, 2, &one, &found));
    SP_ENSURE(found, SP_ERR_NOT_FOUND);
    SP_GUARD(sp_q_count(s, SP_Q_CHANNEL_USERS, p, 2, &users));
    SP_ENSURE(users == 0, SP_ERR_EXISTS);
    SP_GUARD(sp_q_count(s, SP_Q_CHANNEL_LIVE, p, 2, &live));
    SP_ENSURE(live == 0, SP_ERR_EXISTS);
    SP_GUARD(sp_q_exec(s, SP_Q_CHANNEL_DELETE_SENDS, p, 2, NULL));
    SP_GUARD(sp_q_exec(s, SP_Q_CHANNEL_DELETE, p, 2, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

sp_error sp_store_channel_delete(sp_store *store, const char *tenant, const char *id) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(id), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    return sp_store_atomic(store, sp_channel_delete_op, p);
}

/* ---- campaigns ---- */

sp_error sp_store_campaign_create(sp_store *store, const sp_store_campaign *c, int64_t now) {
    SP_ENSURE(store != NULL && c != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_tenant_ok(c->tenant) && sp_name_ok(c->id) && sp_name_ok(c->channel), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_doc_ok(c->spec, c->spec_len, SP_STORE_MAX_CAMPAIGN_SPEC));
    SP_ENSURE(c->state == SP_STORE_CAMPAIGN_DRAFT || c->state == SP_STORE_CAMPAIGN_SCHEDULED ||
                  c->state == SP_STORE_CAMPAIGN_QUEUED,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(c->send_at_ms >= 0 && (c->state != SP_STORE_CAMPAIGN_SCHEDULED || c->send_at_ms > 0),
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[7] = {sp_p_text(c->tenant),
                           sp_p_text(c->id),
                           sp_p_text(c->channel),
                           sp_p_textn(c->spec, c->spec_len),
                           sp_p_text(sp_store_campaign_state_name(c->state)),
                           sp_p_int(c->send_at_ms), /* 0: NULL */
                           sp_p_int(now)};
    return sp_q_exec(store, SP_Q_CAMPAIGN_INSERT, p, 7, NULL);
}

/* The current row as a campaign whose spec points into it. */
static sp_error sp_campaign_row(sp_store *s, sp_store_campaign_row *c) {
    memset(c, 0, sizeof *c);
    SP_GUARD(sp_col_name(s, 0, c->id, sizeof c->id));
    SP_GUARD(sp_col_name(s, 1, c->channel, sizeof c->channel));
    const uint8_t *spec = s->drv->col_bytes(s->db, 2, &c->spec_len);
    SP_ENSURE(spec != NULL, SP_ERR_STORE);
    c->spec = (char *)(uintptr_t)spec;
    size_t len = 0;
    const uint8_t *state = s->drv->col_bytes(s->db, 3, &len);
    c->state = (sp_store_campaign_state)sp_index_of(sp_campaign_names, SP_ARRAY_LEN(sp_campaign_names), state, len);
    SP_ENSURE(c->state != 0, SP_ERR_STORE);
    c->send_at_ms = s->drv->col_int(s->db, 4); /* NULL reads as 0 */
    int64_t total = s->drv->col_int(s->db, 5);
    c->total = total > 0 ? (uint64_t)total : 0;
    c->created = s->drv->col_int(s->db, 6);
    c->updated = s->drv->col_int(s->db, 7);
    return SP_OK;
}

void sp_store_campaign_row_clear(sp_store_campaign_row *row) {
    if (row == NULL) return;
    if (row->spec != NULL) sp_free_wiped(row->spec, row->spec_len + 1);
    memset(row, 0, sizeof *row);
}

sp_error sp_store_campaign_get(sp_store *store, const char *tenant, const char *id, sp_store_campaign_row *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(id) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    sp_store_campaign_row c;
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_CAMPAIGN_GET, p, 2, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_campaign_row(store, &c);
    if (rc == SP_OK) {
        uint8_t *spec = NULL;
        rc = sp_col_dup(store, 2, true, &spec, &c.spec_len);
        c.spec = (char *)spec;
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = c;
    return rc;
}

sp_error sp_store_campaign_list(sp_store *store, const char *tenant, const char *after, size_t limit,
                                sp_store_campaign_fn fn, void *arg) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && after != NULL && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(*after == 0 || sp_name_ok(after), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(limit >= 1 && limit <= SP_STORE_MAX_LIST, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_text(after), sp_p_int((int64_t)limit)};
    sp_error rc = store->drv->run(store->db, SP_Q_CAMPAIGN_LIST, p, 3, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_campaign_row c;
        rc = sp_campaign_row(store, &c);
        if (rc == SP_OK) rc = fn(arg, &c);
    }
    store->drv->finish(store->db);
    return rc;
}

static sp_error sp_campaign_names_run(sp_store *store, sp_store_q q, int64_t bound, size_t limit,
                                      sp_store_campaign_due_fn fn, void *arg) {
    SP_ENSURE(store != NULL && bound > 0 && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(limit >= 1 && limit <= SP_STORE_MAX_LIST, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_int(bound), sp_p_int((int64_t)limit)};
    sp_error rc = store->drv->run(store->db, q, p, 2, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        char tenant[SP_STORE_MAX_TENANT + 1], id[SP_STORE_MAX_NAME + 1];
        rc = sp_col_name(store, 0, tenant, sizeof tenant);
        if (rc == SP_OK) rc = sp_col_name(store, 1, id, sizeof id);
        if (rc == SP_OK) rc = fn(arg, tenant, id);
    }
    store->drv->finish(store->db);
    return rc;
}

sp_error sp_store_campaign_due(sp_store *store, int64_t now_ms, size_t limit, sp_store_campaign_due_fn fn,
                               void *arg) {
    return sp_campaign_names_run(store, SP_Q_CAMPAIGN_DUE, now_ms, limit, fn, arg);
}

sp_error sp_store_campaign_stale(sp_store *store, int64_t idle_since_s, size_t limit, sp_store_campaign_due_fn fn,
                                 void *arg) {
    return sp_campaign_names_run(store, SP_Q_CAMPAIGN_STALE, idle_since_s, limit, fn, arg);
}

/* What a campaign's row lock (SP_Q_CAMPAIGN_LOCK) reads. */
typedef struct {
    sp_store_campaign_state state;
    char channel[SP_STORE_MAX_NAME + 1];
    int64_t send_at_ms;
    char expanded_to[SP_STORE_MAX_ID + 1]; /* "": no page expanded yet */
} sp_campaign_locked;

static sp_error sp_campaign_lock(sp_store *s, const sp_store_param *p, sp_campaign_locked *out) {
    bool row = false;
    sp_error rc = s->drv->run(s->db, SP_Q_CAMPAIGN_LOCK, p, 2, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) {
        size_t len = 0;
        const uint8_t *state = s->drv->col_bytes(s->db, 0, &len);
        out->state = (sp_store_campaign_state)sp_index_of(sp_campaign_names, SP_ARRAY_LEN(sp_campaign_names), state,
                                                          len);
        if (out->state == 0) rc = SP_ERR_STORE;
        if (rc == SP_OK) rc = sp_col_name(s, 1, out->channel, sizeof out->channel);
        out->send_at_ms = s->drv->col_int(s->db, 2);
        size_t to_len = 0;
        const uint8_t *to = s->drv->col_bytes(s->db, 3, &to_len);
        out->expanded_to[0] = 0;
        if (rc == SP_OK && to != NULL && to_len > 0) rc = sp_col_name(s, 3, out->expanded_to, sizeof out->expanded_to);
    }
    s->drv->finish(s->db);
    return rc;
}

/* The campaign's life cycle (store.h); staying put is always allowed. */
static bool sp_campaign_move_ok(sp_store_campaign_state from, sp_store_campaign_state to) {
    if (from == to) return true;
    switch (from) {
    case SP_STORE_CAMPAIGN_DRAFT:
        return to == SP_STORE_CAMPAIGN_SCHEDULED || to == SP_STORE_CAMPAIGN_QUEUED || to == SP_STORE_CAMPAIGN_CANCELLED;
    case SP_STORE_CAMPAIGN_SCHEDULED:
        return to == SP_STORE_CAMPAIGN_DRAFT || to == SP_STORE_CAMPAIGN_QUEUED || to == SP_STORE_CAMPAIGN_CANCELLED;
    case SP_STORE_CAMPAIGN_QUEUED:
        return to == SP_STORE_CAMPAIGN_SENDING || to == SP_STORE_CAMPAIGN_CANCELLED;
    case SP_STORE_CAMPAIGN_SENDING:
        return to == SP_STORE_CAMPAIGN_DONE || to == SP_STORE_CAMPAIGN_CANCELLED;
    default:
        return false;
    }
}

typedef struct {
    const sp_store_param *key; /* tenant, id */
    sp_store_campaign_state to;
    int64_t now;
    sp_store_campaign_state was;
} sp_campaign_move_args;

static sp_error sp_campaign_move_op(sp_store *s, void *arg) {
    sp_campaign_move_args *a = arg;
    sp_campaign_locked c;
    SP_GUARD(sp_campaign_lock(s, a->key, &c));
    a->was = c.state;
    SP_ENSURE(sp_campaign_move_ok(c.state, a->to), SP_ERR_ILLEGAL_TRANSITION);
    if (c.state == a->to) return SP_OK;
    /* a scheduled campaign without a time would never come due */
    SP_ENSURE(a->to != SP_STORE_CAMPAIGN_SCHEDULED || c.send_at_ms > 0, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[4] = {a->key[0], a->key[1], sp_p_text(sp_store_campaign_state_name(a->to)), sp_p_int(a->now)};
    SP_GUARD(sp_q_exec(s, SP_Q_CAMPAIGN_SET_STATE, p, 4, NULL));
    if (a->to != SP_STORE_CAMPAIGN_CANCELLED) return SP_OK;
    p[2] = sp_p_int(a->now * 1000); /* the outbox keeps milliseconds */
    return sp_q_exec(s, SP_Q_CAMPAIGN_CANCEL_SENDS, p, 3, NULL);
}

sp_error sp_store_campaign_set_state(sp_store *store, const char *tenant, const char *id, sp_store_campaign_state to,
                                     int64_t now, sp_store_campaign_state *was) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(id) && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(*sp_store_campaign_state_name(to) != 0, SP_ERR_INVALID_ARGUMENT);
    sp_store_param key[2] = {sp_p_text(tenant), sp_p_text(id)};
    sp_campaign_move_args a = {key, to, now, 0};
    SP_GUARD(sp_store_atomic(store, sp_campaign_move_op, &a));
    if (was) *was = a.was;
    return SP_OK;
}

static sp_error sp_campaign_delete_op(sp_store *s, void *arg) {
    const sp_store_param *p = arg;
    sp_campaign_locked c;
    SP_GUARD(sp_campaign_lock(s, p, &c));
    SP_ENSURE(c.state != SP_STORE_CAMPAIGN_QUEUED && c.state != SP_STORE_CAMPAIGN_SENDING,
              SP_ERR_ILLEGAL_TRANSITION);
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_CAMPAIGN_DELETE, p, 2, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

sp_error sp_store_campaign_delete(sp_store *store, const char *tenant, const char *id) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(id), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(id)};
    return sp_store_atomic(store, sp_campaign_delete_op, p);
}

/* ---- the outbox ---- */

typedef struct {
    const char *tenant, *campaign;
    const sp_store_audience *audience;
    int64_t now;
    uint64_t added;
} sp_expand_args;

/* The campaign's row, locked, and the key both expansions bind. */
static sp_error sp_expand_lock(sp_store *s, const char *tenant, const char *campaign, sp_store_param key[2],
                               sp_campaign_locked *c) {
    key[0] = sp_p_text(tenant);
    key[1] = sp_p_text(campaign);
    return sp_campaign_lock(s, key, c);
}

typedef struct sp_leased sp_leased;
static sp_error sp_leased_exec(sp_store *s, sp_leased *l, sp_store_q q, const sp_store_param p[10]);

/* One statement per id of an IDS audience; p holds the first four
 * parameters of SP_Q_OUTBOX_EXPAND_ID and room for the fifth (and, for a
 * leased page, l, the tenth). */
static sp_error sp_expand_ids(sp_store *s, sp_store_param *p, const sp_store_audience *au, sp_leased *l,
                              uint64_t *added) {
    for (size_t i = 0; i < au->n_ids; i++) {
        uint64_t changes = 0;
        p[4] = sp_p_text(au->ids[i]);
        if (l) SP_GUARD(sp_leased_exec(s, l, SP_Q_OUTBOX_EXPAND_ID_LEASED, p));
        else SP_GUARD(sp_q_exec(s, SP_Q_OUTBOX_EXPAND_ID, p, 5, &changes));
        *added += changes;
    }
    return SP_OK;
}

static sp_error sp_expand_op(sp_store *s, void *arg) {
    sp_expand_args *a = arg;
    const sp_store_audience *au = a->audience;
    sp_store_param key[2];
    sp_campaign_locked c;
    SP_GUARD(sp_expand_lock(s, a->tenant, a->campaign, key, &c));
    SP_ENSURE(c.state != SP_STORE_CAMPAIGN_DONE && c.state != SP_STORE_CAMPAIGN_CANCELLED, SP_ERR_ILLEGAL_TRANSITION);
    sp_store_param p[6] = {key[0], key[1], sp_p_text(c.channel), sp_p_int(a->now)};
    uint64_t changes = 0;
    a->added = 0;
    switch (au->kind) {
    case SP_STORE_AUDIENCE_ALL:
        SP_GUARD(sp_q_exec(s, SP_Q_OUTBOX_EXPAND_ALL, p, 4, &changes));
        a->added = changes;
        break;
    case SP_STORE_AUDIENCE_IDS:
        SP_GUARD(sp_expand_ids(s, p, au, NULL, &a->added));
        break;
    default:
        p[4] = sp_p_text(au->attribute);
        p[5] = sp_p_text(au->text ? au->text : au->number);
        SP_GUARD(sp_q_exec(s, au->text ? SP_Q_OUTBOX_EXPAND_TEXT : SP_Q_OUTBOX_EXPAND_NUMBER, p, 6, &changes));
        a->added = changes;
        break;
    }
    if (a->added == 0) return SP_OK;
    sp_store_param t[4] = {key[0], key[1], sp_p_int((int64_t)a->added), sp_p_int(a->now / 1000)};
    return sp_q_exec(s, SP_Q_CAMPAIGN_ADD_TOTAL, t, 4, NULL);
}

static sp_error sp_audience_check(const sp_store_audience *au) {
    SP_ENSURE(au != NULL, SP_ERR_INVALID_ARGUMENT);
    switch (au->kind) {
    case SP_STORE_AUDIENCE_ALL:
        return SP_OK;
    case SP_STORE_AUDIENCE_IDS:
        SP_ENSURE(au->ids != NULL && au->n_ids > 0, SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(au->n_ids <= SP_STORE_MAX_AUDIENCE_IDS, SP_ERR_TOO_LARGE);
        for (size_t i = 0; i < au->n_ids; i++) SP_ENSURE(sp_id_ok(au->ids[i]), SP_ERR_INVALID_ARGUMENT);
        return SP_OK;
    case SP_STORE_AUDIENCE_ATTRIBUTE:
        SP_ENSURE(sp_attribute_ok(au->attribute), SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE((au->text == NULL) != (au->number == NULL), SP_ERR_INVALID_ARGUMENT);
        if (au->number != NULL) SP_ENSURE(sp_json_number_ok(au->number), SP_ERR_INVALID_ARGUMENT);
        else SP_GUARD(sp_doc_ok(au->text, strnlen(au->text, SP_STORE_MAX_ATTRIBUTES + 1), SP_STORE_MAX_ATTRIBUTES));
        return SP_OK;
    default:
        return SP_ERR_INVALID_ARGUMENT;
    }
}

sp_error sp_store_outbox_expand(sp_store *store, const char *tenant, const char *campaign,
                                const sp_store_audience *audience, int64_t now_ms, uint64_t *added) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(campaign) && now_ms > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_audience_check(audience));
    sp_expand_args a = {tenant, campaign, audience, now_ms, 0};
    SP_GUARD(sp_store_atomic(store, sp_expand_op, &a));
    if (added) *added = a.added;
    return SP_OK;
}

/* ---- a campaign's expansion, a page at a time ---- */

typedef struct {
    const char *tenant, *campaign;
    const sp_store_audience *audience;
    size_t max_profiles;
    int64_t now;
    const sp_store_lease *lease; /* NULL: the page's messages are queued */
    uint64_t added;
    bool finished;
} sp_expand_page_args;

/* A leased page's rows on their way to the lease's fn, each as a claim
 * hands it: the page's tenant, campaign and channel, first attempt. */
struct sp_leased {
    sp_store_outbox_msg m;
    const sp_store_lease *lease;
    bool read_back;  /* the dialect reads the added rows back (SP_Q_OUTBOX_ADDED_AFTER), else RETURNING */
    int64_t after;   /* read_back: the largest seq before the page */
    uint64_t added;
};

static sp_error sp_leased_start(sp_store *s, const sp_store_param key[2], const char *channel,
                                const sp_store_lease *lease, sp_leased *l) {
    memset(l, 0, sizeof *l);
    size_t hl = strlen(channel);
    SP_ENSURE(key[0].len < sizeof l->m.tenant && key[1].len < sizeof l->m.campaign && hl < sizeof l->m.channel,
              SP_ERR_INVALID_ARGUMENT);
    memcpy(l->m.tenant, key[0].data, key[0].len);
    memcpy(l->m.campaign, key[1].data, key[1].len);
    memcpy(l->m.channel, channel, hl);
    l->m.attempts = 1;
    l->lease = lease;
    l->read_back = s->drv->sql[SP_Q_OUTBOX_ADDED_AFTER] != NULL;
    return l->read_back ? sp_q_int(s, SP_Q_OUTBOX_SEQ_MAX, NULL, 0, &l->after, NULL) : SP_OK;
}

/* The rows of the statement just run (seq, profile id, message id) to fn. */
static sp_error sp_leased_take(sp_store *s, sp_leased *l) {
    sp_error rc = SP_OK;
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = s->drv->step(s->db, &row);
        if (rc != SP_OK || !row) break;
        int64_t seq = s->drv->col_int(s->db, 0);
        l->m.seq = seq > 0 ? (uint64_t)seq : 0;
        rc = l->m.seq ? SP_OK : SP_ERR_STORE;
        if (rc == SP_OK) rc = sp_col_name(s, 1, l->m.profile_id, sizeof l->m.profile_id);
        if (rc == SP_OK) rc = sp_col_name(s, 2, l->m.message_id, sizeof l->m.message_id);
        if (rc == SP_OK) rc = l->lease->fn(l->lease->arg, &l->m);
        if (rc == SP_OK) l->added++;
    }
    s->drv->finish(s->db);
    return rc;
}

/* One leased expansion statement (parameters 9 and 10 the owner and the
 * lease's end). */
static sp_error sp_leased_exec(sp_store *s, sp_leased *l, sp_store_q q, const sp_store_param p[10]) {
    if (l->read_back) return sp_q_exec(s, q, p, 10, NULL);
    SP_GUARD(sp_q_write_rows(s, q, p, 10));
    return sp_leased_take(s, l);
}

static sp_error sp_leased_finish(sp_store *s, sp_leased *l, uint64_t *added) {
    if (l->read_back) {
        sp_store_param p[1] = {sp_p_int(l->after)};
        SP_GUARD(s->drv->run(s->db, SP_Q_OUTBOX_ADDED_AFTER, p, 1, NULL));
        SP_GUARD(sp_leased_take(s, l));
    }
    *added = l->added;
    return SP_OK;
}

/* The profile id that ends the page after `after` (*to), or, when fewer
 * than n are left, the last one (*last true); nothing left: *to = "". */
static sp_error sp_page_end(sp_store *s, const sp_store_param *tenant, const char *after, size_t n,
                            char to[SP_STORE_MAX_ID + 1], bool *last) {
    sp_store_param p[3] = {*tenant, sp_p_text(after), sp_p_int((int64_t)n - 1)};
    for (int pass = 0; pass < 2; pass++) {
        bool row = false;
        sp_error rc = s->drv->run(s->db, pass == 0 ? SP_Q_PROFILE_PAGE_END : SP_Q_PROFILE_LAST, p, pass == 0 ? 3 : 2,
                                  NULL);
        if (rc == SP_OK) rc = s->drv->step(s->db, &row);
        if (rc == SP_OK && row) rc = sp_col_name(s, 0, to, SP_STORE_MAX_ID + 1);
        s->drv->finish(s->db);
        SP_GUARD(rc);
        if (row) {
            *last = pass == 1;
            return SP_OK;
        }
    }
    to[0] = 0;
    *last = true;
    return SP_OK;
}

static sp_error sp_expand_page_op(sp_store *s, void *arg) {
    sp_expand_page_args *a = arg;
    const sp_store_audience *au = a->audience;
    sp_store_param key[2];
    sp_campaign_locked c;
    SP_GUARD(sp_expand_lock(s, a->tenant, a->campaign, key, &c));
    a->added = 0;
    a->finished = false;
    if (c.state == SP_STORE_CAMPAIGN_SENDING) {
        a->finished = true; /* someone else expanded the last page */
        return SP_OK;
    }
    SP_ENSURE(c.state == SP_STORE_CAMPAIGN_QUEUED, SP_ERR_ILLEGAL_TRANSITION);
    const sp_store_lease *lease = a->lease;
    /* 5..8 as the audience needs them; 9 and 10 only a leased page binds */
    sp_store_param p[10] = {key[0], key[1], sp_p_text(c.channel), sp_p_int(a->now), sp_p_text(""), sp_p_text(""),
                            sp_p_text(""), sp_p_text(""), sp_p_text(lease ? lease->owner : ""),
                            sp_p_int(lease ? a->now + lease->lease_ms : 0)};
    char to[SP_STORE_MAX_ID + 1] = "";
    uint64_t changes = 0;
    bool last = true;
    sp_leased l;
    if (lease) SP_GUARD(sp_leased_start(s, key, c.channel, lease, &l));
    if (au->kind == SP_STORE_AUDIENCE_IDS) {
        /* at most SP_STORE_MAX_AUDIENCE_IDS statements: one page */
        SP_GUARD(sp_expand_ids(s, p, au, lease ? &l : NULL, &a->added));
    } else {
        SP_GUARD(sp_page_end(s, &key[0], c.expanded_to, a->max_profiles, to, &last));
        sp_store_q q = SP_Q_OUTBOX_EXPAND_ALL_RANGE;
        size_t n = 6;
        if (to[0] != 0 && au->kind == SP_STORE_AUDIENCE_ALL) {
            p[4] = sp_p_text(c.expanded_to);
            p[5] = sp_p_text(to);
            if (lease) q = SP_Q_OUTBOX_EXPAND_ALL_LEASED;
        } else if (to[0] != 0) {
            p[4] = sp_p_text(au->attribute);
            p[5] = sp_p_text(au->text ? au->text : au->number);
            p[6] = sp_p_text(c.expanded_to);
            p[7] = sp_p_text(to);
            n = 8;
            q = au->text ? (lease ? SP_Q_OUTBOX_EXPAND_TEXT_LEASED : SP_Q_OUTBOX_EXPAND_TEXT_RANGE)
                         : (lease ? SP_Q_OUTBOX_EXPAND_NUMBER_LEASED : SP_Q_OUTBOX_EXPAND_NUMBER_RANGE);
        }
        if (to[0] != 0 && lease) {
            SP_GUARD(sp_leased_exec(s, &l, q, p));
        } else if (to[0] != 0) {
            SP_GUARD(sp_q_exec(s, q, p, n, &changes));
            a->added = changes;
        }
    }
    if (lease) SP_GUARD(sp_leased_finish(s, &l, &a->added));
    /* the campaign's row is touched every page, even an empty one: its
     * `updated` tells a scheduler that the expansion is alive */
    sp_store_param e[5] = {key[0], key[1], to[0] != 0 ? sp_p_text(to) : sp_p_text(c.expanded_to),
                           sp_p_int((int64_t)a->added), sp_p_int(a->now / 1000)};
    SP_GUARD(sp_q_exec(s, SP_Q_CAMPAIGN_EXPANDED, e, 5, NULL));
    if (last) {
        sp_store_param m[4] = {key[0], key[1], sp_p_text(sp_store_campaign_state_name(SP_STORE_CAMPAIGN_SENDING)),
                               sp_p_int(a->now / 1000)};
        SP_GUARD(sp_q_exec(s, SP_Q_CAMPAIGN_SET_STATE, m, 4, NULL));
        a->finished = true;
    }
    return SP_OK;
}

static sp_error sp_expand_page(sp_store *store, const char *tenant, const char *campaign,
                               const sp_store_audience *audience, size_t max_profiles, int64_t now_ms,
                               const sp_store_lease *lease, uint64_t *added, bool *finished) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(campaign) && now_ms > 0 && finished != NULL,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(max_profiles >= 1 && max_profiles <= SP_STORE_MAX_EXPAND_PAGE, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_audience_check(audience));
    sp_expand_page_args a = {tenant, campaign, audience, max_profiles, now_ms, lease, 0, false};
    if (added) *added = 0;
    SP_GUARD(sp_store_atomic(store, sp_expand_page_op, &a));
    if (added) *added = a.added;
    *finished = a.finished;
    return SP_OK;
}

sp_error sp_store_campaign_expand_page(sp_store *store, const char *tenant, const char *campaign,
                                       const sp_store_audience *audience, size_t max_profiles, int64_t now_ms,
                                       uint64_t *added, bool *finished) {
    return sp_expand_page(store, tenant, campaign, audience, max_profiles, now_ms, NULL, added, finished);
}

sp_error sp_store_campaign_expand_page_leased(sp_store *store, const char *tenant, const char *campaign,
                                              const sp_store_audience *audience, size_t max_profiles, int64_t now_ms,
                                              const sp_store_lease *lease, uint64_t *added, bool *finished) {
    SP_ENSURE(lease != NULL && sp_owner_ok(lease->owner) && lease->fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(lease->lease_ms >= 1 && lease->lease_ms <= SP_STORE_MAX_LEASE_MS && now_ms <= INT64_MAX - lease->lease_ms,
              SP_ERR_INVALID_ARGUMENT);
    return sp_expand_page(store, tenant, campaign, audience, max_profiles, now_ms, lease, added, finished);
}

typedef struct {
    const sp_store_param *p; /* tenant, channel, profile, message id, now */
    uint64_t seq;
} sp_enqueue_args;

static sp_error sp_enqueue_op(sp_store *s, void *arg) {
    sp_enqueue_args *a = arg;
    bool row = false;
    sp_error rc = sp_q_write_rows(s, SP_Q_OUTBOX_ENQUEUE, a->p, 5);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND; /* no such channel or profile */
    if (rc == SP_OK) {
        int64_t seq = s->drv->col_int(s->db, 0);
        if (seq <= 0) rc = SP_ERR_STORE;
        a->seq = (uint64_t)seq;
    }
    /* the rest of the rows: SQLite's RETURNING finishes its insert there */
    while (rc == SP_OK && row) rc = s->drv->step(s->db, &row);
    s->drv->finish(s->db);
    return rc;
}

sp_error sp_store_outbox_enqueue(sp_store *store, const char *tenant, const char *channel, const char *profile_id,
                                 const char *message_id, int64_t now_ms,
                                 char message_id_out[SP_STORE_MAX_MESSAGE_ID + 1], uint64_t *seq) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_name_ok(channel) && sp_id_ok(profile_id) && now_ms > 0,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(message_id == NULL || sp_message_id_ok(message_id), SP_ERR_INVALID_ARGUMENT);
    char id[SP_STORE_MAX_MESSAGE_ID + 1];
    if (message_id != NULL) {
        memcpy(id, message_id, strlen(message_id) + 1);
    } else {
        memcpy(id, "msg_", 4);
        SP_GUARD(sp_uuid_v7(id + 4));
    }
    sp_store_param p[5] = {sp_p_text(tenant), sp_p_text(channel), sp_p_text(profile_id), sp_p_text(id),
                           sp_p_int(now_ms)};
    sp_enqueue_args a = {p, 0};
    SP_GUARD(sp_store_atomic(store, sp_enqueue_op, &a));
    if (message_id_out) memcpy(message_id_out, id, strlen(id) + 1);
    if (seq) *seq = a.seq;
    return SP_OK;
}

typedef struct {
    const sp_store_param *p; /* owner, now, until, max */
    sp_store_outbox_fn fn;
    void *arg;
    size_t n;
} sp_claim_args;

static sp_error sp_claim_op(sp_store *s, void *arg) {
    sp_claim_args *a = arg;
    sp_store_outbox_msg m;
    a->n = 0;
    sp_error rc = sp_q_write_rows(s, SP_Q_OUTBOX_CLAIM, a->p, 4);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = s->drv->step(s->db, &row);
        if (rc != SP_OK || !row) break;
        int64_t seq = s->drv->col_int(s->db, 0), attempts = s->drv->col_int(s->db, 6);
        m.seq = seq > 0 ? (uint64_t)seq : 0;
        m.attempts = attempts > 0 && attempts <= UINT32_MAX ? (uint32_t)attempts : 0;
        rc = m.seq && m.attempts ? SP_OK : SP_ERR_STORE;
        if (rc == SP_OK) rc = sp_col_name(s, 1, m.tenant, sizeof m.tenant);
        if (rc == SP_OK) rc = sp_col_opt_name(s, 2, m.campaign, sizeof m.campaign);
        if (rc == SP_OK) rc = sp_col_name(s, 3, m.channel, sizeof m.channel);
        if (rc == SP_OK) rc = sp_col_name(s, 4, m.profile_id, sizeof m.profile_id);
        if (rc == SP_OK) rc = sp_col_name(s, 5, m.message_id, sizeof m.message_id);
        if (rc == SP_OK) rc = a->fn(a->arg, &m);
        if (rc == SP_OK) a->n++;
    }
    s->drv->finish(s->db);
    return rc;
}

sp_error sp_store_outbox_claim(sp_store *store, const char *owner, int64_t now_ms, int64_t lease_ms, size_t max,
                               sp_store_outbox_fn fn, void *arg, size_t *n) {
    SP_ENSURE(store != NULL && sp_owner_ok(owner) && now_ms > 0 && fn != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(lease_ms >= 1 && lease_ms <= SP_STORE_MAX_LEASE_MS && now_ms <= INT64_MAX - lease_ms,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(max >= 1 && max <= SP_STORE_MAX_BATCH, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[4] = {sp_p_text(owner), sp_p_int(now_ms), sp_p_int(now_ms + lease_ms), sp_p_int((int64_t)max)};
    sp_claim_args a = {p, fn, arg, 0};
    if (n) *n = 0;
    SP_GUARD(sp_store_atomic(store, sp_claim_op, &a));
    if (n) *n = a.n;
    return SP_OK;
}

/* done, retry and fail: one statement over an array of seqs where the
 * dialect has one (*_MANY), else the single-row form once per seq, all in
 * one transaction. p[1] is the seq's place. */
typedef struct {
    sp_store_q one, many;
    sp_store_param *p;
    size_t np;
    const uint64_t *seqs;
    size_t n;
    uint64_t changed;
} sp_settle_args;

static sp_error sp_settle_op(sp_store *s, void *arg) {
    sp_settle_args *a = arg;
    uint64_t changes = 0;
    a->changed = 0;
    if (s->drv->sql[a->many] != NULL) {
        a->p[1] = (sp_store_param){SP_STORE_INT_ARRAY, a->seqs, a->n, 0};
        SP_GUARD(sp_q_exec(s, a->many, a->p, a->np, &changes));
        a->changed = changes;
        return SP_OK;
    }
    for (size_t i = 0; i < a->n; i++) {
        a->p[1] = sp_p_int((int64_t)a->seqs[i]);
        SP_GUARD(sp_q_exec(s, a->one, a->p, a->np, &changes));
        a->changed += changes;
    }
    return SP_OK;
}

static sp_error sp_settle(sp_store *s, sp_settle_args *a, uint64_t *changed) {
    for (size_t i = 0; i < a->n; i++) SP_ENSURE(a->seqs[i] >= 1 && a->seqs[i] <= INT64_MAX, SP_ERR_INVALID_ARGUMENT);
    if (changed) *changed = 0;
    SP_GUARD(sp_store_atomic(s, sp_settle_op, a));
    if (changed) *changed = a->changed;
    return SP_OK;
}

static bool sp_settle_ok(sp_store *store, const char *owner, const uint64_t *seqs, size_t n, int64_t now_ms) {
    return store != NULL && sp_owner_ok(owner) && seqs != NULL && n >= 1 && n <= SP_STORE_MAX_BATCH && now_ms > 0;
}

sp_error sp_store_outbox_renew(sp_store *store, const char *owner, const uint64_t *seqs, size_t n,
                               int64_t until_ms, uint64_t *changed) {
    SP_ENSURE(sp_settle_ok(store, owner, seqs, n, until_ms), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(owner), sp_p_int(0), sp_p_int(until_ms)};
    sp_settle_args a = {SP_Q_OUTBOX_RENEW_ONE, SP_Q_OUTBOX_RENEW_MANY, p, 3, seqs, n, 0};
    return sp_settle(store, &a, changed);
}

sp_error sp_store_outbox_done(sp_store *store, const char *owner, const uint64_t *seqs, size_t n, int64_t now_ms,
                              uint64_t *changed) {
    SP_ENSURE(sp_settle_ok(store, owner, seqs, n, now_ms), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(owner), sp_p_int(0), sp_p_int(now_ms)};
    sp_settle_args a = {SP_Q_OUTBOX_DONE_ONE, SP_Q_OUTBOX_DONE_MANY, p, 3, seqs, n, 0};
    return sp_settle(store, &a, changed);
}

sp_error sp_store_outbox_retry(sp_store *store, const char *owner, const uint64_t *seqs, size_t n,
                               int64_t next_attempt_ms, const char *error, int provider_status,
                               uint32_t max_attempts, int64_t now_ms, uint64_t *changed) {
    SP_ENSURE(sp_settle_ok(store, owner, seqs, n, now_ms), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(next_attempt_ms > 0 && sp_error_text_ok(error) && max_attempts >= 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(provider_status >= 0 && provider_status <= 999, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[7] = {sp_p_text(owner),       sp_p_int(0),
                           sp_p_int(next_attempt_ms), sp_p_text(error),
                           sp_p_int(provider_status), sp_p_int((int64_t)max_attempts),
                           sp_p_int(now_ms)};
    sp_settle_args a = {SP_Q_OUTBOX_RETRY_ONE, SP_Q_OUTBOX_RETRY_MANY, p, 7, seqs, n, 0};
    return sp_settle(store, &a, changed);
}

sp_error sp_store_outbox_fail(sp_store *store, const char *owner, const uint64_t *seqs, size_t n,
                              sp_store_outbox_state state, const char *error, int provider_status, int64_t now_ms,
                              uint64_t *changed) {
    SP_ENSURE(sp_settle_ok(store, owner, seqs, n, now_ms), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(state == SP_STORE_OUTBOX_FAILED || state == SP_STORE_OUTBOX_DEAD, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_error_text_ok(error) && provider_status >= 0 && provider_status <= 999, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[6] = {sp_p_text(owner), sp_p_int(0),
                           sp_p_text(sp_store_outbox_state_name(state)), sp_p_text(error),
                           sp_p_int(provider_status), sp_p_int(now_ms)};
    sp_settle_args a = {SP_Q_OUTBOX_FAIL_ONE, SP_Q_OUTBOX_FAIL_MANY, p, 6, seqs, n, 0};
    return sp_settle(store, &a, changed);
}

sp_error sp_store_outbox_defer(sp_store *store, const char *owner, const uint64_t *seqs, size_t n,
                               int64_t next_attempt_ms, const char *error, int64_t now_ms, uint64_t *changed) {
    SP_ENSURE(sp_settle_ok(store, owner, seqs, n, now_ms), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(next_attempt_ms > 0 && sp_error_text_ok(error), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[5] = {sp_p_text(owner), sp_p_int(0), sp_p_int(next_attempt_ms), sp_p_text(error),
                           sp_p_int(now_ms)};
    sp_settle_args a = {SP_Q_OUTBOX_DEFER_ONE, SP_Q_OUTBOX_DEFER_MANY, p, 5, seqs, n, 0};
    return sp_settle(store, &a, changed);
}

sp_error sp_store_outbox_release(sp_store *store, const char *owner, int64_t now_ms, uint64_t *changed) {
    SP_ENSURE(store != NULL && sp_owner_ok(owner) && now_ms > 0, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(owner), sp_p_int(now_ms)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_OUTBOX_RELEASE, p, 2, &changes));
    if (changed) *changed = changes;
    return SP_OK;
}

sp_error sp_store_outbox_replay(sp_store *store, const char *tenant, const char *campaign, int64_t now_ms,
                                uint64_t *changed) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && now_ms > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(campaign == NULL || sp_name_ok(campaign), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_int(now_ms), sp_p_text(campaign ? campaign : "")};
    uint64_t changes = 0;
    if (campaign) SP_GUARD(sp_q_exec(store, SP_Q_OUTBOX_REPLAY_CAMPAIGN, p, 3, &changes));
    else SP_GUARD(sp_q_exec(store, SP_Q_OUTBOX_REPLAY, p, 2, &changes));
    if (changed) *changed = changes;
    return SP_OK;
}

sp_error sp_store_outbox_counts_get(sp_store *store, const char *tenant, const char *campaign,
                                    sp_store_outbox_counts *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(campaign == NULL || sp_name_ok(campaign), SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(campaign ? campaign : "")};
    sp_store_outbox_counts c;
    memset(&c, 0, sizeof c);
    uint64_t *slot[] = {[SP_STORE_OUTBOX_QUEUED] = &c.queued, [SP_STORE_OUTBOX_SENDING] = &c.sending,
                        [SP_STORE_OUTBOX_SENT] = &c.sent,     [SP_STORE_OUTBOX_FAILED] = &c.failed,
                        [SP_STORE_OUTBOX_DEAD] = &c.dead};
    sp_error rc = store->drv->run(store->db, campaign ? SP_Q_OUTBOX_COUNTS_CAMPAIGN : SP_Q_OUTBOX_COUNTS, p,
                                  campaign ? 2 : 1, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        size_t len = 0;
        const uint8_t *state = store->drv->col_bytes(store->db, 0, &len);
        int v = sp_index_of(sp_outbox_names, SP_ARRAY_LEN(sp_outbox_names), state, len);
        int64_t count = store->drv->col_int(store->db, 1);
        if (v == 0 || count < 0) rc = SP_ERR_STORE;
        else *slot[v] = (uint64_t)count;
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = c;
    return rc;
}

sp_error sp_store_outbox_live(sp_store *store, uint64_t *count) {
    SP_ENSURE(store != NULL && count != NULL, SP_ERR_INVALID_ARGUMENT);
    return sp_q_count(store, SP_Q_OUTBOX_LIVE, NULL, 0, count);
}

/* The current row's first 16 columns (SP_Q_OUTBOX_GET's) as an outbox row. */
static sp_error sp_outbox_row_read(sp_store *s, sp_store_outbox_row *r) {
    memset(r, 0, sizeof *r);
    int64_t seq = s->drv->col_int(s->db, 0), attempts = s->drv->col_int(s->db, 7);
    int64_t status = s->drv->col_int(s->db, 12);
    r->seq = seq > 0 ? (uint64_t)seq : 0;
    r->attempts = attempts >= 0 && attempts <= UINT32_MAX ? (uint32_t)attempts : 0;
    r->provider_status = status >= 0 && status <= 999 ? (int)status : 0;
    size_t len = 0;
    const uint8_t *state = s->drv->col_bytes(s->db, 6, &len);
    r->state = (sp_store_outbox_state)sp_index_of(sp_outbox_names, SP_ARRAY_LEN(sp_outbox_names), state, len);
    SP_ENSURE(r->seq != 0 && r->state != 0, SP_ERR_STORE);
    SP_GUARD(sp_col_name(s, 1, r->tenant, sizeof r->tenant));
    SP_GUARD(sp_col_opt_name(s, 2, r->campaign, sizeof r->campaign));
    SP_GUARD(sp_col_name(s, 3, r->channel, sizeof r->channel));
    SP_GUARD(sp_col_name(s, 4, r->profile_id, sizeof r->profile_id));
    SP_GUARD(sp_col_name(s, 5, r->message_id, sizeof r->message_id));
    SP_GUARD(sp_col_opt_name(s, 9, r->lease_owner, sizeof r->lease_owner));
    SP_GUARD(sp_col_opt_name(s, 11, r->last_error, sizeof r->last_error));
    r->next_attempt = s->drv->col_int(s->db, 8);
    r->lease_until = s->drv->col_int(s->db, 10);
    r->created = s->drv->col_int(s->db, 13);
    r->updated = s->drv->col_int(s->db, 14);
    r->sent_at = s->drv->col_int(s->db, 15);
    return SP_OK;
}

sp_error sp_store_outbox_get(sp_store *store, const char *message_id, sp_store_outbox_row *out) {
    SP_ENSURE(store != NULL && sp_message_id_ok(message_id) && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[1] = {sp_p_text(message_id)};
    sp_store_outbox_row r;
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_OUTBOX_GET, p, 1, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_outbox_row_read(store, &r);
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = r;
    return rc;
}

/* ---- callbacks and delivery tracking ---- */

#define SP_STORE_MAX_PRUNE 100000
#define SP_STORE_MAX_CODE 99999
#define SP_STORE_MIN_BUCKET_MS ((int64_t)1000)
#define SP_STORE_MAX_BUCKET_MS ((int64_t)31 * 24 * 3600 * 1000)
#define SP_STORE_MAX_BUCKETS 10000

static const char *const sp_delivery_names[] = {[SP_STORE_DELIVERY_DELIVERED] = "delivered",
                                                [SP_STORE_DELIVERY_FAILED] = "failed",
                                                [SP_STORE_DELIVERY_BOUNCED] = "bounced"};

const char *sp_store_delivery_name(sp_store_delivery delivery) {
    return sp_name_of(sp_delivery_names, SP_ARRAY_LEN(sp_delivery_names), (int)delivery);
}

/* A provider's webhook-id: printable ASCII without spaces, 1..128. */
static bool sp_webhook_id_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_STORE_MAX_WEBHOOK_ID + 1);
    if (n < 1 || n > SP_STORE_MAX_WEBHOOK_ID) return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0x20 || s[i] > 0x7e) return false;
    }
    return true;
}

/* Suppression reasons: [a-z_]{1,32}. */
static bool sp_reason_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_STORE_MAX_REASON + 1);
    if (n < 1 || n > SP_STORE_MAX_REASON) return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_')) return false;
    }
    return true;
}

static bool sp_kind_ok(sp_store_channel_kind kind) { return *sp_store_channel_kind_name(kind) != 0; }

sp_error sp_store_callback_seen(sp_store *store, const char *tenant, const char *webhook_id, bool *seen) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_webhook_id_ok(webhook_id) && seen != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(webhook_id)};
    int64_t one = 0;
    bool found = false;
    SP_GUARD(sp_q_int(store, SP_Q_CALLBACK_SEEN, p, 2, &one, &found));
    *seen = found;
    return SP_OK;
}

sp_error sp_store_callback_record(sp_store *store, const char *tenant, const char *webhook_id, int64_t now_ms,
                                  bool *fresh) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_webhook_id_ok(webhook_id) && now_ms > 0 && fresh != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[3] = {sp_p_text(tenant), sp_p_text(webhook_id), sp_p_int(now_ms)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_CALLBACK_RECORD, p, 3, &changes));
    *fresh = changes > 0;
    return SP_OK;
}

sp_error sp_store_callback_prune(sp_store *store, int64_t before_ms, size_t limit, uint64_t *removed) {
    SP_ENSURE(store != NULL && before_ms > 0 && limit >= 1 && limit <= SP_STORE_MAX_PRUNE, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_int(before_ms), sp_p_int((int64_t)limit)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_CALLBACK_PRUNE, p, 2, &changes));
    if (removed) *removed = changes;
    return SP_OK;
}

/* What one message's row holds of its tracking (SP_Q_DELIVERY_READ). The
 * engagement times are in event-kind order: opened .. complained; 0 is
 * never. */
#define SP_ENGAGEMENTS 5
typedef struct {
    int64_t seq;
    sp_store_delivery delivery;
    int64_t at, code;
    int64_t engaged[SP_ENGAGEMENTS];
} sp_tracked;

/* Whether a delivery report (state d at `at` with `code`) replaces what the
 * row has: the latest time wins, a tie goes to the graver state (the enum's
 * order: delivered < failed < bounced), then to the greater code, so the
 * outcome is the same in whatever order reports arrive. */
static bool sp_delivery_wins(const sp_tracked *t, sp_store_delivery d, int64_t at, int64_t code) {
    if (t->delivery == SP_STORE_DELIVERY_NONE) return true;
    if (at != t->at) return at > t->at;
    if (d != t->delivery) return d > t->delivery;
    return code > t->code;
}

/* Applies one event to t; true when something moved. */
static bool sp_track(sp_tracked *t, const sp_store_delivery_event *e) {
    bool changed = false;
    sp_store_delivery d = SP_STORE_DELIVERY_NONE;
    int64_t code = 0;
    switch (e->kind) {
    case SP_STORE_EVENT_DELIVERED:
        d = SP_STORE_DELIVERY_DELIVERED;
        break;
    case SP_STORE_EVENT_FAILED:
        d = SP_STORE_DELIVERY_FAILED;
        code = e->code;
        break;
    case SP_STORE_EVENT_BOUNCED:
        d = SP_STORE_DELIVERY_BOUNCED;
        code = e->code;
        break;
    default: {
        int64_t *first = &t->engaged[e->kind - SP_STORE_EVENT_OPENED];
        if (*first == 0 || e->ts_ms < *first) {
            *first = e->ts_ms;
            changed = true;
        }
        /* an open, a click or a reply proves delivery to a message nobody
         * reported on yet; it is not weighed against reports (it would move
         * delivery_at with every later open). Unsubscribes and complaints
         * may come from a list or a feedback loop, and prove nothing. */
        if (e->kind <= SP_STORE_EVENT_REPLIED && t->delivery == SP_STORE_DELIVERY_NONE) {
            d = SP_STORE_DELIVERY_DELIVERED;
        }
        break;
    }
    }
    if (d != SP_STORE_DELIVERY_NONE && sp_delivery_wins(t, d, e->ts_ms, code)) {
        t->delivery = d;
        t->at = e->ts_ms;
        t->code = code;
        changed = true;
    }
    return changed;
}

typedef struct {
    const char *tenant;
    const char *channel; /* NULL: any of the tenant's */
    const sp_store_delivery_event *events;
    size_t n;
    bool encrypted;
    int64_t now;
    sp_store_applied *results;
} sp_apply_args;

/* Reads the message's row (locked where the dialect can); found false when
 * the tenant has no such message. */
static sp_error sp_tracked_read(sp_store *s, const char *tenant, const char *channel, const char *message_id,
                               sp_tracked *t, bool *found) {
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(message_id)};
    bool row = false;
    sp_error rc = s->drv->run(s->db, SP_Q_DELIVERY_READ, p, 2, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && row) {
        memset(t, 0, sizeof *t);
        t->seq = s->drv->col_int(s->db, 0);
        size_t len = 0;
        const uint8_t *d = s->drv->col_bytes(s->db, 1, &len);
        t->delivery = (sp_store_delivery)sp_index_of(sp_delivery_names, SP_ARRAY_LEN(sp_delivery_names), d, len);
        if (t->seq <= 0 || (d != NULL && t->delivery == SP_STORE_DELIVERY_NONE)) rc = SP_ERR_STORE;
        t->at = s->drv->col_int(s->db, 2);
        t->code = s->drv->col_int(s->db, 3);
        for (int i = 0; i < SP_ENGAGEMENTS; i++) t->engaged[i] = s->drv->col_int(s->db, 4 + i);
        /* another channel's message is not this caller's to report on */
        if (channel != NULL) {
            const uint8_t *c = s->drv->col_bytes(s->db, 4 + SP_ENGAGEMENTS, &len);
            if (c == NULL || len != strlen(channel) || memcmp(c, channel, len) != 0) row = false;
        }
    }
    s->drv->finish(s->db);
    *found = row;
    return rc;
}

static sp_error sp_apply_op(sp_store *s, void *arg) {
    sp_apply_args *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        const sp_store_delivery_event *e = &a->events[i];
        sp_tracked t;
        bool found = false;
        SP_GUARD(sp_tracked_read(s, a->tenant, a->channel, e->message_id, &t, &found));
        if (!found) {
            if (a->results) a->results[i] = SP_STORE_APPLIED_UNKNOWN;
            continue;
        }
        bool changed = sp_track(&t, e);
        /* written either way: when the last callback came, and whether sealed */
        bool delivered = t.delivery != SP_STORE_DELIVERY_NONE;
        sp_store_param p[11] = {
            sp_p_int(t.seq),
            delivered ? sp_p_text(sp_store_delivery_name(t.delivery)) : (sp_store_param){SP_STORE_TEXT, NULL, 0, 0},
            sp_p_int(t.at),
            sp_p_int(t.code),
            sp_p_int(t.engaged[0]),
            sp_p_int(t.engaged[1]),
            sp_p_int(t.engaged[2]),
            sp_p_int(t.engaged[3]),
            sp_p_int(t.engaged[4]),
            sp_p_int(a->now),
            sp_p_int(a->encrypted ? 1 : 0)};
        uint64_t changes = 0;
        SP_GUARD(sp_q_exec(s, SP_Q_DELIVERY_WRITE, p, 11, &changes));
        SP_ENSURE(changes == 1, SP_ERR_STORE);
        if (a->results) a->results[i] = changed ? SP_STORE_APPLIED_CHANGED : SP_STORE_APPLIED_SAME;
    }
    return SP_OK;
}

static bool sp_event_ok(const sp_store_delivery_event *e) {
    return sp_message_id_ok(e->message_id) && e->kind >= SP_STORE_EVENT_DELIVERED &&
           e->kind <= SP_STORE_EVENT_COMPLAINED && e->ts_ms > 0 && e->code >= 0 && e->code <= SP_STORE_MAX_CODE;
}

sp_error sp_store_delivery_apply(sp_store *store, const char *tenant, const char *channel,
                                 const sp_store_delivery_event *events, size_t n, bool encrypted, int64_t now_ms,
                                 sp_store_applied *results) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && events != NULL && now_ms > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(channel == NULL || sp_name_ok(channel), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n >= 1 && n <= SP_STORE_MAX_BATCH, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++) SP_ENSURE(sp_event_ok(&events[i]), SP_ERR_INVALID_ARGUMENT);
    /* the reads lock rows for the writes that follow: refused up front in a
     * read-only transaction, as the writes would be */
    SP_ENSURE(!(store->in_tx && store->read_only), SP_ERR_INVALID_ARGUMENT);
    sp_apply_args a = {tenant, channel, events, n, encrypted, now_ms, results};
    return sp_store_atomic(store, sp_apply_op, &a);
}

sp_error sp_store_message_profile(sp_store *store, const char *tenant, const char *message_id,
                                  char profile_id[SP_STORE_MAX_ID + 1], sp_store_channel_kind *kind) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_message_id_ok(message_id) && profile_id != NULL &&
                  kind != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(message_id)};
    char id[SP_STORE_MAX_ID + 1];
    sp_store_channel_kind k = 0;
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_MESSAGE_PROFILE, p, 2, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_col_name(store, 0, id, sizeof id);
    if (rc == SP_OK) {
        size_t len = 0;
        const uint8_t *name = store->drv->col_bytes(store->db, 1, &len);
        k = (sp_store_channel_kind)sp_index_of(sp_kind_names, SP_ARRAY_LEN(sp_kind_names), name, len);
        if (k == 0) rc = SP_ERR_STORE;
    }
    store->drv->finish(store->db);
    SP_GUARD(rc);
    memcpy(profile_id, id, strlen(id) + 1);
    *kind = k;
    return SP_OK;
}

typedef struct {
    const sp_store_param *key; /* tenant, profile, kind */
    const char *reason;
    int64_t now;
    uint64_t cancelled;
} sp_suppress_args;

/* The suppression's reason; found false when there is none. */
static sp_error sp_suppression_read(sp_store *s, const sp_store_param *key, char reason[SP_STORE_MAX_REASON + 1],
                                    bool *found) {
    bool row = false;
    sp_error rc = s->drv->run(s->db, SP_Q_SUPPRESSED, key, 3, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && row) rc = sp_col_name(s, 0, reason, SP_STORE_MAX_REASON + 1);
    s->drv->finish(s->db);
    *found = row;
    return rc;
}

static sp_error sp_suppress_op(sp_store *s, void *arg) {
    sp_suppress_args *a = arg;
    sp_store_param p[5] = {a->key[0], a->key[1], a->key[2], sp_p_text(a->reason), sp_p_int(a->now)};
    /* made only for a profile that exists (no foreign-key error, which
     * would spoil the caller's PostgreSQL transaction for a NOT_FOUND it
     * may well expect), kept when there: the first reason stays */
    SP_GUARD(sp_q_exec(s, SP_Q_SUPPRESS_INSERT, p, 5, NULL));
    char reason[SP_STORE_MAX_REASON + 1];
    bool found = false;
    SP_GUARD(sp_suppression_read(s, a->key, reason, &found));
    SP_ENSURE(found, SP_ERR_NOT_FOUND);
    /* queued messages are cancelled again each time: a retry may have put
     * one back in the queue since */
    static const char prefix[] = "suppressed: ";
    char error[sizeof prefix + SP_STORE_MAX_REASON];
    size_t n = strlen(reason); /* at most SP_STORE_MAX_REASON: sp_col_name's cap */
    memcpy(error, prefix, sizeof prefix - 1);
    memcpy(error + sizeof prefix - 1, reason, n + 1);
    sp_store_param c[5] = {a->key[0], a->key[1], a->key[2], sp_p_int(a->now), sp_p_text(error)};
    return sp_q_exec(s, SP_Q_SUPPRESS_CANCEL, c, 5, &a->cancelled);
}

sp_error sp_store_suppress(sp_store *store, const char *tenant, const char *profile_id, sp_store_channel_kind kind,
                           const char *reason, int64_t now_ms, uint64_t *cancelled) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_id_ok(profile_id) && sp_kind_ok(kind) &&
                  sp_reason_ok(reason) && now_ms > 0,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param key[3] = {sp_p_text(tenant), sp_p_text(profile_id), sp_p_text(sp_store_channel_kind_name(kind))};
    sp_suppress_args a = {key, reason, now_ms, 0};
    SP_GUARD(sp_store_atomic(store, sp_suppress_op, &a));
    if (cancelled) *cancelled = a.cancelled;
    return SP_OK;
}

sp_error sp_store_suppressed(sp_store *store, const char *tenant, const char *profile_id, sp_store_channel_kind kind,
                             bool *suppressed, char reason[SP_STORE_MAX_REASON + 1]) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_id_ok(profile_id) && sp_kind_ok(kind) &&
                  suppressed != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param key[3] = {sp_p_text(tenant), sp_p_text(profile_id), sp_p_text(sp_store_channel_kind_name(kind))};
    char why[SP_STORE_MAX_REASON + 1] = "";
    bool found = false;
    SP_GUARD(sp_suppression_read(store, key, why, &found));
    *suppressed = found;
    if (reason) memcpy(reason, why, strlen(why) + 1);
    return SP_OK;
}

sp_error sp_store_unsuppress(sp_store *store, const char *tenant, const char *profile_id,
                             sp_store_channel_kind kind) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_id_ok(profile_id) && sp_kind_ok(kind),
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param key[3] = {sp_p_text(tenant), sp_p_text(profile_id), sp_p_text(sp_store_channel_kind_name(kind))};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(store, SP_Q_UNSUPPRESS, key, 3, &changes));
    return changes ? SP_OK : SP_ERR_NOT_FOUND;
}

sp_error sp_store_message_status_get(sp_store *store, const char *tenant, const char *message_id,
                                     sp_store_message_status *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_message_id_ok(message_id) && out != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(message_id)};
    sp_store_message_status m;
    memset(&m, 0, sizeof m);
    bool row = false;
    sp_error rc = store->drv->run(store->db, SP_Q_MESSAGE_STATUS, p, 2, NULL);
    if (rc == SP_OK) rc = store->drv->step(store->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_outbox_row_read(store, &m.outbox);
    if (rc == SP_OK) {
        sp_store *s = store;
        size_t len = 0;
        const uint8_t *d = s->drv->col_bytes(s->db, 16, &len);
        m.delivery = (sp_store_delivery)sp_index_of(sp_delivery_names, SP_ARRAY_LEN(sp_delivery_names), d, len);
        if (d != NULL && m.delivery == SP_STORE_DELIVERY_NONE) rc = SP_ERR_STORE;
        m.delivery_at = s->drv->col_int(s->db, 17);
        int64_t code = s->drv->col_int(s->db, 18);
        m.failure_code = code >= 0 && code <= SP_STORE_MAX_CODE ? (int)code : 0;
        m.opened_at = s->drv->col_int(s->db, 19);
        m.clicked_at = s->drv->col_int(s->db, 20);
        m.replied_at = s->drv->col_int(s->db, 21);
        m.unsubscribed_at = s->drv->col_int(s->db, 22);
        m.complained_at = s->drv->col_int(s->db, 23);
        m.callback_at = s->drv->col_int(s->db, 24);
        m.callback_encrypted = s->drv->col_int(s->db, 25) != 0;
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = m;
    return rc;
}

/* The statement for a campaign, or for the tenant's test sends (campaign
 * NULL, which then takes no parameter of its own). */
static bool sp_campaign_arg_ok(const char *campaign) { return campaign == NULL || sp_name_ok(campaign); }

static uint64_t sp_col_count(sp_store *s, int col, sp_error *rc) {
    int64_t v = s->drv->col_int(s->db, col);
    if (v < 0) *rc = SP_ERR_STORE;
    return v > 0 ? (uint64_t)v : 0;
}

sp_error sp_store_campaign_stats_get(sp_store *store, const char *tenant, const char *campaign,
                                     sp_store_campaign_stats *out) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_campaign_arg_ok(campaign) && out != NULL,
              SP_ERR_INVALID_ARGUMENT);
    /* what a user sees: an outbox state, or a delivery state past it */
    static const char *const shown[] = {"", "queued", "sending", "sent", "failed", "dead", "delivered", "bounced"};
    sp_store_campaign_stats c;
    memset(&c, 0, sizeof c);
    uint64_t *slot[] = {NULL, &c.queued, &c.sending, &c.sent, &c.failed, &c.dead, &c.delivered, &c.bounced};
    uint64_t *engaged[] = {&c.opened, &c.clicked, &c.replied, &c.unsubscribed, &c.complained};
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(campaign ? campaign : "")};
    sp_error rc = store->drv->run(store->db, campaign ? SP_Q_STATS : SP_Q_STATS_TESTS, p, campaign ? 2 : 1, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        size_t len = 0;
        const uint8_t *name = store->drv->col_bytes(store->db, 0, &len);
        int v = sp_index_of(shown, SP_ARRAY_LEN(shown), name, len);
        if (v == 0) {
            rc = SP_ERR_STORE;
            break;
        }
        uint64_t n = sp_col_count(store, 1, &rc);
        *slot[v] += n;
        c.total += n;
        for (int i = 0; i < SP_ENGAGEMENTS; i++) *engaged[i] += sp_col_count(store, 2 + i, &rc);
    }
    store->drv->finish(store->db);
    if (rc == SP_OK) *out = c;
    return rc;
}

sp_error sp_store_campaign_failure_codes(sp_store *store, const char *tenant, const char *campaign,
                                         sp_store_code_count_fn fn, void *arg) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_campaign_arg_ok(campaign) && fn != NULL,
              SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[2] = {sp_p_text(tenant), sp_p_text(campaign ? campaign : "")};
    sp_error rc = store->drv->run(store->db, campaign ? SP_Q_FAILURE_CODES : SP_Q_FAILURE_CODES_TESTS, p,
                                  campaign ? 2 : 1, NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        int64_t code = store->drv->col_int(store->db, 0);
        uint64_t failed = sp_col_count(store, 1, &rc), bounced = sp_col_count(store, 2, &rc);
        if (rc == SP_OK && (code < 0 || code > SP_STORE_MAX_CODE)) rc = SP_ERR_STORE;
        if (rc == SP_OK) rc = fn(arg, (int)code, failed, bounced);
    }
    store->drv->finish(store->db);
    return rc;
}

sp_error sp_store_campaign_timeline(sp_store *store, const char *tenant, const char *campaign, int64_t bucket_ms,
                                    size_t max_buckets, sp_store_bucket_fn fn, void *arg) {
    SP_ENSURE(store != NULL && sp_tenant_ok(tenant) && sp_campaign_arg_ok(campaign) && fn != NULL,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(bucket_ms >= SP_STORE_MIN_BUCKET_MS && bucket_ms <= SP_STORE_MAX_BUCKET_MS, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(max_buckets >= 1 && max_buckets <= SP_STORE_MAX_BUCKETS, SP_ERR_INVALID_ARGUMENT);
    sp_store_param p[4] = {sp_p_text(tenant), sp_p_text(campaign ? campaign : ""), sp_p_int(bucket_ms),
                           sp_p_int((int64_t)max_buckets)};
    sp_error rc = campaign ? store->drv->run(store->db, SP_Q_TIMELINE, p, 4, NULL)
                           : store->drv->run(store->db, SP_Q_TIMELINE_TESTS, (sp_store_param[3]){p[0], p[2], p[3]}, 3,
                                             NULL);
    for (;;) {
        bool row = false;
        if (rc == SP_OK) rc = store->drv->step(store->db, &row);
        if (rc != SP_OK || !row) break;
        sp_store_stats_bucket b;
        b.start_ms = store->drv->col_int(store->db, 0);
        b.sent = sp_col_count(store, 1, &rc);
        b.delivered = sp_col_count(store, 2, &rc);
        b.failed = sp_col_count(store, 3, &rc);
        b.bounced = sp_col_count(store, 4, &rc);
        b.opened = sp_col_count(store, 5, &rc);
        b.clicked = sp_col_count(store, 6, &rc);
        b.replied = sp_col_count(store, 7, &rc);
        if (rc == SP_OK) rc = fn(arg, &b);
    }
    store->drv->finish(store->db);
    return rc;
}

/* ---- the keyring's storage: one row of `keyrings` ---- */

typedef struct {
    sp_store *s;
    char tenant[SP_KEYRING_MAX_NAME + 1];
} sp_store_kr;

static sp_error sp_kr_row_read(void *ctx, uint8_t **doc, size_t *len, uint64_t *generation) {
    sp_store_kr *k = ctx;
    sp_store_param p[1] = {sp_p_text(k->tenant)};
    bool row = false;
    uint8_t *copy = NULL;
    size_t n = 0;
    int64_t gen = 0;
    sp_error rc = k->s->drv->run(k->s->db, SP_Q_KEYRING_READ, p, 1, NULL);
    if (rc == SP_OK) rc = k->s->drv->step(k->s->db, &row);
    if (rc == SP_OK && row) {
        gen = k->s->drv->col_int(k->s->db, 0);
        const uint8_t *b = k->s->drv->col_bytes(k->s->db, 1, &n);
        if (b == NULL) {
            n = 0;
        } else if (n > SP_KEYRING_MAX_FILE) {
            rc = SP_ERR_TOO_LARGE;
        } else {
            copy = sp_malloc(n + 1);
            if (copy == NULL) {
                rc = SP_ERR_NO_MEMORY;
            } else {
                memcpy(copy, b, n);
                copy[n] = 0;
            }
        }
    }
    k->s->drv->finish(k->s->db);
    if (rc != SP_OK) {
        if (copy) sp_free_wiped(copy, n + 1);
        return rc;
    }
    *doc = copy;
    *len = copy ? n : 0;
    *generation = gen > 0 ? (uint64_t)gen : 0;
    return SP_OK;
}

static sp_error sp_kr_row_generation(void *ctx, uint64_t *generation) {
    sp_store_kr *k = ctx;
    sp_store_param p[1] = {sp_p_text(k->tenant)};
    int64_t gen = 0;
    SP_GUARD(sp_q_int(k->s, SP_Q_KEYRING_GENERATION, p, 1, &gen, NULL));
    *generation = gen > 0 ? (uint64_t)gen : 0;
    return SP_OK;
}

/* Microseconds since the epoch: the first generation of a new row. Each
 * write is a committed transaction taking far longer than a microsecond, so
 * a row made again after a delete starts past every generation the old one
 * reached. */
static int64_t sp_kr_first_generation(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static sp_error sp_kr_row_lock(void *ctx) {
    sp_store_kr *k = ctx;
    SP_GUARD(sp_store_begin(k->s));
    sp_store_param p[2] = {sp_p_text(k->tenant), sp_p_int(sp_kr_first_generation())};
    int64_t gen = 0;
    sp_error rc = sp_q_exec(k->s, SP_Q_KEYRING_ENSURE, p, 2, NULL);
    if (rc == SP_OK) rc = sp_q_int(k->s, SP_Q_KEYRING_LOCK, p, 1, &gen, NULL);
    if (rc != SP_OK) sp_store_rollback(k->s);
    return rc;
}

static sp_error sp_kr_row_write(void *ctx, const uint8_t *doc, size_t len) {
    sp_store_kr *k = ctx;
    SP_ENSURE(k->s->in_tx && doc != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len <= SP_KEYRING_MAX_FILE, SP_ERR_TOO_LARGE);
    sp_store_param p[2] = {sp_p_text(k->tenant), sp_p_blob(doc, len)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(k->s, SP_Q_KEYRING_WRITE, p, 2, &changes));
    return changes ? SP_OK : SP_ERR_STORE;
}

static sp_error sp_kr_row_unlock(void *ctx, bool commit) {
    sp_store_kr *k = ctx;
    if (!commit) {
        sp_store_rollback(k->s);
        return SP_OK;
    }
    return sp_store_commit(k->s);
}

static void sp_kr_row_free_doc(void *ctx, uint8_t *doc, size_t len) {
    (void)ctx;
    if (doc != NULL) sp_free_wiped(doc, len + 1);
}

static void sp_kr_row_close(void *ctx) {
    sp_store_kr *k = ctx;
    if (k == NULL) return;
    sp_store_close(k->s);
    sp_free(k);
}

sp_error sp_store_keyring_storage(const char *url, const char *tenant, sp_keyring_storage *storage) {
    SP_ENSURE(url != NULL && storage != NULL && sp_keyring_name_ok(tenant), SP_ERR_INVALID_ARGUMENT);
    sp_store_kr *k = sp_calloc(1, sizeof *k);
    SP_ENSURE(k != NULL, SP_ERR_NO_MEMORY);
    memcpy(k->tenant, tenant, strlen(tenant) + 1);
    sp_error rc = sp_store_open_as(url, true, &k->s);
    if (rc != SP_OK) {
        sp_free(k);
        return rc;
    }
    *storage = (sp_keyring_storage){.ctx = k,
                                    .read = sp_kr_row_read,
                                    .generation = sp_kr_row_generation,
                                    .lock = sp_kr_row_lock,
                                    .write = sp_kr_row_write,
                                    .unlock = sp_kr_row_unlock,
                                    .free_doc = sp_kr_row_free_doc,
                                    .close = sp_kr_row_close};
    return SP_OK;
}

/* Writes one tenant's part of the file keyring into its row, unless the
 * row already has a document. */
static sp_error sp_import_tenant(const char *url, sp_keyring *file, const char *tenant, bool *imported) {
    sp_keyring_storage st;
    SP_GUARD(sp_store_keyring_storage(url, tenant, &st));
    uint8_t *doc = NULL, *have = NULL;
    size_t len = 0, have_len = 0;
    uint64_t gen = 0;
    sp_error rc = sp_keyring_serialize_tenant(file, tenant, &doc, &len);
    if (rc == SP_OK) rc = st.lock(st.ctx);
    if (rc == SP_OK) {
        rc = st.read(st.ctx, &have, &have_len, &gen);
        *imported = rc == SP_OK && have == NULL;
        if (rc == SP_OK && have == NULL) rc = st.write(st.ctx, doc, len);
        sp_error urc = st.unlock(st.ctx, rc == SP_OK);
        if (rc == SP_OK) rc = urc;
    }
    if (have != NULL) st.free_doc(st.ctx, have, have_len);
    if (doc != NULL) sp_free_wiped(doc, len + 1);
    st.close(st.ctx);
    if (rc != SP_OK) *imported = false;
    return rc;
}

sp_error sp_store_import_keyring_file(const char *url, const char *path, size_t *imported) {
    SP_ENSURE(url != NULL && path != NULL, SP_ERR_INVALID_ARGUMENT);
    /* opening a keyring file creates it; importing one that is not there is
     * a mistake to report, not an empty import */
    struct stat st;
    SP_ENSURE(stat(path, &st) == 0, errno == ENOENT ? SP_ERR_NOT_FOUND : SP_ERR_IO);
    sp_keyring *file = NULL;
    SP_GUARD(sp_keyring_open(path, NULL, &file));
    typedef char sp_name[SP_KEYRING_MAX_NAME + 1];
    sp_name *seen = NULL;
    size_t nseen = 0, cap = 0, done = 0, count = sp_keyring_count(file);
    sp_error rc = SP_OK;
    for (size_t i = 0; rc == SP_OK && i < count; i++) {
        sp_keyring_entry e;
        rc = sp_keyring_get(file, i, &e);
        bool first = rc == SP_OK;
        for (size_t j = 0; first && j < nseen; j++) first = strcmp(seen[j], e.tenant) != 0;
        if (!first) continue;
        if (nseen == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            sp_name *grown = sp_calloc(ncap, sizeof *grown);
            if (grown == NULL) {
                rc = SP_ERR_NO_MEMORY;
                break;
            }
            if (nseen) memcpy(grown, seen, nseen * sizeof *seen);
            sp_free(seen);
            seen = grown;
            cap = ncap;
        }
        memcpy(seen[nseen++], e.tenant, sizeof e.tenant);
        bool one = false;
        rc = sp_import_tenant(url, file, e.tenant, &one);
        if (one) done++;
    }
    sp_free(seen);
    sp_keyring_close(file);
    if (rc == SP_OK && imported) *imported = done;
    return rc;
}
