/*
 * Message templates: compiled once into literal runs and numbered
 * placeholders, rendered per message with no allocation and no string
 * compare.
 *
 * Compiling runs the same parser twice: the first pass validates and
 * counts (segments, text bytes, distinct names), the second fills one block
 * of exactly that size, so a template is a single allocation and the parser
 * needs no growable buffers. The block holds the segment array and a text
 * area with every literal run (escaped already when the caller asked for
 * that), every default, and the NUL-terminated names.
 *
 * Rendering walks the segments: copy a literal run, ask the caller for the
 * value of the segment's placeholder by index, escape it into the output.
 * The output cursor keeps counting after the buffer is full, so a buffer
 * that is too small learns the exact size it needs from the same pass, and
 * whatever was written is wiped on every failure because values are
 * personal data.
 */
#include "sender/sp_sender_internal.h"

#define SP_TPL_NO_SLOT UINT16_MAX

typedef struct sp_tpl_seg {
    uint32_t lit_off, lit_len; /* the literal run before the placeholder */
    uint32_t def_off, def_len; /* its default, when has_default */
    uint16_t slot;             /* placeholder index, SP_TPL_NO_SLOT for the tail */
    uint8_t raw;
    uint8_t has_default;
} sp_tpl_seg;

struct sp_template {
    sp_template_syntax syntax;
    size_t n_segs;
    sp_tpl_seg *segs;
    char *text;
    size_t text_len;
    size_t n_names;
    uint32_t name_off[SP_TEMPLATE_MAX_PLACEHOLDERS];
    bool required[SP_TEMPLATE_MAX_PLACEHOLDERS];
};

/* ---- UTF-8 ---- */
static bool sp_utf8_cont(uint8_t c) { return (c & 0xC0) == 0x80; }

size_t sp_utf8_seq_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0; /* a continuation byte, or an overlong 2-byte lead */
    if (c < 0xE0) return n >= 2 && sp_utf8_cont(s[1]) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || !sp_utf8_cont(s[1]) || !sp_utf8_cont(s[2])) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* a UTF-16 surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || !sp_utf8_cont(s[1]) || !sp_utf8_cont(s[2]) || !sp_utf8_cont(s[3])) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

bool sp_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = sp_utf8_seq_len(s + i, n - i);
        if (l == 0) return false;
        i += l;
    }
    return true;
}

/* ---- escapers ---- */
static const char sp_hex_upper[] = "0123456789ABCDEF";

static sp_error sp_put_json(sp_tpl_out *o, const uint8_t *v, size_t n) {
    size_t run = 0, i = 0;
    while (i < n) {
        uint8_t c = v[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = sp_utf8_seq_len(v + i, n - i);
            if (l == 0) return SP_ERR_TEMPLATE;
            i += l;
            continue;
        }
        SP_GUARD(sp_tpl_put(o, v + run, i - run));
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = sp_hex_upper[c >> 4];
            esc[5] = sp_hex_upper[c & 15];
            el = 6;
        }
        SP_GUARD(sp_tpl_put(o, esc, el));
        run = ++i;
    }
    return sp_tpl_put(o, v + run, n - run);
}

static bool sp_form_plain(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '*' || c == '-' ||
           c == '.' || c == '_';
}

static sp_error sp_put_form(sp_tpl_out *o, const uint8_t *v, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = v[i];
        if (sp_form_plain(c)) continue;
        SP_GUARD(sp_tpl_put(o, v + run, i - run));
        if (c == ' ') {
            SP_GUARD(sp_tpl_put(o, "+", 1));
        } else {
            char esc[3] = {'%', sp_hex_upper[c >> 4], sp_hex_upper[c & 15]};
            SP_GUARD(sp_tpl_put(o, esc, 3));
        }
        run = i + 1;
    }
    return sp_tpl_put(o, v + run, n - run);
}

