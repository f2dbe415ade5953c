/*
 * Interop of the key exchange (include/sealpost/keyx.h) with an independent
 * JOSE implementation, python3-jwcrypto, in both directions and for both
 * algorithms:
 *
 *   sealpost exports  -> jwcrypto decrypts with the private key and checks
 *                        the header and every key of the JWK Set;
 *   jwcrypto exports  -> sp_keyx_import gets the same keys, and refuses what
 *                        jwcrypto can write but the profile forbids (apu/apv,
 *                        zip, A128GCM).
 *
 * Keys come from both sides too: OpenSSL here (PKCS#8), python3-cryptography
 * there (PKCS#1 "RSA PRIVATE KEY", SEC 1 "EC PRIVATE KEY"), so the PEM forms
 * a provider is likely to hold are read by both.
 *
 * The Python half is tests/integration/keyx_interop.py, run with
 * /usr/bin/python3 (Debian's jwcrypto is not on every python3 on PATH).
 * This is a cmocka program rather than a shell script because the library
 * calls need C and the CLI commands for key exchange do not exist yet; it
 * ends with a "keyx-interop: N passed, M failed" line. Env: SP_SOURCE_DIR.
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sp_test_util.h"

extern char **environ;

#define PYTHON "/usr/bin/python3"
#define FUTURE 4102444800 /* 2100-01-01 */

static char dir[256];
static char script[1024];

/* ---- files and the Python side ---- */

static const char *path_of(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

/* Runs keyx_interop.py with the given arguments (file names relative to the
 * scratch directory); its exit status. */
static int python(const char *mode, const char *a, const char *b, const char *c, const char *d, const char *e) {
    const char *argv[10] = {PYTHON, "-B", script, mode}; /* the rest NULL: at most 5 arguments and the end */
    const char *rest[5] = {a, b, c, d, e};
    char resolved[5][512];
    size_t at = 4;
    for (size_t i = 0; i < 5 && rest[i] != NULL; i++) {
        /* algorithm names and forms pass as they are; files live in dir */
        if (strchr(rest[i], '.') != NULL) snprintf(resolved[i], sizeof resolved[i], "%s/%s", dir, rest[i]);
        else snprintf(resolved[i], sizeof resolved[i], "%s", rest[i]);
        argv[at++] = resolved[i];
    }
    pid_t pid;
    int rc = posix_spawn(&pid, PYTHON, NULL, NULL, (char *const *)argv, environ);
    if (rc != 0) fail_msg("cannot run %s: %s", PYTHON, strerror(rc));
    int status = sp_test_wait(pid);
    return status >= 0 ? status : 128;
}

/* ---- keys ---- */

typedef struct {
    const char *priv, *pub; /* file names */
} pair_files;

static const pair_files OURS_RSA = {"ours-rsa.key", "ours-rsa.pub"};
static const pair_files OURS_EC = {"ours-ec.key", "ours-ec.pub"};
static const pair_files THEIRS_RSA = {"theirs-rsa.key", "theirs-rsa.pub"};
static const pair_files THEIRS_EC = {"theirs-ec.key", "theirs-ec.pub"};

static int write_pair(EVP_PKEY *pk, const pair_files *f) {
    if (pk == NULL) return -1;
    BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
    int ok = PEM_write_bio_PrivateKey(priv, pk, NULL, NULL, 0, NULL, NULL) == 1 && PEM_write_bio_PUBKEY(pub, pk) == 1;
    char *data = NULL;
    long n;
    FILE *out;
    if (ok) {
        n = BIO_get_mem_data(priv, &data);
        out = fopen(path_of(f->priv), "wb");
        ok = out != NULL && fwrite(data, 1, (size_t)n, out) == (size_t)n && fclose(out) == 0;
    }
    if (ok) {
        n = BIO_get_mem_data(pub, &data);
        out = fopen(path_of(f->pub), "wb");
        ok = out != NULL && fwrite(data, 1, (size_t)n, out) == (size_t)n && fclose(out) == 0;
    }
    BIO_free(priv);
    BIO_free(pub);
    EVP_PKEY_free(pk);
    return ok ? 0 : -1;
}

static int setup(void **state) {
    (void)state;
    const char *src = getenv("SP_SOURCE_DIR");
    if (src != NULL && *src) {
        snprintf(script, sizeof script, "%s/tests/integration/keyx_interop.py", src);
    } else {
        /* run by hand: the script sits beside this file */
        snprintf(script, sizeof script, "%s", __FILE__);
        char *slash = strrchr(script, '/');
        snprintf(slash ? slash + 1 : script, sizeof script - (size_t)(slash ? slash + 1 - script : 0),
                 "keyx_interop.py");
    }
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "keyx-interop: %s not found (set SP_SOURCE_DIR)\n", script);
        return -1;
    }
    if (sp_init() != SP_OK) return -1;
    if (!sp_test_mkdtemp(dir, sizeof dir, "sp-keyx-interop")) return -1;
    if (write_pair(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072), &OURS_RSA) != 0 ||
        write_pair(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), &OURS_EC) != 0) {
        return -1;
    }
    /* the provider's keys, made by python3-cryptography; this is also the
     * check that jwcrypto and cryptography are there at all */
    if (python("keygen", "rsa", THEIRS_RSA.priv, THEIRS_RSA.pub, NULL, NULL) != 0 ||
        python("keygen", "p256", THEIRS_EC.priv, THEIRS_EC.pub, NULL, NULL) != 0) {
        fprintf(stderr, "keyx-interop: %s could not run %s (python3-jwcrypto, python3-cryptography: "
                        "run scripts/bootstrap)\n", PYTHON, script);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return sp_test_rm_tree(dir) == 0 ? 0 : -1;
}

