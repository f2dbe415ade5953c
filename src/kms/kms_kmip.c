/*
 * The KMIP backend: the tenant's master key is a symmetric key in a KMIP
 * server (an HSM appliance, a cloud KMS's KMIP endpoint, PyKMIP in tests),
 * and sealpost asks the server to encrypt and decrypt data keys under it.
 * The key never leaves the server.
 *
 *   kmip:host=H;port=5696;ca=PATH;cert=PATH;key=PATH;key-id=UID
 *        [;create=1][;timeout-ms=5000][;protocol=1.4|1.2]
 *
 * Transport: KMIP over mutual TLS (1.2 or later), the server verified
 * against ca= and its certificate checked for host= (a DNS name, or an IP
 * address matched against the certificate's IP SANs); the client presents
 * cert=/key=. One connection is kept and shared under a mutex; a request
 * that may safely be sent twice (Get Attributes, Encrypt, Decrypt) and
 * fails on a kept connection, which the server may have closed while idle,
 * is sent once more on a fresh one. The connect, the handshake and each
 * request's write and read have a deadline of timeout-ms, waited for with
 * poll() on a non-blocking socket (name resolution is getaddrinfo's own and
 * not bounded by it); writes use send(MSG_NOSIGNAL) through a small BIO so
 * that a server hanging up never raises SIGPIPE in the host process.
 *
 * Wrapping is Encrypt with AES-GCM under the master key: our own 12-byte IV
 * as IV/Counter/Nonce, a 16-byte tag; the payload is IV || ciphertext || tag
 * (SP_KMS_MECH_AES_GCM). The tag travels in the Authenticated Encryption Tag
 * field, which KMIP only defines from 1.4 on, so protocol= defaults to 1.4;
 * protocol=1.2 is accepted for servers that carry that field in 1.2
 * messages too (PyKMIP 0.10 does not: it drops the tag and wrap fails with
 * SP_ERR_KMS_PROTOCOL).
 *
 * The master key: key-id= names an existing key (its bare UID, or the
 * "kmip:<uid>" this backend reports). Without key-id, create=1 creates an
 * AES-256 key with usage Encrypt|Decrypt and activates it; the UID is then
 * in sp_kms_key_id(). KMIP servers choose UIDs, so key-id= with create=1 does
 * not create a missing key: that would silently re-point the tenant's master
 * key, and SP_ERR_NOT_FOUND says more.
 *
 * What the server says, as sealpost errors:
 *   no connection, timeout, TLS failure on the wire   SP_ERR_KMS_UNAVAILABLE
 *   General Failure (except on Decrypt, below)        SP_ERR_KMS_UNAVAILABLE
 *   our certificate refused by the server (a TLS
 *     alert about it), or the server's refused by us,
 *     Authentication Not Successful, Permission Denied SP_ERR_KMS_ACCESS_DENIED
 *   key revoked: Deactivated, Compromised,
 *     Destroyed Compromised                            SP_ERR_KMS_ACCESS_DENIED
 *   key Pre-Active or Destroyed, Object Archived, or
 *     its usage mask lacks Encrypt/Decrypt             SP_ERR_KMS_KEY_DISABLED
 *   Item Not Found                                     SP_ERR_NOT_FOUND
 *   Illegal Operation on Activate or Revoke (the key's
 *     state forbids it)                                SP_ERR_ILLEGAL_TRANSITION
 *   Decrypt refused for the data: Cryptographic
 *     Failure, or General Failure while the key is
 *     Active and allows Decrypt                        SP_ERR_AUTH
 *   anything malformed or unexpected                   SP_ERR_KMS_PROTOCOL
 * "Revoked" and "disabled" are kept apart the way sp_strerror words them: a
 * revocation is a deliberate refusal of access (ACCESS_DENIED), while a key
 * that is not, or no longer, usable without anyone having revoked it is
 * disabled. Servers answer Permission Denied (PyKMIP) or Illegal Operation
 * for all of these alike, so after a refused Encrypt or Decrypt the backend
 * asks for the key's State and usage mask to tell them apart. A certificate problem is ACCESS_DENIED in both
 * directions because retrying cannot fix it, and UNAVAILABLE would make the
 * dispatcher retry and trip its breaker over a configuration error.
 *
 * Buffers that held a data key in the clear (the Encrypt request, the
 * Decrypt response) are wiped; OpenSSL is told to cleanse its record
 * buffers too.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kms/kmip_ttlv.h"
#include "kms/sp_kms.h"

#define KMIP_DEFAULT_PORT 5696
#define KMIP_DEFAULT_TIMEOUT_MS 5000
#define KMIP_MAX_TIMEOUT_MS 600000
#define KMIP_MAX_ITEMS 256                       /* far more than any answer we read has */
#define KMIP_PREFIX "kmip:"
#define KMIP_MAX_UID (SP_KMS_MAX_KEY_ID - 5)    /* so "kmip:" + UID fits a blob's key id */
#define KMIP_REQUEST_CAP 1024
#define KMIP_PAYLOAD_BYTES (SP_GCM_IV_BYTES + SP_KEY_BYTES + SP_GCM_TAG_BYTES)

static const char *const kmip_options[] = {"host", "port", "ca", "cert", "key", "key-id", "timeout-ms", "protocol",
                                           NULL};

typedef struct kmip_client {
    pthread_mutex_t lock; /* one request at a time on the one connection */
    SSL_CTX *ctx;
    SSL *ssl; /* NULL when not connected */
    int fd;
    char host[256];
    char port[8];
    bool host_is_ip;
    int timeout_ms;
    int32_t minor; /* KMIP 1.minor */
    char uid[KMIP_MAX_UID + 1];
    sp_ttlv_item items[KMIP_MAX_ITEMS];
} kmip_client;

