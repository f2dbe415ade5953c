/*
 * bench_wire: what the sealpost protocol costs on top of the cipher it wraps.
 *
 * For every algorithm of the compat profile and for JWE, and at the message
 * sizes CPaaS traffic actually has, it times one full sp_seal + sp_open pair
 * (signature, base64, JSON and all) against the best raw OpenSSL EVP can do
 * for the same encryption and decryption: pre-initialised contexts whose key
 * schedule is set up once and that are only re-armed with a new IV per
 * message. The ratio ours/reference is the number to watch; absolute rates
 * depend on the machine. It also counts allocations per message on the wire
 * path (the API promises none after warm-up) and times sp_cipher_encrypt
 * alone against the same raw EVP encryption, to tell wrapper overhead from
 * protocol overhead.
 *
 * The machine is small and noisy, so each figure is the best of three fixed
 * length runs, with ours and the reference alternating so that a burst of
 * background load hits both. Output is one JSON object per line on stdout;
 * the exit status reports errors only, never timings.
 *
 * SP_BENCH_SECONDS overrides the length of one run (default 0.25 s).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "bench_util.h"

#include "sealpost/sealpost.h"
#include "core/sp_core.h"

#define BENCH_REPEATS 3
#define BENCH_WARMUP_SECONDS 0.05
#define BENCH_MAX_PLAINTEXT 16384
#define BENCH_ALLOC_SIZE 1024

/* A fixed, valid key version: the bench must not depend on the keyfile
 * layer, and the value does not change the work done. */
static const char k_version[] = "4b3f2c1d-9a8e-4f7b-8c6d-5e4f3a2b1c0d";

typedef struct wire_case {
    const char *tag;
    sp_profile profile;
    sp_alg alg;
    const char *evp_name;
} wire_case;

static const wire_case k_wire_cases[] = {
    {"cbc", SP_PROFILE_COMPAT, SP_ALG_AES_256_CBC, "AES-256-CBC"},
    {"gcm", SP_PROFILE_COMPAT, SP_ALG_AES_256_GCM, "AES-256-GCM"},
    {"ctr", SP_PROFILE_COMPAT, SP_ALG_AES_256_CTR, "AES-256-CTR"},
    {"jwe", SP_PROFILE_JWE, SP_ALG_AES_256_GCM, "AES-256-GCM"},
};
static const size_t k_wire_sizes[] = {64, 256, 1024, 16384};
static const size_t k_cipher_sizes[] = {1024, 16384};

/* ---- errors: report where, then exit; a bench that cannot run is a failure ---- */
static void die(const char *what, sp_error rc) {
    fprintf(stderr, "bench_wire: %s failed: %s (%s)\n", what, sp_error_name(rc), sp_strerror(rc));
    exit(1);
}

static void die_msg(const char *what) __attribute__((noreturn));
static void die_msg(const char *what) {
    fprintf(stderr, "bench_wire: %s\n", what);
    exit(1);
}

static void bench_die(const char *what) { die_msg(what); }

/* ---- JSON lines ---- */

/* %.4g keeps a rare allocation (say one per 10 000 messages) visible instead
 * of rounding it to 0, and is always a valid JSON number for finite input. */
static void emit_allocs(const char *name, double per_msg) {
    printf("{\"bench\":\"%s\",\"unit\":\"allocs/msg\",\"ours\":%.4g,\"reference\":0,\"ratio\":0}\n", name, per_msg);
    fflush(stdout);
}

/* ---- IVs for the reference and the primitive runs ---- */
/* A counter in the IV is the cheapest way to get a fresh IV per message, so
 * the reference pays nothing for randomness; whatever sp_seal spends on its
 * CSPRNG IV and message id is counted as protocol overhead. */
static void next_iv(uint8_t iv[SP_MAX_IV_BYTES], uint64_t *counter) {
    uint64_t c = ++*counter;
    memcpy(iv, &c, sizeof c);
}

