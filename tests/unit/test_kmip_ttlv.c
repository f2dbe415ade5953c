/*
 * The KMIP TTLV codec and message envelope (src/kms/kmip_ttlv.c).
 *
 * The known answers are byte strings written out by hand from the KMIP
 * specification's encoding rules, item by item: the spec's own examples of
 * each item type (section 9.1.2), a Create request for an AES-256 key as
 * the KMIP backend sends it, and a Create response and an error response as
 * a server sends them. The encoder must produce them exactly, the decoder
 * must read them back, and re-encoding a decoded tree must give the same
 * bytes.
 *
 * Most of the file is about refusal, since the decoder reads what a server
 * (or whoever holds its certificate) chooses: every length that overruns,
 * every fixed-size type with the wrong size, non-zero padding, unknown
 * types, foreign tags, trailing bytes, nesting past 16 levels, more items
 * than the caller has room for, and messages over 1 MiB are all
 * SP_ERR_KMS_PROTOCOL, and so is every malformed response envelope.
 */
#include <stdlib.h>
#include <string.h>

#include "sp_test_util.h"

#include "kms/kmip_ttlv.h"

/* ---- helpers ---- */

/* The vectors below are hex laid out by field (spaces and '|' between
 * fields), decoded by sp_test_unhex: they must not depend on the library. */

#define MAX_ITEMS 64
static sp_ttlv_item items[MAX_ITEMS];

static sp_error decode(const uint8_t *data, size_t len, sp_ttlv_tree *t) {
    *t = sp_ttlv_tree_of(items, MAX_ITEMS);
    sp_cursor c = sp_cursor_of(data, len);
    return sp_ttlv_decode(&c, t);
}

/* Re-encodes item 0 of a tree and checks it gives back `want`. */
static void assert_reencodes(const sp_ttlv_tree *t, const uint8_t *want, size_t want_len) {
    uint8_t out[1024];
    sp_wbuf w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_item(&e, t, 0);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    assert_int_equal(w.len, want_len);
    assert_memory_equal(out, want, want_len);
}

/* ---- the spec's examples of each type (KMIP 1.2 section 9.1.2) ---- */

typedef struct {
    const char *name;
    const char *hex;
    uint8_t type;
    int64_t number;     /* for the numeric types */
    const char *value;  /* hex of the value bytes, for the others */
} spec_example;

static const spec_example spec_examples[] = {
    {"Integer 8", "420020|02|00000004|00000008 00000000", SP_TTLV_INTEGER, 8, NULL},
    {"Long Integer 123456789000000000", "420020|03|00000008|01B69B4BA5749200", SP_TTLV_LONG_INTEGER,
     123456789000000000LL, NULL},
    {"Big Integer 1234567890000000000000000000", "420020|04|00000010|0000000003FD35EB 6BC2DF4618080000",
     SP_TTLV_BIG_INTEGER, 0, "0000000003FD35EB6BC2DF4618080000"},
    {"Enumeration 255", "420020|05|00000004|000000FF 00000000", SP_TTLV_ENUMERATION, 255, NULL},
    {"Boolean True", "420020|06|00000008|0000000000000001", SP_TTLV_BOOLEAN, 1, NULL},
    {"Text String Hello World", "420020|07|0000000B|48656C6C6F20576F726C64 0000000000", SP_TTLV_TEXT_STRING, 0,
     "48656C6C6F20576F726C64"},
    {"Byte String 010203", "420020|08|00000003|010203 0000000000", SP_TTLV_BYTE_STRING, 0, "010203"},
    {"Date-Time 2008-03-14 11:56:40 UTC", "420020|09|00000008|0000000047DA67F8", SP_TTLV_DATE_TIME, 0x47DA67F8,
     NULL},
    {"Interval 10 days", "420020|0A|00000004|000D2F00 00000000", SP_TTLV_INTERVAL, 864000, NULL},
};

static void encode_example(sp_ttlv_enc *e, const spec_example *ex, const sp_ttlv_item *it) {
    switch (ex->type) {
    case SP_TTLV_INTEGER: sp_ttlv_enc_int(e, 0x420020, (int32_t)ex->number); break;
    case SP_TTLV_LONG_INTEGER: sp_ttlv_enc_long(e, 0x420020, ex->number); break;
    case SP_TTLV_BIG_INTEGER: sp_ttlv_enc_bigint(e, 0x420020, it->value.data, it->value.len); break;
    case SP_TTLV_ENUMERATION: sp_ttlv_enc_enum(e, 0x420020, (uint32_t)ex->number); break;
    case SP_TTLV_BOOLEAN: sp_ttlv_enc_bool(e, 0x420020, ex->number != 0); break;
    case SP_TTLV_TEXT_STRING: sp_ttlv_enc_text(e, 0x420020, "Hello World", 11); break;
    case SP_TTLV_BYTE_STRING: sp_ttlv_enc_bytes(e, 0x420020, (const uint8_t *)"\x01\x02\x03", 3); break;
    case SP_TTLV_DATE_TIME: sp_ttlv_enc_datetime(e, 0x420020, ex->number); break;
    case SP_TTLV_INTERVAL: sp_ttlv_enc_interval(e, 0x420020, (uint32_t)ex->number); break;
    default: fail();
    }
}

