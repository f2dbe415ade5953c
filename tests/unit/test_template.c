/*
 * Unit tests for compiled message templates (src/sender/template.c): the
 * two syntaxes, every compile error with its offset, defaults and raw
 * placeholders, each escape mode against values built to break it, missing
 * values, the grow-once-and-retry contract, wiping on failure, allocation
 * faults, and that rendering allocates nothing.
 */
#include "sp_test_util.h"

#include "sealpost/template.h"
#include "sender/sp_sender_internal.h"

/* values by name; the test binds them through the template's own names */
typedef struct {
    const char *name;
    const char *value; /* NULL: absent */
    size_t len;        /* 0: strlen(value) */
} tv;

typedef struct {
    const sp_template *t;
    const tv *vals;
    size_t n;
    size_t calls;
} tctx;

static bool t_lookup(void *vctx, size_t index, const char **value, size_t *len) {
    tctx *c = vctx;
    c->calls++;
    const char *name = sp_template_placeholder_name(c->t, index);
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->vals[i].name, name) != 0) continue;
        if (c->vals[i].value == NULL) return false;
        *value = c->vals[i].value;
        *len = c->vals[i].len ? c->vals[i].len : strlen(c->vals[i].value);
        return true;
    }
    return false;
}

static sp_template *compile_ok(const char *text, sp_template_syntax syntax) {
    sp_template *t = NULL;
    sp_template_error err;
    sp_error rc = sp_template_compile(text, strlen(text), syntax, &t, &err);
    if (rc != SP_OK) fail_msg("compile of '%s' failed: %s at %zu", text, err.reason ? err.reason : "?", err.offset);
    return t;
}

/* Renders and checks the exact output. */
static void render_is(const sp_template *t, const tv *vals, size_t n, sp_escape esc, const char *want) {
    char out[4096];
    size_t len = 0, missing = 99;
    tctx c = {t, vals, n, 0};
    assert_ok(sp_template_render(t, t_lookup, &c, esc, out, sizeof out, &len, &missing));
    if (len != strlen(want) || memcmp(out, want, len) != 0) {
        fail_msg("rendered '%.*s', expected '%s'", (int)len, out, want);
    }
}

/* ---- compiling ---- */
static void test_campaign_placeholders(void **state) {
    (void)state;
    sp_template *t = compile_ok("Hi {{ first_name }}, your {{plan|free}} plan ({{first_name}}) {{{ html.block }}}",
                                SP_TEMPLATE_CAMPAIGN);
    assert_int_equal(sp_template_get_syntax(t), SP_TEMPLATE_CAMPAIGN);
    assert_int_equal(sp_template_placeholder_count(t), 3);
    assert_string_equal(sp_template_placeholder_name(t, 0), "first_name");
    assert_string_equal(sp_template_placeholder_name(t, 1), "plan");
    assert_string_equal(sp_template_placeholder_name(t, 2), "html.block");
    assert_null(sp_template_placeholder_name(t, 3));
    assert_true(sp_template_placeholder_required(t, 0));
    assert_false(sp_template_placeholder_required(t, 1));
    assert_true(sp_template_placeholder_required(t, 2));
    assert_false(sp_template_placeholder_required(t, 3));
    size_t idx = 99;
    assert_true(sp_template_placeholder_find(t, "plan", &idx));
    assert_int_equal(idx, 1);
    assert_false(sp_template_placeholder_find(t, "Plan", &idx));
    tv vals[] = {{"first_name", "Ada", 0}, {"html.block", "<b>x</b>", 0}};
    render_is(t, vals, 2, SP_ESCAPE_HTML, "Hi Ada, your free plan (Ada) <b>x</b>");
    sp_template_free(t);
}

