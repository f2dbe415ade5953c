/*
 * /callbacks/v1/{tenant}/{channel}/dlr and …/inbound: what providers report
 * back (delivery reports, bounces, opens, clicks, replies, inbound
 * messages), sealed with the channel's provider key in the same envelope as
 * outbound messages (docs/PROTOCOL.md §10).
 *
 * No API credential: the signature is the authentication, so everything a
 * request could learn before it is verified must be the same for every
 * failure. One 401 body, byte for byte, answers an unknown tenant or
 * channel, a missing or malformed header, an unknown, retired or wrong key
 * version, a stale timestamp, a bad signature, tag or padding, a wrong
 * content type and a plaintext body to an encrypted channel; the reason
 * goes only into an audit line (callback.rejected), and those lines are
 * rate-limited so a flood cannot fill the disk.
 *
 * Order of work: size, signature and timestamp (sp_open_checked), then,
 * inside one transaction, the webhook-id recorded before anything is
 * decrypted (the de-duplication: a provider's retry of something already
 * recorded costs that one insert, and of two identical callbacks racing,
 * one commits and the other finds the id recorded), then decryption and
 * parsing (sp_callback_parse checks the whole body before handing out an
 * event), the events applied, the suppressions made. A callback that fails
 * after its id was recorded keeps nothing, the record included. Only a
 * storage failure is a 5xx, so the provider retries exactly then.
 *
 * The hot path is built for tens of thousands of callbacks a second. A
 * server thread checks what needs no store (size, names, channel, headers,
 * timestamp, signature), answers a failure itself, and parks the rest for
 * a writer thread, which records many callbacks in one transaction (see
 * "the writer"). Each thread keeps an sp_wire per (tenant, channel), built
 * once from the keyring (the only KMS calls) and checked against the
 * channel row and the keyring at most once a second, its store connection,
 * its tenant context, and scratch buffers sized once. Per callback there
 * remain: the tenant and wire lookups (string compares), the HMAC (on both
 * threads) and the decryption, jansson's parse of the plaintext, and the
 * writes (the id's insert, a read and an update per event). Accepted
 * callbacks write no log or audit line.
 *
 * The text of a reply and the number of an inbound sender exist only in
 * the parser's memory during its callback: an opt-out keyword becomes a
 * suppression, the number becomes a blind index to find the profile, and
 * neither is stored or logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "body.h"

#define CB_WIRE_SLOTS 32
#define CB_CHECK_MS 1000        /* a channel's row and keys are looked at again after this */
#define CB_RECHECK_MS 100       /* or after this, for a key version they did not know */
#define CB_RETRIES 3
#define CB_AUDIT_PER_SECOND 20  /* callback.rejected lines; the rest are counted */
#define CB_MAX_OPT_OUTS 64      /* inbound opt-out senders × phone fields in one body */
#define CB_PRUNE_CHUNK 10000

static const char cb_header_names[][20] = {"Content-Type",      "X-AES-KEY-VERSION", "X-AES-ALGORITHM",
                                           "X-AES-IV",          "webhook-id",        "webhook-timestamp",
                                           "webhook-signature"};
#define CB_N_HEADERS (sizeof cb_header_names / sizeof cb_header_names[0])

static int64_t cb_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t cb_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- rejections: one body, the reason audited (rate-limited) ---- */

static pthread_mutex_t cb_audit_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t cb_audit_second;
static unsigned cb_audit_count;
static uint64_t cb_audit_dropped;

static void cb_audit_rejected(spd_app *app, sp_http_request *req, const char *tenant, const char *channel,
                              const char *reason) {
    int64_t second = cb_mono_ms() / 1000;
    uint64_t dropped = 0;
    bool write = false;
    pthread_mutex_lock(&cb_audit_lock);
    if (second != cb_audit_second) {
        dropped = cb_audit_dropped;
        cb_audit_dropped = 0;
        cb_audit_count = 0;
        cb_audit_second = second;
    }
    if (cb_audit_count < CB_AUDIT_PER_SECOND) {
        cb_audit_count++;
        write = true;
    } else {
        cb_audit_dropped++;
    }
    pthread_mutex_unlock(&cb_audit_lock);
    if (!app->audit) return;
    sp_error rc = SP_OK;
    if (dropped > 0) {
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)dropped);
        sp_audit_field f[] = {{"count", n}};
        rc = sp_audit_record(app->audit, "callback.rejected.dropped", f, 1);
    }
    if (write && rc == SP_OK) {
        sp_audit_field f[4];
        size_t n = 0;
        f[n++] = (sp_audit_field){"peer", sp_http_peer(req)};
        f[n++] = (sp_audit_field){"reason", reason};
        /* names from the URL only when they are well-formed names */
        if (tenant && spd_tenant_id_valid(tenant)) f[n++] = (sp_audit_field){"tenant", tenant};
        if (channel && spd_name_ok(channel)) f[n++] = (sp_audit_field){"channel", channel};
        rc = sp_audit_record(app->audit, "callback.rejected", f, n);
    }
    if (rc != SP_OK) {
        sp_log_field ef[] = {SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_ERROR, "audit.write_failed", ef, 1);
    }
}

static void cb_count(spd_app *app, spd_callback_result r) {
    if (app->callbacks_result[r]) sp_metric_add(app->callbacks_result[r], 1);
}

static void cb_reject(spd_app *app, sp_http_request *req, const char *tenant, const char *channel,
                      const char *reason) {
    cb_count(app, SPD_CB_REJECTED);
    cb_audit_rejected(app, req, tenant, channel, reason);
    spd_reply_status(req, 401);
}

static void cb_unavailable(spd_app *app, sp_http_request *req, sp_error rc, const char *step) {
    cb_count(app, SPD_CB_ERROR);
    sp_log_field f[] = {SP_LOG_S("step", step), SP_LOG_S("error", sp_error_name(rc))};
    sp_log(SP_LOG_WARN, "callback.failed", f, 2);
    if (sp_error_is_kms(rc))
        spd_reply_retry(req, 503, "kms_unavailable", "the tenant's KMS is unavailable; retry later", 30);
    else
        spd_reply_retry(req, 503, "unavailable", "could not store the callback; retry later", 5);
}