static void test_spec_examples(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof spec_examples / sizeof spec_examples[0]; i++) {
        const spec_example *ex = &spec_examples[i];
        uint8_t bytes[64], want[64];
        sp_ttlv_tree t;
        size_t n = sp_test_unhex(ex->hex, bytes, sizeof bytes);
        sp_error rc = decode(bytes, n, &t);
        if (rc != SP_OK) fail_msg("%s: %s", ex->name, sp_error_name(rc));
        assert_int_equal(t.count, 1);
        assert_int_equal(t.items[0].tag, 0x420020);
        assert_int_equal(t.items[0].type, ex->type);
        assert_int_equal(t.items[0].level, 1);
        if (ex->value != NULL) {
            size_t wn = sp_test_unhex(ex->value, want, sizeof want);
            assert_int_equal(t.items[0].value.len, wn);
            assert_memory_equal(t.items[0].value.data, want, wn);
        } else {
            assert_true(t.items[0].number == ex->number);
        }
        /* the typed encoder writes the same bytes */
        uint8_t out[64];
        sp_wbuf w = sp_wbuf_of(out, sizeof out);
        sp_ttlv_enc e;
        sp_ttlv_enc_init(&e, &w);
        encode_example(&e, ex, &t.items[0]);
        assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
        assert_int_equal(w.len, n);
        assert_memory_equal(out, bytes, n);
        assert_reencodes(&t, bytes, n);
    }
}

/* The spec's Structure example: an Enumeration 254 and an Integer 255. */
static const char structure_example[] = "420020|01|00000020|"
                                        "420004|05|00000004|000000FE 00000000|"
                                        "420005|02|00000004|000000FF 00000000";

static void test_spec_structure(void **state) {
    (void)state;
    uint8_t bytes[64];
    sp_ttlv_tree t;
    size_t n = sp_test_unhex(structure_example, bytes, sizeof bytes);
    assert_int_equal(decode(bytes, n, &t), SP_OK);
    assert_int_equal(t.count, 3);
    assert_int_equal(t.items[0].type, SP_TTLV_STRUCTURE);
    assert_int_equal(t.items[0].first, 1);
    assert_int_equal(t.items[1].tag, 0x420004);
    assert_int_equal(t.items[1].number, 254);
    assert_int_equal(t.items[1].parent, 0);
    assert_int_equal(t.items[1].level, 2);
    assert_int_equal(t.items[1].next, 2);
    assert_int_equal(t.items[2].tag, 0x420005);
    assert_int_equal(t.items[2].number, 255);
    assert_int_equal(t.items[2].next, 0);
    assert_int_equal(sp_ttlv_child(&t, 0, 0x420005), 2);
    assert_int_equal(sp_ttlv_child(&t, 0, 0x420006), 0);
    assert_int_equal(sp_ttlv_child(&t, 1, 0x420005), 0); /* not a Structure */

    uint8_t out[64];
    sp_wbuf w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_begin(&e, 0x420020);
    sp_ttlv_enc_enum(&e, 0x420004, 254);
    sp_ttlv_enc_int(&e, 0x420005, 255);
    sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    assert_int_equal(w.len, n);
    assert_memory_equal(out, bytes, n);
}

/* ---- KMIP messages ---- */

/* Create, KMIP 1.4: an AES (3) key of 256 bits with usage Encrypt|Decrypt
 * (0x0C), as kms_kmip.c sends it. */
static const char create_request[] =
    "420078|01|00000130|"                                          /* Request Message */
    " 420077|01|00000048|"                                         /*  Request Header */
    "  420069|01|00000020|"                                        /*   Protocol Version */
    "   42006A|02|00000004|00000001 00000000|"                     /*    Major 1 */
    "   42006B|02|00000004|00000004 00000000|"                     /*    Minor 4 */
    "  420050|02|00000004|00100000 00000000|"                      /*   Maximum Response Size 1 MiB */
    "  42000D|02|00000004|00000001 00000000|"                      /*   Batch Count 1 */
    " 42000F|01|000000D8|"                                         /*  Batch Item */
    "  42005C|05|00000004|00000001 00000000|"                      /*   Operation Create */
    "  420079|01|000000C0|"                                        /*   Request Payload */
    "   420057|05|00000004|00000002 00000000|"                     /*    Object Type Symmetric Key */
    "   420091|01|000000A8|"                                       /*    Template-Attribute */
    "    420008|01|00000030|"                                      /*     Attribute */
    "     42000A|07|00000017|43727970746F6772617068696320416C676F726974686D 00|" /* "Cryptographic Algorithm" */
    "     42000B|05|00000004|00000003 00000000|"                   /*      AES */
    "    420008|01|00000030|"                                      /*     Attribute */
    "     42000A|07|00000014|43727970746F67726170686963204C656E677468 00000000|" /* "Cryptographic Length" */
    "     42000B|02|00000004|00000100 00000000|"                   /*      256 */
    "    420008|01|00000030|"                                      /*     Attribute */
    "     42000A|07|00000018|43727970746F6772617068696320557361676520 4D61736B|" /* "Cryptographic Usage Mask" */
    "     42000B|02|00000004|0000000C 00000000";                   /*      Encrypt|Decrypt */

