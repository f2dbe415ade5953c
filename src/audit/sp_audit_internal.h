/*
 * The audit log's inside, shared by audit.c, its unit test and its fuzz
 * target. Three pieces are worth sharing: how a line is made, how a line is
 * judged, and how the head file is made and read. sp_audit_record writes what
 * sp_audit_format_line makes; verify runs sp_audit_check_line over every
 * line, open over the last one, and the fuzzer over arbitrary bytes and over
 * every line the writer can make, so the writer and the verifier cannot
 * drift apart unnoticed. The head's slots get the same treatment: the tests
 * tear and forge them, the fuzzer feeds the parser arbitrary files and holds
 * it to the writer's spelling.
 */
#ifndef SP_AUDIT_INTERNAL_H
#define SP_AUDIT_INTERNAL_H

#include "cipher/sp_cipher.h"
#include "core/sp_core.h"
#include "sealpost/audit.h"

/* A SHA-256 as lowercase hex. */
#define SP_AUDIT_HEX_CHARS 64
/* Longest field name and event name. */
#define SP_AUDIT_MAX_NAME 32
#define SP_AUDIT_MAX_EVENT 64

/* What a line that checked out says about itself. */
typedef struct sp_audit_line {
    uint64_t seq;
    char prev[SP_AUDIT_HEX_CHARS + 1];
    char hash[SP_AUDIT_HEX_CHARS + 1];
} sp_audit_line;

/* Makes line `seq` of a chain whose previous hash is prev_hex: the canonical
 * JSON (no newline) into line[0..*len), its hash into hash_out. Validates the
 * arguments as sp_audit_record documents (SP_ERR_INVALID_ARGUMENT, also for a
 * line longer than SP_AUDIT_MAX_LINE). cap must leave room for a newline the
 * caller adds: at most SP_AUDIT_MAX_LINE bytes are ever written, cap
 * SP_AUDIT_MAX_LINE + 1 is enough. Needs sp_init to have run. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_audit_format_line(const char *prev_hex, uint64_t seq, int64_t unix_time,
                                                        const char *event, const sp_audit_field *fields,
                                                        size_t n_fields, char *line, size_t cap, size_t *len,
                                                        char hash_out[SP_AUDIT_HEX_CHARS + 1]);

/* Checks one line, without its newline, as sp_audit_verify does: at most
 * SP_AUDIT_MAX_LINE bytes, one JSON object in canonical form (the only
 * spelling accepted is the one jansson's JSON_COMPACT | JSON_SORT_KEYS gives
 * the same content, so re-serialising gives the same bytes), the schema
 * sp_audit_format_line writes, seq == expected_seq (0: any), prev == prev_hex
 * (NULL: any, except that a line claiming seq 1 must start the chain), and
 * the hash. The verdict allocates nothing but the digest's context.
 *
 * SP_OK fills *out. SP_ERR_AUDIT_BROKEN writes why into reason (a short
 * English phrase without the line number, NUL-terminated, cut to
 * reason_cap). SP_ERR_NO_MEMORY / SP_ERR_CRYPTO_BACKEND when the check
 * itself could not run: those say nothing about the line. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_audit_check_line(const char *prev_hex, uint64_t expected_seq, const char *line,
                                                       size_t len, sp_audit_line *out, char *reason,
                                                       size_t reason_cap);

/* ---- the head file ----
 *
 * Exactly two slots, A at offset 0 and B right after it, each one line:
 *
 *   sealpost-audit-head/2 slot=A seq=<20 digits> hash=<64 hex> check=<64 hex>\n
 *
 * seq zero-padded (at most INT64_MAX), hash lowercase, check the SHA-256 (in
 * lowercase hex) of the slot's first SP_AUDIT_HEAD_CHECKED bytes, everything
 * before " check=". The slot letter is covered too, so a slot's text in the
 * other's place is not intact. */
#define SP_AUDIT_HEAD_MAGIC "sealpost-audit-head/2"
#define SP_AUDIT_HEAD_CHECKED (sizeof SP_AUDIT_HEAD_MAGIC - 1 + sizeof " slot=A seq=" - 1 + 20 + sizeof " hash=" - 1 + \
                               SP_AUDIT_HEX_CHARS)
#define SP_AUDIT_HEAD_SLOT (SP_AUDIT_HEAD_CHECKED + sizeof " check=" - 1 + SP_AUDIT_HEX_CHARS + 1)
#define SP_AUDIT_HEAD_SIZE (2 * SP_AUDIT_HEAD_SLOT)

/* What a head file says. */
typedef struct sp_audit_head {
    bool present;        /* the file exists (set by whoever read it) */
    bool valid;          /* and names a line: */
    uint64_t seq;        /* which (0: none, the log is empty) */
    char hash[SP_AUDIT_HEX_CHARS + 1];
    unsigned newest;     /* the slot it came from, 0 for A; 0 for a legacy head */
    bool legacy;         /* {"seq":N,"hash":"..."}, the single-record format before the slots */
    const char *problem; /* when present but not valid: why, a short phrase */
} sp_audit_head;

/* Slot `slot` (0 = A, 1 = B) naming line seq with hash hash_hex, checksum
 * and newline included. SP_ERR_INVALID_ARGUMENT for a slot other than 0 or
 * 1, seq above INT64_MAX or a hash that is not 64 lowercase hex;
 * SP_ERR_NO_MEMORY / SP_ERR_CRYPTO_BACKEND when the checksum could not be
 * computed. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_audit_head_slot(unsigned slot, uint64_t seq, const char *hash_hex,
                                                      char out[SP_AUDIT_HEAD_SLOT]);

/* Judges the whole content of a head file: SP_OK with *out filled (present
 * set, valid or not, with the problem), or SP_ERR_NO_MEMORY /
 * SP_ERR_CRYPTO_BACKEND when a checksum could not be computed, which says
 * nothing about the file. Valid: a two-slot file with at least one intact
 * slot (the higher seq wins; two intact slots with one seq must name one
 * hash), or a legacy head. Allocates nothing but the digest's context. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_audit_parse_head(const char *text, size_t len, sp_audit_head *out);

/* The rules for each argument of sp_audit_record (lengths exclude the NUL;
 * the bytes need not be NUL-terminated). */
SP_INTERNAL bool sp_audit_name_ok(const char *name, size_t len);
SP_INTERNAL bool sp_audit_event_ok(const char *event, size_t len);
SP_INTERNAL bool sp_audit_value_ok(const char *value, size_t len);

#endif
