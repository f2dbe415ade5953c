/*
 * The symmetric API as an application sees it (sealpost/crypto.h), with its
 * HMAC and HKDF (RFC 4231 and RFC 5869 answers), plus the internal reusable
 * HMAC and key-wrap entry points the KMS layer uses.
 *
 * Beyond round trips and published known answers, this file pins down the
 * promises the header makes: every way of tampering with a message is
 * SP_ERR_AUTH and leaves no plaintext in the output; CTR increments the whole
 * 128-bit counter block, as Java does; each allocation failure on the path
 * from a fresh key to a ciphertext is reported cleanly and leaks nothing;
 * and once warmed up, encrypting and decrypting allocate nothing at all.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "sp_test_util.h"

#include "cipher/sp_cipher.h"

static const sp_alg all_algs[] = {SP_ALG_AES_256_CBC, SP_ALG_AES_256_GCM, SP_ALG_AES_256_CTR};

/* ---- helpers ---- */

/* The known answers are hex, decoded by sp_test_unhex rather than the
 * library's sp_hex_decode, so they do not depend on the code under test. */

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7u);
}

static sp_cipher *cipher_with_key(const uint8_t *key_bytes, sp_alg alg) {
    sp_key *key = NULL;
    sp_cipher *c = NULL;
    assert_int_equal(sp_key_new(key_bytes, SP_KEY_BYTES, &key), SP_OK);
    assert_int_equal(sp_cipher_new(key, alg, &c), SP_OK);
    /* the cipher holds its own key schedule: the key may go at once */
    sp_key_free(key);
    return c;
}

static sp_cipher *fresh_cipher(sp_alg alg) {
    uint8_t k[SP_KEY_BYTES];
    assert_int_equal(sp_random(k, sizeof k), SP_OK);
    sp_cipher *c = cipher_with_key(k, alg);
    sp_wipe(k, sizeof k);
    return c;
}

/* 603deb10... is the AES-256 key of NIST SP 800-38A appendix F. */
static const char nist_key[] = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
static const char nist_plain[] = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                                 "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";

/* ---- keys ---- */

static void test_key_new_lengths(void **state) {
    (void)state;
    uint8_t bytes[64] = {0};
    sp_key *key = NULL;
    const size_t bad[] = {0, 1, 16, 24, 31, 33, 64};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        assert_int_equal(sp_key_new(bytes, bad[i], &key), SP_ERR_BAD_KEY_LENGTH);
        assert_null(key);
    }
    assert_int_equal(sp_key_new(NULL, SP_KEY_BYTES, &key), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_key_new(bytes, SP_KEY_BYTES, NULL), SP_ERR_INVALID_ARGUMENT);

    fill_pattern(bytes, SP_KEY_BYTES, 3);
    assert_int_equal(sp_key_new(bytes, SP_KEY_BYTES, &key), SP_OK);
    uint8_t back[SP_KEY_BYTES];
    assert_int_equal(sp_key_export(key, back), SP_OK);
    assert_memory_equal(back, bytes, SP_KEY_BYTES);
    assert_int_equal(sp_key_export(NULL, back), SP_ERR_INVALID_ARGUMENT);
    sp_key_free(key);
    sp_key_free(NULL);
}

static void test_key_generate(void **state) {
    (void)state;
    sp_key *a = NULL, *b = NULL;
    assert_int_equal(sp_key_generate(NULL), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_key_generate(&a), SP_OK);
    assert_int_equal(sp_key_generate(&b), SP_OK);
    uint8_t ka[SP_KEY_BYTES], kb[SP_KEY_BYTES];
    assert_int_equal(sp_key_export(a, ka), SP_OK);
    assert_int_equal(sp_key_export(b, kb), SP_OK);
    /* 2^-256 odds of a false alarm */
    assert_memory_not_equal(ka, kb, SP_KEY_BYTES);
    assert_false(sp_test_all_zero(ka, SP_KEY_BYTES));
    sp_key_free(a);
    sp_key_free(b);
}

static void test_cipher_new_args(void **state) {
    (void)state;
    sp_key *key = NULL;
    sp_cipher *c = NULL;
    assert_int_equal(sp_key_generate(&key), SP_OK);
    assert_int_equal(sp_cipher_new(key, (sp_alg)0, &c), SP_ERR_UNKNOWN_ALGORITHM);
    assert_int_equal(sp_cipher_new(key, (sp_alg)4, &c), SP_ERR_UNKNOWN_ALGORITHM);
    assert_int_equal(sp_cipher_new(NULL, SP_ALG_AES_256_GCM, &c), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_cipher_new(key, SP_ALG_AES_256_GCM, NULL), SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < SP_ARRAY_LEN(all_algs); i++) {
        assert_int_equal(sp_cipher_new(key, all_algs[i], &c), SP_OK);
        assert_int_equal(sp_cipher_alg(c), all_algs[i]);
        sp_cipher_free(c);
    }
    sp_cipher_free(NULL);
    sp_key_free(key);

    uint8_t iv[16] = {0}, buf[32];
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(NULL, iv, 16, NULL, 0, buf, 1, buf, sizeof buf, &n), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_cipher_decrypt(NULL, iv, 16, NULL, 0, buf, 16, buf, sizeof buf, &n), SP_ERR_INVALID_ARGUMENT);
}

/* ---- algorithm descriptions ---- */

