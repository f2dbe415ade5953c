#!/usr/bin/env bash
# CLI contract test (ctest integration/test_cli): checks the sealpost command
# line as documented in the spec, independent of the crypto interop tests:
# every command has --help; every usage/input error exits non-zero with
# exactly one line on stderr and nothing on stdout (and no crash, which also
# catches sanitizer reports on error paths); keygen writes a 0600 key file,
# rotates in place and never clobbers a file that is not a key file; seal/open
# round-trips for every algorithm x profile; open rejects non-JSON cleanly.
# Env: SP_CLI (sealpost binary), SP_SOURCE_DIR, SP_BUILD_DIR (set by ctest).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${SP_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
cli="${SP_CLI:-${SP_BUILD_DIR:-$src/build}/sealpost}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok     $1"; }
bad() { fail=$((fail + 1)); echo "FAIL   $1${2:+: $2}"; }
finish() {
  echo "cli: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
}

if [ ! -x "$cli" ]; then
  bad "sealpost binary not found at $cli"
  finish || exit 1
fi

out="$tmp/out"
err="$tmp/err"
empty="$tmp/empty"
: >"$empty"
randhex() { od -An -v -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
nlines() { awk 'END { print NR }' "$1"; }

# expect_fail NAME STDIN_FILE CMD... : non-zero exit below 128, one non-blank
# stderr line, empty stdout.
expect_fail() {
  local name=$1 input=$2
  shift 2
  local rc=0
  "$@" <"$input" >"$out" 2>"$err" || rc=$?
  local lines
  lines=$(nlines "$err")
  if [ "$rc" -eq 0 ]; then
    bad "$name" "exit 0 (stdout: $(head -c 100 "$out" | tr -c '[:print:]' '.'))"
  elif [ "$rc" -ge 128 ]; then
    bad "$name" "exit $rc: crashed or killed by a signal; stderr: $(head -c 400 "$err")"
  elif [ "$lines" -ne 1 ] || ! grep -q '[^[:space:]]' "$err"; then
    bad "$name" "stderr should be exactly one line, has $lines: $(head -c 400 "$err" | tr '\n' '|')"
  elif [ -s "$out" ]; then
    bad "$name" "wrote $(wc -c <"$out") bytes to stdout on failure"
  else
    ok "$name"
  fi
}

# expect_ok NAME STDIN_FILE CMD... : exit 0; stdout left in $out
expect_ok() {
  local name=$1 input=$2
  shift 2
  local rc=0
  "$@" <"$input" >"$out" 2>"$err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    ok "$name"
  else
    bad "$name" "exit $rc: $(head -c 400 "$err")"
  fi
  return 0
}

# ---- --help for every command -----------------------------------------------
for cmd in keygen encrypt decrypt seal open signing-secret; do
  rc=0
  "$cli" "$cmd" --help </dev/null >"$out" 2>"$err" || rc=$?
  if [ "$rc" -eq 0 ] && cat "$out" "$err" | grep -qi 'usage' && cat "$out" "$err" | grep -q -- "$cmd"; then
    ok "$cmd --help exits 0 and prints usage naming the command"
  else
    bad "$cmd --help exits 0 and prints usage naming the command" "exit $rc: $(head -c 200 "$out" "$err")"
  fi
done

# ---- usage and input errors: non-zero, exactly one stderr line ---------------
key=$(randhex 32)
iv16=$(randhex 16)
iv12=$(randhex 12)
printf 'some plaintext' >"$tmp/pt"

expect_fail "unknown command" "$empty" "$cli" frobnicate
expect_fail "unknown command that looks like an option" "$empty" "$cli" --frobnicate
# with no command at all a usage summary on stderr is fine; only the exit matters
rc=0
"$cli" </dev/null >"$out" 2>"$err" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -s "$out" ]; then
  ok "no command: non-zero exit, nothing on stdout"
else
  bad "no command: non-zero exit, nothing on stdout" "exit $rc"
