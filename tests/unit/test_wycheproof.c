/*
 * Project Wycheproof against the cipher layer.
 *
 * The public API only offers AES-256 with the protocol's IV and tag sizes, so
 * these vectors go through the internal functions underneath it
 * (sp_cipher_new_raw/sp_cipher_run, sp_hmac_sha256, sp_hkdf_sha256,
 * sp_aes_key_wrap/unwrap): that is the code the protocol runs, and the
 * vectors' odd key, IV and tag sizes probe its edges.
 *
 * Every case in every file is run. Valid cases must reproduce the expected
 * output and also go back the other way; invalid cases must be refused; for
 * "acceptable" cases either outcome is fine as long as nothing crashes and a
 * success yields the expected bytes. Each file's tally must add up to its
 * numberOfTests, so a case that falls through the cracks fails the test
 * instead of passing silently.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_test_util.h"

#include "cipher/sp_cipher.h"

/* ---- small helpers ---- */

/* A decoded hex string. The buffer always has at least one byte so that an
 * empty value is a non-NULL pointer with length 0, which is how the library
 * wants empty inputs. */
typedef struct {
    uint8_t *data;
    size_t len;
} hexbuf;

/* Decoded by sp_test_unhex, independently of sp_hex_decode, so that a bug
 * there cannot hide a bug here. */
static hexbuf hex(const char *s) {
    size_t cap = strlen(s) / 2;
    hexbuf h = {malloc(cap + 1), 0};
    assert_non_null(h.data);
    h.len = sp_test_unhex(s, h.data, cap);
    return h;
}

static void hexbuf_free(hexbuf *h) {
    free(h->data);
    h->data = NULL;
    h->len = 0;
}

