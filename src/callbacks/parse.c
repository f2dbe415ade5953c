/*
 * Callback bodies (include/sealpost/callback.h, docs/PROTOCOL.md §10.4):
 * CleverTap-style SMS and e-mail JSON, and Kannel-style form bodies, read
 * into sp_callback_events.
 *
 * Every body is read twice. The first pass checks all of it and counts its
 * events without handing out anything; only when it succeeds does the
 * second pass walk the same (already checked, unchanged) input again and
 * call fn per event. Both passes run the same item reader, so they cannot
 * disagree, and the parser needs no list of events: a one-event body costs
 * jansson's allocations and nothing more, and a form body none at all.
 *
 * JSON goes through a byte pre-scan before jansson sees it, bounding the
 * nesting depth and the number of values, so that members the parser
 * ignores cannot make the decoder build a tree many times larger than the
 * events need. Duplicate members, invalid UTF-8, NULs and every other
 * decoding failure are refused by jansson (sp_json_load).
 *
 * A reply's text stays inside jansson's tree, freed through the library's
 * wiping allocator; a form body's decoded text and sender live in a stack
 * scratch area that is wiped before returning. Nothing of a body ever
 * reaches a log or an error message.
 */
#include <jansson.h>

#include "core/sp_core.h"
#include "sealpost/callback.h"

/* Seconds above this are milliseconds (docs/PROTOCOL.md §10.4). */
#define SP_CB_MS_THRESHOLD 100000000000ull
/* Times at or past 2^41 ms (year 2039) are refused: beyond any plausible
 * report, and far from int64 overflow in whatever the caller adds. */
#define SP_CB_MAX_TS_MS (1ull << 41)

/* ---- shared field checks ---- */

static bool sp_cb_meta_ok(const char *s, size_t len) {
    if (len == 0 || len > SP_CALLBACK_MAX_MESSAGE_ID) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

/* Printable ASCII, space included. */
static bool sp_cb_printable(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e) return false;
    }
    return true;
}

/* Well-formed UTF-8 without NUL: no overlong forms, surrogates or code
 * points past U+10FFFF. JSON strings are that already (jansson); form
 * values are held to the same, so a caller gets the same kind of text from
 * every format. */
