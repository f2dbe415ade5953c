#!/usr/bin/env bash
# sealpostd authentication, allow-lists and rate limits, against a running
# daemon (docs/openapi.yaml, "Authentication" and "Order of checks"). Every
# way a credential can be wrong must answer the same 401 body, byte for byte,
# so a caller cannot tell an unknown key from a wrong secret or a revoked
# credential; the reason goes to the audit log, one auth.failure line per
# refusal, and the tried secret never does. A peer outside the allow-list is
# refused with 403 before its credential is even looked at. A credential's
# token bucket refuses with 429 and Retry-After once it is empty. A client
# key can carry two secrets at once, so secrets rotate without downtime.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_auth
need_daemon "$label"
need_cmd "$label" curl openssl

want401='{"error":{"code":"unauthorized","message":"authentication failed"}}'
want403='{"error":{"code":"forbidden","message":"address not allowed"}}'
bodies="$tmp/401-bodies"
: >"$bodies"
n401=0

# expect_401 NAME: the last answer was the one 401; its body is kept.
expect_401() {
  if expect_status "$1" 401 unauthorized; then
    cat "$RESP_BODY" >>"$bodies"
    printf '\n' >>"$bodies"
  fi
  n401=$((n401 + 1))
}
# json_equal FILE TEXT: same JSON value.
json_equal() {
  "$PY" -c 'import json, sys
sys.exit(0 if json.load(open(sys.argv[1])) == json.loads(sys.argv[2]) else 1)' "$1" "$2"
}
audit_count() { grep -c "\"event\":\"$1" "$SP_AUDIT" 2>/dev/null || true; }

if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts and answers /healthz"
admin_id=$(jfield "$tmp/admin-cred.json" id)

make_tenant ta && ok "tenant ta with a credential" || bad "tenant ta with a credential"
make_tenant tb && ok "tenant tb with a credential" || bad "tenant tb with a credential"
use_tenant ta
# A profile id that does not exist: 404 means "authenticated", nothing stored.
probe=/v1/profiles/auth-probe-missing
tenant_curl GET "$probe"
expect_status "a valid tenant credential is accepted (404 for a missing profile)" 404 not_found

# ---- every authentication failure: the same 401 -------------------------------
failures_before=$(audit_count auth.failure)
wrong_secret="sps_$(randhex 20)WRONGSECRETMARKER"
sp_curl GET "$probe"
expect_401 "no credential headers"
sp_curl GET "$probe" "" -H "X-Client-Access-Key: $TENANT_KEY"
expect_401 "client key without a secret"
sp_curl GET "$probe" "" -H "X-Api-Secret: $TENANT_SECRET"
expect_401 "secret without a client key"
as_curl "$TENANT_KEY" "$wrong_secret" GET "$probe"
expect_401 "wrong secret"
sp_curl GET "$probe" "" -H "X-Client-Access-Key: $TENANT_KEY" -H "X-Api-Secret;"
expect_401 "empty secret"
as_curl "spk_$(randhex 20)" "$TENANT_SECRET" GET "$probe"
expect_401 "unknown client key with a real secret"
as_curl "${TKEYS[tb]}" "${TSECRETS[ta]}" GET "$probe"
expect_401 "tenant tb's client key with tenant ta's secret"
as_curl "$TENANT_KEY" "$(head -c 129 /dev/zero | tr '\0' 'a')" GET "$probe"
expect_401 "a 129-character secret"
as_curl "$(head -c 257 /dev/zero | tr '\0' 'k')" "$TENANT_SECRET" GET "$probe"
expect_401 "a 257-character client key"
as_curl "$TENANT_KEY" "${TENANT_SECRET}x" GET "$probe"
expect_401 "the secret with one more character"
as_curl "$TENANT_KEY" "${TENANT_SECRET%?}" GET "$probe"
expect_401 "the secret with one character less"
as_curl "$ADMIN_KEY" "$ADMIN_SECRET" GET "$probe"
expect_401 "the admin credential on the tenant API"
as_curl "$TENANT_KEY" "$TENANT_SECRET" GET /admin/v1/tenants
expect_401 "a tenant credential on the admin API"
as_curl "$TENANT_KEY" "$TENANT_SECRET" POST /admin/v1/tenants '{"id":"evil","name":"x"}'
expect_401 "a tenant credential cannot create tenants"
as_curl "$ADMIN_KEY" "$wrong_secret" GET /admin/v1/tenants
expect_401 "the admin client key with a wrong secret"
sp_curl GET /admin/v1/tenants
expect_401 "the admin API without credentials"
# The secret is checked in on_headers: a body that is not even JSON changes nothing.
as_curl "$TENANT_KEY" "$wrong_secret" POST /v1/profiles '{"not json'
expect_401 "wrong secret with a bad body: 401 before the body is read"

