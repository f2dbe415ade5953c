/*
 * Fuzz target for the PII vault (src/vault/): sp_vault_decrypt on arbitrary
 * blobs, and sp_vault_normalize on arbitrary values.
 *
 * Blobs come back from the platform's database, which people and programs
 * other than the vault can write, and they reach a parser, a hash lookup
 * and GCM. Values come from users and feed the blind index. So:
 *
 *   decrypt (first byte & 3 == 0; bits 2-3 pick the field, bits 4-5 the
 *   profile id; the rest is the blob): the only answers are SP_OK and
 *   SP_ERR_AUTH; a failure leaves the output zeroed and its length 0; a
 *   success names the vault's one DEK, gives exactly len - 46 bytes, and
 *   the plaintext sealed again opens to itself. sp_vault_blob_dek agrees
 *   with the format rules on every input.
 *
 *   normalise (first byte & 3 == 1, 2, 3: text, email, phone; bits 2-3 pick
 *   the default country code; the rest is the value): refusals are
 *   SP_ERR_INVALID_ARGUMENT only (never "buffer too small" with the room
 *   the header promises), a result has the shape its kind promises, it is
 *   its own normal form, and its blind index equals the raw value's.
 *
 * The vault is fixed so committed seeds stay valid: a local master key and
 * one DEK with known bytes, written into a temporary directory at start-up
 * (the local KMS's AES key wrap is deterministic, so the keyring entry is
 * too). The audit log goes to that directory and is started afresh every
 * few thousand decrypts, so long runs do not fill the disk.
 *
 * Seeds: SP_FUZZ_VAULT_SEEDS=DIR fuzz_vault_blob writes the seed corpus
 * (valid blobs for each field and profile, near misses, values to
 * normalise) into DIR and exits.
 */
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"

#include "core/sp_core.h"
#include "vault/sp_vault_internal.h"

#define FUZZ_NOW ((int64_t)1700000000)
#define FUZZ_TENANT "fuzz"
#define FUZZ_DEK "5ea1b0b0-0000-4000-8000-00000000d0e1"
#define FUZZ_ROTATE_AUDIT 4096

static const char *const fuzz_fields[4] = {"email", "phone", "name", "note"};
static const char *const fuzz_profiles[4] = {"p-1", "profile-0042", "x", "p-2"};
static const char *const fuzz_country[4] = {NULL, "1", "44", "358"};
static const sp_vault_field fuzz_pii[] = {
    {"email", SP_VAULT_FIELD_EMAIL},
    {"phone", SP_VAULT_FIELD_PHONE},
    {"name", SP_VAULT_FIELD_TEXT},
};
#define FUZZ_VAULT_CC "44" /* the vault's default country code */

static struct {
    char dir[256];
    char audit_dir[300];
    unsigned audit_generation;
    unsigned decrypts;
    sp_kms *kms;
    sp_keyring *kr;
    sp_audit *audit;
    sp_vault *vault;
} fz;

