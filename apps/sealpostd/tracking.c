/*
 * Delivery tracking through the API: what providers reported about a
 * message (GET /v1/messages/{message_id}) and a campaign's statistics
 * (GET /v1/campaigns/{id}/stats).
 *
 * Every number here is counted by the store from each message's columns
 * (its outbox state, its delivery state, the first time of each
 * engagement), never incremented per callback, so a report received twice
 * or out of order is counted once and in the right state. What a user sees
 * as a message's state is its delivery state once a provider reported one,
 * else the outbox state. The statistics are read in one snapshot, so the
 * totals, the failure codes and the timeline agree with each other.
 */
#include <stdlib.h>
#include <string.h>

#include "body.h"

#define SPD_STATS_MAX_BUCKETS 1000
#define SPD_STATS_DEFAULT_BUCKET_S 3600
#define SPD_STATS_MAX_BUCKET_S (31 * 86400)

static json_t *ms_or_null(int64_t ms) { return ms > 0 ? json_integer(ms / 1000) : json_null(); }

json_t *spd_message_json(const sp_store_message_status *st) {
    const sp_store_outbox_row *r = &st->outbox;
    const char *outbox = sp_store_outbox_state_name(r->state);
    const char *shown = st->delivery != SP_STORE_DELIVERY_NONE ? sp_store_delivery_name(st->delivery) : outbox;
    json_t *o = json_object();
    json_t *eng = json_object();
    if (!o || !eng) {
        json_decref(o);
        json_decref(eng);
        return NULL;
    }
    json_object_set_new(eng, "opened_at", ms_or_null(st->opened_at));
    json_object_set_new(eng, "clicked_at", ms_or_null(st->clicked_at));
    json_object_set_new(eng, "replied_at", ms_or_null(st->replied_at));
    json_object_set_new(eng, "unsubscribed_at", ms_or_null(st->unsubscribed_at));
    json_object_set_new(eng, "complained_at", ms_or_null(st->complained_at));
    json_object_set_new(o, "message_id", json_string(r->message_id));
    json_object_set_new(o, "state", json_string(shown));
    json_object_set_new(o, "outbox_state", json_string(outbox));
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "campaign", r->campaign[0] ? json_string(r->campaign) : json_null());
    json_object_set_new(o, "channel", json_string(r->channel));
    json_object_set_new(o, "profile_id", json_string(r->profile_id));
    json_object_set_new(o, "sent_at", ms_or_null(r->sent_at));
    json_object_set_new(o, "last_error", r->last_error[0] ? json_string(r->last_error) : json_null());
    json_object_set_new(o, "delivery",
                        st->delivery != SP_STORE_DELIVERY_NONE ? json_string(sp_store_delivery_name(st->delivery))
                                                               : json_null());
    json_object_set_new(o, "delivery_at", ms_or_null(st->delivery_at));
    json_object_set_new(o, "failure_code", st->failure_code ? json_integer(st->failure_code) : json_null());
    json_object_set_new(o, "engagement", eng);
    if (st->callback_at > 0)
        json_object_set_new(o, "callback",
                            json_pack("{s:I,s:b}", "received_at", (json_int_t)(st->callback_at / 1000), "encrypted",
                                      st->callback_encrypted));
    else
        json_object_set_new(o, "callback", json_null());
    return o;
}

/* Message ids: what the outbox accepts ([A-Za-z0-9_.:-]{1,64}). */
static bool message_id_ok(const char *id) {
    size_t n = strnlen(id, SP_STORE_MAX_MESSAGE_ID + 1);
    if (n == 0 || n > SP_STORE_MAX_MESSAGE_ID) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '-'))
            return false;
    }
    return true;
}

void spd_message_get(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *message_id) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    if (!message_id_ok(message_id)) {
        spd_reply_error(req, 404, "not_found", "no such message");
        return;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_store_message_status st;
    memset(&st, 0, sizeof st);
    if (rc == SP_OK) rc = sp_store_message_status_get(store, t->id, message_id, &st);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such message");
        return;
    }
    if (rc != SP_OK) {
        spd_fail(req, rc, "message.get");
        return;
    }
    spd_reply_json(req, 200, spd_message_json(&st));
}

