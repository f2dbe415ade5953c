/*
 * sealpost-relay's configuration: an INI file read with libinih, described
 * by one table (section, key, type, bounds, default, destination, help), so
 * parsing, defaults, validation and relay.conf.example stay one thing; a
 * unit test holds the example file against the table.
 *
 * Defaults run through the same parser as the file's values. After the
 * file, the cross-field rules run (TLS files present, at least one
 * credential, inbound_url inside callback_allow, the SMTP password file
 * readable by us only), each failing with one line that names the key and
 * never quotes a secret.
 */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include "relay.h"

typedef enum cfg_type {
    CFG_STRING,     /* char[size]; min 1: required */
    CFG_UINT,       /* unsigned */
    CFG_SIZE,       /* size_t, K/M suffixes */
    CFG_SECONDS,    /* unsigned seconds */
    CFG_SECONDS64,  /* int64_t seconds */
    CFG_DOUBLE,     /* double */
    CFG_LISTEN,     /* host:port into listen_address/port */
    CFG_DLR_LISTEN, /* 127.0.0.1:port into kannel_dlr_* */
    CFG_LEVEL,      /* sp_log_level */
    CFG_CIDRS,      /* sp_allow_list */
    CFG_CREDENTIAL, /* appended to credentials */
    CFG_STARTTLS,   /* relay_starttls */
    CFG_PROFILE,    /* sp_profile */
    CFG_ALG,        /* sp_alg */
} cfg_type;

typedef struct cfg_entry {
    relay_config_info info;
    cfg_type type;
    double min, max;
    size_t offset, size;
} cfg_entry;

#define OFF(f) offsetof(relay_config, f)
#define SZ(f) sizeof(((relay_config *)0)->f)

