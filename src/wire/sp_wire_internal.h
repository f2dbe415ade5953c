/*
 * The wire layer's parsers, exposed inside the library so that each has its
 * own fuzz target and negative tests. sp_open (wire.c) runs them in the
 * order docs/PROTOCOL.md fixes: headers, timestamp, signature over the raw
 * body, and only then the body parsers below.
 */
#ifndef SP_WIRE_INTERNAL_H
#define SP_WIRE_INTERNAL_H

#include "cipher/sp_cipher.h"
#include "sealpost/wire.h"

#define SP_WIRE_SALT "sealpost/webhook/v1"
#define SP_JWE_SIGNING_ALG "JWE/A256GCM"
#define SP_JWE_MAX_HEADER 1024 /* decoded protected header */

/* The v1 entries of a webhook-signature header value; entries of other
 * versions are skipped. SP_ERR_BAD_SIGNATURE_HEADER when malformed, too
 * long, or holding no v1 entry. */
typedef struct sp_sig_list {
    uint8_t sig[SP_WIRE_MAX_SIGNATURES][SP_HMAC_SHA256_BYTES];
    size_t count;
} sp_sig_list;
SP_INTERNAL SP_MUST_CHECK sp_error sp_sig_header_parse(const char *value, size_t len, sp_sig_list *out);

/* webhook-id: 1..SP_MESSAGE_ID_MAX bytes of 0x21..0x7E. */
SP_INTERNAL bool sp_message_id_is_valid(const char *id, size_t len);

/* The compat body: a JSON object with string members "ciphertext" and "iv".
 * The canonical form sealpost writes is recognised without allocating; any
 * other valid JSON goes through jansson. The spans point into body (or, for
 * the jansson path, into scratch, which must hold body_len bytes). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_compat_body_parse(const uint8_t *body, size_t body_len, uint8_t *scratch,
                                                        size_t scratch_cap, sp_span *ciphertext_b64,
                                                        sp_span *iv_b64);

/* A compact JWE split into its five base64url parts, each checked for the
 * alphabet; the encrypted-key part must be empty (alg "dir"). */
typedef struct sp_jwe_parts {
    sp_span protected_b64, encrypted_key, iv, ciphertext, tag;
} sp_jwe_parts;
SP_INTERNAL SP_MUST_CHECK sp_error sp_jwe_split(const uint8_t *body, size_t body_len, sp_jwe_parts *out);
/* Decodes and checks the protected header: alg "dir", enc "A256GCM", no
 * "zip", no "crit", and a kid, copied out as a NUL-terminated UUID. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_jwe_header_check(const uint8_t *protected_b64, size_t len,
                                                       char kid[SP_KEY_VERSION_CHARS + 1]);

/* sp_seal with a caller-chosen IV, for reproducible test vectors only: an IV
 * must never repeat under one key, which only the CSPRNG path guarantees. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_seal_with_iv(sp_wire *wire, const sp_seal_params *params, const uint8_t *iv,
                                                   const uint8_t *plaintext, size_t plaintext_len, uint8_t *body,
                                                   size_t body_cap, sp_sealed *out);

#endif