fi
for cmd in encrypt decrypt; do
  expect_fail "$cmd: missing --key" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --iv "$iv16"
  expect_fail "$cmd: missing --alg" "$tmp/pt" "$cli" "$cmd" --key "$key" --iv "$iv16"
  expect_fail "$cmd: bad hex in --key" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "zz${key:2}" --iv "$iv16"
  expect_fail "$cmd: odd-length --key" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "${key}0" --iv "$iv16"
  expect_fail "$cmd: 16-byte key (AES-256 needs 32)" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "${key:0:32}" --iv "$iv16"
  expect_fail "$cmd: 33-byte key" "$tmp/pt" "$cli" "$cmd" --alg aes-256-gcm --key "${key}00" --iv "$iv12"
  expect_fail "$cmd: empty key" "$tmp/pt" "$cli" "$cmd" --alg aes-256-ctr --key "" --iv "$iv16"
  expect_fail "$cmd: bad hex in --iv" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "g${iv16:1}"
  expect_fail "$cmd: cbc with 12-byte IV" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "$iv12"
  expect_fail "$cmd: ctr with 15-byte IV" "$tmp/pt" "$cli" "$cmd" --alg aes-256-ctr --key "$key" --iv "${iv16:2}"
  expect_fail "$cmd: gcm with 16-byte IV" "$tmp/pt" "$cli" "$cmd" --alg aes-256-gcm --key "$key" --iv "$iv16"
  expect_fail "$cmd: cbc with 17-byte IV" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "${iv16}00"
  expect_fail "$cmd: unknown --alg aes-128-cbc" "$tmp/pt" "$cli" "$cmd" --alg aes-128-cbc --key "$key" --iv "$iv16"
  expect_fail "$cmd: unknown --alg des" "$tmp/pt" "$cli" "$cmd" --alg des --key "$key" --iv "$iv16"
  expect_fail "$cmd: bad hex in --aad" "$tmp/pt" "$cli" "$cmd" --alg aes-256-gcm --key "$key" --iv "$iv12" --aad "xyz"
  expect_fail "$cmd: unknown option" "$tmp/pt" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "$iv16" --frob 1
  expect_fail "$cmd: option without its value" "$tmp/pt" "$cli" "$cmd" --key "$key" --iv "$iv16" --alg
done
expect_fail "decrypt: missing --iv" "$tmp/pt" "$cli" decrypt --alg aes-256-cbc --key "$key"
head -c 20 /dev/urandom >"$tmp/ct20"
expect_fail "decrypt cbc: 20-byte ciphertext" "$tmp/ct20" "$cli" decrypt --alg aes-256-cbc --key "$key" --iv "$iv16"
head -c 10 /dev/urandom >"$tmp/ct10"
expect_fail "decrypt gcm: input shorter than the tag" "$tmp/ct10" "$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv12"
head -c 64 /dev/urandom >"$tmp/ct64"
expect_fail "decrypt gcm: random bytes (bad tag)" "$tmp/ct64" "$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv12"

# ---- keygen ------------------------------------------------------------------
kdir="$tmp/kg"
mkdir "$kdir"
kf="$kdir/keys.json"
rc=0
(umask 000 && "$cli" keygen --out "$kf" >"$out" 2>"$err") || rc=$?
v1=$(tr -d '\n' <"$out")
if [ "$rc" -eq 0 ] && [ -f "$kf" ]; then
  ok "keygen creates the key file (under umask 000)"
else
  bad "keygen creates the key file (under umask 000)" "exit $rc: $(head -c 300 "$err")"
