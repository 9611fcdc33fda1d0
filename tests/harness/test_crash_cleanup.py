"""Harness tier: a real run killed with SIGKILL (no teardown at all) is cleaned
up by the next run's cleanup: processes, namespaces and its cgroups (whose
socket-LB programs detach with them)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cleanup import CGROUP_ROOT, NETNS_DIR, _is_zombie, cleanup_leftovers
from harness.real import real_unavailable_reason

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

CHILD = r"""
import sys, time
from harness.inputs import load_cluster
from harness.real import RealCluster
rc = RealCluster(load_cluster(["examples/seed/pods.yaml", "examples/seed/service.yaml"])).__enter__()
print(rc.topo.run_id, rc.topo.server_pid("default/webpod1"), flush=True)
time.sleep(600)
"""


def test_sigkilled_run_leaves_nothing_after_the_next_cleanup():
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        run_id, server_pid = child.stdout.readline().split()
        assert (CGROUP_ROOT / f"twn-{run_id}").is_dir()
        assert any(p.name.startswith(f"twn-{run_id}-") for p in NETNS_DIR.iterdir())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    lines = cleanup_leftovers()
    assert any(run_id in ln for ln in lines), lines
    assert not (CGROUP_ROOT / f"twn-{run_id}").exists()
    assert not any(p.name.startswith(f"twn-{run_id}-") for p in NETNS_DIR.iterdir())
    deadline = time.monotonic() + 5  # killed; reaped by init when it gets to it
    while Path(f"/proc/{server_pid}").exists() and not _is_zombie(int(server_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server_pid}").exists() or _is_zombie(int(server_pid))


def _own_run_id(owner_pid: int, timeout_s: float = 60) -> str | None:
    """The run id whose state file names ``owner_pid`` (our child) as owner."""
    import json
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in Path("/run/twin").glob("*.json"):
            try:
                if json.loads(path.read_text()).get("owner_pid") == owner_pid:
                    return path.stem
            except (OSError, ValueError):
                continue
        time.sleep(0.05)
    return None


def test_repeated_ctrl_c_on_twin_run_leaves_nothing_or_lists_exactly_what_is_left():
    """`twin run --backend real` with socket LB (a cgroup tree): SIGINT again and again, from the moment its
    datapath is up until it exits.  Its stderr must be truthful about what is left, and nothing may be."""
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "scenarios/seed-service-socket-lb.yaml",
                              "--backend", "real", "--out", "/tmp/twin-test-interrupt"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        run_id = _own_run_id(child.pid)
        assert run_id, "the run did not start"
        cgroup = CGROUP_ROOT / f"twn-{run_id}"
        deadline = time.monotonic() + 60
        while not cgroup.is_dir() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cgroup.is_dir(), "the run's socket-LB cgroup never appeared"
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            child.send_signal(signal.SIGINT)
            time.sleep(0.01)
        code = child.wait(timeout=30)
        err = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 130 and "Traceback" not in err, err
    left = [p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"twn-{run_id}-")] \
        + ([str(cgroup)] if cgroup.exists() else []) \
        + ([f"/run/twin/{run_id}.json"] if Path(f"/run/twin/{run_id}.json").exists() else [])
    message = err[err.index("twin: interrupted"):]
    if left:  # allowed only when the message names every object that is left
        assert "`twin cleanup` removes them" in message and all(obj in message for obj in left), (left, err)
    else:
        assert message.strip() == "twin: interrupted; kernel objects were cleaned up", err
    assert not left, f"left behind (and reported): {left}"
