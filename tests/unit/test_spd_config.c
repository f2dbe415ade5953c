/*
 * sealpostd's config file: the defaults, every numeric entry's bounds (just
 * inside, just outside), suffixes, the listen address forms, refusals that
 * name the line (unknown section or key, a key set twice), the checks that
 * span entries (plain HTTP only on loopback), and that sealpost.conf.example
 * lists exactly the entries of the table, each with its help text, and
 * loads.
 */
#include "sp_test_util.h"

#include "daemon.h"

typedef struct {
    char dir[256];
    char path[300];
    char err[600];
    spd_config cfg;
} fixture;

static int setup(void **state) {
    fixture *f = sp_test_fixture_new(sizeof *f, offsetof(fixture, dir), sizeof f->dir, "spdcfg");
    if (!f) return -1;
    snprintf(f->path, sizeof f->path, "%s/t.conf", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    return sp_test_fixture_free(f, f->dir);
}

static sp_error load_text(fixture *f, const char *text) {
    sp_test_write_file(f->path, text, strlen(text), 0600);
    f->err[0] = '\0';
    return spd_config_load(f->path, &f->cfg, f->err, sizeof f->err);
}

static void test_defaults(void **state) {
    fixture *f = *state;
    assert_int_equal(load_text(f, "; nothing set\n"), SP_OK);
    spd_config *c = &f->cfg;
    assert_string_equal(c->listen_address, "127.0.0.1");
    assert_int_equal(c->port, 8443);
    assert_int_equal(c->max_body, 4u << 20);
    assert_int_equal(c->max_header_bytes, 16u << 10);
    assert_int_equal(c->max_connections, 1024);
    assert_int_equal(c->max_connections_per_ip, 64);
    assert_int_equal(c->idle_timeout_s, 30);
    assert_int_equal(c->shutdown_grace_ms, 10000);
    assert_string_equal(c->data_dir, "var");
    assert_string_equal(c->store_url, "sqlite:var/sealpost.db");
    assert_string_equal(c->tls_cert, "var/tls/cert.pem");
    assert_string_equal(c->tls_key, "var/tls/key.pem");
    assert_string_equal(c->audit_path, "var/audit.log");
    assert_string_equal(c->log_path, "-");
    assert_int_equal(c->log_level, SP_LOG_INFO);
    assert_false(c->plain_http);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->threads, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    assert_int_equal(c->admin_allow.count, 2);
    assert_int_equal(c->admin_allow.entries[0].family, 4);
    assert_int_equal(c->admin_allow.entries[1].family, 6);
    assert_int_equal(c->default_tenant_allow.count, 2);
    assert_int_equal(c->max_batch, 1000);
    assert_true(c->rate_per_second == 1000.0);
    assert_true(c->rate_burst == 2000.0);
    assert_int_equal(c->dek_lifetime_s, 1800);
    assert_int_equal(c->dek_cache_ttl_s, 1800);
}

static void test_values_and_derived_paths(void **state) {
    fixture *f = *state;
    assert_int_equal(load_text(f, "[server]\nlisten = [::1]:9000\nthreads = 3\nmax_body = 512K\n"
                                  "shutdown_grace = 1500ms\nidle_timeout = 2m\nplain_http = yes\n"
                                  "[data]\ndir = /srv/sp\n[log]\nlevel = WARN\n"
                                  "[security]\nadmin_allow = 10.0.0.0/8 , 2001:db8::/32\n"
                                  "[vault]\ndek_lifetime = 2h\ndek_cache_ttl = 1d\n"),
                     SP_OK);
    spd_config *c = &f->cfg;
    assert_string_equal(c->listen_address, "::1");
    assert_int_equal(c->port, 9000);
    assert_int_equal(c->threads, 3);
    assert_int_equal(c->max_body, 512u << 10);
    assert_int_equal(c->shutdown_grace_ms, 1500);
    assert_int_equal(c->idle_timeout_s, 120);
    assert_true(c->plain_http);
    assert_string_equal(c->store_url, "sqlite:/srv/sp/sealpost.db");
    assert_string_equal(c->audit_path, "/srv/sp/audit.log");
    assert_int_equal(c->log_level, SP_LOG_WARN);
    assert_int_equal(c->admin_allow.count, 2);
    assert_int_equal(c->admin_allow.entries[0].prefix, 8);
    assert_int_equal(c->dek_lifetime_s, 7200);
    assert_int_equal(c->dek_cache_ttl_s, 86400);
}

typedef struct {
    const char *section, *key, *below, *lowest, *highest, *above;
} bound_case;

/* Every numeric entry of the table: its extremes load, one step beyond
 * does not. */
static const bound_case bounds[] = {
    {"server", "threads", NULL, "0", "64", "65"},
    {"server", "max_body", "1023", "1K", "64M", "67108865"},
    {"server", "max_header_bytes", "4095", "4K", "1M", "1048577"},
    {"server", "max_connections", "0", "1", "100000", "100001"},
    {"server", "max_connections_per_ip", "0", "1", "100000", "100001"},
    {"server", "idle_timeout", "0s", "1s", "1h", "3601"},
    {"server", "shutdown_grace", NULL, "0s", "10m", "601s"},
    {"limits", "max_batch", "0", "1", "1000", "1001"},
    {"limits", "rate_per_second", "0.001", "0.01", "1000000", "1000001"},
    {"limits", "rate_burst", "0.5", "1", "10000000", "10000001"},
    {"vault", "dek_lifetime", "0s", "1s", "7d", "604801"},
    {"vault", "dek_cache_ttl", "0", "1", "1d", "86401"},
};

static void test_bounds(void **state) {
    fixture *f = *state;
    char text[256], want[128];
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        const bound_case *b = &bounds[i];
        const char *vals[] = {b->below, b->lowest, b->highest, b->above};
        for (size_t j = 0; j < 4; j++) {
            if (!vals[j]) continue;
            snprintf(text, sizeof text, "[%s]\n%s = %s\n", b->section, b->key, vals[j]);
            sp_error rc = load_text(f, text);
            bool inside = j == 1 || j == 2;
            if (inside) {
                if (rc != SP_OK) fail_msg("%s = %s refused: %s", b->key, vals[j], f->err);
            } else {
                if (rc != SP_ERR_BAD_CONFIG) fail_msg("%s = %s accepted", b->key, vals[j]);
                snprintf(want, sizeof want, "t.conf:2: %s: must be between", b->key);
                if (!strstr(f->err, want)) fail_msg("%s = %s: message '%s'", b->key, vals[j], f->err);
            }
        }
    }
}

