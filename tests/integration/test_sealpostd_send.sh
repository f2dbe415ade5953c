#!/usr/bin/env bash
# Sending, end to end, against a provider written from the spec
# (provider_sink.py verifies and decrypts with the independent Python
# receiver): a channel with encryption on is saved (and a broken one refused
# with the field named), the provider gets the channel's key through the key
# exchange, profiles are ingested, and campaigns go out. Checked: every
# message arrives once, personalised from PII that was decrypted only in
# memory; what crossed the wire holds none of the recipients' addresses or
# names; a test send reports what happened; 503 with Retry-After is retried
# and then delivered; a provider that keeps failing dead-letters the
# message, and a replay delivers it once the provider is back; a 400 is
# final; a placeholder with no value fails the message; a kill -9 in the
# middle of a campaign, then a restart, loses nothing (the provider sees
# repeats, always under the same webhook-id); audiences are expanded 7
# profiles a page, and an expansion that stopped half way is taken up again
# where it stopped.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_send
need_daemon "$label"
need_cmd "$label" curl openssl

start_sink && ok "provider sink starts" || bad "provider sink starts"

SP_CFG_EXTRA='[sender]
threads = 2
batch = 64
expand_page = 7
in_flight = 4
max_attempts = 3
backoff_base = 0s
backoff_max = 2s
lease = 5s
poll = 1s
timeout = 5s'
if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts"
make_tenant acme && ok "tenant acme" || bad "tenant acme"

# ---- a channel -----------------------------------------------------------------
channel_doc() { # ENDPOINT ENCRYPTED
  cat <<EOF
{"kind":"email","nickname":"Sink mail",
 "request":{"endpoint":"$1","method":"POST",
   "body":{"type":"json","template":"{\"to\":\"\$\$To\",\"subject\":\"\$\$Subject\",\"text\":\"\$\$Body\",\"id\":\"\$\$MessageID\",\"campaign\":\"\$\$CampaignID\",\"from\":\"\$\$FromAddress\"}"}},
 "auth":{"type":"none"},
 "from_name":"Acme","from_address":"news@acme.example",
 "encryption":{"enabled":$2,"algorithm":"aes-256-gcm","profile":"compat","key":"mail"}}
EOF
}
tenant_curl PUT /v1/channels/mail "$(channel_doc "$SINK/send" true)"
expect_status "PUT a channel with encryption on" 201
check "the reply names the provider key version" 'len(d["encryption_key_version"]) == 36 and d["kind"] == "email"'
tenant_curl PUT /v1/channels/bad "$(channel_doc "http://192.0.2.1/send" true)"
expect_status "an http endpoint off loopback is refused" 400 bad_channel
case $(pyj 'd["error"]["message"]') in
  *request.endpoint*) ok "the refusal names the field" ;;
  *) bad "the refusal names the field" "$(resp)" ;;
esac
tenant_curl GET /v1/channels/mail
expect_status "GET the channel" 200
check "GET shows the document" 'd["config"]["encryption"]["key"] == "mail" and d["id"] == "mail"'
tenant_curl GET /v1/channels
check "the list has it" '[c["id"] for c in d["channels"]] == ["mail"]'

# ---- the provider gets the key (JWE key exchange) ------------------------------
kms="local:path=$SP_DIR/kms/acme.key;create=1"
provider_keys acme mail "$kms" && ok "key exchange to the provider" || bad "key exchange to the provider"

# ---- profiles --------------------------------------------------------------------
N=60
"$PY" - "$N" >"$tmp/profiles.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"profiles": [{"id": f"p{i}", "attributes": {"email": f"reader{i}.secret@example.org",
      "first_name": f"Zorblax{i}", "plan": "gold" if i % 2 else "free"}} for i in range(n)]}))
EOF
tenant_curl POST /v1/profiles "@$tmp/profiles.json"
expect_status "ingest $N profiles" 200
tenant_curl POST /v1/profiles '{"id":"nameless","attributes":{"email":"nameless.one@example.org"}}'
expect_status "a profile without first_name" 200

