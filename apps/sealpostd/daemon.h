/*
 * sealpostd's internal contract between its parts: the process-wide app
 * (config, metrics, audit, the credential pepper), per-thread store
 * connections, tenant settings, per-thread tenant contexts (KMS, keyring and
 * vault of one tenant) and the JSON replies every route uses.
 *
 *   main.c      start-up, signals, graceful shutdown, `admin-credential`
 *   config.c    the INI file: one table of bounded entries
 *   router.c    on_headers/on_request: allow-lists, credentials, rate
 *               limits, routing, /healthz, /metrics, replies
 *   admin.c     /admin/v1: tenants and credentials
 *   tenant.c    tenant settings documents (parse, validate, serialise)
 *   ratelimit.c token buckets per credential
 *   context.c   per-thread tenant contexts and store connections
 *   ingest.c    /v1/profiles and /v1/events
 *   body.c      request-body parsers for ingestion (fuzzed)
 *   mask.c      masking of decrypted PII for reads
 *   channels.c  /v1/channels: provider channels, secrets sealed at rest
 *   campaigns.c /v1/campaigns: campaigns, audiences, test sends, counts
 *   sender.c    the send pipeline: workers over the outbox, scheduler
 *   callbacks.c /callbacks/v1: providers' sealed delivery reports and
 *               inbound messages, verified, de-duplicated and recorded
 *   tracking.c  /v1/messages/{id} and /v1/campaigns/{id}/stats
 *
 * Apps use only the public headers of libsealpost (and jansson).
 */
#ifndef SPD_DAEMON_H
#define SPD_DAEMON_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "sealpost/sealpost.h"

/* ---- config (config.c) ---- */

#define SPD_MAX_PATH 1024

typedef struct spd_config {
    /* [server] */
    char listen_address[64];
    uint16_t port;
    char tls_cert[SPD_MAX_PATH];
    char tls_key[SPD_MAX_PATH];
    bool plain_http;               /* loopback only */
    unsigned threads;
    size_t max_body;
    size_t max_header_bytes;
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned idle_timeout_s;
    unsigned shutdown_grace_ms;
    /* [store] */
    char store_url[SP_STORE_MAX_URL];
    /* [data] */
    char data_dir[SPD_MAX_PATH];   /* server key, audit log, local master keys */
    /* [log] */
    char log_path[SPD_MAX_PATH];   /* "" or "-": stderr */
    sp_log_level log_level;
    /* [audit] */
    char audit_path[SPD_MAX_PATH];
    /* [security] */
    sp_allow_list admin_allow;
    sp_allow_list default_tenant_allow;
    /* [limits] */
    size_t max_batch;              /* 1..1000 */
    double rate_per_second;        /* default per credential */
    double rate_burst;
    /* [vault] */
    int64_t dek_lifetime_s;
    int64_t dek_cache_ttl_s;
    /* [sender] */
    unsigned sender_threads;       /* 0: this process sends nothing */
    size_t sender_batch;           /* messages claimed at once, 1..1000 */
    unsigned sender_in_flight;     /* requests under way per worker */
    unsigned sender_max_attempts;  /* then dead-lettered */
    unsigned sender_backoff_base_ms;
    unsigned sender_backoff_max_ms;
    unsigned sender_lease_ms;      /* a crashed worker's messages are taken over after this */
    unsigned sender_timeout_ms;    /* one provider request, connect included */
    unsigned sender_poll_ms;       /* idle wait between looks at the outbox */
    size_t sender_expand_page;     /* profiles per expansion transaction */
    unsigned sender_expand_idle_s; /* a queued campaign's expansion idle this long is taken up again */
    int sender_hand_over;          /* pages leased to this process's workers: 1, 0, -1 auto (SQLite only) */
    char sender_ca_file[SPD_MAX_PATH]; /* "" : the system's CAs */
    /* [server] public_url: how providers reach this daemon; "" derives
     * https://<listen address>:<port> (spd_public_url) */
    char public_url[512];
    /* [callbacks] */
    size_t callbacks_max_body;     /* 1K..1M */
    unsigned callbacks_tolerance_s;/* webhook-timestamp window */
    int64_t callbacks_keep_s;      /* webhook-ids remembered, 4d..90d */
    sp_allow_list callbacks_allow;/* who may post callbacks */
} spd_config;

