/*
 * Masking of decrypted PII for GET /v1/profiles/{id}: enough of a value for
 * a person to recognise it ("a***@example.com", "+1********01", "J***"),
 * never enough to use it. Pure functions over bytes, so the rules are
 * unit-tested without a vault.
 */
#ifndef SPD_MASK_H
#define SPD_MASK_H

#include "daemon.h"

/* Room spd_mask needs for a value of len bytes (NUL included). */
#define SPD_MASK_CAP(len) ((len) + 8)

/* The masked form of a (normalised) value, NUL-terminated in out:
 *   email  first character of the local part + "***@" + the domain, lower-cased
 *   phone  the first 2 characters ("+" and a digit) + one star per hidden
 *          digit + the last 2 digits (api.md: "+1********01")
 *   text   first character + "***"
 *   empty  ""
 * "Character" is a whole UTF-8 sequence; an invalid one shows as "*". A value
 * that does not have its kind's shape (an email without '@', a phone number
 * with fewer than 6 digits) is masked as text. SP_ERR_BUFFER_TOO_SMALL when
 * cap is under SPD_MASK_CAP(len). */
SP_MUST_CHECK sp_error spd_mask(sp_vault_field_kind kind, const char *value, size_t len, char *out, size_t cap,
                                size_t *out_len);

#endif
