/*
 * Fuzz target for the whole receive path, sp_open: headers, timestamp,
 * signature, body parsing, decoding and decryption, as a provider's request
 * reaches it.
 *
 * Input layout (fuzz/corpus/fuzz_open/ holds examples, fuzz/make-corpus.sh
 * makes the valid ones):
 *
 *   byte 0        mode, see below
 *   header lines  "name: value\n" (one optional space after the colon)
 *                 until an empty line; a line without a colon is a header
 *                 with that name and an empty value
 *   the rest      the raw body
 *
 * A random body almost never carries a valid HMAC, so on its own the fuzzer
 * would stop at the signature check and never reach the body parsers and
 * ciphers behind it. Mode bit 0x80 therefore makes the harness sign the
 * body itself, over the fuzzed webhook-id and webhook-timestamp, with one of
 * the signing keys of the fixed key set below, chosen by the low three bits:
 * bit 2 picks the key version, bits 0-1 the derivation (CBC, GCM, CTR, JWE).
 * The signature replaces the value of the first webhook-signature header
 * (or is added as one); with bit 0x20 it is appended to that value instead,
 * after a space, so the multi-entry parser is exercised with a valid entry.
 * Bit 0x40 opens with a second key set with tight limits (256-byte bodies,
 * 1 s tolerance), so the limit checks see both sides of their boundary.
 *
 * The signing keys are derived here from the spec (HKDF-SHA256, salt
 * "sealpost/webhook/v1", info "<version>|<ALG>") with OpenSSL directly and
 * compared once, at start-up, with what sp_wire_signing_secret publishes, so
 * the harness also checks the library's derivation.
 *
 * Properties checked on every input, beyond memory safety and leaks:
 *  - the error code is one data can produce (no INVALID_ARGUMENT,
 *    BUFFER_TOO_SMALL with the documented out_cap, CRYPTO_BACKEND ...);
 *  - on failure, out holds nothing but the harness's fill byte or zeros:
 *    "out is wiped on failure", so no partial plaintext (CBC blocks before a
 *    bad padding, GCM output before the tag check) is left behind;
 *  - on success, out_len <= body_len and sp_opened is sane: one of our
 *    versions, a known profile and algorithm (JWE only with GCM), a valid
 *    message id, a timestamp within tolerance of `now`;
 *  - on success with a harness signature (replace mode), the message was
 *    opened with exactly the version, profile and algorithm whose key
 *    signed it: a signature under the CBC key must not open a GCM message,
 *    nor one version's signature another version's message.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include "fuzz_util.h"

#include "core/sp_core.h"
#include "wire/sp_wire_internal.h"

#define FUZZ_NOW INT64_C(1700000000)
#define FUZZ_MAX_HEADERS 16
#define FUZZ_FILL 0xa5
#define FUZZ_TIGHT_MAX_BODY 256
#define FUZZ_TIGHT_TOLERANCE 1

#define FUZZ_MODE_SIGN 0x80
#define FUZZ_MODE_TIGHT 0x40
#define FUZZ_MODE_APPEND 0x20

/* The fixed key set; fuzz/make-corpus.sh writes the same keys into the key
 * file it seals the seed messages with. Version 1 is active. */
static const char *const fuzz_versions[2] = {
    "1c0ffee0-5ea1-4b0d-8a11-000000000001",
    "1c0ffee0-5ea1-4b0d-8a11-000000000002",
};
static const uint8_t fuzz_key_first_byte[2] = {0x00, 0x20}; /* key i = first, first+1, ... */

/* The four derivations of one version, in mode-bit order. */
static const struct {
    sp_profile profile;
    sp_alg alg;
    const char *info_alg;
} fuzz_kinds[4] = {
    {SP_PROFILE_COMPAT, SP_ALG_AES_256_CBC, "AES-256-CBC"},
    {SP_PROFILE_COMPAT, SP_ALG_AES_256_GCM, "AES-256-GCM"},
    {SP_PROFILE_COMPAT, SP_ALG_AES_256_CTR, "AES-256-CTR"},
    {SP_PROFILE_JWE, SP_ALG_AES_256_GCM, SP_JWE_SIGNING_ALG},
};

