/*
 * The PKCS#11 backend: the tenant's master key lives in an HSM token (or
 * SoftHSM2 in tests) and never leaves it; sealpost only asks the token to
 * wrap and unwrap 32-byte data keys.
 *
 *   pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=LABEL;key=LABEL;
 *          pin-file=PATH | pin-env=VAR;[mechanism=aes-kwp|aes-gcm|rsa-oaep;]
 *          [oaep-decode=token|host;][create=1]
 *
 * The module is loaded with dlopen, so the library has no link-time PKCS#11
 * dependency, and it is loaded and C_Initialize'd once per process however
 * many sp_kms use it (a registry with a reference count), because a second
 * C_Initialize fails and an early C_Finalize would kill the other users'
 * sessions.
 *
 * Mechanisms, each chosen because it works with a master key that is
 * sensitive and non-extractable (open refuses any other):
 *  - aes-kwp: RFC 5649 (CKM_AES_KEY_WRAP_PAD). SoftHSM2 2.6 only offers it
 *    for C_WrapKey/C_UnwrapKey (C_EncryptInit answers CKR_MECHANISM_INVALID),
 *    the use the mechanism exists for, so the data key goes in as a
 *    short-lived session object and comes out of C_UnwrapKey as one that is
 *    readable for the moment it takes to copy it. (A token that refuses to
 *    unwrap into a non-sensitive key needs aes-gcm instead.)
 *  - aes-gcm: C_Encrypt/C_Decrypt, random 96-bit IV, 128-bit tag.
 *  - rsa-oaep: SHA-256 OAEP, MGF1-SHA-256. Wrapping is done on this host with
 *    the public key read at open, so new data keys can still be made while
 *    the HSM is unreachable; unwrapping is C_Decrypt in the token. Tokens
 *    that only do SHA-1 OAEP (SoftHSM2 2.6 answers CKR_ARGUMENTS_BAD to
 *    SHA-256 parameters) can opt into oaep-decode=host: raw RSA in the token,
 *    OAEP checked here in constant time by OpenSSL.
 *
 * Operations take a session from a small pool and give it back; one anchor
 * session per sp_kms keeps the login alive (PKCS#11 logs out when an
 * application's last session on a token closes). A session, login or key
 * handle that went stale (token removed, HSM restarted) drops the pool and
 * the anchor, and the call reconnects, logs in again and retries once; the
 * dispatcher's back-off handles the rest.
 */
/* Only for RSA_padding_check_PKCS1_OAEP_mgf1 (oaep-decode=host): OpenSSL 3
 * has no non-deprecated way to check OAEP padding apart from a private-key
 * decryption, and a hand-written constant-time decoder would be worse. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

/* pkg-config --cflags p11-kit-1 gives -I/usr/include/p11-kit-1; without it
 * the header is still found under /usr/include. */
#if __has_include(<p11-kit/pkcs11.h>)
#include <p11-kit/pkcs11.h>
#else
#include <p11-kit-1/p11-kit/pkcs11.h>
#endif

#include "kms/sp_kms.h"

#ifndef CKR_AEAD_DECRYPT_FAILED /* PKCS#11 3.0; p11-kit 0.24 predates it */
#define CKR_AEAD_DECRYPT_FAILED 0x35UL
#endif

#define SP_P11_MAX_PIN 256
#define SP_P11_IDLE_MAX 8
#define SP_P11_PIN_SLOTS 16
#define SP_P11_LABEL_MAX 32 /* CK_TOKEN_INFO.label */
#define SP_P11_KWP_BYTES 40 /* RFC 5649 of 32 bytes */
#define SP_P11_GCM_BYTES (SP_GCM_IV_BYTES + SP_KEY_BYTES + SP_GCM_TAG_BYTES)
#define SP_P11_RSA_MIN_BITS 2048
#define SP_P11_RSA_NEW_BITS 3072
#define SP_P11_RSA_MAX_BYTES SP_KMS_MAX_PAYLOAD
/* An op that failed on this side of the token: the sp_error is in op->rc.
 * A vendor-defined value; should a token ever return it, op->rc still holds
 * the SP_ERR_KMS_PROTOCOL it starts with, never success. */
#define SP_P11_RV_LOCAL (CKR_VENDOR_DEFINED | 0x5350u)

static const char *const sp_p11_options[] = {"module", "token", "pin-file", "pin-env", "key", "mechanism",
                                             "oaep-decode", NULL};

/* ---- the module registry ---- */
typedef struct sp_p11_pin_record {
    CK_SLOT_ID slot;
    bool set;
    uint8_t mac[SP_HMAC_SHA256_BYTES];
} sp_p11_pin_record;

typedef struct sp_p11_module {
    struct sp_p11_module *next;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    unsigned refs;
    bool finalize; /* we initialized it, so we finalize it */
    /* C_Login on a token this process is already logged in to answers
     * CKR_USER_ALREADY_LOGGED_IN without looking at the PIN, so a second
     * sp_kms with a wrong PIN would get in on the first one's login. A keyed
     * hash of each PIN that did log in lets the second be checked. */
    uint8_t mac_key[SP_HMAC_SHA256_BYTES];
    sp_p11_pin_record pins[SP_P11_PIN_SLOTS];
    size_t next_pin;
} sp_p11_module;

static pthread_mutex_t sp_p11_modules_lock = PTHREAD_MUTEX_INITIALIZER;
static sp_p11_module *sp_p11_modules;

static sp_error sp_p11_module_load(const char *path, sp_p11_module **out) {
    /* A relative name would go through the library search path. */
    SP_ENSURE(path[0] == '/', SP_ERR_BAD_CONFIG);
    struct stat st;
    SP_ENSURE(stat(path, &st) == 0 && S_ISREG(st.st_mode), SP_ERR_BAD_CONFIG);
    /* Code others may rewrite would run with our keys in memory. */
    SP_ENSURE((st.st_mode & 022) == 0, SP_ERR_INSECURE_PERMISSIONS);
    /* RTLD_NODELETE: modules commonly leave atexit handlers or threads
     * behind and crash the process if their code is unmapped. */
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    SP_ENSURE(dl != NULL, SP_ERR_BAD_CONFIG);
    void *sym = dlsym(dl, "C_GetFunctionList");
    CK_C_GetFunctionList get = NULL;
    if (sym != NULL) memcpy(&get, &sym, sizeof get); /* POSIX: same representation */
    CK_FUNCTION_LIST_PTR f = NULL;
    if (get == NULL || get(&f) != CKR_OK || f == NULL || f->version.major < 2) {
        dlclose(dl);
        return SP_ERR_BAD_CONFIG;
    }
    sp_error rc = SP_OK;
    pthread_mutex_lock(&sp_p11_modules_lock);
    sp_p11_module *m = sp_p11_modules;
    while (m != NULL && m->f != f) m = m->next;
    if (m != NULL) {
        m->refs++;
        dlclose(dl); /* the entry keeps its own handle */
    } else if ((m = sp_calloc(1, sizeof *m)) == NULL) {
        rc = SP_ERR_NO_MEMORY;
    } else if ((rc = sp_random(m->mac_key, sizeof m->mac_key)) == SP_OK) {
        /* The module must lock for itself: sessions are used from any thread. */
        CK_C_INITIALIZE_ARGS args;
        memset(&args, 0, sizeof args);
        args.flags = CKF_OS_LOCKING_OK;
        CK_RV rv = f->C_Initialize(&args);
        if (rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
            /* Already initialized by someone else in the process: theirs to
             * finalize. */
            m->finalize = rv == CKR_OK;
            m->dl = dl;
            m->f = f;
            m->refs = 1;
            m->next = sp_p11_modules;
            sp_p11_modules = m;
        } else {
            rc = rv == CKR_HOST_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_BAD_CONFIG;
        }
    }
    if (rc != SP_OK && m != NULL && m->refs == 0) {
        sp_wipe(m, sizeof *m);
        sp_free(m);
        m = NULL;
    }
    pthread_mutex_unlock(&sp_p11_modules_lock);
    if (rc != SP_OK && m == NULL) dlclose(dl);
    if (rc == SP_OK) *out = m;
    return rc;
}

