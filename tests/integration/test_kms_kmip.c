/*
 * The KMIP KMS backend against a real KMIP server: PyKMIP 0.10 (Debian's
 * python3-pykmip) on 127.0.0.1, driven only through the public sp_kms API
 * plus sp_kmip_revoke, the backend's one extra entry point; and against a
 * scripted TLS server in a thread, for the answers PyKMIP never gives.
 *
 * The group setup (kmip_util.h, shared with test_vault_kms.c) makes a temp
 * directory holding a test CA (EC P-256, made with the OpenSSL API), a
 * server certificate for IP 127.0.0.1, client certificates (ours; another
 * identity the same CA signed; one without the clientAuth usage PyKMIP
 * requires; one from a CA the server does not trust; one from an impostor
 * CA bearing the trusted CA's name), a PyKMIP configuration with a SQLite
 * database of its own, and starts kmip_server.py on a free port in a
 * process group of its own.
 *
 * Scripted: malformed answers (bad padding, an oversized length, a request
 * where a response belongs, a success for another operation, an unusable
 * UID, an unasked-for pending status) are SP_ERR_KMS_PROTOCOL; a server
 * that hangs up or never answers is SP_ERR_KMS_UNAVAILABLE; every key State
 * maps as kms_kmip.c documents; and a wrap sends the data key with our IV
 * and an unwrap sends back exactly the blob's IV, ciphertext and tag, with
 * each kind of refusal of the Decrypt mapped (a bad tag is SP_ERR_AUTH).
 *
 * PyKMIP: data keys round-trip and survive reopening by key-id; tampered
 * blobs are SP_ERR_AUTH; threads share the one connection; a missing key is
 * SP_ERR_NOT_FOUND; another client's identity, a certificate without
 * clientAuth, client certificates from a foreign or impostor CA and a
 * server the configured CA did not sign are all SP_ERR_KMS_ACCESS_DENIED
 * (certificate trouble cannot be cured by retrying, so it is not
 * UNAVAILABLE); a revoked master key is SP_ERR_KMS_ACCESS_DENIED for wrap,
 * unwrap and open; KMIP 1.2 is refused at wrap because PyKMIP drops the GCM
 * tag outside 1.4; a server that accepts but never answers the handshake
 * times out as SP_ERR_KMS_UNAVAILABLE; and last, with the server stopped,
 * SP_ERR_KMS_UNAVAILABLE after the dispatcher's retries.
 *
 * The server is stopped by closing its stdin (kmip_server.py then kills its
 * group), then by PID with SIGTERM and SIGKILL; the temp directory is
 * removed in the group teardown and, should that not run, at exit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "integration/kmip_util.h"

#include "kms/kmip_ttlv.h"
#include "kms/sp_kms.h"
#include "sealpost/sealpost.h"

#define assert_rc(expr, want)                                                                                    \
    do {                                                                                                         \
        sp_error rc_ = (expr);                                                                                   \
        if (rc_ != (want)) fail_msg("%s gave %s, expected %s", #expr, sp_error_name(rc_), sp_error_name(want)); \
    } while (0)

#define FMT KMIP_FMT

/* the temp directory (g_kmip.dir), the server's port and process */
static kmip_env g_kmip = {.server = -1, .server_stdin = -1};
static bool g_available;

static bool path_in_dir(char *out, size_t cap, const char *name) { return kmip_path(&g_kmip, out, cap, name); }

static void cleanup(void) { kmip_teardown(&g_kmip); }

/* The shared PKI of kmip_util.h plus the identities the refusal tests
 * need: another client the same CA signed, one without the clientAuth
 * usage PyKMIP requires, one from a CA the server does not trust, one from
 * an impostor CA bearing the trusted CA's name. */
static bool make_pki(void) {
    static const char *const plain_exts[] = {"basicConstraints", "CA:FALSE", NULL};
    kmip_credential ca = {0}, rogue = {0}, impostor = {0}, server = {0}, client = {0}, other = {0}, no_eku = {0},
                    foreign = {0}, forged = {0};
    bool ok = kmip_make_credential(&ca, "sealpost test CA", NULL, 1, kmip_ca_exts()) &&
              kmip_make_credential(&rogue, "someone else's CA", NULL, 1, kmip_ca_exts()) &&
              kmip_make_credential(&impostor, "sealpost test CA", NULL, 1, kmip_ca_exts()) && /* same name, other key */
              kmip_make_credential(&server, "127.0.0.1", &ca, 2, kmip_server_exts()) &&
              kmip_make_credential(&client, "sealpost-test-client", &ca, 3, kmip_client_exts()) &&
              kmip_make_credential(&other, "someone-else", &ca, 4, kmip_client_exts()) &&
              kmip_make_credential(&no_eku, "sealpost-test-client", &ca, 5, plain_exts) &&
              kmip_make_credential(&foreign, "sealpost-test-client", &rogue, 6, kmip_client_exts()) &&
              kmip_make_credential(&forged, "sealpost-test-client", &impostor, 7, kmip_client_exts()) &&
              kmip_save_credential(&g_kmip, &ca, "ca") && kmip_save_credential(&g_kmip, &rogue, "rogue-ca") &&
              kmip_save_credential(&g_kmip, &server, "server") && kmip_save_credential(&g_kmip, &client, "client") &&
              kmip_save_credential(&g_kmip, &other, "other") && kmip_save_credential(&g_kmip, &no_eku, "no-eku") &&
              kmip_save_credential(&g_kmip, &foreign, "foreign") && kmip_save_credential(&g_kmip, &forged, "forged");
    kmip_free_credential(&ca);
    kmip_free_credential(&rogue);
    kmip_free_credential(&impostor);
    kmip_free_credential(&forged);
    kmip_free_credential(&server);
    kmip_free_credential(&client);
    kmip_free_credential(&other);
    kmip_free_credential(&no_eku);
    kmip_free_credential(&foreign);
    return ok;
}

