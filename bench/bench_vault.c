/*
 * bench_vault: what the PII vault costs per field, set against the
 * established way of doing client-side field encryption, libmongocrypt's
 * explicit encryption.
 *
 * Ours is sp_vault_encrypt (a field arriving) and sp_vault_decrypt (a field
 * read at send time) with a local KMS, a keyring file and an audit log in a
 * private temporary directory, the DEK already unwrapped in the vault's
 * cache. sp_vault_decrypt always writes its audit line (the public API has
 * no way round it, on purpose), so vault_decrypt_* is decrypt plus one audit
 * record: the real send-time path, with the audit log on whatever disk
 * TMPDIR (default /tmp) is on, as a real one would be. The
 * vault_decrypt_unaudited_* lines time the same decrypt through the vault's
 * internal door without the log, so that the two costs can be told apart.
 *
 * The reference is libmongocrypt used the way its drivers use it: per field
 * a fresh mongocrypt_ctx_t, the value wrapped in a BSON document {"v": ...},
 * explicit_encrypt_init (or explicit_decrypt_init), the state machine run to
 * READY, finalize, destroy. The data key is made once with the "local" KMS
 * provider (a 96-byte master key) and handed over whenever a context asks
 * for it (MONGOCRYPT_CTX_NEED_MONGO_KEYS), standing in for the key vault
 * collection; after the first fetch the mongocrypt_t's own key cache answers,
 * so, as for ours, the cache is warm. Encryption is
 * AEAD_AES_256_CBC_HMAC_SHA_512-Random: like ours it gives a fresh
 * ciphertext per call (the Deterministic variant would be the blind-index
 * counterpart, not the field encryption's). It writes no audit line.
 *
 * Both sides run at 16, 64 and 256 bytes (an email address, a phone number,
 * a postal address), on 1 thread and on 2 (every thread with its own
 * sp_vault or mongocrypt_t, the 2-thread figure being the two threads' total;
 * the vaults share one audit log, as the threads of one process do). Each
 * figure is the best of three fixed-length runs, ours and the reference
 * alternating so that a burst of background load hits both. One more line
 * compares the bytes a 64-byte value grows by. Output is one JSON object
 * per line on stdout; the exit status reports errors only, never timings.
 *
 * SP_BENCH_SECONDS overrides the length of one run (default 0.25 s, which
 * keeps the whole bench near 30 s).
 */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <bson/bson.h>
#include <mongocrypt.h>

#include "bench_util.h"

#include "sealpost/sealpost.h"
#include "sealpost/vault.h"
#include "vault/sp_vault_internal.h"

#define BENCH_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define BENCH_REPEATS 3
#define BENCH_WARMUP_SECONDS 0.05
#define BENCH_MAX_VALUE 256
#define BENCH_MAX_THREADS 2
#define BENCH_OVERHEAD_SIZE 64
#define REF_MASTER_KEY_BYTES 96 /* what the "local" provider takes */
#define REF_UUID_BYTES 16
#define REF_MAX_DOC 1024        /* a {"v": ...} document for any bench value */

static const size_t k_sizes[] = {16, 64, 256};
static const size_t k_threads[] = {1, 2};

static const char k_tenant[] = "bench";
static const char k_profile[] = "p-123456";
static const char k_field[] = "email";
static const char k_purpose[] = "send";

static char g_dir[4096]; /* the temporary directory, removed at exit */

/* ---- errors: report where, then exit; a bench that cannot run is a failure ---- */
static void cleanup_dir(void);

static void die_msg(const char *what) __attribute__((noreturn));
static void die_msg(const char *what) {
    fprintf(stderr, "bench_vault: %s\n", what);
    cleanup_dir();
    exit(1);
}

static void bench_die(const char *what) { die_msg(what); }

static void die(const char *what, sp_error rc) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s failed: %s (%s)", what, sp_error_name(rc), sp_strerror(rc));
    die_msg(msg);
}

