/*
 * Key exchange (include/sealpost/keyx.h): key versions handed to a provider
 * as a compact JWE whose plaintext is a JWK Set, encrypted to the provider's
 * RSA (RSA-OAEP-256) or P-256 (ECDH-ES+A256KW) public key.
 *
 * Export builds the JWK Set by hand into one buffer it wipes, draws a fresh
 * content key in locked memory, wraps it for the recipient and seals the set
 * with AES-256-GCM, the base64url protected header as AAD (RFC 7516 5.1).
 *
 * Import walks the same steps backwards and refuses early: size, the five
 * parts and their alphabet, a protected header that names exactly our
 * algorithms (no zip, no crit), an ephemeral key that OpenSSL confirms is on
 * P-256; only then is the private key used. Every failure to unwrap or
 * to authenticate is one code, SP_ERR_AUTH. An RSA-OAEP failure continues
 * with a random content key (RFC 7516 11.5) so that a bad encrypted key and
 * a bad tag take the same path. The decrypted JWK Set is parsed strictly and
 * every buffer that held it, jansson's included (src/core/mem.c makes its
 * allocator wipe), is wiped before it is freed.
 *
 * Key exchange is rare, so OpenSSL contexts (and the SHA-256 fetch) are made
 * per call instead of being cached like the message-path algorithms.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include <jansson.h>

#include "cipher/sp_cipher.h"
#include "sealpost/keyx.h"

#define SP_KEYX_ENC "A256GCM"
#define SP_KEYX_CTY "jwk-set+json"
#define SP_KEYX_CTY_LONG "application/jwk-set+json"
#define SP_KEYX_CURVE "prime256v1" /* OpenSSL's name for P-256 */
#define SP_KEYX_MAX_HEADER 2048    /* decoded protected header */
#define SP_KEYX_CEK_BYTES 32
#define SP_KEYX_WRAPPED_BYTES (SP_KEYX_CEK_BYTES + 8) /* RFC 3394 adds one block */
#define SP_KEYX_COORD_BYTES 32                        /* a P-256 coordinate */
#define SP_KEYX_MAX_EK_BYTES (SP_KEYX_MAX_RSA_BITS / 8)
/* the longest JWK sealpost writes: the fixed text, a UUID, 43 base64url
 * characters of key and 20 digits of exp, plus the separating comma */
#define SP_KEYX_ENTRY_MAX 160

typedef enum sp_keyx_kind {
    SP_KEYX_NONE = 0,
    SP_KEYX_RSA = 1,  /* RSA-OAEP-256 */
    SP_KEYX_ECDH = 2, /* ECDH-ES+A256KW */
} sp_keyx_kind;

/* Internal entry points, reachable from the unit tests (the unit has no
 * internal header of its own): the clock is a parameter so expiry can be
 * tested, and the Concat KDF is checked against RFC 7518 Appendix C. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_keyx_concat_kdf(const uint8_t *z, size_t z_len, const char *alg_id,
                                                      const uint8_t *apu, size_t apu_len, const uint8_t *apv,
                                                      size_t apv_len, uint8_t *out, size_t out_len);
SP_INTERNAL SP_MUST_CHECK sp_error sp_keyx_export_at(const sp_keyx_item *items, size_t n, const char *pem,
                                                     size_t pem_len, const char *alg, char *out, size_t cap,
                                                     size_t *out_len, int64_t now);
/* Seals any plaintext the way export seals its JWK Set, so tests can build
 * JWEs around malformed sets. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_keyx_seal_plaintext(const uint8_t *plain, size_t plain_len, const char *pem,
                                                          size_t pem_len, const char *alg, char *out, size_t cap,
                                                          size_t *out_len);
SP_INTERNAL SP_MUST_CHECK sp_error sp_keyx_import_at(const char *jwe, size_t len, const char *pem, size_t pem_len,
                                                     sp_keyx_item *items, size_t max, size_t *n, int64_t now);

/* ---- OpenSSL helpers ---- */

/* Empties OpenSSL's error queue and tells an allocation failure apart from
 * everything else, so a caller short of memory is not told its key or its
 * JWE is bad. */
static sp_error sp_keyx_ossl_error(sp_error otherwise) {
    sp_error rc = otherwise;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) rc = SP_ERR_NO_MEMORY;
    }
    return rc;
}

/* An encrypted PEM would otherwise make OpenSSL prompt on the terminal. */
static int sp_keyx_no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Which algorithm a key allows, or SP_ERR_BAD_PEM for one we refuse: RSA
 * below SP_KEYX_MIN_RSA_BITS is under the 128-bit level the AES keys it
 * would carry have, and other curves and key types are not in the profile. */
static sp_error sp_keyx_kind_of(EVP_PKEY *pk, sp_keyx_kind *kind) {
    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        SP_ENSURE(bits >= SP_KEYX_MIN_RSA_BITS && bits <= SP_KEYX_MAX_RSA_BITS, SP_ERR_BAD_PEM);
        *kind = SP_KEYX_RSA;
        return SP_OK;
    }
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        size_t glen = 0;
        int ok = EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen);
        SP_ENSURE(ok == 1 && glen == strlen(SP_KEYX_CURVE) && strcmp(group, SP_KEYX_CURVE) == 0, SP_ERR_BAD_PEM);
        *kind = SP_KEYX_ECDH;
        return SP_OK;
    }
    return SP_ERR_BAD_PEM;
}

