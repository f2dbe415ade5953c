/*
 * The audit log: one JSON object per line, each holding the SHA-256 of the
 * line before it, so removing, reordering or editing a line is detected by
 * sp_audit_verify (and `sealpost audit verify`). A sidecar file keeps the
 * newest sequence number and hash, so cutting lines off the end is detected
 * too. Lines never hold secrets or plaintext: callers pass identifiers,
 * results and keyed hashes only.
 */
#ifndef SEALPOST_AUDIT_H
#define SEALPOST_AUDIT_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_AUDIT_MAX_FIELDS 16
#define SP_AUDIT_MAX_VALUE 256
#define SP_AUDIT_MAX_LINE 8192

typedef struct sp_audit sp_audit;

typedef struct sp_audit_field {
    const char *name;  /* [a-z0-9_] 1..32 chars; not seq, time, event, prev, hash */
    const char *value; /* printable UTF-8, at most SP_AUDIT_MAX_VALUE bytes */
} sp_audit_field;

/* Opens (creating with mode 0600) and continues the chain of an existing log
 * after checking its last line against the sidecar. Thread-safe. */
SP_API SP_MUST_CHECK sp_error sp_audit_open(const char *path, sp_audit **out);
SP_API void sp_audit_close(sp_audit *audit);
/* Appends one line: {"seq":N,"time":"<RFC 3339 UTC>","event":..., fields..., "prev":..., "hash":...}. */
SP_API SP_MUST_CHECK sp_error sp_audit_record(sp_audit *audit, const char *event, const sp_audit_field *fields,
                                              size_t n_fields);

/* One line of a batch. */
typedef struct sp_audit_entry {
    const char *event;
    const sp_audit_field *fields;
    size_t n_fields;
} sp_audit_entry;

#define SP_AUDIT_MAX_BATCH 1024

/* Appends n lines (1..SP_AUDIT_MAX_BATCH), chained as n sp_audit_record
 * calls would chain them, in one write(2) and one update of the head: all
 * or nothing, as one record is (on failure the log is as it was). For a
 * caller with many records at once, e.g. a send batch's decrypts. */
SP_API SP_MUST_CHECK sp_error sp_audit_record_many(sp_audit *audit, const sp_audit_entry *entries, size_t n);

typedef struct sp_audit_report {
    uint64_t lines;     /* lines that verified */
    uint64_t bad_line;  /* 1-based line of the first break, 0 if none */
    char reason[128];   /* what is wrong there */
} sp_audit_report;

/* SP_OK when the whole chain holds; SP_ERR_AUDIT_BROKEN with the report
 * filled when it does not. */
SP_API SP_MUST_CHECK sp_error sp_audit_verify(const char *path, sp_audit_report *report);

SP_END_DECLS

#endif