/* Each run records why it stopped, so the thread that failed need not be
 * the one that reports it. */
typedef struct failure {
    char why[384];
} failure;

static bool fail_with(failure *f, const char *what, sp_error rc) {
    snprintf(f->why, sizeof f->why, "%s failed: %s (%s)", what, sp_error_name(rc), sp_strerror(rc));
    return false;
}

/* libmongocrypt keeps its error in the failing object's status. */
static bool fail_ctx(failure *f, const char *what, mongocrypt_ctx_t *ctx) {
    mongocrypt_status_t *st = mongocrypt_status_new();
    const char *msg = "no status";
    if (st != NULL && ctx != NULL && !mongocrypt_ctx_status(ctx, st)) msg = mongocrypt_status_message(st, NULL);
    snprintf(f->why, sizeof f->why, "libmongocrypt %s failed: %s", what, msg != NULL ? msg : "no message");
    mongocrypt_status_destroy(st);
    return false;
}

static bool fail_msg(failure *f, const char *what) {
    snprintf(f->why, sizeof f->why, "%s", what);
    return false;
}

/* ---- the temporary directory ---- */
static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Everything the bench made (master key, keyring, audit log and whatever
 * lock or head files go with them) goes, whichever way the bench ends. */
static void cleanup_dir(void) {
    if (g_dir[0] == '\0') return;
    (void)nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = '\0';
}

static void make_dir(void) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0') base = "/tmp";
    int n = snprintf(g_dir, sizeof g_dir, "%s/bench_vault.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof g_dir) die_msg("TMPDIR is too long");
    if (mkdtemp(g_dir) == NULL) {
        g_dir[0] = '\0';
        die_msg("mkdtemp failed");
    }
}

static void dir_path(char *out, size_t cap, const char *name) {
    int n = snprintf(out, cap, "%s/%s", g_dir, name);
    if (n < 0 || (size_t)n >= cap) die_msg("temporary path too long");
}

/* ---- timing ---- */

/* ---- threads: the same fixed-length run on each, started together ---- */
typedef struct thread_job {
    bench_fn fn;
    void *arg;
    double seconds;
    pthread_barrier_t *start;
    double rate;
    bool ok;
} thread_job;

static void *thread_main(void *p) {
    thread_job *j = p;
    (void)pthread_barrier_wait(j->start);
    j->ok = bench_run_for(j->fn, j->arg, j->seconds, &j->rate, NULL);
    return NULL;
}

/* args[i] is thread i's own state; returns the threads' summed rate, or
 * dies with the first thread's failure. */
static double run_threads(bench_fn fn, void *const *args, size_t n, double seconds) {
    thread_job jobs[BENCH_MAX_THREADS];
    pthread_t tids[BENCH_MAX_THREADS];
    double total = 0;
    if (n == 1) {
        if (!bench_run_for(fn, args[0], seconds, &total, NULL)) die_msg(((failure *)args[0])->why);
        return total;
    }
    pthread_barrier_t start;
    if (pthread_barrier_init(&start, NULL, (unsigned)n) != 0) die_msg("pthread_barrier_init failed");
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (thread_job){fn, args[i], seconds, &start, 0, false};
        if (pthread_create(&tids[i], NULL, thread_main, &jobs[i]) != 0) die_msg("pthread_create failed");
    }
    for (size_t i = 0; i < n; i++) (void)pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&start);
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].ok) die_msg(((failure *)args[i])->why);
        total += jobs[i].rate;
    }
    return total;
}

typedef struct pair_result {
    double ours;
    double reference;
} pair_result;

/* Warm-up, then BENCH_REPEATS rounds alternating which side goes first;
 * best of each side. */
