/*
 * The outbound HTTP client: one libcurl multi handle per worker thread and
 * a pool of request slots, each an easy handle with its header list and
 * response buffer, so that a provider pushed at tens of thousands of
 * requests a second costs no allocation of ours per request once the pool
 * has grown to the load.
 *
 * A slot's header list is a fixed array of curl_slist nodes pointing into
 * one buffer the slot keeps (curl only reads the list), instead of a
 * curl_slist_append per header per request. The response body goes into a
 * buffer that grows once up to max_response_body and is kept; what is past
 * the limit is counted as truncated and dropped, never an error, since a
 * provider's verbose error page must not fail a send.
 *
 * The connection cache, TLS sessions and HTTP/2 multiplexing are libcurl's
 * multi handle's: every easy handle of the client shares them, so a steady
 * load on one provider stays on the connections it opened
 * (sp_http_client_connects counts new ones, for the test that checks it).
 *
 * Requests to one origin beyond its connections wait here, not in libcurl:
 * libcurl parks a request that finds every allowed connection busy and
 * sets it up again from its URL when one frees, so with 256 requests over
 * 8 HTTP/1.1 connections most requests were set up twice (URL parsed,
 * connection cache searched), a fifth of the sender's time. An origin is
 * given max_connections_per_host requests at a time until one of its
 * answers came over HTTP/2, then up to max_in_flight (streams share a
 * connection). A waiting request's timeout starts when it is handed on.
 *
 * A 401 on a request carrying an OAuth 2.0 token means the provider no
 * longer takes that token (revoked, rotated, clocks apart): the slot drops
 * it from the shared cache (only if nobody renewed it meanwhile), takes a
 * fresh one and goes again on the same easy handle, once. The second
 * answer is the one reported, flagged as retried.
 *
 * Also here: Retry-After parsing and the backoff schedule, both pure.
 */
#include <pthread.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "http/sp_http_client_internal.h"

/* the caller's headers, then "Expect:" and Authorization */
#define SLOT_LINES (SP_HTTP_CLIENT_MAX_HEADERS + 2u)
#define BEARER_PREFIX "Authorization: Bearer "
#define BODY_FIRST_CAP 4096u
/* origins tracked at once; past that a request goes straight to libcurl */
#define CLIENT_ORIGINS 32u

typedef struct slot {
    CURL *easy;
    struct slot *next_free;
    struct slot *next_waiting;
    struct origin *origin; /* NULL: not counted against an origin */
    void *user;
    sp_oauth2 *oauth2;
    bool retried;
    /* "name: value" lines, NUL-separated, in hdr; nodes[i].data = hdr + off[i] */
    char *hdr;
    size_t hdr_cap, hdr_len;
    size_t off[SLOT_LINES];
    size_t n_lines;
    size_t token_off, token_len; /* the bearer token inside hdr (len 0: none) */
    struct curl_slist nodes[SLOT_LINES];
    /* response body */
    uint8_t *body;
    size_t body_cap, body_len, body_max;
    bool truncated, body_oom;
} slot;

/* Requests of one scheme://host:port: those libcurl has, those waiting. */
typedef struct origin {
    uint64_t hash; /* of the case-folded origin; 0: entry unused */
    size_t active;
    bool multiplexed; /* its last answer came over HTTP/2 or later */
    slot *wait_head, *wait_tail;
} origin;

struct sp_http_client {
    CURLM *multi;
    sp_http_client_config cfg;
    slot **slots; /* every slot made so far, for free */
    size_t n_slots, slots_cap;
    slot *free_list;
    size_t in_flight; /* submitted and not yet reported: active and waiting */
    uint64_t connects;
    origin origins[CLIENT_ORIGINS];
};

