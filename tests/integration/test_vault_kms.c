/*
 * The PII vault's Bring-Your-Own-Key promises, end to end against real
 * customer KMSs: SoftHSM2 tokens (softhsm_util.h) and a PyKMIP server with
 * its own PKI (kmip_util.h), driven through the public sp_vault, sp_keyring,
 * sp_kms and sp_audit APIs plus sp_kmip_revoke. Profiles' email and phone
 * are ingested (sp_vault_encrypt) into rows that hold only blobs, as a
 * database would, and decrypted at send time (sp_vault_decrypt) with an
 * audit log attached to the vault and to the KMS.
 *
 *  1. RSA-OAEP master key in SoftHSM2 (oaep-decode=host where the token has
 *     no SHA-256 OAEP, decided the way test_kms_pkcs11.c does). The token's
 *     files are taken away (the HSM is unreachable): ingestion still works
 *     on a cold cache, because new data keys are wrapped locally with the
 *     public key; sends of data whose key is not cached fail with a KMS
 *     error; no value, key or file holds plaintext. The files come back:
 *     every row decrypts, those ingested during the outage too. A second
 *     case has the sends fail often enough to open the KMS's circuit
 *     breaker before more profiles arrive: ingestion must still work.
 *  2. AES master key (aes-kwp): with the HSM gone a warm vault goes on, a
 *     cold one refuses ingestion with SP_ERR_KMS_UNAVAILABLE (retryable),
 *     writing nothing; after the HSM returns the retry succeeds.
 *  3. KMIP: the master key is revoked; with a 2 s cache TTL the sends work
 *     from the cached data key until the vault next asks the KMS, then fail
 *     with SP_ERR_KMS_ACCESS_DENIED: a busy vault at its refresh ahead of
 *     expiry, an idle one at expiry; the time is measured and must stay
 *     within the TTL from the unwrap. A cold vault is refused at once, for
 *     sends and ingestion. Every Decrypt the server performed has its
 *     kms.unwrap audit line, every send its vault line (refusals too), and
 *     sp_audit_verify passes.
 *  4. Master-key rotation: sp_keyring_rewrap from the SoftHSM AES key to
 *     the KMIP key. Every row still decrypts (and every blind index is
 *     unchanged) under the new KMS; the old KMS owns and opens no stored
 *     key; and with the old key destroyed in the token nothing changes.
 *
 * SoftHSM2 runs inside this process and re-reads its token directory only
 * when the module is initialised again, so "the HSM comes back" is the token
 * files coming back and the application reopening its KMS handles (the
 * module is finalised when the last handle closes, as sp_kms's module
 * registry does). Each test closes what it opened, and puts a token back,
 * in its teardown, so a failure does not leak into the next test.
 *
 * Temp directories (SoftHSM's, PyKMIP's, the keyrings' and logs') are
 * removed in the group teardown, else at exit, else (killed) by a janitor
 * child that outlives this process; the PyKMIP server is stopped by PID
 * (kmip_util.h). The whole run takes a few seconds. The last line is
 * "vault-kms: N passed, N failed[, N skipped]".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "integration/kmip_util.h"
#include "integration/softhsm_util.h"

#include "core/sp_core.h"
#include "kms/kmip_ttlv.h"
#include "kms/sp_kms.h"
#include "sealpost/sealpost.h"
#include "sealpost/vault.h"

#define TENANT "acme"
#define PIN "1234"
#define RSA_TOKEN "vault-rsa"
#define AES_TOKEN "vault-aes"
#define ROT_TOKEN "vault-rot"
#define MASTER "master"
#define TTL_S 2
#define VAULT_DECRYPT_EVENT "vault.decrypt"

#define assert_rc(expr, want)                                                                                    \
    do {                                                                                                         \
        sp_error rc_ = (expr);                                                                                   \
        if (rc_ != (want)) fail_msg("%s gave %s, expected %s", #expr, sp_error_name(rc_), sp_error_name(want)); \
    } while (0)

/* An error the KMS gave, as opposed to one about the data (SP_ERR_AUTH). */
#define assert_kms_refusal(rc)                                                                                \
    do {                                                                                                     \
        sp_error k_ = (rc);                                                                                  \
        if (k_ != SP_ERR_KMS_UNAVAILABLE && k_ != SP_ERR_KMS_ACCESS_DENIED)                                   \
            fail_msg("expected a KMS refusal, got %s", sp_error_name(k_));                                    \
    } while (0)

/* ---- the world ---- */

static softhsm_env g_hsm;
static kmip_env g_kmip = {.server = -1, .server_stdin = -1};
static char g_work[PATH_MAX]; /* keyrings and audit logs */
static char g_pin_file[PATH_MAX];
static char g_rsa_dir[PATH_MAX], g_aes_dir[PATH_MAX]; /* where SoftHSM keeps those tokens */
static const char *g_oaep_extra = "";                 /* or ";oaep-decode=host" */
static bool g_have_hsm, g_have_kmip, g_setup_done;

typedef struct profile {
    const char *id, *email, *phone;
} profile;

static const profile g_people[] = {
    {"cust-0001", "ada.lovelace@example.com", "+14155550101"},
    {"cust-0002", "grace.hopper@example.org", "+442079460002"},
    {"cust-0003", "edsger.dijkstra@example.nl", "+31205550123"},
    {"cust-0004", "margaret.hamilton@example.com", "+16175550199"},
    {"cust-0005", "barbara.liskov@example.edu", "+33142685300"},
    {"cust-0006", "donald.knuth@example.net", "+4930901820777"},
};
#define N_PEOPLE (sizeof g_people / sizeof g_people[0])

/* What the database holds for a profile: blobs only. */
typedef struct row {
    uint8_t email[128], phone[64];
    size_t email_len, phone_len;
} row;

static int g_sends_ok; /* decrypts that succeeded, for the audit count */

/* ---- handles, closed by each test's teardown whatever happened ---- */

#define MAX_OPEN 16
static sp_vault *g_vaults[MAX_OPEN];
static sp_keyring *g_keyrings[MAX_OPEN];
static sp_kms *g_kmss[MAX_OPEN];
static sp_audit *g_audits[MAX_OPEN];

static void *track(void **slots, void *p) {
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (slots[i] == NULL) {
            slots[i] = p;
            return p;
        }
    }
    fail_msg("too many open handles");
    return NULL;
}