/* ---- the reference: raw EVP with pre-initialised contexts ---- */
typedef struct evp_run {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    bool gcm;
    bool roundtrip; /* false: encrypt only (the MB/s lines) */
    uint8_t iv[SP_MAX_IV_BYTES];
    uint64_t iv_counter;
    const uint8_t *aad;
    size_t aad_len;
    const uint8_t *plain;
    size_t plain_len;
    uint8_t *ct;
    size_t ct_len;
    uint8_t *out;
    size_t out_len;
    const char *failed; /* which EVP step failed */
} evp_run;

static bool evp_fail(evp_run *r, const char *step) {
    r->failed = step;
    return false;
}

static bool evp_encrypt_once(evp_run *r) {
    int n = 0, fin = 0;
    next_iv(r->iv, &r->iv_counter);
    if (EVP_CipherInit_ex2(r->enc, NULL, NULL, r->iv, 1, NULL) != 1) return evp_fail(r, "EVP encrypt re-arm");
    if (r->aad_len > 0 && EVP_CipherUpdate(r->enc, NULL, &n, r->aad, (int)r->aad_len) != 1)
        return evp_fail(r, "EVP encrypt AAD");
    if (EVP_CipherUpdate(r->enc, r->ct, &n, r->plain, (int)r->plain_len) != 1)
        return evp_fail(r, "EVP encrypt update");
    if (EVP_CipherFinal_ex(r->enc, r->ct + n, &fin) != 1) return evp_fail(r, "EVP encrypt final");
    r->ct_len = (size_t)n + (size_t)fin;
    if (r->gcm) {
        if (EVP_CIPHER_CTX_ctrl(r->enc, EVP_CTRL_AEAD_GET_TAG, SP_GCM_TAG_BYTES, r->ct + r->ct_len) != 1)
            return evp_fail(r, "EVP get tag");
        r->ct_len += SP_GCM_TAG_BYTES;
    }
    return true;
}

static bool evp_decrypt_once(evp_run *r) {
    int n = 0, fin = 0;
    size_t body = r->gcm ? r->ct_len - SP_GCM_TAG_BYTES : r->ct_len;
    if (EVP_CipherInit_ex2(r->dec, NULL, NULL, r->iv, 0, NULL) != 1) return evp_fail(r, "EVP decrypt re-arm");
    if (r->aad_len > 0 && EVP_CipherUpdate(r->dec, NULL, &n, r->aad, (int)r->aad_len) != 1)
        return evp_fail(r, "EVP decrypt AAD");
    if (EVP_CipherUpdate(r->dec, r->out, &n, r->ct, (int)body) != 1) return evp_fail(r, "EVP decrypt update");
    if (r->gcm && EVP_CIPHER_CTX_ctrl(r->dec, EVP_CTRL_AEAD_SET_TAG, SP_GCM_TAG_BYTES, r->ct + body) != 1)
        return evp_fail(r, "EVP set tag");
    if (EVP_CipherFinal_ex(r->dec, r->out + n, &fin) != 1) return evp_fail(r, "EVP decrypt final");
    r->out_len = (size_t)n + (size_t)fin;
    return true;
}

static bool evp_once(void *arg) {
    evp_run *r = arg;
    if (!evp_encrypt_once(r)) return false;
    return !r->roundtrip || evp_decrypt_once(r);
}

/* ---- the crypto floor: raw EVP cipher plus raw HMAC-SHA256 ----
 * What any implementation of the protocol must spend at least: encrypt,
 * sign the signed content (as long as the real one), verify it, decrypt.
 * Set against it, the seal+open rate shows the protocol's own overhead
 * (base64, JSON, headers, ids, IVs) apart from the signature's cost. */
typedef struct floor_run {
    evp_run *cipher;
    EVP_MAC_CTX *mac;
    const uint8_t *signed_content;
    size_t signed_len;
} floor_run;

