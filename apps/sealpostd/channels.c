/*
 * /v1/channels: a tenant's ways to its CPaaS providers.
 *
 * A channel document is validated whole by libsealpost (sp_channel_parse)
 * before anything is stored, so a channel that would fail at send time is
 * refused at save time with a message naming the field. What is stored is
 * split in two: the public document, readable by GET, and the provider
 * credentials (Basic password, OAuth client secret), sealed here with
 * AES-256-GCM under a key derived from the server key and bound to the
 * tenant and channel id, so a sealed blob moved to another row does not
 * open. A channel with encryption on must name a provider key the tenant's
 * keyring can seal with; when the keyring has none under that name yet, the
 * first version is made here, so the provider can be given it through the
 * key exchange (`sealpost keys export`) before the first message.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

#define SPD_SECRETS_IV 12
#define SPD_SECRETS_TAG 16
#define SPD_SECRETS_VERSION 1
#define SPD_CHANNEL_RETRIES 3

/* ---- secrets at rest ---- */

static sp_error secrets_aad(const char *tenant, const char *channel, char *aad, size_t cap, size_t *len) {
    int n = snprintf(aad, cap, "sealpostd channel secrets v1|%s|%s", tenant, channel);
    if (n < 0 || (size_t)n >= cap) return SP_ERR_TOO_LARGE;
    *len = (size_t)n;
    return SP_OK;
}

sp_error spd_secrets_seal(spd_app *app, const char *tenant, const char *channel, const char *json, size_t len,
                          uint8_t **blob, size_t *blob_len) {
    if (!app || !app->secrets_key || !tenant || !channel || !json || !blob || !blob_len) return SP_ERR_INVALID_ARGUMENT;
    *blob = NULL;
    *blob_len = 0;
    char aad[256];
    size_t aad_len = 0;
    sp_error rc = secrets_aad(tenant, channel, aad, sizeof aad, &aad_len);
    if (rc != SP_OK) return rc;
    size_t cap = 1 + SPD_SECRETS_IV + len + SPD_SECRETS_TAG;
    uint8_t *out = malloc(cap);
    if (!out) return SP_ERR_NO_MEMORY;
    out[0] = SPD_SECRETS_VERSION;
    sp_cipher *cipher = NULL;
    size_t ct_len = 0;
    rc = sp_random(out + 1, SPD_SECRETS_IV);
    if (rc == SP_OK) rc = sp_cipher_new(app->secrets_key, SP_ALG_AES_256_GCM, &cipher);
    if (rc == SP_OK)
        rc = sp_cipher_encrypt(cipher, out + 1, SPD_SECRETS_IV, (const uint8_t *)aad, aad_len, (const uint8_t *)json,
                               len, out + 1 + SPD_SECRETS_IV, cap - 1 - SPD_SECRETS_IV, &ct_len);
    sp_cipher_free(cipher);
    if (rc != SP_OK) {
        sp_wipe(out, cap);
        free(out);
        return rc;
    }
    *blob = out;
    *blob_len = 1 + SPD_SECRETS_IV + ct_len;
    return SP_OK;
}

sp_error spd_secrets_open(spd_app *app, const char *tenant, const char *channel, const uint8_t *blob, size_t len,
                          char **json, size_t *json_len) {
    if (!app || !app->secrets_key || !tenant || !channel || !blob || !json || !json_len) return SP_ERR_INVALID_ARGUMENT;
    *json = NULL;
    *json_len = 0;
    if (len < 1 + SPD_SECRETS_IV + SPD_SECRETS_TAG || blob[0] != SPD_SECRETS_VERSION) return SP_ERR_AUTH;
    char aad[256];
    size_t aad_len = 0;
    sp_error rc = secrets_aad(tenant, channel, aad, sizeof aad, &aad_len);
    if (rc != SP_OK) return rc;
    size_t ct_len = len - 1 - SPD_SECRETS_IV;
    char *out = malloc(ct_len + 1);
    if (!out) return SP_ERR_NO_MEMORY;
    sp_cipher *cipher = NULL;
    size_t n = 0;
    rc = sp_cipher_new(app->secrets_key, SP_ALG_AES_256_GCM, &cipher);
    if (rc == SP_OK)
        rc = sp_cipher_decrypt(cipher, blob + 1, SPD_SECRETS_IV, (const uint8_t *)aad, aad_len,
                               blob + 1 + SPD_SECRETS_IV, ct_len, (uint8_t *)out, ct_len, &n);
    sp_cipher_free(cipher);
    if (rc != SP_OK) {
        sp_wipe(out, ct_len + 1);
        free(out);
        return rc;
    }
    out[n] = '\0';
    *json = out;
    *json_len = n;
    return SP_OK;
}

