"""A PyKMIP 0.10 server for tests/integration/test_kms_kmip.c, tied to the
life of the test that starts it.

usage: /usr/bin/python3 kmip_server.py CONFIG LOG    (stdin: a pipe from the test)

PyKMIP's server forks helpers (a multiprocessing manager, a policy
directory monitor) that outlive a server killed with SIGKILL, and it takes
up to ten seconds to honour SIGTERM. The test therefore starts this script
as the leader of a process group of its own and keeps the write end of its
stdin. When the test closes that end, or dies in any way at all, stdin
reaches end of file and this script kills its whole process group: the
server, its helpers and itself. The test still stops the group by PID
(SIGTERM, then SIGKILL) if that does not happen in time.

Run with /usr/bin/python3: Debian's python3-pykmip is not on the path of
other Python installations.
"""

import os
import signal
import sys
import threading


def _end_with_stdin():
    # os.read on the descriptor, not sys.stdin: multiprocessing closes
    # sys.stdin in every child it forks, and a fork taken while this thread
    # held sys.stdin's lock would leave that child deadlocked on it
    try:
        while os.read(0, 4096):
            pass
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: kmip_server.py CONFIG LOG\n")
        return 2
    config, log = sys.argv[1], sys.argv[2]
    threading.Thread(target=_end_with_stdin, daemon=True).start()

    # imported after the watcher runs, so a slow import cannot outlive the test
    from kmip.services.server.server import KmipServer

    server = KmipServer(config_path=config, log_path=log, live_policies=False)
    with server:
        server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
