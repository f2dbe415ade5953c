/*
 * Masking of decrypted PII for GET /v1/profiles/{id} (apps/sealpostd/mask.c):
 * the exact masked form of each kind, UTF-8 first characters kept whole
 * (and invalid ones never copied), values without their kind's shape
 * masked as text, and buffers that are too small refused without a write
 * past cap.
 */
#include "sp_test_util.h"

#include "mask.h"

typedef struct {
    sp_vault_field_kind kind;
    const char *in;
    const char *want;
} mask_case;

static const mask_case cases[] = {
    {SP_VAULT_FIELD_EMAIL, "alice.smith@example.com", "a***@example.com"},
    {SP_VAULT_FIELD_EMAIL, "Alice@EXAMPLE.Com", "A***@example.com"},
    {SP_VAULT_FIELD_EMAIL, "a@b.co", "a***@b.co"},
    {SP_VAULT_FIELD_EMAIL, "\xc3\xa9lise@example.fr", "\xc3\xa9***@example.fr"},
    {SP_VAULT_FIELD_EMAIL, "\xf0\x9f\x98\x80x@example.org", "\xf0\x9f\x98\x80***@example.org"},
    {SP_VAULT_FIELD_EMAIL, "\x80x@example.org", "****@example.org"}, /* invalid lead byte: a star */
    {SP_VAULT_FIELD_EMAIL, "no-at-sign", "n***"},
    {SP_VAULT_FIELD_EMAIL, "@example.org", "@***"},
    {SP_VAULT_FIELD_PHONE, "+14155550101", "+1********01"},
    {SP_VAULT_FIELD_PHONE, "+442079460000", "+4*********00"},
    {SP_VAULT_FIELD_PHONE, "+12345678", "+1*****78"},
    {SP_VAULT_FIELD_PHONE, "+123456", "+1***56"},
    {SP_VAULT_FIELD_PHONE, "+1234", "+***"},     /* too short to keep digits: text */
    {SP_VAULT_FIELD_PHONE, "4155550101", "4***"}, /* not E.164: text */
    {SP_VAULT_FIELD_PHONE, "+1415x550101", "+***"},
    {SP_VAULT_FIELD_TEXT, "Ada Lovelace", "A***"},
    {SP_VAULT_FIELD_TEXT, "\xe4\xb8\xad\xe6\x96\x87", "\xe4\xb8\xad***"},
    {SP_VAULT_FIELD_TEXT, "\xe4\xb8", "****"},       /* truncated sequence */
    {SP_VAULT_FIELD_TEXT, "\xed\xa0\x80x", "****"},  /* a surrogate */
    {SP_VAULT_FIELD_TEXT, "\xc0\xafx", "****"},      /* overlong */
    {SP_VAULT_FIELD_TEXT, "x", "x***"},
    {SP_VAULT_FIELD_TEXT, "", ""},
    {SP_VAULT_FIELD_EMAIL, "", ""},
    {SP_VAULT_FIELD_PHONE, "", ""},
};

static void test_cases(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        const mask_case *c = &cases[i];
        size_t len = strlen(c->in);
        char out[128];
        size_t out_len = 99;
        assert_ok(spd_mask(c->kind, c->in, len, out, sizeof out, &out_len));
        if (strcmp(out, c->want) != 0) fail_msg("case %zu: got '%s', want '%s'", i, out, c->want);
        assert_int_equal(out_len, strlen(c->want));
        /* the smallest buffer allowed is enough */
        char *exact = malloc(SPD_MASK_CAP(len));
        assert_non_null(exact);
        assert_ok(spd_mask(c->kind, c->in, len, exact, SPD_MASK_CAP(len), &out_len));
        assert_string_equal(exact, c->want);
        free(exact);
    }
}

static void test_never_reveals_more(void **state) {
    (void)state;
    /* the hidden part of an email does not show its length */
    char a[64], b[64];
    size_t la, lb;
    assert_ok(spd_mask(SP_VAULT_FIELD_EMAIL, "ab@x.org", 8, a, sizeof a, &la));
    assert_ok(spd_mask(SP_VAULT_FIELD_EMAIL, "abcdefghij@x.org", 16, b, sizeof b, &lb));
    assert_string_equal(a, b);
    /* a phone number keeps its first 2 and last 2 characters only */
    const char *phone = "+358401234567";
    assert_ok(spd_mask(SP_VAULT_FIELD_PHONE, phone, strlen(phone), a, sizeof a, &la));
    assert_int_equal(la, strlen(phone));
    size_t stars = 0;
    for (size_t i = 0; i < la; i++) stars += a[i] == '*';
    assert_int_equal(stars, strlen(phone) - 4);
}

static void test_small_buffers(void **state) {
    (void)state;
    const char *in = "alice@example.com";
    size_t len = strlen(in);
    char out[64];
    size_t out_len = 5;
    memset(out, 'Z', sizeof out);
    assert_rc(spd_mask(SP_VAULT_FIELD_EMAIL, in, len, out, SPD_MASK_CAP(len) - 1, &out_len), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(out_len, 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 'Z');
    assert_rc(spd_mask(SP_VAULT_FIELD_EMAIL, in, len, out, 0, &out_len), SP_ERR_BUFFER_TOO_SMALL);
    assert_rc(spd_mask(SP_VAULT_FIELD_EMAIL, NULL, 3, out, sizeof out, &out_len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(spd_mask(SP_VAULT_FIELD_EMAIL, in, len, NULL, sizeof out, &out_len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(spd_mask(SP_VAULT_FIELD_EMAIL, in, len, out, sizeof out, NULL), SP_ERR_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_never_reveals_more),
        cmocka_unit_test(test_small_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
