/*
 * The HTTPS server: libmicrohttpd (epoll, a thread pool, GnuTLS) behind the
 * two-call contract of sealpost/http.h.
 *
 * libmicrohttpd calls the access handler several times per request: first
 * with the headers complete and no body (we answer there when on_headers
 * refuses, when Content-Length is over max_body, or while shutting down, so
 * an unwanted body is never read), then once per body chunk (copied into a
 * buffer bounded by max_body), then once with nothing left (on_request). A
 * response may only be queued from inside those calls, so sp_http_respond
 * builds it and the handler wrapper queues it when the application returns.
 *
 * Per-request state lives in the connection's context (made when the TCP
 * connection is accepted, freed when it closes), and so does the body
 * buffer, which the next request on a keep-alive connection reuses: the
 * common request costs no allocation of ours beyond libmicrohttpd's copy of
 * the response. Bodies can carry PII, so a body buffer is wiped before it is
 * reused or freed.
 *
 * A deferred request (sp_http_defer) is a suspended libmicrohttpd
 * connection: suspended inside on_request, before the application hands
 * the request to another thread, so that thread's resume can never come
 * first; resumed, libmicrohttpd calls the handler again, and that call
 * queues whatever the other thread answered. libmicrohttpd aborts when it
 * is stopped with a connection still suspended, so stopping waits for
 * every deferred request to be resumed.
 *
 * Quiescing does not use MHD_quiesce_daemon, which can abort the process
 * with epoll worker threads in 0.9.75 (see sp_http_server_quiesce); the
 * accept policy closes new connections instead.
 *
 * Metrics: a small table per route label keeps the sp_metric pointers of
 * the duration histogram and of each status code's counter, filled on first
 * use, so a request costs a few atomic adds and no registry lookup.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/sp_core.h"
#include "sealpost/http.h"
#include "sealpost/log.h"

/* TLS 1.2 and 1.3 only; AEAD ciphers only; ECDHE key exchange only (TLS 1.3
 * is always ephemeral); no SHA-1 anywhere in signatures. */
#define SP_HTTP_TLS_PRIORITIES                                                                                   \
    "NONE:+VERS-TLS1.3:+VERS-TLS1.2:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:+AEAD:+ECDHE-ECDSA:+ECDHE-RSA:" \
    "+SIGN-ALL:-SIGN-RSA-SHA1:-SIGN-DSA-SHA1:-SIGN-ECDSA-SHA1:-SIGN-RSA-SHA224:-SIGN-DSA-SHA224:"                 \
    "-SIGN-ECDSA-SHA224:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-X25519:+COMP-NULL:+CTYPE-X509:%SERVER_PRECEDENCE"

#define SP_HTTP_PEM_MAX (1u << 20)
#define SP_HTTP_MAX_ROUTES 64
#define SP_HTTP_CODES 500 /* 100..599 */
#define SP_HTTP_MAX_ADD_HEADERS 16
#define SP_HTTP_HEADER_SPACE 2048
#define SP_HTTP_SCRATCH 2048
/* a body buffer up to this size stays with its keep-alive connection */
#define SP_HTTP_KEEP_BODY (64u << 10)
/* what is read and dropped of a chunked body past max_body before the
 * connection is cut rather than answered */
#define SP_HTTP_DISCARD (4u << 20)

static const char sp_body_no_response[] = "{\"error\":{\"code\":\"internal\",\"message\":\"no response\"}}";
static const char sp_body_too_large[] = "{\"error\":{\"code\":\"too_large\",\"message\":\"request body too large\"}}";
static const char sp_body_unavailable[] = "{\"error\":{\"code\":\"unavailable\",\"message\":\"shutting down\"}}";
static const char sp_json_type[] = "application/json";

typedef struct sp_http_route {
    const char *name; /* the caller's static string */
    sp_metric *duration;
    _Atomic(sp_metric *) codes[SP_HTTP_CODES];
} sp_http_route;

typedef struct sp_http_conn sp_http_conn;

