/*
 * The PII vault (include/sealpost/vault.h, src/vault/) and the two keyring
 * operations it brought (sp_keyring_erase_channel, sp_keyring_rotate_with_key).
 *
 * The vault is where users' email addresses and phone numbers rest, so the
 * tests hold it to what a security review would ask of it:
 *  - a blob opens only as itself: its tenant, profile and field are bound
 *    (moved anywhere else it is SP_ERR_AUTH, the tenant checked even when
 *    the DEK is shared by force), and every truncation and every single bit
 *    flip is SP_ERR_AUTH with the output zeroed;
 *  - the DEK life cycle with synthetic clocks: rollover at dek_lifetime_s
 *    with old blobs still readable, the cache's TTL, use limit and
 *    refresh-ahead, counted exactly through a scripted KMS backend;
 *  - what the KMS being down or revoked does: a warm cache carries on, a
 *    revocation takes effect within the TTL and is honoured at once when
 *    heard, a symmetric master key stops ingestion with nothing written, an
 *    asymmetric one (wrap works, unwrap does not) carries on under new DEKs;
 *  - blind indexes: normalisation rules, equal values equal indexes, fields
 *    and tenants apart;
 *  - the audit line of every decrypt: no value, no raw profile id, refused
 *    without a log, and no plaintext when the line cannot be written;
 *  - crypto-erase: every old blob dead, new ones under fresh keys, other
 *    tenants untouched, no KMS needed;
 *  - a warm encrypt and a warm (unaudited) decrypt allocate nothing, and
 *    every allocation failure over open+encrypt+decrypt+index is a clean
 *    error that leaks nothing (LSan, and the secure-heap byte count).
 *
 * Every test works in its own mkdtemp directory and removes it afterwards.
 */
#include <signal.h>
#include <sys/resource.h>

#include "sp_test_util.h"
#include "sp_fake_kms.h"

#include <openssl/crypto.h>

#include "kms/sp_kms.h"
#include "vault/sp_vault_internal.h"

#define T0 ((int64_t)1700000000)
#define BLOB_MAX (SP_VAULT_MAX_VALUE + SP_VAULT_OVERHEAD)

/* ---- the scripted KMS backend (tests/sp_fake_kms.h) ----
 * fake_answer(wrap_rc, unwrap_rc) sets what every call answers: an outage
 * (UNAVAILABLE), a revocation (ACCESS_DENIED), or, with only unwrap
 * failing, an asymmetric master key whose HSM is gone. */
#define FAKE_MECH 7
#define FAKE_MASK 0x3c

static const sp_kms_backend fake_backend = SP_FAKE_KMS_BACKEND(201, NULL);

/* No retries (counts stay exact) and a breaker that never opens (it would
 * turn later calls into fast failures the scripts did not ask for). */
#define FAKE_CONFIG "fake:retries=0;backoff-ms=1;breaker-failures=1000"

/* ---- fixture: a scratch directory, a local KMS, a keyring, an audit log,
 * and the same over the fake backend ---- */

typedef struct {
    char dir[256];
    char kr_path[300], audit_path[300], fake_kr_path[300];
    char config[400];
    sp_kms *kms, *fkms;
    sp_keyring *kr, *fkr;
    sp_audit *audit;
} fixture;

static int fixture_teardown(void **state);

static int fixture_setup(void **state) {
    fixture *f = SP_TEST_FIXTURE_NEW(fixture, dir, "sp-vault");
    if (f == NULL) return -1;
    snprintf(f->kr_path, sizeof f->kr_path, "%s/keyring.json", f->dir);
    snprintf(f->fake_kr_path, sizeof f->fake_kr_path, "%s/fake-keyring.json", f->dir);
    snprintf(f->audit_path, sizeof f->audit_path, "%s/audit.log", f->dir);
    snprintf(f->config, sizeof f->config, "local:path=%s/master.key;create=1", f->dir);
    *state = f;
    fake_reset(FAKE_MECH, FAKE_MASK);
    if (sp_kms_open(f->config, &f->kms) != SP_OK || sp_keyring_open(f->kr_path, f->kms, &f->kr) != SP_OK ||
        sp_audit_open(f->audit_path, &f->audit) != SP_OK ||
        sp_kms_open_backend(&fake_backend, FAKE_CONFIG, &f->fkms) != SP_OK ||
        sp_keyring_open(f->fake_kr_path, f->fkms, &f->fkr) != SP_OK) {
        (void)fixture_teardown(state);
        return -1;
    }
    return 0;
}

static int fixture_teardown(void **state) {
    fixture *f = *state;
    sp_keyring_close(f->kr);
    sp_keyring_close(f->fkr);
    sp_kms_close(f->kms);
    sp_kms_close(f->fkms);
    sp_audit_close(f->audit);
    return sp_test_fixture_free(f, f->dir);
}

/* ---- helpers ---- */

static size_t secure_used(void) { return CRYPTO_secure_used(); }

static sp_vault_options base_options(fixture *f, const char *tenant) {
    sp_vault_options o;
    memset(&o, 0, sizeof o);
    o.tenant = tenant;
    o.audit = f->audit;
    o.default_country_code = "1";
    return o;
}

static sp_vault *open_vault(const sp_vault_options *o, sp_keyring *kr) {
    sp_vault *v = NULL;
    assert_ok(sp_vault_open(o, kr, &v));
    assert_non_null(v);
    return v;
}

static size_t seal(sp_vault *v, const char *profile, const char *field, const void *value, size_t len, int64_t now,
                   uint8_t *blob, size_t cap) {
    size_t n = 0;
    assert_ok(sp_vault_encrypt(v, profile, field, value, len, now, blob, cap, &n));
    assert_int_equal(n, len + SP_VAULT_OVERHEAD);
    return n;
}

static sp_error open_blob(sp_vault *v, const char *profile, const char *field, const uint8_t *blob, size_t len,
                          int64_t now, uint8_t *out, size_t cap, size_t *out_len) {
    return sp_vault_decrypt(v, profile, field, blob, len, "test", now, out, cap, out_len);
}

static void assert_opens_to(sp_vault *v, const char *profile, const char *field, const uint8_t *blob, size_t len,
                            int64_t now, const void *want, size_t want_len) {
    uint8_t *out = malloc(want_len + 1);
    assert_non_null(out);
    size_t n = 99;
    assert_ok(open_blob(v, profile, field, blob, len, now, out, want_len + 1, &n));
    assert_int_equal(n, want_len);
    if (want_len) assert_memory_equal(out, want, want_len);
    free(out);
}

/* A decrypt that must fail with `want`, leaving zeros where a plaintext
 * would have gone and no length. */
static void assert_refused(sp_vault *v, const char *profile, const char *field, const uint8_t *blob, size_t len,
                           int64_t now, sp_error want) {
    uint8_t out[512];
    memset(out, 0xaa, sizeof out);
    size_t n = 77;
    sp_error rc = open_blob(v, profile, field, blob, len, now, out, sizeof out, &n);
    if (rc != want) fail_msg("decrypt gave %s, expected %s", sp_error_name(rc), sp_error_name(want));
    assert_int_equal(n, 0);
    size_t plain = len >= SP_VAULT_OVERHEAD ? len - SP_VAULT_OVERHEAD : 0;
    if (plain > sizeof out) plain = sizeof out;
    assert_true(sp_test_all_zero(out, plain));
}

static void blob_uuid(const uint8_t *blob, size_t len, char uuid[SP_KEY_VERSION_CHARS + 1]) {
    assert_ok(sp_vault_blob_dek(blob, len, uuid));
}

/* Versions of (tenant, channel) in a given state (0: any). */
static size_t count_versions(sp_keyring *kr, const char *tenant, const char *channel, int state) {
    size_t n = 0;
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(kr, i, &e));
        if (strcmp(e.tenant, tenant) == 0 && strcmp(e.channel, channel) == 0 && (state == 0 || (int)e.state == state))
            n++;
    }
    return n;
}

static bool active_version(sp_keyring *kr, const char *tenant, const char *channel, char out[SP_KEY_VERSION_CHARS + 1]) {
    for (size_t i = 0; i < sp_keyring_count(kr); i++) {
        sp_keyring_entry e;
        assert_ok(sp_keyring_get(kr, i, &e));
        if (strcmp(e.tenant, tenant) == 0 && strcmp(e.channel, channel) == 0 && e.state == SP_KEYRING_ACTIVE) {
            memcpy(out, e.version, SP_KEY_VERSION_CHARS + 1);
            return true;
        }
    }
    return false;
}

static sp_vault_stats stats_of(const sp_vault *v) {
    sp_vault_stats s;
    sp_vault_get_stats(v, &s);
    return s;
}

/* The last line of a text file (a static copy). */
static const char *last_line(const char *path) {
    static char line[SP_AUDIT_MAX_LINE + 1];
    char *text = sp_test_read_file(path, NULL);
    size_t len = strlen(text);
    while (len > 0 && text[len - 1] == '\n') text[--len] = 0;
    char *start = strrchr(text, '\n');
    start = start ? start + 1 : text;
    snprintf(line, sizeof line, "%s", start);
    free(text);
    return line;
}

static size_t count_lines(const char *path) {
    char *text = sp_test_read_file(path, NULL);
    size_t n = 0;
    for (char *p = text; *p; p++) n += *p == '\n';
    free(text);
    return n;
}

/* ---- normalisation ---- */

static void assert_norm(sp_vault_field_kind kind, const char *cc, const char *in, const char *want) {
    char out[600];
    size_t n = 0;
    sp_error rc = sp_vault_normalize(kind, cc, (const uint8_t *)in, strlen(in), out, sizeof out, &n);
    if (rc != SP_OK) fail_msg("normalising \"%s\" gave %s", in, sp_error_name(rc));
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
    /* a normalised value is its own normal form */
    char again[600];
    size_t m = 0;
    assert_ok(sp_vault_normalize(kind, cc, (const uint8_t *)out, n, again, sizeof again, &m));
    assert_int_equal(m, n);
    assert_memory_equal(again, out, n);
}

static void assert_no_norm(sp_vault_field_kind kind, const char *cc, const char *in, size_t len) {
    char out[600];
    size_t n = 5;
    sp_error rc = sp_vault_normalize(kind, cc, (const uint8_t *)in, len, out, sizeof out, &n);
    if (rc != SP_ERR_INVALID_ARGUMENT) fail_msg("\"%s\" gave %s, expected a refusal", in, sp_error_name(rc));
    assert_int_equal(n, 0);
}