static const cfg_entry entries[] = {
    {{"server", "listen", "127.0.0.1:8444",
      "Address and port of the HTTPS API: 127.0.0.1:8444, [::1]:8444, 0.0.0.0:443, [::]:443"},
     CFG_LISTEN, 0, 0, 0, 0},
    {{"server", "tls_cert", "", "Required: TLS certificate chain (PEM); TLS 1.2 and 1.3 only"},
     CFG_STRING, 1, 0, OFF(tls_cert), SZ(tls_cert)},
    {{"server", "tls_key", "", "Required: TLS private key (PEM, not readable by others)"},
     CFG_STRING, 1, 0, OFF(tls_key), SZ(tls_key)},
    {{"server", "threads", "4", "HTTP worker threads, 1..64"}, CFG_UINT, 1, SP_HTTP_MAX_THREADS, OFF(threads), 0},
    {{"server", "max_body", "4M", "Largest sealed request body (suffix K or M), 1K..64M"},
     CFG_SIZE, 1024, SP_HTTP_MAX_BODY_LIMIT, OFF(max_body), 0},
    {{"server", "tolerance", "300s", "How far a webhook-timestamp may be from this host's clock (s, m), 1s..1d"},
     CFG_SECONDS, 1, SP_WIRE_MAX_TOLERANCE_S, OFF(tolerance_s), 0},
    {{"server", "allow", "127.0.0.1/32,::1/128",
      "Addresses the platform sends from: comma-separated IPv4/IPv6 CIDRs, at most 64; others get 403"},
     CFG_CIDRS, 0, 0, OFF(allow), 0},
    {{"auth", "merchant_id", "", "Required: the merchant id the platform sends in X-Merchant-Id (1..64)"},
     CFG_STRING, 1, 0, OFF(merchant_id), SZ(merchant_id)},
    {{"auth", "sub_merchants", "",
      "Sub-merchant ids allowed in X-Sub-Merchant-Id, comma-separated (at most 64); empty: the header is refused"},
     CFG_STRING, 0, 0, OFF(sub_merchants_text), SZ(sub_merchants_text)},
    {{"auth", "credential", "",
      "Required, repeatable (at most 16): <client access key>:<hex SHA-256 of the API secret>:<expires, Unix "
      "seconds, or 0 for never>"},
     CFG_CREDENTIAL, 0, 0, 0, 0},
    {{"keys", "file", "", "Required: the provider key file (sealpost keys import); reloaded when it changes"},
     CFG_STRING, 1, 0, OFF(keys_file), SZ(keys_file)},
    {{"smtp", "url", "", "Required: the mail server, smtp://host:port or smtps://host:port"},
     CFG_STRING, 1, 0, OFF(smtp_url), SZ(smtp_url)},
    {{"smtp", "starttls", "try", "STARTTLS on smtp://: try (when offered), require, off"},
     CFG_STARTTLS, 0, 0, OFF(smtp_starttls), 0},
    {{"smtp", "timeout", "30s", "One SMTP hand-off, connecting included (s, m), 1s..10m"},
     CFG_SECONDS, 1, 600, OFF(smtp_timeout_s), 0},
    {{"smtp", "username", "", "SMTP AUTH user; empty: no AUTH"}, CFG_STRING, 0, 0, OFF(smtp_username),
     SZ(smtp_username)},
    {{"smtp", "password_file", "", "File holding the SMTP AUTH password (one line, not readable by others)"},
     CFG_STRING, 0, 0, OFF(smtp_password_file), SZ(smtp_password_file)},
    {{"kannel", "sendsms_url", "", "Required: smsbox's sendsms URL, e.g. http://127.0.0.1:13013/cgi-bin/sendsms"},
     CFG_STRING, 1, 0, OFF(kannel_sendsms_url), SZ(kannel_sendsms_url)},
    {{"kannel", "username", "", "Required: the sendsms-user's username"}, CFG_STRING, 1, 0, OFF(kannel_username),
     SZ(kannel_username)},
    {{"kannel", "password", "", "Required: the sendsms-user's password"}, CFG_STRING, 1, 0, OFF(kannel_password),
     SZ(kannel_password)},
    {{"kannel", "smsc", "", "smsc-id to route through; empty: Kannel's routing"}, CFG_STRING, 0, 0,
     OFF(kannel_smsc), SZ(kannel_smsc)},
    {{"kannel", "dlr_listen", "127.0.0.1:13080",
      "Plain-HTTP listener for Kannel's dlr-url and MO get-url calls: 127.0.0.1:port only"},
     CFG_DLR_LISTEN, 0, 0, 0, 0},
    {{"kannel", "timeout", "10s", "One sendsms call (s, m), 1s..10m"}, CFG_SECONDS, 1, 600, OFF(kannel_timeout_s),
     0},
    {{"platform", "callback_allow", "",
      "Required: URL prefixes callbacks may go to, comma-separated (at most 16); a dlr_url elsewhere is refused"},
     CFG_STRING, 1, 0, OFF(callback_allow_text), SZ(callback_allow_text)},
    {{"platform", "inbound_url", "", "Where inbound SMS without a known message go (inside callback_allow)"},
     CFG_STRING, 0, 0, OFF(inbound_url), SZ(inbound_url)},
    {{"platform", "ca_file", "", "PEM trusted for the platform's certificate (a self-signed one too); empty: system"},
     CFG_STRING, 0, 0, OFF(ca_file), SZ(ca_file)},
    {{"platform", "profile", "compat", "How callbacks are sealed: compat or jwe"}, CFG_PROFILE, 0, 0,
     OFF(callback_profile), 0},
    {{"platform", "algorithm", "aes-256-gcm", "Callback cipher: aes-256-gcm, aes-256-cbc, aes-256-ctr (jwe: gcm)"},
     CFG_ALG, 0, 0, OFF(callback_alg), 0},
    {{"platform", "retry_scale", "1",
      "Multiplies the callback retry schedule (5s, 5m, 30m, 2h, 5h, 10h, 10h); below 1 for tests only, 0.001..1"},
     CFG_DOUBLE, 0.001, 1, OFF(retry_scale), 0},
    {{"platform", "timeout", "10s", "One callback POST (s, m), 1s..10m"}, CFG_SECONDS, 1, 600,
     OFF(callback_timeout_s), 0},
    {{"state", "path", "", "Required: the relay's SQLite state file (its key beside it as PATH.key)"},
     CFG_STRING, 1, 0, OFF(state_path), SZ(state_path)},
    {{"state", "keep", "5d", "How long webhook-ids and message routes are kept (s, m, h, d), 4d..90d"},
     CFG_SECONDS64, 4 * 86400, 90 * 86400, OFF(keep_s), 0},
    {{"log", "path", "-", "Log file (JSON lines, 0600); - for stderr"}, CFG_STRING, 1, 0, OFF(log_path),
     SZ(log_path)},
    {{"log", "level", "info", "Lowest level logged: debug, info, warn, error"}, CFG_LEVEL, 0, 0, OFF(log_level), 0},
};

