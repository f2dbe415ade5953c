/*
 * Helpers shared by the libFuzzer harnesses in this directory.
 *
 * The harnesses check properties, not just "did not crash": a violated
 * property calls abort() through FUZZ_CHECK so libFuzzer saves the input as a
 * crash artifact, with a message saying which property failed. Inputs are
 * copied into exactly-sized heap blocks before they reach the library so
 * AddressSanitizer flags a read even one byte past a field, not just past the
 * whole fuzz input.
 *
 * The library routes jansson's allocations through a size-prefixed wiping
 * allocator once sp_init has run; harnesses that use jansson themselves must
 * therefore initialise the library before their first JSON call, or a JSON
 * value allocated by plain malloc would later be freed by the prefixed free.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sealpost/sealpost.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An exactly-sized heap copy; never NULL (abort on allocation failure, which
 * under the fuzzer's RSS limit would be a harness problem, not a finding). */
static inline void *fuzz_dup(const void *data, size_t len) {
    void *p = malloc(len ? len : 1);
    if (p == NULL) abort();
    if (len) memcpy(p, data, len);
    return p;
}

/* Library start-up, once per process, before any jansson use (see above). */
static inline void fuzz_init_library(void) {
    sp_error rc = sp_init();
    if (rc != SP_OK) {
        fprintf(stderr, "fuzz: sp_init failed: %s\n", sp_error_name(rc));
        abort();
    }
}

/* Error codes no input bytes should ever produce from a parser: the harness
 * passes valid arguments and enough room, the allocator does not fail, and
 * OpenSSL should not be driven into an internal error by data. */
static inline bool fuzz_error_is_plausible(sp_error rc) {
    return rc < SP_ERR__COUNT && rc != SP_ERR_INVALID_ARGUMENT && rc != SP_ERR_NO_MEMORY &&
           rc != SP_ERR_CRYPTO_BACKEND && rc != SP_ERR_BUFFER_TOO_SMALL && rc != SP_ERR_NOT_INITIALIZED &&
           rc != SP_ERR_SECURE_MEMORY && rc != SP_ERR_RANDOM;
}

/* FUZZ_CHECK(fuzz_error_is_plausible(rc)) with the code named in the report. */
#define FUZZ_CHECK_PLAUSIBLE(rc)                                                                   \
    do {                                                                                           \
        if (!fuzz_error_is_plausible(rc)) {                                                        \
            fprintf(stderr, "fuzz property violated: implausible error %s (%s:%d)\n",              \
                    sp_error_name(rc), __FILE__, __LINE__);                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline bool fuzz_has_nul(const char *s, size_t len) { return len != 0 && memchr(s, 0, len) != NULL; }

#endif