static void test_normalize_email(void **state) {
    (void)state;
    const sp_vault_field_kind E = SP_VAULT_FIELD_EMAIL;
    assert_norm(E, NULL, "Alice@Example.COM", "alice@example.com");
    assert_norm(E, NULL, " \t alice@example.com\r\n", "alice@example.com");
    assert_norm(E, NULL, "First.Last+Tag@Sub.Example.Org", "first.last+tag@sub.example.org");
    /* UTF-8 is kept as bytes: only ASCII letters change case */
    assert_norm(E, NULL, "J\xc3\x96rg@B\xc3\xbc" "cher.DE", "j\xc3\x96rg@b\xc3\xbc" "cher.de");
    assert_norm(E, NULL, "a@b.c", "a@b.c");

    const char *bad[] = {"",          "   ",         "alice",          "alice@",         "@example.com",
                         "a@b",       "a@@b.com",    "a@b@c.com",      "al ice@example.com", "alice@exa mple.com",
                         "a\tb@c.d",  "a@b.c\x7f",   "Alice <a@b.c>", "a@b\n.c"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) assert_no_norm(E, NULL, bad[i], strlen(bad[i]));
    assert_no_norm(E, NULL, "a\0b@c.d", 7); /* a NUL inside */

    /* 254 bytes is the longest address (RFC 5321 path limit) */
    char longest[300];
    memset(longest, 'a', sizeof longest);
    memcpy(longest + 254 - 6, "@x.com", 6);
    longest[254] = 0;
    assert_norm(E, NULL, longest, longest);
    char too_long[300];
    memset(too_long, 'a', sizeof too_long);
    memcpy(too_long + 255 - 6, "@x.com", 6);
    too_long[255] = 0;
    assert_no_norm(E, NULL, too_long, 255);
}

static void test_normalize_phone(void **state) {
    (void)state;
    const sp_vault_field_kind P = SP_VAULT_FIELD_PHONE;
    assert_norm(P, NULL, "+1 (415) 555-0100", "+14155550100");
    assert_norm(P, NULL, "0044 20 7946 0958", "+442079460958");
    assert_norm(P, NULL, "+44 20.7946.0958", "+442079460958");
    assert_norm(P, NULL, "  +49/30/1234567 ", "+49301234567");
    /* national numbers take the configured country code, without the trunk 0 */
    assert_norm(P, "44", "020 7946 0958", "+442079460958");
    assert_norm(P, "1", "(415) 555-0100", "+14155550100");
    assert_norm(P, "1", "415.555.0100", "+14155550100");
    /* an international number ignores the default */
    assert_norm(P, "44", "+1 415 555 0100", "+14155550100");
    assert_norm(P, "44", "001 415 555 0100", "+14155550100");
    /* the bounds of E.164: 8..15 digits */
    assert_norm(P, NULL, "+12345678", "+12345678");
    assert_norm(P, NULL, "+123456789012345", "+123456789012345");

    const char *bad[] = {"",
                         "+",
                         "+1234567",          /* 7 digits */
                         "+1234567890123456", /* 16 digits */
                         "+0123456789",       /* no country code starts with 0 */
                         "00 0 1234 5678",     /* "00", then a country code starting with 0 */
                         "415 555 0100",      /* national, and no default country */
                         "phone",
                         "+1 415 555 0100 ext 5",
                         "+1 415 555 0100#",
                         "++14155550100",
                         "1+4155550100",
                         "+1\t415 555 0100",
                         "\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93\xef\xbc\x94\xef\xbc\x95\xef\xbc\x96\xef\xbc\x97\xef\xbc\x98"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) assert_no_norm(P, NULL, bad[i], strlen(bad[i]));
    /* a default country does not rescue what is not a number */
    assert_no_norm(P, "1", "555-01", 6);
    assert_no_norm(P, "1", "+0 415 555 0100", 15);

    /* a country code that is not one is refused outright */
    char out[64];
    size_t n = 0;
    const char *bad_cc[] = {"", "0", "01", "1234", "1a", "+1"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_cc); i++) {
        assert_rc(sp_vault_normalize(P, bad_cc[i], (const uint8_t *)"4155550100", 10, out, sizeof out, &n),
                  SP_ERR_INVALID_ARGUMENT);
    }
}

static void test_normalize_text_and_limits(void **state) {
    (void)state;
    assert_norm(SP_VAULT_FIELD_TEXT, NULL, "  Ada Lovelace \n", "Ada Lovelace");
    assert_norm(SP_VAULT_FIELD_TEXT, NULL, "\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e",
                "\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e");
    assert_no_norm(SP_VAULT_FIELD_TEXT, NULL, " \t\n", 3);

    char out[64];
    size_t n = 0;
    /* room: the result and its NUL, nothing written past cap */
    assert_rc(sp_vault_normalize(SP_VAULT_FIELD_EMAIL, NULL, (const uint8_t *)"a@b.cd", 6, out, 6, &n),
              SP_ERR_BUFFER_TOO_SMALL);
    assert_ok(sp_vault_normalize(SP_VAULT_FIELD_EMAIL, NULL, (const uint8_t *)"a@b.cd", 6, out, 7, &n));
    assert_string_equal(out, "a@b.cd");
    assert_rc(sp_vault_normalize((sp_vault_field_kind)9, NULL, (const uint8_t *)"x", 1, out, sizeof out, &n),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_normalize(SP_VAULT_FIELD_TEXT, NULL, NULL, 1, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_normalize(SP_VAULT_FIELD_TEXT, NULL, (const uint8_t *)"x", 1, NULL, 8, &n),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_normalize(SP_VAULT_FIELD_TEXT, NULL, (const uint8_t *)"x", 1, out, sizeof out, NULL),
              SP_ERR_INVALID_ARGUMENT);
    static uint8_t big[SP_VAULT_MAX_VALUE + 1];
    assert_rc(sp_vault_normalize(SP_VAULT_FIELD_TEXT, NULL, big, sizeof big, out, sizeof out, &n), SP_ERR_TOO_LARGE);
}

/* ---- options ---- */

static void test_open_options(void **state) {
    fixture *f = *state;
    sp_vault *v = NULL;
    sp_vault_options o = base_options(f, "acme");
    assert_rc(sp_vault_open(NULL, f->kr, &v), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_open(&o, NULL, &v), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_open(&o, f->kr, NULL), SP_ERR_INVALID_ARGUMENT);

    const char *bad_tenants[] = {"", "a b", "acme/x", "\xc3\xa9",
                                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_tenants); i++) {
        o = base_options(f, bad_tenants[i]);
        assert_rc(sp_vault_open(&o, f->kr, &v), SP_ERR_INVALID_ARGUMENT);
    }
    o = base_options(f, NULL);
    assert_rc(sp_vault_open(&o, f->kr, &v), SP_ERR_INVALID_ARGUMENT);

    const sp_vault_field dup[] = {{"email", SP_VAULT_FIELD_EMAIL}, {"email", SP_VAULT_FIELD_TEXT}};
    const sp_vault_field bad_name[] = {{"E-mail", SP_VAULT_FIELD_EMAIL}};
    const sp_vault_field bad_kind[] = {{"email", (sp_vault_field_kind)3}};
    const sp_vault_field long_name[] = {{"a123456789012345678901234567890123456789012345678", SP_VAULT_FIELD_TEXT}};
    const sp_vault_field empty_name[] = {{"", SP_VAULT_FIELD_TEXT}};
    sp_vault_field many[SP_VAULT_MAX_PII_FIELDS + 1];
    char names[SP_VAULT_MAX_PII_FIELDS + 1][8];
    for (size_t i = 0; i < SP_ARRAY_LEN(many); i++) {
        snprintf(names[i], sizeof names[i], "f%zu", i);
        many[i].name = names[i];
        many[i].kind = SP_VAULT_FIELD_TEXT;
    }
    struct {
        const sp_vault_field *fields;
        size_t n;
    } field_cases[] = {{NULL, 1}, {dup, 0}, {dup, 2}, {bad_name, 1}, {bad_kind, 1}, {long_name, 1},
                       {empty_name, 1}, {many, SP_ARRAY_LEN(many)}};
    for (size_t i = 0; i < SP_ARRAY_LEN(field_cases); i++) {
        o = base_options(f, "acme");
        o.pii_fields = field_cases[i].fields;
        o.n_pii_fields = field_cases[i].n;
        assert_rc(sp_vault_open(&o, f->kr, &v), SP_ERR_INVALID_ARGUMENT);
    }
    o = base_options(f, "acme");
    o.pii_fields = many;
    o.n_pii_fields = SP_VAULT_MAX_PII_FIELDS; /* exactly the limit is fine */
    v = open_vault(&o, f->kr);
    assert_true(sp_vault_is_pii(v, "f31"));
    assert_false(sp_vault_is_pii(v, "email"));
    sp_vault_close(v);

    struct {
        int64_t lifetime, ttl, refresh;
        size_t index;
        const char *cc;
    } bad_numbers[] = {
        {-1, 0, 0, 0, NULL}, {0, -1, 0, 0, NULL}, {0, 0, -1, 0, NULL}, {0, 100, 100, 0, NULL},
        {0, 100, 101, 0, NULL}, {0, 0, 0, 7, NULL}, {0, 0, 0, 33, NULL}, {0, 0, 0, 0, "0"},
        {0, 0, 0, 0, "1234"}, {0, 0, 0, 0, "x"}, {(int64_t)400 * 366 * 86400, 0, 0, 0, NULL},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_numbers); i++) {
        o = base_options(f, "acme");
        o.dek_lifetime_s = bad_numbers[i].lifetime;
        o.cache_ttl_s = bad_numbers[i].ttl;
        o.refresh_ahead_s = bad_numbers[i].refresh;
        o.index_bytes = bad_numbers[i].index;
        o.default_country_code = bad_numbers[i].cc;
        if (sp_vault_open(&o, f->kr, &v) != SP_ERR_INVALID_ARGUMENT) fail_msg("bad option set %zu accepted", i);
    }
    /* a short TTL with the default refresh still works: the default shrinks */
    o = base_options(f, "acme");
    o.cache_ttl_s = 30;
    v = open_vault(&o, f->kr);
    sp_vault_close(v);

    /* the defaults: email and phone are PII, nothing else */
    o = base_options(f, "acme");
    v = open_vault(&o, f->kr);
    assert_true(sp_vault_is_pii(v, "email"));
    assert_true(sp_vault_is_pii(v, "phone"));
    assert_false(sp_vault_is_pii(v, "name"));
    assert_false(sp_vault_is_pii(v, "Email"));
    assert_false(sp_vault_is_pii(v, NULL));
    assert_false(sp_vault_is_pii(NULL, "email"));
    /* opening touches neither the KMS nor the keyring */
    assert_int_equal(sp_keyring_count(f->kr), 0);
    sp_vault_close(v);
    sp_vault_close(NULL);
}

