#!/usr/bin/python3
# A provider reporting back to sealpostd, written from docs/PROTOCOL.md §10
# and not from our C code: it seals a callback body with the independent
# sender of interop.py (python3-cryptography, hand-made JWE) under a key
# version from the provider's key file (what `sealpost keys import` wrote)
# and POSTs it, optionally spoiled in one way, so the tests can check both
# what sealpostd accepts and that every spoiled variant gets the same 401.
#
# Usage: callback_sender.py URL CAFILE KEYFILE [options] < plaintext
#   --profile compat|jwe       (default compat)
#   --alg aes-256-gcm|aes-256-cbc|aes-256-ctr   (compat; default gcm)
#   --version V                a version of the key file (default: its active one)
#   --unknown-version          a fresh version and key nobody knows
#   --wid ID                   webhook-id (default a fresh cb_… id)
#   --ts SECONDS               webhook-timestamp (default now)
#   --tamper body|iv|ts|sig    spoil one thing after signing
#   --plain CONTENT_TYPE       send stdin as is (no envelope); --wid still sent
#   --repeat N                 send N times, re-sealed each time (fresh IV,
#                              timestamp, signature), the same webhook-id
#   --burst LIST               instead of stdin: LIST has lines "WID FILE";
#                              each FILE sealed under its WID, all posted at
#                              once, each on its own connection; prints
#                              "<WID> <status> <body>" per line, in order
# Prints one line per request: "<status> <body>"; exit status 0 unless the
# request could not be made.
import argparse
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402


def seal(args, pt):
    if args.unknown_version:
        version, key = str(uuid.uuid4()), os.urandom(32)
    else:
        doc = interop.load_keys(args.keyfile)
        if args.version:
            version, key = args.version, interop.key_of(doc, args.version)
        else:
            version, key = interop.active_of(doc)
    ts = args.ts if args.ts is not None else int(time.time())
    if args.profile == "jwe":
        compact = interop.jwe_compact_own(key, version, pt)
        msg = interop.py_seal_jwe(key, version, compact, wid=args.wid, ts=ts)
    else:
        msg = interop.py_seal(key, version, args.alg, pt, wid=args.wid, ts=ts)
    h = msg["headers"]
    if args.tamper == "body":
        b = msg["body"]
        # one character of the ciphertext changed, the JSON still well-formed
        if args.profile == "compat":
            i = b.index('"', b.index(":", b.index('"ciphertext"'))) + 1
        else:
            i = len(b) - 3
        msg["body"] = b[:i] + ("A" if b[i] != "A" else "B") + b[i + 1:]
    elif args.tamper == "iv":
        if args.profile == "compat":
            h["X-AES-IV"] = interop.b64(os.urandom(interop.IVLEN[args.alg]))
        else:
            h["webhook-id"] = h["webhook-id"] + "x"
    elif args.tamper == "ts":
        h["webhook-timestamp"] = str(int(h["webhook-timestamp"]) - 1)
    elif args.tamper == "sig":
        del h["webhook-signature"]
    return h, msg["body"].encode()


def post(url, ctx, headers, body):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def burst(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    jobs = []
    for line in open(args.burst):
        wid, path = line.split()
        args.wid = wid
        jobs.append((wid,) + seal(args, open(path, "rb").read()))
    results = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i):
        wid, headers, body = jobs[i]
        start.wait()
        results[i] = post(args.url, ctx, headers, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (wid, _, _), (status, text) in zip(jobs, results):
        print(wid, status, text.replace("\n", " "))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("cafile")
    ap.add_argument("keyfile")
    ap.add_argument("--profile", default="compat", choices=["compat", "jwe"])
    ap.add_argument("--alg", default="aes-256-gcm", choices=list(interop.LABEL))
    ap.add_argument("--version")
    ap.add_argument("--unknown-version", action="store_true")
    ap.add_argument("--wid")
    ap.add_argument("--ts", type=int)
    ap.add_argument("--tamper", choices=["body", "iv", "ts", "sig"])
    ap.add_argument("--plain")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--burst")
    args = ap.parse_args()
    if args.burst:
        return burst(args)
    pt = sys.stdin.buffer.read()
    if not args.wid and not args.plain:
        args.wid = "cb_" + uuid.uuid4().hex
    ctx = ssl.create_default_context(cafile=args.cafile)
    for _ in range(args.repeat):
        if args.plain:
            headers = {"Content-Type": args.plain}
            if args.wid:
                headers["webhook-id"] = args.wid
            body = pt
        else:
            headers, body = seal(args, pt)
        status, text = post(args.url, ctx, headers, body)
        print(status, text.replace("\n", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
