/*
 * Fuzz target for sealpost-relay's payload parser (apps/sealpost-relay/
 * payload.c): the plaintext of every sealed request, once it has been
 * verified and decrypted; a platform's channel template produces it, so it
 * is only as trustworthy as that template.
 *
 * Properties checked:
 *   - the only answers are SP_OK, SP_ERR_BAD_JSON, SP_ERR_INVALID_ARGUMENT
 *     and SP_ERR_TOO_LARGE, a failure with a non-empty message and nothing
 *     left in the payload;
 *   - a success holds 1..1000 records (more than one only as a batch), each
 *     of a known kind with a valid message id, distinct across the batch,
 *     and no string field NULL;
 *   - what the relay builds from a record stays well-formed: the e-mail
 *     has CRLF line ends only, no header line over 998 characters and no
 *     body line over 76, and never a line that is a lone "."; the Kannel
 *     URL holds no byte a URL may not carry raw.
 */
#include "fuzz_util.h"

#include "relay.h"

FUZZ_INITIALIZE_LIBRARY()

static void check_email(const relay_record *r) {
    char *m = NULL;
    size_t len = 0;
    FUZZ_CHECK(relay_smtp_build(r, 1714000000, "fz", &m, &len) == SP_OK);
    bool in_body = false;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\n') FUZZ_CHECK(i > 0 && m[i - 1] == '\r');
        if (m[i] == '\r') FUZZ_CHECK(i + 1 < len && m[i + 1] == '\n');
        if (m[i] != '\n') continue;
        size_t line = i - 1 - start;
        FUZZ_CHECK(line <= (in_body ? 76u : 998u));
        if (line == 0) in_body = true;
        FUZZ_CHECK(!(line == 1 && m[start] == '.'));
        start = i + 1;
    }
    relay_wiped_free(m, len);
}

static void check_sms(const relay_record *r) {
    relay_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.kannel_sendsms_url, sizeof cfg.kannel_sendsms_url, "http://127.0.0.1:13013/cgi-bin/sendsms");
    snprintf(cfg.kannel_username, sizeof cfg.kannel_username, "u");
    snprintf(cfg.kannel_password, sizeof cfg.kannel_password, "p");
    cfg.kannel_dlr_port = 13080;
    size_t cap = RELAY_MAX_URL + 3 * (RELAY_MAX_SMS_TEXT + 2 * 128 + 64 + 2 * RELAY_MAX_PHONE + 256) + 512;
    char *url = fuzz_alloc(cap);
    FUZZ_CHECK(relay_kannel_url(&cfg, r, "0123456789abcdef0123456789abcdef", url, cap) == SP_OK);
    for (const char *p = url; *p; p++) FUZZ_CHECK((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
    free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = fuzz_dup(data, size);
    relay_payload p;
    char err[256] = "";
    sp_error rc = relay_payload_parse(copy, size, &p, err, sizeof err);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_BAD_JSON || rc == SP_ERR_INVALID_ARGUMENT || rc == SP_ERR_TOO_LARGE);
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(p.doc == NULL && p.records == NULL && p.count == 0);
        free(copy);
        return 0;
    }
    FUZZ_CHECK(p.count >= 1 && p.count <= RELAY_MAX_BATCH);
    FUZZ_CHECK(p.batch || p.count == 1);
    for (size_t i = 0; i < p.count; i++) {
        const relay_record *r = &p.records[i];
        FUZZ_CHECK(r->kind == RELAY_KIND_EMAIL || r->kind == RELAY_KIND_SMS);
        FUZZ_CHECK(relay_message_id_valid(r->message_id));
        FUZZ_CHECK(r->to && r->from && r->from_name && r->reply_to && r->subject && r->html && r->text &&
                   r->sender && r->dlr_url && r->inbound_url);
        for (size_t j = 0; j < i && j < 64; j++) FUZZ_CHECK(strcmp(p.records[j].message_id, r->message_id) != 0);
        if (i < 4) {
            if (r->kind == RELAY_KIND_EMAIL) check_email(r);
            else check_sms(r);
        }
    }
    relay_payload_free(&p);
    free(copy);
    return 0;
}
