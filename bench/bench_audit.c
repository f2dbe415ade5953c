/*
 * bench_audit: what one audit record costs. The PII vault audits every
 * decrypt at send time, so sp_audit_record sits on the message path and must
 * keep up with tens of thousands of messages per second on one thread.
 *
 * ours: sp_audit_record with the five fields a vault decrypt carries, one
 * thread, into a fresh log in a temporary directory. reference: the floor
 * any append-only log has to pay, one write(2) of a line of the same length
 * to an O_APPEND file on the same file system, measured in the same run.
 * The ratio ours/reference is the number to watch; absolute rates depend on
 * the machine and its file system.
 *
 * A second line times sp_audit_verify over the log just written (lines/s)
 * against reading the same file and hashing each line with SHA-256, the
 * least a verifier of a hash chain must do.
 *
 * The machine is small and noisy, so each figure is the best of three runs,
 * ours and the reference alternating so that a burst of background load hits
 * both; every run starts from an empty file, so the log does not grow
 * without bound. Output is one JSON object per line on stdout; the exit
 * status reports errors only, never timings.
 *
 * SP_BENCH_SECONDS overrides the length of one run (default 0.5 s).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "sealpost/audit.h"
#include "bench_util.h"

#include "sealpost/sealpost.h"
#include "core/sp_core.h"

#define BENCH_REPEATS 3
#define BENCH_DEFAULT_SECONDS 0.5
#define BENCH_BATCH 256 /* records between clock reads */

static void die(const char *what, sp_error rc) {
    fprintf(stderr, "bench_audit: %s failed: %s (%s)\n", what, sp_error_name(rc), sp_strerror(rc));
    exit(1);
}

static void bench_die(const char *what) {
    fprintf(stderr, "bench_audit: %s\n", what);
    exit(1);
}

static void die_errno(const char *what) {
    fprintf(stderr, "bench_audit: %s: %s\n", what, strerror(errno));
    exit(1);
}



/* ---- the scratch directory ---- */

typedef struct {
    char dir[256];
    char log[320];
    char head[330];
    char raw[320];
} paths;

static void remove_all(const paths *p) {
    /* the log, its head and whatever else a run left (a stray temporary) */
    DIR *d = opendir(p->dir);
    if (d == NULL) return;
    struct dirent *e;
    char name[600];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(name, sizeof name, "%s/%s", p->dir, e->d_name);
        (void)unlink(name);
    }
    closedir(d);
}

/* ---- ours ---- */

/* One vault decrypt: which tenant, channel and key, which message, what
 * came of it. The message id changes per record, as it would. */
static sp_error record_once(sp_audit *a, uint64_t n) {
    static const char hex[] = "0123456789abcdef";
    char message_id[17];
    for (int i = 15; i >= 0; i--, n >>= 4) message_id[i] = hex[n & 15];
    message_id[16] = 0;
    const sp_audit_field f[] = {
        {"tenant", "acme-emea"},
        {"channel", "sms"},
        {"key_version", "4b3f2c1d-9a8e-4f7b-8c6d-5e4f3a2b1c0d"},
        {"message_id", message_id},
        {"result", "ok"},
    };
    return sp_audit_record(a, "vault.decrypt", f, SP_ARRAY_LEN(f));
}

/* Records for `seconds` into a fresh log; returns records/s. The log is
 * left in place (closed) for the verify run. */
static double run_ours(const paths *p, double seconds, uint64_t *lines, off_t *bytes) {
    remove_all(p);
    sp_audit *a = NULL;
    sp_error rc = sp_audit_open(p->log, &a);
    if (rc != SP_OK) die("sp_audit_open", rc);
    uint64_t n = 0;
    double start = bench_now(), t;
    do {
        for (int i = 0; i < BENCH_BATCH; i++) {
            rc = record_once(a, n++);
            if (rc != SP_OK) die("sp_audit_record", rc);
        }
        t = bench_now();
    } while (t - start < seconds);
    sp_audit_close(a); /* its fsyncs are outside the timing: once per log, not per record */
    struct stat st;
    if (stat(p->log, &st) != 0) die_errno("stat log");
    *lines = n;
    *bytes = st.st_size;
    return (double)n / (t - start);
}

/* ---- the floor ---- */

static double run_raw(const paths *p, const char *line, size_t len, double seconds) {
    int fd = open(p->raw, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) die_errno("open reference file");
    uint64_t n = 0;
    double start = bench_now(), t;
    do {
        for (int i = 0; i < BENCH_BATCH; i++) {
            if (write(fd, line, len) != (ssize_t)len) die_errno("write reference line");
        }
        n += BENCH_BATCH;
        t = bench_now();
    } while (t - start < seconds);
    if (close(fd) != 0) die_errno("close reference file");
    if (unlink(p->raw) != 0) die_errno("unlink reference file");
    return (double)n / (t - start);
}