/* ---- shared with oauth2.c ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

sp_error sp_http_curl_init(void) {
    SP_ENSURE(pthread_once(&curl_once, curl_init_once) == 0, SP_ERR_NO_MEMORY);
    return curl_init_rc == CURLE_OK ? SP_OK : SP_ERR_NO_MEMORY;
}

int64_t sp_http_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* 127.a.b.c with each part a decimal of at most 3 digits and <= 255 */
static bool is_loopback_v4(const char *h, size_t len) {
    if (len < 9 || memcmp(h, "127.", 4) != 0) return false;
    unsigned parts = 2, digits = 0, value = 0; /* "127" and the one being read */
    for (size_t i = 4; i < len; i++) {
        if (h[i] == '.') {
            if (digits == 0) return false;
            parts++;
            digits = 0;
            value = 0;
        } else if (is_digit(h[i]) && digits < 3) {
            value = value * 10 + (unsigned)(h[i] - '0');
            digits++;
            if (value > 255) return false;
        } else {
            return false;
        }
    }
    return parts == 4 && digits > 0;
}

sp_error sp_http_url_check(const char *url) {
    SP_ENSURE(url != NULL, SP_ERR_INVALID_ARGUMENT);
    size_t len = strnlen(url, SP_HTTP_CLIENT_MAX_URL + 1);
    SP_ENSURE(len <= SP_HTTP_CLIENT_MAX_URL, SP_ERR_TOO_LARGE);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)url[i];
        SP_ENSURE(ch > 0x20 && ch < 0x7f, SP_ERR_INVALID_ARGUMENT);
    }
    bool plain;
    size_t at;
    if (len >= 8 && sp_ascii_ieq(url, 8, "https://")) {
        plain = false;
        at = 8;
    } else if (len >= 7 && sp_ascii_ieq(url, 7, "http://")) {
        plain = true;
        at = 7;
    } else {
        return SP_ERR_INVALID_ARGUMENT;
    }
    size_t end = at;
    while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#') {
        SP_ENSURE(url[end] != '@' && url[end] != '\\', SP_ERR_INVALID_ARGUMENT); /* no user info */
        end++;
    }
    SP_ENSURE(end > at, SP_ERR_INVALID_ARGUMENT);
    /* host, then an optional :port */
    const char *host = url + at;
    size_t host_len;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', end - at);
        SP_ENSURE(close != NULL, SP_ERR_INVALID_ARGUMENT);
        host_len = (size_t)(close - host) + 1;
    } else {
        const char *colon = memchr(host, ':', end - at);
        host_len = colon != NULL ? (size_t)(colon - host) : end - at;
    }
    SP_ENSURE(host_len > 0, SP_ERR_INVALID_ARGUMENT);
    size_t rest = end - at - host_len;
    if (rest > 0) {
        uint64_t port = 0;
        SP_ENSURE(host[host_len] == ':' && rest >= 2, SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(sp_parse_u64(host + host_len + 1, rest - 1, 65535, &port) == SP_OK && port > 0,
                  SP_ERR_INVALID_ARGUMENT);
    }
    if (plain) {
        bool loopback = is_loopback_v4(host, host_len) || (host_len == 5 && memcmp(host, "[::1]", 5) == 0) ||
                        sp_ascii_ieq(host, host_len, "localhost");
        SP_ENSURE(loopback, SP_ERR_INVALID_ARGUMENT);
    }
    return SP_OK;
}

/* Lets a certificate in the CA file anchor the chain even when it is not
 * a CA's: the peer's own self-signed certificate, pinned. */
static CURLcode partial_chain_ctx(CURL *easy, void *ssl_ctx, void *arg) {
    (void)easy;
    (void)arg;
    X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
    if (store == NULL || X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN) != 1) return CURLE_SSL_CERTPROBLEM;
    return CURLE_OK;
}

sp_error sp_http_easy_base(CURL *e, const char *ca_file, bool allow_self_signed) {
    bool ok = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK;
    if (ok && ca_file != NULL) ok = curl_easy_setopt(e, CURLOPT_CAINFO, ca_file) == CURLE_OK;
    if (ok && allow_self_signed) ok = curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, partial_chain_ctx) == CURLE_OK;
    return ok ? SP_OK : SP_ERR_INVALID_ARGUMENT;
}

/* ---- Retry-After and backoff (pure) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool two_digits(const char *p, unsigned max, unsigned *out) {
    if (!is_digit(p[0]) || !is_digit(p[1])) return false;
    *out = (unsigned)(p[0] - '0') * 10 + (unsigned)(p[1] - '0');
    return *out <= max;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate) to Unix seconds */