/* Loads and validates the file; on failure writes one clear line
 * ("sealpost.conf:12: max_body: must be between 1024 and 67108864") into
 * err. */
sp_error spd_config_load(const char *path, spd_config *out, char *err, size_t cap);

/* The table behind the file, for the documentation check and --help. */
typedef struct spd_config_info {
    const char *section;
    const char *key;
    const char *default_text;      /* "" for a default derived from [data] dir */
    const char *help;
} spd_config_info;
size_t spd_config_entry_count(void);
const spd_config_info *spd_config_entry(size_t index);


/* ---- rate limits (ratelimit.c) ----
 * Token buckets keyed by credential id in a fixed table: bounded memory,
 * the least recently used of a few candidate slots is evicted when full. */
typedef struct spd_ratelimit spd_ratelimit;
sp_error spd_ratelimit_new(size_t capacity, spd_ratelimit **out);
void spd_ratelimit_free(spd_ratelimit *rl);
/* 0 when a token was taken; otherwise the whole seconds to wait (>= 1). */
unsigned spd_ratelimit_take(spd_ratelimit *rl, const char *key, double per_second, double burst);
/* Tests: a clock in seconds (monotonic); NULL restores CLOCK_MONOTONIC. */
void spd_ratelimit_set_clock(spd_ratelimit *rl, double (*now)(void *arg), void *arg);

/* ---- tenant settings (tenant.c) ----
 * The settings document of a tenant row: what the admin API accepts and
 * returns (the kms config is stored but never returned). */

typedef struct spd_pii_field {
    char name[SP_VAULT_MAX_FIELD + 1];
    sp_vault_field_kind kind;
} spd_pii_field;

typedef struct spd_settings {
    char name[201];
    char kms[SP_KMS_MAX_CONFIG + 1];
    spd_pii_field pii[SP_VAULT_MAX_PII_FIELDS];
    size_t n_pii;
    char default_country_code[4];  /* "" when none */
    sp_allow_list allow;
    double rate_per_second;
    double rate_burst;
} spd_settings;

/* Parses a stored settings document (trusted, but checked). */
sp_error spd_settings_parse(const char *json_text, size_t len, spd_settings *out);
/* ^[a-z0-9][a-z0-9_-]{0,63}$ */
bool spd_tenant_id_valid(const char *id);
/* The defaults of a new tenant before its request body is applied: email
 * and phone PII fields, the config's default allow-list and rate limit, the
 * local KMS under data_dir/kms/<id>.key. */
sp_error spd_settings_defaults(const spd_config *config, const char *tenant_id, spd_settings *out);
/* Applies an admin request body (POST: create, PATCH: !create) to *io;
 * *disabled_io is read and written for PATCH. On a bad body, a message
 * naming the field ("allow_ips[2]: not a CIDR") goes into err and the
 * result is SP_ERR_INVALID_ARGUMENT. */
sp_error spd_settings_apply(const json_t *body, bool create, spd_settings *io, bool *disabled_io, char *err,
                            size_t cap);
/* The stored document (with the kms string); NULL when out of memory. */
json_t *spd_settings_document(const spd_settings *settings);
/* The admin API's tenant object: no kms string, its "kms_backend" instead. */
json_t *spd_tenant_json(const char *id, const spd_settings *settings, bool disabled, int64_t created,
                        int64_t updated);

/* ---- the app ---- */

typedef struct spd_app {
    spd_config config;
    sp_metrics *metrics;
    sp_audit *audit;
    sp_key *pepper;                /* keys the hashes of client keys and secrets */
    atomic_uint_fast64_t tenants_generation; /* bumped by every tenant change */
    atomic_bool shutting_down;
    /* series kept by pointer so handlers never look them up by name */
    sp_metric *profiles_ingested;
    sp_metric *events_ingested;
    sp_metric *events_duplicate;
    sp_metric *vault_decrypts;
    /* router.c and admin.c (main.c sets them up) */
    spd_ratelimit *ratelimit;
    sp_metric *auth_failures_admin;
    sp_metric *auth_failures_tenant;
    sp_metric *rate_limited;
    /* KMS calls of every tenant's handle, brought up to date at each scrape */
    sp_metric *kms_calls;
    sp_metric *kms_failures;
    sp_metric *kms_unavailable;
    sp_metric *kms_denied;
    sp_metric *kms_breakers_open;
    struct spd_router_state *router; /* tenant settings cache (spd_router_init) */
    /* sending (sender.c; main.c sets up the key and the series) */
    sp_key *secrets_key;           /* seals channel secrets at rest (derived from the server key) */
    struct spd_sender *sender;
    struct spd_callbacks *callbacks;
    sp_metric *messages_sent;
    sp_metric *messages_retried;
    sp_metric *messages_failed;
    sp_metric *messages_dead;
    sp_metric *messages_deferred;
    sp_metric *outbox_depth;
    /* callbacks (callbacks.c; main.c sets up the series) */
    uint16_t bound_port;           /* the port listened on (listen may say 0) */
    sp_metric *callbacks_result[5];        /* spd_callback_result */
    sp_metric *delivery_events[8];         /* by sp_store_event_kind - 1 */
    sp_metric *suppressions[4];            /* spd_suppress_reason */
} spd_app;

