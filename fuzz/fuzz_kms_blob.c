/*
 * Fuzz target for the wrapped-key blob decoder (sp_kms_blob_decode,
 * src/kms/kms.c).
 *
 * Blobs come back from the keyring file and from the database, places an
 * attacker who cannot reach the master key may still be able to write, and
 * the decoder copies a length-prefixed key id into a fixed buffer. So: any
 * bytes either decode or give SP_ERR_AUTH (the single answer the API
 * promises for a malformed or tampered blob), and what decodes is exactly
 * one well-formed blob: a printable key id of 1..SP_KMS_MAX_KEY_ID bytes, a
 * payload of 1..SP_KMS_MAX_PAYLOAD bytes lying inside the input and ending
 * at its end, and re-encoding gives the very same bytes (the framing has one
 * spelling, so nothing can be smuggled past sp_kms_owns in slack bytes).
 */
#include "fuzz_util.h"

#include "kms/sp_kms.h"

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *in = fuzz_dup(data, size);
    sp_kms_blob blob;
    memset(&blob, 0, sizeof blob);
    sp_error rc = sp_kms_blob_decode(in, size, &blob);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_AUTH);
    if (rc == SP_OK) {
        size_t id_len = strnlen(blob.key_id, sizeof blob.key_id);
        FUZZ_CHECK(id_len >= 1 && id_len <= SP_KMS_MAX_KEY_ID);
        for (size_t i = 0; i < id_len; i++) FUZZ_CHECK(blob.key_id[i] > 0x20 && blob.key_id[i] < 0x7f);
        FUZZ_CHECK(blob.payload_len >= 1 && blob.payload_len <= SP_KMS_MAX_PAYLOAD);
        FUZZ_CHECK(blob.payload >= in && blob.payload + blob.payload_len == in + size);
        FUZZ_CHECK(size == 4 + id_len + 2 + blob.payload_len);
        FUZZ_CHECK(size <= SP_KMS_MAX_WRAPPED);

        uint8_t again[SP_KMS_MAX_WRAPPED];
        size_t again_len = 0;
        FUZZ_CHECK(sp_kms_blob_encode(&blob, again, sizeof again, &again_len) == SP_OK);
        FUZZ_CHECK(again_len == size && memcmp(again, in, size) == 0);
        /* and one byte less room is refused, never overrun */
        FUZZ_CHECK(sp_kms_blob_encode(&blob, again, size - 1, &again_len) == SP_ERR_BUFFER_TOO_SMALL);
    }
    free(in);
    return 0;
}
