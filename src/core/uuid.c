/*
 * UUIDs name key versions. They are generated here (version 4, from the
 * CSPRNG) and accepted only in the canonical lowercase form, so one key
 * version has exactly one spelling in headers, files and logs.
 */
#include "core/sp_core.h"

sp_error sp_uuid_v4(char out[37]) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    uint8_t b[16];
    SP_GUARD(sp_random(b, sizeof b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char hex[33];
    sp_hex_encode(b, sizeof b, hex);
    size_t o = 0;
    for (size_t i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) out[o++] = '-';
        out[o++] = hex[i];
    }
    out[o] = 0;
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
