/*
 * The provider keyring (include/sealpost/keyring.h).
 *
 * State lives in one JSON document kept by a storage (sp_keyring_storage):
 * a private file (below, sp_keyring_open) or a database row (the store's).
 * Every change takes the storage's lock, re-reads the document, applies the
 * change in memory, and writes the document back before unlocking, so
 * processes sharing it never lose each other's changes and a crash leaves
 * the previous state or the next one. Key
 * material is stored only as KMS-wrapped blobs; it is unwrapped into locked
 * memory when a channel's keys are loaded into an sp_wire.
 *
 * Versions are ordered by a sequence number given at creation, not by clock
 * time, so "older than the minimum version" is exact even within a second.
 */
#include <sys/stat.h>

#include <jansson.h>

#include "keyring/keyring_internal.h"
#include "kms/sp_kms.h"
#include "sealpost/keyring.h"

#define SP_KEYRING_FORMAT "sealpost-keyring"

typedef struct {
    sp_keyring_entry e;
    uint64_t seq;
    uint8_t *wrapped; /* NULL once destroyed */
    size_t wrapped_len;
} sp_kr_item;

typedef struct {
    char tenant[SP_KEYRING_MAX_NAME + 1];
    char channel[SP_KEYRING_MAX_NAME + 1];
    uint64_t min_seq; /* versions below are never loaded */
} sp_kr_channel;

/* An open-addressing table of item positions (+1; 0 is empty). */
typedef struct {
    uint32_t *slots;
    size_t cap; /* a power of two, at least twice the items */
} sp_kr_hash;

struct sp_keyring {
    sp_keyring_storage st;
    sp_kms *kms;
    sp_kr_item *items;
    size_t count, cap;
    /* Lookups by (tenant, channel, version) and of a channel's active key,
     * rebuilt lazily after the items change: changes are rare and cost a
     * file write anyway, lookups are on every cache miss. */
    sp_kr_hash by_version, by_active;
    bool index_stale;
    /* the storage's generation of the document last read; 0 (none) also
     * after a failed read, so the next check reads again */
    uint64_t seen_gen;
    sp_kr_channel *chans;
    size_t nchans, chans_cap;
    uint64_t next_seq;
};

static const char *const sp_state_names[] = {"", "active", "decrypt-only", "retired", "destroyed"};

const char *sp_keyring_state_name(sp_keyring_state s) {
    return (s >= SP_KEYRING_ACTIVE && s <= SP_KEYRING_DESTROYED) ? sp_state_names[s] : "unknown";
}

static bool sp_name_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SP_KEYRING_MAX_NAME) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

/* ---- in-memory state ---- */
static void sp_kr_hash_free(sp_kr_hash *h) {
    sp_free(h->slots);
    h->slots = NULL;
    h->cap = 0;
}

static void sp_kr_clear(sp_keyring *kr) {
    sp_kr_hash_free(&kr->by_version);
    sp_kr_hash_free(&kr->by_active);
    kr->index_stale = true;
    for (size_t i = 0; i < kr->count; i++) sp_free(kr->items[i].wrapped);
    sp_free(kr->items);
    sp_free(kr->chans);
    kr->items = NULL;
    kr->chans = NULL;
    kr->count = kr->cap = kr->nchans = kr->chans_cap = 0;
    kr->next_seq = 1;
}

static sp_error sp_grow(void **arr, size_t *cap, size_t count, size_t elem, size_t limit) {
    if (count < *cap) return SP_OK;
    SP_ENSURE(count < limit, SP_ERR_TOO_LARGE);
    size_t ncap = *cap ? *cap * 2 : 8;
    uint8_t *grown = sp_calloc(ncap, elem);
    SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
    if (count) memcpy(grown, *arr, count * elem);
    sp_free(*arr);
    *arr = grown;
    *cap = ncap;
    return SP_OK;
}

static uint64_t sp_kr_hash_of(const char *tenant, const char *channel, const char *version) {
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a over the names, NUL-separated */
    const char *parts[3] = {tenant, channel, version};
    for (size_t p = 0; p < 3 && parts[p] != NULL; p++) {
        for (const char *c = parts[p]; *c; c++) h = (h ^ (uint8_t)*c) * 0x100000001b3u;
        h = (h ^ 0xffu) * 0x100000001b3u;
    }
    return h;
}

static bool sp_kr_names_match(const sp_kr_item *it, const char *tenant, const char *channel, const char *version) {
    return strcmp(it->e.tenant, tenant) == 0 && strcmp(it->e.channel, channel) == 0 &&
           (version == NULL || strcmp(it->e.version, version) == 0);
}

/* Inserts item i under its key; SP_ERR_BAD_KEYFILE when the key is taken
 * (a version twice, or two active keys in a channel). */
static sp_error sp_kr_hash_put(sp_kr_hash *h, const sp_keyring *kr, size_t i, bool with_version) {
    const sp_kr_item *it = &kr->items[i];
    const char *v = with_version ? it->e.version : NULL;
    size_t at = (size_t)sp_kr_hash_of(it->e.tenant, it->e.channel, v) & (h->cap - 1);
    while (h->slots[at] != 0) {
        if (sp_kr_names_match(&kr->items[h->slots[at] - 1], it->e.tenant, it->e.channel, v)) return SP_ERR_BAD_KEYFILE;
        at = (at + 1) & (h->cap - 1);
    }
    h->slots[at] = (uint32_t)(i + 1);
    return SP_OK;
}

static sp_error sp_kr_hash_alloc(sp_kr_hash *h, size_t count) {
    size_t cap = 16;
    while (cap < 2 * count) cap *= 2;
    sp_kr_hash_free(h);
    h->slots = sp_calloc(cap, sizeof *h->slots);
    SP_ENSURE(h->slots != NULL, SP_ERR_NO_MEMORY);
    h->cap = cap;
    return SP_OK;
}

/* Rebuilds both indexes when the items changed, checking the file's
 * invariants on the way: every version once, at most one active key per
 * channel. */