static bool untrack(void **slots, const void *p) {
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (p != NULL && slots[i] == p) {
            slots[i] = NULL;
            return true;
        }
    }
    return false;
}

static void close_vault(sp_vault *v) {
    if (untrack((void **)g_vaults, v)) sp_vault_close(v);
}

/* Vaults first (they use keyrings and KMSs), audits last (the KMSs write
 * to them). Once every sp_kms is closed, SoftHSM is finalised. */
static void close_all(void) {
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (g_vaults[i]) sp_vault_close(g_vaults[i]);
        g_vaults[i] = NULL;
    }
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (g_keyrings[i]) sp_keyring_close(g_keyrings[i]);
        g_keyrings[i] = NULL;
    }
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (g_kmss[i]) sp_kms_close(g_kmss[i]);
        g_kmss[i] = NULL;
    }
    for (size_t i = 0; i < MAX_OPEN; i++) {
        if (g_audits[i]) sp_audit_close(g_audits[i]);
        g_audits[i] = NULL;
    }
}

/* ---- files ---- */

static void work_path(char *out, size_t cap, const char *name) {
    int n = snprintf(out, cap, "%s/%s", g_work, name);
    if (n < 0 || (size_t)n >= cap) fail_msg("path too long");
}

/* The whole file, NUL-terminated; the caller frees. NULL when absent. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
        if (n + 1 == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL) fail_msg("out of memory reading %s", path);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

static bool holds(const void *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* No value of any profile appears in the file (nor, with ids, a profile id). */
static void assert_file_has_no_pii(const char *path, bool ids_too) {
    size_t n = 0;
    char *text = slurp(path, &n);
    if (text == NULL) fail_msg("%s is missing", path);
    for (size_t i = 0; i < N_PEOPLE; i++) {
        const profile *p = &g_people[i];
        if (holds(text, n, p->email) || holds(text, n, p->phone) || holds(text, n, p->phone + 1) ||
            (ids_too && holds(text, n, p->id))) {
            free(text);
            fail_msg("%s holds plaintext of %s", path, p->id);
        }
    }
    free(text);
}

/* ---- SoftHSM token outages ---- */

typedef struct token_backup {
    char dir[PATH_MAX];
    size_t n;
    struct {
        char name[NAME_MAX + 1];
        char *data;
        size_t len;
        mode_t mode;
    } files[64];
} token_backup;

static token_backup g_backup; /* pending while dir[0] != 0 */

/* The HSM becomes unreachable: its token's files are kept in memory and
 * removed (the directory itself stays, as in test_kms_pkcs11.c). */
static void hsm_outage(const char *dir) {
    assert_int_equal(g_backup.dir[0], 0);
    assert_true(SOFTHSM_FMT(g_backup.dir, "%s", dir)); /* from here the teardown puts back what was kept */
    g_backup.n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX];
        struct stat st;
        assert_true(SOFTHSM_FMT(path, "%s/%s", dir, e->d_name));
        bool kept = lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
                    g_backup.n < sizeof g_backup.files / sizeof g_backup.files[0] &&
                    SOFTHSM_FMT(g_backup.files[g_backup.n].name, "%s", e->d_name);
        char *data = kept ? slurp(path, &g_backup.files[g_backup.n].len) : NULL;
        if (data == NULL) {
            closedir(d);
            fail_msg("cannot keep %s", path);
        }
        g_backup.files[g_backup.n].data = data;
        g_backup.files[g_backup.n].mode = st.st_mode & 0777;
        g_backup.n++;
    }
    closedir(d);
    assert_true(g_backup.n > 0);
    softhsm_rm_tree(dir, true);
}

/* The files come back. Returns false (for a teardown to report) on trouble. */
static bool hsm_restore(void) {
    if (g_backup.dir[0] == 0) return true;
    bool ok = true;
    for (size_t i = 0; i < g_backup.n; i++) {
        char path[PATH_MAX];
        int fd = SOFTHSM_FMT(path, "%s/%s", g_backup.dir, g_backup.files[i].name)
                     ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, g_backup.files[i].mode)
                     : -1;
        bool fine = fd >= 0 && write(fd, g_backup.files[i].data, g_backup.files[i].len) ==
                                   (ssize_t)g_backup.files[i].len;
        if (fd >= 0) fine = close(fd) == 0 && fine;
        ok = ok && fine;
        free(g_backup.files[i].data);
    }
    memset(&g_backup, 0, sizeof g_backup);
    return ok;
}

/* ---- opening things ---- */

static sp_audit *audit_open(const char *name) {
    char path[PATH_MAX];
    work_path(path, sizeof path, name);
    sp_audit *a = NULL;
    assert_rc(sp_audit_open(path, &a), SP_OK);
    return track((void **)g_audits, a);
}

static void hsm_config(char *out, size_t cap, const char *token, const char *mech, const char *extra) {
    int n = snprintf(out, cap, "pkcs11:module=%s;token=%s;pin-file=%s;key=" MASTER ";mechanism=%s%s%s",
                     SOFTHSM_MODULE, token, g_pin_file, mech, strcmp(mech, "rsa-oaep") == 0 ? g_oaep_extra : "",
                     extra);
    if (n < 0 || (size_t)n >= cap) fail_msg("config too long");
}

static sp_kms *track_kms(sp_kms *kms, sp_audit *audit) {
    sp_kms_set_audit(kms, audit);
    return track((void **)g_kmss, kms);
}

/* extra: more options, e.g. ";create=1;retries=1". */
static sp_kms *hsm_kms(const char *token, const char *mech, const char *extra, sp_audit *audit) {
    char cfg[SP_KMS_MAX_CONFIG];
    hsm_config(cfg, sizeof cfg, token, mech, extra);
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(cfg, &kms);
    if (rc != SP_OK) fail_msg("sp_kms_open(%s) gave %s", cfg, sp_error_name(rc));
    return track_kms(kms, audit);
}

static void kmip_config(char *out, size_t cap, const char *extra) {
    int n = snprintf(out, cap, "kmip:host=127.0.0.1;port=%d;ca=%s/ca.crt;cert=%s/client.crt;key=%s/client.key%s",
                     g_kmip.port, g_kmip.dir, g_kmip.dir, g_kmip.dir, extra);
    if (n < 0 || (size_t)n >= cap) fail_msg("config too long");
}