/* ---- items and their JSON for the Python side ---- */

#define N_ITEMS 3

static void make_items(sp_keyx_item *items) {
    for (size_t i = 0; i < N_ITEMS; i++) {
        memset(&items[i], 0, sizeof items[i]);
        assert_ok(sp_uuid_v4(items[i].version));
        assert_ok(sp_key_generate(&items[i].key));
        items[i].expires = i == 0 ? 0 : FUTURE + (int64_t)i; /* one without an end date */
    }
}

static void b64url(const uint8_t *in, size_t len, char *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        for (int k = 18; k >= 0; k -= 6) out[o++] = alphabet[(v >> k) & 63];
    }
    if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        for (int k = 18; k >= 6; k -= 6) out[o++] = alphabet[(v >> k) & 63];
    } else if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        for (int k = 18; k >= 12; k -= 6) out[o++] = alphabet[(v >> k) & 63];
    }
    out[o] = 0;
}

/* [{"kid":..,"k":..,"exp":..}, ...]: the keys as the Python side sees them.
 * A test secret, written to the scratch directory only. */
static void write_keys_json(const char *name, const sp_keyx_item *items) {
    char json[N_ITEMS * 200 + 8];
    size_t at = 0;
    at += (size_t)snprintf(json + at, sizeof json - at, "[");
    for (size_t i = 0; i < N_ITEMS; i++) {
        uint8_t raw[SP_KEY_BYTES];
        char k[64];
        assert_ok(sp_key_export(items[i].key, raw));
        b64url(raw, sizeof raw, k);
        at += (size_t)snprintf(json + at, sizeof json - at, "%s{\"kid\":\"%s\",\"k\":\"%s\",\"exp\":%lld}",
                               i ? "," : "", items[i].version, k, (long long)items[i].expires);
    }
    at += (size_t)snprintf(json + at, sizeof json - at, "]");
    sp_test_write_file(path_of(name), json, at, 0600);
}


/* ---- sealpost -> jwcrypto ---- */

static void sealpost_to_jwcrypto(const pair_files *f, const char *alg) {
    sp_keyx_item items[N_ITEMS];
    make_items(items);
    size_t pem_len = 0, len = 0;
    char *pem = sp_test_read_file(path_of(f->pub), &pem_len);
    static char out[SP_KEYX_MAX_JWE_BYTES];
    assert_ok(sp_keyx_export(items, N_ITEMS, pem, pem_len, alg, out, sizeof out, &len));
    sp_test_write_file(path_of("export.jwe"), out, len, 0600);
    write_keys_json("expected.json", items);
    assert_int_equal(python("decrypt", f->priv, "export.jwe", "expected.json", NULL, NULL), 0);
    /* and one changed byte of the ciphertext is refused there too */
    size_t dots = 0, at = 0;
    while (dots < 3) dots += out[at++] == '.';
    out[at + 2] = out[at + 2] == 'A' ? 'B' : 'A';
    sp_test_write_file(path_of("export.jwe"), out, len, 0600);
    assert_int_equal(python("decrypt", f->priv, "export.jwe", "expected.json", "refused", NULL), 0);
    free(pem);
    sp_keyx_items_free(items, N_ITEMS);
}

static void test_export_rsa_jwcrypto_decrypts(void **state) {
    (void)state;
    sealpost_to_jwcrypto(&OURS_RSA, SP_KEYX_ALG_RSA_OAEP_256);
    sealpost_to_jwcrypto(&THEIRS_RSA, NULL);
}

static void test_export_ecdh_jwcrypto_decrypts(void **state) {
    (void)state;
    sealpost_to_jwcrypto(&OURS_EC, SP_KEYX_ALG_ECDH_ES_A256KW);
    sealpost_to_jwcrypto(&THEIRS_EC, NULL);
}

