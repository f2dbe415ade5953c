/*
 * The OAuth 2.0 client-credentials token cache (RFC 6749 section 4.4) a
 * channel's workers share.
 *
 * One token per cache. The first caller that finds none, or finds it due
 * for refresh, fetches with a blocking libcurl call while holding only a
 * "fetching" flag, not the lock: callers that arrive meanwhile take the
 * current token if it is still valid (a refresh starts well before expiry,
 * so sends go on while it runs) and otherwise wait on a condition variable
 * for that one fetch and share its outcome, so a worker pool that starts
 * cold, or loses its token to a 401, costs the authorization server one
 * request, not one per thread. A failed refresh leaves a still-valid token
 * in use.
 *
 * The request body and the Basic credentials are built once, at creation,
 * in memory wiped on free (they carry the client secret); the reply buffer
 * and every copy of a token are wiped too. A token endpoint is an external
 * input like any other: its reply is bounded (SP_OAUTH2_MAX_REPLY), the
 * token must be an RFC 6750 b64token of at most SP_OAUTH2_MAX_TOKEN bytes
 * (it goes into an HTTP header verbatim), token_type must be Bearer, and
 * expires_in a positive integer (a number, or the string of one as some
 * servers send it).
 *
 * Refresh is due when less than max(30 s, 10 % of the lifetime) is left,
 * but never earlier than half-way, so that very short-lived tokens are
 * still reused.
 */
#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "http/sp_http_client_internal.h"

#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_LIFETIME_S 300 /* when the server does not say */
#define MAX_LIFETIME_S (366 * 86400)
#define MIN_REFRESH_MARGIN_MS 30000

struct sp_oauth2 {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *url;
    char *ca_file;
    bool allow_self_signed;
    unsigned timeout_ms;
    char *form; /* the request body; wiped on free (may hold the secret) */
    size_t form_len, form_cap;
    char *basic; /* "Authorization: Basic ..." or NULL; wiped on free */
    size_t basic_cap;
    /* under mu */
    bool fetching;
    uint64_t generation; /* fetches finished */
    sp_error last_error;
    bool have;
    char token[SP_OAUTH2_MAX_TOKEN + 1];
    size_t token_len;
    int64_t refresh_at_ms, expires_at_ms;
    atomic_uint_least64_t fetches;
};

static bool field_ok(const char *s, bool required) {
    if (s == NULL) return !required;
    size_t n = strnlen(s, SP_OAUTH2_MAX_FIELD + 1);
    if (n > SP_OAUTH2_MAX_FIELD || (required && n == 0)) return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    }
    return true;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = sp_malloc(n + 1);
    if (d != NULL) memcpy(d, s, n + 1);
    return d;
}

/* application/x-www-form-urlencoded, as RFC 6749 appendix B asks */
static sp_error form_encode(sp_wbuf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~') {
            SP_GUARD(sp_wbuf_put(b, p, 1));
        } else if (ch == ' ') {
            SP_GUARD(sp_wbuf_put(b, "+", 1));
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            SP_GUARD(sp_wbuf_put(b, esc, 3));
        }
    }
    return SP_OK;
}

static sp_error form_param(sp_wbuf *b, const char *name, const char *value) {
    if (value == NULL || value[0] == '\0') return SP_OK;
    SP_GUARD(sp_wbuf_put_str(b, "&"));
    SP_GUARD(sp_wbuf_put_str(b, name));
    SP_GUARD(sp_wbuf_put_str(b, "="));
    return form_encode(b, value);
}