static void test_alg_table(void **state) {
    (void)state;
    assert_string_equal(sp_alg_name(SP_ALG_AES_256_CBC), "AES-256-CBC");
    assert_string_equal(sp_alg_name(SP_ALG_AES_256_GCM), "AES-256-GCM");
    assert_string_equal(sp_alg_name(SP_ALG_AES_256_CTR), "AES-256-CTR");
    assert_string_equal(sp_alg_name((sp_alg)0), "unknown");
    assert_string_equal(sp_alg_name((sp_alg)42), "unknown");

    const struct {
        const char *name;
        sp_alg alg;
    } ok[] = {
        {"AES-256-CBC", SP_ALG_AES_256_CBC}, {"aes-256-cbc", SP_ALG_AES_256_CBC}, {"AES-256-GCM", SP_ALG_AES_256_GCM},
        {"aes-256-gcm", SP_ALG_AES_256_GCM}, {"Aes-256-Ctr", SP_ALG_AES_256_CTR}, {"AES-256-CTR", SP_ALG_AES_256_CTR},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(ok); i++) {
        sp_alg got = (sp_alg)0;
        assert_int_equal(sp_alg_from_name(ok[i].name, strlen(ok[i].name), &got), SP_OK);
        assert_int_equal(got, ok[i].alg);
    }
    const char *bad[] = {"",          "AES-128-CBC", "AES-256-CBC ", " AES-256-CBC",
                         "AES256CBC", "AES-256-ECB", "AES-256-GCM\n"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        sp_alg got = (sp_alg)0;
        assert_int_equal(sp_alg_from_name(bad[i], strlen(bad[i]), &got), SP_ERR_UNKNOWN_ALGORITHM);
    }
    /* the length bounds the name: a header value is not NUL-terminated */
    sp_alg got = (sp_alg)0;
    assert_int_equal(sp_alg_from_name("AES-256-GCMxyz", 11, &got), SP_OK);
    assert_int_equal(got, SP_ALG_AES_256_GCM);
    assert_int_equal(sp_alg_from_name("AES-256-GCM", 10, &got), SP_ERR_UNKNOWN_ALGORITHM);
    assert_int_equal(sp_alg_from_name(NULL, 0, &got), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_alg_from_name("AES-256-GCM", 11, NULL), SP_ERR_INVALID_ARGUMENT);

    assert_int_equal(sp_alg_iv_bytes(SP_ALG_AES_256_CBC), 16);
    assert_int_equal(sp_alg_iv_bytes(SP_ALG_AES_256_GCM), 12);
    assert_int_equal(sp_alg_iv_bytes(SP_ALG_AES_256_CTR), 16);
    assert_int_equal(sp_alg_iv_bytes((sp_alg)9), 0);

    /* CBC always adds 1..16 bytes of padding */
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CBC, 0), 16);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CBC, 15), 16);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CBC, 16), 32);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CBC, 17), 32);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_GCM, 0), 16);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_GCM, 100), 116);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CTR, 0), 0);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CTR, 100), 100);
    assert_int_equal(sp_alg_ciphertext_bytes((sp_alg)0, 100), 0);
    assert_int_equal(sp_alg_ciphertext_bytes(SP_ALG_AES_256_CTR, SP_CIPHER_MAX_INPUT + 1), 0);
}

/* ---- round trips ---- */

static void round_trip(sp_cipher *c, sp_alg alg, size_t len, const uint8_t *aad, size_t aad_len) {
    size_t iv_len = sp_alg_iv_bytes(alg), ct_cap = sp_alg_ciphertext_bytes(alg, len);
    uint8_t iv[SP_MAX_IV_BYTES];
    uint8_t *pt = malloc(len + 1), *ct = malloc(ct_cap + 1), *back = malloc(ct_cap + 1);
    assert_non_null(pt);
    assert_non_null(ct);
    assert_non_null(back);
    assert_int_equal(sp_random(iv, iv_len), SP_OK);
    fill_pattern(pt, len, (uint8_t)len);

    size_t ct_len = 0, back_len = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, iv_len, aad, aad_len, pt, len, ct, ct_cap, &ct_len), SP_OK);
    assert_int_equal(ct_len, ct_cap);
    if (len >= 16) assert_memory_not_equal(ct, pt, 16);

    /* the output buffer sized to the input (CBC cannot know the padding
     * before it checks it) is always enough */
    size_t dec_cap = alg == SP_ALG_AES_256_GCM ? ct_len - SP_GCM_TAG_BYTES : ct_len;
    assert_int_equal(sp_cipher_decrypt(c, iv, iv_len, aad, aad_len, ct, ct_len, back, dec_cap, &back_len), SP_OK);
    assert_int_equal(back_len, len);
    if (len > 0) assert_memory_equal(back, pt, len);
    free(pt);
    free(ct);
    free(back);
}

static void test_round_trips(void **state) {
    (void)state;
    const size_t sizes[] = {0, 1, 15, 16, 17, 1000, 65536};
    const uint8_t aad[] = "X-AES-KEY-VERSION: 1f0e";
    for (size_t a = 0; a < SP_ARRAY_LEN(all_algs); a++) {
        sp_cipher *c = fresh_cipher(all_algs[a]);
        for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
            round_trip(c, all_algs[a], sizes[i], NULL, 0);
            if (all_algs[a] == SP_ALG_AES_256_GCM) round_trip(c, all_algs[a], sizes[i], aad, sizeof aad);
        }
        sp_cipher_free(c);
    }
}

/* ---- argument checks ---- */

