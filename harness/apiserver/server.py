"""The Lease API: the subset of the Kubernetes API the agents' leader election uses, stored in etcd.

No kube-apiserver binary exists for these machines, so this server speaks the
part of the Kubernetes API that the ``kubernetes`` Python client's
``CoordinationV1Api`` (and client-go's ``resourcelock.LeaseLock``) uses, shaped
as Kubernetes shapes it, so that client talks to it unchanged.

Served (``{ns}`` any namespace name; namespaces are implicit, never created or checked)::

    GET    /version                                            version.Info (gitVersion v1.31.0-twin)
    GET    /api                                                APIVersions (v1)
    GET    /apis                                               APIGroupList (coordination.k8s.io/v1 only)
    GET    /apis/coordination.k8s.io                           APIGroup
    GET    /apis/coordination.k8s.io/v1                        APIResourceList (leases)
    GET    /apis/coordination.k8s.io/v1/leases                 LeaseList over all namespaces
    GET    /apis/coordination.k8s.io/v1/namespaces/{ns}/leases         LeaseList (200)
    POST   /apis/coordination.k8s.io/v1/namespaces/{ns}/leases         create (201; 409 AlreadyExists)
    GET    /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}  read (200; 404 NotFound)
    PUT    /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}  replace (200; 404 NotFound;
           409 Conflict when ``metadata.resourceVersion`` is set and is not the stored one;
           without it the update is unconditional, as Kubernetes allows for Leases)
    DELETE /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}  delete (200 Status Success; 404)

Lease fields kept: ``metadata.name``, ``namespace``, ``uid``, ``resourceVersion``,
``creationTimestamp``, ``labels``, ``annotations``; ``spec.holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime``, ``leaseTransitions``
(and ``preferredHolder``/``strategy`` if sent).  Times are MicroTime:
RFC 3339 in UTC with microseconds (``2026-11-27T23:59:01.123456Z``); a time
without a UTC offset is rejected (400), as Kubernetes rejects it.
``resourceVersion`` is the etcd ``mod_revision`` of the key
``/registry/leases/<ns>/<name>``; the compare-and-swap of an update is an
etcd transaction on it, so concurrent updates are decided by etcd.

Errors are ``Status`` objects (``kind: Status``, ``status: Failure``,
``message``, ``reason``, ``details``, ``code``) with Kubernetes' reasons and
messages: ``NotFound`` 404, ``AlreadyExists`` 409, ``Conflict`` 409
(``Operation cannot be fulfilled on leases.coordination.k8s.io "x": the
object has been modified; please apply your changes to the latest version
and try again``), ``BadRequest`` 400 (malformed JSON, wrong kind, name or
namespace mismatch), ``Invalid`` 422 (bad name, negative
``leaseDurationSeconds``/``leaseTransitions``), ``MethodNotAllowed`` 405
(PATCH, watch and everything else are not served), ``InternalError`` 500
(etcd unreachable).

Not served: authentication/authorization (none), PATCH, watch, list
options (``labelSelector``, ``fieldSelector``, ``limit``/``continue`` are
ignored), ``dryRun``, ``managedFields``, ``generation``, finalizers, other
resources and API groups, protobuf (JSON only), HTTP/2, TLS (plain HTTP).

Every successful create/update/delete is appended to the audit log as one
JSON line: ``{"t": time.monotonic(), "verb", "namespace", "lease", "holder",
"previous_holder", "transitions", "resourceVersion", "renewTime"}``
(CLOCK_MONOTONIC is shared by every process on the machine).
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LeaseServer", "EtcdKV", "ApiError", "KEY_PREFIX", "micro_time", "parse_time"]

GROUP = "coordination.k8s.io"
VERSION = "v1"
GV = f"{GROUP}/{VERSION}"
RESOURCE = f"leases.{GROUP}"
KEY_PREFIX = "/registry/leases/"
GIT_VERSION = "v1.31.0-twin"
_BASE = f"/apis/{GV}"
_NS_PATH = re.compile(rf"^{re.escape(_BASE)}/namespaces/([^/]+)/leases(?:/([^/]+))?/?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SPEC_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions",
                "preferredHolder", "strategy")
_TIME_FIELDS = ("acquireTime", "renewTime")
_INT_FIELDS = ("leaseDurationSeconds", "leaseTransitions")


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status``."""

    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name

    def status(self) -> dict:
        details: dict[str, Any] = {}
        if self.name is not None:
            details = {"name": self.name, "group": GROUP, "kind": "leases"}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": details, "code": self.code}


def _not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{RESOURCE} "{name}" not found', name)


