/*
 * Tenant settings: the admin API's create and patch bodies (every field
 * valid, then each invalid field with the message that names it), the
 * defaults a new tenant gets from the config, the stored document's round
 * trip, and the API object that never shows the KMS config.
 */
#include "sp_test_util.h"

#include "daemon.h"

static spd_config config_for_tests(void) {
    spd_config c;
    memset(&c, 0, sizeof c);
    memcpy(c.data_dir, "/srv/sp", 8);
    c.rate_per_second = 1000;
    c.rate_burst = 2000;
    assert_ok(sp_allow_list_parse("127.0.0.1/32,::1/128", &c.default_tenant_allow, NULL, 0));
    return c;
}

/* json_dumps output comes from the library's allocator once sp_init ran */
static void json_text_free(char *text) {
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    f(text);
}

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!j) fail_msg("test JSON: %s", e.text);
    return j;
}

static void test_id(void **state) {
    (void)state;
    assert_true(spd_tenant_id_valid("acme"));
    assert_true(spd_tenant_id_valid("a"));
    assert_true(spd_tenant_id_valid("0-a_b"));
    char longest[65];
    memset(longest, 'a', 64);
    longest[64] = '\0';
    assert_true(spd_tenant_id_valid(longest));
    longest[63] = '-';
    assert_true(spd_tenant_id_valid(longest));
    char too_long[66];
    memset(too_long, 'a', 65);
    too_long[65] = '\0';
    assert_false(spd_tenant_id_valid(too_long));
    static const char *const bad[] = {"", "Acme", "-acme", "_acme", "ac me", "acme.", "ac/me", "é"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (spd_tenant_id_valid(bad[i])) fail_msg("'%s' accepted", bad[i]);
    }
    assert_false(spd_tenant_id_valid(NULL));
}

static void test_defaults(void **state) {
    (void)state;
    spd_config c = config_for_tests();
    spd_settings s;
    assert_ok(spd_settings_defaults(&c, "acme", &s));
    assert_string_equal(s.name, "acme");
    assert_string_equal(s.kms, "local:path=/srv/sp/kms/acme.key;create=1");
    assert_int_equal(s.n_pii, 2);
    assert_string_equal(s.pii[0].name, "email");
    assert_int_equal(s.pii[0].kind, SP_VAULT_FIELD_EMAIL);
    assert_string_equal(s.pii[1].name, "phone");
    assert_int_equal(s.pii[1].kind, SP_VAULT_FIELD_PHONE);
    assert_int_equal(s.allow.count, 2);
    assert_true(s.rate_per_second == 1000 && s.rate_burst == 2000);
    assert_string_equal(s.default_country_code, "");
    assert_rc(spd_settings_defaults(&c, "Bad", &s), SP_ERR_INVALID_ARGUMENT);
}

static void test_create_valid(void **state) {
    (void)state;
    spd_config c = config_for_tests();
    spd_settings s;
    assert_ok(spd_settings_defaults(&c, "acme", &s));
    json_t *body = parse("{\"id\":\"acme\",\"name\":\"Acme Inc\",\"kms\":\"local:path=/k/acme.key\","
                         "\"pii_fields\":[{\"name\":\"email\",\"kind\":\"email\"},{\"name\":\"ssn\",\"kind\":\"text\"}],"
                         "\"default_country_code\":\"44\",\"allow_ips\":[\"10.0.0.0/8\",\"2001:db8::/32\"],"
                         "\"rate_limit\":{\"per_second\":2.5,\"burst\":10}}");
    char err[256] = "";
    assert_ok(spd_settings_apply(body, true, &s, NULL, err, sizeof err));
    json_decref(body);
    assert_string_equal(s.name, "Acme Inc");
    assert_string_equal(s.kms, "local:path=/k/acme.key");
    assert_int_equal(s.n_pii, 2);
    assert_string_equal(s.pii[1].name, "ssn");
    assert_int_equal(s.pii[1].kind, SP_VAULT_FIELD_TEXT);
    assert_string_equal(s.default_country_code, "44");
    assert_int_equal(s.allow.count, 2);
    assert_true(s.rate_per_second == 2.5 && s.rate_burst == 10);

    /* stored document: round trip */
    json_t *doc = spd_settings_document(&s);
    assert_non_null(doc);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    spd_settings back;
    assert_ok(spd_settings_parse(text, strlen(text), &back));
    json_text_free(text);
    assert_string_equal(back.kms, s.kms);
    assert_string_equal(back.name, s.name);
    assert_int_equal(back.n_pii, 2);
    assert_int_equal(back.allow.count, 2);
    assert_memory_equal(&back.allow.entries[1], &s.allow.entries[1], sizeof(sp_cidr));
    assert_true(back.rate_per_second == 2.5);

    /* the API object: no kms string, its backend instead */
    json_t *api = spd_tenant_json("acme", &s, true, 10, 20);
    assert_non_null(api);
    assert_null(json_object_get(api, "kms"));
    assert_string_equal(json_string_value(json_object_get(api, "kms_backend")), "local");
    assert_true(json_is_true(json_object_get(api, "disabled")));
    assert_int_equal(json_integer_value(json_object_get(api, "updated")), 20);
    assert_string_equal(json_string_value(json_array_get(json_object_get(api, "allow_ips"), 1)), "2001:db8::/32");
    char *api_text = json_dumps(api, JSON_COMPACT);
    assert_null(strstr(api_text, "/k/acme.key"));
    json_text_free(api_text);
    json_decref(api);
}

