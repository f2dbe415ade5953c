/*
 * Fuzz target for provider channels (sp_channel_parse and friends,
 * src/sender/channel.c).
 *
 * A channel document comes from an admin or tenant API call, so the
 * parser sees arbitrary JSON. Checked:
 *   - a refusal is SP_ERR_BAD_CONFIG, SP_ERR_BAD_JSON or SP_ERR_TOO_LARGE
 *     with a non-empty message, and leaves no channel behind;
 *   - an accepted channel splits into a public and a secrets document, the
 *     public one has no secret member, and the two rebuild a channel whose
 *     public document is byte-identical (the canonical form is a fixed
 *     point);
 *   - it renders a message with every field present: a JSON body parses
 *     with jansson (an object, or {"<array key>":[…]} holding n records
 *     when batched), a form body or query string uses only the form
 *     alphabet and its separators; and a buffer one byte short fails with
 *     the same length.
 */
#include "fuzz_util.h"

#include "sealpost/channel.h"

FUZZ_INITIALIZE_LIBRARY()

static char *fuzz_doc(sp_error (*fn)(const sp_channel *, char *, size_t, size_t *), const sp_channel *ch,
                      size_t *len) {
    size_t need = 0;
    FUZZ_CHECK(fn(ch, NULL, 0, &need) == SP_ERR_BUFFER_TOO_SMALL);
    char *out = fuzz_alloc(need + 1);
    FUZZ_CHECK(fn(ch, out, need + 1, len) == SP_OK && *len == need);
    return out;
}

static bool fuzz_form_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '*' || c == '-' ||
           c == '.' || c == '_' || c == '%' || c == '+' || c == '&' || c == '=';
}

static sp_channel_value fuzz_val(const char *s) {
    sp_channel_value v = {s, strlen(s)};
    return v;
}

static void fuzz_check_render(const sp_channel *ch) {
    sp_channel_value custom[SP_CHANNEL_MAX_CUSTOM];
    for (size_t i = 0; i < SP_CHANNEL_MAX_CUSTOM; i++) custom[i] = fuzz_val(i % 2 ? "c\"u&s t" : "");
    /* zeroed: a field left out must read as absent, not as stack garbage */
    sp_channel_message m[3];
    memset(m, 0, sizeof m);
    for (size_t i = 0; i < 3; i++) {
        m[i].to = fuzz_val("+14155550100");
        m[i].body = fuzz_val("Hi \"there\" & <b>caf\xc3\xa9</b>\n\\");
        m[i].message_id = fuzz_val("3f0b8c1e-5d2a-4c7e-9b1f-0a2d4e6f8a1c");
        m[i].campaign_id = fuzz_val("c-1");
        m[i].subject = fuzz_val("50% = \xe2\x82\xac");
        m[i].html = fuzz_val("<p>x</p>");
        m[i].plaintext = fuzz_val("x\ty");
        m[i].custom = i == 1 ? custom : NULL;
        /* one message brings its own callback URLs, the others fall back to the channel's */
        if (i == 2) {
            m[i].delivery_report_url = fuzz_val("https://cb.example/dlr?a=1&b=\"x\"");
            m[i].inbound_url = fuzz_val("https://cb.example/in");
        }
    }
    size_t batch = sp_channel_batch_size(ch);
    FUZZ_CHECK(batch >= 1 && batch <= SP_CHANNEL_MAX_BATCH);
    size_t n = batch >= 3 ? 3 : 1;
    size_t need = 0;
    sp_error rc = sp_channel_render(ch, m, n, NULL, 0, &need);
    /* only a form with no fields renders to nothing */
    FUZZ_CHECK(rc == SP_ERR_BUFFER_TOO_SMALL || (rc == SP_OK && need == 0 &&
                                                 sp_channel_get_body_type(ch) == SP_CHANNEL_BODY_FORM));
    if (need == 0) return;
    char *out = fuzz_alloc(need);
    size_t len = 0;
    FUZZ_CHECK(sp_channel_render(ch, m, n, out, need, &len) == SP_OK && len == need);
    if (sp_channel_get_body_type(ch) == SP_CHANNEL_BODY_JSON) {
        json_error_t jerr;
        json_t *doc = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
        FUZZ_CHECK(json_is_object(doc));
        const char *key = sp_channel_batch_key(ch);
        if (batch > 1) {
            FUZZ_CHECK(key != NULL && json_object_size(doc) == 1);
            FUZZ_CHECK(json_array_size(json_object_get(doc, key)) == n);
        }
        json_decref(doc);
    } else {
        for (size_t i = 0; i < len; i++) FUZZ_CHECK(fuzz_form_char(out[i]));
    }
    len = 0;
    FUZZ_CHECK(sp_channel_render(ch, m, n, out, need - 1, &len) == SP_ERR_BUFFER_TOO_SMALL && len == need);
    free(out);
    /* one past the batch size is refused */
    FUZZ_CHECK(batch == SP_CHANNEL_MAX_BATCH || sp_channel_render(ch, m, batch + 1, NULL, 0, &len) ==
                                                    SP_ERR_INVALID_ARGUMENT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup(data, size);
    char err[SP_CHANNEL_ERR_CAP];
    sp_channel *ch = NULL;
    sp_error rc = sp_channel_parse(text, size, &ch, err, sizeof err);
    if (rc != SP_OK) {
        FUZZ_CHECK(ch == NULL);
        FUZZ_CHECK(rc == SP_ERR_BAD_CONFIG || rc == SP_ERR_BAD_JSON || rc == SP_ERR_TOO_LARGE);
        FUZZ_CHECK(err[0] != 0 && strlen(err) < sizeof err);
        free(text);
        return 0;
    }
    size_t plen = 0, slen = 0;
    char *pub = fuzz_doc(sp_channel_public_json, ch, &plen);
    char *sec = fuzz_doc(sp_channel_secrets_json, ch, &slen);
    json_error_t jerr;
    json_t *pdoc = json_loadb(pub, plen, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(pdoc != NULL);
    json_t *auth = json_object_get(pdoc, "auth");
    FUZZ_CHECK(json_object_get(auth, "password") == NULL && json_object_get(auth, "client_secret") == NULL);
    json_decref(pdoc);

    sp_channel *back = NULL;
    rc = sp_channel_parse_stored(pub, plen, sec, slen, &back, err, sizeof err);
    if (rc != SP_OK) fprintf(stderr, "stored parse: %s\n", err);
    FUZZ_CHECK(rc == SP_OK);
    size_t plen2 = 0;
    char *pub2 = fuzz_doc(sp_channel_public_json, back, &plen2);
    FUZZ_CHECK(plen2 == plen && memcmp(pub, pub2, plen) == 0);
    free(pub2);
    sp_channel_free(back);

    fuzz_check_render(ch);
    free(pub);
    free(sec);
    sp_channel_free(ch);
    free(text);
    return 0;
}
