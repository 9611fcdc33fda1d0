"""Gratuitous ARP from inside a node's network namespace.

    send_garp("/run/netns/twn-ab12-k8s-w1", "ens5", IPv4Address("10.10.200.1"))

One Ethernet broadcast frame carrying an ARP request whose sender and target
IP are both ``ip`` and whose sender MAC is the interface's MAC (the form
Linux and Cilium send; receivers with ``arp_accept`` update or create their
neighbour entry).  It is written to an AF_PACKET socket opened in a
short-lived thread that enters the namespace with setns(2) (setns moves only
the calling thread), so the caller's thread never changes namespace.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading

from datapath.attach import NetnsRef, entered_netns
from datapath.errors import DatapathError

__all__ = ["GarpError", "garp_frame", "send_garp"]

ETH_P_ARP = 0x0806
_BROADCAST = b"\xff" * 6
_ARPHRD_ETHER = 1
_ARPOP_REQUEST = 1


class GarpError(DatapathError):
    """A gratuitous ARP could not be sent."""


def garp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """The Ethernet frame of a gratuitous ARP request for ``ip`` from ``mac``."""
    if len(mac) != 6:
        raise GarpError(f"a MAC address has 6 bytes, got {mac.hex(':')!r}")
    ip_b = ipaddress.IPv4Address(ip).packed
    eth = _BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", _ARPHRD_ETHER, 0x0800, 6, 4, _ARPOP_REQUEST) + mac + ip_b + b"\x00" * 6 + ip_b
    return eth + arp


def send_garp(netns_path: NetnsRef, ifname: str, ip: ipaddress.IPv4Address | str) -> None:
    """Send one gratuitous ARP for ``ip`` out of ``ifname`` in ``netns_path``."""
    ip = ipaddress.IPv4Address(ip)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with entered_netns(netns_path):
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
                    s.bind((ifname, ETH_P_ARP))
                    mac = s.getsockname()[4]
                    s.send(garp_frame(bytes(mac), ip))
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)

    t = threading.Thread(target=run, name=f"garp-{ifname}", daemon=True)
    t.start()
    t.join(timeout=10)
    if t.is_alive():
        raise GarpError(f"gratuitous ARP for {ip} on {ifname} in {os.fspath(netns_path)}: no answer from the "
                        "sending thread within 10 s")
    if failure:
        exc = failure[0]
        raise GarpError(f"gratuitous ARP for {ip} on {ifname} in {os.fspath(netns_path)} failed: {exc}") from exc