static sp_wire *fuzz_wire;
static bool fuzz_verbose; /* FUZZ_OPEN_VERBOSE=1: print each result, to check seeds */
static sp_wire *fuzz_wire_tight;
static uint8_t fuzz_signing_keys[2][4][SP_HMAC_SHA256_BYTES];

static void fuzz_key_bytes(size_t v, uint8_t out[SP_KEY_BYTES]) {
    for (size_t i = 0; i < SP_KEY_BYTES; i++) out[i] = (uint8_t)(fuzz_key_first_byte[v] + i);
}

/* HKDF straight from the spec, independent of the library's cipher layer. */
static void fuzz_spec_signing_key(size_t v, size_t k, uint8_t out[SP_HMAC_SHA256_BYTES]) {
    uint8_t ikm[SP_KEY_BYTES];
    fuzz_key_bytes(v, ikm);
    char info[128];
    int info_len = snprintf(info, sizeof info, "%s|%s", fuzz_versions[v], fuzz_kinds[k].info_alg);
    FUZZ_CHECK(info_len > 0 && (size_t)info_len < sizeof info);
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    FUZZ_CHECK(kdf != NULL);
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    FUZZ_CHECK(ctx != NULL);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm, sizeof ikm),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (char *)SP_WIRE_SALT, strlen(SP_WIRE_SALT)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, (size_t)info_len),
        OSSL_PARAM_construct_end(),
    };
    FUZZ_CHECK(EVP_KDF_derive(ctx, out, SP_HMAC_SHA256_BYTES, params) == 1);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
}

static sp_wire *fuzz_make_wire(size_t max_body, uint32_t tolerance) {
    sp_wire *wire = NULL;
    FUZZ_CHECK(sp_wire_new(&wire) == SP_OK);
    for (size_t v = 0; v < 2; v++) {
        uint8_t bytes[SP_KEY_BYTES];
        fuzz_key_bytes(v, bytes);
        sp_key *key = NULL;
        FUZZ_CHECK(sp_key_new(bytes, sizeof bytes, &key) == SP_OK);
        FUZZ_CHECK(sp_wire_add_key(wire, fuzz_versions[v], key, v == 0) == SP_OK);
        sp_key_free(key);
    }
    FUZZ_CHECK(sp_wire_set_limits(wire, max_body, tolerance) == SP_OK);
    return wire;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_library();
    fuzz_verbose = getenv("FUZZ_OPEN_VERBOSE") != NULL;
    fuzz_wire = fuzz_make_wire(SP_WIRE_DEFAULT_MAX_BODY, SP_WIRE_DEFAULT_TOLERANCE_S);
    fuzz_wire_tight = fuzz_make_wire(FUZZ_TIGHT_MAX_BODY, FUZZ_TIGHT_TOLERANCE);
    for (size_t v = 0; v < 2; v++) {
        for (size_t k = 0; k < 4; k++) {
            fuzz_spec_signing_key(v, k, fuzz_signing_keys[v][k]);
            /* the published secret must be "whsec_" + base64 of the same key */
            char secret[64];
            FUZZ_CHECK(sp_wire_signing_secret(fuzz_wire, fuzz_versions[v], fuzz_kinds[k].profile,
                                              fuzz_kinds[k].alg, secret, sizeof secret) == SP_OK);
            FUZZ_CHECK(strncmp(secret, "whsec_", 6) == 0);
            uint8_t published[SP_HMAC_SHA256_BYTES + 3];
            size_t published_len = 0;
            FUZZ_CHECK(sp_b64_decode(secret + 6, strlen(secret + 6), published, sizeof published,
                                     &published_len, false) == SP_OK);
            if (published_len != SP_HMAC_SHA256_BYTES ||
                memcmp(published, fuzz_signing_keys[v][k], SP_HMAC_SHA256_BYTES) != 0) {
                fprintf(stderr, "fuzz: signing secret of %s|%s differs from the spec's HKDF\n",
                        fuzz_versions[v], fuzz_kinds[k].info_alg);
                abort();
            }
        }
    }
    return 0;
}

