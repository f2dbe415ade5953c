/*
 * A tenant's settings: one JSON document per tenant row, written by the
 * admin API and read by every request of the tenant (through the router's
 * cache and each thread's tenant context).
 *
 * Three readers share one validator so they cannot disagree: a POST body
 * (create: everything but "disabled"), a PATCH body (name, allow_ips,
 * rate_limit, disabled, default_country_code) and the stored document
 * (everything, and all of it required). Every refusal names the field
 * ("pii_fields[2].kind: must be text, email or phone"); the messages hold
 * names and limits, never values the client sent.
 *
 * The stored document holds the KMS config; the API's tenant object never
 * echoes it (it may name a PIN file) and shows the backend's name instead.
 */
#include <stdio.h>
#include <string.h>

#include "daemon.h"

typedef enum apply_mode { MODE_CREATE, MODE_PATCH, MODE_DOCUMENT } apply_mode;

#define MAX_RATE 1000000.0
#define MAX_BURST 10000000.0

bool spd_tenant_id_valid(const char *id) {
    if (!id) return false;
    size_t len = strlen(id);
    if (len < 1 || len > 64) return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
        if (!ok) return false;
    }
    return true;
}

static bool field_name_valid(const char *s) {
    size_t len = strlen(s);
    if (len < 1 || len > SP_VAULT_MAX_FIELD) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

static bool no_controls(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

static const char *kind_name(sp_vault_field_kind kind) {
    switch (kind) {
    case SP_VAULT_FIELD_EMAIL: return "email";
    case SP_VAULT_FIELD_PHONE: return "phone";
    case SP_VAULT_FIELD_TEXT: break;
    }
    return "text";
}

static bool kind_parse(const char *s, sp_vault_field_kind *out) {
    if (strcmp(s, "text") == 0) *out = SP_VAULT_FIELD_TEXT;
    else if (strcmp(s, "email") == 0) *out = SP_VAULT_FIELD_EMAIL;
    else if (strcmp(s, "phone") == 0) *out = SP_VAULT_FIELD_PHONE;
    else return false;
    return true;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (err && cap) snprintf(err, cap, __VA_ARGS__);                                           \
        return SP_ERR_INVALID_ARGUMENT;                                                            \
    } while (0)

static sp_error apply_pii(const json_t *v, spd_settings *s, char *err, size_t cap) {
    if (!json_is_array(v)) FAIL("pii_fields: must be an array");
    if (json_array_size(v) > SP_VAULT_MAX_PII_FIELDS) FAIL("pii_fields: at most %d fields", SP_VAULT_MAX_PII_FIELDS);
    spd_pii_field pii[SP_VAULT_MAX_PII_FIELDS];
    size_t n = 0, i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_object(item)) FAIL("pii_fields[%zu]: must be an object", i);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)item, key, val) {
            if (strcmp(key, "name") != 0 && strcmp(key, "kind") != 0)
                FAIL("pii_fields[%zu]: unknown field '%.48s'", i, key);
        }
        json_t *name = json_object_get(item, "name"), *kind = json_object_get(item, "kind");
        if (!json_is_string(name) || !field_name_valid(json_string_value(name)))
            FAIL("pii_fields[%zu].name: must match [a-z0-9_]{1,48}", i);
        if (!json_is_string(kind) || !kind_parse(json_string_value(kind), &pii[n].kind))
            FAIL("pii_fields[%zu].kind: must be text, email or phone", i);
        for (size_t j = 0; j < n; j++) {
            if (strcmp(pii[j].name, json_string_value(name)) == 0) FAIL("pii_fields[%zu].name: duplicate", i);
        }
        memcpy(pii[n].name, json_string_value(name), strlen(json_string_value(name)) + 1);
        n++;
    }
    memcpy(s->pii, pii, n * sizeof pii[0]);
    s->n_pii = n;
    return SP_OK;
}

static sp_error apply_allow(const json_t *v, spd_settings *s, char *err, size_t cap) {
    if (!json_is_array(v)) FAIL("allow_ips: must be an array of CIDRs");
    if (json_array_size(v) > SP_MAX_CIDRS) FAIL("allow_ips: at most %d entries", SP_MAX_CIDRS);
    sp_allow_list list;
    memset(&list, 0, sizeof list);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item) || sp_cidr_parse(json_string_value(item), &list.entries[list.count]) != SP_OK)
            FAIL("allow_ips[%zu]: not a CIDR (a.b.c.d/n or an IPv6 address/n)", i);
        list.count++;
    }
    s->allow = list;
    return SP_OK;
}

