"""Differential tier for the Bandwidth Manager: generated egress limits,
placements and stream counts; the real goodput must fall in the twin's
interval.

Each case draws the sender pod's ``kubernetes.io/egress-bandwidth`` (a
limit from 2 to 200 Mbit/s written as Kubernetes writes quantities — ``M``,
``Mi``, ``k``, decimals — or one of the values Cilium does not enforce:
none, ``0``, a negative, a typo), where the receiver is (the other worker:
the traffic leaves the sender's node; the sender's own node: it does not)
and how many parallel streams share the limit.  The real side publishes the
changed pod to its agents (the limiter's class changes in place) and
measures ``iperf3 -R`` (the sender pod sends, as the seed's TCP_MAERTS); the
twin predicts from the same annotation with the same rate model its
simulator uses (:func:`twin.semantics.rates.predict_throughput`, calibrated
by ``twin/calibration/bandwidth.json``).  A case agrees when the real
whole-run goodput lies in the twin's interval widened by
``RATE_TOLERANCE`` (the scenarios' default ``rate_tolerance``).

Cost: one topology for the module; each case is one reconcile and one
``DURATION_S`` iperf3 run.  The seed is printed on failure
(``diffkit.SEED``; ``HYPOTHESIS_SEED=N`` replays).
"""
from __future__ import annotations

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

import diffkit
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.calibration import load_bandwidth_profile
from twin.model.yamlsrc import Source
from twin.semantics.bandwidth import EGRESS_ANNOTATION, egress_limit
from twin.semantics.rates import predict_throughput, rate_agrees

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

CASES = 10  # x SCALE with SOAK=1
DURATION_S = 2.0
RATE_TOLERANCE = 0.05
SENDER, REMOTE, LOCAL = "default/sender", "default/client-remote", "default/client-local"
VALUES = {"kubeProxyReplacement": True, "bandwidthManager": {"enabled": True}}


def _docs(annotation: str | None) -> list[dict]:
    def pod(name: str, node: str, ann: str | None = None) -> dict:
        meta = {"name": name, "namespace": "default", "labels": {"app": name}}
        if ann is not None:
            meta["annotations"] = {EGRESS_ANNOTATION: ann}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"nodeName": node, "containers": [{"name": "iperf3", "image": "networkstatic/iperf3"}]}}
    return [pod("sender", "k8s-w1", annotation), pod("client-remote", "k8s-w2"), pod("client-local", "k8s-w1")]


def _build(annotation: str | None):
    return build_cluster([Source("<generated bandwidth case>", yaml.safe_dump_all(_docs(annotation)))],
                         Source("<generated values>", yaml.safe_dump(VALUES)))


def _quantity(mbit: float, suffix: str) -> str:
    if suffix == "Mi":
        return f"{round(mbit * 1e6 / 2**20, 1):g}Mi"
    if suffix == "k":
        return f"{round(mbit * 1000):d}k"
    return f"{round(mbit, 1):g}M"


limits = st.one_of(
    st.builds(_quantity, st.floats(2.0, 200.0), st.sampled_from(["M", "Mi", "k"])),
    st.sampled_from([None, "0", "-5M", "10Mbps", "10mi"]),
)


@pytest.fixture(scope="module")
def real():
    with RealCluster(_build(None), bandwidth=True) as rc:
        yield rc, [0]


stats = diffkit.stats_fixture("bandwidth")


@diffkit.diff_settings(CASES)
@given(data=st.data())
def test_real_goodput_falls_in_the_twins_interval_for_generated_limits_placements_and_streams(real, stats, data):
    from harness.iperf import IperfRun
    rc, counter = real
    annotation = data.draw(limits, label="egress-bandwidth")
    same_node = data.draw(st.booleans(), label="same node")
    parallel = data.draw(st.integers(1, 4), label="streams")
    counter[0] += 1
    cluster = _build(annotation)
    rc.program(cluster)
    sender = cluster.pod(SENDER)
    client = LOCAL if same_node else REMOTE
    pred = predict_throughput(egress_limit(sender, cluster.values), same_node, parallel, DURATION_S,
                              load_bandwidth_profile())
    run = IperfRun(rc.topo, SENDER, str(sender.ip), client, 5201 + counter[0] % 50, DURATION_S, 1.0, parallel,
                   True).start()
    got = run.wait()
    stats.cases += 1
    stats.probes += 1
    event("limited" if pred.limit_bps is not None else "unlimited")
    status = rc.agents["k8s-w1"].bandwidth_status()
    programmed = (status.get("limits") or {}).get(SENDER)
    lim = egress_limit(sender, cluster.values)
    want_bps = lim.rate_bps if lim is not None else None  # programmed whatever the receiver's node
    problems = []
    if (programmed or {}).get("rate_bps") != want_bps:
        problems.append(f"the sender's node programmed {programmed}, the semantics enforce {want_bps} bit/s")
    if not rate_agrees(got.goodput_bps, pred.goodput, RATE_TOLERANCE):
        stats.drops += 1
        problems.append(f"real goodput {got.goodput_bps / 1e6:.3f} Mbit/s outside the twin's "
                        f"[{pred.goodput.lo / 1e6:.3f}, "
                        f"{'∞' if pred.goodput.hi is None else f'{pred.goodput.hi / 1e6:.3f}'}] Mbit/s "
                        f"± {RATE_TOLERANCE:.0%}")
    if problems:
        pytest.fail(f"twin and real disagree (seed {diffkit.SEED}; replay: HYPOTHESIS_SEED={diffkit.SEED} make test)\n"
                    f"case: egress-bandwidth={annotation!r} same_node={same_node} streams={parallel}\n"
                    + "\n".join(problems) + f"\ntwin basis: {pred.basis}\nreal: {got}")
