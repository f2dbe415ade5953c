/*
 * Who may talk to the relay: CIDR parsing and matching (IPv4, IPv6,
 * IPv4-mapped IPv6, prefixes on byte and bit boundaries), the credential
 * check (right, wrong key, wrong secret, expired, rotated: an old and a new
 * secret side by side, missing or overlong headers, merchant and
 * sub-merchant), and which callback URLs fall inside the allowed prefixes.
 */
#include "sp_test_util.h"

#include <arpa/inet.h>

#include "relay.h"

static relay_config cfg;

static void hash_hex(const char *secret, char out[65]) {
    uint8_t h[32];
    relay_sha256(secret, strlen(secret), h);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void add_credential(const char *key, const char *secret, int64_t expires) {
    char hex[65], line[400];
    hash_hex(secret, hex);
    snprintf(line, sizeof line, "%s:%s:%lld", key, hex, (long long)expires);
    assert_ok(relay_credential_parse(line, &cfg.credentials[cfg.n_credentials++]));
}

static int setup(void **state) {
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.merchant_id, sizeof cfg.merchant_id, "m1");
    snprintf(cfg.sub_merchants[0], sizeof cfg.sub_merchants[0], "sub-a");
    cfg.n_sub_merchants = 1;
    add_credential("ak1", "old-secret", 2000);      /* expires at t=2000 */
    add_credential("ak1", "new-secret", 0);         /* issued before the old one expired */
    add_credential("ak2", "other-secret", 5000);
    snprintf(cfg.callback_allow[0], sizeof cfg.callback_allow[0], "https://p.example/cb/");
    snprintf(cfg.callback_allow[1], sizeof cfg.callback_allow[1], "http://127.0.0.1:9000/x/");
    cfg.n_callback_allow = 2;
    return 0;
}

static void test_credentials(void **state) {
    (void)state;
    assert_int_equal(relay_auth_check(&cfg, "ak1", "old-secret", "m1", NULL, 1000), RELAY_AUTH_OK);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", "m1", NULL, 1000), RELAY_AUTH_OK);
    /* rotated: after the old one expires, only the new works */
    assert_int_equal(relay_auth_check(&cfg, "ak1", "old-secret", "m1", NULL, 2000), RELAY_AUTH_EXPIRED);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", "m1", NULL, 999999999), RELAY_AUTH_OK);
    /* a secret belongs to its key */
    assert_int_equal(relay_auth_check(&cfg, "ak2", "new-secret", "m1", NULL, 1000), RELAY_AUTH_BAD_KEY);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "wrong", "m1", NULL, 1000), RELAY_AUTH_BAD_KEY);
    assert_int_equal(relay_auth_check(&cfg, "ak9", "new-secret", "m1", NULL, 1000), RELAY_AUTH_BAD_KEY);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret-", "m1", NULL, 1000), RELAY_AUTH_BAD_KEY);
    assert_int_equal(relay_auth_check(&cfg, "ak2", "other-secret", "m1", NULL, 5000), RELAY_AUTH_EXPIRED);
    assert_int_equal(relay_auth_check(&cfg, "ak2", "other-secret", "m1", NULL, 4999), RELAY_AUTH_OK);
    /* merchants */
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", "m2", NULL, 1000), RELAY_AUTH_MERCHANT);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", "m1", "sub-a", 1000), RELAY_AUTH_OK);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", "m1", "sub-b", 1000), RELAY_AUTH_MERCHANT);
    /* a bad credential is reported as such even with a wrong merchant (no probing of merchant ids) */
    assert_int_equal(relay_auth_check(&cfg, "ak1", "wrong", "m2", NULL, 1000), RELAY_AUTH_BAD_KEY);
    /* missing and overlong headers */
    assert_int_equal(relay_auth_check(&cfg, NULL, "new-secret", "m1", NULL, 1000), RELAY_AUTH_MISSING);
    assert_int_equal(relay_auth_check(&cfg, "ak1", NULL, "m1", NULL, 1000), RELAY_AUTH_MISSING);
    assert_int_equal(relay_auth_check(&cfg, "ak1", "new-secret", NULL, NULL, 1000), RELAY_AUTH_MISSING);
    assert_int_equal(relay_auth_check(&cfg, "", "new-secret", "m1", NULL, 1000), RELAY_AUTH_MISSING);
    char long_secret[RELAY_MAX_API_SECRET + 2];
    memset(long_secret, 's', sizeof long_secret - 1);
    long_secret[sizeof long_secret - 1] = '\0';
    assert_int_equal(relay_auth_check(&cfg, "ak1", long_secret, "m1", NULL, 1000), RELAY_AUTH_MISSING);
    char long_key[RELAY_MAX_ACCESS_KEY + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    assert_int_equal(relay_auth_check(&cfg, long_key, "new-secret", "m1", NULL, 1000), RELAY_AUTH_MISSING);
    assert_string_equal(relay_auth_result_name(RELAY_AUTH_EXPIRED), "expired_credential");
}