/* ---- on_headers ---- */

sp_http_verdict spd_callback_headers(spd_app *app, sp_http_request *req) {
    uint8_t peer[16];
    int family = 0;
    sp_http_peer_bytes(req, peer, &family);
    if (!sp_allow_list_contains(&app->config.callbacks_allow, peer, family)) {
        cb_count(app, SPD_CB_REJECTED);
        cb_audit_rejected(app, req, NULL, NULL, "address_not_allowed");
        spd_reply_error(req, 403, "forbidden", "address not allowed");
        return SP_HTTP_ANSWERED;
    }
    if (atomic_load(&app->shutting_down)) {
        spd_reply_retry(req, 503, "unavailable", "shutting down", 5);
        return SP_HTTP_ANSWERED;
    }
    const char *cl = sp_http_header(req, "Content-Length", NULL);
    if (cl) {
        size_t digits = strspn(cl, "0123456789");
        bool too_long = digits > 12;
        unsigned long long announced = too_long ? 0 : strtoull(cl, NULL, 10);
        if (digits > 0 && cl[digits] == '\0' && (too_long || announced > app->config.callbacks_max_body)) {
            cb_count(app, SPD_CB_REJECTED);
            spd_reply_error(req, 413, "too_large", "request body too large");
            return SP_HTTP_ANSWERED;
        }
    }
    return SP_HTTP_CONTINUE;
}

/* ---- per-thread state ---- */

typedef struct cb_wire {
    char tenant[SP_STORE_MAX_TENANT + 1];
    char channel[SP_STORE_MAX_NAME + 1];
    bool used;
    bool encrypted;
    sp_store_channel_kind kind;
    char key_name[SP_KEYRING_MAX_NAME + 1];
    uint64_t channel_version;
    uint64_t keys_digest;
    sp_wire *wire;           /* encrypted channels */
    int64_t checked_ms;      /* monotonic */
    uint64_t last_used;
} cb_wire;

typedef struct cb_opt_out {
    uint8_t field;           /* index into the tenant's pii fields */
    uint8_t index[SP_VAULT_INDEX_MAX];
    size_t index_len;
} cb_opt_out;

typedef struct cb_thread {
    spd_app *app;
    cb_wire wires[CB_WIRE_SLOTS];
    uint64_t tick;
    uint8_t *plain;          /* decrypted body, config.callbacks_max_body */
    size_t plain_cap;
    /* the parsed events, copied out of the parser's memory */
    char ids[SP_CALLBACK_MAX_EVENTS][SP_CALLBACK_MAX_MESSAGE_ID + 1];
    sp_store_delivery_event events[SP_CALLBACK_MAX_EVENTS];
    bool opt_out[SP_CALLBACK_MAX_EVENTS];
    sp_store_applied results[SP_CALLBACK_MAX_EVENTS];
    size_t n_events;         /* store events */
    size_t n_parsed;         /* every event of the body */
    cb_opt_out opt_outs[CB_MAX_OPT_OUTS];
    size_t n_opt_outs;
    char norm[SP_CALLBACK_MAX_FROM + 16];
} cb_thread;

static void cb_thread_free(void *p) {
    cb_thread *th = p;
    if (!th) return;
    for (size_t i = 0; i < CB_WIRE_SLOTS; i++) sp_wire_free(th->wires[i].wire);
    if (th->plain) {
        sp_wipe(th->plain, th->plain_cap);
        free(th->plain);
    }
    sp_wipe(th, sizeof *th);
    free(th);
}

static spd_thread_local cb_state = SPD_THREAD_LOCAL_INIT(cb_thread_free);

static sp_error cb_thread_get(spd_app *app, cb_thread **out) {
    cb_thread *th = spd_thread_local_get(&cb_state, sizeof *th);
    if (th && th->app && th->app != app) {
        cb_thread_free(spd_thread_local_take(&cb_state));
        th = spd_thread_local_get(&cb_state, sizeof *th);
    }
    if (!th) return SP_ERR_NO_MEMORY;
    th->app = app;
    if (!th->plain) {
        th->plain_cap = app->config.callbacks_max_body ? app->config.callbacks_max_body : 1;
        th->plain = malloc(th->plain_cap);
        if (!th->plain) {
            th->plain_cap = 0;
            return SP_ERR_NO_MEMORY;
        }
    }
    *out = th;
    return SP_OK;
}

/* A digest of the channel's usable key versions (active, decrypt-only):
 * a rotation, a retirement or a new minimum changes it. */
