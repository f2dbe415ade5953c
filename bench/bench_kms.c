/*
 * bench_kms: what wrapping and unwrapping a data key costs through sp_kms,
 * backend by backend, and what the provider keyring adds on top of it.
 *
 * Every figure goes through the public API only (sp_kms_wrap_key,
 * sp_kms_unwrap_key, sp_keyring_find, sp_keyring_load_wire), each
 * configuration's sp_kms opened once and reused, as a server holds it, and is
 * set against a reference measured in the same run:
 *
 *  - local and pkcs11: raw OpenSSL in this process, AES-256 key wrap with
 *    padding (EVP "AES-256-WRAP-PAD") of a 32-byte key under a 32-byte key,
 *    with a fresh EVP_CIPHER_CTX per call as straightforward code would do
 *    it. It is the cost floor of a wrap with no KMS at all; against it the
 *    local line shows sp_kms's own overhead (dispatch, breaker, blob framing,
 *    the data key in locked memory), the pkcs11 lines the price of a token.
 *  - kmip: the peer library, PyKMIP's own client (bench/kmip_peer.py) doing
 *    the same Encrypt on the same server over one connection, run with
 *    /usr/bin/python3, twice for about 2 s between our runs. Its client
 *    cannot hand a GCM tag to Decrypt, so its Encrypt rate is the reference
 *    for unwrapping too.
 *  - keyring_lookup_1000: sp_keyring_find on a keyring of 1000 keys (10
 *    tenants x 10 channels x 10 versions, local KMS) for random
 *    (tenant, channel, version) triples, against libc bsearch over the same
 *    triples sorted.
 *  - keyring_load_wire_10: sp_keyring_load_wire of one channel's 10 versions
 *    into a fresh sp_wire, against the floor it cannot go below: 10 raw
 *    OpenSSL unwraps like the reference above.
 *
 * Backends come from the environment scripts/kms-fixtures sets up (and
 * scripts/bench-run always exports): SP_BENCH_PKCS11 (a pkcs11: config; the
 * bench adds mechanism=aes-kwp, aes-gcm and rsa-oaep in turn, the last with
 * oaep-decode=host on a token without SHA-256 OAEP), SP_BENCH_KMIP
 * (a kmip: config) and SP_BENCH_KMIP_PEER ("host port ca cert key" for the
 * peer). A backend whose variables are missing is left out with a note on
 * stderr. The local KMS needs nothing: it lives in a temp directory.
 *
 * Like bench_wire, each figure is the best of three runs, ours and the
 * reference alternating. A run lasts SP_BENCH_SECONDS (default 0.25 s);
 * SoftHSM2 and KMIP answer in milliseconds, so their runs also stop after a
 * share of 2000 calls per side, which keeps the whole bench well under a
 * minute. Output is one JSON object per line on stdout; the exit status
 * reports errors only, never timings.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bench_util.h"

#include "sealpost/sealpost.h"

#define PYTHON "/usr/bin/python3"

#define BENCH_REPEATS 3
#define WARMUP_SECONDS 0.02
#define WARMUP_MAX_OPS 20
#define SLOW_MAX_OPS 2000 /* per side, over its BENCH_REPEATS runs */
#define FAST_MAX_OPS UINT64_MAX

#define PEER_SECONDS "2"
#define PEER_MAX_OPS "100000"
#define PEER_DEADLINE_MS 60000 /* interpreter start, handshake, key creation and the run */

#define KR_TENANTS 10
#define KR_CHANNELS 10 /* per tenant: 100 channels */
#define KR_VERSIONS 10 /* per channel */
#define KR_KEYS (KR_TENANTS * KR_CHANNELS * KR_VERSIONS)
#define KR_NAME 16
#define LOOKUP_SEQ 4096 /* a power of two: the cursor wraps with a mask */

#define KWP_WRAPPED (SP_KEY_BYTES + 8) /* RFC 5649 of a 32-byte key */

extern char **environ;

