/*
 * sealpostd's ingestion body parser (apps/sealpostd/body.c): what a client
 * may send to POST /v1/profiles and POST /v1/events, and what it is told
 * when it gets it wrong.
 *
 * Table-driven: every shape, valid and invalid, with the result code the
 * router turns into bad_json / bad_request / batch_too_large and a piece of
 * the message that must name the path. On top of the table:
 *  - what a valid body yields: ids, PII slices in member order, the
 *    identity field chosen in schema order, event timestamps;
 *  - no message ever repeats a rejected value, id or member name that could
 *    carry PII;
 *  - the scalar JSON writer the store text is built with reads back through
 *    jansson as the same value (escapes, control characters, reals);
 *  - every allocation failure during a parse is SP_ERR_NO_MEMORY (never a
 *    400, never a half-parsed document) and leaks nothing.
 */
#include "sp_test_util.h"

#include "body.h"

static const spd_pii_field test_pii[] = {
    {"email", SP_VAULT_FIELD_EMAIL},
    {"phone", SP_VAULT_FIELD_PHONE},
    {"name", SP_VAULT_FIELD_TEXT},
};

static spd_body_schema test_schema(const char *cc, size_t max_batch) {
    spd_body_schema s = {test_pii, 3, cc, max_batch};
    return s;
}

typedef struct {
    const char *body;
    sp_error want;
    const char *msg; /* a substring of the message, or NULL */
} body_case;

#define OK_(b) {b, SP_OK, NULL}
#define BAD(b, m) {b, SP_ERR_INVALID_ARGUMENT, m}
#define JSONERR(b, m) {b, SP_ERR_BAD_JSON, m}