/* sealpost_callbacks_total{result}: the index into callbacks_result. */
typedef enum spd_callback_result {
    SPD_CB_ACCEPTED = 0,
    SPD_CB_DUPLICATE,
    SPD_CB_REJECTED,  /* 401 (and 403, 413): authentication, decryption, unknown channel */
    SPD_CB_INVALID,   /* 400: authentic but not a valid body */
    SPD_CB_ERROR,     /* 5xx: could not be stored */
} spd_callback_result;
#define SPD_CB_RESULT_NAMES {"accepted", "duplicate", "rejected", "invalid", "error"}
/* sealpost_delivery_events_total{event}, in sp_store_event_kind order. */
#define SPD_DELIVERY_EVENT_NAMES                                                                                    \
    {"delivered", "failed", "bounced", "opened", "clicked", "replied", "unsubscribed", "complained"}
/* sealpost_suppressions_total{reason}. */
#define SPD_SUPPRESS_REASON_NAMES {"hard_bounce", "unsubscribed", "complained", "opt_out"}

/* Keyed hash of a client access key or an API secret (HMAC-SHA256 under the
 * pepper, the two kinds domain-separated). */
typedef enum spd_hash_kind { SPD_HASH_CLIENT_KEY = 1, SPD_HASH_SECRET = 2 } spd_hash_kind;
sp_error spd_credential_hash(const spd_app *app, spd_hash_kind kind, const char *value, size_t len,
                             uint8_t out[SP_STORE_HASH_BYTES]);
/* A new client access key ("spk_" + 43 base64url chars) or secret ("sps_"). */
sp_error spd_credential_generate(const char *prefix, char out[48]);

/* What on_headers established, stashed with sp_http_set_user. */
typedef struct spd_auth {
    char tenant[SP_STORE_MAX_TENANT + 1]; /* "" for admin */
    char credential_id[SP_KEY_VERSION_CHARS + 1];
    bool admin;
} spd_auth;

/* ---- per-thread state (context.c) ---- */

/* A value of each thread (a static of the unit that owns it): zeroed memory
 * of the size asked for on a thread's first use, handed to destroy when the
 * thread ends. The pthread key is made on first use, once. */
typedef struct spd_thread_local {
    void (*destroy)(void *);
    atomic_int state; /* 0: no key yet, 1: key made, -1: it could not be */
    pthread_key_t key;
} spd_thread_local;
#define SPD_THREAD_LOCAL_INIT(destroy_fn) {.destroy = (destroy_fn)}
/* This thread's value, made when it has none; NULL when out of memory. */
void *spd_thread_local_get(spd_thread_local *tl, size_t size);
/* This thread's value or NULL, no longer this thread's (destroy not run). */
void *spd_thread_local_take(spd_thread_local *tl);

/* This thread's store connection, opened on first use and closed when the
 * thread ends. */
sp_error spd_store(spd_app *app, sp_store **out);

typedef struct spd_tenant {
    char id[SP_STORE_MAX_TENANT + 1];
    spd_settings settings;
    sp_vault *vault;               /* this thread's vault of the tenant */
    sp_keyring *keyring;           /* over the store (sp_store_keyring_storage) */
    sp_kms *kms;                   /* shared by every thread, owned by the app's cache */
    uint64_t generation;
} spd_tenant;

/* This thread's context of a tenant, (re)built when the tenant changed since
 * (tenants_generation). SP_ERR_NOT_FOUND for an unknown or disabled tenant;
 * SP_ERR_KMS_* when its KMS cannot be opened. */