static void test_argument_checks(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    uint8_t blob[256], out[256];
    size_t n = 0;
    const uint8_t *val = (const uint8_t *)"alice@example.com";
    char long_profile[SP_VAULT_MAX_PROFILE_ID + 2];
    memset(long_profile, 'p', sizeof long_profile);
    long_profile[SP_VAULT_MAX_PROFILE_ID + 1] = 0;
    const char *bad_profiles[] = {"", "p 1", "p\t1", "pr\xc3\xb6" "file", long_profile};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_profiles); i++)
        assert_rc(sp_vault_encrypt(v, bad_profiles[i], "email", val, 17, T0, blob, sizeof blob, &n),
                  SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, NULL, "email", val, 17, T0, blob, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    const char *bad_fields[] = {"", "Email", "e-mail", "e mail",
                                "a1234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_fields); i++)
        assert_rc(sp_vault_encrypt(v, "p1", bad_fields[i], val, 17, T0, blob, sizeof blob, &n),
                  SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, "p1", "email", NULL, 17, T0, blob, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, "p1", "email", val, 17, T0, NULL, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, "p1", "email", val, 17, T0, blob, sizeof blob, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(NULL, "p1", "email", val, 17, T0, blob, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, "p1", "email", val, 17, -5, blob, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_encrypt(v, "p1", "email", val, 17, T0, blob, 17 + SP_VAULT_OVERHEAD - 1, &n),
              SP_ERR_BUFFER_TOO_SMALL);
    static uint8_t big[SP_VAULT_MAX_VALUE + 1];
    static uint8_t big_out[SP_VAULT_MAX_VALUE + 1 + SP_VAULT_OVERHEAD];
    assert_rc(sp_vault_encrypt(v, "p1", "note", big, sizeof big, T0, big_out, sizeof big_out, &n), SP_ERR_TOO_LARGE);
    /* in place is refused: the nonce would be written over the value */
    memcpy(blob, val, 17);
    assert_rc(sp_vault_encrypt(v, "p1", "email", blob, 17, T0, blob, sizeof blob, &n), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(sp_keyring_count(f->kr), 0); /* nothing was made for refused calls */

    /* a profile id of exactly 128 visible characters is fine */
    long_profile[SP_VAULT_MAX_PROFILE_ID] = 0;
    size_t len = seal(v, long_profile, "email", val, 17, T0, blob, sizeof blob);
    assert_opens_to(v, long_profile, "email", blob, len, T0, val, 17);

    const char *bad_purposes[] = {"", "Send", "send sms", "send/sms",
                                  "p12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_purposes); i++)
        assert_rc(sp_vault_decrypt(v, long_profile, "email", blob, len, bad_purposes[i], T0, out, sizeof out, &n),
                  SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_decrypt(v, long_profile, "email", blob, len, NULL, T0, out, sizeof out, &n),
              SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_vault_decrypt(v, long_profile, "email", blob, len, "send.sms-1_x", T0, out, sizeof out, &n));
    assert_rc(sp_vault_decrypt(v, long_profile, "email", blob, len, "send", T0, out, 16, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_rc(sp_vault_decrypt(v, long_profile, "email", blob, len, "send", T0, out, sizeof out, NULL),
              SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_decrypt(v, long_profile, "email", blob, len, "send", T0, blob, sizeof blob, &n),
              SP_ERR_INVALID_ARGUMENT);
    sp_vault_close(v);
}

/* ---- the blob ---- */

static void test_round_trip_sizes(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    static uint8_t value[SP_VAULT_MAX_VALUE], blob[BLOB_MAX], blob2[BLOB_MAX];
    for (size_t i = 0; i < sizeof value; i++) value[i] = (uint8_t)(i * 31 + 7);
    const size_t sizes[] = {0, 1, 16, 64, 256, 4096, 65536};
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
        size_t len = seal(v, "profile-1", "note", value, sizes[i], T0, blob, sizeof blob);
        assert_int_equal(len - sizes[i], SP_VAULT_OVERHEAD); /* exactly 46 bytes of overhead */
        assert_int_equal(blob[0], 1);
        assert_int_equal(blob[1], 1);
        assert_opens_to(v, "profile-1", "note", blob, len, T0, value, sizes[i]);
        /* a fresh nonce each time: the same value never gives the same blob */
        size_t len2 = seal(v, "profile-1", "note", value, sizes[i], T0, blob2, sizeof blob2);
        assert_int_equal(len2, len);
        assert_memory_not_equal(blob + 18, blob2 + 18, 12);
    }
    /* the DEK id is the keyring's active version, as 16 raw bytes */
    char active[SP_KEY_VERSION_CHARS + 1], named[SP_KEY_VERSION_CHARS + 1];
    assert_true(active_version(f->kr, "acme", SP_VAULT_DEK_CHANNEL, active));
    size_t len = seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    blob_uuid(blob, len, named);
    assert_string_equal(named, active);
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, 0), 1);

    /* an empty value opens into no buffer at all */
    len = seal(v, "p", "note", "", 0, T0, blob, sizeof blob);
    size_t n = 9;
    assert_ok(sp_vault_decrypt(v, "p", "note", blob, len, "test", T0, NULL, 0, &n));
    assert_int_equal(n, 0);
    sp_vault_close(v);
}

/* UTF-8 text goes through as bytes. */
static void test_round_trip_utf8(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    const char *utf8 = "Jos\xc3\xa9 M\xc3\xbcller \xe5\xb1\xb1\xe7\x94\xb0 \xf0\x9f\x98\x80";
    uint8_t blob[128];
    size_t len = seal(v, "p-1", "name", utf8, strlen(utf8), T0, blob, sizeof blob);
    assert_opens_to(v, "p-1", "name", blob, len, T0, utf8, strlen(utf8));
    sp_vault_close(v);
}

/* Copies the keyring file with the DEKs (only: other channels would end up
 * with two active versions) of one tenant handed to another:
 * the only way to make two tenants share a DEK, and so to see the tenant
 * checked by the AAD and not only by the DEK lookup. */
static void copy_keyring_as_tenant(const char *from, const char *to, const char *old_tenant, const char *new_tenant) {
    json_t *root = sp_test_load_json(from, 0);
    json_t *keys = json_object_get(root, "keys");
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        if (strcmp(json_string_value(json_object_get(k, "tenant")), old_tenant) == 0 &&
            strcmp(json_string_value(json_object_get(k, "channel")), SP_VAULT_DEK_CHANNEL) == 0)
            assert_int_equal(json_object_set_new(k, "tenant", json_string(new_tenant)), 0);
    }
    assert_int_equal(json_dump_file(root, to, 0), 0);
    json_decref(root);
    assert_int_equal(chmod(to, 0600), 0);
}

static void test_aad_binding(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *acme = open_vault(&o, f->kr);
    o.tenant = "globex";
    sp_vault *globex = open_vault(&o, f->kr);
    const char *value = "alice@example.com";
    uint8_t blob[128];
    size_t len = seal(acme, "p1", "email", value, strlen(value), T0, blob, sizeof blob);
    assert_opens_to(acme, "p1", "email", blob, len, T0, value, strlen(value));

    assert_refused(acme, "p2", "email", blob, len, T0, SP_ERR_AUTH);    /* another row */
    assert_refused(acme, "p1", "phone", blob, len, T0, SP_ERR_AUTH);    /* another column */
    assert_refused(acme, "p1", "email2", blob, len, T0, SP_ERR_AUTH);
    assert_refused(acme, "P1", "email", blob, len, T0, SP_ERR_AUTH);    /* ids are exact */
    assert_refused(globex, "p1", "email", blob, len, T0, SP_ERR_AUTH);  /* another tenant: DEK unknown there */

    /* another tenant holding the very same DEK: the AAD still tells them apart */
    char copy[400];
    snprintf(copy, sizeof copy, "%s/copied.json", f->dir);
    copy_keyring_as_tenant(f->kr_path, copy, "acme", "globex");
    sp_keyring *kr2 = NULL;
    assert_ok(sp_keyring_open(copy, f->kms, &kr2));
    o.tenant = "globex";
    sp_vault *thief = open_vault(&o, kr2);
    assert_refused(thief, "p1", "email", blob, len, T0, SP_ERR_AUTH);
    /* and the DEK really was found and unwrapped there: it is the AAD that refused */
    assert_int_equal(stats_of(thief).unwraps, 1);
    sp_vault_close(thief);
    sp_keyring_close(kr2);

    sp_vault_close(acme);
    sp_vault_close(globex);
}

static void test_tamper_every_bit_and_truncation(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    const char *value = "+14155550100 / bob";
    size_t vlen = strlen(value);
    uint8_t blob[128], bad[129];
    size_t len = seal(v, "p1", "phone", value, vlen, T0, blob, sizeof blob);
    size_t lines_before = count_lines(f->audit_path);
    uint64_t reloads = stats_of(v).reloads;

    for (size_t cut = 0; cut < len; cut++) {
        memcpy(bad, blob, cut);
        assert_refused(v, "p1", "phone", cut ? bad : NULL, cut, T0, SP_ERR_AUTH);
    }
    for (size_t bit = 0; bit < len * 8; bit++) {
        memcpy(bad, blob, len);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_refused(v, "p1", "phone", bad, len, T0, SP_ERR_AUTH);
    }
    memcpy(bad, blob, len);
    bad[len] = 0;
    assert_refused(v, "p1", "phone", bad, len + 1, T0, SP_ERR_AUTH); /* a byte more */
    /* and the original still opens: nothing above harmed the cache */
    assert_opens_to(v, "p1", "phone", blob, len, T0, value, vlen);
    /* every attempt, failed or not, has its line */
    assert_int_equal(count_lines(f->audit_path) - lines_before, len + len * 8 + 1 + 1);
    /* 128 forged DEK ids cost at most one re-read of the keyring (the one
     * that picks up the file our own rotation replaced): made-up ids must
     * not turn decrypts into reads of the whole file */
    uint64_t after_flips = stats_of(v).reloads;
    assert_true(after_flips - reloads <= 1);
    /* nor do more of them later, while the file stays the same */
    memcpy(bad, blob, len);
    bad[5] ^= 1;
    for (int i = 0; i < 50; i++) assert_refused(v, "p1", "phone", bad, len, T0 + 1 + i, SP_ERR_AUTH);
    assert_int_equal(stats_of(v).reloads, after_flips);

    /* sp_vault_blob_dek: the same judgement of the header */
    char uuid[SP_KEY_VERSION_CHARS + 1];
    for (size_t cut = 0; cut < SP_VAULT_OVERHEAD; cut++) {
        assert_rc(sp_vault_blob_dek(blob, cut, uuid), SP_ERR_AUTH);
        assert_string_equal(uuid, "");
    }
    memcpy(bad, blob, len);
    bad[0] = 2;
    assert_rc(sp_vault_blob_dek(bad, len, uuid), SP_ERR_AUTH);
    bad[0] = 1;
    bad[1] = 2;
    assert_rc(sp_vault_blob_dek(bad, len, uuid), SP_ERR_AUTH);
    assert_rc(sp_vault_blob_dek(NULL, len, uuid), SP_ERR_AUTH);
    assert_rc(sp_vault_blob_dek(blob, len, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_ok(sp_vault_blob_dek(blob, len, uuid));
    assert_true(sp_uuid_is_valid(uuid, strlen(uuid)));
    sp_vault_close(v);
}

/* ---- the DEK life cycle ---- */

static void test_dek_rollover(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.dek_lifetime_s = 100;
    o.cache_ttl_s = 1000;
    sp_vault *v = open_vault(&o, f->kr);
    uint8_t b1[64], b2[64], b3[64];
    char d1[37], d2[37], d3[37];
    size_t l1 = seal(v, "p", "email", "a@b.co", 6, T0, b1, sizeof b1);
    size_t l2 = seal(v, "p", "email", "c@d.co", 6, T0 + 99, b2, sizeof b2);
    size_t l3 = seal(v, "p", "email", "e@f.co", 6, T0 + 100, b3, sizeof b3);
    blob_uuid(b1, l1, d1);
    blob_uuid(b2, l2, d2);
    blob_uuid(b3, l3, d3);
    assert_string_equal(d1, d2);     /* within the lifetime: the same DEK */
    assert_string_not_equal(d1, d3); /* at it: a new one */
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, SP_KEYRING_ACTIVE), 1);
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, SP_KEYRING_DECRYPT_ONLY), 1);
    char active[37];
    assert_true(active_version(f->kr, "acme", SP_VAULT_DEK_CHANNEL, active));
    assert_string_equal(active, d3);
    /* old blobs still open, in this vault and in a cold one */
    assert_opens_to(v, "p", "email", b1, l1, T0 + 150, "a@b.co", 6);
    sp_vault *cold = open_vault(&o, f->kr);
    assert_opens_to(cold, "p", "email", b2, l2, T0 + 150, "c@d.co", 6);
    assert_opens_to(cold, "p", "email", b3, l3, T0 + 150, "e@f.co", 6);
    /* a cold vault sharing the keyring encrypts under the current DEK, it
     * does not make its own */
    char d4[37];
    size_t l4 = seal(cold, "p", "email", "g@h.co", 6, T0 + 150, b1, sizeof b1);
    blob_uuid(b1, l4, d4);
    assert_string_equal(d4, d3);
    assert_int_equal(stats_of(v).rotations, 2);
    assert_int_equal(stats_of(cold).rotations, 0);
    sp_vault_close(cold);
    sp_vault_close(v);
}

