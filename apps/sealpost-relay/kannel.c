/*
 * SMS through Kannel: the sendsms GET for a record, and what Kannel calls
 * back with on the relay's loopback listener (delivery reports through the
 * dlr-url, inbound messages through an sms-service get-url).
 *
 * A sendsms asks for every report (dlr-mask=31) and names the relay's DLR
 * listener with the message id in the URL, so a report needs no lookup of
 * Kannel's own ids. Kannel's DLR type is a sum of bits; the most telling
 * bit decides (PROTOCOL.md §10.4): 1 delivered; 2 and 16 failed, with the
 * relay's codes 901 (not delivered to the phone) and 902 (refused by the
 * SMSC); 8 and 4 buffered, not final, so no callback is sent for them.
 *
 * Kannel's answers to sendsms: 202 (and 200) taken; 4xx refused for good
 * (a failed callback with code 903); 5xx or no answer, try later.
 *
 * The listener is plain HTTP on 127.0.0.1, so any local process could call
 * it: the dlr-url carries a tag (an HMAC of the message id under the state
 * key) and a report without the right one is refused, so a report can only
 * be about a message the relay sent, through the URL it gave Kannel.
 *
 * The query parser decodes and bounds every value (names repeated, stray
 * '%' or values over their limit are refused) and is fuzzed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

sp_error relay_form_encode(const char *value, size_t len, char *out, size_t cap, size_t *out_len) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '*' ||
                     c == '-' || c == '.' || c == '_';
        size_t need = plain || c == ' ' ? 1 : 3;
        if (n + need >= cap) {
            if (cap) sp_wipe(out, n < cap ? n : cap);
            return SP_ERR_BUFFER_TOO_SMALL;
        }
        if (plain) out[n++] = (char)c;
        else if (c == ' ') out[n++] = '+';
        else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (n >= cap) return SP_ERR_BUFFER_TOO_SMALL;
    out[n] = '\0';
    if (out_len) *out_len = n;
    return SP_OK;
}

typedef struct url_buf {
    char *out;
    size_t cap, len;
    bool failed;
} url_buf;

static void add_raw(url_buf *u, const char *s) {
    size_t n = strlen(s);
    if (u->failed || u->len + n >= u->cap) {
        u->failed = true;
        return;
    }
    memcpy(u->out + u->len, s, n + 1);
    u->len += n;
}

static void add_param(url_buf *u, const char *name, const char *value) {
    if (u->failed) return;
    add_raw(u, u->len && strchr(u->out, '?') ? "&" : "?");
    add_raw(u, name);
    add_raw(u, "=");
    size_t n = 0;
    if (u->failed || relay_form_encode(value, strlen(value), u->out + u->len, u->cap - u->len, &n) != SP_OK) {
        u->failed = true;
        return;
    }
    u->len += n;
}

sp_error relay_kannel_url(const relay_config *cfg, const relay_record *r, const char *dlr_tag, char *out,
                          size_t cap) {
    if (cap == 0) return SP_ERR_BUFFER_TOO_SMALL;
    out[0] = '\0';
    url_buf u = {out, cap, 0, false};
    char dlr[256];
    snprintf(dlr, sizeof dlr, "http://127.0.0.1:%u/kannel/dlr?meta=%s%s%.32s&type=%%d&smsc=%%i&ts=%%T",
             (unsigned)cfg->kannel_dlr_port, r->message_id, dlr_tag ? "&sig=" : "", dlr_tag ? dlr_tag : "");
    add_raw(&u, cfg->kannel_sendsms_url);
    add_param(&u, "username", cfg->kannel_username);
    add_param(&u, "password", cfg->kannel_password);
    add_param(&u, "to", r->to);
    add_param(&u, "text", r->text);
    if (r->sender[0]) add_param(&u, "from", r->sender);
    if (cfg->kannel_smsc[0]) add_param(&u, "smsc", cfg->kannel_smsc);
    add_param(&u, "charset", "UTF-8");
    /* plain ASCII goes as GSM 7-bit (160 characters a part); anything else
     * as UCS-2, which Kannel would otherwise mangle into the GSM alphabet */
    bool ascii = true;
    for (const char *p = r->text; *p; p++)
        if ((unsigned char)*p >= 0x80) ascii = false;
    if (!ascii) add_param(&u, "coding", "2");
    add_param(&u, "dlr-mask", "31");
    add_param(&u, "dlr-url", dlr);
    if (u.failed) {
        sp_wipe(out, cap);
        return SP_ERR_BUFFER_TOO_SMALL;
    }
    return SP_OK;
}

relay_dlr_event relay_dlr_map(unsigned type, int *code) {
    *code = 0;
    if (type & 1u) return RELAY_DLR_DELIVERED;
    if (type & 2u) {
        *code = 901;
        return RELAY_DLR_FAILED;
    }
    if (type & 16u) {
        *code = 902;
        return RELAY_DLR_FAILED;
    }
    if (type & (4u | 8u)) return RELAY_DLR_BUFFERED;
    return RELAY_DLR_UNKNOWN;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %XX and '+' into out (NUL-terminated); false on a stray '%', an
 * encoded NUL, or more than cap - 1 bytes. */
static bool form_decode(const char *s, size_t len, char *out, size_t cap, size_t *out_len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') c = ' ';
        else if (c == '%') {
            if (i + 2 >= len) return false;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) return false;
            c = (char)(hi << 4 | lo);
            if (c == '\0') return false;
            i += 2;
        }
        if (n + 1 >= cap) return false;
        out[n++] = c;
    }
    out[n] = '\0';
    *out_len = n;
    return true;
}

