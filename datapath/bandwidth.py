"""Per-pod egress bandwidth on a node's native device(s): Cilium's Bandwidth
Manager (``kubernetes.io/egress-bandwidth``) on this project's datapath.

What is limited is stated once, in :mod:`twin.semantics.bandwidth`
(``node_limits``); this module enforces a mapping pod IP -> bytes/s.

Two mechanisms, chosen per process by :func:`probe_mechanism`:

``edt-fq``  (Cilium's) the host program's egress stamps each packet of a
    limited pod with its earliest departure time (``bpf/lib/bandwidth.h``,
    ``edt_sched_departure``) and an ``fq`` root qdisc holds it until then.
    Needs ``sch_fq``.
``htb``  (for kernels without ``sch_fq``, like this machine's) a root HTB
    qdisc ``cb:`` whose ``default`` names no class, so packets the program does
    not classify take HTB's direct queue unshaped; one leaf class ``cb:<minor>``
    per limited pod with rate = ceil = its bytes/s; the host program's egress
    sets ``skb->priority`` to that class (HTB takes ``skb->priority`` when it
    names one of its classes), looked up by the packet's own source address
    before the north-south reverse NAT.  HTB counts the same wire bytes as
    Cilium's EDT (``qdisc_pkt_len``).

Either way, traffic between pods of one node never crosses the native device
and is not limited (as in Cilium).

:class:`NodeBandwidth` reconciles in place: a changed limit is a
``tc class change`` (no program reload, no qdisc recreation: a running TCP
connection keeps going); a pod that is gone loses its map entry and then its
class; class minors are allocated per pod and freed.  The root qdisc is
created only where the device's root is the kernel's default (noqueue); a
root qdisc someone else put there is an error that touches nothing.  On
close only the classes and root qdiscs this object created are removed.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from datapath.attach import open_iproute
from datapath.constants import (
    BW_MAX_MINOR, BW_QDISC_MAJOR, BW_TIME_HORIZON_NS, HTB_QUANTUM_MAX, HTB_QUANTUM_MIN, HTB_R2Q, BandwidthMode,
)
from datapath.errors import DatapathError, NetnsError
from datapath.maps.bandwidth import BwInfo
from datapath.reconcile import CachedMap, ReconcileResult, reconcile

__all__ = [
    "EDT", "HTB", "Mechanism", "probe_mechanism", "mode_of", "NodeBandwidth", "PodBandwidth", "BandwidthError",
    "ROOT_HANDLE", "classid", "class_name",
]

EDT = "edt-fq"
HTB = "htb"

#: handle of the root qdisc the bandwidth manager creates (``cb:``)
ROOT_HANDLE = BW_QDISC_MAJOR << 16
TC_H_ROOT = 0xFFFFFFFF
#: root qdisc kinds that are the kernel's default, which we may replace
DEFAULT_ROOT_KINDS = frozenset({"noqueue"})
#: largest rate a ``tc_ratespec`` holds (u32 bytes/s); beyond it HTB needs
#: TCA_HTB_RATE64, which pyroute2 0.7 does not send
HTB_MAX_RATE = 0xFFFFFFFF
ETH_HLEN = 14


class BandwidthError(DatapathError):
    """The bandwidth manager cannot program a device as asked."""


def classid(minor: int) -> int:
    return ROOT_HANDLE | minor


def class_name(cid: int) -> str:
    return f"{cid >> 16:x}:{cid & 0xFFFF:x}"


# -- the mechanism -------------------------------------------------------------------


@dataclass(frozen=True)
class Mechanism:
    """How this kernel enforces egress limits, and why."""

    name: str  # EDT ("edt-fq") or HTB ("htb")
    reason: str
    fq_available: bool

    @property
    def mode(self) -> BandwidthMode:
        return mode_of(self.name)


def mode_of(name: str) -> BandwidthMode:
    """The host program's variant (``-DBW_MODE``) for a mechanism name."""
    try:
        return {EDT: BandwidthMode.EDT, HTB: BandwidthMode.HTB}[name]
    except KeyError:
        raise BandwidthError(f"unknown bandwidth mechanism {name!r} (expected {EDT!r} or {HTB!r})") from None


_probe_lock = threading.Lock()
_probed: Mechanism | None = None
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def probe_mechanism(*, refresh: bool = False) -> Mechanism:
    """Whether this kernel has ``sch_fq`` (then Cilium's EDT), else HTB classes.

    Tried once per process (``refresh`` tries again): in a private network
    namespace that has no name and no mount (a short-lived thread unshares
    it; it disappears with the thread's last reference), a veth pair gets an
    ``fq`` root qdisc.  Nothing is created in the caller's namespace."""
    global _probed
    with _probe_lock:
        if _probed is None or refresh:
            _probed = _probe()
        return _probed


