/*
 * The relay payload: what a platform's channel template produces once it is
 * filled in and opened (docs/RELAY.md). One record
 *   {"kind":"email"|"sms","message_id":…,"to":…, …}
 * or a batch {"messages":[record,…]} of 1..1000. The whole document is
 * checked before anything is handed on, so a template mistake fails every
 * message the same way instead of half a batch; errors name the record and
 * the field, never a value (values are addresses and message text).
 *
 * Records point into the parsed document; jansson's allocator wipes what it
 * frees (sp_init), so freeing the payload wipes the plaintext.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

bool relay_message_id_valid(const char *s) {
    size_t n = strnlen(s, RELAY_MAX_MESSAGE_ID + 1);
    if (n == 0 || n > RELAY_MAX_MESSAGE_ID) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* local@domain.tld: visible ASCII without the characters that would break a
 * header or an SMTP command. */
static bool address_ok(const char *s) {
    size_t n = strnlen(s, RELAY_MAX_ADDRESS + 1);
    if (n < 5 || n > RELAY_MAX_ADDRESS) return false;
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@')) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>()[],;:\\\"", c)) return false;
    }
    const char *dot = strrchr(at + 1, '.');
    return dot && dot > at + 1 && dot[1] != '\0' && at[1] != '.';
}

static bool phone_ok(const char *s) {
    size_t n = strnlen(s, 32);
    size_t i = s[0] == '+' ? 1 : 0;
    if (n >= 32 || n - i < 3 || n - i > RELAY_MAX_PHONE) return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static bool sender_ok(const char *s) {
    size_t n = strnlen(s, RELAY_MAX_SENDER + 1);
    if (n > RELAY_MAX_SENDER) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' || c == '+' ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* No control bytes (tab allowed when multiline is false too; CR/LF only in
 * bodies). */
static bool text_ok(const char *s, size_t len, bool multiline) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t') continue;
        if (multiline && (c == '\n' || c == '\r')) continue;
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

typedef struct field_rule {
    const char *name;
    unsigned kinds; /* bit 1 email, bit 2 sms */
    size_t offset;
} field_rule;

#define ROFF(f) offsetof(relay_record, f)
static const field_rule rules[] = {
    {"kind", 3, 0},
    {"message_id", 3, ROFF(message_id)},
    {"to", 3, ROFF(to)},
    {"from", 1, ROFF(from)},
    {"from_name", 1, ROFF(from_name)},
    {"reply_to", 1, ROFF(reply_to)},
    {"subject", 1, ROFF(subject)},
    {"html", 1, ROFF(html)},
    {"text", 3, ROFF(text)},
    {"sender", 2, ROFF(sender)},
    {"dlr_url", 3, ROFF(dlr_url)},
    {"inbound_url", 2, ROFF(inbound_url)},
};

static sp_error bad(char *err, size_t cap, size_t index, bool batch, const char *field, const char *why,
                    sp_error rc) {
    if (batch) snprintf(err, cap, "messages[%zu].%s: %s", index, field, why);
    else snprintf(err, cap, "%s: %s", field, why);
    return rc;
}

static sp_error parse_record(json_t *obj, relay_record *r, size_t index, bool batch, char *err, size_t cap) {
    if (!json_is_object(obj)) return bad(err, cap, index, batch, "record", "must be a JSON object", SP_ERR_INVALID_ARGUMENT);
    json_t *kind = json_object_get(obj, "kind");
    if (!json_is_string(kind)) return bad(err, cap, index, batch, "kind", "is required: \"email\" or \"sms\"", SP_ERR_INVALID_ARGUMENT);
    if (strcmp(json_string_value(kind), "email") == 0) r->kind = RELAY_KIND_EMAIL;
    else if (strcmp(json_string_value(kind), "sms") == 0) r->kind = RELAY_KIND_SMS;
    else return bad(err, cap, index, batch, "kind", "must be \"email\" or \"sms\"", SP_ERR_INVALID_ARGUMENT);
    unsigned bit = r->kind == RELAY_KIND_EMAIL ? 1u : 2u;
    for (size_t i = 1; i < sizeof rules / sizeof rules[0]; i++)
        *(const char **)(void *)((char *)r + rules[i].offset) = "";
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        const field_rule *rule = NULL;
        for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
            if (strcmp(rules[i].name, key) == 0) rule = &rules[i];
        if (!rule) {
            char name[80];
            snprintf(name, sizeof name, "%.64s", key);
            return bad(err, cap, index, batch, name, "unknown field", SP_ERR_INVALID_ARGUMENT);
        }
        if (!(rule->kinds & bit))
            return bad(err, cap, index, batch, rule->name,
                       r->kind == RELAY_KIND_EMAIL ? "is an SMS field" : "is an e-mail field", SP_ERR_INVALID_ARGUMENT);
        if (rule->offset == 0) continue;
        if (!json_is_string(value)) return bad(err, cap, index, batch, rule->name, "must be a string", SP_ERR_INVALID_ARGUMENT);
        *(const char **)(void *)((char *)r + rule->offset) = json_string_value(value);
    }
    if (!relay_message_id_valid(r->message_id))
        return bad(err, cap, index, batch, "message_id", "must be 1..64 of A-Z a-z 0-9 _ . : -", SP_ERR_INVALID_ARGUMENT);
    if (r->kind == RELAY_KIND_EMAIL) {
        if (!address_ok(r->to)) return bad(err, cap, index, batch, "to", "must be an address local@domain.tld", SP_ERR_INVALID_ARGUMENT);
        if (!address_ok(r->from)) return bad(err, cap, index, batch, "from", "must be an address local@domain.tld", SP_ERR_INVALID_ARGUMENT);
        if (r->reply_to[0] && !address_ok(r->reply_to))
            return bad(err, cap, index, batch, "reply_to", "must be empty or an address", SP_ERR_INVALID_ARGUMENT);
        size_t n = strlen(r->from_name);
        if (n > RELAY_MAX_NAME) return bad(err, cap, index, batch, "from_name", "longer than 128 bytes", SP_ERR_TOO_LARGE);
        if (!text_ok(r->from_name, n, false)) return bad(err, cap, index, batch, "from_name", "control character", SP_ERR_INVALID_ARGUMENT);
        n = strlen(r->subject);
        if (n > RELAY_MAX_SUBJECT) return bad(err, cap, index, batch, "subject", "longer than 998 bytes", SP_ERR_TOO_LARGE);
        if (!text_ok(r->subject, n, false)) return bad(err, cap, index, batch, "subject", "control character", SP_ERR_INVALID_ARGUMENT);
        size_t hl = strlen(r->html), tl = strlen(r->text);
        if (hl > RELAY_MAX_EMAIL_BODY) return bad(err, cap, index, batch, "html", "longer than 1 MiB", SP_ERR_TOO_LARGE);
        if (tl > RELAY_MAX_EMAIL_BODY) return bad(err, cap, index, batch, "text", "longer than 1 MiB", SP_ERR_TOO_LARGE);
        if (hl == 0 && tl == 0) return bad(err, cap, index, batch, "text", "html or text is required", SP_ERR_INVALID_ARGUMENT);
    } else {
        if (!phone_ok(r->to)) return bad(err, cap, index, batch, "to", "must be a phone number: + and 3..20 digits", SP_ERR_INVALID_ARGUMENT);
        size_t n = strlen(r->text);
        if (n == 0) return bad(err, cap, index, batch, "text", "is required", SP_ERR_INVALID_ARGUMENT);
        if (n > RELAY_MAX_SMS_TEXT) return bad(err, cap, index, batch, "text", "longer than 1600 bytes", SP_ERR_TOO_LARGE);
        if (!sender_ok(r->sender)) return bad(err, cap, index, batch, "sender", "must be 0..20 of A-Z a-z 0-9 space + . _ -", SP_ERR_INVALID_ARGUMENT);
    }
    if (strlen(r->dlr_url) >= RELAY_MAX_URL) return bad(err, cap, index, batch, "dlr_url", "longer than 2047 bytes", SP_ERR_TOO_LARGE);
    if (strlen(r->inbound_url) >= RELAY_MAX_URL) return bad(err, cap, index, batch, "inbound_url", "longer than 2047 bytes", SP_ERR_TOO_LARGE);
    return SP_OK;
}

