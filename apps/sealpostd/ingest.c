/*
 * /v1/profiles and /v1/events: where PII enters sealpostd.
 *
 * A request goes through in an order that keeps plaintext short-lived and
 * the store transaction short:
 *   1. the whole body is parsed and validated (body.c): nothing is stored
 *      for a request with one bad item;
 *   2. profiles without an id are resolved to one: the blind index of their
 *      first email/phone value, looked up first among the batch's earlier
 *      items (so one email sent twice in a batch is one profile) and then in
 *      the store, else a fresh UUID;
 *   3. every PII value is normalised into a per-thread buffer, encrypted
 *      (AAD: tenant, profile id, field) and blind-indexed, and the buffer is
 *      wiped at once. This happens before the transaction: a DEK rotation
 *      writes the keyring through its own connection and must never wait
 *      on (or deadlock with) the request's transaction;
 *   4. one transaction of upserts (the store merges attributes and PII
 *      fields); a lost race (SP_ERR_CONFLICT) is retried up to three times
 *      from step 2, since ids resolved by index may have changed.
 *
 * Per-thread scratch buffers (pthread key, freed with the thread) carry the
 * ciphertexts, the attribute text and the reply, so a warm request allocates
 * only what jansson needs for the body. The plaintext never leaves the
 * jansson tree (wiped on free, see body.h) and the normalisation buffer
 * (wiped after each value); decrypted values for a masked read are wiped
 * right after masking.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "body.h"
#include "mask.h"

#define SPD_RETRIES 3
#define SPD_READ_PURPOSE "profile.read.masked"
#define SPD_RETRY_AFTER "5"

/* ---- per-thread scratch ---- */

typedef struct {
    char id[SP_STORE_MAX_ID + 1];
    bool created;
    bool found;          /* resolved by index to a stored profile */
    size_t attr_off;     /* its attribute text in scratch.text */
    size_t attr_len;
} spd_item_work;

typedef struct {
    size_t item;
    size_t blob_off;     /* into scratch.blobs */
    size_t blob_len;
    uint8_t index[SP_VAULT_INDEX_MAX];
    size_t index_len;    /* 0: not indexed (text fields) */
} spd_pii_work;

typedef struct {
    uint8_t *norm;       /* one normalised plaintext at a time; wiped after use */
    size_t norm_cap;
    uint8_t *blobs;
    size_t blobs_cap;
    char *text;          /* attributes / properties JSON, then the reply */
    size_t text_cap;
    spd_item_work *items;
    size_t items_cap;
    spd_pii_work *pii;
    size_t pii_cap;
    uint32_t *table;     /* batch dedupe: pii index + 1, or 0 */
    size_t table_cap;
} spd_scratch;

static void spd_scratch_free(void *p) {
    spd_scratch *s = p;
    if (s == NULL) return;
    if (s->norm != NULL) sp_wipe(s->norm, s->norm_cap);
    free(s->norm);
    free(s->blobs);
    free(s->text);
    free(s->items);
    free(s->pii);
    free(s->table);
    free(s);
}

static spd_thread_local spd_scratch_state = SPD_THREAD_LOCAL_INIT(spd_scratch_free);

static spd_scratch *spd_scratch_get(void) { return spd_thread_local_get(&spd_scratch_state, sizeof(spd_scratch)); }

/* Grows *buf to at least n elements of size bytes (contents not kept). */
static bool spd_grow(void **buf, size_t *cap, size_t n, size_t size) {
    if (*cap >= n && *buf != NULL) return true;
    size_t want = n < 64 ? 64 : n;
    if (want > SIZE_MAX / size) return false;
    void *p = malloc(want * size);
    if (p == NULL) return false;
    free(*buf);
    *buf = p;
    *cap = want;
    return true;
}

static bool spd_grow_norm(spd_scratch *s, size_t n) {
    if (s->norm_cap >= n && s->norm != NULL) return true;
    if (s->norm != NULL) sp_wipe(s->norm, s->norm_cap);
    return spd_grow((void **)&s->norm, &s->norm_cap, n, 1);
}

/* ---- replies ---- */

