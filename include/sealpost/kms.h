/*
 * Customer master keys (BYOK). A tenant's master key lives in the tenant's
 * own KMS or HSM and never leaves it; sealpost only asks it to wrap and
 * unwrap data keys. One interface, three backends:
 *
 *   local:path=/var/sealpost/master.key                       (development, single node)
 *   pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=LABEL;pin-file=PATH;key=LABEL[;mechanism=aes-kwp|aes-gcm|rsa-oaep]
 *   kmip:host=127.0.0.1;port=5696;ca=PATH;cert=PATH;key=PATH;key-id=UID
 *
 * Options every backend takes: retries=N (0..10, default 3),
 * backoff-ms=N (1..60000, default 50; full-jitter exponential),
 * breaker-failures=N (1..1000, default 5) and breaker-cooldown-ms=N
 * (1..3600000, default 30000): after that many consecutive "unavailable"
 * failures calls fail fast with SP_ERR_KMS_UNAVAILABLE until the cooldown
 * has passed. Every call is written to the audit log when one is attached.
 *
 * Wrapped keys are self-describing blobs (backend, mechanism, master key id,
 * payload; docs/KMS.md), so a blob names the master key that can open it.
 */
#ifndef SEALPOST_KMS_H
#define SEALPOST_KMS_H

#include "sealpost/audit.h"
#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_KMS_MAX_CONFIG 4096
#define SP_KMS_MAX_WRAPPED 1024 /* the largest wrapped-key blob of any backend */
#define SP_KMS_MAX_KEY_ID 128

typedef struct sp_kms sp_kms;

SP_API SP_MUST_CHECK sp_error sp_kms_open(const char *config, sp_kms **out);
SP_API void sp_kms_close(sp_kms *kms);
/* "local", "pkcs11" or "kmip". */
SP_API const char *sp_kms_backend_name(const sp_kms *kms);
/* The master key's identifier as recorded in wrapped blobs. */
SP_API const char *sp_kms_key_id(const sp_kms *kms);
/* Not owned; must outlive the sp_kms. NULL detaches. */
SP_API void sp_kms_set_audit(sp_kms *kms, sp_audit *audit);

/* A fresh data key and its wrapped form. */
SP_API SP_MUST_CHECK sp_error sp_kms_generate_data_key(sp_kms *kms, sp_key **dek, uint8_t *wrapped, size_t cap,
                                                       size_t *wrapped_len);
SP_API SP_MUST_CHECK sp_error sp_kms_wrap_key(sp_kms *kms, const sp_key *dek, uint8_t *wrapped, size_t cap,
                                              size_t *wrapped_len);
/* SP_ERR_AUTH when the blob was tampered with or belongs to another master
 * key; SP_ERR_KMS_* for the KMS's own refusals. */
SP_API SP_MUST_CHECK sp_error sp_kms_unwrap_key(sp_kms *kms, const uint8_t *wrapped, size_t wrapped_len,
                                                sp_key **dek);
/* True when the blob names this KMS's backend and master key. */
SP_API bool sp_kms_owns(const sp_kms *kms, const uint8_t *wrapped, size_t wrapped_len);

/* Counters since open, for metrics. A call refused by the open breaker
 * counts as a call and as unavailable; local wraps count too. */
typedef struct sp_kms_stats {
    uint64_t calls;
    uint64_t failures;
    uint64_t unavailable; /* the KMS did not answer, or the breaker was open */
    uint64_t denied;      /* access denied or key disabled (e.g. revoked) */
    bool breaker_open;
} sp_kms_stats;
SP_API void sp_kms_get_stats(sp_kms *kms, sp_kms_stats *out);

/* Reaches the KMS and tries what sealpost needs (wrap, unwrap); writes a
 * human-readable report, one finding per line. Returns the first failure. */
SP_API SP_MUST_CHECK sp_error sp_kms_check(sp_kms *kms, char *report, size_t cap);

SP_END_DECLS

#endif