static bool sp_cb_utf8_ok(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (len - i - 1 < n) return false;
        for (size_t k = 1; k <= n; k++) {
            uint8_t d = s[i + k];
            if ((d & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* Seconds, or milliseconds above 10^11, to milliseconds. */
static sp_error sp_cb_ts_from(uint64_t v, int64_t *ts_ms) {
    uint64_t ms = v > SP_CB_MS_THRESHOLD ? v : v * 1000u; /* v <= 10^11: no overflow */
    SP_ENSURE(ms < SP_CB_MAX_TS_MS, SP_ERR_BAD_CALLBACK);
    *ts_ms = (int64_t)ms;
    return SP_OK;
}

static sp_error sp_cb_digits(const char *s, size_t len, uint64_t max, uint64_t *out) {
    SP_ENSURE(sp_parse_u64(s, len, max, out) == SP_OK, SP_ERR_BAD_CALLBACK);
    return SP_OK;
}

/* ---- JSON ---- */

/* Bounds depth and value count before jansson builds anything. Strings are
 * skipped with their escapes, exactly as a JSON lexer reads them up to the
 * first error, and jansson stops at that error, so the counts bound what it
 * would build. */
static sp_error sp_cb_json_prescan(const uint8_t *p, size_t len) {
    size_t depth = 0, values = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"': in_string = true; break;
        case '[':
        case '{':
            SP_ENSURE(++depth <= SP_CALLBACK_MAX_DEPTH, SP_ERR_BAD_CALLBACK);
            SP_ENSURE(++values <= SP_CALLBACK_MAX_JSON_VALUES, SP_ERR_TOO_LARGE);
            break;
        case ']':
        case '}':
            SP_ENSURE(depth > 0, SP_ERR_BAD_CALLBACK);
            depth--;
            break;
        case ',': SP_ENSURE(++values <= SP_CALLBACK_MAX_JSON_VALUES, SP_ERR_TOO_LARGE); break;
        default: break;
        }
    }
    return SP_OK;
}

/* An optional string member of at most max bytes; *s NULL when absent. */
static sp_error sp_cb_json_str(json_t *obj, const char *key, size_t max, const char **s, size_t *len) {
    json_t *v = json_object_get(obj, key);
    *s = NULL;
    *len = 0;
    if (v == NULL) return SP_OK;
    SP_ENSURE(json_is_string(v), SP_ERR_BAD_CALLBACK);
    *len = json_string_length(v);
    SP_ENSURE(*len <= max, SP_ERR_BAD_CALLBACK);
    *s = json_string_value(v);
    return SP_OK;
}

/* An optional member that is a non-negative integer or a string of digits,
 * at most max; *present false when absent. */
static sp_error sp_cb_json_uint(json_t *obj, const char *key, uint64_t max, bool *present, uint64_t *out) {
    json_t *v = json_object_get(obj, key);
    *present = v != NULL;
    *out = 0;
    if (v == NULL) return SP_OK;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        SP_ENSURE(i >= 0 && (uint64_t)i <= max, SP_ERR_BAD_CALLBACK);
        *out = (uint64_t)i;
        return SP_OK;
    }
    SP_ENSURE(json_is_string(v), SP_ERR_BAD_CALLBACK);
    return sp_cb_digits(json_string_value(v), json_string_length(v), max, out);
}

/* The members every JSON item shares: meta, ts, code, description, url.
 * Clears *ev first, so a second pass hands out exactly the same event. */
static sp_error sp_cb_json_common(json_t *item, sp_callback_event_kind kind, sp_callback_event *ev) {
    SP_ENSURE(json_is_object(item), SP_ERR_BAD_CALLBACK);
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;

    const char *s;
    size_t len;
    SP_GUARD(sp_cb_json_str(item, "meta", SP_CALLBACK_MAX_MESSAGE_ID, &s, &len));
    SP_ENSURE(s != NULL && sp_cb_meta_ok(s, len), SP_ERR_BAD_CALLBACK);
    memcpy(ev->message_id, s, len);

    bool present;
    uint64_t v;
    SP_GUARD(sp_cb_json_uint(item, "ts", INT64_MAX, &present, &v));
    if (present) SP_GUARD(sp_cb_ts_from(v, &ev->ts_ms));
    SP_GUARD(sp_cb_json_uint(item, "code", SP_CALLBACK_MAX_CODE, &present, &v));
    ev->code = (int)v;

    SP_GUARD(sp_cb_json_str(item, "description", SP_CALLBACK_MAX_DESCRIPTION, &s, &len));
    SP_GUARD(sp_cb_json_str(item, "url", SP_CALLBACK_MAX_URL, &s, &len));
    return SP_OK;
}

/* Where the events of one body go: counted only (fn NULL, the checking
 * pass) or handed to fn (the second pass). */
typedef struct sp_cb_sink {
    sp_callback_event_fn fn;
    void *arg;
    size_t count;
} sp_cb_sink;

static sp_error sp_cb_emit(sp_cb_sink *sink, const sp_callback_event *ev) {
    if (sink->fn == NULL) {
        SP_ENSURE(sink->count < SP_CALLBACK_MAX_EVENTS, SP_ERR_TOO_LARGE);
        sink->count++;
        return SP_OK;
    }
    sink->count++;
    return sink->fn(sink->arg, ev);
}

typedef struct sp_cb_name {
    const char *name;
    sp_callback_event_kind kind;
} sp_cb_name;

static const sp_cb_name sp_cb_sms_names[] = {
    {"delivered", SP_CALLBACK_DELIVERED},
    {"failed", SP_CALLBACK_FAILED},
    {"clicked", SP_CALLBACK_CLICKED},
    {"replied", SP_CALLBACK_REPLIED},
};
static const sp_cb_name sp_cb_email_success[] = {
    {"delivered", SP_CALLBACK_DELIVERED},
    {"opened", SP_CALLBACK_OPENED},
    {"open", SP_CALLBACK_OPENED},
    {"viewed", SP_CALLBACK_OPENED},
    {"clicked", SP_CALLBACK_CLICKED},
};
static const sp_cb_name sp_cb_email_failed[] = {
    {"hard_bounce", SP_CALLBACK_HARD_BOUNCE},
    {"soft_bounce", SP_CALLBACK_SOFT_BOUNCE},
    {"unsubscribed", SP_CALLBACK_UNSUBSCRIBED},
    {"spam", SP_CALLBACK_SPAM},
};

/* The kind a required "event" member names in the table, case-sensitively. */
static sp_error sp_cb_event_kind(json_t *obj, const sp_cb_name *names, size_t n, sp_callback_event_kind *kind) {
    json_t *v = json_object_get(obj, "event");
    SP_ENSURE(json_is_string(v), SP_ERR_BAD_CALLBACK);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    for (size_t i = 0; i < n; i++) {
        if (strlen(names[i].name) == len && memcmp(names[i].name, s, len) == 0) {
            *kind = names[i].kind;
            return SP_OK;
        }
    }
    return SP_ERR_BAD_CALLBACK;
}

static sp_error sp_cb_sms_item(json_t *item, sp_callback_event_kind kind, sp_callback_event *ev) {
    SP_GUARD(sp_cb_json_common(item, kind, ev));
    const char *text, *from;
    size_t text_len, from_len;
    SP_GUARD(sp_cb_json_str(item, "incomingText", SP_CALLBACK_MAX_TEXT, &text, &text_len));
    /* a sender is checked and dropped: the contract hands one out for
     * INBOUND only, and the SMS format has no inbound event */
    SP_GUARD(sp_cb_json_str(item, "from", SP_CALLBACK_MAX_FROM, &from, &from_len));
    if (from != NULL) SP_ENSURE(sp_cb_printable(from, from_len), SP_ERR_BAD_CALLBACK);
    if (kind == SP_CALLBACK_REPLIED) {
        SP_ENSURE(text != NULL, SP_ERR_BAD_CALLBACK);
        ev->text = text;
        ev->text_len = text_len;
        ev->opt_out = sp_callback_is_opt_out(text, text_len);
    }
    return SP_OK;
}

static sp_error sp_cb_sms(json_t *root, sp_cb_sink *sink) {
    SP_ENSURE(json_is_array(root), SP_ERR_BAD_CALLBACK);
    sp_callback_event ev;
    size_t ngroups = json_array_size(root);
    for (size_t g = 0; g < ngroups; g++) {
        json_t *group = json_array_get(root, g);
        SP_ENSURE(json_is_object(group), SP_ERR_BAD_CALLBACK);
        sp_callback_event_kind kind;
        SP_GUARD(sp_cb_event_kind(group, sp_cb_sms_names, SP_ARRAY_LEN(sp_cb_sms_names), &kind));
        json_t *data = json_object_get(group, "data");
        SP_ENSURE(json_is_array(data), SP_ERR_BAD_CALLBACK);
        size_t n = json_array_size(data);
        for (size_t i = 0; i < n; i++) {
            SP_GUARD(sp_cb_sms_item(json_array_get(data, i), kind, &ev));
            SP_GUARD(sp_cb_emit(sink, &ev));
        }
    }
    return SP_OK;
}

static sp_error sp_cb_email_list(json_t *list, const sp_cb_name *names, size_t nnames, sp_cb_sink *sink) {
    if (list == NULL) return SP_OK;
    SP_ENSURE(json_is_array(list), SP_ERR_BAD_CALLBACK);
    sp_callback_event ev;
    size_t n = json_array_size(list);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(list, i);
        SP_ENSURE(json_is_object(item), SP_ERR_BAD_CALLBACK);
        sp_callback_event_kind kind;
        SP_GUARD(sp_cb_event_kind(item, names, nnames, &kind));
        SP_GUARD(sp_cb_json_common(item, kind, &ev));
        SP_GUARD(sp_cb_emit(sink, &ev));
    }
    return SP_OK;
}