def _probe() -> Mechanism:
    result: list[Mechanism | BaseException] = []

    def run() -> None:
        try:
            # this thread only: the namespace goes away when the thread exits
            # and its netlink socket is closed
            if _libc.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"bandwidth probe: unshare(CLONE_NEWNET) failed: {os.strerror(err)} "
                                 "(needs root/CAP_SYS_ADMIN)")
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("add", ifname="bwprobe0", kind="veth", peer="bwprobe1")
                idx = ipr.link_lookup(ifname="bwprobe0")[0]
                ipr.link("set", index=idx, state="up")
                try:
                    ipr.tc("add", "fq", idx, ROOT_HANDLE)
                except Exception as exc:  # pyroute2's NetlinkError: ENOENT for an unknown kind
                    result.append(Mechanism(
                        HTB, f"sch_fq is not in this kernel (tc qdisc add fq: {_describe_exc(exc)}): "
                             "HTB per-pod classes instead of EDT", False))
                    return
                result.append(Mechanism(EDT, "sch_fq is available: Cilium's EDT (skb->tstamp) with an fq "
                                             "root qdisc", True))
        except BaseException as exc:  # reported to the caller below
            result.append(exc)

    t = threading.Thread(target=run, name="bandwidth-probe", daemon=True)
    t.start()
    t.join()
    got = result[0] if result else BandwidthError("bandwidth probe thread ended without an answer")
    if isinstance(got, BaseException):
        if isinstance(got, DatapathError):
            raise got
        raise BandwidthError(f"bandwidth probe failed: {_describe_exc(got)}") from got
    return got


