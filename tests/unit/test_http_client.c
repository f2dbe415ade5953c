/*
 * The outbound HTTP client against sealpost's own server in-process as the
 * provider sink, over plain HTTP on 127.0.0.1 (and once over TLS with a
 * certificate made for the run): status classification for the retry
 * logic, Retry-After, bounded response bodies, timeouts and refused
 * connections, the in-flight limit, connection reuse and no allocation per
 * request once warm, URL and header rules, allocation faults, the 401 ->
 * fresh token -> one retry path with an OAuth 2.0 token cache whose token
 * endpoint is the same sink, and the pure backoff schedule.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "tls_util.h"

#include "sp_test_util.h"

#include "sealpost/http_client.h"

typedef struct {
    char dir[256];
    sp_tls_files tls;
    sp_http_server *server;
    uint16_t port;
    char base[64];
} fixture;

/* ---- the sink ---- */

static atomic_int respond_failures; /* checked by every teardown */

static void respond(sp_http_request *req, unsigned status, const char *type, const void *body, size_t len) {
    if (sp_http_respond(req, status, type, body, len) != SP_OK) atomic_fetch_add(&respond_failures, 1);
}

static atomic_int token_hits;     /* requests to /token */
static atomic_int reject_first;   /* /auth: 401 for tokens numbered below this */
static atomic_int auth_seen_ok;   /* /auth requests that carried an accepted token */
static atomic_int paused_now, paused_most; /* /pause requests under way, and the most at once */

static void answer(sp_http_request *req, unsigned status, const char *body) {
    respond(req, status, "text/plain", body, body != NULL ? strlen(body) : 0);
}

static void on_request(void *arg, sp_http_request *req) {
    (void)arg;
    const char *path = sp_http_path(req);
    if (strcmp(path, "/ok") == 0) {
        answer(req, 200, "hello");
    } else if (strncmp(path, "/status/", 8) == 0) {
        const char *ra = sp_http_query(req, "ra");
        if (ra != NULL && sp_http_add_header(req, "Retry-After", ra) != SP_OK) return;
        if (strcmp(path + 8, "302") == 0 && sp_http_add_header(req, "Location", "/ok") != SP_OK) return;
        answer(req, (unsigned)strtoul(path + 8, NULL, 10), "status");
    } else if (strcmp(path, "/echo") == 0) {
        /* method, then X-Test, then Authorization presence, then the body */
        size_t len = 0;
        const uint8_t *body = sp_http_body(req, &len);
        const char *x = sp_http_header(req, "x-test", NULL);
        const char *e = sp_http_header(req, "x-empty", NULL);
        char out[2048];
        int n = snprintf(out, sizeof out, "%s|%s|%s|%s|", sp_http_method(req), x ? x : "-", e ? "empty-ok" : "-",
                         sp_http_header(req, "expect", NULL) ? "expect" : "-");
        if (n < 0 || (size_t)n + len > sizeof out) return;
        memcpy(out + n, body, len);
        respond(req, 200, "application/octet-stream", out, (size_t)n + len);
    } else if (strcmp(path, "/big") == 0) {
        static char big[100000];
        memset(big, 'b', sizeof big);
        respond(req, 200, "text/plain", big, sizeof big);
    } else if (strcmp(path, "/pause") == 0) {
        int now = atomic_fetch_add(&paused_now, 1) + 1;
        int most = atomic_load(&paused_most);
        while (now > most && !atomic_compare_exchange_weak(&paused_most, &most, now)) {
        }
        sp_test_sleep_ms(300);
        atomic_fetch_sub(&paused_now, 1);
        answer(req, 200, "pause");
    } else if (strcmp(path, "/slow") == 0) {
        sp_test_sleep_ms(1500);
        answer(req, 200, "late");
    } else if (strcmp(path, "/token") == 0) {
        int n = atomic_fetch_add(&token_hits, 1) + 1;
        char body[128];
        snprintf(body, sizeof body, "{\"access_token\":\"tok-%d\",\"token_type\":\"bearer\",\"expires_in\":3600}", n);
        respond(req, 200, "application/json", body, strlen(body));
    } else if (strcmp(path, "/auth") == 0) {
        const char *a = sp_http_header(req, "authorization", NULL);
        int n = 0;
        if (a == NULL || sscanf(a, "Bearer tok-%d", &n) != 1 || n > atomic_load(&token_hits)) {
            answer(req, 403, "no token");
        } else if (n < atomic_load(&reject_first)) {
            answer(req, 401, "expired");
        } else {
            atomic_fetch_add(&auth_seen_ok, 1);
            answer(req, 200, a);
        }
    } else {
        answer(req, 404, "none");
    }
}

