/*
 * Callback bodies (src/callbacks/parse.c): the three formats of
 * docs/PROTOCOL.md §10.4 read into events.
 *
 * What is pinned down:
 *  - every event name of every format, and what each event carries (message
 *    id, time, code, text and sender only where the contract gives them);
 *  - times as seconds, milliseconds and strings, and every limit at its edge
 *    and one past it;
 *  - the refusals, table-driven: wrong types, duplicate keys, bad message
 *    ids, unknown event names, events under the wrong e-mail list, form
 *    encoding errors; and that a body bad anywhere (even in its last item)
 *    hands out nothing;
 *  - fn's error stops the calls and is returned;
 *  - the opt-out keywords, with near misses and non-ASCII text;
 *  - format detection;
 *  - every allocation failure is a clean SP_ERR_NO_MEMORY with nothing
 *    handed out.
 */
#include "sp_test_util.h"

#include "core/sp_core.h"
#include "sealpost/callback.h"

#define T_MAX 1100

typedef struct {
    size_t calls;
    size_t fail_at;   /* 1-based call that returns fail_rc; 0 never */
    sp_error fail_rc;
    sp_callback_event ev[8];       /* the first events, copied */
    char text[8][SP_CALLBACK_MAX_TEXT + 1];
    char from[8][SP_CALLBACK_MAX_FROM + 1];
} collector;

static sp_error collect(void *arg, const sp_callback_event *e) {
    collector *c = arg;
    c->calls++;
    /* text and from: NUL-free, within limits, present exactly where the
     * contract says */
    bool has_text = e->kind == SP_CALLBACK_REPLIED || e->kind == SP_CALLBACK_INBOUND;
    assert_true(has_text ? e->text != NULL : (e->text == NULL && e->text_len == 0));
    assert_true(e->kind == SP_CALLBACK_INBOUND ? e->from != NULL : (e->from == NULL && e->from_len == 0));
    assert_true(e->text_len <= SP_CALLBACK_MAX_TEXT && e->from_len <= SP_CALLBACK_MAX_FROM);
    assert_true(has_text || !e->opt_out);
    if (e->text) assert_true(e->opt_out == sp_callback_is_opt_out(e->text, e->text_len));
    assert_true(strlen(e->message_id) <= SP_CALLBACK_MAX_MESSAGE_ID);
    if (c->calls <= 8) {
        size_t i = c->calls - 1;
        c->ev[i] = *e;
        if (e->text) memcpy(c->text[i], e->text, e->text_len);
        c->text[i][e->text_len] = 0;
        if (e->from) memcpy(c->from[i], e->from, e->from_len);
        c->from[i][e->from_len] = 0;
        c->ev[i].text = e->text ? c->text[i] : NULL;
        c->ev[i].from = e->from ? c->from[i] : NULL;
    }
    if (c->fail_at != 0 && c->calls == c->fail_at) return c->fail_rc;
    return SP_OK;
}

static sp_error parse_n(const char *body, size_t len, sp_callback_format f, collector *c, size_t *n) {
    memset(c, 0, sizeof *c);
    /* an exactly-sized copy, so ASan sees a read past the end */
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, body, len);
    sp_error rc = sp_callback_parse(copy, len, f, collect, c, n);
    free(copy);
    return rc;
}

static sp_error parse(const char *body, sp_callback_format f, collector *c) {
    size_t n = 12345;
    sp_error rc = parse_n(body, strlen(body), f, c, &n);
    if (rc == SP_OK) {
        assert_int_equal(n, c->calls);
    } else if (rc == SP_ERR_BAD_CALLBACK || rc == SP_ERR_TOO_LARGE) {
        /* refused bodies hand out nothing */
        assert_int_equal(c->calls, 0);
        assert_int_equal(n, 0);
    }
    return rc;
}

#define SMS SP_CALLBACK_FORMAT_SMS
#define EMAIL SP_CALLBACK_FORMAT_EMAIL_V2
#define KANNEL SP_CALLBACK_FORMAT_KANNEL
#define AUTO SP_CALLBACK_FORMAT_AUTO

/* ---- SMS ---- */

static void test_sms_events(void **state) {
    (void)state;
    collector c;
    const char *body = "[{\"event\":\"delivered\",\"data\":[{\"ts\":1714000100,\"meta\":\"msg_a-1.B:2\"},"
                       "{\"meta\":\"m2\",\"ts\":\"1714000101\"}]},"
                       "{\"event\":\"failed\",\"data\":[{\"ts\":1714000101123,\"meta\":\"m3\",\"code\":903,"
                       "\"description\":\"Number blocked\"}]},"
                       "{\"event\":\"clicked\",\"data\":[{\"meta\":\"m4\",\"url\":\"https://example.com/x\","
                       "\"extra\":{\"a\":[1,2]}}]},"
                       "{\"event\":\"replied\",\"data\":[{\"meta\":\"m5\",\"incomingText\":\"Stop.\","
                       "\"from\":\"+15551234567\",\"code\":\"0\"},"
                       "{\"meta\":\"m6\",\"incomingText\":\"caf\\u00e9 ok\"}]},"
                       "{\"event\":\"delivered\",\"data\":[]}]";
    assert_rc(parse(body, SMS, &c), SP_OK);
    assert_int_equal(c.calls, 6);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_DELIVERED);
    assert_string_equal(c.ev[0].message_id, "msg_a-1.B:2");
    assert_int_equal(c.ev[0].ts_ms, 1714000100000LL);
    assert_int_equal(c.ev[0].code, 0);
    assert_int_equal(c.ev[1].ts_ms, 1714000101000LL);
    assert_int_equal(c.ev[2].kind, SP_CALLBACK_FAILED);
    assert_int_equal(c.ev[2].ts_ms, 1714000101123LL);
    assert_int_equal(c.ev[2].code, 903);
    assert_int_equal(c.ev[3].kind, SP_CALLBACK_CLICKED);
    assert_int_equal(c.ev[3].ts_ms, 0);
    assert_int_equal(c.ev[4].kind, SP_CALLBACK_REPLIED);
    assert_string_equal(c.ev[4].text, "Stop.");
    assert_int_equal(c.ev[4].text_len, 5);
    assert_true(c.ev[4].opt_out);
    assert_null(c.ev[4].from); /* a reply's sender is not handed out */
    assert_string_equal(c.ev[5].text, "caf\xc3\xa9 ok");
    assert_false(c.ev[5].opt_out);
    /* AUTO reads it the same */
    assert_rc(parse(body, AUTO, &c), SP_OK);
    assert_int_equal(c.calls, 6);
    /* an empty list is valid */
    assert_rc(parse(" [ ] \n", SMS, &c), SP_OK);
    assert_int_equal(c.calls, 0);
}