static sp_error sp_put_html(sp_tpl_out *o, const uint8_t *v, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ent;
        switch (v[i]) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: continue;
        }
        SP_GUARD(sp_tpl_put(o, v + run, i - run));
        SP_GUARD(sp_tpl_put(o, ent, strlen(ent)));
        run = i + 1;
    }
    return sp_tpl_put(o, v + run, n - run);
}

sp_error sp_tpl_put_escaped(sp_tpl_out *o, sp_escape escape, const uint8_t *v, size_t n) {
    switch (escape) {
    case SP_ESCAPE_NONE: return sp_tpl_put(o, v, n);
    case SP_ESCAPE_JSON: return sp_put_json(o, v, n);
    case SP_ESCAPE_FORM: return sp_put_form(o, v, n);
    case SP_ESCAPE_HTML: return sp_put_html(o, v, n);
    }
    return SP_ERR_INVALID_ARGUMENT;
}

void sp_tpl_out_wipe(sp_tpl_out *o) {
    if (o->data != NULL) sp_wipe(o->data, o->pos < o->cap ? o->pos : o->cap);
}

/* ---- compiling ---- */
typedef struct sp_tpl_build {
    const uint8_t *src;
    size_t len;
    sp_template_syntax syntax;
    sp_escape lit_escape;
    sp_template *t;   /* NULL while counting */
    sp_tpl_out text;  /* literal runs and defaults */
    size_t lit_start; /* where the current literal run began in text */
    size_t n_segs;
    size_t n_names;
    sp_span names[SP_TEMPLATE_MAX_PLACEHOLDERS];
    bool required[SP_TEMPLATE_MAX_PLACEHOLDERS];
    sp_template_error *err;
} sp_tpl_build;

static sp_error sp_tpl_fail(sp_tpl_build *b, size_t offset, const char *reason) {
    if (b->err != NULL) {
        b->err->offset = offset;
        b->err->reason = reason;
    }
    return SP_ERR_TEMPLATE;
}

static sp_error sp_tpl_literal(sp_tpl_build *b, size_t from, size_t to) {
    if (b->lit_escape == SP_ESCAPE_NONE) return sp_tpl_put(&b->text, b->src + from, to - from);
    sp_error rc = sp_tpl_put_escaped(&b->text, b->lit_escape, b->src + from, to - from);
    /* only JSON refuses bytes, and a template's own literal text is the
     * author's: report it as a template error at the run */
    return rc == SP_ERR_TEMPLATE ? sp_tpl_fail(b, from, "literal text is not valid UTF-8") : rc;
}

static bool sp_tpl_name_char(uint8_t c, sp_template_syntax syntax) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') return true;
    return syntax == SP_TEMPLATE_CAMPAIGN && (c == '.' || c == '-');
}

/* A placeholder use: its name is src[name_off, +name_len), its default
 * def (when has_default) is text the author wrote. */
static sp_error sp_tpl_placeholder(sp_tpl_build *b, size_t at, size_t name_off, size_t name_len, bool has_default,
                                   sp_span def, bool raw) {
    if (b->n_segs >= SP_TEMPLATE_MAX_USES) return sp_tpl_fail(b, at, "too many placeholder uses");
    const uint8_t *name = b->src + name_off;
    size_t slot = 0;
    while (slot < b->n_names &&
           !(b->names[slot].len == name_len && memcmp(b->names[slot].data, name, name_len) == 0)) {
        slot++;
    }
    if (slot == b->n_names) {
        if (b->n_names == SP_TEMPLATE_MAX_PLACEHOLDERS) return sp_tpl_fail(b, at, "too many placeholders");
        b->names[slot].data = name;
        b->names[slot].len = name_len;
        b->required[slot] = false;
        b->n_names++;
    }
    if (!has_default) b->required[slot] = true;

    sp_tpl_seg seg = {0};
    seg.lit_off = (uint32_t)b->lit_start;
    seg.lit_len = (uint32_t)(b->text.pos - b->lit_start);
    seg.slot = (uint16_t)slot;
    seg.raw = raw;
    seg.has_default = has_default;
    if (has_default) {
        seg.def_off = (uint32_t)b->text.pos;
        seg.def_len = (uint32_t)def.len;
        SP_GUARD(sp_tpl_put(&b->text, def.data, def.len));
    }
    b->lit_start = b->text.pos;
    if (b->t != NULL) b->t->segs[b->n_segs] = seg;
    b->n_segs++;
    return SP_OK;
}