typedef struct {
    const char *body;
    const char *message; /* a part of it */
} bad_case;

static const bad_case create_cases[] = {
    {"[]", "the body must be a JSON object"},
    {"{\"name\":\"\"}", "name: must be a string of 1 to 200"},
    {"{\"name\":5}", "name: must be a string"},
    {"{\"name\":\"a\\u0001b\"}", "name: must be a string"},
    {"{\"kms\":\"\"}", "kms: must be a KMS config string"},
    {"{\"kms\":7}", "kms: must be a KMS config string"},
    {"{\"pii_fields\":{}}", "pii_fields: must be an array"},
    {"{\"pii_fields\":[1]}", "pii_fields[0]: must be an object"},
    {"{\"pii_fields\":[{\"name\":\"Email\",\"kind\":\"email\"}]}", "pii_fields[0].name: must match"},
    {"{\"pii_fields\":[{\"name\":\"email\",\"kind\":\"mail\"}]}", "pii_fields[0].kind: must be text, email or phone"},
    {"{\"pii_fields\":[{\"name\":\"email\"}]}", "pii_fields[0].kind"},
    {"{\"pii_fields\":[{\"name\":\"a\",\"kind\":\"text\"},{\"name\":\"a\",\"kind\":\"text\"}]}",
     "pii_fields[1].name: duplicate"},
    {"{\"pii_fields\":[{\"name\":\"a\",\"kind\":\"text\",\"x\":1}]}", "pii_fields[0]: unknown field 'x'"},
    {"{\"default_country_code\":\"1234\"}", "default_country_code: must be 1 to 3 digits"},
    {"{\"default_country_code\":\"+1\"}", "default_country_code: must be 1 to 3 digits"},
    {"{\"default_country_code\":\"\"}", "default_country_code: must be 1 to 3 digits"},
    {"{\"default_country_code\":1}", "default_country_code: must be 1 to 3 digits"},
    {"{\"allow_ips\":\"10.0.0.0/8\"}", "allow_ips: must be an array"},
    {"{\"allow_ips\":[\"10.0.0.0/8\",\"10.0.0.0/33\"]}", "allow_ips[1]: not a CIDR"},
    {"{\"allow_ips\":[7]}", "allow_ips[0]: not a CIDR"},
    {"{\"rate_limit\":5}", "rate_limit: must be an object"},
    {"{\"rate_limit\":{\"per_second\":0}}", "rate_limit.per_second: must be above 0"},
    {"{\"rate_limit\":{\"per_second\":1000001}}", "rate_limit.per_second"},
    {"{\"rate_limit\":{\"per_second\":\"5\"}}", "rate_limit.per_second: must be a number"},
    {"{\"rate_limit\":{\"burst\":0.5}}", "rate_limit.burst: must be between 1"},
    {"{\"rate_limit\":{\"burst\":10000001}}", "rate_limit.burst"},
    {"{\"rate_limit\":{\"bust\":5}}", "rate_limit: unknown field 'bust'"},
    {"{\"disabled\":true}", "unknown field(s): disabled"},
    {"{\"colour\":1,\"size\":2}", "unknown field(s): colour, size"},
};

static const bad_case patch_cases[] = {
    {"{\"id\":\"other\"}", "id: cannot be changed"},
    {"{\"kms\":\"local:path=/x\"}", "kms: cannot be changed"},
    {"{\"pii_fields\":[]}", "pii_fields: cannot be changed"},
    {"{\"disabled\":\"yes\"}", "disabled: must be true or false"},
    {"{\"name\":\"ok\",\"extra\":1}", "unknown field(s): extra"},
};

static void run_cases(const bad_case *cases, size_t n, bool create) {
    spd_config c = config_for_tests();
    for (size_t i = 0; i < n; i++) {
        spd_settings s, before;
        assert_ok(spd_settings_defaults(&c, "acme", &s));
        before = s;
        json_t *body = parse(cases[i].body);
        char err[256] = "";
        bool disabled = false;
        sp_error rc = spd_settings_apply(body, create, &s, &disabled, err, sizeof err);
        json_decref(body);
        if (rc != SP_ERR_INVALID_ARGUMENT) fail_msg("accepted: %s", cases[i].body);
        if (!strstr(err, cases[i].message)) fail_msg("%s: message '%s', want '%s'", cases[i].body, err, cases[i].message);
        /* a refused body changes nothing */
        assert_memory_equal(&s, &before, sizeof s);
        assert_false(disabled);
    }
}