/* ---- errors: report where, then exit; a bench that cannot run is a failure ---- */
static void die_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_kms: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void bench_die(const char *what) { die_msg("%s", what); }

static void die(const char *what, sp_error rc) __attribute__((noreturn));
static void die(const char *what, sp_error rc) {
    die_msg("%s failed: %s (%s)", what, sp_error_name(rc), sp_strerror(rc));
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_kms: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* snprintf into an array; a path or config that does not fit is an error */
#define FMT(buf, ...)                                                                   \
    do {                                                                                \
        int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                             \
        if (n_ < 0 || (size_t)n_ >= sizeof(buf))                                        \
            die_msg("%s does not fit in %zu bytes", #buf, sizeof(buf));                 \
    } while (0)

/* ---- the scratch directory of the local KMS and the keyring ---- */
static char g_dir[PATH_MAX];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    (void)remove(path);
    return 0;
}

/* At exit, also after die(): a bench run leaves no key files behind. */
static void remove_dir(void) {
    if (g_dir[0] != 0) (void)nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = 0;
}

static void make_dir(void) {
    const char *tmp = getenv("TMPDIR");
    FMT(g_dir, "%s/sealpost-bench-kms-XXXXXX", tmp != NULL && tmp[0] != 0 ? tmp : "/tmp");
    if (mkdtemp(g_dir) == NULL) {
        g_dir[0] = 0;
        die_msg("mkdtemp: %s", strerror(errno));
    }
    if (atexit(remove_dir) != 0) die_msg("atexit failed");
}

/* ---- timing ---- */
/* Every op's argument starts with this, so a failed call can be reported
 * by whoever ran it. */
typedef struct op_status {
    const char *failed; /* the call that failed */
    sp_error rc;        /* its error, or SP_OK when it was not an sp_ call */
} op_status;

typedef bool (*op_fn)(void *arg);

static bool op_fail(void *arg, const char *call, sp_error rc) {
    op_status *st = arg;
    st->failed = call;
    st->rc = rc;
    return false;
}

static void check_op(bool ok, void *arg) {
    if (ok) return;
    const op_status *st = arg;
    if (st->rc != SP_OK) die(st->failed, st->rc);
    die_msg("%s failed", st->failed ? st->failed : "an operation");
}


/* Calls fn until `seconds` have passed or max_ops calls were made, and
 * returns calls per second. The clock is read once per batch, the batch
 * doubling while one takes under a millisecond, so that for a raw EVP wrap
 * (a few microseconds) the clock is not part of what is measured; a KMS call
 * that takes a millisecond gets a batch of one. */
static double run_bounded(op_fn fn, void *arg, double seconds, uint64_t max_ops) {
    uint64_t n = 0, batch = 1;
    double start = bench_now(), last = start, t = start;
    while (n < max_ops && t - start < seconds) {
        if (batch > max_ops - n) batch = max_ops - n;
        for (uint64_t i = 0; i < batch; i++) check_op(fn(arg), arg);
        n += batch;
        t = bench_now();
        if (t - last < 0.001 && batch < ((uint64_t)1 << 20)) batch *= 2;
        last = t;
    }
    return t > start ? (double)n / (t - start) : 0;
}

typedef struct pair_result {
    double ours;
    double reference;
} pair_result;

/* A short warm-up of each side (a token session, a TLS connection and the
 * caches get made there, not in the timed runs), then BENCH_REPEATS rounds
 * alternating which side goes first; the best rate of each side. */
static pair_result run_pair(op_fn ours, void *ours_arg, op_fn ref, void *ref_arg, double seconds, uint64_t max_ops) {
    pair_result best = {0, 0};
    uint64_t per_run = max_ops == FAST_MAX_OPS ? FAST_MAX_OPS : max_ops / BENCH_REPEATS;
    (void)run_bounded(ours, ours_arg, WARMUP_SECONDS, WARMUP_MAX_OPS);
    (void)run_bounded(ref, ref_arg, WARMUP_SECONDS, WARMUP_MAX_OPS);
    for (int round = 0; round < BENCH_REPEATS; round++) {
        for (int side = 0; side < 2; side++) {
            bool run_ours = (side == 0) == (round % 2 == 0);
            double rate = run_ours ? run_bounded(ours, ours_arg, seconds, per_run)
                                   : run_bounded(ref, ref_arg, seconds, per_run);
            double *slot = run_ours ? &best.ours : &best.reference;
            if (rate > *slot) *slot = rate;
        }
    }
    return best;
}

/* ---- JSON lines ---- */

/* ---- the reference: raw OpenSSL AES-256 key wrap with padding ---- */
typedef struct kwp_ref {
    op_status st;
    EVP_CIPHER *cipher; /* fetched once, as the library does; the context is per call */
    uint8_t kek[SP_KEY_BYTES];
    uint8_t dek[SP_KEY_BYTES];
    uint8_t wrapped[KWP_WRAPPED];
    uint8_t out[KWP_WRAPPED + SP_AES_BLOCK_BYTES];
} kwp_ref;

/* One wrap or unwrap (enc 1 or 0) of `in` into `out`, the way one would
 * write it: new context, init with the key, update, final, free. */
static bool kwp_once(kwp_ref *r, int enc, const uint8_t *in, size_t in_len, uint8_t *out, size_t want) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return op_fail(r, "EVP_CIPHER_CTX_new", SP_OK);
    /* OpenSSL refuses wrap modes in a context unless told the caller knows */
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    int n = 0, fin = 0;
    bool ok = EVP_CipherInit_ex2(ctx, r->cipher, r->kek, NULL, enc, NULL) == 1 &&
              EVP_CipherUpdate(ctx, out, &n, in, (int)in_len) == 1 && n >= 0 &&
              EVP_CipherFinal_ex(ctx, out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok || (size_t)n + (size_t)fin != want) return op_fail(r, enc ? "EVP key wrap" : "EVP key unwrap", SP_OK);
    return true;
}

