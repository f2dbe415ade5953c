/*
 * The TTLV codec and the KMIP message envelope (see kmip_ttlv.h).
 *
 * The decoder is the part that faces the network: a KMIP server, or whoever
 * sits between sealpost and it with a stolen certificate, chooses every byte.
 * It walks the input only through sp_cursor, takes no length on trust, and
 * recurses at most SP_TTLV_MAX_DEPTH levels, so the worst an input can do is
 * be refused. Values are checked as strictly as the encoding allows (exact
 * lengths for fixed-size types, zero padding, Booleans 0 or 1): there is one
 * accepted spelling per message, which keeps the decoder honest and lets the
 * fuzz target compare re-encoded bytes with its input.
 */
#include "kms/kmip_ttlv.h"

/* ---- reading through the cursor ---- */

/* n bytes from the cursor, or false when fewer remain. The one place here
 * that forms a pointer into the input. */
static bool ttlv_take(sp_cursor *c, size_t n, sp_span *out) {
    if (n > sp_cursor_left(c)) return false;
    out->data = n ? c->data + c->pos : c->data;
    out->len = n;
    c->pos += n;
    return true;
}

/* Big-endian numbers at an offset into bytes the caller has taken. */
static uint32_t ttlv_be32(const uint8_t *p, size_t at) {
    return (uint32_t)p[at] << 24 | (uint32_t)p[at + 1] << 16 | (uint32_t)p[at + 2] << 8 | (uint32_t)p[at + 3];
}

static uint64_t ttlv_be64(const uint8_t *p) { return (uint64_t)ttlv_be32(p, 0) << 32 | ttlv_be32(p, 4); }

static uint32_t ttlv_tag_of(const uint8_t *header) {
    return (uint32_t)header[0] << 16 | (uint32_t)header[1] << 8 | header[2];
}

/* KMIP tags are 0x42xxxx (the standard's) or 0x54xxxx (extensions); any
 * other first byte means we are not reading KMIP, or not where we think. */
static bool ttlv_tag_ok(uint32_t tag) { return tag <= 0xFFFFFF && (tag >> 16 == 0x42 || tag >> 16 == 0x54); }

static size_t ttlv_padded(size_t len) { return (len + 7) & ~(size_t)7; }

static bool ttlv_all_zero(sp_span s) {
    uint8_t acc = 0;
    for (size_t i = 0; i < s.len; i++) acc |= s.data[i];
    return acc == 0;
}

/* The value checks each type's encoding demands; fills item->number. */
static sp_error ttlv_check_value(sp_ttlv_item *item) {
    const sp_span v = item->value;
    switch (item->type) {
    case SP_TTLV_STRUCTURE:
    case SP_TTLV_TEXT_STRING:
    case SP_TTLV_BYTE_STRING:
        return SP_OK;
    case SP_TTLV_INTEGER:
        SP_ENSURE(v.len == 4, SP_ERR_KMS_PROTOCOL);
        item->number = (int32_t)ttlv_be32(v.data, 0);
        return SP_OK;
    case SP_TTLV_ENUMERATION:
    case SP_TTLV_INTERVAL:
        SP_ENSURE(v.len == 4, SP_ERR_KMS_PROTOCOL);
        item->number = (int64_t)ttlv_be32(v.data, 0);
        return SP_OK;
    case SP_TTLV_LONG_INTEGER:
    case SP_TTLV_DATE_TIME:
        SP_ENSURE(v.len == 8, SP_ERR_KMS_PROTOCOL);
        item->number = (int64_t)ttlv_be64(v.data);
        return SP_OK;
    case SP_TTLV_BOOLEAN: {
        SP_ENSURE(v.len == 8, SP_ERR_KMS_PROTOCOL);
        uint64_t b = ttlv_be64(v.data);
        SP_ENSURE(b <= 1, SP_ERR_KMS_PROTOCOL);
        item->number = (int64_t)b;
        return SP_OK;
    }
    case SP_TTLV_BIG_INTEGER:
        /* the sign-extended two's complement fills whole 8-byte words */
        SP_ENSURE(v.len != 0 && v.len % 8 == 0, SP_ERR_KMS_PROTOCOL);
        return SP_OK;
    default:
        return SP_ERR_KMS_PROTOCOL;
    }
}

/* One item at `level` from the cursor, with everything inside it; appends
 * to the tree in document order and returns its index. */