static void spd_respond(sp_http_request *req, unsigned status, const char *body, size_t len) {
    sp_error rc = sp_http_respond(req, status, "application/json", body, len);
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_I("status", status), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "ingest.respond_failed", f, 2);
    }
}

static void spd_with_retry_after(sp_http_request *req) {
    if (sp_http_add_header(req, "Retry-After", SPD_RETRY_AFTER) != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("header", "Retry-After")};
        sp_log(SP_LOG_WARN, "ingest.header_failed", f, 1);
    }
}

/* The answer to a failure of the library or the store. */
void spd_fail(sp_http_request *req, sp_error rc, const char *what) {
    switch (rc) {
    case SP_ERR_KMS_UNAVAILABLE:
    case SP_ERR_KMS_ACCESS_DENIED:
    case SP_ERR_KMS_KEY_DISABLED:
    case SP_ERR_KMS_PROTOCOL:
        spd_with_retry_after(req);
        spd_reply_error(req, 503, "kms_unavailable", "the tenant's KMS is unavailable; retry later");
        break;
    case SP_ERR_STORE:
    case SP_ERR_CONFLICT:
    case SP_ERR_UNAVAILABLE:
    case SP_ERR_SCHEMA:
        spd_with_retry_after(req);
        spd_reply_error(req, 503, "unavailable", "service unavailable; retry later");
        break;
    case SP_ERR_EXISTS:
    case SP_ERR_ILLEGAL_TRANSITION:
        spd_reply_error(req, 409, "conflict", "conflicts with the current state");
        break;
    default: spd_reply_error(req, 500, "internal", "internal error"); break;
    }
    sp_log_field f[] = {SP_LOG_S("step", what), SP_LOG_S("error", sp_error_name(rc))};
    sp_log(rc == SP_ERR_KMS_UNAVAILABLE || rc == SP_ERR_CONFLICT ? SP_LOG_WARN : SP_LOG_ERROR, "ingest.failed", f,
           2);
}

/* The tenant's context, or an answer: a tenant that vanished or was
 * disabled since on_headers gets the same 401 as any failed authentication. */
bool spd_tenant_or_reply(spd_app *app, sp_http_request *req, const spd_auth *auth, spd_tenant **t) {
    if (auth == NULL || auth->admin || auth->tenant[0] == 0) {
        spd_reply_status(req, 401);
        return false;
    }
    sp_error rc = spd_tenant_get(app, auth->tenant, t);
    if (rc == SP_OK) return true;
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_status(req, 401);
    } else {
        spd_fail(req, rc, "tenant");
    }
    return false;
}

static void spd_reply_parse(sp_http_request *req, sp_error rc, const char *msg) {
    switch (rc) {
    case SP_ERR_BAD_JSON: spd_reply_error(req, 400, "bad_json", msg); break;
    case SP_ERR_INVALID_ARGUMENT: spd_reply_error(req, 400, "bad_request", msg); break;
    case SP_ERR_TOO_LARGE: spd_reply_error(req, 400, "batch_too_large", msg); break;
    default: spd_fail(req, rc, "parse"); break;
    }
}

static spd_body_schema spd_schema_of(const spd_app *app, const spd_tenant *t) {
    spd_body_schema schema = {
        .pii = t->settings.pii,
        .n_pii = t->settings.n_pii,
        .default_country_code = t->settings.default_country_code[0] ? t->settings.default_country_code : NULL,
        .max_batch = app->config.max_batch ? app->config.max_batch : SPD_BODY_MAX_BATCH,
    };
    if (schema.max_batch > SPD_BODY_MAX_BATCH) schema.max_batch = SPD_BODY_MAX_BATCH;
    return schema;
}

static int64_t spd_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- PII: normalise, index, encrypt ---- */

static sp_error spd_normalise(spd_scratch *s, const spd_body_schema *schema, const spd_body_pii *v, size_t *n) {
    if (!spd_grow_norm(s, v->len + 8)) return SP_ERR_NO_MEMORY;
    sp_error rc = sp_vault_normalize(schema->pii[v->field].kind, schema->default_country_code,
                                     (const uint8_t *)v->value, v->len, (char *)s->norm, s->norm_cap, n);
    /* body.c accepted it, so a refusal here is a bug, not the client's */
    return rc == SP_ERR_INVALID_ARGUMENT ? SP_ERR_CRYPTO_BACKEND : rc;
}