static const sp_http_handlers handlers = {NULL, on_request, NULL};

static int start_sink(fixture *f, bool tls) {
    sp_http_config c = {
        .bind_address = "127.0.0.1",
        .cert_file = tls ? f->tls.cert : NULL,
        .key_file = tls ? f->tls.key : NULL,
        .allow_plain_http = !tls,
        .threads = 2,
        .max_body = 1 << 20,
        .max_header_bytes = 32768,
        .max_connections = 512,
        .max_connections_per_ip = 512,
        .idle_timeout_s = 30,
    };
    if (sp_http_server_start(&c, &handlers, &f->server) != SP_OK) return -1;
    f->port = sp_http_server_port(f->server);
    snprintf(f->base, sizeof f->base, "%s://127.0.0.1:%u", tls ? "https" : "http", f->port);
    return 0;
}

static int setup_common(void **state, bool tls) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-hc");
    if (f == NULL || (tls && !sp_tls_make_cert(f->dir, &f->tls))) return -1;
    atomic_store(&token_hits, 0);
    atomic_store(&reject_first, 0);
    atomic_store(&auth_seen_ok, 0);
    *state = f;
    return start_sink(f, tls);
}

static int setup(void **state) { return setup_common(state, false); }
static int setup_tls(void **state) { return setup_common(state, true); }

static int teardown(void **state) {
    fixture *f = *state;
    sp_http_server_stop(f->server, 1000);
    if (atomic_load(&respond_failures) != 0) {
        print_error("sp_http_respond failed %d times\n", atomic_load(&respond_failures));
        return -1;
    }
    return sp_test_fixture_free(f, f->dir);
}

/* ---- driving the client ---- */

typedef struct {
    int calls;
    unsigned status;
    sp_error result;
    int64_t retry_after_ms;
    char body[4096];
    size_t body_len;
    bool truncated, retried;
} outcome;

static void on_done(void *ctx, void *user, const sp_http_client_response *r) {
    (void)ctx;
    outcome *o = user;
    o->calls++;
    o->status = r->status;
    o->result = r->result;
    o->retry_after_ms = r->retry_after_ms;
    o->body_len = r->body_len;
    memcpy(o->body, r->body, r->body_len < sizeof o->body - 1 ? r->body_len : sizeof o->body - 1);
    o->body[r->body_len < sizeof o->body - 1 ? r->body_len : sizeof o->body - 1] = 0;
    o->truncated = r->body_truncated;
    o->retried = r->retried;
    assert_non_null(r->detail);
}

static void drive(sp_http_client *c) {
    int64_t deadline = sp_test_now_ms() + 20000;
    while (sp_http_client_in_flight(c) > 0) {
        assert_true(sp_test_now_ms() < deadline);
        assert_ok(sp_http_client_run(c, 100, on_done, NULL, NULL));
    }
}

static sp_http_client *client_new(unsigned max_in_flight, size_t max_body) {
    sp_http_client_config cfg = sp_http_client_config_default();
    cfg.max_in_flight = max_in_flight;
    cfg.max_connections_per_host = max_in_flight < 4 ? max_in_flight : 4;
    cfg.max_response_body = max_body;
    sp_http_client *c = NULL;
    assert_ok(sp_http_client_new(&cfg, &c));
    return c;
}

static outcome get(sp_http_client *c, const fixture *f, const char *path) {
    char url[256];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    outcome o;
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.calls, 1);
    return o;
}

/* ---- tests ---- */

