"""Compile and load the BPF objects with bcc, one of each per node.

* :class:`NodeProgram`  ``bpf/bpf_lxc.c``: the two tc programs on lxc devices
* :class:`SockProgram`  ``bpf/bpf_sock.c``: the four cgroup socket-LB programs
* :class:`HostProgram`  ``bpf/bpf_host.c``: the two tc programs on the node's LAN
  interface(s) (ARP responder, north-south load-balancing)

BPF programs and maps are not namespaced; a node is isolated by having its
own object (its own maps), attached only to that node's lxc devices.

bcc rewrites map syntax (``m.lookup(&k)``) only in its main file, so the
loader inlines our own quoted ``#include "lib/…"`` headers into one text,
with ``#line`` markers so compiler errors still name the real file and line.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

from datapath.constants import BandwidthMode, bandwidth_cflags, bpf_cflags, sock_cflags
from datapath.errors import BpfCompileError

__all__ = [
    "BPF_DIR", "LXC_SOURCE", "SOCK_SOURCE", "KERNEL_SOURCE_ENV", "bpf_cflags", "bundle_source",
    "NodeProgram", "SockProgram", "SockHook", "SOCK_HOOKS", "HOST_SOURCE", "HostProgram", "host_cflags",
]

BPF_DIR = Path(__file__).resolve().parent / "bpf"
LXC_SOURCE = BPF_DIR / "bpf_lxc.c"
SOCK_SOURCE = BPF_DIR / "bpf_sock.c"
HOST_SOURCE = BPF_DIR / "bpf_host.c"
from datapath.headers import ENV as KERNEL_SOURCE_ENV  # noqa: E402

#: Entry points of bpf_lxc.c: (function name, hook).
FROM_CONTAINER = "from_container"
TO_CONTAINER = "to_container"
#: Entry points of bpf_host.c.
FROM_NETDEV = "from_netdev"
TO_NETDEV = "to_netdev"



@dataclass(frozen=True)
class SockHook:
    """One cgroup socket program: its function in bpf_sock.c and attach type."""

    function: str
    attach_type: int  # enum bpf_attach_type
    name: str  # short name used in messages


# enum bpf_attach_type values (uapi/linux/bpf.h; equal to bcc.BPFAttachType's)
_CGROUP_INET4_CONNECT = 10
_CGROUP_UDP4_SENDMSG = 14
_CGROUP_UDP4_RECVMSG = 19
_CGROUP_INET4_GETPEERNAME = 29
#: BPF_PROG_TYPE_CGROUP_SOCK_ADDR
CGROUP_SOCK_ADDR_PROG_TYPE = 18

#: The programs of bpf_sock.c, in attach order.
SOCK_HOOKS: tuple[SockHook, ...] = (
    SockHook("sock4_connect", _CGROUP_INET4_CONNECT, "connect4"),
    SockHook("sock4_sendmsg", _CGROUP_UDP4_SENDMSG, "sendmsg4"),
    SockHook("sock4_recvmsg", _CGROUP_UDP4_RECVMSG, "recvmsg4"),
    SockHook("sock4_getpeername", _CGROUP_INET4_GETPEERNAME, "getpeername4"),
)

_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def bundle_source(path: Path = LXC_SOURCE, *, search_dir: Path = BPF_DIR) -> str:
    """``path`` with its quoted includes inlined once each, ``#line``-annotated."""
    seen: set[Path] = set()

    def expand(file: Path) -> list[str]:
        file = file.resolve()
        if file in seen:
            return []
        seen.add(file)
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise BpfCompileError(f"cannot read BPF source {file}: {exc}") from exc
        out = [f'#line 1 "{file}"']
        for lineno, line in enumerate(lines, start=1):
            m = _QUOTED_INCLUDE.match(line)
            if m is None:
                out.append(line)
                continue
            target = file.parent / m.group(1)
            if not target.exists():
                target = search_dir / m.group(1)
            if not target.exists():
                raise BpfCompileError(
                    f"{file}:{lineno}: included file {m.group(1)!r} not found "
                    f"next to it or in {search_dir}"
                )
            out.extend(expand(target))
            out.append(f'#line {lineno + 1} "{file}"')
        return out

    return "\n".join(expand(path)) + "\n"


