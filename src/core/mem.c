/*
 * Memory: every allocation of the library, and of OpenSSL and jansson once
 * sp_init has run, goes through one funnel. The funnel counts (a test proves
 * the message path allocates nothing) and can be told to fail the n-th call
 * (tests walk every allocation failure, SQLite-style). Secrets live in
 * OpenSSL's secure heap: mlocked, excluded from core dumps, guard-paged and
 * wiped on free.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "core/sp_core.h"

static atomic_uint_fast64_t sp_alloc_calls;
/* Set when an allocation of this thread failed, so a caller whose library
 * hides the cause (jansson) can still tell memory from malformed input. */
static _Thread_local bool sp_alloc_failed;
static atomic_uint_fast64_t sp_alloc_fail_at; /* absolute call number, 0 = never */

void sp_test_alloc_fail_at(uint64_t n) {
    uint64_t now = atomic_load_explicit(&sp_alloc_calls, memory_order_relaxed);
    atomic_store(&sp_alloc_fail_at, n ? now + n : 0);
}

uint64_t sp_test_alloc_count(void) { return atomic_load(&sp_alloc_calls); }

static bool sp_alloc_should_fail(void) {
    uint64_t call = atomic_fetch_add_explicit(&sp_alloc_calls, 1, memory_order_relaxed) + 1;
    uint64_t fail_at = atomic_load_explicit(&sp_alloc_fail_at, memory_order_relaxed);
    return fail_at != 0 && call == fail_at;
}

static void *sp_alloc_result(void *p) {
    if (p == NULL) sp_alloc_failed = true;
    return p;
}

void *sp_malloc(size_t n) {
    if (sp_alloc_should_fail()) return sp_alloc_result(NULL);
    return sp_alloc_result(malloc(n ? n : 1));
}

void *sp_calloc(size_t count, size_t size) {
    if (sp_alloc_should_fail()) return sp_alloc_result(NULL);
    return sp_alloc_result(calloc(count ? count : 1, size ? size : 1));
}

void sp_free(void *p) { free(p); }

void sp_free_wiped(void *p, size_t n) {
    if (p == NULL) return;
    sp_wipe(p, n);
    free(p);
}

void sp_wipe(void *p, size_t len) {
    if (p != NULL && len != 0) OPENSSL_cleanse(p, len);
}

bool sp_ct_equal(const void *a, const void *b, size_t len) { return CRYPTO_memcmp(a, b, len) == 0; }

/* ---- OpenSSL through the funnel ---- */
static void *sp_ossl_malloc(size_t n, const char *file, int line) {
    (void)file;
    (void)line;
    return sp_malloc(n);
}
static void *sp_ossl_realloc(void *p, size_t n, const char *file, int line) {
    (void)file;
    (void)line;
    if (sp_alloc_should_fail()) return sp_alloc_result(NULL);
    return sp_alloc_result(realloc(p, n ? n : 1));
}
static void sp_ossl_free(void *p, const char *file, int line) {
    (void)file;
    (void)line;
    free(p);
}

/* Must run before OpenSSL allocates anything; later calls are refused by
 * OpenSSL and harmless. */
__attribute__((constructor)) static void sp_mem_install_ossl_hooks(void) {
    (void)CRYPTO_set_mem_functions(sp_ossl_malloc, sp_ossl_realloc, sp_ossl_free);
}

/* ---- jansson: size-prefixed so free can wipe ---- */
typedef union {
    size_t size;
    max_align_t align;
} sp_json_prefix;

static void *sp_json_malloc(size_t n) {
    if (n > SIZE_MAX - sizeof(sp_json_prefix)) return NULL;
    sp_json_prefix *p = sp_malloc(sizeof(sp_json_prefix) + n);
    if (p == NULL) return NULL;
    p->size = n;
    return p + 1;
}

static void sp_json_free(void *ptr) {
    if (ptr == NULL) return;
    sp_json_prefix *p = (sp_json_prefix *)ptr - 1;
    sp_free_wiped(p, sizeof(sp_json_prefix) + p->size);
}

void sp_json_use_wiping_allocator(void) { json_set_alloc_funcs(sp_json_malloc, sp_json_free); }

sp_error sp_json_load(const void *data, size_t len, sp_error malformed, json_t **out) {
    json_error_t jerr;
    sp_alloc_failed = false;
    *out = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    /* jansson can also swallow a failed allocation and hand back a document
     * with a member missing: any failure during the parse voids it. */
    if (sp_alloc_failed) {
        json_decref(*out);
        *out = NULL;
        return SP_ERR_NO_MEMORY;
    }
    if (*out != NULL) return SP_OK;
    return json_error_code(&jerr) == json_error_out_of_memory ? SP_ERR_NO_MEMORY : malformed;
}

/* ---- secure heap ---- */
#define SP_SECURE_HEAP_BYTES ((size_t)1 << 20)
#define SP_SECURE_HEAP_MIN 16

sp_error sp_secure_heap_init(void) {
    if (CRYPTO_secure_malloc_initialized()) return SP_OK;
    /* 1: mapped, locked and guarded. 2: mapped but mlock/madvise failed, which
     * would let keys swap or dump, so it is refused like a failure. */
    int rc = CRYPTO_secure_malloc_init(SP_SECURE_HEAP_BYTES, SP_SECURE_HEAP_MIN);
    if (rc != 1) {
        if (rc == 2) (void)CRYPTO_secure_malloc_done();
        return SP_ERR_SECURE_MEMORY;
    }
    return SP_OK;
}

void *sp_secure_alloc(size_t n) {
    if (sp_alloc_should_fail()) return NULL;
    if (!CRYPTO_secure_malloc_initialized()) return NULL;
    return CRYPTO_secure_zalloc(n, __FILE__, __LINE__);
}

void sp_secure_free(void *p, size_t n) {
    if (p != NULL) CRYPTO_secure_clear_free(p, n, __FILE__, __LINE__);
}