static void sp_p11_module_unload(sp_p11_module *m) {
    if (m == NULL) return;
    pthread_mutex_lock(&sp_p11_modules_lock);
    if (--m->refs == 0) {
        sp_p11_module **p = &sp_p11_modules;
        while (*p != m) p = &(*p)->next;
        *p = m->next;
        if (m->finalize) (void)m->f->C_Finalize(NULL);
        dlclose(m->dl);
        sp_wipe(m, sizeof *m);
        sp_free(m);
    }
    pthread_mutex_unlock(&sp_p11_modules_lock);
}

static sp_error sp_p11_pin_mac(const sp_p11_module *m, const uint8_t *pin, size_t len,
                               uint8_t mac[SP_HMAC_SHA256_BYTES]) {
    return sp_hmac_sha256(m->mac_key, sizeof m->mac_key, pin, len, mac);
}

static void sp_p11_pin_remember(sp_p11_module *m, CK_SLOT_ID slot, const uint8_t *pin, size_t len) {
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    if (sp_p11_pin_mac(m, pin, len, mac) != SP_OK) return;
    pthread_mutex_lock(&sp_p11_modules_lock);
    sp_p11_pin_record *r = NULL;
    for (size_t i = 0; i < SP_P11_PIN_SLOTS && r == NULL; i++) {
        if (m->pins[i].set && m->pins[i].slot == slot) r = &m->pins[i];
    }
    if (r == NULL) r = &m->pins[m->next_pin++ % SP_P11_PIN_SLOTS];
    r->slot = slot;
    r->set = true;
    memcpy(r->mac, mac, sizeof mac);
    pthread_mutex_unlock(&sp_p11_modules_lock);
    sp_wipe(mac, sizeof mac);
}

/* True when the PIN is the one that logged in, or when nobody in sealpost
 * logged in to that slot (another part of the process did: nothing to
 * compare with). */
static bool sp_p11_pin_matches(sp_p11_module *m, CK_SLOT_ID slot, const uint8_t *pin, size_t len) {
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    if (sp_p11_pin_mac(m, pin, len, mac) != SP_OK) return false;
    bool ok = true;
    pthread_mutex_lock(&sp_p11_modules_lock);
    for (size_t i = 0; i < SP_P11_PIN_SLOTS; i++) {
        if (m->pins[i].set && m->pins[i].slot == slot) ok = sp_ct_equal(m->pins[i].mac, mac, sizeof mac);
    }
    pthread_mutex_unlock(&sp_p11_modules_lock);
    sp_wipe(mac, sizeof mac);
    return ok;
}

/* ---- state ---- */
typedef struct sp_p11_state {
    sp_p11_module *mod;
    CK_FUNCTION_LIST_PTR f;
    char module_path[PATH_MAX];
    char token[SP_P11_LABEL_MAX + 1];
    char key_label[SP_KMS_MAX_KEY_ID + 1];
    char pin_source[PATH_MAX]; /* a file, or an environment variable's name */
    bool pin_from_env;
    uint8_t mech; /* SP_KMS_MECH_* used for wrapping */
    bool oaep_host;
    /* rsa-oaep: the public half, fixed at open; a reconnect that finds a
     * different key under the label refuses it. */
    EVP_PKEY *pub;
    uint8_t modulus[SP_P11_RSA_MAX_BYTES];
    size_t modulus_len;

    pthread_mutex_t lock; /* guards what follows */
    bool ready;
    bool login_required; /* not guarded: set once at open */
    uint64_t gen; /* bumped on every disconnect, so stale sessions are not pooled */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE anchor;
    CK_OBJECT_HANDLE key; /* the AES key, or the RSA private key */
    CK_SESSION_HANDLE idle[SP_P11_IDLE_MAX];
    size_t n_idle;
} sp_p11_state;

typedef struct sp_p11_op {
    const uint8_t *dek; /* wrap: 32 bytes in */
    const uint8_t *in;  /* unwrap: payload in */
    size_t in_len;
    uint8_t *out; /* wrap: payload; unwrap: 32 bytes */
    size_t cap, out_len;
    sp_error rc;  /* with SP_P11_RV_LOCAL */
    bool discard; /* the session may hold leftovers: close it, do not pool it */
    /* describe */
    char *report;
    size_t report_cap;
} sp_p11_op;

typedef CK_RV (*sp_p11_fn)(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                           sp_p11_op *op);

static CK_RV sp_p11_local(sp_p11_op *op, sp_error rc) {
    op->rc = rc;
    return SP_P11_RV_LOCAL;
}

/* ---- error mapping ---- */
/* Handles that a reconnect may cure. */
static bool sp_p11_rv_stale(CK_RV rv) {
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
        return true;
    default:
        return false;
    }
}

/* The token's verdict on the input, not on itself. */
static bool sp_p11_rv_is_data(CK_RV rv) {
    switch (rv) {
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
    case CKR_DATA_INVALID:
    case CKR_DATA_LEN_RANGE:
    case CKR_AEAD_DECRYPT_FAILED:
        return true;
    default:
        return false;
    }
}

static sp_error sp_p11_map(CK_RV rv, bool unwrapping) {
    if (sp_p11_rv_is_data(rv)) return unwrapping ? SP_ERR_AUTH : SP_ERR_KMS_PROTOCOL;
    switch (rv) {
    case CKR_OK:
        return SP_OK;
    case CKR_HOST_MEMORY:
        return SP_ERR_NO_MEMORY;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_USER_NOT_LOGGED_IN: /* still, after a fresh login */
    case CKR_USER_PIN_NOT_INITIALIZED:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
    case CKR_USER_TOO_MANY_TYPES:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_ACTION_PROHIBITED:
    case CKR_FUNCTION_REJECTED:
        return SP_ERR_KMS_ACCESS_DENIED;
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
    case CKR_FUNCTION_CANCELED:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_COUNT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_PARALLEL_NOT_SUPPORTED:
    case CKR_SESSION_READ_ONLY:
    case CKR_SESSION_EXISTS:
    case CKR_SESSION_READ_ONLY_EXISTS:
    case CKR_SESSION_READ_WRITE_SO_EXISTS:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return SP_ERR_KMS_UNAVAILABLE;
    default:
        /* Mechanism, template or argument complaints: asking again would
         * get the same answer. */
        return SP_ERR_KMS_PROTOCOL;
    }
}

/* ---- small helpers ---- */
/* A blank-padded CK_UTF8CHAR field as a C string, non-printable bytes
 * replaced so a report line stays one line. */
static void sp_p11_field(const CK_UTF8CHAR *src, size_t n, char *dst, size_t cap) {
    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == 0)) n--;
    if (n >= cap) n = cap - 1;
    for (size_t i = 0; i < n; i++) dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    dst[n] = 0;
}

static bool sp_p11_label_is(const CK_UTF8CHAR label[32], const char *want) {
    size_t n = strlen(want);
    if (n > SP_P11_LABEL_MAX || memcmp(label, want, n) != 0) return false;
    for (size_t i = n; i < SP_P11_LABEL_MAX; i++) {
        if (label[i] != ' ') return false;
    }
    return true;
}

/* Blob key ids are printable ASCII without spaces: other bytes, '%' and the
 * '/' between the labels are percent-encoded, so a plain label appears as
 * itself and two label pairs never give the same id. */
static sp_error sp_p11_put_escaped(sp_wbuf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p > 0x20 && *p < 0x7f && *p != '%' && *p != '/') {
            SP_GUARD(sp_wbuf_put(b, p, 1));
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            SP_GUARD(sp_wbuf_put(b, e, sizeof e));
        }
    }
    return SP_OK;
}

