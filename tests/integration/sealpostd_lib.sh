# shellcheck shell=bash
# Shared by the sealpostd integration tests (test_sealpostd_*.sh,
# test_openapi.sh, test_no_plaintext_at_rest.sh, test_tls_audit.sh) and the
# ingestion bench. A test needs a running daemon of its own: a scratch
# directory with a self-signed certificate, a config file, a store, a data
# directory and logs, a free port on 127.0.0.1, an admin credential, and a
# way to call the API and look at what came back. Everything started here is
# stopped by its PID when the script ends, however it ends.
#
#   . "$(dirname "$0")/sealpostd_lib.sh"
#   need_daemon "label"
#   sp_start main                      # an instance named "main" (the current one)
#   make_tenant acme                   # $TENANT_KEY / $TENANT_SECRET / $TENANT_CRED
#   tenant_curl POST /v1/profiles '{"attributes":{"email":"a@example.com"}}'
#   [ "$HTTP_CODE" = 200 ] && ok "..." || bad "..." "$(resp)"
#
# After a call: $HTTP_CODE, the body in $RESP_BODY (a file), the headers in
# $RESP_HEADERS (a file). Instances are named; sp_use NAME makes another one
# current. Env: SP_DAEMON (the sealpostd binary; else $SP_BUILD_DIR/sealpostd,
# else $src/build/sealpostd), SP_SOURCE_DIR, SP_BUILD_DIR.
#
# A config is written from variables the caller may set before sp_start:
#   SP_CFG_ADMIN_ALLOW, SP_CFG_TENANT_ALLOW, SP_CFG_STORE_URL (default: an
#   SQLite file in the instance directory), SP_CFG_THREADS, SP_CFG_EXTRA (raw
#   INI text appended at the end, e.g. a [limits] section).

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY=/usr/bin/python3
daemon="${SP_DAEMON:-${SP_BUILD_DIR:-$src/build}/sealpostd}"
case $daemon in /*) ;; *) daemon="$(pwd)/$daemon" ;; esac

RESP_BODY="$tmp/resp.body"
RESP_HEADERS="$tmp/resp.headers"
HTTP_CODE=""

declare -gA SP_I_DIR=() SP_I_PORT=() SP_I_PID=() SP_I_AKEY=() SP_I_ASECRET=()
SP_CUR=""
# Of the current instance (sp_use sets them):
SP_DIR="" SP_PORT="" SP_PID="" SP_URL="" SP_CA="" SP_CONF="" SP_AUDIT="" SP_LOG=""
ADMIN_KEY="" ADMIN_SECRET=""

sp_cleanup() {
  local name
  stop_sink
  for name in "${!SP_I_PID[@]}"; do
    sp_stop "$name" >/dev/null 2>&1 || true
  done
  if [ -n "${SP_KEEP_TMP:-}" ]; then
    echo "kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap sp_cleanup EXIT

# need_daemon LABEL: ends the script as failed when there is no sealpostd.
need_daemon() {
  if [ ! -x "$daemon" ]; then
    bad "sealpostd binary not found at $daemon"
    finish "$1" || exit 1
  fi
}

# need_cmd LABEL CMD...: a missing component is a failure, never a skip.
need_cmd() {
  local label=$1 c
  shift
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1; then
      bad "required command '$c' not found (scripts/bootstrap installs it)"
      finish "$label" || exit 1
    fi
  done
}

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# make_cert DIR: a self-signed P-256 certificate for 127.0.0.1 and localhost
# (DIR/cert.pem, DIR/key.pem), good for two days.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$1/key.pem" -out "$1/cert.pem" >/dev/null 2>&1
  chmod 600 "$1/key.pem"
}

# sp_write_config DIR PORT: the instance's config file (DIR/sealpostd.conf).
sp_write_config() {
  local dir=$1 port=$2
  cat >"$dir/sealpostd.conf" <<EOF
; written by tests/integration/sealpostd_lib.sh
[server]
listen = 127.0.0.1:$port
tls_cert = $dir/cert.pem
tls_key = $dir/key.pem
threads = ${SP_CFG_THREADS:-2}

[store]
url = ${SP_CFG_STORE_URL:-sqlite:$dir/sealpost.db}

[data]
dir = $dir

[log]
path = $dir/sealpostd.log
level = ${SP_CFG_LOG_LEVEL:-info}

[audit]
path = $dir/audit.log

[security]
admin_allow = ${SP_CFG_ADMIN_ALLOW:-127.0.0.1/32, ::1/128}
default_tenant_allow = ${SP_CFG_TENANT_ALLOW:-127.0.0.1/32, ::1/128}
EOF
  if [ -n "${SP_CFG_EXTRA:-}" ]; then printf '\n%s\n' "$SP_CFG_EXTRA" >>"$dir/sealpostd.conf"; fi
  chmod 600 "$dir/sealpostd.conf"
}

# sp_use NAME: makes instance NAME the current one.
sp_use() {
  SP_CUR=$1
  SP_DIR=${SP_I_DIR[$1]}
  SP_PORT=${SP_I_PORT[$1]}
  SP_PID=${SP_I_PID[$1]:-}
  SP_URL="https://127.0.0.1:$SP_PORT"
  SP_CA="$SP_DIR/cert.pem"
  SP_CONF="$SP_DIR/sealpostd.conf"
  SP_AUDIT="$SP_DIR/audit.log"
  SP_LOG="$SP_DIR/sealpostd.log"
  ADMIN_KEY=${SP_I_AKEY[$1]:-}
  ADMIN_SECRET=${SP_I_ASECRET[$1]:-}
}

# sp_start NAME [--no-admin]: a new instance in its own directory with an
# admin credential (unless --no-admin), started and healthy; it becomes
# current.
# Returns non-zero (and says why on stderr) when the daemon does not come up.
sp_start() {
  local name=$1 dir port
  dir="$tmp/sp-$name"
  mkdir -p "$dir"
  chmod 700 "$dir"
  port=$(free_port)
  make_cert "$dir" || { echo "sp_start: openssl could not make a certificate" >&2; return 1; }
  sp_write_config "$dir" "$port"
  SP_I_DIR[$name]=$dir
  SP_I_PORT[$name]=$port
  sp_use "$name"
  # Before the daemon starts: admin-credential writes the audit log, which
  # a running daemon holds (flock) for itself.
  if [ "${2:-}" != "--no-admin" ]; then
    sp_admin_credential || return 1
  fi
  sp_launch "$name" || return 1
}

# sp_launch NAME: (re)starts an instance whose directory and config exist.
sp_launch() {
  local name=$1 i
  sp_use "$name"
  "$daemon" --config "$SP_CONF" >>"$SP_DIR/stdout.log" 2>>"$SP_DIR/stderr.log" </dev/null &
  SP_I_PID[$name]=$!
  SP_PID=$!
  for i in $(seq 1 100); do
    if ! kill -0 "$SP_PID" 2>/dev/null; then
      echo "sp_start: sealpostd exited at start: $(tail -c 600 "$SP_DIR/stderr.log")" >&2
      unset 'SP_I_PID[$name]'
      return 1
    fi
    if curl -s -o /dev/null --max-time 2 --cacert "$SP_CA" "$SP_URL/healthz" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "sp_start: sealpostd did not answer /healthz within 10 s" >&2
  return 1
}

# sp_admin_credential [ARGS...]: a new admin credential for the current
# instance (sealpostd admin-credential, while the daemon is stopped); becomes
# ADMIN_KEY/ADMIN_SECRET and its JSON is left in $tmp/admin-cred.json.
sp_admin_credential() {
  if ! "$daemon" admin-credential --config "$SP_CONF" "$@" >"$tmp/admin-cred.json" 2>"$tmp/admin-cred.err"; then
    echo "sp_admin_credential: failed: $(head -c 400 "$tmp/admin-cred.err")" >&2
    return 1
  fi
  ADMIN_KEY=$(jfield "$tmp/admin-cred.json" client_access_key) || return 1
  ADMIN_SECRET=$(jfield "$tmp/admin-cred.json" api_secret) || return 1
  SP_I_AKEY[$SP_CUR]=$ADMIN_KEY
  SP_I_ASECRET[$SP_CUR]=$ADMIN_SECRET
}

# sp_stop [NAME]: SIGTERM, up to 15 s for a graceful exit, then SIGKILL.
# Returns the daemon's exit status (137 after SIGKILL).
sp_stop() {
  local name=${1:-$SP_CUR} pid i rc=0
  pid=${SP_I_PID[$name]:-}
  [ -n "$pid" ] || return 0
  unset 'SP_I_PID[$name]'
  [ "$name" = "$SP_CUR" ] && SP_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "sp_stop: sealpostd $pid ignored SIGTERM for 15 s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return $rc
}

# ---- calling the API -------------------------------------------------------
# sp_curl METHOD PATH [BODY [CURL_ARGS...]]: one request to the current
# instance. BODY "" sends none; "@FILE" sends the file; anything else is sent
# as is with Content-Type: application/json (override it in CURL_ARGS with
# -H 'Content-Type: ...'). Leaves $HTTP_CODE, $RESP_BODY, $RESP_HEADERS.
sp_curl() {
  local method=$1 path=$2 body=${3:-}
  shift 2
  if [ $# -gt 0 ]; then shift; fi
  local args=(-sS -X "$method" --cacert "$SP_CA" --max-time 30 -o "$RESP_BODY" -D "$RESP_HEADERS" -w '%{http_code}')
  if [ -n "$body" ]; then
    args+=(--data-binary "$body")
    # curl sends every -H it is given: the caller's Content-Type (or its
    # removal, "Content-Type:") replaces the default instead of adding one.
    local a own_type=""
    for a in "$@"; do
      case $a in [Cc]ontent-[Tt]ype:*) own_type=1 ;; esac
    done
    [ -n "$own_type" ] || args+=(-H 'Content-Type: application/json')
  fi
  : >"$RESP_BODY"
  : >"$RESP_HEADERS"
  # A server may answer (413, say) and close while curl still sends: curl
  # then fails, but the status it prints is the answer that came back.
  HTTP_CODE=$(curl "${args[@]}" "$@" "$SP_URL$path" 2>"$tmp/curl.err") || true
  # After "100 Continue" and a broken upload curl reports 100: the final
  # status line in the headers is the answer.
  local last
  last=$(awk '/^HTTP\/[0-9.]+ [0-9][0-9][0-9]/ { s = $2 } END { print s }' "$RESP_HEADERS" 2>/dev/null)
  if [ -n "$last" ] && [ "$last" != 100 ]; then HTTP_CODE=$last; fi
  # 000: no final answer came back (connection closed or refused).
  case $HTTP_CODE in [2-5][0-9][0-9]) ;; *) HTTP_CODE="000" ;; esac
}
# admin_curl METHOD PATH [BODY [CURL_ARGS...]]: with the admin credential.
admin_curl() {
  local m=$1 p=$2 b=${3:-}
  shift 2
  if [ $# -gt 0 ]; then shift; fi
  sp_curl "$m" "$p" "$b" -H "X-Client-Access-Key: $ADMIN_KEY" -H "X-Api-Secret: $ADMIN_SECRET" "$@"
}
# tenant_curl METHOD PATH [BODY [CURL_ARGS...]]: with $TENANT_KEY/$TENANT_SECRET.
tenant_curl() {
  local m=$1 p=$2 b=${3:-}
  shift 2
  if [ $# -gt 0 ]; then shift; fi
  sp_curl "$m" "$p" "$b" -H "X-Client-Access-Key: $TENANT_KEY" -H "X-Api-Secret: $TENANT_SECRET" "$@"
}
# as_curl KEY SECRET METHOD PATH [BODY [CURL_ARGS...]]: with any credential.
as_curl() {
  local k=$1 s=$2 m=$3 p=$4 b=${5:-}
  shift 4
  if [ $# -gt 0 ]; then shift; fi
  sp_curl "$m" "$p" "$b" -H "X-Client-Access-Key: $k" -H "X-Api-Secret: $s" "$@"
}

# resp: the last status and body, short, for failure messages.
resp() { printf '%s %s' "$HTTP_CODE" "$(head -c 300 "$RESP_BODY" 2>/dev/null | tr -c '[:print:]' '.')"; }
# resp_header NAME: a header of the last response (value, trimmed), or "".
resp_header() {
  awk -v n="$1" 'BEGIN { IGNORECASE = 1; n = tolower(n) }
    { line = $0; sub(/\r$/, "", line); i = index(line, ":");
      if (i > 0 && tolower(substr(line, 1, i - 1)) == n) { v = substr(line, i + 1); sub(/^[ \t]+/, "", v); print v; exit } }' "$RESP_HEADERS"
}
# error_code: the stable error code of the last response's body, or "".
error_code() { jpath "$RESP_BODY" '["error"]["code"]' 2>/dev/null || true; }

# expect_status NAME STATUS [CODE]: the last response had STATUS and, when
# CODE is given, the error body {"error":{"code":CODE,...}} with a JSON
# content type.
expect_status() {
  local name=$1 want=$2 code=${3:-} ct
  if [ "$HTTP_CODE" != "$want" ]; then
    bad "$name" "want $want${code:+ $code}, got $(resp)"
    return 1
  fi
  if [ -n "$code" ]; then
    ct=$(resp_header Content-Type)
    case $ct in
      application/json*) ;;
      *) bad "$name" "error body content type '$ct'"; return 1 ;;
    esac
    if [ "$(error_code)" != "$code" ]; then
      bad "$name" "want code $code, got $(resp)"
      return 1
    fi
  fi
  ok "$name"
}

# ---- JSON (python3 instead of a jq dependency) ------------------------------
# pyj EXPR: evaluates a Python expression with d = the last response body
# (JSON) and prints it; "ERR" when that fails.
pyj() {
  "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))' "$RESP_BODY" "$1" 2>/dev/null || echo ERR
}
# check NAME PYEXPR: PYEXPR (over d, the last body) is true.
check() {
  if [ "$(pyj "bool($2)")" = true ]; then ok "$1"; else bad "$1" "$(resp)"; fi
}
# wait_campaign ID PYEXPR [SECONDS]: polls GET /v1/campaigns/ID (as the
# current tenant) until PYEXPR holds over its body, e.g.
# 'd["messages"]["sent"] == 3'; false after SECONDS (default 30).
wait_campaign() {
  local id=$1 cond=$2 limit=${3:-30} i
  for i in $(seq 1 $((limit * 5))); do
    tenant_curl GET "/v1/campaigns/$id"
    [ "$(pyj "bool($cond)")" = true ] && return 0
    sleep 0.2
  done
  return 1
}
# jfield FILE KEY: a top-level string/number field of a JSON file.
jfield() { jpath "$1" "[\"$2\"]"; }
# jpath FILE PYEXPR: d<PYEXPR> of the JSON document in FILE (e.g. '["a"][0]');
# strings print raw, other values as JSON. Fails on a missing path.
jpath() {
  "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1], "rb"))
v = eval("d" + sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))' "$1" "$2"
}

# ---- tenants -----------------------------------------------------------------
declare -gA TKEYS=() TSECRETS=() TCREDS=()
# make_tenant ID [EXTRA_JSON_MEMBERS]: POST /admin/v1/tenants (with
# ',"allow_ips":[…]' style extra members) and a credential for it; exports
# TENANT_ID, TENANT_KEY, TENANT_SECRET, TENANT_CRED (also kept in
# TKEYS/TSECRETS/TCREDS[ID]). Fails (message on stderr) when either is refused.
make_tenant() {
  local id=$1 extra=${2:-}
  admin_curl POST /admin/v1/tenants "{\"id\":\"$id\",\"name\":\"Tenant $id\"$extra}"
  if [ "$HTTP_CODE" != 201 ]; then
    echo "make_tenant $id: POST /admin/v1/tenants: $(resp)" >&2
    return 1
  fi
  make_credential "$id" '{}' || return 1
}
# new_credential TENANT [BODY]: POST .../credentials; sets NEW_KEY,
# NEW_SECRET, NEW_CRED (the tenant's current credential stays as it was).
new_credential() {
  local id=$1 body=${2:-'{}'}
  admin_curl POST "/admin/v1/tenants/$id/credentials" "$body"
  if [ "$HTTP_CODE" != 201 ]; then
    echo "new_credential $id: $(resp)" >&2
    return 1
  fi
  NEW_KEY=$(jfield "$RESP_BODY" client_access_key)
  NEW_SECRET=$(jfield "$RESP_BODY" api_secret)
  NEW_CRED=$(jfield "$RESP_BODY" id)
}
# make_credential TENANT [BODY]: new_credential, which then becomes the
# tenant's current one (TENANT_*, TKEYS/TSECRETS/TCREDS[TENANT]).
make_credential() {
  new_credential "$@" || return 1
  TKEYS[$1]=$NEW_KEY
  TSECRETS[$1]=$NEW_SECRET
  TCREDS[$1]=$NEW_CRED
  use_tenant "$1"
  export TENANT_ID TENANT_KEY TENANT_SECRET TENANT_CRED
}
# use_tenant ID: makes a tenant made earlier the one tenant_curl speaks for.
use_tenant() {
  TENANT_ID=$1
  TENANT_KEY=${TKEYS[$1]}
  TENANT_SECRET=${TSECRETS[$1]}
  TENANT_CRED=${TCREDS[$1]}
}

# ---- a provider (tests/integration/provider_sink.py) -------------------------------
SINK="" SINK_DIR="" SINK_KEYS="" SINK_PID=""
# start_sink: the provider on a free port of 127.0.0.1, verifying and
# decrypting with the key file $SINK_KEYS (filled by provider_keys); $SINK is
# its URL, $SINK_DIR holds raw.jsonl and received.jsonl. sp_cleanup stops it.
start_sink() {
  local port
  port=$(free_port)
  SINK_DIR="$tmp/sink"
  SINK_KEYS="$tmp/provider-keys.json"
  mkdir -p "$SINK_DIR"
  "$PY" "$here/provider_sink.py" "$port" "$SINK_DIR" "$SINK_KEYS" >"$tmp/sink.log" 2>&1 &
  SINK_PID=$!
  SINK="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do [ -f "$SINK_DIR/ready" ] && return 0; sleep 0.1; done
  echo "start_sink: $(tail -c 400 "$tmp/sink.log")" >&2
  return 1
}
stop_sink() {
  if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
  SINK_PID=""
}
# sink_stat NAME: one of the provider's counters (requests, accepted,
# distinct, repeats, rejected, faulted, records).
sink_stat() { curl -s "$SINK/_sink/stats" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# sink_faults JSON: the provider's fault plan (see provider_sink.py).
sink_faults() { curl -s -o /dev/null -X POST --data-binary "$1" "$SINK/_sink/faults"; }
# provider_keys TENANT KEY KMS [STORE_URL]: the provider gets the channel
# key KEY of TENANT through the JWE key exchange (sealpost keys export, then
# import into $SINK_KEYS), as a real provider would; the store defaults to
# the current instance's SQLite file. Fails with the CLI's words on stderr.
provider_keys() {
  local store=${4:-sqlite:$SP_DIR/sealpost.db}
  if [ ! -f "$tmp/provider.pem" ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/provider.pem" 2>/dev/null &&
      openssl pkey -in "$tmp/provider.pem" -pubout -out "$tmp/provider.pub" 2>/dev/null || return 1
  fi
  "$cli" keys export --store "$store" --kms "$3" --tenant "$1" --channel "$2" --recipient "$tmp/provider.pub" \
    >"$tmp/keys.jwe" 2>"$tmp/keys.err" &&
    "$cli" keys import --keys "$SINK_KEYS" --private-key "$tmp/provider.pem" <"$tmp/keys.jwe" >/dev/null 2>>"$tmp/keys.err" ||
    { cat "$tmp/keys.err" >&2; return 1; }
}
