/*
 * Fuzz target for compiled templates (sp_template_compile and
 * sp_template_render, src/sender/template.c).
 *
 * Templates come from tenants (campaign text) and admins (provider
 * bodies); values come from recipients' profiles. The input is one
 * control byte (bit 0: syntax, bits 1-2: escape), then the template up to
 * the first NUL, then NUL-separated values handed to placeholders in turn
 * (an index past the values is absent). Checked:
 *   - compiling gives OK, SP_ERR_TEMPLATE with a reason and an offset inside
 *     the text, or SP_ERR_TOO_LARGE only over the limit;
 *   - a compiled template's names are distinct, valid for the syntax, at
 *     most SP_TEMPLATE_MAX_PLACEHOLDERS, and found again by name;
 *   - rendering measures exactly: a buffer of the measured size succeeds
 *     with that length, one byte less fails with the same length, and both
 *     failures leave the buffer wiped;
 *   - the escapers, on the first value alone: JSON output parses back to
 *     the value (and is refused exactly when the value is not UTF-8), form
 *     output uses only its alphabet and decodes back to the value, HTML
 *     output holds no markup character.
 */
#include "fuzz_util.h"

#include "sealpost/template.h"

FUZZ_INITIALIZE_LIBRARY()

typedef struct {
    const uint8_t *vals[8];
    size_t lens[8];
    size_t n;
} fuzz_values;

static bool fuzz_lookup(void *ctx, size_t index, const char **value, size_t *len) {
    fuzz_values *v = ctx;
    if (index >= v->n) return false;
    *value = (const char *)v->vals[index];
    *len = v->lens[index];
    return true;
}

static bool fuzz_name_ok(const char *name, sp_template_syntax syntax) {
    size_t n = strlen(name);
    if (n == 0 || n > SP_TEMPLATE_MAX_NAME) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  (syntax == SP_TEMPLATE_CAMPAIGN && (c == '.' || c == '-'));
        if (!ok) return false;
    }
    return true;
}

static bool fuzz_all_zero(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) return false;
    }
    return true;
}

