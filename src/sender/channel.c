/*
 * Provider channels: the JSON document an admin or tenant saves, validated
 * whole at save time, and the per-message renderer of the provider request
 * body.
 *
 * Parsing walks the document with a fixed list of allowed members at every
 * level, so a typo is an error and not a setting silently left at its
 * default; each failure names the field's path and never quotes a value
 * (a value may be a secret or a customer's address). The body template is
 * compiled once and its $$ placeholders are bound to message fields, the
 * channel's own settings or its custom values, so rendering needs a switch
 * per placeholder and no string compare. A JSON body is checked twice: a
 * lexical pass that every $$ sits inside a JSON string (the only place
 * where escaping keeps the document well-formed), then a render with sample
 * values parsed by jansson, so a body that cannot be valid JSON is refused
 * now rather than by the provider at send time.
 *
 * Secrets (the Basic password, the OAuth2 client secret, the values of
 * secret headers) are kept apart for storage: the public document carries
 * "password_set": true (or the header names, "headers_set") in their place
 * and the secrets document carries only them. Every string the
 * channel holds is wiped when it is freed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>

#include <jansson.h>

#include "sealpost/channel.h"
#include "sender/sp_sender_internal.h"

/* where a placeholder's value comes from */
enum {
    SP_SRC_TO,
    SP_SRC_BODY,
    SP_SRC_MESSAGE_ID,
    SP_SRC_CAMPAIGN_ID,
    SP_SRC_SUBJECT,
    SP_SRC_HTML,
    SP_SRC_PLAINTEXT,
    SP_SRC_FROM_NAME,
    SP_SRC_FROM_ADDRESS,
    SP_SRC_REPLY_TO,
    SP_SRC_DELIVERY_REPORT_URL,
    SP_SRC_INBOUND_URL,
    SP_SRC_SENDER_ID,
    SP_SRC_CUSTOM /* + index into custom */
};

#define SP_CHANNEL_STORED_SLACK 4096u

#define SP_KIND_EMAIL_BIT 1u
#define SP_KIND_SMS_BIT 2u

static const struct {
    const char *name;
    uint16_t src;
    unsigned kinds;
} sp_ch_std[] = {
    {"To", SP_SRC_TO, SP_KIND_EMAIL_BIT | SP_KIND_SMS_BIT},
    {"Body", SP_SRC_BODY, SP_KIND_EMAIL_BIT | SP_KIND_SMS_BIT},
    {"MessageID", SP_SRC_MESSAGE_ID, SP_KIND_EMAIL_BIT | SP_KIND_SMS_BIT},
    {"CampaignID", SP_SRC_CAMPAIGN_ID, SP_KIND_EMAIL_BIT | SP_KIND_SMS_BIT},
    {"Subject", SP_SRC_SUBJECT, SP_KIND_EMAIL_BIT},
    {"FromName", SP_SRC_FROM_NAME, SP_KIND_EMAIL_BIT},
    {"FromAddress", SP_SRC_FROM_ADDRESS, SP_KIND_EMAIL_BIT},
    {"HTML", SP_SRC_HTML, SP_KIND_EMAIL_BIT},
    {"Plaintext", SP_SRC_PLAINTEXT, SP_KIND_EMAIL_BIT},
    {"ReplyToAddress", SP_SRC_REPLY_TO, SP_KIND_EMAIL_BIT},
    /* e-mail events (deliveries, bounces) come back to a delivery report
     * URL too, so both kinds may name it */
    {"DeliveryReportURL", SP_SRC_DELIVERY_REPORT_URL, SP_KIND_EMAIL_BIT | SP_KIND_SMS_BIT},
    {"InboundURL", SP_SRC_INBOUND_URL, SP_KIND_SMS_BIT},
    {"SenderID", SP_SRC_SENDER_ID, SP_KIND_SMS_BIT},
};

/* a compiled template with each placeholder index bound to a source */
typedef struct sp_ch_tpl {
    sp_template *t;
    uint16_t src[SP_TEMPLATE_MAX_PLACEHOLDERS];
} sp_ch_tpl;

typedef struct sp_ch_field {
    char *key;
    char *value; /* the template text, for the public document */
    char *key_enc;
    size_t key_enc_len;
    sp_ch_tpl tpl;
} sp_ch_field;

struct sp_channel {
    sp_channel_kind kind;
    char *nickname;
    char *endpoint;
    sp_channel_method method;
    sp_channel_body_type body_type;
    char *json_text;
    sp_ch_tpl body;
    size_t n_fields;
    sp_ch_field fields[SP_CHANNEL_MAX_FORM_FIELDS];
    size_t n_headers;
    char *hname[SP_CHANNEL_MAX_HEADERS];
    char *hvalue[SP_CHANNEL_MAX_HEADERS];
    size_t batch_size;
    char *batch_key;
    char *batch_prefix; /* {"<key>":[ */
    size_t batch_prefix_len;
    sp_channel_auth_type auth_type;
    char *username, *password, *token_url, *client_id, *client_secret, *scope, *audience;
    sp_channel_client_auth client_auth;
    size_t n_auth_headers;
    char *ahname[SP_CHANNEL_MAX_AUTH_HEADERS];
    char *ahvalue[SP_CHANNEL_MAX_AUTH_HEADERS]; /* secrets */
    char *from_name, *from_address, *reply_to, *delivery_report_url, *inbound_url, *sender_id;
    size_t n_custom;
    char *custom_key[SP_CHANNEL_MAX_CUSTOM];
    char *custom_value[SP_CHANNEL_MAX_CUSTOM];
    size_t custom_len[SP_CHANNEL_MAX_CUSTOM];
    bool enc_enabled;
    sp_alg alg;
    sp_profile profile;
    char *enc_key;
};

/* ---- parse state and errors ---- */
typedef enum { SP_CH_NEW, SP_CH_STORED, SP_CH_UPDATE } sp_ch_mode;

typedef struct sp_ch_parse {
    char *err;
    size_t err_cap;
    sp_ch_mode mode;
    json_t *secrets;          /* SP_CH_STORED */
    const sp_channel *prev;   /* SP_CH_UPDATE */
    sp_channel *ch;
    bool used_password, used_client_secret, used_headers;
} sp_ch_parse;

static void sp_ch_set_err(sp_ch_parse *p, const char *path, const char *msg) {
    if (p->err == NULL || p->err_cap == 0) return;
    int n = path && *path ? snprintf(p->err, p->err_cap, "%s: %s", path, msg) : snprintf(p->err, p->err_cap, "%s", msg);
    if (n < 0) p->err[0] = 0;
}

__attribute__((format(printf, 3, 4))) static sp_error sp_ch_fail(sp_ch_parse *p, const char *path,
                                                                 const char *fmt, ...) {
    char msg[SP_CHANNEL_ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) msg[0] = 0;
    sp_ch_set_err(p, path, msg);
    return SP_ERR_BAD_CONFIG;
}

static sp_error sp_ch_oom(sp_ch_parse *p) {
    sp_ch_set_err(p, NULL, "out of memory");
    return SP_ERR_NO_MEMORY;
}

/* A member name as it may appear in a message: printable ASCII, cut short. */
static void sp_ch_safe_name(const char *key, char *out, size_t cap) {
    size_t n = 0, i = 0;
    for (; key[i] && n + 4 < cap && i < 40; i++) {
        unsigned char c = (unsigned char)key[i];
        out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (key[i]) {
        out[n++] = '.';
        out[n++] = '.';
        out[n++] = '.';
    }
    out[n] = 0;
}

/* "<parent>.<key>" with the key made safe to show */
static void sp_ch_path(char *out, size_t cap, const char *parent, const char *key) {
    char safe[48];
    sp_ch_safe_name(key, safe, sizeof safe);
    int n = parent && *parent ? snprintf(out, cap, "%s.%s", parent, safe) : snprintf(out, cap, "%s", safe);
    if (n < 0) out[0] = 0;
}

/* Refuses members of obj not in allowed (NULL-terminated). */
static sp_error sp_ch_only(sp_ch_parse *p, json_t *obj, const char *path, const char *const *allowed) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++) ok = strcmp(allowed[i], key) == 0;
        if (!ok) {
            char where[160];
            sp_ch_path(where, sizeof where, path, key);
            return sp_ch_fail(p, where, "unknown field");
        }
    }
    return SP_OK;
}

static sp_error sp_ch_object(sp_ch_parse *p, json_t *parent, const char *key, const char *path, bool required,
                             json_t **out) {
    json_t *v = json_object_get(parent, key);
    *out = NULL;
    if (v == NULL) return required ? sp_ch_fail(p, path, "is required") : SP_OK;
    if (!json_is_object(v)) return sp_ch_fail(p, path, "must be an object");
    *out = v;
    return SP_OK;
}

static sp_error sp_ch_string(sp_ch_parse *p, json_t *parent, const char *key, const char *path, bool required,
                             const char **s, size_t *len) {
    json_t *v = json_object_get(parent, key);
    *s = NULL;
    *len = 0;
    if (v == NULL) return required ? sp_ch_fail(p, path, "is required") : SP_OK;
    if (!json_is_string(v)) return sp_ch_fail(p, path, "must be a string");
    *s = json_string_value(v);
    *len = json_string_length(v);
    return SP_OK;
}