def _describe_exc(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return f"{errno.errorcode.get(code, code)} {os.strerror(code)}"
    return f"{type(exc).__name__}: {exc}"


# -- per-node reconciliation ------------------------------------------------------------


@dataclass(frozen=True)
class PodBandwidth:
    """One limited pod as the kernel holds it."""

    ip: ipaddress.IPv4Address
    bytes_per_s: int  # bw_pods entry
    classid: int  # 0 under EDT
    class_rate: Mapping[str, int]  # device -> HTB class rate in bytes/s (empty under EDT)

    @property
    def rate_bps(self) -> int:
        return self.bytes_per_s * 8

    @property
    def class_name(self) -> str | None:
        return class_name(self.classid) if self.classid else None


@dataclass
class _Device:
    ifname: str
    ifindex: int
    mtu: int
    created_root: bool = False


class NodeBandwidth:
    """The bandwidth state of one node: root qdiscs and classes on its native
    devices (in its network namespace) and the host program's ``bw_pods`` map.

    ``bw_map`` is the write-through view of ``bw_pods`` of the loaded host
    program, compiled for ``mechanism`` (its ``-DBW_MODE``)."""

    def __init__(self, netns: str, mechanism: Mechanism, bw_map: CachedMap) -> None:
        self.netns = netns
        self.mechanism = mechanism
        self._map = bw_map
        self._ipr: Any = open_iproute(netns)
        self._devices: dict[str, _Device] = {}
        self._minors: dict[ipaddress.IPv4Address, int] = {}  # HTB: pod -> leaf minor
        self._rates: dict[tuple[str, int], int] = {}  # (device, minor) -> bytes/s we set
        self._lock = threading.RLock()

    def _describe(self) -> str:
        return f"bandwidth manager in netns {self.netns!r}"

    # -- reconcile -------------------------------------------------------------------

    def apply(self, limits: Mapping[ipaddress.IPv4Address | str, int], devices: Mapping[str, int]) -> ReconcileResult:
        """Make ``devices`` (name -> ifindex) enforce exactly ``limits`` (pod IP ->
        bytes/s > 0).  Devices programmed before and not listed now are cleaned."""
        desired = {ipaddress.IPv4Address(ip): int(bps) for ip, bps in limits.items()}
        for ip, bps in desired.items():
            if bps <= 0:
                raise BandwidthError(f"{self._describe()}: limit for {ip} is {bps} bytes/s; only enforced limits "
                                     "(> 0, twin.semantics.bandwidth.node_limits) are programmed")
            if self.mechanism.name == HTB and bps > HTB_MAX_RATE:
                raise BandwidthError(f"{self._describe()}: limit for {ip} is {bps} bytes/s, above what an HTB "
                                     f"class rate holds ({HTB_MAX_RATE} bytes/s; TCA_HTB_RATE64 is not sent)")
        if desired and not devices:
            raise BandwidthError(f"{self._describe()}: {len(desired)} pod limit(s) but the host program is "
                                 "attached to no native device")
        with self._lock:
            for name in sorted(set(self._devices) - set(devices)):
                self._drop_device(self._devices.pop(name))
            # every device's root first: a foreign root qdisc fails the whole
            # reconcile before anything changed
            new_devices = [n for n in devices if n not in self._devices]
            adopt = {name: self._check_root(name, devices[name]) for name in new_devices}
            for name in new_devices:
                self._devices[name] = self._add_root(name, devices[name], adopt[name])
            if self.mechanism.name == HTB:
                return self._apply_htb(desired)
            return self._apply_edt(desired)

    def _apply_edt(self, desired: dict[ipaddress.IPv4Address, int]) -> ReconcileResult:
        entries = {ip: BwInfo(bps, BW_TIME_HORIZON_NS, 0) for ip, bps in desired.items()}
        return reconcile(entries, self._map)

    def _apply_htb(self, desired: dict[ipaddress.IPv4Address, int]) -> ReconcileResult:
        gone = [ip for ip in self._minors if ip not in desired]
        used = set(self._minors.values())
        minor = 0
        for ip in sorted(desired):
            if ip in self._minors:
                continue
            minor += 1
            while minor in used:
                minor += 1
            if minor > BW_MAX_MINOR:
                raise BandwidthError(f"{self._describe()}: no free HTB class minor for {ip}")
            self._minors[ip] = minor
            used.add(minor)
        # classes before the map entries that name them; entries of gone pods
        # are removed before their classes
        result = ReconcileResult()
        for dev in self._devices.values():
            for ip, bps in desired.items():
                minor = self._minors[ip]
                have = self._rates.get((dev.ifname, minor))
                if have == bps:
                    result += ReconcileResult(unchanged=1)
                    continue
                self._set_class(dev, minor, bps, change=have is not None)
                result += ReconcileResult(added=1) if have is None else ReconcileResult(updated=1)
        entries = {ip: BwInfo(bps, BW_TIME_HORIZON_NS, classid(self._minors[ip])) for ip, bps in desired.items()}
        result += reconcile(entries, self._map)
        for ip in gone:
            minor = self._minors.pop(ip)
            for dev in self._devices.values():
                self._del_class(dev, minor)
                result += ReconcileResult(deleted=1)
        return result

    # -- tc objects --------------------------------------------------------------------

    def _root_qdisc(self, ifindex: int) -> Any | None:
        for q in self._ipr.get_qdiscs(index=ifindex):
            if q["parent"] == TC_H_ROOT:
                return q
        return None

    def _check_root(self, name: str, ifindex: int) -> bool:
        """Whether the device's root is ours already (left by an earlier agent of
        this node: handle ``cb:`` of our kind, adopted); raise if it is foreign."""
        root = self._root_qdisc(ifindex)
        if root is None:
            return False
        kind = root.get_attr("TCA_KIND")
        if kind in DEFAULT_ROOT_KINDS:
            return False
        ours = "htb" if self.mechanism.name == HTB else "fq"
        if kind == ours and root["handle"] == ROOT_HANDLE:
            return True
        raise BandwidthError(
            f"{self._describe()}: device {name!r} already has a root qdisc {kind} {class_name(root['handle'])} "
            f"that the bandwidth manager did not create; it replaces only the default root (noqueue) and "
            f"leaves this one untouched: remove it (tc qdisc del dev {name} root) or disable the bandwidth "
            "manager on this node")

    def _add_root(self, name: str, ifindex: int, adopt: bool) -> _Device:
        links = self._ipr.get_links(ifindex)
        mtu = int(links[0].get_attr("IFLA_MTU")) if links else 1500
        dev = _Device(name, ifindex, mtu)
        if adopt:
            # an earlier agent's root: its classes name pods by minors we no longer know
            for c in self._ipr.get_classes(index=ifindex):
                if c["handle"] >> 16 == BW_QDISC_MAJOR and c["handle"] & 0xFFFF:
                    self._del_class(dev, c["handle"] & 0xFFFF)
            dev.created_root = True
            return dev
        try:
            if self.mechanism.name == HTB:
                # default 0 names no class: unclassified packets take HTB's direct queue, unshaped
                self._ipr.tc("add", "htb", ifindex, ROOT_HANDLE, default=0)
            else:
                self._ipr.tc("add", "fq", ifindex, ROOT_HANDLE)
        except Exception as exc:
            raise BandwidthError(f"{self._describe()}: adding the root {self.mechanism.name} qdisc "
                                 f"{class_name(ROOT_HANDLE)} to {name!r} failed: {_describe_exc(exc)}") from exc
        dev.created_root = True
        return dev

    def _set_class(self, dev: _Device, minor: int, bps: int, *, change: bool) -> None:
        # tc's own defaults for an HTB class: burst = rate/HZ + mtu (pyroute2 computes it
        # from ``mtu``, the device's frame), quantum = rate/r2q clamped as the kernel does
        quantum = min(max(bps // HTB_R2Q, HTB_QUANTUM_MIN), HTB_QUANTUM_MAX)
        cmd = "change-class" if change else "add-class"
        try:
            self._ipr.tc(cmd, "htb", dev.ifindex, classid(minor), parent=ROOT_HANDLE, rate=bps, ceil=bps,
                         quantum=quantum, mtu=dev.mtu + ETH_HLEN)
        except Exception as exc:
            raise BandwidthError(f"{self._describe()}: tc class {'change' if change else 'add'} "
                                 f"{class_name(classid(minor))} rate {bps * 8} bit/s on {dev.ifname!r} failed: "
                                 f"{_describe_exc(exc)}") from exc
        self._rates[(dev.ifname, minor)] = bps

    def _del_class(self, dev: _Device, minor: int) -> None:
        self._rates.pop((dev.ifname, minor), None)
        try:
            self._ipr.tc("del-class", "htb", dev.ifindex, classid(minor), parent=ROOT_HANDLE)
        except Exception as exc:
            if getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT):
                return  # device or class already gone
            raise BandwidthError(f"{self._describe()}: tc class del {class_name(classid(minor))} on "
                                 f"{dev.ifname!r} failed: {_describe_exc(exc)}") from exc

    def _drop_device(self, dev: _Device) -> list[str]:
        """Remove our classes and the root qdisc we created on ``dev``."""
        errors: list[str] = []
        for (name, minor) in [k for k in self._rates if k[0] == dev.ifname]:
            try:
                self._del_class(dev, minor)
            except BandwidthError as exc:
                errors.append(str(exc))
        if dev.created_root:
            root = self._root_qdisc_or_none(dev.ifindex)
            if root is not None and root["handle"] == ROOT_HANDLE:
                try:
                    self._ipr.tc("del", root.get_attr("TCA_KIND"), dev.ifindex, ROOT_HANDLE, parent=TC_H_ROOT)
                except Exception as exc:
                    if getattr(exc, "code", None) not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                        errors.append(f"root qdisc on {dev.ifname!r}: {_describe_exc(exc)}")
            dev.created_root = False
        return errors

    def _root_qdisc_or_none(self, ifindex: int) -> Any | None:
        try:
            return self._root_qdisc(ifindex)
        except Exception as exc:
            if getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    # -- read back ------------------------------------------------------------------------

    def limits(self, live_map: Mapping[ipaddress.IPv4Address, BwInfo]) -> dict[ipaddress.IPv4Address, PodBandwidth]:
        """Pod IP -> its limit as the kernel holds it: the ``bw_pods`` entry
        (``live_map``, read from the kernel by the caller) and, under HTB, the
        rate of its class on each device (read now with ``tc class show``)."""
        with self._lock:
            rates: dict[int, dict[str, int]] = {}
            if self.mechanism.name == HTB:
                for dev in self._devices.values():
                    for c in self._ipr.get_classes(index=dev.ifindex):
                        if c["handle"] >> 16 != BW_QDISC_MAJOR:
                            continue
                        opts = c.get_attr("TCA_OPTIONS")
                        parms = opts.get_attr("TCA_HTB_PARMS") if opts is not None else None
                        if parms is not None:
                            rates.setdefault(c["handle"], {})[dev.ifname] = int(parms["rate"])
            return {ip: PodBandwidth(ip, info.bytes_per_s, info.classid, rates.get(info.classid, {}))
                    for ip, info in sorted(live_map.items())}

    def class_handles(self) -> dict[str, set[int]]:
        """Device -> the classids of the bandwidth manager's classes there (kernel)."""
        with self._lock:
            return {dev.ifname: {int(c["handle"]) for c in self._ipr.get_classes(index=dev.ifindex)
                                 if c["handle"] >> 16 == BW_QDISC_MAJOR}
                    for dev in self._devices.values()}

    @property
    def devices(self) -> list[str]:
        return sorted(self._devices)

    # -- close -----------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove the classes and root qdiscs this object created; errors as text."""
        errors: list[str] = []
        with self._lock:
            for dev in list(self._devices.values()):
                errors += self._drop_device(dev)
            self._devices.clear()
            self._minors.clear()
            self._rates.clear()
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
        return errors
