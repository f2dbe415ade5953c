/*
 * KMIP's wire encoding (TTLV, KMIP 1.2/1.4 section 9.1) and the message
 * envelope around it, for the KMIP backend (kms_kmip.c).
 *
 * Debian ships no C KMIP client, so sealpost carries a small one. Every item
 * is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and the value,
 * padded with zeros to a multiple of 8 bytes; a Structure's value is its
 * items. Responses come from the network, so the decoder trusts nothing:
 * every length is checked against the bytes that remain and against what
 * the type allows, padding must be zeros, nesting stops at
 * SP_TTLV_MAX_DEPTH, a message at SP_TTLV_MAX_MESSAGE bytes and the item
 * count at the caller's array. Anything else is SP_ERR_KMS_PROTOCOL. Being
 * that strict also makes the encoding canonical: re-encoding a decoded
 * message gives back the same bytes, which the fuzz target checks.
 *
 * The encoder writes into an sp_wbuf and back-patches each Structure's
 * length when it is closed. Its errors are sticky, so a request is a
 * straight run of calls with one check at sp_ttlv_enc_finish().
 */
#ifndef SP_KMIP_TTLV_H
#define SP_KMIP_TTLV_H

#include "core/sp_core.h"

/* ---- limits ---- */
#define SP_TTLV_MAX_DEPTH 16              /* the outermost item is level 1 */
#define SP_TTLV_MAX_MESSAGE (1024 * 1024) /* whole message, header included */
#define SP_TTLV_HEADER 8

/* ---- item types ---- */
enum {
    SP_TTLV_STRUCTURE = 0x01,
    SP_TTLV_INTEGER = 0x02,      /* signed 32-bit, 4 bytes + 4 of padding */
    SP_TTLV_LONG_INTEGER = 0x03, /* signed 64-bit */
    SP_TTLV_BIG_INTEGER = 0x04,  /* two's complement, big-endian, a multiple of 8 bytes */
    SP_TTLV_ENUMERATION = 0x05,  /* unsigned 32-bit, 4 bytes + 4 of padding */
    SP_TTLV_BOOLEAN = 0x06,      /* 8 bytes, 0 or 1 */
    SP_TTLV_TEXT_STRING = 0x07,  /* UTF-8 (not checked here), padded */
    SP_TTLV_BYTE_STRING = 0x08,  /* padded */
    SP_TTLV_DATE_TIME = 0x09,    /* signed 64-bit POSIX seconds */
    SP_TTLV_INTERVAL = 0x0A,     /* unsigned 32-bit seconds, 4 bytes + 4 of padding */
};

/* ---- the tags, enumerations and attribute names the client uses ---- */
enum {
    KMIP_TAG_ATTRIBUTE = 0x420008,
    KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
    KMIP_TAG_ATTRIBUTE_NAME = 0x42000A,
    KMIP_TAG_ATTRIBUTE_VALUE = 0x42000B,
    KMIP_TAG_BATCH_COUNT = 0x42000D,
    KMIP_TAG_BATCH_ITEM = 0x42000F,
    KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
    KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
    KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002A,
    KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS = 0x42002B,
    KMIP_TAG_IV_COUNTER_NONCE = 0x42003D,
    KMIP_TAG_MAXIMUM_RESPONSE_SIZE = 0x420050,
    KMIP_TAG_OBJECT_TYPE = 0x420057,
    KMIP_TAG_OPERATION = 0x42005C,
    KMIP_TAG_PROTOCOL_VERSION = 0x420069,
    KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006A,
    KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006B,
    KMIP_TAG_REQUEST_HEADER = 0x420077,
    KMIP_TAG_REQUEST_MESSAGE = 0x420078,
    KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
    KMIP_TAG_RESPONSE_HEADER = 0x42007A,
    KMIP_TAG_RESPONSE_MESSAGE = 0x42007B,
    KMIP_TAG_RESPONSE_PAYLOAD = 0x42007C,
    KMIP_TAG_RESULT_MESSAGE = 0x42007D,
    KMIP_TAG_RESULT_REASON = 0x42007E,
    KMIP_TAG_RESULT_STATUS = 0x42007F,
    KMIP_TAG_REVOCATION_MESSAGE = 0x420080,
    KMIP_TAG_REVOCATION_REASON = 0x420081,
    KMIP_TAG_REVOCATION_REASON_CODE = 0x420082,
    KMIP_TAG_STATE = 0x42008D,
    KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
    KMIP_TAG_TIME_STAMP = 0x420092,
    KMIP_TAG_UNIQUE_BATCH_ITEM_ID = 0x420093,
    KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
    KMIP_TAG_DATA = 0x4200C2,
    KMIP_TAG_TAG_LENGTH = 0x4200CE,
    KMIP_TAG_AEAD_ADDITIONAL_DATA = 0x4200FE, /* KMIP 1.4 */
    KMIP_TAG_AEAD_TAG = 0x4200FF,             /* KMIP 1.4: Authenticated Encryption Tag */
};