static sp_error sp_ch_dup(sp_ch_parse *p, const char *s, size_t len, char **out) {
    char *d = sp_malloc(len + 1);
    if (d == NULL) return sp_ch_oom(p);
    if (len) memcpy(d, s, len);
    d[len] = 0;
    *out = d;
    return SP_OK;
}

static void sp_ch_str_free(char *s) {
    if (s != NULL) sp_free_wiped(s, strlen(s) + 1);
}

/* ---- value rules ---- */
/* UTF-8 without control characters (NUL included) */
static bool sp_ch_text_ok(const char *s, size_t len, size_t min, size_t max) {
    if (len < min || len > max) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return false;
    }
    return sp_utf8_valid((const uint8_t *)s, len);
}

static bool sp_ch_ascii_ok(const char *s, size_t len, size_t min, size_t max) {
    if (len < min || len > max) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e) return false;
    }
    return true;
}

static bool sp_ch_alnum(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool sp_ch_token_char(unsigned char c) {
    return sp_ch_alnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char sp_ch_url_rule[] = "must be an https URL (http only for loopback hosts)";

/* NULL when s is a URL sealpost may call; otherwise why not. */
static const char *sp_ch_url_problem(const char *s, size_t len) {
    if (len > SP_CHANNEL_MAX_URL) return "must be at most 2048 characters";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) return "must not contain spaces, control or non-ASCII characters";
    }
    bool tls;
    size_t at;
    if (len >= 8 && sp_ascii_ieq(s, 8, "https://")) {
        tls = true;
        at = 8;
    } else if (len >= 7 && sp_ascii_ieq(s, 7, "http://")) {
        tls = false;
        at = 7;
    } else {
        return sp_ch_url_rule;
    }
    if (memchr(s, '#', len) != NULL) return "must not have a fragment ('#')";
    size_t end = at;
    while (end < len && s[end] != '/' && s[end] != '?') end++;
    const char *auth = s + at;
    size_t auth_len = end - at;
    if (memchr(auth, '@', auth_len) != NULL) return "must not contain user info (credentials belong in auth)";
    char host[256];
    size_t host_len;
    const char *rest;
    bool v6 = auth_len > 0 && auth[0] == '[';
    if (v6) {
        const char *close = memchr(auth, ']', auth_len);
        if (close == NULL) return "has an invalid IPv6 host";
        host_len = (size_t)(close - auth) - 1;
        if (host_len == 0 || host_len >= sizeof host) return "has an invalid IPv6 host";
        memcpy(host, auth + 1, host_len);
        rest = close + 1;
    } else {
        const char *colon = memchr(auth, ':', auth_len);
        host_len = colon ? (size_t)(colon - auth) : auth_len;
        if (host_len >= sizeof host) return "has a host name that is too long";
        memcpy(host, auth, host_len);
        rest = auth + host_len;
    }
    host[host_len] = 0;
    if (host_len == 0) return "has no host";
    size_t rest_len = (size_t)(auth + auth_len - rest);
    if (rest_len > 0) {
        if (rest[0] != ':' || rest_len < 2 || rest_len > 6) return "has an invalid port";
        uint32_t port = 0;
        for (size_t i = 1; i < rest_len; i++) {
            if (rest[i] < '0' || rest[i] > '9') return "has an invalid port";
            port = port * 10 + (uint32_t)(rest[i] - '0');
        }
        if (port == 0 || port > 65535) return "has an invalid port";
    }
    bool loopback = false;
    if (v6) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1) return "has an invalid IPv6 host";
        loopback = IN6_IS_ADDR_LOOPBACK(&a6);
    } else {
        for (size_t i = 0; i < host_len; i++) {
            if (!sp_ch_alnum((unsigned char)host[i]) && host[i] != '-' && host[i] != '.') return "has an invalid host";
        }
        struct in_addr a4;
        if (inet_pton(AF_INET, host, &a4) == 1) loopback = (ntohl(a4.s_addr) >> 24) == 127;
        else loopback = sp_ascii_ieq(host, host_len, "localhost");
    }
    if (!tls && !loopback) return sp_ch_url_rule;
    return NULL;
}

static bool sp_ch_email_ok(const char *s, size_t len) {
    if (len < 3 || len > 254) return false;
    const char *at = memrchr(s, '@', len);
    if (at == NULL) return false;
    size_t local = (size_t)(at - s), dom = len - local - 1;
    if (local == 0 || local > 64 || dom == 0) return false;
    for (size_t i = 0; i < local; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (i == 0 || i == local - 1 || s[i - 1] == '.') return false;
        } else if (!sp_ch_alnum(c) && strchr("!#$%&'*+/=?^_`{|}~-", c) == NULL) {
            return false;
        }
    }
    const char *d = at + 1;
    size_t label = 0, labels = 1;
    for (size_t i = 0; i < dom; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-') return false;
            label = 0;
            labels++;
        } else if (sp_ch_alnum(c) || c == '-') {
            if (c == '-' && label == 0) return false;
            if (++label > 63) return false;
        } else {
            return false;
        }
    }
    return label > 0 && d[dom - 1] != '-' && labels >= 2;
}

static bool sp_ch_key_name_ok(const char *s, size_t len) {
    if (len == 0 || len > SP_CHANNEL_MAX_KEY_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!sp_ch_alnum(c) && c != '_' && c != '.' && c != '-') return false;
    }
    return true;
}

static bool sp_ch_placeholder_name_ok(const char *s, size_t len) {
    if (len == 0 || len > SP_TEMPLATE_MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!sp_ch_alnum(c) && c != '_') return false;
    }
    return true;
}

/* ---- small typed readers ---- */
static sp_error sp_ch_get_text(sp_ch_parse *p, json_t *obj, const char *key, const char *path, bool required,
                               size_t min, size_t max, char **out) {
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, obj, key, path, required, &s, &n));
    if (s == NULL) return SP_OK;
    if (!sp_ch_text_ok(s, n, min, max)) {
        return sp_ch_fail(p, path, "must be %zu..%zu bytes of printable UTF-8 text", min, max);
    }
    return sp_ch_dup(p, s, n, out);
}

static sp_error sp_ch_get_ascii(sp_ch_parse *p, json_t *obj, const char *key, const char *path, bool required,
                                size_t min, size_t max, char **out) {
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, obj, key, path, required, &s, &n));
    if (s == NULL) return SP_OK;
    if (!sp_ch_ascii_ok(s, n, min, max)) return sp_ch_fail(p, path, "must be %zu..%zu printable ASCII characters", min, max);
    return sp_ch_dup(p, s, n, out);
}

static sp_error sp_ch_get_url(sp_ch_parse *p, json_t *obj, const char *key, const char *path, bool required,
                              char **out) {
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, obj, key, path, required, &s, &n));
    if (s == NULL) return SP_OK;
    const char *why = sp_ch_url_problem(s, n);
    if (why != NULL) return sp_ch_fail(p, path, "%s", why);
    return sp_ch_dup(p, s, n, out);
}

static sp_error sp_ch_get_email(sp_ch_parse *p, json_t *obj, const char *key, const char *path, bool required,
                                char **out) {
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, obj, key, path, required, &s, &n));
    if (s == NULL) return SP_OK;
    if (!sp_ch_email_ok(s, n)) return sp_ch_fail(p, path, "must be an email address (local@domain.tld)");
    return sp_ch_dup(p, s, n, out);
}

/* One of the named choices; *index is its position in choices. */
static sp_error sp_ch_get_choice(sp_ch_parse *p, json_t *obj, const char *key, const char *path, bool required,
                                 const char *const *choices, const char *rule, int dflt, int *index) {
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, obj, key, path, required, &s, &n));
    *index = dflt;
    if (s == NULL) return SP_OK;
    for (int i = 0; choices[i] != NULL; i++) {
        if (strlen(choices[i]) == n && memcmp(choices[i], s, n) == 0) {
            *index = i;
            return SP_OK;
        }
    }
    return sp_ch_fail(p, path, "%s", rule);
}

/* ---- secrets ---- */
/* The secret `key` of auth (path "auth.<key>"), from wherever this mode
 * takes it. */
static sp_error sp_ch_secret(sp_ch_parse *p, json_t *auth, const char *key, const char *marker,
                             const char *prev_value, char **out) {
    char path[64], mpath[64];
    sp_ch_path(path, sizeof path, "auth", key);
    sp_ch_path(mpath, sizeof mpath, "auth", marker);
    json_t *v = json_object_get(auth, key), *m = json_object_get(auth, marker);
    if (m != NULL && !json_is_true(m)) return sp_ch_fail(p, mpath, "may only be true");
    if (v != NULL && m != NULL) return sp_ch_fail(p, mpath, "give either %s or %s, not both", key, marker);
    const char *s = NULL;
    size_t n = 0;
    switch (p->mode) {
    case SP_CH_NEW:
        if (m != NULL) return sp_ch_fail(p, mpath, "only stored or updated channels carry it; give %s", path);
        SP_GUARD(sp_ch_string(p, auth, key, path, true, &s, &n));
        break;
    case SP_CH_STORED:
        if (v != NULL) return sp_ch_fail(p, path, "a stored public document must not hold the secret");
        if (m == NULL) return sp_ch_fail(p, mpath, "is required in a stored document");
        SP_GUARD(sp_ch_string(p, p->secrets, key, key[0] == 'p' ? "secrets.password" : "secrets.client_secret",
                              true, &s, &n));
        break;
    case SP_CH_UPDATE:
        if (v != NULL) {
            SP_GUARD(sp_ch_string(p, auth, key, path, true, &s, &n));
        } else if (m != NULL) {
            if (prev_value == NULL) return sp_ch_fail(p, mpath, "the previous channel has no such secret to keep");
            s = prev_value;
            n = strlen(prev_value);
        } else {
            return sp_ch_fail(p, path, "is required");
        }
        break;
    }
    if (!sp_ch_text_ok(s, n, 1, 1024)) return sp_ch_fail(p, path, "must be 1..1024 bytes of printable UTF-8 text");
    return sp_ch_dup(p, s, n, out);
}