/* A decoded response; its tree points into buf. */
typedef struct kmip_answer {
    uint8_t *buf;
    size_t len;
    sp_ttlv_tree tree;
    sp_kmip_result result;
} kmip_answer;

static void kmip_answer_free(kmip_answer *a) {
    /* a Decrypt answer holds a data key */
    sp_free_wiped(a->buf, a->len);
    a->buf = NULL;
    a->len = 0;
}

/* ---- configuration ---- */

static bool kmip_printable(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return false;
    }
    return true;
}

static bool kmip_copy(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* A file the TLS context will load: missing is a configuration error,
 * present but unreadable as PEM is SP_ERR_BAD_PEM (see kmip_tls_context). */
static sp_error kmip_file_exists(const char *path) {
    SP_ENSURE(path != NULL && path[0] != 0, SP_ERR_BAD_CONFIG);
    FILE *f = fopen(path, "r");
    SP_ENSURE(f != NULL, SP_ERR_BAD_CONFIG);
    fclose(f);
    return SP_OK;
}

/* No passphrase prompts from a library: an encrypted key file is refused. */
static int kmip_no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static sp_error kmip_tls_context(kmip_client *c, const sp_kms_config *cfg) {
    const char *ca = sp_kms_config_get(cfg, "ca");
    const char *cert = sp_kms_config_get(cfg, "cert");
    const char *key = sp_kms_config_get(cfg, "key");
    SP_GUARD(kmip_file_exists(ca));
    SP_GUARD(kmip_file_exists(cert));
    SP_GUARD(kmip_file_exists(key));

    c->ctx = SSL_CTX_new(TLS_client_method());
    SP_ENSURE(c->ctx != NULL, SP_ERR_NO_MEMORY);
    sp_error rc = SP_ERR_CRYPTO_BACKEND;
    EVP_PKEY *pkey = NULL;
    BIO *kb = NULL;
    SP_ENSURE_GOTO(SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) == 1, SP_ERR_CRYPTO_BACKEND, rc, fail);
    /* no renegotiation (nothing here needs it); cleanse record buffers,
     * which hold data keys in the clear */
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_passwd_cb(c->ctx, kmip_no_passphrase);
    SP_ENSURE_GOTO(SSL_CTX_load_verify_locations(c->ctx, ca, NULL) == 1, SP_ERR_BAD_PEM, rc, fail);
    SP_ENSURE_GOTO(SSL_CTX_use_certificate_chain_file(c->ctx, cert) == 1, SP_ERR_BAD_PEM, rc, fail);
    kb = BIO_new_file(key, "r");
    SP_ENSURE_GOTO(kb != NULL, SP_ERR_BAD_CONFIG, rc, fail);
    pkey = PEM_read_bio_PrivateKey(kb, NULL, kmip_no_passphrase, NULL);
    SP_ENSURE_GOTO(pkey != NULL, SP_ERR_BAD_PEM, rc, fail);
    /* a key that is not the certificate's is a configuration mistake */
    SP_ENSURE_GOTO(X509_check_private_key(SSL_CTX_get0_certificate(c->ctx), pkey) == 1, SP_ERR_BAD_CONFIG, rc, fail);
    SP_ENSURE_GOTO(SSL_CTX_use_PrivateKey(c->ctx, pkey) == 1, SP_ERR_CRYPTO_BACKEND, rc, fail);
    EVP_PKEY_free(pkey);
    BIO_free(kb);
    return SP_OK;
fail:
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    BIO_free(kb);
    SSL_CTX_free(c->ctx);
    c->ctx = NULL;
    return rc;
}

static void kmip_client_free(kmip_client *c) {
    if (c == NULL) return;
    if (c->ssl != NULL) SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd);
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
    sp_free_wiped(c, sizeof *c);
}

/* The options every connection needs (not key-id or create), checked, and
 * the TLS context loaded. */
static sp_error kmip_client_new(const sp_kms_config *cfg, kmip_client **out) {
    SP_GUARD(sp_kms_config_only(cfg, kmip_options));
    const char *host = sp_kms_config_get(cfg, "host");
    SP_ENSURE(host != NULL && kmip_printable(host, 253), SP_ERR_BAD_CONFIG);
    int64_t port, timeout;
    SP_GUARD(sp_kms_config_int(cfg, "port", 1, 65535, KMIP_DEFAULT_PORT, &port));
    SP_GUARD(sp_kms_config_int(cfg, "timeout-ms", 1, KMIP_MAX_TIMEOUT_MS, KMIP_DEFAULT_TIMEOUT_MS, &timeout));
    const char *protocol = sp_kms_config_get(cfg, "protocol");
    int32_t minor = 4;
    if (protocol != NULL) {
        if (strcmp(protocol, "1.2") == 0) {
            minor = 2;
        } else {
            SP_ENSURE(strcmp(protocol, "1.4") == 0, SP_ERR_BAD_CONFIG);
        }
    }

    kmip_client *c = sp_calloc(1, sizeof *c);
    SP_ENSURE(c != NULL, SP_ERR_NO_MEMORY);
    c->fd = -1;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        sp_free(c);
        return SP_ERR_NO_MEMORY;
    }
    sp_error rc = SP_OK;
    (void)kmip_copy(c->host, sizeof c->host, host); /* length checked above */
    sp_wbuf pb = sp_wbuf_of(c->port, sizeof c->port);
    SP_GUARD_GOTO(sp_wbuf_put_u64(&pb, (uint64_t)port), rc, fail);
    SP_GUARD_GOTO(sp_wbuf_terminate(&pb), rc, fail);
    c->timeout_ms = (int)timeout;
    c->minor = minor;
    struct in6_addr addr;
    c->host_is_ip = inet_pton(AF_INET, host, &addr) == 1 || inet_pton(AF_INET6, host, &addr) == 1;

    SP_GUARD_GOTO(kmip_tls_context(c, cfg), rc, fail);
    *out = c;
    return SP_OK;