static bool floor_mac_once(floor_run *f) {
    uint8_t tag[SP_HMAC_SHA256_BYTES];
    size_t n = 0;
    return EVP_MAC_init(f->mac, NULL, 0, NULL) == 1 && EVP_MAC_update(f->mac, f->signed_content, f->signed_len) == 1 &&
           EVP_MAC_final(f->mac, tag, &n, sizeof tag) == 1;
}

static bool floor_once(void *arg) {
    floor_run *f = arg;
    return evp_encrypt_once(f->cipher) && floor_mac_once(f) && floor_mac_once(f) && evp_decrypt_once(f->cipher);
}

/* ---- ours: one sealed and opened message ---- */
typedef struct wire_run {
    sp_wire *wire;
    sp_seal_params params;
    const uint8_t *plain;
    size_t plain_len;
    uint8_t *body;
    size_t body_cap;
    uint8_t *out;
    size_t out_cap;
    size_t out_len;
    int64_t now;
    sp_sealed sealed; /* its headers point into itself: never copied */
    sp_opened opened;
    sp_error rc;
    const char *failed;
} wire_run;

static bool wire_fail(wire_run *w, const char *call) {
    w->failed = call;
    return false;
}

static bool wire_once(void *arg) {
    wire_run *w = arg;
    w->rc = sp_seal(w->wire, &w->params, w->plain, w->plain_len, w->body, w->body_cap, &w->sealed);
    if (w->rc != SP_OK) return wire_fail(w, "sp_seal");
    w->rc = sp_open(w->wire, w->sealed.headers, w->sealed.n_headers, w->body, w->sealed.body_len, w->now, w->out,
                    w->out_cap, &w->out_len, &w->opened);
    if (w->rc != SP_OK) return wire_fail(w, "sp_open");
    return true;
}

/* ---- ours: the cipher primitive alone ---- */
typedef struct cipher_run {
    sp_cipher *cipher;
    uint8_t iv[SP_MAX_IV_BYTES];
    size_t iv_len;
    uint64_t iv_counter;
    const uint8_t *plain;
    size_t plain_len;
    uint8_t *ct;
    size_t ct_cap;
    size_t ct_len;
    sp_error rc;
} cipher_run;

static bool cipher_once(void *arg) {
    cipher_run *c = arg;
    next_iv(c->iv, &c->iv_counter);
    c->rc = sp_cipher_encrypt(c->cipher, c->iv, c->iv_len, NULL, 0, c->plain, c->plain_len, c->ct, c->ct_cap,
                              &c->ct_len);
    return c->rc == SP_OK;
}

/* ---- running a pair ---- */
typedef struct pair_result {
    double ours;      /* best rate of ours */
    double reference; /* best rate of the reference */
    uint64_t ours_calls;
    uint64_t ours_allocs;
} pair_result;

static void check_run(bool ok, bench_fn fn, void *arg);

/* Warm-up, then BENCH_REPEATS rounds alternating which side goes first, best
 * of each side. Allocations are counted over the timed runs of ours only
 * (the reference goes through the same counting funnel, since OpenSSL's
 * allocator is process-wide once the library is loaded). */
static pair_result run_pair(bench_fn ours, void *ours_arg, bench_fn ref, void *ref_arg, double seconds) {
    pair_result res = {0, 0, 0, 0};
    double rate = 0;
    check_run(bench_run_for(ours, ours_arg, BENCH_WARMUP_SECONDS, &rate, NULL), ours, ours_arg);
    check_run(bench_run_for(ref, ref_arg, BENCH_WARMUP_SECONDS, &rate, NULL), ref, ref_arg);
    for (int round = 0; round < BENCH_REPEATS; round++) {
        for (int side = 0; side < 2; side++) {
            bool run_ours = (side == 0) == (round % 2 == 0);
            if (run_ours) {
                uint64_t calls = 0;
                uint64_t before = sp_test_alloc_count();
                check_run(bench_run_for(ours, ours_arg, seconds, &rate, &calls), ours, ours_arg);
                res.ours_allocs += sp_test_alloc_count() - before;
                res.ours_calls += calls;
                if (rate > res.ours) res.ours = rate;
            } else {
                check_run(bench_run_for(ref, ref_arg, seconds, &rate, NULL), ref, ref_arg);
                if (rate > res.reference) res.reference = rate;
            }
        }
    }
    return res;
}