struct sp_http_request {
    sp_http_server *server;
    sp_http_conn *conn;
    struct MHD_Connection *mhd;
    const char *method;
    const char *path;
    const char *route;
    struct timespec started;
    struct MHD_Response *response;
    unsigned status;
    bool queued;     /* the response went to libmicrohttpd */
    bool discarding; /* answered before the body: drop what still comes */
    bool overflow;   /* the body passed max_body: dropped, then 413 */
    bool deferred;   /* answered before the body, sent once it is dropped */
    bool in_request; /* inside on_request: the one place sp_http_defer may be called */
    bool parked;     /* suspended by sp_http_defer; cleared when libmicrohttpd calls again */
    size_t discarded;
    void *user;
    void (*user_free)(void *);
    size_t n_add;
    size_t header_used;
    const char *add_names[SP_HTTP_MAX_ADD_HEADERS];
    const char *add_values[SP_HTTP_MAX_ADD_HEADERS];
    char header_space[SP_HTTP_HEADER_SPACE];
    size_t scratch_used;
    char scratch[SP_HTTP_SCRATCH];
};

struct sp_http_conn {
    sp_http_request req;
    uint8_t *body;
    size_t body_len, body_cap;
    bool peer_known;
    int peer_family;
    uint8_t peer_bytes[16];
    char peer_text[SP_HTTP_PEER_CHARS];
};

struct sp_http_server {
    struct MHD_Daemon *daemon;
    sp_http_handlers handlers;
    size_t max_body;
    uint16_t port;
    atomic_bool accepting;
    atomic_bool stopping;
    atomic_uint in_flight;
    atomic_uint unresumed; /* deferred requests the application still holds */
    char *cert_pem;
    size_t cert_len;
    sp_metrics *metrics;
    sp_metric *m_in_flight, *m_connections;
    pthread_mutex_t route_lock;
    atomic_size_t n_routes;
    sp_http_route *routes[SP_HTTP_MAX_ROUTES];
};

static const double sp_http_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5};

/* ---- config ---- */

static bool sp_loopback(const char *addr) {
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, addr, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
    return false;
}

static sp_error sp_http_config_check(const sp_http_config *c) {
    SP_ENSURE(c->bind_address != NULL, SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->threads >= 1 && c->threads <= SP_HTTP_MAX_THREADS, SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->max_body >= 1 && c->max_body <= SP_HTTP_MAX_BODY_LIMIT, SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->max_header_bytes >= 4096 && c->max_header_bytes <= (1u << 20), SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->max_connections >= 1 && c->max_connections <= SP_HTTP_MAX_CONNECTIONS, SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->max_connections_per_ip >= 1 && c->max_connections_per_ip <= c->max_connections,
              SP_ERR_BAD_CONFIG);
    SP_ENSURE(c->idle_timeout_s >= 1 && c->idle_timeout_s <= SP_HTTP_MAX_IDLE_TIMEOUT, SP_ERR_BAD_CONFIG);
    SP_ENSURE((c->cert_file == NULL) == (c->key_file == NULL), SP_ERR_BAD_CONFIG);
    if (c->cert_file == NULL) {
        SP_ENSURE(c->allow_plain_http && sp_loopback(c->bind_address), SP_ERR_BAD_CONFIG);
    }
    return SP_OK;
}

/* A PEM file, NUL-terminated for GnuTLS. A private key others can read is
 * refused; its group may read it (Debian's ssl-cert convention). */
static sp_error sp_pem_read(const char *path, bool secret, char **out, size_t *out_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    SP_ENSURE(fd >= 0, SP_ERR_BAD_CONFIG);
    struct stat st;
    sp_error rc = SP_OK;
    char *buf = NULL;
    size_t size = 0, got = 0;
    SP_ENSURE_GOTO(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), SP_ERR_BAD_CONFIG, rc, out);
    SP_ENSURE_GOTO(!secret || (st.st_mode & 007) == 0, SP_ERR_BAD_CONFIG, rc, out);
    SP_ENSURE_GOTO(st.st_size > 0 && (uint64_t)st.st_size <= SP_HTTP_PEM_MAX, SP_ERR_BAD_CONFIG, rc, out);
    size = (size_t)st.st_size;
    buf = sp_malloc(size + 1);
    SP_ENSURE_GOTO(buf != NULL, SP_ERR_NO_MEMORY, rc, out);
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        SP_ENSURE_GOTO(n > 0, SP_ERR_BAD_CONFIG, rc, out);
        got += (size_t)n;
    }
    buf[got] = 0;
    *out = buf;
    *out_len = got;
    buf = NULL;
out:
    if (buf != NULL) sp_free_wiped(buf, size + 1);
    close(fd);
    return rc;
}

/* libmicrohttpd cannot tell a bad certificate from a busy port, so the pair
 * is checked here first: a failure to start after this is SP_ERR_IO. */