static sp_error ttlv_decode_item(sp_cursor *c, sp_ttlv_tree *t, size_t parent, unsigned level, size_t *index) {
    SP_ENSURE(level <= SP_TTLV_MAX_DEPTH, SP_ERR_KMS_PROTOCOL);
    SP_ENSURE(t->count < t->cap, SP_ERR_KMS_PROTOCOL);

    sp_span header, value, padding;
    SP_ENSURE(ttlv_take(c, SP_TTLV_HEADER, &header), SP_ERR_KMS_PROTOCOL);
    uint32_t tag = ttlv_tag_of(header.data);
    uint8_t type = header.data[3];
    size_t len = ttlv_be32(header.data, 4);
    SP_ENSURE(ttlv_tag_ok(tag), SP_ERR_KMS_PROTOCOL);
    SP_ENSURE(ttlv_take(c, len, &value), SP_ERR_KMS_PROTOCOL);
    SP_ENSURE(ttlv_take(c, ttlv_padded(len) - len, &padding), SP_ERR_KMS_PROTOCOL);
    SP_ENSURE(ttlv_all_zero(padding), SP_ERR_KMS_PROTOCOL);

    size_t me = t->count++;
    sp_ttlv_item *item = &t->items[me];
    memset(item, 0, sizeof *item);
    item->tag = tag;
    item->type = type;
    item->level = (uint8_t)level;
    item->parent = parent;
    item->value = value;
    SP_GUARD(ttlv_check_value(item));

    if (type == SP_TTLV_STRUCTURE) {
        sp_cursor inner = sp_cursor_of(value.data, value.len);
        size_t last = 0;
        while (sp_cursor_left(&inner) != 0) {
            size_t child;
            SP_GUARD(ttlv_decode_item(&inner, t, me, level + 1, &child));
            /* `item` may not be held across the call: re-index */
            if (last == 0) {
                t->items[me].first = child;
            } else {
                t->items[last].next = child;
            }
            last = child;
        }
    }
    *index = me;
    return SP_OK;
}

sp_error sp_ttlv_decode(sp_cursor *in, sp_ttlv_tree *tree) {
    tree->count = 0;
    SP_ENSURE(tree->items != NULL && tree->cap != 0, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_cursor_left(in) <= SP_TTLV_MAX_MESSAGE, SP_ERR_KMS_PROTOCOL);
    size_t root;
    sp_error rc = ttlv_decode_item(in, tree, 0, 1, &root);
    if (rc == SP_OK && sp_cursor_left(in) != 0) rc = SP_ERR_KMS_PROTOCOL; /* one message, nothing after it */
    if (rc != SP_OK) tree->count = 0;
    return rc;
}

sp_error sp_ttlv_message_length(const uint8_t header[SP_TTLV_HEADER], uint32_t tag, size_t *total) {
    uint32_t got = ttlv_tag_of(header);
    size_t len = ttlv_be32(header, 4);
    SP_ENSURE(got == tag && header[3] == SP_TTLV_STRUCTURE, SP_ERR_KMS_PROTOCOL);
    /* a Structure holds whole padded items, so its length is a multiple of 8 */
    SP_ENSURE(len % 8 == 0 && len <= SP_TTLV_MAX_MESSAGE - SP_TTLV_HEADER, SP_ERR_KMS_PROTOCOL);
    *total = SP_TTLV_HEADER + len;
    return SP_OK;
}

size_t sp_ttlv_child(const sp_ttlv_tree *t, size_t parent, uint32_t tag) {
    if (parent >= t->count || t->items[parent].type != SP_TTLV_STRUCTURE) return 0;
    for (size_t i = t->items[parent].first; i != 0; i = t->items[i].next) {
        if (t->items[i].tag == tag) return i;
    }
    return 0;
}

size_t sp_ttlv_next_same(const sp_ttlv_tree *t, size_t after) {
    if (after == 0 || after >= t->count) return 0;
    for (size_t i = t->items[after].next; i != 0; i = t->items[i].next) {
        if (t->items[i].tag == t->items[after].tag) return i;
    }
    return 0;
}

sp_error sp_ttlv_want_opt(const sp_ttlv_tree *t, size_t parent, uint32_t tag, uint8_t type, size_t *index) {
    size_t i = sp_ttlv_child(t, parent, tag);
    SP_ENSURE(i == 0 || t->items[i].type == type, SP_ERR_KMS_PROTOCOL);
    *index = i;
    return SP_OK;
}