static void expect_refused(fixture *f, const char *text, const char *want) {
    if (load_text(f, text) != SP_ERR_BAD_CONFIG) fail_msg("accepted: %s", text);
    if (!strstr(f->err, want)) fail_msg("'%s' for %s", f->err, text);
}

static void test_bad_values(void **state) {
    fixture *f = *state;
    expect_refused(f, "[server]\nmax_body = 4G\n", "t.conf:2: max_body: must be a whole number of bytes");
    expect_refused(f, "[server]\nmax_body = 4MB\n", "max_body: must be a whole number");
    expect_refused(f, "[server]\nmax_body = -1\n", "max_body:");
    expect_refused(f, "[server]\nmax_body = 2048.5\n", "max_body: must be a whole number");
    expect_refused(f, "[server]\nidle_timeout = 30x\n", "idle_timeout: must be a duration");
    expect_refused(f, "[server]\nidle_timeout = 500ms\n", "idle_timeout: must be a duration");
    expect_refused(f, "[vault]\ndek_lifetime = 1.5s\n", "dek_lifetime: must be a duration");
    expect_refused(f, "[server]\nthreads = two\n", "threads: must be a whole number");
    expect_refused(f, "[server]\nplain_http = maybe\n", "plain_http: must be true or false");
    expect_refused(f, "[log]\nlevel = verbose\n", "level: must be debug, info, warn or error");
    expect_refused(f, "[security]\nadmin_allow = 10.0.0.0/33\n", "admin_allow: '10.0.0.0/33' is not a CIDR");
    expect_refused(f, "[security]\nadmin_allow = 10.0.0.0/8,,::1\n", "admin_allow: empty entry");
    expect_refused(f, "[limits]\nrate_per_second = fast\n", "rate_per_second: must be a number");
    expect_refused(f, "[data]\ndir =\n", "dir: must not be empty");
}

