"""Throughput records: iperf3's JSON parsed (receiver goodput, streams, intervals,
retransmits, iperf3's own error), the twin-vs-real diff with rate_tolerance, Jain's
fairness, and the report's one line per record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.inputs import load_run_inputs
from harness.iperf import IperfError, PortBook, client_argv, parse_iperf_json
from harness.runner import diff_throughput, jain_fairness, rate_bounds
from reports.bandwidth_text import record_line, throughput_lines
from reports.terminal import render
from twin.model.observations import Observations, Rate, RateInterval, ThroughputRecord

pytestmark = pytest.mark.pure
ROOT = Path(__file__).resolve().parents[2]


def iperf_doc(reverse: bool, streams=(4.8e6, 4.7e6), sum_bps=9.5e6, retr=3) -> dict:
    ivals = [{"sum": {"start": 0, "end": 1.0, "bits_per_second": 9.4e6, "sender": not reverse, "omitted": False}},
             {"sum": {"start": 1.0, "end": 2.0, "bits_per_second": 9.6e6, "sender": not reverse, "omitted": False}}]
    doc = {"start": {"test_start": {"reverse": int(reverse), "num_streams": len(streams)}},
           "intervals": ivals,
           "end": {"streams": [{"sender": {"bits_per_second": b + 1}, "receiver": {"bits_per_second": b}} for b in streams],
                   "sum_sent": {"bits_per_second": sum_bps + 1e4, "retransmits": retr, "seconds": 2.0},
                   "sum_received": {"bits_per_second": sum_bps, "seconds": 2.0},
                   "cpu_utilization_percent": {"host_total": 12.5, "remote_total": 37.5}}}
    if not reverse:  # the server received: its intervals come with --get-server-output
        doc["server_output_json"] = {"intervals": [
            {"sum": {"start": 0, "end": 1.0, "bits_per_second": 9.3e6, "sender": False}},
            {"sum": {"start": 1.0, "end": 2.0, "bits_per_second": 9.7e6, "sender": False}}]}
    return doc


def test_iperf_reverse_json_gives_receiver_goodput_streams_intervals_and_retransmits():
    r = parse_iperf_json(json.dumps(iperf_doc(True)))
    assert r.goodput_bps == 9.5e6 and r.streams_bps == (4.8e6, 4.7e6) and r.retransmits == 3 and r.reverse
    assert r.intervals == ((0.0, 1.0, 9.4e6), (1.0, 2.0, 9.6e6))
    assert r.cpu_s == 1.0  # (12.5 % + 37.5 %) of 2 s: CPU seconds of both iperf3 processes


def test_iperf_forward_json_takes_the_servers_receiver_intervals():
    r = parse_iperf_json(json.dumps(iperf_doc(False)))
    assert r.intervals == ((0.0, 1.0, 9.3e6), (1.0, 2.0, 9.7e6)) and not r.reverse


def test_iperf_failure_raises_with_iperf3s_own_error():
    with pytest.raises(IperfError, match="unable to connect to server: Connection refused"):
        parse_iperf_json(json.dumps({"start": {}, "intervals": [], "end": {},
                                     "error": "unable to connect to server: Connection refused"}))
    with pytest.raises(IperfError, match="no JSON output"):
        parse_iperf_json("iperf3: error - something")
    with pytest.raises(IperfError, match="sum_received"):
        parse_iperf_json(json.dumps({"start": {}, "end": {}}))


def test_client_argv_asks_for_the_server_pod_sending_with_reverse():
    argv = client_argv("10.0.1.5", 5201, 3.0, 1.0, 2, True)
    assert argv[:3] == ["iperf3", "-c", "10.0.1.5"] and "-R" in argv and "-J" in argv
    assert argv[argv.index("-P") + 1] == "2" and argv[argv.index("-t") + 1] == "3"
    assert "-R" not in client_argv("10.0.1.5", 5201, 3.0, 1.0, 1, False)


def test_port_book_gives_distinct_ports_to_runs_on_one_server_pod_at_once():
    book = PortBook()
    a, b = book.take("default/s", 5201), book.take("default/s", 5201)
    assert (a, b) == (5201, 5202) and book.take("default/other", 5201) == 5201
    book.give("default/s", a)
    assert book.take("default/s", 5201) == 5201


def test_jain_fairness_is_one_for_equal_streams_and_one_over_n_for_a_single_winner():
    assert jain_fairness([5e6, 5e6, 5e6, 5e6]) == 1.0
    assert jain_fairness([1e7, 0, 0, 0]) == 0.25
    assert jain_fairness([]) is None


def test_rate_bounds_widen_the_interval_and_have_no_upper_bound_without_hi():
    assert rate_bounds({"bps": 9.5e6, "lo": 9e6, "hi": 1e7}, 0.05) == (9e6 * 0.95, 1e7 * 1.05)
    assert rate_bounds({"bps": 5e9, "lo": 2e9, "hi": None}, 0.1) == (2e9 * 0.9, None)


def rec(name, bps, lo=None, hi=None, streams=(), limit=10_000_000, same_node=False, mech="htb", step=0):
    return ThroughputRecord(name, step, 0.0, "default/netperf-server", "default/netperf-client", "reverse",
                            max(1, len(streams)), 3.0, same_node, limit, Rate(bps, lo, hi),
                            tuple(Rate(*s) if isinstance(s, tuple) else Rate(s) for s in streams),
                            (RateInterval(0, 1, Rate(bps, lo, hi)),) if lo else (RateInterval(0, 1, Rate(bps)),),
                            None if lo else 4, "model" if lo else mech)


@pytest.fixture(scope="module")
def inputs():
    return load_run_inputs(str(ROOT / "scenarios/seed-bandwidth.yaml"))


def obs(name, *records, mechanism="htb"):
    o = Observations(name, throughput=list(records))
    o.bandwidth = {"mechanism": mechanism, "reason": "no sch_fq" if name == "real" else "calibration"}
    return o


def test_real_goodput_inside_the_twins_interval_agrees_and_reports_the_ratio(inputs):
    tw = obs("twin", rec("cross-node-10M", 9.56e6, 9.4e6, 9.6e6, streams=[(9.56e6, 9.4e6, 9.6e6)]), mechanism="model")
    re_ = obs("real", rec("cross-node-10M", 9.5e6, streams=[9.5e6]))
    dis, sec = diff_throughput(inputs, tw, re_)
    assert dis == []
    row = sec["records"][0]
    assert row["ratio"] == round(9.5e6 / 9.56e6, 4) and row["inside"] is True
    assert row["intervals"] == {"compared": 1, "inside": 1, "rows": row["intervals"]["rows"]}
    assert sec["mechanism"] == {"twin": "model", "real": "htb"}


def test_real_goodput_outside_the_widened_interval_is_a_goodput_disagreement(inputs):
    tw = obs("twin", rec("cross-node-10M", 9.56e6, 9.4e6, 9.6e6))
    re_ = obs("real", rec("cross-node-10M", 9.6e6 * 1.06))  # 6 % above hi, tolerance 5 %
    dis, _ = diff_throughput(inputs, tw, re_)
    assert [d["field"] for d in dis] == ["goodput"]
    re_ok = obs("real", rec("cross-node-10M", 9.6e6 * 1.04))
    assert diff_throughput(inputs, tw, re_ok)[0] == []


def test_without_an_upper_bound_only_a_real_goodput_below_the_interval_disagrees(inputs):
    tw = obs("twin", rec("same-node-unlimited", 8e9, 4e9, None, limit=10_000_000, same_node=True))
    assert diff_throughput(inputs, tw, obs("real", rec("same-node-unlimited", 30e9, same_node=True)))[0] == []
    dis, _ = diff_throughput(inputs, tw, obs("real", rec("same-node-unlimited", 3e9, same_node=True)))
    assert [d["field"] for d in dis] == ["goodput"]


def test_different_facts_are_disagreements_and_unfair_streams_are_reported_not_failed(inputs):
    tw = obs("twin", rec("cross-node-10M", 9.5e6, 9.3e6, 9.7e6,
                         streams=[(4.75e6, 4.0e6, 5.5e6), (4.75e6, 4.0e6, 5.5e6)]))
    re_ = obs("real", rec("cross-node-10M", 9.5e6, streams=[8.0e6, 1.5e6], limit=5_000_000, same_node=True))
    dis, sec = diff_throughput(inputs, tw, re_)
    assert sorted(d["field"] for d in dis) == ["limit_bps", "same_node"]
    assert sec["records"][0]["fairness"]["real"] == jain_fairness([8.0e6, 1.5e6])
    assert [s["inside"] for s in sec["records"][0]["streams"]] == [False, False]


def test_a_record_on_one_side_only_is_a_disagreement_and_one_backend_alone_is_not(inputs):
    tw = obs("twin", rec("cross-node-10M", 9.5e6, 9.3e6, 9.7e6))
    dis, _ = diff_throughput(inputs, tw, obs("real"))
    assert [(d["field"], d["twin"], d["real"]) for d in dis] == [("<row>", True, False)]
    dis, sec = diff_throughput(inputs, None, obs("real", rec("cross-node-10M", 9.5e6)))
    assert dis == [] and sec["records"][0]["real"] == 9.5e6 and sec["records"][0]["twin"] is None


def test_report_prints_limit_twin_interval_real_ratio_retransmits_and_mechanism(inputs):
    tw = obs("twin", rec("cross-node-10M", 9.56e6, 9.4e6, 9.6e6), mechanism="model")
    re_ = obs("real", rec("cross-node-10M", 9.5e6))
    _, sec = diff_throughput(inputs, tw, re_)
    line = record_line(sec["records"][0])
    assert line == ("cross-node-10M (default/netperf-server → default/netperf-client); limit 10.000 Mbit/s; "
                    "twin 9.560 [9.400, 9.600] Mbit/s; real 9.500 Mbit/s; ratio 0.994; retransmits 4; "
                    "mechanism htb; intervals 1/1 inside")
    result = {"scenario": "seed-bandwidth", "backends": ["twin", "real"], "observations": {
        n: {**o.as_dict(), "measurements": {}} for n, o in (("twin", tw), ("real", re_))},
        "disagreements": [], "expectation_failures": [], "throughput": sec, "ok": True}
    text = render(result)
    assert "bandwidth manager [real]: mechanism htb (no sch_fq)" in text and line in text


def test_report_marks_a_record_outside_and_same_node_limits_as_not_applied(inputs):
    tw = obs("twin", rec("same-node-unlimited", 8e9, 4e9, 12e9, same_node=True))
    re_ = obs("real", rec("same-node-unlimited", 2e9, same_node=True))
    _, sec = diff_throughput(inputs, tw, re_)
    line = record_line(sec["records"][0])
    assert "limit 10.000 Mbit/s (same node: not applied)" in line and line.endswith("OUTSIDE")


def test_report_reads_records_from_the_observations_of_a_result_without_the_section():
    o = obs("real", rec("typo-zero", 6e9, limit=None), mechanism="none")
    lines = throughput_lines({"observations": {"real": o.as_dict()}})
    assert lines[0].startswith("  bandwidth manager [real]: mechanism none")
    assert "typo-zero" in lines[-1] and "unlimited" in lines[-1] and "real 6000.000 Mbit/s" in lines[-1]


# -- the result's bandwidth section and the limiter asked of every agent (no kernel: fake agents) --

class _AgentWithLimiter:
    bandwidth_mechanism = type("Mechanism", (), {"name": "htb"})()

    def __init__(self, host, store, socket_lb=False, tables=None, bandwidth: bool = False, **kw):
        self.kw = {"bandwidth": bandwidth, **kw}

    def bandwidth_status(self) -> dict:
        return {"mechanism": "htb", "reason": "sch_fq is not available", "fq_available": False, "device": "eth0",
                "limits": {"default/netperf-server": {"ip": "172.16.1.10", "bytes_per_s": 1_250_000,
                                                      "rate_bps": 10_000_000, "class": "1:10"}}}


def test_a_run_needing_the_limiter_asks_every_agent_for_it_and_records_the_mechanism(inputs):
    from harness.realcluster import RealCluster
    rc = RealCluster(inputs.cluster, socket_lb=False, bandwidth=True)
    agent = rc._make_agent(_AgentWithLimiter, type("H", (), {"name": "k8s-w1"})(), None)
    assert agent.kw["bandwidth"] is True
    rc.agents = {"k8s-w1": agent, "k8s-w2": _AgentWithLimiter(None, None)}
    st = rc.bandwidth_state()
    assert st["mechanism"] == "htb" and st["reason"] == "sch_fq is not available"
    assert st["nodes"]["k8s-w1"]["limits"]["default/netperf-server"]["rate_bps"] == 10_000_000
    assert rc.node_mechanism("k8s-w1") == "htb"
    assert RealCluster(inputs.cluster, bandwidth=False).bandwidth_state()["mechanism"] == "none"
    assert RealCluster(inputs.cluster, bandwidth=False)._make_agent(
        _AgentWithLimiter, type("H", (), {"name": "k8s-w1"})(), None).kw["bandwidth"] is False


def test_an_iperf3_result_becomes_a_throughput_record_with_the_limit_when_the_step_started(inputs):
    from harness.iperf import IperfResult
    from harness.real import throughput_record
    step = next(s for s in inputs.scenario.steps if s.kind == "throughput")
    res = IperfResult(9.51e6, (9.51e6,), ((0.0, 1.0, 9.4e6), (1.0, 2.0, 9.6e6)), 2, 3.0, True,
                      ("iperf3", "-c", "172.16.1.10", "-R"), 5201, "172.16.1.10", 3.05)
    r = throughput_record(step, {"t": 0.5, "limit_bps": 10_000_000, "same_node": False, "mechanism": "htb",
                                 "raw": "10M", "limit_note": ""}, res)
    assert (r.name, r.sender, r.receiver, r.limit_bps, r.same_node, r.mechanism, r.retransmits) == \
        ("cross-node-10M", "default/netperf-server", "default/netperf-client", 10_000_000, False, "htb", 2)
    assert r.goodput == Rate(9.51e6) and r.streams == (Rate(9.51e6),)
    assert r.intervals[1] == RateInterval(1.0, 2.0, Rate(9.6e6))
    assert "iperf3 -c 172.16.1.10 -R" in r.evidence and "limited to 10000000 bit/s" in r.basis
