/*
 * The PKCS#11 KMS backend against a real token: SoftHSM2 in a temp
 * directory of its own (softhsm_util.h), driven only through the public
 * sp_kms API, with the token inspected directly over PKCS#11 where the
 * claim is about what is in the HSM (a master key that cannot leave it).
 *
 * For each mechanism (aes-kwp, aes-gcm, rsa-oaep): data keys round-trip,
 * tampered and foreign blobs are SP_ERR_AUTH, sp_kms_check names the token
 * and the mechanism. Then the refusals: wrong PIN (also while another
 * sp_kms holds the login), missing key without create=1, bad configs, and
 * master keys that are extractable or not sensitive. Then recovery: the
 * token's sessions closed behind the library's back, many threads at once,
 * and last the token disappearing, after which rsa-oaep still wraps (it
 * wraps on this host) but nothing unwraps.
 *
 * SoftHSM2 2.6 has no SHA-256 OAEP in the token, so rsa-oaep runs with
 * oaep-decode=host where the plain configuration is refused.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/softhsm_util.h"
#include "sp_test_util.h"

#include "kms/sp_kms.h"

#define TOKEN "sealpost-test"
#define OFFLINE_TOKEN "sealpost-offline"
#define PIN "1234"

static softhsm_env g_env;
static char g_pin_file[PATH_MAX];
static char g_wrong_pin_file[PATH_MAX];
static char g_offline_dir[PATH_MAX];
/* "" or ";oaep-decode=host", whichever this SoftHSM2 needs for rsa-oaep. */
static const char *g_oaep_extra = "";

static const char *const g_mechs[] = {"aes-kwp", "aes-gcm", "rsa-oaep"};

static void config(char *out, size_t cap, const char *token, const char *key, const char *mech, const char *pin_file,
                   const char *extra) {
    int n = snprintf(out, cap, "pkcs11:module=%s;token=%s;pin-file=%s;key=%s;mechanism=%s;retries=0%s%s",
                     SOFTHSM_MODULE, token, pin_file, key, mech, strcmp(mech, "rsa-oaep") == 0 ? g_oaep_extra : "",
                     extra);
    if (n < 0 || (size_t)n >= cap) fail_msg("config too long");
}

static sp_kms *open_ok(const char *token, const char *key, const char *mech, const char *extra) {
    char cfg[SP_KMS_MAX_CONFIG];
    config(cfg, sizeof cfg, token, key, mech, g_pin_file, extra);
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(cfg, &kms);
    if (rc != SP_OK) fail_msg("sp_kms_open(%s) gave %s", cfg, sp_error_name(rc));
    return kms;
}

