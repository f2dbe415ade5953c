/*
 * What the sender layer's units share and applications never see: the
 * output cursor the renderers write through (it keeps counting past the
 * buffer's end, so a too-small buffer learns the size it needs in one
 * pass), the escapers, and compiling a template whose literal text is
 * escaped once at compile time (a form field's value, where the author's
 * literal text must be URL-encoded as much as the values are).
 */
#ifndef SP_SENDER_INTERNAL_H
#define SP_SENDER_INTERNAL_H

#include "core/sp_core.h"
#include "sealpost/template.h"

typedef struct sp_tpl_out {
    char *data;
    size_t cap;
    size_t pos; /* bytes produced so far, possibly more than cap */
} sp_tpl_out;

static inline sp_tpl_out sp_tpl_out_of(char *data, size_t cap) {
    sp_tpl_out o = {data, cap, 0};
    return o;
}

/* Appends n bytes (or only counts them once past cap: pos only grows, so
 * nothing is written after the first put that did not fit).
 * SP_ERR_TOO_LARGE when the count would pass SIZE_MAX / 2. */
static inline SP_MUST_CHECK sp_error sp_tpl_put(sp_tpl_out *o, const void *src, size_t n) {
    if (n > SIZE_MAX / 2 - o->pos) return SP_ERR_TOO_LARGE;
    if (n != 0 && o->pos + n <= o->cap) memcpy(o->data + o->pos, src, n);
    o->pos += n;
    return SP_OK;
}
/* Appends the escaped value; SP_ERR_TEMPLATE for invalid UTF-8 under
 * SP_ESCAPE_JSON, SP_ERR_INVALID_ARGUMENT for an unknown escape. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_tpl_put_escaped(sp_tpl_out *o, sp_escape escape, const uint8_t *v, size_t n);
/* Wipes what was written (up to cap). */
SP_INTERNAL void sp_tpl_out_wipe(sp_tpl_out *o);

/* The length of the valid UTF-8 sequence at s (1..4), 0 when invalid. */
SP_INTERNAL size_t sp_utf8_seq_len(const uint8_t *s, size_t n);
/* True when all n bytes are valid UTF-8. */
SP_INTERNAL bool sp_utf8_valid(const uint8_t *s, size_t n);

/* sp_template_compile, with the literal text stored escaped by
 * literal_escape (placeholder values are still escaped at render time). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_template_compile_escaped(const char *text, size_t len,
                                                               sp_template_syntax syntax, sp_escape literal_escape,
                                                               sp_template **out, sp_template_error *err);

#endif
