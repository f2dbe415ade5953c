/*
 * The body shared by the three callback fuzz targets (fuzz_callback_sms.c,
 * fuzz_callback_email.c, fuzz_callback_kannel.c), which differ only in the
 * format they force and the kinds they allow. Before including it a target
 * defines FUZZ_FORMAT, FUZZ_AUTO_BYTE (the first byte that makes AUTO pick
 * the same format, 0 for "neither '[' nor '{'"), fuzz_kind_ok(), and
 * optionally FUZZ_EXTRA(body, size), run last on a writable copy.
 */
#ifndef SEALPOST_FUZZ_CALLBACK_H
#define SEALPOST_FUZZ_CALLBACK_H

typedef struct {
    size_t calls;
    size_t fail_at;
} fuzz_count;

static bool fuzz_utf8(const uint8_t *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        size_t n = c < 0x80                  ? 0
                   : c >= 0xc2 && c <= 0xdf ? 1
                   : c >= 0xe0 && c <= 0xef ? 2
                   : c >= 0xf0 && c <= 0xf4 ? 3
                                            : 9; /* 9: not a lead byte */
        if (c == 0 || n == 9 || len - i - 1 < n) return false;
        for (size_t k = 1; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80) return false;
        i += n + 1;
    }
    return true;
}

static sp_error fuzz_event(void *arg, const sp_callback_event *e) {
    fuzz_count *c = arg;
    c->calls++;
    FUZZ_CHECK(fuzz_kind_ok(e->kind));
    FUZZ_CHECK(sp_callback_event_name(e->kind)[0] != 0);
    size_t id_len = strnlen(e->message_id, sizeof e->message_id);
    FUZZ_CHECK(id_len < sizeof e->message_id);
    FUZZ_CHECK(id_len > 0 || e->kind == SP_CALLBACK_INBOUND);
    for (size_t i = 0; i < id_len; i++) {
        char ch = e->message_id[i];
        FUZZ_CHECK((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                   ch == '.' || ch == ':' || ch == '-');
    }
    FUZZ_CHECK(e->ts_ms >= 0 && e->ts_ms < ((int64_t)1 << 41));
    FUZZ_CHECK(e->code >= 0 && e->code <= 99999);
    bool has_text = e->kind == SP_CALLBACK_REPLIED || e->kind == SP_CALLBACK_INBOUND;
    if (has_text) {
        FUZZ_CHECK(e->text != NULL && e->text_len <= SP_CALLBACK_MAX_TEXT);
        FUZZ_CHECK(fuzz_utf8((const uint8_t *)e->text, e->text_len));
        FUZZ_CHECK(e->opt_out == sp_callback_is_opt_out(e->text, e->text_len));
    } else {
        FUZZ_CHECK(e->text == NULL && e->text_len == 0 && !e->opt_out);
    }
    if (e->kind == SP_CALLBACK_INBOUND) {
        FUZZ_CHECK(e->from != NULL && e->from_len > 0 && e->from_len <= SP_CALLBACK_MAX_FROM);
        for (size_t i = 0; i < e->from_len; i++) FUZZ_CHECK(e->from[i] >= 0x20 && e->from[i] <= 0x7e);
    } else {
        FUZZ_CHECK(e->from == NULL && e->from_len == 0);
    }
    if (c->fail_at != 0 && c->calls == c->fail_at) return SP_ERR_STORE;
    return SP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *body = fuzz_dup(data, size);
    fuzz_count c = {0, 0};
    size_t n = 99;
    sp_error rc = sp_callback_parse(body, size, FUZZ_FORMAT, fuzz_event, &c, &n);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_BAD_CALLBACK || rc == SP_ERR_TOO_LARGE);
        FUZZ_CHECK(c.calls == 0 && n == 0);
    } else {
        FUZZ_CHECK(c.calls == n && n <= SP_CALLBACK_MAX_EVENTS);
        FUZZ_CHECK(FUZZ_FORMAT != SP_CALLBACK_FORMAT_KANNEL || n == 1);
    }

    size_t start = 0;
    while (start < size && (body[start] == ' ' || body[start] == '\t' || body[start] == '\n' || body[start] == '\r'))
        start++;
    bool auto_same = FUZZ_AUTO_BYTE != 0 ? start < size && body[start] == FUZZ_AUTO_BYTE
                                         : start < size && body[start] != '[' && body[start] != '{';
    if (auto_same) {
        fuzz_count a = {0, 0};
        size_t an = 99;
        FUZZ_CHECK(sp_callback_parse(body, size, SP_CALLBACK_FORMAT_AUTO, fuzz_event, &a, &an) == rc);
        FUZZ_CHECK(an == n && a.calls == c.calls);
    }

    if (rc == SP_OK && n > 0) {
        fuzz_count f = {0, 1 + (size > 0 ? data[size - 1] : 0) % n};
        size_t fn_n = 0;
        FUZZ_CHECK(sp_callback_parse(body, size, FUZZ_FORMAT, fuzz_event, &f, &fn_n) == SP_ERR_STORE);
        FUZZ_CHECK(f.calls == f.fail_at && fn_n == n);
    }
#ifdef FUZZ_EXTRA
    FUZZ_EXTRA(body, size);
#endif
    free(body);
    return 0;
}

#endif