typedef struct {
    const char *body;
    sp_error want;
} bad_case;

static void run_cases(const bad_case *cases, size_t n, sp_callback_format f) {
    for (size_t i = 0; i < n; i++) {
        collector c;
        sp_error rc = parse(cases[i].body, f, &c);
        if (rc != cases[i].want)
            fail_msg("case %zu (%s): got %s, want %s", i, cases[i].body, sp_error_name(rc),
                     sp_error_name(cases[i].want));
    }
}

#define OKC(b) {b, SP_OK}
#define BAD(b) {b, SP_ERR_BAD_CALLBACK}
#define SMS1(item) "[{\"event\":\"delivered\",\"data\":[" item "]}]"
#define REP1(item) "[{\"event\":\"replied\",\"data\":[" item "]}]"

static void test_sms_refusals(void **state) {
    (void)state;
    static const bad_case cases[] = {
        BAD("[1]"),
        BAD("{}"),
        BAD("[{\"data\":[]}]"),
        BAD("[{\"event\":\"delivered\"}]"),
        BAD("[{\"event\":\"delivered\",\"data\":{}}]"),
        BAD("[{\"event\":\"Delivered\",\"data\":[]}]"),
        BAD("[{\"event\":\"opened\",\"data\":[]}]"),
        BAD("[{\"event\":\"hard_bounce\",\"data\":[]}]"),
        BAD("[{\"event\":\"\",\"data\":[]}]"),
        BAD("[{\"event\":1,\"data\":[]}]"),
        BAD("[{\"event\":\"delivered\",\"event\":\"failed\",\"data\":[]}]"),
        BAD(SMS1("1")),
        BAD(SMS1("{}")),
        BAD(SMS1("{\"meta\":1}")),
        BAD(SMS1("{\"meta\":null}")),
        BAD(SMS1("{\"meta\":\"\"}")),
        BAD(SMS1("{\"meta\":\"a b\"}")),
        BAD(SMS1("{\"meta\":\"a/b\"}")),
        BAD(SMS1("{\"meta\":\"caf\\u00e9\"}")),
        OKC(SMS1("{\"meta\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}")),
        BAD(SMS1("{\"meta\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"meta\":\"b\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":-1}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":1.5}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":true}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":null}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\"\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\"-1\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\"12a\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\" 12\"}")),
        OKC(SMS1("{\"meta\":\"a\",\"ts\":0}")),
        OKC(SMS1("{\"meta\":\"a\",\"ts\":\"0\"}")),
        /* 2^41 ms = 2199023255552: seconds up to 2199023255, ms below 2^41 */
        OKC(SMS1("{\"meta\":\"a\",\"ts\":2199023255}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":2199023256}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":100000000000}")), /* 10^11 is still seconds */
        OKC(SMS1("{\"meta\":\"a\",\"ts\":100000000001}")),
        OKC(SMS1("{\"meta\":\"a\",\"ts\":2199023255551}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":2199023255552}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\"2199023255552\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":99999999999999999999}")),
        BAD(SMS1("{\"meta\":\"a\",\"ts\":\"99999999999999999999\"}")),
        OKC(SMS1("{\"meta\":\"a\",\"code\":99999}")),
        OKC(SMS1("{\"meta\":\"a\",\"code\":\"99999\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"code\":100000}")),
        BAD(SMS1("{\"meta\":\"a\",\"code\":\"100000\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"code\":-1}")),
        BAD(SMS1("{\"meta\":\"a\",\"code\":9.0}")),
        BAD(SMS1("{\"meta\":\"a\",\"code\":[]}")),
        BAD(SMS1("{\"meta\":\"a\",\"description\":5}")),
        BAD(SMS1("{\"meta\":\"a\",\"url\":{}}")),
        BAD(SMS1("{\"meta\":\"a\",\"incomingText\":5}")),
        BAD(SMS1("{\"meta\":\"a\",\"from\":5}")),
        BAD(SMS1("{\"meta\":\"a\",\"from\":\"\\n\"}")),
        OKC(SMS1("{\"meta\":\"a\",\"from\":\"+1 555 123 4567\"}")),
        OKC(SMS1("{\"meta\":\"a\",\"unknown\":[{\"x\":null}],\"incomingText\":\"hi\"}")),
        BAD(SMS1("{\"meta\":\"a\",\"x\":\"\\u0000\"}")),
        BAD(REP1("{\"meta\":\"a\"}")),
        OKC(REP1("{\"meta\":\"a\",\"incomingText\":\"\"}")),
        BAD(REP1("{\"meta\":\"a\",\"incomingText\":null}")),
        /* syntax, encoding, trailing garbage */
        BAD("["),
        BAD("[]]"),
        BAD("[] x"),
        BAD("[{\"event\":\"delivered\",\"data\":[],}]"),
        BAD("[{\"event\":\"deliv\xff\",\"data\":[]}]"),
        BAD("[{\"event\":\"delivered\",\"data\":[]}\x00]"),
        /* a bad last item voids the whole body */
        BAD("[{\"event\":\"delivered\",\"data\":[{\"meta\":\"a\"},{\"meta\":\"b\"}]},"
            "{\"event\":\"failed\",\"data\":[{\"meta\":\"c\",\"code\":100000}]}]"),
        BAD("[{\"event\":\"delivered\",\"data\":[{\"meta\":\"a\"}]},{\"event\":\"bounced\",\"data\":[]}]"),
    };
    run_cases(cases, SP_ARRAY_LEN(cases), SMS);
}

