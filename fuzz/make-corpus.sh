#!/usr/bin/env bash
# Regenerates the committed seed corpus in fuzz/corpus/<target>/.
#
# Seeds are small, meaningful inputs a fuzzer would take a long time to find
# on its own: valid messages for every algorithm and profile, and near misses
# that stop at each check of the receive path. Hand-crafted seeds are written
# from literals below, so they come out byte-identical every time. Whole
# protocol messages come from the real CLI (`sealpost seal`), sealed with the
# fixed key set that fuzz/fuzz_open.c builds its sp_wire from and at its fixed
# `now`, so they open inside the harness; sealing draws a fresh random IV, so
# those seeds differ from run to run in their IV and ciphertext bytes only.
#
# The script writes only the files it names and leaves any other file in the
# corpus directories alone (minimised reproducers added by hand survive).
#
# usage: fuzz/make-corpus.sh            (uses build/sealpost)
#        SEALPOST=/path/to/sealpost fuzz/make-corpus.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${SEALPOST:-$root/build/sealpost}
[ -x "$cli" ] || { echo "make-corpus: no CLI at $cli (run 'make build' or set SEALPOST)" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

exec python3 - "$cli" "$root/fuzz/corpus" "$scratch" <<'PY'
import base64, json, os, subprocess, sys

cli, corpus, scratch = sys.argv[1:4]

# Must match fuzz/fuzz_open.c: versions, keys (bytes first, first+1, ...), now.
V1 = "1c0ffee0-5ea1-4b0d-8a11-000000000001"
V2 = "1c0ffee0-5ea1-4b0d-8a11-000000000002"
KEY1 = bytes(range(0x00, 0x20))
KEY2 = bytes(range(0x20, 0x40))
NOW = 1700000000
UNKNOWN_VERSION = "1c0ffee0-5ea1-4b0d-8a11-0000000000ff"

# fuzz_open mode byte: 0x80 = harness signs; bit 2 = version; bits 0-1 = derivation
SIGN, TIGHT, APPEND = 0x80, 0x40, 0x20
KIND = {"cbc": 0, "gcm": 1, "ctr": 2, "jwe": 3}

def b64(b): return base64.b64encode(b).decode()
def b64url(b): return base64.urlsafe_b64encode(b).decode().rstrip("=")

def put(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def keyfile(entries):
    return json.dumps({"format": "sealpost-keyfile", "version": 1, "keys": entries}, separators=(",", ":"))

def entry(version, key, state, created=NOW):
    return {"version": version, "key": b64(key), "state": state, "created": created}

FUZZ_KEYS = keyfile([entry(V1, KEY1, "active"), entry(V2, KEY2, "decrypt-only", NOW - 86400)])
keys_path = os.path.join(scratch, "keys.json")
with open(keys_path, "w") as f:
    f.write(FUZZ_KEYS)
os.chmod(keys_path, 0o600)

seq = [0]
def seal(plaintext, alg="gcm", profile="compat", version=None, ts=NOW):
    seq[0] += 1
    args = [cli, "seal", "--keys", keys_path, "--profile", profile, "--alg", "aes-256-" + alg,
            "--id", "msg_fuzzseed%018d" % seq[0], "--timestamp", str(ts)]
    if version:
        args += ["--key-version", version]
    out = subprocess.run(args, input=plaintext, capture_output=True, check=True).stdout
    doc = json.loads(out)
    return list(doc["headers"].items()), doc["body"].encode()

def open_input(mode, headers, body, drop=()):
    lines = [("%s: %s\n" % (k, v)).encode() for k, v in headers if k.lower() not in drop]
    return bytes([mode]) + b"".join(lines) + b"\n" + body

def with_header(headers, name, value):
    return [(k, value if k.lower() == name.lower() else v) for k, v in headers]

def header(headers, name):
    return next(v for k, v in headers if k.lower() == name.lower())

# ---------------------------------------------------------------- fuzz_keyfile
put("fuzz_keyfile", "valid-two-keys", FUZZ_KEYS)
put("fuzz_keyfile", "valid-one-key", keyfile([entry(V1, KEY1, "active")]))
put("fuzz_keyfile", "valid-pretty", json.dumps(json.loads(FUZZ_KEYS), indent=2) + "\n")
put("fuzz_keyfile", "valid-extra-members",
    '{"version":1,"format":"sealpost-keyfile","comment":"x","keys":[{"created":0,"state":"active",'
    '"key":"%s","version":"%s","note":[1,{}]}]}' % (b64(KEY1), V1))
put("fuzz_keyfile", "bad-no-active", keyfile([entry(V1, KEY1, "decrypt-only")]))
put("fuzz_keyfile", "bad-two-active", keyfile([entry(V1, KEY1, "active"), entry(V2, KEY2, "active")]))
put("fuzz_keyfile", "bad-duplicate-version", keyfile([entry(V1, KEY1, "active"), entry(V1, KEY2, "decrypt-only")]))
put("fuzz_keyfile", "bad-short-key", keyfile([entry(V1, KEY1[:31], "active")]))
put("fuzz_keyfile", "bad-long-key", keyfile([entry(V1, KEY1 + KEY2[:6], "active")]))
put("fuzz_keyfile", "bad-uppercase-uuid", keyfile([entry(V1.upper(), KEY1, "active")]))
put("fuzz_keyfile", "bad-unknown-state", keyfile([entry(V1, KEY1, "retired")]))
put("fuzz_keyfile", "bad-empty-keys", keyfile([]))
put("fuzz_keyfile", "bad-format-version-2", FUZZ_KEYS.replace('"version":1,', '"version":2,', 1))
put("fuzz_keyfile", "bad-duplicate-member", FUZZ_KEYS.replace('{"format"', '{"format":"x","format"', 1))
put("fuzz_keyfile", "bad-truncated", FUZZ_KEYS[: len(FUZZ_KEYS) // 2])
put("fuzz_keyfile", "bad-key-not-canonical-b64", keyfile([entry(V1, KEY1, "active")]).replace("Hh8=", "Hh9="))

# ---------------------------------------------------------------- fuzz_base64
put("fuzz_base64", "empty", "")
put("fuzz_base64", "std-pad2", "Zg==")
put("fuzz_base64", "std-pad1", "Zm8=")
put("fuzz_base64", "std-nopad", "Zm9vYmFy")
put("fuzz_base64", "std-key", b64(KEY1))
put("fuzz_base64", "std-long-crosses-chunk", b64(bytes(range(256)) + bytes(range(44))))
put("fuzz_base64", "std-plus-slash", b64(b"\xfb\xff\xbf"))
put("fuzz_base64", "url-key", b64url(KEY2))
put("fuzz_base64", "url-minus-underscore", b64url(b"\xfb\xff"))
put("fuzz_base64", "bad-trailing-bits", "Zh==")
put("fuzz_base64", "bad-trailing-bits-pad1", "Zm9=")
put("fuzz_base64", "bad-length", "Zg=")
put("fuzz_base64", "bad-pad-inside", "Zg==Zg==")
put("fuzz_base64", "bad-all-pad", "====")
put("fuzz_base64", "bad-newline", "Zm9v\n")
put("fuzz_allowlist", "v4", "10.0.0.0/8")
put("fuzz_allowlist", "list", "10.1.2.3/8, 192.168.1.128/25 ,2001:db8::/33,127.0.0.1")
put("fuzz_allowlist", "mapped", "::ffff:10.0.0.0/104")
put("fuzz_allowlist", "all", "0.0.0.0/0")
put("fuzz_allowlist", "empty", "")
put("fuzz_allowlist", "bad-prefix", "10.0.0.0/33")
put("fuzz_allowlist", "bad-empty", "1.2.3.4,,")

# ---------------------------------------------------------------- whole messages
plain_short = b"hello, provider"
plain_block = b"0123456789abcdef"  # exactly one AES block: CBC adds a full pad block
plain_sms = json.dumps({"to": "+15550100", "from": "ACME", "text": "Your code is 421337"}).encode()

msgs = {}
for alg in ("cbc", "gcm", "ctr"):
    msgs["compat-" + alg] = seal(plain_sms, alg=alg)
msgs["compat-cbc-block"] = seal(plain_block, alg="cbc")
msgs["compat-gcm-empty"] = seal(b"", alg="gcm")
msgs["compat-ctr-v2"] = seal(plain_short, alg="ctr", version=V2)
msgs["jwe"] = seal(plain_sms, profile="jwe")
msgs["jwe-v2"] = seal(plain_short, profile="jwe", version=V2)
msgs["jwe-empty"] = seal(b"", profile="jwe")
msgs["compat-gcm-stale"] = seal(plain_short, alg="gcm", ts=NOW - 301)
msgs["compat-gcm-edge"] = seal(plain_short, alg="gcm", ts=NOW + 300)
msgs["jwe-large"] = seal(plain_sms * 4, profile="jwe")  # over the tight 256-byte limit

def kind_of(name):
    return "jwe" if name.startswith("jwe") else name.split("-")[1]

def mode_of(name, extra=0):
    v = 4 if name.endswith("-v2") else 0
    return SIGN | extra | v | KIND[kind_of(name)]

# ---------------------------------------------------------------- fuzz_open
for name, (h, body) in msgs.items():
    if name in ("compat-gcm-stale", "compat-gcm-edge", "jwe-large"):
        continue
    # as sent, with the sender's own signature
    put("fuzz_open", "sender-signed-" + name, open_input(0x00, h, body))
    # the harness signs: mutations of the body keep a valid signature
    put("fuzz_open", "harness-signed-" + name, open_input(mode_of(name), h, body, drop=("webhook-signature",)))

h, body = msgs["compat-gcm"]
put("fuzz_open", "append-to-sender-signature", open_input(mode_of("compat-gcm", APPEND), h, body))
put("fuzz_open", "several-signatures",
    open_input(0x00, with_header(h, "webhook-signature",
                                 "v2,bm9wZQ== v1,%s %s" % (b64(bytes(32)), header(h, "webhook-signature"))), body))
put("fuzz_open", "near-iv-header-differs",
    open_input(mode_of("compat-gcm"), with_header(h, "X-AES-IV", b64(bytes(12))), body, drop=("webhook-signature",)))
put("fuzz_open", "near-iv-header-too-long",
    open_input(mode_of("compat-gcm"), with_header(h, "X-AES-IV", b64(bytes(18))), body, drop=("webhook-signature",)))
put("fuzz_open", "near-uppercase-names",
    open_input(mode_of("compat-gcm"), [(k.upper(), v) for k, v in h], body, drop=("webhook-signature",)))
put("fuzz_open", "near-duplicate-id",
    open_input(mode_of("compat-gcm"), h + [("webhook-id", "msg_other")], body, drop=("webhook-signature",)))
put("fuzz_open", "near-unknown-version",
    open_input(mode_of("compat-gcm"), with_header(h, "X-AES-KEY-VERSION", UNKNOWN_VERSION), body,
               drop=("webhook-signature",)))
put("fuzz_open", "near-wrong-derivation",
    open_input(SIGN | KIND["cbc"], h, body, drop=("webhook-signature",)))

h, body = msgs["compat-cbc-block"]
put("fuzz_open", "near-cbc-no-alg-header",
    open_input(mode_of("compat-cbc"), h, body, drop=("webhook-signature", "x-aes-algorithm")))
# flipping a bit in the last ciphertext block breaks the padding behind a valid signature
doc = json.loads(body)
ct = bytearray(base64.b64decode(doc["ciphertext"]))
ct[-1] ^= 0x01
bad = ('{"ciphertext":"%s","iv":"%s"}' % (b64(bytes(ct)), doc["iv"])).encode()
put("fuzz_open", "near-cbc-bad-padding", open_input(mode_of("compat-cbc"), h, bad, drop=("webhook-signature",)))
put("fuzz_open", "tight-cbc", open_input(mode_of("compat-cbc", TIGHT), h, body, drop=("webhook-signature",)))

h, body = msgs["compat-gcm-stale"]
put("fuzz_open", "near-stale-timestamp", open_input(mode_of("compat-gcm"), h, body, drop=("webhook-signature",)))
h, body = msgs["compat-gcm-edge"]
put("fuzz_open", "edge-timestamp-plus-300", open_input(mode_of("compat-gcm"), h, body, drop=("webhook-signature",)))

h, body = msgs["jwe"]
put("fuzz_open", "near-jwe-kid-differs",
    open_input(SIGN | 4 | KIND["jwe"], with_header(h, "X-AES-KEY-VERSION", V2), body, drop=("webhook-signature",)))
put("fuzz_open", "near-jwe-as-compat",
    open_input(mode_of("jwe"), with_header(h, "Content-Type", "application/json"), body, drop=("webhook-signature",)))
put("fuzz_open", "tight-jwe", open_input(mode_of("jwe", TIGHT), h, body, drop=("webhook-signature",)))
h, body = msgs["jwe-large"]
put("fuzz_open", "tight-jwe-too-large", open_input(mode_of("jwe", TIGHT), h, body, drop=("webhook-signature",)))

put("fuzz_open", "headers-only", bytes([SIGN | KIND["gcm"]]) + b"Content-Type: application/json\n"
    b"webhook-id: msg_x\nwebhook-timestamp: 1700000000\n\n")
put("fuzz_open", "empty", b"")

# ---------------------------------------------------------------- fuzz_compat_body
for name in ("compat-cbc", "compat-gcm", "compat-ctr", "compat-gcm-empty"):
    put("fuzz_compat_body", "sealpost-" + name, msgs[name][1])
doc = json.loads(msgs["compat-gcm"][1])
ct, iv = doc["ciphertext"], doc["iv"]
put("fuzz_compat_body", "reordered", '{"iv":"%s","ciphertext":"%s"}' % (iv, ct))
put("fuzz_compat_body", "pretty", '{\n  "ciphertext" : "%s",\n  "iv" : "%s"\n}\n' % (ct, iv))
put("fuzz_compat_body", "extra-members",
    '{"v":2,"ciphertext":"%s","meta":[1,{"a":null}],"iv":"%s","z":true}' % (ct, iv))
put("fuzz_compat_body", "escaped", '{"ciphertext":"%s","iv":"\\u0041%s"}' % (ct.replace("/", "\\/"), iv[1:]))
put("fuzz_compat_body", "bad-duplicate", '{"ciphertext":"%s","iv":"%s","iv":"%s"}' % (ct, iv, iv))
put("fuzz_compat_body", "bad-missing-iv", '{"ciphertext":"%s"}' % ct)
put("fuzz_compat_body", "bad-iv-number", '{"ciphertext":"%s","iv":12}' % ct)
put("fuzz_compat_body", "bad-trailing", '{"ciphertext":"%s","iv":"%s"}x' % (ct, iv))
put("fuzz_compat_body", "bad-array", '[{"ciphertext":"%s","iv":"%s"}]' % (ct, iv))
put("fuzz_compat_body", "bad-truncated", ('{"ciphertext":"%s","iv":"%s"}' % (ct, iv))[:-3])
put("fuzz_compat_body", "nul-escape", '{"ciphertext":"a\\u0000b","iv":"%s"}' % iv)

# ---------------------------------------------------------------- fuzz_sig_header
put("fuzz_sig_header", "sealpost", header(msgs["compat-gcm"][0], "webhook-signature"))
sig1, sig2 = b64(bytes(range(32))), b64(bytes(range(1, 33)))
put("fuzz_sig_header", "two", "v1,%s v1,%s" % (sig1, sig2))
put("fuzz_sig_header", "eight", " ".join(["v1," + sig1] * 8))
put("fuzz_sig_header", "nine-too-many", " ".join(["v1," + sig1] * 9))
put("fuzz_sig_header", "other-version-first", "v1a,%s v2,abc v1,%s" % (sig1, sig2))
put("fuzz_sig_header", "bad-only-v2", "v2,%s" % sig1)
put("fuzz_sig_header", "bad-double-space", "v1,%s  v1,%s" % (sig1, sig2))
put("fuzz_sig_header", "bad-trailing-space", "v1,%s " % sig1)
put("fuzz_sig_header", "bad-empty-sig", "v1,")
put("fuzz_sig_header", "bad-short-sig", "v1," + b64(bytes(31)))
put("fuzz_sig_header", "bad-url-alphabet", "v1," + b64url(b"\xfb" * 32) + "=")
put("fuzz_sig_header", "bad-empty", "")

# ---------------------------------------------------------------- fuzz_jwe
put("fuzz_jwe", "sealpost", msgs["jwe"][1])
put("fuzz_jwe", "sealpost-v2", msgs["jwe-v2"][1])
put("fuzz_jwe", "sealpost-empty-plaintext", msgs["jwe-empty"][1])

def jwe(header_json, ek=b"", iv=bytes(12), ct=b"ciphertext", tag=bytes(16)):
    return ".".join([b64url(header_json.encode()), b64url(ek), b64url(iv), b64url(ct), b64url(tag)])

plain_header = '{"alg":"dir","enc":"A256GCM","kid":"%s"}' % V1
put("fuzz_jwe", "crafted-plain", jwe(plain_header))
put("fuzz_jwe", "crafted-typ", jwe('{"typ":"JOSE","kid":"%s","enc":"A256GCM","alg":"dir"}' % V1))
put("fuzz_jwe", "bad-zip", jwe('{"alg":"dir","enc":"A256GCM","kid":"%s","zip":"DEF"}' % V1))
put("fuzz_jwe", "bad-crit", jwe('{"alg":"dir","enc":"A256GCM","kid":"%s","crit":["exp"]}' % V1))
put("fuzz_jwe", "bad-alg", jwe('{"alg":"A256KW","enc":"A256GCM","kid":"%s"}' % V1, ek=bytes(40)))
put("fuzz_jwe", "bad-enc", jwe('{"alg":"dir","enc":"A128GCM","kid":"%s"}' % V1))
put("fuzz_jwe", "bad-duplicate-alg", jwe('{"alg":"none","alg":"dir","enc":"A256GCM","kid":"%s"}' % V1))
put("fuzz_jwe", "bad-kid-uppercase", jwe('{"alg":"dir","enc":"A256GCM","kid":"%s"}' % V1.upper()))
put("fuzz_jwe", "bad-encrypted-key", jwe(plain_header, ek=b"k"))
put("fuzz_jwe", "bad-four-parts", jwe(plain_header).rsplit(".", 1)[0])
put("fuzz_jwe", "bad-six-parts", jwe(plain_header) + ".AA")
put("fuzz_jwe", "bad-padded", jwe(plain_header) + "==")
put("fuzz_jwe", "bad-header-array", jwe('["alg","dir"]'))
PY
