/*
 * sealpost error codes.
 *
 * One enum for the whole library, append-only: a number, once released, keeps
 * its meaning forever so that logs, metrics and callers in other languages can
 * rely on it. Every authentication or decryption failure, whatever its cause
 * (bad tag, bad padding, bad signature, wrong key), is SP_ERR_AUTH: callers
 * cannot tell the causes apart and so cannot leak them to an attacker.
 */
#ifndef SEALPOST_ERROR_H
#define SEALPOST_ERROR_H

#include "sealpost/common.h"

SP_BEGIN_DECLS

typedef enum sp_error {
    SP_OK = 0,
    SP_ERR_INVALID_ARGUMENT = 1,  /* a caller passed something the API forbids */
    SP_ERR_NO_MEMORY = 2,
    SP_ERR_CRYPTO_BACKEND = 3,    /* OpenSSL failed where it should not */
    SP_ERR_RANDOM = 4,            /* the OS CSPRNG did not answer */
    SP_ERR_AUTH = 5,              /* any authentication or decryption failure */
    SP_ERR_BUFFER_TOO_SMALL = 6,
    SP_ERR_BAD_BASE64 = 7,
    SP_ERR_BAD_IV_LENGTH = 8,
    SP_ERR_BAD_KEY_LENGTH = 9,
    SP_ERR_UNKNOWN_KEY_VERSION = 10,
    SP_ERR_UNKNOWN_ALGORITHM = 11,
    SP_ERR_TOO_LARGE = 12,
    SP_ERR_DUPLICATE_HEADER = 13,
    SP_ERR_MISSING_HEADER = 14,
    SP_ERR_BAD_JSON = 15,
    SP_ERR_BAD_UUID = 16,
    SP_ERR_STALE_TIMESTAMP = 17,
    SP_ERR_BAD_TIMESTAMP = 18,
    SP_ERR_BAD_SIGNATURE_HEADER = 19,
    SP_ERR_BAD_JWE = 20,
    SP_ERR_IO = 21,
    SP_ERR_BAD_KEYFILE = 22,
    SP_ERR_SECURE_MEMORY = 23,    /* locked memory could not be set up */
    SP_ERR_BAD_HEADER_VALUE = 24,
    SP_ERR_BAD_CONTENT_TYPE = 25,
    SP_ERR_NOT_INITIALIZED = 26,
    SP_ERR_EXISTS = 27,
    SP_ERR_BAD_MESSAGE_ID = 28,
    SP_ERR_INSECURE_PERMISSIONS = 29, /* a key file others can read or write */
    SP_ERR_KMS_UNAVAILABLE = 30,      /* the KMS did not answer: retry later */
    SP_ERR_KMS_ACCESS_DENIED = 31,    /* the KMS refused: credentials, policy or revocation */
    SP_ERR_KMS_KEY_DISABLED = 32,     /* the master key exists but may not be used */
    SP_ERR_BAD_CONFIG = 33,
    SP_ERR_AUDIT_BROKEN = 34,         /* the audit log's hash chain does not hold */
    SP_ERR_ILLEGAL_TRANSITION = 35,   /* a key state change the life cycle forbids */
    SP_ERR_NOT_FOUND = 36,
    SP_ERR_BAD_PEM = 37,              /* a public or private key that cannot be read */
    SP_ERR_KMS_PROTOCOL = 38,         /* the KMS answered something malformed */
    SP_ERR_KEY_RETIRED = 39,          /* the key version is retired or destroyed */
    SP_ERR_STORE = 40,                /* the database failed (I/O, connection, constraint) */
    SP_ERR_CONFLICT = 41,             /* a concurrent change won: retry the whole transaction */
    SP_ERR_SCHEMA = 42,               /* the database schema is newer than this build */
    SP_ERR_UNAVAILABLE = 43,          /* the service is shutting down or overloaded */
    SP_ERR_TEMPLATE = 44,             /* a template that does not parse, or a placeholder with no value */
    SP_ERR_PROVIDER_REJECTED = 45,    /* the provider refused the message for good (4xx other than 408/429) */
    SP_ERR_PROVIDER_UNAVAILABLE = 46, /* the provider failed or asked to wait (5xx, 408, 429): retry later */
    SP_ERR_NETWORK = 47,              /* no connection, TLS failure or timeout on the way to a peer: retry later */
    SP_ERR_BAD_CALLBACK = 48,         /* a callback body in no known format, or breaking one's rules */
    /* append new codes here; never renumber */
    SP_ERR__COUNT
} sp_error;

/* A short, static, English description. Never NULL; unknown codes get a
 * generic text. Safe to log: it never contains caller data. */
SP_API const char *sp_strerror(sp_error err);

/* The stable symbolic name, e.g. "SP_ERR_AUTH", for logs and JSON replies. */
SP_API const char *sp_error_name(sp_error err);

/* A failure of a KMS (unavailable, access denied, key disabled, a malformed
 * answer): what a caller waits out or reports as the KMS's, not its own. */
SP_API bool sp_error_is_kms(sp_error err);

SP_END_DECLS

#endif
