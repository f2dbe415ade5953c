/*
 * Unit tests for provider channels (src/sender/channel.c): a valid email
 * and SMS channel of each body and auth type with everything the sender
 * reads from them, one test per validation rule showing that the message
 * names the field, batch bodies of 1 and 1,000 records read back by
 * jansson, form and GET encoding, the public/secrets split and its round
 * trip (the public document never holds a secret), updates that keep a
 * secret, missing values, buffer sizes, wiping, allocation faults, and
 * that rendering allocates nothing. Secret headers (auth type "headers")
 * go through the same split, storage and update rules as the Basic
 * password, and $$DeliveryReportURL / $$InboundURL fall back to the
 * sender's callback URLs when the channel sets none.
 */
#include "sp_test_util.h"

#include "sealpost/channel.h"

#define EMAIL_TEMPLATE                                                                                       \
    "{\"to\":\"$$To\",\"from\":{\"name\":\"$$FromName\",\"email\":\"$$FromAddress\"},"                     \
    "\"reply_to\":\"$$ReplyToAddress\",\"subject\":\"$$Subject\",\"html\":\"$$HTML\",\"text\":\"$$Plaintext\"," \
    "\"id\":\"$$MessageID\",\"campaign\":\"$$CampaignID\",\"tag\":\"$$tag\",\"price\":\"$$$$5\"}"
#define SMS_TEMPLATE                                                                                         \
    "{\"to\":\"$$To\",\"text\":\"$$Body\",\"ref\":\"$$MessageID\",\"dlr\":\"$$DeliveryReportURL\",\"from\":\"$$SenderID\"}"

static const char password[] = "s3cret-Pa55-word";
static const char client_secret[] = "oauth-Client-Secret-77";
static const char api_secret[] = "relay-Api-Secret-0042";

#define RELAY_SMS_TEMPLATE                                                                                   \
    "{\"kind\":\"sms\",\"message_id\":\"$$MessageID\",\"to\":\"$$To\",\"text\":\"$$Body\","               \
    "\"dlr_url\":\"$$DeliveryReportURL\",\"inbound_url\":\"$$InboundURL\"}"

/* ---- documents ---- */
static json_t *email_json_basic(void) {
    json_t *d = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:{s:s, s:s}}, s:{s:s, s:s, s:s}, s:s, s:s, s:s, "
                          "s:{s:s}, s:{s:b, s:s, s:s, s:s}}",
                          "kind", "email", "nickname", "Acme mail", "request", "endpoint",
                          "https://api.example.com/v1/send", "method", "POST", "headers", "X-Account", "acme-1",
                          "body", "type", "json", "template", EMAIL_TEMPLATE, "auth", "type", "basic", "username",
                          "acme", "password", password, "from_name", "Acme \"News\"", "from_address",
                          "news@acme.example", "reply_to", "help@acme.example", "custom", "tag", "spring",
                          "encryption", "enabled", 1, "algorithm", "aes-256-gcm", "profile", "jwe", "key", "email");
    assert_non_null(d);
    return d;
}

static json_t *email_form_oauth2(void) {
    json_t *d = json_pack("{s:s, s:s, s:{s:s, s:{s:s, s:{s:s, s:s, s:s, s:s}}}, s:{s:s, s:s, s:s, s:s, s:s, s:s, "
                          "s:s}, s:s, s:s, s:{s:s}}",
                          "kind", "email", "nickname", "Form mail", "request", "endpoint",
                          "https://mail.example.net/send?v=2", "body", "type", "form", "fields", "to", "$$To",
                          "subject", "Re: $$Subject & more", "html", "$$HTML", "my key", "$$account", "auth", "type",
                          "oauth2", "token_url", "https://auth.example.net/oauth/token", "client_id", "cid-1",
                          "client_secret", client_secret, "scope", "send:mail", "audience", "https://mail.example.net",
                          "client_auth", "body", "from_name", "Acme", "from_address", "a@acme.example", "custom",
                          "account", "A/1");
    assert_non_null(d);
    return d;
}

static json_t *sms_json_batch(void) {
    json_t *d = json_pack("{s:s, s:s, s:{s:s, s:{s:s, s:s}, s:{s:s, s:i}}, s:{s:s}, s:s, s:s, s:s, s:{s:b}}",
                          "kind", "sms", "nickname", "SMS batch", "request", "endpoint", "https://sms.example.com/batch",
                          "body", "type", "json", "template", SMS_TEMPLATE, "batch", "array_key", "messages", "size",
                          1000, "auth", "type", "none", "delivery_report_url", "https://hooks.example.org/dlr",
                          "inbound_url", "https://hooks.example.org/in", "sender_id", "ACME", "encryption", "enabled",
                          0);
    assert_non_null(d);
    return d;
}

/* SMS to a sealpost-relay: secret headers, callback URLs left to the sender */
static json_t *sms_json_headers(void) {
    json_t *d = json_pack("{s:s, s:s, s:{s:s, s:{s:s}, s:{s:s, s:s}}, s:{s:s, s:{s:s, s:s}}, s:{s:b, s:s}}", "kind",
                          "sms", "nickname", "Relay SMS", "request", "endpoint", "https://relay.example:8444/v1/messages",
                          "headers", "X-Merchant-Id", "acme", "body", "type", "json", "template", RELAY_SMS_TEMPLATE,
                          "auth", "type", "headers", "headers", "X-Api-Secret", api_secret, "X-Client-Access-Key",
                          "ak_acme_1", "encryption", "enabled", 1, "key", "relay");
    assert_non_null(d);
    return d;
}

static json_t *sms_get_form(void) {
    json_t *d = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:{s:s, s:s, s:s}}}}", "kind", "sms", "nickname",
                          "SMS get", "request", "endpoint", "http://127.0.0.1:8099/send", "method", "GET", "body",
                          "type", "form", "fields", "to", "$$To", "text", "$$Body", "id", "$$MessageID");
    assert_non_null(d);
    return d;
}

/* A malloc'd copy of d's compact text (jansson's own buffer comes from the
 * library's allocator and must go back to it). */
static char *dump(json_t *d) {
    char *s = json_dumps(d, JSON_COMPACT);
    assert_non_null(s);
    char *copy = strdup(s);
    assert_non_null(copy);
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    f(s);
    return copy;
}

static sp_channel *parse_ok(json_t *d) {
    char *text = dump(d);
    char err[SP_CHANNEL_ERR_CAP] = "";
    sp_channel *ch = NULL;
    sp_error rc = sp_channel_parse(text, strlen(text), &ch, err, sizeof err);
    if (rc != SP_OK) fail_msg("parse failed: %s: %s", sp_error_name(rc), err);
    free(text);
    json_decref(d);
    return ch;
}

/* Sets (value JSON text) or deletes (value NULL) the member at a dotted
 * path of d, creating objects on the way. */
static void set_path(json_t *d, const char *path, const char *value) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *o = d;
    char *key = buf, *dot;
    while ((dot = strchr(key, '.')) != NULL) {
        *dot = 0;
        json_t *next = json_object_get(o, key);
        if (next == NULL) {
            next = json_object();
            json_object_set_new(o, key, next);
        }
        o = next;
        key = dot + 1;
    }
    if (value == NULL) {
        json_object_del(o, key);
        return;
    }
    json_error_t jerr;
    json_t *v = json_loads(value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (v == NULL) fail_msg("bad test value %s", value);
    json_object_set_new(o, key, v);
}

/* d with the change must fail with err containing want (and d is freed). */
static void parse_fails(json_t *d, const char *want, sp_error want_rc) {
    char *text = dump(d);
    char err[SP_CHANNEL_ERR_CAP] = "";
    sp_channel *ch = (sp_channel *)0x1;
    sp_error rc = sp_channel_parse(text, strlen(text), &ch, err, sizeof err);
    if (rc != want_rc || strstr(err, want) == NULL) {
        fail_msg("expected %s '%s', got %s '%s' for %s", sp_error_name(want_rc), want, sp_error_name(rc), err, text);
    }
    assert_null(ch);
    /* no message ever quotes a secret */
    assert_null(strstr(err, password));
    assert_null(strstr(err, client_secret));
    assert_null(strstr(err, api_secret));
    free(text);
    json_decref(d);
}