static sp_error sp_kr_reindex(sp_keyring *kr) {
    if (!kr->index_stale) return SP_OK;
    sp_error rc = sp_kr_hash_alloc(&kr->by_version, kr->count);
    if (rc == SP_OK) rc = sp_kr_hash_alloc(&kr->by_active, kr->count);
    for (size_t i = 0; rc == SP_OK && i < kr->count; i++) {
        rc = sp_kr_hash_put(&kr->by_version, kr, i, true);
        if (rc == SP_OK && kr->items[i].e.state == SP_KEYRING_ACTIVE) rc = sp_kr_hash_put(&kr->by_active, kr, i, false);
    }
    if (rc != SP_OK) {
        sp_kr_hash_free(&kr->by_version);
        sp_kr_hash_free(&kr->by_active);
        return rc;
    }
    kr->index_stale = false;
    return SP_OK;
}

static sp_kr_item *sp_kr_lookup(sp_keyring *kr, sp_kr_hash *h, const char *tenant, const char *channel,
                                const char *version) {
    if (sp_kr_reindex(kr) != SP_OK) {
        /* no memory for the index: the same answer, the slow way */
        for (size_t i = 0; i < kr->count; i++) {
            sp_kr_item *it = &kr->items[i];
            if (sp_kr_names_match(it, tenant, channel, version) &&
                (version != NULL || it->e.state == SP_KEYRING_ACTIVE))
                return it;
        }
        return NULL;
    }
    size_t at = (size_t)sp_kr_hash_of(tenant, channel, version) & (h->cap - 1);
    while (h->slots[at] != 0) {
        sp_kr_item *it = &kr->items[h->slots[at] - 1];
        if (sp_kr_names_match(it, tenant, channel, version)) return it;
        at = (at + 1) & (h->cap - 1);
    }
    return NULL;
}

static sp_kr_item *sp_kr_find(sp_keyring *kr, const char *tenant, const char *channel, const char *version) {
    return sp_kr_lookup(kr, &kr->by_version, tenant, channel, version);
}

static sp_kr_item *sp_kr_active(sp_keyring *kr, const char *tenant, const char *channel) {
    return sp_kr_lookup(kr, &kr->by_active, tenant, channel, NULL);
}

static sp_kr_channel *sp_kr_chan(sp_keyring *kr, const char *tenant, const char *channel) {
    for (size_t i = 0; i < kr->nchans; i++) {
        if (strcmp(kr->chans[i].tenant, tenant) == 0 && strcmp(kr->chans[i].channel, channel) == 0)
            return &kr->chans[i];
    }
    return NULL;
}

/* ---- the file ---- */
static sp_error sp_json_int(json_t *obj, const char *name, int64_t *out) {
    json_t *v = json_object_get(obj, name);
    SP_ENSURE(json_is_integer(v) && json_integer_value(v) >= 0, SP_ERR_BAD_KEYFILE);
    *out = (int64_t)json_integer_value(v);
    return SP_OK;
}

static sp_error sp_json_name(json_t *obj, const char *name, char *out, size_t cap) {
    json_t *v = json_object_get(obj, name);
    SP_ENSURE(json_is_string(v) && json_string_length(v) < cap, SP_ERR_BAD_KEYFILE);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return SP_OK;
}

static sp_error sp_kr_parse_item(sp_keyring *kr, json_t *o) {
    SP_ENSURE(json_is_object(o), SP_ERR_BAD_KEYFILE);
    SP_GUARD(sp_grow((void **)&kr->items, &kr->cap, kr->count, sizeof *kr->items, SP_KEYRING_MAX_KEYS));
    sp_kr_item *it = &kr->items[kr->count];
    memset(it, 0, sizeof *it);
    sp_keyring_entry *e = &it->e;
    char state[16];
    int64_t seq = 0;
    SP_GUARD(sp_json_name(o, "tenant", e->tenant, sizeof e->tenant));
    SP_GUARD(sp_json_name(o, "channel", e->channel, sizeof e->channel));
    SP_GUARD(sp_json_name(o, "version", e->version, sizeof e->version));
    SP_GUARD(sp_json_name(o, "state", state, sizeof state));
    SP_GUARD(sp_json_name(o, "master_key", e->master_key, sizeof e->master_key));
    SP_GUARD(sp_json_int(o, "seq", &seq));
    SP_GUARD(sp_json_int(o, "created", &e->created));
    SP_GUARD(sp_json_int(o, "deactivated", &e->deactivated));
    SP_GUARD(sp_json_int(o, "retired", &e->retired));
    SP_GUARD(sp_json_int(o, "destroyed", &e->destroyed));
    SP_ENSURE(sp_name_ok(e->tenant) && sp_name_ok(e->channel) && sp_uuid_is_valid(e->version, strlen(e->version)),
              SP_ERR_BAD_KEYFILE);
    e->state = 0;
    for (int s = SP_KEYRING_ACTIVE; s <= SP_KEYRING_DESTROYED; s++) {
        if (strcmp(state, sp_state_names[s]) == 0) e->state = (sp_keyring_state)s;
    }
    SP_ENSURE(e->state != 0 && seq > 0, SP_ERR_BAD_KEYFILE);
    it->seq = (uint64_t)seq;
    json_t *w = json_object_get(o, "wrapped");
    if (e->state == SP_KEYRING_DESTROYED) {
        SP_ENSURE(w == NULL, SP_ERR_BAD_KEYFILE);
    } else {
        SP_ENSURE(json_is_string(w) && json_string_length(w) <= sp_b64_encoded_len(SP_KMS_MAX_WRAPPED, false),
                  SP_ERR_BAD_KEYFILE);
        it->wrapped = sp_malloc(SP_KMS_MAX_WRAPPED);
        SP_ENSURE(it->wrapped != NULL, SP_ERR_NO_MEMORY);
        sp_error rc = sp_b64_decode(json_string_value(w), json_string_length(w), it->wrapped, SP_KMS_MAX_WRAPPED,
                                    &it->wrapped_len, false);
        if (rc != SP_OK) {
            sp_free(it->wrapped);
            it->wrapped = NULL;
            return rc == SP_ERR_NO_MEMORY ? rc : SP_ERR_BAD_KEYFILE;
        }
    }
    kr->count++;
    kr->index_stale = true;
    if (it->seq >= kr->next_seq) kr->next_seq = it->seq + 1;
    return SP_OK;
}

