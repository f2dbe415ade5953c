/*
 * /v1/campaigns: one message, personalised per recipient at send time, to an
 * audience through one channel.
 *
 * A campaign is checked whole when it is created: its templates compile,
 * every placeholder is a PII field of the tenant or an attribute name, the
 * recipient field is a PII field, the audience is well formed and the
 * channel exists. Sent now, its audience is expanded into the outbox in the
 * same request (one row per recipient, each with its own webhook-id) and
 * the workers are woken; with send_at, the scheduler expands it when the
 * time comes. Nothing personal is stored with the campaign: the templates
 * name fields, the values are decrypted per message by the workers.
 *
 * POST /v1/campaigns/{id}/test sends the campaign's message to one profile
 * now and answers with a validation report (what the provider answered,
 * whether the payload was encrypted and free of the recipient's plaintext,
 * which placeholder had no value), as a channel's set-up check. The test
 * message has an outbox row of its own (status_url), and with ?wait=N the
 * answer waits up to N seconds for the provider's callback about it,
 * reporting whether one came and whether it was sealed.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

#define SPD_CAMPAIGN_RETRIES 3

static json_t *counts_json(const sp_store_outbox_counts *c) {
    return json_pack("{s:I,s:I,s:I,s:I,s:I}", "queued", (json_int_t)c->queued, "sending", (json_int_t)c->sending,
                     "sent", (json_int_t)c->sent, "failed", (json_int_t)c->failed, "dead", (json_int_t)c->dead);
}

static json_t *campaign_json(const sp_store_campaign_row *row, const sp_store_outbox_counts *counts) {
    json_error_t jerr;
    json_t *spec = json_loadb(row->spec, row->spec_len, 0, &jerr);
    json_t *o = json_object();
    if (!spec || !o) {
        json_decref(spec);
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "id", json_string(row->id));
    json_object_set_new(o, "channel", json_string(row->channel));
    json_object_set_new(o, "state", json_string(sp_store_campaign_state_name(row->state)));
    json_object_update(o, spec);
    json_decref(spec);
    json_object_set_new(o, "send_at", row->send_at_ms ? json_integer(row->send_at_ms / 1000) : json_null());
    json_object_set_new(o, "total", json_integer((json_int_t)row->total));
    if (counts) json_object_set_new(o, "messages", counts_json(counts));
    json_object_set_new(o, "created", json_integer(row->created));
    json_object_set_new(o, "updated", json_integer(row->updated));
    return o;
}

/* A campaign whose every message has an outcome is done (recorded lazily,
 * when someone looks). */
static void settle_state(sp_store *store, const char *tenant, sp_store_campaign_row *row,
                         const sp_store_outbox_counts *c) {
    if (row->state != SP_STORE_CAMPAIGN_SENDING || c->queued + c->sending > 0) return;
    if (sp_store_campaign_set_state(store, tenant, row->id, SP_STORE_CAMPAIGN_DONE, (int64_t)time(NULL), NULL) ==
        SP_OK)
        row->state = SP_STORE_CAMPAIGN_DONE;
}

/* ---- POST /v1/campaigns ---- */

