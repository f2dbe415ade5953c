#!/usr/bin/env bash
# The key life cycle through the CLI, as an operator and a provider would
# run it: a local master key, rotations of a channel's provider keys, sealing
# from the keyring, the JWE key exchange to a provider (RSA and P-256) who
# then opens the platform's messages with the imported keys, retirement and
# the minimum version, a master-key rewrap, and the audit log's chain. It
# also checks that no key material is ever written in the clear.
set -euo pipefail
cli=${SP_CLI:?}
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }
expect_ok() { local what=$1; shift; if "$@" >"$t/out" 2>"$t/err"; then ok; else bad "$what: $(cat "$t/err")"; fi; }
expect_fail() {
  local what=$1 pattern=$2; shift 2
  if "$@" >"$t/out" 2>"$t/err"; then bad "$what: succeeded"; return; fi
  if grep -q -- "$pattern" "$t/err"; then ok; else bad "$what: stderr lacks '$pattern': $(cat "$t/err")"; fi
}

kms="local:path=$t/master.key;create=1"
kms2="local:path=$t/master2.key;create=1"
ring=(--keyring "$t/ring.json")
chan=(--tenant acme --channel sms)
audit=(--audit "$t/audit.log")

# --- the KMS ---
expect_ok "kms check" "$cli" kms check --kms "$kms" "${audit[@]}"
grep -q "unwrap: ok" "$t/out" && ok || bad "kms check report: $(cat "$t/out")"
[ "$(stat -c %a "$t/master.key")" = 600 ] && ok || bad "master key mode"
expect_fail "unknown kms option" SP_ERR_BAD_CONFIG "$cli" kms check --kms "local:path=$t/x;bogus=1"

# --- rotation ---
expect_ok "rotate 1" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" "${audit[@]}" --now 1000
v1=$(cat "$t/out")
expect_ok "rotate 2" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" "${audit[@]}" --now 2000
v2=$(cat "$t/out")
expect_ok "list" "$cli" keys list "${ring[@]}"
grep -q "$v1  decrypt-only" "$t/out" && ok || bad "v1 not decrypt-only: $(cat "$t/out")"
grep -q "$v2  active" "$t/out" && ok || bad "v2 not active"
[ "$(stat -c %a "$t/ring.json")" = 600 ] && ok || bad "keyring mode"

# --- sealing from the keyring; the old version still opens (overlap) ---
src=(--keyring "$t/ring.json" --kms "$kms" "${chan[@]}")
printf 'to=+14155550100 body=hello' > "$t/payload"
expect_ok "seal active" "$cli" seal "${src[@]}" < "$t/payload"; cp "$t/out" "$t/msg-v2.json"
expect_ok "seal v1" "$cli" seal "${src[@]}" --key-version "$v1" < "$t/payload"; cp "$t/out" "$t/msg-v1.json"
grep -q "$v2" "$t/msg-v2.json" && ok || bad "active seal not under v2"
expect_ok "open v2 from keyring" "$cli" open "${src[@]}" < "$t/msg-v2.json"
cmp -s "$t/out" "$t/payload" && ok || bad "open v2 plaintext"
expect_ok "open v1 from keyring" "$cli" open "${src[@]}" < "$t/msg-v1.json"

# --- the key exchange: RSA-3072 and P-256 providers ---
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$t/rsa.pem" 2>/dev/null
openssl pkey -in "$t/rsa.pem" -pubout -out "$t/rsa.pub" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$t/ec.pem" 2>/dev/null
openssl pkey -in "$t/ec.pem" -pubout -out "$t/ec.pub" 2>/dev/null
for kind in rsa ec; do
  expect_ok "export $kind" "$cli" keys export "${src[@]}" --recipient "$t/$kind.pub" --expires-in 86400 "${audit[@]}"
  cp "$t/out" "$t/keys-$kind.jwe"
  [ "$(tr -cd . < "$t/keys-$kind.jwe" | wc -c)" = 4 ] && ok || bad "export $kind is not compact JWE"
  expect_ok "import $kind" "$cli" keys import --keys "$t/provider-$kind.json" --private-key "$t/$kind.pem" < "$t/keys-$kind.jwe"
  grep -q "$v2 (active)" "$t/out" && ok || bad "import $kind: active not last: $(cat "$t/out")"
  expect_ok "provider opens v2 ($kind)" "$cli" open --keys "$t/provider-$kind.json" < "$t/msg-v2.json"
  cmp -s "$t/out" "$t/payload" && ok || bad "provider plaintext ($kind)"
  expect_ok "provider opens v1 ($kind)" "$cli" open --keys "$t/provider-$kind.json" < "$t/msg-v1.json"
  expect_ok "re-import is a no-op ($kind)" "$cli" keys import --keys "$t/provider-$kind.json" --private-key "$t/$kind.pem" < "$t/keys-$kind.jwe"
