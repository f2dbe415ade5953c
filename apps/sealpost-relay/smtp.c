/*
 * E-mail: a record becomes an RFC 5322 message handed to the configured
 * SMTP server with libcurl (MAIL FROM, RCPT TO, DATA; STARTTLS as
 * configured).
 *
 * The builder is pure and bounded: the output size is computed up front
 * (quoted-printable at most triples a byte, plus soft breaks), so there is
 * one allocation and no realloc leaving copies of the plaintext behind; the
 * buffer is wiped when freed. Header values that are not plain ASCII, or
 * would make a line too long, go out as RFC 2047 B encoded-words split on
 * UTF-8 character boundaries. Bodies are quoted-printable with CRLF line
 * ends, lines at most 76 characters, and a leading '.' encoded, so no line
 * can end the DATA phase early. The multipart boundary starts with "=_",
 * which quoted-printable output can never contain.
 *
 * The SMTP outcome: 2xx delivered; 5xx (RCPT refused, most often) a hard
 * bounce; 4xx a soft bounce, except 421 (the server is going away) and no
 * answer at all, which mean "try later": the platform gets 503 and retries.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"

typedef struct out_buf {
    char *data;
    size_t len, cap;
    bool overflow;
} out_buf;

static void put(out_buf *b, const char *s, size_t n) {
    if (b->overflow || n > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}
static void puts_(out_buf *b, const char *s) { put(b, s, strlen(s)); }

static bool plain_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return false;
    return true;
}

/* Encoded-words of at most 45 input bytes each (60 base64 characters). */
static void put_encoded_words(out_buf *b, const char *value) {
    size_t len = strlen(value), pos = 0;
    bool first = true;
    while (pos < len) {
        size_t n = len - pos < 45 ? len - pos : 45;
        /* never split a UTF-8 sequence: back up over continuation bytes */
        while (n > 0 && pos + n < len && ((unsigned char)value[pos + n] & 0xC0) == 0x80) n--;
        if (n == 0) n = len - pos < 45 ? len - pos : 45;
        char enc[SP_BASE64_CHARS(45) + 1];
        size_t elen = 0;
        if (sp_base64_encode((const uint8_t *)value + pos, n, enc, sizeof enc, &elen) != SP_OK) {
            b->overflow = true;
            return;
        }
        if (!first) puts_(b, "\r\n ");
        puts_(b, "=?UTF-8?B?");
        put(b, enc, elen);
        puts_(b, "?=");
        first = false;
        pos += n;
    }
}

sp_error relay_rfc2047(const char *value, char *out, size_t cap) {
    if (cap == 0) return SP_ERR_BUFFER_TOO_SMALL;
    out_buf b = {out, 0, cap - 1, false};
    if (plain_ascii(value) && strlen(value) <= 900) puts_(&b, value);
    else put_encoded_words(&b, value);
    if (b.overflow) {
        out[0] = '\0';
        return SP_ERR_BUFFER_TOO_SMALL;
    }
    out[b.len] = '\0';
    return SP_OK;
}

static void put_header_value(out_buf *b, const char *value) {
    if (plain_ascii(value) && strlen(value) <= 900) puts_(b, value);
    else put_encoded_words(b, value);
}

/* A display name: a quoted-string when ASCII, else encoded-words. */
static void put_display_name(out_buf *b, const char *name) {
    if (plain_ascii(name) && strlen(name) <= 900) {
        puts_(b, "\"");
        for (const char *p = name; *p; p++) {
            if (*p == '"' || *p == '\\') puts_(b, "\\");
            put(b, p, 1);
        }
        puts_(b, "\"");
    } else {
        put_encoded_words(b, name);
    }
}