static void test_cache_ttl_and_use_limit(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.dek_lifetime_s = 100000;
    o.cache_ttl_s = 100;
    o.refresh_ahead_s = 10;
    sp_vault *v = open_vault(&o, f->fkr);
    uint8_t blob[64];
    size_t len = seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_int_equal(stats_of(v).unwraps, 1);
    assert_opens_to(v, "p", "email", blob, len, T0 + 1, "a@b.co", 6); /* also makes the audit key */
    int unwraps = fake.unwraps;
    /* warm until the refresh window: no KMS */
    for (int64_t t = T0; t < T0 + 90; t += 7) {
        assert_opens_to(v, "p", "email", blob, len, t, "a@b.co", 6);
        len = seal(v, "p", "email", "a@b.co", 6, t, blob, sizeof blob);
    }
    assert_int_equal(fake.unwraps, unwraps);
    assert_int_equal(stats_of(v).unwraps, 1);
    /* past the TTL with no access in the refresh window: unwrapped afresh */
    assert_opens_to(v, "p", "email", blob, len, T0 + 100, "a@b.co", 6);
    assert_int_equal(fake.unwraps, unwraps + 1);
    assert_int_equal(stats_of(v).unwraps, 2);
    assert_true(stats_of(v).expired >= 1);
    sp_vault_close(v);

    /* the use limit: after cache_max_uses uses the KMS is asked again */
    o.cache_max_uses = 5;
    v = open_vault(&o, f->fkr);
    len = seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob); /* use 1 */
    assert_int_equal(stats_of(v).unwraps, 1);
    for (int i = 0; i < 4; i++) assert_opens_to(v, "p", "email", blob, len, T0, "a@b.co", 6); /* uses 2..5 */
    assert_int_equal(stats_of(v).unwraps, 1);
    assert_opens_to(v, "p", "email", blob, len, T0, "a@b.co", 6); /* the 6th: unwrapped again */
    assert_int_equal(stats_of(v).unwraps, 2);
    for (int i = 0; i < 4; i++) (void)seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_int_equal(stats_of(v).unwraps, 2);
    (void)seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_int_equal(stats_of(v).unwraps, 3);
    sp_vault_close(v);
}

static void test_refresh_ahead(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.cache_ttl_s = 100;
    o.refresh_ahead_s = 20;
    sp_vault *v = open_vault(&o, f->fkr);
    uint8_t blob[64];
    size_t len = seal(v, "p", "phone", "+14155550100", 12, T0, blob, sizeof blob); /* unwrapped at T0 */
    assert_opens_to(v, "p", "phone", blob, len, T0 + 1, "+14155550100", 12);
    assert_opens_to(v, "p", "phone", blob, len, T0 + 79, "+14155550100", 12);
    assert_int_equal(stats_of(v).unwraps, 1);
    /* in the last 20 s: re-unwrapped while the old copy still served */
    assert_opens_to(v, "p", "phone", blob, len, T0 + 80, "+14155550100", 12);
    assert_int_equal(stats_of(v).unwraps, 2);
    assert_int_equal(stats_of(v).refreshes, 1);
    /* the TTL now counts from T0 + 80 */
    assert_opens_to(v, "p", "phone", blob, len, T0 + 159, "+14155550100", 12);
    assert_int_equal(stats_of(v).unwraps, 2);

    /* an outage during the refresh window: served from the cache, the KMS
     * asked at most once a second, until the real expiry */
    fake_answer(SP_ERR_KMS_UNAVAILABLE, SP_ERR_KMS_UNAVAILABLE);
    int asked = fake.unwraps;
    assert_opens_to(v, "p", "phone", blob, len, T0 + 161, "+14155550100", 12);
    assert_int_equal(fake.unwraps, asked + 1);
    assert_opens_to(v, "p", "phone", blob, len, T0 + 161, "+14155550100", 12);
    assert_opens_to(v, "p", "phone", blob, len, T0 + 161, "+14155550100", 12);
    assert_int_equal(fake.unwraps, asked + 1);
    assert_opens_to(v, "p", "phone", blob, len, T0 + 179, "+14155550100", 12);
    assert_int_equal(fake.unwraps, asked + 2);
    assert_int_equal(stats_of(v).refresh_failures, 2);
    /* encryption carries on as well */
    uint8_t more[64];
    (void)seal(v, "p", "phone", "+14155550101", 12, T0 + 179, more, sizeof more);
    /* the copy expires at T0 + 180: then the outage shows */
    assert_refused(v, "p", "phone", blob, len, T0 + 180, SP_ERR_KMS_UNAVAILABLE);
    fake_answer(SP_OK, SP_OK);
    assert_opens_to(v, "p", "phone", blob, len, T0 + 181, "+14155550100", 12);
    sp_vault_close(v);
}

/* ---- the KMS down or revoked ---- */

/* Blind-index keys obey the same TTL as DEKs: once the tenant revokes the
 * master key, indexing stops within cache_ttl_s too (an index key left in
 * memory would let a holder brute-force phone numbers). sp_vault_index
 * reads the real clock, hence a one-second TTL and a short sleep. */
static void test_revocation_stops_indexing(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.cache_ttl_s = 1;
    sp_vault *v = open_vault(&o, f->fkr);
    uint8_t first[SP_VAULT_INDEX_MAX], again[SP_VAULT_INDEX_MAX];
    size_t n1 = 0, n2 = 0;
    assert_ok(sp_vault_index(v, "email", (const uint8_t *)"A@B.co", 6, first, sizeof first, &n1));
    fake_answer(SP_ERR_KMS_ACCESS_DENIED, SP_ERR_KMS_ACCESS_DENIED);
    /* within the TTL the unwrapped index key still serves */
    assert_ok(sp_vault_index(v, "email", (const uint8_t *)"a@b.co", 6, again, sizeof again, &n2));
    assert_memory_equal(first, again, n1);
    sp_test_sleep_ms(2100);
    assert_rc(sp_vault_index(v, "email", (const uint8_t *)"a@b.co", 6, again, sizeof again, &n2),
              SP_ERR_KMS_ACCESS_DENIED);
    fake_answer(SP_OK, SP_OK);
    assert_ok(sp_vault_index(v, "email", (const uint8_t *)"a@b.co", 6, again, sizeof again, &n2));
    assert_memory_equal(first, again, n1);
    sp_vault_close(v);
}

static void test_revocation_crypto_shredding(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.cache_ttl_s = 100;
    o.refresh_ahead_s = 10;
    sp_vault *v = open_vault(&o, f->fkr);
    uint8_t blob[64], fresh[64];
    size_t len = seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_opens_to(v, "p", "email", blob, len, T0, "a@b.co", 6);

    /* the tenant revokes the master key */
    fake_answer(SP_ERR_KMS_ACCESS_DENIED, SP_ERR_KMS_ACCESS_DENIED);
    int asked = fake.unwraps + fake.wraps;
    /* within the TTL (before the refresh window) the cached DEK still serves */
    assert_opens_to(v, "p", "email", blob, len, T0 + 50, "a@b.co", 6);
    assert_opens_to(v, "p", "email", blob, len, T0 + 89, "a@b.co", 6);
    (void)seal(v, "p", "email", "c@d.co", 6, T0 + 89, fresh, sizeof fresh);
    assert_int_equal(fake.unwraps + fake.wraps, asked);
    /* the first access that asks the KMS hears the refusal, and the copy goes */
    assert_refused(v, "p", "email", blob, len, T0 + 90, SP_ERR_KMS_ACCESS_DENIED);
    assert_int_equal(stats_of(v).cached, 0);
    assert_refused(v, "p", "email", blob, len, T0 + 91, SP_ERR_KMS_ACCESS_DENIED);
    /* a cold vault gets nothing either, and cannot ingest (the master key is
     * symmetric: no new DEK can be wrapped) */
    sp_vault *cold = open_vault(&o, f->fkr);
    size_t before = sp_keyring_count(f->fkr);
    memset(fresh, 0xaa, sizeof fresh);
    size_t n = 5;
    assert_rc(sp_vault_encrypt(cold, "p", "email", (const uint8_t *)"c@d.co", 6, T0 + 91, fresh, sizeof fresh, &n),
              SP_ERR_KMS_ACCESS_DENIED);
    assert_int_equal(n, 0);
    assert_true(sp_test_all_zero(fresh, 6 + SP_VAULT_OVERHEAD));
    assert_int_equal(sp_keyring_count(f->fkr), before);
    /* a cached copy past its TTL would not have helped either */
    fake_answer(SP_OK, SP_OK);
    sp_vault *late = open_vault(&o, f->fkr);
    assert_opens_to(late, "p", "email", blob, len, T0 + 100, "a@b.co", 6);
    fake_answer(SP_ERR_KMS_ACCESS_DENIED, SP_ERR_KMS_ACCESS_DENIED);
    assert_opens_to(late, "p", "email", blob, len, T0 + 150, "a@b.co", 6);
    assert_refused(late, "p", "email", blob, len, T0 + 200, SP_ERR_KMS_ACCESS_DENIED);

    /* access restored: everything readable again */
    fake_answer(SP_OK, SP_OK);
    assert_opens_to(v, "p", "email", blob, len, T0 + 300, "a@b.co", 6);
    assert_opens_to(cold, "p", "email", blob, len, T0 + 300, "a@b.co", 6);
    (void)seal(cold, "p", "email", "c@d.co", 6, T0 + 300, fresh, sizeof fresh);
    sp_vault_close(late);
    sp_vault_close(cold);
    sp_vault_close(v);
}

