#!/usr/bin/env bash
# sealpostd ingestion, against a running daemon: profiles (one, a batch of
# the most allowed, one too many), upserts by id and by the blind index of an
# email or a phone whatever its spelling, attribute merges, masked reads that
# never show PII in the clear, erasure, events with duplicate ids, and the
# bad-input matrix of every endpoint with a body (not JSON, trailing data,
# duplicate keys, wrong types, missing members, over the body limit, wrong
# content type) plus unknown routes and wrong methods. A batch with one bad
# item stores nothing, and the error names the item.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_ingest
need_daemon "$label"
need_cmd "$label" curl openssl

if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts"
make_tenant ing ',"default_country_code":"1"' && ok "tenant ing" || bad "tenant ing"

# message_has NAME TEXT: the last error's message contains TEXT.
message_has() {
  local m
  m=$(pyj 'd["error"]["message"]')
  case $m in
    *"$2"*) ok "$1" ;;
    *) bad "$1" "message '$m' lacks '$2'" ;;
  esac
}
# exists ID: 200 for GET /v1/profiles/ID, else 404 (anything else: a failure).
profile_status() { tenant_curl GET "/v1/profiles/$1"; printf '%s' "$HTTP_CODE"; }

# ---- one profile, masked read ----------------------------------------------------
tenant_curl POST /v1/profiles '{"id":"u1","attributes":{"email":"Alice.Smith@Example.com","phone":"+14155550101","plan":"pro","age":30,"vip":true}}'
expect_status "one profile with an id" 200
check "created 1, result u1 created" 'd == {"created":1,"updated":0,"results":[{"id":"u1","status":"created"}]}'
tenant_curl GET /v1/profiles/u1
expect_status "GET the profile" 200
check "non-PII attributes as given" 'd["attributes"]["plan"] == "pro" and d["attributes"]["age"] == 30 and d["attributes"]["vip"] is True'
check "email masked as A***@example.com" '__import__("re").fullmatch(r"A\*\*\*@example\.com", d["attributes"]["email"], __import__("re").I)'
check "phone masked: first 2 and last 2 kept, stars between" '__import__("re").fullmatch(r"\+1\*{8}01", d["attributes"]["phone"])'
check "created and updated are unix times" 'd["created"] > 1600000000 and d["updated"] >= d["created"]'
if grep -qi -e 'alice.smith' -e '4155550101' -e 'lice' "$RESP_BODY"; then
  bad "the read never shows PII in the clear" "$(resp)"
else
  ok "the read never shows PII in the clear"
fi

# ---- upsert by id: merge --------------------------------------------------------------
tenant_curl POST /v1/profiles '{"id":"u1","attributes":{"plan":"enterprise","city":"Paris","phone":"+14155550102"}}'
expect_status "upsert u1 by id" 200
check "updated 1" 'd == {"created":0,"updated":1,"results":[{"id":"u1","status":"updated"}]}'
tenant_curl GET /v1/profiles/u1
check "merged: given keys replaced, others kept" 'd["attributes"]["plan"] == "enterprise" and d["attributes"]["city"] == "Paris" and d["attributes"]["age"] == 30 and d["attributes"]["email"].endswith("@example.com")'
check "the given PII field replaced (phone now ends 02)" 'd["attributes"]["phone"].endswith("02")'
tenant_curl POST /v1/profiles '{"id":"u1","attributes":{"city":null}}'
expect_status "a null attribute" 200
tenant_curl GET /v1/profiles/u1
check "null is stored as null" '"city" in d["attributes"] and d["attributes"]["city"] is None'