sp_error sp_ttlv_want(const sp_ttlv_tree *t, size_t parent, uint32_t tag, uint8_t type, size_t *index) {
    SP_GUARD(sp_ttlv_want_opt(t, parent, tag, type, index));
    SP_ENSURE(*index != 0, SP_ERR_KMS_PROTOCOL);
    return SP_OK;
}

/* ---- encoding ---- */

void sp_ttlv_enc_init(sp_ttlv_enc *e, sp_wbuf *out) {
    memset(e, 0, sizeof *e);
    e->out = out;
}

static void ttlv_put_be32(uint8_t *p, size_t at, uint32_t v) {
    p[at] = (uint8_t)(v >> 24);
    p[at + 1] = (uint8_t)(v >> 16);
    p[at + 2] = (uint8_t)(v >> 8);
    p[at + 3] = (uint8_t)v;
}

/* Header, value and zero padding of one item; returns where the header was
 * written so a Structure can patch its length later. */
static uint8_t *ttlv_put(sp_ttlv_enc *e, uint32_t tag, uint8_t type, const void *value, size_t len) {
    if (e->err != SP_OK) return NULL;
    if (!ttlv_tag_ok(tag) || e->depth >= SP_TTLV_MAX_DEPTH || len > UINT32_MAX) {
        e->err = SP_ERR_INVALID_ARGUMENT;
        return NULL;
    }
    static const uint8_t zeros[8] = {0};
    uint8_t *header;
    sp_error rc = sp_wbuf_reserve(e->out, SP_TTLV_HEADER, &header);
    if (rc == SP_OK) {
        header[0] = (uint8_t)(tag >> 16);
        header[1] = (uint8_t)(tag >> 8);
        header[2] = (uint8_t)tag;
        header[3] = type;
        ttlv_put_be32(header, 4, (uint32_t)len);
        rc = sp_wbuf_put(e->out, value, len);
    }
    if (rc == SP_OK) rc = sp_wbuf_put(e->out, zeros, ttlv_padded(len) - len);
    if (rc != SP_OK) {
        e->err = rc;
        return NULL;
    }
    return header;
}

void sp_ttlv_enc_begin(sp_ttlv_enc *e, uint32_t tag) {
    size_t start = e->out->len;
    uint8_t *header = ttlv_put(e, tag, SP_TTLV_STRUCTURE, NULL, 0);
    if (header == NULL) return;
    e->start[e->depth] = start;
    e->header[e->depth] = header;
    e->depth++;
}

void sp_ttlv_enc_end(sp_ttlv_enc *e) {
    if (e->err != SP_OK) return;
    if (e->depth == 0) {
        e->err = SP_ERR_INVALID_ARGUMENT;
        return;
    }
    e->depth--;
    size_t len = e->out->len - e->start[e->depth] - SP_TTLV_HEADER;
    if (len > UINT32_MAX) {
        e->err = SP_ERR_INVALID_ARGUMENT;
        return;
    }
    ttlv_put_be32(e->header[e->depth], 4, (uint32_t)len);
}

void sp_ttlv_enc_int(sp_ttlv_enc *e, uint32_t tag, int32_t v) {
    uint8_t b[4];
    ttlv_put_be32(b, 0, (uint32_t)v);
    (void)ttlv_put(e, tag, SP_TTLV_INTEGER, b, sizeof b);
}

static void ttlv_enc_u64(sp_ttlv_enc *e, uint32_t tag, uint8_t type, uint64_t v) {
    uint8_t b[8];
    ttlv_put_be32(b, 0, (uint32_t)(v >> 32));
    ttlv_put_be32(b, 4, (uint32_t)v);
    (void)ttlv_put(e, tag, type, b, sizeof b);
}

void sp_ttlv_enc_long(sp_ttlv_enc *e, uint32_t tag, int64_t v) {
    ttlv_enc_u64(e, tag, SP_TTLV_LONG_INTEGER, (uint64_t)v);
}

void sp_ttlv_enc_bigint(sp_ttlv_enc *e, uint32_t tag, const uint8_t *bytes, size_t len) {
    if (e->err == SP_OK && (len == 0 || len % 8 != 0)) e->err = SP_ERR_INVALID_ARGUMENT;
    (void)ttlv_put(e, tag, SP_TTLV_BIG_INTEGER, bytes, len);
}

void sp_ttlv_enc_enum(sp_ttlv_enc *e, uint32_t tag, uint32_t v) {
    uint8_t b[4];
    ttlv_put_be32(b, 0, v);
    (void)ttlv_put(e, tag, SP_TTLV_ENUMERATION, b, sizeof b);
}