static int group_setup(void **state) {
    (void)state;
    if (!softhsm_available()) {
        /* a missing HSM is a broken set-up, never a pass: bootstrap installs it */
        print_message("SoftHSM2 not installed (%s, %s; scripts/bootstrap installs it)\n", SOFTHSM_UTIL,
                      SOFTHSM_MODULE);
        return -1;
    }
    if (!softhsm_setup(&g_env)) return -1;
    if (!softhsm_init_token(&g_env, TOKEN, PIN, NULL, 0)) return -1;
    if (!softhsm_init_token(&g_env, OFFLINE_TOKEN, PIN, g_offline_dir, sizeof g_offline_dir)) return -1;
    if (!SOFTHSM_FMT(g_pin_file, "%s/pin", g_env.dir)) return -1;
    if (!SOFTHSM_FMT(g_wrong_pin_file, "%s/wrong-pin", g_env.dir)) return -1;
    if (!softhsm_write_file(g_pin_file, PIN "\n", 0600)) return -1;
    if (!softhsm_write_file(g_wrong_pin_file, "9999\n", 0600)) return -1;

    /* Which rsa-oaep this token can do: the plain configuration must either
     * work or be refused as a configuration problem, never half-work. */
    char cfg[SP_KMS_MAX_CONFIG];
    if (!SOFTHSM_FMT(cfg, "pkcs11:module=%s;token=%s;pin-file=%s;key=probe-rsa;mechanism=rsa-oaep;create=1",
                     SOFTHSM_MODULE, TOKEN, g_pin_file))
        return -1;
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(cfg, &kms);
    sp_kms_close(kms);
    if (rc == SP_ERR_BAD_CONFIG) {
        print_message("this token has no SHA-256 OAEP: rsa-oaep tests use oaep-decode=host\n");
        g_oaep_extra = ";oaep-decode=host";
    } else if (rc != SP_OK) {
        print_message("rsa-oaep probe gave %s\n", sp_error_name(rc));
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    softhsm_teardown(&g_env);
    return 0;
}

static int need_softhsm(void **state) {
    (void)state;
    if (!softhsm_available()) fail_msg("SoftHSM2 is not installed");
    return 0;
}

/* ---- round trips, per mechanism ---- */
static void roundtrip(const char *mech) {
    sp_kms *kms = open_ok(TOKEN, "master", mech, ";create=1");
    assert_string_equal(sp_kms_backend_name(kms), "pkcs11");
    assert_string_equal(sp_kms_key_id(kms), "pkcs11:" TOKEN "/master");

    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
    assert_true(sp_kms_owns(kms, blob, blob_len));
    sp_test_assert_unwraps_to(kms, blob, blob_len, dek);

    /* A key made elsewhere wraps too, and two wraps of one key differ
     * (random IV or OAEP seed) except for deterministic RFC 5649. */
    uint8_t blob2[SP_KMS_MAX_WRAPPED];
    size_t blob2_len = 0;
    assert_rc(sp_kms_wrap_key(kms, dek, blob2, sizeof blob2, &blob2_len), SP_OK);
    assert_int_equal(blob2_len, blob_len);
    if (strcmp(mech, "aes-kwp") == 0) assert_memory_equal(blob, blob2, blob_len);
    else assert_memory_not_equal(blob, blob2, blob_len);
    sp_test_assert_unwraps_to(kms, blob2, blob2_len, dek);

    /* Every byte of the payload matters; so do its length and the header. */
    sp_kms_blob parsed;
    assert_rc(sp_kms_blob_decode(blob, blob_len, &parsed), SP_OK);
    size_t payload_at = (size_t)(parsed.payload - blob);
    size_t positions[] = {payload_at, payload_at + parsed.payload_len / 2, blob_len - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        blob[positions[i]] ^= 0x01;
        assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_ERR_AUTH);
        assert_null(back);
        blob[positions[i]] ^= 0x01;
    }
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len - 1, &back), SP_ERR_AUTH);
    uint8_t mech_byte = blob[2];
    blob[2] = mech_byte == SP_KMS_MECH_RSA_OAEP_SHA256 ? SP_KMS_MECH_AES_GCM : SP_KMS_MECH_RSA_OAEP_SHA256;
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_ERR_AUTH);
    blob[2] = mech_byte;
    assert_null(back);

    char report[4096];
    assert_rc(sp_kms_check(kms, report, sizeof report), SP_OK);
    assert_non_null(strstr(report, "token: " TOKEN));
    assert_non_null(strstr(report, mech));
    assert_non_null(strstr(report, "non-extractable"));
    assert_non_null(strstr(report, "unwrap: ok"));
    sp_kms_close(kms);

    /* The key outlives the process's use of the module: reopened without
     * create=1 (the module finalized and initialized again), the same
     * master key opens the old blob. */
    kms = open_ok(TOKEN, "master", mech, "");
    sp_test_assert_unwraps_to(kms, blob, blob_len, dek);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_roundtrip_aes_kwp(void **state) {
    (void)state;
    roundtrip("aes-kwp");
}
static void test_roundtrip_aes_gcm(void **state) {
    (void)state;
    roundtrip("aes-gcm");
}
static void test_roundtrip_rsa_oaep(void **state) {
    (void)state;
    roundtrip("rsa-oaep");
}

/* One AES master key serves both AES mechanisms, so changing mechanism
 * does not strand old blobs; an RSA key with the same label is another key. */
static void test_mechanism_switch(void **state) {
    (void)state;
    sp_kms *gcm = open_ok(TOKEN, "master", "aes-gcm", ";create=1");
    sp_kms *kwp = open_ok(TOKEN, "master", "aes-kwp", "");
    sp_kms *rsa = open_ok(TOKEN, "master", "rsa-oaep", ";create=1");
    uint8_t blob[SP_KMS_MAX_WRAPPED], rblob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0, rblob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(gcm, &dek, blob, sizeof blob, &blob_len), SP_OK);
    sp_test_assert_unwraps_to(kwp, blob, blob_len, dek);
    assert_rc(sp_kms_unwrap_key(rsa, blob, blob_len, &back), SP_ERR_AUTH);
    assert_rc(sp_kms_wrap_key(rsa, dek, rblob, sizeof rblob, &rblob_len), SP_OK);
    assert_rc(sp_kms_unwrap_key(gcm, rblob, rblob_len, &back), SP_ERR_AUTH);
    assert_null(back);
    sp_key_free(dek);
    sp_kms_close(rsa);
    sp_kms_close(kwp);
    sp_kms_close(gcm);
}