def _conflict(name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {RESOURCE} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again", name)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _invalid(name: str, errors: list[str]) -> ApiError:
    return ApiError(422, "Invalid", f'Lease.{GROUP} "{name}" is invalid: ' + ", ".join(errors), name)


# ------------------------------------------------------------------ times


def micro_time(t: dt.datetime) -> str:
    """Kubernetes MicroTime: UTC, six fractional digits, ``Z``."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time with a UTC offset (fractions beyond microseconds are truncated)."""
    m = _RFC3339.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"parsing time {value!r}: not RFC 3339 with a time zone (e.g. 2026-11-27T23:59:01.123456Z)")
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    zone = "+00:00" if m.group(4) in ("Z", "z") else m.group(4)
    return dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{frac}{zone}")


# ------------------------------------------------------------------ etcd


class EtcdError(Exception):
    pass


class EtcdKV:
    """etcd v3 through its JSON gRPC gateway (etcd 3.4: ``/v3/kv/...``, base64 keys and values).

    One HTTP connection per thread (keep-alive); every call is one request."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"etcd URL {url!r}: expected http://HOST:PORT")
        self.host, self.port, self.timeout_s = u.hostname, u.port or 2379, timeout_s
        self._local = threading.local()

    def _call(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        for attempt in (0, 1):  # a kept-alive connection may have been closed by etcd: retry once, fresh
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise EtcdError(f"etcd {self.host}:{self.port}{path}: {exc}") from exc
                continue
            if resp.status != 200:
                raise EtcdError(f"etcd {path}: HTTP {resp.status}: {raw[:300]!r}")
            return json.loads(raw or b"{}")
        raise EtcdError("unreachable")

    @staticmethod
    def _b64(s: str | bytes) -> str:
        return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

    @staticmethod
    def _kv(kv: dict) -> tuple[str, dict, int]:
        return (base64.b64decode(kv["key"]).decode(), json.loads(base64.b64decode(kv.get("value", ""))),
                int(kv.get("mod_revision", 0)))

    def get(self, key: str) -> tuple[dict, int] | None:
        r = self._call("/v3/kv/range", {"key": self._b64(key)})
        kvs = r.get("kvs") or []
        if not kvs:
            return None
        _k, obj, rev = self._kv(kvs[0])
        return obj, rev

    def list(self, prefix: str) -> tuple[list[tuple[str, dict, int]], int]:
        end = prefix.encode()[:-1] + bytes([prefix.encode()[-1] + 1])
        r = self._call("/v3/kv/range", {"key": self._b64(prefix), "range_end": self._b64(end)})
        return [self._kv(kv) for kv in r.get("kvs") or []], int(r.get("header", {}).get("revision", 0))

    def txn(self, key: str, compare: dict, value: dict | None) -> tuple[bool, int, dict | None]:
        """If ``compare`` holds for ``key``: put ``value`` (or delete the key when None). Returns
        ``(succeeded, revision, previous object or None)``; on failure the current object is returned."""
        k = self._b64(key)
        op = {"request_put": {"key": k, "value": self._b64(json.dumps(value, separators=(",", ":")))}} \
            if value is not None else {"request_delete_range": {"key": k, "prev_kv": True}}
        r = self._call("/v3/kv/txn", {"compare": [{"key": k, **compare}], "success": [op],
                                      "failure": [{"request_range": {"key": k}}]})
        rev = int(r.get("header", {}).get("revision", 0))
        ok = bool(r.get("succeeded", False))
        prev = None
        for resp in r.get("responses") or []:
            rng = resp.get("response_range")
            if rng and rng.get("kvs"):
                prev = self._kv(rng["kvs"][0])[1]
            dele = resp.get("response_delete_range")
            if dele and dele.get("prev_kvs"):
                prev = self._kv(dele["prev_kvs"][0])[1]
        return ok, rev, prev


# ------------------------------------------------------------------ leases


def _key(ns: str, name: str) -> str:
    return f"{KEY_PREFIX}{ns}/{name}"


def _with_rv(obj: dict, rev: int, kind: bool = True) -> dict:
    out = json.loads(json.dumps(obj))
    out["metadata"]["resourceVersion"] = str(rev)
    if kind:
        out = {"kind": "Lease", "apiVersion": GV, **out}
    else:
        out.pop("kind", None), out.pop("apiVersion", None)
    return out


class LeaseStore:
    """The Lease resource: validation, Kubernetes semantics, storage in etcd, the audit log."""

    def __init__(self, etcd: EtcdKV, audit_path: str | None) -> None:
        self.etcd = etcd
        self._audit = open(audit_path, "a", buffering=1) if audit_path else None
        self._audit_lock = threading.Lock()

    def close(self) -> None:
        if self._audit:
            self._audit.close()

    def _log(self, verb: str, ns: str, name: str, obj: dict, previous: dict | None, rev: int) -> None:
        if not self._audit:
            return
        spec = obj.get("spec", {})
        line = {"t": time.monotonic(), "verb": verb, "namespace": ns, "lease": name,
                "holder": spec.get("holderIdentity"),
                "previous_holder": (previous or {}).get("spec", {}).get("holderIdentity"),
                "transitions": spec.get("leaseTransitions"), "resourceVersion": str(rev),
                "renewTime": spec.get("renewTime")}
        with self._audit_lock:
            self._audit.write(json.dumps(line) + "\n")
            self._audit.flush()

    # ---------------------------------------------------------- decoding

    def _decode(self, body: bytes, ns: str, url_name: str | None) -> dict:
        try:
            obj = json.loads(body or b"")
        except ValueError as exc:
            raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: {exc}') from None
        if not isinstance(obj, dict):
            raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: not a JSON object')
        kind, api = obj.get("kind"), obj.get("apiVersion")
        if kind not in (None, "", "Lease") or api not in (None, "", GV):
            raise _bad_request(f"the API version in the data ({api}) does not match the expected API version "
                               f"({GV}) or kind {kind!r} is not Lease")
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: '
                               "metadata and spec must be objects")
        body_ns = meta.get("namespace")
        if body_ns not in (None, "", ns):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the "
                               "request")
        name = meta.get("name") or ""
        if url_name is not None and name != url_name:
            raise _bad_request(f"the name of the object ({name}) does not match the name on the URL ({url_name})")
        errors = []
        if not name:
            errors.append("metadata.name: Required value: name or generateName is required")
        elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            errors.append(f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                          "of lower case alphanumeric characters, '-' or '.'")
        out_spec: dict[str, Any] = {}
        for f in _SPEC_FIELDS:
            v = spec.get(f)
            if v is None:
                continue
            if f in _TIME_FIELDS:
                try:
                    v = micro_time(parse_time(v))
                except ValueError as exc:
                    raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: '
                                       f"spec.{f}: {exc}") from None
            elif f in _INT_FIELDS:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: '
                                       f"spec.{f}: expected an integer, got {v!r}")
                if f == "leaseDurationSeconds" and v <= 0:
                    errors.append(f"spec.leaseDurationSeconds: Invalid value: {v}: must be greater than 0")
                if f == "leaseTransitions" and v < 0:
                    errors.append(f"spec.leaseTransitions: Invalid value: {v}: must be greater than or equal to 0")
            elif not isinstance(v, str):
                raise _bad_request(f'Lease in version "{VERSION}" cannot be handled as a Lease: '
                                   f"spec.{f}: expected a string, got {v!r}")
            out_spec[f] = v
        if errors:
            raise _invalid(name, errors)
        out_meta = {"name": name, "namespace": ns}
        for f in ("labels", "annotations"):
            if isinstance(meta.get(f), dict) and meta[f]:
                out_meta[f] = {str(k): str(v) for k, v in meta[f].items()}
        rv = meta.get("resourceVersion") or ""
        return {"metadata": out_meta, "spec": out_spec, "_rv": str(rv)}

    # ---------------------------------------------------------- verbs

    def read(self, ns: str, name: str) -> dict:
        got = self.etcd.get(_key(ns, name))
        if got is None:
            raise _not_found(name)
        return _with_rv(*got)

    def list(self, ns: str | None) -> dict:
        items, rev = self.etcd.list(KEY_PREFIX + (f"{ns}/" if ns else ""))
        return {"kind": "LeaseList", "apiVersion": GV, "metadata": {"resourceVersion": str(rev)},
                "items": [_with_rv(obj, r, kind=False) for _k, obj, r in items]}

    def create(self, ns: str, body: bytes) -> dict:
        obj = self._decode(body, ns, None)
        if obj.pop("_rv"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        name = obj["metadata"]["name"]
        obj["metadata"]["uid"] = str(uuid.uuid4())
        obj["metadata"]["creationTimestamp"] = _rfc3339(dt.datetime.now(dt.timezone.utc))
        ok, rev, _cur = self.etcd.txn(_key(ns, name), {"target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                                      obj)
        if not ok:
            raise ApiError(409, "AlreadyExists", f'{RESOURCE} "{name}" already exists', name)
        self._log("create", ns, name, obj, None, rev)
        return _with_rv(obj, rev)

    def update(self, ns: str, name: str, body: bytes) -> dict:
        obj = self._decode(body, ns, name)
        rv = obj.pop("_rv")
        if rv and not rv.isdigit():
            raise _bad_request(f"invalid resourceVersion {rv!r}: must be an unsigned integer")
        key = _key(ns, name)
        spec_meta = json.loads(json.dumps(obj))
        while True:  # as Kubernetes' GuaranteedUpdate: an unconditional update retries on a concurrent write
            cur = self.etcd.get(key)
            if cur is None:
                raise _not_found(name)
            old, old_rev = cur
            if rv and int(rv) != old_rev:
                raise _conflict(name)
            obj = json.loads(json.dumps(spec_meta))
            # identity and creation are the server's: keep them whatever the client sent
            obj["metadata"]["uid"] = old["metadata"].get("uid")
            obj["metadata"]["creationTimestamp"] = old["metadata"].get("creationTimestamp")
            if obj == old:  # as Kubernetes: an update that changes nothing writes nothing (same resourceVersion)
                return _with_rv(old, old_rev)
            # the compare is on the revision just read: a concurrent writer in between loses here
            ok, rev, now = self.etcd.txn(key, {"target": "MOD", "result": "EQUAL", "mod_revision": str(old_rev)},
                                         obj)
            if ok:
                break
            if now is None:
                raise _not_found(name)
            if rv:
                raise _conflict(name)
        self._log("update", ns, name, obj, old, rev)
        return _with_rv(obj, rev)

    def delete(self, ns: str, name: str) -> dict:
        key = _key(ns, name)
        cur = self.etcd.get(key)
        if cur is None:
            raise _not_found(name)
        old, old_rev = cur
        ok, rev, _prev = self.etcd.txn(key, {"target": "MOD", "result": "EQUAL", "mod_revision": str(old_rev)}, None)
        if not ok:
            raise _conflict(name) if _prev is not None else _not_found(name)
        self._log("delete", ns, name, old, old, rev)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": GROUP, "kind": "leases", "uid": old["metadata"].get("uid")}}


# ------------------------------------------------------------------ discovery


def _discovery(path: str, server_address: str) -> dict | None:
    if path == "/version":
        return {"major": "1", "minor": "31", "gitVersion": GIT_VERSION, "gitCommit": "", "gitTreeState": "clean",
                "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
    group = {"name": GROUP, "versions": [{"groupVersion": GV, "version": VERSION}],
             "preferredVersion": {"groupVersion": GV, "version": VERSION}}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
    if path == f"/apis/{GROUP}":
        return {"kind": "APIGroup", "apiVersion": "v1", **group}
    if path == _BASE:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV, "resources": [{
            "name": "leases", "singularName": "lease", "namespaced": True, "kind": "Lease",
            "verbs": ["create", "delete", "get", "list", "update"]}]}
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twin-lease-apiserver"
    # headers and body are separate writes: without TCP_NODELAY, Nagle and the client's delayed ACK
    # would add ~40 ms to every answer
    disable_nagle_algorithm = True
    server: "LeaseServer"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the audit log records changes
        pass

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self, method: str) -> None:
        body = self._body() if method in ("POST", "PUT", "PATCH") else b""
        path = urlsplit(self.path).path
        store = self.server.store
        try:
            if method == "GET":
                info = _discovery(path.rstrip("/") or "/", self.server.server_address_text)
                if info is not None:
                    return self._send(200, info)
                if path.rstrip("/") == f"{_BASE}/leases":
                    return self._send(200, store.list(None))
            m = _NS_PATH.match(path)
            if not m:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns, name = m.group(1), m.group(2)
            if not _DNS1123_LABEL.match(ns):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if "watch=true" in (urlsplit(self.path).query or "") or method not in ("GET", "POST", "PUT", "DELETE") \
                    or (name is None and method in ("PUT", "DELETE")) or (name is not None and method == "POST"):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
            if method == "GET":
                return self._send(200, store.read(ns, name) if name else store.list(ns))
            if method == "POST":
                return self._send(201, store.create(ns, body))
            if method == "PUT":
                return self._send(200, store.update(ns, name, body))
            return self._send(200, store.delete(ns, name))
        except ApiError as exc:
            return self._send(exc.code, exc.status())
        except EtcdError as exc:
            return self._send(500, ApiError(500, "InternalError", f"Internal error occurred: {exc}").status())

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")


class LeaseServer(ThreadingHTTPServer):
    """``LeaseServer((ip, port), etcd_url, audit_path).serve_forever()``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], etcd_url: str, audit_path: str | None = None) -> None:
        self.store = LeaseStore(EtcdKV(etcd_url), audit_path)
        self.server_address_text = f"{address[0]}:{address[1]}"
        super().__init__(address, _Handler)

    def server_close(self) -> None:
        super().server_close()
        self.store.close()
