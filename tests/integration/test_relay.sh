#!/usr/bin/env bash
# sealpost-relay end to end against real delivery systems, all on 127.0.0.1
# and started here: aiosmtpd (mail to files), Kannel bearerbox + smsbox with
# a fake SMSC and fakesmsc as the handset side, and platform_sink.py as the
# platform (it verifies and decrypts the relay's callbacks independently,
# from PROTOCOL.md). Payloads are sealed by platform_sink.py's sender
# (interop.py), not by our C code.
#
# What it checks: mail and SMS carry the personalised text; delivery
# reports come back sealed with the right meta; an SMTP rejection is a
# hard_bounce; an MO "STOP" is an inbound reply; a repeated webhook-id is
# not handed on twice; wrong, expired or foreign credentials get one
# identical 401, and a foreign address a 403; a failing callback endpoint
# gets the callback on retry; a key rotation is picked up without restart;
# nothing personal in the relay's log or state file.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/relay_lib.sh"
need_cli "relay"
if [ ! -x "$relay_bin" ]; then
  bad "sealpost-relay binary not found at $relay_bin"
  finish relay
  exit 1
fi
for need in /usr/sbin/bearerbox /usr/sbin/smsbox /usr/lib/kannel/test/fakesmsc; do
  [ -x "$need" ] || { bad "missing $need (scripts/bootstrap installs Kannel)"; finish relay; exit 1; }
done

RELAY_ACCESS_KEY=ak_relay_test_1
RELAY_SECRET=sec-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
RELAY_SECRET_HASH=$(printf '%s' "$RELAY_SECRET" | sha256sum | cut -d' ' -f1)
OLD_SECRET=old-secret-expired
OLD_HASH=$(printf '%s' "$OLD_SECRET" | sha256sum | cut -d' ' -f1)

keys="$tmp/keys.json"
v1=$("$cli" keygen --out "$keys")
relay_tls
relay_start_smtp || bad "aiosmtpd did not start"
relay_start_kannel || bad "Kannel did not start" "$(tail -5 "$tmp/kannel/bearerbox.log" 2>/dev/null)"
relay_start_sink "$keys" || bad "platform sink did not start"
conf="$tmp/relay.conf"
relay_write_conf "$conf" "$keys" "
[auth]
credential = ak_relay_old:$OLD_HASH:1000"
SINK="http://127.0.0.1:$SINK_PORT"

# --check: SMTP, Kannel and the platform reachable but for the /late/ prefix
# (nothing listens there yet): exit 1; key versions shown, no key material
"$relay_bin" --check --config "$conf" >"$out" 2>"$err"
rc=$?
material=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['keys'][0]['key'])" "$keys")
if [ $rc -eq 1 ] && grep -q "$v1 (active)" "$out" && ! grep -qF "$material" "$out" &&
  grep -q "^smtp .*: reachable" "$out" && grep -q "^kannel .*: reachable" "$out" &&
  grep -q "/cb/: reachable" "$out" && grep -q "/late/: UNREACHABLE" "$out" && grep -q "^NOT OK" "$out"; then
  ok "--check: reports each hop, exit 1 while one is down, versions without material"
else bad "--check" "rc=$rc $(cat "$out" "$err" | head -20)"; fi

relay_start "$conf" || { bad "relay did not start" "$(cat "$tmp/relay.out")"; finish relay; exit 1; }

# send PLAINTEXT [sender options...] -> "status body" in $out
send() {
  local pt=$1
  shift
  printf '%s' "$pt" | "$py" "$here/platform_sink.py" send "$RELAY_URL" "$tmp/tls/cert.pem" "$keys" \
    --merchant merchant-1 --access-key "$RELAY_ACCESS_KEY" --secret "$RELAY_SECRET" "$@" >"$out" 2>"$err"
}
sink_has() { relay_wait_for "$SINK_OUT" "$1" "${2:-20}"; }