static void campaign_create(spd_app *app, sp_http_request *req, spd_tenant *t) {
    json_t *body = spd_body_object(req, false);
    if (!body) return;
    char err[320] = "";
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "id") && strcmp(k, "channel") && strcmp(k, "message") && strcmp(k, "to") &&
            strcmp(k, "audience") && strcmp(k, "send_at")) {
            snprintf(err, sizeof err, "unknown field (id, channel, message, to, audience and send_at are known)");
            break;
        }
    }
    char id[SP_STORE_MAX_NAME + 1] = "";
    const json_t *jid = json_object_get(body, "id"), *jchan = json_object_get(body, "channel"),
                 *jat = json_object_get(body, "send_at");
    if (!err[0]) {
        if (jid) {
            if (!json_is_string(jid) || !spd_name_ok(json_string_value(jid)))
                snprintf(err, sizeof err, "id: 1..64 of a-z, 0-9, _ and -");
            else
                snprintf(id, sizeof id, "%s", json_string_value(jid));
        } else {
            char uuid[37];
            if (sp_uuid_v7(uuid) != SP_OK) {
                json_decref(body);
                spd_fail(req, SP_ERR_RANDOM, "campaign.id");
                return;
            }
            snprintf(id, sizeof id, "c-%s", uuid);
        }
    }
    if (!err[0] && (!json_is_string(jchan) || !spd_name_ok(json_string_value(jchan))))
        snprintf(err, sizeof err, "channel: the id of one of this tenant's channels");
    int64_t send_at = 0, now = (int64_t)time(NULL);
    if (!err[0] && jat && !json_is_null(jat)) {
        if (!json_is_integer(jat) || json_integer_value(jat) < 0 || json_integer_value(jat) > 253402300799)
            snprintf(err, sizeof err, "send_at: Unix seconds");
        else
            send_at = json_integer_value(jat);
    }
    if (err[0]) {
        json_decref(body);
        spd_reply_error(req, 400, "bad_campaign", err);
        return;
    }
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_channel *channel = NULL;
    if (rc == SP_OK) rc = spd_channel_load(app, store, t->id, json_string_value(jchan), &channel, NULL);
    sp_channel_kind kind = channel ? sp_channel_get_kind(channel) : SP_CHANNEL_EMAIL;
    /* what the provider's body asks of every message must be in the campaign */
    const sp_template *provider = channel ? sp_channel_body_template(channel) : NULL;
    const json_t *message = json_object_get(body, "message");
    static const char *const needs[][2] = {{"Subject", "subject"}, {"HTML", "html"}};
    for (size_t i = 0; rc == SP_OK && provider && i < sizeof needs / sizeof needs[0]; i++) {
        size_t index;
        if (sp_template_placeholder_find(provider, needs[i][0], &index) &&
            sp_template_placeholder_required(provider, index) && !json_object_get(message, needs[i][1])) {
            snprintf(err, sizeof err, "message.%s: required, the channel's body uses $$%s", needs[i][1], needs[i][0]);
            break;
        }
    }
    sp_channel_free(channel);
    if (err[0]) {
        json_decref(body);
        spd_reply_error(req, 400, "bad_campaign", err);
        return;
    }
    if (rc == SP_ERR_NOT_FOUND) {
        json_decref(body);
        spd_reply_error(req, 400, "bad_campaign", "channel: no such channel");
        return;
    }
    if (rc != SP_OK) {
        json_decref(body);
        spd_fail(req, rc, "campaign.channel");
        return;
    }
    /* the stored spec: what the workers render from */
    json_t *spec = json_object();
    if (spec) {
        json_object_set(spec, "message", json_object_get(body, "message"));
        if (json_object_get(body, "to")) json_object_set(spec, "to", json_object_get(body, "to"));
        json_object_set(spec, "audience", json_object_get(body, "audience"));
    }
    spd_campaign_spec *parsed = NULL;
    rc = spec ? spd_campaign_spec_parse(spec, &t->settings, kind, &parsed, err, sizeof err) : SP_ERR_NO_MEMORY;
    spd_campaign_spec_free(parsed);
    if (rc != SP_OK) {
        json_decref(spec);
        json_decref(body);
        if (rc == SP_ERR_INVALID_ARGUMENT) spd_reply_error(req, 400, "bad_campaign", err);
        else spd_fail(req, rc, "campaign.spec");
        return;
    }
    char *spec_text = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    if (spec_text && strlen(spec_text) > SP_STORE_MAX_CAMPAIGN_SPEC) {
        json_free_t jfree = NULL;
        json_get_alloc_funcs(NULL, &jfree);
        jfree(spec_text);
        json_decref(body);
        spd_reply_error(req, 400, "bad_campaign", "message, to and audience together: at most 256 KiB");
        return;
    }
    bool later = send_at > now;
    /* stored as scheduled (for now when sent now): should starting it here
     * fail, the scheduler starts it instead, and nothing is left stuck */
    sp_store_campaign c = {t->id, id, json_string_value(jchan), spec_text, spec_text ? strlen(spec_text) : 0,
                           SP_STORE_CAMPAIGN_SCHEDULED, (later ? send_at : now) * 1000};
    rc = spec_text ? SP_OK : SP_ERR_NO_MEMORY;
    for (int attempt = 0; rc == SP_OK && attempt < SPD_CAMPAIGN_RETRIES; attempt++) {
        rc = sp_store_campaign_create(store, &c, now);
        if (rc != SP_ERR_CONFLICT) break;
        rc = SP_OK;
    }
    json_free_t jfree = NULL;
    json_get_alloc_funcs(NULL, &jfree);
    if (spec_text) jfree(spec_text);
    json_decref(body);
    if (rc == SP_ERR_EXISTS) {
        spd_reply_error(req, 409, "exists", "a campaign with this id exists");
        return;
    }
    if (rc != SP_OK) {
        spd_fail(req, rc, "campaign.create");
        return;
    }
    if (!later) {
        rc = spd_campaign_start(app, store, t->id, id);
        if (rc != SP_OK) {
            /* still scheduled, and due: the scheduler tries again within a second */
            sp_log_field f[] = {SP_LOG_S("campaign", id), SP_LOG_S("error", sp_error_name(rc))};
            sp_log(SP_LOG_WARN, "campaign.start_deferred", f, 2);
        }
        spd_sender_wake(app);
    }
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    rc = sp_store_campaign_get(store, t->id, id, &row);
    json_t *reply = rc == SP_OK ? campaign_json(&row, NULL) : NULL;
    sp_store_campaign_row_clear(&row);
    if (!reply) {
        spd_fail(req, rc == SP_OK ? SP_ERR_NO_MEMORY : rc, "campaign.reply");
        return;
    }
    sp_log_field f[] = {SP_LOG_S("tenant", t->id), SP_LOG_S("campaign", id), SP_LOG_B("scheduled", later)};
    sp_log(SP_LOG_INFO, "campaign.created", f, 3);
    spd_reply_json(req, 201, reply);
}