#define N_ENTRIES (sizeof entries / sizeof entries[0])

size_t relay_config_entry_count(void) { return N_ENTRIES; }
const relay_config_info *relay_config_entry(size_t index) {
    return index < N_ENTRIES ? &entries[index].info : NULL;
}

typedef struct parse_ctx {
    relay_config *cfg;
    const char *name;
    char *err;
    size_t cap;
    bool failed;
    bool seen[N_ENTRIES];
} parse_ctx;

static bool parse_u64(const char *s, size_t len, uint64_t *out) {
    if (len == 0 || len > 15) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* "300", "300s", "5m", "2h", "4d" into seconds. */
static bool parse_duration(const char *s, uint64_t *out) {
    size_t len = strlen(s);
    uint64_t mult = 1;
    if (len > 0) {
        switch (s[len - 1]) {
        case 's': mult = 1; len--; break;
        case 'm': mult = 60; len--; break;
        case 'h': mult = 3600; len--; break;
        case 'd': mult = 86400; len--; break;
        default: break;
        }
    }
    uint64_t v;
    if (!parse_u64(s, len, &v)) return false;
    *out = v * mult;
    return true;
}

static bool parse_size(const char *s, uint64_t *out) {
    size_t len = strlen(s);
    uint64_t mult = 1;
    if (len > 0 && (s[len - 1] == 'K' || s[len - 1] == 'k')) mult = 1024, len--;
    else if (len > 0 && (s[len - 1] == 'M' || s[len - 1] == 'm')) mult = 1024 * 1024, len--;
    uint64_t v;
    if (!parse_u64(s, len, &v)) return false;
    *out = v * mult;
    return true;
}

/* host:port or [v6]:port with a numeric host. */
static bool parse_listen(const char *s, char *addr, size_t addr_cap, uint16_t *port) {
    const char *colon;
    const char *host = s;
    size_t host_len;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return false;
        host = s + 1;
        host_len = (size_t)(end - host);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return false;
        host_len = (size_t)(colon - s);
    }
    if (host_len == 0 || host_len >= addr_cap) return false;
    memcpy(addr, host, host_len);
    addr[host_len] = '\0';
    uint8_t buf[16];
    if (inet_pton(AF_INET, addr, buf) != 1 && inet_pton(AF_INET6, addr, buf) != 1) return false;
    uint64_t p;
    if (!parse_u64(colon + 1, strlen(colon + 1), &p) || p == 0 || p > 65535) return false;
    *port = (uint16_t)p;
    return true;
}

/* inih tells the line only once the handler has failed: the message is
 * kept here and prefixed with "name:line: " after the parse. */
static int fail(parse_ctx *c, int line, const cfg_entry *e, const char *why) {
    (void)line;
    if (!c->failed) {
        if (e) snprintf(c->err, c->cap, "[%s] %s: %s", e->info.section, e->info.key, why);
        else snprintf(c->err, c->cap, "%s", why);
    }
    c->failed = true;
    return 0;
}

