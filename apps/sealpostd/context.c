/*
 * Per-thread state of sealpostd: the thread's store connection and its
 * contexts of the tenants it served lately (settings, keyring, vault).
 *
 * Neither sp_store nor sp_vault is thread-safe, and both are expensive to
 * make (a connection, a keyring read, DEK unwraps through the tenant's KMS),
 * so each server thread keeps its own, found again on the next request
 * without a lock. A thread holds at most SPD_TENANT_SLOTS tenant contexts;
 * past that, the one used longest ago is closed.
 *
 * A tenant's sp_kms is thread-safe (its breaker is under a mutex, the local
 * backend is read-only after open, PKCS#11 sessions and the KMIP connection
 * are locked by their backends), and opening one can mean an HSM login or a
 * TLS handshake: the process opens it once and every thread's keyring
 * shares it. The shared handles live in a mutex-guarded list, refcounted by
 * the thread contexts; a handle whose tenant was re-created with another
 * KMS config is closed when its last user lets go, the others at
 * spd_context_shutdown.
 *
 * Any admin change bumps app->tenants_generation. A thread that sees it
 * moved re-reads the tenant's row, and keeps its context (and the DEKs its
 * vault has cached) when the settings text and the disabled flag are
 * unchanged, so one PATCH does not make every thread of every tenant unwrap
 * again. A crypto-erase bumps the shared handle's epoch instead, which every
 * thread honours on its next request by closing the vault it has.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"

#define SPD_TENANT_SLOTS 64

/* ---- the process-wide KMS handles ---- */

typedef struct spd_kms_entry {
    struct spd_kms_entry *next;
    char tenant[SP_STORE_MAX_TENANT + 1];
    char *config;            /* wiped on free: may name a PIN file */
    sp_kms *kms;
    unsigned refs;
    bool stale;              /* the tenant now uses another config */
    atomic_uint_fast64_t epoch; /* bumped by a crypto-erase */
} spd_kms_entry;

static pthread_mutex_t spd_kms_lock = PTHREAD_MUTEX_INITIALIZER;
static spd_kms_entry *spd_kms_list;
static sp_kms_stats spd_kms_closed; /* what closed handles counted, so totals never go back */

static void spd_kms_add(sp_kms_stats *sum, const sp_kms_stats *s) {
    sum->calls += s->calls;
    sum->failures += s->failures;
    sum->unavailable += s->unavailable;
    sum->denied += s->denied;
}

/* Under spd_kms_lock. */
static void spd_kms_entry_free(spd_kms_entry *e) {
    sp_kms_stats s;
    sp_kms_get_stats(e->kms, &s);
    spd_kms_add(&spd_kms_closed, &s);
    sp_kms_close(e->kms);
    if (e->config != NULL) {
        sp_wipe(e->config, strlen(e->config));
        free(e->config);
    }
    free(e);
}

/* A referenced handle for the tenant's KMS config, opened on first use. */
static sp_error spd_kms_acquire(spd_app *app, const char *tenant, const char *config, spd_kms_entry **out) {
    sp_error rc = SP_OK;
    pthread_mutex_lock(&spd_kms_lock);
    spd_kms_entry *found = NULL;
    for (spd_kms_entry *e = spd_kms_list; e != NULL; e = e->next) {
        if (e->stale || strcmp(e->tenant, tenant) != 0) continue;
        if (strcmp(e->config, config) == 0) {
            found = e;
        } else {
            e->stale = true; /* re-created with another KMS */
        }
    }
    if (found == NULL) {
        found = calloc(1, sizeof *found);
        size_t clen = strlen(config);
        if (found == NULL || (found->config = malloc(clen + 1)) == NULL) {
            free(found);
            rc = SP_ERR_NO_MEMORY;
            goto done;
        }
        memcpy(found->config, config, clen + 1);
        snprintf(found->tenant, sizeof found->tenant, "%s", tenant);
        /* opened under the lock: a second thread waits instead of logging in
         * to the HSM a second time */
        rc = sp_kms_open(config, &found->kms);
        if (rc != SP_OK) {
            found->kms = NULL;
            spd_kms_entry_free(found);
            goto done;
        }
        if (app->audit != NULL) sp_kms_set_audit(found->kms, app->audit);
        found->next = spd_kms_list;
        spd_kms_list = found;
    }
    found->refs++;
    *out = found;
done:
    pthread_mutex_unlock(&spd_kms_lock);
    return rc;
}