static sp_error apply_rate(const json_t *v, apply_mode mode, spd_settings *s, char *err, size_t cap) {
    if (!json_is_object(v)) FAIL("rate_limit: must be an object {\"per_second\":N,\"burst\":N}");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (strcmp(key, "per_second") != 0 && strcmp(key, "burst") != 0)
            FAIL("rate_limit: unknown field '%.48s'", key);
    }
    json_t *ps = json_object_get(v, "per_second"), *burst = json_object_get(v, "burst");
    if (mode == MODE_DOCUMENT && (!ps || !burst)) FAIL("rate_limit: per_second and burst required");
    double rate = s->rate_per_second, b = s->rate_burst;
    if (ps) {
        if (!json_is_number(ps)) FAIL("rate_limit.per_second: must be a number");
        rate = json_number_value(ps);
        if (!(rate > 0) || rate > MAX_RATE) FAIL("rate_limit.per_second: must be above 0 and at most %.0f", MAX_RATE);
    }
    if (burst) {
        if (!json_is_number(burst)) FAIL("rate_limit.burst: must be a number");
        b = json_number_value(burst);
        if (!(b >= 1) || b > MAX_BURST) FAIL("rate_limit.burst: must be between 1 and %.0f", MAX_BURST);
    }
    s->rate_per_second = rate;
    s->rate_burst = b;
    return SP_OK;
}

static bool key_allowed(const char *key, apply_mode mode) {
    static const char *const create_keys[] = {"id", "name", "kms", "pii_fields", "default_country_code",
                                              "allow_ips", "rate_limit"};
    static const char *const patch_keys[] = {"name", "allow_ips", "rate_limit", "disabled", "default_country_code"};
    static const char *const doc_keys[] = {"name", "kms", "pii_fields", "default_country_code", "allow_ips",
                                           "rate_limit"};
    const char *const *keys = mode == MODE_CREATE ? create_keys : mode == MODE_PATCH ? patch_keys : doc_keys;
    size_t n = mode == MODE_CREATE ? sizeof create_keys / sizeof *create_keys
               : mode == MODE_PATCH ? sizeof patch_keys / sizeof *patch_keys
                                    : sizeof doc_keys / sizeof *doc_keys;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i], key) == 0) return true;
    }
    return false;
}

static sp_error apply(const json_t *body, apply_mode mode, spd_settings *io, bool *disabled_io, char *err,
                      size_t cap) {
    if (!json_is_object(body)) FAIL("the body must be a JSON object");
    /* Every unknown key at once, so a client fixes its request in one go. */
    char unknown[256] = "";
    size_t ulen = 0;
    bool any_unknown = false;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val) {
        if (key_allowed(key, mode)) continue;
        bool fixed = mode == MODE_PATCH && (strcmp(key, "id") == 0 || strcmp(key, "kms") == 0 ||
                                            strcmp(key, "pii_fields") == 0);
        if (fixed) FAIL("%s: cannot be changed", key);
        any_unknown = true;
        int n = snprintf(unknown + ulen, sizeof unknown - ulen, "%s%.48s", ulen ? ", " : "", key);
        if (n > 0 && (size_t)n < sizeof unknown - ulen) ulen += (size_t)n;
    }
    if (any_unknown) FAIL("unknown field(s): %s", unknown);

    spd_settings s = *io;
    json_t *v;
    if ((v = json_object_get(body, "name"))) {
        size_t len = json_is_string(v) ? json_string_length(v) : 0;
        if (!json_is_string(v) || len < 1 || len > 200 || !no_controls(json_string_value(v), len))
            FAIL("name: must be a string of 1 to 200 characters without control characters");
        memcpy(s.name, json_string_value(v), len + 1);
    } else if (mode == MODE_DOCUMENT) {
        FAIL("name: required");
    }
    if ((v = json_object_get(body, "kms"))) {
        size_t len = json_is_string(v) ? json_string_length(v) : 0;
        if (!json_is_string(v) || len < 1 || len > SP_KMS_MAX_CONFIG || !no_controls(json_string_value(v), len))
            FAIL("kms: must be a KMS config string of 1 to %d characters", SP_KMS_MAX_CONFIG);
        memcpy(s.kms, json_string_value(v), len + 1);
    } else if (mode == MODE_DOCUMENT) {
        FAIL("kms: required");
    }
    if ((v = json_object_get(body, "pii_fields"))) {
        sp_error rc = apply_pii(v, &s, err, cap);
        if (rc != SP_OK) return rc;
    } else if (mode == MODE_DOCUMENT) {
        FAIL("pii_fields: required");
    }
    if ((v = json_object_get(body, "default_country_code"))) {
        if (json_is_null(v)) {
            s.default_country_code[0] = '\0';
        } else {
            const char *cc = json_is_string(v) ? json_string_value(v) : "";
            size_t len = strlen(cc);
            if (!json_is_string(v) || (len == 0 && mode != MODE_DOCUMENT) || len > 3 ||
                strspn(cc, "0123456789") != len || json_string_length(v) != len)
                FAIL("default_country_code: must be 1 to 3 digits");
            memcpy(s.default_country_code, cc, len + 1);
        }
    }
    if ((v = json_object_get(body, "allow_ips"))) {
        sp_error rc = apply_allow(v, &s, err, cap);
        if (rc != SP_OK) return rc;
    } else if (mode == MODE_DOCUMENT) {
        FAIL("allow_ips: required");
    }
    if ((v = json_object_get(body, "rate_limit"))) {
        sp_error rc = apply_rate(v, mode, &s, err, cap);
        if (rc != SP_OK) return rc;
    } else if (mode == MODE_DOCUMENT) {
        FAIL("rate_limit: required");
    }
    if ((v = json_object_get(body, "disabled"))) {
        if (!json_is_boolean(v)) FAIL("disabled: must be true or false");
        if (disabled_io) *disabled_io = json_is_true(v);
    }
    *io = s;
    return SP_OK;
}