static sp_error sp_keyx_load_pem(const char *pem, size_t len, bool private_key, EVP_PKEY **out,
                                 sp_keyx_kind *kind) {
    SP_ENSURE(len <= SP_KEYX_MAX_PEM_BYTES, SP_ERR_TOO_LARGE);
    SP_ENSURE(len > 0, SP_ERR_BAD_PEM);
    BIO *bio = BIO_new_mem_buf(pem, (int)len); /* a read-only view, no copy */
    if (bio == NULL) return sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
    EVP_PKEY *pk = private_key ? PEM_read_bio_PrivateKey(bio, NULL, sp_keyx_no_passphrase, NULL)
                               : PEM_read_bio_PUBKEY(bio, NULL, sp_keyx_no_passphrase, NULL);
    BIO_free(bio);
    if (pk == NULL) return sp_keyx_ossl_error(SP_ERR_BAD_PEM);
    sp_error rc = sp_keyx_kind_of(pk, kind);
    if (rc == SP_OK && !private_key) {
        /* the recipient's key comes from outside: have OpenSSL check it
         * (for EC, that the point is on the curve) before encrypting to it */
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
        if (ctx == NULL) rc = sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
        else if (EVP_PKEY_public_check(ctx) != 1) rc = sp_keyx_ossl_error(SP_ERR_BAD_PEM);
        EVP_PKEY_CTX_free(ctx);
    }
    if (rc != SP_OK) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return rc;
    }
    *out = pk;
    return SP_OK;
}

/* RSA-OAEP with SHA-256 for both the hash and MGF1, as RFC 7518 4.3 fixes
 * (OpenSSL's OAEP default is SHA-1). */
static sp_error sp_keyx_rsa_oaep(EVP_PKEY *pk, bool encrypt, const uint8_t *in, size_t in_len, uint8_t *out,
                                 size_t cap, size_t *out_len) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (ctx == NULL) return sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
    char pad[] = OSSL_PKEY_RSA_PAD_MODE_OAEP, md[] = "SHA256", mgf[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, pad, 0),
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, md, 0),
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, mgf, 0),
        OSSL_PARAM_construct_end(),
    };
    sp_error rc = SP_OK;
    size_t n = cap;
    if (encrypt) {
        if (EVP_PKEY_encrypt_init_ex(ctx, params) != 1 || EVP_PKEY_encrypt(ctx, out, &n, in, in_len) != 1)
            rc = sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
    } else {
        if (EVP_PKEY_decrypt_init_ex(ctx, params) != 1 || EVP_PKEY_decrypt(ctx, out, &n, in, in_len) != 1)
            rc = sp_keyx_ossl_error(SP_ERR_AUTH);
    }
    EVP_PKEY_CTX_free(ctx);
    if (rc == SP_OK) *out_len = n;
    return rc;
}

/* The ECDH shared secret Z (the x coordinate, 32 bytes for P-256). Peer
 * validation is on: OpenSSL checks the peer point once more here. */
static sp_error sp_keyx_ecdh(EVP_PKEY *own, EVP_PKEY *peer, uint8_t z[SP_KEYX_COORD_BYTES]) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, own, NULL);
    if (ctx == NULL) return sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
    sp_error rc = SP_OK;
    size_t n = SP_KEYX_COORD_BYTES;
    if (EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer_ex(ctx, peer, 1) != 1 ||
        EVP_PKEY_derive(ctx, z, &n) != 1) {
        rc = sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
    } else if (n != SP_KEYX_COORD_BYTES) {
        rc = SP_ERR_CRYPTO_BACKEND;
    }
    EVP_PKEY_CTX_free(ctx);
    if (rc != SP_OK) sp_wipe(z, SP_KEYX_COORD_BYTES);
    return rc;
}

static void sp_keyx_put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The Concat KDF of NIST SP 800-56A as RFC 7518 4.6.2 uses it, over
 * SHA-256: block i is SHA-256(counter i as 32-bit big-endian || Z ||
 * OtherInfo), counting from 1, where OtherInfo = AlgorithmID || PartyUInfo
 * || PartyVInfo (each a 32-bit big-endian length and the bytes) ||
 * SuppPubInfo (keydatalen in bits, 32-bit big-endian).
 *
 * That is OpenSSL's SSKDF, but OpenSSL 3.0's SSKDF dereferences NULL when
 * allocating its context fails (EVP_KDF_CTX_new crashed in this unit's
 * allocation-failure test), so the hashing is done here with EVP_Digest. */
