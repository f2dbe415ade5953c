/*
 * The HTTPS server, driven by libcurl against a real listening socket on
 * 127.0.0.1 with a certificate made for the run: routing and the request
 * accessors, bodies with NUL bytes, refusals in on_headers that never read
 * the body, keep-alive, the server's own 413/431/500/503 answers, config
 * validation, TLS versions and ciphers, the per-address connection limit,
 * graceful stop, IPv6, metrics and a concurrent load.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "tls_util.h"

#include "sp_test_util.h"

typedef struct {
    char dir[256];
    sp_tls_files tls;
    sp_metrics *metrics;
    sp_http_server *server;
    uint16_t port;
} http_fixture;

/* ---- the application under the server ---- */

static atomic_int headers_calls, request_calls, slow_entered;
static atomic_int twice_rc = -1;
static atomic_int respond_failures; /* checked by every teardown */

static void answer(sp_http_request *req, unsigned status, const char *type, const void *body, size_t len) {
    if (sp_http_respond(req, status, type, body, len) != SP_OK) atomic_fetch_add(&respond_failures, 1);
}

/* Deferred requests (/later…), answered by a thread of the test's own:
 * /later echoes the body with an X-Answered-By header, /later-silent is
 * resumed without an answer, /later-slow waits 300 ms first. */
#define PARKED_MAX 256
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t parked_cond = PTHREAD_COND_INITIALIZER;
static sp_http_request *parked[PARKED_MAX];
static size_t parked_n;
static bool responder_quit;
static atomic_int defer_twice_rc = -1, later_entered;

static void parked_push(sp_http_request *req) {
    pthread_mutex_lock(&parked_lock);
    if (parked_n == PARKED_MAX) { /* cannot happen with the tests' loads; fails the teardown if it does */
        pthread_mutex_unlock(&parked_lock);
        atomic_fetch_add(&respond_failures, 1);
        sp_http_resume(req);
        return;
    }
    parked[parked_n++] = req;
    atomic_fetch_add(&later_entered, 1);
    pthread_cond_signal(&parked_cond);
    pthread_mutex_unlock(&parked_lock);
}

static void *responder(void *unused) {
    (void)unused;
    pthread_mutex_lock(&parked_lock);
    for (;;) {
        while (parked_n == 0 && !responder_quit) pthread_cond_wait(&parked_cond, &parked_lock);
        if (parked_n == 0) break;
        sp_http_request *req = parked[--parked_n];
        pthread_mutex_unlock(&parked_lock);
        const char *path = sp_http_path(req);
        if (strcmp(path, "/later-slow") == 0) sp_test_sleep_ms(300);
        if (strcmp(path, "/later-silent") != 0) {
            size_t len = 0;
            const uint8_t *body = sp_http_body(req, &len);
            if (sp_http_add_header(req, "X-Answered-By", "responder") != SP_OK) atomic_fetch_add(&respond_failures, 1);
            answer(req, 200, "application/octet-stream", len ? body : (const uint8_t *)"later", len ? len : 5);
        }
        sp_http_resume(req);
        pthread_mutex_lock(&parked_lock);
    }
    pthread_mutex_unlock(&parked_lock);
    return NULL;
}

static sp_http_verdict on_headers(void *arg, sp_http_request *req) {
    (void)arg;
    atomic_fetch_add(&headers_calls, 1);
    /* the body is not there yet */
    size_t len = 99;
    (void)sp_http_body(req, &len);
    if (len != 0) return SP_HTTP_CONTINUE; /* makes /refuse fail visibly */
    if (strcmp(sp_http_path(req), "/refuse") == 0) {
        sp_http_set_route(req, "/refuse");
        if (sp_http_add_header(req, "WWW-Authenticate", "none") != SP_OK) return SP_HTTP_CONTINUE;
        if (sp_http_respond(req, 401, "application/json", "{}", 2) != SP_OK) return SP_HTTP_CONTINUE;
        return SP_HTTP_ANSWERED;
    }
    if (strcmp(sp_http_path(req), "/user") == 0) {
        char *u = malloc(8);
        if (u != NULL) memcpy(u, "carried", 8);
        sp_http_set_user(req, u, free);
    }
    return SP_HTTP_CONTINUE;
}

