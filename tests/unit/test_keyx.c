/*
 * Key exchange (include/sealpost/keyx.h): key versions handed to a provider
 * as a JWE under its public key. What matters, and so what is tested:
 *
 *  - the keys arrive intact, for both algorithms and for every PEM form a
 *    provider is likely to hold (PKCS#8 and the traditional RSA/EC forms);
 *  - nobody else can read them: another private key, a changed byte in any
 *    of the five parts, or a JWE for another key type is SP_ERR_AUTH, one
 *    answer for all;
 *  - nothing outside the profile is accepted: weak or foreign keys
 *    (RSA-2048, P-384, Ed25519), other algorithms, zip, crit, party info, an
 *    ephemeral key off the curve, a JWK Set with the wrong shape, duplicate
 *    or too many entries, expired keys;
 *  - the Concat KDF gives the RFC 7518 Appendix C answer;
 *  - every allocation failure leaves nothing behind (ASan checks leaks).
 *    jansson's own allocations are exempt from that walk: jansson 2.14's
 *    lexer ignores a failed growth of its token buffer, drops the byte and
 *    may then read past the token (a string whose closing quote lands on
 *    the growth, such as "ECDH-ES+A256KW", does), which is jansson's bug to
 *    fix, not something this unit can handle.
 *
 * Keys are generated once per run with EVP_PKEY_Q_keygen (RSA-3072 takes a
 * moment). Malformed JWK Sets are sealed with the internal
 * sp_keyx_seal_plaintext, which is export without the JWK Set writer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sp_test_util.h"

/* Internal to src/keyring/keyx.c (it has no internal header). */
sp_error sp_keyx_concat_kdf(const uint8_t *z, size_t z_len, const char *alg_id, const uint8_t *apu, size_t apu_len,
                            const uint8_t *apv, size_t apv_len, uint8_t *out, size_t out_len);
sp_error sp_keyx_export_at(const sp_keyx_item *items, size_t n, const char *pem, size_t pem_len, const char *alg,
                           char *out, size_t cap, size_t *out_len, int64_t now);
sp_error sp_keyx_seal_plaintext(const uint8_t *plain, size_t plain_len, const char *pem, size_t pem_len,
                                const char *alg, char *out, size_t cap, size_t *out_len);
sp_error sp_keyx_import_at(const char *jwe, size_t len, const char *pem, size_t pem_len, sp_keyx_item *items,
                           size_t max, size_t *n, int64_t now);

#define VER1 "3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d13"
#define VER2 "b2d84e07-61f3-4c95-a8e0-17c9d3f2a540"
/* base64url of bytes 0..31 */
#define K32 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
#define FUTURE 4102444800 /* 2100-01-01 */

/* ---- keys, generated once ---- */

typedef struct {
    char *pub, *priv;
    size_t pub_len, priv_len;
} pem_pair;

static struct {
    pem_pair rsa, rsa_other, ec, ec_other, rsa2048, p384, ed25519;
    char *rsa_traditional, *ec_traditional, *ec_encrypted;
} K;

static char *bio_text(BIO *bio, size_t *len) {
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *copy = malloc((size_t)n + 1);
    if (copy == NULL) return NULL;
    memcpy(copy, data, (size_t)n);
    copy[n] = 0;
    if (len) *len = (size_t)n;
    return copy;
}

/* traditional: "RSA PRIVATE KEY" / "EC PRIVATE KEY" instead of PKCS#8;
 * encrypted: PKCS#8 under a passphrase, which import must refuse without
 * prompting. */
enum pem_form { PEM_PKCS8, PEM_TRADITIONAL, PEM_ENCRYPTED };

static char *private_pem(EVP_PKEY *pk, enum pem_form form) {
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = 0;
    if (form == PEM_PKCS8) ok = PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    if (form == PEM_TRADITIONAL) ok = PEM_write_bio_PrivateKey_traditional(bio, pk, NULL, NULL, 0, NULL, NULL);
    if (form == PEM_ENCRYPTED) {
        unsigned char pass[] = "correct horse";
        ok = PEM_write_bio_PKCS8PrivateKey(bio, pk, EVP_aes_256_cbc(), (char *)pass, (int)sizeof pass - 1, NULL, NULL);
    }
    char *s = ok == 1 ? bio_text(bio, NULL) : NULL;
    BIO_free(bio);
    return s;
}

static int make_pair(pem_pair *p, EVP_PKEY *pk) {
    if (pk == NULL) return -1;
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = PEM_write_bio_PUBKEY(bio, pk);
    p->pub = ok == 1 ? bio_text(bio, &p->pub_len) : NULL;
    BIO_free(bio);
    p->priv = private_pem(pk, PEM_PKCS8);
    p->priv_len = p->priv ? strlen(p->priv) : 0;
    return p->pub && p->priv ? 0 : -1;
}

static EVP_PKEY *rsa_key(size_t bits) { return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits); }
static EVP_PKEY *ec_key(const char *curve) { return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve); }

