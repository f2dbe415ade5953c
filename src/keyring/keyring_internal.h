/*
 * What the keyring lends the rest of the library and no app: its document
 * for one tenant, so the store can move a keyring file into per-tenant
 * database rows (sp_store_import_keyring_file) without a second parser or
 * writer of the format.
 */
#ifndef SP_KEYRING_INTERNAL_H
#define SP_KEYRING_INTERNAL_H

#include "core/sp_core.h"
#include "sealpost/keyring.h"

/* The keyring document holding only `tenant`'s keys and channel minimums,
 * in the format sp_keyring_open_storage reads: NUL-terminated, *len + 1
 * bytes, the caller's to sp_free_wiped. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_keyring_serialize_tenant(const sp_keyring *kr, const char *tenant,
                                                               uint8_t **doc, size_t *len);

#endif
