#!/usr/bin/env bash
# A provider behind OAuth 2.0 (client credentials), end to end: sealpostd
# gets its tokens from a real authorization server (oauth2-mock-server from
# the npm registry, made strict by tests/oauth2/server.mjs: one client, its
# secret checked, tokens that live 3 s) and sends with them. Checked: every
# request carries a bearer token the server signed (verified against its
# JWKS with jwcrypto), one token serves many messages, a token past its
# lifetime is replaced, a provider's 401 makes sealpostd fetch a fresh token
# and send once more, and a channel with a wrong client secret fails its
# messages without anything reaching the provider.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_sealpostd_send_oauth
need_daemon "$label"
need_cmd "$label" curl openssl node npm

oauth_dir="${SP_BUILD_DIR:-$src/build}/oauth2-mock"
if ! bash "$src/tests/oauth2/install" "$oauth_dir" >"$tmp/install.log" 2>&1; then
  bad "the OAuth 2.0 server installs" "$(tail -c 400 "$tmp/install.log")"
  finish "$label"
  exit 1
fi
oauth_port=$(free_port)
node_bin=$(command -v node)
SP_OAUTH2_CLIENT_ID=sealpost-test SP_OAUTH2_CLIENT_SECRET=right-secret-0815 \
  "$node_bin" "$oauth_dir/server.mjs" "$oauth_dir" "$oauth_port" 3 >"$tmp/oauth.log" 2>&1 &
oauth_pid=$!
stop_all() {
  kill "$oauth_pid" 2>/dev/null || true
  wait "$oauth_pid" 2>/dev/null || true
  sp_cleanup
}
trap stop_all EXIT
for _ in $(seq 1 150); do grep -q listening "$tmp/oauth.log" && break; sleep 0.1; done
grep -q listening "$tmp/oauth.log" && ok "the OAuth 2.0 server starts" || { bad "OAuth server" "$(cat "$tmp/oauth.log")"; finish "$label"; exit 1; }
OAUTH="http://127.0.0.1:$oauth_port"

start_sink && ok "provider sink starts" || bad "provider sink starts"

SP_CFG_EXTRA='[sender]
threads = 1
backoff_base = 0s
backoff_max = 1s
poll = 1s'
sp_start main && ok "sealpostd starts" || { bad "sealpostd starts"; finish "$label"; exit 1; }
make_tenant acme && ok "tenant" || bad "tenant"

channel() { # ID SECRET
  tenant_curl PUT "/v1/channels/$1" '{"kind":"sms","nickname":"OAuth provider",
   "request":{"endpoint":"'"$SINK"'/send","method":"POST","body":{"type":"json","template":"{\"to\":\"$$To\",\"text\":\"$$Body\",\"id\":\"$$MessageID\"}"}},
   "auth":{"type":"oauth2","token_url":"'"$OAUTH"'/token","client_id":"sealpost-test","client_secret":"'"$2"'","scope":"send","client_auth":"basic"},
   "encryption":{"enabled":true,"algorithm":"aes-256-gcm","profile":"compat","key":"sms"}}'
}
channel sms right-secret-0815
expect_status "an SMS channel with OAuth 2.0" 201
tenant_curl GET /v1/channels/sms
if grep -q right-secret-0815 "$RESP_BODY"; then bad "GET never shows the client secret"; else ok "GET never shows the client secret"; fi
provider_keys acme sms "local:path=$SP_DIR/kms/acme.key;create=1" && ok "key exchange" || bad "key exchange"
"$PY" - >"$tmp/profiles.json" <<'EOF'
import json
print(json.dumps({"profiles": [{"id": f"p{i}", "attributes": {"phone": f"+1415555{i:04d}"}} for i in range(12)]}))
EOF
tenant_curl POST /v1/profiles "@$tmp/profiles.json"
expect_status "profiles" 200

wait_sent() { wait_campaign "$1" "d['messages']['sent'] == $2" 30; } # CAMPAIGN N
# tokens N..M of raw.jsonl (1-based lines), one per line
tokens() { "$PY" -c 'import json, sys
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]) - 1:]:
    a = json.loads(line)["headers"].get("Authorization", "")
    print(a[7:] if a.startswith("Bearer ") else "NONE")' "$SINK_DIR/raw.jsonl" "$1"; }

