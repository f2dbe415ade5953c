/*
 * The audit log (include/sealpost/audit.h): every KMS call, admin action and
 * vault decrypt, one canonical JSON object per line, chained by SHA-256.
 *
 *   hash(line N) = SHA-256( prev as 64 hex || "\n" || line N without "hash" )
 *
 * where "line without hash" is jansson's JSON_COMPACT | JSON_SORT_KEYS
 * serialisation of the object minus its "hash" member, and prev of line 1 is
 * 64 zeros. Canonical form is what makes the chain checkable: the verifier
 * accepts only the one spelling jansson writes for a line's content, so an
 * edit cannot hide in whitespace, key order or escapes. The writer spells
 * lines itself, without building a jansson object (that was most of a
 * record's CPU time); the unit test recomputes every hash through jansson and
 * the fuzz target holds every line the writer makes to jansson's spelling.
 *
 * A chain alone cannot show that lines were cut off the end, so a sidecar
 * "<path>.head" names the newest line. Deleting the head would then be the
 * way to hide a truncation, so a non-empty log without its head is broken,
 * at open and in verify. (Nothing unkeyed can stop someone who may write
 * both files from rewriting them consistently; the chain and the head make
 * accidents, careless edits and partial tampering visible.)
 *
 * The head is a text file of exactly two slots, A then B, each one line of
 * SP_AUDIT_HEAD_SLOT bytes (sp_audit_internal.h):
 *
 *   sealpost-audit-head/2 slot=A seq=<20 digits> hash=<64 hex> check=<64 hex>
 *
 * check is the SHA-256 of the slot's bytes before " check=", so a slot torn
 * by a crash mid-write, or damaged, shows as such. A reader takes the intact
 * slot with the higher seq; with no intact slot (or two that name different
 * lines for one seq) the head is malformed. The writer overwrites, with one
 * pwrite(2), the slot that does not hold the newest seq: whatever that write
 * tears, the other slot still names the line before, which is a head one line
 * behind, the state open already accepts and repairs. The file is created
 * complete (temporary file, fsync, rename) when the log is new and is only
 * ever pwritten after that, so it never changes size. A head in the previous
 * format, {"seq":N,"hash":"..."}, is still read, and open replaces it with
 * the two-slot file.
 *
 * sp_audit_record_many writes a batch the same way: every line formatted
 * and chained first, then all of them in one write(2) and the slot naming
 * the last in one pwrite(2). A crash between the two leaves the head a
 * batch behind, which open accepts when those lines chain on from the line
 * the head names, and repairs.
 *
 * Writing: one sp_audit per log, guarded by a mutex inside and an exclusive
 * flock on the log, since two writers would fork the chain. A record is
 * formatted completely (the line, its hash, the head slot and its checksum)
 * before anything touches the disk, then the line goes out in one write(2) on
 * an O_APPEND descriptor, then the slot in one pwrite(2). If either fails,
 * the log is truncated back to where it was (a slot written in part is first
 * made to name the last line again), so sp_audit_record either returned
 * SP_OK or left the log as it was: never a partial line. Should even that
 * undoing fail, the handle refuses every later record (SP_ERR_AUDIT_BROKEN)
 * instead of chaining onto a damaged file; a complete line whose slot could
 * not be undone is then kept, since the slot may name it.
 *
 * Durability trade-off: nothing is fsynced per record (that would cost a
 * disk flush per call, and the vault records one per decrypt). A record that
 * returned SP_OK is in the kernel: it survives the process crashing, not the
 * machine losing power. sp_audit_close fsyncs the log, then the head. After a
 * power loss the head may be ahead of the log, or the log ahead of the head
 * by more than a line; verify and open then report what they find (lines
 * missing from the end, or a head that lags), which is the truth, and an
 * operator decides. The state a process crash between the two writes leaves,
 * the line written and the head one behind, open accepts and repairs.
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

#include "audit/sp_audit_internal.h"

#define SP_AUDIT_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)
#define SP_AUDIT_TIME_CHARS 20 /* 2026-11-23T23:59:59Z */
#define SP_AUDIT_LATEST_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z: four-digit years only */
#define SP_AUDIT_READ_CHUNK 65536
#define SP_AUDIT_TAIL_WAITS 20 /* verify's patience with a line being appended: 20 ms in all */
#define SP_AUDIT_TAIL_WAIT_NS 1000000L

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
    int head_fd;      /* the head, kept open: each record pwrites a slot */
    unsigned newest;  /* the slot naming the last line; records write the other */
    char head_path[PATH_MAX];
    char tmp_path[PATH_MAX];
    char dir[PATH_MAX];
    /* the line being written plus its newline; at open, the log's tail (a
     * longest line, its newline and the newline before it) */
    char line[SP_AUDIT_MAX_LINE + 2];
    char slot[SP_AUDIT_HEAD_SLOT]; /* the slot being written */
    char *batch;      /* sp_audit_record_many's lines, kept for the next batch */
    size_t batch_cap;
};