static void test_bad_iv_length(void **state) {
    (void)state;
    uint8_t iv[32] = {0}, pt[32] = {0}, out[64];
    size_t n = 0;
    for (size_t a = 0; a < SP_ARRAY_LEN(all_algs); a++) {
        sp_alg alg = all_algs[a];
        sp_cipher *c = fresh_cipher(alg);
        size_t right = sp_alg_iv_bytes(alg);
        /* the public API fixes the length even where GCM could take others */
        const size_t wrong[] = {0, right - 1, right + 1, 32};
        for (size_t i = 0; i < SP_ARRAY_LEN(wrong); i++) {
            assert_int_equal(sp_cipher_encrypt(c, iv, wrong[i], NULL, 0, pt, sizeof pt, out, sizeof out, &n),
                             SP_ERR_BAD_IV_LENGTH);
            assert_int_equal(sp_cipher_decrypt(c, iv, wrong[i], NULL, 0, pt, sizeof pt, out, sizeof out, &n),
                             SP_ERR_BAD_IV_LENGTH);
        }
        /* and a refused call leaves the cipher usable */
        assert_int_equal(sp_cipher_encrypt(c, iv, right, NULL, 0, pt, sizeof pt, out, sizeof out, &n), SP_OK);
        sp_cipher_free(c);
    }
}

static void test_aad_only_with_gcm(void **state) {
    (void)state;
    uint8_t iv[16] = {0}, pt[16] = {0}, out[64] = {0};
    const uint8_t aad[4] = {1, 2, 3, 4};
    size_t n = 0;
    const sp_alg no_aad[] = {SP_ALG_AES_256_CBC, SP_ALG_AES_256_CTR};
    for (size_t a = 0; a < SP_ARRAY_LEN(no_aad); a++) {
        sp_cipher *c = fresh_cipher(no_aad[a]);
        assert_int_equal(sp_cipher_encrypt(c, iv, 16, aad, sizeof aad, pt, sizeof pt, out, sizeof out, &n),
                         SP_ERR_INVALID_ARGUMENT);
        assert_int_equal(sp_cipher_decrypt(c, iv, 16, aad, sizeof aad, out, 32, pt, sizeof pt, &n),
                         SP_ERR_INVALID_ARGUMENT);
        sp_cipher_free(c);
    }
}

static void test_buffer_too_small(void **state) {
    (void)state;
    uint8_t iv[16] = {0}, pt[40], ct[80], back[80];
    fill_pattern(pt, sizeof pt, 1);
    const size_t lens[] = {0, 1, 16, 40};
    for (size_t a = 0; a < SP_ARRAY_LEN(all_algs); a++) {
        sp_alg alg = all_algs[a];
        size_t iv_len = sp_alg_iv_bytes(alg);
        sp_cipher *c = fresh_cipher(alg);
        for (size_t i = 0; i < SP_ARRAY_LEN(lens); i++) {
            size_t need = sp_alg_ciphertext_bytes(alg, lens[i]), n = 0;
            if (need > 0) {
                assert_int_equal(sp_cipher_encrypt(c, iv, iv_len, NULL, 0, pt, lens[i], ct, need - 1, &n),
                                 SP_ERR_BUFFER_TOO_SMALL);
            }
            assert_int_equal(sp_cipher_encrypt(c, iv, iv_len, NULL, 0, pt, lens[i], ct, need, &n), SP_OK);
            assert_int_equal(n, need);
            size_t body = alg == SP_ALG_AES_256_GCM ? need - SP_GCM_TAG_BYTES : need;
            if (body > 0) {
                assert_int_equal(sp_cipher_decrypt(c, iv, iv_len, NULL, 0, ct, need, back, body - 1, &n),
                                 SP_ERR_BUFFER_TOO_SMALL);
            }
            assert_int_equal(sp_cipher_decrypt(c, iv, iv_len, NULL, 0, ct, need, back, body, &n), SP_OK);
            assert_int_equal(n, lens[i]);
        }
        sp_cipher_free(c);
    }
}

/* ---- tampering ---- */

/* Opens a tampered GCM message and checks it fails as the header promises:
 * SP_ERR_AUTH and no byte of (unauthenticated) plaintext left in out. */
static void expect_gcm_auth_failure(sp_cipher *c, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
                                    size_t aad_len, const uint8_t *sealed, size_t sealed_len) {
    uint8_t out[128];
    size_t n = 0;
    memset(out, 0xAA, sizeof out);
    assert_true(sealed_len <= sizeof out + SP_GCM_TAG_BYTES);
    assert_int_equal(sp_cipher_decrypt(c, iv, iv_len, aad, aad_len, sealed, sealed_len, out, sizeof out, &n),
                     SP_ERR_AUTH);
    size_t body = sealed_len > SP_GCM_TAG_BYTES ? sealed_len - SP_GCM_TAG_BYTES : 0;
    assert_true(sp_test_all_zero(out, body));
}

