/*
 * The admin API (/admin/v1): tenants and their credentials. The router has
 * already checked the admin allow-list and the admin credential; here each
 * request validates its body completely, then does its store work in one
 * transaction, retried from the start (up to three times) when a concurrent
 * writer wins (SP_ERR_CONFLICT). Every request, whatever its outcome,
 * writes one audit line "admin.<action>" with the admin credential id, the
 * tenant and the result; every change bumps the tenants' generation so
 * caches and per-thread contexts rebuild.
 *
 * A new tenant's KMS config is probed (open, wrap, unwrap) before the tenant
 * is saved, so a typo fails the request rather than the tenant's first
 * ingestion. Deleting a tenant first crypto-erases its vault keys, then
 * deletes its rows: ciphertexts that survive anywhere (backups, WAL pages)
 * stay unreadable.
 *
 * Generated client keys and secrets carry 256 random bits; only their keyed
 * hashes are stored, and the secret appears once, in the 201 reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

#define TX_ATTEMPTS 3
#define MAX_EXPIRES_IN 315360000 /* ten years */
#define LIST_DEFAULT 100
#define LIST_MAX 1000

typedef sp_error (*tx_fn)(sp_store *store, void *ctx);

/* Runs fn in a transaction, from the start again on SP_ERR_CONFLICT. */
static sp_error in_transaction(spd_app *app, tx_fn fn, void *ctx) {
    sp_store *store = NULL;
    sp_error rc = spd_store(app, &store);
    if (rc != SP_OK) return rc;
    for (int attempt = 0; attempt < TX_ATTEMPTS; attempt++) {
        rc = sp_store_begin(store);
        if (rc == SP_OK) rc = fn(store, ctx);
        if (rc == SP_OK) rc = sp_store_commit(store);
        if (rc == SP_OK) return SP_OK;
        sp_store_rollback(store);
        if (rc != SP_ERR_CONFLICT) return rc;
    }
    return rc;
}

static void audit_admin(spd_app *app, const char *event, const spd_auth *auth, const char *tenant,
                        const char *result, const char *target) {
    sp_audit_field fields[4];
    size_t n = 0;
    fields[n++] = (sp_audit_field){"credential", auth->credential_id};
    fields[n++] = (sp_audit_field){"tenant", tenant ? tenant : ""};
    fields[n++] = (sp_audit_field){"result", result};
    if (target && target[0]) fields[n++] = (sp_audit_field){"target", target};
    sp_error rc = app->audit ? sp_audit_record(app->audit, event, fields, n) : SP_OK;
    sp_log_field lf[] = {SP_LOG_S("action", event), SP_LOG_S("credential", auth->credential_id),
                         SP_LOG_S("tenant", tenant ? tenant : ""), SP_LOG_S("result", result)};
    sp_log(SP_LOG_INFO, "admin.action", lf, 4);
    if (rc != SP_OK) {
        sp_log_field ef[] = {SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_ERROR, "audit.write_failed", ef, 1);
    }
}

static const char *result_of(sp_error rc) {
    switch (rc) {
    case SP_OK: return "ok";
    case SP_ERR_NOT_FOUND: return "not_found";
    case SP_ERR_EXISTS: return "conflict";
    case SP_ERR_INVALID_ARGUMENT: return "bad_request";
    default: return sp_error_name(rc);
    }
}

static void changed(spd_app *app) {
    atomic_fetch_add(&app->tenants_generation, 1);
    spd_tenant_invalidate(app);
}

json_t *spd_body_object(sp_http_request *req, bool empty_ok) {
    size_t len = 0;
    const uint8_t *data = sp_http_body(req, &len);
    if (len == 0 && empty_ok) return json_object();
    json_error_t jerr;
    json_t *doc = data ? json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!doc) {
        spd_reply_error(req, 400, "bad_json", "the body is not valid JSON (or repeats a key)");
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        spd_reply_error(req, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return doc;
}

static void reply_store_error(sp_http_request *req, sp_error rc, const char *what_missing) {
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", what_missing);
        return;
    }
    spd_reply_sp_error(req, rc);
}

/* ---- credentials ---- */

