/*
 * Callbacks and the state file: the Standard Webhooks retry schedule (and
 * its scale), the three body formats checked by libsealpost's own callback
 * parser (what the platform runs), and the durable queue: due times,
 * reschedule, dequeue, depth, a restart in between, bodies encrypted at
 * rest, webhook-ids kept for the window, message routes and reply matching
 * by the number's tag.
 */
#include "sp_test_util.h"

#include "relay.h"

static void test_schedule(void **state) {
    (void)state;
    static const int64_t want_s[] = {0, 5, 300, 1800, 7200, 18000, 36000, 36000};
    for (unsigned i = 0; i < 8; i++) assert_int_equal(relay_schedule_delay_ms(i, 1), want_s[i] * 1000);
    assert_int_equal(relay_schedule_delay_ms(8, 1), -1);
    assert_int_equal(relay_schedule_delay_ms(100, 1), -1);
    assert_int_equal(relay_schedule_delay_ms(1, 0.01), 50);
    assert_int_equal(relay_schedule_delay_ms(2, 0.01), 3000);
    assert_int_equal(relay_schedule_delay_ms(1, 0), 5000); /* nonsense scales mean 1 */
    assert_int_equal(relay_schedule_delay_ms(1, 7), 5000);
    /* eight attempts in all, spanning a bit over 27 h */
    int64_t total = 0;
    for (unsigned i = 0; relay_schedule_delay_ms(i, 1) >= 0; i++) total += relay_schedule_delay_ms(i, 1);
    assert_int_equal(total, (5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000) * 1000LL);
}

typedef struct seen_events {
    sp_callback_event ev[4];
    char text[4][64];
    char from[4][40];
    size_t n;
} seen_events;

static sp_error collect(void *arg, const sp_callback_event *e) {
    seen_events *s = arg;
    if (s->n >= 4) return SP_ERR_TOO_LARGE;
    s->ev[s->n] = *e;
    snprintf(s->text[s->n], sizeof s->text[0], "%.*s", (int)e->text_len, e->text ? e->text : "");
    snprintf(s->from[s->n], sizeof s->from[0], "%.*s", (int)e->from_len, e->from ? e->from : "");
    s->n++;
    return SP_OK;
}

static seen_events parse_body(const char *body, size_t len) {
    seen_events s;
    memset(&s, 0, sizeof s);
    assert_ok(sp_callback_parse((const uint8_t *)body, len, SP_CALLBACK_FORMAT_AUTO, collect, &s, NULL));
    return s;
}

static void test_bodies(void **state) {
    (void)state;
    char *b = NULL;
    size_t len = 0;
    assert_ok(relay_cb_email("delivered", "msg_1", 1714000100, 0, &b, &len));
    seen_events s = parse_body(b, len);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_DELIVERED);
    assert_string_equal(s.ev[0].message_id, "msg_1");
    assert_int_equal(s.ev[0].ts_ms, 1714000100000LL);
    relay_wiped_free(b, len);
    assert_ok(relay_cb_email("hard_bounce", "msg_2", 1714000100, 550, &b, &len));
    s = parse_body(b, len);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_HARD_BOUNCE);
    assert_int_equal(s.ev[0].code, 550);
    relay_wiped_free(b, len);
    assert_ok(relay_cb_email("soft_bounce", "msg_3", 1714000100, 451, &b, &len));
    s = parse_body(b, len);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_SOFT_BOUNCE);
    relay_wiped_free(b, len);
    assert_ok(relay_cb_sms("failed", "msg_4", 1714000100, 902, NULL, &b, &len));
    s = parse_body(b, len);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_FAILED);
    assert_int_equal(s.ev[0].code, 902);
    relay_wiped_free(b, len);
    assert_ok(relay_cb_sms("replied", "msg_5", 1714000100, 0, "STOP", &b, &len));
    s = parse_body(b, len);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_REPLIED);
    assert_string_equal(s.text[0], "STOP");
    assert_true(s.ev[0].opt_out);
    relay_wiped_free(b, len);
    assert_ok(relay_cb_form_inbound("+15551234567", "Stop please & thanks", 20, "fake0", 1714000200, &b, &len));
    assert_string_equal(b, "from=%2B15551234567&text=Stop+please+%26+thanks&smsc=fake0&ts=1714000200");
    s = parse_body(b, len);
    assert_int_equal(s.ev[0].kind, SP_CALLBACK_INBOUND);
    assert_string_equal(s.from[0], "+15551234567");
    assert_string_equal(s.text[0], "Stop please & thanks");
    assert_true(s.ev[0].opt_out);
    relay_wiped_free(b, len);
    /* a reply whose text is not UTF-8 cannot be a JSON string */
    assert_rc(relay_cb_sms("replied", "msg_6", 1, 0, "\xff\xfe", &b, &len), SP_ERR_INVALID_ARGUMENT);
    assert_null(b);
}

