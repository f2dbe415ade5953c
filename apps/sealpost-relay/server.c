/*
 * The relay's two listeners.
 *
 * The HTTPS API, for the platform. on_headers decides before any body is
 * read, in this order: the IP allow-list (403 for anyone else, on every
 * route), then for POST /v1/messages the credentials (one 401 body for
 * every failure: missing header, wrong key or secret, expired secret,
 * wrong merchant). on_request then opens the sealed body (PROTOCOL.md §6:
 * a webhook-id seen within [state] keep is answered 200 before anything is
 * decrypted; every authentication failure is the same 401), parses the
 * payload, and hands each record on. The webhook-id is remembered only once
 * every record was handled; a record handed on is remembered on its own,
 * so the platform's retry after a 503 does not send it twice.
 *
 * The DLR listener, plain HTTP on 127.0.0.1, for Kannel: /kannel/dlr
 * (dlr-url) and /kannel/mo (an sms-service get-url). What they report is
 * turned into callbacks and queued.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"

static const char unauthorized[] = "{\"error\":{\"code\":\"unauthorized\",\"message\":\"authentication failed\"}}";
static const char forbidden[] = "{\"error\":{\"code\":\"forbidden\",\"message\":\"address not allowed\"}}";

static void reply(sp_http_request *req, unsigned status, const char *body) {
    if (sp_http_respond(req, status, "application/json", body, strlen(body)) != SP_OK)
        relay_log_error("http.respond_failed", SP_ERR_INVALID_ARGUMENT);
}

static void reply_error(sp_http_request *req, unsigned status, const char *code, const char *message) {
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    reply(req, status, text ? text : "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
    relay_json_free(text);
    if (j) json_decref(j);
}

sp_error relay_metrics_init(relay_app *app) {
    sp_error rc = sp_metrics_new(&app->metrics);
    if (rc != SP_OK) return rc;
    struct {
        sp_metric **m;
        sp_metric_type t;
        const char *name, *help, *labels;
    } defs[] = {
        {&app->m.requests_ok, SP_METRIC_COUNTER, "relay_requests_total", "Sealed requests by result", "result=\"ok\""},
        {&app->m.requests_dup, SP_METRIC_COUNTER, "relay_requests_total", "", "result=\"duplicate\""},
        {&app->m.requests_unauth, SP_METRIC_COUNTER, "relay_requests_total", "", "result=\"unauthorized\""},
        {&app->m.requests_forbidden, SP_METRIC_COUNTER, "relay_requests_total", "", "result=\"forbidden\""},
        {&app->m.requests_bad, SP_METRIC_COUNTER, "relay_requests_total", "", "result=\"bad_request\""},
        {&app->m.requests_unavail, SP_METRIC_COUNTER, "relay_requests_total", "", "result=\"unavailable\""},
        {&app->m.cb_sent, SP_METRIC_COUNTER, "relay_callbacks_total", "Callbacks by fate", "result=\"sent\""},
        {&app->m.cb_retried, SP_METRIC_COUNTER, "relay_callbacks_total", "", "result=\"retried\""},
        {&app->m.cb_dropped, SP_METRIC_COUNTER, "relay_callbacks_total", "", "result=\"dropped\""},
        {&app->m.cb_rejected, SP_METRIC_COUNTER, "relay_callbacks_total", "", "result=\"refused\""},
        {&app->m.queue_depth, SP_METRIC_GAUGE, "relay_callback_queue_depth", "Callbacks waiting", NULL},
        {&app->m.dlr_in, SP_METRIC_COUNTER, "relay_kannel_calls_total", "Calls from Kannel", "kind=\"dlr\""},
        {&app->m.mo_in, SP_METRIC_COUNTER, "relay_kannel_calls_total", "", "kind=\"mo\""},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        rc = sp_metrics_get(app->metrics, defs[i].t, defs[i].name, defs[i].help, defs[i].labels, NULL, 0, defs[i].m);
        if (rc != SP_OK) return rc;
    }
    static const char *kinds[3] = {"", "email", "sms"};
    for (int k = 1; k <= 2; k++)
        for (int o = 1; o <= 5; o++) {
            char labels[96];
            snprintf(labels, sizeof labels, "kind=\"%s\",outcome=\"%s\"", kinds[k], relay_outcome_name((relay_outcome)o));
            rc = sp_metrics_get(app->metrics, SP_METRIC_COUNTER, "relay_handed_total",
                                "Records handed on by kind and outcome", labels, NULL, 0, &app->m.handed[k][o]);
            if (rc != SP_OK) return rc;
        }
    return SP_OK;
}

/* ---- the HTTPS API ---- */

