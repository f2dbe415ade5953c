/*
 * Key management from the command line: reach the customer's KMS
 * (kms check), run the provider keyring's life cycle (keys list, rotate,
 * retire, destroy, min-version, maintain), rotate the master key under it
 * (keys rewrap, resumable, with a progress bar on a terminal), hand keys to a
 * provider and take them in on the provider's side (keys export / import,
 * a JWE to the provider's public key), and check the audit log's chain
 * (audit verify). The keyring is a file (--keyring) or, as sealpostd keeps
 * it, one tenant's row of the database (--store URL --tenant T);
 * `keys import-file` moves a file's tenants into the database.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define MAX_EXPORT_VERSIONS SP_KEYX_MAX_ITEMS

typedef struct {
    const char *kms, *new_kms, *keyring, *store, *audit, *tenant, *channel, *recipient, *private_key, *keys, *alg;
    const char *versions[MAX_EXPORT_VERSIONS];
    size_t n_versions;
    int64_t batch, rotate_after, overlap, expires_in, now;
} keys_args;

enum {
    K_KMS = 1000, K_NEW_KMS, K_KEYRING, K_AUDIT, K_TENANT, K_CHANNEL, K_VERSION, K_RECIPIENT, K_PRIVATE, K_KEYS,
    K_ALG, K_BATCH, K_ROTATE_AFTER, K_OVERLAP, K_EXPIRES_IN, K_NOW, K_HELP, K_STORE
};

static const struct option keys_options[] = {
    {"kms", required_argument, NULL, K_KMS},
    {"new-kms", required_argument, NULL, K_NEW_KMS},
    {"keyring", required_argument, NULL, K_KEYRING},
    {"store", required_argument, NULL, K_STORE},
    {"audit", required_argument, NULL, K_AUDIT},
    {"tenant", required_argument, NULL, K_TENANT},
    {"channel", required_argument, NULL, K_CHANNEL},
    {"version", required_argument, NULL, K_VERSION},
    {"recipient", required_argument, NULL, K_RECIPIENT},
    {"private-key", required_argument, NULL, K_PRIVATE},
    {"keys", required_argument, NULL, K_KEYS},
    {"alg", required_argument, NULL, K_ALG},
    {"batch", required_argument, NULL, K_BATCH},
    {"rotate-after", required_argument, NULL, K_ROTATE_AFTER},
    {"overlap", required_argument, NULL, K_OVERLAP},
    {"expires-in", required_argument, NULL, K_EXPIRES_IN},
    {"now", required_argument, NULL, K_NOW},
    {"help", no_argument, NULL, K_HELP},
    {NULL, 0, NULL, 0},
};

static const char usage_keys[] =
    "usage: sealpost keys list     --keyring FILE [--tenant T] [--channel C]\n"
    "       sealpost keys rotate   --keyring FILE --kms CONFIG --tenant T --channel C\n"
    "       sealpost keys retire   --keyring FILE --kms CONFIG --tenant T --channel C --version UUID\n"
    "       sealpost keys destroy  --keyring FILE --kms CONFIG --tenant T --channel C --version UUID\n"
    "       sealpost keys min-version --keyring FILE --kms CONFIG --tenant T --channel C --version UUID\n"
    "       sealpost keys maintain --keyring FILE --kms CONFIG --rotate-after SECONDS --overlap SECONDS\n"
    "       sealpost keys rewrap   --keyring FILE --kms OLD --new-kms NEW [--batch N]\n"
    "       sealpost keys export   --keyring FILE --kms CONFIG --tenant T --channel C --recipient PEM\n"
    "                              [--version UUID]... [--alg RSA-OAEP-256|ECDH-ES+A256KW] [--expires-in SECONDS]\n"
    "       sealpost keys import   --keys FILE --private-key PEM   (reads the JWE on standard input)\n"
    "       sealpost keys import-file --keyring FILE --store URL\n"
    "\n"
    "Instead of --keyring FILE, every command but import-file takes --store URL\n"
    "--tenant T: the tenant's keyring as sealpostd keeps it in its database\n"
    "(sqlite:PATH or postgresql://...). 'import-file' copies each tenant of a\n"
    "keyring file into the database, leaving tenants already there alone.\n"
    "\n"
    "The provider keyring holds, per tenant and channel, AES-256 key versions\n"
    "wrapped by the tenant's master key in its KMS. Life cycle: active ->\n"
    "decrypt-only (after a rotation, while messages are in flight) -> retired ->\n"
    "destroyed. 'export' writes a JWE for the provider's public key holding the\n"
    "channel's usable versions, the active one last; 'import' (the provider's\n"
    "side) adds them to a key file and makes the last one active. 'rewrap'\n"
    "moves every key to a new master key; run it again to resume after a crash.\n"
    "--audit FILE records every KMS call in a hash-chained log. --now sets the\n"
    "clock (Unix seconds) for scripted tests. KMS CONFIG: see docs/KMS.md.\n";

static const char usage_kms[] =
    "usage: sealpost kms check --kms CONFIG [--audit FILE]\n"
    "\n"
    "Reaches the KMS, finds the master key, wraps and unwraps a test data key,\n"
    "and reports what works. CONFIG is local:path=FILE[;create=1],\n"
    "pkcs11:module=SO;token=LABEL;pin-file=FILE;key=LABEL[;mechanism=...] or\n"
    "kmip:host=H;port=P;ca=FILE;cert=FILE;key=FILE;key-id=UID (docs/KMS.md).\n";

static const char usage_audit[] =
    "usage: sealpost audit verify FILE\n"
    "\n"
    "Checks the audit log's hash chain: a removed, reordered, edited or\n"
    "truncated line is reported with its line number.\n";

static int parse_keys_args(int argc, char **argv, const char *usage, keys_args *a) {
    memset(a, 0, sizeof *a);
    a->batch = 100;
    int ch;
    while ((ch = getopt_long(argc, argv, "", keys_options, NULL)) != -1) {
        switch (ch) {
        case K_KMS: a->kms = optarg; break;
        case K_NEW_KMS: a->new_kms = optarg; break;
        case K_KEYRING: a->keyring = optarg; break;
        case K_STORE: a->store = optarg; break;
        case K_AUDIT: a->audit = optarg; break;
        case K_TENANT: a->tenant = optarg; break;
        case K_CHANNEL: a->channel = optarg; break;
        case K_VERSION:
            if (a->n_versions == MAX_EXPORT_VERSIONS) return usage_error("at most %d --version", MAX_EXPORT_VERSIONS);
            a->versions[a->n_versions++] = optarg;
            break;
        case K_RECIPIENT: a->recipient = optarg; break;
        case K_PRIVATE: a->private_key = optarg; break;
        case K_KEYS: a->keys = optarg; break;
        case K_ALG: a->alg = optarg; break;
        case K_BATCH:
            if (parse_i64(optarg, "--batch", 1, 100000, &a->batch) != 0) return EXIT_USAGE;
            break;
        case K_ROTATE_AFTER:
            if (parse_i64(optarg, "--rotate-after", 0, (int64_t)1 << 40, &a->rotate_after) != 0) return EXIT_USAGE;
            break;
        case K_OVERLAP:
            if (parse_i64(optarg, "--overlap", 0, (int64_t)1 << 40, &a->overlap) != 0) return EXIT_USAGE;
            break;
        case K_EXPIRES_IN:
            if (parse_i64(optarg, "--expires-in", 0, (int64_t)1 << 40, &a->expires_in) != 0) return EXIT_USAGE;
            break;
        case K_NOW:
            if (parse_i64(optarg, "--now", 1, (int64_t)1 << 40, &a->now) != 0) return EXIT_USAGE;
            break;
        case K_HELP: fputs(usage, stdout); exit(0);
        default: return bad_option(argv);
        }
    }
    if (a->now == 0) a->now = (int64_t)time(NULL);
    return 0;
}

static int require(const char *value, const char *name) {
    return value != NULL ? 0 : usage_error("%s is required", name);
}

/* The KMS (with the audit log attached when asked for). */
typedef struct {
    sp_kms *kms;
    sp_audit *audit;
} kms_handle;