static bool ref_wrap_once(void *arg) {
    kwp_ref *r = arg;
    return kwp_once(r, 1, r->dek, SP_KEY_BYTES, r->wrapped, KWP_WRAPPED);
}

static bool ref_unwrap_once(void *arg) {
    kwp_ref *r = arg;
    bool ok = kwp_once(r, 0, r->wrapped, KWP_WRAPPED, r->out, SP_KEY_BYTES);
    sp_wipe(r->out, sizeof r->out); /* ours frees its key each call: the same chore here */
    return ok;
}

static void ref_init(kwp_ref *r) {
    memset(r, 0, sizeof *r);
    r->cipher = EVP_CIPHER_fetch(NULL, "AES-256-WRAP-PAD", NULL);
    if (r->cipher == NULL) die_msg("EVP_CIPHER_fetch(AES-256-WRAP-PAD) failed");
    sp_error rc = sp_random(r->kek, sizeof r->kek);
    if (rc == SP_OK) rc = sp_random(r->dek, sizeof r->dek);
    if (rc != SP_OK) die("sp_random", rc);
    /* it must do the real work before its speed means anything */
    check_op(ref_wrap_once(r), r);
    check_op(kwp_once(r, 0, r->wrapped, KWP_WRAPPED, r->out, SP_KEY_BYTES), r);
    if (memcmp(r->out, r->dek, SP_KEY_BYTES) != 0) die_msg("the EVP key wrap reference did not round-trip");
    sp_wipe(r->out, sizeof r->out);
}

static void ref_free(kwp_ref *r) {
    EVP_CIPHER_free(r->cipher);
    sp_wipe(r, sizeof *r);
}

/* ---- ours: sp_kms_wrap_key and sp_kms_unwrap_key ---- */
typedef struct kms_run {
    op_status st;
    sp_kms *kms;
    sp_key *dek;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len;
    uint8_t blob[SP_KMS_MAX_WRAPPED]; /* what unwrap opens: one wrap made up front */
    size_t blob_len;
} kms_run;