static sp_error sp_p11_make_key_id(const sp_p11_state *st, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    sp_wbuf b = sp_wbuf_of(key_id, SP_KMS_MAX_KEY_ID + 1);
    sp_error rc = sp_wbuf_put_str(&b, "pkcs11:");
    if (rc == SP_OK) rc = sp_p11_put_escaped(&b, st->token);
    if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "/");
    if (rc == SP_OK) rc = sp_p11_put_escaped(&b, st->key_label);
    if (rc == SP_OK) rc = sp_wbuf_terminate(&b);
    return rc == SP_ERR_BUFFER_TOO_SMALL ? SP_ERR_BAD_CONFIG : rc;
}

static sp_error sp_p11_copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    SP_ENSURE(n > 0 && n < cap, SP_ERR_BAD_CONFIG);
    memcpy(dst, src, n + 1);
    return SP_OK;
}

/* ---- the PIN ---- */
/* Read when logging in and wiped straight after, so it is not held in
 * memory between logins; a re-login after a reconnect reads it again. */
static sp_error sp_p11_read_pin(const sp_p11_state *st, uint8_t pin[SP_P11_MAX_PIN], size_t *pin_len) {
    if (st->pin_from_env) {
        const char *v = getenv(st->pin_source);
        SP_ENSURE(v != NULL, SP_ERR_BAD_CONFIG);
        size_t n = strlen(v);
        SP_ENSURE(n > 0 && n <= SP_P11_MAX_PIN, SP_ERR_BAD_CONFIG);
        memcpy(pin, v, n);
        *pin_len = n;
        return SP_OK;
    }
    uint8_t *data = NULL;
    size_t n = 0;
    sp_error rc = sp_file_read_private(st->pin_source, SP_P11_MAX_PIN + 2, &data, &n);
    if (rc == SP_ERR_NOT_FOUND || rc == SP_ERR_TOO_LARGE) return SP_ERR_BAD_CONFIG;
    SP_GUARD(rc);
    size_t len = n; /* one trailing newline is the editor's, not the PIN's */
    if (len > 0 && data[len - 1] == '\n') len--;
    if (len > 0 && data[len - 1] == '\r') len--;
    if (len == 0 || len > SP_P11_MAX_PIN) rc = SP_ERR_BAD_CONFIG;
    else memcpy(pin, data, len);
    sp_free_wiped(data, n + 1);
    *pin_len = rc == SP_OK ? len : 0;
    return rc;
}

static sp_error sp_p11_login(sp_p11_state *st, CK_SESSION_HANDLE s, CK_SLOT_ID slot) {
    uint8_t pin[SP_P11_MAX_PIN];
    size_t n = 0;
    sp_error rc = sp_p11_read_pin(st, pin, &n);
    if (rc == SP_OK) {
        CK_RV rv = st->f->C_Login(s, CKU_USER, pin, (CK_ULONG)n);
        if (rv == CKR_OK) sp_p11_pin_remember(st->mod, slot, pin, n);
        else if (rv == CKR_USER_ALREADY_LOGGED_IN)
            rc = sp_p11_pin_matches(st->mod, slot, pin, n) ? SP_OK : SP_ERR_KMS_ACCESS_DENIED;
        else rc = sp_p11_map(rv, false);
    }
    sp_wipe(pin, sizeof pin);
    return rc;
}

/* ---- finding the token and the key ---- */
static sp_error sp_p11_find_slot(sp_p11_state *st, CK_SLOT_ID *slot, CK_TOKEN_INFO *info) {
    CK_FUNCTION_LIST_PTR f = st->f;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    CK_RV rv = CKR_OK;
    /* The list can grow between the two calls (a token plugged in). */
    for (int tries = 0; tries < 4; tries++) {
        rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
        if (rv != CKR_OK || n == 0) break;
        sp_free(slots);
        slots = sp_calloc(n, sizeof *slots);
        if (slots == NULL) {
            rv = CKR_HOST_MEMORY;
            break;
        }
        rv = f->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv != CKR_BUFFER_TOO_SMALL) break;
    }
    size_t found = 0;
    bool unreadable = false;
    for (CK_ULONG i = 0; rv == CKR_OK && slots != NULL && i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_RV trv = f->C_GetTokenInfo(slots[i], &ti);
        if (trv != CKR_OK) {
            unreadable = true; /* could be ours, broken */
        } else if (sp_p11_label_is(ti.label, st->token)) {
            found++;
            *slot = slots[i];
            *info = ti;
        }
    }
    sp_free(slots);
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    /* Two tokens with one label: which one a reconnect found would be luck. */
    SP_ENSURE(found <= 1, SP_ERR_BAD_CONFIG);
    if (found == 0) return unreadable ? SP_ERR_KMS_UNAVAILABLE : SP_ERR_NOT_FOUND;
    return SP_OK;
}

static sp_error sp_p11_check_mechanism(sp_p11_state *st, CK_SLOT_ID slot) {
    CK_MECHANISM_TYPE type = CKM_AES_KEY_WRAP_PAD;
    CK_FLAGS need = CKF_WRAP | CKF_UNWRAP;
    if (st->mech == SP_KMS_MECH_AES_GCM) {
        type = CKM_AES_GCM;
        need = CKF_ENCRYPT | CKF_DECRYPT;
    } else if (st->mech == SP_KMS_MECH_RSA_OAEP_SHA256) {
        type = st->oaep_host ? CKM_RSA_X_509 : CKM_RSA_PKCS_OAEP;
        need = CKF_DECRYPT;
    }
    CK_MECHANISM_INFO mi;
    CK_RV rv = st->f->C_GetMechanismInfo(slot, type, &mi);
    if (rv == CKR_MECHANISM_INVALID) return SP_ERR_BAD_CONFIG;
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    SP_ENSURE((mi.flags & need) == need, SP_ERR_BAD_CONFIG);
    return SP_OK;
}

static bool sp_p11_is_rsa(const sp_p11_state *st) { return st->mech == SP_KMS_MECH_RSA_OAEP_SHA256; }

/* RSA-OAEP wraps with the public half on this host: no token involved. */
static bool sp_p11_wrap_is_local(void *state) { return sp_p11_is_rsa(state); }

/* Up to two objects of a class and key type under the master key's label:
 * two is enough to tell "one" from "ambiguous". */
static sp_error sp_p11_find_labelled(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                                     CK_OBJECT_HANDLE found[2], CK_ULONG *n) {
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_LABEL, st->key_label, strlen(st->key_label)},
    };
    *n = 0;
    CK_RV rv = st->f->C_FindObjectsInit(s, tmpl, SP_ARRAY_LEN(tmpl));
    if (rv == CKR_OK) {
        rv = st->f->C_FindObjects(s, found, 2, n);
        CK_RV frv = st->f->C_FindObjectsFinal(s);
        if (rv == CKR_OK) rv = frv;
    }
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    return SP_OK;
}

static sp_error sp_p11_find_key(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *key) {
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    SP_GUARD(sp_p11_find_labelled(st, s, sp_p11_is_rsa(st) ? CKO_PRIVATE_KEY : CKO_SECRET_KEY,
                                  sp_p11_is_rsa(st) ? CKK_RSA : CKK_AES, found, &n));
    SP_ENSURE(n > 0, SP_ERR_NOT_FOUND);
    /* Two master keys under one label: which one wraps would be luck. */
    SP_ENSURE(n == 1, SP_ERR_BAD_CONFIG);
    *key = found[0];
    return SP_OK;
}

