/*
 * The KMS layer (include/sealpost/kms.h, src/kms/): what every backend
 * shares, and the local backend that `make run` uses.
 *
 * A master key guards every provider key, so the tests hold this layer to
 * what BYOK depends on:
 *  - the configuration string is refused whole when anything in it is off
 *    (an unknown option may be a typo for a security setting);
 *  - a wrapped-key blob is all-or-nothing: every truncation, every changed
 *    byte, every trailing byte is SP_ERR_AUTH, never a key;
 *  - the local master-key file is private, made once even by two processes
 *    starting together, and keeps opening the blobs it made;
 *  - the dispatcher retries only "unavailable", backs off boundedly, and its
 *    circuit breaker fails fast without touching the KMS while open, then
 *    lets exactly one probe through. A scripted fake backend (through the
 *    sp_kms_open_backend test hook) makes those counts exact;
 *  - every call is audited, no line carries key bytes, and when the line
 *    cannot be written the unwrapped key is not handed out (fail closed);
 *  - every allocation failure is a clean error that leaks nothing (ASan's
 *    leak checker, and the secure-heap byte count for keys, which LSan
 *    cannot see).
 *
 * Every test that touches files works in its own mkdtemp directory and
 * removes it afterwards.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "sp_test_util.h"
#include "sp_fake_kms.h"

#include "kms/sp_kms.h"

/* ---- scratch directory ---- */

typedef struct {
    char dir[256];
    char master[300]; /* dir/master.key */
    char config[400]; /* "local:path=<master>;create=1" */
} scratch;

static int scratch_setup(void **state) {
    scratch *s = SP_TEST_FIXTURE_NEW(scratch, dir, "sp-kms");
    if (s == NULL) return -1;
    snprintf(s->master, sizeof s->master, "%s/master.key", s->dir);
    snprintf(s->config, sizeof s->config, "local:path=%s;create=1", s->master);
    *state = s;
    return 0;
}

static int scratch_teardown(void **state) {
    scratch *s = *state;
    return sp_test_fixture_free(s, s->dir);
}

/* Keys live in OpenSSL's secure heap, which LSan does not scan: a leaked
 * sp_key shows up only as bytes still in use there. */
static size_t secure_used(void) { return CRYPTO_secure_used(); }

static void export_key(const sp_key *k, uint8_t out[SP_KEY_BYTES]) { assert_ok(sp_key_export(k, out)); }

/* ---- configuration parser ---- */

static void test_config_valid(void **state) {
    (void)state;
    sp_kms_config cfg;
    assert_ok(sp_kms_config_parse("local:path=/var/sealpost/master.key;retries=2", &cfg));
    assert_string_equal(cfg.backend, "local");
    assert_int_equal(cfg.count, 2);
    assert_string_equal(sp_kms_config_get(&cfg, "path"), "/var/sealpost/master.key");
    assert_string_equal(sp_kms_config_get(&cfg, "retries"), "2");
    assert_null(sp_kms_config_get(&cfg, "create"));
    sp_kms_config_clear(&cfg);
    assert_int_equal(cfg.count, 0);

    /* no options at all */
    assert_ok(sp_kms_config_parse("kmip:", &cfg));
    assert_string_equal(cfg.backend, "kmip");
    assert_int_equal(cfg.count, 0);
    sp_kms_config_clear(&cfg);

    /* an empty value is a value (the backend decides whether it is enough) */
    assert_ok(sp_kms_config_parse("pkcs11:pin-file=", &cfg));
    assert_int_equal(cfg.count, 1);
    assert_string_equal(sp_kms_config_get(&cfg, "pin-file"), "");
    sp_kms_config_clear(&cfg);

    /* only the first '=' separates; empty items are skipped */
    assert_ok(sp_kms_config_parse("kmip:key-id=a=b==;;host=h;", &cfg));
    assert_int_equal(cfg.count, 2);
    assert_string_equal(sp_kms_config_get(&cfg, "key-id"), "a=b==");
    assert_string_equal(sp_kms_config_get(&cfg, "host"), "h");
    sp_kms_config_clear(&cfg);

    /* values keep spaces and other punctuation as they are */
    assert_ok(sp_kms_config_parse("pkcs11:token=My Token:1,x", &cfg));
    assert_string_equal(sp_kms_config_get(&cfg, "token"), "My Token:1,x");
    sp_kms_config_clear(&cfg);

    /* the longest name (31) and backend name (15) */
    assert_ok(sp_kms_config_parse("abcdefghijklmno:abcdefghijklmnopqrstuvwxyz01234=1", &cfg));
    assert_string_equal(cfg.backend, "abcdefghijklmno");
    assert_string_equal(sp_kms_config_get(&cfg, "abcdefghijklmnopqrstuvwxyz01234"), "1");
    sp_kms_config_clear(&cfg);

    /* clearing twice, and clearing NULL, are harmless */
    sp_kms_config_clear(&cfg);
    sp_kms_config_clear(NULL);
}

static void test_config_malformed(void **state) {
    (void)state;
    static const char *const bad[] = {
        "",                                         /* nothing */
        "local",                                    /* no ':' */
        "path=/x",                                  /* no backend */
        ":path=/x",                                 /* empty backend */
        "Local:path=/x",                            /* backend not [a-z0-9-] */
        "lo cal:path=/x",                           /* a space is no name character */
        "abcdefghijklmnop:a=1",                     /* backend of 16 */
        "local:path",                               /* item without '=' */
        "local:=x",                                 /* empty name */
        "local:Path=/x",                            /* uppercase name */
        "local:pa_th=/x",                           /* '_' in a name */
        "local:pa th=/x",                           /* a space in a name */
        "local: path=/x",                           /* leading space: no trimming */
        "local:abcdefghijklmnopqrstuvwxyz012345=1", /* name of 32 */
        "local:path=/x;path=/y",                    /* duplicate */
        "local:path=/x;retries=1;path=/x",          /* duplicate with the same value */
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        sp_kms_config cfg;
        sp_error rc = sp_kms_config_parse(bad[i], &cfg);
        if (rc != SP_ERR_BAD_CONFIG) fail_msg("\"%s\" gave %s", bad[i], sp_error_name(rc));
        /* a refused string leaves nothing behind to free or to read */
        assert_int_equal(cfg.count, 0);
    }
    sp_kms_config cfg;
    assert_rc(sp_kms_config_parse(NULL, &cfg), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_config_parse("local:path=x", NULL), SP_ERR_INVALID_ARGUMENT);
}

static void test_config_limits(void **state) {
    (void)state;
    sp_kms_config cfg;
    char text[SP_KMS_MAX_CONFIG + 64];
    /* exactly SP_KMS_CONFIG_MAX_ITEMS items fit, one more does not */
    size_t len = (size_t)snprintf(text, sizeof text, "x:");
    for (int i = 0; i < SP_KMS_CONFIG_MAX_ITEMS; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "o%d=%d;", i, i);
    assert_ok(sp_kms_config_parse(text, &cfg));
    assert_int_equal(cfg.count, SP_KMS_CONFIG_MAX_ITEMS);
    assert_string_equal(sp_kms_config_get(&cfg, "o31"), "31");
    sp_kms_config_clear(&cfg);
    snprintf(text + len, sizeof text - len, "extra=1");
    assert_rc(sp_kms_config_parse(text, &cfg), SP_ERR_BAD_CONFIG);

    /* SP_KMS_MAX_CONFIG bytes are accepted, one more is refused */
    memset(text, 0, sizeof text);
    memcpy(text, "x:v=", 4);
    memset(text + 4, 'a', SP_KMS_MAX_CONFIG - 4);
    assert_ok(sp_kms_config_parse(text, &cfg));
    assert_int_equal(strlen(sp_kms_config_get(&cfg, "v")), SP_KMS_MAX_CONFIG - 4);
    sp_kms_config_clear(&cfg);
    text[SP_KMS_MAX_CONFIG] = 'a';
    assert_rc(sp_kms_config_parse(text, &cfg), SP_ERR_BAD_CONFIG);
}

