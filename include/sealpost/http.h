/*
 * The HTTPS server sealpostd (and later sealpost-relay) is built on:
 * libmicrohttpd with epoll and a thread pool, TLS 1.2/1.3 only, keep-alive.
 *
 * The application sees two calls per request, both on a server thread:
 *   on_headers  with the method, path, headers and peer address, before any
 *               of the body is read: refuse here (allow-list, credentials,
 *               Content-Length over the route's limit) so that an unwanted
 *               client costs no body upload;
 *   on_request  with the whole body, once it has arrived within max_body.
 * Each must answer (sp_http_respond) or, for on_headers, may let the request
 * go on. The server itself answers what never reaches the application: 413
 * for a body over max_body, 431 for headers over max_header_bytes, 400 for
 * what libmicrohttpd cannot parse, 503 while shutting down; and 500 when a
 * handler returns without answering.
 *
 * The server's 413 comes after on_headers (a client the application
 * refuses learns nothing of the limits): at once when Content-Length
 * announces more than max_body, at the end of a chunked body that passed
 * it (the rest is read and dropped, up to 4 MiB more; past that the
 * connection is cut). Its own answers use the JSON error shape
 * {"error":{"code":"too_large"|"unavailable"|"internal","message":…}};
 * the 431 and 400 that libmicrohttpd sends itself do not.
 *
 * Plain HTTP is served only when the config asks for it and binds a
 * loopback address.
 */
#ifndef SEALPOST_HTTP_H
#define SEALPOST_HTTP_H

#include "sealpost/common.h"
#include "sealpost/error.h"
#include "sealpost/metrics.h"

SP_BEGIN_DECLS

#define SP_HTTP_MAX_BODY_LIMIT (64u << 20)
#define SP_HTTP_MAX_THREADS 64
#define SP_HTTP_PEER_CHARS 46 /* an IPv6 address as text, NUL included */
#define SP_HTTP_MAX_CONNECTIONS 65536u
#define SP_HTTP_MAX_IDLE_TIMEOUT 3600u

typedef struct sp_http_config {
    const char *bind_address;         /* numeric only: "127.0.0.1", "::1", "0.0.0.0", "::" (both families) */
    uint16_t port;                    /* 0: any free port (sp_http_server_port tells) */
    const char *cert_file;            /* PEM; NULL with key_file NULL: plain HTTP */
    const char *key_file;             /* PEM; refused when others (not group) may read it */
    bool allow_plain_http;            /* required for plain HTTP, and only on loopback */
    unsigned threads;                 /* 1..SP_HTTP_MAX_THREADS */
    size_t max_body;                  /* 1..SP_HTTP_MAX_BODY_LIMIT */
    size_t max_header_bytes;          /* per-connection header memory, 4 KiB..1 MiB; past it 431 */
    unsigned max_connections;         /* all clients, 1..SP_HTTP_MAX_CONNECTIONS */
    unsigned max_connections_per_ip;  /* 1..max_connections */
    unsigned idle_timeout_s;          /* a connection idle this long is closed, 1..SP_HTTP_MAX_IDLE_TIMEOUT */
    sp_metrics *metrics;              /* may be NULL: request counts and latencies go here */
} sp_http_config;

typedef struct sp_http_server sp_http_server;
typedef struct sp_http_request sp_http_request;

typedef enum sp_http_verdict {
    SP_HTTP_CONTINUE = 0, /* read the body, then call on_request */
    SP_HTTP_ANSWERED = 1, /* on_headers answered; the body is discarded */
} sp_http_verdict;

typedef struct sp_http_handlers {
    sp_http_verdict (*on_headers)(void *arg, sp_http_request *req); /* may be NULL */
    void (*on_request)(void *arg, sp_http_request *req);
    void *arg;
} sp_http_handlers;

/* Validates the config (SP_ERR_BAD_CONFIG with nothing started when a value
 * is out of range, plain HTTP is asked for off loopback, or the certificate
 * cannot be loaded or does not match the key) and starts listening
 * (SP_ERR_IO when the address cannot be bound). */