static int fuzz_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* the escapers, on one value, through a one-placeholder template */
static void fuzz_check_escapes(const uint8_t *v, size_t n) {
    sp_template *t = NULL;
    FUZZ_CHECK(sp_template_compile("{\"v\":\"$$V\"}", 11, SP_TEMPLATE_CLEVERTAP, &t, NULL) == SP_OK);
    fuzz_values vals = {{v}, {n}, 1};
    size_t cap = n * 6 + 16, len = 0;
    char *out = fuzz_alloc(cap);

    sp_error rc = sp_template_render(t, fuzz_lookup, &vals, SP_ESCAPE_JSON, out, cap, &len, NULL);
    json_error_t jerr;
    if (rc == SP_OK) {
        json_t *doc = json_loadb(out, len, JSON_ALLOW_NUL, &jerr);
        FUZZ_CHECK(doc != NULL);
        FUZZ_CHECK(fuzz_json_string_is(doc, "v", v, n));
        json_decref(doc);
    } else {
        FUZZ_CHECK(rc == SP_ERR_TEMPLATE);
        /* jansson agrees that the value is not UTF-8 */
        json_t *s = json_stringn((const char *)v, n);
        FUZZ_CHECK(s == NULL);
    }

    FUZZ_CHECK(sp_template_render(t, fuzz_lookup, &vals, SP_ESCAPE_FORM, out, cap, &len, NULL) == SP_OK);
    uint8_t *back = fuzz_alloc(len);
    size_t bn = 0;
    const char *p = out + 6, *end = out + len - 2; /* inside {"v":"..."} */
    while (p < end) {
        char c = *p++;
        if (c == '%') {
            FUZZ_CHECK(end - p >= 2);
            int hi = fuzz_hex(p[0]), lo = fuzz_hex(p[1]);
            FUZZ_CHECK(hi >= 0 && lo >= 0);
            back[bn++] = (uint8_t)(hi << 4 | lo);
            p += 2;
        } else if (c == '+') {
            back[bn++] = ' ';
        } else {
            FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '*' ||
                       c == '-' || c == '.' || c == '_');
            back[bn++] = (uint8_t)c;
        }
    }
    FUZZ_CHECK(bn == n && (n == 0 || memcmp(back, v, n) == 0));
    free(back);

    FUZZ_CHECK(sp_template_render(t, fuzz_lookup, &vals, SP_ESCAPE_HTML, out, cap, &len, NULL) == SP_OK);
    for (size_t i = 6; i + 2 < len; i++) {
        FUZZ_CHECK(out[i] != '<' && out[i] != '>' && out[i] != '"' && out[i] != '\'');
    }
    free(out);
    sp_template_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    sp_template_syntax syntax = (data[0] & 1) ? SP_TEMPLATE_CLEVERTAP : SP_TEMPLATE_CAMPAIGN;
    sp_escape escape = (sp_escape)((data[0] >> 1) & 3);
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;
    const uint8_t *nul = memchr(rest, 0, rest_len);
    size_t tlen = nul ? (size_t)(nul - rest) : rest_len;
    char *text = fuzz_dup(rest, tlen);

    fuzz_values vals = {{0}, {0}, 0};
    if (nul != NULL) {
        const uint8_t *p = nul + 1, *end = rest + rest_len;
        while (vals.n < 8) {
            const uint8_t *q = memchr(p, 0, (size_t)(end - p));
            vals.vals[vals.n] = p;
            vals.lens[vals.n] = q ? (size_t)(q - p) : (size_t)(end - p);
            vals.n++;
            if (q == NULL) break;
            p = q + 1;
        }
    }
    if (vals.n > 0) fuzz_check_escapes(vals.vals[0], vals.lens[0]);

    sp_template *t = NULL;
    sp_template_error err = {0, NULL};
    sp_error rc = sp_template_compile(text, tlen, syntax, &t, &err);
    if (rc != SP_OK) {
        FUZZ_CHECK(t == NULL);
        FUZZ_CHECK(rc == SP_ERR_TEMPLATE || (rc == SP_ERR_TOO_LARGE && tlen > SP_TEMPLATE_MAX_BYTES));
        if (rc == SP_ERR_TEMPLATE) FUZZ_CHECK(err.reason != NULL && err.offset < tlen + 1);
        free(text);
        return 0;
    }
    size_t count = sp_template_placeholder_count(t);
    FUZZ_CHECK(count <= SP_TEMPLATE_MAX_PLACEHOLDERS);
    for (size_t i = 0; i < count; i++) {
        const char *name = sp_template_placeholder_name(t, i);
        FUZZ_CHECK(name != NULL && fuzz_name_ok(name, syntax));
        size_t idx = 0;
        FUZZ_CHECK(sp_template_placeholder_find(t, name, &idx) && idx == i);
    }
    FUZZ_CHECK(sp_template_placeholder_name(t, count) == NULL);

    size_t need = 0, missing = SIZE_MAX;
    rc = sp_template_render(t, fuzz_lookup, &vals, escape, NULL, 0, &need, &missing);
    if (rc == SP_ERR_TEMPLATE) {
        FUZZ_CHECK(missing < count);
    } else {
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_BUFFER_TOO_SMALL);
        FUZZ_CHECK(rc == SP_OK ? need == 0 : need > 0);
        char *out = fuzz_alloc(need);
        size_t len = 0;
        FUZZ_CHECK(sp_template_render(t, fuzz_lookup, &vals, escape, out, need, &len, NULL) == SP_OK);
        FUZZ_CHECK(len == need);
        if (need > 0) {
            len = 0;
            FUZZ_CHECK(sp_template_render(t, fuzz_lookup, &vals, escape, out, need - 1, &len, NULL) ==
                       SP_ERR_BUFFER_TOO_SMALL);
            FUZZ_CHECK(len == need);
            FUZZ_CHECK(fuzz_all_zero(out, need - 1));
        }
        free(out);
    }
    sp_template_free(t);
    free(text);
    return 0;
}