/* What create=1 made, read from the token itself. */
static void test_key_attributes(void **state) {
    (void)state;
    sp_kms *kms = open_ok(TOKEN, "master", "aes-kwp", ";create=1");
    sp_kms *rsa = open_ok(TOKEN, "master", "rsa-oaep", ";create=1");
    p11_direct d;
    assert_true(p11_direct_open(&d, TOKEN, PIN));
    CK_OBJECT_HANDLE aes = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
    assert_int_equal(p11_direct_find(&d, CKO_SECRET_KEY, "master", &aes), 1);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_TOKEN), 1);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_PRIVATE), 1);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_SENSITIVE), 1);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_EXTRACTABLE), 0);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_ALWAYS_SENSITIVE), 1);
    assert_int_equal(p11_direct_bool(&d, aes, CKA_NEVER_EXTRACTABLE), 1);
    assert_int_equal(p11_direct_find(&d, CKO_PRIVATE_KEY, "master", &priv), 1);
    assert_int_equal(p11_direct_bool(&d, priv, CKA_SENSITIVE), 1);
    assert_int_equal(p11_direct_bool(&d, priv, CKA_EXTRACTABLE), 0);
    assert_int_equal(p11_direct_bool(&d, priv, CKA_SIGN), 0);
    assert_int_equal(p11_direct_bool(&d, priv, CKA_DECRYPT), 1);
    assert_int_equal(p11_direct_find(&d, CKO_PUBLIC_KEY, "master", &pub), 1);
    CK_ULONG bits = 0;
    CK_ATTRIBUTE a = {CKA_MODULUS_BITS, &bits, sizeof bits};
    assert_int_equal(d.f->C_GetAttributeValue(d.s, pub, &a, 1), CKR_OK);
    assert_int_equal(bits, 3072);
    /* No one can read the AES key's value. */
    uint8_t value[64];
    CK_ATTRIBUTE v = {CKA_VALUE, value, sizeof value};
    assert_int_not_equal(d.f->C_GetAttributeValue(d.s, aes, &v, 1), CKR_OK);
    p11_direct_close(&d);
    sp_kms_close(rsa);
    sp_kms_close(kms);
}

/* ---- refusals ---- */
static void test_wrong_pin(void **state) {
    (void)state;
    char cfg[SP_KMS_MAX_CONFIG];
    sp_kms *kms = NULL;
    for (size_t i = 0; i < sizeof g_mechs / sizeof g_mechs[0]; i++) {
        config(cfg, sizeof cfg, TOKEN, "master", g_mechs[i], g_wrong_pin_file, "");
        assert_rc(sp_kms_open(cfg, &kms), SP_ERR_KMS_ACCESS_DENIED);
    }
    /* While a good sp_kms holds the token's login, PKCS#11 lets any C_Login
     * through with CKR_USER_ALREADY_LOGGED_IN: the wrong PIN must still
     * be refused. */
    sp_kms *good = open_ok(TOKEN, "master", "aes-gcm", ";create=1");
    config(cfg, sizeof cfg, TOKEN, "master", "aes-gcm", g_wrong_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_KMS_ACCESS_DENIED);
    config(cfg, sizeof cfg, TOKEN, "master", "aes-gcm", g_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_OK);
    sp_kms_close(kms);
    sp_kms_close(good);
}

static void test_pin_sources(void **state) {
    (void)state;
    char cfg[SP_KMS_MAX_CONFIG];
    sp_kms *kms = NULL;
    assert_int_equal(setenv("SP_TEST_P11_PIN", PIN, 1), 0);
    assert_true(SOFTHSM_FMT(cfg, "pkcs11:module=%s;token=%s;pin-env=SP_TEST_P11_PIN;key=master;create=1",
                            SOFTHSM_MODULE, TOKEN));
    assert_rc(sp_kms_open(cfg, &kms), SP_OK);
    sp_kms_close(kms);
    assert_int_equal(unsetenv("SP_TEST_P11_PIN"), 0);
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG);
    /* A PIN file others can read is refused, like a key file. */
    char loose[PATH_MAX];
    assert_true(SOFTHSM_FMT(loose, "%s/loose-pin", g_env.dir));
    assert_true(softhsm_write_file(loose, PIN "\n", 0644));
    config(cfg, sizeof cfg, TOKEN, "master", "aes-kwp", loose, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_INSECURE_PERMISSIONS);
    assert_true(SOFTHSM_FMT(loose, "%s/no-such-pin", g_env.dir));
    config(cfg, sizeof cfg, TOKEN, "master", "aes-kwp", loose, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG);
}