sp_error sp_keyx_concat_kdf(const uint8_t *z, size_t z_len, const char *alg_id, const uint8_t *apu, size_t apu_len,
                            const uint8_t *apv, size_t apv_len, uint8_t *out, size_t out_len) {
    SP_ENSURE(z != NULL && alg_id != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE((apu != NULL || apu_len == 0) && (apv != NULL || apv_len == 0), SP_ERR_INVALID_ARGUMENT);
    size_t id_len = strlen(alg_id);
    SP_ENSURE(z_len > 0 && z_len <= 256 && out_len > 0 && out_len <= 64, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(id_len <= 64 && apu_len <= 256 && apv_len <= 256, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    uint8_t info[4 + 64 + 4 + 256 + 4 + 256 + 4];
    size_t at = 0;
    sp_keyx_put_be32(info + at, (uint32_t)id_len);
    memcpy(info + at + 4, alg_id, id_len);
    at += 4 + id_len;
    sp_keyx_put_be32(info + at, (uint32_t)apu_len);
    if (apu_len) memcpy(info + at + 4, apu, apu_len);
    at += 4 + apu_len;
    sp_keyx_put_be32(info + at, (uint32_t)apv_len);
    if (apv_len) memcpy(info + at + 4, apv, apv_len);
    at += 4 + apv_len;
    sp_keyx_put_be32(info + at, (uint32_t)(out_len * 8));
    at += 4;

    EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    sp_error rc = SP_OK;
    uint8_t block[32];
    if (sha256 == NULL || ctx == NULL) rc = sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
    for (uint32_t counter = 1; rc == SP_OK && (size_t)(counter - 1) * sizeof block < out_len; counter++) {
        uint8_t c[4];
        unsigned int n = 0;
        sp_keyx_put_be32(c, counter);
        if (EVP_DigestInit_ex2(ctx, sha256, NULL) != 1 || EVP_DigestUpdate(ctx, c, sizeof c) != 1 ||
            EVP_DigestUpdate(ctx, z, z_len) != 1 || EVP_DigestUpdate(ctx, info, at) != 1 ||
            EVP_DigestFinal_ex(ctx, block, &n) != 1 || n != sizeof block) {
            rc = sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
            break;
        }
        size_t off = (size_t)(counter - 1) * sizeof block;
        size_t take = out_len - off < sizeof block ? out_len - off : sizeof block;
        memcpy(out + off, block, take);
    }
    sp_wipe(block, sizeof block);
    EVP_MD_CTX_free(ctx); /* cleans the hash state, which saw Z */
    EVP_MD_free(sha256);
    if (rc != SP_OK) sp_wipe(out, out_len);
    return rc;
}

/* The key-encryption key for ECDH-ES+A256KW, apu and apv empty. */
static sp_error sp_keyx_ecdh_kek(EVP_PKEY *own, EVP_PKEY *peer, uint8_t kek[SP_KEY_BYTES]) {
    uint8_t z[SP_KEYX_COORD_BYTES];
    sp_error rc = sp_keyx_ecdh(own, peer, z);
    if (rc == SP_OK) rc = sp_keyx_concat_kdf(z, sizeof z, SP_KEYX_ALG_ECDH_ES_A256KW, NULL, 0, NULL, 0, kek,
                                             SP_KEY_BYTES);
    sp_wipe(z, sizeof z);
    return rc;
}

/* x and y of an EC public key, each left-padded to 32 bytes. */
static sp_error sp_keyx_ec_coords(EVP_PKEY *pk, uint8_t x[SP_KEYX_COORD_BYTES], uint8_t y[SP_KEYX_COORD_BYTES]) {
    BIGNUM *bx = NULL, *by = NULL;
    sp_error rc = SP_OK;
    if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1 ||
        BN_bn2binpad(bx, x, SP_KEYX_COORD_BYTES) != SP_KEYX_COORD_BYTES ||
        BN_bn2binpad(by, y, SP_KEYX_COORD_BYTES) != SP_KEYX_COORD_BYTES) {
        rc = sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
    }
    BN_free(bx);
    BN_free(by);
    return rc;
}

/* A P-256 public key from its coordinates. OpenSSL refuses a point that is
 * not on the curve while importing it, and the explicit public check below
 * says so again, so an invalid-curve point never reaches the ECDH. */
static sp_error sp_keyx_ec_from_coords(const uint8_t x[SP_KEYX_COORD_BYTES], const uint8_t y[SP_KEYX_COORD_BYTES],
                                       EVP_PKEY **out) {
    uint8_t point[1 + 2 * SP_KEYX_COORD_BYTES];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, SP_KEYX_COORD_BYTES);
    memcpy(point + 1 + SP_KEYX_COORD_BYTES, y, SP_KEYX_COORD_BYTES);
    char group[] = SP_KEYX_CURVE;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL) return sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
    EVP_PKEY *pk = NULL;
    sp_error rc = SP_OK;
    if (EVP_PKEY_fromdata_init(ctx) != 1) rc = sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
    else if (EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1) rc = sp_keyx_ossl_error(SP_ERR_BAD_JWE);
    EVP_PKEY_CTX_free(ctx);
    if (rc == SP_OK) {
        EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
        if (check == NULL) rc = sp_keyx_ossl_error(SP_ERR_NO_MEMORY);
        else if (EVP_PKEY_public_check(check) != 1) rc = sp_keyx_ossl_error(SP_ERR_BAD_JWE);
        EVP_PKEY_CTX_free(check);
    }
    if (rc != SP_OK) {
        EVP_PKEY_free(pk);
        return rc;
    }
    *out = pk;
    return SP_OK;
}

/* ---- export ---- */

