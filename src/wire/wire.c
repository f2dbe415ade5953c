/*
 * Sealing and opening protocol messages (docs/PROTOCOL.md).
 *
 * An sp_wire holds the key versions a party knows. For each version it keeps,
 * created on first use, one cipher context per algorithm and one HMAC context
 * per signing key (a signing key is derived with HKDF from the AES key, the
 * version and the algorithm, so the signature binds all three), plus one
 * scratch buffer that grows to the largest message seen. After those first
 * uses a message costs no allocation at all.
 *
 * sp_open works in the order that keeps untrusted bytes away from parsers:
 * size, headers, timestamp window, HMAC over the raw body, and only then the
 * body is parsed and decrypted.
 */
#include <limits.h>

#include "wire/sp_wire_internal.h"

#define SP_WIRE_MACS 4 /* the three compat algorithms, then JWE */
#define SP_WIRE_MAC_JWE 3
#define SP_MAX_TIMESTAMP ((uint64_t)1 << 40)

typedef struct sp_wire_version {
    char name[SP_KEY_VERSION_CHARS + 1];
    sp_key *key;
    sp_cipher *cipher[3];
    sp_hmac *mac[SP_WIRE_MACS];
} sp_wire_version;

struct sp_wire {
    sp_wire_version *versions;
    size_t count;
    size_t cap;
    size_t active;
    bool has_active;
    size_t max_body;
    uint32_t tolerance_s;
    uint8_t *scratch;
    size_t scratch_cap;
};

static bool sp_alg_is_known(sp_alg alg) { return sp_alg_iv_bytes(alg) != 0; }

/* ---- names ---- */
const char *sp_profile_name(sp_profile profile) {
    switch (profile) {
    case SP_PROFILE_COMPAT: return "compat";
    case SP_PROFILE_JWE: return "jwe";
    default: return "unknown";
    }
}

sp_error sp_profile_from_name(const char *name, sp_profile *out) {
    SP_ENSURE(name != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    if (sp_ascii_ieq(name, strlen(name), "compat")) *out = SP_PROFILE_COMPAT;
    else if (sp_ascii_ieq(name, strlen(name), "jwe")) *out = SP_PROFILE_JWE;
    else return SP_ERR_INVALID_ARGUMENT;
    return SP_OK;
}

/* ---- the key set ---- */
sp_error sp_wire_new(sp_wire **out) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_wire *w = sp_calloc(1, sizeof *w);
    SP_ENSURE(w != NULL, SP_ERR_NO_MEMORY);
    w->max_body = SP_WIRE_DEFAULT_MAX_BODY;
    w->tolerance_s = SP_WIRE_DEFAULT_TOLERANCE_S;
    *out = w;
    return SP_OK;
}

static void sp_wire_version_clear(sp_wire_version *v) {
    sp_key_free(v->key);
    for (size_t i = 0; i < 3; i++) sp_cipher_free(v->cipher[i]);
    for (size_t i = 0; i < SP_WIRE_MACS; i++) sp_hmac_free(v->mac[i]);
    memset(v, 0, sizeof *v);
}

void sp_wire_free(sp_wire *w) {
    if (w == NULL) return;
    for (size_t i = 0; i < w->count; i++) sp_wire_version_clear(&w->versions[i]);
    sp_free(w->versions);
    sp_free_wiped(w->scratch, w->scratch_cap);
    sp_free(w);
}

static sp_wire_version *sp_wire_find(sp_wire *w, const char *name, size_t len) {
    if (len != SP_KEY_VERSION_CHARS) return NULL;
    for (size_t i = 0; i < w->count; i++) {
        if (memcmp(w->versions[i].name, name, SP_KEY_VERSION_CHARS) == 0) return &w->versions[i];
    }
    return NULL;
}

sp_error sp_wire_add_key(sp_wire *w, const char *version, const sp_key *key, bool make_active) {
    SP_ENSURE(w != NULL && version != NULL && key != NULL, SP_ERR_INVALID_ARGUMENT);
    size_t len = strlen(version);
    SP_ENSURE(sp_uuid_is_valid(version, len), SP_ERR_BAD_UUID);
    SP_ENSURE(sp_wire_find(w, version, len) == NULL, SP_ERR_EXISTS);
    SP_ENSURE(w->count < SP_WIRE_MAX_KEYS, SP_ERR_TOO_LARGE);
    if (w->count == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4;
        sp_wire_version *grown = sp_calloc(cap, sizeof *grown);
        SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
        if (w->count) memcpy(grown, w->versions, w->count * sizeof *grown);
        sp_free(w->versions);
        w->versions = grown;
        w->cap = cap;
    }
    sp_wire_version *v = &w->versions[w->count];
    memset(v, 0, sizeof *v);
    uint8_t raw[SP_KEY_BYTES];
    SP_GUARD(sp_key_export(key, raw));
    sp_error rc = sp_key_new(raw, sizeof raw, &v->key);
    sp_wipe(raw, sizeof raw);
    SP_GUARD(rc);
    memcpy(v->name, version, SP_KEY_VERSION_CHARS + 1);
    if (make_active || !w->has_active) {
        w->active = w->count;
        w->has_active = true;
    }
    w->count++;
    return SP_OK;
}