static void test_campaign_whitespace_and_defaults(void **state) {
    (void)state;
    sp_template *t = compile_ok("[{{\n name \t|  dear friend  }}][{{e|}}][{{ a-b.c_9 | x|y }}][{{{r|<i>}}}]",
                                SP_TEMPLATE_CAMPAIGN);
    assert_int_equal(sp_template_placeholder_count(t), 4);
    assert_string_equal(sp_template_placeholder_name(t, 2), "a-b.c_9");
    render_is(t, NULL, 0, SP_ESCAPE_HTML, "[dear friend][][x|y][<i>]");
    tv vals[] = {{"name", "Bob & co", 0}, {"e", "E", 0}, {"a-b.c_9", "", 0}, {"r", "<u>", 0}};
    render_is(t, vals, 4, SP_ESCAPE_HTML, "[Bob &amp; co][E][][<u>]");
    render_is(t, vals, 4, SP_ESCAPE_NONE, "[Bob & co][E][][<u>]");
    sp_template_free(t);
}

static void test_campaign_literals(void **state) {
    (void)state;
    /* single braces, a stray "}}", UTF-8 and a trailing brace stay literal */
    sp_template *t = compile_ok("{a} }} caf\xc3\xa9 {{x}}} {", SP_TEMPLATE_CAMPAIGN);
    tv vals[] = {{"x", "1", 0}};
    render_is(t, vals, 1, SP_ESCAPE_JSON, "{a} }} caf\xc3\xa9 1} {");
    sp_template_free(t);
    t = compile_ok("", SP_TEMPLATE_CAMPAIGN);
    assert_int_equal(sp_template_placeholder_count(t), 0);
    render_is(t, NULL, 0, SP_ESCAPE_JSON, "");
    sp_template_free(t);
}

static void test_clevertap(void **state) {
    (void)state;
    sp_template *t = compile_ok("{\"to\":\"$$To\",\"cost\":\"$$$$5 $\",\"x\":\"$$To_x$$To\"}", SP_TEMPLATE_CLEVERTAP);
    assert_int_equal(sp_template_get_syntax(t), SP_TEMPLATE_CLEVERTAP);
    assert_int_equal(sp_template_placeholder_count(t), 2);
    assert_string_equal(sp_template_placeholder_name(t, 0), "To");
    assert_string_equal(sp_template_placeholder_name(t, 1), "To_x");
    tv vals[] = {{"To", "+1 555", 0}, {"To_x", "\"q\"", 0}};
    render_is(t, vals, 2, SP_ESCAPE_JSON, "{\"to\":\"+1 555\",\"cost\":\"$$5 $\",\"x\":\"\\\"q\\\"+1 555\"}");
    sp_template_free(t);
    /* campaign syntax leaves $$ alone, CleverTap leaves {{ }} alone */
    t = compile_ok("$$To {{x}}", SP_TEMPLATE_CLEVERTAP);
    assert_int_equal(sp_template_placeholder_count(t), 1);
    render_is(t, vals, 2, SP_ESCAPE_NONE, "+1 555 {{x}}");
    sp_template_free(t);
    t = compile_ok("$$To {{x}}", SP_TEMPLATE_CAMPAIGN);
    assert_int_equal(sp_template_placeholder_count(t), 1);
    assert_string_equal(sp_template_placeholder_name(t, 0), "x");
    sp_template_free(t);
}

typedef struct {
    const char *text;
    sp_template_syntax syntax;
    size_t offset;
    const char *reason; /* a substring */
} compile_case;