static sp_error build_requests(sp_oauth2 *o, const sp_oauth2_config *cfg) {
    /* every byte may become %XX */
    size_t form_cap = 128 + 4 * 3 * (size_t)SP_OAUTH2_MAX_FIELD;
    o->form = sp_malloc(form_cap);
    SP_ENSURE(o->form != NULL, SP_ERR_NO_MEMORY);
    o->form_cap = form_cap;
    sp_wbuf f = sp_wbuf_of(o->form, form_cap);
    SP_GUARD(sp_wbuf_put_str(&f, "grant_type=client_credentials"));
    SP_GUARD(form_param(&f, "scope", cfg->scope));
    SP_GUARD(form_param(&f, "audience", cfg->audience));
    if (cfg->auth == SP_OAUTH2_AUTH_BODY) {
        SP_GUARD(form_param(&f, "client_id", cfg->client_id));
        SP_GUARD(form_param(&f, "client_secret", cfg->client_secret));
    }
    SP_GUARD(sp_wbuf_terminate(&f));
    o->form_len = f.len;
    if (cfg->auth != SP_OAUTH2_AUTH_BASIC) return SP_OK;

    /* id and secret are form-urlencoded before they are joined and base64'd */
    size_t pair_cap = 2 * 3 * (size_t)SP_OAUTH2_MAX_FIELD + 2;
    char *pair = sp_malloc(pair_cap);
    SP_ENSURE(pair != NULL, SP_ERR_NO_MEMORY);
    sp_wbuf p = sp_wbuf_of(pair, pair_cap);
    sp_error rc = form_encode(&p, cfg->client_id);
    if (rc == SP_OK) rc = sp_wbuf_put_str(&p, ":");
    if (rc == SP_OK) rc = form_encode(&p, cfg->client_secret);
    size_t basic_cap = sizeof "Authorization: Basic " + sp_b64_encoded_len(pair_cap, false);
    if (rc == SP_OK) {
        o->basic = sp_malloc(basic_cap);
        if (o->basic == NULL) rc = SP_ERR_NO_MEMORY;
    }
    if (rc == SP_OK) {
        o->basic_cap = basic_cap;
        sp_wbuf h = sp_wbuf_of(o->basic, basic_cap);
        rc = sp_wbuf_put_str(&h, "Authorization: Basic ");
        if (rc == SP_OK) rc = sp_wbuf_put_b64(&h, (const uint8_t *)pair, p.len, false);
        if (rc == SP_OK) rc = sp_wbuf_terminate(&h);
    }
    sp_free_wiped(pair, pair_cap);
    return rc;
}

