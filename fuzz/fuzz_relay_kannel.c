/*
 * Fuzz target for what Kannel sends sealpost-relay's loopback listener: the
 * DLR and MO query strings (apps/sealpost-relay/kannel.c), and the callback
 * bodies the relay makes of them.
 *
 * Properties checked:
 *   - the parser answers SP_OK, SP_ERR_INVALID_ARGUMENT or SP_ERR_TOO_LARGE,
 *     and leaves the result all zero on failure;
 *   - on success every field keeps its rule: meta empty or a valid message
 *     id, smsc and from printable, text_len the text's length with no NUL;
 *   - the DLR type maps to one event, with a code exactly for failures;
 *   - an inbound message's form body, read back by libsealpost's callback
 *     parser (what the platform runs), is one inbound event from the same
 *     sender with the same text, or refused as a whole (text not UTF-8);
 *     a reply's SMS body likewise carries the same text.
 */
#include "fuzz_util.h"

#include "relay.h"

FUZZ_INITIALIZE_LIBRARY()

typedef struct got {
    size_t n;
    sp_callback_event ev;
    char text[RELAY_MAX_SMS_TEXT * 4 + 1];
    char from[40];
} got;

static sp_error collect(void *arg, const sp_callback_event *e) {
    got *g = arg;
    g->n++;
    g->ev = *e;
    g->text[0] = g->from[0] = '\0';
    if (e->text && e->text_len < sizeof g->text) memcpy(g->text, e->text, e->text_len), g->text[e->text_len] = '\0';
    if (e->from && e->from_len < sizeof g->from) memcpy(g->from, e->from, e->from_len), g->from[e->from_len] = '\0';
    return SP_OK;
}

static bool printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *query = fuzz_dup_cstr(data, size);
    static relay_kannel_query q;
    sp_error rc = relay_kannel_query_parse(query, strlen(query), &q);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_INVALID_ARGUMENT || rc == SP_ERR_TOO_LARGE);
        const uint8_t *b = (const uint8_t *)&q;
        for (size_t i = 0; i < sizeof q; i++) FUZZ_CHECK(b[i] == 0);
        free(query);
        return 0;
    }
    FUZZ_CHECK(q.meta[0] == '\0' || relay_message_id_valid(q.meta));
    FUZZ_CHECK(printable(q.smsc) && printable(q.from));
    FUZZ_CHECK(strlen(q.text) == q.text_len);
    FUZZ_CHECK(q.has_from == (q.from[0] != '\0'));
    if (q.has_type) {
        int code = -1;
        relay_dlr_event ev = relay_dlr_map(q.type, &code);
        FUZZ_CHECK(ev >= RELAY_DLR_DELIVERED && ev <= RELAY_DLR_UNKNOWN);
        FUZZ_CHECK((ev == RELAY_DLR_FAILED) == (code != 0));
    }
    if (q.has_from && q.has_text) {
        char *body = NULL;
        size_t len = 0;
        FUZZ_CHECK(relay_cb_form_inbound(q.from, q.text, q.text_len, q.smsc, q.ts ? q.ts : 1, &body, &len) == SP_OK);
        static got g;
        memset(&g, 0, sizeof g);
        rc = sp_callback_parse((const uint8_t *)body, len, SP_CALLBACK_FORMAT_KANNEL, collect, &g, NULL);
        if (rc == SP_OK) {
            FUZZ_CHECK(g.n == 1 && g.ev.kind == SP_CALLBACK_INBOUND);
            FUZZ_CHECK(strcmp(g.from, q.from) == 0 && strcmp(g.text, q.text) == 0);
        }
        relay_wiped_free(body, len);
        if (q.meta[0]) {
            rc = relay_cb_sms("replied", q.meta, 1714000000, 0, q.text, &body, &len);
            FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_INVALID_ARGUMENT);
            if (rc == SP_OK) {
                memset(&g, 0, sizeof g);
                rc = sp_callback_parse((const uint8_t *)body, len, SP_CALLBACK_FORMAT_SMS, collect, &g, NULL);
                if (rc == SP_OK) FUZZ_CHECK(g.n == 1 && strcmp(g.text, q.text) == 0 && strcmp(g.ev.message_id, q.meta) == 0);
                relay_wiped_free(body, len);
            }
        }
    }
    relay_kannel_query_wipe(&q);
    free(query);
    return 0;
}
