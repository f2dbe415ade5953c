/*
 * The protocol commands: raw primitives for test vectors and interop
 * (encrypt, decrypt), key files (keygen, signing-secret) and whole messages
 * (seal, open).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define MAX_RAW_INPUT ((size_t)64 << 20)

/* ---- raw primitives ---- */
typedef struct {
    sp_alg alg;
    const char *key_hex, *iv_hex, *aad_hex;
} raw_args;

static const char usage_encrypt[] =
    "usage: sealpost encrypt --alg ALG --key HEX [--iv HEX] [--aad HEX]\n"
    "       sealpost decrypt --alg ALG --key HEX --iv HEX [--aad HEX]\n"
    "\n"
    "Raw AES-256 from standard input to standard output, for test vectors and\n"
    "interop. ALG is aes-256-cbc (PKCS#7 padding, 16-byte IV), aes-256-gcm\n"
    "(12-byte IV, output is ciphertext then the 16-byte tag; --aad allowed) or\n"
    "aes-256-ctr (16-byte IV, the whole initial counter block). --key is 64 hex\n"
    "digits. Without --iv, encrypt draws a random IV and prints 'iv=HEX' on\n"
    "standard error.\n";

static int parse_raw_args(int argc, char **argv, bool need_iv, raw_args *a) {
    static const struct option opts[] = {{"alg", required_argument, NULL, 'a'}, {"key", required_argument, NULL, 'k'},
                                         {"iv", required_argument, NULL, 'i'},  {"aad", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            if (parse_alg(optarg, &a->alg) != 0) return EXIT_USAGE;
            break;
        case 'k': a->key_hex = optarg; break;
        case 'i': a->iv_hex = optarg; break;
        case 'd': a->aad_hex = optarg; break;
        case 'h': fputs(usage_encrypt, stdout); exit(0);
        default: return bad_option(argv);
        }
    }
    if (optind != argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->alg == 0) return usage_error("--alg is required");
    if (a->key_hex == NULL) return usage_error("--key is required");
    if (need_iv && a->iv_hex == NULL) return usage_error("--iv is required");
    if (a->aad_hex != NULL && a->alg != SP_ALG_AES_256_GCM) return usage_error("--aad needs aes-256-gcm");
    return 0;
}

