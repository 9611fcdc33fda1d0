"""Python fallbacks of ``c/connlat.c`` and ``c/acceptd.c`` (same arguments, same output).

Used only when no C compiler is available (``--client python``): the timed
region is then ``socket.connect()`` between two ``time.perf_counter_ns()``
calls, which adds roughly a microsecond of interpreter overhead.

    python3 bench/pyhelpers.py connlat NETNS_PATH CGROUP_DIR|- TARGETS_FILE WARMUP CPU|-1
    python3 bench/pyhelpers.py acceptd NETNS_PATH PORT CPU|-1
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), f"setns {path}")
    os.close(fd)


def _pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def connlat(netns: str, cgroup: str, targets: str, warmup: str, cpu: str) -> None:
    _setns(netns)
    if cgroup != "-":
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    _pin(int(cpu))
    dsts = []
    with open(targets) as f:
        for line in f:
            ip, port = line.split()
            dsts.append((ip, int(port)))
    clock = time.perf_counter_ns
    out = []
    for dst in dsts:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        err = 0
        t0 = clock()
        try:
            s.connect(dst)
        except OSError as exc:
            err = exc.errno or 110
        t1 = clock()
        s.close()
        out.append(f"{t1 - t0} {err}")
    sys.stdout.write("".join(line + "\n" for line in out[int(warmup):]))


def acceptd(netns: str, port: str, cpu: str) -> None:
    _setns(netns)
    _pin(int(cpu))
    counts: dict[tuple[str, str], int] = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(65535)
    ls.settimeout(0.1)
    print("ready", flush=True)

    def one() -> bool:
        try:
            c, peer = ls.accept()
        except (TimeoutError, BlockingIOError, InterruptedError):
            return False
        key = (peer[0], c.getsockname()[0])
        counts[key] = counts.get(key, 0) + 1
        c.close()
        return True

    while not stop:
        one()
    ls.setblocking(False)
    while one():
        pass
    for (src, dst), n in counts.items():
        print(src, dst, n)
    print("end", flush=True)


if __name__ == "__main__":
    {"connlat": connlat, "acceptd": acceptd}[sys.argv[1]](*sys.argv[2:])
