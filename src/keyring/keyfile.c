/*
 * The CLI's key file (docs/KEYFILE.md): JSON holding AES-256 provider keys by
 * UUID version, exactly one active.
 *
 * Reading refuses a file that other users can read or write, as ssh does for
 * private keys, and wipes the bytes it read once the keys sit in locked
 * memory. Writing takes an exclusive lock, writes a new file beside the old
 * one with mode 0600, syncs it and renames it over, so a crash leaves either
 * the old file or the new one, never half of either.
 */
#include <unistd.h>

#include <jansson.h>

#include "cipher/sp_cipher.h"
#include "sealpost/keyfile.h"

#define SP_KEYFILE_FORMAT "sealpost-keyfile"
#define SP_KEYFILE_VERSION 1

typedef struct {
    char version[SP_KEY_VERSION_CHARS + 1];
    sp_key *key;
    sp_key_state state;
    int64_t created;
} sp_keyfile_entry_t;

struct sp_keyfile {
    sp_keyfile_entry_t *entries;
    size_t count;
};

void sp_keyfile_free(sp_keyfile *f) {
    if (f == NULL) return;
    for (size_t i = 0; i < f->count; i++) sp_key_free(f->entries[i].key);
    sp_free(f->entries);
    sp_free(f);
}

size_t sp_keyfile_count(const sp_keyfile *f) { return f ? f->count : 0; }

sp_error sp_keyfile_entry(const sp_keyfile *f, size_t i, const char **version, const sp_key **key,
                          sp_key_state *state) {
    SP_ENSURE(f != NULL && i < f->count, SP_ERR_INVALID_ARGUMENT);
    if (version) *version = f->entries[i].version;
    if (key) *key = f->entries[i].key;
    if (state) *state = f->entries[i].state;
    return SP_OK;
}

static sp_error sp_keyfile_parse_entry(json_t *item, sp_keyfile_entry_t *e) {
    SP_ENSURE(json_is_object(item), SP_ERR_BAD_KEYFILE);
    json_t *ver = json_object_get(item, "version"), *key = json_object_get(item, "key");
    json_t *state = json_object_get(item, "state"), *created = json_object_get(item, "created");
    SP_ENSURE(json_is_string(ver) && json_is_string(key) && json_is_string(state), SP_ERR_BAD_KEYFILE);
    SP_ENSURE(sp_uuid_is_valid(json_string_value(ver), json_string_length(ver)), SP_ERR_BAD_KEYFILE);
    memcpy(e->version, json_string_value(ver), SP_KEY_VERSION_CHARS + 1);
    if (strcmp(json_string_value(state), "active") == 0) e->state = SP_KEY_STATE_ACTIVE;
    else if (strcmp(json_string_value(state), "decrypt-only") == 0) e->state = SP_KEY_STATE_DECRYPT_ONLY;
    else return SP_ERR_BAD_KEYFILE;
    SP_ENSURE(created == NULL || json_is_integer(created), SP_ERR_BAD_KEYFILE);
    e->created = created ? (int64_t)json_integer_value(created) : 0;
    uint8_t raw[SP_KEY_BYTES + 3];
    size_t n = 0;
    sp_error rc = sp_b64_decode(json_string_value(key), json_string_length(key), raw, sizeof raw, &n, false);
    if (rc == SP_ERR_BUFFER_TOO_SMALL || (rc == SP_OK && n != SP_KEY_BYTES)) rc = SP_ERR_BAD_KEY_LENGTH;
    if (rc == SP_OK) rc = sp_key_new(raw, SP_KEY_BYTES, &e->key);
    sp_wipe(raw, sizeof raw);
    if (rc == SP_ERR_BAD_BASE64) rc = SP_ERR_BAD_KEYFILE;
    return rc;
}