static sp_error sp_p11_create_key(sp_p11_state *st, CK_SLOT_ID slot) {
    CK_FUNCTION_LIST_PTR f = st->f;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG label_len = strlen(st->key_label);
    if (!sp_p11_is_rsa(st)) {
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_AES;
        CK_ULONG len = SP_KEY_BYTES;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof cls},        {CKA_KEY_TYPE, &kt, sizeof kt},
            {CKA_VALUE_LEN, &len, sizeof len},    {CKA_LABEL, st->key_label, label_len},
            {CKA_TOKEN, &yes, sizeof yes},        {CKA_PRIVATE, &yes, sizeof yes},
            {CKA_SENSITIVE, &yes, sizeof yes},    {CKA_EXTRACTABLE, &no, sizeof no},
            {CKA_WRAP, &yes, sizeof yes},         {CKA_UNWRAP, &yes, sizeof yes},
            {CKA_ENCRYPT, &yes, sizeof yes},      {CKA_DECRYPT, &yes, sizeof yes},
        };
        CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
        CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
        rv = f->C_GenerateKey(s, &gen, tmpl, SP_ARRAY_LEN(tmpl), &h);
    } else {
        CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
        CK_KEY_TYPE kt = CKK_RSA;
        CK_ULONG bits = SP_P11_RSA_NEW_BITS;
        CK_BYTE exponent[] = {0x01, 0x00, 0x01};
        CK_ATTRIBUTE pub[] = {
            {CKA_CLASS, &pub_cls, sizeof pub_cls},   {CKA_KEY_TYPE, &kt, sizeof kt},
            {CKA_LABEL, st->key_label, label_len},   {CKA_TOKEN, &yes, sizeof yes},
            {CKA_PRIVATE, &no, sizeof no},           {CKA_MODULUS_BITS, &bits, sizeof bits},
            {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent},
            {CKA_ENCRYPT, &yes, sizeof yes},         {CKA_VERIFY, &no, sizeof no},
        };
        /* Decrypt only: the key never signs, so it is no signing oracle. */
        CK_ATTRIBUTE priv[] = {
            {CKA_CLASS, &priv_cls, sizeof priv_cls}, {CKA_KEY_TYPE, &kt, sizeof kt},
            {CKA_LABEL, st->key_label, label_len},   {CKA_TOKEN, &yes, sizeof yes},
            {CKA_PRIVATE, &yes, sizeof yes},         {CKA_SENSITIVE, &yes, sizeof yes},
            {CKA_EXTRACTABLE, &no, sizeof no},       {CKA_DECRYPT, &yes, sizeof yes},
            {CKA_SIGN, &no, sizeof no},              {CKA_UNWRAP, &no, sizeof no},
        };
        CK_MECHANISM gen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
        CK_OBJECT_HANDLE hp = CK_INVALID_HANDLE, hs = CK_INVALID_HANDLE;
        rv = f->C_GenerateKeyPair(s, &gen, pub, SP_ARRAY_LEN(pub), priv, SP_ARRAY_LEN(priv), &hp, &hs);
    }
    (void)f->C_CloseSession(s);
    return sp_p11_map(rv, false);
}

/* Boolean attributes; an attribute the token does not have reads as false. */
static CK_RV sp_p11_bools(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const CK_ATTRIBUTE_TYPE *types,
                          bool *out, size_t n) {
    CK_BBOOL v[8];
    CK_ATTRIBUTE a[8];
    if (n > SP_ARRAY_LEN(a)) return CKR_ARGUMENTS_BAD;
    for (size_t i = 0; i < n; i++) {
        v[i] = CK_FALSE;
        a[i].type = types[i];
        a[i].pValue = &v[i];
        a[i].ulValueLen = sizeof v[i];
    }
    CK_RV rv = st->f->C_GetAttributeValue(s, h, a, (CK_ULONG)n);
    if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE) rv = CKR_OK;
    for (size_t i = 0; i < n; i++) out[i] = a[i].ulValueLen == sizeof v[i] && v[i] == CK_TRUE;
    return rv;
}

/* One byte-string attribute into buf; SP_ERR_NOT_FOUND when absent. */
static sp_error sp_p11_bytes(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                             uint8_t *buf, size_t cap, size_t *len) {
    CK_ATTRIBUTE a = {type, buf, (CK_ULONG)cap};
    CK_RV rv = st->f->C_GetAttributeValue(s, h, &a, 1);
    if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE) return SP_ERR_NOT_FOUND;
    if (rv == CKR_BUFFER_TOO_SMALL) return SP_ERR_KMS_KEY_DISABLED; /* a larger key than we take */
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    SP_ENSURE(a.ulValueLen != CK_UNAVAILABLE_INFORMATION && a.ulValueLen <= cap, SP_ERR_NOT_FOUND);
    *len = a.ulValueLen;
    return SP_OK;
}