tenant_curl POST /v1/campaigns '{"id":"one","channel":"sms","message":{"body":"Your code is 1234"},"audience":{"ids":["p0","p1","p2","p3","p4","p5"]}}'
wait_sent one 6 && ok "six messages sent with OAuth 2.0" || bad "sent with OAuth" "$(resp)"
tokens 1 | sort -u >"$tmp/tokens1"
[ "$(wc -l <"$tmp/tokens1")" = 1 ] && ! grep -qx NONE "$tmp/tokens1" && ok "one bearer token served them all" ||
  bad "one token" "$(cat "$tmp/tokens1")"
# every token was signed by the authorization server
curl -s "$OAUTH/jwks" >"$tmp/jwks.json"
verify() { "$PY" -c 'import json, sys
from jwcrypto import jwk, jwt
keys = jwk.JWKSet.from_json(open(sys.argv[1]).read())
for tok in open(sys.argv[2]).read().split():
    t = jwt.JWT(jwt=tok, key=keys, check_claims={"exp": None})
    c = json.loads(t.claims)
    assert c.get("scope") == "send", c
print("ok")' "$tmp/jwks.json" "$1" 2>&1; }
[ "$(verify "$tmp/tokens1")" = ok ] && ok "the token is the authorization server's (JWKS), scope send" || bad "token verification" "$(verify "$tmp/tokens1")"

# the provider refuses the token once: a fresh one, one more try
n0=$(wc -l <"$SINK_DIR/raw.jsonl")
sink_faults '{"status":401,"count":1}'
tenant_curl POST /v1/campaigns '{"id":"two","channel":"sms","message":{"body":"Your code is 5678"},"audience":{"ids":["p6"]}}'
wait_sent two 1 && ok "sent after the provider's 401" || bad "sent after 401" "$(resp)"
tokens $((n0 + 1)) >"$tmp/tokens2"
# (the server may mint the very same bytes again within one second: its
# tokens carry no nonce; that a fetch happens is tested in test_http_client)
[ "$(wc -l <"$tmp/tokens2")" = 2 ] && [ "$(verify "$tmp/tokens2")" = ok ] &&
  ok "one retry after the 401, with a valid token" || bad "retry after 401" "$(cat "$tmp/tokens2")"

# past the token's lifetime
sleep 3.5
n1=$(wc -l <"$SINK_DIR/raw.jsonl")
tenant_curl POST /v1/campaigns '{"id":"three","channel":"sms","message":{"body":"Later"},"audience":{"ids":["p7"]}}'
wait_sent three 1 && ok "sent later" || bad "sent later" "$(resp)"
tokens $((n1 + 1)) >"$tmp/tokens3"
if ! grep -qxf "$tmp/tokens3" "$tmp/tokens1" "$tmp/tokens2" && [ "$(verify "$tmp/tokens3")" = ok ]; then
  ok "an expired token was replaced"
else
  bad "expired token replaced" "$(cat "$tmp/tokens3")"
fi

# the wrong client secret: nothing reaches the provider, the message is
# dead-lettered (fix the channel, then replay)
channel wrong not-the-secret
expect_status "a channel with a wrong client secret" 201
n2=$(sink_stat requests)
tenant_curl POST /v1/campaigns '{"id":"four","channel":"wrong","message":{"body":"x"},"audience":{"ids":["p8"]}}'
wait_campaign four 'd["messages"]["dead"] == 1' 20 && failed=1 || failed=0
[ "$failed" = 1 ] && ok "refused credentials dead-letter the message" || bad "wrong secret dead-letters" "$(resp)"
[ "$(sink_stat requests)" = "$n2" ] && ok "and nothing reached the provider" || bad "nothing sent with a wrong secret"
channel wrong right-secret-0815
expect_status "the channel's secret fixed" 200
tenant_curl POST /v1/campaigns/four/replay ''
expect_status "replay" 200
wait_sent four 1 && ok "the replay delivers it" || bad "replay after the fix" "$(resp)"
if grep -q -e right-secret-0815 -e not-the-secret "$SP_LOG" "$SP_AUDIT"; then bad "no client secret in the log"; else ok "no client secret in the log"; fi
if cat "$SP_DIR"/sealpost.db* | grep -a -q -e right-secret-0815 -e not-the-secret; then bad "no client secret stored in the clear"; else
  ok "no client secret stored in the clear"; fi
finish "$label"