sp_error sp_keyfile_parse(const uint8_t *data, size_t len, sp_keyfile **out) {
    SP_ENSURE(data != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len <= SP_KEYFILE_MAX_BYTES, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_init());
    json_t *root = NULL;
    SP_GUARD(sp_json_load(data, len, SP_ERR_BAD_KEYFILE, &root));
    sp_error rc = SP_OK;
    size_t n = 0;
    sp_keyfile *f = sp_calloc(1, sizeof *f);
    SP_ENSURE_GOTO(f != NULL, SP_ERR_NO_MEMORY, rc, done);
    json_t *format = json_object_get(root, "format"), *version = json_object_get(root, "version");
    json_t *keys = json_object_get(root, "keys");
    SP_ENSURE_GOTO(json_is_object(root) && json_is_string(format) &&
                       strcmp(json_string_value(format), SP_KEYFILE_FORMAT) == 0 && json_is_integer(version) &&
                       json_integer_value(version) == SP_KEYFILE_VERSION && json_is_array(keys),
                   SP_ERR_BAD_KEYFILE, rc, done);
    n = json_array_size(keys);
    size_t active = 0;
    SP_ENSURE_GOTO(n >= 1 && n <= SP_KEYFILE_MAX_KEYS, SP_ERR_BAD_KEYFILE, rc, done);
    f->entries = sp_calloc(n, sizeof *f->entries);
    SP_ENSURE_GOTO(f->entries != NULL, SP_ERR_NO_MEMORY, rc, done);
    for (size_t i = 0; i < n; i++) {
        SP_GUARD_GOTO(sp_keyfile_parse_entry(json_array_get(keys, i), &f->entries[i]), rc, done);
        f->count = i + 1;
        for (size_t j = 0; j < i; j++) {
            SP_ENSURE_GOTO(strcmp(f->entries[j].version, f->entries[i].version) != 0, SP_ERR_BAD_KEYFILE, rc, done);
        }
        if (f->entries[i].state == SP_KEY_STATE_ACTIVE) active++;
    }
    SP_ENSURE_GOTO(active == 1, SP_ERR_BAD_KEYFILE, rc, done);
done:
    json_decref(root);
    if (rc != SP_OK) {
        /* a partly parsed entry may hold a key */
        if (f != NULL && f->entries != NULL && f->count < n && f->entries[f->count].key != NULL) f->count++;
        sp_keyfile_free(f);
        return rc;
    }
    *out = f;
    return SP_OK;
}