static void kms_handle_close(kms_handle *h) {
    sp_kms_close(h->kms);
    sp_audit_close(h->audit);
    memset(h, 0, sizeof *h);
}

static int kms_handle_open(const char *config, const char *audit_path, kms_handle *h) {
    memset(h, 0, sizeof *h);
    sp_error err = SP_OK;
    if (audit_path != NULL && (err = sp_audit_open(audit_path, &h->audit)) != SP_OK) return fail_sp(audit_path, err);
    if ((err = sp_kms_open(config, &h->kms)) != SP_OK) {
        kms_handle_close(h);
        return fail_sp("kms", err);
    }
    sp_kms_set_audit(h->kms, h->audit);
    return 0;
}

/* ---- kms check ---- */
int cmd_kms(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_kms, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "check") != 0) return usage_error("unknown kms command '%s'", argv[1]);
    keys_args a;
    int rc = parse_keys_args(argc - 1, argv + 1, usage_kms, &a);
    if (rc != 0 || (rc = require(a.kms, "--kms")) != 0) return rc;
    kms_handle h;
    if ((rc = kms_handle_open(a.kms, a.audit, &h)) != 0) return rc;
    char report[4096];
    sp_error err = sp_kms_check(h.kms, report, sizeof report);
    fputs(report, stdout);
    kms_handle_close(&h);
    return err == SP_OK ? 0 : fail_sp("check", err);
}