static uint64_t cb_keys_digest(const sp_keyring *kr, const char *tenant, const char *key_name) {
    uint64_t h = 1469598103934665603ull;
    size_t n = sp_keyring_count(kr);
    for (size_t i = 0; i < n; i++) {
        sp_keyring_entry e;
        if (sp_keyring_get(kr, i, &e) != SP_OK) continue;
        if (strcmp(e.tenant, tenant) != 0 || strcmp(e.channel, key_name) != 0) continue;
        if (e.state != SP_KEYRING_ACTIVE && e.state != SP_KEYRING_DECRYPT_ONLY) continue;
        for (const char *p = e.version; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
        h = (h ^ (uint64_t)e.state) * 1099511628211ull;
    }
    return h;
}

/* Reads the channel row: kind and encryption settings (the public
 * document; its secrets are not needed to receive). */
static sp_error cb_channel_read(sp_store *store, const char *tenant, const char *channel, cb_wire *w,
                                uint64_t *version) {
    sp_store_channel_row row;
    memset(&row, 0, sizeof row);
    SPD_TRY(sp_store_channel_get(store, tenant, channel, &row));
    *version = spd_channel_version(&row);
    sp_error rc = SP_OK;
    if (*version != w->channel_version || !w->used) {
        json_error_t jerr;
        json_t *cfg = json_loadb(row.config, row.config_len, 0, &jerr);
        const json_t *enc = cfg ? json_object_get(cfg, "encryption") : NULL;
        const char *key = enc ? json_string_value(json_object_get(enc, "key")) : NULL;
        if (!cfg) rc = SP_ERR_BAD_JSON;
        w->encrypted = enc && json_is_true(json_object_get(enc, "enabled"));
        if (rc == SP_OK && w->encrypted && (!key || strlen(key) > SP_KEYRING_MAX_NAME)) rc = SP_ERR_BAD_CONFIG;
        if (rc == SP_OK) snprintf(w->key_name, sizeof w->key_name, "%s", w->encrypted ? key : "");
        w->kind = row.kind;
        json_decref(cfg);
    }
    sp_store_channel_row_clear(&row);
    return rc;
}

/* This thread's view of a channel, checked against the store and the
 * keyring when its last check is max_age_ms old. SP_ERR_NOT_FOUND for a
 * channel that does not exist (or has no usable key). */
static sp_error cb_wire_get_within(cb_thread *th, sp_store *store, spd_tenant *t, const char *channel, int64_t max_age_ms,
                                  cb_wire **out) {
    cb_wire *w = NULL, *victim = &th->wires[0];
    for (size_t i = 0; i < CB_WIRE_SLOTS; i++) {
        cb_wire *e = &th->wires[i];
        if (e->used && strcmp(e->channel, channel) == 0 && strcmp(e->tenant, t->id) == 0) {
            w = e;
            break;
        }
        if (!e->used || (victim->used && e->last_used < victim->last_used)) victim = e;
    }
    int64_t now = cb_mono_ms();
    if (w && now - w->checked_ms < max_age_ms && now >= w->checked_ms) {
        w->last_used = ++th->tick;
        *out = w;
        return SP_OK;
    }
    if (!w) {
        w = victim;
        sp_wire_free(w->wire);
        memset(w, 0, sizeof *w);
    }
    uint64_t version = 0;
    sp_error rc = cb_channel_read(store, t->id, channel, w, &version);
    uint64_t digest = 0;
    if (rc == SP_OK && w->encrypted) {
        rc = sp_keyring_reload_if_changed(t->keyring, NULL);
        if (rc == SP_OK) digest = cb_keys_digest(t->keyring, t->id, w->key_name);
    }
    if (rc == SP_OK && w->encrypted && (!w->wire || !w->used || digest != w->keys_digest)) {
        sp_wire *wire = NULL;
        rc = sp_wire_new(&wire);
        if (rc == SP_OK)
            rc = sp_wire_set_limits(wire, th->app->config.callbacks_max_body, th->app->config.callbacks_tolerance_s);
        if (rc == SP_OK) rc = sp_keyring_load_wire(t->keyring, t->id, w->key_name, wire);
        if (rc == SP_OK && sp_wire_active_version(wire) == NULL) rc = SP_ERR_NOT_FOUND;
        if (rc == SP_OK) {
            sp_wire_free(w->wire);
            w->wire = wire;
        } else {
            sp_wire_free(wire);
        }
    }
    if (rc == SP_OK && !w->encrypted && w->wire) {
        sp_wire_free(w->wire);
        w->wire = NULL;
    }
    if (rc != SP_OK) {
        sp_wire_free(w->wire);
        memset(w, 0, sizeof *w);
        return rc;
    }
    /* both were checked against these sizes by the router */
    if (snprintf(w->tenant, sizeof w->tenant, "%s", t->id) >= (int)sizeof w->tenant ||
        snprintf(w->channel, sizeof w->channel, "%s", channel) >= (int)sizeof w->channel) {
        sp_wire_free(w->wire);
        memset(w, 0, sizeof *w);
        return SP_ERR_INVALID_ARGUMENT;
    }
    w->used = true;
    w->channel_version = version;
    w->keys_digest = digest;
    w->checked_ms = now;
    w->last_used = ++th->tick;
    *out = w;
    return SP_OK;
}

static sp_error cb_wire_get(cb_thread *th, sp_store *store, spd_tenant *t, const char *channel, cb_wire **out) {
    return cb_wire_get_within(th, store, t, channel, CB_CHECK_MS, out);
}

/* ---- parsing into the thread's arrays ---- */

typedef struct cb_parse {
    cb_thread *th;
    spd_tenant *t;
    int64_t default_ts_ms;
} cb_parse;

static bool cb_store_kind(sp_callback_event_kind k, sp_store_event_kind *out) {
    switch (k) {
    case SP_CALLBACK_DELIVERED: *out = SP_STORE_EVENT_DELIVERED; return true;
    case SP_CALLBACK_FAILED:
    case SP_CALLBACK_SOFT_BOUNCE: *out = SP_STORE_EVENT_FAILED; return true;
    case SP_CALLBACK_HARD_BOUNCE: *out = SP_STORE_EVENT_BOUNCED; return true;
    case SP_CALLBACK_OPENED: *out = SP_STORE_EVENT_OPENED; return true;
    case SP_CALLBACK_CLICKED: *out = SP_STORE_EVENT_CLICKED; return true;
    case SP_CALLBACK_REPLIED: *out = SP_STORE_EVENT_REPLIED; return true;
    case SP_CALLBACK_UNSUBSCRIBED: *out = SP_STORE_EVENT_UNSUBSCRIBED; return true;
    case SP_CALLBACK_SPAM: *out = SP_STORE_EVENT_COMPLAINED; return true;
    case SP_CALLBACK_BUFFERED:
    case SP_CALLBACK_INBOUND: break;
    }
    return false;
}

/* An inbound opt-out: the sender's blind index under each phone field
 * (normalised the way ingestion does), never the number itself. */
static void cb_inbound_opt_out(cb_parse *p, const sp_callback_event *e) {
    cb_thread *th = p->th;
    if (!e->from || e->from_len == 0 || e->from_len > SP_CALLBACK_MAX_FROM) return;
    const spd_settings *s = &p->t->settings;
    for (size_t f = 0; f < s->n_pii && th->n_opt_outs < CB_MAX_OPT_OUTS; f++) {
        if (s->pii[f].kind != SP_VAULT_FIELD_PHONE) continue;
        size_t n = 0;
        sp_error rc = sp_vault_normalize(SP_VAULT_FIELD_PHONE,
                                         s->default_country_code[0] ? s->default_country_code : NULL,
                                         (const uint8_t *)e->from, e->from_len, th->norm, sizeof th->norm, &n);
        cb_opt_out *o = &th->opt_outs[th->n_opt_outs];
        if (rc == SP_OK)
            rc = sp_vault_index(p->t->vault, s->pii[f].name, (const uint8_t *)th->norm, n, o->index,
                                sizeof o->index, &o->index_len);
        sp_wipe(th->norm, sizeof th->norm);
        if (rc != SP_OK) continue; /* a short code or a name: no profile has it */
        o->field = (uint8_t)f;
        th->n_opt_outs++;
    }
}

static sp_error cb_collect(void *arg, const sp_callback_event *e) {
    cb_parse *p = arg;
    cb_thread *th = p->th;
    th->n_parsed++;
    if (e->kind == SP_CALLBACK_INBOUND) {
        if (e->opt_out) cb_inbound_opt_out(p, e);
        return SP_OK;
    }
    sp_store_event_kind kind;
    if (!cb_store_kind(e->kind, &kind) || e->message_id[0] == '\0') return SP_OK;
    size_t i = th->n_events;
    if (i >= SP_CALLBACK_MAX_EVENTS) return SP_ERR_TOO_LARGE;
    size_t len = strnlen(e->message_id, SP_CALLBACK_MAX_MESSAGE_ID);
    memcpy(th->ids[i], e->message_id, len);
    th->ids[i][len] = '\0';
    th->events[i].message_id = th->ids[i];
    th->events[i].kind = kind;
    th->events[i].ts_ms = e->ts_ms > 0 ? e->ts_ms : p->default_ts_ms;
    th->events[i].code = (kind == SP_STORE_EVENT_FAILED || kind == SP_STORE_EVENT_BOUNCED) ? e->code : 0;
    th->opt_out[i] = kind == SP_STORE_EVENT_REPLIED && e->opt_out;
    th->n_events++;
    return SP_OK;
}

/* ---- recording ---- */

typedef struct cb_outcome {
    size_t changed, unknown;
    uint64_t by_event[8];
    uint64_t suppressed[4];
} cb_outcome;

static const char *const cb_reasons[] = SPD_SUPPRESS_REASON_NAMES;

static sp_error cb_suppress(sp_store *store, const char *tenant, const char *profile, sp_store_channel_kind kind,
                            size_t reason, int64_t now, cb_outcome *o) {
    bool already = false;
    SPD_TRY(sp_store_suppressed(store, tenant, profile, kind, &already, NULL));
    if (already) return SP_OK;
    sp_error rc = sp_store_suppress(store, tenant, profile, kind, cb_reasons[reason], now, NULL);
    if (rc == SP_ERR_NOT_FOUND) return SP_OK; /* the profile was erased since */
    if (rc == SP_OK) o->suppressed[reason]++;
    return rc;
}

/* One callback's events and suppressions inside the open transaction that
 * recorded its webhook-id. */
static sp_error cb_apply(cb_thread *th, sp_store *store, const spd_tenant *t, const char *channel, bool encrypted,
                         int64_t now, cb_outcome *o) {
    memset(o, 0, sizeof *o);
    sp_error rc = SP_OK;
    if (th->n_events > 0)
        rc = sp_store_delivery_apply(store, t->id, channel, th->events, th->n_events, encrypted, now, th->results);
    for (size_t i = 0; rc == SP_OK && i < th->n_events; i++) {
        const sp_store_delivery_event *e = &th->events[i];
        if (th->results[i] == SP_STORE_APPLIED_UNKNOWN) {
            o->unknown++;
            continue;
        }
        if (th->results[i] == SP_STORE_APPLIED_CHANGED) {
            o->changed++;
            if (e->kind >= 1 && e->kind <= 8) o->by_event[e->kind - 1]++;
        }
        size_t reason = SIZE_MAX;
        if (e->kind == SP_STORE_EVENT_BOUNCED) reason = 0;
        else if (e->kind == SP_STORE_EVENT_UNSUBSCRIBED) reason = 1;
        else if (e->kind == SP_STORE_EVENT_COMPLAINED) reason = 2;
        else if (th->opt_out[i]) reason = 3;
        if (reason == SIZE_MAX) continue;
        char profile[SP_STORE_MAX_ID + 1];
        sp_store_channel_kind kind;
        rc = sp_store_message_profile(store, t->id, e->message_id, profile, &kind);
        if (rc == SP_ERR_NOT_FOUND) {
            rc = SP_OK;
            continue;
        }
        if (rc == SP_OK) rc = cb_suppress(store, t->id, profile, kind, reason, now, o);
    }
    for (size_t i = 0; rc == SP_OK && i < th->n_opt_outs; i++) {
        const cb_opt_out *x = &th->opt_outs[i];
        char profile[SP_STORE_MAX_ID + 1];
        rc = sp_store_profile_find_by_index(store, t->id, t->settings.pii[x->field].name, x->index, x->index_len,
                                            profile);
        if (rc == SP_ERR_NOT_FOUND) {
            rc = SP_OK;
            continue;
        }
        if (rc == SP_OK) rc = cb_suppress(store, t->id, profile, SP_STORE_CHANNEL_SMS, 3, now, o);
    }
    return rc;
}

/* ---- answers ----
 * What a request comes to, decided on one thread and sent on whichever
 * holds the request then. */

typedef enum cb_answer_kind {
    CB_VERIFIED = 0, /* the server thread's checks passed: the writer's turn */
    CB_ACCEPTED,
    CB_DUPLICATE,
    CB_REJECTED,     /* the one 401 */
    CB_INVALID,      /* 400: authentic, decrypted, not a callback */
    CB_TOO_LARGE,
    CB_UNAVAILABLE,  /* 503: the provider retries */
} cb_answer_kind;

typedef struct cb_answer {
    cb_answer_kind kind;
    const char *reason; /* static: the audited reason, or the step that failed */
    sp_error rc;
    size_t events;
    bool recorded;      /* the webhook-id was recorded in the open transaction */
    cb_outcome o;
} cb_answer;

static sp_error cb_decide(cb_answer *a, cb_answer_kind kind, const char *reason, sp_error rc) {
    a->kind = kind;
    a->reason = reason;
    a->rc = rc;
    return SP_OK;
}

/* A failure to answer 503. Inside the writer's transaction (full) it also
 * ends the transaction when it may have come from the store: the
 * transaction is then rolled back and each callback tried on its own. A
 * KMS's failure touched no row, so the others go on. */
static sp_error cb_failed(cb_answer *a, bool full, sp_error rc, const char *step) {
    cb_decide(a, CB_UNAVAILABLE, step, rc);
    return full && !sp_error_is_kms(rc) ? rc : SP_OK;
}

static void cb_reply_accepted(sp_http_request *req, size_t events, const cb_outcome *o) {
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"accepted\",\"events\":%zu,\"changed\":%zu,\"unknown\":%zu}",
                     events, o->changed, o->unknown);
    if (n < 0 || (size_t)n >= sizeof body) {
        spd_reply_error(req, 500, "internal", "internal error");
        return;
    }
    if (sp_http_respond(req, 200, "application/json", body, (size_t)n) != SP_OK) {
        sp_log_field f[] = {SP_LOG_I("status", 200)};
        sp_log(SP_LOG_WARN, "http.respond_failed", f, 1);
    }
}