static pair_result run_pair(bench_fn ours, void *const *ours_args, bench_fn ref, void *const *ref_args, size_t n,
                            double seconds) {
    pair_result res = {0, 0};
    (void)run_threads(ours, ours_args, n, BENCH_WARMUP_SECONDS);
    (void)run_threads(ref, ref_args, n, BENCH_WARMUP_SECONDS);
    for (int round = 0; round < BENCH_REPEATS; round++) {
        for (int side = 0; side < 2; side++) {
            bool run_ours = (side == 0) == (round % 2 == 0);
            double rate = run_ours ? run_threads(ours, ours_args, n, seconds) : run_threads(ref, ref_args, n, seconds);
            double *best = run_ours ? &res.ours : &res.reference;
            if (rate > *best) *best = rate;
        }
    }
    return res;
}

/* ---- JSON lines ---- */

/* The same figures as the cost of one field, which is how they are quoted. */
static void note_per_op(const char *name, pair_result r) {
    fprintf(stderr, "bench_vault: %s: ours %.2f us/field, reference %.2f us/field\n", name,
            r.ours > 0 ? 1e6 / r.ours : 0, r.reference > 0 ? 1e6 / r.reference : 0);
}

/* ---- the reference: libmongocrypt explicit encryption ---- */
typedef struct ref_run {
    failure fail; /* first: run_threads reports through it */
    mongocrypt_t *crypt;
    mongocrypt_binary_t *key_id;  /* view of key_id_bytes */
    uint8_t key_id_bytes[REF_UUID_BYTES];
    const uint8_t *key_doc;       /* the key vault's one document, shared read-only */
    uint32_t key_doc_len;
    uint64_t key_fetches;         /* times a context asked for the key */
    const uint8_t *value;
    size_t value_len;
    uint8_t enc_doc[REF_MAX_DOC]; /* the last encryption: {"v": BinData(6, ...)} */
    uint32_t enc_doc_len;
    uint8_t sealed_doc[REF_MAX_DOC]; /* what the decrypt runs open, made once */
    uint32_t sealed_doc_len;
    uint8_t out[BENCH_MAX_VALUE];
    size_t out_len;
} ref_run;

/* Runs a context to READY the way a driver would: key requests are
 * answered from the stand-in key vault; the local provider needs no KMS
 * round trip, so any other state is an error here. Then finalizes into
 * `out`, which stays valid until the context is destroyed. */
static bool ref_drive(ref_run *r, mongocrypt_ctx_t *ctx, mongocrypt_binary_t *out) {
    for (;;) {
        switch (mongocrypt_ctx_state(ctx)) {
        case MONGOCRYPT_CTX_NEED_MONGO_KEYS: {
            mongocrypt_binary_t *doc = mongocrypt_binary_new_from_data((uint8_t *)r->key_doc, r->key_doc_len);
            bool ok = doc != NULL && mongocrypt_ctx_mongo_feed(ctx, doc);
            mongocrypt_binary_destroy(doc);
            if (!ok) return fail_ctx(&r->fail, "mongo_feed", ctx);
            if (!mongocrypt_ctx_mongo_done(ctx)) return fail_ctx(&r->fail, "mongo_done", ctx);
            r->key_fetches++;
            break;
        }
        case MONGOCRYPT_CTX_READY:
            if (!mongocrypt_ctx_finalize(ctx, out)) return fail_ctx(&r->fail, "finalize", ctx);
            return true;
        case MONGOCRYPT_CTX_ERROR:
            return fail_ctx(&r->fail, "state machine", ctx);
        default:
            return fail_msg(&r->fail, "libmongocrypt asked for something a local key vault cannot give");
        }
    }
}

