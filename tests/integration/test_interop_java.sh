#!/usr/bin/env bash
# Interop test (ctest integration/test_interop_java): the sealpost CLI's raw
# encrypt/decrypt against the JDK's javax.crypto (Interop.java), both ways and
# byte-exact: AES/CBC/PKCS5Padding, AES/GCM/NoPadding (128-bit tag, with and
# without AAD) and AES/CTR/NoPadding, including the 128-bit counter wrap.
# A second, unrelated AES implementation catches mistakes that a test written
# against our own library would share (padding, tag placement, counter width).
# Env: SP_CLI (sealpost binary), SP_SOURCE_DIR, SP_BUILD_DIR (set by ctest).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
javac=/usr/bin/javac
java=/usr/bin/java

need_cli interop-java
if [ ! -x "$javac" ] || [ ! -x "$java" ]; then
  bad "OpenJDK 17 (javac/java) missing (run scripts/bootstrap)"
  finish interop-java || exit 1
fi
if ! "$javac" -Xlint:all -Werror -d "$tmp/classes" "$here/Interop.java" 2>"$tmp/javac.err"; then
  bad "javac Interop.java" "$(head -c 2000 "$tmp/javac.err")"
  finish interop-java || exit 1
fi

jv() { "$java" -XX:TieredStopAtLevel=1 -Xshare:auto -cp "$tmp/classes" Interop "$@"; }
randfile() { head -c "$2" /dev/urandom >"$1"; }
ivlen() { case "$1" in gcm) echo 12 ;; *) echo 16 ;; esac; }

key=$(randhex 32)
sizes=(0 1 15 16 17 100 4096)

for mode in cbc gcm ctr; do
  alg="aes-256-$mode"
  for n in "${sizes[@]}"; do
    d="$tmp/$mode-$n"
    mkdir -p "$d"
    iv=$(randhex "$(ivlen "$mode")")
    randfile "$d/pt" "$n"
    name="$alg ${n}B"

    if run_to "$d/cli.ct" "$d/err" "$cli" encrypt --alg "$alg" --key "$key" --iv "$iv" <"$d/pt"; then
      ok "$name: CLI encrypt runs"
    else
      bad "$name: CLI encrypt runs" "$(head -c 300 "$d/err")"
    fi
    if run_to /dev/null "$d/err" jv enc "$mode" "$key" "$iv" - "$d/pt" "$d/java.ct"; then
      ok "$name: Java encrypt runs"
    else
      bad "$name: Java encrypt runs" "$(cat "$d/err")"
    fi
    if cmp -s "$d/cli.ct" "$d/java.ct"; then
      ok "$name: CLI and Java ciphertexts byte-identical"
    else
      bad "$name: CLI and Java ciphertexts byte-identical" \
        "cli $(wc -c <"$d/cli.ct")B, java $(wc -c <"$d/java.ct" 2>/dev/null || echo 0)B"
    fi
    if run_to /dev/null "$d/err" jv dec "$mode" "$key" "$iv" - "$d/cli.ct" "$d/java.pt" &&
      cmp -s "$d/java.pt" "$d/pt"; then
      ok "$name: CLI encrypt -> Java decrypt"
    else
      bad "$name: CLI encrypt -> Java decrypt" "$(cat "$d/err")"
    fi
    if run_to "$d/cli.pt" "$d/err" "$cli" decrypt --alg "$alg" --key "$key" --iv "$iv" <"$d/java.ct" &&
      cmp -s "$d/cli.pt" "$d/pt"; then
      ok "$name: Java encrypt -> CLI decrypt"
    else
      bad "$name: Java encrypt -> CLI decrypt" "$(head -c 300 "$d/err")"
    fi
  done
done