typedef enum route { ROUTE_NONE = 0, ROUTE_MESSAGES = 1 } route;

sp_http_verdict relay_on_headers(void *arg, sp_http_request *req) {
    relay_app *app = arg;
    const char *method = sp_http_method(req), *path = sp_http_path(req);
    uint8_t addr[16];
    int family = 0;
    sp_http_peer_bytes(req, addr, &family);
    if (!sp_allow_list_contains(&app->cfg.allow, addr, family)) {
        sp_http_set_route(req, "forbidden");
        sp_metric_add(app->m.requests_forbidden, 1);
        reply(req, 403, forbidden);
        return SP_HTTP_ANSWERED;
    }
    if (strcmp(path, "/healthz") == 0 && strcmp(method, "GET") == 0) {
        sp_http_set_route(req, "/healthz");
        int64_t depth = 0;
        (void)relay_state_queue_depth(app->state, &depth);
        char body[128];
        snprintf(body, sizeof body, "{\"status\":\"ok\",\"keys_generation\":%llu,\"callback_queue\":%lld}",
                 (unsigned long long)relay_keys_generation(app->keys), (long long)depth);
        reply(req, 200, body);
        return SP_HTTP_ANSWERED;
    }
    if (strcmp(path, "/metrics") == 0 && strcmp(method, "GET") == 0) {
        sp_http_set_route(req, "/metrics");
        int64_t depth = 0;
        if (relay_state_queue_depth(app->state, &depth) == SP_OK) sp_metric_set(app->m.queue_depth, (double)depth);
        char *text = NULL;
        size_t len = 0;
        if (sp_metrics_render(app->metrics, &text, &len) != SP_OK) {
            reply_error(req, 500, "internal", "metrics unavailable");
            return SP_HTTP_ANSWERED;
        }
        if (sp_http_respond(req, 200, "text/plain; version=0.0.4", text, len) != SP_OK)
            relay_log_error("http.respond_failed", SP_ERR_INVALID_ARGUMENT);
        sp_metrics_text_free(text);
        return SP_HTTP_ANSWERED;
    }
    if (strcmp(path, "/v1/messages") != 0) {
        sp_http_set_route(req, "other");
        reply_error(req, 404, "not_found", "no such route");
        return SP_HTTP_ANSWERED;
    }
    sp_http_set_route(req, "/v1/messages");
    if (strcmp(method, "POST") != 0) {
        if (sp_http_add_header(req, "Allow", "POST") != SP_OK) relay_log_error("http.header_failed", SP_ERR_INVALID_ARGUMENT);
        reply_error(req, 405, "method_not_allowed", "use POST");
        return SP_HTTP_ANSWERED;
    }
    size_t counts[4] = {0, 0, 0, 0};
    const char *key = sp_http_header(req, "X-Client-Access-Key", &counts[0]);
    const char *secret = sp_http_header(req, "X-Api-Secret", &counts[1]);
    const char *merchant = sp_http_header(req, "X-Merchant-Id", &counts[2]);
    const char *sub = sp_http_header(req, "X-Sub-Merchant-Id", &counts[3]);
    relay_auth_result ar = RELAY_AUTH_MISSING;
    if (counts[0] <= 1 && counts[1] <= 1 && counts[2] <= 1 && counts[3] <= 1)
        ar = relay_auth_check(&app->cfg, key, secret, merchant, sub, (int64_t)time(NULL));
    if (ar != RELAY_AUTH_OK) {
        sp_log_field f[] = {SP_LOG_S("reason", relay_auth_result_name(ar)), SP_LOG_S("peer", sp_http_peer(req))};
        sp_log(SP_LOG_WARN, "auth.refused", f, 2);
        sp_metric_add(app->m.requests_unauth, 1);
        reply(req, 401, unauthorized);
        return SP_HTTP_ANSWERED;
    }
    return SP_HTTP_CONTINUE;
}

typedef struct dedupe_ctx {
    relay_app *app;
    bool duplicate;
} dedupe_ctx;

static sp_error check_seen(void *arg, const sp_opened *verified) {
    dedupe_ctx *c = arg;
    bool seen = false;
    sp_error rc = relay_state_seen(c->app->state, verified->message_id, (int64_t)time(NULL), c->app->cfg.keep_s, &seen);
    if (rc != SP_OK) return rc;
    if (seen) {
        c->duplicate = true;
        return SP_ERR_EXISTS;
    }
    return SP_OK;
}

