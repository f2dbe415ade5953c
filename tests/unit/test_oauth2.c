/*
 * The OAuth 2.0 client-credentials token cache against sealpost's own
 * server in-process as the token endpoint (plain HTTP on 127.0.0.1): what
 * goes on the wire (Basic with form-urlencoded credentials, or the body;
 * scope and audience), caching and refresh on a clock the test moves,
 * invalidation that spares a renewed token, every way a reply can be
 * wrong (bad JSON, a huge token or reply, a token that would break a
 * header, another token_type), the endpoint's refusals and failures, one
 * fetch for many concurrent callers, and allocation faults.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "sp_test_util.h"

#include "sealpost/http_client.h"

typedef struct {
    char dir[64];
    sp_http_server *server;
    char base[64];
} fixture;

/* ---- the token endpoint ---- */

static atomic_int respond_failures; /* checked by every teardown */

static void respond(sp_http_request *req, unsigned status, const char *type, const void *body, size_t len) {
    if (sp_http_respond(req, status, type, body, len) != SP_OK) atomic_fetch_add(&respond_failures, 1);
}

static atomic_int hits;
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static char seen_auth[512], seen_body[4096];

static void reply(sp_http_request *req, unsigned status, const char *body) {
    respond(req, status, "application/json", body, strlen(body));
}

static void on_request(void *arg, sp_http_request *req) {
    (void)arg;
    int n = atomic_fetch_add(&hits, 1) + 1;
    const char *path = sp_http_path(req);
    size_t len = 0;
    const uint8_t *body = sp_http_body(req, &len);
    const char *auth = sp_http_header(req, "authorization", NULL);
    pthread_mutex_lock(&seen_mu);
    snprintf(seen_auth, sizeof seen_auth, "%s", auth != NULL ? auth : "");
    snprintf(seen_body, sizeof seen_body, "%.*s", (int)len, (const char *)body);
    pthread_mutex_unlock(&seen_mu);
    char out[256];
    if (strcmp(path, "/ok") == 0 || strcmp(path, "/slow") == 0) {
        if (path[1] == 's') sp_test_sleep_ms(300);
        snprintf(out, sizeof out, "{\"access_token\":\"tok.%d-A_b~c+d/e==\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
                 n);
        reply(req, 200, out);
    } else if (strcmp(path, "/short") == 0) {
        snprintf(out, sizeof out, "{\"access_token\":\"s%d\",\"token_type\":\"BEARER\",\"expires_in\":\"40\"}", n);
        reply(req, 200, out);
    } else if (strcmp(path, "/noexpiry") == 0) {
        reply(req, 200, "{\"access_token\":\"n\",\"token_type\":\"bearer\"}");
    } else if (strcmp(path, "/badjson") == 0) {
        reply(req, 200, "{\"access_token\":\"x\",");
    } else if (strcmp(path, "/notobject") == 0) {
        reply(req, 200, "[\"x\"]");
    } else if (strcmp(path, "/wrongtype") == 0) {
        reply(req, 200, "{\"access_token\":\"x\",\"token_type\":\"mac\",\"expires_in\":60}");
    } else if (strcmp(path, "/notype") == 0) {
        reply(req, 200, "{\"access_token\":\"x\",\"expires_in\":60}");
    } else if (strcmp(path, "/zero") == 0) {
        reply(req, 200, "{\"access_token\":\"x\",\"token_type\":\"bearer\",\"expires_in\":0}");
    } else if (strcmp(path, "/inject") == 0) {
        reply(req, 200, "{\"access_token\":\"x\\r\\nX-Evil: 1\",\"token_type\":\"bearer\",\"expires_in\":60}");
    } else if (strcmp(path, "/huge") == 0 || strcmp(path, "/giant") == 0) {
        /* a token one byte over the limit, or a reply over its limit */
        size_t tok = path[1] == 'h' ? SP_OAUTH2_MAX_TOKEN + 1 : SP_OAUTH2_MAX_REPLY;
        char *big = malloc(tok + 100);
        if (big == NULL) return;
        size_t at = (size_t)snprintf(big, 100, "{\"access_token\":\"");
        memset(big + at, 'a', tok);
        at += tok;
        at += (size_t)snprintf(big + at, 100, "\",\"token_type\":\"bearer\",\"expires_in\":60}");
        respond(req, 200, "application/json", big, at);
        free(big);
    } else if (strcmp(path, "/e400") == 0) {
        reply(req, 400, "{\"error\":\"invalid_client\"}");
    } else if (strcmp(path, "/e401") == 0) {
        reply(req, 401, "{\"error\":\"invalid_client\"}");
    } else if (strcmp(path, "/e500") == 0) {
        reply(req, 500, "{}");
    } else if (strcmp(path, "/e429") == 0) {
        reply(req, 429, "{}");
    } else {
        reply(req, 404, "{}");
    }
}

