"""Enumerations shared by every layer, and by the BPF programs.

This module is the single source for numeric constants that cross the
user-space / kernel boundary (drop reasons, reserved identities, directions,
verdict codes).  The datapath passes them to the BPF compiler as ``-D``
flags (see ``datapath.loader.bpf_cflags``); nothing is duplicated in C.
"""
from __future__ import annotations

import enum


class Direction(enum.IntEnum):
    """Traffic direction as seen by the selected endpoint (Cilium numbering)."""

    INGRESS = 0
    EGRESS = 1


class Verdict(str, enum.Enum):
    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"


class MapVerdict(enum.IntEnum):
    """Verdict codes stored in the BPF policy map values."""

    ALLOW = 1
    DENY = 2
    REDIRECT_L7 = 3


class DropReason(enum.IntEnum):
    """Drop reasons; numbers follow Cilium's ``bpf/lib/common.h`` / monitor API."""

    NONE = 0
    POLICY_DENIED = 133  # "Policy denied": no allow matched in an enforced direction
    POLICY_DENY = 181  # "Policy denied by denylist": an explicit deny rule matched
    PROXY_UNSUPPORTED = 180  # "Proxy redirection not supported": an L7 entry on a datapath without a proxy
    L7_DENIED = 199  # not a datapath code: HTTP 403 from the L7 proxy (twin-side record)

    @property
    def text(self) -> str:
        return _DROP_TEXT[self]


_DROP_TEXT = {
    DropReason.NONE: "",
    DropReason.POLICY_DENIED: "Policy denied",
    DropReason.POLICY_DENY: "Policy denied by denylist",
    DropReason.PROXY_UNSUPPORTED: "Proxy redirection not supported",
    DropReason.L7_DENIED: "L7 policy denied (HTTP 403)",
}


class ReservedIdentity(enum.IntEnum):
    """Cilium's reserved numeric identities (pkg/identity/numericidentity.go)."""

    UNKNOWN = 0
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7
    INGRESS = 8


#: First identity handed out to label sets of pods (cluster-local range).
FIRST_POD_IDENTITY = 256


class Protocol(enum.IntEnum):
    """IP protocol numbers used in policy keys; ANY means every protocol."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    SCTP = 132


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