static bool kms_wrap_once(void *arg) {
    kms_run *k = arg;
    sp_error rc = sp_kms_wrap_key(k->kms, k->dek, k->wrapped, sizeof k->wrapped, &k->wrapped_len);
    return rc == SP_OK || op_fail(k, "sp_kms_wrap_key", rc);
}

static bool kms_unwrap_once(void *arg) {
    kms_run *k = arg;
    sp_key *key = NULL;
    sp_error rc = sp_kms_unwrap_key(k->kms, k->blob, k->blob_len, &key);
    sp_key_free(key);
    return rc == SP_OK || op_fail(k, "sp_kms_unwrap_key", rc);
}

/* A first wrap, whose blob the unwrap runs open, and a check that it opens
 * to the data key. */
static void kms_run_init(kms_run *k, sp_kms *kms, sp_key *dek) {
    memset(k, 0, sizeof *k);
    k->kms = kms;
    k->dek = dek;
    check_op(kms_wrap_once(k), k);
    memcpy(k->blob, k->wrapped, k->wrapped_len);
    k->blob_len = k->wrapped_len;
    sp_key *back = NULL;
    sp_error rc = sp_kms_unwrap_key(kms, k->blob, k->blob_len, &back);
    if (rc != SP_OK) die("sp_kms_unwrap_key", rc);
    uint8_t a[SP_KEY_BYTES], b[SP_KEY_BYTES];
    if (sp_key_export(dek, a) != SP_OK || sp_key_export(back, b) != SP_OK || memcmp(a, b, sizeof a) != 0)
        die_msg("%s: the unwrapped key is not the one wrapped", sp_kms_backend_name(kms));
    sp_wipe(a, sizeof a);
    sp_wipe(b, sizeof b);
    sp_key_free(back);
}

/* The wrap and unwrap lines of one sp_kms against the raw reference. */
static void bench_kms_vs_raw(const char *tag, sp_kms *kms, sp_key *dek, kwp_ref *ref, double seconds,
                             uint64_t max_ops) {
    kms_run k;
    kms_run_init(&k, kms, dek);
    char name[64];
    pair_result w = run_pair(kms_wrap_once, &k, ref_wrap_once, ref, seconds, max_ops);
    FMT(name, "kms_wrap_%s", tag);
    bench_emit(name, "ops/s", w.ours, w.reference);
    pair_result u = run_pair(kms_unwrap_once, &k, ref_unwrap_once, ref, seconds, max_ops);
    FMT(name, "kms_unwrap_%s", tag);
    bench_emit(name, "ops/s", u.ours, u.reference);
}

static sp_kms *open_kms(const char *config, const char *what) {
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(config, &kms);
    if (rc != SP_OK) die(what, rc);
    return kms;
}

/* ---- local ---- */
static void bench_local(sp_kms *kms, sp_key *dek, kwp_ref *ref, double seconds) {
    note("local (%s)", sp_kms_key_id(kms));
    bench_kms_vs_raw("local", kms, dek, ref, seconds, FAST_MAX_OPS);
}

/* ---- PKCS#11 ---- */
static void bench_pkcs11(sp_key *dek, kwp_ref *ref, double seconds) {
    const char *base = getenv("SP_BENCH_PKCS11");
    if (base == NULL || base[0] == 0) {
        note("SP_BENCH_PKCS11 is not set: no pkcs11 lines (scripts/kms-fixtures start makes a SoftHSM2 token)");
        return;
    }
    static const char *const mechs[] = {"aes-kwp", "aes-gcm", "rsa-oaep"};
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++) {
        char config[SP_KMS_MAX_CONFIG], tag[32];
        FMT(config, "%s;mechanism=%s", base, mechs[i]);
        FMT(tag, "pkcs11_%s", mechs[i]);
        sp_kms *kms = NULL;
        sp_error rc = sp_kms_open(config, &kms);
        if (rc == SP_ERR_BAD_CONFIG && strcmp(mechs[i], "rsa-oaep") == 0) {
            /* a token without SHA-256 OAEP (older SoftHSM2): the library's
             * documented fallback, raw RSA in the token and OAEP here */
            note("this token has no SHA-256 OAEP: rsa-oaep measured with oaep-decode=host");
            FMT(config, "%s;mechanism=%s;oaep-decode=host", base, mechs[i]);
            rc = sp_kms_open(config, &kms);
        }
        if (rc != SP_OK) die("sp_kms_open(SP_BENCH_PKCS11)", rc);
        note("pkcs11 %s (%s)", mechs[i], sp_kms_key_id(kms));
        bench_kms_vs_raw(tag, kms, dek, ref, seconds, SLOW_MAX_OPS);
        sp_kms_close(kms);
    }
}

