"""L2 announcements and lease failover on the harness side.

Two tiers in one file:

* ``pure``: what the real side's records become (audit log → lease transitions,
  ARP watch → gratuitous ARPs, the consistency check), the one outage definition,
  the two-sample test, and the runner's L2 diff on given observations (both
  backends replaced by stand-ins that report fixed observations);
* ``harness``: the six L2 scenarios on both backends (root, bcc, Mininet, etcd).
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness import runner
from harness.analysis import failover_outage, holder_at, ks_2samp
from harness.real import arping_observation, garp_observations, lease_transitions, real_unavailable_reason
from harness.realcluster import L2Consistency
from twin.model.observations import (ArpObservation, FaultRecord, L2Check, LeaseTransition, Observations,
                                     RequestRecord)

ROOT = Path(__file__).resolve().parents[2]
LEASE = "cilium-l2announce-default-svc1"
RESPONDER = str(ROOT / "scenarios/l2-responder-missing.yaml")
pure = pytest.mark.pure


def _write(t, holder, verb="update", lease=LEASE, transitions=0):
    return {"t": t, "verb": verb, "namespace": "kube-system", "lease": lease, "holder": holder,
            "previous_holder": None, "transitions": transitions, "resourceVersion": str(int(t * 1000))}


@pure
def test_audit_log_renewals_are_not_transitions_and_a_takeover_is_numbered_per_lease_on_the_run_clock():
    log = [_write(100.0, "k8s-w1", "create"), _write(100.2, "k8s-w1"), _write(100.4, "k8s-w1"),
           _write(104.0, "k8s-w2", transitions=1), _write(104.2, "k8s-w2"),
           _write(101.0, "k8s-w2", "create", lease="other")]
    got = lease_transitions(log, t0=99.0)
    mine = [x for x in got if x.lease == LEASE]
    assert [(x.index, x.holder, x.previous, x.t) for x in mine] == [(0, "k8s-w1", None, 1.0), (1, "k8s-w2", "k8s-w1", 5.0)]
    assert mine[1].transitions == 1
    assert [(x.lease, x.index) for x in got if x.lease == "other"] == [("other", 0)]


@pure
def test_a_release_is_not_a_transition_but_the_acquisition_after_it_is():
    log = [_write(1.0, "k8s-w1", "create"), _write(2.0, ""), _write(3.0, "k8s-w1")]
    assert [(x.index, x.holder, x.previous) for x in lease_transitions(log, 0.0)] == [(0, "k8s-w1", None), (1, "k8s-w1", None)]


@pure
def test_only_gratuitous_arp_for_announced_ips_is_recorded_with_the_senders_node():
    events = [{"t": 10.5, "op": 1, "sip": "10.10.200.1", "tip": "10.10.200.1", "sha": "AA:00:00:00:00:02"},
              {"t": 10.6, "op": 1, "sip": "192.168.10.101", "tip": "192.168.10.200", "sha": "aa:00:00:00:00:02"},
              {"t": 10.7, "op": 2, "sip": "192.168.10.102", "tip": "192.168.10.102", "sha": "aa:00:00:00:00:03"},
              {"t": 11.0, "op": 2, "sip": "10.10.200.1", "tip": "10.10.200.1", "sha": "aa:00:00:00:00:03"}]
    got = garp_observations(events, 10.0, {"aa:00:00:00:00:02": "k8s-w1", "aa:00:00:00:00:03": "k8s-w2"}, {"10.10.200.1"})
    assert [(g.key, g.nodes, g.t) for g in got] == [("garp 10.10.200.1#0", ("k8s-w1",), 0.5),
                                                     ("garp 10.10.200.1#1", ("k8s-w2",), 1.0)]


@pure
def test_arping_replies_keep_arrival_order_and_an_unknown_mac_stays_a_mac():
    a = arping_observation("a", 3, "10.10.200.1", 2.0, [(0.2, "aa:00:00:00:00:09"), (0.1, "AA:00:00:00:00:02")],
                           {"aa:00:00:00:00:02": "k8s-w1"})
    assert a.nodes == ("k8s-w1", "aa:00:00:00:00:09") and a.key == "a@3" and a.kind == "arping"


def _rows(times_outcomes, loop="client"):
    return [RequestRecord(loop, i, t, "default/svc1", "10.10.200.1:80", None, o) for i, (t, o) in enumerate(times_outcomes)]


@pure
def test_outage_runs_from_the_first_failure_after_the_fault_to_the_first_answer_after_the_last_failure():
    rows = _rows([(1.0, "answered"), (2.0, "answered"), (2.1, "timeout"), (2.5, "answered"), (2.9, "timeout"),
                  (3.3, "timeout"), (3.7, "answered"), (3.8, "answered")])
    o = failover_outage(rows, "client", 2.05)
    assert o["outage_s"] == pytest.approx(1.6) and o["failures"] == 3 and not o["persisting"]
    assert o["first_failure_s"] == pytest.approx(0.05) and o["recovered_s"] == pytest.approx(1.65)
    assert failover_outage(_rows([(1.0, "answered"), (3.0, "answered")]), "client", 2.0)["outage_s"] == 0.0


@pure
def test_an_outage_that_outlasts_the_loop_is_persisting_with_a_lower_bound():
    o = failover_outage(_rows([(1.0, "answered"), (2.0, "timeout"), (2.3, "timeout"), (2.6, "EHOSTUNREACH")]), "client", 1.5)
    assert o["persisting"] and o["outage_s"] == pytest.approx(0.6) and o["recovered_s"] is None


@pure
def test_holder_at_a_time_is_the_last_transition_before_it():
    xs = [LeaseTransition(LEASE, 0, 1.0, "k8s-w1"), LeaseTransition(LEASE, 1, 5.0, "k8s-w2", "k8s-w1")]
    assert [holder_at(xs, LEASE, t) for t in (0.5, 1.0, 4.9, 5.0, 9.0)] == [None, "k8s-w1", "k8s-w1", "k8s-w2", "k8s-w2"]


@pure
def test_two_sample_ks_separates_shifted_samples_and_accepts_same_distribution():
    rng = random.Random(7)
    a = [rng.uniform(2, 3) for _ in range(40)]
    same = ks_2samp(a, [rng.uniform(2, 3) for _ in range(400)])
    shifted = ks_2samp(a, [rng.uniform(2.6, 3.6) for _ in range(400)])
    assert same["p_value"] > 0.01 and shifted["p_value"] < 1e-6
    assert ks_2samp([1.0, 2.0], [1.0, 2.0])["statistic"] == 0.0


LEASES = {LEASE: {"ips": {"10.10.200.1"}, "interfaces": {"k8s-w1": ("ens5",), "k8s-w2": ("ens5",)}}}


def _status(node, held=True, alive=True):
    return {node: {"held": {LEASE: 1.0} if held else {}, "elector_alive": alive, "responder_fault": False}}


@pure
def test_consistency_check_reports_a_held_lease_without_responder_once_it_outlasts_the_grace():
    c = L2Consistency(grace_s=0.5)
    for now in (10.0, 10.2, 10.4, 10.6):
        c.observe(now, {LEASE: "k8s-w1"}, _status("k8s-w1"), {"k8s-w1": set()}, {"k8s-w1": {"ens5": True}}, LEASES)
    [chk] = c.checks(t0=9.0)
    assert (chk.problem, chk.lease, chk.node, chk.since, chk.interface) == ("responder-missing", LEASE, "k8s-w1", 1.0, None)


@pure
def test_consistency_check_ignores_the_short_window_between_winning_and_programming_and_lost_leases():
    c = L2Consistency(grace_s=0.5)
    c.observe(10.0, {LEASE: "k8s-w1"}, _status("k8s-w1"), {"k8s-w1": set()}, {}, LEASES)
    c.observe(10.2, {LEASE: "k8s-w1"}, _status("k8s-w1"), {"k8s-w1": {("10.10.200.1", "ens5")}}, {}, LEASES)
    # the API still names a partitioned holder whose agent already gave the lease up: not a missing responder
    for now in (11.0, 11.5, 12.0):
        c.observe(now, {LEASE: "k8s-w1"}, _status("k8s-w1", held=False), {"k8s-w1": set()}, {}, LEASES)
    # a crashed node's dead elector says nothing either
    for now in (13.0, 13.5, 14.0):
        c.observe(now, {LEASE: "k8s-w1"}, _status("k8s-w1", alive=False), {"k8s-w1": set()}, {}, LEASES)
    assert c.checks(0.0) == []


@pure
def test_consistency_check_reports_a_down_interface_of_a_renewing_holder_with_its_name():
    c = L2Consistency(grace_s=0.5)
    for now in (5.0, 5.3, 5.6):
        c.observe(now, {LEASE: "k8s-w2"}, _status("k8s-w2"), {"k8s-w2": {("10.10.200.1", "ens5")}},
                  {"k8s-w2": {"ens5": False}}, LEASES)
    [chk] = c.checks(0.0)
    assert (chk.problem, chk.node, chk.interface, chk.since) == ("interface-down", "k8s-w2", "ens5", 5.0)


class _Fixed:
    """A backend that reports fixed observations."""

    def __init__(self, name, obs):
        self.name, self.obs = name, obs

    def unavailable_reason(self):
        return None

    def run(self, inputs, seed):
        return self.obs


def _responder_missing_obs(name, holder, check_node, arp_nodes=()):
    o = Observations(name)
    o.faults = [FaultRecord(0.01, "responder-missing", "k8s-w1", 0), FaultRecord(0.02, "responder-missing", "k8s-w2", 1)]
    o.leases = [LeaseTransition(LEASE, 0, 0.1, holder)]
    o.arp = [ArpObservation("unanswered", "arping", 3.1, "10.10.200.1", tuple(arp_nodes), step=4),
             ArpObservation("garp", "garp", 0.12, "10.10.200.1", (holder,), index=0)]
    if check_node:
        o.l2_checks = [L2Check("responder-missing", LEASE, check_node, 0.6)]
    return o


def _run(monkeypatch, tmp_path, twin, real):
    monkeypatch.setattr(runner, "backends", lambda: {"twin": _Fixed("twin", twin), "real": _Fixed("real", real)})
    return runner.run_scenario(RESPONDER, "both", str(tmp_path))


@pure
def test_different_holders_with_the_same_finding_agree(monkeypatch, tmp_path):
    twin = _responder_missing_obs("twin", "k8s-w1", "k8s-w1")
    twin.predictions = [{"kind": "lease-transitions", "lease": LEASE, "lo": 0, "hi": 1, "samples": [0, 0, 1]}]
    r = _run(monkeypatch, tmp_path, twin, _responder_missing_obs("real", "k8s-w2", "k8s-w2"))
    assert r["disagreements"] == [] and r["expectation_failures"] == [] and r["ok"], r
    assert r["observations"]["real"]["measurements"]["leases"][LEASE]["predicted"] == [0, 1]
    assert r["observations"]["real"]["measurements"]["checks"][0]["node"] == "k8s-w2"


@pure
def test_a_finding_on_one_side_only_a_holder_outside_the_candidates_and_an_unmet_arping_are_reported(monkeypatch, tmp_path):
    real = _responder_missing_obs("real", "k8s-s", None, arp_nodes=("k8s-s",))
    real.leases.append(LeaseTransition(LEASE, 1, 2.0, "k8s-w1", "k8s-s", 1))
    real.leases.append(LeaseTransition(LEASE, 2, 3.0, "k8s-w2", "k8s-w1", 2))
    twin = _responder_missing_obs("twin", "k8s-w1", "k8s-w1")
    twin.predictions = [{"kind": "lease-transitions", "lease": LEASE, "lo": 0, "hi": 1, "samples": [0, 1]}]
    r = _run(monkeypatch, tmp_path, twin, real)
    fields = {(d["key"], d["field"]) for d in r["disagreements"]}
    assert (f"responder-missing {LEASE}", "<row>") in fields
    assert (f"{LEASE}#0", "holder") in fields
    assert ("unanswered@4", "answering") in fields
    assert (LEASE, "lease transitions") in fields  # real leaseTransitions 2, twin predicts 0-1
    assert [(e["backend"], e["field"]) for e in r["expectation_failures"]] == [("real", "arping")]
    assert not r["ok"]


def _crash_scenario(tmp_path) -> str:
    """A node-crash scenario whose loop runs from a pod (loadable on any branch of the inputs)."""
    seed = ROOT / "examples"
    path = tmp_path / "crash.yaml"
    path.write_text(f"""
