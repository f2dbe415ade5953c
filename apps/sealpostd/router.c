/*
 * The front door of every request. on_headers runs before any body is read
 * and settles, in this order: the route (404, 405 with Allow), the peer's
 * allow-list (403: the admin list, or the credential's tenant's list as soon
 * as the client key names the tenant), the credential (401, one identical
 * body whatever the cause), the rate limit (429 + Retry-After), the media
 * type (415) and an announced Content-Length over max_body (413). Only
 * requests that pass all of that have their body uploaded, and on_request
 * hands them to admin.c or ingest.c with the spd_auth established here.
 *
 * Credentials are looked up by the keyed hash of the client access key (an
 * indexed select on this thread's store connection; no cache, so a
 * revocation by any process applies to the next request). Every secret
 * under that key is compared in constant time, all of them, valid or not,
 * so timing does not tell how many there are or which one matched. Tenant
 * settings (allow-list, rate, disabled) are cached per process, dropped when
 * tenants_generation moves (any change made here) and after CACHE_TTL_S
 * seconds (changes made by another process sharing the database).
 *
 * The callback routes (/callbacks/v1/…, callbacks.c) take no credential:
 * on_headers checks only their allow-list and size and keeps no state, and
 * on_request finds the route again from the path; the wire signature is
 * their authentication.
 *
 * Every authentication failure writes one audit line "auth.failure" with
 * the API, the peer, the reason and the credential id when known (never
 * the secret), and counts sealpost_auth_failures_total{api}; the reason is
 * never in the response.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "daemon.h"

#define CACHE_SLOTS 256
#define CACHE_TTL_S 5.0
#define MAX_CLIENT_KEY 256
#define MAX_SECRET 128

static const char unauthorized_body[] = "{\"error\":{\"code\":\"unauthorized\",\"message\":\"authentication failed\"}}";

/* ---- routes ---- */

typedef struct route_def {
    spd_route_id id;
    const char *pattern; /* "*" is a parameter segment */
    const char *label;
    const char *allow;
} route_def;

static const route_def routes[] = {
    {SPD_ROUTE_HEALTHZ, "/healthz", "/healthz", "GET"},
    {SPD_ROUTE_METRICS, "/metrics", "/metrics", "GET"},
    {SPD_ROUTE_TENANTS, "/admin/v1/tenants", "/admin/v1/tenants", "GET, POST"},
    {SPD_ROUTE_TENANT, "/admin/v1/tenants/*", "/admin/v1/tenants/{id}", "GET, PATCH, DELETE"},
    {SPD_ROUTE_CREDENTIALS, "/admin/v1/tenants/*/credentials", "/admin/v1/tenants/{id}/credentials", "GET, POST"},
    {SPD_ROUTE_CREDENTIAL, "/admin/v1/tenants/*/credentials/*", "/admin/v1/tenants/{id}/credentials/{cid}",
     "DELETE"},
    {SPD_ROUTE_PROFILES, "/v1/profiles", "/v1/profiles", "POST"},
    {SPD_ROUTE_PROFILE, "/v1/profiles/*", "/v1/profiles/{id}", "GET, DELETE"},
    {SPD_ROUTE_EVENTS, "/v1/events", "/v1/events", "POST"},
    {SPD_ROUTE_CHANNELS, "/v1/channels", "/v1/channels", "GET"},
    {SPD_ROUTE_CHANNEL, "/v1/channels/*", "/v1/channels/{id}", "GET, PUT, DELETE"},
    {SPD_ROUTE_CAMPAIGNS, "/v1/campaigns", "/v1/campaigns", "GET, POST"},
    {SPD_ROUTE_CAMPAIGN, "/v1/campaigns/*", "/v1/campaigns/{id}", "GET, DELETE"},
    {SPD_ROUTE_CAMPAIGN_ACTION, "/v1/campaigns/*/test", "/v1/campaigns/{id}/test", "POST"},
    {SPD_ROUTE_CAMPAIGN_ACTION, "/v1/campaigns/*/cancel", "/v1/campaigns/{id}/cancel", "POST"},
    {SPD_ROUTE_CAMPAIGN_ACTION, "/v1/campaigns/*/replay", "/v1/campaigns/{id}/replay", "POST"},
    {SPD_ROUTE_CAMPAIGN_STATS, "/v1/campaigns/*/stats", "/v1/campaigns/{id}/stats", "GET"},
    {SPD_ROUTE_MESSAGE, "/v1/messages/*", "/v1/messages/{message_id}", "GET"},
    {SPD_ROUTE_CALLBACK, "/callbacks/v1/*/*/dlr", "/callbacks/v1/{tenant}/{channel}/dlr", "POST"},
    {SPD_ROUTE_CALLBACK, "/callbacks/v1/*/*/inbound", "/callbacks/v1/{tenant}/{channel}/inbound", "POST"},
};

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes one segment into out; the result must be 1..128
 * printable ASCII characters. */