static sp_error sp_kr_parse_chan(sp_keyring *kr, json_t *o) {
    SP_ENSURE(json_is_object(o), SP_ERR_BAD_KEYFILE);
    SP_GUARD(sp_grow((void **)&kr->chans, &kr->chans_cap, kr->nchans, sizeof *kr->chans, SP_KEYRING_MAX_KEYS));
    sp_kr_channel *c = &kr->chans[kr->nchans];
    int64_t min_seq = 0;
    SP_GUARD(sp_json_name(o, "tenant", c->tenant, sizeof c->tenant));
    SP_GUARD(sp_json_name(o, "channel", c->channel, sizeof c->channel));
    SP_GUARD(sp_json_int(o, "min_seq", &min_seq));
    SP_ENSURE(sp_name_ok(c->tenant) && sp_name_ok(c->channel), SP_ERR_BAD_KEYFILE);
    c->min_seq = (uint64_t)min_seq;
    kr->nchans++;
    return SP_OK;
}

static sp_error sp_kr_load(sp_keyring *kr) {
    sp_kr_clear(kr);
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t gen = 0;
    sp_error rc = kr->st.read(kr->st.ctx, &data, &len, &gen);
    kr->seen_gen = rc == SP_OK ? gen : 0;
    if (rc != SP_OK || data == NULL) return rc; /* no document yet: a new keyring */
    json_t *root = NULL;
    rc = sp_json_load(data, len, SP_ERR_BAD_KEYFILE, &root);
    kr->st.free_doc(kr->st.ctx, data, len);
    if (rc != SP_OK) {
        kr->seen_gen = 0;
        return rc;
    }
    json_t *format = json_object_get(root, "format"), *keys = json_object_get(root, "keys");
    json_t *chans = json_object_get(root, "channels"), *version = json_object_get(root, "version");
    if (!json_is_string(format) || strcmp(json_string_value(format), SP_KEYRING_FORMAT) != 0 ||
        !json_is_integer(version) || json_integer_value(version) != 1 || !json_is_array(keys) ||
        !json_is_array(chans)) {
        rc = SP_ERR_BAD_KEYFILE;
    }
    for (size_t i = 0; rc == SP_OK && i < json_array_size(keys); i++) rc = sp_kr_parse_item(kr, json_array_get(keys, i));
    for (size_t i = 0; rc == SP_OK && i < json_array_size(chans); i++)
        rc = sp_kr_parse_chan(kr, json_array_get(chans, i));
    json_decref(root);
    /* the document's invariants, in one pass: every version once, one
     * active key per channel */
    if (rc == SP_OK) rc = sp_kr_reindex(kr);
    if (rc != SP_OK) {
        sp_kr_clear(kr);
        kr->seen_gen = 0; /* not read after all: the next check must read it */
    }
    return rc;
}

