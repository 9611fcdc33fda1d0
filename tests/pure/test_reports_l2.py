"""The L2 sections of `twin run`'s text report, rendered from result dicts of the
documented shapes (LeaseTransition, ArpObservation, FaultRecord, L2Check and the
twin's failover / lease-transition predictions)."""
from __future__ import annotations

import pytest

from reports.l2_text import current_holders, l2_lines, measured_failover
from reports.terminal import render
from twin.model.observations import ArpObservation, FaultRecord, L2Check, LeaseTransition, Observations, RequestRecord

pytestmark = pytest.mark.pure

LEASE = "cilium-l2announce-default-svc1"


def observations(backend: str, outage_at: list[float], holder_after: str = "k8s-w2") -> dict:
    """One backend's observations of a lease-loss run: k8s-w1 takes the lease, is cut
    off at 4 s, ``holder_after`` takes over; the loop fails at the times given."""
    obs = Observations(backend)
    obs.leases += [LeaseTransition(LEASE, 0, 0.8, "k8s-w1", None, 0),
                   LeaseTransition(LEASE, 1, 7.1, holder_after, "k8s-w1", 1),
                   LeaseTransition("cilium-l2announce-default-svc2", 0, 0.9, "k8s-w2", None, 0)]
    obs.arp += [ArpObservation("who", "arping", 2.0, "10.10.200.1", ("k8s-w1",), ("02:00:00:00:00:01",), step=2),
                ArpObservation("garp", "garp", 7.2, "10.10.200.1", (holder_after,), ("02:00:00:00:00:02",), index=0),
                ArpObservation("after", "arping", 9.0, "10.10.200.1", (), (), step=6)]
    obs.faults.append(FaultRecord(4.0, "partition", "k8s-w1", step=4, lease=LEASE))
    for i in range(60):
        t = 3.0 + i * 0.1
        obs.requests.append(RequestRecord("l", i, t, "default/svc1", "10.10.200.1:80", None,
                                          "timeout" if any(abs(t - x) < 1e-9 for x in outage_at) else "answered"))
    obs.predictions += [
        {"kind": "failover", "step": 4, "fault": "partition", "node": "k8s-w1", "lease": LEASE, "loop": "l",
         "outage_lo": 2.0, "outage_hi": 4.5, "samples": [2.5, 3.0, 3.5],
         "derivation": "lease expiry on the candidates' clocks + retry jitter + ARP cache"},
        {"kind": "lease-transitions", "lease": LEASE, "lo": 1, "hi": 2},
        {"kind": "lease-transitions", "lease": "*", "lo": 2, "hi": 3},
        {"kind": "lease-losses", "lease": LEASE, "lo": 1, "hi": 1},
    ]
    obs.log(4.9, "lease-lost", lease=LEASE, node="k8s-w1")
    return obs.as_dict()


def result(real_outage: list[float]) -> dict:
    return {"scenario": "l2-lease-loss", "backends": ["twin", "real"], "ok": True,
            "observations": {"twin": observations("twin", [round(4.0 + 0.1 * k, 1) for k in range(31)]),
                             "real": {**observations("real", real_outage), "predictions": []}},
            "disagreements": []}


def test_the_lease_table_shows_the_last_holder_of_each_lease_and_since_when():
    text = "\n".join(l2_lines(result([4.0])))
    assert f"twin: leases (holder now, since when; 3 transition record(s) in the run):" in text
    line = next(x for x in text.splitlines() if LEASE in x and "since" in x and "twin" not in x)
    assert "k8s-w2" in line and "since 7.100 s" in line and "took it from k8s-w1" in line and "leaseTransitions 1" in line
    holders = current_holders(result([4.0])["observations"]["twin"]["leases"])
    assert [(h["lease"], h["holder"]) for h in holders] == [(LEASE, "k8s-w2"), ("cilium-l2announce-default-svc2", "k8s-w2")]


def test_arp_replies_per_arping_step_map_macs_to_nodes_and_no_reply_is_said():
    text = "\n".join(l2_lines(result([4.0])))
    assert "twin: arping who (step 2) who-has 10.10.200.1 at 2.000 s: replies from 02:00:00:00:00:01 (k8s-w1)" in text
    assert "twin: arping after (step 6) who-has 10.10.200.1 at 9.000 s: NO reply" in text
    assert "twin: gratuitous ARP for 10.10.200.1 at 7.200 s from 02:00:00:00:00:02 (k8s-w2)" in text