static sp_error sp_pem_check(const char *cert, size_t cert_len, const char *key, size_t key_len) {
    sp_error rc = SP_ERR_BAD_CONFIG;
    BIO *cb = BIO_new_mem_buf(cert, (int)cert_len);
    BIO *kb = BIO_new_mem_buf(key, (int)key_len);
    X509 *x = cb != NULL ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *pk = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (cb == NULL || kb == NULL) rc = SP_ERR_NO_MEMORY;
    if (x != NULL && pk != NULL && X509_check_private_key(x, pk) == 1) rc = SP_OK;
    EVP_PKEY_free(pk);
    X509_free(x);
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

/* ---- metrics ---- */

static sp_http_route *sp_route_find(sp_http_server *s, const char *name) {
    size_t n = atomic_load_explicit(&s->n_routes, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        if (s->routes[i]->name == name) return s->routes[i];
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s->routes[i]->name, name) == 0) return s->routes[i];
    }
    return NULL;
}

static sp_http_route *sp_route_get(sp_http_server *s, const char *name) {
    sp_http_route *r = sp_route_find(s, name);
    if (r != NULL) return r;
    char esc[256], labels[300];
    if (sp_metrics_label_escape(name, esc, sizeof esc) != SP_OK) return NULL;
    if (snprintf(labels, sizeof labels, "route=\"%s\"", esc) >= (int)sizeof labels) return NULL;
    pthread_mutex_lock(&s->route_lock);
    r = sp_route_find(s, name);
    size_t n = atomic_load_explicit(&s->n_routes, memory_order_relaxed);
    if (r == NULL && n < SP_HTTP_MAX_ROUTES) {
        r = sp_calloc(1, sizeof *r);
        if (r != NULL) {
            r->name = name;
            if (sp_metrics_get(s->metrics, SP_METRIC_HISTOGRAM, "sealpost_http_request_duration_seconds",
                               "Time from request headers to the response sent", labels, sp_http_buckets,
                               SP_ARRAY_LEN(sp_http_buckets), &r->duration) != SP_OK) {
                r->duration = NULL;
            }
            s->routes[n] = r;
            atomic_store_explicit(&s->n_routes, n + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&s->route_lock);
    return r;
}

static void sp_http_count(sp_http_server *s, const char *route, unsigned status, double seconds) {
    if (s->metrics == NULL) return;
    sp_http_route *r = sp_route_get(s, route);
    if (r == NULL) return; /* past SP_HTTP_MAX_ROUTES: not counted rather than a lookup per request */
    sp_metric_observe(r->duration, seconds);
    if (status < 100 || status > 599) return;
    _Atomic(sp_metric *) *slot = &r->codes[status - 100];
    sp_metric *m = atomic_load_explicit(slot, memory_order_acquire);
    if (m == NULL) {
        char esc[256], labels[300];
        if (sp_metrics_label_escape(route, esc, sizeof esc) != SP_OK) return;
        if (snprintf(labels, sizeof labels, "route=\"%s\",code=\"%u\"", esc, status) >= (int)sizeof labels) return;
        /* two threads may race here; the registry hands both the same series */
        if (sp_metrics_get(s->metrics, SP_METRIC_COUNTER, "sealpost_http_requests_total", "HTTP requests answered",
                           labels, NULL, 0, &m) != SP_OK) {
            return;
        }
        atomic_store_explicit(slot, m, memory_order_release);
    }
    sp_metric_add(m, 1);
}

/* ---- connections and requests ---- */

static void sp_body_release(sp_http_conn *c, bool keep) {
    if (c->body != NULL && c->body_len) sp_wipe(c->body, c->body_len);
    c->body_len = 0;
    if (!keep || c->body_cap > SP_HTTP_KEEP_BODY) {
        sp_free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
}

static void sp_http_on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                                  enum MHD_ConnectionNotificationCode toe) {
    sp_http_server *s = cls;
    (void)connection;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        /* NULL on a failed allocation: the handler then drops the connection */
        *socket_context = sp_calloc(1, sizeof(sp_http_conn));
        sp_metric_gauge_add(s->m_connections, 1);
        return;
    }
    sp_http_conn *c = *socket_context;
    if (c != NULL) {
        sp_body_release(c, false);
        sp_free(c);
        *socket_context = NULL;
    }
    sp_metric_gauge_add(s->m_connections, -1);
}

static void sp_request_reset(sp_http_request *r) {
    if (r->response != NULL) MHD_destroy_response(r->response);
    if (r->user_free != NULL && r->user != NULL) r->user_free(r->user);
    /* the header and scratch areas are left as they are: their counters
     * bound what is read */
    r->response = NULL;
    r->user = NULL;
    r->user_free = NULL;
    r->status = 0;
    r->queued = r->discarding = r->overflow = r->deferred = r->in_request = r->parked = false;
    r->n_add = r->header_used = r->scratch_used = r->discarded = 0;
    r->route = NULL;
}

static void sp_http_on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                                 enum MHD_RequestTerminationCode toe) {
    sp_http_server *s = cls;
    sp_http_request *r = *con_cls;
    (void)connection;
    (void)toe;
    if (r == NULL) return;
    *con_cls = NULL;
    if (r->queued) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double secs = (double)(now.tv_sec - r->started.tv_sec) + (double)(now.tv_nsec - r->started.tv_nsec) / 1e9;
        sp_http_count(s, r->route != NULL ? r->route : "other", r->status, secs);
        /* The access log, at debug level: the route label, never the path
         * (a profile id in it may be a customer's user name or address). */
        if (sp_log_enabled(SP_LOG_DEBUG)) {
            sp_log_field f[] = {
                SP_LOG_S("method", r->method != NULL ? r->method : ""),
                SP_LOG_S("route", r->route != NULL ? r->route : "other"),
                SP_LOG_I("status", r->status),
                SP_LOG_D("ms", secs * 1000.0),
                SP_LOG_S("peer", sp_http_peer(r)),
            };
            sp_log(SP_LOG_DEBUG, "http.request", f, SP_ARRAY_LEN(f));
        }
    }
    sp_request_reset(r);
    sp_body_release(r->conn, true);
    atomic_fetch_sub(&s->in_flight, 1);
    sp_metric_gauge_add(s->m_in_flight, -1);
}