static sp_kms *kmip_kms(const char *extra, sp_audit *audit) {
    char cfg[SP_KMS_MAX_CONFIG];
    kmip_config(cfg, sizeof cfg, extra);
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(cfg, &kms);
    if (rc != SP_OK) fail_msg("sp_kms_open(%s) gave %s", cfg, sp_error_name(rc));
    return track_kms(kms, audit);
}

static sp_keyring *keyring_open(const char *name, sp_kms *kms) {
    char path[PATH_MAX];
    work_path(path, sizeof path, name);
    sp_keyring *kr = NULL;
    assert_rc(sp_keyring_open(path, kms, &kr), SP_OK);
    return track((void **)g_keyrings, kr);
}

/* A vault with a cold cache. ttl 0: the defaults; otherwise that cache TTL,
 * refreshed a second ahead. */
static sp_vault *vault_open(sp_keyring *kr, sp_audit *audit, int64_t ttl, int64_t dek_lifetime) {
    sp_vault_options o;
    memset(&o, 0, sizeof o);
    o.tenant = TENANT;
    o.audit = audit;
    o.cache_ttl_s = ttl;
    o.refresh_ahead_s = ttl > 1 ? 1 : 0;
    o.dek_lifetime_s = dek_lifetime;
    o.default_country_code = "1";
    sp_vault *v = NULL;
    assert_rc(sp_vault_open(&o, kr, &v), SP_OK);
    return track((void **)g_vaults, v);
}

/* ---- ingest and send ---- */

/* Encrypts one field into out; whatever the outcome, out never holds the
 * value (no plaintext fallback). */
static sp_error put_field(sp_vault *v, const char *id, const char *field, const char *value, int64_t now,
                          uint8_t *out, size_t cap, size_t *out_len) {
    memset(out, 0, cap);
    *out_len = 0;
    size_t len = strlen(value);
    sp_error rc = sp_vault_encrypt(v, id, field, (const uint8_t *)value, len, now, out, cap, out_len);
    if (holds(out, cap, value)) fail_msg("the %s blob of %s holds the value (%s)", field, id, sp_error_name(rc));
    if (rc == SP_OK && *out_len != len + SP_VAULT_OVERHEAD)
        fail_msg("the %s blob of %s is %zu bytes, expected %zu", field, id, *out_len, len + SP_VAULT_OVERHEAD);
    if (rc != SP_OK && *out_len != 0) fail_msg("a failed encrypt reported %zu bytes", *out_len);
    return rc;
}

static sp_error ingest(sp_vault *v, const profile *p, int64_t now, row *r) {
    memset(r, 0, sizeof *r);
    sp_error rc = put_field(v, p->id, "email", p->email, now, r->email, sizeof r->email, &r->email_len);
    if (rc == SP_OK) rc = put_field(v, p->id, "phone", p->phone, now, r->phone, sizeof r->phone, &r->phone_len);
    return rc;
}

/* Decrypts one field at send time; on success it must be the value, on
 * failure the output holds none of it. */
static sp_error get_field(sp_vault *v, const char *id, const char *field, const uint8_t *blob, size_t len,
                          const char *want, int64_t now) {
    uint8_t out[256];
    size_t out_len = 0;
    memset(out, 0, sizeof out);
    sp_error rc = sp_vault_decrypt(v, id, field, blob, len, "send", now, out, sizeof out, &out_len);
    if (rc == SP_OK) {
        if (out_len != strlen(want) || memcmp(out, want, out_len) != 0)
            fail_msg("the %s of %s decrypted to something else", field, id);
        g_sends_ok++;
    } else if (holds(out, sizeof out, want)) {
        fail_msg("a failed decrypt (%s) left the %s of %s in the buffer", sp_error_name(rc), field, id);
    }
    sp_wipe(out, sizeof out);
    return rc;
}

/* One send: the phone for an SMS, the email for the receipt. The first
 * failure stops it. */
static sp_error send_to(sp_vault *v, const profile *p, const row *r, int64_t now) {
    sp_error rc = get_field(v, p->id, "phone", r->phone, r->phone_len, p->phone, now);
    if (rc == SP_OK) rc = get_field(v, p->id, "email", r->email, r->email_len, p->email, now);
    return rc;
}

/* The keyring entry of the data key a blob names. */
static void blob_dek_entry(sp_keyring *kr, const uint8_t *blob, size_t len, sp_keyring_entry *e) {
    char dek[SP_KEY_VERSION_CHARS + 1];
    assert_rc(sp_vault_blob_dek(blob, len, dek), SP_OK);
    assert_rc(sp_keyring_reload(kr), SP_OK);
    assert_rc(sp_keyring_find(kr, TENANT, SP_VAULT_DEK_CHANNEL, dek, e), SP_OK);
}

/* ---- the keyring file's wrapped keys ---- */

typedef struct stored_key {
    char channel[SP_KEYRING_MAX_NAME + 1];
    char master_key[SP_KMS_MAX_KEY_ID + 1];
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len;
} stored_key;

/* Every key the file holds in wrapped form (destroyed ones hold none). */
static size_t stored_keys(const char *name, stored_key *out, size_t cap) {
    char path[PATH_MAX];
    work_path(path, sizeof path, name);
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_non_null(text);
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    free(text);
    assert_non_null(root);
    json_t *keys = json_object_get(root, "keys");
    assert_true(json_is_array(keys));
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        json_t *w = json_object_get(k, "wrapped");
        if (w == NULL) continue;
        assert_true(n < cap && json_is_string(w));
        stored_key *s = &out[n++];
        const char *channel = json_string_value(json_object_get(k, "channel"));
        const char *master = json_string_value(json_object_get(k, "master_key"));
        assert_true(channel != NULL && master != NULL);
        assert_true(SOFTHSM_FMT(s->channel, "%s", channel));
        assert_true(SOFTHSM_FMT(s->master_key, "%s", master));
        assert_rc(sp_b64_decode(json_string_value(w), json_string_length(w), s->wrapped, sizeof s->wrapped,
                                &s->wrapped_len, false),
                  SP_OK);
    }
    json_decref(root);
    return n;
}

