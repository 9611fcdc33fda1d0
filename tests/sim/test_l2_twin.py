"""Sim tier: the twin's L2 announcements — Lease election, ARP responder, gratuitous ARP,
the external host's ARP cache, faults and the failover predictions.

Cluster: the seed's three nodes, the seed's L2 section (policy1 selects
``color: blue`` services on the workers, ``^ens[0-9]+``; pool 10.10.200.0/29),
the seed's Helm values (lease 3 s / renew 1 s / retry 200 ms, k8sClientRateLimit
5/10), one whoami backend on the control-plane node (never a candidate).
"""
from __future__ import annotations

import pytest

from l2help import BLUE, HERE, failover_steps, load, run, write_scenario
from twin.semantics.failover import (DELAY_FIRST_PROBE_S, RETRANS_S, UCAST_SOLICIT, FailoverTiming,
                                     measured_outage)
from twin.sim import TwinBackend
from twin.semantics.l2 import election_params

pytestmark = pytest.mark.sim
SVC1 = "cilium-l2announce-default-svc1"
WORKERS = {"k8s-w1", "k8s-w2"}
SEEDS = range(1, 31)


def _events(obs, name, **match):
    return [e for e in obs.events if e.event == name and all(e.get(k) == v for k, v in match.items())]


def _leading(obs):
    """Per node, the intervals during which its elector believed it held svc1's lease."""
    out, start = [], {}
    for e in sorted(obs.events, key=lambda e: e.t):
        if e.get("lease") != SVC1:
            continue
        if e.event == "lease-acquired":
            start[e.get("node")] = e.t
        elif e.event == "lease-lost" and e.get("node") in start:
            out.append((e.get("node"), start.pop(e.get("node")), e.t))
    out += [(n, t, float("inf")) for n, t in start.items()]
    return out


def _outage(obs):
    f = obs.faults[0]
    return measured_outage([(r.t, r.outcome == "answered") for r in obs.requests if r.name == "ext"], f.t)


@pytest.fixture
def crash(tmp_path):
    return write_scenario(tmp_path, "crash", failover_steps("node-crash"), {"request_timeout": "500ms"})


def test_only_the_labelled_service_is_announced_and_its_lease_has_one_holder_at_a_time(tmp_path):
    steps = [{"arping": {"name": "before", "service": "default/svc1", "count": 1}}, BLUE, {"wait": "15s"},
             {"arping": {"name": "blue", "service": "default/svc1", "count": 2}},
             {"arping": {"name": "svc2", "service": "default/svc2", "count": 2}}]
    obs = run(write_scenario(tmp_path, "announce", steps), seed=4)
    assert {x.lease for x in obs.leases} == {SVC1}  # svc2, svc3 carry no color: blue
    assert len(obs.leases) == 1 and obs.leases[0].holder in WORKERS and obs.leases[0].previous is None
    holder = obs.leases[0].holder
    arp = {a.name: a.nodes for a in obs.arp if a.kind == "arping"}
    assert arp == {"before": (), "blue": (holder,), "svc2": ()}  # the control plane never answers
    spans = _leading(obs)
    assert [n for n, _, _ in spans] == [holder]  # one elector leads, from acquisition on, never lost
    garps = [a for a in obs.arp if a.kind == "garp"]
    assert [(g.ip, g.nodes) for g in garps] == [("10.10.200.1", (holder,))]
    assert not _events(obs, "elector-started", lease="cilium-l2announce-default-svc2")


def test_electors_start_only_on_candidate_nodes_when_the_label_step_announces_the_service(tmp_path):
    obs = run(write_scenario(tmp_path, "label", [{"wait": "1s"}, BLUE, {"wait": "2s"}]), seed=2)
    started = _events(obs, "elector-started")
    assert {e.get("node") for e in started} == WORKERS and {e.get("lease") for e in started} == {SVC1}
    assert all(e.t >= 1.0 for e in started)
    assert obs.leases and obs.leases[0].t >= 1.0


def test_removing_the_label_stops_the_electors_and_the_holder_releases_and_withdraws(tmp_path):
    steps = [BLUE, {"wait": "3s"}, {"label": {"object": "Service/default/svc1", "remove": ["color"]}}, {"wait": "1s"},
             {"arping": {"name": "gone", "service": "default/svc1", "count": 1}}]
    obs = run(write_scenario(tmp_path, "unlabel", steps), seed=6)
    holder = obs.leases[0].holder
    assert {e.get("node") for e in _events(obs, "elector-stopped", lease=SVC1)} == WORKERS
    assert _events(obs, "responder-withdrawn", node=holder, lease=SVC1)
    assert [e.get("holder") for e in _events(obs, "lease", lease=SVC1)][-1] == ""  # released
    assert next(a.nodes for a in obs.arp if a.name == "gone") == () and len(obs.leases) == 1


