/*
 * sealpostd's configuration: an INI file read with libinih. One static table
 * describes every entry (section, key, type, bounds, default, where it goes
 * in spd_config, and its help text), so parsing, defaults, validation and
 * sealpost.conf.example cannot drift apart: a unit test checks the example
 * file against this table in both directions.
 *
 * Defaults go through the same parser as the file's values. Paths are taken
 * as written: a relative one is relative to the working directory the
 * daemon was started in. Values derived from [data] dir (the store URL, the
 * TLS files, the audit log) are filled in after the file was read when it
 * did not set them.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

typedef enum spd_cfg_type {
    CFG_STRING,   /* char[size] */
    CFG_BOOL,     /* bool */
    CFG_AUTO,     /* int: 1 true, 0 false, -1 auto (the daemon decides) */
    CFG_UINT,     /* unsigned */
    CFG_SIZE,     /* size_t, K/M suffixes */
    CFG_SECONDS,  /* unsigned, a duration in whole seconds */
    CFG_MILLIS,   /* unsigned, a duration kept in milliseconds */
    CFG_SECONDS64,/* int64_t, a duration in whole seconds */
    CFG_DOUBLE,   /* double */
    CFG_LISTEN,   /* host:port into listen_address and port */
    CFG_LEVEL,    /* sp_log_level */
    CFG_CIDRS,    /* sp_allow_list */
} spd_cfg_type;

typedef struct spd_cfg_entry {
    spd_config_info info;
    spd_cfg_type type;
    double min; /* bounds in the entry's unit: bytes, seconds, count */
    double max;
    size_t offset;
    size_t size; /* CFG_STRING: the buffer */
} spd_cfg_entry;

#define OFF(f) offsetof(spd_config, f)
#define SZ(f) sizeof(((spd_config *)0)->f)

