/*
 * Fuzz target for the KMIP TTLV decoder and the response envelope
 * (src/kms/kmip_ttlv.c): what the KMIP backend does with every byte a KMIP
 * server sends back.
 *
 * Beyond "does not crash", it checks what the codec promises:
 *  - the only failure is SP_ERR_KMS_PROTOCOL, and a failed decode leaves an
 *    empty tree;
 *  - a decoded tree is well formed: item 0 is the outermost at level 1,
 *    every index points forward and inside the tree, children sit one level
 *    below their Structure, no level exceeds SP_TTLV_MAX_DEPTH, and every
 *    value span lies inside the input;
 *  - the encoding is canonical: re-encoding the tree gives back exactly the
 *    input bytes (written into an exactly-sized block, so ASan catches an
 *    encoder that writes more), and decoding those gives the same tree;
 *  - sp_ttlv_message_length agrees with the decoder about the message size;
 *  - the envelope parser and the attribute lookup fail only with
 *    SP_ERR_KMS_PROTOCOL, and a success names a payload Structure.
 */
#include "fuzz_util.h"

#include "kms/kmip_ttlv.h"

#define FUZZ_MAX_ITEMS 4096
static sp_ttlv_item first_items[FUZZ_MAX_ITEMS];
static sp_ttlv_item second_items[FUZZ_MAX_ITEMS];

static void fuzz_check_tree(const sp_ttlv_tree *t, const uint8_t *in, size_t size) {
    FUZZ_CHECK(t->count >= 1 && t->count <= t->cap);
    FUZZ_CHECK(t->items[0].level == 1 && t->items[0].parent == 0 && t->items[0].next == 0);
    for (size_t i = 0; i < t->count; i++) {
        const sp_ttlv_item *it = &t->items[i];
        FUZZ_CHECK(it->level >= 1 && it->level <= SP_TTLV_MAX_DEPTH);
        FUZZ_CHECK(it->type >= SP_TTLV_STRUCTURE && it->type <= SP_TTLV_INTERVAL);
        FUZZ_CHECK(it->tag >> 16 == 0x42 || it->tag >> 16 == 0x54);
        FUZZ_CHECK(it->value.len <= size);
        if (it->value.len != 0) {
            FUZZ_CHECK(it->value.data >= in && it->value.data + it->value.len <= in + size);
        }
        if (i != 0) {
            FUZZ_CHECK(it->parent < i);
            FUZZ_CHECK(t->items[it->parent].type == SP_TTLV_STRUCTURE);
            FUZZ_CHECK(it->level == t->items[it->parent].level + 1);
        }
        FUZZ_CHECK(it->next == 0 || (it->next > i && it->next < t->count && t->items[it->next].parent == it->parent));
        if (it->type == SP_TTLV_STRUCTURE) {
            FUZZ_CHECK(it->first == 0 || it->first == i + 1);
            FUZZ_CHECK(it->first != 0 || it->value.len == 0);
        } else {
            FUZZ_CHECK(it->first == 0);
        }
    }
}

static void fuzz_check_same(const sp_ttlv_tree *a, const sp_ttlv_tree *b) {
    FUZZ_CHECK(a->count == b->count);
    for (size_t i = 0; i < a->count; i++) {
        const sp_ttlv_item *x = &a->items[i], *y = &b->items[i];
        FUZZ_CHECK(x->tag == y->tag && x->type == y->type && x->level == y->level);
        FUZZ_CHECK(x->parent == y->parent && x->first == y->first && x->next == y->next);
        FUZZ_CHECK(x->number == y->number && x->value.len == y->value.len);
        FUZZ_CHECK(x->value.len == 0 || memcmp(x->value.data, y->value.data, x->value.len) == 0);
    }
}

static void fuzz_check_envelope(const sp_ttlv_tree *t) {
    static const uint32_t operations[] = {KMIP_OP_CREATE, KMIP_OP_GET_ATTRIBUTES, KMIP_OP_ENCRYPT,
                                          KMIP_OP_DECRYPT};
    for (size_t i = 0; i < sizeof operations / sizeof operations[0]; i++) {
        sp_kmip_result r;
        sp_error rc = sp_kmip_parse_response(t, operations[i], &r);
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_KMS_PROTOCOL);
        if (rc != SP_OK) continue;
        FUZZ_CHECK(r.status <= KMIP_STATUS_OPERATION_UNDONE);
        if (r.status == KMIP_STATUS_SUCCESS) {
            FUZZ_CHECK(r.payload != 0);
            FUZZ_CHECK(r.operation == 0 || r.operation == operations[i]);
        }
        if (r.payload == 0) continue;
        FUZZ_CHECK(r.payload < t->count && t->items[r.payload].type == SP_TTLV_STRUCTURE);
        size_t value = 0;
        rc = sp_kmip_find_attribute(t, r.payload, "State", &value);
        FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_KMS_PROTOCOL);
        FUZZ_CHECK(value < t->count);
        if (rc == SP_OK && value != 0) FUZZ_CHECK(t->items[t->items[value].parent].tag == KMIP_TAG_ATTRIBUTE);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *in = fuzz_dup(data, size);
    sp_ttlv_tree first = sp_ttlv_tree_of(first_items, FUZZ_MAX_ITEMS);
    sp_cursor c = sp_cursor_of(in, size);
    sp_error rc = sp_ttlv_decode(&c, &first);
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERR_KMS_PROTOCOL);

    if (size >= SP_TTLV_HEADER) {
        size_t total = 0;
        sp_error lrc = sp_ttlv_message_length(in, KMIP_TAG_RESPONSE_MESSAGE, &total);
        FUZZ_CHECK(lrc == SP_OK || lrc == SP_ERR_KMS_PROTOCOL);
        if (lrc == SP_OK) FUZZ_CHECK(total >= SP_TTLV_HEADER && total <= SP_TTLV_MAX_MESSAGE && total % 8 == 0);
        /* a whole response the decoder took has the size its header says */
        if (rc == SP_OK && first.items[0].tag == KMIP_TAG_RESPONSE_MESSAGE &&
            first.items[0].type == SP_TTLV_STRUCTURE) {
            FUZZ_CHECK(lrc == SP_OK && total == size);
        }
    }

    if (rc != SP_OK) {
        FUZZ_CHECK(first.count == 0);
        free(in);
        return 0;
    }
    fuzz_check_tree(&first, in, size);

    uint8_t *out = fuzz_dup(data, size); /* exactly size bytes; overwritten below */
    memset(out, 0xA5, size);
    sp_wbuf w = sp_wbuf_of(out, size);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_item(&e, &first, 0);
    FUZZ_CHECK(sp_ttlv_enc_finish(&e) == SP_OK);
    FUZZ_CHECK(w.len == size && memcmp(out, in, size) == 0);

    sp_ttlv_tree second = sp_ttlv_tree_of(second_items, FUZZ_MAX_ITEMS);
    c = sp_cursor_of(out, w.len);
    FUZZ_CHECK(sp_ttlv_decode(&c, &second) == SP_OK);
    fuzz_check_same(&first, &second);

    fuzz_check_envelope(&first);
    free(out);
    free(in);
    return 0;
}
