/*
 * The one header an application includes to use libsealpost.
 */
#ifndef SEALPOST_SEALPOST_H
#define SEALPOST_SEALPOST_H

#include "sealpost/common.h"
#include "sealpost/error.h"
#include "sealpost/crypto.h"
#include "sealpost/keyfile.h"
#include "sealpost/wire.h"
#include "sealpost/audit.h"
#include "sealpost/kms.h"
#include "sealpost/keyring.h"
#include "sealpost/keyx.h"
#include "sealpost/vault.h"
#include "sealpost/store.h"
#include "sealpost/log.h"
#include "sealpost/metrics.h"
#include "sealpost/allowlist.h"
#include "sealpost/http.h"
#include "sealpost/http_client.h"
#include "sealpost/template.h"
#include "sealpost/channel.h"
#include "sealpost/callback.h"

#endif