static void test_missing_key(void **state) {
    (void)state;
    char cfg[SP_KMS_MAX_CONFIG];
    sp_kms *kms = NULL;
    for (size_t i = 0; i < sizeof g_mechs / sizeof g_mechs[0]; i++) {
        config(cfg, sizeof cfg, TOKEN, "no-such-key", g_mechs[i], g_pin_file, "");
        assert_rc(sp_kms_open(cfg, &kms), SP_ERR_NOT_FOUND);
    }
    config(cfg, sizeof cfg, "no-such-token", "master", "aes-kwp", g_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_NOT_FOUND);
    /* Nothing was made on the way. */
    p11_direct d;
    assert_true(p11_direct_open(&d, TOKEN, PIN));
    assert_int_equal(p11_direct_find(&d, CKO_SECRET_KEY, "no-such-key", NULL), 0);
    assert_int_equal(p11_direct_find(&d, CKO_PRIVATE_KEY, "no-such-key", NULL), 0);
    p11_direct_close(&d);
}

static void test_bad_config(void **state) {
    (void)state;
    static const char *const bad[] = {
        "pkcs11:module=/no/such/module.so;token=" TOKEN ";pin-file=%s;key=master",
        "pkcs11:module=libsofthsm2.so;token=" TOKEN ";pin-file=%s;key=master",
        "pkcs11:module=/etc/hostname;token=" TOKEN ";pin-file=%s;key=master",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s",
        "pkcs11:module=" SOFTHSM_MODULE ";pin-file=%s;key=master",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";key=master;x=%s",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s;pin-env=HOME;key=master",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s;key=master;mechanism=aes-cbc",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s;key=master;oaep-decode=host",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s;key=master;mechanism=rsa-oaep;oaep-decode=x",
        "pkcs11:module=" SOFTHSM_MODULE ";token=a-token-label-longer-than-32-bytes;pin-file=%s;key=master",
        "pkcs11:module=" SOFTHSM_MODULE ";token=" TOKEN ";pin-file=%s;key=master;create=2",
    };
    char cfg[SP_KMS_MAX_CONFIG];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_true(SOFTHSM_FMT(cfg, bad[i], g_pin_file));
        sp_kms *kms = NULL;
        sp_error rc = sp_kms_open(cfg, &kms);
        if (rc != SP_ERR_BAD_CONFIG) fail_msg("%s gave %s", cfg, sp_error_name(rc));
        assert_null(kms);
    }
}

/* A master key that could leave the HSM is no master key. */
static void test_refuses_exportable_keys(void **state) {
    (void)state;
    p11_direct d;
    assert_true(p11_direct_open(&d, TOKEN, PIN));
    assert_true(p11_direct_make_aes(&d, "extractable", true, true));
    assert_true(p11_direct_make_aes(&d, "not-sensitive", false, false));
    assert_true(p11_direct_make_aes(&d, "twice", true, false));
    assert_true(p11_direct_make_aes(&d, "twice", true, false));
    p11_direct_close(&d);
    char cfg[SP_KMS_MAX_CONFIG];
    sp_kms *kms = NULL;
    config(cfg, sizeof cfg, TOKEN, "extractable", "aes-kwp", g_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_KMS_KEY_DISABLED);
    config(cfg, sizeof cfg, TOKEN, "not-sensitive", "aes-gcm", g_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_KMS_KEY_DISABLED);
    /* Two keys under one label: which one wraps would be luck. */
    config(cfg, sizeof cfg, TOKEN, "twice", "aes-kwp", g_pin_file, "");
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG);
}

/* The backend on its own, through the vtable the dispatcher uses: its
 * report is NUL-terminated at every buffer size, whole lines or nothing,
 * and a payload buffer too small for the mechanism is said so. */