static const body_case profile_cases[] = {
    /* valid */
    OK_("{\"id\":\"u1\",\"attributes\":{}}"),
    OK_("{\"id\":\"u1\",\"attributes\":{\"email\":\"A@Example.com\",\"phone\":\"+1 415 555 0101\",\"plan\":\"pro\"}}"),
    OK_("{\"attributes\":{\"email\":\"a@example.com\"}}"),
    OK_("{\"attributes\":{\"phone\":\"(415) 555-0101\"}}"),
    OK_("{\"id\":\"u1\",\"attributes\":{\"n\":1,\"r\":2.5,\"b\":true,\"f\":false,\"z\":null,\"s\":\"\"}}"),
    OK_("{\"id\":\"u1\",\"attributes\":{\"name\":\" Ada \"}}"),
    OK_("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"attributes\":{\"email\":\"b@x.org\"}}]}"),
    OK_("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"id\":\"b\",\"attributes\":{}},{\"id\":\"c\",\"attributes\":{}}]}"),
    OK_(" \n{\"id\":\"~!#$%&'()*+,-./:;<=>?@[]^_`{|}\",\"attributes\":{}}\n "),
    OK_("{\"id\":\"u1\",\"attributes\":{\"Plan_2\":\"x\",\"EMAIL\":5}}"), /* names are case-sensitive: EMAIL is not PII */
    /* not JSON */
    JSONERR("", "not valid JSON"),
    JSONERR("{", "not valid JSON"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{}", "not valid JSON"),
    JSONERR("not json", "not valid JSON"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{}} x", "after the JSON value"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{}}{\"id\":\"u2\",\"attributes\":{}}", "after the JSON value"),
    JSONERR("{\"id\":\"u1\",\"id\":\"u2\",\"attributes\":{}}", "duplicate"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{\"a\":1,\"a\":2}}", "duplicate"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{\"a\":\"\\u0000\"}}", "not valid JSON"),
    JSONERR("{\"id\":\"u1\",\"attributes\":{\"a\":\"\xff\"}}", "not valid JSON"),
    /* wrong shapes */
    BAD("[]", "body: must be a JSON object"),
    BAD("\"x\"", NULL), /* jansson refuses bare scalars: a JSON error is fine too */
    BAD("{\"id\":\"u1\"}", "attributes: required"),
    BAD("{\"id\":\"u1\",\"attributes\":[]}", "attributes: must be an object"),
    BAD("{\"id\":\"u1\",\"attributes\":{},\"extra\":1}", "unknown field \"extra\""),
    BAD("{\"id\":\"u1\",\"attributes\":{},\"ex tra\":1}", "unknown field"),
    BAD("{\"id\":7,\"attributes\":{}}", "id: must be a string"),
    BAD("{\"id\":\"\",\"attributes\":{}}", "id: must be a string"),
    BAD("{\"id\":\"a b\",\"attributes\":{}}", "id: must be a string"),
    BAD("{\"id\":\"tab\\there\",\"attributes\":{}}", "id: must be a string"),
    BAD("{\"id\":\"caf\xc3\xa9\",\"attributes\":{}}", "id: must be a string"),
    BAD("{\"attributes\":{\"plan\":\"free\"}}", "needs an id"),
    BAD("{\"attributes\":{\"name\":\"Ada\"}}", "needs an id"), /* a text field is no identity */
    BAD("{\"id\":\"u1\",\"attributes\":{\"tags\":[1]}}", "attributes.tags: must be a string, number"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"addr\":{\"c\":1}}}", "attributes.addr: must be a string, number"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"bad-name\":1}}", "attributes: invalid member name"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"\":1}}", "attributes: invalid member name"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}}",
        "attributes: invalid member name"),
    /* PII */
    BAD("{\"id\":\"u1\",\"attributes\":{\"email\":5}}", "attributes.email: must be a string"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"email\":null}}", "attributes.email: must be a string"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"email\":\"not an email\"}}", "attributes.email: not an email address"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"email\":\"a@b\"}}", "attributes.email: not an email address"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"phone\":\"12\"}}", "attributes.phone: not a phone number"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"phone\":\"+1 415 CALL NOW\"}}", "attributes.phone: not a phone number"),
    BAD("{\"id\":\"u1\",\"attributes\":{\"name\":\" \\t \"}}", "attributes.name: must not be empty"),
    /* batches */
    BAD("{\"profiles\":[]}", "profiles: must hold at least one item"),
    BAD("{\"profiles\":{}}", "profiles: must be an array"),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}}],\"x\":1}", "unknown field \"x\""),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},5]}", "profiles[1]: must be an object"),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"id\":\"b\",\"attributes\":{\"email\":\"x\"}}]}",
        "profiles[1].attributes.email: not an email address"),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"attributes\":{}}]}", "profiles[1]: needs an id"),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"id\":\"b\",\"attributes\":{},\"y\":0}]}",
        "profiles[1]: unknown field \"y\""),
    BAD("{\"profiles\":[{\"id\":\"a\",\"attributes\":{\"l\":[]}}]}", "profiles[0].attributes.l: must be"),
    {"{\"profiles\":[{\"id\":\"a\",\"attributes\":{}},{\"id\":\"b\",\"attributes\":{}},{\"id\":\"c\",\"attributes\":{}},"
     "{\"id\":\"d\",\"attributes\":{}}]}",
     SP_ERR_TOO_LARGE, "profiles: more than 3 items"},
};

