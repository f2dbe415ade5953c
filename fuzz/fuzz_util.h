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
 * FUZZ_INITIALIZE_LIBRARY() is the LLVMFuzzerInitialize that does just that,
 * for the harnesses that need nothing more at start-up.
 *
 * Every harness used to spell out that start-up, its own exactly-sized
 * copies of the input and its own JSON member comparison; they share these
 * instead, so a harness file holds only what its target is checked for.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sealpost/sealpost.h"

/* libFuzzer's entry points; a harness defines the second and, when it has
 * start-up work, the first. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An exactly-sized heap block, uninitialised (one byte for len 0); never
 * NULL (abort on allocation failure, which under the fuzzer's RSS limit
 * would be a harness problem, not a finding). */
static inline void *fuzz_alloc(size_t len) {
    void *p = malloc(len ? len : 1);
    if (p == NULL) abort();
    return p;
}

/* An exactly-sized heap copy; never NULL. */
static inline void *fuzz_dup(const void *data, size_t len) {
    void *p = fuzz_alloc(len);
    if (len) memcpy(p, data, len);
    return p;
}

/* A heap copy with a NUL after it, the C string a caller would pass (an
 * embedded NUL ends that string early, as it would for the caller). */
static inline char *fuzz_dup_cstr(const void *data, size_t len) {
    char *p = fuzz_alloc(len + 1);
    if (len) memcpy(p, data, len);
    p[len] = 0;
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

/* The LLVMFuzzerInitialize of a harness whose only start-up is the library. */
#define FUZZ_INITIALIZE_LIBRARY()                                                                  \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                                            \
        (void)argc;                                                                                \
        (void)argv;                                                                                \
        fuzz_init_library();                                                                       \
        return 0;                                                                                  \
    }

static inline bool fuzz_has_nul(const char *s, size_t len) { return len != 0 && memchr(s, 0, len) != NULL; }

/* True when root's member key is a JSON string of exactly these len bytes
 * (jansson keeps the length, so an embedded U+0000 is compared too). */
static inline bool fuzz_json_string_is(json_t *root, const char *key, const void *want, size_t len) {
    json_t *v = json_object_get(root, key);
    return json_is_string(v) && json_string_length(v) == len &&
           (len == 0 || memcmp(json_string_value(v), want, len) == 0);
}

#endif