fail:
    kmip_client_free(c);
    return rc;
}

/* ---- the socket BIO: send(MSG_NOSIGNAL), never SIGPIPE ---- */

static int kmip_bio_write(BIO *b, const char *data, size_t len, size_t *written) {
    const int *fd = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(*fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(b);
        return 0;
    }
    *written = (size_t)n;
    return 1;
}

static int kmip_bio_read(BIO *b, char *data, size_t len, size_t *readbytes) {
    const int *fd = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(*fd, data, len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(b);
        return 0;
    }
    if (n == 0) return 0; /* end of stream: no retry flag, so TLS sees it */
    *readbytes = (size_t)n;
    return 1;
}

static long kmip_bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* writes are unbuffered */
}

static int kmip_bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* One method for the process: OpenSSL hands out few BIO type numbers, so it
 * is made on first use (again after a failure) and kept. */
static pthread_mutex_t kmip_bio_lock = PTHREAD_MUTEX_INITIALIZER;
static BIO_METHOD *kmip_bio_method_ptr;

static BIO_METHOD *kmip_bio_method(void) {
    pthread_mutex_lock(&kmip_bio_lock);
    if (kmip_bio_method_ptr == NULL) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sealpost-kmip-socket");
        if (m != NULL && BIO_meth_set_write_ex(m, kmip_bio_write) == 1 && BIO_meth_set_read_ex(m, kmip_bio_read) == 1 &&
            BIO_meth_set_ctrl(m, kmip_bio_ctrl) == 1 && BIO_meth_set_create(m, kmip_bio_create) == 1) {
            kmip_bio_method_ptr = m;
        } else {
            BIO_meth_free(m);
        }
    }
    BIO_METHOD *m = kmip_bio_method_ptr;
    pthread_mutex_unlock(&kmip_bio_lock);
    return m;
}

/* ---- the connection ---- */

static int64_t kmip_now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Until fd is ready for `events` or the deadline passes. */
static sp_error kmip_wait(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - kmip_now_ms();
        SP_ENSURE(left > 0, SP_ERR_KMS_UNAVAILABLE);
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0) return SP_OK; /* errors and hang-ups surface in the next I/O call */
        SP_ENSURE(n < 0 && errno == EINTR, SP_ERR_KMS_UNAVAILABLE);
    }
}

static sp_error kmip_tcp_connect(const kmip_client *c, int64_t deadline, int *out) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    /* a name that does not resolve is treated like a server that does not
     * answer: DNS outages pass */
    SP_ENSURE(getaddrinfo(c->host, c->port, &hints, &res) == 0, SP_ERR_KMS_UNAVAILABLE);
    sp_error rc = SP_ERR_KMS_UNAVAILABLE;
    for (struct addrinfo *ai = res; ai != NULL && rc != SP_OK; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        bool ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (!ok && errno == EINPROGRESS && kmip_wait(fd, POLLOUT, deadline) == SP_OK) {
            int err = 0;
            socklen_t len = sizeof err;
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
        }
        if (ok) {
            int one = 1; /* requests are small and answered one at a time */
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            *out = fd;
            rc = SP_OK;
        } else {
            close(fd);
        }
    }
    freeaddrinfo(res);
    return rc;
}

/* What a failed TLS call means. Certificate trouble in either direction is
 * a refusal; everything else on the wire is an outage. Empties OpenSSL's
 * error queue either way. */
static sp_error kmip_tls_failure(SSL *ssl) {
    sp_error rc = SP_ERR_KMS_UNAVAILABLE;
    if (SSL_get_verify_result(ssl) != X509_V_OK) rc = SP_ERR_KMS_ACCESS_DENIED;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) != ERR_LIB_SSL) continue;
        switch (ERR_GET_REASON(e)) {
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        /* what OpenSSL servers send for a certificate whose signature does
         * not verify, e.g. one from an impostor CA of the trusted name */
        case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
            rc = SP_ERR_KMS_ACCESS_DENIED;
            break;
        default:
            break;
        }
    }
    return rc;
}

/* After a TLS call returned r <= 0: wait when it only needs the socket,
 * fail otherwise. */
static sp_error kmip_tls_retry(kmip_client *c, int r, int64_t deadline) {
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return kmip_wait(c->fd, POLLIN, deadline);
    case SSL_ERROR_WANT_WRITE:
        return kmip_wait(c->fd, POLLOUT, deadline);
    default:
        return kmip_tls_failure(c->ssl);
    }
}

/* `orderly` sends close_notify first: only on a connection in good health
 * (OpenSSL forbids it after a fatal error). The socket is non-blocking, so
 * it cannot hang on a server that went away. */
