/*
 * Structured logs: every line is one JSON object (parsed back with
 * jansson), strings are escaped so no value can break the line (quotes,
 * newlines, control bytes; invalid UTF-8 becomes U+FFFD per bad byte), bad
 * keys are dropped and counted, long lines are cut but stay valid and say
 * so, the level filter holds, the file is private, and concurrent writers
 * never interleave inside a line.
 */
#include <math.h>
#include <pthread.h>

#include "sp_test_util.h"

typedef struct {
    char dir[256];
    char path[300];
} log_fixture;

static int setup(void **state) {
    log_fixture *f = SP_TEST_FIXTURE_NEW(log_fixture, dir, "sp-log");
    if (f == NULL) return -1;
    if (snprintf(f->path, sizeof f->path, "%s/app.log", f->dir) >= (int)sizeof f->path) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    log_fixture *f = *state;
    sp_log_close();
    return sp_test_fixture_free(f, f->dir);
}

/* The file's lines, each checked to be one JSON object ending in "\n";
 * returns how many and hands the parsed objects back (caller decrefs). */
static size_t read_lines(const char *path, json_t **out, size_t cap) {
    size_t len = 0;
    char *text = sp_test_read_file(path, &len);
    size_t n = 0;
    char *p = text;
    while (*p) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        assert_true((size_t)(nl - p) + 1 <= SP_LOG_MAX_LINE);
        json_error_t err;
        json_t *obj = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &err);
        if (obj == NULL) fail_msg("not JSON (%s): %.*s", err.text, (int)(nl - p), p);
        assert_true(json_is_object(obj));
        if (n < cap) {
            out[n] = obj;
        } else {
            json_decref(obj);
        }
        n++;
        p = nl + 1;
    }
    free(text);
    return n;
}

static void free_lines(json_t **lines, size_t n) {
    for (size_t i = 0; i < n; i++) json_decref(lines[i]);
}

static void test_fields_and_format(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_DEBUG));
    sp_log_field fields[] = {
        SP_LOG_S("tenant", "acme"), SP_LOG_I("count", -42), SP_LOG_B("ok", true),
        SP_LOG_D("secs", 0.25),     SP_LOG_D("nan", NAN),   SP_LOG_S("nothing", NULL),
        SP_LOG_I("big", INT64_MIN), SP_LOG_D("whole", 3.0),
    };
    sp_log(SP_LOG_INFO, "admin.tenant_create", fields, SP_ARRAY_LEN(fields));
    sp_log(SP_LOG_ERROR, "no.fields", NULL, 0);
    json_t *lines[4];
    size_t n = read_lines(f->path, lines, 4);
    assert_int_equal(n, 2);
    json_t *l = lines[0];
    const char *ts = json_string_value(json_object_get(l, "ts"));
    assert_non_null(ts);
    /* 2026-11-24T01:57:05.123Z */
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[4] == '-' && ts[7] == '-' && ts[10] == 'T' && ts[13] == ':' && ts[16] == ':' && ts[19] == '.' &&
                ts[23] == 'Z');
    assert_string_equal(json_string_value(json_object_get(l, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(l, "event")), "admin.tenant_create");
    assert_string_equal(json_string_value(json_object_get(l, "tenant")), "acme");
    assert_int_equal(json_integer_value(json_object_get(l, "count")), -42);
    assert_true(json_is_true(json_object_get(l, "ok")));
    assert_true(json_real_value(json_object_get(l, "secs")) == 0.25);
    assert_true(json_is_null(json_object_get(l, "nan")));
    assert_true(json_is_null(json_object_get(l, "nothing")));
    assert_true(json_integer_value(json_object_get(l, "big")) == INT64_MIN);
    assert_int_equal(json_integer_value(json_object_get(l, "whole")), 3);
    assert_null(json_object_get(l, "truncated"));
    assert_string_equal(json_string_value(json_object_get(lines[1], "level")), "error");
    assert_int_equal(json_object_size(lines[1]), 3);
    free_lines(lines, n);
}