SP_API SP_MUST_CHECK sp_error sp_http_server_start(const sp_http_config *config, const sp_http_handlers *handlers,
                                                   sp_http_server **out);
SP_API uint16_t sp_http_server_port(const sp_http_server *server);
/* Stops accepting connections (a new one is closed as soon as it is
 * accepted); requests in flight and open keep-alive connections go on. */
SP_API void sp_http_server_quiesce(sp_http_server *server);
/* Quiesces, waits up to grace_ms for requests in flight to finish, then
 * stops and frees. Meanwhile a new request on an open keep-alive
 * connection gets 503 {"error":{"code":"unavailable",...}} and
 * Connection: close. NULL is a no-op. */
SP_API void sp_http_server_stop(sp_http_server *server, unsigned grace_ms);

/* ---- inside a handler ---- */
SP_API const char *sp_http_method(const sp_http_request *req);
/* The path without the query string, percent-decoding left to the caller. */
SP_API const char *sp_http_path(const sp_http_request *req);
/* A query argument, percent-decoded ('+' is a space), or NULL. NULL too
 * when the value is malformed (a stray '%', an encoded NUL) or the
 * request's decoded values pass 2 KiB in all. */
SP_API const char *sp_http_query(const sp_http_request *req, const char *name);
/* A header (case-insensitive name) or NULL; when the header is repeated,
 * count (may be NULL) tells how often and the first value is returned. */
SP_API const char *sp_http_header(const sp_http_request *req, const char *name, size_t *count);
/* The body (empty in on_headers). */
SP_API const uint8_t *sp_http_body(const sp_http_request *req, size_t *len);
/* The peer's address as text ("127.0.0.1", "::1"). */
SP_API const char *sp_http_peer(const sp_http_request *req);
/* The peer's address as 4 or 16 bytes; *family is 4 or 6. */
SP_API void sp_http_peer_bytes(const sp_http_request *req, uint8_t addr[16], int *family);
/* A label for metrics (e.g. "/v1/profiles/{id}"); unset requests are
 * counted under "other". The string must be static. */
SP_API void sp_http_set_route(sp_http_request *req, const char *route);
/* Storage for the application between on_headers and on_request; freed
 * with free_fn (may be NULL) when the request ends. */
SP_API void sp_http_set_user(sp_http_request *req, void *user, void (*free_fn)(void *));
SP_API void *sp_http_user(const sp_http_request *req);

/* Answering later, from another thread. Inside on_request (only there),
 * sp_http_defer parks the request: when on_request returns, the server
 * thread goes on with other connections instead of waiting. The request,
 * its headers and body stay valid and belong to the application, which
 * answers with sp_http_respond (and sp_http_add_header) from any one
 * thread, then hands the request back with sp_http_resume and must not
 * touch it after that; resumed without an answer, it gets the 500.
 * SP_ERR_UNAVAILABLE while the server is stopping: answer at once then.
 * Every deferred request must be resumed: sp_http_server_stop waits for
 * that, past its grace period if need be. */
SP_API SP_MUST_CHECK sp_error sp_http_defer(sp_http_request *req);
SP_API void sp_http_resume(sp_http_request *req);

/* Adds a response header (before sp_http_respond): name an HTTP token,
 * value without control bytes (SP_ERR_BAD_HEADER_VALUE); at most 16
 * headers and 2 KiB per response (SP_ERR_TOO_LARGE). Every response also
 * carries Cache-Control: no-store and X-Content-Type-Options: nosniff. */
SP_API SP_MUST_CHECK sp_error sp_http_add_header(sp_http_request *req, const char *name, const char *value);
/* Answers once; the body is copied. A second answer is
 * SP_ERR_INVALID_ARGUMENT. */
SP_API SP_MUST_CHECK sp_error sp_http_respond(sp_http_request *req, unsigned status, const char *content_type,
                                              const void *body, size_t len);

SP_END_DECLS

#endif