static void spd_kms_release(spd_kms_entry *e) {
    if (e == NULL) return;
    pthread_mutex_lock(&spd_kms_lock);
    e->refs--;
    if (e->refs == 0 && e->stale) {
        for (spd_kms_entry **pp = &spd_kms_list; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        }
        spd_kms_entry_free(e);
    }
    pthread_mutex_unlock(&spd_kms_lock);
}

/* The entry of a tenant, for an erase (no reference taken). */
static void spd_kms_bump_epoch(const char *tenant) {
    pthread_mutex_lock(&spd_kms_lock);
    for (spd_kms_entry *e = spd_kms_list; e != NULL; e = e->next) {
        if (strcmp(e->tenant, tenant) == 0) atomic_fetch_add(&e->epoch, 1);
    }
    pthread_mutex_unlock(&spd_kms_lock);
}

/* ---- per-thread state ---- */

typedef struct spd_slot {
    spd_tenant t;            /* what callers see */
    spd_kms_entry *kms_entry;
    uint64_t epoch;
    char *settings_text;     /* the row as last read, to tell a real change */
    size_t settings_len;
    bool disabled;
    uint64_t last_used;
} spd_slot;

typedef struct spd_thread {
    spd_app *app;
    sp_store *store;
    spd_slot *slots[SPD_TENANT_SLOTS];
    uint64_t tick;
} spd_thread;

static pthread_mutex_t spd_thread_local_lock = PTHREAD_MUTEX_INITIALIZER;

/* Not pthread_once: its routine takes no argument to say which key. */
static bool spd_thread_local_ready(spd_thread_local *tl) {
    int st = atomic_load_explicit(&tl->state, memory_order_acquire);
    if (st == 0) {
        pthread_mutex_lock(&spd_thread_local_lock);
        st = atomic_load_explicit(&tl->state, memory_order_relaxed);
        if (st == 0) {
            st = pthread_key_create(&tl->key, tl->destroy) == 0 ? 1 : -1;
            atomic_store_explicit(&tl->state, st, memory_order_release);
        }
        pthread_mutex_unlock(&spd_thread_local_lock);
    }
    return st == 1;
}

void *spd_thread_local_get(spd_thread_local *tl, size_t size) {
    if (!spd_thread_local_ready(tl)) return NULL;
    void *p = pthread_getspecific(tl->key);
    if (p == NULL) {
        p = calloc(1, size);
        if (p == NULL) return NULL;
        if (pthread_setspecific(tl->key, p) != 0) {
            free(p);
            return NULL;
        }
    }
    return p;
}

void *spd_thread_local_take(spd_thread_local *tl) {
    if (atomic_load_explicit(&tl->state, memory_order_acquire) != 1) return NULL;
    void *p = pthread_getspecific(tl->key);
    (void)pthread_setspecific(tl->key, NULL);
    return p;
}

static void spd_slot_free(spd_slot *s) {
    if (s == NULL) return;
    sp_vault_close(s->t.vault);
    sp_keyring_close(s->t.keyring);
    spd_kms_release(s->kms_entry);
    if (s->settings_text != NULL) {
        sp_wipe(s->settings_text, s->settings_len);
        free(s->settings_text);
    }
    /* the settings hold the KMS config */
    sp_wipe(&s->t.settings, sizeof s->t.settings);
    free(s);
}

static void spd_thread_free(void *p) {
    spd_thread *th = p;
    if (th == NULL) return;
    for (size_t i = 0; i < SPD_TENANT_SLOTS; i++) spd_slot_free(th->slots[i]);
    sp_store_close(th->store);
    free(th);
}

static spd_thread_local spd_thread_state = SPD_THREAD_LOCAL_INIT(spd_thread_free);

