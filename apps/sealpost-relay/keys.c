/*
 * The provider key file (what `sealpost keys import` writes): its versions
 * open what the platform sends and its active version seals the callbacks.
 * A rotation on the platform's side ends with a new import into this file,
 * so the relay watches it (size, mtime, inode; looked at no more than once
 * a second) and reloads it without a restart. A file that fails to load
 * mid-write keeps the previous keys, and the next look tries again.
 *
 * sp_wire is one per thread, so wires come from a small pool: a caller
 * takes one for a request and gives it back; a wire built from an older
 * generation of the file is rebuilt when it is next taken.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "relay.h"

#define POOL_MAX 128

typedef struct pooled {
    sp_wire *wire;
    uint64_t generation;
    bool in_use;
} pooled;

struct relay_keys {
    char path[RELAY_MAX_PATH];
    size_t max_body;
    unsigned tolerance_s;
    pthread_mutex_t lock;
    sp_keyfile *file;
    uint64_t generation;
    struct stat seen;
    int64_t checked_ms;
    pooled pool[POOL_MAX];
};

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static sp_error load(relay_keys *k) {
    struct stat st;
    if (stat(k->path, &st) != 0) return SP_ERR_IO;
    sp_keyfile *kf = NULL;
    sp_error rc = sp_keyfile_load(k->path, &kf);
    if (rc != SP_OK) return rc;
    bool active = false;
    for (size_t i = 0; i < sp_keyfile_count(kf); i++) {
        const char *v;
        const sp_key *key;
        sp_key_state state;
        if (sp_keyfile_entry(kf, i, &v, &key, &state) == SP_OK && state == SP_KEY_STATE_ACTIVE) active = true;
    }
    if (!active) {
        sp_keyfile_free(kf);
        return SP_ERR_BAD_KEYFILE;
    }
    sp_keyfile_free(k->file);
    k->file = kf;
    k->seen = st;
    k->generation++;
    return SP_OK;
}

sp_error relay_keys_open(const char *path, size_t max_body, unsigned tolerance_s, relay_keys **out) {
    *out = NULL;
    relay_keys *k = calloc(1, sizeof *k);
    if (!k) return SP_ERR_NO_MEMORY;
    snprintf(k->path, sizeof k->path, "%s", path);
    k->max_body = max_body < SP_WIRE_MAX_BODY_LIMIT ? max_body : SP_WIRE_MAX_BODY_LIMIT;
    k->tolerance_s = tolerance_s;
    pthread_mutex_init(&k->lock, NULL);
    sp_error rc = load(k);
    if (rc != SP_OK) {
        relay_keys_close(k);
        return rc;
    }
    k->checked_ms = relay_now_ms();
    *out = k;
    return SP_OK;
}

void relay_keys_close(relay_keys *k) {
    if (!k) return;
    for (size_t i = 0; i < POOL_MAX; i++) sp_wire_free(k->pool[i].wire);
    sp_keyfile_free(k->file);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

void relay_keys_refresh(relay_keys *k, bool force) {
    int64_t now = relay_now_ms();
    pthread_mutex_lock(&k->lock);
    if (force || now - k->checked_ms >= 1000) {
        k->checked_ms = now;
        struct stat st;
        if (stat(k->path, &st) == 0 && !same_file(&st, &k->seen)) {
            sp_error rc = load(k);
            sp_log_field f[] = {SP_LOG_S("result", sp_error_name(rc)), SP_LOG_I("generation", k->generation)};
            sp_log(rc == SP_OK ? SP_LOG_INFO : SP_LOG_ERROR, rc == SP_OK ? "keys.reloaded" : "keys.reload_failed",
                   f, 2);
        }
    }
    pthread_mutex_unlock(&k->lock);
}

static sp_error build(relay_keys *k, sp_wire **out) {
    sp_wire *w = NULL;
    sp_error rc = sp_wire_new(&w);
    if (rc == SP_OK) rc = sp_wire_set_limits(w, k->max_body, k->tolerance_s);
    const char *active = NULL;
    for (size_t i = 0; rc == SP_OK && i < sp_keyfile_count(k->file); i++) {
        const char *v;
        const sp_key *key;
        sp_key_state state;
        rc = sp_keyfile_entry(k->file, i, &v, &key, &state);
        if (rc == SP_OK) rc = sp_wire_add_key(w, v, key, false);
        if (state == SP_KEY_STATE_ACTIVE) active = v;
    }
    if (rc == SP_OK && active) rc = sp_wire_set_active(w, active);
    if (rc != SP_OK) {
        sp_wire_free(w);
        return rc;
    }
    *out = w;
    return SP_OK;
}

sp_error relay_keys_acquire(relay_keys *k, sp_wire **out) {
    *out = NULL;
    relay_keys_refresh(k, false);
    pthread_mutex_lock(&k->lock);
    pooled *pick = NULL;
    for (size_t i = 0; i < POOL_MAX && !pick; i++)
        if (!k->pool[i].in_use && k->pool[i].wire && k->pool[i].generation == k->generation) pick = &k->pool[i];
    for (size_t i = 0; i < POOL_MAX && !pick; i++)
        if (!k->pool[i].in_use) pick = &k->pool[i];
    sp_error rc = SP_ERR_UNAVAILABLE;
    if (pick) {
        rc = SP_OK;
        if (!pick->wire || pick->generation != k->generation) {
            sp_wire_free(pick->wire);
            pick->wire = NULL;
            rc = build(k, &pick->wire);
            pick->generation = k->generation;
        }
        if (rc == SP_OK) {
            pick->in_use = true;
            *out = pick->wire;
        }
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

void relay_keys_release(relay_keys *k, sp_wire *w) {
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < POOL_MAX; i++)
        if (k->pool[i].wire == w) k->pool[i].in_use = false;
    pthread_mutex_unlock(&k->lock);
}

void relay_keys_describe(relay_keys *k, char *out, size_t cap) {
    pthread_mutex_lock(&k->lock);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sp_keyfile_count(k->file); i++) {
        const char *v;
        const sp_key *key;
        sp_key_state state;
        if (sp_keyfile_entry(k->file, i, &v, &key, &state) != SP_OK) continue;
        int n = snprintf(out + len, cap - len, "%s%s (%s)", len ? ", " : "", v,
                         state == SP_KEY_STATE_ACTIVE ? "active" : "decrypt-only");
        if (n < 0 || (size_t)n >= cap - len) break;
        len += (size_t)n;
    }
    pthread_mutex_unlock(&k->lock);
}

uint64_t relay_keys_generation(relay_keys *k) {
    pthread_mutex_lock(&k->lock);
    uint64_t g = k->generation;
    pthread_mutex_unlock(&k->lock);
    return g;
}