/* The blind indexes of every email/phone value (they do not depend on the
 * profile id, so they survive a retry). */
static sp_error spd_index_all(spd_scratch *s, spd_tenant *t, const spd_body_schema *schema, const spd_body *b) {
    sp_error rc = SP_OK;
    for (size_t i = 0; i < b->n_pii && rc == SP_OK; i++) {
        const spd_body_pii *v = &b->pii[i];
        spd_pii_work *w = &s->pii[i];
        w->index_len = 0;
        if (schema->pii[v->field].kind == SP_VAULT_FIELD_TEXT) continue;
        size_t n = 0;
        rc = spd_normalise(s, schema, v, &n);
        if (rc == SP_OK) {
            rc = sp_vault_index(t->vault, schema->pii[v->field].name, s->norm, n, w->index, sizeof w->index,
                                &w->index_len);
        }
        sp_wipe(s->norm, n + 1);
    }
    return rc;
}

static sp_error spd_encrypt_all(spd_scratch *s, spd_tenant *t, const spd_body_schema *schema, const spd_body *b,
                                const char *(*id_of)(const spd_scratch *, const spd_body *, size_t)) {
    size_t need = 0;
    for (size_t i = 0; i < b->n_pii; i++) need += b->pii[i].len + 8 + SP_VAULT_OVERHEAD;
    if (!spd_grow((void **)&s->blobs, &s->blobs_cap, need, 1)) return SP_ERR_NO_MEMORY;
    size_t off = 0;
    sp_error rc = SP_OK;
    for (size_t i = 0; i < b->n_pii && rc == SP_OK; i++) {
        const spd_body_pii *v = &b->pii[i];
        spd_pii_work *w = &s->pii[i];
        size_t n = 0;
        rc = spd_normalise(s, schema, v, &n);
        if (rc == SP_OK) {
            rc = sp_vault_encrypt(t->vault, id_of(s, b, w->item), schema->pii[v->field].name, s->norm, n, 0,
                                  s->blobs + off, s->blobs_cap - off, &w->blob_len);
        }
        sp_wipe(s->norm, n + 1);
        w->blob_off = off;
        off += w->blob_len;
    }
    return rc;
}

static const char *spd_profile_id_of(const spd_scratch *s, const spd_body *b, size_t item) {
    (void)b;
    return s->items[item].id;
}

static const char *spd_event_profile_of(const spd_scratch *s, const spd_body *b, size_t item) {
    (void)s;
    return b->events[item].profile_id;
}

/* ---- id resolution ---- */

static uint32_t spd_hash_index(const spd_pii_work *w, uint16_t field) {
    uint32_t h = 2166136261u ^ field;
    for (size_t i = 0; i < w->index_len; i++) h = (h ^ w->index[i]) * 16777619u;
    return h;
}

/* Slot of the batch's earlier value with the same field and index, or of
 * the empty slot where it goes. */
static size_t spd_table_slot(const spd_scratch *s, const spd_body *b, size_t pii) {
    const spd_pii_work *w = &s->pii[pii];
    uint16_t field = b->pii[pii].field;
    size_t mask = s->table_cap - 1;
    size_t at = spd_hash_index(w, field) & mask;
    for (;;) {
        uint32_t e = s->table[at];
        if (e == 0) return at;
        const spd_pii_work *o = &s->pii[e - 1];
        if (b->pii[e - 1].field == field && o->index_len == w->index_len &&
            memcmp(o->index, w->index, w->index_len) == 0)
            return at;
        at = (at + 1) & mask;
    }
}