static sp_error sp_keyx_check_items(const sp_keyx_item *items, size_t n, int64_t now) {
    for (size_t i = 0; i < n; i++) {
        const sp_keyx_item *it = &items[i];
        SP_ENSURE(it->key != NULL && it->expires >= 0, SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(it->version[SP_KEY_VERSION_CHARS] == 0 && sp_uuid_is_valid(it->version, SP_KEY_VERSION_CHARS),
                  SP_ERR_BAD_UUID);
        SP_ENSURE(it->expires == 0 || it->expires > now, SP_ERR_KEY_RETIRED);
        for (size_t j = 0; j < i; j++) {
            SP_ENSURE(memcmp(items[j].version, it->version, SP_KEY_VERSION_CHARS) != 0, SP_ERR_INVALID_ARGUMENT);
        }
    }
    return SP_OK;
}

/* The JWK Set, written straight from the locked keys into one buffer that
 * the caller wipes and frees. */
static sp_error sp_keyx_jwks_write(const sp_keyx_item *items, size_t n, uint8_t **out, size_t *out_len,
                                   size_t *out_cap) {
    size_t cap = n * SP_KEYX_ENTRY_MAX + 16;
    uint8_t *buf = sp_malloc(cap);
    SP_ENSURE(buf != NULL, SP_ERR_NO_MEMORY);
    sp_wbuf b = sp_wbuf_of(buf, cap);
    sp_error rc = sp_wbuf_put_str(&b, "{\"keys\":[");
    for (size_t i = 0; i < n && rc == SP_OK; i++) {
        if (i > 0) rc = sp_wbuf_put_str(&b, ",");
        if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "{\"kty\":\"oct\",\"kid\":\"");
        if (rc == SP_OK) rc = sp_wbuf_put(&b, items[i].version, SP_KEY_VERSION_CHARS);
        if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "\",\"k\":\"");
        if (rc == SP_OK) rc = sp_wbuf_put_b64(&b, sp_key_bytes(items[i].key), SP_KEY_BYTES, true);
        if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "\",\"alg\":\"" SP_KEYX_ENC "\",\"exp\":");
        if (rc == SP_OK) rc = sp_wbuf_put_u64(&b, (uint64_t)items[i].expires);
        if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "}");
    }
    if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "]}");
    if (rc != SP_OK) {
        sp_free_wiped(buf, cap);
        return rc == SP_ERR_BUFFER_TOO_SMALL ? SP_ERR_CRYPTO_BACKEND : rc; /* the bound above is wrong */
    }
    *out = buf;
    *out_len = b.len;
    *out_cap = cap;
    return SP_OK;
}

/* The protected header. The ephemeral key's coordinates are public. */
static sp_error sp_keyx_header_write(sp_keyx_kind kind, EVP_PKEY *epk, char *buf, size_t cap, size_t *len) {
    sp_wbuf b = sp_wbuf_of(buf, cap);
    if (kind == SP_KEYX_RSA) {
        SP_GUARD(sp_wbuf_put_str(&b, "{\"alg\":\"" SP_KEYX_ALG_RSA_OAEP_256 "\",\"enc\":\"" SP_KEYX_ENC
                                     "\",\"cty\":\"" SP_KEYX_CTY "\"}"));
    } else {
        uint8_t x[SP_KEYX_COORD_BYTES], y[SP_KEYX_COORD_BYTES];
        SP_GUARD(sp_keyx_ec_coords(epk, x, y));
        SP_GUARD(sp_wbuf_put_str(&b, "{\"alg\":\"" SP_KEYX_ALG_ECDH_ES_A256KW "\",\"enc\":\"" SP_KEYX_ENC
                                     "\",\"cty\":\"" SP_KEYX_CTY "\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
                                     "\"x\":\""));
        SP_GUARD(sp_wbuf_put_b64(&b, x, sizeof x, true));
        SP_GUARD(sp_wbuf_put_str(&b, "\",\"y\":\""));
        SP_GUARD(sp_wbuf_put_b64(&b, y, sizeof y, true));
        SP_GUARD(sp_wbuf_put_str(&b, "\"}}"));
    }
    *len = b.len;
    return SP_OK;
}

/* Wraps the content key for the recipient; for ECDH also makes the
 * ephemeral key the header carries. */
static sp_error sp_keyx_wrap_cek(sp_keyx_kind kind, EVP_PKEY *peer, const uint8_t cek[SP_KEYX_CEK_BYTES],
                                 uint8_t *ek, size_t ek_cap, size_t *ek_len, EVP_PKEY **epk) {
    if (kind == SP_KEYX_RSA) return sp_keyx_rsa_oaep(peer, true, cek, SP_KEYX_CEK_BYTES, ek, ek_cap, ek_len);
    EVP_PKEY *eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (eph == NULL) return sp_keyx_ossl_error(SP_ERR_CRYPTO_BACKEND);
    uint8_t kek[SP_KEY_BYTES];
    sp_error rc = sp_keyx_ecdh_kek(eph, peer, kek);
    if (rc == SP_OK) rc = sp_aes_key_wrap(kek, sizeof kek, false, cek, SP_KEYX_CEK_BYTES, ek, ek_cap, ek_len);
    sp_wipe(kek, sizeof kek);
    if (rc != SP_OK) {
        EVP_PKEY_free(eph);
        return rc;
    }
    *epk = eph;
    return SP_OK;
}

/* The recipient's key, and the algorithm: the one asked for, which must fit
 * the key, or the one the key allows. */
static sp_error sp_keyx_recipient(const char *pem, size_t pem_len, const char *alg, EVP_PKEY **peer,
                                  sp_keyx_kind *kind) {
    sp_keyx_kind want = SP_KEYX_NONE;
    if (alg != NULL) {
        if (strcmp(alg, SP_KEYX_ALG_RSA_OAEP_256) == 0) want = SP_KEYX_RSA;
        else if (strcmp(alg, SP_KEYX_ALG_ECDH_ES_A256KW) == 0) want = SP_KEYX_ECDH;
        else return SP_ERR_UNKNOWN_ALGORITHM;
    }
    SP_GUARD(sp_keyx_load_pem(pem, pem_len, false, peer, kind));
    if (want != SP_KEYX_NONE && want != *kind) {
        EVP_PKEY_free(*peer);
        *peer = NULL;
        return SP_ERR_INVALID_ARGUMENT;
    }
    return SP_OK;
}

/* Any plaintext as a compact JWE to peer: what export does once the JWK Set
 * is written. */