static bool ref_encrypt_once(void *arg) {
    ref_run *r = arg;
    mongocrypt_ctx_t *ctx = mongocrypt_ctx_new(r->crypt);
    if (ctx == NULL) return fail_msg(&r->fail, "mongocrypt_ctx_new failed");
    /* The field as a driver hands it over: a BSON string under "v". */
    bson_t doc;
    bson_init(&doc);
    bool ok = bson_append_utf8(&doc, "v", 1, (const char *)r->value, (int)r->value_len);
    mongocrypt_binary_t *msg = ok ? mongocrypt_binary_new_from_data((uint8_t *)bson_get_data(&doc), doc.len) : NULL;
    ok = msg != NULL && mongocrypt_ctx_setopt_key_id(ctx, r->key_id) &&
         mongocrypt_ctx_setopt_algorithm(ctx, MONGOCRYPT_ALGORITHM_RANDOM_STR, -1) &&
         mongocrypt_ctx_explicit_encrypt_init(ctx, msg);
    mongocrypt_binary_destroy(msg);
    bson_destroy(&doc);
    if (!ok) {
        fail_ctx(&r->fail, "explicit_encrypt_init", ctx);
        mongocrypt_ctx_destroy(ctx);
        return false;
    }
    mongocrypt_binary_t *out = mongocrypt_binary_new();
    ok = out != NULL && ref_drive(r, ctx, out);
    /* Like ours, the result lands in the caller's buffer. */
    if (ok) {
        uint32_t len = mongocrypt_binary_len(out);
        if (len > sizeof r->enc_doc) {
            ok = fail_msg(&r->fail, "libmongocrypt returned an unexpectedly large ciphertext");
        } else {
            memcpy(r->enc_doc, mongocrypt_binary_data(out), len);
            r->enc_doc_len = len;
        }
    }
    mongocrypt_binary_destroy(out);
    mongocrypt_ctx_destroy(ctx);
    return ok;
}

static bool ref_decrypt_once(void *arg) {
    ref_run *r = arg;
    mongocrypt_ctx_t *ctx = mongocrypt_ctx_new(r->crypt);
    if (ctx == NULL) return fail_msg(&r->fail, "mongocrypt_ctx_new failed");
    mongocrypt_binary_t *msg = mongocrypt_binary_new_from_data(r->sealed_doc, r->sealed_doc_len);
    bool ok = msg != NULL && mongocrypt_ctx_explicit_decrypt_init(ctx, msg);
    mongocrypt_binary_destroy(msg);
    if (!ok) {
        fail_ctx(&r->fail, "explicit_decrypt_init", ctx);
        mongocrypt_ctx_destroy(ctx);
        return false;
    }
    mongocrypt_binary_t *out = mongocrypt_binary_new();
    ok = out != NULL && ref_drive(r, ctx, out);
    /* The result is {"v": <string>}: unwrapping it is part of the caller's
     * work, as the driver does it for every decrypted field. */
    bson_t doc;
    bson_iter_t it;
    if (ok && !(bson_init_static(&doc, mongocrypt_binary_data(out), mongocrypt_binary_len(out)) &&
                bson_iter_init_find(&it, &doc, "v") && BSON_ITER_HOLDS_UTF8(&it)))
        ok = fail_msg(&r->fail, "libmongocrypt's decryption is not {\"v\": <string>}");
    if (ok) {
        uint32_t len = 0;
        const char *s = bson_iter_utf8(&it, &len);
        if (len > sizeof r->out) {
            ok = fail_msg(&r->fail, "libmongocrypt decrypted more bytes than were encrypted");
        } else {
            memcpy(r->out, s, len);
            r->out_len = len;
        }
    }
    mongocrypt_binary_destroy(out);
    mongocrypt_ctx_destroy(ctx);
    return ok;
}

