# shellcheck shell=bash
# The whole of sealpost on one machine, for tests/integration/test_e2e.sh
# and scripts/demo: sealpostd (the platform) sends through sealpost-relay
# (the provider) to aiosmtpd and to Kannel with a fake SMSC, and the relay
# reports back to sealpostd. Everything listens on 127.0.0.1, lives in $tmp
# and is stopped by the PID recorded when it was started.
#
#   . "$(dirname "$0")/e2e_lib.sh"
#
# It sources sealpostd_lib.sh and relay_lib.sh. Both install an EXIT trap
# that removes $tmp, and each stops only its own processes, so the trap
# here replaces both: sealpostd first (it would retry callbacks into a
# stopped relay otherwise), then every process relay_lib.sh and this file
# started, then $tmp (kept with SP_KEEP_TMP=1). Apart from the trap their
# globals do not clash (PY/py, SINK*/SINK_PORT are separate names).
#
# Between sealpostd and the relay, in both directions, sits a small TLS
# proxy (e2e_start_proxy) that writes every HTTP request it forwards, raw
# body, headers and the answer, to a JSON-lines file: that is where the test
# sees what crossed the wire. sealpostd's endpoint for the channels is the
# proxy in front of the relay; sealpostd's public_url is the proxy in front
# of its own callbacks, so the relay's callbacks cross one too.
#
#   e2e_hsm                       a SoftHSM2 token in $tmp/hsm; exports SOFTHSM2_CONF, sets E2E_KMS
#   e2e_start_smtp                aiosmtpd on SMTP_PORT: mail as $tmp/mail/<n>.eml; RCPT bounce*@ -> 550;
#                                 DATA waits while $tmp/mail.hold exists (e2e_hold / e2e_release)
#   e2e_start_proxy PORT UPSTREAM_PORT CERT KEY UPSTREAM_CA OUT
#   e2e_relay_conf FILE           the relay's config (RELAY_PORT: a free one unless set); needs RELAY_DLR_PORT, KANNEL_*,
#                                 SMTP_PORT, CB_PROXY_PORT, SP_CA and $RELAY_KEYS
#   relay_dlr_sig MESSAGE_ID      (relay_lib.sh) the tag of the relay's dlr-url for a message
#   e2e_opened OUT KEYFILE        what the proxy saw, each request opened with the provider's keys
#                                 (tests/integration/interop.py, written from PROTOCOL.md): JSON lines

# shellcheck source=tests/integration/sealpostd_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/sealpostd_lib.sh"
# shellcheck source=tests/integration/relay_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/relay_lib.sh"

