/*
 * Fuzz target for the audit log's line checker (sp_audit_check_line), the
 * code that decides whether a log was tampered with, and for the parser of
 * its head file (sp_audit_parse_head). Both read files anyone with write
 * access may have crafted, and sp_audit_open runs them before chaining onto
 * a log, so they must refuse cleanly, and never accept what the writer could
 * not have written.
 *
 * The first input byte picks a mode (the low two bits; seeds for the first
 * two modes predate the third and keep their meaning):
 *
 *   0: the rest is a line. Whatever the checker accepts must also be
 *   canonical to jansson (it parses, and re-serialising with JSON_COMPACT |
 *   JSON_SORT_KEYS gives the same bytes: a differential against the parser
 *   the writer's side uses), must check out again as the next line of its
 *   own chain with the same hash, must be refused with the wrong seq or
 *   prev, and must be refused once any byte of it is changed.
 *
 *   1 or 3: the rest is "event\nname\nvalue\nname\nvalue..." for the
 *   writer, sp_audit_format_line. Arguments the per-argument rules refuse
 *   must be refused; valid ones that fit must give a line; every line it
 *   gives must pass the checker with the hash the writer reported, hold
 *   exactly the fields given, and be byte for byte jansson's canonical
 *   spelling (the writer spells lines itself, without jansson). That keeps
 *   the writer and the verifier from drifting.
 *
 *   2: the rest is a head file. Whatever the parser accepts must be what a
 *   writer wrote: for the two-slot format, the slot it picked re-made by
 *   sp_audit_head_slot gives the same bytes, any one byte of that slot
 *   changed makes it not intact (the other slot, if that one is, must not
 *   be newer or disagree); for the legacy format, the record re-spelt.
 */
#include <jansson.h>

#include "audit/sp_audit_internal.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define FIXED_TIME 1795478399 /* 2026-11-23T23:59:59Z */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_library();
    return 0;
}

static bool is_hex64(const char *s) {
    if (strlen(s) != 64) return false;
    for (size_t i = 0; i < 64; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    }
    return true;
}

/* jansson's view of an accepted line: canonical, and only strings besides
 * the integer "seq". Returns the parsed object (caller decrefs). */
static json_t *jansson_agrees(const char *line, size_t len) {
    json_error_t err;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
    FUZZ_CHECK(root != NULL && json_is_object(root));
    char *again = malloc(len + 1);
    FUZZ_CHECK(again != NULL);
    size_t n = json_dumpb(root, again, len + 1, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(n == len && memcmp(again, line, len) == 0);
    free(again);
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "seq") == 0) FUZZ_CHECK(json_is_integer(value) && json_integer_value(value) >= 1);
        else FUZZ_CHECK(json_is_string(value));
    }
    return root;
}

static void check_accepted(const char *line, size_t len, const sp_audit_line *info, size_t flip_at) {
    FUZZ_CHECK(len <= SP_AUDIT_MAX_LINE && memchr(line, '\n', len) == NULL);
    FUZZ_CHECK(is_hex64(info->hash) && is_hex64(info->prev) && info->seq >= 1);
    json_decref(jansson_agrees(line, len));

    sp_audit_line again;
    char reason[128];
    FUZZ_CHECK(sp_audit_check_line(info->prev, info->seq, line, len, &again, reason, sizeof reason) == SP_OK);
    FUZZ_CHECK(again.seq == info->seq && strcmp(again.hash, info->hash) == 0 && strcmp(again.prev, info->prev) == 0);
    FUZZ_CHECK(sp_audit_check_line(info->prev, info->seq + 1, line, len, &again, reason, sizeof reason) ==
               SP_ERR_AUDIT_BROKEN);
    FUZZ_CHECK(reason[0] != 0);
    FUZZ_CHECK(sp_audit_check_line(info->hash, info->seq, line, len, &again, reason, sizeof reason) ==
               SP_ERR_AUDIT_BROKEN);

    /* any one byte changed: refused */
    char *changed = fuzz_dup(line, len);
    size_t at = flip_at % len;
    changed[at] = (char)(changed[at] ^ (char)(1u << (flip_at % 8)));
    FUZZ_CHECK(sp_audit_check_line(NULL, 0, changed, len, &again, reason, sizeof reason) == SP_ERR_AUDIT_BROKEN);
    free(changed);
}

static void fuzz_line(const uint8_t *data, size_t size) {
    char *line = fuzz_dup(data, size);
    sp_audit_line info;
    char reason[128];
    memset(reason, 'x', sizeof reason);
    sp_error rc = sp_audit_check_line(NULL, 0, line, size, &info, reason, sizeof reason);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_AUDIT_BROKEN);
    FUZZ_CHECK(memchr(reason, 0, sizeof reason) != NULL);
    if (rc == SP_ERR_AUDIT_BROKEN) {
        FUZZ_CHECK(reason[0] != 0);
    } else {
        size_t h = 0;
        for (size_t i = 0; i < size; i++) h = h * 131 + data[i];
        check_accepted(line, size, &info, h);
    }
    /* as line 1 of a chain: accepted exactly when it says it is line 1 */
    sp_audit_line first;
    sp_error rc1 = sp_audit_check_line(ZERO_HASH, 1, line, size, &first, reason, sizeof reason);
    FUZZ_CHECK(rc1 == SP_OK || rc1 == SP_ERR_AUDIT_BROKEN);
    if (rc1 == SP_OK) FUZZ_CHECK(rc == SP_OK && info.seq == 1 && strcmp(first.hash, info.hash) == 0);
    if (rc == SP_OK && info.seq == 1) FUZZ_CHECK(rc1 == SP_OK);
    free(line);
}

/* ---- the writer ---- */

