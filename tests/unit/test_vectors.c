/*
 * The protocol test vectors (tests/vectors/protocol-v1.json, written by an
 * independent Python implementation, tests/vectors/generate.py) against the
 * C library.
 *
 * Round trips of the library with itself cannot catch a mistake made the
 * same way on both sides (a wrong HKDF info string, a header spelled
 * differently, base64 without padding); agreeing byte for byte with an
 * implementation written from the protocol notes alone can. So:
 *  - positive: sealing with the case's key, version, id, timestamp and IV
 *    must give exactly its headers (names, values, order) and body, opening
 *    must give the plaintext back, and the Standard Webhooks secret must
 *    match;
 *  - accept: other spellings the protocol allows must open;
 *  - reject: each malformed or tampered message must fail with its error
 *    code and leave nothing in the output buffer.
 * Every case is checked even after one fails, so one bug does not hide the
 * next, and the number of cases run must equal the number in the file, so a
 * case cannot be skipped silently.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_test_util.h"

#include "wire/sp_wire_internal.h"

static json_t *g_root;
static const char *g_case; /* name of the case being checked, for messages */
static size_t g_failures;

/* Records a failure of the current case and leaves the case's function. */
#define EXPECT(cond, ...)                                                                                          \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            print_error("case %s: ", g_case);                                                                      \
            print_error(__VA_ARGS__);                                                                              \
            print_error(" [%s:%d: %s]\n", __FILE__, __LINE__, #cond);                                             \
            g_failures++;                                                                                          \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

/* ---- reading the file ---- */

static int load_vectors(void **state) {
    (void)state;
    /* sp_init installs jansson's allocator: it must run before the first
     * JSON value exists, or the value is freed by an allocator that did not
     * make it. */
    assert_int_equal(sp_init(), SP_OK);
    const char *dir = getenv("SP_SOURCE_DIR");
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/tests/vectors/protocol-v1.json", dir ? dir : ".");
    assert_true(n > 0 && (size_t)n < sizeof path);
    g_root = sp_test_load_json(path, JSON_REJECT_DUPLICATES);
    json_t *format = json_object_get(g_root, "format");
    assert_true(json_is_string(format));
    assert_string_equal(json_string_value(format), "sealpost-protocol-vectors");
    return 0;
}

static int free_vectors(void **state) {
    (void)state;
    json_decref(g_root);
    g_root = NULL;
    return 0;
}

static json_t *list(const char *name) {
    json_t *a = json_object_get(g_root, name);
    assert_true(json_is_array(a));
    return a;
}

/* A string member: the value, its length through *len (strings in the file
 * may hold bytes a C string would cut short). NULL when absent. */
static const char *member_str(json_t *obj, const char *name, size_t *len) {
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v)) return NULL;
    if (len) *len = json_string_length(v);
    return json_string_value(v);
}

static bool member_int(json_t *obj, const char *name, int64_t *out) {
    json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v)) return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* Decodes a hex member into a malloc'ed buffer (at least 1 byte). */