/* ---- jwcrypto -> sealpost ---- */

static sp_error jwcrypto_to_sealpost(const pair_files *f, const char *alg, const char *form) {
    sp_keyx_item items[N_ITEMS], got[SP_KEYX_MAX_ITEMS];
    make_items(items);
    write_keys_json("keys.json", items);
    assert_int_equal(python("encrypt", f->pub, alg, "keys.json", "import.jwe", form), 0);
    size_t jwe_len = 0, pem_len = 0, n = 0;
    char *jwe = sp_test_read_file(path_of("import.jwe"), &jwe_len);
    char *pem = sp_test_read_file(path_of(f->priv), &pem_len);
    sp_error rc = sp_keyx_import(jwe, jwe_len, pem, pem_len, got, SP_KEYX_MAX_ITEMS, &n);
    if (rc == SP_OK) {
        assert_int_equal(n, N_ITEMS);
        sp_test_assert_same_items(items, got, n);
        sp_keyx_items_free(got, n);
    } else {
        assert_int_equal(n, 0);
    }
    free(jwe);
    free(pem);
    sp_keyx_items_free(items, N_ITEMS);
    return rc;
}

static void test_jwcrypto_rsa_sealpost_imports(void **state) {
    (void)state;
    const pair_files *pairs[2] = {&OURS_RSA, &THEIRS_RSA};
    for (size_t i = 0; i < 2; i++) {
        assert_ok(jwcrypto_to_sealpost(pairs[i], "RSA-OAEP-256", "plain"));
        assert_ok(jwcrypto_to_sealpost(pairs[i], "RSA-OAEP-256", "nocty"));
        assert_ok(jwcrypto_to_sealpost(pairs[i], "RSA-OAEP-256", "pretty"));
    }
}

static void test_jwcrypto_ecdh_sealpost_imports(void **state) {
    (void)state;
    const pair_files *pairs[2] = {&OURS_EC, &THEIRS_EC};
    for (size_t i = 0; i < 2; i++) {
        assert_ok(jwcrypto_to_sealpost(pairs[i], "ECDH-ES+A256KW", "plain"));
        assert_ok(jwcrypto_to_sealpost(pairs[i], "ECDH-ES+A256KW", "nocty"));
        assert_ok(jwcrypto_to_sealpost(pairs[i], "ECDH-ES+A256KW", "pretty"));
    }
}

/* Valid JOSE that the profile forbids: refused as malformed, not decrypted. */
static void test_jwcrypto_outside_profile_refused(void **state) {
    (void)state;
    assert_rc(jwcrypto_to_sealpost(&OURS_EC, "ECDH-ES+A256KW", "apu"), SP_ERR_BAD_JWE);
    assert_rc(jwcrypto_to_sealpost(&OURS_EC, "ECDH-ES+A256KW", "zip"), SP_ERR_BAD_JWE);
    assert_rc(jwcrypto_to_sealpost(&OURS_EC, "ECDH-ES+A256KW", "a128gcm"), SP_ERR_BAD_JWE);
    assert_rc(jwcrypto_to_sealpost(&OURS_RSA, "RSA-OAEP-256", "zip"), SP_ERR_BAD_JWE);
    assert_rc(jwcrypto_to_sealpost(&OURS_RSA, "RSA-OAEP-256", "a128gcm"), SP_ERR_BAD_JWE);
    /* RSA1_5 and plain RSA-OAEP (SHA-1) are not in the profile either */
    assert_rc(jwcrypto_to_sealpost(&OURS_RSA, "RSA-OAEP", "plain"), SP_ERR_BAD_JWE);
    /* made for one key, opened with another of the same kind */
    assert_rc(jwcrypto_to_sealpost(&(pair_files){THEIRS_EC.priv, OURS_EC.pub}, "ECDH-ES+A256KW", "plain"),
              SP_ERR_AUTH);
    assert_rc(jwcrypto_to_sealpost(&(pair_files){THEIRS_RSA.priv, OURS_RSA.pub}, "RSA-OAEP-256", "plain"),
              SP_ERR_AUTH);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_rsa_jwcrypto_decrypts),
        cmocka_unit_test(test_export_ecdh_jwcrypto_decrypts),
        cmocka_unit_test(test_jwcrypto_rsa_sealpost_imports),
        cmocka_unit_test(test_jwcrypto_ecdh_sealpost_imports),
        cmocka_unit_test(test_jwcrypto_outside_profile_refused),
    };
    size_t total = sizeof tests / sizeof tests[0];
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    /* a setup failure fails every test */
    size_t bad = failed < 0 || (size_t)failed > total ? total : (size_t)failed;
    printf("keyx-interop: %zu passed, %zu failed\n", total - bad, bad);
    return failed == 0 ? 0 : 1;
}