sp_error spd_settings_apply(const json_t *body, bool create, spd_settings *io, bool *disabled_io, char *err,
                            size_t cap) {
    if (!body || !io) return SP_ERR_INVALID_ARGUMENT;
    return apply(body, create ? MODE_CREATE : MODE_PATCH, io, disabled_io, err, cap);
}

sp_error spd_settings_parse(const char *json_text, size_t len, spd_settings *out) {
    if (!json_text || !out || len > SP_STORE_MAX_SETTINGS) return SP_ERR_INVALID_ARGUMENT;
    json_error_t jerr;
    json_t *doc = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) return SP_ERR_BAD_JSON;
    memset(out, 0, sizeof *out);
    sp_error rc = apply(doc, MODE_DOCUMENT, out, NULL, NULL, 0);
    json_decref(doc);
    if (rc != SP_OK) {
        sp_wipe(out->kms, sizeof out->kms);
        return SP_ERR_BAD_CONFIG;
    }
    return SP_OK;
}

sp_error spd_settings_defaults(const spd_config *config, const char *tenant_id, spd_settings *out) {
    if (!config || !out || !spd_tenant_id_valid(tenant_id)) return SP_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    size_t id_len = strlen(tenant_id);
    memcpy(out->name, tenant_id, id_len + 1);
    int n = snprintf(out->kms, sizeof out->kms, "local:path=%s/kms/%s.key;create=1", config->data_dir, tenant_id);
    if (n < 0 || (size_t)n >= sizeof out->kms) return SP_ERR_TOO_LARGE;
    memcpy(out->pii[0].name, "email", 6);
    out->pii[0].kind = SP_VAULT_FIELD_EMAIL;
    memcpy(out->pii[1].name, "phone", 6);
    out->pii[1].kind = SP_VAULT_FIELD_PHONE;
    out->n_pii = 2;
    out->allow = config->default_tenant_allow;
    out->rate_per_second = config->rate_per_second;
    out->rate_burst = config->rate_burst;
    return SP_OK;
}

static json_t *number(double v) {
    if (v >= -9e15 && v <= 9e15 && v == (double)(int64_t)v) return json_integer((json_int_t)v);
    return json_real(v);
}

/* Adds what the document and the API object share; false when out of
 * memory. */
static bool add_common(json_t *o, const spd_settings *s) {
    json_t *pii = json_array(), *allow = json_array(), *rate = json_object();
    bool ok = pii && allow && rate;
    for (size_t i = 0; ok && i < s->n_pii; i++) {
        ok = json_array_append_new(pii, json_pack("{s:s,s:s}", "name", s->pii[i].name, "kind",
                                                  kind_name(s->pii[i].kind))) == 0;
    }
    for (size_t i = 0; ok && i < s->allow.count; i++) {
        char text[64];
        ok = sp_cidr_format(&s->allow.entries[i], text, sizeof text) == SP_OK &&
             json_array_append_new(allow, json_string(text)) == 0;
    }
    ok = ok && json_object_set_new(rate, "per_second", number(s->rate_per_second)) == 0 &&
         json_object_set_new(rate, "burst", number(s->rate_burst)) == 0;
    ok = ok && json_object_set_new(o, "name", json_string(s->name)) == 0;
    ok = ok && json_object_set(o, "pii_fields", pii) == 0;
    ok = ok && json_object_set_new(o, "default_country_code", json_string(s->default_country_code)) == 0;
    ok = ok && json_object_set(o, "allow_ips", allow) == 0;
    ok = ok && json_object_set(o, "rate_limit", rate) == 0;
    json_decref(pii);
    json_decref(allow);
    json_decref(rate);
    return ok;
}

json_t *spd_settings_document(const spd_settings *settings) {
    if (!settings) return NULL;
    json_t *o = json_object();
    if (!o || !add_common(o, settings) || json_object_set_new(o, "kms", json_string(settings->kms)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *spd_tenant_json(const char *id, const spd_settings *settings, bool disabled, int64_t created,
                        int64_t updated) {
    if (!id || !settings) return NULL;
    char backend[16] = "";
    const char *colon = strchr(settings->kms, ':');
    size_t blen = colon ? (size_t)(colon - settings->kms) : 0;
    if (blen > 0 && blen < sizeof backend) memcpy(backend, settings->kms, blen);
    backend[blen < sizeof backend ? blen : 0] = '\0';
    json_t *o = json_object();
    bool ok = o && json_object_set_new(o, "id", json_string(id)) == 0 && add_common(o, settings) &&
              json_object_set_new(o, "kms_backend", json_string(backend)) == 0 &&
              json_object_set_new(o, "disabled", json_boolean(disabled)) == 0 &&
              json_object_set_new(o, "created", json_integer(created)) == 0 &&
              json_object_set_new(o, "updated", json_integer(updated)) == 0;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}