# ---- a campaign to everyone with a first name ------------------------------------
tenant_curl POST /v1/campaigns '{"id":"spring","channel":"mail","message":{"subject":"Hello {{first_name|friend}}","body":"Hi {{first_name}}, we write to {{email}} on the {{plan}} plan."},"audience":{"attribute":"plan","equals":"gold"}}'
expect_status "create a campaign, sent now" 201
check "its state is sending with 30 messages" 'd["state"] == "sending" and d["total"] == 30'
if wait_campaign spring 'd["messages"]["sent"] == 30' 30; then ok "all 30 sent"; else bad "all 30 sent" "$(resp)"; fi
check "the campaign is done" 'd["state"] == "done" and d["messages"]["failed"] == 0'
[ "$(sink_stat records)" = 30 ] && ok "the provider got 30 distinct messages" || bad "provider records" "$(sink_stat records)"
"$PY" - "$SINK_DIR/received.jsonl" <<'EOF' && ok "each message personalised, to the right address" || bad "personalised messages"
import json, re, sys
got = [json.loads(l) for l in open(sys.argv[1])]
assert len(got) == 30, len(got)
for g in got:
    b = g["body"]
    m = re.fullmatch(r"reader(\d+)\.secret@example\.org", b["to"]); assert m, b
    i = int(m.group(1)); assert i % 2 == 1
    assert b["subject"] == f"Hello Zorblax{i}", b
    assert b["text"] == f"Hi Zorblax{i}, we write to reader{i}.secret@example.org on the gold plan.", b
    assert b["id"] == g["webhook_id"] and b["id"].startswith("msg_") and b["campaign"] == "spring", b
    assert b["from"] == "news@acme.example"
EOF
if grep -q -e 'secret@example' -e 'Zorblax' "$SINK_DIR/raw.jsonl"; then
  bad "the wire carried only ciphertext" "$(grep -o -m1 -e 'reader[0-9]*.secret@example.org' -e 'Zorblax[0-9]*' "$SINK_DIR/raw.jsonl")"
else
  ok "the wire carried only ciphertext (no address, no name in $(wc -l <"$SINK_DIR/raw.jsonl") requests)"
fi
grep -q '"X-AES-IV"' "$SINK_DIR/raw.jsonl" && ok "compat headers on the wire" || bad "compat headers on the wire"
if grep -q -e 'secret@example' -e 'Zorblax' "$SP_LOG" "$SP_AUDIT"; then bad "no PII in the log or the audit"; else ok "no PII in the log or the audit"; fi

# ---- a test send -------------------------------------------------------------------
tenant_curl POST /v1/campaigns/spring/test '{"profile_id":"p3"}'
expect_status "a test send" 200
check "the report: accepted, encrypted, no plaintext on the wire" 'd["ok"] is True and d["checks"] == {"provider_accepted": True, "encrypted": True, "plaintext_absent_on_wire": True} and d["provider_status"] == 200 and len(d["key_version"]) == 36'
tenant_curl POST /v1/campaigns/spring/test '{"profile_id":"nobody"}'
check "a test send to a missing profile says so" 'd["ok"] is False and d["result"] == "SP_ERR_NOT_FOUND"'

# ---- every algorithm and profile, opened by the independent receiver ----------------
for combo in "aes-256-cbc compat" "aes-256-ctr compat" "aes-256-gcm jwe"; do
  set -- $combo
  name="mail-${1#aes-256-}-$2"
  doc=$(channel_doc "$SINK/send" true | sed "s/\"algorithm\":\"aes-256-gcm\",\"profile\":\"compat\"/\"algorithm\":\"$1\",\"profile\":\"$2\"/")
  tenant_curl PUT "/v1/channels/$name" "$doc"
  expect_status "a channel with $1 / $2" 201
  before=$(sink_stat records)
  tenant_curl POST /v1/campaigns "{\"id\":\"c-$name\",\"channel\":\"$name\",\"message\":{\"subject\":\"S\",\"body\":\"Hi {{first_name}}\"},\"audience\":{\"ids\":[\"p8\",\"p9\"]}}"
  if wait_campaign "c-$name" 'd["messages"]["sent"] == 2' 20; then ok "$1 / $2: the provider opened both"; else bad "$1 / $2 sent" "$(resp)"; fi
  [ "$(sink_stat records)" = $((before + 2)) ] && ok "$1 / $2: counted once each" || bad "$1 / $2 records"