/* Every stored key is wrapped by kms's master key and names it. */
static size_t assert_all_wrapped_by(const char *keyring_name, const sp_kms *kms) {
    static stored_key keys[64];
    size_t n = stored_keys(keyring_name, keys, 64);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(keys[i].master_key, sp_kms_key_id(kms));
        assert_true(sp_kms_owns(kms, keys[i].wrapped, keys[i].wrapped_len));
    }
    return n;
}

/* ---- the audit log ---- */

typedef struct audit_counts {
    int lines;
    int unwraps;         /* kms.unwrap lines */
    int unwraps_ok;
    int unwraps_asked;   /* that reached the KMS (attempts > 0) */
    int unwraps_denied;  /* SP_ERR_KMS_ACCESS_DENIED */
    int unwraps_unavail; /* SP_ERR_KMS_UNAVAILABLE */
    int vault_decrypts;  /* VAULT_DECRYPT_EVENT lines */
    int vault_decrypts_ok;
} audit_counts;

/* Verifies the chain, checks that no line holds a profile's value or id,
 * and counts the lines. */
static audit_counts audit_check(const char *name) {
    char path[PATH_MAX];
    work_path(path, sizeof path, name);
    sp_audit_report report;
    memset(&report, 0, sizeof report);
    sp_error rc = sp_audit_verify(path, &report);
    if (rc != SP_OK)
        fail_msg("sp_audit_verify(%s): %s at line %llu: %s", name, sp_error_name(rc),
                 (unsigned long long)report.bad_line, report.reason);
    assert_file_has_no_pii(path, true);
    audit_counts c;
    memset(&c, 0, sizeof c);
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_non_null(text);
    for (char *line = text, *next; line != NULL && *line; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) *next++ = 0;
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (o == NULL) fail_msg("audit line is not JSON: %s", err.text);
        c.lines++;
        const char *event = json_string_value(json_object_get(o, "event"));
        const char *result = json_string_value(json_object_get(o, "result"));
        const char *attempts = json_string_value(json_object_get(o, "attempts"));
        if (event != NULL && strcmp(event, "kms.unwrap") == 0) {
            c.unwraps++;
            if (result && strcmp(result, "SP_OK") == 0) c.unwraps_ok++;
            if (result && strcmp(result, "SP_ERR_KMS_ACCESS_DENIED") == 0) c.unwraps_denied++;
            if (result && strcmp(result, "SP_ERR_KMS_UNAVAILABLE") == 0) c.unwraps_unavail++;
            if (attempts && strcmp(attempts, "0") != 0) c.unwraps_asked++;
        } else if (event != NULL && strcmp(event, VAULT_DECRYPT_EVENT) == 0) {
            c.vault_decrypts++;
            if (result && strcmp(result, "SP_OK") == 0) c.vault_decrypts_ok++;
        }
        json_decref(o);
    }
    free(text);
    return c;
}

/* Decrypt operations PyKMIP has performed so far (its log names each). */
static int server_decrypts(void) {
    char path[PATH_MAX];
    assert_true(kmip_path(&g_kmip, path, sizeof path, "server.log"));
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_non_null(text);
    int n = 0;
    for (const char *p = text; (p = strstr(p, "Processing operation: Decrypt")) != NULL; p++) n++;
    free(text);
    return n;
}

/* ---- setup ---- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup(void) {
    close_all();
    (void)hsm_restore();
    kmip_teardown(&g_kmip);
    if (g_hsm.dir[0]) softhsm_teardown(&g_hsm);
    g_hsm.dir[0] = 0;
    if (g_work[0]) nftw(g_work, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_work[0] = 0;
}

static int setup_hsm(bool available) {
    if (!available) {
        print_message("SoftHSM2 not installed (%s, %s; scripts/bootstrap installs it)\n", SOFTHSM_UTIL,
                      SOFTHSM_MODULE);
        return -1;
    }
    if (!softhsm_init_token(&g_hsm, RSA_TOKEN, PIN, g_rsa_dir, sizeof g_rsa_dir) ||
        !softhsm_init_token(&g_hsm, AES_TOKEN, PIN, g_aes_dir, sizeof g_aes_dir) ||
        !softhsm_init_token(&g_hsm, ROT_TOKEN, PIN, NULL, 0))
        return -1;
    if (!SOFTHSM_FMT(g_pin_file, "%s/pin", g_hsm.dir) || !softhsm_write_file(g_pin_file, PIN "\n", 0600)) return -1;
    /* Which rsa-oaep this token can do, as test_kms_pkcs11.c decides it:
     * the plain configuration works, or is refused as a configuration
     * problem and oaep-decode=host is needed. The probe's key also serves
     * as the RSA master key. */
    char cfg[SP_KMS_MAX_CONFIG];
    if (!SOFTHSM_FMT(cfg, "pkcs11:module=%s;token=%s;pin-file=%s;key=" MASTER ";mechanism=rsa-oaep;create=1",
                     SOFTHSM_MODULE, RSA_TOKEN, g_pin_file))
        return -1;
    sp_kms *kms = NULL;
    sp_error rc = sp_kms_open(cfg, &kms);
    sp_kms_close(kms);
    if (rc == SP_ERR_BAD_CONFIG) {
        print_message("this token has no SHA-256 OAEP: rsa-oaep uses oaep-decode=host\n");
        g_oaep_extra = ";oaep-decode=host";
    } else if (rc != SP_OK) {
        print_message("rsa-oaep probe gave %s\n", sp_error_name(rc));
        return -1;
    }
    g_have_hsm = true;
    return 0;
}

static int setup_kmip(bool available) {
    if (!available) {
        print_message("PyKMIP not installed for %s (python3-pykmip; scripts/bootstrap installs it)\n", KMIP_PYTHON);
        return -1;
    }
    if (!kmip_make_basic_pki(&g_kmip) || !kmip_server_start(&g_kmip)) return -1;
    g_have_kmip = true;
    return 0;
}

/* The last resort for the temp directories, should this process die in a
 * way that runs no teardown and no atexit (a kill, ^C, a sanitizer's
 * abort): a child that ignores those signals, waits until its pipe from
 * here reaches end of file (this process is gone) and removes them. Forked
 * while this process has no threads yet. (The PyKMIP server ends itself
 * the same way, on its stdin.) */
