/*
 * sealpost-relay's internal contract: what a CPaaS provider runs to take
 * sealed payloads from a platform, verify and open them, hand e-mail to an
 * SMTP server and SMS to Kannel, and report back with sealed callbacks.
 *
 *   main.c      start-up, signals, --check
 *   config.c    the INI file: one table of bounded entries, credentials
 *   auth.c      allow-lists (CIDR) and the API credentials of the seed
 *   payload.c   the relay payload format (one record or a batch; fuzzed)
 *   smtp.c      RFC 5322 message builder and the libcurl SMTP hand-off
 *   kannel.c    sendsms URLs, DLR status mapping, DLR/MO query parsing (fuzzed)
 *   state.c     the SQLite state file: seen webhook-ids, handed-on messages,
 *               the durable callback queue (bodies encrypted at rest)
 *   keys.c      the provider key file, reloaded when it changes on disk
 *   callbacks.c callback bodies, the retry schedule, the queue's drain thread
 *   server.c    the HTTPS API (/v1/messages, /healthz, /metrics) and the
 *               loopback listener Kannel calls (/kannel/dlr, /kannel/mo)
 *   check.c     --check: configuration and reachability
 *
 * Public headers of libsealpost only, plus jansson, libcurl, SQLite and
 * OpenSSL's digest for the credential hashes.
 */
#ifndef RELAY_H
#define RELAY_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "sealpost/sealpost.h"

#define RELAY_MAX_PATH 1024
#define RELAY_MAX_CREDENTIALS 16
#define RELAY_MAX_SUB_MERCHANTS 64
#define RELAY_MAX_PREFIXES 16
#define RELAY_MAX_URL 2048
#define RELAY_MAX_ACCESS_KEY 256 /* X-Client-Access-Key */
#define RELAY_MAX_API_SECRET 128 /* X-Api-Secret */
#define RELAY_MAX_MERCHANT 64    /* X-Merchant-Id, X-Sub-Merchant-Id */

/* ---- config (config.c) ---- */

typedef struct relay_credential {
    char access_key[RELAY_MAX_ACCESS_KEY + 1];
    uint8_t key_hash[32];    /* SHA-256 of access_key, compared in constant time */
    uint8_t secret_hash[32]; /* SHA-256 of the API secret, as configured */
    int64_t expires;         /* Unix seconds; 0: never */
} relay_credential;

typedef enum relay_starttls { RELAY_STARTTLS_TRY = 0, RELAY_STARTTLS_REQUIRE = 1, RELAY_STARTTLS_OFF = 2 } relay_starttls;

typedef struct relay_config {
    /* [server] */
    char listen_address[64];
    uint16_t port;
    char tls_cert[RELAY_MAX_PATH];
    char tls_key[RELAY_MAX_PATH];
    unsigned threads;
    size_t max_body;
    unsigned tolerance_s;
    sp_allow_list allow;
    /* [auth] */
    char merchant_id[RELAY_MAX_MERCHANT + 1];
    char sub_merchants_text[1024];
    char sub_merchants[RELAY_MAX_SUB_MERCHANTS][RELAY_MAX_MERCHANT + 1];
    size_t n_sub_merchants;
    relay_credential credentials[RELAY_MAX_CREDENTIALS];
    size_t n_credentials;
    /* [keys] */
    char keys_file[RELAY_MAX_PATH];
    /* [smtp] */
    char smtp_url[RELAY_MAX_URL];
    relay_starttls smtp_starttls;
    unsigned smtp_timeout_s;
    char smtp_username[256];
    char smtp_password_file[RELAY_MAX_PATH];
    char smtp_password[256]; /* read from the file at load; wiped at free */
    /* [kannel] */
    char kannel_sendsms_url[RELAY_MAX_URL];
    char kannel_username[128];
    char kannel_password[128];
    char kannel_smsc[64];
    char kannel_dlr_address[64];
    uint16_t kannel_dlr_port;
    unsigned kannel_timeout_s;
    /* [platform] */
    char callback_allow_text[4096];
    char callback_allow[RELAY_MAX_PREFIXES][RELAY_MAX_URL];
    size_t n_callback_allow;
    char inbound_url[RELAY_MAX_URL];
    char ca_file[RELAY_MAX_PATH];
    sp_profile callback_profile;
    sp_alg callback_alg;
    double retry_scale;
    unsigned callback_timeout_s;
    /* [state] */
    char state_path[RELAY_MAX_PATH];
    int64_t keep_s;
    /* [log] */
    char log_path[RELAY_MAX_PATH];
    sp_log_level log_level;
} relay_config;

/* Loads and validates; on failure one line ("relay.conf:12: [smtp] url:
 * must start with smtp:// or smtps://") goes into err. */