/* ---- audit verify ---- */
int cmd_audit(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_audit, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "verify") != 0) return usage_error("unknown audit command '%s'", argv[1]);
    if (argc == 3 && strcmp(argv[2], "--help") == 0) {
        fputs(usage_audit, stdout);
        return 0;
    }
    if (argc != 3) return usage_error("audit verify takes one FILE");
    sp_audit_report report;
    memset(&report, 0, sizeof report);
    sp_error err = sp_audit_verify(argv[2], &report);
    if (err == SP_OK) {
        printf("%s: %llu lines, chain intact\n", argv[2], (unsigned long long)report.lines);
        return 0;
    }
    if (err == SP_ERR_AUDIT_BROKEN) return fail("%s: chain broken: %s", argv[2], report.reason);
    return fail_sp(argv[2], err);
}

/* ---- keys ---- */
static void print_entry(const sp_keyring_entry *e) {
    printf("%-16s %-12s %s  %-12s created=%lld", e->tenant, e->channel, e->version, sp_keyring_state_name(e->state),
           (long long)e->created);
    if (e->deactivated) printf(" deactivated=%lld", (long long)e->deactivated);
    if (e->retired) printf(" retired=%lld", (long long)e->retired);
    if (e->destroyed) printf(" destroyed=%lld", (long long)e->destroyed);
    printf(" master=%s\n", e->master_key[0] ? e->master_key : "-");
}

static int keys_list(sp_keyring *kr, const keys_args *a) {
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        if (sp_keyring_get(kr, i, &e) != SP_OK) continue;
        if (a->tenant && strcmp(a->tenant, e.tenant) != 0) continue;
        if (a->channel && strcmp(a->channel, e.channel) != 0) continue;
        print_entry(&e);
    }
    return 0;
}

typedef struct {
    bool tty;
} progress_state;

static sp_error show_progress(void *arg, size_t done, size_t total) {
    progress_state *p = arg;
    if (p->tty) {
        int width = 40, filled = total ? (int)((double)done / (double)total * width) : width;
        fprintf(stderr, "\rrewrap [%.*s%*s] %zu/%zu", filled, "########################################",
                width - filled, "", done, total);
        if (done == total) fputc('\n', stderr);
    } else {
        fprintf(stderr, "rewrap: %zu/%zu\n", done, total);
    }
    return SP_OK;
}

static int keys_rewrap(sp_keyring *kr, const keys_args *a, sp_audit *audit) {
    int rc = require(a->new_kms, "--new-kms");
    if (rc != 0) return rc;
    kms_handle fresh;
    if ((rc = kms_handle_open(a->new_kms, NULL, &fresh)) != 0) return rc;
    sp_kms_set_audit(fresh.kms, audit); /* one log, one chain, for both keys */
    progress_state p = {isatty(STDERR_FILENO) == 1};
    size_t done = 0;
    sp_error err = sp_keyring_rewrap(kr, fresh.kms, (size_t)a->batch, show_progress, &p, &done);
    kms_handle_close(&fresh);
    if (err != SP_OK) return fail_sp("rewrap (run it again to resume)", err);
    printf("rewrapped %zu keys\n", done);
    return 0;
}

static int read_file(const char *path, size_t limit, buffer *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return fail("%s: cannot open", path);
    out->cap = limit + 1;
    out->data = malloc(out->cap);
    if (out->data == NULL) {
        fclose(f);
        return fail("out of memory");
    }
    out->len = fread(out->data, 1, out->cap, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad) return fail("%s: read error", path);
    if (out->len > limit) return fail("%s: larger than %zu bytes", path, limit);
    return 0;
}

