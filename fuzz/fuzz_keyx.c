/*
 * Fuzz target for key-exchange import (include/sealpost/keyx.h): arbitrary
 * bytes as a JWE, opened with one fixed P-256 private key.
 *
 * The input is attacker-controlled all the way down: the split into five
 * parts, the protected header JSON, the ephemeral key (a point that must be
 * checked to be on the curve before any ECDH), the wrapped key and, only if
 * it authenticates, the JWK Set. A corrupted input must never crash, leak or
 * leave keys behind, and the error must be one a parser can honestly give.
 *
 * An accepted input must hold: 1..SP_KEYX_MAX_ITEMS items, each a distinct
 * canonical lowercase UUID with a key and a non-negative expiry. Those items
 * are then exported again to the same key and imported back, and must come
 * back identical, so what import accepts is always something export can
 * say.
 *
 * The key is fixed (below, made once with `openssl ecparam -name prime256v1
 * -genkey | openssl pkcs8 -topk8 -nocrypt`) so the seeds in
 * fuzz/corpus/fuzz_keyx/ stay decryptable: valid-* were written by
 * sp_keyx_export and jwcrypto-* by tests/integration/keyx_interop.py to its
 * public key, with exp 0 or in 2100, and bad-* are near misses of them. A
 * test key, public on purpose; it protects nothing.
 */
#include <stdint.h>

#include "fuzz_util.h"

#include "sealpost/keyx.h"

static const char fuzz_keyx_private_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLsHJ05SjdhQUVBtL\n"
                                            "10Dtp8kU7mLxph8G00u4fmguspihRANCAATVKIbVV+yMI7B/j6tp6BsKsFaA0bqX\n"
                                            "Ts3VWDA4RWBtU1J1ZBf763G2jYPsGSL8WcX3ixfLaWgwYeMMMl73bmYo\n"
                                            "-----END PRIVATE KEY-----\n";
static const char fuzz_keyx_public_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                           "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE1SiG1VfsjCOwf4+raegbCrBWgNG6\n"
                                           "l07N1VgwOEVgbVNSdWQX++txto2D7Bki/FnF94sXy2loMGHjDDJe925mKA==\n"
                                           "-----END PUBLIC KEY-----\n";

FUZZ_INITIALIZE_LIBRARY()

static void fuzz_check_items(const sp_keyx_item *items, size_t n) {
    FUZZ_CHECK(n >= 1 && n <= SP_KEYX_MAX_ITEMS);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(items[i].version[SP_KEY_VERSION_CHARS] == 0);
        FUZZ_CHECK(sp_uuid_is_valid(items[i].version, strlen(items[i].version)));
        FUZZ_CHECK(items[i].key != NULL);
        FUZZ_CHECK(items[i].expires >= 0);
        for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(items[i].version, items[j].version) != 0);
    }
}

/* Export what was accepted, import it again: the same versions, expiries
 * and key bytes. */
static void fuzz_check_round_trip(const sp_keyx_item *items, size_t n) {
    static char jwe[SP_KEYX_MAX_JWE_BYTES];
    size_t len = 0, again_n = 0;
    sp_error rc = sp_keyx_export(items, n, fuzz_keyx_public_pem, sizeof fuzz_keyx_public_pem - 1, NULL, jwe,
                                 sizeof jwe, &len);
    /* an entry that expired between the two calls is the only excuse */
    if (rc == SP_ERR_KEY_RETIRED) return;
    FUZZ_CHECK(rc == SP_OK);
    sp_keyx_item again[SP_KEYX_MAX_ITEMS];
    rc = sp_keyx_import(jwe, len, fuzz_keyx_private_pem, sizeof fuzz_keyx_private_pem - 1, again, SP_KEYX_MAX_ITEMS,
                        &again_n);
    if (rc == SP_ERR_KEY_RETIRED) return;
    FUZZ_CHECK(rc == SP_OK);
    FUZZ_CHECK(again_n == n);
    for (size_t i = 0; i < n; i++) {
        uint8_t a[SP_KEY_BYTES], b[SP_KEY_BYTES];
        FUZZ_CHECK(strcmp(items[i].version, again[i].version) == 0);
        FUZZ_CHECK(items[i].expires == again[i].expires);
        FUZZ_CHECK(sp_key_export(items[i].key, a) == SP_OK && sp_key_export(again[i].key, b) == SP_OK);
        FUZZ_CHECK(memcmp(a, b, SP_KEY_BYTES) == 0);
        sp_wipe(a, sizeof a);
        sp_wipe(b, sizeof b);
    }
    sp_keyx_items_free(again, again_n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *jwe = fuzz_dup(data, size);
    sp_keyx_item items[SP_KEYX_MAX_ITEMS];
    memset(items, 0, sizeof items);
    size_t n = 12345;
    sp_error rc = sp_keyx_import(jwe, size, fuzz_keyx_private_pem, sizeof fuzz_keyx_private_pem - 1, items,
                                 SP_KEYX_MAX_ITEMS, &n);
    if (rc == SP_OK) {
        fuzz_check_items(items, n);
        fuzz_check_round_trip(items, n);
        sp_keyx_items_free(items, n);
    } else {
        FUZZ_CHECK_PLAUSIBLE(rc);
        FUZZ_CHECK(n == 0);
        /* a failed import leaves no key behind in the caller's array */
        for (size_t i = 0; i < SP_KEYX_MAX_ITEMS; i++) FUZZ_CHECK(items[i].key == NULL);
    }
    free(jwe);
    return 0;
}