# GCM with AAD, both directions, and the AAD must really be authenticated.
for n in "${sizes[@]}"; do
  for alen in 1 13 64; do
    d="$tmp/gcm-aad-$n-$alen"
    mkdir -p "$d"
    iv=$(randhex 12)
    aad=$(randhex "$alen")
    randfile "$d/pt" "$n"
    name="aes-256-gcm ${n}B aad ${alen}B"
    run_to "$d/cli.ct" "$d/err" "$cli" encrypt --alg aes-256-gcm --key "$key" --iv "$iv" --aad "$aad" <"$d/pt" || true
    run_to /dev/null "$d/jerr" jv enc gcm "$key" "$iv" "$aad" "$d/pt" "$d/java.ct" || true
    if [ -s "$d/cli.ct" ] && cmp -s "$d/cli.ct" "$d/java.ct"; then
      ok "$name: CLI and Java ciphertext||tag byte-identical"
    else
      bad "$name: CLI and Java ciphertext||tag byte-identical" "$(head -c 300 "$d/err") $(cat "$d/jerr")"
    fi
    if run_to /dev/null "$d/err" jv dec gcm "$key" "$iv" "$aad" "$d/cli.ct" "$d/java.pt" &&
      cmp -s "$d/java.pt" "$d/pt"; then
      ok "$name: CLI encrypt -> Java decrypt"
    else
      bad "$name: CLI encrypt -> Java decrypt" "$(cat "$d/err")"
    fi
    if run_to "$d/cli.pt" "$d/err" "$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv" --aad "$aad" <"$d/java.ct" &&
      cmp -s "$d/cli.pt" "$d/pt"; then
      ok "$name: Java encrypt -> CLI decrypt"
    else
      bad "$name: Java encrypt -> CLI decrypt" "$(head -c 300 "$d/err")"
    fi
    if run_to /dev/null "$d/err" jv dec gcm "$key" "$iv" - "$d/cli.ct" "$d/noaad.pt"; then
      bad "$name: Java rejects CLI ciphertext when the AAD is omitted"
    else
      ok "$name: Java rejects CLI ciphertext when the AAD is omitted"
    fi
  done
done

# CTR counter handling: whole 16-byte IV is one big-endian 128-bit counter.
ctr_case() {
  local ivhex=$1 n=$2 label=$3
  local d="$tmp/ctr-$label"
  mkdir -p "$d"
  randfile "$d/pt" "$n"
  run_to /dev/null "$d/err" jv ctrref "$key" "$ivhex" "$d/pt" "$d/ref" || true
  run_to /dev/null "$d/err" jv enc ctr "$key" "$ivhex" - "$d/pt" "$d/java.ct" || true
  if [ -s "$d/ref" ] && cmp -s "$d/ref" "$d/java.ct"; then
    ok "ctr $label: JDK CTR equals hand-built 128-bit counter reference"
  else
    bad "ctr $label: JDK CTR equals hand-built 128-bit counter reference"
  fi
  if run_to "$d/cli.ct" "$d/err" "$cli" encrypt --alg aes-256-ctr --key "$key" --iv "$ivhex" <"$d/pt" &&
    cmp -s "$d/cli.ct" "$d/ref"; then
    ok "ctr $label: CLI encrypt equals the reference"
  else
    bad "ctr $label: CLI encrypt equals the reference" "$(head -c 300 "$d/err")"
  fi
  if run_to "$d/cli.pt" "$d/err" "$cli" decrypt --alg aes-256-ctr --key "$key" --iv "$ivhex" <"$d/java.ct" &&
    cmp -s "$d/cli.pt" "$d/pt"; then
    ok "ctr $label: Java encrypt -> CLI decrypt"
  else
    bad "ctr $label: Java encrypt -> CLI decrypt" "$(head -c 300 "$d/err")"
  fi
  if run_to /dev/null "$d/err" jv dec ctr "$key" "$ivhex" - "$d/cli.ct" "$d/java.pt" &&
    cmp -s "$d/java.pt" "$d/pt"; then
    ok "ctr $label: CLI encrypt -> Java decrypt"
  else
    bad "ctr $label: CLI encrypt -> Java decrypt" "$(cat "$d/err")"
  fi
}
ctr_case ffffffffffffffffffffffffffffffff 48 "wrap-2^128-48B"
ctr_case 0123456789abcdefffffffffffffffff 48 "carry-64bit-48B"
ctr_case 000000000000000000000000fffffffe 100 "carry-32bit-100B"