static sp_error sp_respond_static(sp_http_request *r, unsigned status, const char *body, bool close) {
    if (r->response != NULL) {
        MHD_destroy_response(r->response);
        r->response = NULL;
    }
    r->n_add = 0;
    if (close) SP_GUARD(sp_http_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close"));
    return sp_http_respond(r, status, sp_json_type, body, strlen(body));
}

/* Hands the response to libmicrohttpd; a handler that did not answer gets
 * the 500. MHD_NO closes the connection, the last resort. */
static enum MHD_Result sp_queue(sp_http_request *r) {
    if (r->response == NULL && sp_respond_static(r, 500, sp_body_no_response, false) != SP_OK) return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(r->mhd, r->status, r->response);
    MHD_destroy_response(r->response);
    r->response = NULL;
    if (ok == MHD_YES) r->queued = true;
    return ok;
}

static bool sp_content_length_over(sp_http_request *r, size_t max) {
    const char *cl = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL) return false;
    uint64_t n;
    /* unparsable lengths are libmicrohttpd's to refuse */
    if (sp_parse_u64(cl, strlen(cl), UINT64_MAX, &n) != SP_OK) return false;
    return n > max;
}

static sp_error sp_body_append(sp_http_conn *c, const char *data, size_t n, size_t max) {
    SP_ENSURE(n <= max - c->body_len, SP_ERR_TOO_LARGE);
    size_t need = c->body_len + n;
    if (need > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < need) cap = cap > max / 2 ? max : cap * 2;
        uint8_t *grown = sp_malloc(cap);
        SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
        if (c->body_len) memcpy(grown, c->body, c->body_len);
        sp_body_release(c, false);
        c->body = grown;
        c->body_cap = cap;
        c->body_len = need - n;
    }
    memcpy(c->body + c->body_len, data, n);
    c->body_len += n;
    return SP_OK;
}

/* A client that sends its body without waiting (no Expect: 100-continue)
 * and is answered before it is done may never read the answer: closing a
 * connection with unread data makes the kernel reset it, and the reset can
 * overtake the response. Such a body, when it is small enough, is read and
 * dropped first; a client that waits for 100 Continue is answered at once. */
static bool sp_answer_after_body(sp_http_request *r) {
    if (MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT) != NULL) return false;
    if (MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL) {
        return true; /* chunked: SP_HTTP_DISCARD bounds the reading */
    }
    /* Without a body the second call follows at once, and waiting for it
     * matters: libmicrohttpd closes a connection whose response was queued
     * from the first call, so answering there would end keep-alive. */
    const char *cl = MHD_lookup_connection_value(r->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL) return true;
    uint64_t n;
    if (sp_parse_u64(cl, strlen(cl), UINT64_MAX, &n) != SP_OK) return false;
    return n <= SP_HTTP_DISCARD;
}

