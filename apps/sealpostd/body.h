/*
 * The request bodies of ingestion (POST /v1/profiles, POST /v1/events),
 * parsed and validated in one pure step: JSON text, the tenant's PII schema
 * and the limits in; a list of validated items out, or one error whose
 * message names the path ("profiles[3].attributes.email: not an email
 * address"). Nothing here touches the store, the vault or the network, so the
 * whole of it is unit-tested and fuzzed on its own.
 *
 * The parsed items point into the jansson tree (no copy of any value is
 * made): spd_body_free releases the tree, and every buffer jansson held goes
 * back wiped, because the parser makes sure libsealpost's wiping allocator is
 * jansson's (sp_init wires it process-wide) before it parses anything.
 *
 * Messages never quote a value, an id or a name that failed validation: a
 * client's mistake must not copy PII into logs. They do quote attribute and
 * member names that passed the [A-Za-z0-9_] check.
 */
#ifndef SPD_BODY_H
#define SPD_BODY_H

#include "daemon.h"

/* Result propagation for the daemon's files (apps do not see src/core). */
#ifndef SPD_TRY
#define SPD_TRY(expr)                                                                              \
    do {                                                                                           \
        sp_error spd_try_rc_ = (expr);                                                             \
        if (spd_try_rc_ != SP_OK) return spd_try_rc_;                                              \
    } while (0)
#define SPD_TRY_GOTO(expr, rc, label)                                                              \
    do {                                                                                           \
        (rc) = (expr);                                                                             \
        if ((rc) != SP_OK) goto label;                                                             \
    } while (0)
#endif

#define SPD_BODY_MAX_ATTRIBUTES 100
#define SPD_BODY_MAX_NAME 48               /* attribute and property names */
#define SPD_BODY_MAX_STRING (64u << 10)    /* one string value */
#define SPD_BODY_MAX_OBJECT (64u << 10)    /* an attributes/properties object, serialised */
#define SPD_BODY_MAX_ID 128                /* profile and event ids */
#define SPD_BODY_MAX_EVENT_NAME 128
#define SPD_BODY_MAX_BATCH 1000
#define SPD_BODY_MAX_MESSAGE 256
/* Event timestamps: Unix milliseconds up to the end of year 9999. */
#define SPD_BODY_MAX_TS INT64_C(253402300799999)

/* What the tenant's settings say about PII, plus the request limits. */
typedef struct spd_body_schema {
    const spd_pii_field *pii;          /* the tenant's pii_fields, in order */
    size_t n_pii;
    const char *default_country_code;  /* NULL or "" when none */
    size_t max_batch;                  /* 1..SPD_BODY_MAX_BATCH */
} spd_body_schema;

/* One PII value of an item: the schema field it belongs to and the string
 * as the client sent it (valid UTF-8, normalises for its kind). */
typedef struct spd_body_pii {
    uint16_t field;                    /* index into schema->pii */
    const char *value;
    size_t len;
} spd_body_pii;

typedef struct spd_body_profile {
    const char *id;                    /* NULL when the client gave none */
    json_t *attributes;                /* the whole object, PII members included */
    size_t n_plain;                    /* attributes that are not PII */
    size_t pii_first, n_pii;           /* its slice of spd_body.pii */
    /* The first PII value (schema order) of an email or phone field, which
     * finds the profile when it has no id; SIZE_MAX when none. */
    size_t identity;                   /* index into spd_body.pii */
} spd_body_profile;

typedef struct spd_body_event {
    const char *id;                    /* NULL when the client gave none */
    const char *profile_id;
    const char *name;
    int64_t ts;                        /* Unix ms; -1 when absent (the caller uses now) */
    json_t *properties;                /* NULL when absent */
    size_t pii_first, n_pii;
} spd_body_event;

typedef struct spd_body {
    json_t *root;
    bool batch;                        /* {"profiles":[…]} rather than one profile */
    spd_body_profile *profiles;        /* one of these two, count items */
    spd_body_event *events;
    size_t count;
    spd_body_pii *pii;                 /* every PII value, item after item */
    size_t n_pii;
} spd_body;

/* Parse results:
 *   SP_OK                    *out filled; release with spd_body_free
 *   SP_ERR_BAD_JSON          not JSON, duplicate keys, trailing data (400 bad_json)
 *   SP_ERR_INVALID_ARGUMENT  wrong shape or value (400 bad_request)
 *   SP_ERR_TOO_LARGE         more than max_batch items (400 batch_too_large)
 *   SP_ERR_NO_MEMORY         (500)
 * msg (cap bytes, may be NULL) gets the reason for the client. */
SP_MUST_CHECK sp_error spd_body_parse_profiles(const uint8_t *text, size_t len, const spd_body_schema *schema,
                                               spd_body *out, char *msg, size_t cap);
SP_MUST_CHECK sp_error spd_body_parse_events(const uint8_t *text, size_t len, const spd_body_schema *schema,
                                             spd_body *out, char *msg, size_t cap);
void spd_body_free(spd_body *body);

/* Profile ids, event ids: visible ASCII (0x21..0x7e), 1..128 bytes. */
bool spd_body_id_ok(const char *s, size_t len);
/* Attribute and property names: [A-Za-z0-9_]{1,48}. */
bool spd_body_name_ok(const char *s, size_t len);
/* The schema field named exactly `name`, or -1. */
int spd_body_pii_index(const spd_body_schema *schema, const char *name);

/* Appends the compact JSON of a string, number, boolean or null to out
 * (the escaping jansson uses), without allocating; false when it does not
 * fit in cap. For the parts of attributes that go to the store as text. */
bool spd_json_append_scalar(char *out, size_t cap, size_t *len, const json_t *value);
/* The same for a string given as bytes (valid UTF-8). */
bool spd_json_append_string(char *out, size_t cap, size_t *len, const char *s, size_t n);
/* The length spd_json_append_scalar would append. */
size_t spd_json_scalar_len(const json_t *value);

#endif
