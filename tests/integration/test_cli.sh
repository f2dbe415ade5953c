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

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_cli cli

empty="$tmp/empty"
: >"$empty"
# expect_fail and expect_ok (lib.sh) read stdin from the redirection after
# them: expect_fail NAME CMD... <STDIN_FILE.

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

expect_fail "unknown command" "$cli" frobnicate <"$empty"
expect_fail "unknown command that looks like an option" "$cli" --frobnicate <"$empty"
# with no command at all a usage summary on stderr is fine; only the exit matters
rc=0
"$cli" </dev/null >"$out" 2>"$err" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -s "$out" ]; then
  ok "no command: non-zero exit, nothing on stdout"
else
  bad "no command: non-zero exit, nothing on stdout" "exit $rc"
fi
for cmd in encrypt decrypt; do
  expect_fail "$cmd: missing --key" "$cli" "$cmd" --alg aes-256-cbc --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: missing --alg" "$cli" "$cmd" --key "$key" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: bad hex in --key" "$cli" "$cmd" --alg aes-256-cbc --key "zz${key:2}" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: odd-length --key" "$cli" "$cmd" --alg aes-256-cbc --key "${key}0" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: 16-byte key (AES-256 needs 32)" "$cli" "$cmd" --alg aes-256-cbc --key "${key:0:32}" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: 33-byte key" "$cli" "$cmd" --alg aes-256-gcm --key "${key}00" --iv "$iv12" <"$tmp/pt"
  expect_fail "$cmd: empty key" "$cli" "$cmd" --alg aes-256-ctr --key "" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: bad hex in --iv" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "g${iv16:1}" <"$tmp/pt"
  expect_fail "$cmd: cbc with 12-byte IV" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "$iv12" <"$tmp/pt"
  expect_fail "$cmd: ctr with 15-byte IV" "$cli" "$cmd" --alg aes-256-ctr --key "$key" --iv "${iv16:2}" <"$tmp/pt"
  expect_fail "$cmd: gcm with 16-byte IV" "$cli" "$cmd" --alg aes-256-gcm --key "$key" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: cbc with 17-byte IV" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "${iv16}00" <"$tmp/pt"
  expect_fail "$cmd: unknown --alg aes-128-cbc" "$cli" "$cmd" --alg aes-128-cbc --key "$key" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: unknown --alg des" "$cli" "$cmd" --alg des --key "$key" --iv "$iv16" <"$tmp/pt"
  expect_fail "$cmd: bad hex in --aad" "$cli" "$cmd" --alg aes-256-gcm --key "$key" --iv "$iv12" --aad "xyz" <"$tmp/pt"
  expect_fail "$cmd: unknown option" "$cli" "$cmd" --alg aes-256-cbc --key "$key" --iv "$iv16" --frob 1 <"$tmp/pt"
  expect_fail "$cmd: option without its value" "$cli" "$cmd" --key "$key" --iv "$iv16" --alg <"$tmp/pt"
done
expect_fail "decrypt: missing --iv" "$cli" decrypt --alg aes-256-cbc --key "$key" <"$tmp/pt"
head -c 20 /dev/urandom >"$tmp/ct20"
expect_fail "decrypt cbc: 20-byte ciphertext" "$cli" decrypt --alg aes-256-cbc --key "$key" --iv "$iv16" <"$tmp/ct20"
head -c 10 /dev/urandom >"$tmp/ct10"
expect_fail "decrypt gcm: input shorter than the tag" "$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv12" <"$tmp/ct10"
head -c 64 /dev/urandom >"$tmp/ct64"
expect_fail "decrypt gcm: random bytes (bad tag)" "$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv12" <"$tmp/ct64"

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
expect_ok "keygen on an existing key file adds a version (rotation)" "$cli" keygen --out "$kf" <"$empty"
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
expect_fail "keygen refuses an existing file that is not a key file" "$cli" keygen --out "$tmp/precious.txt" <"$empty"
if cmp -s "$tmp/precious.txt" "$tmp/precious.orig"; then
  ok "keygen leaves the non-key file unchanged"
else
  bad "keygen leaves the non-key file unchanged"
fi
printf '{"format":"something-else","version":1,"keys":[]}' >"$tmp/other.json"
expect_fail "keygen refuses a JSON file of another format" "$cli" keygen --out "$tmp/other.json" <"$empty"
expect_fail "keygen: missing --out" "$cli" keygen <"$empty"
expect_fail "keygen: directory does not exist" "$cli" keygen --out "$tmp/no/such/dir/keys.json" <"$empty"

