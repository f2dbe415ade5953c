/*
 * The send pipeline: workers that drain the outbox to the providers.
 *
 * Every message was written to the outbox (one row, a webhook-id of its
 * own) before anything is sent. A worker claims a batch under a lease,
 * reads the batch's profiles, decrypts the PII its messages need through
 * the tenant's vault in one call per tenant (each decrypt audited, the
 * audit lines of the call appended together; the tenant's KMS consulted for
 * the data key), and for each message, in memory only: renders the
 * campaign's templates, renders the provider body the channel describes, seals it
 * with the channel's active key version, wipes the plaintext, and hands the
 * sealed request to libcurl's multi interface (keep-alive, HTTP/2 where
 * offered). When the answers are in, the batch's outcomes go back to the
 * outbox in a few statements: sent; to be retried after an exponential,
 * jittered delay (never sooner than the provider's Retry-After) on
 * timeouts, 5xx and 429; failed for good on other 4xx or a message that
 * cannot be rendered; dead-lettered (replayable) after max_attempts. A KMS
 * that is down or has revoked access keeps messages queued with that
 * reason, without using up their attempts, until the key is back.
 *
 * Crash safety comes from the lease: a worker killed mid-batch leaves its
 * rows 'sending', and once the lease runs out another worker (or the
 * restarted process) claims them again. The provider may thus see a
 * message twice, always with the same webhook-id, and drops the repeat.
 * On SIGTERM workers stop claiming, finish what is in flight and put the
 * rest back without counting an attempt.
 *
 * Whoever expands a campaign in this process (the API's POST, the
 * scheduler) leases each page to this process's workers as it writes it
 * and hands the rows over in memory: a message is written once before it
 * is sent (the insert), not twice (the insert and a claim's update), which
 * on SQLite is about a third of the outbox's serial write time. The
 * expander writes a page only while the hand-over ring has room for it, so
 * pages follow the sending instead of running ahead of it; when the
 * workers fall behind (or after SPD_HANDOFF_PACE_MS of waiting in one
 * expansion) the remaining pages are queued for claims as before. A handed
 * row is durable and leased like a claimed one: a crash leaves it to
 * whoever claims after the lease; one that waited in the ring through half
 * its lease (a slow provider) is renewed before it is sent, and one whose
 * lease is all but gone is left to the claims.
 *
 * The scheduler thread moves scheduled campaigns whose time has come into
 * the outbox, and prunes remembered callback webhook-ids hourly.
 *
 * Per worker and reused: one HTTP client, one store connection, caches of
 * channels (with their wire keys) and campaign specs, and request slots
 * whose buffers grow to the largest message seen; a steady campaign
 * allocates little per message beyond the store's row and jansson's parse
 * of the profile's attributes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

#define SPD_SEND_PURPOSE "send"
#define SPD_CHANNEL_CACHE 32
#define SPD_CAMPAIGN_CACHE 32
#define SPD_KMS_RETRY_MS 5000
/* After a rotation the provider learns the new key version through the key
 * exchange, which takes a moment after the keyring changed (export, import,
 * its reload). A 401 to a message sealed with a version this worker started
 * using less than SPD_ROTATION_GRACE_MS ago is that moment, not refused
 * credentials: the message waits SPD_ROTATION_RETRY_MS, the attempt not
 * counted, instead of failing. */
#define SPD_ROTATION_GRACE_MS 60000
#define SPD_ROTATION_RETRY_MS 2000
#define SPD_MAX_VALUE_TEXT 64 /* a number or boolean attribute as text */
/* The hand-over ring holds two rounds of work: twice the larger of a page
 * and what the workers take at once, at most SPD_HANDOFF_MAX rows. An
 * expander waits up to SPD_HANDOFF_WAIT_MS for room for one page, and in
 * all up to SPD_HANDOFF_PACE_MS per expansion, so that a POST is not held
 * for the length of a large campaign. */
#define SPD_HANDOFF_MAX 65536
#define SPD_HANDOFF_WAIT_MS 250
#define SPD_HANDOFF_PACE_MS 3000
/* A handed row with less than 1/SPD_HANDOFF_MARGIN of its lease left is
 * not sent (a claim may take it any moment); with less than half left it is
 * renewed first. */
#define SPD_HANDOFF_MARGIN 10

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- growable byte buffers (wiped when they shrink or go) ---- */

typedef struct spd_buf {
    char *data;
    size_t len;
    size_t cap;
} spd_buf;

static bool buf_reserve(spd_buf *b, size_t need) {
    if (b->cap >= need) return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) cap *= 2;
    char *p = malloc(cap);
    if (!p) return false;
    if (b->data) {
        memcpy(p, b->data, b->len);
        sp_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return true;
}

static void buf_wipe(spd_buf *b) {
    if (b->data) sp_wipe(b->data, b->len);
    b->len = 0;
}

static void buf_free(spd_buf *b) {
    if (b->data) {
        sp_wipe(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof *b);
}

/* ---- campaign specs ---- */

typedef enum { SRC_NONE = 0, SRC_PII, SRC_ATTRIBUTE } spd_src_kind;

typedef struct spd_binding {
    spd_src_kind kind;
    size_t pii;       /* index into the tenant's PII fields */
    char *attribute;  /* the attribute name (owned) */
} spd_binding;

enum { TPL_SUBJECT, TPL_BODY, TPL_HTML, TPL_COUNT };

struct spd_campaign_spec {
    sp_template *tpl[TPL_COUNT];        /* subject and html may be NULL */
    spd_binding *bind[TPL_COUNT];       /* per placeholder index */
    size_t to_pii;                      /* the PII field that is the recipient */
    uint32_t pii_mask;                  /* the PII fields a message needs: to_pii and the placeholders' */
    bool uses_attributes;               /* some placeholder is an attribute: parse them per message */
    char to_field[SP_VAULT_MAX_FIELD + 1];
    /* the audience, owned */
    sp_store_audience_kind audience_kind;
    char **ids;
    size_t n_ids;
    char *attribute;
    char *text;
    char *number;
};

void spd_campaign_spec_free(spd_campaign_spec *spec) {
    if (!spec) return;
    for (int i = 0; i < TPL_COUNT; i++) {
        if (spec->bind[i]) {
            size_t n = spec->tpl[i] ? sp_template_placeholder_count(spec->tpl[i]) : 0;
            for (size_t k = 0; k < n; k++) free(spec->bind[i][k].attribute);
            free(spec->bind[i]);
        }
        sp_template_free(spec->tpl[i]);
    }
    for (size_t i = 0; i < spec->n_ids; i++) free(spec->ids[i]);
    free(spec->ids);
    free(spec->attribute);
    free(spec->text);
    free(spec->number);
    free(spec);
}

void spd_campaign_spec_audience(const spd_campaign_spec *spec, sp_store_audience *out) {
    memset(out, 0, sizeof *out);
    out->kind = spec->audience_kind;
    out->ids = (const char *const *)spec->ids;
    out->n_ids = spec->n_ids;
    out->attribute = spec->attribute;
    out->text = spec->text;
    out->number = spec->number;
}

static bool attribute_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

static ssize_t pii_index(const spd_settings *settings, const char *name) {
    for (size_t i = 0; i < settings->n_pii; i++)
        if (strcmp(settings->pii[i].name, name) == 0) return (ssize_t)i;
    return -1;
}

static sp_error compile_one(const json_t *message, const char *key, bool required, const spd_settings *settings,
                            spd_campaign_spec *spec, int slot, char *err, size_t cap) {
    const json_t *v = json_object_get(message, key);
    if (!v) {
        if (required) snprintf(err, cap, "message.%s: required", key);
        return required ? SP_ERR_INVALID_ARGUMENT : SP_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        snprintf(err, cap, "message.%s: must be a non-empty string", key);
        return SP_ERR_INVALID_ARGUMENT;
    }
    sp_template_error terr = {0, NULL};
    sp_error rc = sp_template_compile(json_string_value(v), json_string_length(v), SP_TEMPLATE_CAMPAIGN,
                                      &spec->tpl[slot], &terr);
    if (rc == SP_ERR_TEMPLATE) {
        snprintf(err, cap, "message.%s: %s at byte %zu", key, terr.reason ? terr.reason : "bad template",
                 terr.offset);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (rc == SP_ERR_TOO_LARGE) {
        snprintf(err, cap, "message.%s: longer than %u bytes", key, SP_TEMPLATE_MAX_BYTES);
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (rc != SP_OK) return rc;
    size_t n = sp_template_placeholder_count(spec->tpl[slot]);
    spec->bind[slot] = calloc(n ? n : 1, sizeof(spd_binding));
    if (!spec->bind[slot]) return SP_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        const char *name = sp_template_placeholder_name(spec->tpl[slot], i);
        ssize_t p = pii_index(settings, name);
        if (p >= 0) {
            spec->bind[slot][i].kind = SRC_PII;
            spec->bind[slot][i].pii = (size_t)p;
            spec->pii_mask |= 1u << (size_t)p;
        } else if (attribute_name_ok(name)) {
            spec->bind[slot][i].kind = SRC_ATTRIBUTE;
            spec->uses_attributes = true;
            spec->bind[slot][i].attribute = strdup(name);
            if (!spec->bind[slot][i].attribute) return SP_ERR_NO_MEMORY;
        } else {
            snprintf(err, cap, "message.%s: placeholder %s is neither a PII field nor an attribute name", key, name);
            return SP_ERR_INVALID_ARGUMENT;
        }
    }
    return SP_OK;
}

static sp_error parse_audience(const json_t *aud, spd_campaign_spec *spec, char *err, size_t cap) {
    if (!json_is_object(aud)) {
        snprintf(err, cap, "audience: must be an object: {\"all\":true}, {\"ids\":[…]} or "
                           "{\"attribute\":…,\"equals\":…}");
        return SP_ERR_INVALID_ARGUMENT;
    }
    const json_t *all = json_object_get(aud, "all"), *ids = json_object_get(aud, "ids"),
                 *attr = json_object_get(aud, "attribute"), *eq = json_object_get(aud, "equals");
    int kinds = (all != NULL) + (ids != NULL) + (attr != NULL);
    if (kinds != 1 || json_object_size(aud) != (size_t)(kinds + (eq != NULL))) {
        snprintf(err, cap, "audience: exactly one of all, ids, attribute (with equals)");
        return SP_ERR_INVALID_ARGUMENT;
    }
    if (all) {
        if (!json_is_true(all) || eq) {
            snprintf(err, cap, "audience.all: must be true");
            return SP_ERR_INVALID_ARGUMENT;
        }
        spec->audience_kind = SP_STORE_AUDIENCE_ALL;
        return SP_OK;
    }
    if (ids) {
        size_t n = json_array_size(ids);
        if (!json_is_array(ids) || n == 0 || n > SP_STORE_MAX_AUDIENCE_IDS || eq) {
            snprintf(err, cap, "audience.ids: 1..%u profile ids", SP_STORE_MAX_AUDIENCE_IDS);
            return SP_ERR_INVALID_ARGUMENT;
        }
        spec->ids = calloc(n, sizeof(char *));
        if (!spec->ids) return SP_ERR_NO_MEMORY;
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(ids, i);
            size_t len = json_string_length(v);
            if (!json_is_string(v) || len == 0 || len > SP_STORE_MAX_ID) {
                snprintf(err, cap, "audience.ids[%zu]: a profile id of 1..%u characters", i, SP_STORE_MAX_ID);
                return SP_ERR_INVALID_ARGUMENT;
            }
            spec->ids[i] = strdup(json_string_value(v));
            if (!spec->ids[i]) return SP_ERR_NO_MEMORY;
            spec->n_ids = i + 1;
        }
        spec->audience_kind = SP_STORE_AUDIENCE_IDS;
        return SP_OK;
    }
    if (!json_is_string(attr) || !attribute_name_ok(json_string_value(attr))) {
        snprintf(err, cap, "audience.attribute: an attribute name of 1..64 of A-Z a-z 0-9 _ . -");
        return SP_ERR_INVALID_ARGUMENT;
    }
    spec->attribute = strdup(json_string_value(attr));
    if (!spec->attribute) return SP_ERR_NO_MEMORY;
    if (json_is_string(eq)) {
        spec->text = strdup(json_string_value(eq));
        if (!spec->text) return SP_ERR_NO_MEMORY;
    } else if (json_is_number(eq)) {
        char num[64];
        if (json_is_integer(eq)) snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(eq));
        else snprintf(num, sizeof num, "%.17g", json_real_value(eq));
        spec->number = strdup(num);
        if (!spec->number) return SP_ERR_NO_MEMORY;
    } else {
        snprintf(err, cap, "audience.equals: a string or a number");
        return SP_ERR_INVALID_ARGUMENT;
    }
    spec->audience_kind = SP_STORE_AUDIENCE_ATTRIBUTE;
    return SP_OK;
}

