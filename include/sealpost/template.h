/*
 * Compiled message templates: a campaign's text with {{name}} placeholders
 * filled from a recipient's attributes, and a CleverTap-style provider body
 * with $$Name placeholders filled from the message.
 *
 * A template is compiled once (when a campaign or channel is saved) into
 * literal runs and numbered placeholders. Each distinct name gets one index,
 * so a caller binds names to its own value slots once and then, per message,
 * answers lookups by index: rendering compares no strings, allocates
 * nothing and writes straight into the caller's buffer. A compiled template
 * is immutable, so many threads may render it at once.
 *
 * Literal text is the template author's and is copied as it is; values are
 * the recipient's and are escaped for where they land (a JSON string, a form
 * field, HTML), except in a campaign's {{{raw}}} placeholder, which the
 * author asked for explicitly. docs/CHANNELS.md has the full rules.
 */
#ifndef SEALPOST_TEMPLATE_H
#define SEALPOST_TEMPLATE_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_TEMPLATE_MAX_BYTES (256u * 1024) /* template text */
#define SP_TEMPLATE_MAX_PLACEHOLDERS 256    /* distinct names */
#define SP_TEMPLATE_MAX_USES 4096           /* placeholder occurrences */
#define SP_TEMPLATE_MAX_NAME 64             /* bytes in a name */

typedef enum sp_template_syntax {
    /* {{name}}, {{name|default}}, {{{name}}} (raw); names [A-Za-z0-9_.-]{1,64},
     * whitespace inside the braces trimmed */
    SP_TEMPLATE_CAMPAIGN = 1,
    /* $$Name with Name [A-Za-z0-9_]{1,64}; $$$$ is a literal $$ */
    SP_TEMPLATE_CLEVERTAP = 2,
} sp_template_syntax;

typedef enum sp_escape {
    SP_ESCAPE_NONE = 0,
    /* the value goes inside a JSON string: " \ and control characters are
     * escaped; the value must be valid UTF-8 (anything else is refused) */
    SP_ESCAPE_JSON = 1,
    /* application/x-www-form-urlencoded: A-Z a-z 0-9 * - . _ kept, space as
     * '+', every other byte as %XX */
    SP_ESCAPE_FORM = 2,
    /* HTML text or a quoted attribute: & < > " ' as entities */
    SP_ESCAPE_HTML = 3,
} sp_escape;

typedef struct sp_template sp_template;

/* Where and why compiling stopped: reason is a short static English text
 * that never quotes the template. */
typedef struct sp_template_error {
    size_t offset;
    const char *reason;
} sp_template_error;

/* Compiles len bytes of text (no NUL needed; a NUL byte is refused). Errors:
 * SP_ERR_TEMPLATE with *err filled (err may be NULL), SP_ERR_TOO_LARGE over
 * SP_TEMPLATE_MAX_BYTES, SP_ERR_NO_MEMORY. Free with sp_template_free. */
SP_API SP_MUST_CHECK sp_error sp_template_compile(const char *text, size_t len, sp_template_syntax syntax,
                                                  sp_template **out, sp_template_error *err);
SP_API void sp_template_free(sp_template *t);

SP_API sp_template_syntax sp_template_get_syntax(const sp_template *t);
/* Distinct placeholder names, indexed 0..count-1 in order of first use. */
SP_API size_t sp_template_placeholder_count(const sp_template *t);
/* The NUL-terminated name of index i (NULL when i is out of range); valid
 * while t lives. */
SP_API const char *sp_template_placeholder_name(const sp_template *t, size_t i);
/* True when some use of index i has no default, so an absent value fails
 * the render. */
SP_API bool sp_template_placeholder_required(const sp_template *t, size_t i);
/* The index of name (NUL-terminated) through *index; false when the
 * template does not use it. For binding, not for the per-message path. */
SP_API bool sp_template_placeholder_find(const sp_template *t, const char *name, size_t *index);

/* A value for placeholder `index`: true with *value and *len set (the bytes need
 * no NUL and must stay valid until the render returns), false when the
 * recipient has no such value. */
typedef bool (*sp_template_lookup_fn)(void *ctx, size_t index, const char **value, size_t *len);

/* Renders into out (cap bytes; out may be NULL when cap is 0). No NUL is
 * written. Errors:
 *   SP_ERR_TEMPLATE          a value is absent and that use has no default,
 *                            or a value is not valid UTF-8 under
 *                            SP_ESCAPE_JSON: *missing_index names it;
 *   SP_ERR_BUFFER_TOO_SMALL  *out_len is the size needed (a retry with that
 *                            capacity and the same values succeeds);
 *   SP_ERR_INVALID_ARGUMENT  bad arguments, an unknown escape, or a lookup
 *                            that answered NULL with a non-zero length.
 * On any error the written part of out is wiped (values may be personal
 * data). missing_index may be NULL. */
SP_API SP_MUST_CHECK sp_error sp_template_render(const sp_template *t, sp_template_lookup_fn lookup, void *ctx,
                                                 sp_escape escape, char *out, size_t cap, size_t *out_len,
                                                 size_t *missing_index);

/* At save time: SP_OK when every placeholder name is one of the n_allowed
 * names (exact, case-sensitive); otherwise SP_ERR_TEMPLATE with
 * *unknown_index the first unknown placeholder (in order of first use). */
SP_API SP_MUST_CHECK sp_error sp_template_check_names(const sp_template *t, const char *const *allowed,
                                                      size_t n_allowed, size_t *unknown_index);

SP_END_DECLS

#endif