#define MAX_PIECES (1 + 2 * (SP_AUDIT_MAX_FIELDS + 1))

static void fuzz_writer(const uint8_t *data, size_t size) {
    char *pieces[MAX_PIECES];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < MAX_PIECES; i++) {
        if (i < size && data[i] != '\n') continue;
        char *p = malloc(i - start + 1);
        FUZZ_CHECK(p != NULL);
        if (i > start) memcpy(p, data + start, i - start);
        p[i - start] = 0; /* an embedded NUL simply ends the piece early, as for any C caller */
        pieces[n++] = p;
        start = i + 1;
    }
    const char *event = pieces[0];
    size_t n_fields = (n - 1) / 2;
    sp_audit_field fields[SP_AUDIT_MAX_FIELDS + 1];
    bool valid = sp_audit_event_ok(event, strlen(event)) && n_fields <= SP_AUDIT_MAX_FIELDS;
    size_t bound = 2 + strlen(event) + 10; /* a generous upper bound of the line's length */
    for (size_t i = 0; i < n_fields; i++) {
        fields[i].name = pieces[1 + 2 * i];
        fields[i].value = pieces[2 + 2 * i];
        size_t nl = strlen(fields[i].name), vl = strlen(fields[i].value);
        valid = valid && sp_audit_name_ok(fields[i].name, nl) && sp_audit_value_ok(fields[i].value, vl);
        for (size_t j = 0; j < i; j++) valid = valid && strcmp(fields[j].name, fields[i].name) != 0;
        bound += nl + 2 * vl + 6;
    }
    bound += 300; /* seq, time, prev, hash and their punctuation */

    uint64_t seq = 1 + (size > 1 ? data[1] : 0);
    char line[SP_AUDIT_MAX_LINE + 1], hash[65];
    size_t len = 0;
    sp_error rc = sp_audit_format_line(ZERO_HASH, seq, FIXED_TIME, event, fields, n_fields, line, sizeof line, &len,
                                       hash);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_INVALID_ARGUMENT);
    if (!valid) FUZZ_CHECK(rc == SP_ERR_INVALID_ARGUMENT);
    if (valid && bound <= SP_AUDIT_MAX_LINE) FUZZ_CHECK(rc == SP_OK);
    if (rc == SP_OK) {
        FUZZ_CHECK(valid);
        sp_audit_line info;
        char reason[128];
        sp_error crc = sp_audit_check_line(ZERO_HASH, seq, line, len, &info, reason, sizeof reason);
        if (crc != SP_OK) fprintf(stderr, "checker refused the writer's line: %s\n", reason);
        FUZZ_CHECK(crc == SP_OK);
        FUZZ_CHECK(strcmp(info.hash, hash) == 0 && info.seq == seq);
        json_t *root = jansson_agrees(line, len);
        FUZZ_CHECK(json_object_size(root) == n_fields + 5);
        for (size_t i = 0; i < n_fields; i++) {
            json_t *v = json_object_get(root, fields[i].name);
            FUZZ_CHECK(v != NULL && strcmp(json_string_value(v), fields[i].value) == 0);
        }
        FUZZ_CHECK(strcmp(json_string_value(json_object_get(root, "event")), event) == 0);
        json_decref(root);
    }
    for (size_t i = 0; i < n; i++) free(pieces[i]);
}

/* ---- the head file ---- */

static void fuzz_head(const uint8_t *data, size_t size) {
    char *text = fuzz_dup(data, size);
    sp_audit_head h;
    FUZZ_CHECK(sp_audit_parse_head(text, size, &h) == SP_OK);
    FUZZ_CHECK(h.present);
    if (!h.valid) {
        FUZZ_CHECK(h.problem != NULL && h.problem[0] != 0);
        free(text);
        return;
    }
    FUZZ_CHECK(h.seq <= (uint64_t)INT64_MAX && is_hex64(h.hash));
    if (h.legacy) {
        char again[160];
        int n = snprintf(again, sizeof again, "{\"seq\":%llu,\"hash\":\"%s\"}", (unsigned long long)h.seq, h.hash);
        FUZZ_CHECK(n > 0 && (size == (size_t)n || (size == (size_t)n + 1 && text[n] == '\n')));
        FUZZ_CHECK(memcmp(again, text, (size_t)n) == 0);
        free(text);
        return;
    }
    FUZZ_CHECK(size == SP_AUDIT_HEAD_SIZE && h.newest < 2);
    char *slot = text + h.newest * SP_AUDIT_HEAD_SLOT;
    char again[SP_AUDIT_HEAD_SLOT];
    FUZZ_CHECK(sp_audit_head_slot(h.newest, h.seq, h.hash, again) == SP_OK);
    FUZZ_CHECK(memcmp(again, slot, SP_AUDIT_HEAD_SLOT) == 0);
    /* one byte of the picked slot changed, at a place the input decides */
    size_t mix = 0;
    for (size_t i = 0; i < size; i++) mix = mix * 131 + data[i];
    size_t at = mix % SP_AUDIT_HEAD_SLOT;
    slot[at] = (char)(slot[at] ^ (char)(1u << (mix % 7)));
    sp_audit_head other;
    FUZZ_CHECK(sp_audit_parse_head(text, size, &other) == SP_OK);
    if (other.valid) {
        FUZZ_CHECK(other.newest != h.newest && !other.legacy);
        FUZZ_CHECK(other.seq < h.seq || (other.seq == h.seq && strcmp(other.hash, h.hash) == 0));
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) fuzz_writer(data + 1, size - 1);
    else if (data[0] & 2) fuzz_head(data + 1, size - 1);
    else fuzz_line(data + 1, size - 1);
    return 0;
}