static int group_setup(void **state) {
    (void)state;
    if (!kmip_setup(&g_kmip, "sealpost-kmip")) return -1;
    atexit(cleanup); /* should the teardown not run */
    if (sp_init() != SP_OK || !make_pki()) return -1;
    if (!kmip_pykmip_installed()) {
        /* a missing server is a broken set-up, never a pass: bootstrap installs it */
        print_message("PyKMIP not installed for %s (python3-pykmip; scripts/bootstrap installs it)\n", KMIP_PYTHON);
        return -1;
    }
    if (!kmip_server_start(&g_kmip)) return -1;
    g_available = true;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    cleanup();
    return 0;
}

static int need_server(void **state) {
    (void)state;
    if (!g_available) fail_msg("the PyKMIP server is not running");
    return 0;
}

/* ---- helpers ---- */

/* A configuration for the test server: cert/key name one of the client
 * credentials, ca the file the server is checked against. */
static void config(char *out, size_t cap, const char *client, const char *ca, const char *extra) {
    /* no retries unless the test asks: a refusal must show at once; without
     * PyKMIP, port 5696 for configurations refused before connecting */
    int n = snprintf(out, cap, "kmip:host=127.0.0.1;port=%d;ca=%s/%s.crt;cert=%s/%s.crt;key=%s/%s.key%s%s",
                     g_kmip.port ? g_kmip.port : 5696, g_kmip.dir, ca, g_kmip.dir, client, g_kmip.dir, client,
                     strstr(extra, "retries=") ? "" : ";retries=0", extra);
    if (n < 0 || (size_t)n >= cap) fail_msg("config too long");
}

static sp_error try_open(const char *client, const char *ca, const char *extra, sp_kms **out) {
    char cfg[SP_KMS_MAX_CONFIG];
    config(cfg, sizeof cfg, client, ca, extra);
    *out = NULL;
    return sp_kms_open(cfg, out);
}

static sp_kms *open_ok(const char *extra) {
    sp_kms *kms = NULL;
    sp_error rc = try_open("client", "ca", extra, &kms);
    if (rc != SP_OK) fail_msg("sp_kms_open(%s) gave %s", extra, sp_error_name(rc));
    return kms;
}

static void key_id_option(char *out, size_t cap, const sp_kms *kms, bool bare) {
    const char *id = sp_kms_key_id(kms);
    assert_true(strncmp(id, "kmip:", 5) == 0);
    int n = snprintf(out, cap, ";key-id=%s", bare ? id + 5 : id);
    assert_true(n > 0 && (size_t)n < cap);
}

static void assert_same_key(const sp_key *a, const sp_key *b) {
    uint8_t x[SP_KEY_BYTES], y[SP_KEY_BYTES];
    assert_rc(sp_key_export(a, x), SP_OK);
    assert_rc(sp_key_export(b, y), SP_OK);
    assert_memory_equal(x, y, SP_KEY_BYTES);
    sp_wipe(x, sizeof x);
    sp_wipe(y, sizeof y);
}


/* ---- a scripted server, for answers PyKMIP never gives ---- */

/* It speaks TLS with the test server's certificate and answers each request
 * with the next entry of a script, so the client's handling of malformed,
 * unexpected and refusing answers can be checked byte for byte. */
enum { FAKE_REPLY, FAKE_HANG_UP, FAKE_SILENT };

typedef struct {
    int kind;
    uint8_t bytes[1024];
    size_t len;
} fake_reply;

#define FAKE_MAX 6

typedef struct {
    int listen_fd;
    int port;
    fake_reply script[FAKE_MAX];
    size_t steps;
    uint8_t requests[FAKE_MAX][2048]; /* what the client sent */
    size_t request_len[FAKE_MAX];
    size_t seen;
    pthread_t thread;
} fake_server;

static bool fake_read(SSL *ssl, uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        if (SSL_read_ex(ssl, buf + got, len - got, &n) != 1) return false;
        got += n;
    }
    return true;
}