/* ---- GET ---- */

static void campaign_get(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    sp_store_outbox_counts counts;
    memset(&counts, 0, sizeof counts);
    if (rc == SP_OK) rc = sp_store_campaign_get(store, t->id, id, &row);
    if (rc == SP_OK) rc = sp_store_outbox_counts_get(store, t->id, id, &counts);
    if (rc == SP_ERR_NOT_FOUND) {
        sp_store_campaign_row_clear(&row);
        spd_reply_error(req, 404, "not_found", "no such campaign");
        return;
    }
    if (rc == SP_OK) settle_state(store, t->id, &row, &counts);
    json_t *reply = rc == SP_OK ? campaign_json(&row, &counts) : NULL;
    sp_store_campaign_row_clear(&row);
    if (!reply) {
        spd_fail(req, rc == SP_OK ? SP_ERR_NO_MEMORY : rc, "campaign.get");
        return;
    }
    spd_reply_json(req, 200, reply);
}

static sp_error list_one(void *arg, const sp_store_campaign_row *row) {
    return spd_page_add(arg, campaign_json(row, NULL), row->id);
}

static void campaign_list(spd_app *app, sp_http_request *req, spd_tenant *t) {
    const char *after;
    size_t limit;
    if (!spd_page_query(req, spd_name_ok, &after, &limit)) return;
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    spd_page c = {.items = json_array()};
    if (!c.items) rc = SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_store_campaign_list(store, t->id, after, limit, list_one, &c);
    if (rc != SP_OK) {
        json_decref(c.items);
        spd_fail(req, rc, "campaign.list");
        return;
    }
    spd_reply_page(req, "campaigns", &c, limit);
}

static void campaign_delete(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    if (rc == SP_OK) rc = sp_store_campaign_delete(store, t->id, id);
    if (rc == SP_OK) spd_reply_empty(req);
    else if (rc == SP_ERR_NOT_FOUND) spd_reply_error(req, 404, "not_found", "no such campaign");
    else if (rc == SP_ERR_ILLEGAL_TRANSITION)
        spd_reply_error(req, 409, "in_progress", "the campaign is sending; cancel it first");
    else spd_fail(req, rc, "campaign.delete");
}

/* ---- actions ---- */

static void campaign_cancel(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    if (rc == SP_OK)
        rc = sp_store_campaign_set_state(store, t->id, id, SP_STORE_CAMPAIGN_CANCELLED, (int64_t)time(NULL), NULL);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such campaign");
    } else if (rc == SP_ERR_ILLEGAL_TRANSITION) {
        spd_reply_error(req, 409, "finished", "the campaign is done");
    } else if (rc != SP_OK) {
        spd_fail(req, rc, "campaign.cancel");
    } else {
        campaign_get(app, req, t, id);
    }
}

static void campaign_replay(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    sp_store *store;
    sp_error rc = spd_store(app, &store);
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    if (rc == SP_OK) rc = sp_store_campaign_get(store, t->id, id, &row);
    sp_store_campaign_row_clear(&row);
    uint64_t n = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == SP_OK)
        rc = sp_store_outbox_replay(store, t->id, id, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &n);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such campaign");
        return;
    }
    if (rc != SP_OK) {
        spd_fail(req, rc, "campaign.replay");
        return;
    }
    if (n > 0) spd_sender_wake(app);
    sp_log_field f[] = {SP_LOG_S("tenant", t->id), SP_LOG_S("campaign", id), SP_LOG_I("messages", (int64_t)n)};
    sp_log(SP_LOG_INFO, "campaign.replayed", f, 3);
    spd_reply_json(req, 200, json_pack("{s:I}", "replayed", (json_int_t)n));
}

/* Waits up to wait_s for the provider's callback about a test send; the
 * callback itself arrives on another server thread. */