e2e_cleanup() {
  local keep=${SP_KEEP_TMP:-}
  SP_KEEP_TMP=1
  sp_cleanup >/dev/null 2>&1
  relay_cleanup >/dev/null 2>&1
  if [ -n "$keep" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap e2e_cleanup EXIT

RELAY_ACCESS_KEY=ak_e2e_1
RELAY_SECRET=sec-$(randhex 16)
RELAY_SECRET_HASH=$(printf '%s' "$RELAY_SECRET" | sha256sum | cut -d' ' -f1)
RELAY_MERCHANT=acme
RELAY_KEYS="$tmp/relay-keys.json"

e2e_hsm() {
  local dir="$tmp/hsm"
  mkdir -p "$dir/tokens"
  chmod 700 "$dir"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/tokens" >"$dir/softhsm2.conf"
  printf '1234\n' >"$dir/pin"
  chmod 600 "$dir/pin" "$dir/softhsm2.conf"
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  /usr/bin/softhsm2-util --init-token --free --label e2e --so-pin 0000 --pin 1234 >"$dir/init.log" 2>&1 || return 1
  E2E_KMS="pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=e2e;pin-file=$dir/pin;key=acme-master;create=1"
}

e2e_start_smtp() {
  mkdir -p "$tmp/mail"
  SMTP_PORT=$(relay_free_port)
  cat >"$tmp/e2e_smtp.py" <<'EOF'
import asyncio, itertools, os, sys, time
from aiosmtpd.controller import Controller

out, port, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count = itertools.count(1)

class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for _ in range(400):  # at most 20 s
            if not os.path.exists(hold):
                break
            await asyncio.sleep(0.05)
        n = next(count)
        tmpf = os.path.join(out, "%d.tmp" % n)
        with open(tmpf, "wb") as f:
            f.write(("X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos)).encode())
            f.write(envelope.original_content)
        os.rename(tmpf, os.path.join(out, "%d.eml" % n))
        return "250 2.0.0 queued"

c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
while True:
    time.sleep(3600)
EOF
  "$py" "$tmp/e2e_smtp.py" "$tmp/mail" "$SMTP_PORT" "$tmp/mail.hold" >"$tmp/smtp.log" 2>&1 &
  relay_pids+=($!)
  relay_wait_port "$SMTP_PORT" 20
}
e2e_hold() { : >"$tmp/mail.hold"; }
e2e_release() { rm -f "$tmp/mail.hold"; }

e2e_start_proxy() {
  local port=$1 up=$2 cert=$3 key=$4 ca=$5 outf=$6
  [ -f "$tmp/e2e_proxy.py" ] || cat >"$tmp/e2e_proxy.py" <<'EOF'
import http.client, http.server, json, ssl, sys, threading

port, up, cert, key, ca, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
lock = threading.Lock()
upstream = ssl.create_default_context(cafile=ca)
HOP = {"host", "connection", "content-length", "expect", "transfer-encoding", "keep-alive"}

class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.forward("GET")

    def do_POST(self):
        self.forward("POST")

    def forward(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        try:
            c = http.client.HTTPSConnection("127.0.0.1", up, context=upstream, timeout=60)
            c.request(method, self.path, body=body if method == "POST" else None, headers=headers)
            r = c.getresponse()
            data, status, rh = r.read(), r.status, r.getheaders()
            c.close()
        except Exception as e:  # the upstream is down: what a gateway says
            data, status, rh = b'{"error":"proxy: upstream unreachable"}', 502, []
        with lock, open(out, "a") as f:
            f.write(json.dumps({"method": method, "path": self.path, "headers": headers,
                                "body": body.decode("latin-1"), "status": status,
                                "answer": data.decode("latin-1")}) + "\n")
        self.send_response(status)
        for k, v in rh:
            if k.lower() not in HOP and k.lower() not in ("date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Proxy)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
EOF
  : >"$outf"
  "$py" "$tmp/e2e_proxy.py" "$port" "$up" "$cert" "$key" "$ca" "$outf" >>"$tmp/proxy.log" 2>&1 &
  relay_pids+=($!)
  relay_wait_port "$port" 20
}

e2e_relay_conf() {
  relay_conf "$1" "$RELAY_KEYS" 30s info "merchant_id = $RELAY_MERCHANT" \
    "callback_allow = https://127.0.0.1:$CB_PROXY_PORT/callbacks/v1/acme/
inbound_url = https://127.0.0.1:$CB_PROXY_PORT/callbacks/v1/acme/sms/inbound
ca_file = $SP_CA"
}

e2e_opened() {
  "$py" - "$here" "$1" "$2" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import interop
doc = interop.load_keys(sys.argv[3])
for line in open(sys.argv[2]):
    r = json.loads(line)
    if r["method"] != "POST":
        continue
    h = r["headers"]
    # header names as the receiver reads them (any case on the wire)
    want = {"x-aes-key-version": "X-AES-KEY-VERSION", "x-aes-iv": "X-AES-IV", "x-aes-algorithm": "X-AES-ALGORITHM",
            "webhook-id": "webhook-id", "webhook-timestamp": "webhook-timestamp",
            "webhook-signature": "webhook-signature", "content-type": "Content-Type"}
    hh = {want[k.lower()]: v for k, v in h.items() if k.lower() in want}
    o = {"path": r["path"], "status": r["status"], "answer": r["answer"], "version": hh.get("X-AES-KEY-VERSION"),
         "jwe": hh.get("Content-Type") == "application/jose", "wid": hh.get("webhook-id"), "bytes": len(r["body"])}
    try:
        pt = interop.py_open({"headers": hh, "body": r["body"]}, doc, tolerance=10 ** 9)
        o["plaintext"] = pt.decode()
    except Exception as e:
        o["error"] = repr(e)[:200]
    print(json.dumps(o))
EOF
}

# e2e_channel_docs: $E2E_MAIL_DOC and $E2E_SMS_DOC, channels to the relay through the proxy on
# RELAY_PROXY_PORT: e-mail compat AES-256-GCM, SMS JWE in batches of 10; both with the relay's
# credential as secret headers and the provider key "relay" (one relay, one key).
e2e_channel_docs() {
  E2E_MAIL_DOC=$("$py" - "$RELAY_PROXY_PORT" "$RELAY_ACCESS_KEY" "$RELAY_SECRET" "$RELAY_MERCHANT" <<'EOF'
import json, sys
port, ak, secret, merchant = sys.argv[1:5]
print(json.dumps({"kind": "email", "nickname": "Relay mail",
  "request": {"endpoint": f"https://127.0.0.1:{port}/v1/messages", "headers": {"X-Merchant-Id": merchant},
    "body": {"type": "json", "template": json.dumps({"kind": "email", "message_id": "$$MessageID", "to": "$$To",
      "from": "$$FromAddress", "from_name": "$$FromName", "subject": "$$Subject", "text": "$$Plaintext",
      "dlr_url": "$$DeliveryReportURL"})}},
  "auth": {"type": "headers", "headers": {"X-Client-Access-Key": ak, "X-Api-Secret": secret}},
  "from_name": "Acme", "from_address": "news@acme.example",
  "encryption": {"enabled": True, "algorithm": "aes-256-gcm", "profile": "compat", "key": "relay"}}))
EOF
)
  E2E_SMS_DOC=$("$py" - "$RELAY_PROXY_PORT" "$RELAY_ACCESS_KEY" "$RELAY_SECRET" "$RELAY_MERCHANT" <<'EOF'
import json, sys
port, ak, secret, merchant = sys.argv[1:5]
print(json.dumps({"kind": "sms", "nickname": "Relay SMS",
  "request": {"endpoint": f"https://127.0.0.1:{port}/v1/messages", "headers": {"X-Merchant-Id": merchant},
    "body": {"type": "json", "template": json.dumps({"kind": "sms", "message_id": "$$MessageID", "to": "$$To",
      "text": "$$Body", "sender": "$$SenderID", "dlr_url": "$$DeliveryReportURL", "inbound_url": "$$InboundURL"})},
    "batch": {"array_key": "messages", "size": 10}},
  "auth": {"type": "headers", "headers": {"X-Client-Access-Key": ak, "X-Api-Secret": secret}},
  "sender_id": "ACME",
  "encryption": {"enabled": True, "algorithm": "aes-256-gcm", "profile": "jwe", "key": "relay"}}))
EOF
)
}

# e2e_up: everything started and connected, the tenant "acme" (master key in SoftHSM2) with the
# channels "mail" and "sms", the provider key exchanged. Says what failed on stderr.
e2e_up() {
  e2e_hsm || { echo "e2e: SoftHSM2 token: $(cat "$tmp/hsm/init.log")" >&2; return 1; }
  relay_tls
  e2e_start_smtp || { echo "e2e: aiosmtpd did not start: $(tail -3 "$tmp/smtp.log")" >&2; return 1; }
  relay_start_kannel || { echo "e2e: Kannel did not start: $(tail -3 "$tmp/kannel/bearerbox.log" 2>/dev/null)" >&2; return 1; }
  RELAY_PROXY_PORT=$(relay_free_port)
  CB_PROXY_PORT=$(relay_free_port)
  SP_CFG_EXTRA="[server]
public_url = https://127.0.0.1:$CB_PROXY_PORT

[sender]
threads = 2
batch = 4
in_flight = 2
backoff_base = 1s
poll = 1s
timeout = 30s
ca_file = $tmp/tls/cert.pem"
  sp_start main || return 1
  # first_name is personal too: the vault encrypts it like the address and the number
  make_tenant acme ",\"kms\":$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$E2E_KMS"),\"pii_fields\":[{\"name\":\"email\",\"kind\":\"email\"},{\"name\":\"phone\",\"kind\":\"phone\"},{\"name\":\"first_name\",\"kind\":\"text\"}]" || return 1
  e2e_channel_docs
  tenant_curl PUT /v1/channels/mail "$E2E_MAIL_DOC"
  [ "$HTTP_CODE" = 201 ] || { echo "e2e: PUT /v1/channels/mail: $(resp)" >&2; return 1; }
  tenant_curl PUT /v1/channels/sms "$E2E_SMS_DOC"
  [ "$HTTP_CODE" = 201 ] || { echo "e2e: PUT /v1/channels/sms: $(resp)" >&2; return 1; }
  E2E_V1=$(pyj 'd["encryption_key_version"]')
  # the stored KMS config names the master key made (key-id=…), as the CLI needs it
  E2E_KMS_PINNED=$(sqlite3 "$SP_DIR/sealpost.db" "SELECT json_extract(settings, '\$.kms') FROM tenants WHERE id = 'acme'")
  SINK_KEYS=$RELAY_KEYS
  provider_keys acme relay "$E2E_KMS_PINNED" || return 1
  e2e_relay_conf "$tmp/relay.conf"
  e2e_start_proxy "$RELAY_PROXY_PORT" "$RELAY_PORT" "$tmp/tls/cert.pem" "$tmp/tls/key.pem" "$tmp/tls/cert.pem" "$tmp/wire-out.jsonl" ||
    { echo "e2e: proxy to the relay did not start" >&2; return 1; }
  e2e_start_proxy "$CB_PROXY_PORT" "$SP_PORT" "$SP_DIR/cert.pem" "$SP_DIR/key.pem" "$SP_CA" "$tmp/wire-back.jsonl" ||
    { echo "e2e: proxy to sealpostd did not start" >&2; return 1; }
  relay_start "$tmp/relay.conf" || { echo "e2e: the relay did not start: $(tail -5 "$tmp/relay.out")" >&2; return 1; }
}
