"""Real tools run in a pod's namespace, their results parsed into plain dicts.

Every probe returns the same shape::

    {"ok": bool,              # a reply came back (any HTTP status counts)
     "outcome": "answered" | "refused" | "timeout" | "error",
     "status": int | None,    # HTTP status
     "body": str | None,      # HTTP body / UDP reply
     "seconds": float,        # wall time of the probe
     "tool": "curl -s ...",   # the command line, for evidence
     "detail": str}           # exit code, errno or tool message

``refused`` means the destination answered with an RST / ICMP port-unreachable;
``timeout`` means nothing came back in time (how a dropped packet looks from
the client); ``error`` covers the rest (host/net unreachable, resets, bad
replies) with the reason in ``detail``.

Argument order is the same everywhere: ``(topo, src_pod, ip[, port...], timeout_s)``.

:func:`probe_many` checks many TCP/UDP/HTTP targets from one source pod with a
single process and one shared timeout (non-blocking sockets, all at once).
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from typing import Any, Iterable, Mapping

from harness.errors import ProbeError

__all__ = ["ping", "http", "tcp_connect", "udp_echo", "probe_many", "Target", "CURL_EXIT"]

#: curl exit codes we classify (everything else is "error")
CURL_EXIT = {0: "answered", 7: "refused", 28: "timeout"}
_STATUS_MARK = "\n__twin_http_status__="
_RTT = re.compile(r"time=([0-9.]+) ms")
_CURL_WHY = re.compile(r"^\* connect to \S+ port \d+ failed: (.+)$", re.M)


def _result(outcome: str, seconds: float, tool: Iterable[str], status: int | None = None,
            body: str | None = None, detail: str = "", **extra: Any) -> dict:
    d = {"ok": outcome == "answered", "outcome": outcome, "status": status, "body": body,
         "seconds": round(seconds, 6), "tool": shlex.join(map(str, tool)), "detail": detail}
    d.update(extra)
    return d


def ping(topo, src_pod: str, ip: str, timeout_s: float = 1.0) -> dict:
    """One ICMP echo (``ping -c1 -W``): answered, timeout, or error."""
    wait = max(1, int(round(timeout_s)))
    argv = ["ping", "-n", "-c1", f"-W{wait}", str(ip)]
    res = topo.exec(src_pod, argv, timeout=wait + 3)
    rtt = _RTT.search(res.stdout)
    extra = {"rtt_ms": float(rtt.group(1)) if rtt else None}
    if res.returncode == 0:
        return _result("answered", res.duration, argv, detail="exit 0", **extra)
    if res.returncode == 1 and not res.timed_out:
        # exit 1 = no reply; an ICMP error (e.g. unreachable) is reported in stdout
        # an ICMP error (host/net unreachable) did not reach the target: "error", not "refused"
        unreachable = "Unreachable" in res.stdout
        return _result("error" if unreachable else "timeout", res.duration, argv,
                       detail="exit 1" + (": destination unreachable" if unreachable else ": no reply"), **extra)
    return _result("timeout" if res.timed_out else "error", res.duration, argv,
                   detail=f"exit {res.returncode}: {res.stderr.strip()[:200]}", **extra)


def http(topo, src_pod: str, ip: str, port: int = 80, method: str = "GET", path: str = "/",
         timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> dict:
    """One HTTP request with curl: answered with a status, refused (exit 7), timeout (exit 28)."""
    host = str(ip)
    url = f"http://{host}:{port}{path if path.startswith('/') else '/' + path}"
    # -v: curl's exit 7 covers refused and unreachable alike; only the verbose log says which
    argv = ["curl", "-s", "-v", "--noproxy", "*", "-o", "-", "-w", _STATUS_MARK + "%{http_code}",
            "--max-time", f"{timeout_s:g}", "-X", method.upper()]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    res = topo.exec(src_pod, argv, timeout=timeout_s + 5)
    if res.timed_out:
        return _result("timeout", res.duration, argv, detail="killed after exec timeout")
    body, _, code = res.stdout.rpartition(_STATUS_MARK)
    status = int(code) if code.strip().isdigit() and int(code) > 0 else None
    outcome = CURL_EXIT.get(res.returncode, "error")
    why = _CURL_WHY.findall(res.stderr)
    if res.returncode == 7 and not any("refused" in w.lower() for w in why):
        outcome = "error"  # exit 7 is also "no route to host" / "network is unreachable"
    if outcome == "answered" and status is None:
        outcome = "error"
    errs = [ln[2:] for ln in res.stderr.splitlines() if ln.startswith("curl: ")]
    detail = f"curl exit {res.returncode}" + (f": {(why or errs)[-1][:200]}" if (why or errs) else "")
    return _result(outcome, res.duration, argv, status=status if outcome == "answered" else None,
                   body=body if outcome == "answered" else None, detail=detail)


def tcp_connect(topo, src_pod: str, ip: str, port: int, timeout_s: float = 2.0) -> dict:
    """A bare TCP handshake (no payload): answered (connected), refused, timeout."""
    return probe_many(topo, src_pod, [("tcp", ip, port)], timeout_s)[0]


def udp_echo(topo, src_pod: str, ip: str, port: int, timeout_s: float = 2.0,
             payload: str = "twin-probe") -> dict:
    """Send one datagram and wait for the echo: answered (body = reply), refused (ICMP), timeout."""
    return probe_many(topo, src_pod, [{"proto": "udp", "ip": ip, "port": port, "payload": payload}],
                      timeout_s)[0]


Target = Any  # (proto, ip, port) | {"proto", "ip", "port", "payload"?, "method"?, "path"?}


def _norm(t: Target) -> dict:
    if isinstance(t, Mapping):
        d = dict(t)
    else:
        proto, ip, port = t
        d = {"proto": proto, "ip": ip, "port": port}
    d["proto"] = str(d["proto"]).lower()
    if d["proto"] not in ("tcp", "udp", "http"):
        raise ProbeError(f"probe target {t!r}: proto must be tcp, udp or http")
    d["ip"], d["port"] = str(d["ip"]), int(d["port"])
    return d


def probe_many(topo, src_pod: str, targets: Iterable[Target], timeout_s: float = 2.0) -> list[dict]:
    """Probe all ``targets`` from ``src_pod`` at once (one process, one timeout).

    A target is ``(proto, ip, port)`` or a dict with ``proto`` (tcp: handshake
    only; udp: datagram and wait for a reply; http: a request, the answer's
    status and body), ``ip``, ``port`` and optional ``payload`` (udp),
    ``method``/``path`` (http).  Results come back in target order; each also
    carries ``proto``, ``ip`` and ``port``.
    """
    norm = [_norm(t) for t in targets]
    if not norm:
        return []
    spec = json.dumps({"timeout": timeout_s, "targets": norm})
    argv = [sys.executable, "-c", _PROBER, spec]
    tool = [sys.executable, "-c", "<harness.tools prober>"]
    res = topo.exec(src_pod, argv, timeout=timeout_s + 10)
    try:
        rows = json.loads(res.stdout)
    except ValueError:
        detail = f"prober exit {res.returncode}: {res.stderr.strip()[:300]}"
        return [_result("error", res.duration, tool, detail=detail, proto=t["proto"], ip=t["ip"], port=t["port"])
                for t in norm]
    out = []
    for t, r in zip(norm, rows):
        show = [*tool, f"{t['proto']}://{t['ip']}:{t['port']}"]
        out.append(_result(r["outcome"], r["seconds"], show, status=r.get("status"), body=r.get("body"),
                           detail=r.get("detail", ""), proto=t["proto"], ip=t["ip"], port=t["port"]))
    return out


# Runs inside the pod (stdlib only). One selector over all sockets, one deadline.
_PROBER = r'''
import errno, json, selectors, socket, sys, time
spec = json.loads(sys.argv[1])
T0 = time.monotonic(); deadline = T0 + float(spec["timeout"])
sel = selectors.DefaultSelector()
res = [None] * len(spec["targets"])
state = {}
def done(i, outcome, detail="", **kw):
    s = state.pop(i, None)
    if s is not None:
        try: sel.unregister(s["sock"])
        except Exception: pass
        s["sock"].close()
    res[i] = dict(outcome=outcome, seconds=time.monotonic() - T0, detail=detail, **kw)
def errname(e):
    return errno.errorcode.get(e, str(e))
def http_parse(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[1].isdigit():
        return None, None
    return int(line[1]), body.decode(errors="replace")
for i, t in enumerate(spec["targets"]):
    proto = t["proto"]
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
            s.connect((t["ip"], t["port"])); s.send(t.get("payload", "twin-probe").encode())
            state[i] = {"sock": s, "t": t, "phase": "reply"}
            sel.register(s, selectors.EVENT_READ, i)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.setblocking(False)
            rc = s.connect_ex((t["ip"], t["port"]))
            if rc not in (0, errno.EINPROGRESS):
                state[i] = {"sock": s}
                done(i, "refused" if rc == errno.ECONNREFUSED else "error", errname(rc)); continue
            state[i] = {"sock": s, "t": t, "phase": "connect", "buf": b""}
            sel.register(s, selectors.EVENT_WRITE, i)
    except OSError as e:
        res[i] = dict(outcome="error", seconds=time.monotonic() - T0, detail=repr(e))
while state:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    for key, _ev in sel.select(left):
        i = key.data; s = state[i]; sock = s["sock"]; t = s["t"]
        if t["proto"] == "udp":
            try:
                data = sock.recv(65535)
                done(i, "answered", "reply", body=data.decode(errors="replace"))
            except ConnectionRefusedError:
                done(i, "refused", "ICMP port unreachable")
            except OSError as e:
                done(i, "error", repr(e))
            continue
        if s["phase"] == "connect":
            rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc == errno.ECONNREFUSED:
                done(i, "refused", "ECONNREFUSED"); continue
            if rc:
                done(i, "error" if rc not in (errno.ETIMEDOUT,) else "timeout", errname(rc)); continue
            if t["proto"] == "tcp":
                done(i, "answered", "connected"); continue
            req = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: twin-prober\r\nAccept: */*\r\nConnection: close\r\n\r\n" % (
                t.get("method", "GET").upper(), t.get("path", "/"), t["ip"])
            try:
                sock.send(req.encode())
            except OSError as e:
                done(i, "error", repr(e)); continue
            s["phase"] = "read"; sel.modify(sock, selectors.EVENT_READ, i)
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = None
        except OSError as e:
            done(i, "error", repr(e)); continue
        if chunk:
            s["buf"] += chunk; continue
        status, body = http_parse(s["buf"])
        if status is None:
            done(i, "error", "connection closed without an HTTP answer" if chunk is not None else "reset")
        else:
            done(i, "answered", "http", status=status, body=body)
for i in list(state):
    s = state[i]
    if s.get("phase") == "read" and s["buf"]:
        status, body = http_parse(s["buf"])
        if status is not None:
            done(i, "answered", "http (incomplete at timeout)", status=status, body=body); continue
    done(i, "timeout", "no answer in %ss" % spec["timeout"])
print(json.dumps(res))
'''