/* ---- rendering helpers ---- */
static sp_channel_value val(const char *s) {
    sp_channel_value v = {s, s ? strlen(s) : 0};
    return v;
}

static sp_channel_message email_msg(void) {
    sp_channel_message m = {0};
    m.to = val("ada@example.org");
    m.subject = val("Hello \"Ada\"");
    m.html = val("<p>caf\xc3\xa9 & \xe2\x82\xac</p>\n");
    m.plaintext = val("tab\there\\back");
    m.message_id = val("3f0b8c1e-5d2a-4c7e-9b1f-0a2d4e6f8a1c");
    m.campaign_id = val("camp-1");
    return m;
}

static json_t *render_json(const sp_channel *ch, const sp_channel_message *msgs, size_t n) {
    size_t need = 0;
    assert_rc(sp_channel_render(ch, msgs, n, NULL, 0, &need), SP_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(need);
    assert_non_null(out);
    size_t len = 0;
    assert_ok(sp_channel_render(ch, msgs, n, out, need, &len));
    assert_int_equal(len, need);
    json_error_t jerr;
    json_t *doc = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) fail_msg("rendered body is not JSON: %s: %.*s", jerr.text, (int)len, out);
    free(out);
    return doc;
}

static void assert_json_str(json_t *o, const char *key, const char *want) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
        fail_msg("%s is %s, expected %s", key, json_is_string(v) ? json_string_value(v) : "(not a string)", want);
    }
}

/* ---- valid channels ---- */
static void test_email_json_basic(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(email_json_basic());
    assert_int_equal(sp_channel_get_kind(ch), SP_CHANNEL_EMAIL);
    assert_string_equal(sp_channel_nickname(ch), "Acme mail");
    assert_int_equal(sp_channel_get_method(ch), SP_CHANNEL_POST);
    assert_string_equal(sp_channel_endpoint(ch), "https://api.example.com/v1/send");
    assert_int_equal(sp_channel_get_body_type(ch), SP_CHANNEL_BODY_JSON);
    assert_string_equal(sp_channel_content_type(ch), "application/json");
    assert_int_equal(sp_channel_header_count(ch), 1);
    sp_header h;
    assert_ok(sp_channel_header(ch, 0, &h));
    assert_int_equal(h.name_len, 9);
    assert_memory_equal(h.name, "X-Account", 9);
    assert_int_equal(h.value_len, 6);
    assert_memory_equal(h.value, "acme-1", 6);
    assert_rc(sp_channel_header(ch, 1, &h), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_channel_batch_size(ch), 1);
    assert_null(sp_channel_batch_key(ch));
    const sp_template *t = sp_channel_body_template(ch);
    assert_non_null(t);
    assert_int_equal(sp_template_placeholder_count(t), 10);
    assert_string_equal(sp_channel_from_name(ch), "Acme \"News\"");
    assert_string_equal(sp_channel_from_address(ch), "news@acme.example");
    assert_string_equal(sp_channel_reply_to(ch), "help@acme.example");
    assert_null(sp_channel_delivery_report_url(ch));
    assert_int_equal(sp_channel_custom_count(ch), 1);
    assert_string_equal(sp_channel_custom_key(ch, 0), "tag");
    assert_string_equal(sp_channel_custom_value(ch, 0), "spring");
    assert_null(sp_channel_custom_key(ch, 1));
    sp_channel_auth auth;
    sp_channel_get_auth(ch, &auth);
    assert_int_equal(auth.type, SP_CHANNEL_AUTH_BASIC);
    assert_string_equal(auth.username, "acme");
    assert_string_equal(auth.password, password);
    assert_null(auth.client_secret);
    sp_channel_encryption enc;
    sp_channel_get_encryption(ch, &enc);
    assert_true(enc.enabled);
    assert_int_equal(enc.alg, SP_ALG_AES_256_GCM);
    assert_int_equal(enc.profile, SP_PROFILE_JWE);
    assert_string_equal(enc.key, "email");

    sp_channel_message m = email_msg();
    json_t *doc = render_json(ch, &m, 1);
    assert_json_str(doc, "to", "ada@example.org");
    assert_json_str(json_object_get(doc, "from"), "name", "Acme \"News\"");
    assert_json_str(json_object_get(doc, "from"), "email", "news@acme.example");
    assert_json_str(doc, "reply_to", "help@acme.example");
    assert_json_str(doc, "subject", "Hello \"Ada\"");
    assert_json_str(doc, "html", "<p>caf\xc3\xa9 & \xe2\x82\xac</p>\n");
    assert_json_str(doc, "text", "tab\there\\back");
    assert_json_str(doc, "id", "3f0b8c1e-5d2a-4c7e-9b1f-0a2d4e6f8a1c");
    assert_json_str(doc, "campaign", "camp-1");
    assert_json_str(doc, "tag", "spring");
    assert_json_str(doc, "price", "$$5");
    json_decref(doc);

    /* a custom value overridden for one message */
    sp_channel_value custom[1] = {val("summer \"sale\"")};
    m.custom = custom;
    doc = render_json(ch, &m, 1);
    assert_json_str(doc, "tag", "summer \"sale\"");
    json_decref(doc);
    sp_channel_value keep[1] = {{NULL, 0}};
    m.custom = keep;
    doc = render_json(ch, &m, 1);
    assert_json_str(doc, "tag", "spring");
    json_decref(doc);

    /* unbatched: exactly one message */
    sp_channel_message two[2] = {email_msg(), email_msg()};
    char out[8];
    size_t len = 0;
    assert_rc(sp_channel_render(ch, two, 2, out, sizeof out, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_channel_render(ch, two, 0, out, sizeof out, &len), SP_ERR_INVALID_ARGUMENT);
    sp_channel_free(ch);
}

static void test_email_form_oauth2(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(email_form_oauth2());
    assert_int_equal(sp_channel_get_body_type(ch), SP_CHANNEL_BODY_FORM);
    assert_string_equal(sp_channel_content_type(ch), "application/x-www-form-urlencoded");
    assert_null(sp_channel_body_template(ch));
    assert_int_equal(sp_channel_header_count(ch), 0);
    assert_null(sp_channel_reply_to(ch));
    sp_channel_auth auth;
    sp_channel_get_auth(ch, &auth);
    assert_int_equal(auth.type, SP_CHANNEL_AUTH_OAUTH2);
    assert_string_equal(auth.token_url, "https://auth.example.net/oauth/token");
    assert_string_equal(auth.client_id, "cid-1");
    assert_string_equal(auth.client_secret, client_secret);
    assert_string_equal(auth.scope, "send:mail");
    assert_string_equal(auth.audience, "https://mail.example.net");
    assert_int_equal(auth.client_auth, SP_CHANNEL_CLIENT_AUTH_BODY);
    assert_null(auth.password);
    sp_channel_encryption enc;
    sp_channel_get_encryption(ch, &enc);
    assert_false(enc.enabled);
    assert_int_equal(enc.alg, SP_ALG_AES_256_GCM);
    assert_int_equal(enc.profile, SP_PROFILE_COMPAT);
    assert_null(enc.key);

    sp_channel_message m = {0};
    m.to = val("ada+news@example.org");
    m.subject = val("50% off & free =)");
    m.html = val("<b>caf\xc3\xa9</b>");
    char out[512];
    size_t len = 0;
    assert_ok(sp_channel_render(ch, &m, 1, out, sizeof out, &len));
    const char *want = "to=ada%2Bnews%40example.org&subject=Re%3A+50%25+off+%26+free+%3D%29+%26+more"
                       "&html=%3Cb%3Ecaf%C3%A9%3C%2Fb%3E&my+key=A%2F1";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    sp_channel_free(ch);
}

static void test_sms_json_batch(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(sms_json_batch());
    assert_int_equal(sp_channel_get_kind(ch), SP_CHANNEL_SMS);
    assert_int_equal(sp_channel_batch_size(ch), 1000);
    assert_string_equal(sp_channel_batch_key(ch), "messages");
    assert_string_equal(sp_channel_delivery_report_url(ch), "https://hooks.example.org/dlr");
    assert_string_equal(sp_channel_inbound_url(ch), "https://hooks.example.org/in");
    assert_string_equal(sp_channel_sender_id(ch), "ACME");
    assert_null(sp_channel_from_address(ch));
    sp_channel_auth auth;
    sp_channel_get_auth(ch, &auth);
    assert_int_equal(auth.type, SP_CHANNEL_AUTH_NONE);

    size_t n = 1000;
    sp_channel_message *msgs = calloc(n, sizeof *msgs);
    char(*to)[32] = calloc(n, 32);
    char(*id)[32] = calloc(n, 32);
    assert_true(msgs && to && id);
    for (size_t i = 0; i < n; i++) {
        snprintf(to[i], 32, "+1415555%04zu", i);
        snprintf(id[i], 32, "msg-%zu", i);
        msgs[i].to = val(to[i]);
        msgs[i].body = val(i % 2 ? "Line \"one\"\nline two" : "caf\xc3\xa9 \xf0\x9f\x98\x80");
        msgs[i].message_id = val(id[i]);
    }
    for (size_t count = 1; count <= n; count += n - 1) {
        json_t *doc = render_json(ch, msgs, count);
        assert_int_equal(json_object_size(doc), 1);
        json_t *arr = json_object_get(doc, "messages");
        assert_true(json_is_array(arr));
        assert_int_equal(json_array_size(arr), count);
        for (size_t i = 0; i < count; i++) {
            json_t *r = json_array_get(arr, i);
            assert_json_str(r, "to", to[i]);
            assert_json_str(r, "text", i % 2 ? "Line \"one\"\nline two" : "caf\xc3\xa9 \xf0\x9f\x98\x80");
            assert_json_str(r, "ref", id[i]);
            assert_json_str(r, "dlr", "https://hooks.example.org/dlr");
            assert_json_str(r, "from", "ACME");
        }
        json_decref(doc);
    }
    char small[4];
    size_t len = 0;
    assert_rc(sp_channel_render(ch, msgs, 1001, small, sizeof small, &len), SP_ERR_INVALID_ARGUMENT);

    /* a value missing in record 500: the whole body fails and is wiped */
    msgs[500].body.data = NULL;
    size_t need = 0;
    assert_rc(sp_channel_render(ch, msgs, n, NULL, 0, &need), SP_ERR_TEMPLATE);
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    assert_non_null(out);
    memset(out, 'Z', cap);
    assert_rc(sp_channel_render(ch, msgs, n, out, cap, &len), SP_ERR_TEMPLATE);
    assert_int_equal(len, 0);
    assert_true(sp_test_all_zero(out, 100)); /* the records before it were written, then wiped */
    /* invalid UTF-8 in a JSON body is refused too */
    msgs[500].body = val("bad \xc3\x28");
    assert_rc(sp_channel_render(ch, msgs, n, out, cap, &len), SP_ERR_TEMPLATE);
    free(out);
    free(msgs);
    free(to);
    free(id);
    sp_channel_free(ch);
}

static void test_sms_get_form(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(sms_get_form());
    assert_int_equal(sp_channel_get_method(ch), SP_CHANNEL_GET);
    assert_null(sp_channel_content_type(ch));
    assert_int_equal(sp_channel_batch_size(ch), 1);
    sp_channel_message m = {0};
    m.to = val("+14155550100");
    m.body = val("Code: 12 34 & <b>\"ok\"</b> caf\xc3\xa9");
    m.message_id = val("id=1&x");
    char out[256];
    size_t len = 0;
    assert_ok(sp_channel_render(ch, &m, 1, out, sizeof out, &len));
    const char *want = "to=%2B14155550100&text=Code%3A+12+34+%26+%3Cb%3E%22ok%22%3C%2Fb%3E+caf%C3%A9&id=id%3D1%26x";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    /* a form body carries any bytes: invalid UTF-8 is percent-encoded */
    m.body = val("\xff");
    assert_ok(sp_channel_render(ch, &m, 1, out, sizeof out, &len));
    assert_memory_equal(out + strlen("to=%2B14155550100&text="), "%FF&", 4);
    sp_channel_free(ch);
}

static void test_loopback_http_allowed(void **state) {
    (void)state;
    static const char *const ok[] = {"\"http://127.0.0.1/x\"", "\"http://127.9.8.7:8080/x?y=1\"",
                                     "\"http://[::1]:9000/send\"", "\"http://localhost/\"", "\"HTTP://LOCALHOST:1\"",
                                     "\"https://[2001:db8::1]/x\"", "\"https://example.com:443\""};
    for (size_t i = 0; i < SP_ARRAY_LEN(ok); i++) {
        json_t *d = email_json_basic();
        set_path(d, "request.endpoint", ok[i]);
        sp_channel_free(parse_ok(d));
    }
}

/* ---- validation: one rule per case ---- */
typedef struct {
    json_t *(*base)(void);
    const char *path;
    const char *value; /* JSON text; NULL deletes */
    const char *want;  /* a substring of the message, starting with the field */
} rule_case;

static void run_rules(const rule_case *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        json_t *d = cases[i].base();
        set_path(d, cases[i].path, cases[i].value);
        parse_fails(d, cases[i].want, SP_ERR_BAD_CONFIG);
    }
}