static bool decode_segment(const char *seg, size_t len, char out[SP_STORE_MAX_ID + 1]) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)seg[i];
        if (c == '%') {
            if (i + 2 >= len) return false;
            int hi = hex_value(seg[i + 1]), lo = hex_value(seg[i + 2]);
            if (hi < 0 || lo < 0) return false;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c > 0x7e || n == SP_STORE_MAX_ID) return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return n > 0;
}

/* Matches path against a pattern, capturing up to two parameters. */
static bool match_pattern(const char *pattern, const char *path, spd_route_match *out) {
    const char *p = pattern, *s = path;
    int captured = 0;
    while (*p && *s) {
        if (*p == '*') {
            size_t len = strcspn(s, "/");
            char *dst = captured == 0 ? out->id : out->sub;
            if (len == 0 || captured == 2 || !decode_segment(s, len, dst)) return false;
            captured++;
            p++;
            s += len;
            continue;
        }
        if (*p != *s) return false;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

void spd_route_match_path(const char *method, const char *path, spd_route_match *out) {
    memset(out, 0, sizeof *out);
    if (!method || !path) return;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        spd_route_match m;
        memset(&m, 0, sizeof m);
        if (!match_pattern(routes[i].pattern, path, &m)) continue;
        *out = m;
        out->route = routes[i].id;
        out->label = routes[i].label;
        out->allow = routes[i].allow;
        /* the Allow list is also the method check: "GET, PATCH, DELETE" */
        const char *a = routes[i].allow;
        size_t mlen = strlen(method);
        while (*a) {
            size_t len = strcspn(a, ",");
            if (len == mlen && strncmp(a, method, len) == 0) out->method_ok = true;
            a += len;
            while (*a == ',' || *a == ' ') a++;
        }
        return;
    }
}

/* ---- replies ---- */

static void respond(sp_http_request *req, unsigned status, const char *type, const void *body, size_t len) {
    sp_error rc = sp_http_respond(req, status, type, body, len);
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_I("status", status), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "http.respond_failed", f, 2);
    }
}

void spd_reply_json(sp_http_request *req, unsigned status, json_t *body) {
    if (!body) {
        spd_reply_error(req, 500, "internal", "internal error");
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        spd_reply_error(req, 500, "internal", "internal error");
        return;
    }
    /* jansson allocated it through the library's (wiping) allocator. */
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    respond(req, status, "application/json", text, strlen(text));
    if (f)
        f(text);
    else
        free(text);
}

void spd_reply_error(sp_http_request *req, unsigned status, const char *code, const char *message) {
    if (status == 401) {
        respond(req, 401, "application/json", unauthorized_body, sizeof unauthorized_body - 1);
        return;
    }
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", code ? code : "internal", "message",
                             message ? message : "");
    if (!body) {
        static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        respond(req, 500, "application/json", fallback, sizeof fallback - 1);
        return;
    }
    spd_reply_json(req, status, body);
}

void spd_reply_status(sp_http_request *req, unsigned status) {
    static const struct {
        unsigned status;
        const char *code;
        const char *message;
    } table[] = {
        {400, "bad_request", "bad request"},
        {401, "unauthorized", "authentication failed"},
        {403, "forbidden", "address not allowed"},
        {404, "not_found", "not found"},
        {405, "method_not_allowed", "method not allowed"},
        {409, "conflict", "conflict"},
        {413, "too_large", "request body too large"},
        {415, "unsupported_media_type", "Content-Type must be application/json"},
        {429, "rate_limited", "too many requests"},
        {503, "unavailable", "service unavailable"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i].status == status) {
            spd_reply_error(req, status, table[i].code, table[i].message);
            return;
        }
    }
    spd_reply_error(req, status >= 400 && status < 600 ? status : 500, "internal", "internal error");
}

