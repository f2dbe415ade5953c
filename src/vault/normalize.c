/*
 * What a blind index hashes: one spelling per email address or phone
 * number, so the same person typed two ways finds the same profile.
 *
 * The rules are deliberately few and byte-exact (docs/VAULT.md): an index
 * that changed its mind about a spelling would silently stop finding rows
 * written before. Email: trimmed, ASCII lower-cased, one '@', a local part,
 * a domain with a dot, nothing invisible inside; bytes above 0x7f are kept as
 * they are (no Unicode folding, which would depend on a table version).
 * Phone: E.164, '+' and 8..15 digits, from the separators people type, the
 * "00" international prefix, or a national number with the configured
 * country code. Text: trimmed. Each rule maps its own output to itself, so
 * a stored normalised value can be normalised again safely.
 *
 * Also here: the checks for the names that go into a blob's additional data.
 */
#include "vault/sp_vault_internal.h"

static bool sp_vault_is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static bool sp_vault_is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

bool sp_vault_field_name_ok(const char *s, size_t *len_out) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_VAULT_MAX_FIELD + 1);
    if (n == 0 || n > SP_VAULT_MAX_FIELD) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    if (len_out) *len_out = n;
    return true;
}

bool sp_vault_profile_id_ok(const char *s, size_t *len_out) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_VAULT_MAX_PROFILE_ID + 1);
    if (n == 0 || n > SP_VAULT_MAX_PROFILE_ID) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e) return false;
    }
    if (len_out) *len_out = n;
    return true;
}

bool sp_vault_purpose_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_VAULT_MAX_PURPOSE + 1);
    if (n == 0 || n > SP_VAULT_MAX_PURPOSE) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
    }
    return true;
}

bool sp_vault_country_code_ok(const char *s) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_VAULT_MAX_COUNTRY_CODE + 1);
    if (n == 0 || n > SP_VAULT_MAX_COUNTRY_CODE || s[0] == '0') return false;
    for (size_t i = 0; i < n; i++) {
        if (!sp_vault_is_digit((uint8_t)s[i])) return false;
    }
    return true;
}

sp_span sp_vault_trim(const uint8_t *value, size_t len) {
    size_t start = 0, end = len;
    while (start < end && sp_vault_is_space(value[start])) start++;
    while (end > start && sp_vault_is_space(value[end - 1])) end--;
    sp_span s = {end > start ? value + start : value, end - start};
    return s;
}

static sp_error sp_norm_email(sp_span s, sp_wbuf *out) {
    SP_ENSURE(s.len > 0 && s.len <= SP_VAULT_MAX_EMAIL, SP_ERR_INVALID_ARGUMENT);
    size_t at = s.len; /* none yet */
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.data[i];
        /* spaces and control characters inside: a pasted display name or a
         * line break, not an address */
        SP_ENSURE(c > 0x20 && c != 0x7f, SP_ERR_INVALID_ARGUMENT);
        if (c == '@') {
            SP_ENSURE(at == s.len, SP_ERR_INVALID_ARGUMENT);
            at = i;
        }
    }
    SP_ENSURE(at > 0 && at < s.len - 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(memchr(s.data + at + 1, '.', s.len - at - 1) != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t *dst;
    SP_GUARD(sp_wbuf_reserve(out, s.len, &dst));
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.data[i];
        dst[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
    }
    return SP_OK;
}

/* Separators people type inside a number; anything else that is not a digit
 * (letters, "ext.", a second '+') makes it not a phone number. */
static bool sp_phone_separator(uint8_t c) {
    return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/';
}

static sp_error sp_norm_phone_digits(sp_span s, const char *cc, sp_wbuf *out, uint8_t *digits, size_t cap) {
    /* "00" + 15 digits, or a trunk '0' + a long national number: a few more
     * digits than E.164 allows may be typed before the prefix is taken off */
    size_t nd = 0;
    bool plus = false;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.data[i];
        if (sp_phone_separator(c)) continue;
        if (c == '+') {
            SP_ENSURE(!plus && nd == 0, SP_ERR_INVALID_ARGUMENT);
            plus = true;
            continue;
        }
        SP_ENSURE(sp_vault_is_digit(c) && nd < cap, SP_ERR_INVALID_ARGUMENT);
        digits[nd++] = c;
    }
    const uint8_t *national = digits;
    size_t n = nd;
    const char *prefix = "";
    if (!plus && nd >= 2 && digits[0] == '0' && digits[1] == '0') {
        national += 2; /* the international call prefix most countries use */
        n -= 2;
    } else if (!plus) {
        SP_ENSURE(cc != NULL, SP_ERR_INVALID_ARGUMENT); /* no country to assume */
        if (n > 0 && national[0] == '0') {
            national++; /* the national trunk prefix, e.g. 020 ... in the UK */
            n--;
        }
        prefix = cc;
    }
    size_t total = strlen(prefix) + n;
    SP_ENSURE(total >= SP_VAULT_PHONE_MIN_DIGITS && total <= SP_VAULT_PHONE_MAX_DIGITS, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE((prefix[0] ? (uint8_t)prefix[0] : national[0]) != '0', SP_ERR_INVALID_ARGUMENT);
    size_t mark = out->len;
    sp_error rc = sp_wbuf_put(out, "+", 1);
    if (rc == SP_OK) rc = sp_wbuf_put_str(out, prefix);
    if (rc == SP_OK) rc = sp_wbuf_put(out, national, n);
    if (rc != SP_OK) out->len = mark;
    return rc;
}

/* The digits are a phone number: wiped on every way out. */
static sp_error sp_norm_phone(sp_span s, const char *cc, sp_wbuf *out) {
    uint8_t digits[SP_VAULT_PHONE_MAX_DIGITS + 4];
    sp_error rc = sp_norm_phone_digits(s, cc, out, digits, sizeof digits);
    sp_wipe(digits, sizeof digits);
    return rc;
}

sp_error sp_vault_normalize_into(sp_vault_field_kind kind, const char *cc, const uint8_t *value, size_t len,
                                 sp_wbuf *out) {
    SP_ENSURE(out != NULL && (value != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cc == NULL || sp_vault_country_code_ok(cc), SP_ERR_INVALID_ARGUMENT);
    sp_span s = sp_vault_trim(value, len);
    switch (kind) {
    case SP_VAULT_FIELD_EMAIL: return sp_norm_email(s, out);
    case SP_VAULT_FIELD_PHONE: return sp_norm_phone(s, cc, out);
    case SP_VAULT_FIELD_TEXT:
        SP_ENSURE(s.len > 0, SP_ERR_INVALID_ARGUMENT); /* nothing to find a profile by */
        return sp_wbuf_put(out, s.data, s.len);
    default: return SP_ERR_INVALID_ARGUMENT;
    }
}

sp_error sp_vault_normalize(sp_vault_field_kind kind, const char *default_country_code, const uint8_t *value,
                            size_t len, char *out, size_t cap, size_t *out_len) {
    SP_ENSURE(out != NULL && out_len != NULL && cap > 0, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    SP_ENSURE(len <= SP_VAULT_MAX_VALUE, SP_ERR_TOO_LARGE);
    sp_wbuf b = sp_wbuf_of(out, cap - 1); /* room kept for the NUL */
    sp_error rc = sp_vault_normalize_into(kind, default_country_code, value, len, &b);
    if (rc != SP_OK) {
        out[0] = 0;
        return rc;
    }
    out[b.len] = 0;
    *out_len = b.len;
    return SP_OK;
}