sp_error spd_credential_issue(spd_app *app, sp_store *store, const char *tenant, const char *existing_client_key,
                              int64_t expires_in, json_t **out, char *err, size_t cap) {
    if (!app || !store || !tenant || !out || expires_in < 0 || expires_in > MAX_EXPIRES_IN)
        return SP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    char client_key[48] = "", secret[48] = "";
    sp_store_credential cred;
    memset(&cred, 0, sizeof cred);
    sp_error rc;
    if (existing_client_key) {
        size_t klen = strlen(existing_client_key);
        rc = spd_credential_hash(app, SPD_HASH_CLIENT_KEY, existing_client_key, klen, cred.client_key_hash);
        if (rc != SP_OK) return rc;
        sp_store_credential found[SP_STORE_MAX_CREDENTIALS_PER_KEY];
        size_t count = 0;
        rc = sp_store_credential_find(store, cred.client_key_hash, found, SP_STORE_MAX_CREDENTIALS_PER_KEY, &count);
        if (rc != SP_OK) return rc;
        bool ours = count > 0;
        for (size_t i = 0; i < count; i++) ours = ours && strcmp(found[i].tenant, tenant) == 0;
        if (!ours) {
            snprintf(err, cap, "client_access_key: not a client access key of this tenant");
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (count >= SP_STORE_MAX_CREDENTIALS_PER_KEY) {
            snprintf(err, cap, "client_access_key: already has %d secrets; revoke one first",
                     SP_STORE_MAX_CREDENTIALS_PER_KEY);
            return SP_ERR_INVALID_ARGUMENT;
        }
    } else {
        rc = spd_credential_generate("spk_", client_key);
        if (rc == SP_OK)
            rc = spd_credential_hash(app, SPD_HASH_CLIENT_KEY, client_key, strlen(client_key), cred.client_key_hash);
        if (rc != SP_OK) goto done;
    }
    rc = spd_credential_generate("sps_", secret);
    if (rc == SP_OK) rc = spd_credential_hash(app, SPD_HASH_SECRET, secret, strlen(secret), cred.secret_hash);
    if (rc == SP_OK) rc = sp_uuid_v4(cred.id);
    if (rc != SP_OK) goto done;
    memcpy(cred.tenant, tenant, strlen(tenant) + 1);
    cred.created = (int64_t)time(NULL);
    cred.expires = expires_in ? cred.created + expires_in : 0;
    rc = sp_store_credential_add(store, &cred);
    if (rc != SP_OK) goto done;
    *out = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I}", "id", cred.id, "tenant", tenant, "client_access_key",
                     existing_client_key ? existing_client_key : client_key, "api_secret", secret, "created",
                     (json_int_t)cred.created, "expires", (json_int_t)cred.expires);
    if (!*out) rc = SP_ERR_NO_MEMORY;
done:
    sp_wipe(secret, sizeof secret);
    sp_wipe(client_key, sizeof client_key);
    sp_wipe(&cred, sizeof cred);
    return rc;
}

typedef struct cred_create_ctx {
    spd_app *app;
    const char *tenant;
    const char *existing;
    int64_t expires_in;
    json_t *out;
    char err[160];
} cred_create_ctx;

static sp_error cred_create_tx(sp_store *store, void *arg) {
    cred_create_ctx *c = arg;
    json_decref(c->out);
    c->out = NULL;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    sp_error rc = sp_store_tenant_get(store, c->tenant, &row);
    sp_store_tenant_clear(&row);
    if (rc != SP_OK) return rc;
    return spd_credential_issue(c->app, store, c->tenant, c->existing, c->expires_in, &c->out, c->err,
                                sizeof c->err);
}