def test_faults_and_l2_checks_are_listed():
    r = result([4.0])
    r["observations"]["real"]["l2_checks"] = [L2Check("responder-missing", LEASE, "k8s-w2", 7.1,
                                                      detail="no responder entry for 10.10.200.1").as_dict()]
    text = "\n".join(l2_lines(r))
    assert f"real: fault partition at node k8s-w1 (holder of {LEASE}), step 4, at 4.000 s" in text
    assert (f"real: L2 CHECK responder-missing: node k8s-w2 holds {LEASE} since 7.100 s: "
            "no responder entry for 10.10.200.1") in text


def test_each_failover_compares_every_backends_measured_outage_with_the_twins_interval():
    # twin: requests from 4.0 to 7.0 s fail, 7.1 s answers → 3.1 s; real: only 8.8 s fails, 8.9 s answers → 0.1 s
    text = "\n".join(l2_lines(result([8.8])))
    line = next(x for x in text.splitlines() if x.strip().startswith("failover step 4"))
    assert "twin predicts outage 2–4.5 s [3 twin reruns, median 3.000 s]" in line
    assert "twin measured 3.100 s (31 of 50 requests failed) inside" in line
    assert "real measured 0.100 s (1 of 50 requests failed) OUTSIDE" in line
    assert "derivation: lease expiry" in text


def test_a_harness_measurement_of_the_outage_is_preferred_over_reading_the_loop():
    r = result([8.8])
    r["observations"]["real"]["measurements"] = {"failovers": [
        {"step": 4, "loop": "other", "outage_s": 9.0, "failures": 1, "requests": 2, "persisting": False},
        {"step": 4, "loop": "l", "outage_s": 3.25, "failures": 9, "requests": 60, "persisting": True}]}
    m = measured_failover(r["observations"]["real"], r["observations"]["twin"]["predictions"][0])
    assert m["outage_s"] == 3.25 and m["from"] == "harness" and m["persists"]


def test_an_outage_still_failing_at_the_end_of_the_loop_persists():
    r = result([8.8, 8.9])
    m = measured_failover(r["observations"]["real"], r["observations"]["twin"]["predictions"][0], 1.0)
    assert m["persists"] and m["outage_s"] == pytest.approx(1.1)
    assert "still failing at the end" in "\n".join(l2_lines(r))


def test_lease_transition_and_loss_counts_are_compared_with_the_twins_interval():
    text = "\n".join(l2_lines(result([4.0])))
    # the Lease's leaseTransitions (the first acquisition left out, as the twin predicts it); records beside
    assert (f"lease transitions of {LEASE}: twin predicts 1–2; twin counted 1 inside (2 holder record(s)); "
            "real counted 1 inside (2 holder record(s))") in text
    assert ("lease transitions of all leases: twin predicts 2–3; twin counted 1 OUTSIDE (3 holder record(s)); "
            "real counted 1 OUTSIDE (3 holder record(s))") in text
    assert f"leaderships lost of {LEASE}: twin predicts 1–1; twin counted 1 inside; real counted 1 inside" in text


def test_the_terminal_report_includes_the_l2_sections_and_a_result_without_them_is_unchanged():
    r = result([4.0])
    out = render(r)
    assert "leases (holder now" in out and "failover step 4" in out and out.rstrip().endswith("result: ok")
    plain = {"scenario": "s", "backends": ["twin"], "ok": True,
             "observations": {"twin": Observations("twin").as_dict()}}
    assert l2_lines(plain) == []


def test_repeated_arp_replies_are_counted_and_unpredicted_failovers_are_still_shown():
    r = result([4.0])
    real = r["observations"]["real"]
    real["arp"][0]["macs"], real["arp"][0]["nodes"] = ["02:00:00:00:00:01"] * 3, ["k8s-w1"] * 3
    real["measurements"] = {"failovers": [{"step": 9, "loop": "l2", "fault": "node-crash", "node": "k8s-w2",
                                           "outage_s": 2.5, "failures": 20, "requests": 80, "persisting": False,
                                           "new_holder": "k8s-w1"}]}
    text = "\n".join(l2_lines(r))
    assert "real: arping who (step 2) who-has 10.10.200.1 at 2.000 s: replies from 02:00:00:00:00:01 (k8s-w1) ×3" in text
    assert ("real: failover step 9 (node-crash k8s-w2, loop l2): outage 2.500 s (20 of 80 requests failed); "
            "new holder k8s-w1; no twin prediction in this result") in text