static const sp_http_handlers handlers = {NULL, on_request, NULL};

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL) return -1;
    sp_http_config c = {
        .bind_address = "127.0.0.1",
        .allow_plain_http = true,
        .threads = 4,
        .max_body = 1 << 20,
        .max_header_bytes = 32768,
        .max_connections = 64,
        .max_connections_per_ip = 64,
        .idle_timeout_s = 30,
    };
    if (sp_http_server_start(&c, &handlers, &f->server) != SP_OK) return -1;
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%u", sp_http_server_port(f->server));
    atomic_store(&hits, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sp_http_server_stop(f->server, 1000);
    if (atomic_load(&respond_failures) != 0) {
        print_error("sp_http_respond failed %d times\n", atomic_load(&respond_failures));
        return -1;
    }
    free(f);
    return 0;
}

static sp_oauth2 *cache_on(const fixture *f, const char *path, sp_oauth2_auth auth) {
    char url[128];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    sp_oauth2_config cfg = {.token_url = url, .client_id = "my id", .client_secret = "s:e/c r%t", .auth = auth,
                            .scope = "send sms", .audience = "https://api.example/"};
    sp_oauth2 *o = NULL;
    assert_ok(sp_oauth2_new(&cfg, &o));
    return o;
}

static void expect_token(sp_oauth2 *o, int64_t now, const char *want) {
    char tok[SP_OAUTH2_MAX_TOKEN + 1];
    size_t len = 0;
    assert_ok(sp_oauth2_token(o, now, tok, sizeof tok, &len));
    assert_int_equal(len, strlen(tok));
    assert_string_equal(tok, want);
}

static sp_error token_rc(sp_oauth2 *o, int64_t now) {
    char tok[SP_OAUTH2_MAX_TOKEN + 1];
    size_t len = 0;
    return sp_oauth2_token(o, now, tok, sizeof tok, &len);
}

/* ---- tests ---- */

static void test_config(void **state) {
    (void)state;
    sp_oauth2 *o = NULL;
    sp_oauth2_config ok = {.token_url = "https://auth.example/token", .client_id = "a", .client_secret = "b"};
    sp_oauth2_config bad;
    bad = ok, bad.token_url = "http://auth.example/token"; /* plain HTTP off loopback */
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.client_id = "";
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.client_secret = NULL;
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.scope = "a\nb";
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.auth = (sp_oauth2_auth)9;
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    bad = ok, bad.allow_self_signed = true;
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    char *long_secret = malloc(SP_OAUTH2_MAX_FIELD + 2);
    assert_non_null(long_secret);
    memset(long_secret, 's', SP_OAUTH2_MAX_FIELD + 1);
    long_secret[SP_OAUTH2_MAX_FIELD + 1] = 0;
    bad = ok, bad.client_secret = long_secret;
    assert_rc(sp_oauth2_new(&bad, &o), SP_ERR_INVALID_ARGUMENT);
    long_secret[SP_OAUTH2_MAX_FIELD] = 0; /* exactly the limit, every byte %-encoded in the body */
    memset(long_secret, '%', SP_OAUTH2_MAX_FIELD);
    bad = ok, bad.client_secret = long_secret, bad.client_id = long_secret, bad.scope = long_secret;
    bad.audience = long_secret, bad.auth = SP_OAUTH2_AUTH_BODY;
    assert_ok(sp_oauth2_new(&bad, &o));
    sp_oauth2_free(o);
    free(long_secret);
    assert_ok(sp_oauth2_new(&ok, &o));
    assert_int_equal(sp_oauth2_fetches(o), 0); /* nothing fetched until asked */
    sp_oauth2_free(o);
    sp_oauth2_free(NULL);
}