static int set_value(parse_ctx *c, const cfg_entry *e, const char *value, int line) {
    char *base = (char *)c->cfg;
    char why[160];
    switch (e->type) {
    case CFG_STRING: {
        size_t len = strlen(value);
        if (len >= e->size) return fail(c, line, e, "too long");
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) return fail(c, line, e, "control character");
        memcpy(base + e->offset, value, len + 1);
        return 1;
    }
    case CFG_UINT: {
        uint64_t v;
        if (!parse_u64(value, strlen(value), &v) || (double)v < e->min || (double)v > e->max) {
            snprintf(why, sizeof why, "must be a whole number between %.0f and %.0f", e->min, e->max);
            return fail(c, line, e, why);
        }
        *(unsigned *)(void *)(base + e->offset) = (unsigned)v;
        return 1;
    }
    case CFG_SIZE: {
        uint64_t v;
        if (!parse_size(value, &v) || (double)v < e->min || (double)v > e->max) {
            snprintf(why, sizeof why, "must be between %.0f and %.0f bytes (suffix K or M)", e->min, e->max);
            return fail(c, line, e, why);
        }
        *(size_t *)(void *)(base + e->offset) = (size_t)v;
        return 1;
    }
    case CFG_SECONDS:
    case CFG_SECONDS64: {
        uint64_t v;
        if (!parse_duration(value, &v) || (double)v < e->min || (double)v > e->max) {
            snprintf(why, sizeof why, "must be a duration between %.0fs and %.0fs (suffix s, m, h, d)", e->min,
                     e->max);
            return fail(c, line, e, why);
        }
        if (e->type == CFG_SECONDS) *(unsigned *)(void *)(base + e->offset) = (unsigned)v;
        else *(int64_t *)(void *)(base + e->offset) = (int64_t)v;
        return 1;
    }
    case CFG_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || !end || end == value || *end || !(v >= e->min && v <= e->max)) {
            snprintf(why, sizeof why, "must be a number between %g and %g", e->min, e->max);
            return fail(c, line, e, why);
        }
        *(double *)(void *)(base + e->offset) = v;
        return 1;
    }
    case CFG_LISTEN:
        if (!parse_listen(value, c->cfg->listen_address, sizeof c->cfg->listen_address, &c->cfg->port))
            return fail(c, line, e, "must be a numeric address and a port 1..65535, e.g. 127.0.0.1:8444");
        return 1;
    case CFG_DLR_LISTEN:
        if (!parse_listen(value, c->cfg->kannel_dlr_address, sizeof c->cfg->kannel_dlr_address,
                          &c->cfg->kannel_dlr_port) ||
            strcmp(c->cfg->kannel_dlr_address, "127.0.0.1") != 0)
            return fail(c, line, e, "must be 127.0.0.1:<port> (plain HTTP, loopback only)");
        return 1;
    case CFG_LEVEL:
        if (sp_log_level_parse(value, &c->cfg->log_level) != SP_OK)
            return fail(c, line, e, "must be debug, info, warn or error");
        return 1;
    case CFG_CIDRS: {
        char detail[128];
        if (sp_allow_list_parse(value, &c->cfg->allow, detail, sizeof detail) != SP_OK)
            return fail(c, line, e, detail);
        return 1;
    }
    case CFG_CREDENTIAL:
        if (c->cfg->n_credentials >= RELAY_MAX_CREDENTIALS) return fail(c, line, e, "at most 16 credentials");
        if (relay_credential_parse(value, &c->cfg->credentials[c->cfg->n_credentials]) != SP_OK)
            return fail(c, line, e,
                        "must be <access key, 1..256 visible ASCII, no ':'>:<64 hex digits>:<expires, Unix "
                        "seconds or 0>");
        c->cfg->n_credentials++;
        return 1;
    case CFG_STARTTLS:
        if (strcmp(value, "try") == 0) c->cfg->smtp_starttls = RELAY_STARTTLS_TRY;
        else if (strcmp(value, "require") == 0) c->cfg->smtp_starttls = RELAY_STARTTLS_REQUIRE;
        else if (strcmp(value, "off") == 0) c->cfg->smtp_starttls = RELAY_STARTTLS_OFF;
        else return fail(c, line, e, "must be try, require or off");
        return 1;
    case CFG_PROFILE:
        if (sp_profile_from_name(value, &c->cfg->callback_profile) != SP_OK)
            return fail(c, line, e, "must be compat or jwe");
        return 1;
    case CFG_ALG:
        if (sp_alg_from_name(value, strlen(value), &c->cfg->callback_alg) != SP_OK)
            return fail(c, line, e, "must be aes-256-gcm, aes-256-cbc or aes-256-ctr");
        return 1;
    }
    return fail(c, line, e, "internal: unknown type");
}

static int on_entry(void *user, const char *section, const char *name, const char *value) {
    const int line = 0;
    parse_ctx *c = user;
    if (c->failed) return 0;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &entries[i];
        if (strcmp(e->info.section, section) != 0 || strcmp(e->info.key, name) != 0) continue;
        if (c->seen[i] && e->type != CFG_CREDENTIAL) return fail(c, line, e, "given twice");
        c->seen[i] = true;
        return set_value(c, e, value, line);
    }
    char why[200];
    snprintf(why, sizeof why, "[%.60s] %.60s: unknown setting", section, name);
    return fail(c, line, NULL, why);
}

/* Splits a comma list into fixed slots; blanks around entries ignored. */
static bool split_list(const char *text, char *slots, size_t slot_size, size_t max, size_t *count) {
    *count = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t')) trimmed--;
        if (trimmed == 0 || trimmed >= slot_size || *count >= max) return false;
        memcpy(slots + *count * slot_size, p, trimmed);
        slots[*count * slot_size + trimmed] = '\0';
        (*count)++;
        if (!end) break;
        p = end + 1;
        if (!*p) return false;
    }
    return true;
}