static void attribute(sp_ttlv_enc *e, const char *name, uint8_t type, uint32_t v) {
    sp_ttlv_enc_begin(e, KMIP_TAG_ATTRIBUTE);
    sp_ttlv_enc_text(e, KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name));
    if (type == SP_TTLV_ENUMERATION) {
        sp_ttlv_enc_enum(e, KMIP_TAG_ATTRIBUTE_VALUE, v);
    } else {
        sp_ttlv_enc_int(e, KMIP_TAG_ATTRIBUTE_VALUE, (int32_t)v);
    }
    sp_ttlv_enc_end(e);
}

static void test_create_request(void **state) {
    (void)state;
    uint8_t want[512], out[512];
    size_t n = sp_test_unhex(create_request, want, sizeof want);
    assert_int_equal(n, 312);

    sp_wbuf w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_kmip_request_begin(&e, 1, 4, KMIP_OP_CREATE);
    sp_ttlv_enc_enum(&e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY);
    sp_ttlv_enc_begin(&e, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    attribute(&e, "Cryptographic Algorithm", SP_TTLV_ENUMERATION, KMIP_ALG_AES);
    attribute(&e, "Cryptographic Length", SP_TTLV_INTEGER, 256);
    attribute(&e, "Cryptographic Usage Mask", SP_TTLV_INTEGER, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
    sp_ttlv_enc_end(&e);
    sp_kmip_request_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    assert_int_equal(w.len, n);
    assert_memory_equal(out, want, n);

    sp_ttlv_tree t;
    assert_int_equal(decode(want, n, &t), SP_OK);
    assert_int_equal(t.count, 21);
    assert_int_equal(t.items[0].tag, KMIP_TAG_REQUEST_MESSAGE);
    size_t batch = sp_ttlv_child(&t, 0, KMIP_TAG_BATCH_ITEM);
    size_t payload = sp_ttlv_child(&t, batch, KMIP_TAG_REQUEST_PAYLOAD);
    size_t tmpl = sp_ttlv_child(&t, payload, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    assert_true(batch && payload && tmpl);
    assert_int_equal(t.items[tmpl].level, 4);
    size_t v = 0;
    assert_int_equal(sp_kmip_find_attribute(&t, tmpl, "Cryptographic Length", &v), SP_OK);
    assert_true(v != 0);
    assert_int_equal(t.items[v].number, 256);
    assert_int_equal(sp_kmip_find_attribute(&t, tmpl, "Cryptographic Usage Mask", &v), SP_OK);
    assert_int_equal(t.items[v].number, 12);
    assert_int_equal(sp_kmip_find_attribute(&t, tmpl, "State", &v), SP_OK);
    assert_int_equal(v, 0);
    assert_reencodes(&t, want, n);
}

/* The server's answer: Create succeeded, the key's UID. */
static const char create_response[] =
    "42007B|01|000000C0|"                                    /* Response Message */
    " 42007A|01|00000048|"                                   /*  Response Header */
    "  420069|01|00000020|"                                  /*   Protocol Version */
    "   42006A|02|00000004|00000001 00000000|"
    "   42006B|02|00000004|00000004 00000000|"
    "  420092|09|00000008|0000000047DA67F8|"                 /*   Time Stamp */
    "  42000D|02|00000004|00000001 00000000|"                /*   Batch Count 1 */
    " 42000F|01|00000068|"                                   /*  Batch Item */
    "  42005C|05|00000004|00000001 00000000|"                /*   Operation Create */
    "  42007F|05|00000004|00000000 00000000|"                /*   Result Status Success */
    "  42007C|01|00000040|"                                  /*   Response Payload */
    "   420057|05|00000004|00000002 00000000|"               /*    Object Type Symmetric Key */
    "   420094|07|00000024|"                                 /*    Unique Identifier, 36 bytes */
    "    66633838333364652D373064322D346563652D623036332D666564653361336335396665 00000000";

/* Decrypt failed: Item Not Found, with the server's message. */
static const char error_response[] =
    "42007B|01|000000B0|"
    " 42007A|01|00000048|"
    "  420069|01|00000020|"
    "   42006A|02|00000004|00000001 00000000|"
    "   42006B|02|00000004|00000004 00000000|"
    "  420092|09|00000008|0000000047DA67F8|"
    "  42000D|02|00000004|00000001 00000000|"
    " 42000F|01|00000058|"
    "  42005C|05|00000004|00000020 00000000|"                /*   Operation Decrypt */
    "  42007F|05|00000004|00000001 00000000|"                /*   Operation Failed */
    "  42007E|05|00000004|00000001 00000000|"                /*   Item Not Found */
    "  42007D|07|0000001B|436F756C64206E6F74206C6F63617465206F626A6563743A203432 0000000000";

static void test_create_response(void **state) {
    (void)state;
    uint8_t bytes[512];
    sp_ttlv_tree t;
    size_t n = sp_test_unhex(create_response, bytes, sizeof bytes);
    assert_int_equal(n, 200);
    assert_int_equal(decode(bytes, n, &t), SP_OK);
    sp_kmip_result r;
    assert_int_equal(sp_kmip_parse_response(&t, KMIP_OP_CREATE, &r), SP_OK);
    assert_int_equal(r.major, 1);
    assert_int_equal(r.minor, 4);
    assert_int_equal(r.operation, KMIP_OP_CREATE);
    assert_int_equal(r.status, KMIP_STATUS_SUCCESS);
    assert_int_equal(r.reason, 0);
    assert_int_equal(r.message.len, 0);
    size_t uid = 0;
    assert_int_equal(sp_ttlv_want(&t, r.payload, KMIP_TAG_UNIQUE_IDENTIFIER, SP_TTLV_TEXT_STRING, &uid), SP_OK);
    assert_int_equal(t.items[uid].value.len, 36);
    assert_memory_equal(t.items[uid].value.data, "fc8833de-70d2-4ece-b063-fede3a3c59fe", 36);
    /* asked for the wrong type, or for something absent */
    assert_int_equal(sp_ttlv_want(&t, r.payload, KMIP_TAG_UNIQUE_IDENTIFIER, SP_TTLV_BYTE_STRING, &uid),
                     SP_ERR_KMS_PROTOCOL);
    assert_int_equal(sp_ttlv_want(&t, r.payload, KMIP_TAG_DATA, SP_TTLV_BYTE_STRING, &uid), SP_ERR_KMS_PROTOCOL);
    assert_int_equal(sp_ttlv_want_opt(&t, r.payload, KMIP_TAG_DATA, SP_TTLV_BYTE_STRING, &uid), SP_OK);
    assert_int_equal(uid, 0);
    /* a success for another operation is not an answer to ours */
    assert_int_equal(sp_kmip_parse_response(&t, KMIP_OP_ENCRYPT, &r), SP_ERR_KMS_PROTOCOL);
    assert_reencodes(&t, bytes, n);
}

static void test_error_response(void **state) {
    (void)state;
    uint8_t bytes[512];
    sp_ttlv_tree t;
    size_t n = sp_test_unhex(error_response, bytes, sizeof bytes);
    assert_int_equal(n, 184);
    assert_int_equal(decode(bytes, n, &t), SP_OK);
    sp_kmip_result r;
    assert_int_equal(sp_kmip_parse_response(&t, KMIP_OP_DECRYPT, &r), SP_OK);
    assert_int_equal(r.status, KMIP_STATUS_OPERATION_FAILED);
    assert_int_equal(r.reason, KMIP_REASON_ITEM_NOT_FOUND);
    assert_int_equal(r.message.len, 27);
    assert_memory_equal(r.message.data, "Could not locate object: 42", 27);
    assert_int_equal(r.payload, 0);
    assert_reencodes(&t, bytes, n);
}

/* ---- every type through the encoder and back ---- */

static void test_round_trip_all_types(void **state) {
    (void)state;
    static const uint8_t big[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x85}; /* -123 */
    uint8_t out[512];
    sp_wbuf w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_begin(&e, 0x420001);
    sp_ttlv_enc_int(&e, 0x420002, -2);
    sp_ttlv_enc_long(&e, 0x420003, INT64_MIN);
    sp_ttlv_enc_bigint(&e, 0x420004, big, sizeof big);
    sp_ttlv_enc_enum(&e, 0x420005, 0xFFFFFFFFu);
    sp_ttlv_enc_bool(&e, 0x420006, false);
    sp_ttlv_enc_text(&e, 0x420007, "", 0);
    sp_ttlv_enc_bytes(&e, 0x540008, (const uint8_t *)"12345678", 8); /* an extension tag */
    sp_ttlv_enc_datetime(&e, 0x420009, -1);
    sp_ttlv_enc_interval(&e, 0x42000A, 0xFFFFFFFFu);
    sp_ttlv_enc_begin(&e, 0x42000B); /* empty Structure */
    sp_ttlv_enc_end(&e);
    sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    /* 10 children of 16 bytes, the Big Integer 24, the empty text and Structure 8 */
    assert_int_equal(w.len, 8 + 7 * 16 + 24 + 8 + 8);

    sp_ttlv_tree t;
    assert_int_equal(decode(out, w.len, &t), SP_OK);
    assert_int_equal(t.count, 11);
    assert_true(t.items[1].number == -2);
    assert_true(t.items[2].number == INT64_MIN);
    assert_int_equal(t.items[3].value.len, 16);
    assert_true(t.items[4].number == 0xFFFFFFFFLL);
    assert_true(t.items[5].number == 0);
    assert_int_equal(t.items[6].value.len, 0);
    assert_int_equal(t.items[7].tag, 0x540008);
    assert_true(t.items[8].number == -1);
    assert_true(t.items[9].number == 0xFFFFFFFFLL);
    assert_int_equal(t.items[10].type, SP_TTLV_STRUCTURE);
    assert_int_equal(t.items[10].first, 0);
    assert_int_equal(t.items[10].next, 0);
    assert_int_equal(sp_ttlv_next_same(&t, 1), 0);
    assert_reencodes(&t, out, w.len);
}

/* ---- malformed input ---- */

typedef struct {
    const char *name;
    const char *hex;
} bad_input;

static const bad_input bad_inputs[] = {
    {"empty", ""},
    {"header cut short", "420020|02|000000"},
    {"value cut short", "420020|02|00000004|000000"},
    {"padding missing", "420020|02|00000004|00000008"},
    {"padding cut short", "420020|07|00000003|616263 0000"},
    {"padding not zero (Integer)", "420020|02|00000004|00000008 00000001"},
    {"padding not zero (Text String)", "420020|07|00000003|616263 0000000001"},
    {"padding not zero (Byte String)", "420020|08|00000001|01 80000000000000"},
    {"Integer of 8 bytes", "420020|02|00000008|0000000000000008"},
    {"Integer of 0 bytes", "420020|02|00000000"},
    {"Long Integer of 4 bytes", "420020|03|00000004|00000001 00000000"},
    {"Long Integer of 16 bytes", "420020|03|00000010|00000000000000000000000000000001"},
    {"Big Integer of 0 bytes", "420020|04|00000000"},
    {"Big Integer of 12 bytes", "420020|04|0000000C|000000000000000000000001 00000000"},
    {"Enumeration of 5 bytes", "420020|05|00000005|0000000001 000000"},
    {"Enumeration of 8 bytes", "420020|05|00000008|0000000000000001"},
    {"Boolean 2", "420020|06|00000008|0000000000000002"},
    {"Boolean with a high bit", "420020|06|00000008|8000000000000001"},
    {"Boolean of 4 bytes", "420020|06|00000004|00000001 00000000"},
    {"Date-Time of 4 bytes", "420020|09|00000004|47DA67F8 00000000"},
    {"Interval of 8 bytes", "420020|0A|00000008|00000000000D2F00"},
    {"type 0x00", "420020|00|00000000"},
    {"type 0x0B", "420020|0B|00000000"},
    {"type 0xFF", "420020|FF|00000008|0000000000000000"},
    {"tag outside 0x42/0x54", "430020|02|00000004|00000008 00000000"},
    {"tag 0", "000000|02|00000004|00000008 00000000"},
    {"length past the input", "420020|08|00000010|0102030405060708"},
    {"length 0xFFFFFFF8", "420020|08|FFFFFFF8|0000000000000000"},
    {"length 0xFFFFFFFF", "420020|08|FFFFFFFF|0000000000000000"},
    {"child past its Structure", "420020|01|00000010|420021|08|00000010|0102030405060708"},
    {"child header cut by its Structure", "420020|01|00000004|42002102 00000000"},
    {"Structure holding a bad child",
     "420020|01|00000018|420021|02|00000004|00000001 00000000|420022|06|00000000"},
    {"byte after the message", "420020|02|00000004|00000008 00000000|00"},
    {"second message", "420020|02|00000004|00000008 00000000|420020|02|00000004|00000008 00000000"},
};

static void test_malformed(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof bad_inputs / sizeof bad_inputs[0]; i++) {
        uint8_t bytes[128];
        size_t n = sp_test_unhex(bad_inputs[i].hex, bytes, sizeof bytes);
        /* an exactly-sized heap copy, so a read past the end is caught
         * under ASan */
        uint8_t *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        if (n) memcpy(copy, bytes, n);
        sp_ttlv_tree t;
        sp_error rc = decode(copy, n, &t);
        free(copy);
        if (rc != SP_ERR_KMS_PROTOCOL) fail_msg("%s: %s", bad_inputs[i].name, sp_error_name(rc));
        assert_int_equal(t.count, 0);
    }
}

/* n nested Structures around an Integer: the Integer is at level n + 1. */
static size_t nested(size_t n, uint8_t *out, size_t cap) {
    size_t total = 16 + 8 * n;
    assert_true(total <= cap);
    for (size_t i = 0; i < n; i++) {
        size_t len = total - 8 * (i + 1);
        uint8_t h[8] = {0x42, 0x00, 0x01, SP_TTLV_STRUCTURE, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                        (uint8_t)(len >> 8), (uint8_t)len};
        memcpy(out + 8 * i, h, 8);
    }
    static const uint8_t leaf[16] = {0x42, 0x00, 0x02, SP_TTLV_INTEGER, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0};
    memcpy(out + 8 * n, leaf, sizeof leaf);
    return total;
}

static void test_depth_limit(void **state) {
    (void)state;
    uint8_t bytes[2048];
    sp_ttlv_tree t;
    size_t n = nested(SP_TTLV_MAX_DEPTH - 1, bytes, sizeof bytes);
    assert_int_equal(decode(bytes, n, &t), SP_OK);
    assert_int_equal(t.count, SP_TTLV_MAX_DEPTH);
    assert_int_equal(t.items[t.count - 1].level, SP_TTLV_MAX_DEPTH);
    assert_reencodes(&t, bytes, n);
    n = nested(SP_TTLV_MAX_DEPTH, bytes, sizeof bytes);
    assert_int_equal(decode(bytes, n, &t), SP_ERR_KMS_PROTOCOL);
    n = nested(200, bytes, sizeof bytes);
    assert_int_equal(decode(bytes, n, &t), SP_ERR_KMS_PROTOCOL);
}

static void test_item_limit(void **state) {
    (void)state;
    uint8_t bytes[64];
    size_t n = sp_test_unhex(structure_example, bytes, sizeof bytes); /* 3 items */
    sp_ttlv_item few[3];
    sp_ttlv_tree t = sp_ttlv_tree_of(few, 3);
    sp_cursor c = sp_cursor_of(bytes, n);
    assert_int_equal(sp_ttlv_decode(&c, &t), SP_OK);
    assert_int_equal(t.count, 3);
    t = sp_ttlv_tree_of(few, 2);
    c = sp_cursor_of(bytes, n);
    assert_int_equal(sp_ttlv_decode(&c, &t), SP_ERR_KMS_PROTOCOL);
    assert_int_equal(t.count, 0);
    t = sp_ttlv_tree_of(NULL, 0);
    c = sp_cursor_of(bytes, n);
    assert_int_equal(sp_ttlv_decode(&c, &t), SP_ERR_INVALID_ARGUMENT);
}

/* A Byte String message of exactly `total` bytes. */
static uint8_t *big_message(size_t total) {
    uint8_t *m = calloc(1, total);
    assert_non_null(m);
    size_t len = total - 8;
    uint8_t h[8] = {0x42, 0x00, 0x20, SP_TTLV_BYTE_STRING, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                    (uint8_t)(len >> 8), (uint8_t)len};
    memcpy(m, h, sizeof h);
    return m;
}

static void test_size_limit(void **state) {
    (void)state;
    sp_ttlv_tree t;
    uint8_t *m = big_message(SP_TTLV_MAX_MESSAGE);
    assert_int_equal(decode(m, SP_TTLV_MAX_MESSAGE, &t), SP_OK);
    assert_int_equal(t.items[0].value.len, SP_TTLV_MAX_MESSAGE - 8);
    free(m);
    m = big_message(SP_TTLV_MAX_MESSAGE + 8);
    assert_int_equal(decode(m, SP_TTLV_MAX_MESSAGE + 8, &t), SP_ERR_KMS_PROTOCOL);
    free(m);
}

static void test_message_length(void **state) {
    (void)state;
    uint8_t h[8];
    size_t total = 0;
    sp_test_unhex("42007B|01|000000C0", h, sizeof h);
    assert_int_equal(sp_ttlv_message_length(h, KMIP_TAG_RESPONSE_MESSAGE, &total), SP_OK);
    assert_int_equal(total, 200);
    sp_test_unhex("42007B|01|000FFFF8", h, sizeof h); /* exactly 1 MiB in all */
    assert_int_equal(sp_ttlv_message_length(h, KMIP_TAG_RESPONSE_MESSAGE, &total), SP_OK);
    assert_int_equal(total, SP_TTLV_MAX_MESSAGE);
    static const char *const bad[] = {
        "42007B|01|00100000", /* 1 MiB + 8 */
        "42007B|01|FFFFFFF8", /* far more */
        "42007B|01|000000C4", /* not whole items */
        "42007B|08|000000C0", /* not a Structure */
        "420078|01|000000C0", /* a request, not a response */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_test_unhex(bad[i], h, sizeof h);
        if (sp_ttlv_message_length(h, KMIP_TAG_RESPONSE_MESSAGE, &total) != SP_ERR_KMS_PROTOCOL) fail_msg("%s", bad[i]);
    }
}

/* ---- encoder misuse ---- */

static void test_encoder_errors(void **state) {
    (void)state;
    uint8_t out[64];
    sp_wbuf w;
    sp_ttlv_enc e;

    /* too small: the error sticks and later calls write nothing */
    w = sp_wbuf_of(out, 20);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_int(&e, 0x420001, 1);
    sp_ttlv_enc_int(&e, 0x420002, 2);
    size_t len_at_error = w.len;
    sp_ttlv_enc_int(&e, 0x420003, 3);
    assert_int_equal(w.len, len_at_error);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_BUFFER_TOO_SMALL);

    /* unbalanced either way */
    w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);
    w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_begin(&e, 0x420001);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);

    /* tags the decoder would refuse */
    static const uint32_t bad_tags[] = {0x430001, 0x000000, 0x1420001, 0xFFFFFFFF};
    for (size_t i = 0; i < sizeof bad_tags / sizeof bad_tags[0]; i++) {
        w = sp_wbuf_of(out, sizeof out);
        sp_ttlv_enc_init(&e, &w);
        sp_ttlv_enc_int(&e, bad_tags[i], 1);
        assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);
    }

    /* Big Integers fill whole 8-byte words */
    w = sp_wbuf_of(out, sizeof out);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_bigint(&e, 0x420001, out, 12);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_bigint(&e, 0x420001, out, 0);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);

    /* the same depth limit as the decoder */
    uint8_t deep[512];
    w = sp_wbuf_of(deep, sizeof deep);
    sp_ttlv_enc_init(&e, &w);
    for (int i = 0; i < SP_TTLV_MAX_DEPTH - 1; i++) sp_ttlv_enc_begin(&e, 0x420001);
    sp_ttlv_enc_int(&e, 0x420002, 7); /* level 16: allowed */
    for (int i = 0; i < SP_TTLV_MAX_DEPTH - 1; i++) sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    w = sp_wbuf_of(deep, sizeof deep);
    sp_ttlv_enc_init(&e, &w);
    for (int i = 0; i < SP_TTLV_MAX_DEPTH; i++) sp_ttlv_enc_begin(&e, 0x420001);
    sp_ttlv_enc_int(&e, 0x420002, 7); /* level 17 */
    for (int i = 0; i < SP_TTLV_MAX_DEPTH; i++) sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);

    /* a hand-made tree holding a value no item may hold */
    sp_ttlv_item fake = {.tag = 0x420001, .type = SP_TTLV_INTEGER, .level = 1, .value = {out, 3}};
    sp_ttlv_tree t = {&fake, 1, 1};
    w = sp_wbuf_of(deep, sizeof deep);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_item(&e, &t, 0);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_item(&e, &t, 1); /* past the end */
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_ERR_INVALID_ARGUMENT);
}

