#!/usr/bin/env bash
# A tenant's KMS goes away in the middle of sending: nothing is lost. The
# tenant's master key lives in a real KMIP server (PyKMIP, from
# scripts/kms-fixtures); data keys are cached for one second only, so every
# message sent after that needs the KMS. The server is frozen (SIGSTOP: it
# still accepts connections, then says nothing, as a hung KMS does) while a
# campaign starts: no message reaches the provider, none fails or is
# dead-lettered, the outbox says why they wait, and the attempts are not
# used up. Thawed, the KMS answers again and every message goes out once.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_send_kms
need_daemon "$label"
need_cmd "$label" curl openssl sqlite3

fixtures="$src/scripts/kms-fixtures"
kmsdir="$tmp/kms"
stop_all() {
  "$fixtures" resume "$kmsdir" >/dev/null 2>&1 || true
  "$fixtures" stop "$kmsdir" >/dev/null 2>&1 || true
  sp_cleanup
}
trap stop_all EXIT
if ! "$fixtures" start "$kmsdir" >"$tmp/kms.env" 2>"$tmp/kms.err" </dev/null; then
  bad "a KMIP server" "$(tail -c 400 "$tmp/kms.err")"
  finish "$label"
  exit 1
fi
ok "a KMIP server"
# shellcheck disable=SC1090
. "$tmp/kms.env"
kmip="${SP_BENCH_KMIP};timeout-ms=1500;retries=0;breaker-cooldown-ms=2000"

start_sink && ok "provider sink starts" || bad "provider sink starts"

SP_CFG_EXTRA='[vault]
dek_cache_ttl = 1s
[sender]
threads = 2
max_attempts = 2
backoff_base = 0s
backoff_max = 1s
lease = 30s
poll = 1s'
sp_start main && ok "sealpostd starts" || { bad "sealpostd starts"; finish "$label"; exit 1; }
kms_json=$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$kmip")
make_tenant acme ",\"kms\":$kms_json" && ok "a tenant whose master key is in the KMIP server" || bad "tenant with KMIP"

tenant_curl PUT /v1/channels/mail '{"kind":"email","nickname":"Sink",
 "request":{"endpoint":"'"$SINK"'/send","method":"POST","body":{"type":"json","template":"{\"to\":\"$$To\",\"text\":\"$$Body\",\"id\":\"$$MessageID\"}"}},
 "auth":{"type":"none"},"from_name":"Acme","from_address":"news@acme.example",
 "encryption":{"enabled":true,"algorithm":"aes-256-gcm","profile":"compat","key":"mail"}}'
expect_status "a channel" 201
# the tenant's config names the master key the daemon made (key-id=…, not create=1)
pinned=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT json_extract(settings, '\$.kms') FROM tenants WHERE id = 'acme'")
case $pinned in *key-id=*) case $pinned in *create=1*) bad "the stored config is pinned" "$pinned" ;; *) ok "the stored KMS config names the master key made" ;; esac ;;
  *) bad "the stored config is pinned" "$pinned" ;; esac
provider_keys acme mail "$pinned" && ok "key exchange" || bad "key exchange"
tenant_curl POST /v1/profiles '{"profiles":[{"id":"a","attributes":{"email":"a.kms@example.org"}},{"id":"b","attributes":{"email":"b.kms@example.org"}},{"id":"c","attributes":{"email":"c.kms@example.org"}}]}'
expect_status "three profiles" 200
# a first message through, so the channel's wire keys are loaded while the KMS answers
tenant_curl POST /v1/campaigns '{"id":"warm","channel":"mail","message":{"body":"warm"},"audience":{"ids":["a"]}}'
for _ in $(seq 1 100); do [ "$(sink_stat records)" = 1 ] && break; sleep 0.1; done
[ "$(sink_stat records)" = 1 ] && ok "sent while the KMS answers" || bad "warm-up send" "$(sink_stat records)"

sleep 1.5 # the data keys' cache runs out
"$fixtures" pause "$kmsdir" && ok "the KMS freezes" || bad "pause the KMS"
tenant_curl POST /v1/campaigns '{"id":"outage","channel":"mail","message":{"body":"Hello"},"audience":{"all":true}}'
expect_status "a campaign while the KMS is gone" 201
sleep 12 # two rounds of the 5 s KMS retry: with attempts counted, max_attempts = 2 would dead-letter them
[ "$(sink_stat records)" = 1 ] && ok "nothing reached the provider" || bad "nothing sent during the outage" "$(sink_stat records)"
tenant_curl GET /v1/campaigns/outage
msgs=$("$PY" -c 'import json,sys; m = json.load(open(sys.argv[1]))["messages"]; print(m["queued"] + m["sending"], m["failed"], m["dead"])' "$RESP_BODY")
[ "$msgs" = "3 0 0" ] && ok "all three wait: none failed, none dead-lettered" || bad "waiting during the outage" "$msgs $(resp)"
why=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT DISTINCT substr(last_error, 1, 11) FROM outbox WHERE campaign = 'outage' AND last_error <> ''" 2>&1)
[ "$why" = "SP_ERR_KMS_" ] && ok "the outbox says why they wait (the KMS)" || bad "the reason recorded" "$why"
attempts=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT MAX(attempts) FROM outbox WHERE campaign = 'outage'")
[ "${attempts:-9}" -le 1 ] && ok "the outage used up no attempts (max 2)" || bad "attempts during the outage" "$attempts"

"$fixtures" resume "$kmsdir" && ok "the KMS answers again" || bad "resume the KMS"
wait_campaign outage 'd["messages"]["sent"] == 3' 40 && sent=3 || sent=0
[ "$sent" = 3 ] && ok "every message went out once the key was back" || bad "sent after the outage" "$(resp)"
[ "$(sink_stat records)" = 4 ] && ok "the provider has each once" || bad "provider records" "$(sink_stat records)"
finish "$label"
