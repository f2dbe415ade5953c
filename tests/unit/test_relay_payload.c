/*
 * The relay payload parser: every field of both kinds, optional fields
 * absent and empty, each rule broken once (the error names the field and
 * never quotes the value), limits just inside and outside, batches (size,
 * shape, repeated message ids), and JSON-level refusals.
 */
#include "sp_test_util.h"

#include "relay.h"

static relay_payload p;
static char err[256];

static sp_error parse(const char *json) {
    err[0] = '\0';
    return relay_payload_parse((const uint8_t *)json, strlen(json), &p, err, sizeof err);
}

static void test_email_all_fields(void **state) {
    (void)state;
    assert_ok(parse("{\"kind\":\"email\",\"message_id\":\"msg_1\",\"to\":\"ada@example.org\",\"from\":\"news@acme.example\","
                    "\"from_name\":\"Acme\",\"reply_to\":\"help@acme.example\",\"subject\":\"Hi\",\"html\":\"<p>x</p>\","
                    "\"text\":\"x\",\"dlr_url\":\"https://p.example/cb/dlr\"}"));
    assert_int_equal(p.count, 1);
    assert_false(p.batch);
    relay_record *r = &p.records[0];
    assert_int_equal(r->kind, RELAY_KIND_EMAIL);
    assert_string_equal(r->message_id, "msg_1");
    assert_string_equal(r->to, "ada@example.org");
    assert_string_equal(r->from, "news@acme.example");
    assert_string_equal(r->from_name, "Acme");
    assert_string_equal(r->reply_to, "help@acme.example");
    assert_string_equal(r->subject, "Hi");
    assert_string_equal(r->html, "<p>x</p>");
    assert_string_equal(r->text, "x");
    assert_string_equal(r->dlr_url, "https://p.example/cb/dlr");
    assert_string_equal(r->sender, "");
    relay_payload_free(&p);
}

static void test_sms_all_fields(void **state) {
    (void)state;
    assert_ok(parse("{\"kind\":\"sms\",\"message_id\":\"msg_0190a1b2-1:x.y\",\"to\":\"+14155550100\",\"text\":\"Hi Ada\","
                    "\"sender\":\"ACME\",\"dlr_url\":\"\",\"inbound_url\":\"https://p.example/cb/in\"}"));
    relay_record *r = &p.records[0];
    assert_int_equal(r->kind, RELAY_KIND_SMS);
    assert_string_equal(r->to, "+14155550100");
    assert_string_equal(r->sender, "ACME");
    assert_string_equal(r->dlr_url, "");
    assert_string_equal(r->inbound_url, "https://p.example/cb/in");
    assert_string_equal(r->subject, "");
    relay_payload_free(&p);
}

typedef struct bad_case {
    const char *json;
    const char *field;
    sp_error rc;
} bad_case;

static void test_rules(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"{\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\"}", "kind", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"fax\",\"message_id\":\"m\"}", "kind", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"to\":\"+1555123\",\"text\":\"x\"}", "message_id", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m m\",\"to\":\"+1555123\",\"text\":\"x\"}", "message_id", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\",\"subject\":\"s\"}", "subject", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\",\"nope\":\"s\"}", "nope", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"12\",\"text\":\"x\"}", "to", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555x23\",\"text\":\"x\"}", "to", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"\"}", "text", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":5}", "text", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\",\"sender\":\"A;B\"}", "sender", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\",\"from\":\"a@b.cd\"}", "from", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"ada\",\"from\":\"a@b.cd\",\"text\":\"x\"}", "to", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b\",\"text\":\"x\"}", "from", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a<b>@b.cd\",\"from\":\"a@b.cd\",\"text\":\"x\"}", "to", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"reply_to\":\"x\",\"text\":\"x\"}", "reply_to", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"subject\":\"a\\r\\nBcc: x\",\"text\":\"x\"}", "subject", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"from_name\":\"a\\nb\",\"text\":\"x\"}", "from_name", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\"}", "text", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"text\":\"x\",\"sender\":\"A\"}", "sender", SP_ERR_INVALID_ARGUMENT},
        {"{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"text\":\"x\",\"inbound_url\":\"h\"}", "inbound_url", SP_ERR_INVALID_ARGUMENT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_error rc = parse(cases[i].json);
        if (rc != cases[i].rc) fail_msg("case %zu: %s instead of %s", i, sp_error_name(rc), sp_error_name(cases[i].rc));
        if (strncmp(err, cases[i].field, strlen(cases[i].field)) != 0) fail_msg("case %zu: error '%s'", i, err);
        assert_null(p.records);
        assert_null(p.doc);
        /* the message never quotes a value */
        assert_null(strstr(err, "1555"));
        assert_null(strstr(err, "@b"));
    }
}

static void test_json_level(void **state) {
    (void)state;
    assert_rc(parse("not json"), SP_ERR_BAD_JSON);
    assert_non_null(strstr(err, "line 1"));
    assert_rc(parse("[1]"), SP_ERR_BAD_JSON);
    assert_rc(parse("{\"kind\":\"sms\",\"kind\":\"sms\"}"), SP_ERR_BAD_JSON); /* duplicate key */
    assert_rc(parse(""), SP_ERR_BAD_JSON);
    static const uint8_t nul[] = "{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"a\\u0000b\"}";
    assert_rc(relay_payload_parse(nul, sizeof nul - 1, &p, err, sizeof err), SP_ERR_BAD_JSON);
}