done
if grep -q 'application/jose' "$SINK_DIR/raw.jsonl" && grep -q '"X-AES-ALGORITHM": "AES-256-CBC"' "$SINK_DIR/raw.jsonl" &&
   grep -q '"X-AES-ALGORITHM": "AES-256-CTR"' "$SINK_DIR/raw.jsonl"; then
  ok "the wire shows the JWE profile and the CBC and CTR envelopes"
else
  bad "the wire shows each profile and algorithm"
fi
if grep -q -e 'secret@example' -e 'Zorblax' "$SINK_DIR/raw.jsonl"; then bad "still only ciphertext on the wire"; else ok "still only ciphertext on the wire"; fi

# ---- Basic auth toward the provider; its password sealed at rest -------------------
doc=$(channel_doc "$SINK/send" true | sed 's/"auth":{"type":"none"}/"auth":{"type":"basic","username":"acme-user","password":"pw-Secret-4711"}/')
tenant_curl PUT /v1/channels/mail-basic "$doc"
expect_status "a channel with Basic auth" 201
tenant_curl GET /v1/channels/mail-basic
if grep -q 'pw-Secret-4711' "$RESP_BODY"; then bad "GET never shows the password"; else ok "GET never shows the password"; fi
check "GET says a password is set" 'd["config"]["auth"].get("password_set") is True'
tenant_curl POST /v1/campaigns '{"id":"c-basic","channel":"mail-basic","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p10"]}}'
if wait_campaign c-basic 'd["messages"]["sent"] == 1' 20; then ok "sent with Basic auth"; else bad "sent with Basic auth" "$(resp)"; fi
want="Basic $(printf 'acme-user:pw-Secret-4711' | base64)"
grep -q "\"Authorization\": \"$want\"" "$SINK_DIR/raw.jsonl" && ok "the provider got the Basic credential" || bad "Basic credential on the wire"
if cat "$SP_DIR"/sealpost.db* | grep -a -q 'pw-Secret-4711'; then bad "the provider password is not stored in the clear"; else
  ok "the provider password is not stored in the clear"; fi

# ---- retries: 503 with Retry-After ------------------------------------------------
sink_faults '{"status":503,"count":2,"retry_after":"1"}'
before=$(sink_stat records)
tenant_curl POST /v1/campaigns '{"id":"retry","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p0"]}}'
expect_status "a campaign while the provider answers 503" 201
if wait_campaign retry 'd["messages"]["sent"] == 1' 20; then ok "sent after two 503s"; else bad "sent after two 503s" "$(resp)"; fi
[ "$(sink_stat faulted)" = 2 ] && ok "two attempts were refused first" || bad "faulted" "$(sink_stat faulted)"
[ "$(sink_stat records)" = $((before + 1)) ] && ok "delivered once" || bad "delivered once"

# ---- dead letter, then replay ------------------------------------------------------
sink_faults '{"status":500,"count":3}'
tenant_curl POST /v1/campaigns '{"id":"dead","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p2"]}}'
if wait_campaign dead 'd["messages"]["dead"] == 1' 20; then ok "dead-lettered after 3 attempts"; else bad "dead-lettered" "$(resp)"; fi
tenant_curl POST /v1/campaigns/dead/replay ''
expect_status "replay" 200
check "one message replayed" 'd["replayed"] == 1'
if wait_campaign dead 'd["messages"]["sent"] == 1 and d["messages"]["dead"] == 0' 20; then ok "the replay delivered it"; else bad "replay delivered" "$(resp)"; fi