/* ---- statistics ---- */

static sp_error code_one(void *arg, int code, uint64_t failed, uint64_t bounced) {
    json_t *item = json_pack("{s:i,s:I,s:I}", "code", code, "failed", (json_int_t)failed, "bounced", (json_int_t)bounced);
    if (!item || json_array_append_new(arg, item) != 0) return SP_ERR_NO_MEMORY;
    return SP_OK;
}

static sp_error bucket_one(void *arg, const sp_store_stats_bucket *b) {
    json_t *item = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "start", (json_int_t)(b->start_ms / 1000), "sent",
                             (json_int_t)b->sent, "delivered", (json_int_t)b->delivered, "failed",
                             (json_int_t)b->failed, "bounced", (json_int_t)b->bounced, "opened",
                             (json_int_t)b->opened, "clicked", (json_int_t)b->clicked, "replied",
                             (json_int_t)b->replied);
    if (!item || json_array_append_new(arg, item) != 0) return SP_ERR_NO_MEMORY;
    return SP_OK;
}

void spd_campaign_stats(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *campaign_id) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    if (!spd_name_ok(campaign_id)) {
        spd_reply_error(req, 404, "not_found", "no such campaign");
        return;
    }
    int64_t bucket_s = SPD_STATS_DEFAULT_BUCKET_S;
    const char *bt = sp_http_query(req, "bucket");
    if (bt) {
        char *end = NULL;
        long long v = strtoll(bt, &end, 10);
        if (!bt[0] || !end || *end || bt[0] == '-' || bt[0] == '+' || v < 1 || v > SPD_STATS_MAX_BUCKET_S) {
            spd_reply_error(req, 400, "bad_request", "bucket: whole seconds, 1..2678400 (31 days)");
            return;
        }
        bucket_s = v;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    sp_store_campaign_stats s;
    memset(&s, 0, sizeof s);
    json_t *codes = json_array(), *timeline = json_array();
    if (rc == SP_OK && (!codes || !timeline)) rc = SP_ERR_NO_MEMORY;
    bool in_tx = false;
    if (rc == SP_OK) rc = sp_store_begin_read(store);
    if (rc == SP_OK) in_tx = true;
    if (rc == SP_OK) rc = sp_store_campaign_get(store, t->id, campaign_id, &row);
    sp_store_campaign_row_clear(&row);
    if (rc == SP_OK) rc = sp_store_campaign_stats_get(store, t->id, campaign_id, &s);
    if (rc == SP_OK) rc = sp_store_campaign_failure_codes(store, t->id, campaign_id, code_one, codes);
    if (rc == SP_OK)
        rc = sp_store_campaign_timeline(store, t->id, campaign_id, bucket_s * 1000, SPD_STATS_MAX_BUCKETS, bucket_one,
                                        timeline);
    if (in_tx) {
        if (rc == SP_OK) rc = sp_store_commit(store);
        else sp_store_rollback(store);
    }
    if (rc != SP_OK) {
        json_decref(codes);
        json_decref(timeline);
        if (rc == SP_ERR_NOT_FOUND) spd_reply_error(req, 404, "not_found", "no such campaign");
        else spd_fail(req, rc, "campaign.stats");
        return;
    }
    json_t *reply = json_pack(
        "{s:s,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I},s:o,s:o}", "campaign", campaign_id,
        "bucket", (json_int_t)bucket_s, "total", (json_int_t)s.total, "states", "queued", (json_int_t)s.queued,
        "sending", (json_int_t)s.sending, "sent", (json_int_t)s.sent, "delivered", (json_int_t)s.delivered, "failed",
        (json_int_t)s.failed, "bounced", (json_int_t)s.bounced, "dead", (json_int_t)s.dead, "engagement", "opened",
        (json_int_t)s.opened, "clicked", (json_int_t)s.clicked, "replied", (json_int_t)s.replied, "unsubscribed",
        (json_int_t)s.unsubscribed, "complained", (json_int_t)s.complained, "failure_codes", codes, "timeline",
        timeline);
    spd_reply_json(req, 200, reply);
}