static const char *const envelope_headers[] = {"Content-Type",      "X-AES-KEY-VERSION", "X-AES-ALGORITHM",
                                               "X-AES-IV",          "webhook-id",        "webhook-timestamp",
                                               "webhook-signature"};
#define N_ENVELOPE (sizeof envelope_headers / sizeof envelope_headers[0])

static bool is_auth_failure(sp_error rc) {
    return rc == SP_ERR_AUTH || rc == SP_ERR_UNKNOWN_KEY_VERSION || rc == SP_ERR_STALE_TIMESTAMP ||
           rc == SP_ERR_KEY_RETIRED;
}

/* Queues the e-mail callback for a finished SMTP hand-off. */
static void email_callback(relay_app *app, const relay_record *r, relay_outcome o, int code) {
    if (!r->dlr_url[0]) return;
    const char *event = o == RELAY_OUT_DELIVERED ? "delivered" : o == RELAY_OUT_HARD_BOUNCE ? "hard_bounce" : "soft_bounce";
    char *body = NULL;
    size_t len = 0;
    sp_error rc = relay_cb_email(event, r->message_id, (int64_t)time(NULL), o == RELAY_OUT_DELIVERED ? 0 : code,
                                 &body, &len);
    if (rc == SP_OK) rc = relay_callback_queue(app, r->dlr_url, body, len);
    if (rc != SP_OK) relay_log_error("callback.queue_failed", rc);
    relay_wiped_free(body, len);
}

/* Hands one record on, records where its reports go, and queues what is
 * already known (the SMTP outcome, a refusal by Kannel). */
static relay_outcome hand_on(relay_app *app, const relay_record *r, int *code) {
    *code = 0;
    relay_outcome o;
    uint8_t tag[32];
    bool have_tag = false;
    if (r->kind == RELAY_KIND_EMAIL) {
        o = relay_smtp_send(&app->cfg, r, code);
    } else {
        unsigned status = 0;
        char dlr_tag[RELAY_DLR_TAG_CHARS + 1];
        bool tagged = relay_state_dlr_tag(app->state, r->message_id, dlr_tag) == SP_OK;
        o = relay_kannel_send(&app->cfg, r, tagged ? dlr_tag : NULL, &status);
        *code = (int)status;
        have_tag = relay_state_phone_tag(app->state, r->to, tag) == SP_OK;
    }
    sp_metric_add(app->m.handed[r->kind][o], 1);
    if (o == RELAY_OUT_UNAVAILABLE) return o;
    const char *inbound = r->inbound_url[0] ? r->inbound_url : app->cfg.inbound_url;
    sp_error rc = relay_state_message_put(app->state, r->message_id, r->kind, r->dlr_url, inbound,
                                          have_tag ? tag : NULL, (int64_t)time(NULL));
    if (rc != SP_OK) relay_log_error("state.message_put_failed", rc);
    sp_wipe(tag, sizeof tag);
    if (r->kind == RELAY_KIND_EMAIL) {
        email_callback(app, r, o, *code);
    } else if (o == RELAY_OUT_REJECTED && r->dlr_url[0]) {
        char *body = NULL;
        size_t len = 0;
        rc = relay_cb_sms("failed", r->message_id, (int64_t)time(NULL), 903, NULL, &body, &len);
        if (rc == SP_OK) rc = relay_callback_queue(app, r->dlr_url, body, len);
        if (rc != SP_OK) relay_log_error("callback.queue_failed", rc);
        relay_wiped_free(body, len);
    }
    return o;
}