sp_error spd_campaign_spec_parse(const json_t *doc, const spd_settings *settings, sp_channel_kind kind,
                                 spd_campaign_spec **out, char *err, size_t cap) {
    if (!doc || !settings || !out || !err || cap == 0) return SP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    err[0] = '\0';
    if (!json_is_object(doc)) {
        snprintf(err, cap, "the campaign spec must be an object");
        return SP_ERR_INVALID_ARGUMENT;
    }
    spd_campaign_spec *spec = calloc(1, sizeof *spec);
    if (!spec) return SP_ERR_NO_MEMORY;
    sp_error rc = SP_OK;
    const json_t *message = json_object_get(doc, "message");
    if (!json_is_object(message)) {
        snprintf(err, cap, "message: must be an object with body (and subject, html for email)");
        rc = SP_ERR_INVALID_ARGUMENT;
        goto fail;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)message, k, v) {
        (void)v;
        if (strcmp(k, "subject") != 0 && strcmp(k, "body") != 0 && strcmp(k, "html") != 0) {
            snprintf(err, cap, "message: unknown field (subject, body and html are known)");
            rc = SP_ERR_INVALID_ARGUMENT;
            goto fail;
        }
    }
    if (kind == SP_CHANNEL_SMS && (json_object_get(message, "subject") || json_object_get(message, "html"))) {
        snprintf(err, cap, "message: an SMS has a body only (no subject, no html)");
        rc = SP_ERR_INVALID_ARGUMENT;
        goto fail;
    }
    if ((rc = compile_one(message, "body", true, settings, spec, TPL_BODY, err, cap)) != SP_OK ||
        (rc = compile_one(message, "subject", false, settings, spec, TPL_SUBJECT, err, cap)) != SP_OK ||
        (rc = compile_one(message, "html", false, settings, spec, TPL_HTML, err, cap)) != SP_OK)
        goto fail;
    const json_t *to = json_object_get(doc, "to");
    const char *to_name = kind == SP_CHANNEL_EMAIL ? "email" : "phone";
    if (to) {
        if (!json_is_string(to)) {
            snprintf(err, cap, "to: the name of a PII field");
            rc = SP_ERR_INVALID_ARGUMENT;
            goto fail;
        }
        to_name = json_string_value(to);
    }
    ssize_t to_index = pii_index(settings, to_name);
    if (to_index < 0) {
        snprintf(err, cap, "to: %s is not a PII field of this tenant", to_name);
        rc = SP_ERR_INVALID_ARGUMENT;
        goto fail;
    }
    spec->to_pii = (size_t)to_index;
    spec->pii_mask |= 1u << (size_t)to_index;
    snprintf(spec->to_field, sizeof spec->to_field, "%s", to_name);
    if ((rc = parse_audience(json_object_get(doc, "audience"), spec, err, cap)) != SP_OK) goto fail;
    *out = spec;
    return SP_OK;
fail:
    spd_campaign_spec_free(spec);
    return rc;
}

/* ---- the sender ---- */

typedef struct spd_oauth_entry {
    char tenant[SP_STORE_MAX_TENANT + 1];
    char channel[SP_STORE_MAX_NAME + 1];
    uint64_t version;
    sp_oauth2 *oauth2;
    struct spd_oauth_entry *next;
} spd_oauth_entry;

struct spd_sender {
    spd_app *app;
    pthread_t *workers;
    unsigned n_workers;
    pthread_t scheduler;
    bool scheduler_started;
    atomic_bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    uint64_t wake_seq;
    unsigned grace_ms;
    /* token caches shared by the workers: one per channel version, kept
     * until the sender stops (a channel update makes a new one) */
    pthread_mutex_t oauth_lock;
    spd_oauth_entry *oauth;
    /* rows leased to this process by its expanders, oldest first, under
     * `lock`; `room` wakes an expander waiting for the workers */
    pthread_cond_t room;
    char handoff_owner[SP_STORE_MAX_OWNER + 1];
    struct spd_handed *handed;
    size_t handed_head, handed_len, handed_cap;
    size_t handed_reserved; /* room promised to expanders writing a page */
};

/* A row leased by an expander, and when its lease ends. */
typedef struct spd_handed {
    sp_store_outbox_msg row;
    int64_t until;
} spd_handed;

#define SPD_CALLBACK_URL_CAP 800

/* A channel as a worker uses it. */
typedef struct spd_chan {
    char tenant[SP_STORE_MAX_TENANT + 1];
    char id[SP_STORE_MAX_NAME + 1];
    uint64_t version;         /* spd_channel_version of the row it was built from */
    sp_channel *channel;
    sp_wire *wire;            /* when the channel encrypts */
    uint64_t wire_keyring_seen; /* the worker's keyring_epoch the wire was built at */
    uint64_t wire_checked_batch; /* the batch the keyring was last looked at in */
    char wire_active[SP_KEY_VERSION_CHARS + 1]; /* the version it seals with */
    int64_t rotated_ms;       /* when that version replaced an earlier one (0: never seen to) */
    sp_oauth2 *oauth2;        /* shared, owned by the sender */
    char *basic;              /* "Basic …" (a secret) */
    /* this daemon's callback URLs for the channel: what $$DeliveryReportURL
     * and $$InboundURL say when the channel sets no URL of its own */
    char dlr_url[SPD_CALLBACK_URL_CAP], inbound_url[SPD_CALLBACK_URL_CAP];
    uint64_t checked_batch;   /* the batch it was last checked against the store in */
    uint64_t used;
} spd_chan;

typedef struct spd_camp {
    char tenant[SP_STORE_MAX_TENANT + 1];
    char id[SP_STORE_MAX_NAME + 1];
    spd_campaign_spec *spec;
    uint64_t used;
} spd_camp;

/* One message of a claimed batch, once rendered. */
typedef struct spd_msg {
    sp_store_outbox_msg row;
    spd_tenant *tenant;
    spd_chan *chan;
    spd_camp *camp;
    spd_buf text;                 /* to, subject, body, html, one after the other */
    size_t to_len, subject_len, body_len, html_len;
    bool has_subject, has_html;
    bool fresh_key;               /* sealed within SPD_ROTATION_GRACE_MS of a rotation */
    sp_error outcome;             /* SP_OK until something went wrong */
    const char *reason;           /* for last_error: static text */
    unsigned provider_status;
    int64_t retry_after_ms;
    bool done;                    /* an answer came (or it failed before sending) */
} spd_msg;

/* One request in flight: covers msgs[first .. first+count). */
typedef struct spd_req {
    size_t first, count;
    spd_buf plain;                /* the rendered provider body */
    spd_buf body;                 /* what goes on the wire */
    spd_buf url;
    char webhook_id[SP_MESSAGE_ID_MAX + 1];
    sp_sealed sealed;
    spd_buf header_text;          /* "name\0value\0" pairs; headers point into it */
    size_t header_at[SP_SEALED_MAX_HEADERS + SP_CHANNEL_MAX_HEADERS + SP_CHANNEL_MAX_AUTH_HEADERS + 3][2];
    sp_http_client_header headers[SP_SEALED_MAX_HEADERS + SP_CHANNEL_MAX_HEADERS + SP_CHANNEL_MAX_AUTH_HEADERS + 3];
    size_t n_headers;
    bool header_overflow;
} spd_req;

#define SPD_GROUPS 8

typedef enum { SPD_DEFER = 1, SPD_RETRY, SPD_FAIL, SPD_FAIL_DEAD } spd_action;

typedef struct spd_group {
    spd_action action;
    char error[SP_STORE_MAX_ERROR + 1];
    int status;
    uint32_t attempts;     /* retry: the backoff's exponent */
    int64_t retry_after;   /* retry: the provider's wish, -1 for none */
    int64_t next_attempt;  /* defer */
    uint64_t *seqs;        /* cap_msgs of them, in the worker's group_seqs */
    size_t n;
} spd_group;

typedef struct spd_worker {
    spd_sender *sender;
    unsigned index;
    char owner[SP_STORE_MAX_OWNER + 1];
    const char *batch_owner; /* the batch's lease: owner, or the sender's handoff_owner */
    sp_http_client *http;
    spd_chan chans[SPD_CHANNEL_CACHE];
    spd_camp camps[SPD_CAMPAIGN_CACHE];
    uint64_t tick;
    uint64_t batch_no;
    uint64_t keyring_epoch; /* bumps whenever a keyring of this worker reloaded */
    spd_msg *msgs;
    size_t n_msgs, cap_msgs;
    spd_req *reqs;
    size_t n_reqs, cap_reqs;
    spd_group groups[SPD_GROUPS];
    size_t n_groups;
    uint64_t *group_seqs;  /* SPD_GROUPS * cap_msgs */
    /* the batch's profiles and their PII, decrypted together (one audit
     * append): item_of[i * SP_VAULT_MAX_PII_FIELDS + f] is the item of
     * message i's field f, or -1 */
    sp_store_profile_row *rows;    /* cap_msgs */
    sp_vault_decrypt_item *items;
    size_t n_items, cap_items;
    int32_t *item_of;
    uint8_t *plain;                /* the items' outputs; wiped after rendering */
    size_t plain_cap;
    /* per message scratch */
    sp_error pii_error;
    char number[SPD_MAX_VALUE_TEXT];
} spd_worker;

static void chan_clear(spd_chan *c) {
    sp_channel_free(c->channel);
    sp_wire_free(c->wire);
    if (c->basic) {
        sp_wipe(c->basic, strlen(c->basic));
        free(c->basic);
    }
    memset(c, 0, sizeof *c);
}

static void camp_clear(spd_camp *c) {
    spd_campaign_spec_free(c->spec);
    memset(c, 0, sizeof *c);
}

static sp_error oauth_for(spd_sender *s, spd_chan *c) {
    sp_channel_auth auth;
    sp_channel_get_auth(c->channel, &auth);
    pthread_mutex_lock(&s->oauth_lock);
    for (spd_oauth_entry *e = s->oauth; e; e = e->next) {
        if (e->version == c->version && strcmp(e->tenant, c->tenant) == 0 && strcmp(e->channel, c->id) == 0) {
            c->oauth2 = e->oauth2;
            pthread_mutex_unlock(&s->oauth_lock);
            return SP_OK;
        }
    }
    spd_oauth_entry *e = calloc(1, sizeof *e);
    sp_error rc = e ? SP_OK : SP_ERR_NO_MEMORY;
    if (rc == SP_OK) {
        const spd_config *cfg = &s->app->config;
        sp_oauth2_config oc = {
            .token_url = auth.token_url,
            .client_id = auth.client_id,
            .client_secret = auth.client_secret,
            .scope = auth.scope,
            .audience = auth.audience,
            .auth = auth.client_auth == SP_CHANNEL_CLIENT_AUTH_BODY ? SP_OAUTH2_AUTH_BODY : SP_OAUTH2_AUTH_BASIC,
            .ca_file = cfg->sender_ca_file[0] ? cfg->sender_ca_file : NULL,
            .allow_self_signed = cfg->sender_ca_file[0] != '\0',
            .timeout_ms = cfg->sender_timeout_ms,
        };
        rc = sp_oauth2_new(&oc, &e->oauth2);
    }
    if (rc == SP_OK) {
        snprintf(e->tenant, sizeof e->tenant, "%s", c->tenant);
        snprintf(e->channel, sizeof e->channel, "%s", c->id);
        e->version = c->version;
        e->next = s->oauth;
        s->oauth = e;
        c->oauth2 = e->oauth2;
    } else {
        free(e);
    }
    pthread_mutex_unlock(&s->oauth_lock);
    return rc;
}