static void on_request(void *arg, sp_http_request *req) {
    (void)arg;
    atomic_fetch_add(&request_calls, 1);
    const char *path = sp_http_path(req);
    if (strncmp(path, "/echo", 5) == 0) {
        sp_http_set_route(req, "/echo");
        size_t len = 0, dup = 0;
        const uint8_t *body = sp_http_body(req, &len);
        const char *q = sp_http_query(req, "q");
        const char *h = sp_http_header(req, "x-dup", &dup);
        char dups[16], family[4];
        uint8_t addr[16];
        int fam = 0;
        sp_http_peer_bytes(req, addr, &fam);
        snprintf(dups, sizeof dups, "%zu", dup);
        snprintf(family, sizeof family, "%d", fam);
        if (sp_http_add_header(req, "X-Method", sp_http_method(req)) != SP_OK ||
            sp_http_add_header(req, "X-Path", path) != SP_OK ||
            sp_http_add_header(req, "X-Query", q != NULL ? q : "(none)") != SP_OK ||
            sp_http_add_header(req, "X-Dup", dups) != SP_OK ||
            sp_http_add_header(req, "X-Dup-First", h != NULL ? h : "(none)") != SP_OK ||
            sp_http_add_header(req, "X-Peer", sp_http_peer(req)) != SP_OK ||
            sp_http_add_header(req, "X-Family", family) != SP_OK) {
            return; /* the 500 tells the test */
        }
        answer(req, 200, "application/octet-stream", body, len);
        return;
    }
    if (strcmp(path, "/silent") == 0) return;
    if (strcmp(path, "/twice") == 0) {
        answer(req, 200, "text/plain", "one", 3);
        atomic_store(&twice_rc, (int)sp_http_respond(req, 201, "text/plain", "two", 3));
        return;
    }
    if (strcmp(path, "/badheader") == 0) {
        sp_error a = sp_http_add_header(req, "X-Evil", "a\r\nSet-Cookie: x=1");
        sp_error b = sp_http_add_header(req, "Bad Name", "v");
        sp_error c = sp_http_respond(req, 99, NULL, NULL, 0);
        bool ok = a == SP_ERR_BAD_HEADER_VALUE && b == SP_ERR_INVALID_ARGUMENT && c == SP_ERR_INVALID_ARGUMENT;
        answer(req, ok ? 204 : 500, NULL, NULL, 0);
        return;
    }
    if (strcmp(path, "/user") == 0) {
        const char *u = sp_http_user(req);
        answer(req, 200, "text/plain", u != NULL ? u : "none", u != NULL ? strlen(u) : 4);
        return;
    }
    if (strncmp(path, "/later", 6) == 0) {
        sp_http_set_route(req, "/later");
        sp_error rc = sp_http_defer(req);
        if (rc == SP_OK) {
            atomic_store(&defer_twice_rc, (int)sp_http_defer(req));
            parked_push(req);
            return;
        }
        answer(req, 503, "text/plain", "not deferred", 12);
        return;
    }
    if (strcmp(path, "/slow") == 0) {
        atomic_store(&slow_entered, 1);
        sp_test_sleep_ms(300);
    }
    answer(req, 200, "text/plain", "ok", 2);
}

static const sp_http_handlers handlers = {on_headers, on_request, NULL};

/* ---- fixture ---- */

static sp_http_config default_config(http_fixture *f) {
    sp_http_config c = {
        .bind_address = "127.0.0.1",
        .port = 0,
        .cert_file = f->tls.cert,
        .key_file = f->tls.key,
        .threads = 2,
        .max_body = 64 * 1024,
        .max_header_bytes = 8192,
        .max_connections = 64,
        .max_connections_per_ip = 32,
        .idle_timeout_s = 10,
        .metrics = f->metrics,
    };
    return c;
}

static void start(http_fixture *f, const sp_http_config *c) {
    assert_ok(sp_http_server_start(c, &handlers, &f->server));
    f->port = sp_http_server_port(f->server);
    assert_true(f->port != 0);
}

static int setup(void **state) {
    http_fixture *f = SP_TEST_FIXTURE_NEW(http_fixture, dir, "sp-http");
    if (f == NULL || !sp_tls_make_cert(f->dir, &f->tls)) return -1;
    if (sp_metrics_new(&f->metrics) != SP_OK) return -1;
    atomic_store(&headers_calls, 0);
    atomic_store(&request_calls, 0);
    atomic_store(&slow_entered, 0);
    atomic_store(&twice_rc, -1);
    atomic_store(&respond_failures, 0);
    *state = f;
    return 0;
}

static int setup_started(void **state) {
    if (setup(state) != 0) return -1;
    http_fixture *f = *state;
    sp_http_config c = default_config(f);
    if (sp_http_server_start(&c, &handlers, &f->server) != SP_OK) return -1;
    f->port = sp_http_server_port(f->server);
    return 0;
}

static int teardown(void **state) {
    http_fixture *f = *state;
    sp_http_server_stop(f->server, 1000);
    sp_metrics_free(f->metrics);
    if (atomic_load(&respond_failures) != 0) {
        print_error("sp_http_respond failed %d times\n", atomic_load(&respond_failures));
        sp_test_fixture_free(f, f->dir);
        return -1;
    }
    return sp_test_fixture_free(f, f->dir);
}

/* ---- a small curl client ---- */

typedef struct {
    char *data;
    size_t len, cap;
} growbuf;

static size_t grow_write(char *p, size_t size, size_t n, void *ud) {
    growbuf *b = ud;
    size_t add = size * n;
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + add + 1) cap *= 2;
        char *g = realloc(b->data, cap);
        if (g == NULL) return 0;
        b->data = g;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = 0;
    return add;
}

typedef struct {
    long status;
    CURLcode rc;
    growbuf body, headers;
} reply;

static void reply_free(reply *r) {
    free(r->body.data);
    free(r->headers.data);
    memset(r, 0, sizeof *r);
}