sp_error sp_keyfile_load(const char *path, sp_keyfile **out) {
    SP_ENSURE(path != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t *buf = NULL;
    size_t len = 0;
    SP_GUARD(sp_file_read_private(path, SP_KEYFILE_MAX_BYTES, &buf, &len));
    sp_error rc = sp_keyfile_parse(buf, len, out);
    sp_free_wiped(buf, len + 1);
    return rc;
}

/* ---- writing ---- */
/* The file's text: the existing entries, then `extra` (may be NULL). When
 * extra is active, the previous active entry is written decrypt-only. */
static sp_error sp_keyfile_to_json(const sp_keyfile *f, const sp_keyfile_entry_t *extra, char **text) {
    json_t *keys = json_array();
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", SP_KEYFILE_FORMAT, "version", SP_KEYFILE_VERSION, "keys",
                             keys);
    SP_ENSURE(root != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = SP_OK;
    size_t total = f ? f->count : 0;
    for (size_t i = 0; i <= total && rc == SP_OK; i++) {
        const sp_keyfile_entry_t *e = i < total ? &f->entries[i] : extra;
        if (e == NULL) break;
        uint8_t raw[SP_KEY_BYTES];
        char b64[64];
        size_t n = 0;
        rc = sp_key_export(e->key, raw);
        if (rc == SP_OK) rc = sp_b64_encode(raw, sizeof raw, b64, sizeof b64, &n, false);
        sp_wipe(raw, sizeof raw);
        bool demoted = e != extra && extra != NULL && extra->state == SP_KEY_STATE_ACTIVE;
        const char *state = (e->state == SP_KEY_STATE_ACTIVE && !demoted) ? "active" : "decrypt-only";
        json_t *item = rc == SP_OK ? json_pack("{s:s, s:s, s:s, s:I}", "version", e->version, "key", b64, "state",
                                               state, "created", (json_int_t)e->created)
                                   : NULL;
        sp_wipe(b64, sizeof b64);
        if (rc == SP_OK && (item == NULL || json_array_append_new(keys, item) != 0)) rc = SP_ERR_NO_MEMORY;
    }
    if (rc == SP_OK) {
        /* sized first, then written into our own buffer, so the caller frees
         * it like any other and it is wiped */
        size_t need = json_dumpb(root, NULL, 0, JSON_INDENT(2));
        *text = need ? sp_malloc(need + 1) : NULL;
        if (*text == NULL) rc = SP_ERR_NO_MEMORY;
        else if (json_dumpb(root, *text, need, JSON_INDENT(2)) != need) rc = SP_ERR_NO_MEMORY;
        else (*text)[need] = 0;
        if (rc != SP_OK && *text != NULL) {
            sp_free_wiped(*text, need + 1);
            *text = NULL;
        }
    }
    json_decref(root); /* jansson's allocator wipes the key strings */
    return rc;
}

/* Under the file's lock: read, add, replace. */
static sp_error sp_keyfile_add_locked(const char *path, sp_keyfile_entry_t *fresh) {
    sp_keyfile *existing = NULL;
    sp_error rc = SP_OK;
    if (access(path, F_OK) == 0) rc = sp_keyfile_load(path, &existing);
    for (size_t i = 0; rc == SP_OK && existing != NULL && i < existing->count; i++) {
        const sp_keyfile_entry_t *e = &existing->entries[i];
        if (strcmp(e->version, fresh->version) != 0) continue;
        bool same = sp_ct_equal(sp_key_bytes(e->key), sp_key_bytes(fresh->key), SP_KEY_BYTES);
        sp_keyfile_free(existing);
        return same ? SP_OK : SP_ERR_EXISTS;
    }
    if (existing == NULL) fresh->state = SP_KEY_STATE_ACTIVE; /* a file holds one active key */
    char *text = NULL;
    if (rc == SP_OK) rc = sp_keyfile_to_json(existing, fresh, &text);
    if (rc == SP_OK) rc = sp_file_replace(path, (const uint8_t *)text, strlen(text));
    if (text != NULL) sp_free_wiped(text, strlen(text) + 1);
    sp_keyfile_free(existing);
    return rc;
}

static sp_error sp_keyfile_add_entry(const char *path, sp_keyfile_entry_t *fresh) {
    int lock = -1;
    SP_GUARD(sp_file_lock(path, &lock));
    sp_error rc = sp_keyfile_add_locked(path, fresh);
    sp_file_unlock(lock);
    return rc;
}

sp_error sp_keyfile_generate(const char *path, char version_out[37]) {
    SP_ENSURE(path != NULL && version_out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_keyfile_entry_t fresh = {.state = SP_KEY_STATE_ACTIVE, .created = sp_now_seconds()};
    sp_error rc = sp_uuid_v4(fresh.version);
    if (rc == SP_OK) rc = sp_key_generate(&fresh.key);
    if (rc == SP_OK) rc = sp_keyfile_add_entry(path, &fresh);
    if (rc == SP_OK) memcpy(version_out, fresh.version, SP_KEY_VERSION_CHARS + 1);
    sp_key_free(fresh.key);
    return rc;
}

sp_error sp_keyfile_derive_active(const char *path, const char *salt, const char *info, sp_key **out) {
    SP_ENSURE(path != NULL && salt != NULL && info != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    if (access(path, F_OK) != 0) {
        char version[SP_KEY_VERSION_CHARS + 1];
        SP_GUARD(sp_keyfile_generate(path, version));
    }
    sp_keyfile *kf = NULL;
    SP_GUARD(sp_keyfile_load(path, &kf));
    sp_error rc = SP_ERR_BAD_KEYFILE;
    for (size_t i = 0; i < sp_keyfile_count(kf); i++) {
        const char *version;
        const sp_key *key;
        sp_key_state state;
        if (sp_keyfile_entry(kf, i, &version, &key, &state) == SP_OK && state == SP_KEY_STATE_ACTIVE) {
            rc = sp_key_derive(key, (const uint8_t *)salt, strlen(salt), (const uint8_t *)info, strlen(info), out);
            break;
        }
    }
    sp_keyfile_free(kf);
    return rc;
}

sp_error sp_keyfile_add(const char *path, const char *version, const sp_key *key, bool make_active) {
    SP_ENSURE(path != NULL && version != NULL && key != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_uuid_is_valid(version, strlen(version)), SP_ERR_BAD_UUID);
    SP_GUARD(sp_init());
    sp_keyfile_entry_t fresh = {.state = make_active ? SP_KEY_STATE_ACTIVE : SP_KEY_STATE_DECRYPT_ONLY,
                                .created = sp_now_seconds()};
    memcpy(fresh.version, version, SP_KEY_VERSION_CHARS + 1);
    uint8_t raw[SP_KEY_BYTES];
    sp_error rc = sp_key_export(key, raw);
    if (rc == SP_OK) rc = sp_key_new(raw, sizeof raw, &fresh.key);
    sp_wipe(raw, sizeof raw);
    if (rc == SP_OK) rc = sp_keyfile_add_entry(path, &fresh);
    sp_key_free(fresh.key);
    return rc;
}
