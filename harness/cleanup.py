"""What a real run created, on disk, so a crashed run can be cleaned up later.

Every :class:`~harness.topology.RealTopology` writes ``/run/twin/<run>.json``
before it creates anything and updates it as it goes::

    {"run_id": "3fa9c", "owner_pid": 4242, "owner_start": 123456,
     "pids":   [{"pid": 4250, "start": 123470, "cmdline": "bash --norc ... mininet:twn3fa9c-lan"}],
     "mounts": ["/run/netns/twn-3fa9c-lan", ...],
     "links":  [],          # links created in the root namespace (normally none)
     "cgroups": ["/sys/fs/cgroup/unified/twn-3fa9c"],
     "dirs":   ["/tmp/run-x/etcd-3fa9c-k2j1"]}   # temporary directories (etcd's data)

A recorded directory is removed only if it still holds the marker file
``.twin-run-<run>`` written into it when it was recorded (:func:`make_run_dir`),
so a path reused by someone else is never deleted.

A run is *live* while its owner process exists (same pid and start time).
:func:`cleanup_leftovers` removes what dead runs left behind: it kills a
recorded pid only if that process still exists with the recorded start time
and command line, unmounts the run's ``/run/netns/twn-<run>-*`` bind mounts
(and orphan ``twn-*`` ones no live run claims), and deletes root-namespace
links named ``twn<run>…`` of dead runs.  Namespaces disappear by themselves
once no mount and no process holds them.

Teardown survives repeated signals: while a run is open only the first Ctrl-C
interrupts (:func:`stop_on_first_ctrl_c`; later ones wait for the teardown),
and :func:`signals_deferred` holds SIGINT and SIGTERM back while a run
removes its objects and delivers them afterwards.
:func:`after_interrupt` (the CLI's Ctrl-C path) finishes every teardown this
process still owes and reports, from :func:`leftovers`, what is truly left.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import HarnessError

__all__ = [
    "STATE_DIR", "NETNS_DIR", "NETNS_PREFIX", "LINK_PREFIX", "RunState", "cleanup_leftovers",
    "proc_start_time", "proc_cmdline", "pid_matches", "live_run_ids", "CGROUP_ROOT", "CGROUP_PREFIX",
    "remove_cgroup_tree", "signals_deferred", "register_teardown", "unregister_teardown", "finish_teardown",
    "leftovers", "after_interrupt", "own_run_ids", "set_signal_handler", "latch_ctrl_c", "unlatch_ctrl_c",
    "stop_on_first_ctrl_c", "make_run_dir", "remove_run_dir", "RUN_DIR_MARKER",
]

STATE_DIR = Path("/run/twin")
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "twn-"  # /run/netns/twn-<run>-<name>
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")  # cgroup2 (hybrid layout: ../shared/docs/design.md)
CGROUP_PREFIX = "twn-"  # /sys/fs/cgroup/unified/twn-<run>/<node>
LINK_PREFIX = "twn"  # twn<run><suffix>, at most 15 characters
_RUN_ID = re.compile(r"^[0-9a-z]{1,8}$")
RUN_DIR_MARKER = ".twin-run-"  # + run id: a file in every temporary directory a run records


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def proc_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def pid_matches(entry: dict) -> bool:
    """Is the process recorded in ``entry`` still the same, running process?"""
    pid = int(entry["pid"])
    start = proc_start_time(pid)
    if start is None:
        return False
    if entry.get("start") is not None and start != entry["start"]:
        return False  # pid reused by someone else
    cmd = proc_cmdline(pid)
    want = entry.get("cmdline")
    # the recorded command may still sit behind its launcher (mnexec / sh) when we look
    return cmd is not None and (not want or cmd == want or cmd.endswith(" " + want))


@dataclass
class RunState:
    """The state file of one run; every mutation is written through atomically."""

    run_id: str
    state_dir: Path = STATE_DIR
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: int | None = None
    pids: list[dict] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _RUN_ID.match(self.run_id):
            raise HarnessError(f"run id {self.run_id!r}: use 1-8 characters [0-9a-z]")
        self.state_dir = Path(self.state_dir)
        if self.owner_start is None:
            self.owner_start = proc_start_time(self.owner_pid)

    @property
    def path(self) -> Path:
        return self.state_dir / f"{self.run_id}.json"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / f"{self.run_id}.d"

    @classmethod
    def create(cls, run_id: str, state_dir: Path | str = STATE_DIR) -> "RunState":
        st = cls(run_id, Path(state_dir))
        if st.path.exists():
            raise HarnessError(f"run {run_id!r} already has a state file at {st.path} (a run id is used once)")
        st.save()
        _OWN_RUNS[run_id] = st.state_dir
        return st

    @classmethod
    def load(cls, path: Path) -> "RunState":
        d = json.loads(Path(path).read_text())
        return cls(run_id=d["run_id"], state_dir=Path(path).parent, owner_pid=int(d["owner_pid"]),
                   owner_start=d.get("owner_start"), pids=list(d.get("pids", [])),
                   mounts=list(d.get("mounts", [])), links=list(d.get("links", [])),
                   cgroups=list(d.get("cgroups", [])), dirs=list(d.get("dirs", [])))

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "owner_pid": self.owner_pid, "owner_start": self.owner_start,
                "pids": self.pids, "mounts": self.mounts, "links": self.links, "cgroups": self.cgroups,
                "dirs": self.dirs}

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.as_dict(), indent=1))
        os.replace(tmp, self.path)

    def owner_alive(self) -> bool:
        """The owner still runs (a killed owner its parent has not reaped yet is a zombie: dead)."""
        return pid_matches({"pid": self.owner_pid, "start": self.owner_start}) and not _is_zombie(self.owner_pid)

    def add_pid(self, pid: int, argv: list[str] | None = None) -> None:
        """Record a process; ``argv`` is the command it ends up running (default: its cmdline now)."""
        cmdline = " ".join(map(str, argv)) if argv else proc_cmdline(pid)
        self.pids.append({"pid": pid, "start": proc_start_time(pid), "cmdline": cmdline})
        self.save()

    def drop_pid(self, pid: int) -> None:
        self.pids = [e for e in self.pids if e["pid"] != pid]
        self.save()

    def add_mount(self, path: str) -> None:
        self.mounts.append(path)
        self.save()

    def drop_mount(self, path: str) -> None:
        self.mounts = [m for m in self.mounts if m != path]
        self.save()

    def add_link(self, name: str) -> None:
        self.links.append(name)
        self.save()

    def add_cgroup(self, path: str) -> None:
        self.cgroups.append(str(path))
        self.save()

    def drop_cgroup(self, path: str) -> None:
        self.cgroups = [c for c in self.cgroups if c != str(path)]
        self.save()

    def add_dir(self, path: str) -> None:
        self.dirs.append(str(path))
        self.save()

    def drop_dir(self, path: str) -> None:
        self.dirs = [d for d in self.dirs if d != str(path)]
        self.save()

    def remove(self) -> None:
        for p in (self.path,):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(self.log_dir, ignore_errors=True)


def kill_pid(entry: dict, grace_s: float = 1.0) -> bool:
    """SIGTERM (its process group too when it leads one), then SIGKILL. False if it was gone."""
    if not pid_matches(entry):
        return False
    pid = int(entry["pid"])
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_matches(entry) or _is_zombie(pid):
            return True
        time.sleep(0.02)
    _signal(pid, signal.SIGKILL)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].startswith("Z")


def make_run_dir(state: RunState, parent: Path | str, prefix: str) -> Path:
    """A new temporary directory under ``parent`` for ``state``'s run: recorded in the state file
    first (by its name, reserved with ``mkdtemp``), then marked with ``.twin-run-<run>``."""
    import tempfile

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{state.run_id}-", dir=parent))
    state.add_dir(str(path))
    (path / f"{RUN_DIR_MARKER}{state.run_id}").touch()
    return path


def remove_run_dir(path: str | Path, run_id: str) -> bool:
    """Delete a directory a run recorded, only if it carries the run's marker. False if it is not there."""
    p = Path(path)
    if not p.is_dir():
        return False
    if not (p / f"{RUN_DIR_MARKER}{run_id}").exists():
        return False  # not (or no longer) ours: never delete what we cannot prove we made
    shutil.rmtree(p, ignore_errors=True)
    return not p.exists()