static bool parse_imf_fixdate(const char *s, size_t len, int64_t *out) {
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (len != 29 || memcmp(s + 3, ", ", 2) != 0 || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return false;
    bool day_ok = false;
    for (size_t i = 0; i < SP_ARRAY_LEN(days); i++) day_ok = day_ok || memcmp(s, days[i], 3) == 0;
    unsigned month = 0;
    for (unsigned i = 0; i < 12; i++) {
        if (memcmp(s + 8, months[i], 3) == 0) month = i + 1;
    }
    unsigned day, hh, mm, ss;
    uint64_t year;
    if (!day_ok || month == 0 || !two_digits(s + 5, 31, &day) || day == 0 ||
        sp_parse_u64(s + 12, 4, 9999, &year) != SP_OK || year < 1970 || !two_digits(s + 17, 23, &hh) ||
        !two_digits(s + 20, 59, &mm) || !two_digits(s + 23, 60, &ss))
        return false;
    *out = days_from_civil((int64_t)year, month, day) * 86400 + (int64_t)hh * 3600 + (int64_t)mm * 60 + ss;
    return true;
}

int64_t sp_http_parse_retry_after(const char *v, size_t len, int64_t now_unix_s) {
    if (v == NULL) return -1;
    while (len > 0 && (v[0] == ' ' || v[0] == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
    if (len == 0) return -1;
    const int64_t cap_s = SP_HTTP_RETRY_AFTER_MAX_MS / 1000;
    bool digits = true;
    for (size_t i = 0; i < len; i++) digits = digits && is_digit(v[i]);
    if (digits) {
        /* any number of digits: a long one is simply more than the cap */
        int64_t s = 0;
        for (size_t i = 0; i < len && s <= cap_s; i++) s = s * 10 + (v[i] - '0');
        return (s > cap_s ? cap_s : s) * 1000;
    }
    int64_t when;
    if (!parse_imf_fixdate(v, len, &when)) return -1;
    int64_t delta = when - now_unix_s;
    if (delta <= 0) return 0;
    return (delta > cap_s ? cap_s : delta) * 1000;
}

uint64_t sp_http_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, int64_t retry_after_ms,
                            uint32_t random_u32) {
    uint64_t ceiling = base_ms < max_ms ? base_ms : max_ms;
    for (unsigned i = 1; i < attempt && ceiling < max_ms; i++) ceiling = ceiling > max_ms / 2 ? max_ms : ceiling * 2;
    /* uniform in [0, ceiling]: the top 32 bits of (ceiling + 1) * r / 2^32,
     * split so that the product cannot overflow */
    uint64_t span = ceiling + (ceiling < UINT64_MAX);
    uint64_t hi = span >> 32, lo = span & 0xffffffffu;
    uint64_t wait = hi * random_u32 + ((lo * random_u32) >> 32);
    if (wait > ceiling) wait = ceiling;
    if (retry_after_ms >= 0 && wait < (uint64_t)retry_after_ms) wait = (uint64_t)retry_after_ms;
    return wait < max_ms ? wait : max_ms;
}

/* ---- the client ---- */

sp_http_client_config sp_http_client_config_default(void) {
    sp_http_client_config c = {
        .max_in_flight = 256,
        .max_connections_per_host = 8,
        .connect_timeout_ms = 5000,
        .timeout_ms = 30000,
        .max_response_body = 64u << 10,
        .ca_file = NULL,
        .allow_self_signed = false,
        .http_version = SP_HTTP_CLIENT_PREFER_HTTP2,
    };
    return c;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
    slot *s = arg;
    size_t len = size * n;
    size_t room = s->body_max - s->body_len;
    size_t take = len < room ? len : room;
    if (take < len) s->truncated = true;
    if (take > 0 && s->body_len + take > s->body_cap) {
        size_t cap = s->body_cap > 0 ? s->body_cap : BODY_FIRST_CAP;
        while (cap < s->body_len + take) cap = cap > s->body_max / 2 ? s->body_max : cap * 2;
        uint8_t *grown = sp_malloc(cap);
        if (grown == NULL) {
            /* the status still counts; only the body is lost */
            s->body_oom = true;
            s->truncated = true;
            return len;
        }
        if (s->body_len > 0) memcpy(grown, s->body, s->body_len);
        sp_free(s->body);
        s->body = grown;
        s->body_cap = cap;
    }
    if (take > 0) {
        memcpy(s->body + s->body_len, data, take);
        s->body_len += take;
    }
    return len;
}

static void slot_free(slot *s) {
    if (s == NULL) return;
    if (s->easy != NULL) curl_easy_cleanup(s->easy);
    if (s->hdr != NULL) sp_free_wiped(s->hdr, s->hdr_cap);
    sp_free(s->body);
    sp_free(s);
}

static sp_error slot_new(sp_http_client *c, slot **out) {
    if (c->n_slots == c->slots_cap) {
        /* one more than max_in_flight: a completion callback may submit
         * before the slot it is reporting goes back to the pool */
        size_t cap = c->slots_cap == 0 ? 16 : c->slots_cap * 2;
        if (cap > (size_t)c->cfg.max_in_flight + 1) cap = (size_t)c->cfg.max_in_flight + 1;
        slot **grown = sp_calloc(cap, sizeof *grown);
        SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
        if (c->n_slots > 0) memcpy(grown, c->slots, c->n_slots * sizeof *grown);
        sp_free(c->slots);
        c->slots = grown;
        c->slots_cap = cap;
    }
    slot *s = sp_calloc(1, sizeof *s);
    SP_ENSURE(s != NULL, SP_ERR_NO_MEMORY);
    s->body_max = c->cfg.max_response_body;
    s->easy = curl_easy_init();
    sp_error rc = s->easy != NULL ? SP_OK : SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_http_easy_base(s->easy, c->cfg.ca_file, c->cfg.allow_self_signed);
    long version = c->cfg.http_version == SP_HTTP_CLIENT_HTTP1 ? (long)CURL_HTTP_VERSION_1_1
                                                                : (long)CURL_HTTP_VERSION_2TLS;
    bool ok = rc == SP_OK &&
              curl_easy_setopt(s->easy, CURLOPT_HTTP_VERSION, version) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_PIPEWAIT, 1L) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)c->cfg.timeout_ms) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s) == CURLE_OK &&
              curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s) == CURLE_OK;
    if (!ok) {
        slot_free(s);
        return rc != SP_OK ? rc : SP_ERR_INVALID_ARGUMENT;
    }
    c->slots[c->n_slots++] = s;
    *out = s;
    return SP_OK;
}