static void *fake_main(void *p) {
    fake_server *f = p;
    /* a write to a client that left must not kill the test: SIGPIPE stays
     * pending on this thread instead (the library's own writes never raise
     * it, which the rest of the process relies on) */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

    struct pollfd pfd = {.fd = f->listen_fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1) return NULL;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char cert[PATH_MAX], key[PATH_MAX];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL *ssl = NULL;
    if (ctx != NULL && path_in_dir(cert, sizeof cert, "server.crt") && path_in_dir(key, sizeof key, "server.key") &&
        SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) == 1 &&
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1)
        ssl = SSL_new(ctx);
    if (ssl != NULL && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
        for (size_t i = 0; i < f->steps; i++) {
            uint8_t *req = f->requests[i];
            if (!fake_read(ssl, req, 8)) break;
            size_t len = (size_t)req[4] << 24 | (size_t)req[5] << 16 | (size_t)req[6] << 8 | req[7];
            if (len > sizeof f->requests[i] - 8 || !fake_read(ssl, req + 8, len)) break;
            f->request_len[i] = 8 + len;
            f->seen = i + 1;
            const fake_reply *r = &f->script[i];
            if (r->kind == FAKE_HANG_UP) break;
            if (r->kind == FAKE_SILENT) {
                uint8_t b;
                while (fake_read(ssl, &b, 1)) {
                }
                break;
            }
            size_t n = 0;
            if (SSL_write_ex(ssl, r->bytes, r->len, &n) != 1) break;
        }
        /* until the client closes, so it never meets a reset mid-answer */
        uint8_t b;
        while (fake_read(ssl, &b, 1)) {
        }
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return NULL;
}

static void fake_start(fake_server *f) {
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->listen_fd, 4), 0);
    assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_join(fake_server *f) {
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
}

static sp_error fake_open(const fake_server *f, const char *extra, sp_kms **out) {
    char cfg[SP_KMS_MAX_CONFIG];
    if (!FMT(cfg, "kmip:host=127.0.0.1;port=%d;ca=%s/ca.crt;cert=%s/client.crt;key=%s/client.key;retries=0;"
                  "timeout-ms=500%s",
             f->port, g_kmip.dir, g_kmip.dir, g_kmip.dir, extra))
        fail_msg("config too long");
    *out = NULL;
    return sp_kms_open(cfg, out);
}

/* A response with one batch item; `payload` writes the payload's items, or
 * is NULL for none. */
typedef void (*payload_fn)(sp_ttlv_enc *e, const void *arg);

static void reply(fake_reply *r, uint32_t op, uint32_t status, uint32_t reason, payload_fn payload, const void *arg) {
    sp_wbuf w = sp_wbuf_of(r->bytes, sizeof r->bytes);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_MESSAGE);
    sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_HEADER);
    sp_ttlv_enc_begin(&e, KMIP_TAG_PROTOCOL_VERSION);
    sp_ttlv_enc_int(&e, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    sp_ttlv_enc_int(&e, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
    sp_ttlv_enc_end(&e);
    sp_ttlv_enc_datetime(&e, KMIP_TAG_TIME_STAMP, 1700000000);
    sp_ttlv_enc_int(&e, KMIP_TAG_BATCH_COUNT, 1);
    sp_ttlv_enc_end(&e);
    sp_ttlv_enc_begin(&e, KMIP_TAG_BATCH_ITEM);
    sp_ttlv_enc_enum(&e, KMIP_TAG_OPERATION, op);
    sp_ttlv_enc_enum(&e, KMIP_TAG_RESULT_STATUS, status);
    if (reason != 0) sp_ttlv_enc_enum(&e, KMIP_TAG_RESULT_REASON, reason);
    if (payload != NULL) {
        sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_PAYLOAD);
        payload(&e, arg);
        sp_ttlv_enc_end(&e);
    }
    sp_ttlv_enc_end(&e);
    sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    r->kind = FAKE_REPLY;
    r->len = w.len;
}

static void payload_uid(sp_ttlv_enc *e, const void *arg) {
    const char *uid = arg;
    sp_ttlv_enc_text(e, KMIP_TAG_UNIQUE_IDENTIFIER, uid, strlen(uid));
}

static void payload_created(sp_ttlv_enc *e, const void *arg) {
    sp_ttlv_enc_enum(e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY);
    payload_uid(e, arg);
}

typedef struct {
    uint32_t state, mask;
} key_state;