static int cmd_raw(int argc, char **argv, bool encrypt) {
    raw_args a;
    int rc = parse_raw_args(argc, argv, !encrypt, &a);
    if (rc != 0) return rc;
    uint8_t key_bytes[SP_KEY_BYTES + 1], iv[SP_MAX_IV_BYTES + 1], aad_stack[1];
    long key_len = parse_hex(a.key_hex, key_bytes, sizeof key_bytes);
    if (key_len < 0) return usage_error("--key is not hex");
    if (key_len != SP_KEY_BYTES) return usage_error("--key must be 32 bytes (64 hex digits), got %ld", key_len);
    size_t iv_len = sp_alg_iv_bytes(a.alg);
    if (a.iv_hex != NULL) {
        long n = parse_hex(a.iv_hex, iv, sizeof iv);
        if (n < 0) return usage_error("--iv is not hex");
        if ((size_t)n != iv_len) return usage_error("--iv must be %zu bytes for %s, got %ld", iv_len, sp_alg_name(a.alg), n);
    } else {
        sp_error err = sp_random(iv, iv_len);
        if (err != SP_OK) return fail_sp("random IV", err);
        char hex[2 * SP_MAX_IV_BYTES + 1];
        for (size_t i = 0; i < iv_len; i++) snprintf(hex + 2 * i, 3, "%02x", iv[i]);
        fprintf(stderr, "iv=%s\n", hex);
    }
    uint8_t *aad = aad_stack;
    long aad_len = 0;
    if (a.aad_hex != NULL) {
        aad = malloc(strlen(a.aad_hex) / 2 + 1);
        if (aad == NULL) return fail("out of memory");
        aad_len = parse_hex(a.aad_hex, aad, strlen(a.aad_hex) / 2 + 1);
        if (aad_len < 0) {
            free(aad);
            return usage_error("--aad is not hex");
        }
    }
    sp_key *key = NULL;
    sp_cipher *cipher = NULL;
    buffer in = {0}, out = {0};
    sp_error err = sp_key_new(key_bytes, SP_KEY_BYTES, &key);
    sp_wipe(key_bytes, sizeof key_bytes);
    if (err == SP_OK) err = sp_cipher_new(key, a.alg, &cipher);
    if (err != SP_OK) {
        rc = fail_sp("key setup", err);
        goto done;
    }
    if ((rc = read_stdin(&in, MAX_RAW_INPUT)) != 0) goto done;
    out.cap = sp_alg_ciphertext_bytes(a.alg, in.len) + 1;
    out.data = malloc(out.cap);
    if (out.data == NULL) {
        rc = fail("out of memory");
        goto done;
    }
    err = encrypt ? sp_cipher_encrypt(cipher, iv, iv_len, aad, (size_t)aad_len, in.data, in.len, out.data, out.cap, &out.len)
                  : sp_cipher_decrypt(cipher, iv, iv_len, aad, (size_t)aad_len, in.data, in.len, out.data, out.cap, &out.len);
    if (err != SP_OK) {
        rc = fail_sp(encrypt ? "encrypt" : "decrypt", err);
        goto done;
    }
    rc = write_stdout(out.data, out.len);
done:
    if (aad != aad_stack) free(aad);
    buffer_wipe_free(&in);
    buffer_wipe_free(&out);
    sp_cipher_free(cipher);
    sp_key_free(key);
    return rc;
}

int cmd_encrypt(int argc, char **argv) { return cmd_raw(argc, argv, true); }
int cmd_decrypt(int argc, char **argv) { return cmd_raw(argc, argv, false); }

/* ---- key files ---- */
static const char usage_keygen[] =
    "usage: sealpost keygen --out FILE\n"
    "\n"
    "Adds a new AES-256 key version (a random UUID) to FILE and makes it the\n"
    "active one; the previous active key stays as decrypt-only so messages in\n"
    "flight still open. Creates FILE with mode 0600 if it does not exist.\n"
    "Prints the new version on standard output. Format: docs/KEYFILE.md.\n";

int cmd_keygen(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': path = optarg; break;
        case 'h': fputs(usage_keygen, stdout); return 0;
        default: return bad_option(argv);
        }
    }
    if (optind != argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (path == NULL) return usage_error("--out is required");
    char version[SP_KEY_VERSION_CHARS + 1];
    sp_error err = sp_keyfile_generate(path, version);
    if (err != SP_OK) return fail_sp(path, err);
    printf("%s\n", version);
    return 0;
}

/* Where a message's keys come from: a key file (--keys), or a channel of
 * the provider keyring unwrapped through the tenant's KMS (--keyring,
 * --kms, --tenant, --channel). */
typedef struct {
    const char *keys, *keyring, *kms, *tenant, *channel;
} key_source;

static int load_wire_from_keyfile(const char *path, sp_wire *wire) {
    sp_keyfile *file = NULL;
    sp_error err = sp_keyfile_load(path, &file);
    if (err == SP_OK) err = sp_wire_add_keyfile(wire, file);
    sp_keyfile_free(file);
    return err == SP_OK ? 0 : fail_sp(path, err);
}

static int load_wire_from_keyring(const key_source *src, sp_wire *wire) {
    if (src->kms == NULL || src->tenant == NULL || src->channel == NULL)
        return usage_error("--keyring needs --kms, --tenant and --channel");
    sp_kms *kms = NULL;
    sp_keyring *kr = NULL;
    sp_error err = sp_kms_open(src->kms, &kms);
    if (err == SP_OK) err = sp_keyring_open(src->keyring, kms, &kr);
    if (err == SP_OK) err = sp_keyring_load_wire(kr, src->tenant, src->channel, wire);
    sp_keyring_close(kr);
    sp_kms_close(kms);
    return err == SP_OK ? 0 : fail_sp(src->keyring, err);
}