void spd_reply_retry(sp_http_request *req, unsigned status, const char *code, const char *message,
                     unsigned retry_after_s) {
    char value[16];
    snprintf(value, sizeof value, "%u", retry_after_s < 1 ? 1u : retry_after_s);
    if (sp_http_add_header(req, "Retry-After", value) != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("header", "Retry-After")};
        sp_log(SP_LOG_WARN, "http.header_failed", f, 1);
    }
    spd_reply_error(req, status, code, message);
}

void spd_reply_empty(sp_http_request *req) { respond(req, 204, "application/json", "", 0); }

void spd_reply_sp_error(sp_http_request *req, sp_error err) {
    switch (err) {
    case SP_ERR_KMS_UNAVAILABLE:
    case SP_ERR_KMS_ACCESS_DENIED:
    case SP_ERR_KMS_KEY_DISABLED:
    case SP_ERR_KMS_PROTOCOL:
        spd_reply_retry(req, 503, "kms_unavailable", "the tenant's KMS is unavailable", 30);
        return;
    case SP_ERR_UNAVAILABLE:
    case SP_ERR_STORE:
    case SP_ERR_CONFLICT:
        spd_reply_retry(req, 503, "unavailable", "service unavailable", 5);
        return;
    case SP_ERR_NOT_FOUND:
        spd_reply_error(req, 404, "not_found", "not found");
        return;
    case SP_ERR_EXISTS:             /* an id taken, or a resource still in use */
    case SP_ERR_ILLEGAL_TRANSITION: /* a state move the life cycle forbids */
        spd_reply_error(req, 409, "conflict", "conflicts with the current state");
        return;
    default:
        break;
    }
    sp_log_field f[] = {SP_LOG_S("error", sp_error_name(err))};
    sp_log(SP_LOG_ERROR, "http.internal_error", f, 1);
    spd_reply_error(req, 500, "internal", "internal error");
}

bool spd_page_query(sp_http_request *req, bool (*id_ok)(const char *), const char **after, size_t *limit) {
    const char *a = sp_http_query(req, "after");
    const char *limit_text = sp_http_query(req, "limit");
    *limit = 100;
    if (limit_text) {
        char *end = NULL;
        unsigned long v = strtoul(limit_text, &end, 10);
        if (!end || *end || v < 1 || v > SP_STORE_MAX_LIST) {
            spd_reply_error(req, 400, "bad_request", "limit: must be 1..1000");
            return false;
        }
        *limit = v;
    }
    if (a && a[0] && !id_ok(a)) {
        spd_reply_error(req, 400, "bad_request", "after: not an id");
        return false;
    }
    *after = a ? a : "";
    return true;
}

sp_error spd_page_add(spd_page *page, json_t *item, const char *id) {
    if (!item || json_array_append_new(page->items, item) != 0) return SP_ERR_NO_MEMORY;
    snprintf(page->last, sizeof page->last, "%s", id);
    page->count++;
    return SP_OK;
}

void spd_reply_page(sp_http_request *req, const char *key, spd_page *page, size_t limit) {
    json_t *reply = json_object();
    if (!reply) json_decref(page->items);
    if (!reply || json_object_set_new(reply, key, page->items) != 0 ||
        json_object_set_new(reply, "next", page->count == limit ? json_string(page->last) : json_null()) != 0) {
        json_decref(reply);
        spd_reply_error(req, 500, "internal", "internal error");
        return;
    }
    spd_reply_json(req, 200, reply);
}

/* ---- keyed hashes ---- */

sp_error spd_credential_hash(const spd_app *app, spd_hash_kind kind, const char *value, size_t len,
                             uint8_t out[SP_STORE_HASH_BYTES]) {
    if (!app || !app->pepper || !value || !out) return SP_ERR_INVALID_ARGUMENT;
    const char *label = kind == SPD_HASH_CLIENT_KEY ? "sealpostd client access key" : "sealpostd api secret";
    return sp_key_hmac_sha256(app->pepper, label, (const uint8_t *)value, len, out);
}