static sp_error sp_cb_email(json_t *root, sp_cb_sink *sink) {
    SP_ENSURE(json_is_object(root), SP_ERR_BAD_CALLBACK);
    json_t *version = json_object_get(root, "version");
    SP_ENSURE(json_is_string(version) && json_string_length(version) == 2 &&
                  memcmp(json_string_value(version), "v2", 2) == 0,
              SP_ERR_BAD_CALLBACK);
    json_t *events = json_object_get(root, "events");
    SP_ENSURE(json_is_object(events), SP_ERR_BAD_CALLBACK);
    json_t *success = json_object_get(events, "success"), *failed = json_object_get(events, "failed");
    /* a list name this parser does not know could hold events it would lose */
    SP_ENSURE(json_object_size(events) == (size_t)(success != NULL) + (size_t)(failed != NULL),
              SP_ERR_BAD_CALLBACK);
    SP_GUARD(sp_cb_email_list(success, sp_cb_email_success, SP_ARRAY_LEN(sp_cb_email_success), sink));
    return sp_cb_email_list(failed, sp_cb_email_failed, SP_ARRAY_LEN(sp_cb_email_failed), sink);
}

/* ---- form (Kannel) ---- */

/* Decoded fields of one form body. The text and sender are the user's, so
 * they (and the scratch values went through) are wiped before the parser
 * returns; only the parts used, since a body is parsed 20,000 times a
 * second. */