static void test_gcm_tamper(void **state) {
    (void)state;
    sp_cipher *c = fresh_cipher(SP_ALG_AES_256_GCM);
    uint8_t iv[SP_GCM_IV_BYTES], pt[64], aad[20], sealed[64 + SP_GCM_TAG_BYTES];
    assert_int_equal(sp_random(iv, sizeof iv), SP_OK);
    fill_pattern(pt, sizeof pt, 9);
    fill_pattern(aad, sizeof aad, 200);
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, aad, sizeof aad, pt, sizeof pt, sealed, sizeof sealed, &n),
                     SP_OK);
    assert_int_equal(n, sizeof sealed);

    /* every single bit of ciphertext and tag */
    for (size_t bit = 0; bit < 8 * sizeof sealed; bit++) {
        sealed[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, sizeof sealed);
        sealed[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* every bit of the AAD */
    for (size_t bit = 0; bit < 8 * sizeof aad; bit++) {
        aad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, sizeof sealed);
        aad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* every bit of the IV */
    for (size_t bit = 0; bit < 8 * sizeof iv; bit++) {
        iv[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, sizeof sealed);
        iv[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* AAD dropped, shortened, lengthened; message truncated; tag only;
     * shorter than a tag */
    expect_gcm_auth_failure(c, iv, sizeof iv, NULL, 0, sealed, sizeof sealed);
    expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad - 1, sealed, sizeof sealed);
    uint8_t longer[sizeof aad + 1];
    memcpy(longer, aad, sizeof aad);
    longer[sizeof aad] = 0;
    expect_gcm_auth_failure(c, iv, sizeof iv, longer, sizeof longer, sealed, sizeof sealed);
    expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, sizeof sealed - 1);
    expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed + sizeof pt, SP_GCM_TAG_BYTES);
    expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, SP_GCM_TAG_BYTES - 1);
    expect_gcm_auth_failure(c, iv, sizeof iv, aad, sizeof aad, sealed, 0);

    /* untouched, it still opens: the failures above did not wedge the ctx */
    uint8_t back[64];
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, aad, sizeof aad, sealed, sizeof sealed, back, sizeof back, &n),
                     SP_OK);
    assert_int_equal(n, sizeof pt);
    assert_memory_equal(back, pt, sizeof pt);
    sp_cipher_free(c);
}

/* Zeroed beforehand, so whether the library refused before decrypting or
 * decrypted and then wiped, the output must still be all zero. */
static void expect_cbc_auth_failure(sp_cipher *c, const uint8_t *iv, const uint8_t *ct, size_t ct_len) {
    uint8_t out[128] = {0};
    size_t n = 0;
    assert_int_equal(sp_cipher_decrypt(c, iv, SP_CBC_IV_BYTES, NULL, 0, ct, ct_len, out, sizeof out, &n), SP_ERR_AUTH);
    assert_true(sp_test_all_zero(out, sizeof out));
}

static void test_cbc_padding(void **state) {
    (void)state;
    sp_cipher *c = fresh_cipher(SP_ALG_AES_256_CBC);
    uint8_t iv[16], pt[32], ct[48];
    assert_int_equal(sp_random(iv, sizeof iv), SP_OK);
    fill_pattern(pt, sizeof pt, 5);
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, sizeof pt, ct, sizeof ct, &n), SP_OK);
    assert_int_equal(n, 48);

    /* A block-aligned plaintext ends in a whole block of 0x10. Flipping bits
     * of the previous ciphertext block flips the same bits of that padding,
     * giving, deterministically: 0x11 (longer than a block), 0x00 (zero pad),
     * and 0x10 preceded by 0x11 (inconsistent pad bytes). */
    const struct {
        size_t byte;
        uint8_t mask;
    } flips[] = {{31, 0x01}, {31, 0x10}, {30, 0x01}, {16, 0x01}, {31, 0x1f}};
    for (size_t i = 0; i < SP_ARRAY_LEN(flips); i++) {
        ct[flips[i].byte] ^= flips[i].mask;
        expect_cbc_auth_failure(c, iv, ct, sizeof ct);
        ct[flips[i].byte] ^= flips[i].mask;
    }
    /* the same with a one-block message, where the "previous block" is the IV */
    uint8_t one[16];
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, 0, one, sizeof one, &n), SP_OK);
    iv[15] ^= 0x01;
    expect_cbc_auth_failure(c, iv, one, sizeof one);
    iv[15] ^= 0x01;

    /* lengths that are not whole blocks, or no block at all */
    const size_t bad_lens[] = {0, 1, 15, 17, 31, 47};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_lens); i++) expect_cbc_auth_failure(c, iv, ct, bad_lens[i]);

    uint8_t back[48];
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, NULL, 0, ct, sizeof ct, back, sizeof back, &n), SP_OK);
    assert_int_equal(n, sizeof pt);
    assert_memory_equal(back, pt, sizeof pt);
    sp_cipher_free(c);
}

/* ---- CTR counter ---- */

/* AES-256 of each 16-byte block, computed with OpenSSL directly so the test
 * does not trust the code under test for its expectation. */
static void aes256_ecb(const uint8_t key[32], const uint8_t *in, size_t len, uint8_t *out) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    assert_non_null(ctx);
    int n = 0, fin = 0;
    assert_int_equal(EVP_EncryptInit_ex2(ctx, EVP_aes_256_ecb(), key, NULL, NULL), 1);
    assert_int_equal(EVP_CIPHER_CTX_set_padding(ctx, 0), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, out, &n, in, (int)len), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, out + n, &fin), 1);
    assert_int_equal((size_t)n + (size_t)fin, len);
    EVP_CIPHER_CTX_free(ctx);
}

