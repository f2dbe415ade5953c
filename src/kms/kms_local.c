/*
 * The local KMS: a master key in a file beside the server. It is the
 * embedded default that lets `make run` work with nothing else installed,
 * and it is for development and single-node use only: the key is only as
 * safe as the machine's disk, which is exactly what BYOK exists to avoid.
 *
 * The file is private to its owner (refused otherwise), created atomically
 * on first run when create=1, and held in locked memory once read. Data keys
 * are wrapped with AES key wrap with padding (RFC 5649), whose integrity
 * check makes a tampered or foreign blob fail to unwrap.
 */
#include "kms/sp_kms.h"

#define SP_LOCAL_MAGIC "sealpost-local-master-key v1\n"
#define SP_LOCAL_MAX_FILE 256
#define SP_LOCAL_WRAPPED 40 /* KWP of 32 bytes */

typedef struct {
    sp_key *master;
} sp_local_state;

static const char *const sp_local_options[] = {"path", NULL};

static sp_error sp_local_parse(const uint8_t *data, size_t len, sp_key **out) {
    size_t magic = strlen(SP_LOCAL_MAGIC);
    SP_ENSURE(len > magic && memcmp(data, SP_LOCAL_MAGIC, magic) == 0, SP_ERR_BAD_CONFIG);
    size_t b64_len = len - magic;
    if (data[len - 1] == '\n') b64_len--;
    uint8_t raw[SP_KEY_BYTES + 3];
    size_t n = 0;
    sp_error rc = sp_b64_decode((const char *)data + magic, b64_len, raw, sizeof raw, &n, false);
    if (rc == SP_OK && n != SP_KEY_BYTES) rc = SP_ERR_BAD_CONFIG;
    if (rc == SP_OK) rc = sp_key_new(raw, SP_KEY_BYTES, out);
    sp_wipe(raw, sizeof raw);
    /* a file that is not a master key is a configuration error, whatever is wrong in it */
    return rc == SP_ERR_BAD_BASE64 || rc == SP_ERR_BUFFER_TOO_SMALL ? SP_ERR_BAD_CONFIG : rc;
}

static sp_error sp_local_create(const char *path) {
    uint8_t raw[SP_KEY_BYTES];
    char text[SP_LOCAL_MAX_FILE];
    sp_wbuf b = sp_wbuf_of(text, sizeof text);
    sp_error rc = sp_random(raw, sizeof raw);
    if (rc == SP_OK) rc = sp_wbuf_put_str(&b, SP_LOCAL_MAGIC);
    if (rc == SP_OK) rc = sp_wbuf_put_b64(&b, raw, sizeof raw, false);
    if (rc == SP_OK) rc = sp_wbuf_put_str(&b, "\n");
    if (rc == SP_OK) rc = sp_file_replace(path, (const uint8_t *)text, b.len);
    sp_wipe(raw, sizeof raw);
    sp_wipe(text, sizeof text);
    return rc;
}

/* A public name for the key that reveals nothing about it. */
static sp_error sp_local_key_id(const sp_key *master, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    static const char label[] = "sealpost/local-kms/key-id";
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    SP_GUARD(sp_hmac_sha256(sp_key_bytes(master), SP_KEY_BYTES, (const uint8_t *)label, sizeof label - 1, mac));
    memcpy(key_id, "local:", 6);
    sp_hex_encode(mac, 8, key_id + 6);
    return SP_OK;
}

static void sp_local_close(void *state) {
    sp_local_state *s = state;
    if (s == NULL) return;
    sp_key_free(s->master);
    sp_free(s);
}

static sp_error sp_local_open(const sp_kms_config *cfg, void **state, char key_id[SP_KMS_MAX_KEY_ID + 1]) {
    const char *path = sp_kms_config_get(cfg, "path");
    SP_ENSURE(path != NULL && path[0] != 0, SP_ERR_BAD_CONFIG);
    int64_t create = 0;
    SP_GUARD(sp_kms_config_int(cfg, "create", 0, 1, 0, &create));
    int lock = -1;
    SP_GUARD(sp_file_lock(path, &lock)); /* two first starts must not make two keys */
    uint8_t *data = NULL;
    size_t len = 0;
    sp_error rc = sp_file_read_private(path, SP_LOCAL_MAX_FILE, &data, &len);
    if (rc == SP_ERR_NOT_FOUND && create) {
        rc = sp_local_create(path);
        if (rc == SP_OK) rc = sp_file_read_private(path, SP_LOCAL_MAX_FILE, &data, &len);
    }
    sp_file_unlock(lock);
    SP_GUARD(rc);
    sp_local_state *s = sp_calloc(1, sizeof *s);
    if (s == NULL) rc = SP_ERR_NO_MEMORY;
    if (rc == SP_OK) rc = sp_local_parse(data, len, &s->master);
    sp_free_wiped(data, len + 1);
    if (rc == SP_OK) rc = sp_local_key_id(s->master, key_id);
    if (rc != SP_OK) {
        sp_local_close(s);
        return rc;
    }
    *state = s;
    return SP_OK;
}

static sp_error sp_local_wrap(void *state, const uint8_t dek[SP_KEY_BYTES], uint8_t *mechanism, uint8_t *payload,
                              size_t cap, size_t *payload_len) {
    sp_local_state *s = state;
    *mechanism = SP_KMS_MECH_AES_KWP;
    return sp_aes_key_wrap(sp_key_bytes(s->master), SP_KEY_BYTES, true, dek, SP_KEY_BYTES, payload, cap,
                           payload_len);
}

static sp_error sp_local_unwrap(void *state, uint8_t mechanism, const uint8_t *payload, size_t payload_len,
                                uint8_t dek[SP_KEY_BYTES]) {
    sp_local_state *s = state;
    SP_ENSURE(mechanism == SP_KMS_MECH_AES_KWP && payload_len == SP_LOCAL_WRAPPED, SP_ERR_AUTH);
    uint8_t out[SP_LOCAL_WRAPPED];
    size_t n = 0;
    sp_error rc = sp_aes_key_unwrap(sp_key_bytes(s->master), SP_KEY_BYTES, true, payload, payload_len, out,
                                    sizeof out, &n);
    if (rc == SP_OK && n != SP_KEY_BYTES) rc = SP_ERR_AUTH;
    if (rc == SP_OK) memcpy(dek, out, SP_KEY_BYTES);
    sp_wipe(out, sizeof out);
    return rc;
}

static sp_error sp_local_describe(void *state, char *report, size_t cap) {
    (void)state;
    sp_wbuf b = sp_wbuf_of(report, cap);
    SP_GUARD(sp_wbuf_put_str(&b, "mechanism: AES-256 key wrap with padding (RFC 5649)\n"
                                 "note: the master key is a local file; use pkcs11 or kmip in production\n"));
    return sp_wbuf_terminate(&b);
}

const sp_kms_backend sp_kms_backend_local = {
    .name = "local",
    .id = SP_KMS_BACKEND_LOCAL,
    .options = sp_local_options,
    .open = sp_local_open,
    .close = sp_local_close,
    .wrap = sp_local_wrap,
    .unwrap = sp_local_unwrap,
    .describe = sp_local_describe,
};