static void test_config_limits(void **state) {
    (void)state;
    sp_http_client *c = NULL;
    sp_http_client_config ok = sp_http_client_config_default();
    sp_http_client_config bad;
    bad = ok, bad.max_in_flight = 0;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.max_in_flight = SP_HTTP_CLIENT_MAX_IN_FLIGHT + 1;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.max_connections_per_host = 0;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.connect_timeout_ms = 0;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.timeout_ms = SP_HTTP_CLIENT_MAX_TIMEOUT_MS + 1;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.timeout_ms = bad.connect_timeout_ms - 1;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.max_response_body = SP_HTTP_CLIENT_MAX_BODY_KEPT + 1;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.allow_self_signed = true; /* without a CA file: never */
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.http_version = (sp_http_client_version)7;
    assert_rc(sp_http_client_new(&bad, &c), SP_ERR_INVALID_ARGUMENT);
    assert_null(c);
    assert_ok(sp_http_client_new(&ok, &c));
    size_t n = 99;
    assert_ok(sp_http_client_run(c, 50, on_done, NULL, &n)); /* nothing in flight: at once */
    assert_int_equal(n, 0);
    sp_http_client_free(c);
    sp_http_client_free(NULL);
}

static void test_urls_and_headers(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(8, 1024);
    static const char *const refused[] = {
        "http://example.com/",          "http://10.0.0.1/",      "http://127.0.0.1@example.com/",
        "http://user:pw@127.0.0.1/",   "ftp://127.0.0.1/",      "http://127.0.0.256/",
        "http://127.1/",                "http://localhost:0/",   "http://127.0.0.1:65536/",
        "http://[::2]/",                "https:///x",            "http://127.0.0.1/a b",
        "http://localhost.evil.com/",   "file:///etc/passwd",    "",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(refused); i++) {
        sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = refused[i]};
        if (sp_http_client_submit(c, &req, NULL) != SP_ERR_INVALID_ARGUMENT) fail_msg("accepted %s", refused[i]);
    }
    char *huge = malloc(SP_HTTP_CLIENT_MAX_URL + 16);
    assert_non_null(huge);
    memset(huge, 'a', SP_HTTP_CLIENT_MAX_URL + 15);
    memcpy(huge, "https://", 8);
    huge[SP_HTTP_CLIENT_MAX_URL + 15] = 0;
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = huge};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_TOO_LARGE);
    free(huge);

    char url[256];
    snprintf(url, sizeof url, "%s/echo", f->base);
    req.url = url;
    req.method = SP_HTTP_CLIENT_GET;
    req.body = "x";
    req.body_len = 1;
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_INVALID_ARGUMENT); /* GET with a body */
    req.body = NULL;
    req.body_len = 0;
    sp_http_client_header h[SP_HTTP_CLIENT_MAX_HEADERS + 1];
    for (size_t i = 0; i < SP_ARRAY_LEN(h); i++) h[i] = (sp_http_client_header){"X-N", "v"};
    req.headers = h;
    req.n_headers = SP_ARRAY_LEN(h);
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_TOO_LARGE);
    req.n_headers = 1;
    h[0] = (sp_http_client_header){"X-Evil", "a\r\nSet-Cookie: x"};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_BAD_HEADER_VALUE);
    h[0] = (sp_http_client_header){"Bad Name", "v"};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_INVALID_ARGUMENT);
    h[0] = (sp_http_client_header){"content-length", "5"};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_INVALID_ARGUMENT);
    h[0] = (sp_http_client_header){"", "v"};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_http_client_in_flight(c), 0);

    /* loopback spellings that are allowed reach the sink */
    snprintf(url, sizeof url, "http://localhost:%u/ok", f->port);
    outcome o;
    memset(&o, 0, sizeof o);
    req = (sp_http_client_request){.method = SP_HTTP_CLIENT_GET, .url = url};
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.status, 200);
    sp_http_client_free(c);
}

static void test_get_post_and_headers(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(8, 4096);
    outcome o = get(c, f, "/ok");
    assert_int_equal(o.status, 200);
    assert_rc(o.result, SP_OK);
    assert_string_equal(o.body, "hello");
    assert_int_equal(o.retry_after_ms, -1);

    char url[256];
    snprintf(url, sizeof url, "%s/echo", f->base);
    static const uint8_t body[] = {'a', 0, 'b', 0xff, '\n'};
    sp_http_client_header h[] = {{"X-Test", "value 1"}, {"X-Empty", ""}, {"Content-Type", "application/json"}};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_POST, .url = url, .headers = h, .n_headers = 3,
                                  .body = body, .body_len = sizeof body};
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.status, 200);
    const char want[] = "POST|value 1|empty-ok|-|";
    assert_int_equal(o.body_len, strlen(want) + sizeof body);
    assert_memory_equal(o.body, want, strlen(want));
    assert_memory_equal(o.body + strlen(want), body, sizeof body);

    /* the same slot, now a GET without the headers: nothing carried over */
    memset(&o, 0, sizeof o);
    req = (sp_http_client_request){.method = SP_HTTP_CLIENT_GET, .url = url};
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_string_equal(o.body, "GET|-|-|-|");

    /* an empty POST */
    memset(&o, 0, sizeof o);
    req = (sp_http_client_request){.method = SP_HTTP_CLIENT_POST, .url = url};
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_string_equal(o.body, "POST|-|-|-|");
    sp_http_client_free(c);
}