/* The origin's entry, made if need be; NULL when every entry is in use
 * (the request then goes to libcurl uncounted). Two origins whose hashes
 * collide share a limit: slower, never wrong. */
static origin *origin_of(sp_http_client *c, const char *url) {
    const char *p = strstr(url, "://"); /* sp_http_url_check saw it */
    size_t end = p != NULL ? (size_t)(p - url) + 3 : 0;
    while (url[end] != '\0' && url[end] != '/' && url[end] != '?' && url[end] != '#') end++;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < end; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch - 'A' + 'a');
        h = (h ^ ch) * 1099511628211ull;
    }
    if (h == 0) h = 1;
    origin *idle = NULL;
    for (size_t i = 0; i < CLIENT_ORIGINS; i++) {
        origin *o = &c->origins[i];
        if (o->hash == h) return o;
        if (idle == NULL && (o->hash == 0 || (o->active == 0 && o->wait_head == NULL))) idle = o;
    }
    if (idle != NULL && idle->hash != h) {
        /* an idle entry forgets its origin, HTTP/2 included: relearned on
         * the first answer */
        memset(idle, 0, sizeof *idle);
        idle->hash = h;
    }
    return idle;
}

static size_t origin_cap(const sp_http_client *c, const origin *o) {
    return o->multiplexed ? c->cfg.max_in_flight : c->cfg.max_connections_per_host;
}

static void slot_release(sp_http_client *c, slot *s) {
    /* the bearer token is a secret: gone from the buffer as soon as the
     * request is */
    if (s->token_len > 0) sp_wipe(s->hdr + s->token_off, s->token_len);
    s->token_len = 0;
    s->user = NULL;
    s->oauth2 = NULL;
    s->origin = NULL;
    s->next_waiting = NULL;
    s->next_free = c->free_list;
    c->free_list = s;
}

