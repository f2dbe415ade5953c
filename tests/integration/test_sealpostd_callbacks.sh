#!/usr/bin/env bash
# Callbacks, end to end: campaigns go out to a provider written from the
# spec (provider_sink.py), then the test acts as that provider and reports
# back with an independent sealer (callback_sender.py over interop.py):
# every event type in the SMS array, Email v2 and Kannel form formats,
# sealed with compat GCM, CBC and CTR and with JWE. Checked: per-message
# status and campaign statistics show exactly the expected counts; a
# tampered body or header, a stale timestamp, an unknown or retired key
# version, an unknown channel or tenant, a missing signature and a
# plaintext body to an encrypted channel all get the same 401, byte for
# byte, and change nothing; a replayed webhook-id and a callback retried 10
# times count once; events out of order land in the right state; a hard
# bounce, a complaint, an unsubscribe, a STOP reply and an inbound STOP
# suppress the profile (later campaigns skip it); an authentic but
# malformed body is a 400 that stores nothing, also when twenty of them
# arrive at once among twenty good ones (their ids stay free for corrected
# retries, the good ones' retries are duplicates); a test send waits for its
# callback; and no address, number or reply text reaches the logs, the
# audit log or the database.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_callbacks
need_daemon "$label"
need_cmd "$label" curl openssl

start_sink && ok "provider sink starts" || bad "provider sink starts"
SP_CFG_EXTRA='[sender]
threads = 2
batch = 64
in_flight = 4
backoff_base = 0s
poll = 1s
timeout = 5s

[callbacks]
max_body = 64K
tolerance = 300s'
if ! sp_start main; then
  bad "sealpostd starts"
  finish "$label"
  exit 1
fi
ok "sealpostd starts"
make_tenant acme && ok "tenant acme" || bad "tenant acme"
kms="local:path=$SP_DIR/kms/acme.key;create=1"
SEND="$here/callback_sender.py"

# ---- channels: e-mail and SMS encrypted, SMS in the clear ------------------------
mail_doc='{"kind":"email","nickname":"Mail","request":{"endpoint":"'"$SINK"'/send","body":{"type":"json","template":"{\"to\":\"$$To\",\"subject\":\"$$Subject\",\"text\":\"$$Body\",\"id\":\"$$MessageID\"}"}},"from_name":"Acme","from_address":"news@acme.example","encryption":{"enabled":true,"algorithm":"aes-256-gcm","profile":"compat","key":"mail"}}'
sms_doc() { # ID ENCRYPTED
  echo '{"kind":"sms","nickname":"SMS","request":{"endpoint":"'"$SINK"'/send","body":{"type":"json","template":"{\"to\":\"$$To\",\"text\":\"$$Body\",\"id\":\"$$MessageID\",\"dlr\":\"$$DeliveryReportURL\"}"}},"sender_id":"ACME","encryption":{"enabled":'"$2"',"algorithm":"aes-256-gcm","key":"'"$1"'"}}'
}
tenant_curl PUT /v1/channels/mail "$mail_doc"
expect_status "PUT the e-mail channel" 201
V_MAIL=$(pyj 'd["encryption_key_version"]')
check "the reply names its callback URLs" "d['callback_urls'] == {'delivery_report': '$SP_URL/callbacks/v1/acme/mail/dlr', 'inbound': '$SP_URL/callbacks/v1/acme/mail/inbound'}"
tenant_curl PUT /v1/channels/sms "$(sms_doc sms true)"
expect_status "PUT the SMS channel" 201
V_SMS=$(pyj 'd["encryption_key_version"]')
tenant_curl PUT /v1/channels/smsplain "$(sms_doc smsplain false)"
expect_status "PUT an SMS channel without encryption" 201
tenant_curl GET /v1/channels/sms
check "GET shows the callback URLs too" "d['callback_urls']['inbound'] == '$SP_URL/callbacks/v1/acme/sms/inbound'"
provider_keys acme mail "$kms" && provider_keys acme sms "$kms" && ok "key exchange to the provider" ||
  bad "key exchange to the provider"