static const spd_cfg_entry entries[] = {
    {{"server", "listen", "127.0.0.1:8443",
      "Address and port to listen on: 127.0.0.1:8443, [::1]:8443, 0.0.0.0:443, [::]:443 (port 0: any free port)"},
     CFG_LISTEN, 0, 0, 0, 0},
    {{"server", "tls_cert", "", "TLS certificate chain (PEM); default <data dir>/tls/cert.pem"},
     CFG_STRING, 1, 0, OFF(tls_cert), SZ(tls_cert)},
    {{"server", "tls_key", "", "TLS private key (PEM, readable by the daemon only); default <data dir>/tls/key.pem"},
     CFG_STRING, 1, 0, OFF(tls_key), SZ(tls_key)},
    {{"server", "plain_http", "false",
      "Serve plain HTTP instead of TLS (true/false); refused unless listen is a loopback address"},
     CFG_BOOL, 0, 1, OFF(plain_http), 0},
    {{"server", "threads", "0", "Worker threads, 1..64; 0 means one per online CPU"},
     CFG_UINT, 0, SP_HTTP_MAX_THREADS, OFF(threads), 0},
    {{"server", "max_body", "4M", "Largest request body (suffix K or M), 1K..64M"},
     CFG_SIZE, 1024, SP_HTTP_MAX_BODY_LIMIT, OFF(max_body), 0},
    {{"server", "max_header_bytes", "16K", "Header memory per connection (suffix K or M), 4K..1M"},
     CFG_SIZE, 4096, 1u << 20, OFF(max_header_bytes), 0},
    {{"server", "max_connections", "1024", "Open connections from all clients, 1..100000"},
     CFG_UINT, 1, 100000, OFF(max_connections), 0},
    {{"server", "max_connections_per_ip", "64", "Open connections from one address, 1..100000"},
     CFG_UINT, 1, 100000, OFF(max_connections_per_ip), 0},
    {{"server", "idle_timeout", "30s", "An idle connection is closed after this long (s, m, h), 1s..1h"},
     CFG_SECONDS, 1, 3600, OFF(idle_timeout_s), 0},
    {{"server", "shutdown_grace", "10s",
      "On SIGTERM, how long requests in flight may take to finish (s, m), 0s..10m"},
     CFG_MILLIS, 0, 600, OFF(shutdown_grace_ms), 0},
    {{"server", "public_url", "",
      "Base URL providers reach this daemon at, for the channels' callback URLs (https://host[:port][/path]); "
      "default https://<listen address>"},
     CFG_STRING, 0, 0, OFF(public_url), SZ(public_url)},
    {{"store", "url", "",
      "Database: sqlite:PATH or postgresql://user@host:port/db; default sqlite:<data dir>/sealpost.db"},
     CFG_STRING, 1, 0, OFF(store_url), SZ(store_url)},
    {{"data", "dir", "var",
      "Directory (created 0700) for the server key, the audit log and local tenant master keys"},
     CFG_STRING, 1, 0, OFF(data_dir), SZ(data_dir)},
    {{"log", "path", "-", "Log file (JSON lines, opened 0600, reopened on SIGHUP); - for stderr"},
     CFG_STRING, 1, 0, OFF(log_path), SZ(log_path)},
    {{"log", "level", "info", "Lowest level logged: debug, info, warn, error"}, CFG_LEVEL, 0, 0, OFF(log_level), 0},
    {{"audit", "path", "", "Hash-chained audit log; default <data dir>/audit.log"},
     CFG_STRING, 1, 0, OFF(audit_path), SZ(audit_path)},
    {{"security", "admin_allow", "127.0.0.1/32,::1/128",
      "Addresses allowed on /admin/v1 and /metrics: comma-separated CIDRs, at most 64"},
     CFG_CIDRS, 0, 0, OFF(admin_allow), 0},
    {{"security", "default_tenant_allow", "127.0.0.1/32,::1/128",
      "Allow-list given to a new tenant that names none: comma-separated CIDRs, at most 64"},
     CFG_CIDRS, 0, 0, OFF(default_tenant_allow), 0},
    {{"limits", "max_batch", "1000", "Most profiles or events in one request, 1..1000"},
     CFG_SIZE, 1, 1000, OFF(max_batch), 0},
    {{"limits", "rate_per_second", "1000",
      "Requests per second per credential for tenants that set none, 0.01..1000000"},
     CFG_DOUBLE, 0.01, 1000000, OFF(rate_per_second), 0},
    {{"limits", "rate_burst", "2000", "Burst of requests per credential for tenants that set none, 1..10000000"},
     CFG_DOUBLE, 1, 10000000, OFF(rate_burst), 0},
    {{"vault", "dek_lifetime", "30m", "How long one data key encrypts new PII values (s, m, h), 1s..7d"},
     CFG_SECONDS64, 1, 7 * 86400, OFF(dek_lifetime_s), 0},
    {{"vault", "dek_cache_ttl", "30m",
      "How long an unwrapped data key is kept; bounds how fast a KMS revocation bites (s, m, h), 1s..1d"},
     CFG_SECONDS64, 1, 86400, OFF(dek_cache_ttl_s), 0},
    {{"sender", "threads", "2", "Send workers of this process, 0..64; 0 sends nothing (an API-only process)"},
     CFG_UINT, 0, 64, OFF(sender_threads), 0},
    {{"sender", "batch", "256", "Messages a worker claims from the outbox at once, 1..1000"},
     CFG_SIZE, 1, 1000, OFF(sender_batch), 0},
    {{"sender", "in_flight", "256", "Provider requests under way per worker, 1..4096"},
     CFG_UINT, 1, 4096, OFF(sender_in_flight), 0},
    {{"sender", "max_attempts", "8", "Attempts before a message is dead-lettered, 1..100"},
     CFG_UINT, 1, 100, OFF(sender_max_attempts), 0},
    {{"sender", "backoff_base", "1s", "First retry delay; doubles per attempt, with full jitter (s, m), 0s..1h"},
     CFG_MILLIS, 0, 3600, OFF(sender_backoff_base_ms), 0},
    {{"sender", "backoff_max", "10m", "Longest retry delay, Retry-After included (s, m, h), 1s..1d"},
     CFG_MILLIS, 1, 86400, OFF(sender_backoff_max_ms), 0},
    {{"sender", "lease", "60s",
      "How long a claimed message is a worker's; a crashed worker's messages go out again after it (s, m), 5s..1h"},
     CFG_MILLIS, 5, 3600, OFF(sender_lease_ms), 0},
    {{"sender", "timeout", "15s", "One provider request, connecting included (s, m), 1s..10m"},
     CFG_MILLIS, 1, 600, OFF(sender_timeout_ms), 0},
    {{"sender", "poll", "1s", "How often an idle worker looks at the outbox (s), 1s..60s"},
     CFG_MILLIS, 1, 60, OFF(sender_poll_ms), 0},
    {{"sender", "expand_page", "1000",
      "Profiles a campaign's audience goes into the outbox by, one transaction each, 1..100000"},
     CFG_SIZE, 1, 100000, OFF(sender_expand_page), 0},
    {{"sender", "expand_idle", "30s",
      "How long a queued campaign's expansion may stand still before a scheduler takes it up (s, m), 5s..1h"},
     CFG_SECONDS, 5, 3600, OFF(sender_expand_idle_s), 0},
    {{"sender", "hand_over", "auto",
      "Hand each page of a campaign to this process's workers as it is written (one write less per message); "
      "auto: on with SQLite only (auto, true, false)"},
     CFG_AUTO, 0, 0, OFF(sender_hand_over), 0},
    {{"sender", "ca_file", "", "PEM bundle trusted for providers instead of the system's CAs; empty: system"},
     CFG_STRING, 0, 0, OFF(sender_ca_file), SZ(sender_ca_file)},
    {{"callbacks", "max_body", "256K", "Largest callback body a provider may post (suffix K or M), 1K..1M"},
     CFG_SIZE, 1024, 1u << 20, OFF(callbacks_max_body), 0},
    {{"callbacks", "tolerance", "300s",
      "How far a callback's webhook-timestamp may be from this host's clock (s, m, h), 1s..1d"},
     CFG_SECONDS, 1, 86400, OFF(callbacks_tolerance_s), 0},
    {{"callbacks", "keep", "5d",
      "How long callback webhook-ids are remembered to drop provider retries (s, m, h, d), 4d..90d"},
     CFG_SECONDS64, 4 * 86400, 90 * 86400, OFF(callbacks_keep_s), 0},
    {{"callbacks", "allow", "0.0.0.0/0,::/0",
      "Addresses allowed to post callbacks: comma-separated CIDRs, at most 64 (default everyone)"},
     CFG_CIDRS, 0, 0, OFF(callbacks_allow), 0},
};

