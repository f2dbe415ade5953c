/*
 * Allow-lists of IPv4 and IPv6 networks, for a server that refuses a peer
 * before any other work: "10.0.0.0/8, 2001:db8::/32, 127.0.0.1". Entries are
 * CIDRs or bare addresses (/32, /128); host bits beyond the prefix are
 * cleared; an IPv4-mapped peer (what a dual-stack socket reports) matches
 * IPv4 entries. An empty list lets nobody in.
 */
#ifndef SEALPOST_ALLOWLIST_H
#define SEALPOST_ALLOWLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_MAX_CIDRS 64

typedef struct sp_cidr {
    uint8_t addr[16];
    int family;      /* 4 or 6 */
    unsigned prefix; /* 0..32 or 0..128 */
} sp_cidr;

typedef struct sp_allow_list {
    sp_cidr entries[SP_MAX_CIDRS];
    size_t count; /* 0: nobody */
} sp_allow_list;

/* One entry; SP_ERR_INVALID_ARGUMENT when it is not one. */
SP_API SP_MUST_CHECK sp_error sp_cidr_parse(const char *text, sp_cidr *out);
/* "10.0.0.0/8", "::1/128" (the network, host bits cleared). */
SP_API SP_MUST_CHECK sp_error sp_cidr_format(const sp_cidr *cidr, char *out, size_t cap);
/* A comma-separated list (blanks around entries ignored, at most
 * SP_MAX_CIDRS); SP_ERR_INVALID_ARGUMENT with the offending entry in err. */
SP_API SP_MUST_CHECK sp_error sp_allow_list_parse(const char *text, sp_allow_list *out, char *err, size_t cap);
/* addr: 4 bytes (family 4) or 16 (family 6). */
SP_API bool sp_allow_list_contains(const sp_allow_list *list, const uint8_t addr[16], int family);

SP_END_DECLS

#endif
