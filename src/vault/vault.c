/*
 * The PII vault (include/sealpost/vault.h, docs/VAULT.md).
 *
 * A field value becomes a 46-byte-longer blob under a data key (DEK) that
 * the tenant's master key wraps; the DEKs, the blind-index keys and the
 * audit key are versions of keyring channels ("vault.dek",
 * "vault.index.<field>", "vault.audit"), so they share the keyring's file,
 * life cycle and master-key rewrap instead of growing a second store.
 *
 * Speed comes from the cache: a DEK is unwrapped once and kept as a GCM
 * context (key schedule set up once) in a fixed slab, found through an
 * open-addressing index keyed by the DEK id; a warm encrypt or decrypt is a
 * header check, one probe, the AAD built on the stack and one GCM call,
 * with no allocation. Safety comes from bounding that cache: an entry lives
 * cache_ttl_s from its unwrap and cache_max_uses uses, after which the KMS
 * is asked again, so a revocation at the KMS takes effect within the TTL.
 * An access in the last refresh_ahead_s re-unwraps early, so a busy DEK
 * does not stall on the KMS at expiry; if the KMS does not answer then, the
 * entry serves on until it really expires, and if it refuses (revoked), the
 * entry goes at once: a refusal we have heard of is honoured now.
 *
 * Availability at ingestion: with the current DEK cached, encrypt needs no
 * KMS. When it has to be unwrapped and the KMS will not, the vault makes a
 * new DEK and keeps the key it just generated; with an RSA-OAEP master key
 * the wrap happens on this host, so ingestion goes on while the HSM is down
 * or revoked. With a symmetric master key that wrap fails too and the KMS's
 * error goes back to the caller, with nothing written.
 *
 * Every send-time decrypt writes one audit line (decrypts that fail too):
 * who (tenant, a keyed hash of the profile id), what (field, DEK), why
 * (purpose) and the result. No line, no plaintext.
 */
#include "vault/sp_vault_internal.h"

#define SP_VAULT_DEFAULT_DEK_LIFETIME 1800
#define SP_VAULT_DEFAULT_CACHE_TTL 1800
#define SP_VAULT_DEFAULT_MAX_USES 1000000u
#define SP_VAULT_DEFAULT_REFRESH 60
#define SP_VAULT_DEFAULT_INDEX 16
/* Lifetimes beyond this are a mistake (and keep time arithmetic far from
 * overflow): ten years. */
#define SP_VAULT_MAX_SECONDS ((int64_t)10 * 366 * 86400)
#define SP_VAULT_AUDIT_HASH_BYTES 16
#define SP_VAULT_NO_INDEX 0 /* an empty slot of the cache index */

static const sp_vault_field sp_vault_default_pii[] = {
    {"email", SP_VAULT_FIELD_EMAIL},
    {"phone", SP_VAULT_FIELD_PHONE},
};

/* One unwrapped DEK. */
typedef struct {
    bool live;
    uint8_t id[SP_VAULT_DEK_ID_BYTES];
    char uuid[SP_KEY_VERSION_CHARS + 1];
    uint16_t home;         /* its slot in the index when nothing collides */
    sp_cipher *cipher;     /* GCM, both directions, key schedule kept */
    int64_t unwrapped_at;  /* the TTL counts from here */
    int64_t retry_refresh; /* after a failed refresh, not before this */
    uint64_t uses;
} sp_vault_dek;

/* An unwrapped HMAC key (blind index, audit hashing), held no longer than
 * a DEK: a revoked master key must stop indexing within the same TTL. */
typedef struct {
    sp_hmac *mac; /* NULL until first use, and after it expires */
    int64_t unwrapped_at;
} sp_vault_hkey;

typedef struct {
    char name[SP_VAULT_MAX_FIELD + 1];
    sp_vault_field_kind kind;
    sp_vault_hkey index_key;
} sp_vault_pii;

struct sp_vault {
    char tenant[SP_VAULT_MAX_TENANT + 1];
    sp_keyring *kr;
    sp_audit *audit;
    int64_t dek_lifetime, ttl, refresh;
    uint64_t max_uses;
    size_t index_bytes;
    char country_code[SP_VAULT_MAX_COUNTRY_CODE + 1];
    bool has_country_code;
    sp_vault_pii pii[SP_VAULT_MAX_PII_FIELDS];
    size_t n_pii;
    sp_vault_hkey audit_key;
    /* sp_vault_decrypt_many's audit lines, made on first use and kept */
    struct sp_vault_batch *batch;

    /* the DEK new values go under, remembered so a warm encrypt does not
     * walk the keyring */
    bool cur_valid;
    uint8_t cur_id[SP_VAULT_DEK_ID_BYTES];
    char cur_uuid[SP_KEY_VERSION_CHARS + 1];
    int64_t cur_created;
    uint64_t cur_seals;

    /* the cache */
    uint64_t seed;
    int64_t last_sweep;
    int64_t last_reload; /* when the keyring was last re-read before an unwrap */
    size_t cached;
    uint16_t slots[SP_VAULT_CACHE_SLOTS]; /* entry index + 1, or SP_VAULT_NO_INDEX */
    sp_vault_dek entries[SP_VAULT_CACHE_ENTRIES];

    /* "sealpost-vault-v1" || u8 len || tenant: the AAD's constant start */
    uint8_t aad_prefix[sizeof SP_VAULT_AAD_LABEL - 1 + 1 + SP_VAULT_MAX_TENANT];
    size_t aad_prefix_len;
    sp_vault_stats stats;
};

/* ---- small helpers ---- */

static bool sp_vault_tenant_ok(const char *s, size_t *len_out) {
    if (s == NULL) return false;
    size_t n = strnlen(s, SP_VAULT_MAX_TENANT + 1);
    if (n == 0 || n > SP_VAULT_MAX_TENANT) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return false;
    }
    *len_out = n;
    return true;
}

static sp_error sp_vault_clock(int64_t *now) {
    if (*now == 0) *now = sp_now_seconds();
    SP_ENSURE(*now > 0, SP_ERR_INVALID_ARGUMENT);
    return SP_OK;
}

static int sp_vault_nibble(char c) { return c >= 'a' ? c - 'a' + 10 : c - '0'; }