sink_faults '{"status":500,"count":3}'
tenant_curl POST /v1/campaigns '{"id":"dead2","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p12"]}}'
if wait_campaign dead2 'd["messages"]["dead"] == 1' 20; then ok "dead-lettered again"; else bad "dead-lettered again" "$(resp)"; fi
if "$daemon" replay --config "$SP_CONF" --tenant acme --campaign dead2 >"$out" 2>"$err" && grep -qx "replayed 1" "$out"; then
  ok "sealpostd replay (the command line) puts it back"
else
  bad "sealpostd replay" "$(cat "$out" "$err")"
fi
if wait_campaign dead2 'd["messages"]["sent"] == 1' 20; then ok "and the running daemon delivers it"; else bad "delivered after the command" "$(resp)"; fi
"$daemon" replay --config "$SP_CONF" --campaign dead2 >/dev/null 2>&1 && bad "replay without --tenant is refused" || ok "replay without --tenant is refused"

# ---- a 400 is final ---------------------------------------------------------------
sink_faults '{"status":400,"count":1}'
r0=$(sink_stat requests)
tenant_curl POST /v1/campaigns '{"id":"refused","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p4"]}}'
if wait_campaign refused 'd["messages"]["failed"] == 1' 20; then ok "a 400 fails the message"; else bad "400 fails" "$(resp)"; fi
sleep 1.5
[ "$(sink_stat requests)" = $((r0 + 1)) ] && ok "and it is not retried" || bad "not retried" "$(sink_stat requests) vs $r0"

# ---- a placeholder without a value -------------------------------------------------
tenant_curl POST /v1/campaigns '{"id":"noname","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["nameless","p6"]}}'
if wait_campaign noname 'd["messages"]["failed"] == 1 and d["messages"]["sent"] == 1' 20; then ok "missing value: that message fails, the other goes"; else bad "missing value" "$(resp)"; fi
grep -q '"placeholder":"first_name"' "$SP_LOG" && ok "the log names the placeholder" || bad "log names the placeholder"

# ---- bad campaigns ------------------------------------------------------------------
tenant_curl POST /v1/campaigns '{"channel":"mail","message":{"body":"Hi {{first_name"},"audience":{"all":true}}'
expect_status "an unterminated placeholder is refused" 400 bad_campaign
tenant_curl POST /v1/campaigns '{"channel":"nope","message":{"body":"x"},"audience":{"all":true}}'
expect_status "an unknown channel is refused" 400 bad_campaign
tenant_curl POST /v1/campaigns '{"channel":"mail","message":{"subject":"S","body":"x"},"audience":{"all":true,"ids":["a"]}}'
expect_status "two audiences are refused" 400 bad_campaign
tenant_curl POST /v1/campaigns '{"channel":"mail","message":{"body":"x"},"audience":{"all":true}}'
expect_status "a campaign without the subject its channel needs is refused" 400 bad_campaign
case $(pyj 'd["error"]["message"]') in *message.subject*) ok "the refusal names message.subject" ;; *) bad "names message.subject" "$(resp)" ;; esac
"$PY" -c 'import json; t = "x" * 100000; print(json.dumps({"channel": "mail", "message": {"subject": t, "body": t, "html": t}, "audience": {"all": True}}))' >"$tmp/huge.json"
tenant_curl POST /v1/campaigns "@$tmp/huge.json"
expect_status "a campaign over 256 KiB in all is refused" 400 bad_campaign
tenant_curl DELETE /v1/channels/mail
expect_status "a channel in use cannot be deleted" 409 in_use

# ---- kill -9 in the middle of a campaign -------------------------------------------
sink_faults '{"status":0,"count":100000,"delay_ms":200}'
before=$(sink_stat records)
tenant_curl POST /v1/campaigns '{"id":"crash","channel":"mail","message":{"subject":"S","body":"Hi {{first_name|there}}"},"audience":{"all":true}}'
expect_status "a campaign to everyone" 201
total=$(pyj 'd["total"]')
for _ in $(seq 1 100); do [ "$(sink_stat records)" -gt $((before + 5)) ] && break; sleep 0.1; done
kill -KILL "$SP_PID"
wait "$SP_PID" 2>/dev/null || true
unset 'SP_I_PID[main]'
mid=$(sink_stat records)
[ "$mid" -lt $((before + total)) ] && ok "killed mid-campaign ($((mid - before)) of $total delivered)" || bad "kill -9 came too late"
sink_faults '{"status":0,"count":0}'
sp_launch main && ok "restarted" || bad "restart"
if wait_campaign crash "d['messages']['sent'] == $total" 40; then ok "after the restart every message is sent"; else bad "all sent after restart" "$(resp)"; fi
[ "$(sink_stat records)" = $((before + total)) ] && ok "the provider has each message exactly once by webhook-id" ||
  bad "provider distinct" "$(sink_stat records) vs $((before + total))"