def remove_netns_mount(path: str) -> bool:
    """Unmount and unlink a ``/run/netns`` entry. False if it did not exist."""
    p = Path(path)
    if not p.exists():
        return False
    subprocess.run(["ip", "netns", "delete", p.name], capture_output=True, text=True, timeout=10)
    if p.exists():  # not a mount, or ip refused: detach and unlink ourselves
        subprocess.run(["umount", "-l", str(p)], capture_output=True, timeout=10)
        try:
            p.unlink()
        except OSError:
            pass
    return True


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, timeout=10)
    try:
        return [l["ifname"] for l in json.loads(out.stdout or "[]")]
    except (ValueError, KeyError):
        return []


def live_run_ids(state_dir: Path | str = STATE_DIR) -> set[str]:
    live = set()
    for path in Path(state_dir).glob("*.json"):
        try:
            st = RunState.load(path)
        except (OSError, ValueError, KeyError):
            continue
        if st.owner_alive():
            live.add(st.run_id)
    return live


def _netns_dir_entries() -> list[Path]:
    try:
        return sorted(p for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def remove_cgroup_tree(path: Path) -> bool:
    """rmdir a cgroup2 directory and its children, deepest first.  A cgroup that
    still has processes cannot be removed; those are left (and reported by False)."""
    ok = True
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            child.rmdir()
        except OSError:
            ok = False
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        ok = False
    return ok


def cleanup_leftovers(state_dir: Path | str = STATE_DIR) -> list[str]:
    """Remove what runs whose owner died left behind; one line per action."""
    state_dir = Path(state_dir)
    lines: list[str] = []
    live: set[str] = set()
    dead: list[RunState] = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            st = RunState.load(path)
        except (OSError, ValueError, KeyError) as exc:
            lines.append(f"skipped unreadable state file {path}: {exc}")
            continue
        (live.add(st.run_id) if st.owner_alive() else dead.append(st))

    for st in dead:
        for entry in st.pids:
            if kill_pid(entry):
                lines.append(f"run {st.run_id}: killed pid {entry['pid']} ({entry.get('cmdline') or '?'})")
        for m in st.mounts:
            if remove_netns_mount(m):
                lines.append(f"run {st.run_id}: removed netns mount {m}")
        for cg in reversed(st.cgroups):
            if Path(cg).is_dir() and remove_cgroup_tree(Path(cg)):
                lines.append(f"run {st.run_id}: removed cgroup {cg}")
        for d in st.dirs:
            if remove_run_dir(d, st.run_id):
                lines.append(f"run {st.run_id}: removed temporary directory {d}")
        present = set(root_links())
        for name in st.links:
            if name in present:
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
                lines.append(f"run {st.run_id}: deleted root-namespace link {name}")
        st.remove()
        lines.append(f"run {st.run_id}: removed state file (owner pid {st.owner_pid} is gone)")

    # Orphans: our naming, but no live run claims them (state file lost or already removed).
    # Runs recorded in the default directory count as live too, whatever ``state_dir`` is.
    if state_dir != STATE_DIR:
        live |= live_run_ids(STATE_DIR)
    for p in _netns_dir_entries():
        run = p.name[len(NETNS_PREFIX):].split("-", 1)[0]
        if run not in live:
            remove_netns_mount(str(p))
            lines.append(f"removed orphan netns mount {p} (run {run} is not live)")
    for cg in sorted(CGROUP_ROOT.glob(f"{CGROUP_PREFIX}*")) if CGROUP_ROOT.is_dir() else []:
        run = cg.name[len(CGROUP_PREFIX):]
        if run not in live and remove_cgroup_tree(cg):
            lines.append(f"removed orphan cgroup {cg} (run {run} is not live; its BPF programs detach with it)")
    live_link_prefixes = tuple(f"{LINK_PREFIX}{r}" for r in live)
    for name in root_links():
        if name.startswith(LINK_PREFIX) and not (live_link_prefixes and name.startswith(live_link_prefixes)):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
            lines.append(f"deleted orphan root-namespace link {name}")
    return lines


# ------------------------------------------------------------------ this process's runs

#: runs whose state file this process created: run id -> state directory
_OWN_RUNS: dict[str, Path] = {}
#: teardowns this process still owes (RealTopology.close of every open topology)
_TEARDOWNS: list[Callable[[], None]] = []
_DEFERRED = (signal.SIGINT, signal.SIGTERM)
_defer_depth = 0
_saved_handlers: dict[int, object] = {}
_pending: list[int] = []
_defer_label: list[str] = []


def own_run_ids() -> list[str]:
    """Run ids whose state file this process created (their teardown is ours to do)."""
    return sorted(_OWN_RUNS)


def _record_signal(signum: int, _frame: object) -> None:
    if not _pending and _defer_label:
        os.write(2, f"twin: {signal.Signals(signum).name} received; finishing the {_defer_label[-1]} "
                    "first\n".encode())
    _pending.append(signum)


@contextmanager
def signals_deferred(what: str | None = None) -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the duration (nestable; main thread only).

    ``what`` (e.g. ``"teardown"``) is named on stderr when a signal is held back;
    without it the block is silent (for windows of a few milliseconds).

    A signal that arrives inside is recorded and delivered when the outermost
    block ends, to the handler that was in place before: Ctrl-C then raises
    :class:`KeyboardInterrupt`, SIGTERM with the default action becomes
    ``SystemExit(143)`` so callers' ``finally`` blocks still run.  Outside the
    main thread this does nothing (Python runs signal handlers in the main
    thread only, so a teardown elsewhere cannot be interrupted by them).
    """
    global _defer_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _defer_depth == 0:
        for sig in _DEFERRED:
            _saved_handlers[sig] = signal.signal(sig, _record_signal)
    _defer_depth += 1
    if what:
        _defer_label.append(what)
    try:
        yield
    finally:
        _defer_depth -= 1
        if what:
            _defer_label.pop()
        if _defer_depth == 0:
            for sig, old in _saved_handlers.items():
                signal.signal(sig, old)  # type: ignore[arg-type]
            _saved_handlers.clear()
            pending = sorted(set(_pending))
            _pending.clear()
            _redeliver(pending)


_stopping = False  # a Ctrl-C has interrupted a run of this process: it is on its way out
_stop_noted = False


def stop_on_first_ctrl_c(signum: int, _frame: object) -> None:
    """SIGINT handler while real runs are open: the first Ctrl-C raises :class:`KeyboardInterrupt`
    (the run unwinds and tears down); later ones only say that the teardown is under way, so no
    second Ctrl-C can cut a teardown short, wherever it is (topology, datapath, cgroups)."""
    global _stopping, _stop_noted
    if _stopping:
        if not _stop_noted:
            os.write(2, b"twin: already stopping; tearing down first\n")
            _stop_noted = True
        return
    _stopping = True
    raise KeyboardInterrupt


def latch_ctrl_c() -> None:
    """Install :func:`stop_on_first_ctrl_c` (main thread, only over Python's default handler); a new run starts fresh."""
    global _stopping, _stop_noted
    if threading.current_thread() is not threading.main_thread():
        return
    current = _saved_handlers.get(signal.SIGINT) if _defer_depth else signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler:
        set_signal_handler(signal.SIGINT, stop_on_first_ctrl_c)
    if current in (signal.default_int_handler, stop_on_first_ctrl_c):
        _stopping = _stop_noted = False


def unlatch_ctrl_c() -> None:
    """Back to Python's default handler once no run is open, unless a stop is under way."""
    if threading.current_thread() is not threading.main_thread() or _stopping or _TEARDOWNS:
        return
    current = _saved_handlers.get(signal.SIGINT) if _defer_depth else signal.getsignal(signal.SIGINT)
    if current is stop_on_first_ctrl_c:
        set_signal_handler(signal.SIGINT, signal.default_int_handler)


def set_signal_handler(sig: int, handler: object) -> object:
    """``signal.signal`` that respects :func:`signals_deferred`: inside a deferred block the
    handler takes effect when the block ends (and pending signals go to it); returns the old one."""
    if _defer_depth and sig in _saved_handlers and threading.current_thread() is threading.main_thread():
        old = _saved_handlers[sig]
        _saved_handlers[sig] = handler
        return old
    return signal.signal(sig, handler)  # type: ignore[arg-type]


def _redeliver(pending: list[int]) -> None:
    for sig in pending:
        handler = signal.getsignal(sig)
        if handler == signal.SIG_IGN or (handler is stop_on_first_ctrl_c and _stopping):
            continue  # ignored, or a stop is already under way
        if handler in (signal.SIG_DFL, None):
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + sig)
        signal.raise_signal(sig)


def register_teardown(fn: Callable[[], None]) -> None:
    """``fn`` removes kernel objects of a run of this process; :func:`finish_teardown` calls it if still due."""
    _TEARDOWNS.append(fn)


def unregister_teardown(fn: Callable[[], None]) -> None:
    while fn in _TEARDOWNS:
        _TEARDOWNS.remove(fn)


def finish_teardown() -> list[str]:
    """Run every teardown this process still owes, then remove what its own runs left; returns :func:`leftovers`.

    Only this process's runs are touched (their state files name this process
    as owner); signals are deferred meanwhile.
    """
    with signals_deferred("teardown"):
        for fn in list(reversed(_TEARDOWNS)):
            try:
                fn()
            except Exception:  # noqa: BLE001 - what it left is listed by leftovers() below
                pass
            unregister_teardown(fn)
        for run_id, state_dir in list(_OWN_RUNS.items()):
            _remove_own_run(run_id, state_dir)
    return leftovers()


def _remove_own_run(run_id: str, state_dir: Path) -> None:
    path = state_dir / f"{run_id}.json"
    try:
        st = RunState.load(path)
    except (OSError, ValueError, KeyError):
        st = None
    if st is not None:
        if st.owner_pid != os.getpid():
            return  # not ours after all: never touch another process's run
        for entry in st.pids:
            kill_pid(entry)
        for m in st.mounts:
            remove_netns_mount(m)
    for p in _netns_dir_entries():
        if p.name.startswith(f"{NETNS_PREFIX}{run_id}-"):
            remove_netns_mount(str(p))
    for cg in (st.cgroups if st else []) + [str(CGROUP_ROOT / f"{CGROUP_PREFIX}{run_id}")]:
        if Path(cg).is_dir():
            remove_cgroup_tree(Path(cg))
    for d in (st.dirs if st else []):
        remove_run_dir(d, run_id)
    if st is not None and not _run_objects(run_id, st):
        st.remove()


def _run_objects(run_id: str, st: RunState | None) -> list[str]:
    """Kernel objects and processes of ``run_id`` that still exist (state file not counted)."""
    out: list[str] = []
    if st is not None:
        for entry in st.pids:
            if pid_matches(entry) and not _is_zombie(int(entry["pid"])):
                out.append(f"process {entry['pid']} ({entry.get('cmdline') or '?'})")
    for p in _netns_dir_entries():
        if p.name.startswith(f"{NETNS_PREFIX}{run_id}-"):
            out.append(f"network namespace {p}")
    cgroups = set(st.cgroups if st else []) | {str(CGROUP_ROOT / f"{CGROUP_PREFIX}{run_id}")}
    for cg in sorted(cgroups):
        if Path(cg).is_dir():
            out.append(f"cgroup {cg}")
    if st is not None and st.links:
        present = set(root_links())
        out += [f"root-namespace link {name}" for name in st.links if name in present]
    for d in (st.dirs if st else []):
        if (Path(d) / f"{RUN_DIR_MARKER}{run_id}").exists():
            out.append(f"temporary directory {d}")
    return out


def leftovers(run_id: str | None = None, state_dir: Path | str | None = None) -> list[str]:
    """What is still there of ``run_id`` (default: of every run this process created), one line per object.

    Looks at the run's state file and at the places its names would be
    (``/run/netns/twn-<run>-*``, the run's cgroup tree, recorded processes
    and links); empty means nothing of the run is left.
    """
    runs = {run_id: Path(state_dir) if state_dir else _OWN_RUNS.get(run_id, STATE_DIR)} if run_id \
        else dict(_OWN_RUNS)
    out: list[str] = []
    for rid, sdir in sorted(runs.items()):
        path = Path(sdir) / f"{rid}.json"
        try:
            st = RunState.load(path)
        except FileNotFoundError:
            st = None
        except (OSError, ValueError, KeyError):
            st = None
            out.append(f"run {rid}: unreadable state file {path}")
        if st is not None:
            out.append(f"run {rid}: state file {path}")
        out += [f"run {rid}: {line}" for line in _run_objects(rid, st)]
    return out


def after_interrupt() -> str:
    """After Ctrl-C, as the process ends: finish this process's teardowns and say truthfully what is left.

    Further SIGINTs are ignored from here on (the process is about to exit).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _OWN_RUNS:
        return "twin: interrupted (no kernel objects had been created)"
    left = finish_teardown()
    if not left:
        return "twin: interrupted; kernel objects were cleaned up"
    return ("twin: interrupted; teardown did not finish, left behind:\n"
            + "".join(f"  {line}\n" for line in left)
            + "  `twin cleanup` removes them once this process has exited")
