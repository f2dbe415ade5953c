#!/usr/bin/python3
"""Writes tests/vectors/protocol-v1.json: sealpost wire-protocol test vectors.

Why this exists: the C library must agree with the protocol, not with
itself. This script is a second implementation written from the protocol
notes alone (python3-cryptography for AES and HKDF, the standard library for
HMAC, base64 and JSON), and the vectors it writes pin the C code to it byte
for byte. Other implementations (a provider's Java or Go receiver) can check
themselves against the same file.

Run it with /usr/bin/python3 (the interpreter that has python3-cryptography):

    /usr/bin/python3 tests/vectors/generate.py            # rewrite the file
    /usr/bin/python3 tests/vectors/generate.py --check    # exit 1 if it differs

Everything is fixed: keys, key versions, IVs, message ids and timestamps are
constants or derived from a case's name with SHA-256, and the JSON is written
with sorted keys, so running it twice gives the same bytes. Commit the JSON;
tests/unit/test_vectors.c reads it.

The file holds three lists:

  "positive": what sealpost must write. Each case has key_hex, key_version,
      profile ("compat" | "jwe"), alg, iv_hex, message_id, timestamp,
      plaintext_hex (and plaintext, the same bytes as a UTF-8 string),
      headers, body and signing_secret ("whsec_..." for that version,
      profile and algorithm). Sealing the plaintext with that key, version,
      id, timestamp and IV must give exactly these headers, in this order,
      and exactly this body; opening them with now = timestamp must give the
      plaintext back.
  "accept": messages sealpost did not write (other spellings that the
      protocol allows) which a receiver must open: keys (what the receiver
      knows), headers, body, now, and the expected plaintext_hex, profile,
      alg and message_id.
  "reject": messages a receiver must refuse: keys, headers, body, now and
      error, the sealpost error name (SP_ERR_AUTH for anything that fails
      authentication or decryption, a specific code for malformed input).
      Each case has exactly one fault; where the fault is inside the signed
      bytes the case is re-signed, so the signature is not what rejects it.

headers is a list of [name, value] pairs, not an object, because order and
repetition matter. Every receiver in these cases uses the default limits:
300 s timestamp tolerance and a 1 MiB body.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol-v1.json")

SALT = b"sealpost/webhook/v1"
IV_BYTES = {"AES-256-CBC": 16, "AES-256-GCM": 12, "AES-256-CTR": 16}
ALGS = ["AES-256-CBC", "AES-256-GCM", "AES-256-CTR"]
JWE_SIGNING_ALG = "JWE/A256GCM"
TOLERANCE = 300
BASE_TIME = 1714000000  # 2024-04-24T23:06:40Z


def sha(label):
    return hashlib.sha256(label.encode()).digest()


# Fixed keys: derived from a label so the file does not carry a wall of
# unexplained hex, and so that nobody mistakes them for real keys.
KEY_A = sha("sealpost test vectors: key A")
KEY_B = sha("sealpost test vectors: key B")
KEY_C = sha("sealpost test vectors: key C (unknown to receivers)")
VER_A = "3f6c1a52-8d0e-4b7a-9c21-5e4f0a7b6d13"
VER_B = "b2d84e07-61f3-4c95-a8e0-17c9d3f2a540"
VER_C = "0e9a5c3b-f712-4d68-b4a1-c6e8207d95fb"
RECEIVER = [(KEY_A, VER_A), (KEY_B, VER_B)]


# ------------------------------------------------------------ primitives ---

def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signing_key(key, version, label):
    """label: the X-AES-ALGORITHM value, or JWE/A256GCM for the JWE profile."""
    info = ("%s|%s" % (version, label)).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(key)


def signature(key, version, label, msg_id, ts, body):
    mac = hmac.new(signing_key(key, version, label), digestmod=hashlib.sha256)
    mac.update(("%s.%s." % (msg_id, ts)).encode())
    mac.update(body.encode())
    return "v1," + b64(mac.digest())


def encrypt(alg, key, iv, plaintext):
    if alg == "AES-256-GCM":
        return AESGCM(key).encrypt(iv, plaintext, None)  # ciphertext || tag
    if alg == "AES-256-CBC":
        padder = sym_padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        return cbc_raw(key, iv, padded)
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(plaintext) + enc.finalize()


def cbc_raw(key, iv, blocks):
    """CBC without padding, for ciphertexts whose padding is wrong on purpose."""
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(blocks) + enc.finalize()


def whsec(key, version, label):
    return "whsec_" + b64(signing_key(key, version, label))


# -------------------------------------------------------------- messages ---

def message_id(label):
    return "msg_" + b64url(sha("id " + label)[:16])


def iv_for(label, n):
    return sha("iv " + label)[:n]


def compat_body(ct_b64, iv_b64):
    return '{"ciphertext":"%s","iv":"%s"}' % (ct_b64, iv_b64)


def seal_compat(key, version, alg, iv, plaintext, msg_id, ts):
    body = compat_body(b64(encrypt(alg, key, iv, plaintext)), b64(iv))
    headers = [
        ["Content-Type", "application/json"],
        ["X-AES-KEY-VERSION", version],
        ["X-AES-ALGORITHM", alg],
        ["X-AES-IV", b64(iv)],
        ["webhook-id", msg_id],
        ["webhook-timestamp", str(ts)],
        ["webhook-signature", signature(key, version, alg, msg_id, ts, body)],
    ]
    return headers, body


def jwe_header_json(kid):
    return '{"alg":"dir","enc":"A256GCM","kid":"%s"}' % kid


def jwe_compact(key, iv, plaintext, protected_json, encrypted_key=b""):
    protected = b64url(protected_json.encode())
    sealed = AESGCM(key).encrypt(iv, plaintext, protected.encode())
    ct, tag = sealed[:-16], sealed[-16:]
    return ".".join([protected, b64url(encrypted_key), b64url(iv), b64url(ct), b64url(tag)])


def seal_jwe(key, version, iv, plaintext, msg_id, ts, protected_json=None):
    body = jwe_compact(key, iv, plaintext, protected_json or jwe_header_json(version))
    headers = [
        ["Content-Type", "application/jose"],
        ["X-AES-KEY-VERSION", version],
        ["webhook-id", msg_id],
        ["webhook-timestamp", str(ts)],
        ["webhook-signature", signature(key, version, JWE_SIGNING_ALG, msg_id, ts, body)],
    ]
    return headers, body


def get(headers, name):
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    raise KeyError(name)


def with_header(headers, name, value):
    """A copy with one header's value replaced (None removes it)."""
    out = []
    for n, v in headers:
        if n.lower() == name.lower():
            if value is not None:
                out.append([n, value])
        else:
            out.append([n, v])
    return out