/* Quoted-printable (RFC 2045 6.7) with CRLF line ends. */
static void put_qp(out_buf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    size_t line = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\r' && p[1] == '\n') continue; /* CRLF and LF alike become CRLF */
        if (*p == '\n' || *p == '\r') {
            puts_(b, "\r\n");
            line = 0;
            continue;
        }
        char enc[3];
        size_t n = 1;
        bool next_is_eol = p[1] == '\0' || p[1] == '\n' || p[1] == '\r';
        if ((*p >= 33 && *p <= 126 && *p != '=' && !(*p == '.' && line == 0)) ||
            ((*p == ' ' || *p == '\t') && !next_is_eol)) {
            enc[0] = (char)*p;
        } else {
            enc[0] = '=';
            enc[1] = hex[*p >> 4];
            enc[2] = hex[*p & 15];
            n = 3;
        }
        if (line + n > 75) {
            puts_(b, "=\r\n");
            line = 0;
            if (enc[0] == '.' && n == 1) {
                enc[0] = '=', enc[1] = '2', enc[2] = 'E';
                n = 3;
            }
        }
        put(b, enc, n);
        line += n;
    }
}

static const char *domain_of(const char *address) {
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "localhost";
}

sp_error relay_smtp_build(const relay_record *r, int64_t now, const char *boundary_seed, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    size_t hl = strlen(r->html), tl = strlen(r->text);
    size_t bound = 8192 + 4 * (strlen(r->subject) + strlen(r->from_name)) + 4 * (hl + tl) + 16;
    out_buf b = {malloc(bound), 0, bound, false};
    if (!b.data) return SP_ERR_NO_MEMORY;
    char line[512];
    struct tm tm;
    time_t t = (time_t)now;
    gmtime_r(&t, &tm);
    strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S +0000\r\n", &tm);
    puts_(&b, line);
    snprintf(line, sizeof line, "Message-ID: <%s@%s>\r\n", r->message_id, domain_of(r->from));
    puts_(&b, line);
    puts_(&b, "From: ");
    if (r->from_name[0]) {
        put_display_name(&b, r->from_name);
        puts_(&b, " ");
    }
    puts_(&b, "<");
    puts_(&b, r->from);
    puts_(&b, ">\r\nTo: <");
    puts_(&b, r->to);
    puts_(&b, ">\r\n");
    if (r->reply_to[0]) {
        puts_(&b, "Reply-To: <");
        puts_(&b, r->reply_to);
        puts_(&b, ">\r\n");
    }
    puts_(&b, "Subject: ");
    put_header_value(&b, r->subject);
    puts_(&b, "\r\nMIME-Version: 1.0\r\n");
    const char *qp = "Content-Transfer-Encoding: quoted-printable\r\n";
    if (hl && tl) {
        char boundary[80];
        uint8_t rnd[12];
        if (!boundary_seed) {
            if (sp_random(rnd, sizeof rnd) != SP_OK) {
                relay_wiped_free(b.data, bound);
                return SP_ERR_RANDOM;
            }
            char hex[25];
            for (size_t i = 0; i < sizeof rnd; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
            snprintf(boundary, sizeof boundary, "=_sp_%s", hex);
        } else {
            snprintf(boundary, sizeof boundary, "=_sp_%.40s", boundary_seed);
        }
        snprintf(line, sizeof line, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
        puts_(&b, line);
        snprintf(line, sizeof line, "--%s\r\nContent-Type: text/plain; charset=UTF-8\r\n%s\r\n", boundary, qp);
        puts_(&b, line);
        put_qp(&b, r->text);
        snprintf(line, sizeof line, "\r\n--%s\r\nContent-Type: text/html; charset=UTF-8\r\n%s\r\n", boundary, qp);
        puts_(&b, line);
        put_qp(&b, r->html);
        snprintf(line, sizeof line, "\r\n--%s--\r\n", boundary);
        puts_(&b, line);
    } else {
        snprintf(line, sizeof line, "Content-Type: text/%s; charset=UTF-8\r\n%s\r\n", hl ? "html" : "plain", qp);
        puts_(&b, line);
        put_qp(&b, hl ? r->html : r->text);
        puts_(&b, "\r\n");
    }
    if (b.overflow) {
        relay_wiped_free(b.data, bound);
        return SP_ERR_TOO_LARGE;
    }
    *out = b.data;
    *len = b.len;
    /* the caller frees with relay_wiped_free(*out, *len): wipe the unused tail now */
    sp_wipe(b.data + b.len, bound - b.len);
    return SP_OK;
}

const char *relay_outcome_name(relay_outcome o) {
    switch (o) {
    case RELAY_OUT_DELIVERED: return "delivered";
    case RELAY_OUT_HARD_BOUNCE: return "hard_bounce";
    case RELAY_OUT_SOFT_BOUNCE: return "soft_bounce";
    case RELAY_OUT_UNAVAILABLE: return "unavailable";
    case RELAY_OUT_REJECTED: return "rejected";
    }
    return "unknown";
}

typedef struct reader {
    const char *data;
    size_t len, pos;
} reader;

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg) {
    reader *r = arg;
    size_t want = size * nmemb, left = r->len - r->pos;
    size_t n = want < left ? want : left;
    memcpy(buf, r->data + r->pos, n);
    r->pos += n;
    return n;
}

static void common_opts(CURL *c, const relay_config *cfg) {
    curl_easy_setopt(c, CURLOPT_URL, cfg->smtp_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)cfg->smtp_timeout_s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)(cfg->smtp_timeout_s < 10 ? cfg->smtp_timeout_s : 10));
    long ssl = cfg->smtp_starttls == RELAY_STARTTLS_REQUIRE ? (long)CURLUSESSL_ALL
               : cfg->smtp_starttls == RELAY_STARTTLS_OFF   ? (long)CURLUSESSL_NONE
                                                            : (long)CURLUSESSL_TRY;
    curl_easy_setopt(c, CURLOPT_USE_SSL, ssl);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (cfg->smtp_username[0]) {
        curl_easy_setopt(c, CURLOPT_USERNAME, cfg->smtp_username);
        curl_easy_setopt(c, CURLOPT_PASSWORD, cfg->smtp_password);
    }
}

