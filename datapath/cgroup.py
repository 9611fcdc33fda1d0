"""Attach/detach the socket-LB programs on a cgroup2 directory.

Only a directory *below* a cgroup2 mount is accepted: the root cgroup (the
mount point itself, e.g. ``/sys/fs/cgroup/unified``) is refused, since every
process of the machine would be load-balanced.  Programs are attached with
``BPF_F_ALLOW_MULTI`` so they coexist with anyone else's, and detached by
program fd, so :meth:`CgroupAttacher.detach` removes exactly what we added.

The bpf(2) calls (``BPF_PROG_ATTACH``/``DETACH``/``QUERY``,
``BPF_OBJ_GET_INFO_BY_FD``) are made through ctypes.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from datapath.errors import CgroupError
from datapath.loader import SOCK_HOOKS, SockHook, SockProgram

__all__ = [
    "cgroup2_mounts", "check_cgroup_dir", "CgroupAttachment", "CgroupAttacher",
    "query_prog_ids", "prog_id", "BPF_F_ALLOW_MULTI",
]

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_PROG_QUERY = 16
BPF_F_ALLOW_MULTI = 1 << 1
_QUERY_MAX = 64

_libc = ctypes.CDLL(None, use_errno=True)


class _AttachAttr(ctypes.Structure):
    """``union bpf_attr`` for BPF_PROG_ATTACH/DETACH (the fields we use)."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


class _QueryAttr(ctypes.Structure):
    """``union bpf_attr`` for BPF_PROG_QUERY (up to prog_cnt)."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _ProgInfoHead(ctypes.Structure):
    """The first fields of ``struct bpf_prog_info``."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise CgroupError(f"bpf(2) syscall number unknown for {platform.machine()}")
    res = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if res < 0:
        err = ctypes.get_errno()
        raise CgroupError(f"{what}: {os.strerror(err)}", ) from OSError(err, os.strerror(err))
    return int(res)


def cgroup2_mounts() -> list[Path]:
    """Mount points of cgroup2 file systems (from /proc/self/mountinfo)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split(" ", 1)[0] == "cgroup2":
            out.append(Path(pre.split(" ")[4].replace("\\040", " ")))
    return out


def check_cgroup_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, if it is a non-root cgroup2 directory; else :class:`CgroupError`."""
    p = Path(path).resolve()
    mounts = cgroup2_mounts()
    if not mounts:
        raise CgroupError("no cgroup2 file system is mounted (expected /sys/fs/cgroup/unified or /sys/fs/cgroup)")
    for m in mounts:
        if p == m.resolve():
            raise CgroupError(
                f"refusing to attach socket-LB programs to the root cgroup {p}: every process "
                "of the machine would be load-balanced; create a child directory "
                f"(mkdir {p}/twt-NAME) and move the node's processes there"
            )
    if not any(m.resolve() in p.parents for m in mounts):
        raise CgroupError(f"{p} is not inside a cgroup2 mount ({', '.join(map(str, mounts))})")
    if not p.is_dir():
        raise CgroupError(f"cgroup directory {p} does not exist: create it with mkdir first")
    return p


def prog_id(prog_fd: int) -> int:
    """The kernel id of the program behind ``prog_fd``."""
    info = _ProgInfoHead()
    attr = _InfoAttr(bpf_fd=prog_fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr, f"BPF_OBJ_GET_INFO_BY_FD({prog_fd})")
    return int(info.id)


def query_prog_ids(path: str | os.PathLike[str], attach_type: int) -> list[int]:
    """Ids of the programs attached *directly* to cgroup ``path`` at ``attach_type``."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * _QUERY_MAX)()
        attr = _QueryAttr(target_fd=fd, attach_type=attach_type, prog_ids=ctypes.addressof(ids),
                          prog_cnt=_QUERY_MAX)
        _bpf(_BPF_PROG_QUERY, attr, f"BPF_PROG_QUERY({path}, type {attach_type})")
        return [int(ids[i]) for i in range(min(attr.prog_cnt, _QUERY_MAX))]
    finally:
        os.close(fd)


@dataclass
class CgroupAttachment:
    """What we attached to one cgroup, so detach can undo exactly that."""

    path: Path
    fd: int
    hooks: list[tuple[SockHook, int]] = field(default_factory=list)  # (hook, prog fd)

    @property
    def attached(self) -> bool:
        return bool(self.hooks)


class CgroupAttacher:
    """Attach/detach a :class:`SockProgram`'s four programs on cgroup2 directories."""

    def attach(self, path: str | os.PathLike[str], program: SockProgram,
               hooks: Iterable[SockHook] = SOCK_HOOKS) -> CgroupAttachment:
        """Attach every hook to ``path``; on failure, detach what was attached."""
        p = check_cgroup_dir(path)
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        att = CgroupAttachment(p, fd)
        try:
            for hook in hooks:
                prog_fd = program.functions[hook].fd
                attr = _AttachAttr(target_fd=fd, attach_bpf_fd=prog_fd, attach_type=hook.attach_type,
                                   attach_flags=BPF_F_ALLOW_MULTI)
                _bpf(_BPF_PROG_ATTACH, attr, f"attaching {hook.name} to cgroup {p}")
                att.hooks.append((hook, prog_fd))
        except BaseException:
            try:
                self.detach(att)
            except CgroupError:
                pass
            raise
        return att

    def detach(self, att: CgroupAttachment) -> None:
        """Detach our programs (by fd) and close the cgroup fd. Safe to repeat."""
        errors: list[str] = []
        for hook, prog_fd in att.hooks:
            attr = _AttachAttr(target_fd=att.fd, attach_bpf_fd=prog_fd, attach_type=hook.attach_type)
            try:
                _bpf(_BPF_PROG_DETACH, attr, f"detaching {hook.name} from cgroup {att.path}")
            except CgroupError as exc:
                cause: Any = exc.__cause__
                if getattr(cause, "errno", None) not in (errno.ENOENT,):
                    errors.append(str(exc))
        att.hooks = []
        if att.fd >= 0:
            os.close(att.fd)
            att.fd = -1
        if errors:
            raise CgroupError("; ".join(errors))