sp_error relay_config_load(const char *path, relay_config *out, char *err, size_t cap);
/* The same from text in memory (tests); name labels the messages. */
sp_error relay_config_parse(const char *text, const char *name, relay_config *out, char *err, size_t cap);
void relay_config_wipe(relay_config *cfg);

typedef struct relay_config_info {
    const char *section;
    const char *key;
    const char *default_text; /* "" : none (required or optional, see help) */
    const char *help;
} relay_config_info;
size_t relay_config_entry_count(void);
const relay_config_info *relay_config_entry(size_t index);

/* ---- credentials (auth.c) ---- */

/* "KEY:HEX64:EXPIRES" into a credential (the secret's hash as given). */
sp_error relay_credential_parse(const char *text, relay_credential *out);
/* SHA-256 (OpenSSL). */
void relay_sha256(const void *data, size_t len, uint8_t out[32]);

typedef enum relay_auth_result {
    RELAY_AUTH_OK = 0,
    RELAY_AUTH_MISSING = 1,  /* a required header absent or over its limit */
    RELAY_AUTH_BAD_KEY = 2,  /* no credential with this key and secret */
    RELAY_AUTH_EXPIRED = 3,  /* the key and secret match an expired credential */
    RELAY_AUTH_MERCHANT = 4, /* merchant or sub-merchant not ours */
} relay_auth_result;

/* Every credential is looked at (no early exit), hashes compared in
 * constant time. The result is for logs and tests: every failure gets the
 * same 401 on the wire. */
relay_auth_result relay_auth_check(const relay_config *cfg, const char *access_key, const char *api_secret,
                                   const char *merchant, const char *sub_merchant, int64_t now);
const char *relay_auth_result_name(relay_auth_result r);

/* A URL is within [platform] callback_allow when one prefix is a prefix of
 * it and the URL has no user info, fragment, control bytes or spaces. */
bool relay_url_allowed(const relay_config *cfg, const char *url);

/* ---- the payload (payload.c) ---- */

#define RELAY_MAX_BATCH 1000
#define RELAY_MAX_MESSAGE_ID 64
#define RELAY_MAX_ADDRESS 254
#define RELAY_MAX_PHONE 20
#define RELAY_MAX_NAME 128
#define RELAY_MAX_SUBJECT 998
#define RELAY_MAX_EMAIL_BODY (1u << 20)
#define RELAY_MAX_SMS_TEXT 1600
#define RELAY_MAX_SENDER 20

typedef enum relay_kind { RELAY_KIND_EMAIL = 1, RELAY_KIND_SMS = 2 } relay_kind;

/* Points into the parsed document (wiped when freed); "" for absent
 * optional strings. */
typedef struct relay_record {
    relay_kind kind;
    const char *message_id;
    const char *to;
    const char *from, *from_name, *reply_to, *subject, *html; /* e-mail */
    const char *text;                                        /* both */
    const char *sender;                                      /* SMS */
    const char *dlr_url, *inbound_url;
} relay_record;

typedef struct relay_payload {
    json_t *doc;
    relay_record *records;
    size_t count;
    bool batch;
} relay_payload;

/* Parses the plaintext. Errors: SP_ERR_BAD_JSON (not JSON, duplicate key,
 * not an object), SP_ERR_TOO_LARGE (over RELAY_MAX_BATCH records or a
 * field over its limit), SP_ERR_INVALID_ARGUMENT (a rule broken; err tells
 * which field of which record, never its value). */
sp_error relay_payload_parse(const uint8_t *data, size_t len, relay_payload *out, char *err, size_t cap);
void relay_payload_free(relay_payload *p);
bool relay_message_id_valid(const char *s);

/* ---- e-mail (smtp.c) ---- */

/* The RFC 5322 message for a record: Date, Message-ID
 * (<message_id@domain of from>), From with its display name, To, Reply-To,
 * Subject (RFC 2047 B-encoded when not printable ASCII), MIME-Version, and a
 * text/plain, text/html or multipart/alternative body in quoted-printable.
 * *out is malloc'd; free it with relay_wiped_free(*out, *len). */
sp_error relay_smtp_build(const relay_record *r, int64_t now, const char *boundary_seed, char **out, size_t *len);
/* RFC 2047 encoded-word(s) of a header value when needed, else the value. */
sp_error relay_rfc2047(const char *value, char *out, size_t cap);

typedef enum relay_outcome {
    RELAY_OUT_DELIVERED = 1,   /* SMTP 2xx / Kannel 202 */
    RELAY_OUT_HARD_BOUNCE = 2, /* SMTP 5xx */
    RELAY_OUT_SOFT_BOUNCE = 3, /* SMTP 4xx */
    RELAY_OUT_UNAVAILABLE = 4, /* no answer: the platform should retry */
    RELAY_OUT_REJECTED = 5,    /* Kannel refused the message (4xx) */
} relay_outcome;
const char *relay_outcome_name(relay_outcome o);