static void test_outage_symmetric(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.dek_lifetime_s = 100; /* shorter than the cache TTL, for the last part */
    uint8_t blob[64];
    size_t n = 3;

    /* a cold vault, no DEK yet, the KMS down: nothing produced, nothing stored */
    fake_answer(SP_ERR_KMS_UNAVAILABLE, SP_ERR_KMS_UNAVAILABLE);
    sp_vault *v = open_vault(&o, f->fkr);
    memset(blob, 0xaa, sizeof blob);
    assert_rc(sp_vault_encrypt(v, "p", "email", (const uint8_t *)"a@b.co", 6, T0, blob, sizeof blob, &n), SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(n, 0);
    assert_true(sp_test_all_zero(blob, 6 + SP_VAULT_OVERHEAD));
    assert_int_equal(sp_keyring_count(f->fkr), 0);

    /* the KMS back: the DEK is made and cached */
    fake_answer(SP_OK, SP_OK);
    size_t len = seal(v, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_opens_to(v, "p", "email", blob, len, T0, "a@b.co", 6);
    /* down again: the warm cache carries both directions, without asking */
    fake_answer(SP_ERR_KMS_UNAVAILABLE, SP_ERR_KMS_UNAVAILABLE);
    int asked = fake.wraps + fake.unwraps;
    uint8_t more[64];
    size_t more_len = seal(v, "p", "email", "c@d.co", 6, T0 + 10, more, sizeof more);
    assert_opens_to(v, "p", "email", more, more_len, T0 + 10, "c@d.co", 6);
    assert_int_equal(fake.wraps + fake.unwraps, asked);

    /* the DEK exists but this vault is cold: the unwrap fails, so does the
     * wrap of a new DEK, and the caller hears "retry later" */
    sp_vault *cold = open_vault(&o, f->fkr);
    size_t keys = sp_keyring_count(f->fkr);
    memset(blob, 0xaa, sizeof blob);
    assert_rc(sp_vault_encrypt(cold, "p", "email", (const uint8_t *)"a@b.co", 6, T0 + 10, blob, sizeof blob, &n),
              SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(n, 0);
    assert_true(sp_test_all_zero(blob, 6 + SP_VAULT_OVERHEAD));
    assert_int_equal(sp_keyring_count(f->fkr), keys);

    /* the DEK's lifetime ends while the KMS is down: the cached DEK goes on
     * rather than stopping ingestion at a policy boundary */
    char d1[37], d2[37];
    blob_uuid(more, more_len, d1);
    more_len = seal(v, "p", "email", "c@d.co", 6, T0 + 150, more, sizeof more);
    blob_uuid(more, more_len, d2);
    assert_string_equal(d1, d2);
    sp_vault_close(cold);
    sp_vault_close(v);
    fake_answer(SP_OK, SP_OK);
}

static void test_asymmetric_offline_ingestion(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    uint8_t old_blob[64], blob[64], more[64];
    sp_vault *first = open_vault(&o, f->fkr);
    size_t old_len = seal(first, "p", "email", "a@b.co", 6, T0, old_blob, sizeof old_blob);
    sp_vault_close(first);

    const sp_error down[] = {SP_ERR_KMS_UNAVAILABLE, SP_ERR_KMS_ACCESS_DENIED};
    for (size_t i = 0; i < SP_ARRAY_LEN(down); i++) {
        /* an RSA-OAEP master key: wrapping is local and works, unwrapping
         * needs the HSM, which is unreachable or has revoked us */
        fake_answer(SP_OK, down[i]);
        sp_vault *v = open_vault(&o, f->fkr);
        char before[37], now_dek[37], used[37];
        assert_true(active_version(f->fkr, "acme", SP_VAULT_DEK_CHANNEL, before));
        size_t len = seal(v, "p", "email", "c@d.co", 6, T0 + 10, blob, sizeof blob);
        blob_uuid(blob, len, used);
        assert_string_not_equal(used, before); /* a new DEK, used without an unwrap */
        assert_true(active_version(f->fkr, "acme", SP_VAULT_DEK_CHANNEL, now_dek));
        assert_string_equal(used, now_dek);
        assert_int_equal(stats_of(v).fallbacks, 1);
        /* and then it is simply warm */
        int asked = fake.wraps + fake.unwraps;
        size_t more_len = seal(v, "p", "email", "e@f.co", 6, T0 + 11, more, sizeof more);
        assert_int_equal(fake.wraps + fake.unwraps, asked);
        char again[37];
        blob_uuid(more, more_len, again);
        assert_string_equal(again, used);
        /* reading old data still needs the HSM */
        assert_refused(v, "p", "email", old_blob, old_len, T0 + 11, down[i]);
        sp_vault_close(v);

        /* the HSM back: all of it opens, in a cold vault */
        fake_answer(SP_OK, SP_OK);
        sp_vault *reader = open_vault(&o, f->fkr);
        assert_opens_to(reader, "p", "email", old_blob, old_len, T0 + 12, "a@b.co", 6);
        assert_opens_to(reader, "p", "email", blob, len, T0 + 12, "c@d.co", 6);
        assert_opens_to(reader, "p", "email", more, more_len, T0 + 12, "e@f.co", 6);
        sp_vault_close(reader);
    }
}

static void test_rotation_by_another_process(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.dek_lifetime_s = 60;
    sp_keyring *kr2 = NULL;
    assert_ok(sp_keyring_open(f->kr_path, f->kms, &kr2)); /* another process's view of the file */
    sp_vault *writer = open_vault(&o, f->kr);
    sp_vault *reader = open_vault(&o, kr2);
    uint8_t blob[64];
    size_t len = seal(writer, "p", "email", "a@b.co", 6, T0, blob, sizeof blob);
    assert_opens_to(reader, "p", "email", blob, len, T0, "a@b.co", 6);
    /* a rotation the reader's keyring has not seen, asked for within the
     * second of its last re-read: the unknown id makes it read once more */
    uint64_t reloads = stats_of(reader).reloads;
    len = seal(writer, "p", "email", "c@d.co", 6, T0 + 60, blob, sizeof blob);
    assert_opens_to(reader, "p", "email", blob, len, T0, "c@d.co", 6);
    assert_int_equal(stats_of(reader).reloads, reloads + 1);
    assert_opens_to(reader, "p", "email", blob, len, T0 + 60, "c@d.co", 6);
    assert_int_equal(stats_of(reader).reloads, reloads + 1); /* cached now */
    /* later than that, the re-read every unwrap does finds it first */
    uint8_t third[64];
    size_t third_len = seal(writer, "p", "email", "x@y.co", 6, T0 + 120, third, sizeof third);
    assert_opens_to(reader, "p", "email", third, third_len, T0 + 121, "x@y.co", 6);
    assert_int_equal(stats_of(reader).reloads, reloads + 1);
    /* the reader encrypts under the writer's current DEK, not a new one of its own */
    char d1[37], d2[37];
    blob_uuid(third, third_len, d1);
    len = seal(reader, "p", "email", "e@f.co", 6, T0 + 122, blob, sizeof blob);
    blob_uuid(blob, len, d2);
    assert_string_equal(d1, d2);
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, 0), 3);
    sp_vault_close(reader);
    sp_vault_close(writer);
    sp_keyring_close(kr2);
}

static void test_cache_eviction(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.dek_lifetime_s = 1;
    o.cache_ttl_s = 100000;
    sp_vault *v = open_vault(&o, f->fkr);
    enum { N = SP_VAULT_CACHE_ENTRIES + 44 };
    static uint8_t blobs[N][64];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        char value[16];
        snprintf(value, sizeof value, "v%d", i);
        lens[i] = seal(v, "p", "note", value, strlen(value), T0 + i, blobs[i], sizeof blobs[i]);
    }
    sp_vault_stats s = stats_of(v);
    assert_int_equal(s.rotations, N);
    assert_int_equal(s.cached, SP_VAULT_CACHE_ENTRIES);
    assert_int_equal(s.evictions, N - SP_VAULT_CACHE_ENTRIES);
    /* every blob opens, evicted DEKs unwrapped again */
    for (int i = 0; i < N; i++) {
        char value[16];
        snprintf(value, sizeof value, "v%d", i);
        assert_opens_to(v, "p", "note", blobs[i], lens[i], T0 + N, value, strlen(value));
    }
    assert_int_equal(stats_of(v).cached, SP_VAULT_CACHE_ENTRIES);
    sp_vault_close(v);
}

/* ---- blind index ---- */

static void index_of(sp_vault *v, const char *field, const char *value, uint8_t out[32], size_t want_len) {
    size_t n = 0;
    sp_error rc = sp_vault_index(v, field, (const uint8_t *)value, strlen(value), out, 32, &n);
    if (rc != SP_OK) fail_msg("index of \"%s\" gave %s", value, sp_error_name(rc));
    assert_int_equal(n, want_len);
}

