/*
 * A provider channel: how one tenant's Email or SMS reaches one CPaaS
 * provider over generic HTTP (CleverTap-compatible), and whether its
 * payloads are encrypted.
 *
 * A channel is a JSON document (docs/CHANNELS.md, field by field) that the
 * admin or tenant API saves. sp_channel_parse validates all of it at once,
 * including that the body template, filled with sample values, is valid
 * JSON, so a channel that would fail at send time is refused at save time
 * with a message naming the field. Secrets (the Basic password, the OAuth2
 * client secret, the values of secret headers) live in memory wiped on free and are split from the rest
 * for storage: the public document (with "…_set": true markers instead of
 * them) is what is stored in the clear and shown by GET, the secrets
 * document is what the daemon encrypts before storing it.
 *
 * sp_channel_render builds the provider request body (or, for GET, the
 * query string) for one message or a batch, per message on the send path:
 * it allocates nothing, compares no strings, and wipes its output on
 * failure. A parsed channel is immutable: threads may render it at once.
 */
#ifndef SEALPOST_CHANNEL_H
#define SEALPOST_CHANNEL_H

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"
#include "sealpost/template.h"
#include "sealpost/wire.h"

SP_BEGIN_DECLS

#define SP_CHANNEL_MAX_DOCUMENT (64u * 1024) /* bytes of JSON, public and secrets alike */
#define SP_CHANNEL_MAX_URL 2048
#define SP_CHANNEL_MAX_NICKNAME 64
#define SP_CHANNEL_MAX_HEADERS 32
#define SP_CHANNEL_MAX_HEADER_VALUE 1024
#define SP_CHANNEL_MAX_AUTH_HEADERS 8 /* secret headers of auth type "headers" */
#define SP_CHANNEL_MAX_FORM_FIELDS 64
#define SP_CHANNEL_MAX_CUSTOM 32
#define SP_CHANNEL_MAX_BATCH 1000
#define SP_CHANNEL_MAX_KEY_NAME 64 /* a keyring channel name, [A-Za-z0-9_.-] */
#define SP_CHANNEL_ERR_CAP 256     /* room enough for any parse message */

typedef enum sp_channel_kind { SP_CHANNEL_EMAIL = 1, SP_CHANNEL_SMS = 2 } sp_channel_kind;
typedef enum sp_channel_method { SP_CHANNEL_POST = 1, SP_CHANNEL_GET = 2 } sp_channel_method;
typedef enum sp_channel_body_type { SP_CHANNEL_BODY_JSON = 1, SP_CHANNEL_BODY_FORM = 2 } sp_channel_body_type;
typedef enum sp_channel_auth_type {
    SP_CHANNEL_AUTH_NONE = 1,
    SP_CHANNEL_AUTH_BASIC = 2,
    SP_CHANNEL_AUTH_OAUTH2 = 3, /* client credentials grant */
    SP_CHANNEL_AUTH_HEADERS = 4, /* secret headers sent on every request (an API secret) */
} sp_channel_auth_type;
typedef enum sp_channel_client_auth {
    SP_CHANNEL_CLIENT_AUTH_BASIC = 1, /* client_secret_basic */
    SP_CHANNEL_CLIENT_AUTH_BODY = 2,  /* client_secret_post */
} sp_channel_client_auth;

typedef struct sp_channel sp_channel;

/* Parses and validates a channel document submitted through the API.
 * Errors: SP_ERR_BAD_CONFIG (a rule broken: err says which field and why,
 * e.g. "request.endpoint: must be an https URL (http only for loopback
 * hosts)"), SP_ERR_BAD_JSON (not JSON: err gives line and column),
 * SP_ERR_TOO_LARGE (over SP_CHANNEL_MAX_DOCUMENT), SP_ERR_NO_MEMORY.
 * err (err_cap bytes, NUL-terminated, may be NULL) never quotes a value. */
SP_API SP_MUST_CHECK sp_error sp_channel_parse(const char *json, size_t len, sp_channel **out, char *err,
                                               size_t err_cap);
/* Rebuilds a channel from what sp_channel_public_json and
 * sp_channel_secrets_json produced; the same rules apply (a stored public
 * document may be up to 4 KiB over SP_CHANNEL_MAX_DOCUMENT: the canonical
 * form spells out defaults the submitted one could leave out). */
SP_API SP_MUST_CHECK sp_error sp_channel_parse_stored(const char *public_json, size_t public_len,
                                                      const char *secrets_json, size_t secrets_len,
                                                      sp_channel **out, char *err, size_t err_cap);
/* An update through the API: like sp_channel_parse, except that where the
 * document says "password_set": true / "client_secret_set": true instead of
 * giving the secret, the previous channel's secret is kept (a GET reply can
 * be edited and sent back). previous may be NULL (then the markers are
 * refused). */
SP_API SP_MUST_CHECK sp_error sp_channel_parse_update(const char *json, size_t len, const sp_channel *previous,
                                                      sp_channel **out, char *err, size_t err_cap);
SP_API void sp_channel_free(sp_channel *ch);

/* The canonical document without secrets, compact JSON, into out (cap
 * bytes, NUL-terminated; *len excludes the NUL). SP_ERR_BUFFER_TOO_SMALL
 * sets *len to the length needed (pass cap 0 to ask). */
SP_API SP_MUST_CHECK sp_error sp_channel_public_json(const sp_channel *ch, char *out, size_t cap, size_t *len);
/* Only the secrets, e.g. {"password":"…"}, or {} when there are none. The
 * caller wipes out when done; out is wiped on failure. */