static sp_error basic_header(const sp_channel_auth *auth, char **out) {
    size_t ul = strlen(auth->username), pl = strlen(auth->password);
    size_t raw_len = ul + 1 + pl;
    char *raw = malloc(raw_len + 1);
    size_t cap = 6 + SP_BASE64_CHARS(raw_len) + 1;
    char *hdr = malloc(cap);
    sp_error rc = raw && hdr ? SP_OK : SP_ERR_NO_MEMORY;
    size_t n = 0;
    if (rc == SP_OK) {
        memcpy(raw, auth->username, ul);
        raw[ul] = ':';
        memcpy(raw + ul + 1, auth->password, pl);
        memcpy(hdr, "Basic ", 6);
        rc = sp_base64_encode((const uint8_t *)raw, raw_len, hdr + 6, cap - 6, &n);
    }
    if (raw) {
        sp_wipe(raw, raw_len);
        free(raw);
    }
    if (rc != SP_OK) {
        if (hdr) {
            sp_wipe(hdr, cap);
            free(hdr);
        }
        return rc;
    }
    hdr[6 + n] = '\0';
    *out = hdr;
    return SP_OK;
}

/* The worker's copy of a channel, checked against the store once per batch
 * (an update or a key rotation is picked up by the next batch). */
static sp_error chan_get(spd_worker *w, sp_store *store, spd_tenant *t, const char *id, spd_chan **out) {
    spd_chan *c = NULL, *victim = &w->chans[0];
    for (size_t i = 0; i < SPD_CHANNEL_CACHE; i++) {
        spd_chan *e = &w->chans[i];
        if (e->channel && strcmp(e->tenant, t->id) == 0 && strcmp(e->id, id) == 0) {
            c = e;
            break;
        }
        if (!e->channel || e->used < victim->used) victim = e;
    }
    if (c && c->checked_batch != w->batch_no) {
        sp_store_channel_row row;
        memset(&row, 0, sizeof row);
        sp_error rc = sp_store_channel_get(store, t->id, id, &row);
        uint64_t version = rc == SP_OK ? spd_channel_version(&row) : 0;
        sp_store_channel_row_clear(&row);
        if (rc != SP_OK || version != c->version) {
            chan_clear(c);
            if (rc != SP_OK) return rc;
            victim = c;
            c = NULL;
        } else {
            c->checked_batch = w->batch_no;
        }
    }
    if (!c) {
        c = victim;
        chan_clear(c);
        sp_error rc = spd_channel_load(w->sender->app, store, t->id, id, &c->channel, &c->version);
        if (rc != SP_OK) {
            chan_clear(c);
            return rc;
        }
        snprintf(c->tenant, sizeof c->tenant, "%s", t->id);
        snprintf(c->id, sizeof c->id, "%s", id);
        c->checked_batch = w->batch_no;
        char base[600];
        spd_public_url(w->sender->app, base, sizeof base);
        snprintf(c->dlr_url, sizeof c->dlr_url, "%s/callbacks/v1/%s/%s/dlr", base, t->id, id);
        snprintf(c->inbound_url, sizeof c->inbound_url, "%s/callbacks/v1/%s/%s/inbound", base, t->id, id);
        sp_channel_auth auth;
        sp_channel_get_auth(c->channel, &auth);
        if (auth.type == SP_CHANNEL_AUTH_OAUTH2) rc = oauth_for(w->sender, c);
        else if (auth.type == SP_CHANNEL_AUTH_BASIC) rc = basic_header(&auth, &c->basic);
        if (rc != SP_OK) {
            chan_clear(c);
            return rc;
        }
    }
    /* the wire: rebuilt when the keyring changed (a rotation). The keyring
     * is looked at once per batch and channel, not per message; a reload
     * seen through any channel makes every channel of this worker rebuild
     * (they may share the tenant's keyring). */
    sp_channel_encryption enc;
    sp_channel_get_encryption(c->channel, &enc);
    if (enc.enabled && c->wire_checked_batch != w->batch_no) {
        bool reloaded = false;
        sp_error rc = sp_keyring_reload_if_changed(t->keyring, &reloaded);
        if (rc != SP_OK) return rc;
        if (reloaded) w->keyring_epoch++;
        c->wire_checked_batch = w->batch_no;
    }
    if (enc.enabled && (!c->wire || c->wire_keyring_seen != w->keyring_epoch)) {
        sp_wire *wire = NULL;
        sp_error rc = sp_wire_new(&wire);
        if (rc == SP_OK) rc = sp_keyring_load_wire(t->keyring, t->id, enc.key, wire);
        if (rc == SP_OK && sp_wire_active_version(wire) == NULL) rc = SP_ERR_UNKNOWN_KEY_VERSION;
        if (rc != SP_OK) {
            sp_wire_free(wire);
            return rc;
        }
        const char *active = sp_wire_active_version(wire);
        if (c->wire_active[0] && strcmp(c->wire_active, active) != 0) c->rotated_ms = now_ms();
        snprintf(c->wire_active, sizeof c->wire_active, "%s", active);
        sp_wire_free(c->wire);
        c->wire = wire;
        c->wire_keyring_seen = w->keyring_epoch;
    }
    c->used = ++w->tick;
    *out = c;
    return SP_OK;
}

/* A stored campaign's spec, compiled. kind 0: the campaign's channel is
 * looked up for it. A spec that no longer parses (written by this daemon,
 * so a newer rule or damage) is logged. */
static sp_error campaign_spec_load(sp_store *store, const spd_tenant *t, const char *id, sp_channel_kind kind,
                                   spd_campaign_spec **out) {
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    sp_error rc = sp_store_campaign_get(store, t->id, id, &row);
    if (rc == SP_OK && kind == 0) {
        sp_store_channel_row ch;
        memset(&ch, 0, sizeof ch);
        rc = sp_store_channel_get(store, t->id, row.channel, &ch);
        kind = ch.kind == SP_STORE_CHANNEL_EMAIL ? SP_CHANNEL_EMAIL : SP_CHANNEL_SMS;
        sp_store_channel_row_clear(&ch);
    }
    json_error_t jerr;
    json_t *doc = rc == SP_OK ? json_loadb(row.spec, row.spec_len, 0, &jerr) : NULL;
    sp_store_campaign_row_clear(&row);
    if (rc != SP_OK) return rc;
    if (!doc) return SP_ERR_BAD_JSON;
    char err[256];
    rc = spd_campaign_spec_parse(doc, &t->settings, kind, out, err, sizeof err);
    json_decref(doc);
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("campaign", id), SP_LOG_S("reason", err)};
        sp_log(SP_LOG_ERROR, "send.campaign_unreadable", f, 2);
    }
    return rc;
}

static sp_error camp_get(spd_worker *w, sp_store *store, spd_tenant *t, const char *id, sp_channel_kind kind,
                         spd_camp **out) {
    spd_camp *victim = &w->camps[0];
    for (size_t i = 0; i < SPD_CAMPAIGN_CACHE; i++) {
        spd_camp *e = &w->camps[i];
        if (e->spec && strcmp(e->tenant, t->id) == 0 && strcmp(e->id, id) == 0) {
            e->used = ++w->tick;
            *out = e;
            return SP_OK;
        }
        if (!e->spec || e->used < victim->used) victim = e;
    }
    camp_clear(victim);
    sp_error rc = campaign_spec_load(store, t, id, kind, &victim->spec);
    if (rc != SP_OK) return rc;
    snprintf(victim->tenant, sizeof victim->tenant, "%s", t->id);
    snprintf(victim->id, sizeof victim->id, "%s", id);
    victim->used = ++w->tick;
    *out = victim;
    return SP_OK;
}

/* ---- rendering one message ---- */

typedef struct lookup_ctx {
    spd_worker *w;
    spd_tenant *t;
    const sp_store_profile_row *row;
    json_t *attrs;
    const spd_binding *bind;
    const int32_t *item_of;   /* the message's items in the batch's decrypts */
} lookup_ctx;

/* PII field i of the profile, from the batch's decrypts (decrypt_batch). */
static bool pii_value(lookup_ctx *c, size_t i, const char **value, size_t *len) {
    spd_worker *w = c->w;
    int32_t k = c->item_of[i];
    if (k < 0) return false;
    const sp_vault_decrypt_item *it = &w->items[k];
    if (it->rc != SP_OK) {
        w->pii_error = it->rc;
        return false;
    }
    *value = (const char *)it->out;
    *len = it->out_len;
    return true;
}

static bool lookup(void *arg, size_t index, const char **value, size_t *len) {
    lookup_ctx *c = arg;
    const spd_binding *b = &c->bind[index];
    if (b->kind == SRC_PII) return pii_value(c, b->pii, value, len);
    if (b->kind != SRC_ATTRIBUTE || !c->attrs) return false;
    const json_t *v = json_object_get(c->attrs, b->attribute);
    if (json_is_string(v)) {
        *value = json_string_value(v);
        *len = json_string_length(v);
        return true;
    }
    int n = -1;
    if (json_is_integer(v)) n = snprintf(c->w->number, sizeof c->w->number, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) n = snprintf(c->w->number, sizeof c->w->number, "%.17g", json_real_value(v));
    else if (json_is_boolean(v)) n = snprintf(c->w->number, sizeof c->w->number, "%s", json_is_true(v) ? "true" : "false");
    if (n < 0 || (size_t)n >= sizeof c->w->number) return false;
    *value = c->w->number;
    *len = (size_t)n;
    return true;
}

/* Appends the rendering of template slot to m->text; *len its length. */
static sp_error render_into(lookup_ctx *c, const spd_campaign_spec *spec, int slot, spd_msg *m, size_t *len,
                            const char **missing) {
    const sp_template *tpl = spec->tpl[slot];
    c->bind = spec->bind[slot];
    size_t need = 0, missing_index = 0;
    for (int round = 0; round < 2; round++) {
        size_t room = m->text.cap - m->text.len;
        sp_error rc = sp_template_render(tpl, lookup, c, SP_ESCAPE_NONE, m->text.data + m->text.len, room, &need,
                                         &missing_index);
        if (rc == SP_OK) {
            m->text.len += need;
            *len = need;
            return SP_OK;
        }
        if (rc == SP_ERR_TEMPLATE) {
            if (c->w->pii_error != SP_OK) return c->w->pii_error;
            *missing = sp_template_placeholder_name(tpl, missing_index);
            return rc;
        }
        if (rc != SP_ERR_BUFFER_TOO_SMALL || !buf_reserve(&m->text, m->text.len + need)) return rc;
    }
    return SP_ERR_BUFFER_TOO_SMALL;
}

/* Everything a message needs from its profile's row, in m->text:
 * recipient, subject, body, html, the PII from the batch's decrypts
 * (item_of: the message's items). */