static void test_config_int(void **state) {
    (void)state;
    sp_kms_config cfg;
    assert_ok(sp_kms_config_parse("x:a=10;b=11;c=0;d=-1;e=;f=1x;g=007;h= 5;i=99999999999999999999999", &cfg));
    int64_t v = -7;
    assert_ok(sp_kms_config_int(&cfg, "absent", 0, 10, 3, &v));
    assert_int_equal(v, 3);
    assert_ok(sp_kms_config_int(&cfg, "a", 0, 10, 3, &v));
    assert_int_equal(v, 10);
    assert_rc(sp_kms_config_int(&cfg, "b", 0, 10, 3, &v), SP_ERR_BAD_CONFIG);
    assert_ok(sp_kms_config_int(&cfg, "c", 0, 10, 3, &v));
    assert_int_equal(v, 0);
    assert_rc(sp_kms_config_int(&cfg, "c", 1, 10, 3, &v), SP_ERR_BAD_CONFIG);
    static const char *const junk[] = {"d", "e", "f", "g", "h", "i"};
    for (size_t i = 0; i < SP_ARRAY_LEN(junk); i++) {
        if (sp_kms_config_int(&cfg, junk[i], 0, 1000000, 3, &v) != SP_ERR_BAD_CONFIG)
            fail_msg("option %s=%s accepted", junk[i], sp_kms_config_get(&cfg, junk[i]));
    }
    sp_kms_config_clear(&cfg);
}

static void test_config_only(void **state) {
    (void)state;
    static const char *const known[] = {"path", NULL};
    sp_kms_config cfg;
    assert_ok(sp_kms_config_parse("x:path=p;retries=1;backoff-ms=2;breaker-failures=3;breaker-cooldown-ms=4;create=1",
                                  &cfg));
    assert_ok(sp_kms_config_only(&cfg, known));
    /* the common options need no listing */
    assert_rc(sp_kms_config_only(&cfg, NULL), SP_ERR_BAD_CONFIG); /* path is not common */
    sp_kms_config_clear(&cfg);
    assert_ok(sp_kms_config_parse("x:retries=1", &cfg));
    assert_ok(sp_kms_config_only(&cfg, NULL));
    sp_kms_config_clear(&cfg);
    assert_ok(sp_kms_config_parse("x:path=p;paths=q", &cfg));
    assert_rc(sp_kms_config_only(&cfg, known), SP_ERR_BAD_CONFIG);
    sp_kms_config_clear(&cfg);
}

/* sp_kms_open refuses a bad string before it touches anything: the local
 * paths below would be created by create=1 if it got that far. */