sp_error sp_oauth2_new(const sp_oauth2_config *cfg, sp_oauth2 **out) {
    SP_ENSURE(cfg != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_GUARD(sp_http_url_check(cfg->token_url));
    SP_ENSURE(field_ok(cfg->client_id, true) && field_ok(cfg->client_secret, true) && field_ok(cfg->scope, false) &&
                  field_ok(cfg->audience, false),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->auth == SP_OAUTH2_AUTH_BASIC || cfg->auth == SP_OAUTH2_AUTH_BODY, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(cfg->timeout_ms <= SP_HTTP_CLIENT_MAX_TIMEOUT_MS, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(!cfg->allow_self_signed || (cfg->ca_file != NULL && cfg->ca_file[0] != '\0'), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_http_curl_init());

    sp_oauth2 *o = sp_calloc(1, sizeof *o);
    SP_ENSURE(o != NULL, SP_ERR_NO_MEMORY);
    if (pthread_mutex_init(&o->mu, NULL) != 0) {
        sp_free(o);
        return SP_ERR_NO_MEMORY;
    }
    if (pthread_cond_init(&o->cv, NULL) != 0) {
        pthread_mutex_destroy(&o->mu);
        sp_free(o);
        return SP_ERR_NO_MEMORY;
    }
    atomic_init(&o->fetches, 0);
    o->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    o->allow_self_signed = cfg->allow_self_signed;
    sp_error rc = SP_OK;
    o->url = dup_str(cfg->token_url);
    SP_ENSURE_GOTO(o->url != NULL, SP_ERR_NO_MEMORY, rc, fail);
    if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0') {
        o->ca_file = dup_str(cfg->ca_file);
        SP_ENSURE_GOTO(o->ca_file != NULL, SP_ERR_NO_MEMORY, rc, fail);
    }
    SP_GUARD_GOTO(build_requests(o, cfg), rc, fail);
    *out = o;
    return SP_OK;
fail:
    sp_oauth2_free(o);
    return rc;
}

void sp_oauth2_free(sp_oauth2 *o) {
    if (o == NULL) return;
    sp_free(o->url);
    sp_free(o->ca_file);
    if (o->form != NULL) sp_free_wiped(o->form, o->form_cap);
    if (o->basic != NULL) sp_free_wiped(o->basic, o->basic_cap);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    sp_free_wiped(o, sizeof *o);
}

uint64_t sp_oauth2_fetches(const sp_oauth2 *o) {
    return o != NULL ? (uint64_t)atomic_load(&((sp_oauth2 *)o)->fetches) : 0;
}

/* ---- one fetch ---- */

typedef struct {
    char *data;
    size_t len;
    bool too_large;
} reply_buf;

static size_t on_reply(char *data, size_t size, size_t n, void *arg) {
    reply_buf *r = arg;
    size_t len = size * n;
    if (len > SP_OAUTH2_MAX_REPLY - r->len) {
        r->too_large = true;
        return 0; /* aborts the transfer */
    }
    memcpy(r->data + r->len, data, len);
    r->len += len;
    return len;
}

/* RFC 6750 b64token: it goes verbatim into an Authorization header */
static bool b64token_ok(const char *t, size_t len) {
    size_t i = 0;
    while (i < len) {
        char ch = t[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/';
        if (!ok) break;
        i++;
    }
    if (i == 0) return false;
    while (i < len && t[i] == '=') i++;
    return i == len;
}

static sp_error parse_reply(const reply_buf *r, char *token, size_t *token_len, int64_t *lifetime_s) {
    json_t *root = NULL;
    SP_GUARD(sp_json_load(r->data, r->len, SP_ERR_BAD_JSON, &root));
    sp_error rc = SP_OK;
    SP_ENSURE_GOTO(json_is_object(root), SP_ERR_BAD_JSON, rc, done);
    json_t *at = json_object_get(root, "access_token");
    json_t *tt = json_object_get(root, "token_type");
    json_t *ei = json_object_get(root, "expires_in");
    SP_ENSURE_GOTO(json_is_string(at) && json_is_string(tt), SP_ERR_BAD_JSON, rc, done);
    size_t len = json_string_length(at);
    SP_ENSURE_GOTO(len <= SP_OAUTH2_MAX_TOKEN, SP_ERR_TOO_LARGE, rc, done);
    const char *text = json_string_value(at);
    SP_ENSURE_GOTO(b64token_ok(text, len), SP_ERR_BAD_JSON, rc, done);
    SP_ENSURE_GOTO(sp_ascii_ieq(json_string_value(tt), json_string_length(tt), "bearer"), SP_ERR_BAD_JSON, rc, done);
    int64_t life = DEFAULT_LIFETIME_S;
    if (json_is_integer(ei)) {
        json_int_t v = json_integer_value(ei);
        SP_ENSURE_GOTO(v > 0, SP_ERR_BAD_JSON, rc, done);
        life = v;
    } else if (json_is_string(ei)) {
        uint64_t v = 0;
        SP_ENSURE_GOTO(sp_parse_u64(json_string_value(ei), json_string_length(ei), UINT32_MAX, &v) == SP_OK && v > 0,
                       SP_ERR_BAD_JSON, rc, done);
        life = (int64_t)v;
    } else {
        SP_ENSURE_GOTO(ei == NULL, SP_ERR_BAD_JSON, rc, done);
    }
    memcpy(token, text, len);
    token[len] = '\0';
    *token_len = len;
    *lifetime_s = life < MAX_LIFETIME_S ? life : MAX_LIFETIME_S;
done:
    json_decref(root); /* sp_init's allocator wipes what it frees */
    return rc;
}

static sp_error status_error(long status) {
    if (status == 400 || status == 401 || status == 403) return SP_ERR_AUTH;
    if (status == 408 || status == 429 || (status >= 500 && status < 600)) return SP_ERR_PROVIDER_UNAVAILABLE;
    return SP_ERR_PROVIDER_REJECTED;
}

static sp_error fetch(sp_oauth2 *o, char *token, size_t *token_len, int64_t *lifetime_s) {
    reply_buf r = {sp_malloc(SP_OAUTH2_MAX_REPLY), 0, false};
    SP_ENSURE(r.data != NULL, SP_ERR_NO_MEMORY);
    CURL *e = curl_easy_init();
    sp_error rc = e != NULL ? SP_OK : SP_ERR_NO_MEMORY;
    struct curl_slist nodes[3] = {
        {(char *)"Content-Type: application/x-www-form-urlencoded", &nodes[1]},
        {(char *)"Accept: application/json", o->basic != NULL ? &nodes[2] : NULL},
        {o->basic, NULL},
    };
    if (rc == SP_OK) rc = sp_http_easy_base(e, o->ca_file, o->allow_self_signed);
    long connect_ms = o->timeout_ms < 5000 ? (long)o->timeout_ms : 5000L;
    bool ok = rc == SP_OK && curl_easy_setopt(e, CURLOPT_URL, o->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->form_len) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->form) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HTTPHEADER, nodes) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_reply) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEDATA, &r) == CURLE_OK;
    if (rc == SP_OK && !ok) rc = SP_ERR_NO_MEMORY;
    if (rc == SP_OK) {
        CURLcode cc = curl_easy_perform(e);
        long status = 0;
        (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (r.too_large) {
            rc = SP_ERR_TOO_LARGE;
        } else if (cc != CURLE_OK) {
            rc = cc == CURLE_OUT_OF_MEMORY ? SP_ERR_NO_MEMORY : SP_ERR_NETWORK;
        } else if (status < 200 || status > 299) {
            rc = status_error(status);
        } else {
            rc = parse_reply(&r, token, token_len, lifetime_s);
        }
    }
    if (e != NULL) curl_easy_cleanup(e);
    sp_free_wiped(r.data, SP_OAUTH2_MAX_REPLY);
    return rc;
}