# ---- e-mail: delivered, personalised, multipart, encoded subject ----
email='{"kind":"email","message_id":"msg_e1","to":"ada@example.org","from":"news@acme.example","from_name":"Acme Ünïcode","reply_to":"help@acme.example","subject":"Welcome, Ada ✓","text":"Hi Ada, thanks for joining.","html":"<p>Hi <b>Ada</b>, thanks for joining.</p>","dlr_url":"'$SINK'/cb/dlr"}'
send "$email" --wid msg_e1
if grep -q '^200 {"accepted":1}' "$out"; then ok "email accepted"; else bad "email accepted" "$(cat "$out" "$err")"; fi
if relay_wait_for "$tmp/mail/1.eml" "thanks for joining" 10 && grep -q "Hi Ada, thanks for joining." "$tmp/mail/1.eml" &&
  grep -q "multipart/alternative" "$tmp/mail/1.eml" && grep -q "^Subject: =?UTF-8?B?" "$tmp/mail/1.eml" &&
  grep -q "^Message-ID: <msg_e1@acme.example>" "$tmp/mail/1.eml" && grep -q "X-Envelope-To: ada@example.org" "$tmp/mail/1.eml"; then
  ok "mail arrived with the personalised text, multipart, RFC 2047 subject"
else bad "mail content" "$(head -30 "$tmp/mail/1.eml" 2>/dev/null)"; fi
subject=$("$py" -c "
import email, email.header, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
print(str(email.header.make_header(email.header.decode_header(m['Subject']))))" "$tmp/mail/1.eml" 2>&1)
[ "$subject" = "Welcome, Ada ✓" ] && ok "subject decodes back" || bad "subject decodes back" "$subject"
if sink_has '"meta": "msg_e1"' && grep '"msg_e1"' "$SINK_OUT" | grep -q '"event": "delivered"' &&
  grep '"msg_e1"' "$SINK_OUT" | grep -q "\"version\": \"$v1\""; then
  ok "email delivered callback verified and opened at the platform"
else bad "email delivered callback" "$(cat "$SINK_OUT")"; fi

# ---- e-mail rejected by the server: hard_bounce with the SMTP code ----
send '{"kind":"email","message_id":"msg_b1","to":"bounce@example.org","from":"news@acme.example","subject":"x","text":"y","dlr_url":"'$SINK'/cb/dlr"}'
grep -q '^200 ' "$out" && ok "rejected mail still answered 200" || bad "rejected mail answer" "$(cat "$out")"
if sink_has '"meta": "msg_b1"' && grep '"msg_b1"' "$SINK_OUT" | grep -q '"event": "hard_bounce"' &&
  grep '"msg_b1"' "$SINK_OUT" | grep -q '"code": 550'; then ok "SMTP 550 became a hard_bounce callback"
else bad "hard_bounce callback" "$(grep msg_b1 "$SINK_OUT")"; fi
send '{"kind":"email","message_id":"msg_d1","to":"defer@example.org","from":"news@acme.example","subject":"x","text":"y","dlr_url":"'$SINK'/cb/dlr"}'
if sink_has '"meta": "msg_d1"' && grep '"msg_d1"' "$SINK_OUT" | grep -q '"event": "soft_bounce"'; then ok "SMTP 451 became a soft_bounce callback"
else bad "soft_bounce callback" "$(grep msg_d1 "$SINK_OUT")"; fi

# ---- every profile and algorithm in ----
n=0
for variant in "--profile jwe" "--alg aes-256-cbc" "--alg aes-256-ctr"; do
  n=$((n + 1))
  # shellcheck disable=SC2086
  send '{"kind":"email","message_id":"msg_p'$n'","to":"p@example.org","from":"news@acme.example","subject":"p","text":"profile '$n'"}' $variant
  if grep -q '^200 {"accepted":1}' "$out" && relay_wait_for "$tmp/relay.log" '"webhook_id":"[^"]*","accepted":1' 5 &&
    grep -lq "profile $n" "$tmp"/mail/*.eml; then ok "opened and delivered: $variant"
  else bad "opened: $variant" "$(cat "$out" "$err")"; fi
done

# ---- SMS through Kannel to the fake SMSC ----
send '{"kind":"sms","message_id":"msg_s1","to":"+15551230001","text":"Your code is 4711, Ada","sender":"ACME","dlr_url":"'$SINK'/cb/sms"}'
grep -q '^200 {"accepted":1}' "$out" && ok "sms accepted" || bad "sms accepted" "$(cat "$out" "$err")"
if relay_wait_for "$tmp/fakesmsc.out" "Your code is 4711, Ada" 15; then ok "fakesmsc received the SMS text"
else bad "fakesmsc received the SMS" "$(tail -5 "$tmp/fakesmsc.out")"; fi
# the fake SMSC reports "delivered to the SMSC" (8): buffered, no callback
if relay_wait_for "$tmp/relay.log" '"event":"kannel.dlr".*"message_id":"msg_s1","type":8' 15; then ok "Kannel's DLR (type 8) reached the relay"
else bad "Kannel DLR type 8" "$(grep kannel "$tmp/relay.log" | tail -3)"; fi
sig=$(relay_dlr_sig msg_s1)
forged=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RELAY_DLR_PORT/kannel/dlr?meta=msg_s1&sig=00000000000000000000000000000000&type=2&smsc=fake0")
untagged=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RELAY_DLR_PORT/kannel/dlr?meta=msg_s1&type=2&smsc=fake0")
[ "$forged$untagged" = 403403 ] && ok "a DLR call without the relay's tag is refused" || bad "forged DLR" "$forged $untagged"
# a handset report, as Kannel calls it for a real SMSC
curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RELAY_DLR_PORT/kannel/dlr?meta=msg_s1&sig=$sig&type=1&smsc=fake0&ts=1714000100" >"$out"
if sink_has '"meta": "msg_s1"' && grep '"msg_s1"' "$SINK_OUT" | grep -q '"event": "delivered"' &&
  grep '"msg_s1"' "$SINK_OUT" | grep -q '"format": "sms"'; then ok "SMS DLR type 1 became a delivered callback"
else bad "SMS delivered callback" "$(cat "$SINK_OUT" | tail -3)"; fi
curl -sS -o /dev/null "http://127.0.0.1:$RELAY_DLR_PORT/kannel/dlr?meta=msg_s1&sig=$sig&type=16&smsc=fake0&ts=1714000101"
if sink_has '"code": 902'; then ok "SMS DLR type 16 became failed 902"; else bad "SMS failed callback"; fi
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RELAY_DLR_PORT/kannel/dlr?meta=bad%20id&type=1")
[ "$code" = 400 ] && ok "malformed DLR call refused" || bad "malformed DLR call" "$code"

# ---- MO: STOP from the handset the SMS went to, and from a stranger ----
relay_fakesmsc_mo 15551230001 STOP
if sink_has '"incomingText": "STOP"' 20 && grep '"incomingText": "STOP"' "$SINK_OUT" | grep -q '"meta": "msg_s1"' &&
  grep '"incomingText": "STOP"' "$SINK_OUT" | grep -q '"path": "/cb/inbound"'; then ok "MO STOP became a replied callback for msg_s1"
else bad "MO STOP callback" "$(tail -3 "$SINK_OUT"; grep -i mo "$tmp/relay.log" | tail -3)"; fi
relay_fakesmsc_mo 15559990000 HELLO
if sink_has '"format": "form"' 20 && grep '"format": "form"' "$SINK_OUT" | grep -q '"text": "HELLO"'; then
  ok "MO from an unknown number became a form inbound callback"
else bad "MO form callback" "$(tail -3 "$SINK_OUT")"; fi

# ---- de-duplication by webhook-id ----
mails_before=$(ls "$tmp/mail"/*.eml | wc -l)
dup='{"kind":"email","message_id":"msg_dup","to":"grace@example.org","from":"news@acme.example","subject":"once","text":"only once"}'
send "$dup" --wid wh_dup_1
first=$(cat "$out")
send "$dup" --wid wh_dup_1
second=$(cat "$out")
sleep 0.5
mails_after=$(ls "$tmp/mail"/*.eml | wc -l)
if [[ $first == 200* ]] && [[ $second == '200 {"status":"duplicate"}' ]] && [ $((mails_after - mails_before)) -eq 1 ]; then
  ok "a repeated webhook-id is answered 200 and not sent twice"
else bad "webhook-id de-duplication" "$first / $second / $mails_before -> $mails_after"; fi

# ---- a batch: per-record results ----
batch='{"messages":[{"kind":"email","message_id":"msg_m1","to":"m1@example.org","from":"news@acme.example","subject":"b","text":"batch one"},{"kind":"sms","message_id":"msg_m2","to":"+15551230002","text":"batch two"},{"kind":"email","message_id":"msg_dup","to":"grace@example.org","from":"news@acme.example","subject":"once","text":"only once"}]}'
send "$batch"
if grep -q '"accepted":3' "$out" && grep -q '"message_id":"msg_dup","status":"duplicate"' "$out" &&
  grep -q '"message_id":"msg_m2","status":"accepted"' "$out"; then ok "batch: per-record results, a handed record not sent again"
else bad "batch" "$(cat "$out")"; fi

# ---- refusals ----
unauth='401 {"error":{"code":"unauthorized","message":"authentication failed"}}'
one='{"kind":"sms","message_id":"msg_x","to":"+15551230009","text":"never"}'
declare -A variants=(
  [wrong_secret]="--secret not-the-secret"
  [expired_secret]="--access-key ak_relay_old --secret $OLD_SECRET"
  [wrong_merchant]="--merchant merchant-2"
  [wrong_sub_merchant]="--sub-merchant sub-z"
  [unknown_key_version]="__unknown__"
)
for name in "${!variants[@]}"; do
  if [ "${variants[$name]}" = __unknown__ ]; then
    "$py" -c "
import json, os, base64, uuid, sys
json.dump({'keys':[{'version':str(uuid.uuid4()),'key':base64.b64encode(os.urandom(32)).decode(),'state':'active'}]}, open(sys.argv[1],'w'))" "$tmp/other.json"
    printf '%s' "$one" | "$py" "$here/platform_sink.py" send "$RELAY_URL" "$tmp/tls/cert.pem" "$tmp/other.json" \
      --merchant merchant-1 --access-key "$RELAY_ACCESS_KEY" --secret "$RELAY_SECRET" >"$out" 2>"$err"
  else
    # shellcheck disable=SC2086
    send "$one" ${variants[$name]}
  fi
  [ "$(cat "$out")" = "$unauth" ] && ok "refused identically: $name" || bad "refusal $name" "$(cat "$out" "$err")"
done
code=$(curl -sS -o /dev/null -w '%{http_code}' --interface 127.0.0.2 --cacert "$tmp/tls/cert.pem" -X POST \
  -H "X-Client-Access-Key: $RELAY_ACCESS_KEY" -H "X-Api-Secret: $RELAY_SECRET" -H "X-Merchant-Id: merchant-1" \
  --data '{}' "$RELAY_URL" 2>"$err")
[ "$code" = 403 ] && ok "an address outside the allow-list gets 403" || bad "allow-list" "$code $(cat "$err")"
send '{"kind":"sms","message_id":"msg_y","to":"+15551230003","text":"x","dlr_url":"http://evil.example/cb/"}'
grep -q '^400 .*dlr_url: outside' "$out" && ok "a dlr_url outside callback_allow is refused" || bad "dlr_url allow" "$(cat "$out")"
send '{"kind":"fax","message_id":"msg_z","to":"x"}'
grep -q '^400 .*kind' "$out" && ok "a bad payload is a 400 naming the field" || bad "bad payload" "$(cat "$out")"

# ---- a callback endpoint that fails at first gets it on retry ----
send '{"kind":"email","message_id":"msg_r1","to":"r1@example.org","from":"news@acme.example","subject":"r","text":"retry me","dlr_url":"'$SINK'/flaky/dlr"}'
if sink_has '"meta": "msg_r1"' 30 && [ "$(grep -c '"flaky_503"' "$SINK_OUT")" -ge 2 ]; then
  wid=$(grep '"meta": "msg_r1"' "$SINK_OUT" | "$py" -c "import json,sys; print(json.loads(sys.stdin.readline())['webhook_id'])")
  if [ "$(grep -c "\"webhook_id\": \"$wid\"" "$SINK_OUT")" -eq 3 ] && [[ $wid == cb_* ]]; then
    ok "callback retried after two 503s with the same webhook-id"
  else bad "callback retry id" "$wid $(grep -c "$wid" "$SINK_OUT")"; fi
else bad "callback retry" "$(grep -E 'flaky|msg_r1' "$SINK_OUT")"; fi

# ---- key rotation in the key file, no restart ----
v2=$("$cli" keygen --out "$keys")
sleep 1.2
send '{"kind":"email","message_id":"msg_k2","to":"k2@example.org","from":"news@acme.example","subject":"k","text":"rotated","dlr_url":"'$SINK'/cb/dlr"}'
grep -q '^200 ' "$out" && ok "a payload sealed with the new version opens" || bad "rotation: new version" "$(cat "$out")"
if sink_has '"meta": "msg_k2"' && grep '"msg_k2"' "$SINK_OUT" | grep -q "\"version\": \"$v2\""; then
  ok "callbacks are sealed with the new active version"
else bad "rotation: callback version" "$(grep msg_k2 "$SINK_OUT")"; fi
send '{"kind":"email","message_id":"msg_k1","to":"k1@example.org","from":"news@acme.example","subject":"k","text":"old"}' --version "$v1"
grep -q '^200 ' "$out" && ok "the previous version still opens (decrypt-only)" || bad "rotation: old version" "$(cat "$out")"

# ---- metrics, and nothing personal on disk or in the log ----
curl -sS --cacert "$tmp/tls/cert.pem" "https://127.0.0.1:$RELAY_PORT/metrics" >"$out"
if grep -q 'relay_handed_total{kind="email",outcome="delivered"}' "$out" && grep -q 'relay_callbacks_total{result="sent"}' "$out"; then
  ok "/metrics"
else bad "/metrics" "$(head -20 "$out")"; fi
leak=0
# Needles long enough not to turn up by chance: a bare "4711" also matches a
# port, a duration or a counter in the log, and four bytes of a binary page.
for needle in "ada@example.org" "15551230001" "code is 4711" "thanks for joining" "HELLO"; do
  if grep -qF "$needle" "$tmp/relay.log" "$tmp/relay-state.db" "$tmp/relay-state.db-wal" 2>/dev/null; then
    leak=1
    bad "plaintext in the relay's log or state: $needle" \
      "$(grep -aoF -- "$needle" -H "$tmp/relay.log" "$tmp/relay-state.db" "$tmp/relay-state.db-wal" 2>/dev/null | head -3)
$(grep -aoE -- ".{0,60}$needle.{0,60}" "$tmp/relay.log" 2>/dev/null | head -3)"
  fi
done
[ $leak -eq 0 ] && ok "no addresses, numbers or text in the relay's log or state file"

# ---- the queue survives a restart; callbacks sealed as configured at send time ----
retries_before=$(grep -c '"event":"callback.retry"' "$tmp/relay.log")
send '{"kind":"email","message_id":"msg_late","to":"late@example.org","from":"news@acme.example","subject":"l","text":"late","dlr_url":"http://127.0.0.1:'$LATE_PORT'/late/dlr"}'
grep -q '^200 ' "$out" || bad "late send" "$(cat "$out")"
for _ in $(seq 100); do
  [ "$(grep -c '"event":"callback.retry"' "$tmp/relay.log")" -ge $((retries_before + 2)) ] && break
  sleep 0.1
done
relay_stop
[ "$RELAY_STATUS" -eq 0 ] && ok "relay stopped with a callback queued" || bad "relay stop" "status $RELAY_STATUS"
printf '\n[platform]\nprofile = jwe\n' >>"$conf"
relay_start_sink2 "$keys" "$LATE_PORT" "$tmp/sink2.jsonl" || bad "second sink"
relay_start "$conf" || bad "relay restart" "$(tail -5 "$tmp/relay.out")"
if relay_wait_for "$tmp/sink2.jsonl" '"meta": "msg_late"' 40 && grep '"msg_late"' "$tmp/sink2.jsonl" | grep -q '"profile": "jwe"' &&
  grep '"msg_late"' "$tmp/sink2.jsonl" | grep -q "\"version\": \"$v2\""; then
  ok "a queued callback survived the restart and went out sealed as configured then (jwe, active version)"
else bad "queue across restart" "$(cat "$tmp/sink2.jsonl"; grep callback "$tmp/relay.log" | tail -3)"; fi
"$relay_bin" --check --config "$conf" >"$out" 2>"$err" && grep -q "^ok" "$out" && ok "--check: exit 0 once every hop answers" ||
  bad "--check all up" "$(cat "$out" "$err")"

relay_stop
if [ "$RELAY_STATUS" -eq 0 ] && grep -q '"event":"stopped"' "$tmp/relay.log" &&
  ! grep -qE "Sanitizer|runtime error" "$tmp/relay.out"; then ok "relay stopped cleanly on SIGTERM (exit 0, no sanitizer report)"
else bad "relay stop" "status $RELAY_STATUS $(tail -3 "$tmp/relay.log"; head -20 "$tmp/relay.out")"; fi
finish relay