/* A keyring version (canonical lowercase UUID) to the 16 bytes a blob
 * carries, and back. */
static void sp_vault_uuid_to_id(const char *uuid, uint8_t id[SP_VAULT_DEK_ID_BYTES]) {
    size_t o = 0;
    for (size_t i = 0; i < SP_KEY_VERSION_CHARS && o < SP_VAULT_DEK_ID_BYTES; i++) {
        if (uuid[i] == '-') continue;
        id[o++] = (uint8_t)(sp_vault_nibble(uuid[i]) << 4 | sp_vault_nibble(uuid[i + 1]));
        i++;
    }
}

static void sp_vault_id_to_uuid(const uint8_t id[SP_VAULT_DEK_ID_BYTES], char uuid[SP_KEY_VERSION_CHARS + 1]) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < SP_VAULT_DEK_ID_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) uuid[o++] = '-';
        uuid[o++] = hex[id[i] >> 4];
        uuid[o++] = hex[id[i] & 15];
    }
    uuid[o] = 0;
}

/* Answers that say the key may not be used (as opposed to "could not ask"):
 * a cached copy of it is dropped as soon as one is heard. */
static bool sp_vault_refusal(sp_error rc) {
    return rc == SP_ERR_KMS_ACCESS_DENIED || rc == SP_ERR_KMS_KEY_DISABLED || rc == SP_ERR_KEY_RETIRED ||
           rc == SP_ERR_AUTH || rc == SP_ERR_NOT_FOUND;
}


/* ---- the cache ---- */

static uint16_t sp_vault_home(const sp_vault *v, const uint8_t id[SP_VAULT_DEK_ID_BYTES]) {
    uint64_t a, b;
    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    /* ids are random, the seed keeps a crafted set of them from lining up */
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15u) ^ v->seed) * 0xbf58476d1ce4e5b9u;
    return (uint16_t)(h >> 55); /* 9 bits: SP_VAULT_CACHE_SLOTS */
}

static sp_vault_dek *sp_vault_lookup(sp_vault *v, const uint8_t id[SP_VAULT_DEK_ID_BYTES], size_t *slot_out) {
    size_t s = sp_vault_home(v, id);
    for (;;) {
        uint16_t ix = v->slots[s];
        if (ix == SP_VAULT_NO_INDEX) return NULL;
        sp_vault_dek *e = &v->entries[ix - 1];
        if (memcmp(e->id, id, SP_VAULT_DEK_ID_BYTES) == 0) {
            if (slot_out) *slot_out = s;
            return e;
        }
        s = (s + 1) & (SP_VAULT_CACHE_SLOTS - 1);
    }
}

/* Frees the entry (the cipher's contexts wipe the key schedule) and closes
 * the gap in the index by shifting back the entries probed past it, so no
 * tombstones pile up. */