static void test_basic_auth_and_cache(void **state) {
    fixture *f = *state;
    sp_oauth2 *o = cache_on(f, "/ok", SP_OAUTH2_AUTH_BASIC);
    expect_token(o, 1000, "tok.1-A_b~c+d/e==");
    pthread_mutex_lock(&seen_mu);
    /* base64("my+id:s%3Ae%2Fc+r%25t") */
    assert_string_equal(seen_auth, "Basic bXkraWQ6cyUzQWUlMkZjK3IlMjV0");
    assert_string_equal(seen_body, "grant_type=client_credentials&scope=send+sms&audience=https%3A%2F%2Fapi.example%2F");
    pthread_mutex_unlock(&seen_mu);
    /* cached until 10 % of the hour is left */
    expect_token(o, 1000 + 3240000 - 1, "tok.1-A_b~c+d/e==");
    assert_int_equal(sp_oauth2_fetches(o), 1);
    expect_token(o, 1000 + 3240000, "tok.2-A_b~c+d/e==");
    assert_int_equal(sp_oauth2_fetches(o), 2);

    /* a buffer too small for the token */
    char tiny[8];
    size_t len = 0;
    assert_rc(sp_oauth2_token(o, 3241000, tiny, sizeof tiny, &len), SP_ERR_BUFFER_TOO_SMALL);

    /* invalidating someone else's (older) token spares the current one */
    sp_oauth2_invalidate(o, "tok.1-A_b~c+d/e==", strlen("tok.1-A_b~c+d/e=="));
    expect_token(o, 3241000, "tok.2-A_b~c+d/e==");
    assert_int_equal(sp_oauth2_fetches(o), 2);
    sp_oauth2_invalidate(o, "tok.2-A_b~c+d/e==", strlen("tok.2-A_b~c+d/e=="));
    expect_token(o, 3241000, "tok.3-A_b~c+d/e==");
    assert_int_equal(sp_oauth2_fetches(o), 3);
    sp_oauth2_free(o);
}

static void test_body_auth_and_short_lifetimes(void **state) {
    fixture *f = *state;
    sp_oauth2 *o = cache_on(f, "/short", SP_OAUTH2_AUTH_BODY);
    expect_token(o, 0, "s1");
    pthread_mutex_lock(&seen_mu);
    assert_string_equal(seen_auth, "");
    assert_string_equal(seen_body, "grant_type=client_credentials&scope=send+sms&audience=https%3A%2F%2Fapi.example%2F"
                                   "&client_id=my+id&client_secret=s%3Ae%2Fc+r%25t");
    pthread_mutex_unlock(&seen_mu);
    /* 40 s: 30 s would leave 10, so refresh comes half-way instead */
    expect_token(o, 19999, "s1");
    expect_token(o, 20000, "s2");
    assert_int_equal(sp_oauth2_fetches(o), 2);
    sp_oauth2_free(o);

    o = cache_on(f, "/noexpiry", SP_OAUTH2_AUTH_BASIC); /* a lifetime of its own: 300 s */
    expect_token(o, 0, "n");
    expect_token(o, 269999, "n");
    assert_int_equal(sp_oauth2_fetches(o), 1);
    expect_token(o, 270000, "n");
    assert_int_equal(sp_oauth2_fetches(o), 2);
    sp_oauth2_free(o);
}

static void test_bad_replies(void **state) {
    fixture *f = *state;
    static const struct {
        const char *path;
        sp_error want;
    } cases[] = {
        {"/badjson", SP_ERR_BAD_JSON},   {"/notobject", SP_ERR_BAD_JSON},
        {"/wrongtype", SP_ERR_BAD_JSON}, {"/notype", SP_ERR_BAD_JSON},
        {"/zero", SP_ERR_BAD_JSON},      {"/inject", SP_ERR_BAD_JSON},
        {"/huge", SP_ERR_TOO_LARGE},     {"/giant", SP_ERR_TOO_LARGE},
        {"/e400", SP_ERR_AUTH},          {"/e401", SP_ERR_AUTH},
        {"/e500", SP_ERR_PROVIDER_UNAVAILABLE}, {"/e429", SP_ERR_PROVIDER_UNAVAILABLE},
        {"/nothing", SP_ERR_PROVIDER_REJECTED},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        sp_oauth2 *o = cache_on(f, cases[i].path, SP_OAUTH2_AUTH_BASIC);
        sp_error rc = token_rc(o, 0);
        if (rc != cases[i].want) fail_msg("%s: %s", cases[i].path, sp_error_name(rc));
        /* a failure is not cached: the next call asks again */
        assert_rc(token_rc(o, 1), cases[i].want);
        assert_int_equal(sp_oauth2_fetches(o), 2);
        sp_oauth2_free(o);
    }

    /* nobody listening */
    sp_oauth2_config cfg = {.token_url = "http://127.0.0.1:1/token", .client_id = "a", .client_secret = "b",
                            .timeout_ms = 2000};
    sp_oauth2 *o = NULL;
    assert_ok(sp_oauth2_new(&cfg, &o));
    assert_rc(token_rc(o, 0), SP_ERR_NETWORK);
    sp_oauth2_free(o);
}