static sp_error spd_resolve_ids_in(spd_scratch *s, spd_tenant *t, sp_store *store, const spd_body_schema *schema,
                                   const spd_body *b) {
    size_t cap = 16;
    while (cap < 2 * b->count) cap *= 2;
    if (!spd_grow((void **)&s->table, &s->table_cap, cap, sizeof *s->table)) return SP_ERR_NO_MEMORY;
    s->table_cap = cap; /* a power of two, whatever the buffer holds */
    memset(s->table, 0, cap * sizeof *s->table);
    for (size_t i = 0; i < b->count; i++) {
        const spd_body_profile *p = &b->profiles[i];
        spd_item_work *w = &s->items[i];
        w->found = false;
        size_t slot = SIZE_MAX;
        if (p->identity != SIZE_MAX) slot = spd_table_slot(s, b, p->identity);
        if (p->id != NULL) {
            snprintf(w->id, sizeof w->id, "%s", p->id);
        } else if (s->table[slot] != 0) {
            /* an earlier item of this batch has this email/phone */
            memcpy(w->id, s->items[s->pii[s->table[slot] - 1].item].id, sizeof w->id);
        } else {
            const spd_pii_work *v = &s->pii[p->identity];
            sp_error rc = sp_store_profile_find_by_index(store, t->id, schema->pii[b->pii[p->identity].field].name,
                                                         v->index, v->index_len, w->id);
            if (rc == SP_OK) {
                w->found = true;
            } else if (rc == SP_ERR_NOT_FOUND) {
                SPD_TRY(sp_uuid_v7(w->id));
            } else {
                return rc;
            }
        }
        if (slot != SIZE_MAX) s->table[slot] = (uint32_t)p->identity + 1; /* the latest writer wins, as in the store */
    }
    return SP_OK;
}

/* The lookups of one batch share a read-only transaction: one snapshot and
 * one lock instead of one per profile. */
static sp_error spd_resolve_ids(spd_scratch *s, spd_tenant *t, sp_store *store, const spd_body_schema *schema,
                                const spd_body *b) {
    SPD_TRY(sp_store_begin_read(store));
    sp_error rc = spd_resolve_ids_in(s, t, store, schema, b);
    sp_store_rollback(store);
    return rc;
}

/* ---- attribute text ---- */

/* The JSON text of an object's members, PII members either left out
 * (blobs == NULL) or replaced by the base64 of their blob. */
static bool spd_b64(char *out, size_t cap, size_t *len, const uint8_t *in, size_t n) {
    /* quoted; the encoder's NUL lands where the closing quote goes */
    size_t need = 2 + SP_BASE64_CHARS(n), wrote = 0;
    if (cap - *len < need) return false;
    char *o = out + *len;
    *o = '"';
    if (sp_base64_encode(in, n, o + 1, need - 1, &wrote) != SP_OK) return false;
    o[1 + wrote] = '"';
    *len += need;
    return true;
}

/* How long the text of an object can get: the members as sent, PII grown
 * to base64 of its blob plus quotes. */
static size_t spd_object_bound(const spd_scratch *s, json_t *obj, size_t pii_first, size_t n_pii) {
    size_t need = 2;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) need += strlen(key) + 4 + spd_json_scalar_len(v);
    for (size_t i = 0; i < n_pii; i++) need += (s->pii[pii_first + i].blob_len + 2) / 3 * 4 + 2;
    return need;
}

/* The text of obj into s->text[at..end), *len its length. */
static sp_error spd_object_write(spd_scratch *s, const spd_body_schema *schema, json_t *obj, bool with_blobs,
                                 size_t pii_first, size_t at, size_t end, size_t *len) {
    char *text = s->text + at;
    size_t cap = end - at, o = 0;
    bool first = true, ok = true;
    text[o++] = '{';
    size_t pii_seen = 0;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int f = spd_body_pii_index(schema, key);
        if (f >= 0 && !with_blobs) continue;
        if (!first) text[o++] = ',';
        first = false;
        ok = ok && spd_json_append_string(text, cap, &o, key, strlen(key));
        if (ok) text[o++] = ':';
        if (f >= 0) {
            /* body.c recorded the PII values in member order */
            const spd_pii_work *w = &s->pii[pii_first + pii_seen++];
            ok = ok && spd_b64(text, cap, &o, s->blobs + w->blob_off, w->blob_len);
        } else {
            ok = ok && spd_json_append_scalar(text, cap, &o, v);
        }
        if (!ok || cap - o < 2) return SP_ERR_BUFFER_TOO_SMALL;
    }
    text[o++] = '}';
    *len = o;
    return SP_OK;
}