/* The request is answered before its body: the body is never buffered. */
static enum MHD_Result sp_answer_early(sp_http_request *r) {
    r->discarding = true;
    if (sp_answer_after_body(r)) {
        r->deferred = true;
        return MHD_YES;
    }
    return sp_queue(r);
}

static enum MHD_Result sp_first_call(sp_http_server *s, struct MHD_Connection *connection, const char *url,
                                     const char *method, void **con_cls) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    sp_http_conn *c = info != NULL ? info->socket_context : NULL;
    if (c == NULL) return MHD_NO;
    sp_http_request *r = &c->req;
    r->server = s;
    r->conn = c;
    r->mhd = connection;
    r->method = method;
    r->path = url;
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    *con_cls = r;
    atomic_fetch_add(&s->in_flight, 1);
    sp_metric_gauge_add(s->m_in_flight, 1);

    if (atomic_load(&s->stopping)) {
        if (sp_respond_static(r, 503, sp_body_unavailable, true) != SP_OK) return MHD_NO;
        return sp_answer_early(r);
    }
    /* the application first: a client it refuses (403, 401) learns nothing
     * about the server's limits */
    if (s->handlers.on_headers != NULL) {
        sp_http_verdict v = s->handlers.on_headers(s->handlers.arg, r);
        /* an answer is an answer, whatever the verdict says */
        if (v == SP_HTTP_ANSWERED || r->response != NULL) return sp_answer_early(r);
    }
    if (sp_content_length_over(r, s->max_body)) {
        if (sp_respond_static(r, 413, sp_body_too_large, false) != SP_OK) return MHD_NO;
        return sp_answer_early(r);
    }
    /* nothing queued: libmicrohttpd goes on (and sends 100 Continue) */
    return MHD_YES;
}

static enum MHD_Result sp_http_access(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls) {
    sp_http_server *s = cls;
    (void)version;
    sp_http_request *r = *con_cls;
    if (r == NULL) return sp_first_call(s, connection, url, method, con_cls);
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->discarding || r->overflow) {
            /* libmicrohttpd 0.9.75 takes no response in the middle of a
             * body, so a chunked body over the limit is read and dropped
             * to give the client its 413 at the end, as is a body answered
             * before it came; past SP_HTTP_DISCARD dropped bytes the
             * connection is cut instead */
            if (n > SP_HTTP_DISCARD - r->discarded) return MHD_NO;
            r->discarded += n;
            return MHD_YES;
        }
        sp_error rc = sp_body_append(r->conn, upload_data, n, s->max_body);
        if (rc == SP_ERR_TOO_LARGE) {
            r->overflow = true;
            sp_body_release(r->conn, true);
        }
        /* out of memory: no answer would fit either, the connection goes */
        return rc == SP_OK || rc == SP_ERR_TOO_LARGE ? MHD_YES : MHD_NO;
    }
    if (r->queued) return MHD_YES;
    if (r->parked) {
        /* resumed: whatever the application answered (sp_http_resume's
         * locking made it visible here), or the 500 */
        r->parked = false;
        return sp_queue(r);
    }
    if (r->deferred) return sp_queue(r);
    if (r->overflow) {
        if (sp_respond_static(r, 413, sp_body_too_large, true) != SP_OK) return MHD_NO;
        return sp_queue(r);
    }
    r->in_request = true;
    s->handlers.on_request(s->handlers.arg, r);
    r->in_request = false;
    /* parked: the request is another thread's now, its response too; this
     * thread reads only the flag, which no other thread writes */
    if (r->parked) return MHD_YES;
    return sp_queue(r);
}

static enum MHD_Result sp_http_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    sp_http_server *s = cls;
    (void)addr;
    (void)addrlen;
    return atomic_load_explicit(&s->accepting, memory_order_relaxed) ? MHD_YES : MHD_NO;
}

/* Keeps the path and query values as they came: the path is the router's
 * to decode (a %2F must not become a separator), query values are decoded
 * by sp_http_query. */
static size_t sp_http_no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---- start and stop ---- */