static sp_error render_row(spd_worker *w, spd_tenant *t, spd_msg *m, const sp_store_profile_row *row,
                           const int32_t *item_of, const char **missing) {
    const spd_campaign_spec *spec = m->camp->spec;
    sp_error rc = SP_OK;
    json_t *attrs = NULL;
    w->pii_error = SP_OK;
    if (rc == SP_OK && spec->uses_attributes) {
        json_error_t jerr;
        attrs = json_loadb(row->attributes, row->attributes_len, 0, &jerr);
    }
    lookup_ctx c = {w, t, row, attrs, NULL, item_of};
    buf_wipe(&m->text);
    if (rc == SP_OK) {
        const char *to = NULL;
        size_t to_len = 0;
        if (!pii_value(&c, spec->to_pii, &to, &to_len)) {
            rc = w->pii_error != SP_OK ? w->pii_error : SP_ERR_NOT_FOUND;
            if (rc == SP_ERR_NOT_FOUND) *missing = spec->to_field;
        } else if (!buf_reserve(&m->text, to_len + 256)) {
            rc = SP_ERR_NO_MEMORY;
        } else {
            memcpy(m->text.data, to, to_len);
            m->text.len = to_len;
            m->to_len = to_len;
        }
    }
    m->has_subject = spec->tpl[TPL_SUBJECT] != NULL;
    m->has_html = spec->tpl[TPL_HTML] != NULL;
    m->subject_len = m->html_len = 0;
    if (rc == SP_OK && m->has_subject) rc = render_into(&c, spec, TPL_SUBJECT, m, &m->subject_len, missing);
    if (rc == SP_OK) rc = render_into(&c, spec, TPL_BODY, m, &m->body_len, missing);
    if (rc == SP_OK && m->has_html) rc = render_into(&c, spec, TPL_HTML, m, &m->html_len, missing);
    json_decref(attrs);
    if (rc != SP_OK) buf_wipe(&m->text);
    return rc;
}

static sp_channel_value val(const char *p, size_t n) {
    sp_channel_value v = {p, n};
    return v;
}

/* The channel message of m: pointers into m->text. */
static void channel_message(const spd_msg *m, sp_channel_message *cm) {
    memset(cm, 0, sizeof *cm);
    const char *p = m->text.data;
    cm->to = val(p, m->to_len);
    p += m->to_len;
    if (m->has_subject) {
        cm->subject = val(p, m->subject_len);
        p += m->subject_len;
    }
    cm->body = val(p, m->body_len);
    cm->plaintext = cm->body;
    p += m->body_len;
    if (m->has_html) cm->html = val(p, m->html_len);
    cm->message_id = val(m->row.message_id, strlen(m->row.message_id));
    cm->campaign_id = val(m->row.campaign, strlen(m->row.campaign));
    cm->delivery_report_url = val(m->chan->dlr_url, strlen(m->chan->dlr_url));
    cm->inbound_url = val(m->chan->inbound_url, strlen(m->chan->inbound_url));
}

/* ---- requests ---- */

static void req_header(spd_req *r, const char *name, size_t name_len, const char *value, size_t value_len) {
    size_t i = r->n_headers;
    if (i >= sizeof r->headers / sizeof r->headers[0] ||
        !buf_reserve(&r->header_text, r->header_text.len + name_len + value_len + 2)) {
        r->header_overflow = true;
        return;
    }
    char *p = r->header_text.data + r->header_text.len;
    r->header_at[i][0] = r->header_text.len;
    memcpy(p, name, name_len);
    p[name_len] = '\0';
    r->header_at[i][1] = r->header_text.len + name_len + 1;
    memcpy(p + name_len + 1, value, value_len);
    p[name_len + 1 + value_len] = '\0';
    r->header_text.len += name_len + value_len + 2;
    r->n_headers++;
}

/* Once every header is in (the text may have moved while it grew). */
static void req_headers_fix(spd_req *r) {
    for (size_t i = 0; i < r->n_headers; i++) {
        r->headers[i].name = r->header_text.data + r->header_at[i][0];
        r->headers[i].value = r->header_text.data + r->header_at[i][1];
    }
}

/* A batch's webhook-id: a hash of its message ids, so the same batch sent
 * again carries the same id and a differently made-up one does not. */
static sp_error batch_webhook_id(const spd_msg *msgs, size_t n, char out[SP_MESSAGE_ID_MAX + 1]) {
    if (n == 1) {
        snprintf(out, SP_MESSAGE_ID_MAX + 1, "%s", msgs[0].row.message_id);
        return SP_OK;
    }
    static const uint8_t label[] = "sealpost batch webhook-id";
    uint8_t acc[32] = {0}, mac[32];
    for (size_t i = 0; i < n; i++) {
        const char *id = msgs[i].row.message_id;
        sp_error rc = sp_hmac_sha256(acc, sizeof acc, (const uint8_t *)id, strlen(id), mac);
        if (rc != SP_OK) return rc;
        memcpy(acc, mac, sizeof acc);
    }
    sp_error rc = sp_hmac_sha256(label, sizeof label - 1, acc, sizeof acc, mac);
    if (rc != SP_OK) return rc;
    memcpy(out, "msgb_", 5);
    size_t len = 0;
    rc = sp_base64url_encode(mac, 18, out + 5, SP_MESSAGE_ID_MAX + 1 - 5, &len);
    if (rc != SP_OK) return rc;
    out[5 + len] = '\0';
    return SP_OK;
}

/* Renders, seals and fills r for msgs[first .. first+count). */
static sp_error build_request(spd_req *r, spd_msg *msgs, size_t first, size_t count) {
    spd_chan *c = msgs[first].chan;
    bool fresh = c->rotated_ms != 0 && now_ms() - c->rotated_ms < SPD_ROTATION_GRACE_MS;
    for (size_t i = 0; i < count; i++) msgs[first + i].fresh_key = fresh;
    sp_channel_message cms[SP_CHANNEL_MAX_BATCH];
    for (size_t i = 0; i < count; i++) channel_message(&msgs[first + i], &cms[i]);
    r->first = first;
    r->count = count;
    r->n_headers = 0;
    r->header_overflow = false;
    buf_wipe(&r->header_text);
    buf_wipe(&r->plain);
    size_t need = 0;
    sp_error rc = SP_ERR_BUFFER_TOO_SMALL;
    for (int round = 0; round < 2 && rc == SP_ERR_BUFFER_TOO_SMALL; round++) {
        rc = sp_channel_render(c->channel, cms, count, r->plain.data, r->plain.cap, &need);
        if (rc == SP_ERR_BUFFER_TOO_SMALL && !buf_reserve(&r->plain, need)) return SP_ERR_NO_MEMORY;
    }
    if (rc != SP_OK) return rc;
    r->plain.len = need;
    rc = batch_webhook_id(msgs + first, count, r->webhook_id);
    if (rc != SP_OK) return rc;
    sp_channel_encryption enc;
    sp_channel_get_encryption(c->channel, &enc);
    bool get = sp_channel_get_method(c->channel) == SP_CHANNEL_GET;
    const char *endpoint = sp_channel_endpoint(c->channel);
    size_t ep_len = strlen(endpoint);
    buf_wipe(&r->url);
    buf_wipe(&r->body);
    if (enc.enabled) {
        size_t bound = sp_seal_body_bound(enc.profile, enc.alg, r->plain.len);
        if (bound == 0) return SP_ERR_TOO_LARGE;
        if (!buf_reserve(&r->body, bound)) return SP_ERR_NO_MEMORY;
        sp_seal_params params = {enc.profile, enc.alg, NULL, r->webhook_id, 0};
        rc = sp_seal(c->wire, &params, (const uint8_t *)r->plain.data, r->plain.len, (uint8_t *)r->body.data,
                     r->body.cap, &r->sealed);
        if (rc != SP_OK) return rc;
        r->body.len = r->sealed.body_len;
        for (size_t i = 0; i < r->sealed.n_headers; i++)
            req_header(r, r->sealed.headers[i].name, r->sealed.headers[i].name_len, r->sealed.headers[i].value,
                       r->sealed.headers[i].value_len);
        /* a sealed message always travels as a POST body */
        if (!buf_reserve(&r->url, ep_len + 1)) return SP_ERR_NO_MEMORY;
        memcpy(r->url.data, endpoint, ep_len + 1);
    } else if (get) {
        if (!buf_reserve(&r->url, ep_len + 2 + r->plain.len)) return SP_ERR_NO_MEMORY;
        memcpy(r->url.data, endpoint, ep_len);
        r->url.data[ep_len] = strchr(endpoint, '?') ? '&' : '?';
        memcpy(r->url.data + ep_len + 1, r->plain.data, r->plain.len);
        r->url.data[ep_len + 1 + r->plain.len] = '\0';
        static const char id_header[] = "webhook-id";
        req_header(r, id_header, sizeof id_header - 1, r->webhook_id, strlen(r->webhook_id));
    } else {
        if (!buf_reserve(&r->body, r->plain.len)) return SP_ERR_NO_MEMORY;
        memcpy(r->body.data, r->plain.data, r->plain.len);
        r->body.len = r->plain.len;
        const char *ct = sp_channel_content_type(c->channel);
        static const char ct_name[] = "Content-Type", id_header[] = "webhook-id";
        if (ct) req_header(r, ct_name, sizeof ct_name - 1, ct, strlen(ct));
        req_header(r, id_header, sizeof id_header - 1, r->webhook_id, strlen(r->webhook_id));
        if (!buf_reserve(&r->url, ep_len + 1)) return SP_ERR_NO_MEMORY;
        memcpy(r->url.data, endpoint, ep_len + 1);
    }
    /* the plaintext body is no longer needed once sealed */
    if (enc.enabled) buf_wipe(&r->plain);
    for (size_t i = 0; i < sp_channel_header_count(c->channel); i++) {
        sp_header h;
        if (sp_channel_header(c->channel, i, &h) == SP_OK) req_header(r, h.name, h.name_len, h.value, h.value_len);
    }
    if (c->basic) {
        static const char auth_name[] = "Authorization";
        req_header(r, auth_name, sizeof auth_name - 1, c->basic, strlen(c->basic));
    }
    for (size_t i = 0; i < sp_channel_auth_header_count(c->channel); i++) {
        sp_header h;
        if (sp_channel_auth_header(c->channel, i, &h) == SP_OK) req_header(r, h.name, h.name_len, h.value, h.value_len);
    }
    if (r->header_overflow) return SP_ERR_NO_MEMORY;
    req_headers_fix(r);
    return SP_OK;
}

/* The request r describes, through channel c: a sealed message always
 * travels as a POST body; only a plain GET channel puts it in the URL. */
static sp_http_client_request http_request_of(const spd_req *r, const spd_chan *c) {
    sp_http_client_request hr = {
        .method = SP_HTTP_CLIENT_POST,
        .url = r->url.data,
        .headers = r->headers,
        .n_headers = r->n_headers,
        .body = r->body.data,
        .body_len = r->body.len,
        .oauth2 = c->oauth2,
    };
    sp_channel_encryption enc;
    sp_channel_get_encryption(c->channel, &enc);
    if (!enc.enabled && sp_channel_get_method(c->channel) == SP_CHANNEL_GET) {
        hr.method = SP_HTTP_CLIENT_GET;
        hr.body = NULL;
        hr.body_len = 0;
    }
    return hr;
}

/* A worker's HTTP client (a test send's too). */
static sp_error new_client(const spd_config *cfg, unsigned in_flight, sp_http_client **out) {
    sp_http_client_config hc = sp_http_client_config_default();
    hc.max_in_flight = in_flight;
    if (hc.max_connections_per_host > hc.max_in_flight) hc.max_connections_per_host = hc.max_in_flight;
    hc.timeout_ms = cfg->sender_timeout_ms ? cfg->sender_timeout_ms : 15000;
    if (hc.connect_timeout_ms > hc.timeout_ms) hc.connect_timeout_ms = hc.timeout_ms;
    hc.ca_file = cfg->sender_ca_file[0] ? cfg->sender_ca_file : NULL;
    hc.allow_self_signed = hc.ca_file != NULL;
    return sp_http_client_new(&hc, out);
}

static void free_oauth(spd_oauth_entry *e) {
    while (e) {
        spd_oauth_entry *next = e->next;
        sp_oauth2_free(e->oauth2);
        free(e);
        e = next;
    }
}

static bool retryable(sp_error rc) {
    return rc == SP_ERR_PROVIDER_UNAVAILABLE || rc == SP_ERR_NETWORK || rc == SP_ERR_NO_MEMORY;
}

static bool kms_trouble(sp_error rc) {
    return sp_error_is_kms(rc);
}