def test_after_the_holder_crashes_the_other_candidate_takes_over_within_the_analytic_bound(crash):
    inputs = load(crash)
    timing = FailoverTiming(election_params(inputs.cluster.values))
    lo, hi = timing.takeover_s()
    for seed in SEEDS:
        obs = TwinBackend(monte_carlo=0).run(inputs, seed)
        f = obs.faults[0]
        assert f.kind == "node-crash" and f.node in WORKERS and f.lease == SVC1
        after = [x for x in obs.leases if x.t > f.t]
        assert len(after) == 1, (seed, obs.leases)
        assert after[0].holder == (WORKERS - {f.node}).pop() and after[0].previous == f.node
        assert lo <= after[0].t - f.t <= hi, (seed, after[0].t - f.t, (lo, hi))
        # two holders never overlap: the crashed node's elector simply stops
        assert [a.nodes for a in obs.arp if a.name == "after"] == [(after[0].holder,)]


def test_crash_outage_of_the_external_loop_lies_in_the_predicted_interval_for_many_seeds(crash):
    inputs = load(crash)
    pred = next(p for p in TwinBackend(monte_carlo=40).run(inputs, 1).predictions if p["kind"] == "failover")
    assert pred["fault"] == "node-crash" and pred["lease"] == SVC1 and pred["loop"] == "ext"
    assert len(pred["samples"]) == 40 and not pred["persists"]
    assert pred["outage_lo"] <= pred["analytic"][0] and pred["outage_hi"] >= pred["analytic"][1]
    for seed in range(100, 130):
        out = _outage(TwinBackend(monte_carlo=0).run(inputs, seed))
        assert out["outage"] > 0 and not out["persists"]
        assert pred["outage_lo"] <= out["outage"] <= pred["outage_hi"], (seed, out, pred["outage_lo"], pred["outage_hi"])


def test_with_gratuitous_arp_honoured_the_outage_ends_at_the_new_holders_garp(crash):
    for seed in SEEDS:
        obs = run(crash, seed)
        out = _outage(obs)
        garp = [a for a in obs.arp if a.kind == "garp" and a.t > obs.faults[0].t]
        assert len(garp) == 1 and garp[0].nodes == (obs.leases[-1].holder,)
        # the first request sent after the GARP arrived is answered (failed ones are 500 ms apart)
        assert garp[0].t <= out["recovered"] <= garp[0].t + 0.5 + 1e-6, (seed, garp[0].t, out)


def test_with_gratuitous_arp_ignored_the_outage_lasts_until_the_arp_entry_revalidates(tmp_path):
    base = 5.0
    path = write_scenario(tmp_path, "ignore", failover_steps("node-crash", "30s"),
                          {"request_timeout": "500ms", "external": {"garp": "ignore", "base_reachable_time": "5s"}})
    for seed in range(1, 11):
        obs = run(path, seed)
        out = _outage(obs)
        f, garp = obs.faults[0], [a for a in obs.arp if a.kind == "garp" and a.t > obs.faults[0].t]
        assert garp and out["recovered"] > garp[0].t + 1.0  # the GARP changed nothing
        # REACHABLE ≥ base/2 after the last confirmation (≤ the fault), DELAY 5 s, PROBE 3 × 1 s, then FAILED
        assert out["recovered"] - f.t >= 0.5 * base + DELAY_FIRST_PROBE_S + UCAST_SOLICIT * RETRANS_S - 0.1
        # the entry moved to the new holder through a broadcast who-has answered by it
        moved = _events(obs, "neigh-lladdr", node=obs.leases[-1].holder)
        assert moved and moved[-1].t <= out["recovered"] + 0.01
        assert any(e.get("to") == "broadcast" and f.t < e.t <= out["recovered"] for e in _events(obs, "arp-solicit"))


def test_agent_kill_leaves_the_old_nodes_responder_answering_and_causes_no_outage(tmp_path):
    """The killed agent's responder entries and LB maps stay (Cilium's BPF state outlives the
    agent) and nothing withdraws them, so after the other node takes over both answer ARP;
    the external host keeps sending to whichever MAC it has, and both forward."""
    obs = run(write_scenario(tmp_path, "kill", failover_steps("agent-kill"), {"request_timeout": "500ms"}), seed=3)
    f = obs.faults[0]
    assert [x.holder for x in obs.leases] == [f.node, (WORKERS - {f.node}).pop()]
    assert all(r.outcome == "answered" for r in obs.requests)
    assert set(next(a.nodes for a in obs.arp if a.name == "after")) == WORKERS
    assert not _events(obs, "responder-withdrawn")


