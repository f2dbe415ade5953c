/*
 * A scripted fake KMS backend for the cmocka programs that drive the KMS
 * dispatcher (tests/unit/test_kms.c) and what sits on it (the vault, in
 * tests/unit/test_vault.c).
 *
 * Both files used to carry their own copy of it: the same open/close/wrap/
 * unwrap callbacks "wrapping" by xoring with a constant, differing only in
 * the backend id, mechanism byte, mask and how failures were scripted. It
 * lives here once, with those differences as parameters:
 *  - the backend table comes from SP_FAKE_KMS_BACKEND(id, options), which a
 *    test file instantiates as its own const sp_kms_backend;
 *  - fake_reset(mechanism, mask) clears the counts and scripts and sets the
 *    mechanism byte and xor mask of the payloads;
 *  - fake_script(times, err): the next `times` attempts, wraps and unwraps
 *    alike, fail with err (-1: all of them) before they succeed again;
 *  - fake_answer(wrap_rc, unwrap_rc): standing answers, one per operation,
 *    given by every call until changed (an outage, a revocation, or an
 *    asymmetric master key whose unwrap alone is gone); they take precedence
 *    over fake_script;
 *  - fake.hold_next makes the next unwrap wait, with fake.holding set, until
 *    fake.released: for the tests that need a call to be in flight.
 *
 * The state is one mutex-guarded struct, `fake`, since one test calls the
 * backend from two threads; fake_count reads a counter under the lock.
 * Like sp_test_util.h (include that first) this is a header of static
 * functions, marked unused for the programs that leave some alone.
 */
#ifndef SP_FAKE_KMS_H
#define SP_FAKE_KMS_H

#include <pthread.h>

#include "sp_test_util.h"

#include "kms/sp_kms.h"

#define FAKE_KEY_ID "fake:master-1"

/* What the fake backend does next, and what it was asked. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint8_t mechanism, mask; /* of the payloads it writes and accepts */
    int opens, closes, wraps, unwraps;
    int fail_left; /* attempts that fail with fail_with before they succeed; -1: all */
    sp_error fail_with;
    sp_error wrap_rc, unwrap_rc; /* standing answers; SP_OK: none */
    bool hold_next;              /* the next unwrap waits until released */
    bool holding, released;
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

SP_TEST_HELPER void fake_reset(uint8_t mechanism, uint8_t mask) {
    pthread_mutex_lock(&fake.lock);
    fake.mechanism = mechanism;
    fake.mask = mask;
    fake.opens = fake.closes = fake.wraps = fake.unwraps = 0;
    fake.fail_left = 0;
    fake.fail_with = SP_OK;
    fake.wrap_rc = fake.unwrap_rc = SP_OK;
    fake.hold_next = fake.holding = fake.released = false;
    pthread_mutex_unlock(&fake.lock);
}

SP_TEST_HELPER void fake_script(int times, sp_error err) {
    pthread_mutex_lock(&fake.lock);
    fake.fail_left = times;
    fake.fail_with = err;
    pthread_mutex_unlock(&fake.lock);
}

SP_TEST_HELPER void fake_answer(sp_error wrap_rc, sp_error unwrap_rc) {
    pthread_mutex_lock(&fake.lock);
    fake.wrap_rc = wrap_rc;
    fake.unwrap_rc = unwrap_rc;
    pthread_mutex_unlock(&fake.lock);
}

SP_TEST_HELPER int fake_count(const int *counter) {
    pthread_mutex_lock(&fake.lock);
    int n = *counter;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

/* Called with the lock held: the answer of this attempt, the standing one
 * (`standing`) first, then the script's. */
SP_TEST_HELPER sp_error fake_next_answer(sp_error standing) {
    if (standing != SP_OK) return standing;
    if (fake.fail_left == 0) return SP_OK;
    if (fake.fail_left > 0) fake.fail_left--;
    return fake.fail_with;
}

SP_TEST_HELPER sp_error fake_open(const sp_kms_config *cfg, void **state, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    (void)cfg;
    pthread_mutex_lock(&fake.lock);
    fake.opens++;
    pthread_mutex_unlock(&fake.lock);
    *state = &fake;
    memcpy(key_id, FAKE_KEY_ID, sizeof FAKE_KEY_ID);
    return SP_OK;
}

SP_TEST_HELPER void fake_close(void *state) {
    assert_ptr_equal(state, &fake);
    pthread_mutex_lock(&fake.lock);
    fake.closes++;
    pthread_mutex_unlock(&fake.lock);
}

/* "Wraps" by xoring with the mask: the dispatcher neither knows nor cares. */
SP_TEST_HELPER sp_error fake_wrap(void *state, const uint8_t dek[SP_KEY_BYTES], uint8_t *mechanism, uint8_t *payload,
                                  size_t cap, size_t *payload_len) {
    (void)state;
    pthread_mutex_lock(&fake.lock);
    fake.wraps++;
    sp_error rc = fake_next_answer(fake.wrap_rc);
    uint8_t mech = fake.mechanism, mask = fake.mask;
    pthread_mutex_unlock(&fake.lock);
    if (rc != SP_OK) return rc;
    if (cap < SP_KEY_BYTES) return SP_ERR_BUFFER_TOO_SMALL;
    for (size_t i = 0; i < SP_KEY_BYTES; i++) payload[i] = dek[i] ^ mask;
    *mechanism = mech;
    *payload_len = SP_KEY_BYTES;
    return SP_OK;
}

SP_TEST_HELPER sp_error fake_unwrap(void *state, uint8_t mechanism, const uint8_t *payload, size_t payload_len,
                                    uint8_t dek[SP_KEY_BYTES]) {
    (void)state;
    pthread_mutex_lock(&fake.lock);
    fake.unwraps++;
    if (fake.hold_next) {
        fake.hold_next = false;
        fake.holding = true;
        pthread_cond_broadcast(&fake.cond);
        while (!fake.released) pthread_cond_wait(&fake.cond, &fake.lock);
        fake.holding = false;
    }
    sp_error rc = fake_next_answer(fake.unwrap_rc);
    uint8_t mech = fake.mechanism, mask = fake.mask;
    pthread_mutex_unlock(&fake.lock);
    if (rc != SP_OK) return rc;
    if (mechanism != mech || payload_len != SP_KEY_BYTES) return SP_ERR_AUTH;
    for (size_t i = 0; i < SP_KEY_BYTES; i++) dek[i] = payload[i] ^ mask;
    return SP_OK;
}

/* The backend table over the callbacks above, for a const sp_kms_backend:
 * its id byte and the options it takes besides the common ones (or NULL). */
#define SP_FAKE_KMS_BACKEND(id_, options_)                                                                     \
    {                                                                                                          \
        .name = "fake", .id = (id_), .options = (options_), .open = fake_open, .close = fake_close,            \
        .wrap = fake_wrap, .unwrap = fake_unwrap, .describe = NULL,                                            \
    }

#endif
