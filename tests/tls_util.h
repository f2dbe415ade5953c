/*
 * A fresh TLS identity for tests that talk HTTPS: a P-256 key and a
 * self-signed certificate for CN=localhost with the names clients use
 * (localhost, 127.0.0.1, ::1), written as PEM into a directory the test
 * owns. Made with libcrypto at run time, so no private key is ever
 * committed and no test depends on the openssl command line.
 *
 * Include it ahead of sp_test_util.h (which poisons functions that OpenSSL's
 * headers declare). The certificate doubles as its own CA: clients pass it
 * as CURLOPT_CAINFO.
 */
#ifndef SP_TLS_UTIL_H
#define SP_TLS_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct sp_tls_files {
    char cert[512];
    char key[512];
} sp_tls_files;

static inline __attribute__((unused)) bool sp_tls_write_pem(const char *path, X509 *cert, EVP_PKEY *key) {
    FILE *f = fopen(path, "wx");
    if (f == NULL) return false;
    bool ok = cert != NULL ? PEM_write_X509(f, cert) == 1
                           : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fclose(f) == 0 && ok;
    return ok && chmod(path, cert != NULL ? 0644 : 0600) == 0;
}

/* Writes dir/cert.pem and dir/key.pem (0600); false on any failure. */
static inline __attribute__((unused)) bool sp_tls_make_cert(const char *dir, sp_tls_files *out) {
    if (snprintf(out->cert, sizeof out->cert, "%s/cert.pem", dir) >= (int)sizeof out->cert) return false;
    if (snprintf(out->key, sizeof out->key, "%s/key.pem", dir) >= (int)sizeof out->key) return false;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509_EXTENSION *san = NULL, *bc = NULL;
    bool ok = key != NULL && x != NULL && name != NULL;
    ok = ok && X509_set_version(x, 2) == 1;
    ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1;
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL;
    ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 2) != NULL;
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    ok = ok && X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1;
    ok = ok && X509_set_pubkey(x, key) == 1;
    if (ok) {
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        san = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1");
        bc = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
        ok = san != NULL && bc != NULL && X509_add_ext(x, san, -1) == 1 && X509_add_ext(x, bc, -1) == 1;
    }
    ok = ok && X509_sign(x, key, EVP_sha256()) > 0;
    ok = ok && sp_tls_write_pem(out->cert, x, NULL) && sp_tls_write_pem(out->key, NULL, key);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok;
}

#endif