static void test_escaping(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    const char *nasty = "q\"b\\s/n\nr\rt\tc\x01\x1f\x7f" "end";
    /* invalid UTF-8: a lone continuation, an overlong '/', a surrogate, a
     * sequence cut short, a byte that never starts one; then valid text */
    const char *bad_utf8 = "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82" "e\xff" "f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    sp_log_field fields[] = {SP_LOG_S("nasty", nasty), SP_LOG_S("utf8", bad_utf8)};
    sp_log(SP_LOG_WARN, "evil\"event\n", fields, 2);
    size_t len = 0;
    char *raw = sp_test_read_file(f->path, &len);
    /* one line: the only newline is the last byte; nothing below 0x20 raw */
    assert_ptr_equal(strchr(raw, '\n'), raw + len - 1);
    for (size_t i = 0; i + 1 < len; i++) assert_true((unsigned char)raw[i] >= 0x20 && raw[i] != 0x7f);
    assert_non_null(strstr(raw, "\\u0001\\u001f\\u007f"));
    free(raw);
    json_t *lines[2];
    assert_int_equal(read_lines(f->path, lines, 2), 1);
    assert_string_equal(json_string_value(json_object_get(lines[0], "event")), "evil\"event\n");
    assert_string_equal(json_string_value(json_object_get(lines[0], "nasty")), nasty);
    const char *fffd = "\xef\xbf\xbd";
    char want[128];
    assert_true(snprintf(want, sizeof want, "a%sb%s%sc%s%s%sd%s%se%sf\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", fffd,
                         fffd, fffd, fffd, fffd, fffd, fffd, fffd, fffd) < (int)sizeof want);
    assert_string_equal(json_string_value(json_object_get(lines[0], "utf8")), want);
    free_lines(lines, 1);
}

static void test_bad_keys_dropped(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    sp_log_field fields[] = {
        SP_LOG_S("Upper", "x"), SP_LOG_S("a-b", "x"),  SP_LOG_S("", "x"),      SP_LOG_S(NULL, "x"),
        SP_LOG_S("ts", "x"),    SP_LOG_S("level", "x"), SP_LOG_S("a\"b", "x"), SP_LOG_S("good.key_1", "y"),
    };
    sp_log(SP_LOG_INFO, "e", fields, SP_ARRAY_LEN(fields));
    json_t *lines[2];
    assert_int_equal(read_lines(f->path, lines, 2), 1);
    assert_string_equal(json_string_value(json_object_get(lines[0], "good.key_1")), "y");
    assert_int_equal(json_integer_value(json_object_get(lines[0], "dropped_fields")), 7);
    assert_string_equal(json_string_value(json_object_get(lines[0], "level")), "info");
    assert_int_equal(json_object_size(lines[0]), 5);
    free_lines(lines, 1);
}

static void test_truncation(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    /* one long string: cut inside, at a character boundary (multi-byte
     * characters and 6-byte escapes throughout) */
    size_t big = 3 * SP_LOG_MAX_LINE;
    char *value = malloc(big + 1);
    assert_non_null(value);
    for (size_t i = 0; i < big; i++) value[i] = "ab\x01\xc3\xa9"[i % 5];
    value[big] = 0;
    sp_log_field one[] = {SP_LOG_I("first", 1), SP_LOG_S("long", value), SP_LOG_I("after", 2)};
    sp_log(SP_LOG_INFO, "cut.string", one, 3);
    /* many small fields: those that fit kept, the rest dropped */
    sp_log_field many[600];
    for (size_t i = 0; i < SP_ARRAY_LEN(many); i++) many[i] = SP_LOG_S("k", "0123456789");
    many[0] = SP_LOG_I("n", 7);
    sp_log(SP_LOG_INFO, "cut.fields", many, SP_ARRAY_LEN(many));
    free(value);

    size_t len = 0;
    char *raw = sp_test_read_file(f->path, &len);
    char *nl = strchr(raw, '\n');
    assert_non_null(nl);
    assert_true((size_t)(nl - raw) + 1 <= SP_LOG_MAX_LINE);
    assert_true((size_t)(nl - raw) + 1 > SP_LOG_MAX_LINE - 32); /* cut near the cap, not early */
    free(raw);

    json_t *lines[2];
    /* duplicate "k" keys in the second line: parse that one without the flag */
    json_error_t err;
    char *text = sp_test_read_file(f->path, &len);
    char *second = strchr(text, '\n') + 1;
    json_t *l2 = json_loadb(second, strlen(second), 0, &err);
    assert_non_null(l2);
    assert_true(json_is_true(json_object_get(l2, "truncated")));
    assert_int_equal(json_integer_value(json_object_get(l2, "n")), 7);
    /* the last field that started is cut inside its value */
    const char *k = json_string_value(json_object_get(l2, "k"));
    assert_non_null(k);
    assert_memory_equal(k, "0123456789", strlen(k));
    json_decref(l2);
    *strchr(text, '\n') = 0;
    lines[0] = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    free(text);
    assert_non_null(lines[0]);
    assert_true(json_is_true(json_object_get(lines[0], "truncated")));
    assert_int_equal(json_integer_value(json_object_get(lines[0], "first")), 1);
    assert_null(json_object_get(lines[0], "after"));
    const char *cut = json_string_value(json_object_get(lines[0], "long"));
    assert_non_null(cut);
    assert_true(strlen(cut) > 1000);
    free_lines(lines, 1);
}

