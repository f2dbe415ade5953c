/*
 * Fuzz target for sealpostd's ingestion body parser (apps/sealpostd/body.c):
 * the bytes every tenant's client sends to POST /v1/profiles and
 * POST /v1/events.
 *
 * The first byte chooses: bit 0 events or profiles, bit 1 whether the
 * tenant has a default country code, bits 2-3 max_batch (1, 2, 3, 1000).
 * The rest is the body. Properties checked:
 *   - the only answers are SP_OK, SP_ERR_BAD_JSON, SP_ERR_INVALID_ARGUMENT
 *     and SP_ERR_TOO_LARGE (the allocator does not fail here), each failure
 *     with a non-empty message and nothing left allocated;
 *   - a success holds 1..max_batch items; every id is visible ASCII of
 *     1..128 bytes; the PII slices tile spd_body.pii in order; every PII
 *     value is a string of its member that normalises for its kind; a
 *     profile without an id has an email/phone identity; an event has a
 *     profile id and a name;
 *   - every attribute value written by spd_json_append_scalar reads back
 *     through jansson as the same value, at exactly spd_json_scalar_len.
 */
#include "fuzz_util.h"

#include "body.h"

FUZZ_INITIALIZE_LIBRARY()

static const spd_pii_field fuzz_pii[] = {
    {"email", SP_VAULT_FIELD_EMAIL},
    {"phone", SP_VAULT_FIELD_PHONE},
    {"name", SP_VAULT_FIELD_TEXT},
};
static const size_t fuzz_batches[4] = {1, 2, 3, 1000};

static void fuzz_check_object(json_t *obj) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        FUZZ_CHECK(spd_body_name_ok(key, strlen(key)));
        size_t want = spd_json_scalar_len(v);
        char *out = fuzz_alloc(want);
        size_t len = 0;
        FUZZ_CHECK(spd_json_append_scalar(out, want, &len, v));
        FUZZ_CHECK(len == want);
        json_error_t jerr;
        json_t *back = json_loadb(out, len, JSON_DECODE_ANY, &jerr);
        FUZZ_CHECK(back != NULL && json_equal(back, v));
        json_decref(back);
        free(out);
    }
}

static void fuzz_check_pii(const spd_body_schema *schema, const spd_body *b, json_t *obj, size_t first, size_t n) {
    FUZZ_CHECK(first + n <= b->n_pii);
    for (size_t i = first; i < first + n; i++) {
        const spd_body_pii *p = &b->pii[i];
        FUZZ_CHECK(p->field < schema->n_pii);
        json_t *v = json_object_get(obj, schema->pii[p->field].name);
        FUZZ_CHECK(json_is_string(v) && json_string_value(v) == p->value && json_string_length(v) == p->len);
        if (schema->pii[p->field].kind != SP_VAULT_FIELD_TEXT) {
            char *norm = fuzz_alloc(p->len + 8);
            size_t nlen = 0;
            FUZZ_CHECK(sp_vault_normalize(schema->pii[p->field].kind, schema->default_country_code,
                                          (const uint8_t *)p->value, p->len, norm, p->len + 8, &nlen) == SP_OK);
            free(norm);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    bool events = mode & 1;
    spd_body_schema schema = {fuzz_pii, 3, (mode & 2) ? "44" : NULL, fuzz_batches[(mode >> 2) & 3]};
    uint8_t *body = fuzz_dup(data + 1, size - 1);
    char msg[SPD_BODY_MAX_MESSAGE];
    spd_body b;
    sp_error rc = events ? spd_body_parse_events(body, size - 1, &schema, &b, msg, sizeof msg)
                         : spd_body_parse_profiles(body, size - 1, &schema, &b, msg, sizeof msg);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_BAD_JSON || rc == SP_ERR_INVALID_ARGUMENT || rc == SP_ERR_TOO_LARGE);
        FUZZ_CHECK(msg[0] != 0 && strlen(msg) < sizeof msg);
        FUZZ_CHECK(b.root == NULL && b.profiles == NULL && b.events == NULL && b.pii == NULL);
        free(body);
        return 0;
    }
    FUZZ_CHECK(b.count >= 1 && b.count <= schema.max_batch);
    size_t next = 0;
    for (size_t i = 0; i < b.count; i++) {
        if (events) {
            const spd_body_event *e = &b.events[i];
            FUZZ_CHECK(e->id == NULL || spd_body_id_ok(e->id, strlen(e->id)));
            FUZZ_CHECK(e->profile_id != NULL && spd_body_id_ok(e->profile_id, strlen(e->profile_id)));
            FUZZ_CHECK(e->name != NULL && e->name[0] != 0);
            FUZZ_CHECK(e->ts >= -1 && e->ts <= SPD_BODY_MAX_TS);
            if (e->properties != NULL) {
                FUZZ_CHECK(e->pii_first == next);
                fuzz_check_pii(&schema, &b, e->properties, e->pii_first, e->n_pii);
                fuzz_check_object(e->properties);
                next += e->n_pii;
            } else {
                FUZZ_CHECK(e->n_pii == 0);
            }
        } else {
            const spd_body_profile *p = &b.profiles[i];
            FUZZ_CHECK(p->id == NULL || spd_body_id_ok(p->id, strlen(p->id)));
            FUZZ_CHECK(p->id != NULL || p->identity != SIZE_MAX);
            FUZZ_CHECK(p->pii_first == next);
            FUZZ_CHECK(p->n_pii + p->n_plain == json_object_size(p->attributes));
            fuzz_check_pii(&schema, &b, p->attributes, p->pii_first, p->n_pii);
            fuzz_check_object(p->attributes);
            if (p->identity != SIZE_MAX) {
                FUZZ_CHECK(p->identity >= p->pii_first && p->identity < p->pii_first + p->n_pii);
                FUZZ_CHECK(schema.pii[b.pii[p->identity].field].kind != SP_VAULT_FIELD_TEXT);
            }
            next += p->n_pii;
        }
    }
    FUZZ_CHECK(next == b.n_pii);
    spd_body_free(&b);
    free(body);
    return 0;
}