static void kmip_disconnect(kmip_client *c, bool orderly) {
    if (c->ssl != NULL) {
        if (orderly) (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    ERR_clear_error();
}

static sp_error kmip_connect(kmip_client *c) {
    int64_t deadline = kmip_now_ms() + c->timeout_ms;
    SP_GUARD(kmip_tcp_connect(c, deadline, &c->fd));
    sp_error rc = SP_ERR_NO_MEMORY;
    c->ssl = SSL_new(c->ctx);
    BIO_METHOD *method = kmip_bio_method();
    BIO *bio = method ? BIO_new(method) : NULL;
    if (c->ssl == NULL || bio == NULL) {
        BIO_free(bio);
        goto fail;
    }
    BIO_set_data(bio, &c->fd);
    SSL_set_bio(c->ssl, bio, bio); /* the SSL owns the BIO from here */
    rc = SP_ERR_CRYPTO_BACKEND;
    if (c->host_is_ip) {
        /* IP SANs only; no SNI for an address (RFC 6066) */
        SP_ENSURE_GOTO(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->host) == 1, SP_ERR_CRYPTO_BACKEND,
                       rc, fail);
    } else {
        SP_ENSURE_GOTO(SSL_set1_host(c->ssl, c->host) == 1 && SSL_set_tlsext_host_name(c->ssl, c->host) == 1,
                       SP_ERR_CRYPTO_BACKEND, rc, fail);
    }
    ERR_clear_error();
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1) return SP_OK;
        SP_GUARD_GOTO(kmip_tls_retry(c, r, deadline), rc, fail);
    }
fail:
    kmip_disconnect(c, false);
    return rc;
}

static sp_error kmip_write_all(kmip_client *c, const uint8_t *data, size_t len, int64_t deadline) {
    sp_cursor rest = sp_cursor_of(data, len);
    while (sp_cursor_left(&rest) != 0) {
        size_t n = 0;
        int r = SSL_write_ex(c->ssl, rest.data + rest.pos, sp_cursor_left(&rest), &n);
        if (r == 1) {
            rest.pos += n;
            continue;
        }
        SP_GUARD(kmip_tls_retry(c, r, deadline));
    }
    return SP_OK;
}

static sp_error kmip_read_exact(kmip_client *c, sp_wbuf *into, size_t len, int64_t deadline) {
    uint8_t *dst;
    SP_GUARD(sp_wbuf_reserve(into, len, &dst));
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        int r = SSL_read_ex(c->ssl, dst + got, len - got, &n);
        if (r == 1) {
            got += n;
            continue;
        }
        SP_GUARD(kmip_tls_retry(c, r, deadline));
    }
    return SP_OK;
}

/* One request, one response, on the current connection. */
static sp_error kmip_exchange(kmip_client *c, const uint8_t *req, size_t req_len, kmip_answer *a) {
    int64_t deadline = kmip_now_ms() + c->timeout_ms;
    ERR_clear_error();
    SP_GUARD(kmip_write_all(c, req, req_len, deadline));
    uint8_t header[SP_TTLV_HEADER];
    sp_wbuf hb = sp_wbuf_of(header, sizeof header);
    SP_GUARD(kmip_read_exact(c, &hb, sizeof header, deadline));
    size_t total;
    SP_GUARD(sp_ttlv_message_length(header, KMIP_TAG_RESPONSE_MESSAGE, &total));
    a->buf = sp_malloc(total);
    SP_ENSURE(a->buf != NULL, SP_ERR_NO_MEMORY);
    a->len = total;
    sp_wbuf body = sp_wbuf_of(a->buf, total);
    SP_GUARD(sp_wbuf_put(&body, header, sizeof header));
    SP_GUARD(kmip_read_exact(c, &body, total - sizeof header, deadline));
    a->tree = sp_ttlv_tree_of(c->items, KMIP_MAX_ITEMS);
    sp_cursor in = sp_cursor_of(a->buf, a->len);
    SP_GUARD(sp_ttlv_decode(&in, &a->tree));
    return SP_OK;
}

/* A request and its decoded answer. A kept connection may have been closed
 * by the server since the last call (idle timeouts), so an idempotent
 * request that fails on one is sent once more on a fresh connection. A
 * connection that failed in any way is dropped: the stream may be out of
 * step. */
static sp_error kmip_roundtrip(kmip_client *c, const uint8_t *req, size_t req_len, uint32_t operation,
                               bool idempotent, kmip_answer *a) {
    memset(a, 0, sizeof *a);
    bool kept = c->ssl != NULL;
    if (!kept) SP_GUARD(kmip_connect(c));
    sp_error rc = kmip_exchange(c, req, req_len, a);
    if (rc == SP_ERR_KMS_UNAVAILABLE && kept && idempotent) {
        kmip_answer_free(a);
        kmip_disconnect(c, false);
        SP_GUARD(kmip_connect(c));
        rc = kmip_exchange(c, req, req_len, a);
    }
    if (rc == SP_OK) rc = sp_kmip_parse_response(&a->tree, operation, &a->result);
    /* we speak 1.x; an answer in another major version would mean other
     * payload layouts */
    if (rc == SP_OK && a->result.major != 1) rc = SP_ERR_KMS_PROTOCOL;
    if (rc != SP_OK) {
        kmip_disconnect(c, false);
        kmip_answer_free(a);
    }
    return rc;
}

/* ---- results ---- */

static sp_error kmip_failure(const sp_kmip_result *r) {
    SP_ENSURE(r->status == KMIP_STATUS_OPERATION_FAILED, SP_ERR_KMS_PROTOCOL); /* pending/undone: never asked for */
    switch (r->reason) {
    case KMIP_REASON_ITEM_NOT_FOUND:
        return SP_ERR_NOT_FOUND;
    case KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL:
    case KMIP_REASON_PERMISSION_DENIED:
        return SP_ERR_KMS_ACCESS_DENIED;
    case KMIP_REASON_OBJECT_ARCHIVED:
        return SP_ERR_KMS_KEY_DISABLED;
    case KMIP_REASON_ILLEGAL_OPERATION:
        return SP_ERR_ILLEGAL_TRANSITION; /* Activate or Revoke in a state that forbids it */
    case KMIP_REASON_GENERAL_FAILURE:
    case KMIP_REASON_CRYPTOGRAPHIC_FAILURE:
        return SP_ERR_KMS_UNAVAILABLE; /* the server's trouble, not ours: may pass */
    default:
        return SP_ERR_KMS_PROTOCOL; /* we and the server disagree about the protocol */
    }
}