static void start_janitor(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return;
    }
    if (pid == 0) {
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        close(p[1]);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { /* a runner reading our output need not wait for this one */
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        char b;
        for (;;) {
            ssize_t r = read(p[0], &b, 1);
            if (r == 0 || (r < 0 && errno != EINTR)) break;
        }
        const char *dirs[] = {g_work, g_hsm.dir, g_kmip.dir};
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            if (dirs[i][0]) nftw(dirs[i], remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        _exit(0);
    }
    close(p[0]); /* the write end stays open for the life of this process */
}

static int group_setup(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    if (!SOFTHSM_FMT(g_work, "%s/sp-vault-kms-XXXXXX", tmp && tmp[0] ? tmp : "/tmp") || mkdtemp(g_work) == NULL) {
        g_work[0] = 0;
        return -1;
    }
    atexit(cleanup); /* should the teardown not run */
    /* every temp directory first, then the janitor, then what starts threads */
    bool hsm = softhsm_available(), kmip = kmip_pykmip_installed();
    if ((hsm && !softhsm_setup(&g_hsm)) || (kmip && !kmip_setup(&g_kmip, "sp-vault-kmip"))) return -1;
    start_janitor();
    if (sp_init() != SP_OK || setup_hsm(hsm) != 0 || setup_kmip(kmip) != 0) return -1;
    g_setup_done = true;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    cleanup();
    return 0;
}

static int need_hsm(void **state) {
    (void)state;
    if (!g_have_hsm) {
        fail_msg("a KMS this test needs did not start");
    }
    return 0;
}

static int need_kmip(void **state) {
    (void)state;
    if (!g_have_kmip) {
        fail_msg("a KMS this test needs did not start");
    }
    return 0;
}

static int need_both(void **state) {
    (void)state;
    if (!g_have_hsm || !g_have_kmip) {
        fail_msg("a KMS this test needs did not start");
    }
    return 0;
}

/* Closes what the test left open and brings back a token it took away. */
static int test_teardown(void **state) {
    (void)state;
    close_all();
    return hsm_restore() ? 0 : -1;
}

/* ---- 1. RSA-OAEP: ingestion survives the HSM ---- */

static void test_rsa_oaep_outage(void **state) {
    (void)state;
    sp_audit *audit = audit_open("rsa-audit.log");
    /* one retry 5 ms later: an outage shows fast */
    const char *opts = ";create=1;retries=1;backoff-ms=5";
    sp_kms *kms = hsm_kms(RSA_TOKEN, "rsa-oaep", opts, audit);
    sp_keyring *kr = keyring_open("rsa-keyring.json", kms);
    sp_vault *v = vault_open(kr, audit, 0, 0);
    row rows[N_PEOPLE];
    for (size_t i = 0; i < 4; i++) assert_rc(ingest(v, &g_people[i], 0, &rows[i]), SP_OK);
    for (size_t i = 0; i < 4; i++) assert_rc(send_to(v, &g_people[i], &rows[i], 0), SP_OK);
    close_vault(v);
    /* a sender that has sent once: the data key of those rows is cached */
    sp_keyring *kr_out = keyring_open("rsa-keyring.json", kms);
    sp_vault *out = vault_open(kr_out, audit, 0, 0);
    assert_rc(send_to(out, &g_people[0], &rows[0], 0), SP_OK);

    hsm_outage(g_rsa_dir);
    /* really gone: nobody can even open the key now */
    char cfg[SP_KMS_MAX_CONFIG];
    hsm_config(cfg, sizeof cfg, RSA_TOKEN, "rsa-oaep", ";retries=0");
    sp_kms *gone = NULL;
    sp_error rc = sp_kms_open(cfg, &gone);
    sp_kms_close(gone);
    assert_kms_refusal(rc);

    /* Profiles keep arriving: a fresh vault (cold cache, its own keyring
     * handle) ingests them, the data key wrapped with the public key here. */
    sp_keyring *kr_in = keyring_open("rsa-keyring.json", kms);
    sp_vault *in = vault_open(kr_in, audit, 0, 0);
    for (size_t i = 4; i < 6; i++) assert_rc(ingest(in, &g_people[i], 0, &rows[i]), SP_OK);
    sp_keyring_entry e;
    blob_dek_entry(kr_in, rows[4].email, rows[4].email_len, &e);
    assert_string_equal(e.master_key, sp_kms_key_id(kms));
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);

    /* Sends: what the sender has cached still opens; the outage's rows,
     * under a data key it has not got, do not, and it says it is the KMS.
     * A cold sender opens nothing. */
    assert_rc(send_to(out, &g_people[1], &rows[1], 0), SP_OK);
    assert_kms_refusal(send_to(out, &g_people[4], &rows[4], 0));
    sp_keyring *kr_cold = keyring_open("rsa-keyring.json", kms);
    sp_vault *cold = vault_open(kr_cold, audit, 0, 0);
    assert_kms_refusal(send_to(cold, &g_people[0], &rows[0], 0));
    assert_kms_refusal(send_to(cold, &g_people[5], &rows[5], 0));

    /* Nothing in plaintext: not the keyring (every key wrapped by the HSM's
     * master key, the outage's too), not the log. */
    char path[PATH_MAX];
    work_path(path, sizeof path, "rsa-keyring.json");
    assert_file_has_no_pii(path, false);
    assert_all_wrapped_by("rsa-keyring.json", kms);
    work_path(path, sizeof path, "rsa-audit.log");
    assert_file_has_no_pii(path, true);

    /* The HSM comes back; the application reopens its handles. */
    close_all();
    assert_true(hsm_restore());
    audit = audit_open("rsa-audit.log");
    kms = hsm_kms(RSA_TOKEN, "rsa-oaep", ";retries=1;backoff-ms=5", audit); /* no create: the same key */
    kr = keyring_open("rsa-keyring.json", kms);
    v = vault_open(kr, audit, 0, 0);
    for (size_t i = 0; i < N_PEOPLE; i++) assert_rc(send_to(v, &g_people[i], &rows[i], 0), SP_OK);
    close_all();

    audit_counts c = audit_check("rsa-audit.log");
    assert_true(c.unwraps_unavail >= 3);
    assert_true(c.unwraps_ok >= 1);
    assert_true(c.vault_decrypts > c.vault_decrypts_ok); /* the sender's refusal is there */
}

/* Sends keep failing during the outage, as they will when a queue drains
 * against a dead HSM, and open the KMS's circuit breaker (5 failures, 30 s
 * cooldown: the defaults). Ingestion must not care: wrapping with the
 * public key needs no HSM. */