static void test_compile_errors(void **state) {
    (void)state;
    static const compile_case cases[] = {
        {"ab {{name", SP_TEMPLATE_CAMPAIGN, 3, "unterminated"},
        {"ab {{name}", SP_TEMPLATE_CAMPAIGN, 3, "unterminated"},
        {"x{{}}", SP_TEMPLATE_CAMPAIGN, 1, "empty placeholder name"},
        {"{{  |dflt}}", SP_TEMPLATE_CAMPAIGN, 0, "empty placeholder name"},
        {"x{{a b}}", SP_TEMPLATE_CAMPAIGN, 4, "invalid character"},
        {"{{na$me}}", SP_TEMPLATE_CAMPAIGN, 4, "invalid character"},
        {"{{{a}}", SP_TEMPLATE_CAMPAIGN, 4, "'}}}'"},
        {"{{{a}} tail", SP_TEMPLATE_CAMPAIGN, 4, "'}}}'"},
        {"{{a {{b}}", SP_TEMPLATE_CAMPAIGN, 4, "inside a placeholder"},
        {"{{a|x{{b}}", SP_TEMPLATE_CAMPAIGN, 5, "inside a placeholder"},
        {"x $$", SP_TEMPLATE_CLEVERTAP, 2, "followed by a name"},
        {"$$ To", SP_TEMPLATE_CLEVERTAP, 0, "followed by a name"},
        {"$$$To", SP_TEMPLATE_CLEVERTAP, 0, "followed by a name"},
        {"ok $$-x", SP_TEMPLATE_CLEVERTAP, 3, "followed by a name"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        sp_template *t = (sp_template *)0x1;
        sp_template_error err = {77, NULL};
        sp_error rc = sp_template_compile(cases[i].text, strlen(cases[i].text), cases[i].syntax, &t, &err);
        if (rc != SP_ERR_TEMPLATE) fail_msg("'%s' gave %s", cases[i].text, sp_error_name(rc));
        assert_null(t);
        assert_non_null(err.reason);
        if (err.offset != cases[i].offset || strstr(err.reason, cases[i].reason) == NULL) {
            fail_msg("'%s': got '%s' at %zu, expected '%s' at %zu", cases[i].text, err.reason, err.offset,
                     cases[i].reason, cases[i].offset);
        }
    }
    /* err may be NULL */
    sp_template *t = NULL;
    assert_rc(sp_template_compile("{{", 2, SP_TEMPLATE_CAMPAIGN, &t, NULL), SP_ERR_TEMPLATE);
}

static void test_compile_limits(void **state) {
    (void)state;
    sp_template *t = NULL;
    sp_template_error err;
    /* a NUL byte */
    assert_rc(sp_template_compile("a\0b", 3, SP_TEMPLATE_CAMPAIGN, &t, &err), SP_ERR_TEMPLATE);
    assert_int_equal(err.offset, 1);
    assert_non_null(strstr(err.reason, "NUL"));

    /* names: 64 is fine, 65 is too long, in both syntaxes */
    char text[200];
    char name[80];
    memset(name, 'n', 65);
    name[65] = 0;
    snprintf(text, sizeof text, "{{%.64s}}", name);
    t = compile_ok(text, SP_TEMPLATE_CAMPAIGN);
    sp_template_free(t);
    snprintf(text, sizeof text, "ab{{ %s}}", name);
    assert_rc(sp_template_compile(text, strlen(text), SP_TEMPLATE_CAMPAIGN, &t, &err), SP_ERR_TEMPLATE);
    assert_int_equal(err.offset, 5);
    assert_non_null(strstr(err.reason, "too long"));
    snprintf(text, sizeof text, "ab$$%s", name);
    assert_rc(sp_template_compile(text, strlen(text), SP_TEMPLATE_CLEVERTAP, &t, &err), SP_ERR_TEMPLATE);
    assert_int_equal(err.offset, 4);
    assert_non_null(strstr(err.reason, "too long"));

    /* 256 distinct names fit, the 257th does not */
    size_t cap = 300 * 12, len = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t at257 = 0;
    for (int i = 0; i < 257; i++) {
        if (i == 256) at257 = len;
        len += (size_t)snprintf(big + len, cap - len, "{{v%d}}", i);
    }
    assert_ok(sp_template_compile(big, at257, SP_TEMPLATE_CAMPAIGN, &t, &err));
    assert_int_equal(sp_template_placeholder_count(t), 256);
    sp_template_free(t);
    assert_rc(sp_template_compile(big, len, SP_TEMPLATE_CAMPAIGN, &t, &err), SP_ERR_TEMPLATE);
    assert_int_equal(err.offset, at257);
    assert_non_null(strstr(err.reason, "too many placeholders"));
    free(big);

    /* 4096 uses fit, the 4097th does not */
    cap = 4100 * 3;
    big = malloc(cap);
    assert_non_null(big);
    for (size_t i = 0; i < 4097; i++) memcpy(big + 3 * i, "$$a", 3);
    assert_ok(sp_template_compile(big, 4096 * 3, SP_TEMPLATE_CLEVERTAP, &t, &err));
    assert_int_equal(sp_template_placeholder_count(t), 1);
    sp_template_free(t);
    /* "$$a$$a": the name ends at the next '$' */
    assert_rc(sp_template_compile(big, 4097 * 3, SP_TEMPLATE_CLEVERTAP, &t, &err), SP_ERR_TEMPLATE);
    assert_int_equal(err.offset, 4096 * 3);
    assert_non_null(strstr(err.reason, "uses"));
    free(big);

    /* size */
    big = malloc(SP_TEMPLATE_MAX_BYTES + 1);
    assert_non_null(big);
    memset(big, 'x', SP_TEMPLATE_MAX_BYTES + 1);
    assert_ok(sp_template_compile(big, SP_TEMPLATE_MAX_BYTES, SP_TEMPLATE_CAMPAIGN, &t, &err));
    sp_template_free(t);
    assert_rc(sp_template_compile(big, SP_TEMPLATE_MAX_BYTES + 1, SP_TEMPLATE_CAMPAIGN, &t, &err), SP_ERR_TOO_LARGE);
    assert_null(t);
    free(big);

    /* arguments */
    assert_rc(sp_template_compile(NULL, 1, SP_TEMPLATE_CAMPAIGN, &t, &err), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_compile("x", 1, (sp_template_syntax)9, &t, &err), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_compile("x", 1, SP_TEMPLATE_CAMPAIGN, NULL, &err), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_template_compile(NULL, 0, SP_TEMPLATE_CAMPAIGN, &t, &err));
    sp_template_free(t);
    sp_template_free(NULL);
}

/* ---- escaping ---- */
static void test_escape_json(void **state) {
    (void)state;
    sp_template *t = compile_ok("{\"v\":\"$$V\"}", SP_TEMPLATE_CLEVERTAP);
    static const char tricky[] = "q\"b\\s/ \n\r\t\b\f\x01\x1f\x7f <script>&x=1+2%20 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    tv vals[] = {{"V", tricky, sizeof tricky - 1}};
    render_is(t, vals, 1, SP_ESCAPE_JSON,
              "{\"v\":\"q\\\"b\\\\s/ \\n\\r\\t\\b\\f\\u0001\\u001F\x7f <script>&x=1+2%20 caf\xc3\xa9 \xe2\x82\xac "
              "\xf0\x9f\x98\x80\"}");
    /* and a JSON parser reads the value back byte for byte, NUL included */
    static const char with_nul[] = "a\0b\"c";
    tv nul_vals[] = {{"V", with_nul, sizeof with_nul - 1}};
    char out[256];
    size_t len = 0;
    tctx c = {t, nul_vals, 1, 0};
    assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, sizeof out, &len, NULL));
    json_error_t jerr;
    json_t *doc = json_loadb(out, len, JSON_ALLOW_NUL, &jerr);
    assert_non_null(doc);
    json_t *v = json_object_get(doc, "v");
    assert_int_equal(json_string_length(v), sizeof with_nul - 1);
    assert_memory_equal(json_string_value(v), with_nul, sizeof with_nul - 1);
    json_decref(doc);
    c.vals = vals;
    assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, sizeof out, &len, NULL));
    doc = json_loadb(out, len, 0, &jerr);
    assert_non_null(doc);
    assert_int_equal(json_string_length(json_object_get(doc, "v")), sizeof tricky - 1);
    assert_memory_equal(json_string_value(json_object_get(doc, "v")), tricky, sizeof tricky - 1);
    json_decref(doc);
    sp_template_free(t);
}