# Random IV: the CLI prints iv=HEX on stderr; Java must decrypt with it.
for mode in cbc gcm ctr; do
  d="$tmp/rand-$mode"
  mkdir -p "$d"
  randfile "$d/pt" 77
  if run_to "$d/ct" "$d/err" "$cli" encrypt --alg "aes-256-$mode" --key "$key" <"$d/pt"; then
    iv=$(sed -n 's/.*iv=\([0-9a-fA-F]*\).*/\1/p' "$d/err" | head -n1)
    if [ "${#iv}" -eq $((2 * $(ivlen "$mode"))) ] &&
      run_to /dev/null "$d/jerr" jv dec "$mode" "$key" "$iv" - "$d/ct" "$d/java.pt" &&
      cmp -s "$d/java.pt" "$d/pt"; then
      ok "aes-256-$mode random IV (iv=HEX on stderr) -> Java decrypt"
    else
      bad "aes-256-$mode random IV (iv=HEX on stderr) -> Java decrypt" "stderr: $(head -c 300 "$d/err")"
    fi
  else
    bad "aes-256-$mode random IV (iv=HEX on stderr) -> Java decrypt" "$(head -c 300 "$d/err")"
  fi
done

# Tag/padding failures are detected on both sides.
d="$tmp/neg"
mkdir -p "$d"
iv=$(randhex 12)
randfile "$d/pt" 40
"$cli" encrypt --alg aes-256-gcm --key "$key" --iv "$iv" <"$d/pt" >"$d/ct" 2>/dev/null || true
# flip the last bit of the tag
flip_last_bit() {
  local last
  last=$(tail -c 1 "$1" | od -An -tu1 | tr -d ' ')
  last=${last:-0}
  { head -c -1 "$1"; printf "\\$(printf %03o $((last ^ 1)))"; } >"$2"
}
flip_last_bit "$d/ct" "$d/ct.bad"
if [ -s "$d/ct" ] && ! run_to /dev/null "$d/err" jv dec gcm "$key" "$iv" - "$d/ct.bad" "$d/x"; then
  ok "aes-256-gcm: Java rejects CLI output with a flipped tag bit"
else
  bad "aes-256-gcm: Java rejects CLI output with a flipped tag bit"
fi
rc=0
"$cli" decrypt --alg aes-256-gcm --key "$key" --iv "$iv" <"$d/ct.bad" >"$d/out" 2>"$d/err" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -s "$d/out" ]; then
  ok "aes-256-gcm: CLI rejects a flipped tag bit, releases no plaintext"
else
  bad "aes-256-gcm: CLI rejects a flipped tag bit, releases no plaintext" "rc=$rc, stdout $(wc -c <"$d/out")B"
fi
# Java-made CBC ciphertext of a 32-byte message ending in 0x00, with its final
# (padding) block removed: the new last block ends in 0x00, never valid PKCS#7.
ivc=$(randhex 16)
{ head -c 31 /dev/zero | tr '\0' 'A'; head -c 1 /dev/zero; } >"$d/pt32"
jv enc cbc "$key" "$ivc" - "$d/pt32" "$d/cbc.ct" 2>/dev/null || true
head -c 32 "$d/cbc.ct" >"$d/cbc.trunc" 2>/dev/null || true
rc=0
"$cli" decrypt --alg aes-256-cbc --key "$key" --iv "$ivc" <"$d/cbc.trunc" >"$d/out" 2>"$d/err" || rc=$?
if [ "$(wc -c <"$d/cbc.ct")" -eq 48 ] && [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -s "$d/out" ]; then
  ok "aes-256-cbc: CLI rejects Java ciphertext with its padding block removed"
else
  bad "aes-256-cbc: CLI rejects Java ciphertext with its padding block removed" "rc=$rc"
fi

finish interop-java