static sp_error spd_object_text(spd_scratch *s, const spd_body_schema *schema, json_t *obj, bool with_blobs,
                                size_t pii_first, size_t n_pii, size_t *len) {
    size_t need = spd_object_bound(s, obj, pii_first, n_pii);
    if (!spd_grow((void **)&s->text, &s->text_cap, need, 1)) return SP_ERR_NO_MEMORY;
    return spd_object_write(s, schema, obj, with_blobs, pii_first, 0, need, len);
}

/* ---- POST /v1/profiles ---- */

/* Every profile's attribute text, side by side in s->text, before the
 * transaction: the write lock is held for the statements alone. */
static sp_error spd_profiles_texts(spd_scratch *s, const spd_body_schema *schema, const spd_body *b) {
    size_t total = 0;
    for (size_t i = 0; i < b->count; i++) {
        const spd_body_profile *p = &b->profiles[i];
        total += spd_object_bound(s, p->attributes, p->pii_first, p->n_pii);
    }
    if (!spd_grow((void **)&s->text, &s->text_cap, total, 1)) return SP_ERR_NO_MEMORY;
    size_t at = 0;
    for (size_t i = 0; i < b->count; i++) {
        const spd_body_profile *p = &b->profiles[i];
        size_t end = at + spd_object_bound(s, p->attributes, p->pii_first, p->n_pii), len = 0;
        SPD_TRY(spd_object_write(s, schema, p->attributes, false, p->pii_first, at, end, &len));
        s->items[i].attr_off = at;
        s->items[i].attr_len = len;
        at += len;
    }
    return SP_OK;
}

static sp_error spd_profiles_write(spd_scratch *s, spd_tenant *t, sp_store *store, const spd_body_schema *schema,
                                   const spd_body *b) {
    SPD_TRY(spd_profiles_texts(s, schema, b));
    SPD_TRY(sp_store_begin(store));
    sp_error rc = SP_OK;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < b->count && rc == SP_OK; i++) {
        const spd_body_profile *p = &b->profiles[i];
        sp_store_pii pii[SP_VAULT_MAX_PII_FIELDS];
        for (size_t k = 0; k < p->n_pii; k++) {
            const spd_pii_work *w = &s->pii[p->pii_first + k];
            pii[k] = (sp_store_pii){
                .field = schema->pii[b->pii[p->pii_first + k].field].name,
                .blob = s->blobs + w->blob_off,
                .blob_len = w->blob_len,
                .index = w->index_len ? w->index : NULL,
                .index_len = w->index_len,
            };
        }
        sp_store_profile prof = {
            .tenant = t->id,
            .id = s->items[i].id,
            .attributes = s->text + s->items[i].attr_off,
            .attributes_len = s->items[i].attr_len,
            .pii = pii,
            .n_pii = p->n_pii,
        };
        rc = sp_store_profile_upsert(store, &prof, now, &s->items[i].created);
    }
    if (rc == SP_OK) rc = sp_store_commit(store);
    if (rc != SP_OK) sp_store_rollback(store);
    return rc;
}

static sp_error spd_profiles_reply(spd_scratch *s, const spd_body *b, size_t *len) {
    size_t created = 0;
    for (size_t i = 0; i < b->count; i++) created += s->items[i].created;
    size_t need = 64 + b->count * (2 * SP_STORE_MAX_ID + 48);
    if (!spd_grow((void **)&s->text, &s->text_cap, need, 1)) return SP_ERR_NO_MEMORY;
    int n = snprintf(s->text, s->text_cap, "{\"created\":%zu,\"updated\":%zu,\"results\":[", created,
                     b->count - created);
    if (n < 0) return SP_ERR_BUFFER_TOO_SMALL;
    size_t o = (size_t)n;
    for (size_t i = 0; i < b->count; i++) {
        static const char open[] = "{\"id\":";
        static const char st_created[] = ",\"status\":\"created\"}";
        static const char st_updated[] = ",\"status\":\"updated\"}";
        if (i) s->text[o++] = ',';
        memcpy(s->text + o, open, sizeof open - 1);
        o += sizeof open - 1;
        if (!spd_json_append_string(s->text, s->text_cap, &o, s->items[i].id, strlen(s->items[i].id)))
            return SP_ERR_BUFFER_TOO_SMALL;
        const char *st = s->items[i].created ? st_created : st_updated;
        size_t sl = s->items[i].created ? sizeof st_created - 1 : sizeof st_updated - 1;
        memcpy(s->text + o, st, sl);
        o += sl;
    }
    memcpy(s->text + o, "]}", 2);
    *len = o + 2;
    return SP_OK;
}

