/*
 * Fuzz target for the JWE profile's parsers: sp_jwe_split on the whole body,
 * then sp_jwe_header_check on the protected part it found.
 *
 * split: on success the five spans must lie in the body, in order, separated
 * by exactly one '.', cover the whole body, have an empty encrypted-key part
 * (alg "dir") and use only the base64url alphabet, which is what the later
 * stages assume without looking again.
 *
 * header check: the protected header decides which key and algorithm are
 * used, so an accepted header is re-read here with jansson (duplicate keys
 * rejected, as a JOSE header with two "alg" members is ambiguous) and must
 * say alg "dir", enc "A256GCM", carry no "zip" and no "crit", and have a kid
 * equal to the one copied out, a canonical lowercase UUID. Conversely, the
 * plainest header sealpost itself writes, exactly those three members with a
 * valid kid, must be accepted.
 *
 * The protected part is copied to its own exactly-sized buffer, so a read
 * past it is caught rather than landing in the '.' that follows.
 */
#include <stdint.h>

#include <jansson.h>

#include "fuzz_util.h"

#include "core/sp_core.h"
#include "wire/sp_wire_internal.h"

static void fuzz_check_split(const uint8_t *body, size_t len, const sp_jwe_parts *p) {
    const sp_span parts[5] = {p->protected_b64, p->encrypted_key, p->iv, p->ciphertext, p->tag};
    size_t pos = 0;
    for (size_t i = 0; i < 5; i++) {
        if (i > 0) {
            FUZZ_CHECK(pos < len && body[pos] == '.');
            pos++;
        }
        FUZZ_CHECK(parts[i].len == 0 || parts[i].data == body + pos);
        FUZZ_CHECK(parts[i].len <= len - pos);
        FUZZ_CHECK(parts[i].len == 0 || memchr(parts[i].data, '.', parts[i].len) == NULL);
        FUZZ_CHECK(sp_b64_alphabet_ok((const char *)body + pos, parts[i].len, true));
        pos += parts[i].len;
    }
    FUZZ_CHECK(pos == len);
    FUZZ_CHECK(p->encrypted_key.len == 0);
}

/* Re-reads an accepted protected header with jansson. */
static void fuzz_check_header_accepted(const char *b64, size_t len, const char kid[SP_KEY_VERSION_CHARS + 1]) {
    FUZZ_CHECK(memchr(kid, 0, SP_KEY_VERSION_CHARS + 1) != NULL);
    FUZZ_CHECK(strlen(kid) == SP_KEY_VERSION_CHARS);
    FUZZ_CHECK(sp_uuid_is_valid(kid, SP_KEY_VERSION_CHARS));

    size_t max = sp_b64_decoded_max(len);
    uint8_t *json = malloc(max);
    FUZZ_CHECK(json != NULL);
    size_t json_len = 0;
    FUZZ_CHECK(sp_b64_decode(b64, len, json, max, &json_len, true) == SP_OK);
    FUZZ_CHECK(json_len <= SP_JWE_MAX_HEADER);

    json_error_t err;
    json_t *root = json_loadb((const char *)json, json_len, JSON_REJECT_DUPLICATES, &err);
    FUZZ_CHECK(root != NULL);
    FUZZ_CHECK(json_is_object(root));
    FUZZ_CHECK(fuzz_json_string_is(root, "alg", "dir", 3));
    FUZZ_CHECK(fuzz_json_string_is(root, "enc", "A256GCM", 7));
    FUZZ_CHECK(fuzz_json_string_is(root, "kid", kid, SP_KEY_VERSION_CHARS));
    FUZZ_CHECK(json_object_get(root, "zip") == NULL);
    FUZZ_CHECK(json_object_get(root, "crit") == NULL);
    json_decref(root);
    free(json);
}

/* True when the header is exactly sealpost's own shape: alg, enc, kid and
 * nothing else, with the right values; such a header must be accepted. */
static bool fuzz_header_is_plainly_valid(const char *b64, size_t len) {
    size_t max = sp_b64_decoded_max(len);
    uint8_t *json = malloc(max);
    FUZZ_CHECK(json != NULL);
    size_t json_len = 0;
    bool valid = false;
    if (sp_b64_decode(b64, len, json, max, &json_len, true) == SP_OK && json_len <= SP_JWE_MAX_HEADER) {
        json_error_t err;
        json_t *root = json_loadb((const char *)json, json_len, JSON_REJECT_DUPLICATES, &err);
        json_t *kid = json_object_get(root, "kid");
        valid = root != NULL && json_is_object(root) && json_object_size(root) == 3 &&
                fuzz_json_string_is(root, "alg", "dir", 3) && fuzz_json_string_is(root, "enc", "A256GCM", 7) &&
                json_is_string(kid) && sp_uuid_is_valid(json_string_value(kid), json_string_length(kid));
        json_decref(root);
    }
    free(json);
    return valid;
}

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *body = fuzz_dup(data, size);
    sp_jwe_parts parts;
    memset(&parts, 0, sizeof parts);
    sp_error rc = sp_jwe_split(body, size, &parts);
    FUZZ_CHECK_PLAUSIBLE(rc);
    if (rc == SP_OK) {
        fuzz_check_split(body, size, &parts);

        char *prot = fuzz_dup(parts.protected_b64.data, parts.protected_b64.len);
        char kid[SP_KEY_VERSION_CHARS + 1];
        memset(kid, 0x5a, sizeof kid);
        rc = sp_jwe_header_check((const uint8_t *)prot, parts.protected_b64.len, kid);
        FUZZ_CHECK_PLAUSIBLE(rc);
        if (rc == SP_OK) {
            fuzz_check_header_accepted(prot, parts.protected_b64.len, kid);
        } else if (fuzz_header_is_plainly_valid(prot, parts.protected_b64.len)) {
            fprintf(stderr, "fuzz: plain protected header refused: %s\n", sp_error_name(rc));
            abort();
        }
        free(prot);
    }
    free(body);
    return 0;
}