sp_error spd_tenant_get(spd_app *app, const char *tenant_id, spd_tenant **out);
/* After a tenant is updated or deleted: every thread rebuilds. */
void spd_tenant_invalidate(spd_app *app);
/* Crypto-erase of the tenant's vault keys (before its rows are deleted). */
sp_error spd_tenant_erase_keys(spd_app *app, const char *tenant_id);
/* Checks a KMS config the way a tenant will use it: open, wrap and unwrap a
 * data key; a readable reason in err. pinned (may be NULL) gets the config
 * to store: a KMIP config that asked for a new master key (create=1) names
 * the one made (key-id=…), so later opens use it instead of making more. */
sp_error spd_kms_probe(const char *kms_config, char *err, size_t cap, char *pinned, size_t pinned_cap);
/* KMS counters summed over every tenant's handle since start (handles
 * closed since count too), and how many breakers are open now. */
void spd_kms_totals(sp_kms_stats *sum, uint64_t *breakers_open);
/* Frees every shared KMS handle (at exit). */
void spd_context_shutdown(spd_app *app);

/* ---- routing (router.c) ---- */
typedef enum spd_route_id {
    SPD_ROUTE_NONE = 0,
    SPD_ROUTE_HEALTHZ,
    SPD_ROUTE_METRICS,
    SPD_ROUTE_TENANTS,       /* /admin/v1/tenants */
    SPD_ROUTE_TENANT,        /* /admin/v1/tenants/{id} */
    SPD_ROUTE_CREDENTIALS,   /* /admin/v1/tenants/{id}/credentials */
    SPD_ROUTE_CREDENTIAL,    /* /admin/v1/tenants/{id}/credentials/{cid} */
    SPD_ROUTE_PROFILES,      /* /v1/profiles */
    SPD_ROUTE_PROFILE,       /* /v1/profiles/{id} */
    SPD_ROUTE_EVENTS,        /* /v1/events */
    SPD_ROUTE_CHANNELS,      /* /v1/channels */
    SPD_ROUTE_CHANNEL,       /* /v1/channels/{id} */
    SPD_ROUTE_CAMPAIGNS,     /* /v1/campaigns */
    SPD_ROUTE_CAMPAIGN,      /* /v1/campaigns/{id} */
    SPD_ROUTE_CAMPAIGN_ACTION, /* /v1/campaigns/{id}/test, …/cancel, …/replay */
    SPD_ROUTE_CAMPAIGN_STATS,  /* /v1/campaigns/{id}/stats */
    SPD_ROUTE_MESSAGE,         /* /v1/messages/{message_id} */
    SPD_ROUTE_CALLBACK,        /* /callbacks/v1/{tenant}/{channel}/dlr|inbound: no credential */
} spd_route_id;

typedef struct spd_route_match {
    spd_route_id route;
    const char *label;       /* the metrics label, e.g. "/v1/profiles/{id}" */
    const char *allow;       /* the methods the route takes, for 405's Allow */
    bool method_ok;
    char id[SP_STORE_MAX_ID + 1];  /* the first {…} segment, percent-decoded */
    char sub[SP_STORE_MAX_ID + 1]; /* the second */
} spd_route_match;
/* SPD_ROUTE_NONE: 404; method_ok false: 405. */
void spd_route_match_path(const char *method, const char *path, spd_route_match *out);

/* Router state (tenant settings cache); main.c calls these around the
 * server's life. */
sp_error spd_router_init(spd_app *app);
void spd_router_free(spd_app *app);
sp_http_verdict spd_on_headers(void *app, sp_http_request *req);
void spd_on_request(void *app, sp_http_request *req);

/* ---- replies (router.c) ---- */
/* ?after=…&limit=… of a list route (limit 1..SP_STORE_MAX_LIST, default
 * 100; after "" or an id id_ok accepts); answers 400 and returns false
 * when either is bad. */
bool spd_page_query(sp_http_request *req, bool (*id_ok)(const char *), const char **after, size_t *limit);
/* A list being gathered from a store's callback. */
typedef struct spd_page {
    json_t *items;
    char last[SP_STORE_MAX_ID + 1];
    size_t count;
} spd_page;
/* Appends item (stolen; NULL is out of memory) whose id is id. */
sp_error spd_page_add(spd_page *page, json_t *item, const char *id);
/* Answers 200 {"<key>": items, "next": last or null}: next is the last id
 * of a full page. Steals page->items. */