static void credential_create(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *tenant) {
    json_t *body = spd_body_object(req, true);
    if (!body) {
        audit_admin(app, "admin.credential.create", auth, tenant, "bad_request", NULL);
        return;
    }
    cred_create_ctx c = {.app = app, .tenant = tenant};
    const char *key;
    json_t *v;
    const char *problem = NULL;
    json_object_foreach(body, key, v) {
        if (strcmp(key, "expires_in") != 0 && strcmp(key, "client_access_key") != 0) {
            snprintf(c.err, sizeof c.err, "unknown field '%.48s'", key);
            problem = c.err;
            break;
        }
    }
    v = json_object_get(body, "expires_in");
    if (!problem && v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_EXPIRES_IN)
            problem = "expires_in: must be a whole number of seconds between 0 and 315360000";
        else
            c.expires_in = (int64_t)json_integer_value(v);
    }
    v = json_object_get(body, "client_access_key");
    if (!problem && v && !json_is_null(v)) {
        const char *k = json_is_string(v) ? json_string_value(v) : NULL;
        size_t len = k ? strlen(k) : 0;
        bool printable = k && len >= 1 && len <= 256 && json_string_length(v) == len;
        for (size_t i = 0; printable && i < len; i++) printable = k[i] >= 0x20 && k[i] <= 0x7e;
        if (!printable)
            problem = "client_access_key: must be 1 to 256 printable ASCII characters";
        else
            c.existing = k;
    }
    if (problem) {
        spd_reply_error(req, 400, "bad_request", problem);
        audit_admin(app, "admin.credential.create", auth, tenant, "bad_request", NULL);
        json_decref(body);
        return;
    }
    sp_error rc = in_transaction(app, cred_create_tx, &c);
    json_decref(body);
    if (rc == SP_OK) {
        const char *id = json_string_value(json_object_get(c.out, "id"));
        audit_admin(app, "admin.credential.create", auth, tenant, "ok", id);
        spd_reply_json(req, 201, c.out);
        return;
    }
    json_decref(c.out);
    audit_admin(app, "admin.credential.create", auth, tenant, result_of(rc), NULL);
    if (rc == SP_ERR_INVALID_ARGUMENT)
        spd_reply_error(req, 400, "bad_request", c.err);
    else
        reply_store_error(req, rc, "no such tenant");
}

static sp_error credential_list_cb(void *arg, const sp_store_credential *cred) {
    json_t *o = json_pack("{s:s,s:I,s:I,s:I}", "id", cred->id, "created", (json_int_t)cred->created, "expires",
                          (json_int_t)cred->expires, "revoked", (json_int_t)cred->revoked);
    if (!o || json_array_append_new(arg, o) != 0) return SP_ERR_NO_MEMORY;
    return SP_OK;
}

static void credential_list(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *tenant) {
    sp_store *store = NULL;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    json_t *list = json_array();
    sp_error rc = list ? spd_store(app, &store) : SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_store_tenant_get(store, tenant, &row);
    sp_store_tenant_clear(&row);
    if (rc == SP_OK) rc = sp_store_credential_list(store, tenant, credential_list_cb, list);
    audit_admin(app, "admin.credential.list", auth, tenant, result_of(rc), NULL);
    if (rc != SP_OK) {
        json_decref(list);
        reply_store_error(req, rc, "no such tenant");
        return;
    }
    spd_reply_json(req, 200, json_pack("{s:o}", "credentials", list));
}

typedef struct revoke_ctx {
    const char *tenant;
    const char *id;
} revoke_ctx;

static sp_error revoke_tx(sp_store *store, void *arg) {
    revoke_ctx *c = arg;
    return sp_store_credential_revoke(store, c->tenant, c->id, (int64_t)time(NULL));
}

static void credential_revoke(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *tenant,
                              const char *cid) {
    revoke_ctx c = {tenant, cid};
    sp_error rc = sp_uuid_is_valid(cid, strlen(cid)) ? in_transaction(app, revoke_tx, &c) : SP_ERR_NOT_FOUND;
    audit_admin(app, "admin.credential.revoke", auth, tenant, result_of(rc), cid);
    if (rc != SP_OK) {
        reply_store_error(req, rc, "no such credential");
        return;
    }
    changed(app);
    spd_reply_empty(req);
}

/* ---- tenants ---- */

typedef struct tenant_ctx {
    spd_app *app;
    const char *id;
    const json_t *body;       /* PATCH */
    spd_settings *settings;
    char *document;           /* create */
    json_t *out;
    int64_t now;
    char err[256];
} tenant_ctx;

static sp_error tenant_create_tx(sp_store *store, void *arg) {
    tenant_ctx *c = arg;
    return sp_store_tenant_create(store, c->id, c->document, strlen(c->document), c->now);
}