static CURL *client(const http_fixture *f) {
    CURL *h = curl_easy_init();
    assert_non_null(h);
    curl_easy_setopt(h, CURLOPT_CAINFO, f->tls.cert);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    return h;
}

/* One request on h: method GET without body, POST with one. */
static reply perform(CURL *h, const char *url, const void *body, long len, struct curl_slist *hdrs) {
    reply r;
    memset(&r, 0, sizeof r);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, grow_write);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r.headers);
    r.rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    return r;
}

static void url_of(char *out, size_t cap, const char *scheme, const char *host, uint16_t port, const char *path) {
    assert_true(snprintf(out, cap, "%s://%s:%u%s", scheme, host, port, path) < (int)cap);
}

/* The value of a response header (case-insensitive name) into out. */
static bool header_value(const reply *r, const char *name, char *out, size_t cap) {
    if (r->headers.data == NULL) return false;
    size_t nl = strlen(name);
    for (const char *p = r->headers.data; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            size_t n = strcspn(v, "\r\n");
            if (n + 1 > cap) return false;
            memcpy(out, v, n);
            out[n] = 0;
            return true;
        }
    }
    return false;
}

static void assert_header(const reply *r, const char *name, const char *want) {
    char v[512];
    if (!header_value(r, name, v, sizeof v)) fail_msg("no %s header in:\n%s", name, r->headers.data);
    assert_string_equal(v, want);
}

static reply get(const http_fixture *f, const char *path) {
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, path);
    CURL *h = client(f);
    reply r = perform(h, url, NULL, 0, NULL);
    curl_easy_cleanup(h);
    return r;
}

/* ---- tests ---- */

static void test_echo_and_accessors(void **state) {
    http_fixture *f = *state;
    uint8_t body[3000];
    for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i % 7 == 0 ? 0 : i * 31);
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo?q=a%20b+c&other=1");
    struct curl_slist *hdrs = curl_slist_append(NULL, "X-Dup: first");
    hdrs = curl_slist_append(hdrs, "x-DUP: second");
    CURL *h = client(f);
    reply r = perform(h, url, body, (long)sizeof body, hdrs);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, sizeof body);
    assert_memory_equal(r.body.data, body, sizeof body);
    assert_header(&r, "X-Method", "POST");
    assert_header(&r, "X-Path", "/echo");
    assert_header(&r, "X-Query", "a b c");
    assert_header(&r, "X-Dup", "2");
    assert_header(&r, "X-Dup-First", "first");
    assert_header(&r, "X-Peer", "127.0.0.1");
    assert_header(&r, "X-Family", "4");
    assert_header(&r, "Cache-Control", "no-store");
    assert_header(&r, "X-Content-Type-Options", "nosniff");
    assert_header(&r, "Content-Type", "application/octet-stream");
    reply_free(&r);
    curl_slist_free_all(hdrs);

    /* GET: empty body; the path is not percent-decoded; no query */
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo%2Fx%20y");
    r = perform(h, url, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    assert_header(&r, "X-Method", "GET");
    assert_header(&r, "X-Path", "/echo%2Fx%20y");
    assert_header(&r, "X-Query", "(none)");
    assert_header(&r, "X-Dup", "0");
    reply_free(&r);

    /* a malformed escape or an encoded NUL in a query value: NULL */
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo?q=%zz");
    r = perform(h, url, NULL, 0, NULL);
    assert_header(&r, "X-Query", "(none)");
    reply_free(&r);
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo?q=a%00b");
    r = perform(h, url, NULL, 0, NULL);
    assert_header(&r, "X-Query", "(none)");
    reply_free(&r);
    curl_easy_cleanup(h);

    /* response header checks and per-request user data */
    r = get(f, "/badheader");
    assert_int_equal(r.status, 204);
    assert_false(header_value(&r, "Set-Cookie", url, sizeof url));
    reply_free(&r);
    r = get(f, "/user");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "carried");
    reply_free(&r);
}

static void test_refusal_before_body(void **state) {
    http_fixture *f = *state;
    size_t big = (1u << 20) + 1; /* over max_body too: on_headers is asked first */
    uint8_t *body = calloc(1, big);
    assert_non_null(body);
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/refuse");
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect: 100-continue");
    CURL *h = client(f);
    reply r = perform(h, url, body, (long)big, hdrs);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body.data, "{}");
    assert_header(&r, "WWW-Authenticate", "none");
    assert_header(&r, "Cache-Control", "no-store");
    curl_off_t sent = -1;
    curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &sent);
    assert_true(sent < (curl_off_t)big / 2); /* the body never went */
    assert_int_equal(atomic_load(&request_calls), 0);
    assert_int_equal(atomic_load(&headers_calls), 1);
    reply_free(&r);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);

    /* a client that does not wait for 100 Continue: its body is read and
     * dropped, it gets the 401 (not a reset connection), and the
     * connection stays usable */
    hdrs = curl_slist_append(NULL, "Expect:");
    h = client(f);
    for (int i = 0; i < 3; i++) {
        r = perform(h, url, body, 100000, hdrs);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 401);
        assert_string_equal(r.body.data, "{}");
        long connects = -1;
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, i == 0 ? 1 : 0);
        reply_free(&r);
    }
    assert_int_equal(atomic_load(&request_calls), 0);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(body);
}