static void payload_state(sp_ttlv_enc *e, const void *arg) {
    const key_state *k = arg;
    payload_uid(e, "7");
    sp_ttlv_enc_begin(e, KMIP_TAG_ATTRIBUTE);
    sp_ttlv_enc_text(e, KMIP_TAG_ATTRIBUTE_NAME, "State", 5);
    sp_ttlv_enc_enum(e, KMIP_TAG_ATTRIBUTE_VALUE, k->state);
    sp_ttlv_enc_end(e);
    sp_ttlv_enc_begin(e, KMIP_TAG_ATTRIBUTE);
    sp_ttlv_enc_text(e, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Usage Mask", 24);
    sp_ttlv_enc_int(e, KMIP_TAG_ATTRIBUTE_VALUE, (int32_t)k->mask);
    sp_ttlv_enc_end(e);
}

static void payload_encrypted(sp_ttlv_enc *e, const void *arg) {
    (void)arg;
    static const uint8_t ct[32] = {1, 2, 3}, tag[16] = {4, 5, 6};
    payload_uid(e, "7");
    sp_ttlv_enc_bytes(e, KMIP_TAG_DATA, ct, sizeof ct);
    sp_ttlv_enc_bytes(e, KMIP_TAG_AEAD_TAG, tag, sizeof tag);
}

/* the three answers that let an open with create=1 succeed on key "7" */
static size_t script_open(fake_server *f, uint32_t state, uint32_t mask) {
    key_state k = {state, mask};
    reply(&f->script[0], KMIP_OP_CREATE, KMIP_STATUS_SUCCESS, 0, payload_created, "7");
    reply(&f->script[1], KMIP_OP_ACTIVATE, KMIP_STATUS_SUCCESS, 0, payload_uid, "7");
    reply(&f->script[2], KMIP_OP_GET_ATTRIBUTES, KMIP_STATUS_SUCCESS, 0, payload_state, &k);
    return 3;
}

static void raw(fake_reply *r, const uint8_t *bytes, size_t len) {
    assert_true(len <= sizeof r->bytes);
    memcpy(r->bytes, bytes, len);
    r->len = len;
    r->kind = FAKE_REPLY;
}

static void test_scripted_malformed(void **state) {
    (void)state;
    for (int c = 0; c < 9; c++) {
        fake_server f;
        memset(&f, 0, sizeof f);
        f.steps = 1;
        sp_error want = SP_ERR_KMS_PROTOCOL;
        switch (c) {
        case 0: { /* a Text String with padding that is not zero */
            static const uint8_t m[] = {0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x10, 0x42, 0x00, 0x94, 0x07, 0, 0, 0, 0x01,
                                        '7',  1,    0,    0,    0, 0, 0, 0};
            raw(&f.script[0], m, sizeof m);
            break;
        }
        case 1: { /* announces 2 MiB: refused before reading it */
            static const uint8_t m[] = {0x42, 0x00, 0x7B, 0x01, 0x00, 0x20, 0x00, 0x00};
            raw(&f.script[0], m, sizeof m);
            break;
        }
        case 2: { /* a request's tag where a response belongs */
            static const uint8_t m[] = {0x42, 0x00, 0x78, 0x01, 0, 0, 0, 0};
            raw(&f.script[0], m, sizeof m);
            break;
        }
        case 3: /* success, but for another operation */
            reply(&f.script[0], KMIP_OP_ENCRYPT, KMIP_STATUS_SUCCESS, 0, payload_created, "7");
            break;
        case 4: /* a UID that cannot go into a blob */
            reply(&f.script[0], KMIP_OP_CREATE, KMIP_STATUS_SUCCESS, 0, payload_created, "a b");
            break;
        case 5: /* an asynchronous answer nobody asked for */
            reply(&f.script[0], KMIP_OP_CREATE, KMIP_STATUS_OPERATION_PENDING, 0, NULL, NULL);
            break;
        case 6: /* a refusal this client has no better name for */
            reply(&f.script[0], KMIP_OP_CREATE, KMIP_STATUS_OPERATION_FAILED, KMIP_REASON_INVALID_FIELD, NULL, NULL);
            break;
        case 7: /* the server hangs up instead of answering */
            f.script[0].kind = FAKE_HANG_UP;
            want = SP_ERR_KMS_UNAVAILABLE;
            break;
        default: /* the server never answers: the read times out */
            f.script[0].kind = FAKE_SILENT;
            want = SP_ERR_KMS_UNAVAILABLE;
            break;
        }
        fake_start(&f);
        sp_kms *kms = NULL;
        sp_error rc = fake_open(&f, ";create=1", &kms);
        fake_join(&f);
        if (rc != want) fail_msg("case %d gave %s, expected %s", c, sp_error_name(rc), sp_error_name(want));
        assert_null(kms);
        assert_int_equal(f.seen, 1);
    }
}

/* The key's state, as the open-time check reads it. */
static void test_scripted_states(void **state) {
    (void)state;
    static const struct {
        uint32_t state, mask;
        sp_error want;
    } cases[] = {
        {KMIP_STATE_ACTIVE, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_OK},
        {KMIP_STATE_ACTIVE, 0, SP_OK}, /* no mask reported: no objection */
        {KMIP_STATE_PRE_ACTIVE, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_KEY_DISABLED},
        {KMIP_STATE_DESTROYED, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_KEY_DISABLED},
        {KMIP_STATE_ACTIVE, KMIP_USAGE_ENCRYPT, SP_ERR_KMS_KEY_DISABLED},
        {KMIP_STATE_DEACTIVATED, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_ACCESS_DENIED},
        {KMIP_STATE_COMPROMISED, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_ACCESS_DENIED},
        {KMIP_STATE_DESTROYED_COMPROMISED, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_ACCESS_DENIED},
        {99, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, SP_ERR_KMS_PROTOCOL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_server f;
        memset(&f, 0, sizeof f);
        f.steps = script_open(&f, cases[i].state, cases[i].mask);
        fake_start(&f);
        sp_kms *kms = NULL;
        sp_error rc = fake_open(&f, ";create=1", &kms);
        if (rc == SP_OK) assert_string_equal(sp_kms_key_id(kms), "kmip:7");
        sp_kms_close(kms);
        fake_join(&f);
        if (rc != cases[i].want) fail_msg("state %u mask %u gave %s", cases[i].state, cases[i].mask, sp_error_name(rc));
    }
}

/* What the client sends for a wrap and an unwrap, and how it reads the
 * server's refusals of each. */
static void test_scripted_wrap_unwrap(void **state) {
    (void)state;
    static const struct {
        uint32_t reason;   /* the Decrypt's Result Reason */
        uint32_t state;    /* what the follow-up Get Attributes says, 0 for none */
        sp_error want;
    } cases[] = {
        {KMIP_REASON_CRYPTOGRAPHIC_FAILURE, 0, SP_ERR_AUTH},
        {KMIP_REASON_GENERAL_FAILURE, KMIP_STATE_ACTIVE, SP_ERR_AUTH},
        {KMIP_REASON_GENERAL_FAILURE, KMIP_STATE_COMPROMISED, SP_ERR_KMS_ACCESS_DENIED},
        {KMIP_REASON_PERMISSION_DENIED, KMIP_STATE_PRE_ACTIVE, SP_ERR_KMS_KEY_DISABLED},
        {KMIP_REASON_PERMISSION_DENIED, KMIP_STATE_DEACTIVATED, SP_ERR_KMS_ACCESS_DENIED},
        {KMIP_REASON_PERMISSION_DENIED, KMIP_STATE_ACTIVE, SP_ERR_KMS_ACCESS_DENIED},
        {KMIP_REASON_ITEM_NOT_FOUND, 0, SP_ERR_NOT_FOUND},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_server f;
        memset(&f, 0, sizeof f);
        size_t n = script_open(&f, KMIP_STATE_ACTIVE, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
        reply(&f.script[n++], KMIP_OP_ENCRYPT, KMIP_STATUS_SUCCESS, 0, payload_encrypted, NULL);
        reply(&f.script[n++], KMIP_OP_DECRYPT, KMIP_STATUS_OPERATION_FAILED, cases[i].reason, NULL, NULL);
        key_state k = {cases[i].state, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT};
        if (cases[i].state != 0)
            reply(&f.script[n++], KMIP_OP_GET_ATTRIBUTES, KMIP_STATUS_SUCCESS, 0, payload_state, &k);
        f.steps = n;
        fake_start(&f);
        sp_kms *kms = NULL;
        assert_rc(fake_open(&f, ";create=1", &kms), SP_OK);
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t blob_len = 0;
        sp_key *dek = NULL, *back = NULL;
        assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
        sp_error rc = sp_kms_unwrap_key(kms, blob, blob_len, &back);
        sp_kms_close(kms);
        fake_join(&f);
        if (rc != cases[i].want)
            fail_msg("reason %u state %u gave %s", cases[i].reason, cases[i].state, sp_error_name(rc));
        assert_null(back);
        assert_int_equal(f.seen, n);

        /* the Encrypt carried the data key and our IV; the blob holds that
         * IV, the server's ciphertext and tag; the Decrypt sent them back */
        sp_ttlv_item it[64];
        sp_ttlv_tree t = sp_ttlv_tree_of(it, 64);
        sp_cursor cur = sp_cursor_of(f.requests[3], f.request_len[3]);
        assert_rc(sp_ttlv_decode(&cur, &t), SP_OK);
        size_t batch = sp_ttlv_child(&t, 0, KMIP_TAG_BATCH_ITEM);
        size_t payload = sp_ttlv_child(&t, batch, KMIP_TAG_REQUEST_PAYLOAD);
        size_t data = sp_ttlv_child(&t, payload, KMIP_TAG_DATA);
        size_t iv = sp_ttlv_child(&t, payload, KMIP_TAG_IV_COUNTER_NONCE);
        size_t params = sp_ttlv_child(&t, payload, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        assert_true(data && iv && params);
        uint8_t key[SP_KEY_BYTES];
        assert_rc(sp_key_export(dek, key), SP_OK);
        assert_int_equal(t.items[data].value.len, SP_KEY_BYTES);
        assert_memory_equal(t.items[data].value.data, key, SP_KEY_BYTES);
        assert_int_equal(t.items[iv].value.len, SP_GCM_IV_BYTES);
        const uint8_t *p = blob + blob_len - 60;
        assert_memory_equal(p, t.items[iv].value.data, SP_GCM_IV_BYTES);
        assert_int_equal(t.items[sp_ttlv_child(&t, params, KMIP_TAG_BLOCK_CIPHER_MODE)].number, KMIP_MODE_GCM);
        assert_int_equal(t.items[sp_ttlv_child(&t, params, KMIP_TAG_TAG_LENGTH)].number, 16);
        sp_wipe(key, sizeof key);

        t = sp_ttlv_tree_of(it, 64);
        cur = sp_cursor_of(f.requests[4], f.request_len[4]);
        assert_rc(sp_ttlv_decode(&cur, &t), SP_OK);
        batch = sp_ttlv_child(&t, 0, KMIP_TAG_BATCH_ITEM);
        payload = sp_ttlv_child(&t, batch, KMIP_TAG_REQUEST_PAYLOAD);
        data = sp_ttlv_child(&t, payload, KMIP_TAG_DATA);
        iv = sp_ttlv_child(&t, payload, KMIP_TAG_IV_COUNTER_NONCE);
        size_t tag = sp_ttlv_child(&t, payload, KMIP_TAG_AEAD_TAG);
        assert_true(data && iv && tag);
        assert_memory_equal(t.items[iv].value.data, p, SP_GCM_IV_BYTES);
        assert_memory_equal(t.items[data].value.data, p + SP_GCM_IV_BYTES, SP_KEY_BYTES);
        assert_memory_equal(t.items[tag].value.data, p + SP_GCM_IV_BYTES + SP_KEY_BYTES, SP_GCM_TAG_BYTES);
        static const uint8_t ct[32] = {1, 2, 3}, srv_tag[16] = {4, 5, 6};
        assert_memory_equal(p + SP_GCM_IV_BYTES, ct, sizeof ct);
        assert_memory_equal(p + SP_GCM_IV_BYTES + SP_KEY_BYTES, srv_tag, sizeof srv_tag);
        sp_key_free(dek);
    }
}

/* ---- tests against PyKMIP ---- */

static void test_roundtrip(void **state) {
    (void)state;
    sp_kms *kms = open_ok(";create=1");
    assert_string_equal(sp_kms_backend_name(kms), "kmip");

    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
    assert_true(sp_kms_owns(kms, blob, blob_len));
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_OK);
    assert_same_key(dek, back);
    sp_key_free(back);
    back = NULL;

    /* a key of our own, wrapped twice: fresh IVs, both open */
    uint8_t blob2[SP_KMS_MAX_WRAPPED];
    size_t blob2_len = 0;
    assert_rc(sp_kms_wrap_key(kms, dek, blob2, sizeof blob2, &blob2_len), SP_OK);
    assert_int_equal(blob2_len, blob_len);
    assert_memory_not_equal(blob2, blob, blob_len);
    assert_rc(sp_kms_unwrap_key(kms, blob2, blob2_len, &back), SP_OK);
    assert_same_key(dek, back);
    sp_key_free(back);
    back = NULL;

    char report[2048];
    assert_rc(sp_kms_check(kms, report, sizeof report), SP_OK);
    assert_non_null(strstr(report, "kmip protocol: 1.4\n"));
    assert_non_null(strstr(report, "kmip key state: Active\n"));
    assert_non_null(strstr(report, "unwrap: ok\n"));

    /* reopened by key-id, bare and as reported: the same master key */
    for (int bare = 0; bare < 2; bare++) {
        char extra[256];
        key_id_option(extra, sizeof extra, kms, bare);
        sp_kms *again = open_ok(extra);
        assert_string_equal(sp_kms_key_id(again), sp_kms_key_id(kms));
        assert_rc(sp_kms_unwrap_key(again, blob, blob_len, &back), SP_OK);
        assert_same_key(dek, back);
        sp_key_free(back);
        back = NULL;
        sp_kms_close(again);
    }

    /* another master key on the same server does not own the blob */
    sp_kms *other = open_ok(";create=1");
    assert_string_not_equal(sp_kms_key_id(other), sp_kms_key_id(kms));
    assert_false(sp_kms_owns(other, blob, blob_len));
    assert_rc(sp_kms_unwrap_key(other, blob, blob_len, &back), SP_ERR_AUTH);
    sp_kms_close(other);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_tampered(void **state) {
    (void)state;
    sp_kms *kms = open_ok(";create=1");
    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
    /* the payload is the last 60 bytes: IV, ciphertext, tag */
    size_t payload = blob_len - (SP_GCM_IV_BYTES + SP_KEY_BYTES + SP_GCM_TAG_BYTES);
    const size_t flips[] = {payload, payload + SP_GCM_IV_BYTES + 3, blob_len - 1, 2 /* mechanism */};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        uint8_t bad[SP_KMS_MAX_WRAPPED];
        memcpy(bad, blob, blob_len);
        bad[flips[i]] ^= 0x01;
        sp_error rc = sp_kms_unwrap_key(kms, bad, blob_len, &back);
        if (rc != SP_ERR_AUTH) fail_msg("flip at %zu gave %s", flips[i], sp_error_name(rc));
        assert_null(back);
    }
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len - 1, &back), SP_ERR_AUTH);
    /* and the connection is still good for an honest blob */
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_OK);
    assert_same_key(dek, back);
    sp_key_free(back);
    sp_key_free(dek);
    sp_kms_close(kms);
}

