"""Traffic clients run inside a pod (stdlib only): requests through a service
frontend, a background loop, and a long-lived keep-alive connection.

    python -m harness.apps.client requests --to IP --port 80 --count 80 --interval 0.02
    python -m harness.apps.client loop --to IP --port 80 --duration 14 --interval 0.1
    python -m harness.apps.client hold --to IP --port 80 --backend webpod2   # then "check" lines on stdin

Each request prints one JSON line: ``{"i", "t" (CLOCK_MONOTONIC, shared by all
namespaces), "outcome" (answered|refused|timeout|EHOSTUNREACH|error),
"status", "backend" (the answering pod's hostname)}``.
"""
from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time


def _hostname_of_http(body: bytes) -> str | None:
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("Hostname: "):
            return line.split(": ", 1)[1].strip()
    return None


def _classify(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "timeout"
    return {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "EHOSTUNREACH",
            errno.ETIMEDOUT: "timeout"}.get(exc.errno, f"error:{errno.errorcode.get(exc.errno, exc.errno)}")


def _read_response(s: socket.socket) -> tuple[int | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status = None
    lines = head.split(b"\r\n")
    if lines and len(lines[0].split()) >= 2 and lines[0].split()[1].isdigit():
        status = int(lines[0].split()[1])
    length = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def http_once(ip: str, port: int, path: str, timeout: float, method: str = "GET") -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {ip}\r\nUser-Agent: twin-client\r\nContent-Length: 0\r\n"
                  f"Connection: close\r\n\r\n".encode())
        status, body = _read_response(s)
        return {"outcome": "answered" if status else "error:no-status", "status": status,
                "backend": _hostname_of_http(body)}
    except OSError as exc:
        return {"outcome": _classify(exc), "status": None, "backend": None}
    finally:
        s.close()


def udp_once(ip: str, port: int, timeout: float, i: int) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        payload = b"req%d" % i
        s.sendto(payload, (ip, port))  # unconnected: sendmsg4 translates, recvmsg4 reverse-translates
        data, addr = s.recvfrom(65535)
        host = data.split(b"|", 1)[1].decode() if data.startswith(payload + b"|") else None
        return {"outcome": "answered", "status": None, "backend": host, "from": f"{addr[0]}:{addr[1]}"}
    except OSError as exc:
        return {"outcome": _classify(exc), "status": None, "backend": None}
    finally:
        s.close()


def run_requests(args) -> None:
    end = time.monotonic() + args.duration if args.duration else None
    i = 0
    while (end is None and i < args.count) or (end is not None and time.monotonic() < end):
        t = time.monotonic()
        r = udp_once(args.to, args.port, args.timeout, i) if args.kind == "udp" else \
            http_once(args.to, args.port, args.path, args.timeout, args.method)
        print(json.dumps({"i": i, "t": t, **r}), flush=True)
        i += 1
        left = args.interval - (time.monotonic() - t)
        if left > 0:
            time.sleep(left)


def run_hold(args) -> None:
    """Connect until the answering backend is ``--backend``; keep that socket; answer "check" lines."""
    sock = None
    for attempt in range(1, args.tries + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        try:
            s.connect((args.to, args.port))
            s.sendall(f"GET / HTTP/1.1\r\nHost: {args.to}\r\n\r\n".encode())
            status, body = _read_response(s)
            if _hostname_of_http(body) == args.backend:
                sock = s
                print(json.dumps({"event": "held", "attempts": attempt, "peer": "%s:%d" % s.getpeername()}), flush=True)
                break
        except OSError:
            pass
        s.close()
    if sock is None:
        print(json.dumps({"event": "failed", "attempts": args.tries}), flush=True)
        return
    for line in sys.stdin:
        if line.strip() != "check":
            continue
        try:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {args.to}\r\n\r\n".encode())
            status, body = _read_response(sock)
            state = "alive" if status == 200 and _hostname_of_http(body) == args.backend else "closed"
        except OSError:
            state = "closed"
        print(json.dumps({"event": "check", "state": state, "t": time.monotonic()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.apps.client")
    ap.add_argument("mode", choices=["requests", "loop", "hold"])
    ap.add_argument("--to", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--kind", choices=["http", "udp"], default="http")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--path", default="/")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--backend", default="")
    ap.add_argument("--tries", type=int, default=50)
    args = ap.parse_args(argv)
    if args.mode == "hold":
        run_hold(args)
    else:
        if args.mode == "requests":
            args.duration = 0.0
        run_requests(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