static json_t *await_callback(spd_app *app, const char *tenant, const char *message_id, unsigned wait_s) {
    struct timespec start, now, pause = {0, 100 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        sp_store *store;
        sp_store_message_status st;
        memset(&st, 0, sizeof st);
        if (spd_store(app, &store) == SP_OK && sp_store_message_status_get(store, tenant, message_id, &st) == SP_OK &&
            st.callback_at > 0)
            return json_pack("{s:b,s:b}", "received", 1, "encrypted", st.callback_encrypted);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= (time_t)wait_s || atomic_load(&app->shutting_down)) break;
        nanosleep(&pause, NULL);
    }
    return json_string("pending");
}

static void campaign_test(spd_app *app, sp_http_request *req, spd_tenant *t, const char *id) {
    unsigned wait_s = 0;
    const char *wt = sp_http_query(req, "wait");
    if (wt) {
        char *end = NULL;
        unsigned long v = strtoul(wt, &end, 10);
        if (!wt[0] || !end || *end || wt[0] == '-' || wt[0] == '+' || v > 30) {
            spd_reply_error(req, 400, "bad_request", "wait: whole seconds, 0..30");
            return;
        }
        wait_s = (unsigned)v;
    }
    json_t *body = spd_body_object(req, false);
    if (!body) return;
    const json_t *pid = json_object_get(body, "profile_id");
    if (!json_is_string(pid) || json_string_length(pid) == 0 || json_string_length(pid) > SP_STORE_MAX_ID ||
        json_object_size(body) != 1) {
        json_decref(body);
        spd_reply_error(req, 400, "bad_request", "the body must be {\"profile_id\": \"…\"}");
        return;
    }
    spd_send_report rep;
    sp_error rc = spd_send_test(app, t->id, id, json_string_value(pid), &rep);
    json_decref(body);
    if (rc == SP_ERR_NOT_FOUND) {
        spd_reply_error(req, 404, "not_found", "no such campaign (or its channel is gone)");
        return;
    }
    if (rc != SP_OK) {
        spd_fail(req, rc, "campaign.test");
        return;
    }
    bool delivered = rep.result == SP_OK;
    json_t *checks = json_pack("{s:b,s:b,s:b}", "provider_accepted", delivered, "encrypted", rep.encrypted,
                               "plaintext_absent_on_wire", rep.encrypted && rep.plaintext_absent);
    json_t *reply = json_pack("{s:b,s:s,s:o,s:s}", "ok", delivered && rep.encrypted && rep.plaintext_absent,
                              "message_id", rep.message_id, "checks", checks, "result", sp_error_name(rep.result));
    if (!reply) {
        spd_fail(req, SP_ERR_NO_MEMORY, "campaign.test");
        return;
    }
    json_object_set_new(reply, "provider_status", rep.provider_status ? json_integer(rep.provider_status) : json_null());
    json_object_set_new(reply, "key_version", rep.key_version[0] ? json_string(rep.key_version) : json_null());
    json_object_set_new(reply, "missing_placeholder", rep.missing[0] ? json_string(rep.missing) : json_null());
    /* encrypted callbacks are checked when the provider's report arrives:
     * only a message the provider took can have one */
    char url[SP_STORE_MAX_MESSAGE_ID + 16];
    snprintf(url, sizeof url, "/v1/messages/%s", rep.message_id);
    json_object_set_new(reply, "status_url", rep.tracked ? json_string(url) : json_null());
    json_t *callback = json_null();
    if (delivered && rep.tracked && wait_s > 0) callback = await_callback(app, t->id, rep.message_id, wait_s);
    else if (delivered) callback = json_string("pending");
    json_object_set_new(reply, "callback", callback);
    spd_reply_json(req, 200, reply);
}

void spd_campaigns_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *campaign_id,
                         const char *action) {
    spd_tenant *t;
    if (!spd_tenant_or_reply(app, req, auth, &t)) return;
    const char *method = sp_http_method(req);
    if (campaign_id == NULL) {
        if (strcmp(method, "POST") == 0) campaign_create(app, req, t);
        else campaign_list(app, req, t);
        return;
    }
    if (!spd_name_ok(campaign_id)) {
        spd_reply_error(req, 404, "not_found", "no such campaign");
        return;
    }
    if (action == NULL) {
        if (strcmp(method, "GET") == 0) campaign_get(app, req, t, campaign_id);
        else campaign_delete(app, req, t, campaign_id);
        return;
    }
    if (strcmp(action, "test") == 0) campaign_test(app, req, t, campaign_id);
    else if (strcmp(action, "cancel") == 0) campaign_cancel(app, req, t, campaign_id);
    else if (strcmp(action, "replay") == 0) campaign_replay(app, req, t, campaign_id);
    else spd_reply_error(req, 404, "not_found", "no such action (test, cancel, replay)");
}
