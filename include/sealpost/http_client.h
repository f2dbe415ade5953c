/*
 * The outbound HTTP client the send pipeline talks to CPaaS providers with,
 * and the OAuth 2.0 client-credentials token cache it authenticates with.
 *
 * sp_http_client is one libcurl multi handle with a pool of reusable easy
 * handles and per-request state, for one worker thread (it is not
 * thread-safe: a worker owns its client). A worker submits requests, which
 * never blocks, and drives them with sp_http_client_run, which reports each
 * finished request once through a completion callback, already classified
 * for the retry logic: SP_OK, SP_ERR_PROVIDER_REJECTED (give up),
 * SP_ERR_PROVIDER_UNAVAILABLE or SP_ERR_NETWORK (retry later, after
 * sp_http_backoff_ms). After warm-up a request allocates nothing of ours:
 * easy handles, header lists and response buffers are kept for the next
 * request, and connections are kept alive and reused (HTTP/2 multiplexed
 * when the provider offers it over TLS).
 *
 * Transport rules that no config can loosen: TLS 1.2 or newer with the
 * peer's certificate and host name verified; plain http:// only to a
 * loopback host (127.0.0.0/8, ::1, localhost); redirects are never
 * followed.
 *
 * sp_oauth2 is shared by every worker of a channel (thread-safe): it holds
 * one access token from the token endpoint, fetched on first use with a
 * blocking call that concurrent callers wait for (one fetch, not one per
 * thread), and refreshed when less than max(30 s, 10 % of its lifetime) is
 * left. A request that names the cache carries "Authorization: Bearer
 * <token>"; a 401 from the provider drops that token and the request is
 * sent once more with a fresh one. Token text and the client secret are
 * secrets: kept in memory that is wiped when freed, never logged.
 */
#ifndef SEALPOST_HTTP_CLIENT_H
#define SEALPOST_HTTP_CLIENT_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_HTTP_CLIENT_MAX_IN_FLIGHT 4096u
#define SP_HTTP_CLIENT_MAX_CONNECT_TIMEOUT_MS 60000u
#define SP_HTTP_CLIENT_MAX_TIMEOUT_MS 600000u
#define SP_HTTP_CLIENT_MAX_BODY_KEPT (16u << 20)
#define SP_HTTP_CLIENT_MAX_HEADERS 32u         /* per request, the caller's */
#define SP_HTTP_CLIENT_MAX_HEADER_BYTES 16384u /* the caller's headers as "name: value", all together */
#define SP_HTTP_CLIENT_MAX_URL 8192u
#define SP_HTTP_RETRY_AFTER_MAX_MS 3600000   /* a longer Retry-After is cut to one hour */

typedef struct sp_http_client sp_http_client;
typedef struct sp_oauth2 sp_oauth2;

typedef enum sp_http_client_version {
    SP_HTTP_CLIENT_PREFER_HTTP2 = 0, /* HTTP/2 over TLS when ALPN offers it, else HTTP/1.1 */
    SP_HTTP_CLIENT_HTTP1 = 1,        /* HTTP/1.1 only */
} sp_http_client_version;

typedef struct sp_http_client_config {
    unsigned max_in_flight;            /* 1..SP_HTTP_CLIENT_MAX_IN_FLIGHT */
    unsigned max_connections_per_host; /* 1..max_in_flight; with HTTP/2 one connection carries many */
    unsigned connect_timeout_ms;       /* 1..SP_HTTP_CLIENT_MAX_CONNECT_TIMEOUT_MS */
    unsigned timeout_ms;               /* whole request, connect included: connect_timeout_ms..MAX_TIMEOUT_MS */
    size_t max_response_body;          /* bytes kept, 0..SP_HTTP_CLIENT_MAX_BODY_KEPT; the rest is dropped */
    const char *ca_file;               /* PEM bundle to trust instead of the system store; NULL: system */
    /* Only with ca_file: a certificate in ca_file is trusted as it stands,
     * even when it is the server's own (self-signed or leaf) rather than a
     * CA, so a test or a pinned provider works. Verification of the chain
     * and the host name stays on; without ca_file this is
     * SP_ERR_INVALID_ARGUMENT. */
    bool allow_self_signed;
    sp_http_client_version http_version;
} sp_http_client_config;

/* Sensible defaults: 256 in flight, 8 connections per host, 5 s to
 * connect, 30 s in all, 64 KiB of response kept, system CAs, HTTP/2
 * preferred. */
