/*
 * The PII vault from the command line, for operators and tests: encrypt a
 * field value the way ingestion does, decrypt one the way a send does (which
 * writes an audit line and needs a purpose), and compute a blind index.
 * Values travel on standard input and output; blobs as base64 text.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "cli.h"

typedef struct {
    const char *keyring, *kms, *tenant, *profile, *field, *audit, *purpose, *country;
    int64_t index_bytes, now;
} vault_args;

enum { V_KEYRING = 1000, V_KMS, V_TENANT, V_PROFILE, V_FIELD, V_AUDIT, V_PURPOSE, V_COUNTRY, V_INDEX, V_NOW, V_HELP };

static const char usage_vault[] =
    "usage: sealpost vault encrypt --keyring FILE --kms CONFIG --tenant T --profile ID --field NAME\n"
    "       sealpost vault decrypt --keyring FILE --kms CONFIG --tenant T --profile ID --field NAME\n"
    "                              --audit FILE --purpose WHY\n"
    "       sealpost vault index   --keyring FILE --kms CONFIG --tenant T --field NAME [--index-bytes N]\n"
    "common: [--country CODE] (phone numbers without one) [--now UNIX]\n"
    "\n"
    "encrypt reads a field value on standard input and writes the encrypted\n"
    "blob (docs/VAULT.md) as base64; decrypt reads that base64 and writes the\n"
    "value, recording the decrypt in the audit log; index writes the blind\n"
    "index of the normalised value (lower-cased email, E.164 phone) as hex.\n"
    "The data keys live in the keyring, wrapped by the tenant's master key.\n";

static int parse_vault_args(int argc, char **argv, vault_args *a) {
    static const struct option opts[] = {
        {"keyring", required_argument, NULL, V_KEYRING}, {"kms", required_argument, NULL, V_KMS},
        {"tenant", required_argument, NULL, V_TENANT},   {"profile", required_argument, NULL, V_PROFILE},
        {"field", required_argument, NULL, V_FIELD},     {"audit", required_argument, NULL, V_AUDIT},
        {"purpose", required_argument, NULL, V_PURPOSE}, {"country", required_argument, NULL, V_COUNTRY},
        {"index-bytes", required_argument, NULL, V_INDEX}, {"now", required_argument, NULL, V_NOW},
        {"help", no_argument, NULL, V_HELP},             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case V_KEYRING: a->keyring = optarg; break;
        case V_KMS: a->kms = optarg; break;
        case V_TENANT: a->tenant = optarg; break;
        case V_PROFILE: a->profile = optarg; break;
        case V_FIELD: a->field = optarg; break;
        case V_AUDIT: a->audit = optarg; break;
        case V_PURPOSE: a->purpose = optarg; break;
        case V_COUNTRY: a->country = optarg; break;
        case V_INDEX:
            if (parse_i64(optarg, "--index-bytes", SP_VAULT_INDEX_MIN, SP_VAULT_INDEX_MAX, &a->index_bytes) != 0)
                return EXIT_USAGE;
            break;
        case V_NOW:
            if (parse_i64(optarg, "--now", 1, (int64_t)1 << 40, &a->now) != 0) return EXIT_USAGE;
            break;
        case V_HELP: fputs(usage_vault, stdout); exit(0);
        default: return bad_option(argv);
        }
    }
    if (optind != argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->keyring == NULL || a->kms == NULL || a->tenant == NULL || a->field == NULL)
        return usage_error("--keyring, --kms, --tenant and --field are required");
    if (a->now == 0) a->now = (int64_t)time(NULL);
    return 0;
}

typedef struct {
    sp_kms *kms;
    sp_keyring *keyring;
    sp_audit *audit;
    sp_vault *vault;
} vault_handles;

static void vault_handles_close(vault_handles *h) {
    sp_vault_close(h->vault);
    sp_keyring_close(h->keyring);
    sp_kms_close(h->kms);
    sp_audit_close(h->audit);
    memset(h, 0, sizeof *h);
}

static int vault_handles_open(const vault_args *a, vault_handles *h) {
    memset(h, 0, sizeof *h);
    sp_error err = SP_OK;
    const char *what = "kms";
    if (a->audit != NULL) {
        what = a->audit;
        err = sp_audit_open(a->audit, &h->audit);
    }
    if (err == SP_OK) {
        what = "kms";
        err = sp_kms_open(a->kms, &h->kms);
    }
    if (err == SP_OK) {
        sp_kms_set_audit(h->kms, h->audit);
        what = a->keyring;
        err = sp_keyring_open(a->keyring, h->kms, &h->keyring);
    }
    if (err == SP_OK) {
        sp_vault_options o = {.tenant = a->tenant, .index_bytes = (size_t)a->index_bytes,
                              .default_country_code = a->country, .audit = h->audit};
        what = "vault";
        err = sp_vault_open(&o, h->keyring, &h->vault);
    }
    if (err != SP_OK) {
        vault_handles_close(h);
        return fail_sp(what, err);
    }
    return 0;
}

static int vault_encrypt(const vault_args *a, vault_handles *h) {
    if (a->profile == NULL) return usage_error("--profile is required");
    buffer in = {0};
    int rc = read_stdin(&in, SP_VAULT_MAX_VALUE);
    if (rc != 0) return rc;
    size_t cap = in.len + SP_VAULT_OVERHEAD, n = 0, text_len = 0;
    uint8_t *blob = malloc(cap);
    char *text = malloc((cap + 2) / 3 * 4 + 2);
    sp_error err = blob && text ? sp_vault_encrypt(h->vault, a->profile, a->field, in.data, in.len, a->now, blob,
                                                   cap, &n)
                                : SP_ERR_NO_MEMORY;
    buffer_wipe_free(&in);
    if (err == SP_OK) {
        text_len = (size_t)EVP_EncodeBlock((unsigned char *)text, blob, (int)n);
        text[text_len++] = '\n';
        rc = write_stdout(text, text_len);
    } else {
        rc = fail_sp("encrypt", err);
    }
    free(blob);
    free(text);
    return rc;
}

static int vault_decrypt(const vault_args *a, vault_handles *h) {
    if (a->profile == NULL || a->purpose == NULL || a->audit == NULL)
        return usage_error("decrypt needs --profile, --purpose and --audit");
    buffer in = {0};
    int rc = read_stdin(&in, (SP_VAULT_MAX_VALUE + SP_VAULT_OVERHEAD) / 3 * 4 + 8);
    if (rc != 0) return rc;
    while (in.len > 0 && (in.data[in.len - 1] == '\n' || in.data[in.len - 1] == '\r')) in.len--;
    uint8_t *blob = malloc(in.len / 4 * 3 + 3);
    uint8_t *out = malloc(in.len + 1);
    int decoded = blob ? EVP_DecodeBlock(blob, in.data, (int)in.len) : -1;
    size_t blob_len = decoded < 0 ? 0 : (size_t)decoded;
    /* EVP_DecodeBlock counts padding as data */
    if (in.len >= 1 && in.data[in.len - 1] == '=') blob_len--;
    if (in.len >= 2 && in.data[in.len - 2] == '=') blob_len--;
    size_t n = 0;
    sp_error err = decoded < 0 || in.len % 4 != 0 ? SP_ERR_BAD_BASE64
                   : out == NULL                   ? SP_ERR_NO_MEMORY
                                                   : sp_vault_decrypt(h->vault, a->profile, a->field, blob, blob_len,
                                                                      a->purpose, a->now, out, in.len + 1, &n);
    buffer_wipe_free(&in);
    rc = err == SP_OK ? write_stdout(out, n) : fail_sp("decrypt", err);
    if (out != NULL) sp_wipe(out, n);
    free(out);
    free(blob);
    return rc;
}