static sp_error spd_thread_get(spd_app *app, spd_thread **out) {
    spd_thread *th = spd_thread_local_get(&spd_thread_state, sizeof *th);
    if (th != NULL && th->app != NULL && th->app != app) {
        /* another app in this process (tests): nothing of the old one is valid */
        spd_thread_free(spd_thread_local_take(&spd_thread_state));
        th = spd_thread_local_get(&spd_thread_state, sizeof *th);
    }
    if (th == NULL) return SP_ERR_NO_MEMORY;
    th->app = app;
    *out = th;
    return SP_OK;
}

sp_error spd_store(spd_app *app, sp_store **out) {
    spd_thread *th;
    SPD_TRY(spd_thread_get(app, &th));
    if (th->store == NULL) SPD_TRY(sp_store_open(app->config.store_url, &th->store));
    *out = th->store;
    return SP_OK;
}

/* ---- tenant contexts ---- */

static sp_error spd_slot_open(spd_app *app, const char *tenant_id, const sp_store_tenant *row, spd_slot **out) {
    spd_slot *s = calloc(1, sizeof *s);
    if (s == NULL) return SP_ERR_NO_MEMORY;
    sp_error rc;
    snprintf(s->t.id, sizeof s->t.id, "%s", tenant_id);
    s->disabled = row->disabled;
    s->settings_len = row->settings_len;
    s->settings_text = malloc(row->settings_len + 1);
    SPD_TRY_GOTO(s->settings_text != NULL ? SP_OK : SP_ERR_NO_MEMORY, rc, fail);
    memcpy(s->settings_text, row->settings, row->settings_len);
    s->settings_text[row->settings_len] = 0;
    SPD_TRY_GOTO(spd_settings_parse(row->settings, row->settings_len, &s->t.settings), rc, fail);

    SPD_TRY_GOTO(spd_kms_acquire(app, tenant_id, s->t.settings.kms, &s->kms_entry), rc, fail);
    s->t.kms = s->kms_entry->kms;
    s->epoch = atomic_load(&s->kms_entry->epoch);

    sp_keyring_storage storage;
    SPD_TRY_GOTO(sp_store_keyring_storage(app->config.store_url, tenant_id, &storage), rc, fail);
    SPD_TRY_GOTO(sp_keyring_open_storage(&storage, s->t.kms, &s->t.keyring), rc, fail);

    sp_vault_field fields[SP_VAULT_MAX_PII_FIELDS];
    for (size_t i = 0; i < s->t.settings.n_pii; i++) {
        fields[i].name = s->t.settings.pii[i].name;
        fields[i].kind = s->t.settings.pii[i].kind;
    }
    sp_vault_options opts = {
        .tenant = tenant_id,
        .pii_fields = s->t.settings.n_pii ? fields : NULL,
        .n_pii_fields = s->t.settings.n_pii,
        .dek_lifetime_s = app->config.dek_lifetime_s,
        .cache_ttl_s = app->config.dek_cache_ttl_s,
        .default_country_code = s->t.settings.default_country_code[0] ? s->t.settings.default_country_code : NULL,
        .audit = app->audit,
    };
    SPD_TRY_GOTO(sp_vault_open(&opts, s->t.keyring, &s->t.vault), rc, fail);
    *out = s;
    return SP_OK;
fail:
    spd_slot_free(s);
    return rc;
}

/* A free slot, or else the one used longest ago. */
static size_t spd_slot_victim(const spd_thread *th) {
    size_t victim = 0;
    for (size_t i = 0; i < SPD_TENANT_SLOTS; i++) {
        if (th->slots[i] == NULL) return i;
        if (th->slots[i]->last_used < th->slots[victim]->last_used) victim = i;
    }
    return victim;
}

/* Whether the row says the same as when the slot was made. */
static bool spd_slot_matches(const spd_slot *s, const sp_store_tenant *row) {
    return s->disabled == row->disabled && s->settings_len == row->settings_len &&
           memcmp(s->settings_text, row->settings, row->settings_len) == 0;
}

