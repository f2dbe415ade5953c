#!/usr/bin/python3
# A CPaaS provider for the tests, written from docs/PROTOCOL.md and not from
# our C code: it verifies and decrypts what sealpostd sends with the
# independent receiver of interop.py (python3-cryptography, jwcrypto), so a
# message that reaches it readable proves the protocol, not a shared bug.
#
# It keeps two records in its directory:
#   raw.jsonl       every request exactly as it crossed the wire (method,
#                   path, headers, body): what a network observer saw; tests
#                   search it for the plaintext they sent and expect none;
#   received.jsonl  one line per accepted request: webhook-id, key version,
#                   whether it was a repeat, the decrypted body.
# and answers like a provider would: 200 for a message it accepted (a repeat
# of a webhook-id it has seen also gets 200 and is not counted again), 401
# for anything that fails verification, and whatever the fault plan says.
#
# Control (JSON over plain HTTP, same port, paths under /_sink/):
#   POST /_sink/faults   {"status":503,"count":3,"retry_after":"1",
#                         "delay_ms":0} the next `count` requests wait
#                         delay_ms, then get that answer instead of being
#                         processed (status 0: processed after the delay)
#   POST /_sink/bearer   {"tokens":["…"]} only these bearer tokens are
#                         accepted (401 otherwise); {"tokens":null} turns the
#                         check off
#   GET  /_sink/stats    {"requests":…,"accepted":…,"distinct":…,
#                         "repeats":…,"rejected":…,"faulted":…,"records":…}
#
# Usage: provider_sink.py PORT DIR KEYFILE   (keys re-read when the file
# changes, so a rotation mid-run is seen)
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402

MAX_BODY = 8 << 20


class Sink:
    def __init__(self, directory, keyfile):
        self.dir = directory
        self.keyfile = keyfile
        self.lock = threading.Lock()
        self.keys = None
        self.keys_mtime = None
        self.seen = set()
        self.faults = []
        self.bearer = None
        self.stats = dict(requests=0, accepted=0, distinct=0, repeats=0, rejected=0, faulted=0, records=0)
        self.raw = open(os.path.join(directory, "raw.jsonl"), "a", buffering=1)
        self.received = open(os.path.join(directory, "received.jsonl"), "a", buffering=1)

    def key_doc(self):
        st = os.stat(self.keyfile)
        if self.keys is None or st.st_mtime_ns != self.keys_mtime:
            self.keys = interop.load_keys(self.keyfile)
            self.keys_mtime = st.st_mtime_ns
        return self.keys


SINK = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj=None, headers=()):
        body = json.dumps(obj if obj is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_sink/stats":
            with SINK.lock:
                return self.reply(200, dict(SINK.stats))
        return self.handle_message(b"")

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_sink/faults":
            plan = json.loads(body)
            with SINK.lock:
                SINK.faults = [plan] * int(plan.get("count", 1))
            return self.reply(200, {"ok": True})
        if self.path == "/_sink/bearer":
            with SINK.lock:
                SINK.bearer = json.loads(body).get("tokens")
            return self.reply(200, {"ok": True})
        return self.handle_message(body)

    def handle_message(self, body):
        headers = {k: v for k, v in self.headers.items()}
        with SINK.lock:
            SINK.stats["requests"] += 1
            SINK.raw.write(json.dumps({"method": self.command, "path": self.path, "headers": headers,
                                       "body": body.decode("latin-1")}) + "\n")
            fault = SINK.faults.pop(0) if SINK.faults else None
            bearer = SINK.bearer
        if fault is not None and fault.get("delay_ms"):
            time.sleep(fault["delay_ms"] / 1000.0)
        if fault is not None and not fault.get("status"):
            fault = None  # a delay only: then processed as usual
        if fault is not None:
            with SINK.lock:
                SINK.stats["faulted"] += 1
            extra = [("Retry-After", str(fault["retry_after"]))] if "retry_after" in fault else []
            return self.reply(int(fault.get("status", 503)), {"error": "injected"}, extra)
        if bearer is not None:
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in bearer:
                with SINK.lock:
                    SINK.stats["rejected"] += 1
                return self.reply(401, {"error": "invalid_token"})
        # interop.py looks headers up by their canonical spelling
        canon = {}
        for k, v in headers.items():
            for want in ("X-AES-KEY-VERSION", "X-AES-IV", "X-AES-ALGORITHM", "Content-Type",
                         "webhook-id", "webhook-timestamp", "webhook-signature"):
                if k.lower() == want.lower():
                    canon[want] = v
        try:
            with SINK.lock:
                doc = SINK.key_doc()
            plain = interop.py_open({"headers": canon, "body": body.decode("utf-8")}, doc)
        except Exception:  # every failure looks the same to the sender
            with SINK.lock:
                SINK.stats["rejected"] += 1
            return self.reply(401, {"error": "unauthorized"})
        wid = canon["webhook-id"]
        try:
            obj = json.loads(plain)
        except ValueError:
            obj = plain.decode("utf-8", "replace")
        records = 1
        if isinstance(obj, dict) and len(obj) == 1:
            (only,) = obj.values()
            if isinstance(only, list):
                records = len(only)
        with SINK.lock:
            repeat = wid in SINK.seen
            SINK.seen.add(wid)
            SINK.stats["accepted"] += 1
            SINK.stats["repeats" if repeat else "distinct"] += 1
            if not repeat:
                SINK.stats["records"] += records
            SINK.received.write(json.dumps({"webhook_id": wid, "version": canon.get("X-AES-KEY-VERSION"),
                                            "repeat": repeat, "body": obj}) + "\n")
        return self.reply(200, {"id": wid, "status": "accepted"})


def main():
    global SINK
    port, directory, keyfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    SINK = Sink(directory, keyfile)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    with open(os.path.join(directory, "ready"), "w") as f:
        f.write(str(os.getpid()))
    server.serve_forever()


if __name__ == "__main__":
    main()
