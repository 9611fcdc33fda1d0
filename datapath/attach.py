"""tc attach/detach of the lxc programs (and the host program on the node's LAN
interface) inside a node's network namespace.

pyroute2 0.7.2's ``IPRoute`` has no reliable in-process netns argument, so
:func:`open_iproute` enters the namespace with setns(2) in the calling
thread only, creates the netlink socket there (it stays bound to that
namespace), and returns to the original namespace.
"""
from __future__ import annotations

import ctypes
import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from datapath.errors import AttachError, NetnsError

__all__ = [
    "NetnsRef",
    "netns_path",
    "entered_netns",
    "open_iproute",
    "LxcAttachment",
    "TcAttacher",
    "TC_INGRESS_PARENT",
    "TC_EGRESS_PARENT",
    "FILTER_PRIO",
    "FILTER_HANDLE",
    "HOST_FILTER_PRIO",
]

NetnsRef = Union[str, "os.PathLike[str]"]

CLONE_NEWNET = 0x40000000
TC_INGRESS_PARENT = 0xFFFFFFF2  # clsact ingress: from the pod (from_container)
TC_EGRESS_PARENT = 0xFFFFFFF3  # clsact egress: to the pod (to_container)
#: Our filters' priority and handle; detach removes exactly these.
FILTER_PRIO = 0xC1
FILTER_HANDLE = 0x1
#: The host program's filters on the LAN interface (bpf_host.c) have their own priority.
HOST_FILTER_PRIO = 0xC2
_ETH_P_ALL = 0x0003

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: NetnsRef) -> Path:
    """A netns given as a path (``/proc/PID/ns/net``) or a name in ``/run/netns``."""
    text = os.fspath(netns)
    path = Path(text) if "/" in text else Path("/run/netns") / text
    if not path.exists():
        raise NetnsError(
            f"network namespace {text!r} not found at {path}; create it "
            "(ip netns add NAME) or pass /proc/PID/ns/net of a process inside it"
        )
    return path


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns({what}) failed: {os.strerror(err)} (needs root/CAP_SYS_ADMIN)")


@contextmanager
def entered_netns(netns: NetnsRef) -> Iterator[None]:
    """Run the body with the current thread inside ``netns``."""
    path = netns_path(netns)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target, str(path))
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original, "original namespace")
    finally:
        os.close(original)


def open_iproute(netns: NetnsRef) -> Any:
    """A pyroute2 ``IPRoute`` whose socket lives in ``netns``."""
    from pyroute2 import IPRoute

    with entered_netns(netns):
        return IPRoute()


@dataclass
class LxcAttachment:
    """What we attached to one lxc device, so detach can undo exactly that."""

    ifname: str
    ifindex: int
    created_clsact: bool
    parents: tuple[int, ...] = ()
    prio: int = FILTER_PRIO


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


class TcAttacher:
    """Attach/detach the lxc programs on devices of one network namespace."""

    def __init__(self, netns: NetnsRef) -> None:
        self.netns = os.fspath(netns)
        self._ipr = open_iproute(netns)

    def ifindex(self, ifname: str) -> int:
        idx = self._ipr.link_lookup(ifname=ifname)
        if not idx:
            raise AttachError(f"device {ifname!r} not found in netns {self.netns!r}")
        return int(idx[0])

    def _has_clsact(self, ifindex: int) -> bool:
        return any(_attr(q, "TCA_KIND") == "clsact" for q in self._ipr.get_qdiscs(index=ifindex))

    def ifname(self, ifindex: int) -> str | None:
        """The name of device ``ifindex`` (None if there is none)."""
        links = self._ipr.get_links(ifindex) if ifindex > 0 else []
        return str(_attr(links[0], "IFLA_IFNAME")) if links else None

    def mac(self, ifname: str) -> str:
        """The MAC address of ``ifname``."""
        links = self._ipr.get_links(self.ifindex(ifname))
        mac = _attr(links[0], "IFLA_ADDRESS") if links else None
        if not mac:
            raise AttachError(f"device {ifname!r} in netns {self.netns!r} has no MAC address")
        return str(mac)

    def _our_filter_present(self, ifindex: int, parent: int, prio: int = FILTER_PRIO) -> bool:
        for f in self._ipr.get_filters(index=ifindex, parent=parent):
            if (f["info"] >> 16) == prio and f["handle"] == FILTER_HANDLE:
                return True
        return False

    def attach(
        self, ifname: str, *, from_container: Any, to_container: Any, prio: int = FILTER_PRIO
    ) -> LxcAttachment:
        """Attach ``from_container`` (tc ingress) and ``to_container`` (tc egress).

        The two arguments are bcc functions (``.fd`` and ``.name``).  clsact is
        created only if absent.  On failure, whatever was added is removed.
        ``prio`` tells our filters apart (lxc programs: FILTER_PRIO, the host
        program: HOST_FILTER_PRIO); detach removes only those.
        """
        ifindex = self.ifindex(ifname)
        att = LxcAttachment(ifname, ifindex, created_clsact=False, prio=prio)
        try:
            if not self._has_clsact(ifindex):
                self._ipr.tc("add", "clsact", ifindex)
                att.created_clsact = True
            for parent, fn in ((TC_INGRESS_PARENT, from_container), (TC_EGRESS_PARENT, to_container)):
                if self._our_filter_present(ifindex, parent, prio):
                    raise AttachError(
                        f"{ifname} in netns {self.netns!r} already has a tc filter at prio "
                        f"{prio:#x} handle {FILTER_HANDLE} (parent {parent:#x}); a previous "
                        "run left it behind: delete it or recreate the namespace"
                    )
                self._ipr.tc(
                    "add-filter", "bpf", ifindex, FILTER_HANDLE, fd=fn.fd,
                    name=_name(fn), parent=parent, classid=1, direct_action=True,
                    prio=prio, protocol=_ETH_P_ALL,
                )
                att.parents += (parent,)
        except AttachError:
            self.detach(att)
            raise
        except Exception as exc:
            self.detach(att)
            raise AttachError(f"attaching tc programs to {ifname} in netns {self.netns!r} failed: {exc}") from exc
        return att

    def _other_filters(self, ifindex: int) -> bool:
        """Whether anyone's filters are left on the device's clsact (gone device: no)."""
        try:
            return any(f for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT)
                       for f in self._ipr.get_filters(index=ifindex, parent=parent))
        except Exception as exc:
            if _gone(exc):
                return False
            raise

    def detach(self, att: LxcAttachment) -> None:
        """Remove our filters, and clsact if we created it and nobody else's
        filter has been added to it since. Gone devices are fine."""
        errors: list[str] = []
        for parent in att.parents:
            try:
                self._ipr.tc(
                    "del-filter", "bpf", att.ifindex, FILTER_HANDLE, parent=parent,
                    prio=att.prio, protocol=_ETH_P_ALL,
                )
            except Exception as exc:
                if not _gone(exc):
                    errors.append(f"filter parent {parent:#x}: {exc}")
        att.parents = ()
        if att.created_clsact and not errors and not self._other_filters(att.ifindex):
            try:
                self._ipr.tc("del", "clsact", att.ifindex)
            except Exception as exc:
                if not _gone(exc):
                    errors.append(f"clsact: {exc}")
            att.created_clsact = False
        if errors:
            raise AttachError(
                f"detaching from {att.ifname} in netns {self.netns!r} left state behind: "
                + "; ".join(errors)
            )

    def close(self) -> None:
        self._ipr.close()


def _name(fn: Any) -> str:
    name = fn.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _gone(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    return code in (errno.ENODEV, errno.ENOENT, errno.EINVAL)
