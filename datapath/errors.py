"""Errors raised by the datapath.

Hierarchy::

    DatapathError
     ├── BpfCompileError        bcc could not compile/load a BPF object
     ├── UnsupportedPolicyError  the policy needs a feature this datapath lacks
     ├── PolicyCompileError     a PolicyTable/ipcache/endpoint list is malformed
     ├── NetnsError             a network namespace could not be entered
     ├── AttachError            tc qdisc/filter setup or teardown failed
     ├── MapError               a BPF map operation failed
     ├── LBCompileError         an LBTable cannot be compiled into the lb4 maps
     ├── CgroupError            cgroup2 directory refused, or cgroup attach/detach failed
     └── SockDestroyError       sock_diag SOCK_DESTROY unavailable or failed
"""
from __future__ import annotations

from twin.model.findings import TwinError


class DatapathError(TwinError):
    """Root of every error raised by ``datapath``."""


class BpfCompileError(DatapathError):
    """bcc failed to compile or load the BPF program."""


class UnsupportedPolicyError(DatapathError, NotImplementedError):
    """The resolved policy uses something the datapath cannot enforce yet."""


class PolicyCompileError(DatapathError, ValueError):
    """Input to the map compiler is inconsistent (carries the offending item)."""


class NetnsError(DatapathError):
    """A network namespace could not be opened or entered."""


class AttachError(DatapathError):
    """Attaching or detaching a tc program failed."""


class MapError(DatapathError):
    """A BPF map update, delete or dump failed."""


class LBCompileError(DatapathError, ValueError):
    """An LBTable cannot be compiled (duplicate frontend, bad port, ids exhausted)."""


class CgroupError(DatapathError):
    """A cgroup2 directory is unusable (root cgroup, not cgroup2) or attach/detach failed."""


class SockDestroyError(DatapathError):
    """Sockets could not be destroyed with sock_diag (kernel without CONFIG_INET_DIAG_DESTROY?)."""