static bool is_tchar(unsigned char ch) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static sp_error header_check(const sp_http_client_header *h, bool has_oauth2, size_t *name_len, size_t *value_len) {
    SP_ENSURE(h->name != NULL && h->value != NULL, SP_ERR_INVALID_ARGUMENT);
    size_t n = strnlen(h->name, SP_HTTP_CLIENT_MAX_HEADER_BYTES + 1);
    size_t v = strnlen(h->value, SP_HTTP_CLIENT_MAX_HEADER_BYTES + 1);
    SP_ENSURE(n <= SP_HTTP_CLIENT_MAX_HEADER_BYTES && v <= SP_HTTP_CLIENT_MAX_HEADER_BYTES, SP_ERR_TOO_LARGE);
    SP_ENSURE(n > 0, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++) SP_ENSURE(is_tchar((unsigned char)h->name[i]), SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < v; i++) {
        unsigned char ch = (unsigned char)h->value[i];
        SP_ENSURE(ch == '\t' || (ch >= 0x20 && ch != 0x7f), SP_ERR_BAD_HEADER_VALUE);
    }
    /* framing and connection management are the client's; the token is the cache's */
    SP_ENSURE(!sp_ascii_ieq(h->name, n, "content-length") && !sp_ascii_ieq(h->name, n, "transfer-encoding") &&
                  !sp_ascii_ieq(h->name, n, "connection") && !sp_ascii_ieq(h->name, n, "host") &&
                  !(has_oauth2 && sp_ascii_ieq(h->name, n, "authorization")),
              SP_ERR_INVALID_ARGUMENT);
    *name_len = n;
    *value_len = v;
    return SP_OK;
}

static sp_error hdr_reserve(slot *s, size_t need) {
    if (s->hdr_len + need <= s->hdr_cap) return SP_OK;
    size_t cap = s->hdr_cap > 0 ? s->hdr_cap : 1024;
    while (cap < s->hdr_len + need) cap *= 2;
    char *grown = sp_malloc(cap);
    SP_ENSURE(grown != NULL, SP_ERR_NO_MEMORY);
    if (s->hdr_len > 0) memcpy(grown, s->hdr, s->hdr_len);
    if (s->hdr != NULL) sp_free_wiped(s->hdr, s->hdr_cap);
    s->hdr = grown;
    s->hdr_cap = cap;
    return SP_OK;
}

/* Appends one line made of up to three pieces, NUL-terminated. */
static sp_error hdr_line(slot *s, const char *a, size_t a_len, const char *b, size_t b_len, const char *c,
                         size_t c_len) {
    SP_ENSURE(s->n_lines < SLOT_LINES, SP_ERR_TOO_LARGE);
    SP_GUARD(hdr_reserve(s, a_len + b_len + c_len + 1));
    s->off[s->n_lines++] = s->hdr_len;
    memcpy(s->hdr + s->hdr_len, a, a_len);
    if (b_len > 0) memcpy(s->hdr + s->hdr_len + a_len, b, b_len);
    if (c_len > 0) memcpy(s->hdr + s->hdr_len + a_len + b_len, c, c_len);
    s->hdr_len += a_len + b_len + c_len;
    s->hdr[s->hdr_len++] = '\0';
    return SP_OK;
}

/* The node list over the lines, after the buffer has stopped moving. */
static void hdr_link(slot *s) {
    for (size_t i = 0; i < s->n_lines; i++) {
        s->nodes[i].data = s->hdr + s->off[i];
        s->nodes[i].next = i + 1 < s->n_lines ? &s->nodes[i + 1] : NULL;
    }
}

/* Appends the Authorization line with a token from the cache. */
static sp_error hdr_bearer(slot *s, int64_t now_ms) {
    char token[SP_OAUTH2_MAX_TOKEN + 1];
    size_t len = 0;
    sp_error rc = sp_oauth2_token(s->oauth2, now_ms, token, sizeof token, &len);
    if (rc == SP_OK) {
        rc = hdr_line(s, BEARER_PREFIX, strlen(BEARER_PREFIX), token, len, NULL, 0);
        if (rc == SP_OK) {
            s->token_off = s->off[s->n_lines - 1] + strlen(BEARER_PREFIX);
            s->token_len = len;
        }
    }
    sp_wipe(token, sizeof token);
    return rc;
}

