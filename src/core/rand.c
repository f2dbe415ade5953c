/*
 * Randomness for IVs, keys and ids, from the OS CSPRNG (getrandom).
 *
 * One getrandom call costs far more than a 64-byte GCM seal, so each thread
 * keeps a buffer filled in bulk and hands out slices, wiping each slice as it
 * goes so no byte is handed out twice. A forked child must not replay its
 * parent's buffer: pthread_atfork bumps a generation counter in the child,
 * and a thread whose buffer is of an older generation throws it away.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>

#include "core/sp_core.h"

#define SP_RAND_POOL 4096

typedef struct {
    uint8_t bytes[SP_RAND_POOL];
    size_t used; /* bytes consumed from the front */
    uint64_t generation;
} sp_rand_pool;

static _Thread_local sp_rand_pool sp_pool = {.used = SP_RAND_POOL};
static atomic_uint_fast64_t sp_fork_generation;
static pthread_once_t sp_rand_once = PTHREAD_ONCE_INIT;

static void sp_rand_after_fork_child(void) { atomic_fetch_add(&sp_fork_generation, 1); }
static void sp_rand_register(void) { (void)pthread_atfork(NULL, NULL, sp_rand_after_fork_child); }

static sp_error sp_getrandom_all(uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return SP_ERR_RANDOM;
        }
        got += (size_t)n;
    }
    return SP_OK;
}

sp_error sp_random(uint8_t *buf, size_t len) {
    SP_ENSURE(buf != NULL || len == 0, SP_ERR_INVALID_ARGUMENT);
    if (len == 0) return SP_OK;
    (void)pthread_once(&sp_rand_once, sp_rand_register);
    uint64_t gen = atomic_load_explicit(&sp_fork_generation, memory_order_relaxed);
    if (sp_pool.generation != gen) {
        sp_wipe(sp_pool.bytes, sizeof sp_pool.bytes);
        sp_pool.used = SP_RAND_POOL;
        sp_pool.generation = gen;
    }
    /* Large requests (keys in bulk) bypass the pool. */
    if (len > SP_RAND_POOL / 4) return sp_getrandom_all(buf, len);
    if (SP_RAND_POOL - sp_pool.used < len) {
        SP_GUARD(sp_getrandom_all(sp_pool.bytes, SP_RAND_POOL));
        sp_pool.used = 0;
    }
    memcpy(buf, sp_pool.bytes + sp_pool.used, len);
    sp_wipe(sp_pool.bytes + sp_pool.used, len);
    sp_pool.used += len;
    return SP_OK;
}