static void test_escape_json_invalid_utf8(void **state) {
    (void)state;
    static const char *const bad[] = {
        "\xc3\x28",             /* bad continuation */
        "\xc0\xaf",             /* overlong '/' */
        "\xe0\x80\xaf",         /* overlong, 3 bytes */
        "\xed\xa0\x80",         /* a surrogate */
        "\xe2\x82",             /* cut short */
        "\xf4\x90\x80\x80",     /* past U+10FFFF */
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "\x80",                 /* a lone continuation */
        "ok\xff",
    };
    sp_template *t = compile_ok("{\"a\":\"$$A\",\"b\":\"$$B\"}", SP_TEMPLATE_CLEVERTAP);
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        tv vals[] = {{"A", "fine", 0}, {"B", bad[i], 0}};
        char out[128];
        memset(out, 'Z', sizeof out);
        size_t len = 5, missing = 99;
        tctx c = {t, vals, 2, 0};
        assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, sizeof out, &len, &missing),
                  SP_ERR_TEMPLATE);
        assert_int_equal(missing, 1);
        assert_int_equal(len, 0);
        /* what was written ("{"a":"fine","b":") is wiped, the rest untouched */
        size_t written = strlen("{\"a\":\"fine\",\"b\":\"");
        assert_true(sp_test_all_zero(out, written));
        assert_int_equal(out[written], 'Z');
        /* the other escapes carry the bytes through */
        assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_NONE, out, sizeof out, &len, &missing));
        assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_HTML, out, sizeof out, &len, &missing));
        assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_FORM, out, sizeof out, &len, &missing));
    }
    /* the longest valid forms at each boundary pass */
    tv ok[] = {{"A", "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 0},
               {"B", "", 0}};
    char out[128];
    size_t len = 0;
    tctx c = {t, ok, 2, 0};
    assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, sizeof out, &len, NULL));
    sp_template_free(t);
}

