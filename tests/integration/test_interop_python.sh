#!/usr/bin/env bash
# Interop test (ctest integration/test_interop_python): runs interop.py, which
# checks the sealpost CLI against independent Python implementations
# (python3-cryptography, python3-jwcrypto, hmac/json) in both directions:
# raw AES modes, the compat and JWE wire profiles, tamper rejection without an
# error oracle, key rotation and the whsec_ signing secret.
# Env: SP_CLI (sealpost binary), SP_SOURCE_DIR, SP_BUILD_DIR (set by ctest).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
# Debian's python3-cryptography/python3-jwcrypto live under /usr/bin/python3,
# not under whatever python3 comes first on PATH.
py=/usr/bin/python3

need_cli interop-python
if ! "$py" -c 'import cryptography, jwcrypto' 2>/dev/null; then
  bad "$py lacks python3-cryptography/python3-jwcrypto (run scripts/bootstrap)"
  finish interop-python || exit 1
fi

# interop.py prints the final "interop-python: N passed, M failed" line and
# exits non-zero if anything failed; set -e propagates that.
"$py" -B "$here/interop.py" "$cli" "$tmp"