#define N_ENTRIES (sizeof entries / sizeof entries[0])

size_t spd_config_entry_count(void) { return N_ENTRIES; }

const spd_config_info *spd_config_entry(size_t index) {
    return index < N_ENTRIES ? &entries[index].info : NULL;
}

/* ---- value parsers: each writes a reason into err ---- */

/* libm is not linked: the few roundings needed, for the ranges used here */
static bool is_whole(double v) { return v >= -9e15 && v <= 9e15 && v == (double)(int64_t)v; }

static bool parse_number(const char *text, double *value, const char **suffix) {
    while (isspace((unsigned char)*text)) text++;
    if (!isdigit((unsigned char)*text)) return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || !(v >= 0 && v <= 1e18)) return false;
    *value = v;
    *suffix = end;
    return true;
}

static bool only_blanks(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return *s == '\0';
}

static bool parse_size(const char *text, double *out) {
    const char *suf = NULL;
    double v = 0;
    if (!parse_number(text, &v, &suf)) return false;
    double mult = 1;
    if (*suf == 'K' || *suf == 'k') {
        mult = 1024;
        suf++;
    } else if (*suf == 'M' || *suf == 'm') {
        mult = 1024.0 * 1024.0;
        suf++;
    }
    if (!only_blanks(suf)) return false;
    v *= mult;
    if (!is_whole(v)) return false;
    *out = v;
    return true;
}

