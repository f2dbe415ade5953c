/*
 * Small helpers every part of the relay uses: freeing buffers that held
 * plaintext, the clock, and the one way errors are logged (a code's name,
 * never data).
 */
#include <stdlib.h>
#include <time.h>

#include "relay.h"

void relay_wiped_free(void *p, size_t len) {
    if (!p) return;
    sp_wipe(p, len);
    free(p);
}

int64_t relay_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void relay_log_error(const char *event, sp_error rc) {
    sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc))};
    sp_log(SP_LOG_ERROR, event, f, 1);
}

typedef struct call_result {
    bool done;
    unsigned status;
    sp_error result;
    int64_t retry_after_ms;
} call_result;

static void call_done(void *ctx, void *user, const sp_http_client_response *response) {
    (void)ctx;
    call_result *r = user;
    r->done = true;
    r->status = response->status;
    r->result = response->result;
    r->retry_after_ms = response->retry_after_ms;
}

sp_error relay_http_call(const relay_config *cfg, const char *url, const sp_http_client_header *headers,
                         size_t n_headers, const void *body, size_t body_len, unsigned timeout_s, unsigned *status,
                         int64_t *retry_after_ms) {
    *status = 0;
    if (retry_after_ms) *retry_after_ms = -1;
    sp_http_client_config cc = sp_http_client_config_default();
    cc.max_in_flight = 1;
    cc.max_connections_per_host = 1;
    cc.timeout_ms = timeout_s * 1000u;
    cc.connect_timeout_ms = cc.timeout_ms < 5000u ? cc.timeout_ms : 5000u;
    cc.max_response_body = 4096;
    cc.http_version = SP_HTTP_CLIENT_HTTP1;
    if (cfg->ca_file[0]) {
        cc.ca_file = cfg->ca_file;
        cc.allow_self_signed = true;
    }
    sp_http_client *client = NULL;
    sp_error rc = sp_http_client_new(&cc, &client);
    if (rc != SP_OK) return rc;
    sp_http_client_request req = {
        .method = body ? SP_HTTP_CLIENT_POST : SP_HTTP_CLIENT_GET,
        .url = url,
        .headers = headers,
        .n_headers = n_headers,
        .body = body,
        .body_len = body_len,
    };
    call_result res = {false, 0, SP_ERR_NETWORK, -1};
    rc = sp_http_client_submit(client, &req, &res);
    while (rc == SP_OK && !res.done) rc = sp_http_client_run(client, 200, call_done, NULL, NULL);
    sp_http_client_free(client);
    if (rc != SP_OK) return rc;
    *status = res.status;
    if (retry_after_ms) *retry_after_ms = res.retry_after_ms;
    return res.result;
}

void relay_json_free(void *p) {
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    if (f) f(p);
    else free(p);
}