sp_error sp_http_client_new(const sp_http_client_config *cfg, sp_http_client **out) {
    SP_ENSURE(cfg != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_ENSURE(cfg->max_in_flight >= 1 && cfg->max_in_flight <= SP_HTTP_CLIENT_MAX_IN_FLIGHT, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->max_connections_per_host >= 1 && cfg->max_connections_per_host <= cfg->max_in_flight,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->connect_timeout_ms >= 1 && cfg->connect_timeout_ms <= SP_HTTP_CLIENT_MAX_CONNECT_TIMEOUT_MS,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->timeout_ms >= cfg->connect_timeout_ms && cfg->timeout_ms <= SP_HTTP_CLIENT_MAX_TIMEOUT_MS,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->max_response_body <= SP_HTTP_CLIENT_MAX_BODY_KEPT, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->http_version == SP_HTTP_CLIENT_PREFER_HTTP2 || cfg->http_version == SP_HTTP_CLIENT_HTTP1,
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(!cfg->allow_self_signed || (cfg->ca_file != NULL && cfg->ca_file[0] != '\0'), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_http_curl_init());

    sp_http_client *c = sp_calloc(1, sizeof *c);
    SP_ENSURE(c != NULL, SP_ERR_NO_MEMORY);
    c->cfg = *cfg;
    c->cfg.ca_file = NULL;
    sp_error rc = SP_OK;
    if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0') {
        size_t n = strlen(cfg->ca_file);
        char *copy = sp_malloc(n + 1);
        SP_ENSURE_GOTO(copy != NULL, SP_ERR_NO_MEMORY, rc, fail);
        memcpy(copy, cfg->ca_file, n + 1);
        c->cfg.ca_file = copy;
    }
    c->multi = curl_multi_init();
    SP_ENSURE_GOTO(c->multi != NULL, SP_ERR_NO_MEMORY, rc, fail);
    bool ok = curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) == CURLM_OK &&
              curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->max_connections_per_host) ==
                  CURLM_OK &&
              curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_in_flight) == CURLM_OK;
    SP_ENSURE_GOTO(ok, SP_ERR_INVALID_ARGUMENT, rc, fail);
    *out = c;
    return SP_OK;
fail:
    sp_http_client_free(c);
    return rc;
}

void sp_http_client_free(sp_http_client *c) {
    if (c == NULL) return;
    for (size_t i = 0; i < c->n_slots; i++) {
        if (c->multi != NULL && c->slots[i]->easy != NULL) (void)curl_multi_remove_handle(c->multi, c->slots[i]->easy);
        slot_free(c->slots[i]);
    }
    sp_free(c->slots);
    if (c->multi != NULL) curl_multi_cleanup(c->multi);
    sp_free((void *)c->cfg.ca_file);
    sp_free(c);
}

size_t sp_http_client_in_flight(const sp_http_client *c) { return c != NULL ? c->in_flight : 0; }
uint64_t sp_http_client_connects(const sp_http_client *c) { return c != NULL ? c->connects : 0; }

