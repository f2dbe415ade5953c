/*
 * The OAuth 2.0 token cache and the HTTP client against a real OAuth 2.0
 * authorization server: oauth2-mock-server from the npm registry, at the
 * version tests/oauth2/package-lock.json pins, installed into the build
 * directory by tests/oauth2/install and started here (node and the
 * launcher by absolute path, on 127.0.0.1, stopped by PID). The launcher
 * makes it refuse any client but ours and issue tokens that live 4 s.
 *
 * Checked: a wrong secret is SP_ERR_AUTH (Basic and body authentication);
 * the right one gets a signed JWT carrying our scope, cached across calls
 * (one fetch) and renewed once due; and a provider (sealpost's own server
 * in-process) that takes the issuer's tokens but revokes one mid-way
 * answers 401 once, after which the client fetches a fresh token and the
 * request goes through on the single retry.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "sp_test_util.h"

#include "sealpost/http_client.h"

#define CLIENT_ID "sealpost-test"
#define CLIENT_SECRET "s3cr:et/with spaces&more"
#define TOKEN_TTL_S 4

typedef struct {
    char dir[256];
    char install[512];
    char node[512];
    pid_t pid;
    uint16_t port;
    char issuer[64];
    char token_url[96];
    sp_http_server *sink;
    char sink_url[96];
} fixture;

static fixture *g;

/* ---- helpers ---- */

static bool find_node(char *out, size_t cap) {
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path != NULL ? path : "/usr/bin:/usr/local/bin");
    for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
        char cand[1024];
        snprintf(cand, sizeof cand, "%s/node", dir);
        char *real = access(cand, X_OK) == 0 ? realpath(cand, NULL) : NULL;
        bool fits = real != NULL && strlen(real) < cap;
        if (fits) snprintf(out, cap, "%s", real);
        free(real);
        if (fits) return true;
    }
    return false;
}

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static size_t discard(char *p, size_t s, size_t n, void *u) {
    (void)p;
    (void)u;
    return s * n;
}

static bool server_up(const fixture *f) {
    char url[128];
    snprintf(url, sizeof url, "%s/.well-known/openid-configuration", f->issuer);
    CURL *h = curl_easy_init();
    if (h == NULL) return false;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    bool ok = curl_easy_perform(h) == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
              status == 200;
    curl_easy_cleanup(h);
    return ok;
}

/* The JWT's payload as JSON (the caller decrefs), or NULL. */
static json_t *jwt_payload(const char *token) {
    const char *a = strchr(token, '.');
    const char *b = a != NULL ? strchr(a + 1, '.') : NULL;
    if (b == NULL || strchr(b + 1, '.') != NULL) return NULL;
    uint8_t raw[2048];
    size_t len = 0;
    if (sp_b64_decode(a + 1, (size_t)(b - a - 1), raw, sizeof raw, &len, true) != SP_OK) return NULL;
    return json_loadb((const char *)raw, len, 0, NULL);
}

/* ---- the provider sink: takes the issuer's tokens, one may be revoked ---- */

static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static char revoked[SP_OAUTH2_MAX_TOKEN + 1];
static char last_seen[SP_OAUTH2_MAX_TOKEN + 1];
static int sink_401s, sink_200s;

static void on_sink(void *arg, sp_http_request *req) {
    const fixture *f = arg;
    const char *auth = sp_http_header(req, "authorization", NULL);
    unsigned status = 401;
    if (auth != NULL && strncmp(auth, "Bearer ", 7) == 0) {
        const char *tok = auth + 7;
        json_t *p = jwt_payload(tok);
        const char *iss = json_string_value(json_object_get(p, "iss"));
        const char *scope = json_string_value(json_object_get(p, "scope"));
        json_int_t exp = json_integer_value(json_object_get(p, "exp"));
        /* the issuer calls itself "localhost" however it is reached */
        bool issued = iss != NULL && strstr(iss, "://localhost:") != NULL && scope != NULL &&
                      strcmp(scope, "send") == 0 && exp >= (json_int_t)time(NULL);
        (void)f;
        json_decref(p);
        pthread_mutex_lock(&sink_mu);
        if (issued && strcmp(tok, revoked) != 0) {
            status = 200;
            sink_200s++;
        } else {
            sink_401s++;
        }
        snprintf(last_seen, sizeof last_seen, "%s", tok);
        pthread_mutex_unlock(&sink_mu);
    }
    if (sp_http_respond(req, status, "text/plain", "x", 1) != SP_OK) abort();
}