def test_a_partitioned_holder_withdraws_its_responder_after_the_renew_deadline_and_nothing_fails(tmp_path):
    path = write_scenario(tmp_path, "part", failover_steps("partition"), {"request_timeout": "500ms"})
    params = election_params(load(path).cluster.values)
    cycle = FailoverTiming(params).cycle_s
    for seed in range(1, 11):
        obs = run(path, seed)
        f = obs.faults[0]
        lost = _events(obs, "lease-lost", node=f.node)
        assert len(lost) == 1
        # lost at the renew deadline of the first renewal that cannot complete: it started at most one
        # renewal cycle before the fault (cut off mid-way) and at most one retry period after it
        assert params.renew_deadline_s - cycle <= lost[0].t - f.t <= params.renew_deadline_s + params.retry_period_s
        assert all(r.outcome == "answered" for r in obs.requests)  # the old node keeps forwarding
        assert next(a.nodes for a in obs.arp if a.name == "after") == (obs.leases[-1].holder,)
        assert obs.leases[-1].holder != f.node


def test_responder_missing_is_reported_by_the_consistency_check_with_lease_node_and_since(tmp_path):
    steps = [{"fault": {"kind": "responder-missing", "node": "k8s-w1"}},
             {"fault": {"kind": "responder-missing", "node": "k8s-w2"}}, BLUE, {"wait": "3s"},
             {"arping": {"name": "who", "service": "default/svc1", "count": 2}}]
    obs = run(write_scenario(tmp_path, "missing", steps), seed=5)
    holder = obs.leases[0].holder
    assert [(c.problem, c.lease, c.node) for c in obs.l2_checks] == [("responder-missing", SVC1, holder)]
    assert obs.l2_checks[0].since >= obs.leases[0].t
    assert next(a.nodes for a in obs.arp if a.name == "who") == ()
    assert not [a for a in obs.arp if a.kind == "garp"]


def test_nic_down_with_a_backup_path_keeps_the_lease_the_outage_persists_and_the_check_names_the_interface(tmp_path):
    path = write_scenario(tmp_path, "nic", failover_steps("nic-down"), {"request_timeout": "500ms",
                                                                        "api_backup_path": True})
    obs = TwinBackend(monte_carlo=10).run(load(path), 2)
    f = obs.faults[0]
    assert len(obs.leases) == 1 and obs.leases[0].holder == f.node  # it keeps renewing over mgmt0
    assert _outage(obs)["persists"]
    assert [(c.problem, c.lease, c.node, c.interface, c.since) for c in obs.l2_checks] == [
        ("interface-down", SVC1, f.node, "ens5", f.t)]
    pred = next(p for p in obs.predictions if p["kind"] == "failover")
    assert pred["persists"] and pred["outage_lo"] <= _outage(obs)["outage"] <= pred["outage_hi"]


def test_nic_down_with_a_backup_path_loses_the_lease_once_on_the_lan_connection_and_retakes_it_over_mgmt0(tmp_path):
    """The kept-alive API connection was opened over ens5 and keeps its source address: after
    the interface goes down its request gets no reply until the renew deadline (lost), then a
    new connection over the backup path works and the holder renews its own lease again."""
    path = write_scenario(tmp_path, "nic3", failover_steps("nic-down"), {"request_timeout": "500ms",
                                                                         "api_backup_path": True})
    params = election_params(load(path).cluster.values)
    for seed in range(1, 6):
        obs = run(path, seed)
        f = obs.faults[0]
        lost = _events(obs, "lease-lost", node=f.node)
        assert len(lost) == 1
        # the renewal it happens in started at most one retry period (its token wait) before the fault
        assert params.renew_deadline_s - params.retry_period_s - 0.05 <= lost[0].t - f.t \
            <= params.renew_deadline_s + params.retry_period_s
        timeouts = [e for e in _events(obs, "lease-attempt-failed", node=f.node, status="timeout") if e.t > f.t]
        assert timeouts and all(e.get("path") == "lan" for e in timeouts)
        again = [e for e in _events(obs, "lease-acquired", node=f.node) if e.t > lost[0].t]
        assert again and len(obs.leases) == 1  # retaken by the same node: no holder change
        renewed = [e for e in _events(obs, "lease", holder=f.node) if e.t > again[0].t]
        assert renewed  # renewals keep succeeding over mgmt0


