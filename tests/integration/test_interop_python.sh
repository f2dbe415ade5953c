#!/usr/bin/env bash
# Interop test (ctest integration/test_interop_python): runs interop.py, which
# checks the sealpost CLI against independent Python implementations
# (python3-cryptography, python3-jwcrypto, hmac/json) in both directions:
# raw AES modes, the compat and JWE wire profiles, tamper rejection without an
# error oracle, key rotation and the whsec_ signing secret.
# Env: SP_CLI (sealpost binary), SP_SOURCE_DIR, SP_BUILD_DIR (set by ctest).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${SP_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
cli="${SP_CLI:-${SP_BUILD_DIR:-$src/build}/sealpost}"
# Debian's python3-cryptography/python3-jwcrypto live under /usr/bin/python3,
# not under whatever python3 comes first on PATH.
py=/usr/bin/python3

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$cli" ]; then
  echo "FAIL   sealpost binary not found at $cli"
  echo "interop-python: 0 passed, 1 failed"
  exit 1
fi
if ! "$py" -c 'import cryptography, jwcrypto' 2>/dev/null; then
  echo "FAIL   $py lacks python3-cryptography/python3-jwcrypto (run scripts/bootstrap)"
  echo "interop-python: 0 passed, 1 failed"
  exit 1
fi

# interop.py prints the final "interop-python: N passed, M failed" line and
# exits non-zero if anything failed; set -e propagates that.
"$py" -B "$here/interop.py" "$cli" "$tmp"