echo "# repeats the provider dropped: $(sink_stat repeats)"

# ---- an expansion that stopped half way is taken up again --------------------------
# A campaign is expanded a page at a time, its position in its row. Here one
# stopped after its first two profiles (a crash between pages, written
# behind the daemon's back: queued, idle, positioned after the second
# profile, no message yet): after a restart the scheduler goes on from the
# position, so exactly the profiles after it are sent, once.
later=$(($(date +%s) + 86400))
tenant_curl POST /v1/campaigns "{\"id\":\"halfway\",\"channel\":\"mail\",\"message\":{\"subject\":\"S\",\"body\":\"Hi {{first_name|there}}\"},\"audience\":{\"all\":true},\"send_at\":$later}"
expect_status "a campaign for tomorrow" 201
profiles=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT count(*) FROM profiles WHERE tenant = 'acme'")
sp_stop main >/dev/null 2>&1
sqlite3 "$SP_DIR/sealpost.db" "UPDATE campaigns SET state = 'queued', updated = 1, expanded_to = (SELECT id FROM profiles WHERE tenant = 'acme' ORDER BY id LIMIT 1 OFFSET 1) WHERE tenant = 'acme' AND id = 'halfway'" &&
  ok "the campaign left queued after its second profile" || bad "set up the stopped expansion"
before=$(sink_stat records)
sp_launch main && ok "restarted" || bad "restart"
if wait_campaign halfway "d['state'] in ('sending', 'done') and d['messages']['sent'] == $((profiles - 2))" 30; then
  ok "the expansion went on from its position: $((profiles - 2)) of $profiles profiles sent"
else
  bad "the stopped expansion resumed" "$(resp)"
fi
[ "$(pyj 'd["total"]')" = $((profiles - 2)) ] && ok "its total counts each message once" || bad "total" "$(resp)"
[ "$(sink_stat records)" = $((before + profiles - 2)) ] && ok "the provider got each of them once" ||
  bad "provider records" "$(sink_stat records) vs $((before + profiles - 2))"
grep -q '"campaign.expansion_resumed"' "$SP_LOG" && ok "the resumption is logged" || bad "campaign.expansion_resumed logged"

# ---- pages handed to the workers, and a stop with some still waiting ----------------
# On SQLite the expanding process leases each page to its own workers as it
# writes it (sender hand_over = auto). A slow provider keeps most of a
# 240-message campaign waiting in the hand-over; SIGTERM puts those back in
# the queue at once, and after a restart each goes out exactly once.
# ingest_group PREFIX N PLAN: N more profiles, ids PREFIX000…, all on PLAN
ingest_group() {
  "$PY" - "$@" >"$tmp/group.json" <<'EOF'
import json, sys
prefix, n, plan = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(json.dumps({"profiles": [{"id": f"{prefix}{i:03d}", "attributes": {"email": f"{plan}{i}.reader@example.org",
      "first_name": f"{plan.title()}{i}", "plan": plan}} for i in range(n)]}))
EOF
  tenant_curl POST /v1/profiles "@$tmp/group.json"
}
ingest_group q 240 bulk
expect_status "ingest 240 more profiles" 200
sink_faults '{"status":0,"count":100000,"delay_ms":300}'
before=$(sink_stat records)
tenant_curl POST /v1/campaigns '{"id":"bulk","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"attribute":"plan","equals":"bulk"}}'
expect_status "a campaign of 240" 201
check "all 240 in the outbox when the POST answers" 'd["total"] == 240'
for _ in $(seq 1 100); do [ "$(sink_stat records)" -gt "$before" ] && break; sleep 0.1; done
handed=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT count(*) FROM outbox WHERE tenant = 'acme' AND campaign = 'bulk' AND lease_owner LIKE '%:pages'")
[ "$handed" = 240 ] && ok "every page was leased to the workers as it was written" || bad "handed over" "$handed of 240"
sp_stop main >/dev/null 2>&1
released=$(grep '"send.handoff_released"' "$SP_LOG" | tail -1 | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["messages"])' 2>/dev/null)
sent_so_far=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT count(*) FROM outbox WHERE tenant = 'acme' AND campaign = 'bulk' AND state = 'sent'")
leased=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT count(*) FROM outbox WHERE tenant = 'acme' AND campaign = 'bulk' AND state = 'sending'")
if [ -n "$released" ] && [ "$released" -gt 0 ] && [ "$leased" = 0 ]; then
  ok "SIGTERM queued again the $released messages still waiting ($sent_so_far sent before)"