static void free_secret_text(char *text, size_t len) {
    if (!text) return;
    sp_wipe(text, len);
    free(text);
}

uint64_t spd_channel_version(const sp_store_channel_row *row) {
    static const uint8_t label[] = "sealpostd channel version";
    uint8_t a[32], b[32];
    uint64_t v = 0;
    if (sp_hmac_sha256(label, sizeof label - 1, (const uint8_t *)row->config, row->config_len, a) == SP_OK &&
        sp_hmac_sha256(a, sizeof a, row->secrets ? row->secrets : label, row->secrets ? row->secrets_len : 0, b) ==
            SP_OK)
        memcpy(&v, b, sizeof v);
    return v;
}

sp_error spd_channel_load(spd_app *app, sp_store *store, const char *tenant, const char *id, sp_channel **out,
                          uint64_t *version) {
    if (!app || !store || !tenant || !id || !out) return SP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    sp_store_channel_row row;
    memset(&row, 0, sizeof row);
    sp_error rc = sp_store_channel_get(store, tenant, id, &row);
    if (rc != SP_OK) return rc;
    char *secrets = NULL;
    size_t secrets_len = 0;
    if (row.secrets != NULL) rc = spd_secrets_open(app, tenant, id, row.secrets, row.secrets_len, &secrets, &secrets_len);
    if (rc == SP_OK) {
        char err[SP_CHANNEL_ERR_CAP];
        rc = sp_channel_parse_stored(row.config, row.config_len, secrets ? secrets : "{}", secrets ? secrets_len : 2,
                                     out, err, sizeof err);
        if (rc != SP_OK) {
            /* stored by this daemon, so valid then: a newer rule or damage */
            sp_log_field f[] = {SP_LOG_S("channel", id), SP_LOG_S("error", sp_error_name(rc)), SP_LOG_S("reason", err)};
            sp_log(SP_LOG_ERROR, "channel.unreadable", f, 3);
        }
    }
    if (version) *version = spd_channel_version(&row);
    free_secret_text(secrets, secrets_len);
    sp_store_channel_row_clear(&row);
    return rc;
}

/* ---- replies ---- */

bool spd_name_ok(const char *id) {
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > SP_STORE_MAX_NAME) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    }
    return true;
}

/* {"id","kind","config":{…public…},"encryption_key_version","callback_urls","created","updated"} */
static json_t *channel_json(const spd_app *app, const char *tenant, const char *id, sp_store_channel_kind kind,
                            const char *config, size_t config_len, const char *key_version, int64_t created,
                            int64_t updated) {
    json_error_t jerr;
    json_t *doc = json_loadb(config, config_len, 0, &jerr);
    json_t *o = json_object();
    if (!doc || !o) {
        json_decref(doc);
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "kind", json_string(sp_store_channel_kind_name(kind)));
    json_object_set_new(o, "config", doc);
    if (key_version && key_version[0]) json_object_set_new(o, "encryption_key_version", json_string(key_version));
    /* where the provider reports back (docs/PROTOCOL.md §10.1) */
    json_t *urls = spd_callback_urls(app, tenant, id);
    if (!urls) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "callback_urls", urls);
    json_object_set_new(o, "created", json_integer(created));
    json_object_set_new(o, "updated", json_integer(updated));
    return o;
}

/* The active version of the channel's provider key, made when there is
 * none: the keyring decides under its storage lock, so two requests (or
 * processes) saving channels at once make one. */
static sp_error ensure_provider_key(spd_tenant *t, const char *key_name, char version[SP_KEY_VERSION_CHARS + 1]) {
    bool rotated = false;
    return sp_keyring_rotate_if_older(t->keyring, t->id, key_name, (int64_t)time(NULL), INT64_MAX / 2, version,
                                      &rotated);
}