DLR_MAIL="$SP_URL/callbacks/v1/acme/mail/dlr"
DLR_SMS="$SP_URL/callbacks/v1/acme/sms/dlr"
IN_SMS="$SP_URL/callbacks/v1/acme/sms/inbound"
# cb URL VERSION [OPTIONS] < body: one line "<status> <body>" per request
cb() {
  local url=$1 version=$2
  shift 2
  "$PY" "$SEND" "$url" "$SP_CA" "$SINK_KEYS" --version "$version" "$@"
}

# ---- profiles and campaigns ---------------------------------------------------------
"$PY" - >"$tmp/profiles.json" <<'EOF'
import json
print(json.dumps({"profiles": [{"id": f"p{i}", "attributes": {"email": f"reader{i}.secret@example.org",
      "phone": f"+1415555010{i}", "first_name": f"Zorblax{i}"}} for i in range(6)]}))
EOF
tenant_curl POST /v1/profiles "@$tmp/profiles.json"
expect_status "ingest 6 profiles" 200
tenant_curl POST /v1/campaigns '{"id":"mailc","channel":"mail","message":{"subject":"S","body":"Hi {{first_name}}"},"audience":{"ids":["p0","p1","p2","p3"]}}'
expect_status "an e-mail campaign to 4" 201
tenant_curl POST /v1/campaigns '{"id":"smsc","channel":"sms","message":{"body":"Hi {{first_name}}"},"to":"phone","audience":{"ids":["p0","p1","p2","p3","p4"]}}'
expect_status "an SMS campaign to 5" 201
wait_campaign mailc 'd["messages"]["sent"] == 4' 30 && ok "e-mail campaign sent" || bad "e-mail campaign sent" "$(resp)"
wait_campaign smsc 'd["messages"]["sent"] == 5' 30 && ok "SMS campaign sent" || bad "SMS campaign sent" "$(resp)"

# message ids by recipient, from what the provider received
"$PY" - "$SINK_DIR/received.jsonl" >"$tmp/ids.sh" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    b = json.loads(line)["body"]
    to = b["to"]
    i = to[len("reader")] if to.startswith("reader") else to[-1]
    print(("M" if "@" in to else "S") + f"{i}={b['id']}")
EOF
. "$tmp/ids.sh"
[ -n "${M0:-}" ] && [ -n "${S4:-}" ] && ok "the provider knows every message id" || bad "message ids" "$(cat "$tmp/ids.sh")"
T=$(($(date +%s) - 3600))

# ---- e-mail events: Email v2, compat GCM and JWE ------------------------------------
cat >"$tmp/email1.json" <<EOF
{"version":"v2","events":{"success":[{"event":"delivered","ts":$T,"meta":"$M0"},{"event":"delivered","ts":$T,"meta":"$M1"},
 {"event":"opened","ts":$((T + 10)),"meta":"$M0"},{"event":"clicked","ts":$((T + 20)),"meta":"$M0","url":"https://acme.example/x"}],
 "failed":[{"event":"hard_bounce","ts":$T,"meta":"$M2","code":550,"description":"no such user"},
 {"event":"soft_bounce","ts":$T,"meta":"$M3","code":452},{"event":"delivered_nope_not_here","ts":$T,"meta":"msg_unknown"}]}}
EOF
# the last event name is not valid: first a body that is authentic and broken;
# its webhook-id is not remembered, so the provider's corrected retry under
# the same id below is accepted, not taken for a repeat
r=$(cb "$DLR_MAIL" "$V_MAIL" --wid cb_email_1 <"$tmp/email1.json")
case $r in "400 "*bad_callback*) ok "an authentic but malformed body: 400" ;; *) bad "malformed body 400" "$r" ;; esac
tenant_curl GET /v1/campaigns/mailc/stats
check "the malformed body stored nothing" 'd["states"]["delivered"] == 0 and d["states"]["sent"] == 4'
sed -i 's/,{"event":"delivered_nope_not_here","ts":[0-9]*,"meta":"msg_unknown"}//' "$tmp/email1.json"
sed -i 's/"meta":"'"$M0"'","url"/"meta":"'"$M0"'","url"/; s/"success":\[/"success":[{"event":"delivered","ts":'"$T"',"meta":"msg_not_ours"},/' "$tmp/email1.json"
r=$(cb "$DLR_MAIL" "$V_MAIL" --wid cb_email_1 <"$tmp/email1.json")
case $r in '200 {"status":"accepted","events":7,"changed":6,"unknown":1}') ok "Email v2 (compat GCM), the malformed one's id: accepted, 6 changed, 1 unknown" ;;
  *) bad "Email v2 accepted" "$r" ;; esac