/* Builds a JSON string member "key":"<n bytes of ch>". */
static size_t put_member(char *out, const char *key, size_t n, char ch) {
    size_t k = (size_t)snprintf(out, 64, "\"%s\":\"", key);
    memset(out + k, ch, n);
    out[k + n] = '"';
    out[k + n + 1] = 0;
    return k + n + 1;
}

static void test_sms_text_limits(void **state) {
    (void)state;
    static char body[16384];
    static const struct {
        const char *key;
        size_t max;
        const char *event;
    } fields[] = {
        {"incomingText", SP_CALLBACK_MAX_TEXT, "replied"},
        {"description", SP_CALLBACK_MAX_DESCRIPTION, "failed"},
        {"url", SP_CALLBACK_MAX_URL, "clicked"},
        {"from", SP_CALLBACK_MAX_FROM, "replied"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(fields); i++) {
        for (size_t extra = 0; extra < 2; extra++) {
            size_t n = (size_t)snprintf(body, sizeof body, "[{\"event\":\"%s\",\"data\":[{\"meta\":\"m\","
                                        "\"incomingText\":\"x\",", fields[i].event);
            if (strcmp(fields[i].key, "incomingText") == 0) n -= strlen("\"incomingText\":\"x\",");
            n += put_member(body + n, fields[i].key, fields[i].max + extra, 'y');
            snprintf(body + n, sizeof body - n, "}]}]");
            collector c;
            assert_rc(parse(body, SMS, &c), extra ? SP_ERR_BAD_CALLBACK : SP_OK);
            if (!extra && strcmp(fields[i].key, "incomingText") == 0) assert_int_equal(c.ev[0].text_len, fields[i].max);
        }
    }
    /* the text limit is in bytes: 800 two-byte characters fit, 801 do not */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = (size_t)snprintf(body, sizeof body, "[{\"event\":\"replied\",\"data\":[{\"meta\":\"m\","
                                                       "\"incomingText\":\"");
        for (size_t k = 0; k < SP_CALLBACK_MAX_TEXT / 2 + extra; k++) {
            body[n++] = '\xc3';
            body[n++] = '\xa9';
        }
        snprintf(body + n, sizeof body - n, "\"}]}]");
        collector c;
        assert_rc(parse(body, SMS, &c), extra ? SP_ERR_BAD_CALLBACK : SP_OK);
    }
}

/* n events in groups of up to 7, as SMS JSON. */
static char *sms_body(size_t n, size_t *len) {
    size_t cap = 64 + n * 40;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t o = 0;
    b[o++] = '[';
    for (size_t i = 0; i < n; i += 7) {
        o += (size_t)snprintf(b + o, cap - o, "%s{\"event\":\"delivered\",\"data\":[", i ? "," : "");
        for (size_t k = i; k < n && k < i + 7; k++)
            o += (size_t)snprintf(b + o, cap - o, "%s{\"meta\":\"m%zu\"}", k > i ? "," : "", k);
        o += (size_t)snprintf(b + o, cap - o, "]}");
    }
    b[o++] = ']';
    b[o] = 0;
    *len = o;
    return b;
}