static void test_classification(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(8, 4096);
    static const struct {
        const char *path;
        unsigned status;
        sp_error result;
        int64_t retry_after_ms;
    } cases[] = {
        {"/status/200", 200, SP_OK, -1},
        {"/status/204", 204, SP_OK, -1},
        {"/status/302", 302, SP_ERR_PROVIDER_REJECTED, -1}, /* not followed */
        {"/status/400", 400, SP_ERR_PROVIDER_REJECTED, -1},
        {"/status/404", 404, SP_ERR_PROVIDER_REJECTED, -1},
        {"/status/422", 422, SP_ERR_PROVIDER_REJECTED, -1},
        {"/status/408", 408, SP_ERR_PROVIDER_UNAVAILABLE, -1},
        {"/status/429?ra=7", 429, SP_ERR_PROVIDER_UNAVAILABLE, 7000},
        {"/status/503?ra=99999999999", 503, SP_ERR_PROVIDER_UNAVAILABLE, SP_HTTP_RETRY_AFTER_MAX_MS},
        {"/status/503?ra=soon", 503, SP_ERR_PROVIDER_UNAVAILABLE, -1},
        {"/status/503?ra=Sun,%2006%20Nov%201994%2008:49:37%20GMT", 503, SP_ERR_PROVIDER_UNAVAILABLE, 0},
        {"/status/500", 500, SP_ERR_PROVIDER_UNAVAILABLE, -1},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        outcome o = get(c, f, cases[i].path);
        if (o.status != cases[i].status || o.result != cases[i].result ||
            o.retry_after_ms != cases[i].retry_after_ms) {
            fail_msg("%s: status %u %s retry-after %lld", cases[i].path, o.status, sp_error_name(o.result),
                     (long long)o.retry_after_ms);
        }
    }
    sp_http_client_free(c);
}

static void test_network_failures(void **state) {
    fixture *f = *state;
    /* a port nobody listens on: bound, then closed */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    sp_http_client *c = client_new(4, 1024);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", ntohs(a.sin_port));
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    outcome o;
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_rc(o.result, SP_ERR_NETWORK);
    sp_http_client_free(c);

    /* a provider slower than the timeout */
    sp_http_client_config cfg = sp_http_client_config_default();
    cfg.connect_timeout_ms = 200;
    cfg.timeout_ms = 300;
    assert_ok(sp_http_client_new(&cfg, &c));
    o = get(c, f, "/slow");
    assert_rc(o.result, SP_ERR_NETWORK);
    sp_http_client_free(c);
}

static void test_body_bounded(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(2, 1000);
    outcome o = get(c, f, "/big");
    assert_rc(o.result, SP_OK);
    assert_int_equal(o.body_len, 1000);
    assert_true(o.truncated);
    assert_int_equal(o.body[999], 'b');
    sp_http_client_free(c);
    c = client_new(2, 0); /* keep nothing at all */
    o = get(c, f, "/big");
    assert_rc(o.result, SP_OK);
    assert_int_equal(o.body_len, 0);
    assert_true(o.truncated);
    sp_http_client_free(c);
}

static void test_in_flight_limit(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(2, 64);
    char url[128];
    snprintf(url, sizeof url, "%s/ok", f->base);
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    outcome o[3];
    memset(o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o[0]));
    assert_ok(sp_http_client_submit(c, &req, &o[1]));
    assert_rc(sp_http_client_submit(c, &req, &o[2]), SP_ERR_UNAVAILABLE);
    assert_int_equal(sp_http_client_in_flight(c), 2);
    drive(c);
    assert_int_equal(o[0].calls + o[1].calls, 2);
    assert_int_equal(o[2].calls, 0);
    assert_ok(sp_http_client_submit(c, &req, &o[2]));
    drive(c);
    assert_int_equal(o[2].status, 200);
    sp_http_client_free(c);
}