static int keys_setup(void **state) {
    (void)state;
    if (sp_init() != SP_OK) return -1;
    EVP_PKEY *rsa = rsa_key(3072), *ec = ec_key("P-256");
    EVP_PKEY *more[5] = {rsa_key(3072), ec_key("P-256"), rsa_key(2048), ec_key("P-384"),
                         EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")};
    pem_pair *dst[5] = {&K.rsa_other, &K.ec_other, &K.rsa2048, &K.p384, &K.ed25519};
    int rc = make_pair(&K.rsa, rsa) | make_pair(&K.ec, ec);
    for (size_t i = 0; i < 5; i++) {
        rc |= make_pair(dst[i], more[i]);
        EVP_PKEY_free(more[i]);
    }
    K.rsa_traditional = private_pem(rsa, PEM_TRADITIONAL);
    K.ec_traditional = private_pem(ec, PEM_TRADITIONAL);
    K.ec_encrypted = private_pem(ec, PEM_ENCRYPTED);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    if (!K.rsa_traditional || !K.ec_traditional || !K.ec_encrypted) rc = -1;
    return rc;
}

static int keys_teardown(void **state) {
    (void)state;
    pem_pair *all[7] = {&K.rsa, &K.rsa_other, &K.ec, &K.ec_other, &K.rsa2048, &K.p384, &K.ed25519};
    for (size_t i = 0; i < 7; i++) {
        free(all[i]->pub);
        free(all[i]->priv);
    }
    free(K.rsa_traditional);
    free(K.ec_traditional);
    free(K.ec_encrypted);
    return 0;
}

/* ---- items ---- */

static void make_items(sp_keyx_item *items, size_t n, int64_t expires) {
    for (size_t i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof items[i]);
        assert_ok(sp_uuid_v4(items[i].version));
        assert_ok(sp_key_generate(&items[i].key));
        items[i].expires = expires ? expires + (int64_t)i : 0; /* distinct, so order shows */
    }
}

static char jwe_buf[SP_KEYX_MAX_JWE_BYTES];

static size_t export_to(const pem_pair *p, const char *alg, const sp_keyx_item *items, size_t n) {
    size_t len = 0;
    assert_ok(sp_keyx_export(items, n, p->pub, p->pub_len, alg, jwe_buf, sizeof jwe_buf, &len));
    assert_int_equal(strlen(jwe_buf), len);
    return len;
}

static sp_error import_from(const char *jwe, size_t len, const char *priv) {
    sp_keyx_item got[SP_KEYX_MAX_ITEMS];
    size_t n = 99;
    sp_error rc = sp_keyx_import(jwe, len, priv, strlen(priv), got, SP_KEYX_MAX_ITEMS, &n);
    if (rc == SP_OK) sp_keyx_items_free(got, n);
    else assert_int_equal(n, 0);
    return rc;
}

/* ---- compact JWE surgery ---- */

/* Where part i (0..4) of a compact JWE starts and how long it is. */
static void part_of(const char *jwe, int i, size_t *start, size_t *len) {
    const char *p = jwe;
    for (int k = 0; k < i; k++) {
        p = strchr(p, '.');
        assert_non_null(p);
        p++;
    }
    const char *end = strchr(p, '.');
    *start = (size_t)(p - jwe);
    *len = end ? (size_t)(end - p) : strlen(p);
}