static int load_wire(const key_source *src, sp_wire **out) {
    if ((src->keys == NULL) == (src->keyring == NULL)) return usage_error("give either --keys or --keyring");
    sp_wire *wire = NULL;
    sp_error err = sp_wire_new(&wire);
    if (err != SP_OK) return fail_sp("start-up", err);
    int rc = src->keys ? load_wire_from_keyfile(src->keys, wire) : load_wire_from_keyring(src, wire);
    if (rc != 0) {
        sp_wire_free(wire);
        return rc;
    }
    *out = wire;
    return 0;
}

/* ---- seal ---- */
static const char usage_seal[] =
    "usage: sealpost seal (--keys FILE | --keyring FILE --kms CONFIG --tenant T --channel C)\n"
    "                     [--key-version UUID] [--alg ALG] [--profile compat|jwe] [--id ID] [--timestamp UNIX]\n"
    "\n"
    "Seals the payload on standard input as one protocol message\n"
    "(docs/PROTOCOL.md) and writes {\"headers\":{...},\"body\":\"...\"}.\n"
    "Defaults: the active key version, aes-256-gcm, the compat profile, a fresh\n"
    "random webhook-id, the current time. The jwe profile takes only aes-256-gcm.\n";

static const char usage_open[] =
    "usage: sealpost open (--keys FILE | --keyring FILE --kms CONFIG --tenant T --channel C)\n"
    "                     [--now UNIX] [--tolerance SECONDS] [--max-body BYTES]\n"
    "\n"
    "Reads {\"headers\":{...},\"body\":\"...\"} (as seal writes it) on standard\n"
    "input, checks the timestamp window (default 300 s) and the signature over\n"
    "the raw body, decrypts, and writes the payload. Every integrity or\n"
    "decryption failure gives the same message.\n";

static const char usage_secret[] =
    "usage: sealpost signing-secret (--keys FILE | --keyring FILE --kms CONFIG --tenant T --channel C)\n"
    "                               [--key-version UUID] [--profile compat|jwe] [--alg ALG]\n"
    "\n"
    "Prints the Standard Webhooks signing secret (whsec_...) that the key version\n"
    "implies for a profile and algorithm, for receivers that verify signatures\n"
    "with a stock Standard Webhooks library.\n";

typedef struct {
    key_source src;
    sp_seal_params seal;
    int64_t now, tolerance, max_body;
} msg_args;

enum {
    OPT_KEYS = 1000, OPT_VERSION, OPT_ALG, OPT_PROFILE, OPT_ID, OPT_TS, OPT_NOW, OPT_TOL, OPT_MAXBODY, OPT_HELP,
    OPT_KEYRING, OPT_KMS, OPT_TENANT, OPT_CHANNEL
};

