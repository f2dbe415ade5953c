/*
 * What the sealpost CLI's files share: the error and usage conventions (one
 * line on stderr, exit 1 for a failure, 2 for a usage error), bounded
 * stdin/stdout helpers that wipe what they held, and the commands.
 */
#ifndef SEALPOST_CLI_H
#define SEALPOST_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sealpost/sealpost.h"

#define EXIT_USAGE 2

extern const char *g_command;

__attribute__((format(printf, 1, 2))) int fail(const char *fmt, ...);
int fail_sp(const char *what, sp_error err);
__attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...);
/* getopt_long with its messages off: names the offending option */
int bad_option(char **argv);

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} buffer;

void buffer_wipe_free(buffer *b);
int read_stdin(buffer *out, size_t limit);
int write_stdout(const void *data, size_t len);
/* Decodes hex into out (cap bytes); returns the length or -1. */
long parse_hex(const char *hex, uint8_t *out, size_t cap);
int parse_i64(const char *text, const char *name, int64_t min, int64_t max, int64_t *out);
int parse_alg(const char *text, sp_alg *out);

/* protocol and primitives (cmd_wire.c) */
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_seal(int argc, char **argv);
int cmd_open(int argc, char **argv);
int cmd_signing_secret(int argc, char **argv);

/* key management (cmd_keys.c) */
int cmd_kms(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_audit(int argc, char **argv);

/* the PII vault (cmd_vault.c) */
int cmd_vault(int argc, char **argv);

#endif
