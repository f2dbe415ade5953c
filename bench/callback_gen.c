/*
 * sp_callback_gen: the provider's half of scripts/bench-callbacks. A
 * provider seals one delivery report per message it delivered; this tool
 * does that ahead of time for a list of message ids, so that the load
 * generator (wrk, bench/callbacks.lua) spends its time sending rather than
 * sealing, and sealpostd and the reference see the same requests.
 *
 *   sp_callback_gen KEYS_FILE < message ids (one per line) > requests
 *
 * KEYS_FILE is the provider's key file (sealpost keys import); the active
 * version seals, with AES-256-GCM in the compat profile, a fresh IV, a
 * distinct webhook-id ("cb_" and the message id) and the current time. Each
 * output line is one request, tab-separated:
 *   webhook-id  webhook-timestamp  webhook-signature  X-AES-IV  X-AES-KEY-VERSION  body
 * (the body is JSON without tabs or newlines). Exits non-zero on any error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "sealpost/sealpost.h"

static int fail(const char *what, sp_error rc) {
    fprintf(stderr, "sp_callback_gen: %s: %s\n", what, sp_strerror(rc));
    return 1;
}

static const char *header_of(const sp_sealed *s, const char *name) {
    for (size_t i = 0; i < s->n_headers; i++) {
        if (strlen(name) == s->headers[i].name_len && strncasecmp(s->headers[i].name, name, s->headers[i].name_len) == 0)
            return s->headers[i].value;
    }
    return NULL;
}

static size_t header_len(const sp_sealed *s, const char *name) {
    for (size_t i = 0; i < s->n_headers; i++) {
        if (strlen(name) == s->headers[i].name_len && strncasecmp(s->headers[i].name, name, s->headers[i].name_len) == 0)
            return s->headers[i].value_len;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: sp_callback_gen KEYS_FILE < message-ids > requests\n");
        return 2;
    }
    sp_error rc = sp_init();
    if (rc != SP_OK) return fail("init", rc);
    sp_keyfile *kf = NULL;
    sp_wire *wire = NULL;
    rc = sp_keyfile_load(argv[1], &kf);
    if (rc != SP_OK) return fail("keys", rc);
    rc = sp_wire_new(&wire);
    if (rc == SP_OK) rc = sp_wire_add_keyfile(wire, kf);
    sp_keyfile_free(kf);
    if (rc != SP_OK) return fail("keys", rc);
    if (sp_wire_active_version(wire) == NULL) return fail("keys", SP_ERR_UNKNOWN_KEY_VERSION);

    char line[256], plain[512], wid[SP_MESSAGE_ID_MAX + 1];
    uint8_t body[2048];
    sp_sealed sealed;
    unsigned long made = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (n == 0) continue;
        int64_t now = (int64_t)time(NULL);
        int plen = snprintf(plain, sizeof plain, "[{\"event\":\"delivered\",\"data\":[{\"ts\":%lld,\"meta\":\"%s\"}]}]",
                            (long long)now, line);
        int wlen = snprintf(wid, sizeof wid, "cb_%s", line);
        if (plen < 0 || (size_t)plen >= sizeof plain || wlen < 0 || (size_t)wlen >= sizeof wid)
            return fail("message id too long", SP_ERR_TOO_LARGE);
        sp_seal_params params = {SP_PROFILE_COMPAT, SP_ALG_AES_256_GCM, NULL, wid, now};
        rc = sp_seal(wire, &params, (const uint8_t *)plain, (size_t)plen, body, sizeof body, &sealed);
        if (rc != SP_OK) return fail("seal", rc);
        printf("%s\t%.*s\t%.*s\t%.*s\t%.*s\t%.*s\n", wid, (int)header_len(&sealed, "webhook-timestamp"),
               header_of(&sealed, "webhook-timestamp"), (int)header_len(&sealed, "webhook-signature"),
               header_of(&sealed, "webhook-signature"), (int)header_len(&sealed, "X-AES-IV"),
               header_of(&sealed, "X-AES-IV"), (int)header_len(&sealed, "X-AES-KEY-VERSION"),
               header_of(&sealed, "X-AES-KEY-VERSION"), (int)sealed.body_len, (const char *)body);
        made++;
    }
    sp_wire_free(wire);
    if (fflush(stdout) != 0 || ferror(stdout)) return fail("write", SP_ERR_IO);
    fprintf(stderr, "sp_callback_gen: %lu callbacks sealed\n", made);
    return 0;
}