static mongocrypt_t *ref_crypt_new(const uint8_t master[REF_MASTER_KEY_BYTES]) {
    mongocrypt_t *crypt = mongocrypt_new();
    if (crypt == NULL) die_msg("mongocrypt_new failed");
    /* {"local": {"key": BinData(0, <96 bytes>)}} */
    bson_t providers, local;
    bson_init(&providers);
    bool ok = bson_append_document_begin(&providers, "local", -1, &local) &&
              bson_append_binary(&local, "key", -1, BSON_SUBTYPE_BINARY, master, REF_MASTER_KEY_BYTES) &&
              bson_append_document_end(&providers, &local);
    mongocrypt_binary_t *bin =
        ok ? mongocrypt_binary_new_from_data((uint8_t *)bson_get_data(&providers), providers.len) : NULL;
    ok = bin != NULL && mongocrypt_setopt_kms_providers(crypt, bin) && mongocrypt_init(crypt);
    mongocrypt_binary_destroy(bin);
    bson_destroy(&providers);
    if (!ok) {
        mongocrypt_status_t *st = mongocrypt_status_new();
        mongocrypt_status(crypt, st);
        fprintf(stderr, "bench_vault: libmongocrypt: %s\n", mongocrypt_status_message(st, NULL));
        mongocrypt_status_destroy(st);
        die_msg("libmongocrypt set-up (local KMS provider) failed");
    }
    return crypt;
}

/* The data key a real deployment would insert into its key vault
 * collection: made once, by libmongocrypt itself, wrapped under the local
 * master key. Returns the document (malloc'd) and its _id. */
static uint8_t *ref_make_data_key(mongocrypt_t *crypt, uint32_t *len, uint8_t id[REF_UUID_BYTES]) {
    ref_run scratch;
    memset(&scratch, 0, sizeof scratch);
    mongocrypt_ctx_t *ctx = mongocrypt_ctx_new(crypt);
    if (ctx == NULL) die_msg("mongocrypt_ctx_new failed");
    bson_t kek;
    bson_init(&kek);
    bool ok = bson_append_utf8(&kek, "provider", -1, "local", -1);
    mongocrypt_binary_t *bin = ok ? mongocrypt_binary_new_from_data((uint8_t *)bson_get_data(&kek), kek.len) : NULL;
    ok = bin != NULL && mongocrypt_ctx_setopt_key_encryption_key(ctx, bin) && mongocrypt_ctx_datakey_init(ctx);
    mongocrypt_binary_destroy(bin);
    bson_destroy(&kek);
    if (!ok) {
        fail_ctx(&scratch.fail, "datakey_init", ctx);
        die_msg(scratch.fail.why);
    }
    mongocrypt_binary_t *out = mongocrypt_binary_new();
    if (out == NULL || !ref_drive(&scratch, ctx, out)) die_msg(scratch.fail.why);

    *len = mongocrypt_binary_len(out);
    uint8_t *doc = malloc(*len);
    if (doc == NULL) die_msg("out of memory");
    memcpy(doc, mongocrypt_binary_data(out), *len);
    mongocrypt_binary_destroy(out);
    mongocrypt_ctx_destroy(ctx);

    bson_t key;
    bson_iter_t it;
    bson_subtype_t subtype = BSON_SUBTYPE_BINARY;
    uint32_t id_len = 0;
    const uint8_t *id_bytes = NULL;
    if (!(bson_init_static(&key, doc, *len) && bson_iter_init_find(&it, &key, "_id") && BSON_ITER_HOLDS_BINARY(&it)))
        die_msg("libmongocrypt's data key has no binary _id");
    bson_iter_binary(&it, &subtype, &id_len, &id_bytes);
    if (subtype != BSON_SUBTYPE_UUID || id_len != REF_UUID_BYTES) die_msg("libmongocrypt's data key _id is not a UUID");
    memcpy(id, id_bytes, REF_UUID_BYTES);
    return doc;
}

/* The ciphertext's bytes as stored: the payload of {"v": BinData(6, ...)}. */
static uint32_t ref_ciphertext_len(const ref_run *r) {
    bson_t doc;
    bson_iter_t it;
    bson_subtype_t subtype = BSON_SUBTYPE_BINARY;
    uint32_t len = 0;
    const uint8_t *data = NULL;
    if (!(bson_init_static(&doc, r->enc_doc, r->enc_doc_len) && bson_iter_init_find(&it, &doc, "v") &&
          BSON_ITER_HOLDS_BINARY(&it)))
        die_msg("libmongocrypt's encryption is not {\"v\": <binary>}");
    bson_iter_binary(&it, &subtype, &len, &data);
    if (subtype != BSON_SUBTYPE_ENCRYPTED) die_msg("libmongocrypt's ciphertext is not BinData subtype 6");
    return len;
}