static void cb_reply_duplicate(spd_app *app, sp_http_request *req) {
    static const char body[] = "{\"status\":\"duplicate\"}";
    cb_count(app, SPD_CB_DUPLICATE);
    if (sp_http_respond(req, 200, "application/json", body, sizeof body - 1) != SP_OK) {
        sp_log_field f[] = {SP_LOG_I("status", 200)};
        sp_log(SP_LOG_WARN, "http.respond_failed", f, 1);
    }
}

static void cb_send(spd_app *app, sp_http_request *req, const char *tenant, const char *channel,
                    const cb_answer *a) {
    switch (a->kind) {
    case CB_ACCEPTED:
        cb_count(app, SPD_CB_ACCEPTED);
        for (size_t i = 0; i < 8; i++)
            if (a->o.by_event[i] && app->delivery_events[i]) sp_metric_add(app->delivery_events[i], a->o.by_event[i]);
        for (size_t i = 0; i < 4; i++)
            if (a->o.suppressed[i] && app->suppressions[i]) sp_metric_add(app->suppressions[i], a->o.suppressed[i]);
        cb_reply_accepted(req, a->events, &a->o);
        return;
    case CB_DUPLICATE:
        cb_reply_duplicate(app, req);
        return;
    case CB_REJECTED:
        cb_reject(app, req, tenant, channel, a->reason);
        return;
    case CB_INVALID: {
        cb_count(app, SPD_CB_INVALID);
        sp_log_field f[] = {SP_LOG_S("tenant", tenant), SP_LOG_S("channel", channel),
                            SP_LOG_S("error", sp_error_name(a->rc))};
        sp_log(SP_LOG_INFO, "callback.invalid", f, 3);
        spd_reply_error(req, 400, "bad_callback",
                        a->rc == SP_ERR_TOO_LARGE ? "more than 1000 events in one callback"
                                                  : "not a valid callback body (SMS array, Email v2 or form; "
                                                    "see docs/PROTOCOL.md section 10.4)");
        return;
    }
    case CB_TOO_LARGE:
        cb_count(app, SPD_CB_REJECTED);
        spd_reply_error(req, 413, "too_large", "request body too large");
        return;
    case CB_VERIFIED: /* never sent: a verified callback goes to the writer */
    case CB_UNAVAILABLE:
        break;
    }
    cb_unavailable(app, req, a->rc, a->reason ? a->reason : "callback");
}