/* out = jwe with part i replaced by `part`. */
static size_t with_part(const char *jwe, int i, const char *part, char *out, size_t cap) {
    size_t start, len;
    part_of(jwe, i, &start, &len);
    int n = snprintf(out, cap, "%.*s%s%s", (int)start, jwe, part, jwe + start + len);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* out = jwe with its protected header replaced by `header_json`. The tag no
 * longer matches, so a header that passes the checks gives SP_ERR_AUTH. */
static size_t with_header(const char *jwe, const char *header_json, char *out, size_t cap) {
    char b64[4096];
    size_t n = 0;
    assert_ok(sp_b64_encode((const uint8_t *)header_json, strlen(header_json), b64, sizeof b64, &n, true));
    return with_part(jwe, 0, b64, out, cap);
}

/* The protected header of a JWE, decoded. */
static void header_of(const char *jwe, char *out, size_t cap) {
    size_t start, len, n = 0;
    part_of(jwe, 0, &start, &len);
    assert_ok(sp_b64_decode(jwe + start, len, (uint8_t *)out, cap - 1, &n, true));
    out[n] = 0;
}

/* ---- Concat KDF ---- */

/* RFC 7518 Appendix C: ECDH-ES with "A128GCM", apu "Alice", apv "Bob". */
static void test_kdf_rfc7518_appendix_c(void **state) {
    (void)state;
    static const uint8_t z[32] = {158, 86,  217, 29,  129, 113, 53,  211, 114, 131, 66,  131, 191, 132, 38,  156,
                                  251, 49,  110, 163, 218, 128, 106, 72,  246, 218, 167, 121, 140, 254, 144, 196};
    static const uint8_t want[16] = {86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26};
    uint8_t out[16];
    assert_ok(sp_keyx_concat_kdf(z, sizeof z, "A128GCM", (const uint8_t *)"Alice", 5, (const uint8_t *)"Bob", 3, out,
                                 sizeof out));
    assert_memory_equal(out, want, sizeof want);
}

/* The shape export uses (empty apu/apv, 256 bits) and a two-block output
 * (counter 1 and 2), against values from python3-cryptography's
 * ConcatKDFHash with Z = bytes 0..31. */
static void test_kdf_profile_and_two_blocks(void **state) {
    (void)state;
    uint8_t z[32], out32[32], out64[64];
    for (size_t i = 0; i < 32; i++) z[i] = (uint8_t)i;
    static const char want32[] = "ead36a3ab953bb6e5a6709471c0fd35fcc62cf920994cede2f3aa2544e9f47ac";
    static const char want64[] = "7d142bf618bd028512e9df4ef443875b539f663933bbf2d2ffd0f3f5bed3522e"
                                 "11468797c9562a52c3353c9aedfca699afe316a170b969f7455cb7be0f05978f";
    char hex[129];
    assert_ok(sp_keyx_concat_kdf(z, 32, "ECDH-ES+A256KW", NULL, 0, NULL, 0, out32, 32));
    sp_hex_encode(out32, 32, hex);
    assert_string_equal(hex, want32);
    assert_ok(sp_keyx_concat_kdf(z, 32, "ECDH-ES+A256KW", NULL, 0, NULL, 0, out64, 64));
    sp_hex_encode(out64, 64, hex);
    assert_string_equal(hex, want64);
    assert_rc(sp_keyx_concat_kdf(z, 32, "x", NULL, 0, NULL, 0, out64, 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_concat_kdf(z, 32, "x", NULL, 1, NULL, 0, out64, 32), SP_ERR_INVALID_ARGUMENT);
}

/* ---- round trips ---- */

static void round_trip(const pem_pair *p, const char *alg, const char *priv, size_t count, int64_t expires) {
    sp_keyx_item items[SP_KEYX_MAX_ITEMS], got[SP_KEYX_MAX_ITEMS];
    make_items(items, count, expires);
    size_t len = export_to(p, alg, items, count), n = 0;
    assert_ok(sp_keyx_import(jwe_buf, len, priv, strlen(priv), got, SP_KEYX_MAX_ITEMS, &n));
    assert_int_equal(n, count);
    sp_test_assert_same_items(items, got, count);
    sp_keyx_items_free(got, n);
    for (size_t i = 0; i < n; i++) assert_null(got[i].key);
    sp_keyx_items_free(items, count);
}

static void test_round_trip_rsa(void **state) {
    (void)state;
    round_trip(&K.rsa, NULL, K.rsa.priv, 1, FUTURE);
    round_trip(&K.rsa, SP_KEYX_ALG_RSA_OAEP_256, K.rsa.priv, 3, 0);
    round_trip(&K.rsa, NULL, K.rsa_traditional, 2, FUTURE);
    char header[512];
    header_of(jwe_buf, header, sizeof header);
    assert_string_equal(header, "{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256GCM\",\"cty\":\"jwk-set+json\"}");
}

static void test_round_trip_ecdh(void **state) {
    (void)state;
    round_trip(&K.ec, NULL, K.ec.priv, 1, FUTURE);
    round_trip(&K.ec, SP_KEYX_ALG_ECDH_ES_A256KW, K.ec.priv, 4, 0);
    round_trip(&K.ec, NULL, K.ec_traditional, 2, FUTURE);
    char header[512];
    header_of(jwe_buf, header, sizeof header);
    const char *prefix = "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"cty\":\"jwk-set+json\","
                         "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"";
    assert_int_equal(strncmp(header, prefix, strlen(prefix)), 0);
    /* 43 characters each for x and y */
    assert_int_equal(strlen(header), strlen(prefix) + 43 + strlen("\",\"y\":\"") + 43 + strlen("\"}}"));
}

/* The largest set fits the documented bound, with an RSA key and the
 * longest exp export writes. */
static void test_max_items_fit(void **state) {
    (void)state;
    sp_keyx_item items[SP_KEYX_MAX_ITEMS], got[SP_KEYX_MAX_ITEMS];
    make_items(items, SP_KEYX_MAX_ITEMS, INT64_MAX - SP_KEYX_MAX_ITEMS);
    size_t len = export_to(&K.rsa, NULL, items, SP_KEYX_MAX_ITEMS), n = 0;
    assert_true(len < SP_KEYX_MAX_JWE_BYTES / 2);
    assert_ok(sp_keyx_import(jwe_buf, len, K.rsa.priv, K.rsa.priv_len, got, SP_KEYX_MAX_ITEMS, &n));
    assert_int_equal(n, SP_KEYX_MAX_ITEMS);
    sp_test_assert_same_items(items, got, n);
    sp_keyx_items_free(got, n);
    /* a caller with room for fewer is told so, and gets nothing */
    assert_rc(sp_keyx_import(jwe_buf, len, K.rsa.priv, K.rsa.priv_len, got, SP_KEYX_MAX_ITEMS - 1, &n),
              SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n, 0);
    sp_keyx_items_free(items, SP_KEYX_MAX_ITEMS);
}

/* Each export draws a fresh content key, IV and (ECDH) ephemeral key. */
static void test_exports_differ(void **state) {
    (void)state;
    sp_keyx_item items[1];
    make_items(items, 1, 0);
    static char first[SP_KEYX_MAX_JWE_BYTES];
    const pem_pair *pairs[2] = {&K.rsa, &K.ec};
    for (size_t i = 0; i < 2; i++) {
        size_t len = export_to(pairs[i], NULL, items, 1);
        memcpy(first, jwe_buf, len + 1);
        export_to(pairs[i], NULL, items, 1);
        for (int part = 1; part < 5; part++) {
            size_t s1, l1, s2, l2;
            part_of(first, part, &s1, &l1);
            part_of(jwe_buf, part, &s2, &l2);
            assert_false(l1 == l2 && memcmp(first + s1, jwe_buf + s2, l1) == 0);
        }
    }
    sp_keyx_items_free(items, 1);
}

/* ---- who can read it ---- */

static void test_wrong_private_key_is_auth(void **state) {
    (void)state;
    sp_keyx_item items[2];
    make_items(items, 2, FUTURE);
    size_t len = export_to(&K.rsa, NULL, items, 2);
    assert_rc(import_from(jwe_buf, len, K.rsa_other.priv), SP_ERR_AUTH);
    assert_rc(import_from(jwe_buf, len, K.ec.priv), SP_ERR_AUTH); /* another key type */
    len = export_to(&K.ec, NULL, items, 2);
    assert_rc(import_from(jwe_buf, len, K.ec_other.priv), SP_ERR_AUTH);
    assert_rc(import_from(jwe_buf, len, K.rsa.priv), SP_ERR_AUTH);
    assert_ok(import_from(jwe_buf, len, K.ec.priv));
    sp_keyx_items_free(items, 2);
}

/* One character changed in the middle of any part: the header no longer
 * decodes to the same JSON (AUTH if it still passes the checks, BAD_JWE if
 * not); every other part is AUTH. */
static void tamper_each_part(const pem_pair *p) {
    sp_keyx_item items[2];
    make_items(items, 2, FUTURE);
    size_t len = export_to(p, NULL, items, 2);
    static char copy[SP_KEYX_MAX_JWE_BYTES];
    for (int part = 0; part < 5; part++) {
        size_t start, plen;
        part_of(jwe_buf, part, &start, &plen);
        for (size_t at = start + 1; at + 1 < start + plen; at += (plen / 5) + 1) {
            memcpy(copy, jwe_buf, len + 1);
            copy[at] = copy[at] == 'A' ? 'B' : 'A';
            sp_error rc = import_from(copy, len, p->priv);
            if (part == 0) {
                if (rc != SP_ERR_AUTH && rc != SP_ERR_BAD_JWE) fail_msg("header tamper gave %s", sp_error_name(rc));
            } else if (rc != SP_ERR_AUTH) {
                fail_msg("part %d offset %zu: %s", part, at - start, sp_error_name(rc));
            }
        }
    }
    /* an encrypted key of another length: for RSA the path with the random
     * content key, for ECDH a refused unwrap; both AUTH */
    size_t m = with_part(jwe_buf, 1, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", copy, sizeof copy);
    assert_rc(import_from(copy, m, p->priv), SP_ERR_AUTH);
    /* a header that is still valid but not the one sealed */
    char header[512], changed[600];
    header_of(jwe_buf, header, sizeof header);
    snprintf(changed, sizeof changed, "{\"kid\":\"x\",%s", header + 1);
    size_t n = with_header(jwe_buf, changed, copy, sizeof copy);
    assert_rc(import_from(copy, n, p->priv), SP_ERR_AUTH);
    assert_ok(import_from(jwe_buf, len, p->priv));
    sp_keyx_items_free(items, 2);
}

static void test_tampered_rsa(void **state) {
    (void)state;
    tamper_each_part(&K.rsa);
}

static void test_tampered_ecdh(void **state) {
    (void)state;
    tamper_each_part(&K.ec);
}

/* Another valid point as the ephemeral key: a different KEK, so AUTH. */
static void test_swapped_epk_is_auth(void **state) {
    (void)state;
    sp_keyx_item items[1];
    make_items(items, 1, FUTURE);
    static char first[SP_KEYX_MAX_JWE_BYTES], mixed[SP_KEYX_MAX_JWE_BYTES];
    export_to(&K.ec, NULL, items, 1);
    memcpy(first, jwe_buf, sizeof first);
    export_to(&K.ec, NULL, items, 1);
    size_t start, len;
    part_of(jwe_buf, 0, &start, &len);
    char header[SP_KEYX_MAX_JWE_BYTES];
    memcpy(header, jwe_buf + start, len);
    header[len] = 0;
    size_t n = with_part(first, 0, header, mixed, sizeof mixed);
    assert_rc(import_from(mixed, n, K.ec.priv), SP_ERR_AUTH);
    sp_keyx_items_free(items, 1);
}

/* ---- the envelope's shape ---- */

static void test_malformed_envelope(void **state) {
    (void)state;
    sp_keyx_item items[1];
    make_items(items, 1, FUTURE);
    size_t len = export_to(&K.ec, NULL, items, 1);
    static char bad[SP_KEYX_MAX_JWE_BYTES + 8];
    size_t start, plen, n;

    /* four parts, six parts, an empty part, padding, a stray character */
    part_of(jwe_buf, 4, &start, &plen);
    assert_rc(import_from(jwe_buf, start - 1, K.ec.priv), SP_ERR_BAD_JWE);
    n = (size_t)snprintf(bad, sizeof bad, "%s.AA", jwe_buf);
    assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_BAD_JWE);
    for (int part = 0; part < 5; part++) {
        n = with_part(jwe_buf, part, "", bad, sizeof bad);
        assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_BAD_JWE);
    }
    n = (size_t)snprintf(bad, sizeof bad, "%s==", jwe_buf);
    assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_BAD_JWE);
    memcpy(bad, jwe_buf, len + 1);
    bad[len / 2] = '+';
    assert_rc(import_from(bad, len, K.ec.priv), SP_ERR_BAD_JWE);
    /* IV of 16 bytes, tag of 15 */
    n = with_part(jwe_buf, 2, "AAAAAAAAAAAAAAAAAAAAAA", bad, sizeof bad);
    assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_BAD_JWE);
    n = with_part(jwe_buf, 4, "AAAAAAAAAAAAAAAAAAAA", bad, sizeof bad);
    assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_BAD_JWE);
    /* a wrapped key of the wrong length decrypts to nothing: AUTH */
    n = with_part(jwe_buf, 1, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", bad,
                  sizeof bad);
    assert_rc(import_from(bad, n, K.ec.priv), SP_ERR_AUTH);
    /* over the size bound, before anything is parsed */
    memset(bad, 'A', SP_KEYX_MAX_JWE_BYTES + 1);
    assert_rc(import_from(bad, SP_KEYX_MAX_JWE_BYTES + 1, K.ec.priv), SP_ERR_TOO_LARGE);
    /* an embedded NUL */
    memcpy(bad, jwe_buf, len + 1);
    bad[3] = 0;
    assert_rc(import_from(bad, len, K.ec.priv), SP_ERR_BAD_JWE);
    sp_keyx_items_free(items, 1);
}