/* ---- the response envelope ---- */

enum {
    ENV_OK = 0,
    ENV_ROOT_REQUEST,   /* a Request Message instead */
    ENV_NO_HEADER,
    ENV_NO_MINOR,
    ENV_COUNT_TWO,      /* Batch Count 2, one item */
    ENV_TWO_ITEMS,      /* Batch Count 2, two items */
    ENV_NO_STATUS,
    ENV_STATUS_INTEGER, /* Result Status of the wrong type */
    ENV_STATUS_SEVEN,
    ENV_NO_PAYLOAD,
    ENV_OTHER_OPERATION,
    ENV_MESSAGE_BYTES,  /* Result Message as a Byte String */
    ENV_PAYLOAD_INT,    /* Response Payload that is not a Structure */
    ENV_NO_OPERATION,   /* allowed: error replies may omit it */
    ENV__COUNT
};

static size_t envelope(int variant, uint8_t *out, size_t cap) {
    sp_wbuf w = sp_wbuf_of(out, cap);
    sp_ttlv_enc e;
    sp_ttlv_enc_init(&e, &w);
    sp_ttlv_enc_begin(&e, variant == ENV_ROOT_REQUEST ? KMIP_TAG_REQUEST_MESSAGE : KMIP_TAG_RESPONSE_MESSAGE);
    if (variant != ENV_NO_HEADER) {
        sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_HEADER);
        sp_ttlv_enc_begin(&e, KMIP_TAG_PROTOCOL_VERSION);
        sp_ttlv_enc_int(&e, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
        if (variant != ENV_NO_MINOR) sp_ttlv_enc_int(&e, KMIP_TAG_PROTOCOL_VERSION_MINOR, 2);
        sp_ttlv_enc_end(&e);
        sp_ttlv_enc_datetime(&e, KMIP_TAG_TIME_STAMP, 0x47DA67F8);
        sp_ttlv_enc_int(&e, KMIP_TAG_BATCH_COUNT, variant == ENV_COUNT_TWO || variant == ENV_TWO_ITEMS ? 2 : 1);
        sp_ttlv_enc_end(&e);
    }
    for (int i = 0; i < (variant == ENV_TWO_ITEMS ? 2 : 1); i++) {
        sp_ttlv_enc_begin(&e, KMIP_TAG_BATCH_ITEM);
        uint32_t op = variant == ENV_OTHER_OPERATION ? KMIP_OP_DECRYPT : KMIP_OP_ENCRYPT;
        if (variant != ENV_NO_OPERATION) sp_ttlv_enc_enum(&e, KMIP_TAG_OPERATION, op);
        if (variant == ENV_STATUS_INTEGER) {
            sp_ttlv_enc_int(&e, KMIP_TAG_RESULT_STATUS, 0);
        } else if (variant != ENV_NO_STATUS) {
            sp_ttlv_enc_enum(&e, KMIP_TAG_RESULT_STATUS, variant == ENV_STATUS_SEVEN ? 7 : KMIP_STATUS_SUCCESS);
        }
        if (variant == ENV_MESSAGE_BYTES) sp_ttlv_enc_bytes(&e, KMIP_TAG_RESULT_MESSAGE, (const uint8_t *)"x", 1);
        if (variant == ENV_PAYLOAD_INT) {
            sp_ttlv_enc_int(&e, KMIP_TAG_RESPONSE_PAYLOAD, 0);
        } else if (variant != ENV_NO_PAYLOAD) {
            sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_PAYLOAD);
            sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, "1", 1);
            sp_ttlv_enc_end(&e);
        }
        sp_ttlv_enc_end(&e);
    }
    sp_ttlv_enc_end(&e);
    assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
    return w.len;
}

