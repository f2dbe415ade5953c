/*
 * sp_strerror and sp_error_name: one table, indexed by the stable error
 * number, so the text of a code can never drift from its name.
 */
#include "core/sp_core.h"

typedef struct {
    const char *name;
    const char *text;
} sp_error_entry;

static const sp_error_entry sp_errors[SP_ERR__COUNT] = {
    [SP_OK] = {"SP_OK", "success"},
    [SP_ERR_INVALID_ARGUMENT] = {"SP_ERR_INVALID_ARGUMENT", "invalid argument"},
    [SP_ERR_NO_MEMORY] = {"SP_ERR_NO_MEMORY", "out of memory"},
    [SP_ERR_CRYPTO_BACKEND] = {"SP_ERR_CRYPTO_BACKEND", "cryptographic backend failure"},
    [SP_ERR_RANDOM] = {"SP_ERR_RANDOM", "random number generator failure"},
    [SP_ERR_AUTH] = {"SP_ERR_AUTH", "authentication or decryption failed"},
    [SP_ERR_BUFFER_TOO_SMALL] = {"SP_ERR_BUFFER_TOO_SMALL", "output buffer too small"},
    [SP_ERR_BAD_BASE64] = {"SP_ERR_BAD_BASE64", "malformed base64"},
    [SP_ERR_BAD_IV_LENGTH] = {"SP_ERR_BAD_IV_LENGTH", "wrong IV length for the algorithm"},
    [SP_ERR_BAD_KEY_LENGTH] = {"SP_ERR_BAD_KEY_LENGTH", "wrong key length"},
    [SP_ERR_UNKNOWN_KEY_VERSION] = {"SP_ERR_UNKNOWN_KEY_VERSION", "unknown key version"},
    [SP_ERR_UNKNOWN_ALGORITHM] = {"SP_ERR_UNKNOWN_ALGORITHM", "unknown or unsupported algorithm"},
    [SP_ERR_TOO_LARGE] = {"SP_ERR_TOO_LARGE", "input exceeds its size limit"},
    [SP_ERR_DUPLICATE_HEADER] = {"SP_ERR_DUPLICATE_HEADER", "header given more than once"},
    [SP_ERR_MISSING_HEADER] = {"SP_ERR_MISSING_HEADER", "required header missing"},
    [SP_ERR_BAD_JSON] = {"SP_ERR_BAD_JSON", "malformed or unexpected JSON"},
    [SP_ERR_BAD_UUID] = {"SP_ERR_BAD_UUID", "key version is not a lowercase UUID"},
    [SP_ERR_STALE_TIMESTAMP] = {"SP_ERR_STALE_TIMESTAMP", "timestamp outside the accepted window"},
    [SP_ERR_BAD_TIMESTAMP] = {"SP_ERR_BAD_TIMESTAMP", "malformed timestamp"},
    [SP_ERR_BAD_SIGNATURE_HEADER] = {"SP_ERR_BAD_SIGNATURE_HEADER", "malformed webhook-signature header"},
    [SP_ERR_BAD_JWE] = {"SP_ERR_BAD_JWE", "malformed or unsupported JWE"},
    [SP_ERR_IO] = {"SP_ERR_IO", "input/output error"},
    [SP_ERR_BAD_KEYFILE] = {"SP_ERR_BAD_KEYFILE", "malformed key file"},
    [SP_ERR_SECURE_MEMORY] = {"SP_ERR_SECURE_MEMORY", "locked memory unavailable"},
    [SP_ERR_BAD_HEADER_VALUE] = {"SP_ERR_BAD_HEADER_VALUE", "malformed header value"},
    [SP_ERR_BAD_CONTENT_TYPE] = {"SP_ERR_BAD_CONTENT_TYPE", "unsupported content type"},
    [SP_ERR_NOT_INITIALIZED] = {"SP_ERR_NOT_INITIALIZED", "library not initialised"},
    [SP_ERR_EXISTS] = {"SP_ERR_EXISTS", "already exists"},
    [SP_ERR_BAD_MESSAGE_ID] = {"SP_ERR_BAD_MESSAGE_ID", "malformed webhook-id"},
    [SP_ERR_INSECURE_PERMISSIONS] = {"SP_ERR_INSECURE_PERMISSIONS", "key file is accessible to other users"},
    [SP_ERR_KMS_UNAVAILABLE] = {"SP_ERR_KMS_UNAVAILABLE", "key management service unavailable (retryable)"},
    [SP_ERR_KMS_ACCESS_DENIED] = {"SP_ERR_KMS_ACCESS_DENIED", "key management service denied access or the key is revoked"},
    [SP_ERR_KMS_KEY_DISABLED] = {"SP_ERR_KMS_KEY_DISABLED", "master key is disabled"},
    [SP_ERR_BAD_CONFIG] = {"SP_ERR_BAD_CONFIG", "invalid configuration"},
    [SP_ERR_AUDIT_BROKEN] = {"SP_ERR_AUDIT_BROKEN", "audit log hash chain is broken"},
    [SP_ERR_ILLEGAL_TRANSITION] = {"SP_ERR_ILLEGAL_TRANSITION", "key state change not allowed"},
    [SP_ERR_NOT_FOUND] = {"SP_ERR_NOT_FOUND", "not found"},
    [SP_ERR_BAD_PEM] = {"SP_ERR_BAD_PEM", "unreadable or unsuitable public/private key"},
    [SP_ERR_KMS_PROTOCOL] = {"SP_ERR_KMS_PROTOCOL", "malformed answer from the key management service"},
    [SP_ERR_KEY_RETIRED] = {"SP_ERR_KEY_RETIRED", "key version is retired"},
    [SP_ERR_STORE] = {"SP_ERR_STORE", "database operation failed"},
    [SP_ERR_CONFLICT] = {"SP_ERR_CONFLICT", "concurrent change; retry"},
    [SP_ERR_SCHEMA] = {"SP_ERR_SCHEMA", "database schema is newer than this build"},
    [SP_ERR_UNAVAILABLE] = {"SP_ERR_UNAVAILABLE", "service unavailable"},
    [SP_ERR_TEMPLATE] = {"SP_ERR_TEMPLATE", "template error"},
    [SP_ERR_PROVIDER_REJECTED] = {"SP_ERR_PROVIDER_REJECTED", "the provider rejected the message"},
    [SP_ERR_PROVIDER_UNAVAILABLE] = {"SP_ERR_PROVIDER_UNAVAILABLE", "the provider is unavailable"},
    [SP_ERR_NETWORK] = {"SP_ERR_NETWORK", "network error"},
    [SP_ERR_BAD_CALLBACK] = {"SP_ERR_BAD_CALLBACK", "malformed callback"},
};

static const sp_error_entry *sp_error_lookup(sp_error err) {
    if ((unsigned)err >= (unsigned)SP_ERR__COUNT || sp_errors[err].name == NULL) return NULL;
    return &sp_errors[err];
}

const char *sp_strerror(sp_error err) {
    const sp_error_entry *e = sp_error_lookup(err);
    return e ? e->text : "unknown error";
}

bool sp_error_is_kms(sp_error err) {
    return err == SP_ERR_KMS_UNAVAILABLE || err == SP_ERR_KMS_ACCESS_DENIED || err == SP_ERR_KMS_KEY_DISABLED ||
           err == SP_ERR_KMS_PROTOCOL;
}

const char *sp_error_name(sp_error err) {
    const sp_error_entry *e = sp_error_lookup(err);
    return e ? e->name : "SP_ERR_UNKNOWN";
}