/* ---- PUT /v1/channels/{id} ---- */

static void channel_put(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    size_t body_len = 0;
    const uint8_t *body = sp_http_body(req, &body_len);
    if (!body || body_len == 0) {
        spd_reply_error(req, 400, "bad_request", "the body must be a channel document");
        return;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    if (rc != SP_OK) {
        spd_fail(req, rc, "store");
        return;
    }
    sp_channel *previous = NULL;
    rc = spd_channel_load(app, store, t->id, id, &previous, NULL);
    if (rc != SP_OK && rc != SP_ERR_NOT_FOUND) {
        spd_fail(req, rc, "channel.load");
        return;
    }
    sp_channel *ch = NULL;
    char err[SP_CHANNEL_ERR_CAP] = "";
    rc = sp_channel_parse_update((const char *)body, body_len, previous, &ch, err, sizeof err);
    sp_channel_free(previous);
    if (rc != SP_OK) {
        if (rc == SP_ERR_NO_MEMORY) {
            spd_fail(req, rc, "channel.parse");
        } else {
            spd_reply_error(req, 400, rc == SP_ERR_BAD_JSON ? "bad_json" : "bad_channel",
                            err[0] ? err : sp_strerror(rc));
        }
        return;
    }
    char version[SP_KEY_VERSION_CHARS + 1] = "";
    sp_channel_encryption enc;
    sp_channel_get_encryption(ch, &enc);
    if (enc.enabled) {
        rc = ensure_provider_key(t, enc.key, version);
        if (rc != SP_OK) {
            sp_channel_free(ch);
            spd_fail(req, rc, "channel.key");
            return;
        }
    }
    /* the two halves: public text and sealed secrets */
    size_t pub_len = 0, sec_len = 0;
    char *pub = NULL, *sec = NULL;
    if (sp_channel_public_json(ch, NULL, 0, &pub_len) == SP_ERR_BUFFER_TOO_SMALL) pub = malloc(pub_len + 1);
    if (pub) rc = sp_channel_public_json(ch, pub, pub_len + 1, &pub_len);
    else rc = SP_ERR_NO_MEMORY;
    if (rc == SP_OK) {
        if (sp_channel_secrets_json(ch, NULL, 0, &sec_len) == SP_ERR_BUFFER_TOO_SMALL) sec = malloc(sec_len + 1);
        rc = sec ? sp_channel_secrets_json(ch, sec, sec_len + 1, &sec_len) : SP_ERR_NO_MEMORY;
    }
    sp_store_channel_kind kind = sp_channel_get_kind(ch) == SP_CHANNEL_EMAIL ? SP_STORE_CHANNEL_EMAIL
                                                                               : SP_STORE_CHANNEL_SMS;
    sp_channel_free(ch);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    bool has_secrets = rc == SP_OK && !(sec_len == 2 && memcmp(sec, "{}", 2) == 0);
    if (rc == SP_OK && has_secrets) rc = spd_secrets_seal(app, t->id, id, sec, sec_len, &sealed, &sealed_len);
    free_secret_text(sec, sec_len + 1);
    bool created = false;
    int64_t now = (int64_t)time(NULL);
    sp_store_channel row = {t->id, id, kind, pub, pub_len, sealed, sealed_len};
    for (int attempt = 0; rc == SP_OK && attempt < SPD_CHANNEL_RETRIES; attempt++) {
        rc = sp_store_channel_put(store, &row, now, &created);
        if (rc != SP_ERR_CONFLICT) break;
    }
    if (sealed) {
        sp_wipe(sealed, sealed_len);
        free(sealed);
    }
    if (rc != SP_OK) {
        free(pub);
        if (rc == SP_ERR_NOT_FOUND) spd_reply_status(req, 401); /* the tenant went away */
        else spd_fail(req, rc, "channel.put");
        return;
    }
    sp_log_field f[] = {SP_LOG_S("tenant", t->id), SP_LOG_S("channel", id), SP_LOG_B("created", created),
                        SP_LOG_B("encrypted", enc.enabled)};
    sp_log(SP_LOG_INFO, "channel.saved", f, 4);
    json_t *reply = channel_json(app, t->id, id, kind, pub, pub_len, version, now, now);
    free(pub);
    if (!reply) {
        spd_fail(req, SP_ERR_NO_MEMORY, "channel.reply");
        return;
    }
    if (!created) json_object_del(reply, "created");
    spd_reply_json(req, created ? 201 : 200, reply);
}

/* ---- GET ---- */

static void channel_get(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_store_channel_row row;
    memset(&row, 0, sizeof row);
    if (rc == SP_OK) rc = sp_store_channel_get(store, t->id, id, &row);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such channel");
        return;
    }
    if (rc != SP_OK) {
        spd_fail(req, rc, "channel.get");
        return;
    }
    char version[SP_KEY_VERSION_CHARS + 1] = "";
    json_error_t jerr;
    json_t *cfg = json_loadb(row.config, row.config_len, 0, &jerr);
    json_t *enc = cfg ? json_object_get(cfg, "encryption") : NULL;
    const char *key = enc ? json_string_value(json_object_get(enc, "key")) : NULL;
    if (key && json_is_true(json_object_get(enc, "enabled"))) {
        sp_keyring_entry e;
        if (sp_keyring_find(t->keyring, t->id, key, NULL, &e) == SP_OK) memcpy(version, e.version, sizeof version);
    }
    json_decref(cfg);
    json_t *reply =
        channel_json(app, t->id, row.id, row.kind, row.config, row.config_len, version, row.created, row.updated);
    sp_store_channel_row_clear(&row);
    if (!reply) {
        spd_fail(req, SP_ERR_NO_MEMORY, "channel.reply");
        return;
    }
    spd_reply_json(req, 200, reply);
}

