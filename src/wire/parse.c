/*
 * Parsers for what arrives from the network: the webhook-signature header,
 * the webhook-id, the compat JSON body and the compact JWE. Each walks its
 * input with an sp_cursor, refuses anything outside its limits with a
 * specific error, and never trusts a length it did not check. sp_open calls
 * the body parsers only after the signature over the raw bytes has passed.
 */
#include <jansson.h>

#include "wire/sp_wire_internal.h"

bool sp_message_id_is_valid(const char *id, size_t len) {
    if (len == 0 || len > SP_MESSAGE_ID_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return false;
    }
    return true;
}

sp_error sp_sig_header_parse(const char *value, size_t len, sp_sig_list *out) {
    SP_ENSURE(value != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len <= SP_WIRE_MAX_HEADER_VALUE, SP_ERR_BAD_SIGNATURE_HEADER);
    out->count = 0;
    sp_cursor c = sp_cursor_of(value, len);
    while (sp_cursor_left(&c) > 0) {
        sp_span token;
        if (!sp_cursor_take_until(&c, ' ', &token)) token = sp_cursor_rest(&c);
        if (token.len == 0) continue; /* tolerate doubled spaces */
        sp_cursor t = sp_cursor_of(token.data, token.len);
        sp_span version;
        SP_ENSURE(sp_cursor_take_until(&t, ',', &version) && version.len >= 2 && version.data[0] == 'v',
                  SP_ERR_BAD_SIGNATURE_HEADER);
        sp_span sig = sp_cursor_rest(&t);
        SP_ENSURE(sig.len > 0, SP_ERR_BAD_SIGNATURE_HEADER);
        if (!(version.len == 2 && version.data[1] == '1')) continue; /* other schemes: not ours */
        SP_ENSURE(out->count < SP_WIRE_MAX_SIGNATURES, SP_ERR_BAD_SIGNATURE_HEADER);
        size_t n = 0;
        sp_error rc = sp_b64_decode((const char *)sig.data, sig.len, out->sig[out->count], SP_HMAC_SHA256_BYTES, &n,
                                    false);
        SP_ENSURE(rc == SP_OK && n == SP_HMAC_SHA256_BYTES, SP_ERR_BAD_SIGNATURE_HEADER);
        out->count++;
    }
    SP_ENSURE(out->count > 0, SP_ERR_BAD_SIGNATURE_HEADER);
    return SP_OK;
}

/* ---- compat body ---- */

/* True when a JSON parser would return these bytes unchanged as a string's
 * value: printable ASCII, no quote, no backslash. (Whether they are base64
 * is the decoder's business.) */
static bool sp_span_is_plain_json(sp_span s) {
    unsigned char bad = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = s.data[i];
        bad |= (unsigned char)(((unsigned char)(ch - 0x20) > 0x5eu) | (ch == '"') | (ch == '\\'));
    }
    return bad == 0;
}

/* The exact shape sealpost writes, recognised without a JSON parser or an
 * allocation. A fuzz target holds it to jansson's reading of the same bytes. */
static bool sp_compat_body_fast(const uint8_t *body, size_t len, sp_span *ct, sp_span *iv) {
    sp_cursor c = sp_cursor_of(body, len);
    if (!sp_cursor_accept(&c, "{\"ciphertext\":\"") || !sp_cursor_take_until(&c, '"', ct) ||
        !sp_span_is_plain_json(*ct))
        return false;
    if (!sp_cursor_accept(&c, ",\"iv\":\"") || !sp_cursor_take_until(&c, '"', iv) || !sp_span_is_plain_json(*iv))
        return false;
    return sp_cursor_accept(&c, "}") && sp_cursor_left(&c) == 0;
}

static sp_error sp_json_take_string(json_t *obj, const char *name, sp_wbuf *scratch, sp_span *out) {
    json_t *v = json_object_get(obj, name);
    SP_ENSURE(json_is_string(v), SP_ERR_BAD_JSON);
    size_t n = json_string_length(v);
    uint8_t *dst;
    SP_ENSURE(sp_wbuf_reserve(scratch, n, &dst) == SP_OK, SP_ERR_BAD_JSON);
    memcpy(dst, json_string_value(v), n);
    out->data = dst;
    out->len = n;
    return SP_OK;
}