typedef struct {
    sp_kms *kms;
    sp_error rc;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    for (int i = 0; i < 8 && a->rc == SP_OK; i++) {
        uint8_t blob[SP_KMS_MAX_WRAPPED];
        size_t blob_len = 0;
        sp_key *dek = NULL, *back = NULL;
        a->rc = sp_kms_generate_data_key(a->kms, &dek, blob, sizeof blob, &blob_len);
        if (a->rc == SP_OK) a->rc = sp_kms_unwrap_key(a->kms, blob, blob_len, &back);
        if (a->rc == SP_OK) {
            uint8_t x[SP_KEY_BYTES], y[SP_KEY_BYTES];
            if (sp_key_export(dek, x) != SP_OK || sp_key_export(back, y) != SP_OK || memcmp(x, y, sizeof x) != 0)
                a->rc = SP_ERR_AUTH;
        }
        sp_key_free(dek);
        sp_key_free(back);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    sp_kms *kms = open_ok(";create=1");
    pthread_t t[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){kms, SP_OK};
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_rc(args[i].rc, SP_OK);
    }
    sp_kms_close(kms);
}

static void test_not_found(void **state) {
    (void)state;
    sp_kms *kms = NULL;
    assert_rc(try_open("client", "ca", ";key-id=no-such-key", &kms), SP_ERR_NOT_FOUND);
    assert_rc(try_open("client", "ca", ";key-id=kmip:987654321;create=1", &kms), SP_ERR_NOT_FOUND);
    assert_null(kms);
}