static sp_error sp_p11_rsa_public(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len, EVP_PKEY **out) {
    BIGNUM *bn = BN_bin2bn(n, (int)n_len, NULL);
    BIGNUM *be = BN_bin2bn(e, (int)e_len, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pk = NULL;
    sp_error rc = SP_ERR_NO_MEMORY;
    if (bn != NULL && be != NULL && bld != NULL) {
        /* An even or tiny exponent is no RSA key anyone should wrap under. */
        rc = SP_ERR_KMS_KEY_DISABLED;
        if (BN_is_odd(be) && BN_num_bits(be) >= 2 && BN_num_bits(be) <= 64 && BN_num_bits(bn) >= SP_P11_RSA_MIN_BITS)
            rc = SP_ERR_CRYPTO_BACKEND;
    }
    if (rc == SP_ERR_CRYPTO_BACKEND && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1 &&
        (params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) == 1) {
        rc = SP_OK;
        *out = pk;
    }
    if (rc != SP_OK) ERR_clear_error();
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return rc;
}

static sp_error sp_p11_check_rsa(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, bool first) {
    uint8_t n[SP_P11_RSA_MAX_BYTES + 1], e[16];
    size_t n_len = 0, e_len = 0;
    sp_error rc = sp_p11_bytes(st, s, key, CKA_MODULUS, n, sizeof n, &n_len);
    if (rc == SP_OK) rc = sp_p11_bytes(st, s, key, CKA_PUBLIC_EXPONENT, e, sizeof e, &e_len);
    if (rc == SP_ERR_NOT_FOUND) {
        /* Some tokens keep the public numbers only on the public key. */
        CK_OBJECT_HANDLE pub[2];
        CK_ULONG count = 0;
        SP_GUARD(sp_p11_find_labelled(st, s, CKO_PUBLIC_KEY, CKK_RSA, pub, &count));
        SP_ENSURE(count == 1, SP_ERR_KMS_KEY_DISABLED);
        rc = sp_p11_bytes(st, s, pub[0], CKA_MODULUS, n, sizeof n, &n_len);
        if (rc == SP_OK) rc = sp_p11_bytes(st, s, pub[0], CKA_PUBLIC_EXPONENT, e, sizeof e, &e_len);
        if (rc == SP_ERR_NOT_FOUND) rc = SP_ERR_KMS_KEY_DISABLED;
    }
    SP_GUARD(rc);
    size_t skip = 0;
    while (skip < n_len && n[skip] == 0) skip++;
    const uint8_t *mod = n + skip;
    size_t mod_len = n_len - skip;
    SP_ENSURE(mod_len > 0 && mod_len <= SP_P11_RSA_MAX_BYTES, SP_ERR_KMS_KEY_DISABLED);
    if (!first) {
        /* The wrapping key was fixed at open; a different key now under the
         * label could not open what it wrapped. */
        SP_ENSURE(mod_len == st->modulus_len && memcmp(mod, st->modulus, mod_len) == 0, SP_ERR_KMS_KEY_DISABLED);
        return SP_OK;
    }
    SP_GUARD(sp_p11_rsa_public(mod, mod_len, e, e_len, &st->pub));
    memcpy(st->modulus, mod, mod_len);
    st->modulus_len = mod_len;
    return SP_OK;
}

/* Refuses a master key that could leave the token, or that lacks the use
 * the mechanism needs. */
static sp_error sp_p11_check_key(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, bool first) {
    static const CK_ATTRIBUTE_TYPE types[] = {CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_WRAP,
                                              CKA_UNWRAP,    CKA_ENCRYPT,     CKA_DECRYPT};
    bool v[SP_ARRAY_LEN(types)];
    CK_RV rv = sp_p11_bools(st, s, key, types, v, SP_ARRAY_LEN(types));
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    SP_ENSURE(v[0] && !v[1], SP_ERR_KMS_KEY_DISABLED);
    if (st->mech == SP_KMS_MECH_AES_KWP) SP_ENSURE(v[2] && v[3], SP_ERR_KMS_KEY_DISABLED);
    if (st->mech == SP_KMS_MECH_AES_GCM) SP_ENSURE(v[4] && v[5], SP_ERR_KMS_KEY_DISABLED);
    if (sp_p11_is_rsa(st)) {
        SP_ENSURE(v[5], SP_ERR_KMS_KEY_DISABLED);
        return sp_p11_check_rsa(st, s, key, first);
    }
    CK_ULONG len = 0;
    CK_ATTRIBUTE a = {CKA_VALUE_LEN, &len, sizeof len};
    rv = st->f->C_GetAttributeValue(s, key, &a, 1);
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    SP_ENSURE(len == SP_KEY_BYTES, SP_ERR_KMS_KEY_DISABLED); /* AES-256 only */
    return SP_OK;
}

/* ---- connection (st->lock held) ---- */
static void sp_p11_disconnect(sp_p11_state *st) {
    for (size_t i = 0; i < st->n_idle; i++) (void)st->f->C_CloseSession(st->idle[i]);
    st->n_idle = 0;
    if (st->ready) (void)st->f->C_CloseSession(st->anchor);
    st->anchor = CK_INVALID_HANDLE;
    st->key = CK_INVALID_HANDLE;
    st->ready = false;
    st->gen++;
}

static sp_error sp_p11_connect(sp_p11_state *st, bool first, bool create) {
    CK_SLOT_ID slot = 0;
    CK_TOKEN_INFO ti;
    memset(&ti, 0, sizeof ti);
    sp_error rc = sp_p11_find_slot(st, &slot, &ti);
    /* The token was there at open: now it is unreachable, not unknown. */
    if (rc == SP_ERR_NOT_FOUND && !first) rc = SP_ERR_KMS_UNAVAILABLE;
    SP_GUARD(rc);
    if (first) SP_GUARD(sp_p11_check_mechanism(st, slot));
    SP_ENSURE(!(ti.flags & CKF_USER_PIN_LOCKED), SP_ERR_KMS_ACCESS_DENIED);
    CK_SESSION_HANDLE anchor = CK_INVALID_HANDLE;
    CK_RV rv = st->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &anchor);
    SP_ENSURE(rv == CKR_OK, sp_p11_map(rv, false));
    if (ti.flags & CKF_LOGIN_REQUIRED) rc = sp_p11_login(st, anchor, slot);
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    if (rc == SP_OK) rc = sp_p11_find_key(st, anchor, &key);
    if (rc == SP_ERR_NOT_FOUND && first && create) {
        rc = sp_p11_create_key(st, slot);
        if (rc == SP_OK) rc = sp_p11_find_key(st, anchor, &key);
    }
    if (rc == SP_OK) rc = sp_p11_check_key(st, anchor, key, first);
    if (rc != SP_OK) {
        (void)st->f->C_CloseSession(anchor);
        return rc;
    }
    st->slot = slot;
    st->anchor = anchor;
    st->key = key;
    /* Fixed at open, before other threads can see the state: read without
     * the lock. */
    if (first) st->login_required = (ti.flags & CKF_LOGIN_REQUIRED) != 0;
    st->ready = true;
    return SP_OK;
}

/* A session that is open and, where the token wants it, logged in. */
static CK_RV sp_p11_session_state(sp_p11_state *st, CK_SESSION_HANDLE s) {
    CK_SESSION_INFO si;
    CK_RV rv = st->f->C_GetSessionInfo(s, &si);
    if (rv != CKR_OK) return rv;
    if (st->login_required && (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION))
        return CKR_USER_NOT_LOGGED_IN;
    return CKR_OK;
}

/* ---- running an operation ---- */
static sp_error sp_p11_acquire(sp_p11_state *st, CK_SESSION_HANDLE *s, CK_OBJECT_HANDLE *key, CK_SLOT_ID *slot,
                               uint64_t *gen, CK_RV *rv) {
    pthread_mutex_lock(&st->lock);
    /* With no pooled session to stumble on a dead one, ask the anchor: a
     * fresh session would open fine on a token that logged us out, and then
     * fail on the private key with some template error. */
    if (st->ready && st->n_idle == 0 && sp_p11_session_state(st, st->anchor) != CKR_OK) sp_p11_disconnect(st);
    sp_error rc = st->ready ? SP_OK : sp_p11_connect(st, false, false);
    if (rc == SP_OK) {
        *key = st->key;
        *slot = st->slot;
        *gen = st->gen;
        if (st->n_idle > 0) {
            *s = st->idle[--st->n_idle];
            *rv = CKR_OK;
        } else {
            *rv = st->f->C_OpenSession(st->slot, CKF_SERIAL_SESSION, NULL, NULL, s);
            if (*rv != CKR_OK) *s = CK_INVALID_HANDLE;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static void sp_p11_release(sp_p11_state *st, CK_SESSION_HANDLE s, uint64_t gen, bool keep) {
    if (s == CK_INVALID_HANDLE) return;
    pthread_mutex_lock(&st->lock);
    if (keep && st->ready && gen == st->gen && st->n_idle < SP_P11_IDLE_MAX) {
        st->idle[st->n_idle++] = s;
        s = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&st->lock);
    if (s != CK_INVALID_HANDLE) (void)st->f->C_CloseSession(s);
}

static void sp_p11_invalidate(sp_p11_state *st, uint64_t gen) {
    pthread_mutex_lock(&st->lock);
    if (st->ready && st->gen == gen) sp_p11_disconnect(st);
    pthread_mutex_unlock(&st->lock);
}

/* Tokens explain some failures badly: a lost login or a vanished token can
 * surface as a template or general error, and SoftHSM2 answers a failed tag
 * or key-wrap check with CKR_GENERAL_ERROR. So an unexplained failure is
 * checked against the session and the token: if they are not well the
 * failure is theirs (and a reconnect may cure it); if they are, a general
 * error while unwrapping was the input's. */
static CK_RV sp_p11_diagnose(sp_p11_state *st, CK_SESSION_HANDLE s, CK_SLOT_ID slot, CK_RV rv, bool unwrapping) {
    if (rv == CKR_OK || rv == SP_P11_RV_LOCAL || sp_p11_rv_is_data(rv) || sp_p11_rv_stale(rv)) return rv;
    if (s == CK_INVALID_HANDLE) return rv;
    CK_RV srv = sp_p11_session_state(st, s);
    if (srv != CKR_OK) return sp_p11_rv_stale(srv) ? srv : CKR_DEVICE_ERROR;
    CK_TOKEN_INFO ti;
    if (st->f->C_GetTokenInfo(slot, &ti) != CKR_OK) return CKR_DEVICE_ERROR;
    if (unwrapping && rv == CKR_GENERAL_ERROR) return CKR_ENCRYPTED_DATA_INVALID;
    return rv;
}

static sp_error sp_p11_run(sp_p11_state *st, sp_p11_fn fn, sp_p11_op *op, bool unwrapping) {
    CK_RV rv = CKR_OK;
    for (unsigned attempt = 0;; attempt++) {
        CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
        CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
        CK_SLOT_ID slot = 0;
        uint64_t gen = 0;
        SP_GUARD(sp_p11_acquire(st, &s, &key, &slot, &gen, &rv));
        op->rc = SP_ERR_KMS_PROTOCOL; /* only sp_p11_local() sets it */
        op->discard = false;
        if (rv == CKR_OK) rv = fn(st, s, key, slot, op);
        rv = sp_p11_diagnose(st, s, slot, rv, unwrapping);
        bool keep = !op->discard && (rv == CKR_OK || rv == SP_P11_RV_LOCAL || sp_p11_rv_is_data(rv));
        sp_p11_release(st, s, gen, keep);
        if (rv == CKR_OK) return SP_OK;
        if (rv == SP_P11_RV_LOCAL) return op->rc;
        if (!sp_p11_rv_stale(rv)) break;
        sp_p11_invalidate(st, gen);
        if (attempt > 0) break;
    }
    return sp_p11_map(rv, unwrapping);
}

/* ---- aes-kwp ---- */
static CK_RV sp_p11_kwp_wrap(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                             sp_p11_op *op) {
    (void)slot;
    if (op->cap < SP_P11_KWP_BYTES) return sp_p11_local(op, SP_ERR_BUFFER_TOO_SMALL);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    /* Extractable so it can be wrapped, sensitive so its value cannot be
     * read back in the moment it exists, a session object so it dies with
     * the session whatever happens. */
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},         {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &no, sizeof no},           {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},     {CKA_EXTRACTABLE, &yes, sizeof yes},
        {CKA_VALUE, (void *)op->dek, SP_KEY_BYTES},
    };
    CK_OBJECT_HANDLE tmp = CK_INVALID_HANDLE;
    CK_RV rv = st->f->C_CreateObject(s, tmpl, SP_ARRAY_LEN(tmpl), &tmp);
    if (rv != CKR_OK) return rv;
    CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
    CK_ULONG len = (CK_ULONG)op->cap;
    rv = st->f->C_WrapKey(s, &m, key, tmp, op->out, &len);
    if (st->f->C_DestroyObject(s, tmp) != CKR_OK) op->discard = true;
    if (rv != CKR_OK) return rv;
    if (len != SP_P11_KWP_BYTES) return sp_p11_local(op, SP_ERR_KMS_PROTOCOL);
    op->out_len = len;
    return CKR_OK;
}

static CK_RV sp_p11_kwp_unwrap(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                               sp_p11_op *op) {
    (void)slot;
    if (op->in_len != SP_P11_KWP_BYTES) return sp_p11_local(op, SP_ERR_AUTH);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    /* Not sensitive and extractable: the one way to read an unwrapped value
     * through PKCS#11. It lives in this session only, destroyed below. */
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &no, sizeof no},       {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &no, sizeof no},   {CKA_EXTRACTABLE, &yes, sizeof yes},
    };
    CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv = st->f->C_UnwrapKey(s, &m, key, (CK_BYTE_PTR)op->in, (CK_ULONG)op->in_len, tmpl, SP_ARRAY_LEN(tmpl),
                                  &h);
    if (rv != CKR_OK) return rv;
    CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
    rv = st->f->C_GetAttributeValue(s, h, &v, 1);
    if (rv == CKR_OK && v.ulValueLen != SP_KEY_BYTES) {
        rv = sp_p11_local(op, SP_ERR_AUTH);
    } else if (rv == CKR_OK) {
        v.pValue = op->out;
        rv = st->f->C_GetAttributeValue(s, h, &v, 1);
    }
    if (st->f->C_DestroyObject(s, h) != CKR_OK) op->discard = true; /* closing the session destroys it */
    if (rv != CKR_OK) sp_wipe(op->out, SP_KEY_BYTES);
    return rv;
}