/* ---- one callback, from its bytes to its rows ---- */

typedef struct cb_check {
    cb_thread *th;
    sp_store *store;
    const spd_tenant *t;
    bool full;
    int64_t now;
    bool verified;      /* not full: verification passed, and the rest was left */
    bool recorded;
    sp_error store_rc;  /* a failure of the store itself: 503, not 401 */
} cb_check;

/* The de-duplication, inside the writer's transaction: the webhook-id is
 * recorded, which tells at once whether it was before (by an earlier
 * callback, a retry that won the race, or one of the same group). A
 * callback that then fails must not keep its record: the writer does not
 * commit it (cb_write_group). One statement instead of a lookup and an
 * insert, and the lookup still comes before any decryption. */
static sp_error cb_record_id(cb_check *c, const char *webhook_id) {
    bool fresh = true;
    sp_error rc = sp_store_callback_record(c->store, c->t->id, webhook_id, c->now, &fresh);
    if (rc != SP_OK) {
        c->store_rc = rc;
        return rc;
    }
    c->recorded = fresh;
    return fresh ? SP_OK : SP_ERR_EXISTS;
}

/* Between verification and decryption: on a server thread the request
 * stops here (verified) and goes to the writer; in the writer's
 * transaction, the webhook-id is recorded, so a repeat is never
 * decrypted. */
static sp_error cb_seen(void *arg, const sp_opened *verified) {
    cb_check *c = arg;
    if (!c->full) {
        c->verified = true;
        return SP_ERR_EXISTS; /* any result but SP_OK stops sp_open_checked */
    }
    return cb_record_id(c, verified->message_id);
}

/* "application/json" or "application/x-www-form-urlencoded", parameters allowed. */
static bool cb_plain_type_ok(const char *ct) {
    if (!ct) return false;
    while (*ct == ' ') ct++;
    static const char *const types[] = {"application/json", "application/x-www-form-urlencoded"};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(types[i]);
        if (strncasecmp(ct, types[i], n) == 0) {
            const char *rest = ct + n;
            while (*rest == ' ') rest++;
            if (*rest == '\0' || *rest == ';') return true;
        }
    }
    return false;
}

static bool cb_webhook_id_ok(const char *id) {
    size_t n = strnlen(id, SP_STORE_MAX_WEBHOOK_ID + 1);
    if (n == 0 || n > SP_STORE_MAX_WEBHOOK_ID) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] > 0x7e) return false;
    return true;
}

/* The work of one callback in the order. Not full (a server
 * thread, no transaction): size, names, channel, headers, timestamp and
 * signature, stopping at CB_VERIFIED before the webhook-id is looked up.
 * Full (the writer, inside its transaction): all of it again, then the
 * webhook-id, decryption, parsing and the writes. The answer is in *a; the
 * result is not SP_OK only when the writer's transaction must end. */