static void test_open_refuses_bad_config(void **state) {
    scratch *s = *state;
    static const char *const options[] = {
        "bogus=1",
        "retries=11",
        "retries=-1",
        "retries=",
        "backoff-ms=0",
        "backoff-ms=60001",
        "breaker-failures=0",
        "breaker-failures=1001",
        "breaker-cooldown-ms=0",
        "breaker-cooldown-ms=3600001",
        "create=2",
        "create=yes",
        "module=/x.so", /* a pkcs11 option is unknown to local */
    };
    char config[600];
    for (size_t i = 0; i < SP_ARRAY_LEN(options); i++) {
        /* create=1 beside every option but a create= of its own */
        bool own_create = strncmp(options[i], "create=", 7) == 0;
        snprintf(config, sizeof config, "local:path=%s;%s%s", s->master, own_create ? "" : "create=1;", options[i]);
        sp_kms *kms = NULL;
        sp_error rc = sp_kms_open(config, &kms);
        if (rc != SP_ERR_BAD_CONFIG) fail_msg("\"%s\" gave %s", config, sp_error_name(rc));
        assert_null(kms);
        assert_int_equal(access(s->master, F_OK), -1);
    }
    sp_kms *kms = NULL;
    assert_rc(sp_kms_open("local:path=x;bogus=1", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open("nosuch:path=x", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open("path=x", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open("local:", &kms), SP_ERR_BAD_CONFIG);      /* no path */
    assert_rc(sp_kms_open("local:path=", &kms), SP_ERR_BAD_CONFIG); /* empty path */
    assert_rc(sp_kms_open("local:path=x;path=y", &kms), SP_ERR_BAD_CONFIG);
    assert_null(kms);
    assert_rc(sp_kms_open(NULL, &kms), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_open(s->config, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_int_equal(access(s->master, F_OK), -1);

    /* the edges of every range are accepted */
    char ok[700];
    snprintf(ok, sizeof ok,
             "local:path=%s;create=1;retries=10;backoff-ms=60000;breaker-failures=1000;breaker-cooldown-ms=3600000",
             s->master);
    assert_ok(sp_kms_open(ok, &kms));
    sp_kms_close(kms);
    snprintf(ok, sizeof ok, "local:path=%s;create=0;retries=0;backoff-ms=1;breaker-failures=1;breaker-cooldown-ms=1",
             s->master);
    assert_ok(sp_kms_open(ok, &kms));
    sp_kms_close(kms);
    sp_kms_close(NULL);
}

/* ---- blob codec ---- */

static const char sample_id[] = "local:0123456789abcdef";

static size_t sample_blob(uint8_t *out, size_t cap, const uint8_t *payload, size_t payload_len) {
    sp_kms_blob blob = {.backend = SP_KMS_BACKEND_LOCAL, .mechanism = SP_KMS_MECH_AES_KWP, .payload = payload,
                        .payload_len = payload_len};
    memcpy(blob.key_id, sample_id, sizeof sample_id);
    size_t n = 0;
    assert_ok(sp_kms_blob_encode(&blob, out, cap, &n));
    return n;
}

static void test_blob_round_trip(void **state) {
    (void)state;
    uint8_t payload[SP_KMS_MAX_PAYLOAD];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7 + 1);
    static const size_t lens[] = {1, 40, 255, 256, 257, SP_KMS_MAX_PAYLOAD};
    for (size_t k = 0; k < SP_ARRAY_LEN(lens); k++) {
        uint8_t out[SP_KMS_MAX_WRAPPED];
        size_t n = sample_blob(out, sizeof out, payload, lens[k]);
        size_t id_len = strlen(sample_id);
        assert_int_equal(n, 4 + id_len + 2 + lens[k]);
        /* the documented layout (docs/KMS.md) */
        assert_int_equal(out[0], SP_KMS_BLOB_VERSION);
        assert_int_equal(out[1], SP_KMS_BACKEND_LOCAL);
        assert_int_equal(out[2], SP_KMS_MECH_AES_KWP);
        assert_int_equal(out[3], id_len);
        assert_memory_equal(out + 4, sample_id, id_len);
        assert_int_equal(out[4 + id_len], lens[k] >> 8);
        assert_int_equal(out[5 + id_len], lens[k] & 0xff);

        sp_kms_blob back;
        memset(&back, 0xee, sizeof back);
        assert_ok(sp_kms_blob_decode(out, n, &back));
        assert_int_equal(back.backend, SP_KMS_BACKEND_LOCAL);
        assert_int_equal(back.mechanism, SP_KMS_MECH_AES_KWP);
        assert_string_equal(back.key_id, sample_id);
        assert_int_equal(back.payload_len, lens[k]);
        assert_ptr_equal(back.payload, out + 6 + id_len);
        assert_memory_equal(back.payload, payload, lens[k]);

        uint8_t again[SP_KMS_MAX_WRAPPED];
        size_t m = 0;
        assert_ok(sp_kms_blob_encode(&back, again, sizeof again, &m));
        assert_int_equal(m, n);
        assert_memory_equal(again, out, n);
        /* one byte short of room */
        assert_rc(sp_kms_blob_encode(&back, again, n - 1, &m), SP_ERR_BUFFER_TOO_SMALL);
    }

    /* the longest key id */
    sp_kms_blob blob = {.backend = 3, .mechanism = 2, .payload = payload, .payload_len = 28};
    memset(blob.key_id, 'k', SP_KMS_MAX_KEY_ID);
    blob.key_id[SP_KMS_MAX_KEY_ID] = 0;
    uint8_t out[SP_KMS_MAX_WRAPPED];
    size_t n = 0;
    assert_ok(sp_kms_blob_encode(&blob, out, sizeof out, &n));
    sp_kms_blob back;
    assert_ok(sp_kms_blob_decode(out, n, &back));
    assert_int_equal(strlen(back.key_id), SP_KMS_MAX_KEY_ID);
    /* every backend's largest blob fits the public bound */
    assert_true(4 + SP_KMS_MAX_KEY_ID + 2 + SP_KMS_MAX_PAYLOAD <= SP_KMS_MAX_WRAPPED);
}

static void test_blob_encode_refuses(void **state) {
    (void)state;
    uint8_t payload[SP_KMS_MAX_PAYLOAD + 1] = {0};
    uint8_t out[SP_KMS_MAX_WRAPPED + 8];
    size_t n = 0;
    sp_kms_blob blob = {.backend = 1, .mechanism = 1, .payload = payload, .payload_len = 40};
    static const char *const ids[] = {"", "has space", "tab\there", "del\x7f", "high\xc3\xa9", "nl\n"};
    for (size_t i = 0; i < SP_ARRAY_LEN(ids); i++) {
        memset(blob.key_id, 0, sizeof blob.key_id);
        memcpy(blob.key_id, ids[i], strlen(ids[i]));
        if (sp_kms_blob_encode(&blob, out, sizeof out, &n) != SP_ERR_INVALID_ARGUMENT)
            fail_msg("key id #%zu accepted", i);
    }
    memcpy(blob.key_id, "ok", 3);
    blob.payload_len = 0;
    assert_rc(sp_kms_blob_encode(&blob, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
    blob.payload_len = SP_KMS_MAX_PAYLOAD + 1;
    assert_rc(sp_kms_blob_encode(&blob, out, sizeof out, &n), SP_ERR_INVALID_ARGUMENT);
}

static void test_blob_decode_refuses(void **state) {
    (void)state;
    uint8_t payload[64];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)i;
    uint8_t good[SP_KMS_MAX_WRAPPED];
    size_t n = sample_blob(good, sizeof good, payload, 40);
    size_t id_len = strlen(sample_id);
    sp_kms_blob out;

    /* every truncation, each in an exactly-sized copy so ASan sees overreads */
    for (size_t len = 0; len < n; len++) {
        uint8_t *cut = malloc(len ? len : 1);
        assert_non_null(cut);
        memcpy(cut, good, len);
        if (sp_kms_blob_decode(cut, len, &out) != SP_ERR_AUTH) fail_msg("truncation to %zu accepted", len);
        free(cut);
    }
    /* a trailing byte, and more */
    uint8_t longer[SP_KMS_MAX_WRAPPED + 2];
    memcpy(longer, good, n);
    longer[n] = 0;
    longer[n + 1] = 0;
    assert_rc(sp_kms_blob_decode(longer, n + 1, &out), SP_ERR_AUTH);
    assert_rc(sp_kms_blob_decode(longer, n + 2, &out), SP_ERR_AUTH);

    uint8_t b[SP_KMS_MAX_WRAPPED];
    /* another format version */
    for (int v = 0; v < 256; v++) {
        if (v == SP_KMS_BLOB_VERSION) continue;
        memcpy(b, good, n);
        b[0] = (uint8_t)v;
        assert_rc(sp_kms_blob_decode(b, n, &out), SP_ERR_AUTH);
    }
    /* a key id byte that is not printable ASCII */
    static const uint8_t unprintable[] = {0x00, 0x09, 0x0a, 0x1f, 0x20, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < sizeof unprintable; i++) {
        memcpy(b, good, n);
        b[4 + 3] = unprintable[i];
        assert_rc(sp_kms_blob_decode(b, n, &out), SP_ERR_AUTH);
    }
    /* payload length: zero, one off either way */
    memcpy(b, good, n);
    b[4 + id_len] = 0;
    b[5 + id_len] = 0;
    assert_rc(sp_kms_blob_decode(b, 6 + id_len, &out), SP_ERR_AUTH);
    memcpy(b, good, n);
    b[5 + id_len] = 41;
    assert_rc(sp_kms_blob_decode(b, n, &out), SP_ERR_AUTH);
    b[5 + id_len] = 39;
    assert_rc(sp_kms_blob_decode(b, n, &out), SP_ERR_AUTH);

    /* an empty key id */
    uint8_t empty_id[] = {1, 1, 1, 0, 0, 1, 0xaa};
    assert_rc(sp_kms_blob_decode(empty_id, sizeof empty_id, &out), SP_ERR_AUTH);

    /* key id longer than SP_KMS_MAX_KEY_ID although every byte is there and
     * printable: the decoder's key_id buffer holds 128 */
    for (int id = SP_KMS_MAX_KEY_ID + 1; id < 256; id += 31) {
        size_t len = 4 + (size_t)id + 2 + 1;
        uint8_t *big = malloc(len);
        assert_non_null(big);
        big[0] = 1;
        big[1] = 1;
        big[2] = 1;
        big[3] = (uint8_t)id;
        memset(big + 4, 'k', (size_t)id);
        big[4 + id] = 0;
        big[5 + id] = 1;
        big[6 + id] = 0x55;
        assert_rc(sp_kms_blob_decode(big, len, &out), SP_ERR_AUTH);
        free(big);
    }
    /* a payload longer than any backend makes */
    {
        size_t plen = SP_KMS_MAX_PAYLOAD + 1, len = 4 + 1 + 2 + plen;
        uint8_t *big = calloc(1, len);
        assert_non_null(big);
        big[0] = 1;
        big[1] = 1;
        big[2] = 1;
        big[3] = 1;
        big[4] = 'k';
        big[5] = (uint8_t)(plen >> 8);
        big[6] = (uint8_t)plen;
        assert_rc(sp_kms_blob_decode(big, len, &out), SP_ERR_AUTH);
        free(big);
    }
    assert_rc(sp_kms_blob_decode(NULL, 10, &out), SP_ERR_AUTH);
    assert_rc(sp_kms_blob_decode(good, n, NULL), SP_ERR_AUTH);
}

/* ---- local backend ---- */

static sp_kms *open_local(const char *config) {
    sp_kms *kms = NULL;
    assert_ok(sp_kms_open(config, &kms));
    assert_non_null(kms);
    return kms;
}

static void test_local_create_and_reopen(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config);
    assert_string_equal(sp_kms_backend_name(kms), "local");
    const char *id = sp_kms_key_id(kms);
    /* local:<16 hex> */
    assert_int_equal(strlen(id), 6 + 16);
    assert_memory_equal(id, "local:", 6);
    for (size_t i = 6; i < 22; i++) assert_non_null(strchr("0123456789abcdef", id[i]));
    assert_int_equal(sp_test_file_mode(s->master), 0600);
    char *text = sp_test_read_file(s->master, NULL);
    assert_memory_equal(text, "sealpost-local-master-key v1\n", 29);
    /* the key id is a keyed hash, not a piece of the key it names */
    uint8_t master[SP_KEY_BYTES + 3];
    size_t master_len = 0;
    assert_ok(sp_b64_decode(text + 29, strcspn(text + 29, "\n"), master, sizeof master, &master_len, false));
    assert_int_equal(master_len, SP_KEY_BYTES);
    char master_hex[2 * SP_KEY_BYTES + 1];
    sp_hex_encode(master, SP_KEY_BYTES, master_hex);
    for (size_t at = 0; at + 16 <= 2 * SP_KEY_BYTES; at += 2) assert_memory_not_equal(master_hex + at, id + 6, 16);
    sp_wipe(master, sizeof master);
    sp_wipe(master_hex, sizeof master_hex);
    free(text);

    char saved_id[SP_KMS_MAX_KEY_ID + 1];
    snprintf(saved_id, sizeof saved_id, "%s", id);
    sp_key *dek = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len = 0;
    assert_ok(sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &wrapped_len));
    sp_kms_close(kms);

    /* reopened, with create=1 again and with create=0: the same key */
    const char *configs[2];
    char plain[400];
    snprintf(plain, sizeof plain, "local:path=%s", s->master);
    configs[0] = s->config;
    configs[1] = plain;
    for (size_t i = 0; i < 2; i++) {
        kms = open_local(configs[i]);
        assert_string_equal(sp_kms_key_id(kms), saved_id);
        assert_true(sp_kms_owns(kms, wrapped, wrapped_len));
        sp_test_assert_unwraps_to(kms, wrapped, wrapped_len, dek);
        sp_kms_close(kms);
    }
    sp_key_free(dek);
    assert_int_equal(sp_test_file_mode(s->master), 0600);
}

static void test_local_missing_file(void **state) {
    scratch *s = *state;
    char config[600];
    sp_kms *kms = NULL;
    snprintf(config, sizeof config, "local:path=%s;create=0", s->master);
    assert_rc(sp_kms_open(config, &kms), SP_ERR_NOT_FOUND);
    snprintf(config, sizeof config, "local:path=%s", s->master); /* create defaults to 0 */
    assert_rc(sp_kms_open(config, &kms), SP_ERR_NOT_FOUND);
    assert_null(kms);
    assert_int_equal(access(s->master, F_OK), -1);
    /* a directory that does not exist: nothing can be made there */
    snprintf(config, sizeof config, "local:path=%s/no/such/dir/master.key;create=1", s->dir);
    assert_true(sp_kms_open(config, &kms) != SP_OK);
    assert_null(kms);
}

static void test_local_insecure_permissions(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config);
    sp_kms_close(kms);
    kms = NULL;
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0606, 0666};
    for (size_t i = 0; i < SP_ARRAY_LEN(modes); i++) {
        assert_int_equal(chmod(s->master, modes[i]), 0);
        assert_rc(sp_kms_open(s->config, &kms), SP_ERR_INSECURE_PERMISSIONS);
        assert_null(kms);
    }
    /* owner-only modes are fine, read-only included */
    assert_int_equal(chmod(s->master, 0400), 0);
    kms = open_local(s->config);
    sp_kms_close(kms);
    kms = NULL;
    assert_int_equal(chmod(s->master, 0600), 0);

    /* a symlink in the key's place is refused (someone else's file) */
    char link_path[400];
    snprintf(link_path, sizeof link_path, "%s/link.key", s->dir);
    assert_int_equal(symlink(s->master, link_path), 0);
    char config[600];
    snprintf(config, sizeof config, "local:path=%s", link_path);
    assert_true(sp_kms_open(config, &kms) != SP_OK);
    assert_null(kms);
}

static void test_local_malformed_file(void **state) {
    scratch *s = *state;
    /* base64 of 32 bytes, and of 16 and 48 */
    static const char k32[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    static const char k16[] = "AAECAwQFBgcICQoLDA0ODw==";
    static const char k48[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v";
    char bad[8][200];
    int nbad = 0;
    snprintf(bad[nbad++], 200, "%s", "");
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n");
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v2\n%s\n", k32);
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n%.40s\n", k32); /* cut base64 */
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n %s\n", k32);  /* whitespace */
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n%s\n", k48);
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n%s\n", k16);   /* a 128-bit key */
    snprintf(bad[nbad++], 200, "sealpost-local-master-key v1\n%s\n\n", k32); /* two newlines */
    int wrong = 0;
    for (int i = 0; i < nbad; i++) {
        sp_test_write_file(s->master, bad[i], strlen(bad[i]), 0600);
        sp_kms *kms = NULL;
        sp_error rc = sp_kms_open(s->config, &kms); /* create=1 must not paper over it */
        assert_null(kms);
        if (rc != SP_ERR_BAD_CONFIG) {
            print_error("master key file #%d (\"%s\") gave %s, expected SP_ERR_BAD_CONFIG\n", i, bad[i],
                        sp_error_name(rc));
            wrong++;
        }
    }
    if (wrong) fail_msg("%d malformed master key files not reported as SP_ERR_BAD_CONFIG", wrong);
    /* the well-formed file, with and without its final newline */
    char good[200];
    snprintf(good, sizeof good, "sealpost-local-master-key v1\n%s\n", k32);
    sp_test_write_file(s->master, good, strlen(good), 0600);
    sp_kms *kms = open_local(s->config);
    char id[SP_KMS_MAX_KEY_ID + 1];
    snprintf(id, sizeof id, "%s", sp_kms_key_id(kms));
    sp_kms_close(kms);
    sp_test_write_file(s->master, good, strlen(good) - 1, 0600);
    kms = open_local(s->config);
    assert_string_equal(sp_kms_key_id(kms), id);
    sp_kms_close(kms);
    /* too large to be a key file */
    char big[1024];
    memset(big, 'A', sizeof big);
    memcpy(big, good, strlen(good));
    sp_test_write_file(s->master, big, sizeof big, 0600);
    assert_true(sp_kms_open(s->config, &kms) != SP_OK);
}

static void test_local_round_trip(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config);
    for (int i = 0; i < 20; i++) {
        sp_key *dek = NULL;
        uint8_t wrapped[SP_KMS_MAX_WRAPPED];
        size_t wrapped_len = 0;
        assert_ok(sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &wrapped_len));
        assert_true(wrapped_len > 0 && wrapped_len <= SP_KMS_MAX_WRAPPED);
        assert_true(sp_kms_owns(kms, wrapped, wrapped_len));
        /* the blob names the backend and the master key */
        sp_kms_blob blob;
        assert_ok(sp_kms_blob_decode(wrapped, wrapped_len, &blob));
        assert_int_equal(blob.backend, SP_KMS_BACKEND_LOCAL);
        assert_int_equal(blob.mechanism, SP_KMS_MECH_AES_KWP);
        assert_string_equal(blob.key_id, sp_kms_key_id(kms));
        sp_test_assert_unwraps_to(kms, wrapped, wrapped_len, dek);

        /* wrapping a key we hold gives a blob of that key */
        uint8_t again[SP_KMS_MAX_WRAPPED];
        size_t again_len = 0;
        assert_ok(sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len));
        sp_test_assert_unwraps_to(kms, again, again_len, dek);
        sp_key_free(dek);
    }
    /* a known key */
    uint8_t raw[SP_KEY_BYTES], out[SP_KEY_BYTES];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)(0xa0 + i);
    sp_key *known = NULL, *back = NULL;
    assert_ok(sp_key_new(raw, sizeof raw, &known));
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t wrapped_len = 0;
    assert_ok(sp_kms_wrap_key(kms, known, wrapped, sizeof wrapped, &wrapped_len));
    assert_null(memmem(wrapped, wrapped_len, raw, 8)); /* not in the clear */
    assert_ok(sp_kms_unwrap_key(kms, wrapped, wrapped_len, &back));
    export_key(back, out);
    assert_memory_equal(out, raw, SP_KEY_BYTES);
    sp_key_free(back);

    /* room for the blob is checked; the key is not handed out on failure */
    uint8_t small[16];
    size_t small_len = 0;
    assert_rc(sp_kms_wrap_key(kms, known, small, sizeof small, &small_len), SP_ERR_BUFFER_TOO_SMALL);
    sp_key *none = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &none, small, sizeof small, &small_len), SP_ERR_BUFFER_TOO_SMALL);
    assert_null(none);
    sp_key_free(known);

    /* argument checks */
    assert_rc(sp_kms_wrap_key(NULL, known, wrapped, sizeof wrapped, &wrapped_len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_wrap_key(kms, NULL, wrapped, sizeof wrapped, &wrapped_len), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, wrapped_len, NULL), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_unwrap_key(NULL, wrapped, wrapped_len, &back), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_generate_data_key(NULL, &none, wrapped, sizeof wrapped, &wrapped_len), SP_ERR_INVALID_ARGUMENT);
    assert_null(sp_kms_key_id(NULL));
    assert_null(sp_kms_backend_name(NULL));
    assert_false(sp_kms_owns(NULL, wrapped, wrapped_len));
    assert_false(sp_kms_owns(kms, NULL, 0));
    sp_kms_close(kms);
}