static void on_done(void *ctx, void *user, const sp_http_client_response *resp) {
    spd_worker *w = ctx;
    spd_req *r = user;
    for (size_t i = 0; i < r->count; i++) {
        spd_msg *m = &w->msgs[r->first + i];
        m->done = true;
        m->outcome = resp->result;
        m->provider_status = resp->status;
        m->retry_after_ms = resp->retry_after_ms;
        m->reason = NULL;
    }
    buf_wipe(&r->plain);
    buf_wipe(&r->body);
    buf_wipe(&r->header_text); /* it holds the Basic credential */
}

/* ---- outcomes back to the outbox ---- */

static void outcome_error(const spd_msg *m, char *out, size_t cap) {
    if (m->provider_status)
        snprintf(out, cap, "%s %u", sp_error_name(m->outcome), m->provider_status);
    else if (m->reason)
        snprintf(out, cap, "%s %s", sp_error_name(m->outcome), m->reason);
    else
        snprintf(out, cap, "%s", sp_error_name(m->outcome));
}

/* Outcomes other than delivered, gathered per (action, error, status,
 * attempt, Retry-After) so that each group is one statement. */
static void group_run(spd_worker *w, sp_store *store, spd_group *g, int64_t now) {
    const spd_config *cfg = &w->sender->app->config;
    uint64_t changed = 0;
    sp_error rc = SP_OK;
    switch (g->action) {
    case SPD_DEFER:
        rc = sp_store_outbox_defer(store, w->batch_owner, g->seqs, g->n, g->next_attempt, g->error, now, &changed);
        break;
    case SPD_RETRY: {
        /* one jittered delay per group: a batch that failed together does
         * not come back together with the next batches' */
        uint32_t rnd = 0;
        if (sp_random((uint8_t *)&rnd, sizeof rnd) != SP_OK) rnd = 0x7fffffffu;
        uint64_t delay = sp_http_backoff_ms(g->attempts, cfg->sender_backoff_base_ms, cfg->sender_backoff_max_ms,
                                            g->retry_after, rnd);
        rc = sp_store_outbox_retry(store, w->batch_owner, g->seqs, g->n, now + (int64_t)delay, g->error, g->status,
                                   cfg->sender_max_attempts, now, &changed);
        break;
    }
    case SPD_FAIL:
    case SPD_FAIL_DEAD:
        rc = sp_store_outbox_fail(store, w->batch_owner, g->seqs, g->n,
                                  g->action == SPD_FAIL_DEAD ? SP_STORE_OUTBOX_DEAD : SP_STORE_OUTBOX_FAILED, g->error,
                                  g->status, now, &changed);
        break;
    }
    if (rc != SP_OK) {
        /* the lease runs out and they are claimed again */
        sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_I("messages", (int64_t)g->n)};
        sp_log(SP_LOG_ERROR, "send.record_failed", f, 2);
    }
    g->n = 0;
}

static bool group_same(const spd_group *a, const spd_group *b) {
    return a->action == b->action && a->status == b->status && a->attempts == b->attempts &&
           a->retry_after == b->retry_after && a->next_attempt == b->next_attempt && strcmp(a->error, b->error) == 0;
}

static void groups_flush(spd_worker *w, sp_store *store, int64_t now) {
    for (size_t i = 0; i < w->n_groups; i++)
        if (w->groups[i].n > 0) group_run(w, store, &w->groups[i], now);
    w->n_groups = 0;
}

static void group_add(spd_worker *w, sp_store *store, const spd_group *key, uint64_t seq, int64_t now) {
    spd_group *g = NULL;
    for (size_t i = 0; i < w->n_groups && !g; i++)
        if (group_same(&w->groups[i], key)) g = &w->groups[i];
    if (!g) {
        if (w->n_groups == SPD_GROUPS) groups_flush(w, store, now);
        g = &w->groups[w->n_groups];
        uint64_t *seqs = w->group_seqs + w->n_groups * w->cap_msgs;
        *g = *key;
        g->seqs = seqs;
        g->n = 0;
        w->n_groups++;
    }
    g->seqs[g->n++] = seq;
}

static void record_outcomes(spd_worker *w, sp_store *store) {
    spd_app *app = w->sender->app;
    const spd_config *cfg = &app->config;
    int64_t now = now_ms();
    uint64_t seqs[SP_STORE_MAX_BATCH];
    size_t n = 0;
    /* delivered: one statement */
    for (size_t i = 0; i < w->n_msgs; i++)
        if (w->msgs[i].done && w->msgs[i].outcome == SP_OK) seqs[n++] = w->msgs[i].row.seq;
    uint64_t changed = 0;
    if (n > 0) {
        sp_error rc = sp_store_outbox_done(store, w->batch_owner, seqs, n, now, &changed);
        if (rc != SP_OK) {
            /* the lease runs out and they go again: the provider drops the repeats */
            sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_I("messages", (int64_t)n)};
            sp_log(SP_LOG_ERROR, "send.record_failed", f, 2);
        } else if (app->messages_sent) {
            sp_metric_add(app->messages_sent, changed);
        }
    }
    /* the rest, grouped: a provider outage fails a whole batch the same
     * way, and each group is one statement */
    for (size_t i = 0; i < w->n_msgs; i++) {
        spd_msg *m = &w->msgs[i];
        if (m->outcome == SP_OK && m->done) continue;
        spd_group g;
        memset(&g, 0, sizeof g);
        outcome_error(m, g.error, sizeof g.error);
        g.status = (int)m->provider_status;
        if (!m->done) {
            /* never sent: back in the queue, the attempt not counted */
            g.action = SPD_DEFER;
            snprintf(g.error, sizeof g.error, "SP_ERR_UNAVAILABLE not sent");
            g.next_attempt = now;
        } else if (kms_trouble(m->outcome)) {
            /* nothing reached the provider: queued again, the attempt not counted */
            g.action = SPD_DEFER;
            g.next_attempt = now + SPD_KMS_RETRY_MS;
            if (app->messages_deferred) sp_metric_add(app->messages_deferred, 1);
        } else if (m->outcome == SP_ERR_PROVIDER_REJECTED && m->provider_status == 401 && m->fresh_key) {
            /* the provider does not know the new key version yet */
            g.action = SPD_DEFER;
            snprintf(g.error, sizeof g.error, "SP_ERR_PROVIDER_REJECTED 401 key version new to the provider");
            g.next_attempt = now + SPD_ROTATION_RETRY_MS;
            if (app->messages_deferred) sp_metric_add(app->messages_deferred, 1);
        } else if (retryable(m->outcome)) {
            g.action = SPD_RETRY;
            g.attempts = m->row.attempts;
            g.retry_after = m->retry_after_ms;
            if (m->row.attempts >= cfg->sender_max_attempts) {
                if (app->messages_dead) sp_metric_add(app->messages_dead, 1);
            } else if (app->messages_retried) {
                sp_metric_add(app->messages_retried, 1);
            }
        } else {
            /* what an operator can fix (a channel gone, provider credentials
             * refused) is dead-lettered, to be replayed; the rest is final */
            bool fixable = m->outcome == SP_ERR_AUTH ||
                           (m->outcome == SP_ERR_NOT_FOUND && m->reason && strcmp(m->reason, "channel") == 0);
            g.action = fixable ? SPD_FAIL_DEAD : SPD_FAIL;
            if (app->messages_failed) sp_metric_add(app->messages_failed, 1);
        }
        group_add(w, store, &g, m->row.seq, now);
    }
    groups_flush(w, store, now);
}

/* ---- one batch ---- */

static sp_error collect(void *arg, const sp_store_outbox_msg *row) {
    spd_worker *w = arg;
    if (w->n_msgs >= w->cap_msgs) return SP_ERR_TOO_LARGE;
    spd_msg *m = &w->msgs[w->n_msgs++];
    m->row = *row;
    m->chan = NULL;
    m->camp = NULL;
    m->outcome = SP_OK;
    m->reason = NULL;
    m->provider_status = 0;
    m->retry_after_ms = -1;
    m->done = false;
    return SP_OK;
}

static void fail_msg(spd_msg *m, sp_error rc, const char *reason) {
    m->done = true;
    m->outcome = rc;
    m->reason = reason;
}

/* A message that failed before it could be rendered, or while. */
static void fail_render(spd_msg *m, sp_error rc, const char *missing) {
    if (missing) {
        sp_log_field f[] = {SP_LOG_S("message_id", m->row.message_id), SP_LOG_S("placeholder", missing)};
        sp_log(SP_LOG_WARN, "send.missing_value", f, 2);
    }
    fail_msg(m, rc, rc == SP_ERR_NOT_FOUND ? (missing ? "no_recipient" : "profile") : "render");
}

static bool batch_room(spd_worker *w, size_t items, size_t plain) {
    if (!w->rows && !(w->rows = calloc(w->cap_msgs, sizeof *w->rows))) return false;
    if (!w->item_of && !(w->item_of = malloc(w->cap_msgs * SP_VAULT_MAX_PII_FIELDS * sizeof *w->item_of)))
        return false;
    if (w->cap_items < items) {
        sp_vault_decrypt_item *n = realloc(w->items, items * sizeof *n);
        if (!n) return false;
        w->items = n;
        w->cap_items = items;
    }
    if (w->plain_cap < plain) {
        uint8_t *n = malloc(plain);
        if (!n) return false;
        if (w->plain) {
            sp_wipe(w->plain, w->plain_cap);
            free(w->plain);
        }
        w->plain = n;
        w->plain_cap = plain;
    }
    return true;
}

/* The PII every ready message of the batch needs, decrypted in one call
 * per tenant (and per SP_VAULT_MAX_BATCH items): one audit append for all
 * of them instead of one per value. Items of consecutive messages of one
 * tenant go together; a failed call leaves its items failed, and their
 * messages fail at rendering as a single decrypt would have. */
static void decrypt_batch(spd_worker *w) {
    spd_app *app = w->sender->app;
    size_t items = 0, plain = 0;
    for (size_t i = 0; i < w->n_msgs; i++) {
        const spd_msg *m = &w->msgs[i];
        if (m->done) continue;
        for (size_t k = 0; k < w->rows[i].n_pii; k++) {
            items++;
            plain += w->rows[i].pii[k].blob_len;
        }
    }
    if (!batch_room(w, items ? items : 1, plain ? plain : 1)) {
        for (size_t i = 0; i < w->n_msgs; i++)
            if (!w->msgs[i].done) fail_msg(&w->msgs[i], SP_ERR_NO_MEMORY, "render");
        return;
    }
    w->n_items = 0;
    size_t at = 0, run_first = 0;
    spd_tenant *run_tenant = NULL;
    for (size_t i = 0; i <= w->n_msgs; i++) {
        spd_msg *m = i < w->n_msgs ? &w->msgs[i] : NULL;
        int32_t *of = m ? &w->item_of[i * SP_VAULT_MAX_PII_FIELDS] : NULL;
        if (of)
            for (size_t f = 0; f < SP_VAULT_MAX_PII_FIELDS; f++) of[f] = -1;
        if (m && m->done) continue;
        uint32_t mask = m ? m->camp->spec->pii_mask : 0;
        size_t wanted = 0;
        for (size_t f = 0; f < SP_VAULT_MAX_PII_FIELDS; f++) wanted += (mask >> f) & 1u;
        /* the run so far goes when the tenant changes, the batch is over,
         * or this message's items would not fit */
        if (run_tenant && (!m || m->tenant != run_tenant || w->n_items - run_first + wanted > SP_VAULT_MAX_BATCH)) {
            size_t n = w->n_items - run_first;
            if (n > 0) {
                /* each item's rc says how it went: a failed call set them
                 * all, and their messages fail at rendering */
                sp_error rc = sp_vault_decrypt_many(run_tenant->vault, w->items + run_first, n, SPD_SEND_PURPOSE, 0);
                if (rc != SP_OK) {
                    sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_I("values", (int64_t)n)};
                    sp_log(SP_LOG_WARN, "send.decrypt_failed", f, 2);
                }
                if (app->vault_decrypts) sp_metric_add(app->vault_decrypts, n);
            }
            run_first = w->n_items;
            run_tenant = NULL;
        }
        if (!m) break;
        run_tenant = m->tenant;
        const sp_store_profile_row *row = &w->rows[i];
        for (size_t f = 0; f < m->tenant->settings.n_pii && f < SP_VAULT_MAX_PII_FIELDS; f++) {
            if (!(mask & (1u << f))) continue;
            const char *field = m->tenant->settings.pii[f].name;
            for (size_t k = 0; k < row->n_pii; k++) {
                if (strcmp(row->pii[k].field, field) != 0) continue;
                of[f] = (int32_t)w->n_items;
                w->items[w->n_items++] = (sp_vault_decrypt_item){
                    .profile_id = row->id,
                    .field = field,
                    .blob = row->pii[k].blob,
                    .len = row->pii[k].blob_len,
                    .out = w->plain + at,
                    .cap = row->pii[k].blob_len,
                    .rc = SP_ERR_UNAVAILABLE,
                };
                at += row->pii[k].blob_len;
                break;
            }
        }
    }
}