static const body_case event_cases[] = {
    OK_("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"order.completed\"}]}"),
    OK_("{\"events\":[{\"id\":\"e1\",\"profile_id\":\"p1\",\"name\":\"a:b-c_d.e\",\"ts\":1732406400000,"
        "\"properties\":{\"total\":42.5,\"email\":\"x@y.org\"}}]}"),
    OK_("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"ts\":0,\"properties\":{}}]}"),
    JSONERR("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"name\":\"y\"}]}", "duplicate"),
    JSONERR("{\"events\":[]} []", "after the JSON value"),
    BAD("{}", "events: required"),
    BAD("{\"events\":{}}", "events: must be an array"),
    BAD("{\"events\":[]}", "events: must hold at least one item"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\"}],\"more\":1}", "unknown field \"more\""),
    BAD("{\"events\":[{\"name\":\"x\"}]}", "events[0].profile_id: required"),
    BAD("{\"events\":[{\"profile_id\":\"p1\"}]}", "events[0].name: required"),
    BAD("{\"events\":[{\"profile_id\":\"p 1\",\"name\":\"x\"}]}", "events[0].profile_id: must be a string"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"id\":5,\"name\":\"x\"}]}", "events[0].id: must be a string"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"bad name!\"}]}", "events[0].name: must match"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"\"}]}", "events[0].name: must match"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"ts\":-1}]}", "events[0].ts: must be an integer"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"ts\":1.5}]}", "events[0].ts: must be an integer"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"ts\":\"now\"}]}", "events[0].ts: must be an integer"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"ts\":253402300800000}]}", "events[0].ts"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"properties\":[]}]}",
        "events[0].properties: must be an object"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"properties\":{\"l\":[1]}}]}",
        "events[0].properties.l: must be a string, number"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\"},{\"profile_id\":\"p1\",\"name\":\"x\","
        "\"properties\":{\"phone\":\"x\"}}]}",
        "events[1].properties.phone: not a phone number"),
    BAD("{\"events\":[{\"profile_id\":\"p1\",\"name\":\"x\",\"where\":1}]}", "events[0]: unknown field \"where\""),
    BAD("{\"events\":[1]}", "events[0]: must be an object"),
    {"{\"events\":[{\"profile_id\":\"p\",\"name\":\"x\"},{\"profile_id\":\"p\",\"name\":\"x\"},{\"profile_id\":\"p\","
     "\"name\":\"x\"},{\"profile_id\":\"p\",\"name\":\"x\"}]}",
     SP_ERR_TOO_LARGE, "events: more than 3 items"},
};

static void run_cases(const body_case *cases, size_t n, bool events) {
    spd_body_schema schema = test_schema("1", 3);
    for (size_t i = 0; i < n; i++) {
        const body_case *c = &cases[i];
        char msg[SPD_BODY_MAX_MESSAGE];
        spd_body b;
        memset(msg, 'X', sizeof msg);
        sp_error rc = events ? spd_body_parse_events((const uint8_t *)c->body, strlen(c->body), &schema, &b, msg,
                                                     sizeof msg)
                             : spd_body_parse_profiles((const uint8_t *)c->body, strlen(c->body), &schema, &b, msg,
                                                       sizeof msg);
        bool code_ok = rc == c->want || (c->msg == NULL && rc == SP_ERR_BAD_JSON);
        if (!code_ok) fail_msg("case %zu (%s): got %s, want %s (%s)", i, c->body, sp_error_name(rc),
                               sp_error_name(c->want), msg);
        if (c->msg != NULL && strstr(msg, c->msg) == NULL)
            fail_msg("case %zu (%s): message '%s' lacks '%s'", i, c->body, msg, c->msg);
        if (rc == SP_OK) {
            assert_non_null(b.root);
            assert_true(b.count >= 1);
            spd_body_free(&b);
        } else {
            assert_null(b.root);
            assert_true(strlen(msg) > 0 && strlen(msg) < sizeof msg);
        }
        assert_null(b.root);
    }
}

static void test_profile_table(void **state) {
    (void)state;
    run_cases(profile_cases, SP_ARRAY_LEN(profile_cases), false);
}

static void test_event_table(void **state) {
    (void)state;
    run_cases(event_cases, SP_ARRAY_LEN(event_cases), true);
}

static sp_error parse_p(const char *text, size_t max_batch, const char *cc, spd_body *b, char *msg) {
    spd_body_schema schema = test_schema(cc, max_batch);
    return spd_body_parse_profiles((const uint8_t *)text, strlen(text), &schema, b, msg, SPD_BODY_MAX_MESSAGE);
}