cat >"$tmp/email2.json" <<EOF
{"version":"v2","events":{"success":[],"failed":[{"event":"unsubscribed","ts":$((T + 30)),"meta":"$M1"},{"event":"spam","ts":$((T + 40)),"meta":"$M0"}]}}
EOF
r=$(cb "$DLR_MAIL" "$V_MAIL" --profile jwe <"$tmp/email2.json")
case $r in '200 {"status":"accepted","events":2,"changed":2,"unknown":0}') ok "Email v2 (JWE): unsubscribed and spam" ;;
  *) bad "Email v2 JWE" "$r" ;; esac
tenant_curl GET /v1/campaigns/mailc/stats
check "e-mail stats: 2 delivered, 1 bounced, 1 failed" 'd["total"] == 4 and d["states"] == {"queued": 0, "sending": 0, "sent": 0, "delivered": 2, "failed": 1, "bounced": 1, "dead": 0}'
check "e-mail engagement: 1 opened, clicked, unsubscribed, complained" 'd["engagement"] == {"opened": 1, "clicked": 1, "replied": 0, "unsubscribed": 1, "complained": 1}'
check "failure codes 452 (failed) and 550 (bounced)" 'd["failure_codes"] == [{"code": 452, "failed": 1, "bounced": 0}, {"code": 550, "failed": 0, "bounced": 1}]'
tenant_curl GET "/v1/campaigns/mailc/stats?bucket=60"
check "the timeline adds up" 'sum(b["delivered"] for b in d["timeline"]) == 2 and sum(b["bounced"] for b in d["timeline"]) == 1 and sum(b["opened"] for b in d["timeline"]) == 1 and all(b["start"] % 60 == 0 for b in d["timeline"])'
cp "$RESP_BODY" "$tmp/mail-stats.json"
tenant_curl GET "/v1/messages/$M0"
check "message M0: delivered, opened, clicked, complained, sealed callback" 'd["state"] == "delivered" and d["outbox_state"] == "sent" and d["campaign"] == "mailc" and d["engagement"]["opened_at"] and d["engagement"]["clicked_at"] and d["engagement"]["complained_at"] and d["callback"]["encrypted"] is True'
tenant_curl GET "/v1/messages/$M2"
check "message M2: bounced with code 550" 'd["state"] == "bounced" and d["delivery"] == "bounced" and d["failure_code"] == 550'
tenant_curl GET /v1/messages/msg_nope
expect_status "an unknown message id is 404" 404 not_found

# ---- SMS events: the SMS array (CBC), out of order (CTR), Kannel forms -------------
cat >"$tmp/sms1.json" <<EOF
[{"event":"delivered","data":[{"ts":$T,"meta":"$S0"}]},
 {"event":"failed","data":[{"ts":$((T + 5)),"meta":"$S1","code":903,"description":"Number blocked"}]},
 {"event":"clicked","data":[{"ts":$((T + 50)),"meta":"$S2","url":"https://acme.example/y"}]},
 {"event":"replied","data":[{"ts":$((T + 60)),"meta":"$S3","incomingText":"Stop!"},{"ts":$((T + 61)),"meta":"$S0","incomingText":"Quibblefrotz reply"}]}]