/* Keeps `left` requests going by resubmitting from the completion. */
typedef struct {
    sp_http_client *c;
    const char *url;
    int left, ok, failed;
} pump;

static void on_pump(void *ctx, void *user, const sp_http_client_response *r) {
    pump *p = ctx;
    (void)user;
    if (r->result == SP_OK && r->status == 200 && r->body_len == 5) {
        p->ok++;
    } else {
        p->failed++;
    }
    if (p->left > 0) {
        sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = p->url};
        if (sp_http_client_submit(p->c, &req, NULL) == SP_OK) p->left--;
    }
}

static void pump_all(pump *p) {
    int64_t deadline = sp_test_now_ms() + 30000;
    while (sp_http_client_in_flight(p->c) > 0) {
        assert_true(sp_test_now_ms() < deadline);
        assert_ok(sp_http_client_run(p->c, 100, on_pump, p, NULL));
    }
}

static void test_reuse_and_no_allocation(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(1, 1024);
    char url[128];
    snprintf(url, sizeof url, "%s/ok", f->base);
    pump p = {c, url, 10, 0, 0};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    assert_ok(sp_http_client_submit(c, &req, NULL));
    pump_all(&p); /* warm-up: the slot, its buffers, the connection */
    assert_int_equal(p.ok, 11);
    assert_int_equal(sp_http_client_connects(c), 1);

    uint64_t before = sp_test_alloc_count();
    p.left = 199;
    assert_ok(sp_http_client_submit(c, &req, NULL));
    pump_all(&p);
    assert_int_equal(p.ok, 211);
    assert_int_equal(p.failed, 0);
    /* the sink runs in this process too; what it takes through the funnel
     * per request is its own, so the bound is a fraction of a request */
    uint64_t allocs = sp_test_alloc_count() - before;
    if (allocs >= 100) fail_msg("%llu allocations for 200 requests", (unsigned long long)allocs);
    assert_int_equal(sp_http_client_connects(c), 1); /* 211 requests, one connection */
    sp_http_client_free(c);
}

static void test_many_concurrent(void **state) {
    fixture *f = *state;
    sp_http_client *c = client_new(32, 1024);
    char url[128];
    snprintf(url, sizeof url, "%s/ok", f->base);
    pump p = {c, url, 500, 0, 0};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    for (int i = 0; i < 32; i++) assert_ok(sp_http_client_submit(c, &req, NULL));
    pump_all(&p);
    assert_int_equal(p.ok, 532);
    assert_int_equal(p.failed, 0);
    assert_true(sp_http_client_connects(c) <= 4); /* max_connections_per_host */
    sp_http_client_free(c);
}

/* Requests past an origin's connections wait in the client, and their
 * timeout starts when they are handed to libcurl: three 300 ms answers in
 * turn over one connection, each within a 700 ms timeout, though the last
 * is answered 900 ms after it was submitted. The limit is per origin
 * (scheme, host and port, case aside): the same requests to a second
 * server meanwhile do not wait for the first's. */
static void test_waiting_per_origin(void **state) {
    fixture *f = *state;
    fixture other;
    memset(&other, 0, sizeof other);
    assert_int_equal(start_sink(&other, false), 0);
    sp_http_client_config cfg = sp_http_client_config_default();
    cfg.max_in_flight = 8;
    cfg.max_connections_per_host = 1;
    cfg.connect_timeout_ms = 700;
    cfg.timeout_ms = 700;
    sp_http_client *c = NULL;
    assert_ok(sp_http_client_new(&cfg, &c));
    char url[3][128];
    snprintf(url[0], sizeof url[0], "%s/pause", f->base);
    snprintf(url[1], sizeof url[1], "HTTP://127.0.0.1:%u/pause", f->port); /* the same origin */
    snprintf(url[2], sizeof url[2], "%s/pause", other.base);
    outcome o[6];
    memset(o, 0, sizeof o);
    atomic_store(&paused_most, 0);
    int64_t start = sp_test_now_ms();
    for (int i = 0; i < 6; i++) {
        sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url[i < 2 ? 0 : i == 2 ? 1 : 2]};
        assert_ok(sp_http_client_submit(c, &req, &o[i]));
    }
    assert_int_equal(sp_http_client_in_flight(c), 6);
    drive(c);
    int64_t took = sp_test_now_ms() - start;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, 200);
        assert_string_equal(o[i].body, "pause");
    }
    /* one at a time per server, both servers at once: about 900 ms, not 1800 */
    assert_int_equal(atomic_load(&paused_most), 2);
    if (took < 850 || took > 1700) fail_msg("six requests took %lld ms", (long long)took);
    assert_int_equal(sp_http_client_connects(c), 2);

    /* requests still waiting when the client is freed go with it */
    for (int i = 0; i < 4; i++) {
        sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url[0]};
        assert_ok(sp_http_client_submit(c, &req, NULL));
    }
    assert_ok(sp_http_client_run(c, 0, on_done, NULL, NULL));
    sp_http_client_free(c);
    sp_http_server_stop(other.server, 1000);
}

