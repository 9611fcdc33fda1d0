"""``python -m harness.apiserver --listen IP:PORT --etcd URL --audit FILE``: serve the Lease API.

Runs until SIGTERM/SIGINT; prints ``listening on IP:PORT`` to stderr once bound.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from harness.apiserver.server import LeaseServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.apiserver", description=__doc__)
    ap.add_argument("--listen", required=True, help="IP:PORT to serve on (HTTP)")
    ap.add_argument("--etcd", required=True, help="etcd client URL, e.g. http://127.0.0.1:2379")
    ap.add_argument("--audit", default=None, help="append one JSON line per create/update/delete here")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        ap.error(f"--listen {args.listen!r}: expected IP:PORT")
    try:
        srv = LeaseServer((host, int(port)), args.etcd, args.audit)
    except (OSError, ValueError) as exc:
        print(f"apiserver: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 2

    def _stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"listening on {args.listen}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