static void test_blind_index(void **state) {
    fixture *f = *state;
    const sp_vault_field fields[] = {{"email", SP_VAULT_FIELD_EMAIL},
                                     {"backup_email", SP_VAULT_FIELD_EMAIL},
                                     {"phone", SP_VAULT_FIELD_PHONE},
                                     {"name", SP_VAULT_FIELD_TEXT}};
    sp_vault_options o = base_options(f, "acme");
    o.pii_fields = fields;
    o.n_pii_fields = SP_ARRAY_LEN(fields);
    sp_vault *v = open_vault(&o, f->kr);
    uint8_t a[32], b[32];

    index_of(v, "email", "Alice@Example.COM ", a, 16);
    index_of(v, "email", "  alice@example.com", b, 16);
    assert_memory_equal(a, b, 16);
    index_of(v, "email", "bob@example.com", b, 16);
    assert_memory_not_equal(a, b, 16);
    /* the same value in another field: another key, another index */
    index_of(v, "backup_email", "alice@example.com", b, 16);
    assert_memory_not_equal(a, b, 16);

    index_of(v, "phone", "+1 (415) 555-0100", a, 16);
    index_of(v, "phone", "4155550100", b, 16); /* national, default country "1" */
    assert_memory_equal(a, b, 16);
    index_of(v, "phone", "001-415-555-0100", b, 16);
    assert_memory_equal(a, b, 16);
    index_of(v, "phone", "0044 20 7946 0958", a, 16);
    index_of(v, "phone", "+44 20 7946 0958", b, 16);
    assert_memory_equal(a, b, 16);

    index_of(v, "name", " Ada ", a, 16);
    index_of(v, "name", "Ada", b, 16);
    assert_memory_equal(a, b, 16);
    index_of(v, "name", "ada", b, 16);
    assert_memory_not_equal(a, b, 16); /* text keeps its case */

    /* what does not normalise has no index */
    size_t n = 0;
    const char *bad_emails[] = {"not-an-email", "a@b", "a b@c.d", ""};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_emails); i++)
        assert_rc(sp_vault_index(v, "email", (const uint8_t *)bad_emails[i], strlen(bad_emails[i]), a, 32, &n),
                  SP_ERR_INVALID_ARGUMENT);
    const char *bad_phones[] = {"12345", "+0123456789", "call me", "+1 415 555 0100 x2"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_phones); i++)
        assert_rc(sp_vault_index(v, "phone", (const uint8_t *)bad_phones[i], strlen(bad_phones[i]), a, 32, &n),
                  SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_index(v, "name", (const uint8_t *)"  ", 2, a, 32, &n), SP_ERR_INVALID_ARGUMENT);
    /* only PII fields have one */
    assert_rc(sp_vault_index(v, "note", (const uint8_t *)"x", 1, a, 32, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_index(v, "Email", (const uint8_t *)"a@b.co", 6, a, 32, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_index(v, "email", (const uint8_t *)"a@b.co", 6, a, 15, &n), SP_ERR_BUFFER_TOO_SMALL);
    assert_rc(sp_vault_index(v, "email", NULL, 6, a, 32, &n), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_index(v, "email", (const uint8_t *)"a@b.co", 6, a, 32, NULL), SP_ERR_INVALID_ARGUMENT);

    /* one index key per field, made once, never rotated */
    assert_int_equal(count_versions(f->kr, "acme", "vault.index.email", 0), 1);
    assert_int_equal(count_versions(f->kr, "acme", "vault.index.backup_email", 0), 1);
    assert_int_equal(count_versions(f->kr, "acme", "vault.index.phone", 0), 1);

    /* another vault of the tenant (another process) finds the same rows */
    sp_vault *v2 = open_vault(&o, f->kr);
    index_of(v, "email", "alice@example.com", a, 16);
    index_of(v2, "email", "ALICE@example.com", b, 16);
    assert_memory_equal(a, b, 16);
    sp_vault_close(v2);
    /* another tenant does not */
    o.tenant = "globex";
    sp_vault *other = open_vault(&o, f->kr);
    index_of(other, "email", "alice@example.com", b, 16);
    assert_memory_not_equal(a, b, 16);
    sp_vault_close(other);

    /* the length option: a truncation of the same HMAC */
    uint8_t full[32], short8[32];
    o.tenant = "acme";
    o.index_bytes = 32;
    sp_vault *v32 = open_vault(&o, f->kr);
    o.index_bytes = 8;
    sp_vault *v8 = open_vault(&o, f->kr);
    index_of(v32, "email", "alice@example.com", full, 32);
    index_of(v8, "email", "alice@example.com", short8, 8);
    assert_memory_equal(full, a, 16);
    assert_memory_equal(short8, a, 8);
    assert_rc(sp_vault_index(v8, "email", (const uint8_t *)"a@b.co", 6, a, 7, &n), SP_ERR_BUFFER_TOO_SMALL);
    sp_vault_close(v8);
    sp_vault_close(v32);

    /* without a default country, national numbers have no index */
    o.default_country_code = NULL;
    o.index_bytes = 0;
    sp_vault *nocc = open_vault(&o, f->kr);
    assert_rc(sp_vault_index(nocc, "phone", (const uint8_t *)"4155550100", 10, a, 32, &n), SP_ERR_INVALID_ARGUMENT);
    index_of(nocc, "phone", "+14155550100", a, 16);
    sp_vault_close(nocc);
    sp_vault_close(v);
}

/* ---- the audit line ---- */


/* The value of "name":"..." in a line (a static copy). */
static const char *line_field(const char *line, const char *name) {
    static char value[300];
    char key[64];
    snprintf(key, sizeof key, "\"%s\":\"", name);
    const char *p = strstr(line, key);
    if (p == NULL) return "";
    p += strlen(key);
    const char *end = strchr(p, '"');
    assert_non_null(end);
    snprintf(value, sizeof value, "%.*s", (int)(end - p), p);
    return value;
}

static void test_audit_line(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    const char *email = "carol.secret@example.com";
    const char *profile = "user-8472-zz";
    uint8_t blob[128], out[128];
    size_t len = seal(v, profile, "email", email, strlen(email), T0, blob, sizeof blob);
    char dek[37];
    blob_uuid(blob, len, dek);
    size_t n = 0;
    size_t lines = count_lines(f->audit_path);
    assert_ok(sp_vault_decrypt(v, profile, "email", blob, len, "send.email", T0, out, sizeof out, &n));
    /* exactly one line for the decrypt (the audit key's KMS calls are not
     * logged here: the local KMS has no audit attached) */
    assert_int_equal(count_lines(f->audit_path), lines + 1);
    char line[SP_AUDIT_MAX_LINE + 1];
    snprintf(line, sizeof line, "%s", last_line(f->audit_path));
    assert_string_equal(line_field(line, "event"), "vault.decrypt");
    assert_string_equal(line_field(line, "tenant"), "acme");
    assert_string_equal(line_field(line, "dek"), dek);
    assert_string_equal(line_field(line, "field"), "email");
    assert_string_equal(line_field(line, "purpose"), "send.email");
    assert_string_equal(line_field(line, "result"), "SP_OK");
    char who[64];
    snprintf(who, sizeof who, "%s", line_field(line, "profile"));
    assert_int_equal(strlen(who), 32);
    /* never the value, never the raw profile id, in any part */
    assert_null(strstr(line, email));
    assert_null(strstr(line, "carol"));
    assert_null(strstr(line, profile));
    assert_null(strstr(line, "8472"));
    /* the hash is the profile's: the same profile again, the same hash */
    assert_ok(sp_vault_decrypt(v, profile, "email", blob, len, "send.email", T0, out, sizeof out, &n));
    assert_string_equal(line_field(last_line(f->audit_path), "profile"), who);
    uint8_t blob2[128];
    size_t len2 = seal(v, "user-1", "email", email, strlen(email), T0, blob2, sizeof blob2);
    assert_ok(sp_vault_decrypt(v, "user-1", "email", blob2, len2, "send.email", T0, out, sizeof out, &n));
    assert_string_not_equal(line_field(last_line(f->audit_path), "profile"), who);
    /* a failed decrypt has its line too, with its result */
    assert_refused(v, "user-2", "email", blob2, len2, T0, SP_ERR_AUTH);
    snprintf(line, sizeof line, "%s", last_line(f->audit_path));
    assert_string_equal(line_field(line, "result"), "SP_ERR_AUTH");
    assert_string_equal(line_field(line, "dek"), dek);
    assert_refused(v, "user-2", "email", blob2, 10, T0, SP_ERR_AUTH);
    assert_string_equal(line_field(last_line(f->audit_path), "dek"), "none");
    /* the profile key is per tenant */
    o.tenant = "globex";
    sp_vault *g = open_vault(&o, f->kr);
    uint8_t gb[128];
    size_t glen = seal(g, profile, "email", email, strlen(email), T0, gb, sizeof gb);
    assert_ok(sp_vault_decrypt(g, profile, "email", gb, glen, "send.email", T0, out, sizeof out, &n));
    assert_string_not_equal(line_field(last_line(f->audit_path), "profile"), who);
    sp_vault_close(g);
    /* the chain holds */
    sp_audit_report report;
    assert_ok(sp_audit_verify(f->audit_path, &report));

    /* without a log: encrypt works, decrypt is refused, nothing produced */
    o.tenant = "acme";
    o.audit = NULL;
    sp_vault *blind = open_vault(&o, f->kr);
    len2 = seal(blind, profile, "email", email, strlen(email), T0, blob2, sizeof blob2);
    memset(out, 0xaa, sizeof out);
    n = 4;
    assert_rc(sp_vault_decrypt(blind, profile, "email", blob2, len2, "send", T0, out, sizeof out, &n),
              SP_ERR_BAD_CONFIG);
    assert_int_equal(n, 0);
    sp_vault_close(blind);

    /* the line cannot be written: the decrypt fails and leaves no plaintext */
    off_t size = sp_test_file_size(f->audit_path);
    memset(out, 0xaa, sizeof out);
    n = 4;
    sp_test_fsize_guard guard;
    sp_test_fsize_limit(&guard, (rlim_t)size);
    sp_error rc = sp_vault_decrypt(v, profile, "email", blob, len, "send.email", T0, out, sizeof out, &n);
    sp_test_fsize_restore(&guard);
    if (rc == SP_OK) fail_msg("a decrypt whose audit line could not be written succeeded");
    assert_int_equal(n, 0);
    assert_true(sp_test_all_zero(out, strlen(email)));
    assert_ok(sp_audit_verify(f->audit_path, &report));
    sp_vault_close(v);
}

/* A batch of decrypts: each item's plaintext or its own failure, one audit
 * line per item written together, and nothing at all when the lines
 * cannot be written. */
static void test_decrypt_many(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    const char *values[3] = {"ada@example.org", "grace@example.org", "+14155550100"};
    const char *profiles[3] = {"p-1", "p-2", "p-2"};
    const char *fields[3] = {"email", "email", "phone"};
    uint8_t blobs[4][128], outs[4][128];
    size_t lens[4];
    for (int i = 0; i < 3; i++) lens[i] = seal(v, profiles[i], fields[i], values[i], strlen(values[i]), T0, blobs[i], 128);
    memcpy(blobs[3], blobs[0], lens[0]);
    lens[3] = lens[0];
    blobs[3][lens[3] - 1] ^= 1; /* a tampered tag */
    sp_vault_decrypt_item items[4];
    for (int i = 0; i < 4; i++) {
        memset(outs[i], 0xaa, sizeof outs[i]);
        items[i] = (sp_vault_decrypt_item){i < 3 ? profiles[i] : "p-1", i < 3 ? fields[i] : "email", blobs[i], lens[i],
                                           outs[i], sizeof outs[i], 99, SP_ERR_IO};
    }
    size_t lines = count_lines(f->audit_path);
    assert_ok(sp_vault_decrypt_many(v, items, 4, "send.email", T0));
    for (int i = 0; i < 3; i++) {
        assert_ok(items[i].rc);
        assert_int_equal(items[i].out_len, strlen(values[i]));
        assert_memory_equal(outs[i], values[i], strlen(values[i]));
    }
    assert_rc(items[3].rc, SP_ERR_AUTH);
    assert_int_equal(items[3].out_len, 0);
    assert_true(sp_test_all_zero(outs[3], strlen(values[0])));
    /* one line per item, in order, as sp_vault_decrypt writes them */
    assert_int_equal(count_lines(f->audit_path), lines + 4);
    char line[SP_AUDIT_MAX_LINE + 1];
    snprintf(line, sizeof line, "%s", last_line(f->audit_path));
    assert_string_equal(line_field(line, "event"), "vault.decrypt");
    assert_string_equal(line_field(line, "result"), "SP_ERR_AUTH");
    assert_string_equal(line_field(line, "purpose"), "send.email");
    assert_null(strstr(line, "p-1"));
    sp_audit_report report;
    assert_ok(sp_audit_verify(f->audit_path, &report));

    /* arguments: refused whole, every output zeroed */
    for (int i = 0; i < 4; i++) memset(outs[i], 0xaa, sizeof outs[i]);
    assert_rc(sp_vault_decrypt_many(v, items, 0, "send", T0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_vault_decrypt_many(v, items, SP_VAULT_MAX_BATCH + 1, "send", T0), SP_ERR_TOO_LARGE);
    assert_rc(sp_vault_decrypt_many(v, items, 3, "Send Now", T0), SP_ERR_INVALID_ARGUMENT);
    for (int i = 0; i < 3; i++) {
        assert_rc(items[i].rc, SP_ERR_INVALID_ARGUMENT);
        assert_true(sp_test_all_zero(outs[i], strlen(values[i])));
    }
    items[1].profile_id = "has space";
    assert_rc(sp_vault_decrypt_many(v, items, 3, "send", T0), SP_ERR_INVALID_ARGUMENT);
    items[1].profile_id = profiles[1];
    assert_int_equal(count_lines(f->audit_path), lines + 4);

    /* the lines cannot be written: no plaintext for anyone */
    off_t size = sp_test_file_size(f->audit_path);
    for (int i = 0; i < 3; i++) memset(outs[i], 0xaa, sizeof outs[i]);
    sp_test_fsize_guard guard;
    sp_test_fsize_limit(&guard, (rlim_t)size);
    sp_error rc = sp_vault_decrypt_many(v, items, 3, "send.email", T0);
    sp_test_fsize_restore(&guard);
    if (rc == SP_OK) fail_msg("decrypts whose audit lines could not be written succeeded");
    for (int i = 0; i < 3; i++) {
        assert_rc(items[i].rc, rc);
        assert_int_equal(items[i].out_len, 0);
        assert_true(sp_test_all_zero(outs[i], strlen(values[i])));
    }
    assert_int_equal(sp_test_file_size(f->audit_path), size);
    assert_ok(sp_vault_decrypt_many(v, items, 3, "send.email", T0));
    assert_memory_equal(outs[2], values[2], strlen(values[2]));
    assert_ok(sp_audit_verify(f->audit_path, &report));

    /* without a log: refused, nothing produced */
    o.audit = NULL;
    sp_vault *blind = open_vault(&o, f->kr);
    for (int i = 0; i < 3; i++) memset(outs[i], 0xaa, sizeof outs[i]);
    assert_rc(sp_vault_decrypt_many(blind, items, 3, "send", T0), SP_ERR_BAD_CONFIG);
    for (int i = 0; i < 3; i++) assert_true(sp_test_all_zero(outs[i], strlen(values[i])));
    sp_vault_close(blind);
    sp_vault_close(v);
}

/* ---- crypto-erase ---- */

static void test_erase_tenant(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    sp_vault *v = open_vault(&o, f->kr);
    o.tenant = "globex";
    sp_vault *other = open_vault(&o, f->kr);
    uint8_t b1[64], b2[64], g1[64], idx_before[32], idx_after[32];
    size_t l1 = seal(v, "p", "email", "a@b.co", 6, T0, b1, sizeof b1);
    size_t l2 = seal(v, "p", "phone", "+14155550100", 12, T0 + 2000, b2, sizeof b2); /* a second DEK */
    size_t gl = seal(other, "p", "email", "a@b.co", 6, T0, g1, sizeof g1);
    assert_opens_to(v, "p", "email", b1, l1, T0 + 2000, "a@b.co", 6);
    index_of(v, "email", "a@b.co", idx_before, 16);
    index_of(v, "phone", "+14155550100", idx_after, 16);
    char old_dek[37];
    blob_uuid(b2, l2, old_dek);
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, 0), 2);

    assert_ok(sp_vault_erase_tenant(v, T0 + 2001));
    /* every vault key of the tenant destroyed, the wrapped copies gone */
    const char *channels[] = {SP_VAULT_DEK_CHANNEL, "vault.index.email", "vault.index.phone", "vault.audit"};
    for (size_t i = 0; i < SP_ARRAY_LEN(channels); i++) {
        size_t all = count_versions(f->kr, "acme", channels[i], 0);
        assert_true(all >= 1);
        assert_int_equal(count_versions(f->kr, "acme", channels[i], SP_KEYRING_DESTROYED), all);
    }
    json_t *root = sp_test_load_json(f->kr_path, 0);
    json_t *keys = json_object_get(root, "keys");
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        bool acme = strcmp(json_string_value(json_object_get(k, "tenant")), "acme") == 0;
        assert_true(acme == (json_object_get(k, "wrapped") == NULL));
    }
    json_decref(root);
    assert_string_equal(line_field(last_line(f->audit_path), "event"), "vault.erase");
    assert_string_equal(line_field(last_line(f->audit_path), "keys"), "5");

    /* old blobs: dead in this vault and in a cold one */
    assert_refused(v, "p", "email", b1, l1, T0 + 2001, SP_ERR_KEY_RETIRED);
    assert_refused(v, "p", "phone", b2, l2, T0 + 2001, SP_ERR_KEY_RETIRED);
    sp_vault *cold = open_vault(&o, f->kr);
    o.tenant = "acme";
    sp_vault *cold_acme = open_vault(&o, f->kr);
    assert_refused(cold_acme, "p", "email", b1, l1, T0 + 2001, SP_ERR_KEY_RETIRED);
    /* the other tenant is untouched */
    assert_opens_to(other, "p", "email", g1, gl, T0 + 2001, "a@b.co", 6);
    assert_opens_to(cold, "p", "email", g1, gl, T0 + 2001, "a@b.co", 6);

    /* new data goes under fresh keys */
    uint8_t nb[64];
    size_t nl = seal(v, "p", "phone", "+14155550100", 12, T0 + 2002, nb, sizeof nb);
    char new_dek[37];
    blob_uuid(nb, nl, new_dek);
    assert_string_not_equal(new_dek, old_dek);
    assert_opens_to(v, "p", "phone", nb, nl, T0 + 2002, "+14155550100", 12);
    assert_opens_to(cold_acme, "p", "phone", nb, nl, T0 + 2002, "+14155550100", 12);
    index_of(v, "phone", "+14155550100", idx_before, 16);
    assert_memory_not_equal(idx_before, idx_after, 16); /* old index rows no longer match */

    /* erasing needs no KMS: over the fake backend, with it revoked */
    sp_vault *fv = open_vault(&o, f->fkr);
    uint8_t fb[64];
    size_t fl = seal(fv, "p", "email", "a@b.co", 6, T0, fb, sizeof fb);
    fake_answer(SP_ERR_KMS_ACCESS_DENIED, SP_ERR_KMS_ACCESS_DENIED);
    int asked = fake.wraps + fake.unwraps;
    assert_ok(sp_vault_erase_tenant(fv, T0 + 1));
    assert_int_equal(fake.wraps + fake.unwraps, asked);
    fake_answer(SP_OK, SP_OK);
    assert_refused(fv, "p", "email", fb, fl, T0 + 2, SP_ERR_KEY_RETIRED);
    /* that decrypt made a new audit key; erasing again takes it, and then
     * there is nothing left */
    assert_ok(sp_vault_erase_tenant(fv, T0 + 3));
    assert_string_equal(line_field(last_line(f->audit_path), "keys"), "1");
    assert_ok(sp_vault_erase_tenant(fv, T0 + 4));
    assert_string_equal(line_field(last_line(f->audit_path), "keys"), "0");
    sp_vault_close(fv);

    sp_vault_close(cold_acme);
    sp_vault_close(cold);
    sp_vault_close(other);
    sp_vault_close(v);
}