/* Seconds; "ms" allowed for millisecond entries only. */
static bool parse_duration(const char *text, bool millis_ok, double *out) {
    const char *suf = NULL;
    double v = 0;
    if (!parse_number(text, &v, &suf)) return false;
    double mult = 1;
    if (suf[0] == 'm' && suf[1] == 's') {
        if (!millis_ok) return false;
        mult = 0.001;
        suf += 2;
    } else if (*suf == 's') {
        suf++;
    } else if (*suf == 'm') {
        mult = 60;
        suf++;
    } else if (*suf == 'h') {
        mult = 3600;
        suf++;
    } else if (*suf == 'd') {
        mult = 86400;
        suf++;
    }
    if (!only_blanks(suf)) return false;
    *out = v * mult;
    return true;
}

static bool parse_bool(const char *text, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_level(const char *text, sp_log_level *out) {
    static const struct {
        const char *name;
        sp_log_level level;
    } levels[] = {{"debug", SP_LOG_DEBUG}, {"info", SP_LOG_INFO}, {"warn", SP_LOG_WARN}, {"error", SP_LOG_ERROR}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcasecmp(text, levels[i].name) == 0) {
            *out = levels[i].level;
            return true;
        }
    }
    return false;
}

static bool parse_listen(const char *text, spd_config *cfg, char *err, size_t cap) {
    const char *colon;
    const char *host = text;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            snprintf(err, cap, "expected [IPv6]:port");
            return false;
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon) {
            snprintf(err, cap, "expected host:port, or [IPv6]:port");
            return false;
        }
        host_len = (size_t)(colon - text);
    }
    if (host_len == 0 || host_len >= sizeof cfg->listen_address) {
        snprintf(err, cap, "missing or overlong address");
        return false;
    }
    char addr[sizeof cfg->listen_address];
    memcpy(addr, host, host_len);
    addr[host_len] = '\0';
    sp_cidr probe;
    if (sp_cidr_parse(addr, &probe) != SP_OK || strchr(addr, '/') != NULL ||
        (text[0] == '[') != (probe.family == 6)) {
        snprintf(err, cap, "'%s' is not an IPv4 address (or an IPv6 address in brackets)", addr);
        return false;
    }
    const char *port = colon + 1;
    size_t digits = strspn(port, "0123456789");
    if (digits == 0 || digits > 5 || port[digits] != '\0' || strtoul(port, NULL, 10) > 65535) {
        snprintf(err, cap, "port must be a number between 0 and 65535");
        return false;
    }
    memcpy(cfg->listen_address, addr, host_len + 1);
    cfg->port = (uint16_t)strtoul(port, NULL, 10);
    return true;
}

static bool in_bounds(const spd_cfg_entry *e, double v, char *err, size_t cap, const char *unit) {
    if (v < e->min || v > e->max) {
        snprintf(err, cap, "must be between %.15g and %.15g%s", e->min, e->max, unit);
        return false;
    }
    return true;
}

