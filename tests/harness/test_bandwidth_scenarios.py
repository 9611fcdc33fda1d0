"""Harness tier: the three Bandwidth Manager scenarios on the real datapath (root, bcc,
Mininet), with iperf3 in the pods.

What holds on any datapath: iperf3 runs between the pods, every throughput step gives
a filled record (goodput, streams, intervals, retransmits, the sender's limit as the
desired cluster had it, same-node placement), a transfer across an annotation change
completes, and pods whose annotation Cilium ignores (the typos) are measured unlimited.

Each scenario runs on both backends: the rate checks below look at the real
measurements; ``test_..._agree`` requires the real goodput of every step inside
the twin's interval (``settings.rate_tolerance``).  Rate checks compare against the limit's best TCP goodput (the limit times
MSS/(MTU+14): 1448/1514 at MTU 1500) with a stated tolerance, never against timing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.real import real_unavailable_reason
from twin.semantics.bandwidth import tcp_payload_fraction

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]

_reason = real_unavailable_reason()
needs_real = pytest.mark.skipif(_reason is not None, reason=f"real datapath unavailable: {_reason}")


#: a rate check: within this fraction of the limit's best goodput (HTB/EDT accuracy, 3 s runs, a busy 2-core VM)
RATE_TOL = 0.10
#: "unlimited" here: far above every limit these scenarios set (20M at most)
UNLIMITED_BPS = 200e6


def best(limit_bps: float) -> float:
    """The best TCP goodput a wire limit allows at the links' MTU."""
    return limit_bps * tcp_payload_fraction()


def near(got: float, limit_bps: float, tol: float = RATE_TOL) -> bool:
    return abs(got - best(limit_bps)) <= tol * best(limit_bps)


def _run(name: str, tmp_path_factory) -> dict:
    from harness.runner import run_scenario
    return run_scenario(str(ROOT / f"scenarios/{name}.yaml"), "both", str(tmp_path_factory.mktemp(name)))


def _records(r: dict) -> dict:
    assert r["status"]["real"]["state"] == "ran", r["status"]
    return {t["name"]: t for t in r["observations"]["real"]["throughput"]}


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    return _run("seed-bandwidth", tmp_path_factory)


@pytest.fixture(scope="module")
def sharing(tmp_path_factory):
    return _run("rate-limit-sharing", tmp_path_factory)


@pytest.fixture(scope="module")
def typos(tmp_path_factory):
    return _run("rate-limit-typos", tmp_path_factory)


def _filled(t: dict) -> None:
    assert t["goodput"]["bps"] > 0 and t["retransmits"] is not None
    assert len(t["streams"]) == t["parallel"] and all(s["bps"] > 0 for s in t["streams"])
    assert len(t["intervals"]) >= int(t["duration_s"]) - 1 and all(i["t1"] > i["t0"] for i in t["intervals"])
    assert any("iperf3 -c" in e for e in t["evidence"])


@needs_real
def test_seed_bandwidth_measures_every_step_with_iperf3_and_the_limit_of_that_moment(seed):
    recs = _records(seed)
    assert list(recs) == ["cross-node-10M", "cross-node-5M", "cross-node-20M", "across-change-20M-to-10M",
                          "same-node-unlimited"]
    for t in recs.values():
        _filled(t)
        assert t["sender"] == "default/netperf-server" and t["direction"] == "reverse"
    assert [recs[k]["limit_bps"] for k in recs] == [10_000_000, 5_000_000, 20_000_000, 20_000_000, 10_000_000]
    assert [recs[k]["same_node"] for k in recs] == [False, False, False, False, True]
    bw = seed["observations"]["real"]["bandwidth"]
    assert bw["mechanism"] in ("htb", "edt-fq") and bw["reason"]
    assert seed["throughput"]["records"][0]["real"] == recs["cross-node-10M"]["goodput"]["bps"]


@needs_real
def test_same_node_client_is_not_limited(seed):
    assert _records(seed)["same-node-unlimited"]["goodput"]["bps"] > UNLIMITED_BPS


@needs_real
def test_seed_cross_node_goodput_follows_10M_5M_20M(seed):
    recs = _records(seed)
    for name, lim in (("cross-node-10M", 10e6), ("cross-node-5M", 5e6), ("cross-node-20M", 20e6)):
        got = recs[name]["goodput"]["bps"]
        assert near(got, lim), f"{name}: {got / 1e6:.3f} Mbit/s, best {best(lim) / 1e6:.3f}"
        assert recs[name]["mechanism"] in ("htb", "edt-fq")


@needs_real
def test_limit_changes_in_place_during_a_transfer(seed):
    t = _records(seed)["across-change-20M-to-10M"]  # it completed: the connection survived the change
    iv = {round(i["t0"]): i["bps"] for i in t["intervals"]}
    assert near(iv[1], 20e6), iv  # before the annotation changed (about 2 s in)
    assert near(iv[4], 10e6), iv  # after the agent applied it


@needs_real
def test_sharing_runs_two_and_four_streams_beside_an_unlimited_neighbour(sharing):
    recs = _records(sharing)
    for t in recs.values():
        _filled(t)
    assert [recs[k]["parallel"] for k in ("limited-2-streams", "limited-4-streams")] == [2, 4]
    assert recs["limited-4-streams"]["limit_bps"] == 10_000_000 and recs["unlimited-neighbour"]["limit_bps"] is None
    assert recs["unlimited-neighbour"]["goodput"]["bps"] > UNLIMITED_BPS
    fair = {r["key"]: r["fairness"]["real"] for r in sharing["throughput"]["records"]}
    assert all(0 < fair[k] <= 1 for k in ("limited-2-streams", "limited-4-streams"))


@needs_real
def test_parallel_streams_share_the_pods_limit(sharing):
    recs = _records(sharing)
    for name in ("limited-2-streams", "limited-4-streams"):
        t = recs[name]
        assert near(t["goodput"]["bps"], 10e6), f"{name}: {t['goodput']['bps'] / 1e6:.3f} Mbit/s"
        assert abs(sum(s["bps"] for s in t["streams"]) - t["goodput"]["bps"]) <= 0.02 * t["goodput"]["bps"]


@needs_real
def test_typo_annotations_are_measured_unlimited(typos):
    recs = _records(typos)
    assert list(recs) == ["typo-10Mbps", "typo-10mi", "typo-negative-5M", "typo-zero"]
    for name, t in recs.items():
        _filled(t)
        assert t["limit_bps"] is None, name
        assert t["goodput"]["bps"] > UNLIMITED_BPS, f"{name}: {t['goodput']['bps'] / 1e6:.1f} Mbit/s"
        assert any("no limit" in e for e in t["evidence"]), t["evidence"]


@needs_real
@pytest.mark.parametrize("name", ["seed", "sharing", "typos"])
def test_both_backends_agree_on_every_throughput_step(name, request):
    r = request.getfixturevalue(name)
    assert r["status"]["twin"]["state"] == "ran" and r["status"]["real"]["state"] == "ran", r["status"]
    rows = [f"{x['key']}: real {x['real']} twin {x['twin']}" for x in r["throughput"]["records"]]
    assert r["disagreements"] == [], "\n".join(map(str, r["disagreements"])) + "\n" + "\n".join(rows)