/* ---- verify and its floor ---- */

static double run_verify(const paths *p, uint64_t lines) {
    sp_audit_report rep;
    double start = bench_now();
    sp_error rc = sp_audit_verify(p->log, &rep);
    double t = bench_now();
    if (rc != SP_OK) {
        fprintf(stderr, "bench_audit: verify: line %llu: %s\n", (unsigned long long)rep.bad_line, rep.reason);
        die("sp_audit_verify", rc);
    }
    if (rep.lines != lines) {
        fprintf(stderr, "bench_audit: verify counted %llu lines, %llu were recorded\n",
                (unsigned long long)rep.lines, (unsigned long long)lines);
        exit(1);
    }
    return (double)lines / (t - start);
}

/* Reads the log in large chunks and hashes every line: no parsing, no
 * canonical-form check, no chain. */
static double run_hash_floor(const paths *p, uint64_t lines) {
    int fd = open(p->log, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die_errno("open log for reading");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) die("EVP_MD_CTX_new", SP_ERR_NO_MEMORY);
    static char buf[1 << 16];
    size_t have = 0;
    uint64_t seen = 0;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    double start = bench_now();
    for (;;) {
        ssize_t got = read(fd, buf + have, sizeof buf - have);
        if (got < 0) die_errno("read log");
        if (got == 0) break;
        have += (size_t)got;
        char *at = buf, *end = buf + have, *nl;
        while ((nl = memchr(at, '\n', (size_t)(end - at))) != NULL) {
            if (EVP_DigestInit_ex2(ctx, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(ctx, at, (size_t)(nl - at)) != 1 ||
                EVP_DigestFinal_ex(ctx, d, &dn) != 1) {
                die("SHA-256", SP_ERR_CRYPTO_BACKEND);
            }
            seen++;
            at = nl + 1;
        }
        have = (size_t)(end - at);
        memmove(buf, at, have);
    }
    double t = bench_now();
    EVP_MD_CTX_free(ctx);
    close(fd);
    if (seen != lines) {
        fprintf(stderr, "bench_audit: the reference read %llu lines, %llu were recorded\n", (unsigned long long)seen,
                (unsigned long long)lines);
        exit(1);
    }
    return (double)lines / (t - start);
}

int main(void) {
    double seconds = bench_seconds(BENCH_DEFAULT_SECONDS);
    sp_error rc = sp_init();
    if (rc != SP_OK) die("sp_init", rc);

    paths p;
    const char *tmp = getenv("TMPDIR");
    snprintf(p.dir, sizeof p.dir, "%s/sp-bench-audit-XXXXXX", tmp != NULL && *tmp != 0 ? tmp : "/tmp");
    if (mkdtemp(p.dir) == NULL) die_errno("mkdtemp");
    snprintf(p.log, sizeof p.log, "%s/audit.log", p.dir);
    snprintf(p.head, sizeof p.head, "%s/audit.log.head", p.dir);
    snprintf(p.raw, sizeof p.raw, "%s/raw.log", p.dir);

    /* a short warm-up, which also gives the length of a typical line */
    uint64_t lines = 0;
    off_t bytes = 0;
    (void)run_ours(&p, seconds / 10, &lines, &bytes);
    size_t len = lines ? (size_t)(bytes / (off_t)lines) : 0;
    if (len < 2 || len > SP_AUDIT_MAX_LINE) {
        fprintf(stderr, "bench_audit: odd line length %zu\n", len);
        exit(1);
    }
    char line[SP_AUDIT_MAX_LINE + 1];
    memset(line, 'x', len - 1);
    line[len - 1] = '\n';

    double best_ours = 0, best_raw = 0, best_verify = 0, best_floor = 0;
    for (int r = 0; r < BENCH_REPEATS; r++) {
        double ours = run_ours(&p, seconds, &lines, &bytes);
        double raw = run_raw(&p, line, len, seconds);
        /* verify reads what was just written: from the page cache, as the
         * floor does right after it */
        double verify = run_verify(&p, lines);
        double floor = run_hash_floor(&p, lines);
        if (ours > best_ours) best_ours = ours;
        if (raw > best_raw) best_raw = raw;
        if (verify > best_verify) best_verify = verify;
        if (floor > best_floor) best_floor = floor;
    }
    bench_emit("audit_record", "records/s", best_ours, best_raw);
    bench_emit("audit_verify", "lines/s", best_verify, best_floor);

    remove_all(&p);
    if (rmdir(p.dir) != 0) die_errno("rmdir");
    return 0;
}