static sp_error cb_examine(cb_thread *th, sp_store *store, sp_http_request *req, const char *tenant_id,
                           const char *channel_id, bool full, int64_t now, cb_answer *a) {
    spd_app *app = th->app;
    memset(a, 0, sizeof *a);
    size_t body_len = 0;
    const uint8_t *body = sp_http_body(req, &body_len);
    if (body_len > app->config.callbacks_max_body) /* chunked past the limit */
        return cb_decide(a, CB_TOO_LARGE, NULL, SP_OK);
    if (!spd_tenant_id_valid(tenant_id) || !spd_name_ok(channel_id))
        return cb_decide(a, CB_REJECTED, "unknown_channel", SP_OK);
    spd_tenant *t = NULL;
    sp_error rc = spd_tenant_get(app, tenant_id, &t);
    if (rc == SP_ERR_NOT_FOUND) return cb_decide(a, CB_REJECTED, "unknown_tenant", SP_OK);
    if (rc != SP_OK) return cb_failed(a, full, rc, "tenant");
    cb_wire *w = NULL;
    rc = cb_wire_get(th, store, t, channel_id, &w);
    if (rc == SP_ERR_NOT_FOUND || rc == SP_ERR_BAD_JSON || rc == SP_ERR_BAD_CONFIG)
        return cb_decide(a, CB_REJECTED, rc == SP_ERR_NOT_FOUND ? "unknown_channel" : "channel_unusable", SP_OK);
    if (rc != SP_OK) return cb_failed(a, full, rc, "channel");

    /* ---- authentication, de-duplication, decryption ---- */
    const uint8_t *plain = body;
    size_t plain_len = body_len;
    int64_t ts_ms = 0;
    if (w->encrypted) {
        sp_header headers[CB_N_HEADERS * 2];
        size_t n = 0;
        for (size_t i = 0; i < CB_N_HEADERS; i++) {
            size_t count = 0;
            const char *v = sp_http_header(req, cb_header_names[i], &count);
            if (!v) continue;
            /* a repeated header is refused by the wire: show it twice */
            for (size_t k = 0; k < (count > 1 ? 2u : 1u); k++)
                headers[n++] = (sp_header){cb_header_names[i], strlen(cb_header_names[i]), v, strlen(v)};
        }
        cb_check check = {th, store, t, full, now, false, false, SP_OK};
        sp_opened info;
        memset(&info, 0, sizeof info);
        /* a failure wipes the whole output buffer, so it is offered only
         * what a decryption of this body can fill (a ciphertext taken from
         * the body, and a block): wiping all of a 256 KiB buffer cost more
         * than the opening. A server thread decrypts nothing: none. */
        size_t room = !full ? 0 : th->plain_cap > 32 && body_len < th->plain_cap - 32 ? body_len + 32 : th->plain_cap;
        rc = sp_open_checked(w->wire, headers, n, body, body_len, 0, cb_seen, &check, full ? th->plain : NULL, room,
                             &plain_len, &info);
        /* A version this view does not know may be one rotated in since it
         * was last checked (up to CB_CHECK_MS ago, and the server thread's
         * view and the writer's are checked apart): look again, at most
         * every CB_RECHECK_MS so that unknown versions cannot make every
         * request read the keyring, and try once more. Nothing was
         * verified or recorded yet. */
        if (rc == SP_ERR_UNKNOWN_KEY_VERSION &&
            cb_wire_get_within(th, store, t, channel_id, CB_RECHECK_MS, &w) == SP_OK && w->encrypted) {
            rc = sp_open_checked(w->wire, headers, n, body, body_len, 0, cb_seen, &check, full ? th->plain : NULL,
                                 room, &plain_len, &info);
        }
        a->recorded = check.recorded;
        if (check.verified) return cb_decide(a, CB_VERIFIED, NULL, SP_OK);
        if (check.store_rc != SP_OK) return cb_failed(a, full, check.store_rc, "callback.record_id");
        if (rc == SP_ERR_EXISTS) return cb_decide(a, CB_DUPLICATE, NULL, SP_OK);
        if (rc == SP_ERR_NO_MEMORY) return cb_failed(a, full, rc, "open");
        if (rc != SP_OK) return cb_decide(a, CB_REJECTED, sp_error_name(rc), SP_OK);
        plain = th->plain;
        ts_ms = info.timestamp * 1000;
    } else {
        size_t ct_count = 0, id_count = 0;
        const char *ct = sp_http_header(req, "Content-Type", &ct_count);
        const char *id = sp_http_header(req, "webhook-id", &id_count);
        if (ct_count != 1 || !cb_plain_type_ok(ct)) return cb_decide(a, CB_REJECTED, "SP_ERR_BAD_CONTENT_TYPE", SP_OK);
        /* a sealed body to a channel that does not encrypt: not what it agreed */
        if (sp_http_header(req, "X-AES-KEY-VERSION", NULL) || sp_http_header(req, "webhook-signature", NULL))
            return cb_decide(a, CB_REJECTED, "sealed_to_plaintext_channel", SP_OK);
        if (id && (id_count != 1 || !cb_webhook_id_ok(id)))
            return cb_decide(a, CB_REJECTED, "SP_ERR_BAD_MESSAGE_ID", SP_OK);
        if (!full) return cb_decide(a, CB_VERIFIED, NULL, SP_OK);
        if (id) {
            cb_check check = {th, store, t, full, now, false, false, SP_OK};
            rc = cb_record_id(&check, id);
            a->recorded = check.recorded;
            if (rc == SP_ERR_EXISTS) return cb_decide(a, CB_DUPLICATE, NULL, SP_OK);
            if (rc != SP_OK) return cb_failed(a, full, rc, "callback.record_id");
        }
        const char *ts = sp_http_header(req, "webhook-timestamp", NULL);
        if (ts && strspn(ts, "0123456789") == strlen(ts) && strlen(ts) >= 1 && strlen(ts) <= 11)
            ts_ms = strtoll(ts, NULL, 10) * 1000;
    }
    if (ts_ms <= 0) ts_ms = now;

    /* ---- parsing ---- */
    th->n_events = th->n_parsed = th->n_opt_outs = 0;
    cb_parse p = {th, t, ts_ms};
    size_t n_events = 0;
    rc = sp_callback_parse(plain, plain_len, SP_CALLBACK_FORMAT_AUTO, cb_collect, &p, &n_events);
    if (plain == th->plain) sp_wipe(th->plain, plain_len);
    if (rc == SP_ERR_NO_MEMORY) return cb_failed(a, full, rc, "parse");
    if (rc != SP_OK) {
        sp_wipe(th->opt_outs, sizeof th->opt_outs[0] * th->n_opt_outs);
        return cb_decide(a, CB_INVALID, NULL, rc);
    }

    /* ---- recording ---- */
    rc = cb_apply(th, store, t, channel_id, w->encrypted, now, &a->o);
    sp_wipe(th->opt_outs, sizeof th->opt_outs[0] * th->n_opt_outs);
    if (rc != SP_OK) return cb_failed(a, full, rc, "record");
    a->events = n_events;
    return cb_decide(a, CB_ACCEPTED, NULL, SP_OK);
}

