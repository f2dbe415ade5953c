/*
 * Masking of decrypted PII for reads (mask.h). The rules keep a fixed,
 * small part of a value: its first character, an email's domain, a phone
 * number's first and last two characters. The number of stars in a phone number
 * follows its length (which E.164 already bounds to 8..15 digits); an email
 * or a text value always gets three, so the mask tells nothing about how
 * long the hidden part is.
 */
#include <string.h>

#include "mask.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t spd_utf8_char(const unsigned char *s, size_t len) {
    if (len == 0) return 0;
    unsigned char c = s[0];
    size_t n;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
    } else {
        return 0;
    }
    if (len < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
    }
    /* overlong 3- and 4-byte forms, surrogates and code points past U+10FFFF */
    if (c == 0xe0 && s[1] < 0xa0) return 0;
    if (c == 0xed && s[1] > 0x9f) return 0;
    if (c == 0xf0 && s[1] < 0x90) return 0;
    if (c == 0xf4 && s[1] > 0x8f) return 0;
    return n;
}

typedef struct {
    char *out;
    size_t cap;
    size_t len;
} spd_mask_buf;

static void spd_put(spd_mask_buf *b, const void *s, size_t n) {
    /* callers checked the total against cap once */
    memcpy(b->out + b->len, s, n);
    b->len += n;
}

static void spd_put_first_char(spd_mask_buf *b, const char *value, size_t len) {
    size_t n = spd_utf8_char((const unsigned char *)value, len);
    if (n == 0) {
        spd_put(b, "*", 1);
    } else {
        spd_put(b, value, n);
    }
}

static void spd_mask_text(spd_mask_buf *b, const char *value, size_t len) {
    spd_put_first_char(b, value, len);
    spd_put(b, "***", 3);
}

static bool spd_mask_email(spd_mask_buf *b, const char *value, size_t len) {
    const char *at = memchr(value, '@', len);
    if (at == NULL || at == value) return false;
    size_t local = (size_t)(at - value);
    spd_put_first_char(b, value, local);
    spd_put(b, "***@", 4);
    for (size_t i = local + 1; i < len; i++) {
        char c = value[i];
        b->out[b->len++] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    return true;
}

/* The first two characters ('+' and the first digit of the country code)
 * and the last two digits, as api.md shows ("+1********01"). */
static bool spd_mask_phone(spd_mask_buf *b, const char *value, size_t len) {
    if (len < 7 || value[0] != '+') return false;
    for (size_t i = 1; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') return false;
    }
    spd_put(b, value, 2);
    for (size_t i = 0; i < len - 4; i++) b->out[b->len++] = '*';
    spd_put(b, value + len - 2, 2);
    return true;
}

sp_error spd_mask(sp_vault_field_kind kind, const char *value, size_t len, char *out, size_t cap, size_t *out_len) {
    if (out == NULL || out_len == NULL || (value == NULL && len != 0)) return SP_ERR_INVALID_ARGUMENT;
    *out_len = 0;
    if (len > SIZE_MAX - 8 || cap < SPD_MASK_CAP(len)) {
        if (cap) out[0] = 0;
        return SP_ERR_BUFFER_TOO_SMALL;
    }
    spd_mask_buf b = {out, cap, 0};
    if (len != 0) {
        bool done = false;
        if (kind == SP_VAULT_FIELD_EMAIL) done = spd_mask_email(&b, value, len);
        if (kind == SP_VAULT_FIELD_PHONE) done = spd_mask_phone(&b, value, len);
        if (!done) {
            b.len = 0;
            spd_mask_text(&b, value, len);
        }
    }
    out[b.len] = 0;
    *out_len = b.len;
    return SP_OK;
}