sp_error spd_credential_generate(const char *prefix, char out[48]) {
    if (!prefix || strlen(prefix) != 4) return SP_ERR_INVALID_ARGUMENT;
    uint8_t raw[32];
    sp_error rc = sp_random(raw, sizeof raw);
    if (rc != SP_OK) return rc;
    size_t n = 0;
    memcpy(out, prefix, 4);
    rc = sp_base64url_encode(raw, sizeof raw, out + 4, 48 - 4, &n); /* 43 chars and the NUL */
    sp_wipe(raw, sizeof raw);
    if (rc == SP_OK && n != 43) rc = SP_ERR_CRYPTO_BACKEND;
    if (rc != SP_OK) sp_wipe(out, 48);
    return rc;
}

/* ---- tenant settings cache ---- */

typedef struct tenant_view {
    bool disabled;
    sp_allow_list allow;
    double rate_per_second;
    double rate_burst;
} tenant_view;

typedef struct cached_tenant {
    bool used;
    char id[SP_STORE_MAX_TENANT + 1];
    uint64_t generation;
    double loaded_at;
    tenant_view view;
} cached_tenant;

struct spd_router_state {
    pthread_mutex_t lock;
    size_t next;
    cached_tenant slots[CACHE_SLOTS];
};

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

sp_error spd_router_init(spd_app *app) {
    if (!app) return SP_ERR_INVALID_ARGUMENT;
    struct spd_router_state *st = calloc(1, sizeof *st);
    if (!st) return SP_ERR_NO_MEMORY;
    pthread_mutex_init(&st->lock, NULL);
    app->router = st;
    return SP_OK;
}

void spd_router_free(spd_app *app) {
    if (!app || !app->router) return;
    pthread_mutex_destroy(&app->router->lock);
    free(app->router);
    app->router = NULL;
}

/* SP_ERR_NOT_FOUND for an unknown tenant. */
static sp_error tenant_lookup(spd_app *app, const char *tenant, tenant_view *out) {
    struct spd_router_state *st = app->router;
    uint64_t gen = atomic_load(&app->tenants_generation);
    double now = now_monotonic();
    pthread_mutex_lock(&st->lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        cached_tenant *c = &st->slots[i];
        if (c->used && c->generation == gen && now - c->loaded_at < CACHE_TTL_S && strcmp(c->id, tenant) == 0) {
            *out = c->view;
            pthread_mutex_unlock(&st->lock);
            return SP_OK;
        }
    }
    pthread_mutex_unlock(&st->lock);

    sp_store *store = NULL;
    sp_error rc = spd_store(app, &store);
    if (rc != SP_OK) return rc;
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    rc = sp_store_tenant_get(store, tenant, &row);
    if (rc != SP_OK) return rc;
    spd_settings *s = malloc(sizeof *s);
    if (!s) {
        sp_store_tenant_clear(&row);
        return SP_ERR_NO_MEMORY;
    }
    rc = spd_settings_parse(row.settings, row.settings_len, s);
    bool disabled = row.disabled;
    sp_store_tenant_clear(&row);
    if (rc != SP_OK) {
        free(s);
        return rc;
    }
    out->disabled = disabled;
    out->allow = s->allow;
    out->rate_per_second = s->rate_per_second;
    out->rate_burst = s->rate_burst;
    sp_wipe(s->kms, sizeof s->kms);
    free(s);

    pthread_mutex_lock(&st->lock);
    if (atomic_load(&app->tenants_generation) == gen) {
        cached_tenant *slot = NULL;
        for (size_t i = 0; i < CACHE_SLOTS && !slot; i++) {
            if (st->slots[i].used && strcmp(st->slots[i].id, tenant) == 0) slot = &st->slots[i];
        }
        if (!slot) {
            slot = &st->slots[st->next];
            st->next = (st->next + 1) % CACHE_SLOTS;
        }
        slot->used = true;
        memcpy(slot->id, tenant, strlen(tenant) + 1);
        slot->generation = gen;
        slot->loaded_at = now;
        slot->view = *out;
    }
    pthread_mutex_unlock(&st->lock);
    return SP_OK;
}