static bool digits(const char *s, size_t max_len, uint64_t *out) {
    size_t n = strlen(s);
    if (n == 0 || n > max_len || strspn(s, "0123456789") != n) return false;
    *out = strtoull(s, NULL, 10);
    return true;
}

static bool printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
    return true;
}

sp_error relay_kannel_query_parse(const char *query, size_t len, relay_kannel_query *out) {
    memset(out, 0, sizeof *out);
    if (len > RELAY_MAX_KANNEL_QUERY) return SP_ERR_TOO_LARGE;
    unsigned seen = 0;
    size_t pos = 0;
    char *value = malloc(RELAY_MAX_SMS_TEXT * 4 + 1);
    if (!value) return SP_ERR_NO_MEMORY;
    sp_error rc = SP_OK;
    while (pos < len) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', len - pos);
        size_t plen = amp ? (size_t)(amp - pair) : len - pos;
        pos += plen + 1;
        if (plen == 0) continue;
        const char *eq = memchr(pair, '=', plen);
        size_t nlen = eq ? (size_t)(eq - pair) : plen;
        const char *v = eq ? eq + 1 : pair + plen;
        size_t vlen = eq ? plen - nlen - 1 : 0;
        char name[16];
        size_t name_len;
        if (!form_decode(pair, nlen, name, sizeof name, &name_len)) continue; /* an unknown long name */
        static const char *const names[] = {"meta", "type", "smsc", "ts", "from", "text", "sig"};
        int which = -1;
        for (int i = 0; i < 7; i++)
            if (strcmp(name, names[i]) == 0) which = i;
        if (which < 0) continue;
        if (seen & (1u << which)) {
            rc = SP_ERR_INVALID_ARGUMENT;
            break;
        }
        seen |= 1u << which;
        size_t dlen;
        if (!form_decode(v, vlen, value, RELAY_MAX_SMS_TEXT * 4 + 1, &dlen)) {
            rc = SP_ERR_INVALID_ARGUMENT;
            break;
        }
        uint64_t num;
        switch (which) {
        case 0:
            if (!relay_message_id_valid(value)) rc = SP_ERR_INVALID_ARGUMENT;
            else memcpy(out->meta, value, dlen + 1);
            break;
        case 1:
            if (!digits(value, 5, &num) || num > 65535) rc = SP_ERR_INVALID_ARGUMENT;
            else out->has_type = true, out->type = (unsigned)num;
            break;
        case 2:
            if (dlen >= sizeof out->smsc || !printable(value)) rc = SP_ERR_INVALID_ARGUMENT;
            else memcpy(out->smsc, value, dlen + 1);
            break;
        case 3:
            if (!digits(value, 13, &num)) rc = SP_ERR_INVALID_ARGUMENT;
            else out->ts = (int64_t)num;
            break;
        case 4:
            if (dlen == 0 || dlen >= sizeof out->from || !printable(value)) rc = SP_ERR_INVALID_ARGUMENT;
            else memcpy(out->from, value, dlen + 1), out->has_from = true;
            break;
        case 5:
            if (dlen >= sizeof out->text) rc = SP_ERR_INVALID_ARGUMENT;
            else memcpy(out->text, value, dlen + 1), out->text_len = dlen, out->has_text = true;
            break;
        case 6:
            if (dlen != RELAY_DLR_TAG_CHARS || strspn(value, "0123456789abcdef") != dlen) rc = SP_ERR_INVALID_ARGUMENT;
            else memcpy(out->sig, value, dlen + 1);
            break;
        default:
            break;
        }
        if (rc != SP_OK) break;
    }
    relay_wiped_free(value, RELAY_MAX_SMS_TEXT * 4 + 1);
    if (rc != SP_OK) relay_kannel_query_wipe(out);
    return rc;
}

void relay_kannel_query_wipe(relay_kannel_query *q) { sp_wipe(q, sizeof *q); }

relay_outcome relay_kannel_send(const relay_config *cfg, const relay_record *r, const char *dlr_tag,
                                unsigned *status) {
    *status = 0;
    /* every parameter at its longest, each byte %-encoded */
    size_t cap = RELAY_MAX_URL + 3 * (RELAY_MAX_SMS_TEXT + 2 * 128 + 64 + 2 * RELAY_MAX_PHONE + 256) + 512;
    char *url = malloc(cap);
    if (!url) return RELAY_OUT_UNAVAILABLE;
    relay_outcome outcome = RELAY_OUT_UNAVAILABLE;
    if (relay_kannel_url(cfg, r, dlr_tag, url, cap) == SP_OK) {
        sp_error rc = relay_http_call(cfg, url, NULL, 0, NULL, 0, cfg->kannel_timeout_s, status, NULL);
        if (rc == SP_OK) outcome = RELAY_OUT_DELIVERED;
        else if (rc == SP_ERR_PROVIDER_REJECTED) outcome = RELAY_OUT_REJECTED;
        if (outcome != RELAY_OUT_DELIVERED) {
            sp_log_field f[] = {SP_LOG_S("message_id", r->message_id), SP_LOG_I("status", *status),
                                SP_LOG_S("error", sp_error_name(rc))};
            sp_log(SP_LOG_WARN, "kannel.not_taken", f, 3);
        }
    }
    relay_wiped_free(url, cap);
    return outcome;
}
