#!/usr/bin/env bash
# The key life cycle through the CLI, as an operator and a provider would
# run it: a local master key, rotations of a channel's provider keys, sealing
# from the keyring, the JWE key exchange to a provider (RSA and P-256) who
# then opens the platform's messages with the imported keys, retirement and
# the minimum version, a master-key rewrap, and the audit log's chain. It
# also checks that no key material is ever written in the clear.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_cli keys-cli

kms="local:path=$tmp/master.key;create=1"
kms2="local:path=$tmp/master2.key;create=1"
ring=(--keyring "$tmp/ring.json")
chan=(--tenant acme --channel sms)
audit=(--audit "$tmp/audit.log")

# --- the KMS ---
expect_ok "kms check" "$cli" kms check --kms "$kms" "${audit[@]}"
grep -q "unwrap: ok" "$out" && ok || bad "kms check report: $(cat "$out")"
[ "$(stat -c %a "$tmp/master.key")" = 600 ] && ok || bad "master key mode"
expect_fail_with "unknown kms option" SP_ERR_BAD_CONFIG "$cli" kms check --kms "local:path=$tmp/x;bogus=1"

# --- rotation ---
expect_ok "rotate 1" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" "${audit[@]}" --now 1000
v1=$(cat "$out")
expect_ok "rotate 2" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" "${audit[@]}" --now 2000
v2=$(cat "$out")
expect_ok "list" "$cli" keys list "${ring[@]}"
grep -q "$v1  decrypt-only" "$out" && ok || bad "v1 not decrypt-only: $(cat "$out")"
grep -q "$v2  active" "$out" && ok || bad "v2 not active"
[ "$(stat -c %a "$tmp/ring.json")" = 600 ] && ok || bad "keyring mode"

# --- sealing from the keyring; the old version still opens (overlap) ---
from_ring=(--keyring "$tmp/ring.json" --kms "$kms" "${chan[@]}")
printf 'to=+14155550100 body=hello' > "$tmp/payload"
expect_ok "seal active" "$cli" seal "${from_ring[@]}" < "$tmp/payload"; cp "$out" "$tmp/msg-v2.json"
expect_ok "seal v1" "$cli" seal "${from_ring[@]}" --key-version "$v1" < "$tmp/payload"; cp "$out" "$tmp/msg-v1.json"
grep -q "$v2" "$tmp/msg-v2.json" && ok || bad "active seal not under v2"
expect_ok "open v2 from keyring" "$cli" open "${from_ring[@]}" < "$tmp/msg-v2.json"
cmp -s "$out" "$tmp/payload" && ok || bad "open v2 plaintext"
expect_ok "open v1 from keyring" "$cli" open "${from_ring[@]}" < "$tmp/msg-v1.json"

# --- the key exchange: RSA-3072 and P-256 providers ---
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$tmp/rsa.pem" 2>/dev/null
openssl pkey -in "$tmp/rsa.pem" -pubout -out "$tmp/rsa.pub" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ec.pem" 2>/dev/null
openssl pkey -in "$tmp/ec.pem" -pubout -out "$tmp/ec.pub" 2>/dev/null
for kind in rsa ec; do
  expect_ok "export $kind" "$cli" keys export "${from_ring[@]}" --recipient "$tmp/$kind.pub" --expires-in 86400 "${audit[@]}"
  cp "$out" "$tmp/keys-$kind.jwe"
  [ "$(tr -cd . < "$tmp/keys-$kind.jwe" | wc -c)" = 4 ] && ok || bad "export $kind is not compact JWE"
  expect_ok "import $kind" "$cli" keys import --keys "$tmp/provider-$kind.json" --private-key "$tmp/$kind.pem" < "$tmp/keys-$kind.jwe"
  grep -q "$v2 (active)" "$out" && ok || bad "import $kind: active not last: $(cat "$out")"
  expect_ok "provider opens v2 ($kind)" "$cli" open --keys "$tmp/provider-$kind.json" < "$tmp/msg-v2.json"
  cmp -s "$out" "$tmp/payload" && ok || bad "provider plaintext ($kind)"
  expect_ok "provider opens v1 ($kind)" "$cli" open --keys "$tmp/provider-$kind.json" < "$tmp/msg-v1.json"
  expect_ok "re-import is a no-op ($kind)" "$cli" keys import --keys "$tmp/provider-$kind.json" --private-key "$tmp/$kind.pem" < "$tmp/keys-$kind.jwe"
