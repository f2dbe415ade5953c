#!/usr/bin/env bash
# `make install` must give a usable library: headers, static and shared
# libraries and a pkg-config file that an outside program can build against
# with nothing but pkg-config, and the shared library must export the public
# API and nothing from the internal layers.
set -euo pipefail
build=${SP_BUILD_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() { if "$@"; then passed=$((passed + 1)); else echo "FAIL: $*" >&2; failed=$((failed + 1)); fi; }

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
# A sanitizer build's library needs its runtime in whatever links it.
cc=(cc)
if grep -q '^SP_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  cc=(clang-14 -fsanitize=address,undefined)
fi
libdir=$(find "$tmp/prefix" -name sealpost.pc -printf '%h\n' | head -n1)
check test -n "$libdir"
export PKG_CONFIG_PATH="$libdir"
sed -i "s|^prefix=.*|prefix=$tmp/prefix|" "$libdir/sealpost.pc"

cat > "$tmp/app.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <sealpost/sealpost.h>
int main(void) {
    sp_wire *w = NULL; sp_key *k = NULL; char version[37];
    if (sp_init() || sp_wire_new(&w) || sp_key_generate(&k) || sp_uuid_v4(version) ||
        sp_wire_add_key(w, version, k, true)) return 1;
    const char *msg = "hello from outside";
    uint8_t body[512], out[512]; size_t out_len = 0; sp_sealed sealed;
    if (sp_seal(w, NULL, (const uint8_t *)msg, strlen(msg), body, sizeof body, &sealed)) return 2;
    if (sp_open(w, sealed.headers, sealed.n_headers, body, sealed.body_len, 0, out, sizeof out, &out_len, NULL)) return 3;
    if (out_len != strlen(msg) || memcmp(out, msg, out_len) != 0) return 4;
    body[sealed.body_len / 2] ^= 1;
    if (sp_open(w, sealed.headers, sealed.n_headers, body, sealed.body_len, 0, out, sizeof out, &out_len, NULL) != SP_ERR_AUTH) return 5;
    puts(sp_strerror(SP_ERR_AUTH));
    sp_key_free(k); sp_wire_free(w);
    return 0;
}
C
# shared
check "${cc[@]}" -std=c11 -Wall -Werror -o "$tmp/app" "$tmp/app.c" $(pkg-config --cflags --libs sealpost)
check env LD_LIBRARY_PATH="$(pkg-config --variable=libdir sealpost)" "$tmp/app"
# static
check "${cc[@]}" -std=c11 -Wall -Werror -o "$tmp/app-static" "$tmp/app.c" $(pkg-config --cflags sealpost) \
  "$(pkg-config --variable=libdir sealpost)/libsealpost.a" $(pkg-config --libs-only-l --static libssl libcrypto jansson) -lpthread -ldl
check "$tmp/app-static"

# exported symbols: only sp_ names, and none of the internal layers
so=$(ls "$(pkg-config --variable=libdir sealpost)"/libsealpost.so.* | head -n1)
exports=$(nm -D --defined-only "$so" | awk '$2 == "T" {print $3}')
check test -n "$exports"
check bash -c '! grep -v "^sp_" <<<"$1"' _ "$exports"
for internal in sp_malloc sp_b64_decode sp_b64_encode sp_cipher_run sp_hmac_new sp_sig_header_parse sp_seal_with_iv; do
  check bash -c '! grep -qx "$1" <<<"$2"' _ "$internal" "$exports"
done
# the keyed hashes, key derivation and base64 that applications use
for public in sp_hmac_sha256 sp_key_hmac_sha256 sp_hkdf_sha256 sp_key_derive sp_base64_encode sp_base64url_encode; do
  check bash -c 'grep -qx "$1" <<<"$2"' _ "$public" "$exports"
done
check test -f "$tmp/prefix/include/sealpost/sealpost.h"
check test -x "$tmp/prefix/bin/sealpost"

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