static void sp_server_free(sp_http_server *s) {
    for (size_t i = 0; i < SP_HTTP_MAX_ROUTES; i++) sp_free(s->routes[i]);
    sp_free(s->cert_pem);
    pthread_mutex_destroy(&s->route_lock);
    sp_free(s);
}

static sp_error sp_bind_addr(const sp_http_config *c, struct sockaddr_storage *ss, unsigned *flags) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, c->bind_address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(c->port);
        return SP_OK;
    }
    if (inet_pton(AF_INET6, c->bind_address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(c->port);
        /* "::" takes IPv4 clients too; a specific address only its own */
        *flags |= IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
        return SP_OK;
    }
    return SP_ERR_BAD_CONFIG;
}

sp_error sp_http_server_start(const sp_http_config *config, const sp_http_handlers *handlers,
                              sp_http_server **out) {
    SP_ENSURE(config != NULL && handlers != NULL && handlers->on_request != NULL && out != NULL,
              SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_GUARD(sp_http_config_check(config));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    struct sockaddr_storage addr;
    SP_GUARD(sp_bind_addr(config, &addr, &flags));

    sp_http_server *s = sp_calloc(1, sizeof *s);
    SP_ENSURE(s != NULL, SP_ERR_NO_MEMORY);
    if (pthread_mutex_init(&s->route_lock, NULL) != 0) {
        sp_free(s);
        return SP_ERR_NO_MEMORY;
    }
    s->handlers = *handlers;
    s->max_body = config->max_body;
    s->metrics = config->metrics;
    atomic_init(&s->accepting, true);
    atomic_init(&s->stopping, false);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->unresumed, 0);
    atomic_init(&s->n_routes, 0);

    sp_error rc = SP_OK;
    char *key_pem = NULL;
    size_t key_len = 0;
    if (s->metrics != NULL) {
        SP_GUARD_GOTO(sp_metrics_get(s->metrics, SP_METRIC_GAUGE, "sealpost_http_in_flight",
                                     "HTTP requests being handled", NULL, NULL, 0, &s->m_in_flight),
                      rc, fail);
        SP_GUARD_GOTO(sp_metrics_get(s->metrics, SP_METRIC_GAUGE, "sealpost_http_connections",
                                     "Open HTTP connections", NULL, NULL, 0, &s->m_connections),
                      rc, fail);
    }
    if (config->cert_file != NULL) {
        SP_GUARD_GOTO(sp_pem_read(config->cert_file, false, &s->cert_pem, &s->cert_len), rc, fail);
        SP_GUARD_GOTO(sp_pem_read(config->key_file, true, &key_pem, &key_len), rc, fail);
        SP_GUARD_GOTO(sp_pem_check(s->cert_pem, s->cert_len, key_pem, key_len), rc, fail);
        flags |= MHD_USE_TLS;
    }

    /* libmicrohttpd's per-connection pool holds the request headers and the
     * response's; the 4 KiB are for the latter */
    size_t pool = config->max_header_bytes + 4096;
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, key_pem},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)SP_HTTP_TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
    s->daemon = MHD_start_daemon(
        flags, 0, sp_http_accept, s, sp_http_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, config->threads > 1 ? config->threads : 0, MHD_OPTION_CONNECTION_LIMIT,
        config->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, config->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, config->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_NOTIFY_CONNECTION, sp_http_on_connection, s, MHD_OPTION_NOTIFY_COMPLETED, sp_http_on_completed,
        s, MHD_OPTION_UNESCAPE_CALLBACK, sp_http_no_unescape, s, MHD_OPTION_STRICT_FOR_CLIENT, 1,
        MHD_OPTION_ARRAY, config->cert_file != NULL ? tls_opts : no_opts, MHD_OPTION_END);
    SP_ENSURE_GOTO(s->daemon != NULL, SP_ERR_IO, rc, fail);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : config->port;
    if (key_pem != NULL) sp_free_wiped(key_pem, key_len + 1);
    *out = s;
    return SP_OK;
fail:
    if (key_pem != NULL) sp_free_wiped(key_pem, key_len + 1);
    sp_server_free(s);
    return rc;
}

uint16_t sp_http_server_port(const sp_http_server *server) { return server != NULL ? server->port : 0; }

/* Not MHD_quiesce_daemon: in libmicrohttpd 0.9.75 it races the epoll
 * workers over removing the listening socket from their epoll sets, and
 * the loser aborts the process (MHD_PANIC on ENOENT). The accept policy
 * gets the same effect: a connection that arrives now is closed at once,
 * before any TLS or HTTP, and the ones already open carry on. */