/* Headers that break a rule of the profile, each with an otherwise valid
 * JWE around it: BAD_JWE, before the private key is used. */
static void test_header_rules(void **state) {
    (void)state;
    sp_keyx_item items[1];
    make_items(items, 1, FUTURE);
    size_t len = export_to(&K.ec, NULL, items, 1);
    static char ec_jwe[SP_KEYX_MAX_JWE_BYTES], bad[SP_KEYX_MAX_JWE_BYTES];
    memcpy(ec_jwe, jwe_buf, len + 1);
    char header[512];
    header_of(ec_jwe, header, sizeof header);
    /* the epk object of this JWE, reused in the variants below */
    const char *epk_at = strstr(header, "\"epk\":");
    assert_non_null(epk_at);
    char epk[300];
    snprintf(epk, sizeof epk, "%.*s", (int)(strlen(epk_at) - 1), epk_at);

    /* P-256 generator with y + 1: off the curve */
    const char *off_curve = "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
                            "\"x\":\"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY\","
                            "\"y\":\"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfY\"}";
    const char *on_curve = "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
                           "\"x\":\"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY\","
                           "\"y\":\"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU\"}";
    char variants[16][700];
    size_t nv = 0;
#define V(...) snprintf(variants[nv++], sizeof variants[0], __VA_ARGS__)
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"zip\":\"DEF\",%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"crit\":[\"exp\"],\"exp\":1,%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A128GCM\",%s}", epk);
    V("{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",%s}", epk);
    V("{\"alg\":\"dir\",\"enc\":\"A256GCM\"}");
    V("{\"alg\":\"ECDH-ES+A256KW\",\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"cty\":\"JWT\",%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"apu\":\"QWxpY2U\",%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"apv\":\"Qm9i\",%s}", epk);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\"}");
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",%s}", off_curve);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-384\",%s}",
      strchr(epk, 'x') - 1);
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"d\":\"%s\",%s}", K32,
      strchr(epk, 'x') - 1);
    V("{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256GCM\",%s}", epk);
    V("[\"alg\",\"ECDH-ES+A256KW\"]");
    V("{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",%s", epk);
#undef V
    for (size_t i = 0; i < nv; i++) {
        size_t n = with_header(ec_jwe, variants[i], bad, sizeof bad);
        sp_error rc = import_from(bad, n, K.ec.priv);
        if (rc != SP_ERR_BAD_JWE) fail_msg("header %s gave %s", variants[i], sp_error_name(rc));
    }

    /* what is allowed: empty party info, the long cty, a kid, a valid point
     * that is simply the wrong one (AUTH, as the tag no longer matches) */
    const char *allowed[] = {
        "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"apu\":\"\",\"apv\":\"\",",
        "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"cty\":\"application/jwk-set+json\",",
        "{\"kid\":\"provider-2025\",\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",",
        "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",",
    };
    for (size_t i = 0; i < 4; i++) {
        char h[700];
        snprintf(h, sizeof h, "%s%s}", allowed[i], i < 3 ? epk : on_curve);
        size_t n = with_header(ec_jwe, h, bad, sizeof bad);
        sp_error rc = import_from(bad, n, K.ec.priv);
        if (rc != SP_ERR_AUTH) fail_msg("header %s gave %s", h, sp_error_name(rc));
    }
    sp_keyx_items_free(items, 1);
}