sp_error sp_http_client_submit(sp_http_client *c, const sp_http_client_request *req, void *user) {
    SP_ENSURE(c != NULL && req != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->method == SP_HTTP_CLIENT_GET || req->method == SP_HTTP_CLIENT_POST, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->method == SP_HTTP_CLIENT_POST || (req->body == NULL && req->body_len == 0),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->body != NULL || req->body_len == 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(req->body_len <= (size_t)INT64_MAX, SP_ERR_TOO_LARGE);
    SP_ENSURE(req->n_headers <= SP_HTTP_CLIENT_MAX_HEADERS, SP_ERR_TOO_LARGE);
    SP_ENSURE(req->headers != NULL || req->n_headers == 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_http_url_check(req->url));
    SP_ENSURE(c->in_flight < c->cfg.max_in_flight, SP_ERR_UNAVAILABLE);

    /* every header is checked before a slot is touched */
    size_t total = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        size_t n, v;
        SP_GUARD(header_check(&req->headers[i], req->oauth2 != NULL, &n, &v));
        total += n + v + 3;
    }
    SP_ENSURE(total <= SP_HTTP_CLIENT_MAX_HEADER_BYTES, SP_ERR_TOO_LARGE);

    slot *s = c->free_list;
    if (s != NULL) {
        c->free_list = s->next_free;
    } else {
        SP_GUARD(slot_new(c, &s));
    }
    s->next_free = NULL;
    s->user = user;
    s->oauth2 = req->oauth2;
    s->retried = false;
    s->hdr_len = 0;
    s->n_lines = 0;
    s->token_len = 0;
    s->body_len = 0;
    s->truncated = false;
    s->body_oom = false;

    sp_error rc = SP_OK;
    for (size_t i = 0; i < req->n_headers && rc == SP_OK; i++) {
        const sp_http_client_header *h = &req->headers[i];
        size_t v = strlen(h->value);
        /* "Name;" is how libcurl sends an empty value ("Name:" would drop the header) */
        rc = v == 0 ? hdr_line(s, h->name, strlen(h->name), ";", 1, NULL, 0)
                    : hdr_line(s, h->name, strlen(h->name), ": ", 2, h->value, v);
    }
    /* no 100-continue round trip before a body */
    if (rc == SP_OK && req->method == SP_HTTP_CLIENT_POST) rc = hdr_line(s, "Expect:", 7, NULL, 0, NULL, 0);
    if (rc == SP_OK && req->oauth2 != NULL) rc = hdr_bearer(s, sp_http_now_ms());
    if (rc != SP_OK) {
        slot_release(c, s);
        return rc;
    }
    hdr_link(s);

    CURL *e = s->easy;
    bool ok = curl_easy_setopt(e, CURLOPT_URL, req->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->n_lines > 0 ? s->nodes : NULL) == CURLE_OK;
    if (ok && req->method == SP_HTTP_CLIENT_POST) {
        ok = curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "") == CURLE_OK;
    } else if (ok) {
        ok = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    }
    if (!ok) {
        slot_release(c, s);
        return SP_ERR_NO_MEMORY; /* libcurl copies the URL: the only way these fail on checked input */
    }
    origin *o = origin_of(c, req->url);
    if (o != NULL && o->active >= origin_cap(c, o)) {
        s->origin = o;
        if (o->wait_tail != NULL) o->wait_tail->next_waiting = s;
        else o->wait_head = s;
        o->wait_tail = s;
        c->in_flight++;
        return SP_OK;
    }
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        slot_release(c, s);
        return mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO;
    }
    s->origin = o;
    if (o != NULL) o->active++;
    c->in_flight++;
    return SP_OK;
}

static sp_error classify_status(long status) {
    if (status >= 200 && status < 300) return SP_OK;
    if (status == 408 || status == 429 || (status >= 500 && status < 600)) return SP_ERR_PROVIDER_UNAVAILABLE;
    if (status >= 300 && status < 500) return SP_ERR_PROVIDER_REJECTED;
    return SP_ERR_PROVIDER_UNAVAILABLE; /* a status no server should send: not the message's fault */
}

static sp_error classify_curl(CURLcode rc) {
    return rc == CURLE_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_NETWORK;
}

/* The same request again with a fresh token, on the same easy handle. */
static sp_error retry_with_new_token(sp_http_client *c, slot *s) {
    sp_oauth2_invalidate(s->oauth2, s->hdr + s->token_off, s->token_len);
    sp_wipe(s->hdr + s->token_off, s->token_len);
    /* the Authorization line is the last one: rewrite it in place */
    s->n_lines--;
    s->hdr_len = s->off[s->n_lines];
    s->token_len = 0;
    SP_GUARD(hdr_bearer(s, sp_http_now_ms()));
    hdr_link(s);
    s->body_len = 0;
    s->truncated = false;
    s->body_oom = false;
    s->retried = true;
    CURLMcode mc = curl_multi_add_handle(c->multi, s->easy);
    SP_ENSURE(mc == CURLM_OK, mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO);
    return SP_OK;
}

/* Gives libcurl the origin's waiting requests its limit now allows; one
 * libcurl refuses is reported failed. Returns how many were reported. */