static const char *member_str(json_t *obj, const char *name) {
    json_t *v = json_object_get(obj, name);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static hexbuf member_hex(json_t *obj, const char *name) { return hex(member_str(obj, name)); }

static size_t member_size(json_t *obj, const char *name) {
    json_t *v = json_object_get(obj, name);
    assert_non_null(v);
    assert_true(json_is_integer(v));
    assert_true(json_integer_value(v) >= 0);
    return (size_t)json_integer_value(v);
}

static bool same(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* ---- the per-file driver ---- */

typedef enum { EXPECT_VALID, EXPECT_INVALID, EXPECT_ACCEPTABLE } expectation;

/* What one case did. PASS: a valid case produced the expected output both
 * ways, an invalid one was refused, an acceptable one did not succeed with
 * wrong bytes. LIMIT: a valid case the layer refuses, cleanly and with the
 * documented error, because the backend cannot do it (see gcm_case); it is
 * counted and printed apart so that it is never mistaken for a pass. */
typedef enum { CASE_FAIL, CASE_PASS, CASE_LIMIT } outcome;
typedef outcome (*case_runner)(json_t *group, json_t *tc, expectation want);

typedef struct {
    size_t valid_ok, valid_refused, invalid_rejected, acceptable, failures, seen;
} tally;

static json_t *load_vectors(const char *file) {
    const char *dir = getenv("SP_SHARED_DIR");
    assert_non_null(dir);
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/vectors/wycheproof/%s.json", dir, file);
    assert_true(n > 0 && (size_t)n < sizeof path);
    return sp_test_load_json(path, 0);
}

static void run_file(const char *file, case_runner run) {
    /* sp_init first: it installs jansson's wiping allocator, and a document
     * loaded before that would be freed by the wrong allocator. */
    assert_int_equal(sp_init(), SP_OK);
    json_t *root = load_vectors(file);
    json_t *groups = json_object_get(root, "testGroups");
    assert_true(json_is_array(groups));
    size_t declared = member_size(root, "numberOfTests");
    tally t = {0};

    size_t gi;
    json_t *group;
    json_array_foreach(groups, gi, group) {
        json_t *tests = json_object_get(group, "tests");
        assert_true(json_is_array(tests));
        size_t ti;
        json_t *tc;
        json_array_foreach(tests, ti, tc) {
            t.seen++;
            const char *result = member_str(tc, "result");
            expectation want = EXPECT_INVALID;
            if (strcmp(result, "valid") == 0) want = EXPECT_VALID;
            else if (strcmp(result, "acceptable") == 0) want = EXPECT_ACCEPTABLE;
            else if (strcmp(result, "invalid") != 0) fail_msg("%s: unknown result \"%s\"", file, result);
            outcome got = run(group, tc, want);
            if (got == CASE_LIMIT && want == EXPECT_VALID) {
                t.valid_refused++;
                continue;
            }
            if (got != CASE_PASS) {
                t.failures++;
                print_error("%s: tcId %lld (%s, \"%s\") failed\n", file,
                            (long long)json_integer_value(json_object_get(tc, "tcId")), result,
                            member_str(tc, "comment"));
                continue;
            }
            if (want == EXPECT_VALID) t.valid_ok++;
            else if (want == EXPECT_INVALID) t.invalid_rejected++;
            else t.acceptable++;
        }
    }
    json_decref(root);

    char extra[128] = "";
    if (t.acceptable > 0) (void)snprintf(extra, sizeof extra, ", %zu acceptable", t.acceptable);
    if (t.valid_refused > 0) {
        size_t used = strlen(extra);
        (void)snprintf(extra + used, sizeof extra - used, ", %zu valid refused (beyond the backend's limits)",
                       t.valid_refused);
    }
    print_message("wycheproof %s: %zu valid ok, %zu invalid rejected%s\n", file, t.valid_ok, t.invalid_rejected,
                  extra);
    assert_int_equal(t.failures, 0);
    assert_int_equal(t.seen, declared);
    assert_int_equal(t.valid_ok + t.valid_refused + t.invalid_rejected + t.acceptable, declared);
}

/* ---- AES-GCM ---- */

/* One direction through sp_cipher_run on a given cipher. */
static sp_error gcm_run(sp_cipher *c, bool encrypt, const hexbuf *iv, const hexbuf *aad, const uint8_t *in,
                        size_t in_len, size_t tag_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    return sp_cipher_run(c, encrypt, iv->data, iv->len, aad->data, aad->len, in, in_len, tag_len, out, out_cap,
                         out_len);
}

/* OpenSSL 3's GCM provider takes IVs of 1 to 128 bytes (GCM_IV_MAX_SIZE)
 * although GCM itself allows any length; sp_cipher_run documents "any IV
 * length OpenSSL accepts". Wycheproof has valid 257-byte IVs: for those the
 * only right answer here is a clean SP_ERR_BAD_IV_LENGTH both ways. */
#define GCM_BACKEND_MAX_IV 128

static outcome gcm_case(json_t *group, json_t *tc, expectation want) {
    size_t tag_len = member_size(group, "tagSize") / 8;
    hexbuf key = member_hex(tc, "key"), iv = member_hex(tc, "iv"), aad = member_hex(tc, "aad");
    hexbuf msg = member_hex(tc, "msg"), ct = member_hex(tc, "ct"), tag = member_hex(tc, "tag");
    outcome ok = CASE_FAIL;

    /* the sealed form the library reads and writes: ciphertext || tag */
    size_t sealed_len = ct.len + tag.len;
    uint8_t *sealed = malloc(sealed_len + 1);
    uint8_t *out = calloc(1, sealed_len + msg.len + 1);
    assert_non_null(sealed);
    assert_non_null(out);
    memcpy(sealed, ct.data, ct.len);
    memcpy(sealed + ct.len, tag.data, tag.len);
    size_t out_cap = sealed_len + msg.len, out_len = 0;

    sp_cipher *c = NULL;
    sp_error rc = sp_cipher_new_raw(SP_AES_GCM, key.data, key.len, &c);
    if (rc != SP_OK) {
        /* a key size the layer refuses can only make an invalid case pass */
        ok = want != EXPECT_VALID ? CASE_PASS : CASE_FAIL;
        goto done;
    }

    sp_error enc = gcm_run(c, true, &iv, &aad, msg.data, msg.len, tag_len, out, out_cap, &out_len);
    bool enc_match = enc == SP_OK && same(out, out_len, sealed, sealed_len);

    memset(out, 0, out_cap);
    sp_error dec = gcm_run(c, false, &iv, &aad, sealed, sealed_len, tag.len, out, out_cap, &out_len);
    bool dec_match = dec == SP_OK && same(out, out_len, msg.data, msg.len);
    /* A refused decryption must not leave plaintext behind. The output was
     * zeroed first, so refused-before-writing and wiped-after both pass. */
    bool dec_clean = dec == SP_OK || sp_test_all_zero(out, ct.len);

    switch (want) {
    case EXPECT_VALID:
        if (iv.len > GCM_BACKEND_MAX_IV && enc == SP_ERR_BAD_IV_LENGTH && dec == SP_ERR_BAD_IV_LENGTH) {
            ok = CASE_LIMIT;
            break;
        }
        ok = enc_match && dec_match ? CASE_PASS : CASE_FAIL;
        if (ok == CASE_PASS && iv.len != SP_GCM_IV_BYTES) {
            /* The cipher caches the IV length it last set: switch to the
             * default length and back and the vector must still hold. */
            uint8_t iv12[SP_GCM_IV_BYTES] = {0};
            hexbuf other = {iv12, sizeof iv12};
            bool again = gcm_run(c, true, &other, &aad, msg.data, msg.len, tag_len, out, out_cap, &out_len) == SP_OK &&
                         gcm_run(c, true, &iv, &aad, msg.data, msg.len, tag_len, out, out_cap, &out_len) == SP_OK &&
                         same(out, out_len, sealed, sealed_len);
            ok = again ? CASE_PASS : CASE_FAIL;
        }
        break;
    case EXPECT_INVALID:
        /* a modified tag must fail to open; an IV GCM cannot take (length 0)
         * may be refused on either side */
        ok = (dec != SP_OK && dec_clean) || (iv.len == 0 && enc != SP_OK) ? CASE_PASS : CASE_FAIL;
        break;
    case EXPECT_ACCEPTABLE:
        ok = dec_clean && (dec != SP_OK || dec_match) ? CASE_PASS : CASE_FAIL;
        break;
    }
    sp_cipher_free(c);
done:
    free(sealed);
    free(out);
    hexbuf_free(&key);
    hexbuf_free(&iv);
    hexbuf_free(&aad);
    hexbuf_free(&msg);
    hexbuf_free(&ct);
    hexbuf_free(&tag);
    return ok;
}

/* ---- AES-CBC with PKCS#5/7 padding ---- */

static outcome cbc_case(json_t *group, json_t *tc, expectation want) {
    (void)group;
    hexbuf key = member_hex(tc, "key"), iv = member_hex(tc, "iv");
    hexbuf msg = member_hex(tc, "msg"), ct = member_hex(tc, "ct");
    bool ok = false;
    size_t out_cap = ct.len + msg.len + SP_AES_BLOCK_BYTES, out_len = 0;
    uint8_t *out = calloc(1, out_cap);
    assert_non_null(out);

    sp_cipher *c = NULL;
    if (sp_cipher_new_raw(SP_AES_CBC, key.data, key.len, &c) != SP_OK) {
        ok = want != EXPECT_VALID;
        goto done;
    }
    if (want == EXPECT_VALID) {
        ok = sp_cipher_run(c, true, iv.data, iv.len, NULL, 0, msg.data, msg.len, 0, out, out_cap, &out_len) ==
                 SP_OK &&
             same(out, out_len, ct.data, ct.len);
        ok = ok &&
             sp_cipher_run(c, false, iv.data, iv.len, NULL, 0, ct.data, ct.len, 0, out, out_cap, &out_len) ==
                 SP_OK &&
             same(out, out_len, msg.data, msg.len);
    } else {
        memset(out, 0, out_cap);
        sp_error dec = sp_cipher_run(c, false, iv.data, iv.len, NULL, 0, ct.data, ct.len, 0, out, out_cap, &out_len);
        if (want == EXPECT_INVALID) {
            /* bad padding is an authentication failure, and whatever the
             * block decryption wrote is gone */
            ok = dec == SP_ERR_AUTH && sp_test_all_zero(out, ct.len);
        } else {
            ok = dec != SP_OK ? sp_test_all_zero(out, ct.len) : same(out, out_len, msg.data, msg.len);
        }
    }
    sp_cipher_free(c);
done:
    free(out);
    hexbuf_free(&key);
    hexbuf_free(&iv);
    hexbuf_free(&msg);
    hexbuf_free(&ct);
    return ok ? CASE_PASS : CASE_FAIL;
}

/* ---- HMAC-SHA256, possibly truncated ---- */

static outcome hmac_case(json_t *group, json_t *tc, expectation want) {
    size_t tag_bytes = member_size(group, "tagSize") / 8;
    assert_true(tag_bytes > 0 && tag_bytes <= SP_HMAC_SHA256_BYTES);
    hexbuf key = member_hex(tc, "key"), msg = member_hex(tc, "msg"), tag = member_hex(tc, "tag");
    uint8_t mac[SP_HMAC_SHA256_BYTES], again[SP_HMAC_SHA256_BYTES], split[SP_HMAC_SHA256_BYTES];
    bool ok = false;

    if (sp_hmac_sha256(key.data, key.len, msg.data, msg.len, mac) != SP_OK) goto done;

    /* The reusable context must agree with the one-shot call, also when it
     * is re-armed for a second message and when input comes in pieces. */
    sp_hmac *h = NULL;
    if (sp_hmac_new(key.data, key.len, &h) != SP_OK) goto done;
    size_t half = msg.len / 2;
    bool ctx_ok = sp_hmac_begin(h) == SP_OK && sp_hmac_update(h, msg.data, half) == SP_OK &&
                  sp_hmac_update(h, msg.data + half, msg.len - half) == SP_OK && sp_hmac_final(h, split) == SP_OK &&
                  sp_hmac_begin(h) == SP_OK && sp_hmac_update(h, msg.data, msg.len) == SP_OK &&
                  sp_hmac_final(h, again) == SP_OK && memcmp(mac, split, sizeof mac) == 0 &&
                  memcmp(mac, again, sizeof mac) == 0;
    sp_hmac_free(h);
    if (!ctx_ok) goto done;

    /* the verifier's view: the received tag is compared with the leading
     * tag_bytes of the MAC, and a tag of another length never matches */
    bool match = tag.len == tag_bytes && sp_ct_equal(mac, tag.data, tag_bytes);
    if (want == EXPECT_VALID) ok = match;
    else if (want == EXPECT_INVALID) ok = !match;
    else ok = true;
done:
    hexbuf_free(&key);
    hexbuf_free(&msg);
    hexbuf_free(&tag);
    return ok ? CASE_PASS : CASE_FAIL;
}

/* ---- HKDF-SHA256 ---- */

static outcome hkdf_case(json_t *group, json_t *tc, expectation want) {
    (void)group;
    hexbuf ikm = member_hex(tc, "ikm"), salt = member_hex(tc, "salt"), info = member_hex(tc, "info");
    hexbuf okm = member_hex(tc, "okm");
    size_t size = member_size(tc, "size");
    uint8_t *out = calloc(1, size + 1);
    assert_non_null(out);
    sp_error rc = sp_hkdf_sha256(ikm.data, ikm.len, salt.data, salt.len, info.data, info.len, out, size);
    bool ok;
    if (want == EXPECT_VALID) ok = rc == SP_OK && same(out, size, okm.data, okm.len);
    else if (want == EXPECT_INVALID) ok = rc != SP_OK; /* e.g. more than 255 blocks of output */
    else ok = rc != SP_OK || same(out, size, okm.data, okm.len);
    free(out);
    hexbuf_free(&ikm);
    hexbuf_free(&salt);
    hexbuf_free(&info);
    hexbuf_free(&okm);
    return ok ? CASE_PASS : CASE_FAIL;
}

/* ---- AES key wrap (RFC 3394) and with padding (RFC 5649) ---- */

static outcome wrap_case(json_t *tc, expectation want, bool pad) {
    hexbuf key = member_hex(tc, "key"), msg = member_hex(tc, "msg"), ct = member_hex(tc, "ct");
    size_t cap = (msg.len > ct.len ? msg.len : ct.len) + 16, out_len = 0;
    uint8_t *out = calloc(1, cap);
    assert_non_null(out);
    bool ok = false;

    /* unwrapping is where an attacker's bytes arrive: try it first */
    memset(out, 0, cap);
    sp_error un = sp_aes_key_unwrap(key.data, key.len, pad, ct.data, ct.len, out, cap, &out_len);
    bool un_match = un == SP_OK && same(out, out_len, msg.data, msg.len);
    bool un_clean = un == SP_OK || sp_test_all_zero(out, ct.len);

    switch (want) {
    case EXPECT_VALID: {
        sp_error wr = sp_aes_key_wrap(key.data, key.len, pad, msg.data, msg.len, out, cap, &out_len);
        ok = un_match && wr == SP_OK && same(out, out_len, ct.data, ct.len);
        break;
    }
    case EXPECT_INVALID:
        ok = un != SP_OK && un_clean;
        break;
    case EXPECT_ACCEPTABLE: {
        /* e.g. RFC 3394 over an 8-byte key: refusing it is fine, but a
         * result, either way, must be the right one */
        sp_error wr = sp_aes_key_wrap(key.data, key.len, pad, msg.data, msg.len, out, cap, &out_len);
        bool wr_ok = wr != SP_OK || same(out, out_len, ct.data, ct.len);
        ok = un_clean && (un != SP_OK || un_match) && wr_ok;
        break;
    }
    }
    free(out);
    hexbuf_free(&key);
    hexbuf_free(&msg);
    hexbuf_free(&ct);
    return ok ? CASE_PASS : CASE_FAIL;
}

static outcome kw_case(json_t *group, json_t *tc, expectation want) {
    (void)group;
    return wrap_case(tc, want, false);
}

static outcome kwp_case(json_t *group, json_t *tc, expectation want) {
    (void)group;
    return wrap_case(tc, want, true);
}

/* ---- the tests ---- */

static void test_aes_gcm(void **state) {
    (void)state;
    run_file("aes_gcm_test", gcm_case);
}

static void test_aes_cbc_pkcs5(void **state) {
    (void)state;
    run_file("aes_cbc_pkcs5_test", cbc_case);
}

static void test_hmac_sha256(void **state) {
    (void)state;
    run_file("hmac_sha256_test", hmac_case);
}

static void test_hkdf_sha256(void **state) {
    (void)state;
    run_file("hkdf_sha256_test", hkdf_case);
}

static void test_aes_wrap(void **state) {
    (void)state;
    run_file("aes_wrap_test", kw_case);
}

static void test_aes_kwp(void **state) {
    (void)state;
    run_file("aes_kwp_test", kwp_case);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aes_gcm),    cmocka_unit_test(test_aes_cbc_pkcs5), cmocka_unit_test(test_hmac_sha256),
        cmocka_unit_test(test_hkdf_sha256), cmocka_unit_test(test_aes_wrap),      cmocka_unit_test(test_aes_kwp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