/* ---- ours: the vault ---- */
typedef struct vault_run {
    failure fail; /* first: run_threads reports through it */
    sp_kms *kms;
    sp_keyring *keyring;
    sp_vault *vault;
    const uint8_t *value;
    size_t value_len;
    uint8_t blob[BENCH_MAX_VALUE + SP_VAULT_OVERHEAD];
    size_t blob_len;
    uint8_t sealed[BENCH_MAX_VALUE + SP_VAULT_OVERHEAD]; /* what the decrypt runs open, made once */
    size_t sealed_len;
    uint8_t out[BENCH_MAX_VALUE];
    size_t out_len;
} vault_run;

static bool vault_encrypt_once(void *arg) {
    vault_run *v = arg;
    sp_error rc = sp_vault_encrypt(v->vault, k_profile, k_field, v->value, v->value_len, 0, v->blob, sizeof v->blob,
                                   &v->blob_len);
    return rc == SP_OK || fail_with(&v->fail, "sp_vault_encrypt", rc);
}

/* The same decrypt without its audit line, through the door the vault
 * keeps for tests and benchmarks: what the cryptography and the DEK cache
 * cost, apart from the log. The public call reads the clock; so does this. */
static bool vault_decrypt_unaudited_once(void *arg) {
    vault_run *v = arg;
    sp_error rc = sp_vault_decrypt_unaudited(v->vault, k_profile, sizeof k_profile - 1, k_field, sizeof k_field - 1,
                                             v->sealed, v->sealed_len, (int64_t)time(NULL), v->out, sizeof v->out,
                                             &v->out_len, NULL);
    return rc == SP_OK || fail_with(&v->fail, "sp_vault_decrypt_unaudited", rc);
}

static bool vault_decrypt_once(void *arg) {
    vault_run *v = arg;
    sp_error rc = sp_vault_decrypt(v->vault, k_profile, k_field, v->sealed, v->sealed_len, k_purpose, 0, v->out,
                                   sizeof v->out, &v->out_len);
    return rc == SP_OK || fail_with(&v->fail, "sp_vault_decrypt", rc);
}

/* Every thread gets its own KMS handle, keyring handle and vault over the
 * same files (vault.h: one sp_vault per thread); only the audit log, which
 * is one per process and thread-safe, is shared. Opened one after the
 * other, so create=1 makes the master key once. */
static void vault_open(vault_run *v, sp_audit *audit) {
    char path[4200], config[4300];
    dir_path(path, sizeof path, "master.key");
    int n = snprintf(config, sizeof config, "local:path=%s;create=1", path);
    if (n < 0 || (size_t)n >= sizeof config) die_msg("KMS config too long");
    sp_error rc = sp_kms_open(config, &v->kms);
    if (rc != SP_OK) die("sp_kms_open", rc);
    dir_path(path, sizeof path, "keyring.json");
    rc = sp_keyring_open(path, v->kms, &v->keyring);
    if (rc != SP_OK) die("sp_keyring_open", rc);
    sp_vault_options opts;
    memset(&opts, 0, sizeof opts);
    opts.tenant = k_tenant;
    opts.audit = audit;
    rc = sp_vault_open(&opts, v->keyring, &v->vault);
    if (rc != SP_OK) die("sp_vault_open", rc);
}

static void vault_close(vault_run *v) {
    sp_vault_close(v->vault);
    sp_keyring_close(v->keyring);
    sp_kms_close(v->kms);
}

/* ---- set-up ---- */

/* An email-shaped value of exactly `len` bytes: valid UTF-8 (libmongocrypt
 * takes a BSON string) and what the field really holds. */