void sp_http_server_quiesce(sp_http_server *server) {
    if (server != NULL) atomic_store(&server->accepting, false);
}

void sp_http_server_stop(sp_http_server *server, unsigned grace_ms) {
    if (server == NULL) return;
    atomic_store(&server->stopping, true);
    sp_http_server_quiesce(server);
    struct timespec tick = {0, 5 * 1000000L};
    for (unsigned waited = 0; waited < grace_ms && atomic_load(&server->in_flight) > 0; waited += 5) {
        nanosleep(&tick, NULL);
    }
    /* libmicrohttpd cannot stop with a connection still suspended (it
     * aborts), and a deferred request's memory is the application's until
     * it resumes it: so past the grace period too, stopping waits for every
     * deferred request to be handed back */
    for (unsigned waited = 0; atomic_load(&server->unresumed) > 0; waited += 5) {
        if (waited % 5000 == 0) {
            sp_log_field f[] = {SP_LOG_I("deferred", atomic_load(&server->unresumed))};
            sp_log(SP_LOG_WARN, "http.stop_waits_for_deferred", f, 1);
        }
        nanosleep(&tick, NULL);
    }
    MHD_stop_daemon(server->daemon);
    sp_server_free(server);
}

/* ---- inside a handler ---- */

const char *sp_http_method(const sp_http_request *req) { return req->method; }
const char *sp_http_path(const sp_http_request *req) { return req->path; }

static int sp_hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

const char *sp_http_query(const sp_http_request *req, const char *name) {
    const char *raw = MHD_lookup_connection_value(req->mhd, MHD_GET_ARGUMENT_KIND, name);
    if (raw == NULL || strchr(raw, '%') == NULL) return raw;
    /* decoded into the request's scratch area; the const is the API's
     * promise to the caller, not a property of the request */
    sp_http_request *r = (sp_http_request *)req;
    size_t len = strlen(raw);
    if (len + 1 > SP_HTTP_SCRATCH - r->scratch_used) return NULL;
    char *out = r->scratch + r->scratch_used, *o = out;
    for (size_t i = 0; i < len; i++) {
        if (raw[i] != '%') {
            *o++ = raw[i];
            continue;
        }
        int hi = i + 2 < len ? sp_hexval(raw[i + 1]) : -1;
        int lo = hi >= 0 ? sp_hexval(raw[i + 2]) : -1;
        /* a stray % or an encoded NUL makes the value unusable */
        if (hi < 0 || lo < 0 || (hi | lo) == 0) return NULL;
        *o++ = (char)(hi << 4 | lo);
        i += 2;
    }
    *o++ = 0;
    r->scratch_used += (size_t)(o - out);
    return out;
}

typedef struct sp_header_count {
    const char *name;
    size_t n;
} sp_header_count;

static enum MHD_Result sp_count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    sp_header_count *hc = cls;
    (void)kind;
    (void)value;
    if (key != NULL && sp_ascii_ieq(key, strlen(key), hc->name)) hc->n++;
    return MHD_YES;
}

const char *sp_http_header(const sp_http_request *req, const char *name, size_t *count) {
    const char *v = MHD_lookup_connection_value(req->mhd, MHD_HEADER_KIND, name);
    if (count != NULL) {
        sp_header_count hc = {name, 0};
        if (v != NULL) (void)MHD_get_connection_values(req->mhd, MHD_HEADER_KIND, sp_count_header, &hc);
        *count = hc.n;
    }
    return v;
}

const uint8_t *sp_http_body(const sp_http_request *req, size_t *len) {
    const sp_http_conn *c = req->conn;
    if (len != NULL) *len = c->body_len;
    return c->body != NULL ? c->body : (const uint8_t *)"";
}

static void sp_peer_fill(sp_http_conn *c, struct MHD_Connection *mhd) {
    if (c->peer_known) return;
    c->peer_known = true;
    c->peer_family = 4;
    memcpy(c->peer_text, "0.0.0.0", 8);
    memset(c->peer_bytes, 0, sizeof c->peer_bytes);
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info == NULL || info->client_addr == NULL) return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        memcpy(c->peer_bytes, &v4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            /* a dual-stack socket's IPv4 client is an IPv4 client */
            memcpy(c->peer_bytes, v6->sin6_addr.s6_addr + 12, 4);
        } else {
            memcpy(c->peer_bytes, &v6->sin6_addr, 16);
            c->peer_family = 6;
        }
    } else {
        return;
    }
    if (inet_ntop(c->peer_family == 4 ? AF_INET : AF_INET6, c->peer_bytes, c->peer_text, sizeof c->peer_text) ==
        NULL) {
        memcpy(c->peer_text, "0.0.0.0", 8);
    }
}