else
  bad "release on stop" "released=$released sending=$leased sent=$sent_so_far"
fi
sink_faults '{"status":0,"count":0}'
sp_launch main && ok "restarted" || bad "restart"
if wait_campaign bulk "d['messages']['sent'] == 240" 40; then ok "after the restart all 240 are sent"; else bad "bulk sent" "$(resp)"; fi
[ "$(sink_stat records)" = $((before + 240)) ] && ok "the provider got each of them once" ||
  bad "provider records" "$(sink_stat records) vs $((before + 240))"

# ---- handed messages that waited through half their lease -----------------------------
# One worker sending one message at a time, pages of one profile (the
# hand-over holds two); the provider holds the first message for 7 s. The
# two pages waiting behind it spend more than half of their 10 s lease in
# the hand-over, so each gets a new lease before it is sent (a claim could
# otherwise take it while it is under way); the rest of the pages, written
# while the hand-over was full, are claimed as usual; every message goes
# out once.
sp_stop main >/dev/null 2>&1
SP_CFG_EXTRA='[sender]
threads = 1
batch = 1
expand_page = 1
in_flight = 1
max_attempts = 3
backoff_base = 0s
backoff_max = 2s
lease = 10s
poll = 1s
timeout = 15s'
sp_write_config "${SP_I_DIR[main]}" "${SP_I_PORT[main]}"
sp_launch main && ok "restarted with one worker sending one message at a time" || bad "restart"
ingest_group z 40 slow
expect_status "ingest 40 more profiles" 200
sink_faults '{"status":0,"count":1,"delay_ms":7000}'
before=$(sink_stat records)
tenant_curl POST /v1/campaigns '{"id":"slow","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"attribute":"plan","equals":"slow"}}'
expect_status "a campaign of 40, its first message held by the provider" 201
if wait_campaign slow "d['messages']['sent'] == 40" 60; then ok "all 40 sent"; else bad "slow campaign sent" "$(resp)"; fi
renewed=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT count(*) FROM outbox WHERE tenant = 'acme' AND campaign = 'slow' AND lease_owner LIKE '%:pages' AND lease_until - created > 10000")
[ "${renewed:-0}" -ge 2 ] && ok "$renewed handed messages got a new lease before they were sent" ||
  bad "renewed leases" "$(sqlite3 "$SP_DIR/sealpost.db" "SELECT profile_id, lease_owner, lease_until - created, sent_at - created FROM outbox WHERE campaign = 'slow'" | head -20)"
grep -q '"send.handoff_renew_failed"' "$SP_LOG" && bad "a renewal failed" "$(grep handoff_renew_failed "$SP_LOG" | tail -1)" ||
  ok "no renewal failed"
[ "$(sink_stat records)" = $((before + 40)) ] && ok "the provider got each of the 40 once" ||
  bad "provider records" "$(sink_stat records) vs $((before + 40))"
sink_faults '{"status":0,"count":0}'

finish "$label"