static sp_error sp_keyx_seal(EVP_PKEY *peer, sp_keyx_kind kind, const uint8_t *plain, size_t plain_len, char *out,
                             size_t cap, size_t *out_len) {
    sp_error rc = SP_OK;
    EVP_PKEY *epk = NULL;
    sp_key *cek = NULL;
    sp_cipher *gcm = NULL;
    uint8_t *sealed = NULL;
    uint8_t ek[SP_KEYX_MAX_EK_BYTES], iv[SP_GCM_IV_BYTES];
    size_t ek_len = 0, header_len = 0, sealed_len = 0;
    char header[SP_KEYX_MAX_HEADER];
    SP_ENSURE(plain_len <= SP_KEYX_MAX_JWE_BYTES, SP_ERR_TOO_LARGE);

    SP_GUARD_GOTO(sp_key_generate(&cek), rc, done);
    SP_GUARD_GOTO(sp_keyx_wrap_cek(kind, peer, sp_key_bytes(cek), ek, sizeof ek, &ek_len, &epk), rc, done);
    SP_GUARD_GOTO(sp_keyx_header_write(kind, epk, header, sizeof header, &header_len), rc, done);
    SP_GUARD_GOTO(sp_random(iv, sizeof iv), rc, done);

    /* header.encrypted_key.iv. come first, so the AAD (the base64url header)
     * is already sitting at the start of out */
    sp_wbuf o = sp_wbuf_of(out, cap);
    SP_GUARD_GOTO(sp_wbuf_put_b64(&o, (const uint8_t *)header, header_len, true), rc, done);
    size_t aad_len = o.len;
    SP_GUARD_GOTO(sp_wbuf_put_str(&o, "."), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_b64(&o, ek, ek_len, true), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_str(&o, "."), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_b64(&o, iv, sizeof iv, true), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_str(&o, "."), rc, done);

    sealed = sp_malloc(plain_len + SP_GCM_TAG_BYTES);
    SP_ENSURE_GOTO(sealed != NULL, SP_ERR_NO_MEMORY, rc, done);
    SP_GUARD_GOTO(sp_cipher_new_raw(SP_AES_GCM, sp_key_bytes(cek), SP_KEY_BYTES, &gcm), rc, done);
    SP_GUARD_GOTO(sp_cipher_run(gcm, true, iv, sizeof iv, (const uint8_t *)out, aad_len, plain, plain_len,
                                SP_GCM_TAG_BYTES, sealed, plain_len + SP_GCM_TAG_BYTES, &sealed_len),
                  rc, done);
    SP_ENSURE_GOTO(sealed_len == plain_len + SP_GCM_TAG_BYTES, SP_ERR_CRYPTO_BACKEND, rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_b64(&o, sealed, plain_len, true), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_str(&o, "."), rc, done);
    SP_GUARD_GOTO(sp_wbuf_put_b64(&o, sealed + plain_len, SP_GCM_TAG_BYTES, true), rc, done);
    SP_GUARD_GOTO(sp_wbuf_terminate(&o), rc, done);
    *out_len = o.len;
done:
    sp_free(sealed); /* ciphertext only */
    sp_cipher_free(gcm);
    sp_key_free(cek);
    EVP_PKEY_free(epk);
    return rc;
}