/* ---- aes-gcm ---- */
static CK_RV sp_p11_gcm_wrap(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                             sp_p11_op *op) {
    (void)slot;
    if (op->cap < SP_P11_GCM_BYTES) return sp_p11_local(op, SP_ERR_BUFFER_TOO_SMALL);
    /* Random 96-bit IVs: safe for 2^32 wraps under one master key, far
     * beyond how many data keys a tenant makes. */
    sp_error rc = sp_random(op->out, SP_GCM_IV_BYTES);
    if (rc != SP_OK) return sp_p11_local(op, rc);
    CK_GCM_PARAMS p;
    memset(&p, 0, sizeof p);
    p.pIv = op->out;
    p.ulIvLen = SP_GCM_IV_BYTES;
    p.ulIvBits = SP_GCM_IV_BYTES * 8;
    p.ulTagBits = SP_GCM_TAG_BYTES * 8;
    CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof p};
    CK_RV rv = st->f->C_EncryptInit(s, &m, key);
    if (rv != CKR_OK) return rv;
    CK_ULONG len = (CK_ULONG)(op->cap - SP_GCM_IV_BYTES);
    rv = st->f->C_Encrypt(s, (CK_BYTE_PTR)op->dek, SP_KEY_BYTES, op->out + SP_GCM_IV_BYTES, &len);
    if (rv != CKR_OK) {
        op->discard = true; /* an operation may still be active */
        return rv;
    }
    if (len != SP_KEY_BYTES + SP_GCM_TAG_BYTES) return sp_p11_local(op, SP_ERR_KMS_PROTOCOL);
    op->out_len = SP_P11_GCM_BYTES;
    return CKR_OK;
}

static CK_RV sp_p11_gcm_unwrap(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                               sp_p11_op *op) {
    (void)slot;
    if (op->in_len != SP_P11_GCM_BYTES) return sp_p11_local(op, SP_ERR_AUTH);
    CK_GCM_PARAMS p;
    memset(&p, 0, sizeof p);
    p.pIv = (CK_BYTE_PTR)op->in;
    p.ulIvLen = SP_GCM_IV_BYTES;
    p.ulIvBits = SP_GCM_IV_BYTES * 8;
    p.ulTagBits = SP_GCM_TAG_BYTES * 8;
    CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof p};
    CK_RV rv = st->f->C_DecryptInit(s, &m, key);
    if (rv != CKR_OK) return rv;
    uint8_t buf[SP_P11_GCM_BYTES]; /* room for what a token may want */
    CK_ULONG len = sizeof buf;
    rv = st->f->C_Decrypt(s, (CK_BYTE_PTR)op->in + SP_GCM_IV_BYTES, SP_KEY_BYTES + SP_GCM_TAG_BYTES, buf, &len);
    if (rv == CKR_BUFFER_TOO_SMALL) op->discard = true;
    if (rv == CKR_OK && len != SP_KEY_BYTES) rv = sp_p11_local(op, SP_ERR_AUTH);
    if (rv == CKR_OK) memcpy(op->out, buf, SP_KEY_BYTES);
    sp_wipe(buf, sizeof buf);
    return rv;
}

/* ---- rsa-oaep ---- */
static sp_error sp_p11_oaep_wrap(sp_p11_state *st, const uint8_t *dek, uint8_t *out, size_t cap, size_t *out_len) {
    SP_ENSURE(cap >= st->modulus_len, SP_ERR_BUFFER_TOO_SMALL);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, st->pub, NULL);
    size_t n = cap;
    bool ok = ctx != NULL && EVP_PKEY_encrypt_init(ctx) == 1 &&
              EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
              EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 &&
              EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1 &&
              EVP_PKEY_encrypt(ctx, out, &n, dek, SP_KEY_BYTES) == 1 && n == st->modulus_len;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return SP_ERR_CRYPTO_BACKEND;
    }
    *out_len = n;
    return SP_OK;
}