/* ---- set-up: install, start, wait ---- */

static int group_setup(void **state) {
    if (sp_init() != SP_OK) return -1;
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-oauth2");
    if (f == NULL) return -1;
    g = f;
    *state = f;
    const char *src = getenv("SP_SOURCE_DIR");
    const char *build = getenv("SP_BUILD_DIR");
    if (src == NULL || build == NULL) {
        print_error("SP_SOURCE_DIR and SP_BUILD_DIR must be set (ctest sets them)\n");
        return -1;
    }
    if (!find_node(f->node, sizeof f->node)) {
        print_error("node not found on PATH (Debian packages: nodejs npm)\n");
        return -1;
    }
    snprintf(f->install, sizeof f->install, "%s/oauth2-mock", build);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/oauth2/install' '%s'", src, f->install);
    if (system(cmd) != 0) {
        print_error("tests/oauth2/install failed\n");
        return -1;
    }
    f->port = free_port();
    if (f->port == 0) return -1;
    snprintf(f->issuer, sizeof f->issuer, "http://127.0.0.1:%u", f->port);
    snprintf(f->token_url, sizeof f->token_url, "%s/token", f->issuer);

    char script[600], port[8], ttl[8], log[300];
    snprintf(script, sizeof script, "%s/server.mjs", f->install);
    snprintf(port, sizeof port, "%u", f->port);
    snprintf(ttl, sizeof ttl, "%d", TOKEN_TTL_S);
    snprintf(log, sizeof log, "%s/server.log", f->dir);
    f->pid = sp_test_fork();
    if (f->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("SP_OAUTH2_CLIENT_ID", CLIENT_ID, 1);
        setenv("SP_OAUTH2_CLIENT_SECRET", CLIENT_SECRET, 1);
        char *argv[] = {f->node, script, f->install, port, ttl, NULL};
        execv(f->node, argv);
        _exit(127);
    }
    int64_t deadline = sp_test_now_ms() + 30000;
    while (!server_up(f)) {
        int status;
        if (waitpid(f->pid, &status, WNOHANG) == f->pid || sp_test_now_ms() > deadline) {
            f->pid = 0;
            char *text = sp_test_read_file(log, NULL);
            print_error("the OAuth 2.0 server did not come up:\n%s\n", text);
            free(text);
            return -1;
        }
        sp_test_sleep_ms(100);
    }

    sp_http_config c = {
        .bind_address = "127.0.0.1",
        .allow_plain_http = true,
        .threads = 2,
        .max_body = 4096,
        .max_header_bytes = 32768,
        .max_connections = 16,
        .max_connections_per_ip = 16,
        .idle_timeout_s = 30,
    };
    sp_http_handlers h = {NULL, on_sink, f};
    if (sp_http_server_start(&c, &h, &f->sink) != SP_OK) return -1;
    snprintf(f->sink_url, sizeof f->sink_url, "http://127.0.0.1:%u/send", sp_http_server_port(f->sink));
    return 0;
}

static int group_teardown(void **state) {
    fixture *f = *state;
    if (f == NULL) return 0;
    sp_http_server_stop(f->sink, 1000);
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        int64_t deadline = sp_test_now_ms() + 5000;
        int status;
        while (waitpid(f->pid, &status, WNOHANG) == 0) {
            if (sp_test_now_ms() > deadline) {
                kill(f->pid, SIGKILL);
                waitpid(f->pid, &status, 0);
                break;
            }
            sp_test_sleep_ms(50);
        }
    }
    return sp_test_fixture_free(f, f->dir);
}

static sp_oauth2 *cache(const fixture *f, const char *secret, sp_oauth2_auth auth) {
    sp_oauth2_config cfg = {.token_url = f->token_url, .client_id = CLIENT_ID, .client_secret = secret,
                            .scope = "send", .auth = auth};
    sp_oauth2 *o = NULL;
    assert_ok(sp_oauth2_new(&cfg, &o));
    return o;
}

/* ---- tests ---- */

static void test_wrong_secret_refused(void **state) {
    fixture *f = *state;
    for (int auth = 0; auth < 2; auth++) {
        sp_oauth2 *o = cache(f, "not the secret", (sp_oauth2_auth)auth);
        char tok[SP_OAUTH2_MAX_TOKEN + 1];
        size_t len = 0;
        assert_rc(sp_oauth2_token(o, sp_test_now_ms(), tok, sizeof tok, &len), SP_ERR_AUTH);
        assert_int_equal(sp_oauth2_fetches(o), 1);
        sp_oauth2_free(o);
    }
}