/* Hands one message to the SMTP server; *code gets the SMTP reply code. */
relay_outcome relay_smtp_send(const relay_config *cfg, const relay_record *r, int *code);
/* Connects and says EHLO (no mail): for --check. */
bool relay_smtp_reachable(const relay_config *cfg);

/* ---- SMS (kannel.c) ---- */

/* The sendsms GET URL for a record, with dlr-mask=31 and a dlr-url to the
 * relay's DLR listener carrying the message id and dlr_tag (NULL: none),
 * which proves to the listener that the report is about a message the
 * relay sent. */
#define RELAY_DLR_TAG_CHARS 32
sp_error relay_kannel_url(const relay_config *cfg, const relay_record *r, const char *dlr_tag, char *out,
                          size_t cap);
/* application/x-www-form-urlencoded encoding of a value. */
sp_error relay_form_encode(const char *value, size_t len, char *out, size_t cap, size_t *out_len);

typedef enum relay_dlr_event {
    RELAY_DLR_DELIVERED = 1,
    RELAY_DLR_FAILED = 2,
    RELAY_DLR_BUFFERED = 3, /* not final: no callback */
    RELAY_DLR_UNKNOWN = 4,  /* no bit we know */
} relay_dlr_event;
/* Kannel's DLR type bits: 1 wins, then 2 and 16, then 8 and 4. The failure
 * code: 901 for 2 (not delivered to the phone), 902 for 16 (rejected by the
 * SMSC). */
relay_dlr_event relay_dlr_map(unsigned type, int *code);

/* A query string from Kannel (the DLR or MO call), decoded and bounded:
 * meta, type, smsc, ts, from, text. Unknown names are ignored; a name twice,
 * bad %-encoding or a value over its limit is SP_ERR_INVALID_ARGUMENT. */
#define RELAY_MAX_KANNEL_QUERY 8192
typedef struct relay_kannel_query {
    char meta[RELAY_MAX_MESSAGE_ID + 1];
    bool has_type;
    unsigned type;
    char smsc[65];
    int64_t ts; /* 0: absent */
    char from[33];
    char sig[RELAY_DLR_TAG_CHARS + 1];
    char text[RELAY_MAX_SMS_TEXT * 4 + 1];
    size_t text_len;
    bool has_from, has_text;
} relay_kannel_query;
sp_error relay_kannel_query_parse(const char *query, size_t len, relay_kannel_query *out);
void relay_kannel_query_wipe(relay_kannel_query *q);

relay_outcome relay_kannel_send(const relay_config *cfg, const relay_record *r, const char *dlr_tag,
                                unsigned *status);

/* ---- the state file (state.c) ---- */

typedef struct relay_state relay_state;
sp_error relay_state_open(const char *path, relay_state **out);
void relay_state_close(relay_state *st);
/* webhook-ids: seen within keep_s? / remember one. */
sp_error relay_state_seen(relay_state *st, const char *webhook_id, int64_t now, int64_t keep_s, bool *seen);
sp_error relay_state_remember(relay_state *st, const char *webhook_id, int64_t now);
/* Records handed on (a batch retried after a partial failure skips them). */
sp_error relay_state_handed(relay_state *st, const char *message_id, bool *handed);
/* A message handed on: where its reports go; phone_tag is the HMAC of an
 * SMS recipient (NULL for e-mail), for matching replies. */
sp_error relay_state_message_put(relay_state *st, const char *message_id, relay_kind kind, const char *dlr_url,
                                 const char *inbound_url, const uint8_t *phone_tag, int64_t now);
sp_error relay_state_message_get(relay_state *st, const char *message_id, char *dlr_url, size_t dlr_cap,
                                 char *inbound_url, size_t inbound_cap);
/* The last message sent to a number (by its tag); SP_ERR_NOT_FOUND. */
sp_error relay_state_last_to(relay_state *st, const uint8_t *phone_tag, char *message_id, size_t id_cap,
                             char *inbound_url, size_t inbound_cap);
/* The callback queue. body is stored encrypted under the state key. */
typedef struct relay_queued {
    char id[48];
    char url[RELAY_MAX_URL];
    uint8_t *body; /* plaintext, wiped and freed by relay_queued_clear */
    size_t body_len;
    unsigned attempt; /* attempts made so far */
} relay_queued;
sp_error relay_state_enqueue(relay_state *st, const char *id, const char *url, const uint8_t *body, size_t len,
                             int64_t due_ms);