EOF
r=$(cb "$DLR_SMS" "$V_SMS" --alg aes-256-cbc <"$tmp/sms1.json")
case $r in '200 {"status":"accepted","events":5,"changed":5,"unknown":0}') ok "SMS array (compat CBC): accepted" ;; *) bad "SMS array" "$r" ;; esac
cat >"$tmp/sms2.json" <<EOF
[{"event":"delivered","data":[{"ts":$T,"meta":"$S1"}]},{"event":"failed","data":[{"ts":$((T - 100)),"meta":"$S0","code":901}]}]
EOF
r=$(cb "$DLR_SMS" "$V_SMS" --alg aes-256-ctr <"$tmp/sms2.json")
case $r in '200 {"status":"accepted","events":2,"changed":0,"unknown":0}') ok "late reports older than what is known change nothing (CTR)" ;; *) bad "out of order" "$r" ;; esac
printf 'type=8&smsc=smsc0&meta=%s&ts=%s' "$S4" "$T" | cb "$DLR_SMS" "$V_SMS" >"$out"
case $(cat "$out") in '200 {"status":"accepted","events":1,"changed":0,"unknown":0}') ok "Kannel type=8 (buffered): seen, nothing changed" ;; *) bad "Kannel buffered" "$(cat "$out")" ;; esac
printf 'type=1&smsc=smsc0&meta=%s&ts=%s' "$S4" "$((T + 1))" | cb "$DLR_SMS" "$V_SMS" --profile jwe >"$out"
case $(cat "$out") in '200 {"status":"accepted","events":1,"changed":1,"unknown":0}') ok "Kannel type=1 (JWE): delivered" ;; *) bad "Kannel delivered" "$(cat "$out")" ;; esac
printf 'from=%%2B14155550105&text=STOP&smsc=smsc0&ts=%s' "$T" | cb "$IN_SMS" "$V_SMS" >"$out"
case $(cat "$out") in '200 {"status":"accepted","events":1,"changed":0,"unknown":0}') ok "an inbound STOP (Kannel form) is accepted" ;; *) bad "inbound STOP" "$(cat "$out")" ;; esac
tenant_curl GET /v1/campaigns/smsc/stats
check "SMS stats: 4 delivered, 1 failed, 1 clicked, 2 replied" 'd["states"]["delivered"] == 4 and d["states"]["failed"] == 1 and d["states"]["sent"] == 0 and d["engagement"]["clicked"] == 1 and d["engagement"]["replied"] == 2'
check "SMS failure code 903" 'd["failure_codes"] == [{"code": 903, "failed": 1, "bounced": 0}]'
tenant_curl GET "/v1/messages/$S1"
check "S1 stays failed (903) after an older delivered" 'd["state"] == "failed" and d["failure_code"] == 903'
tenant_curl GET "/v1/messages/$S0"
check "S0 stays delivered after an older failure" 'd["state"] == "delivered" and d["engagement"]["replied_at"]'
tenant_curl GET "/v1/messages/$S2"
check "S2: a click before any delivery report makes it delivered" 'd["state"] == "delivered" and d["engagement"]["clicked_at"]'

# ---- a channel without encryption takes plaintext ------------------------------------
PLAIN="$SP_URL/callbacks/v1/acme/smsplain/dlr"
r=$(printf 'type=2&smsc=smsc0&meta=%s&code=905&ts=%s' "$S4" "$((T - 500))" |
  "$PY" "$SEND" "$PLAIN" "$SP_CA" "$SINK_KEYS" --plain application/x-www-form-urlencoded --wid plain-1)
# (about a message of the encrypted SMS channel: not this channel's to report
# on, so accepted but unknown, and the message is left alone)
case $r in '200 {"status":"accepted","events":1,"changed":0,"unknown":1}') ok "plaintext form to a plaintext channel" ;; *) bad "plaintext channel" "$r" ;; esac
tenant_curl GET "/v1/messages/$S4"
check "another channel's report leaves the message alone" 'd["failure_code"] != 905'
r=$(printf 'type=2&smsc=smsc0&meta=%s&ts=%s' "$S4" "$T" |
  "$PY" "$SEND" "$PLAIN" "$SP_CA" "$SINK_KEYS" --plain application/x-www-form-urlencoded --wid plain-1)
case $r in '200 {"status":"duplicate"}') ok "its webhook-id still de-duplicates" ;; *) bad "plaintext duplicate" "$r" ;; esac

