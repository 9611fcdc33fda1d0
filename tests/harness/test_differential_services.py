"""Differential tier for services: Hypothesis generates services (ports,
targetPorts, selectors, 0-4 backends over three nodes) and L3/L4 policies;
the set of backends reachable through each service frontend via real socket
LB must equal the twin's, and a service without backends must fail the way
Cilium's socket LB does (EHOSTUNREACH) on both.

Forty connections per frontend leave a backend unseen by chance with
probability at most (3/4)^40 ≈ 1e-5.
"""
from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import tools
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.model.yamlsrc import Source
from twin.semantics.lb import lb_table
from twin.model.scenario import Probe
from twin.semantics.probe import ProbeTarget, predict
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

CLIENT = ("client", "k8s-s")
SLOTS = [("b1", "k8s-w1"), ("b2", "k8s-w2"), ("b3", "k8s-w1"), ("b4", "k8s-w2"), ("b5", "k8s-s")]
# (port, targetPort, protocol): the echo app serves TCP 80/8080 and UDP 53/5353; 9999 is closed
PORTS = [(80, 80, "TCP"), (81, 8080, "TCP"), (53, 53, "UDP"), (5353, 5353, "UDP"), (82, 9999, "TCP")]
CONNECTIONS = 40
TIMEOUT = 0.5


def manifests(labels, services, policies) -> list[Source]:
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": CLIENT[0], "labels": {"role": "client"}},
             "spec": {"nodeName": CLIENT[1], "containers": [{"name": "c", "image": "twin/echo"}]}}]
    for (name, node), lab in zip(SLOTS, labels):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": lab},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "image": "twin/echo"}]}})
    for i, (app, (port, target, proto)) in enumerate(services):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}"},
                     "spec": {"selector": {"app": app}, "ports": [{"port": port, "targetPort": target, "protocol": proto}]}})
    docs += policies
    return [Source("<generated>", yaml.safe_dump_all(docs))]


labels = st.fixed_dictionaries({}, optional={"app": st.sampled_from(["a", "b", "c"])})
services = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "none"]), st.sampled_from(PORTS)), min_size=1, max_size=3)
policy = st.builds(
    lambda app, port, proto, deny, i: {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": f"p{i}"},
        "spec": {"endpointSelector": {"matchLabels": {"app": app}},
                 ("ingressDeny" if deny else "ingress"): [{
                     "fromEndpoints": [{"matchLabels": {"role": "client"}}],
                     "toPorts": [{"ports": [{"port": str(port), "protocol": proto}]}]}]}},
    st.sampled_from(["a", "b", "c"]), st.sampled_from([80, 8080, 53, 5353]), st.sampled_from(["TCP", "UDP", "ANY"]),
    st.booleans(), st.integers(0, 9))


@st.composite
def cases(draw):
    pols = draw(st.lists(policy, max_size=2, unique_by=lambda p: p["metadata"]["name"]))
    return draw(st.lists(labels, min_size=len(SLOTS), max_size=len(SLOTS))), draw(services), pols


@pytest.fixture(scope="module")
def real():
    base = build_cluster(manifests([{} for _ in SLOTS], [], []))
    with RealCluster(base, socket_lb=True) as rc:
        yield rc


def twin_reachable(cluster) -> dict:
    """frontend → (set of backends that answer, whether the frontend has no active backend)."""
    view = ClusterView(cluster)
    out = {}
    for fe in lb_table(cluster).services:
        kind = "udp" if fe.protocol.name == "UDP" else "tcp"
        ok = set()
        for b in fe.active:
            pod = cluster.pod(b.pod)
            pred = predict(view, Probe("d", "default/client", b.pod, kind, b.port), ProbeTarget(b.pod, b.ip, pod, b.port))
            listening = (b.port in (80, 8080)) if kind == "tcp" else (b.port in (53, 5353))
            if pred.verdict == "FORWARDED" and listening:
                ok.add(b.pod.split("/")[1])
        out[(str(fe.frontend_ip), fe.port, kind)] = (ok, not fe.active)
    return out


def real_reachable(rc, cluster) -> dict:
    targets = []
    fronts = [(str(fe.frontend_ip), fe.port, "udp" if fe.protocol.name == "UDP" else "tcp") for fe in lb_table(cluster).services]
    for ip, port, kind in fronts:
        targets += [{"proto": "http" if kind == "tcp" else "udp", "ip": ip, "port": port}] * CONNECTIONS
    rows = tools.probe_many(rc.topo, "default/client", targets, TIMEOUT)
    out = {}
    for (ip, port, kind), i in zip(fronts, range(0, len(rows), CONNECTIONS)):
        chunk = rows[i:i + CONNECTIONS]
        answered = set()
        for r in chunk:
            if r["outcome"] == "answered" and r.get("body"):
                body = r["body"]
                answered.add(body.split("|", 1)[1] if kind == "udp" else body.split()[1])
        unreachable = all("EHOSTUNREACH" in (r.get("detail") or "") or "No route to host" in (r.get("detail") or "")
                          for r in chunk)
        out[(ip, port, kind)] = (answered, unreachable)
    return out


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_backends_reachable_through_each_service_agree_between_twin_and_real(real, case):
    labels_, svcs, pols = case
    cluster = build_cluster(manifests(labels_, svcs, pols))
    real.program(cluster)
    for dp in real.datapaths.values():
        dp.flush_conntrack()
    want = twin_reachable(cluster)
    got = real_reachable(real, cluster)
    event("a service with no backends" if any(v[1] for v in want.values()) else "every service has backends")
    event("some backend blocked by policy" if pols else "no policy")
    diffs = [f"{fe}: twin answers from {sorted(want[fe][0])} (no backend: {want[fe][1]}), "
             f"real from {sorted(got.get(fe, (set(), False))[0])} (EHOSTUNREACH: {got.get(fe, (set(), False))[1]})"
             for fe in want if want[fe][0] != got.get(fe, (set(), None))[0] or (want[fe][1] and not got[fe][1])]
    assert not diffs, "\n".join(diffs) + "\n" + yaml.safe_dump_all(pols)
