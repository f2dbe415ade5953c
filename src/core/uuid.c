/*
 * UUIDs name key versions (version 4, from the CSPRNG) and the rows sealpostd
 * creates (version 7: time first, so new rows append to their index). They
 * are generated here and accepted only in the canonical lowercase form, so
 * one id has exactly one spelling in headers, files and logs.
 */
#include <time.h>

#include "core/sp_core.h"

static void sp_uuid_format(uint8_t b[16], unsigned version, char out[37]) {
    b[6] = (uint8_t)((b[6] & 0x0f) | (version << 4));
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char hex[33];
    sp_hex_encode(b, 16, hex);
    size_t o = 0;
    for (size_t i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) out[o++] = '-';
        out[o++] = hex[i];
    }
    out[o] = 0;
}

sp_error sp_uuid_v4(char out[37]) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t b[16];
    SP_GUARD(sp_random(b, sizeof b));
    sp_uuid_format(b, 4, out);
    return SP_OK;
}

sp_error sp_uuid_v7(char out[37]) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    struct timespec ts;
    SP_ENSURE(clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec >= 0, SP_ERR_IO);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint8_t b[16];
    SP_GUARD(sp_random(b + 6, sizeof b - 6));
    for (int i = 5; i >= 0; i--) {
        b[i] = (uint8_t)(ms & 0xff);
        ms >>= 8;
    }
    sp_uuid_format(b, 7, out);
    return SP_OK;
}

bool sp_uuid_is_valid(const char *s, size_t len) {
    if (s == NULL || len != 36) return false;
    for (size_t i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-') return false;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return false;
        }
    }
    return true;
}