/* Why a header name may not be configured (a static header or a secret
 * one), or NULL; duplicates are the caller's to find. */
static const char *sp_ch_header_name_problem(const char *name, size_t nl) {
    static const char *const refused[] = {"host",       "content-length", "transfer-encoding", "content-type",
                                          "connection", "keep-alive",     "upgrade",           "te",
                                          "trailer",    "expect",         "proxy-authorization", "proxy-connection"};
    bool token = nl > 0 && nl <= 64;
    for (size_t i = 0; token && i < nl; i++) token = sp_ch_token_char((unsigned char)name[i]);
    if (!token) return "the name must be an HTTP token of 1..64 characters";
    if (sp_ascii_ieq(name, nl, "authorization")) return "is set from auth; configure auth instead";
    for (size_t i = 0; i < SP_ARRAY_LEN(refused); i++) {
        if (sp_ascii_ieq(name, nl, refused[i])) return "is set by sealpost and cannot be configured";
    }
    if ((nl >= 6 && sp_ascii_ieq(name, 6, "x-aes-")) || (nl >= 8 && sp_ascii_ieq(name, 8, "webhook-"))) {
        return "is reserved for the sealpost envelope";
    }
    return NULL;
}

/* A header name of auth type "headers" (path names it), checked like a
 * static header's and against both lists for repeats. */
static sp_error sp_ch_auth_header_add(sp_ch_parse *p, const char *name, json_t *v, const char *vpath) {
    sp_channel *ch = p->ch;
    char path[160];
    sp_ch_path(path, sizeof path, "auth.headers", name);
    size_t nl = strlen(name);
    const char *why = sp_ch_header_name_problem(name, nl);
    if (why != NULL) return sp_ch_fail(p, path, "%s", why);
    for (size_t i = 0; i < ch->n_auth_headers; i++) {
        if (sp_ascii_ieq(name, nl, ch->ahname[i])) return sp_ch_fail(p, path, "is given twice (names are case-insensitive)");
    }
    for (size_t i = 0; i < ch->n_headers; i++) {
        if (sp_ascii_ieq(name, nl, ch->hname[i])) return sp_ch_fail(p, path, "is also a static header in request.headers");
    }
    if (v == NULL) return sp_ch_fail(p, vpath, "has no value for a header named in auth.headers_set");
    if (!json_is_string(v)) return sp_ch_fail(p, path, "must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!sp_ch_ascii_ok(s, n, 1, SP_CHANNEL_MAX_HEADER_VALUE)) {
        return sp_ch_fail(p, path, "the value must be 1..1024 printable ASCII characters");
    }
    size_t i = ch->n_auth_headers;
    SP_GUARD(sp_ch_dup(p, name, nl, &ch->ahname[i]));
    SP_GUARD(sp_ch_dup(p, s, n, &ch->ahvalue[i]));
    ch->n_auth_headers++;
    return SP_OK;
}

/* Auth type "headers": the names are public, the values secrets taken
 * from wherever this mode takes secrets (as sp_ch_secret does): the
 * document when new, the secrets document when stored, the previous
 * channel when an update says "headers_set" (the values of those names
 * are kept; a new "headers" object replaces them all). */
static sp_error sp_ch_auth_headers(sp_ch_parse *p, json_t *auth) {
    json_t *hs = json_object_get(auth, "headers"), *set = json_object_get(auth, "headers_set");
    if (hs != NULL && set != NULL) return sp_ch_fail(p, "auth.headers_set", "give either headers or headers_set, not both");
    json_t *values = NULL, *names = NULL, *prev_values = NULL;
    const char *vpath = "auth.headers";
    switch (p->mode) {
    case SP_CH_NEW:
        if (set != NULL) return sp_ch_fail(p, "auth.headers_set", "only stored or updated channels carry it; give auth.headers");
        if (hs == NULL) return sp_ch_fail(p, "auth.headers", "is required");
        values = hs;
        break;
    case SP_CH_STORED:
        if (hs != NULL) return sp_ch_fail(p, "auth.headers", "a stored public document must not hold the secret");
        if (set == NULL) return sp_ch_fail(p, "auth.headers_set", "is required in a stored document");
        names = set;
        vpath = "secrets.headers";
        values = json_object_get(p->secrets, "headers");
        if (values == NULL) return sp_ch_fail(p, vpath, "is required");
        break;
    case SP_CH_UPDATE:
        if (hs != NULL) {
            values = hs;
        } else if (set != NULL) {
            names = set;
            if (p->prev == NULL || p->prev->n_auth_headers == 0) {
                return sp_ch_fail(p, "auth.headers_set", "the previous channel has no such secret to keep");
            }
            prev_values = json_object();
            if (prev_values == NULL) return sp_ch_oom(p);
            for (size_t i = 0; i < p->prev->n_auth_headers; i++) {
                if (json_object_set_new(prev_values, p->prev->ahname[i], json_string(p->prev->ahvalue[i])) != 0) {
                    json_decref(prev_values);
                    return sp_ch_oom(p);
                }
            }
            values = prev_values;
            vpath = "auth.headers_set";
        } else {
            return sp_ch_fail(p, "auth.headers", "is required");
        }
        break;
    }
    sp_error rc = SP_OK;
    if (!json_is_object(values)) {
        rc = sp_ch_fail(p, vpath, "must be an object of \"Name\": \"value\" pairs");
    } else if (names != NULL) {
        size_t count = json_is_array(names) ? json_array_size(names) : 0;
        if (count < 1 || count > SP_CHANNEL_MAX_AUTH_HEADERS) {
            rc = sp_ch_fail(p, "auth.headers_set", "must be an array of 1..8 header names");
        }
        for (size_t i = 0; rc == SP_OK && i < count; i++) {
            json_t *n = json_array_get(names, i);
            if (!json_is_string(n) || strlen(json_string_value(n)) != json_string_length(n)) {
                rc = sp_ch_fail(p, "auth.headers_set", "must be an array of 1..8 header names");
            } else {
                rc = sp_ch_auth_header_add(p, json_string_value(n), json_object_get(values, json_string_value(n)), vpath);
            }
        }
        /* a stored secret no name refers to is as wrong as a missing one */
        if (rc == SP_OK && json_object_size(values) != count && p->mode == SP_CH_STORED) {
            rc = sp_ch_fail(p, vpath, "holds a header auth.headers_set does not name");
        }
    } else {
        size_t count = json_object_size(values);
        if (count < 1 || count > SP_CHANNEL_MAX_AUTH_HEADERS) rc = sp_ch_fail(p, vpath, "must hold 1..8 headers");
        const char *name;
        json_t *v;
        json_object_foreach(values, name, v) {
            if (rc != SP_OK) break;
            rc = sp_ch_auth_header_add(p, name, v, vpath);
        }
    }
    if (prev_values != NULL) {
        /* copies of the previous secrets: wipe them before jansson frees */
        const char *name;
        json_t *v;
        json_object_foreach(prev_values, name, v) {
            if (json_is_string(v)) sp_wipe((void *)(uintptr_t)json_string_value(v), json_string_length(v));
        }
        json_decref(prev_values);
    }
    p->used_headers = true;
    return rc;
}