# Expired: expiry is in whole seconds, so 2 s of life is 1..2 s.
new_credential ta '{"expires_in":2}' && exp_key=$NEW_KEY exp_secret=$NEW_SECRET
as_curl "$exp_key" "$exp_secret" GET "$probe"
expect_status "a credential expiring in 2 s works at first" 404 not_found
sleep 2.5
as_curl "$exp_key" "$exp_secret" GET "$probe"
expect_401 "the same credential 2.5 s later (expired)"

# An admin credential expiring in 1 s.
saved_key=$ADMIN_KEY saved_secret=$ADMIN_SECRET
# sealpostd admin-credential needs the audit log, which the running daemon
# holds: stop, make it, start again.
admin_id2=none
sp_stop main
if sp_admin_credential --expires-in 3 && sp_launch main; then
  admin_id2=$(jfield "$tmp/admin-cred.json" id)
  admin_curl GET /admin/v1/tenants
  expect_status "an admin credential expiring in 3 s works at first" 200
  sleep 3.2
  admin_curl GET /admin/v1/tenants
  expect_401 "the admin credential 3 s later (expired)"
else
  bad "sealpostd admin-credential --expires-in 3"
fi
ADMIN_KEY=$saved_key ADMIN_SECRET=$saved_secret
SP_I_AKEY[main]=$saved_key
SP_I_ASECRET[main]=$saved_secret

# Revoked: immediate.
new_credential ta '{}' && rev_key=$NEW_KEY rev_secret=$NEW_SECRET rev_id=$NEW_CRED
as_curl "$rev_key" "$rev_secret" GET "$probe"
expect_status "a new credential works" 404 not_found
admin_curl DELETE "/admin/v1/tenants/ta/credentials/$rev_id"
expect_status "revoke it" 204
as_curl "$rev_key" "$rev_secret" GET "$probe"
expect_401 "the revoked credential, right after"
admin_curl GET /admin/v1/tenants/ta/credentials
if "$PY" -c 'import json, sys
c = {x["id"]: x for x in json.load(open(sys.argv[1]))["credentials"]}
ok = c[sys.argv[2]]["revoked"] not in (False, 0, None) and all(set(x) == {"id", "created", "expires", "revoked"} for x in c.values())
sys.exit(0 if ok else 1)' "$RESP_BODY" "$rev_id" 2>/dev/null; then
  ok "the credential list shows it revoked, and no hashes or secrets"
else
  bad "the credential list shows it revoked, and no hashes or secrets" "$(resp)"
fi
if grep -q -- "$rev_secret" "$RESP_BODY" || grep -q -- "$rev_key" "$RESP_BODY"; then
  bad "the credential list never shows a key or a secret"
else
  ok "the credential list never shows a key or a secret"
fi

# A disabled tenant: its credentials answer 401; enabled again, they work.
use_tenant tb
admin_curl PATCH /admin/v1/tenants/tb '{"disabled":true}'
expect_status "disable tenant tb" 200
tenant_curl GET "$probe"
expect_401 "a credential of a disabled tenant"
admin_curl PATCH /admin/v1/tenants/tb '{"disabled":false}'
expect_status "enable tenant tb again" 200
tenant_curl GET "$probe"
expect_status "its credential works again" 404 not_found

# One body for all of them, byte for byte, and it is api.md's body.
distinct=$(sort -u "$bodies" | grep -c . || true)
if [ "$distinct" -eq 1 ] && [ "$(grep -c . "$bodies")" -ge 15 ]; then
  ok "every 401 body is the same bytes ($(grep -c . "$bodies") answers)"
else
  bad "every 401 body is the same bytes" "$distinct distinct bodies: $(sort -u "$bodies" | head -c 600)"
fi
head -n 1 "$bodies" | tr -d '\n' >"$tmp/one401"
if json_equal "$tmp/one401" "$want401"; then
  ok "the 401 body is $want401"
else
  bad "the 401 body is $want401" "$(cat "$tmp/one401")"
fi

# ---- the audit log ------------------------------------------------------------------
failures_after=$(audit_count auth.failure)
new=$((failures_after - failures_before))
if [ "$new" -eq "$n401" ]; then
  ok "one auth.failure audit line per 401 ($n401)"