/* Sets one entry from text; false with a reason in err. */
static bool set_entry(const spd_cfg_entry *e, const char *value, spd_config *cfg, char *err, size_t cap) {
    char *base = (char *)cfg;
    double v = 0;
    switch (e->type) {
    case CFG_STRING: {
        size_t len = strlen(value);
        if (len >= e->size) {
            snprintf(err, cap, "longer than %zu characters", e->size - 1);
            return false;
        }
        if (len < (size_t)e->min) {
            snprintf(err, cap, "must not be empty");
            return false;
        }
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) {
                snprintf(err, cap, "control characters are not allowed");
                return false;
            }
        }
        memcpy(base + e->offset, value, len + 1);
        return true;
    }
    case CFG_BOOL:
        if (!parse_bool(value, (bool *)(base + e->offset))) {
            snprintf(err, cap, "must be true or false");
            return false;
        }
        return true;
    case CFG_AUTO: {
        bool b = false;
        if (strcmp(value, "auto") == 0) {
            *(int *)(base + e->offset) = -1;
        } else if (parse_bool(value, &b)) {
            *(int *)(base + e->offset) = b ? 1 : 0;
        } else {
            snprintf(err, cap, "must be auto, true or false");
            return false;
        }
        return true;
    }
    case CFG_UINT:
    case CFG_SIZE: {
        if (e->type == CFG_UINT) {
            const char *suf = NULL;
            if (!parse_number(value, &v, &suf) || !only_blanks(suf) || !is_whole(v)) {
                snprintf(err, cap, "must be a whole number");
                return false;
            }
        } else if (!parse_size(value, &v)) {
            snprintf(err, cap, "must be a whole number of bytes, optionally with K or M");
            return false;
        }
        if (!in_bounds(e, v, err, cap, "")) return false;
        if (e->type == CFG_UINT)
            *(unsigned *)(base + e->offset) = (unsigned)v;
        else
            *(size_t *)(base + e->offset) = (size_t)v;
        return true;
    }
    case CFG_SECONDS:
    case CFG_SECONDS64:
    case CFG_MILLIS:
        if (!parse_duration(value, e->type == CFG_MILLIS, &v) ||
            (e->type != CFG_MILLIS && !is_whole(v))) {
            snprintf(err, cap, "must be a duration such as 30s, 5m or 2h%s",
                     e->type == CFG_MILLIS ? " (or 500ms)" : " in whole seconds");
            return false;
        }
        if (!in_bounds(e, v, err, cap, " seconds")) return false;
        if (e->type == CFG_SECONDS)
            *(unsigned *)(base + e->offset) = (unsigned)v;
        else if (e->type == CFG_SECONDS64)
            *(int64_t *)(base + e->offset) = (int64_t)v;
        else
            *(unsigned *)(base + e->offset) = (unsigned)(v * 1000.0 + 0.5);
        return true;
    case CFG_DOUBLE: {
        const char *suf = NULL;
        if (!parse_number(value, &v, &suf) || !only_blanks(suf)) {
            snprintf(err, cap, "must be a number");
            return false;
        }
        if (!in_bounds(e, v, err, cap, "")) return false;
        *(double *)(base + e->offset) = v;
        return true;
    }
    case CFG_LISTEN:
        return parse_listen(value, cfg, err, cap);
    case CFG_LEVEL:
        if (!parse_level(value, (sp_log_level *)(base + e->offset))) {
            snprintf(err, cap, "must be debug, info, warn or error");
            return false;
        }
        return true;
    case CFG_CIDRS:
        return sp_allow_list_parse(value, (sp_allow_list *)(base + e->offset), err, cap) == SP_OK;
    }
    snprintf(err, cap, "internal: unknown entry type");
    return false;
}

/* ---- the file ---- */

typedef struct load_state {
    spd_config *cfg;
    bool seen[N_ENTRIES];
    bool failed;
    char message[512]; /* the first error, without the line prefix */
} load_state;

static int on_entry(void *user, const char *section, const char *name, const char *value) {
    load_state *st = user;
    if (st->failed) return 0;
    bool section_known = false;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const spd_cfg_entry *e = &entries[i];
        if (strcmp(e->info.section, section) != 0) continue;
        section_known = true;
        if (strcmp(e->info.key, name) != 0) continue;
        if (st->seen[i]) {
            snprintf(st->message, sizeof st->message, "%s: set twice in [%s]", name, section);
            st->failed = true;
            return 0;
        }
        st->seen[i] = true;
        char why[256] = "";
        if (!set_entry(e, value, st->cfg, why, sizeof why)) {
            snprintf(st->message, sizeof st->message, "%s: %s", name, why);
            st->failed = true;
            return 0;
        }
        return 1;
    }
    if (section[0] == '\0')
        snprintf(st->message, sizeof st->message, "'%s' is outside any [section]", name);
    else if (!section_known)
        snprintf(st->message, sizeof st->message, "unknown section [%s]", section);
    else
        snprintf(st->message, sizeof st->message, "unknown key '%s' in [%s]", name, section);
    st->failed = true;
    return 0;
}

