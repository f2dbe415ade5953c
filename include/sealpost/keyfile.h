/*
 * The sealpost key file: AES-256 provider keys, each under a UUID version,
 * one of them active. It is the interchange and test format of the CLI
 * (docs/KEYFILE.md); the server keeps its keys wrapped by the tenant's master
 * key instead. Files are written atomically with mode 0600 and their
 * contents are wiped from memory once parsed.
 */
#ifndef SEALPOST_KEYFILE_H
#define SEALPOST_KEYFILE_H

#include "sealpost/common.h"
#include "sealpost/crypto.h"
#include "sealpost/error.h"

SP_BEGIN_DECLS

#define SP_KEYFILE_MAX_BYTES (1u << 20)
#define SP_KEYFILE_MAX_KEYS 1024

typedef enum sp_key_state {
    SP_KEY_STATE_ACTIVE = 1,       /* encrypts and decrypts */
    SP_KEY_STATE_DECRYPT_ONLY = 2, /* a previous version, still accepted */
} sp_key_state;

typedef struct sp_keyfile sp_keyfile;

SP_API SP_MUST_CHECK sp_error sp_keyfile_load(const char *path, sp_keyfile **out);
/* The same from bytes in memory (what sp_keyfile_load reads). */
SP_API SP_MUST_CHECK sp_error sp_keyfile_parse(const uint8_t *data, size_t len, sp_keyfile **out);
SP_API size_t sp_keyfile_count(const sp_keyfile *file);
SP_API SP_MUST_CHECK sp_error sp_keyfile_entry(const sp_keyfile *file, size_t index, const char **version,
                                               const sp_key **key, sp_key_state *state);
SP_API void sp_keyfile_free(sp_keyfile *file);

/* Makes a new key version and makes it the active one: creates the file if
 * it does not exist, otherwise turns the previous active key decrypt-only.
 * version_out receives the new version (37 bytes with the NUL). */
SP_API SP_MUST_CHECK sp_error sp_keyfile_generate(const char *path, char version_out[37]);

/* Adds a key received from elsewhere (the key exchange) under its version,
 * creating the file if needed. With make_active, the previous active key
 * becomes decrypt-only. Adding a version the file already holds with the
 * same key changes nothing (imports can be repeated); with another key it
 * is SP_ERR_EXISTS. */
SP_API SP_MUST_CHECK sp_error sp_keyfile_add(const char *path, const char *version, const sp_key *key,
                                             bool make_active);

/* A key of a process's own (e.g. for its local state or a credential
 * pepper): HKDF-SHA256 (sp_key_derive) of the active key of the key file at
 * path under salt and info, the file generated first when there is none.
 * SP_ERR_BAD_KEYFILE when the file holds no active key. */
SP_API SP_MUST_CHECK sp_error sp_keyfile_derive_active(const char *path, const char *salt, const char *info,
                                                       sp_key **out);

SP_END_DECLS

#endif
