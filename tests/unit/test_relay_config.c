/*
 * sealpost-relay's config: defaults, bounds on each side, required entries,
 * refusals that name the line and the key, credentials (several lines,
 * malformed ones), the cross-entry rules (callback prefixes, inbound_url
 * inside them, jwe only with GCM, the password file's mode), and that
 * relay.conf.example lists exactly the table's entries with their help and
 * loads.
 */
#include "sp_test_util.h"

#include "relay.h"

#define HASH "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static const char base[] = "[server]\n"
                           "tls_cert = /x/cert.pem\n"
                           "tls_key = /x/key.pem\n"
                           "[auth]\n"
                           "merchant_id = m1\n"
                           "credential = ak1:" HASH ":0\n"
                           "[keys]\nfile = /x/keys.json\n"
                           "[smtp]\nurl = smtp://127.0.0.1:2525\n"
                           "[kannel]\nsendsms_url = http://127.0.0.1:13013/cgi-bin/sendsms\nusername = u\npassword = p\n"
                           "[platform]\ncallback_allow = https://p.example/cb/, http://127.0.0.1:9/x/\n"
                           "[state]\npath = /x/state.db\n";

static relay_config cfg;
static char err[600];

static sp_error parse_with(const char *extra) {
    char text[8192];
    snprintf(text, sizeof text, "%s%s", base, extra);
    err[0] = '\0';
    return relay_config_parse(text, "t.conf", &cfg, err, sizeof err);
}

static void test_defaults(void **state) {
    (void)state;
    assert_ok(parse_with(""));
    assert_string_equal(cfg.listen_address, "127.0.0.1");
    assert_int_equal(cfg.port, 8444);
    assert_int_equal(cfg.threads, 4);
    assert_int_equal(cfg.max_body, 4u << 20);
    assert_int_equal(cfg.tolerance_s, 300);
    assert_int_equal(cfg.allow.count, 2);
    assert_int_equal(cfg.smtp_starttls, RELAY_STARTTLS_TRY);
    assert_int_equal(cfg.smtp_timeout_s, 30);
    assert_int_equal(cfg.kannel_dlr_port, 13080);
    assert_int_equal(cfg.callback_profile, SP_PROFILE_COMPAT);
    assert_int_equal(cfg.callback_alg, SP_ALG_AES_256_GCM);
    assert_true(cfg.retry_scale == 1.0);
    assert_int_equal(cfg.keep_s, 5 * 86400);
    assert_int_equal(cfg.n_callback_allow, 2);
    assert_string_equal(cfg.callback_allow[1], "http://127.0.0.1:9/x/");
    assert_int_equal(cfg.n_credentials, 1);
    assert_int_equal(cfg.credentials[0].expires, 0);
}

static void test_required(void **state) {
    (void)state;
    static const char *const keys[] = {"tls_cert", "merchant_id", "credential", "file", "url", "sendsms_url",
                                       "callback_allow", "path"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char text[4096], *out = text;
        /* the base without the line that sets this key */
        const char *p = base;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t len = (size_t)(nl - p) + 1;
            bool skip = strncmp(p, keys[i], strlen(keys[i])) == 0 && p[strlen(keys[i])] == ' ';
            if (!skip) {
                memcpy(out, p, len);
                out += len;
            }
            p += len;
        }
        *out = '\0';
        assert_rc(relay_config_parse(text, "t.conf", &cfg, err, sizeof err), SP_ERR_BAD_CONFIG);
        assert_non_null(strstr(err, keys[i]));
    }
}

