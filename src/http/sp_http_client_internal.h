/*
 * What the outbound client (client.c) and the OAuth 2.0 token cache
 * (oauth2.c) share: the one rule for which URLs may be fetched at all, the
 * TLS settings every easy handle gets, libcurl's process-wide set-up, and
 * the monotonic clock the token cache's deadlines are read on.
 *
 * Internal: apps use include/sealpost/http_client.h.
 */
#ifndef SP_HTTP_CLIENT_INTERNAL_H
#define SP_HTTP_CLIENT_INTERNAL_H

#include <curl/curl.h>

#include "core/sp_core.h"
#include "sealpost/http_client.h"

/* https://, or http:// to 127.0.0.0/8, [::1] or localhost; no user info,
 * no bytes that are spaces or controls, at most SP_HTTP_CLIENT_MAX_URL
 * bytes (SP_ERR_TOO_LARGE), otherwise SP_ERR_INVALID_ARGUMENT. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_http_url_check(const char *url);

/* curl_global_init once per process (libcurl >= 7.84 makes it safe from
 * any thread); SP_ERR_NO_MEMORY when it fails. */
SP_INTERNAL SP_MUST_CHECK sp_error sp_http_curl_init(void);

/* TLS >= 1.2, peer and host verified, ca_file (NULL: the system's), the
 * partial-chain trust allow_self_signed asks for, http/https only, no
 * proxy from the environment, no signals; SP_ERR_INVALID_ARGUMENT when
 * libcurl refuses an option (a CA file it cannot use is only found out at
 * connect time). */
SP_INTERNAL SP_MUST_CHECK sp_error sp_http_easy_base(CURL *easy, const char *ca_file, bool allow_self_signed);

/* Milliseconds on CLOCK_MONOTONIC. */
SP_INTERNAL int64_t sp_http_now_ms(void);

#endif