/* Sends what the encoder built and checks that the operation succeeded;
 * *reason receives the server's Result Reason when it refused (0 when it
 * did not answer). Wipes the request (an Encrypt request holds a data key). */
static sp_error kmip_call(kmip_client *c, sp_ttlv_enc *e, uint32_t operation, bool idempotent, kmip_answer *a,
                          uint32_t *reason) {
    memset(a, 0, sizeof *a);
    *reason = 0;
    sp_error rc = sp_ttlv_enc_finish(e);
    if (rc == SP_OK) rc = kmip_roundtrip(c, e->out->data, e->out->len, operation, idempotent, a);
    sp_wipe(e->out->data, e->out->cap);
    SP_GUARD(rc);
    if (a->result.status != KMIP_STATUS_SUCCESS) {
        rc = kmip_failure(&a->result);
        *reason = a->result.reason;
        kmip_answer_free(a);
    }
    return rc;
}

static sp_error kmip_want_uid(const kmip_answer *a, const char *uid) {
    size_t i;
    SP_GUARD(sp_ttlv_want_opt(&a->tree, a->result.payload, KMIP_TAG_UNIQUE_IDENTIFIER, SP_TTLV_TEXT_STRING, &i));
    if (i != 0) {
        sp_span s = a->tree.items[i].value;
        SP_ENSURE(s.len == strlen(uid) && memcmp(s.data, uid, s.len) == 0, SP_ERR_KMS_PROTOCOL);
    }
    return SP_OK;
}

/* ---- operations (the caller holds the lock) ---- */

static void kmip_attribute_int(sp_ttlv_enc *e, const char *name, uint8_t type, uint32_t v) {
    sp_ttlv_enc_begin(e, KMIP_TAG_ATTRIBUTE);
    sp_ttlv_enc_text(e, KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name));
    if (type == SP_TTLV_ENUMERATION) {
        sp_ttlv_enc_enum(e, KMIP_TAG_ATTRIBUTE_VALUE, v);
    } else {
        sp_ttlv_enc_int(e, KMIP_TAG_ATTRIBUTE_VALUE, (int32_t)v);
    }
    sp_ttlv_enc_end(e);
}

static sp_error kmip_create(kmip_client *c) {
    uint8_t buf[KMIP_REQUEST_CAP];
    sp_wbuf out = sp_wbuf_of(buf, sizeof buf);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &out);
    sp_kmip_request_begin(&e, 1, c->minor, KMIP_OP_CREATE);
    sp_ttlv_enc_enum(&e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY);
    sp_ttlv_enc_begin(&e, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kmip_attribute_int(&e, "Cryptographic Algorithm", SP_TTLV_ENUMERATION, KMIP_ALG_AES);
    kmip_attribute_int(&e, "Cryptographic Length", SP_TTLV_INTEGER, 256);
    kmip_attribute_int(&e, "Cryptographic Usage Mask", SP_TTLV_INTEGER, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
    sp_ttlv_enc_end(&e);
    sp_kmip_request_end(&e);
    kmip_answer a;
    uint32_t reason;
    SP_GUARD(kmip_call(c, &e, KMIP_OP_CREATE, false, &a, &reason));
    size_t uid;
    sp_error rc = sp_ttlv_want(&a.tree, a.result.payload, KMIP_TAG_UNIQUE_IDENTIFIER, SP_TTLV_TEXT_STRING, &uid);
    if (rc == SP_OK) {
        sp_span s = a.tree.items[uid].value;
        /* it becomes part of every blob's key id: printable ASCII only */
        if (s.len == 0 || s.len > KMIP_MAX_UID) rc = SP_ERR_KMS_PROTOCOL;
        for (size_t i = 0; rc == SP_OK && i < s.len; i++) {
            if (s.data[i] < 0x21 || s.data[i] > 0x7e) rc = SP_ERR_KMS_PROTOCOL;
        }
        if (rc == SP_OK) {
            memcpy(c->uid, s.data, s.len);
            c->uid[s.len] = 0;
        }
    }
    kmip_answer_free(&a);
    return rc;
}

/* Activate and Revoke: a Unique Identifier, maybe a revocation reason. */
static sp_error kmip_simple(kmip_client *c, uint32_t operation, const char *uid, uint32_t revocation) {
    uint8_t buf[KMIP_REQUEST_CAP];
    sp_wbuf out = sp_wbuf_of(buf, sizeof buf);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &out);
    sp_kmip_request_begin(&e, 1, c->minor, operation);
    sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid, strlen(uid));
    if (operation == KMIP_OP_REVOKE) {
        sp_ttlv_enc_begin(&e, KMIP_TAG_REVOCATION_REASON);
        sp_ttlv_enc_enum(&e, KMIP_TAG_REVOCATION_REASON_CODE, revocation);
        sp_ttlv_enc_end(&e);
    }
    sp_kmip_request_end(&e);
    kmip_answer a;
    uint32_t reason;
    SP_GUARD(kmip_call(c, &e, operation, false, &a, &reason));
    sp_error rc = kmip_want_uid(&a, uid);
    kmip_answer_free(&a);
    return rc;
}

/* The key's State and Cryptographic Usage Mask (0 when the server does not
 * report one). */