static sp_error sp_ch_parse_auth(sp_ch_parse *p, json_t *root) {
    sp_channel *ch = p->ch;
    json_t *auth;
    SP_GUARD(sp_ch_object(p, root, "auth", "auth", false, &auth));
    ch->auth_type = SP_CHANNEL_AUTH_NONE;
    if (auth == NULL) return SP_OK;
    static const char *const types[] = {"none", "basic", "oauth2", "headers", NULL};
    int type;
    SP_GUARD(sp_ch_get_choice(p, auth, "type", "auth.type", true, types,
                              "must be \"none\", \"basic\", \"oauth2\" or \"headers\"", 0, &type));
    if (type == 0) {
        static const char *const allowed[] = {"type", NULL};
        return sp_ch_only(p, auth, "auth", allowed);
    }
    const sp_channel *prev = p->prev;
    if (type == 3) {
        static const char *const allowed[] = {"type", "headers", "headers_set", NULL};
        SP_GUARD(sp_ch_only(p, auth, "auth", allowed));
        ch->auth_type = SP_CHANNEL_AUTH_HEADERS;
        return sp_ch_auth_headers(p, auth);
    }
    if (type == 1) {
        static const char *const allowed[] = {"type", "username", "password", "password_set", NULL};
        SP_GUARD(sp_ch_only(p, auth, "auth", allowed));
        ch->auth_type = SP_CHANNEL_AUTH_BASIC;
        const char *s;
        size_t n;
        SP_GUARD(sp_ch_string(p, auth, "username", "auth.username", true, &s, &n));
        if (!sp_ch_ascii_ok(s, n, 1, 256) || memchr(s, ':', n) != NULL) {
            return sp_ch_fail(p, "auth.username", "must be 1..256 printable ASCII characters without ':'");
        }
        SP_GUARD(sp_ch_dup(p, s, n, &ch->username));
        SP_GUARD(sp_ch_secret(p, auth, "password", "password_set", prev ? prev->password : NULL, &ch->password));
        p->used_password = true;
        return SP_OK;
    }
    static const char *const allowed[] = {"type",     "token_url", "client_id",   "client_secret", "client_secret_set",
                                          "scope",    "audience",  "client_auth", NULL};
    SP_GUARD(sp_ch_only(p, auth, "auth", allowed));
    ch->auth_type = SP_CHANNEL_AUTH_OAUTH2;
    SP_GUARD(sp_ch_get_url(p, auth, "token_url", "auth.token_url", true, &ch->token_url));
    SP_GUARD(sp_ch_get_ascii(p, auth, "client_id", "auth.client_id", true, 1, 256, &ch->client_id));
    SP_GUARD(sp_ch_secret(p, auth, "client_secret", "client_secret_set", prev ? prev->client_secret : NULL,
                          &ch->client_secret));
    p->used_client_secret = true;
    SP_GUARD(sp_ch_get_ascii(p, auth, "scope", "auth.scope", false, 1, 1024, &ch->scope));
    SP_GUARD(sp_ch_get_ascii(p, auth, "audience", "auth.audience", false, 1, 2048, &ch->audience));
    static const char *const modes[] = {"basic", "body", NULL};
    int mode;
    SP_GUARD(sp_ch_get_choice(p, auth, "client_auth", "auth.client_auth", false, modes,
                              "must be \"basic\" or \"body\"", 0, &mode));
    ch->client_auth = mode == 0 ? SP_CHANNEL_CLIENT_AUTH_BASIC : SP_CHANNEL_CLIENT_AUTH_BODY;
    return SP_OK;
}

/* ---- templates ---- */
/* Binds every placeholder of bt to a source, or names the first one that
 * is neither standard for the channel's kind nor a custom key. */
static sp_error sp_ch_bind(sp_ch_parse *p, sp_ch_tpl *bt, const char *path) {
    const sp_channel *ch = p->ch;
    unsigned kind_bit = ch->kind == SP_CHANNEL_EMAIL ? SP_KIND_EMAIL_BIT : SP_KIND_SMS_BIT;
    for (size_t i = 0; i < sp_template_placeholder_count(bt->t); i++) {
        const char *name = sp_template_placeholder_name(bt->t, i);
        bool bound = false;
        for (size_t s = 0; s < SP_ARRAY_LEN(sp_ch_std) && !bound; s++) {
            if (strcmp(sp_ch_std[s].name, name) != 0) continue;
            if (!(sp_ch_std[s].kinds & kind_bit)) {
                return sp_ch_fail(p, path, "$$%s is not available in %s channels", name,
                                  ch->kind == SP_CHANNEL_EMAIL ? "email" : "sms");
            }
            bt->src[i] = sp_ch_std[s].src;
            bound = true;
        }
        for (size_t c = 0; c < ch->n_custom && !bound; c++) {
            if (strcmp(ch->custom_key[c], name) != 0) continue;
            bt->src[i] = (uint16_t)(SP_SRC_CUSTOM + c);
            bound = true;
        }
        if (!bound) return sp_ch_fail(p, path, "unknown placeholder $$%s (neither standard nor in custom)", name);
    }
    return SP_OK;
}

static sp_error sp_ch_compile(sp_ch_parse *p, const char *text, size_t len, sp_escape literal_escape,
                              const char *path, sp_ch_tpl *bt) {
    sp_template_error terr;
    sp_error rc = sp_template_compile_escaped(text, len, SP_TEMPLATE_CLEVERTAP, literal_escape, &bt->t, &terr);
    if (rc == SP_ERR_NO_MEMORY) return sp_ch_oom(p);
    if (rc == SP_ERR_TOO_LARGE) return sp_ch_fail(p, path, "is too large");
    if (rc != SP_OK) {
        return sp_ch_fail(p, path, "%s at offset %zu", terr.reason ? terr.reason : "invalid template", terr.offset);
    }
    return sp_ch_bind(p, bt, path);
}

/* Every $$ of a JSON body template must be inside a JSON string, where
 * escaping keeps the document well-formed whatever the value. */
static sp_error sp_ch_json_placement(sp_ch_parse *p, const char *s, size_t n) {
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            else if (c == '$' && i + 3 < n && s[i + 1] == '$' && s[i + 2] == '$' && s[i + 3] == '$') i += 3;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '$' && i + 1 < n && s[i + 1] == '$') {
            return sp_ch_fail(p, "request.body.template", "the placeholder at offset %zu is outside a JSON string",
                              i);
        }
    }
    return SP_OK;
}

static bool sp_ch_sample_lookup(void *ctx, size_t index, const char **value, size_t *len) {
    (void)ctx;
    (void)index;
    *value = "sample";
    *len = 6;
    return true;
}

/* Renders the body with sample values and parses it. */
static sp_error sp_ch_json_sample(sp_ch_parse *p, const sp_template *t) {
    size_t need = 0;
    sp_error rc = sp_template_render(t, sp_ch_sample_lookup, NULL, SP_ESCAPE_JSON, NULL, 0, &need, NULL);
    if (rc != SP_OK && rc != SP_ERR_BUFFER_TOO_SMALL) return sp_ch_fail(p, "request.body.template", "cannot be rendered");
    char *buf = sp_malloc(need ? need : 1);
    if (buf == NULL) return sp_ch_oom(p);
    rc = sp_template_render(t, sp_ch_sample_lookup, NULL, SP_ESCAPE_JSON, buf, need, &need, NULL);
    json_t *doc = NULL;
    if (rc == SP_OK) rc = sp_json_load(buf, need, SP_ERR_BAD_JSON, &doc);
    if (rc == SP_ERR_BAD_JSON) {
        json_error_t jerr;
        json_t *again = json_loadb(buf, need, JSON_REJECT_DUPLICATES, &jerr);
        json_decref(again);
        rc = sp_ch_fail(p, "request.body.template",
                        "is not valid JSON once its placeholders are filled (line %d, column %d)", jerr.line,
                        jerr.column);
    } else if (rc == SP_ERR_NO_MEMORY) {
        rc = sp_ch_oom(p);
    } else if (rc == SP_OK && !json_is_object(doc)) {
        rc = sp_ch_fail(p, "request.body.template", "must be a JSON object");
    } else if (rc != SP_OK) {
        rc = sp_ch_fail(p, "request.body.template", "cannot be rendered");
    }
    json_decref(doc);
    sp_free(buf);
    return rc;
}

/* ---- request ---- */
static sp_error sp_ch_parse_headers(sp_ch_parse *p, json_t *req) {
    sp_channel *ch = p->ch;
    json_t *hs;
    SP_GUARD(sp_ch_object(p, req, "headers", "request.headers", false, &hs));
    if (hs == NULL) return SP_OK;
    if (json_object_size(hs) > SP_CHANNEL_MAX_HEADERS) return sp_ch_fail(p, "request.headers", "at most 32 headers");
    const char *name;
    json_t *v;
    json_object_foreach(hs, name, v) {
        char path[160];
        sp_ch_path(path, sizeof path, "request.headers", name);
        size_t nl = strlen(name);
        const char *why = sp_ch_header_name_problem(name, nl);
        if (why != NULL) return sp_ch_fail(p, path, "%s", why);
        for (size_t i = 0; i < ch->n_headers; i++) {
            if (sp_ascii_ieq(name, nl, ch->hname[i])) return sp_ch_fail(p, path, "is given twice (names are case-insensitive)");
        }
        if (!json_is_string(v)) return sp_ch_fail(p, path, "must be a string");
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!sp_ch_ascii_ok(s, n, 0, SP_CHANNEL_MAX_HEADER_VALUE)) {
            return sp_ch_fail(p, path, "the value must be at most 1024 printable ASCII characters");
        }
        SP_GUARD(sp_ch_dup(p, name, nl, &ch->hname[ch->n_headers]));
        SP_GUARD(sp_ch_dup(p, s, n, &ch->hvalue[ch->n_headers]));
        ch->n_headers++;
    }
    return SP_OK;
}