/* ---- the cache ---- */

static sp_error copy_out(const sp_oauth2 *o, char *out, size_t cap, size_t *len) {
    SP_ENSURE(cap > o->token_len, SP_ERR_BUFFER_TOO_SMALL);
    memcpy(out, o->token, o->token_len + 1);
    *len = o->token_len;
    return SP_OK;
}

sp_error sp_oauth2_token(sp_oauth2 *o, int64_t now_ms, char *out, size_t cap, size_t *len) {
    SP_ENSURE(o != NULL && out != NULL && len != NULL, SP_ERR_INVALID_ARGUMENT);
    char fresh[SP_OAUTH2_MAX_TOKEN + 1];
    sp_error rc;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (o->have && now_ms < o->refresh_at_ms) {
            rc = copy_out(o, out, cap, len);
            break;
        }
        if (o->fetching) {
            if (o->have && now_ms < o->expires_at_ms) {
                rc = copy_out(o, out, cap, len); /* still good while another caller renews it */
                break;
            }
            uint64_t gen = o->generation;
            while (o->fetching) pthread_cond_wait(&o->cv, &o->mu);
            if (o->generation != gen && o->last_error != SP_OK &&
                !(o->have && now_ms < o->expires_at_ms)) {
                rc = o->last_error; /* the fetch we waited for failed: its reason is ours */
                break;
            }
            continue;
        }
        o->fetching = true;
        pthread_mutex_unlock(&o->mu);
        size_t fresh_len = 0;
        int64_t life_s = 0;
        rc = fetch(o, fresh, &fresh_len, &life_s);
        pthread_mutex_lock(&o->mu);
        atomic_fetch_add(&o->fetches, 1);
        o->fetching = false;
        o->generation++;
        o->last_error = rc;
        if (rc == SP_OK) {
            sp_wipe(o->token, sizeof o->token);
            memcpy(o->token, fresh, fresh_len + 1);
            o->token_len = fresh_len;
            o->have = true;
            int64_t life_ms = life_s * 1000;
            int64_t margin = life_ms / 10 > MIN_REFRESH_MARGIN_MS ? life_ms / 10 : MIN_REFRESH_MARGIN_MS;
            if (margin > life_ms / 2) margin = life_ms / 2;
            o->expires_at_ms = now_ms + life_ms;
            o->refresh_at_ms = o->expires_at_ms - margin;
        }
        pthread_cond_broadcast(&o->cv);
        if (rc == SP_OK || (o->have && now_ms < o->expires_at_ms)) rc = copy_out(o, out, cap, len);
        break;
    }
    pthread_mutex_unlock(&o->mu);
    sp_wipe(fresh, sizeof fresh);
    return rc;
}

void sp_oauth2_invalidate(sp_oauth2 *o, const char *token, size_t len) {
    if (o == NULL || token == NULL) return;
    pthread_mutex_lock(&o->mu);
    if (o->have && len == o->token_len && CRYPTO_memcmp(token, o->token, len) == 0) {
        o->have = false;
        sp_wipe(o->token, sizeof o->token);
        o->token_len = 0;
    }
    pthread_mutex_unlock(&o->mu);
}
