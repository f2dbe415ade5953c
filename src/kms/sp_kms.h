/*
 * The KMS layer's inside: the backend vtable, the wrapped-key blob and the
 * configuration parser. sp_kms (kms.c) owns everything backends have in
 * common (retries with full-jitter back-off, the circuit breaker, the audit
 * log, blob framing), so a backend only talks to its KMS. One backend per
 * file: kms_local.c, kms_pkcs11.c, kms_kmip.c.
 */
#ifndef SP_KMS_INTERNAL_H
#define SP_KMS_INTERNAL_H

#include "cipher/sp_cipher.h"
#include "sealpost/kms.h"

/* ---- configuration: "backend:name=value;name=value" ---- */
#define SP_KMS_CONFIG_MAX_ITEMS 32

typedef struct sp_kms_config {
    char backend[16];
    size_t count;
    struct {
        char name[32];
        char *value; /* heap, wiped on clear: a value may be a PIN */
    } items[SP_KMS_CONFIG_MAX_ITEMS];
} sp_kms_config;

/* SP_ERR_BAD_CONFIG for a malformed string, an unknown backend is left to
 * the caller. Names are [a-z0-9-], values may not hold ';'. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_config_parse(const char *text, sp_kms_config *out);
SP_INTERNAL void sp_kms_config_clear(sp_kms_config *cfg);
/* NULL when absent. */
SP_INTERNAL const char *sp_kms_config_get(const sp_kms_config *cfg, const char *name);
/* The value as an integer in [min, max], or dflt when absent;
 * SP_ERR_BAD_CONFIG when present but not such an integer. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_config_int(const sp_kms_config *cfg, const char *name, int64_t min,
                                                     int64_t max, int64_t dflt, int64_t *out);
/* SP_ERR_BAD_CONFIG naming no option outside `known` (NULL-terminated) and
 * the common options every backend takes. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_config_only(const sp_kms_config *cfg, const char *const *known);

/* ---- wrapped-key blobs ----
 * [0] format version (1)  [1] backend id  [2] mechanism  [3] key-id length L
 * [4 .. 4+L) master key id (printable ASCII)  [4+L, 4+L+2) payload length P, big-endian
 * [6+L .. 6+L+P) payload.  Nothing may follow. */
#define SP_KMS_BLOB_VERSION 1

enum {
    SP_KMS_BACKEND_LOCAL = 1,
    SP_KMS_BACKEND_PKCS11 = 2,
    SP_KMS_BACKEND_KMIP = 3,
};

enum {
    SP_KMS_MECH_AES_KWP = 1,         /* RFC 5649 under an AES-256 master key */
    SP_KMS_MECH_AES_GCM = 2,         /* payload: 12-byte IV, ciphertext, 16-byte tag */
    SP_KMS_MECH_RSA_OAEP_SHA256 = 3, /* payload: the RSA-OAEP(SHA-256, MGF1-SHA-256) ciphertext */
};

typedef struct sp_kms_blob {
    uint8_t backend;
    uint8_t mechanism;
    char key_id[SP_KMS_MAX_KEY_ID + 1];
    const uint8_t *payload; /* points into the decoded input */
    size_t payload_len;
} sp_kms_blob;

SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_blob_encode(const sp_kms_blob *blob, uint8_t *out, size_t cap,
                                                      size_t *out_len);
/* SP_ERR_AUTH for anything that is not a well-formed blob (one answer for
 * every malformed or tampered input). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_blob_decode(const uint8_t *in, size_t len, sp_kms_blob *out);

/* ---- backends ---- */
#define SP_KMS_MAX_PAYLOAD 768

typedef struct sp_kms_backend {
    const char *name;
    uint8_t id;
    /* Options this backend takes besides the common ones. */
    const char *const *options;
    /* Connects (or loads) and finds the master key; with create=1 makes it
     * when it does not exist. key_id receives its identifier. */
    sp_error (*open)(const sp_kms_config *cfg, void **state, char key_id[SP_KMS_MAX_KEY_ID + 1]);
    void (*close)(void *state);
    /* Wraps a 32-byte data key: picks the mechanism, writes the payload. */
    sp_error (*wrap)(void *state, const uint8_t dek[SP_KEY_BYTES], uint8_t *mechanism, uint8_t *payload, size_t cap,
                     size_t *payload_len);
    /* The reverse; dek receives exactly 32 bytes. SP_ERR_AUTH when the
     * payload does not open under the master key. */
    sp_error (*unwrap)(void *state, uint8_t mechanism, const uint8_t *payload, size_t payload_len,
                       uint8_t dek[SP_KEY_BYTES]);
    /* Optional: true when wrap never contacts the KMS (an asymmetric master
     * key whose public half wraps on this host). Such wraps are neither
     * stopped by the circuit breaker nor counted by it: an HSM outage must
     * not stop them, and they say nothing about whether the HSM is up. */
    bool (*wrap_is_local)(void *state);
    /* Optional: extra report lines for sp_kms_check (capabilities, server
     * version); may be NULL. */
    sp_error (*describe)(void *state, char *report, size_t cap);
} sp_kms_backend;

/* sp_kms_open with a given backend instead of one named in the config: for
 * tests that script a backend's failures to exercise retries and the
 * breaker. The config's backend name is ignored. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kms_open_backend(const sp_kms_backend *backend, const char *config,
                                                       sp_kms **out);

SP_INTERNAL extern const sp_kms_backend sp_kms_backend_local;
SP_INTERNAL extern const sp_kms_backend sp_kms_backend_pkcs11;
SP_INTERNAL extern const sp_kms_backend sp_kms_backend_kmip;

#endif
