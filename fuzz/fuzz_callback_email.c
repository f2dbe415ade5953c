/*
 * Fuzz target for the e-mail (v2) callback body parser (sp_callback_parse
 * with SP_CALLBACK_FORMAT_EMAIL_V2, src/callbacks/parse.c).
 *
 * A callback body arrives from a provider: authentic once its signature
 * checks, but still arbitrary bytes as far as the parser knows. Checked:
 *   - a refusal is SP_ERR_BAD_CALLBACK or SP_ERR_TOO_LARGE, and hands out
 *     nothing at all (the parser checks a whole body first);
 *   - an accepted body hands out exactly n_events events, each an e-mail kind
 *     (delivered, opened, clicked, hard_bounce, soft_bounce, unsubscribed,
 *     spam) with a well-formed message id,
 *     a time in [0, 2^41) ms and a code in 0..99999; none has text,
 *     a sender or opt_out;
 *   - format detection agrees: when the first byte after white space is
 *     '{', SP_CALLBACK_FORMAT_AUTO gives the same result;
 *   - an error from the callback at the k-th event stops the calls there
 *     and is what the parser returns.
 * The checks themselves are in fuzz_callback.h, shared with the SMS and
 * Kannel targets.
 */
#include "fuzz_util.h"

#include "sealpost/callback.h"

#define FUZZ_FORMAT SP_CALLBACK_FORMAT_EMAIL_V2
#define FUZZ_AUTO_BYTE '{'

FUZZ_INITIALIZE_LIBRARY()

static bool fuzz_kind_ok(sp_callback_event_kind k) {
    return k == SP_CALLBACK_DELIVERED || k == SP_CALLBACK_OPENED || k == SP_CALLBACK_CLICKED ||
           k == SP_CALLBACK_HARD_BOUNCE || k == SP_CALLBACK_SOFT_BOUNCE || k == SP_CALLBACK_UNSUBSCRIBED ||
           k == SP_CALLBACK_SPAM;
}

#include "fuzz_callback.h"