static void test_rules_top_level(void **state) {
    (void)state;
    static const rule_case cases[] = {
        {email_json_basic, "kind", "\"fax\"", "kind: must be \"email\" or \"sms\""},
        {email_json_basic, "kind", NULL, "kind: is required"},
        {email_json_basic, "kind", "3", "kind: must be a string"},
        {email_json_basic, "nickname", "\"\"", "nickname: must be 1..64 bytes"},
        {email_json_basic, "nickname", "\"12345678901234567890123456789012345678901234567890123456789012345\"",
         "nickname: must be 1..64 bytes"},
        {email_json_basic, "nickname", "\"a\\nb\"", "nickname: must be 1..64 bytes"},
        {email_json_basic, "nickname", NULL, "nickname: is required"},
        {email_json_basic, "nick_name", "\"typo\"", "nick_name: unknown field"},
        {email_json_basic, "request", NULL, "request: is required"},
        {email_json_basic, "request", "[]", "request: must be an object"},
        {email_json_basic, "request.url", "\"https://x.example\"", "request.url: unknown field"},
        {email_json_basic, "from_address", "\"not-an-email\"", "from_address: must be an email address"},
        {email_json_basic, "from_address", "\"a@localhost\"", "from_address: must be an email address"},
        {email_json_basic, "from_address", "\"a..b@example.com\"", "from_address: must be an email address"},
        {email_json_basic, "from_address", NULL, "from_address: is required"},
        {email_json_basic, "from_name", NULL, "from_name: is required"},
        {email_json_basic, "reply_to", "\"a b@example.com\"", "reply_to: must be an email address"},
        {email_json_basic, "delivery_report_url", "\"https://x.example/dlr\"",
         "delivery_report_url: only for sms channels"},
        {email_json_basic, "sender_id", "\"ACME\"", "sender_id: only for sms channels"},
        {sms_json_batch, "from_name", "\"Acme\"", "from_name: only for email channels"},
        {sms_json_batch, "delivery_report_url", "\"http://example.com/dlr\"",
         "delivery_report_url: must be an https URL (http only for loopback hosts)"},
        {sms_json_batch, "inbound_url", "\"https://u:p@example.com/in\"", "inbound_url: must not contain user info"},
        {sms_json_batch, "sender_id", "\"way too long for a sender id\"", "sender_id: must be 1..20 characters"},
        {sms_json_batch, "sender_id", "\"AC;ME\"", "sender_id: must be 1..20 characters"},
        {email_json_basic, "custom.bad-key", "\"x\"", "custom.bad-key: the name must be 1..64 characters"},
        {email_json_basic, "custom.To", "\"x\"", "custom.To: is a standard placeholder name"},
        {email_json_basic, "custom.n", "5", "custom.n: must be a string"},
        {email_json_basic, "custom.n", "\"a\\u0007b\"", "custom.n: must be at most 1024 bytes"},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
}

static void test_rules_endpoint(void **state) {
    (void)state;
    char long_url[2100];
    memcpy(long_url, "\"https://example.com/", 21);
    memset(long_url + 21, 'a', 2030);
    memcpy(long_url + 2051, "\"", 2);
    const char *rule = "request.endpoint: must be an https URL (http only for loopback hosts)";
    const rule_case cases[] = {
        {email_json_basic, "request.endpoint", "\"http://example.com/x\"", rule},
        {email_json_basic, "request.endpoint", "\"http://10.0.0.1/x\"", rule},
        {email_json_basic, "request.endpoint", "\"http://127.0.0.1.example.com/\"", rule},
        {email_json_basic, "request.endpoint", "\"http://[::ffff:127.0.0.1]/\"", rule},
        {email_json_basic, "request.endpoint", "\"ftp://example.com/x\"", rule},
        {email_json_basic, "request.endpoint", "\"example.com/x\"", rule},
        {email_json_basic, "request.endpoint", "\"https://user:pw@example.com/\"", "request.endpoint: must not contain user info"},
        {email_json_basic, "request.endpoint", "\"https:///x\"", "request.endpoint: has no host"},
        {email_json_basic, "request.endpoint", "\"https://exa mple.com/\"", "request.endpoint: must not contain spaces"},
        {email_json_basic, "request.endpoint", "\"https://ex\\u00e4mple.com/\"", "request.endpoint: must not contain spaces"},
        {email_json_basic, "request.endpoint", "\"https://example.com:0/\"", "request.endpoint: has an invalid port"},
        {email_json_basic, "request.endpoint", "\"https://example.com:99999/\"", "request.endpoint: has an invalid port"},
        {email_json_basic, "request.endpoint", "\"https://example.com:/\"", "request.endpoint: has an invalid port"},
        {email_json_basic, "request.endpoint", "\"https://[::2/\"", "request.endpoint: has an invalid IPv6 host"},
        {email_json_basic, "request.endpoint", "\"https://[zz::1]/\"", "request.endpoint: has an invalid IPv6 host"},
        {email_json_basic, "request.endpoint", "\"https://ex_ample.com/\"", "request.endpoint: has an invalid host"},
        {email_json_basic, "request.endpoint", "\"https://example.com/#frag\"", "request.endpoint: must not have a fragment"},
        {email_json_basic, "request.endpoint", long_url, "request.endpoint: must be at most 2048 characters"},
        {email_json_basic, "request.endpoint", "42", "request.endpoint: must be a string"},
        {email_json_basic, "request.endpoint", NULL, "request.endpoint: is required"},
        {email_json_basic, "request.method", "\"PUT\"", "request.method: must be \"POST\" or \"GET\""},
        {email_json_basic, "request.method", "\"post\"", "request.method: must be \"POST\" or \"GET\""},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
}

static void test_rules_headers(void **state) {
    (void)state;
    static const rule_case cases[] = {
        {email_json_basic, "request.headers.Authorization", "\"Bearer x\"",
         "request.headers.Authorization: is set from auth"},
        {email_json_basic, "request.headers.Host", "\"evil.example\"", "request.headers.Host: is set by sealpost"},
        {email_json_basic, "request.headers.content-length", "\"5\"", "request.headers.content-length: is set by sealpost"},
        {email_json_basic, "request.headers.Transfer-Encoding", "\"chunked\"",
         "request.headers.Transfer-Encoding: is set by sealpost"},
        {email_json_basic, "request.headers.Content-Type", "\"text/plain\"", "request.headers.Content-Type: is set by sealpost"},
        {email_json_basic, "request.headers.X-AES-IV", "\"AAAA\"", "request.headers.X-AES-IV: is reserved for the sealpost envelope"},
        {email_json_basic, "request.headers.webhook-id", "\"x\"", "request.headers.webhook-id: is reserved for the sealpost envelope"},
        {email_json_basic, "request.headers.bad name", "\"x\"", "request.headers.bad name: the name must be an HTTP token"},
        {email_json_basic, "request.headers.X-Value", "\"a\\r\\nInjected: 1\"", "request.headers.X-Value: the value must be at most 1024 printable ASCII"},
        {email_json_basic, "request.headers.X-Value", "1", "request.headers.X-Value: must be a string"},
        {email_json_basic, "request.headers.x-account", "\"dup\"", "request.headers.x-account: is given twice"},
        {email_json_basic, "request.headers", "\"X-A: 1\"", "request.headers: must be an object"},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
    /* 33 headers */
    json_t *d = email_json_basic();
    for (int i = 0; i < 32; i++) {
        char path[64];
        snprintf(path, sizeof path, "request.headers.X-H%d", i);
        set_path(d, path, "\"v\"");
    }
    parse_fails(d, "request.headers: at most 32 headers", SP_ERR_BAD_CONFIG);
}

static void test_rules_body(void **state) {
    (void)state;
    static const rule_case cases[] = {
        {email_json_basic, "request.body.type", "\"xml\"", "request.body.type: must be \"json\" or \"form\""},
        {email_json_basic, "request.body", NULL, "request.body: is required"},
        {email_json_basic, "request.body.fields", "{}", "request.body.fields: unknown field"},
        {email_json_basic, "request.body.template", "\"{\\\"to\\\": $$To}\"",
         "request.body.template: the placeholder at offset 7 is outside a JSON string"},
        {email_json_basic, "request.body.template", "\"{\\\"to\\\": \\\"$$To\\\"\"",
         "request.body.template: is not valid JSON once its placeholders are filled (line 1"},
        {email_json_basic, "request.body.template", "\"{\\\"a\\\":\\\"1\\\",\\\"a\\\":\\\"2\\\"}\"",
         "request.body.template: is not valid JSON"},
        {email_json_basic, "request.body.template", "\"[\\\"$$To\\\"]\"", "request.body.template: must be a JSON object"},
        {email_json_basic, "request.body.template", "\"\"", "request.body.template: must be a non-empty JSON text"},
        {email_json_basic, "request.body.template", "\"{\\\"a\\\":\\\"$$Nope\\\"}\"",
         "request.body.template: unknown placeholder $$Nope"},
        {email_json_basic, "request.body.template", "\"{\\\"a\\\":\\\"$$SenderID\\\"}\"",
         "request.body.template: $$SenderID is not available in email channels"},
        {sms_json_batch, "request.body.template", "\"{\\\"a\\\":\\\"$$Subject\\\"}\"",
         "request.body.template: $$Subject is not available in sms channels"},
        {email_json_basic, "request.body.template", "\"{\\\"a\\\":\\\"$$ x\\\"}\"",
         "request.body.template: '$$' must be followed by a name or by '$$' at offset 6"},
        {email_json_basic, "request.method", "\"GET\"", "request.body.type: GET sends form fields in the query string"},
        {email_form_oauth2, "request.body.fields.text", "\"$$Nope\"", "request.body.fields.text: unknown placeholder $$Nope"},
        {email_form_oauth2, "request.body.fields.text", "7", "request.body.fields.text: must be a string"},
        {email_form_oauth2, "request.body.fields", NULL, "request.body.fields: is required"},
        {email_form_oauth2, "request.body.template", "\"{}\"", "request.body.template: unknown field"},
        {sms_json_batch, "request.batch.size", "0", "request.batch.size: must be an integer from 1 to 1000"},
        {sms_json_batch, "request.batch.size", "1001", "request.batch.size: must be an integer from 1 to 1000"},
        {sms_json_batch, "request.batch.size", "\"10\"", "request.batch.size: must be an integer from 1 to 1000"},
        {sms_json_batch, "request.batch.size", NULL, "request.batch.size: is required"},
        {sms_json_batch, "request.batch.array_key", NULL, "request.batch.array_key: is required"},
        {sms_json_batch, "request.batch.count", "5", "request.batch.count: unknown field"},
        {email_form_oauth2, "request.batch", "{\"array_key\":\"m\",\"size\":5}",
         "request.batch: batching needs a JSON body"},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
    /* 65 form fields */
    json_t *d = email_form_oauth2();
    for (int i = 0; i < 61; i++) {
        char path[64];
        snprintf(path, sizeof path, "request.body.fields.f%d", i);
        set_path(d, path, "\"v\"");
    }
    parse_fails(d, "request.body.fields: at most 64 fields", SP_ERR_BAD_CONFIG);
}

static void test_rules_auth_and_encryption(void **state) {
    (void)state;
    static const rule_case cases[] = {
        {email_json_basic, "auth.type", "\"bearer\"",
         "auth.type: must be \"none\", \"basic\", \"oauth2\" or \"headers\""},
        {email_json_basic, "auth.type", NULL, "auth.type: is required"},
        {email_json_basic, "auth.password", NULL, "auth.password: is required"},
        {email_json_basic, "auth.password", "\"\"", "auth.password: must be 1..1024 bytes"},
        {email_json_basic, "auth.password", "\"s3cret-Pa55-word\\n\"", "auth.password: must be 1..1024 bytes"},
        {email_json_basic, "auth.password_set", "true", "auth.password_set: give either password or password_set"},
        {email_json_basic, "auth.username", "\"a:b\"", "auth.username: must be 1..256 printable ASCII characters without ':'"},
        {email_json_basic, "auth.realm", "\"x\"", "auth.realm: unknown field"},
        {email_json_basic, "auth.token_url", "\"https://x.example\"", "auth.token_url: unknown field"},
        {sms_json_batch, "auth.client_id", "\"x\"", "auth.client_id: unknown field"},
        {email_form_oauth2, "auth.token_url", "\"http://auth.example.net/token\"",
         "auth.token_url: must be an https URL (http only for loopback hosts)"},
        {email_form_oauth2, "auth.client_auth", "\"jwt\"", "auth.client_auth: must be \"basic\" or \"body\""},
        {email_form_oauth2, "auth.client_id", NULL, "auth.client_id: is required"},
        {email_form_oauth2, "auth.client_secret", NULL, "auth.client_secret: is required"},
        {email_form_oauth2, "auth.scope", "\"\"", "auth.scope: must be 1..1024 printable ASCII"},
        {email_form_oauth2, "auth.password", "\"x\"", "auth.password: unknown field"},
        {email_json_basic, "encryption.algorithm", "\"aes-128-gcm\"",
         "encryption.algorithm: must be \"aes-256-gcm\", \"aes-256-cbc\" or \"aes-256-ctr\""},
        {email_json_basic, "encryption.algorithm", "\"aes-256-cbc\"",
         "encryption.algorithm: the jwe profile allows only \"aes-256-gcm\""},
        {email_json_basic, "encryption.profile", "\"jws\"", "encryption.profile: must be \"compat\" or \"jwe\""},
        {email_json_basic, "encryption.key", NULL, "encryption.key: is required"},
        {email_json_basic, "encryption.key", "\"bad key!\"", "encryption.key: must be a keyring channel name"},
        {email_json_basic, "encryption.enabled", "\"yes\"", "encryption.enabled: must be true or false"},
        {email_json_basic, "encryption.mode", "\"x\"", "encryption.mode: unknown field"},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
    /* ctr and cbc are fine with compat; disabled needs no key */
    json_t *d = email_json_basic();
    set_path(d, "encryption", "{\"enabled\":true,\"algorithm\":\"aes-256-ctr\",\"profile\":\"compat\",\"key\":\"k.1\"}");
    sp_channel *ch = parse_ok(d);
    sp_channel_encryption enc;
    sp_channel_get_encryption(ch, &enc);
    assert_int_equal(enc.alg, SP_ALG_AES_256_CTR);
    assert_int_equal(enc.profile, SP_PROFILE_COMPAT);
    sp_channel_free(ch);
    d = email_json_basic();
    set_path(d, "encryption", "{\"enabled\":false,\"algorithm\":\"aes-256-cbc\"}");
    ch = parse_ok(d);
    sp_channel_get_encryption(ch, &enc);
    assert_false(enc.enabled);
    assert_int_equal(enc.alg, SP_ALG_AES_256_CBC);
    sp_channel_free(ch);
}

static void test_rules_document(void **state) {
    (void)state;
    char err[SP_CHANNEL_ERR_CAP];
    sp_channel *ch = NULL;
    const char *not_json = "{\"kind\":\"email\",\n \"nickname\": oops}";
    assert_rc(sp_channel_parse(not_json, strlen(not_json), &ch, err, sizeof err), SP_ERR_BAD_JSON);
    assert_non_null(strstr(err, "channel: is not valid JSON (line 2"));
    const char *dup = "{\"kind\":\"email\",\"kind\":\"sms\"}";
    assert_rc(sp_channel_parse(dup, strlen(dup), &ch, err, sizeof err), SP_ERR_BAD_JSON);
    assert_rc(sp_channel_parse("[1]", 3, &ch, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_string_equal(err, "the channel must be a JSON object");
    /* a NUL inside any string is not accepted JSON here */
    const char *nul = "{\"kind\":\"em\\u0000ail\"}";
    assert_rc(sp_channel_parse(nul, strlen(nul), &ch, err, sizeof err), SP_ERR_BAD_JSON);
    size_t big = SP_CHANNEL_MAX_DOCUMENT + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, ' ', big);
    assert_rc(sp_channel_parse(text, big, &ch, err, sizeof err), SP_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "64 KiB"));
    free(text);
    /* err may be NULL or tiny; the message is cut, never overrun */
    assert_rc(sp_channel_parse("[1]", 3, &ch, NULL, 0), SP_ERR_BAD_CONFIG);
    char tiny[5];
    assert_rc(sp_channel_parse("[1]", 3, &ch, tiny, sizeof tiny), SP_ERR_BAD_CONFIG);
    assert_string_equal(tiny, "the ");
    assert_rc(sp_channel_parse(NULL, 3, &ch, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_channel_parse("{}", 2, NULL, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    /* an unknown member's name is shown safely: printable and cut short */
    json_t *d = email_json_basic();
    char key[80], want[80];
    memset(key, 'y', 70);
    key[0] = 'x';
    key[1] = 1;
    key[70] = 0;
    json_object_set_new(d, key, json_true());
    snprintf(want, sizeof want, "x?%.38s...: unknown field", key + 2);
    parse_fails(d, want, SP_ERR_BAD_CONFIG);
}

/* ---- storage: public and secrets ---- */
static char *public_of(const sp_channel *ch, size_t *len_out) {
    size_t need = 0;
    assert_rc(sp_channel_public_json(ch, NULL, 0, &need), SP_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(need + 1);
    assert_non_null(out);
    size_t len = 0;
    assert_rc(sp_channel_public_json(ch, out, need, &len), SP_ERR_BUFFER_TOO_SMALL); /* the NUL needs room too */
    assert_ok(sp_channel_public_json(ch, out, need + 1, &len));
    assert_int_equal(len, need);
    assert_int_equal(out[len], 0);
    if (len_out) *len_out = len;
    return out;
}

static char *secrets_of(const sp_channel *ch, size_t *len_out) {
    size_t need = 0;
    assert_rc(sp_channel_secrets_json(ch, NULL, 0, &need), SP_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(need + 1);
    assert_non_null(out);
    size_t len = 0;
    assert_ok(sp_channel_secrets_json(ch, out, need + 1, &len));
    if (len_out) *len_out = len;
    return out;
}

static void roundtrip(json_t *(*base)(void), const char *secret, const char *marker) {
    sp_channel *ch = parse_ok(base());
    size_t plen = 0, slen = 0;
    char *pub = public_of(ch, &plen);
    char *sec = secrets_of(ch, &slen);
    if (secret != NULL) {
        assert_null(strstr(pub, secret));
        assert_non_null(strstr(pub, marker));
        assert_non_null(strstr(sec, secret));
    } else {
        assert_string_equal(sec, "{}");
    }
    char err[SP_CHANNEL_ERR_CAP] = "";
    sp_channel *back = NULL;
    sp_error rc = sp_channel_parse_stored(pub, plen, sec, slen, &back, err, sizeof err);
    if (rc != SP_OK) fail_msg("stored parse failed: %s", err);
    size_t plen2 = 0, slen2 = 0;
    char *pub2 = public_of(back, &plen2);
    char *sec2 = secrets_of(back, &slen2);
    assert_string_equal(pub, pub2);
    assert_string_equal(sec, sec2);
    /* the canonical form is a fixed point, and it renders the same */
    sp_channel_message m = email_msg();
    m.body = val("b");
    char o1[2048], o2[2048];
    size_t l1 = 0, l2 = 0;
    assert_ok(sp_channel_render(ch, &m, 1, o1, sizeof o1, &l1));
    assert_ok(sp_channel_render(back, &m, 1, o2, sizeof o2, &l2));
    assert_int_equal(l1, l2);
    assert_memory_equal(o1, o2, l1);
    sp_wipe(sec, slen);
    sp_wipe(sec2, slen2);
    free(pub);
    free(pub2);
    free(sec);
    free(sec2);
    sp_channel_free(back);
    sp_channel_free(ch);
}

static void test_public_secrets_roundtrip(void **state) {
    (void)state;
    roundtrip(email_json_basic, password, "\"password_set\":true");
    roundtrip(email_form_oauth2, client_secret, "\"client_secret_set\":true");
    roundtrip(sms_json_batch, NULL, NULL);
    roundtrip(sms_get_form, NULL, NULL);
    roundtrip(sms_json_headers, api_secret, "\"headers_set\":[\"X-Api-Secret\",\"X-Client-Access-Key\"]");
}

static void test_stored_rules(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(email_json_basic());
    size_t plen = 0, slen = 0;
    char *pub = public_of(ch, &plen);
    char *sec = secrets_of(ch, &slen);
    char err[SP_CHANNEL_ERR_CAP];
    sp_channel *back = NULL;
    /* the public document alone, as a new channel: the marker is refused */
    assert_rc(sp_channel_parse(pub, plen, &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.password_set: only stored or updated channels carry it"));
    /* no secret for it */
    assert_rc(sp_channel_parse_stored(pub, plen, "{}", 2, &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.password: is required"));
    /* a secret it does not use */
    const char *extra = "{\"password\":\"p\",\"client_secret\":\"c\"}";
    assert_rc(sp_channel_parse_stored(pub, plen, extra, strlen(extra), &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.client_secret: is not used"));
    assert_rc(sp_channel_parse_stored(pub, plen, "[]", 2, &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets: must be a JSON object"));
    assert_rc(sp_channel_parse_stored(pub, plen, "{", 1, &back, err, sizeof err), SP_ERR_BAD_JSON);
    assert_non_null(strstr(err, "secrets: is not valid JSON"));
    assert_rc(sp_channel_parse_stored(pub, plen, NULL, 0, &back, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    /* a stored public document holding the secret itself */
    json_t *d = email_json_basic();
    char *with_secret = dump(d);
    json_decref(d);
    assert_rc(sp_channel_parse_stored(with_secret, strlen(with_secret), sec, slen, &back, err, sizeof err),
              SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.password: a stored public document must not hold the secret"));
    assert_null(strstr(err, password));
    free(with_secret);
    /* buffers too small are wiped */
    char small[16];
    memset(small, 'Z', sizeof small);
    size_t len = 0;
    assert_rc(sp_channel_secrets_json(ch, small, sizeof small, &len), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(len, slen);
    assert_true(sp_test_all_zero(small, sizeof small));
    free(pub);
    sp_wipe(sec, slen);
    free(sec);
    sp_channel_free(ch);
}

static void test_update_keeps_secret(void **state) {
    (void)state;
    sp_channel *prev = parse_ok(email_json_basic());
    size_t plen = 0;
    char *pub = public_of(prev, &plen);
    /* the GET reply, edited and sent back */
    json_error_t jerr;
    json_t *d = json_loads(pub, 0, &jerr);
    assert_non_null(d);
    set_path(d, "nickname", "\"Renamed\"");
    char *text = dump(d);
    char err[SP_CHANNEL_ERR_CAP];
    sp_channel *ch = NULL;
    assert_ok(sp_channel_parse_update(text, strlen(text), prev, &ch, err, sizeof err));
    sp_channel_auth auth;
    sp_channel_get_auth(ch, &auth);
    assert_string_equal(auth.password, password);
    assert_string_equal(sp_channel_nickname(ch), "Renamed");
    sp_channel_free(ch);
    /* a new secret replaces it */
    set_path(d, "auth.password_set", NULL);
    set_path(d, "auth.password", "\"new-one\"");
    free(text);
    text = dump(d);
    assert_ok(sp_channel_parse_update(text, strlen(text), prev, &ch, err, sizeof err));
    sp_channel_get_auth(ch, &auth);
    assert_string_equal(auth.password, "new-one");
    sp_channel_free(ch);
    /* neither: refused */
    set_path(d, "auth.password", NULL);
    free(text);
    text = dump(d);
    assert_rc(sp_channel_parse_update(text, strlen(text), prev, &ch, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.password: is required"));
    /* switching to oauth2 with a marker: the previous channel has no client secret */
    set_path(d, "auth", "{\"type\":\"oauth2\",\"token_url\":\"https://a.example/t\",\"client_id\":\"c\","
                        "\"client_secret_set\":true}");
    free(text);
    text = dump(d);
    assert_rc(sp_channel_parse_update(text, strlen(text), prev, &ch, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.client_secret_set: the previous channel has no such secret"));
    /* no previous channel: a plain parse */
    free(text);
    text = pub;
    assert_rc(sp_channel_parse_update(text, plen, NULL, &ch, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.password_set: only stored or updated"));
    free(pub);
    json_decref(d);
    sp_channel_free(prev);
}


/* ---- auth type "headers" ---- */
static void test_auth_headers(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(sms_json_headers());
    sp_channel_auth auth;
    sp_channel_get_auth(ch, &auth);
    assert_int_equal(auth.type, SP_CHANNEL_AUTH_HEADERS);
    assert_null(auth.password);
    assert_int_equal(sp_channel_auth_header_count(ch), 2);
    sp_header h;
    assert_ok(sp_channel_auth_header(ch, 0, &h));
    assert_int_equal(h.name_len, strlen("X-Api-Secret"));
    assert_memory_equal(h.name, "X-Api-Secret", h.name_len);
    assert_int_equal(h.value_len, strlen(api_secret));
    assert_memory_equal(h.value, api_secret, h.value_len);
    assert_ok(sp_channel_auth_header(ch, 1, &h));
    assert_memory_equal(h.value, "ak_acme_1", h.value_len);
    assert_rc(sp_channel_auth_header(ch, 2, &h), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_channel_auth_header(NULL, 0, &h), SP_ERR_INVALID_ARGUMENT);
    /* the secret headers are not static headers */
    assert_int_equal(sp_channel_header_count(ch), 1);
    sp_channel_free(ch);
    /* other auth types have none */
    ch = parse_ok(email_json_basic());
    assert_int_equal(sp_channel_auth_header_count(ch), 0);
    sp_channel_free(ch);

    static const char many[] = "{\"X-K0\":\"v\",\"X-K1\":\"v\",\"X-K2\":\"v\",\"X-K3\":\"v\",\"X-K4\":\"v\","
                               "\"X-K5\":\"v\",\"X-K6\":\"v\",\"X-K7\":\"v\",\"X-K8\":\"v\"}";
    char long_value[1100];
    memset(long_value, 'a', sizeof long_value);
    long_value[0] = '"';
    long_value[1026] = '"';
    long_value[1027] = 0;
    const rule_case cases[] = {
        {sms_json_headers, "auth.headers", NULL, "auth.headers: is required"},
        {sms_json_headers, "auth.headers", "{}", "auth.headers: must hold 1..8 headers"},
        {sms_json_headers, "auth.headers", many, "auth.headers: must hold 1..8 headers"},
        {sms_json_headers, "auth.headers", "[\"X-Api-Secret\"]", "auth.headers: must be an object"},
        {sms_json_headers, "auth.headers", "{\"Bad Name\":\"v\"}", "auth.headers.Bad Name: the name must be an HTTP token"},
        {sms_json_headers, "auth.headers", "{\"Authorization\":\"v\"}", "auth.headers.Authorization: is set from auth"},
        {sms_json_headers, "auth.headers", "{\"Content-Type\":\"v\"}", "auth.headers.Content-Type: is set by sealpost"},
        {sms_json_headers, "auth.headers", "{\"X-AES-IV\":\"v\"}", "auth.headers.X-AES-IV: is reserved"},
        {sms_json_headers, "auth.headers", "{\"webhook-id\":\"v\"}", "auth.headers.webhook-id: is reserved"},
        {sms_json_headers, "auth.headers", "{\"X-A\":\"v\",\"x-a\":\"w\"}", "auth.headers.x-a: is given twice"},
        {sms_json_headers, "auth.headers", "{\"x-merchant-id\":\"v\"}",
         "auth.headers.x-merchant-id: is also a static header in request.headers"},
        {sms_json_headers, "auth.headers", "{\"X-A\":\"\"}", "auth.headers.X-A: the value must be 1..1024 printable ASCII"},
        {sms_json_headers, "auth.headers", "{\"X-A\":\"caf\\u00e9\"}", "auth.headers.X-A: the value must be 1..1024"},
        {sms_json_headers, "auth.headers", "{\"X-A\":\"a\\nb\"}", "auth.headers.X-A: the value must be 1..1024"},
        {sms_json_headers, "auth.headers", "{\"X-A\":7}", "auth.headers.X-A: must be a string"},
        {sms_json_headers, "auth.headers_set", "[\"X-Api-Secret\"]", "auth.headers_set: give either headers or headers_set"},
        {sms_json_headers, "auth.password", "\"x\"", "auth.password: unknown field"},
        {email_json_basic, "auth.headers", "{\"X-A\":\"v\"}", "auth.headers: unknown field"},
    };
    run_rules(cases, SP_ARRAY_LEN(cases));
    /* a value of 1024 characters is fine, 1025 is not */
    json_t *d = sms_json_headers();
    set_path(d, "auth.headers", NULL);
    char doc[1200];
    long_value[1025] = '"';
    long_value[1026] = 0;
    snprintf(doc, sizeof doc, "{\"X-A\":%s}", long_value);
    set_path(d, "auth.headers", doc);
    sp_channel_free(parse_ok(d));
    d = sms_json_headers();
    long_value[1025] = 'a';
    long_value[1026] = '"';
    long_value[1027] = 0;
    snprintf(doc, sizeof doc, "{\"X-A\":%s}", long_value);
    set_path(d, "auth.headers", doc);
    parse_fails(d, "auth.headers.X-A: the value must be 1..1024", SP_ERR_BAD_CONFIG);
    /* a new channel may not carry the marker alone */
    d = sms_json_headers();
    set_path(d, "auth.headers", NULL);
    set_path(d, "auth.headers_set", "[\"X-Api-Secret\"]");
    parse_fails(d, "auth.headers_set: only stored or updated channels carry it", SP_ERR_BAD_CONFIG);
}

static void test_auth_headers_stored_and_update(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(sms_json_headers());
    size_t plen = 0, slen = 0;
    char *pub = public_of(ch, &plen);
    char *sec = secrets_of(ch, &slen);
    assert_null(strstr(pub, api_secret));
    assert_null(strstr(pub, "ak_acme_1"));
    assert_non_null(strstr(sec, "\"headers\":{\"X-Api-Secret\":\"relay-Api-Secret-0042\",\"X-Client-Access-Key\":\"ak_acme_1\"}"));
    char err[SP_CHANNEL_ERR_CAP];
    sp_channel *back = NULL;
    /* stored: the secrets must match the names exactly */
    const char *missing = "{\"headers\":{\"X-Api-Secret\":\"s\"}}";
    assert_rc(sp_channel_parse_stored(pub, plen, missing, strlen(missing), &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.headers: has no value for a header named in auth.headers_set"));
    const char *extra = "{\"headers\":{\"X-Api-Secret\":\"s\",\"X-Client-Access-Key\":\"k\",\"X-Other\":\"o\"}}";
    assert_rc(sp_channel_parse_stored(pub, plen, extra, strlen(extra), &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.headers: holds a header auth.headers_set does not name"));
    assert_rc(sp_channel_parse_stored(pub, plen, "{}", 2, &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.headers: is required"));
    const char *notobj = "{\"headers\":[1]}";
    assert_rc(sp_channel_parse_stored(pub, plen, notobj, strlen(notobj), &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.headers: must be an object"));
    /* headers secrets on a channel whose auth does not use them */
    sp_channel *basic = parse_ok(email_json_basic());
    size_t blen = 0;
    char *bpub = public_of(basic, &blen);
    const char *foreign = "{\"password\":\"p\",\"headers\":{\"X-A\":\"v\"}}";
    assert_rc(sp_channel_parse_stored(bpub, blen, foreign, strlen(foreign), &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "secrets.headers: is not used"));
    free(bpub);
    sp_channel_free(basic);
    /* a stored document with a bad marker */
    json_error_t jerr;
    json_t *d = json_loads(pub, 0, &jerr);
    assert_non_null(d);
    set_path(d, "auth.headers_set", "\"X-Api-Secret\"");
    char *text = dump(d);
    assert_rc(sp_channel_parse_stored(text, strlen(text), sec, slen, &back, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.headers_set: must be an array of 1..8 header names"));
    free(text);
    json_decref(d);

    /* update: the edited GET reply keeps the values of the names it lists */
    d = json_loads(pub, 0, &jerr);
    set_path(d, "nickname", "\"Renamed\"");
    text = dump(d);
    sp_channel *up = NULL;
    assert_ok(sp_channel_parse_update(text, strlen(text), ch, &up, err, sizeof err));
    sp_header h;
    assert_int_equal(sp_channel_auth_header_count(up), 2);
    assert_ok(sp_channel_auth_header(up, 0, &h));
    assert_memory_equal(h.value, api_secret, h.value_len);
    sp_channel_free(up);
    /* a name the previous channel does not have */
    set_path(d, "auth.headers_set", "[\"X-Api-Secret\",\"X-New\"]");
    free(text);
    text = dump(d);
    assert_rc(sp_channel_parse_update(text, strlen(text), ch, &up, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.headers_set: has no value"));
    /* fewer names: only those are kept */
    set_path(d, "auth.headers_set", "[\"X-Client-Access-Key\"]");
    free(text);
    text = dump(d);
    assert_ok(sp_channel_parse_update(text, strlen(text), ch, &up, err, sizeof err));
    assert_int_equal(sp_channel_auth_header_count(up), 1);
    assert_ok(sp_channel_auth_header(up, 0, &h));
    assert_memory_equal(h.value, "ak_acme_1", h.value_len);
    sp_channel_free(up);
    /* new values replace them all */
    set_path(d, "auth.headers_set", NULL);
    set_path(d, "auth.headers", "{\"X-Api-Secret\":\"rotated-secret\"}");
    free(text);
    text = dump(d);
    assert_ok(sp_channel_parse_update(text, strlen(text), ch, &up, err, sizeof err));
    assert_int_equal(sp_channel_auth_header_count(up), 1);
    assert_ok(sp_channel_auth_header(up, 0, &h));
    assert_memory_equal(h.value, "rotated-secret", h.value_len);
    sp_channel_free(up);
    /* neither: refused; a marker against a channel without secret headers: refused */
    set_path(d, "auth.headers", NULL);
    free(text);
    text = dump(d);
    assert_rc(sp_channel_parse_update(text, strlen(text), ch, &up, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.headers: is required"));
    set_path(d, "auth.headers_set", "[\"X-Api-Secret\"]");
    free(text);
    text = dump(d);
    basic = parse_ok(email_json_basic());
    assert_rc(sp_channel_parse_update(text, strlen(text), basic, &up, err, sizeof err), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.headers_set: the previous channel has no such secret to keep"));
    sp_channel_free(basic);
    free(text);
    json_decref(d);
    free(pub);
    sp_wipe(sec, slen);
    free(sec);
    sp_channel_free(ch);
}

/* ---- callback URLs: the channel's own, else the sender's ---- */
static void test_callback_url_fallbacks(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(sms_json_headers());
    sp_channel_message m = {0};
    m.to = val("+14155550100");
    m.body = val("hi");
    m.message_id = val("msg_1");
    /* neither the channel nor the sender: empty */
    json_t *doc = render_json(ch, &m, 1);
    assert_json_str(doc, "dlr_url", "");
    assert_json_str(doc, "inbound_url", "");
    json_decref(doc);
    /* the sender's fallbacks */
    m.delivery_report_url = val("https://127.0.0.1:8443/callbacks/v1/acme/sms/dlr");
    m.inbound_url = val("https://127.0.0.1:8443/callbacks/v1/acme/sms/inbound");
    doc = render_json(ch, &m, 1);
    assert_json_str(doc, "dlr_url", "https://127.0.0.1:8443/callbacks/v1/acme/sms/dlr");
    assert_json_str(doc, "inbound_url", "https://127.0.0.1:8443/callbacks/v1/acme/sms/inbound");
    json_decref(doc);
    sp_channel_free(ch);
    /* the channel's own settings win */
    json_t *d = sms_json_headers();
    set_path(d, "delivery_report_url", "\"https://hooks.example.org/dlr\"");
    set_path(d, "inbound_url", "\"https://hooks.example.org/in\"");
    ch = parse_ok(d);
    doc = render_json(ch, &m, 1);
    assert_json_str(doc, "dlr_url", "https://hooks.example.org/dlr");
    assert_json_str(doc, "inbound_url", "https://hooks.example.org/in");
    json_decref(doc);
    sp_channel_free(ch);
    /* e-mail: $$DeliveryReportURL (its events come back there), not $$InboundURL */
    d = email_json_basic();
    set_path(d, "request.body.template", "\"{\\\"to\\\":\\\"$$To\\\",\\\"dlr\\\":\\\"$$DeliveryReportURL\\\"}\"");
    ch = parse_ok(d);
    sp_channel_message em = email_msg();
    em.delivery_report_url = val("https://p.example/callbacks/v1/acme/mail/dlr");
    doc = render_json(ch, &em, 1);
    assert_json_str(doc, "dlr", "https://p.example/callbacks/v1/acme/mail/dlr");
    json_decref(doc);
    sp_channel_free(ch);
    d = email_json_basic();
    set_path(d, "request.body.template", "\"{\\\"to\\\":\\\"$$To\\\",\\\"in\\\":\\\"$$InboundURL\\\"}\"");
    parse_fails(d, "request.body.template: $$InboundURL is not available in email channels", SP_ERR_BAD_CONFIG);
    /* InboundURL is a standard name: not a custom one */
    d = sms_json_headers();
    set_path(d, "custom", "{\"InboundURL\":\"x\"}");
    parse_fails(d, "custom.InboundURL: is a standard placeholder name", SP_ERR_BAD_CONFIG);
}

/* ---- rendering: sizes, missing values, allocation ---- */
static void test_render_sizes_and_missing(void **state) {
    (void)state;
    sp_channel *ch = parse_ok(email_json_basic());
    sp_channel_message m = email_msg();
    size_t need = 0;
    assert_rc(sp_channel_render(ch, &m, 1, NULL, 0, &need), SP_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(need + 16);
    assert_non_null(out);
    for (size_t cap = 1; cap < need; cap += 13) {
        memset(out, 'Z', need + 16);
        size_t len = 0;
        assert_rc(sp_channel_render(ch, &m, 1, out, cap, &len), SP_ERR_BUFFER_TOO_SMALL);
        assert_int_equal(len, need);
        assert_true(sp_test_all_zero(out, cap));
        assert_int_equal(out[cap], 'Z');
    }
    size_t len = 0;
    assert_ok(sp_channel_render(ch, &m, 1, out, need, &len));
    assert_int_equal(len, need);
    /* a field the body uses, absent */
    m.subject.data = NULL;
    memset(out, 'Z', need);
    assert_rc(sp_channel_render(ch, &m, 1, out, need, &len), SP_ERR_TEMPLATE);
    assert_true(sp_test_all_zero(out, 10));
    /* an empty one is fine */
    m.subject = val("");
    assert_ok(sp_channel_render(ch, &m, 1, out, need, &len));
    /* a field it does not use may be absent */
    m.body.data = NULL;
    assert_ok(sp_channel_render(ch, &m, 1, out, need, &len));
    assert_rc(sp_channel_render(ch, NULL, 1, out, need, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_channel_render(NULL, &m, 1, out, need, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_channel_render(ch, &m, 1, NULL, need, &len), SP_ERR_INVALID_ARGUMENT);
    free(out);
    sp_channel_free(ch);
}

static void test_render_allocates_nothing(void **state) {
    (void)state;
    sp_channel *email = parse_ok(email_json_basic());
    sp_channel *form = parse_ok(email_form_oauth2());
    sp_channel *batch = parse_ok(sms_json_batch());
    sp_channel_message m[100];
    for (size_t i = 0; i < 100; i++) {
        m[i] = email_msg();
        m[i].body = val("hello");
    }
    size_t cap = 64 * 1024, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    uint64_t before = sp_test_alloc_count();
    for (int i = 0; i < 50; i++) {
        assert_ok(sp_channel_render(email, m, 1, out, cap, &len));
        assert_ok(sp_channel_render(form, m, 1, out, cap, &len));
        assert_ok(sp_channel_render(batch, m, 100, out, cap, &len));
    }
    assert_rc(sp_channel_render(batch, m, 100, out, 10, &len), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_test_alloc_count(), before);
    free(out);
    sp_channel_free(email);
    sp_channel_free(form);
    sp_channel_free(batch);
}

static void test_parse_alloc_failures(void **state) {
    (void)state;
    json_t *(*bases[])(void) = {email_json_basic, email_form_oauth2, sms_json_batch, sms_json_headers};
    for (size_t b = 0; b < SP_ARRAY_LEN(bases); b++) {
        json_t *d = bases[b]();
        char *text = dump(d);
        json_decref(d);
        /* jansson 2.14 asserts (load.c, lex_scan_string) when growing its
         * lexer buffer fails inside a string with escapes, so the walk
         * starts after the allocations of loading the document itself */
        uint64_t before = sp_test_alloc_count();
        json_error_t jerr;
        json_t *probe = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        assert_non_null(probe);
        uint64_t load_allocs = sp_test_alloc_count() - before;
        json_decref(probe);
        bool succeeded = false;
        for (uint64_t n = load_allocs + 1; n < 2000 && !succeeded; n++) {
            sp_channel *ch = NULL;
            char err[SP_CHANNEL_ERR_CAP];
            sp_test_fault fault = sp_test_fault_arm(n);
            sp_error rc = sp_channel_parse(text, strlen(text), &ch, err, sizeof err);
            bool reached = sp_test_fault_disarm(fault);
            if (reached) {
                if (rc != SP_ERR_NO_MEMORY) fail_msg("allocation %d of %zu: %s (%s)", (int)n, b, sp_error_name(rc), err);
                assert_null(ch);
                continue;
            }
            assert_ok(rc);
            /* and the documents out */
            for (uint64_t k = 1; k < 500; k++) {
                char out[8192];
                size_t len = 0;
                sp_test_fault f2 = sp_test_fault_arm(k);
                sp_error r2 = sp_channel_public_json(ch, out, sizeof out, &len);
                sp_error r3 = sp_channel_secrets_json(ch, out, sizeof out, &len);
                bool hit = sp_test_fault_disarm(f2);
                if (!hit) {
                    assert_ok(r2);
                    assert_ok(r3);
                    break;
                }
                assert_true(r2 == SP_ERR_NO_MEMORY || r3 == SP_ERR_NO_MEMORY);
                assert_true(r2 == SP_OK || r2 == SP_ERR_NO_MEMORY);
                assert_true(r3 == SP_OK || r3 == SP_ERR_NO_MEMORY);
            }
            sp_channel_free(ch);
            succeeded = true;
        }
        assert_true(succeeded);
        free(text);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_json_basic),
        cmocka_unit_test(test_email_form_oauth2),
        cmocka_unit_test(test_sms_json_batch),
        cmocka_unit_test(test_sms_get_form),
        cmocka_unit_test(test_loopback_http_allowed),
        cmocka_unit_test(test_rules_top_level),
        cmocka_unit_test(test_rules_endpoint),
        cmocka_unit_test(test_rules_headers),
        cmocka_unit_test(test_rules_body),
        cmocka_unit_test(test_rules_auth_and_encryption),
        cmocka_unit_test(test_rules_document),
        cmocka_unit_test(test_public_secrets_roundtrip),
        cmocka_unit_test(test_stored_rules),
        cmocka_unit_test(test_update_keeps_secret),
        cmocka_unit_test(test_auth_headers),
        cmocka_unit_test(test_auth_headers_stored_and_update),
        cmocka_unit_test(test_callback_url_fallbacks),
        cmocka_unit_test(test_render_sizes_and_missing),
        cmocka_unit_test(test_render_allocates_nothing),
        cmocka_unit_test(test_parse_alloc_failures),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