# ---- upsert by blind index -----------------------------------------------------------
tenant_curl POST /v1/profiles '{"attributes":{"email":"bob.jones@example.org","n":1}}'
expect_status "a profile without id, by email" 200
bob=$(pyj 'd["results"][0]["id"]')
check "created with a fresh UUID" '__import__("re").fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", d["results"][0]["id"]) and d["created"] == 1'
tenant_curl POST /v1/profiles '{"attributes":{"email":"  BOB.Jones@EXAMPLE.org ","n":2}}'
expect_status "the same email, other case and spaces" 200
check "updates the same profile" "d['updated'] == 1 and d['results'][0] == {'id': '$bob', 'status': 'updated'}"
tenant_curl GET "/v1/profiles/$bob"
check "its attribute merged (n = 2)" 'd["attributes"]["n"] == 2'
tenant_curl POST /v1/profiles '{"attributes":{"phone":"+1 415 555 0199","src":"a"}}'
expect_status "a profile without id, by phone" 200
carol=$(pyj 'd["results"][0]["id"]')
tenant_curl POST /v1/profiles '{"attributes":{"phone":"(415) 555-0199","src":"b"}}'
expect_status "the same phone in national form (default country code 1)" 200
check "updates the same profile" "d['results'][0] == {'id': '$carol', 'status': 'updated'}"
tenant_curl POST /v1/profiles '{"attributes":{"plan":"free"}}'
expect_status "no id and no identity field" 400 bad_request

# ---- batches ---------------------------------------------------------------------------
"$PY" - "$tmp" <<'EOF'
import json, sys
d = sys.argv[1]
def batch(n, prefix):
    return {"profiles": [{"id": "%s-%d" % (prefix, i),
                          "attributes": {"email": "%s.%d@batch.example" % (prefix, i),
                                         "phone": "+1415%07d" % i, "i": i}} for i in range(n)]}
json.dump(batch(1000, "b1000"), open(d + "/b1000.json", "w"))
json.dump(batch(1001, "b1001"), open(d + "/b1001.json", "w"))
b = batch(3, "atomic")
b["profiles"][2]["attributes"]["email"] = "not-an-email-ATOMICMARK"
json.dump(b, open(d + "/atomic-email.json", "w"))
b = batch(3, "atomicp")
b["profiles"][1]["attributes"]["phone"] = "12"
json.dump(b, open(d + "/atomic-phone.json", "w"))
# 4 MiB + 1 byte: one over the default max_body.
pad = 4 * 1024 * 1024 + 1 - len('{"id":"big","attributes":{"x":""}}')
open(d + "/big.json", "w").write('{"id":"big","attributes":{"x":"%s"}}' % ("a" * pad))
open(d + "/attrs101.json", "w").write(json.dumps({"id": "a101", "attributes": {"a%d" % i: i for i in range(101)}}))
open(d + "/attrs100.json", "w").write(json.dumps({"id": "a100", "attributes": {"a%d" % i: i for i in range(100)}}))
EOF
tenant_curl POST /v1/profiles "@$tmp/b1000.json"
expect_status "a batch of 1000" 200
check "1000 created, in input order" 'd["created"] == 1000 and [r["id"] for r in d["results"]] == ["b1000-%d" % i for i in range(1000)]'
[ "$(profile_status b1000-999)" = 200 ] && ok "the last of the 1000 is stored" || bad "the last of the 1000 is stored" "$(resp)"
tenant_curl POST /v1/profiles "@$tmp/b1001.json"
expect_status "a batch of 1001" 400 batch_too_large
[ "$(profile_status b1001-0)" = 404 ] && ok "nothing of the 1001 is stored" || bad "nothing of the 1001 is stored" "$(resp)"
tenant_curl POST /v1/profiles '{"profiles":[]}'
expect_status "an empty batch" 400 bad_request

tenant_curl POST /v1/profiles "@$tmp/atomic-email.json"
expect_status "a batch whose item 2 has an invalid email" 400 bad_request
message_has "the message names profiles[2]" "profiles[2]"
message_has "the message names the attribute" "email"
if grep -q ATOMICMARK "$RESP_BODY"; then bad "the error never echoes the value" "$(resp)"; else ok "the error never echoes the value"; fi
stored=0
for i in 0 1 2; do [ "$(profile_status "atomic-$i")" = 404 ] || stored=$((stored + 1)); done
[ "$stored" -eq 0 ] && ok "the failed batch stored nothing (0 of 3)" || bad "the failed batch stored nothing" "$stored of 3 stored"
tenant_curl POST /v1/profiles "@$tmp/atomic-phone.json"
expect_status "a batch whose item 1 has an invalid phone" 400 bad_request
message_has "the message names profiles[1]" "profiles[1]"
stored=0
for i in 0 1 2; do [ "$(profile_status "atomicp-$i")" = 404 ] || stored=$((stored + 1)); done
[ "$stored" -eq 0 ] && ok "the failed batch stored nothing (0 of 3)" || bad "the failed batch stored nothing" "$stored of 3 stored"
tenant_curl POST /v1/profiles '{"attributes":{"email":"not an email"}}'
expect_status "a single profile with an invalid email" 400 bad_request