/* ---- input decoding ---- */

typedef struct fuzz_message {
    sp_header headers[FUZZ_MAX_HEADERS + 1]; /* +1 for the harness's signature */
    size_t n_headers;
    uint8_t *body;
    size_t body_len;
} fuzz_message;

static void fuzz_add_header(fuzz_message *m, const uint8_t *name, size_t name_len, const uint8_t *value,
                            size_t value_len) {
    sp_header *h = &m->headers[m->n_headers++];
    h->name = fuzz_dup(name, name_len);
    h->name_len = name_len;
    h->value = fuzz_dup(value, value_len);
    h->value_len = value_len;
}

static void fuzz_parse_input(const uint8_t *data, size_t size, fuzz_message *m) {
    size_t pos = 0;
    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t next = nl ? end + 1 : size;
        if (end == pos) { /* the empty line: the body follows */
            pos = next;
            break;
        }
        if (m->n_headers < FUZZ_MAX_HEADERS) {
            const uint8_t *colon = memchr(data + pos, ':', end - pos);
            if (colon == NULL) {
                fuzz_add_header(m, data + pos, end - pos, data + end, 0);
            } else {
                size_t c = (size_t)(colon - data), v = c + 1;
                if (v < end && data[v] == ' ') v++;
                fuzz_add_header(m, data + pos, c - pos, data + v, end - v);
            }
        }
        pos = next;
    }
    m->body_len = size - pos;
    m->body = fuzz_dup(data + pos, m->body_len);
}

static sp_header *fuzz_find_header(fuzz_message *m, const char *name) {
    for (size_t i = 0; i < m->n_headers; i++) {
        if (sp_ascii_ieq(m->headers[i].name, m->headers[i].name_len, name)) return &m->headers[i];
    }
    return NULL;
}

/* Signs the body as a sender holding signing key (v, k) would, over the
 * fuzzed id and timestamp, and puts "v1,<sig>" into webhook-signature. */
static void fuzz_sign(fuzz_message *m, size_t v, size_t k, bool append) {
    const sp_header *id = fuzz_find_header(m, "webhook-id");
    const sp_header *ts = fuzz_find_header(m, "webhook-timestamp");
    size_t id_len = id ? id->value_len : 0, ts_len = ts ? ts->value_len : 0;
    size_t msg_len = id_len + 1 + ts_len + 1 + m->body_len;
    uint8_t *msg = malloc(msg_len);
    FUZZ_CHECK(msg != NULL);
    if (id_len) memcpy(msg, id->value, id_len);
    msg[id_len] = '.';
    if (ts_len) memcpy(msg + id_len + 1, ts->value, ts_len);
    msg[id_len + 1 + ts_len] = '.';
    if (m->body_len) memcpy(msg + id_len + ts_len + 2, m->body, m->body_len);

    uint8_t mac[SP_HMAC_SHA256_BYTES];
    unsigned int mac_len = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), fuzz_signing_keys[v][k], SP_HMAC_SHA256_BYTES, msg, msg_len, mac,
                    &mac_len) != NULL);
    FUZZ_CHECK(mac_len == SP_HMAC_SHA256_BYTES);
    free(msg);

    char entry[3 + 45];
    size_t b64_len = 0;
    memcpy(entry, "v1,", 3);
    FUZZ_CHECK(sp_b64_encode(mac, sizeof mac, entry + 3, sizeof entry - 3, &b64_len, false) == SP_OK);
    size_t entry_len = 3 + b64_len;

    sp_header *sig = fuzz_find_header(m, "webhook-signature");
    if (sig == NULL) {
        fuzz_add_header(m, (const uint8_t *)"webhook-signature", 17, (const uint8_t *)entry, entry_len);
        return;
    }
    size_t keep = append ? sig->value_len + 1 : 0;
    char *value = malloc(keep + entry_len);
    FUZZ_CHECK(value != NULL);
    if (append) {
        if (sig->value_len) memcpy(value, sig->value, sig->value_len);
        value[sig->value_len] = ' ';
    }
    memcpy(value + keep, entry, entry_len);
    free((void *)sig->value);
    sig->value = value;
    sig->value_len = keep + entry_len;
}

