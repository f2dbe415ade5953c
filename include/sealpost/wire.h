/*
 * The sealpost wire protocol: how a payload travels between the platform and
 * a CPaaS provider, in either direction (outbound messages and callbacks use
 * the same envelope). docs/PROTOCOL.md is the normative description; this is
 * its C API.
 *
 * Two profiles:
 *  - compat: the CPaaS-encryption envelope (body {"ciphertext":..,"iv":..},
 *    X-AES-IV / X-AES-KEY-VERSION / X-AES-ALGORITHM headers), any of the three
 *    AES-256 modes;
 *  - jwe: an RFC 7516 compact JWE, alg "dir", enc "A256GCM", kid = version.
 * Both carry Standard Webhooks headers (webhook-id, webhook-timestamp,
 * webhook-signature) whose HMAC key is derived from the key version, and the
 * receiver checks them over the raw body before it decodes anything.
 *
 * An sp_wire is a set of key versions plus reusable cipher and MAC contexts.
 * After warm-up, sealing and opening allocate nothing. Not thread-safe: one
 * per thread.
 */
#ifndef SEALPOST_WIRE_H
#define SEALPOST_WIRE_H

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"
#include "sealpost/keyfile.h"

SP_BEGIN_DECLS

typedef enum sp_profile {
    SP_PROFILE_COMPAT = 1,
    SP_PROFILE_JWE = 2,
} sp_profile;

#define SP_MESSAGE_ID_MAX 128         /* webhook-id length limit */
#define SP_WIRE_DEFAULT_TOLERANCE_S 300
#define SP_WIRE_MAX_TOLERANCE_S 86400
#define SP_WIRE_DEFAULT_MAX_BODY (1u << 20)
#define SP_WIRE_MAX_BODY_LIMIT (64u << 20)
#define SP_WIRE_MAX_SIGNATURES 8      /* entries in one webhook-signature */
#define SP_WIRE_MAX_HEADER_VALUE 1024 /* longest header value accepted */
#define SP_WIRE_MAX_KEYS 1024         /* key versions in one sp_wire */

typedef struct sp_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} sp_header;

typedef struct sp_wire sp_wire;

SP_API SP_MUST_CHECK sp_error sp_wire_new(sp_wire **out);
SP_API void sp_wire_free(sp_wire *wire);
/* Adds a key version (a lowercase UUID). The key is copied. The first key
 * added, or one added with make_active, becomes the version seal uses. */
SP_API SP_MUST_CHECK sp_error sp_wire_add_key(sp_wire *wire, const char *version, const sp_key *key,
                                              bool make_active);
/* Adds every version of a key file (its active one made active), as a
 * provider or a tool holding a key file (sealpost keys import) needs. */
SP_API SP_MUST_CHECK sp_error sp_wire_add_keyfile(sp_wire *wire, const sp_keyfile *file);
SP_API SP_MUST_CHECK sp_error sp_wire_set_active(sp_wire *wire, const char *version);
/* NULL when no key was added. */
SP_API const char *sp_wire_active_version(const sp_wire *wire);
/* max_body: 1 .. SP_WIRE_MAX_BODY_LIMIT; tolerance_s: 1 .. SP_WIRE_MAX_TOLERANCE_S. */
SP_API SP_MUST_CHECK sp_error sp_wire_set_limits(sp_wire *wire, size_t max_body, uint32_t tolerance_s);
/* The Standard Webhooks signing secret of a version for a profile and
 * algorithm, as "whsec_<base64>", for providers that verify with a stock
 * Standard Webhooks library. out must hold 64 bytes. */
SP_API SP_MUST_CHECK sp_error sp_wire_signing_secret(sp_wire *wire, const char *version, sp_profile profile,
                                                     sp_alg alg, char *out, size_t out_cap);

typedef struct sp_seal_params {
    sp_profile profile;      /* 0 means compat */
    sp_alg alg;              /* 0 means AES-256-GCM; JWE accepts only GCM */
    const char *key_version; /* NULL means the active version */
    const char *message_id;  /* NULL means a fresh random "msg_..." id */
    int64_t timestamp;       /* 0 means now */
} sp_seal_params;

#define SP_SEALED_MAX_HEADERS 8
#define SP_SEALED_STORAGE 512

typedef struct sp_sealed {
    sp_header headers[SP_SEALED_MAX_HEADERS]; /* point into storage_ */
    size_t n_headers;
    size_t body_len; /* bytes written to the caller's body buffer */
    char storage_[SP_SEALED_STORAGE];
} sp_sealed;

/* The body buffer size seal needs for a plaintext length (0 if too large). */
SP_API size_t sp_seal_body_bound(sp_profile profile, sp_alg alg, size_t plaintext_len);

SP_API SP_MUST_CHECK sp_error sp_seal(sp_wire *wire, const sp_seal_params *params, const uint8_t *plaintext,
                                      size_t plaintext_len, uint8_t *body, size_t body_cap, sp_sealed *out);

typedef struct sp_opened {
    sp_profile profile;
    sp_alg alg;
    int64_t timestamp;
    char key_version[SP_KEY_VERSION_CHARS + 1];
    char message_id[SP_MESSAGE_ID_MAX + 1];
} sp_opened;

/* Verifies then decrypts one message. headers are as received (names are
 * matched case-insensitively; unrelated headers are ignored). now is the
 * receiver's clock in Unix seconds (0 means the system clock). out needs
 * body_len bytes at most. Every integrity or decryption failure is
 * SP_ERR_AUTH; malformed input gets its own code; out is wiped on failure. */
SP_API SP_MUST_CHECK sp_error sp_open(sp_wire *wire, const sp_header *headers, size_t n_headers,
                                      const uint8_t *body, size_t body_len, int64_t now, uint8_t *out,
                                      size_t out_cap, size_t *out_len, sp_opened *info);

/* sp_open with a say between verification and decryption: once headers,
 * timestamp and signature hold, check (unless NULL) sees what they vouch
 * for (info's fields); any result but SP_OK stops there and is returned as
 * it is, nothing decrypted. A receiver drops a repeated webhook-id this way
 * before it spends a decryption or a parse on it. */
typedef sp_error (*sp_open_check_fn)(void *arg, const sp_opened *verified);
SP_API SP_MUST_CHECK sp_error sp_open_checked(sp_wire *wire, const sp_header *headers, size_t n_headers,
                                              const uint8_t *body, size_t body_len, int64_t now,
                                              sp_open_check_fn check, void *check_arg, uint8_t *out,
                                              size_t out_cap, size_t *out_len, sp_opened *info);

SP_API const char *sp_profile_name(sp_profile profile);
SP_API SP_MUST_CHECK sp_error sp_profile_from_name(const char *name, sp_profile *out);

SP_END_DECLS

#endif