static void test_backend_direct(void **state) {
    (void)state;
    assert_rc(sp_init(), SP_OK);
    for (size_t m = 0; m < sizeof g_mechs / sizeof g_mechs[0]; m++) {
        char text[SP_KMS_MAX_CONFIG];
        config(text, sizeof text, TOKEN, "master", g_mechs[m], g_pin_file, ";create=1");
        sp_kms_config cfg;
        assert_rc(sp_kms_config_parse(text, &cfg), SP_OK);
        const sp_kms_backend *b = &sp_kms_backend_pkcs11;
        void *st = NULL;
        char key_id[SP_KMS_MAX_KEY_ID + 1];
        assert_rc(b->open(&cfg, &st, key_id), SP_OK);
        sp_kms_config_clear(&cfg);
        assert_string_equal(key_id, "pkcs11:" TOKEN "/master");

        char full[2048];
        assert_rc(b->describe(st, full, sizeof full), SP_OK);
        size_t full_len = strlen(full);
        assert_true(full_len > 0 && full[full_len - 1] == '\n');
        for (size_t cap = 1; cap <= full_len + 1; cap++) {
            char small[2048];
            memset(small, 'x', sizeof small);
            sp_error rc = b->describe(st, small, cap);
            assert_true(rc == (cap > full_len ? SP_OK : SP_ERR_BUFFER_TOO_SMALL));
            assert_non_null(memchr(small, 0, cap));
            size_t n = strlen(small);
            assert_true(n == 0 || small[n - 1] == '\n');
            assert_memory_equal(small, full, n);
            assert_int_equal(small[cap], 'x');
        }

        uint8_t dek[SP_KEY_BYTES] = {1, 2, 3}, back[SP_KEY_BYTES], payload[SP_KMS_MAX_PAYLOAD];
        uint8_t mech = 0;
        size_t len = 0;
        assert_rc(b->wrap(st, dek, &mech, payload, 8, &len), SP_ERR_BUFFER_TOO_SMALL);
        assert_rc(b->wrap(st, dek, &mech, payload, sizeof payload, &len), SP_OK);
        assert_rc(b->unwrap(st, mech, payload, len, back), SP_OK);
        assert_memory_equal(dek, back, sizeof dek);
        assert_rc(b->unwrap(st, 0, payload, len, back), SP_ERR_AUTH);
        assert_rc(b->unwrap(st, 99, payload, len, back), SP_ERR_AUTH);
        assert_rc(b->unwrap(st, mech, payload, len - 1, back), SP_ERR_AUTH);
        b->close(st);
    }
}

/* ---- recovery ---- */
/* The token closes every session (as after an HSM restart): the next call
 * reconnects, logs in again and succeeds without the caller noticing. */
static void test_sessions_closed_behind_our_back(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof g_mechs / sizeof g_mechs[0]; i++) {
        sp_kms *kms = open_ok(TOKEN, "master", g_mechs[i], ";create=1");
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t blob_len = 0;
        sp_key *dek = NULL, *back = NULL;
        assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
        p11_direct d;
        assert_true(p11_direct_open(&d, TOKEN, PIN));
        assert_int_equal(d.f->C_CloseAllSessions(d.slot), CKR_OK);
        d.s = CK_INVALID_HANDLE; /* closed with the rest */
        p11_direct_close(&d);
        sp_test_assert_unwraps_to(kms, blob, blob_len, dek);
        assert_rc(sp_kms_wrap_key(kms, dek, blob, sizeof blob, &blob_len), SP_OK);
        assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_OK);
        sp_key_free(back);
        sp_key_free(dek);
        sp_kms_close(kms);
    }
}

#define THREADS 6
#define ROUNDS 40

typedef struct {
    sp_kms *kms;
    sp_error rc;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int i = 0; i < ROUNDS && a->rc == SP_OK; i++) {
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t blob_len = 0;
        sp_key *dek = NULL, *back = NULL;
        a->rc = sp_kms_generate_data_key(a->kms, &dek, blob, sizeof blob, &blob_len);
        if (a->rc == SP_OK) a->rc = sp_kms_unwrap_key(a->kms, blob, blob_len, &back);
        if (a->rc == SP_OK && !sp_test_same_key(dek, back)) a->rc = SP_ERR_AUTH;
        sp_key_free(dek);
        sp_key_free(back);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    for (size_t m = 0; m < sizeof g_mechs / sizeof g_mechs[0]; m++) {
        sp_kms *kms = open_ok(TOKEN, "master", g_mechs[m], ";create=1");
        pthread_t t[THREADS];
        worker_arg args[THREADS];
        for (int i = 0; i < THREADS; i++) {
            args[i].kms = kms;
            args[i].rc = SP_OK;
            assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            assert_int_equal(pthread_join(t[i], NULL), 0);
            if (args[i].rc != SP_OK) fail_msg("%s thread %d: %s", g_mechs[m], i, sp_error_name(args[i].rc));
        }
        sp_kms_close(kms);
    }
}