typedef struct fixture {
    char dir[256];
    char path[300];
} fixture;

static int setup(void **state) {
    fixture *f = sp_test_fixture_new(sizeof *f, offsetof(fixture, dir), sizeof f->dir, "relaystate");
    if (!f) return -1;
    snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    return sp_test_fixture_free(f, f->dir);
}

static void test_queue(void **state) {
    fixture *f = *state;
    relay_state *st = NULL;
    assert_ok(relay_state_open(f->path, &st));
    assert_int_equal(sp_test_file_mode(f->path) & 0777, 0600);
    const char *secret_text = "from=%2B15550001111&text=my+secret+words";
    assert_ok(relay_state_enqueue(st, "cb_1", "https://p.example/cb/in", (const uint8_t *)secret_text,
                                  strlen(secret_text), 1000));
    assert_ok(relay_state_enqueue(st, "cb_2", "https://p.example/cb/dlr", (const uint8_t *)"[]", 2, 5000));
    assert_rc(relay_state_enqueue(st, "cb_1", "https://p.example/cb/in", (const uint8_t *)"x", 1, 1), SP_ERR_STORE);
    int64_t depth = 0;
    assert_ok(relay_state_queue_depth(st, &depth));
    assert_int_equal(depth, 2);
    relay_queued q[4];
    size_t n = 9;
    assert_ok(relay_state_due(st, 999, q, 4, &n));
    assert_int_equal(n, 0);
    assert_ok(relay_state_due(st, 1000, q, 4, &n));
    assert_int_equal(n, 1);
    assert_string_equal(q[0].id, "cb_1");
    assert_string_equal(q[0].url, "https://p.example/cb/in");
    assert_int_equal(q[0].body_len, strlen(secret_text));
    assert_memory_equal(q[0].body, secret_text, q[0].body_len);
    assert_int_equal(q[0].attempt, 0);
    relay_queued_clear(&q[0]);
    assert_ok(relay_state_reschedule(st, "cb_1", 1, 6000));
    assert_ok(relay_state_due(st, 5000, q, 4, &n));
    assert_int_equal(n, 1);
    assert_string_equal(q[0].id, "cb_2");
    relay_queued_clear(&q[0]);
    assert_ok(relay_state_dequeue(st, "cb_2"));
    relay_state_close(st);
    /* a restart: the queue is still there */
    assert_ok(relay_state_open(f->path, &st));
    assert_ok(relay_state_due(st, 10000, q, 4, &n));
    assert_int_equal(n, 1);
    assert_string_equal(q[0].id, "cb_1");
    assert_int_equal(q[0].attempt, 1);
    assert_memory_equal(q[0].body, secret_text, q[0].body_len);
    relay_queued_clear(&q[0]);
    relay_state_close(st);
    /* nothing of the body in the file */
    size_t len = 0;
    char *raw = sp_test_read_file(f->path, &len);
    assert_non_null(raw);
    for (size_t i = 0; i + 6 <= len; i++) assert_false(memcmp(raw + i, "secret", 6) == 0);
    free(raw);
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    raw = access(wal, F_OK) == 0 ? sp_test_read_file(wal, &len) : NULL;
    for (size_t i = 0; raw && i + 6 <= len; i++) assert_false(memcmp(raw + i, "secret", 6) == 0);
    free(raw);
}