void sp_ttlv_enc_bool(sp_ttlv_enc *e, uint32_t tag, bool v) { ttlv_enc_u64(e, tag, SP_TTLV_BOOLEAN, v ? 1 : 0); }

void sp_ttlv_enc_text(sp_ttlv_enc *e, uint32_t tag, const char *s, size_t len) {
    (void)ttlv_put(e, tag, SP_TTLV_TEXT_STRING, s, len);
}

void sp_ttlv_enc_bytes(sp_ttlv_enc *e, uint32_t tag, const uint8_t *b, size_t len) {
    (void)ttlv_put(e, tag, SP_TTLV_BYTE_STRING, b, len);
}

void sp_ttlv_enc_datetime(sp_ttlv_enc *e, uint32_t tag, int64_t seconds) {
    ttlv_enc_u64(e, tag, SP_TTLV_DATE_TIME, (uint64_t)seconds);
}

void sp_ttlv_enc_interval(sp_ttlv_enc *e, uint32_t tag, uint32_t seconds) {
    uint8_t b[4];
    ttlv_put_be32(b, 0, seconds);
    (void)ttlv_put(e, tag, SP_TTLV_INTERVAL, b, sizeof b);
}

void sp_ttlv_enc_item(sp_ttlv_enc *e, const sp_ttlv_tree *t, size_t index) {
    if (e->err != SP_OK) return;
    if (index >= t->count) {
        e->err = SP_ERR_INVALID_ARGUMENT;
        return;
    }
    const sp_ttlv_item *item = &t->items[index];
    if (item->type != SP_TTLV_STRUCTURE) {
        /* a decoded value is already in wire form; checking it again keeps a
         * hand-made tree from producing what the decoder would refuse */
        sp_ttlv_item copy = *item;
        if (ttlv_check_value(&copy) != SP_OK) {
            e->err = SP_ERR_INVALID_ARGUMENT;
            return;
        }
        (void)ttlv_put(e, item->tag, item->type, item->value.data, item->value.len);
        return;
    }
    sp_ttlv_enc_begin(e, item->tag);
    /* the depth check in ttlv_put bounds this recursion */
    for (size_t i = item->first; i != 0 && e->err == SP_OK; i = t->items[i].next) sp_ttlv_enc_item(e, t, i);
    sp_ttlv_enc_end(e);
}

sp_error sp_ttlv_enc_finish(sp_ttlv_enc *e) {
    if (e->err == SP_OK && e->depth != 0) e->err = SP_ERR_INVALID_ARGUMENT;
    return e->err;
}

/* ---- the message envelope ---- */