sp_error spd_tenant_get(spd_app *app, const char *tenant_id, spd_tenant **out) {
    if (app == NULL || tenant_id == NULL || out == NULL || tenant_id[0] == 0 ||
        strlen(tenant_id) > SP_STORE_MAX_TENANT)
        return SP_ERR_INVALID_ARGUMENT;
    spd_thread *th;
    SPD_TRY(spd_thread_get(app, &th));
    uint64_t gen = atomic_load_explicit(&app->tenants_generation, memory_order_acquire);
    size_t slot = SPD_TENANT_SLOTS;
    for (size_t i = 0; i < SPD_TENANT_SLOTS; i++) {
        if (th->slots[i] != NULL && strcmp(th->slots[i]->t.id, tenant_id) == 0) {
            slot = i;
            break;
        }
    }
    spd_slot *s = slot < SPD_TENANT_SLOTS ? th->slots[slot] : NULL;
    if (s != NULL && s->epoch != atomic_load(&s->kms_entry->epoch)) {
        /* crypto-erased since: no cached key of it may be used again */
        spd_slot_free(s);
        th->slots[slot] = s = NULL;
    }
    if (s != NULL && s->t.generation == gen) {
        s->last_used = ++th->tick;
        *out = &s->t;
        return SP_OK;
    }

    sp_store *store;
    SPD_TRY(spd_store(app, &store));
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    sp_error rc = sp_store_tenant_get(store, tenant_id, &row);
    if (rc == SP_OK && row.disabled) rc = SP_ERR_NOT_FOUND;
    if (rc != SP_OK) {
        sp_store_tenant_clear(&row);
        if (s != NULL) {
            spd_slot_free(s);
            th->slots[slot] = NULL;
        }
        return rc;
    }
    if (s != NULL && spd_slot_matches(s, &row)) {
        sp_store_tenant_clear(&row);
        s->t.generation = gen;
        s->last_used = ++th->tick;
        *out = &s->t;
        return SP_OK;
    }
    spd_slot *fresh = NULL;
    rc = spd_slot_open(app, tenant_id, &row, &fresh);
    sp_store_tenant_clear(&row);
    if (rc != SP_OK) return rc;
    if (slot == SPD_TENANT_SLOTS) slot = spd_slot_victim(th);
    spd_slot_free(th->slots[slot]);
    th->slots[slot] = fresh;
    fresh->t.generation = gen;
    fresh->last_used = ++th->tick;
    *out = &fresh->t;
    return SP_OK;
}

void spd_tenant_invalidate(spd_app *app) {
    if (app != NULL) atomic_fetch_add_explicit(&app->tenants_generation, 1, memory_order_release);
}

sp_error spd_tenant_erase_keys(spd_app *app, const char *tenant_id) {
    if (app == NULL || tenant_id == NULL) return SP_ERR_INVALID_ARGUMENT;
    /* a context of its own, not this thread's cached one: a disabled tenant
     * is erased too, and nothing erased stays cached here */
    sp_store *store;
    SPD_TRY(spd_store(app, &store));
    sp_store_tenant row;
    memset(&row, 0, sizeof row);
    sp_error rc = sp_store_tenant_get(store, tenant_id, &row);
    spd_slot *s = NULL;
    if (rc == SP_OK) rc = spd_slot_open(app, tenant_id, &row, &s);
    sp_store_tenant_clear(&row);
    if (rc == SP_OK) rc = sp_vault_erase_tenant(s->t.vault, 0);
    spd_slot_free(s);
    /* every thread drops its vault of the tenant (and the DEKs it cached) on
     * its next request, whether or not this erase got through */
    spd_kms_bump_epoch(tenant_id);
    spd_tenant_invalidate(app);
    return rc;
}

/* A KMIP config with create=1 and no key-id makes a new master key at every
 * open: every thread and process of the tenant would wrap under a key of
 * its own. Once the probe made one, the config names it instead. Other
 * configs are kept as they are. */
