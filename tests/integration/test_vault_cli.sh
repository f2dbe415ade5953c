#!/usr/bin/env bash
# The PII vault through the CLI, as an operator would check a tenant's set-up:
# a field encrypted at ingestion decrypts only for the same profile and field
# and only with an audit log and a purpose; the blind index is the same for
# every spelling of one email or phone number; the audit log records the
# decrypt without the value; and nothing readable reaches the keyring file.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kms="local:path=$tmp/master.key;create=1"
common=(--keyring "$tmp/ring.json" --kms "$kms" --tenant acme)
email='Ada.Lovelace@Example.org'

printf '%s' "$email" > "$tmp/value"
expect_ok "encrypt" "$cli" vault encrypt "${common[@]}" --profile p-1 --field email <"$tmp/value"
blob=$(cat "$out")
printf '%s\n' "$blob" > "$tmp/blob"
[ "$(printf '%s' "$blob" | base64 -d | wc -c)" = $(( ${#email} + 46 )) ] && ok "46 bytes of overhead" || bad "blob size"
expect_ok "decrypt" "$cli" vault decrypt "${common[@]}" --profile p-1 --field email --audit "$tmp/audit.log" \
  --purpose campaign.send <"$tmp/blob"
[ "$(cat "$out")" = "$email" ] && ok "round trip" || bad "round trip gave $(cat "$out")"
expect_fail_with "another profile" SP_ERR_AUTH "$cli" vault decrypt "${common[@]}" --profile p-2 --field email \
  --audit "$tmp/audit.log" --purpose campaign.send <"$tmp/blob"
expect_fail_with "another field" SP_ERR_AUTH "$cli" vault decrypt "${common[@]}" --profile p-1 --field phone \
  --audit "$tmp/audit.log" --purpose campaign.send <"$tmp/blob"
expect_fail "decrypt without an audit log" "$cli" vault decrypt "${common[@]}" --profile p-1 --field email \
  --purpose campaign.send <"$tmp/blob"

index() { printf '%s' "$2" | "$cli" vault index "${common[@]}" --field "$1" --country 1; }
a=$(index email "$email"); b=$(index email '  ada.lovelace@EXAMPLE.ORG ')
[ -n "$a" ] && [ "$a" = "$b" ] && ok "email index ignores case and spaces" || bad "email index: $a vs $b"
p1=$(index phone '+1 (415) 555-0100'); p2=$(index phone '415.555.0100'); p3=$(index phone '0014155550100')
[ "$p1" = "$p2" ] && [ "$p1" = "$p3" ] && ok "phone index is E.164" || bad "phone index: $p1 $p2 $p3"
[ "$(index phone '+1 (415) 555-0100')" != "$(index email '+14155550100@x.org')" ] && ok "fields differ" || bad "fields"
printf 'not-an-email' > "$tmp/bad"
expect_fail "index refuses a non-email" "$cli" vault index "${common[@]}" --field email <"$tmp/bad"

expect_ok "audit verify" "$cli" audit verify "$tmp/audit.log"
grep -q '"event":"vault.decrypt"' "$tmp/audit.log" && ok "decrypt audited" || bad "no vault.decrypt line"
grep -q '"purpose":"campaign.send"' "$tmp/audit.log" && ok "purpose recorded" || bad "purpose"
if grep -qi "lovelace\|p-1\"" "$tmp/audit.log" "$tmp/ring.json"; then bad "value or profile id at rest"; else ok "no value or profile id at rest"; fi

finish vault-cli
