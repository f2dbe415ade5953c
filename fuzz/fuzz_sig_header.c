/*
 * Fuzz target for the webhook-signature header parser (sp_sig_header_parse).
 *
 * The header is attacker-controlled and parsed before any authentication, so
 * besides memory safety the harness checks what sp_open relies on: never
 * more than SP_WIRE_MAX_SIGNATURES entries (the list is a fixed array), at
 * least one on success, failures reported as SP_ERR_BAD_SIGNATURE_HEADER, and
 * every returned signature really present in the input as an entry
 * "v1,<standard base64>" between single spaces, so the parser cannot invent
 * or mangle a signature it then compares against.
 */
#include "fuzz_util.h"

#include "core/sp_core.h"
#include "wire/sp_wire_internal.h"

/* True when "v1,<b64 of sig>" is one of the space-separated entries. */
static bool fuzz_entry_present(const char *value, size_t len, const uint8_t sig[SP_HMAC_SHA256_BYTES]) {
    char entry[3 + 45];
    size_t b64_len = 0;
    memcpy(entry, "v1,", 3);
    FUZZ_CHECK(sp_b64_encode(sig, SP_HMAC_SHA256_BYTES, entry + 3, sizeof entry - 3, &b64_len, false) == SP_OK);
    size_t entry_len = 3 + b64_len;
    size_t start = 0;
    while (start <= len) {
        const char *space = memchr(value + start, ' ', len - start);
        size_t end = space ? (size_t)(space - value) : len;
        if (end - start == entry_len && memcmp(value + start, entry, entry_len) == 0) return true;
        if (space == NULL) break;
        start = end + 1;
    }
    return false;
}

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *value = fuzz_dup(data, size);
    sp_sig_list list;
    memset(&list, 0xa5, sizeof list);
    sp_error rc = sp_sig_header_parse(value, size, &list);
    if (rc == SP_OK) {
        FUZZ_CHECK(list.count >= 1);
        FUZZ_CHECK(list.count <= SP_WIRE_MAX_SIGNATURES);
        for (size_t i = 0; i < list.count; i++) FUZZ_CHECK(fuzz_entry_present(value, size, list.sig[i]));
    } else {
        FUZZ_CHECK(rc == SP_ERR_BAD_SIGNATURE_HEADER);
    }
    free(value);
    return 0;
}
