#!/usr/bin/env bash
# No PII at rest: 200 profiles with distinctive emails and phones go through
# sealpostd, then every byte the daemon and its store left on disk is
# searched for each email and each phone, in several spellings and
# encodings (as sent, lower case, upper case, E.164 with and without "+",
# base64 at each of the three alignments, hex) — with SQLite (the main file
# and its -wal, read while the daemon runs and again after it stopped, the
# daemon log, the audit log, everything under the data directory) and with
# PostgreSQL (a pg_dump of the database and every file of the server's data
# directory). The profiles' non-PII nicknames are the positive control: they
# are stored in the clear, so the same search must find them, or the search
# itself is broken. A missing component (PostgreSQL, the fixture) is a
# failure, never a skip.
set -uo pipefail
. "$(dirname "$0")/sealpostd_lib.sh"
label=test_no_plaintext_at_rest
need_daemon "$label"
need_cmd "$label" curl openssl pg_dump
pg_fixture="$src/scripts/pg-fixture"

run_id=$(randhex 4)
# The corpus: profiles.json (two batches of 100), needles.json (what must
# not be found, by encoding) and controls.json (what must be found).
"$PY" - "$tmp" "$run_id" <<'EOF'
import base64, json, sys
d, rid = sys.argv[1], sys.argv[2]
profiles, pii, controls = [], [], []
for i in range(200):
    email = "Zed.Quill%03d.%s@Plaintext-Probe.example" % (i, rid)
    digits = "4477009%05d" % (int(rid[:4], 16) % 1000 * 100 + i)
    phone = "+44 7700 9%s %s" % (digits[7:9], digits[9:])
    nick = "NickCtl%s%03d" % (rid, i)
    profiles.append({"id": "np-%d" % i, "attributes": {"email": email, "phone": phone, "nickname": nick}})
    pii.append((email, [email, email.lower(), email.upper()]))
    pii.append((phone, [phone, "+" + digits, digits, digits[2:]]))
    controls.append(nick)

def b64_forms(v):
    out = set()
    for k in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            s = enc(b"\0" * k + v).decode().rstrip("=")
            core = s[4 if k else 0:len(s) - 4]
            if len(core) >= 8:
                out.add(core)
    return out

needles = []
for value, spellings in pii:
    for s in spellings:
        b = s.encode()
        needles.append({"value": value, "how": "text", "needle": s})
        needles.append({"value": value, "how": "hex", "needle": b.hex()})
        needles.append({"value": value, "how": "HEX", "needle": b.hex().upper()})
        for f in b64_forms(b):
            needles.append({"value": value, "how": "base64", "needle": f})
json.dump({"profiles": profiles[:100]}, open(d + "/batch1.json", "w"))
json.dump({"profiles": profiles[100:]}, open(d + "/batch2.json", "w"))
json.dump(needles, open(d + "/needles.json", "w"))
open(d + "/needles.txt", "w").write("".join(sorted({n["needle"] + "\n" for n in needles})))
open(d + "/controls.txt", "w").write("".join(c + "\n" for c in controls))
json.dump({"events": [{"profile_id": "np-%d" % i, "name": "signup",
                       "properties": {"email": profiles[i]["attributes"]["email"], "nickname": controls[i]}}
                      for i in range(50)]}, open(d + "/events.json", "w"))
EOF

# search LABEL MODE PATH...: searches every regular file under the paths
# (symlinks not followed) for every needle, with grep -F (Aho-Corasick: fast
# enough for a PostgreSQL data directory). MODE "need" also requires every
# positive control to be found somewhere in these files; "hits" turns the
# verdict around (for the canaries); "none" only looks for needles.
search() {
  local name=$1 mode=$2
  shift 2
  local files nfiles bytes hits found_controls=0 ncontrols
  files="$tmp/search.files"
  find "$@" -type f -print0 2>/dev/null >"$files"
  nfiles=$(tr -cd '\0' <"$files" | wc -c)
  bytes=$(xargs -0 -r cat <"$files" | wc -c)
  xargs -0 -r env LC_ALL=C grep -F -a -o -H -f "$tmp/needles.txt" <"$files" >"$tmp/search.hits" 2>/dev/null
  hits=$(grep -c . "$tmp/search.hits")
  ncontrols=$(grep -c . "$tmp/controls.txt")
  if [ "$mode" = need ]; then
    found_controls=$(xargs -0 -r env LC_ALL=C grep -F -a -o -h -f "$tmp/controls.txt" <"$files" 2>/dev/null | sort -u | grep -c .)
  fi
  local summary="$nfiles files, $bytes bytes, $(grep -c . "$tmp/needles.txt") needles, $hits hits"
  [ "$mode" = need ] && summary="$summary, $found_controls of $ncontrols controls found"
  if [ "$mode" = hits ]; then
    if [ "$hits" -gt 0 ]; then ok "$name: $summary"; else bad "$name" "$summary"; fi
  elif [ "$nfiles" -eq 0 ]; then
    bad "$name" "no files to search in $*"
  elif [ "$hits" -gt 0 ]; then
    bad "$name" "$summary: $(head -n 5 "$tmp/search.hits" | tr '\n' '|' | head -c 800)"
  elif [ "$mode" = need ] && [ "$found_controls" -ne "$ncontrols" ]; then
    bad "$name" "$summary: the search is broken, or the non-PII attributes are not stored"
  else
    ok "$name: $summary"
  fi
}

