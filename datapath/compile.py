"""Pure compilers: resolved semantics -> desired BPF map contents (no kernel).

* :func:`compile_policy`    PolicyTable -> {PolicyKey: PolicyValue}
* :func:`compile_ipcache`   {IPv4Network: identity} -> ipcache entries
* :func:`compile_endpoints` local endpoints -> {ifindex: EndpointValue}
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

from twin.model.enums import Direction, DropReason, MapVerdict, Protocol
from twin.semantics.tables import L4Entry, PolicyTable

from datapath.errors import PolicyCompileError, UnsupportedPolicyError
from datapath.maps.endpoints import EndpointValue
from datapath.maps.policy import PolicyKey, PolicyValue

__all__ = [
    "LocalEndpoint",
    "port_range_prefixes",
    "compile_policy",
    "compile_ipcache",
    "compile_endpoints",
    "policy_dump_lines",
]

_U32_MAX = 0xFFFFFFFF
_PORT_MAX = 0xFFFF


@dataclass(frozen=True, order=True)
class LocalEndpoint:
    """A pod on this node: its lxc ifindex (in the node netns), identity and IP."""

    ifindex: int
    identity: int
    ip: ipaddress.IPv4Address


def port_range_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """Minimal list of (port, prefix_bits) whose union is exactly ``lo..hi``.

    ``prefix_bits`` is 0..16; 0 means every port.
    """
    if not 0 <= lo <= hi <= _PORT_MAX:
        raise PolicyCompileError(f"invalid port range {lo}..{hi}: need 0 <= lo <= hi <= 65535")
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 17 - size.bit_length()))
        lo += size
    return out


def _value_for(entry: L4Entry, where: str) -> PolicyValue:
    verdict = MapVerdict(entry.verdict)
    if verdict == MapVerdict.REDIRECT_L7:
        raise UnsupportedPolicyError(
            f"{where}: entry {entry} redirects to the L7 proxy, which this datapath "
            "does not support yet; drop L7 rules from the scenario or run it on the twin only"
        )
    if verdict == MapVerdict.DENY:
        reason = entry.drop_reason or DropReason.POLICY_DENY
        return PolicyValue(verdict, int(reason), entry.rule_ref)
    return PolicyValue(verdict, 0, entry.rule_ref)


def _keys_for(entry: L4Entry, ep: int, direction: Direction, peer: int, where: str) -> list[PolicyKey]:
    if entry.protocol == Protocol.ANY:
        if (entry.port_lo, entry.port_hi) != (0, _PORT_MAX):
            raise PolicyCompileError(
                f"{where}: entry {entry} has protocol ANY with ports "
                f"{entry.port_lo}..{entry.port_hi}; ANY must cover 0..65535"
            )
        return [PolicyKey.peer_all(ep, direction, peer)]
    try:
        prefixes = port_range_prefixes(entry.port_lo, entry.port_hi)
    except PolicyCompileError as exc:
        raise PolicyCompileError(f"{where}: entry {entry}: {exc}") from exc
    return [
        PolicyKey.port_prefix(ep, direction, peer, int(entry.protocol), port, bits)
        for port, bits in prefixes
    ]


def compile_policy(
    table: PolicyTable, *, endpoint_identities: Iterable[int] = ()
) -> dict[PolicyKey, PolicyValue]:
    """Desired policy map entries for ``table``.

    An unenforced direction becomes one allow-all (64-bit) entry.  An
    enforced direction contributes its entries only; everything else misses
    and is dropped as POLICY_DENIED.  Identities in ``endpoint_identities``
    with no DirectionTable for a direction get allow-all for it (no policy
    selects them: Cilium's default).  REDIRECT_L7 raises UnsupportedPolicyError.
    """
    out: dict[PolicyKey, PolicyValue] = {}
    seen: set[tuple[int, Direction]] = set()

    def put(key: PolicyKey, value: PolicyValue, where: str) -> None:
        old = out.get(key)
        if old is not None and old != value:
            raise PolicyCompileError(
                f"{where}: overlapping entries give key {key} both {old} and {value}; "
                "PolicyTable entries must not overlap"
            )
        out[key] = value

    for d in table.directions:
        direction = Direction(d.direction)
        where = f"policy for identity {d.ep_identity} {direction.name}"
        if not 0 <= d.ep_identity <= _U32_MAX:
            raise PolicyCompileError(f"{where}: identity out of u32 range")
        if (d.ep_identity, direction) in seen:
            raise PolicyCompileError(f"{where}: appears twice in the PolicyTable")
        seen.add((d.ep_identity, direction))
        if not d.enforced:
            put(PolicyKey.direction_all(d.ep_identity, direction), PolicyValue(MapVerdict.ALLOW), where)
            continue
        for peer, entries in sorted(d.peers.items()):
            if not 0 <= peer <= _U32_MAX:
                raise PolicyCompileError(f"{where}: peer identity {peer} out of u32 range")
            for entry in entries:
                value = _value_for(entry, f"{where} peer {peer}")
                for key in _keys_for(entry, d.ep_identity, direction, peer, f"{where} peer {peer}"):
                    put(key, value, f"{where} peer {peer}")

    for ep in sorted(set(endpoint_identities)):
        for direction in Direction:
            if (ep, direction) not in seen:
                out[PolicyKey.direction_all(ep, direction)] = PolicyValue(MapVerdict.ALLOW)
    return out


def compile_ipcache(
    prefixes: Mapping[ipaddress.IPv4Network | str, int]
) -> dict[ipaddress.IPv4Network, int]:
    """Validated ipcache entries (IPv4 networks with host bits clear)."""
    out: dict[ipaddress.IPv4Network, int] = {}
    for raw, identity in prefixes.items():
        try:
            net = ipaddress.IPv4Network(raw)
        except ValueError as exc:
            raise PolicyCompileError(f"ipcache prefix {raw!r} is not an IPv4 network: {exc}") from exc
        if not 0 <= identity <= _U32_MAX:
            raise PolicyCompileError(f"ipcache prefix {net}: identity {identity} out of u32 range")
        if net in out and out[net] != identity:
            raise PolicyCompileError(f"ipcache prefix {net} given twice: {out[net]} and {identity}")
        out[net] = int(identity)
    return out


def compile_endpoints(endpoints: Iterable[LocalEndpoint]) -> dict[int, EndpointValue]:
    """Endpoints map entries keyed by lxc ifindex."""
    out: dict[int, EndpointValue] = {}
    for ep in endpoints:
        if ep.ifindex <= 0:
            raise PolicyCompileError(f"endpoint {ep}: ifindex must be positive")
        if ep.ifindex in out:
            raise PolicyCompileError(f"endpoint {ep}: ifindex {ep.ifindex} used twice")
        out[ep.ifindex] = EndpointValue(int(ep.identity), ipaddress.IPv4Address(ep.ip))
    return out


def policy_dump_lines(entries: Mapping[PolicyKey, PolicyValue]) -> list[str]:
    """Sorted one-line-per-entry text of policy entries (for golden files)."""
    lines = []
    for k, v in sorted(entries.items()):
        sel = f"ep={k.ep_identity} {k.direction.name.lower()}"
        if k.prefixlen >= 96:
            sel += f" peer={k.peer_identity}"
        if k.prefixlen >= 112:
            sel += f" proto={k.protocol} port={k.port}/{k.prefixlen - 112}"
        tail = f" reason={v.drop_reason}" if v.drop_reason else ""
        lines.append(f"/{k.prefixlen} {sel} -> {v.verdict.name}{tail} rule={v.rule_ref}")
    return lines