static void test_envelope(void **state) {
    (void)state;
    for (int v = 0; v < ENV__COUNT; v++) {
        uint8_t bytes[512];
        size_t n = envelope(v, bytes, sizeof bytes);
        sp_ttlv_tree t;
        assert_int_equal(decode(bytes, n, &t), SP_OK);
        sp_kmip_result r;
        sp_error rc = sp_kmip_parse_response(&t, KMIP_OP_ENCRYPT, &r);
        sp_error want = v == ENV_OK || v == ENV_NO_OPERATION ? SP_OK : SP_ERR_KMS_PROTOCOL;
        if (rc != want) fail_msg("variant %d: %s", v, sp_error_name(rc));
        if (rc == SP_OK) {
            assert_int_equal(r.status, KMIP_STATUS_SUCCESS);
            assert_true(r.payload != 0);
            assert_int_equal(r.operation, v == ENV_NO_OPERATION ? 0 : KMIP_OP_ENCRYPT);
        }
    }
    sp_ttlv_tree empty = sp_ttlv_tree_of(items, MAX_ITEMS);
    sp_kmip_result r;
    assert_int_equal(sp_kmip_parse_response(&empty, KMIP_OP_ENCRYPT, &r), SP_ERR_KMS_PROTOCOL);
}

/* Get Attributes answers: the attribute is found by name, a malformed one is
 * refused, an absent one is 0. */
