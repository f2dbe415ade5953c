/*
 * Token buckets per credential. The table has a fixed number of slots,
 * split into shards with a mutex each so threads rarely wait on one
 * another. A key hashes to a home slot and may live in any of the PROBE
 * slots after it (within its shard); when all of those are taken by other
 * keys, the one used least recently is evicted. Memory is therefore bounded
 * whatever the number of credentials, and an evicted bucket merely starts
 * full again.
 *
 * Buckets refill continuously at per_second up to burst, measured on the
 * monotonic clock (tests inject their own). The rate is passed on every
 * call, so a tenant's new limit applies at its next request.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

#define SHARDS 16
#define PROBE 8
#define KEY_MAX (SP_KEY_VERSION_CHARS + SP_STORE_MAX_TENANT + 2)

typedef struct bucket {
    char key[KEY_MAX + 1];
    bool used;
    double tokens;
    double last; /* when tokens was computed */
} bucket;

typedef struct shard {
    pthread_mutex_t lock;
    bucket *slots;
} shard;

struct spd_ratelimit {
    shard shards[SHARDS];
    size_t per_shard;
    double (*now)(void *arg);
    void *now_arg;
};

static double monotonic_now(void *arg) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

sp_error spd_ratelimit_new(size_t capacity, spd_ratelimit **out) {
    if (!out || capacity == 0 || capacity > (1u << 24)) return SP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    spd_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return SP_ERR_NO_MEMORY;
    rl->per_shard = (capacity + SHARDS - 1) / SHARDS;
    if (rl->per_shard < PROBE) rl->per_shard = PROBE;
    rl->now = monotonic_now;
    for (size_t i = 0; i < SHARDS; i++) {
        rl->shards[i].slots = calloc(rl->per_shard, sizeof(bucket));
        if (!rl->shards[i].slots) {
            for (size_t j = 0; j < i; j++) {
                pthread_mutex_destroy(&rl->shards[j].lock);
                free(rl->shards[j].slots);
            }
            free(rl);
            return SP_ERR_NO_MEMORY;
        }
        pthread_mutex_init(&rl->shards[i].lock, NULL);
    }
    *out = rl;
    return SP_OK;
}

void spd_ratelimit_free(spd_ratelimit *rl) {
    if (!rl) return;
    for (size_t i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&rl->shards[i].lock);
        free(rl->shards[i].slots);
    }
    free(rl);
}

void spd_ratelimit_set_clock(spd_ratelimit *rl, double (*now)(void *arg), void *arg) {
    if (!rl) return;
    rl->now = now ? now : monotonic_now;
    rl->now_arg = now ? arg : NULL;
}

/* FNV-1a: keys are server-made ids, so no need for a keyed hash. */
static uint64_t hash_key(const char *key) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

unsigned spd_ratelimit_take(spd_ratelimit *rl, const char *key, double per_second, double burst) {
    if (!rl || !key || strlen(key) > KEY_MAX) return 1;
    if (!(per_second > 0) || !(burst >= 1)) return 1;
    uint64_t h = hash_key(key);
    shard *sh = &rl->shards[h % SHARDS];
    size_t home = (size_t)((h / SHARDS) % rl->per_shard);

    pthread_mutex_lock(&sh->lock);
    double now = rl->now(rl->now_arg);
    bucket *b = NULL, *free_slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        bucket *c = &sh->slots[(home + i) % rl->per_shard];
        if (!c->used) {
            if (!free_slot) free_slot = c;
            continue;
        }
        if (strcmp(c->key, key) == 0) {
            b = c;
            break;
        }
        if (!oldest || c->last < oldest->last) oldest = c;
    }
    if (!b) {
        b = free_slot ? free_slot : oldest;
        memset(b, 0, sizeof *b);
        memcpy(b->key, key, strlen(key) + 1);
        b->used = true;
        b->tokens = burst;
        b->last = now;
    }
    double elapsed = now - b->last;
    if (elapsed > 0) b->tokens += elapsed * per_second;
    if (b->tokens > burst) b->tokens = burst;
    b->last = now > b->last ? now : b->last;

    unsigned wait = 0;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        double secs = (1.0 - b->tokens) / per_second;
        if (secs > 86400) secs = 86400;
        wait = (unsigned)secs;
        if ((double)wait < secs) wait++; /* rounded up: no libm */
        if (wait < 1) wait = 1;
    }
    pthread_mutex_unlock(&sh->lock);
    return wait;
}