/* ---- authentication ---- */

typedef struct request_state {
    spd_auth auth; /* first: handlers get a pointer to it */
    spd_route_match match;
} request_state;

typedef struct auth_failure {
    const char *api;
    const char *reason;
    const char *credential_id; /* "" when unknown */
    const char *tenant;
} auth_failure;

static void audit_failure(spd_app *app, sp_http_request *req, const auth_failure *f) {
    sp_metric_add(strcmp(f->api, "admin") == 0 ? app->auth_failures_admin : app->auth_failures_tenant, 1);
    sp_audit_field fields[5];
    size_t n = 0;
    fields[n++] = (sp_audit_field){"api", f->api};
    fields[n++] = (sp_audit_field){"peer", sp_http_peer(req)};
    fields[n++] = (sp_audit_field){"reason", f->reason};
    if (f->credential_id && f->credential_id[0]) fields[n++] = (sp_audit_field){"credential", f->credential_id};
    if (f->tenant && f->tenant[0]) fields[n++] = (sp_audit_field){"tenant", f->tenant};
    sp_error rc = app->audit ? sp_audit_record(app->audit, "auth.failure", fields, n) : SP_OK;
    sp_log_field lf[] = {SP_LOG_S("api", f->api), SP_LOG_S("peer", sp_http_peer(req)), SP_LOG_S("reason", f->reason),
                         SP_LOG_S("credential", f->credential_id ? f->credential_id : "")};
    sp_log(SP_LOG_INFO, "auth.failure", lf, 4);
    if (rc != SP_OK) {
        sp_log_field ef[] = {SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_ERROR, "audit.write_failed", ef, 1);
    }
}

static bool header_value_ok(const char *v, size_t max) {
    if (!v) return false;
    size_t len = strnlen(v, max + 1);
    if (len == 0 || len > max) return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) return false;
    }
    return true;
}

