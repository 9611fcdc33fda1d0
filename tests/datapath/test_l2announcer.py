"""The elector process (``python -m datapath.agent.l2announcer``) against a Lease
endpoint that behaves like Kubernetes (409 on a stale resourceVersion), served
on loopback by the test (``lease_fake``, a test double)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lease_fake import LeaseFake

pytestmark = pytest.mark.datapath

REPO = Path(__file__).resolve().parents[2]
LD, RD, RP = 2.0, 1.0, 0.2


class Elector:
    """One elector process and its events (read by a thread)."""

    def __init__(self, node: str, url: str, leases: list[str], qps: float = 50, burst: int = 100) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.node = node
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datapath.agent.l2announcer", "--node", node, "--api", url,
             "--lease-duration", str(LD), "--renew-deadline", str(RD), "--retry-period", str(RP),
             "--qps", str(qps), "--burst", str(burst)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.events: list[dict] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(leases)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            ev["node"] = self.node
            self.events.append(ev)
            self._q.put(ev)

    def send(self, leases: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"leases": leases}) + "\n")
        self.proc.stdin.flush()

    def of(self, event: str, lease: str | None = None) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == event and (lease is None or e["lease"] == lease)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass


def wait_until(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g}s: {what}")


@pytest.fixture
def api():
    with LeaseFake() as fake:
        yield fake


@pytest.fixture
def electors():
    started: list[Elector] = []
    yield started
    for e in started:
        e.close()


def start(electors: list, *args, **kw) -> Elector:
    e = Elector(*args, **kw)
    electors.append(e)
    return e


def test_exactly_one_of_three_candidates_acquires_and_keeps_renewing(api, electors):
    es = [start(electors, f"w{i}", api.url, ["svc1"]) for i in range(3)]
    holder = wait_until(lambda: [e for e in es if e.of("acquired")], 10, "a node acquires svc1")
    time.sleep(LD + 0.5)  # past a lease duration: the others must still not take it
    acquired = [e for e in es if e.of("acquired")]
    assert [e.node for e in acquired] == [holder[0].node]
    assert api.holder("svc1") == holder[0].node
    assert len(holder[0].of("renewed")) >= 3
    assert not holder[0].of("lost")


def test_sigkilled_holder_is_taken_over_only_after_its_lease_expires(api, electors):
    es = [start(electors, f"w{i}", api.url, ["svc1"]) for i in range(3)]
    old = wait_until(lambda: [e for e in es if e.of("acquired")], 10, "a node acquires svc1")[0]
    wait_until(lambda: len(old.of("renewed")) >= 2, 5, "the holder renews")
    old.proc.send_signal(signal.SIGKILL)
    old.proc.wait(5)
    killed_at = time.monotonic()
    last_renewal = old.of("renewed")[-1]["t"]
    new = wait_until(lambda: [e for e in es if e is not old and e.of("acquired")], LD + 10,
                     "another node takes over")
    assert len(new) == 1
    take = new[0].of("acquired")[0]
    assert take["detail"]["previous"] == old.node and take["detail"]["transitions"] == 1
    # the candidate saw the last renewal no earlier than it was written; it waits LD on its own clock
    assert take["t"] >= last_renewal + LD - RP
    assert take["t"] <= killed_at + LD + 5  # generous: LD plus a few jittered retry periods
    assert api.holder("svc1") == new[0].node


def test_a_client_throttled_below_its_renewal_rate_loses_leases(api, electors):
    # 4 leases, each renewal needing a Get and an Update within RD = 1 s, through 1 request/s
    leases = [f"svc{i}" for i in range(4)]
    e = start(electors, "w1", api.url, leases, qps=1, burst=1)
    wait_until(lambda: e.of("lost"), 20, "a lease lost to throttling")
    assert e.of("throttled")
    lost = e.of("lost")[0]
    assert "renew deadline" in lost["detail"]["reason"]
    assert e.of("acquired", lost["lease"])[0]["t"] < lost["t"]


def test_stdin_eof_ends_the_process_without_releasing(api, electors):
    e = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: e.of("acquired"), 10, "w1 acquires svc1")
    e.proc.stdin.close()
    assert e.proc.wait(5) == 0
    assert api.holder("svc1") == "w1"  # the agent died: nobody released the lease


def test_sigterm_releases_the_held_lease_and_exits(api, electors):
    e = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: e.of("acquired"), 10, "w1 acquires svc1")
    e.proc.send_signal(signal.SIGTERM)
    assert e.proc.wait(5) == 0
    time.sleep(0.2)
    assert api.holder("svc1") == ""
    assert [x["detail"]["reason"] for x in e.of("lost")] == ["released"]
    assert e.of("stopped", "svc1")


def test_a_lease_dropped_from_the_set_is_released_and_taken_by_the_other_candidate(api, electors):
    a = start(electors, "w1", api.url, ["svc1"])
    wait_until(lambda: a.of("acquired"), 10, "w1 acquires svc1")
    b = start(electors, "w2", api.url, ["svc1"])
    wait_until(lambda: b.of("started"), 10, "w2's elector runs")
    time.sleep(3 * RP)
    assert not b.of("acquired")
    a.send([])
    wait_until(lambda: a.of("stopped", "svc1"), 5, "w1's elector stops")
    assert [x["detail"]["reason"] for x in a.of("lost")] == ["released"]
    # released: holder "" with leaseDurationSeconds 1 -> w2 may take it after 1 s on its clock, not LD
    wait_until(lambda: b.of("acquired"), LD + 5, "w2 acquires the released lease")
    assert a.proc.poll() is None