sp_error sp_keyx_seal_plaintext(const uint8_t *plain, size_t plain_len, const char *pem, size_t pem_len,
                                const char *alg, char *out, size_t cap, size_t *out_len) {
    SP_ENSURE(plain != NULL && pem != NULL && out != NULL && out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    SP_GUARD(sp_init());
    EVP_PKEY *peer = NULL;
    sp_keyx_kind kind = SP_KEYX_NONE;
    SP_GUARD(sp_keyx_recipient(pem, pem_len, alg, &peer, &kind));
    sp_error rc = sp_keyx_seal(peer, kind, plain, plain_len, out, cap, out_len);
    EVP_PKEY_free(peer);
    if (rc != SP_OK) {
        if (cap > 0) out[0] = 0;
        ERR_clear_error();
    }
    return rc;
}

sp_error sp_keyx_export_at(const sp_keyx_item *items, size_t n, const char *pem, size_t pem_len, const char *alg,
                           char *out, size_t cap, size_t *out_len, int64_t now) {
    SP_ENSURE(items != NULL && pem != NULL && out != NULL && out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    SP_ENSURE(n >= 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n <= SP_KEYX_MAX_ITEMS, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_init());
    SP_GUARD(sp_keyx_check_items(items, n, now));
    EVP_PKEY *peer = NULL;
    sp_keyx_kind kind = SP_KEYX_NONE;
    SP_GUARD(sp_keyx_recipient(pem, pem_len, alg, &peer, &kind));
    uint8_t *plain = NULL;
    size_t plain_len = 0, plain_cap = 0;
    sp_error rc = sp_keyx_jwks_write(items, n, &plain, &plain_len, &plain_cap);
    if (rc == SP_OK) rc = sp_keyx_seal(peer, kind, plain, plain_len, out, cap, out_len);
    if (plain != NULL) sp_free_wiped(plain, plain_cap);
    EVP_PKEY_free(peer);
    if (rc != SP_OK) {
        *out_len = 0;
        if (cap > 0) out[0] = 0;
        ERR_clear_error();
    }
    return rc;
}

sp_error sp_keyx_export(const sp_keyx_item *items, size_t n, const char *recipient_public_pem, size_t pem_len,
                        const char *alg, char *out, size_t cap, size_t *out_len) {
    return sp_keyx_export_at(items, n, recipient_public_pem, pem_len, alg, out, cap, out_len, sp_now_seconds());
}

/* ---- import ---- */

void sp_keyx_items_free(sp_keyx_item *items, size_t n) {
    if (items == NULL) return;
    for (size_t i = 0; i < n; i++) {
        sp_key_free(items[i].key);
        memset(&items[i], 0, sizeof items[i]);
    }
}

static bool sp_keyx_json_is(json_t *v, const char *want) {
    return json_is_string(v) && json_string_length(v) == strlen(want) && strcmp(json_string_value(v), want) == 0;
}

/* A base64url member of exactly `len` decoded bytes. */
static bool sp_keyx_json_b64(json_t *v, uint8_t *out, size_t len) {
    size_t got = 0;
    if (!json_is_string(v)) return false;
    if (sp_b64_decode(json_string_value(v), json_string_length(v), out, len, &got, true) != SP_OK) return false;
    return got == len;
}

/* What the protected header asks for. */
typedef struct sp_keyx_header {
    sp_keyx_kind kind;
    EVP_PKEY *epk; /* ECDH only */
} sp_keyx_header;

static sp_error sp_keyx_epk_read(json_t *epk, EVP_PKEY **out) {
    uint8_t x[SP_KEYX_COORD_BYTES], y[SP_KEYX_COORD_BYTES];
    /* a "d" would be a private key someone published: refuse, use nothing */
    SP_ENSURE(json_is_object(epk) && sp_keyx_json_is(json_object_get(epk, "kty"), "EC") &&
                  sp_keyx_json_is(json_object_get(epk, "crv"), "P-256") && json_object_get(epk, "d") == NULL,
              SP_ERR_BAD_JWE);
    SP_ENSURE(sp_keyx_json_b64(json_object_get(epk, "x"), x, sizeof x) &&
                  sp_keyx_json_b64(json_object_get(epk, "y"), y, sizeof y),
              SP_ERR_BAD_JWE);
    return sp_keyx_ec_from_coords(x, y, out);
}

/* apu/apv would enter the KDF; the profile fixes them empty, so only an
 * absent or empty member is accepted. */
static bool sp_keyx_party_info_empty(json_t *root, const char *name) {
    json_t *v = json_object_get(root, name);
    return v == NULL || sp_keyx_json_is(v, "");
}

static sp_error sp_keyx_header_read(const uint8_t *b64, size_t b64_len, sp_keyx_header *h) {
    uint8_t json[SP_KEYX_MAX_HEADER];
    size_t len = 0;
    SP_ENSURE(sp_b64_decode((const char *)b64, b64_len, json, sizeof json, &len, true) == SP_OK, SP_ERR_BAD_JWE);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) return json_error_code(&jerr) == json_error_out_of_memory ? SP_ERR_NO_MEMORY : SP_ERR_BAD_JWE;
    sp_error rc = SP_OK;
    json_t *alg = json_object_get(root, "alg"), *cty = json_object_get(root, "cty");
    SP_ENSURE_GOTO(json_is_object(root) && sp_keyx_json_is(json_object_get(root, "enc"), SP_KEYX_ENC), SP_ERR_BAD_JWE,
                   rc, done);
    /* zip would decompress before we could bound the plaintext; crit names
     * extensions we would have to understand and do not */
    SP_ENSURE_GOTO(json_object_get(root, "zip") == NULL && json_object_get(root, "crit") == NULL, SP_ERR_BAD_JWE, rc,
                   done);
    SP_ENSURE_GOTO(cty == NULL || sp_keyx_json_is(cty, SP_KEYX_CTY) || sp_keyx_json_is(cty, SP_KEYX_CTY_LONG),
                   SP_ERR_BAD_JWE, rc, done);
    json_t *epk = json_object_get(root, "epk");
    if (sp_keyx_json_is(alg, SP_KEYX_ALG_RSA_OAEP_256)) {
        SP_ENSURE_GOTO(epk == NULL && json_object_get(root, "apu") == NULL && json_object_get(root, "apv") == NULL,
                       SP_ERR_BAD_JWE, rc, done);
        h->kind = SP_KEYX_RSA;
    } else if (sp_keyx_json_is(alg, SP_KEYX_ALG_ECDH_ES_A256KW)) {
        SP_ENSURE_GOTO(sp_keyx_party_info_empty(root, "apu") && sp_keyx_party_info_empty(root, "apv"), SP_ERR_BAD_JWE,
                       rc, done);
        SP_GUARD_GOTO(sp_keyx_epk_read(epk, &h->epk), rc, done);
        h->kind = SP_KEYX_ECDH;
    } else {
        rc = SP_ERR_BAD_JWE;
    }
done:
    json_decref(root);
    return rc;
}

/* The content key, or SP_ERR_AUTH. The header has already been checked;
 * only now is the private key used. */
static sp_error sp_keyx_unwrap_cek(const sp_keyx_header *h, EVP_PKEY *own, sp_keyx_kind own_kind, const uint8_t *ek,
                                   size_t ek_len, uint8_t cek[SP_KEYX_CEK_BYTES]) {
    /* a JWE for another kind of key cannot be for us */
    SP_ENSURE(h->kind == own_kind, SP_ERR_AUTH);
    if (h->kind == SP_KEYX_RSA) {
        uint8_t buf[SP_KEYX_MAX_EK_BYTES];
        size_t n = 0;
        sp_error rc = SP_ERR_AUTH;
        if (ek_len == (size_t)EVP_PKEY_get_size(own))
            rc = sp_keyx_rsa_oaep(own, false, ek, ek_len, buf, sizeof buf, &n);
        if (rc == SP_OK && n == SP_KEYX_CEK_BYTES) memcpy(cek, buf, SP_KEYX_CEK_BYTES);
        sp_wipe(buf, sizeof buf);
        if (rc == SP_ERR_NO_MEMORY) return rc;
        if (rc == SP_OK && n == SP_KEYX_CEK_BYTES) return SP_OK;
        /* RFC 7516 11.5: carry on with a random key, so the content
         * decryption fails the same way a bad tag does */
        SP_GUARD(sp_random(cek, SP_KEYX_CEK_BYTES));
        return SP_ERR_AUTH;
    }
    SP_ENSURE(ek_len == SP_KEYX_WRAPPED_BYTES, SP_ERR_AUTH);
    uint8_t kek[SP_KEY_BYTES], buf[SP_KEYX_WRAPPED_BYTES];
    size_t n = 0;
    sp_error rc = sp_keyx_ecdh_kek(own, h->epk, kek);
    if (rc == SP_ERR_CRYPTO_BACKEND) rc = SP_ERR_AUTH; /* a peer point OpenSSL would not use */
    if (rc == SP_OK) rc = sp_aes_key_unwrap(kek, sizeof kek, false, ek, ek_len, buf, sizeof buf, &n);
    if (rc == SP_OK && n != SP_KEYX_CEK_BYTES) rc = SP_ERR_AUTH;
    if (rc == SP_OK) memcpy(cek, buf, SP_KEYX_CEK_BYTES);
    sp_wipe(kek, sizeof kek);
    sp_wipe(buf, sizeof buf);
    return rc;
}

/* One JWK of the set, checked before its key is copied to locked memory. */
static sp_error sp_keyx_jwk_read(json_t *jwk, int64_t now, sp_keyx_item *item) {
    SP_ENSURE(json_is_object(jwk) && sp_keyx_json_is(json_object_get(jwk, "kty"), "oct"), SP_ERR_BAD_JSON);
    json_t *kid = json_object_get(jwk, "kid"), *exp = json_object_get(jwk, "exp");
    json_t *alg = json_object_get(jwk, "alg"), *use = json_object_get(jwk, "use");
    SP_ENSURE(json_is_string(kid) && sp_uuid_is_valid(json_string_value(kid), json_string_length(kid)),
              SP_ERR_BAD_JSON);
    SP_ENSURE(alg == NULL || sp_keyx_json_is(alg, SP_KEYX_ENC), SP_ERR_BAD_JSON);
    SP_ENSURE(use == NULL || sp_keyx_json_is(use, "enc"), SP_ERR_BAD_JSON);
    /* whole seconds, as sealpost writes them; 0 is "no end date" */
    SP_ENSURE(json_is_integer(exp) && json_integer_value(exp) >= 0, SP_ERR_BAD_JSON);
    int64_t expires = (int64_t)json_integer_value(exp);
    uint8_t raw[SP_KEY_BYTES];
    bool ok = sp_keyx_json_b64(json_object_get(jwk, "k"), raw, sizeof raw);
    sp_error rc = ok ? SP_OK : SP_ERR_BAD_JSON;
    if (rc == SP_OK && expires != 0 && expires <= now) rc = SP_ERR_KEY_RETIRED;
    if (rc == SP_OK) rc = sp_key_new(raw, sizeof raw, &item->key);
    sp_wipe(raw, sizeof raw);
    SP_GUARD(rc);
    memcpy(item->version, json_string_value(kid), SP_KEY_VERSION_CHARS);
    item->version[SP_KEY_VERSION_CHARS] = 0;
    item->expires = expires;
    return SP_OK;
}

static sp_error sp_keyx_jwks_read(const uint8_t *plain, size_t len, int64_t now, sp_keyx_item *items, size_t max,
                                  size_t *count) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)plain, len, JSON_REJECT_DUPLICATES, &jerr);
    bool no_memory = root == NULL && json_error_code(&jerr) == json_error_out_of_memory;
    /* jansson quotes the text near a syntax error, which here may be key
     * material */
    sp_wipe(&jerr, sizeof jerr);
    SP_ENSURE(!no_memory, SP_ERR_NO_MEMORY);
    SP_ENSURE(root != NULL, SP_ERR_BAD_JSON);
    sp_error rc = SP_OK;
    size_t done_items = 0;
    json_t *keys = json_object_get(root, "keys");
    SP_ENSURE_GOTO(json_is_object(root) && json_is_array(keys) && json_array_size(keys) > 0, SP_ERR_BAD_JSON, rc,
                   done);
    size_t n = json_array_size(keys);
    SP_ENSURE_GOTO(n <= SP_KEYX_MAX_ITEMS, SP_ERR_TOO_LARGE, rc, done);
    SP_ENSURE_GOTO(n <= max, SP_ERR_BUFFER_TOO_SMALL, rc, done);
    for (size_t i = 0; i < n; i++) {
        sp_keyx_item it;
        memset(&it, 0, sizeof it);
        SP_GUARD_GOTO(sp_keyx_jwk_read(json_array_get(keys, i), now, &it), rc, done);
        for (size_t j = 0; j < i && rc == SP_OK; j++) {
            if (memcmp(items[j].version, it.version, SP_KEY_VERSION_CHARS) == 0) rc = SP_ERR_BAD_JSON;
        }
        if (rc != SP_OK) {
            sp_keyx_items_free(&it, 1);
            goto done;
        }
        items[i] = it;
        done_items = i + 1;
    }
    *count = n;