static sp_error spd_kms_pin(const char *config, const char *key_id, char *out, size_t cap) {
    static const char kmip[] = "kmip:", create[] = "create=1", uid_prefix[] = "kmip:";
    int n = snprintf(out, cap, "%s", config);
    if (n < 0 || (size_t)n >= cap) return SP_ERR_TOO_LARGE;
    if (strncmp(config, kmip, sizeof kmip - 1) != 0 || strstr(config, "key-id=") != NULL) return SP_OK;
    /* the options, ';'-separated: create=1 dropped */
    const char *p = config + sizeof kmip - 1;
    size_t len = sizeof kmip - 1;
    bool created = false;
    while (*p) {
        size_t opt = strcspn(p, ";");
        if (opt == sizeof create - 1 && strncmp(p, create, opt) == 0) {
            created = true;
        } else if (opt > 0) {
            if (len + opt + 1 >= cap) return SP_ERR_TOO_LARGE;
            if (out[len - 1] != ':') out[len++] = ';';
            memcpy(out + len, p, opt);
            len += opt;
        }
        p += opt + (p[opt] == ';');
    }
    out[len] = '\0';
    if (!created) return SP_OK; /* no key-id and no create=1 does not open: nothing to pin */
    if (!key_id || strncmp(key_id, uid_prefix, sizeof uid_prefix - 1) != 0) return SP_ERR_KMS_PROTOCOL;
    n = snprintf(out + len, cap - len, ";key-id=%s", key_id + sizeof uid_prefix - 1);
    if (n < 0 || (size_t)n >= cap - len) return SP_ERR_TOO_LARGE;
    return SP_OK;
}

sp_error spd_kms_probe(const char *kms_config, char *err, size_t cap, char *pinned, size_t pinned_cap) {
    if (err != NULL && cap) err[0] = 0;
    if (kms_config == NULL || kms_config[0] == 0) {
        if (err != NULL) snprintf(err, cap, "no KMS configured");
        return SP_ERR_BAD_CONFIG;
    }
    sp_kms *kms = NULL;
    sp_key *dek = NULL, *back = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    uint8_t a[SP_KEY_BYTES], b[SP_KEY_BYTES];
    size_t wrapped_len = 0;
    const char *step = "open";
    sp_error rc = sp_kms_open(kms_config, &kms);
    if (rc == SP_OK) {
        step = "generate and wrap a data key";
        rc = sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &wrapped_len);
    }
    if (rc == SP_OK) {
        step = "unwrap the data key";
        rc = sp_kms_unwrap_key(kms, wrapped, wrapped_len, &back);
    }
    if (rc == SP_OK) {
        step = "compare the unwrapped key";
        rc = sp_key_export(dek, a);
        if (rc == SP_OK) rc = sp_key_export(back, b);
        if (rc == SP_OK && !sp_ct_equal(a, b, sizeof a)) rc = SP_ERR_AUTH;
    }
    sp_wipe(a, sizeof a);
    sp_wipe(b, sizeof b);
    sp_key_free(dek);
    sp_key_free(back);
    if (rc == SP_OK && pinned != NULL) {
        step = "pin the master key";
        rc = spd_kms_pin(kms_config, sp_kms_key_id(kms), pinned, pinned_cap);
    }
    sp_kms_close(kms);
    if (rc != SP_OK && err != NULL) {
        /* the library's texts are static and never hold caller data or keys */
        snprintf(err, cap, "%s failed: %s (%s)", step, sp_strerror(rc), sp_error_name(rc));
    }
    return rc;
}

void spd_context_shutdown(spd_app *app) {
    (void)app;
    /* the calling thread's contexts (the others ended with their threads) */
    spd_thread_free(spd_thread_local_take(&spd_thread_state));
    pthread_mutex_lock(&spd_kms_lock);
    spd_kms_entry *e = spd_kms_list;
    spd_kms_list = NULL;
    pthread_mutex_unlock(&spd_kms_lock);
    while (e != NULL) {
        spd_kms_entry *next = e->next;
        spd_kms_entry_free(e);
        e = next;
    }
}

void spd_kms_totals(sp_kms_stats *sum, uint64_t *breakers_open) {
    pthread_mutex_lock(&spd_kms_lock);
    *sum = spd_kms_closed;
    *breakers_open = 0;
    for (spd_kms_entry *e = spd_kms_list; e != NULL; e = e->next) {
        sp_kms_stats s;
        sp_kms_get_stats(e->kms, &s);
        spd_kms_add(sum, &s);
        if (s.breaker_open) (*breakers_open)++;
    }
    sum->breaker_open = *breakers_open > 0;
    pthread_mutex_unlock(&spd_kms_lock);
}
