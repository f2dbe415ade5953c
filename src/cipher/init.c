/*
 * Library start-up. OpenSSL 3 looks an algorithm up in its provider tables on
 * every implicit fetch, which costs more than sealing a small message, so
 * every algorithm sealpost uses is fetched exactly once here and kept for the
 * life of the process.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "cipher/sp_cipher.h"

static const char *const sp_aes_names[3][3] = {
    /* CBC, GCM, CTR for 128, 192, 256-bit keys */
    {"AES-128-CBC", "AES-128-GCM", "AES-128-CTR"},
    {"AES-192-CBC", "AES-192-GCM", "AES-192-CTR"},
    {"AES-256-CBC", "AES-256-GCM", "AES-256-CTR"},
};
static const char *const sp_wrap_names[3][2] = {
    {"AES-128-WRAP", "AES-128-WRAP-PAD"},
    {"AES-192-WRAP", "AES-192-WRAP-PAD"},
    {"AES-256-WRAP", "AES-256-WRAP-PAD"},
};

static struct {
    EVP_CIPHER *aes[3][3];
    EVP_CIPHER *wrap[3][2];
    EVP_MAC *hmac;
    EVP_KDF *hkdf;
} sp_algs;

/* Only success is remembered: a start-up that failed (say, for memory) is
 * tried again by the next call instead of failing the process for good. */
static atomic_bool sp_ready;
static pthread_mutex_t sp_init_lock = PTHREAD_MUTEX_INITIALIZER;

static void sp_release_all(void) {
    for (size_t k = 0; k < 3; k++) {
        for (size_t m = 0; m < 3; m++) EVP_CIPHER_free(sp_algs.aes[k][m]);
        for (size_t p = 0; p < 2; p++) EVP_CIPHER_free(sp_algs.wrap[k][p]);
    }
    EVP_MAC_free(sp_algs.hmac);
    EVP_KDF_free(sp_algs.hkdf);
    memset(&sp_algs, 0, sizeof sp_algs);
}

static sp_error sp_fetch_all(void) {
    SP_GUARD(sp_secure_heap_init());
    sp_json_use_wiping_allocator();
    for (size_t k = 0; k < 3; k++) {
        for (size_t m = 0; m < 3; m++) {
            sp_algs.aes[k][m] = EVP_CIPHER_fetch(NULL, sp_aes_names[k][m], NULL);
            SP_ENSURE(sp_algs.aes[k][m] != NULL, SP_ERR_CRYPTO_BACKEND);
        }
        for (size_t p = 0; p < 2; p++) {
            sp_algs.wrap[k][p] = EVP_CIPHER_fetch(NULL, sp_wrap_names[k][p], NULL);
            SP_ENSURE(sp_algs.wrap[k][p] != NULL, SP_ERR_CRYPTO_BACKEND);
        }
    }
    sp_algs.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    SP_ENSURE(sp_algs.hmac != NULL, SP_ERR_CRYPTO_BACKEND);
    sp_algs.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    SP_ENSURE(sp_algs.hkdf != NULL, SP_ERR_CRYPTO_BACKEND);
    return SP_OK;
}

sp_error sp_init(void) {
    if (atomic_load_explicit(&sp_ready, memory_order_acquire)) return SP_OK;
    pthread_mutex_lock(&sp_init_lock);
    sp_error rc = SP_OK;
    if (!atomic_load_explicit(&sp_ready, memory_order_relaxed)) {
        rc = sp_fetch_all();
        if (rc == SP_OK) {
            atomic_store_explicit(&sp_ready, true, memory_order_release);
        } else {
            sp_release_all();
            ERR_clear_error();
        }
    }
    pthread_mutex_unlock(&sp_init_lock);
    return rc;
}

sp_error sp_harden_process(void) {
    struct rlimit none = {0, 0};
    SP_ENSURE(setrlimit(RLIMIT_CORE, &none) == 0, SP_ERR_IO);
    SP_ENSURE(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0, SP_ERR_IO);
    return SP_OK;
}

static int sp_key_index(size_t key_len) {
    switch (key_len) {
    case 16: return 0;
    case 24: return 1;
    case 32: return 2;
    default: return -1;
    }
}

const EVP_CIPHER *sp_fetched_aes(sp_aes_mode mode, size_t key_len) {
    int k = sp_key_index(key_len);
    if (k < 0 || (unsigned)mode > SP_AES_CTR || sp_init() != SP_OK) return NULL;
    return sp_algs.aes[k][mode];
}

const EVP_CIPHER *sp_fetched_wrap(size_t key_len, bool pad) {
    int k = sp_key_index(key_len);
    if (k < 0 || sp_init() != SP_OK) return NULL;
    return sp_algs.wrap[k][pad ? 1 : 0];
}

EVP_MAC *sp_fetched_hmac(void) { return sp_init() == SP_OK ? sp_algs.hmac : NULL; }
EVP_KDF *sp_fetched_hkdf(void) { return sp_init() == SP_OK ? sp_algs.hkdf : NULL; }
