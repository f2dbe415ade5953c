/*
 * Who may talk to the relay: after the IP allow-list (the library's
 * sp_allow_list, checked before anything else), the credentials a CPaaS
 * provider issues (the seed's client access
 * key, API secret with an expiry, merchant and optional sub-merchant ids).
 *
 * Secrets are never kept: a credential is the SHA-256 of its API secret,
 * and both the access key and the secret are compared as hashes in
 * constant time, across every credential with no early exit, so the time
 * a request takes says nothing about which part was wrong. Several
 * credentials may share an access key, so a new secret can be issued
 * before the old one expires.
 */
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

void relay_sha256(const void *data, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1) memset(out, 0, 32);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

sp_error relay_credential_parse(const char *text, relay_credential *out) {
    memset(out, 0, sizeof *out);
    const char *c1 = strchr(text, ':');
    if (!c1) return SP_ERR_INVALID_ARGUMENT;
    const char *c2 = strchr(c1 + 1, ':');
    if (!c2 || strchr(c2 + 1, ':')) return SP_ERR_INVALID_ARGUMENT;
    size_t klen = (size_t)(c1 - text);
    if (klen == 0 || klen > RELAY_MAX_ACCESS_KEY) return SP_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < klen; i++)
        if (text[i] < 0x21 || text[i] > 0x7e) return SP_ERR_INVALID_ARGUMENT;
    memcpy(out->access_key, text, klen);
    out->access_key[klen] = '\0';
    relay_sha256(out->access_key, klen, out->key_hash);
    if ((size_t)(c2 - c1 - 1) != 64) return SP_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(c1[1 + 2 * i]), lo = hexval(c1[2 + 2 * i]);
        if (hi < 0 || lo < 0) return SP_ERR_INVALID_ARGUMENT;
        out->secret_hash[i] = (uint8_t)(hi << 4 | lo);
    }
    const char *e = c2 + 1;
    size_t elen = strlen(e);
    if (elen == 0 || elen > 12 || strspn(e, "0123456789") != elen || (elen > 1 && e[0] == '0'))
        return SP_ERR_INVALID_ARGUMENT;
    out->expires = (int64_t)strtoll(e, NULL, 10);
    return SP_OK;
}

static bool header_ok(const char *v, size_t max) {
    if (!v) return false;
    size_t n = strnlen(v, max + 1);
    return n > 0 && n <= max;
}

relay_auth_result relay_auth_check(const relay_config *cfg, const char *access_key, const char *api_secret,
                                   const char *merchant, const char *sub_merchant, int64_t now) {
    if (!header_ok(access_key, RELAY_MAX_ACCESS_KEY) || !header_ok(api_secret, RELAY_MAX_API_SECRET) ||
        !header_ok(merchant, RELAY_MAX_MERCHANT) || (sub_merchant && !header_ok(sub_merchant, RELAY_MAX_MERCHANT)))
        return RELAY_AUTH_MISSING;
    uint8_t kh[32], sh[32];
    relay_sha256(access_key, strlen(access_key), kh);
    relay_sha256(api_secret, strlen(api_secret), sh);
    unsigned valid = 0, expired = 0;
    for (size_t i = 0; i < cfg->n_credentials; i++) {
        const relay_credential *c = &cfg->credentials[i];
        unsigned match = (unsigned)sp_ct_equal(kh, c->key_hash, 32) & (unsigned)sp_ct_equal(sh, c->secret_hash, 32);
        unsigned live = (unsigned)(c->expires == 0 || now < c->expires);
        valid |= match & live;
        expired |= match & (live ^ 1u);
    }
    sp_wipe(sh, sizeof sh);
    /* merchant ids are not secret; still compare all of them */
    bool merchant_ok = strcmp(merchant, cfg->merchant_id) == 0;
    bool sub_ok = sub_merchant == NULL;
    for (size_t i = 0; sub_merchant && i < cfg->n_sub_merchants; i++)
        if (strcmp(sub_merchant, cfg->sub_merchants[i]) == 0) sub_ok = true;
    if (!valid) return expired ? RELAY_AUTH_EXPIRED : RELAY_AUTH_BAD_KEY;
    if (!merchant_ok || !sub_ok) return RELAY_AUTH_MERCHANT;
    return RELAY_AUTH_OK;
}

const char *relay_auth_result_name(relay_auth_result r) {
    switch (r) {
    case RELAY_AUTH_OK: return "ok";
    case RELAY_AUTH_MISSING: return "missing_header";
    case RELAY_AUTH_BAD_KEY: return "bad_credential";
    case RELAY_AUTH_EXPIRED: return "expired_credential";
    case RELAY_AUTH_MERCHANT: return "wrong_merchant";
    }
    return "unknown";
}

bool relay_url_allowed(const relay_config *cfg, const char *url) {
    size_t len = strnlen(url, RELAY_MAX_URL);
    if (len == 0 || len >= RELAY_MAX_URL) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f || url[i] == '#' || url[i] == '\\') return false;
    const char *host = strstr(url, "://");
    if (!host) return false;
    const char *path = strchr(host + 3, '/');
    const char *at = strchr(host + 3, '@');
    if (at && (!path || at < path)) return false;
    /* no dot segments that could climb out of an allowed path */
    if (strstr(url, "/../") || strstr(url, "/./") || strstr(url, "%2e") || strstr(url, "%2E")) return false;
    for (size_t i = 0; i < cfg->n_callback_allow; i++) {
        size_t plen = strlen(cfg->callback_allow[i]);
        if (len >= plen && memcmp(url, cfg->callback_allow[i], plen) == 0) return true;
    }
    return false;
}