static void handle_messages(relay_app *app, sp_http_request *req) {
    sp_header headers[N_ENVELOPE];
    size_t n = 0;
    for (size_t i = 0; i < N_ENVELOPE; i++) {
        size_t count = 0;
        const char *v = sp_http_header(req, envelope_headers[i], &count);
        if (count > 1) {
            sp_metric_add(app->m.requests_bad, 1);
            reply_error(req, 400, "bad_request", sp_strerror(SP_ERR_DUPLICATE_HEADER));
            return;
        }
        if (v) headers[n++] = (sp_header){envelope_headers[i], strlen(envelope_headers[i]), v, strlen(v)};
    }
    size_t body_len = 0;
    const uint8_t *body = sp_http_body(req, &body_len);
    size_t out_cap = body_len ? body_len : 1;
    uint8_t *plain = malloc(out_cap);
    if (!plain) {
        reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    size_t plain_len = 0;
    sp_opened info;
    memset(&info, 0, sizeof info);
    dedupe_ctx dc = {app, false};
    sp_wire *w = NULL;
    sp_error rc = relay_keys_acquire(app->keys, &w);
    if (rc == SP_OK) {
        rc = sp_open_checked(w, headers, n, body, body_len, 0, check_seen, &dc, plain, out_cap, &plain_len, &info);
        relay_keys_release(app->keys, w);
    }
    if (dc.duplicate) {
        sp_metric_add(app->m.requests_dup, 1);
        reply(req, 200, "{\"status\":\"duplicate\"}");
        goto out;
    }
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_S("peer", sp_http_peer(req))};
        sp_log(SP_LOG_WARN, "open.refused", f, 2);
        if (is_auth_failure(rc)) {
            sp_metric_add(app->m.requests_unauth, 1);
            reply(req, 401, unauthorized);
        } else if (rc == SP_ERR_STORE || rc == SP_ERR_NO_MEMORY || rc == SP_ERR_UNAVAILABLE) {
            sp_metric_add(app->m.requests_unavail, 1);
            if (sp_http_add_header(req, "Retry-After", "5") != SP_OK) relay_log_error("http.header_failed", rc);
            reply_error(req, 503, "unavailable", "try again");
        } else {
            sp_metric_add(app->m.requests_bad, 1);
            reply_error(req, rc == SP_ERR_TOO_LARGE ? 413 : 400, "bad_request", sp_strerror(rc));
        }
        goto out;
    }
    relay_payload p;
    char err[200];
    rc = relay_payload_parse(plain, plain_len, &p, err, sizeof err);
    if (rc != SP_OK) {
        sp_metric_add(app->m.requests_bad, 1);
        reply_error(req, 400, "bad_payload", err);
        goto out;
    }
    for (size_t i = 0; i < p.count; i++) {
        const relay_record *r = &p.records[i];
        const char *bad_field = NULL;
        if (r->dlr_url[0] && !relay_url_allowed(&app->cfg, r->dlr_url)) bad_field = "dlr_url";
        else if (r->inbound_url[0] && !relay_url_allowed(&app->cfg, r->inbound_url)) bad_field = "inbound_url";
        if (bad_field) {
            if (p.batch) snprintf(err, sizeof err, "messages[%zu].%s: outside [platform] callback_allow", i, bad_field);
            else snprintf(err, sizeof err, "%s: outside [platform] callback_allow", bad_field);
            relay_payload_free(&p);
            sp_metric_add(app->m.requests_bad, 1);
            reply_error(req, 400, "bad_payload", err);
            goto out;
        }
    }
    json_t *results = json_array();
    size_t accepted = 0;
    bool unavailable = false;
    for (size_t i = 0; i < p.count; i++) {
        const relay_record *r = &p.records[i];
        const char *status;
        int code = 0;
        relay_outcome o = 0;
        bool handed = false;
        if (unavailable) {
            status = "not_attempted";
        } else if (relay_state_handed(app->state, r->message_id, &handed) != SP_OK) {
            status = "unavailable";
            unavailable = true;
        } else if (handed) {
            status = "duplicate";
            accepted++;
        } else {
            o = hand_on(app, r, &code);
            if (o == RELAY_OUT_UNAVAILABLE) {
                status = "unavailable";
                unavailable = true;
            } else {
                status = "accepted";
                accepted++;
            }
        }
        json_t *res = json_pack("{s:s,s:s}", "message_id", r->message_id, "status", status);
        if (res && o && o != RELAY_OUT_UNAVAILABLE) json_object_set_new(res, "outcome", json_string(relay_outcome_name(o)));
        if (res && code && o != RELAY_OUT_DELIVERED) json_object_set_new(res, "code", json_integer(code));
        json_array_append_new(results, res);
    }
    bool batch = p.batch;
    relay_payload_free(&p);
    if (!unavailable) {
        rc = relay_state_remember(app->state, info.message_id, (int64_t)time(NULL));
        if (rc != SP_OK) relay_log_error("state.remember_failed", rc);
    }
    json_t *doc = json_pack("{s:I}", "accepted", (json_int_t)accepted);
    if (doc && (batch || unavailable)) json_object_set(doc, "results", results);
    json_decref(results);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (doc) json_decref(doc);
    if (unavailable) {
        sp_metric_add(app->m.requests_unavail, 1);
        if (sp_http_add_header(req, "Retry-After", "30") != SP_OK) relay_log_error("http.header_failed", SP_ERR_TOO_LARGE);
        reply(req, 503, text ? text : "{\"error\":{\"code\":\"unavailable\",\"message\":\"try again\"}}");
    } else {
        sp_metric_add(app->m.requests_ok, 1);
        reply(req, 200, text ? text : "{}");
    }
    sp_log_field f[] = {SP_LOG_S("webhook_id", info.message_id), SP_LOG_I("accepted", accepted),
                        SP_LOG_B("unavailable", unavailable), SP_LOG_S("key_version", info.key_version)};
    sp_log(SP_LOG_INFO, "messages.handled", f, 4);
    relay_json_free(text);
