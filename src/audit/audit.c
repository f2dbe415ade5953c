/*
 * The audit log (include/sealpost/audit.h): every KMS call and admin action,
 * one canonical JSON object per line, chained by SHA-256.
 *
 *   hash(line N) = SHA-256( prev as 64 hex || "\n" || line N without "hash" )
 *
 * where "line without hash" is jansson's JSON_COMPACT | JSON_SORT_KEYS
 * serialisation of the object minus its "hash" member, and prev of line 1 is
 * 64 zeros. Canonical form is what makes the chain checkable: the verifier
 * accepts only the one spelling jansson writes for a line's content, so an
 * edit cannot hide in whitespace, key order or escapes.
 *
 * A chain alone cannot show that lines were cut off the end, so
 * "<path>.head" holds {"seq":N,"hash":"..."} of the newest line, replaced by
 * rename after every append. Deleting the head would then be the way to hide
 * a truncation, so a non-empty log without its head is broken, at open and
 * in verify. (Nothing unkeyed can stop someone who may write both files from
 * rewriting them consistently; the chain and the head make accidents,
 * careless edits and partial tampering visible.)
 *
 * Writing: one sp_audit per log, guarded by a mutex inside and an exclusive
 * flock on the log, since two writers would fork the chain. A record is
 * formatted completely (every allocation, the hash) before anything touches
 * the disk, then goes out in one write(2) on an O_APPEND descriptor, then the
 * head is replaced. If the write or the head fails, the log is truncated back
 * to where it was, so sp_audit_record either returned SP_OK or left the files
 * as they were: never a partial line. Should even that truncation fail, the
 * handle refuses every later record (SP_ERR_AUDIT_BROKEN) instead of
 * chaining onto a damaged file.
 *
 * Durability trade-off: records are not fsynced one by one (that would cost
 * a disk flush per KMS call). A record that returned SP_OK is in the kernel:
 * it survives the process crashing, not the machine losing power.
 * sp_audit_close fsyncs the log, then makes the head durable. After a power
 * loss the head may be ahead of the log; verify and open then report lines
 * missing from the end, which is the truth, and an operator decides. The
 * opposite state, the line written but the head not yet replaced, is what a
 * process crash between the two steps leaves; open accepts exactly that one
 * line of lag and repairs the head.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "audit/sp_audit_internal.h"

#define SP_AUDIT_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)
#define SP_AUDIT_TIME_CHARS 20 /* 2026-11-23T23:59:59Z */
#define SP_AUDIT_LATEST_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z: four-digit years only */
#define SP_AUDIT_HEAD_MAX 256
#define SP_AUDIT_READ_CHUNK 65536

static const char sp_audit_zero[SP_AUDIT_HEX_CHARS + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";
static const char *const sp_audit_reserved[] = {"event", "hash", "prev", "seq", "time"};

struct sp_audit {
    pthread_mutex_t lock;
    int fd;           /* the log: O_APPEND, flocked for as long as we hold it */
    off_t size;       /* its length; where to truncate back to if an append fails */
    uint64_t seq;     /* of the last line, 0 for an empty log */
    char prev[SP_AUDIT_HEX_CHARS + 1]; /* its hash */
    bool wedged;      /* an append failed and could not be undone */
    char head_path[PATH_MAX];
    char tmp_path[PATH_MAX];
    char dir[PATH_MAX];
    /* the line being written plus its newline; at open, the log's tail (a
     * longest line, its newline and the newline before it) */
    char line[SP_AUDIT_MAX_LINE + 2];
};

/* ---- SHA-256 ---- */

/* Fetched once and kept for the process, like the algorithms in
 * cipher/init.c. Not pthread_once: a fetch that failed (for memory, say) must
 * be tried again by the next caller, not remembered for good. */
static _Atomic(EVP_MD *) sp_audit_sha256_md;
static pthread_mutex_t sp_audit_md_lock = PTHREAD_MUTEX_INITIALIZER;

static const EVP_MD *sp_audit_md(void) {
    EVP_MD *md = atomic_load_explicit(&sp_audit_sha256_md, memory_order_acquire);
    if (md != NULL) return md;
    pthread_mutex_lock(&sp_audit_md_lock);
    md = atomic_load_explicit(&sp_audit_sha256_md, memory_order_relaxed);
    if (md == NULL) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (md != NULL) atomic_store_explicit(&sp_audit_sha256_md, md, memory_order_release);
        else ERR_clear_error();
    }
    pthread_mutex_unlock(&sp_audit_md_lock);
    return md;
}

static sp_error sp_audit_digest(const char *const *pieces, const size_t *lens, size_t n,
                                char out[SP_AUDIT_HEX_CHARS + 1]) {
    const EVP_MD *md = sp_audit_md();
    SP_ENSURE(md != NULL, SP_ERR_CRYPTO_BACKEND);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    SP_ENSURE(ctx != NULL, SP_ERR_NO_MEMORY);
    uint8_t digest[SP_AUDIT_HEX_CHARS / 2];
    unsigned int len = 0;
    bool ok = EVP_DigestInit_ex2(ctx, md, NULL) == 1;
    for (size_t i = 0; i < n && ok; i++) ok = EVP_DigestUpdate(ctx, pieces[i], lens[i]) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == sizeof digest;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return SP_ERR_CRYPTO_BACKEND;
    }
    sp_hex_encode(digest, sizeof digest, out);
    return SP_OK;
}