/* ---- keys we refuse ---- */

static void test_refused_keys(void **state) {
    (void)state;
    sp_keyx_item items[1];
    make_items(items, 1, FUTURE);
    size_t len = 0;
    const pem_pair *weak[3] = {&K.rsa2048, &K.p384, &K.ed25519};
    for (size_t i = 0; i < 3; i++) {
        assert_rc(sp_keyx_export(items, 1, weak[i]->pub, weak[i]->pub_len, NULL, jwe_buf, sizeof jwe_buf, &len),
                  SP_ERR_BAD_PEM);
    }
    len = export_to(&K.ec, NULL, items, 1);
    for (size_t i = 0; i < 3; i++) assert_rc(import_from(jwe_buf, len, weak[i]->priv), SP_ERR_BAD_PEM);

    /* garbage, a private key where a public one belongs and the reverse,
     * an encrypted private key (refused without a prompt), empty, too big */
    const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert_rc(sp_keyx_export(items, 1, junk, strlen(junk), NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_BAD_PEM);
    assert_rc(sp_keyx_export(items, 1, K.ec.priv, K.ec.priv_len, NULL, jwe_buf, sizeof jwe_buf, &len),
              SP_ERR_BAD_PEM);
    assert_rc(sp_keyx_export(items, 1, "", 0, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_BAD_PEM);
    len = export_to(&K.ec, NULL, items, 1);
    assert_rc(import_from(jwe_buf, len, K.ec.pub), SP_ERR_BAD_PEM);
    assert_rc(import_from(jwe_buf, len, K.ec_encrypted), SP_ERR_BAD_PEM);
    assert_rc(import_from(jwe_buf, len, junk), SP_ERR_BAD_PEM);
    static char big[SP_KEYX_MAX_PEM_BYTES + 2];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_rc(import_from(jwe_buf, len, big), SP_ERR_TOO_LARGE);
    sp_keyx_items_free(items, 1);
}

/* ---- export's arguments ---- */

static void test_export_arguments(void **state) {
    (void)state;
    sp_keyx_item items[SP_KEYX_MAX_ITEMS + 1];
    make_items(items, SP_KEYX_MAX_ITEMS + 1, FUTURE);
    size_t len = 0;
    const char *pub = K.ec.pub;
    size_t pub_len = K.ec.pub_len;
    assert_rc(sp_keyx_export(items, SP_KEYX_MAX_ITEMS + 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len),
              SP_ERR_TOO_LARGE);
    assert_rc(sp_keyx_export(items, 0, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_export(NULL, 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_export(items, 1, NULL, 0, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_export(items, 1, pub, pub_len, NULL, NULL, 0, &len), SP_ERR_INVALID_ARGUMENT);
    /* algorithm: unknown, or not the key's */
    assert_rc(sp_keyx_export(items, 1, pub, pub_len, "A256KW", jwe_buf, sizeof jwe_buf, &len),
              SP_ERR_UNKNOWN_ALGORITHM);
    assert_rc(sp_keyx_export(items, 1, pub, pub_len, SP_KEYX_ALG_RSA_OAEP_256, jwe_buf, sizeof jwe_buf, &len),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_export(items, 1, K.rsa.pub, K.rsa.pub_len, SP_KEYX_ALG_ECDH_ES_A256KW, jwe_buf, sizeof jwe_buf,
                             &len),
              SP_ERR_INVALID_ARGUMENT);
    /* a duplicate version */
    sp_keyx_item twice[2] = {items[0], items[1]};
    memcpy(twice[1].version, twice[0].version, sizeof twice[0].version);
    assert_rc(sp_keyx_export(twice, 2, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    /* a version that is not a lowercase UUID */
    sp_keyx_item odd = items[0];
    odd.version[0] = 'A';
    assert_rc(sp_keyx_export(&odd, 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_BAD_UUID);
    /* no key, a negative or past expiry */
    odd = items[0];
    odd.key = NULL;
    assert_rc(sp_keyx_export(&odd, 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    odd = items[0];
    odd.expires = -1;
    assert_rc(sp_keyx_export(&odd, 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_INVALID_ARGUMENT);
    odd.expires = 1700000000;
    assert_rc(sp_keyx_export(&odd, 1, pub, pub_len, NULL, jwe_buf, sizeof jwe_buf, &len), SP_ERR_KEY_RETIRED);
    /* room: one byte short of the JWE and its NUL */
    len = export_to(&K.ec, NULL, items, 1);
    size_t got = 0;
    assert_rc(sp_keyx_export(items, 1, pub, pub_len, NULL, jwe_buf, len, &got), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(got, 0);
    assert_ok(sp_keyx_export(items, 1, pub, pub_len, NULL, jwe_buf, len + 1, &got));
    assert_int_equal(got, len);
    sp_keyx_items_free(items, SP_KEYX_MAX_ITEMS + 1);
}

static void test_import_arguments(void **state) {
    (void)state;
    sp_keyx_item got[1];
    size_t n = 0;
    assert_rc(sp_keyx_import(NULL, 0, K.ec.priv, K.ec.priv_len, got, 1, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_import("a", 1, NULL, 0, got, 1, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_import("a", 1, K.ec.priv, K.ec.priv_len, NULL, 1, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_import("a", 1, K.ec.priv, K.ec.priv_len, got, 1, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyx_import("", 0, K.ec.priv, K.ec.priv_len, got, 1, &n), SP_ERR_BAD_JWE);
    sp_keyx_items_free(NULL, 3);
}

/* ---- the JWK Set ---- */

/* Seals `set` to the EC key and imports it at `now`. */
static sp_error import_set_at(const char *set, int64_t now, size_t *count) {
    size_t len = 0, n = 0;
    assert_ok(sp_keyx_seal_plaintext((const uint8_t *)set, strlen(set), K.ec.pub, K.ec.pub_len, NULL, jwe_buf,
                                     sizeof jwe_buf, &len));
    sp_keyx_item got[SP_KEYX_MAX_ITEMS];
    sp_error rc = sp_keyx_import_at(jwe_buf, len, K.ec.priv, K.ec.priv_len, got, SP_KEYX_MAX_ITEMS, &n, now);
    if (rc == SP_OK) {
        uint8_t raw[SP_KEY_BYTES];
        assert_ok(sp_key_export(got[0].key, raw));
        for (size_t i = 0; i < SP_KEY_BYTES; i++) assert_int_equal(raw[i], i);
        sp_keyx_items_free(got, n);
    } else {
        assert_int_equal(n, 0);
    }
    if (count) *count = n;
    return rc;
}

static sp_error import_set(const char *set) { return import_set_at(set, 1750000000, NULL); }

#define JWK(kid, k, extra) "{\"kty\":\"oct\",\"kid\":\"" kid "\",\"k\":\"" k "\"" extra "}"
#define SET1(jwk) "{\"keys\":[" jwk "]}"

static void test_jwk_set_accepted_forms(void **state) {
    (void)state;
    size_t n = 0;
    /* the minimum: no alg, exp 0 */
    assert_ok(import_set_at(SET1(JWK(VER1, K32, ",\"exp\":0")), 1750000000, &n));
    assert_int_equal(n, 1);
    /* whitespace, reordered members, use "enc", unknown members in entry and set */
    assert_ok(import_set("{ \"other\": [1, {}],\n \"keys\" : [ {\"exp\": 4102444800, \"use\": \"enc\", \"alg\": "
                         "\"A256GCM\", \"k\": \"" K32 "\", \"kid\": \"" VER1 "\", \"kty\": \"oct\", \"x5t\": 1} ] }"));
    /* two entries */
    assert_ok(import_set_at("{\"keys\":[" JWK(VER1, K32, ",\"exp\":0") "," JWK(VER2, K32, ",\"exp\":0") "]}",
                            1750000000, &n));
    assert_int_equal(n, 2);
}

static void test_jwk_set_malformed(void **state) {
    (void)state;
    static const char *const bad[] = {
        " ",
        "not json",
        "[]",
        "{}",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[1]}",
        SET1(JWK(VER1, K32, ",\"exp\":0")) "x",
        SET1(JWK(VER1, K32, ",\"exp\":0")) "{\"keys\":[]}",
        "{\"keys\":[],\"keys\":[" JWK(VER1, K32, ",\"exp\":0") "]}",
        SET1("{\"kty\":\"RSA\",\"kid\":\"" VER1 "\",\"k\":\"" K32 "\",\"exp\":0}"),
        SET1("{\"kid\":\"" VER1 "\",\"k\":\"" K32 "\",\"exp\":0}"),
        SET1("{\"kty\":\"oct\",\"kty\":\"oct\",\"kid\":\"" VER1 "\",\"k\":\"" K32 "\",\"exp\":0}"),
        SET1(JWK("3F6C1A52-8D0E-4B7A-9C21-5E4F0A7B6D13", K32, ",\"exp\":0")),
        SET1(JWK("3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d1", K32, ",\"exp\":0")),
        SET1("{\"kty\":\"oct\",\"k\":\"" K32 "\",\"exp\":0}"),
        SET1("{\"kty\":\"oct\",\"kid\":7,\"k\":\"" K32 "\",\"exp\":0}"),
        SET1(JWK(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg", ",\"exp\":0")),     /* 31 bytes */
        SET1(JWK(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", ",\"exp\":0")),   /* 33 bytes */
        SET1(JWK(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", ",\"exp\":0")),   /* padded */
        SET1(JWK(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+", ",\"exp\":0")),    /* std alphabet */
        SET1(JWK(VER1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9", ",\"exp\":0")),    /* trailing bits */
        SET1("{\"kty\":\"oct\",\"kid\":\"" VER1 "\",\"exp\":0}"),
        SET1(JWK(VER1, K32, ",\"alg\":\"A128GCM\",\"exp\":0")),
        SET1(JWK(VER1, K32, ",\"use\":\"sig\",\"exp\":0")),
        SET1(JWK(VER1, K32, "")),
        SET1(JWK(VER1, K32, ",\"exp\":\"4102444800\"")),
        SET1(JWK(VER1, K32, ",\"exp\":4102444800.5")),
        SET1(JWK(VER1, K32, ",\"exp\":-1")),
        SET1(JWK(VER1, K32, ",\"exp\":null")),
        SET1(JWK(VER1, K32, ",\"exp\":99999999999999999999999")),
        "{\"keys\":[" JWK(VER1, K32, ",\"exp\":0") "," JWK(VER1, K32, ",\"exp\":0") "]}",
        SET1("{\"kty\":\"oct\",\"kid\":\"" VER1 "\\u0000\",\"k\":\"" K32 "\",\"exp\":0}"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_error rc = import_set(bad[i]);
        if (rc != SP_ERR_BAD_JSON) fail_msg("set %zu (%s) gave %s", i, bad[i], sp_error_name(rc));
    }
}

static void test_jwk_set_too_many(void **state) {
    (void)state;
    static char set[SP_KEYX_MAX_ITEMS * 200 + 64];
    sp_wbuf b = sp_wbuf_of(set, sizeof set);
    assert_ok(sp_wbuf_put_str(&b, "{\"keys\":["));
    for (size_t i = 0; i <= SP_KEYX_MAX_ITEMS; i++) {
        char kid[37];
        assert_ok(sp_uuid_v4(kid));
        if (i) assert_ok(sp_wbuf_put_str(&b, ","));
        assert_ok(sp_wbuf_put_str(&b, "{\"kty\":\"oct\",\"kid\":\""));
        assert_ok(sp_wbuf_put_str(&b, kid));
        assert_ok(sp_wbuf_put_str(&b, "\",\"k\":\"" K32 "\",\"exp\":0}"));
    }
    assert_ok(sp_wbuf_put_str(&b, "]}"));
    assert_ok(sp_wbuf_terminate(&b));
    assert_rc(import_set(set), SP_ERR_TOO_LARGE);
}

/* exp: 0 never expires; otherwise the key must still be valid at import. */
static void test_expiry(void **state) {
    (void)state;
    const char *set = SET1(JWK(VER1, K32, ",\"exp\":1750000000"));
    assert_ok(import_set_at(set, 1749999999, NULL));
    assert_rc(import_set_at(set, 1750000000, NULL), SP_ERR_KEY_RETIRED);
    assert_rc(import_set_at(set, 1800000000, NULL), SP_ERR_KEY_RETIRED);
    /* one expired entry among valid ones refuses the whole set */
    assert_rc(import_set_at("{\"keys\":[" JWK(VER2, K32, ",\"exp\":0") "," JWK(VER1, K32, ",\"exp\":1750000000") "]}",
                            1760000000, NULL),
              SP_ERR_KEY_RETIRED);
    assert_ok(import_set_at(SET1(JWK(VER1, K32, ",\"exp\":0")), INT64_MAX, NULL));

    /* made while still valid, imported after: refused at the real clock */
    sp_keyx_item items[1];
    make_items(items, 1, 1000);
    size_t len = 0;
    assert_ok(sp_keyx_export_at(items, 1, K.rsa.pub, K.rsa.pub_len, NULL, jwe_buf, sizeof jwe_buf, &len, 999));
    assert_rc(import_from(jwe_buf, len, K.rsa.priv), SP_ERR_KEY_RETIRED);
    sp_keyx_items_free(items, 1);
}

/* ---- allocation failures ---- */

/* The allocation number the walk fails (absolute, as sp_test_alloc_count
 * counts), and jansson's allocator as the library installed it. */
static uint64_t walk_target;
static json_malloc_t lib_json_malloc;
static json_free_t lib_json_free;

/* Lets a jansson allocation through and moves the armed failure to the
 * allocation after it (see the top of this file for why). */
static void *walk_json_malloc(size_t n) {
    if (walk_target == 0 || sp_test_alloc_count() + 1 != walk_target) return lib_json_malloc(n);
    sp_test_alloc_fail_at(0);
    void *p = lib_json_malloc(n);
    walk_target = sp_test_alloc_count() + 1;
    sp_test_alloc_fail_at(1);
    return p;
}

static void walk_arm(uint64_t n) {
    walk_target = sp_test_alloc_count() + n;
    sp_test_alloc_fail_at(n);
}

/* True when the armed failure never happened: the call ran to the end. */
static bool walk_disarm(void) {
    bool untouched = sp_test_alloc_count() < walk_target;
    sp_test_alloc_fail_at(0);
    walk_target = 0;
    return untouched;
}

/* How many allocations a call makes before it fails on its own. */
static uint64_t allocations_of(sp_error (*call)(const pem_pair *), const pem_pair *p, sp_error want) {
    uint64_t start = sp_test_alloc_count();
    assert_rc(call(p), want);
    return sp_test_alloc_count() - start;
}

static sp_error export_wrong_alg(const pem_pair *p) {
    sp_keyx_item items[1];
    make_items(items, 1, 0);
    size_t len = 0;
    const char *alg = p == &K.rsa ? SP_KEYX_ALG_ECDH_ES_A256KW : SP_KEYX_ALG_RSA_OAEP_256;
    sp_error rc = sp_keyx_export(items, 1, p->pub, p->pub_len, alg, jwe_buf, sizeof jwe_buf, &len);
    sp_keyx_items_free(items, 1);
    return rc;
}

static sp_error import_junk(const pem_pair *p) {
    sp_keyx_item got[1];
    size_t n = 0;
    return sp_keyx_import("x", 1, p->priv, p->priv_len, got, 1, &n);
}

/* Each allocation of export, then of import, failed in turn: an error or a
 * success, never a crash, a leak (ASan) or half a result. Key generation is
 * done outside the walk. Reading a PEM is most of the allocations (OpenSSL's
 * decoder tries every key type); `stride` > 1 samples that prefix, measured
 * as what a call that fails right after the PEM allocates, and walks the
 * rest one by one. */
static void walk_allocation_failures(const pem_pair *p, uint64_t stride) {
    sp_keyx_item items[2];
    make_items(items, 2, FUTURE);
    uint64_t export_prefix = allocations_of(export_wrong_alg, p, SP_ERR_INVALID_ARGUMENT);
    uint64_t import_prefix = allocations_of(import_junk, p, SP_ERR_BAD_JWE);
    json_get_alloc_funcs(&lib_json_malloc, &lib_json_free);
    json_set_alloc_funcs(walk_json_malloc, lib_json_free);
    size_t len = 0;
    uint64_t n, failures = 0;
    for (n = 1; n < 100000; n += n < export_prefix ? stride : 1) {
        walk_arm(n);
        sp_error rc = sp_keyx_export(items, 2, p->pub, p->pub_len, NULL, jwe_buf, sizeof jwe_buf, &len);
        bool complete = walk_disarm();
        if (rc != SP_OK) {
            failures++;
            assert_int_equal(len, 0);
        }
        if (complete) {
            assert_ok(rc);
            break;
        }
    }
    assert_true(failures > 0);
    size_t jwe_len = len;
    static char copy[SP_KEYX_MAX_JWE_BYTES];
    memcpy(copy, jwe_buf, jwe_len + 1);
    failures = 0;
    for (n = 1; n < 100000; n += n < import_prefix ? stride : 1) {
        sp_keyx_item got[2];
        size_t count = 7;
        walk_arm(n);
        sp_error rc = sp_keyx_import(copy, jwe_len, p->priv, p->priv_len, got, 2, &count);
        bool complete = walk_disarm();
        if (rc == SP_OK) {
            assert_int_equal(count, 2);
            sp_test_assert_same_items(items, got, 2);
            sp_keyx_items_free(got, count);
        } else {
            failures++;
            assert_int_equal(count, 0);
        }
        if (complete) {
            assert_ok(rc);
            break;
        }
    }
    json_set_alloc_funcs(lib_json_malloc, lib_json_free);
    assert_true(failures > 0);
    sp_keyx_items_free(items, 2);
}

static void test_allocation_failures_ecdh(void **state) {
    (void)state;
    walk_allocation_failures(&K.ec, 1);
}

static void test_allocation_failures_rsa(void **state) {
    (void)state;
    walk_allocation_failures(&K.rsa, 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kdf_rfc7518_appendix_c),
        cmocka_unit_test(test_kdf_profile_and_two_blocks),
        cmocka_unit_test(test_round_trip_rsa),
        cmocka_unit_test(test_round_trip_ecdh),
        cmocka_unit_test(test_max_items_fit),
        cmocka_unit_test(test_exports_differ),
        cmocka_unit_test(test_wrong_private_key_is_auth),
        cmocka_unit_test(test_tampered_rsa),
        cmocka_unit_test(test_tampered_ecdh),
        cmocka_unit_test(test_swapped_epk_is_auth),
        cmocka_unit_test(test_malformed_envelope),
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_refused_keys),
        cmocka_unit_test(test_export_arguments),
        cmocka_unit_test(test_import_arguments),
        cmocka_unit_test(test_jwk_set_accepted_forms),
        cmocka_unit_test(test_jwk_set_malformed),
        cmocka_unit_test(test_jwk_set_too_many),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_allocation_failures_ecdh),
        cmocka_unit_test(test_allocation_failures_rsa),
    };
    return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}