static void test_single_profile(void **state) {
    (void)state;
    spd_body b;
    char msg[SPD_BODY_MAX_MESSAGE];
    /* phone comes first among the members, but email comes first in the schema */
    assert_ok(parse_p("{\"id\":\"u1\",\"attributes\":{\"phone\":\"+14155550101\",\"plan\":\"pro\","
                      "\"email\":\"a@example.com\",\"name\":\"Ada\"}}",
                      10, NULL, &b, msg));
    assert_false(b.batch);
    assert_int_equal(b.count, 1);
    assert_string_equal(b.profiles[0].id, "u1");
    assert_int_equal(b.profiles[0].n_pii, 3);
    assert_int_equal(b.profiles[0].n_plain, 1);
    assert_int_equal(b.n_pii, 3);
    assert_int_equal(b.pii[0].field, 1); /* member order: phone, email, name */
    assert_int_equal(b.pii[1].field, 0);
    assert_int_equal(b.pii[2].field, 2);
    assert_memory_equal(b.pii[1].value, "a@example.com", b.pii[1].len);
    assert_int_equal(b.profiles[0].identity, 1); /* the email */
    spd_body_free(&b);
    assert_null(b.root);
    spd_body_free(&b); /* twice is harmless */
}

static void test_batch(void **state) {
    (void)state;
    spd_body b;
    char msg[SPD_BODY_MAX_MESSAGE];
    assert_ok(parse_p("{\"profiles\":[{\"attributes\":{\"phone\":\"415 555 0101\"}},{\"id\":\"x\",\"attributes\":{"
                      "\"email\":\"b@x.org\",\"phone\":\"+4420 7946 0000\"}},{\"id\":\"y\",\"attributes\":{\"k\":1}}]}",
                      3, "1", &b, msg));
    assert_true(b.batch);
    assert_int_equal(b.count, 3);
    assert_null(b.profiles[0].id);
    assert_int_equal(b.profiles[0].pii_first, 0);
    assert_int_equal(b.profiles[0].n_pii, 1);
    assert_int_equal(b.profiles[0].identity, 0);
    assert_int_equal(b.profiles[1].pii_first, 1);
    assert_int_equal(b.profiles[1].n_pii, 2);
    assert_int_equal(b.profiles[1].identity, 1);
    assert_int_equal(b.profiles[2].n_pii, 0);
    assert_int_equal(b.profiles[2].identity, SIZE_MAX);
    spd_body_free(&b);

    /* a national number needs the tenant's default country code */
    assert_rc(parse_p("{\"attributes\":{\"phone\":\"415 555 0101\"}}", 3, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "attributes.phone: not a phone number"));
    assert_rc(parse_p("{\"attributes\":{\"phone\":\"415 555 0101\"}}", 3, "", &b, msg), SP_ERR_INVALID_ARGUMENT);
}