enum {
    KMIP_OP_CREATE = 0x01,
    KMIP_OP_GET_ATTRIBUTES = 0x0B,
    KMIP_OP_ACTIVATE = 0x12,
    KMIP_OP_REVOKE = 0x13,
    KMIP_OP_ENCRYPT = 0x1F,
    KMIP_OP_DECRYPT = 0x20,
};

enum {
    KMIP_STATUS_SUCCESS = 0,
    KMIP_STATUS_OPERATION_FAILED = 1,
    KMIP_STATUS_OPERATION_PENDING = 2,
    KMIP_STATUS_OPERATION_UNDONE = 3,
};

enum {
    KMIP_REASON_ITEM_NOT_FOUND = 0x01,
    KMIP_REASON_RESPONSE_TOO_LARGE = 0x02,
    KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
    KMIP_REASON_INVALID_MESSAGE = 0x04,
    KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
    KMIP_REASON_MISSING_DATA = 0x06,
    KMIP_REASON_INVALID_FIELD = 0x07,
    KMIP_REASON_FEATURE_NOT_SUPPORTED = 0x08,
    KMIP_REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
    KMIP_REASON_ILLEGAL_OPERATION = 0x0B,
    KMIP_REASON_PERMISSION_DENIED = 0x0C,
    KMIP_REASON_OBJECT_ARCHIVED = 0x0D,
    KMIP_REASON_GENERAL_FAILURE = 0x100,
};

enum {
    KMIP_STATE_PRE_ACTIVE = 1,
    KMIP_STATE_ACTIVE = 2,
    KMIP_STATE_DEACTIVATED = 3,
    KMIP_STATE_COMPROMISED = 4,
    KMIP_STATE_DESTROYED = 5,
    KMIP_STATE_DESTROYED_COMPROMISED = 6,
};

enum {
    KMIP_OBJECT_SYMMETRIC_KEY = 0x02,
    KMIP_ALG_AES = 0x03,
    KMIP_MODE_GCM = 0x09,
    KMIP_USAGE_ENCRYPT = 0x04,
    KMIP_USAGE_DECRYPT = 0x08,
    KMIP_REVOKE_KEY_COMPROMISE = 0x02,
    KMIP_REVOKE_CESSATION_OF_OPERATION = 0x06,
};

/* ---- decoding ---- */
typedef struct sp_ttlv_item {
    uint32_t tag;
    uint8_t type;
    uint8_t level;  /* 1 for the outermost item */
    size_t parent;  /* index of the enclosing Structure; 0 for the outermost item */
    size_t first;   /* Structure: index of the first item inside, 0 when empty */
    size_t next;    /* index of the next item in the same Structure, 0 at the end */
    sp_span value;  /* the value without padding; a Structure's items */
    int64_t number; /* Integer, Long Integer, Enumeration, Boolean, Date-Time, Interval */
} sp_ttlv_item;

/* The items of one message in document order; items[0] is the outermost.
 * Index 0 can therefore never be a child or a sibling, and 0 means "none". */
typedef struct sp_ttlv_tree {
    sp_ttlv_item *items;
    size_t cap;
    size_t count;
} sp_ttlv_tree;

static inline sp_ttlv_tree sp_ttlv_tree_of(sp_ttlv_item *items, size_t cap) {
    sp_ttlv_tree t = {items, cap, 0};
    return t;
}

/* Decodes exactly one item, which must use up the rest of the cursor (at
 * most SP_TTLV_MAX_MESSAGE bytes). The tree's spans point into the input.
 * SP_ERR_KMS_PROTOCOL for anything malformed, for more than tree->cap items
 * and for nesting deeper than SP_TTLV_MAX_DEPTH. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_ttlv_decode(sp_cursor *in, sp_ttlv_tree *tree);

/* The length of a whole message from its first 8 bytes, after checking that
 * they open a Structure tagged `tag` of at most SP_TTLV_MAX_MESSAGE bytes:
 * what a reader needs before it knows how much more to read. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_ttlv_message_length(const uint8_t header[SP_TTLV_HEADER], uint32_t tag,
                                                          size_t *total);

/* The first item tagged `tag` inside Structure `parent` (0 when absent), and
 * the next one after `after` with the same tag. */
SP_INTERNAL size_t sp_ttlv_child(const sp_ttlv_tree *t, size_t parent, uint32_t tag);
SP_INTERNAL size_t sp_ttlv_next_same(const sp_ttlv_tree *t, size_t after);
/* The child as above, required to exist and be of `type`; SP_ERR_KMS_PROTOCOL
 * otherwise. sp_ttlv_want_opt lets it be absent (*index = 0) but not mistyped. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_ttlv_want(const sp_ttlv_tree *t, size_t parent, uint32_t tag, uint8_t type,
                                                size_t *index);
SP_INTERNAL SP_MUST_CHECK sp_error sp_ttlv_want_opt(const sp_ttlv_tree *t, size_t parent, uint32_t tag,
                                                    uint8_t type, size_t *index);

/* ---- encoding ---- */
typedef struct sp_ttlv_enc {
    sp_wbuf *out;
    size_t depth;                        /* Structures open */
    size_t start[SP_TTLV_MAX_DEPTH];     /* where each open Structure's header is */
    uint8_t *header[SP_TTLV_MAX_DEPTH];  /* its header, whose length is patched on close */
    sp_error err;                        /* the first failure; later calls do nothing */
} sp_ttlv_enc;