static void fuzz_free_message(fuzz_message *m) {
    for (size_t i = 0; i < m->n_headers; i++) {
        free((void *)m->headers[i].name);
        free((void *)m->headers[i].value);
    }
    free(m->body);
}

/* ---- properties ---- */

static void fuzz_check_opened(const sp_opened *info, size_t out_len, size_t body_len, uint32_t tolerance) {
    FUZZ_CHECK(out_len <= body_len);
    FUZZ_CHECK(info->profile == SP_PROFILE_COMPAT || info->profile == SP_PROFILE_JWE);
    FUZZ_CHECK(info->alg == SP_ALG_AES_256_CBC || info->alg == SP_ALG_AES_256_GCM ||
               info->alg == SP_ALG_AES_256_CTR);
    FUZZ_CHECK(info->profile != SP_PROFILE_JWE || info->alg == SP_ALG_AES_256_GCM);
    FUZZ_CHECK(memchr(info->key_version, 0, sizeof info->key_version) != NULL);
    FUZZ_CHECK(strcmp(info->key_version, fuzz_versions[0]) == 0 ||
               strcmp(info->key_version, fuzz_versions[1]) == 0);
    FUZZ_CHECK(memchr(info->message_id, 0, sizeof info->message_id) != NULL);
    FUZZ_CHECK(sp_message_id_is_valid(info->message_id, strlen(info->message_id)));
    int64_t skew = info->timestamp - FUZZ_NOW;
    FUZZ_CHECK(skew >= -(int64_t)tolerance && skew <= (int64_t)tolerance);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t mode = data[0];
    fuzz_message m;
    memset(&m, 0, sizeof m);
    fuzz_parse_input(data + 1, size - 1, &m);

    bool sign = (mode & FUZZ_MODE_SIGN) != 0, append = (mode & FUZZ_MODE_APPEND) != 0;
    size_t v = (mode >> 2) & 1, k = mode & 3;
    if (sign) fuzz_sign(&m, v, k, append);

    bool tight = (mode & FUZZ_MODE_TIGHT) != 0;
    sp_wire *wire = tight ? fuzz_wire_tight : fuzz_wire;
    uint32_t tolerance = tight ? FUZZ_TIGHT_TOLERANCE : SP_WIRE_DEFAULT_TOLERANCE_S;

    /* the documented bound: out needs body_len bytes at most */
    uint8_t *out = fuzz_alloc(m.body_len);
    memset(out, FUZZ_FILL, m.body_len ? m.body_len : 1);
    size_t out_len = 0;
    sp_opened info;
    memset(&info, 0x5a, sizeof info);
    sp_error rc = sp_open(wire, m.headers, m.n_headers, m.body, m.body_len, FUZZ_NOW, out, m.body_len, &out_len,
                          &info);
    if (fuzz_verbose) fprintf(stderr, "fuzz_open: mode 0x%02x: %s\n", mode, sp_error_name(rc));
    FUZZ_CHECK_PLAUSIBLE(rc);
    if (rc == SP_OK) {
        fuzz_check_opened(&info, out_len, m.body_len, tolerance);
        if (sign && !append) {
            FUZZ_CHECK(strcmp(info.key_version, fuzz_versions[v]) == 0);
            FUZZ_CHECK(info.profile == fuzz_kinds[k].profile && info.alg == fuzz_kinds[k].alg);
        }
    } else {
        for (size_t i = 0; i < m.body_len; i++) FUZZ_CHECK(out[i] == FUZZ_FILL || out[i] == 0);
    }
    free(out);
    fuzz_free_message(&m);
    return 0;
}