static void test_find_attribute(void **state) {
    (void)state;
    for (int broken = 0; broken < 3; broken++) {
        uint8_t out[512];
        sp_wbuf w = sp_wbuf_of(out, sizeof out);
        sp_ttlv_enc e;
        sp_ttlv_enc_init(&e, &w);
        sp_ttlv_enc_begin(&e, KMIP_TAG_RESPONSE_PAYLOAD);
        sp_ttlv_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, "7", 1);
        attribute(&e, "Cryptographic Usage Mask", SP_TTLV_INTEGER, 12);
        if (broken == 1) {
            sp_ttlv_enc_begin(&e, KMIP_TAG_ATTRIBUTE); /* no name */
            sp_ttlv_enc_enum(&e, KMIP_TAG_ATTRIBUTE_VALUE, 2);
            sp_ttlv_enc_end(&e);
        } else if (broken == 2) {
            sp_ttlv_enc_text(&e, KMIP_TAG_ATTRIBUTE, "State", 5); /* not a Structure */
        }
        attribute(&e, "State", SP_TTLV_ENUMERATION, KMIP_STATE_ACTIVE);
        sp_ttlv_enc_end(&e);
        assert_int_equal(sp_ttlv_enc_finish(&e), SP_OK);
        sp_ttlv_tree t;
        assert_int_equal(decode(out, w.len, &t), SP_OK);
        size_t v = 99;
        sp_error rc = sp_kmip_find_attribute(&t, 0, "State", &v);
        if (broken) {
            assert_int_equal(rc, SP_ERR_KMS_PROTOCOL);
            continue;
        }
        assert_int_equal(rc, SP_OK);
        assert_true(v != 0);
        assert_int_equal(t.items[v].type, SP_TTLV_ENUMERATION);
        assert_int_equal(t.items[v].number, KMIP_STATE_ACTIVE);
        assert_int_equal(sp_kmip_find_attribute(&t, 0, "Stat", &v), SP_OK);
        assert_int_equal(v, 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_spec_structure),
        cmocka_unit_test(test_create_request),
        cmocka_unit_test(test_create_response),
        cmocka_unit_test(test_error_response),
        cmocka_unit_test(test_round_trip_all_types),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_item_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_message_length),
        cmocka_unit_test(test_encoder_errors),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_find_attribute),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