static bool merchant_ok(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > RELAY_MAX_MERCHANT) return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e) return false;
    return true;
}

static bool url_scheme(const char *url, const char *scheme) {
    return strncmp(url, scheme, strlen(scheme)) == 0 && url[strlen(scheme)] != '\0';
}

static sp_error read_password(relay_config *cfg, char *err, size_t cap) {
    struct stat st;
    FILE *f = fopen(cfg->smtp_password_file, "r");
    if (!f) {
        snprintf(err, cap, "[smtp] password_file: cannot be read");
        return SP_ERR_BAD_CONFIG;
    }
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & 0077) != 0) {
        fclose(f);
        snprintf(err, cap, "[smtp] password_file: must not be readable by group or others (chmod 600)");
        return SP_ERR_INSECURE_PERMISSIONS;
    }
    size_t n = fread(cfg->smtp_password, 1, sizeof cfg->smtp_password - 1, f);
    fclose(f);
    cfg->smtp_password[n] = '\0';
    while (n > 0 && (cfg->smtp_password[n - 1] == '\n' || cfg->smtp_password[n - 1] == '\r'))
        cfg->smtp_password[--n] = '\0';
    if (n == 0) {
        snprintf(err, cap, "[smtp] password_file: is empty");
        return SP_ERR_BAD_CONFIG;
    }
    return SP_OK;
}