static void test_batch_limits(void **state) {
    (void)state;
    /* exactly max_batch passes, one more is batch_too_large, at the cap too */
    size_t cap = 1000 * 40 + 64;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t n = 999; n <= 1001; n++) {
        size_t o = (size_t)snprintf(text, cap, "{\"profiles\":[");
        for (size_t i = 0; i < n; i++) o += (size_t)snprintf(text + o, cap - o, "%s{\"id\":\"p%zu\",\"attributes\":{}}", i ? "," : "", i);
        o += (size_t)snprintf(text + o, cap - o, "]}");
        spd_body b;
        char msg[SPD_BODY_MAX_MESSAGE];
        sp_error rc = parse_p(text, 1000, NULL, &b, msg);
        if (n <= 1000) {
            assert_ok(rc);
            assert_int_equal(b.count, n);
            assert_string_equal(b.profiles[n - 1].id, n == 999 ? "p998" : "p999");
            spd_body_free(&b);
        } else {
            assert_rc(rc, SP_ERR_TOO_LARGE);
            assert_non_null(strstr(msg, "more than 1000"));
        }
    }
    free(text);
    /* a schema asking for more than the API allows is refused */
    spd_body b;
    char msg[SPD_BODY_MAX_MESSAGE];
    assert_rc(parse_p("{\"id\":\"a\",\"attributes\":{}}", 1001, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
    assert_rc(parse_p("{\"id\":\"a\",\"attributes\":{}}", 0, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
}

/* n attributes of the given string length each. */
static char *attrs_body(size_t n, size_t value_len) {
    size_t cap = 64 + n * (value_len + 32);
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)snprintf(text, cap, "{\"id\":\"u\",\"attributes\":{");
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(text + o, cap - o, "%s\"a%zu\":\"", i ? "," : "", i);
        memset(text + o, 'v', value_len);
        o += value_len;
        text[o++] = '"';
    }
    snprintf(text + o, cap - o, "}}");
    return text;
}

static void test_attribute_limits(void **state) {
    (void)state;
    spd_body b;
    char msg[SPD_BODY_MAX_MESSAGE];
    char *t = attrs_body(100, 1);
    assert_ok(parse_p(t, 1, NULL, &b, msg));
    spd_body_free(&b);
    free(t);
    t = attrs_body(101, 1);
    assert_rc(parse_p(t, 1, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "attributes: more than 100 members"));
    free(t);
    /* one string of exactly 64 KiB is fine on its own, one byte more is not */
    t = attrs_body(1, SPD_BODY_MAX_STRING);
    assert_rc(parse_p(t, 1, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT); /* but the object is then over 64 KiB */
    assert_non_null(strstr(msg, "attributes: larger than 65536 bytes"));
    free(t);
    t = attrs_body(1, SPD_BODY_MAX_STRING + 1);
    assert_rc(parse_p(t, 1, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "attributes.a0: longer than 65536 bytes"));
    free(t);
    /* the object as a whole: 2 x 33000 bytes */
    t = attrs_body(2, 33000);
    assert_rc(parse_p(t, 1, NULL, &b, msg), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "attributes: larger than"));
    free(t);
    t = attrs_body(2, 30000);
    assert_ok(parse_p(t, 1, NULL, &b, msg));
    spd_body_free(&b);
    free(t);
}

static void test_messages_never_echo_values(void **state) {
    (void)state;
    static const char *const bodies[] = {
        "{\"id\":\"u1\",\"attributes\":{\"email\":\"SECRETMARK@@example.com\"}}",
        "{\"id\":\"u1\",\"attributes\":{\"phone\":\"SECRETMARK\"}}",
        "{\"id\":\"SECRETMARK with space\",\"attributes\":{}}",
        "{\"id\":\"u1\",\"attributes\":{\"SECRETMARK-x\":1}}",
        "{\"id\":\"u1\",\"attributes\":{},\"SECRETMARK@x.org\":1}",
        "{\"id\":\"u1\",\"attributes\":{\"a\":\"SECRETMARK\"}} SECRETMARK",
        "{\"id\":\"u1\",\"attributes\":{\"a\":SECRETMARK}}",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bodies); i++) {
        spd_body b;
        char msg[SPD_BODY_MAX_MESSAGE];
        assert_true(parse_p(bodies[i], 1, NULL, &b, msg) != SP_OK);
        if (strstr(msg, "SECRETMARK") != NULL) fail_msg("case %zu echoes the input: %s", i, msg);
    }
}