typedef sp_error (*spd_body_parser)(const uint8_t *text, size_t len, const spd_body_schema *schema, spd_body *out,
                                   char *msg, size_t cap);

/* What both POST handlers start with: the tenant, its schema, the body
 * parsed (400 with the reason otherwise) and this thread's scratch sized for
 * it. False when a reply has been sent (and nothing is left to free). */
static bool spd_ingest_start(spd_app *app, sp_http_request *req, const spd_auth *auth, spd_body_parser parse,
                             spd_tenant **t, spd_body_schema *schema, spd_body *b, spd_scratch **s) {
    if (!spd_tenant_or_reply(app, req, auth, t)) return false;
    *schema = spd_schema_of(app, *t);
    size_t len = 0;
    const uint8_t *text = sp_http_body(req, &len);
    char msg[SPD_BODY_MAX_MESSAGE];
    sp_error rc = parse(text, len, schema, b, msg, sizeof msg);
    if (rc != SP_OK) {
        spd_reply_parse(req, rc, msg);
        return false;
    }
    *s = spd_scratch_get();
    if (*s == NULL || !spd_grow((void **)&(*s)->items, &(*s)->items_cap, b->count, sizeof *(*s)->items) ||
        !spd_grow((void **)&(*s)->pii, &(*s)->pii_cap, b->n_pii, sizeof *(*s)->pii)) {
        spd_fail(req, SP_ERR_NO_MEMORY, "scratch");
        spd_body_free(b);
        return false;
    }
    return true;
}

void spd_profiles_post(spd_app *app, sp_http_request *req, const spd_auth *auth) {
    spd_tenant *t;
    spd_body_schema schema;
    spd_body b;
    spd_scratch *s;
    if (!spd_ingest_start(app, req, auth, spd_body_parse_profiles, &t, &schema, &b, &s)) return;
    sp_error rc = SP_OK;
    const char *step = "store";
    sp_store *store = NULL;
    for (size_t i = 0; i < b.count; i++) {
        for (size_t k = 0; k < b.profiles[i].n_pii; k++) s->pii[b.profiles[i].pii_first + k].item = i;
    }
    SPD_TRY_GOTO(spd_store(app, &store), rc, done);
    step = "index";
    SPD_TRY_GOTO(spd_index_all(s, t, &schema, &b), rc, done);
    for (int attempt = 0; attempt < SPD_RETRIES; attempt++) {
        step = "resolve";
        SPD_TRY_GOTO(spd_resolve_ids(s, t, store, &schema, &b), rc, done);
        step = "encrypt";
        SPD_TRY_GOTO(spd_encrypt_all(s, t, &schema, &b, spd_profile_id_of), rc, done);
        step = "write";
        rc = spd_profiles_write(s, t, store, &schema, &b);
        if (rc != SP_ERR_CONFLICT) break;
    }
    if (rc != SP_OK) goto done;
    if (app->profiles_ingested != NULL) sp_metric_add(app->profiles_ingested, b.count);
    step = "reply";
    size_t out_len = 0;
    SPD_TRY_GOTO(spd_profiles_reply(s, &b, &out_len), rc, done);
    spd_respond(req, 200, s->text, out_len);
done:
    if (rc != SP_OK) {
        if (rc == SP_ERR_NOT_FOUND && store != NULL && strcmp(step, "write") == 0) {
            /* the tenant was deleted under the request */
            spd_reply_status(req, 401);
        } else {
            spd_fail(req, rc, step);
        }
    }
    spd_body_free(&b);
}

/* ---- POST /v1/events ---- */