static void test_allocation_faults(void **state) {
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/ok", f->base);
    sp_http_client_header h[] = {{"X-Test", "v"}};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_POST, .url = url, .headers = h, .n_headers = 1,
                                  .body = "x", .body_len = 1};
    for (uint64_t n = 1;; n++) {
        sp_http_client_config cfg = sp_http_client_config_default();
        sp_http_client *c = NULL;
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_http_client_new(&cfg, &c);
        outcome o;
        memset(&o, 0, sizeof o);
        if (rc == SP_OK) rc = sp_http_client_submit(c, &req, &o);
        bool reached = sp_test_fault_disarm(fault);
        if (rc == SP_OK) {
            drive(c);
            assert_int_equal(o.calls, 1);
        } else {
            assert_rc(rc, SP_ERR_NO_MEMORY);
            assert_int_equal(sp_http_client_in_flight(c), 0);
        }
        sp_http_client_free(c);
        if (!reached) break;
    }
}

static void test_oauth2_retry_after_401(void **state) {
    fixture *f = *state;
    char token_url[128], url[128];
    snprintf(token_url, sizeof token_url, "%s/token", f->base);
    snprintf(url, sizeof url, "%s/auth", f->base);
    sp_oauth2_config oc = {.token_url = token_url, .client_id = "id", .client_secret = "secret"};
    sp_oauth2 *o2 = NULL;
    assert_ok(sp_oauth2_new(&oc, &o2));
    sp_http_client *c = client_new(4, 1024);

    /* the Authorization header is the cache's */
    sp_http_client_header h[] = {{"authorization", "Bearer mine"}};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_POST, .url = url, .headers = h, .n_headers = 1,
                                  .oauth2 = o2};
    assert_rc(sp_http_client_submit(c, &req, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_oauth2_fetches(o2), 0);

    /* tok-1 works */
    req.n_headers = 0;
    outcome o;
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.status, 200);
    assert_false(o.retried);
    assert_string_equal(o.body, "Bearer tok-1");

    /* the provider stops taking tok-1: one 401, a fresh token, one retry */
    atomic_store(&reject_first, 2);
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 200);
    assert_rc(o.result, SP_OK);
    assert_true(o.retried);
    assert_string_equal(o.body, "Bearer tok-2");
    assert_int_equal(sp_oauth2_fetches(o2), 2);

    /* and one that refuses every token: 401 reported after exactly one retry */
    atomic_store(&reject_first, 1000);
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 401);
    assert_rc(o.result, SP_ERR_PROVIDER_REJECTED);
    assert_true(o.retried);
    assert_int_equal(sp_oauth2_fetches(o2), 3);
    assert_int_equal(atomic_load(&auth_seen_ok), 2);
    sp_http_client_free(c);
    sp_oauth2_free(o2);
}

static void test_tls(void **state) {
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof url, "https://localhost:%u/ok", f->port);
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_GET, .url = url};
    sp_http_client_config cfg = sp_http_client_config_default();
    outcome o;
    sp_http_client *c = NULL;

    /* the system's CAs do not know the run's certificate */
    assert_ok(sp_http_client_new(&cfg, &c));
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_rc(o.result, SP_ERR_NETWORK);
    assert_int_equal(o.status, 0);
    sp_http_client_free(c);

    for (int pinned = 0; pinned < 2; pinned++) {
        cfg.ca_file = f->tls.cert;
        cfg.allow_self_signed = pinned;
        assert_ok(sp_http_client_new(&cfg, &c));
        memset(&o, 0, sizeof o);
        assert_ok(sp_http_client_submit(c, &req, &o));
        drive(c);
        assert_int_equal(o.status, 200);
        assert_string_equal(o.body, "hello");
        sp_http_client_free(c);
    }

    /* the certificate names localhost and 127.0.0.1, not this name */
    snprintf(url, sizeof url, "https://127.0.0.2:%u/ok", f->port);
    assert_ok(sp_http_client_new(&cfg, &c));
    memset(&o, 0, sizeof o);
    assert_ok(sp_http_client_submit(c, &req, &o));
    drive(c);
    assert_rc(o.result, SP_ERR_NETWORK);
    sp_http_client_free(c);
}

