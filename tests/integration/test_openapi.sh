#!/usr/bin/env bash
# docs/openapi.yaml against a running sealpostd: openapi_check.py sends every
# documented (path, method) without credentials, with the other API's
# credential, with the documented example, with a body that is not JSON, with
# the wrong content type and for a missing resource, and validates each
# answer's status, content type and body against what the document says for
# that operation; undocumented methods must answer 405 with Allow, unknown
# paths 404. The document itself is checked first (keywords the validator
# implements, examples that validate, errors built on the one Error schema).
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_openapi
need_daemon "$label"
need_cmd "$label" curl openssl
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  bad "python3-yaml is not installed (scripts/bootstrap installs it)"
  finish "$label"
  exit 1
fi

if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts"
make_tenant oa-main && ok "a tenant with a credential" || bad "a tenant with a credential"

"$PY" "$here/openapi_check.py" --spec "$src/docs/openapi.yaml" --url "$SP_URL" --cacert "$SP_CA" \
  --admin-key "$ADMIN_KEY" --admin-secret "$ADMIN_SECRET" \
  --tenant "$TENANT_ID" --tenant-key "$TENANT_KEY" --tenant-secret "$TENANT_SECRET" >"$out" 2>"$err"
rc=$?
cat "$out"
pass=$((pass + $(grep -c '^ok' "$out")))
fail=$((fail + $(grep -c '^FAIL' "$out")))
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$out"; then
  bad "openapi_check.py exited $rc" "$(tail -c 800 "$err")"
fi

sp_stop main && ok "sealpostd stops on SIGTERM with status 0" || bad "sealpostd exit status on SIGTERM"
finish "$label"
