"""Terminate connected UDP sockets to a removed backend (sock_diag SOCK_DESTROY).

Cilium's agent destroys connected UDP sockets whose destination is a deleted
backend (socket termination, on by default), so the application sees an
error and reconnects through the socket LB instead of talking to a dead
backend forever.  This is the same kernel mechanism (what ``ss -K`` uses):
dump the namespace's UDP sockets over NETLINK_SOCK_DIAG, and send
SOCK_DESTROY for each one connected to the backend.  The kernel then fails
the socket's pending and next operations with ECONNABORTED.

Needs ``CONFIG_INET_DIAG_DESTROY`` (and ``CONFIG_INET_UDP_DIAG``); without
it the kernel answers EOPNOTSUPP and :class:`SockDestroyError` says so.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct

from datapath.attach import NetnsRef, entered_netns
from datapath.errors import SockDestroyError

__all__ = ["destroy_udp_sockets_to", "udp_sockets_to"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_SOCK_DESTROY = 21
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_ALL_STATES = 0xFFFFFFFF
_NLMSG_HDR = struct.Struct("=IHHII")


class _SockId(ctypes.Structure):
    """``struct inet_diag_sockid`` (ports and addresses in network order)."""

    _fields_ = [
        ("sport_be", ctypes.c_uint16),
        ("dport_be", ctypes.c_uint16),
        ("src_be", ctypes.c_uint32 * 4),
        ("dst_be", ctypes.c_uint32 * 4),
        ("ifindex", ctypes.c_uint32),
        ("cookie", ctypes.c_uint32 * 2),
    ]


class _ReqV2(ctypes.Structure):
    """``struct inet_diag_req_v2``."""

    _fields_ = [
        ("family", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("ext", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("states", ctypes.c_uint32),
        ("id", _SockId),
    ]


class _DiagMsg(ctypes.Structure):
    """``struct inet_diag_msg`` (the head of each dump reply)."""

    _fields_ = [
        ("family", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("timer", ctypes.c_uint8),
        ("retrans", ctypes.c_uint8),
        ("id", _SockId),
        ("expires", ctypes.c_uint32),
        ("rqueue", ctypes.c_uint32),
        ("wqueue", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("inode", ctypes.c_uint32),
    ]


def _addr(raw: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(raw).to_bytes(4, "little"))


def _send(sock: socket.socket, msg_type: int, flags: int, seq: int, payload: bytes) -> None:
    sock.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(payload), msg_type, flags, seq, 0) + payload)


def _messages(sock: socket.socket, seq: int):
    """Yield (type, payload) for replies to ``seq`` until DONE or an ACK/error."""
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + _NLMSG_HDR.size <= len(data):
            length, mtype, _flags, mseq, _pid = _NLMSG_HDR.unpack_from(data, off)
            payload = data[off + _NLMSG_HDR.size: off + length]
            off += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == _NLMSG_DONE:
                return
            yield mtype, payload
            if mtype == _NLMSG_ERROR:
                return


def _dump_udp(sock: socket.socket) -> list[_DiagMsg]:
    req = _ReqV2(family=socket.AF_INET, protocol=socket.IPPROTO_UDP, states=_ALL_STATES)
    _send(sock, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, bytes(req))
    out = []
    for mtype, payload in _messages(sock, 1):
        if mtype == _NLMSG_ERROR:
            err = -struct.unpack_from("=i", payload)[0]
            if err:
                raise SockDestroyError(f"sock_diag dump of UDP sockets failed: {os.strerror(err)} "
                                       "(kernel without CONFIG_INET_UDP_DIAG?)")
            continue
        out.append(_DiagMsg.from_buffer_copy(payload[: ctypes.sizeof(_DiagMsg)]))
    return out


def _matching(msgs: list[_DiagMsg], ip: ipaddress.IPv4Address, port: int) -> list[_DiagMsg]:
    return [m for m in msgs if _addr(m.id.dst_be[0]) == ip and socket.ntohs(m.id.dport_be) == port]


def udp_sockets_to(netns: NetnsRef, backend_ip: ipaddress.IPv4Address | str, backend_port: int) -> int:
    """How many UDP sockets in ``netns`` are connected to ``backend_ip:backend_port``."""
    ip = ipaddress.IPv4Address(backend_ip)
    with entered_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    with sock:
        return len(_matching(_dump_udp(sock), ip, backend_port))


def destroy_udp_sockets_to(netns: NetnsRef, backend_ip: ipaddress.IPv4Address | str,
                           backend_port: int) -> int:
    """Destroy every UDP socket in ``netns`` connected to ``backend_ip:backend_port``.

    Returns how many were destroyed (sockets that vanished meanwhile are not
    counted).  Raises :class:`SockDestroyError` if the kernel cannot destroy
    sockets (no CONFIG_INET_DIAG_DESTROY: EOPNOTSUPP) or refuses (EPERM).
    """
    ip = ipaddress.IPv4Address(backend_ip)
    with entered_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    destroyed = 0
    with sock:
        for i, msg in enumerate(_matching(_dump_udp(sock), ip, backend_port), start=2):
            req = _ReqV2(family=socket.AF_INET, protocol=socket.IPPROTO_UDP, states=_ALL_STATES,
                         id=msg.id)
            _send(sock, _SOCK_DESTROY, _NLM_F_REQUEST | _NLM_F_ACK, i, bytes(req))
            for mtype, payload in _messages(sock, i):
                if mtype != _NLMSG_ERROR:
                    continue
                err = -struct.unpack_from("=i", payload)[0]
                if err == 0:
                    destroyed += 1
                elif err == errno.ENOENT:
                    pass  # closed meanwhile
                elif err == errno.EOPNOTSUPP:
                    raise SockDestroyError(
                        "the kernel cannot destroy sockets (SOCK_DESTROY: EOPNOTSUPP): it was built "
                        "without CONFIG_INET_DIAG_DESTROY, so connected UDP sockets to removed "
                        f"backends ({ip}:{backend_port}) cannot be terminated"
                    )
                else:
                    raise SockDestroyError(
                        f"SOCK_DESTROY of UDP socket to {ip}:{backend_port} in netns {os.fspath(netns)!r} "
                        f"failed: {os.strerror(err)}"
                    )
    return destroyed