SP_API sp_http_client_config sp_http_client_config_default(void);

typedef enum sp_http_client_method {
    SP_HTTP_CLIENT_GET = 0,
    SP_HTTP_CLIENT_POST = 1,
} sp_http_client_method;

typedef struct sp_http_client_header {
    const char *name;  /* an HTTP token; not Authorization when the request names an oauth2 cache */
    const char *value; /* no CR, LF or other control bytes but tab */
} sp_http_client_header;

typedef struct sp_http_client_request {
    sp_http_client_method method;
    const char *url; /* https://..., or http:// to a loopback host; copied */
    const sp_http_client_header *headers; /* copied at submit */
    size_t n_headers;                     /* 0..SP_HTTP_CLIENT_MAX_HEADERS */
    const void *body;                     /* POST only; NOT copied: the caller's until the completion */
    size_t body_len;
    sp_oauth2 *oauth2; /* NULL, or the token cache whose bearer token the request carries */
} sp_http_client_request;

typedef struct sp_http_client_response {
    unsigned status;        /* the final HTTP status; 0 when no response came */
    sp_error result;        /* SP_OK (2xx), SP_ERR_PROVIDER_REJECTED (3xx, 4xx but 408/429),
                               SP_ERR_PROVIDER_UNAVAILABLE (5xx, 408, 429), SP_ERR_NETWORK (no answer:
                               connect, TLS, timeout), SP_ERR_NO_MEMORY, or the token cache's error when
                               no token could be had (SP_ERR_AUTH: bad client credentials) */
    int64_t retry_after_ms; /* Retry-After in ms (delta-seconds or HTTP-date, capped at
                               SP_HTTP_RETRY_AFTER_MAX_MS); -1 when absent or unreadable */
    const uint8_t *body;    /* the first max_response_body bytes (never NULL); valid during the callback only */
    size_t body_len;
    bool body_truncated;    /* the provider sent more than was kept */
    bool retried;           /* a 401 made the client fetch a fresh token and send again; this is the
                               second attempt's result */
    uint64_t total_us;      /* wall time of the (last) attempt */
    const char *detail;     /* a static English word on the failure (libcurl's), never caller data */
} sp_http_client_response;

typedef void (*sp_http_client_done_fn)(void *ctx, void *user, const sp_http_client_response *response);

/* Validates the config (SP_ERR_INVALID_ARGUMENT for a value out of range)
 * and sets up the multi handle; easy handles come as the load needs them. */
SP_API SP_MUST_CHECK sp_error sp_http_client_new(const sp_http_client_config *config, sp_http_client **out);
/* Drops the requests still in flight without reporting them, closes the
 * connections and frees. NULL is a no-op. */
SP_API void sp_http_client_free(sp_http_client *client);

/* Queues a request; `user` comes back with its completion. Never blocks
 * and never calls back. SP_ERR_UNAVAILABLE when max_in_flight requests are
 * under way (run, then try again); SP_ERR_INVALID_ARGUMENT for a URL that
 * is not http(s), has user info, or is plain http to a host that is not
 * loopback, a body on GET, or a header the rules above refuse;
 * SP_ERR_TOO_LARGE past the header or URL limits; the token cache's error
 * (SP_ERR_AUTH, SP_ERR_PROVIDER_UNAVAILABLE, SP_ERR_NETWORK) when it has
 * no token and cannot fetch one; fetching blocks this call. */
SP_API SP_MUST_CHECK sp_error sp_http_client_submit(sp_http_client *client, const sp_http_client_request *request,
                                                    void *user);

/* Moves every request forward, waiting up to timeout_ms (0: not at all)
 * for the network when nothing is ready, and calls done(ctx, user,
 * response) once for each request that finished; *completed (may be NULL)
 * counts them. Returns at once with 0 completions when nothing is in
 * flight. The callback may submit new requests. SP_ERR_NO_MEMORY or
 * SP_ERR_IO when libcurl's multi interface fails (requests stay queued). */
SP_API SP_MUST_CHECK sp_error sp_http_client_run(sp_http_client *client, int timeout_ms, sp_http_client_done_fn done,
                                                 void *ctx, size_t *completed);

/* Requests submitted and not yet reported. */
SP_API size_t sp_http_client_in_flight(const sp_http_client *client);
/* Connections opened so far (for tests and metrics: a steady load to one
 * host should leave this flat). */