static sp_error sp_ch_parse_body(sp_ch_parse *p, json_t *req) {
    sp_channel *ch = p->ch;
    json_t *body;
    SP_GUARD(sp_ch_object(p, req, "body", "request.body", true, &body));
    static const char *const types[] = {"json", "form", NULL};
    int type;
    SP_GUARD(sp_ch_get_choice(p, body, "type", "request.body.type", true, types, "must be \"json\" or \"form\"", 0,
                              &type));
    if (type == 0) {
        static const char *const allowed[] = {"type", "template", NULL};
        SP_GUARD(sp_ch_only(p, body, "request.body", allowed));
        if (ch->method == SP_CHANNEL_GET) {
            return sp_ch_fail(p, "request.body.type", "GET sends form fields in the query string; use \"form\"");
        }
        ch->body_type = SP_CHANNEL_BODY_JSON;
        const char *s;
        size_t n;
        SP_GUARD(sp_ch_string(p, body, "template", "request.body.template", true, &s, &n));
        if (n == 0 || memchr(s, 0, n) != NULL) return sp_ch_fail(p, "request.body.template", "must be a non-empty JSON text");
        SP_GUARD(sp_ch_json_placement(p, s, n));
        SP_GUARD(sp_ch_dup(p, s, n, &ch->json_text));
        SP_GUARD(sp_ch_compile(p, s, n, SP_ESCAPE_NONE, "request.body.template", &ch->body));
        return sp_ch_json_sample(p, ch->body.t);
    }
    static const char *const allowed[] = {"type", "fields", NULL};
    SP_GUARD(sp_ch_only(p, body, "request.body", allowed));
    ch->body_type = SP_CHANNEL_BODY_FORM;
    json_t *fields;
    SP_GUARD(sp_ch_object(p, body, "fields", "request.body.fields", true, &fields));
    if (json_object_size(fields) > SP_CHANNEL_MAX_FORM_FIELDS) {
        return sp_ch_fail(p, "request.body.fields", "at most 64 fields");
    }
    const char *key;
    json_t *v;
    json_object_foreach(fields, key, v) {
        char path[160];
        sp_ch_path(path, sizeof path, "request.body.fields", key);
        size_t kl = strlen(key);
        if (!sp_ch_text_ok(key, kl, 1, 128)) return sp_ch_fail(p, path, "the name must be 1..128 bytes of printable text");
        if (!json_is_string(v)) return sp_ch_fail(p, path, "must be a string");
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!sp_ch_text_ok(s, n, 0, 16384)) return sp_ch_fail(p, path, "must be at most 16384 bytes of printable text");
        sp_ch_field *f = &ch->fields[ch->n_fields++];
        SP_GUARD(sp_ch_dup(p, key, kl, &f->key));
        SP_GUARD(sp_ch_dup(p, s, n, &f->value));
        sp_tpl_out o = sp_tpl_out_of(NULL, 0);
        SP_GUARD(sp_tpl_put_escaped(&o, SP_ESCAPE_FORM, (const uint8_t *)key, kl));
        f->key_enc = sp_malloc(o.pos + 1);
        if (f->key_enc == NULL) return sp_ch_oom(p);
        o = sp_tpl_out_of(f->key_enc, o.pos);
        SP_GUARD(sp_tpl_put_escaped(&o, SP_ESCAPE_FORM, (const uint8_t *)key, kl));
        f->key_enc[o.pos] = 0;
        f->key_enc_len = o.pos;
        SP_GUARD(sp_ch_compile(p, s, n, SP_ESCAPE_FORM, path, &f->tpl));
    }
    return SP_OK;
}

static sp_error sp_ch_parse_batch(sp_ch_parse *p, json_t *req) {
    sp_channel *ch = p->ch;
    json_t *batch;
    ch->batch_size = 1;
    SP_GUARD(sp_ch_object(p, req, "batch", "request.batch", false, &batch));
    if (batch == NULL) return SP_OK;
    static const char *const allowed[] = {"array_key", "size", NULL};
    SP_GUARD(sp_ch_only(p, batch, "request.batch", allowed));
    json_t *size = json_object_get(batch, "size");
    if (size == NULL) return sp_ch_fail(p, "request.batch.size", "is required");
    if (!json_is_integer(size) || json_integer_value(size) < 1 || json_integer_value(size) > SP_CHANNEL_MAX_BATCH) {
        return sp_ch_fail(p, "request.batch.size", "must be an integer from 1 to 1000");
    }
    ch->batch_size = (size_t)json_integer_value(size);
    SP_GUARD(sp_ch_get_text(p, batch, "array_key", "request.batch.array_key", ch->batch_size > 1, 1, 64,
                            &ch->batch_key));
    if (ch->batch_size > 1 && ch->body_type != SP_CHANNEL_BODY_JSON) {
        return sp_ch_fail(p, "request.batch", "batching needs a JSON body (request.body.type \"json\")");
    }
    if (ch->batch_key != NULL) {
        size_t kl = strlen(ch->batch_key);
        sp_tpl_out o = sp_tpl_out_of(NULL, 0);
        SP_GUARD(sp_tpl_put_escaped(&o, SP_ESCAPE_JSON, (const uint8_t *)ch->batch_key, kl));
        size_t need = o.pos + 5; /* {" + key + ":[ */
        ch->batch_prefix = sp_malloc(need + 1);
        if (ch->batch_prefix == NULL) return sp_ch_oom(p);
        o = sp_tpl_out_of(ch->batch_prefix, need);
        SP_GUARD(sp_tpl_put(&o, "{\"", 2));
        SP_GUARD(sp_tpl_put_escaped(&o, SP_ESCAPE_JSON, (const uint8_t *)ch->batch_key, kl));
        SP_GUARD(sp_tpl_put(&o, "\":[", 3));
        ch->batch_prefix[o.pos] = 0;
        ch->batch_prefix_len = o.pos;
    }
    return SP_OK;
}

static sp_error sp_ch_parse_request(sp_ch_parse *p, json_t *root) {
    sp_channel *ch = p->ch;
    json_t *req;
    SP_GUARD(sp_ch_object(p, root, "request", "request", true, &req));
    static const char *const allowed[] = {"endpoint", "method", "headers", "body", "batch", NULL};
    SP_GUARD(sp_ch_only(p, req, "request", allowed));
    SP_GUARD(sp_ch_get_url(p, req, "endpoint", "request.endpoint", true, &ch->endpoint));
    static const char *const methods[] = {"POST", "GET", NULL};
    int method;
    SP_GUARD(sp_ch_get_choice(p, req, "method", "request.method", false, methods, "must be \"POST\" or \"GET\"", 0,
                              &method));
    ch->method = method == 0 ? SP_CHANNEL_POST : SP_CHANNEL_GET;
    SP_GUARD(sp_ch_parse_headers(p, req));
    SP_GUARD(sp_ch_parse_body(p, req));
    return sp_ch_parse_batch(p, req);
}

/* ---- the rest of the document ---- */
static sp_error sp_ch_parse_custom(sp_ch_parse *p, json_t *root) {
    sp_channel *ch = p->ch;
    json_t *custom;
    SP_GUARD(sp_ch_object(p, root, "custom", "custom", false, &custom));
    if (custom == NULL) return SP_OK;
    if (json_object_size(custom) > SP_CHANNEL_MAX_CUSTOM) return sp_ch_fail(p, "custom", "at most 32 values");
    const char *key;
    json_t *v;
    json_object_foreach(custom, key, v) {
        char path[160];
        sp_ch_path(path, sizeof path, "custom", key);
        size_t kl = strlen(key);
        if (!sp_ch_placeholder_name_ok(key, kl)) {
            return sp_ch_fail(p, path, "the name must be 1..64 characters of A-Z a-z 0-9 _ (it is used as $$name)");
        }
        for (size_t s = 0; s < SP_ARRAY_LEN(sp_ch_std); s++) {
            if (strcmp(sp_ch_std[s].name, key) == 0) return sp_ch_fail(p, path, "is a standard placeholder name");
        }
        if (!json_is_string(v)) return sp_ch_fail(p, path, "must be a string");
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!sp_ch_text_ok(s, n, 0, 1024)) return sp_ch_fail(p, path, "must be at most 1024 bytes of printable text");
        SP_GUARD(sp_ch_dup(p, key, kl, &ch->custom_key[ch->n_custom]));
        SP_GUARD(sp_ch_dup(p, s, n, &ch->custom_value[ch->n_custom]));
        ch->custom_len[ch->n_custom] = n;
        ch->n_custom++;
    }
    return SP_OK;
}

static sp_error sp_ch_parse_kind_fields(sp_ch_parse *p, json_t *root) {
    sp_channel *ch = p->ch;
    static const char *const email_only[] = {"from_name", "from_address", "reply_to"};
    static const char *const sms_only[] = {"delivery_report_url", "inbound_url", "sender_id"};
    bool email = ch->kind == SP_CHANNEL_EMAIL;
    const char *const *other = email ? sms_only : email_only;
    for (size_t i = 0; i < 3; i++) {
        if (json_object_get(root, other[i]) != NULL) {
            return sp_ch_fail(p, other[i], "only for %s channels", email ? "sms" : "email");
        }
    }
    if (email) {
        SP_GUARD(sp_ch_get_text(p, root, "from_name", "from_name", true, 1, 128, &ch->from_name));
        SP_GUARD(sp_ch_get_email(p, root, "from_address", "from_address", true, &ch->from_address));
        return sp_ch_get_email(p, root, "reply_to", "reply_to", false, &ch->reply_to);
    }
    SP_GUARD(sp_ch_get_url(p, root, "delivery_report_url", "delivery_report_url", false, &ch->delivery_report_url));
    SP_GUARD(sp_ch_get_url(p, root, "inbound_url", "inbound_url", false, &ch->inbound_url));
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, root, "sender_id", "sender_id", false, &s, &n));
    if (s != NULL) {
        bool ok = n >= 1 && n <= 20;
        for (size_t i = 0; ok && i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            ok = sp_ch_alnum(c) || c == ' ' || c == '+' || c == '.' || c == '_' || c == '-';
        }
        if (!ok) return sp_ch_fail(p, "sender_id", "must be 1..20 characters of A-Z a-z 0-9 space + . _ -");
        SP_GUARD(sp_ch_dup(p, s, n, &ch->sender_id));
    }
    return SP_OK;
}