static void test_seen_and_routes(void **state) {
    fixture *f = *state;
    relay_state *st = NULL;
    assert_ok(relay_state_open(f->path, &st));
    bool seen = true;
    assert_ok(relay_state_seen(st, "msg_a", 1000, 400, &seen));
    assert_false(seen);
    assert_ok(relay_state_remember(st, "msg_a", 1000));
    assert_ok(relay_state_seen(st, "msg_a", 1400, 400, &seen));
    assert_true(seen);
    assert_ok(relay_state_seen(st, "msg_a", 1401, 400, &seen)); /* past the window */
    assert_false(seen);
    uint8_t t1[32], t2[32], t3[32];
    assert_ok(relay_state_phone_tag(st, "+15551230001", t1));
    assert_ok(relay_state_phone_tag(st, "15551230001", t2)); /* Kannel's %p drops the + */
    assert_ok(relay_state_phone_tag(st, "15551230002", t3));
    assert_memory_equal(t1, t2, 32);
    assert_memory_not_equal(t1, t3, 32);
    char tag1[RELAY_DLR_TAG_CHARS + 1], tag2[RELAY_DLR_TAG_CHARS + 1];
    assert_ok(relay_state_dlr_tag(st, "msg_s1", tag1));
    assert_ok(relay_state_dlr_tag(st, "msg_s2", tag2));
    assert_int_equal(strlen(tag1), RELAY_DLR_TAG_CHARS);
    assert_int_equal(strspn(tag1, "0123456789abcdef"), RELAY_DLR_TAG_CHARS);
    assert_string_not_equal(tag1, tag2);
    bool handed = true;
    assert_ok(relay_state_handed(st, "msg_s1", &handed));
    assert_false(handed);
    assert_ok(relay_state_message_put(st, "msg_s1", RELAY_KIND_SMS, "https://p/cb/d", "https://p/cb/i", t1, 2000));
    assert_ok(relay_state_message_put(st, "msg_s2", RELAY_KIND_SMS, "https://p/cb/d2", "", t1, 2001));
    assert_ok(relay_state_message_put(st, "msg_e1", RELAY_KIND_EMAIL, "", "", NULL, 2002));
    assert_ok(relay_state_handed(st, "msg_s1", &handed));
    assert_true(handed);
    char dlr[128], in[128], id[80];
    assert_ok(relay_state_message_get(st, "msg_s1", dlr, sizeof dlr, in, sizeof in));
    assert_string_equal(dlr, "https://p/cb/d");
    assert_string_equal(in, "https://p/cb/i");
    assert_rc(relay_state_message_get(st, "nope", dlr, sizeof dlr, in, sizeof in), SP_ERR_NOT_FOUND);
    assert_ok(relay_state_last_to(st, t2, id, sizeof id, in, sizeof in));
    assert_string_equal(id, "msg_s2"); /* the latest message to that number */
    assert_rc(relay_state_last_to(st, t3, id, sizeof id, in, sizeof in), SP_ERR_NOT_FOUND);
    assert_ok(relay_state_prune(st, 2001 + 10, 10));
    assert_rc(relay_state_message_get(st, "msg_s1", dlr, sizeof dlr, in, sizeof in), SP_ERR_NOT_FOUND);
    assert_ok(relay_state_message_get(st, "msg_s2", dlr, sizeof dlr, in, sizeof in));
    relay_state_close(st);
}

static void test_open_failures(void **state) {
    fixture *f = *state;
    relay_state *st = NULL;
    char path[400];
    snprintf(path, sizeof path, "%s/missing-dir/state.db", f->dir);
    assert_int_not_equal(relay_state_open(path, &st), SP_OK);
    assert_null(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seen_and_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