/* The plaintexts are in the messages' texts now (wiped once sent), and
 * the rows are done with. */
static void batch_clear(spd_worker *w) {
    size_t used = 0;
    for (size_t k = 0; k < w->n_items; k++) used += w->items[k].cap;
    if (w->plain) sp_wipe(w->plain, used);
    w->n_items = 0;
    for (size_t i = 0; i < w->n_msgs; i++) sp_store_profile_row_clear(&w->rows[i]);
}

/* One message on its own (a test send, w->msgs[0]), through the steps of a
 * batch: its profile read, its PII decrypted, then rendered. */
static sp_error render_message(spd_worker *w, sp_store *store, spd_tenant *t, spd_msg *m, const char **missing) {
    if (!batch_room(w, 1, 1)) return SP_ERR_NO_MEMORY;
    m->tenant = t;
    sp_error rc = sp_store_profile_get(store, t->id, m->row.profile_id, &w->rows[0]);
    if (rc == SP_OK) {
        decrypt_batch(w);
        rc = m->done ? m->outcome : render_row(w, t, m, &w->rows[0], w->item_of, missing);
    }
    batch_clear(w);
    return rc;
}

/* The profiles of the batch's live messages, one statement per run of
 * consecutive messages of one tenant (a claim hands out a campaign's
 * messages in a row, so usually one for the batch: on PostgreSQL one
 * round trip instead of two per message). A run whose read fails is read
 * again a message at a time, so that one message's trouble is never
 * another's. */
static void read_profiles(spd_worker *w, sp_store *store) {
    const char *ids[SP_STORE_MAX_BATCH];
    bool found[SP_STORE_MAX_BATCH];
    size_t i = 0;
    while (i < w->n_msgs) {
        if (w->msgs[i].done) {
            i++;
            continue;
        }
        size_t first = i;
        const char *tenant = w->msgs[first].tenant->id;
        while (i < w->n_msgs && i - first < SP_STORE_MAX_BATCH && !w->msgs[i].done &&
               strcmp(w->msgs[i].tenant->id, tenant) == 0) {
            ids[i - first] = w->msgs[i].row.profile_id;
            i++;
        }
        size_t n = i - first;
        if (sp_store_profile_get_many(store, tenant, ids, n, &w->rows[first], found) == SP_OK) {
            for (size_t k = 0; k < n; k++)
                if (!found[k]) fail_render(&w->msgs[first + k], SP_ERR_NOT_FOUND, NULL);
            continue;
        }
        /* a failed statement spoils the snapshot it ran in (PostgreSQL
         * refuses every later one): the rest read on their own */
        sp_store_rollback(store);
        for (size_t k = first; k < i; k++) {
            sp_error rc = sp_store_profile_get(store, tenant, w->msgs[k].row.profile_id, &w->rows[k]);
            if (rc != SP_OK) fail_render(&w->msgs[k], rc, NULL);
        }
    }
}

/* Prepares every message of the batch: its tenant, channel, campaign and
 * profile, then the PII of all of them (decrypt_batch), then renders each. */
static void prepare_batch(spd_worker *w, sp_store *store) {
    spd_app *app = w->sender->app;
    if (!batch_room(w, 1, 1)) {
        for (size_t i = 0; i < w->n_msgs; i++) fail_msg(&w->msgs[i], SP_ERR_NO_MEMORY, "render");
        return;
    }
    /* A tenant whose KMS failed once in this batch is not asked again for
     * the rest of it: each try could wait out the KMS timeout, and the
     * batch would outlive its lease. Its messages wait for the next round. */
    char kms_down[SP_STORE_MAX_TENANT + 1] = "";
    sp_error kms_error = SP_OK;
    for (size_t i = 0; i < w->n_msgs; i++) {
        spd_msg *m = &w->msgs[i];
        w->rows[i].n_pii = 0;
        w->rows[i].attributes = NULL;
        spd_tenant *t = NULL;
        sp_error rc = spd_tenant_get(app, m->row.tenant, &t);
        if (rc != SP_OK) {
            fail_msg(m, rc, rc == SP_ERR_NOT_FOUND ? "tenant" : "kms");
            continue;
        }
        m->tenant = t;
        rc = chan_get(w, store, t, m->row.channel, &m->chan);
        if (rc != SP_OK) {
            fail_msg(m, rc, rc == SP_ERR_NOT_FOUND ? "channel" : "channel_keys");
            continue;
        }
        if (m->row.campaign[0] == '\0') {
            fail_msg(m, SP_ERR_NOT_FOUND, "campaign");
            continue;
        }
        rc = camp_get(w, store, t, m->row.campaign, sp_channel_get_kind(m->chan->channel), &m->camp);
        if (rc != SP_OK) {
            fail_msg(m, rc, "campaign");
            continue;
        }
    }
    read_profiles(w, store);
    decrypt_batch(w);
    for (size_t i = 0; i < w->n_msgs; i++) {
        spd_msg *m = &w->msgs[i];
        if (m->done) continue;
        if (kms_down[0] && strcmp(kms_down, m->row.tenant) == 0) {
            fail_msg(m, kms_error, "kms");
            continue;
        }
        const char *missing = NULL;
        sp_error rc = render_row(w, m->tenant, m, &w->rows[i], &w->item_of[i * SP_VAULT_MAX_PII_FIELDS], &missing);
        if (rc != SP_OK) fail_render(m, rc, missing);
        if (m->done && kms_trouble(m->outcome)) {
            snprintf(kms_down, sizeof kms_down, "%s", m->row.tenant);
            kms_error = m->outcome;
        }
    }
    batch_clear(w);
}

static void send_batch(spd_worker *w) {
    w->n_reqs = 0;
    size_t i = 0;
    while (i < w->n_msgs) {
        spd_msg *m = &w->msgs[i];
        if (m->done) {
            i++;
            continue;
        }
        /* consecutive messages of one campaign through a batching channel
         * share a request */
        size_t size = sp_channel_batch_size(m->chan->channel), n = 1;
        while (n < size && i + n < w->n_msgs) {
            spd_msg *o = &w->msgs[i + n];
            if (o->done || o->chan != m->chan || o->camp != m->camp) break;
            n++;
        }
        spd_req *r = &w->reqs[w->n_reqs];
        sp_error rc = build_request(r, w->msgs, i, n);
        if (rc != SP_OK) {
            for (size_t k = 0; k < n; k++) fail_msg(&w->msgs[i + k], rc, "render");
            i += n;
            continue;
        }
        sp_http_client_request hr = http_request_of(r, m->chan);
        for (;;) {
            rc = sp_http_client_submit(w->http, &hr, r);
            if (rc != SP_ERR_UNAVAILABLE) break;
            size_t done = 0;
            if (sp_http_client_run(w->http, 100, on_done, w, &done) != SP_OK) break;
        }
        if (rc != SP_OK) {
            for (size_t k = 0; k < n; k++) {
                spd_msg *x = &w->msgs[i + k];
                fail_msg(x, rc, "submit");
            }
            buf_wipe(&r->plain);
            buf_wipe(&r->body);
        } else {
            w->n_reqs++;
        }
        i += n;
    }
    /* the plaintext of every message is done with */
    for (size_t k = 0; k < w->n_msgs; k++) buf_wipe(&w->msgs[k].text);
    while (sp_http_client_in_flight(w->http) > 0) {
        size_t done = 0;
        if (sp_http_client_run(w->http, 200, on_done, w, &done) != SP_OK) break;
    }
}

/* The wake-ups so far: taken before looking for work, and handed to
 * wait_for_work, so that a wake-up between the look and the wait (the
 * next page of a campaign committed just after a claim found nothing) is
 * not slept through for a whole poll interval. */
static uint64_t wake_mark(spd_sender *s) {
    pthread_mutex_lock(&s->lock);
    uint64_t seen = s->wake_seq;
    pthread_mutex_unlock(&s->lock);
    return seen;
}

/* ms from now on the clock pthread_cond_timedwait reads. */
static struct timespec deadline_in(int64_t ms) {
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += (time_t)(ms / 1000);
    at.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    return at;
}

/* Until a wake-up after `seen`, stopping, or ms. */
static void wait_for_work_since(spd_sender *s, unsigned ms, uint64_t seen) {
    struct timespec at = deadline_in(ms);
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->stopping) && s->wake_seq == seen)
        if (pthread_cond_timedwait(&s->wake, &s->lock, &at) != 0) break;
    pthread_mutex_unlock(&s->lock);
}

static void wait_for_work(spd_sender *s, unsigned ms) { wait_for_work_since(s, ms, wake_mark(s)); }

/* ---- pages handed from the expanders to the workers ---- */

/* Moves up to max handed rows into w's batch, *soonest the earliest lease
 * end among them. A row whose lease has (nearly) run out is dropped: a
 * claim may have it already, or will. */
static size_t handoff_take(spd_sender *s, spd_worker *w, int64_t now, int64_t lease_ms, size_t max,
                           int64_t *soonest) {
    size_t taken = 0, stale = 0;
    *soonest = INT64_MAX;
    pthread_mutex_lock(&s->lock);
    if (s->handed_len > 0) {
        while (taken < max && s->handed_len > 0) {
            const spd_handed *h = &s->handed[s->handed_head];
            s->handed_head = (s->handed_head + 1) % s->handed_cap;
            s->handed_len--;
            if (h->until - now < lease_ms / SPD_HANDOFF_MARGIN) {
                stale++;
            } else if (collect(w, &h->row) == SP_OK) {
                taken++;
                if (h->until < *soonest) *soonest = h->until;
            }
        }
        pthread_cond_broadcast(&s->room);
    }
    pthread_mutex_unlock(&s->lock);
    if (stale > 0) {
        sp_log_field f[] = {SP_LOG_I("messages", (int64_t)stale)};
        sp_log(SP_LOG_WARN, "send.handoff_stale", f, 1);
    }
    return taken;
}

/* Handed rows that waited through half their lease (a slow provider) get
 * a whole one again before they are sent, as a claim would have given
 * them; should that fail or miss a row, the batch is dropped and the
 * leases decide. False when dropped. */
static bool handoff_renew(spd_worker *w, sp_store *store, int64_t now, int64_t lease_ms) {
    uint64_t seqs[SP_STORE_MAX_BATCH];
    for (size_t i = 0; i < w->n_msgs; i++) seqs[i] = w->msgs[i].row.seq;
    uint64_t renewed = 0;
    sp_error rc = sp_store_outbox_renew(store, w->batch_owner, seqs, w->n_msgs, now + lease_ms, &renewed);
    if (rc == SP_OK && renewed == w->n_msgs) return true;
    sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_I("messages", (int64_t)w->n_msgs),
                        SP_LOG_I("renewed", (int64_t)renewed)};
    sp_log(SP_LOG_ERROR, "send.handoff_renew_failed", f, 3);
    w->n_msgs = 0;
    return false;
}