void spd_reply_page(sp_http_request *req, const char *key, spd_page *page, size_t limit);
/* The request body as a JSON object, or an answer (400 bad_json /
 * bad_request) and NULL; empty_ok: an absent body reads as {}. */
json_t *spd_body_object(sp_http_request *req, bool empty_ok);
void spd_reply_error(sp_http_request *req, unsigned status, const char *code, const char *message);
/* Serialises (compact) and answers; steals the reference to body. */
void spd_reply_json(sp_http_request *req, unsigned status, json_t *body);
/* 400 bad_json / bad_request / 415 from a parse of the request body. */
void spd_reply_status(sp_http_request *req, unsigned status);
/* An error with a Retry-After header (429, 503). */
void spd_reply_retry(sp_http_request *req, unsigned status, const char *code, const char *message,
                     unsigned retry_after_s);
/* 204, no body. */
void spd_reply_empty(sp_http_request *req);
/* The reply an sp_error from the store, KMS or vault maps to:
 * SP_ERR_KMS_* → 503 kms_unavailable, SP_ERR_UNAVAILABLE/SP_ERR_STORE →
 * 503 unavailable, SP_ERR_NOT_FOUND → 404, anything else → 500 internal. */
void spd_reply_sp_error(sp_http_request *req, sp_error err);

/* ---- routes (ingest.c) ---- */
/* The answer to a failure of the library or the store (503 with
 * Retry-After for KMS and storage trouble, 500 otherwise), logged with the
 * step that failed. */
void spd_fail(sp_http_request *req, sp_error rc, const char *what);
/* The caller's tenant context, or an answer (401 for a tenant gone or
 * disabled since on_headers) and false. */
bool spd_tenant_or_reply(spd_app *app, sp_http_request *req, const spd_auth *auth, spd_tenant **t);

void spd_profiles_post(spd_app *app, sp_http_request *req, const spd_auth *auth);
void spd_profile_get(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *profile_id);
void spd_profile_delete(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *profile_id);
void spd_events_post(spd_app *app, sp_http_request *req, const spd_auth *auth);

/* ---- channels (channels.c) ---- */

/* Channel and campaign ids: 1..64 of a-z, 0-9, _ and -. */
bool spd_name_ok(const char *id);

/* Routes under /v1/channels (path_after_prefix is what follows "/v1"). */
void spd_channels_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *channel_id);
/* The tenant's channel as stored, secrets unsealed into it: the caller
 * frees with sp_channel_free. version (may be NULL) gets the row's
 * version (spd_channel_version). SP_ERR_NOT_FOUND when absent; SP_ERR_AUTH
 * when its secrets do not open. */
sp_error spd_channel_load(spd_app *app, sp_store *store, const char *tenant, const char *id, sp_channel **out,
                          uint64_t *version);
/* What a stored channel row says, as a number that changes whenever the
 * document or its sealed secrets do (a digest: `updated` counts whole
 * seconds, and two saves within one must not look the same). */
uint64_t spd_channel_version(const sp_store_channel_row *row);
/* Sealing of a channel's secrets document at rest (AES-256-GCM under the
 * app's secrets key, bound to tenant and channel id). */
sp_error spd_secrets_seal(spd_app *app, const char *tenant, const char *channel, const char *json, size_t len,
                          uint8_t **blob, size_t *blob_len);
sp_error spd_secrets_open(spd_app *app, const char *tenant, const char *channel, const uint8_t *blob, size_t len,
                          char **json, size_t *json_len);

/* ---- campaigns (campaigns.c) ---- */

void spd_campaigns_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *campaign_id,
                         const char *action);

/* ---- sending (sender.c) ---- */

typedef struct spd_sender spd_sender;
/* Starts config.sender_threads workers and the scheduler (nothing when 0).
 * store_backend (sp_store_backend_name) decides [sender] hand_over = auto. */
sp_error spd_sender_start(spd_app *app, const char *store_backend);
/* Stops claiming, lets requests in flight finish (up to grace_ms), puts
 * what is left back in the queue, joins the threads. */
void spd_sender_stop(spd_app *app, unsigned grace_ms);
/* Wakes idle workers: something was queued. */
void spd_sender_wake(spd_app *app);