static bool is_loopback(const char *addr) {
    sp_cidr c;
    if (sp_cidr_parse(addr, &c) != SP_OK) return false;
    if (c.family == 4) return c.addr[0] == 127;
    static const uint8_t one[16] = {[15] = 1};
    return memcmp(c.addr, one, 16) == 0;
}

static bool derive(char *dst, size_t cap, const char *prefix, const char *dir, const char *suffix) {
    int n = snprintf(dst, cap, "%s%s%s", prefix, dir, suffix);
    return n > 0 && (size_t)n < cap;
}

sp_error spd_config_load(const char *path, spd_config *out, char *err, size_t cap) {
    if (!path || !out || !err || cap == 0) return SP_ERR_INVALID_ARGUMENT;
    err[0] = '\0';
    memset(out, 0, sizeof *out);
    load_state *st = calloc(1, sizeof *st);
    if (!st) return SP_ERR_NO_MEMORY;
    st->cfg = out;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        char why[256] = "";
        if (entries[i].info.default_text[0] == '\0') continue;
        if (!set_entry(&entries[i], entries[i].info.default_text, out, why, sizeof why)) {
            snprintf(err, cap, "internal: default of %s: %s", entries[i].info.key, why);
            free(st);
            return SP_ERR_BAD_CONFIG;
        }
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "%s: cannot open: %s", path, strerror(errno));
        free(st);
        return SP_ERR_IO;
    }
    int line = ini_parse_file(f, on_entry, st);
    fclose(f);
    if (line != 0) {
        if (st->failed)
            snprintf(err, cap, "%s:%d: %s", path, line, st->message);
        else
            snprintf(err, cap, "%s:%d: syntax error", path, line);
        free(st);
        return SP_ERR_BAD_CONFIG;
    }
    free(st);

    const char *dir = out->data_dir;
    bool ok = true;
    if (out->store_url[0] == '\0') ok = ok && derive(out->store_url, sizeof out->store_url, "sqlite:", dir, "/sealpost.db");
    if (out->tls_cert[0] == '\0') ok = ok && derive(out->tls_cert, sizeof out->tls_cert, "", dir, "/tls/cert.pem");
    if (out->tls_key[0] == '\0') ok = ok && derive(out->tls_key, sizeof out->tls_key, "", dir, "/tls/key.pem");
    if (out->audit_path[0] == '\0') ok = ok && derive(out->audit_path, sizeof out->audit_path, "", dir, "/audit.log");
    if (!ok) {
        snprintf(err, cap, "%s: dir: too long to derive the default paths from", path);
        return SP_ERR_BAD_CONFIG;
    }
    if (out->threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        out->threads = cpus < 1 ? 1u : cpus > SP_HTTP_MAX_THREADS ? SP_HTTP_MAX_THREADS : (unsigned)cpus;
    }
    if (out->plain_http && !is_loopback(out->listen_address)) {
        snprintf(err, cap, "%s: plain_http: only allowed when listen is a loopback address", path);
        return SP_ERR_BAD_CONFIG;
    }
    if (out->public_url[0]) {
        const char *u = out->public_url;
        size_t len = strlen(u);
        bool scheme = strncmp(u, "https://", 8) == 0 || strncmp(u, "http://", 7) == 0;
        const char *host = u + (u[4] == 's' ? 8 : 7);
        if (!scheme || *host == '\0' || *host == '/' || strpbrk(u, " \t?#\\\"") != NULL) {
            snprintf(err, cap, "%s: public_url: must be an http(s) URL without a query or fragment, "
                     "e.g. https://sealpost.example.com", path);
            return SP_ERR_BAD_CONFIG;
        }
        while (len > 0 && out->public_url[len - 1] == '/') out->public_url[--len] = '\0';
    }
    if (out->rate_burst < 1) {
        snprintf(err, cap, "%s: rate_burst: must be at least 1", path);
        return SP_ERR_BAD_CONFIG;
    }
    return SP_OK;
}