#define FUZZ_OK(expr)                                                                              \
    do {                                                                                           \
        sp_error rc_ = (expr);                                                                     \
        if (rc_ != SP_OK) {                                                                        \
            fprintf(stderr, "fuzz: %s: %s\n", #expr, sp_error_name(rc_));                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int fuzz_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fuzz_cleanup(void) {
    if (fz.dir[0]) (void)nftw(fz.dir, fuzz_remove, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh log in a fresh directory; the old one goes whole, whatever
 * sidecar files the audit log keeps beside it. */
static void fuzz_open_audit_and_vault(void) {
    sp_vault_close(fz.vault);
    fz.vault = NULL;
    sp_audit_close(fz.audit);
    fz.audit = NULL;
    if (fz.audit_dir[0]) (void)nftw(fz.audit_dir, fuzz_remove, 16, FTW_DEPTH | FTW_PHYS);
    snprintf(fz.audit_dir, sizeof fz.audit_dir, "%s/audit-%u", fz.dir, fz.audit_generation++);
    FUZZ_CHECK(mkdir(fz.audit_dir, 0700) == 0);
    char path[400];
    snprintf(path, sizeof path, "%s/audit.log", fz.audit_dir);
    FUZZ_OK(sp_audit_open(path, &fz.audit));
    sp_vault_options o;
    memset(&o, 0, sizeof o);
    o.tenant = FUZZ_TENANT;
    o.pii_fields = fuzz_pii;
    o.n_pii_fields = SP_ARRAY_LEN(fuzz_pii);
    o.default_country_code = FUZZ_VAULT_CC;
    o.audit = fz.audit;
    FUZZ_OK(sp_vault_open(&o, fz.kr, &fz.vault));
}

/* The fixed master key, and a keyring holding the one fixed DEK. */
static void fuzz_make_keys(void) {
    uint8_t master[SP_KEY_BYTES], dek_bytes[SP_KEY_BYTES];
    for (size_t i = 0; i < SP_KEY_BYTES; i++) {
        master[i] = (uint8_t)(0x40 + i);
        dek_bytes[i] = (uint8_t)(0x60 + i);
    }
    char text[256], path[300];
    sp_wbuf b = sp_wbuf_of(text, sizeof text);
    FUZZ_OK(sp_wbuf_put_str(&b, "sealpost-local-master-key v1\n"));
    FUZZ_OK(sp_wbuf_put_b64(&b, master, sizeof master, false));
    FUZZ_OK(sp_wbuf_put_str(&b, "\n"));
    snprintf(path, sizeof path, "%s/master.key", fz.dir);
    FUZZ_OK(sp_file_replace(path, (const uint8_t *)text, b.len));
    char config[400];
    snprintf(config, sizeof config, "local:path=%s", path);
    FUZZ_OK(sp_kms_open(config, &fz.kms));

    sp_key *dek = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len = 0;
    FUZZ_OK(sp_key_new(dek_bytes, sizeof dek_bytes, &dek));
    FUZZ_OK(sp_kms_wrap_key(fz.kms, dek, wrapped, sizeof wrapped, &wrapped_len));
    sp_key_free(dek);
    char b64[SP_KMS_MAX_WRAPPED * 2];
    size_t b64_len = 0;
    FUZZ_OK(sp_b64_encode(wrapped, wrapped_len, b64, sizeof b64, &b64_len, false));
    char json[4096];
    int n = snprintf(json, sizeof json,
                     "{\"format\":\"sealpost-keyring\",\"version\":1,\"channels\":[],\"keys\":[{\"tenant\":\"%s\","
                     "\"channel\":\"%s\",\"version\":\"%s\",\"state\":\"active\",\"master_key\":\"%s\",\"seq\":1,"
                     "\"created\":%lld,\"deactivated\":0,\"retired\":0,\"destroyed\":0,\"wrapped\":\"%s\"}]}\n",
                     FUZZ_TENANT, SP_VAULT_DEK_CHANNEL, FUZZ_DEK, sp_kms_key_id(fz.kms),
                     (long long)(FUZZ_NOW - 100), b64);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof json);
    snprintf(path, sizeof path, "%s/keyring.json", fz.dir);
    FUZZ_OK(sp_file_replace(path, (const uint8_t *)json, (size_t)n));
    FUZZ_OK(sp_keyring_open(path, fz.kms, &fz.kr));
}

static void fuzz_write_seed(const char *dir, const char *name, uint8_t selector, const void *data, size_t len) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    FUZZ_CHECK(fp != NULL);
    FUZZ_CHECK(fwrite(&selector, 1, 1, fp) == 1);
    FUZZ_CHECK(len == 0 || fwrite(data, 1, len, fp) == len);
    FUZZ_CHECK(fclose(fp) == 0);
}

static uint8_t fuzz_selector(unsigned mode, unsigned a, unsigned b) {
    return (uint8_t)(mode | a << 2 | b << 4);
}

static void fuzz_seed_blob(const char *dir, const char *name, unsigned field, unsigned profile, const char *value,
                           size_t len) {
    static uint8_t blob[SP_VAULT_MAX_VALUE + SP_VAULT_OVERHEAD];
    size_t n = 0;
    FUZZ_OK(sp_vault_encrypt(fz.vault, fuzz_profiles[profile], fuzz_fields[field], (const uint8_t *)value, len,
                             FUZZ_NOW, blob, sizeof blob, &n));
    fuzz_write_seed(dir, name, fuzz_selector(0, field, profile), blob, n);
}

static void fuzz_write_seeds(const char *dir) {
    static const char long_note[] =
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
        "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex "
        "ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu.";
    fuzz_seed_blob(dir, "valid-email", 0, 0, "alice@example.com", 17);
    fuzz_seed_blob(dir, "valid-phone", 1, 1, "+442079460958", 13);
    fuzz_seed_blob(dir, "valid-name-utf8", 2, 2, "Jos\xc3\xa9 \xe5\xb1\xb1\xe7\x94\xb0", 12);
    fuzz_seed_blob(dir, "valid-note-empty", 3, 3, "", 0);
    fuzz_seed_blob(dir, "valid-note-long", 3, 0, long_note, sizeof long_note - 1);

    uint8_t blob[128];
    size_t n = 0;
    FUZZ_OK(sp_vault_encrypt(fz.vault, "p-1", "email", (const uint8_t *)"bob@example.org", 15, FUZZ_NOW, blob,
                             sizeof blob, &n));
    fuzz_write_seed(dir, "bad-other-profile", fuzz_selector(0, 0, 1), blob, n);
    fuzz_write_seed(dir, "bad-other-field", fuzz_selector(0, 1, 0), blob, n);
    fuzz_write_seed(dir, "bad-truncated", fuzz_selector(0, 0, 0), blob, SP_VAULT_OVERHEAD - 1);
    fuzz_write_seed(dir, "bad-short-by-one", fuzz_selector(0, 0, 0), blob, n - 1);
    blob[0] = 2;
    fuzz_write_seed(dir, "bad-format", fuzz_selector(0, 0, 0), blob, n);
    blob[0] = 1;
    blob[1] = 2;
    fuzz_write_seed(dir, "bad-algorithm", fuzz_selector(0, 0, 0), blob, n);
    blob[1] = 1;
    blob[17] ^= 1;
    fuzz_write_seed(dir, "bad-unknown-dek", fuzz_selector(0, 0, 0), blob, n);
    blob[17] ^= 1;
    blob[n - 1] ^= 0x80;
    fuzz_write_seed(dir, "bad-tag", fuzz_selector(0, 0, 0), blob, n);

    static const struct {
        const char *name;
        unsigned kind, cc;
        const char *value;
    } values[] = {
        {"norm-text", 1, 0, "  Ada Lovelace \n"},
        {"norm-email", 2, 0, " Alice@Example.COM "},
        {"norm-email-utf8", 2, 0, "J\xc3\x96rg@B\xc3\xbc" "cher.DE"},
        {"norm-email-bad", 2, 0, "alice@example"},
        {"norm-phone-plus", 3, 0, "+1 (415) 555-0100"},
        {"norm-phone-00", 3, 0, "0044 20 7946 0958"},
        {"norm-phone-national", 3, 2, "020 7946 0958"},
        {"norm-phone-national-us", 3, 1, "(415) 555-0100"},
        {"norm-phone-bad", 3, 3, "+0 12 ext 5"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(values); i++)
        fuzz_write_seed(dir, values[i].name, fuzz_selector(values[i].kind, values[i].cc, 0), values[i].value,
                        strlen(values[i].value));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_library();
    const char *tmp = getenv("TMPDIR");
    snprintf(fz.dir, sizeof fz.dir, "%s/sp-fuzz-vault-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FUZZ_CHECK(mkdtemp(fz.dir) != NULL);
    atexit(fuzz_cleanup);
    fuzz_make_keys();
    fuzz_open_audit_and_vault();
    const char *seeds = getenv("SP_FUZZ_VAULT_SEEDS");
    if (seeds != NULL && seeds[0]) {
        fuzz_write_seeds(seeds);
        exit(0);
    }
    return 0;
}

static void fuzz_decrypt(unsigned field_ix, unsigned profile_ix, const uint8_t *data, size_t size) {
    const char *field = fuzz_fields[field_ix], *profile = fuzz_profiles[profile_ix];
    uint8_t *blob = fuzz_dup(data, size);
    size_t cap = size ? size : 1;
    uint8_t *out = fuzz_alloc(cap);
    memset(out, 0xa5, cap);
    size_t n = 12345;
    sp_error rc = sp_vault_decrypt(fz.vault, profile, field, size ? blob : NULL, size, "fuzz", FUZZ_NOW, out, cap, &n);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_AUTH);

    char dek[SP_KEY_VERSION_CHARS + 1];
    sp_error drc = sp_vault_blob_dek(size ? blob : NULL, size, dek);
    bool header_ok = size >= SP_VAULT_OVERHEAD && size - SP_VAULT_OVERHEAD <= SP_VAULT_MAX_VALUE && blob[0] == 1 &&
                     blob[1] == 1;
    FUZZ_CHECK(header_ok ? drc == SP_OK : drc == SP_ERR_AUTH);
    if (drc == SP_OK) FUZZ_CHECK(sp_uuid_is_valid(dek, strlen(dek)));

    size_t plain = size >= SP_VAULT_OVERHEAD ? size - SP_VAULT_OVERHEAD : 0;
    if (rc != SP_OK) {
        FUZZ_CHECK(n == 0);
        for (size_t i = 0; i < plain; i++) FUZZ_CHECK(out[i] == 0);
    } else {
        FUZZ_CHECK(header_ok && n == plain && strcmp(dek, FUZZ_DEK) == 0);
        /* sealed again, it opens to itself */
        uint8_t *again = fuzz_alloc(n + SP_VAULT_OVERHEAD);
        uint8_t *back = fuzz_alloc(n);
        size_t m = 0, k = 0;
        FUZZ_CHECK(sp_vault_encrypt(fz.vault, profile, field, out, n, FUZZ_NOW, again, n + SP_VAULT_OVERHEAD, &m) ==
                   SP_OK);
        FUZZ_CHECK(m == size && memcmp(again, blob, 18) == 0);
        FUZZ_CHECK(sp_vault_decrypt(fz.vault, profile, field, again, m, "fuzz", FUZZ_NOW, back, n ? n : 1, &k) ==
                   SP_OK);
        FUZZ_CHECK(k == n && (n == 0 || memcmp(back, out, n) == 0));
        free(again);
        free(back);
    }
    free(out);
    free(blob);
    if (++fz.decrypts >= FUZZ_ROTATE_AUDIT) {
        fz.decrypts = 0;
        fuzz_open_audit_and_vault();
    }
}

static void fuzz_check_shape(sp_vault_field_kind kind, const char *s, size_t n) {
    switch (kind) {
    case SP_VAULT_FIELD_EMAIL: {
        FUZZ_CHECK(n >= 3 && n <= SP_VAULT_MAX_EMAIL);
        size_t ats = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            FUZZ_CHECK(c > 0x20 && c != 0x7f && !(c >= 'A' && c <= 'Z'));
            ats += c == '@';
        }
        FUZZ_CHECK(ats == 1 && s[0] != '@' && s[n - 1] != '@');
        break;
    }
    case SP_VAULT_FIELD_PHONE:
        FUZZ_CHECK(n >= 1 + SP_VAULT_PHONE_MIN_DIGITS && n <= 1 + SP_VAULT_PHONE_MAX_DIGITS);
        FUZZ_CHECK(s[0] == '+' && s[1] >= '1' && s[1] <= '9');
        for (size_t i = 1; i < n; i++) FUZZ_CHECK(s[i] >= '0' && s[i] <= '9');
        break;
    default:
        FUZZ_CHECK(n >= 1);
        /* memchr, not strchr: text may hold NUL bytes */
        FUZZ_CHECK(!memchr(" \t\n\v\f\r", s[0], 6) && !memchr(" \t\n\v\f\r", s[n - 1], 6));
        break;
    }
}

static void fuzz_normalize(sp_vault_field_kind kind, const char *cc, const uint8_t *data, size_t size) {
    uint8_t *value = fuzz_dup(data, size);
    size_t cap = size + 8; /* what the header promises is enough */
    char *out = fuzz_alloc(cap);
    size_t n = 999;
    sp_error rc = sp_vault_normalize(kind, cc, size ? value : NULL, size, out, cap, &n);
    if (size > SP_VAULT_MAX_VALUE) {
        FUZZ_CHECK(rc == SP_ERR_TOO_LARGE);
    } else {
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_INVALID_ARGUMENT);
    }
    if (rc != SP_OK) {
        FUZZ_CHECK(n == 0);
    } else {
        FUZZ_CHECK(n < cap && out[n] == 0);
        fuzz_check_shape(kind, out, n);
        /* idempotent */
        char *again = fuzz_alloc(n + 8);
        size_t m = 0;
        FUZZ_CHECK(sp_vault_normalize(kind, cc, (const uint8_t *)out, n, again, n + 8, &m) == SP_OK);
        FUZZ_CHECK(m == n && memcmp(again, out, n) == 0);
        free(again);
        /* the index hashes the normal form: raw and normalised agree (for
         * phones only under the vault's own default country) */
        bool same_rules = kind != SP_VAULT_FIELD_PHONE || (cc != NULL && strcmp(cc, FUZZ_VAULT_CC) == 0);
        if (same_rules) {
            const char *field = kind == SP_VAULT_FIELD_EMAIL ? "email" : kind == SP_VAULT_FIELD_PHONE ? "phone" : "name";
            uint8_t a[SP_VAULT_INDEX_MAX], b[SP_VAULT_INDEX_MAX];
            size_t al = 0, bl = 0;
            FUZZ_CHECK(sp_vault_index(fz.vault, field, value, size, a, sizeof a, &al) == SP_OK);
            FUZZ_CHECK(sp_vault_index(fz.vault, field, (const uint8_t *)out, n, b, sizeof b, &bl) == SP_OK);
            FUZZ_CHECK(al == bl && memcmp(a, b, al) == 0);
        }
    }
    free(out);
    free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    unsigned sel = data[0];
    unsigned mode = sel & 3, a = (sel >> 2) & 3, b = (sel >> 4) & 3;
    if (mode == 0) {
        fuzz_decrypt(a, b, data + 1, size - 1);
    } else {
        static const sp_vault_field_kind kinds[4] = {SP_VAULT_FIELD_TEXT, SP_VAULT_FIELD_TEXT, SP_VAULT_FIELD_EMAIL,
                                                     SP_VAULT_FIELD_PHONE};
        fuzz_normalize(kinds[mode], fuzz_country[a], data + 1, size - 1);
    }
    return 0;
}
