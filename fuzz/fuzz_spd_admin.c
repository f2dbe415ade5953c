/*
 * Fuzz target for what sealpostd's admin API and config parse besides the
 * ingestion bodies: an admin's tenant body (apps/sealpostd/tenant.c, for
 * POST and PATCH /admin/v1/tenants) and the CIDR allow-lists
 * (apps/sealpostd/cidr.c) that bodies and the config file carry.
 *
 * The first byte chooses: 0 one CIDR, 1 an allow-list, anything else a
 * tenant body (bit 1: create or patch). The rest is the input. Properties:
 *   - a CIDR that parses has family 4 or 6, a prefix within it, no host
 *     bits, and formats to text that parses back to the same entry;
 *   - a list that parses holds at most SP_MAX_CIDRS entries; a refused one
 *     says why;
 *   - a tenant body is applied wholly or not at all (refused: the settings
 *     are untouched and a reason is given); an accepted one gives a stored
 *     document that spd_settings_parse reads back to the same document.
 */
#include "fuzz_util.h"

#include "daemon.h"

FUZZ_INITIALIZE_LIBRARY()

static void fuzz_cidr(const uint8_t *data, size_t size) {
    char *text = fuzz_dup_cstr(data, size);
    sp_cidr c;
    if (!fuzz_has_nul((const char *)data, size) && sp_cidr_parse(text, &c) == SP_OK) {
        FUZZ_CHECK(c.family == 4 || c.family == 6);
        FUZZ_CHECK(c.prefix <= (c.family == 4 ? 32u : 128u));
        size_t bytes = c.family == 4 ? 4 : 16;
        for (size_t bit = c.prefix; bit < bytes * 8; bit++) FUZZ_CHECK((c.addr[bit / 8] & (0x80 >> (bit % 8))) == 0);
        char again[64];
        FUZZ_CHECK(sp_cidr_format(&c, again, sizeof again) == SP_OK);
        sp_cidr back;
        FUZZ_CHECK(sp_cidr_parse(again, &back) == SP_OK);
        FUZZ_CHECK(back.family == c.family && back.prefix == c.prefix && memcmp(back.addr, c.addr, bytes) == 0);
    }
    free(text);
}

static void fuzz_list(const uint8_t *data, size_t size) {
    char *text = fuzz_dup_cstr(data, size);
    sp_allow_list list;
    char err[256] = "";
    if (sp_allow_list_parse(text, &list, err, sizeof err) == SP_OK) {
        FUZZ_CHECK(list.count <= SP_MAX_CIDRS);
    } else {
        FUZZ_CHECK(err[0] != '\0');
    }
    free(text);
}

static void fuzz_tenant(const uint8_t *data, size_t size, bool create) {
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (body == NULL) return;
    spd_config config;
    memset(&config, 0, sizeof config);
    memcpy(config.data_dir, "/var/lib/sealpost", sizeof "/var/lib/sealpost");
    FUZZ_CHECK(sp_cidr_parse("127.0.0.1/32", &config.default_tenant_allow.entries[0]) == SP_OK);
    config.default_tenant_allow.count = 1;
    config.rate_per_second = 1000;
    config.rate_burst = 2000;
    spd_settings *s = fuzz_alloc(sizeof *s), *before = fuzz_alloc(sizeof *s);
    FUZZ_CHECK(spd_settings_defaults(&config, "acme", s) == SP_OK);
    memcpy(before, s, sizeof *s);
    bool disabled = false;
    char err[256] = "";
    sp_error rc = spd_settings_apply(body, create, s, &disabled, err, sizeof err);
    if (rc != SP_OK) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(memcmp(s, before, sizeof *s) == 0);
    } else {
        json_t *doc = spd_settings_document(s);
        FUZZ_CHECK(doc != NULL);
        char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        FUZZ_CHECK(text != NULL);
        spd_settings *back = fuzz_alloc(sizeof *back);
        FUZZ_CHECK(spd_settings_parse(text, strlen(text), back) == SP_OK);
        json_t *doc2 = spd_settings_document(back);
        FUZZ_CHECK(doc2 != NULL && json_equal(doc, doc2));
        json_decref(doc2);
        free(back);
        /* jansson's text comes from its allocator (the library's funnel) */
        json_free_t jfree = NULL;
        json_get_alloc_funcs(NULL, &jfree);
        jfree(text);
        json_decref(doc);
    }
    free(before);
    free(s);
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t mode = data[0];
    if (mode == 0) fuzz_cidr(data + 1, size - 1);
    else if (mode == 1) fuzz_list(data + 1, size - 1);
    else fuzz_tenant(data + 1, size - 1, (mode & 2) != 0);
    return 0;
}
