/*
 * Ingestion bodies: one pass over the jansson tree that checks every rule of
 * docs (api.md, "Tenant API") and records, per item, where its values are.
 * The first broken rule ends the parse with a message naming its path, so a
 * client fixing a batch of a thousand profiles is told which one and where.
 *
 * jansson is told to refuse duplicate keys and trailing data, and never to
 * decode a bare scalar or U+0000. Its allocations go through libsealpost's
 * wiping allocator (sp_init wires it for the whole process), wrapped once
 * here so that a failed allocation is seen for what it is: jansson can
 * swallow one and hand back a document with a member missing, and a profile
 * that silently lost its "id" would be matched by email instead.
 *
 * PII values are only checked here (sp_vault_normalize into a stack buffer
 * that is wiped); the caller normalises again right before encrypting, so no
 * copy of a value outlives this call.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"

/* ---- jansson's allocator, wrapped to notice failures ---- */

static json_malloc_t spd_json_inner_malloc;
static json_free_t spd_json_inner_free;
static _Thread_local bool spd_json_alloc_failed;
static pthread_once_t spd_json_once = PTHREAD_ONCE_INIT;
static sp_error spd_json_init_rc = SP_OK;

static void *spd_json_malloc(size_t n) {
    void *p = spd_json_inner_malloc(n);
    if (p == NULL) spd_json_alloc_failed = true;
    return p;
}

static void spd_json_free(void *p) { spd_json_inner_free(p); }

static void spd_json_install(void) {
    /* sp_init makes jansson's allocator the wiping one; this wraps it. */
    spd_json_init_rc = sp_init();
    if (spd_json_init_rc != SP_OK) return;
    json_get_alloc_funcs(&spd_json_inner_malloc, &spd_json_inner_free);
    if (spd_json_inner_malloc == spd_json_malloc) return;
    json_set_alloc_funcs(spd_json_malloc, spd_json_free);
}

/* ---- messages ---- */

typedef struct {
    char *buf;
    size_t cap;
} spd_msg;

__attribute__((format(printf, 2, 3))) static void spd_say(spd_msg *m, const char *fmt, ...) {
    if (m->buf == NULL || m->cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->buf, m->cap, fmt, ap);
    va_end(ap);
    if (n < 0) m->buf[0] = 0;
}

/* ---- names and ids ---- */

bool spd_body_id_ok(const char *s, size_t len) {
    if (s == NULL || len == 0 || len > SPD_BODY_MAX_ID) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e) return false;
    }
    return true;
}

bool spd_body_name_ok(const char *s, size_t len) {
    if (s == NULL || len == 0 || len > SPD_BODY_MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

static bool spd_event_name_ok(const char *s, size_t len) {
    if (len == 0 || len > SPD_BODY_MAX_EVENT_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '-'))
            return false;
    }
    return true;
}

int spd_body_pii_index(const spd_body_schema *schema, const char *name) {
    for (size_t i = 0; i < schema->n_pii; i++) {
        if (strcmp(schema->pii[i].name, name) == 0) return (int)i;
    }
    return -1;
}

/* ---- compact JSON of scalars, as jansson writes it ---- */

static size_t spd_json_string_len(const char *s, size_t n) {
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
            len += 2;
        } else if (c < 0x20) {
            len += 6;
        } else {
            len += 1;
        }
    }
    return len;
}

bool spd_json_append_string(char *out, size_t cap, size_t *len, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t o = *len;
    if (o >= cap) return false;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = 0;
        switch (c) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\b': esc = 'b'; break;
        case '\f': esc = 'f'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            if (cap - o < 2) return false;
            out[o++] = '\\';
            out[o++] = esc;
        } else if (c < 0x20) {
            if (cap - o < 6) return false;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            if (o >= cap) return false;
            out[o++] = (char)c;
        }
    }
    if (o >= cap) return false;
    out[o++] = '"';
    *len = o;
    return true;
}