static int keys_export(sp_keyring *kr, const keys_args *a) {
    int rc = require(a->recipient, "--recipient");
    if (rc != 0) return rc;
    const char *versions[MAX_EXPORT_VERSIONS];
    size_t n = a->n_versions;
    memcpy(versions, a->versions, n * sizeof versions[0]);
    if (n == 0) {
        /* the channel's usable versions, the active one last */
        const char *active = NULL;
        static char names[MAX_EXPORT_VERSIONS][SP_KEY_VERSION_CHARS + 1];
        for (size_t i = 0; i < sp_keyring_count(kr) && n < MAX_EXPORT_VERSIONS; i++) {
            sp_keyring_entry e;
            if (sp_keyring_get(kr, i, &e) != SP_OK || strcmp(e.tenant, a->tenant) || strcmp(e.channel, a->channel))
                continue;
            if (e.state != SP_KEYRING_ACTIVE && e.state != SP_KEYRING_DECRYPT_ONLY) continue;
            memcpy(names[n], e.version, sizeof names[n]);
            if (e.state == SP_KEYRING_ACTIVE) active = names[n];
            versions[n] = names[n];
            n++;
        }
        for (size_t i = 0; active && i + 1 < n; i++) {
            if (versions[i] == active) {
                versions[i] = versions[n - 1];
                versions[n - 1] = active;
            }
        }
        if (n == 0) return fail("%s/%s has no usable key versions", a->tenant, a->channel);
    }
    buffer pem = {0};
    if ((rc = read_file(a->recipient, SP_KEYX_MAX_PEM_BYTES, &pem)) != 0) return rc;
    sp_keyx_item items[MAX_EXPORT_VERSIONS];
    memset(items, 0, sizeof items);
    sp_error err = SP_OK;
    for (size_t i = 0; i < n && err == SP_OK; i++) {
        memcpy(items[i].version, versions[i], strnlen(versions[i], SP_KEY_VERSION_CHARS));
        items[i].expires = a->expires_in ? a->now + a->expires_in : 0;
        err = sp_keyring_unwrap(kr, a->tenant, a->channel, versions[i], &items[i].key);
    }
    char *jwe = malloc(SP_KEYX_MAX_JWE_BYTES);
    size_t jwe_len = 0;
    if (err == SP_OK && jwe == NULL) err = SP_ERR_NO_MEMORY;
    if (err == SP_OK)
        err = sp_keyx_export(items, n, (const char *)pem.data, pem.len, a->alg, jwe, SP_KEYX_MAX_JWE_BYTES, &jwe_len);
    for (size_t i = 0; i < n; i++) sp_key_free(items[i].key);
    buffer_wipe_free(&pem);
    if (err != SP_OK) {
        free(jwe);
        return fail_sp("export", err);
    }
    rc = write_stdout(jwe, jwe_len);
    if (rc == 0) rc = write_stdout("\n", 1);
    free(jwe);
    return rc;
}

static int keys_import(const keys_args *a) {
    int rc = require(a->keys, "--keys");
    if (rc == 0) rc = require(a->private_key, "--private-key");
    if (rc != 0) return rc;
    buffer pem = {0}, jwe = {0};
    if ((rc = read_file(a->private_key, SP_KEYX_MAX_PEM_BYTES, &pem)) != 0) return rc;
    if ((rc = read_stdin(&jwe, SP_KEYX_MAX_JWE_BYTES)) != 0) {
        buffer_wipe_free(&pem);
        return rc;
    }
    while (jwe.len > 0 && (jwe.data[jwe.len - 1] == '\n' || jwe.data[jwe.len - 1] == '\r')) jwe.len--;
    sp_keyx_item items[SP_KEYX_MAX_ITEMS];
    size_t n = 0;
    sp_error err = sp_keyx_import((const char *)jwe.data, jwe.len, (const char *)pem.data, pem.len, items,
                                  SP_KEYX_MAX_ITEMS, &n);
    buffer_wipe_free(&pem);
    buffer_wipe_free(&jwe);
    if (err != SP_OK) return fail_sp("import", err);
    for (size_t i = 0; i < n && err == SP_OK; i++) err = sp_keyfile_add(a->keys, items[i].version, items[i].key, i + 1 == n);
    for (size_t i = 0; i < n; i++) printf("%s%s\n", items[i].version, i + 1 == n ? " (active)" : "");
    sp_keyx_items_free(items, n);
    return err == SP_OK ? 0 : fail_sp(a->keys, err);
}