static void make_value(uint8_t *out, size_t len) {
    static const char domain[] = "@example.com";
    size_t dl = sizeof domain - 1;
    for (size_t i = 0; i < len; i++) out[i] = (uint8_t)('a' + i % 26);
    if (len > dl) memcpy(out + len - dl, domain, dl);
}

/* Both sides must round-trip the value before their speed means anything;
 * this also makes the ciphertexts the decrypt runs open and fetches the
 * keys into both caches. */
static void prepare_size(vault_run *v, ref_run *r, const uint8_t *value, size_t len) {
    v->value = value;
    v->value_len = len;
    if (!vault_encrypt_once(v)) die_msg(v->fail.why);
    if (v->blob_len != len + SP_VAULT_OVERHEAD) die_msg("sp_vault_encrypt wrote an unexpected blob length");
    memcpy(v->sealed, v->blob, v->blob_len);
    v->sealed_len = v->blob_len;
    if (!vault_decrypt_once(v)) die_msg(v->fail.why);
    if (v->out_len != len || memcmp(v->out, value, len) != 0) die_msg("sp_vault_decrypt did not return the value");
    memset(v->out, 0, sizeof v->out);
    if (!vault_decrypt_unaudited_once(v)) die_msg(v->fail.why);
    if (v->out_len != len || memcmp(v->out, value, len) != 0)
        die_msg("sp_vault_decrypt_unaudited did not return the value");

    r->value = value;
    r->value_len = len;
    if (!ref_encrypt_once(r)) die_msg(r->fail.why);
    memcpy(r->sealed_doc, r->enc_doc, r->enc_doc_len);
    r->sealed_doc_len = r->enc_doc_len;
    if (!ref_decrypt_once(r)) die_msg(r->fail.why);
    if (r->out_len != len || memcmp(r->out, value, len) != 0) die_msg("libmongocrypt did not return the value");
}