/* Numbers as text; reals keep a '.' or an exponent so they read back as reals. */
static size_t spd_json_number(const json_t *v, char buf[40]) {
    int n;
    if (json_is_integer(v)) {
        n = snprintf(buf, 40, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else {
        n = snprintf(buf, 40, "%.17g", json_real_value(v));
        if (n > 0 && n < 37 && strspn(buf, "0123456789-") == (size_t)n) {
            memcpy(buf + n, ".0", 3);
            n += 2;
        }
    }
    return n > 0 && n < 40 ? (size_t)n : 0;
}

size_t spd_json_scalar_len(const json_t *v) {
    char num[40];
    switch (json_typeof(v)) {
    case JSON_STRING: return spd_json_string_len(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
    case JSON_REAL: return spd_json_number(v, num);
    case JSON_TRUE: return 4;
    case JSON_FALSE: return 5;
    case JSON_NULL: return 4;
    default: return 0;
    }
}

static bool spd_append_raw(char *out, size_t cap, size_t *len, const char *s, size_t n) {
    if (cap - *len < n) return false;
    memcpy(out + *len, s, n);
    *len += n;
    return true;
}

bool spd_json_append_scalar(char *out, size_t cap, size_t *len, const json_t *v) {
    char num[40];
    size_t n;
    if (*len > cap) return false;
    switch (json_typeof(v)) {
    case JSON_STRING: return spd_json_append_string(out, cap, len, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
    case JSON_REAL:
        n = spd_json_number(v, num);
        return n != 0 && spd_append_raw(out, cap, len, num, n);
    case JSON_TRUE: return spd_append_raw(out, cap, len, "true", 4);
    case JSON_FALSE: return spd_append_raw(out, cap, len, "false", 5);
    case JSON_NULL: return spd_append_raw(out, cap, len, "null", 4);
    default: return false;
    }
}

/* ---- loading ---- */

static sp_error spd_load(const uint8_t *text, size_t len, json_t **out, spd_msg *m) {
    pthread_once(&spd_json_once, spd_json_install);
    if (spd_json_init_rc != SP_OK) {
        spd_say(m, "internal error");
        return spd_json_init_rc;
    }
    json_error_t jerr;
    spd_json_alloc_failed = false;
    json_t *root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (spd_json_alloc_failed || (root == NULL && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(root);
        spd_say(m, "out of memory");
        return SP_ERR_NO_MEMORY;
    }
    if (root == NULL) {
        /* jansson's own text can quote the input; only the position is safe */
        switch (json_error_code(&jerr)) {
        case json_error_duplicate_key: spd_say(m, "body: duplicate object key (line %d)", jerr.line); break;
        case json_error_end_of_input_expected:
            spd_say(m, "body: unexpected data after the JSON value (line %d, column %d)", jerr.line, jerr.column);
            break;
        default: spd_say(m, "body: not valid JSON (line %d, column %d)", jerr.line, jerr.column); break;
        }
        return SP_ERR_BAD_JSON;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        spd_say(m, "body: must be a JSON object");
        return SP_ERR_INVALID_ARGUMENT;
    }
    *out = root;
    return SP_OK;
}

/* A member name safe to repeat in a message. */
static const char *spd_quotable(const char *key) {
    size_t n = strlen(key);
    return spd_body_name_ok(key, n) ? key : NULL;
}

static sp_error spd_unknown(spd_msg *m, const char *path, const char *key) {
    const char *q = spd_quotable(key);
    if (q != NULL) {
        spd_say(m, "%s%sunknown field \"%s\"", path, path[0] ? ": " : "", q);
    } else {
        spd_say(m, "%s%sunknown field", path, path[0] ? ": " : "");
    }
    return SP_ERR_INVALID_ARGUMENT;
}

/* ---- attributes and properties ---- */

typedef struct {
    const spd_body_schema *schema;
    spd_body *body;
    size_t pii_cap;
    spd_msg *m;
} spd_parser;

/* Whether a PII value normalises for its kind: the same rules as the blind
 * index, so nothing accepted here fails later in sp_vault_index. */
static bool spd_pii_valid(const spd_body_schema *schema, sp_vault_field_kind kind, const char *value, size_t len) {
    if (kind == SP_VAULT_FIELD_TEXT) {
        /* trimmed of ASCII whitespace, not empty: checked in place, since a
         * text value may be 64 KiB */
        for (size_t i = 0; i < len; i++) {
            char c = value[i];
            if (!(c == ' ' || (c >= '\t' && c <= '\r'))) return true;
        }
        return false;
    }
    /* an email is at most 254 bytes and a phone number 16 once normalised */
    char scratch[320];
    size_t out_len = 0;
    const char *cc = schema->default_country_code;
    if (cc != NULL && cc[0] == 0) cc = NULL;
    sp_error rc = sp_vault_normalize(kind, cc, (const uint8_t *)value, len, scratch, sizeof scratch, &out_len);
    sp_wipe(scratch, sizeof scratch);
    return rc == SP_OK;
}

static const char *spd_kind_complaint(const spd_body_schema *schema, sp_vault_field_kind kind) {
    switch (kind) {
    case SP_VAULT_FIELD_EMAIL: return "not an email address";
    case SP_VAULT_FIELD_PHONE:
        return schema->default_country_code != NULL && schema->default_country_code[0]
                   ? "not a phone number"
                   : "not a phone number (international format +<country code><number> expected)";
    default: return "must not be empty";
    }
}

/* One attributes (or properties) object: names, value types, sizes, PII.
 * The PII values are appended to body->pii; *n_plain counts the others. */
static sp_error spd_check_object(spd_parser *p, json_t *obj, const char *path, size_t *pii_first, size_t *n_pii,
                                 size_t *n_plain) {
    spd_msg *m = p->m;
    if (!json_is_object(obj)) {
        spd_say(m, "%s: must be an object", path);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (json_object_size(obj) > SPD_BODY_MAX_ATTRIBUTES) {
        spd_say(m, "%s: more than %d members", path, SPD_BODY_MAX_ATTRIBUTES);
        return SP_ERR_INVALID_ARGUMENT;
    }
    *pii_first = p->body->n_pii;
    *n_pii = 0;
    *n_plain = 0;
    size_t serialised = 2;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        size_t klen = strlen(key);
        if (!spd_body_name_ok(key, klen)) {
            spd_say(m, "%s: invalid member name (names match [A-Za-z0-9_]{1,48})", path);
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (json_is_object(v) || json_is_array(v)) {
            spd_say(m, "%s.%s: must be a string, number, boolean or null", path, key);
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (json_is_string(v) && json_string_length(v) > SPD_BODY_MAX_STRING) {
            spd_say(m, "%s.%s: longer than %u bytes", path, key, SPD_BODY_MAX_STRING);
            return SP_ERR_INVALID_ARGUMENT;
        }
        serialised += (serialised > 2 ? 1 : 0) + klen + 3 + spd_json_scalar_len(v);
        int f = spd_body_pii_index(p->schema, key);
        if (f < 0) {
            (*n_plain)++;
            continue;
        }
        if (!json_is_string(v)) {
            spd_say(m, "%s.%s: must be a string", path, key);
            return SP_ERR_INVALID_ARGUMENT;
        }
        sp_vault_field_kind kind = p->schema->pii[f].kind;
        if (!spd_pii_valid(p->schema, kind, json_string_value(v), json_string_length(v))) {
            spd_say(m, "%s.%s: %s", path, key, spd_kind_complaint(p->schema, kind));
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (p->body->n_pii >= p->pii_cap) { /* cannot happen: keys are unique */
            spd_say(m, "%s: too many PII values", path);
            return SP_ERR_INVALID_ARGUMENT;
        }
        spd_body_pii *e = &p->body->pii[p->body->n_pii++];
        e->field = (uint16_t)f;
        e->value = json_string_value(v);
        e->len = json_string_length(v);
        (*n_pii)++;
    }
    if (serialised > SPD_BODY_MAX_OBJECT) {
        spd_say(m, "%s: larger than %u bytes as JSON", path, SPD_BODY_MAX_OBJECT);
        return SP_ERR_INVALID_ARGUMENT;
    }
    return SP_OK;
}

static sp_error spd_check_id(spd_msg *m, json_t *v, const char *path, const char *what, const char **out) {
    if (!json_is_string(v) || !spd_body_id_ok(json_string_value(v), json_string_length(v))) {
        spd_say(m, "%s%s%s: must be a string of 1..%d visible ASCII characters", path, path[0] ? "." : "", what,
                SPD_BODY_MAX_ID);
        return SP_ERR_INVALID_ARGUMENT;
    }
    *out = json_string_value(v);
    return SP_OK;
}

/* ---- profiles ---- */

static sp_error spd_check_profile(spd_parser *p, json_t *item, const char *path, spd_body_profile *out) {
    spd_msg *m = p->m;
    if (!json_is_object(item)) {
        spd_say(m, "%s: must be an object", path[0] ? path : "body");
        return SP_ERR_INVALID_ARGUMENT;
    }
    out->id = NULL;
    out->attributes = NULL;
    out->identity = SIZE_MAX;
    const char *key;
    json_t *v;
    json_object_foreach(item, key, v) {
        if (strcmp(key, "id") == 0) {
            SPD_TRY(spd_check_id(m, v, path, "id", &out->id));
        } else if (strcmp(key, "attributes") == 0) {
            out->attributes = v;
        } else {
            return spd_unknown(m, path, key);
        }
    }
    char sub[64];
    snprintf(sub, sizeof sub, "%s%sattributes", path, path[0] ? "." : "");
    if (out->attributes == NULL) {
        spd_say(m, "%s: required", sub);
        return SP_ERR_INVALID_ARGUMENT;
    }
    SPD_TRY(spd_check_object(p, out->attributes, sub, &out->pii_first, &out->n_pii, &out->n_plain));
    /* the identity: the first email or phone field of the schema present */
    size_t best = SIZE_MAX;
    for (size_t i = out->pii_first; i < out->pii_first + out->n_pii; i++) {
        uint16_t f = p->body->pii[i].field;
        if (p->schema->pii[f].kind == SP_VAULT_FIELD_TEXT) continue;
        if (best == SIZE_MAX || f < p->body->pii[best].field) best = i;
    }
    out->identity = best;
    if (out->id == NULL && best == SIZE_MAX) {
        spd_say(m, "%s: needs an id, or an email or phone attribute to find the profile by",
                path[0] ? path : "body");
        return SP_ERR_INVALID_ARGUMENT;
    }
    return SP_OK;
}

/* Room for every PII value of n items: keys are unique per object, so an
 * item holds at most one value per schema field. */
static sp_error spd_alloc_items(spd_parser *p, size_t n, size_t item_size, void **items, spd_msg *m) {
    spd_body *b = p->body;
    *items = calloc(n, item_size);
    p->pii_cap = n * p->schema->n_pii;
    b->pii = p->pii_cap ? calloc(p->pii_cap, sizeof *b->pii) : NULL;
    if (*items == NULL || (p->pii_cap && b->pii == NULL)) {
        spd_say(m, "out of memory");
        return SP_ERR_NO_MEMORY;
    }
    return SP_OK;
}

static sp_error spd_check_schema(const spd_body_schema *schema, spd_body *out, spd_msg *m) {
    memset(out, 0, sizeof *out);
    if (m->buf != NULL && m->cap) m->buf[0] = 0;
    if (schema == NULL || schema->n_pii > SP_VAULT_MAX_PII_FIELDS || (schema->n_pii && schema->pii == NULL) ||
        schema->max_batch == 0 || schema->max_batch > SPD_BODY_MAX_BATCH) {
        spd_say(m, "internal error");
        return SP_ERR_INVALID_ARGUMENT;
    }
    return SP_OK;
}

/* The items array of a batch: present, an array, 1..max_batch long. */
static sp_error spd_batch_array(json_t *root, const char *name, const spd_body_schema *schema, json_t **arr,
                                spd_msg *m) {
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, name) != 0) return spd_unknown(m, "", key);
    }
    *arr = json_object_get(root, name);
    if (*arr == NULL) {
        spd_say(m, "%s: required", name);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (!json_is_array(*arr)) {
        spd_say(m, "%s: must be an array", name);
        return SP_ERR_INVALID_ARGUMENT;
    }
    size_t n = json_array_size(*arr);
    if (n == 0) {
        spd_say(m, "%s: must hold at least one item", name);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (n > schema->max_batch) {
        spd_say(m, "%s: more than %zu items", name, schema->max_batch);
        return SP_ERR_TOO_LARGE;
    }
    return SP_OK;
}

/* ---- events ---- */

static sp_error spd_check_event(spd_parser *p, json_t *item, const char *path, spd_body_event *out) {
    spd_msg *m = p->m;
    if (!json_is_object(item)) {
        spd_say(m, "%s: must be an object", path);
        return SP_ERR_INVALID_ARGUMENT;
    }
    out->ts = -1;
    out->pii_first = p->body->n_pii;
    const char *key;
    json_t *v;
    json_object_foreach(item, key, v) {
        if (strcmp(key, "id") == 0) {
            SPD_TRY(spd_check_id(m, v, path, "id", &out->id));
        } else if (strcmp(key, "profile_id") == 0) {
            SPD_TRY(spd_check_id(m, v, path, "profile_id", &out->profile_id));
        } else if (strcmp(key, "name") == 0) {
            if (!json_is_string(v) || !spd_event_name_ok(json_string_value(v), json_string_length(v))) {
                spd_say(m, "%s.name: must match [A-Za-z0-9_.:-]{1,%d}", path, SPD_BODY_MAX_EVENT_NAME);
                return SP_ERR_INVALID_ARGUMENT;
            }
            out->name = json_string_value(v);
        } else if (strcmp(key, "ts") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > SPD_BODY_MAX_TS) {
                spd_say(m, "%s.ts: must be an integer number of Unix milliseconds", path);
                return SP_ERR_INVALID_ARGUMENT;
            }
            out->ts = (int64_t)json_integer_value(v);
        } else if (strcmp(key, "properties") == 0) {
            out->properties = v;
        } else {
            return spd_unknown(m, path, key);
        }
    }
    if (out->profile_id == NULL) {
        spd_say(m, "%s.profile_id: required", path);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (out->name == NULL) {
        spd_say(m, "%s.name: required", path);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (out->properties != NULL) {
        char sub[64];
        size_t n_plain;
        snprintf(sub, sizeof sub, "%s.properties", path);
        SPD_TRY(spd_check_object(p, out->properties, sub, &out->pii_first, &out->n_pii, &n_plain));
    }
    return SP_OK;
}

/* Both kinds: the JSON, then the array under its name, each item checked. A
 * profile may also come alone, as the whole body; events always come in a
 * batch. */
static sp_error spd_parse(const uint8_t *text, size_t len, const spd_body_schema *schema, spd_body *out, char *msg,
                          size_t cap, bool events) {
    spd_msg m = {msg, cap};
    SPD_TRY(spd_check_schema(schema, out, &m));
    if (text == NULL && len != 0) return SP_ERR_INVALID_ARGUMENT;
    SPD_TRY(spd_load(text, len, &out->root, &m));
    spd_parser p = {schema, out, 0, &m};
    const char *name = events ? "events" : "profiles";
    sp_error rc;
    json_t *arr = NULL;
    out->batch = events || json_object_get(out->root, name) != NULL;
    if (out->batch) {
        SPD_TRY_GOTO(spd_batch_array(out->root, name, schema, &arr, &m), rc, fail);
        out->count = json_array_size(arr);
    } else {
        out->count = 1;
    }
    if (events) {
        SPD_TRY_GOTO(spd_alloc_items(&p, out->count, sizeof *out->events, (void **)&out->events, &m), rc, fail);
    } else {
        SPD_TRY_GOTO(spd_alloc_items(&p, out->count, sizeof *out->profiles, (void **)&out->profiles, &m), rc, fail);
    }
    for (size_t i = 0; i < out->count; i++) {
        char path[32] = "";
        if (out->batch) snprintf(path, sizeof path, "%s[%zu]", name, i);
        json_t *item = out->batch ? json_array_get(arr, i) : out->root;
        rc = events ? spd_check_event(&p, item, path, &out->events[i])
                    : spd_check_profile(&p, item, path, &out->profiles[i]);
        if (rc != SP_OK) goto fail;
    }
    return SP_OK;
fail:
    spd_body_free(out);
    return rc;
}

sp_error spd_body_parse_profiles(const uint8_t *text, size_t len, const spd_body_schema *schema, spd_body *out,
                                 char *msg, size_t cap) {
    return spd_parse(text, len, schema, out, msg, cap, false);
}

sp_error spd_body_parse_events(const uint8_t *text, size_t len, const spd_body_schema *schema, spd_body *out,
                               char *msg, size_t cap) {
    return spd_parse(text, len, schema, out, msg, cap, true);
}

void spd_body_free(spd_body *body) {
    if (body == NULL) return;
    json_decref(body->root); /* its strings go back wiped (see the top) */
    free(body->profiles);
    free(body->events);
    free(body->pii);
    memset(body, 0, sizeof *body);
}
