/*
 * Kannel: the sendsms URL (every parameter form-encoded, dlr-mask 31, a
 * dlr-url back to the relay's listener with the message id and Kannel's
 * escapes and its tag, UCS-2 only for non-ASCII text, optional sender and smsc, a URL
 * that does not fit), the DLR type mapping with its priorities and codes,
 * and the DLR/MO query parser's decoding and refusals.
 */
#include "sp_test_util.h"

#include "relay.h"

static relay_config cfg;

static int setup(void **state) {
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.kannel_sendsms_url, sizeof cfg.kannel_sendsms_url, "http://127.0.0.1:13013/cgi-bin/sendsms");
    snprintf(cfg.kannel_username, sizeof cfg.kannel_username, "relay user");
    snprintf(cfg.kannel_password, sizeof cfg.kannel_password, "p&ss=1");
    cfg.kannel_dlr_port = 13080;
    return 0;
}

static relay_record sms(void) {
    relay_record r = {.kind = RELAY_KIND_SMS, .message_id = "msg_1", .to = "+14155550100", .text = "Hi Ada, 50% off!",
                      .sender = "", .from = "", .from_name = "", .reply_to = "", .subject = "", .html = "",
                      .dlr_url = "", .inbound_url = ""};
    return r;
}

static void test_url(void **state) {
    (void)state;
    relay_record r = sms();
    char url[4096];
    assert_ok(relay_kannel_url(&cfg, &r, NULL, url, sizeof url));
    assert_string_equal(url,
                        "http://127.0.0.1:13013/cgi-bin/sendsms?username=relay+user&password=p%26ss%3D1"
                        "&to=%2B14155550100&text=Hi+Ada%2C+50%25+off%21&charset=UTF-8&dlr-mask=31"
                        "&dlr-url=http%3A%2F%2F127.0.0.1%3A13080%2Fkannel%2Fdlr%3Fmeta%3Dmsg_1%26type%3D%25d"
                        "%26smsc%3D%25i%26ts%3D%25T");
    r.sender = "ACME";
    r.text = "Grüße";
    snprintf(cfg.kannel_smsc, sizeof cfg.kannel_smsc, "smsc0");
    assert_ok(relay_kannel_url(&cfg, &r, "0123456789abcdef0123456789abcdef", url, sizeof url));
    assert_non_null(strstr(url, "&text=Gr%C3%BC%C3%9Fe&from=ACME&smsc=smsc0&charset=UTF-8&coding=2&dlr-mask=31"));
    assert_non_null(strstr(url, "%2Fkannel%2Fdlr%3Fmeta%3Dmsg_1%26sig%3D0123456789abcdef0123456789abcdef%26type%3D%25d"));
    assert_rc(relay_kannel_url(&cfg, &r, NULL, url, 100), SP_ERR_BUFFER_TOO_SMALL);
    for (size_t i = 0; i < 100; i++) assert_int_equal(url[i], 0); /* wiped: it held the number */
}

static void test_form_encode(void **state) {
    (void)state;
    char out[64];
    size_t n = 0;
    assert_ok(relay_form_encode("a b*-._~/", 9, out, sizeof out, &n));
    assert_string_equal(out, "a+b*-._%7E%2F");
    assert_int_equal(n, 13);
    assert_rc(relay_form_encode("////", 4, out, 12, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_rc(relay_form_encode("ab", 2, out, 2, &n), SP_ERR_BUFFER_TOO_SMALL);
}

static void test_dlr_map(void **state) {
    (void)state;
    int code = -1;
    assert_int_equal(relay_dlr_map(1, &code), RELAY_DLR_DELIVERED);
    assert_int_equal(code, 0);
    assert_int_equal(relay_dlr_map(2, &code), RELAY_DLR_FAILED);
    assert_int_equal(code, 901);
    assert_int_equal(relay_dlr_map(16, &code), RELAY_DLR_FAILED);
    assert_int_equal(code, 902);
    assert_int_equal(relay_dlr_map(8, &code), RELAY_DLR_BUFFERED);
    assert_int_equal(relay_dlr_map(4, &code), RELAY_DLR_BUFFERED);
    assert_int_equal(relay_dlr_map(0, &code), RELAY_DLR_UNKNOWN);
    assert_int_equal(relay_dlr_map(32, &code), RELAY_DLR_UNKNOWN);
    /* priorities: 1 over everything, then 2 and 16 over 8 and 4 */
    assert_int_equal(relay_dlr_map(1 | 2 | 16, &code), RELAY_DLR_DELIVERED);
    assert_int_equal(relay_dlr_map(8 | 2, &code), RELAY_DLR_FAILED);
    assert_int_equal(code, 901);
    assert_int_equal(relay_dlr_map(8 | 16, &code), RELAY_DLR_FAILED);
    assert_int_equal(code, 902);
    assert_int_equal(relay_dlr_map(4 | 8, &code), RELAY_DLR_BUFFERED);
}

static relay_kannel_query q;

static sp_error parse(const char *s) { return relay_kannel_query_parse(s, strlen(s), &q); }

static void test_query(void **state) {
    (void)state;
    assert_ok(parse("meta=msg_1&type=1&smsc=fake0&ts=1714000100"));
    assert_string_equal(q.meta, "msg_1");
    assert_true(q.has_type);
    assert_int_equal(q.type, 1);
    assert_string_equal(q.smsc, "fake0");
    assert_int_equal(q.ts, 1714000100);
    assert_false(q.has_from);
    assert_ok(parse("meta=m&sig=0123456789abcdef0123456789abcdef&type=8"));
    assert_string_equal(q.sig, "0123456789abcdef0123456789abcdef");
    assert_ok(parse("from=%2B15551234567&text=STOP+now%21&ts=1&unknown=zz&&x"));
    assert_string_equal(q.from, "+15551234567");
    assert_string_equal(q.text, "STOP now!");
    assert_int_equal(q.text_len, 9);
    assert_true(q.has_text);
    assert_ok(parse(""));
    assert_ok(parse("text="));
    assert_true(q.has_text);
    assert_int_equal(q.text_len, 0);
    static const char *const bad[] = {
        "meta=a/b",       "meta=",           "type=x",          "type=65536", "type=-1",   "ts=12a",
        "ts=12345678901234", "from=",        "text=%zz",        "text=%4",    "text=a%00b", "meta=a&meta=b",
        "smsc=%0a",       "from=%0d",        "sig=0123",        "sig=0123456789ABCDEF0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]) != SP_ERR_INVALID_ARGUMENT) fail_msg("'%s' was not refused", bad[i]);
        assert_true(sp_test_all_zero(&q, sizeof q));
    }
    char big[RELAY_MAX_KANNEL_QUERY + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_rc(parse(big), SP_ERR_TOO_LARGE);
    /* the longest text: 1600 characters of up to 4 bytes */
    char *t = malloc(RELAY_MAX_KANNEL_QUERY + 1);
    memcpy(t, "text=", 5);
    memset(t + 5, 'b', RELAY_MAX_KANNEL_QUERY - 5);
    t[RELAY_MAX_KANNEL_QUERY] = '\0';
    assert_rc(parse(t), SP_ERR_INVALID_ARGUMENT); /* 8187 bytes > 6400 */
    t[5 + RELAY_MAX_SMS_TEXT * 4] = '\0';
    assert_ok(parse(t));
    assert_int_equal(q.text_len, RELAY_MAX_SMS_TEXT * 4);
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_url, setup), cmocka_unit_test(test_form_encode),
        cmocka_unit_test(test_dlr_map),          cmocka_unit_test(test_query),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