/* Every truncation and every single-byte change of a real blob: decode or
 * the unwrap refuses it with SP_ERR_AUTH, and no key comes out. */
static void test_local_tampered_blob(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config);
    sp_key *dek = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t n = 0;
    assert_ok(sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &n));
    size_t baseline = secure_used();

    for (size_t len = 0; len < n; len++) {
        uint8_t *cut = malloc(len ? len : 1);
        assert_non_null(cut);
        memcpy(cut, wrapped, len);
        sp_key *k = NULL;
        sp_error rc = sp_kms_unwrap_key(kms, cut, len, &k);
        if (rc != SP_ERR_AUTH || k != NULL) fail_msg("blob cut to %zu bytes gave %s", len, sp_error_name(rc));
        assert_false(sp_kms_owns(kms, cut, len));
        free(cut);
    }
    uint8_t longer[SP_KMS_MAX_WRAPPED + 1];
    memcpy(longer, wrapped, n);
    longer[n] = 0;
    sp_key *k = NULL;
    assert_rc(sp_kms_unwrap_key(kms, longer, n + 1, &k), SP_ERR_AUTH);
    assert_null(k);

    uint8_t b[SP_KMS_MAX_WRAPPED];
    for (size_t i = 0; i < n; i++) {
        for (int delta = 1; delta < 256; delta++) {
            memcpy(b, wrapped, n);
            b[i] ^= (uint8_t)delta;
            sp_error rc = sp_kms_unwrap_key(kms, b, n, &k);
            if (rc != SP_ERR_AUTH || k != NULL)
                fail_msg("byte %zu ^ 0x%02x gave %s", i, (unsigned)delta, sp_error_name(rc));
        }
    }
    assert_int_equal(secure_used(), baseline);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_local_foreign_blob(void **state) {
    scratch *s = *state;
    char other_path[400], other_config[500];
    snprintf(other_path, sizeof other_path, "%s/other.key", s->dir);
    snprintf(other_config, sizeof other_config, "local:path=%s;create=1", other_path);
    sp_kms *mine = open_local(s->config), *other = open_local(other_config);
    assert_string_not_equal(sp_kms_key_id(mine), sp_kms_key_id(other));

    sp_key *dek = NULL, *k = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t n = 0;
    assert_ok(sp_kms_generate_data_key(other, &dek, wrapped, sizeof wrapped, &n));
    assert_false(sp_kms_owns(mine, wrapped, n));
    assert_true(sp_kms_owns(other, wrapped, n));
    assert_rc(sp_kms_unwrap_key(mine, wrapped, n, &k), SP_ERR_AUTH);
    assert_null(k);

    /* the same blob relabelled with our key id: the key wrap's own integrity
     * check must still refuse it */
    sp_kms_blob blob;
    assert_ok(sp_kms_blob_decode(wrapped, n, &blob));
    memcpy(blob.key_id, sp_kms_key_id(mine), strlen(sp_kms_key_id(mine)) + 1);
    uint8_t forged[SP_KMS_MAX_WRAPPED];
    size_t forged_len = 0;
    assert_ok(sp_kms_blob_encode(&blob, forged, sizeof forged, &forged_len));
    assert_true(sp_kms_owns(mine, forged, forged_len));
    assert_rc(sp_kms_unwrap_key(mine, forged, forged_len, &k), SP_ERR_AUTH);
    assert_null(k);

    /* another backend id with our key id */
    blob.backend = SP_KMS_BACKEND_KMIP;
    assert_ok(sp_kms_blob_encode(&blob, forged, sizeof forged, &forged_len));
    assert_false(sp_kms_owns(mine, forged, forged_len));
    assert_rc(sp_kms_unwrap_key(mine, forged, forged_len, &k), SP_ERR_AUTH);
    assert_null(k);

    sp_key_free(dek);
    sp_kms_close(mine);
    sp_kms_close(other);
}