# ---- attribute rules --------------------------------------------------------------------
tenant_curl POST /v1/profiles '{"id":"r1","attributes":{"tags":["a","b"]}}'
expect_status "an array attribute" 400 bad_request
tenant_curl POST /v1/profiles '{"id":"r1","attributes":{"addr":{"city":"x"}}}'
expect_status "an object attribute" 400 bad_request
tenant_curl POST /v1/profiles '{"id":"r1","attributes":{"bad-name":1}}'
expect_status "an attribute name outside [A-Za-z0-9_]" 400 bad_request
tenant_curl POST /v1/profiles "{\"id\":\"r1\",\"attributes\":{\"$(head -c 49 /dev/zero | tr '\0' a)\":1}}"
expect_status "a 49-character attribute name" 400 bad_request
tenant_curl POST /v1/profiles "@$tmp/attrs101.json"
expect_status "101 attributes" 400 bad_request
tenant_curl POST /v1/profiles "@$tmp/attrs100.json"
expect_status "100 attributes" 200
tenant_curl POST /v1/profiles '{"id":"r1","attributes":{"email":5}}'
expect_status "a PII attribute that is not a string" 400 bad_request
tenant_curl POST /v1/profiles "{\"id\":\"$(head -c 129 /dev/zero | tr '\0' p)\",\"attributes\":{\"a\":1}}"
expect_status "a 129-character profile id" 400 bad_request
tenant_curl POST /v1/profiles "{\"id\":\"$(head -c 128 /dev/zero | tr '\0' p)\",\"attributes\":{\"a\":1}}"
expect_status "a 128-character profile id" 200
tenant_curl POST /v1/profiles '{"id":"tab\there","attributes":{"a":1}}'
expect_status "a profile id with a control character" 400 bad_request
tenant_curl POST /v1/profiles '{"id":"r1","attributes":{"a":1},"extra":true}'
expect_status "an unknown member in a profile" 400 bad_request

# ---- delete -------------------------------------------------------------------------------
tenant_curl DELETE /v1/profiles/u1
expect_status "DELETE u1" 204
[ ! -s "$RESP_BODY" ] && ok "204 has no body" || bad "204 has no body" "$(resp)"
tenant_curl GET /v1/profiles/u1
expect_status "GET u1 after DELETE" 404 not_found
tenant_curl DELETE /v1/profiles/u1
expect_status "DELETE u1 again" 404 not_found