/* Reserves room in the ring for n rows, now or within
 * min(SPD_HANDOFF_WAIT_MS, what is left of *budget_ms), the wait spent
 * from the budget; never while stopping. handoff_publish gives it back. */
static bool handoff_room(spd_sender *s, size_t n, int64_t *budget_ms) {
    if (n > s->handed_cap || *budget_ms <= 0) return false;
    int64_t wait = *budget_ms < SPD_HANDOFF_WAIT_MS ? *budget_ms : SPD_HANDOFF_WAIT_MS;
    int64_t start = now_ms();
    struct timespec at = deadline_in(wait);
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->stopping) && s->handed_len + s->handed_reserved + n > s->handed_cap)
        if (pthread_cond_timedwait(&s->room, &s->lock, &at) != 0) break;
    bool room = !atomic_load(&s->stopping) && s->handed_len + s->handed_reserved + n <= s->handed_cap;
    if (room) s->handed_reserved += n;
    pthread_mutex_unlock(&s->lock);
    *budget_ms -= now_ms() - start;
    return room;
}

/* An expansion's page, gathered before it commits. */
typedef struct spd_staged {
    spd_handed *rows;
    size_t n, cap;
    int64_t until;
} spd_staged;

static sp_error stage_one(void *arg, const sp_store_outbox_msg *row) {
    spd_staged *st = arg;
    if (st->n == st->cap) return SP_ERR_TOO_LARGE;
    st->rows[st->n].row = *row;
    st->rows[st->n++].until = st->until;
    return SP_OK;
}

/* A page's rows (none when its write failed or it selected nobody) into
 * the room reserved for it (st->cap rows); the workers woken for rows. */
static void handoff_publish(spd_sender *s, const spd_staged *st) {
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < st->n; i++) {
        s->handed[(s->handed_head + s->handed_len) % s->handed_cap] = st->rows[i];
        s->handed_len++;
    }
    s->handed_reserved -= st->cap;
    if (st->n > 0) {
        s->wake_seq++;
        pthread_cond_broadcast(&s->wake);
    }
    pthread_cond_broadcast(&s->room);
    pthread_mutex_unlock(&s->lock);
}

static void worker_free(spd_worker *w) {
    for (size_t i = 0; i < SPD_CHANNEL_CACHE; i++) chan_clear(&w->chans[i]);
    for (size_t i = 0; i < SPD_CAMPAIGN_CACHE; i++) camp_clear(&w->camps[i]);
    for (size_t i = 0; i < w->cap_msgs; i++) buf_free(&w->msgs[i].text);
    for (size_t i = 0; i < w->cap_reqs; i++) {
        buf_free(&w->reqs[i].plain);
        buf_free(&w->reqs[i].body);
        buf_free(&w->reqs[i].url);
        buf_free(&w->reqs[i].header_text);
    }
    free(w->msgs);
    free(w->reqs);
    free(w->group_seqs);
    free(w->rows);
    free(w->items);
    free(w->item_of);
    if (w->plain) {
        sp_wipe(w->plain, w->plain_cap);
        free(w->plain);
    }
    sp_http_client_free(w->http);
    free(w);
}

static void *worker_main(void *arg) {
    spd_worker *w = arg;
    spd_sender *s = w->sender;
    spd_app *app = s->app;
    const spd_config *cfg = &app->config;
    sp_store *store = NULL;
    while (!atomic_load(&s->stopping)) {
        sp_error rc = spd_store(app, &store);
        if (rc != SP_OK) {
            wait_for_work(s, cfg->sender_poll_ms);
            continue;
        }
        w->n_msgs = 0;
        size_t claimed = 0;
        uint64_t mark = wake_mark(s);
        int64_t now = now_ms(), soonest = 0;
        bool handed = handoff_take(s, w, now, cfg->sender_lease_ms, cfg->sender_batch, &soonest) > 0;
        w->batch_owner = handed ? s->handoff_owner : w->owner;
        if (!handed) {
            rc = sp_store_outbox_claim(store, w->owner, now, cfg->sender_lease_ms, cfg->sender_batch, collect, w,
                                       &claimed);
        } else if (soonest - now < cfg->sender_lease_ms / 2 && !handoff_renew(w, store, now, cfg->sender_lease_ms)) {
            continue;
        }
        if (rc != SP_OK) {
            w->n_msgs = 0;
            if (rc != SP_ERR_CONFLICT) {
                sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc))};
                sp_log(SP_LOG_ERROR, "send.claim_failed", f, 1);
                wait_for_work(s, cfg->sender_poll_ms);
            }
            continue;
        }
        if (w->n_msgs == 0) {
            wait_for_work_since(s, cfg->sender_poll_ms, mark);
            continue;
        }
        w->batch_no++;
        /* one snapshot for the whole batch's reads (profiles, channels,
         * campaigns) instead of one per statement */
        bool snapshot = sp_store_begin_read(store) == SP_OK;
        prepare_batch(w, store);
        if (snapshot && sp_store_commit(store) != SP_OK) sp_store_rollback(store);
        send_batch(w);
        record_outcomes(w, store);
    }
    sp_error rc = spd_store(app, &store);
    uint64_t released = 0;
    if (rc == SP_OK) rc = sp_store_outbox_release(store, w->owner, now_ms(), &released);
    (void)rc;
    worker_free(w);
    return NULL;
}

/* ---- the scheduler: scheduled campaigns whose time has come ---- */

typedef struct due_item {
    char tenant[SP_STORE_MAX_TENANT + 1];
    char id[SP_STORE_MAX_NAME + 1];
} due_item;

typedef struct due_list {
    due_item items[64];
    size_t n;
} due_list;

static sp_error due_one(void *arg, const char *tenant, const char *id) {
    due_list *l = arg;
    if (l->n >= sizeof l->items / sizeof l->items[0]) return SP_OK;
    snprintf(l->items[l->n].tenant, sizeof l->items[l->n].tenant, "%s", tenant);
    snprintf(l->items[l->n].id, sizeof l->items[l->n].id, "%s", id);
    l->n++;
    return SP_OK;
}

/* Moves a campaign to queued and expands its audience into the outbox a
 * page at a time, each page committed on its own and the workers woken,
 * so the first messages go out while later pages are still being written
 * and no other write (a claim, a settle, a callback) waits for a whole
 * audience; the last page marks it sending. Should this stop half way
 * (a crash, a failed write), the campaign stays queued with its position
 * in its row, and the scheduler takes it up again once it has been idle
 * for [sender] expand_idle; a stopping sender stops it there too. Pages
 * are leased to this process's workers while they keep up (see the top of
 * this file). */
static sp_error start_campaign(spd_app *app, sp_store *store, const char *tenant_id, const char *id) {
    spd_tenant *t = NULL;
    sp_error rc = spd_tenant_get(app, tenant_id, &t);
    if (rc != SP_OK) return rc;
    spd_campaign_spec *spec = NULL;
    rc = campaign_spec_load(store, t, id, 0, &spec);
    if (rc != SP_OK) return rc;
    sp_store_audience aud;
    spd_campaign_spec_audience(spec, &aud);
    const spd_config *cfg = &app->config;
    spd_sender *s = app->sender;
    spd_staged st = {NULL, 0, aud.kind == SP_STORE_AUDIENCE_IDS ? aud.n_ids : cfg->sender_expand_page, 0};
    bool lease = s != NULL && s->handed_cap > 0 && st.cap <= s->handed_cap;
    if (lease) st.rows = malloc(st.cap * sizeof *st.rows);
    lease = lease && st.rows != NULL;
    int64_t budget_ms = SPD_HANDOFF_PACE_MS;
    uint64_t total = 0;
    bool finished = false;
    rc = sp_store_campaign_set_state(store, tenant_id, id, SP_STORE_CAMPAIGN_QUEUED, now_ms() / 1000, NULL);
    while (rc == SP_OK && !finished && !(s != NULL && atomic_load(&s->stopping))) {
        uint64_t added = 0;
        lease = lease && handoff_room(s, st.cap, &budget_ms);
        if (lease) {
            int64_t now = now_ms();
            st.n = 0;
            st.until = now + cfg->sender_lease_ms;
            sp_store_lease l = {s->handoff_owner, cfg->sender_lease_ms, stage_one, &st};
            rc = sp_store_campaign_expand_page_leased(store, tenant_id, id, &aud, cfg->sender_expand_page, now, &l,
                                                      &added, &finished);
            if (rc != SP_OK) st.n = 0; /* nothing was written */
            handoff_publish(s, &st);
        } else {
            rc = sp_store_campaign_expand_page(store, tenant_id, id, &aud, cfg->sender_expand_page, now_ms(), &added,
                                               &finished);
            if (rc == SP_OK && added > 0) spd_sender_wake(app);
        }
        total += added;
    }
    free(st.rows);
    spd_campaign_spec_free(spec);
    if (rc == SP_OK) {
        sp_log_field f[] = {SP_LOG_S("tenant", tenant_id), SP_LOG_S("campaign", id), SP_LOG_I("messages", (int64_t)total)};
        sp_log(SP_LOG_INFO, "campaign.started", f, 3);
    }
    return rc;
}

/* sealpost_queue_depth{queue="outbox"}: messages queued or being sent, over
 * every tenant. */
static void measure_depth(spd_app *app, sp_store *store) {
    uint64_t depth = 0;
    if (app->outbox_depth && sp_store_outbox_live(store, &depth) == SP_OK)
        sp_metric_set(app->outbox_depth, (double)depth);
}

static void *scheduler_main(void *arg) {
    spd_sender *s = arg;
    spd_app *app = s->app;
    unsigned rounds = 0;
    int64_t last_prune = 0;
    while (!atomic_load(&s->stopping)) {
        sp_store *store = NULL;
        due_list due;
        due.n = 0;
        sp_error rc = spd_store(app, &store);
        if (rc == SP_OK) rc = sp_store_campaign_due(store, now_ms(), 64, due_one, &due);
        /* expansions that stopped half way (their process died) */
        size_t due_now = due.n;
        if (rc == SP_OK && due.n < 64)
            rc = sp_store_campaign_stale(store, now_ms() / 1000 - app->config.sender_expand_idle_s, 64 - due.n, due_one,
                                         &due);
        for (size_t i = due_now; rc == SP_OK && i < due.n; i++) {
            sp_log_field f[] = {SP_LOG_S("tenant", due.items[i].tenant), SP_LOG_S("campaign", due.items[i].id)};
            sp_log(SP_LOG_WARN, "campaign.expansion_resumed", f, 2);
        }
        for (size_t i = 0; rc == SP_OK && i < due.n; i++) {
            sp_error one = start_campaign(app, store, due.items[i].tenant, due.items[i].id);
            if (one != SP_OK && one != SP_ERR_ILLEGAL_TRANSITION) {
                sp_log_field f[] = {SP_LOG_S("campaign", due.items[i].id), SP_LOG_S("error", sp_error_name(one))};
                sp_log(SP_LOG_WARN, "campaign.start_failed", f, 2);
            }
        }
        if (due.n > 0) spd_sender_wake(app);
        if (rc == SP_OK && rounds++ % 5 == 0) measure_depth(app, store);
        /* callback webhook-ids past [callbacks] keep: at start, then hourly */
        if (rc == SP_OK && (last_prune == 0 || now_ms() - last_prune >= 3600 * 1000)) {
            spd_callbacks_prune(app, store);
            last_prune = now_ms();
        }
        wait_for_work(s, 1000);
    }
    return NULL;
}

sp_error spd_campaign_start(spd_app *app, sp_store *store, const char *tenant, const char *id) {
    return start_campaign(app, store, tenant, id);
}

/* ---- life cycle ---- */