static json_t *sp_kr_item_json(const sp_kr_item *it) {
    const sp_keyring_entry *e = &it->e;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "tenant", e->tenant, "channel",
                          e->channel, "version", e->version, "state", sp_keyring_state_name(e->state), "master_key",
                          e->master_key, "seq", (json_int_t)it->seq, "created", (json_int_t)e->created,
                          "deactivated", (json_int_t)e->deactivated, "retired", (json_int_t)e->retired, "destroyed",
                          (json_int_t)e->destroyed);
    if (o == NULL || it->wrapped == NULL) return o;
    char b64[(SP_KMS_MAX_WRAPPED + 2) / 3 * 4 + 1];
    size_t n = 0;
    if (sp_b64_encode(it->wrapped, it->wrapped_len, b64, sizeof b64, &n, false) != SP_OK ||
        json_object_set_new(o, "wrapped", json_stringn(b64, n)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The document as JSON text (NUL-terminated, len + 1 bytes, the caller's to
 * sp_free_wiped): every entry, or only one tenant's. */
static sp_error sp_kr_serialize(const sp_keyring *kr, const char *tenant, uint8_t **out, size_t *out_len) {
    json_t *keys = json_array(), *chans = json_array();
    json_t *root = json_pack("{s:s, s:i, s:o, s:o}", "format", SP_KEYRING_FORMAT, "version", 1, "keys", keys,
                             "channels", chans);
    SP_ENSURE(root != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = SP_OK;
    for (size_t i = 0; rc == SP_OK && i < kr->count; i++) {
        if (tenant != NULL && strcmp(kr->items[i].e.tenant, tenant) != 0) continue;
        if (json_array_append_new(keys, sp_kr_item_json(&kr->items[i])) != 0) rc = SP_ERR_NO_MEMORY;
    }
    for (size_t i = 0; rc == SP_OK && i < kr->nchans; i++) {
        const sp_kr_channel *c = &kr->chans[i];
        if (tenant != NULL && strcmp(c->tenant, tenant) != 0) continue;
        json_t *o = json_pack("{s:s, s:s, s:I}", "tenant", c->tenant, "channel", c->channel, "min_seq",
                              (json_int_t)c->min_seq);
        if (json_array_append_new(chans, o) != 0) rc = SP_ERR_NO_MEMORY;
    }
    uint8_t *text = NULL;
    size_t need = 0;
    if (rc == SP_OK) {
        need = json_dumpb(root, NULL, 0, JSON_INDENT(1));
        text = need ? sp_malloc(need + 1) : NULL;
        if (text == NULL || json_dumpb(root, (char *)text, need, JSON_INDENT(1)) != need) rc = SP_ERR_NO_MEMORY;
    }
    json_decref(root);
    if (rc != SP_OK) {
        if (text != NULL) sp_free_wiped(text, need + 1);
        return rc;
    }
    text[need] = 0;
    *out = text;
    *out_len = need;
    return SP_OK;
}

static sp_error sp_kr_save(sp_keyring *kr) {
    uint8_t *text = NULL;
    size_t len = 0;
    SP_GUARD(sp_kr_serialize(kr, NULL, &text, &len));
    sp_error rc = kr->st.write(kr->st.ctx, text, len);
    sp_free_wiped(text, len + 1);
    return rc;
}

sp_error sp_keyring_serialize_tenant(const sp_keyring *kr, const char *tenant, uint8_t **doc, size_t *len) {
    SP_ENSURE(kr != NULL && tenant != NULL && doc != NULL && len != NULL, SP_ERR_INVALID_ARGUMENT);
    return sp_kr_serialize(kr, tenant, doc, len);
}

/* Ends a locked change: commits when it went well (a commit can still
 * lose, to a concurrent writer of a database row), abandons otherwise, and
 * after any failure re-reads the document, so the in-memory view is what
 * the storage holds. */
static sp_error sp_kr_unlock(sp_keyring *kr, sp_error rc) {
    sp_error urc = kr->st.unlock(kr->st.ctx, rc == SP_OK);
    if (rc == SP_OK) rc = urc;
    if (rc != SP_OK) (void)sp_kr_load(kr);
    return rc;
}

/* Lock, re-read, change, write, unlock. A failed change leaves the document
 * as it was and the in-memory view re-read from it. */
typedef sp_error (*sp_kr_change_fn)(sp_keyring *kr, void *arg);

static sp_error sp_kr_change(sp_keyring *kr, sp_kr_change_fn fn, void *arg) {
    SP_ENSURE(kr->kms != NULL, SP_ERR_BAD_CONFIG); /* opened for reading only */
    SP_GUARD(kr->st.lock(kr->st.ctx));
    sp_error rc = sp_kr_load(kr);
    if (rc == SP_OK) rc = fn(kr, arg);
    if (rc == SP_OK) rc = sp_kr_save(kr);
    return sp_kr_unlock(kr, rc);
}

/* ---- the file storage ----
 * The document is a private file replaced atomically (sp_file_replace)
 * under an advisory lock on a file beside it. Its generation is the file's
 * identity: a replaced file is another inode, and an edit in place changes
 * its size or mtime. */
typedef struct {
    char *path;
    int lock;
} sp_kr_file;

/* A digest of what stat says about the file; 0 when it is missing. */
static uint64_t sp_kr_file_identity(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    const uint64_t parts[5] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
                               (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec};
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < SP_ARRAY_LEN(parts); i++) {
        for (int b = 0; b < 64; b += 8) h = (h ^ ((parts[i] >> b) & 0xffu)) * 0x100000001b3u;
    }
    return h ? h : 1;
}

static sp_error sp_kr_file_read(void *ctx, uint8_t **doc, size_t *len, uint64_t *generation) {
    sp_kr_file *f = ctx;
    /* noted before reading: a replacement racing the read makes the next
     * check see a change and read again, never miss it */
    uint64_t gen = sp_kr_file_identity(f->path);
    uint8_t *data = NULL;
    size_t n = 0;
    sp_error rc = sp_file_read_private(f->path, SP_KEYRING_MAX_FILE, &data, &n);
    if (rc == SP_ERR_NOT_FOUND) {
        data = NULL;
        n = 0;
    } else if (rc != SP_OK) {
        return rc;
    }
    *doc = data;
    *len = n;
    *generation = gen;
    return SP_OK;
}

static sp_error sp_kr_file_generation(void *ctx, uint64_t *generation) {
    sp_kr_file *f = ctx;
    *generation = sp_kr_file_identity(f->path);
    return SP_OK;
}

static sp_error sp_kr_file_lock(void *ctx) {
    sp_kr_file *f = ctx;
    SP_ENSURE(f->lock < 0, SP_ERR_INVALID_ARGUMENT);
    return sp_file_lock(f->path, &f->lock);
}

static sp_error sp_kr_file_write(void *ctx, const uint8_t *doc, size_t len) {
    sp_kr_file *f = ctx;
    return sp_file_replace(f->path, doc, len);
}

/* A file replaced is visible at once; the keyring writes only as the last
 * step of a change, so there is nothing to abandon. */
static sp_error sp_kr_file_unlock(void *ctx, bool commit) {
    sp_kr_file *f = ctx;
    (void)commit;
    sp_file_unlock(f->lock);
    f->lock = -1;
    return SP_OK;
}

static void sp_kr_file_free_doc(void *ctx, uint8_t *doc, size_t len) {
    (void)ctx;
    if (doc != NULL) sp_free_wiped(doc, len + 1);
}

static void sp_kr_file_close(void *ctx) {
    sp_kr_file *f = ctx;
    if (f == NULL) return;
    sp_file_unlock(f->lock);
    sp_free(f->path);
    sp_free(f);
}

/* ---- open / query ---- */
sp_error sp_keyring_open_storage(const sp_keyring_storage *storage, sp_kms *kms, sp_keyring **out) {
    SP_ENSURE(storage != NULL, SP_ERR_INVALID_ARGUMENT);
    const sp_keyring_storage *s = storage;
    if (out == NULL || s->read == NULL || s->generation == NULL || s->lock == NULL || s->write == NULL ||
        s->unlock == NULL || s->free_doc == NULL || s->close == NULL) {
        if (s->close != NULL) s->close(s->ctx);
        return SP_ERR_INVALID_ARGUMENT;
    }
    sp_keyring *kr = sp_calloc(1, sizeof *kr);
    if (kr == NULL) {
        s->close(s->ctx);
        return SP_ERR_NO_MEMORY;
    }
    kr->st = *s;
    kr->kms = kms;
    kr->next_seq = 1;
    sp_error rc = sp_kr_load(kr);
    if (rc != SP_OK) {
        sp_keyring_close(kr);
        return rc;
    }
    *out = kr;
    return SP_OK;
}

sp_error sp_keyring_open(const char *path, sp_kms *kms, sp_keyring **out) {
    SP_ENSURE(path != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_kr_file *f = sp_calloc(1, sizeof *f);
    SP_ENSURE(f != NULL, SP_ERR_NO_MEMORY);
    size_t n = strlen(path);
    f->lock = -1;
    f->path = sp_malloc(n + 1);
    if (f->path == NULL) {
        sp_free(f);
        return SP_ERR_NO_MEMORY;
    }
    memcpy(f->path, path, n + 1);
    const sp_keyring_storage st = {.ctx = f,
                                   .read = sp_kr_file_read,
                                   .generation = sp_kr_file_generation,
                                   .lock = sp_kr_file_lock,
                                   .write = sp_kr_file_write,
                                   .unlock = sp_kr_file_unlock,
                                   .free_doc = sp_kr_file_free_doc,
                                   .close = sp_kr_file_close};
    return sp_keyring_open_storage(&st, kms, out);
}

void sp_keyring_close(sp_keyring *kr) {
    if (kr == NULL) return;
    sp_kr_clear(kr);
    kr->st.close(kr->st.ctx);
    sp_free(kr);
}

sp_error sp_keyring_reload(sp_keyring *kr) {
    SP_ENSURE(kr != NULL, SP_ERR_INVALID_ARGUMENT);
    return sp_kr_load(kr);
}

sp_error sp_keyring_reload_if_changed(sp_keyring *kr, bool *reloaded) {
    SP_ENSURE(kr != NULL, SP_ERR_INVALID_ARGUMENT);
    uint64_t gen = 0;
    SP_GUARD(kr->st.generation(kr->st.ctx, &gen));
    bool changed = gen != kr->seen_gen;
    if (reloaded) *reloaded = changed;
    return changed ? sp_kr_load(kr) : SP_OK;
}

size_t sp_keyring_count(const sp_keyring *kr) { return kr ? kr->count : 0; }

sp_error sp_keyring_get(const sp_keyring *kr, size_t index, sp_keyring_entry *out) {
    SP_ENSURE(kr != NULL && out != NULL && index < kr->count, SP_ERR_INVALID_ARGUMENT);
    *out = kr->items[index].e;
    return SP_OK;
}

static sp_error sp_kr_check_names(const char *tenant, const char *channel, const char *version) {
    SP_ENSURE(sp_name_ok(tenant) && sp_name_ok(channel), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(version == NULL || sp_uuid_is_valid(version, strlen(version)), SP_ERR_BAD_UUID);
    return SP_OK;
}

sp_error sp_keyring_find(const sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                         sp_keyring_entry *out) {
    SP_ENSURE(kr != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, version));
    sp_keyring *k = (sp_keyring *)(uintptr_t)kr;
    /* the two indexes hash differently: by version, or (tenant, channel) for the active one */
    const sp_kr_item *it = version ? sp_kr_find(k, tenant, channel, version) : sp_kr_active(k, tenant, channel);
    SP_ENSURE(it != NULL, SP_ERR_NOT_FOUND);
    *out = it->e;
    return SP_OK;
}

/* ---- changes ---- */
typedef struct {
    const char *tenant, *channel, *version;
    int64_t now;
    char *version_out;
    const sp_keyring_policy *policy;
    size_t rotated, retired;
} sp_kr_args;

/* Appends `fresh` (version and wrapped key filled in) as the channel's new
 * active key; the previous active one becomes decrypt-only. The caller has
 * made room (sp_grow). */
static void sp_kr_append_active(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                sp_kr_item *fresh) {
    sp_kr_item *old = sp_kr_active(kr, tenant, channel);
    if (old != NULL) {
        old->e.state = SP_KEYRING_DECRYPT_ONLY;
        old->e.deactivated = now;
    }
    memcpy(fresh->e.tenant, tenant, strlen(tenant) + 1);
    memcpy(fresh->e.channel, channel, strlen(channel) + 1);
    memcpy(fresh->e.master_key, sp_kms_key_id(kr->kms), strlen(sp_kms_key_id(kr->kms)) + 1);
    fresh->e.state = SP_KEYRING_ACTIVE;
    fresh->e.created = now;
    fresh->seq = kr->next_seq++;
    kr->items[kr->count++] = *fresh;
    kr->index_stale = true;
}

static sp_error sp_kr_do_rotate(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                char *version_out) {
    SP_GUARD(sp_grow((void **)&kr->items, &kr->cap, kr->count, sizeof *kr->items, SP_KEYRING_MAX_KEYS));
    sp_kr_item fresh;
    memset(&fresh, 0, sizeof fresh);
    fresh.wrapped = sp_malloc(SP_KMS_MAX_WRAPPED);
    SP_ENSURE(fresh.wrapped != NULL, SP_ERR_NO_MEMORY);
    sp_key *key = NULL;
    sp_error rc = sp_uuid_v4(fresh.e.version);
    if (rc == SP_OK) rc = sp_kms_generate_data_key(kr->kms, &key, fresh.wrapped, SP_KMS_MAX_WRAPPED, &fresh.wrapped_len);
    sp_key_free(key); /* only the wrapped form is kept */
    if (rc != SP_OK) {
        sp_free(fresh.wrapped);
        return rc;
    }
    sp_kr_append_active(kr, tenant, channel, now, &fresh);
    if (version_out != NULL) memcpy(version_out, fresh.e.version, SP_KEY_VERSION_CHARS + 1);
    return SP_OK;
}

static sp_error sp_kr_rotate_fn(sp_keyring *kr, void *arg) {
    sp_kr_args *a = arg;
    return sp_kr_do_rotate(kr, a->tenant, a->channel, a->now, a->version_out);
}

sp_error sp_keyring_rotate(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                           char version_out[SP_KEY_VERSION_CHARS + 1]) {
    SP_ENSURE(kr != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, NULL));
    sp_kr_args a = {.tenant = tenant, .channel = channel, .now = now, .version_out = version_out};
    return sp_kr_change(kr, sp_kr_rotate_fn, &a);
}

typedef struct {
    const char *tenant, *channel;
    int64_t now, max_age;
    char *version_out;
    bool rotated;
} sp_kr_maybe_args;

static sp_error sp_kr_rotate_if_older_fn(sp_keyring *kr, void *arg) {
    sp_kr_maybe_args *a = arg;
    sp_kr_item *active = sp_kr_active(kr, a->tenant, a->channel);
    a->rotated = active == NULL || a->now - active->e.created >= a->max_age;
    if (a->rotated) return sp_kr_do_rotate(kr, a->tenant, a->channel, a->now, a->version_out);
    memcpy(a->version_out, active->e.version, SP_KEY_VERSION_CHARS + 1);
    return SP_OK;
}

sp_error sp_keyring_rotate_if_older(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                    int64_t max_age_s, char version_out[SP_KEY_VERSION_CHARS + 1], bool *rotated) {
    SP_ENSURE(kr != NULL && version_out != NULL && now > 0 && max_age_s > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, NULL));
    /* the common case needs no lock and no write: a fresh active version */
    sp_kr_item *active = sp_kr_active(kr, tenant, channel);
    if (active != NULL && now - active->e.created < max_age_s) {
        memcpy(version_out, active->e.version, SP_KEY_VERSION_CHARS + 1);
        if (rotated) *rotated = false;
        return SP_OK;
    }
    sp_kr_maybe_args a = {.tenant = tenant, .channel = channel, .now = now, .max_age = max_age_s,
                          .version_out = version_out};
    SP_GUARD(sp_kr_change(kr, sp_kr_rotate_if_older_fn, &a));
    if (rotated) *rotated = a.rotated;
    return SP_OK;
}

/* The life cycle's one-step moves: each has exactly one state it leaves
 * from, so every other request is an illegal transition. */
typedef struct {
    sp_kr_args base;
    sp_keyring_state from, to;
} sp_kr_move;

static sp_error sp_kr_move_fn(sp_keyring *kr, void *arg) {
    sp_kr_move *m = arg;
    sp_kr_item *it = sp_kr_find(kr, m->base.tenant, m->base.channel, m->base.version);
    SP_ENSURE(it != NULL, SP_ERR_NOT_FOUND);
    SP_ENSURE(it->e.state == m->from, SP_ERR_ILLEGAL_TRANSITION);
    it->e.state = m->to;
    if (m->to == SP_KEYRING_RETIRED) it->e.retired = m->base.now;
    if (m->to == SP_KEYRING_DESTROYED) {
        sp_free_wiped(it->wrapped, it->wrapped_len);
        it->wrapped = NULL;
        it->wrapped_len = 0;
        it->e.master_key[0] = 0;
        it->e.destroyed = m->base.now;
    }
    return SP_OK;
}

static sp_error sp_kr_move_one(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                               int64_t now, sp_keyring_state from, sp_keyring_state to) {
    SP_ENSURE(kr != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, version));
    sp_kr_move m = {{.tenant = tenant, .channel = channel, .version = version, .now = now}, from, to};
    return sp_kr_change(kr, sp_kr_move_fn, &m);
}