static void test_token_cached_and_renewed(void **state) {
    fixture *f = *state;
    for (int auth = 0; auth < 2; auth++) {
        sp_oauth2 *o = cache(f, CLIENT_SECRET, (sp_oauth2_auth)auth);
        char first[SP_OAUTH2_MAX_TOKEN + 1], tok[SP_OAUTH2_MAX_TOKEN + 1];
        size_t len = 0;
        int64_t t0 = sp_test_now_ms();
        assert_ok(sp_oauth2_token(o, t0, first, sizeof first, &len));
        json_t *p = jwt_payload(first);
        assert_non_null(p);
        assert_string_equal(json_string_value(json_object_get(p, "scope")), "send");
        assert_int_equal(json_integer_value(json_object_get(p, "exp")) - json_integer_value(json_object_get(p, "iat")),
                         TOKEN_TTL_S);
        json_decref(p);
        for (int i = 0; i < 5; i++) {
            assert_ok(sp_oauth2_token(o, t0 + 100 * i, tok, sizeof tok, &len));
            assert_string_equal(tok, first);
        }
        assert_int_equal(sp_oauth2_fetches(o), 1);
        /* a new second, so the issuer signs a different token */
        sp_test_sleep_ms(1100);
        assert_ok(sp_oauth2_token(o, t0 + TOKEN_TTL_S * 1000, tok, sizeof tok, &len));
        assert_int_equal(sp_oauth2_fetches(o), 2);
        assert_string_not_equal(tok, first);
        sp_oauth2_free(o);
    }
}

typedef struct {
    int calls;
    unsigned status;
    sp_error result;
    bool retried;
} outcome;

static void on_done(void *ctx, void *user, const sp_http_client_response *r) {
    (void)ctx;
    outcome *o = user;
    o->calls++;
    o->status = r->status;
    o->result = r->result;
    o->retried = r->retried;
}

static outcome send_one(sp_http_client *c, sp_oauth2 *o2, const fixture *f) {
    static const char body[] = "{\"to\":\"ciphertext\"}";
    sp_http_client_header h[] = {{"Content-Type", "application/json"}};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_POST, .url = f->sink_url, .headers = h, .n_headers = 1,
                                  .body = body, .body_len = sizeof body - 1, .oauth2 = o2};
    outcome o = {0};
    assert_ok(sp_http_client_submit(c, &req, &o));
    int64_t deadline = sp_test_now_ms() + 20000;
    while (sp_http_client_in_flight(c) > 0) {
        assert_true(sp_test_now_ms() < deadline);
        assert_ok(sp_http_client_run(c, 100, on_done, NULL, NULL));
    }
    assert_int_equal(o.calls, 1);
    return o;
}

static void test_provider_401_then_fresh_token(void **state) {
    fixture *f = *state;
    sp_oauth2 *o2 = cache(f, CLIENT_SECRET, SP_OAUTH2_AUTH_BASIC);
    sp_http_client_config cfg = sp_http_client_config_default();
    sp_http_client *c = NULL;
    assert_ok(sp_http_client_new(&cfg, &c));

    outcome o = send_one(c, o2, f);
    assert_int_equal(o.status, 200);
    assert_false(o.retried);
    o = send_one(c, o2, f);
    assert_int_equal(o.status, 200);
    assert_int_equal(sp_oauth2_fetches(o2), 1);

    /* the provider revokes the token it has been getting */
    pthread_mutex_lock(&sink_mu);
    snprintf(revoked, sizeof revoked, "%s", last_seen);
    pthread_mutex_unlock(&sink_mu);
    sp_test_sleep_ms(1100); /* so the next token differs */
    o = send_one(c, o2, f);
    assert_int_equal(o.status, 200);
    assert_rc(o.result, SP_OK);
    assert_true(o.retried);
    assert_int_equal(sp_oauth2_fetches(o2), 2);
    pthread_mutex_lock(&sink_mu);
    assert_int_equal(sink_401s, 1);
    assert_int_equal(sink_200s, 3);
    assert_string_not_equal(last_seen, revoked);
    pthread_mutex_unlock(&sink_mu);
    sp_http_client_free(c);
    sp_oauth2_free(o2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrong_secret_refused),
        cmocka_unit_test(test_token_cached_and_renewed),
        cmocka_unit_test(test_provider_401_then_fresh_token),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
