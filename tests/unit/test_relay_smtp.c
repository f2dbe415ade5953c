/*
 * The SMTP message builder: the headers (Date, Message-ID from the message
 * id, From with a display name quoted or RFC 2047-encoded, To, Reply-To,
 * Subject), encoded-words that split only between UTF-8 characters and
 * decode back to the subject, multipart/alternative with both bodies,
 * single-part otherwise, quoted-printable rules (line length, '=', a
 * leading '.', trailing blanks, bare LF to CRLF), and the outcome when the
 * server is not there.
 */
#include "sp_test_util.h"

#include <openssl/evp.h>

#include "relay.h"

static relay_record rec(void) {
    relay_record r = {.kind = RELAY_KIND_EMAIL, .message_id = "msg_1", .to = "ada@example.org",
                      .from = "news@acme.example", .from_name = "Acme", .reply_to = "", .subject = "Hello",
                      .html = "", .text = "Hi Ada", .sender = "", .dlr_url = "", .inbound_url = ""};
    return r;
}

static char *build(const relay_record *r, size_t *len) {
    char *out = NULL;
    assert_ok(relay_smtp_build(r, 1714000000, "seed", &out, len));
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    return out;
}

static void test_headers(void **state) {
    (void)state;
    relay_record r = rec();
    r.reply_to = "help@acme.example";
    size_t len;
    char *m = build(&r, &len);
    assert_non_null(strstr(m, "Date: Wed, 24 Apr 2024 23:06:40 +0000\r\n"));
    assert_non_null(strstr(m, "\r\nMessage-ID: <msg_1@acme.example>\r\n"));
    assert_non_null(strstr(m, "\r\nFrom: \"Acme\" <news@acme.example>\r\n"));
    assert_non_null(strstr(m, "\r\nTo: <ada@example.org>\r\n"));
    assert_non_null(strstr(m, "\r\nReply-To: <help@acme.example>\r\n"));
    assert_non_null(strstr(m, "\r\nSubject: Hello\r\n"));
    assert_non_null(strstr(m, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(m, "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHi Ada\r\n"));
    assert_null(strstr(m, "multipart"));
    relay_wiped_free(m, len);
    r.reply_to = "";
    r.from_name = "A \"quoted\" \\name";
    m = build(&r, &len);
    assert_null(strstr(m, "Reply-To"));
    assert_non_null(strstr(m, "From: \"A \\\"quoted\\\" \\\\name\" <news@acme.example>"));
    relay_wiped_free(m, len);
    r.from_name = "";
    m = build(&r, &len);
    assert_non_null(strstr(m, "\r\nFrom: <news@acme.example>\r\n"));
    relay_wiped_free(m, len);
}

/* Decodes "=?UTF-8?B?...?=" words (folded with CRLF SP) back to bytes. */
static size_t decode_words(const char *in, char *out, size_t cap) {
    size_t n = 0;
    const char *p = in;
    while ((p = strstr(p, "=?UTF-8?B?")) != NULL) {
        p += 10;
        const char *end = strstr(p, "?=");
        assert_non_null(end);
        assert_true(end - p + 12 <= 75); /* an encoded-word is at most 75 characters */
        unsigned char buf[128];
        int k = EVP_DecodeBlock(buf, (const unsigned char *)p, (int)(end - p));
        assert_true(k >= 0);
        k -= (end[-1] == '=') + (end[-2] == '='); /* EVP_DecodeBlock counts padding as data */
        assert_true(n + (size_t)k < cap);
        memcpy(out + n, buf, (size_t)k);
        n += (size_t)k;
        /* every word on its own holds whole UTF-8 characters */
        unsigned char last = buf[k - 1];
        assert_false(last >= 0xC0);
        p = strstr(p, "?=") + 2;
    }
    out[n] = '\0';
    return n;
}

static void test_rfc2047(void **state) {
    (void)state;
    char out[2048], back[1024];
    assert_ok(relay_rfc2047("plain ascii", out, sizeof out));
    assert_string_equal(out, "plain ascii");
    const char *s = "Bienvenue, Zoë — ✓ ünïcödé ✓ ünïcödé ✓ ünïcödé ✓ ünïcödé ✓ ünïcödé ✓ ünïcödé ✓";
    assert_ok(relay_rfc2047(s, out, sizeof out));
    assert_non_null(strstr(out, "\r\n =?UTF-8?B?")); /* folded: more than one word */
    decode_words(out, back, sizeof back);
    assert_string_equal(back, s);
    assert_rc(relay_rfc2047(s, out, 20), SP_ERR_BUFFER_TOO_SMALL);
    /* a long ASCII subject is encoded too, so no line passes 998 */
    char longs[950];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    assert_ok(relay_rfc2047(longs, out, sizeof out));
    assert_non_null(strstr(out, "=?UTF-8?B?"));
}

static void test_encoded_headers_in_message(void **state) {
    (void)state;
    relay_record r = rec();
    r.subject = "Welcome, Ada ✓";
    r.from_name = "Acme Ünïcode";
    size_t len;
    char *m = build(&r, &len);
    assert_non_null(strstr(m, "\r\nSubject: =?UTF-8?B?"));
    assert_non_null(strstr(m, "\r\nFrom: =?UTF-8?B?"));
    char *subj = strstr(m, "\r\nSubject: ");
    char back[256];
    char line[512];
    char *eol = strstr(subj + 2, "\r\nMIME");
    snprintf(line, sizeof line, "%.*s", (int)(eol - subj), subj);
    decode_words(line, back, sizeof back);
    assert_string_equal(back, "Welcome, Ada ✓");
    relay_wiped_free(m, len);
}

static void test_multipart(void **state) {
    (void)state;
    relay_record r = rec();
    r.html = "<p>Hi <b>Ada</b></p>";
    size_t len;
    char *m = build(&r, &len);
    assert_non_null(strstr(m, "Content-Type: multipart/alternative; boundary=\"=_sp_seed\"\r\n\r\n--=_sp_seed\r\n"
                              "Content-Type: text/plain; charset=UTF-8\r\n"));
    assert_non_null(strstr(m, "\r\n--=_sp_seed\r\nContent-Type: text/html; charset=UTF-8\r\n"));
    assert_non_null(strstr(m, "<p>Hi <b>Ada</b></p>\r\n--=_sp_seed--\r\n"));
    char *text_part = strstr(m, "text/plain"), *html_part = strstr(m, "text/html");
    assert_true(text_part < html_part); /* the preferred alternative last */
    relay_wiped_free(m, len);
    r.text = "";
    m = build(&r, &len);
    assert_non_null(strstr(m, "Content-Type: text/html; charset=UTF-8\r\n"));
    assert_null(strstr(m, "multipart"));
    relay_wiped_free(m, len);
    /* without a seed the boundary is random */
    r.text = "x";
    char *a = NULL, *b = NULL;
    size_t la, lb;
    assert_ok(relay_smtp_build(&r, 0, NULL, &a, &la));
    assert_ok(relay_smtp_build(&r, 0, NULL, &b, &lb));
    assert_non_null(strstr(a, "boundary=\"=_sp_"));
    assert_string_not_equal(strstr(a, "boundary="), strstr(b, "boundary="));
    relay_wiped_free(a, la);
    relay_wiped_free(b, lb);
}

static void test_quoted_printable(void **state) {
    (void)state;
    relay_record r = rec();
    char text[600];
    snprintf(text, sizeof text, "a=b\n.starts with a dot\ntrailing blank \nüber\r\n%0300d end", 7);
    r.text = text;
    size_t len;
    char *m = build(&r, &len);
    char *body = strstr(m, "\r\n\r\n") + 4;
    assert_non_null(strstr(body, "a=3Db\r\n"));
    assert_non_null(strstr(body, "\r\n=2Estarts with a dot\r\n"));
    assert_non_null(strstr(body, "\r\ntrailing blank=20\r\n"));
    assert_non_null(strstr(body, "\r\n=C3=BCber\r\n"));
    /* no bare LF, no line over 76, and no line that starts with '.' */
    for (char *p = body; *p; p++) {
        if (*p == '\n') assert_int_equal(p[-1], '\r');
    }
    char *line = body;
    while (*line) {
        char *eol = strstr(line, "\r\n");
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        assert_true(n <= 76);
        assert_false(n > 0 && line[0] == '.');
        line += n + (eol ? 2 : 0);
    }
    relay_wiped_free(m, len);
}

static void test_header_injection_impossible(void **state) {
    (void)state;
    /* the parser refuses CR/LF in header values; the builder encodes anything it is given */
    relay_record r = rec();
    r.subject = "a\r\nBcc: evil@example.org";
    size_t len;
    char *m = build(&r, &len);
    assert_null(strstr(m, "\r\nBcc:"));
    relay_wiped_free(m, len);
}

static void test_unreachable(void **state) {
    (void)state;
    relay_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.smtp_url, sizeof cfg.smtp_url, "smtp://127.0.0.1:1");
    cfg.smtp_timeout_s = 2;
    relay_record r = rec();
    int code = -1;
    assert_int_equal(relay_smtp_send(&cfg, &r, &code), RELAY_OUT_UNAVAILABLE);
    assert_int_equal(code, 0);
    assert_false(relay_smtp_reachable(&cfg));
    assert_string_equal(relay_outcome_name(RELAY_OUT_HARD_BOUNCE), "hard_bounce");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),   cmocka_unit_test(test_rfc2047),
        cmocka_unit_test(test_encoded_headers_in_message),
        cmocka_unit_test(test_multipart), cmocka_unit_test(test_quoted_printable),
        cmocka_unit_test(test_header_injection_impossible),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
