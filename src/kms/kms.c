/*
 * The KMS dispatcher: what every backend has in common.
 *
 * A backend only talks to its KMS. This file parses the configuration,
 * frames wrapped keys as self-describing blobs, retries calls that failed
 * because the KMS was unreachable (exponential back-off with full jitter, so
 * many processes recovering together do not stampede the KMS), trips a
 * circuit breaker after repeated outages so callers fail fast instead of
 * queueing behind timeouts, and writes one audit line per call. Answers from
 * the KMS (denied, disabled, bad ciphertext) are never retried: asking again
 * would not change them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "kms/sp_kms.h"

#define SP_KMS_COMMON_OPTIONS "retries", "backoff-ms", "breaker-failures", "breaker-cooldown-ms", "create"

static const sp_kms_backend *const sp_kms_backends[] = {
    &sp_kms_backend_local,
    &sp_kms_backend_pkcs11,
    &sp_kms_backend_kmip,
};

struct sp_kms {
    const sp_kms_backend *backend;
    void *state;
    char key_id[SP_KMS_MAX_KEY_ID + 1];
    uint32_t retries;
    uint32_t backoff_ms;
    uint32_t breaker_failures;
    uint32_t breaker_cooldown_ms;
    sp_audit *audit;
    pthread_mutex_t lock; /* guards the breaker */
    uint32_t consecutive_outages;
    int64_t open_until_ms; /* breaker open while now < this */
    bool probing;          /* half-open: one call is testing the KMS */
    /* for /metrics: read without the lock, so atomics */
    _Atomic uint64_t stat_calls;
    _Atomic uint64_t stat_failures;
    _Atomic uint64_t stat_unavailable;
    _Atomic uint64_t stat_denied;
};

/* ---- configuration ---- */
static bool sp_config_name_ok(const char *s, size_t n) {
    if (n == 0 || n >= 32) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) return false;
    }
    return true;
}

void sp_kms_config_clear(sp_kms_config *cfg) {
    if (cfg == NULL) return;
    for (size_t i = 0; i < cfg->count; i++) {
        if (cfg->items[i].value != NULL) sp_free_wiped(cfg->items[i].value, strlen(cfg->items[i].value) + 1);
    }
    memset(cfg, 0, sizeof *cfg);
}

static sp_error sp_config_add(sp_kms_config *cfg, sp_span item) {
    sp_cursor c = sp_cursor_of(item.data, item.len);
    sp_span name, value;
    SP_ENSURE(sp_cursor_take_until(&c, '=', &name), SP_ERR_BAD_CONFIG);
    value = sp_cursor_rest(&c);
    SP_ENSURE(sp_config_name_ok((const char *)name.data, name.len), SP_ERR_BAD_CONFIG);
    SP_ENSURE(memchr(value.data, 0, value.len) == NULL, SP_ERR_BAD_CONFIG);
    SP_ENSURE(cfg->count < SP_KMS_CONFIG_MAX_ITEMS, SP_ERR_BAD_CONFIG);
    for (size_t i = 0; i < cfg->count; i++) {
        SP_ENSURE(!(strlen(cfg->items[i].name) == name.len && memcmp(cfg->items[i].name, name.data, name.len) == 0),
                  SP_ERR_BAD_CONFIG);
    }
    char *v = sp_malloc(value.len + 1);
    SP_ENSURE(v != NULL, SP_ERR_NO_MEMORY);
    if (value.len) memcpy(v, value.data, value.len);
    v[value.len] = 0;
    memcpy(cfg->items[cfg->count].name, name.data, name.len);
    cfg->items[cfg->count].name[name.len] = 0;
    cfg->items[cfg->count].value = v;
    cfg->count++;
    return SP_OK;
}