static void sp_vault_drop(sp_vault *v, sp_vault_dek *e) {
    size_t hole = 0;
    if (sp_vault_lookup(v, e->id, &hole) != e) return;
    sp_cipher_free(e->cipher);
    sp_wipe(e, sizeof *e);
    v->cached--;
    size_t j = hole;
    for (;;) {
        j = (j + 1) & (SP_VAULT_CACHE_SLOTS - 1);
        uint16_t ix = v->slots[j];
        if (ix == SP_VAULT_NO_INDEX) break;
        size_t home = v->entries[ix - 1].home;
        /* the entry at j may move into the hole unless its home lies
         * cyclically in (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            v->slots[hole] = ix;
            hole = j;
        }
    }
    v->slots[hole] = SP_VAULT_NO_INDEX;
}

static void sp_vault_drop_all(sp_vault *v) {
    for (size_t i = 0; i < SP_VAULT_CACHE_ENTRIES; i++) {
        if (v->entries[i].live) {
            sp_cipher_free(v->entries[i].cipher);
            sp_wipe(&v->entries[i], sizeof v->entries[i]);
        }
    }
    memset(v->slots, 0, sizeof v->slots);
    v->cached = 0;
    v->cur_valid = false;
}

static bool sp_vault_expired(const sp_vault *v, const sp_vault_dek *e, int64_t now) {
    int64_t age = now - e->unwrapped_at;
    /* a clock that went back is not trusted to extend a key's life */
    return age < 0 || age >= v->ttl || e->uses >= v->max_uses;
}

/* Expired entries go even when nobody asks for them again, so key
 * schedules do not outlive their TTL in memory. Once per second of time. */
static void sp_vault_sweep(sp_vault *v, int64_t now) {
    if (now == v->last_sweep) return;
    v->last_sweep = now;
    for (size_t i = 0; i < SP_VAULT_CACHE_ENTRIES; i++) {
        sp_vault_dek *e = &v->entries[i];
        if (e->live && sp_vault_expired(v, e, now)) {
            sp_vault_drop(v, e);
            v->stats.expired++;
        }
    }
}

/* Takes ownership of cipher. A full cache gives up its oldest unwrap. */
static sp_vault_dek *sp_vault_insert(sp_vault *v, const uint8_t id[SP_VAULT_DEK_ID_BYTES], sp_cipher *cipher,
                                     int64_t now) {
    sp_vault_dek *old = sp_vault_lookup(v, id, NULL);
    if (old != NULL) sp_vault_drop(v, old);
    if (v->cached == SP_VAULT_CACHE_ENTRIES) {
        sp_vault_dek *oldest = NULL;
        for (size_t i = 0; i < SP_VAULT_CACHE_ENTRIES; i++) {
            if (oldest == NULL || v->entries[i].unwrapped_at < oldest->unwrapped_at) oldest = &v->entries[i];
        }
        sp_vault_drop(v, oldest);
        v->stats.evictions++;
    }
    size_t free_ix = 0;
    while (v->entries[free_ix].live) free_ix++;
    sp_vault_dek *e = &v->entries[free_ix];
    e->live = true;
    memcpy(e->id, id, SP_VAULT_DEK_ID_BYTES);
    sp_vault_id_to_uuid(id, e->uuid);
    e->home = sp_vault_home(v, id);
    e->cipher = cipher;
    e->unwrapped_at = now;
    e->retry_refresh = 0;
    e->uses = 0;
    size_t s = e->home;
    while (v->slots[s] != SP_VAULT_NO_INDEX) s = (s + 1) & (SP_VAULT_CACHE_SLOTS - 1);
    v->slots[s] = (uint16_t)(free_ix + 1);
    v->cached++;
    return e;
}

/* ---- keys from the keyring ---- */

static sp_error sp_vault_cipher_of(const sp_key *key, sp_cipher **out) {
    return sp_cipher_new(key, SP_ALG_AES_256_GCM, out);
}

/* Unwraps one version of a vault channel.
 *
 * The keyring in memory is a snapshot of a file other processes change. A
 * key they retired or erased must stop being unwrapped here too, so an
 * unwrap (a cold path: a miss, an expiry, a refresh) first re-reads the
 * file when the snapshot is a second old or more; an erase elsewhere thus
 * reaches this process at its next unwrap, i.e. within the cache TTL. And a
 * version the snapshot does not know may have been made since it was read:
 * then the file is read again, whatever its age. Both only when the file
 * changed (a stat): a forged blob naming a made-up DEK id costs a stat,
 * not a read and parse of the whole keyring. */
static sp_error sp_vault_unwrap(sp_vault *v, const char *channel, const char *uuid, int64_t now, sp_key **out) {
    bool fresh = false;
    if (now - v->last_reload >= 1 || now < v->last_reload) {
        SP_GUARD(sp_keyring_reload_if_changed(v->kr, NULL));
        v->last_reload = now;
        fresh = true;
    }
    sp_error rc = sp_keyring_unwrap(v->kr, v->tenant, channel, uuid, out);
    if (rc == SP_ERR_NOT_FOUND && !fresh) {
        bool reloaded = false;
        rc = sp_keyring_reload_if_changed(v->kr, &reloaded);
        if (reloaded) v->stats.reloads++;
        if (rc == SP_OK) rc = sp_keyring_unwrap(v->kr, v->tenant, channel, uuid, out);
    }
    return rc;
}

static sp_error sp_vault_unwrap_cipher(sp_vault *v, const char *uuid, int64_t now, sp_cipher **out) {
    sp_key *key = NULL;
    SP_GUARD(sp_vault_unwrap(v, SP_VAULT_DEK_CHANNEL, uuid, now, &key));
    v->stats.unwraps++;
    sp_error rc = sp_vault_cipher_of(key, out);
    sp_key_free(key);
    return rc;
}

/* The cached GCM context of a DEK, unwrapping it when it is missing or
 * expired and refreshing it ahead of expiry. Counts one use. */
static sp_error sp_vault_dek_get(sp_vault *v, const uint8_t id[SP_VAULT_DEK_ID_BYTES], int64_t now,
                                 sp_vault_dek **out) {
    sp_vault_dek *e = sp_vault_lookup(v, id, NULL);
    if (e != NULL && sp_vault_expired(v, e, now)) {
        sp_vault_drop(v, e);
        v->stats.expired++;
        e = NULL;
    }
    if (e != NULL && now - e->unwrapped_at >= v->ttl - v->refresh && now >= e->retry_refresh) {
        sp_cipher *fresh = NULL;
        sp_error rc = sp_vault_unwrap_cipher(v, e->uuid, now, &fresh);
        if (rc == SP_OK) {
            sp_cipher_free(e->cipher);
            e->cipher = fresh;
            e->unwrapped_at = now;
            e->uses = 0;
            v->stats.refreshes++;
        } else if (sp_vault_refusal(rc)) {
            sp_vault_drop(v, e);
            v->stats.refresh_failures++;
            return rc;
        } else {
            /* the KMS did not answer: serve from the cache until it expires,
             * asking again at most once a second */
            e->retry_refresh = now + 1;
            v->stats.refresh_failures++;
        }
    }
    if (e == NULL) {
        char uuid[SP_KEY_VERSION_CHARS + 1];
        sp_vault_id_to_uuid(id, uuid);
        sp_cipher *cipher = NULL;
        SP_GUARD(sp_vault_unwrap_cipher(v, uuid, now, &cipher));
        e = sp_vault_insert(v, id, cipher, now);
    }
    e->uses++;
    *out = e;
    return SP_OK;
}

/* The HMAC key of a channel whose active version is made on first use and
 * never rotated (index and audit keys). It is unwrapped again once the
 * cache TTL has passed, so after a revocation it stops working as DEKs do. */
static sp_error sp_vault_hmac_key(sp_vault *v, const char *channel, int64_t now, sp_vault_hkey *hk) {
    /* a clock stepping back a little is not an expiry; by more than a TTL it is */
    int64_t age = now - hk->unwrapped_at;
    if (hk->mac != NULL && age < v->ttl && age > -v->ttl) return SP_OK;
    sp_hmac_free(hk->mac); /* wiped */
    hk->mac = NULL;
    char uuid[SP_KEY_VERSION_CHARS + 1];
    sp_key *key = NULL;
    SP_GUARD(sp_keyring_rotate_if_older(v->kr, v->tenant, channel, now, INT64_MAX, uuid, NULL));
    sp_error rc = sp_vault_unwrap(v, channel, uuid, now, &key);
    if (rc == SP_ERR_KEY_RETIRED || rc == SP_ERR_NOT_FOUND) {
        /* erased elsewhere after our snapshot named it; the re-read keyring
         * has no active version, so this makes the new one */
        SP_GUARD(sp_keyring_rotate_if_older(v->kr, v->tenant, channel, now, INT64_MAX, uuid, NULL));
        rc = sp_vault_unwrap(v, channel, uuid, now, &key);
    }
    SP_GUARD(rc);
    rc = sp_hmac_new(sp_key_bytes(key), SP_KEY_BYTES, &hk->mac);
    sp_key_free(key);
    if (rc == SP_OK) hk->unwrapped_at = now;
    return rc;
}

/* ---- open / close ---- */

static sp_error sp_vault_read_fields(sp_vault *v, const sp_vault_options *o) {
    const sp_vault_field *fields = o->pii_fields;
    size_t n = o->n_pii_fields;
    if (fields == NULL) {
        SP_ENSURE(n == 0, SP_ERR_INVALID_ARGUMENT);
        fields = sp_vault_default_pii;
        n = SP_ARRAY_LEN(sp_vault_default_pii);
    }
    SP_ENSURE(n >= 1 && n <= SP_VAULT_MAX_PII_FIELDS, SP_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        SP_ENSURE(sp_vault_field_name_ok(fields[i].name, &len), SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(fields[i].kind == SP_VAULT_FIELD_TEXT || fields[i].kind == SP_VAULT_FIELD_EMAIL ||
                      fields[i].kind == SP_VAULT_FIELD_PHONE,
                  SP_ERR_INVALID_ARGUMENT);
        for (size_t j = 0; j < i; j++) SP_ENSURE(strcmp(v->pii[j].name, fields[i].name) != 0, SP_ERR_INVALID_ARGUMENT);
        memcpy(v->pii[i].name, fields[i].name, len + 1);
        v->pii[i].kind = fields[i].kind;
        v->n_pii = i + 1;
    }
    return SP_OK;
}

static sp_error sp_vault_read_options(sp_vault *v, const sp_vault_options *o) {
    size_t tenant_len = 0;
    SP_ENSURE(sp_vault_tenant_ok(o->tenant, &tenant_len), SP_ERR_INVALID_ARGUMENT);
    memcpy(v->tenant, o->tenant, tenant_len + 1);
    SP_GUARD(sp_vault_read_fields(v, o));
    SP_ENSURE(o->dek_lifetime_s >= 0 && o->dek_lifetime_s <= SP_VAULT_MAX_SECONDS, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(o->cache_ttl_s >= 0 && o->cache_ttl_s <= SP_VAULT_MAX_SECONDS, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(o->refresh_ahead_s >= 0, SP_ERR_INVALID_ARGUMENT);
    v->dek_lifetime = o->dek_lifetime_s ? o->dek_lifetime_s : SP_VAULT_DEFAULT_DEK_LIFETIME;
    v->ttl = o->cache_ttl_s ? o->cache_ttl_s : SP_VAULT_DEFAULT_CACHE_TTL;
    v->max_uses = o->cache_max_uses ? o->cache_max_uses : SP_VAULT_DEFAULT_MAX_USES;
    if (o->refresh_ahead_s) {
        SP_ENSURE(o->refresh_ahead_s < v->ttl, SP_ERR_INVALID_ARGUMENT);
        v->refresh = o->refresh_ahead_s;
    } else {
        /* the default must leave a short TTL some unrefreshed life */
        v->refresh = v->ttl > 2 * SP_VAULT_DEFAULT_REFRESH ? SP_VAULT_DEFAULT_REFRESH : v->ttl / 2;
    }
    v->index_bytes = o->index_bytes ? o->index_bytes : SP_VAULT_DEFAULT_INDEX;
    SP_ENSURE(v->index_bytes >= SP_VAULT_INDEX_MIN && v->index_bytes <= SP_VAULT_INDEX_MAX, SP_ERR_INVALID_ARGUMENT);
    if (o->default_country_code != NULL) {
        SP_ENSURE(sp_vault_country_code_ok(o->default_country_code), SP_ERR_INVALID_ARGUMENT);
        memcpy(v->country_code, o->default_country_code, strlen(o->default_country_code) + 1);
        v->has_country_code = true;
    }
    v->audit = o->audit;
    sp_wbuf b = sp_wbuf_of(v->aad_prefix, sizeof v->aad_prefix);
    uint8_t n = (uint8_t)tenant_len;
    SP_GUARD(sp_wbuf_put_str(&b, SP_VAULT_AAD_LABEL));
    SP_GUARD(sp_wbuf_put(&b, &n, 1));
    SP_GUARD(sp_wbuf_put(&b, v->tenant, tenant_len));
    v->aad_prefix_len = b.len;
    return SP_OK;
}

sp_error sp_vault_open(const sp_vault_options *options, sp_keyring *keyring, sp_vault **out) {
    SP_ENSURE(options != NULL && keyring != NULL && out != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_init());
    sp_vault *v = sp_calloc(1, sizeof *v);
    SP_ENSURE(v != NULL, SP_ERR_NO_MEMORY);
    v->kr = keyring;
    sp_error rc = sp_vault_read_options(v, options);
    if (rc == SP_OK) rc = sp_random((uint8_t *)&v->seed, sizeof v->seed);
    if (rc != SP_OK) {
        sp_vault_close(v);
        return rc;
    }
    *out = v;
    return SP_OK;
}

static void sp_vault_forget_keys(sp_vault *v) {
    sp_vault_drop_all(v);
    for (size_t i = 0; i < v->n_pii; i++) {
        sp_hmac_free(v->pii[i].index_key.mac);
        v->pii[i].index_key.mac = NULL;
    }
    sp_hmac_free(v->audit_key.mac);
    v->audit_key.mac = NULL;
}

void sp_vault_close(sp_vault *v) {
    if (v == NULL) return;
    sp_vault_forget_keys(v);
    sp_free(v->batch);
    sp_free_wiped(v, sizeof *v);
}

static sp_vault_pii *sp_vault_find_pii(const sp_vault *v, const char *field) {
    for (size_t i = 0; i < v->n_pii; i++) {
        if (strcmp(v->pii[i].name, field) == 0) return (sp_vault_pii *)(uintptr_t)&v->pii[i];
    }
    return NULL;
}

bool sp_vault_is_pii(const sp_vault *v, const char *field) {
    return v != NULL && sp_vault_field_name_ok(field, NULL) && sp_vault_find_pii(v, field) != NULL;
}

void sp_vault_get_stats(const sp_vault *v, sp_vault_stats *out) {
    *out = v->stats;
    out->cached = v->cached;
}

/* ---- the blob ---- */

/* The additional data; the caller's buffer holds SP_VAULT_MAX_AAD. */
static size_t sp_vault_aad(const sp_vault *v, const char *profile, size_t profile_len, const char *field,
                           size_t field_len, const uint8_t header[SP_VAULT_HEADER_BYTES], uint8_t *aad) {
    size_t n = v->aad_prefix_len;
    memcpy(aad, v->aad_prefix, n);
    aad[n++] = (uint8_t)profile_len;
    memcpy(aad + n, profile, profile_len);
    n += profile_len;
    aad[n++] = (uint8_t)field_len;
    memcpy(aad + n, field, field_len);
    n += field_len;
    memcpy(aad + n, header, SP_VAULT_HEADER_BYTES);
    return n + SP_VAULT_HEADER_BYTES;
}

static bool sp_vault_header_ok(const uint8_t *blob, size_t len) {
    return blob != NULL && len >= SP_VAULT_OVERHEAD && len - SP_VAULT_OVERHEAD <= SP_VAULT_MAX_VALUE &&
           blob[0] == SP_VAULT_FORMAT_VERSION && blob[1] == SP_VAULT_ALG_AES_256_GCM;
}

sp_error sp_vault_blob_dek(const uint8_t *blob, size_t len, char dek_id[SP_KEY_VERSION_CHARS + 1]) {
    SP_ENSURE(dek_id != NULL, SP_ERR_INVALID_ARGUMENT);
    dek_id[0] = 0;
    SP_ENSURE(sp_vault_header_ok(blob, len), SP_ERR_AUTH);
    sp_vault_id_to_uuid(blob + 2, dek_id);
    return SP_OK;
}

/* ---- encrypt ---- */

/* Makes a new DEK and caches the key the KMS just generated, without an
 * unwrap: the way on when the current DEK cannot be unwrapped. */
static sp_error sp_vault_new_dek(sp_vault *v, int64_t now, sp_vault_dek **out) {
    char uuid[SP_KEY_VERSION_CHARS + 1];
    sp_key *key = NULL;
    SP_GUARD(sp_keyring_rotate_with_key(v->kr, v->tenant, SP_VAULT_DEK_CHANNEL, now, uuid, &key));
    v->stats.rotations++;
    sp_cipher *cipher = NULL;
    sp_error rc = sp_vault_cipher_of(key, &cipher);
    sp_key_free(key);
    SP_GUARD(rc);
    uint8_t id[SP_VAULT_DEK_ID_BYTES];
    sp_vault_uuid_to_id(uuid, id);
    sp_vault_dek *e = sp_vault_insert(v, id, cipher, now);
    e->uses = 1;
    v->cur_valid = true;
    memcpy(v->cur_id, id, sizeof id);
    memcpy(v->cur_uuid, uuid, sizeof uuid);
    v->cur_created = now;
    v->cur_seals = 0;
    *out = e;
    return SP_OK;
}

/* Notes which DEK is current after the keyring named it. */
static void sp_vault_set_current(sp_vault *v, const char *uuid, int64_t now) {
    if (v->cur_valid && memcmp(v->cur_uuid, uuid, SP_KEY_VERSION_CHARS) == 0) return;
    sp_keyring_entry entry;
    v->cur_valid = true;
    memcpy(v->cur_uuid, uuid, SP_KEY_VERSION_CHARS + 1);
    sp_vault_uuid_to_id(uuid, v->cur_id);
    /* the keyring just named it, so it is there; `now` would only make the
     * next lookup come sooner */
    v->cur_created = sp_keyring_find(v->kr, v->tenant, SP_VAULT_DEK_CHANNEL, uuid, &entry) == SP_OK ? entry.created
                                                                                                    : now;
    v->cur_seals = 0;
}

static sp_error sp_vault_current_slow(sp_vault *v, int64_t now, bool retry, sp_vault_dek **out) {
    char uuid[SP_KEY_VERSION_CHARS + 1];
    sp_error rc;
    if (v->cur_valid && v->cur_seals >= SP_VAULT_MAX_SEALS_PER_DEK) {
        rc = sp_keyring_rotate(v->kr, v->tenant, SP_VAULT_DEK_CHANNEL, now, uuid);
        if (rc == SP_OK) v->stats.rotations++;
    } else {
        bool rotated = false;
        rc = sp_keyring_rotate_if_older(v->kr, v->tenant, SP_VAULT_DEK_CHANNEL, now, v->dek_lifetime, uuid, &rotated);
        if (rc == SP_OK && rotated) v->stats.rotations++;
    }
    if (rc != SP_OK) {
        /* No new DEK could be made (the KMS cannot wrap): the one in use
         * carries on while its cached copy lasts, rather than stopping
         * ingestion at a lifetime boundary that is only policy. The nonce
         * bound is not policy: past it, no grace. */
        if (sp_error_is_kms(rc) && v->cur_valid && v->cur_seals < SP_VAULT_MAX_SEALS_PER_DEK &&
            sp_vault_dek_get(v, v->cur_id, now, out) == SP_OK) {
            v->cur_seals++;
            return SP_OK;
        }
        return rc;
    }
    sp_vault_set_current(v, uuid, now);
    sp_error got = sp_vault_dek_get(v, v->cur_id, now, out);
    if (got == SP_OK) {
        v->cur_seals++;
        return SP_OK;
    }
    if ((got == SP_ERR_KEY_RETIRED || got == SP_ERR_NOT_FOUND) && retry) {
        /* another process erased or retired it since our snapshot; the
         * re-read keyring has no such active DEK, so asking again makes one */
        v->cur_valid = false;
        return sp_vault_current_slow(v, now, false, out);
    }
    if (!sp_error_is_kms(got)) return got;
    /* The KMS will not unwrap the current DEK (down, or revoked). A new one
     * made here needs only a wrap, which an RSA-OAEP master key does on
     * this host. Otherwise the unwrap's answer is the caller's. */
    if (sp_vault_new_dek(v, now, out) != SP_OK) return got;
    v->stats.fallbacks++;
    v->cur_seals++;
    return SP_OK;
}

/* The DEK new values go under. Warm: no keyring walk, no KMS, no lock. */
static sp_error sp_vault_current(sp_vault *v, int64_t now, sp_vault_dek **out) {
    sp_vault_sweep(v, now);
    if (v->cur_valid && now >= v->cur_created && now - v->cur_created < v->dek_lifetime &&
        v->cur_seals < SP_VAULT_MAX_SEALS_PER_DEK) {
        sp_vault_dek *e = sp_vault_lookup(v, v->cur_id, NULL);
        if (e != NULL && !sp_vault_expired(v, e, now) && now - e->unwrapped_at < v->ttl - v->refresh) {
            e->uses++;
            v->cur_seals++;
            *out = e;
            return SP_OK;
        }
    }
    return sp_vault_current_slow(v, now, true, out);
}

static bool sp_vault_overlap(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a_len != 0 && b_len != 0 && x < y + b_len && y < x + a_len;
}

sp_error sp_vault_encrypt(sp_vault *v, const char *profile_id, const char *field, const uint8_t *value, size_t len,
                          int64_t now, uint8_t *out, size_t cap, size_t *out_len) {
    SP_ENSURE(out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    size_t profile_len = 0, field_len = 0;
    SP_ENSURE(v != NULL && out != NULL && (value != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_vault_profile_id_ok(profile_id, &profile_len) && sp_vault_field_name_ok(field, &field_len),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(len <= SP_VAULT_MAX_VALUE, SP_ERR_TOO_LARGE);
    size_t total = len + SP_VAULT_OVERHEAD;
    SP_ENSURE(cap >= total, SP_ERR_BUFFER_TOO_SMALL);
    SP_ENSURE(!sp_vault_overlap(value, len, out, total), SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_vault_clock(&now));

    sp_vault_dek *e = NULL;
    sp_error rc = sp_vault_current(v, now, &e);
    if (rc == SP_OK) {
        out[0] = SP_VAULT_FORMAT_VERSION;
        out[1] = SP_VAULT_ALG_AES_256_GCM;
        memcpy(out + 2, e->id, SP_VAULT_DEK_ID_BYTES);
        rc = sp_random(out + SP_VAULT_HEADER_BYTES, SP_VAULT_NONCE_BYTES);
    }
    if (rc == SP_OK) {
        uint8_t aad[SP_VAULT_MAX_AAD];
        size_t aad_len = sp_vault_aad(v, profile_id, profile_len, field, field_len, out, aad);
        size_t n = 0;
        rc = sp_cipher_run(e->cipher, true, out + SP_VAULT_HEADER_BYTES, SP_VAULT_NONCE_BYTES, aad, aad_len, value,
                           len, SP_VAULT_TAG_BYTES, out + SP_VAULT_BODY_OFFSET, cap - SP_VAULT_BODY_OFFSET, &n);
        if (rc == SP_OK && n != len + SP_VAULT_TAG_BYTES) rc = SP_ERR_CRYPTO_BACKEND;
    }
    if (rc != SP_OK) {
        sp_wipe(out, total);
        return rc;
    }
    *out_len = total;
    return SP_OK;
}

/* ---- decrypt ---- */

sp_error sp_vault_decrypt_unaudited(sp_vault *v, const char *profile_id, size_t profile_len, const char *field,
                                    size_t field_len, const uint8_t *blob, size_t len, int64_t now, uint8_t *out,
                                    size_t cap, size_t *out_len, char dek_uuid[SP_KEY_VERSION_CHARS + 1]) {
    *out_len = 0;
    if (dek_uuid) dek_uuid[0] = 0;
    SP_ENSURE(sp_vault_header_ok(blob, len), SP_ERR_AUTH);
    if (dek_uuid) sp_vault_id_to_uuid(blob + 2, dek_uuid);
    size_t plain = len - SP_VAULT_OVERHEAD;
    SP_ENSURE(cap >= plain && (out != NULL || plain == 0), SP_ERR_BUFFER_TOO_SMALL);
    sp_vault_sweep(v, now);
    sp_vault_dek *e = NULL;
    sp_error rc = sp_vault_dek_get(v, blob + 2, now, &e);
    /* A DEK id that even the re-read keyring does not know: forged, or
     * another tenant's. The same answer as any other forgery. */
    if (rc == SP_ERR_NOT_FOUND) rc = SP_ERR_AUTH;
    SP_GUARD(rc);
    uint8_t aad[SP_VAULT_MAX_AAD];
    size_t aad_len = sp_vault_aad(v, profile_id, profile_len, field, field_len, blob, aad);
    size_t n = 0;
    uint8_t none[1];
    /* sp_cipher_run wipes what it wrote when the tag does not match */
    rc = sp_cipher_run(e->cipher, false, blob + SP_VAULT_HEADER_BYTES, SP_VAULT_NONCE_BYTES, aad, aad_len,
                       blob + SP_VAULT_BODY_OFFSET, len - SP_VAULT_BODY_OFFSET, SP_VAULT_TAG_BYTES,
                       out != NULL ? out : none, out != NULL ? cap : 0, &n);
    SP_GUARD(rc);
    *out_len = n;
    return SP_OK;
}

/* The profile as the audit log shows it: a keyed hash, so lines about one
 * profile can be linked by whoever holds the tenant's audit key, and by
 * nobody else. */
static sp_error sp_vault_profile_hash(sp_vault *v, const char *profile_id, size_t profile_len,
                                      char hex[2 * SP_VAULT_AUDIT_HASH_BYTES + 1]) {
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    sp_error rc = sp_hmac_begin(v->audit_key.mac);
    if (rc == SP_OK) rc = sp_hmac_update(v->audit_key.mac, profile_id, profile_len);
    if (rc == SP_OK) rc = sp_hmac_final(v->audit_key.mac, mac);
    if (rc == SP_OK) sp_hex_encode(mac, SP_VAULT_AUDIT_HASH_BYTES, hex);
    sp_wipe(mac, sizeof mac);
    return rc;
}

sp_error sp_vault_decrypt(sp_vault *v, const char *profile_id, const char *field, const uint8_t *blob, size_t len,
                          const char *purpose, int64_t now, uint8_t *out, size_t cap, size_t *out_len) {
    SP_ENSURE(out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    size_t profile_len = 0, field_len = 0;
    SP_ENSURE(v != NULL && (blob != NULL || len == 0) && (out != NULL || cap == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_vault_profile_id_ok(profile_id, &profile_len) && sp_vault_field_name_ok(field, &field_len) &&
                  sp_vault_purpose_ok(purpose),
              SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(v->audit != NULL, SP_ERR_BAD_CONFIG); /* no unaudited send-time decrypts */
    SP_ENSURE(!sp_vault_overlap(blob, len, out, cap), SP_ERR_INVALID_ARGUMENT);
    /* On any failure the output holds nothing, not even what the caller
     * left there: the bytes a plaintext would have taken are zero. */
    size_t plain = len >= SP_VAULT_OVERHEAD ? len - SP_VAULT_OVERHEAD : 0;
    size_t wipe = out != NULL ? (cap < plain ? cap : plain) : 0;
    sp_error rc = sp_vault_clock(&now);
    /* the key that hides profile ids in the log comes first: without it
     * there is no line, so there must be no plaintext either */
    if (rc == SP_OK) rc = sp_vault_hmac_key(v, SP_VAULT_AUDIT_CHANNEL, now, &v->audit_key);
    if (rc != SP_OK) {
        sp_wipe(out, wipe);
        return rc;
    }

    char dek[SP_KEY_VERSION_CHARS + 1];
    size_t n = 0;
    rc = sp_vault_decrypt_unaudited(v, profile_id, profile_len, field, field_len, blob, len, now, out, cap, &n, dek);
    char who[2 * SP_VAULT_AUDIT_HASH_BYTES + 1];
    sp_error arc = sp_vault_profile_hash(v, profile_id, profile_len, who);
    if (arc == SP_OK) {
        sp_audit_field fields[] = {
            {"tenant", v->tenant}, {"dek", dek[0] ? dek : "none"}, {"field", field},
            {"purpose", purpose},  {"profile", who},               {"result", sp_error_name(rc)},
        };
        arc = sp_audit_record(v->audit, "vault.decrypt", fields, SP_ARRAY_LEN(fields));
    }
    /* fail closed: a decrypt the log does not show is not handed out */
    if (rc == SP_OK && arc != SP_OK) rc = arc;
    if (rc != SP_OK) {
        sp_wipe(out, wipe);
        return rc;
    }
    *out_len = n;
    return SP_OK;
}

/* ---- decrypting a batch ---- */

typedef struct sp_vault_audit_row {
    char dek[SP_KEY_VERSION_CHARS + 1];
    char who[2 * SP_VAULT_AUDIT_HASH_BYTES + 1];
    sp_audit_field fields[6];
} sp_vault_audit_row;

struct sp_vault_batch {
    sp_vault_audit_row rows[SP_VAULT_MAX_BATCH];
    sp_audit_entry entries[SP_VAULT_MAX_BATCH];
};

static void sp_vault_wipe_items(sp_vault_decrypt_item *items, size_t n, sp_error rc) {
    for (size_t i = 0; i < n; i++) {
        sp_vault_decrypt_item *it = &items[i];
        size_t plain = it->len >= SP_VAULT_OVERHEAD ? it->len - SP_VAULT_OVERHEAD : 0;
        if (it->out != NULL) sp_wipe(it->out, it->cap < plain ? it->cap : plain);
        it->out_len = 0;
        it->rc = rc;
    }
}

static sp_error sp_vault_many_check(sp_vault *v, const sp_vault_decrypt_item *items, size_t n, const char *purpose) {
    SP_ENSURE(sp_vault_purpose_ok(purpose), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(v->audit != NULL, SP_ERR_BAD_CONFIG); /* no unaudited send-time decrypts */
    for (size_t i = 0; i < n; i++) {
        const sp_vault_decrypt_item *it = &items[i];
        SP_ENSURE((it->blob != NULL || it->len == 0) && (it->out != NULL || it->cap == 0), SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(sp_vault_profile_id_ok(it->profile_id, NULL) && sp_vault_field_name_ok(it->field, NULL),
                  SP_ERR_INVALID_ARGUMENT);
        SP_ENSURE(!sp_vault_overlap(it->blob, it->len, it->out, it->cap), SP_ERR_INVALID_ARGUMENT);
    }
    if (v->batch == NULL) v->batch = sp_calloc(1, sizeof *v->batch);
    SP_ENSURE(v->batch != NULL, SP_ERR_NO_MEMORY);
    return SP_OK;
}

sp_error sp_vault_decrypt_many(sp_vault *v, sp_vault_decrypt_item *items, size_t n, const char *purpose, int64_t now) {
    SP_ENSURE(items != NULL && n >= 1, SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(n <= SP_VAULT_MAX_BATCH, SP_ERR_TOO_LARGE);
    sp_error rc = v != NULL ? sp_vault_many_check(v, items, n, purpose) : SP_ERR_INVALID_ARGUMENT;
    /* the key that hides profile ids in the log comes first: without it
     * there are no lines, so there must be no plaintext either */
    if (rc == SP_OK) rc = sp_vault_clock(&now);
    if (rc == SP_OK) rc = sp_vault_hmac_key(v, SP_VAULT_AUDIT_CHANNEL, now, &v->audit_key);
    sp_error kms_rc = SP_OK;
    for (size_t i = 0; rc == SP_OK && i < n; i++) {
        sp_vault_decrypt_item *it = &items[i];
        sp_vault_audit_row *row = &v->batch->rows[i];
        size_t profile_len = strlen(it->profile_id), field_len = strlen(it->field);
        it->out_len = 0;
        row->dek[0] = 0;
        /* once the KMS failed, the rest of the batch is not asked of it
         * again: each try could wait out its timeout */
        it->rc = kms_rc != SP_OK ? kms_rc
                                 : sp_vault_decrypt_unaudited(v, it->profile_id, profile_len, it->field, field_len,
                                                              it->blob, it->len, now, it->out, it->cap, &it->out_len,
                                                              row->dek);
        if (sp_error_is_kms(it->rc)) kms_rc = it->rc;
        rc = sp_vault_profile_hash(v, it->profile_id, profile_len, row->who);
        row->fields[0] = (sp_audit_field){"tenant", v->tenant};
        row->fields[1] = (sp_audit_field){"dek", row->dek[0] ? row->dek : "none"};
        row->fields[2] = (sp_audit_field){"field", it->field};
        row->fields[3] = (sp_audit_field){"purpose", purpose};
        row->fields[4] = (sp_audit_field){"profile", row->who};
        row->fields[5] = (sp_audit_field){"result", sp_error_name(it->rc)};
        v->batch->entries[i] = (sp_audit_entry){"vault.decrypt", row->fields, SP_ARRAY_LEN(row->fields)};
    }
    /* fail closed: decrypts the log does not show are not handed out */
    if (rc == SP_OK) rc = sp_audit_record_many(v->audit, v->batch->entries, n);
    if (rc != SP_OK) {
        sp_vault_wipe_items(items, n, rc);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == SP_OK) continue;
        sp_error item_rc = items[i].rc;
        sp_vault_wipe_items(&items[i], 1, item_rc);
    }
    return SP_OK;
}

/* ---- blind index ---- */

sp_error sp_vault_index(sp_vault *v, const char *field, const uint8_t *value, size_t len, uint8_t *out, size_t cap,
                        size_t *out_len) {
    SP_ENSURE(out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    *out_len = 0;
    SP_ENSURE(v != NULL && out != NULL && (value != NULL || len == 0), SP_ERR_INVALID_ARGUMENT);
    SP_ENSURE(sp_vault_field_name_ok(field, NULL), SP_ERR_INVALID_ARGUMENT);
    sp_vault_pii *pii = sp_vault_find_pii(v, field);
    SP_ENSURE(pii != NULL, SP_ERR_INVALID_ARGUMENT); /* only PII fields have an index */
    SP_ENSURE(len <= SP_VAULT_MAX_VALUE, SP_ERR_TOO_LARGE);
    SP_ENSURE(cap >= v->index_bytes, SP_ERR_BUFFER_TOO_SMALL);

    /* Emails and numbers are short and normalised on the stack; text is
     * only trimmed, so it is hashed where it lies. */
    uint8_t norm[SP_VAULT_NORM_BUF];
    sp_span what;
    if (pii->kind == SP_VAULT_FIELD_TEXT) {
        what = sp_vault_trim(value, len);
        SP_ENSURE(what.len > 0, SP_ERR_INVALID_ARGUMENT);
    } else {
        sp_wbuf b = sp_wbuf_of(norm, sizeof norm);
        sp_error rc = sp_vault_normalize_into(pii->kind, v->has_country_code ? v->country_code : NULL, value, len, &b);
        if (rc != SP_OK) {
            sp_wipe(norm, sizeof norm); /* may hold part of an address or number */
            return rc == SP_ERR_BUFFER_TOO_SMALL ? SP_ERR_INVALID_ARGUMENT : rc;
        }
        what.data = norm;
        what.len = b.len;
    }
    char channel[sizeof SP_VAULT_INDEX_CHANNEL_PREFIX + SP_VAULT_MAX_FIELD];
    sp_wbuf c = sp_wbuf_of(channel, sizeof channel);
    sp_error rc = sp_wbuf_put_str(&c, SP_VAULT_INDEX_CHANNEL_PREFIX);
    if (rc == SP_OK) rc = sp_wbuf_put_str(&c, pii->name);
    if (rc == SP_OK) rc = sp_wbuf_terminate(&c);
    if (rc == SP_OK) rc = sp_vault_hmac_key(v, channel, sp_now_seconds(), &pii->index_key);
    uint8_t mac[SP_HMAC_SHA256_BYTES];
    if (rc == SP_OK) rc = sp_hmac_begin(pii->index_key.mac);
    if (rc == SP_OK) rc = sp_hmac_update(pii->index_key.mac, what.data, what.len);
    if (rc == SP_OK) rc = sp_hmac_final(pii->index_key.mac, mac);
    if (rc == SP_OK) {
        memcpy(out, mac, v->index_bytes);
        *out_len = v->index_bytes;
    }
    sp_wipe(mac, sizeof mac);
    sp_wipe(norm, sizeof norm);
    return rc;
}

/* ---- crypto-erase ---- */

/* The first vault channel of the tenant that still holds a key. */
static bool sp_vault_next_channel(sp_vault *v, char channel[SP_KEYRING_MAX_NAME + 1]) {
    size_t prefix = sizeof SP_VAULT_CHANNEL_PREFIX - 1;
    for (size_t i = 0; i < sp_keyring_count(v->kr); i++) {
        sp_keyring_entry e;
        if (sp_keyring_get(v->kr, i, &e) != SP_OK) continue;
        if (e.state == SP_KEYRING_DESTROYED || strcmp(e.tenant, v->tenant) != 0 ||
            strncmp(e.channel, SP_VAULT_CHANNEL_PREFIX, prefix) != 0)
            continue;
        memcpy(channel, e.channel, strlen(e.channel) + 1);
        return true;
    }
    return false;
}

sp_error sp_vault_erase_tenant(sp_vault *v, int64_t now) {
    SP_ENSURE(v != NULL, SP_ERR_INVALID_ARGUMENT);
    SP_GUARD(sp_vault_clock(&now));
    /* what this process holds goes first and whatever happens next: keys
     * that are being erased are not used again from here */
    sp_vault_forget_keys(v);
    uint64_t channels = 0, keys = 0;
    /* see channels other processes made too */
    sp_error rc = sp_keyring_reload(v->kr);
    /* each pass erases one channel whole; the bound only guards against a
     * keyring that keeps changing under us */
    size_t bound = sp_keyring_count(v->kr) + 1;
    char channel[SP_KEYRING_MAX_NAME + 1];
    while (rc == SP_OK && bound-- > 0 && sp_vault_next_channel(v, channel)) {
        size_t erased = 0;
        rc = sp_keyring_erase_channel(v->kr, v->tenant, channel, now, &erased);
        if (rc == SP_OK) {
            channels++;
            keys += erased;
        }
    }
    if (v->audit != NULL) {
        char nc[24], nk[24];
        sp_wbuf a = sp_wbuf_of(nc, sizeof nc), b = sp_wbuf_of(nk, sizeof nk);
        sp_error arc = sp_wbuf_put_u64(&a, channels);
        if (arc == SP_OK) arc = sp_wbuf_terminate(&a);
        if (arc == SP_OK) arc = sp_wbuf_put_u64(&b, keys);
        if (arc == SP_OK) arc = sp_wbuf_terminate(&b);
        if (arc == SP_OK) {
            sp_audit_field fields[] = {
                {"tenant", v->tenant}, {"channels", nc}, {"keys", nk}, {"result", sp_error_name(rc)}};
            arc = sp_audit_record(v->audit, "vault.erase", fields, SP_ARRAY_LEN(fields));
        }
        if (rc == SP_OK) rc = arc;
    }
    return rc;
}