/* ---- KMIP and its peer ---- */
static double parse_rate(const char *text) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    while (end != NULL && (*end == '\n' || *end == '\r' || *end == ' ')) end++;
    if (end == text || end == NULL || *end != 0 || errno != 0 || !isfinite(v) || v <= 0) return -1;
    return v;
}

static void peer_script(char *out, size_t cap) {
    /* next to this file: SP_SOURCE_DIR when given, else the absolute path
     * CMake compiles this file by */
    const char *src = getenv("SP_SOURCE_DIR");
    const char *slash = strrchr(__FILE__, '/');
    int n = src != NULL && src[0] != 0 ? snprintf(out, cap, "%s/bench/kmip_peer.py", src)
            : slash != NULL            ? snprintf(out, cap, "%.*s/kmip_peer.py", (int)(slash - __FILE__), __FILE__)
                                       : snprintf(out, cap, "bench/kmip_peer.py");
    if (n < 0 || (size_t)n >= cap) die_msg("the path of kmip_peer.py is too long");
    if (out[0] != '/') {
        char here[PATH_MAX / 2];
        if (getcwd(here, sizeof here) == NULL) die_msg("getcwd: %s", strerror(errno));
        char rel[PATH_MAX / 2];
        if (strlen(out) >= sizeof rel) die_msg("the path of kmip_peer.py is too long");
        memcpy(rel, out, strlen(out) + 1);
        n = snprintf(out, cap, "%s/%s", here, rel);
        if (n < 0 || (size_t)n >= cap) die_msg("the path of kmip_peer.py is too long");
    }
    if (access(out, R_OK) != 0) die_msg("%s: %s", out, strerror(errno));
}

/* Runs the peer (host port ca cert key from SP_BENCH_KMIP_PEER) and returns
 * its Encrypt calls per second. Its stdout is read against a deadline so a
 * server that stops answering cannot hang the bench; its stderr is ours. */
static double run_peer(const char *peer_env) {
    char words[2048];
    if (strlen(peer_env) >= sizeof words) die_msg("SP_BENCH_KMIP_PEER is too long");
    memcpy(words, peer_env, strlen(peer_env) + 1);
    char *arg[5];
    size_t count = 0;
    char *save = NULL;
    for (char *w = strtok_r(words, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save)) {
        if (count == 5) die_msg("SP_BENCH_KMIP_PEER must be \"host port ca cert key\"");
        arg[count++] = w;
    }
    if (count != 5) die_msg("SP_BENCH_KMIP_PEER must be \"host port ca cert key\"");
    if (access(PYTHON, X_OK) != 0) die_msg("%s: %s (the KMIP peer needs it)", PYTHON, strerror(errno));
    char script[PATH_MAX];
    peer_script(script, sizeof script);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die_msg("pipe2: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0 || posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO) != 0)
        die_msg("posix_spawn_file_actions failed");
    char *const argv[] = {PYTHON, script, arg[0], arg[1], arg[2], arg[3], arg[4], PEER_SECONDS, PEER_MAX_OPS, NULL};
    pid_t pid;
    int err = posix_spawn(&pid, PYTHON, &fa, NULL, argv, environ);
    (void)posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (err != 0) die_msg("posix_spawn %s: %s", PYTHON, strerror(err));

    char out[256];
    size_t len = 0;
    double deadline = bench_now() + PEER_DEADLINE_MS / 1000.0;
    bool timed_out = false;
    for (;;) {
        double left = deadline - bench_now();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die_msg("poll: %s", strerror(errno));
        if (r == 0) continue;
        ssize_t got = read(fds[0], out + len, sizeof out - 1 - len);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* end of file: the peer is done */
        len += (size_t)got;
        if (len == sizeof out - 1) break; /* more than a number: parse_rate refuses it */
    }
    out[len] = 0;
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) die_msg("waitpid: %s", strerror(errno));
    }
    if (timed_out) die_msg("kmip_peer.py did not finish within %d s", PEER_DEADLINE_MS / 1000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die_msg("kmip_peer.py failed (status %d)", status);
    double rate = parse_rate(out);
    if (rate < 0) die_msg("kmip_peer.py printed \"%s\", not a rate", out);
    return rate;
}