sp_error sp_kms_config_parse(const char *text, sp_kms_config *out) {
    SP_ENSURE(text != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    SP_ENSURE(len <= SP_KMS_MAX_CONFIG, SP_ERR_BAD_CONFIG);
    sp_cursor c = sp_cursor_of(text, len);
    sp_span backend;
    SP_ENSURE(sp_cursor_take_until(&c, ':', &backend), SP_ERR_BAD_CONFIG);
    SP_ENSURE(sp_config_name_ok((const char *)backend.data, backend.len) && backend.len < sizeof out->backend,
              SP_ERR_BAD_CONFIG);
    memcpy(out->backend, backend.data, backend.len);
    out->backend[backend.len] = 0;
    sp_error rc = SP_OK;
    while (rc == SP_OK && sp_cursor_left(&c) > 0) {
        sp_span item;
        if (!sp_cursor_take_until(&c, ';', &item)) item = sp_cursor_rest(&c);
        if (item.len == 0) continue;
        rc = sp_config_add(out, item);
    }
    if (rc != SP_OK) sp_kms_config_clear(out);
    return rc;
}

const char *sp_kms_config_get(const sp_kms_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->count; i++) {
        if (strcmp(cfg->items[i].name, name) == 0) return cfg->items[i].value;
    }
    return NULL;
}

sp_error sp_kms_config_int(const sp_kms_config *cfg, const char *name, int64_t min, int64_t max, int64_t dflt,
                           int64_t *out) {
    const char *v = sp_kms_config_get(cfg, name);
    if (v == NULL) {
        *out = dflt;
        return SP_OK;
    }
    uint64_t n = 0;
    SP_ENSURE(sp_parse_u64(v, strlen(v), (uint64_t)max, &n) == SP_OK && (int64_t)n >= min, SP_ERR_BAD_CONFIG);
    *out = (int64_t)n;
    return SP_OK;
}

sp_error sp_kms_config_only(const sp_kms_config *cfg, const char *const *known) {
    static const char *const common[] = {SP_KMS_COMMON_OPTIONS, NULL};
    for (size_t i = 0; i < cfg->count; i++) {
        bool found = false;
        for (const char *const *k = common; *k && !found; k++) found = strcmp(*k, cfg->items[i].name) == 0;
        for (const char *const *k = known; k && *k && !found; k++) found = strcmp(*k, cfg->items[i].name) == 0;
        SP_ENSURE(found, SP_ERR_BAD_CONFIG);
    }
    return SP_OK;
}

/* ---- blobs ---- */
static bool sp_key_id_ok(const char *id, size_t n) {
    if (n == 0 || n > SP_KMS_MAX_KEY_ID) return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return false;
    }
    return true;
}