/* ---- the writer ----
 * A transaction's fixed cost (the write lock, appending and indexing the
 * WAL frames, the release) was most of what a callback cost, and a server
 * thread that waited for its own transaction could not read the next
 * request meanwhile. So a server thread does only what needs no store
 * (and refuses what fails it), parks the request (sp_http_defer) and
 * queues it; a writer thread takes everything queued and runs it through
 * cb_examine in one transaction: the webhook-id records, the decryptions,
 * the parses and the writes of tens of callbacks share one commit, and
 * each is answered (sp_http_resume) only once that commit is done. When
 * the transaction fails, each callback of the group is tried again on its
 * own, so one callback's failure is never another's. SQLite takes one
 * writer (its writes are serial anyway); PostgreSQL one per server thread,
 * whose transactions run side by side. */

#define CB_GROUP_MAX 128  /* callbacks in one transaction */
#define CB_SPARE_JOBS 1024 /* queue entries kept for reuse */
#define CB_MAX_WRITERS SP_HTTP_MAX_THREADS

typedef struct cb_job {
    sp_http_request *req;
    char tenant[SP_STORE_MAX_TENANT + 1];
    char channel[SP_STORE_MAX_NAME + 1];
    cb_answer answer;
    bool alone;      /* written in a transaction of its own */
    struct cb_job *next;
} cb_job;

struct spd_callbacks {
    spd_app *app;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    cb_job *head, **tail;
    cb_job *spare;
    size_t n_spare;
    unsigned idle;     /* writers waiting for work */
    bool stopping;
    unsigned n_writers;
    pthread_t writers[CB_MAX_WRITERS];
};

static void cb_write_one(cb_thread *th, sp_store *store, cb_job *j) {
    sp_error rc = SP_OK;
    for (int attempt = 0; attempt < CB_RETRIES; attempt++) {
        rc = sp_store_begin(store);
        if (rc == SP_OK) rc = cb_examine(th, store, j->req, j->tenant, j->channel, true, cb_now_ms(), &j->answer);
        /* only an accepted callback keeps what it wrote; any other wrote
         * nothing, or a webhook-id record that must go */
        if (rc == SP_OK && j->answer.kind == CB_ACCEPTED) {
            rc = sp_store_commit(store);
            if (rc != SP_OK) sp_store_rollback(store);
        } else {
            sp_store_rollback(store);
        }
        if (rc != SP_ERR_CONFLICT) break;
    }
    if (rc != SP_OK && j->answer.kind != CB_UNAVAILABLE) cb_decide(&j->answer, CB_UNAVAILABLE, "record", rc);
}

static void cb_write_group(cb_thread *th, sp_store *store, cb_job *group) {
    /* tenant contexts and channel views made before the write lock is
     * taken: making one may wait for a KMS */
    for (cb_job *j = group; j; j = j->next) {
        spd_tenant *t = NULL;
        cb_wire *w = NULL;
        /* a failure here is cb_examine's to answer */
        if (spd_tenant_get(th->app, j->tenant, &t) == SP_OK) (void)cb_wire_get(th, store, t, j->channel, &w);
    }
    sp_error rc = SP_OK;
    bool grouped = false;
    for (int conflicts = 0, isolations = 0;;) {
        int64_t now = cb_now_ms();
        bool isolated = false;
        rc = sp_store_begin(store);
        for (cb_job *j = group; rc == SP_OK && !isolated && j; j = j->next) {
            if (j->alone) continue;
            rc = cb_examine(th, store, j->req, j->tenant, j->channel, true, now, &j->answer);
            /* failed after its webhook-id was recorded (not decryptable,
             * not a callback): the record must not be committed, so that
             * callback goes alone and the group starts over without it */
            if (rc == SP_OK && j->answer.recorded && j->answer.kind != CB_ACCEPTED) j->alone = isolated = true;
        }
        if (rc == SP_OK && !isolated) rc = sp_store_commit(store);
        if (rc != SP_OK || isolated) sp_store_rollback(store);
        if (rc == SP_OK && !isolated) {
            grouped = true;
            break;
        }
        if (rc == SP_ERR_CONFLICT && ++conflicts < CB_RETRIES) continue;
        /* a store failure, or a group that keeps losing callbacks this way
         * (each pass runs the rest again): every callback on its own */
        if (rc != SP_OK || ++isolations == CB_RETRIES) break;
    }
    for (cb_job *j = group; j; j = j->next)
        if (!grouped || j->alone) cb_write_one(th, store, j);
}

static void *cb_writer_main(void *arg) {
    spd_callbacks *q = arg;
    spd_app *app = q->app;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stopping) {
            q->idle++;
            pthread_cond_wait(&q->wake, &q->lock);
            q->idle--;
        }
        if (!q->head) break; /* stopping, and nothing is left */
        cb_job *group = q->head, *last = group;
        for (size_t n = 1; n < CB_GROUP_MAX && last->next; n++) last = last->next;
        q->head = last->next;
        if (!q->head) q->tail = &q->head;
        last->next = NULL;
        pthread_mutex_unlock(&q->lock);

        cb_thread *th = NULL;
        sp_store *store = NULL;
        sp_error rc = cb_thread_get(app, &th);
        if (rc == SP_OK) rc = spd_store(app, &store);
        if (rc == SP_OK) {
            cb_write_group(th, store, group);
        } else {
            for (cb_job *j = group; j; j = j->next) cb_decide(&j->answer, CB_UNAVAILABLE, "store", rc);
        }
        for (cb_job *j = group; j; j = j->next) {
            cb_send(app, j->req, j->tenant, j->channel, &j->answer);
            sp_http_resume(j->req); /* the request is the server's again */
            j->req = NULL;
        }

        pthread_mutex_lock(&q->lock);
        for (cb_job *j = group, *next; j; j = next) {
            next = j->next;
            if (q->n_spare < CB_SPARE_JOBS) {
                j->next = q->spare;
                q->spare = j;
                q->n_spare++;
            } else {
                free(j);
            }
        }
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* Parks the request and queues it for a writer; false when it cannot be
 * (stopping, no writer, out of memory): the caller answers. */