static size_t hand_on(sp_http_client *c, origin *o, sp_http_client_done_fn done, void *ctx) {
    size_t reported = 0;
    while (o->wait_head != NULL && o->active < origin_cap(c, o)) {
        slot *s = o->wait_head;
        o->wait_head = s->next_waiting;
        if (o->wait_head == NULL) o->wait_tail = NULL;
        s->next_waiting = NULL;
        CURLMcode mc = curl_multi_add_handle(c->multi, s->easy);
        if (mc == CURLM_OK) {
            o->active++;
            continue;
        }
        sp_http_client_response r;
        memset(&r, 0, sizeof r);
        r.retry_after_ms = -1;
        r.result = mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO;
        r.detail = "not started";
        r.body = (const uint8_t *)"";
        c->in_flight--;
        reported++;
        done(ctx, s->user, &r);
        slot_release(c, s);
    }
    return reported;
}

static size_t drain(sp_http_client *c, sp_http_client_done_fn done, void *ctx) {
    size_t n = 0;
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *e = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg dies with remove_handle */
        slot *s = NULL;
        (void)curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
        long status = 0, conns = 0;
        curl_off_t total_us = 0;
        (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        (void)curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &conns);
        (void)curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total_us);
        if (conns > 0) c->connects += (uint64_t)conns;
        (void)curl_multi_remove_handle(c->multi, e);

        sp_http_client_response r;
        memset(&r, 0, sizeof r);
        r.retry_after_ms = -1;
        r.status = result == CURLE_OK && status > 0 && status < 1000 ? (unsigned)status : 0;
        r.retried = s->retried;
        if (result == CURLE_OK && status == 401 && s->oauth2 != NULL && !s->retried) {
            sp_error rc = retry_with_new_token(c, s);
            if (rc == SP_OK) continue;
            r.result = rc; /* no token to try again with: the cache's reason */
            r.retried = true;
            r.detail = "no fresh OAuth 2.0 token";
        } else if (result != CURLE_OK) {
            r.result = classify_curl(result);
            r.detail = curl_easy_strerror(result);
        } else {
            r.result = classify_status(status);
            r.detail = r.result == SP_OK ? "ok" : "provider status";
        }
        if (s->body_oom && r.result == SP_OK) r.detail = "response body dropped: out of memory";
        struct curl_header *h = NULL;
        if (r.status != 0 && curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h != NULL &&
            h->value != NULL) {
            r.retry_after_ms = sp_http_parse_retry_after(h->value, strlen(h->value), (int64_t)time(NULL));
        }
        r.body = s->body != NULL ? s->body : (const uint8_t *)""; /* never NULL, even empty */
        r.body_len = s->body_len;
        r.body_truncated = s->truncated;
        r.total_us = total_us > 0 ? (uint64_t)total_us : 0;
        origin *o = s->origin;
        if (o != NULL) {
            long version = 0;
            if (r.status != 0 && curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version) == CURLE_OK)
                o->multiplexed = version >= CURL_HTTP_VERSION_2_0;
            o->active--;
            /* the waiting go first, before the callback can submit more */
            n += hand_on(c, o, done, ctx);
        }
        c->in_flight--;
        n++;
        done(ctx, s->user, &r);
        slot_release(c, s);
    }
    return n;
}

sp_error sp_http_client_run(sp_http_client *c, int timeout_ms, sp_http_client_done_fn done, void *ctx,
                            size_t *completed) {
    if (completed != NULL) *completed = 0;
    SP_ENSURE(c != NULL && done != NULL && timeout_ms >= 0, SP_ERR_INVALID_ARGUMENT);
    if (c->in_flight == 0) return SP_OK;
    int running = 0;
    CURLMcode mc = curl_multi_perform(c->multi, &running);
    SP_ENSURE(mc == CURLM_OK, mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO);
    size_t n = drain(c, done, ctx);
    if (n == 0 && timeout_ms > 0 && c->in_flight > 0) {
        mc = curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL);
        SP_ENSURE(mc == CURLM_OK, mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO);
        mc = curl_multi_perform(c->multi, &running);
        SP_ENSURE(mc == CURLM_OK, mc == CURLM_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_IO);
        n += drain(c, done, ctx);
    }
    if (completed != NULL) *completed = n;
    return SP_OK;
}