static void test_escape_form(void **state) {
    (void)state;
    sp_template *t = compile_ok("to=$$To&text=$$Body", SP_TEMPLATE_CLEVERTAP);
    tv vals[] = {{"To", "+1 555 0100", 0}, {"Body", "a b+c&d=e%f/\xc3\xa9~*-._\n<script>\"'", 0}};
    render_is(t, vals, 2, SP_ESCAPE_FORM,
              "to=%2B1+555+0100&text=a+b%2Bc%26d%3De%25f%2F%C3%A9%7E*-._%0A%3Cscript%3E%22%27");
    sp_template_free(t);
}

static void test_escape_html_and_none(void **state) {
    (void)state;
    sp_template *t = compile_ok("<p title=\"{{t}}\">{{b}}</p>{{{raw}}}", SP_TEMPLATE_CAMPAIGN);
    tv vals[] = {{"t", "\"><script>alert('x')</script>", 0}, {"b", "Tom & Jerry <3", 0}, {"raw", "<hr>&", 0}};
    render_is(t, vals, 3, SP_ESCAPE_HTML,
              "<p title=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\">Tom &amp; Jerry &lt;3</p><hr>&");
    render_is(t, vals, 3, SP_ESCAPE_NONE, "<p title=\"\"><script>alert('x')</script>\">Tom & Jerry <3</p><hr>&");
    /* raw means raw under every escape, JSON included */
    render_is(t, vals, 3, SP_ESCAPE_JSON, "<p title=\"\\\"><script>alert('x')</script>\">Tom & Jerry <3</p><hr>&");
    sp_template_free(t);
}

/* ---- missing values, sizes, wiping ---- */
static void test_missing_value(void **state) {
    (void)state;
    sp_template *t = compile_ok("Dear {{name|friend}}, code {{code}} {{name}}", SP_TEMPLATE_CAMPAIGN);
    tv vals[] = {{"name", NULL, 0}, {"code", "42", 0}};
    char out[64];
    memset(out, 'Z', sizeof out);
    size_t len = 9, missing = 99;
    tctx c = {t, vals, 2, 0};
    /* the third use of name has no default */
    assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_NONE, out, sizeof out, &len, &missing), SP_ERR_TEMPLATE);
    assert_int_equal(missing, 0);
    assert_int_equal(len, 0);
    size_t written = strlen("Dear friend, code 42 ");
    assert_true(sp_test_all_zero(out, written));
    assert_int_equal(out[written], 'Z');
    tv vals2[] = {{"name", "Ann", 0}, {"code", NULL, 0}};
    c.vals = vals2;
    assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_NONE, out, sizeof out, &len, &missing), SP_ERR_TEMPLATE);
    assert_int_equal(missing, 1);
    /* missing_index may be NULL */
    assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_NONE, out, sizeof out, &len, NULL), SP_ERR_TEMPLATE);
    sp_template_free(t);
}