static void test_events(void **state) {
    (void)state;
    spd_body_schema schema = test_schema(NULL, 10);
    const char *text = "{\"events\":[{\"id\":\"e1\",\"profile_id\":\"p1\",\"name\":\"order\",\"ts\":17,"
                       "\"properties\":{\"email\":\"a@b.org\",\"total\":1,\"name\":\"Ada\"}},"
                       "{\"profile_id\":\"p2\",\"name\":\"open\"}]}";
    spd_body b;
    char msg[SPD_BODY_MAX_MESSAGE];
    assert_ok(spd_body_parse_events((const uint8_t *)text, strlen(text), &schema, &b, msg, sizeof msg));
    assert_int_equal(b.count, 2);
    assert_null(b.profiles);
    assert_string_equal(b.events[0].id, "e1");
    assert_string_equal(b.events[0].profile_id, "p1");
    assert_string_equal(b.events[0].name, "order");
    assert_int_equal(b.events[0].ts, 17);
    assert_int_equal(b.events[0].n_pii, 2);
    assert_int_equal(b.pii[b.events[0].pii_first].field, 0);
    assert_int_equal(b.pii[b.events[0].pii_first + 1].field, 2);
    assert_null(b.events[1].id);
    assert_int_equal(b.events[1].ts, -1);
    assert_null(b.events[1].properties);
    assert_int_equal(b.events[1].n_pii, 0);
    spd_body_free(&b);
}

static void test_scalar_writer(void **state) {
    (void)state;
    const char *doc = "{\"s\":\"q\\\" b\\\\ n\\n t\\t c\\u0001 d\\u007f u\\u00e9 e\\u2028\",\"i\":-9223372036854775807,"
                      "\"r\":0.1,\"r2\":1e300,\"r3\":-2.0,\"r4\":5e-324,\"t\":true,\"f\":false,\"z\":null,\"e\":\"\"}";
    json_error_t jerr;
    json_t *root = json_loads(doc, 0, &jerr);
    assert_non_null(root);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        char out[256];
        size_t len = 0;
        assert_true(spd_json_append_scalar(out, sizeof out, &len, v));
        assert_int_equal(len, spd_json_scalar_len(v));
        json_t *back = json_loadb(out, len, JSON_DECODE_ANY, &jerr);
        if (back == NULL) fail_msg("%s: '%.*s' does not read back", key, (int)len, out);
        assert_int_equal(json_typeof(back), json_typeof(v));
        assert_true(json_equal(back, v));
        json_decref(back);
        /* too little room is refused, never overrun */
        for (size_t cap = 0; cap < len; cap++) {
            size_t l2 = 0;
            assert_false(spd_json_append_scalar(out, cap, &l2, v));
        }
    }
    json_decref(root);
}

static void test_allocation_failures(void **state) {
    (void)state;
    const char *text = "{\"profiles\":[{\"id\":\"a\",\"attributes\":{\"email\":\"a@b.org\",\"x\":[1,2]}},"
                       "{\"attributes\":{\"phone\":\"+14155550101\",\"k\":\"v\",\"n\":1.5}}]}";
    /* x is an array: the body is invalid, so any success-by-accident (a
     * member dropped by a swallowed allocation failure) would show */
    spd_body_schema schema = test_schema(NULL, 10);
    bool finished = false;
    unsigned failures = 0;
    for (uint64_t n = 1; n < 500 && !finished; n++) {
        spd_body b;
        char msg[SPD_BODY_MAX_MESSAGE];
        sp_test_alloc_fail_at(n);
        sp_error rc = spd_body_parse_profiles((const uint8_t *)text, strlen(text), &schema, &b, msg, sizeof msg);
        sp_test_alloc_fail_at(0);
        if (rc == SP_ERR_INVALID_ARGUMENT) {
            assert_non_null(strstr(msg, "profiles[0].attributes.x"));
            finished = true;
        } else if (rc == SP_ERR_NO_MEMORY) {
            failures++;
        } else {
            fail_msg("allocation %llu failed: got %s (%s)", (unsigned long long)n, sp_error_name(rc), msg);
        }
        assert_null(b.root);
    }
    assert_true(finished);
    assert_true(failures >= 10); /* the parse did go through the funnel */
}

int main(void) {
    if (sp_init() != SP_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_table),
        cmocka_unit_test(test_event_table),
        cmocka_unit_test(test_single_profile),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_attribute_limits),
        cmocka_unit_test(test_messages_never_echo_values),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_scalar_writer),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