static void test_refusals(void **state) {
    (void)state;
    sp_kms *mine = open_ok(";create=1");
    char extra[256];
    key_id_option(extra, sizeof extra, mine, false);
    sp_kms *kms = NULL;
    /* another identity the CA vouches for: PyKMIP's default policy lets
     * only the owner near the key */
    assert_rc(try_open("other", "ca", extra, &kms), SP_ERR_KMS_ACCESS_DENIED);
    /* no clientAuth in the certificate: Authentication Not Successful */
    assert_rc(try_open("no-eku", "ca", extra, &kms), SP_ERR_KMS_ACCESS_DENIED);
    /* a client certificate from a CA the server does not trust: the
     * handshake ends with an alert about it (unknown CA) */
    assert_rc(try_open("foreign", "ca", extra, &kms), SP_ERR_KMS_ACCESS_DENIED);
    /* one from an impostor CA of the trusted CA's name (decrypt error:
     * the signature does not verify) */
    assert_rc(try_open("forged", "ca", extra, &kms), SP_ERR_KMS_ACCESS_DENIED);
    /* a server our ca= did not sign */
    assert_rc(try_open("client", "rogue-ca", extra, &kms), SP_ERR_KMS_ACCESS_DENIED);
    assert_null(kms);
    sp_kms_close(mine);
}