fi
mode=$(stat -c '%a' "$kf" 2>/dev/null || echo missing)
if [ "$mode" = 600 ]; then ok "keygen: key file mode is 0600 even under umask 000"; else bad "keygen: key file mode is 0600 even under umask 000" "mode $mode"; fi
if [[ "$v1" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; then
  ok "keygen prints the new version as a lowercase UUID"
else
  bad "keygen prints the new version as a lowercase UUID" "printed '$v1'"
fi
if grep -q "\"$v1\"" "$kf" 2>/dev/null && grep -q '"sealpost-keyfile"' "$kf"; then
  ok "keygen: file is a sealpost-keyfile holding the printed version"
else
  bad "keygen: file is a sealpost-keyfile holding the printed version"
fi
# Besides the key file, keygen may keep an empty 0600 "FILE.lock" for flock()
# (removing a lock file races with other writers); nothing else may be left.
stray_files() {
  find "$kdir" -mindepth 1 ! -path "$kf" ! \( -path "$kf.lock" -type f -empty -perm 600 \) | tr '\n' ' '
}
if [ -z "$(stray_files)" ]; then
  ok "keygen leaves no other files behind (an empty 0600 FILE.lock allowed)"
else
  bad "keygen leaves no other files behind (an empty 0600 FILE.lock allowed)" "$(stray_files)"
fi
expect_ok "keygen on an existing key file adds a version (rotation)" "$empty" "$cli" keygen --out "$kf"
v2=$(tr -d '\n' <"$out")
nactive=$(grep -o '"active"' "$kf" | wc -l)
if [ "$v2" != "$v1" ] && grep -q "\"$v1\"" "$kf" && grep -q "\"$v2\"" "$kf" && [ "$nactive" -eq 1 ] &&
  grep -q '"decrypt-only"' "$kf"; then
  ok "keygen rotation: both versions kept, exactly one active, old one decrypt-only"
else
  bad "keygen rotation: both versions kept, exactly one active, old one decrypt-only" "v1=$v1 v2=$v2 active=$nactive"
fi
mode=$(stat -c '%a' "$kf" 2>/dev/null || echo missing)
if [ "$mode" = 600 ] && [ -z "$(stray_files)" ]; then
  ok "keygen rotation: file stays 0600, no stray files"
else
  bad "keygen rotation: file stays 0600, no stray files" "mode $mode; $(stray_files)"
fi

printf 'not a key file, must survive\n' >"$tmp/precious.txt"
cp "$tmp/precious.txt" "$tmp/precious.orig"
expect_fail "keygen refuses an existing file that is not a key file" "$empty" "$cli" keygen --out "$tmp/precious.txt"
if cmp -s "$tmp/precious.txt" "$tmp/precious.orig"; then
  ok "keygen leaves the non-key file unchanged"
else
  bad "keygen leaves the non-key file unchanged"
fi
printf '{"format":"something-else","version":1,"keys":[]}' >"$tmp/other.json"
expect_fail "keygen refuses a JSON file of another format" "$empty" "$cli" keygen --out "$tmp/other.json"
expect_fail "keygen: missing --out" "$empty" "$cli" keygen
expect_fail "keygen: directory does not exist" "$empty" "$cli" keygen --out "$tmp/no/such/dir/keys.json"

# ---- seal/open errors --------------------------------------------------------
expect_fail "seal: missing --keys" "$tmp/pt" "$cli" seal
expect_fail "seal: key file does not exist" "$tmp/pt" "$cli" seal --keys "$tmp/nope.json"
expect_fail "seal: key file is not JSON" "$tmp/pt" "$cli" seal --keys "$tmp/precious.txt"
expect_fail "seal: unknown --alg" "$tmp/pt" "$cli" seal --keys "$kf" --alg aes-128-gcm
expect_fail "seal: unknown --profile" "$tmp/pt" "$cli" seal --keys "$kf" --profile soap
expect_fail "seal: unknown --key-version" "$tmp/pt" "$cli" seal --keys "$kf" --key-version 00000000-0000-4000-8000-000000000000
expect_fail "seal: jwe profile with aes-256-cbc" "$tmp/pt" "$cli" seal --keys "$kf" --profile jwe --alg aes-256-cbc
expect_fail "seal: unknown option" "$tmp/pt" "$cli" seal --keys "$kf" --frob
expect_fail "seal: webhook-id with a space" "$tmp/pt" "$cli" seal --keys "$kf" --id "a b"
expect_fail "seal: webhook-id of 129 chars" "$tmp/pt" "$cli" seal --keys "$kf" --id "$(printf 'x%.0s' {1..129})"
expect_fail "seal: timestamp not a number" "$tmp/pt" "$cli" seal --keys "$kf" --timestamp soon
expect_fail "open: missing --keys" "$empty" "$cli" open
expect_fail "signing-secret: missing --keys" "$empty" "$cli" signing-secret
expect_fail "signing-secret: unknown --key-version" "$empty" "$cli" signing-secret --keys "$kf" --key-version 00000000-0000-4000-8000-000000000000
twokey="$tmp/twoactive.json"
printf '{"format":"sealpost-keyfile","version":1,"keys":[{"version":"%s","key":"%s","state":"active","created":1700000000},{"version":"%s","key":"%s","state":"active","created":1700000001}]}' \
  11111111-1111-4111-8111-111111111111 "$(head -c 32 /dev/urandom | base64 -w0)" \
  22222222-2222-4222-8222-222222222222 "$(head -c 32 /dev/urandom | base64 -w0)" >"$twokey"
chmod 600 "$twokey"
expect_fail "seal: key file with two active keys" "$tmp/pt" "$cli" seal --keys "$twokey"
shortkey="$tmp/shortkey.json"
printf '{"format":"sealpost-keyfile","version":1,"keys":[{"version":"%s","key":"%s","state":"active","created":1700000000}]}' \
  33333333-3333-4333-8333-333333333333 "$(head -c 16 /dev/urandom | base64 -w0)" >"$shortkey"
chmod 600 "$shortkey"
expect_fail "seal: key file with a 16-byte key" "$tmp/pt" "$cli" seal --keys "$shortkey"

# ---- seal/open round trip: every algorithm x profile -------------------------
head -c 1000 /dev/urandom >"$tmp/bin1000"
printf 'a\0b\nc' >"$tmp/nul"
combos=("compat aes-256-cbc" "compat aes-256-gcm" "compat aes-256-ctr" "jwe -")
for combo in "${combos[@]}"; do
  read -r profile alg <<<"$combo"
  args=(--profile "$profile")
  label="$profile"
  if [ "$alg" != - ]; then
    args+=(--alg "$alg")
    label+=" $alg"
  fi
  for f in empty pt nul bin1000; do
    name="seal/open $label $f ($(wc -c <"$tmp/$f")B)"
    rc=0
    "$cli" seal --keys "$kf" "${args[@]}" <"$tmp/$f" >"$tmp/sealed" 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ]; then
      bad "$name" "seal exit $rc: $(head -c 300 "$err")"
      continue
    fi
    rc=0
    "$cli" open --keys "$kf" <"$tmp/sealed" >"$tmp/opened" 2>"$err" || rc=$?
    if [ "$rc" -eq 0 ] && cmp -s "$tmp/opened" "$tmp/$f"; then
      ok "$name"
    else
      bad "$name" "open exit $rc: $(head -c 300 "$err")"
    fi
  done
  # fixed id and timestamp, opened with --now at the edge of the window
  name="seal/open $label with --id/--timestamp and --now"
  rc=0
  "$cli" seal --keys "$kf" "${args[@]}" --id "order-42.attempt-1" --timestamp 1700000000 \
    <"$tmp/pt" >"$tmp/sealed" 2>"$err" || rc=$?
  if [ "$rc" -eq 0 ] && "$cli" open --keys "$kf" --now 1700000299 <"$tmp/sealed" >"$tmp/opened" 2>"$err" &&
    cmp -s "$tmp/opened" "$tmp/pt"; then
    ok "$name"
  else
    bad "$name" "$(head -c 300 "$err")"
  fi
  expect_fail "open $label: replayed 1 h later" "$tmp/sealed" "$cli" open --keys "$kf" --now 1700003600
  # a key file without the sealing key
  kf_other="$tmp/other-keys.json"
  rm -f "$kf_other"
  "$cli" keygen --out "$kf_other" >/dev/null 2>&1 || true
  expect_fail "open $label: key file lacks the key version" "$tmp/sealed" "$cli" open --keys "$kf_other" --now 1700000000
done
# the default profile/algorithm round trip
rc=0
"$cli" seal --keys "$kf" <"$tmp/pt" >"$tmp/sealed" 2>"$err" || rc=$?
if [ "$rc" -eq 0 ] && "$cli" open --keys "$kf" <"$tmp/sealed" >"$tmp/opened" 2>"$err" && cmp -s "$tmp/opened" "$tmp/pt"; then
  ok "seal/open with default profile and algorithm"
else
  bad "seal/open with default profile and algorithm" "$(head -c 300 "$err")"
fi

# ---- open of malformed input -------------------------------------------------
bad_inputs=(
  "not json at all"
  ""
  "[]"
  "null"
  "42"
  '"a string"'
  "{"
  '{"headers":{}}'
  '{"headers":{},"body":""}'
  '{"headers":1,"body":2}'
  '{"headers":{"webhook-id":"x"},"body":"{}"}'
  '{"headers":[],"body":"x"}'
  '{"body":"x"}'
)
i=0
for input in "${bad_inputs[@]}"; do
  i=$((i + 1))
  printf '%s' "$input" >"$tmp/bad$i"
  expect_fail "open rejects malformed input #$i: '${input:0:40}'" "$tmp/bad$i" "$cli" open --keys "$kf"
done
head -c 100000 /dev/urandom >"$tmp/garbage"
expect_fail "open rejects 100 kB of random bytes" "$tmp/garbage" "$cli" open --keys "$kf"
# truncated sealed message
"$cli" seal --keys "$kf" --alg aes-256-gcm <"$tmp/bin1000" >"$tmp/sealed" 2>/dev/null || true
head -c 200 "$tmp/sealed" >"$tmp/trunc"
expect_fail "open rejects a truncated sealed message" "$tmp/trunc" "$cli" open --keys "$kf"
expect_fail "open --max-body smaller than the body" "$tmp/sealed" "$cli" open --keys "$kf" --max-body 100
expect_fail "open --now not a number" "$tmp/sealed" "$cli" open --keys "$kf" --now yesterday

finish