/* An answer given before the body (here a refusal from on_headers) must
 * not end keep-alive either: libmicrohttpd closes a connection whose
 * response came from its first call, so the server waits for the second. */
static void test_keep_alive_after_early_answer(void **state) {
    http_fixture *f = *state;
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/refuse");
    CURL *h = client(f);
    long connects = -1;
    for (int i = 0; i < 4; i++) {
        /* GET without a body, then a small body sent without waiting */
        reply r = perform(h, url, i % 2 ? "body" : NULL, i % 2 ? 4 : 0, NULL);
        assert_int_equal(r.status, 401);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, i == 0 ? 1 : 0);
        reply_free(&r);
    }
    curl_easy_cleanup(h);
}

static void test_keep_alive(void **state) {
    http_fixture *f = *state;
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo");
    CURL *h = client(f);
    long connects = -1;
    reply r = perform(h, url, "one", 3, NULL);
    assert_int_equal(r.status, 200);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    assert_int_equal(connects, 1);
    reply_free(&r);
    for (int i = 0; i < 3; i++) {
        r = perform(h, url, i % 2 ? NULL : "two", i % 2 ? 0 : 3, NULL);
        assert_int_equal(r.status, 200);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, 0);
        reply_free(&r);
    }
    curl_easy_cleanup(h);
}

typedef struct {
    size_t left;
} chunk_src;

static size_t chunk_read(char *buf, size_t size, size_t n, void *ud) {
    chunk_src *s = ud;
    size_t give = size * n < s->left ? size * n : s->left;
    memset(buf, 'z', give);
    s->left -= give;
    return give;
}

static void test_body_limits(void **state) {
    http_fixture *f = *state;
    size_t max = 64 * 1024;
    uint8_t *body = calloc(1, max + 1);
    assert_non_null(body);
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo");
    CURL *h = client(f);
    /* exactly max_body: accepted */
    reply r = perform(h, url, body, (long)max, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, max);
    reply_free(&r);
    /* one more, announced by Content-Length: refused, never buffered */
    for (int i = 0; i < 3; i++) {
        r = perform(h, url, body, (long)max + 1, NULL);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 413);
        assert_string_equal(r.body.data,
                            "{\"error\":{\"code\":\"too_large\",\"message\":\"request body too large\"}}");
        assert_header(&r, "Content-Type", "application/json");
        reply_free(&r);
    }
    curl_easy_cleanup(h);
    /* a client that waits for 100 Continue is refused before it sends */
    struct curl_slist *expect = curl_slist_append(NULL, "Expect: 100-continue");
    h = client(f);
    r = perform(h, url, body, (long)max + 1, expect);
    assert_int_equal(r.status, 413);
    curl_off_t sent = -1;
    curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &sent);
    assert_true(sent < (curl_off_t)max);
    reply_free(&r);
    curl_slist_free_all(expect);
    curl_easy_cleanup(h);

    /* chunked, no length announced: refused once the buffer would pass */
    for (size_t total = max - 100; total <= 4 * max; total += max + 100) {
        chunk_src src = {total};
        h = client(f);
        struct curl_slist *hdrs = curl_slist_append(NULL, "Transfer-Encoding: chunked");
        growbuf out = {0};
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, chunk_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &src);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (total <= max) {
            assert_int_equal(rc, CURLE_OK);
            assert_int_equal(status, 200);
            assert_int_equal(out.len, total);
        } else if (total <= 4 * max) {
            /* read to the end and dropped, then answered */
            assert_int_equal(rc, CURLE_OK);
            assert_int_equal(status, 413);
            assert_string_equal(out.data, "{\"error\":{\"code\":\"too_large\",\"message\":\"request body too large\"}}");
        }
        free(out.data);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
    }
    /* a chunked body that goes on and on: cut, not read to the end */
    chunk_src endless = {64u << 20};
    h = client(f);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, chunk_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &endless);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    assert_int_not_equal(curl_easy_perform(h), CURLE_OK);
    assert_true(endless.left > (32u << 20));
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    assert_int_equal(atomic_load(&request_calls), 2); /* max_body once, chunked under max once */
    free(body);
}

static void test_header_limit(void **state) {
    http_fixture *f = *state;
    char *big = malloc(20000);
    assert_non_null(big);
    memcpy(big, "X-Big: ", 7);
    memset(big + 7, 'h', 20000 - 8);
    big[19999] = 0;
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo");
    struct curl_slist *hdrs = curl_slist_append(NULL, big);
    CURL *h = client(f);
    reply r = perform(h, url, NULL, 0, hdrs);
    assert_int_equal(r.rc, CURLE_OK);
    assert_true(r.status == 431 || r.status == 413);
    assert_int_equal(atomic_load(&headers_calls), 0);
    reply_free(&r);
    curl_slist_free_all(hdrs);
    /* a few KiB under the limit are fine */
    big[4000] = 0;
    hdrs = curl_slist_append(NULL, big);
    r = perform(h, url, NULL, 0, hdrs);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(big);
}