static void tenant_create(spd_app *app, sp_http_request *req, const spd_auth *auth) {
    json_t *body = spd_body_object(req, false);
    if (!body) {
        audit_admin(app, "admin.tenant.create", auth, "", "bad_request", NULL);
        return;
    }
    tenant_ctx c = {.app = app, .now = (int64_t)time(NULL)};
    spd_settings *s = calloc(1, sizeof *s);
    sp_error rc = s ? SP_OK : SP_ERR_NO_MEMORY;
    unsigned status = 0;
    const char *code = NULL;
    const char *message = NULL;
    json_t *idv = json_object_get(body, "id");
    const char *id = json_is_string(idv) ? json_string_value(idv) : NULL;
    if (rc == SP_OK && (!id || !spd_tenant_id_valid(id) || json_string_length(idv) != strlen(id))) {
        status = 400, code = "bad_request", message = "id: must match ^[a-z0-9][a-z0-9_-]{0,63}$";
        rc = SP_ERR_INVALID_ARGUMENT;
    }
    if (rc == SP_OK) rc = spd_settings_defaults(&app->config, id, s);
    if (rc == SP_OK) {
        rc = spd_settings_apply(body, true, s, NULL, c.err, sizeof c.err);
        if (rc == SP_ERR_INVALID_ARGUMENT) status = 400, code = "bad_request", message = c.err;
    }
    sp_store *store = NULL;
    if (rc == SP_OK) {
        /* 409 before the KMS probe, which may create a local key file */
        sp_store_tenant row;
        memset(&row, 0, sizeof row);
        rc = spd_store(app, &store);
        if (rc == SP_OK) rc = sp_store_tenant_get(store, id, &row);
        sp_store_tenant_clear(&row);
        if (rc == SP_OK) {
            rc = SP_ERR_EXISTS;
        } else if (rc == SP_ERR_NOT_FOUND) {
            rc = SP_OK;
        }
    }
    if (rc == SP_OK) {
        char why[200] = "";
        char pinned[SP_KMS_MAX_CONFIG + 1];
        rc = spd_kms_probe(s->kms, why, sizeof why, pinned, sizeof pinned);
        if (rc == SP_OK) {
            if (strlen(pinned) >= sizeof s->kms) rc = SP_ERR_TOO_LARGE;
            else memcpy(s->kms, pinned, strlen(pinned) + 1);
        }
        if (rc != SP_OK) {
            snprintf(c.err, sizeof c.err, "kms: %s", why[0] ? why : sp_strerror(rc));
            status = 400, code = "bad_request", message = c.err;
            rc = SP_ERR_INVALID_ARGUMENT;
        }
    }
    json_t *doc = NULL;
    if (rc == SP_OK) {
        doc = spd_settings_document(s);
        c.document = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        rc = c.document ? SP_OK : SP_ERR_NO_MEMORY;
    }
    if (rc == SP_OK) {
        c.id = id;
        rc = in_transaction(app, tenant_create_tx, &c);
    }
    audit_admin(app, "admin.tenant.create", auth, id && spd_tenant_id_valid(id) ? id : "", result_of(rc), NULL);
    if (rc == SP_OK) {
        changed(app);
        spd_reply_json(req, 201, spd_tenant_json(id, s, false, c.now, c.now));
    } else if (status) {
        spd_reply_error(req, status, code, message);
    } else if (rc == SP_ERR_EXISTS) {
        spd_reply_error(req, 409, "conflict", "a tenant with this id exists");
    } else {
        spd_reply_sp_error(req, rc);
    }
    if (c.document) {
        json_free_t f;
        json_malloc_t m;
        json_get_alloc_funcs(&m, &f);
        sp_wipe(c.document, strlen(c.document));
        if (f)
            f(c.document);
        else
            free(c.document);
    }
    json_decref(doc);
    if (s) sp_wipe(s, sizeof *s);
    free(s);
    json_decref(body);
}

/* Reads one tenant into settings and the API object. */
static sp_error tenant_load(sp_store *store, const char *id, spd_settings *s, sp_store_tenant *row) {
    sp_error rc = sp_store_tenant_get(store, id, row);
    if (rc != SP_OK) return rc;
    rc = spd_settings_parse(row->settings, row->settings_len, s);
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("tenant", id), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_ERROR, "tenant.bad_settings", f, 2);
        return SP_ERR_BAD_CONFIG;
    }
    return SP_OK;
}