sp_error sp_wire_add_keyfile(sp_wire *wire, const sp_keyfile *file) {
    SP_ENSURE(wire != NULL && file != NULL, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < sp_keyfile_count(file); i++) {
        const char *version;
        const sp_key *key;
        sp_key_state state;
        SP_GUARD(sp_keyfile_entry(file, i, &version, &key, &state));
        SP_GUARD(sp_wire_add_key(wire, version, key, state == SP_KEY_STATE_ACTIVE));
    }
    return SP_OK;
}

sp_error sp_wire_set_active(sp_wire *w, const char *version) {
    SP_ENSURE(w != NULL && version != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_wire_version *v = sp_wire_find(w, version, strlen(version));
    SP_ENSURE(v != NULL, SP_ERR_UNKNOWN_KEY_VERSION);
    w->active = (size_t)(v - w->versions);
    w->has_active = true;
    return SP_OK;
}

const char *sp_wire_active_version(const sp_wire *w) {
    return (w != NULL && w->has_active) ? w->versions[w->active].name : NULL;
}

sp_error sp_wire_set_limits(sp_wire *w, size_t max_body, uint32_t tolerance_s) {
    SP_ENSURE(w != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(max_body >= 1 && max_body <= SP_WIRE_MAX_BODY_LIMIT, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(tolerance_s >= 1 && tolerance_s <= SP_WIRE_MAX_TOLERANCE_S, SP_ERR_INVALID_ARGUMENT);
    w->max_body = max_body;
    w->tolerance_s = tolerance_s;
    return SP_OK;
}

/* ---- per-version contexts, made on first use ---- */
static size_t sp_mac_slot(sp_profile profile, sp_alg alg) {
    return profile == SP_PROFILE_JWE ? SP_WIRE_MAC_JWE : (size_t)alg - 1;
}

static sp_error sp_derive_signing_key(const sp_wire_version *v, size_t slot, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    char info[SP_KEY_VERSION_CHARS + 1 + 16];
    sp_wbuf b = sp_wbuf_of(info, sizeof info);
    SP_GUARD(sp_wbuf_put(&b, v->name, SP_KEY_VERSION_CHARS));
    SP_GUARD(sp_wbuf_put_str(&b, "|"));
    SP_GUARD(sp_wbuf_put_str(&b, slot == SP_WIRE_MAC_JWE ? SP_JWE_SIGNING_ALG : sp_alg_name((sp_alg)(slot + 1))));
    return sp_hkdf_sha256(sp_key_bytes(v->key), SP_KEY_BYTES, (const uint8_t *)SP_WIRE_SALT, strlen(SP_WIRE_SALT),
                          (const uint8_t *)info, b.len, out, SP_HMAC_SHA256_BYTES);
}

static sp_error sp_version_mac(sp_wire_version *v, size_t slot, sp_hmac **out) {
    if (v->mac[slot] == NULL) {
        uint8_t k[SP_HMAC_SHA256_BYTES];
        sp_error rc = sp_derive_signing_key(v, slot, k);
        if (rc == SP_OK) rc = sp_hmac_new(k, sizeof k, &v->mac[slot]);
        sp_wipe(k, sizeof k);
        SP_GUARD(rc);
    }
    *out = v->mac[slot];
    return SP_OK;
}

static sp_error sp_version_cipher(sp_wire_version *v, sp_alg alg, sp_cipher **out) {
    size_t slot = (size_t)alg - 1;
    if (v->cipher[slot] == NULL) SP_GUARD(sp_cipher_new(v->key, alg, &v->cipher[slot]));
    *out = v->cipher[slot];
    return SP_OK;
}

static sp_error sp_wire_scratch(sp_wire *w, size_t need, uint8_t **out) {
    if (need < SP_AES_BLOCK_BYTES) need = SP_AES_BLOCK_BYTES; /* never a NULL buffer */
    if (w->scratch_cap < need) {
        uint8_t *grown = sp_malloc(need);
        SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
        sp_free_wiped(w->scratch, w->scratch_cap);
        w->scratch = grown;
        w->scratch_cap = need;
    }
    *out = w->scratch;
    return SP_OK;
}

sp_error sp_wire_signing_secret(sp_wire *w, const char *version, sp_profile profile, sp_alg alg, char *out,
                                size_t out_cap) {
    SP_ENSURE(w != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    if (profile == 0) profile = SP_PROFILE_COMPAT;
    if (alg == 0) alg = SP_ALG_AES_256_GCM;
    SP_ENSURE(profile == SP_PROFILE_COMPAT || profile == SP_PROFILE_JWE, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_alg_is_known(alg), SP_ERR_UNKNOWN_ALGORITHM);
    sp_wire_version *v = version ? sp_wire_find(w, version, strlen(version))
                                 : (w->has_active ? &w->versions[w->active] : NULL);
    SP_ENSURE(v != NULL, SP_ERR_UNKNOWN_KEY_VERSION);
    uint8_t k[SP_HMAC_SHA256_BYTES];
    SP_GUARD(sp_derive_signing_key(v, sp_mac_slot(profile, alg), k));
    sp_wbuf b = sp_wbuf_of(out, out_cap);
    sp_error rc = sp_wbuf_put_str(&b, "whsec_");
    if (rc == SP_OK) rc = sp_wbuf_put_b64(&b, k, sizeof k, false);
    sp_wipe(k, sizeof k);
    return rc;
}

/* ---- signing ---- */
static sp_error sp_sign(sp_hmac *mac, const char *id, size_t id_len, const char *ts, size_t ts_len,
                        const uint8_t *body, size_t body_len, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    SP_GUARD(sp_hmac_begin(mac));
    SP_GUARD(sp_hmac_update(mac, id, id_len));
    SP_GUARD(sp_hmac_update(mac, ".", 1));
    SP_GUARD(sp_hmac_update(mac, ts, ts_len));
    SP_GUARD(sp_hmac_update(mac, ".", 1));
    SP_GUARD(sp_hmac_update(mac, body, body_len));
    return sp_hmac_final(mac, out);
}

/* ---- seal ---- */
static const char sp_compat_prefix[] = "{\"ciphertext\":\"";
static const char sp_compat_middle[] = "\",\"iv\":\"";
static const char sp_compat_suffix[] = "\"}";
static const char sp_jwe_header_prefix[] = "{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"kid\":\"";

size_t sp_seal_body_bound(sp_profile profile, sp_alg alg, size_t plaintext_len) {
    if (profile == 0) profile = SP_PROFILE_COMPAT;
    if (alg == 0) alg = SP_ALG_AES_256_GCM;
    if (plaintext_len > SP_WIRE_MAX_BODY_LIMIT || !sp_alg_is_known(alg)) return 0;
    size_t ct = sp_alg_ciphertext_bytes(alg, plaintext_len);
    if (profile == SP_PROFILE_JWE) {
        if (alg != SP_ALG_AES_256_GCM) return 0;
        size_t header = sizeof sp_jwe_header_prefix - 1 + SP_KEY_VERSION_CHARS + 2;
        return sp_b64_encoded_len(header, true) + 4 + sp_b64_encoded_len(SP_GCM_IV_BYTES, true) +
               sp_b64_encoded_len(plaintext_len, true) + sp_b64_encoded_len(SP_GCM_TAG_BYTES, true) + 1;
    }
    return sizeof sp_compat_prefix + sizeof sp_compat_middle + sizeof sp_compat_suffix +
           sp_b64_encoded_len(ct, false) + sp_b64_encoded_len(SP_MAX_IV_BYTES, false) + 1;
}

typedef struct {
    sp_wbuf store;
    sp_sealed *out;
} sp_header_writer;

static sp_error sp_add_header(sp_header_writer *hw, const char *name, const char *value, size_t value_len) {
    SP_ENSURE(hw->out->n_headers < SP_SEALED_MAX_HEADERS, SP_ERR_BUFFER_TOO_SMALL);
    uint8_t *dst;
    SP_GUARD(sp_wbuf_reserve(&hw->store, value_len + 1, &dst));
    memcpy(dst, value, value_len);
    dst[value_len] = 0;
    sp_header *h = &hw->out->headers[hw->out->n_headers++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = (const char *)dst;
    h->value_len = value_len;
    return SP_OK;
}

static sp_error sp_seal_compat(sp_wire *w, sp_wire_version *v, sp_alg alg, const uint8_t *iv, const uint8_t *pt,
                               size_t pt_len, sp_wbuf *body, char *iv_b64, size_t iv_b64_cap) {
    size_t iv_len = sp_alg_iv_bytes(alg), ct_len = sp_alg_ciphertext_bytes(alg, pt_len), n = 0;
    sp_cipher *cipher;
    uint8_t *ct;
    SP_GUARD(sp_version_cipher(v, alg, &cipher));
    SP_GUARD(sp_wire_scratch(w, ct_len, &ct));
    SP_GUARD(sp_cipher_encrypt(cipher, iv, iv_len, NULL, 0, pt, pt_len, ct, ct_len, &n));
    SP_GUARD(sp_b64_encode(iv, iv_len, iv_b64, iv_b64_cap, &n, false));
    SP_GUARD(sp_wbuf_put_str(body, sp_compat_prefix));
    SP_GUARD(sp_wbuf_put_b64(body, ct, ct_len, false));
    SP_GUARD(sp_wbuf_put_str(body, sp_compat_middle));
    SP_GUARD(sp_wbuf_put(body, iv_b64, n));
    return sp_wbuf_put_str(body, sp_compat_suffix);
}

static sp_error sp_seal_jwe(sp_wire *w, sp_wire_version *v, const uint8_t *iv, const uint8_t *pt, size_t pt_len,
                            sp_wbuf *body) {
    char header[sizeof sp_jwe_header_prefix + SP_KEY_VERSION_CHARS + 2];
    sp_wbuf h = sp_wbuf_of(header, sizeof header);
    SP_GUARD(sp_wbuf_put_str(&h, sp_jwe_header_prefix));
    SP_GUARD(sp_wbuf_put(&h, v->name, SP_KEY_VERSION_CHARS));
    SP_GUARD(sp_wbuf_put_str(&h, "\"}"));
    SP_GUARD(sp_wbuf_put_b64(body, (const uint8_t *)header, h.len, true));
    size_t aad_len = body->len, n = 0;
    SP_GUARD(sp_wbuf_put_str(body, ".."));
    SP_GUARD(sp_wbuf_put_b64(body, iv, SP_GCM_IV_BYTES, true));
    SP_GUARD(sp_wbuf_put_str(body, "."));
    sp_cipher *cipher;
    uint8_t *ct;
    SP_GUARD(sp_version_cipher(v, SP_ALG_AES_256_GCM, &cipher));
    SP_GUARD(sp_wire_scratch(w, pt_len + SP_GCM_TAG_BYTES, &ct));
    SP_GUARD(sp_cipher_encrypt(cipher, iv, SP_GCM_IV_BYTES, body->data, aad_len, pt, pt_len, ct,
                               pt_len + SP_GCM_TAG_BYTES, &n));
    SP_GUARD(sp_wbuf_put_b64(body, ct, pt_len, true));
    SP_GUARD(sp_wbuf_put_str(body, "."));
    return sp_wbuf_put_b64(body, ct + pt_len, SP_GCM_TAG_BYTES, true);
}

static sp_error sp_seal_run(sp_wire *w, const sp_seal_params *params, const uint8_t *fixed_iv, const uint8_t *pt,
                            size_t pt_len, uint8_t *body_buf, size_t body_cap, sp_sealed *out) {
    sp_profile profile = params && params->profile ? params->profile : SP_PROFILE_COMPAT;
    sp_alg alg = params && params->alg ? params->alg : SP_ALG_AES_256_GCM;
    SP_ENSURE(profile == SP_PROFILE_COMPAT || profile == SP_PROFILE_JWE, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_alg_is_known(alg), SP_ERR_UNKNOWN_ALGORITHM);
    SP_ENSURE(profile == SP_PROFILE_COMPAT || alg == SP_ALG_AES_256_GCM, SP_ERR_UNKNOWN_ALGORITHM);
    SP_ENSURE(pt_len <= SP_WIRE_MAX_BODY_LIMIT, SP_ERR_TOO_LARGE);
    sp_wire_version *v = NULL;
    if (params && params->key_version) {
        v = sp_wire_find(w, params->key_version, strlen(params->key_version));
    } else if (w->has_active) {
        v = &w->versions[w->active];
    }
    SP_ENSURE(v != NULL, SP_ERR_UNKNOWN_KEY_VERSION);

    char id[SP_MESSAGE_ID_MAX + 1];
    size_t id_len;
    if (params && params->message_id) {
        id_len = strlen(params->message_id);
        SP_ENSURE(sp_message_id_is_valid(params->message_id, id_len), SP_ERR_BAD_MESSAGE_ID);
        memcpy(id, params->message_id, id_len);
    } else {
        uint8_t rnd[16];
        SP_GUARD(sp_random(rnd, sizeof rnd));
        memcpy(id, "msg_", 4);
        SP_GUARD(sp_b64_encode(rnd, sizeof rnd, id + 4, sizeof id - 4, &id_len, true));
        id_len += 4;
    }
    int64_t ts = params && params->timestamp ? params->timestamp : sp_now_seconds();
    SP_ENSURE(ts > 0 && (uint64_t)ts < SP_MAX_TIMESTAMP, SP_ERR_BAD_TIMESTAMP);
    char ts_text[21];
    sp_wbuf tsb = sp_wbuf_of(ts_text, sizeof ts_text);
    SP_GUARD(sp_wbuf_put_u64(&tsb, (uint64_t)ts));

    uint8_t iv[SP_MAX_IV_BYTES];
    size_t iv_len = profile == SP_PROFILE_JWE ? SP_GCM_IV_BYTES : sp_alg_iv_bytes(alg);
    if (fixed_iv != NULL) memcpy(iv, fixed_iv, iv_len);
    else SP_GUARD(sp_random(iv, iv_len));
    char iv_b64[32];
    sp_wbuf body = sp_wbuf_of(body_buf, body_cap);
    if (profile == SP_PROFILE_COMPAT) {
        SP_GUARD(sp_seal_compat(w, v, alg, iv, pt, pt_len, &body, iv_b64, sizeof iv_b64));
    } else {
        SP_GUARD(sp_seal_jwe(w, v, iv, pt, pt_len, &body));
    }

    sp_hmac *mac;
    uint8_t sig[SP_HMAC_SHA256_BYTES];
    SP_GUARD(sp_version_mac(v, sp_mac_slot(profile, alg), &mac));
    SP_GUARD(sp_sign(mac, id, id_len, ts_text, tsb.len, body.data, body.len, sig));
    char sig_text[4 + 48];
    size_t sig_len = 0;
    memcpy(sig_text, "v1,", 3);
    SP_GUARD(sp_b64_encode(sig, sizeof sig, sig_text + 3, sizeof sig_text - 3, &sig_len, false));

    out->n_headers = 0;
    sp_header_writer hw = {sp_wbuf_of(out->storage_, sizeof out->storage_), out};
    if (profile == SP_PROFILE_COMPAT) {
        SP_GUARD(sp_add_header(&hw, "Content-Type", "application/json", 16));
        SP_GUARD(sp_add_header(&hw, "X-AES-KEY-VERSION", v->name, SP_KEY_VERSION_CHARS));
        SP_GUARD(sp_add_header(&hw, "X-AES-ALGORITHM", sp_alg_name(alg), strlen(sp_alg_name(alg))));
        SP_GUARD(sp_add_header(&hw, "X-AES-IV", iv_b64, strlen(iv_b64)));
    } else {
        SP_GUARD(sp_add_header(&hw, "Content-Type", "application/jose", 16));
        SP_GUARD(sp_add_header(&hw, "X-AES-KEY-VERSION", v->name, SP_KEY_VERSION_CHARS));
    }
    SP_GUARD(sp_add_header(&hw, "webhook-id", id, id_len));
    SP_GUARD(sp_add_header(&hw, "webhook-timestamp", ts_text, tsb.len));
    SP_GUARD(sp_add_header(&hw, "webhook-signature", sig_text, sig_len + 3));
    out->body_len = body.len;
    return SP_OK;
}

sp_error sp_seal_with_iv(sp_wire *w, const sp_seal_params *params, const uint8_t *iv, const uint8_t *pt,
                         size_t pt_len, uint8_t *body, size_t body_cap, sp_sealed *out) {
    SP_ENSURE(w != NULL && out != NULL && body != NULL && (pt != NULL || pt_len == 0), SP_ERR_INVALID_ARGUMENT);
    sp_error rc = sp_seal_run(w, params, iv, pt, pt_len, body, body_cap, out);
    if (rc != SP_OK) {
        sp_wipe(body, body_cap);
        out->n_headers = 0;
        out->body_len = 0;
    }
    return rc;
}

sp_error sp_seal(sp_wire *w, const sp_seal_params *params, const uint8_t *pt, size_t pt_len, uint8_t *body,
                 size_t body_cap, sp_sealed *out) {
    return sp_seal_with_iv(w, params, NULL, pt, pt_len, body, body_cap, out);
}

/* ---- open ---- */
enum { SP_H_CONTENT_TYPE, SP_H_KEY_VERSION, SP_H_ALGORITHM, SP_H_IV, SP_H_ID, SP_H_TIMESTAMP, SP_H_SIGNATURE, SP_H_COUNT };
static const struct {
    const char *name;
    size_t len;
} sp_known_headers[SP_H_COUNT] = {
#define SP_KNOWN(s) {s, sizeof s - 1}
    SP_KNOWN("content-type"), SP_KNOWN("x-aes-key-version"), SP_KNOWN("x-aes-algorithm"), SP_KNOWN("x-aes-iv"),
    SP_KNOWN("webhook-id"),   SP_KNOWN("webhook-timestamp"), SP_KNOWN("webhook-signature"),
#undef SP_KNOWN
};

typedef struct {
    sp_span value[SP_H_COUNT];
    bool seen[SP_H_COUNT];
} sp_header_set;

static bool sp_is_ows(uint8_t ch) { return ch == ' ' || ch == '\t'; }

static sp_error sp_collect_headers(const sp_header *headers, size_t n, sp_header_set *set) {
    memset(set, 0, sizeof *set);
    SP_ENSURE(headers != NULL || n == 0, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++) {
        const sp_header *h = &headers[i];
        SP_ENSURE(h->name != NULL && (h->value != NULL || h->value_len == 0), SP_ERR_INVALID_ARGUMENT);
        for (size_t k = 0; k < SP_H_COUNT; k++) {
            if (h->name_len != sp_known_headers[k].len || !sp_ascii_ieq(h->name, h->name_len, sp_known_headers[k].name))
                continue;
            SP_ENSURE(!set->seen[k], SP_ERR_DUPLICATE_HEADER);
            SP_ENSURE(h->value_len <= SP_WIRE_MAX_HEADER_VALUE, SP_ERR_TOO_LARGE);
            sp_span s = {(const uint8_t *)h->value, h->value_len};
            while (s.len > 0 && sp_is_ows(s.data[0])) s.data++, s.len--;
            while (s.len > 0 && sp_is_ows(s.data[s.len - 1])) s.len--;
            set->value[k] = s;
            set->seen[k] = true;
        }
    }
    return SP_OK;
}

static sp_error sp_content_type_profile(sp_span ct, sp_profile *out) {
    sp_cursor c = sp_cursor_of(ct.data, ct.len);
    sp_span media;
    if (!sp_cursor_take_until(&c, ';', &media)) media = sp_cursor_rest(&c);
    while (media.len > 0 && sp_is_ows(media.data[media.len - 1])) media.len--;
    if (sp_ascii_ieq((const char *)media.data, media.len, "application/json")) *out = SP_PROFILE_COMPAT;
    else if (sp_ascii_ieq((const char *)media.data, media.len, "application/jose")) *out = SP_PROFILE_JWE;
    else return SP_ERR_BAD_CONTENT_TYPE;
    return SP_OK;
}

typedef struct {
    sp_profile profile;
    sp_alg alg;
    sp_wire_version *version;
    uint8_t iv[SP_MAX_IV_BYTES];
    size_t iv_len;
    uint64_t timestamp;
} sp_open_ctx;

static sp_error sp_open_headers(sp_wire *w, const sp_header_set *set, int64_t now, sp_open_ctx *ctx) {
    static const int required[] = {SP_H_CONTENT_TYPE, SP_H_KEY_VERSION, SP_H_ID, SP_H_TIMESTAMP, SP_H_SIGNATURE};
    for (size_t i = 0; i < SP_ARRAY_LEN(required); i++) SP_ENSURE(set->seen[required[i]], SP_ERR_MISSING_HEADER);
    SP_GUARD(sp_content_type_profile(set->value[SP_H_CONTENT_TYPE], &ctx->profile));

    sp_span ver = set->value[SP_H_KEY_VERSION];
    SP_ENSURE(sp_uuid_is_valid((const char *)ver.data, ver.len), SP_ERR_BAD_UUID);
    sp_span id = set->value[SP_H_ID];
    SP_ENSURE(sp_message_id_is_valid((const char *)id.data, id.len), SP_ERR_BAD_MESSAGE_ID);
    sp_span ts = set->value[SP_H_TIMESTAMP];
    SP_ENSURE(sp_parse_u64((const char *)ts.data, ts.len, SP_MAX_TIMESTAMP, &ctx->timestamp) == SP_OK,
              SP_ERR_BAD_TIMESTAMP);

    if (ctx->profile == SP_PROFILE_COMPAT) {
        ctx->alg = SP_ALG_AES_256_CBC; /* the seed's default when the header is absent */
        if (set->seen[SP_H_ALGORITHM]) {
            sp_span a = set->value[SP_H_ALGORITHM];
            SP_GUARD(sp_alg_from_name((const char *)a.data, a.len, &ctx->alg));
        }
        SP_ENSURE(set->seen[SP_H_IV], SP_ERR_MISSING_HEADER);
        sp_span iv = set->value[SP_H_IV];
        SP_ENSURE(iv.len <= sp_b64_encoded_len(SP_MAX_IV_BYTES, false), SP_ERR_BAD_IV_LENGTH);
        sp_error rc = sp_b64_decode((const char *)iv.data, iv.len, ctx->iv, sizeof ctx->iv, &ctx->iv_len, false);
        SP_ENSURE(rc != SP_ERR_BUFFER_TOO_SMALL, SP_ERR_BAD_IV_LENGTH); /* decodes to more than any IV */
        SP_GUARD(rc);
        SP_ENSURE(ctx->iv_len == sp_alg_iv_bytes(ctx->alg), SP_ERR_BAD_IV_LENGTH);
    } else {
        ctx->alg = SP_ALG_AES_256_GCM;
    }

    ctx->version = sp_wire_find(w, (const char *)ver.data, ver.len);
    SP_ENSURE(ctx->version != NULL, SP_ERR_UNKNOWN_KEY_VERSION);
    /* compared without subtracting from `now`, which the caller may set to
     * anything: ts < 2^40 and the tolerance <= 1 day cannot overflow */
    int64_t stamp = (int64_t)ctx->timestamp, tol = (int64_t)w->tolerance_s;
    SP_ENSURE(now >= stamp - tol && now <= stamp + tol, SP_ERR_STALE_TIMESTAMP);
    return SP_OK;
}

static sp_error sp_open_verify(sp_open_ctx *ctx, const sp_header_set *set, const uint8_t *body, size_t body_len) {
    sp_sig_list sigs;
    sp_span sv = set->value[SP_H_SIGNATURE];
    SP_GUARD(sp_sig_header_parse((const char *)sv.data, sv.len, &sigs));
    sp_hmac *mac;
    uint8_t expect[SP_HMAC_SHA256_BYTES];
    SP_GUARD(sp_version_mac(ctx->version, sp_mac_slot(ctx->profile, ctx->alg), &mac));
    sp_span id = set->value[SP_H_ID], ts = set->value[SP_H_TIMESTAMP];
    SP_GUARD(sp_sign(mac, (const char *)id.data, id.len, (const char *)ts.data, ts.len, body, body_len, expect));
    bool ok = false;
    for (size_t i = 0; i < sigs.count; i++) ok |= sp_ct_equal(expect, sigs.sig[i], sizeof expect);
    return ok ? SP_OK : SP_ERR_AUTH;
}

static sp_error sp_open_compat(sp_wire *w, sp_open_ctx *ctx, const sp_header_set *set, const uint8_t *body,
                               size_t body_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    /* scratch: [0, body_len) receives the strings when the body needs the
     * full JSON parser, [body_len, 2 body_len) the decoded ciphertext */
    uint8_t *scratch;
    SP_ENSURE(body_len <= SIZE_MAX / 2, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_wire_scratch(w, 2 * body_len, &scratch));
    sp_span ct_b64, iv_b64;
    SP_GUARD(sp_compat_body_parse(body, body_len, scratch, body_len, &ct_b64, &iv_b64));
    /* The IV header is outside the signature; the body's copy is inside it. */
    sp_span iv_header = set->value[SP_H_IV];
    SP_ENSURE(iv_b64.len == iv_header.len && memcmp(iv_b64.data, iv_header.data, iv_b64.len) == 0, SP_ERR_AUTH);
    uint8_t *ct = scratch + body_len;
    size_t ct_len = 0;
    SP_GUARD(sp_b64_decode((const char *)ct_b64.data, ct_b64.len, ct, body_len, &ct_len, false));
    sp_cipher *cipher;
    SP_GUARD(sp_version_cipher(ctx->version, ctx->alg, &cipher));
    return sp_cipher_decrypt(cipher, ctx->iv, ctx->iv_len, NULL, 0, ct, ct_len, out, out_cap, out_len);
}

static sp_error sp_open_jwe(sp_wire *w, sp_open_ctx *ctx, const uint8_t *body, size_t body_len, uint8_t *out,
                            size_t out_cap, size_t *out_len) {
    sp_jwe_parts parts;
    SP_GUARD(sp_jwe_split(body, body_len, &parts));
    char kid[SP_KEY_VERSION_CHARS + 1];
    SP_GUARD(sp_jwe_header_check(parts.protected_b64.data, parts.protected_b64.len, kid));
    SP_ENSURE(memcmp(kid, ctx->version->name, SP_KEY_VERSION_CHARS) == 0, SP_ERR_AUTH);
    size_t n = 0;
    SP_ENSURE(sp_b64_decode((const char *)parts.iv.data, parts.iv.len, ctx->iv, sizeof ctx->iv, &n, true) == SP_OK &&
                  n == SP_GCM_IV_BYTES,
              SP_ERR_BAD_JWE);
    ctx->iv_len = n;
    uint8_t *scratch;
    SP_GUARD(sp_wire_scratch(w, body_len, &scratch));
    size_t ct_len = 0, tag_len = 0;
    SP_ENSURE(sp_b64_decode((const char *)parts.ciphertext.data, parts.ciphertext.len, scratch, w->scratch_cap,
                            &ct_len, true) == SP_OK,
              SP_ERR_BAD_JWE);
    SP_ENSURE(sp_b64_decode((const char *)parts.tag.data, parts.tag.len, scratch + ct_len, w->scratch_cap - ct_len,
                            &tag_len, true) == SP_OK &&
                  tag_len == SP_GCM_TAG_BYTES,
              SP_ERR_BAD_JWE);
    sp_cipher *cipher;
    SP_GUARD(sp_version_cipher(ctx->version, SP_ALG_AES_256_GCM, &cipher));
    return sp_cipher_decrypt(cipher, ctx->iv, ctx->iv_len, parts.protected_b64.data, parts.protected_b64.len, scratch,
                             ct_len + tag_len, out, out_cap, out_len);
}

static sp_error sp_open_run(sp_wire *w, const sp_header *headers, size_t n_headers, const uint8_t *body,
                            size_t body_len, int64_t now, sp_open_check_fn check, void *check_arg, uint8_t *out,
                            size_t out_cap, size_t *out_len, sp_opened *info) {
    SP_ENSURE(body_len <= w->max_body, SP_ERR_TOO_LARGE);
    sp_header_set set;
    SP_GUARD(sp_collect_headers(headers, n_headers, &set));
    sp_open_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    SP_GUARD(sp_open_headers(w, &set, now ? now : sp_now_seconds(), &ctx));
    SP_GUARD(sp_open_verify(&ctx, &set, body, body_len));
    /* what the signature vouches for, before any decryption */
    sp_opened seen;
    seen.profile = ctx.profile;
    seen.alg = ctx.alg;
    seen.timestamp = (int64_t)ctx.timestamp;
    memcpy(seen.key_version, ctx.version->name, SP_KEY_VERSION_CHARS + 1);
    memcpy(seen.message_id, set.value[SP_H_ID].data, set.value[SP_H_ID].len);
    seen.message_id[set.value[SP_H_ID].len] = 0;
    if (check != NULL) SP_GUARD(check(check_arg, &seen));
    if (ctx.profile == SP_PROFILE_COMPAT) {
        SP_GUARD(sp_open_compat(w, &ctx, &set, body, body_len, out, out_cap, out_len));
    } else {
        SP_GUARD(sp_open_jwe(w, &ctx, body, body_len, out, out_cap, out_len));
    }
    if (info != NULL) *info = seen;
    return SP_OK;
}

sp_error sp_open_checked(sp_wire *w, const sp_header *headers, size_t n_headers, const uint8_t *body,
                         size_t body_len, int64_t now, sp_open_check_fn check, void *check_arg, uint8_t *out,
                         size_t out_cap, size_t *out_len, sp_opened *info) {
    SP_ENSURE(w != NULL && out_len != NULL && (body != NULL || body_len == 0) && (out != NULL || out_cap == 0),
              SP_ERR_INVALID_ARGUMENT);
    static const uint8_t empty[1];
    sp_error rc = sp_open_run(w, headers, n_headers, body ? body : empty, body_len, now, check, check_arg, out,
                              out_cap, out_len, info);
    if (rc != SP_OK) {
        sp_wipe(out, out_cap);
        *out_len = 0;
    }
    return rc;
}

sp_error sp_open(sp_wire *w, const sp_header *headers, size_t n_headers, const uint8_t *body, size_t body_len,
                 int64_t now, uint8_t *out, size_t out_cap, size_t *out_len, sp_opened *info) {
    return sp_open_checked(w, headers, n_headers, body, body_len, now, NULL, NULL, out, out_cap, out_len, info);
}