typedef struct sp_cb_form {
    char keys[SP_CALLBACK_MAX_FORM_FIELDS][SP_CALLBACK_MAX_FORM_KEY];
    size_t key_lens[SP_CALLBACK_MAX_FORM_FIELDS];
    size_t nkeys;
    bool has_type, has_meta, has_ts, has_code, has_from, has_text;
    uint64_t type, ts, code;
    char meta[SP_CALLBACK_MAX_MESSAGE_ID + 1];
    size_t meta_len;
    char from[SP_CALLBACK_MAX_FROM + 1];
    size_t from_len;
    char text[SP_CALLBACK_MAX_TEXT + 1];
    size_t text_len;
    char scratch[SP_CALLBACK_MAX_FORM_VALUE];
    size_t scratch_used; /* the most of scratch any value filled, to wipe */
} sp_cb_form;

static int sp_cb_hex(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* application/x-www-form-urlencoded decoding ('+' is a space, %XX a byte)
 * into at most cap bytes. Raw bytes must be visible ASCII: a space, a
 * control byte or a non-ASCII byte in the body is not form encoding. */
static sp_error sp_cb_form_decode(sp_span in, char *out, size_t cap, size_t *out_len, size_t *used) {
    sp_cursor c = sp_cursor_of(in.data, in.len);
    size_t n = 0;
    while (sp_cursor_left(&c) > 0) {
        uint8_t b = c.data[c.pos++];
        SP_ENSURE(b >= 0x21 && b <= 0x7e, SP_ERR_BAD_CALLBACK);
        if (b == '+') {
            b = ' ';
        } else if (b == '%') {
            SP_ENSURE(sp_cursor_left(&c) >= 2, SP_ERR_BAD_CALLBACK);
            int hi = sp_cb_hex(c.data[c.pos]), lo = sp_cb_hex(c.data[c.pos + 1]);
            SP_ENSURE(hi >= 0 && lo >= 0, SP_ERR_BAD_CALLBACK);
            c.pos += 2;
            b = (uint8_t)(hi * 16 + lo);
        }
        SP_ENSURE(n < cap, SP_ERR_BAD_CALLBACK);
        out[n++] = (char)b;
        if (used != NULL && n > *used) *used = n;
    }
    *out_len = n;
    return SP_OK;
}

static sp_error sp_cb_form_uint(sp_cb_form *f, sp_span value, uint64_t max, bool *present, uint64_t *out) {
    size_t len;
    SP_GUARD(sp_cb_form_decode(value, f->scratch, 20, &len, &f->scratch_used));
    SP_GUARD(sp_cb_digits(f->scratch, len, max, out));
    *present = true;
    return SP_OK;
}

static bool sp_cb_key_is(const char *key, size_t len, const char *want) {
    return strlen(want) == len && memcmp(key, want, len) == 0;
}

static sp_error sp_cb_form_pair(sp_cb_form *f, sp_span pair) {
    sp_cursor pc = sp_cursor_of(pair.data, pair.len);
    sp_span key_raw, value;
    if (sp_cursor_take_until(&pc, '=', &key_raw)) {
        value = sp_cursor_rest(&pc);
    } else {
        key_raw = pair; /* "key" alone is "key=" */
        value.data = pair.data + pair.len;
        value.len = 0;
    }
    SP_ENSURE(f->nkeys < SP_CALLBACK_MAX_FORM_FIELDS, SP_ERR_BAD_CALLBACK);
    char *key = f->keys[f->nkeys];
    size_t klen;
    SP_GUARD(sp_cb_form_decode(key_raw, key, SP_CALLBACK_MAX_FORM_KEY, &klen, NULL));
    SP_ENSURE(klen > 0, SP_ERR_BAD_CALLBACK);
    for (size_t i = 0; i < klen; i++) SP_ENSURE(key[i] >= 0x21 && key[i] <= 0x7e, SP_ERR_BAD_CALLBACK);
    /* duplicates are compared decoded, so "me%74a" repeats "meta" */
    for (size_t i = 0; i < f->nkeys; i++) {
        SP_ENSURE(!(f->key_lens[i] == klen && memcmp(f->keys[i], key, klen) == 0), SP_ERR_BAD_CALLBACK);
    }
    f->key_lens[f->nkeys++] = klen;

    size_t len;
    if (sp_cb_key_is(key, klen, "type")) {
        SP_GUARD(sp_cb_form_uint(f, value, 31, &f->has_type, &f->type));
        /* a status must carry at least one of Kannel's five bits */
        SP_ENSURE(f->type != 0, SP_ERR_BAD_CALLBACK);
    } else if (sp_cb_key_is(key, klen, "meta")) {
        SP_GUARD(sp_cb_form_decode(value, f->meta, SP_CALLBACK_MAX_MESSAGE_ID, &f->meta_len, NULL));
        SP_ENSURE(sp_cb_meta_ok(f->meta, f->meta_len), SP_ERR_BAD_CALLBACK);
        f->meta[f->meta_len] = 0;
        f->has_meta = true;
    } else if (sp_cb_key_is(key, klen, "ts")) {
        SP_GUARD(sp_cb_form_uint(f, value, INT64_MAX, &f->has_ts, &f->ts));
    } else if (sp_cb_key_is(key, klen, "code")) {
        SP_GUARD(sp_cb_form_uint(f, value, SP_CALLBACK_MAX_CODE, &f->has_code, &f->code));
    } else if (sp_cb_key_is(key, klen, "smsc")) {
        SP_GUARD(sp_cb_form_decode(value, f->scratch, SP_CALLBACK_MAX_SMSC, &len, &f->scratch_used));
        SP_ENSURE(sp_cb_printable(f->scratch, len), SP_ERR_BAD_CALLBACK);
    } else if (sp_cb_key_is(key, klen, "reply")) {
        SP_GUARD(sp_cb_form_decode(value, f->scratch, SP_CALLBACK_MAX_REPLY, &len, &f->scratch_used));
        SP_ENSURE(sp_cb_utf8_ok((const uint8_t *)f->scratch, len), SP_ERR_BAD_CALLBACK);
    } else if (sp_cb_key_is(key, klen, "from")) {
        SP_GUARD(sp_cb_form_decode(value, f->from, SP_CALLBACK_MAX_FROM, &f->from_len, NULL));
        SP_ENSURE(f->from_len > 0 && sp_cb_printable(f->from, f->from_len), SP_ERR_BAD_CALLBACK);
        f->from[f->from_len] = 0;
        f->has_from = true;
    } else if (sp_cb_key_is(key, klen, "text")) {
        SP_GUARD(sp_cb_form_decode(value, f->text, SP_CALLBACK_MAX_TEXT, &f->text_len, NULL));
        SP_ENSURE(sp_cb_utf8_ok((const uint8_t *)f->text, f->text_len), SP_ERR_BAD_CALLBACK);
        f->text[f->text_len] = 0;
        f->has_text = true;
    } else {
        /* ignored, but still well-formed and bounded */
        SP_GUARD(sp_cb_form_decode(value, f->scratch, SP_CALLBACK_MAX_FORM_VALUE, &len, &f->scratch_used));
    }
    return SP_OK;
}

static sp_error sp_cb_form_read(const uint8_t *body, size_t len, sp_cb_form *f, sp_callback_event *ev) {
    sp_cursor c = sp_cursor_of(body, len);
    while (sp_cursor_left(&c) > 0) {
        sp_span pair;
        if (!sp_cursor_take_until(&c, '&', &pair)) pair = sp_cursor_rest(&c);
        if (pair.len == 0) continue; /* "a=1&&b=2" and a trailing '&' */
        SP_GUARD(sp_cb_form_pair(f, pair));
    }

    memset(ev, 0, sizeof *ev);
    if (f->has_type) {
        SP_ENSURE(f->has_meta, SP_ERR_BAD_CALLBACK);
        if (f->type & 1u)
            ev->kind = SP_CALLBACK_DELIVERED;
        else if (f->type & (2u | 16u))
            ev->kind = SP_CALLBACK_FAILED;
        else
            ev->kind = SP_CALLBACK_BUFFERED;
    } else {
        SP_ENSURE(f->has_from && f->has_text, SP_ERR_BAD_CALLBACK);
        ev->kind = f->has_meta ? SP_CALLBACK_REPLIED : SP_CALLBACK_INBOUND;
        ev->text = f->text;
        ev->text_len = f->text_len;
        ev->opt_out = sp_callback_is_opt_out(f->text, f->text_len);
        if (ev->kind == SP_CALLBACK_INBOUND) {
            ev->from = f->from;
            ev->from_len = f->from_len;
        }
    }
    if (f->has_meta) memcpy(ev->message_id, f->meta, f->meta_len + 1);
    if (f->has_ts) SP_GUARD(sp_cb_ts_from(f->ts, &ev->ts_ms));
    ev->code = (int)f->code;
    return SP_OK;
}

static sp_error sp_cb_form_parse(const uint8_t *body, size_t len, sp_callback_event_fn fn, void *arg,
                                 size_t *n_events) {
    /* a trailing newline from a shell or a file is not part of the form */
    while (len > 0 && (body[len - 1] == ' ' || body[len - 1] == '\t' || body[len - 1] == '\n' ||
                       body[len - 1] == '\r'))
        len--;
    SP_ENSURE(len > 0, SP_ERR_BAD_CALLBACK);
    sp_cb_form f;
    f.nkeys = 0;
    f.has_type = f.has_meta = f.has_ts = f.has_code = f.has_from = f.has_text = false;
    f.type = f.ts = f.code = 0;
    f.meta_len = f.from_len = f.text_len = f.scratch_used = 0;
    sp_callback_event ev;
    sp_error rc = sp_cb_form_read(body, len, &f, &ev);
    if (rc == SP_OK) {
        if (n_events != NULL) *n_events = 1;
        rc = fn(arg, &ev);
    }
    /* the user's words and number, and whatever else a value held; keys
     * and the message id are not theirs */
    sp_wipe(f.text, sizeof f.text);
    sp_wipe(f.from, sizeof f.from);
    sp_wipe(f.scratch, f.scratch_used);
    return rc;
}

/* ---- entry points ---- */

static bool sp_cb_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

sp_error sp_callback_parse(const uint8_t *body, size_t body_len, sp_callback_format format,
                           sp_callback_event_fn fn, void *arg, size_t *n_events) {
    if (n_events != NULL) *n_events = 0;
    SP_ENSURE(fn != NULL && (body != NULL || body_len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(format >= SP_CALLBACK_FORMAT_AUTO && format <= SP_CALLBACK_FORMAT_KANNEL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(body_len <= SP_CALLBACK_MAX_BODY, SP_ERR_TOO_LARGE);
    size_t start = 0;
    while (start < body_len && sp_cb_space(body[start])) start++;
    SP_ENSURE(start < body_len, SP_ERR_BAD_CALLBACK);
    if (format == SP_CALLBACK_FORMAT_AUTO) {
        format = body[start] == '[' ? SP_CALLBACK_FORMAT_SMS
                 : body[start] == '{' ? SP_CALLBACK_FORMAT_EMAIL_V2
                                      : SP_CALLBACK_FORMAT_KANNEL;
    }
    if (format == SP_CALLBACK_FORMAT_KANNEL) return sp_cb_form_parse(body + start, body_len - start, fn, arg, n_events);

    sp_cb_sink check = {NULL, NULL, 0};
    SP_GUARD(sp_cb_json_prescan(body, body_len));
    json_t *root = NULL;
    SP_GUARD(sp_json_load(body, body_len, SP_ERR_BAD_CALLBACK, &root));
    sp_error (*walk)(json_t *, sp_cb_sink *) = format == SP_CALLBACK_FORMAT_SMS ? sp_cb_sms : sp_cb_email;
    sp_error rc = walk(root, &check);
    if (rc == SP_OK) {
        if (n_events != NULL) *n_events = check.count;
        sp_cb_sink give = {fn, arg, 0};
        rc = walk(root, &give);
    }
    json_decref(root);
    return rc;
}

bool sp_callback_is_opt_out(const char *text, size_t len) {
    static const char *const keywords[] = {
        "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "opt-out", "opt out", "revoke",
    };
    if (text == NULL) return false;
    const unsigned char *s = (const unsigned char *)text;
    while (len > 0 && (sp_cb_space(*s) || *s == '\v' || *s == '\f')) {
        s++;
        len--;
    }
    while (len > 0) {
        unsigned char c = s[len - 1];
        if (!(sp_cb_space(c) || c == '\v' || c == '\f' || c == '.' || c == '!')) break;
        len--;
    }
    for (size_t i = 0; i < SP_ARRAY_LEN(keywords); i++) {
        if (sp_ascii_ieq((const char *)s, len, keywords[i])) return true;
    }
    /* "STOP please", "stop texting me": trimmed, so something follows */
    return len > 5 && sp_ascii_ieq((const char *)s, 4, "stop") && (s[4] == ' ' || s[4] == '\t');
}

const char *sp_callback_event_name(sp_callback_event_kind kind) {
    switch (kind) {
    case SP_CALLBACK_DELIVERED: return "delivered";
    case SP_CALLBACK_FAILED: return "failed";
    case SP_CALLBACK_HARD_BOUNCE: return "hard_bounce";
    case SP_CALLBACK_SOFT_BOUNCE: return "soft_bounce";
    case SP_CALLBACK_OPENED: return "opened";
    case SP_CALLBACK_CLICKED: return "clicked";
    case SP_CALLBACK_REPLIED: return "replied";
    case SP_CALLBACK_UNSUBSCRIBED: return "unsubscribed";
    case SP_CALLBACK_SPAM: return "spam";
    case SP_CALLBACK_BUFFERED: return "buffered";
    case SP_CALLBACK_INBOUND: return "inbound";
    }
    return "";
}

const char *sp_callback_format_name(sp_callback_format format) {
    switch (format) {
    case SP_CALLBACK_FORMAT_AUTO: return "auto";
    case SP_CALLBACK_FORMAT_SMS: return "sms";
    case SP_CALLBACK_FORMAT_EMAIL_V2: return "email_v2";
    case SP_CALLBACK_FORMAT_KANNEL: return "kannel";
    }
    return "";
}