else
  bad "one auth.failure audit line per 401" "$n401 refusals, $new new auth.failure lines"
fi
if "$PY" - "$SP_AUDIT" <<'EOF'; then
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fails = [l for l in lines if l.get("event") == "auth.failure"]
ok = fails and all(l.get("api") in ("tenant", "admin") and l.get("peer") and l.get("reason") for l in fails)
sys.exit(0 if ok else 1)
EOF
  ok "auth.failure lines carry api, peer and reason"
else
  bad "auth.failure lines carry api, peer and reason" "$(grep auth.failure "$SP_AUDIT" | head -n 2)"
fi
if grep -q -e WRONGSECRETMARKER -e "$TENANT_SECRET" -e "$ADMIN_SECRET" -e "$rev_secret" "$SP_AUDIT" "$SP_LOG" 2>/dev/null; then
  bad "no secret, right or wrong, in the audit log or the daemon log"
else
  ok "no secret, right or wrong, in the audit log or the daemon log"
fi
# Admin actions so far: 2 tenant creations, 6 credential creations
# (ta, tb, expiring, revocable, and make_tenant's two), 1 revocation, 2
# patches, 1 credential list: one admin.* line each, with the admin
# credential's id, the tenant and the result.
if "$PY" - "$SP_AUDIT" "$admin_id" "$admin_id2" <<'EOF'; then
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
adm = [l for l in lines if str(l.get("event", "")).startswith("admin.")]
def has(l, value):
    return any(v == value for k, v in l.items() if k not in ("prev", "hash", "seq", "time", "event"))
creates = [l for l in adm if has(l, "ta") or has(l, "tb")]
ok = len(adm) >= 9 and all((has(l, sys.argv[2]) or has(l, sys.argv[3])) and "result" in l for l in adm) and len(creates) >= 7
if not ok:
    print(len(adm), adm[:3], file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
  ok "each admin action has an admin.* audit line with credential id, tenant and result"
else
  bad "each admin action has an admin.* audit line with credential id, tenant and result"
fi
if [ -x "$cli" ]; then
  if "$cli" audit verify "$SP_AUDIT" >"$out" 2>"$err"; then
    ok "the audit log's hash chain verifies (sealpost audit verify)"
  else
    bad "the audit log's hash chain verifies" "$(head -c 300 "$err")"
  fi
fi

# ---- allow-lists: 403 before credentials ---------------------------------------------
make_tenant tc ',"allow_ips":["10.9.9.9/32"]' && ok "tenant tc allowed only from 10.9.9.9" || bad "tenant tc"
use_tenant tc
tenant_curl GET "$probe"
expect_status "tenant tc's valid credential from 127.0.0.1: 403" 403 forbidden
json_equal "$RESP_BODY" "$want403" && ok "the 403 body is $want403" || bad "the 403 body" "$(resp)"
as_curl "$TENANT_KEY" "$wrong_secret" GET "$probe"
expect_status "tenant tc's client key with a wrong secret: 403 (the address is checked first)" 403 forbidden
tenant_curl POST /v1/profiles '{"not json'
expect_status "tenant tc with a bad body: 403 before the body" 403 forbidden
admin_curl PATCH /admin/v1/tenants/tc '{"allow_ips":["10.9.9.9/32","127.0.0.1/32"]}'
expect_status "allow 127.0.0.1 for tc" 200
tenant_curl GET "$probe"
expect_status "tenant tc from 127.0.0.1 once allowed" 404 not_found
admin_curl PATCH /admin/v1/tenants/tc '{"allow_ips":["::1/128"]}'
expect_status "allow only ::1 for tc" 200
tenant_curl GET "$probe"
expect_status "tenant tc from 127.0.0.1 after the change: 403" 403 forbidden

sp_curl GET /metrics
expect_status "/metrics from 127.0.0.1 (in admin_allow)" 200
grep -q '^sealpost_auth_failures_total' "$RESP_BODY" && ok "/metrics counts auth failures" \
  || bad "/metrics has sealpost_auth_failures_total" "$(head -c 300 "$RESP_BODY")"

# A second daemon whose admin allow-list excludes 127.0.0.1.
SP_CFG_ADMIN_ALLOW="10.9.9.9/32" SP_CFG_EXTRA="" sp_start locked
if [ -n "${SP_I_PID[locked]:-}" ]; then
  ok "a second sealpostd with admin_allow = 10.9.9.9/32"
  admin_curl GET /admin/v1/tenants
  expect_status "admin API with a valid admin credential from 127.0.0.1: 403" 403 forbidden
  json_equal "$RESP_BODY" "$want403" && ok "its 403 body is $want403" || bad "its 403 body" "$(resp)"
  sp_curl GET /admin/v1/tenants
  expect_status "admin API without credentials from 127.0.0.1: 403" 403 forbidden
  admin_curl POST /admin/v1/tenants '{"id":"x","name":"x"}'
  expect_status "admin POST from 127.0.0.1: 403" 403 forbidden
  sp_curl GET /metrics
  expect_status "/metrics from outside admin_allow: 403" 403 forbidden
  sp_curl GET /healthz
  expect_status "/healthz answers anyone" 200
  sp_stop locked && ok "the second sealpostd stops on SIGTERM with status 0" || bad "the second sealpostd exit status"
else
  bad "a second sealpostd with admin_allow = 10.9.9.9/32 starts"
fi
sp_use main

# ---- rate limit ------------------------------------------------------------------------
make_tenant tr ',"rate_limit":{"per_second":5,"burst":5}' && ok "tenant tr with 5/s, burst 5" || bad "tenant tr"
use_tenant tr
codes=""
first429=""
for i in $(seq 1 15); do
  tenant_curl GET "$probe"
  codes="$codes $HTTP_CODE"
  if [ "$HTTP_CODE" = 429 ] && [ -z "$first429" ]; then
    first429=$i
    cp "$RESP_BODY" "$tmp/429.body"
    cp "$RESP_HEADERS" "$tmp/429.headers"
  fi
done
if [ -n "$first429" ] && [ "$first429" -gt 5 ] && [ "$(echo "$codes" | tr ' ' '\n' | head -n 6 | grep -c 404)" -eq 5 ]; then
  ok "the burst of 5 passes, then 429 (codes:$codes)"
else
  bad "the burst of 5 passes, then 429" "codes:$codes"
fi
if [ -n "$first429" ]; then
  cp "$tmp/429.body" "$RESP_BODY"
  cp "$tmp/429.headers" "$RESP_HEADERS"
  HTTP_CODE=429
  expect_status "the 429 body" 429 rate_limited
  ra=$(resp_header Retry-After)
  case $ra in
    '' | *[!0-9]*) bad "429 has Retry-After in whole seconds" "'$ra'" ;;
    *) [ "$ra" -ge 1 ] && ok "429 has Retry-After: $ra" || bad "Retry-After >= 1" "$ra" ;;
  esac