def resign(headers, body, key=KEY_A, version=None):
    """Signs body under the headers' own id, timestamp, version and algorithm,
    the way a sender holding the key would."""
    version = version or get(headers, "X-AES-KEY-VERSION")
    if get(headers, "Content-Type").lower().startswith("application/jose"):
        label = JWE_SIGNING_ALG
    else:
        label = dict((n.lower(), v) for n, v in headers).get("x-aes-algorithm", "AES-256-CBC")
    sig = signature(key, version, label, get(headers, "webhook-id"), get(headers, "webhook-timestamp"), body)
    return with_header(headers, "webhook-signature", sig)


# -------------------------------------------------------------- payloads ---

def sms_payload():
    """A 1000-byte JSON SMS callback, the size of a typical long message."""
    doc = {
        "type": "message.received",
        "id": "evt_01HW3K6Y1QZ8T5R2N4M7P9C0XB",
        "occurred_at": "2024-04-24T23:06:40Z",
        "data": {
            "channel": "sms",
            "from": "+15555550123",
            "to": "+15555550199",
            "segments": 3,
            "encoding": "GSM-7",
            "text": "",
        },
    }
    filler = ("Your appointment is confirmed for Thursday at 10:30. Reply C to cancel "
              "or R to reschedule. ")
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    need = 1000 - base
    doc["data"]["text"] = (filler * (need // len(filler) + 1))[:need]
    out = json.dumps(doc, separators=(",", ":")).encode()
    assert len(out) == 1000, len(out)
    return out


PLAINTEXTS = [
    ("empty", b""),
    ("short", b"hello, provider"),
    ("sms1000", sms_payload()),
    ("utf8", "Grüße aus Köln — 你好, мир! 📨 ½ €".encode()),
]


# ---------------------------------------------------------------- cases ---

def plaintext_fields(pt):
    fields = {"plaintext_hex": pt.hex()}
    try:
        fields["plaintext"] = pt.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return fields


def keys_field(pairs):
    return [{"key_hex": k.hex(), "key_version": v} for k, v in pairs]


def positive_case(name, profile, alg, key, version, iv, pt, msg_id, ts):
    if profile == "jwe":
        headers, body = seal_jwe(key, version, iv, pt, msg_id, ts)
        label = JWE_SIGNING_ALG
    else:
        headers, body = seal_compat(key, version, alg, iv, pt, msg_id, ts)
        label = alg
    case = {
        "name": name,
        "profile": profile,
        "alg": alg,
        "key_hex": key.hex(),
        "key_version": version,
        "iv_hex": iv.hex(),
        "message_id": msg_id,
        "timestamp": ts,
        "headers": headers,
        "body": body,
        "signing_secret": whsec(key, version, label),
    }
    case.update(plaintext_fields(pt))
    return case


def positives():
    cases = []
    n = 0
    for alg in ALGS:
        for pt_name, pt in PLAINTEXTS:
            name = "compat-%s-%s" % (alg.lower(), pt_name)
            cases.append(positive_case(name, "compat", alg, KEY_A, VER_A, iv_for(name, IV_BYTES[alg]), pt,
                                       message_id(name), BASE_TIME + 17 * n))
            n += 1
    for pt_name, pt in PLAINTEXTS:
        name = "jwe-%s" % pt_name
        cases.append(positive_case(name, "jwe", "AES-256-GCM", KEY_A, VER_A, iv_for(name, 12), pt,
                                   message_id(name), BASE_TIME + 17 * n))
        n += 1
    # CTR's IV is the whole counter block, incremented as one 128-bit
    # integer: starting two blocks below 2^128 makes the counter wrap.
    cases.append(positive_case("compat-aes-256-ctr-counter-wraps", "compat", "AES-256-CTR", KEY_B, VER_B,
                               bytes([0xff] * 15 + [0xfe]), PLAINTEXTS[2][1], message_id("wrap"),
                               BASE_TIME + 17 * n))
    n += 1
    # A plaintext of whole blocks gets a whole block of padding.
    cases.append(positive_case("compat-aes-256-cbc-block-aligned", "compat", "AES-256-CBC", KEY_B, VER_B,
                               iv_for("aligned", 16), b"0123456789abcdef" * 2, message_id("aligned"),
                               BASE_TIME + 17 * n))
    n += 1
    # The longest webhook-id, using every kind of printable character.
    long_id = ("evt:2024/04/24~batch#7!$&'()*+,;=@[]^_`{|}-" * 4)[:128]
    cases.append(positive_case("compat-aes-256-gcm-longest-message-id", "compat", "AES-256-GCM", KEY_B, VER_B,
                               iv_for("long-id", 12), b'{"status":"delivered"}', long_id, BASE_TIME + 17 * n))
    n += 1
    cases.append(positive_case("jwe-second-key", "jwe", "AES-256-GCM", KEY_B, VER_B, iv_for("jwe-b", 12),
                               b'{"status":"delivered"}', message_id("jwe-b"), BASE_TIME + 17 * n))
    return cases


def accepts():
    cases = []
    pt = b'{"to":"+15555550199","text":"accepted"}'

    def add(name, headers, body, now, profile, alg, msg_id, comment, plaintext=pt):
        case = {"name": name, "comment": comment, "keys": keys_field(RECEIVER), "headers": headers,
                "body": body, "now": now, "profile": profile, "alg": alg, "message_id": msg_id}
        case.update(plaintext_fields(plaintext))
        cases.append(case)

    t = BASE_TIME + 5000
    mid = message_id("accept")
    gcm_h, gcm_b = seal_compat(KEY_A, VER_A, "AES-256-GCM", iv_for("acc-gcm", 12), pt, mid, t)
    cbc_h, cbc_b = seal_compat(KEY_A, VER_A, "AES-256-CBC", iv_for("acc-cbc", 16), pt, mid, t)
    jwe_h, jwe_b = seal_jwe(KEY_A, VER_A, iv_for("acc-jwe", 12), pt, mid, t)

    add("compat-no-algorithm-header-means-cbc", with_header(cbc_h, "X-AES-ALGORITHM", None), cbc_b, t, "compat",
        "AES-256-CBC", mid, "X-AES-ALGORITHM absent: AES-256-CBC, and the signing key is the CBC one")
    add("compat-header-names-lowercase", [[n.lower(), v] for n, v in gcm_h], gcm_b, t, "compat", "AES-256-GCM",
        mid, "header names are case-insensitive")
    add("compat-header-names-uppercase", [[n.upper(), v] for n, v in gcm_h], gcm_b, t, "compat", "AES-256-GCM",
        mid, "header names are case-insensitive")
    add("compat-algorithm-name-lowercase", with_header(gcm_h, "X-AES-ALGORITHM", "aes-256-gcm"), gcm_b, t,
        "compat", "AES-256-GCM", mid,
        "the algorithm name is matched case-insensitively; the signing key still uses the canonical name")
    add("compat-unrelated-headers", [["User-Agent", "provider/1.0"]] + gcm_h + [["X-Request-Id", "abc"]], gcm_b,
        t, "compat", "AES-256-GCM", mid, "headers the protocol does not name are ignored")
    add("compat-content-type-parameter", with_header(gcm_h, "Content-Type", "application/json; charset=utf-8"),
        gcm_b, t, "compat", "AES-256-GCM", mid, "media-type parameters are ignored")
    add("compat-optional-whitespace", [[n, " \t%s \t" % v] for n, v in gcm_h], gcm_b, t, "compat",
        "AES-256-GCM", mid, "spaces and tabs around header values are not part of the value")
    good = get(gcm_h, "webhook-signature")
    bad = signature(KEY_C, VER_A, "AES-256-GCM", mid, t, gcm_b)
    add("compat-several-signatures", with_header(gcm_h, "webhook-signature", "%s v1a,Zm9v v2,%s %s" % (
        bad, good[3:], good)), gcm_b, t, "compat", "AES-256-GCM", mid,
        "one matching v1 entry is enough; other schemes (v1a, v2) are skipped")
    add("compat-timestamp-tolerance-past", gcm_h, gcm_b, t + TOLERANCE, "compat", "AES-256-GCM", mid,
        "exactly 300 s old is still inside the window")
    add("compat-timestamp-tolerance-future", gcm_h, gcm_b, t - TOLERANCE, "compat", "AES-256-GCM", mid,
        "exactly 300 s ahead is still inside the window")
    add("compat-second-key-version", *seal_compat(KEY_B, VER_B, "AES-256-CTR", iv_for("acc-b", 16), pt, mid, t),
        t, "compat", "AES-256-CTR", mid, "a receiver holding several versions picks the named one")

    # The first IV in a fixed sequence whose base64 has a "/", so that the
    # escaped-slash spelling below really escapes something in the IV, which
    # must then equal the unescaped X-AES-IV header.
    k = 0
    while "/" not in b64(iv_for("acc-json-%d" % k, 12)):
        k += 1
    js_h, js_b = seal_compat(KEY_A, VER_A, "AES-256-GCM", iv_for("acc-json-%d" % k, 12), pt, mid, t)
    ct_b64 = json.loads(js_b)["ciphertext"]
    iv_b64 = json.loads(js_b)["iv"]
    for name, body, comment in [
        ("compat-json-whitespace", '{ "ciphertext" : "%s" ,\n "iv" : "%s" }\n' % (ct_b64, iv_b64),
         "any JSON spelling of the body is accepted, not just sealpost's"),
        ("compat-json-members-reordered", '{"iv":"%s","ciphertext":"%s"}' % (iv_b64, ct_b64),
         "member order does not matter"),
        ("compat-json-extra-member", '{"ciphertext":"%s","iv":"%s","v":1,"meta":{"x":[1,2]}}' % (ct_b64, iv_b64),
         "members other than ciphertext and iv are ignored"),
        ("compat-json-escaped-slash", '{"ciphertext":"%s","iv":"%s"}' % (ct_b64.replace("/", "\\/"),
                                                                         iv_b64.replace("/", "\\/")),
         "JSON escapes are decoded before base64 (\\/ is /); the IV header holds the decoded text"),
    ]:
        add(name, resign(js_h, body), body, t, "compat", "AES-256-GCM", mid, comment)

    reordered = '{"kid":"%s","enc":"A256GCM","alg":"dir"}' % VER_A
    add("jwe-protected-header-reordered", *seal_jwe(KEY_A, VER_A, iv_for("acc-jwe-r", 12), pt, mid, t, reordered),
        t, "jwe", "AES-256-GCM", mid, "any JSON spelling of the protected header (it is the AAD as sent)")
    extra = '{"alg":"dir","enc":"A256GCM","kid":"%s","typ":"JWE","cty":"application/json"}' % VER_A
    add("jwe-protected-header-extra-members", *seal_jwe(KEY_A, VER_A, iv_for("acc-jwe-x", 12), pt, mid, t, extra),
        t, "jwe", "AES-256-GCM", mid, "header parameters other than zip and crit are allowed")
    add("jwe-header-names-mixed-case", [[n.swapcase(), v] for n, v in jwe_h], jwe_b, t, "jwe", "AES-256-GCM", mid,
        "header names are case-insensitive")
    return cases


def flip_b64(text, pos):
    """Changes one base64 character to another valid one at pos, keeping the
    string canonical (pos must not be the last data character)."""
    ch = text[pos]
    new = "B" if ch != "B" else "C"
    return text[:pos] + new + text[pos + 1:]


def flip_bit_b64(text, byte_index, url=False):
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if url else base64.b64decode(text))
    raw[byte_index] ^= 0x01
    return b64url(bytes(raw)) if url else b64(bytes(raw))


STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def non_canonical(text):
    """The same bytes spelled with a non-zero spare bit in the last data
    character of padded standard base64, which strict decoders refuse."""
    data = text.rstrip("=")
    pad = text[len(data):]
    assert pad, "needs a padded encoding"
    value = STD_ALPHABET.index(data[-1]) | 1
    return data[:-1] + STD_ALPHABET[value] + pad


def rejects():
    cases = []

    def add(name, headers, body, now, error, comment):
        cases.append({"name": name, "comment": comment, "keys": keys_field(RECEIVER), "headers": headers,
                      "body": body, "now": now, "error": error})

    pt = b'{"to":"+15555550199","text":"rejected"}'
    t = BASE_TIME + 9000
    mid = message_id("reject")
    msgs = {}
    for alg in ALGS:
        msgs[alg] = seal_compat(KEY_A, VER_A, alg, iv_for("rej-" + alg, IV_BYTES[alg]), pt, mid, t)
    msgs["jwe"] = seal_jwe(KEY_A, VER_A, iv_for("rej-jwe", 12), pt, mid, t)
    gcm_h, gcm_b = msgs["AES-256-GCM"]
    cbc_h, cbc_b = msgs["AES-256-CBC"]
    ctr_h, ctr_b = msgs["AES-256-CTR"]
    jwe_h, jwe_b = msgs["jwe"]
    gcm_body = json.loads(gcm_b)
    cbc_body = json.loads(cbc_b)

    # --- authentication: the signature, or decryption, fails ---
    for alg in ALGS:
        h, b = msgs[alg]
        ct = json.loads(b)["ciphertext"]
        add("compat-%s-body-tampered" % alg.lower(), h, compat_body(flip_b64(ct, 3), json.loads(b)["iv"]), t,
            "SP_ERR_AUTH", "one ciphertext character changed after signing")
        add("compat-%s-signature-tampered" % alg.lower(),
            with_header(h, "webhook-signature", "v1," + flip_bit_b64(get(h, "webhook-signature")[3:], 0)), b, t,
            "SP_ERR_AUTH", "one bit of the signature flipped")
    jparts = jwe_b.split(".")
    add("jwe-body-tampered", jwe_h, ".".join(jparts[:3] + [flip_b64(jparts[3], 2)] + jparts[4:]), t, "SP_ERR_AUTH",
        "one ciphertext character changed after signing")
    add("jwe-signature-tampered",
        with_header(jwe_h, "webhook-signature", "v1," + flip_bit_b64(get(jwe_h, "webhook-signature")[3:], 31)),
        jwe_b, t, "SP_ERR_AUTH", "one bit of the signature flipped")
    add("compat-webhook-id-changed", with_header(gcm_h, "webhook-id", mid + "x"), gcm_b, t, "SP_ERR_AUTH",
        "the id is signed")
    add("compat-webhook-timestamp-changed", with_header(gcm_h, "webhook-timestamp", str(t + 1)), gcm_b, t,
        "SP_ERR_AUTH", "the timestamp is signed")
    add("compat-key-version-changed", with_header(gcm_h, "X-AES-KEY-VERSION", VER_B), gcm_b, t, "SP_ERR_AUTH",
        "the signing key depends on the version: another known version does not verify")
    add("compat-algorithm-header-changed", with_header(cbc_h, "X-AES-ALGORITHM", "AES-256-CTR"), cbc_b, t,
        "SP_ERR_AUTH", "the signing key depends on the algorithm: CBC relabelled CTR does not verify")
    add("compat-signed-by-wrong-key",
        with_header(gcm_h, "webhook-signature", signature(KEY_C, VER_A, "AES-256-GCM", mid, t, gcm_b)), gcm_b, t,
        "SP_ERR_AUTH", "signed under the right version name with another key")
    add("compat-signed-with-jwe-key",
        with_header(gcm_h, "webhook-signature", signature(KEY_A, VER_A, JWE_SIGNING_ALG, mid, t, gcm_b)), gcm_b, t,
        "SP_ERR_AUTH", "the JWE profile's signing key does not verify a compat message")
    for alg in ["AES-256-GCM", "AES-256-CBC"]:
        h, b = msgs[alg]
        other = b64(iv_for("other-" + alg, IV_BYTES[alg]))
        add("compat-%s-iv-header-tampered" % alg.lower(), with_header(h, "X-AES-IV", other), b, t, "SP_ERR_AUTH",
            "X-AES-IV is outside the signature; it must equal the signed body's iv")
        body = compat_body(json.loads(b)["ciphertext"], other)
        add("compat-%s-body-iv-tampered-resigned" % alg.lower(), resign(h, body), body, t, "SP_ERR_AUTH",
            "the body's iv differs from X-AES-IV (the body re-signed)")
    other = b64(iv_for("other-both", 12))
    body = compat_body(gcm_body["ciphertext"], other)
    add("compat-aes-256-gcm-iv-replaced-resigned", resign(with_header(gcm_h, "X-AES-IV", other), body), body, t,
        "SP_ERR_AUTH", "both IVs replaced consistently and re-signed: the GCM tag fails")
    for alg, idx, part, comment in [
            ("AES-256-GCM", 0, "ciphertext", "first ciphertext bit flipped, body re-signed: the GCM tag fails"),
            ("AES-256-GCM", -1, "tag", "last tag bit flipped, body re-signed: the GCM tag fails")]:
        h, b = msgs[alg]
        raw = bytearray(base64.b64decode(json.loads(b)["ciphertext"]))
        raw[idx] ^= 0x80
        body = compat_body(b64(bytes(raw)), json.loads(b)["iv"])
        add("compat-%s-%s-flipped-resigned" % (alg.lower(), part), resign(h, body), body, t, "SP_ERR_AUTH", comment)
    raw = bytes(base64.b64decode(gcm_body["ciphertext"]))
    body = compat_body(b64(raw[:15]), gcm_body["iv"])
    add("compat-aes-256-gcm-shorter-than-tag-resigned", resign(gcm_h, body), body, t, "SP_ERR_AUTH",
        "15 bytes cannot hold a 16-byte tag")
    cbc_iv = base64.b64decode(cbc_body["iv"])
    for name, last_block, comment in [
        ("zero", b"fifteen bytes..\x00", "last byte 0 is not a PKCS#7 length"),
        ("too-long", b"fifteen bytes..\x11", "last byte 17 is longer than a block"),
        ("inconsistent", b"fourteen bytes\x03\x02", "last byte 2 but the byte before is 3"),
        ("whole-block-wrong", b"\x10" * 15 + b"\x0f", "last byte 15 but the other bytes are 16"),
    ]:
        body = compat_body(b64(cbc_raw(KEY_A, cbc_iv, b"sixteen  bytes!!" + last_block)), cbc_body["iv"])
        add("compat-aes-256-cbc-bad-padding-%s-resigned" % name, resign(cbc_h, body), body, t, "SP_ERR_AUTH",
            comment + "; the body re-signed, so only the padding check can refuse it")
    body = compat_body(b64(base64.b64decode(cbc_body["ciphertext"])[:-1]), cbc_body["iv"])
    add("compat-aes-256-cbc-not-whole-blocks-resigned", resign(cbc_h, body), body, t, "SP_ERR_AUTH",
        "CBC ciphertext one byte short of whole blocks")
    body = compat_body("", cbc_body["iv"])
    add("compat-aes-256-cbc-empty-ciphertext-resigned", resign(cbc_h, body), body, t, "SP_ERR_AUTH",
        "CBC ciphertext of no blocks at all")

    p = jwe_b.split(".")
    for idx, what in [(3, "ciphertext"), (4, "tag")]:
        q = list(p)
        q[idx] = flip_bit_b64(q[idx], 0, url=True)
        body = ".".join(q)
        add("jwe-%s-flipped-resigned" % what, resign(jwe_h, body), body, t, "SP_ERR_AUTH",
            "one %s bit flipped, body re-signed: the GCM tag fails" % what)
    q = list(p)
    q[0] = b64url(('{"enc":"A256GCM","alg":"dir","kid":"%s"}' % VER_A).encode())
    body = ".".join(q)
    add("jwe-protected-header-swapped-resigned", resign(jwe_h, body), body, t, "SP_ERR_AUTH",
        "a different but valid protected header: it is the AAD, so the tag fails")
    body = jwe_compact(KEY_A, iv_for("rej-kid", 12), pt, jwe_header_json(VER_B))
    add("jwe-kid-mismatch-resigned", resign(jwe_h, body), body, t, "SP_ERR_AUTH",
        "kid names another (known) version than X-AES-KEY-VERSION")
    body = jwe_compact(KEY_B, iv_for("rej-kid2", 12), pt, jwe_header_json(VER_B))
    add("jwe-kid-mismatch-encrypted-for-kid-resigned", resign(jwe_h, body), body, t, "SP_ERR_AUTH",
        "kid and the key it names agree, X-AES-KEY-VERSION and the signature name another version")
    q = list(p)
    q[2] = b64url(iv_for("rej-jwe-other", 12))
    body = ".".join(q)
    add("jwe-iv-replaced-resigned", resign(jwe_h, body), body, t, "SP_ERR_AUTH",
        "another 12-byte IV, body re-signed: the GCM tag fails")

    # --- timestamp window ---
    add("compat-stale-past", gcm_h, gcm_b, t + TOLERANCE + 1, "SP_ERR_STALE_TIMESTAMP", "301 s old")
    add("compat-stale-future", gcm_h, gcm_b, t - TOLERANCE - 1, "SP_ERR_STALE_TIMESTAMP", "301 s ahead")
    add("jwe-stale-past", jwe_h, jwe_b, t + 86400, "SP_ERR_STALE_TIMESTAMP", "a day old")

    # --- key version ---
    h, b = seal_compat(KEY_C, VER_C, "AES-256-GCM", iv_for("rej-c", 12), pt, mid, t)
    add("compat-unknown-key-version", h, b, t, "SP_ERR_UNKNOWN_KEY_VERSION",
        "a well-formed message under a version the receiver does not hold")
    h, b = seal_jwe(KEY_C, VER_C, iv_for("rej-jc", 12), pt, mid, t)
    add("jwe-unknown-key-version", h, b, t, "SP_ERR_UNKNOWN_KEY_VERSION",
        "a well-formed message under a version the receiver does not hold")

    # --- IV length ---
    for alg, n, comment in [("AES-256-CBC", 12, "a GCM-sized IV for CBC"), ("AES-256-GCM", 16, "a 16-byte IV for GCM"),
                            ("AES-256-CTR", 8, "an 8-byte nonce for CTR (the IV is the whole counter block)"),
                            ("AES-256-CBC", 0, "an empty IV")]:
        iv = b64(iv_for("len", n))
        h, b = msgs[alg]
        body = compat_body(json.loads(b)["ciphertext"], iv)
        add("compat-%s-iv-%d-bytes" % (alg.lower(), n), resign(with_header(h, "X-AES-IV", iv), body), body, t,
            "SP_ERR_BAD_IV_LENGTH", comment + " (header and body agree, re-signed)")

    # --- algorithm ---
    for value in ["AES-128-CBC", "ChaCha20-Poly1305", "AES-256-GCM-SIV", ""]:
        h = with_header(gcm_h, "X-AES-ALGORITHM", value)
        add("compat-unknown-algorithm-%s" % (value.lower() or "empty"), h, gcm_b, t, "SP_ERR_UNKNOWN_ALGORITHM",
            "X-AES-ALGORITHM is not one of the three modes")

    # --- missing headers ---
    for name in ["Content-Type", "X-AES-KEY-VERSION", "X-AES-IV", "webhook-id", "webhook-timestamp",
                 "webhook-signature"]:
        add("compat-missing-%s" % name.lower(), with_header(gcm_h, name, None), gcm_b, t, "SP_ERR_MISSING_HEADER",
            "no %s header" % name)
    for name in ["X-AES-KEY-VERSION", "webhook-signature"]:
        add("jwe-missing-%s" % name.lower(), with_header(jwe_h, name, None), jwe_b, t, "SP_ERR_MISSING_HEADER",
            "no %s header" % name)

    # --- signature header syntax ---
    sig = get(gcm_h, "webhook-signature")
    short = "v1," + b64(base64.b64decode(sig[3:])[:31])
    for name, value in [("empty", ""), ("no-comma", "v1" + sig[3:]), ("bad-base64", "v1,!!!!" + sig[7:]),
                        ("unpadded-base64", sig.rstrip("=")), ("31-bytes", short), ("no-v1-entry", "v2," + sig[3:]),
                        ("empty-signature", "v1,"), ("empty-version", "," + sig[3:]),
                        ("second-entry-malformed", sig + " v1"),
                        ("nine-entries", " ".join([sig] * 9))]:
        add("compat-signature-header-%s" % name, with_header(gcm_h, "webhook-signature", value), gcm_b, t,
            "SP_ERR_BAD_SIGNATURE_HEADER", "webhook-signature value: %r" % value[:40])

    # --- content type ---
    for value in ["text/plain", "application/jsonx", "application/jwt", "multipart/form-data"]:
        add("compat-content-type-%s" % value.replace("/", "-"), with_header(gcm_h, "Content-Type", value), gcm_b, t,
            "SP_ERR_BAD_CONTENT_TYPE", "Content-Type is neither application/json nor application/jose")

    # --- body JSON (all re-signed) ---
    iv_text = gcm_body["iv"]
    for name, body in [
        ("not-json", "ciphertext=abc&iv=def"),
        ("empty", ""),
        ("array", '["%s","%s"]' % (gcm_body["ciphertext"], iv_text)),
        ("truncated", gcm_b[:-1]),
        ("missing-iv", '{"ciphertext":"%s"}' % gcm_body["ciphertext"]),
        ("missing-ciphertext", '{"iv":"%s"}' % iv_text),
        ("ciphertext-not-string", '{"ciphertext":12345,"iv":"%s"}' % iv_text),
        ("iv-null", '{"ciphertext":"%s","iv":null}' % gcm_body["ciphertext"]),
        ("duplicate-ciphertext", '{"ciphertext":"AAAA","ciphertext":"%s","iv":"%s"}' % (gcm_body["ciphertext"],
                                                                                          iv_text)),
        ("trailing-garbage", gcm_b + "x"),
    ]:
        add("compat-body-%s" % name, resign(gcm_h, body), body, t, "SP_ERR_BAD_JSON",
            "the signature is valid, the body is not the compat JSON object")

    # --- JWE structure (all re-signed) ---
    def jwe_variant(name, body, comment):
        add("jwe-%s" % name, resign(jwe_h, body), body, t, "SP_ERR_BAD_JWE", comment)

    jwe_variant("four-parts", ".".join(p[:4]), "compact JWE has five parts")
    jwe_variant("six-parts", jwe_b + ".AAAA", "compact JWE has five parts")
    jwe_variant("encrypted-key-present", ".".join([p[0], b64url(b"\x00" * 32)] + p[2:]),
                "alg dir carries no encrypted key")
    jwe_variant("not-base64url", ".".join([p[0], p[1], p[2], p[3] + "+/", p[4]]),
                "standard-alphabet characters in a base64url part")
    jwe_variant("padded-base64url", ".".join(p[:2] + [p[2] + "=="] + p[3:]), "base64url without padding")
    jwe_variant("iv-16-bytes", ".".join(p[:2] + [b64url(iv_for("j16", 16))] + p[3:]), "the JWE IV is 12 bytes")
    jwe_variant("tag-12-bytes", ".".join(p[:4] + [b64url(b"\x01" * 12)]), "the tag is 16 bytes")
    jwe_variant("empty-tag", ".".join(p[:4] + [""]), "the tag is 16 bytes")
    jwe_variant("empty-protected-header", ".".join([""] + p[1:]), "the protected header is required")
    for name, header, comment in [
        ("zip", '{"alg":"dir","enc":"A256GCM","kid":"%s","zip":"DEF"}' % VER_A, "compression is refused"),
        ("crit", '{"alg":"dir","enc":"A256GCM","kid":"%s","crit":["exp"],"exp":1}' % VER_A,
         "critical extensions are refused"),
        ("alg-a256kw", '{"alg":"A256KW","enc":"A256GCM","kid":"%s"}' % VER_A, "only alg dir"),
        ("enc-a128gcm", '{"alg":"dir","enc":"A128GCM","kid":"%s"}' % VER_A, "only enc A256GCM"),
        ("alg-none", '{"alg":"none","enc":"A256GCM","kid":"%s"}' % VER_A, "only alg dir"),
        ("no-kid", '{"alg":"dir","enc":"A256GCM"}', "kid is required"),
        ("kid-not-uuid", '{"alg":"dir","enc":"A256GCM","kid":"key-1"}', "kid is a key version UUID"),
        ("kid-uppercase", '{"alg":"dir","enc":"A256GCM","kid":"%s"}' % VER_A.upper(), "kid is a lowercase UUID"),
        ("header-not-json", '{"alg":"dir",', "the protected header is JSON"),
        ("header-array", '["dir","A256GCM"]', "the protected header is an object"),
        ("duplicate-alg", '{"alg":"A256KW","alg":"dir","enc":"A256GCM","kid":"%s"}' % VER_A,
         "duplicate members are refused"),
    ]:
        jwe_variant("header-%s" % name, jwe_compact(KEY_A, iv_for("jh-" + name, 12), pt, header), comment)

    # --- base64 (re-signed where it is in the body) ---
    for name, ct, comment in [
        ("length", "QUJD" + "QQ", "not a multiple of four characters"),
        ("whitespace", gcm_body["ciphertext"][:8] + " " + gcm_body["ciphertext"][9:],
         "a space inside the ciphertext"),
        ("url-alphabet", "-_-_" + gcm_body["ciphertext"][4:], "base64url characters in standard base64"),
        ("non-canonical", "QR==", "unused bits not zero (QQ== is the canonical spelling)"),
        ("padding-inside", "QQ==QUJD", "padding before the end"),
    ]:
        body = compat_body(ct, iv_text)
        add("compat-ciphertext-base64-%s" % name, resign(gcm_h, body), body, t, "SP_ERR_BAD_BASE64", comment)
    cbc_iv_text = cbc_body["iv"]  # 24 characters ending "==": the last data character has 4 spare bits
    for h, b, name, iv, comment in [
            (gcm_h, gcm_b, "iv-header-bad-char", "!!!!!!!!!!!!!!!!", "not base64 at all"),
            (cbc_h, cbc_b, "iv-header-non-canonical", non_canonical(cbc_iv_text),
             "the spare bits of the last character are not zero")]:
        body = compat_body(json.loads(b)["ciphertext"], iv)
        add("compat-%s" % name, resign(with_header(h, "X-AES-IV", iv), body), body, t, "SP_ERR_BAD_BASE64",
            comment)

    # --- key version syntax ---
    for name, value in [("uppercase", VER_A.upper()), ("no-dashes", VER_A.replace("-", "")),
                        ("braces", "{%s}" % VER_A), ("short", VER_A[:-1]), ("not-hex", VER_A[:-1] + "g"),
                        ("empty", "")]:
        add("compat-key-version-%s" % name, with_header(gcm_h, "X-AES-KEY-VERSION", value), gcm_b, t,
            "SP_ERR_BAD_UUID", "X-AES-KEY-VERSION must be a lowercase canonical UUID")
    add("jwe-key-version-uppercase", with_header(jwe_h, "X-AES-KEY-VERSION", VER_A.upper()), jwe_b, t,
        "SP_ERR_BAD_UUID", "X-AES-KEY-VERSION must be a lowercase canonical UUID")

    # --- timestamp syntax ---
    for name, value in [("leading-zero", "0" + str(t)), ("negative", "-" + str(t)), ("plus-sign", "+" + str(t)),
                        ("fraction", str(t) + ".5"), ("empty", ""), ("letters", "yesterday"),
                        ("overflow", "99999999999999999999999"), ("too-large", str(1 << 41)),
                        ("hex", hex(t))]:
        add("compat-timestamp-%s" % name, with_header(gcm_h, "webhook-timestamp", value), gcm_b, t,
            "SP_ERR_BAD_TIMESTAMP", "webhook-timestamp is decimal seconds, no sign, no leading zero")

    # --- webhook-id syntax ---
    for name, value in [("empty", ""), ("inner-space", "msg 1"), ("too-long", "m" * 129),
                        ("non-ascii", "msg_\u00e9t\u00e9"), ("control", "msg\u0001x"), ("del", "msg\u007f")]:
        add("compat-message-id-%s" % name, with_header(gcm_h, "webhook-id", value), gcm_b, t,
            "SP_ERR_BAD_MESSAGE_ID", "webhook-id is 1..128 characters of 0x21..0x7E")
    return cases


def build():
    pos = positives()
    acc = accepts()
    rej = rejects()
    names = [c["name"] for c in pos + acc + rej]
    assert len(names) == len(set(names)), "case names must be unique"
    return {
        "description": "sealpost wire protocol v1 test vectors; written by tests/vectors/generate.py, "
                       "see its doc string for the layout",
        "format": "sealpost-protocol-vectors",
        "version": 1,
        "tolerance_s": TOLERANCE,
        "positive": pos,
        "accept": acc,
        "reject": rej,
    }


def dump(value, indent=""):
    """JSON with sorted keys, one member per line, and lists of plain values
    (a header pair) on one line: stable bytes, readable diffs."""
    if isinstance(value, dict):
        inner = indent + "  "
        items = ["%s%s: %s" % (inner, json.dumps(k, ensure_ascii=False), dump(value[k], inner))
                 for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + dump(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def render():
    text = dump(build()) + "\n"
    assert json.loads(text) == build()
    return text


def main():
    text = render().encode("utf-8")
    if "--check" in sys.argv[1:]:
        with open(OUT, "rb") as f:
            same = f.read() == text
        print("up to date" if same else "protocol-v1.json differs from what generate.py writes")
        return 0 if same else 1
    with open(OUT, "wb") as f:
        f.write(text)
    print("wrote %s" % OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