sp_error spd_sender_start(spd_app *app, const char *store_backend) {
    const spd_config *cfg = &app->config;
    if (cfg->sender_threads == 0) return SP_OK;
    spd_sender *s = calloc(1, sizeof *s);
    if (!s) return SP_ERR_NO_MEMORY;
    s->app = app;
    atomic_init(&s->stopping, false);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_mutex_init(&s->oauth_lock, NULL);
    pthread_cond_init(&s->room, NULL);
    bool hand_over = cfg->sender_hand_over > 0 || (cfg->sender_hand_over < 0 && strcmp(store_backend, "sqlite") == 0);
    size_t round = (size_t)cfg->sender_threads * cfg->sender_batch;
    size_t ring = 2 * (round > cfg->sender_expand_page ? round : cfg->sender_expand_page);
    s->handed_cap = !hand_over ? 0 : ring > SPD_HANDOFF_MAX ? SPD_HANDOFF_MAX : ring;
    s->handed = hand_over ? calloc(s->handed_cap, sizeof *s->handed) : NULL;
    s->workers = calloc(cfg->sender_threads, sizeof(pthread_t));
    if (!s->workers || (hand_over && !s->handed)) {
        free(s->handed);
        free(s->workers);
        free(s);
        return SP_ERR_NO_MEMORY;
    }
    app->sender = s;
    char host[64] = "host";
    (void)gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '.'))
            *p = '_';
    host[24] = '\0';
    snprintf(s->handoff_owner, sizeof s->handoff_owner, "%.24s:%ld:pages", host, (long)getpid());
    for (unsigned i = 0; i < cfg->sender_threads; i++) {
        spd_worker *w = calloc(1, sizeof *w);
        sp_error rc = w ? SP_OK : SP_ERR_NO_MEMORY;
        if (rc == SP_OK) {
            w->sender = s;
            w->index = i;
            snprintf(w->owner, sizeof w->owner, "%.24s:%ld:%u", host, (long)getpid(), i);
            w->cap_msgs = cfg->sender_batch;
            w->cap_reqs = cfg->sender_batch;
            w->msgs = calloc(w->cap_msgs, sizeof *w->msgs);
            w->reqs = calloc(w->cap_reqs, sizeof *w->reqs);
            w->group_seqs = calloc(SPD_GROUPS * w->cap_msgs, sizeof *w->group_seqs);
            if (!w->msgs || !w->reqs || !w->group_seqs) rc = SP_ERR_NO_MEMORY;
        }
        if (rc == SP_OK) rc = new_client(cfg, cfg->sender_in_flight, &w->http);
        if (rc == SP_OK && pthread_create(&s->workers[i], NULL, worker_main, w) != 0) rc = SP_ERR_NO_MEMORY;
        if (rc != SP_OK) {
            if (w) worker_free(w);
            spd_sender_stop(app, 0);
            return rc;
        }
        s->n_workers++;
    }
    if (pthread_create(&s->scheduler, NULL, scheduler_main, s) != 0) {
        spd_sender_stop(app, 0);
        return SP_ERR_NO_MEMORY;
    }
    s->scheduler_started = true;
    return SP_OK;
}

void spd_sender_wake(spd_app *app) {
    spd_sender *s = app ? app->sender : NULL;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->wake_seq++;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

void spd_sender_stop(spd_app *app, unsigned grace_ms) {
    spd_sender *s = app ? app->sender : NULL;
    if (!s) return;
    s->grace_ms = grace_ms;
    atomic_store(&s->stopping, true);
    spd_sender_wake(app);
    for (unsigned i = 0; i < s->n_workers; i++) pthread_join(s->workers[i], NULL);
    if (s->scheduler_started) pthread_join(s->scheduler, NULL);
    /* rows handed over but never taken: queued again at once rather than
     * left to their lease (every worker has settled what it took) */
    sp_store *store = NULL;
    uint64_t released = 0;
    if (s->handed_len > 0 && spd_store(app, &store) == SP_OK &&
        sp_store_outbox_release(store, s->handoff_owner, now_ms(), &released) == SP_OK) {
        sp_log_field f[] = {SP_LOG_I("messages", (int64_t)released)};
        sp_log(SP_LOG_INFO, "send.handoff_released", f, 1);
    }
    free(s->handed);
    free_oauth(s->oauth);
    pthread_cond_destroy(&s->room);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->oauth_lock);
    free(s->workers);
    free(s);
    app->sender = NULL;
}

/* ---- a test send, on the caller's thread ---- */

static bool contains(const char *hay, size_t hay_len, const char *needle, size_t len) {
    return len > 0 && hay && memmem(hay, hay_len, needle, len) != NULL;
}

typedef struct test_claim {
    const char *want;
    uint64_t seq;
    bool found, other;
} test_claim;

static sp_error test_claim_one(void *arg, const sp_store_outbox_msg *row) {
    test_claim *c = arg;
    if (strcmp(row->message_id, c->want) == 0) {
        c->seq = row->seq;
        c->found = true;
    } else {
        c->other = true;
    }
    return SP_OK;
}

/* Gives the test send an outbox row of its own, already claimed by this
 * thread, so the provider's callback about it finds it (and
 * /v1/messages/{id} shows it) while no worker sends it a second time. The
 * row is queued as due at the epoch's first millisecond, which puts it
 * first in the claim order, and claimed in the same transaction: another
 * claimer never sees it queued. Anything unexpected (another row came
 * first) rolls back, and the test send goes untracked. */
static bool test_track(spd_app *app, sp_store *store, const spd_worker *w, const spd_msg *m, uint64_t *seq) {
    test_claim c = {m->row.message_id, 0, false, false};
    sp_error rc = sp_store_begin(store);
    if (rc == SP_OK)
        rc = sp_store_outbox_enqueue(store, m->row.tenant, m->row.channel, m->row.profile_id, m->row.message_id, 1,
                                     NULL, NULL);
    if (rc == SP_OK)
        rc = sp_store_outbox_claim(store, w->owner, now_ms(), app->config.sender_lease_ms, 1, test_claim_one, &c,
                                   NULL);
    if (rc == SP_OK && (!c.found || c.other)) rc = SP_ERR_CONFLICT;
    if (rc == SP_OK) rc = sp_store_commit(store);
    if (rc != SP_OK) {
        sp_store_rollback(store);
        sp_log_field f[] = {SP_LOG_S("message_id", m->row.message_id), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "send.test_untracked", f, 2);
        return false;
    }
    *seq = c.seq;
    return true;
}

/* The test send's outcome on its row. */
static void test_settle(sp_store *store, const spd_worker *w, const spd_msg *m, uint64_t seq) {
    sp_error rc;
    if (m->outcome == SP_OK) {
        rc = sp_store_outbox_done(store, w->owner, &seq, 1, now_ms(), NULL);
    } else {
        char error[SP_STORE_MAX_ERROR + 1];
        snprintf(error, sizeof error, "%s %u", sp_error_name(m->outcome), m->provider_status);
        rc = sp_store_outbox_fail(store, w->owner, &seq, 1, SP_STORE_OUTBOX_FAILED, error, (int)m->provider_status,
                                  now_ms(), NULL);
    }
    if (rc != SP_OK) {
        sp_log_field f[] = {SP_LOG_S("message_id", m->row.message_id), SP_LOG_S("error", sp_error_name(rc))};
        sp_log(SP_LOG_WARN, "send.test_record_failed", f, 2);
    }
}

sp_error spd_send_test(spd_app *app, const char *tenant, const char *campaign, const char *profile_id,
                       spd_send_report *report) {
    if (!app || !tenant || !campaign || !profile_id || !report) return SP_ERR_INVALID_ARGUMENT;
    memset(report, 0, sizeof *report);
    const spd_config *cfg = &app->config;
    spd_sender s;
    memset(&s, 0, sizeof s);
    s.app = app;
    pthread_mutex_init(&s.oauth_lock, NULL);
    spd_worker *w = calloc(1, sizeof *w);
    sp_error rc = w ? SP_OK : SP_ERR_NO_MEMORY;
    sp_store *store = NULL;
    spd_tenant *t = NULL;
    if (rc == SP_OK) {
        w->sender = &s;
        snprintf(w->owner, sizeof w->owner, "test:%ld", (long)getpid());
        w->batch_owner = w->owner;
        w->cap_msgs = w->cap_reqs = 1;
        w->msgs = calloc(1, sizeof *w->msgs);
        w->reqs = calloc(1, sizeof *w->reqs);
        if (!w->msgs || !w->reqs) rc = SP_ERR_NO_MEMORY;
    }
    if (rc == SP_OK) rc = new_client(cfg, 1, &w->http);
    if (rc == SP_OK) rc = spd_store(app, &store);
    if (rc == SP_OK) rc = spd_tenant_get(app, tenant, &t);
    sp_store_campaign_row row;
    memset(&row, 0, sizeof row);
    if (rc == SP_OK) rc = sp_store_campaign_get(store, tenant, campaign, &row);
    spd_msg *m = w ? w->msgs : NULL;
    if (rc == SP_OK) {
        memset(&m->row, 0, sizeof m->row);
        snprintf(m->row.tenant, sizeof m->row.tenant, "%s", tenant);
        snprintf(m->row.campaign, sizeof m->row.campaign, "%s", campaign);
        snprintf(m->row.channel, sizeof m->row.channel, "%s", row.channel);
        snprintf(m->row.profile_id, sizeof m->row.profile_id, "%s", profile_id);
        char uuid[37];
        rc = sp_uuid_v7(uuid);
        if (rc == SP_OK) snprintf(m->row.message_id, sizeof m->row.message_id, "msg_test_%s", uuid);
        snprintf(report->message_id, sizeof report->message_id, "%s", m->row.message_id);
        m->row.attempts = 1;
        m->retry_after_ms = -1;
        w->n_msgs = 1;
        w->batch_no = 1;
    }
    sp_store_campaign_row_clear(&row);
    if (rc == SP_OK) rc = chan_get(w, store, t, m->row.channel, &m->chan);
    if (rc == SP_OK) rc = camp_get(w, store, t, campaign, sp_channel_get_kind(m->chan->channel), &m->camp);
    const char *missing = NULL;
    /* from here on a failure is the test's finding, not the caller's error */
    bool reached_render = rc == SP_OK;
    if (rc == SP_OK) rc = render_message(w, store, t, m, &missing);
    if (missing) snprintf(report->missing, sizeof report->missing, "%s", missing);
    spd_req *r = w ? w->reqs : NULL;
    if (rc == SP_OK) rc = build_request(r, w->msgs, 0, 1);
    if (rc == SP_OK) {
        sp_channel_encryption enc;
        sp_channel_get_encryption(m->chan->channel, &enc);
        report->encrypted = enc.enabled;
        if (enc.enabled) snprintf(report->key_version, sizeof report->key_version, "%s", sp_wire_active_version(m->chan->wire));
        /* what a network observer would see: the URL, the headers, the body */
        bool seen = contains(r->body.data, r->body.len, m->text.data, m->to_len) ||
                    contains(r->url.data, strlen(r->url.data), m->text.data, m->to_len);
        for (size_t i = 0; i < r->n_headers; i++)
            seen = seen || contains(r->headers[i].value, strlen(r->headers[i].value), m->text.data, m->to_len);
        report->plaintext_absent = !seen;
        sp_http_client_request hr = http_request_of(r, m->chan);
        buf_wipe(&m->text);
        uint64_t seq = 0;
        report->tracked = test_track(app, store, w, m, &seq);
        rc = sp_http_client_submit(w->http, &hr, r);
        while (rc == SP_OK && sp_http_client_in_flight(w->http) > 0) {
            size_t done = 0;
            rc = sp_http_client_run(w->http, 200, on_done, w, &done);
        }
        if (rc == SP_OK) {
            report->result = m->outcome;
            report->provider_status = m->provider_status;
        } else {
            m->outcome = rc;
        }
        if (report->tracked) test_settle(store, w, m, seq);
    }
    if (m) buf_wipe(&m->text);
    if (rc != SP_OK) report->result = rc;
    if (w) worker_free(w);
    free_oauth(s.oauth);
    pthread_mutex_destroy(&s.oauth_lock);
    if (app->messages_sent && report->result == SP_OK) sp_metric_add(app->messages_sent, 1);
    return reached_render ? SP_OK : rc;
}