static void test_create_invalid(void **state) {
    (void)state;
    run_cases(create_cases, sizeof create_cases / sizeof create_cases[0], true);
    /* limits on counts */
    spd_config c = config_for_tests();
    spd_settings s;
    assert_ok(spd_settings_defaults(&c, "acme", &s));
    json_t *pii = json_array(), *allow = json_array();
    for (int i = 0; i < 33; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        json_array_append_new(pii, json_pack("{s:s,s:s}", "name", name, "kind", "text"));
    }
    for (int i = 0; i < 65; i++) {
        char cidr[32];
        snprintf(cidr, sizeof cidr, "10.0.%d.0/24", i);
        json_array_append_new(allow, json_string(cidr));
    }
    char err[256];
    json_t *body = json_pack("{s:o}", "pii_fields", pii);
    assert_rc(spd_settings_apply(body, true, &s, NULL, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "pii_fields: at most 32"));
    json_decref(body);
    body = json_pack("{s:o}", "allow_ips", allow);
    assert_rc(spd_settings_apply(body, true, &s, NULL, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "allow_ips: at most 64"));
    json_decref(body);
    char name[202];
    memset(name, 'n', 201);
    name[201] = '\0';
    body = json_pack("{s:s}", "name", name);
    assert_rc(spd_settings_apply(body, true, &s, NULL, err, sizeof err), SP_ERR_INVALID_ARGUMENT);
    json_decref(body);
    name[200] = '\0';
    body = json_pack("{s:s}", "name", name);
    assert_ok(spd_settings_apply(body, true, &s, NULL, err, sizeof err));
    json_decref(body);
}

static void test_patch(void **state) {
    (void)state;
    run_cases(patch_cases, sizeof patch_cases / sizeof patch_cases[0], false);
    spd_config c = config_for_tests();
    spd_settings s;
    assert_ok(spd_settings_defaults(&c, "acme", &s));
    json_t *body = parse("{\"name\":\"New\",\"disabled\":true,\"rate_limit\":{\"burst\":5},"
                         "\"default_country_code\":\"1\",\"allow_ips\":[]}");
    bool disabled = false;
    char err[256];
    assert_ok(spd_settings_apply(body, false, &s, &disabled, err, sizeof err));
    json_decref(body);
    assert_true(disabled);
    assert_string_equal(s.name, "New");
    assert_true(s.rate_burst == 5 && s.rate_per_second == 1000); /* the other half stays */
    assert_string_equal(s.default_country_code, "1");
    assert_int_equal(s.allow.count, 0);
    assert_int_equal(s.n_pii, 2);
    body = parse("{\"default_country_code\":null}");
    assert_ok(spd_settings_apply(body, false, &s, &disabled, err, sizeof err));
    json_decref(body);
    assert_string_equal(s.default_country_code, "");
}

static void test_stored_document_checked(void **state) {
    (void)state;
    spd_settings s;
    static const char *const bad[] = {
        "", "not json", "[]", "{\"name\":\"a\"}",
        "{\"name\":\"a\",\"kms\":\"local:path=/k\",\"pii_fields\":[],\"allow_ips\":[]}",
        "{\"name\":\"a\",\"kms\":\"local:path=/k\",\"pii_fields\":[],\"allow_ips\":[],\"rate_limit\":{\"per_second\":1}}",
        "{\"name\":\"a\",\"name\":\"b\",\"kms\":\"k\",\"pii_fields\":[],\"allow_ips\":[],\"rate_limit\":{\"per_second\":1,\"burst\":1}}",
        "{\"name\":\"a\",\"kms\":\"k\",\"pii_fields\":[],\"allow_ips\":[],\"rate_limit\":{\"per_second\":1,\"burst\":1},\"disabled\":false}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (spd_settings_parse(bad[i], strlen(bad[i]), &s) == SP_OK) fail_msg("accepted: %s", bad[i]);
    }
    const char *good = "{\"name\":\"a\",\"kms\":\"k\",\"pii_fields\":[],\"allow_ips\":[],\"default_country_code\":\"\","
                       "\"rate_limit\":{\"per_second\":1,\"burst\":1}}";
    assert_ok(spd_settings_parse(good, strlen(good), &s));
    assert_int_equal(s.n_pii, 0);
    assert_rc(spd_settings_parse(NULL, 0, &s), SP_ERR_INVALID_ARGUMENT);
}

int main(void) {
    if (sp_init() != SP_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_create_valid),
        cmocka_unit_test(test_create_invalid),
        cmocka_unit_test(test_patch),
        cmocka_unit_test(test_stored_document_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