static void test_credential_parse_keeps_no_secret(void **state) {
    (void)state;
    relay_credential c;
    assert_ok(relay_credential_parse("k:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08:7", &c));
    assert_int_equal(c.expires, 7);
    uint8_t want[32];
    relay_sha256("test", 4, want); /* the hash above is SHA-256("test") */
    assert_memory_equal(c.secret_hash, want, 32);
    relay_sha256("k", 1, want);
    assert_memory_equal(c.key_hash, want, 32);
}

static void addr(const char *text, uint8_t out[16], int *family) {
    memset(out, 0, 16);
    if (inet_pton(AF_INET, text, out) == 1) *family = 4;
    else {
        assert_int_equal(inet_pton(AF_INET6, text, out), 1);
        *family = 6;
    }
}

static bool allowed(const sp_allow_list *l, const char *text) {
    uint8_t a[16];
    int fam;
    addr(text, a, &fam);
    return sp_allow_list_contains(l, a, fam);
}

static void test_cidr(void **state) {
    (void)state;
    sp_allow_list l;
    char err[128];
    assert_ok(sp_allow_list_parse("10.1.2.3/8, 192.168.1.128/25 ,2001:db8::/33,127.0.0.1", &l, err, sizeof err));
    assert_int_equal(l.count, 4);
    assert_true(allowed(&l, "10.200.0.1"));
    assert_false(allowed(&l, "11.0.0.1"));
    assert_true(allowed(&l, "192.168.1.200"));
    assert_false(allowed(&l, "192.168.1.127"));
    assert_true(allowed(&l, "2001:db8:7fff::1"));
    assert_false(allowed(&l, "2001:db8:8000::1"));
    assert_true(allowed(&l, "127.0.0.1"));
    assert_false(allowed(&l, "127.0.0.2"));
    assert_true(allowed(&l, "::ffff:10.9.9.9")); /* IPv4 on a dual-stack socket */
    assert_false(allowed(&l, "::1"));
    static const char *const bad[] = {"10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/", "10.0.0.0/-1", ",", "1.2.3.4,,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (sp_allow_list_parse(bad[i], &l, err, sizeof err) == SP_OK) fail_msg("'%s' accepted", bad[i]);
    assert_ok(sp_allow_list_parse("", &l, err, sizeof err));
    assert_int_equal(l.count, 0);
    assert_false(allowed(&l, "127.0.0.1")); /* empty: nobody */
    assert_ok(sp_allow_list_parse("0.0.0.0/0", &l, err, sizeof err));
    assert_true(allowed(&l, "203.0.113.9"));
}

static void test_url_allowed(void **state) {
    (void)state;
    assert_true(relay_url_allowed(&cfg, "https://p.example/cb/dlr"));
    assert_true(relay_url_allowed(&cfg, "http://127.0.0.1:9000/x/anything?q=1"));
    assert_false(relay_url_allowed(&cfg, "https://p.example/cbx"));
    assert_false(relay_url_allowed(&cfg, "https://p.example.evil/cb/"));
    assert_false(relay_url_allowed(&cfg, "http://127.0.0.1:9000/y/"));
    assert_false(relay_url_allowed(&cfg, "https://p.example/cb/../admin"));
    assert_false(relay_url_allowed(&cfg, "https://p.example/cb/%2e%2e/admin"));
    assert_false(relay_url_allowed(&cfg, "https://p.example/cb/a b"));
    assert_false(relay_url_allowed(&cfg, "https://p.example/cb/#frag"));
    assert_false(relay_url_allowed(&cfg, ""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_credentials, setup), cmocka_unit_test(test_credential_parse_keeps_no_secret),
        cmocka_unit_test(test_cidr),                    cmocka_unit_test_setup(test_url_allowed, setup),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