/* Last: the token goes away for good. rsa-oaep wraps on this host, so new
 * data keys keep coming; unwrapping needs the token and fails as a KMS
 * failure, not as a bad blob. */
static void test_token_gone(void **state) {
    (void)state;
    sp_kms *rsa1 = open_ok(OFFLINE_TOKEN, "master", "rsa-oaep", ";create=1");
    sp_kms *rsa2 = open_ok(OFFLINE_TOKEN, "master", "rsa-oaep", "");
    sp_kms *aes = open_ok(OFFLINE_TOKEN, "master", "aes-gcm", ";create=1");
    uint8_t blob[SP_KMS_MAX_WRAPPED], ablob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0, ablob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(rsa1, &dek, blob, sizeof blob, &blob_len), SP_OK);
    sp_test_assert_unwraps_to(rsa2, blob, blob_len, dek);
    assert_rc(sp_kms_wrap_key(aes, dek, ablob, sizeof ablob, &ablob_len), SP_OK);

    softhsm_rm_tree(g_offline_dir, true);

    sp_key *dek2 = NULL;
    uint8_t blob2[SP_KMS_MAX_WRAPPED];
    size_t blob2_len = 0;
    assert_rc(sp_kms_generate_data_key(rsa2, &dek2, blob2, sizeof blob2, &blob2_len), SP_OK);
    assert_rc(sp_kms_wrap_key(rsa1, dek, blob2, sizeof blob2, &blob2_len), SP_OK);
    sp_error rc = sp_kms_unwrap_key(rsa2, blob2, blob2_len, &back);
    if (rc != SP_ERR_KMS_UNAVAILABLE && rc != SP_ERR_KMS_ACCESS_DENIED)
        fail_msg("unwrap with the token gone gave %s", sp_error_name(rc));
    assert_null(back);
    rc = sp_kms_unwrap_key(rsa1, blob, blob_len, &back);
    assert_true(rc == SP_ERR_KMS_UNAVAILABLE || rc == SP_ERR_KMS_ACCESS_DENIED);
    rc = sp_kms_unwrap_key(aes, ablob, ablob_len, &back);
    assert_true(rc == SP_ERR_KMS_UNAVAILABLE || rc == SP_ERR_KMS_ACCESS_DENIED);
    uint8_t x[SP_KMS_MAX_WRAPPED];
    size_t x_len = 0;
    assert_rc(sp_kms_wrap_key(aes, dek, x, sizeof x, &x_len), SP_ERR_KMS_UNAVAILABLE);
    assert_null(back);

    char report[4096];
    assert_int_not_equal(sp_kms_check(rsa2, report, sizeof report), SP_OK);
    assert_non_null(strstr(report, OFFLINE_TOKEN));
    assert_non_null(strstr(report, "rsa-oaep"));

    sp_key_free(dek2);
    sp_key_free(dek);
    sp_kms_close(aes);
    sp_kms_close(rsa2);
    sp_kms_close(rsa1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_roundtrip_aes_kwp, need_softhsm),
        cmocka_unit_test_setup(test_roundtrip_aes_gcm, need_softhsm),
        cmocka_unit_test_setup(test_roundtrip_rsa_oaep, need_softhsm),
        cmocka_unit_test_setup(test_mechanism_switch, need_softhsm),
        cmocka_unit_test_setup(test_key_attributes, need_softhsm),
        cmocka_unit_test_setup(test_wrong_pin, need_softhsm),
        cmocka_unit_test_setup(test_pin_sources, need_softhsm),
        cmocka_unit_test_setup(test_missing_key, need_softhsm),
        cmocka_unit_test_setup(test_bad_config, need_softhsm),
        cmocka_unit_test_setup(test_refuses_exportable_keys, need_softhsm),
        cmocka_unit_test_setup(test_backend_direct, need_softhsm),
        cmocka_unit_test_setup(test_sessions_closed_behind_our_back, need_softhsm),
        cmocka_unit_test_setup(test_threads, need_softhsm),
        cmocka_unit_test_setup(test_token_gone, need_softhsm),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
