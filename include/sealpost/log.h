/*
 * Structured logs: one JSON object per line, {"ts":…,"level":…,"event":…,
 * fields…}. Callers pass typed fields, never a format string, and never PII
 * or secrets: a field holds an id, a count, an error name, a hash. Strings
 * are escaped so a value cannot start a new line or a new key: control
 * bytes as \u00XX, and each byte of invalid UTF-8 replaced by U+FFFD
 * (written \ufffd). ts is UTC with milliseconds
 * ("2026-01-02T03:04:05.678Z"); a double that is NaN or infinite is null.
 * Keys must match [a-z0-9_.]{1,64} and not be one of the line's own (ts,
 * level, event, truncated, dropped_fields): a field with a bad key is left
 * out and counted in "dropped_fields":N.
 *
 * One process-wide sink (stderr by default, or an append-only file opened
 * 0600), safe to call from any thread: each line is one write(2).
 */
#ifndef SEALPOST_LOG_H
#define SEALPOST_LOG_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_LOG_MAX_LINE 4096 /* longer lines are cut and marked "truncated":true */

typedef enum sp_log_level {
    SP_LOG_DEBUG = 0,
    SP_LOG_INFO = 1,
    SP_LOG_WARN = 2,
    SP_LOG_ERROR = 3,
} sp_log_level;

typedef enum sp_log_type {
    SP_LOG_STR = 1,
    SP_LOG_INT = 2,
    SP_LOG_BOOL = 3,
    SP_LOG_DOUBLE = 4,
} sp_log_type;

typedef struct sp_log_field {
    const char *key;
    sp_log_type type;
    const char *s;
    int64_t i;
    double d;
} sp_log_field;

#define SP_LOG_S(k, v) ((sp_log_field){.key = (k), .type = SP_LOG_STR, .s = (v)})
#define SP_LOG_I(k, v) ((sp_log_field){.key = (k), .type = SP_LOG_INT, .i = (int64_t)(v)})
#define SP_LOG_B(k, v) ((sp_log_field){.key = (k), .type = SP_LOG_BOOL, .i = (v) ? 1 : 0})
#define SP_LOG_D(k, v) ((sp_log_field){.key = (k), .type = SP_LOG_DOUBLE, .d = (double)(v)})

/* path NULL or "-": stderr. Replaces the previous sink; on failure the
 * previous one stays. A new file is created 0600; an existing one that
 * others may access is SP_ERR_INSECURE_PERMISSIONS, a symlink or a
 * directory SP_ERR_IO. */
SP_API SP_MUST_CHECK sp_error sp_log_open(const char *path, sp_log_level min_level);
SP_API void sp_log_close(void);
SP_API bool sp_log_enabled(sp_log_level level);
SP_API void sp_log(sp_log_level level, const char *event, const sp_log_field *fields, size_t n_fields);
/* Parses "debug", "info", "warn", "error". */
SP_API SP_MUST_CHECK sp_error sp_log_level_parse(const char *text, sp_log_level *out);

SP_END_DECLS

#endif