static void test_ctr_full_width_counter(void **state) {
    (void)state;
    uint8_t key[32];
    fill_pattern(key, sizeof key, 77);
    sp_cipher *c = cipher_with_key(key, SP_ALG_AES_256_CTR);

    /* Java's AES/CTR increments the whole block as one 128-bit big-endian
     * integer: after ff..ff comes 00..00 (a 64- or 32-bit counter would
     * give ff..ff00..00 or similar instead). */
    uint8_t iv[16], counters[32], keystream[32];
    memset(iv, 0xff, sizeof iv);
    memset(counters, 0xff, 16);
    memset(counters + 16, 0x00, 16);
    aes256_ecb(key, counters, sizeof counters, keystream);

    uint8_t zeros[32] = {0}, out[32];
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, zeros, sizeof zeros, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, 32);
    assert_memory_equal(out, keystream, 32);

    /* and with real data it is data XOR keystream, both ways */
    uint8_t pt[32], expect[32], back[32];
    fill_pattern(pt, sizeof pt, 11);
    for (size_t i = 0; i < sizeof pt; i++) expect[i] = pt[i] ^ keystream[i];
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, sizeof pt, out, sizeof out, &n), SP_OK);
    assert_memory_equal(out, expect, sizeof expect);
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, NULL, 0, out, sizeof out, back, sizeof back, &n), SP_OK);
    assert_memory_equal(back, pt, sizeof pt);

    /* the carry also crosses the 64-bit boundary inside the block */
    uint8_t iv2[16];
    memset(iv2, 0, 8);
    memset(iv2 + 8, 0xff, 8);
    memcpy(counters, iv2, 16);
    memset(counters + 16, 0, 16);
    counters[16 + 7] = 1;
    aes256_ecb(key, counters, sizeof counters, keystream);
    assert_int_equal(sp_cipher_encrypt(c, iv2, sizeof iv2, NULL, 0, zeros, sizeof zeros, out, sizeof out, &n), SP_OK);
    assert_memory_equal(out, keystream, 32);
    sp_cipher_free(c);
}

/* ---- known answers ---- */

static void test_kat_cbc_sp800_38a(void **state) {
    (void)state;
    /* SP 800-38A F.2.5, CBC-AES256.Encrypt */
    uint8_t key[32], iv[16], pt[64], expect[64];
    sp_test_unhex(nist_key, key, sizeof key);
    sp_test_unhex("000102030405060708090a0b0c0d0e0f", iv, sizeof iv);
    sp_test_unhex(nist_plain, pt, sizeof pt);
    sp_test_unhex("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
          "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
          expect, sizeof expect);
    sp_cipher *c = cipher_with_key(key, SP_ALG_AES_256_CBC);

    /* a message of another length first: no state may carry over */
    uint8_t scratch[32], out[80], back[80];
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, 5, scratch, sizeof scratch, &n), SP_OK);

    /* the vector has no padding; PKCS#7 adds a block after its 64 bytes */
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, sizeof pt, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, 80);
    assert_memory_equal(out, expect, sizeof expect);
    /* the padding block is E(0x10 * 16 XOR last ciphertext block) */
    uint8_t pad_in[16], pad_ct[16];
    for (size_t i = 0; i < 16; i++) pad_in[i] = (uint8_t)(0x10 ^ expect[48 + i]);
    aes256_ecb(key, pad_in, 16, pad_ct);
    assert_memory_equal(out + 64, pad_ct, 16);

    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, NULL, 0, out, n, back, sizeof back, &n), SP_OK);
    assert_int_equal(n, sizeof pt);
    assert_memory_equal(back, pt, sizeof pt);
    sp_cipher_free(c);
}

static void test_kat_ctr_sp800_38a(void **state) {
    (void)state;
    /* SP 800-38A F.5.5, CTR-AES256.Encrypt */
    uint8_t key[32], iv[16], pt[64], expect[64];
    sp_test_unhex(nist_key, key, sizeof key);
    sp_test_unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", iv, sizeof iv);
    sp_test_unhex(nist_plain, pt, sizeof pt);
    sp_test_unhex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
          "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
          expect, sizeof expect);
    sp_cipher *c = cipher_with_key(key, SP_ALG_AES_256_CTR);

    /* a partial block first: its leftover keystream must not leak into the
     * next message */
    uint8_t out[64], back[64];
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, 5, out, sizeof out, &n), SP_OK);
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, NULL, 0, out, 7, back, sizeof back, &n), SP_OK);

    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, NULL, 0, pt, sizeof pt, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(out, expect, sizeof expect);
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, NULL, 0, expect, sizeof expect, back, sizeof back, &n), SP_OK);
    assert_int_equal(n, sizeof pt);
    assert_memory_equal(back, pt, sizeof pt);
    sp_cipher_free(c);
}

