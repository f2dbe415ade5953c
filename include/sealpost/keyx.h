/*
 * Key exchange with a CPaaS provider: handing over AES-256 key versions
 * under the provider's own public key, in a format any JOSE library reads.
 *
 * The provider gives sealpost an RSA (3072 bits or more) or P-256 public key
 * as PEM. sp_keyx_export encrypts the requested key versions to it as one
 * compact JWE (RFC 7516):
 *
 *   protected header  {"alg":"RSA-OAEP-256","enc":"A256GCM","cty":"jwk-set+json"}
 *                  or {"alg":"ECDH-ES+A256KW","enc":"A256GCM","cty":"jwk-set+json",
 *                      "epk":{"kty":"EC","crv":"P-256","x":"...","y":"..."}}
 *   plaintext         {"keys":[{"kty":"oct","kid":"<version uuid>","k":"<b64url 32 bytes>",
 *                              "alg":"A256GCM","exp":<unix seconds>}, ...]}
 *
 * ECDH-ES+A256KW follows RFC 7518 4.6: the Concat KDF of NIST SP 800-56A
 * over SHA-256 with empty apu/apv, the ephemeral key in "epk". The provider
 * side runs sp_keyx_import with its private key (or any JOSE library).
 *
 * Import takes that shape as any JOSE library writes it: "cty" may be absent
 * or "application/jwk-set+json", header members it does not use (kid, typ)
 * and unknown JWK or JWK Set members are ignored, a JWK's "alg" may be
 * absent but if present is "A256GCM" ("use", likewise, "enc"). It refuses
 * "zip" and "crit", non-empty apu/apv, an "epk" that is not a P-256 public
 * point on the curve, duplicate members, duplicate kids, a kid that is not
 * a lowercase UUID and a "k" that is not exactly 32 bytes of unpadded
 * base64url.
 *
 * "exp" is a whole number of Unix seconds after which the key version must
 * no longer be used; 0 means the exporting side set no end date. Both sides
 * refuse a key version whose exp has passed (SP_ERR_KEY_RETIRED), so a
 * bundle handed over late cannot resurrect a retired key.
 *
 * Errors: an unusable PEM (unreadable, RSA under 3072 bits, EC off P-256,
 * any other key type) is SP_ERR_BAD_PEM. A JWE that is not in this shape is
 * SP_ERR_BAD_JWE. Anything that fails to decrypt or authenticate, including
 * a JWE made for another recipient or another key type, is SP_ERR_AUTH. A
 * JWK Set that decrypted but breaks the rules above is SP_ERR_BAD_JSON; more
 * entries than SP_KEYX_MAX_ITEMS is SP_ERR_TOO_LARGE.
 *
 * The JWK Set holds raw keys, so every buffer it passes through is wiped
 * before it is freed, and imported keys live in locked memory (sp_key).
 */
#ifndef SEALPOST_KEYX_H
#define SEALPOST_KEYX_H

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_KEYX_MAX_ITEMS 64            /* key versions in one JWE */
#define SP_KEYX_MAX_JWE_BYTES 32768     /* a compact JWE, with the NUL export writes */
#define SP_KEYX_MAX_PEM_BYTES 16384     /* a PEM public or private key */
#define SP_KEYX_MIN_RSA_BITS 3072
#define SP_KEYX_MAX_RSA_BITS 8192       /* bounds the cost of one private-key operation */

#define SP_KEYX_ALG_RSA_OAEP_256 "RSA-OAEP-256"
#define SP_KEYX_ALG_ECDH_ES_A256KW "ECDH-ES+A256KW"

/* One key version as it travels. expires: Unix seconds, 0 = no end date. */
typedef struct sp_keyx_item {
    char version[SP_KEY_VERSION_CHARS + 1]; /* lowercase UUID, NUL-terminated */
    sp_key *key;
    int64_t expires;
} sp_keyx_item;

/* Encrypts n items (1..SP_KEYX_MAX_ITEMS, distinct versions, none expired)
 * to the recipient's public key (SubjectPublicKeyInfo PEM, "BEGIN PUBLIC
 * KEY"). alg is SP_KEYX_ALG_RSA_OAEP_256 or SP_KEYX_ALG_ECDH_ES_A256KW and
 * must fit the key type (else SP_ERR_INVALID_ARGUMENT; an unknown name is
 * SP_ERR_UNKNOWN_ALGORITHM); NULL picks the one the key type allows. out
 * receives the compact JWE NUL-terminated; out_len excludes the NUL. A cap
 * of SP_KEYX_MAX_JWE_BYTES is always enough. */
SP_API SP_MUST_CHECK sp_error sp_keyx_export(const sp_keyx_item *items, size_t n, const char *recipient_public_pem,
                                             size_t pem_len, const char *alg, char *out, size_t cap,
                                             size_t *out_len);

/* Decrypts a JWE made by sp_keyx_export (or by any JOSE library in the same
 * shape) with the recipient's private key (PEM: PKCS#8 or the traditional
 * RSA/EC forms, unencrypted). On success items[0..*n) hold fresh keys in
 * locked memory, in the order of the JWK Set; free them with
 * sp_keyx_items_free. max below the number of entries is
 * SP_ERR_BUFFER_TOO_SMALL. On failure nothing is left allocated and *n is 0. */
SP_API SP_MUST_CHECK sp_error sp_keyx_import(const char *jwe, size_t len, const char *private_pem, size_t pem_len,
                                             sp_keyx_item *items, size_t max, size_t *n);

/* Frees the keys of n items and clears the items. NULL-safe. */
SP_API void sp_keyx_items_free(sp_keyx_item *items, size_t n);

SP_END_DECLS

#endif
