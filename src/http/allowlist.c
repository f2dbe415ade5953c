/*
 * Allow-lists of IPv4 and IPv6 networks (include/sealpost/allowlist.h),
 * shared by sealpostd and sealpost-relay. Entries are CIDRs ("10.0.0.0/8",
 * "2001:db8::/32") or bare addresses (a /32 or /128). Host bits set beyond
 * the prefix are accepted and cleared, so "10.1.2.3/8" means 10.0.0.0/8.
 * An IPv4-mapped IPv6 entry (::ffff:a.b.c.d/96+n) becomes the IPv4 entry it
 * stands for, and an IPv4-mapped peer (what a dual-stack socket reports)
 * matches IPv4 entries, so one list works whatever the socket family.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/sp_core.h"
#include "sealpost/allowlist.h"

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void clear_host_bits(uint8_t *addr, size_t bytes, unsigned prefix) {
    for (size_t i = 0; i < bytes; i++) {
        unsigned bit = (unsigned)i * 8;
        if (bit >= prefix)
            addr[i] = 0;
        else if (prefix - bit < 8)
            addr[i] = (uint8_t)(addr[i] & (0xffu << (8 - (prefix - bit))));
    }
}

sp_error sp_cidr_parse(const char *text, sp_cidr *out) {
    if (!text || !out) return SP_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    if (len == 0 || len > 64) return SP_ERR_INVALID_ARGUMENT;
    char addr[65];
    const char *slash = strchr(text, '/');
    size_t addr_len = slash ? (size_t)(slash - text) : len;
    memcpy(addr, text, addr_len);
    addr[addr_len] = '\0';

    uint8_t bytes[16];
    unsigned max_prefix;
    if (inet_pton(AF_INET, addr, bytes) == 1) {
        out->family = 4;
        max_prefix = 32;
        memcpy(out->addr, bytes, 4);
    } else if (inet_pton(AF_INET6, addr, bytes) == 1) {
        out->family = 6;
        max_prefix = 128;
        memcpy(out->addr, bytes, 16);
    } else {
        return SP_ERR_INVALID_ARGUMENT;
    }

    unsigned prefix = max_prefix;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] != '\0') return SP_ERR_INVALID_ARGUMENT;
        prefix = 0;
        for (size_t i = 0; i < digits; i++) prefix = prefix * 10 + (unsigned)(p[i] - '0');
        if (prefix > max_prefix) return SP_ERR_INVALID_ARGUMENT;
    }
    if (out->family == 6 && prefix >= 96 && memcmp(out->addr, v4_mapped_prefix, 12) == 0) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = 4;
        prefix -= 96;
    }
    out->prefix = prefix;
    clear_host_bits(out->addr, out->family == 4 ? 4 : 16, prefix);
    return SP_OK;
}

static bool cidr_contains(const sp_cidr *c, const uint8_t *addr) {
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, full) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (addr[full] & mask) == c->addr[full];
}

bool sp_allow_list_contains(const sp_allow_list *list, const uint8_t addr[16], int family) {
    if (!list || !addr) return false;
    uint8_t v4[4];
    const uint8_t *peer = addr;
    if (family == 6 && memcmp(addr, v4_mapped_prefix, 12) == 0) {
        memcpy(v4, addr + 12, 4);
        peer = v4;
        family = 4;
    }
    if (family != 4 && family != 6) return false;
    for (size_t i = 0; i < list->count && i < SP_MAX_CIDRS; i++) {
        if (list->entries[i].family == family && cidr_contains(&list->entries[i], peer)) return true;
    }
    return false;
}

sp_error sp_cidr_format(const sp_cidr *cidr, char *out, size_t cap) {
    if (!cidr || !out || cap == 0) return SP_ERR_INVALID_ARGUMENT;
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(cidr->family == 4 ? AF_INET : AF_INET6, cidr->addr, text, sizeof text))
        return SP_ERR_INVALID_ARGUMENT;
    int n = snprintf(out, cap, "%s/%u", text, cidr->prefix);
    return n > 0 && (size_t)n < cap ? SP_OK : SP_ERR_BUFFER_TOO_SMALL;
}

sp_error sp_allow_list_parse(const char *text, sp_allow_list *out, char *err, size_t cap) {
    if (!text || !out) return SP_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t')) trimmed--;
        if (trimmed == 0) {
            if (!end) break; /* a trailing comma or an empty list */
            if (err) snprintf(err, cap, "empty entry in the list");
            return SP_ERR_INVALID_ARGUMENT;
        }
        char entry[65];
        if (trimmed >= sizeof entry) {
            if (err) snprintf(err, cap, "'%.*s…' is not a CIDR", 20, p);
            return SP_ERR_INVALID_ARGUMENT;
        }
        memcpy(entry, p, trimmed);
        entry[trimmed] = '\0';
        if (out->count == SP_MAX_CIDRS) {
            if (err) snprintf(err, cap, "more than %d entries", SP_MAX_CIDRS);
            return SP_ERR_INVALID_ARGUMENT;
        }
        if (sp_cidr_parse(entry, &out->entries[out->count]) != SP_OK) {
            if (err) snprintf(err, cap, "'%s' is not a CIDR (a.b.c.d/n or an IPv6 address/n)", entry);
            return SP_ERR_INVALID_ARGUMENT;
        }
        out->count++;
        if (!end) break;
        p = end + 1;
    }
    return SP_OK;
}