static void test_rsa_oaep_ingest_after_failed_sends(void **state) {
    (void)state;
    sp_audit *audit = audit_open("rsa2-audit.log");
    sp_kms *kms = hsm_kms(RSA_TOKEN, "rsa-oaep", ";create=1;retries=0", audit);
    sp_keyring *kr = keyring_open("rsa2-keyring.json", kms);
    sp_vault *v = vault_open(kr, audit, 0, 0);
    row rows[N_PEOPLE];
    assert_rc(ingest(v, &g_people[0], 0, &rows[0]), SP_OK);
    close_vault(v);

    hsm_outage(g_rsa_dir);
    sp_keyring *kr_out = keyring_open("rsa2-keyring.json", kms);
    sp_vault *out = vault_open(kr_out, audit, 0, 0);
    for (int i = 0; i < 6; i++) assert_kms_refusal(send_to(out, &g_people[0], &rows[0], 0));

    sp_keyring *kr_in = keyring_open("rsa2-keyring.json", kms);
    sp_vault *in = vault_open(kr_in, audit, 0, 0);
    sp_error rc = ingest(in, &g_people[1], 0, &rows[1]);
    if (rc != SP_OK)
        fail_msg("ingestion with the RSA-OAEP HSM unreachable, after failed sends, gave %s (expected SP_OK)",
                 sp_error_name(rc));

    close_all();
    assert_true(hsm_restore());
    audit = audit_open("rsa2-audit.log");
    kms = hsm_kms(RSA_TOKEN, "rsa-oaep", ";retries=0", audit);
    kr = keyring_open("rsa2-keyring.json", kms);
    v = vault_open(kr, audit, 0, 0);
    for (size_t i = 0; i < 2; i++) assert_rc(send_to(v, &g_people[i], &rows[i], 0), SP_OK);
    close_all();
    (void)audit_check("rsa2-audit.log");
}

/* ---- 2. AES key wrap: a cold vault cannot ingest, and says so ---- */

static void test_aes_kwp_outage(void **state) {
    (void)state;
    sp_audit *audit = audit_open("aes-audit.log");
    sp_kms *kms = hsm_kms(AES_TOKEN, "aes-kwp", ";create=1;retries=1;backoff-ms=5", audit);
    sp_keyring *kr = keyring_open("aes-keyring.json", kms);
    sp_vault *warm = vault_open(kr, audit, 0, 0);
    row rows[N_PEOPLE];
    for (size_t i = 0; i < 2; i++) assert_rc(ingest(warm, &g_people[i], 0, &rows[i]), SP_OK);
    for (size_t i = 0; i < 2; i++) assert_rc(send_to(warm, &g_people[i], &rows[i], 0), SP_OK);

    hsm_outage(g_aes_dir);
    /* A vault whose current data key is cached goes on without the HSM. */
    assert_rc(ingest(warm, &g_people[2], 0, &rows[2]), SP_OK);
    assert_rc(send_to(warm, &g_people[2], &rows[2], 0), SP_OK);

    /* A cold one cannot: no data key to use, none can be made. Retryable,
     * every time, and nothing is written. */
    char path[PATH_MAX];
    work_path(path, sizeof path, "aes-keyring.json");
    size_t before_len = 0;
    char *before = slurp(path, &before_len);
    assert_non_null(before);
    sp_keyring *kr_cold = keyring_open("aes-keyring.json", kms);
    sp_vault *cold = vault_open(kr_cold, audit, 0, 0);
    for (int attempt = 0; attempt < 3; attempt++) {
        sp_error rc = ingest(cold, &g_people[3], 0, &rows[3]);
        if (rc != SP_ERR_KMS_UNAVAILABLE) {
            free(before);
            fail_msg("cold ingestion with the AES HSM gone gave %s, expected SP_ERR_KMS_UNAVAILABLE",
                     sp_error_name(rc));
        }
    }
    size_t after_len = 0;
    char *after = slurp(path, &after_len);
    bool same = after != NULL && after_len == before_len && memcmp(before, after, before_len) == 0;
    free(before);
    free(after);
    assert_true(same);
    assert_file_has_no_pii(path, false);

    /* The HSM returns: the same call, retried, succeeds. */
    close_all();
    assert_true(hsm_restore());
    audit = audit_open("aes-audit.log");
    kms = hsm_kms(AES_TOKEN, "aes-kwp", ";retries=1;backoff-ms=5", audit);
    kr = keyring_open("aes-keyring.json", kms);
    sp_vault *v = vault_open(kr, audit, 0, 0);
    assert_rc(ingest(v, &g_people[3], 0, &rows[3]), SP_OK);
    for (size_t i = 0; i < 4; i++) assert_rc(send_to(v, &g_people[i], &rows[i], 0), SP_OK);
    assert_all_wrapped_by("aes-keyring.json", kms);
    close_all();
    (void)audit_check("aes-audit.log");
}

/* ---- 3. KMIP: revocation shreds within the cache TTL ---- */

