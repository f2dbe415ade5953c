#!/usr/bin/python3
# The platform's side of sealpost-relay's tests, written from
# docs/PROTOCOL.md (sections 3-5 and 10) and not from our C code. Two modes:
#
#   platform_sink.py serve PORTFILE KEYFILE OUTFILE [--port N]
#       A plain-HTTP callback receiver on 127.0.0.1 (port N, or a free one,
#       written to PORTFILE). Every POST is verified and decrypted with interop.py's
#       independent receiver under the key file (re-read when it changes, so
#       a rotation is seen), and one JSON line per request goes to OUTFILE:
#       {"path","webhook_id","version","profile","alg","repeat","format","body"} or
#       {"path","error"}. A path under /flaky/ answers 503 to the first two
#       requests of each webhook-id; GET /_stats returns the counters.
#
#   platform_sink.py send URL CAFILE KEYFILE [options] < plaintext
#       Seals stdin for the relay (interop.py's sender) and POSTs it with the
#       provider credentials; prints "<status> <body>".
#       --wid ID  --merchant M  --access-key K  --secret S  --sub-merchant S
#       --profile compat|jwe  --alg aes-256-gcm|aes-256-cbc|aes-256-ctr
#       --version V (a version of the key file; default its active one)
import argparse
import json
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402

CANON = ("X-AES-KEY-VERSION", "X-AES-IV", "X-AES-ALGORITHM", "Content-Type",
         "webhook-id", "webhook-timestamp", "webhook-signature")


class State:
    def __init__(self, keyfile, out):
        self.keyfile = keyfile
        self.out = open(out, "a", buffering=1)
        self.lock = threading.Lock()
        self.seen = set()
        self.flaky = {}
        self.stats = {"requests": 0, "accepted": 0, "rejected": 0, "repeats": 0, "flaky": 0}

    def keys(self):
        return interop.load_keys(self.keyfile)


ST = None


def body_format(plain):
    s = plain.lstrip()
    if s.startswith(b"["):
        return "sms", json.loads(plain)
    if s.startswith(b"{"):
        return "email", json.loads(plain)
    from urllib.parse import parse_qs
    return "form", {k: v[0] for k, v in parse_qs(plain.decode("utf-8"), keep_blank_values=True).items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with ST.lock:
            return self.answer(200, dict(ST.stats))

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        canon = {}
        for k, v in self.headers.items():
            for want in CANON:
                if k.lower() == want.lower():
                    canon[want] = v
        wid = canon.get("webhook-id", "")
        with ST.lock:
            ST.stats["requests"] += 1
            if self.path.startswith("/flaky/"):
                tries = ST.flaky.get(wid, 0)
                ST.flaky[wid] = tries + 1
                if tries < 2:
                    ST.stats["flaky"] += 1
                    ST.out.write(json.dumps({"path": self.path, "webhook_id": wid, "flaky_503": tries + 1}) + "\n")
                    return self.answer(503, {"error": "try later"})
        try:
            plain = interop.py_open({"headers": canon, "body": raw.decode("utf-8")}, ST.keys())
            fmt, obj = body_format(plain)
        except Exception as e:  # noqa: BLE001 - every failure is one 401
            with ST.lock:
                ST.stats["rejected"] += 1
                ST.out.write(json.dumps({"path": self.path, "error": repr(e)[:300]}) + "\n")
            return self.answer(401, {"error": {"code": "unauthorized", "message": "authentication failed"}})
        with ST.lock:
            repeat = wid in ST.seen
            ST.seen.add(wid)
            ST.stats["accepted"] += 1
            if repeat:
                ST.stats["repeats"] += 1
            ST.out.write(json.dumps({"path": self.path, "webhook_id": wid, "version": canon["X-AES-KEY-VERSION"],
                                     "profile": "jwe" if canon.get("Content-Type") == "application/jose" else "compat",
                                     "alg": canon.get("X-AES-ALGORITHM"), "repeat": repeat, "format": fmt,
                                     "body": obj}) + "\n")
        self.answer(200, {"status": "duplicate"} if repeat else {"status": "accepted", "events": 1})


def serve(args):
    global ST
    ST = State(args.keyfile, args.out)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    with open(args.portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(args.portfile + ".tmp", args.portfile)
    srv.serve_forever()


def send(args):
    pt = sys.stdin.buffer.read()
    doc = interop.load_keys(args.keyfile)
    if args.version:
        version, key = args.version, interop.key_of(doc, args.version)
    else:
        version, key = interop.active_of(doc)
    if args.profile == "jwe":
        msg = interop.py_seal_jwe(key, version, interop.jwe_compact_own(key, version, pt), wid=args.wid)
    else:
        msg = interop.py_seal(key, version, args.alg, pt, wid=args.wid)
    headers = dict(msg["headers"])
    for name, value in (("X-Client-Access-Key", args.access_key), ("X-Api-Secret", args.secret),
                        ("X-Merchant-Id", args.merchant), ("X-Sub-Merchant-Id", args.sub_merchant)):
        if value is not None:
            headers[name] = value
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.check_hostname = False  # the test certificate names 127.0.0.1 only as an IP SAN on some systems
    req = urllib.request.Request(args.url, data=msg["body"].encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            print(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode())


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("portfile")
    s.add_argument("keyfile")
    s.add_argument("out")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("send")
    c.add_argument("url")
    c.add_argument("cafile")
    c.add_argument("keyfile")
    c.add_argument("--wid")
    c.add_argument("--merchant")
    c.add_argument("--access-key")
    c.add_argument("--secret")
    c.add_argument("--sub-merchant")
    c.add_argument("--profile", default="compat")
    c.add_argument("--alg", default="aes-256-gcm")
    c.add_argument("--version")
    args = p.parse_args()
    serve(args) if args.mode == "serve" else send(args)


if __name__ == "__main__":
    main()