int cmd_keys(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_keys, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    static const char *const subs[] = {"list",   "rotate", "retire", "destroy", "min-version",
                                       "maintain", "rewrap", "export", "import",  "import-file"};
    bool known = false;
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) known |= strcmp(sub, subs[i]) == 0;
    if (!known) return usage_error("unknown keys command '%s'", sub);
    keys_args a;
    int rc = parse_keys_args(argc - 1, argv + 1, usage_keys, &a);
    if (rc != 0) return rc;
    if (strcmp(sub, "import") == 0) return keys_import(&a);
    if (strcmp(sub, "import-file") == 0) {
        if ((rc = require(a.keyring, "--keyring")) != 0 || (rc = require(a.store, "--store")) != 0) return rc;
        size_t imported = 0;
        sp_error ierr = sp_store_import_keyring_file(a.store, a.keyring, &imported);
        if (ierr != SP_OK) return fail_sp("import-file", ierr);
        printf("imported %zu tenant%s\n", imported, imported == 1 ? "" : "s");
        return 0;
    }

    if ((a.keyring == NULL) == (a.store == NULL)) return usage_error("give either --keyring FILE or --store URL");
    if (a.store != NULL && (rc = require(a.tenant, "--tenant")) != 0) return rc;
    bool needs_channel = strcmp(sub, "list") && strcmp(sub, "maintain") && strcmp(sub, "rewrap");
    bool needs_version = !strcmp(sub, "retire") || !strcmp(sub, "destroy") || !strcmp(sub, "min-version");
    if (needs_channel && ((rc = require(a.tenant, "--tenant")) || (rc = require(a.channel, "--channel")))) return rc;
    if (needs_version && a.n_versions != 1) return usage_error("exactly one --version is required");
    if (strcmp(sub, "list") != 0 && (rc = require(a.kms, "--kms")) != 0) return rc;

    kms_handle h = {0};
    if (a.kms != NULL && (rc = kms_handle_open(a.kms, a.audit, &h)) != 0) return rc;
    sp_keyring *kr = NULL;
    sp_error err = SP_OK;
    if (a.store != NULL) {
        sp_keyring_storage storage;
        err = sp_store_keyring_storage(a.store, a.tenant, &storage);
        if (err == SP_OK) err = sp_keyring_open_storage(&storage, h.kms, &kr);
    } else {
        err = sp_keyring_open(a.keyring, h.kms, &kr);
    }
    if (err != SP_OK) {
        kms_handle_close(&h);
        return fail_sp(a.store != NULL ? "store" : a.keyring, err);
    }
    char version[SP_KEY_VERSION_CHARS + 1];
    if (!strcmp(sub, "list")) {
        rc = keys_list(kr, &a);
    } else if (!strcmp(sub, "rotate")) {
        err = sp_keyring_rotate(kr, a.tenant, a.channel, a.now, version);
        if (err == SP_OK) printf("%s\n", version);
    } else if (!strcmp(sub, "retire")) {
        err = sp_keyring_retire(kr, a.tenant, a.channel, a.versions[0], a.now);
    } else if (!strcmp(sub, "destroy")) {
        err = sp_keyring_destroy(kr, a.tenant, a.channel, a.versions[0], a.now);
    } else if (!strcmp(sub, "min-version")) {
        err = sp_keyring_set_min_version(kr, a.tenant, a.channel, a.versions[0], a.now);
    } else if (!strcmp(sub, "maintain")) {
        sp_keyring_policy policy = {a.rotate_after, a.overlap};
        size_t rotated = 0, retired = 0;
        err = sp_keyring_maintain(kr, &policy, a.now, &rotated, &retired);
        if (err == SP_OK) printf("rotated %zu, retired %zu\n", rotated, retired);
    } else if (!strcmp(sub, "rewrap")) {
        rc = keys_rewrap(kr, &a, h.audit);
    } else {
        rc = keys_export(kr, &a);
    }
    sp_keyring_close(kr);
    kms_handle_close(&h);
    if (err != SP_OK) return fail_sp(sub, err);
    return rc;
}