def test_nic_down_without_a_backup_path_is_an_ordinary_failover(tmp_path):
    obs = run(write_scenario(tmp_path, "nic2", failover_steps("nic-down"), {"request_timeout": "500ms"}), seed=2)
    f = obs.faults[0]
    assert obs.leases[-1].holder != f.node and not _outage(obs)["persists"]
    assert [c.problem for c in obs.l2_checks] == ["interface-down"]  # until the lease moved


def _many(tmp_path, values):
    return write_scenario(tmp_path, f"many-{values}", [{"wait": "20s"}],
                          manifests=[str(HERE / "webpod-cp.yaml"), str(HERE / "many-blue.yaml")],
                          values=str(HERE / f"values-{values}.yaml"))


def test_many_services_at_ciliums_default_rate_limit_lose_leases_and_a_high_limit_loses_none(tmp_path):
    low = TwinBackend(monte_carlo=5).run(load(_many(tmp_path, "low-qps")), 1)
    high = TwinBackend(monte_carlo=5).run(load(_many(tmp_path, "high-qps")), 1)
    assert len({x.lease for x in low.leases}) == len({x.lease for x in high.leases}) == 8
    assert _events(low, "lease-throttled") and len(_events(low, "lease-lost")) > 0
    assert not _events(high, "lease-lost") and len(high.leases) == 8
    pred = {(p["kind"], p["lease"]): p for o in (low,) for p in o.predictions}
    assert pred[("lease-losses", "*")]["lo"] > 0 and "throttled" in pred[("lease-losses", "*")]["derivation"]
    hp = {(p["kind"], p["lease"]): p for p in high.predictions}
    assert (hp[("lease-losses", "*")]["lo"], hp[("lease-losses", "*")]["hi"]) == (0, 0)
    assert (hp[("lease-transitions-total", "*")]["lo"], hp[("lease-transitions-total", "*")]["hi"]) == (0, 0)
    assert sum(1 for k in hp if k[0] == "lease-transitions") == 8
    # a throttled holder that loses re-acquires its own lease: no holder changes, many losses
    assert pred[("lease-transitions-total", "*")]["hi"] == max(x.transitions for x in low.leases) == 0


def test_the_same_seed_gives_the_same_l2_observations(crash):
    a, b = TwinBackend(monte_carlo=3).run(load(crash), 7), TwinBackend(monte_carlo=3).run(load(crash), 7)
    da, db = a.as_dict(), b.as_dict()
    for k in ("leases", "arp", "faults", "l2_checks", "traffic", "predictions", "events"):
        assert da[k] == db[k], k


def test_the_failover_prediction_has_the_agreed_format_and_says_how_it_was_derived(crash):
    obs = TwinBackend(monte_carlo=8).run(load(crash), 1)
    p = next(p for p in obs.predictions if p.get("kind") == "failover")
    assert set(p) == {"kind", "step", "fault", "node", "lease", "loop", "outage_lo", "outage_hi", "persists",
                      "analytic", "monte_carlo", "samples", "derivation"}
    assert p["step"] == obs.faults[0].step and p["node"] == obs.faults[0].node
    assert p["outage_lo"] <= min(p["samples"]) <= max(p["samples"]) <= p["outage_hi"]
    assert "(a) analytic" in p["derivation"] and "(b) Monte Carlo: 8 twin reruns" in p["derivation"]
    kinds = {q["kind"] for q in obs.predictions if "kind" in q}
    assert kinds == {"failover", "lease-transitions", "lease-transitions-total", "lease-losses"}


def test_a_what_if_on_one_nodes_responder_programming_changes_only_that_node(crash):
    from twin.semantics.delays import DELAYS
    from twin.semantics.dists import Constant
    inputs = load(crash)
    base = TwinBackend(monte_carlo=0).run(inputs, 3)
    slow = DELAYS.replace(responder_program=Constant(0.2))
    what_if = TwinBackend(overrides={"l2agent:k8s-w2": slow}, monte_carlo=0).run(inputs, 3)
    prog = lambda o, n: [e.t for e in _events(o, "responder-programmed", node=n)]  # noqa: E731
    assert prog(base, "k8s-w1") == prog(what_if, "k8s-w1")
    assert prog(base, "k8s-w2") != prog(what_if, "k8s-w2")
    lease = lambda o: [(x.holder, x.t) for x in o.leases]  # noqa: E731
    assert lease(base) == lease(what_if)  # the election itself draws nothing from the agent's stream