done
expect_fail_with "import with the wrong private key" SP_ERR_AUTH \
  "$cli" keys import --keys "$tmp/provider-x.json" --private-key "$tmp/rsa.pem" < "$tmp/keys-ec.jwe"
# the provider answers with the same keys: a callback it seals opens on the platform
expect_ok "provider seals a callback" "$cli" seal --keys "$tmp/provider-rsa.json" < "$tmp/payload"
cp "$out" "$tmp/callback.json"
expect_ok "platform opens the callback" "$cli" open "${from_ring[@]}" < "$tmp/callback.json"

# --- life cycle ---
expect_fail_with "retire the active key" SP_ERR_ILLEGAL_TRANSITION \
  "$cli" keys retire "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v2"
expect_fail_with "destroy a decrypt-only key" SP_ERR_ILLEGAL_TRANSITION \
  "$cli" keys destroy "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_ok "retire v1" "$cli" keys retire "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_fail_with "retired v1 no longer opens" SP_ERR_UNKNOWN_KEY_VERSION "$cli" open "${from_ring[@]}" < "$tmp/msg-v1.json"
expect_ok "destroy v1" "$cli" keys destroy "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v1"
expect_ok "rotate 3" "$cli" keys rotate "${ring[@]}" --kms "$kms" "${chan[@]}" --now 3000
v3=$(cat "$out")
expect_ok "min-version v3" "$cli" keys min-version "${ring[@]}" --kms "$kms" "${chan[@]}" --version "$v3" --now 3001
expect_fail_with "v2 below the minimum" SP_ERR_UNKNOWN_KEY_VERSION "$cli" open "${from_ring[@]}" < "$tmp/msg-v2.json"
expect_ok "maintain" "$cli" keys maintain "${ring[@]}" --kms "$kms" --rotate-after 500 --overlap 100 --now 4000
grep -q "rotated 1, retired 0" "$out" && ok || bad "maintain counts: $(cat "$out")"

# --- master-key rotation ---
expect_ok "rewrap" "$cli" keys rewrap "${ring[@]}" --kms "$kms" --new-kms "$kms2" --batch 1 "${audit[@]}"
grep -q "rewrapped 3 keys" "$out" && ok || bad "rewrap count: $(cat "$out")"
grep -q "rewrap: 3/3" "$err" && ok || bad "rewrap progress: $(cat "$err")"
expect_ok "seal under the new master key" "$cli" seal --keyring "$tmp/ring.json" --kms "$kms2" "${chan[@]}" < "$tmp/payload"
expect_fail_with "old master key no longer opens the ring" SP_ERR_AUTH \
  "$cli" seal --keyring "$tmp/ring.json" --kms "$kms" "${chan[@]}" < "$tmp/payload"
expect_ok "rewrap again is a no-op" "$cli" keys rewrap "${ring[@]}" --kms "$kms" --new-kms "$kms2"
grep -q "rewrapped 0 keys" "$out" && ok || bad "second rewrap: $(cat "$out")"

# --- no key material at rest: the imported provider keys never appear in the ring or the log ---
/usr/bin/python3 - "$tmp/provider-rsa.json" "$tmp/ring.json" "$tmp/audit.log" <<'PY' && ok || bad "key material found at rest"
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
expect_ok "audit verify" "$cli" audit verify "$tmp/audit.log"
grep -q "chain intact" "$out" && ok || bad "audit verify output"
grep -q '"event":"kms.unwrap"' "$tmp/audit.log" && ok || bad "no unwrap lines in the audit log"
sed -i '2d' "$tmp/audit.log"
expect_fail_with "audit detects a removed line" "chain broken" "$cli" audit verify "$tmp/audit.log"

finish keys-cli
