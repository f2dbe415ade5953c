#!/usr/bin/env bash
# Two sealpostd processes on one PostgreSQL share the outbox: a campaign
# created through one of them is sent by the workers of both, and every
# message reaches the provider exactly once (FOR UPDATE SKIP LOCKED hands
# each row to one claimer). The two processes share the data directory's
# server key, as a deployment must (credential hashes and sealed channel
# secrets are keyed by it). The provider is provider_sink.py, slowed down
# so that both processes have work at the same time.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_send_pg
need_daemon "$label"
need_cmd "$label" curl openssl psql

pg_fixture="$src/scripts/pg-fixture"
pgparent=$(mktemp -d "${TMPDIR:-/tmp}/sealpost-pg.XXXXXX")
chmod 711 "$pgparent"
pgdir="$pgparent/pg"
pg_started=""
stop_all() {
  sp_cleanup # the provider and the daemons, then the scratch directory
  if [ -n "$pg_started" ]; then "$pg_fixture" stop "$pgdir" >/dev/null 2>&1 || true; fi
  rm -rf "$pgparent"
}
trap stop_all EXIT

if ! pg_url=$("$pg_fixture" start "$pgdir" 2>"$tmp/pg.err") || [ -z "$pg_url" ]; then
  bad "a throwaway PostgreSQL" "$(head -c 400 "$tmp/pg.err")"
  finish "$label"
  exit 1
fi
pg_started=1
pg_url=$(printf '%s\n' "$pg_url" | grep -m1 '^postgres')
ok "a throwaway PostgreSQL"

start_sink && ok "provider sink starts" || bad "provider sink starts"

export SP_CFG_STORE_URL=$pg_url
SP_CFG_EXTRA='[sender]
threads = 2
batch = 16
in_flight = 4
lease = 30s
poll = 1s'
sp_start a && ok "process a starts on PostgreSQL" || { bad "process a starts"; finish "$label"; exit 1; }
make_tenant acme && ok "tenant" || bad "tenant"
# process b: its own directory, the same server key
mkdir -p "$tmp/sp-b"
chmod 700 "$tmp/sp-b"
cp -p "${SP_I_DIR[a]}/server.key" "$tmp/sp-b/server.key"
sp_start b --no-admin && ok "process b starts on the same database" || bad "process b starts"
sp_use a

tenant_curl PUT /v1/channels/mail '{"kind":"email","nickname":"Sink",
 "request":{"endpoint":"'"$SINK"'/send","method":"POST","body":{"type":"json","template":"{\"to\":\"$$To\",\"text\":\"$$Body\",\"id\":\"$$MessageID\"}"}},
 "auth":{"type":"none"},"from_name":"Acme","from_address":"news@acme.example",
 "encryption":{"enabled":true,"algorithm":"aes-256-gcm","profile":"compat","key":"mail"}}'
expect_status "a channel" 201
provider_keys acme mail "local:path=${SP_I_DIR[a]}/kms/acme.key;create=1" "$pg_url" && ok "key exchange" || bad "key exchange"

N=300
"$PY" - "$N" >"$tmp/profiles.json" <<'EOF'
import json, sys
print(json.dumps({"profiles": [{"id": f"p{i}", "attributes": {"email": f"user{i}@example.org", "first_name": f"U{i}"}}
                               for i in range(int(sys.argv[1]))]}))
EOF
tenant_curl POST /v1/profiles "@$tmp/profiles.json"
expect_status "ingest $N profiles" 200

sink_faults '{"status":0,"count":1000000,"delay_ms":20}'
tenant_curl POST /v1/campaigns '{"id":"shared","channel":"mail","message":{"body":"Hi {{first_name}}"},"audience":{"all":true}}'
expect_status "a campaign through process a" 201
wait_campaign shared "d['messages']['sent'] == $N" 60 && sent=$N || sent=0
[ "$sent" = "$N" ] && ok "all $N sent" || bad "all sent" "$(resp)"
[ "$(sink_stat records)" = "$N" ] && ok "the provider has $N distinct messages" || bad "distinct" "$(sink_stat records)"
[ "$(sink_stat repeats)" = 0 ] && ok "and not one twice" || bad "repeats" "$(sink_stat repeats)"
pids=$(psql "$pg_url" -qAt -c "SELECT count(DISTINCT split_part(lease_owner, ':', 2)) FROM outbox WHERE campaign = 'shared'" 2>"$err")
[ "$pids" = 2 ] && ok "both processes sent part of it" || bad "both processes sent" "owners: $pids $(cat "$err")"

# ---- callbacks on PostgreSQL: each report posted to both processes at once ----
# Each process's writers record callbacks in transactions of their own; the
# webhook-id recorded in the same transaction as the events is what makes
# one of the two racing copies a duplicate, across processes.
M=10
"$PY" - "$SINK_DIR/received.jsonl" "$M" >"$tmp/cb-ids.txt" <<'EOF2'
import json, sys
ids = [json.loads(line)["body"]["id"] for line in open(sys.argv[1])]
print("\n".join(ids[: int(sys.argv[2])]))
EOF2
sp_use b
url_b="$SP_URL/callbacks/v1/acme/mail/dlr" ca_b=$SP_CA
sp_use a
url_a="$SP_URL/callbacks/v1/acme/mail/dlr"
T=$(($(date +%s) - 60))
i=0 senders=""
while read -r mid; do
  i=$((i + 1))
  body="{\"version\":\"v2\",\"events\":{\"success\":[{\"event\":\"delivered\",\"ts\":$T,\"meta\":\"$mid\"}],\"failed\":[]}}"
  printf '%s' "$body" | "$PY" "$here/callback_sender.py" "$url_a" "$SP_CA" "$SINK_KEYS" --wid "dlr_$i" >"$tmp/cb-a-$i.out" &
  senders="$senders $!"
  printf '%s' "$body" | "$PY" "$here/callback_sender.py" "$url_b" "$ca_b" "$SINK_KEYS" --wid "dlr_$i" >"$tmp/cb-b-$i.out" &
  senders="$senders $!"
done <"$tmp/cb-ids.txt"
for p in $senders; do wait "$p"; done # not a bare wait: the provider sink runs in the background too
accepted=$(cat "$tmp"/cb-[ab]-*.out | grep -c '^200 {"status":"accepted"')
dups=$(cat "$tmp"/cb-[ab]-*.out | grep -c '^200 {"status":"duplicate"}')
[ "$accepted" = "$M" ] && [ "$dups" = "$M" ] && ok "$M reports, each to both processes: $M accepted, $M duplicates" ||
  bad "racing callbacks" "accepted $accepted, duplicates $dups: $(cat "$tmp"/cb-[ab]-*.out | sort | uniq -c | head -5)"
tenant_curl GET /v1/campaigns/shared/stats
check "the campaign counts $M delivered, once each" "d['states']['delivered'] == $M"
sp_stop a && ok "a stops cleanly" || bad "a exit status"
sp_stop b && ok "b stops cleanly" || bad "b exit status"
finish "$label"