static void test_listen(void **state) {
    fixture *f = *state;
    assert_int_equal(load_text(f, "[server]\nlisten = 0.0.0.0:0\n"), SP_OK);
    assert_string_equal(f->cfg.listen_address, "0.0.0.0");
    assert_int_equal(f->cfg.port, 0);
    assert_int_equal(load_text(f, "[server]\nlisten = [::]:65535\n"), SP_OK);
    assert_string_equal(f->cfg.listen_address, "::");
    expect_refused(f, "[server]\nlisten = ::1:8443\n", "listen:");
    expect_refused(f, "[server]\nlisten = localhost:8443\n", "listen: 'localhost' is not an IPv4 address");
    expect_refused(f, "[server]\nlisten = 127.0.0.1:65536\n", "listen: port must be");
    expect_refused(f, "[server]\nlisten = 127.0.0.1\n", "listen: expected host:port");
    expect_refused(f, "[server]\nlisten = [127.0.0.1]:80\n", "listen:");
    expect_refused(f, "[server]\nlisten = 127.0.0.1:80x\n", "listen: port must be");
}

static void test_structure(void **state) {
    fixture *f = *state;
    expect_refused(f, "[server]\n\nfoo = 1\n", "t.conf:3: unknown key 'foo' in [server]");
    expect_refused(f, "; c\n[servers]\nlisten = 127.0.0.1:1\n", "t.conf:3: unknown section [servers]");
    expect_refused(f, "listen = 127.0.0.1:1\n", "t.conf:1: 'listen' is outside any [section]");
    expect_refused(f, "[server]\nthreads = 1\nthreads = 2\n", "t.conf:3: threads: set twice");
    expect_refused(f, "[server\n", "t.conf:1: syntax error");
    /* the first error wins, with its own line */
    expect_refused(f, "[server]\nthreads = 1\nbad = 1\nworse = 2\n", "t.conf:3: unknown key 'bad'");
    expect_refused(f, "[server]\nlisten = 0.0.0.0:80\nplain_http = true\n", "plain_http: only allowed when listen is a loopback");
    assert_int_equal(load_text(f, "[server]\nlisten = [::1]:80\nplain_http = true\n"), SP_OK);
    assert_int_equal(spd_config_load("/nonexistent/sealpost.conf", &f->cfg, f->err, sizeof f->err), SP_ERR_IO);
    assert_non_null(strstr(f->err, "cannot open"));
    assert_int_equal(spd_config_load(NULL, &f->cfg, f->err, sizeof f->err), SP_ERR_INVALID_ARGUMENT);
}

/* The lines of the example that set (or show, commented out) a key:
 * "key = value" or "; key =", with the section they are in. */
static bool example_has(const char *text, const char *section, const char *key) {
    char header[80];
    snprintf(header, sizeof header, "\n[%s]\n", section);
    const char *start = strstr(text, header);
    if (!start) return false;
    start += strlen(header);
    const char *end = strstr(start, "\n[");
    if (!end) end = start + strlen(start);
    size_t klen = strlen(key);
    for (const char *line = start; line < end;) {
        const char *nl = strchr(line, '\n');
        if (!nl) nl = end;
        const char *p = line;
        if (*p == ';') p++;
        while (*p == ' ') p++;
        if (strncmp(p, key, klen) == 0 && p[klen] == ' ' && p[klen + 1] == '=') return true;
        line = nl + 1;
    }
    return false;
}

