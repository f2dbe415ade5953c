/*
 * Callbacks: what a provider reports back about the messages it was given
 * (delivery reports, bounces, opens, clicks, replies, opt-outs), read from
 * the formats providers already speak, into one list of events.
 *
 * Formats (docs/PROTOCOL.md §10 is normative):
 *  - SMS, CleverTap-compatible: a JSON array of
 *      {"event": "delivered"|"failed"|"clicked"|"replied",
 *       "data": [{"ts": <unix s>, "meta": "<message id>", "code": 900..920,
 *                 "description": "...", "url": "...", "incomingText": "...",
 *                 "from": "..."}, ...]}
 *  - Email v2, CleverTap-compatible:
 *      {"version": "v2", "events": {"success": [<item>...], "failed": [<item>...]}}
 *    each item {"event": "delivered"|"opened"|"clicked"|"hard_bounce"|
 *    "soft_bounce"|"unsubscribed"|"spam", "ts", "meta", "code", "description", "url"};
 *  - Kannel-style delivery reports, form-encoded:
 *      type=<DLR status bits>&smsc=<smsc id>&meta=<message id>&ts=<unix s>&reply=<SMSC text>
 *    and Kannel-style inbound (MO) messages: from=<sender>&text=<text>&smsc=<id>&ts=<unix s>.
 *
 * The parser checks the whole body before it hands out a single event, so a
 * caller that stores what it is given never stores half of a bad body. It
 * keeps no text it does not need: descriptions and URLs are checked and
 * dropped; a reply's text and an inbound sender are handed out (for opt-out
 * keywords and the sender's blind index) and must never be stored or
 * logged, since they are the user's words and number. Events point into
 * memory the parser owns only during the call to fn.
 */
#ifndef SEALPOST_CALLBACK_H
#define SEALPOST_CALLBACK_H

#include "sealpost/common.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_CALLBACK_MAX_BODY (1u << 20) /* larger bodies are SP_ERR_TOO_LARGE */
#define SP_CALLBACK_MAX_EVENTS 1000     /* events in one body */
#define SP_CALLBACK_MAX_MESSAGE_ID 64   /* meta: [A-Za-z0-9_.:-]{1,64}, like outbox message ids */
#define SP_CALLBACK_MAX_TEXT 1600       /* a reply's or inbound message's text, in bytes */
#define SP_CALLBACK_MAX_FROM 32         /* an inbound sender: printable ASCII */
/* Limits on what is checked and dropped, and on the shape of a body. */
#define SP_CALLBACK_MAX_DESCRIPTION 1024 /* a failure's description, in bytes */
#define SP_CALLBACK_MAX_URL 4096         /* a clicked link, in bytes */
#define SP_CALLBACK_MAX_SMSC 64          /* a Kannel SMSC id: printable ASCII */
#define SP_CALLBACK_MAX_REPLY 256        /* a Kannel SMSC reply text, in bytes */
#define SP_CALLBACK_MAX_CODE 99999       /* codes are 0..99999 */
/* JSON: nesting deeper than this is SP_ERR_BAD_CALLBACK, and more values
 * (each '[', '{' and ',' outside strings counts one) SP_ERR_TOO_LARGE, so a
 * body cannot make the decoder build a tree far beyond what 1,000 events
 * need. The valid shapes nest 4 deep; the rest is for unknown members. */
#define SP_CALLBACK_MAX_DEPTH 16
#define SP_CALLBACK_MAX_JSON_VALUES (64u * SP_CALLBACK_MAX_EVENTS)
/* Form bodies: fields per body, a key's and an unknown value's decoded
 * length; keys are printable ASCII without spaces. */
#define SP_CALLBACK_MAX_FORM_FIELDS 32
#define SP_CALLBACK_MAX_FORM_KEY 32
#define SP_CALLBACK_MAX_FORM_VALUE 4096

typedef enum sp_callback_format {
    SP_CALLBACK_FORMAT_AUTO = 0, /* by the body's first bytes: '[' SMS, '{' email v2, else form */
    SP_CALLBACK_FORMAT_SMS = 1,
    SP_CALLBACK_FORMAT_EMAIL_V2 = 2,
    SP_CALLBACK_FORMAT_KANNEL = 3,
} sp_callback_format;