static void test_kat_gcm(void **state) {
    (void)state;
    /* McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16
     * (AES-256, 96-bit IV, 20 bytes of AAD, 60-byte plaintext) */
    uint8_t key[32], iv[12], aad[20], pt[60], expect[60 + 16];
    sp_test_unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, sizeof key);
    sp_test_unhex("cafebabefacedbaddecaf888", iv, sizeof iv);
    sp_test_unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof aad);
    sp_test_unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
          "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
          pt, sizeof pt);
    sp_test_unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
          "76fc6ece0f4e1768cddf8853bb2d551b",
          expect, sizeof expect);
    sp_cipher *c = cipher_with_key(key, SP_ALG_AES_256_GCM);
    uint8_t out[sizeof expect], back[sizeof pt];
    size_t n = 0;
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, aad, sizeof aad, pt, 3, out, sizeof out, &n), SP_OK);
    assert_int_equal(sp_cipher_encrypt(c, iv, sizeof iv, aad, sizeof aad, pt, sizeof pt, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(out, expect, sizeof expect);
    assert_int_equal(sp_cipher_decrypt(c, iv, sizeof iv, aad, sizeof aad, expect, sizeof expect, back, sizeof back, &n),
                     SP_OK);
    assert_int_equal(n, sizeof pt);
    assert_memory_equal(back, pt, sizeof pt);
    sp_cipher_free(c);
}

/* ---- small primitives ---- */

static void test_ct_equal(void **state) {
    (void)state;
    uint8_t a[33], b[33];
    fill_pattern(a, sizeof a, 1);
    memcpy(b, a, sizeof b);
    assert_true(sp_ct_equal(a, b, sizeof a));
    assert_true(sp_ct_equal(a, b, 0));
    for (size_t i = 0; i < sizeof a; i++) {
        b[i] ^= 0x80;
        assert_false(sp_ct_equal(a, b, sizeof a));
        b[i] ^= 0x80;
    }
    b[32] ^= 1;
    assert_true(sp_ct_equal(a, b, 32)); /* only len bytes count */
}

static void test_hkdf_rfc5869(void **state) {
    (void)state;
    /* RFC 5869 A.1, test case 1 */
    uint8_t ikm[22], salt[13], info[10], expect[42], out[42];
    memset(ikm, 0x0b, sizeof ikm);
    sp_test_unhex("000102030405060708090a0b0c", salt, sizeof salt);
    sp_test_unhex("f0f1f2f3f4f5f6f7f8f9", info, sizeof info);
    sp_test_unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", expect,
          sizeof expect);
    assert_int_equal(sp_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, out, sizeof out), SP_OK);
    assert_memory_equal(out, expect, sizeof expect);

    /* RFC 5869 allows 1..255*32 bytes of output */
    static uint8_t big[255 * 32 + 1];
    assert_int_equal(sp_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, big, 255 * 32), SP_OK);
    assert_memory_equal(big, expect, sizeof expect); /* HKDF output is a prefix-stable stream */
    assert_int_equal(sp_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, big, sizeof big),
                     SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, out, 0),
                     SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_hkdf_sha256(NULL, 5, salt, sizeof salt, info, sizeof info, out, sizeof out),
                     SP_ERR_INVALID_ARGUMENT);
}

static void test_hmac_empty(void **state) {
    (void)state;
    /* HMAC-SHA256 with an empty key over an empty message: OpenSSL treats a
     * NULL key as "keep the old key", so the empty key is an edge worth
     * pinning. */
    uint8_t expect[32], mac[32];
    sp_test_unhex("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", expect, sizeof expect);
    assert_int_equal(sp_hmac_sha256(NULL, 0, NULL, 0, mac), SP_OK);
    assert_memory_equal(mac, expect, sizeof expect);
}

/* ---- the public keyed hashes and derivation (sealpost/crypto.h) ---- */

/* RFC 4231 section 4, test cases 1-4, 6 and 7 (5 truncates, which the API
 * does not offer). */