# ---- replays and retries ---------------------------------------------------------------
cp "$tmp/mail-stats.json" "$tmp/before.json"
r=$(cb "$DLR_MAIL" "$V_MAIL" --wid cb_email_1 <"$tmp/email1.json")
case $r in '200 {"status":"duplicate"}') ok "a replayed webhook-id: 200 duplicate" ;; *) bad "replay" "$r" ;; esac
echo '{"version":"v2","events":{"success":[{"event":"opened","ts":'"$((T + 90))"',"meta":"'"$M1"'"}]}}' >"$tmp/open1.json"
cb "$DLR_MAIL" "$V_MAIL" --repeat 10 --wid cb_retry_10 <"$tmp/open1.json" >"$out"
if [ "$(grep -c '^200 {"status":"accepted"' "$out")" = 1 ] && [ "$(grep -c '^200 {"status":"duplicate"}' "$out")" = 9 ]; then
  ok "a callback retried 10 times: accepted once, 9 duplicates"
else
  bad "retried 10 times" "$(cat "$out")"
fi
tenant_curl GET "/v1/campaigns/mailc/stats?bucket=60"
check "counted once: 2 opened" 'd["engagement"]["opened"] == 2 and d["states"]["delivered"] == 2'
cp "$RESP_BODY" "$tmp/mail-stats.json"

# 20 authentic but malformed callbacks among 20 good ones, all at once, so the
# writer's groups hold several that fail after their webhook-id was recorded:
# each good one accepted, each broken one a 400 whose id is not kept (its
# corrected retry is accepted), each good one's retry a duplicate
: >"$tmp/burst1" && : >"$tmp/burst2"
for i in $(seq 1 20); do
  echo '{"version":"v2","events":{"success":[{"event":"delivered","ts":'"$T"',"meta":"msg_burst_'"$i"'"}]}}' >"$tmp/good$i.json"
  echo '{"version":"v2","events":{"success":[{"event":"delivered_not","ts":'"$T"',"meta":"msg_burst_'"$i"'"}]}}' >"$tmp/broken$i.json"
  printf 'cb_good_%s %s\ncb_broken_%s %s\n' "$i" "$tmp/good$i.json" "$i" "$tmp/broken$i.json" >>"$tmp/burst1"
  printf 'cb_good_%s %s\ncb_broken_%s %s\n' "$i" "$tmp/good$i.json" "$i" "$tmp/good$i.json" >>"$tmp/burst2"
done
"$PY" "$SEND" "$DLR_MAIL" "$SP_CA" "$SINK_KEYS" --version "$V_MAIL" --burst "$tmp/burst1" >"$out"
if [ "$(grep -c '^cb_good_[0-9]* 200 {"status":"accepted","events":1,"changed":0,"unknown":1}$' "$out")" = 20 ] &&
  [ "$(grep -c '^cb_broken_[0-9]* 400 .*bad_callback' "$out")" = 20 ]; then
  ok "40 callbacks at once, 20 malformed: 20 accepted, 20 refused with 400"
else
  bad "a burst with malformed callbacks" "$(cat "$out")"
fi
"$PY" "$SEND" "$DLR_MAIL" "$SP_CA" "$SINK_KEYS" --version "$V_MAIL" --burst "$tmp/burst2" >"$out"
if [ "$(grep -c '^cb_good_[0-9]* 200 {"status":"duplicate"}$' "$out")" = 20 ] &&
  [ "$(grep -c '^cb_broken_[0-9]* 200 {"status":"accepted","events":1,"changed":0,"unknown":1}$' "$out")" = 20 ]; then
  ok "then, at once: the 20 good ones are duplicates, the 20 corrected ones accepted"
else
  bad "the burst's retries" "$(cat "$out")"
fi

