"""TEST DOUBLE: a tiny ``coordination.k8s.io/v1`` Lease endpoint on loopback.

Not the project's API server (that is harness/apiserver, etcd-backed); this
serves just enough of the Kubernetes API for the elector process's tests:

* ``GET  /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`` → 200 Lease | 404 Status
* ``POST /apis/coordination.k8s.io/v1/namespaces/{ns}/leases``        → 201 Lease | 409 AlreadyExists
* ``PUT  /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`` → 200 Lease | 404 | 409 Conflict
  when the body's ``metadata.resourceVersion`` is not the stored one

Lease objects are stored as the client sent them (spec untouched) with a
fresh ``resourceVersion`` per write, as Kubernetes does.  Every request is
logged (monotonic time, method, lease, status) for the tests to read.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?(?:\?.*)?$")


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class LeaseFake:
    """``with LeaseFake() as api: api.url``; ``api.leases``, ``api.log``.

    ``netns``: a network namespace path to listen in (the listening socket is
    created by a thread that joined it, so it lives there; it is served from
    this process as any socket is); default: loopback of the caller's."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, netns: str | None = None) -> None:
        self.leases: dict[tuple[str, str], dict] = {}
        self.log: list[tuple[float, str, str, int]] = []  # (monotonic, method, lease name, status)
        self._lock = threading.Lock()
        self._rv = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                m = _PATH.match(self.path)
                body = None
                if method in ("POST", "PUT"):
                    n = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(n) or b"{}")
                if not m:
                    code, out, name = 404, _status(404, "NotFound", f"no route {self.path}"), ""
                else:
                    ns, name = m.group(1), m.group(2) or (body or {}).get("metadata", {}).get("name", "")
                    code, out = fake.serve(method, ns, m.group(2), body)
                with fake._lock:
                    fake.log.append((time.monotonic(), method, name, code))
                self._reply(code, out)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the tests SIGKILL electors): not the server's error

        self.server = _in_netns(netns, lambda: Server((host, port), Handler))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="lease-fake", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, method: str, ns: str, name: str | None, body: dict | None) -> tuple[int, dict]:
        with self._lock:
            if method == "GET" and name:
                lease = self.leases.get((ns, name))
                if lease is None:
                    return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
                return 200, lease
            if method == "POST" and not name and body is not None:
                name = body["metadata"]["name"]
                if (ns, name) in self.leases:
                    return 409, _status(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
                return 201, self._store(ns, name, body, uid=str(uuid.uuid4()))
            if method == "PUT" and name and body is not None:
                old = self.leases.get((ns, name))
                if old is None:
                    return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
                if body.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                                         f'"{name}": the object has been modified; please apply your '
                                                         f'changes to the latest version and try again')
                return 200, self._store(ns, name, body, uid=old["metadata"]["uid"])
            return 405, _status(405, "MethodNotAllowed", f"{method} not supported by the test double")

    def _store(self, ns: str, name: str, body: dict, uid: str) -> dict:
        self._rv += 1
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": str(self._rv)},
                 "spec": dict(body.get("spec") or {})}
        self.leases[(ns, name)] = lease
        return lease

    def holder(self, name: str, ns: str = "kube-system") -> str | None:
        with self._lock:
            lease = self.leases.get((ns, name))
            return lease["spec"].get("holderIdentity") if lease else None

    def __enter__(self) -> "LeaseFake":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


CLONE_NEWNET = 0x40000000


def _in_netns(path: str | None, make):
    """``make()`` called in a thread that joined the network namespace ``path``."""
    if path is None:
        return make()
    out: dict = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({path})")
            finally:
                os.close(fd)
            out["value"] = make()
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    t = threading.Thread(target=run, name="lease-fake-netns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