static bool cb_enqueue(spd_app *app, sp_http_request *req, const char *tenant, const char *channel) {
    spd_callbacks *q = app->callbacks;
    /* both names passed cb_examine's checks, so they fit */
    size_t tenant_len = strlen(tenant), channel_len = strlen(channel);
    if (!q || tenant_len >= sizeof q->head->tenant || channel_len >= sizeof q->head->channel) return false;
    pthread_mutex_lock(&q->lock);
    cb_job *j = q->stopping ? NULL : q->spare;
    if (j) {
        q->spare = j->next;
        q->n_spare--;
    }
    bool stopping = q->stopping;
    pthread_mutex_unlock(&q->lock);
    if (!j && !stopping) j = malloc(sizeof *j);
    if (!j) return false;
    memcpy(j->tenant, tenant, tenant_len + 1);
    memcpy(j->channel, channel, channel_len + 1);
    j->req = req;
    j->alone = false;
    j->next = NULL;
    if (sp_http_defer(req) != SP_OK) {
        free(j);
        return false;
    }
    pthread_mutex_lock(&q->lock);
    *q->tail = j;
    q->tail = &j->next;
    if (q->idle) pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
    return true;
}

sp_error spd_callbacks_start(spd_app *app, unsigned writers) {
    if (writers < 1 || writers > CB_MAX_WRITERS) return SP_ERR_INVALID_ARGUMENT;
    spd_callbacks *q = calloc(1, sizeof *q);
    if (!q) return SP_ERR_NO_MEMORY;
    q->app = app;
    q->tail = &q->head;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    app->callbacks = q;
    for (unsigned i = 0; i < writers; i++) {
        if (pthread_create(&q->writers[i], NULL, cb_writer_main, q) != 0) {
            spd_callbacks_stop(app);
            return SP_ERR_NO_MEMORY;
        }
        q->n_writers++;
    }
    return SP_OK;
}

void spd_callbacks_stop(spd_app *app) {
    spd_callbacks *q = app ? app->callbacks : NULL;
    if (!q) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    /* the writers answer what is queued before they end */
    for (unsigned i = 0; i < q->n_writers; i++) pthread_join(q->writers[i], NULL);
    while (q->spare) {
        cb_job *j = q->spare;
        q->spare = j->next;
        free(j);
    }
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
    app->callbacks = NULL;
    free(q);
}

/* ---- the request ---- */

void spd_callback_request(spd_app *app, sp_http_request *req, const spd_route_match *m) {
    cb_thread *th = NULL;
    sp_store *store = NULL;
    sp_error rc = cb_thread_get(app, &th);
    if (rc == SP_OK) rc = spd_store(app, &store);
    if (rc != SP_OK) {
        cb_unavailable(app, req, rc, "store");
        return;
    }
    cb_answer a;
    /* outside a transaction every outcome is an answer, never a failure */
    (void)cb_examine(th, store, req, m->id, m->sub, false, cb_now_ms(), &a);
    if (a.kind == CB_VERIFIED) {
        if (cb_enqueue(app, req, m->id, m->sub)) return;
        cb_decide(&a, CB_UNAVAILABLE, "queue", SP_ERR_UNAVAILABLE);
    }
    cb_send(app, req, m->id, m->sub, &a);
}

/* ---- URLs ---- */

void spd_public_url(const spd_app *app, char *out, size_t cap) {
    const spd_config *c = &app->config;
    if (c->public_url[0]) {
        snprintf(out, cap, "%s", c->public_url);
        return;
    }
    bool v6 = strchr(c->listen_address, ':') != NULL;
    unsigned port = app->bound_port ? app->bound_port : c->port;
    snprintf(out, cap, "%s://%s%s%s:%u", c->plain_http ? "http" : "https", v6 ? "[" : "", c->listen_address,
             v6 ? "]" : "", port);
}

json_t *spd_callback_urls(const spd_app *app, const char *tenant, const char *channel) {
    char base[600], dlr[800], inbound[800];
    spd_public_url(app, base, sizeof base);
    snprintf(dlr, sizeof dlr, "%s/callbacks/v1/%s/%s/dlr", base, tenant, channel);
    snprintf(inbound, sizeof inbound, "%s/callbacks/v1/%s/%s/inbound", base, tenant, channel);
    return json_pack("{s:s,s:s}", "delivery_report", dlr, "inbound", inbound);
}

/* ---- housekeeping ---- */

void spd_callbacks_prune(spd_app *app, sp_store *store) {
    int64_t keep_ms = app->config.callbacks_keep_s * 1000;
    if (keep_ms < SP_STORE_CALLBACK_KEEP_MS) keep_ms = SP_STORE_CALLBACK_KEEP_MS;
    int64_t before = cb_now_ms() - keep_ms;
    uint64_t total = 0, removed = 0;
    sp_error rc = SP_OK;
    /* bounded chunks: each a short hold of the write lock; at most 100 a run */
    for (int i = 0; i < 100; i++) {
        removed = 0;
        rc = sp_store_callback_prune(store, before, CB_PRUNE_CHUNK, &removed);
        if (rc != SP_OK) break;
        total += removed;
        if (removed < CB_PRUNE_CHUNK || atomic_load(&app->shutting_down)) break;
    }
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "callbacks.prune_failed", f, 1);
    } else if (total > 0) {
        sp_log_field f[] = {SP_LOG_I("removed", (int64_t)total)};
        sp_log(SP_LOG_INFO, "callbacks.pruned", f, 1);
    }
}