static void check_run(bool ok, bench_fn fn, void *arg) {
    if (ok) return;
    if (fn == wire_once) {
        wire_run *w = arg;
        die(w->failed, w->rc);
    }
    if (fn == cipher_once) die("sp_cipher_encrypt", ((cipher_run *)arg)->rc);
    die_msg(((evp_run *)arg)->failed);
}

/* ---- set-up helpers ---- */
static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) die_msg("out of memory");
    return p;
}

static EVP_CIPHER_CTX *evp_ctx_for(const EVP_CIPHER *cipher, const uint8_t key[SP_KEY_BYTES], int enc) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_CipherInit_ex2(ctx, cipher, key, NULL, enc, NULL) != 1) die_msg("EVP context set-up failed");
    return ctx;
}

/* The JWE AAD is the base64url of the protected header sealpost writes;
 * the reference authenticates the same bytes so that it does the same GCM
 * work. */
static size_t jwe_aad(char *out, size_t cap) {
    char header[128];
    int n = snprintf(header, sizeof header, "{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"kid\":\"%s\"}", k_version);
    if (n < 0 || (size_t)n >= sizeof header) die_msg("JWE header too long");
    size_t len = 0;
    sp_error rc = sp_b64_encode((const uint8_t *)header, (size_t)n, out, cap, &len, true);
    if (rc != SP_OK) die("base64url of the JWE header", rc);
    return len;
}


/* ---- the wire benchmarks ---- */
typedef struct alloc_line {
    char name[64];
    double per_msg;
} alloc_line;