/* Rules across entries, after the file. */
static sp_error finish(relay_config *cfg, const char *name, char *err, size_t cap) {
    if (!merchant_ok(cfg->merchant_id)) {
        snprintf(err, cap, "%s: [auth] merchant_id: 1..64 visible ASCII characters", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (cfg->sub_merchants_text[0]) {
        if (!split_list(cfg->sub_merchants_text, &cfg->sub_merchants[0][0], sizeof cfg->sub_merchants[0],
                        RELAY_MAX_SUB_MERCHANTS, &cfg->n_sub_merchants)) {
            snprintf(err, cap, "%s: [auth] sub_merchants: a comma-separated list of at most 64 ids of 1..64", name);
            return SP_ERR_BAD_CONFIG;
        }
        for (size_t i = 0; i < cfg->n_sub_merchants; i++)
            if (!merchant_ok(cfg->sub_merchants[i])) {
                snprintf(err, cap, "%s: [auth] sub_merchants: entry %zu is not 1..64 visible ASCII", name, i + 1);
                return SP_ERR_BAD_CONFIG;
            }
    }
    if (cfg->n_credentials == 0) {
        snprintf(err, cap, "%s: [auth] credential: at least one is required", name);
        return SP_ERR_BAD_CONFIG;
    }
    for (size_t i = 0; i < cfg->n_credentials; i++)
        for (size_t j = i + 1; j < cfg->n_credentials; j++)
            if (strcmp(cfg->credentials[i].access_key, cfg->credentials[j].access_key) == 0 &&
                memcmp(cfg->credentials[i].secret_hash, cfg->credentials[j].secret_hash, 32) == 0) {
                snprintf(err, cap, "%s: [auth] credential: entries %zu and %zu are the same", name, i + 1, j + 1);
                return SP_ERR_BAD_CONFIG;
            }
    if (!url_scheme(cfg->smtp_url, "smtp://") && !url_scheme(cfg->smtp_url, "smtps://")) {
        snprintf(err, cap, "%s: [smtp] url: must start with smtp:// or smtps://", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (cfg->smtp_password_file[0] && !cfg->smtp_username[0]) {
        snprintf(err, cap, "%s: [smtp] password_file: needs [smtp] username", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (cfg->smtp_password_file[0]) {
        char detail[200];
        sp_error rc = read_password(cfg, detail, sizeof detail);
        if (rc != SP_OK) {
            snprintf(err, cap, "%s: %s", name, detail);
            return rc;
        }
    }
    if ((!url_scheme(cfg->kannel_sendsms_url, "http://") && !url_scheme(cfg->kannel_sendsms_url, "https://")) ||
        strchr(cfg->kannel_sendsms_url, '?') || strchr(cfg->kannel_sendsms_url, '#')) {
        snprintf(err, cap, "%s: [kannel] sendsms_url: must be an http(s) URL without a query", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (!split_list(cfg->callback_allow_text, &cfg->callback_allow[0][0], sizeof cfg->callback_allow[0],
                    RELAY_MAX_PREFIXES, &cfg->n_callback_allow)) {
        snprintf(err, cap, "%s: [platform] callback_allow: a comma-separated list of at most 16 URL prefixes", name);
        return SP_ERR_BAD_CONFIG;
    }
    for (size_t i = 0; i < cfg->n_callback_allow; i++) {
        const char *p = cfg->callback_allow[i];
        const char *host = strstr(p, "://");
        const char *slash = host ? strchr(host + 3, '/') : NULL;
        /* a prefix must end its host with a path, or "https://a.example" would admit https://a.example.evil */
        bool blank = false;
        for (const char *q = p; *q; q++)
            if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '\\') blank = true;
        if ((!url_scheme(p, "https://") && !url_scheme(p, "http://")) || !slash || strchr(p, '@') ||
            strchr(p, '?') || strchr(p, '#') || blank) {
            snprintf(err, cap,
                     "%s: [platform] callback_allow: entry %zu must be an http(s) URL prefix with a path "
                     "(https://host[:port]/...), no user info, query or fragment",
                     name, i + 1);
            return SP_ERR_BAD_CONFIG;
        }
    }
    if (cfg->inbound_url[0] && !relay_url_allowed(cfg, cfg->inbound_url)) {
        snprintf(err, cap, "%s: [platform] inbound_url: must be inside callback_allow", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (cfg->callback_profile == SP_PROFILE_JWE && cfg->callback_alg != SP_ALG_AES_256_GCM) {
        snprintf(err, cap, "%s: [platform] algorithm: the jwe profile allows only aes-256-gcm", name);
        return SP_ERR_BAD_CONFIG;
    }
    if (cfg->port == cfg->kannel_dlr_port &&
        (strcmp(cfg->listen_address, "127.0.0.1") == 0 || strcmp(cfg->listen_address, "0.0.0.0") == 0)) {
        snprintf(err, cap, "%s: [kannel] dlr_listen: must not use [server] listen's port", name);
        return SP_ERR_BAD_CONFIG;
    }
    return SP_OK;
}

sp_error relay_config_parse(const char *text, const char *name, relay_config *out, char *err, size_t cap) {
    memset(out, 0, sizeof *out);
    parse_ctx c = {.cfg = out, .name = name, .err = err, .cap = cap};
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &entries[i];
        if (e->info.default_text[0] == '\0') continue;
        if (!set_value(&c, e, e->info.default_text, 0)) return SP_ERR_BAD_CONFIG; /* a bad table: a test catches it */
    }
    int line = ini_parse_string(text, on_entry, &c);
    if (c.failed) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, cap, "%s:%d: %s", name, line, msg);
        return SP_ERR_BAD_CONFIG;
    }
    if (line != 0) {
        snprintf(err, cap, "%s:%d: not an INI line ([section] or key = value)", name, line);
        return SP_ERR_BAD_CONFIG;
    }
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &entries[i];
        if (e->type == CFG_STRING && e->min >= 1 && ((char *)out + e->offset)[0] == '\0') {
            snprintf(err, cap, "%s: [%s] %s: is required", name, e->info.section, e->info.key);
            return SP_ERR_BAD_CONFIG;
        }
    }
    return finish(out, name, err, cap);
}

sp_error relay_config_load(const char *path, relay_config *out, char *err, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "%s: cannot be read (%s)", path, strerror(errno));
        return SP_ERR_IO;
    }
    char *text = calloc(1, 1u << 20);
    size_t n = text ? fread(text, 1, (1u << 20) - 1, f) : 0;
    bool too_big = text && n == (1u << 20) - 1 && fgetc(f) != EOF;
    fclose(f);
    if (!text) return SP_ERR_NO_MEMORY;
    sp_error rc;
    if (too_big) {
        snprintf(err, cap, "%s: larger than 1 MiB", path);
        rc = SP_ERR_TOO_LARGE;
    } else {
        rc = relay_config_parse(text, path, out, err, cap);
    }
    relay_wiped_free(text, 1u << 20);
    return rc;
}

void relay_config_wipe(relay_config *cfg) { sp_wipe(cfg, sizeof *cfg); }