static void bench_kmip(sp_key *dek, double seconds) {
    const char *config = getenv("SP_BENCH_KMIP");
    const char *peer = getenv("SP_BENCH_KMIP_PEER");
    if (config == NULL || config[0] == 0 || peer == NULL || peer[0] == 0) {
        note("SP_BENCH_KMIP or SP_BENCH_KMIP_PEER is not set: no kmip lines (scripts/kms-fixtures start runs a PyKMIP "
             "server)");
        return;
    }
    sp_kms *kms = open_kms(config, "sp_kms_open(SP_BENCH_KMIP)");
    note("kmip (%s)", sp_kms_key_id(kms));
    kms_run k;
    kms_run_init(&k, kms, dek);
    (void)run_bounded(kms_wrap_once, &k, WARMUP_SECONDS, WARMUP_MAX_OPS);
    (void)run_bounded(kms_unwrap_once, &k, WARMUP_SECONDS, WARMUP_MAX_OPS);

    /* The peer runs twice, about 2 s each, between our three runs, and its
     * best counts: a Python process on a small shared machine varies more
     * than we do, and interleaving lets a burst of load hit both sides. */
    uint64_t per_run = SLOW_MAX_OPS / BENCH_REPEATS;
    double wrap = 0, unwrap = 0, reference = 0;
    for (int round = 0; round < BENCH_REPEATS; round++) {
        double w = run_bounded(kms_wrap_once, &k, seconds, per_run);
        double u = run_bounded(kms_unwrap_once, &k, seconds, per_run);
        if (w > wrap) wrap = w;
        if (u > unwrap) unwrap = u;
        if (round + 1 < BENCH_REPEATS) {
            double r = run_peer(peer);
            if (r > reference) reference = r;
        }
    }
    bench_emit("kms_wrap_kmip", "ops/s", wrap, reference);
    bench_emit("kms_unwrap_kmip", "ops/s", unwrap, reference);
    sp_kms_close(kms);
}

/* ---- the keyring ---- */
typedef struct triple {
    char tenant[KR_NAME];
    char channel[KR_NAME];
    char version[SP_KEY_VERSION_CHARS + 1];
} triple;

static int triple_cmp(const void *a, const void *b) {
    const triple *x = a, *y = b;
    int c = strcmp(x->tenant, y->tenant);
    if (c == 0) c = strcmp(x->channel, y->channel);
    if (c == 0) c = strcmp(x->version, y->version);
    return c;
}

typedef struct lookup_run {
    op_status st;
    const sp_keyring *kr;
    const triple *keys;   /* in the keyring's order */
    const triple *sorted; /* the same, sorted for bsearch */
    const uint16_t *seq;  /* random indices into keys */
    size_t cursor;
} lookup_run;

static const triple *next_query(lookup_run *l) {
    const triple *q = &l->keys[l->seq[l->cursor]];
    l->cursor = (l->cursor + 1) & (LOOKUP_SEQ - 1);
    return q;
}

