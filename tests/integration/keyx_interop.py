#!/usr/bin/python3
"""The independent side of the key-exchange interop test.

tests/integration/test_keyx_interop.c drives sealpost's sp_keyx_export and
sp_keyx_import and calls this script for the other half, done with
python3-jwcrypto (JOSE) and python3-cryptography (keys): what a provider
running a stock JOSE library would do.

  keygen  rsa|p256 PRIV PUB        a key pair in the PEM forms a provider
                                   might hand over (RSA as PKCS#1, EC as
                                   SEC 1 "EC PRIVATE KEY")
  decrypt PRIV JWE EXPECTED [refused]
                                   decrypt sealpost's JWE and check the
                                   header and the JWK Set against EXPECTED;
                                   with "refused", succeed only if jwcrypto
                                   refuses to decrypt it
  encrypt PUB ALG KEYS OUT [FORM]  write a JWK Set JWE for sealpost to import

EXPECTED and KEYS are JSON lists of {"kid", "k", "exp"} (k base64url).
FORM varies what jwcrypto writes: plain (the profile), nocty, pretty (spaces,
reordered and extra members), and the refused ones apu, zip, a128gcm.
Exit status 0 on success; a failure says why on stderr.
"""
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe, jwk


def fail(msg):
    print("keyx_interop.py: " + msg, file=sys.stderr)
    sys.exit(1)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def keygen(kind, priv_path, pub_path):
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        fail("unknown key kind " + kind)
    write(priv_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    write(pub_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def decrypt(priv_path, jwe_path, expected_path, expect=None):
    key = jwk.JWK.from_pem(read(priv_path))
    token = jwe.JWE()
    if expect == "refused":
        try:
            token.deserialize(read(jwe_path).decode("ascii"), key=key)
        except Exception:
            return
        fail("jwcrypto decrypted a tampered JWE")
    token.deserialize(read(jwe_path).decode("ascii"), key=key)
    header = json.loads(token.objects["protected"])
    want_alg = "RSA-OAEP-256" if key["kty"] == "RSA" else "ECDH-ES+A256KW"
    if header.get("alg") != want_alg or header.get("enc") != "A256GCM" or header.get("cty") != "jwk-set+json":
        fail("unexpected protected header %r" % header)
    if "zip" in header or "crit" in header:
        fail("zip or crit in %r" % header)
    if want_alg.startswith("ECDH"):
        epk = header.get("epk", {})
        if epk.get("kty") != "EC" or epk.get("crv") != "P-256" or "d" in epk:
            fail("unexpected epk %r" % epk)
    keys = json.loads(token.payload)["keys"]
    expected = json.loads(read(expected_path))
    if len(keys) != len(expected):
        fail("%d keys, expected %d" % (len(keys), len(expected)))
    for got, want in zip(keys, expected):
        if set(got) != {"kty", "kid", "k", "alg", "exp"}:
            fail("unexpected members %r" % sorted(got))
        if got["kty"] != "oct" or got["alg"] != "A256GCM":
            fail("unexpected kty/alg in %s" % got["kid"])
        if (got["kid"], got["k"], got["exp"]) != (want["kid"], want["k"], want["exp"]):
            fail("key %s differs from what was exported" % want["kid"])
        # jwcrypto itself must take each entry as an A256GCM key: "dir"
        # refuses a key whose length does not fit the enc
        probe = jwe.JWE(b"probe", protected=json.dumps({"alg": "dir", "enc": "A256GCM"}))
        probe.add_recipient(jwk.JWK(**got))
        probe.serialize(compact=True)


def encrypt(pub_path, alg, keys_path, out_path, form="plain"):
    key = jwk.JWK.from_pem(read(pub_path))
    entries = [{"kty": "oct", "kid": e["kid"], "k": e["k"], "alg": "A256GCM", "exp": e["exp"]}
               for e in json.loads(read(keys_path))]
    header = {"alg": alg, "enc": "A256GCM", "cty": "jwk-set+json"}
    if form == "plain":
        plaintext = json.dumps({"keys": entries}, separators=(",", ":"))
    elif form == "nocty":
        del header["cty"]
        plaintext = json.dumps({"keys": [{k: v for k, v in e.items() if k != "alg"} for e in entries]})
    elif form == "pretty":
        header["cty"] = "application/jwk-set+json"
        header["kid"] = "provider-key-1"
        shuffled = [dict(reversed(list(e.items())), use="enc") for e in entries]
        plaintext = json.dumps({"comment": "from jwcrypto", "keys": shuffled}, indent=2)
    elif form == "apu":
        header["apu"] = "QWxpY2U"
        header["apv"] = "Qm9i"
        plaintext = json.dumps({"keys": entries})
    elif form == "zip":
        header["zip"] = "DEF"
        plaintext = json.dumps({"keys": entries})
    elif form == "a128gcm":
        header["enc"] = "A128GCM"
        plaintext = json.dumps({"keys": entries})
    else:
        fail("unknown form " + form)
    token = jwe.JWE(plaintext.encode(), protected=json.dumps(header))
    token.add_recipient(key)
    write(out_path, token.serialize(compact=True).encode("ascii"))


def main(argv):
    if len(argv) < 2:
        fail("usage: keygen|decrypt|encrypt ...")
    mode, args = argv[1], argv[2:]
    try:
        if mode == "keygen" and len(args) == 3:
            keygen(*args)
        elif mode == "decrypt" and len(args) in (3, 4):
            decrypt(*args)
        elif mode == "encrypt" and len(args) in (4, 5):
            encrypt(*args)
        else:
            fail("bad arguments for " + mode)
    except SystemExit:
        raise
    except Exception as e:  # any jwcrypto refusal is a failed check, said plainly
        fail("%s: %s: %s" % (mode, type(e).__name__, e))


if __name__ == "__main__":
    main(sys.argv)