static void test_bounds(void **state) {
    (void)state;
    assert_ok(parse_with("[server]\nthreads = 64\n"));
    assert_rc(parse_with("[server]\nthreads = 65\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "[server] threads: must be a whole number between 1 and 64"));
    assert_rc(parse_with("[server]\nthreads = 0\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[server]\nmax_body = 64M\n"));
    assert_rc(parse_with("[server]\nmax_body = 65M\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[server]\nmax_body = 1023\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[state]\nkeep = 4d\n"));
    assert_int_equal(cfg.keep_s, 4 * 86400);
    assert_rc(parse_with("[state]\nkeep = 3d\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[smtp]\ntimeout = 10m\n"));
    assert_int_equal(cfg.smtp_timeout_s, 600);
    assert_rc(parse_with("[smtp]\ntimeout = 11m\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[smtp]\ntimeout = 5x\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[platform]\nretry_scale = 0.001\n"));
    assert_rc(parse_with("[platform]\nretry_scale = 0\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[platform]\nretry_scale = 2\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[platform]\nretry_scale = nan\n"), SP_ERR_BAD_CONFIG);
}

static void test_names_line_and_key(void **state) {
    (void)state;
    assert_rc(parse_with("[smtp]\nstarttls = maybe\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "t.conf:"));
    assert_non_null(strstr(err, "[smtp] starttls: must be try, require or off"));
    assert_rc(parse_with("[smtp]\nurll = x\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "[smtp] urll: unknown setting"));
    assert_rc(parse_with("[server]\nthreads = 2\nthreads = 3\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "given twice"));
    /* the line number is the offending one */
    assert_rc(parse_with("[server]\nthreads = 99\n"), SP_ERR_BAD_CONFIG);
    char want[32];
    int lines = 0;
    for (const char *p = base; *p; p++) lines += *p == '\n';
    snprintf(want, sizeof want, "t.conf:%d:", lines + 2);
    assert_non_null(strstr(err, want));
}

static void test_listen_forms(void **state) {
    (void)state;
    assert_ok(parse_with("[server]\nlisten = [::1]:9443\n"));
    assert_string_equal(cfg.listen_address, "::1");
    assert_int_equal(cfg.port, 9443);
    assert_ok(parse_with("[server]\nlisten = 0.0.0.0:443\n"));
    assert_rc(parse_with("[server]\nlisten = localhost:443\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[server]\nlisten = 127.0.0.1:0\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[server]\nlisten = 127.0.0.1:65536\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[kannel]\ndlr_listen = 0.0.0.0:13080\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "loopback only"));
    assert_rc(parse_with("[kannel]\ndlr_listen = 127.0.0.1:8444\n"), SP_ERR_BAD_CONFIG);
    assert_rc(parse_with("[server]\nallow = 10.0.0.0/33\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[server]\nallow = 10.0.0.0/8, 2001:db8::/32\n"));
    assert_int_equal(cfg.allow.count, 2);
}

static void test_credentials(void **state) {
    (void)state;
#define HASH2 "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
    assert_ok(parse_with("[auth]\ncredential = ak1:" HASH2 ":1900000000\ncredential = ak2:" HASH ":0\n"));
    assert_int_equal(cfg.n_credentials, 3);
    assert_int_equal(cfg.credentials[1].expires, 1900000000);
    assert_string_equal(cfg.credentials[2].access_key, "ak2");
    static const char *const bad[] = {
        "ak1:" HASH,                 /* no expiry */
        ":" HASH ":0",               /* no key */
        "ak1:" HASH "0:0",           /* 65 hex digits */
        "ak1:zz6d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08:0",
        "ak1:" HASH ":-1",
        "ak1:" HASH ":01",
        "ak 1:" HASH ":0",
        "ak1:" HASH ":0:extra",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char extra[512];
        snprintf(extra, sizeof extra, "[auth]\ncredential = %s\n", bad[i]);
        assert_rc(parse_with(extra), SP_ERR_BAD_CONFIG);
        assert_non_null(strstr(err, "[auth] credential"));
        assert_null(strstr(err, HASH)); /* never quoted */
    }
    /* the same key and secret twice is a mistake */
    assert_rc(parse_with("[auth]\ncredential = ak1:" HASH ":5\n"), SP_ERR_BAD_CONFIG);
    char many[4096] = "[auth]\n";
    size_t used = strlen(many);
    for (int i = 0; i < 16; i++) {
        int n = snprintf(many + used, sizeof many - used, "credential = k%d:" HASH ":0\n", i);
        assert_true(n > 0 && (size_t)n < sizeof many - used);
        used += (size_t)n;
    }
    assert_rc(parse_with(many), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "at most 16"));
}

static void test_cross_rules(void **state) {
    (void)state;
    assert_rc(parse_with("[platform]\ninbound_url = https://elsewhere.example/in\n"), SP_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "inbound_url: must be inside callback_allow"));
    assert_ok(parse_with("[platform]\ninbound_url = https://p.example/cb/inbound\n"));
    assert_rc(parse_with("[platform]\nprofile = jwe\nalgorithm = aes-256-cbc\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[platform]\nprofile = jwe\n"));
    assert_int_equal(cfg.callback_profile, SP_PROFILE_JWE);
    assert_rc(parse_with("[smtp]\npassword_file = /x/pw\n"), SP_ERR_BAD_CONFIG); /* needs username */
    assert_rc(parse_with("[auth]\nsub_merchants = a,,b\n"), SP_ERR_BAD_CONFIG);
    assert_ok(parse_with("[auth]\nsub_merchants = a, b\n"));
    assert_int_equal(cfg.n_sub_merchants, 2);
    assert_string_equal(cfg.sub_merchants[1], "b");
    assert_rc(parse_with("[kannel]\nusername = u2\nsmsc = s\n[kannel]\nsendsms_url = http://h/x?y=1\n"),
              SP_ERR_BAD_CONFIG);
    /* a prefix must include a path, else https://p.example would admit https://p.example.evil */
    static const char *const prefixes[] = {"https://p.example", "ftp://p.example/x/", "https://u@p.example/x/",
                                           "https://p.example/x/?a=1", "https://p.example/a b/"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        char text[4096];
        const char *cb = strstr(base, "callback_allow = ");
        const char *nl = strchr(cb, '\n');
        snprintf(text, sizeof text, "%.*scallback_allow = %s%s", (int)(cb - base), base, prefixes[i], nl);
        assert_rc(relay_config_parse(text, "t.conf", &cfg, err, sizeof err), SP_ERR_BAD_CONFIG);
        assert_non_null(strstr(err, "callback_allow"));
    }
    assert_rc(parse_with("[smtp]\nurl = http://127.0.0.1:25\n"), SP_ERR_BAD_CONFIG);
}

static void test_password_file(void **state) {
    (void)state;
    char dir[256], path[300], extra[700];
    assert_true(sp_test_mkdtemp(dir, sizeof dir, "relaycfg"));
    snprintf(path, sizeof path, "%s/pw", dir);
    sp_test_write_file(path, "s3cret\n", 7, 0644);
    snprintf(extra, sizeof extra, "[smtp]\nusername = u\npassword_file = %s\n", path);
    assert_rc(parse_with(extra), SP_ERR_INSECURE_PERMISSIONS);
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_ok(parse_with(extra));
    assert_string_equal(cfg.smtp_password, "s3cret");
    relay_config_wipe(&cfg);
    assert_int_equal(cfg.smtp_password[0], 0);
    sp_test_rm_tree(dir);
}

/* A key line of the example, set or shown commented out, in its section. */
static bool example_has(const char *text, const char *section, const char *key) {
    char head[80];
    snprintf(head, sizeof head, "\n[%s]\n", section);
    const char *s = strstr(text, head);
    if (!s) return false;
    const char *end = strstr(s + 1, "\n[");
    char set[128], empty[128];
    snprintf(set, sizeof set, "\n%s = ", key);
    snprintf(empty, sizeof empty, "\n%s =\n", key);
    const char *a = strstr(s, set), *b = strstr(s, empty);
    return (a && (!end || a < end)) || (b && (!end || b < end));
}

static void test_example_matches_table(void **state) {
    (void)state;
    const char *src = getenv("SP_SOURCE_DIR");
    if (!src) src = "..";
    char path[1024];
    snprintf(path, sizeof path, "%s/relay.conf.example", src);
    size_t len = 0;
    char *text = sp_test_read_file(path, &len);
    assert_non_null(text);
    for (size_t i = 0; i < relay_config_entry_count(); i++) {
        const relay_config_info *e = relay_config_entry(i);
        if (!example_has(text, e->section, e->key)) fail_msg("[%s] %s is missing from the example", e->section, e->key);
        if (!strstr(text, e->help)) fail_msg("the help of [%s] %s is missing from the example", e->section, e->key);
    }
    /* example -> table */
    char section[64] = "";
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 2 && p[0] == '[') snprintf(section, sizeof section, "%.*s", (int)(n - 2), p + 1);
        else if (n > 0 && p[0] != '#') {
            const char *eq = memchr(p, '=', n);
            assert_non_null(eq);
            size_t klen = (size_t)(eq - p);
            while (klen > 0 && p[klen - 1] == ' ') klen--;
            bool known = false;
            for (size_t i = 0; i < relay_config_entry_count(); i++) {
                const relay_config_info *e = relay_config_entry(i);
                if (strcmp(e->section, section) == 0 && strlen(e->key) == klen && memcmp(e->key, p, klen) == 0)
                    known = true;
            }
            if (!known) fail_msg("the example sets [%s] %.*s, which the table does not know", section, (int)klen, p);
        }
        p += n + (nl ? 1 : 0);
    }
    assert_ok(relay_config_parse(text, "relay.conf.example", &cfg, err, sizeof err));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),       cmocka_unit_test(test_required),
        cmocka_unit_test(test_bounds),         cmocka_unit_test(test_names_line_and_key),
        cmocka_unit_test(test_listen_forms),   cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_cross_rules),    cmocka_unit_test(test_password_file),
        cmocka_unit_test(test_example_matches_table),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