static void test_kmip_revocation(void **state) {
    (void)state;
    sp_audit *audit = audit_open("kmip-audit.log");
    int server_before = server_decrypts();
    sp_kms *kms = kmip_kms(";create=1;retries=0", audit);
    sp_keyring *kr = keyring_open("kmip-keyring.json", kms);
    sp_vault *in = vault_open(kr, audit, TTL_S, 0);
    row rows[3];
    for (size_t i = 0; i < 3; i++) assert_rc(ingest(in, &g_people[i], 0, &rows[i]), SP_OK);
    close_vault(in);

    int sends_before = g_sends_ok;
    /* out sends all the time; idle sends once, then not until its cached
     * key has expired: the refresh-ahead path and the expiry path */
    sp_keyring *kr_out = keyring_open("kmip-keyring.json", kms);
    sp_vault *out = vault_open(kr_out, audit, TTL_S, 0);
    sp_keyring *kr_idle = keyring_open("kmip-keyring.json", kms);
    sp_vault *idle = vault_open(kr_idle, audit, TTL_S, 0);
    /* The cache counts whole seconds from the unwrap: start just after a
     * second begins, so the sends right after the revocation fall within
     * the unwrap's second and are served from the cache for sure. */
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    kmip_sleep_ms(1000 - wall.tv_nsec / 1000000 + 5);
    int64_t t_unwrap = kmip_now_ms(); /* the first sends unwrap the data key */
    for (size_t i = 0; i < 3; i++) assert_rc(send_to(out, &g_people[i], &rows[i], 0), SP_OK);
    assert_rc(send_to(idle, &g_people[0], &rows[0], 0), SP_OK);

    char text[SP_KMS_MAX_CONFIG];
    kmip_config(text, sizeof text, "");
    sp_kms_config cfg;
    assert_rc(sp_kms_config_parse(text, &cfg), SP_OK);
    sp_error rc = sp_kmip_revoke(&cfg, sp_kms_key_id(kms));
    sp_kms_config_clear(&cfg);
    assert_rc(rc, SP_OK);
    int64_t t_revoke = kmip_now_ms();

    /* Sends go on from the cache... */
    int ok_after_revoke = 0;
    for (size_t i = 0; i < 3; i++) {
        if (send_to(out, &g_people[i], &rows[i], 0) == SP_OK) ok_after_revoke++;
    }
    if (send_to(idle, &g_people[1], &rows[1], 0) == SP_OK) ok_after_revoke++;
    /* ...until the vault next asks the KMS: ahead of expiry for a busy
     * vault, which then stops for good. */
    int64_t limit_ms = (TTL_S + 3) * 1000;
    int64_t t_fail = 0;
    while (kmip_now_ms() - t_unwrap < limit_ms) {
        rc = send_to(out, &g_people[0], &rows[0], 0);
        if (rc != SP_OK) {
            t_fail = kmip_now_ms();
            break;
        }
        kmip_sleep_ms(50);
    }
    if (t_fail == 0) fail_msg("sends still worked %lld ms after the unwrap", (long long)limit_ms);
    assert_rc(rc, SP_ERR_KMS_ACCESS_DENIED);
    int64_t since_unwrap = t_fail - t_unwrap, since_revoke = t_fail - t_revoke;
    print_message("revoked: %d sends right after worked from the cache; a busy vault refused %lld ms after the "
                  "revocation, %lld ms after the unwrap (TTL %d s)\n",
                  ok_after_revoke, (long long)since_revoke, (long long)since_unwrap, TTL_S);
    assert_int_equal(ok_after_revoke, 4);
    /* The bound: the cache counts from the second the unwrap happened in,
     * so the key is gone at most TTL after it (plus one 50 ms poll and the
     * send itself). */
    if (since_unwrap > TTL_S * 1000 + 250)
        fail_msg("sends went on %lld ms after the unwrap, past the %d s TTL", (long long)since_unwrap, TTL_S);
    for (size_t i = 0; i < 3; i++) assert_rc(send_to(out, &g_people[i], &rows[i], 0), SP_ERR_KMS_ACCESS_DENIED);
    /* The idle vault's copy expires at the TTL: the next send asks again
     * and is refused. */
    int64_t wait_ms = t_unwrap + TTL_S * 1000 + 50 - kmip_now_ms();
    if (wait_ms > 0) kmip_sleep_ms((long)wait_ms);
    for (size_t i = 0; i < 3; i++) assert_rc(send_to(idle, &g_people[i], &rows[i], 0), SP_ERR_KMS_ACCESS_DENIED);

    /* A cold vault: refused at once, for sends and for ingestion. */
    sp_keyring *kr_cold = keyring_open("kmip-keyring.json", kms);
    sp_vault *cold = vault_open(kr_cold, audit, TTL_S, 0);
    assert_rc(send_to(cold, &g_people[1], &rows[1], 0), SP_ERR_KMS_ACCESS_DENIED);
    row late;
    assert_rc(ingest(cold, &g_people[3], 0, &late), SP_ERR_KMS_ACCESS_DENIED);
    int sends = g_sends_ok - sends_before;
    close_all();

    /* Every Decrypt the server did is in the log, and every send. */
    int server_after = server_decrypts();
    audit_counts c = audit_check("kmip-audit.log");
    print_message("audit: %d lines, %d kms.unwrap (%d ok, %d denied), %d server Decrypts, %d %s lines (%d ok)\n",
                  c.lines, c.unwraps, c.unwraps_ok, c.unwraps_denied, server_after - server_before, c.vault_decrypts,
                  VAULT_DECRYPT_EVENT, c.vault_decrypts_ok);
    assert_int_equal(c.unwraps_asked, server_after - server_before);
    assert_true(c.unwraps_ok >= 1);
    assert_true(c.unwraps_denied >= 1);
    assert_int_equal(c.vault_decrypts_ok, sends);
    assert_true(c.vault_decrypts > sends); /* refused decrypts are logged too */
    char path[PATH_MAX];
    work_path(path, sizeof path, "kmip-keyring.json");
    assert_file_has_no_pii(path, false);
}

/* ---- 4. master-key rotation: SoftHSM AES -> KMIP ---- */

typedef struct progress_log {
    size_t calls, last_done, last_total;
} progress_log;

static sp_error on_progress(void *arg, size_t done, size_t total) {
    progress_log *p = arg;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return SP_OK;
}