static CK_RV sp_p11_oaep_unwrap(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                                sp_p11_op *op) {
    (void)slot;
    size_t k = st->modulus_len;
    if (op->in_len != k) return sp_p11_local(op, SP_ERR_AUTH);
    CK_RSA_PKCS_OAEP_PARAMS p = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
    CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &p, sizeof p};
    if (st->oaep_host) {
        m.mechanism = CKM_RSA_X_509;
        m.pParameter = NULL;
        m.ulParameterLen = 0;
    }
    CK_RV rv = st->f->C_DecryptInit(s, &m, key);
    if (rv != CKR_OK) return rv;
    uint8_t buf[SP_P11_RSA_MAX_BYTES], em[SP_P11_RSA_MAX_BYTES];
    CK_ULONG len = (CK_ULONG)k;
    rv = st->f->C_Decrypt(s, (CK_BYTE_PTR)op->in, (CK_ULONG)k, buf, &len);
    if (rv == CKR_BUFFER_TOO_SMALL) op->discard = true;
    if (rv == CKR_OK && !st->oaep_host) {
        if (len == SP_KEY_BYTES) memcpy(op->out, buf, SP_KEY_BYTES);
        else rv = sp_p11_local(op, SP_ERR_AUTH);
    } else if (rv == CKR_OK) {
        /* Raw RSA may come back without its leading zero bytes; OpenSSL's
         * check wants the full-width encoded message to stay constant-time. */
        if (len > k) {
            rv = sp_p11_local(op, SP_ERR_KMS_PROTOCOL);
        } else {
            memset(em, 0, k - len);
            memcpy(em + (k - len), buf, len);
            int r = RSA_padding_check_PKCS1_OAEP_mgf1(buf, (int)k, em, (int)k, (int)k, NULL, 0, EVP_sha256(),
                                                      EVP_sha256());
            if (r == SP_KEY_BYTES) memcpy(op->out, buf, SP_KEY_BYTES);
            else rv = sp_p11_local(op, SP_ERR_AUTH);
            ERR_clear_error();
        }
    }
    sp_wipe(buf, sizeof buf);
    sp_wipe(em, sizeof em);
    return rv;
}

/* Wrapping happens here with the public numbers read from the token, so
 * prove at open that the token's private key opens what they wrap. */
static sp_error sp_p11_oaep_selftest(sp_p11_state *st) {
    uint8_t probe[SP_KEY_BYTES], back[SP_KEY_BYTES], wrapped[SP_P11_RSA_MAX_BYTES];
    size_t wrapped_len = 0;
    sp_error rc = sp_random(probe, sizeof probe);
    if (rc == SP_OK) rc = sp_p11_oaep_wrap(st, probe, wrapped, sizeof wrapped, &wrapped_len);
    if (rc == SP_OK) {
        sp_p11_op op = {.in = wrapped, .in_len = wrapped_len, .out = back};
        rc = sp_p11_run(st, sp_p11_oaep_unwrap, &op, true);
        /* A token that cannot do SHA-256 OAEP says so with a mechanism or
         * argument complaint (SoftHSM2 2.6: CKR_ARGUMENTS_BAD). */
        if (rc == SP_ERR_KMS_PROTOCOL) rc = SP_ERR_BAD_CONFIG;
        else if (rc == SP_ERR_AUTH) rc = SP_ERR_KMS_KEY_DISABLED;
    }
    if (rc == SP_OK && !sp_ct_equal(probe, back, sizeof probe)) rc = SP_ERR_KMS_KEY_DISABLED;
    sp_wipe(probe, sizeof probe);
    sp_wipe(back, sizeof back);
    return rc;
}

/* ---- describe ---- */
static const char *sp_p11_mech_line(const sp_p11_state *st) {
    switch (st->mech) {
    case SP_KMS_MECH_AES_GCM:
        return "mechanism: aes-gcm (CKM_AES_GCM, 96-bit random IV, 128-bit tag, C_Encrypt/C_Decrypt in the token)\n";
    case SP_KMS_MECH_RSA_OAEP_SHA256:
        return st->oaep_host ? "mechanism: rsa-oaep (SHA-256, MGF1-SHA-256; wrap on this host with the public key; "
                               "unwrap with raw RSA (CKM_RSA_X_509) in the token, OAEP checked on this host)\n"
                             : "mechanism: rsa-oaep (SHA-256, MGF1-SHA-256; wrap on this host with the public key; "
                               "unwrap with CKM_RSA_PKCS_OAEP in the token)\n";
    default:
        return "mechanism: aes-kwp (CKM_AES_KEY_WRAP_PAD, RFC 5649, C_WrapKey/C_UnwrapKey in the token)\n";
    }
}

/* Appends whole lines only, so the report is NUL-terminated whatever does
 * not fit and never ends mid-line. */
static sp_error sp_p11_report_line(char *report, size_t cap, const char *line) {
    size_t have = strlen(report), n = strlen(line);
    SP_ENSURE(have < cap && n < cap - have, SP_ERR_BUFFER_TOO_SMALL);
    memcpy(report + have, line, n + 1);
    return SP_OK;
}

static CK_RV sp_p11_describe_op(sp_p11_state *st, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot,
                                sp_p11_op *op) {
    CK_INFO info;
    CK_TOKEN_INFO ti;
    CK_RV rv = st->f->C_GetInfo(&info);
    if (rv == CKR_OK) rv = st->f->C_GetTokenInfo(slot, &ti);
    static const CK_ATTRIBUTE_TYPE types[] = {CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE,
                                              CKA_NEVER_EXTRACTABLE};
    bool v[SP_ARRAY_LEN(types)];
    if (rv == CKR_OK) rv = sp_p11_bools(st, s, key, types, v, SP_ARRAY_LEN(types));
    CK_ULONG value_len = 0;
    if (rv == CKR_OK && !sp_p11_is_rsa(st)) {
        CK_ATTRIBUTE a = {CKA_VALUE_LEN, &value_len, sizeof value_len};
        rv = st->f->C_GetAttributeValue(s, key, &a, 1);
    }
    if (rv != CKR_OK) return rv;
    char lib_desc[33], lib_man[33], label[33], man[33], model[17], serial[17];
    sp_p11_field(info.libraryDescription, sizeof info.libraryDescription, lib_desc, sizeof lib_desc);
    sp_p11_field(info.manufacturerID, sizeof info.manufacturerID, lib_man, sizeof lib_man);
    sp_p11_field(ti.label, sizeof ti.label, label, sizeof label);
    sp_p11_field(ti.manufacturerID, sizeof ti.manufacturerID, man, sizeof man);
    sp_p11_field(ti.model, sizeof ti.model, model, sizeof model);
    sp_p11_field(ti.serialNumber, sizeof ti.serialNumber, serial, sizeof serial);
    char line[3][PATH_MAX + 256];
    int n0 = snprintf(line[0], sizeof line[0], "token: %s (manufacturer: %s, model: %s, serial: %s, firmware %u.%u)\n",
                      label, man, model, serial, ti.firmwareVersion.major, ti.firmwareVersion.minor);
    int n1 = snprintf(line[1], sizeof line[1], "module: %s (%s %u.%u by %s, cryptoki %u.%u)\n", st->module_path,
                      lib_desc, info.libraryVersion.major, info.libraryVersion.minor, lib_man,
                      info.cryptokiVersion.major, info.cryptokiVersion.minor);
    size_t bits = sp_p11_is_rsa(st) ? st->modulus_len * 8 : (size_t)value_len * 8;
    int n2 = snprintf(line[2], sizeof line[2], "key: %s, %s-%zu, %s, %s, %s, %s\n", st->key_label,
                      sp_p11_is_rsa(st) ? "RSA" : "AES", bits, v[0] ? "sensitive" : "NOT SENSITIVE",
                      v[1] ? "EXTRACTABLE" : "non-extractable", v[2] ? "always sensitive" : "once not sensitive",
                      v[3] ? "never extractable" : "once extractable (imported or re-flagged)");
    if (n0 < 0 || n1 < 0 || n2 < 0) return sp_p11_local(op, SP_ERR_INVALID_ARGUMENT);
    op->report[0] = 0;
    sp_error rc = SP_OK;
    for (size_t i = 0; i < 3 && rc == SP_OK; i++) rc = sp_p11_report_line(op->report, op->report_cap, line[i]);
    if (rc == SP_OK) rc = sp_p11_report_line(op->report, op->report_cap, sp_p11_mech_line(st));
    /* What open refused must not have become true since. */
    if (rc == SP_OK && (!v[0] || v[1])) rc = SP_ERR_KMS_KEY_DISABLED;
    return rc == SP_OK ? CKR_OK : sp_p11_local(op, rc);
}

