"""Differential tier: Hypothesis-generated labels and L3/L4 policies, every probe's
verdict on the real datapath must equal the twin's.

The topology is built once (pods are fixed slots on three nodes, so their IPs
never change); each example only changes labels and policies, which the real
side reconciles into its maps in place, exactly as an agent would.
"""
from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import tools
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.model.enums import Protocol
from twin.model.yamlsrc import Source
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

# (name, namespace, node): 6 slots over 3 nodes and 2 namespaces; every slot runs the echo app
SLOTS = [("p0", "default", "k8s-s"), ("p1", "default", "k8s-w1"), ("p2", "default", "k8s-w2"),
         ("p3", "default", "k8s-w1"), ("p4", "other", "k8s-w2"), ("p5", "other", "k8s-s")]
PORTS = [("tcp", 80), ("tcp", 8080), ("udp", 53)]
APPS = ["a", "b", "c"]
TIERS = ["x", "y"]
TIMEOUT = 0.5


def pods_yaml(labels: list[dict]) -> str:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}]
    for (name, ns, node), lab in zip(SLOTS, labels):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": lab},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "image": "twin/echo"}]}})
    return yaml.safe_dump_all(docs)


label_sets = st.fixed_dictionaries({}, optional={"app": st.sampled_from(APPS), "tier": st.sampled_from(TIERS)})
selectors = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"matchLabels": st.dictionaries(st.sampled_from(["app", "tier"]),
                                                           st.sampled_from(APPS + TIERS), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"matchExpressions": st.lists(st.fixed_dictionaries({
        "key": st.sampled_from(["app", "tier"]), "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
        min_size=1, max_size=1)}),
    st.just({"matchLabels": {"k8s:io.kubernetes.pod.namespace": "other"}}),
)
port_specs = st.one_of(
    st.fixed_dictionaries({"port": st.sampled_from(["80", "8080", "53"]), "protocol": st.sampled_from(["TCP", "UDP", "ANY"])}),
    st.just({"port": "80", "endPort": 8080, "protocol": "TCP"}),
    st.just({"port": "0", "protocol": "UDP"}),
)


@st.composite
def rules(draw, peer_key):
    rule = {}
    shape = draw(st.sampled_from(["peers", "ports", "both"]))
    if shape in ("peers", "both"):
        rule[peer_key] = draw(st.lists(selectors, min_size=1, max_size=2))
    if shape in ("ports", "both"):
        rule["toPorts"] = [{"ports": draw(st.lists(port_specs, min_size=1, max_size=2))}]
    return rule


@st.composite
def policies(draw, i):
    spec = {"endpointSelector": draw(selectors)}
    for section, key in (("ingress", "fromEndpoints"), ("egress", "toEndpoints"),
                         ("ingressDeny", "fromEndpoints"), ("egressDeny", "toEndpoints")):
        if draw(st.booleans()) if section in ("ingress", "egress") else draw(st.integers(0, 4)) == 0:
            spec[section] = draw(st.lists(rules(key), min_size=1, max_size=2))
    if not any(k in spec for k in ("ingress", "egress", "ingressDeny", "egressDeny")):
        spec["ingress"] = [draw(rules("fromEndpoints"))]
    ns = draw(st.sampled_from(["default", "default", "other"]))
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": f"pol{i}", "namespace": ns}, "spec": spec}


@st.composite
def cases(draw):
    labels = draw(st.lists(label_sets, min_size=len(SLOTS), max_size=len(SLOTS)))
    n = draw(st.integers(1, 4))
    return labels, [draw(policies(i)) for i in range(n)]


def build(labels, pols):
    srcs = [Source("<pods>", pods_yaml(labels)), Source("<policies>", yaml.safe_dump_all(pols))] if pols else \
        [Source("<pods>", pods_yaml(labels))]
    return build_cluster(srcs)


@pytest.fixture(scope="module")
def real():
    base = build([{} for _ in SLOTS], [])
    with RealCluster(base) as rc:
        yield rc


def real_verdicts(rc: RealCluster, cluster) -> dict:
    pods = cluster.pods

    def one(src):
        targets = [(proto, str(dst.ip), port) for dst in pods if dst.key != src.key for proto, port in PORTS]
        return src, tools.probe_many(rc.topo, src.key, targets, TIMEOUT)

    out = {}
    with concurrent.futures.ThreadPoolExecutor(len(pods)) as ex:
        for src, rows in ex.map(one, pods):
            for r in rows:
                verdict = "FORWARDED" if r["outcome"] in ("answered", "refused") else \
                    "DROPPED" if r["outcome"] == "timeout" else f"ERROR({r.get('detail')})"
                out[(src.key, r["ip"], r["proto"].upper(), r["port"])] = verdict
    return out


def twin_verdicts(cluster) -> dict:
    view = ClusterView(cluster)
    out = {}
    for src in cluster.pods:
        for dst in cluster.pods:
            if dst.key == src.key:
                continue
            for proto, port in PORTS:
                fv = view.flows.evaluate(view.flows.query(src, dst.ip, Protocol[proto.upper()], port))
                out[(src.key, str(dst.ip), proto.upper(), port)] = (fv.verdict.value, fv.explanation)
    return out


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_real_datapath_verdicts_equal_twin_verdicts_for_generated_policies(real, case):
    labels, pols = case
    cluster = build(labels, pols)
    assert [p.ip for p in cluster.pods] == [p.ip for p in real.cluster.pods] or real.cluster.pods == ()
    real.program(cluster)
    for dp in real.datapaths.values():
        dp.flush_conntrack()
    got = real_verdicts(real, cluster)
    want = twin_verdicts(cluster)
    event("some flows dropped" if any(v[0] == "DROPPED" for v in want.values()) else "all forwarded")
    diffs = [f"{k}: twin={want[k][0]} real={got.get(k)} — {want[k][1]}" for k in want if got.get(k) != want[k][0]]
    assert not diffs, "twin and real disagree:\n" + "\n".join(diffs) + "\npolicies:\n" + yaml.safe_dump_all(pols)