/* ---- concurrent callers ---- */

typedef struct {
    sp_oauth2 *o;
    pthread_barrier_t *go;
    sp_error rc;
    char tok[64];
} caller;

static void *call_token(void *arg) {
    caller *c = arg;
    size_t len = 0;
    pthread_barrier_wait(c->go);
    c->rc = sp_oauth2_token(c->o, 5, c->tok, sizeof c->tok, &len);
    return NULL;
}

static void test_single_flight(void **state) {
    fixture *f = *state;
    for (int round = 0; round < 2; round++) {
        /* the slow endpoint keeps the fetch open while the others arrive;
         * the second round has them wait for a failure instead */
        sp_oauth2 *o = cache_on(f, round == 0 ? "/slow" : "/e500", SP_OAUTH2_AUTH_BASIC);
        enum { N = 8 };
        pthread_t t[N];
        caller c[N];
        pthread_barrier_t go;
        assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
        for (int i = 0; i < N; i++) {
            c[i] = (caller){.o = o, .go = &go};
            assert_int_equal(pthread_create(&t[i], NULL, call_token, &c[i]), 0);
        }
        for (int i = 0; i < N; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
        pthread_barrier_destroy(&go);
        uint64_t fetches = sp_oauth2_fetches(o);
        for (int i = 0; i < N; i++) {
            if (round == 0) {
                assert_ok(c[i].rc);
                assert_string_equal(c[i].tok, c[0].tok);
            } else {
                assert_rc(c[i].rc, SP_ERR_PROVIDER_UNAVAILABLE);
            }
        }
        if (round == 0) {
            assert_int_equal(fetches, 1);
        } else {
            /* a caller arriving after the failed fetch finished tries again,
             * but callers that waited share its outcome */
            assert_true(fetches >= 1 && fetches < N);
        }
        sp_oauth2_free(o);
    }
}

static void test_allocation_faults(void **state) {
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/ok", f->base);
    sp_oauth2_config cfg = {.token_url = url, .client_id = "id", .client_secret = "secret", .scope = "s"};
    for (uint64_t n = 1;; n++) {
        sp_oauth2 *o = NULL;
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_oauth2_new(&cfg, &o);
        bool reached = sp_test_fault_disarm(fault);
        if (rc != SP_OK) {
            assert_rc(rc, SP_ERR_NO_MEMORY);
            assert_null(o);
        }
        sp_oauth2_free(o);
        if (!reached) break;
    }
    /* a fetch: the sink shares the allocation funnel, so a fault may land
     * there and come back as a failed or refused connection */
    int ours = 0;
    for (uint64_t n = 1;; n++) {
        sp_oauth2 *o = NULL;
        assert_ok(sp_oauth2_new(&cfg, &o));
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = token_rc(o, 0);
        bool reached = sp_test_fault_disarm(fault);
        if (rc == SP_ERR_NO_MEMORY) ours++;
        if (rc != SP_OK && rc != SP_ERR_NO_MEMORY && rc != SP_ERR_NETWORK && rc != SP_ERR_PROVIDER_UNAVAILABLE)
            fail_msg("fault %llu: %s", (unsigned long long)n, sp_error_name(rc));
        /* whatever failed, the cache still works */
        assert_ok(token_rc(o, 0));
        sp_oauth2_free(o);
        if (!reached) break;
    }
    assert_true(ours > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test_setup_teardown(test_basic_auth_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_auth_and_short_lifetimes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_faults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