/* The chain hash of an object that has no "hash" member yet. */
static sp_error sp_audit_chain_hash(const json_t *obj, const char *prev_hex, char out[SP_AUDIT_HEX_CHARS + 1]) {
    char body[SP_AUDIT_MAX_LINE];
    size_t n = json_dumpb(obj, body, sizeof body, SP_AUDIT_JSON_FLAGS);
    SP_ENSURE(n != 0, SP_ERR_NO_MEMORY); /* an object is never empty text: "{}" at least */
    /* the complete line is longer still */
    SP_ENSURE(n <= sizeof body, SP_ERR_INVALID_ARGUMENT);
    const char *pieces[] = {prev_hex, "\n", body};
    const size_t lens[] = {SP_AUDIT_HEX_CHARS, 1, n};
    return sp_audit_digest(pieces, lens, SP_ARRAY_LEN(pieces), out);
}

/* ---- what may go into a line ---- */

static bool sp_audit_is_reserved(const char *name, size_t len) {
    for (size_t i = 0; i < SP_ARRAY_LEN(sp_audit_reserved); i++) {
        if (strlen(sp_audit_reserved[i]) == len && memcmp(sp_audit_reserved[i], name, len) == 0) return true;
    }
    return false;
}

bool sp_audit_name_ok(const char *name, size_t len) {
    if (name == NULL || len == 0 || len > SP_AUDIT_MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return !sp_audit_is_reserved(name, len);
}

bool sp_audit_event_ok(const char *event, size_t len) {
    if (event == NULL || len == 0 || len > SP_AUDIT_MAX_EVENT) return false;
    for (size_t i = 0; i < len; i++) {
        char c = event[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
    }
    return true;
}

/* Printable means more than "not a control character": people read these
 * lines, so characters that are invisible yet reorder or break what is shown
 * (bidirectional overrides as in Trojan Source, Unicode line separators that
 * some viewers treat as newlines, a stray byte-order mark) are refused too. */
static bool sp_audit_code_point_ok(uint32_t cp) {
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return false;     /* C0, DEL, C1 */
    if (cp == 0x061c || cp == 0x200e || cp == 0x200f) return false; /* bidi marks */
    if (cp >= 0x2028 && cp <= 0x202e) return false;                 /* separators, embeddings, overrides */
    if (cp >= 0x2066 && cp <= 0x2069) return false;                 /* bidi isolates */
    return cp != 0xfeff;
}

bool sp_audit_value_ok(const char *value, size_t len) {
    if (value == NULL || len > SP_AUDIT_MAX_VALUE) return false;
    const uint8_t *s = (const uint8_t *)value;
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        uint32_t cp, min;
        size_t n;
        if (b < 0x80) {
            cp = b, min = 0, n = 1;
        } else if (b >= 0xc2 && b <= 0xdf) {
            cp = (uint32_t)(b & 0x1f), min = 0x80, n = 2;
        } else if (b >= 0xe0 && b <= 0xef) {
            cp = (uint32_t)(b & 0x0f), min = 0x800, n = 3;
        } else if (b >= 0xf0 && b <= 0xf4) {
            cp = (uint32_t)(b & 0x07), min = 0x10000, n = 4;
        } else {
            return false;
        }
        if (n > len - i) return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (uint32_t)(s[i + k] & 0x3f);
        }
        /* overlong forms, surrogates and beyond U+10FFFF are not UTF-8 */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        if (!sp_audit_code_point_ok(cp)) return false;
        i += n;
    }
    return true;
}

static bool sp_audit_hex_ok(const char *s, size_t len) {
    if (s == NULL || len != SP_AUDIT_HEX_CHARS) return false;
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    }
    return true;
}

static bool sp_audit_digits_in(const char *s, size_t n, unsigned lo, unsigned hi) {
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v >= lo && v <= hi;
}

/* Exactly what sp_audit_format_time writes: YYYY-MM-DDTHH:MM:SSZ. */
static bool sp_audit_time_ok(const char *s, size_t len) {
    return len == SP_AUDIT_TIME_CHARS && sp_audit_digits_in(s, 4, 0, 9999) && s[4] == '-' &&
           sp_audit_digits_in(s + 5, 2, 1, 12) && s[7] == '-' && sp_audit_digits_in(s + 8, 2, 1, 31) &&
           s[10] == 'T' && sp_audit_digits_in(s + 11, 2, 0, 23) && s[13] == ':' &&
           sp_audit_digits_in(s + 14, 2, 0, 59) && s[16] == ':' && sp_audit_digits_in(s + 17, 2, 0, 59) &&
           s[19] == 'Z';
}

static sp_error sp_audit_format_time(int64_t t, char out[SP_AUDIT_TIME_CHARS + 1]) {
    SP_ENSURE(t >= 0 && t <= SP_AUDIT_LATEST_TIME, SP_ERR_BAD_TIMESTAMP);
    time_t tt = (time_t)t;
    struct tm tm;
    SP_ENSURE(gmtime_r(&tt, &tm) != NULL, SP_ERR_BAD_TIMESTAMP);
    SP_ENSURE(strftime(out, SP_AUDIT_TIME_CHARS + 1, "%Y-%m-%dT%H:%M:%SZ", &tm) == SP_AUDIT_TIME_CHARS,
              SP_ERR_BAD_TIMESTAMP);
    return SP_OK;
}