sp_error relay_payload_parse(const uint8_t *data, size_t len, relay_payload *out, char *err, size_t cap) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    out->doc = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!out->doc) {
        snprintf(err, cap, "payload: not valid JSON (line %d, column %d)", jerr.line, jerr.column);
        return SP_ERR_BAD_JSON;
    }
    sp_error rc = SP_OK;
    if (!json_is_object(out->doc)) {
        snprintf(err, cap, "payload: must be a JSON object");
        rc = SP_ERR_BAD_JSON;
        goto fail;
    }
    json_t *messages = json_object_get(out->doc, "messages");
    json_t *list = NULL;
    if (messages) {
        out->batch = true;
        if (json_object_size(out->doc) != 1 || !json_is_array(messages)) {
            snprintf(err, cap, "payload: a batch is {\"messages\":[record,...]} and nothing else");
            rc = SP_ERR_INVALID_ARGUMENT;
            goto fail;
        }
        size_t n = json_array_size(messages);
        if (n == 0 || n > RELAY_MAX_BATCH) {
            snprintf(err, cap, "messages: must hold 1..1000 records");
            rc = n ? SP_ERR_TOO_LARGE : SP_ERR_INVALID_ARGUMENT;
            goto fail;
        }
        list = messages;
        out->count = n;
    } else {
        out->count = 1;
    }
    out->records = calloc(out->count, sizeof *out->records);
    if (!out->records) {
        rc = SP_ERR_NO_MEMORY;
        goto fail;
    }
    for (size_t i = 0; i < out->count; i++) {
        rc = parse_record(list ? json_array_get(list, i) : out->doc, &out->records[i], i, out->batch, err, cap);
        if (rc != SP_OK) goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->records[j].message_id, out->records[i].message_id) == 0) {
                rc = bad(err, cap, i, true, "message_id", "repeats an earlier record's", SP_ERR_INVALID_ARGUMENT);
                goto fail;
            }
    }
    return SP_OK;
fail:
    relay_payload_free(out);
    return rc;
}

void relay_payload_free(relay_payload *p) {
    free(p->records);
    if (p->doc) json_decref(p->doc);
    memset(p, 0, sizeof *p);
}
