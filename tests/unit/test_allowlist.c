/*
 * The allow-lists (src/http/allowlist.c) sealpostd and sealpost-relay use: IPv4 and IPv6 CIDRs at their edge prefixes, bare
 * addresses, host bits cleared, IPv4-mapped entries and peers, comma lists
 * with their limit, and the junk that must be refused.
 */
#include <arpa/inet.h>

#include "sp_test_util.h"

#include "sealpost/allowlist.h"

static void addr_of(const char *text, uint8_t out[16], int *family) {
    memset(out, 0, 16);
    if (inet_pton(AF_INET, text, out) == 1) {
        *family = 4;
        return;
    }
    assert_int_equal(inet_pton(AF_INET6, text, out), 1);
    *family = 6;
}

static bool list_has(const char *list_text, const char *peer) {
    sp_allow_list list;
    char err[128];
    assert_ok(sp_allow_list_parse(list_text, &list, err, sizeof err));
    uint8_t addr[16];
    int family;
    addr_of(peer, addr, &family);
    return sp_allow_list_contains(&list, addr, family);
}

static void expect_format(const char *in, const char *want) {
    sp_cidr c;
    char out[64];
    assert_ok(sp_cidr_parse(in, &c));
    assert_ok(sp_cidr_format(&c, out, sizeof out));
    assert_string_equal(out, want);
}

static void test_parse(void **state) {
    (void)state;
    sp_cidr c;
    assert_ok(sp_cidr_parse("10.0.0.0/8", &c));
    assert_int_equal(c.family, 4);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(c.addr[0], 10);
    assert_ok(sp_cidr_parse("::1/128", &c));
    assert_int_equal(c.family, 6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(c.addr[15], 1);
    expect_format("192.168.1.7", "192.168.1.7/32");
    expect_format("2001:db8::1", "2001:db8::1/128");
    expect_format("0.0.0.0/0", "0.0.0.0/0");
    expect_format("::/0", "::/0");
    expect_format("1.2.3.4/32", "1.2.3.4/32");
    /* host bits beyond the prefix are cleared, not refused */
    expect_format("10.1.2.3/8", "10.0.0.0/8");
    expect_format("192.168.1.255/25", "192.168.1.128/25");
    expect_format("2001:db8:ffff::1/33", "2001:db8:8000::/33");
    /* an IPv4-mapped entry is the IPv4 network it stands for */
    expect_format("::ffff:10.0.0.0/104", "10.0.0.0/8");
    expect_format("::ffff:1.2.3.4", "1.2.3.4/32");
}

static void test_refused(void **state) {
    (void)state;
    static const char *const junk[] = {
        "", "1.2.3.4/33", "::/129", "1.2.3", "1.2.3.4/", "1.2.3.4/a", "1.2.3.4/-1", "10.0.0.0/8/8",
        " 1.2.3.4", "1.2.3.4 ", "256.0.0.1", "1.2.3.4/1000", "localhost", "::g", "1.2.3.4/+8", "/8",
        "01.2.3.4", "1.2.3.4\n",
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        sp_cidr c;
        if (sp_cidr_parse(junk[i], &c) != SP_ERR_INVALID_ARGUMENT) fail_msg("accepted '%s'", junk[i]);
    }
    char long_text[200];
    memset(long_text, '1', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    sp_cidr c;
    assert_rc(sp_cidr_parse(long_text, &c), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_cidr_parse(NULL, &c), SP_ERR_INVALID_ARGUMENT);
}

static void test_contains(void **state) {
    (void)state;
    assert_true(list_has("10.0.0.0/8", "10.255.1.2"));
    assert_false(list_has("10.0.0.0/8", "11.0.0.1"));
    assert_true(list_has("192.168.1.128/25", "192.168.1.200"));
    assert_false(list_has("192.168.1.128/25", "192.168.1.127"));
    assert_true(list_has("0.0.0.0/0", "203.0.113.9"));
    assert_false(list_has("0.0.0.0/0", "::1"));
    assert_true(list_has("::/0", "2001:db8::5"));
    assert_true(list_has("::1/128", "::1"));
    assert_false(list_has("::1/128", "::2"));
    assert_true(list_has("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(list_has("2001:db8::/32", "2001:db9::1"));
    assert_true(list_has("1.2.3.4", "1.2.3.4"));
    assert_false(list_has("1.2.3.4", "1.2.3.5"));
    /* a dual-stack socket reports IPv4 peers as mapped IPv6 addresses */
    assert_true(list_has("127.0.0.1/32", "::ffff:127.0.0.1"));
    assert_false(list_has("127.0.0.1/32", "::ffff:127.0.0.2"));
    assert_false(list_has("::1/128", "::ffff:127.0.0.1"));
    /* several entries, blanks around them */
    assert_true(list_has(" 10.0.0.0/8 , ::1/128 ", "::1"));
    assert_true(list_has(" 10.0.0.0/8 , ::1/128 ", "10.0.0.1"));
    assert_false(list_has(" 10.0.0.0/8 , ::1/128 ", "127.0.0.1"));
    /* an empty list lets nobody in */
    assert_false(list_has("", "127.0.0.1"));
    uint8_t addr[16] = {127, 0, 0, 1};
    assert_false(sp_allow_list_contains(NULL, addr, 4));
    sp_allow_list any;
    assert_ok(sp_allow_list_parse("0.0.0.0/0", &any, NULL, 0));
    assert_false(sp_allow_list_contains(&any, addr, 5));
}

static void test_list_limits(void **state) {
    (void)state;
    char text[64 * 20 + 32] = "";
    size_t len = 0;
    for (int i = 0; i < 64; i++) len += (size_t)snprintf(text + len, sizeof text - len, "%s10.0.%d.0/24", i ? "," : "", i);
    sp_allow_list list;
    char err[128];
    assert_ok(sp_allow_list_parse(text, &list, err, sizeof err));
    assert_int_equal(list.count, 64);
    snprintf(text + len, sizeof text - len, ",10.1.0.0/24");
    assert_rc(sp_allow_list_parse(text, &list, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "more than 64"));
    assert_rc(sp_allow_list_parse("10.0.0.0/8,,::1", &list, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "empty entry"));
    assert_rc(sp_allow_list_parse("10.0.0.0/8, nope", &list, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_string_equal(err, "'nope' is not a CIDR (a.b.c.d/n or an IPv6 address/n)");
    assert_ok(sp_allow_list_parse("10.0.0.0/8,", &list, err, sizeof err));
    assert_int_equal(list.count, 1);
    char small[8];
    sp_cidr c;
    assert_ok(sp_cidr_parse("2001:db8::/32", &c));
    assert_rc(sp_cidr_format(&c, small, sizeof small), SP_ERR_BUFFER_TOO_SMALL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_contains),
        cmocka_unit_test(test_list_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