static void test_example_matches_table(void **state) {
    fixture *f = *state;
    const char *src = getenv("SP_SOURCE_DIR");
    assert_non_null(src);
    char path[1024];
    snprintf(path, sizeof path, "%s/sealpost.conf.example", src);
    size_t len = 0;
    char *text = sp_test_read_file(path, &len);
    assert_non_null(text);
    /* table → example: every entry, in its section, after its help text */
    for (size_t i = 0; i < spd_config_entry_count(); i++) {
        const spd_config_info *e = spd_config_entry(i);
        if (!example_has(text, e->section, e->key)) fail_msg("[%s] %s is missing from the example", e->section, e->key);
        if (!strstr(text, e->help)) fail_msg("the help of %s is missing from the example", e->key);
    }
    assert_null(spd_config_entry(spd_config_entry_count()));
    /* example → table: every key line names an entry of its section */
    char section[64] = "";
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
        } else {
            char *p = line;
            if (*p == ';') p++;
            while (*p == ' ') p++;
            size_t klen = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
            if (klen > 0 && p[klen] == ' ' && p[klen + 1] == '=') {
                bool known = false;
                for (size_t i = 0; i < spd_config_entry_count(); i++) {
                    const spd_config_info *e = spd_config_entry(i);
                    known = known || (strcmp(e->section, section) == 0 && strlen(e->key) == klen &&
                                      strncmp(e->key, p, klen) == 0);
                }
                if (!known) fail_msg("the example sets [%s] %.*s, which the table does not know", section, (int)klen, p);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    /* and it loads as it is */
    if (spd_config_load(path, &f->cfg, f->err, sizeof f->err) != SP_OK) fail_msg("example: %s", f->err);
}

/* [callbacks] and [server] public_url: defaults, bounds, URL rules. */
static void test_callbacks(void **state) {
    fixture *f = *state;
    assert_int_equal(load_text(f, "; nothing set\n"), SP_OK);
    assert_int_equal(f->cfg.callbacks_max_body, 256u << 10);
    assert_int_equal(f->cfg.callbacks_tolerance_s, 300);
    assert_int_equal(f->cfg.callbacks_keep_s, 5 * 86400);
    assert_int_equal(f->cfg.callbacks_allow.count, 2); /* everyone, both families */
    assert_int_equal(f->cfg.callbacks_allow.entries[0].prefix, 0);
    assert_string_equal(f->cfg.public_url, "");
    assert_int_equal(load_text(f, "[callbacks]\nmax_body = 1M\ntolerance = 1d\nkeep = 4d\nallow = 192.0.2.0/24\n"
                                  "[server]\npublic_url = https://sp.example.com/base//\n"),
                     SP_OK);
    assert_int_equal(f->cfg.callbacks_max_body, 1u << 20);
    assert_int_equal(f->cfg.callbacks_tolerance_s, 86400);
    assert_int_equal(f->cfg.callbacks_keep_s, 4 * 86400);
    assert_int_equal(f->cfg.callbacks_allow.count, 1);
    assert_string_equal(f->cfg.public_url, "https://sp.example.com/base");
    static const char *const bad[][2] = {
        {"[callbacks]\nmax_body = 1025K\n", "max_body: must be between 1024 and 1048576"},
        {"[callbacks]\nmax_body = 1023\n", "max_body: must be between 1024"},
        {"[callbacks]\nkeep = 3d\n", "keep: must be between 345600 and 7776000 seconds"},
        {"[callbacks]\nkeep = 91d\n", "keep: must be between"},
        {"[callbacks]\ntolerance = 0s\n", "tolerance: must be between 1 and 86400 seconds"},
        {"[callbacks]\nallow = 10.0.0.0/33\n", "allow:"},
        {"[callbacks]\nnope = 1\n", "unknown key 'nope' in [callbacks]"},
        {"[server]\npublic_url = ftp://sp.example.com\n", "public_url: must be an http(s) URL"},
        {"[server]\npublic_url = https://\n", "public_url: must be an http(s) URL"},
        {"[server]\npublic_url = https://sp.example.com/?a=1\n", "public_url: must be an http(s) URL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(load_text(f, bad[i][0]), SP_ERR_BAD_CONFIG);
        if (!strstr(f->err, bad[i][1])) fail_msg("%s: got '%s'", bad[i][0], f->err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_and_derived_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_structure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_matches_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