static void test_local_check(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config);
    char report[2048];
    size_t before = secure_used();
    assert_ok(sp_kms_check(kms, report, sizeof report));
    assert_non_null(strstr(report, "backend: local\n"));
    assert_non_null(strstr(report, sp_kms_key_id(kms)));
    assert_non_null(strstr(report, "wrap: ok\n"));
    assert_non_null(strstr(report, "unwrap: ok\n"));
    assert_null(strstr(report, "FAILED"));
    assert_int_equal(secure_used(), before);

    /* every report buffer too small for the whole report: whether that is
     * an error or a cut report is the implementation's choice, but the
     * report stays NUL-terminated inside the buffer (a caller prints it),
     * nothing is written past it (exact-size heap blocks for ASan), and no
     * data key is left behind in the secure heap */
    size_t full = strlen(report), unterminated = 0, leaked = 0;
    for (size_t cap = 1; cap <= full; cap++) {
        char *small = malloc(cap);
        assert_non_null(small);
        memset(small, 'x', cap);
        sp_error rc = sp_kms_check(kms, small, cap);
        if (rc != SP_OK && rc != SP_ERR_BUFFER_TOO_SMALL) fail_msg("cap %zu gave %s", cap, sp_error_name(rc));
        if (memchr(small, 0, cap) == NULL && unterminated == 0) unterminated = cap;
        free(small);
        if (secure_used() != before && leaked == 0) leaked = cap;
    }
    assert_rc(sp_kms_check(kms, report, 0), SP_ERR_INVALID_ARGUMENT);
    assert_rc(sp_kms_check(NULL, report, sizeof report), SP_ERR_INVALID_ARGUMENT);
    sp_kms_close(kms);
    if (leaked || unterminated)
        fail_msg("sp_kms_check: first report size that leaked a data key: %zu (%zu secure-heap bytes still in "
                 "use); first that came back without a terminating NUL: %zu (0: none)",
                 leaked, secure_used() - before, unterminated);
}

/* Two processes start at the same moment with create=1 on a missing file:
 * the lock must make one of them create the key and the other read it. */
static void test_local_concurrent_create(void **state) {
    scratch *s = *state;
    for (int round = 0; round < 8; round++) {
        char path[400], config[500];
        snprintf(path, sizeof path, "%s/race-%d.key", s->dir, round);
        snprintf(config, sizeof config, "local:path=%s;create=1", path);
        int gate[2], result[2][2];
        assert_int_equal(pipe(gate), 0);
        pid_t pid[2];
        for (int c = 0; c < 2; c++) {
            assert_int_equal(pipe(result[c]), 0);
            pid[c] = sp_test_fork();
            if (pid[c] == 0) {
                close(gate[1]);
                close(result[c][0]);
                char go;
                if (read(gate[0], &go, 1) < 0) _exit(2); /* EOF once the parent closes: both start together */
                sp_kms *kms = NULL;
                char line[SP_KMS_MAX_KEY_ID + 2] = "!";
                if (sp_kms_open(config, &kms) == SP_OK) snprintf(line, sizeof line, "%s", sp_kms_key_id(kms));
                sp_kms_close(kms);
                ssize_t w = write(result[c][1], line, strlen(line));
                _exit(w > 0 ? 0 : 1);
            }
            close(result[c][1]);
        }
        close(gate[0]);
        close(gate[1]);
        char ids[2][SP_KMS_MAX_KEY_ID + 2];
        for (int c = 0; c < 2; c++) {
            ssize_t got = read(result[c][0], ids[c], sizeof ids[c] - 1);
            assert_true(got > 0);
            ids[c][got] = 0;
            close(result[c][0]);
            assert_int_equal(sp_test_wait(pid[c]), 0);
            assert_string_not_equal(ids[c], "!");
        }
        assert_string_equal(ids[0], ids[1]);
        sp_kms *kms = open_local(config);
        assert_string_equal(sp_kms_key_id(kms), ids[0]);
        sp_kms_close(kms);
        assert_int_equal(sp_test_file_mode(path), 0600);
    }
    /* nothing half-written is left beside the keys */
    DIR *d = opendir(s->dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) assert_null(strstr(e->d_name, ".tmp"));
    closedir(d);
}

/* ---- the dispatcher, with a scripted backend ---- */

#define FAKE_ID 200
#define FAKE_MECH 9
#define FAKE_MASK 0x5a

static const char *const fake_options[] = {"region", NULL};

static const sp_kms_backend fake_backend = SP_FAKE_KMS_BACKEND(FAKE_ID, fake_options);

#define FAKE_CONFIG "fake:retries=2;backoff-ms=1;breaker-failures=3;breaker-cooldown-ms=200"

static sp_kms *open_fake(const char *config) {
    sp_kms *kms = NULL;
    assert_ok(sp_kms_open_backend(&fake_backend, config, &kms));
    return kms;
}

/* A blob the fake can open, made while nothing is scripted to fail. */
static size_t fake_blob(sp_kms *kms, uint8_t *wrapped, size_t cap, sp_key **dek) {
    size_t n = 0;
    assert_ok(sp_kms_generate_data_key(kms, dek, wrapped, cap, &n));
    return n;
}

static int fake_setup(void **state) {
    (void)state;
    fake_reset(FAKE_MECH, FAKE_MASK);
    return 0;
}