out:
    relay_wiped_free(plain, out_cap);
}

void relay_on_request(void *arg, sp_http_request *req) {
    relay_app *app = arg;
    handle_messages(app, req);
}

/* ---- the DLR listener (Kannel) ---- */

/* The query as a string again, from the server's decoded values, so that
 * one parser (the fuzzed one) judges every value. */
static sp_error collect_query(sp_http_request *req, char *out, size_t cap, relay_kannel_query *q) {
    static const char *const names[] = {"meta", "type", "smsc", "ts", "from", "text", "sig"};
    size_t len = 0;
    for (size_t i = 0; i < 7; i++) {
        const char *v = sp_http_query(req, names[i]);
        if (!v) continue;
        int n = snprintf(out + len, cap - len, "%s%s=", len ? "&" : "", names[i]);
        if (n < 0 || (size_t)n >= cap - len) return SP_ERR_TOO_LARGE;
        len += (size_t)n;
        size_t k = 0;
        sp_error rc = relay_form_encode(v, strlen(v), out + len, cap - len, &k);
        if (rc != SP_OK) return SP_ERR_TOO_LARGE;
        len += k;
    }
    return relay_kannel_query_parse(out, len, q);
}

#define RELAY_DLR_WAIT_MS 3000 /* for the record of a message Kannel reports on */
#define RELAY_DLR_POLL_MS 20

/* Whether a DLR call carries the tag the relay put in its dlr-url. */
static bool dlr_tag_ok(relay_app *app, const relay_kannel_query *q) {
    char want[RELAY_DLR_TAG_CHARS + 1];
    if (strlen(q->sig) != RELAY_DLR_TAG_CHARS || relay_state_dlr_tag(app->state, q->meta, want) != SP_OK) return false;
    return sp_ct_equal(want, q->sig, RELAY_DLR_TAG_CHARS);
}

