/*
 * Callbacks: what the relay reports back to the platform (PROTOCOL.md §10).
 *
 * Each report gets a webhook-id ("cb_" and a UUID) when it is queued, and
 * keeps it on every retry, so the platform drops repeats. The queue lives
 * in the state file (bodies encrypted there), so reports survive a
 * restart. A background thread drains it: each due callback is sealed at
 * send time with the key file's active version (so a rotation is picked up
 * by the next attempt), the configured profile and algorithm, a fresh IV
 * and timestamp, and POSTed. No answer, a 5xx or a 429 (or 408) is tried
 * again on the Standard Webhooks schedule: at once, 5 s, 5 min, 30 min,
 * 2 h, 5 h, 10 h, 10 h (times [platform] retry_scale), never sooner than a
 * Retry-After asks (sp_http_client caps it at an hour); after the last it
 * is dropped with an error line. A 2xx or any other 4xx ends it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"

static const int64_t schedule_s[RELAY_SCHEDULE_STEPS] = {0, 5, 300, 1800, 7200, 18000, 36000, 36000};

int64_t relay_schedule_delay_ms(unsigned attempt, double scale) {
    if (attempt >= RELAY_SCHEDULE_STEPS) return -1;
    if (!(scale > 0) || scale > 1) scale = 1;
    return (int64_t)((double)schedule_s[attempt] * 1000.0 * scale);
}

/* A JSON document into a malloc'd buffer (free with relay_wiped_free). */
static sp_error dump(json_t *j, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!j) return SP_ERR_NO_MEMORY;
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *buf = n ? malloc(n + 1) : NULL;
    if (!buf || json_dumpb(j, buf, n, JSON_COMPACT) != n) {
        free(buf);
        json_decref(j);
        return SP_ERR_NO_MEMORY;
    }
    buf[n] = '\0';
    json_decref(j);
    *out = buf;
    *len = n;
    return SP_OK;
}

/* One event item; NULL when jansson cannot build it (memory, or a string
 * that is not UTF-8). */
