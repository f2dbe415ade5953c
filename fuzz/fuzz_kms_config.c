/*
 * Fuzz target for the KMS configuration parser (sp_kms_config_parse,
 * src/kms/kms.c).
 *
 * The configuration string reaches sealpost from command lines, environment
 * variables and config files, and its values may be PINs, so the parser
 * must never crash, overrun its fixed name buffers, or leak (a leaked value
 * is a PIN left on the heap). The harness parses arbitrary text (a
 * NUL-terminated copy, as callers pass C strings) and checks what the
 * parser promises on success: a backend name and option names of
 * [a-z0-9-] that fit their buffers, at most SP_KMS_CONFIG_MAX_ITEMS options,
 * no name twice, values without ';'. Writing the parsed options back out
 * and parsing that again must give the same options (nothing is lost or
 * invented by the splitting). Every lookup helper runs over the result, and
 * clearing leaves nothing behind; libFuzzer's leak check covers the rest.
 */
#include "fuzz_util.h"

#include "kms/sp_kms.h"

FUZZ_INITIALIZE_LIBRARY()

static bool fuzz_name_ok(const char *s, size_t cap) {
    size_t n = strnlen(s, cap);
    if (n == 0 || n >= cap) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    return true;
}

static void fuzz_check_config(const sp_kms_config *cfg) {
    FUZZ_CHECK(fuzz_name_ok(cfg->backend, sizeof cfg->backend));
    FUZZ_CHECK(cfg->count <= SP_KMS_CONFIG_MAX_ITEMS);
    for (size_t i = 0; i < cfg->count; i++) {
        FUZZ_CHECK(fuzz_name_ok(cfg->items[i].name, sizeof cfg->items[i].name));
        FUZZ_CHECK(cfg->items[i].value != NULL);
        FUZZ_CHECK(strchr(cfg->items[i].value, ';') == NULL);
        for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(cfg->items[i].name, cfg->items[j].name) != 0);
        FUZZ_CHECK(sp_kms_config_get(cfg, cfg->items[i].name) == cfg->items[i].value);
        int64_t v = 0;
        sp_error rc = sp_kms_config_int(cfg, cfg->items[i].name, 0, 1000, 7, &v);
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_BAD_CONFIG);
        if (rc == SP_OK) FUZZ_CHECK(v >= 0 && v <= 1000);
    }
    sp_error rc = sp_kms_config_only(cfg, NULL);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_BAD_CONFIG);
}

/* "backend:name=value;..." from the parsed result; never longer than the
 * input, which had at least these characters. */
static char *fuzz_rebuild(const sp_kms_config *cfg, size_t cap) {
    char *out = malloc(cap + 1);
    FUZZ_CHECK(out != NULL);
    size_t len = (size_t)snprintf(out, cap + 1, "%s:", cfg->backend);
    for (size_t i = 0; i < cfg->count; i++) {
        size_t need = strlen(cfg->items[i].name) + 1 + strlen(cfg->items[i].value) + (i ? 1 : 0);
        FUZZ_CHECK(len + need <= cap);
        len += (size_t)snprintf(out + len, cap + 1 - len, "%s%s=%s", i ? ";" : "", cfg->items[i].name,
                                cfg->items[i].value);
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_dup_cstr(data, size);
    sp_kms_config cfg;
    sp_error rc = sp_kms_config_parse(text, &cfg);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_BAD_CONFIG);
    if (rc != SP_OK) {
        FUZZ_CHECK(cfg.count == 0); /* nothing left to free */
    } else {
        /* an embedded NUL ends the string a C caller would have passed */
        FUZZ_CHECK(strlen(text) <= SP_KMS_MAX_CONFIG);
        fuzz_check_config(&cfg);
        char *again_text = fuzz_rebuild(&cfg, strlen(text));
        sp_kms_config again;
        FUZZ_CHECK(sp_kms_config_parse(again_text, &again) == SP_OK);
        FUZZ_CHECK(strcmp(again.backend, cfg.backend) == 0 && again.count == cfg.count);
        for (size_t i = 0; i < cfg.count; i++) {
            FUZZ_CHECK(strcmp(again.items[i].name, cfg.items[i].name) == 0);
            FUZZ_CHECK(strcmp(again.items[i].value, cfg.items[i].value) == 0);
        }
        sp_kms_config_clear(&again);
        free(again_text);
        sp_kms_config_clear(&cfg);
        FUZZ_CHECK(cfg.count == 0 && cfg.backend[0] == 0);
    }
    free(text);
    return 0;
}
