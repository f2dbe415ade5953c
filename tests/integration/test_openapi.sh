#!/usr/bin/env bash
# docs/openapi.yaml against a running sealpostd: openapi_check.py sends every
# documented (path, method) without credentials, with the other API's
# credential, with the documented example, with a body that is not JSON, with
# the wrong content type and for a missing resource, and validates each
# answer's status, content type and body against what the document says for
# that operation; undocumented methods must answer 405 with Allow, unknown
# paths 404. The document itself is checked first (keywords the validator
# implements, examples that validate, errors built on the one Error schema).
# The sending API's examples really go out: the channel example is pointed
# at provider_sink.py (a provider written from docs/PROTOCOL.md) on a free
# loopback port, which is given the channel's key through the key exchange
# once the checker has saved the channel, so the test send is delivered;
# the same key seals the callbacks the checker then posts as that provider.
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

start_sink && ok "provider sink starts" || bad "provider sink starts"

if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts"
make_tenant oa-main && ok "a tenant with a credential" || bad "a tenant with a credential"

# The key exchange of test_sealpostd_send.sh for the channel example's provider key
# (its encryption.key), run by the checker once it has saved the channel.
key_name=$("$PY" -c 'import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
print(d["paths"]["/v1/channels/{id}"]["put"]["requestBody"]["content"]["application/json"]["example"]["encryption"]["key"])' \
  "$src/docs/openapi.yaml") || bad "the channel example names its provider key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/provider.pem" 2>/dev/null
openssl pkey -in "$tmp/provider.pem" -pubout -out "$tmp/provider.pub" 2>/dev/null
key_exchange="'$cli' keys export --store 'sqlite:$SP_DIR/sealpost.db' \
  --kms 'local:path=$SP_DIR/kms/$TENANT_ID.key;create=1' --tenant '$TENANT_ID' --channel '$key_name' \
  --recipient '$tmp/provider.pub' >'$tmp/keys.jwe' &&
  '$cli' keys import --keys '$tmp/provider-keys.json' --private-key '$tmp/provider.pem' <'$tmp/keys.jwe'"

"$PY" "$here/openapi_check.py" --spec "$src/docs/openapi.yaml" --url "$SP_URL" --cacert "$SP_CA" \
  --admin-key "$ADMIN_KEY" --admin-secret "$ADMIN_SECRET" \
  --tenant "$TENANT_ID" --tenant-key "$TENANT_KEY" --tenant-secret "$TENANT_SECRET" \
  --sink-url "$SINK/send" --after-setup "$key_exchange" --expect-delivered \
  --provider-keys "$tmp/provider-keys.json" >"$out" 2>"$err"
rc=$?
cat "$out"
pass=$((pass + $(grep -c '^ok' "$out")))
fail=$((fail + $(grep -c '^FAIL' "$out")))
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$out"; then
  bad "openapi_check.py exited $rc" "$(tail -c 800 "$err")"
fi

sp_stop main && ok "sealpostd stops on SIGTERM with status 0" || bad "sealpostd exit status on SIGTERM"
finish "$label"
