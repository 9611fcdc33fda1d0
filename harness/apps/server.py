"""The app server a real pod runs: HTTP answers from :func:`twin.model.apps.respond`.

Run inside a pod's network namespace by :class:`harness.topology.RealTopology`::

    python -m harness.apps.server --app whoami --hostname webpod1 --tcp 80
    python -m harness.apps.server --app echo --hostname p --tcp 80 --tcp 8080 --udp 53

HTTP/1.1 with keep-alive (like traefik/whoami): every answer carries
Content-Length; the connection stays open unless the client sends
``Connection: close`` or speaks HTTP/1.0.
For app ``echo`` each UDP port answers every datagram with ``twin.model.apps.udp_reply``.
Stdlib only; prints nothing but errors; exits on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import http.server
import signal
import socket
import socketserver
import sys
import threading

from twin.model.apps import APPS, respond, udp_reply

_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")


def local_ipv4() -> list[str]:
    """IPv4 addresses of this namespace's interfaces, loopback excluded, sorted."""
    ips: set[str] = set()
    try:
        import fcntl
        import struct

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _idx, name in socket.if_nameindex():
                try:
                    req = struct.pack("256s", name.encode()[:15])
                    res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR: primary address
                except OSError:
                    continue
                ip = socket.inet_ntoa(res[20:24])
                if not ip.startswith("127."):
                    ips.add(ip)
        finally:
            s.close()
    except OSError:
        pass
    return sorted(ips)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twin-app"
    app = "none"
    hostname = ""
    local_ips: list[str] = []

    def version_string(self) -> str:
        return self.server_version

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        remote = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            status, body = respond(self.app, self.hostname, self.command, self.path, headers,
                                   self.local_ips, remote)
        except Exception as exc:  # a bug in respond() must not kill the server
            print(f"server: respond failed: {exc!r}", file=sys.stderr, flush=True)
            status, body = 500, "internal error\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        close = self.headers.get("Connection", "").lower() == "close" or self.request_version == "HTTP/1.0"
        self.send_header("Connection", "close" if close else "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = close

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # access log: nothing

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        # malformed requests (e.g. a bare TCP connect probe) are normal here
        pass


for _m in _METHODS:
    setattr(_Handler, f"do_{_m}", _Handler._serve)


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"server: error with {client_address}: {exc!r}", file=sys.stderr, flush=True)


def _udp_echo(sock: socket.socket, hostname: str) -> None:
    while True:
        try:
            data, addr = sock.recvfrom(65535)
            sock.sendto(udp_reply(hostname, data), addr)
        except OSError as exc:
            print(f"server: udp echo: {exc!r}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.apps.server", description=__doc__.splitlines()[0])
    ap.add_argument("--app", required=True, choices=sorted(a for a in APPS if a != "none"))
    ap.add_argument("--hostname", required=True)
    ap.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    ap.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    ap.add_argument("--ip", action="append", default=[], help="local IPs to report (default: the interfaces')")
    ap.add_argument("--bind", default="0.0.0.0")
    args = ap.parse_args(argv)

    handler = type("Handler", (_Handler,), {
        "app": args.app, "hostname": args.hostname, "local_ips": args.ip or local_ipv4(),
    })
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    servers = []
    try:
        for port in args.tcp:
            srv = _HTTPServer((args.bind, port), handler)
            servers.append(srv)
            threading.Thread(target=srv.serve_forever, name=f"tcp{port}", daemon=True).start()
        for port in args.udp:
            if args.app != "echo":
                ap.error(f"app {args.app!r} has no UDP service")
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((args.bind, port))
            threading.Thread(target=_udp_echo, args=(s, args.hostname), name=f"udp{port}", daemon=True).start()
    except OSError as exc:
        print(f"server: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    stop.wait()
    for srv in servers:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