scenario: crash
manifests: [{seed}/seed/pods.yaml, {seed}/seed/l2.yaml]
values: {seed}/values/seed.yaml
settings: {{outage_tolerance: 100ms, repeats: 3}}
steps:
  - label: {{object: Service/default/svc1, set: {{color: blue}}}}
  - loop: {{name: client, from: default/netpod, to: svc:default/svc1, port: 80, interval: 100ms, duration: 6s}}
  - wait: 2s
  - fault: {{kind: node-crash, holder_of: default/svc1}}
  - await: {{loop: client}}
""")
    return str(path)


def _crash_obs(name, outage_end):
    o = Observations(name)
    o.leases = [LeaseTransition(LEASE, 0, 0.1, "k8s-w1"), LeaseTransition(LEASE, 1, 5.5, "k8s-w2", "k8s-w1")]
    o.faults = [FaultRecord(2.0, "node-crash", "k8s-w1", 3, LEASE)]
    o.requests = _rows([(1.9, "answered"), (2.05, "timeout"), (3.0, "timeout"), (outage_end, "answered")])
    o.predictions = [{"kind": "failover", "step": 3, "fault": "node-crash", "node": "k8s-w1", "lease": LEASE,
                      "loop": "client", "outage_lo": 2.0, "outage_hi": 4.0, "samples": [2.5, 3.0, 3.5, 3.9],
                      "derivation": "test"}]
    return o


@pure
def test_repeat_records_every_real_outage_against_the_twin_interval_and_tests_the_distribution(tmp_path, monkeypatch):
    from harness import repeat
    ends = iter([5.0, 5.5, 9.0])  # outages 2.95, 3.45 (inside [2, 4]) and 6.95 (outside)

    class Twin:
        def run(self, inputs, seed):
            return _crash_obs("twin", 5.2)

    class Real:
        def run(self, inputs, seed):
            return _crash_obs("real", next(ends))

    monkeypatch.setattr(repeat, "TwinBackend", Twin)
    monkeypatch.setattr(repeat, "RealBackend", Real)
    r = repeat.repeat_scenario(_crash_scenario(tmp_path), log=lambda *_: None)
    [e] = r["faults"]
    assert e["predicted"] == [2.0, 4.0] and e["width_s"] == 2.0 and r["repeats"] == 3
    assert [x["outage_s"] for x in e["real_runs"]] == [2.95, 3.45, 6.95]
    assert [x["inside"] for x in e["real_runs"]] == [True, True, False] and not e["all_inside_tolerance"]
    assert e["ks"]["n"] == 3 and e["ks"]["m"] == 4 and 0 <= e["ks"]["p_value"] <= 1
    # at the loop's resolution (the scenario's loop interval): outages in whole request intervals
    res = e["resolution_s"]
    assert e["ks_at_resolution"]["n"] == 3 and sum(v["real"] for v in e["histogram"].values()) == 3
    assert e["histogram"][f"{round(2.95 / res) * res:.1f}"]["real"] >= 1
    md = repeat.render_md([r], {"when": "now", "host": "h", "kernel": "k"})
    assert "the same at the measurement's resolution" in md
    assert "| 3 | 6.95 | 2 | k8s-w1 → k8s-w2 | NO | NO |" in md


# -- both backends, the real side on this kernel ----------------------------------------------

_reason = real_unavailable_reason()
needs_real = pytest.mark.skipif(_reason is not None, reason=f"real datapath unavailable: {_reason}")


def _both(path, tmp_path):
    r = runner.run_scenario(str(ROOT / "scenarios" / path), "both", str(tmp_path))
    assert r["status"] == {"twin": {"state": "ran"}, "real": {"state": "ran"}}, r["status"]
    assert r["disagreements"] == [], r["disagreements"]
    assert r["expectation_failures"] == [], r["expectation_failures"]
    return r


@pytest.mark.harness
@needs_real
def test_seed_l2_services_are_unannounced_until_labelled_then_one_worker_answers_arp_and_curl(tmp_path):
    r = _both("seed-l2-announcements.yaml", tmp_path)
    real = r["observations"]["real"]
    arp = {a["name"]: a for a in real["arp"] if a["kind"] == "arping"}
    assert arp["svc1-unannounced"]["nodes"] == [] and arp["svc2-still-unannounced"]["nodes"] == []
    assert set(arp["svc1-announced"]["nodes"]) in ({"k8s-w1"}, {"k8s-w2"})
    assert {x["outcome"] for x in real["traffic"] if x["name"] == "curl-svc1"} == {"answered"}
    assert all(x["frontend"] == "10.10.200.1:80" for x in real["traffic"])


@pytest.mark.harness
@needs_real
@pytest.mark.parametrize("scenario", ["l2-lease-loss.yaml", "l2-node-crash.yaml"])
def test_the_lease_moves_to_the_other_worker_and_the_outage_lies_in_the_predicted_interval(tmp_path, scenario):
    r = _both(scenario, tmp_path)
    [fo] = r["observations"]["real"]["measurements"]["failovers"]
    assert fo["new_holder"] and fo["new_holder"] != fo["node"] and not fo["persisting"]
    assert "predicted_outage_s" in fo
    assert any(a["kind"] == "garp" for a in r["observations"]["real"]["arp"])


@pytest.mark.harness
@needs_real
def test_a_down_interface_on_a_renewing_holder_keeps_the_outage_and_is_reported(tmp_path):
    r = _both("l2-nic-down.yaml", tmp_path)
    m = r["observations"]["real"]["measurements"]
    [fo] = m["failovers"]
    assert fo["persisting"] and fo["new_holder"] is None
    [chk] = [c for c in m["checks"] if c["problem"] == "interface-down"]
    assert chk["lease"] == "cilium-l2announce-default-svc-lb" and chk["node"] == fo["node"] and chk["interface"] == "ens5"


@pytest.mark.harness
@needs_real
def test_a_lease_held_without_a_programmed_responder_is_reported_with_holder_and_since(tmp_path):
    r = _both("l2-responder-missing.yaml", tmp_path)
    [chk] = r["observations"]["real"]["measurements"]["checks"]
    holders = r["observations"]["real"]["measurements"]["leases"][LEASE]["holders"]
    assert chk["problem"] == "responder-missing" and chk["node"] == holders[-1] and chk["since"] > 0


@pytest.mark.harness
@needs_real
def test_throttled_renewals_lose_leases_as_often_as_the_twin_predicts(tmp_path):
    r = _both("l2-rate-limit.yaml", tmp_path)
    leases = r["observations"]["real"]["measurements"]["leases"]
    assert len(leases) == 12 and all(v["acquired"] and "predicted" in v for v in leases.values())
    # renewals missed their deadline: the real electors gave leases up (OnStoppedLeading) and took them again
    assert sum(v["lost"] for v in leases.values()) > 0


class _Topo:
    """Records what the step handlers asked of the topology (the control-plane helper's methods)."""

    def __init__(self):
        self.calls = []

    def _act(self, what, node):
        import time as _t
        self.calls.append((what, node))
        return _t.monotonic()

    def external_add_pool(self, net):
        self.calls.append(("pool", net))

    def partition(self, node):
        return self._act("partition", node)

    def heal(self, node):
        return self._act("heal", node)

    def nic_down(self, node):
        return self._act("nic_down", node)

    def node_crash(self, node):
        return self._act("node_crash", node)

    def mac_to_node(self):
        return {"aa:00:00:00:00:01": "k8s-w1", "aa:00:00:00:00:02": "k8s-w2"}

    def external_arping(self, ip, count, timeout):
        self.calls.append(("arping", ip, count))
        return [(0.0, "AA:00:00:00:00:02")] * count

    def arp_events(self):
        return [{"t": 0.0, "op": 1, "sip": "10.10.200.1", "tip": "10.10.200.1", "sha": "aa:00:00:00:00:02"}]


class _Agent:
    def __init__(self, topo, node):
        self.topo, self.node = topo, node

    def kill_agent(self):
        import time as _t
        self.topo.calls.append(("kill_agent", self.node))
        return _t.monotonic()

    def inject_responder_fault(self):
        import time as _t
        self.topo.calls.append(("responder_fault", self.node))
        return _t.monotonic()

    def l2_status(self):
        return {"held": {}, "elector_alive": True, "responder_fault": False}


@pure
def test_fault_and_arping_steps_act_on_the_holder_the_api_server_names(tmp_path):
    import time as _t
    from harness.inputs import load_run_inputs
    from harness.real import RealBackend, _RealSteps
    from harness.realcluster import L2Monitor, L2Options, RealCluster
    from twin.model.run import dispatch
    inputs = load_run_inputs(_crash_scenario(tmp_path))
    from twin.semantics.election import ElectionParams
    rc = RealCluster(inputs.cluster, l2=L2Options())
    rc.params = ElectionParams(3.0, 1.0, 0.2)  # what __enter__ takes from the values
    rc.topo = _Topo()
    rc.agents = {n: _Agent(rc.topo, n) for n in ("k8s-s", "k8s-w1", "k8s-w2")}
    t0 = _t.monotonic() - 10

    class _Control:
        def lease_log(self):
            now = _t.monotonic()
            return [_write(now - 2.0, "k8s-w1", "create"), {**_write(now - 1.0, "k8s-w1"), "verb": "get"},
                    _write(now - 0.5, "k8s-w2", transitions=1)]

    rc.control = _Control()
    obs, log = Observations("real"), []
    steps = _RealSteps(inputs, rc, None, obs, log, t0, None)
    fault = next(s for s in inputs.scenario.steps if s.kind == "fault")
    dispatch(steps, fault)
    assert rc.topo.calls == [("kill_agent", "k8s-w2"), ("node_crash", "k8s-w2")]
    assert [(f.kind, f.node, f.lease) for f in obs.faults] == [("node-crash", "k8s-w2", LEASE)]
    from twin.model.scenario import Arping, Step
    dispatch(steps, Step(9, "arping", name="a", arping=Arping("a", service="default/svc1", count=2)))
    assert obs.arp[-1].nodes == ("k8s-w2", "k8s-w2") and obs.arp[-1].ip == "10.10.200.1"
    monitor = L2Monitor(rc)
    RealBackend._l2_records(inputs, rc, monitor, obs, log, t0)
    assert [(x.holder, x.previous) for x in obs.leases] == [("k8s-w1", None), ("k8s-w2", "k8s-w1")]
    assert [a.key for a in obs.arp if a.kind == "garp"] == ["garp 10.10.200.1#0"]
    assert {e["event"] for e in log} >= {"fault", "arping"}
    rc._external_pools()
    assert ("pool", "10.10.200.0/29") in rc.topo.calls


@pure
def test_a_killed_agent_is_not_waited_for_and_a_live_agents_failure_still_fails_the_publish():
    from harness.realcluster import RealCluster
    from twin.model.findings import TwinError

    class Report:
        def __init__(self, ok, error=""):
            self.ok, self.error, self.seconds, self.changes = ok, error, 0.0, {}

    class Agent:
        def __init__(self, killed=None, ok=True):
            self.killed, self.ok, self.asked = killed, ok, []

        def wait_for(self, version, timeout):
            self.asked.append(version)
            if self.killed is not None:
                raise AssertionError("a killed agent reconciles nothing: nobody may wait for it")
            return Report(self.ok, "" if self.ok else "boom")

    rc = RealCluster.__new__(RealCluster)
    rc.agents = {"k8s-w1": Agent(killed=12.5), "k8s-w2": Agent()}
    assert set(rc.wait(3)) == {"k8s-w2"} and rc.agents["k8s-w2"].asked == [3]
    rc.agents["k8s-w2"] = Agent(ok=False)
    with pytest.raises(TwinError, match="k8s-w2: boom"):
        rc.wait(4)