static void test_backoff(void **state) {
    (void)state;
    /* the ceiling doubles: the largest pick is the ceiling itself */
    assert_int_equal(sp_http_backoff_ms(1, 100, 10000, -1, UINT32_MAX), 100);
    assert_int_equal(sp_http_backoff_ms(2, 100, 10000, -1, UINT32_MAX), 200);
    assert_int_equal(sp_http_backoff_ms(4, 100, 10000, -1, UINT32_MAX), 800);
    assert_int_equal(sp_http_backoff_ms(40, 100, 10000, -1, UINT32_MAX), 10000);
    assert_int_equal(sp_http_backoff_ms(1000000, 100, 10000, -1, UINT32_MAX), 10000);
    /* full jitter: zero is a valid pick, the middle is the middle */
    assert_int_equal(sp_http_backoff_ms(3, 100, 10000, -1, 0), 0);
    assert_int_equal(sp_http_backoff_ms(3, 100, 10000, -1, 1u << 31), 200);
    /* Retry-After is a floor, max_ms a ceiling over it */
    assert_int_equal(sp_http_backoff_ms(1, 100, 10000, 5000, 0), 5000);
    assert_int_equal(sp_http_backoff_ms(1, 100, 10000, 50, UINT32_MAX), 100);
    assert_int_equal(sp_http_backoff_ms(1, 100, 10000, 50000, 0), 10000);
    /* deterministic, and no overflow near the top */
    assert_int_equal(sp_http_backoff_ms(7, 3, 1000, -1, 12345), sp_http_backoff_ms(7, 3, 1000, -1, 12345));
    assert_true(sp_http_backoff_ms(64, UINT64_MAX / 2, UINT64_MAX, -1, UINT32_MAX) <= UINT64_MAX);
    assert_int_equal(sp_http_backoff_ms(0, 0, 0, -1, UINT32_MAX), 0);
}

static void test_retry_after_parse(void **state) {
    (void)state;
    const int64_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
#define RA(s) sp_http_parse_retry_after(s, strlen(s), now)
    assert_int_equal(RA("0"), 0);
    assert_int_equal(RA("120"), 120000);
    assert_int_equal(RA("  30\t"), 30000);
    assert_int_equal(RA("3600"), 3600000);
    assert_int_equal(RA("3601"), SP_HTTP_RETRY_AFTER_MAX_MS);
    assert_int_equal(RA("999999999999999999999999999"), SP_HTTP_RETRY_AFTER_MAX_MS);
    assert_int_equal(RA("Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    assert_int_equal(RA("Sun, 06 Nov 1994 08:50:07 GMT"), 30000);
    assert_int_equal(RA("Mon, 07 Nov 1994 08:49:37 GMT"), SP_HTTP_RETRY_AFTER_MAX_MS);
    assert_int_equal(RA("Sat, 05 Nov 1994 08:49:37 GMT"), 0);
    assert_int_equal(RA("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(sp_http_parse_retry_after("Wed, 01 Mar 2000 00:00:10 GMT", 29, 951868800), 10000);
    static const char *const garbage[] = {"", " ", "-1", "1.5", "12s", "Sun, 06 Nov 1994 08:49:37 UTC",
                                          "Sun, 32 Nov 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT",
                                          "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:49:37 GMT",
                                          "Sunday, 06-Nov-94 08:49:37 GMT", "0x10"};
    for (size_t i = 0; i < SP_ARRAY_LEN(garbage); i++) {
        if (RA(garbage[i]) != -1) fail_msg("accepted '%s'", garbage[i]);
    }
    assert_int_equal(sp_http_parse_retry_after(NULL, 0, now), -1);
#undef RA
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_limits),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test_setup_teardown(test_urls_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_post_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_classification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_network_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse_and_no_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_per_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oauth2_retry_after_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup_tls, teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
