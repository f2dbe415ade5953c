"""The reference for bench_kms's KMIP lines: how fast PyKMIP's own client
gets the same Encrypt done by the same server.

usage: /usr/bin/python3 kmip_peer.py HOST PORT CA CERT KEY [SECONDS [MAX_OPS]]

It connects once with the client certificate (ProxyKmipClient, KMIP 1.4 as
sealpost speaks it, so the server encodes the same response), creates and
activates an AES-256 key of its own with usage Encrypt|Decrypt, warms up,
then for SECONDS (default 2) or MAX_OPS calls, whichever ends first,
encrypts 32 bytes with AES-GCM (a fresh 12-byte IV from the caller, a
16-byte tag): exactly the request sealpost's KMIP backend sends to wrap a
data key. It prints Encrypt calls per second on stdout, one number and
nothing else; anything going wrong is a message on stderr and exit 1.

Only Encrypt: PyKMIP's client has no way to hand a GCM tag to Decrypt, so
its Encrypt rate is the reference for unwrapping too (the server's work for
the two is the same AES-GCM over 32 bytes).

Run with /usr/bin/python3: Debian's python3-pykmip is on no other Python's
path.
"""

import logging
import os
import sys
import time
import warnings


def fail(message):
    sys.stderr.write("kmip_peer: %s\n" % message)
    return 1


def main(argv):
    if len(argv) not in (6, 7, 8):
        return fail("usage: kmip_peer.py HOST PORT CA CERT KEY [SECONDS [MAX_OPS]]")
    host, port, ca, cert, key = argv[1:6]
    try:
        port = int(port)
        seconds = float(argv[6]) if len(argv) > 6 else 2.0
        max_ops = int(argv[7]) if len(argv) > 7 else 1000000
    except ValueError:
        return fail("PORT, SECONDS and MAX_OPS must be numbers")
    if not (0 < seconds <= 60 and max_ops > 0):
        return fail("SECONDS must be in (0, 60] and MAX_OPS positive")

    # PyKMIP's crypto engine imports ciphers the cryptography package has
    # deprecated, and its client logs at WARNING; neither is about the run.
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    from kmip.core import enums
    from kmip.pie.client import ProxyKmipClient

    # config_file=/dev/null: the options given here and nothing from a
    # pykmip.conf the machine may have.
    client = ProxyKmipClient(hostname=host, port=port, cert=cert, key=key, ca=ca,
                             config_file=os.devnull,
                             kmip_version=enums.KMIPVersion.KMIP_1_4)
    params = {
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "block_cipher_mode": enums.BlockCipherMode.GCM,
        "tag_length": 16,
    }
    data = os.urandom(32)
    try:
        client.open()
        try:
            uid = client.create(enums.CryptographicAlgorithm.AES, 256,
                                cryptographic_usage_mask=[
                                    enums.CryptographicUsageMask.ENCRYPT,
                                    enums.CryptographicUsageMask.DECRYPT])
            client.activate(uid)
            # the first calls pay for the server's lazy set-up, not per call
            for _ in range(3):
                client.encrypt(data, uid=uid, cryptographic_parameters=params,
                               iv_counter_nonce=os.urandom(12))
            calls = 0
            start = time.monotonic()
            elapsed = 0.0
            while elapsed < seconds and calls < max_ops:
                client.encrypt(data, uid=uid, cryptographic_parameters=params,
                               iv_counter_nonce=os.urandom(12))
                calls += 1
                elapsed = time.monotonic() - start
        finally:
            client.close()
    except Exception as e:  # any failure of the peer is one message
        return fail("%s: %s" % (type(e).__name__, e))
    print("%.1f" % (calls / elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