static void tenant_get(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *id) {
    sp_store *store = NULL;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    spd_settings *s = calloc(1, sizeof *s);
    sp_error rc = s ? spd_store(app, &store) : SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = tenant_load(store, id, s, &row);
    audit_admin(app, "admin.tenant.get", auth, id, result_of(rc), NULL);
    if (rc == SP_OK)
        spd_reply_json(req, 200, spd_tenant_json(id, s, row.disabled, row.created, row.updated));
    else
        reply_store_error(req, rc, "no such tenant");
    sp_store_tenant_clear(&row);
    if (s) sp_wipe(s, sizeof *s);
    free(s);
}

static sp_error tenant_patch_tx(sp_store *store, void *arg) {
    tenant_ctx *c = arg;
    json_decref(c->out);
    c->out = NULL;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    sp_error rc = tenant_load(store, c->id, c->settings, &row);
    bool disabled = row.disabled;
    int64_t created = row.created;
    sp_store_tenant_clear(&row);
    if (rc != SP_OK) return rc;
    rc = spd_settings_apply(c->body, false, c->settings, &disabled, c->err, sizeof c->err);
    if (rc != SP_OK) return rc;
    json_t *doc = spd_settings_document(c->settings);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) return SP_ERR_NO_MEMORY;
    rc = sp_store_tenant_update(store, c->id, text, strlen(text), disabled, c->now);
    json_free_t f;
    json_malloc_t m;
    json_get_alloc_funcs(&m, &f);
    if (f)
        f(text);
    else
        free(text);
    if (rc != SP_OK) return rc;
    c->out = spd_tenant_json(c->id, c->settings, disabled, created, c->now);
    return c->out ? SP_OK : SP_ERR_NO_MEMORY;
}

static void tenant_patch(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *id) {
    json_t *body = spd_body_object(req, false);
    if (!body) {
        audit_admin(app, "admin.tenant.update", auth, id, "bad_request", NULL);
        return;
    }
    tenant_ctx c = {.app = app, .id = id, .body = body, .now = (int64_t)time(NULL)};
    c.settings = calloc(1, sizeof *c.settings);
    sp_error rc = c.settings ? in_transaction(app, tenant_patch_tx, &c) : SP_ERR_NO_MEMORY;
    audit_admin(app, "admin.tenant.update", auth, id, result_of(rc), NULL);
    if (rc == SP_OK) {
        changed(app);
        spd_reply_json(req, 200, c.out);
    } else {
        json_decref(c.out);
        if (rc == SP_ERR_INVALID_ARGUMENT)
            spd_reply_error(req, 400, "bad_request", c.err);
        else
            reply_store_error(req, rc, "no such tenant");
    }
    if (c.settings) sp_wipe(c.settings, sizeof *c.settings);
    free(c.settings);
    json_decref(body);
}

static sp_error tenant_delete_tx(sp_store *store, void *arg) {
    tenant_ctx *c = arg;
    return sp_store_tenant_delete(store, c->id);
}

static void tenant_delete(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *id) {
    sp_store *store = NULL;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    sp_error rc = spd_store(app, &store);
    if (rc == SP_OK) rc = sp_store_tenant_get(store, id, &row);
    sp_store_tenant_clear(&row);
    /* Keys first: should the delete then fail, the rows are unreadable
     * anyway and a retried DELETE finishes the job. */
    if (rc == SP_OK) rc = spd_tenant_erase_keys(app, id);
    tenant_ctx c = {.app = app, .id = id};
    if (rc == SP_OK) rc = in_transaction(app, tenant_delete_tx, &c);
    audit_admin(app, "admin.tenant.delete", auth, id, result_of(rc), NULL);
    if (rc == SP_OK || rc == SP_ERR_NOT_FOUND) changed(app);
    if (rc != SP_OK) {
        reply_store_error(req, rc, "no such tenant");
        return;
    }
    spd_reply_empty(req);
}

typedef struct list_ctx {
    json_t *tenants;
    size_t limit;
    size_t seen;
    char last[SP_STORE_MAX_TENANT + 1];
    bool more;
    spd_settings *scratch;
} list_ctx;

