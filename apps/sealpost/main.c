/*
 * sealpost: the operator's and the provider's command-line tool.
 *
 * It exposes the raw primitives (encrypt/decrypt, for test vectors and
 * interop with other stacks), whole protocol messages (seal/open), key files
 * (keygen, signing-secret), and key management: the customer's KMS, the
 * provider keyring, the key exchange and the audit log. It uses only the
 * public API, like any application would. Every command answers --help;
 * success exits 0, a usage error exits 2, any other failure exits 1 with one
 * line on stderr. Secrets read from arguments or stdin are wiped before exit.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* ---- dispatch ---- */
typedef struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
    {"keygen", cmd_keygen, "add a new active AES-256 key version to a key file"},
    {"encrypt", cmd_encrypt, "raw AES-256 encryption, stdin to stdout"},
    {"decrypt", cmd_decrypt, "raw AES-256 decryption, stdin to stdout"},
    {"seal", cmd_seal, "seal a payload as a signed, encrypted protocol message"},
    {"open", cmd_open, "verify and decrypt a protocol message"},
    {"signing-secret", cmd_signing_secret, "print a key version's Standard Webhooks secret"},
    {"kms", cmd_kms, "check the customer's KMS (kms check)"},
    {"keys", cmd_keys, "the provider keyring: list, rotate, retire, destroy, export, import, rewrap"},
    {"audit", cmd_audit, "verify the audit log's hash chain (audit verify)"},
    {"vault", cmd_vault, "the PII vault: encrypt, decrypt (audited) and blind-index field values"},
};

static void print_usage(FILE *to) {
    fprintf(to, "usage: sealpost COMMAND [OPTIONS]   (sealpost COMMAND --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(to, "  %-15s %s\n", commands[i].name, commands[i].summary);
    fprintf(to, "  %-15s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0) {
        printf("sealpost %s\n", SEALPOST_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(name, commands[i].name) != 0) continue;
        g_command = commands[i].name;
        opterr = 0;
        sp_error err = sp_init();
        if (err == SP_OK) err = sp_harden_process();
        if (err != SP_OK) return fail_sp("start-up", err);
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "sealpost: unknown command '%s' (see 'sealpost --help')\n", name);
    return EXIT_USAGE;
}