typedef struct list_ctx {
    spd_page page;
    const spd_app *app;
    const char *tenant;
} list_ctx;

static sp_error list_one(void *arg, const sp_store_channel_row *row) {
    list_ctx *c = arg;
    return spd_page_add(&c->page,
                        channel_json(c->app, c->tenant, row->id, row->kind, row->config, row->config_len, NULL,
                                     row->created, row->updated),
                        row->id);
}

static void channel_list(spd_app *app, sp_http_request *req, spd_tenant *t) {
    const char *after;
    size_t limit;
    if (!spd_page_query(req, spd_name_ok, &after, &limit)) return;
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    list_ctx c = {.page = {.items = json_array()}, .app = app, .tenant = t->id};
    if (!c.page.items) rc = SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_store_channel_list(store, t->id, after, limit, list_one, &c);
    if (rc != SP_OK) {
        json_decref(c.page.items);
        spd_fail(req, rc, "channel.list");
        return;
    }
    spd_reply_page(req, "channels", &c.page, limit);
}

static void channel_delete(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    for (int attempt = 0; rc == SP_OK && attempt < SPD_CHANNEL_RETRIES; attempt++) {
        rc = sp_store_channel_delete(store, t->id, id);
        if (rc != SP_ERR_CONFLICT) break;
        rc = spd_store(app, &store);
    }
    if (rc == SP_OK) {
        spd_reply_empty(req);
    } else if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such channel");
    } else if (rc == SP_ERR_EXISTS) {
        spd_reply_error(req, 409, "in_use", "campaigns or queued messages use this channel; delete them first");
    } else {
        spd_fail(req, rc, "channel.delete");
    }
}

void spd_channels_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *channel_id) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    const char *method = sp_http_method(req);
    if (channel_id == NULL) {
        channel_list(app, req, t);
        return;
    }
    if (!spd_name_ok(channel_id)) {
        if (strcmp(method, "PUT") == 0)
            spd_reply_error(req, 400, "bad_request", "channel ids are 1..64 of a-z, 0-9, _ and -");
        else
            spd_reply_error(req, 404, "not_found", "no such channel");
        return;
    }
    if (strcmp(method, "PUT") == 0) channel_put(app, req, t, channel_id);
    else if (strcmp(method, "GET") == 0) channel_get(app, req, t, channel_id);
    else channel_delete(app, req, t, channel_id);
}