static void test_rotate_hsm_to_kmip(void **state) {
    (void)state;
    /* explicit times, a data key per 60 s: several data keys to move */
    const int64_t base = (int64_t)time(NULL);
    sp_audit *audit = audit_open("rot-audit.log");
    sp_kms *old_kms = hsm_kms(ROT_TOKEN, "aes-kwp", ";create=1;retries=0", audit);
    sp_keyring *kr = keyring_open("rot-keyring.json", old_kms);
    sp_vault *v = vault_open(kr, audit, 0, 60);
    row rows[N_PEOPLE];
    uint8_t idx_before[N_PEOPLE][2][SP_VAULT_INDEX_MAX];
    size_t idx_len[N_PEOPLE][2];
    for (size_t i = 0; i < N_PEOPLE; i++) {
        const profile *p = &g_people[i];
        assert_rc(ingest(v, p, base + (int64_t)i * 60, &rows[i]), SP_OK);
        assert_rc(sp_vault_index(v, "email", (const uint8_t *)p->email, strlen(p->email), idx_before[i][0],
                                 SP_VAULT_INDEX_MAX, &idx_len[i][0]),
                  SP_OK);
        assert_rc(sp_vault_index(v, "phone", (const uint8_t *)p->phone, strlen(p->phone), idx_before[i][1],
                                 SP_VAULT_INDEX_MAX, &idx_len[i][1]),
                  SP_OK);
    }
    sp_keyring_entry first, last;
    blob_dek_entry(kr, rows[0].email, rows[0].email_len, &first);
    blob_dek_entry(kr, rows[N_PEOPLE - 1].email, rows[N_PEOPLE - 1].email_len, &last);
    assert_string_not_equal(first.version, last.version);
    for (size_t i = 0; i < N_PEOPLE; i++) assert_rc(send_to(v, &g_people[i], &rows[i], base + 400), SP_OK);
    close_vault(v);
    size_t n_keys = assert_all_wrapped_by("rot-keyring.json", old_kms);
    /* a data key per profile, an index key per field, the audit key */
    assert_true(n_keys >= N_PEOPLE + 3);

    sp_kms *new_kms = kmip_kms(";create=1;retries=0", audit);
    progress_log pl = {0, 0, 0};
    size_t moved = 0;
    assert_rc(sp_keyring_rewrap(kr, new_kms, 3, on_progress, &pl, &moved), SP_OK);
    assert_int_equal(moved, n_keys);
    assert_true(pl.calls >= 2);
    assert_int_equal(pl.last_done, n_keys);
    assert_int_equal(pl.last_total, n_keys);
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        assert_rc(sp_keyring_get(kr, i, &e), SP_OK);
        assert_string_equal(e.master_key, sp_kms_key_id(new_kms));
    }

    /* The old KMS owns no stored key and opens none. */
    assert_int_equal(assert_all_wrapped_by("rot-keyring.json", new_kms), n_keys);
    static stored_key keys[64];
    size_t n = stored_keys("rot-keyring.json", keys, 64);
    for (size_t i = 0; i < n; i++) {
        sp_key *k = NULL;
        assert_false(sp_kms_owns(old_kms, keys[i].wrapped, keys[i].wrapped_len));
        assert_rc(sp_kms_unwrap_key(old_kms, keys[i].wrapped, keys[i].wrapped_len, &k), SP_ERR_AUTH);
        assert_null(k);
    }
    /* nor can a vault that still uses it decrypt anything */
    sp_keyring *kr_old = keyring_open("rot-keyring.json", old_kms);
    sp_vault *stale = vault_open(kr_old, audit, 0, 0);
    for (size_t i = 0; i < N_PEOPLE; i++)
        assert_rc(send_to(stale, &g_people[i], &rows[i], base + 1000), SP_ERR_AUTH);

    /* Everything decrypts under the new KMS, and the indexes are the same. */
    sp_keyring *kr_new = keyring_open("rot-keyring.json", new_kms);
    sp_vault *fresh = vault_open(kr_new, audit, 0, 60);
    for (size_t i = 0; i < N_PEOPLE; i++) {
        const profile *p = &g_people[i];
        assert_rc(send_to(fresh, p, &rows[i], base + 1000), SP_OK);
        uint8_t ix[SP_VAULT_INDEX_MAX];
        size_t ix_len = 0;
        assert_rc(sp_vault_index(fresh, "email", (const uint8_t *)p->email, strlen(p->email), ix, sizeof ix, &ix_len),
                  SP_OK);
        assert_int_equal(ix_len, idx_len[i][0]);
        assert_memory_equal(ix, idx_before[i][0], ix_len);
        assert_rc(sp_vault_index(fresh, "phone", (const uint8_t *)p->phone, strlen(p->phone), ix, sizeof ix, &ix_len),
                  SP_OK);
        assert_int_equal(ix_len, idx_len[i][1]);
        assert_memory_equal(ix, idx_before[i][1], ix_len);
    }
    char new_id[SP_KMS_MAX_KEY_ID + 1];
    assert_true(SOFTHSM_FMT(new_id, "%s", sp_kms_key_id(new_kms)));
    close_all();

    /* The old master key destroyed in the token: nothing depends on it. */
    p11_direct d;
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    assert_true(p11_direct_open(&d, ROT_TOKEN, PIN));
    assert_int_equal(p11_direct_find(&d, CKO_SECRET_KEY, MASTER, &h), 1);
    assert_int_equal(d.f->C_DestroyObject(d.s, h), CKR_OK);
    p11_direct_close(&d);
    char cfg[SP_KMS_MAX_CONFIG];
    hsm_config(cfg, sizeof cfg, ROT_TOKEN, "aes-kwp", "");
    sp_kms *none = NULL;
    assert_rc(sp_kms_open(cfg, &none), SP_ERR_NOT_FOUND);

    audit = audit_open("rot-audit.log");
    char extra[SP_KMS_MAX_KEY_ID + 64];
    assert_true(SOFTHSM_FMT(extra, ";key-id=%s;retries=0", new_id));
    new_kms = kmip_kms(extra, audit);
    kr_new = keyring_open("rot-keyring.json", new_kms);
    fresh = vault_open(kr_new, audit, 0, 60);
    for (size_t i = 0; i < N_PEOPLE; i++) assert_rc(send_to(fresh, &g_people[i], &rows[i], base + 1000), SP_OK);
    row later;
    assert_rc(ingest(fresh, &g_people[0], base + 1000, &later), SP_OK);
    sp_keyring_entry e;
    blob_dek_entry(kr_new, later.email, later.email_len, &e);
    assert_string_equal(e.master_key, new_id);
    assert_string_equal(sp_kms_key_id(new_kms), new_id);
    close_all();
    (void)audit_check("rot-audit.log");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rsa_oaep_outage, need_hsm, test_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_oaep_ingest_after_failed_sends, need_hsm, test_teardown),
        cmocka_unit_test_setup_teardown(test_aes_kwp_outage, need_hsm, test_teardown),
        cmocka_unit_test_setup_teardown(test_kmip_revocation, need_kmip, test_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_hsm_to_kmip, need_both, test_teardown),
    };
    const int total = (int)(sizeof tests / sizeof tests[0]);
    int64_t start = kmip_now_ms();
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (!g_setup_done || failed < 0 || failed > total) failed = total;
    int passed = total - failed;
    if (passed < 0) passed = 0;
    printf("vault-kms took %.1f s\n", (double)(kmip_now_ms() - start) / 1000.0);
    printf("vault-kms: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
