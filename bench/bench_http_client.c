/*
 * bench_http_client: requests per second through sp_http_client to a
 * provider sink on loopback, the transport the send pipeline pushes every
 * message through (the goal there is 20,000 unbatched messages/s per
 * machine, so the client must cost well under that).
 *
 * The sink is sealpost's own HTTP server in this process, plain HTTP on
 * 127.0.0.1, answering each POST of a ~300-byte body with 200 and a short
 * body. reference: the same POSTs, each on a fresh libcurl easy handle
 * (curl_easy_init, perform, cleanup: a new connection every time), the
 * way a naive client would send. Two lines: ours one request at a time
 * (what reuse of handles and connections alone buys), and ours with 64 in
 * flight (what the multi interface adds), both against that reference.
 *
 * Best of three runs each, ours and the reference alternating. Output is
 * one JSON object per line on stdout; the exit status reports errors only.
 * SP_BENCH_SECONDS overrides the length of one run (default 0.5 s).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "bench_util.h"

#include "sealpost/sealpost.h"
#include "sealpost/http_client.h"

#define BENCH_REPEATS 3
#define BENCH_DEFAULT_SECONDS 0.5

static void bench_die(const char *what) {
    fprintf(stderr, "bench_http_client: %s\n", what);
    exit(1);
}

static void die(const char *what, sp_error rc) {
    fprintf(stderr, "bench_http_client: %s failed: %s (%s)\n", what, sp_error_name(rc), sp_strerror(rc));
    exit(1);
}

static char payload[300];
static char url[64];

static void on_request(void *arg, sp_http_request *req) {
    (void)arg;
    if (sp_http_respond(req, 200, "application/json", "{\"ok\":true}", 11) != SP_OK) abort();
}

/* ---- ours ---- */

typedef struct {
    sp_http_client *c;
    uint64_t done, failed;
    bool stop;
} pump;

static void submit(pump *p) {
    static const sp_http_client_header h[] = {{"Content-Type", "application/json"}, {"webhook-id", "msg_1"}};
    sp_http_client_request req = {.method = SP_HTTP_CLIENT_POST, .url = url, .headers = h, .n_headers = 2,
                                  .body = payload, .body_len = sizeof payload};
    sp_error rc = sp_http_client_submit(p->c, &req, NULL);
    if (rc != SP_OK) die("sp_http_client_submit", rc);
}

static void on_done(void *ctx, void *user, const sp_http_client_response *r) {
    pump *p = ctx;
    (void)user;
    if (r->result == SP_OK) {
        p->done++;
    } else {
        p->failed++;
    }
    if (!p->stop) submit(p);
}

static double run_ours(unsigned in_flight, double seconds) {
    sp_http_client_config cfg = sp_http_client_config_default();
    cfg.max_in_flight = in_flight;
    cfg.max_connections_per_host = in_flight < 8 ? in_flight : 8;
    pump p = {0};
    sp_error rc = sp_http_client_new(&cfg, &p.c);
    if (rc != SP_OK) die("sp_http_client_new", rc);
    for (unsigned i = 0; i < in_flight; i++) submit(&p);
    /* warm-up: connections and slots */
    while (p.done + p.failed < 4 * in_flight) {
        if ((rc = sp_http_client_run(p.c, 100, on_done, &p, NULL)) != SP_OK) die("sp_http_client_run", rc);
    }
    uint64_t start_done = p.done;
    double start = bench_now(), t = start;
    while (t - start < seconds) {
        if ((rc = sp_http_client_run(p.c, 100, on_done, &p, NULL)) != SP_OK) die("sp_http_client_run", rc);
        t = bench_now();
    }
    double rate = (double)(p.done - start_done) / (t - start);
    p.stop = true;
    while (sp_http_client_in_flight(p.c) > 0) {
        if ((rc = sp_http_client_run(p.c, 100, on_done, &p, NULL)) != SP_OK) die("sp_http_client_run", rc);
    }
    if (p.failed != 0) bench_die("requests failed");
    sp_http_client_free(p.c);
    return rate;
}

/* ---- the reference: a fresh easy handle per request ---- */

static size_t discard(char *d, size_t s, size_t n, void *u) {
    (void)d;
    (void)u;
    return s * n;
}

static bool fresh_handle_post(void *arg) {
    (void)arg;
    CURL *h = curl_easy_init();
    if (h == NULL) return false;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "webhook-id: msg_1");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)sizeof payload);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    bool ok = curl_easy_perform(h) == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
              status == 200;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return ok;
}

int main(void) {
    double seconds = bench_seconds(BENCH_DEFAULT_SECONDS);
    sp_error rc = sp_init();
    if (rc != SP_OK) die("sp_init", rc);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) bench_die("curl_global_init failed");
    memset(payload, 'c', sizeof payload);
    sp_http_config c = {
        .bind_address = "127.0.0.1",
        .allow_plain_http = true,
        .threads = 2,
        .max_body = 4096,
        .max_header_bytes = 8192,
        .max_connections = 4096,
        .max_connections_per_ip = 4096,
        .idle_timeout_s = 30,
    };
    sp_http_handlers h = {NULL, on_request, NULL};
    sp_http_server *server = NULL;
    if ((rc = sp_http_server_start(&c, &h, &server)) != SP_OK) die("sp_http_server_start", rc);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/send", sp_http_server_port(server));

    double seq = 0, multi = 0, ref = 0;
    for (int i = 0; i < BENCH_REPEATS; i++) {
        double r = run_ours(1, seconds);
        if (r > seq) seq = r;
        double rate = 0;
        if (!bench_run_for(fresh_handle_post, NULL, seconds, &rate, NULL)) bench_die("reference request failed");
        if (rate > ref) ref = rate;
        r = run_ours(64, seconds);
        if (r > multi) multi = r;
    }
    bench_emit("http_client_post_sequential", "requests/s", seq, ref);
    bench_emit("http_client_post_64_in_flight", "requests/s", multi, ref);
    sp_http_server_stop(server, 1000);
    return 0;
}
