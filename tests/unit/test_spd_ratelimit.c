/*
 * sealpostd's token buckets, on an injected clock: a burst, then refusals
 * with the wait rounded up, refill over time up to the burst and no
 * further, keys independent of each other, a rate change applying at once,
 * and a table far smaller than the number of keys (eviction keeps memory
 * bounded and never mixes two keys up).
 */
#include "sp_test_util.h"

#include "daemon.h"

static double fake_now(void *arg) { return *(double *)arg; }

typedef struct {
    spd_ratelimit *rl;
    double now;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f || spd_ratelimit_new(1024, &f->rl) != SP_OK) return -1;
    f->now = 1000.0;
    spd_ratelimit_set_clock(f->rl, fake_now, &f->now);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    spd_ratelimit_free(f->rl);
    free(f);
    return 0;
}

static void test_burst_refusal_refill(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 3; i++) assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 1);
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 1);
    f->now += 0.5; /* half a token: still refused, and the wait rounds up */
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 1);
    f->now += 0.5;
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 1);
    /* a long pause refills to the burst, not beyond */
    f->now += 3600;
    for (int i = 0; i < 3; i++) assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "cred-a", 1.0, 3.0), 1);
}

static void test_wait_rounds_up(void **state) {
    fixture *f = *state;
    assert_int_equal(spd_ratelimit_take(f->rl, "slow", 0.1, 1.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "slow", 0.1, 1.0), 10);
    f->now += 2.5;
    assert_int_equal(spd_ratelimit_take(f->rl, "slow", 0.1, 1.0), 8);
    /* a clock going backwards refills nothing */
    f->now -= 100;
    assert_true(spd_ratelimit_take(f->rl, "slow", 0.1, 1.0) >= 8);
    /* never more than a day, whatever the rate */
    assert_int_equal(spd_ratelimit_take(f->rl, "slower", 0.00001, 1.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "slower", 0.00001, 1.0), 86400);
}

static void test_keys_independent(void **state) {
    fixture *f = *state;
    assert_int_equal(spd_ratelimit_take(f->rl, "a", 1.0, 1.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "a", 1.0, 1.0), 1);
    assert_int_equal(spd_ratelimit_take(f->rl, "b", 1.0, 1.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "b", 1.0, 1.0), 1);
}

static void test_rate_change(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 10; i++) assert_int_equal(spd_ratelimit_take(f->rl, "c", 100.0, 10.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "c", 100.0, 10.0), 1);
    /* a smaller burst caps what a refill gives at once */
    f->now += 60;
    assert_int_equal(spd_ratelimit_take(f->rl, "c", 1.0, 2.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "c", 1.0, 2.0), 0);
    assert_int_equal(spd_ratelimit_take(f->rl, "c", 1.0, 2.0), 1);
}

static void test_bounded_table(void **state) {
    (void)state;
    spd_ratelimit *rl = NULL;
    assert_ok(spd_ratelimit_new(16, &rl));
    double now = 0;
    spd_ratelimit_set_clock(rl, fake_now, &now);
    char key[32];
    /* far more keys than slots: each gets its own burst of exactly one */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5000; i++) {
            now += 0.001;
            snprintf(key, sizeof key, "k%d", i);
            unsigned first = spd_ratelimit_take(rl, key, 0.0001, 1.0);
            unsigned second = spd_ratelimit_take(rl, key, 0.0001, 1.0);
            /* just used, so never the evicted one: the second take sees
             * the emptied bucket of this very key */
            assert_true(second >= 1);
            if (round == 0) assert_int_equal(first, 0); /* a key never seen starts full */
        }
    }
    /* the most recent key keeps its state */
    assert_true(spd_ratelimit_take(rl, key, 0.0001, 1.0) >= 1);
    spd_ratelimit_free(rl);
}

static void test_bad_arguments(void **state) {
    fixture *f = *state;
    spd_ratelimit *rl = NULL;
    assert_rc(spd_ratelimit_new(0, &rl), SP_ERR_INVALID_ARGUMENT);
    assert_rc(spd_ratelimit_new(16, NULL), SP_ERR_INVALID_ARGUMENT);
    /* nonsense limits refuse rather than let everything through */
    assert_int_equal(spd_ratelimit_take(f->rl, "z", 0.0, 10.0), 1);
    assert_int_equal(spd_ratelimit_take(f->rl, "z", 1.0, 0.5), 1);
    assert_int_equal(spd_ratelimit_take(NULL, "z", 1.0, 1.0), 1);
    assert_int_equal(spd_ratelimit_take(f->rl, NULL, 1.0, 1.0), 1);
    char huge[300];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    assert_int_equal(spd_ratelimit_take(f->rl, huge, 1.0, 1.0), 1);
    spd_ratelimit_free(NULL);
    /* the real clock works too */
    spd_ratelimit_set_clock(f->rl, NULL, NULL);
    assert_int_equal(spd_ratelimit_take(f->rl, "real", 1.0, 1.0), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_burst_refusal_refill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_rounds_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_change, setup, teardown),
        cmocka_unit_test(test_bounded_table),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