static void test_revoked(void **state) {
    (void)state;
    sp_kms *kms = open_ok(";create=1");
    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);

    char text[SP_KMS_MAX_CONFIG];
    config(text, sizeof text, "client", "ca", "");
    sp_kms_config cfg;
    assert_rc(sp_kms_config_parse(text, &cfg), SP_OK);
    assert_rc(sp_kmip_revoke(&cfg, sp_kms_key_id(kms)), SP_OK);
    /* revoked already: Illegal Operation, a transition the life cycle forbids */
    assert_rc(sp_kmip_revoke(&cfg, sp_kms_key_id(kms)), SP_ERR_ILLEGAL_TRANSITION);
    assert_rc(sp_kmip_revoke(&cfg, "no-such-key"), SP_ERR_NOT_FOUND);
    sp_kms_config_clear(&cfg);

    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_ERR_KMS_ACCESS_DENIED);
    assert_null(back);
    assert_rc(sp_kms_wrap_key(kms, dek, blob, sizeof blob, &blob_len), SP_ERR_KMS_ACCESS_DENIED);
    char report[2048];
    assert_rc(sp_kms_check(kms, report, sizeof report), SP_ERR_KMS_ACCESS_DENIED);
    assert_non_null(strstr(report, "kmip key state: Deactivated\n"));

    char extra[256];
    key_id_option(extra, sizeof extra, kms, true);
    sp_kms *again = NULL;
    assert_rc(try_open("client", "ca", extra, &again), SP_ERR_KMS_ACCESS_DENIED);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_protocol_1_2(void **state) {
    (void)state;
    /* everything but wrapping works; PyKMIP writes no Authenticated
     * Encryption Tag into a 1.2 answer, and a GCM wrap without its tag
     * could never be opened */
    sp_kms *kms = open_ok(";create=1;protocol=1.2");
    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_ERR_KMS_PROTOCOL);
    assert_null(dek);
    char report[2048];
    assert_rc(sp_kms_check(kms, report, sizeof report), SP_ERR_KMS_PROTOCOL);
    assert_non_null(strstr(report, "kmip protocol: 1.2\n"));
    assert_non_null(strstr(report, "kmip key state: Active\n"));
    sp_kms_close(kms);
}