SP_INTERNAL void sp_ttlv_enc_init(sp_ttlv_enc *e, sp_wbuf *out);
SP_INTERNAL void sp_ttlv_enc_begin(sp_ttlv_enc *e, uint32_t tag); /* opens a Structure */
SP_INTERNAL void sp_ttlv_enc_end(sp_ttlv_enc *e);                 /* closes the innermost */
SP_INTERNAL void sp_ttlv_enc_int(sp_ttlv_enc *e, uint32_t tag, int32_t v);
SP_INTERNAL void sp_ttlv_enc_long(sp_ttlv_enc *e, uint32_t tag, int64_t v);
/* bytes: big-endian two's complement, a non-zero multiple of 8 bytes */
SP_INTERNAL void sp_ttlv_enc_bigint(sp_ttlv_enc *e, uint32_t tag, const uint8_t *bytes, size_t len);
SP_INTERNAL void sp_ttlv_enc_enum(sp_ttlv_enc *e, uint32_t tag, uint32_t v);
SP_INTERNAL void sp_ttlv_enc_bool(sp_ttlv_enc *e, uint32_t tag, bool v);
SP_INTERNAL void sp_ttlv_enc_text(sp_ttlv_enc *e, uint32_t tag, const char *s, size_t len);
SP_INTERNAL void sp_ttlv_enc_bytes(sp_ttlv_enc *e, uint32_t tag, const uint8_t *b, size_t len);
SP_INTERNAL void sp_ttlv_enc_datetime(sp_ttlv_enc *e, uint32_t tag, int64_t seconds);
SP_INTERNAL void sp_ttlv_enc_interval(sp_ttlv_enc *e, uint32_t tag, uint32_t seconds);
/* Re-encodes item `index` of a decoded tree with everything inside it. */
SP_INTERNAL void sp_ttlv_enc_item(sp_ttlv_enc *e, const sp_ttlv_tree *t, size_t index);
/* SP_OK when everything fit and every Structure was closed; otherwise the
 * first error: SP_ERR_BUFFER_TOO_SMALL, or SP_ERR_INVALID_ARGUMENT for a
 * misuse (bad tag, too deep, unbalanced, a value no item may hold). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_ttlv_enc_finish(sp_ttlv_enc *e);

/* ---- the KMIP message envelope ---- */

/* Opens Request Message / Request Header (protocol version, maximum response
 * size, batch count 1) / Batch Item / Operation / Request Payload; the caller
 * writes the payload's items and closes with sp_kmip_request_end. */
SP_INTERNAL void sp_kmip_request_begin(sp_ttlv_enc *e, int32_t major, int32_t minor, uint32_t operation);
SP_INTERNAL void sp_kmip_request_end(sp_ttlv_enc *e);

typedef struct sp_kmip_result {
    int32_t major, minor;  /* the response's protocol version */
    uint32_t operation;    /* 0 when the batch item names none (some error replies) */
    uint32_t status;       /* KMIP_STATUS_* */
    uint32_t reason;       /* KMIP_REASON_*, 0 when absent */
    sp_span message;       /* Result Message, empty when absent */
    size_t payload;        /* the Response Payload's index, 0 when absent */
} sp_kmip_result;

/* Checks a decoded Response Message with one Batch Item and picks out what a
 * caller acts on. A successful item must name `operation` when it names one,
 * and carries a payload. SP_ERR_KMS_PROTOCOL when the envelope is not that. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kmip_parse_response(const sp_ttlv_tree *t, uint32_t operation,
                                                          sp_kmip_result *out);

/* The Attribute Value of the first Attribute named `name` among the
 * children of `parent` (a Get Attributes payload): 0 when there is none,
 * SP_ERR_KMS_PROTOCOL when an Attribute is malformed. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kmip_find_attribute(const sp_ttlv_tree *t, size_t parent, const char *name,
                                                          size_t *value);

/* ---- the KMIP backend's extra entry point (kms_kmip.c) ---- */
struct sp_kms_config;
/* Revokes the object `uid` (bare, or "kmip:<uid>" as sp_kms_key_id reports
 * it) with reason Cessation of Operation, over a connection of its own made
 * from the same options a "kmip:" configuration takes. KMIP servers then
 * refuse the key for wrapping and unwrapping; sealpost reports that as
 * SP_ERR_KMS_ACCESS_DENIED. For operators' tools and tests. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_kmip_revoke(const struct sp_kms_config *cfg, const char *uid);

#endif