static void test_hmac_rfc4231(void **state) {
    (void)state;
    static const char big_data[] = "This is a test using a larger than block-size key and a larger than block-size "
                                   "data. The key needs to be hashed before being used by the HMAC algorithm.";
    uint8_t k20[20], kaa20[20], k25[25], kaa131[131], dd50[50], cd50[50];
    memset(k20, 0x0b, sizeof k20);
    memset(kaa20, 0xaa, sizeof kaa20);
    for (size_t i = 0; i < sizeof k25; i++) k25[i] = (uint8_t)(i + 1);
    memset(kaa131, 0xaa, sizeof kaa131);
    memset(dd50, 0xdd, sizeof dd50);
    memset(cd50, 0xcd, sizeof cd50);
    const struct {
        const uint8_t *key;
        size_t key_len;
        const void *msg;
        size_t msg_len;
        const char *mac;
    } v[] = {
        {k20, sizeof k20, "Hi There", 8, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {(const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {kaa20, sizeof kaa20, dd50, sizeof dd50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k25, sizeof k25, cd50, sizeof cd50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {kaa131, sizeof kaa131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {kaa131, sizeof kaa131, big_data, sizeof big_data - 1,
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(v); i++) {
        uint8_t expect[SP_HMAC_SHA256_BYTES], mac[SP_HMAC_SHA256_BYTES];
        sp_test_unhex(v[i].mac, expect, sizeof expect);
        assert_ok(sp_hmac_sha256(v[i].key, v[i].key_len, v[i].msg, v[i].msg_len, mac));
        assert_memory_equal(mac, expect, sizeof expect);
    }
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    assert_rc(sp_hmac_sha256(NULL, 4, (const uint8_t *)"x", 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_hmac_sha256(k20, sizeof k20, NULL, 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_hmac_sha256(k20, sizeof k20, (const uint8_t *)"x", 1, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* The sp_key form is HMAC(key, label || 0x00 || msg); labels keep apart. */
static void test_key_hmac_labelled(void **state) {
    (void)state;
    uint8_t raw[SP_KEY_BYTES], joined[64], expect[SP_HMAC_SHA256_BYTES], mac[SP_HMAC_SHA256_BYTES],
        other[SP_HMAC_SHA256_BYTES];
    fill_pattern(raw, sizeof raw, 3);
    sp_key *key = NULL;
    assert_ok(sp_key_new(raw, sizeof raw, &key));
    static const char label[] = "client key";
    static const char msg[] = "spk_value";
    memcpy(joined, label, sizeof label); /* with its NUL */
    memcpy(joined + sizeof label, msg, sizeof msg - 1);
    assert_ok(sp_hmac_sha256(raw, sizeof raw, joined, sizeof label + sizeof msg - 1, expect));
    assert_ok(sp_key_hmac_sha256(key, label, (const uint8_t *)msg, sizeof msg - 1, mac));
    assert_memory_equal(mac, expect, sizeof expect);
    assert_ok(sp_key_hmac_sha256(key, "api secret", (const uint8_t *)msg, sizeof msg - 1, other));
    assert_memory_not_equal(mac, other, sizeof mac);
    /* the boundary is part of the input: "ab" + "c" differs from "a" + "bc" */
    assert_ok(sp_key_hmac_sha256(key, "ab", (const uint8_t *)"c", 1, mac));
    assert_ok(sp_key_hmac_sha256(key, "a", (const uint8_t *)"bc", 2, other));
    assert_memory_not_equal(mac, other, sizeof mac);
    assert_ok(sp_key_hmac_sha256(key, label, NULL, 0, mac)); /* empty message */

    assert_rc(sp_key_hmac_sha256(NULL, label, (const uint8_t *)msg, 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_hmac_sha256(key, NULL, (const uint8_t *)msg, 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_hmac_sha256(key, "", (const uint8_t *)msg, 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_hmac_sha256(key, label, NULL, 1, mac), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_hmac_sha256(key, label, (const uint8_t *)msg, 1, NULL), SP_ERR_INVALID_ARGUMENT);

    /* it runs on every authenticated request: the keyed state lives on the
     * stack, so it allocates nothing (and no allocation can fail it) */
    uint64_t before = sp_test_alloc_count();
    sp_test_fault fault = sp_test_fault_arm(1);
    assert_ok(sp_key_hmac_sha256(key, label, (const uint8_t *)msg, 1, mac));
    bool reached = sp_test_fault_disarm(fault);
    assert_false(reached);
    assert_int_equal(sp_test_alloc_count(), before);
    sp_key_free(key);
}

/* RFC 5869 A.3 (no salt, no info) through the public function, and the
 * sp_key form agreeing with it on the exported key bytes. */
static void test_key_derive(void **state) {
    (void)state;
    uint8_t ikm[22], expect[42], out[42];
    memset(ikm, 0x0b, sizeof ikm);
    sp_test_unhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8", expect,
                  sizeof expect);
    assert_ok(sp_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, out, sizeof out));
    assert_memory_equal(out, expect, sizeof expect);

    uint8_t raw[SP_KEY_BYTES], want[SP_KEY_BYTES], got[SP_KEY_BYTES];
    fill_pattern(raw, sizeof raw, 9);
    sp_key *master = NULL, *derived = NULL, *again = NULL;
    assert_ok(sp_key_new(raw, sizeof raw, &master));
    static const uint8_t salt[] = "salt", info[] = "purpose v1";
    assert_ok(sp_hkdf_sha256(raw, sizeof raw, salt, sizeof salt - 1, info, sizeof info - 1, want, sizeof want));
    assert_ok(sp_key_derive(master, salt, sizeof salt - 1, info, sizeof info - 1, &derived));
    assert_ok(sp_key_export(derived, got));
    assert_memory_equal(got, want, sizeof want);
    assert_ok(sp_key_derive(master, salt, sizeof salt - 1, (const uint8_t *)"other", 5, &again));
    assert_ok(sp_key_export(again, got));
    assert_memory_not_equal(got, want, sizeof want);
    sp_key_free(again);
    sp_key_free(derived);

    derived = NULL;
    assert_rc(sp_key_derive(NULL, salt, 4, info, 4, &derived), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_derive(master, salt, 4, info, 4, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_key_derive(master, NULL, 4, info, 4, &derived), SP_ERR_INVALID_ARGUMENT);
    assert_null(derived);
    sp_key_free(master);
}

static void test_key_wrap_rfc3394(void **state) {
    (void)state;
    /* RFC 3394 4.6: 256 bits of key data with a 256-bit KEK */
    uint8_t kek[32], data[32], expect[40], out[48], back[48];
    sp_test_unhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", kek, sizeof kek);
    sp_test_unhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F", data, sizeof data);
    sp_test_unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21", expect, sizeof expect);
    size_t n = 0;
    assert_int_equal(sp_aes_key_wrap(kek, sizeof kek, false, data, sizeof data, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(out, expect, sizeof expect);
    assert_int_equal(sp_aes_key_unwrap(kek, sizeof kek, false, expect, sizeof expect, back, sizeof back, &n), SP_OK);
    assert_int_equal(n, sizeof data);
    assert_memory_equal(back, data, sizeof data);

    /* any modified bit fails the integrity check, leaving nothing behind */
    for (size_t bit = 0; bit < 8 * sizeof expect; bit += 13) {
        expect[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        memset(back, 0xAA, sizeof back);
        assert_int_equal(sp_aes_key_unwrap(kek, sizeof kek, false, expect, sizeof expect, back, sizeof back, &n),
                         SP_ERR_AUTH);
        assert_true(sp_test_all_zero(back, sizeof expect));
        expect[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(sp_aes_key_wrap(kek, 31, false, data, sizeof data, out, sizeof out, &n), SP_ERR_BAD_KEY_LENGTH);
    assert_int_equal(sp_aes_key_wrap(kek, sizeof kek, false, data, sizeof data, out, 39, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_aes_key_wrap(kek, sizeof kek, false, data, 12, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
    /* with padding (RFC 5649) odd lengths are fine and come back exactly */
    assert_int_equal(sp_aes_key_wrap(kek, sizeof kek, true, data, 13, out, sizeof out, &n), SP_OK);
    assert_int_equal(n, 24);
    assert_int_equal(sp_aes_key_unwrap(kek, sizeof kek, true, out, n, back, sizeof back, &n), SP_OK);
    assert_int_equal(n, 13);
    assert_memory_equal(back, data, 13);
}

/* ---- allocation failures ---- */

/* One complete "fresh key to ciphertext" run; every resource it takes is
 * released before it returns, whatever fails. */
static sp_error key_to_ciphertext(sp_alg alg) {
    sp_key *key = NULL;
    sp_cipher *c = NULL;
    uint8_t iv[SP_MAX_IV_BYTES] = {0}, pt[40] = {0}, ct[64], back[64];
    size_t n = 0;
    sp_error rc = sp_key_generate(&key);
    if (rc == SP_OK) rc = sp_cipher_new(key, alg, &c);
    if (rc == SP_OK) rc = sp_cipher_encrypt(c, iv, sp_alg_iv_bytes(alg), NULL, 0, pt, sizeof pt, ct, sizeof ct, &n);
    if (rc == SP_OK) rc = sp_cipher_decrypt(c, iv, sp_alg_iv_bytes(alg), NULL, 0, ct, n, back, sizeof back, &n);
    sp_cipher_free(c);
    sp_key_free(key);
    return rc;
}

static void test_alloc_failures(void **state) {
    (void)state;
    /* initialisation happens once per process and is not retried; it is
     * done before arming so that each step below fails something else */
    assert_int_equal(sp_init(), SP_OK);
    for (size_t a = 0; a < SP_ARRAY_LEN(all_algs); a++) {
        size_t failures = 0;
        bool done = false;
        for (uint64_t nth = 1; nth < 100000 && !done; nth++) {
            sp_test_fault fault = sp_test_fault_arm(nth);
            sp_error rc = key_to_ciphertext(all_algs[a]);
            bool reached = sp_test_fault_disarm(fault);
            if (rc != SP_OK) {
                if (rc != SP_ERR_NO_MEMORY && rc != SP_ERR_CRYPTO_BACKEND) {
                    fail_msg("%s: allocation %llu failing gave %s", sp_alg_name(all_algs[a]), (unsigned long long)nth,
                             sp_error_name(rc));
                }
                failures++;
            } else if (!reached) {
                /* the whole run needed fewer than nth allocations: every
                 * earlier one has been failed in turn */
                done = true;
            }
        }
        assert_true(done);
        /* a fresh key and cipher need memory: something must have failed */
        assert_true(failures > 0);
        print_message("%s: %zu injected allocation failures, all reported cleanly\n", sp_alg_name(all_algs[a]),
                      failures);
        assert_int_equal(key_to_ciphertext(all_algs[a]), SP_OK);
    }
}

static void test_no_allocation_per_message(void **state) {
    (void)state;
    for (size_t a = 0; a < SP_ARRAY_LEN(all_algs); a++) {
        sp_alg alg = all_algs[a];
        /* the counter must see OpenSSL's allocations (two contexts and
         * their provider state), or the property below would hold vacuously */
        uint64_t setup = sp_test_alloc_count();
        sp_cipher *c = fresh_cipher(alg);
        assert_true(sp_test_alloc_count() - setup >= 3);
        size_t iv_len = sp_alg_iv_bytes(alg);
        const uint8_t *aad = alg == SP_ALG_AES_256_GCM ? (const uint8_t *)"header" : NULL;
        size_t aad_len = aad ? 6 : 0;
        uint8_t iv[SP_MAX_IV_BYTES] = {0}, pt[100], ct[128], back[128];
        fill_pattern(pt, sizeof pt, 3);
        size_t n = 0, m = 0;
        /* warm-up: lazy per-thread state in OpenSSL is set up here */
        for (int i = 0; i < 3; i++) {
            assert_int_equal(sp_cipher_encrypt(c, iv, iv_len, aad, aad_len, pt, sizeof pt, ct, sizeof ct, &n), SP_OK);
            assert_int_equal(sp_cipher_decrypt(c, iv, iv_len, aad, aad_len, ct, n, back, sizeof back, &m), SP_OK);
        }
        uint64_t before = sp_test_alloc_count();
        for (int i = 0; i < 1000; i++) {
            iv[0] = (uint8_t)i; /* a new IV each time, as in real use */
            iv[1] = (uint8_t)(i >> 8);
            size_t len = (size_t)(i % 100);
            if (sp_cipher_encrypt(c, iv, iv_len, aad, aad_len, pt, len, ct, sizeof ct, &n) != SP_OK ||
                sp_cipher_decrypt(c, iv, iv_len, aad, aad_len, ct, n, back, sizeof back, &m) != SP_OK || m != len) {
                fail_msg("%s: message %d failed", sp_alg_name(alg), i);
            }
        }
        uint64_t after = sp_test_alloc_count();
        if (after != before) {
            fail_msg("%s: %llu allocations in 1000 encrypt+decrypt pairs", sp_alg_name(alg),
                     (unsigned long long)(after - before));
        }
        sp_cipher_free(c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_new_lengths),
        cmocka_unit_test(test_key_generate),
        cmocka_unit_test(test_cipher_new_args),
        cmocka_unit_test(test_alg_table),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_bad_iv_length),
        cmocka_unit_test(test_aad_only_with_gcm),
        cmocka_unit_test(test_buffer_too_small),
        cmocka_unit_test(test_gcm_tamper),
        cmocka_unit_test(test_cbc_padding),
        cmocka_unit_test(test_ctr_full_width_counter),
        cmocka_unit_test(test_kat_cbc_sp800_38a),
        cmocka_unit_test(test_kat_ctr_sp800_38a),
        cmocka_unit_test(test_kat_gcm),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_hmac_empty),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_key_hmac_labelled),
        cmocka_unit_test(test_key_derive),
        cmocka_unit_test(test_key_wrap_rfc3394),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_no_allocation_per_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