static json_t *item(const char *event, const char *meta, int64_t ts, int code) {
    json_t *o = json_pack("{s:I,s:s}", "ts", (json_int_t)ts, "meta", meta);
    if (o && event && json_object_set_new(o, "event", json_string(event)) != 0) {
        json_decref(o);
        return NULL;
    }
    if (o && code && json_object_set_new(o, "code", json_integer(code)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

sp_error relay_cb_email(const char *event, const char *meta, int64_t ts, int code, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    bool success = strcmp(event, "delivered") == 0 || strcmp(event, "opened") == 0 || strcmp(event, "clicked") == 0;
    json_t *it = item(event, meta, ts, code);
    if (!it) return SP_ERR_NO_MEMORY;
    json_t *doc = json_pack("{s:s,s:{s:[],s:[]}}", "version", "v2", "events", "success", "failed");
    json_t *list = doc ? json_object_get(json_object_get(doc, "events"), success ? "success" : "failed") : NULL;
    if (!list || json_array_append_new(list, it) != 0) {
        if (!list) json_decref(it);
        if (doc) json_decref(doc);
        return SP_ERR_NO_MEMORY;
    }
    return dump(doc, out, len);
}

sp_error relay_cb_sms(const char *event, const char *meta, int64_t ts, int code, const char *incoming_text,
                      char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    json_t *it = item(NULL, meta, ts, code);
    if (!it) return SP_ERR_NO_MEMORY;
    if (incoming_text) {
        json_t *t = json_string(incoming_text);
        if (!t) { /* not UTF-8 (or no memory): the caller falls back to the form body */
            json_decref(it);
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (json_object_set_new(it, "incomingText", t) != 0) {
            json_decref(it);
            return SP_ERR_NO_MEMORY;
        }
    }
    json_t *doc = json_pack("[{s:s,s:[o]}]", "event", event, "data", it);
    if (!doc) return SP_ERR_NO_MEMORY;
    return dump(doc, out, len);
}

sp_error relay_cb_form_inbound(const char *from, const char *text, size_t text_len, const char *smsc, int64_t ts,
                               char **out, size_t *len) {
    size_t cap = 64 + 3 * (strlen(from) + text_len + strlen(smsc)) + 32;
    char *buf = malloc(cap);
    if (!buf) return SP_ERR_NO_MEMORY;
    size_t n = 0, k = 0;
    sp_error rc = SP_OK;
#define APPEND(lit)                                                                                                \
    do {                                                                                                           \
        size_t l_ = strlen(lit);                                                                                   \
        if (n + l_ >= cap) rc = SP_ERR_TOO_LARGE;                                                                  \
        else memcpy(buf + n, lit, l_), n += l_;                                                                    \
    } while (0)
    APPEND("from=");
    if (rc == SP_OK && (rc = relay_form_encode(from, strlen(from), buf + n, cap - n, &k)) == SP_OK) n += k;
    if (rc == SP_OK) APPEND("&text=");
    if (rc == SP_OK && (rc = relay_form_encode(text, text_len, buf + n, cap - n, &k)) == SP_OK) n += k;
    if (rc == SP_OK && smsc[0]) {
        APPEND("&smsc=");
        if (rc == SP_OK && (rc = relay_form_encode(smsc, strlen(smsc), buf + n, cap - n, &k)) == SP_OK) n += k;
    }
    if (rc == SP_OK) {
        char tsbuf[32];
        snprintf(tsbuf, sizeof tsbuf, "&ts=%lld", (long long)ts);
        APPEND(tsbuf);
    }
#undef APPEND
    if (rc != SP_OK) {
        relay_wiped_free(buf, cap);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SP_OK;
}

sp_error relay_callback_queue(relay_app *app, const char *url, const char *body, size_t len) {
    char uuid[37], id[48];
    sp_error rc = sp_uuid_v4(uuid);
    if (rc != SP_OK) return rc;
    snprintf(id, sizeof id, "cb_%s", uuid);
    rc = relay_state_enqueue(app->state, id, url, (const uint8_t *)body, len, relay_now_ms());
    if (rc != SP_OK) return rc;
    pthread_mutex_lock(&app->cb_lock);
    app->cb_wake = true;
    pthread_cond_signal(&app->cb_cond);
    pthread_mutex_unlock(&app->cb_lock);
    return SP_OK;
}

/* Seals and POSTs one callback; the HTTP result decides its fate. */
static sp_error deliver(relay_app *app, const relay_queued *q, unsigned *status, int64_t *retry_after_ms) {
    *status = 0;
    *retry_after_ms = -1;
    const relay_config *cfg = &app->cfg;
    /* checked when queued; checked again in case the config narrowed since */
    if (!relay_url_allowed(cfg, q->url)) return SP_ERR_INVALID_ARGUMENT;
    size_t cap = sp_seal_body_bound(cfg->callback_profile, cfg->callback_alg, q->body_len);
    if (cap == 0) return SP_ERR_TOO_LARGE;
    uint8_t *sealed_body = malloc(cap);
    if (!sealed_body) return SP_ERR_NO_MEMORY;
    sp_wire *w = NULL;
    sp_sealed sealed;
    sp_error rc = relay_keys_acquire(app->keys, &w);
    if (rc == SP_OK) {
        sp_seal_params p = {.profile = cfg->callback_profile, .alg = cfg->callback_alg, .message_id = q->id};
        rc = sp_seal(w, &p, q->body, q->body_len, sealed_body, cap, &sealed);
        relay_keys_release(app->keys, w);
    }
    if (rc == SP_OK) {
        char names[SP_SEALED_MAX_HEADERS][64], values[SP_SEALED_MAX_HEADERS][SP_SEALED_STORAGE];
        sp_http_client_header h[SP_SEALED_MAX_HEADERS];
        size_t n = 0;
        for (size_t i = 0; i < sealed.n_headers && i < SP_SEALED_MAX_HEADERS; i++) {
            const sp_header *sh = &sealed.headers[i];
            if (sh->name_len >= sizeof names[0] || sh->value_len >= sizeof values[0]) continue;
            memcpy(names[n], sh->name, sh->name_len);
            names[n][sh->name_len] = '\0';
            memcpy(values[n], sh->value, sh->value_len);
            values[n][sh->value_len] = '\0';
            h[n] = (sp_http_client_header){names[n], values[n]};
            n++;
        }
        rc = relay_http_call(cfg, q->url, h, n, sealed_body, sealed.body_len, cfg->callback_timeout_s, status,
                             retry_after_ms);
    }
    free(sealed_body);
    return rc;
}

static void drain_once(relay_app *app) {
    relay_queued due[16];
    size_t n = 0;
    if (relay_state_due(app->state, relay_now_ms(), due, 16, &n) != SP_OK) {
        relay_log_error("callback.queue_read_failed", SP_ERR_STORE);
        return;
    }
    for (size_t i = 0; i < n && !atomic_load(&app->stopping); i++) {
        relay_queued *q = &due[i];
        unsigned status = 0;
        int64_t retry_after = -1;
        sp_error rc = deliver(app, q, &status, &retry_after);
        sp_log_field f[] = {SP_LOG_S("webhook_id", q->id), SP_LOG_I("attempt", q->attempt + 1),
                            SP_LOG_I("status", status), SP_LOG_S("result", sp_error_name(rc))};
        if (rc == SP_OK) {
            (void)relay_state_dequeue(app->state, q->id);
            sp_metric_add(app->m.cb_sent, 1);
            sp_log(SP_LOG_INFO, "callback.sent", f, 4);
        } else if (rc == SP_ERR_PROVIDER_REJECTED || rc == SP_ERR_INVALID_ARGUMENT) {
            (void)relay_state_dequeue(app->state, q->id);
            sp_metric_add(app->m.cb_rejected, 1);
            sp_log(SP_LOG_WARN, "callback.refused", f, 4);
        } else {
            int64_t delay = relay_schedule_delay_ms(q->attempt + 1, app->cfg.retry_scale);
            /* a Retry-After is honoured: never sooner than the platform asked */
            if (delay >= 0 && retry_after > delay) delay = retry_after;
            if (delay < 0) {
                (void)relay_state_dequeue(app->state, q->id);
                sp_metric_add(app->m.cb_dropped, 1);
                sp_log(SP_LOG_ERROR, "callback.dropped", f, 4);
            } else {
                (void)relay_state_reschedule(app->state, q->id, q->attempt + 1, relay_now_ms() + delay);
                sp_metric_add(app->m.cb_retried, 1);
                sp_log(SP_LOG_WARN, "callback.retry", f, 4);
            }
        }
        relay_queued_clear(q);
    }
    for (size_t i = 0; i < n; i++) relay_queued_clear(&due[i]);
    int64_t depth = 0;
    if (relay_state_queue_depth(app->state, &depth) == SP_OK) sp_metric_set(app->m.queue_depth, (double)depth);
}

static void *drain_thread(void *arg) {
    relay_app *app = arg;
    int64_t last_prune = 0;
    while (!atomic_load(&app->stopping)) {
        drain_once(app);
        int64_t now = relay_now_ms();
        if (now - last_prune > 3600 * 1000) {
            (void)relay_state_prune(app->state, now / 1000, app->cfg.keep_s);
            last_prune = now;
        }
        pthread_mutex_lock(&app->cb_lock);
        if (!app->cb_wake && !atomic_load(&app->stopping)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 200 * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&app->cb_cond, &app->cb_lock, &until);
        }
        app->cb_wake = false;
        pthread_mutex_unlock(&app->cb_lock);
    }
    return NULL;
}

sp_error relay_callbacks_start(relay_app *app) {
    if (pthread_create(&app->cb_thread, NULL, drain_thread, app) != 0) return SP_ERR_NO_MEMORY;
    app->cb_running = true;
    return SP_OK;
}

void relay_callbacks_stop(relay_app *app) {
    if (!app->cb_running) return;
    atomic_store(&app->stopping, true);
    pthread_mutex_lock(&app->cb_lock);
    app->cb_wake = true;
    pthread_cond_signal(&app->cb_cond);
    pthread_mutex_unlock(&app->cb_lock);
    pthread_join(app->cb_thread, NULL);
    app->cb_running = false;
}