static sp_error sp_audit_check_args(const char *event, const sp_audit_field *fields, size_t n_fields) {
    SP_ENSURE(event != NULL && sp_audit_event_ok(event, strnlen(event, SP_AUDIT_MAX_EVENT + 1)),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n_fields <= SP_AUDIT_MAX_FIELDS && (fields != NULL || n_fields == 0), SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n_fields; i++) {
        const char *name = fields[i].name, *value = fields[i].value;
        SP_ENSURE(name != NULL && value != NULL, SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(sp_audit_name_ok(name, strnlen(name, SP_AUDIT_MAX_NAME + 1)), SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(sp_audit_value_ok(value, strnlen(value, SP_AUDIT_MAX_VALUE + 1)), SP_ERR_INVALID_ARGUMENT);
        /* a repeated name would silently keep only one of the values */
        for (size_t j = 0; j < i; j++) SP_ENSURE(strcmp(fields[j].name, name) != 0, SP_ERR_INVALID_ARGUMENT);
    }
    return SP_OK;
}

/* ---- making a line ---- */

/* json_object_set_new steals the value even when it fails, and a NULL value
 * (the constructor ran out of memory) makes it fail. */
static sp_error sp_audit_set(json_t *obj, const char *name, json_t *value) {
    return json_object_set_new_nocheck(obj, name, value) == 0 ? SP_OK : SP_ERR_NO_MEMORY;
}

sp_error sp_audit_format_line(const char *prev_hex, uint64_t seq, int64_t unix_time, const char *event,
                              const sp_audit_field *fields, size_t n_fields, char *line, size_t cap, size_t *len,
                              char hash_out[SP_AUDIT_HEX_CHARS + 1]) {
    SP_ENSURE(prev_hex != NULL && sp_audit_hex_ok(prev_hex, strnlen(prev_hex, SP_AUDIT_HEX_CHARS + 1)),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(line != NULL && len != NULL && hash_out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(seq >= 1 && seq <= (uint64_t)INT64_MAX, SP_ERR_INVALID_ARGUMENT); /* a JSON integer to jansson */
    SP_GUARD(sp_audit_check_args(event, fields, n_fields));
    char when[SP_AUDIT_TIME_CHARS + 1];
    SP_GUARD(sp_audit_format_time(unix_time, when));

    json_t *obj = json_object();
    SP_ENSURE(obj != NULL, SP_ERR_NO_MEMORY);
    /* names and values were validated above (ASCII names, UTF-8 values), so
     * jansson's own UTF-8 checks would only repeat the work */
    sp_error rc = sp_audit_set(obj, "event", json_stringn_nocheck(event, strlen(event)));
    for (size_t i = 0; i < n_fields && rc == SP_OK; i++) {
        rc = sp_audit_set(obj, fields[i].name, json_stringn_nocheck(fields[i].value, strlen(fields[i].value)));
    }
    if (rc == SP_OK) rc = sp_audit_set(obj, "seq", json_integer((json_int_t)seq));
    if (rc == SP_OK) rc = sp_audit_set(obj, "time", json_stringn_nocheck(when, SP_AUDIT_TIME_CHARS));
    if (rc == SP_OK) rc = sp_audit_set(obj, "prev", json_stringn_nocheck(prev_hex, SP_AUDIT_HEX_CHARS));
    char hash[SP_AUDIT_HEX_CHARS + 1];
    if (rc == SP_OK) rc = sp_audit_chain_hash(obj, prev_hex, hash);
    if (rc == SP_OK) rc = sp_audit_set(obj, "hash", json_stringn_nocheck(hash, SP_AUDIT_HEX_CHARS));
    if (rc == SP_OK) {
        size_t room = cap < SP_AUDIT_MAX_LINE ? cap : SP_AUDIT_MAX_LINE;
        size_t n = json_dumpb(obj, line, room, SP_AUDIT_JSON_FLAGS);
        if (n == 0) rc = SP_ERR_NO_MEMORY;
        else if (n > SP_AUDIT_MAX_LINE) rc = SP_ERR_INVALID_ARGUMENT;
        else if (n > room) rc = SP_ERR_BUFFER_TOO_SMALL;
        else *len = n;
    }
    json_decref(obj);
    if (rc == SP_OK) memcpy(hash_out, hash, sizeof hash);
    return rc;
}

/* ---- judging a line ----
 *
 * The verdict comes from a scanner of our own, not from jansson's parser:
 * jansson does not report every allocation failure as one (a failed buffer
 * append is dropped silently, a failed lexer set-up leaves no error code), so
 * a verifier built on it could call a sound log broken when memory is short,
 * and open would then refuse to start on a log nobody touched. The scanner
 * allocates nothing and accepts only the canonical spelling, which for the
 * values a line may hold (printable UTF-8 strings, a positive count) is
 * exactly what jansson's JSON_COMPACT | JSON_SORT_KEYS writes: members in
 * strictly increasing key order, ',' and ':' without spaces, strings raw
 * except '"' and '\' escaped, integers in plain decimal. Accepting exactly
 * one spelling is the canonical-form check: any other spelling of the same
 * JSON is refused. jansson is consulted only to word the reason once the
 * scanner has refused a line. */

#define SP_AUDIT_MAX_MEMBERS (SP_AUDIT_MAX_FIELDS + SP_ARRAY_LEN(sp_audit_reserved))

typedef struct {
    const char *key;
    size_t key_len;
    bool is_int;
    uint64_t num;
    const char *val; /* decoded, in the caller's buffer */
    size_t val_len;
    size_t start, end; /* the member's bytes in the line */
} sp_audit_member;

typedef enum { SP_SCAN_OK, SP_SCAN_REFUSED, SP_SCAN_TOO_MANY } sp_scan_result;

static int sp_audit_key_cmp(const sp_audit_member *a, const sp_audit_member *b) {
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c != 0) return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len ? 1 : 0;
}

/* A string after its opening quote; decoded bytes go to decoded[*out..]. */
static bool sp_audit_scan_string(sp_cursor *c, char *decoded, size_t *out) {
    for (;;) {
        if (sp_cursor_left(c) == 0) return false;
        uint8_t b = c->data[c->pos++];
        if (b == '"') return true;
        if (b < 0x20) return false;
        if (b == '\\') {
            /* the only escapes jansson writes for a printable value */
            if (sp_cursor_left(c) == 0) return false;
            b = c->data[c->pos++];
            if (b != '"' && b != '\\') return false;
        }
        decoded[(*out)++] = (char)b;
    }
}

/* A key after its opening quote: no escapes (no key of ours needs one). */
static bool sp_audit_scan_key(sp_cursor *c, sp_audit_member *m) {
    sp_span key;
    if (!sp_cursor_take_until(c, '"', &key)) return false;
    for (size_t i = 0; i < key.len; i++) {
        if (key.data[i] < 0x20 || key.data[i] == '\\') return false;
    }
    m->key = (const char *)key.data;
    m->key_len = key.len;
    return true;
}

static bool sp_audit_scan_count(sp_cursor *c, uint64_t *num) {
    size_t first = c->pos;
    uint64_t v = 0;
    while (sp_cursor_left(c) > 0 && c->data[c->pos] >= '0' && c->data[c->pos] <= '9') {
        uint64_t d = (uint64_t)(c->data[c->pos] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) return false; /* beyond what jansson reads */
        v = v * 10 + d;
        c->pos++;
    }
    size_t digits = c->pos - first;
    if (digits == 0 || (digits > 1 && c->data[first] == '0')) return false;
    *num = v;
    return true;
}

/* decoded holds len bytes; members SP_AUDIT_MAX_MEMBERS. */
static sp_scan_result sp_audit_scan(const char *line, size_t len, char *decoded, sp_audit_member *members,
                                    size_t *count) {
    sp_cursor c = sp_cursor_of(line, len);
    size_t n = 0, out = 0;
    if (!sp_cursor_accept(&c, "{")) return SP_SCAN_REFUSED;
    bool more = !sp_cursor_accept(&c, "}");
    while (more) {
        if (n == SP_AUDIT_MAX_MEMBERS) return SP_SCAN_TOO_MANY;
        sp_audit_member *m = &members[n];
        memset(m, 0, sizeof *m);
        m->start = c.pos;
        if (!sp_cursor_accept(&c, "\"") || !sp_audit_scan_key(&c, m) || !sp_cursor_accept(&c, ":")) {
            return SP_SCAN_REFUSED;
        }
        if (sp_cursor_accept(&c, "\"")) {
            size_t from = out;
            if (!sp_audit_scan_string(&c, decoded, &out)) return SP_SCAN_REFUSED;
            m->val = decoded + from;
            m->val_len = out - from;
        } else {
            m->is_int = true;
            if (!sp_audit_scan_count(&c, &m->num)) return SP_SCAN_REFUSED;
        }
        m->end = c.pos;
        /* sorted, hence also no key twice */
        if (n > 0 && sp_audit_key_cmp(&members[n - 1], m) >= 0) return SP_SCAN_REFUSED;
        n++;
        if (sp_cursor_accept(&c, "}")) more = false;
        else if (!sp_cursor_accept(&c, ",")) return SP_SCAN_REFUSED;
    }
    if (sp_cursor_left(&c) != 0) return SP_SCAN_REFUSED;
    *count = n;
    return SP_SCAN_OK;
}

__attribute__((format(printf, 3, 4))) static sp_error sp_audit_break(char *reason, size_t cap, const char *fmt,
                                                                      ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(reason, cap, fmt, ap);
    va_end(ap);
    return SP_ERR_AUDIT_BROKEN;
}

/* Why the scanner refused a line, in words. The verdict stands whatever
 * happens here; should jansson run out of memory, only the wording suffers. */
static sp_error sp_audit_explain_refusal(const char *line, size_t len, char *reason, size_t cap) {
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) return sp_audit_break(reason, cap, "not valid JSON (edited or damaged)");
    if (!json_is_object(root)) {
        json_decref(root);
        return sp_audit_break(reason, cap, "not a JSON object (edited or damaged)");
    }
    char text[SP_AUDIT_MAX_LINE];
    size_t n = json_dumpb(root, text, sizeof text, SP_AUDIT_JSON_FLAGS);
    json_decref(root);
    if (n == len && memcmp(text, line, len) == 0) {
        return sp_audit_break(reason, cap, "a value of a kind the log never holds (edited)");
    }
    return sp_audit_break(reason, cap, "not in canonical form (edited)");
}

static const sp_audit_member *sp_audit_find(const sp_audit_member *m, size_t n, const char *key) {
    size_t len = strlen(key);
    for (size_t i = 0; i < n; i++) {
        if (m[i].key_len == len && memcmp(m[i].key, key, len) == 0) return &m[i];
    }
    return NULL;
}

static bool sp_audit_member_is(const sp_audit_member *m, bool (*ok)(const char *, size_t)) {
    return m != NULL && !m->is_int && ok(m->val, m->val_len);
}

sp_error sp_audit_check_line(const char *prev_hex, uint64_t expected_seq, const char *line, size_t len,
                             sp_audit_line *out, char *reason, size_t reason_cap) {
    SP_ENSURE(out != NULL && reason != NULL && reason_cap > 0 && (line != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(prev_hex == NULL || sp_audit_hex_ok(prev_hex, strnlen(prev_hex, SP_AUDIT_HEX_CHARS + 1)),
              SP_ERR_INVALID_ARGUMENT);
    memset(out, 0, sizeof *out);
    reason[0] = 0;
    if (len == 0) return sp_audit_break(reason, reason_cap, "empty line");
    if (len > SP_AUDIT_MAX_LINE) return sp_audit_break(reason, reason_cap, "longer than %d bytes", SP_AUDIT_MAX_LINE);

    char decoded[SP_AUDIT_MAX_LINE];
    sp_audit_member m[SP_AUDIT_MAX_MEMBERS];
    size_t n = 0;
    sp_scan_result scan = sp_audit_scan(line, len, decoded, m, &n);
    if (scan == SP_SCAN_TOO_MANY) return sp_audit_break(reason, reason_cap, "more than %d fields", SP_AUDIT_MAX_FIELDS);
    if (scan != SP_SCAN_OK) return sp_audit_explain_refusal(line, len, reason, reason_cap);

    const sp_audit_member *seq = sp_audit_find(m, n, "seq"), *prev = sp_audit_find(m, n, "prev");
    const sp_audit_member *hash = sp_audit_find(m, n, "hash");
    if (seq == NULL || !seq->is_int || seq->num < 1) {
        return sp_audit_break(reason, reason_cap, "missing or malformed \"seq\"");
    }
    if (!sp_audit_member_is(sp_audit_find(m, n, "time"), sp_audit_time_ok)) {
        return sp_audit_break(reason, reason_cap, "missing or malformed \"time\"");
    }
    if (!sp_audit_member_is(sp_audit_find(m, n, "event"), sp_audit_event_ok)) {
        return sp_audit_break(reason, reason_cap, "missing or malformed \"event\"");
    }
    if (!sp_audit_member_is(prev, sp_audit_hex_ok)) {
        return sp_audit_break(reason, reason_cap, "missing or malformed \"prev\"");
    }
    if (!sp_audit_member_is(hash, sp_audit_hex_ok)) {
        return sp_audit_break(reason, reason_cap, "missing or malformed \"hash\"");
    }
    size_t fields = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp_audit_is_reserved(m[i].key, m[i].key_len)) continue;
        fields++;
        if (!sp_audit_name_ok(m[i].key, m[i].key_len)) {
            return sp_audit_break(reason, reason_cap, "malformed field name");
        }
        if (!sp_audit_member_is(&m[i], sp_audit_value_ok)) {
            return sp_audit_break(reason, reason_cap, "malformed field value");
        }
    }
    if (fields > SP_AUDIT_MAX_FIELDS) {
        return sp_audit_break(reason, reason_cap, "more than %d fields", SP_AUDIT_MAX_FIELDS);
    }

    if (expected_seq != 0 && seq->num > expected_seq) {
        return sp_audit_break(reason, reason_cap,
                              "sequence gap, seq %" PRIu64 " where %" PRIu64 " was due (line removed)", seq->num,
                              expected_seq);
    }
    if (expected_seq != 0 && seq->num < expected_seq) {
        return sp_audit_break(reason, reason_cap,
                              "sequence goes back, seq %" PRIu64 " where %" PRIu64 " was due (line moved or copied)",
                              seq->num, expected_seq);
    }
    /* without a predecessor to compare with, line 1 still has a known prev */
    const char *want_prev = prev_hex != NULL ? prev_hex : (seq->num == 1 ? sp_audit_zero : NULL);
    if (want_prev != NULL && memcmp(prev->val, want_prev, SP_AUDIT_HEX_CHARS) != 0) {
        return sp_audit_break(reason, reason_cap, "%s",
                              prev_hex != NULL ? "prev does not match the line before (line replaced)"
                                               : "seq 1 does not start the chain (prev not zero)");
    }

    /* The hash covers the line as it was before "hash" was added: in
     * canonical form that is the line with the member and the comma before
     * it cut out. "event", present by now, sorts before "hash", so there is
     * always a member before it; the test only guards the arithmetic. */
    size_t index = (size_t)(hash - m);
    if (index == 0) return sp_audit_break(reason, reason_cap, "missing or malformed \"event\"");
    size_t cut_from = m[index - 1].end, cut_to = hash->end;
    const char *pieces[] = {prev->val, "\n", line, line + cut_to};
    const size_t lens[] = {SP_AUDIT_HEX_CHARS, 1, cut_from, len - cut_to};
    char computed[SP_AUDIT_HEX_CHARS + 1];
    SP_GUARD(sp_audit_digest(pieces, lens, SP_ARRAY_LEN(pieces), computed));
    if (memcmp(computed, hash->val, SP_AUDIT_HEX_CHARS) != 0) {
        return sp_audit_break(reason, reason_cap, "hash mismatch (edited)");
    }
    out->seq = seq->num;
    memcpy(out->prev, prev->val, SP_AUDIT_HEX_CHARS);
    memcpy(out->hash, hash->val, SP_AUDIT_HEX_CHARS);
    return SP_OK;
}

/* ---- the head sidecar ---- */

typedef struct {
    bool present; /* the file exists */
    bool valid;   /* and says {"seq":N,"hash":"<64 hex>"} */
    uint64_t seq;
    char hash[SP_AUDIT_HEX_CHARS + 1];
} sp_audit_head;

/* Exactly what sp_audit_put_head writes (the newline optional): we are the
 * only writer, and like a line the head is parsed without allocating. */
static void sp_audit_parse_head(const char *text, size_t len, sp_audit_head *h) {
    sp_cursor c = sp_cursor_of(text, len);
    uint64_t seq = 0;
    sp_span hex;
    if (!sp_cursor_accept(&c, "{\"seq\":") || !sp_audit_scan_count(&c, &seq) ||
        !sp_cursor_accept(&c, ",\"hash\":\"") || !sp_cursor_take_until(&c, '"', &hex) ||
        !sp_audit_hex_ok((const char *)hex.data, hex.len) || !sp_cursor_accept(&c, "}")) {
        return;
    }
    (void)sp_cursor_accept(&c, "\n");
    if (sp_cursor_left(&c) != 0) return;
    h->valid = true;
    h->seq = seq;
    memcpy(h->hash, hex.data, SP_AUDIT_HEX_CHARS);
    h->hash[SP_AUDIT_HEX_CHARS] = 0;
}

/* SP_OK with present = false when there is none; SP_ERR_IO when it exists
 * but cannot be read (a symlink in its place among others). */
static sp_error sp_audit_read_head(const char *path, sp_audit_head *h) {
    memset(h, 0, sizeof *h);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? SP_OK : SP_ERR_IO;
    h->present = true;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return SP_ERR_IO;
    }
    char text[SP_AUDIT_HEAD_MAX + 1];
    size_t got = 0;
    while (got < sizeof text) {
        ssize_t n = read(fd, text + got, sizeof text - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            close(fd);
            return SP_ERR_IO;
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (got <= SP_AUDIT_HEAD_MAX) sp_audit_parse_head(text, got, h); /* else present, not valid */
    return SP_OK;
}

static sp_error sp_audit_write_all(int fd, const char *data, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        SP_ENSURE(n > 0, SP_ERR_IO);
        done += (size_t)n;
    }
    return SP_OK;
}

static void sp_audit_sync_dir(const sp_audit *a) {
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* Written beside the head and renamed over it, so a reader sees the old head
 * or the new one, never a mix. The temporary name is fixed: the flock makes
 * us the only writer, and one left behind by a crash is simply replaced.
 *
 * This is most of what a record costs: a new inode per record, tens of
 * microseconds on tmpfs and up to a quarter of a millisecond on a
 * virtualised ext4, against about one for the line's write. Swapping two
 * kept inodes with renameat2(RENAME_EXCHANGE) is far cheaper, but then the
 * inode a reader opened as the head gets rewritten while it may still be
 * reading it; a fresh inode per head never changes once it has the name. */
static sp_error sp_audit_put_head(const sp_audit *a, uint64_t seq, const char *hash, bool durable) {
    char text[SP_AUDIT_HEAD_MAX];
    sp_wbuf b = sp_wbuf_of(text, sizeof text);
    SP_GUARD(sp_wbuf_put_str(&b, "{\"seq\":"));
    SP_GUARD(sp_wbuf_put_u64(&b, seq));
    SP_GUARD(sp_wbuf_put_str(&b, ",\"hash\":\""));
    SP_GUARD(sp_wbuf_put(&b, hash, SP_AUDIT_HEX_CHARS));
    SP_GUARD(sp_wbuf_put_str(&b, "\"}\n"));
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(a->tmp_path, flags, 0600);
    if (fd < 0 && errno == EEXIST) {
        (void)unlink(a->tmp_path);
        fd = open(a->tmp_path, flags, 0600);
    }
    SP_ENSURE(fd >= 0, SP_ERR_IO);
    sp_error rc = sp_audit_write_all(fd, text, b.len);
    if (rc == SP_OK && durable && fsync(fd) != 0) rc = SP_ERR_IO;
    if (close(fd) != 0 && rc == SP_OK) rc = SP_ERR_IO;
    if (rc == SP_OK && rename(a->tmp_path, a->head_path) != 0) rc = SP_ERR_IO;
    if (rc != SP_OK) {
        (void)unlink(a->tmp_path);
        return rc;
    }
    if (durable) sp_audit_sync_dir(a);
    return SP_OK;
}

/* ---- writing ---- */

/* Undoes a failed append. O_APPEND writes land at the end, and the flock
 * keeps other writers out, so the end before this record is a->size. */
static void sp_audit_roll_back(sp_audit *a) {
    while (ftruncate(a->fd, a->size) != 0) {
        if (errno != EINTR) {
            a->wedged = true;
            return;
        }
    }
}

static sp_error sp_audit_append_locked(sp_audit *a, const char *event, const sp_audit_field *fields,
                                       size_t n_fields) {
    SP_ENSURE(!a->wedged, SP_ERR_AUDIT_BROKEN);
    SP_ENSURE(a->seq < (uint64_t)INT64_MAX, SP_ERR_TOO_LARGE);
    uint64_t seq = a->seq + 1;
    char hash[SP_AUDIT_HEX_CHARS + 1];
    size_t len = 0;
    /* everything that can fail for memory or for the caller's arguments
     * happens here, before the disk is touched */
    SP_GUARD(sp_audit_format_line(a->prev, seq, sp_now_seconds(), event, fields, n_fields, a->line,
                                  sizeof a->line - 1, &len, hash));
    a->line[len] = '\n';
    /* one write(2) in practice; the loop only matters after a signal or a
     * short write on a full disk */
    sp_error rc = sp_audit_write_all(a->fd, a->line, len + 1);
    if (rc == SP_OK) rc = sp_audit_put_head(a, seq, hash, false);
    if (rc != SP_OK) {
        sp_audit_roll_back(a);
        return rc;
    }
    a->size += (off_t)(len + 1);
    a->seq = seq;
    memcpy(a->prev, hash, sizeof hash);
    return SP_OK;
}

sp_error sp_audit_record(sp_audit *audit, const char *event, const sp_audit_field *fields, size_t n_fields) {
    SP_ENSURE(audit != NULL, SP_ERR_INVALID_ARGUMENT);
    pthread_mutex_lock(&audit->lock);
    sp_error rc = sp_audit_append_locked(audit, event, fields, n_fields);
    pthread_mutex_unlock(&audit->lock);
    return rc;
}

/* ---- opening ---- */

static sp_error sp_audit_set_paths(sp_audit *a, const char *path) {
    sp_wbuf h = sp_wbuf_of(a->head_path, sizeof a->head_path);
    SP_GUARD(sp_wbuf_put_str(&h, path));
    SP_GUARD(sp_wbuf_put_str(&h, ".head"));
    SP_GUARD(sp_wbuf_terminate(&h));
    sp_wbuf t = sp_wbuf_of(a->tmp_path, sizeof a->tmp_path);
    SP_GUARD(sp_wbuf_put_str(&t, a->head_path));
    SP_GUARD(sp_wbuf_put_str(&t, ".tmp"));
    SP_GUARD(sp_wbuf_terminate(&t));
    const char *slash = strrchr(path, '/');
    sp_wbuf d = sp_wbuf_of(a->dir, sizeof a->dir);
    if (slash == NULL) SP_GUARD(sp_wbuf_put_str(&d, "."));
    else if (slash == path) SP_GUARD(sp_wbuf_put_str(&d, "/"));
    else SP_GUARD(sp_wbuf_put(&d, path, (size_t)(slash - path)));
    return sp_wbuf_terminate(&d);
}

static sp_error sp_audit_open_log(sp_audit *a, const char *path, bool *created) {
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    *created = fd >= 0;
    if (fd < 0 && errno == EEXIST) fd = open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    SP_ENSURE(fd >= 0, SP_ERR_IO);
    a->fd = fd;
    /* one writer per log: a second would fork the chain */
    SP_ENSURE(flock(fd, LOCK_EX | LOCK_NB) == 0, SP_ERR_IO);
    struct stat st;
    SP_ENSURE(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), SP_ERR_IO);
    a->size = st.st_size;
    return SP_OK;
}

/* The last line, without its newline, from the end of the log: at most a
 * longest line and two newlines are read, however long the log. */
static sp_error sp_audit_read_last_line(sp_audit *a, const char **line, size_t *len) {
    size_t want = a->size < (off_t)sizeof a->line ? (size_t)a->size : sizeof a->line;
    off_t at = a->size - (off_t)want;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(a->fd, a->line + got, want - got, at + (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        SP_ENSURE(n > 0, SP_ERR_IO);
        got += (size_t)n;
    }
    /* a last line without its newline was cut short */
    SP_ENSURE(a->line[want - 1] == '\n', SP_ERR_AUDIT_BROKEN);
    const char *nl = want > 1 ? memrchr(a->line, '\n', want - 1) : NULL;
    size_t start = 0;
    if (nl != NULL) start = (size_t)(nl - a->line) + 1;
    else SP_ENSURE(at == 0, SP_ERR_AUDIT_BROKEN); /* longer than any line we write */
    *line = a->line + start;
    *len = want - 1 - start;
    return SP_OK;
}

/* Finds where the chain ends and checks the end against the head. */
static sp_error sp_audit_resume(sp_audit *a) {
    sp_audit_head head;
    SP_GUARD(sp_audit_read_head(a->head_path, &head));
    if (a->size == 0) {
        /* a new log, or one emptied although its head says it held lines */
        SP_ENSURE(!head.present || (head.valid && head.seq == 0 && strcmp(head.hash, sp_audit_zero) == 0),
                  SP_ERR_AUDIT_BROKEN);
        a->seq = 0;
        memcpy(a->prev, sp_audit_zero, sizeof sp_audit_zero);
        return head.present ? SP_OK : sp_audit_put_head(a, 0, sp_audit_zero, true);
    }
    SP_ENSURE(head.present && head.valid, SP_ERR_AUDIT_BROKEN);
    const char *last = NULL;
    size_t len = 0;
    SP_GUARD(sp_audit_read_last_line(a, &last, &len));
    sp_audit_line info;
    char reason[128];
    SP_GUARD(sp_audit_check_line(NULL, 0, last, len, &info, reason, sizeof reason));
    a->seq = info.seq;
    memcpy(a->prev, info.hash, sizeof info.hash);
    if (head.seq == info.seq && strcmp(head.hash, info.hash) == 0) return SP_OK;
    /* the state a crash between the append and the head's rename leaves:
     * the head one line behind, naming the last line's predecessor */
    if (head.seq + 1 == info.seq && strcmp(head.hash, info.prev) == 0) {
        return sp_audit_put_head(a, a->seq, a->prev, true);
    }
    return SP_ERR_AUDIT_BROKEN;
}

sp_error sp_audit_open(const char *path, sp_audit **out) {
    SP_ENSURE(path != NULL && path[0] != 0 && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_GUARD(sp_init());
    SP_ENSURE(sp_audit_md() != NULL, SP_ERR_CRYPTO_BACKEND);
    sp_audit *a = sp_calloc(1, sizeof *a);
    SP_ENSURE(a != NULL, SP_ERR_NO_MEMORY);
    a->fd = -1;
    bool created = false;
    sp_error rc = sp_audit_set_paths(a, path);
    if (rc == SP_ERR_BUFFER_TOO_SMALL) rc = SP_ERR_INVALID_ARGUMENT; /* a path longer than PATH_MAX */
    if (rc == SP_OK) rc = sp_audit_open_log(a, path, &created);
    if (rc == SP_OK) rc = sp_audit_resume(a);
    if (rc == SP_OK && created) sp_audit_sync_dir(a);
    if (rc == SP_OK && pthread_mutex_init(&a->lock, NULL) != 0) rc = SP_ERR_NO_MEMORY;
    if (rc != SP_OK) {
        if (a->fd >= 0) close(a->fd);
        sp_free(a);
        return rc;
    }
    *out = a;
    return SP_OK;
}

/* Not concurrent with sp_audit_record on the same handle: the caller stops
 * recording first. */
void sp_audit_close(sp_audit *audit) {
    if (audit == NULL) return;
    if (!audit->wedged) {
        /* the log first, then the head that vouches for it */
        (void)fsync(audit->fd);
        (void)sp_audit_put_head(audit, audit->seq, audit->prev, true);
    }
    close(audit->fd); /* releases the flock */
    pthread_mutex_destroy(&audit->lock);
    sp_free(audit);
}

/* ---- verifying ---- */

typedef enum { SP_LINE_OK, SP_LINE_END, SP_LINE_TOO_LONG, SP_LINE_UNTERMINATED, SP_LINE_IO } sp_line_status;

/* Streams a file line by line, holding at most one chunk and one line. */
typedef struct {
    int fd;
    size_t pos, len;
    char chunk[SP_AUDIT_READ_CHUNK];
    char line[SP_AUDIT_MAX_LINE];
} sp_audit_reader;

static sp_line_status sp_audit_next_line(sp_audit_reader *r, size_t *len) {
    size_t n = 0;
    if (r->fd < 0) return SP_LINE_END; /* a log that is not there reads as empty */
    for (;;) {
        if (r->pos == r->len) {
            ssize_t got = read(r->fd, r->chunk, sizeof r->chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return SP_LINE_IO;
            if (got == 0) return n == 0 ? SP_LINE_END : SP_LINE_UNTERMINATED;
            r->pos = 0;
            r->len = (size_t)got;
        }
        sp_cursor c = sp_cursor_of(r->chunk + r->pos, r->len - r->pos);
        sp_span piece;
        bool complete = sp_cursor_take_until(&c, '\n', &piece);
        if (!complete) piece = sp_cursor_rest(&c);
        if (piece.len > sizeof r->line - n) return SP_LINE_TOO_LONG;
        if (piece.len) memcpy(r->line + n, piece.data, piece.len);
        n += piece.len;
        r->pos += c.pos;
        if (complete) {
            *len = n;
            return SP_LINE_OK;
        }
    }
}

static sp_error sp_audit_report_break(sp_audit_report *report, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static sp_error sp_audit_report_break(sp_audit_report *report, uint64_t line, const char *fmt, ...) {
    report->bad_line = line;
    report->lines = line - 1;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(report->reason, sizeof report->reason, fmt, ap);
    va_end(ap);
    return SP_ERR_AUDIT_BROKEN;
}

static sp_error sp_audit_verify_stream(sp_audit_reader *r, const sp_audit_head *head, sp_audit_report *report) {
    char prev[SP_AUDIT_HEX_CHARS + 1], at_head[SP_AUDIT_HEX_CHARS + 1];
    memcpy(prev, sp_audit_zero, sizeof prev);
    memcpy(at_head, sp_audit_zero, sizeof at_head); /* "line 0" has the zero hash */
    uint64_t lines = 0;
    for (;;) {
        size_t len = 0;
        sp_line_status st = sp_audit_next_line(r, &len);
        if (st == SP_LINE_END) break;
        uint64_t no = lines + 1;
        if (st == SP_LINE_IO) {
            (void)snprintf(report->reason, sizeof report->reason, "line %" PRIu64 ": read error", no);
            return SP_ERR_IO;
        }
        if (st == SP_LINE_TOO_LONG) {
            return sp_audit_report_break(report, no, "line %" PRIu64 ": longer than %d bytes", no, SP_AUDIT_MAX_LINE);
        }
        if (st == SP_LINE_UNTERMINATED) {
            return sp_audit_report_break(report, no, "line %" PRIu64 ": no newline at the end (cut short)", no);
        }
        sp_audit_line info;
        char why[96];
        sp_error rc = sp_audit_check_line(prev, no, r->line, len, &info, why, sizeof why);
        if (rc == SP_ERR_AUDIT_BROKEN) return sp_audit_report_break(report, no, "line %" PRIu64 ": %s", no, why);
        if (rc != SP_OK) {
            (void)snprintf(report->reason, sizeof report->reason, "line %" PRIu64 ": could not be checked (%s)", no,
                           sp_error_name(rc));
            return rc;
        }
        memcpy(prev, info.hash, sizeof prev);
        lines = no;
        report->lines = lines;
        if (head->valid && head->seq == lines) memcpy(at_head, info.hash, sizeof at_head);
    }

    /* the end of the log against the head */
    if (!head->present) {
        /* an empty log with no head is a log nothing was written to yet */
        if (lines == 0) return SP_OK;
        return sp_audit_report_break(report, lines + 1, "end: head file missing (it guards the end of the log)");
    }
    if (!head->valid) return sp_audit_report_break(report, lines + 1, "end: head file malformed");
    if (head->seq > lines) {
        return sp_audit_report_break(report, lines + 1,
                                     "end: head says seq %" PRIu64 ", log ends at %" PRIu64
                                     " (lines removed from the end)",
                                     head->seq, lines);
    }
    /* A head behind the log is what a writer appending while we read leaves
     * (the head was read first), so it is fine as long as it names a line of
     * this chain. */
    if (strcmp(at_head, head->hash) != 0) {
        uint64_t bad = head->seq ? head->seq : 1;
        return sp_audit_report_break(report, bad,
                                     "line %" PRIu64 ": hash differs from the head's (line replaced)", bad);
    }
    return SP_OK;
}

/* report->lines counts the lines that verified before the first break;
 * bad_line is the line after them: the broken line, or for a break found at
 * the end (the head missing, malformed or ahead of the log) the first line
 * that is not there. */
sp_error sp_audit_verify(const char *path, sp_audit_report *report) {
    sp_audit_report scratch;
    if (report == NULL) report = &scratch;
    memset(report, 0, sizeof *report);
    SP_ENSURE(path != NULL && path[0] != 0, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    char head_path[PATH_MAX];
    sp_wbuf h = sp_wbuf_of(head_path, sizeof head_path);
    SP_ENSURE(sp_wbuf_put_str(&h, path) == SP_OK && sp_wbuf_put_str(&h, ".head") == SP_OK &&
                  sp_wbuf_terminate(&h) == SP_OK,
              SP_ERR_INVALID_ARGUMENT);
    /* the head before the log: a writer appending meanwhile can then only
     * put the log ahead of the head, never behind it */
    sp_audit_head head;
    sp_error rc = sp_audit_read_head(head_path, &head);
    if (rc != SP_OK) {
        (void)snprintf(report->reason, sizeof report->reason, "cannot read the head file");
        return rc;
    }
    sp_audit_reader *r = sp_malloc(sizeof *r);
    SP_ENSURE(r != NULL, SP_ERR_NO_MEMORY);
    r->pos = r->len = 0;
    r->fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    /* a log deleted behind its head is a log cut to nothing: the head check
     * reports it; with neither file there is nothing to verify */
    bool deleted = r->fd < 0 && errno == ENOENT && head.present;
    struct stat st;
    if (!deleted && (r->fd < 0 || fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        (void)snprintf(report->reason, sizeof report->reason, "cannot open the log");
        rc = SP_ERR_IO;
    } else {
        rc = sp_audit_verify_stream(r, &head, report);
    }
    if (r->fd >= 0) close(r->fd);
    sp_free(r);
    return rc;
}