/* ---- SHA-256 ---- */

/* On the stack (sp_sha256): every record hashes twice, and a record must not
 * allocate or look an algorithm up. */
static sp_error sp_audit_digest(const char *const *pieces, const size_t *lens, size_t n,
                                char out[SP_AUDIT_HEX_CHARS + 1]) {
    uint8_t digest[SP_AUDIT_HEX_CHARS / 2];
    SP_GUARD(sp_sha256((const void *const *)pieces, lens, n, digest));
    sp_hex_encode(digest, sizeof digest, out);
    return SP_OK;
}

/* Byte order, shorter first on a tie: strcmp's order, which is the order
 * JSON_SORT_KEYS puts keys in, for names that hold no NUL. */
static int sp_audit_name_cmp(const char *a, size_t a_len, const char *b, size_t b_len) {
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) return c;
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
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

/* ---- making a line ----
 *
 * The line is spelt here directly, in the canonical form the checker below
 * accepts: members sorted by name, ',' and ':' without spaces, strings raw
 * except '"' and '\' escaped (the arguments were validated, so nothing else
 * in them needs escaping), seq in plain decimal. That is byte for byte what
 * jansson writes for the same object with JSON_COMPACT | JSON_SORT_KEYS; the
 * fuzz target checks it on every line it has the writer make. The line is
 * first written without "hash", hashed, and then the hash member is inserted
 * where its name sorts: after "event", which every line has, so always after
 * a comma-separated predecessor, exactly the cut the checker makes. */

#define SP_AUDIT_HASH_MEMBER (sizeof ",\"hash\":\"" - 1 + SP_AUDIT_HEX_CHARS + 1)

typedef struct {
    const char *name;
    size_t name_len;
    const char *value; /* NULL: the member is seq, a number */
    size_t value_len;
} sp_audit_out;

static size_t sp_audit_escaped_len(const char *s, size_t n) {
    size_t len = n;
    for (size_t i = 0; i < n; i++) len += s[i] == '"' || s[i] == '\\';
    return len;
}

static size_t sp_audit_decimal_len(uint64_t v) {
    size_t n = 1;
    while (v >= 10) v /= 10, n++;
    return n;
}

/* Writes at line[*at..]; the caller has checked that it fits. */
static void sp_audit_emit(char *line, size_t *at, const char *s, size_t n) {
    memcpy(line + *at, s, n);
    *at += n;
}

static void sp_audit_emit_member(char *line, size_t *at, const sp_audit_out *m, uint64_t seq) {
    line[(*at)++] = '"';
    sp_audit_emit(line, at, m->name, m->name_len);
    sp_audit_emit(line, at, "\":", 2);
    if (m->value == NULL) {
        char digits[20];
        size_t n = 0;
        do {
            digits[n++] = (char)('0' + seq % 10);
            seq /= 10;
        } while (seq != 0);
        while (n > 0) line[(*at)++] = digits[--n];
        return;
    }
    line[(*at)++] = '"';
    for (size_t i = 0; i < m->value_len; i++) {
        char c = m->value[i];
        if (c == '"' || c == '\\') line[(*at)++] = '\\';
        line[(*at)++] = c;
    }
    line[(*at)++] = '"';
}

/* sp_audit_format_line after its checks of prev_hex and the time, which
 * a batch makes once: every line of it after the first chains to a hash
 * this file just computed, and all share one time. */