sp_error sp_kms_blob_encode(const sp_kms_blob *blob, uint8_t *out, size_t cap, size_t *out_len) {
    size_t id_len = strlen(blob->key_id);
    SP_ENSURE(sp_key_id_ok(blob->key_id, id_len), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(blob->payload_len > 0 && blob->payload_len <= SP_KMS_MAX_PAYLOAD, SP_ERR_INVALID_ARGUMENT);
    sp_wbuf b = sp_wbuf_of(out, cap);
    uint8_t head[4] = {SP_KMS_BLOB_VERSION, blob->backend, blob->mechanism, (uint8_t)id_len};
    uint8_t plen[2] = {(uint8_t)(blob->payload_len >> 8), (uint8_t)blob->payload_len};
    SP_GUARD(sp_wbuf_put(&b, head, sizeof head));
    SP_GUARD(sp_wbuf_put(&b, blob->key_id, id_len));
    SP_GUARD(sp_wbuf_put(&b, plen, sizeof plen));
    SP_GUARD(sp_wbuf_put(&b, blob->payload, blob->payload_len));
    *out_len = b.len;
    return SP_OK;
}

sp_error sp_kms_blob_decode(const uint8_t *in, size_t len, sp_kms_blob *out) {
    SP_ENSURE(in != NULL && out != NULL, SP_ERR_AUTH);
    sp_cursor c = sp_cursor_of(in, len);
    SP_ENSURE(sp_cursor_left(&c) >= 4, SP_ERR_AUTH);
    const uint8_t *head = in;
    c.pos = 4;
    SP_ENSURE(head[0] == SP_KMS_BLOB_VERSION, SP_ERR_AUTH);
    size_t id_len = head[3];
    SP_ENSURE(sp_cursor_left(&c) >= id_len + 2, SP_ERR_AUTH);
    SP_ENSURE(sp_key_id_ok((const char *)in + c.pos, id_len), SP_ERR_AUTH);
    memcpy(out->key_id, in + c.pos, id_len);
    out->key_id[id_len] = 0;
    c.pos += id_len;
    size_t plen = (size_t)in[c.pos] << 8 | in[c.pos + 1];
    c.pos += 2;
    SP_ENSURE(plen > 0 && plen <= SP_KMS_MAX_PAYLOAD && sp_cursor_left(&c) == plen, SP_ERR_AUTH);
    out->backend = head[1];
    out->mechanism = head[2];
    out->payload = in + c.pos;
    out->payload_len = plen;
    return SP_OK;
}

/* ---- time and back-off ---- */
static int64_t sp_monotonic_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sp_sleep_ms(uint32_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Full jitter: a uniform draw from [0, base * 2^attempt], capped. */
static uint32_t sp_backoff_ms(const sp_kms *kms, uint32_t attempt) {
    uint64_t ceiling = (uint64_t)kms->backoff_ms << (attempt < 16 ? attempt : 16);
    if (ceiling > 60000) ceiling = 60000;
    uint32_t r = 0;
    if (sp_random((uint8_t *)&r, sizeof r) != SP_OK) return (uint32_t)ceiling;
    return (uint32_t)(r % (ceiling + 1));
}

/* ---- the call path ---- */
typedef enum { SP_OP_WRAP, SP_OP_UNWRAP } sp_kms_op;
static const char *const sp_op_events[] = {"kms.wrap", "kms.unwrap"};

typedef struct {
    const uint8_t *dek;
    uint8_t *dek_out;
    uint8_t mechanism;
    uint8_t *payload;
    const uint8_t *payload_in;
    size_t cap, len;
} sp_kms_io;

static sp_error sp_kms_attempt(sp_kms *kms, sp_kms_op op, sp_kms_io *io) {
    if (op == SP_OP_WRAP) return kms->backend->wrap(kms->state, io->dek, &io->mechanism, io->payload, io->cap, &io->len);
    return kms->backend->unwrap(kms->state, io->mechanism, io->payload_in, io->len, io->dek_out);
}

static sp_error sp_kms_audit(sp_kms *kms, sp_kms_op op, uint8_t mechanism, uint32_t attempts, sp_error rc) {
    if (kms->audit == NULL) return SP_OK;
    char mech[4], tries[12];
    sp_wbuf m = sp_wbuf_of(mech, sizeof mech), t = sp_wbuf_of(tries, sizeof tries);
    if (sp_wbuf_put_u64(&m, mechanism) != SP_OK || sp_wbuf_terminate(&m) != SP_OK) mech[0] = 0;
    if (sp_wbuf_put_u64(&t, attempts) != SP_OK || sp_wbuf_terminate(&t) != SP_OK) tries[0] = 0;
    sp_audit_field fields[] = {
        {"backend", kms->backend->name}, {"key", kms->key_id}, {"mechanism", mech},
        {"attempts", tries},             {"result", sp_error_name(rc)},
    };
    return sp_audit_record(kms->audit, sp_op_events[op], fields, SP_ARRAY_LEN(fields));
}

/* The breaker: closed (calls go through), open (calls fail at once until
 * the cooldown ends), half-open (one call probes the KMS while the others
 * still fail at once; its outcome closes or reopens the breaker). */
static bool sp_breaker_admit(sp_kms *kms, bool *probe) {
    pthread_mutex_lock(&kms->lock);
    bool admit = true;
    *probe = false;
    if (kms->open_until_ms != 0) {
        if (sp_monotonic_ms() < kms->open_until_ms || kms->probing) {
            admit = false;
        } else {
            kms->probing = true;
            *probe = true;
        }
    }
    pthread_mutex_unlock(&kms->lock);
    return admit;
}

static void sp_breaker_record(sp_kms *kms, bool probe, sp_error rc) {
    pthread_mutex_lock(&kms->lock);
    if (probe) kms->probing = false;
    if (rc == SP_ERR_KMS_UNAVAILABLE) {
        kms->consecutive_outages++;
        if (probe || kms->consecutive_outages >= kms->breaker_failures)
            kms->open_until_ms = sp_monotonic_ms() + kms->breaker_cooldown_ms;
    } else {
        kms->consecutive_outages = 0;
        kms->open_until_ms = 0;
    }
    pthread_mutex_unlock(&kms->lock);
}

static void sp_kms_count(sp_kms *kms, sp_error rc) {
    atomic_fetch_add_explicit(&kms->stat_calls, 1, memory_order_relaxed);
    if (rc == SP_OK) return;
    atomic_fetch_add_explicit(&kms->stat_failures, 1, memory_order_relaxed);
    if (rc == SP_ERR_KMS_UNAVAILABLE) atomic_fetch_add_explicit(&kms->stat_unavailable, 1, memory_order_relaxed);
    if (rc == SP_ERR_KMS_ACCESS_DENIED || rc == SP_ERR_KMS_KEY_DISABLED)
        atomic_fetch_add_explicit(&kms->stat_denied, 1, memory_order_relaxed);
}

void sp_kms_get_stats(sp_kms *kms, sp_kms_stats *out) {
    if (out == NULL) return;
    memset(out, 0, sizeof *out);
    if (kms == NULL) return;
    out->calls = atomic_load_explicit(&kms->stat_calls, memory_order_relaxed);
    out->failures = atomic_load_explicit(&kms->stat_failures, memory_order_relaxed);
    out->unavailable = atomic_load_explicit(&kms->stat_unavailable, memory_order_relaxed);
    out->denied = atomic_load_explicit(&kms->stat_denied, memory_order_relaxed);
    pthread_mutex_lock(&kms->lock);
    out->breaker_open = kms->open_until_ms != 0;
    pthread_mutex_unlock(&kms->lock);
}

static sp_error sp_kms_call(sp_kms *kms, sp_kms_op op, sp_kms_io *io) {
    bool local = op == SP_OP_WRAP && kms->backend->wrap_is_local != NULL && kms->backend->wrap_is_local(kms->state);
    bool probe = false;
    if (!local && !sp_breaker_admit(kms, &probe)) {
        sp_kms_count(kms, SP_ERR_KMS_UNAVAILABLE);
        sp_error arc = sp_kms_audit(kms, op, io->mechanism, 0, SP_ERR_KMS_UNAVAILABLE);
        return arc != SP_OK ? arc : SP_ERR_KMS_UNAVAILABLE;
    }
    sp_error rc = SP_OK;
    uint32_t attempt = 0;
    /* a probe gets one attempt: its job is to find out, not to wait */
    uint32_t retries = probe ? 0 : kms->retries;
    for (;;) {
        rc = sp_kms_attempt(kms, op, io);
        attempt++;
        if (rc != SP_ERR_KMS_UNAVAILABLE || attempt > retries) break;
        sp_sleep_ms(sp_backoff_ms(kms, attempt - 1));
    }
    if (!local) sp_breaker_record(kms, probe, rc);
    sp_kms_count(kms, rc);
    /* Fail closed: a key the log does not show being unwrapped is not
     * handed out (the caller wipes it), so every use stays auditable. */
    sp_error arc = sp_kms_audit(kms, op, io->mechanism, attempt, rc);
    return rc == SP_OK && arc != SP_OK ? arc : rc;
}

/* ---- public API ---- */
static sp_error sp_kms_read_common(sp_kms *kms, const sp_kms_config *cfg) {
    int64_t v;
    SP_GUARD(sp_kms_config_int(cfg, "retries", 0, 10, 3, &v));
    kms->retries = (uint32_t)v;
    SP_GUARD(sp_kms_config_int(cfg, "backoff-ms", 1, 60000, 50, &v));
    kms->backoff_ms = (uint32_t)v;
    SP_GUARD(sp_kms_config_int(cfg, "breaker-failures", 1, 1000, 5, &v));
    kms->breaker_failures = (uint32_t)v;
    SP_GUARD(sp_kms_config_int(cfg, "breaker-cooldown-ms", 1, 3600000, 30000, &v));
    kms->breaker_cooldown_ms = (uint32_t)v;
    SP_GUARD(sp_kms_config_int(cfg, "create", 0, 1, 0, &v));
    return SP_OK;
}

static sp_error sp_kms_open_with(const sp_kms_backend *forced, const char *config, sp_kms **out) {
    SP_ENSURE(config != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_kms_config cfg;
    SP_GUARD(sp_kms_config_parse(config, &cfg));
    sp_error rc = SP_ERR_BAD_CONFIG;
    sp_kms *kms = NULL;
    const sp_kms_backend *backend = forced;
    for (size_t i = 0; backend == NULL && i < SP_ARRAY_LEN(sp_kms_backends); i++) {
        if (strcmp(sp_kms_backends[i]->name, cfg.backend) == 0) backend = sp_kms_backends[i];
    }
    SP_ENSURE_GOTO(backend != NULL, SP_ERR_BAD_CONFIG, rc, done);
    SP_GUARD_GOTO(sp_kms_config_only(&cfg, backend->options), rc, done);
    kms = sp_calloc(1, sizeof *kms);
    SP_ENSURE_GOTO(kms != NULL, SP_ERR_NO_MEMORY, rc, done);
    kms->backend = backend;
    SP_GUARD_GOTO(sp_kms_read_common(kms, &cfg), rc, done);
    SP_ENSURE_GOTO(pthread_mutex_init(&kms->lock, NULL) == 0, SP_ERR_NO_MEMORY, rc, done);
    rc = backend->open(&cfg, &kms->state, kms->key_id);
    if (rc != SP_OK) {
        pthread_mutex_destroy(&kms->lock);
        goto done;
    }
    *out = kms;
    kms = NULL;
done:
    sp_free(kms);
    sp_kms_config_clear(&cfg);
    return rc;
}

sp_error sp_kms_open(const char *config, sp_kms **out) { return sp_kms_open_with(NULL, config, out); }

sp_error sp_kms_open_backend(const sp_kms_backend *backend, const char *config, sp_kms **out) {
    SP_ENSURE(backend != NULL, SP_ERR_INVALID_ARGUMENT);
    return sp_kms_open_with(backend, config, out);
}

void sp_kms_close(sp_kms *kms) {
    if (kms == NULL) return;
    kms->backend->close(kms->state);
    pthread_mutex_destroy(&kms->lock);
    sp_free(kms);
}

const char *sp_kms_backend_name(const sp_kms *kms) { return kms ? kms->backend->name : NULL; }
const char *sp_kms_key_id(const sp_kms *kms) { return kms ? kms->key_id : NULL; }
void sp_kms_set_audit(sp_kms *kms, sp_audit *audit) {
    if (kms != NULL) kms->audit = audit;
}

sp_error sp_kms_wrap_key(sp_kms *kms, const sp_key *dek, uint8_t *wrapped, size_t cap, size_t *wrapped_len) {
    SP_ENSURE(kms != NULL && dek != NULL && wrapped != NULL && wrapped_len != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t payload[SP_KMS_MAX_PAYLOAD];
    sp_kms_io io = {.dek = sp_key_bytes(dek), .payload = payload, .cap = sizeof payload};
    SP_GUARD(sp_kms_call(kms, SP_OP_WRAP, &io));
    sp_kms_blob blob = {.backend = kms->backend->id, .mechanism = io.mechanism, .payload = payload,
                        .payload_len = io.len};
    memcpy(blob.key_id, kms->key_id, sizeof blob.key_id);
    return sp_kms_blob_encode(&blob, wrapped, cap, wrapped_len);
}

sp_error sp_kms_generate_data_key(sp_kms *kms, sp_key **dek, uint8_t *wrapped, size_t cap, size_t *wrapped_len) {
    SP_ENSURE(kms != NULL && dek != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_key *k = NULL;
    SP_GUARD(sp_key_generate(&k));
    sp_error rc = sp_kms_wrap_key(kms, k, wrapped, cap, wrapped_len);
    if (rc != SP_OK) {
        sp_key_free(k);
        return rc;
    }
    *dek = k;
    return SP_OK;
}

bool sp_kms_owns(const sp_kms *kms, const uint8_t *wrapped, size_t wrapped_len) {
    sp_kms_blob blob;
    return kms != NULL && sp_kms_blob_decode(wrapped, wrapped_len, &blob) == SP_OK &&
           blob.backend == kms->backend->id && strcmp(blob.key_id, kms->key_id) == 0;
}

sp_error sp_kms_unwrap_key(sp_kms *kms, const uint8_t *wrapped, size_t wrapped_len, sp_key **dek) {
    SP_ENSURE(kms != NULL && dek != NULL, SP_ERR_INVALID_ARGUMENT);
    sp_kms_blob blob;
    if (sp_kms_blob_decode(wrapped, wrapped_len, &blob) != SP_OK || blob.backend != kms->backend->id ||
        strcmp(blob.key_id, kms->key_id) != 0) {
        /* refused before the KMS is asked, and still logged: probing with
         * forged or foreign blobs leaves a trace */
        sp_error arc = sp_kms_audit(kms, SP_OP_UNWRAP, 0, 0, SP_ERR_AUTH);
        return arc != SP_OK ? arc : SP_ERR_AUTH;
    }
    uint8_t raw[SP_KEY_BYTES];
    sp_kms_io io = {.dek_out = raw, .mechanism = blob.mechanism, .payload_in = blob.payload,
                    .len = blob.payload_len};
    sp_error rc = sp_kms_call(kms, SP_OP_UNWRAP, &io);
    if (rc == SP_OK) rc = sp_key_new(raw, sizeof raw, dek); /* raw is wiped below either way */
    sp_wipe(raw, sizeof raw);
    return rc;
}

/* Appends a line to the report, which stays NUL-terminated whatever
 * happens; a full report is cut, never overrun. */
static void sp_report_add(sp_wbuf *b, const char *a, const char *c) {
    size_t mark = b->len;
    if (sp_wbuf_put_str(b, a) != SP_OK || (c != NULL && sp_wbuf_put_str(b, c) != SP_OK) ||
        sp_wbuf_put_str(b, "\n") != SP_OK || sp_wbuf_terminate(b) != SP_OK) {
        b->len = mark;
    }
    if (b->len < b->cap) b->data[b->len] = 0;
}

sp_error sp_kms_check(sp_kms *kms, char *report, size_t cap) {
    SP_ENSURE(kms != NULL && report != NULL && cap > 0, SP_ERR_INVALID_ARGUMENT);
    sp_wbuf b = sp_wbuf_of(report, cap);
    report[0] = 0;
    sp_report_add(&b, "backend: ", kms->backend->name);
    sp_report_add(&b, "master key: ", kms->key_id);
    sp_error first = SP_OK;
    if (kms->backend->describe != NULL && b.len + 1 < b.cap) {
        sp_error rc = kms->backend->describe(kms->state, (char *)b.data + b.len, b.cap - b.len);
        b.data[b.cap - 1] = 0;
        b.len += strlen((char *)b.data + b.len);
        /* an unreachable KMS may still wrap (RSA-OAEP): go on and show it */
        if (rc != SP_OK) {
            sp_report_add(&b, "describe: FAILED: ", sp_strerror(rc));
            first = rc;
        }
    }
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len = 0;
    sp_key *dek = NULL, *back = NULL;
    sp_error rc = sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &wrapped_len);
    sp_report_add(&b, rc == SP_OK ? "wrap: ok" : "wrap: FAILED: ", rc == SP_OK ? NULL : sp_strerror(rc));
    if (rc == SP_OK) {
        rc = sp_kms_unwrap_key(kms, wrapped, wrapped_len, &back);
        if (rc == SP_OK && !sp_ct_equal(sp_key_bytes(dek), sp_key_bytes(back), SP_KEY_BYTES)) rc = SP_ERR_AUTH;
        sp_report_add(&b, rc == SP_OK ? "unwrap: ok" : "unwrap: FAILED: ", rc == SP_OK ? NULL : sp_strerror(rc));
    }
    sp_key_free(dek);
    sp_key_free(back);
    return first != SP_OK ? first : rc;
}