done
expect_fail "import with the wrong private key" SP_ERR_AUTH \
  "$cli" keys import --keys "$t/provider-x.json" --private-key "$t/rsa.pem" < "$t/keys-ec.jwe"
# the provider answers with the same keys: a callback it seals opens on the platform
expect_ok "provider seals a callback" "$cli" seal --keys "$t/provider-rsa.json" < "$t/payload"
cp "$t/out" "$t/callback.json"
expect_ok "platform opens the callback" "$cli" open "${src[@]}" < "$t/callback.json"

# --- life cycle ---
expect_fail "retire the active key" SP_ERR_ILLEGAL_TRANSITION \
  "$cli" keys retire "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v2"
expect_fail "destroy a decrypt-only key" SP_ERR_ILLEGAL_TRANSITION \
  "$cli" keys destroy "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_ok "retire v1" "$cli" keys retire "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_fail "retired v1 no longer opens" SP_ERR_UNKNOWN_KEY_VERSION "$cli" open "${src[@]}" < "$t/msg-v1.json"
expect_ok "destroy v1" "$cli" keys destroy "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_ok "rotate 3" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" --now 3000
v3=$(cat "$t/out")
expect_ok "min-version v3" "$cli" keys min-version "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v3" --now 3001
expect_fail "v2 below the minimum" SP_ERR_UNKNOWN_KEY_VERSION "$cli" open "${src[@]}" < "$t/msg-v2.json"
expect_ok "maintain" "$cli" keys maintain "${ring[@]}" --kms "$kms" --rotate-after 500 --overlap 100 --now 4000
grep -q "rotated 1, retired 0" "$t/out" && ok || bad "maintain counts: $(cat "$t/out")"

# --- master-key rotation ---
expect_ok "rewrap" "$cli" keys rewrap "${ring[@]}" --kms "$kms" --new-kms "$kms2" --batch 1 "${audit[@]}"
grep -q "rewrapped 3 keys" "$t/out" && ok || bad "rewrap count: $(cat "$t/out")"
grep -q "rewrap: 3/3" "$t/err" && ok || bad "rewrap progress: $(cat "$t/err")"
expect_ok "seal under the new master key" "$cli" seal --keyring "$t/ring.json" --kms "$kms2" "${chan[@]}" < "$t/payload"
expect_fail "old master key no longer opens the ring" SP_ERR_AUTH \
  "$cli" seal --keyring "$t/ring.json" --kms "$kms" "${chan[@]}" < "$t/payload"
expect_ok "rewrap again is a no-op" "$cli" keys rewrap "${ring[@]}" --kms "$kms" --new-kms "$kms2"
grep -q "rewrapped 0 keys" "$t/out" && ok || bad "second rewrap: $(cat "$t/out")"

# --- no key material at rest: the imported provider keys never appear in the ring or the log ---
/usr/bin/python3 - "$t/provider-rsa.json" "$t/ring.json" "$t/audit.log" <<'PY' && ok || bad "key material found at rest"
import base64, json, sys
keys = [base64.b64decode(k["key"]) for k in json.load(open(sys.argv[1]))["keys"]]
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    for k in keys:
        for form in (k, k.hex().encode(), base64.b64encode(k), base64.urlsafe_b64encode(k).rstrip(b"=")):
            if form in data:
                sys.exit(f"{path} holds a key")
PY

# --- the audit log ---
expect_ok "audit verify" "$cli" audit verify "$t/audit.log"
grep -q "chain intact" "$t/out" && ok || bad "audit verify output"
grep -q '"event":"kms.unwrap"' "$t/audit.log" && ok || bad "no unwrap lines in the audit log"
sed -i '2d' "$t/audit.log"
expect_fail "audit detects a removed line" "chain broken" "$cli" audit verify "$t/audit.log"

echo "keys-cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