# The search must see every encoding it claims to: canary files holding an
# email as hex, a phone as base64 at an odd offset, an email in upper case.
mkdir -p "$tmp/canary"
"$PY" - "$tmp" <<'EOF'
import base64, json, sys
d = sys.argv[1]
n = json.load(open(d + "/needles.json"))
email = n[0]["value"]
phone = next(x["value"] for x in n if x["value"].startswith("+"))
open(d + "/canary/hex", "wb").write(b"xx" + email.encode().hex().encode() + b"yy")
open(d + "/canary/base64", "wb").write(base64.b64encode(b"Z" + phone.encode()))
open(d + "/canary/upper", "wb").write(b"\0" + email.upper().encode())
EOF
for f in hex base64 upper; do
  search "the search finds the $f canary" hits "$tmp/canary/$f"
done

# ingest: the corpus into the current instance's tenant, a masked read of
# each of 20 profiles, events with a PII property.
ingest() {
  local store=$1 i
  make_tenant np && ok "$store: tenant np" || bad "$store: tenant np"
  tenant_curl POST /v1/profiles "@$tmp/batch1.json"
  expect_status "$store: first 100 profiles" 200
  tenant_curl POST /v1/profiles "@$tmp/batch2.json"
  expect_status "$store: second 100 profiles" 200
  tenant_curl POST /v1/events "@$tmp/events.json"
  expect_status "$store: 50 events with an email property" 200
  for i in $(seq 0 19); do tenant_curl GET "/v1/profiles/np-$i"; done
  expect_status "$store: masked reads" 200
  tenant_curl GET /v1/profiles/np-199
  if "$PY" -c 'import json, sys
sys.exit(0 if json.load(open(sys.argv[1]))["attributes"]["nickname"].startswith("NickCtl") else 1)' "$RESP_BODY" 2>/dev/null; then
    ok "$store: the last profile is stored"
  else
    bad "$store: the last profile is stored" "$(resp)"
  fi
}

# ---- SQLite ------------------------------------------------------------------------
# At debug level, so the access log (one line per request) is searched too.
if SP_CFG_LOG_LEVEL=debug sp_start sqlite; then
  ok "sqlite: sealpostd starts"
  ingest sqlite
  grep -q '"event":"http.request"' "$SP_DIR/sealpostd.log" && ok "sqlite: the debug access log is written" \
    || bad "sqlite: the debug access log is written" "$(tail -c 300 "$SP_DIR/sealpostd.log")"
  ls "$SP_DIR"/sealpost.db* >/dev/null 2>&1 || bad "sqlite: the store file exists"
  search "sqlite, daemon running: the database, its -wal, logs, audit, data dir" need "$SP_DIR"
  if [ -s "$SP_DIR/sealpost.db-wal" ]; then
    search "sqlite, daemon running: the -wal file alone" none "$SP_DIR/sealpost.db-wal"
  fi
  sp_stop sqlite && ok "sqlite: sealpostd stops on SIGTERM with status 0" || bad "sqlite: exit status on SIGTERM"
  search "sqlite, daemon stopped: everything under the instance directory" need "$SP_DIR"
else
  bad "sqlite: sealpostd starts"
fi

# ---- PostgreSQL -------------------------------------------------------------------------
# The fixture runs PostgreSQL as the postgres user, who cannot enter $tmp
# (0700): its directory lives in a parent of its own that others may cross.
pgparent=$(mktemp -d "${TMPDIR:-/tmp}/sealpost-pg.XXXXXX")
chmod 711 "$pgparent"
pgdir="$pgparent/pg"
pg_started=""
stop_pg() { if [ -n "$pg_started" ]; then "$pg_fixture" stop "$pgdir" >/dev/null 2>&1 || true; pg_started=""; fi; }
trap 'stop_pg; rm -rf "$pgparent"; sp_cleanup' EXIT
if [ ! -x "$pg_fixture" ]; then
  bad "postgresql: scripts/pg-fixture is missing"
elif ! pg_url=$("$pg_fixture" start "$pgdir" 2>"$tmp/pg.err") || [ -z "$pg_url" ]; then
  bad "postgresql: scripts/pg-fixture start" "$(head -c 400 "$tmp/pg.err")"
else
  pg_started=1
  pg_url=$(printf '%s\n' "$pg_url" | grep -m1 '^postgres')
  ok "postgresql: a throwaway server"
  if SP_CFG_STORE_URL=$pg_url sp_start pg; then
    ok "postgresql: sealpostd starts on it"
    ingest postgresql
    sp_stop pg && ok "postgresql: sealpostd stops on SIGTERM with status 0" || bad "postgresql: exit status"
    mkdir -p "$tmp/pg-dump"
    if pg_dump --no-owner --dbname="$pg_url" >"$tmp/pg-dump/dump.sql" 2>"$tmp/pg-dump.err"; then
      ok "postgresql: pg_dump ($(wc -c <"$tmp/pg-dump/dump.sql") bytes)"
      search "postgresql: the pg_dump" need "$tmp/pg-dump"
    else
      bad "postgresql: pg_dump" "$(head -c 300 "$tmp/pg-dump.err")"
    fi
    psql "$pg_url" -qAt -c CHECKPOINT >/dev/null 2>&1 || true
    search "postgresql: every file of the server's data directory, and the daemon's" need "$pgdir" "$SP_DIR"
  else
    bad "postgresql: sealpostd starts on it"
  fi
  stop_pg
fi

finish "$label"
