/*
 * Fuzz target for the compat body parser (sp_compat_body_parse), with
 * jansson as a second opinion.
 *
 * The parser has two paths: a hand-written recogniser for the exact bytes
 * sealpost writes, and jansson for any other JSON. Two parsers for one
 * format are where differential bugs hide (the fast path reading a member
 * jansson would reject, or returning a different string), so every accepted
 * body is re-parsed here with jansson under the same rules the protocol
 * states (an object, duplicate keys rejected) and the "ciphertext" and "iv"
 * strings must equal the spans returned. The other direction is checked
 * too: a JSON object jansson accepts with both members as strings must be
 * accepted, since the protocol says receivers take any such object. Strings
 * holding U+0000 are left out of that direction, as jansson only accepts
 * them on request. The spans must point into the body or the scratch
 * buffer, nowhere else.
 */
#include <stdint.h>

#include <jansson.h>

#include "fuzz_util.h"

#include "core/sp_core.h"
#include "wire/sp_wire_internal.h"

static bool fuzz_span_within(sp_span s, const uint8_t *base, size_t len) {
    uintptr_t p = (uintptr_t)s.data, b = (uintptr_t)base;
    if (s.len == 0) return true;
    return p >= b && p - b <= len && s.len <= len - (p - b);
}

static bool fuzz_json_plain_string(json_t *root, const char *key) {
    json_t *v = json_object_get(root, key);
    return json_is_string(v) && !fuzz_has_nul(json_string_value(v), json_string_length(v));
}

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *body = fuzz_dup(data, size);
    uint8_t *scratch = fuzz_alloc(size);
    sp_span ct = {0}, iv = {0};
    sp_error rc = sp_compat_body_parse(body, size, scratch, size, &ct, &iv);
    FUZZ_CHECK_PLAUSIBLE(rc);

    json_error_t err;
    json_t *root = json_loadb((const char *)body, size, JSON_REJECT_DUPLICATES, &err);
    if (rc == SP_OK) {
        FUZZ_CHECK(fuzz_span_within(ct, body, size) || fuzz_span_within(ct, scratch, size));
        FUZZ_CHECK(fuzz_span_within(iv, body, size) || fuzz_span_within(iv, scratch, size));
        FUZZ_CHECK(root != NULL);
        FUZZ_CHECK(json_is_object(root));
        FUZZ_CHECK(fuzz_json_string_is(root, "ciphertext", ct.data, ct.len));
        FUZZ_CHECK(fuzz_json_string_is(root, "iv", iv.data, iv.len));
    } else if (root != NULL && json_is_object(root) && fuzz_json_plain_string(root, "ciphertext") &&
               fuzz_json_plain_string(root, "iv")) {
        fprintf(stderr, "fuzz: jansson accepts this body but sp_compat_body_parse says %s\n",
                sp_error_name(rc));
        abort();
    }
    json_decref(root);
    free(scratch);
    free(body);
    return 0;
}