static void test_fake_open_and_options(void **state) {
    (void)state;
    sp_kms *kms = open_fake(FAKE_CONFIG ";region=eu-1");
    assert_int_equal(fake_count(&fake.opens), 1);
    assert_string_equal(sp_kms_backend_name(kms), "fake");
    assert_string_equal(sp_kms_key_id(kms), FAKE_KEY_ID);
    char report[1024];
    assert_ok(sp_kms_check(kms, report, sizeof report)); /* a backend without describe() */
    assert_non_null(strstr(report, "wrap: ok"));
    assert_non_null(strstr(report, "unwrap: ok"));
    sp_kms_close(kms);
    assert_int_equal(fake_count(&fake.closes), 1);

    /* an option neither common nor the backend's: refused before open() */
    kms = NULL;
    assert_rc(sp_kms_open_backend(&fake_backend, "fake:bogus=1", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open_backend(&fake_backend, "fake:path=/x", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open_backend(&fake_backend, "fake:retries=11", &kms), SP_ERR_BAD_CONFIG);
    assert_rc(sp_kms_open_backend(NULL, FAKE_CONFIG, &kms), SP_ERR_INVALID_ARGUMENT);
    assert_null(kms);
    assert_int_equal(fake_count(&fake.opens), 1);
}

static void test_fake_retries_unavailable(void **state) {
    (void)state;
    sp_kms *kms = open_fake(FAKE_CONFIG);
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    assert_int_equal(fake_count(&fake.wraps), 1);

    /* two outages then an answer: retries=2 is enough */
    fake_script(2, SP_ERR_KMS_UNAVAILABLE);
    sp_test_assert_unwraps_to(kms, wrapped, n, dek);
    assert_int_equal(fake_count(&fake.unwraps), 3);

    /* three outages: the first attempt and two retries, then the error */
    back = NULL;
    fake_script(3, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_null(back);
    assert_int_equal(fake_count(&fake.unwraps), 6);
    fake_script(0, SP_OK);

    /* the same for wrap */
    uint8_t again[SP_KMS_MAX_WRAPPED];
    size_t again_len = 0;
    fake_script(2, SP_ERR_KMS_UNAVAILABLE);
    assert_ok(sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len));
    assert_int_equal(fake_count(&fake.wraps), 4);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len), SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(fake_count(&fake.wraps), 7);
    sp_key *none = NULL;
    assert_rc(sp_kms_generate_data_key(kms, &none, again, sizeof again, &again_len), SP_ERR_KMS_UNAVAILABLE);
    assert_null(none);
    assert_int_equal(fake_count(&fake.wraps), 10);
    sp_key_free(dek);
    sp_kms_close(kms);

    /* retries=0: one attempt only */
    fake_reset(FAKE_MECH, FAKE_MASK);
    kms = open_fake("fake:retries=0;backoff-ms=1");
    n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(fake_count(&fake.unwraps), 1);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_fake_answers_not_retried(void **state) {
    (void)state;
    static const sp_error final[] = {SP_ERR_KMS_ACCESS_DENIED, SP_ERR_KMS_KEY_DISABLED, SP_ERR_AUTH,
                                     SP_ERR_KMS_PROTOCOL};
    sp_kms *kms = open_fake(FAKE_CONFIG);
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    for (size_t i = 0; i < SP_ARRAY_LEN(final); i++) {
        int unwraps = fake_count(&fake.unwraps), wraps = fake_count(&fake.wraps);
        fake_script(-1, final[i]);
        sp_key *back = NULL;
        assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), final[i]);
        assert_null(back);
        assert_int_equal(fake_count(&fake.unwraps), unwraps + 1);
        uint8_t again[SP_KMS_MAX_WRAPPED];
        size_t again_len = 0;
        assert_rc(sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len), final[i]);
        assert_int_equal(fake_count(&fake.wraps), wraps + 1);
    }
    /* and these answers never open the breaker (more than breaker-failures of them) */
    fake_script(0, SP_OK);
    sp_key *back = NULL;
    int unwraps = fake_count(&fake.unwraps);
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    assert_int_equal(fake_count(&fake.unwraps), unwraps + 1);
    sp_key_free(back);
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_fake_breaker(void **state) {
    (void)state;
    sp_kms *kms = open_fake(FAKE_CONFIG);
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);

    /* two failed calls, a success, two failed calls: never three in a row */
    fake_script(6, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    sp_key_free(back);
    back = NULL;
    fake_script(6, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    /* a final answer in between also breaks the run of outages */
    fake_script(1, SP_ERR_KMS_ACCESS_DENIED);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_ACCESS_DENIED);
    fake_script(6, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    fake_script(0, SP_OK);
    int before = fake_count(&fake.unwraps);
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back)); /* reached the backend */
    assert_int_equal(fake_count(&fake.unwraps), before + 1);
    sp_key_free(back);
    back = NULL;

    /* three consecutive failed calls open it */
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    for (int i = 0; i < 3; i++) assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    int unwraps = fake_count(&fake.unwraps), wraps = fake_count(&fake.wraps);
    int64_t t0 = sp_test_now_ms();
    /* open: every call fails at once, without asking the backend, wrap included */
    fake_script(0, SP_OK);
    for (int i = 0; i < 5; i++) {
        assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
        assert_null(back);
        uint8_t again[SP_KMS_MAX_WRAPPED];
        size_t again_len = 0;
        assert_rc(sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len), SP_ERR_KMS_UNAVAILABLE);
    }
    assert_int_equal(fake_count(&fake.unwraps), unwraps);
    assert_int_equal(fake_count(&fake.wraps), wraps);
    assert_true(sp_test_now_ms() - t0 < 150); /* no back-off while open */

    /* after the cooldown a probe goes through (once, or with its retries:
     * the implementation's choice); it fails: open again at once */
    sp_test_sleep_ms(250);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    int probed = fake_count(&fake.unwraps) - unwraps;
    if (probed < 1 || probed > 3) fail_msg("the half-open probe reached the backend %d times", probed);
    unwraps += probed;
    fake_script(0, SP_OK);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(fake_count(&fake.unwraps), unwraps);

    /* after the next cooldown the probe succeeds and closes it */
    sp_test_sleep_ms(250);
    sp_test_assert_unwraps_to(kms, wrapped, n, dek);
    assert_int_equal(fake_count(&fake.unwraps), unwraps + 1);
    /* closed for real: full retries again, and the count of outages starts
     * over (two failed calls do not reopen it) */
    fake_script(6, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    assert_int_equal(fake_count(&fake.unwraps), unwraps + 1 + 3);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    fake_script(0, SP_OK);
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    assert_int_equal(fake_count(&fake.unwraps), unwraps + 1 + 6 + 1);
    sp_key_free(back);
    sp_key_free(dek);
    sp_kms_close(kms);
}

/* The counters /metrics reads: every call once (not per retry), failures
 * split by kind, the breaker's state. */
static void test_fake_stats(void **state) {
    (void)state;
    sp_kms *kms = open_fake("fake:retries=2;backoff-ms=1;breaker-failures=2;breaker-cooldown-ms=60000");
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    sp_kms_stats s0, s1;
    sp_kms_get_stats(kms, &s0);
    assert_false(s0.breaker_open);

    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    sp_key_free(back);
    back = NULL;
    fake_script(1, SP_ERR_KMS_ACCESS_DENIED);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_ACCESS_DENIED);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE); /* 3 attempts, 1 call */
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE); /* opens the breaker */
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE); /* refused at once */
    sp_kms_get_stats(kms, &s1);
    assert_int_equal(s1.calls - s0.calls, 5);
    assert_int_equal(s1.failures - s0.failures, 4);
    assert_int_equal(s1.unavailable - s0.unavailable, 3);
    assert_int_equal(s1.denied - s0.denied, 1);
    assert_true(s1.breaker_open);
    sp_kms_get_stats(NULL, &s1); /* tolerated: zeros */
    assert_int_equal(s1.calls, 0);
    fake_script(0, SP_OK);
    sp_key_free(dek);
    sp_kms_close(kms);
}

typedef struct {
    sp_kms *kms;
    const uint8_t *wrapped;
    size_t n;
    sp_error rc;
} probe_arg;

static void *probe_thread(void *p) {
    probe_arg *a = p;
    sp_key *k = NULL;
    a->rc = sp_kms_unwrap_key(a->kms, a->wrapped, a->n, &k);
    sp_key_free(k);
    return NULL;
}

/* Half-open means one probe: while it is out, other callers keep failing
 * fast instead of all rushing the KMS that just came back (docs/KMS.md:
 * "the first call after it is a probe"). The fake holds the probe inside
 * the backend until this thread has made its own call. */