int main(void) {
    double seconds = bench_seconds(0.25);
    sp_error rc = sp_init();
    if (rc != SP_OK) die("sp_init", rc);
    make_dir();

    char path[4200];
    dir_path(path, sizeof path, "audit.log");
    sp_audit *audit = NULL;
    rc = sp_audit_open(path, &audit);
    if (rc != SP_OK) die("sp_audit_open", rc);

    static vault_run vaults[BENCH_MAX_THREADS];
    static ref_run refs[BENCH_MAX_THREADS];
    for (size_t i = 0; i < BENCH_MAX_THREADS; i++) vault_open(&vaults[i], audit);

    uint8_t master[REF_MASTER_KEY_BYTES];
    rc = sp_random(master, sizeof master);
    if (rc != SP_OK) die("sp_random", rc);
    for (size_t i = 0; i < BENCH_MAX_THREADS; i++) refs[i].crypt = ref_crypt_new(master);
    sp_wipe(master, sizeof master);
    uint32_t key_doc_len = 0;
    uint8_t key_id[REF_UUID_BYTES];
    uint8_t *key_doc = ref_make_data_key(refs[0].crypt, &key_doc_len, key_id);
    for (size_t i = 0; i < BENCH_MAX_THREADS; i++) {
        memcpy(refs[i].key_id_bytes, key_id, sizeof key_id);
        refs[i].key_id = mongocrypt_binary_new_from_data(refs[i].key_id_bytes, REF_UUID_BYTES);
        if (refs[i].key_id == NULL) die_msg("mongocrypt_binary_new_from_data failed");
        refs[i].key_doc = key_doc;
        refs[i].key_doc_len = key_doc_len;
    }
    fprintf(stderr, "bench_vault: reference is libmongocrypt %s, %s; audit log in %s\n", mongocrypt_version(NULL),
            MONGOCRYPT_ALGORITHM_RANDOM_STR, g_dir);

    static uint8_t values[BENCH_LEN(k_sizes)][BENCH_MAX_VALUE];
    double overhead_ours = 0, overhead_ref = 0;
    for (size_t s = 0; s < BENCH_LEN(k_sizes); s++) {
        size_t len = k_sizes[s];
        make_value(values[s], len);
        for (size_t i = 0; i < BENCH_MAX_THREADS; i++) prepare_size(&vaults[i], &refs[i], values[s], len);
        sp_vault_stats before[BENCH_MAX_THREADS];
        for (size_t i = 0; i < BENCH_MAX_THREADS; i++) sp_vault_get_stats(vaults[i].vault, &before[i]);
        if (len == BENCH_OVERHEAD_SIZE) {
            overhead_ours = (double)(vaults[0].sealed_len - len);
            overhead_ref = (double)ref_ciphertext_len(&refs[0]) - (double)len;
        }

        for (size_t t = 0; t < BENCH_LEN(k_threads); t++) {
            size_t n = k_threads[t];
            void *ours_args[BENCH_MAX_THREADS], *ref_args[BENCH_MAX_THREADS];
            for (size_t i = 0; i < n; i++) {
                ours_args[i] = &vaults[i];
                ref_args[i] = &refs[i];
            }
            char name[64];
            fprintf(stderr, "bench_vault: %zu bytes, %zu thread(s)\n", len, n);

            pair_result enc = run_pair(vault_encrypt_once, ours_args, ref_encrypt_once, ref_args, n, seconds);
            snprintf(name, sizeof name, "vault_encrypt_%zu_%zut", len, n);
            bench_emit(name, "fields/s", enc.ours, enc.reference);
            note_per_op(name, enc);

            /* ours: decrypt + its audit record; the reference writes none */
            pair_result dec = run_pair(vault_decrypt_once, ours_args, ref_decrypt_once, ref_args, n, seconds);
            snprintf(name, sizeof name, "vault_decrypt_%zu_%zut", len, n);
            bench_emit(name, "fields/s", dec.ours, dec.reference);
            note_per_op(name, dec);

            /* and without it: the reference is the same decrypt as above */
            pair_result raw =
                run_pair(vault_decrypt_unaudited_once, ours_args, ref_decrypt_once, ref_args, n, seconds);
            snprintf(name, sizeof name, "vault_decrypt_unaudited_%zu_%zut", len, n);
            bench_emit(name, "fields/s", raw.ours, raw.reference);
            note_per_op(name, raw);
        }
        /* Warm means the timed runs never went to the KMS; the default
         * use limit (1,000,000 per DEK) may make a fast vault unwrap again,
         * which is its real behaviour, so it is reported, not refused. */
        for (size_t i = 0; i < BENCH_MAX_THREADS; i++) {
            sp_vault_stats after;
            sp_vault_get_stats(vaults[i].vault, &after);
            if (after.unwraps != before[i].unwraps || after.rotations != before[i].rotations)
                fprintf(stderr, "bench_vault: note: vault %zu unwrapped %llu and made %llu DEK(s) during the %zu-byte runs\n",
                        i, (unsigned long long)(after.unwraps - before[i].unwraps),
                        (unsigned long long)(after.rotations - before[i].rotations), len);
        }
    }
    bench_emit("vault_overhead_bytes", "bytes", overhead_ours, overhead_ref);

    uint64_t fetches = 0;
    for (size_t i = 0; i < BENCH_MAX_THREADS; i++) fetches += refs[i].key_fetches;
    fprintf(stderr, "bench_vault: libmongocrypt asked for the data key %llu time(s) (cache misses)\n",
            (unsigned long long)fetches);

    for (size_t i = 0; i < BENCH_MAX_THREADS; i++) {
        vault_close(&vaults[i]);
        mongocrypt_binary_destroy(refs[i].key_id);
        mongocrypt_destroy(refs[i].crypt);
    }
    free(key_doc);
    sp_audit_close(audit);
    cleanup_dir();
    return 0;
}