/* Up to cap due entries (due_ms <= now_ms), oldest first. */
sp_error relay_state_due(relay_state *st, int64_t now_ms, relay_queued *out, size_t cap, size_t *n);
sp_error relay_state_reschedule(relay_state *st, const char *id, unsigned attempt, int64_t due_ms);
sp_error relay_state_dequeue(relay_state *st, const char *id);
sp_error relay_state_queue_depth(relay_state *st, int64_t *depth);
/* Drops webhook-ids and message rows older than keep_s. */
sp_error relay_state_prune(relay_state *st, int64_t now, int64_t keep_s);
void relay_queued_clear(relay_queued *q);
/* The dlr-url's tag for a message id: 16 bytes of an HMAC under the state
 * key, in lowercase hex. */
sp_error relay_state_dlr_tag(relay_state *st, const char *message_id, char out[RELAY_DLR_TAG_CHARS + 1]);
/* HMAC of a phone number under the state key (numbers never reach disk). */
sp_error relay_state_phone_tag(relay_state *st, const char *phone, uint8_t out[32]);

/* ---- keys (keys.c) ---- */

typedef struct relay_keys relay_keys;
sp_error relay_keys_open(const char *path, size_t max_body, unsigned tolerance_s, relay_keys **out);
void relay_keys_close(relay_keys *k);
/* Reloads the file when its size, mtime or inode changed (at most once a
 * second is checked unless force). A file that no longer loads keeps the
 * previous keys (logged). */
void relay_keys_refresh(relay_keys *k, bool force);
/* A wire for one caller at a time, built from the current keys. */
sp_error relay_keys_acquire(relay_keys *k, sp_wire **out);
void relay_keys_release(relay_keys *k, sp_wire *w);
/* Versions and states, for --check and /healthz: "v (active), w (decrypt-only)". */
void relay_keys_describe(relay_keys *k, char *out, size_t cap);
uint64_t relay_keys_generation(relay_keys *k);

/* ---- callbacks (callbacks.c) ---- */

#define RELAY_SCHEDULE_STEPS 8
/* Delay in ms before attempt n (0-based: 0 = at once) on the Standard
 * Webhooks schedule times scale; -1 past the last attempt. */
int64_t relay_schedule_delay_ms(unsigned attempt, double scale);

/* Bodies of PROTOCOL.md §10.4. */
sp_error relay_cb_email(const char *event, const char *meta, int64_t ts, int code, char **out, size_t *len);
sp_error relay_cb_sms(const char *event, const char *meta, int64_t ts, int code, const char *incoming_text,
                      char **out, size_t *len);
sp_error relay_cb_form_inbound(const char *from, const char *text, size_t text_len, const char *smsc, int64_t ts,
                               char **out, size_t *len);

struct relay_app;
/* Queues a callback (a fresh cb_<uuid> id) and wakes the drain thread. */
sp_error relay_callback_queue(struct relay_app *app, const char *url, const char *body, size_t len);
sp_error relay_callbacks_start(struct relay_app *app);
void relay_callbacks_stop(struct relay_app *app);

/* ---- the app ---- */

typedef struct relay_metrics {
    sp_metric *requests_ok, *requests_dup, *requests_unauth, *requests_forbidden, *requests_bad, *requests_unavail;
    sp_metric *handed[3][6]; /* [kind][outcome] */
    sp_metric *cb_sent, *cb_retried, *cb_dropped, *cb_rejected, *queue_depth;
    sp_metric *dlr_in, *mo_in;
} relay_metrics;

typedef struct relay_app {
    relay_config cfg;
    sp_metrics *metrics;
    relay_metrics m;
    relay_state *state;
    relay_keys *keys;
    pthread_t cb_thread;
    bool cb_running;
    pthread_mutex_t cb_lock;
    pthread_cond_t cb_cond;
    atomic_bool stopping;
    bool cb_wake;
} relay_app;

sp_error relay_metrics_init(relay_app *app);
void relay_on_request(void *arg, sp_http_request *req);
sp_http_verdict relay_on_headers(void *arg, sp_http_request *req);
void relay_dlr_on_request(void *arg, sp_http_request *req);

/* --check: prints to out, returns true when everything is reachable. */
bool relay_check(const relay_config *cfg, FILE *out);

/* One blocking HTTP request through sp_http_client (GET when body is
 * NULL); the platform's ca_file is trusted. *status gets the HTTP status (0
 * without an answer), *retry_after_ms (may be NULL) the answer's
 * Retry-After or -1; the result is sp_http_client's classification. */
sp_error relay_http_call(const relay_config *cfg, const char *url, const sp_http_client_header *headers,
                         size_t n_headers, const void *body, size_t body_len, unsigned timeout_s, unsigned *status,
                         int64_t *retry_after_ms);

/* Helpers shared by the units. */
void relay_wiped_free(void *p, size_t len);
/* Frees what json_dumps returned (jansson's allocator, which wipes). */
void relay_json_free(void *p);
int64_t relay_now_ms(void);
void relay_log_error(const char *event, sp_error rc);

#endif