sp_error sp_keyring_retire(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                           int64_t now) {
    return sp_kr_move_one(kr, tenant, channel, version, now, SP_KEYRING_DECRYPT_ONLY, SP_KEYRING_RETIRED);
}

sp_error sp_keyring_destroy(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                            int64_t now) {
    return sp_kr_move_one(kr, tenant, channel, version, now, SP_KEYRING_RETIRED, SP_KEYRING_DESTROYED);
}

static sp_error sp_kr_min_fn(sp_keyring *kr, void *arg) {
    sp_kr_args *a = arg;
    sp_kr_item *min = sp_kr_find(kr, a->tenant, a->channel, a->version);
    SP_ENSURE(min != NULL, SP_ERR_NOT_FOUND);
    SP_ENSURE(min->e.state == SP_KEYRING_ACTIVE || min->e.state == SP_KEYRING_DECRYPT_ONLY, SP_ERR_KEY_RETIRED);
    sp_kr_channel *c = sp_kr_chan(kr, a->tenant, a->channel);
    if (c == NULL) {
        SP_GUARD(sp_grow((void **)&kr->chans, &kr->chans_cap, kr->nchans, sizeof *kr->chans, SP_KEYRING_MAX_KEYS));
        c = &kr->chans[kr->nchans++];
        memset(c, 0, sizeof *c);
        memcpy(c->tenant, a->tenant, strlen(a->tenant) + 1);
        memcpy(c->channel, a->channel, strlen(a->channel) + 1);
    }
    SP_ENSURE(min->seq >= c->min_seq, SP_ERR_ILLEGAL_TRANSITION); /* the minimum only goes up */
    c->min_seq = min->seq;
    for (size_t i = 0; i < kr->count; i++) {
        sp_kr_item *it = &kr->items[i];
        if (it->seq < min->seq && it->e.state == SP_KEYRING_DECRYPT_ONLY && strcmp(it->e.tenant, a->tenant) == 0 &&
            strcmp(it->e.channel, a->channel) == 0) {
            it->e.state = SP_KEYRING_RETIRED;
            it->e.retired = a->now;
        }
    }
    return SP_OK;
}