const char *sp_http_peer(const sp_http_request *req) {
    sp_peer_fill(req->conn, req->mhd);
    return req->conn->peer_text;
}

void sp_http_peer_bytes(const sp_http_request *req, uint8_t addr[16], int *family) {
    sp_peer_fill(req->conn, req->mhd);
    memcpy(addr, req->conn->peer_bytes, 16);
    *family = req->conn->peer_family;
}

void sp_http_set_route(sp_http_request *req, const char *route) { req->route = route; }

void sp_http_set_user(sp_http_request *req, void *user, void (*free_fn)(void *)) {
    if (req->user_free != NULL && req->user != NULL && req->user != user) req->user_free(req->user);
    req->user = user;
    req->user_free = free_fn;
}

void *sp_http_user(const sp_http_request *req) { return req->user; }

sp_error sp_http_defer(sp_http_request *req) {
    SP_ENSURE(req != NULL && req->in_request && !req->parked, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->response == NULL && !req->queued, SP_ERR_INVALID_ARGUMENT);
    sp_http_server *s = req->server;
    /* counted before stopping is looked at, and stop sets stopping before
     * it waits for the count: either stop sees this request or this
     * request sees stop (both sequentially consistent) */
    atomic_fetch_add(&s->unresumed, 1);
    if (atomic_load(&s->stopping)) {
        atomic_fetch_sub(&s->unresumed, 1);
        return SP_ERR_UNAVAILABLE;
    }
    /* suspended before the caller hands the request on: a resume from the
     * other thread can then never come first */
    MHD_suspend_connection(req->mhd);
    req->parked = true;
    return SP_OK;
}

void sp_http_resume(sp_http_request *req) {
    if (req == NULL) return;
    /* read before the resume: afterwards the request may already be gone */
    sp_http_server *s = req->server;
    MHD_resume_connection(req->mhd);
    atomic_fetch_sub(&s->unresumed, 1);
}

static bool sp_token_ok(const char *s) {
    if (*s == 0) return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        if (!ok) return false;
    }
    return true;
}

static bool sp_value_ok(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    return true;
}

sp_error sp_http_add_header(sp_http_request *req, const char *name, const char *value) {
    SP_ENSURE(req != NULL && name != NULL && value != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->response == NULL && !req->queued, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_token_ok(name), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_value_ok(value), SP_ERR_BAD_HEADER_VALUE);
    SP_ENSURE(req->n_add < SP_HTTP_MAX_ADD_HEADERS, SP_ERR_TOO_LARGE);
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
    SP_ENSURE(nl + vl <= SP_HTTP_HEADER_SPACE - req->header_used, SP_ERR_TOO_LARGE);
    char *n = req->header_space + req->header_used;
    memcpy(n, name, nl);
    memcpy(n + nl, value, vl);
    req->header_used += nl + vl;
    req->add_names[req->n_add] = n;
    req->add_values[req->n_add] = n + nl;
    req->n_add++;
    return SP_OK;
}

sp_error sp_http_respond(sp_http_request *req, unsigned status, const char *content_type, const void *body,
                         size_t len) {
    SP_ENSURE(req != NULL && (body != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->response == NULL && !req->queued, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(status >= 100 && status <= 599, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(content_type == NULL || sp_value_ok(content_type), SP_ERR_BAD_HEADER_VALUE);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(len ? body : ""), MHD_RESPMEM_MUST_COPY);
    SP_ENSURE(resp != NULL, SP_ERR_NO_MEMORY);
    bool ok = MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES &&
              MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
    if (ok && content_type != NULL) ok = MHD_add_response_header(resp, "Content-Type", content_type) == MHD_YES;
    for (size_t i = 0; ok && i < req->n_add; i++) {
        ok = MHD_add_response_header(resp, req->add_names[i], req->add_values[i]) == MHD_YES;
    }
    if (!ok) {
        MHD_destroy_response(resp);
        return SP_ERR_NO_MEMORY;
    }
    req->response = resp;
    req->status = status;
    return SP_OK;
}