static bool keyring_find_once(void *arg) {
    lookup_run *l = arg;
    const triple *q = next_query(l);
    sp_keyring_entry e;
    sp_error rc = sp_keyring_find(l->kr, q->tenant, q->channel, q->version, &e);
    return rc == SP_OK || op_fail(l, "sp_keyring_find", rc);
}

static bool bsearch_once(void *arg) {
    lookup_run *l = arg;
    const triple *q = next_query(l);
    return bsearch(q, l->sorted, KR_KEYS, sizeof *l->sorted, triple_cmp) != NULL || op_fail(l, "bsearch", SP_OK);
}

typedef struct load_run {
    op_status st;
    sp_keyring *kr;
    const char *tenant, *channel, *active; /* the channel loaded, its active version */
} load_run;

static bool load_wire_once(void *arg) {
    load_run *l = arg;
    sp_wire *wire = NULL;
    sp_error rc = sp_wire_new(&wire);
    if (rc != SP_OK) return op_fail(l, "sp_wire_new", rc);
    rc = sp_keyring_load_wire(l->kr, l->tenant, l->channel, wire);
    bool ok = rc == SP_OK || op_fail(l, "sp_keyring_load_wire", rc);
    /* loaded means the newest version is the one that seals */
    const char *active = ok ? sp_wire_active_version(wire) : NULL;
    if (ok && (active == NULL || strcmp(active, l->active) != 0))
        ok = op_fail(l, "making the newest version active in sp_keyring_load_wire", SP_OK);
    sp_wire_free(wire);
    return ok;
}

/* The floor of loading 10 versions: unwrapping them, nothing else. */
typedef struct unwraps_run {
    op_status st;
    kwp_ref *ref;
    uint8_t wrapped[KR_VERSIONS][KWP_WRAPPED];
} unwraps_run;

static bool raw_unwraps_once(void *arg) {
    unwraps_run *u = arg;
    bool ok = true;
    for (size_t i = 0; ok && i < KR_VERSIONS; i++)
        ok = kwp_once(u->ref, 0, u->wrapped[i], KWP_WRAPPED, u->ref->out, SP_KEY_BYTES);
    sp_wipe(u->ref->out, sizeof u->ref->out);
    return ok || op_fail(u, u->ref->st.failed, SP_OK);
}