static sp_error sp_p11_describe(void *state, char *report, size_t cap) {
    sp_p11_state *st = state;
    SP_ENSURE(report != NULL && cap > 0, SP_ERR_INVALID_ARGUMENT);
    report[0] = 0;
    sp_p11_op op = {.report = report, .report_cap = cap};
    sp_error rc = sp_p11_run(st, sp_p11_describe_op, &op, false);
    if (rc != SP_OK && rc != SP_ERR_BUFFER_TOO_SMALL && strlen(report) == 0) {
        /* Say what is configured even when the token cannot be asked. */
        char line[128];
        if (snprintf(line, sizeof line, "token: %s (not reachable: %s)\n", st->token, sp_strerror(rc)) <
                (int)sizeof line &&
            sp_p11_report_line(report, cap, line) == SP_OK)
            (void)sp_p11_report_line(report, cap, sp_p11_mech_line(st));
    }
    return rc;
}

/* ---- the vtable ---- */
static void sp_p11_close(void *state) {
    sp_p11_state *st = state;
    if (st == NULL) return;
    if (st->mod != NULL) {
        pthread_mutex_lock(&st->lock);
        if (st->ready) sp_p11_disconnect(st);
        pthread_mutex_unlock(&st->lock);
    }
    EVP_PKEY_free(st->pub);
    pthread_mutex_destroy(&st->lock);
    sp_p11_module_unload(st->mod);
    sp_wipe(st, sizeof *st);
    sp_free(st);
}

static sp_error sp_p11_read_config(const sp_kms_config *cfg, sp_p11_state *st, bool *create) {
    const char *module = sp_kms_config_get(cfg, "module");
    const char *token = sp_kms_config_get(cfg, "token");
    const char *key = sp_kms_config_get(cfg, "key");
    const char *pin_file = sp_kms_config_get(cfg, "pin-file");
    const char *pin_env = sp_kms_config_get(cfg, "pin-env");
    const char *mech = sp_kms_config_get(cfg, "mechanism");
    const char *decode = sp_kms_config_get(cfg, "oaep-decode");
    SP_ENSURE(module != NULL && token != NULL && key != NULL, SP_ERR_BAD_CONFIG);
    SP_ENSURE((pin_file != NULL) != (pin_env != NULL), SP_ERR_BAD_CONFIG);
    SP_GUARD(sp_p11_copy_str(st->module_path, sizeof st->module_path, module));
    SP_GUARD(sp_p11_copy_str(st->token, sizeof st->token, token));
    SP_GUARD(sp_p11_copy_str(st->key_label, sizeof st->key_label, key));
    SP_GUARD(sp_p11_copy_str(st->pin_source, sizeof st->pin_source, pin_file ? pin_file : pin_env));
    st->pin_from_env = pin_env != NULL;
    if (mech == NULL || strcmp(mech, "aes-kwp") == 0) st->mech = SP_KMS_MECH_AES_KWP;
    else if (strcmp(mech, "aes-gcm") == 0) st->mech = SP_KMS_MECH_AES_GCM;
    else if (strcmp(mech, "rsa-oaep") == 0) st->mech = SP_KMS_MECH_RSA_OAEP_SHA256;
    else return SP_ERR_BAD_CONFIG;
    if (decode != NULL) {
        SP_ENSURE(sp_p11_is_rsa(st), SP_ERR_BAD_CONFIG);
        if (strcmp(decode, "host") == 0) st->oaep_host = true;
        else SP_ENSURE(strcmp(decode, "token") == 0, SP_ERR_BAD_CONFIG);
    }
    int64_t c = 0;
    SP_GUARD(sp_kms_config_int(cfg, "create", 0, 1, 0, &c));
    *create = c == 1;
    return SP_OK;
}

static sp_error sp_p11_open(const sp_kms_config *cfg, void **state, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    SP_ENSURE(cfg != NULL && state != NULL && key_id != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_kms_config_only(cfg, sp_p11_options));
    sp_p11_state *st = sp_calloc(1, sizeof *st);
    SP_ENSURE(st != NULL, SP_ERR_NO_MEMORY);
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        sp_free(st);
        return SP_ERR_NO_MEMORY;
    }
    st->anchor = CK_INVALID_HANDLE;
    st->key = CK_INVALID_HANDLE;
    bool create = false;
    char id[SP_KMS_MAX_KEY_ID + 1];
    sp_error rc = sp_p11_read_config(cfg, st, &create);
    if (rc == SP_OK) rc = sp_p11_make_key_id(st, id);
    if (rc == SP_OK) rc = sp_p11_module_load(st->module_path, &st->mod);
    if (rc == SP_OK) {
        st->f = st->mod->f;
        pthread_mutex_lock(&st->lock);
        rc = sp_p11_connect(st, true, create);
        pthread_mutex_unlock(&st->lock);
    }
    if (rc == SP_OK && sp_p11_is_rsa(st)) rc = sp_p11_oaep_selftest(st);
    if (rc != SP_OK) {
        sp_p11_close(st);
        return rc;
    }
    memcpy(key_id, id, sizeof id);
    *state = st;
    return SP_OK;
}

static sp_error sp_p11_wrap(void *state, const uint8_t dek[SP_KEY_BYTES], uint8_t *mechanism, uint8_t *payload,
                            size_t cap, size_t *payload_len) {
    sp_p11_state *st = state;
    SP_ENSURE(st != NULL && dek != NULL && mechanism != NULL && payload != NULL && payload_len != NULL,
              SP_ERR_INVALID_ARGUMENT);
    *mechanism = st->mech;
    /* No token involved: new data keys keep coming while the HSM is away. */
    if (sp_p11_is_rsa(st)) return sp_p11_oaep_wrap(st, dek, payload, cap, payload_len);
    sp_p11_op op = {.dek = dek, .out = payload, .cap = cap};
    SP_GUARD(sp_p11_run(st, st->mech == SP_KMS_MECH_AES_GCM ? sp_p11_gcm_wrap : sp_p11_kwp_wrap, &op, false));
    *payload_len = op.out_len;
    return SP_OK;
}

static sp_error sp_p11_unwrap(void *state, uint8_t mechanism, const uint8_t *payload, size_t payload_len,
                              uint8_t dek[SP_KEY_BYTES]) {
    sp_p11_state *st = state;
    SP_ENSURE(st != NULL && payload != NULL && dek != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_p11_fn fn = NULL;
    /* An AES master key opens both AES mechanisms, so switching mechanism
     * keeps old blobs readable; an RSA key opens only OAEP. */
    if (sp_p11_is_rsa(st)) fn = mechanism == SP_KMS_MECH_RSA_OAEP_SHA256 ? sp_p11_oaep_unwrap : NULL;
    else if (mechanism == SP_KMS_MECH_AES_KWP) fn = sp_p11_kwp_unwrap;
    else if (mechanism == SP_KMS_MECH_AES_GCM) fn = sp_p11_gcm_unwrap;
    SP_ENSURE(fn != NULL, SP_ERR_AUTH);
    sp_p11_op op = {.in = payload, .in_len = payload_len, .out = dek};
    sp_error rc = sp_p11_run(st, fn, &op, true);
    if (rc != SP_OK) sp_wipe(dek, SP_KEY_BYTES);
    return rc;
}

const sp_kms_backend sp_kms_backend_pkcs11 = {
    .name = "pkcs11",
    .id = SP_KMS_BACKEND_PKCS11,
    .options = sp_p11_options,
    .open = sp_p11_open,
    .close = sp_p11_close,
    .wrap = sp_p11_wrap,
    .unwrap = sp_p11_unwrap,
    .wrap_is_local = sp_p11_wrap_is_local,
    .describe = sp_p11_describe,
};