static void test_buffer_too_small_then_retry(void **state) {
    (void)state;
    sp_template *t = compile_ok("{\"to\":\"$$To\",\"body\":\"$$Body\"}", SP_TEMPLATE_CLEVERTAP);
    tv vals[] = {{"To", "ada@example.org", 0}, {"Body", "line1\nline2 \"quoted\"", 0}};
    tctx c = {t, vals, 2, 0};
    size_t need = 0;
    /* cap 0 with no buffer just measures */
    assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, NULL, 0, &need, NULL), SP_ERR_BUFFER_TOO_SMALL);
    const char *want = "{\"to\":\"ada@example.org\",\"body\":\"line1\\nline2 \\\"quoted\\\"\"}";
    assert_int_equal(need, strlen(want));
    for (size_t cap = 1; cap < need; cap += 7) {
        char *out = malloc(need + 8);
        assert_non_null(out);
        memset(out, 'Z', need + 8);
        size_t len = 0;
        assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, cap, &len, NULL), SP_ERR_BUFFER_TOO_SMALL);
        assert_int_equal(len, need);
        assert_true(sp_test_all_zero(out, cap)); /* the part that fitted is wiped */
        assert_int_equal(out[cap], 'Z');         /* and nothing past cap was touched */
        free(out);
    }
    char *out = malloc(need);
    assert_non_null(out);
    size_t len = 0;
    assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, need, &len, NULL));
    assert_int_equal(len, need);
    assert_memory_equal(out, want, need);
    free(out);
    sp_template_free(t);
}

static bool bad_lookup(void *ctx, size_t index, const char **value, size_t *len) {
    (void)ctx;
    (void)index;
    *value = NULL;
    *len = 3;
    return true;
}

static bool empty_lookup(void *ctx, size_t index, const char **value, size_t *len) {
    (void)ctx;
    (void)index;
    *value = NULL;
    *len = 0;
    return true;
}