static bool sp_tpl_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static sp_error sp_tpl_parse_campaign(sp_tpl_build *b) {
    const uint8_t *s = b->src;
    size_t n = b->len, i = 0, run = 0;
    while (i < n) {
        if (!(s[i] == '{' && i + 1 < n && s[i + 1] == '{')) {
            i++;
            continue;
        }
        size_t open = i;
        bool raw = i + 2 < n && s[i + 2] == '{';
        size_t inner = open + (raw ? 3 : 2), k = inner;
        while (k + 1 < n && !(s[k] == '}' && s[k + 1] == '}')) {
            if (s[k] == '{' && s[k + 1] == '{') return sp_tpl_fail(b, k, "'{{' inside a placeholder");
            k++;
        }
        if (k + 1 >= n) return sp_tpl_fail(b, open, "unterminated '{{'");
        size_t end = k + 2;
        if (raw) {
            if (end >= n || s[end] != '}') return sp_tpl_fail(b, k, "a raw placeholder must end with '}}}'");
            end++;
        }
        size_t bar = inner;
        while (bar < k && s[bar] != '|') bar++;
        size_t a = inner, z = bar;
        while (a < z && sp_tpl_space(s[a])) a++;
        while (z > a && sp_tpl_space(s[z - 1])) z--;
        if (a == z) return sp_tpl_fail(b, open, "empty placeholder name");
        if (z - a > SP_TEMPLATE_MAX_NAME) return sp_tpl_fail(b, a, "placeholder name too long");
        for (size_t c = a; c < z; c++) {
            if (!sp_tpl_name_char(s[c], SP_TEMPLATE_CAMPAIGN)) {
                return sp_tpl_fail(b, c, "invalid character in placeholder name");
            }
        }
        sp_span def = {s + k, 0};
        bool has_default = bar < k;
        if (has_default) {
            size_t da = bar + 1, dz = k;
            while (da < dz && sp_tpl_space(s[da])) da++;
            while (dz > da && sp_tpl_space(s[dz - 1])) dz--;
            def.data = s + da;
            def.len = dz - da;
        }
        SP_GUARD(sp_tpl_literal(b, run, open));
        SP_GUARD(sp_tpl_placeholder(b, open, a, z - a, has_default, def, raw));
        i = run = end;
    }
    return sp_tpl_literal(b, run, n);
}

static sp_error sp_tpl_parse_clevertap(sp_tpl_build *b) {
    const uint8_t *s = b->src;
    size_t n = b->len, i = 0, run = 0;
    while (i < n) {
        if (!(s[i] == '$' && i + 1 < n && s[i + 1] == '$')) {
            i++;
            continue;
        }
        if (i + 3 < n && s[i + 2] == '$' && s[i + 3] == '$') {
            SP_GUARD(sp_tpl_literal(b, run, i + 2)); /* keeps one "$$" */
            i = run = i + 4;
            continue;
        }
        size_t j = i + 2;
        while (j < n && sp_tpl_name_char(s[j], SP_TEMPLATE_CLEVERTAP)) j++;
        if (j == i + 2) return sp_tpl_fail(b, i, "'$$' must be followed by a name or by '$$'");
        if (j - (i + 2) > SP_TEMPLATE_MAX_NAME) return sp_tpl_fail(b, i + 2, "placeholder name too long");
        SP_GUARD(sp_tpl_literal(b, run, i));
        sp_span none = {s + i, 0};
        SP_GUARD(sp_tpl_placeholder(b, i, i + 2, j - (i + 2), false, none, false));
        i = run = j;
    }
    return sp_tpl_literal(b, run, n);
}