relay_outcome relay_smtp_send(const relay_config *cfg, const relay_record *r, int *code) {
    *code = 0;
    char *msg = NULL;
    size_t msg_len = 0;
    if (relay_smtp_build(r, (int64_t)time(NULL), NULL, &msg, &msg_len) != SP_OK) return RELAY_OUT_UNAVAILABLE;
    CURL *c = curl_easy_init();
    struct curl_slist *rcpt = NULL;
    char addr[RELAY_MAX_ADDRESS + 3];
    relay_outcome outcome = RELAY_OUT_UNAVAILABLE;
    if (!c) goto out;
    common_opts(c, cfg);
    snprintf(addr, sizeof addr, "<%s>", r->from);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, addr);
    snprintf(addr, sizeof addr, "<%s>", r->to);
    rcpt = curl_slist_append(NULL, addr);
    sp_wipe(addr, sizeof addr);
    if (!rcpt) goto out;
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    reader rd = {msg, msg_len, 0};
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &rd);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    CURLcode cc = curl_easy_perform(c);
    long rc = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rc);
    *code = (int)rc;
    if (cc == CURLE_OK) outcome = RELAY_OUT_DELIVERED;
    else if (rc >= 500 && rc <= 599) outcome = RELAY_OUT_HARD_BOUNCE;
    else if (rc >= 400 && rc <= 499 && rc != 421) outcome = RELAY_OUT_SOFT_BOUNCE;
    else outcome = RELAY_OUT_UNAVAILABLE;
    if (outcome != RELAY_OUT_DELIVERED) {
        sp_log_field f[] = {SP_LOG_S("message_id", r->message_id), SP_LOG_I("smtp_code", rc),
                            SP_LOG_S("curl", curl_easy_strerror(cc))};
        sp_log(SP_LOG_WARN, "smtp.not_delivered", f, 3);
    }
out:
    if (rcpt) {
        /* the list holds the recipient's address */
        for (struct curl_slist *s = rcpt; s; s = s->next) sp_wipe(s->data, strlen(s->data));
        curl_slist_free_all(rcpt);
    }
    if (c) curl_easy_cleanup(c);
    relay_wiped_free(msg, msg_len);
    return outcome;
}

bool relay_smtp_reachable(const relay_config *cfg) {
    CURL *c = curl_easy_init();
    if (!c) return false;
    common_opts(c, cfg);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "NOOP");
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return cc == CURLE_OK;
}