typedef enum sp_callback_event_kind {
    SP_CALLBACK_DELIVERED = 1,  /* reached the handset or mailbox */
    SP_CALLBACK_FAILED = 2,     /* not delivered (SMS failure, Kannel non-delivery) */
    SP_CALLBACK_HARD_BOUNCE = 3,/* the address does not exist: suppress it */
    SP_CALLBACK_SOFT_BOUNCE = 4,/* not delivered this time (full mailbox, greylisting) */
    SP_CALLBACK_OPENED = 5,
    SP_CALLBACK_CLICKED = 6,
    SP_CALLBACK_REPLIED = 7,    /* a reply to the message (text given) */
    SP_CALLBACK_UNSUBSCRIBED = 8,
    SP_CALLBACK_SPAM = 9,       /* marked as spam: suppress it */
    SP_CALLBACK_BUFFERED = 10,  /* Kannel: queued or accepted by the SMSC, not final */
    SP_CALLBACK_INBOUND = 11,   /* an inbound message not tied to one of ours (text and from given) */
} sp_callback_event_kind;

typedef struct sp_callback_event {
    sp_callback_event_kind kind;
    /* the message the event is about ("" for INBOUND without one) */
    char message_id[SP_CALLBACK_MAX_MESSAGE_ID + 1];
    int64_t ts_ms;              /* when it happened, Unix ms; 0 when the body did not say */
    int code;                   /* failure code (SMS 900..920, email/SMSC codes), 0 when none */
    /* REPLIED and INBOUND only (else NULL, 0): the user's text and, for
     * INBOUND, the sender's number as sent. Never store or log them. */
    const char *text;
    size_t text_len;
    const char *from;
    size_t from_len;
    bool opt_out;               /* REPLIED/INBOUND whose text is an opt-out keyword (sp_callback_is_opt_out) */
} sp_callback_event;

typedef sp_error (*sp_callback_event_fn)(void *arg, const sp_callback_event *event);

/* Parses a whole body (1..SP_CALLBACK_MAX_BODY bytes) and, only when all of
 * it is valid, calls fn once per event in body order; fn's error stops the
 * calls and is returned. n_events (may be NULL) gets how many events the
 * body holds (0 when it is refused; set before the first call to fn).
 * Errors: SP_ERR_TOO_LARGE (body, event count or JSON value count over the
 * limits), SP_ERR_BAD_CALLBACK (anything else wrong, including an empty or
 * all-white-space body, bad JSON or form encoding, invalid UTF-8, NUL
 * bytes, a duplicate key, an unknown event name, a wrong type, a missing or
 * malformed meta, a code outside 0..99999, a text over its limit),
 * SP_ERR_NO_MEMORY, SP_ERR_INVALID_ARGUMENT (fn NULL, body NULL with a
 * length, a format not listed). An empty list of events is valid.
 *
 * Details beyond docs/PROTOCOL.md §10.4: ts is an integer or a string of
 * digits (no sign, no leading zero), refused at or past 2^41 ms; codes
 * likewise. A text is UTF-8 without NUL in every format (form values are
 * checked for it). A sender is handed out for INBOUND only: an SMS item's
 * "from" and a form reply's "from" are checked and dropped. A form body
 * may end in white space; its raw bytes are otherwise visible ASCII, empty
 * pairs are skipped, keys are compared after decoding, and "type" decides
 * a delivery report even when "from" and "text" are present. */
SP_API SP_MUST_CHECK sp_error sp_callback_parse(const uint8_t *body, size_t body_len, sp_callback_format format,
                                                sp_callback_event_fn fn, void *arg, size_t *n_events);

/* Whether a reply is an opt-out: after trimming ASCII white space at both
 * ends and '.' and '!' at the end, and ignoring ASCII case, one of STOP,
 * STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, OPT-OUT, OPT OUT, REVOKE,
 * or "STOP" followed by a space or tab and anything ("STOP please"). Any
 * bytes are safe (non-ASCII ones just never match; NULL is false). The text
 * is not kept. */
SP_API bool sp_callback_is_opt_out(const char *text, size_t len);

/* "delivered", "failed", "hard_bounce", "soft_bounce", "opened", "clicked",
 * "replied", "unsubscribed", "spam", "buffered", "inbound"; "" else. */
SP_API const char *sp_callback_event_name(sp_callback_event_kind kind);
/* "auto", "sms", "email_v2", "kannel"; "" else. */
SP_API const char *sp_callback_format_name(sp_callback_format format);

SP_END_DECLS

#endif