static int parse_msg_args(int argc, char **argv, const char *usage, const char *allowed, msg_args *a) {
    static const struct option opts[] = {
        {"keys", required_argument, NULL, OPT_KEYS},     {"key-version", required_argument, NULL, OPT_VERSION},
        {"alg", required_argument, NULL, OPT_ALG},       {"profile", required_argument, NULL, OPT_PROFILE},
        {"id", required_argument, NULL, OPT_ID},         {"timestamp", required_argument, NULL, OPT_TS},
        {"now", required_argument, NULL, OPT_NOW},       {"tolerance", required_argument, NULL, OPT_TOL},
        {"max-body", required_argument, NULL, OPT_MAXBODY}, {"help", no_argument, NULL, OPT_HELP},
        {"keyring", required_argument, NULL, OPT_KEYRING}, {"kms", required_argument, NULL, OPT_KMS},
        {"tenant", required_argument, NULL, OPT_TENANT},   {"channel", required_argument, NULL, OPT_CHANNEL},
        {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int ch, index = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &index)) != -1) {
        if (ch == OPT_HELP) {
            fputs(usage, stdout);
            exit(0);
        }
        if (ch == '?' || ch == ':') return bad_option(argv);
        /* each command lists the options it takes */
        const char *name = NULL;
        for (const struct option *o = opts; o->name; o++) {
            if (o->val == ch) name = o->name;
        }
        char needle[32];
        snprintf(needle, sizeof needle, " %s ", name ? name : "");
        if (strstr(allowed, needle) == NULL) return usage_error("--%s does not apply here", name);
        switch (ch) {
        case OPT_KEYS: a->src.keys = optarg; break;
        case OPT_KEYRING: a->src.keyring = optarg; break;
        case OPT_KMS: a->src.kms = optarg; break;
        case OPT_TENANT: a->src.tenant = optarg; break;
        case OPT_CHANNEL: a->src.channel = optarg; break;
        case OPT_VERSION: a->seal.key_version = optarg; break;
        case OPT_ALG:
            if (parse_alg(optarg, &a->seal.alg) != 0) return EXIT_USAGE;
            break;
        case OPT_PROFILE:
            if (sp_profile_from_name(optarg, &a->seal.profile) != SP_OK)
                return usage_error("unknown profile '%s' (compat, jwe)", optarg);
            break;
        case OPT_ID: a->seal.message_id = optarg; break;
        case OPT_TS:
            if (parse_i64(optarg, "--timestamp", 1, (int64_t)1 << 40, &a->seal.timestamp) != 0) return EXIT_USAGE;
            break;
        case OPT_NOW:
            if (parse_i64(optarg, "--now", 1, (int64_t)1 << 40, &a->now) != 0) return EXIT_USAGE;
            break;
        case OPT_TOL:
            if (parse_i64(optarg, "--tolerance", 1, SP_WIRE_MAX_TOLERANCE_S, &a->tolerance) != 0) return EXIT_USAGE;
            break;
        case OPT_MAXBODY:
            if (parse_i64(optarg, "--max-body", 1, SP_WIRE_MAX_BODY_LIMIT, &a->max_body) != 0) return EXIT_USAGE;
            break;
        default: return usage_error("unknown option");
        }
    }
    if (optind != argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->src.keys == NULL && a->src.keyring == NULL) return usage_error("--keys or --keyring is required");
    return 0;
}

int cmd_seal(int argc, char **argv) {
    msg_args a;
    int rc = parse_msg_args(argc, argv, usage_seal, " keys keyring kms tenant channel key-version alg profile id timestamp ", &a);
    if (rc != 0) return rc;
    sp_wire *wire = NULL;
    if ((rc = load_wire(&a.src, &wire)) != 0) return rc;
    buffer in = {0}, body = {0};
    json_t *doc = NULL;
    if ((rc = read_stdin(&in, SP_WIRE_MAX_BODY_LIMIT)) != 0) goto done;
    body.cap = sp_seal_body_bound(a.seal.profile, a.seal.alg, in.len);
    if (body.cap == 0) {
        rc = a.seal.profile == SP_PROFILE_JWE && a.seal.alg != 0 && a.seal.alg != SP_ALG_AES_256_GCM
                 ? usage_error("the jwe profile takes only aes-256-gcm")
                 : fail("payload too large");
        goto done;
    }
    body.data = malloc(body.cap);
    if (body.data == NULL) {
        rc = fail("out of memory");
        goto done;
    }
    sp_sealed sealed;
    sp_error err = sp_seal(wire, &a.seal, in.data, in.len, body.data, body.cap, &sealed);
    if (err != SP_OK) {
        rc = fail_sp("cannot seal", err);
        goto done;
    }
    json_t *headers = json_object();
    doc = json_object();
    if (headers == NULL || doc == NULL || json_object_set_new(doc, "headers", headers) != 0) {
        rc = fail("out of memory");
        goto done;
    }
    for (size_t i = 0; i < sealed.n_headers; i++) {
        json_object_set_new(headers, sealed.headers[i].name,
                            json_stringn(sealed.headers[i].value, sealed.headers[i].value_len));
    }
    json_object_set_new(doc, "body", json_stringn((const char *)body.data, sealed.body_len));
    if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0) {
        rc = fail("writing standard output failed");
    }