# ---- events ----------------------------------------------------------------------------------
tenant_curl POST /v1/events "{\"events\":[{\"id\":\"e1\",\"profile_id\":\"$bob\",\"name\":\"order.completed\",\"ts\":1732406400000,\"properties\":{\"total\":42.5}},{\"id\":\"e1\",\"profile_id\":\"$bob\",\"name\":\"order.completed\"},{\"id\":\"e2\",\"profile_id\":\"$bob\",\"name\":\"page_view\"},{\"profile_id\":\"$bob\",\"name\":\"app:open\"}]}"
expect_status "4 events, one id repeated" 200
check "3 accepted, 1 duplicate" 'd == {"accepted":3,"duplicates":1}'
tenant_curl POST /v1/events "{\"events\":[{\"id\":\"e1\",\"profile_id\":\"$bob\",\"name\":\"order.completed\"},{\"id\":\"e3\",\"profile_id\":\"$bob\",\"name\":\"x\"}]}"
expect_status "an event id already recorded" 200
check "1 accepted, 1 duplicate" 'd == {"accepted":1,"duplicates":1}'
tenant_curl POST /v1/events "{\"events\":[{\"id\":\"e9\",\"profile_id\":\"$bob\",\"name\":\"x\"},{\"profile_id\":\"no-such-profile\",\"name\":\"x\"}]}"
expect_status "an event of an unknown profile" 400 bad_request
message_has "the message names events[1]" "events[1]"
tenant_curl POST /v1/events "{\"events\":[{\"id\":\"e9\",\"profile_id\":\"$bob\",\"name\":\"x\"}]}"
check "the failed batch stored nothing (e9 is new afterwards)" 'd == {"accepted":1,"duplicates":0}'
tenant_curl POST /v1/events "{\"events\":[{\"profile_id\":\"$bob\",\"name\":\"bad name!\"}]}"
expect_status "an event name outside [A-Za-z0-9_.:-]" 400 bad_request
tenant_curl POST /v1/events "{\"events\":[{\"profile_id\":\"$bob\",\"name\":\"x\",\"properties\":{\"l\":[1]}}]}"
expect_status "an array property" 400 bad_request
tenant_curl POST /v1/events "{\"events\":[{\"profile_id\":\"$bob\",\"name\":\"x\",\"properties\":{\"email\":\"new.address@example.net\"}}]}"
expect_status "an event with a PII property" 200
tenant_curl POST /v1/events '{"events":[]}'
expect_status "no events" 400 bad_request
"$PY" -c 'import json, sys
print(json.dumps({"events": [{"profile_id": sys.argv[1], "name": "x"}] * 1001}))' "$bob" >"$tmp/e1001.json"
tenant_curl POST /v1/events "@$tmp/e1001.json"
expect_status "1001 events" 400 batch_too_large

# ---- the bad-input matrix of every endpoint with a body ---------------------------------------
# kind|METHOD|PATH|GOOD_BODY|WRONG_TYPE_BODY|MISSING_OR_INVALID_MEMBER_BODY
# (PATCH has no required member: its third body changes the id, which
# api.md does not allow)
matrix=(
  "tenant|POST|/v1/profiles|{\"id\":\"m1\",\"attributes\":{\"a\":1}}|{\"id\":7,\"attributes\":{\"a\":1}}|{\"id\":\"m1\"}"
  "tenant|POST|/v1/events|{\"events\":[{\"profile_id\":\"$bob\",\"name\":\"m\"}]}|{\"events\":{\"profile_id\":\"$bob\"}}|{\"events\":[{\"profile_id\":\"$bob\"}]}"
  "admin|POST|/admin/v1/tenants|{\"id\":\"mx\",\"name\":\"M\"}|{\"id\":\"my\",\"name\":5}|{\"name\":\"M\"}"
  "admin|PATCH|/admin/v1/tenants/ing|{\"name\":\"Ing\"}|{\"disabled\":\"yes\"}|{\"id\":\"other\"}"
  "admin|POST|/admin/v1/tenants/ing/credentials|{\"expires_in\":60}|{\"expires_in\":\"soon\"}|{\"client_access_key\":\"\"}"
)
for row in "${matrix[@]}"; do
  IFS='|' read -r kind method path good wrongtype missing <<<"$row"
  call() { if [ "$kind" = admin ]; then admin_curl "$@"; else tenant_curl "$@"; fi; }
  n="$method $path"
  call "$method" "$path" '{"a":'
  expect_status "$n: truncated JSON" 400 bad_json
  call "$method" "$path" 'not json at all'
  expect_status "$n: not JSON" 400 bad_json
  call "$method" "$path" "$good x"
  expect_status "$n: trailing garbage" 400 bad_json
  call "$method" "$path" "$good$good"
  expect_status "$n: two documents" 400 bad_json
  call "$method" "$path" "{\"a\":1,\"a\":2,${good#\{}"
  expect_status "$n: duplicate keys" 400 bad_json
  call "$method" "$path" "$wrongtype"
  expect_status "$n: wrong type" 400 bad_request
  call "$method" "$path" "$missing"
  expect_status "$n: a missing, empty or immutable member" 400 bad_request
  call "$method" "$path" '[]'
  expect_status "$n: an array instead of an object" 400 bad_request
  call "$method" "$path" "$(printf '{"a":"\xff\xfe"}')"
  if [ "$HTTP_CODE" = 400 ]; then ok "$n: invalid UTF-8 (400 $(error_code))"; else bad "$n: invalid UTF-8" "$(resp)"; fi
  call "$method" "$path" "@$tmp/big.json"
  expect_status "$n: a body over max_body (Content-Length)" 413 too_large
  call "$method" "$path" "@$tmp/big.json" -H 'Transfer-Encoding: chunked'
  expect_status "$n: a chunked body over max_body" 413 too_large
  call "$method" "$path" "$good" -H 'Content-Type: text/plain'
  expect_status "$n: Content-Type text/plain" 415 unsupported_media_type
  call "$method" "$path" "$good" -H 'Content-Type:'
  expect_status "$n: no Content-Type" 415 unsupported_media_type
  call "$method" "$path" "$good" -H 'Content-Type: application/json; charset=utf-8'
  case $HTTP_CODE in 2??) ok "$n: application/json; charset=utf-8 is accepted" ;;
    *) bad "$n: application/json; charset=utf-8 is accepted" "$(resp)" ;; esac