static void test_render_arguments(void **state) {
    (void)state;
    sp_template *t = compile_ok("a{{x}}b", SP_TEMPLATE_CAMPAIGN);
    char out[16];
    size_t len = 0;
    assert_rc(sp_template_render(t, bad_lookup, NULL, SP_ESCAPE_NONE, out, sizeof out, &len, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_template_render(t, empty_lookup, NULL, SP_ESCAPE_NONE, out, sizeof out, &len, NULL));
    assert_int_equal(len, 2);
    assert_memory_equal(out, "ab", 2);
    assert_rc(sp_template_render(NULL, empty_lookup, NULL, SP_ESCAPE_NONE, out, sizeof out, &len, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_render(t, NULL, NULL, SP_ESCAPE_NONE, out, sizeof out, &len, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_render(t, empty_lookup, NULL, (sp_escape)7, out, sizeof out, &len, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_render(t, empty_lookup, NULL, SP_ESCAPE_NONE, NULL, 4, &len, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_template_render(t, empty_lookup, NULL, SP_ESCAPE_NONE, out, sizeof out, NULL, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_template_placeholder_count(NULL), 0);
    assert_null(sp_template_placeholder_name(NULL, 0));
    sp_template_free(t);
}

static void test_check_names(void **state) {
    (void)state;
    sp_template *t = compile_ok("{{first_name}} {{plan|x}} {{email}} {{first_name}}", SP_TEMPLATE_CAMPAIGN);
    static const char *const all[] = {"email", "plan", "first_name", "phone"};
    size_t unknown = 99;
    assert_ok(sp_template_check_names(t, all, 4, &unknown));
    assert_int_equal(unknown, 99);
    static const char *const some[] = {"first_name", "email"};
    assert_rc(sp_template_check_names(t, some, 2, &unknown), SP_ERR_TEMPLATE);
    assert_int_equal(unknown, 1);
    assert_string_equal(sp_template_placeholder_name(t, unknown), "plan");
    static const char *const case_differs[] = {"First_name", "plan", "email"};
    assert_rc(sp_template_check_names(t, case_differs, 3, &unknown), SP_ERR_TEMPLATE);
    assert_int_equal(unknown, 0);
    assert_rc(sp_template_check_names(t, NULL, 0, &unknown), SP_ERR_TEMPLATE);
    assert_int_equal(unknown, 0);
    sp_template_free(t);
    t = compile_ok("no placeholders", SP_TEMPLATE_CAMPAIGN);
    assert_ok(sp_template_check_names(t, NULL, 0, NULL));
    sp_template_free(t);
}

/* ---- memory ---- */
static void test_compile_alloc_failures(void **state) {
    (void)state;
    const char *text = "Hi {{name|there}}, {{{raw}}} $$x";
    bool succeeded = false;
    for (uint64_t n = 1; n < 20 && !succeeded; n++) {
        sp_template *t = NULL;
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_error rc = sp_template_compile(text, strlen(text), SP_TEMPLATE_CAMPAIGN, &t, NULL);
        bool reached = sp_test_fault_disarm(fault);
        if (reached) {
            assert_rc(rc, SP_ERR_NO_MEMORY);
            assert_null(t);
        } else {
            assert_ok(rc);
            tv vals[] = {{"name", "N", 0}, {"raw", "R", 0}};
            render_is(t, vals, 2, SP_ESCAPE_NONE, "Hi N, R $$x");
            sp_template_free(t);
            succeeded = true;
        }
    }
    assert_true(succeeded);
}

static void test_render_allocates_nothing(void **state) {
    (void)state;
    sp_template *t = compile_ok("{\"to\":\"$$To\",\"b\":\"$$Body\"}", SP_TEMPLATE_CLEVERTAP);
    tv vals[] = {{"To", "x", 0}, {"Body", "caf\xc3\xa9 \"y\"", 0}};
    tctx c = {t, vals, 2, 0};
    char out[128];
    size_t len = 0;
    uint64_t before = sp_test_alloc_count();
    for (int i = 0; i < 100; i++) {
        assert_ok(sp_template_render(t, t_lookup, &c, (sp_escape)(i % 4), out, sizeof out, &len, NULL));
    }
    assert_rc(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, 3, &len, NULL), SP_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(sp_test_alloc_count(), before);
    /* one lookup per use, none for literal text */
    c.calls = 0;
    assert_ok(sp_template_render(t, t_lookup, &c, SP_ESCAPE_JSON, out, sizeof out, &len, NULL));
    assert_int_equal(c.calls, 2);
    sp_template_free(t);
}

/* ---- the internal compile with escaped literals (form fields) ---- */
static void test_compile_escaped_literals(void **state) {
    (void)state;
    sp_template *t = NULL;
    const char *text = "Hi & bye $$Name!";
    assert_ok(sp_template_compile_escaped(text, strlen(text), SP_TEMPLATE_CLEVERTAP, SP_ESCAPE_FORM, &t, NULL));
    tv vals[] = {{"Name", "A&B", 0}};
    render_is(t, vals, 1, SP_ESCAPE_FORM, "Hi+%26+bye+A%26B%21");
    sp_template_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_campaign_placeholders),
        cmocka_unit_test(test_campaign_whitespace_and_defaults),
        cmocka_unit_test(test_campaign_literals),
        cmocka_unit_test(test_clevertap),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_compile_limits),
        cmocka_unit_test(test_escape_json),
        cmocka_unit_test(test_escape_json_invalid_utf8),
        cmocka_unit_test(test_escape_form),
        cmocka_unit_test(test_escape_html_and_none),
        cmocka_unit_test(test_missing_value),
        cmocka_unit_test(test_buffer_too_small_then_retry),
        cmocka_unit_test(test_render_arguments),
        cmocka_unit_test(test_check_names),
        cmocka_unit_test(test_compile_alloc_failures),
        cmocka_unit_test(test_render_allocates_nothing),
        cmocka_unit_test(test_compile_escaped_literals),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