static void handle_dlr(relay_app *app, const relay_kannel_query *q) {
    sp_metric_add(app->m.dlr_in, 1);
    int code = 0;
    relay_dlr_event ev = relay_dlr_map(q->type, &code);
    sp_log_field f[] = {SP_LOG_S("message_id", q->meta), SP_LOG_I("type", q->type)};
    sp_log(SP_LOG_INFO, "kannel.dlr", f, 2);
    if (ev != RELAY_DLR_DELIVERED && ev != RELAY_DLR_FAILED) return;
    char dlr_url[RELAY_MAX_URL], inbound[RELAY_MAX_URL];
    /* Kannel may call the dlr-url before the request that handed the SMS
     * on has recorded it (a fake or fast SMSC reports within a
     * millisecond). The tag proves the relay made this URL, so the record
     * is on its way: wait for it a little rather than lose the report. */
    sp_error rc = SP_ERR_NOT_FOUND;
    for (int waited = 0;; waited += RELAY_DLR_POLL_MS) {
        rc = relay_state_message_get(app->state, q->meta, dlr_url, sizeof dlr_url, inbound, sizeof inbound);
        if (rc != SP_ERR_NOT_FOUND || waited >= RELAY_DLR_WAIT_MS) break;
        struct timespec pause = {0, RELAY_DLR_POLL_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    if (rc != SP_OK) {
        sp_log_field e[] = {SP_LOG_S("message_id", q->meta), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "kannel.dlr_unmatched", e, 2);
        return;
    }
    if (!dlr_url[0] || !relay_url_allowed(&app->cfg, dlr_url)) return;
    char *body = NULL;
    size_t len = 0;
    int64_t ts = q->ts ? q->ts : (int64_t)time(NULL);
    rc = relay_cb_sms(ev == RELAY_DLR_DELIVERED ? "delivered" : "failed", q->meta, ts, code, NULL, &body, &len);
    if (rc == SP_OK) rc = relay_callback_queue(app, dlr_url, body, len);
    if (rc != SP_OK) relay_log_error("callback.queue_failed", rc);
    relay_wiped_free(body, len);
}

static void handle_mo(relay_app *app, const relay_kannel_query *q) {
    sp_metric_add(app->m.mo_in, 1);
    uint8_t tag[32];
    char meta[RELAY_MAX_MESSAGE_ID + 1] = "", inbound[RELAY_MAX_URL] = "";
    bool known = relay_state_phone_tag(app->state, q->from, tag) == SP_OK &&
                 relay_state_last_to(app->state, tag, meta, sizeof meta, inbound, sizeof inbound) == SP_OK;
    sp_wipe(tag, sizeof tag);
    const char *url = known && inbound[0] ? inbound : app->cfg.inbound_url;
    sp_log_field f[] = {SP_LOG_B("reply", known), SP_LOG_S("message_id", meta)};
    sp_log(SP_LOG_INFO, "kannel.mo", f, 2);
    if (!url[0] || !relay_url_allowed(&app->cfg, url)) {
        sp_log(SP_LOG_WARN, "kannel.mo_no_inbound_url", NULL, 0);
        return;
    }
    int64_t ts = q->ts ? q->ts : (int64_t)time(NULL);
    char *body = NULL;
    size_t len = 0;
    sp_error rc;
    if (known) {
        /* text is the user's words: a JSON string, checked UTF-8 by jansson */
        char *text = malloc(q->text_len + 1);
        rc = text ? SP_OK : SP_ERR_NO_MEMORY;
        if (rc == SP_OK) {
            memcpy(text, q->text, q->text_len + 1);
            rc = relay_cb_sms("replied", meta, ts, 0, text, &body, &len);
            relay_wiped_free(text, q->text_len + 1);
        }
        if (rc != SP_OK || !body) /* not UTF-8: tell the platform without tying it to the message */
            rc = relay_cb_form_inbound(q->from, q->text, q->text_len, q->smsc, ts, &body, &len);
    } else {
        rc = relay_cb_form_inbound(q->from, q->text, q->text_len, q->smsc, ts, &body, &len);
    }
    if (rc == SP_OK) rc = relay_callback_queue(app, url, body, len);
    if (rc != SP_OK) relay_log_error("callback.queue_failed", rc);
    relay_wiped_free(body, len);
}

void relay_dlr_on_request(void *arg, sp_http_request *req) {
    relay_app *app = arg;
    const char *path = sp_http_path(req);
    bool dlr = strcmp(path, "/kannel/dlr") == 0, mo = strcmp(path, "/kannel/mo") == 0;
    if (!dlr && !mo) {
        sp_http_set_route(req, "other");
        reply_error(req, 404, "not_found", "no such route");
        return;
    }
    sp_http_set_route(req, dlr ? "/kannel/dlr" : "/kannel/mo");
    size_t cap = RELAY_MAX_KANNEL_QUERY * 3 + 64;
    char *raw = malloc(cap);
    relay_kannel_query *q = malloc(sizeof *q);
    sp_error rc = raw && q ? collect_query(req, raw, cap, q) : SP_ERR_NO_MEMORY;
    if (rc == SP_OK && dlr && (!q->meta[0] || !q->has_type)) rc = SP_ERR_INVALID_ARGUMENT;
    if (rc == SP_OK && mo && (!q->has_from || !q->has_text)) rc = SP_ERR_INVALID_ARGUMENT;
    if (rc == SP_OK && dlr && !dlr_tag_ok(app, q)) {
        sp_log_field f[] = {SP_LOG_S("message_id", q->meta)};
        sp_log(SP_LOG_WARN, "kannel.dlr_bad_tag", f, 1);
        reply_error(req, 403, "forbidden", "not a report the relay asked for");
    } else if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_S("route", path)};
        sp_log(SP_LOG_WARN, "kannel.bad_call", f, 2);
        reply_error(req, 400, "bad_request", "bad query");
    } else {
        if (dlr) handle_dlr(app, q);
        else handle_mo(app, q);
        /* an empty answer: Kannel sends no reply SMS */
        if (sp_http_respond(req, 200, "text/plain", "", 0) != SP_OK) relay_log_error("http.respond_failed", rc);
    }
    if (q) relay_wiped_free(q, sizeof *q);
    relay_wiped_free(raw, cap);
}