static void test_event_count_limit(void **state) {
    (void)state;
    size_t len, n = 0;
    collector c;
    char *b = sms_body(SP_CALLBACK_MAX_EVENTS, &len);
    assert_rc(parse_n(b, len, SMS, &c, &n), SP_OK);
    assert_int_equal(n, SP_CALLBACK_MAX_EVENTS);
    assert_int_equal(c.calls, SP_CALLBACK_MAX_EVENTS);
    assert_string_equal(c.ev[7].message_id, "m7");
    free(b);
    b = sms_body(SP_CALLBACK_MAX_EVENTS + 1, &len);
    assert_rc(parse_n(b, len, SMS, &c, &n), SP_ERR_TOO_LARGE);
    assert_int_equal(c.calls, 0);
    free(b);

    /* e-mail: the limit spans both lists */
    size_t cap = 64 + 1001 * 50;
    b = malloc(cap);
    assert_non_null(b);
    for (size_t total = SP_CALLBACK_MAX_EVENTS; total <= SP_CALLBACK_MAX_EVENTS + 1; total++) {
        size_t o = (size_t)snprintf(b, cap, "{\"version\":\"v2\",\"events\":{\"success\":[");
        for (size_t i = 0; i < 600; i++)
            o += (size_t)snprintf(b + o, cap - o, "%s{\"event\":\"opened\",\"meta\":\"s%zu\"}", i ? "," : "", i);
        o += (size_t)snprintf(b + o, cap - o, "],\"failed\":[");
        for (size_t i = 600; i < total; i++)
            o += (size_t)snprintf(b + o, cap - o, "%s{\"event\":\"spam\",\"meta\":\"f%zu\"}", i > 600 ? "," : "", i);
        o += (size_t)snprintf(b + o, cap - o, "]}}");
        assert_rc(parse_n(b, o, EMAIL, &c, &n), total > SP_CALLBACK_MAX_EVENTS ? SP_ERR_TOO_LARGE : SP_OK);
        assert_int_equal(c.calls, total > SP_CALLBACK_MAX_EVENTS ? 0 : total);
    }
    free(b);
}

static void test_body_limits(void **state) {
    (void)state;
    collector c;
    size_t n;
    /* size: exactly the limit is read (and here refused for what it is),
     * one byte more is too large whatever it holds */
    char *b = malloc(SP_CALLBACK_MAX_BODY + 1);
    assert_non_null(b);
    memset(b, ' ', SP_CALLBACK_MAX_BODY + 1);
    b[0] = '[';
    b[SP_CALLBACK_MAX_BODY - 1] = ']';
    assert_rc(parse_n(b, SP_CALLBACK_MAX_BODY, SMS, &c, &n), SP_OK);
    assert_rc(parse_n(b, SP_CALLBACK_MAX_BODY + 1, SMS, &c, &n), SP_ERR_TOO_LARGE);
    /* depth: 16 is fine inside an ignored member, 17 is not */
    for (size_t depth = SP_CALLBACK_MAX_DEPTH; depth <= SP_CALLBACK_MAX_DEPTH + 1; depth++) {
        size_t o = (size_t)snprintf(b, 256, "[{\"event\":\"delivered\",\"data\":[{\"meta\":\"a\",\"x\":");
        for (size_t i = 4; i < depth; i++) b[o++] = '[';
        for (size_t i = 4; i < depth; i++) b[o++] = ']';
        o += (size_t)snprintf(b + o, 64, "}]}]");
        assert_rc(parse_n(b, o, SMS, &c, &n), depth > SP_CALLBACK_MAX_DEPTH ? SP_ERR_BAD_CALLBACK : SP_OK);
    }
    /* brackets inside strings do not count */
    const char *s = SMS1("{\"meta\":\"a\",\"x\":\"[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}");
    assert_rc(parse(s, SMS, &c), SP_OK);
    /* values: an ignored array of SP_CALLBACK_MAX_JSON_VALUES zeros is too
     * many (with the brackets around it) */
    size_t o = (size_t)snprintf(b, 256, "[{\"event\":\"delivered\",\"data\":[{\"meta\":\"a\",\"x\":[0");
    for (size_t i = 1; i < SP_CALLBACK_MAX_JSON_VALUES; i++) {
        b[o++] = ',';
        b[o++] = '0';
    }
    o += (size_t)snprintf(b + o, 64, "]}]}]");
    assert_rc(parse_n(b, o, SMS, &c, &n), SP_ERR_TOO_LARGE);
    free(b);
}

/* ---- e-mail ---- */

static void test_email_events(void **state) {
    (void)state;
    collector c;
    const char *body =
        "{\"version\":\"v2\",\"other\":1,\"events\":{"
        "\"success\":[{\"event\":\"delivered\",\"ts\":1714000100,\"meta\":\"m1\"},"
        "{\"event\":\"opened\",\"ts\":\"1714000300\",\"meta\":\"m2\"},"
        "{\"event\":\"open\",\"meta\":\"m3\"},{\"event\":\"viewed\",\"meta\":\"m4\"},"
        "{\"event\":\"clicked\",\"meta\":\"m5\",\"url\":\"https://example.com/x\"}],"
        "\"failed\":[{\"event\":\"hard_bounce\",\"ts\":1714000100,\"meta\":\"m6\",\"code\":550,"
        "\"description\":\"no such user\"},"
        "{\"event\":\"soft_bounce\",\"meta\":\"m7\",\"code\":\"452\"},"
        "{\"event\":\"unsubscribed\",\"meta\":\"m8\"}]}}";
    assert_rc(parse(body, EMAIL, &c), SP_OK);
    assert_int_equal(c.calls, 8);
    static const sp_callback_event_kind want[] = {SP_CALLBACK_DELIVERED, SP_CALLBACK_OPENED, SP_CALLBACK_OPENED,
                                                  SP_CALLBACK_OPENED, SP_CALLBACK_CLICKED, SP_CALLBACK_HARD_BOUNCE,
                                                  SP_CALLBACK_SOFT_BOUNCE, SP_CALLBACK_UNSUBSCRIBED};
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(c.ev[i].kind, want[i]);
        char id[8];
        snprintf(id, sizeof id, "m%zu", i + 1);
        assert_string_equal(c.ev[i].message_id, id);
        assert_null(c.ev[i].text);
    }
    assert_int_equal(c.ev[0].ts_ms, 1714000100000LL);
    assert_int_equal(c.ev[1].ts_ms, 1714000300000LL);
    assert_int_equal(c.ev[5].code, 550);
    assert_int_equal(c.ev[6].code, 452);
    assert_rc(parse("{\"version\":\"v2\",\"events\":{\"failed\":[{\"event\":\"spam\",\"meta\":\"x\"}]}}", AUTO, &c),
              SP_OK);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_SPAM);
    assert_rc(parse("\r\n\t {\"version\":\"v2\",\"events\":{}}", AUTO, &c), SP_OK);
    assert_int_equal(c.calls, 0);
    assert_rc(parse("{\"version\":\"v2\",\"events\":{\"success\":[],\"failed\":[]}}", EMAIL, &c), SP_OK);
}