static uint8_t *member_hex(json_t *obj, const char *name, size_t *out_len) {
    size_t len = 0;
    const char *text = member_str(obj, name, &len);
    if (text == NULL) return NULL;
    uint8_t *buf = malloc(len / 2 + 1);
    assert_non_null(buf);
    if (sp_hex_decode(text, len, buf, len / 2 + 1, out_len) != SP_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The case's headers as sp_header, pointing into the JSON strings. */
static sp_header *case_headers(json_t *c, size_t *n) {
    json_t *hs = json_object_get(c, "headers");
    if (!json_is_array(hs)) return NULL;
    *n = json_array_size(hs);
    sp_header *out = calloc(*n + 1, sizeof *out);
    assert_non_null(out);
    for (size_t i = 0; i < *n; i++) {
        json_t *pair = json_array_get(hs, i);
        json_t *name = json_array_get(pair, 0), *value = json_array_get(pair, 1);
        if (json_array_size(pair) != 2 || !json_is_string(name) || !json_is_string(value)) {
            free(out);
            return NULL;
        }
        out[i].name = json_string_value(name);
        out[i].name_len = json_string_length(name);
        out[i].value = json_string_value(value);
        out[i].value_len = json_string_length(value);
    }
    return out;
}

/* Adds one {key_hex, key_version} to a wire. */
static sp_error add_key(sp_wire *w, json_t *entry, const char *version_member) {
    size_t key_len = 0;
    uint8_t *raw = member_hex(entry, "key_hex", &key_len);
    const char *version = member_str(entry, version_member, NULL);
    if (raw == NULL || version == NULL) {
        free(raw);
        return SP_ERR_INVALID_ARGUMENT;
    }
    sp_key *key = NULL;
    sp_error rc = sp_key_new(raw, key_len, &key);
    sp_wipe(raw, key_len);
    free(raw);
    if (rc == SP_OK) rc = sp_wire_add_key(w, version, key, false);
    sp_key_free(key);
    return rc;
}

/* A receiver holding every key of the case's "keys" list. */
static sp_error receiver_for(json_t *c, sp_wire **out) {
    json_t *keys = json_object_get(c, "keys");
    if (!json_is_array(keys) || json_array_size(keys) == 0) return SP_ERR_INVALID_ARGUMENT;
    sp_error rc = sp_wire_new(out);
    for (size_t i = 0; rc == SP_OK && i < json_array_size(keys); i++) rc = add_key(*out, json_array_get(keys, i), "key_version");
    if (rc != SP_OK) {
        sp_wire_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Checks what sp_open reported about a message against the case. */
static bool opened_matches(json_t *c, const sp_opened *info, const char *version) {
    sp_profile profile = 0;
    sp_alg alg = 0;
    size_t alg_len = 0;
    const char *alg_name = member_str(c, "alg", &alg_len);
    const char *profile_name = member_str(c, "profile", NULL);
    const char *id = member_str(c, "message_id", NULL);
    if (alg_name == NULL || profile_name == NULL || id == NULL) return false;
    if (sp_alg_from_name(alg_name, alg_len, &alg) != SP_OK) return false;
    if (sp_profile_from_name(profile_name, &profile) != SP_OK) return false;
    if (info->profile != profile || info->alg != alg || strcmp(info->message_id, id) != 0) return false;
    return version == NULL || strcmp(info->key_version, version) == 0;
}

/* ---- positive: seal reproduces the bytes, open recovers the plaintext ---- */

static void check_positive(json_t *c) {
    sp_wire *w = NULL;
    uint8_t *pt = NULL, *iv = NULL, *body = NULL, *out = NULL;
    sp_header *hs = NULL;
    size_t pt_len = 0, iv_len = 0, alg_len = 0;
    int64_t ts = 0;
    const char *version = member_str(c, "key_version", NULL);
    const char *id = member_str(c, "message_id", NULL);
    const char *profile_name = member_str(c, "profile", NULL);
    const char *alg_name = member_str(c, "alg", &alg_len);
    size_t want_body_len = 0;
    const char *want_body = member_str(c, "body", &want_body_len);
    const char *secret = member_str(c, "signing_secret", NULL);
    pt = member_hex(c, "plaintext_hex", &pt_len);
    iv = member_hex(c, "iv_hex", &iv_len);
    EXPECT(version && id && profile_name && alg_name && want_body && secret && pt && iv && member_int(c, "timestamp", &ts),
           "incomplete case");

    sp_seal_params params = {0};
    EXPECT(sp_profile_from_name(profile_name, &params.profile) == SP_OK, "profile %s", profile_name);
    EXPECT(sp_alg_from_name(alg_name, alg_len, &params.alg) == SP_OK, "alg %s", alg_name);
    EXPECT(iv_len == sp_alg_iv_bytes(params.alg), "iv of %zu bytes", iv_len);
    params.key_version = version;
    params.message_id = id;
    params.timestamp = ts;
    /* plaintext_hex and plaintext must describe the same bytes */
    size_t text_len = 0;
    const char *text = member_str(c, "plaintext", &text_len);
    EXPECT(text == NULL || (text_len == pt_len && memcmp(text, pt, pt_len) == 0), "plaintext != plaintext_hex");

    sp_error rc = sp_wire_new(&w);
    EXPECT(rc == SP_OK, "sp_wire_new: %s", sp_error_name(rc));
    rc = add_key(w, c, "key_version");
    EXPECT(rc == SP_OK, "add_key: %s", sp_error_name(rc));

    size_t cap = sp_seal_body_bound(params.profile, params.alg, pt_len);
    EXPECT(cap >= want_body_len, "bound %zu < body %zu", cap, want_body_len);
    body = malloc(cap);
    assert_non_null(body);
    sp_sealed sealed;
    rc = sp_seal_with_iv(w, &params, iv, pt_len ? pt : NULL, pt_len, body, cap, &sealed);
    EXPECT(rc == SP_OK, "sp_seal_with_iv: %s", sp_error_name(rc));

    size_t n = 0;
    hs = case_headers(c, &n);
    EXPECT(hs != NULL, "bad headers member");
    EXPECT(sealed.n_headers == n, "%zu headers sealed, %zu expected", sealed.n_headers, n);
    for (size_t i = 0; i < n; i++) {
        const sp_header *got = &sealed.headers[i];
        EXPECT(got->name_len == hs[i].name_len && memcmp(got->name, hs[i].name, got->name_len) == 0,
               "header %zu is %.*s, expected %s", i, (int)got->name_len, got->name, hs[i].name);
        EXPECT(got->value_len == hs[i].value_len && memcmp(got->value, hs[i].value, got->value_len) == 0,
               "header %s is \"%.*s\", expected \"%s\"", hs[i].name, (int)got->value_len, got->value, hs[i].value);
        EXPECT(got->value[got->value_len] == '\0', "header %s value not NUL-terminated", hs[i].name);
    }
    EXPECT(sealed.body_len == want_body_len && memcmp(body, want_body, want_body_len) == 0,
           "body differs:\n  got      %.*s\n  expected %s", (int)sealed.body_len, (const char *)body, want_body);

    /* open the file's bytes (identical to ours by now) on a fresh receiver,
     * so nothing cached by sealing helps */
    sp_wire_free(w);
    w = NULL;
    rc = sp_wire_new(&w);
    EXPECT(rc == SP_OK, "sp_wire_new: %s", sp_error_name(rc));
    rc = add_key(w, c, "key_version");
    EXPECT(rc == SP_OK, "add_key: %s", sp_error_name(rc));
    out = malloc(want_body_len + 1);
    assert_non_null(out);
    size_t out_len = 0;
    sp_opened info;
    memset(&info, 0xee, sizeof info);
    rc = sp_open(w, hs, n, (const uint8_t *)want_body, want_body_len, ts, out, want_body_len + 1, &out_len, &info);
    EXPECT(rc == SP_OK, "sp_open: %s", sp_error_name(rc));
    EXPECT(out_len == pt_len && memcmp(out, pt, pt_len) == 0, "opened plaintext differs (%zu bytes)", out_len);
    EXPECT(opened_matches(c, &info, version) && info.timestamp == ts, "sp_opened info differs");

    char got_secret[64];
    rc = sp_wire_signing_secret(w, version, params.profile, params.alg, got_secret, sizeof got_secret);
    EXPECT(rc == SP_OK, "sp_wire_signing_secret: %s", sp_error_name(rc));
    EXPECT(strcmp(got_secret, secret) == 0, "signing secret %s, expected %s", got_secret, secret);
done:
    sp_wire_free(w);
    free(pt);
    free(iv);
    free(body);
    free(out);
    free(hs);
}

/* ---- accept: spellings sealpost does not write but must read ---- */

static void check_accept(json_t *c) {
    sp_wire *w = NULL;
    sp_header *hs = NULL;
    uint8_t *pt = NULL, *out = NULL;
    size_t pt_len = 0, body_len = 0, n = 0;
    int64_t now = 0;
    const char *body = member_str(c, "body", &body_len);
    pt = member_hex(c, "plaintext_hex", &pt_len);
    hs = case_headers(c, &n);
    EXPECT(body && pt && hs && member_int(c, "now", &now), "incomplete case");
    sp_error rc = receiver_for(c, &w);
    EXPECT(rc == SP_OK, "receiver: %s", sp_error_name(rc));
    out = malloc(body_len + 1);
    assert_non_null(out);
    size_t out_len = 0;
    sp_opened info;
    rc = sp_open(w, hs, n, (const uint8_t *)body, body_len, now, out, body_len + 1, &out_len, &info);
    EXPECT(rc == SP_OK, "sp_open: %s", sp_error_name(rc));
    EXPECT(out_len == pt_len && memcmp(out, pt, pt_len) == 0, "opened plaintext differs (%zu bytes)", out_len);
    EXPECT(opened_matches(c, &info, NULL), "sp_opened info differs");
done:
    sp_wire_free(w);
    free(pt);
    free(out);
    free(hs);
}

/* ---- reject: the named error, and nothing left in the output ---- */

static void check_reject(json_t *c) {
    sp_wire *w = NULL;
    sp_header *hs = NULL;
    uint8_t *out = NULL;
    size_t body_len = 0, n = 0;
    int64_t now = 0;
    const char *body = member_str(c, "body", &body_len);
    const char *want = member_str(c, "error", NULL);
    hs = case_headers(c, &n);
    EXPECT(body && want && hs && member_int(c, "now", &now), "incomplete case");
    sp_error rc = receiver_for(c, &w);
    EXPECT(rc == SP_OK, "receiver: %s", sp_error_name(rc));
    size_t cap = body_len + 64;
    out = malloc(cap);
    assert_non_null(out);
    memset(out, 0xa5, cap);
    size_t out_len = 12345;
    rc = sp_open(w, hs, n, (const uint8_t *)body, body_len, now, out, cap, &out_len, NULL);
    EXPECT(strcmp(sp_error_name(rc), want) == 0, "sp_open gave %s, expected %s", sp_error_name(rc), want);
    EXPECT(out_len == 0, "out_len %zu after a failure", out_len);
    EXPECT(sp_test_all_zero(out, cap), "output buffer not wiped after a failure");
done:
    sp_wire_free(w);
    free(out);
    free(hs);
}

static size_t g_ran_total;

static void run_list(const char *name, void (*check)(json_t *)) {
    json_t *cases = list(name);
    size_t ran = 0, before = g_failures;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        g_case = member_str(c, "name", NULL);
        if (g_case == NULL) g_case = "(unnamed)";
        check(c);
        ran++;
    }
    g_case = NULL;
    g_ran_total += ran;
    if (g_failures != before) fail_msg("%zu of %zu %s cases failed", g_failures - before, ran, name);
    assert_int_equal(ran, json_array_size(cases));
}

static void test_positive(void **state) {
    (void)state;
    run_list("positive", check_positive);
}

static void test_accept(void **state) {
    (void)state;
    run_list("accept", check_accept);
}

static void test_reject(void **state) {
    (void)state;
    run_list("reject", check_reject);
}

/* Runs last: every case in the file ran (a failing list still counts its
 * cases), and the file covers what it promises, so that a truncated or
 * half-regenerated file cannot pass by checking less. */
static void test_coverage(void **state) {
    (void)state;
    size_t in_file = json_array_size(list("positive")) + json_array_size(list("accept")) +
                     json_array_size(list("reject"));
    assert_int_equal(g_ran_total, in_file);

    /* every profile x algorithm x plaintext kind among the positives */
    static const char *const combos[][2] = {{"compat", "AES-256-CBC"}, {"compat", "AES-256-GCM"},
                                            {"compat", "AES-256-CTR"}, {"jwe", "AES-256-GCM"}};
    json_t *pos = list("positive");
    for (size_t k = 0; k < SP_ARRAY_LEN(combos); k++) {
        size_t found = 0;
        bool empty = false, long_pt = false;
        for (size_t i = 0; i < json_array_size(pos); i++) {
            json_t *c = json_array_get(pos, i);
            if (strcmp(member_str(c, "profile", NULL), combos[k][0]) != 0 ||
                strcmp(member_str(c, "alg", NULL), combos[k][1]) != 0)
                continue;
            size_t hex_len = 0;
            (void)member_str(c, "plaintext_hex", &hex_len);
            empty |= hex_len == 0;
            long_pt |= hex_len >= 2000;
            found++;
        }
        if (found < 4 || !empty || !long_pt) fail_msg("positives lack %s/%s cases", combos[k][0], combos[k][1]);
    }

    static const char *const errors[] = {
        "SP_ERR_AUTH",           "SP_ERR_STALE_TIMESTAMP",      "SP_ERR_UNKNOWN_KEY_VERSION", "SP_ERR_BAD_IV_LENGTH",
        "SP_ERR_UNKNOWN_ALGORITHM", "SP_ERR_MISSING_HEADER",    "SP_ERR_BAD_SIGNATURE_HEADER", "SP_ERR_BAD_CONTENT_TYPE",
        "SP_ERR_BAD_JSON",       "SP_ERR_BAD_JWE",              "SP_ERR_BAD_BASE64",          "SP_ERR_BAD_UUID",
        "SP_ERR_BAD_TIMESTAMP",  "SP_ERR_BAD_MESSAGE_ID",
    };
    json_t *rej = list("reject");
    for (size_t k = 0; k < SP_ARRAY_LEN(errors); k++) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(rej) && !found; i++) {
            const char *e = member_str(json_array_get(rej, i), "error", NULL);
            found = e != NULL && strcmp(e, errors[k]) == 0;
        }
        if (!found) fail_msg("no reject case expects %s", errors[k]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positive),
        cmocka_unit_test(test_accept),
        cmocka_unit_test(test_reject),
        cmocka_unit_test(test_coverage),
    };
    return cmocka_run_group_tests(tests, load_vectors, free_vectors);
}