static int vault_index(const vault_args *a, vault_handles *h) {
    buffer in = {0};
    int rc = read_stdin(&in, SP_VAULT_MAX_VALUE);
    if (rc != 0) return rc;
    while (in.len > 0 && (in.data[in.len - 1] == '\n' || in.data[in.len - 1] == '\r')) in.len--;
    uint8_t index[SP_VAULT_INDEX_MAX];
    size_t n = 0;
    sp_error err = sp_vault_index(h->vault, a->field, in.data, in.len, index, sizeof index, &n);
    buffer_wipe_free(&in);
    if (err != SP_OK) return fail_sp("index", err);
    for (size_t i = 0; i < n; i++) printf("%02x", index[i]);
    printf("\n");
    return 0;
}

int cmd_vault(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_vault, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "encrypt") && strcmp(sub, "decrypt") && strcmp(sub, "index"))
        return usage_error("unknown vault command '%s'", sub);
    vault_args a;
    int rc = parse_vault_args(argc - 1, argv + 1, &a);
    if (rc != 0) return rc;
    vault_handles h;
    if ((rc = vault_handles_open(&a, &h)) != 0) return rc;
    rc = !strcmp(sub, "encrypt") ? vault_encrypt(&a, &h) : !strcmp(sub, "decrypt") ? vault_decrypt(&a, &h)
                                                                                      : vault_index(&a, &h);
    vault_handles_close(&h);
    return rc;
}
