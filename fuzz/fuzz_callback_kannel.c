/*
 * Fuzz target for the Kannel form callback body parser (sp_callback_parse
 * with SP_CALLBACK_FORMAT_KANNEL, src/callbacks/parse.c).
 *
 * A callback body arrives from a provider: authentic once its signature
 * checks, but still arbitrary bytes as far as the parser knows. Checked:
 *   - a refusal is SP_ERR_BAD_CALLBACK or SP_ERR_TOO_LARGE, and hands out
 *     nothing at all (the parser checks a whole body first);
 *   - an accepted body hands out exactly one event: delivered, failed,
 *     buffered, replied or inbound, with a well-formed message id,
 *     a time in [0, 2^41) ms and a code in 0..99999; a reply's or an
 *     inbound message's text is UTF-8 without NUL, within its limit, and
 *     its opt_out flag is sp_callback_is_opt_out of it; an inbound message
 *     also has a printable sender; no other event has text or a sender;
 *   - format detection agrees: when the first byte after white space is
 *     neither '[' nor '{', SP_CALLBACK_FORMAT_AUTO gives the same result;
 *   - an error from the callback at the k-th event stops the calls there
 *     and is what the parser returns.
 * The checks themselves are in fuzz_callback.h, shared with the SMS and
 * e-mail targets; on top, the opt-out keyword check runs on the raw input
 * and must ignore ASCII case.
 */
#include "fuzz_util.h"

#include "sealpost/callback.h"

#define FUZZ_FORMAT SP_CALLBACK_FORMAT_KANNEL
#define FUZZ_AUTO_BYTE 0 /* anything but '[' and '{' */

FUZZ_INITIALIZE_LIBRARY()

static bool fuzz_kind_ok(sp_callback_event_kind k) {
    return k == SP_CALLBACK_DELIVERED || k == SP_CALLBACK_FAILED || k == SP_CALLBACK_BUFFERED ||
           k == SP_CALLBACK_REPLIED || k == SP_CALLBACK_INBOUND;
}

/* opt-out: any bytes, and ASCII case never matters */
#define FUZZ_EXTRA(body, size)                                                      \
    do {                                                                            \
        bool stop = sp_callback_is_opt_out((const char *)(body), (size));           \
        for (size_t i = 0; i < (size); i++)                                         \
            if ((body)[i] >= 'a' && (body)[i] <= 'z') (body)[i] = (uint8_t)((body)[i] - 32); \
        FUZZ_CHECK(sp_callback_is_opt_out((const char *)(body), (size)) == stop);   \
    } while (0)

#include "fuzz_callback.h"