static sp_error kmip_key_state(kmip_client *c, uint32_t *state, uint32_t *mask) {
    uint8_t buf[KMIP_REQUEST_CAP];
    sp_wbuf out = sp_wbuf_of(buf, sizeof buf);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &out);
    sp_kmip_request_begin(&e, 1, c->minor, KMIP_OP_GET_ATTRIBUTES);
    sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, c->uid, strlen(c->uid));
    sp_ttlv_enc_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "State", 5);
    sp_ttlv_enc_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Usage Mask", 24);
    sp_kmip_request_end(&e);
    kmip_answer a;
    uint32_t reason;
    SP_GUARD(kmip_call(c, &e, KMIP_OP_GET_ATTRIBUTES, true, &a, &reason));
    size_t s = 0, m = 0;
    sp_error rc = kmip_want_uid(&a, c->uid);
    if (rc == SP_OK) rc = sp_kmip_find_attribute(&a.tree, a.result.payload, "State", &s);
    if (rc == SP_OK) rc = sp_kmip_find_attribute(&a.tree, a.result.payload, "Cryptographic Usage Mask", &m);
    if (rc == SP_OK && (s == 0 || a.tree.items[s].type != SP_TTLV_ENUMERATION)) rc = SP_ERR_KMS_PROTOCOL;
    if (rc == SP_OK && m != 0 && a.tree.items[m].type != SP_TTLV_INTEGER) rc = SP_ERR_KMS_PROTOCOL;
    if (rc == SP_OK) {
        *state = (uint32_t)a.tree.items[s].number;
        *mask = m ? (uint32_t)a.tree.items[m].number : 0;
    }
    kmip_answer_free(&a);
    return rc;
}

static const char *kmip_state_name(uint32_t state) {
    static const char *const names[] = {"unknown",     "Pre-Active", "Active",    "Deactivated",
                                        "Compromised", "Destroyed",  "Destroyed Compromised"};
    return state < SP_ARRAY_LEN(names) ? names[state] : names[0];
}

/* Why a key in `state` cannot be used; SP_OK when it can. */
static sp_error kmip_state_error(uint32_t state, uint32_t mask, uint32_t need) {
    switch (state) {
    case KMIP_STATE_ACTIVE:
        /* a server that does not report the mask gets the benefit of the doubt */
        return mask == 0 || (mask & need) == need ? SP_OK : SP_ERR_KMS_KEY_DISABLED;
    case KMIP_STATE_DEACTIVATED:
    case KMIP_STATE_COMPROMISED:
    case KMIP_STATE_DESTROYED_COMPROMISED:
        return SP_ERR_KMS_ACCESS_DENIED; /* what Revoke leaves behind */
    case KMIP_STATE_PRE_ACTIVE:
    case KMIP_STATE_DESTROYED:
        return SP_ERR_KMS_KEY_DISABLED;
    default:
        return SP_ERR_KMS_PROTOCOL;
    }
}

/* The server refused an Encrypt or Decrypt with `first`; its reason codes
 * do not say whether the key was revoked, disabled, or the data was bad, so
 * ask for the key's state. `data_fault` is what it means when the key is
 * fine (SP_ERR_AUTH for a Decrypt that failed, `first` otherwise). */
static sp_error kmip_explain(kmip_client *c, sp_error first, uint32_t need, sp_error data_fault) {
    uint32_t state = 0, mask = 0;
    sp_error rc = kmip_key_state(c, &state, &mask);
    if (rc != SP_OK) return rc == SP_ERR_KMS_PROTOCOL ? first : rc;
    rc = kmip_state_error(state, mask, need);
    return rc != SP_OK ? rc : data_fault;
}