/* SP_HTTP_CONTINUE with state->auth filled, or ANSWERED. */
static sp_http_verdict authenticate(spd_app *app, sp_http_request *req, bool admin_api, request_state *state) {
    auth_failure fail = {admin_api ? "admin" : "tenant", "", "", ""};
    size_t key_count = 0, secret_count = 0;
    const char *key = sp_http_header(req, "X-Client-Access-Key", &key_count);
    const char *secret = sp_http_header(req, "X-Api-Secret", &secret_count);
    if (!key || !secret) {
        fail.reason = "missing_credentials";
        goto unauthorized;
    }
    if (key_count != 1 || secret_count != 1 || !header_value_ok(key, MAX_CLIENT_KEY) ||
        !header_value_ok(secret, MAX_SECRET)) {
        fail.reason = "malformed_credentials";
        goto unauthorized;
    }

    uint8_t key_hash[SP_STORE_HASH_BYTES], secret_hash[SP_STORE_HASH_BYTES];
    sp_error rc = spd_credential_hash(app, SPD_HASH_CLIENT_KEY, key, strlen(key), key_hash);
    if (rc == SP_OK) rc = spd_credential_hash(app, SPD_HASH_SECRET, secret, strlen(secret), secret_hash);
    if (rc != SP_OK) {
        spd_reply_sp_error(req, rc);
        return SP_HTTP_ANSWERED;
    }
    sp_store *store = NULL;
    sp_store_credential creds[SP_STORE_MAX_CREDENTIALS_PER_KEY];
    size_t count = 0;
    rc = spd_store(app, &store);
    if (rc == SP_OK) rc = sp_store_credential_find(store, key_hash, creds, SP_STORE_MAX_CREDENTIALS_PER_KEY, &count);
    if (rc != SP_OK) {
        spd_reply_retry(req, 503, "unavailable", "service unavailable", 5);
        return SP_HTTP_ANSWERED;
    }
    if (count == 0) {
        fail.reason = "unknown_client_key";
        goto unauthorized;
    }
    const char *tenant = creds[0].tenant;
    fail.credential_id = creds[0].id;
    fail.tenant = tenant;
    if (admin_api != (tenant[0] == '\0')) {
        fail.reason = admin_api ? "tenant_credential_on_admin_api" : "admin_credential_on_tenant_api";
        goto unauthorized;
    }

    tenant_view view;
    memset(&view, 0, sizeof view);
    if (admin_api) {
        view.rate_per_second = app->config.rate_per_second;
        view.rate_burst = app->config.rate_burst;
    } else {
        rc = tenant_lookup(app, tenant, &view);
        if (rc == SP_ERR_NOT_FOUND) {
            fail.reason = "unknown_tenant";
            goto unauthorized;
        }
        if (rc != SP_OK) {
            spd_reply_sp_error(req, rc == SP_ERR_NO_MEMORY ? rc : SP_ERR_UNAVAILABLE);
            return SP_HTTP_ANSWERED;
        }
        uint8_t peer[16];
        int family = 0;
        sp_http_peer_bytes(req, peer, &family);
        if (!sp_allow_list_contains(&view.allow, peer, family)) {
            fail.reason = "address_not_allowed";
            audit_failure(app, req, &fail);
            spd_reply_error(req, 403, "forbidden", "address not allowed");
            return SP_HTTP_ANSWERED;
        }
    }

    /* Every secret, valid or not, without an early exit. */
    int64_t now = (int64_t)time(NULL);
    size_t matched = count, matched_any = count;
    for (size_t i = 0; i < count; i++) {
        bool equal = sp_ct_equal(secret_hash, creds[i].secret_hash, SP_STORE_HASH_BYTES);
        bool valid = creds[i].revoked == 0 && (creds[i].expires == 0 || creds[i].expires > now) &&
                     strcmp(creds[i].tenant, tenant) == 0;
        if (equal) matched_any = i;
        if (equal && valid) matched = i;
    }
    sp_wipe(secret_hash, sizeof secret_hash);
    if (matched == count) {
        if (matched_any == count) {
            fail.reason = "wrong_secret";
        } else {
            fail.credential_id = creds[matched_any].id;
            fail.reason = creds[matched_any].revoked ? "revoked" : "expired";
        }
        goto unauthorized;
    }
    if (!admin_api && view.disabled) {
        fail.credential_id = creds[matched].id;
        fail.reason = "tenant_disabled";
        goto unauthorized;
    }

    memcpy(state->auth.tenant, tenant, strlen(tenant) + 1);
    memcpy(state->auth.credential_id, creds[matched].id, strlen(creds[matched].id) + 1);
    state->auth.admin = admin_api;

    unsigned wait = app->ratelimit ? spd_ratelimit_take(app->ratelimit, state->auth.credential_id,
                                                        view.rate_per_second, view.rate_burst)
                                   : 0;
    if (wait > 0) {
        sp_metric_add(app->rate_limited, 1);
        spd_reply_retry(req, 429, "rate_limited", "too many requests", wait);
        return SP_HTTP_ANSWERED;
    }
    return SP_HTTP_CONTINUE;

unauthorized:
    audit_failure(app, req, &fail);
    spd_reply_status(req, 401);
    return SP_HTTP_ANSWERED;
}

/* "application/json", optionally with parameters ("; charset=utf-8"). */
static bool is_json_type(const char *ct) {
    if (!ct) return false;
    while (*ct == ' ') ct++;
    static const char json_type[] = "application/json";
    size_t n = sizeof json_type - 1;
    if (strncasecmp(ct, json_type, n) != 0) return false;
    const char *rest = ct + n;
    while (*rest == ' ') rest++;
    return *rest == '\0' || *rest == ';';
}

static bool peer_is_admin(spd_app *app, sp_http_request *req) {
    uint8_t peer[16];
    int family = 0;
    sp_http_peer_bytes(req, peer, &family);
    return sp_allow_list_contains(&app->config.admin_allow, peer, family);
}

/* ---- the unauthenticated routes ---- */