static void test_fake_half_open_single_probe(void **state) {
    (void)state;
    sp_kms *kms = open_fake("fake:retries=0;backoff-ms=1;breaker-failures=1;breaker-cooldown-ms=100");
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    fake_script(1, SP_ERR_KMS_UNAVAILABLE);
    assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE); /* open */
    sp_test_sleep_ms(150);

    pthread_mutex_lock(&fake.lock);
    fake.hold_next = true;
    pthread_mutex_unlock(&fake.lock);
    probe_arg arg = {kms, wrapped, n, SP_ERR__COUNT};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_thread, &arg), 0);
    pthread_mutex_lock(&fake.lock);
    while (!fake.holding) pthread_cond_wait(&fake.cond, &fake.lock);
    pthread_mutex_unlock(&fake.lock);
    int during = fake_count(&fake.unwraps);

    sp_error rc = sp_kms_unwrap_key(kms, wrapped, n, &back);
    int reached = fake_count(&fake.unwraps) - during;
    sp_key_free(back);
    back = NULL;

    pthread_mutex_lock(&fake.lock);
    fake.released = true;
    pthread_cond_broadcast(&fake.cond);
    pthread_mutex_unlock(&fake.lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_rc(arg.rc, SP_OK); /* the probe succeeded: closed */
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    sp_key_free(back);
    sp_key_free(dek);
    sp_kms_close(kms);

    if (rc != SP_ERR_KMS_UNAVAILABLE || reached != 0)
        fail_msg("a second call while the half-open probe was out gave %s and reached the backend %d time(s); "
                 "expected SP_ERR_KMS_UNAVAILABLE without reaching it",
                 sp_error_name(rc), reached);
}

static void test_fake_backoff_bounded(void **state) {
    (void)state;
    sp_kms *kms = open_fake("fake:retries=2;backoff-ms=1;breaker-failures=1000");
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    for (int i = 0; i < 5; i++) {
        int64_t t0 = sp_test_now_ms();
        assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
        int64_t took = sp_test_now_ms() - t0;
        if (took >= 100) fail_msg("a failing call with backoff-ms=1, retries=2 took %lld ms", (long long)took);
    }
    sp_key_free(dek);
    sp_kms_close(kms);

    /* base 20 ms, three retries: the waits are at most 20 + 40 + 80 ms */
    fake_reset(FAKE_MECH, FAKE_MASK);
    kms = open_fake("fake:retries=3;backoff-ms=20;breaker-failures=1000");
    n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    int64_t total = 0;
    for (int i = 0; i < 4; i++) {
        int64_t t0 = sp_test_now_ms();
        assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
        int64_t took = sp_test_now_ms() - t0;
        total += took;
        if (took > 140 + 100) fail_msg("a failing call took %lld ms, more than the 140 ms of back-off allowed",
                                       (long long)took);
    }
    /* full jitter draws from [0, ceiling]: four calls all at the ceiling would
     * take 560 ms; far less is expected on average (280 ms) */
    assert_true(total < 560 + 200);
    assert_int_equal(fake_count(&fake.unwraps), 4 * 4);
    sp_key_free(dek);
    sp_kms_close(kms);
}

/* ---- audit ---- */

typedef struct {
    char event[32];
    char backend[32];
    char key[SP_KMS_MAX_KEY_ID + 1];
    char result[48];
    char attempts[12];
} audit_line;

/* Parses the log into lines (at most cap). */
static size_t read_audit(const char *path, audit_line *lines, size_t cap) {
    char *text = sp_test_read_file(path, NULL);
    size_t count = 0;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *o = json_loads(l, 0, &jerr);
        if (o == NULL) fail_msg("audit line is not JSON: %s", l);
        assert_true(count < cap);
        audit_line *a = &lines[count++];
        memset(a, 0, sizeof *a);
        const char *names[] = {"event", "backend", "key", "result", "attempts"};
        char *dst[] = {a->event, a->backend, a->key, a->result, a->attempts};
        size_t caps[] = {sizeof a->event, sizeof a->backend, sizeof a->key, sizeof a->result, sizeof a->attempts};
        for (size_t i = 0; i < 5; i++) {
            json_t *v = json_object_get(o, names[i]);
            if (json_is_string(v)) snprintf(dst[i], caps[i], "%s", json_string_value(v));
        }
        json_decref(o);
    }
    free(text);
    return count;
}

static void test_audit_lines(void **state) {
    scratch *s = *state;
    char log[400];
    snprintf(log, sizeof log, "%s/audit.log", s->dir);
    sp_audit *audit = NULL;
    assert_ok(sp_audit_open(log, &audit));
    sp_kms *kms = open_local(s->config);
    sp_kms_set_audit(kms, audit);

    enum { KEYS = 4 };
    uint8_t raw[KEYS][SP_KEY_BYTES];
    uint8_t wrapped[KEYS][SP_KMS_MAX_WRAPPED];
    size_t n[KEYS];
    for (int i = 0; i < KEYS; i++) {
        sp_key *dek = NULL, *back = NULL;
        assert_ok(sp_kms_generate_data_key(kms, &dek, wrapped[i], sizeof wrapped[i], &n[i]));
        assert_ok(sp_kms_unwrap_key(kms, wrapped[i], n[i], &back));
        export_key(back, raw[i]);
        sp_key_free(back);
        sp_key_free(dek);
    }
    /* a tampered payload: the backend refuses it, and that is audited too */
    wrapped[0][n[0] - 1] ^= 1;
    sp_key *k = NULL;
    assert_rc(sp_kms_unwrap_key(kms, wrapped[0], n[0], &k), SP_ERR_AUTH);
    sp_kms_set_audit(kms, NULL);
    /* detached: no more lines */
    wrapped[0][n[0] - 1] ^= 1;
    assert_ok(sp_kms_unwrap_key(kms, wrapped[0], n[0], &k));
    sp_key_free(k);
    sp_audit_close(audit);

    audit_line lines[16];
    size_t count = read_audit(log, lines, 16);
    assert_int_equal(count, 2 * KEYS + 1);
    for (size_t i = 0; i < count; i++) {
        const char *want = i == 2 * KEYS ? "kms.unwrap" : (i % 2 == 0 ? "kms.wrap" : "kms.unwrap");
        assert_string_equal(lines[i].event, want);
        assert_string_equal(lines[i].backend, "local");
        assert_string_equal(lines[i].key, sp_kms_key_id(kms));
        assert_string_equal(lines[i].result, i == 2 * KEYS ? "SP_ERR_AUTH" : "SP_OK");
        assert_string_equal(lines[i].attempts, "1");
    }
    char *text = sp_test_read_file(log, NULL);
    for (int i = 0; i < KEYS; i++) sp_test_assert_key_absent(text, raw[i]);
    free(text);
    sp_audit_report report;
    memset(&report, 0, sizeof report);
    assert_ok(sp_audit_verify(log, &report));
    assert_int_equal(report.lines, count);
    sp_kms_close(kms);
}

/* With the fake: one line per call, not per attempt; the breaker's fast
 * failures are audited too. */
static void test_audit_retries_and_breaker(void **state) {
    scratch *s = *state;
    fake_reset(FAKE_MECH, FAKE_MASK);
    char log[400];
    snprintf(log, sizeof log, "%s/audit.log", s->dir);
    sp_audit *audit = NULL;
    assert_ok(sp_audit_open(log, &audit));
    sp_kms *kms = open_fake(FAKE_CONFIG);
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    sp_key *dek = NULL, *back = NULL;
    size_t n = fake_blob(kms, wrapped, sizeof wrapped, &dek);
    sp_kms_set_audit(kms, audit);
    fake_script(2, SP_ERR_KMS_UNAVAILABLE);
    assert_ok(sp_kms_unwrap_key(kms, wrapped, n, &back));
    sp_key_free(back);
    back = NULL;
    fake_script(-1, SP_ERR_KMS_UNAVAILABLE);
    for (int i = 0; i < 4; i++) assert_rc(sp_kms_unwrap_key(kms, wrapped, n, &back), SP_ERR_KMS_UNAVAILABLE);
    sp_kms_set_audit(kms, NULL);
    sp_audit_close(audit);

    audit_line lines[16];
    size_t count = read_audit(log, lines, 16);
    assert_int_equal(count, 5);
    assert_string_equal(lines[0].result, "SP_OK");
    assert_string_equal(lines[0].attempts, "3");
    for (size_t i = 1; i < 4; i++) {
        assert_string_equal(lines[i].result, "SP_ERR_KMS_UNAVAILABLE");
        assert_string_equal(lines[i].attempts, "3");
    }
    /* the fourth failing call met the open breaker */
    assert_string_equal(lines[4].result, "SP_ERR_KMS_UNAVAILABLE");
    assert_string_equal(lines[4].attempts, "0");
    for (size_t i = 0; i < count; i++) {
        assert_string_equal(lines[i].event, "kms.unwrap");
        assert_string_equal(lines[i].backend, "fake");
        assert_string_equal(lines[i].key, FAKE_KEY_ID);
    }
    sp_audit_report report;
    assert_ok(sp_audit_verify(log, &report));
    sp_key_free(dek);
    sp_kms_close(kms);
}

