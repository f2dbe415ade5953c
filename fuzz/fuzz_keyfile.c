/*
 * Fuzz target for the key file parser (sp_keyfile_parse).
 *
 * Key files are usually trusted, but they are JSON handed around between
 * teams and tools, and the parser puts secrets into locked memory, so a
 * malformed file must fail cleanly and free everything. On success the
 * harness walks the result and checks what the rest of sealpost assumes
 * without checking again: 1..SP_KEYFILE_MAX_KEYS entries, each version a
 * canonical lowercase UUID, no version twice (a version names one key),
 * exactly one active entry, every key exportable, and an index past the end
 * refused.
 */
#include "fuzz_util.h"

FUZZ_INITIALIZE_LIBRARY()

static void fuzz_check_keyfile(const sp_keyfile *kf) {
    size_t n = sp_keyfile_count(kf);
    FUZZ_CHECK(n >= 1 && n <= SP_KEYFILE_MAX_KEYS);
    size_t active = 0;
    const char **versions = calloc(n, sizeof *versions);
    FUZZ_CHECK(versions != NULL);
    for (size_t i = 0; i < n; i++) {
        const char *version = NULL;
        const sp_key *key = NULL;
        sp_key_state state = 0;
        FUZZ_CHECK(sp_keyfile_entry(kf, i, &version, &key, &state) == SP_OK);
        FUZZ_CHECK(version != NULL && key != NULL);
        FUZZ_CHECK(strlen(version) == SP_KEY_VERSION_CHARS && sp_uuid_is_valid(version, SP_KEY_VERSION_CHARS));
        FUZZ_CHECK(state == SP_KEY_STATE_ACTIVE || state == SP_KEY_STATE_DECRYPT_ONLY);
        if (state == SP_KEY_STATE_ACTIVE) active++;
        for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(versions[j], version) != 0);
        versions[i] = version;
        uint8_t bytes[SP_KEY_BYTES];
        FUZZ_CHECK(sp_key_export(key, bytes) == SP_OK);
        sp_wipe(bytes, sizeof bytes);
    }
    FUZZ_CHECK(active == 1);
    const char *version = NULL;
    const sp_key *key = NULL;
    sp_key_state state = 0;
    FUZZ_CHECK(sp_keyfile_entry(kf, n, &version, &key, &state) != SP_OK);
    free(versions);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *text = fuzz_dup(data, size);
    sp_keyfile *kf = NULL;
    sp_error rc = sp_keyfile_parse(text, size, &kf);
    FUZZ_CHECK_PLAUSIBLE(rc);
    if (rc == SP_OK) {
        FUZZ_CHECK(kf != NULL);
        fuzz_check_keyfile(kf);
        sp_keyfile_free(kf);
    }
    free(text);
    return 0;
}