static void bench_wire_case(const wire_case *wc, sp_wire *wire, const uint8_t key[SP_KEY_BYTES],
                            const uint8_t *plain, int64_t timestamp, double seconds, alloc_line *alloc_out) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, wc->evp_name, NULL);
    if (cipher == NULL) die_msg("EVP_CIPHER_fetch failed");
    char aad[256];
    size_t aad_len = wc->profile == SP_PROFILE_JWE ? jwe_aad(aad, sizeof aad) : 0;

    size_t body_cap = sp_seal_body_bound(wc->profile, wc->alg, BENCH_MAX_PLAINTEXT);
    if (body_cap == 0) die_msg("sp_seal_body_bound returned 0");
    size_t ct_cap = BENCH_MAX_PLAINTEXT + 2 * SP_AES_BLOCK_BYTES;
    uint8_t *body = xmalloc(body_cap);
    uint8_t *wire_out = xmalloc(body_cap);
    uint8_t *ct = xmalloc(ct_cap);
    uint8_t *evp_out = xmalloc(ct_cap);

    wire_run w;
    memset(&w, 0, sizeof w);
    w.wire = wire;
    w.params.profile = wc->profile;
    w.params.alg = wc->alg;
    w.params.key_version = NULL; /* the active one, as a caller would */
    w.params.message_id = NULL;  /* a fresh id per message, as in production */
    w.params.timestamp = timestamp;
    w.now = timestamp;
    w.body = body;
    w.body_cap = body_cap;
    w.out = wire_out;
    w.out_cap = body_cap;

    evp_run r;
    memset(&r, 0, sizeof r);
    r.enc = evp_ctx_for(cipher, key, 1);
    r.dec = evp_ctx_for(cipher, key, 0);
    r.gcm = wc->alg == SP_ALG_AES_256_GCM;
    r.roundtrip = true;
    r.aad = (const uint8_t *)aad;
    r.aad_len = aad_len;
    r.ct = ct;
    r.out = evp_out;

    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *floor_mac = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    OSSL_PARAM mac_params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end()};
    if (floor_mac == NULL || EVP_MAC_init(floor_mac, key, SP_KEY_BYTES, mac_params) != 1) die_msg("EVP HMAC setup failed");

    for (size_t s = 0; s < SP_ARRAY_LEN(k_wire_sizes); s++) {
        size_t size = k_wire_sizes[s];
        w.plain = plain;
        w.plain_len = size;
        r.plain = plain;
        r.plain_len = size;

        /* Both sides must do the real work before their speed means anything. */
        if (!wire_once(&w)) die(w.failed, w.rc);
        if (w.out_len != size || memcmp(w.out, plain, size) != 0) die_msg("sp_open did not return the plaintext");
        if (w.opened.profile != wc->profile || w.opened.alg != wc->alg || w.opened.timestamp != timestamp ||
            strcmp(w.opened.key_version, k_version) != 0)
            die_msg("sp_open reported other message details than were sealed");
        if (!evp_once(&r)) die_msg(r.failed);
        if (r.out_len != size || memcmp(r.out, plain, size) != 0) die_msg("the EVP reference did not round-trip");

        pair_result res = run_pair(wire_once, &w, evp_once, &r, seconds);
        char name[64];
        snprintf(name, sizeof name, "wire_seal_open_%s_%zu", wc->tag, size);
        bench_emit(name, "msg/s", res.ours, res.reference);

        if (wc->alg == SP_ALG_AES_256_GCM && wc->profile == SP_PROFILE_COMPAT) {
            floor_run f = {&r, floor_mac, w.body, w.sealed.body_len + 40 /* id.timestamp. */};
            if (!floor_once(&f)) die_msg("the crypto-floor reference failed");
            pair_result fl = run_pair(wire_once, &w, floor_once, &f, seconds);
            snprintf(name, sizeof name, "wire_seal_open_vs_crypto_floor_%s_%zu", wc->tag, size);
            bench_emit(name, "msg/s", fl.ours, fl.reference);
        }

        double per_msg = res.ours_calls ? (double)res.ours_allocs / (double)res.ours_calls : 0;
        if (size == BENCH_ALLOC_SIZE) {
            snprintf(alloc_out->name, sizeof alloc_out->name, "wire_allocs_per_msg_%s_%zu", wc->tag, size);
            alloc_out->per_msg = per_msg;
        } else if (per_msg > 0) {
            fprintf(stderr, "bench_wire: note: %s allocates %.4g times per message\n", name, per_msg);
        }
    }

    EVP_MAC_CTX_free(floor_mac);
    EVP_MAC_free(hmac);
    EVP_CIPHER_CTX_free(r.enc);
    EVP_CIPHER_CTX_free(r.dec);
    EVP_CIPHER_free(cipher);
    sp_wipe(wire_out, body_cap);
    sp_wipe(evp_out, ct_cap);
    free(body);
    free(wire_out);
    free(ct);
    free(evp_out);
}