static void bench_keyring(sp_kms *local, kwp_ref *ref, double seconds) {
    char path[PATH_MAX];
    FMT(path, "%s/keyring.json", g_dir);
    sp_keyring *kr = NULL;
    sp_error rc = sp_keyring_open(path, local, &kr);
    if (rc != SP_OK) die("sp_keyring_open", rc);

    /* Grown the way scheduled rotation grows it: a first version for each
     * of the 100 channels, then nine rounds of sp_keyring_maintain, each
     * rotating every channel in one locked rewrite of the file (1000 single
     * rotations would rewrite a growing file 1000 times: over 20 s here).
     * overlap 0 retires nothing, so all 10 versions stay loadable. */
    static triple keys[KR_KEYS], sorted[KR_KEYS];
    int64_t now = (int64_t)time(NULL);
    double start = bench_now();
    for (int t = 0; t < KR_TENANTS; t++) {
        for (int c = 0; c < KR_CHANNELS; c++) {
            char tenant[KR_NAME], channel[KR_NAME], version[SP_KEY_VERSION_CHARS + 1];
            FMT(tenant, "tenant-%02d", t);
            FMT(channel, "channel-%02d", c);
            rc = sp_keyring_rotate(kr, tenant, channel, now, version);
            if (rc != SP_OK) die("sp_keyring_rotate", rc);
        }
    }
    const sp_keyring_policy policy = {.rotate_after_s = 1, .overlap_s = 0};
    for (int v = 1; v < KR_VERSIONS; v++) {
        size_t rotated = 0, retired = 0;
        rc = sp_keyring_maintain(kr, &policy, now + v, &rotated, &retired);
        if (rc != SP_OK) die("sp_keyring_maintain", rc);
        if (rotated != KR_TENANTS * KR_CHANNELS || retired != 0)
            die_msg("sp_keyring_maintain rotated %zu and retired %zu keys", rotated, retired);
    }
    if (sp_keyring_count(kr) != KR_KEYS) die_msg("the keyring holds %zu keys, not %d", sp_keyring_count(kr), KR_KEYS);
    note("keyring of %d keys over %d channels built in %.1f s", KR_KEYS, KR_TENANTS * KR_CHANNELS,
         bench_now() - start);

    /* The triples as the keyring lists them, and the active version of the
     * channel loaded below: that of the first key, whose ten versions lie
     * one in every hundred keys through the keyring. */
    const char *active = NULL;
    for (size_t i = 0; i < KR_KEYS; i++) {
        sp_keyring_entry e;
        rc = sp_keyring_get(kr, i, &e);
        if (rc != SP_OK) die("sp_keyring_get", rc);
        triple *k = &keys[i];
        if (strlen(e.tenant) >= KR_NAME || strlen(e.channel) >= KR_NAME) die_msg("unexpected name in the keyring");
        memcpy(k->tenant, e.tenant, strlen(e.tenant) + 1);
        memcpy(k->channel, e.channel, strlen(e.channel) + 1);
        memcpy(k->version, e.version, sizeof k->version);
        if (e.state == SP_KEYRING_ACTIVE && strcmp(k->tenant, keys[0].tenant) == 0 &&
            strcmp(k->channel, keys[0].channel) == 0)
            active = k->version;
    }
    if (active == NULL) die_msg("no active version for %s/%s", keys[0].tenant, keys[0].channel);
    memcpy(sorted, keys, sizeof sorted);
    qsort(sorted, KR_KEYS, sizeof sorted[0], triple_cmp);

    static uint16_t seq[LOOKUP_SEQ];
    rc = sp_random((uint8_t *)seq, sizeof seq);
    if (rc != SP_OK) die("sp_random", rc);
    for (size_t i = 0; i < LOOKUP_SEQ; i++) seq[i] = (uint16_t)(seq[i] % KR_KEYS);

    lookup_run ours = {.kr = kr, .keys = keys, .sorted = sorted, .seq = seq};
    lookup_run theirs = ours;
    pair_result lk = run_pair(keyring_find_once, &ours, bsearch_once, &theirs, seconds, FAST_MAX_OPS);
    bench_emit("keyring_lookup_1000", "ops/s", lk.ours, lk.reference);

    load_run load = {.kr = kr, .tenant = keys[0].tenant, .channel = keys[0].channel, .active = active};
    check_op(load_wire_once(&load), &load);
    unwraps_run raw = {.ref = ref};
    for (size_t i = 0; i < KR_VERSIONS; i++) {
        check_op(ref_wrap_once(ref), ref);
        memcpy(raw.wrapped[i], ref->wrapped, KWP_WRAPPED);
    }
    pair_result lw = run_pair(load_wire_once, &load, raw_unwraps_once, &raw, seconds, FAST_MAX_OPS);
    bench_emit("keyring_load_wire_10", "ops/s", lw.ours, lw.reference);

    sp_keyring_close(kr);
}


int main(void) {
    double seconds = bench_seconds(0.25);
    sp_error rc = sp_init();
    if (rc != SP_OK) die("sp_init", rc);
    make_dir();

    sp_key *dek = NULL;
    rc = sp_key_generate(&dek);
    if (rc != SP_OK) die("sp_key_generate", rc);
    kwp_ref ref;
    ref_init(&ref);

    char config[SP_KMS_MAX_CONFIG];
    FMT(config, "local:path=%s/master.key;create=1", g_dir);
    sp_kms *local = open_kms(config, "sp_kms_open(local)");

    double start = bench_now();
    bench_local(local, dek, &ref, seconds);
    bench_pkcs11(dek, &ref, seconds);
    bench_kmip(dek, seconds);
    bench_keyring(local, &ref, seconds);
    note("done in %.1f s", bench_now() - start);

    sp_kms_close(local);
    ref_free(&ref);
    sp_key_free(dek);
    return 0;
}