/* Configurations refused before any connection is tried. */
static void test_bad_config(void **state) {
    (void)state;
    int port = g_kmip.port ? g_kmip.port : 5696; /* without PyKMIP any valid port will do */
    char cfg[SP_KMS_MAX_CONFIG];
    sp_kms *kms = NULL;
    static const char *const extras[] = {
        "",                    /* neither key-id nor create=1 */
        ";create=1;protocol=2.0",
        ";create=1;protocol=1.3",
        ";create=1;port=0",
        ";create=1;port=65536",
        ";create=1;timeout-ms=0",
        ";create=1;colour=blue",
        ";key-id=has space",
        ";create=1;host=127.0.0.1", /* twice */
    };
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        sp_error rc = try_open("client", "ca", extras[i], &kms);
        if (rc != SP_ERR_BAD_CONFIG) fail_msg("'%s' gave %s", extras[i], sp_error_name(rc));
    }
    assert_true(FMT(cfg, "kmip:port=%d;ca=%s/ca.crt;cert=%s/client.crt;key=%s/client.key;create=1", port,
                    g_kmip.dir, g_kmip.dir, g_kmip.dir));
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG); /* no host */
    assert_true(FMT(cfg, "kmip:host=127.0.0.1;port=%d;cert=%s/client.crt;key=%s/client.key;create=1", port,
                    g_kmip.dir, g_kmip.dir));
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG); /* no ca */
    assert_true(FMT(cfg, "kmip:host=127.0.0.1;port=%d;ca=%s/missing.crt;cert=%s/client.crt;key=%s/client.key;create=1",
                    port, g_kmip.dir, g_kmip.dir, g_kmip.dir));
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG);
    /* a file that is there but is no certificate */
    char junk[PATH_MAX];
    assert_true(path_in_dir(junk, sizeof junk, "junk.pem") && kmip_write_text(junk, "not a certificate\n"));
    assert_true(FMT(cfg, "kmip:host=127.0.0.1;port=%d;ca=%s;cert=%s/client.crt;key=%s/client.key;create=1", port,
                    junk, g_kmip.dir, g_kmip.dir));
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_PEM);
    /* a key that is not the certificate's */
    assert_true(FMT(cfg, "kmip:host=127.0.0.1;port=%d;ca=%s/ca.crt;cert=%s/client.crt;key=%s/other.key;create=1",
                    port, g_kmip.dir, g_kmip.dir, g_kmip.dir));
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_BAD_CONFIG);
    assert_null(kms);
}

/* A server that takes the connection and then says nothing: the TLS
 * handshake must give up at timeout-ms. */
static void test_silent_server(void **state) {
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char cfg[SP_KMS_MAX_CONFIG];
    assert_true(FMT(cfg,
                    "kmip:host=127.0.0.1;port=%d;ca=%s/ca.crt;cert=%s/client.crt;key=%s/client.key;create=1;"
                    "timeout-ms=300",
                    ntohs(a.sin_port), g_kmip.dir, g_kmip.dir, g_kmip.dir));
    sp_kms *kms = NULL;
    int64_t start = kmip_now_ms();
    assert_rc(sp_kms_open(cfg, &kms), SP_ERR_KMS_UNAVAILABLE);
    int64_t took = kmip_now_ms() - start;
    assert_true(took >= 250 && took < 3000);
    close(fd);
}

/* Last: the server goes away under an open sp_kms. */
static void test_server_stopped(void **state) {
    (void)state;
    sp_kms *kms = open_ok(";create=1;retries=2;backoff-ms=10;timeout-ms=1000");
    uint8_t blob[SP_KMS_MAX_WRAPPED];
    size_t blob_len = 0;
    sp_key *dek = NULL, *back = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &dek, blob, sizeof blob, &blob_len), SP_OK);
    kmip_server_stop(&g_kmip);
    assert_false(kmip_port_accepts(g_kmip.port));
    assert_rc(sp_kms_unwrap_key(kms, blob, blob_len, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_wrap_key(kms, dek, blob, sizeof blob, &blob_len), SP_ERR_KMS_UNAVAILABLE);
    char report[2048];
    assert_rc(sp_kms_check(kms, report, sizeof report), SP_ERR_KMS_UNAVAILABLE);
    assert_non_null(strstr(report, "kmip key state: unknown ("));
    sp_kms *again = NULL;
    assert_rc(try_open("client", "ca", ";create=1", &again), SP_ERR_KMS_UNAVAILABLE);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static int need_pki(void **state) {
    (void)state;
    if (g_kmip.dir[0] == 0) fail_msg("the test PKI was not made");
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_scripted_malformed, need_pki),
        cmocka_unit_test_setup(test_scripted_states, need_pki),
        cmocka_unit_test_setup(test_scripted_wrap_unwrap, need_pki),
        cmocka_unit_test_setup(test_roundtrip, need_server),
        cmocka_unit_test_setup(test_tampered, need_server),
        cmocka_unit_test_setup(test_threads, need_server),
        cmocka_unit_test_setup(test_not_found, need_server),
        cmocka_unit_test_setup(test_refusals, need_server),
        cmocka_unit_test_setup(test_revoked, need_server),
        cmocka_unit_test_setup(test_protocol_1_2, need_server),
        cmocka_unit_test_setup(test_bad_config, need_pki),
        cmocka_unit_test_setup(test_silent_server, need_pki),
        cmocka_unit_test_setup(test_server_stopped, need_server),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