static void test_level_filter(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_WARN));
    assert_false(sp_log_enabled(SP_LOG_DEBUG));
    assert_false(sp_log_enabled(SP_LOG_INFO));
    assert_true(sp_log_enabled(SP_LOG_WARN));
    assert_true(sp_log_enabled(SP_LOG_ERROR));
    assert_false(sp_log_enabled((sp_log_level)7));
    sp_log(SP_LOG_DEBUG, "d", NULL, 0);
    sp_log(SP_LOG_INFO, "i", NULL, 0);
    sp_log(SP_LOG_WARN, "w", NULL, 0);
    sp_log(SP_LOG_ERROR, "e", NULL, 0);
    sp_log((sp_log_level)-1, "bad", NULL, 0);
    json_t *lines[4];
    size_t n = read_lines(f->path, lines, 4);
    assert_int_equal(n, 2);
    assert_string_equal(json_string_value(json_object_get(lines[0], "event")), "w");
    assert_string_equal(json_string_value(json_object_get(lines[1], "event")), "e");
    free_lines(lines, n);

    sp_log_level lv;
    assert_ok(sp_log_level_parse("debug", &lv));
    assert_int_equal(lv, SP_LOG_DEBUG);
    assert_ok(sp_log_level_parse("error", &lv));
    assert_int_equal(lv, SP_LOG_ERROR);
    assert_rc(sp_log_level_parse("INFO", &lv), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_log_level_parse("", &lv), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_log_open(f->path, (sp_log_level)4), SP_ERR_INVALID_ARGUMENT);
}

static void test_file_private(void **state) {
    log_fixture *f = *state;
    mode_t old = umask(0);
    sp_error rc = sp_log_open(f->path, SP_LOG_INFO);
    umask(old);
    assert_ok(rc);
    assert_int_equal(sp_test_file_mode(f->path), 0600);
    sp_log(SP_LOG_INFO, "one", NULL, 0);
    /* reopening appends */
    assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    sp_log(SP_LOG_INFO, "two", NULL, 0);
    json_t *lines[3];
    assert_int_equal(read_lines(f->path, lines, 3), 2);
    free_lines(lines, 2);

    char other[400], link[400];
    assert_true(snprintf(other, sizeof other, "%s/open.log", f->dir) < (int)sizeof other);
    assert_true(snprintf(link, sizeof link, "%s/link.log", f->dir) < (int)sizeof link);
    sp_test_write_file(other, "", 0, 0644);
    assert_rc(sp_log_open(other, SP_LOG_INFO), SP_ERR_INSECURE_PERMISSIONS);
    assert_int_equal(symlink(f->path, link), 0);
    assert_rc(sp_log_open(link, SP_LOG_INFO), SP_ERR_IO);
    assert_rc(sp_log_open(f->dir, SP_LOG_INFO), SP_ERR_IO);
    char missing[400];
    assert_true(snprintf(missing, sizeof missing, "%s/no/such.log", f->dir) < (int)sizeof missing);
    assert_rc(sp_log_open(missing, SP_LOG_INFO), SP_ERR_NOT_FOUND);
    /* the failed opens left the sink alone */
    sp_log(SP_LOG_INFO, "three", NULL, 0);
    assert_int_equal(read_lines(f->path, lines, 3), 3);
    free_lines(lines, 3);
    /* "-" and NULL: stderr, and the file sees no more */
    assert_ok(sp_log_open("-", SP_LOG_ERROR));
    sp_log(SP_LOG_INFO, "filtered", NULL, 0);
    assert_int_equal(read_lines(f->path, lines, 3), 3);
    free_lines(lines, 3);
}

#define WRITERS 4
#define LINES_EACH 2000

static void *writer(void *arg) {
    char value[1500];
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LINES_EACH; i++) {
        size_t n = (size_t)(i * 37 % (int)(sizeof value - 1));
        memset(value, 'a' + id, n);
        value[n] = 0;
        sp_log_field fields[] = {SP_LOG_I("writer", id), SP_LOG_I("i", i), SP_LOG_S("pad", value)};
        sp_log(SP_LOG_INFO, "load", fields, 3);
    }
    return NULL;
}

static void test_concurrent_writers(void **state) {
    log_fixture *f = *state;
    assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++) assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i), 0);
    /* swap the sink to the same file meanwhile: no line may be lost or torn */
    for (int i = 0; i < 50; i++) assert_ok(sp_log_open(f->path, SP_LOG_INFO));
    for (int i = 0; i < WRITERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    json_t *none[1];
    size_t n = read_lines(f->path, none, 0);
    assert_int_equal(n, WRITERS * LINES_EACH);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields_and_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