SP_API SP_MUST_CHECK sp_error sp_channel_secrets_json(const sp_channel *ch, char *out, size_t cap, size_t *len);

/* ---- what the sender needs (strings NUL-terminated, valid while ch lives) ---- */
SP_API sp_channel_kind sp_channel_get_kind(const sp_channel *ch);
SP_API const char *sp_channel_nickname(const sp_channel *ch);
SP_API sp_channel_method sp_channel_get_method(const sp_channel *ch);
SP_API const char *sp_channel_endpoint(const sp_channel *ch);
SP_API sp_channel_body_type sp_channel_get_body_type(const sp_channel *ch);
/* "application/json", "application/x-www-form-urlencoded", or NULL for GET
 * (the form goes in the query string and there is no body). */
SP_API const char *sp_channel_content_type(const sp_channel *ch);
/* Static headers, in document order; sp_header points into ch. */
SP_API size_t sp_channel_header_count(const sp_channel *ch);
SP_API SP_MUST_CHECK sp_error sp_channel_header(const sp_channel *ch, size_t i, sp_header *out);
/* Records per request: 1 means unbatched (the body is one record), more
 * means the body is {"<array key>":[record,…]} with 1..size records. */
SP_API size_t sp_channel_batch_size(const sp_channel *ch);
SP_API const char *sp_channel_batch_key(const sp_channel *ch); /* NULL when unbatched */
/* The JSON body's compiled template (NULL for a form body), for callers
 * that want to know its placeholders. */
SP_API const sp_template *sp_channel_body_template(const sp_channel *ch);
/* The email sender and custom values (NULL when not set or not an email
 * channel), the SMS callback URLs and sender id (NULL when not set). */
SP_API const char *sp_channel_from_name(const sp_channel *ch);
SP_API const char *sp_channel_from_address(const sp_channel *ch);
SP_API const char *sp_channel_reply_to(const sp_channel *ch);
SP_API const char *sp_channel_delivery_report_url(const sp_channel *ch);
SP_API const char *sp_channel_inbound_url(const sp_channel *ch);
SP_API const char *sp_channel_sender_id(const sp_channel *ch);
/* custom values, in document order; each is the $$<key> placeholder */
SP_API size_t sp_channel_custom_count(const sp_channel *ch);
SP_API const char *sp_channel_custom_key(const sp_channel *ch, size_t i);
SP_API const char *sp_channel_custom_value(const sp_channel *ch, size_t i);

typedef struct sp_channel_auth {
    sp_channel_auth_type type;
    const char *username; /* basic */
    const char *password; /* basic; a secret */
    const char *token_url;     /* oauth2 */
    const char *client_id;     /* oauth2 */
    const char *client_secret; /* oauth2; a secret */
    const char *scope;         /* oauth2, NULL when absent */
    const char *audience;      /* oauth2, NULL when absent */
    sp_channel_client_auth client_auth; /* oauth2 */
} sp_channel_auth;
/* Fields that do not apply are NULL / 0. */
SP_API void sp_channel_get_auth(const sp_channel *ch, sp_channel_auth *out);
/* Auth type "headers": its 1..SP_CHANNEL_MAX_AUTH_HEADERS secret headers,
 * in document order (0 for other types); the values are secrets, like the
 * Basic password. sp_header points into ch. */
SP_API size_t sp_channel_auth_header_count(const sp_channel *ch);
SP_API SP_MUST_CHECK sp_error sp_channel_auth_header(const sp_channel *ch, size_t i, sp_header *out);

typedef struct sp_channel_encryption {
    bool enabled;
    sp_alg alg;         /* defaults to AES-256-GCM */
    sp_profile profile; /* defaults to compat */
    const char *key;    /* the keyring channel name; NULL when not set */
} sp_channel_encryption;
SP_API void sp_channel_get_encryption(const sp_channel *ch, sp_channel_encryption *out);

/* ---- per message ---- */
typedef struct sp_channel_value {
    const char *data; /* NULL: absent */
    size_t len;
} sp_channel_value;

/* One message. Fields a body does not use may be left absent; a used field
 * that is absent fails the render with SP_ERR_TEMPLATE. custom, when not
 * NULL, has sp_channel_custom_count() entries overriding the channel's
 * values where their data is not NULL. delivery_report_url and inbound_url
 * are the sender's fallbacks for $$DeliveryReportURL / $$InboundURL (the
 * platform's own callback URLs for the channel): used only when the
 * channel's setting of that name is unset; with neither, the value is
 * empty. */
typedef struct sp_channel_message {
    sp_channel_value to, body, message_id, campaign_id, subject, html, plaintext;
    const sp_channel_value *custom;
    sp_channel_value delivery_report_url, inbound_url;
} sp_channel_message;

/* The request body (JSON or form) or, for GET, the query string (without
 * '?': the caller appends it to the endpoint after '?', or after '&' when
 * the endpoint already has a query) for n messages: n is 1 unless the channel batches, then 1..batch
 * size. Values are escaped for where they land. No NUL is written. Errors:
 * SP_ERR_TEMPLATE (a used field absent, or not UTF-8 for a JSON body),
 * SP_ERR_BUFFER_TOO_SMALL (*len = the size needed), SP_ERR_INVALID_ARGUMENT.
 * out is wiped on every error. */
SP_API SP_MUST_CHECK sp_error sp_channel_render(const sp_channel *ch, const sp_channel_message *msgs, size_t n,
                                                char *out, size_t cap, size_t *len);

SP_END_DECLS

#endif