fi
sleep 1.5
tenant_curl GET "$probe"
expect_status "after waiting, the bucket has tokens again" 404 not_found
use_tenant ta
tenant_curl GET "$probe"
expect_status "another tenant's credential is not limited by tr's bucket" 404 not_found

# ---- secret rotation: two secrets on one client key -------------------------------------
use_tenant ta
key1=$TENANT_KEY secret1=$TENANT_SECRET cred1=$TENANT_CRED
if new_credential ta "{\"client_access_key\":\"$key1\"}"; then
  secret2=$NEW_SECRET
  [ "$NEW_KEY" = "$key1" ] && ok "a second secret on the same client key" \
    || bad "a second secret on the same client key" "got a different client key"
  [ "$secret2" != "$secret1" ] && ok "the second secret differs" || bad "the second secret differs"
  as_curl "$key1" "$secret1" GET "$probe"
  expect_status "the first secret works" 404 not_found
  as_curl "$key1" "$secret2" GET "$probe"
  expect_status "the second secret works" 404 not_found
  admin_curl DELETE "/admin/v1/tenants/ta/credentials/$cred1"
  expect_status "revoke the first" 204
  as_curl "$key1" "$secret1" GET "$probe"
  expect_status "the first secret is refused" 401 unauthorized
  as_curl "$key1" "$secret2" GET "$probe"
  expect_status "the second still works" 404 not_found
else
  bad "a second secret on the same client key"
fi
admin_curl POST /admin/v1/tenants/tb/credentials "{\"client_access_key\":\"$key1\"}"
if [ "$HTTP_CODE" = 400 ] || [ "$HTTP_CODE" = 404 ]; then
  ok "a second secret for another tenant's client key is refused ($HTTP_CODE)"
else
  bad "a second secret for another tenant's client key is refused" "$(resp)"
fi

sp_stop main && ok "sealpostd stops on SIGTERM with status 0" || bad "sealpostd exit status on SIGTERM"
finish "$label"