void sp_kmip_request_begin(sp_ttlv_enc *e, int32_t major, int32_t minor, uint32_t operation) {
    sp_ttlv_enc_begin(e, KMIP_TAG_REQUEST_MESSAGE);
    sp_ttlv_enc_begin(e, KMIP_TAG_REQUEST_HEADER);
    sp_ttlv_enc_begin(e, KMIP_TAG_PROTOCOL_VERSION);
    sp_ttlv_enc_int(e, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
    sp_ttlv_enc_int(e, KMIP_TAG_PROTOCOL_VERSION_MINOR, minor);
    sp_ttlv_enc_end(e);
    /* tells the server what the reader will accept, so an oversized answer
     * comes back as a Response Too Large error instead of being cut off */
    sp_ttlv_enc_int(e, KMIP_TAG_MAXIMUM_RESPONSE_SIZE, SP_TTLV_MAX_MESSAGE);
    sp_ttlv_enc_int(e, KMIP_TAG_BATCH_COUNT, 1);
    sp_ttlv_enc_end(e);
    sp_ttlv_enc_begin(e, KMIP_TAG_BATCH_ITEM);
    sp_ttlv_enc_enum(e, KMIP_TAG_OPERATION, operation);
    sp_ttlv_enc_begin(e, KMIP_TAG_REQUEST_PAYLOAD);
}

void sp_kmip_request_end(sp_ttlv_enc *e) {
    sp_ttlv_enc_end(e); /* payload */
    sp_ttlv_enc_end(e); /* batch item */
    sp_ttlv_enc_end(e); /* message */
}

static uint32_t kmip_u32(const sp_ttlv_item *item) { return (uint32_t)item->number; }

sp_error sp_kmip_parse_response(const sp_ttlv_tree *t, uint32_t operation, sp_kmip_result *out) {
    memset(out, 0, sizeof *out);
    SP_ENSURE(t->count != 0, SP_ERR_KMS_PROTOCOL);
    SP_ENSURE(t->items[0].tag == KMIP_TAG_RESPONSE_MESSAGE && t->items[0].type == SP_TTLV_STRUCTURE,
              SP_ERR_KMS_PROTOCOL);

    size_t header, version, major, minor, count;
    SP_GUARD(sp_ttlv_want(t, 0, KMIP_TAG_RESPONSE_HEADER, SP_TTLV_STRUCTURE, &header));
    SP_GUARD(sp_ttlv_want(t, header, KMIP_TAG_PROTOCOL_VERSION, SP_TTLV_STRUCTURE, &version));
    SP_GUARD(sp_ttlv_want(t, version, KMIP_TAG_PROTOCOL_VERSION_MAJOR, SP_TTLV_INTEGER, &major));
    SP_GUARD(sp_ttlv_want(t, version, KMIP_TAG_PROTOCOL_VERSION_MINOR, SP_TTLV_INTEGER, &minor));
    SP_GUARD(sp_ttlv_want(t, header, KMIP_TAG_BATCH_COUNT, SP_TTLV_INTEGER, &count));
    out->major = (int32_t)t->items[major].number;
    out->minor = (int32_t)t->items[minor].number;

    /* we send one batch item, so exactly one must come back, and the count
     * in the header must say so */
    size_t item;
    SP_GUARD(sp_ttlv_want(t, 0, KMIP_TAG_BATCH_ITEM, SP_TTLV_STRUCTURE, &item));
    SP_ENSURE(t->items[count].number == 1 && sp_ttlv_next_same(t, item) == 0, SP_ERR_KMS_PROTOCOL);

    size_t op, status, reason, message, payload;
    SP_GUARD(sp_ttlv_want_opt(t, item, KMIP_TAG_OPERATION, SP_TTLV_ENUMERATION, &op));
    SP_GUARD(sp_ttlv_want(t, item, KMIP_TAG_RESULT_STATUS, SP_TTLV_ENUMERATION, &status));
    SP_GUARD(sp_ttlv_want_opt(t, item, KMIP_TAG_RESULT_REASON, SP_TTLV_ENUMERATION, &reason));
    SP_GUARD(sp_ttlv_want_opt(t, item, KMIP_TAG_RESULT_MESSAGE, SP_TTLV_TEXT_STRING, &message));
    SP_GUARD(sp_ttlv_want_opt(t, item, KMIP_TAG_RESPONSE_PAYLOAD, SP_TTLV_STRUCTURE, &payload));
    out->operation = op ? kmip_u32(&t->items[op]) : 0;
    out->status = kmip_u32(&t->items[status]);
    out->reason = reason ? kmip_u32(&t->items[reason]) : 0;
    if (message) out->message = t->items[message].value;
    out->payload = payload;

    SP_ENSURE(out->status <= KMIP_STATUS_OPERATION_UNDONE, SP_ERR_KMS_PROTOCOL);
    if (out->status == KMIP_STATUS_SUCCESS) {
        /* an answer to another question is no answer */
        SP_ENSURE(out->operation == 0 || out->operation == operation, SP_ERR_KMS_PROTOCOL);
        SP_ENSURE(payload != 0, SP_ERR_KMS_PROTOCOL);
    }
    return SP_OK;
}

sp_error sp_kmip_find_attribute(const sp_ttlv_tree *t, size_t parent, const char *name, size_t *value) {
    *value = 0;
    size_t n = strlen(name);
    for (size_t a = sp_ttlv_child(t, parent, KMIP_TAG_ATTRIBUTE); a != 0; a = sp_ttlv_next_same(t, a)) {
        size_t attr_name, attr_value;
        SP_ENSURE(t->items[a].type == SP_TTLV_STRUCTURE, SP_ERR_KMS_PROTOCOL);
        SP_GUARD(sp_ttlv_want(t, a, KMIP_TAG_ATTRIBUTE_NAME, SP_TTLV_TEXT_STRING, &attr_name));
        SP_ENSURE((attr_value = sp_ttlv_child(t, a, KMIP_TAG_ATTRIBUTE_VALUE)) != 0, SP_ERR_KMS_PROTOCOL);
        sp_span s = t->items[attr_name].value;
        if (s.len == n && memcmp(s.data, name, n) == 0) {
            *value = attr_value;
            return SP_OK;
        }
    }
    return SP_OK;
}