sp_error sp_compat_body_parse(const uint8_t *body, size_t body_len, uint8_t *scratch, size_t scratch_cap,
                              sp_span *ciphertext_b64, sp_span *iv_b64) {
    SP_ENSURE(body != NULL && ciphertext_b64 != NULL && iv_b64 != NULL, SP_ERR_INVALID_ARGUMENT);
    if (sp_compat_body_fast(body, body_len, ciphertext_b64, iv_b64)) return SP_OK;
    SP_ENSURE(scratch != NULL && scratch_cap >= body_len, SP_ERR_BUFFER_TOO_SMALL);
    json_t *root = NULL;
    SP_GUARD(sp_json_load(body, body_len, SP_ERR_BAD_JSON, &root));
    sp_error rc = SP_ERR_BAD_JSON;
    sp_wbuf out = sp_wbuf_of(scratch, scratch_cap);
    if (json_is_object(root)) {
        rc = sp_json_take_string(root, "ciphertext", &out, ciphertext_b64);
        if (rc == SP_OK) rc = sp_json_take_string(root, "iv", &out, iv_b64);
    }
    json_decref(root);
    return rc;
}

/* ---- compact JWE ---- */

sp_error sp_jwe_split(const uint8_t *body, size_t body_len, sp_jwe_parts *out) {
    SP_ENSURE(body != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_cursor c = sp_cursor_of(body, body_len);
    sp_span *parts[5] = {&out->protected_b64, &out->encrypted_key, &out->iv, &out->ciphertext, &out->tag};
    for (size_t i = 0; i < 4; i++) {
        SP_ENSURE(sp_cursor_take_until(&c, '.', parts[i]), SP_ERR_BAD_JWE);
    }
    *parts[4] = sp_cursor_rest(&c);
    for (size_t i = 0; i < 5; i++) {
        SP_ENSURE(sp_b64_alphabet_ok((const char *)parts[i]->data, parts[i]->len, true), SP_ERR_BAD_JWE);
    }
    SP_ENSURE(out->protected_b64.len > 0 && out->iv.len > 0 && out->tag.len > 0, SP_ERR_BAD_JWE);
    SP_ENSURE(out->encrypted_key.len == 0, SP_ERR_BAD_JWE); /* alg "dir" carries no key */
    return SP_OK;
}

static bool sp_jwe_header_fast(const uint8_t *json, size_t len, char kid[SP_KEY_VERSION_CHARS + 1]) {
    sp_cursor c = sp_cursor_of(json, len);
    sp_span k;
    if (!sp_cursor_accept(&c, "{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"kid\":\"") || !sp_cursor_take_until(&c, '"', &k))
        return false;
    if (!sp_cursor_accept(&c, "}") || sp_cursor_left(&c) != 0) return false;
    if (!sp_uuid_is_valid((const char *)k.data, k.len)) return false;
    memcpy(kid, k.data, k.len);
    kid[k.len] = 0;
    return true;
}

static bool sp_json_string_is(json_t *obj, const char *name, const char *want) {
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) && json_string_length(v) == strlen(want) && strcmp(json_string_value(v), want) == 0;
}

sp_error sp_jwe_header_check(const uint8_t *protected_b64, size_t len, char kid[SP_KEY_VERSION_CHARS + 1]) {
    SP_ENSURE(protected_b64 != NULL && kid != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t json[SP_JWE_MAX_HEADER];
    size_t n = 0;
    SP_ENSURE(sp_b64_decode((const char *)protected_b64, len, json, sizeof json, &n, true) == SP_OK, SP_ERR_BAD_JWE);
    if (sp_jwe_header_fast(json, n, kid)) return SP_OK;
    json_t *root = NULL;
    SP_GUARD(sp_json_load(json, n, SP_ERR_BAD_JWE, &root));
    sp_error rc = SP_ERR_BAD_JWE;
    json_t *k = json_object_get(root, "kid");
    if (json_is_object(root) && sp_json_string_is(root, "alg", "dir") && sp_json_string_is(root, "enc", "A256GCM") &&
        json_object_get(root, "zip") == NULL && json_object_get(root, "crit") == NULL && json_is_string(k) &&
        sp_uuid_is_valid(json_string_value(k), json_string_length(k))) {
        memcpy(kid, json_string_value(k), SP_KEY_VERSION_CHARS);
        kid[SP_KEY_VERSION_CHARS] = 0;
        rc = SP_OK;
    }
    json_decref(root);
    return rc;
}