static void healthz(spd_app *app, sp_http_request *req) {
    sp_store *store = NULL;
    bool down = atomic_load(&app->shutting_down);
    sp_error rc = down ? SP_ERR_UNAVAILABLE : spd_store(app, &store);
    if (rc == SP_OK) rc = sp_store_ping(store);
    json_t *body;
    if (rc == SP_OK) {
        body = json_pack("{s:s,s:s,s:i}", "status", "ok", "store", sp_store_backend_name(store), "schema",
                         sp_store_schema_version(store));
    } else {
        body = json_pack("{s:s,s:s}", "status", "unavailable", "reason", down ? "shutting_down" : "store");
    }
    spd_reply_json(req, rc == SP_OK ? 200 : 503, body);
}

/* Counters only go up by what happened since the last scrape; scrapes may
 * run on two threads at once, hence the lock. */
static void refresh_kms_metrics(spd_app *app) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static sp_kms_stats seen;
    sp_kms_stats now;
    uint64_t open = 0;
    spd_kms_totals(&now, &open);
    pthread_mutex_lock(&lock);
    if (now.calls > seen.calls) sp_metric_add(app->kms_calls, now.calls - seen.calls);
    if (now.failures > seen.failures) sp_metric_add(app->kms_failures, now.failures - seen.failures);
    if (now.unavailable > seen.unavailable) sp_metric_add(app->kms_unavailable, now.unavailable - seen.unavailable);
    if (now.denied > seen.denied) sp_metric_add(app->kms_denied, now.denied - seen.denied);
    seen = now;
    pthread_mutex_unlock(&lock);
    sp_metric_set(app->kms_breakers_open, (double)open);
}

static void metrics(spd_app *app, sp_http_request *req) {
    refresh_kms_metrics(app);
    char *text = NULL;
    size_t len = 0;
    sp_error rc = sp_metrics_render(app->metrics, &text, &len);
    if (rc != SP_OK) {
        spd_reply_sp_error(req, rc);
        return;
    }
    respond(req, 200, "text/plain; version=0.0.4", text, len);
    sp_metrics_text_free(text);
}

/* ---- the handlers ---- */

static void free_state(void *p) {
    if (!p) return;
    sp_wipe(p, sizeof(request_state));
    free(p);
}

sp_http_verdict spd_on_headers(void *arg, sp_http_request *req) {
    spd_app *app = arg;
    const char *method = sp_http_method(req);
    spd_route_match m;
    spd_route_match_path(method, sp_http_path(req), &m);
    if (m.route == SPD_ROUTE_NONE) {
        spd_reply_error(req, 404, "not_found", "no such route");
        return SP_HTTP_ANSWERED;
    }
    sp_http_set_route(req, m.label);
    if (!m.method_ok) {
        if (sp_http_add_header(req, "Allow", m.allow) != SP_OK) {
            spd_reply_error(req, 500, "internal", "internal error");
            return SP_HTTP_ANSWERED;
        }
        spd_reply_error(req, 405, "method_not_allowed", "method not allowed");
        return SP_HTTP_ANSWERED;
    }
    if (m.route == SPD_ROUTE_HEALTHZ) {
        healthz(app, req);
        return SP_HTTP_ANSWERED;
    }
    /* no credential and no per-request state: the signature authenticates,
     * and on_request finds the route again from the path */
    if (m.route == SPD_ROUTE_CALLBACK) return spd_callback_headers(app, req);
    bool admin_api = m.route == SPD_ROUTE_METRICS || m.route == SPD_ROUTE_TENANTS || m.route == SPD_ROUTE_TENANT ||
                     m.route == SPD_ROUTE_CREDENTIALS || m.route == SPD_ROUTE_CREDENTIAL;
    if (admin_api && !peer_is_admin(app, req)) {
        if (m.route != SPD_ROUTE_METRICS) {
            auth_failure f = {"admin", "address_not_allowed", "", ""};
            audit_failure(app, req, &f);
        }
        spd_reply_error(req, 403, "forbidden", "address not allowed");
        return SP_HTTP_ANSWERED;
    }
    if (m.route == SPD_ROUTE_METRICS) {
        metrics(app, req);
        return SP_HTTP_ANSWERED;
    }
    if (atomic_load(&app->shutting_down)) {
        spd_reply_retry(req, 503, "unavailable", "shutting down", 5);
        return SP_HTTP_ANSWERED;
    }

    request_state *state = calloc(1, sizeof *state);
    if (!state) {
        spd_reply_error(req, 500, "internal", "internal error");
        return SP_HTTP_ANSWERED;
    }
    state->match = m;
    if (authenticate(app, req, admin_api, state) != SP_HTTP_CONTINUE) {
        free_state(state);
        return SP_HTTP_ANSWERED;
    }
    sp_http_set_user(req, state, free_state);

    /* An empty POST (a credential with every option left out) needs no
     * media type; anything with a body does. */
    const char *cl = sp_http_header(req, "Content-Length", NULL);
    bool body_announced = (cl && strcmp(cl, "0") != 0) || sp_http_header(req, "Transfer-Encoding", NULL) != NULL;
    bool has_body =
        (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0 || strcmp(method, "PUT") == 0) && body_announced;
    size_t ct_count = 0;
    const char *ct = sp_http_header(req, "Content-Type", &ct_count);
    if (has_body && (ct_count != 1 || !is_json_type(ct))) {
        spd_reply_status(req, 415);
        return SP_HTTP_ANSWERED;
    }
    if (cl) {
        size_t digits = strspn(cl, "0123456789");
        bool too_long = digits > 12;
        unsigned long long announced = too_long ? 0 : strtoull(cl, NULL, 10);
        if (digits > 0 && cl[digits] == '\0' && (too_long || announced > app->config.max_body)) {
            spd_reply_error(req, 413, "too_large", "request body too large");
            return SP_HTTP_ANSWERED;
        }
    }
    return SP_HTTP_CONTINUE;
}