static void test_audit_fail_closed(void **state) {
    scratch *s = *state;
    char log[400];
    snprintf(log, sizeof log, "%s/audit.log", s->dir);
    sp_audit *audit = NULL;
    assert_ok(sp_audit_open(log, &audit));
    sp_kms *kms = open_local(s->config);
    sp_kms_set_audit(kms, audit);
    sp_key *dek = NULL, *back = NULL;
    uint8_t wrapped[SP_KMS_MAX_WRAPPED];
    size_t n = 0;
    assert_ok(sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &n));
    off_t size = sp_test_file_size(log);
    assert_true(size > 0);
    size_t keys_before = secure_used();

    /* first prove the mechanism: sp_audit_record itself fails */
    sp_test_fsize_guard g;
    sp_test_fsize_limit(&g, (rlim_t)size);
    sp_audit_field f = {"what", "probe"};
    sp_error direct = sp_audit_record(audit, "test.probe", &f, 1);
    sp_error unwrap = sp_kms_unwrap_key(kms, wrapped, n, &back);
    uint8_t again[SP_KMS_MAX_WRAPPED];
    size_t again_len = 0;
    sp_error wrap = sp_kms_wrap_key(kms, dek, again, sizeof again, &again_len);
    sp_key *fresh = NULL;
    sp_error gen = sp_kms_generate_data_key(kms, &fresh, again, sizeof again, &again_len);
    sp_test_fsize_restore(&g);

    if (direct == SP_OK || direct == SP_ERR_INVALID_ARGUMENT)
        fail_msg("RLIMIT_FSIZE did not make sp_audit_record fail (%s); the test proves nothing", sp_error_name(direct));
    if (unwrap == SP_OK || back != NULL)
        fail_msg("sp_kms_unwrap_key handed out a key its audit line could not be written for (%s)",
                 sp_error_name(unwrap));
    assert_true(wrap != SP_OK);
    assert_true(gen != SP_OK);
    assert_null(fresh);
    assert_int_equal(secure_used(), keys_before); /* the unwrapped key was wiped and freed */
    /* the failed records left the log as it was, and it still verifies */
    assert_int_equal(sp_test_file_size(log), size);
    sp_audit_report report;
    assert_ok(sp_audit_verify(log, &report));
    assert_int_equal(report.lines, 1);

    /* with room again, the same blob unwraps and is audited */
    sp_test_assert_unwraps_to(kms, wrapped, n, dek);
    sp_kms_set_audit(kms, NULL);
    sp_audit_close(audit);
    assert_ok(sp_audit_verify(log, &report));
    assert_int_equal(report.lines, 2);
    sp_key_free(dek);
    sp_kms_close(kms);
}

/* ---- allocation failures ---- */

static bool clean_failure(sp_error rc) {
    return rc == SP_ERR_NO_MEMORY || rc == SP_ERR_CRYPTO_BACKEND || rc == SP_ERR_SECURE_MEMORY;
}

/* open + generate + unwrap with the n-th allocation failing, for every n:
 * a memory error (never a misleading one such as BAD_CONFIG or AUTH), no
 * key handed out with an error, nothing leaked. */
static void run_alloc_failures(scratch *s, bool create) {
    size_t keys_before = secure_used();
    uint64_t n;
    size_t failures = 0;
    for (n = 1; n < 100000; n++) {
        char path[400], config[500];
        snprintf(path, sizeof path, "%s/%s.key", s->dir, create ? "fresh" : "master");
        snprintf(config, sizeof config, "local:path=%s;create=1", path);
        if (create) (void)unlink(path);
        sp_test_fault fault = sp_test_fault_arm(n);
        sp_kms *kms = NULL;
        sp_key *dek = NULL, *back = NULL;
        uint8_t wrapped[SP_KMS_MAX_WRAPPED];
        size_t len = 0;
        sp_error stage[3] = {SP_OK, SP_OK, SP_OK};
        stage[0] = sp_kms_open(config, &kms);
        if (stage[0] == SP_OK) stage[1] = sp_kms_generate_data_key(kms, &dek, wrapped, sizeof wrapped, &len);
        if (stage[0] == SP_OK && stage[1] == SP_OK) stage[2] = sp_kms_unwrap_key(kms, wrapped, len, &back);
        bool reached = sp_test_fault_disarm(fault);
        for (int i = 0; i < 3; i++) {
            if (stage[i] != SP_OK && !clean_failure(stage[i]))
                fail_msg("allocation %llu failed, step %d said %s", (unsigned long long)n, i,
                         sp_error_name(stage[i]));
        }
        if (stage[0] != SP_OK) assert_null(kms);
        if (stage[1] != SP_OK) assert_null(dek);
        if (stage[2] != SP_OK) assert_null(back);
        if (stage[0] != SP_OK || stage[1] != SP_OK || stage[2] != SP_OK) failures++;
        if (back != NULL) sp_test_assert_same_key(dek, back);
        sp_key_free(back);
        sp_key_free(dek);
        sp_kms_close(kms);
        if (secure_used() != keys_before)
            fail_msg("allocation %llu failed: %zu secure-heap bytes leaked", (unsigned long long)n,
                     secure_used() - keys_before);
        /* a failed create leaves no file, or a complete private one */
        if (create && access(path, F_OK) == 0) {
            assert_int_equal(sp_test_file_mode(path), 0600);
            sp_kms *check = NULL;
            assert_ok(sp_kms_open(config, &check));
            sp_kms_close(check);
        }
        if (!reached) break;
    }
    assert_true(n < 100000);
    assert_true(failures > 0);
}

static void test_alloc_failures_existing(void **state) {
    scratch *s = *state;
    sp_kms *kms = open_local(s->config); /* makes the file */
    sp_kms_close(kms);
    run_alloc_failures(s, false);
}

static void test_alloc_failures_create(void **state) { run_alloc_failures(*state, true); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_valid),
        cmocka_unit_test(test_config_malformed),
        cmocka_unit_test(test_config_limits),
        cmocka_unit_test(test_config_int),
        cmocka_unit_test(test_config_only),
        cmocka_unit_test_setup_teardown(test_open_refuses_bad_config, scratch_setup, scratch_teardown),
        cmocka_unit_test(test_blob_round_trip),
        cmocka_unit_test(test_blob_encode_refuses),
        cmocka_unit_test(test_blob_decode_refuses),
        cmocka_unit_test_setup_teardown(test_local_create_and_reopen, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_missing_file, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_insecure_permissions, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_malformed_file, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_round_trip, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_tampered_blob, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_foreign_blob, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_check, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_local_concurrent_create, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup(test_fake_open_and_options, fake_setup),
        cmocka_unit_test_setup(test_fake_retries_unavailable, fake_setup),
        cmocka_unit_test_setup(test_fake_answers_not_retried, fake_setup),
        cmocka_unit_test_setup(test_fake_breaker, fake_setup),
        cmocka_unit_test_setup(test_fake_stats, fake_setup),
        cmocka_unit_test_setup(test_fake_half_open_single_probe, fake_setup),
        cmocka_unit_test_setup(test_fake_backoff_bounded, fake_setup),
        cmocka_unit_test_setup_teardown(test_audit_lines, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_audit_retries_and_breaker, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_audit_fail_closed, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures_existing, scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures_create, scratch_setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, sp_test_group_init, NULL);
}