# ---- every refusal is the same 401 -------------------------------------------------------
refuse() { # NAME then the cb/sender command
  local name=$1 line
  shift
  line=$("$@" <"$tmp/open2.json" | head -1)
  printf '%s\n' "${line#* }" >"$tmp/401-$name"
  case $line in "401 "*) ok "401: $name" ;; *) bad "401: $name" "$line" ;; esac
  if ! cmp -s "$tmp/401-$name" "$tmp/401-first"; then bad "the same body: $name" "$(cat "$tmp/401-$name")"; fi
}
echo '{"version":"v2","events":{"success":[{"event":"clicked","ts":'"$((T + 95))"',"meta":"'"$M1"'"}]}}' >"$tmp/open2.json"
printf '%s\n' '{"error":{"code":"unauthorized","message":"authentication failed"}}' >"$tmp/401-first"
refuse "tampered body" cb "$DLR_MAIL" "$V_MAIL" --tamper body
refuse "tampered body (JWE)" cb "$DLR_MAIL" "$V_MAIL" --profile jwe --tamper body
refuse "tampered X-AES-IV" cb "$DLR_MAIL" "$V_MAIL" --tamper iv
refuse "tampered webhook-timestamp" cb "$DLR_MAIL" "$V_MAIL" --tamper ts
refuse "no signature" cb "$DLR_MAIL" "$V_MAIL" --tamper sig
refuse "stale timestamp" cb "$DLR_MAIL" "$V_MAIL" --ts $(($(date +%s) - 1000))
refuse "unknown key version" "$PY" "$SEND" "$DLR_MAIL" "$SP_CA" "$SINK_KEYS" --unknown-version
refuse "another channel's key" cb "$DLR_MAIL" "$V_SMS"
refuse "unknown channel" cb "$SP_URL/callbacks/v1/acme/nochan/dlr" "$V_MAIL"
refuse "unknown tenant" cb "$SP_URL/callbacks/v1/nobody/mail/dlr" "$V_MAIL"
refuse "plaintext to an encrypted channel" "$PY" "$SEND" "$DLR_MAIL" "$SP_CA" "$SINK_KEYS" --plain application/json
refuse "wrong content type" "$PY" "$SEND" "$DLR_MAIL" "$SP_CA" "$SINK_KEYS" --plain text/plain
tenant_curl GET "/v1/campaigns/mailc/stats?bucket=60"
cmp -s "$RESP_BODY" "$tmp/mail-stats.json" && ok "refusals changed nothing" || bad "refusals changed nothing" "$(resp)"
grep -q '"event":"callback.rejected"' "$SP_AUDIT" && grep -q '"reason":"SP_ERR_STALE_TIMESTAMP"' "$SP_AUDIT" &&
  grep -q '"reason":"unknown_channel"' "$SP_AUDIT" && ok "the audit log has the reasons" || bad "audit reasons"

# ---- key rotation: the decrypt-only version still works, a retired one does not ----------
"$cli" keys rotate --store "sqlite:$SP_DIR/sealpost.db" --kms "$kms" --tenant acme --channel sms >"$out" 2>"$err" &&
  ok "rotate the SMS key" || bad "rotate the SMS key" "$(cat "$err")"
provider_keys acme sms "$kms" || bad "the provider gets the new SMS key"
sleep 1.2
echo '[{"event":"clicked","data":[{"ts":'"$((T + 99))"',"meta":"'"$S4"'"}]}]' >"$tmp/open2.json"
r=$(cb "$DLR_SMS" "$V_SMS" <"$tmp/open2.json")
case $r in '200 {"status":"accepted","events":1,"changed":1,"unknown":0}') ok "the previous (decrypt-only) version is accepted" ;; *) bad "decrypt-only accepted" "$r" ;; esac
"$cli" keys retire --store "sqlite:$SP_DIR/sealpost.db" --kms "$kms" --tenant acme --channel sms --version "$V_SMS" \
  >"$out" 2>"$err" && ok "retire it" || bad "retire it" "$(cat "$err")"
sleep 1.2
echo '[{"event":"delivered","data":[{"ts":'"$((T + 99))"',"meta":"'"$S1"'"}]}]' >"$tmp/open2.json"
refuse "retired key version" cb "$DLR_SMS" "$V_SMS"