void spd_on_request(void *arg, sp_http_request *req) {
    spd_app *app = arg;
    request_state *state = sp_http_user(req);
    if (!state) {
        spd_route_match cb;
        spd_route_match_path(sp_http_method(req), sp_http_path(req), &cb);
        if (cb.route == SPD_ROUTE_CALLBACK && cb.method_ok)
            spd_callback_request(app, req, &cb);
        else
            spd_reply_error(req, 500, "internal", "internal error");
        return;
    }
    const spd_auth *auth = &state->auth;
    const spd_route_match *m = &state->match;
    switch (m->route) {
    case SPD_ROUTE_TENANTS:
    case SPD_ROUTE_TENANT:
    case SPD_ROUTE_CREDENTIALS:
    case SPD_ROUTE_CREDENTIAL:
        spd_admin_route(app, req, auth, sp_http_path(req) + strlen("/admin/v1"));
        return;
    case SPD_ROUTE_PROFILES:
        spd_profiles_post(app, req, auth);
        return;
    case SPD_ROUTE_PROFILE:
        if (strcmp(sp_http_method(req), "GET") == 0)
            spd_profile_get(app, req, auth, m->id);
        else
            spd_profile_delete(app, req, auth, m->id);
        return;
    case SPD_ROUTE_EVENTS:
        spd_events_post(app, req, auth);
        return;
    case SPD_ROUTE_CHANNELS:
        spd_channels_route(app, req, auth, NULL);
        return;
    case SPD_ROUTE_CHANNEL:
        spd_channels_route(app, req, auth, m->id);
        return;
    case SPD_ROUTE_CAMPAIGNS:
        spd_campaigns_route(app, req, auth, NULL, NULL);
        return;
    case SPD_ROUTE_CAMPAIGN:
        spd_campaigns_route(app, req, auth, m->id, NULL);
        return;
    case SPD_ROUTE_CAMPAIGN_ACTION:
        /* the routes name the action literally: it is the last segment */
        spd_campaigns_route(app, req, auth, m->id, strrchr(sp_http_path(req), '/') + 1);
        return;
    case SPD_ROUTE_CAMPAIGN_STATS:
        spd_campaign_stats(app, req, auth, m->id);
        return;
    case SPD_ROUTE_MESSAGE:
        spd_message_get(app, req, auth, m->id);
        return;
    case SPD_ROUTE_NONE:
    case SPD_ROUTE_HEALTHZ:
    case SPD_ROUTE_METRICS:
    case SPD_ROUTE_CALLBACK:
        break;
    }
    spd_reply_error(req, 404, "not_found", "no such route");
}