static void test_handler_mistakes(void **state) {
    http_fixture *f = *state;
    reply r = get(f, "/silent");
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body.data, "{\"error\":{\"code\":\"internal\",\"message\":\"no response\"}}");
    assert_header(&r, "Content-Type", "application/json");
    reply_free(&r);
    r = get(f, "/twice");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "one");
    assert_int_equal(atomic_load(&twice_rc), SP_ERR_INVALID_ARGUMENT);
    reply_free(&r);
}

static void test_plain_http_rules(void **state) {
    http_fixture *f = *state;
    sp_http_config c = default_config(f);
    c.cert_file = c.key_file = NULL;
    sp_http_server *s = (sp_http_server *)1;
    /* not asked for */
    assert_rc(sp_http_server_start(&c, &handlers, &s), SP_ERR_BAD_CONFIG);
    assert_null(s);
    /* asked for, off loopback */
    c.allow_plain_http = true;
    const char *public_addrs[] = {"0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "::ffff:127.0.0.1"};
    for (size_t i = 0; i < SP_ARRAY_LEN(public_addrs); i++) {
        c.bind_address = public_addrs[i];
        assert_rc(sp_http_server_start(&c, &handlers, &s), SP_ERR_BAD_CONFIG);
    }
    /* loopback: served */
    c.bind_address = "127.0.0.2";
    start(f, &c);
    char url[256];
    url_of(url, sizeof url, "http", "127.0.0.2", f->port, "/echo");
    CURL *h = client(f);
    reply r = perform(h, url, "plain", 5, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "plain");
    reply_free(&r);
    curl_easy_cleanup(h);
}

static void test_bad_config(void **state) {
    http_fixture *f = *state;
    sp_http_server *s = NULL;
    sp_http_config c;
#define BAD(field, value)                                                        \
    do {                                                                         \
        c = default_config(f);                                                   \
        c.field = value;                                                         \
        assert_rc(sp_http_server_start(&c, &handlers, &s), SP_ERR_BAD_CONFIG); \
        assert_null(s);                                                          \
    } while (0)
    BAD(bind_address, NULL);
    BAD(bind_address, "localhost");
    BAD(bind_address, "127.0.0.1:80");
    BAD(bind_address, "");
    BAD(threads, 0);
    BAD(threads, SP_HTTP_MAX_THREADS + 1);
    BAD(max_body, 0);
    BAD(max_body, SP_HTTP_MAX_BODY_LIMIT + 1);
    BAD(max_header_bytes, 4095);
    BAD(max_header_bytes, (1u << 20) + 1);
    BAD(max_connections, 0);
    BAD(max_connections, SP_HTTP_MAX_CONNECTIONS + 1);
    BAD(max_connections_per_ip, 0);
    BAD(max_connections_per_ip, 65);
    BAD(idle_timeout_s, 0);
    BAD(idle_timeout_s, SP_HTTP_MAX_IDLE_TIMEOUT + 1);
    BAD(cert_file, NULL);
    BAD(key_file, NULL);
    BAD(cert_file, "/nonexistent/cert.pem");
    BAD(key_file, "/nonexistent/key.pem");
    BAD(key_file, f->tls.cert); /* not a key */
    BAD(cert_file, f->tls.key);  /* not a certificate */
    BAD(cert_file, f->dir);      /* not a file */

    /* a key that is not the certificate's */
    char other_dir[400];
    assert_true(snprintf(other_dir, sizeof other_dir, "%s/other", f->dir) < (int)sizeof other_dir);
    assert_int_equal(mkdir(other_dir, 0700), 0);
    sp_tls_files other;
    assert_true(sp_tls_make_cert(other_dir, &other));
    BAD(key_file, other.key);
    /* a key anyone may read */
    assert_int_equal(chmod(f->tls.key, 0604), 0);
    BAD(max_body, 1024); /* (any field: the key is the problem) */
    c = default_config(f);
    assert_rc(sp_http_server_start(&c, &handlers, &s), SP_ERR_BAD_CONFIG);
    assert_int_equal(chmod(f->tls.key, 0640), 0);
    assert_ok(sp_http_server_start(&c, &handlers, &s));
    sp_http_server_stop(s, 0);
    s = NULL;
#undef BAD
    /* the extremes that are allowed */
    c = default_config(f);
    c.threads = 1;
    c.max_body = 1;
    c.max_header_bytes = 4096;
    c.max_connections = 1;
    c.max_connections_per_ip = 1;
    c.idle_timeout_s = 1;
    c.metrics = NULL;
    start(f, &c);
    reply r = get(f, "/");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* the same port twice cannot be bound */
    c.port = f->port;
    assert_rc(sp_http_server_start(&c, &handlers, &s), SP_ERR_IO);
    /* missing handler */
    sp_http_handlers none = {NULL, NULL, NULL};
    c.port = 0;
    assert_rc(sp_http_server_start(&c, &none, &s), SP_ERR_INVALID_ARGUMENT);
}

static CURLcode tls_try(const http_fixture *f, long version, const char *ciphers) {
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/");
    CURL *h = client(f);
    /* the client's own floor is lowered so a refusal is the server's */
    curl_easy_setopt(h, CURLOPT_SSL_CIPHER_LIST, ciphers != NULL ? ciphers : "DEFAULT:@SECLEVEL=0");
    curl_easy_setopt(h, CURLOPT_SSLVERSION, version);
    reply r = perform(h, url, NULL, 0, NULL);
    CURLcode rc = r.rc;
    if (rc == CURLE_OK) assert_int_equal(r.status, 200);
    reply_free(&r);
    curl_easy_cleanup(h);
    return rc;
}

static void test_tls_versions_and_ciphers(void **state) {
    http_fixture *f = *state;
    assert_int_not_equal(tls_try(f, CURL_SSLVERSION_TLSv1_0 | CURL_SSLVERSION_MAX_TLSv1_0, NULL), CURLE_OK);
    assert_int_not_equal(tls_try(f, CURL_SSLVERSION_TLSv1_1 | CURL_SSLVERSION_MAX_TLSv1_1, NULL), CURLE_OK);
    assert_int_equal(tls_try(f, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2, NULL), CURLE_OK);
    assert_int_equal(tls_try(f, CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3, NULL), CURLE_OK);
    long v12 = CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2;
    /* CBC with SHA-1 MACs, CBC with SHA-256: refused; ECDHE with GCM: fine */
    assert_int_not_equal(tls_try(f, v12, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"), CURLE_OK);
    assert_int_not_equal(tls_try(f, v12, "ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0"), CURLE_OK);
    assert_int_equal(tls_try(f, v12, "ECDHE-ECDSA-AES128-GCM-SHA256"), CURLE_OK);
    assert_int_equal(tls_try(f, v12, "ECDHE-ECDSA-CHACHA20-POLY1305"), CURLE_OK);
}

/* A raw TCP connection to the server; -1 when connect fails. */
static int tcp_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True when the server closed fd within ms (EOF or reset). */
static bool closed_within(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0) return false;
    char b;
    return recv(fd, &b, 1, MSG_DONTWAIT) <= 0;
}

static void test_per_ip_limit(void **state) {
    http_fixture *f = *state;
    sp_http_config c = default_config(f);
    c.max_connections_per_ip = 2;
    c.threads = 1; /* connections accepted in order */
    start(f, &c);
    int a = tcp_connect(f->port), b = tcp_connect(f->port);
    assert_true(a >= 0 && b >= 0);
    sp_test_sleep_ms(100); /* both accepted before the third arrives */
    int extra = tcp_connect(f->port);
    assert_true(extra >= 0);
    assert_true(closed_within(extra, 5000));
    assert_false(closed_within(a, 200));
    assert_false(closed_within(b, 200));
    /* a real client is refused too while the two are held */
    reply r = get(f, "/");
    assert_int_not_equal(r.rc, CURLE_OK);
    reply_free(&r);
    close(a);
    close(b);
    close(extra);
    /* and served once they are gone (the server notices the closes) */
    bool served = false;
    for (int i = 0; i < 100 && !served; i++) {
        r = get(f, "/");
        served = r.rc == CURLE_OK && r.status == 200;
        reply_free(&r);
        if (!served) sp_test_sleep_ms(50);
    }
    assert_true(served);
}

typedef struct {
    const http_fixture *f;
    CURL *h;
    const char *path;
    reply r;
} bg_request;

static void *bg_perform(void *p) {
    bg_request *b = p;
    char url[256];
    snprintf(url, sizeof url, "https://127.0.0.1:%u%s", b->f->port, b->path);
    b->r = perform(b->h, url, NULL, 0, NULL);
    return NULL;
}

typedef struct {
    sp_http_server *server;
} bg_stop;

static void *bg_stopper(void *p) {
    bg_stop *s = p;
    sp_http_server_stop(s->server, 5000);
    return NULL;
}

/* A client whose connection to url ("/") is open and kept alive, having
 * been served once. */
static CURL *kept_alive(http_fixture *f, char *url, size_t cap) {
    CURL *h = client(f);
    url_of(url, cap, "https", "127.0.0.1", f->port, "/");
    reply r = perform(h, url, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    return h;
}

static void test_graceful_stop(void **state) {
    http_fixture *f = *state;
    /* a keep-alive connection, open before the stop */
    char url[256];
    CURL *idle = kept_alive(f, url, sizeof url);
    reply r;

    bg_request slow = {f, client(f), "/slow", {0}};
    pthread_t t_slow, t_stop;
    assert_int_equal(pthread_create(&t_slow, NULL, bg_perform, &slow), 0);
    while (!atomic_load(&slow_entered)) sp_test_sleep_ms(5);
    bg_stop stopper = {f->server};
    f->server = NULL; /* the stopper owns it now */
    assert_int_equal(pthread_create(&t_stop, NULL, bg_stopper, &stopper), 0);
    sp_test_sleep_ms(50);
    /* while the slow request holds the stop: the kept connection gets 503
     * and is closed; new connections are not accepted */
    r = perform(idle, url, NULL, 0, NULL);
    assert_int_equal(r.rc, CURLE_OK);
    long connects = -1;
    curl_easy_getinfo(idle, CURLINFO_NUM_CONNECTS, &connects);
    assert_int_equal(connects, 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body.data, "{\"error\":{\"code\":\"unavailable\",\"message\":\"shutting down\"}}");
    assert_header(&r, "Connection", "close");
    reply_free(&r);
    assert_int_equal(pthread_join(t_slow, NULL), 0);
    assert_int_equal(slow.r.rc, CURLE_OK);
    assert_int_equal(slow.r.status, 200);
    assert_string_equal(slow.r.body.data, "ok");
    reply_free(&slow.r);
    assert_int_equal(pthread_join(t_stop, NULL), 0);
    curl_easy_cleanup(slow.h);
    curl_easy_cleanup(idle);
    r = get(f, "/");
    assert_int_not_equal(r.rc, CURLE_OK);
    reply_free(&r);
}

static void test_quiesce(void **state) {
    http_fixture *f = *state;
    char url[256];
    CURL *kept = kept_alive(f, url, sizeof url);
    reply r;
    sp_http_server_quiesce(f->server);
    sp_http_server_quiesce(f->server); /* twice is harmless */
    /* a new connection is not accepted; the kept one is still served */
    r = get(f, "/");
    assert_int_not_equal(r.rc, CURLE_OK);
    reply_free(&r);
    r = perform(kept, url, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    curl_easy_cleanup(kept);
}

static bool have_ipv6_loopback(void) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void test_ipv6(void **state) {
    http_fixture *f = *state;
    if (!have_ipv6_loopback()) {
        skip();
    }
    sp_http_config c = default_config(f);
    c.bind_address = "::1";
    start(f, &c);
    char url[256];
    url_of(url, sizeof url, "https", "[::1]", f->port, "/echo");
    CURL *h = client(f);
    reply r = perform(h, url, "six", 3, NULL);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_header(&r, "X-Peer", "::1");
    assert_header(&r, "X-Family", "6");
    reply_free(&r);
    curl_easy_cleanup(h);
    sp_http_server_stop(f->server, 0);
    f->server = NULL;

    /* dual stack: an IPv4 client is reported as IPv4 */
    c.bind_address = "::";
    start(f, &c);
    reply r4 = get(f, "/echo");
    assert_int_equal(r4.status, 200);
    assert_header(&r4, "X-Peer", "127.0.0.1");
    assert_header(&r4, "X-Family", "4");
    reply_free(&r4);
}

/* Waits for the completion callbacks (they run after the client has its
 * answer) and then looks for the line. */
static void assert_metric_line(sp_metrics *m, const char *line) {
    for (int i = 0; i < 200; i++) {
        char *text = NULL;
        size_t len = 0;
        assert_ok(sp_metrics_render(m, &text, &len));
        bool found = strstr(text, line) != NULL;
        if (!found && i == 199) fail_msg("no line %s in:\n%s", line, text);
        sp_metrics_text_free(text);
        if (found) return;
        sp_test_sleep_ms(10);
    }
}

static void test_metrics(void **state) {
    http_fixture *f = *state;
    char url[256];
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/echo");
    CURL *h = client(f);
    for (int i = 0; i < 3; i++) {
        reply r = perform(h, url, "m", 1, NULL);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
    curl_easy_cleanup(h);
    reply r = get(f, "/silent");
    reply_free(&r);
    r = get(f, "/nothing-here");
    reply_free(&r);
    uint8_t big[70000] = {0};
    h = client(f);
    r = perform(h, url, big, sizeof big, NULL);
    assert_int_equal(r.status, 413);
    reply_free(&r);
    curl_easy_cleanup(h);
    assert_metric_line(f->metrics, "sealpost_http_requests_total{route=\"/echo\",code=\"200\"} 3\n");
    assert_metric_line(f->metrics, "sealpost_http_requests_total{route=\"other\",code=\"500\"} 1\n");
    assert_metric_line(f->metrics, "sealpost_http_requests_total{route=\"other\",code=\"200\"} 1\n");
    assert_metric_line(f->metrics, "sealpost_http_requests_total{route=\"other\",code=\"413\"} 1\n");
    assert_metric_line(f->metrics, "sealpost_http_request_duration_seconds_count{route=\"/echo\"} 3\n");
    assert_metric_line(f->metrics, "sealpost_http_request_duration_seconds_bucket{route=\"/echo\",le=\"+Inf\"} 3\n");
    assert_metric_line(f->metrics, "sealpost_http_in_flight 0\n");
    assert_metric_line(f->metrics, "sealpost_http_connections 0\n");
    assert_metric_line(f->metrics, "# TYPE sealpost_http_request_duration_seconds histogram\n");
}

#define LOAD_THREADS 4
#define LOAD_EACH 200

typedef struct {
    const http_fixture *f;
    int ok;
    const char *path;
} load_arg;

static void *load_worker(void *p) {
    load_arg *a = p;
    CURL *h = curl_easy_init();
    if (h == NULL) return NULL;
    curl_easy_setopt(h, CURLOPT_CAINFO, a->f->tls.cert);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    char url[256];
    snprintf(url, sizeof url, "https://127.0.0.1:%u%s", a->f->port, a->path);
    for (int i = 0; i < LOAD_EACH; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "req-%d", i);
        reply r = perform(h, url, body, n, NULL);
        if (r.rc == CURLE_OK && r.status == 200 && r.body.len == (size_t)n && memcmp(r.body.data, body, (size_t)n) == 0) {
            a->ok++;
        }
        reply_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* LOAD_THREADS clients at once, LOAD_EACH echoed requests each to path:
 * every one must come back whole. */
static void run_load(const http_fixture *f, const char *path) {
    pthread_t t[LOAD_THREADS];
    load_arg args[LOAD_THREADS];
    for (int i = 0; i < LOAD_THREADS; i++) {
        args[i] = (load_arg){f, 0, path};
        assert_int_equal(pthread_create(&t[i], NULL, load_worker, &args[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        ok += args[i].ok;
    }
    assert_int_equal(ok, LOAD_THREADS * LOAD_EACH);
}

static void test_concurrent_load(void **state) {
    http_fixture *f = *state;
    run_load(f, "/echo");
    assert_metric_line(f->metrics, "sealpost_http_requests_total{route=\"/echo\",code=\"200\"} 800\n");
}

static void test_deferred_answers(void **state) {
    http_fixture *f = *state;
    pthread_t resp;
    responder_quit = false;
    assert_int_equal(pthread_create(&resp, NULL, responder, NULL), 0);

    /* answered by the other thread, headers and all; a second defer of the
     * same request is refused */
    char url[256];
    CURL *h = client(f);
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/later");
    reply r = perform(h, url, NULL, 0, NULL);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "later");
    assert_header(&r, "X-Answered-By", "responder");
    reply_free(&r);
    assert_int_equal(atomic_load(&defer_twice_rc), SP_ERR_INVALID_ARGUMENT);
    /* the body and the connection stay usable: 20 more on one connection */
    for (int i = 0; i < 20; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "body-%d", i);
        r = perform(h, url, body, n, NULL);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, (size_t)n);
        assert_memory_equal(r.body.data, body, (size_t)n);
        reply_free(&r);
    }
    long connects = -1;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    assert_int_equal(connects, 0);
    /* resumed without an answer: the server's 500 */
    url_of(url, sizeof url, "https", "127.0.0.1", f->port, "/later-silent");
    r = perform(h, url, NULL, 0, NULL);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body.data, "{\"error\":{\"code\":\"internal\",\"message\":\"no response\"}}");
    reply_free(&r);
    curl_easy_cleanup(h);

    /* many at once, from several connections */
    run_load(f, "/later");

    /* stopping waits for a deferred request, even with no grace period,
     * and the request gets its answer */
    atomic_store(&later_entered, 0);
    bg_request slow = {f, client(f), "/later-slow", {0}};
    pthread_t t_slow;
    assert_int_equal(pthread_create(&t_slow, NULL, bg_perform, &slow), 0);
    while (atomic_load(&later_entered) == 0) sp_test_sleep_ms(5);
    sp_http_server_stop(f->server, 0);
    f->server = NULL;
    assert_int_equal(pthread_join(t_slow, NULL), 0);
    assert_int_equal(slow.r.rc, CURLE_OK);
    assert_int_equal(slow.r.status, 200);
    assert_string_equal(slow.r.body.data, "later");
    reply_free(&slow.r);
    curl_easy_cleanup(slow.h);

    pthread_mutex_lock(&parked_lock);
    responder_quit = true;
    pthread_cond_signal(&parked_cond);
    pthread_mutex_unlock(&parked_lock);
    assert_int_equal(pthread_join(resp, NULL), 0);
}

static void test_start_allocation_failures(void **state) {
    http_fixture *f = *state;
    sp_http_config c = default_config(f);
    for (uint64_t n = 1;; n++) {
        sp_http_server *s = NULL;
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_http_server_start(&c, &handlers, &s);
        bool reached = sp_test_fault_disarm(fault);
        if (!reached) {
            assert_ok(rc);
            sp_http_server_stop(s, 0);
            break;
        }
        if (rc == SP_OK) {
            /* a failure libmicrohttpd or GnuTLS shrugged off */
            sp_http_server_stop(s, 0);
            continue;
        }
        /* OpenSSL reports a failed allocation inside PEM parsing as a bad
         * file; either way nothing is left running */
        assert_true(rc == SP_ERR_NO_MEMORY || rc == SP_ERR_BAD_CONFIG);
        assert_null(s);
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_and_accessors, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_before_body, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_after_early_answer, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_body_limits, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_header_limit, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_handler_mistakes, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_plain_http_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_versions_and_ciphers, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_per_ip_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_stop, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_quiesce, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_load, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_answers, setup_started, teardown),
        cmocka_unit_test_setup_teardown(test_start_allocation_failures, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