# ---- seal/open errors --------------------------------------------------------
expect_fail "seal: missing --keys" "$cli" seal <"$tmp/pt"
expect_fail "seal: key file does not exist" "$cli" seal --keys "$tmp/nope.json" <"$tmp/pt"
expect_fail "seal: key file is not JSON" "$cli" seal --keys "$tmp/precious.txt" <"$tmp/pt"
expect_fail "seal: unknown --alg" "$cli" seal --keys "$kf" --alg aes-128-gcm <"$tmp/pt"
expect_fail "seal: unknown --profile" "$cli" seal --keys "$kf" --profile soap <"$tmp/pt"
expect_fail "seal: unknown --key-version" "$cli" seal --keys "$kf" --key-version 00000000-0000-4000-8000-000000000000 <"$tmp/pt"
expect_fail "seal: jwe profile with aes-256-cbc" "$cli" seal --keys "$kf" --profile jwe --alg aes-256-cbc <"$tmp/pt"
expect_fail "seal: unknown option" "$cli" seal --keys "$kf" --frob <"$tmp/pt"
expect_fail "seal: webhook-id with a space" "$cli" seal --keys "$kf" --id "a b" <"$tmp/pt"
expect_fail "seal: webhook-id of 129 chars" "$cli" seal --keys "$kf" --id "$(printf 'x%.0s' {1..129})" <"$tmp/pt"
expect_fail "seal: timestamp not a number" "$cli" seal --keys "$kf" --timestamp soon <"$tmp/pt"
expect_fail "open: missing --keys" "$cli" open <"$empty"
expect_fail "signing-secret: missing --keys" "$cli" signing-secret <"$empty"
expect_fail "signing-secret: unknown --key-version" "$cli" signing-secret --keys "$kf" --key-version 00000000-0000-4000-8000-000000000000 <"$empty"
twokey="$tmp/twoactive.json"
printf '{"format":"sealpost-keyfile","version":1,"keys":[{"version":"%s","key":"%s","state":"active","created":1700000000},{"version":"%s","key":"%s","state":"active","created":1700000001}]}' \
  11111111-1111-4111-8111-111111111111 "$(head -c 32 /dev/urandom | base64 -w0)" \
  22222222-2222-4222-8222-222222222222 "$(head -c 32 /dev/urandom | base64 -w0)" >"$twokey"
chmod 600 "$twokey"
expect_fail "seal: key file with two active keys" "$cli" seal --keys "$twokey" <"$tmp/pt"
shortkey="$tmp/shortkey.json"
printf '{"format":"sealpost-keyfile","version":1,"keys":[{"version":"%s","key":"%s","state":"active","created":1700000000}]}' \
  33333333-3333-4333-8333-333333333333 "$(head -c 16 /dev/urandom | base64 -w0)" >"$shortkey"
chmod 600 "$shortkey"
expect_fail "seal: key file with a 16-byte key" "$cli" seal --keys "$shortkey" <"$tmp/pt"

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
  expect_fail "open $label: replayed 1 h later" "$cli" open --keys "$kf" --now 1700003600 <"$tmp/sealed"
  # a key file without the sealing key
  kf_other="$tmp/other-keys.json"
  rm -f "$kf_other"
  "$cli" keygen --out "$kf_other" >/dev/null 2>&1 || true
  expect_fail "open $label: key file lacks the key version" "$cli" open --keys "$kf_other" --now 1700000000 <"$tmp/sealed"
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
  expect_fail "open rejects malformed input #$i: '${input:0:40}'" "$cli" open --keys "$kf" <"$tmp/bad$i"
done
head -c 100000 /dev/urandom >"$tmp/garbage"
expect_fail "open rejects 100 kB of random bytes" "$cli" open --keys "$kf" <"$tmp/garbage"
# truncated sealed message
"$cli" seal --keys "$kf" --alg aes-256-gcm <"$tmp/bin1000" >"$tmp/sealed" 2>/dev/null || true
head -c 200 "$tmp/sealed" >"$tmp/trunc"
expect_fail "open rejects a truncated sealed message" "$cli" open --keys "$kf" <"$tmp/trunc"
expect_fail "open --max-body smaller than the body" "$cli" open --keys "$kf" --max-body 100 <"$tmp/sealed"
expect_fail "open --now not a number" "$cli" open --keys "$kf" --now yesterday <"$tmp/sealed"

finish cli