done

# ---- unknown routes and wrong methods ------------------------------------------------------------
for r in "GET /v1/profile" "GET /v1/profiles/a/b" "POST /v1/event" "GET /v2/profiles" "GET /v1/profiles/"; do
  tenant_curl ${r% *} "${r#* }"
  expect_status "unknown route $r" 404 not_found
done
# want405 METHOD PATH ALLOW...: 405 method_not_allowed and exactly these methods in Allow.
want405() {
  local m=$1 p=$2
  shift 2
  if [ "$m" = POST ] || [ "$m" = PUT ] || [ "$m" = PATCH ]; then tenant_curl "$m" "$p" '{}'; else tenant_curl "$m" "$p"; fi
  expect_status "$m $p" 405 method_not_allowed || return 0
  local allow want
  allow=$(resp_header Allow | tr -d ' ' | tr ',' '\n' | grep -v -e '^HEAD$' -e '^OPTIONS$' | sort | tr '\n' ',')
  want=$(printf '%s\n' "$@" | sort | tr '\n' ',')
  [ "$allow" = "$want" ] && ok "$m $p: Allow: $*" || bad "$m $p: Allow" "'$(resp_header Allow)', want $*"
}
want405 GET /v1/profiles POST
want405 PUT /v1/profiles POST
want405 DELETE /v1/profiles POST
want405 GET /v1/events POST
want405 PATCH /v1/events POST
want405 POST /v1/profiles/x GET DELETE
want405 PUT /v1/profiles/x GET DELETE

# /metrics: the ingestion counters and the tenants' KMS calls moved (the
# vault generated and unwrapped data keys for what was ingested above)
sp_curl GET /metrics
expect_status "/metrics after ingestion" 200
metric() { awk -v n="$1" '$1 == n { print $2 }' "$RESP_BODY"; }
for m in sealpost_kms_calls_total sealpost_profiles_ingested_total 'sealpost_http_requests_total{route="/v1/profiles",code="200"}'; do
  v=$(metric "$m")
  case $v in
    '' | 0) bad "/metrics: $m is counted" "got '${v}'" ;;
    *) ok "/metrics: $m = $v" ;;
  esac
done
[ "$(metric 'sealpost_kms_failures_total{kind="any"}')" = 0 ] && ok "/metrics: no KMS failures" \
  || bad "/metrics: KMS failures" "$(grep kms_failures "$RESP_BODY")"
[ "$(metric sealpost_kms_breakers_open)" = 0 ] && ok "/metrics: no KMS breaker open" || bad "/metrics: breakers open"

sp_stop main && ok "sealpostd stops on SIGTERM with status 0" || bad "sealpostd exit status on SIGTERM"
finish "$label"