/* A campaign's compiled spec: what a worker renders each message with. */
typedef struct spd_campaign_spec spd_campaign_spec;
/* Parses and checks a spec document (templates compile, audience well
 * formed, placeholders known PII fields or attribute names); a message
 * naming the field in err. */
sp_error spd_campaign_spec_parse(const json_t *spec, const spd_settings *settings, sp_channel_kind kind,
                                 spd_campaign_spec **out, char *err, size_t cap);
void spd_campaign_spec_free(spd_campaign_spec *spec);
/* The audience the spec names, pointing into spec (valid while it lives). */
void spd_campaign_spec_audience(const spd_campaign_spec *spec, sp_store_audience *out);

/* One message prepared for the wire: the request body (sealed when the
 * channel encrypts), its headers, and what the validation report says. */
typedef struct spd_send_report {
    unsigned provider_status;
    sp_error result;
    bool encrypted;
    bool plaintext_absent;   /* none of the personal values appear in the bytes sent */
    char key_version[SP_KEY_VERSION_CHARS + 1];
    char message_id[SP_STORE_MAX_MESSAGE_ID + 1];
    char missing[SP_TEMPLATE_MAX_NAME + 1]; /* a placeholder with no value, "" when none */
    uint64_t total_us;
    bool tracked;            /* the send has an outbox row: /v1/messages/{id} and callbacks find it */
} spd_send_report;
/* Expands a queued or scheduled campaign's audience into the outbox and
 * marks it sending, in one transaction. */
sp_error spd_campaign_start(spd_app *app, sp_store *store, const char *tenant, const char *id);
/* A test send: renders the campaign's message for one profile and sends it
 * now, on this thread, reporting what happened. */
sp_error spd_send_test(spd_app *app, const char *tenant, const char *campaign, const char *profile_id,
                       spd_send_report *report);

/* ---- callbacks (callbacks.c) ---- */

/* on_headers of a callback route: the allow-list ([callbacks] allow, 403),
 * an announced body over [callbacks] max_body (413), shutting down (503).
 * No credential: the wire signature is the authentication. */
sp_http_verdict spd_callback_headers(spd_app *app, sp_http_request *req);
/* on_request of a callback route (m from spd_route_match_path): verify,
 * de-duplicate, decrypt, parse, record, reply. */
void spd_callback_request(spd_app *app, sp_http_request *req, const spd_route_match *m);
/* The base URL providers reach this daemon at, without a trailing '/'. */
void spd_public_url(const spd_app *app, char *out, size_t cap);
/* {"delivery_report": ".../dlr", "inbound": ".../inbound"} of a channel;
 * NULL when out of memory. */
json_t *spd_callback_urls(const spd_app *app, const char *tenant, const char *channel);
/* The writers that record verified callbacks (see callbacks.c): started
 * before the server, stopped after it (the server's stop waits for the
 * requests they hold, so they must still run then). */
typedef struct spd_callbacks spd_callbacks;
sp_error spd_callbacks_start(spd_app *app, unsigned writers);
void spd_callbacks_stop(spd_app *app);
/* Forgets webhook-ids older than [callbacks] keep, in bounded chunks (the
 * scheduler calls it hourly). */
void spd_callbacks_prune(spd_app *app, sp_store *store);

/* ---- delivery tracking (tracking.c) ---- */
/* GET /v1/messages/{message_id} */
void spd_message_get(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *message_id);
/* GET /v1/campaigns/{id}/stats?bucket=<seconds> */
void spd_campaign_stats(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *campaign_id);
/* The message's status as the API shows it; NULL when out of memory. */
json_t *spd_message_json(const sp_store_message_status *st);

/* ---- routes (admin.c) ---- */
void spd_admin_route(spd_app *app, sp_http_request *req, const spd_auth *auth, const char *path_after_prefix);
/* Issues a credential of tenant ("" for an admin credential) on the
 * caller's store connection (inside its transaction): a new client access
 * key, or one more secret under existing_client_key (NULL for a new key).
 * expires_in 0: never. *out gets {"id","tenant","client_access_key",
 * "api_secret","created","expires"}; the secret is in no other place.
 * SP_ERR_INVALID_ARGUMENT with a message in err for a bad request. */
sp_error spd_credential_issue(spd_app *app, sp_store *store, const char *tenant, const char *existing_client_key,
                              int64_t expires_in, json_t **out, char *err, size_t cap);

#endif