/* Other processes hold their own snapshot of the keyring. An erase reaches
 * them at their next unwrap (a miss, an expiry): within the cache TTL. */
static void test_erase_seen_by_other_processes(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    o.cache_ttl_s = 100;
    o.refresh_ahead_s = 10;
    sp_vault *v = open_vault(&o, f->kr);
    sp_keyring *kr2 = NULL, *kr3 = NULL;
    assert_ok(sp_keyring_open(f->kr_path, f->kms, &kr2));
    assert_ok(sp_keyring_open(f->kr_path, f->kms, &kr3));
    sp_vault *reader = open_vault(&o, kr2);
    sp_vault *writer = open_vault(&o, kr3);
    uint8_t b1[64], b2[64], w[64];
    size_t l1 = seal(v, "p", "email", "a@b.co", 6, T0, b1, sizeof b1);
    size_t l2 = seal(v, "p", "email", "c@d.co", 6, T0, b2, sizeof b2);
    assert_opens_to(reader, "p", "email", b1, l1, T0, "a@b.co", 6);
    (void)seal(writer, "p", "email", "e@f.co", 6, T0, w, sizeof w);
    char before[37];
    blob_uuid(w, SP_VAULT_OVERHEAD + 6, before);

    assert_ok(sp_vault_erase_tenant(v, T0 + 1));
    /* the reader's cached copy serves until it expires, as after a
     * revocation; its first unwrap after the erase is refused */
    assert_opens_to(reader, "p", "email", b1, l1, T0 + 2, "a@b.co", 6);
    assert_refused(reader, "p", "email", b1, l1, T0 + 100, SP_ERR_KEY_RETIRED);
    assert_refused(reader, "p", "email", b2, l2, T0 + 101, SP_ERR_KEY_RETIRED);
    /* a cold vault over the old snapshot: refused at once */
    sp_vault *cold = open_vault(&o, kr2);
    assert_refused(cold, "p", "email", b2, l2, T0 + 102, SP_ERR_KEY_RETIRED);
    sp_vault_close(cold);
    /* the writer's DEK expires from its cache; its snapshot still calls
     * that DEK active, the re-read keyring does not: it moves to a new DEK
     * within the same call */
    size_t wl = seal(writer, "p", "email", "g@h.co", 6, T0 + 101, w, sizeof w);
    char after[37];
    blob_uuid(w, wl, after);
    assert_string_not_equal(after, before);
    assert_opens_to(v, "p", "email", w, wl, T0 + 102, "g@h.co", 6);
    assert_int_equal(count_versions(f->kr, "acme", SP_VAULT_DEK_CHANNEL, SP_KEYRING_ACTIVE), 1);
    sp_vault_close(writer);
    sp_vault_close(reader);
    sp_vault_close(v);
    sp_keyring_close(kr3);
    sp_keyring_close(kr2);
}