sp_error sp_keyring_set_min_version(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                                    int64_t now) {
    SP_ENSURE(kr != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, version));
    sp_kr_args a = {.tenant = tenant, .channel = channel, .version = version, .now = now};
    return sp_kr_change(kr, sp_kr_min_fn, &a);
}

/* Channels whose life cycle their owner runs (the PII vault rotates its
 * DEKs by age itself, and its index keys must never rotate, or lookups
 * would stop matching old rows): the schedule leaves them alone. */
static bool sp_kr_is_managed(const sp_kr_item *it) {
    return strncmp(it->e.channel, SP_KEYRING_MANAGED_PREFIX, strlen(SP_KEYRING_MANAGED_PREFIX)) == 0;
}

static sp_error sp_kr_maintain_fn(sp_keyring *kr, void *arg) {
    sp_kr_args *a = arg;
    a->rotated = a->retired = 0;
    size_t n = kr->count; /* rotation appends; new keys need no look */
    for (size_t i = 0; i < n; i++) {
        sp_kr_item *it = &kr->items[i];
        if (sp_kr_is_managed(it)) continue;
        if (it->e.state == SP_KEYRING_DECRYPT_ONLY && a->policy->overlap_s > 0 &&
            a->now - it->e.deactivated >= a->policy->overlap_s) {
            it->e.state = SP_KEYRING_RETIRED;
            it->e.retired = a->now;
            a->retired++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        sp_kr_item *it = &kr->items[i];
        if (sp_kr_is_managed(it)) continue;
        if (it->e.state == SP_KEYRING_ACTIVE && a->policy->rotate_after_s > 0 &&
            a->now - it->e.created >= a->policy->rotate_after_s) {
            char tenant[SP_KEYRING_MAX_NAME + 1], channel[SP_KEYRING_MAX_NAME + 1];
            memcpy(tenant, it->e.tenant, sizeof tenant);
            memcpy(channel, it->e.channel, sizeof channel);
            SP_GUARD(sp_kr_do_rotate(kr, tenant, channel, a->now, NULL)); /* may move items: no `it` after */
            a->rotated++;
        }
    }
    return SP_OK;
}

sp_error sp_keyring_maintain(sp_keyring *kr, const sp_keyring_policy *policy, int64_t now, size_t *rotated,
                             size_t *retired) {
    SP_ENSURE(kr != NULL && policy != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(policy->rotate_after_s >= 0 && policy->overlap_s >= 0, SP_ERR_INVALID_ARGUMENT);
    sp_kr_args a = {.now = now, .policy = policy};
    SP_GUARD(sp_kr_change(kr, sp_kr_maintain_fn, &a));
    if (rotated) *rotated = a.rotated;
    if (retired) *retired = a.retired;
    return SP_OK;
}

/* ---- using keys ---- */
static bool sp_kr_usable(sp_keyring *kr, const sp_kr_item *it) {
    if (it->e.state != SP_KEYRING_ACTIVE && it->e.state != SP_KEYRING_DECRYPT_ONLY) return false;
    const sp_kr_channel *c = sp_kr_chan(kr, it->e.tenant, it->e.channel);
    return c == NULL || it->seq >= c->min_seq;
}

sp_error sp_keyring_unwrap(sp_keyring *kr, const char *tenant, const char *channel, const char *version,
                           sp_key **out) {
    SP_ENSURE(kr != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, version));
    SP_ENSURE(kr->kms != NULL, SP_ERR_BAD_CONFIG);
    const sp_kr_item *it = sp_kr_find(kr, tenant, channel, version);
    SP_ENSURE(it != NULL, SP_ERR_NOT_FOUND);
    SP_ENSURE(sp_kr_usable(kr, it), SP_ERR_KEY_RETIRED);
    return sp_kms_unwrap_key(kr->kms, it->wrapped, it->wrapped_len, out);
}

sp_error sp_keyring_load_wire(sp_keyring *kr, const char *tenant, const char *channel, sp_wire *wire) {
    SP_ENSURE(kr != NULL && wire != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(kr->kms != NULL, SP_ERR_BAD_CONFIG);
    SP_GUARD(sp_kr_check_names(tenant, channel, NULL));
    SP_ENSURE(sp_kr_active(kr, tenant, channel) != NULL, SP_ERR_NOT_FOUND);
    for (size_t i = 0; i < kr->count; i++) {
        const sp_kr_item *it = &kr->items[i];
        if (strcmp(it->e.tenant, tenant) != 0 || strcmp(it->e.channel, channel) != 0 || !sp_kr_usable(kr, it))
            continue;
        sp_key *key = NULL;
        SP_GUARD(sp_kms_unwrap_key(kr->kms, it->wrapped, it->wrapped_len, &key));
        sp_error rc = sp_wire_add_key(wire, it->e.version, key, it->e.state == SP_KEYRING_ACTIVE);
        sp_key_free(key);
        if (rc == SP_ERR_EXISTS) rc = SP_OK; /* loaded before: same key, same name */
        SP_GUARD(rc);
        if (it->e.state == SP_KEYRING_ACTIVE) SP_GUARD(sp_wire_set_active(wire, it->e.version));
    }
    return SP_OK;
}

/* ---- master-key rotation ---- */
sp_error sp_keyring_rewrap(sp_keyring *kr, sp_kms *new_kms, size_t batch, sp_keyring_progress_fn progress, void *arg,
                           size_t *rewrapped) {
    SP_ENSURE(kr != NULL && new_kms != NULL && batch >= 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(kr->kms != NULL, SP_ERR_BAD_CONFIG);
    size_t done = 0;
    sp_error rc = SP_OK;
    for (;;) {
        /* One batch per locked read-change-write, so a crash loses at most
         * the batch in hand, and what was written is never redone. */
        SP_GUARD(kr->st.lock(kr->st.ctx));
        rc = sp_kr_load(kr);
        size_t total = 0, in_batch = 0;
        for (size_t i = 0; rc == SP_OK && i < kr->count; i++) {
            sp_kr_item *it = &kr->items[i];
            if (it->wrapped == NULL) continue;
            total++;
            if (sp_kms_owns(new_kms, it->wrapped, it->wrapped_len) || in_batch == batch) continue;
            sp_key *key = NULL;
            uint8_t fresh[SP_KMS_MAX_WRAPPED];
            size_t fresh_len = 0;
            rc = sp_kms_unwrap_key(kr->kms, it->wrapped, it->wrapped_len, &key);
            if (rc == SP_OK) rc = sp_kms_wrap_key(new_kms, key, fresh, sizeof fresh, &fresh_len);
            sp_key_free(key);
            if (rc == SP_OK) {
                memcpy(it->wrapped, fresh, fresh_len);
                it->wrapped_len = fresh_len;
                memcpy(it->e.master_key, sp_kms_key_id(new_kms), strlen(sp_kms_key_id(new_kms)) + 1);
                in_batch++;
            }
        }
        if (rc == SP_OK && in_batch > 0) rc = sp_kr_save(kr);
        SP_GUARD(sp_kr_unlock(kr, rc));
        done += in_batch;
        size_t left = 0;
        for (size_t i = 0; i < kr->count; i++) {
            if (kr->items[i].wrapped && !sp_kms_owns(new_kms, kr->items[i].wrapped, kr->items[i].wrapped_len)) left++;
        }
        if (progress != NULL && in_batch > 0) SP_GUARD(progress(arg, total - left, total));
        if (left == 0) break;
    }
    kr->kms = new_kms;
    if (rewrapped) *rewrapped = done;
    return SP_OK;
}

/* ==== Additions for the PII vault (src/vault/vault.c) ====
 *
 * Two operations the life cycle above cannot express, both kept apart here
 * so the rules of the provider keyring stay readable on their own.
 *
 * Erasing a channel walks every version of it to destroyed in one atomic
 * change, the active one included. It is the crypto-erase of a tenant's
 * vault: the step-by-step path (rotate, retire, destroy) would leave a
 * fresh active key behind, need the KMS to make it, and take several file
 * writes a crash could cut in between. Nothing here calls the KMS, so an
 * erase works while the KMS is down or the tenant has revoked it.
 *
 * Rotating with the key hands the new key back to the caller: with an
 * RSA-OAEP master key the wrap is done on this host, so a new data key can
 * be made and used while the HSM cannot unwrap anything. The key is made and
 * wrapped before the file's lock is taken, so a slow KMS does not hold up
 * other processes. */

typedef struct {
    const char *tenant, *channel;
    int64_t now;
    size_t erased;
} sp_kr_erase_args;

static sp_error sp_kr_erase_fn(sp_keyring *kr, void *arg) {
    sp_kr_erase_args *a = arg;
    a->erased = 0;
    for (size_t i = 0; i < kr->count; i++) {
        sp_kr_item *it = &kr->items[i];
        sp_keyring_entry *e = &it->e;
        if (e->state == SP_KEYRING_DESTROYED || strcmp(e->tenant, a->tenant) != 0 ||
            strcmp(e->channel, a->channel) != 0)
            continue;
        /* the record shows each stage passed, all at the moment of the erase */
        if (e->deactivated == 0) e->deactivated = a->now;
        if (e->retired == 0) e->retired = a->now;
        sp_free_wiped(it->wrapped, it->wrapped_len);
        it->wrapped = NULL;
        it->wrapped_len = 0;
        e->master_key[0] = 0;
        e->state = SP_KEYRING_DESTROYED;
        e->destroyed = a->now;
        a->erased++;
        kr->index_stale = true;
    }
    return SP_OK;
}

sp_error sp_keyring_erase_channel(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                  size_t *erased) {
    SP_ENSURE(kr != NULL && now > 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, NULL));
    sp_kr_erase_args a = {.tenant = tenant, .channel = channel, .now = now};
    SP_GUARD(sp_kr_change(kr, sp_kr_erase_fn, &a));
    if (erased) *erased = a.erased;
    return SP_OK;
}

typedef struct {
    const char *tenant, *channel;
    int64_t now;
    const char *version;
    uint8_t *wrapped; /* handed to the keyring once inserted */
    size_t wrapped_len;
} sp_kr_insert_args;

static sp_error sp_kr_insert_fn(sp_keyring *kr, void *arg) {
    sp_kr_insert_args *a = arg;
    SP_GUARD(sp_grow((void **)&kr->items, &kr->cap, kr->count, sizeof *kr->items, SP_KEYRING_MAX_KEYS));
    sp_kr_item fresh;
    memset(&fresh, 0, sizeof fresh);
    memcpy(fresh.e.version, a->version, SP_KEY_VERSION_CHARS + 1);
    fresh.wrapped = a->wrapped;
    fresh.wrapped_len = a->wrapped_len;
    sp_kr_append_active(kr, a->tenant, a->channel, a->now, &fresh);
    a->wrapped = NULL; /* the keyring owns it now, also if the save fails and the file is re-read */
    return SP_OK;
}

sp_error sp_keyring_rotate_with_key(sp_keyring *kr, const char *tenant, const char *channel, int64_t now,
                                    char version_out[SP_KEY_VERSION_CHARS + 1], sp_key **key_out) {
    SP_ENSURE(kr != NULL && now > 0 && version_out != NULL && key_out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kr_check_names(tenant, channel, NULL));
    SP_ENSURE(kr->kms != NULL, SP_ERR_BAD_CONFIG);
    char version[SP_KEY_VERSION_CHARS + 1];
    sp_kr_insert_args a = {.tenant = tenant, .channel = channel, .now = now, .version = version};
    a.wrapped = sp_malloc(SP_KMS_MAX_WRAPPED);
    SP_ENSURE(a.wrapped != NULL, SP_ERR_NO_MEMORY);
    sp_key *key = NULL;
    sp_error rc = sp_uuid_v4(version);
    if (rc == SP_OK) rc = sp_kms_generate_data_key(kr->kms, &key, a.wrapped, SP_KMS_MAX_WRAPPED, &a.wrapped_len);
    if (rc == SP_OK) rc = sp_kr_change(kr, sp_kr_insert_fn, &a);
    sp_free(a.wrapped); /* NULL once the keyring took it */
    if (rc != SP_OK) {
        sp_key_free(key);
        return rc;
    }
    memcpy(version_out, version, sizeof version);
    *key_out = key;
    return SP_OK;
}