static void kmip_crypto_parameters(sp_ttlv_enc *e) {
    sp_ttlv_enc_begin(e, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    sp_ttlv_enc_enum(e, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    sp_ttlv_enc_enum(e, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    sp_ttlv_enc_int(e, KMIP_TAG_TAG_LENGTH, SP_GCM_TAG_BYTES);
    sp_ttlv_enc_end(e);
}

/* A Byte String child of the payload that must be exactly `len` bytes. */
static sp_error kmip_want_bytes(const kmip_answer *a, uint32_t tag, size_t len, sp_span *out) {
    size_t i;
    SP_GUARD(sp_ttlv_want(&a->tree, a->result.payload, tag, SP_TTLV_BYTE_STRING, &i));
    *out = a->tree.items[i].value;
    SP_ENSURE(out->len == len, SP_ERR_KMS_PROTOCOL);
    return SP_OK;
}

static sp_error kmip_encrypt(kmip_client *c, const uint8_t dek[SP_KEY_BYTES], sp_wbuf *payload) {
    uint8_t iv[SP_GCM_IV_BYTES];
    SP_GUARD(sp_random(iv, sizeof iv));
    uint8_t buf[KMIP_REQUEST_CAP];
    sp_wbuf out = sp_wbuf_of(buf, sizeof buf);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &out);
    sp_kmip_request_begin(&e, 1, c->minor, KMIP_OP_ENCRYPT);
    sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, c->uid, strlen(c->uid));
    kmip_crypto_parameters(&e);
    sp_ttlv_enc_bytes(&e, KMIP_TAG_DATA, dek, SP_KEY_BYTES);
    sp_ttlv_enc_bytes(&e, KMIP_TAG_IV_COUNTER_NONCE, iv, sizeof iv);
    sp_kmip_request_end(&e);
    kmip_answer a;
    uint32_t reason;
    sp_error rc = kmip_call(c, &e, KMIP_OP_ENCRYPT, true, &a, &reason); /* wipes buf */
    /* servers refuse keys in the wrong state with either reason */
    if (reason == KMIP_REASON_PERMISSION_DENIED) return kmip_explain(c, rc, KMIP_USAGE_ENCRYPT, rc);
    if (reason == KMIP_REASON_ILLEGAL_OPERATION)
        return kmip_explain(c, SP_ERR_KMS_PROTOCOL, KMIP_USAGE_ENCRYPT, SP_ERR_KMS_PROTOCOL);
    SP_GUARD(rc);

    sp_span ct, tag;
    size_t echo;
    rc = kmip_want_uid(&a, c->uid);
    if (rc == SP_OK) rc = kmip_want_bytes(&a, KMIP_TAG_DATA, SP_KEY_BYTES, &ct);
    /* no tag: a server that does not speak 1.4's AEAD fields (see top) */
    if (rc == SP_OK) rc = kmip_want_bytes(&a, KMIP_TAG_AEAD_TAG, SP_GCM_TAG_BYTES, &tag);
    /* a server may echo the IV; one that used another would be lying about
     * what it did, and we could never decrypt */
    if (rc == SP_OK)
        rc = sp_ttlv_want_opt(&a.tree, a.result.payload, KMIP_TAG_IV_COUNTER_NONCE, SP_TTLV_BYTE_STRING, &echo);
    if (rc == SP_OK && echo != 0) {
        sp_span s = a.tree.items[echo].value;
        if (s.len != sizeof iv || memcmp(s.data, iv, sizeof iv) != 0) rc = SP_ERR_KMS_PROTOCOL;
    }
    if (rc == SP_OK) rc = sp_wbuf_put(payload, iv, sizeof iv);
    if (rc == SP_OK) rc = sp_wbuf_put(payload, ct.data, ct.len);
    if (rc == SP_OK) rc = sp_wbuf_put(payload, tag.data, tag.len);
    kmip_answer_free(&a);
    return rc;
}

static sp_error kmip_decrypt(kmip_client *c, sp_span iv, sp_span ct, sp_span tag, uint8_t dek[SP_KEY_BYTES]) {
    uint8_t buf[KMIP_REQUEST_CAP];
    sp_wbuf out = sp_wbuf_of(buf, sizeof buf);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &out);
    sp_kmip_request_begin(&e, 1, c->minor, KMIP_OP_DECRYPT);
    sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, c->uid, strlen(c->uid));
    kmip_crypto_parameters(&e);
    sp_ttlv_enc_bytes(&e, KMIP_TAG_DATA, ct.data, ct.len);
    sp_ttlv_enc_bytes(&e, KMIP_TAG_IV_COUNTER_NONCE, iv.data, iv.len);
    sp_ttlv_enc_bytes(&e, KMIP_TAG_AEAD_TAG, tag.data, tag.len);
    sp_kmip_request_end(&e);
    kmip_answer a;
    uint32_t reason;
    sp_error rc = kmip_call(c, &e, KMIP_OP_DECRYPT, true, &a, &reason);
    if (reason == KMIP_REASON_PERMISSION_DENIED) return kmip_explain(c, rc, KMIP_USAGE_DECRYPT, rc);
    if (reason == KMIP_REASON_ILLEGAL_OPERATION)
        return kmip_explain(c, SP_ERR_KMS_PROTOCOL, KMIP_USAGE_DECRYPT, SP_ERR_KMS_PROTOCOL);
    /* A tag that does not verify is a Cryptographic Failure by the book.
     * PyKMIP 0.10 lets the exception out as General Failure instead, which
     * alone could also be server trouble: if the key itself is usable, the
     * data was at fault. */
    if (reason == KMIP_REASON_CRYPTOGRAPHIC_FAILURE) return SP_ERR_AUTH;
    if (reason == KMIP_REASON_GENERAL_FAILURE) return kmip_explain(c, rc, KMIP_USAGE_DECRYPT, SP_ERR_AUTH);
    SP_GUARD(rc);

    sp_span plain;
    rc = kmip_want_uid(&a, c->uid);
    if (rc == SP_OK) rc = kmip_want_bytes(&a, KMIP_TAG_DATA, SP_KEY_BYTES, &plain);
    if (rc == SP_OK) memcpy(dek, plain.data, SP_KEY_BYTES);
    kmip_answer_free(&a); /* wiped: it held the data key */
    return rc;
}

/* ---- the backend ---- */

static sp_error kmip_uid_from(const char *text, char uid[KMIP_MAX_UID + 1]) {
    size_t plen = strlen(KMIP_PREFIX);
    if (strncmp(text, KMIP_PREFIX, plen) == 0) text += plen;
    SP_ENSURE(kmip_printable(text, KMIP_MAX_UID), SP_ERR_BAD_CONFIG);
    (void)kmip_copy(uid, KMIP_MAX_UID + 1, text);
    return SP_OK;
}

