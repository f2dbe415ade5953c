/*
 * Structured logs. A line is built on the stack (no allocation, so a log
 * call cannot fail for memory and costs no heap churn on a request path) and
 * leaves in one write(2), so lines from concurrent threads never interleave
 * on an O_APPEND file.
 *
 * Escaping is the security property: callers hand in ids and error names,
 * but some of those come from the network (a tenant id, a route), so every
 * string is JSON-escaped with control bytes as \u00XX and invalid UTF-8
 * replaced by U+FFFD (one per bad byte): no value can end the line, open a
 * new key or smuggle bytes a log shipper would choke on. Keys are not
 * escaped but validated ([a-z0-9_.]); a field with a bad key is dropped and
 * the line says how many were ("dropped_fields":N). A line that would pass
 * SP_LOG_MAX_LINE is cut at a field or character boundary and closed with
 * "truncated":true, so it is still one valid JSON object.
 *
 * The sink is swapped under a write lock; writers take the read lock, so a
 * descriptor is never closed under a writer nor reused by another file
 * while a line is on its way.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/sp_core.h"
#include "sealpost/log.h"

static pthread_rwlock_t sp_log_lock = PTHREAD_RWLOCK_INITIALIZER;
static int sp_log_fd = STDERR_FILENO;  /* under sp_log_lock */
static bool sp_log_owned;              /* sp_log_fd is ours to close */
static atomic_int sp_log_min = SP_LOG_INFO;

static const char *const sp_level_names[] = {"debug", "info", "warn", "error"};

/* room kept at the end of every line for the truncation marker */
static const char sp_log_trailer_cut[] = ",\"truncated\":true}\n";
#define SP_LOG_BODY_MAX (SP_LOG_MAX_LINE - (sizeof sp_log_trailer_cut - 1))

sp_error sp_log_level_parse(const char *text, sp_log_level *out) {
    SP_ENSURE(text != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < SP_ARRAY_LEN(sp_level_names); i++) {
        if (strcmp(text, sp_level_names[i]) == 0) {
            *out = (sp_log_level)i;
            return SP_OK;
        }
    }
    return SP_ERR_INVALID_ARGUMENT;
}

static bool sp_level_ok(sp_log_level level) { return level >= SP_LOG_DEBUG && level <= SP_LOG_ERROR; }

sp_error sp_log_open(const char *path, sp_log_level min_level) {
    SP_ENSURE(sp_level_ok(min_level), SP_ERR_INVALID_ARGUMENT);
    int fd = STDERR_FILENO;
    bool owned = false;
    if (path != NULL && strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        SP_ENSURE(fd >= 0, errno == ENOENT ? SP_ERR_NOT_FOUND : SP_ERR_IO);
        struct stat st;
        sp_error rc = SP_OK;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = SP_ERR_IO;
        /* an existing file others can read is refused rather than
         * tightened: someone chose that mode, and ids in logs still map
         * out who talks to whom */
        if (rc == SP_OK && (st.st_mode & 077) != 0) rc = SP_ERR_INSECURE_PERMISSIONS;
        if (rc != SP_OK) {
            close(fd);
            return rc;
        }
        owned = true;
    }
    pthread_rwlock_wrlock(&sp_log_lock);
    int old = sp_log_fd;
    bool old_owned = sp_log_owned;
    sp_log_fd = fd;
    sp_log_owned = owned;
    atomic_store(&sp_log_min, (int)min_level);
    pthread_rwlock_unlock(&sp_log_lock);
    if (old_owned) close(old);
    return SP_OK;
}

void sp_log_close(void) {
    pthread_rwlock_wrlock(&sp_log_lock);
    int old = sp_log_fd;
    bool old_owned = sp_log_owned;
    sp_log_fd = STDERR_FILENO;
    sp_log_owned = false;
    pthread_rwlock_unlock(&sp_log_lock);
    if (old_owned) close(old);
}

bool sp_log_enabled(sp_log_level level) {
    return sp_level_ok(level) && (int)level >= atomic_load_explicit(&sp_log_min, memory_order_relaxed);
}

/* ---- line building ---- */

typedef struct sp_line {
    char buf[SP_LOG_MAX_LINE];
    size_t len;
    bool cut;
} sp_line;

static size_t sp_line_room(const sp_line *l) { return SP_LOG_BODY_MAX - l->len; }