static sp_error sp_tpl_parse(sp_tpl_build *b) {
    b->text.pos = 0;
    b->lit_start = 0;
    b->n_segs = 0;
    b->n_names = 0;
    SP_GUARD(b->syntax == SP_TEMPLATE_CAMPAIGN ? sp_tpl_parse_campaign(b) : sp_tpl_parse_clevertap(b));
    /* the tail: the literal run after the last placeholder */
    sp_tpl_seg tail = {0};
    tail.lit_off = (uint32_t)b->lit_start;
    tail.lit_len = (uint32_t)(b->text.pos - b->lit_start);
    tail.slot = SP_TPL_NO_SLOT;
    if (b->t != NULL) b->t->segs[b->n_segs] = tail;
    b->n_segs++;
    return SP_OK;
}

sp_error sp_template_compile_escaped(const char *text, size_t len, sp_template_syntax syntax,
                                     sp_escape literal_escape, sp_template **out, sp_template_error *err) {
    SP_ENSURE(out != NULL, SP_ERR_INVALID_ARGUMENT);
    *out = NULL;
    SP_ENSURE(text != NULL || len == 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(syntax == SP_TEMPLATE_CAMPAIGN || syntax == SP_TEMPLATE_CLEVERTAP, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(literal_escape <= SP_ESCAPE_HTML, SP_ERR_INVALID_ARGUMENT);
    if (err != NULL) {
        err->offset = 0;
        err->reason = NULL;
    }
    SP_ENSURE(len <= SP_TEMPLATE_MAX_BYTES, SP_ERR_TOO_LARGE);
    const char *nul = len ? memchr(text, 0, len) : NULL;
    if (nul != NULL) {
        if (err != NULL) {
            err->offset = (size_t)(nul - text);
            err->reason = "NUL byte in template";
        }
        return SP_ERR_TEMPLATE;
    }

    /* b is large (the name table): keep it off small thread stacks */
    sp_tpl_build *b = sp_calloc(1, sizeof *b);
    SP_ENSURE(b != NULL, SP_ERR_NO_MEMORY);
    b->src = (const uint8_t *)(text != NULL ? text : "");
    b->len = len;
    b->syntax = syntax;
    b->lit_escape = literal_escape;
    b->err = err;
    sp_error rc = sp_tpl_parse(b);
    if (rc != SP_OK) goto done;

    size_t text_len = b->text.pos, names_bytes = 0;
    for (size_t i = 0; i < b->n_names; i++) names_bytes += b->names[i].len + 1;
    size_t segs_bytes = b->n_segs * sizeof(sp_tpl_seg);
    sp_template *t = sp_malloc(sizeof *t + segs_bytes + text_len + names_bytes);
    SP_ENSURE_GOTO(t != NULL, SP_ERR_NO_MEMORY, rc, done);
    memset(t, 0, sizeof *t);
    t->syntax = syntax;
    t->segs = (sp_tpl_seg *)(void *)(t + 1);
    t->text = (char *)t->segs + segs_bytes;
    t->text_len = text_len + names_bytes;
    t->n_segs = b->n_segs;

    b->t = t;
    b->text = sp_tpl_out_of(t->text, text_len);
    rc = sp_tpl_parse(b); /* the same input: cannot fail now */
    if (rc != SP_OK || b->text.pos != text_len || b->n_segs != t->n_segs) {
        sp_free(t);
        rc = rc != SP_OK ? rc : SP_ERR_INVALID_ARGUMENT;
        goto done;
    }
    size_t off = text_len;
    t->n_names = b->n_names;
    for (size_t i = 0; i < b->n_names; i++) {
        t->name_off[i] = (uint32_t)off;
        t->required[i] = b->required[i];
        memcpy(t->text + off, b->names[i].data, b->names[i].len);
        t->text[off + b->names[i].len] = 0;
        off += b->names[i].len + 1;
    }
    *out = t;
done:
    sp_free(b);
    return rc;
}

sp_error sp_template_compile(const char *text, size_t len, sp_template_syntax syntax, sp_template **out,
                             sp_template_error *err) {
    return sp_template_compile_escaped(text, len, syntax, SP_ESCAPE_NONE, out, err);
}

void sp_template_free(sp_template *t) {
    if (t == NULL) return;
    /* defaults and literal text may be as sensitive as the campaign */
    sp_free_wiped(t, sizeof *t + t->n_segs * sizeof(sp_tpl_seg) + t->text_len);
}

sp_template_syntax sp_template_get_syntax(const sp_template *t) { return t != NULL ? t->syntax : 0; }

size_t sp_template_placeholder_count(const sp_template *t) { return t != NULL ? t->n_names : 0; }

const char *sp_template_placeholder_name(const sp_template *t, size_t i) {
    if (t == NULL || i >= t->n_names) return NULL;
    return t->text + t->name_off[i];
}

bool sp_template_placeholder_required(const sp_template *t, size_t i) {
    return t != NULL && i < t->n_names && t->required[i];
}

bool sp_template_placeholder_find(const sp_template *t, const char *name, size_t *index) {
    if (t == NULL || name == NULL) return false;
    for (size_t i = 0; i < t->n_names; i++) {
        if (strcmp(t->text + t->name_off[i], name) == 0) {
            if (index != NULL) *index = i;
            return true;
        }
    }
    return false;
}

/* ---- rendering ---- */
sp_error sp_template_render(const sp_template *t, sp_template_lookup_fn lookup, void *ctx, sp_escape escape,
                            char *out, size_t cap, size_t *out_len, size_t *missing_index) {
    SP_ENSURE(out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    SP_ENSURE(t != NULL && lookup != NULL && (out != NULL || cap == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(escape <= SP_ESCAPE_HTML, SP_ERR_INVALID_ARGUMENT);
    sp_tpl_out o = sp_tpl_out_of(out, cap);
    sp_error rc = SP_OK;
    size_t slot = 0;
    for (size_t s = 0; s < t->n_segs; s++) {
        const sp_tpl_seg *g = &t->segs[s];
        SP_GUARD_GOTO(sp_tpl_put(&o, t->text + g->lit_off, g->lit_len), rc, fail);
        if (g->slot == SP_TPL_NO_SLOT) continue;
        slot = g->slot;
        const char *v = NULL;
        size_t vn = 0;
        if (!lookup(ctx, slot, &v, &vn)) {
            SP_ENSURE_GOTO(g->has_default, SP_ERR_TEMPLATE, rc, fail);
            v = t->text + g->def_off;
            vn = g->def_len;
        }
        SP_ENSURE_GOTO(v != NULL || vn == 0, SP_ERR_INVALID_ARGUMENT, rc, fail);
        if (v == NULL) v = "";
        if (g->raw) {
            SP_GUARD_GOTO(sp_tpl_put(&o, v, vn), rc, fail);
        } else {
            SP_GUARD_GOTO(sp_tpl_put_escaped(&o, escape, (const uint8_t *)v, vn), rc, fail);
        }
    }
    if (o.pos > cap) {
        sp_tpl_out_wipe(&o);
        *out_len = o.pos;
        return SP_ERR_BUFFER_TOO_SMALL;
    }
    *out_len = o.pos;
    return SP_OK;
fail:
    sp_tpl_out_wipe(&o);
    if (rc == SP_ERR_TEMPLATE && missing_index != NULL) *missing_index = slot;
    return rc;
}

sp_error sp_template_check_names(const sp_template *t, const char *const *allowed, size_t n_allowed,
                                 size_t *unknown_index) {
    SP_ENSURE(t != NULL && (allowed != NULL || n_allowed == 0), SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < t->n_names; i++) {
        const char *name = t->text + t->name_off[i];
        bool known = false;
        for (size_t j = 0; j < n_allowed && !known; j++) known = allowed[j] != NULL && strcmp(allowed[j], name) == 0;
        if (!known) {
            if (unknown_index != NULL) *unknown_index = i;
            return SP_ERR_TEMPLATE;
        }
    }
    return SP_OK;
}