# ---- suppressions: later campaigns skip the profiles ---------------------------------------
tenant_curl POST /v1/campaigns '{"id":"mail2","channel":"mail","message":{"subject":"S","body":"Again"},"audience":{"ids":["p0","p1","p2","p3","p4"]}}'
expect_status "a second e-mail campaign" 201
check "it skips the bounced, unsubscribed and complaining profiles" 'd["total"] == 2'
tenant_curl POST /v1/campaigns '{"id":"sms2","channel":"sms","message":{"body":"Again"},"to":"phone","audience":{"ids":["p0","p1","p2","p3","p4","p5"]}}'
expect_status "a second SMS campaign" 201
check "it skips the STOP reply and the inbound STOP" 'd["total"] == 4'

# ---- a test send waits for its callback --------------------------------------------------------
(tenant_curl POST "/v1/campaigns/mailc/test?wait=15" '{"profile_id":"p4"}'; cp "$RESP_BODY" "$tmp/test.json"; echo "$HTTP_CODE" >"$tmp/test.code") &
tpid=$!
tid=""
for _ in $(seq 1 100); do
  tid=$(grep -o '"id": "msg_test_[^"]*"' "$SINK_DIR/received.jsonl" | head -1 | sed 's/.*"\(msg_test_[^"]*\)"/\1/')
  [ -n "$tid" ] && break
  sleep 0.1
done
echo '{"version":"v2","events":{"success":[{"event":"delivered","meta":"'"$tid"'"}]}}' >"$tmp/test-cb.json"
r=$(cb "$DLR_MAIL" "$V_MAIL" <"$tmp/test-cb.json")
case $r in '200 {"status":"accepted","events":1,"changed":1,"unknown":0}') ok "the test message's delivery report" ;; *) bad "test message report" "$r" ;; esac
wait "$tpid"
"$PY" - "$tmp/test.json" "$tid" <<'EOF' && ok "the test send reports the callback: received, encrypted" || bad "test send report" "$(cat "$tmp/test.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and d["message_id"] == sys.argv[2], d
assert d["status_url"] == "/v1/messages/" + sys.argv[2], d
assert d["callback"] == {"received": True, "encrypted": True}, d
EOF
tenant_curl GET "/v1/messages/$tid"
check "its status: delivered, no campaign, sent" 'd["state"] == "delivered" and d["campaign"] is None and d["outbox_state"] == "sent"'

# ---- metrics ----------------------------------------------------------------------------------------
admin_curl GET /metrics
grep -q 'sealpost_callbacks_total{result="duplicate"} 31' "$RESP_BODY" && ok "metrics: 31 duplicates" || bad "duplicates metric" "$(grep callbacks_total "$RESP_BODY")"
grep -q 'sealpost_callbacks_total{result="invalid"} 21' "$RESP_BODY" && ok "metrics: 21 invalid" || bad "invalid metric" "$(grep callbacks_total "$RESP_BODY")"
grep -q 'sealpost_callbacks_total{result="rejected"} 13' "$RESP_BODY" && ok "metrics: 13 rejected" || bad "rejected metric" "$(grep callbacks_total "$RESP_BODY")"
grep -q 'sealpost_suppressions_total{reason="opt_out"} 2' "$RESP_BODY" && grep -q 'sealpost_suppressions_total{reason="hard_bounce"} 1' "$RESP_BODY" &&
  ok "metrics: suppressions" || bad "suppression metrics" "$(grep suppressions "$RESP_BODY")"
grep -q 'sealpost_delivery_events_total{event="bounced"} 1' "$RESP_BODY" && ok "metrics: delivery events" || bad "delivery event metrics"

# ---- no PII at rest or in logs -----------------------------------------------------------------------
if cat "$SP_DIR"/sealpost.db* "$SP_LOG" "$SP_AUDIT" "$SP_DIR/stderr.log" | grep -a -q -e 'secret@example' -e '4155550' -e 'Quibblefrotz' -e 'Zorblax'; then
  bad "no address, number or reply text in the database, logs or audit log"
else
  ok "no address, number or reply text in the database, logs or audit log"
fi

finish "$label"