static sp_error sp_ch_parse_encryption(sp_ch_parse *p, json_t *root) {
    sp_channel *ch = p->ch;
    ch->alg = SP_ALG_AES_256_GCM;
    ch->profile = SP_PROFILE_COMPAT;
    json_t *enc;
    SP_GUARD(sp_ch_object(p, root, "encryption", "encryption", false, &enc));
    if (enc == NULL) return SP_OK;
    static const char *const allowed[] = {"enabled", "algorithm", "profile", "key", NULL};
    SP_GUARD(sp_ch_only(p, enc, "encryption", allowed));
    json_t *en = json_object_get(enc, "enabled");
    if (en != NULL && !json_is_boolean(en)) return sp_ch_fail(p, "encryption.enabled", "must be true or false");
    ch->enc_enabled = en != NULL && json_is_true(en);
    const char *s;
    size_t n;
    SP_GUARD(sp_ch_string(p, enc, "algorithm", "encryption.algorithm", false, &s, &n));
    if (s != NULL && (memchr(s, 0, n) != NULL || sp_alg_from_name(s, n, &ch->alg) != SP_OK)) {
        return sp_ch_fail(p, "encryption.algorithm", "must be \"aes-256-gcm\", \"aes-256-cbc\" or \"aes-256-ctr\"");
    }
    SP_GUARD(sp_ch_string(p, enc, "profile", "encryption.profile", false, &s, &n));
    if (s != NULL && (strlen(s) != n || sp_profile_from_name(s, &ch->profile) != SP_OK)) {
        return sp_ch_fail(p, "encryption.profile", "must be \"compat\" or \"jwe\"");
    }
    if (ch->profile == SP_PROFILE_JWE && ch->alg != SP_ALG_AES_256_GCM) {
        return sp_ch_fail(p, "encryption.algorithm", "the jwe profile allows only \"aes-256-gcm\"");
    }
    SP_GUARD(sp_ch_string(p, enc, "key", "encryption.key", ch->enc_enabled, &s, &n));
    if (s != NULL) {
        if (!sp_ch_key_name_ok(s, n)) {
            return sp_ch_fail(p, "encryption.key", "must be a keyring channel name: 1..64 of A-Z a-z 0-9 _ . -");
        }
        SP_GUARD(sp_ch_dup(p, s, n, &ch->enc_key));
    }
    return SP_OK;
}

static sp_error sp_ch_parse_root(sp_ch_parse *p, json_t *root) {
    if (!json_is_object(root)) return sp_ch_fail(p, NULL, "the channel must be a JSON object");
    static const char *const allowed[] = {"kind",     "nickname",     "request",  "auth",
                                          "from_name", "from_address", "reply_to", "custom",
                                          "delivery_report_url", "inbound_url", "sender_id", "encryption",
                                          NULL};
    SP_GUARD(sp_ch_only(p, root, NULL, allowed));
    sp_channel *ch = p->ch;
    static const char *const kinds[] = {"email", "sms", NULL};
    int kind;
    SP_GUARD(sp_ch_get_choice(p, root, "kind", "kind", true, kinds, "must be \"email\" or \"sms\"", 0, &kind));
    ch->kind = kind == 0 ? SP_CHANNEL_EMAIL : SP_CHANNEL_SMS;
    SP_GUARD(sp_ch_get_text(p, root, "nickname", "nickname", true, 1, SP_CHANNEL_MAX_NICKNAME, &ch->nickname));
    SP_GUARD(sp_ch_parse_custom(p, root));
    SP_GUARD(sp_ch_parse_kind_fields(p, root));
    SP_GUARD(sp_ch_parse_request(p, root));
    SP_GUARD(sp_ch_parse_auth(p, root));
    SP_GUARD(sp_ch_parse_encryption(p, root));
    if (p->mode == SP_CH_STORED) {
        const char *key;
        json_t *v;
        json_object_foreach(p->secrets, key, v) {
            bool used = (strcmp(key, "password") == 0 && p->used_password) ||
                        (strcmp(key, "client_secret") == 0 && p->used_client_secret) ||
                        (strcmp(key, "headers") == 0 && p->used_headers);
            if (!used) {
                char path[160];
                sp_ch_path(path, sizeof path, "secrets", key);
                return sp_ch_fail(p, path, "is not used by this channel's auth");
            }
        }
    }
    return SP_OK;
}

/* Parses a whole document text into *out (SP_ERR_BAD_JSON with position). */
static sp_error sp_ch_load(sp_ch_parse *p, const char *json, size_t len, const char *what, json_t **out) {
    *out = NULL;
    /* the canonical form adds defaults and markers to what was accepted
     * (never more than a few hundred bytes: strings never grow), so a
     * stored document may be a little over the API's limit */
    size_t limit = SP_CHANNEL_MAX_DOCUMENT + (p->mode == SP_CH_STORED ? SP_CHANNEL_STORED_SLACK : 0);
    if (len > limit) {
        sp_ch_set_err(p, what, "is larger than 64 KiB");
        return SP_ERR_TOO_LARGE;
    }
    sp_error rc = sp_json_load(json, len, SP_ERR_BAD_JSON, out);
    if (rc == SP_ERR_NO_MEMORY) return sp_ch_oom(p);
    if (rc == SP_ERR_BAD_JSON) {
        json_error_t jerr;
        json_t *again = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
        json_decref(again);
        char msg[96];
        (void)snprintf(msg, sizeof msg, "is not valid JSON (line %d, column %d)", jerr.line, jerr.column);
        sp_ch_set_err(p, what, msg);
    }
    return rc;
}

static sp_error sp_ch_run(sp_ch_parse *p, const char *json, size_t len, const char *secrets_json, size_t secrets_len,
                          sp_channel **out) {
    if (p->err != NULL && p->err_cap > 0) p->err[0] = 0;
    if (out == NULL) return SP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (json == NULL || (p->mode == SP_CH_STORED && secrets_json == NULL)) return SP_ERR_INVALID_ARGUMENT;
    SP_GUARD(sp_init());
    json_t *root = NULL;
    sp_error rc = sp_ch_load(p, json, len, "channel", &root);
    if (rc == SP_OK && p->mode == SP_CH_STORED) {
        rc = sp_ch_load(p, secrets_json, secrets_len, "secrets", &p->secrets);
        if (rc == SP_OK && !json_is_object(p->secrets)) rc = sp_ch_fail(p, "secrets", "must be a JSON object");
    }
    if (rc == SP_OK) {
        p->ch = sp_calloc(1, sizeof *p->ch);
        if (p->ch == NULL) rc = sp_ch_oom(p);
    }
    if (rc == SP_OK) rc = sp_ch_parse_root(p, root);
    json_decref(root);
    json_decref(p->secrets);
    p->secrets = NULL;
    if (rc != SP_OK) {
        sp_channel_free(p->ch);
        return rc;
    }
    *out = p->ch;
    return SP_OK;
}

sp_error sp_channel_parse(const char *json, size_t len, sp_channel **out, char *err, size_t err_cap) {
    sp_ch_parse p = {.err = err, .err_cap = err_cap, .mode = SP_CH_NEW};
    return sp_ch_run(&p, json, len, NULL, 0, out);
}

sp_error sp_channel_parse_stored(const char *public_json, size_t public_len, const char *secrets_json,
                                 size_t secrets_len, sp_channel **out, char *err, size_t err_cap) {
    sp_ch_parse p = {.err = err, .err_cap = err_cap, .mode = SP_CH_STORED};
    return sp_ch_run(&p, public_json, public_len, secrets_json, secrets_len, out);
}

sp_error sp_channel_parse_update(const char *json, size_t len, const sp_channel *previous, sp_channel **out,
                                 char *err, size_t err_cap) {
    sp_ch_parse p = {.err = err, .err_cap = err_cap, .mode = previous ? SP_CH_UPDATE : SP_CH_NEW, .prev = previous};
    return sp_ch_run(&p, json, len, NULL, 0, out);
}

void sp_channel_free(sp_channel *ch) {
    if (ch == NULL) return;
    char **strings[] = {&ch->nickname,  &ch->endpoint,      &ch->json_text,    &ch->batch_key,    &ch->batch_prefix,
                        &ch->username,  &ch->password,      &ch->token_url,    &ch->client_id,    &ch->client_secret,
                        &ch->scope,     &ch->audience,      &ch->from_name,    &ch->from_address, &ch->reply_to,
                        &ch->delivery_report_url, &ch->inbound_url, &ch->sender_id, &ch->enc_key};
    for (size_t i = 0; i < SP_ARRAY_LEN(strings); i++) sp_ch_str_free(*strings[i]);
    sp_template_free(ch->body.t);
    for (size_t i = 0; i < SP_CHANNEL_MAX_FORM_FIELDS; i++) {
        sp_ch_str_free(ch->fields[i].key);
        sp_ch_str_free(ch->fields[i].value);
        sp_ch_str_free(ch->fields[i].key_enc);
        sp_template_free(ch->fields[i].tpl.t);
    }
    for (size_t i = 0; i < SP_CHANNEL_MAX_HEADERS; i++) {
        sp_ch_str_free(ch->hname[i]);
        sp_ch_str_free(ch->hvalue[i]);
    }
    for (size_t i = 0; i < SP_CHANNEL_MAX_AUTH_HEADERS; i++) {
        sp_ch_str_free(ch->ahname[i]);
        sp_ch_str_free(ch->ahvalue[i]);
    }
    for (size_t i = 0; i < SP_CHANNEL_MAX_CUSTOM; i++) {
        sp_ch_str_free(ch->custom_key[i]);
        sp_ch_str_free(ch->custom_value[i]);
    }
    sp_free_wiped(ch, sizeof *ch);
}