static sp_error spd_events_write(spd_scratch *s, spd_tenant *t, sp_store *store, const spd_body_schema *schema,
                                 const spd_body *b, int64_t now_ms, size_t *dups, size_t *bad_item) {
    SPD_TRY(sp_store_begin(store));
    sp_error rc = SP_OK;
    *dups = 0;
    int64_t now = now_ms / 1000;
    for (size_t i = 0; i < b->count && rc == SP_OK; i++) {
        const spd_body_event *e = &b->events[i];
        size_t len = 2;
        if (e->properties != NULL) {
            rc = spd_object_text(s, schema, e->properties, true, e->pii_first, e->n_pii, &len);
            if (rc != SP_OK) break;
        } else {
            if (!spd_grow((void **)&s->text, &s->text_cap, 2, 1)) {
                rc = SP_ERR_NO_MEMORY;
                break;
            }
            memcpy(s->text, "{}", 2);
        }
        sp_store_event ev = {
            .tenant = t->id,
            .id = s->items[i].id,
            .profile_id = e->profile_id,
            .name = e->name,
            .ts = e->ts >= 0 ? e->ts : now_ms,
            .properties = s->text,
            .properties_len = len,
        };
        bool inserted = false;
        rc = sp_store_event_insert(store, &ev, now, &inserted);
        if (rc == SP_OK && !inserted) (*dups)++;
        if (rc == SP_ERR_NOT_FOUND) *bad_item = i;
    }
    if (rc == SP_OK) rc = sp_store_commit(store);
    if (rc != SP_OK) sp_store_rollback(store);
    return rc;
}

void spd_events_post(spd_app *app, sp_http_request *req, const spd_auth *auth) {
    spd_tenant *t;
    spd_body_schema schema;
    spd_body b;
    spd_scratch *s;
    if (!spd_ingest_start(app, req, auth, spd_body_parse_events, &t, &schema, &b, &s)) return;
    sp_error rc = SP_OK;
    const char *step = "uuid";
    sp_store *store = NULL;
    size_t dups = 0, bad_item = SIZE_MAX;
    int64_t now_ms = spd_now_ms();
    for (size_t i = 0; i < b.count; i++) {
        const spd_body_event *e = &b.events[i];
        for (size_t k = 0; k < e->n_pii; k++) s->pii[e->pii_first + k].item = i;
        if (e->id != NULL) {
            snprintf(s->items[i].id, sizeof s->items[i].id, "%s", e->id);
        } else {
            SPD_TRY_GOTO(sp_uuid_v7(s->items[i].id), rc, done);
        }
    }
    step = "store";
    SPD_TRY_GOTO(spd_store(app, &store), rc, done);
    step = "encrypt";
    SPD_TRY_GOTO(spd_encrypt_all(s, t, &schema, &b, spd_event_profile_of), rc, done);
    for (int attempt = 0; attempt < SPD_RETRIES; attempt++) {
        step = "write";
        rc = spd_events_write(s, t, store, &schema, &b, now_ms, &dups, &bad_item);
        if (rc != SP_ERR_CONFLICT) break;
    }
    if (rc == SP_ERR_NOT_FOUND && bad_item != SIZE_MAX) {
        char msg[SPD_BODY_MAX_MESSAGE];
        snprintf(msg, sizeof msg, "events[%zu].profile_id: no such profile", bad_item);
        spd_reply_error(req, 400, "bad_request", msg);
        rc = SP_OK;
        goto done;
    }
    if (rc != SP_OK) goto done;
    if (app->events_ingested != NULL) sp_metric_add(app->events_ingested, b.count - dups);
    if (app->events_duplicate != NULL && dups) sp_metric_add(app->events_duplicate, dups);
    char out[96];
    int n = snprintf(out, sizeof out, "{\"accepted\":%zu,\"duplicates\":%zu}", b.count - dups, dups);
    spd_respond(req, 200, out, n > 0 ? (size_t)n : 0);
done:
    if (rc != SP_OK) spd_fail(req, rc, step);
    spd_body_free(&b);
}

/* ---- GET and DELETE /v1/profiles/{id} ---- */

static const spd_pii_field *spd_field_of(const spd_tenant *t, const char *name) {
    for (size_t i = 0; i < t->settings.n_pii; i++) {
        if (strcmp(t->settings.pii[i].name, name) == 0) return &t->settings.pii[i];
    }
    return NULL;
}