static char *repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_limits(void **state) {
    (void)state;
    char *doc = malloc(4u << 20);
    char *t = repeat('x', RELAY_MAX_SMS_TEXT);
    snprintf(doc, 4u << 20, "{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"%s\"}", t);
    assert_ok(parse(doc));
    relay_payload_free(&p);
    free(t);
    t = repeat('x', RELAY_MAX_SMS_TEXT + 1);
    snprintf(doc, 4u << 20, "{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"%s\"}", t);
    assert_rc(parse(doc), SP_ERR_TOO_LARGE);
    free(t);
    t = repeat('s', RELAY_MAX_SUBJECT + 1);
    snprintf(doc, 4u << 20, "{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"subject\":\"%s\",\"text\":\"x\"}", t);
    assert_rc(parse(doc), SP_ERR_TOO_LARGE);
    free(t);
    t = repeat('h', RELAY_MAX_EMAIL_BODY + 1);
    snprintf(doc, 4u << 20, "{\"kind\":\"email\",\"message_id\":\"m\",\"to\":\"a@b.cd\",\"from\":\"a@b.cd\",\"html\":\"%s\"}", t);
    assert_rc(parse(doc), SP_ERR_TOO_LARGE);
    free(t);
    t = repeat('i', RELAY_MAX_MESSAGE_ID);
    snprintf(doc, 4u << 20, "{\"kind\":\"sms\",\"message_id\":\"%s\",\"to\":\"+1555123\",\"text\":\"x\"}", t);
    assert_ok(parse(doc));
    relay_payload_free(&p);
    free(t);
    t = repeat('i', RELAY_MAX_MESSAGE_ID + 1);
    snprintf(doc, 4u << 20, "{\"kind\":\"sms\",\"message_id\":\"%s\",\"to\":\"+1555123\",\"text\":\"x\"}", t);
    assert_rc(parse(doc), SP_ERR_INVALID_ARGUMENT);
    free(t);
    t = repeat('u', RELAY_MAX_URL);
    snprintf(doc, 4u << 20, "{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\",\"dlr_url\":\"%s\"}", t);
    assert_rc(parse(doc), SP_ERR_TOO_LARGE);
    free(t);
    /* 20 digits after + is the longest number */
    assert_ok(parse("{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+12345678901234567890\",\"text\":\"x\"}"));
    relay_payload_free(&p);
    assert_rc(parse("{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+123456789012345678901\",\"text\":\"x\"}"),
              SP_ERR_INVALID_ARGUMENT);
    free(doc);
}

static char *batch_of(size_t n) {
    size_t cap = 100 + n * 100;
    char *doc = malloc(cap);
    size_t len = (size_t)snprintf(doc, cap, "{\"messages\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(doc + len, cap - len, "%s{\"kind\":\"sms\",\"message_id\":\"m%zu\",\"to\":\"+1555%04zu\",\"text\":\"t\"}",
                                i ? "," : "", i, i);
    snprintf(doc + len, cap - len, "]}");
    return doc;
}

static void test_batches(void **state) {
    (void)state;
    char *doc = batch_of(RELAY_MAX_BATCH);
    assert_ok(parse(doc));
    assert_true(p.batch);
    assert_int_equal(p.count, RELAY_MAX_BATCH);
    assert_string_equal(p.records[999].message_id, "m999");
    relay_payload_free(&p);
    free(doc);
    doc = batch_of(RELAY_MAX_BATCH + 1);
    assert_rc(parse(doc), SP_ERR_TOO_LARGE);
    free(doc);
    assert_rc(parse("{\"messages\":[]}"), SP_ERR_INVALID_ARGUMENT);
    assert_rc(parse("{\"messages\":{}}"), SP_ERR_INVALID_ARGUMENT);
    assert_rc(parse("{\"messages\":[{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\"}],\"x\":1}"),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(parse("{\"messages\":[{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\"},"
                    "{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555124\",\"text\":\"y\"}]}"),
              SP_ERR_INVALID_ARGUMENT);
    assert_string_equal(err, "messages[1].message_id: repeats an earlier record's");
    assert_rc(parse("{\"messages\":[{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\"},7]}"),
              SP_ERR_INVALID_ARGUMENT);
    assert_string_equal(err, "messages[1].record: must be a JSON object");
}

static void test_message_id(void **state) {
    (void)state;
    assert_true(relay_message_id_valid("msg_0190a1b2-c3d4:e.f"));
    assert_false(relay_message_id_valid(""));
    assert_false(relay_message_id_valid("a/b"));
    assert_false(relay_message_id_valid("é"));
}

static void test_alloc_failures(void **state) {
    (void)state;
    const char *doc = "{\"messages\":[{\"kind\":\"sms\",\"message_id\":\"m\",\"to\":\"+1555123\",\"text\":\"x\"}]}";
    bool passed = false;
    for (uint64_t n = 1; n < 200 && !passed; n++) {
        sp_test_alloc_fail_at(n);
        sp_error rc = parse(doc);
        sp_test_alloc_fail_at(0);
        if (rc == SP_OK) {
            passed = true;
            relay_payload_free(&p);
        } else {
            assert_true(rc == SP_ERR_BAD_JSON || rc == SP_ERR_NO_MEMORY);
            assert_null(p.doc);
        }
    }
    assert_true(passed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_all_fields), cmocka_unit_test(test_sms_all_fields),
        cmocka_unit_test(test_rules),            cmocka_unit_test(test_json_level),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_batches),
        cmocka_unit_test(test_message_id),       cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
