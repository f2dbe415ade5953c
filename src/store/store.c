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

sp_error sp_store_begin(sp_store *store) {
    SP_ENSURE(store != NULL && !store->in_tx, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(store->drv->ping(store->db)); /* a lost connection comes back here, between requests */
    SP_GUARD(store->drv->script(store->db, store->drv->sql[SP_Q_BEGIN]));
    store->in_tx = true;
    store->read_only = false;
    return SP_OK;
}

sp_error sp_store_begin_read(sp_store *store) {
    SP_ENSURE(store != NULL && !store->in_tx, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(store->drv->ping(store->db));
    SP_GUARD(store->drv->script(store->db, store->drv->sql[SP_Q_BEGIN_READ]));
    store->in_tx = true;
    store->read_only = true;
    return SP_OK;
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
    sp_store_param p[6] = {sp_p_text(pr->tenant), sp_p_text(pr->id), sp_p_textn(pr->attributes, pr->attributes_len),
                           sp_p_int(a->now)};
    uint64_t changes = 0;
    SP_GUARD(sp_q_exec(s, SP_Q_PROFILE_INSERT, p, 4, &changes));
    a->created = changes > 0;
    if (!a->created) SP_GUARD(sp_q_exec(s, SP_Q_PROFILE_MERGE, p, 4, NULL));
    for (size_t i = 0; i < pr->n_pii; i++) {
        const sp_store_pii *f = &pr->pii[i];
        p[2] = sp_p_text(f->field);
        p[3] = sp_p_blob(f->blob, f->blob_len);
        p[4] = sp_p_blob(f->index, f->index ? f->index_len : 0);
        p[5] = sp_p_int(a->now);
        SP_GUARD(sp_q_exec(s, SP_Q_PII_UPSERT, p, 6, NULL));
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

static sp_error sp_profile_get_into(sp_store *s, const sp_store_param *p, sp_store_profile_row *r) {
    bool row = false;
    sp_error rc = s->drv->run(s->db, SP_Q_PROFILE_GET, p, 2, NULL);
    if (rc == SP_OK) rc = s->drv->step(s->db, &row);
    if (rc == SP_OK && !row) rc = SP_ERR_NOT_FOUND;
    if (rc == SP_OK) rc = sp_col_name(s, 0, r->id, sizeof r->id);
    if (rc == SP_OK) {
        size_t len = 0;
        const uint8_t *attrs = s->drv->col_bytes(s->db, 1, &len);
        r->attributes = attrs ? sp_malloc(len + 1) : NULL;
        if (attrs == NULL) rc = SP_ERR_STORE;
        else if (r->attributes == NULL) rc = SP_ERR_NO_MEMORY;
        else {
            memcpy(r->attributes, attrs, len);
            r->attributes[len] = 0;
            r->attributes_len = len;
        }
        r->created = s->drv->col_int(s->db, 2);
        r->updated = s->drv->col_int(s->db, 3);
    }
    s->drv->finish(s->db);
    SP_GUARD(rc);
    rc = s->drv->run(s->db, SP_Q_PII_GET, p, 2, NULL);
    for (;;) {
        if (rc == SP_OK) rc = s->drv->step(s->db, &row);
        if (rc != SP_OK || !row) break;
        if (r->n_pii == SP_VAULT_MAX_PII_FIELDS) {
            rc = SP_ERR_TOO_LARGE;
            break;
        }
        sp_store_pii_row *f = &r->pii[r->n_pii];
        size_t len = 0;
        rc = sp_col_name(s, 0, f->field, sizeof f->field);
        const uint8_t *blob = s->drv->col_bytes(s->db, 1, &len);
        if (rc == SP_OK && (blob == NULL || len == 0)) rc = SP_ERR_STORE;
        if (rc != SP_OK) break;
        f->blob = sp_malloc(len);
        if (f->blob == NULL) {
            rc = SP_ERR_NO_MEMORY;
            break;
        }
        memcpy(f->blob, blob, len);
        f->blob_len = len;
        r->n_pii++;
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
