# shellcheck shell=bash
# Helpers for sealpost-relay's integration tests: start the real delivery
# systems the relay talks to, each on a free 127.0.0.1 port inside $tmp,
# and stop every process by the PID recorded when it was started.
#
#   . "$(dirname "$0")/lib.sh"; . "$(dirname "$0")/relay_lib.sh"
#
#   relay_tls                       self-signed cert for 127.0.0.1: $tmp/tls/{cert,key}.pem
#   relay_start_smtp                aiosmtpd; mail as $tmp/mail/<n>.eml; RCPT bounce*@ -> 550,
#                                   defer*@ -> 451; sets SMTP_PORT
#   relay_start_kannel              bearerbox + smsbox + fakesmsc (receiving); sets KANNEL_SENDSMS,
#                                   KANNEL_USER, KANNEL_PASS; fakesmsc output in $tmp/fakesmsc.out
#   relay_fakesmsc_mo FROM TEXT     stops the receiving fakesmsc, sends one MO, starts it again
#   relay_start_sink KEYFILE        platform_sink.py serve; sets SINK_PORT, SINK_OUT
#   relay_start_sink2 KEYFILE PORT OUT   a second sink, e.g. on $LATE_PORT (a platform that is
#                                   down at first: callbacks to http://127.0.0.1:$LATE_PORT/late/)
#   relay_write_conf FILE KEYFILE EXTRA   a relay config for the above (EXTRA: more INI text,
#                                   appended); sets RELAY_PORT and LATE_PORT
#   relay_start CONF                sealpost-relay; sets RELAY_PID, RELAY_URL
#   relay_stop                      stops the relay (SIGTERM, then waits); sets RELAY_STATUS
#   relay_wait_for FILE PATTERN [SECONDS]   waits until grep -q PATTERN FILE
#
# Env: SP_RELAY (the relay binary; default beside $cli); SP_KEEP_TMP=1 keeps $tmp (logs,
# mail, the sink's records) for a look after a failure.
relay_bin="${SP_RELAY:-$(dirname "$cli")/sealpost-relay}"
py=/usr/bin/python3
relay_pids=()
relay_cleanup() {
  local p
  for p in "${relay_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${relay_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ -n "${SP_KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap relay_cleanup EXIT

relay_free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# relay_wait_port PORT [SECONDS]
relay_wait_port() {
  local port=$1 limit=${2:-20} i
  for i in $(seq $((limit * 10))); do
    if "$py" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

relay_wait_for() {
  local file=$1 pattern=$2 limit=${3:-20} i
  for i in $(seq $((limit * 10))); do
    if [ -f "$file" ] && grep -q -- "$pattern" "$file"; then return 0; fi
    sleep 0.1
  done
  return 1
}

relay_tls() {
  mkdir -p "$tmp/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$tmp/tls/key.pem" -out "$tmp/tls/cert.pem" 2>/dev/null
  chmod 600 "$tmp/tls/key.pem"
}

relay_start_smtp() {
  mkdir -p "$tmp/mail"
  SMTP_PORT=$(relay_free_port)
  cat >"$tmp/smtp_sink.py" <<'EOF'
import itertools, os, sys, time
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])
count = itertools.count(1)

class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("bounce"):
            return "550 5.1.1 no such user"
        if local.startswith("defer"):
            return "451 4.2.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(count)
        with open(os.path.join(out, "%d.tmp" % n), "wb") as f:
            f.write(("X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n" % (envelope.mail_from, ",".join(envelope.rcpt_tos))).encode())
            f.write(envelope.original_content)
        os.rename(os.path.join(out, "%d.tmp" % n), os.path.join(out, "%d.eml" % n))
        return "250 2.0.0 queued"

c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
while True:
    time.sleep(3600)
EOF
  "$py" "$tmp/smtp_sink.py" "$tmp/mail" "$SMTP_PORT" >"$tmp/smtp.log" 2>&1 &
  relay_pids+=($!)
  relay_wait_port "$SMTP_PORT" 20
}

relay_start_kannel() {
  local admin box fake
  admin=$(relay_free_port); box=$(relay_free_port); fake=$(relay_free_port)
  KANNEL_SENDSMS_PORT=$(relay_free_port)
  KANNEL_FAKE_PORT=$fake
  KANNEL_USER=relay
  KANNEL_PASS=kannel-pass-1
  KANNEL_SENDSMS="http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms"
  RELAY_DLR_PORT=$(relay_free_port)
  mkdir -p "$tmp/kannel"
  cat >"$tmp/kannel/kannel.conf" <<EOF
group = core
admin-port = $admin
admin-interface = 127.0.0.1
admin-password = admin-$RANDOM
admin-allow-ip = 127.0.0.1
smsbox-port = $box
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "$tmp/kannel/bearerbox.log"
log-level = 1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake0
port = $fake
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = $box
sendsms-port = $KANNEL_SENDSMS_PORT
sendsms-interface = 127.0.0.1
global-sender = 12345
log-file = "$tmp/kannel/smsbox.log"
log-level = 1

group = sendsms-user
username = $KANNEL_USER
password = $KANNEL_PASS

group = sms-service
keyword = default
get-url = "http://127.0.0.1:$RELAY_DLR_PORT/kannel/mo?from=%p&text=%a&ts=%T&smsc=%i"
max-messages = 0
catch-all = true
EOF
  /usr/sbin/bearerbox "$tmp/kannel/kannel.conf" >"$tmp/kannel/bearerbox.out" 2>&1 &
  relay_pids+=($!)
  relay_wait_port "$box" 20 || return 1
  /usr/sbin/smsbox "$tmp/kannel/kannel.conf" >"$tmp/kannel/smsbox.out" 2>&1 &
  relay_pids+=($!)
  relay_wait_port "$KANNEL_SENDSMS_PORT" 20 || return 1
  relay_wait_port "$fake" 20 || return 1
  relay_start_fakesmsc
}

relay_start_fakesmsc() {
  /usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r "$KANNEL_FAKE_PORT" -m 0 "1 2 text x" >>"$tmp/fakesmsc.out" 2>&1 &
  FAKESMSC_PID=$!
  relay_pids+=($FAKESMSC_PID)
  relay_wait_for "$tmp/kannel/bearerbox.log" "Fakesmsc client connected" 20
}

relay_fakesmsc_mo() {
  local from=$1 text=$2
  kill "$FAKESMSC_PID" 2>/dev/null || true
  wait "$FAKESMSC_PID" 2>/dev/null || true
  sleep 0.5
  /usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r "$KANNEL_FAKE_PORT" -m 1 -i 0.1 "$from 12345 text $text" \
    >>"$tmp/fakesmsc_mo.out" 2>&1 &
  local mo=$!
  relay_pids+=($mo)
  # it sends, then exits once the message went out
  for _ in $(seq 100); do kill -0 "$mo" 2>/dev/null || break; sleep 0.1; done
  kill "$mo" 2>/dev/null || true
  sleep 0.5
  relay_start_fakesmsc
}

# relay_start_sink KEYFILE [PORT]: the first sink sets SINK_PORT and SINK_OUT
relay_start_sink() {
  SINK_OUT="$tmp/sink.jsonl"
  : >"$SINK_OUT"
  "$py" "$here/platform_sink.py" serve "$tmp/sink.port" "$1" "$SINK_OUT" --port "${2:-0}" >"$tmp/sink.log" 2>&1 &
  relay_pids+=($!)
  relay_wait_for "$tmp/sink.port" "[0-9]" 20 || return 1
  SINK_PORT=$(cat "$tmp/sink.port")
}

# relay_start_sink2 KEYFILE PORT OUT: another sink (a platform that comes up late); sets SINK2_PID
relay_start_sink2() {
  "$py" "$here/platform_sink.py" serve "$tmp/sink2.port" "$1" "$3" --port "$2" >"$tmp/sink2.log" 2>&1 &
  SINK2_PID=$!
  relay_pids+=($SINK2_PID)
  relay_wait_for "$tmp/sink2.port" "[0-9]" 20
}

# relay_conf FILE KEYFILE SMTP_TIMEOUT LOG_LEVEL AUTH_LINES PLATFORM_LINES [EXTRA]:
# a relay config on 127.0.0.1:RELAY_PORT (a free port when unset), TLS from
# $tmp/tls, the SMTP and Kannel this library started, the credential
# RELAY_ACCESS_KEY/RELAY_SECRET_HASH after AUTH_LINES, PLATFORM_LINES in
# [platform]. test_relay.sh and e2e_lib.sh differ only in those.
relay_conf() {
  local file=$1 keyfile=$2 smtp_timeout=$3 level=$4 auth=$5 platform=$6 extra=${7:-}
  RELAY_PORT=${RELAY_PORT:-$(relay_free_port)}
  cat >"$file" <<EOF
[server]
listen = 127.0.0.1:$RELAY_PORT
tls_cert = $tmp/tls/cert.pem
tls_key = $tmp/tls/key.pem
threads = 4
allow = 127.0.0.1/32

[auth]
$auth
credential = $RELAY_ACCESS_KEY:$RELAY_SECRET_HASH:0

[keys]
file = $keyfile

[smtp]
url = smtp://127.0.0.1:$SMTP_PORT
starttls = try
timeout = $smtp_timeout

[kannel]
sendsms_url = $KANNEL_SENDSMS
username = $KANNEL_USER
password = $KANNEL_PASS
smsc = fake0
dlr_listen = 127.0.0.1:$RELAY_DLR_PORT

[platform]
$platform
retry_scale = 0.01

[state]
path = $tmp/relay-state.db

[log]
path = $tmp/relay.log
level = $level
$extra
EOF
}

# relay_write_conf FILE KEYFILE [EXTRA]: test_relay.sh's config, on a new port
relay_write_conf() {
  RELAY_PORT=$(relay_free_port)
  LATE_PORT=${LATE_PORT:-$(relay_free_port)}
  relay_conf "$1" "$2" 10s debug "merchant_id = merchant-1
sub_merchants = sub-a, sub-b" "callback_allow = http://127.0.0.1:$SINK_PORT/cb/, http://127.0.0.1:$SINK_PORT/flaky/, http://127.0.0.1:$LATE_PORT/late/
inbound_url = http://127.0.0.1:$SINK_PORT/cb/inbound" "${3:-}"
}

# relay_dlr_sig MESSAGE_ID: the tag of a Kannel dlr-url, computed from
# docs/RELAY.md's recipe (HKDF of the state key file's active key, then an
# HMAC of the message id), not by the relay.
relay_dlr_sig() {
  "$py" - "$here" "$tmp/relay-state.db.key" "$1" <<'EOF'
import hashlib, hmac, sys
sys.path.insert(0, sys.argv[1])
import interop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
_, key = interop.active_of(interop.load_keys(sys.argv[2]))
k = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"sealpost-relay", info=b"sealpost-relay state v1").derive(key)
print(hmac.new(k, b"sealpost-relay dlr tag\x00" + sys.argv[3].encode(), hashlib.sha256).hexdigest()[:32])
EOF
}

relay_start() {
  "$relay_bin" --config "$1" >>"$tmp/relay.out" 2>&1 &
  RELAY_PID=$!
  relay_pids+=($RELAY_PID)
  RELAY_URL="https://127.0.0.1:$RELAY_PORT/v1/messages"
  relay_wait_port "$RELAY_PORT" 20
}

# relay_stop: SIGTERM; RELAY_STATUS gets its exit status
relay_stop() {
  kill "$RELAY_PID" 2>/dev/null || true
  RELAY_STATUS=0
  wait "$RELAY_PID" 2>/dev/null || RELAY_STATUS=$?
}