/* ---- the primitive benchmarks ---- */
static void bench_cipher_case(const wire_case *wc, const sp_key *key, const uint8_t key_bytes[SP_KEY_BYTES],
                              const uint8_t *plain, double seconds) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, wc->evp_name, NULL);
    if (cipher == NULL) die_msg("EVP_CIPHER_fetch failed");
    size_t ct_cap = BENCH_MAX_PLAINTEXT + 2 * SP_AES_BLOCK_BYTES;
    uint8_t *ct_ours = xmalloc(ct_cap);
    uint8_t *ct_ref = xmalloc(ct_cap);

    cipher_run c;
    memset(&c, 0, sizeof c);
    sp_error rc = sp_cipher_new(key, wc->alg, &c.cipher);
    if (rc != SP_OK) die("sp_cipher_new", rc);
    c.iv_len = sp_alg_iv_bytes(wc->alg);
    c.plain = plain;
    c.ct = ct_ours;
    c.ct_cap = ct_cap;

    evp_run r;
    memset(&r, 0, sizeof r);
    r.enc = evp_ctx_for(cipher, key_bytes, 1);
    r.gcm = wc->alg == SP_ALG_AES_256_GCM;
    r.roundtrip = false;
    r.plain = plain;
    r.ct = ct_ref;

    for (size_t s = 0; s < SP_ARRAY_LEN(k_cipher_sizes); s++) {
        size_t size = k_cipher_sizes[s];
        c.plain_len = size;
        r.plain_len = size;

        /* Same key, same IV: the two must produce the same bytes, or the
         * comparison is between different work. */
        c.iv_counter = 0;
        r.iv_counter = 0;
        if (!cipher_once(&c)) die("sp_cipher_encrypt", c.rc);
        if (!evp_once(&r)) die_msg(r.failed);
        if (c.ct_len != r.ct_len || memcmp(c.ct, r.ct, c.ct_len) != 0)
            die_msg("sp_cipher_encrypt and raw EVP disagree on the ciphertext");

        pair_result res = run_pair(cipher_once, &c, evp_once, &r, seconds);
        char name[64];
        snprintf(name, sizeof name, "cipher_encrypt_%s_%zu", wc->tag, size);
        bench_emit(name, "MB/s", res.ours * (double)size / 1e6, res.reference * (double)size / 1e6);
    }

    sp_cipher_free(c.cipher);
    EVP_CIPHER_CTX_free(r.enc);
    EVP_CIPHER_free(cipher);
    free(ct_ours);
    free(ct_ref);
}

int main(void) {
    double seconds = bench_seconds(0.25);
    sp_error rc = sp_init();
    if (rc != SP_OK) die("sp_init", rc);

    sp_key *key = NULL;
    rc = sp_key_generate(&key);
    if (rc != SP_OK) die("sp_key_generate", rc);
    uint8_t key_bytes[SP_KEY_BYTES];
    rc = sp_key_export(key, key_bytes);
    if (rc != SP_OK) die("sp_key_export", rc);

    sp_wire *wire = NULL;
    rc = sp_wire_new(&wire);
    if (rc != SP_OK) die("sp_wire_new", rc);
    rc = sp_wire_add_key(wire, k_version, key, true);
    if (rc != SP_OK) die("sp_wire_add_key", rc);

    static uint8_t plain[BENCH_MAX_PLAINTEXT];
    rc = sp_random(plain, sizeof plain);
    if (rc != SP_OK) die("sp_random", rc);

    /* A fixed timestamp sealed and a receiver clock equal to it: no clock
     * reads on either side, and never a stale-timestamp failure however long
     * the bench runs. */
    int64_t timestamp = (int64_t)time(NULL);

    alloc_line allocs[SP_ARRAY_LEN(k_wire_cases)];
    for (size_t i = 0; i < SP_ARRAY_LEN(k_wire_cases); i++) {
        fprintf(stderr, "bench_wire: wire %s\n", k_wire_cases[i].tag);
        bench_wire_case(&k_wire_cases[i], wire, key_bytes, plain, timestamp, seconds, &allocs[i]);
    }
    for (size_t i = 0; i < SP_ARRAY_LEN(allocs); i++) emit_allocs(allocs[i].name, allocs[i].per_msg);

    /* JWE is a wire profile, not a cipher: the primitive lines cover the
     * three compat algorithms. */
    for (size_t i = 0; i < SP_ARRAY_LEN(k_wire_cases); i++) {
        if (k_wire_cases[i].profile != SP_PROFILE_COMPAT) continue;
        fprintf(stderr, "bench_wire: cipher %s\n", k_wire_cases[i].tag);
        bench_cipher_case(&k_wire_cases[i], key, key_bytes, plain, seconds);
    }

    sp_wire_free(wire);
    sp_key_free(key);
    sp_wipe(key_bytes, sizeof key_bytes);
    return 0;
}