static sp_error kmip_open(const sp_kms_config *cfg, void **state, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    const char *given = sp_kms_config_get(cfg, "key-id");
    int64_t create;
    SP_GUARD(sp_kms_config_int(cfg, "create", 0, 1, 0, &create));
    SP_ENSURE(given != NULL || create == 1, SP_ERR_BAD_CONFIG); /* which key, then? */
    kmip_client *c = NULL;
    SP_GUARD(kmip_client_new(cfg, &c));
    sp_error rc = SP_OK;
    if (given != NULL) {
        SP_GUARD_GOTO(kmip_uid_from(given, c->uid), rc, fail);
    } else {
        SP_GUARD_GOTO(kmip_create(c), rc, fail);
        SP_GUARD_GOTO(kmip_simple(c, KMIP_OP_ACTIVATE, c->uid, 0), rc, fail);
    }
    /* a key that cannot wrap and unwrap is refused now, not at first use */
    uint32_t st = 0, mask = 0;
    SP_GUARD_GOTO(kmip_key_state(c, &st, &mask), rc, fail);
    SP_GUARD_GOTO(kmip_state_error(st, mask, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT), rc, fail);
    sp_wbuf id = sp_wbuf_of(key_id, SP_KMS_MAX_KEY_ID + 1);
    SP_GUARD_GOTO(sp_wbuf_put_str(&id, KMIP_PREFIX), rc, fail);
    SP_GUARD_GOTO(sp_wbuf_put_str(&id, c->uid), rc, fail);
    SP_GUARD_GOTO(sp_wbuf_terminate(&id), rc, fail);
    *state = c;
    return SP_OK;
fail:
    kmip_client_free(c);
    return rc;
}

static void kmip_close(void *state) {
    kmip_client *c = state;
    if (c == NULL) return;
    kmip_disconnect(c, true);
    kmip_client_free(c);
}

static sp_error kmip_wrap(void *state, const uint8_t dek[SP_KEY_BYTES], uint8_t *mechanism, uint8_t *payload,
                          size_t cap, size_t *payload_len) {
    kmip_client *c = state;
    SP_ENSURE(cap >= KMIP_PAYLOAD_BYTES, SP_ERR_BUFFER_TOO_SMALL);
    sp_wbuf out = sp_wbuf_of(payload, cap);
    pthread_mutex_lock(&c->lock);
    sp_error rc = kmip_encrypt(c, dek, &out);
    pthread_mutex_unlock(&c->lock);
    SP_GUARD(rc);
    *mechanism = SP_KMS_MECH_AES_GCM;
    *payload_len = out.len;
    return SP_OK;
}

static sp_error kmip_unwrap(void *state, uint8_t mechanism, const uint8_t *payload, size_t payload_len,
                            uint8_t dek[SP_KEY_BYTES]) {
    kmip_client *c = state;
    /* anything but our own shape cannot open: no need to ask the server */
    SP_ENSURE(mechanism == SP_KMS_MECH_AES_GCM && payload_len == KMIP_PAYLOAD_BYTES, SP_ERR_AUTH);
    sp_span iv = {&payload[0], SP_GCM_IV_BYTES};
    sp_span ct = {&payload[SP_GCM_IV_BYTES], SP_KEY_BYTES};
    sp_span tag = {&payload[SP_GCM_IV_BYTES + SP_KEY_BYTES], SP_GCM_TAG_BYTES};
    pthread_mutex_lock(&c->lock);
    sp_error rc = kmip_decrypt(c, iv, ct, tag, dek);
    pthread_mutex_unlock(&c->lock);
    if (rc != SP_OK) sp_wipe(dek, SP_KEY_BYTES);
    return rc;
}

static sp_error kmip_describe(void *state, char *report, size_t cap) {
    kmip_client *c = state;
    SP_ENSURE(cap > 0, SP_ERR_BUFFER_TOO_SMALL);
    report[0] = 0;
    sp_wbuf b = sp_wbuf_of(report, cap);
    bool v6 = strchr(c->host, ':') != NULL;
    SP_GUARD(sp_wbuf_put_str(&b, "kmip server: "));
    SP_GUARD(sp_wbuf_put_str(&b, v6 ? "[" : ""));
    SP_GUARD(sp_wbuf_put_str(&b, c->host));
    SP_GUARD(sp_wbuf_put_str(&b, v6 ? "]:" : ":"));
    SP_GUARD(sp_wbuf_put_str(&b, c->port));
    SP_GUARD(sp_wbuf_put_str(&b, c->minor == 4 ? "\nkmip protocol: 1.4\n" : "\nkmip protocol: 1.2\n"));
    uint32_t st = 0, mask = 0;
    pthread_mutex_lock(&c->lock);
    sp_error rc = kmip_key_state(c, &st, &mask);
    pthread_mutex_unlock(&c->lock);
    /* an unreachable server is a finding, not a failure of the report: the
     * wrap and unwrap lines that follow say what it costs */
    SP_GUARD(sp_wbuf_put_str(&b, "kmip key state: "));
    SP_GUARD(sp_wbuf_put_str(&b, rc == SP_OK ? kmip_state_name(st) : "unknown ("));
    if (rc != SP_OK) {
        SP_GUARD(sp_wbuf_put_str(&b, sp_strerror(rc)));
        SP_GUARD(sp_wbuf_put_str(&b, ")"));
    }
    SP_GUARD(sp_wbuf_put_str(&b, "\n"));
    return sp_wbuf_terminate(&b);
}

sp_error sp_kmip_revoke(const sp_kms_config *cfg, const char *uid) {
    SP_ENSURE(cfg != NULL && uid != NULL, SP_ERR_INVALID_ARGUMENT);
    kmip_client *c = NULL;
    SP_GUARD(kmip_client_new(cfg, &c));
    sp_error rc = kmip_uid_from(uid, c->uid);
    if (rc == SP_OK) rc = kmip_simple(c, KMIP_OP_REVOKE, c->uid, KMIP_REVOKE_CESSATION_OF_OPERATION);
    kmip_close(c);
    return rc;
}

const sp_kms_backend sp_kms_backend_kmip = {
    .name = "kmip",
    .id = SP_KMS_BACKEND_KMIP,
    .options = kmip_options,
    .open = kmip_open,
    .close = kmip_close,
    .wrap = kmip_wrap,
    .unwrap = kmip_unwrap,
    .describe = kmip_describe,
};