/* ---- documents out ---- */
static bool sp_ch_set_str(json_t *o, const char *key, const char *v) {
    return v == NULL || json_object_set_new(o, key, json_string(v)) == 0;
}

static const char *sp_ch_alg_text(sp_alg alg) {
    switch (alg) {
    case SP_ALG_AES_256_CBC: return "aes-256-cbc";
    case SP_ALG_AES_256_CTR: return "aes-256-ctr";
    case SP_ALG_AES_256_GCM: break;
    }
    return "aes-256-gcm";
}

static json_t *sp_ch_public_doc(const sp_channel *ch) {
    json_t *root = json_object(), *req = json_object(), *hs = json_object(), *body = json_object(),
           *auth = json_object(), *enc = json_object();
    bool ok = root && req && hs && body && auth && enc;
    ok = ok && sp_ch_set_str(root, "kind", ch->kind == SP_CHANNEL_EMAIL ? "email" : "sms") &&
         sp_ch_set_str(root, "nickname", ch->nickname);
    ok = ok && sp_ch_set_str(req, "endpoint", ch->endpoint) &&
         sp_ch_set_str(req, "method", ch->method == SP_CHANNEL_GET ? "GET" : "POST");
    for (size_t i = 0; ok && i < ch->n_headers; i++) ok = sp_ch_set_str(hs, ch->hname[i], ch->hvalue[i]);
    if (ch->body_type == SP_CHANNEL_BODY_JSON) {
        ok = ok && sp_ch_set_str(body, "type", "json") && sp_ch_set_str(body, "template", ch->json_text);
    } else {
        json_t *fields = json_object();
        ok = ok && fields != NULL && sp_ch_set_str(body, "type", "form");
        for (size_t i = 0; ok && i < ch->n_fields; i++) ok = sp_ch_set_str(fields, ch->fields[i].key, ch->fields[i].value);
        ok = json_object_set_new(body, "fields", fields) == 0 && ok; /* consumes fields either way */
    }
    ok = ok && json_object_set(req, "headers", hs) == 0 && json_object_set(req, "body", body) == 0;
    if (ok && (ch->batch_size > 1 || ch->batch_key != NULL)) {
        json_t *batch = json_object();
        ok = batch != NULL && sp_ch_set_str(batch, "array_key", ch->batch_key) &&
             json_object_set_new(batch, "size", json_integer((json_int_t)ch->batch_size)) == 0;
        ok = json_object_set_new(req, "batch", batch) == 0 && ok;
    }
    ok = ok && json_object_set(root, "request", req) == 0;
    switch (ch->auth_type) {
    case SP_CHANNEL_AUTH_BASIC:
        ok = ok && sp_ch_set_str(auth, "type", "basic") && sp_ch_set_str(auth, "username", ch->username) &&
             json_object_set_new(auth, "password_set", json_true()) == 0;
        break;
    case SP_CHANNEL_AUTH_OAUTH2:
        ok = ok && sp_ch_set_str(auth, "type", "oauth2") && sp_ch_set_str(auth, "token_url", ch->token_url) &&
             sp_ch_set_str(auth, "client_id", ch->client_id) &&
             json_object_set_new(auth, "client_secret_set", json_true()) == 0 &&
             sp_ch_set_str(auth, "scope", ch->scope) && sp_ch_set_str(auth, "audience", ch->audience) &&
             sp_ch_set_str(auth, "client_auth", ch->client_auth == SP_CHANNEL_CLIENT_AUTH_BODY ? "body" : "basic");
        break;
    case SP_CHANNEL_AUTH_HEADERS: {
        json_t *names = json_array();
        ok = ok && names != NULL && sp_ch_set_str(auth, "type", "headers");
        for (size_t i = 0; ok && i < ch->n_auth_headers; i++) ok = json_array_append_new(names, json_string(ch->ahname[i])) == 0;
        ok = json_object_set_new(auth, "headers_set", names) == 0 && ok; /* consumes names either way */
        break;
    }
    case SP_CHANNEL_AUTH_NONE: ok = ok && sp_ch_set_str(auth, "type", "none"); break;
    }
    ok = ok && json_object_set(root, "auth", auth) == 0;
    ok = ok && sp_ch_set_str(root, "from_name", ch->from_name) && sp_ch_set_str(root, "from_address", ch->from_address) &&
         sp_ch_set_str(root, "reply_to", ch->reply_to) &&
         sp_ch_set_str(root, "delivery_report_url", ch->delivery_report_url) &&
         sp_ch_set_str(root, "inbound_url", ch->inbound_url) && sp_ch_set_str(root, "sender_id", ch->sender_id);
    if (ok && ch->n_custom > 0) {
        json_t *custom = json_object();
        ok = custom != NULL;
        for (size_t i = 0; ok && i < ch->n_custom; i++) ok = sp_ch_set_str(custom, ch->custom_key[i], ch->custom_value[i]);
        ok = json_object_set_new(root, "custom", custom) == 0 && ok;
    }
    ok = ok && json_object_set_new(enc, "enabled", json_boolean(ch->enc_enabled)) == 0 &&
         sp_ch_set_str(enc, "algorithm", sp_ch_alg_text(ch->alg)) &&
         sp_ch_set_str(enc, "profile", ch->profile == SP_PROFILE_JWE ? "jwe" : "compat") &&
         sp_ch_set_str(enc, "key", ch->enc_key) && json_object_set(root, "encryption", enc) == 0;
    json_decref(req);
    json_decref(hs);
    json_decref(body);
    json_decref(auth);
    json_decref(enc);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static sp_error sp_ch_dump(json_t *doc, char *out, size_t cap, size_t *len) {
    if (doc == NULL) return SP_ERR_NO_MEMORY;
    size_t need = json_dumpb(doc, NULL, 0, JSON_COMPACT);
    sp_error rc = SP_OK;
    if (need == 0) {
        rc = SP_ERR_NO_MEMORY;
    } else if (need + 1 > cap) {
        *len = need;
        rc = SP_ERR_BUFFER_TOO_SMALL;
    } else if (json_dumpb(doc, out, cap, JSON_COMPACT) != need) {
        rc = SP_ERR_NO_MEMORY;
    } else {
        out[need] = 0;
        *len = need;
    }
    if (rc != SP_OK && out != NULL) sp_wipe(out, cap);
    json_decref(doc);
    return rc;
}

sp_error sp_channel_public_json(const sp_channel *ch, char *out, size_t cap, size_t *len) {
    SP_ENSURE(len != NULL, SP_ERR_INVALID_ARGUMENT);
    *len = 0;
    SP_ENSURE(ch != NULL && (out != NULL || cap == 0), SP_ERR_INVALID_ARGUMENT);
    return sp_ch_dump(sp_ch_public_doc(ch), out, cap, len);
}

sp_error sp_channel_secrets_json(const sp_channel *ch, char *out, size_t cap, size_t *len) {
    SP_ENSURE(len != NULL, SP_ERR_INVALID_ARGUMENT);
    *len = 0;
    SP_ENSURE(ch != NULL && (out != NULL || cap == 0), SP_ERR_INVALID_ARGUMENT);
    json_t *doc = json_object();
    bool ok = doc != NULL && sp_ch_set_str(doc, "password", ch->password) &&
              sp_ch_set_str(doc, "client_secret", ch->client_secret);
    if (ok && ch->n_auth_headers > 0) {
        json_t *hs = json_object();
        ok = hs != NULL;
        for (size_t i = 0; ok && i < ch->n_auth_headers; i++) ok = sp_ch_set_str(hs, ch->ahname[i], ch->ahvalue[i]);
        ok = json_object_set_new(doc, "headers", hs) == 0 && ok;
    }
    if (!ok) {
        json_decref(doc);
        return SP_ERR_NO_MEMORY;
    }
    return sp_ch_dump(doc, out, cap, len);
}

/* ---- accessors ---- */
sp_channel_kind sp_channel_get_kind(const sp_channel *ch) { return ch ? ch->kind : 0; }
const char *sp_channel_nickname(const sp_channel *ch) { return ch ? ch->nickname : NULL; }
sp_channel_method sp_channel_get_method(const sp_channel *ch) { return ch ? ch->method : 0; }
const char *sp_channel_endpoint(const sp_channel *ch) { return ch ? ch->endpoint : NULL; }
sp_channel_body_type sp_channel_get_body_type(const sp_channel *ch) { return ch ? ch->body_type : 0; }

const char *sp_channel_content_type(const sp_channel *ch) {
    if (ch == NULL || ch->method == SP_CHANNEL_GET) return NULL;
    return ch->body_type == SP_CHANNEL_BODY_JSON ? "application/json" : "application/x-www-form-urlencoded";
}

size_t sp_channel_header_count(const sp_channel *ch) { return ch ? ch->n_headers : 0; }

sp_error sp_channel_header(const sp_channel *ch, size_t i, sp_header *out) {
    SP_ENSURE(ch != NULL && out != NULL && i < ch->n_headers, SP_ERR_INVALID_ARGUMENT);
    out->name = ch->hname[i];
    out->name_len = strlen(ch->hname[i]);
    out->value = ch->hvalue[i];
    out->value_len = strlen(ch->hvalue[i]);
    return SP_OK;
}

size_t sp_channel_batch_size(const sp_channel *ch) { return ch ? ch->batch_size : 0; }
const char *sp_channel_batch_key(const sp_channel *ch) { return ch && ch->batch_size > 1 ? ch->batch_key : NULL; }
const sp_template *sp_channel_body_template(const sp_channel *ch) { return ch ? ch->body.t : NULL; }
const char *sp_channel_from_name(const sp_channel *ch) { return ch ? ch->from_name : NULL; }
const char *sp_channel_from_address(const sp_channel *ch) { return ch ? ch->from_address : NULL; }
const char *sp_channel_reply_to(const sp_channel *ch) { return ch ? ch->reply_to : NULL; }
const char *sp_channel_delivery_report_url(const sp_channel *ch) { return ch ? ch->delivery_report_url : NULL; }
const char *sp_channel_inbound_url(const sp_channel *ch) { return ch ? ch->inbound_url : NULL; }
const char *sp_channel_sender_id(const sp_channel *ch) { return ch ? ch->sender_id : NULL; }
size_t sp_channel_custom_count(const sp_channel *ch) { return ch ? ch->n_custom : 0; }

const char *sp_channel_custom_key(const sp_channel *ch, size_t i) {
    return ch && i < ch->n_custom ? ch->custom_key[i] : NULL;
}

const char *sp_channel_custom_value(const sp_channel *ch, size_t i) {
    return ch && i < ch->n_custom ? ch->custom_value[i] : NULL;
}

void sp_channel_get_auth(const sp_channel *ch, sp_channel_auth *out) {
    if (out == NULL) return;
    memset(out, 0, sizeof *out);
    if (ch == NULL) return;
    out->type = ch->auth_type;
    out->username = ch->username;
    out->password = ch->password;
    out->token_url = ch->token_url;
    out->client_id = ch->client_id;
    out->client_secret = ch->client_secret;
    out->scope = ch->scope;
    out->audience = ch->audience;
    out->client_auth = ch->auth_type == SP_CHANNEL_AUTH_OAUTH2 ? ch->client_auth : 0;
}

void sp_channel_get_encryption(const sp_channel *ch, sp_channel_encryption *out) {
    if (out == NULL) return;
    memset(out, 0, sizeof *out);
    if (ch == NULL) return;
    out->enabled = ch->enc_enabled;
    out->alg = ch->alg;
    out->profile = ch->profile;
    out->key = ch->enc_key;
}

size_t sp_channel_auth_header_count(const sp_channel *ch) { return ch ? ch->n_auth_headers : 0; }

sp_error sp_channel_auth_header(const sp_channel *ch, size_t i, sp_header *out) {
    SP_ENSURE(ch != NULL && out != NULL && i < ch->n_auth_headers, SP_ERR_INVALID_ARGUMENT);
    out->name = ch->ahname[i];
    out->name_len = strlen(ch->ahname[i]);
    out->value = ch->ahvalue[i];
    out->value_len = strlen(ch->ahvalue[i]);
    return SP_OK;
}

/* ---- rendering ---- */
typedef struct sp_ch_ctx {
    const sp_channel *ch;
    const sp_channel_message *m;
    const uint16_t *src;
} sp_ch_ctx;

static bool sp_ch_value(sp_channel_value v, const char **value, size_t *len) {
    if (v.data == NULL) return false;
    *value = v.data;
    *len = v.len;
    return true;
}

/* A setting of the channel: empty when not configured. */
static bool sp_ch_setting(const char *s, const char **value, size_t *len) {
    *value = s ? s : "";
    *len = s ? strlen(s) : 0;
    return true;
}

/* A callback URL: the channel's own setting, else the sender's fallback
 * (the platform's callback URL), else empty. */
static bool sp_ch_url_or(const char *s, sp_channel_value fallback, const char **value, size_t *len) {
    if (s == NULL && fallback.data != NULL) return sp_ch_value(fallback, value, len);
    return sp_ch_setting(s, value, len);
}

static bool sp_ch_lookup(void *vctx, size_t index, const char **value, size_t *len) {
    const sp_ch_ctx *c = vctx;
    const sp_channel_message *m = c->m;
    uint16_t src = c->src[index];
    switch (src) {
    case SP_SRC_TO: return sp_ch_value(m->to, value, len);
    case SP_SRC_BODY: return sp_ch_value(m->body, value, len);
    case SP_SRC_MESSAGE_ID: return sp_ch_value(m->message_id, value, len);
    case SP_SRC_CAMPAIGN_ID: return sp_ch_value(m->campaign_id, value, len);
    case SP_SRC_SUBJECT: return sp_ch_value(m->subject, value, len);
    case SP_SRC_HTML: return sp_ch_value(m->html, value, len);
    case SP_SRC_PLAINTEXT: return sp_ch_value(m->plaintext, value, len);
    case SP_SRC_FROM_NAME: return sp_ch_setting(c->ch->from_name, value, len);
    case SP_SRC_FROM_ADDRESS: return sp_ch_setting(c->ch->from_address, value, len);
    case SP_SRC_REPLY_TO: return sp_ch_setting(c->ch->reply_to, value, len);
    case SP_SRC_DELIVERY_REPORT_URL: return sp_ch_url_or(c->ch->delivery_report_url, m->delivery_report_url, value, len);
    case SP_SRC_INBOUND_URL: return sp_ch_url_or(c->ch->inbound_url, m->inbound_url, value, len);
    case SP_SRC_SENDER_ID: return sp_ch_setting(c->ch->sender_id, value, len);
    default: break;
    }
    size_t i = (size_t)(src - SP_SRC_CUSTOM);
    if (m->custom != NULL && m->custom[i].data != NULL) return sp_ch_value(m->custom[i], value, len);
    *value = c->ch->custom_value[i];
    *len = c->ch->custom_len[i];
    return true;
}

/* Renders bt into o at its position, counting on once o is full. */
static sp_error sp_ch_put_tpl(sp_tpl_out *o, const sp_ch_tpl *bt, sp_ch_ctx *ctx, sp_escape escape) {
    size_t room = o->pos < o->cap ? o->cap - o->pos : 0;
    size_t n = 0;
    ctx->src = bt->src;
    sp_error rc = sp_template_render(bt->t, sp_ch_lookup, ctx, escape, room ? o->data + o->pos : NULL, room, &n, NULL);
    if (rc != SP_OK && rc != SP_ERR_BUFFER_TOO_SMALL) return rc;
    if (n > SIZE_MAX / 2 - o->pos) return SP_ERR_TOO_LARGE;
    o->pos += n;
    return SP_OK;
}

sp_error sp_channel_render(const sp_channel *ch, const sp_channel_message *msgs, size_t n, char *out, size_t cap,
                           size_t *len) {
    SP_ENSURE(len != NULL, SP_ERR_INVALID_ARGUMENT);
    *len = 0;
    SP_ENSURE(ch != NULL && msgs != NULL && (out != NULL || cap == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n >= 1 && n <= ch->batch_size, SP_ERR_INVALID_ARGUMENT);
    sp_tpl_out o = sp_tpl_out_of(out, cap);
    sp_ch_ctx ctx = {ch, msgs, NULL};
    sp_error rc = SP_OK;
    if (ch->body_type == SP_CHANNEL_BODY_FORM) {
        for (size_t i = 0; i < ch->n_fields; i++) {
            const sp_ch_field *f = &ch->fields[i];
            if (i > 0) SP_GUARD_GOTO(sp_tpl_put(&o, "&", 1), rc, fail);
            SP_GUARD_GOTO(sp_tpl_put(&o, f->key_enc, f->key_enc_len), rc, fail);
            SP_GUARD_GOTO(sp_tpl_put(&o, "=", 1), rc, fail);
            SP_GUARD_GOTO(sp_ch_put_tpl(&o, &f->tpl, &ctx, SP_ESCAPE_FORM), rc, fail);
        }
    } else if (ch->batch_size > 1) {
        SP_GUARD_GOTO(sp_tpl_put(&o, ch->batch_prefix, ch->batch_prefix_len), rc, fail);
        for (size_t i = 0; i < n; i++) {
            if (i > 0) SP_GUARD_GOTO(sp_tpl_put(&o, ",", 1), rc, fail);
            ctx.m = &msgs[i];
            SP_GUARD_GOTO(sp_ch_put_tpl(&o, &ch->body, &ctx, SP_ESCAPE_JSON), rc, fail);
        }
        SP_GUARD_GOTO(sp_tpl_put(&o, "]}", 2), rc, fail);
    } else {
        SP_GUARD_GOTO(sp_ch_put_tpl(&o, &ch->body, &ctx, SP_ESCAPE_JSON), rc, fail);
    }
    if (o.pos > cap) {
        sp_tpl_out_wipe(&o);
        *len = o.pos;
        return SP_ERR_BUFFER_TOO_SMALL;
    }
    *len = o.pos;
    return SP_OK;
fail:
    sp_tpl_out_wipe(&o);
    return rc;
}