/* Decrypts, masks and wipes one field into attrs. */
static sp_error spd_mask_into(spd_app *app, spd_tenant *t, spd_scratch *s, const char *id,
                              const sp_store_pii_row *row, json_t *attrs) {
    const spd_pii_field *f = spd_field_of(t, row->field);
    if (f == NULL || row->blob_len < SP_VAULT_OVERHEAD) return SP_OK; /* not (or no longer) in the schema */
    size_t plain_cap = row->blob_len - SP_VAULT_OVERHEAD + 1;
    size_t mask_cap = SPD_MASK_CAP(plain_cap);
    if (!spd_grow_norm(s, plain_cap + mask_cap)) return SP_ERR_NO_MEMORY;
    uint8_t *plain = s->norm;
    char *masked = (char *)s->norm + plain_cap;
    size_t n = 0, m = 0;
    sp_error rc = sp_vault_decrypt(t->vault, id, row->field, row->blob, row->blob_len, SPD_READ_PURPOSE, 0, plain,
                                   plain_cap, &n);
    if (app->vault_decrypts != NULL) sp_metric_add(app->vault_decrypts, 1);
    if (rc == SP_OK) rc = spd_mask(f->kind, (const char *)plain, n, masked, mask_cap, &m);
    sp_wipe(plain, plain_cap);
    if (rc == SP_OK) {
        json_t *v = json_stringn(masked, m);
        rc = v != NULL && json_object_set_new(attrs, row->field, v) == 0 ? SP_OK : SP_ERR_NO_MEMORY;
    }
    sp_wipe(masked, mask_cap);
    return rc;
}

void spd_profile_get(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *profile_id) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    if (profile_id == NULL || !spd_body_id_ok(profile_id, strlen(profile_id))) {
        spd_reply_error(req, 404, "not_found", "no such profile");
        return;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    if (rc != SP_OK) {
        spd_fail(req, rc, "store");
        return;
    }
    sp_store_profile_row *row = calloc(1, sizeof *row);
    if (row == NULL) {
        spd_fail(req, SP_ERR_NO_MEMORY, "read");
        return;
    }
    const char *step = "read";
    json_t *attrs = NULL, *out = NULL;
    rc = sp_store_profile_get(store, t->id, profile_id, row);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such profile");
        rc = SP_OK;
        goto done;
    }
    if (rc != SP_OK) goto done;
    step = "attributes";
    json_error_t jerr;
    attrs = json_loadb(row->attributes, row->attributes_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(attrs)) {
        rc = SP_ERR_BAD_JSON;
        goto done;
    }
    step = "decrypt";
    spd_scratch *s = spd_scratch_get();
    if (s == NULL) {
        rc = SP_ERR_NO_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < row->n_pii && rc == SP_OK; i++) rc = spd_mask_into(app, t, s, profile_id, &row->pii[i], attrs);
    if (rc != SP_OK) goto done;
    step = "reply";
    out = json_pack("{s:s,s:O,s:I,s:I}", "id", row->id, "attributes", attrs, "created", (json_int_t)row->created,
                    "updated", (json_int_t)row->updated);
    if (out == NULL) {
        rc = SP_ERR_NO_MEMORY;
        goto done;
    }
    spd_reply_json(req, 200, out);
done:
    if (rc != SP_OK) spd_fail(req, rc, step);
    json_decref(attrs);
    sp_store_profile_row_clear(row);
    free(row);
}

void spd_profile_delete(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *profile_id) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    if (profile_id == NULL || !spd_body_id_ok(profile_id, strlen(profile_id))) {
        spd_reply_error(req, 404, "not_found", "no such profile");
        return;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    for (int attempt = 0; rc == SP_OK && attempt < SPD_RETRIES; attempt++) {
        rc = sp_store_begin(store);
        if (rc == SP_OK) rc = sp_store_profile_delete(store, t->id, profile_id);
        if (rc == SP_OK) rc = sp_store_commit(store);
        if (rc != SP_OK) sp_store_rollback(store);
        if (rc != SP_ERR_CONFLICT) break;
    }
    if (rc == SP_OK) {
        spd_respond(req, 204, "", 0);
    } else if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such profile");
    } else {
        spd_fail(req, rc, "delete");
    }
}