static bool sp_line_put(sp_line *l, const char *s, size_t n) {
    if (n > sp_line_room(l)) return false;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool sp_line_str(sp_line *l, const char *s) { return sp_line_put(l, s, strlen(s)); }

/* The length of the valid UTF-8 sequence at p (1..4), or 0 when the byte
 * there does not start one: overlong forms, surrogates and code points
 * past U+10FFFF are invalid. */
static size_t sp_utf8_len(const unsigned char *p) {
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        if (p[1] < lo || p[1] > hi) return 0;
        return (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        if (p[1] < lo || p[1] > hi) return 0;
        if ((p[2] & 0xc0) != 0x80) return 0;
        return (p[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* A quoted, escaped string. Cut short when the line is full: the string is
 * closed at the last whole character that fits and the line marked. The
 * bounds checks above never read past the NUL: a NUL is not a continuation
 * byte, so the checks stop there. */
static bool sp_line_json_str(sp_line *l, const char *s) {
    if (!sp_line_put(l, "\"", 1)) return false;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char esc[8];
        const char *out = esc;
        size_t n, adv = 1;
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        } else if (c < 0x80) {
            out = (const char *)p;
            n = 1;
        } else if ((adv = sp_utf8_len(p)) != 0) {
            out = (const char *)p;
            n = adv;
        } else {
            out = "\\ufffd";
            n = 6;
            adv = 1;
        }
        /* one byte kept for the closing quote */
        if (n + 1 > sp_line_room(l)) {
            l->cut = true;
            break;
        }
        (void)sp_line_put(l, out, n);
        p += adv;
    }
    return sp_line_put(l, "\"", 1);
}

static bool sp_key_ok(const char *key) {
    if (key == NULL || key[0] == 0 || strlen(key) > 64) return false;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
    }
    /* the names the line itself uses */
    static const char *const reserved[] = {"ts", "level", "event", "truncated", "dropped_fields"};
    for (size_t i = 0; i < SP_ARRAY_LEN(reserved); i++) {
        if (strcmp(key, reserved[i]) == 0) return false;
    }
    return true;
}

static void sp_format_json_double(double v, char out[32]) {
    if (!isfinite(v)) {
        memcpy(out, "null", 5); /* JSON has no NaN or Inf */
        return;
    }
    sp_format_double(v, out);
}

/* ,"key":value — all of it or none of it, except a long string value,
 * which is cut inside. */
static bool sp_line_field(sp_line *l, const sp_log_field *f) {
    size_t mark = l->len;
    char num[32];
    bool ok = sp_line_str(l, ",\"") && sp_line_str(l, f->key) && sp_line_str(l, "\":");
    if (ok) {
        switch (f->type) {
        case SP_LOG_STR:
            ok = f->s != NULL ? sp_line_json_str(l, f->s) : sp_line_str(l, "null");
            break;
        case SP_LOG_INT:
            (void)snprintf(num, sizeof num, "%lld", (long long)f->i);
            ok = sp_line_str(l, num);
            break;
        case SP_LOG_BOOL:
            ok = sp_line_str(l, f->i ? "true" : "false");
            break;
        case SP_LOG_DOUBLE:
            sp_format_json_double(f->d, num);
            ok = sp_line_str(l, num);
            break;
        default:
            ok = sp_line_str(l, "null");
            break;
        }
    }
    if (!ok) {
        l->len = mark;
        l->cut = true;
    }
    return ok && !l->cut;
}

static void sp_line_ts(sp_line *l) {
    struct timespec ts;
    struct tm tm;
    char out[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(out, sizeof out, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
    if (n > 0 && (size_t)n < sizeof out) (void)sp_line_put(l, out, (size_t)n);
}

void sp_log(sp_log_level level, const char *event, const sp_log_field *fields, size_t n_fields) {
    if (!sp_log_enabled(level)) return;
    sp_line l;
    l.len = 0;
    l.cut = false;
    sp_line_ts(&l);
    (void)sp_line_str(&l, ",\"level\":\"");
    (void)sp_line_str(&l, sp_level_names[level]);
    (void)sp_line_str(&l, "\",\"event\":");
    (void)sp_line_json_str(&l, event != NULL ? event : "");
    size_t dropped = 0;
    for (size_t i = 0; fields != NULL && i < n_fields && !l.cut; i++) {
        if (!sp_key_ok(fields[i].key)) {
            dropped++;
            continue;
        }
        (void)sp_line_field(&l, &fields[i]);
    }
    if (dropped != 0 && !l.cut) {
        char num[48];
        (void)snprintf(num, sizeof num, ",\"dropped_fields\":%zu", dropped);
        if (!sp_line_str(&l, num)) l.cut = true;
    }
    /* SP_LOG_BODY_MAX kept room for the longer trailer: both fit */
    const char *trailer = l.cut ? sp_log_trailer_cut : "}\n";
    size_t tlen = strlen(trailer);
    memcpy(l.buf + l.len, trailer, tlen);
    l.len += tlen;

    pthread_rwlock_rdlock(&sp_log_lock);
    size_t done = 0;
    while (done < l.len) {
        ssize_t n = write(sp_log_fd, l.buf + done, l.len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* nowhere to complain: a log line is lost */
        done += (size_t)n;
    }
    pthread_rwlock_unlock(&sp_log_lock);
}