static sp_error sp_audit_format_chained(const char *prev_hex, uint64_t seq, const char when[SP_AUDIT_TIME_CHARS + 1],
                                        const char *event, const sp_audit_field *fields, size_t n_fields, char *line,
                                        size_t cap, size_t *len, char hash_out[SP_AUDIT_HEX_CHARS + 1]) {
    SP_ENSURE(line != NULL && len != NULL && hash_out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(seq >= 1 && seq <= (uint64_t)INT64_MAX, SP_ERR_INVALID_ARGUMENT); /* a JSON integer to jansson */
    SP_GUARD(sp_audit_check_args(event, fields, n_fields));

    sp_audit_out m[SP_AUDIT_MAX_FIELDS + 4];
    size_t n = 0;
    m[n++] = (sp_audit_out){"event", 5, event, strlen(event)};
    m[n++] = (sp_audit_out){"prev", 4, prev_hex, SP_AUDIT_HEX_CHARS};
    m[n++] = (sp_audit_out){"seq", 3, NULL, 0};
    m[n++] = (sp_audit_out){"time", 4, when, SP_AUDIT_TIME_CHARS};
    for (size_t i = 0; i < n_fields; i++) {
        m[n++] = (sp_audit_out){fields[i].name, strlen(fields[i].name), fields[i].value, strlen(fields[i].value)};
    }
    /* insertion sort: at most twenty members, mostly in order already; the
     * names are distinct (checked above, and none reserved) */
    for (size_t i = 1; i < n; i++) {
        sp_audit_out x = m[i];
        size_t j = i;
        for (; j > 0 && sp_audit_name_cmp(m[j - 1].name, m[j - 1].name_len, x.name, x.name_len) > 0; j--) {
            m[j] = m[j - 1];
        }
        m[j] = x;
    }

    /* the exact length first: "{}", commas, and per member "name":value */
    size_t body = 2 + (n - 1);
    for (size_t i = 0; i < n; i++) {
        body += m[i].name_len + 3;
        body += m[i].value == NULL ? sp_audit_decimal_len(seq) : sp_audit_escaped_len(m[i].value, m[i].value_len) + 2;
    }
    size_t total = body + SP_AUDIT_HASH_MEMBER;
    size_t room = cap < SP_AUDIT_MAX_LINE ? cap : SP_AUDIT_MAX_LINE;
    SP_ENSURE(total <= SP_AUDIT_MAX_LINE, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(total <= room, SP_ERR_BUFFER_TOO_SMALL);

    size_t at = 0, cut = 0;
    line[at++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (cut == 0 && sp_audit_name_cmp(m[i].name, m[i].name_len, "hash", 4) > 0) cut = at;
        if (i > 0) line[at++] = ',';
        sp_audit_emit_member(line, &at, &m[i], seq);
    }
    if (cut == 0) cut = at; /* not reached: "prev", "seq" and "time" sort after "hash" */
    line[at++] = '}';

    char hash[SP_AUDIT_HEX_CHARS + 1];
    const char *pieces[] = {prev_hex, "\n", line};
    const size_t lens[] = {SP_AUDIT_HEX_CHARS, 1, body};
    SP_GUARD(sp_audit_digest(pieces, lens, SP_ARRAY_LEN(pieces), hash));
    memmove(line + cut + SP_AUDIT_HASH_MEMBER, line + cut, body - cut);
    at = cut;
    sp_audit_emit(line, &at, ",\"hash\":\"", SP_AUDIT_HASH_MEMBER - SP_AUDIT_HEX_CHARS - 1);
    sp_audit_emit(line, &at, hash, SP_AUDIT_HEX_CHARS);
    line[at] = '"';
    *len = total;
    memcpy(hash_out, hash, sizeof hash);
    return SP_OK;
}

sp_error sp_audit_format_line(const char *prev_hex, uint64_t seq, int64_t unix_time, const char *event,
                              const sp_audit_field *fields, size_t n_fields, char *line, size_t cap, size_t *len,
                              char hash_out[SP_AUDIT_HEX_CHARS + 1]) {
    SP_ENSURE(prev_hex != NULL && sp_audit_hex_ok(prev_hex, strnlen(prev_hex, SP_AUDIT_HEX_CHARS + 1)),
              SP_ERR_INVALID_ARGUMENT);
    char when[SP_AUDIT_TIME_CHARS + 1];
    SP_GUARD(sp_audit_format_time(unix_time, when));
    return sp_audit_format_chained(prev_hex, seq, when, event, fields, n_fields, line, cap, len, hash_out);
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
    return sp_audit_name_cmp(a->key, a->key_len, b->key, b->key_len);
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

/* ---- the head file ---- */

#define SP_AUDIT_HEAD_READ 512 /* more than either format holds: a longer file is no head of ours */
#define SP_AUDIT_LEGACY_MAX 256
#define SP_AUDIT_HEAD_TRIES 3

/* The first format, one record replaced by rename after every line:
 * {"seq":N,"hash":"<64 hex>"} and an optional newline, exactly as it was
 * written. Still read, so that a log from before the slots verifies and
 * opens (open converts its head). */
static void sp_audit_parse_legacy_head(const char *text, size_t len, sp_audit_head *h) {
    h->legacy = true;
    h->problem = "not a head record";
    sp_cursor c = sp_cursor_of(text, len);
    uint64_t seq = 0;
    sp_span hex;
    if (len > SP_AUDIT_LEGACY_MAX || !sp_cursor_accept(&c, "{\"seq\":") || !sp_audit_scan_count(&c, &seq) ||
        !sp_cursor_accept(&c, ",\"hash\":\"") || !sp_cursor_take_until(&c, '"', &hex) ||
        !sp_audit_hex_ok((const char *)hex.data, hex.len) || !sp_cursor_accept(&c, "}")) {
        return;
    }
    (void)sp_cursor_accept(&c, "\n");
    if (sp_cursor_left(&c) != 0) return;
    h->valid = true;
    h->problem = NULL;
    h->seq = seq;
    memcpy(h->hash, hex.data, SP_AUDIT_HEX_CHARS);
    h->hash[SP_AUDIT_HEX_CHARS] = 0;
}

sp_error sp_audit_head_slot(unsigned slot, uint64_t seq, const char *hash_hex, char out[SP_AUDIT_HEAD_SLOT]) {
    SP_ENSURE(slot < 2 && seq <= (uint64_t)INT64_MAX && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(hash_hex != NULL && sp_audit_hex_ok(hash_hex, strnlen(hash_hex, SP_AUDIT_HEX_CHARS + 1)),
              SP_ERR_INVALID_ARGUMENT);
    size_t at = 0;
    sp_audit_emit(out, &at, SP_AUDIT_HEAD_MAGIC " slot=", sizeof SP_AUDIT_HEAD_MAGIC " slot=" - 1);
    out[at++] = (char)('A' + slot);
    sp_audit_emit(out, &at, " seq=", 5);
    for (size_t i = 20; i > 0; i--, seq /= 10) out[at + i - 1] = (char)('0' + seq % 10);
    at += 20;
    sp_audit_emit(out, &at, " hash=", 6);
    sp_audit_emit(out, &at, hash_hex, SP_AUDIT_HEX_CHARS);
    char check[SP_AUDIT_HEX_CHARS + 1];
    const char *pieces[] = {out};
    const size_t lens[] = {SP_AUDIT_HEAD_CHECKED};
    SP_GUARD(sp_audit_digest(pieces, lens, 1, check));
    sp_audit_emit(out, &at, " check=", 7);
    sp_audit_emit(out, &at, check, SP_AUDIT_HEX_CHARS);
    out[at] = '\n';
    return SP_OK;
}

/* One slot, intact or not: exactly what sp_audit_head_slot writes for this
 * slot, checksum included. */
static sp_error sp_audit_read_slot(const char *text, unsigned slot, bool *intact, uint64_t *seq,
                                   char hash[SP_AUDIT_HEX_CHARS + 1]) {
    *intact = false;
    char label[] = " slot=A seq=";
    label[6] = (char)('A' + slot);
    sp_cursor c = sp_cursor_of(text, SP_AUDIT_HEAD_SLOT);
    if (!sp_cursor_accept(&c, SP_AUDIT_HEAD_MAGIC) || !sp_cursor_accept(&c, label)) return SP_OK;
    const char *digits = (const char *)c.data + c.pos;
    uint64_t v = 0;
    for (size_t i = 0; i < 20; i++) {
        if (digits[i] < '0' || digits[i] > '9') return SP_OK;
        uint64_t d = (uint64_t)(digits[i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) return SP_OK; /* more than the writer can write */
        v = v * 10 + d;
    }
    c.pos += 20;
    if (!sp_cursor_accept(&c, " hash=")) return SP_OK;
    const char *hex = (const char *)c.data + c.pos;
    if (!sp_audit_hex_ok(hex, SP_AUDIT_HEX_CHARS)) return SP_OK;
    c.pos += SP_AUDIT_HEX_CHARS;
    if (!sp_cursor_accept(&c, " check=")) return SP_OK;
    const char *check = (const char *)c.data + c.pos;
    c.pos += SP_AUDIT_HEX_CHARS;
    if (!sp_cursor_accept(&c, "\n") || sp_cursor_left(&c) != 0) return SP_OK;
    char computed[SP_AUDIT_HEX_CHARS + 1];
    const char *pieces[] = {text};
    const size_t lens[] = {SP_AUDIT_HEAD_CHECKED};
    SP_GUARD(sp_audit_digest(pieces, lens, 1, computed));
    if (memcmp(computed, check, SP_AUDIT_HEX_CHARS) != 0) return SP_OK;
    *intact = true;
    *seq = v;
    memcpy(hash, hex, SP_AUDIT_HEX_CHARS);
    hash[SP_AUDIT_HEX_CHARS] = 0;
    return SP_OK;
}

sp_error sp_audit_parse_head(const char *text, size_t len, sp_audit_head *h) {
    SP_ENSURE(h != NULL && (text != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    memset(h, 0, sizeof *h);
    h->present = true;
    if (len > 0 && text[0] == '{') {
        sp_audit_parse_legacy_head(text, len, h);
        return SP_OK;
    }
    if (len != SP_AUDIT_HEAD_SIZE) {
        h->problem = "not two slots";
        return SP_OK;
    }
    bool intact[2];
    uint64_t seq[2] = {0, 0};
    char hash[2][SP_AUDIT_HEX_CHARS + 1];
    for (unsigned i = 0; i < 2; i++) {
        SP_GUARD(sp_audit_read_slot(text + i * SP_AUDIT_HEAD_SLOT, i, &intact[i], &seq[i], hash[i]));
    }
    if (!intact[0] && !intact[1]) {
        h->problem = "no intact slot";
        return SP_OK;
    }
    unsigned pick = intact[0] ? 0 : 1;
    if (intact[0] && intact[1]) {
        /* the writer only ever writes a seq above the other slot's, or both
         * slots alike when it creates the file */
        if (seq[0] == seq[1] && strcmp(hash[0], hash[1]) != 0) {
            h->problem = "both slots give one seq different hashes";
            return SP_OK;
        }
        pick = seq[1] > seq[0] ? 1 : 0;
    }
    h->valid = true;
    h->newest = pick;
    h->seq = seq[pick];
    memcpy(h->hash, hash[pick], sizeof h->hash);
    return SP_OK;
}

/* Reads and judges the head through fd. A reader racing the writer may
 * catch the slot being written half done; the other slot is then intact,
 * unless the writer finished and went on to that one too while this read
 * was under way (one pread of a few hundred bytes against a record's worth
 * of work: rare, not impossible), so a head read as invalid is read again a
 * few times before that counts. A head that is really damaged stays so. */
static sp_error sp_audit_read_head_fd(int fd, sp_audit_head *h) {
    char text[SP_AUDIT_HEAD_READ + 1];
    for (unsigned attempt = 1;; attempt++) {
        size_t got = 0;
        while (got < sizeof text) {
            ssize_t n = pread(fd, text + got, sizeof text - got, (off_t)got);
            if (n < 0 && errno == EINTR) continue;
            SP_ENSURE(n >= 0, SP_ERR_IO);
            if (n == 0) break;
            got += (size_t)n;
        }
        if (got > SP_AUDIT_HEAD_READ) {
            memset(h, 0, sizeof *h);
            h->present = true;
            h->problem = "too long";
            return SP_OK;
        }
        SP_GUARD(sp_audit_parse_head(text, got, h));
        if (h->valid || attempt == SP_AUDIT_HEAD_TRIES) return SP_OK;
    }
}

/* For verify: SP_OK with present = false when there is none; SP_ERR_IO when
 * it exists but cannot be read (a symlink in its place among others). */
static sp_error sp_audit_read_head(const char *path, sp_audit_head *h) {
    memset(h, 0, sizeof *h);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? SP_OK : SP_ERR_IO;
    struct stat st;
    sp_error rc = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? sp_audit_read_head_fd(fd, h) : SP_ERR_IO;
    close(fd);
    return rc;
}

static void sp_audit_sync_dir(const sp_audit *a) {
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* Creates the head with both slots naming (seq, hash): written complete
 * beside it, fsynced and renamed over whatever was there (nothing, or a
 * legacy head), so a crash leaves the old file or the whole new one, never
 * a short one. The descriptor stays open, following the inode through the
 * rename: records pwrite into it from now on and the file never changes
 * size again. The temporary name is fixed: the flock makes us the only
 * writer, and one left behind by a crash is simply replaced. */
static sp_error sp_audit_create_head(sp_audit *a, uint64_t seq, const char *hash) {
    char text[SP_AUDIT_HEAD_SIZE];
    SP_GUARD(sp_audit_head_slot(0, seq, hash, text));
    SP_GUARD(sp_audit_head_slot(1, seq, hash, text + SP_AUDIT_HEAD_SLOT));
    int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(a->tmp_path, flags, 0600);
    if (fd < 0 && errno == EEXIST) {
        (void)unlink(a->tmp_path);
        fd = open(a->tmp_path, flags, 0600);
    }
    SP_ENSURE(fd >= 0, SP_ERR_IO);
    sp_error rc = sp_fd_write_all(fd, text, sizeof text);
    if (rc == SP_OK && fsync(fd) != 0) rc = SP_ERR_IO;
    if (rc == SP_OK && rename(a->tmp_path, a->head_path) != 0) rc = SP_ERR_IO;
    if (rc != SP_OK) {
        close(fd);
        (void)unlink(a->tmp_path);
        return rc;
    }
    sp_audit_sync_dir(a);
    if (a->head_fd >= 0) close(a->head_fd);
    a->head_fd = fd;
    a->newest = 0;
    return SP_OK;
}

/* One pwrite(2) of a slot, formatted already. Within the file's fixed size,
 * so it allocates no blocks on an ordinary file system and leaves the other
 * slot's bytes alone whatever happens to it. *written: how many of the
 * slot's bytes reached the file, for a failure. durable: fdatasync too
 * (open's repair; records never). */
static sp_error sp_audit_put_slot(const sp_audit *a, unsigned slot, const char *text, bool durable,
                                  size_t *written) {
    off_t base = (off_t)slot * (off_t)SP_AUDIT_HEAD_SLOT;
    size_t done = 0;
    sp_error rc = SP_OK;
    while (done < SP_AUDIT_HEAD_SLOT && rc == SP_OK) {
        ssize_t n = pwrite(a->head_fd, text + done, SP_AUDIT_HEAD_SLOT - done, base + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) done += (size_t)n;
        else rc = SP_ERR_IO;
    }
    if (rc == SP_OK && durable && fdatasync(a->head_fd) != 0) rc = SP_ERR_IO;
    if (written != NULL) *written = done;
    return rc;
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

/* Makes slot `slot` name the last line recorded, undoing a partial write
 * of the next one. */
static bool sp_audit_undo_slot(sp_audit *a, unsigned slot) {
    return sp_audit_head_slot(slot, a->seq, a->prev, a->slot) == SP_OK &&
           sp_audit_put_slot(a, slot, a->slot, false, NULL) == SP_OK;
}

/* Writes lines (their newlines included), which end with line `seq` of
 * hash `hash`, and the head slot naming it; or leaves the log as it was. */
static sp_error sp_audit_append_lines(sp_audit *a, const char *lines, size_t len, uint64_t seq,
                                      const char hash[SP_AUDIT_HEX_CHARS + 1]) {
    unsigned slot = 1 - a->newest;
    SP_GUARD(sp_audit_head_slot(slot, seq, hash, a->slot));
    /* one write(2) and one pwrite(2) in practice; the loops only matter
     * after a signal or a short write on a full disk */
    sp_error rc = sp_fd_write_all(a->fd, lines, len);
    if (rc != SP_OK) {
        sp_audit_roll_back(a);
        return rc;
    }
    size_t written = 0;
    rc = sp_audit_put_slot(a, slot, a->slot, false, &written);
    if (rc != SP_OK) {
        /* Part of the slot may have reached the file, and a slot short of
         * only its final newline, which it shares with what was there,
         * would read as intact, naming the line about to be cut off. So
         * first make the slot name the last line that stays, as the other
         * one does. Should that fail too, the line stays: complete, and
         * named by the slot or one ahead of a torn one, either of which
         * verify and open accept; the handle stops recording. */
        if (written > 0 && !sp_audit_undo_slot(a, slot)) {
            a->wedged = true;
            return rc;
        }
        sp_audit_roll_back(a);
        return rc;
    }
    a->size += (off_t)len;
    a->seq = seq;
    a->newest = slot;
    memcpy(a->prev, hash, SP_AUDIT_HEX_CHARS + 1);
    return SP_OK;
}

static sp_error sp_audit_append_locked(sp_audit *a, const char *event, const sp_audit_field *fields,
                                       size_t n_fields) {
    SP_ENSURE(!a->wedged, SP_ERR_AUDIT_BROKEN);
    SP_ENSURE(a->seq < (uint64_t)INT64_MAX, SP_ERR_TOO_LARGE);
    uint64_t seq = a->seq + 1;
    char hash[SP_AUDIT_HEX_CHARS + 1];
    size_t len = 0;
    /* everything that can fail for memory or for the caller's arguments
     * happens here, before the disk is touched: the line and the slot */
    SP_GUARD(sp_audit_format_line(a->prev, seq, sp_now_seconds(), event, fields, n_fields, a->line,
                                  sizeof a->line - 1, &len, hash));
    a->line[len] = '\n';
    return sp_audit_append_lines(a, a->line, len + 1, seq, hash);
}

sp_error sp_audit_record(sp_audit *audit, const char *event, const sp_audit_field *fields, size_t n_fields) {
    SP_ENSURE(audit != NULL, SP_ERR_INVALID_ARGUMENT);
    pthread_mutex_lock(&audit->lock);
    sp_error rc = sp_audit_append_locked(audit, event, fields, n_fields);
    pthread_mutex_unlock(&audit->lock);
    return rc;
}

/* Room for `more` bytes after the `used` ones of a->batch, keeping them. */
static sp_error sp_audit_batch_room(sp_audit *a, size_t used, size_t more) {
    if (a->batch_cap - used >= more) return SP_OK;
    size_t cap = a->batch_cap ? a->batch_cap : 64u << 10;
    while (cap - used < more) cap *= 2;
    char *b = sp_malloc(cap);
    SP_ENSURE(b != NULL, SP_ERR_NO_MEMORY);
    if (used > 0) memcpy(b, a->batch, used);
    sp_free(a->batch);
    a->batch = b;
    a->batch_cap = cap;
    return SP_OK;
}

static sp_error sp_audit_append_many_locked(sp_audit *a, const sp_audit_entry *entries, size_t n) {
    SP_ENSURE(!a->wedged, SP_ERR_AUDIT_BROKEN);
    SP_ENSURE(a->seq <= (uint64_t)INT64_MAX - n, SP_ERR_TOO_LARGE);
    /* every line formatted and chained before the disk is touched */
    char prev[SP_AUDIT_HEX_CHARS + 1], hash[SP_AUDIT_HEX_CHARS + 1], when[SP_AUDIT_TIME_CHARS + 1];
    memcpy(prev, a->prev, sizeof prev);
    SP_ENSURE(sp_audit_hex_ok(prev, strnlen(prev, SP_AUDIT_HEX_CHARS + 1)), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_audit_format_time(sp_now_seconds(), when));
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        /* room for the longest line, formatted in place */
        SP_GUARD(sp_audit_batch_room(a, used, sizeof a->line));
        SP_GUARD(sp_audit_format_chained(prev, a->seq + 1 + i, when, entries[i].event, entries[i].fields,
                                         entries[i].n_fields, a->batch + used, sizeof a->line - 1, &len, hash));
        a->batch[used + len] = '\n';
        used += len + 1;
        memcpy(prev, hash, sizeof prev);
    }
    return sp_audit_append_lines(a, a->batch, used, a->seq + n, hash);
}

sp_error sp_audit_record_many(sp_audit *audit, const sp_audit_entry *entries, size_t n) {
    SP_ENSURE(audit != NULL && entries != NULL && n >= 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n <= SP_AUDIT_MAX_BATCH, SP_ERR_TOO_LARGE);
    pthread_mutex_lock(&audit->lock);
    sp_error rc = sp_audit_append_many_locked(audit, entries, n);
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

/* The head, opened for writing and kept open (under the log's flock, so
 * nobody else writes it). present = false when there is none. */
static sp_error sp_audit_open_head(sp_audit *a, sp_audit_head *h) {
    memset(h, 0, sizeof *h);
    int fd = open(a->head_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? SP_OK : SP_ERR_IO;
    a->head_fd = fd;
    struct stat st;
    SP_ENSURE(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), SP_ERR_IO);
    return sp_audit_read_head_fd(fd, h);
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

/* True when the log's last k lines (2 <= k <= SP_AUDIT_MAX_BATCH) chain
 * on from the line the head names: what a crash between a batch's write
 * and its slot's leaves. Reads the tail they can occupy at most. */
static bool sp_audit_batch_behind(sp_audit *a, const sp_audit_head *head, uint64_t k) {
    size_t most = (size_t)k * (SP_AUDIT_MAX_LINE + 1) + 1;
    size_t want = a->size < (off_t)most ? (size_t)a->size : most;
    char *tail = sp_malloc(want);
    if (tail == NULL) return false;
    off_t at = a->size - (off_t)want;
    size_t got = 0;
    bool ok = true;
    while (ok && got < want) {
        ssize_t n = pread(a->fd, tail + got, want - got, at + (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) got += (size_t)n;
        else ok = false;
    }
    /* the start of the k-th line from the end: a line starts after a
     * newline, or at the start of the file */
    size_t start = 0;
    uint64_t starts = 0;
    for (size_t i = want - 1; ok && i > 0 && starts < k; i--) {
        if (tail[i - 1] != '\n') continue;
        starts++;
        start = i;
    }
    if (ok && starts < k) {
        ok = at == 0 && starts + 1 == k;
        start = 0;
    }
    char prev[SP_AUDIT_HEX_CHARS + 1];
    memcpy(prev, head->hash, sizeof prev);
    for (uint64_t i = 0; ok && i < k; i++) {
        const char *nl = memchr(tail + start, '\n', want - start);
        if (nl == NULL) {
            ok = false;
            break;
        }
        sp_audit_line info;
        char reason[128];
        ok = sp_audit_check_line(prev, head->seq + 1 + i, tail + start, (size_t)(nl - (tail + start)), &info, reason,
                                 sizeof reason) == SP_OK;
        memcpy(prev, info.hash, sizeof prev);
        start = (size_t)(nl - tail) + 1;
    }
    sp_free(tail);
    return ok && start == want;
}

/* Finds where the chain ends and checks the end against the head. */
static sp_error sp_audit_resume(sp_audit *a) {
    sp_audit_head head;
    SP_GUARD(sp_audit_open_head(a, &head));
    a->newest = head.newest;
    if (a->size == 0) {
        /* a new log, or one emptied although its head says it held lines */
        SP_ENSURE(!head.present || (head.valid && head.seq == 0 && strcmp(head.hash, sp_audit_zero) == 0),
                  SP_ERR_AUDIT_BROKEN);
        a->seq = 0;
        memcpy(a->prev, sp_audit_zero, sizeof sp_audit_zero);
        return head.present && !head.legacy ? SP_OK : sp_audit_create_head(a, 0, sp_audit_zero);
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
    bool level = head.seq == info.seq && strcmp(head.hash, info.hash) == 0;
    /* the state a crash between the line's write and the slot's leaves: the
     * head one line behind, naming the last line's predecessor */
    bool one_behind = head.seq + 1 == info.seq && strcmp(head.hash, info.prev) == 0;
    /* or a batch behind (sp_audit_record_many, which writes two-slot heads
     * only: a legacy head was never a batch behind) */
    bool batch_behind = !level && !one_behind && !head.legacy && head.seq < info.seq &&
                        info.seq - head.seq <= SP_AUDIT_MAX_BATCH &&
                        sp_audit_batch_behind(a, &head, info.seq - head.seq);
    SP_ENSURE(level || one_behind || batch_behind, SP_ERR_AUDIT_BROKEN);
    if (head.legacy) return sp_audit_create_head(a, a->seq, a->prev);
    if (level) return SP_OK;
    unsigned slot = 1 - a->newest;
    SP_GUARD(sp_audit_head_slot(slot, a->seq, a->prev, a->slot));
    SP_GUARD(sp_audit_put_slot(a, slot, a->slot, true, NULL));
    a->newest = slot;
    return SP_OK;
}

sp_error sp_audit_open(const char *path, sp_audit **out) {
    SP_ENSURE(path != NULL && path[0] != 0 && out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_GUARD(sp_init());
    sp_audit *a = sp_calloc(1, sizeof *a);
    SP_ENSURE(a != NULL, SP_ERR_NO_MEMORY);
    a->fd = -1;
    a->head_fd = -1;
    bool created = false;
    sp_error rc = sp_audit_set_paths(a, path);
    if (rc == SP_ERR_BUFFER_TOO_SMALL) rc = SP_ERR_INVALID_ARGUMENT; /* a path longer than PATH_MAX */
    if (rc == SP_OK) rc = sp_audit_open_log(a, path, &created);
    if (rc == SP_OK) rc = sp_audit_resume(a);
    if (rc == SP_OK && created) sp_audit_sync_dir(a);
    if (rc == SP_OK && pthread_mutex_init(&a->lock, NULL) != 0) rc = SP_ERR_NO_MEMORY;
    if (rc != SP_OK) {
        if (a->head_fd >= 0) close(a->head_fd);
        if (a->fd >= 0) close(a->fd);
        sp_free(a);
        return rc;
    }
    *out = a;
    return SP_OK;
}

/* Not concurrent with sp_audit_record on the same handle: the caller stops
 * recording first. Records were only handed to the kernel; this is where
 * they become durable: the log first, then the head that vouches for it
 * (a wedged handle's log too: what is on disk should be what the kernel
 * had, and open and verify judge it). */
void sp_audit_close(sp_audit *audit) {
    if (audit == NULL) return;
    (void)fsync(audit->fd);
    if (audit->head_fd >= 0) {
        (void)fdatasync(audit->head_fd); /* its size never changes: the data is all there is to flush */
        close(audit->head_fd);
    }
    close(audit->fd); /* releases the flock */
    pthread_mutex_destroy(&audit->lock);
    sp_free(audit->batch);
    sp_free(audit);
}

/* ---- verifying ---- */

typedef enum { SP_LINE_OK, SP_LINE_END, SP_LINE_TOO_LONG, SP_LINE_UNTERMINATED, SP_LINE_IO } sp_line_status;

/* Streams a file line by line, holding at most one chunk and one line. A
 * line found unfinished at the end of the file is kept: asked again, the
 * reader goes on reading from where the file ended, so a line still being
 * appended can be picked up whole. */
typedef struct {
    int fd;
    size_t pos, len;
    size_t have; /* bytes of the current line in line[] so far */
    char chunk[SP_AUDIT_READ_CHUNK];
    char line[SP_AUDIT_MAX_LINE];
} sp_audit_reader;

static sp_line_status sp_audit_next_line(sp_audit_reader *r, size_t *len) {
    if (r->fd < 0) return SP_LINE_END; /* a log that is not there reads as empty */
    for (;;) {
        if (r->pos == r->len) {
            ssize_t got = read(r->fd, r->chunk, sizeof r->chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return SP_LINE_IO;
            if (got == 0) return r->have == 0 ? SP_LINE_END : SP_LINE_UNTERMINATED;
            r->pos = 0;
            r->len = (size_t)got;
        }
        sp_cursor c = sp_cursor_of(r->chunk + r->pos, r->len - r->pos);
        sp_span piece;
        bool complete = sp_cursor_take_until(&c, '\n', &piece);
        if (!complete) piece = sp_cursor_rest(&c);
        if (piece.len > sizeof r->line - r->have) return SP_LINE_TOO_LONG;
        if (piece.len) memcpy(r->line + r->have, piece.data, piece.len);
        r->have += piece.len;
        r->pos += c.pos;
        if (complete) {
            *len = r->have;
            r->have = 0;
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
    unsigned waits = 0;
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
        if (st == SP_LINE_UNTERMINATED && head->valid && no > head->seq && waits < SP_AUDIT_TAIL_WAITS) {
            /* A line the head does not vouch for yet may be a record being
             * appended right now: a write(2) that spans a page boundary
             * reaches a concurrent reader in pieces. It completes within
             * microseconds; a line really cut short stays so. */
            waits++;
            (void)nanosleep(&(struct timespec){0, SP_AUDIT_TAIL_WAIT_NS}, NULL);
            continue;
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
    if (!head->valid) {
        return sp_audit_report_break(report, lines + 1, "end: head file malformed (%s)", head->problem);
    }
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
    r->pos = r->len = r->have = 0;
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