#define EM(list, item) "{\"version\":\"v2\",\"events\":{\"" list "\":[" item "]}}"

static void test_email_refusals(void **state) {
    (void)state;
    static const bad_case cases[] = {
        BAD("[]"),
        BAD("{}"),
        BAD("{\"events\":{}}"),
        BAD("{\"version\":\"v1\",\"events\":{}}"),
        BAD("{\"version\":\"V2\",\"events\":{}}"),
        BAD("{\"version\":2,\"events\":{}}"),
        BAD("{\"version\":\"v2\"}"),
        BAD("{\"version\":\"v2\",\"events\":[]}"),
        BAD("{\"version\":\"v2\",\"events\":{\"bounced\":[]}}"),
        BAD("{\"version\":\"v2\",\"events\":{\"success\":[],\"other\":[]}}"),
        BAD("{\"version\":\"v2\",\"events\":{\"success\":{}}}"),
        BAD("{\"version\":\"v2\",\"events\":{\"success\":null}}"),
        BAD("{\"version\":\"v2\",\"version\":\"v2\",\"events\":{}}"),
        BAD("{\"version\":\"v2\",\"events\":{\"success\":[],\"success\":[]}}"),
        /* misplaced and unknown names */
        BAD(EM("success", "{\"event\":\"hard_bounce\",\"meta\":\"a\"}")),
        BAD(EM("success", "{\"event\":\"spam\",\"meta\":\"a\"}")),
        BAD(EM("failed", "{\"event\":\"delivered\",\"meta\":\"a\"}")),
        BAD(EM("failed", "{\"event\":\"opened\",\"meta\":\"a\"}")),
        BAD(EM("failed", "{\"event\":\"bounce\",\"meta\":\"a\"}")),
        BAD(EM("success", "{\"event\":\"failed\",\"meta\":\"a\"}")),
        BAD(EM("success", "{\"event\":\"replied\",\"meta\":\"a\"}")),
        BAD(EM("success", "{\"event\":\"OPENED\",\"meta\":\"a\"}")),
        BAD(EM("success", "{\"meta\":\"a\"}")),
        BAD(EM("success", "{\"event\":null,\"meta\":\"a\"}")),
        BAD(EM("success", "\"delivered\"")),
        BAD(EM("success", "{\"event\":\"opened\"}")),
        BAD(EM("success", "{\"event\":\"opened\",\"meta\":\"a b\"}")),
        BAD(EM("success", "{\"event\":\"opened\",\"meta\":\"a\",\"ts\":\"x\"}")),
        BAD(EM("failed", "{\"event\":\"soft_bounce\",\"meta\":\"a\",\"code\":100000}")),
        BAD(EM("failed", "{\"event\":\"soft_bounce\",\"meta\":\"a\",\"code\":\"1e3\"}")),
        BAD(EM("failed", "{\"event\":\"soft_bounce\",\"meta\":\"a\",\"description\":[]}")),
        BAD(EM("success", "{\"event\":\"opened\",\"meta\":\"a\",\"event\":\"opened\"}")),
        OKC(EM("success", "{\"event\":\"opened\",\"meta\":\"a\",\"incomingText\":5,\"x\":{}}")),
        /* good items, then a bad one at the very end */
        BAD("{\"version\":\"v2\",\"events\":{\"success\":[{\"event\":\"opened\",\"meta\":\"a\"}],"
            "\"failed\":[{\"event\":\"spam\",\"meta\":\"b\"},{\"event\":\"spam\",\"meta\":\"\"}]}}"),
        BAD("{\"version\":\"v2\",\"events\":{}} {}"),
        BAD("{\"version\":\"v2\",\"events\":{}"),
    };
    run_cases(cases, SP_ARRAY_LEN(cases), EMAIL);
}

/* ---- Kannel ---- */

