/*
 * Fuzz target for the allow-list parser (src/http/allowlist.c), which reads
 * the CIDR lists of sealpostd's and sealpost-relay's config files.
 *
 * Whatever it accepts must hold at most SP_MAX_CIDRS entries of family 4 or
 * 6 with a prefix in range and no host bits set, each of which formats and
 * parses back to itself and contains its own network address. A refusal
 * must say why, NUL-terminated within the buffer it was given.
 */
#include "fuzz_util.h"

#include "sealpost/allowlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup_cstr(data, size);
    sp_allow_list list;
    char err[96];
    memset(err, 'x', sizeof err);
    sp_error rc = sp_allow_list_parse(text, &list, err, sizeof err);
    if (rc != SP_OK) {
        FUZZ_CHECK(rc == SP_ERR_INVALID_ARGUMENT);
        FUZZ_CHECK(memchr(err, 0, sizeof err) != NULL);
        free(text);
        return 0;
    }
    FUZZ_CHECK(list.count <= SP_MAX_CIDRS);
    for (size_t i = 0; i < list.count; i++) {
        const sp_cidr *c = &list.entries[i];
        FUZZ_CHECK(c->family == 4 || c->family == 6);
        unsigned max = c->family == 4 ? 32 : 128;
        FUZZ_CHECK(c->prefix <= max);
        for (unsigned bit = c->prefix; bit < max; bit++) FUZZ_CHECK(!(c->addr[bit / 8] & (0x80u >> (bit % 8))));
        char back[64];
        FUZZ_CHECK(sp_cidr_format(c, back, sizeof back) == SP_OK);
        sp_cidr again;
        FUZZ_CHECK(sp_cidr_parse(back, &again) == SP_OK);
        FUZZ_CHECK(again.family == c->family && again.prefix == c->prefix && memcmp(again.addr, c->addr, 16) == 0);
        sp_allow_list one = {.count = 1};
        one.entries[0] = *c;
        FUZZ_CHECK(sp_allow_list_contains(&one, c->addr, c->family));
    }
    free(text);
    return 0;
}