done:
    json_decref(doc);
    buffer_wipe_free(&in);
    buffer_wipe_free(&body);
    sp_wire_free(wire);
    return rc;
}

/* ---- open ---- */
#define MAX_OPEN_HEADERS 64

int cmd_open(int argc, char **argv) {
    msg_args a;
    int rc = parse_msg_args(argc, argv, usage_open, " keys keyring kms tenant channel now tolerance max-body ", &a);
    if (rc != 0) return rc;
    sp_wire *wire = NULL;
    if ((rc = load_wire(&a.src, &wire)) != 0) return rc;
    buffer in = {0}, out = {0};
    json_t *doc = NULL;
    sp_error err = sp_wire_set_limits(wire, a.max_body ? (size_t)a.max_body : SP_WIRE_DEFAULT_MAX_BODY,
                                      a.tolerance ? (uint32_t)a.tolerance : SP_WIRE_DEFAULT_TOLERANCE_S);
    if (err != SP_OK) {
        rc = fail_sp("limits", err);
        goto done;
    }
    if ((rc = read_stdin(&in, 2 * (size_t)SP_WIRE_MAX_BODY_LIMIT)) != 0) goto done;
    json_error_t jerr;
    doc = json_loadb((const char *)in.data, in.len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *headers = json_object_get(doc, "headers"), *body = json_object_get(doc, "body");
    if (!json_is_object(headers) || !json_is_string(body)) {
        rc = fail("input is not {\"headers\":{...},\"body\":\"...\"}");
        goto done;
    }
    sp_header list[MAX_OPEN_HEADERS];
    size_t n = 0;
    const char *name;
    json_t *value;
    json_object_foreach(headers, name, value) {
        if (!json_is_string(value)) {
            rc = fail("header '%s' is not a string", name);
            goto done;
        }
        if (n == MAX_OPEN_HEADERS) {
            rc = fail("more than %d headers", MAX_OPEN_HEADERS);
            goto done;
        }
        list[n++] = (sp_header){name, strlen(name), json_string_value(value), json_string_length(value)};
    }
    size_t body_len = json_string_length(body);
    out.cap = body_len + 1;
    out.data = malloc(out.cap);
    if (out.data == NULL) {
        rc = fail("out of memory");
        goto done;
    }
    err = sp_open(wire, list, n, (const uint8_t *)json_string_value(body), body_len, a.now, out.data, out.cap,
                  &out.len, NULL);
    if (err != SP_OK) {
        rc = fail_sp("message refused", err);
        goto done;
    }
    rc = write_stdout(out.data, out.len);
done:
    json_decref(doc);
    buffer_wipe_free(&in);
    buffer_wipe_free(&out);
    sp_wire_free(wire);
    return rc;
}

int cmd_signing_secret(int argc, char **argv) {
    msg_args a;
    int rc = parse_msg_args(argc, argv, usage_secret, " keys keyring kms tenant channel key-version profile alg ", &a);
    if (rc != 0) return rc;
    sp_wire *wire = NULL;
    if ((rc = load_wire(&a.src, &wire)) != 0) return rc;
    char secret[96];
    sp_error err = sp_wire_signing_secret(wire, a.seal.key_version, a.seal.profile, a.seal.alg, secret, sizeof secret);
    sp_wire_free(wire);
    if (err != SP_OK) return fail_sp("no secret", err);
    printf("%s\n", secret);
    sp_wipe(secret, sizeof secret);
    return 0;
}