def _check_kernel_source() -> str:
    """The header tree bcc will use (found by :mod:`datapath.headers` and exported)."""
    from datapath.headers import ensure_kernel_headers
    tree, why = ensure_kernel_headers()
    if tree is None:
        raise BpfCompileError(f"bcc needs kernel headers: {why}")
    return str(tree)


def _import_bcc() -> Any:
    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise BpfCompileError(
            "python module bcc is not importable: install python3-bpfcc and run "
            "with /usr/bin/python3 or a venv made with --system-site-packages"
        ) from exc
    return bcc


#: bcc compiles with clang/LLVM in-process, which is not safe to run from several
#: threads at once (the node agents load their host programs from their own threads;
#: concurrent compiles corrupted the heap).  Every compile, load and cleanup of a bcc
#: object holds this lock.
BCC_LOCK = threading.RLock()


class _BpfObject:
    """A compiled bcc object: its maps by name, and an idempotent close."""

    _bpf: Any
    _closed: bool

    @property
    def bpf(self) -> Any:
        """The underlying ``bcc.BPF`` object."""
        return self._bpf

    def table(self, name: str) -> Any:
        """The bcc table named ``name``."""
        return self._bpf[name.encode()]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free programs and maps (idempotent); detach them from hooks first."""
        if self._closed:
            return
        self._closed = True
        with BCC_LOCK:
            self._bpf.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodeProgram(_BpfObject):
    """One compiled bpf_lxc object: its two tc programs and its maps."""

    def __init__(self, extra_cflags: Sequence[str] = ()) -> None:
        with BCC_LOCK:
            self._init(extra_cflags)

    def _init(self, extra_cflags: Sequence[str]) -> None:
        kernel_source = _check_kernel_source()
        bcc = _import_bcc()
        cflags = [f"-I{BPF_DIR}", *bpf_cflags(), *extra_cflags]
        try:
            self._bpf = bcc.BPF(text=bundle_source().encode(), cflags=cflags)
            self.from_container = self._bpf.load_func(FROM_CONTAINER.encode(), bcc.BPF.SCHED_CLS)
            self.to_container = self._bpf.load_func(TO_CONTAINER.encode(), bcc.BPF.SCHED_CLS)
        except Exception as exc:
            raise BpfCompileError(
                f"bcc could not compile/load {LXC_SOURCE} "
                f"({KERNEL_SOURCE_ENV}={kernel_source}): {exc}; the compiler or "
                "verifier output is printed above on stderr"
            ) from exc
        self._closed = False



class SockProgram(_BpfObject):
    """One compiled bpf_sock object: the four cgroup programs and the LB maps.

    Each program is loaded with its expected attach type (the kernel needs it
    for sock_addr programs, and it is what allows ``bpf_set_retval``).
    ``functions`` maps each :class:`SockHook` to its bcc function (``.fd``).
    """

    def __init__(self, extra_cflags: Sequence[str] = ()) -> None:
        with BCC_LOCK:
            self._init(extra_cflags)

    def _init(self, extra_cflags: Sequence[str]) -> None:
        kernel_source = _check_kernel_source()
        bcc = _import_bcc()
        cflags = [f"-I{BPF_DIR}", *sock_cflags(), *extra_cflags]
        try:
            self._bpf = bcc.BPF(text=bundle_source(SOCK_SOURCE).encode(), cflags=cflags)
        except Exception as exc:
            raise BpfCompileError(
                f"bcc could not compile {SOCK_SOURCE} ({KERNEL_SOURCE_ENV}={kernel_source}): "
                f"{exc}; the compiler output is printed above on stderr"
            ) from exc
        self.functions: dict[SockHook, Any] = {}
        try:
            for hook in SOCK_HOOKS:
                self.functions[hook] = self._bpf.load_func(
                    hook.function.encode(), CGROUP_SOCK_ADDR_PROG_TYPE, attach_type=hook.attach_type
                )
        except Exception as exc:
            self._bpf.cleanup()
            raise BpfCompileError(
                f"the kernel refused program {hook.function} ({hook.name}) of {SOCK_SOURCE}: "
                f"{exc}; the verifier log is printed above on stderr (bpf_set_retval needs "
                "kernel >= 5.19)"
            ) from exc
        self._closed = False



def host_cflags(bandwidth_mode: BandwidthMode = BandwidthMode.HTB) -> list[str]:
    """``-D`` flags for ``bpf_host.c``: the socket-LB constants (it uses the lb4
    maps' layout) plus the responder and NAT map sizes and codes, and the
    bandwidth manager's variant (``bandwidth_mode``: HTB classes or EDT)."""
    from datapath.maps import host_ifaces, l2_responder, ns_nat

    # the host object never uses lb4_sock_revnat (a socket-LB map lib/lb.h declares): keep it tiny
    lb = [f for f in sock_cflags() if not f.startswith("-DLB_MAP_SIZE_SOCK_REVNAT=")]
    return (
        lb + ["-DLB_MAP_SIZE_SOCK_REVNAT=64"]
        + [f"-DNAT_DIR_{d.name}={int(d)}" for d in ns_nat.NatDir]
        + [f"-DHOST_COUNTER_{c.name}={int(c)}" for c in ns_nat.HostCounter]
        + [f"-DHOST_COUNTERS={len(ns_nat.HostCounter)}"]
        + [f"-DNAT_PORT_MIN={ns_nat.NAT_PORT_MIN}", f"-DNAT_PORT_MAX={ns_nat.NAT_PORT_MAX}",
           f"-DNAT_PORT_TRIES={ns_nat.NAT_PORT_TRIES}", f"-DNS_NAT_MAP_SIZE={ns_nat.MAP_SIZE}",
           f"-DNS_REMOTE_MAP_SIZE={ns_nat.REMOTE_MAP_SIZE}",
           f"-DL2_RESPONDER_MAP_SIZE={l2_responder.MAP_SIZE}", f"-DHOST_IFACES_MAP_SIZE={host_ifaces.MAP_SIZE}"]
        + bandwidth_cflags(bandwidth_mode)
    )


class HostProgram(_BpfObject):
    """One compiled bpf_host object: ``from_netdev`` (tc ingress) and
    ``to_netdev`` (tc egress) for the node's LAN interface(s), and their maps
    (``l2_responder``, ``host_ifaces``, the north-south ``lb4_*`` copies,
    ``ns_nat``, ``ns_remote_backends``, ``bw_pods``).  ``bandwidth_mode``
    chooses how ``to_netdev`` enforces pod egress limits (lib/bandwidth.h)."""

    def __init__(self, extra_cflags: Sequence[str] = (),
                 bandwidth_mode: BandwidthMode = BandwidthMode.HTB) -> None:
        self.bandwidth_mode = BandwidthMode(bandwidth_mode)
        with BCC_LOCK:
            self._init(extra_cflags)

    def _init(self, extra_cflags: Sequence[str]) -> None:
        kernel_source = _check_kernel_source()
        bcc = _import_bcc()
        cflags = [f"-I{BPF_DIR}", *host_cflags(self.bandwidth_mode), *extra_cflags]
        try:
            self._bpf = bcc.BPF(text=bundle_source(HOST_SOURCE).encode(), cflags=cflags)
        except Exception as exc:
            raise BpfCompileError(
                f"bcc could not compile {HOST_SOURCE} ({KERNEL_SOURCE_ENV}={kernel_source}): {exc}; "
                "the compiler output is printed above on stderr"
            ) from exc
        try:
            self.from_netdev = self._bpf.load_func(FROM_NETDEV.encode(), bcc.BPF.SCHED_CLS)
            self.to_netdev = self._bpf.load_func(TO_NETDEV.encode(), bcc.BPF.SCHED_CLS)
        except Exception as exc:
            self._bpf.cleanup()
            raise BpfCompileError(
                f"the kernel refused a program of {HOST_SOURCE}: {exc}; the verifier log is printed "
                "above on stderr (bpf_redirect_neigh needs kernel >= 5.10)"
            ) from exc
        self._closed = False