SP_API uint64_t sp_http_client_connects(const sp_http_client *client);

/* How long to wait before attempt `attempt` (1 for the first retry):
 * exponential with full jitter, a uniform pick in [0, min(max_ms, base_ms *
 * 2^(attempt-1))] made from `random_u32`, never below retry_after_ms when
 * that is >= 0, and never above max_ms (which wins over Retry-After, so
 * that a provider cannot park a message for longer than the caller
 * allows). Pure: the same arguments give the same answer. */
SP_API uint64_t sp_http_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, int64_t retry_after_ms,
                                   uint32_t random_u32);

/* A Retry-After value (delta-seconds or IMF-fixdate) in milliseconds
 * from now_unix_s, capped at SP_HTTP_RETRY_AFTER_MAX_MS; a date in the
 * past is 0; -1 for anything else. */
SP_API int64_t sp_http_parse_retry_after(const char *value, size_t len, int64_t now_unix_s);

/* ---- OAuth 2.0 client credentials (RFC 6749 section 4.4) ---- */

#define SP_OAUTH2_MAX_TOKEN 4096u        /* access_token characters */
#define SP_OAUTH2_MAX_REPLY (64u << 10)  /* token endpoint reply bytes */
#define SP_OAUTH2_MAX_FIELD 1024u        /* client_id, client_secret, scope, audience */

typedef enum sp_oauth2_auth {
    SP_OAUTH2_AUTH_BASIC = 0, /* HTTP Basic with the form-urlencoded id and secret (section 2.3.1) */
    SP_OAUTH2_AUTH_BODY = 1,  /* client_id and client_secret in the form body */
} sp_oauth2_auth;

typedef struct sp_oauth2_config {
    const char *token_url;     /* https://..., or http:// to a loopback host */
    const char *client_id;     /* 1..SP_OAUTH2_MAX_FIELD bytes, no control bytes */
    const char *client_secret; /* 1..SP_OAUTH2_MAX_FIELD bytes; copied into wiped memory */
    const char *scope;         /* NULL or "": not sent */
    const char *audience;      /* NULL or "": not sent */
    sp_oauth2_auth auth;
    const char *ca_file;       /* as in sp_http_client_config */
    bool allow_self_signed;
    unsigned timeout_ms;       /* a token fetch, 1..SP_HTTP_CLIENT_MAX_TIMEOUT_MS; 0: 10 s */
} sp_oauth2_config;

/* Validates and copies the config (SP_ERR_INVALID_ARGUMENT); fetches
 * nothing yet. */
SP_API SP_MUST_CHECK sp_error sp_oauth2_new(const sp_oauth2_config *config, sp_oauth2 **out);
/* Wipes the secret and the token. NULL is a no-op. No call may be running. */
SP_API void sp_oauth2_free(sp_oauth2 *oauth2);

/* Copies the current access token into out (NUL-terminated, *len without
 * it), fetching one first when there is none or it is due for refresh at
 * now_ms (milliseconds on CLOCK_MONOTONIC; sp_http_client passes its own
 * reading). Concurrent callers wait for one fetch. Errors: SP_ERR_AUTH when
 * the token endpoint refuses the client (400 or 401);
 * SP_ERR_PROVIDER_UNAVAILABLE (5xx, 408, 429) or SP_ERR_NETWORK (no
 * answer): try later; SP_ERR_BAD_JSON for a reply that is not a JSON
 * object with a string access_token, token_type Bearer (any case) and a
 * positive integer expires_in; SP_ERR_TOO_LARGE for a reply over
 * SP_OAUTH2_MAX_REPLY or a token over SP_OAUTH2_MAX_TOKEN;
 * SP_ERR_BUFFER_TOO_SMALL when cap cannot hold the token and its NUL. */
SP_API SP_MUST_CHECK sp_error sp_oauth2_token(sp_oauth2 *oauth2, int64_t now_ms, char *out, size_t cap,
                                              size_t *len);
/* Drops the cached token if it is still `token` (len bytes), so that a 401
 * seen by one worker does not throw away a token another already renewed. */
SP_API void sp_oauth2_invalidate(sp_oauth2 *oauth2, const char *token, size_t len);
/* Token fetches made so far, successful or not. */
SP_API uint64_t sp_oauth2_fetches(const sp_oauth2 *oauth2);

SP_END_DECLS

#endif