static void test_kannel_events(void **state) {
    (void)state;
    collector c;
    static const struct {
        const char *type;
        sp_callback_event_kind kind;
    } types[] = {
        {"1", SP_CALLBACK_DELIVERED}, {"2", SP_CALLBACK_FAILED},   {"4", SP_CALLBACK_BUFFERED},
        {"8", SP_CALLBACK_BUFFERED},  {"16", SP_CALLBACK_FAILED},  {"9", SP_CALLBACK_DELIVERED},
        {"31", SP_CALLBACK_DELIVERED}, {"18", SP_CALLBACK_FAILED}, {"12", SP_CALLBACK_BUFFERED},
        {"24", SP_CALLBACK_FAILED},   {"6", SP_CALLBACK_FAILED},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(types); i++) {
        char body[128];
        snprintf(body, sizeof body, "type=%s&smsc=smsc0&meta=msg_1&ts=1714000100", types[i].type);
        assert_rc(parse(body, KANNEL, &c), SP_OK);
        assert_int_equal(c.calls, 1);
        assert_int_equal(c.ev[0].kind, types[i].kind);
        assert_string_equal(c.ev[0].message_id, "msg_1");
        assert_int_equal(c.ev[0].ts_ms, 1714000100000LL);
        assert_int_equal(c.ev[0].code, 0);
    }
    assert_rc(parse("type=16&meta=m&code=42&reply=NACK%2F0x0000000b%2FInvalid+Destination&x=", AUTO, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_FAILED);
    assert_int_equal(c.ev[0].code, 42);
    assert_int_equal(c.ev[0].ts_ms, 0);

    /* inbound and reply */
    assert_rc(parse("from=%2B15551234567&text=STOP&smsc=smsc0&ts=1714000200123\n", AUTO, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_INBOUND);
    assert_string_equal(c.ev[0].from, "+15551234567");
    assert_int_equal(c.ev[0].from_len, 12);
    assert_string_equal(c.ev[0].text, "STOP");
    assert_true(c.ev[0].opt_out);
    assert_string_equal(c.ev[0].message_id, "");
    assert_int_equal(c.ev[0].ts_ms, 1714000200123LL);
    assert_rc(parse("text=Yes+please%21+caf%C3%A9&from=555&meta=msg_9", KANNEL, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_REPLIED);
    assert_string_equal(c.ev[0].text, "Yes please! caf\xc3\xa9");
    assert_false(c.ev[0].opt_out);
    assert_null(c.ev[0].from);
    assert_string_equal(c.ev[0].message_id, "msg_9");
    /* keys are decoded; empty pairs are skipped; type wins over from/text */
    assert_rc(parse("&&%74ype=1&&meta=a&from=1&text=stop&", KANNEL, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_DELIVERED);
    assert_null(c.ev[0].text);
    assert_false(c.ev[0].opt_out);
    assert_rc(parse("from=1&text=", KANNEL, &c), SP_OK);
    assert_int_equal(c.ev[0].text_len, 0);
    assert_rc(parse("from=1&text", KANNEL, &c), SP_OK); /* a key alone is an empty value */
}

static void test_kannel_refusals(void **state) {
    (void)state;
    static const bad_case cases[] = {
        BAD("x"),
        BAD("&&&"),
        BAD("meta=a"),
        BAD("type=1"),
        BAD("type=1&meta="),
        BAD("type=0&meta=a"),
        BAD("type=32&meta=a"),
        BAD("type=01&meta=a"),
        BAD("type=&meta=a"),
        BAD("type=-1&meta=a"),
        BAD("type=1+&meta=a"),
        BAD("type=1&meta=a&type=1"),
        BAD("type=1&meta=a&me%74a=b"),
        BAD("type=1&meta=a&x=1&x=2"),
        BAD("type=1&meta=a%20b"),
        BAD("type=1&meta=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        OKC("type=1&meta=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        BAD("type=1&meta=a&ts=x"),
        BAD("type=1&meta=a&ts=2199023255552"),
        OKC("type=1&meta=a&ts=2199023255551"),
        OKC("type=1&meta=a&code=99999"),
        BAD("type=1&meta=a&code=100000"),
        BAD("type=1&meta=a&smsc=a%0Ab"),
        OKC("type=1&meta=a&smsc=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        BAD("type=1&meta=a&smsc=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        BAD("type=1&meta=a&reply=%FF"),
        /* encoding */
        BAD("type=1&meta=a&x=%"),
        BAD("type=1&meta=a&x=%4"),
        BAD("type=1&meta=a&x=%4g"),
        BAD("type=1&meta=a&x=a b"),
        BAD("type=1&meta=a&x=\xc3\xa9"),
        BAD("type=1&meta=a&x=\tb"),
        BAD("type=1&meta=a&=x"),
        BAD("type=1&meta=a&%00=x"),
        BAD("type=1&meta=a&a+b=x"),
        OKC("type=1&meta=a&x=%00"),
        /* inbound */
        BAD("from=1"),
        BAD("text=hi"),
        BAD("from=&text=hi"),
        BAD("from=%0A&text=hi"),
        BAD("from=1&text=%00"),
        BAD("from=1&text=%C3"),
        BAD("from=1&text=%C0%80"),
        BAD("from=1&text=%ED%A0%80"),
        BAD("from=1&text=%F4%90%80%80"),
        OKC("from=1&text=%F0%9F%98%80"),
        BAD("from=1&text=hi&meta=a+b"),
        BAD("from=1&from=2&text=hi"),
        OKC("from=12345678901234567890123456789012&text=hi"),
        BAD("from=123456789012345678901234567890123&text=hi"),
    };
    run_cases(cases, SP_ARRAY_LEN(cases), KANNEL);
}

static void test_kannel_limits(void **state) {
    (void)state;
    static char body[20000];
    collector c;
    /* text: 1600 decoded bytes fit (even as 4800 encoded ones), 1601 do not */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t o = (size_t)snprintf(body, sizeof body, "from=1&text=");
        for (size_t i = 0; i < SP_CALLBACK_MAX_TEXT + extra; i++) o += (size_t)snprintf(body + o, 4, "%%41");
        body[o] = 0;
        assert_rc(parse(body, KANNEL, &c), extra ? SP_ERR_BAD_CALLBACK : SP_OK);
        if (!extra) assert_int_equal(c.ev[0].text_len, SP_CALLBACK_MAX_TEXT);
    }
    /* reply 256, unknown values 4096, keys 32 */
    static const struct {
        const char *prefix;
        size_t max;
    } lim[] = {{"type=1&meta=a&reply=", SP_CALLBACK_MAX_REPLY},
               {"type=1&meta=a&other=", SP_CALLBACK_MAX_FORM_VALUE},
               {"type=1&meta=a&", SP_CALLBACK_MAX_FORM_KEY}};
    for (size_t l = 0; l < SP_ARRAY_LEN(lim); l++) {
        for (size_t extra = 0; extra < 2; extra++) {
            size_t o = (size_t)snprintf(body, sizeof body, "%s", lim[l].prefix);
            memset(body + o, 'k', lim[l].max + extra);
            o += lim[l].max + extra;
            body[o] = 0;
            assert_rc(parse(body, KANNEL, &c), extra ? SP_ERR_BAD_CALLBACK : SP_OK);
        }
    }
    /* fields: 32 fit, 33 do not */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t o = (size_t)snprintf(body, sizeof body, "type=1&meta=a");
        for (size_t i = 2; i < SP_CALLBACK_MAX_FORM_FIELDS + extra; i++)
            o += (size_t)snprintf(body + o, sizeof body - o, "&k%zu=v", i);
        assert_rc(parse(body, KANNEL, &c), extra ? SP_ERR_BAD_CALLBACK : SP_OK);
    }
}

/* ---- shared behaviour ---- */

static void test_arguments_and_detection(void **state) {
    (void)state;
    collector c;
    size_t n = 7;
    const uint8_t b[] = "[]";
    assert_rc(sp_callback_parse(b, 2, SMS, NULL, NULL, &n), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(n, 0);
    assert_rc(sp_callback_parse(NULL, 2, SMS, collect, &c, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_callback_parse(b, 2, (sp_callback_format)4, collect, &c, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_callback_parse(b, 2, (sp_callback_format)-1, collect, &c, NULL), SP_ERR_INVALID_ARGUMENT);
    memset(&c, 0, sizeof c);
    assert_rc(sp_callback_parse(NULL, 0, AUTO, collect, &c, NULL), SP_ERR_BAD_CALLBACK);
    assert_rc(sp_callback_parse(b, 0, SMS, collect, &c, NULL), SP_ERR_BAD_CALLBACK);
    assert_rc(sp_callback_parse(b, 2, SMS, collect, &c, NULL), SP_OK); /* n_events may be NULL */
    for (int f = AUTO; f <= KANNEL; f++) {
        assert_rc(parse("", (sp_callback_format)f, &c), SP_ERR_BAD_CALLBACK);
        assert_rc(parse(" \r\n\t", (sp_callback_format)f, &c), SP_ERR_BAD_CALLBACK);
    }
    /* a NUL byte anywhere is refused */
    assert_rc(parse_n("[]\0", 3, AUTO, &c, &n), SP_ERR_BAD_CALLBACK);
    assert_rc(parse_n("from=1&text=a\0", 14, AUTO, &c, &n), SP_ERR_BAD_CALLBACK);
    /* detection: '[' SMS, '{' e-mail, else form; a forced format is kept */
    assert_rc(parse("  [{\"event\":\"replied\",\"data\":[{\"meta\":\"a\",\"incomingText\":\"x\"}]}]", AUTO, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_REPLIED);
    assert_rc(parse("{\"version\":\"v2\",\"events\":{}}", SMS, &c), SP_ERR_BAD_CALLBACK);
    assert_rc(parse("[]", EMAIL, &c), SP_ERR_BAD_CALLBACK);
    assert_rc(parse("[]", KANNEL, &c), SP_ERR_BAD_CALLBACK);
    assert_rc(parse("type=1&meta=a", SMS, &c), SP_ERR_BAD_CALLBACK);
    assert_rc(parse("\ntype=1&meta=a", AUTO, &c), SP_OK);
    assert_int_equal(c.ev[0].kind, SP_CALLBACK_DELIVERED);
}

static void test_fn_error_stops(void **state) {
    (void)state;
    collector c;
    size_t len, n = 0;
    char *b = sms_body(20, &len);
    for (size_t at = 1; at <= 20; at += 19) {
        memset(&c, 0, sizeof c);
        c.fail_at = at;
        c.fail_rc = SP_ERR_STORE;
        assert_rc(sp_callback_parse((const uint8_t *)b, len, SMS, collect, &c, &n), SP_ERR_STORE);
        assert_int_equal(c.calls, at);
        assert_int_equal(n, 20);
    }
    free(b);
    memset(&c, 0, sizeof c);
    c.fail_at = 1;
    c.fail_rc = SP_ERR_NO_MEMORY;
    const char *k = "from=1&text=stop";
    assert_rc(sp_callback_parse((const uint8_t *)k, strlen(k), KANNEL, collect, &c, &n), SP_ERR_NO_MEMORY);
    assert_int_equal(c.calls, 1);
    assert_int_equal(n, 1);
}

static void test_opt_out(void **state) {
    (void)state;
    static const char *const yes[] = {
        "STOP", "stop", "Stop", " stop ", "STOP.", "stop!", "Stop!!", "stop .", "\tSTOP\r\n", "STOPALL",
        "stopall", "UNSUBSCRIBE", "unsubscribe.", "Cancel", "END", "end", "QUIT", "quit!", "OPTOUT",
        "opt-out", "OPT OUT", "Opt out", "REVOKE", "revoke", "STOP please", "stop sending me these",
        "Stop\tnow", "STOP caf\xc3\xa9",
    };
    static const char *const no[] = {
        "", " ", ".", "!!", "STOPPED", "stopp", "don't stop", "nonstop", "please stop", "STO", "ST OP",
        "OPT  OUT", "OPTOUTS", "ending", "quite", "Stop?", "START", "yes", "UNSUBSCRIBED", "S\xc3\xbcOP",
        "\xef\xbc\xb3TOP" /* fullwidth S */, "STOP\xc2\xa0", "\xff\xfe", "STOP,", "cancel it",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(yes); i++)
        if (!sp_callback_is_opt_out(yes[i], strlen(yes[i]))) fail_msg("not an opt-out: '%s'", yes[i]);
    for (size_t i = 0; i < SP_ARRAY_LEN(no); i++)
        if (sp_callback_is_opt_out(no[i], strlen(no[i]))) fail_msg("an opt-out: '%s'", no[i]);
    assert_false(sp_callback_is_opt_out(NULL, 0));
    /* only len bytes are read */
    assert_true(sp_callback_is_opt_out("stopped", 4));
    assert_false(sp_callback_is_opt_out("stop", 3));
    /* an embedded NUL is not whitespace */
    assert_false(sp_callback_is_opt_out("stop\0", 5));
}

static void test_names(void **state) {
    (void)state;
    static const char *const kinds[] = {"",       "delivered", "failed",  "hard_bounce",  "soft_bounce", "opened",
                                        "clicked", "replied", "unsubscribed", "spam", "buffered", "inbound"};
    for (int k = 0; k < (int)SP_ARRAY_LEN(kinds); k++)
        assert_string_equal(sp_callback_event_name((sp_callback_event_kind)k), kinds[k]);
    assert_string_equal(sp_callback_event_name((sp_callback_event_kind)12), "");
    assert_string_equal(sp_callback_event_name((sp_callback_event_kind)-1), "");
    assert_string_equal(sp_callback_format_name(AUTO), "auto");
    assert_string_equal(sp_callback_format_name(SMS), "sms");
    assert_string_equal(sp_callback_format_name(EMAIL), "email_v2");
    assert_string_equal(sp_callback_format_name(KANNEL), "kannel");
    assert_string_equal(sp_callback_format_name((sp_callback_format)4), "");
}

static void alloc_loop(const char *body, sp_callback_format f, size_t want_events, sp_error want_rc) {
    bool finished = false;
    unsigned failures = 0;
    for (uint64_t n = 1; n < 2000 && !finished; n++) {
        collector c;
        memset(&c, 0, sizeof c);
        size_t count = 99;
        sp_test_alloc_fail_at(n);
        sp_error rc = sp_callback_parse((const uint8_t *)body, strlen(body), f, collect, &c, &count);
        sp_test_alloc_fail_at(0);
        if (rc == SP_ERR_NO_MEMORY) {
            failures++;
            assert_int_equal(c.calls, 0);
            assert_int_equal(count, 0);
        } else if (rc == want_rc) {
            assert_int_equal(c.calls, want_events);
            finished = true;
        } else {
            fail_msg("allocation %llu failed: got %s", (unsigned long long)n, sp_error_name(rc));
        }
    }
    assert_true(finished);
    if (f != KANNEL) assert_true(failures >= 5); /* the parse did go through the funnel */
}

static void test_allocation_failures(void **state) {
    (void)state;
    alloc_loop("[{\"event\":\"replied\",\"data\":[{\"meta\":\"a\",\"ts\":1,\"incomingText\":\"STOP\","
               "\"x\":[1,{}]}]},"
               "{\"event\":\"failed\",\"data\":[{\"meta\":\"b\",\"code\":\"903\"}]}]",
               SMS, 2, SP_OK);
    /* a body that is bad at its end: a swallowed allocation failure must not
     * make it look valid (or valid with fewer members) */
    alloc_loop("[{\"event\":\"delivered\",\"data\":[{\"meta\":\"a\"},{\"meta\":\"b\",\"code\":true}]}]", SMS, 0,
               SP_ERR_BAD_CALLBACK);
    alloc_loop("{\"version\":\"v2\",\"events\":{\"success\":[{\"event\":\"opened\",\"meta\":\"a\"}],"
               "\"failed\":[{\"event\":\"spam\",\"meta\":\"b\"}]}}",
               EMAIL, 2, SP_OK);
    alloc_loop("{\"version\":\"v2\",\"events\":{\"success\":[{\"event\":\"opened\",\"meta\":\"a\"}],"
               "\"failed\":[{\"event\":\"spam\",\"meta\":\"b\"}],\"x\":[]}}",
               EMAIL, 0, SP_ERR_BAD_CALLBACK);
    alloc_loop("from=1&text=stop", KANNEL, 1, SP_OK);
}

int main(void) {
    if (sp_init() != SP_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sms_events),
        cmocka_unit_test(test_sms_refusals),
        cmocka_unit_test(test_sms_text_limits),
        cmocka_unit_test(test_event_count_limit),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_email_events),
        cmocka_unit_test(test_email_refusals),
        cmocka_unit_test(test_kannel_events),
        cmocka_unit_test(test_kannel_refusals),
        cmocka_unit_test(test_kannel_limits),
        cmocka_unit_test(test_arguments_and_detection),
        cmocka_unit_test(test_fn_error_stops),
        cmocka_unit_test(test_opt_out),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