static void test_keyring_erase_channel(void **state) {
    fixture *f = *state;
    char v1[37], v2[37], v3[37], other[37];
    assert_ok(sp_keyring_rotate(f->kr, "acme", "vault.dek", T0, v1));
    assert_ok(sp_keyring_rotate(f->kr, "acme", "vault.dek", T0 + 1, v2));
    assert_ok(sp_keyring_rotate(f->kr, "acme", "vault.dek", T0 + 2, v3));
    assert_ok(sp_keyring_retire(f->kr, "acme", "vault.dek", v1, T0 + 3));
    assert_ok(sp_keyring_rotate(f->kr, "acme", "sms", T0, other));
    size_t erased = 99;
    assert_rc(sp_keyring_erase_channel(NULL, "acme", "vault.dek", T0, &erased), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_erase_channel(f->kr, "acme", "vault.dek", 0, &erased), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_erase_channel(f->kr, "ac me", "vault.dek", T0, &erased), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_erase_channel(f->kr, "acme", NULL, T0, &erased), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(erased, 99);

    assert_ok(sp_keyring_erase_channel(f->kr, "acme", "vault.dek", T0 + 10, &erased));
    assert_int_equal(erased, 3);
    /* every stage stamped; earlier stamps kept */
    sp_keyring_entry e;
    assert_ok(sp_keyring_find(f->kr, "acme", "vault.dek", v1, &e));
    assert_int_equal(e.state, SP_KEYRING_DESTROYED);
    assert_int_equal(e.deactivated, T0 + 1);
    assert_int_equal(e.retired, T0 + 3);
    assert_int_equal(e.destroyed, T0 + 10);
    assert_string_equal(e.master_key, "");
    assert_ok(sp_keyring_find(f->kr, "acme", "vault.dek", v3, &e));
    assert_int_equal(e.state, SP_KEYRING_DESTROYED);
    assert_int_equal(e.deactivated, T0 + 10);
    assert_int_equal(e.retired, T0 + 10);
    assert_int_equal(e.destroyed, T0 + 10);
    sp_key *k = NULL;
    assert_rc(sp_keyring_unwrap(f->kr, "acme", "vault.dek", v3, &k), SP_ERR_KEY_RETIRED);
    assert_null(k);
    /* the other channel is as it was */
    assert_ok(sp_keyring_find(f->kr, "acme", "sms", other, &e));
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);
    /* written to the file */
    sp_keyring *again = NULL;
    assert_ok(sp_keyring_open(f->kr_path, f->kms, &again));
    assert_int_equal(count_versions(again, "acme", "vault.dek", SP_KEYRING_DESTROYED), 3);
    sp_keyring_close(again);
    /* once more: nothing to do; unknown channels too */
    assert_ok(sp_keyring_erase_channel(f->kr, "acme", "vault.dek", T0 + 11, &erased));
    assert_int_equal(erased, 0);
    assert_ok(sp_keyring_erase_channel(f->kr, "nobody", "vault.dek", T0 + 11, NULL));
    /* the channel starts a new series on the next rotation */
    char fresh[37];
    bool rotated = false;
    assert_ok(sp_keyring_rotate_if_older(f->kr, "acme", "vault.dek", T0 + 12, 1000, fresh, &rotated));
    assert_true(rotated);
    assert_ok(sp_keyring_find(f->kr, "acme", "vault.dek", fresh, &e));
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);
    /* a keyring opened for listing only cannot erase */
    sp_keyring *ro = NULL;
    assert_ok(sp_keyring_open(f->kr_path, NULL, &ro));
    assert_rc(sp_keyring_erase_channel(ro, "acme", "vault.dek", T0 + 13, &erased), SP_ERR_BAD_CONFIG);
    sp_keyring_close(ro);
}

static void test_keyring_rotate_with_key(void **state) {
    fixture *f = *state;
    size_t keys_before = secure_used();
    char v1[37], v2[37];
    sp_key *k1 = NULL, *k2 = NULL, *back = NULL;
    assert_ok(sp_keyring_rotate_with_key(f->kr, "acme", "vault.dek", T0, v1, &k1));
    assert_ok(sp_keyring_rotate_with_key(f->kr, "acme", "vault.dek", T0 + 5, v2, &k2));
    assert_string_not_equal(v1, v2);
    sp_keyring_entry e;
    assert_ok(sp_keyring_find(f->kr, "acme", "vault.dek", v1, &e));
    assert_int_equal(e.state, SP_KEYRING_DECRYPT_ONLY);
    assert_int_equal(e.deactivated, T0 + 5);
    assert_ok(sp_keyring_find(f->kr, "acme", "vault.dek", v2, &e));
    assert_int_equal(e.state, SP_KEYRING_ACTIVE);
    assert_int_equal(e.created, T0 + 5);
    assert_string_equal(e.master_key, sp_kms_key_id(f->kms));
    /* the key handed back is the one stored */
    assert_ok(sp_keyring_unwrap(f->kr, "acme", "vault.dek", v2, &back));
    sp_test_assert_same_key(k2, back);
    sp_key_free(back);
    sp_key_free(k1);
    sp_key_free(k2);
    /* a KMS that cannot wrap: nothing stored, nothing handed back */
    sp_key *none = NULL;
    char v3[37];
    size_t count = sp_keyring_count(f->fkr);
    fake_answer(SP_ERR_KMS_UNAVAILABLE, SP_OK);
    assert_rc(sp_keyring_rotate_with_key(f->fkr, "acme", "vault.dek", T0, v3, &none), SP_ERR_KMS_UNAVAILABLE);
    fake_answer(SP_OK, SP_OK);
    assert_null(none);
    assert_int_equal(sp_keyring_count(f->fkr), count);
    assert_rc(sp_keyring_rotate_with_key(f->kr, "acme", "vault.dek", T0, v3, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_rotate_with_key(f->kr, "acme", "vault.dek", 0, v3, &none), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_keyring_rotate_with_key(f->kr, "acme", "", T0, v3, &none), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(secure_used(), keys_before);
}

/* ---- allocations ---- */

static void test_no_allocation_warm(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    uint64_t setup = sp_test_alloc_count();
    sp_vault *v = open_vault(&o, f->kr);
    assert_true(sp_test_alloc_count() > setup); /* the counter sees this code's allocations */
    uint8_t value[64], blob[64 + SP_VAULT_OVERHEAD], out[64];
    memset(value, 'v', sizeof value);
    size_t len = 0, n = 0;
    /* warm-up: the DEK, the audit key, OpenSSL's lazy per-thread state */
    for (int i = 0; i < 3; i++) {
        len = seal(v, "profile-1", "email", value, sizeof value, T0, blob, sizeof blob);
        assert_ok(sp_vault_decrypt(v, "profile-1", "email", blob, len, "send", T0, out, sizeof out, &n));
    }
    uint64_t before = sp_test_alloc_count();
    for (int i = 0; i < 2000; i++) {
        /* a clock that moves (sweeps run) and lengths that vary */
        size_t vl = (size_t)(i % 65);
        len = seal(v, "profile-1", "email", value, vl, T0 + i / 100, blob, sizeof blob);
        if (sp_vault_decrypt_unaudited(v, "profile-1", 9, "email", 5, blob, len, T0 + i / 100, out, sizeof out, &n,
                                       NULL) != SP_OK ||
            n != vl)
            fail_msg("round %d failed", i);
    }
    uint64_t used = sp_test_alloc_count() - before;
    if (used != 0) fail_msg("%llu allocations in 2000 warm encrypt+decrypt pairs", (unsigned long long)used);

    /* the audited decrypt adds no allocation of its own beyond its audit line */
    sp_audit_field fields[] = {{"tenant", "acme"}, {"dek", "00000000-0000-4000-8000-000000000000"},
                               {"field", "email"}, {"purpose", "send"},
                               {"profile", "0123456789abcdef0123456789abcdef"}, {"result", "SP_OK"}};
    before = sp_test_alloc_count();
    assert_ok(sp_audit_record(f->audit, "vault.decrypt", fields, SP_ARRAY_LEN(fields)));
    uint64_t line_cost = sp_test_alloc_count() - before;
    before = sp_test_alloc_count();
    assert_ok(sp_vault_decrypt(v, "profile-1", "email", blob, len, "send", T0 + 20, out, sizeof out, &n));
    assert_true(sp_test_alloc_count() - before <= line_cost);
    sp_vault_close(v);
}

/* Open, encrypt, decrypt and index with the n-th allocation failing, for
 * every n until a run needs fewer: each step succeeds with the right answer
 * or fails cleanly; nothing leaks (LSan; secure-heap bytes for keys). */
static void test_allocation_failures(void **state) {
    fixture *f = *state;
    sp_vault_options o = base_options(f, "acme");
    size_t keys_before = secure_used();
    const char *value = "dave@example.com";
    bool finished = false;
    for (uint64_t nth = 1; nth < 5000 && !finished; nth++) {
        /* a fresh keyring each round, so every round walks the same path:
         * rotation, unwrap, index and audit keys made */
        (void)unlink(f->kr_path);
        sp_keyring *kr = NULL;
        assert_ok(sp_keyring_open(f->kr_path, f->kms, &kr));
        sp_test_fault fault = sp_test_fault_arm(nth);
        sp_vault *v = NULL;
        uint8_t blob[128], out[128], idx[32];
        size_t len = 0, n = 0;
        sp_error rc = sp_vault_open(&o, kr, &v);
        if (rc == SP_OK) rc = sp_vault_encrypt(v, "p1", "email", (const uint8_t *)value, 16, T0, blob, sizeof blob, &len);
        if (rc == SP_OK) rc = sp_vault_decrypt(v, "p1", "email", blob, len, "send", T0, out, sizeof out, &n);
        if (rc == SP_OK) {
            assert_int_equal(n, 16);
            assert_memory_equal(out, value, 16);
            rc = sp_vault_index(v, "email", (const uint8_t *)value, 16, idx, sizeof idx, &n);
        }
        finished = !sp_test_fault_disarm(fault);
        /* A failure may also be absorbed: the keyring answers a lookup the
         * slow way when it has no memory for its index. Success is then
         * fine, since the round trip above was checked byte for byte. */
        if (finished) {
            assert_ok(rc);
        } else if (rc != SP_OK && rc != SP_ERR_NO_MEMORY && rc != SP_ERR_CRYPTO_BACKEND && rc != SP_ERR_IO) {
            fail_msg("allocation %llu failing gave %s", (unsigned long long)nth, sp_error_name(rc));
        }
        /* whatever failed, the vault still works once memory is back */
        if (v != NULL) {
            assert_ok(sp_vault_encrypt(v, "p1", "email", (const uint8_t *)value, 16, T0, blob, sizeof blob, &len));
            assert_ok(sp_vault_decrypt(v, "p1", "email", blob, len, "send", T0, out, sizeof out, &n));
            assert_memory_equal(out, value, 16);
        }
        sp_vault_close(v);
        sp_keyring_close(kr);
        assert_int_equal(secure_used(), keys_before);
    }
    assert_true(finished);
    sp_audit_report report;
    assert_ok(sp_audit_verify(f->audit_path, &report));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_email),
        cmocka_unit_test(test_normalize_phone),
        cmocka_unit_test(test_normalize_text_and_limits),
        cmocka_unit_test_setup_teardown(test_open_options, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_argument_checks, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_sizes, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_utf8, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_aad_binding, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tamper_every_bit_and_truncation, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_dek_rollover, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cache_ttl_and_use_limit, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_ahead, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_revocation_crypto_shredding, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_revocation_stops_indexing, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_outage_symmetric, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_asymmetric_offline_ingestion, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rotation_by_another_process, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cache_eviction, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_blind_index, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_audit_line, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_decrypt_many, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_erase_tenant, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_erase_seen_by_other_processes, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_erase_channel, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_keyring_rotate_with_key, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_no_allocation_warm, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