done:
    json_decref(root); /* the wiping allocator clears the "k" strings */
    if (rc != SP_OK) sp_keyx_items_free(items, done_items);
    return rc;
}

/* The five parts of a compact JWE, each non-empty and base64url. */
static sp_error sp_keyx_split(const char *jwe, size_t len, sp_span parts[5]) {
    sp_cursor c = sp_cursor_of(jwe, len);
    for (size_t i = 0; i < 4; i++) SP_ENSURE(sp_cursor_take_until(&c, '.', &parts[i]), SP_ERR_BAD_JWE);
    parts[4] = sp_cursor_rest(&c);
    for (size_t i = 0; i < 5; i++) {
        SP_ENSURE(parts[i].len > 0 && sp_b64_alphabet_ok((const char *)parts[i].data, parts[i].len, true),
                  SP_ERR_BAD_JWE);
    }
    return SP_OK;
}

static sp_error sp_keyx_decode(sp_span part, uint8_t *out, size_t cap, size_t *len) {
    sp_error rc = sp_b64_decode((const char *)part.data, part.len, out, cap, len, true);
    return rc == SP_OK ? SP_OK : SP_ERR_BAD_JWE;
}

sp_error sp_keyx_import_at(const char *jwe, size_t len, const char *pem, size_t pem_len, sp_keyx_item *items,
                           size_t max, size_t *n, int64_t now) {
    SP_ENSURE(jwe != NULL && pem != NULL && items != NULL && n != NULL, SP_ERR_INVALID_ARGUMENT);
    *n = 0;
    SP_ENSURE(len <= SP_KEYX_MAX_JWE_BYTES, SP_ERR_TOO_LARGE);
    SP_GUARD(sp_init());
    EVP_PKEY *own = NULL;
    sp_keyx_kind own_kind = SP_KEYX_NONE;
    SP_GUARD(sp_keyx_load_pem(pem, pem_len, true, &own, &own_kind));

    sp_error rc = SP_OK;
    sp_keyx_header h = {SP_KEYX_NONE, NULL};
    sp_span parts[5];
    uint8_t ek[SP_KEYX_MAX_EK_BYTES], iv[SP_GCM_IV_BYTES + 3], cek[SP_KEYX_CEK_BYTES];
    size_t ek_len = 0, iv_len = 0, ct_len = 0, tag_len = 0, plain_len = 0, sealed_cap = 0;
    uint8_t *sealed = NULL, *plain = NULL;
    sp_cipher *gcm = NULL;
    bool cek_bad = false;

    SP_GUARD_GOTO(sp_keyx_split(jwe, len, parts), rc, done);
    SP_ENSURE_GOTO(parts[0].len <= sp_b64_encoded_len(SP_KEYX_MAX_HEADER, true), SP_ERR_BAD_JWE, rc, done);
    SP_GUARD_GOTO(sp_keyx_header_read(parts[0].data, parts[0].len, &h), rc, done);
    SP_GUARD_GOTO(sp_keyx_decode(parts[1], ek, sizeof ek, &ek_len), rc, done);
    SP_GUARD_GOTO(sp_keyx_decode(parts[2], iv, sizeof iv, &iv_len), rc, done);
    SP_ENSURE_GOTO(iv_len == SP_GCM_IV_BYTES, SP_ERR_BAD_JWE, rc, done);
    /* ciphertext and tag side by side, as sp_cipher_run takes them */
    sealed_cap = sp_b64_decoded_max(parts[3].len) + SP_GCM_TAG_BYTES + 3;
    sealed = sp_malloc(sealed_cap);
    SP_ENSURE_GOTO(sealed != NULL, SP_ERR_NO_MEMORY, rc, done);
    SP_GUARD_GOTO(sp_keyx_decode(parts[3], sealed, sealed_cap, &ct_len), rc, done);
    SP_GUARD_GOTO(sp_keyx_decode(parts[4], sealed + ct_len, sealed_cap - ct_len, &tag_len), rc, done);
    SP_ENSURE_GOTO(tag_len == SP_GCM_TAG_BYTES, SP_ERR_BAD_JWE, rc, done);

    rc = sp_keyx_unwrap_cek(&h, own, own_kind, ek, ek_len, cek);
    if (rc == SP_ERR_AUTH && h.kind == SP_KEYX_RSA && own_kind == SP_KEYX_RSA) {
        cek_bad = true; /* cek is random: go on, fail at the tag */
        rc = SP_OK;
    }
    SP_GUARD_GOTO(rc, rc, done);
    plain = sp_malloc(ct_len);
    SP_ENSURE_GOTO(plain != NULL, SP_ERR_NO_MEMORY, rc, done);
    SP_GUARD_GOTO(sp_cipher_new_raw(SP_AES_GCM, cek, sizeof cek, &gcm), rc, done);
    SP_GUARD_GOTO(sp_cipher_run(gcm, false, iv, iv_len, parts[0].data, parts[0].len, sealed, ct_len + tag_len,
                                SP_GCM_TAG_BYTES, plain, ct_len, &plain_len),
                  rc, done);
    SP_ENSURE_GOTO(!cek_bad, SP_ERR_AUTH, rc, done);
    SP_GUARD_GOTO(sp_keyx_jwks_read(plain, plain_len, now, items, max, n), rc, done);
done:
    sp_wipe(cek, sizeof cek);
    if (plain != NULL) sp_free_wiped(plain, ct_len);
    sp_free(sealed);
    sp_cipher_free(gcm);
    EVP_PKEY_free(h.epk);
    EVP_PKEY_free(own);
    if (rc != SP_OK) {
        *n = 0;
        ERR_clear_error();
    }
    return rc;
}

sp_error sp_keyx_import(const char *jwe, size_t len, const char *private_pem, size_t pem_len, sp_keyx_item *items,
                        size_t max, size_t *n) {
    return sp_keyx_import_at(jwe, len, private_pem, pem_len, items, max, n, sp_now_seconds());
}