static sp_error tenant_list_cb(void *arg, const sp_store_tenant *t) {
    list_ctx *c = arg;
    if (c->seen == c->limit) {
        c->more = true;
        return SP_OK;
    }
    c->seen++;
    if (spd_settings_parse(t->settings, t->settings_len, c->scratch) != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("tenant", t->id)};
        sp_log(SP_LOG_ERROR, "tenant.bad_settings", f, 1);
        return SP_ERR_BAD_CONFIG;
    }
    json_t *o = spd_tenant_json(t->id, c->scratch, t->disabled, t->created, t->updated);
    if (!o || json_array_append_new(c->tenants, o) != 0) return SP_ERR_NO_MEMORY;
    memcpy(c->last, t->id, strlen(t->id) + 1);
    return SP_OK;
}

static void tenant_list(spd_app *app, sp_http_request *req, const spd_auth *auth) {
    const char *after = sp_http_query(req, "after");
    const char *limit_text = sp_http_query(req, "limit");
    size_t limit = LIST_DEFAULT;
    if (limit_text) {
        size_t digits = strspn(limit_text, "0123456789");
        unsigned long v = digits > 0 && digits <= 4 && limit_text[digits] == '\0' ? strtoul(limit_text, NULL, 10) : 0;
        if (v < 1 || v > LIST_MAX) {
            audit_admin(app, "admin.tenant.list", auth, "", "bad_request", NULL);
            spd_reply_error(req, 400, "bad_request", "limit: must be between 1 and 1000");
            return;
        }
        limit = v;
    }
    if (after && after[0] && !spd_tenant_id_valid(after)) {
        audit_admin(app, "admin.tenant.list", auth, "", "bad_request", NULL);
        spd_reply_error(req, 400, "bad_request", "after: not a tenant id");
        return;
    }
    list_ctx c = {.tenants = json_array(), .limit = limit};
    c.scratch = calloc(1, sizeof *c.scratch);
    sp_store *store = NULL;
    sp_error rc = c.tenants && c.scratch ? spd_store(app, &store) : SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_store_tenant_list(store, after ? after : "", limit + 1, tenant_list_cb, &c);
    if (c.scratch) sp_wipe(c.scratch, sizeof *c.scratch);
    free(c.scratch);
    audit_admin(app, "admin.tenant.list", auth, "", result_of(rc), NULL);
    if (rc != SP_OK) {
        json_decref(c.tenants);
        spd_reply_sp_error(req, rc);
        return;
    }
    spd_reply_json(req, 200, json_pack("{s:o,s:o}", "tenants", c.tenants, "next",
                                       c.more ? json_string(c.last) : json_null()));
}

void spd_admin_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *path_after_prefix) {
    (void)path_after_prefix; /* matched again below, with its parameters decoded */
    const char *method = sp_http_method(req);
    spd_route_match m;
    spd_route_match_path(method, sp_http_path(req), &m);
    if (!auth || !auth->admin) {
        spd_reply_status(req, 401);
        return;
    }
    if (m.route != SPD_ROUTE_TENANTS && m.route != SPD_ROUTE_NONE && !spd_tenant_id_valid(m.id)) {
        spd_reply_error(req, 404, "not_found", "no such tenant");
        return;
    }
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool patch = strcmp(method, "PATCH") == 0, del = strcmp(method, "DELETE") == 0;
    switch (m.route) {
    case SPD_ROUTE_TENANTS:
        if (post) {
            tenant_create(app, req, auth);
            return;
        }
        if (get) {
            tenant_list(app, req, auth);
            return;
        }
        break;
    case SPD_ROUTE_TENANT:
        if (get) {
            tenant_get(app, req, auth, m.id);
            return;
        }
        if (patch) {
            tenant_patch(app, req, auth, m.id);
            return;
        }
        if (del) {
            tenant_delete(app, req, auth, m.id);
            return;
        }
        break;
    case SPD_ROUTE_CREDENTIALS:
        if (post) {
            credential_create(app, req, auth, m.id);
            return;
        }
        if (get) {
            credential_list(app, req, auth, m.id);
            return;
        }
        break;
    case SPD_ROUTE_CREDENTIAL:
        if (del) {
            credential_revoke(app, req, auth, m.id, m.sub);
            return;
        }
        break;
    default:
        break;
    }
    spd_reply_error(req, 404, "not_found", "no such route");
}
