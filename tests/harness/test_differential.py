"""Differential tier: Hypothesis-generated labels and L3/L4 policies; every probe's
verdict on the real datapath must equal the twin's.

Scale: one topology for the whole test, ``LANES`` independent cases at a time.
A *case* is six pods' labels, 1-4 CiliumNetworkPolicies (``tests/strategies.py``,
without L7) and a probe set: every ordered pair of its six pods on TCP
79/80/81/8080 and UDP 53/5353 (180 probes).  Each case gets its own *lane*:
two namespaces of its own (``l<i>a``, ``l<i>b`` standing for the generated
``default`` and ``other``) with six pods on the three nodes.  A CNP selects
endpoints only in its own namespace and its peers only in its namespace or
the namespaces its selectors name, so lanes cannot see each other's policies;
the twin is evaluated on the same combined cluster as the real side all the
same, so the comparison holds even if they could.

One Hypothesis example (a *round*) applies ``LANES`` cases by reconciling the
maps in place (``RealCluster.program``, no reload), flushes conntrack, runs
every pod's probes at once (one long-lived prober per pod, real sockets, one
shared 0.5 s timeout) and compares every real verdict with the twin's.

Seed and replay: see ``tests/harness/diffkit.py``; a failure names the seed,
the case as YAML, each differing probe, both verdicts and the BPF events of
that flow.  Regressions: ``tests/regressions/policy_cases.yaml`` (each run
replays them first).
"""
from __future__ import annotations

import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

import diffkit
import strategies as S
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.semantics.view import ClusterView
from twin.model.enums import Protocol
from twin.model.yamlsrc import Source

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

LANES = 8
ROUNDS = 100  # x LANES = 800 cases per CI run (x10 with SOAK=1)
# (name, generated namespace, node, container ports): 6 slots over 3 nodes and 2 namespaces;
# every pod runs the echo app (TCP 80/8080, UDP 53/5353); the named ports give CNPs' "http"/"dns" a meaning
SLOTS = [("p0", "default", "k8s-s", [{"containerPort": 80, "name": "http"}]),
         ("p1", "default", "k8s-w1", [{"containerPort": 8080, "name": "http"}, {"containerPort": 53, "name": "dns", "protocol": "UDP"}]),
         ("p2", "default", "k8s-w2", []),
         ("p3", "other", "k8s-w1", [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "name": "dns", "protocol": "UDP"}]),
         ("p4", "other", "k8s-w2", [{"containerPort": 8080, "name": "http"}]),
         ("p5", "other", "k8s-s", [{"containerPort": 53, "name": "dns", "protocol": "UDP"}])]
PORTS = [("tcp", 79), ("tcp", 80), ("tcp", 81), ("tcp", 8080), ("udp", 53), ("udp", 5353)]
TIMEOUT = 0.5


def lane_ns(lane: int) -> dict[str, str]:
    return {"default": f"l{lane}a", "other": f"l{lane}b"}


def lane_docs(lane: int, case: dict) -> list[dict]:
    ns = lane_ns(lane)
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ns.values()]
    for (name, gen_ns, node, ports), lab in zip(SLOTS, case["labels"]):
        container = {"name": "c", "image": "twin/echo", **({"ports": ports} if ports else {})}
        docs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": name, "namespace": ns[gen_ns], "labels": dict(lab)},
                     "spec": {"nodeName": node, "containers": [container]}})
    return docs + diffkit.rename_namespaces(case["policies"], ns)


def build(cases: list[dict]):
    docs = [d for lane, case in enumerate(cases) for d in lane_docs(lane, case)]
    return build_cluster([Source("<generated round>", yaml.safe_dump_all(docs))])


def case_yaml(case: dict) -> str:
    return yaml.safe_dump({"labels": case["labels"], "policies": case["policies"]}, sort_keys=False)


cases = st.fixed_dictionaries({
    "labels": st.lists(S.labels, min_size=len(SLOTS), max_size=len(SLOTS)),
    "policies": S.policies(S.NAMESPACES, 1, 4, l7=False),
})
rounds = st.lists(cases, min_size=LANES, max_size=LANES)
REGRESSIONS = diffkit.regressions("policy_cases")
EMPTY_CASE = {"labels": [{}] * len(SLOTS), "policies": []}


def lane_pods(cluster, lane: int):
    names = set(lane_ns(lane).values())
    return [p for p in cluster.pods if p.namespace in names]


@pytest.fixture(scope="module")
def real():
    base = build([EMPTY_CASE] * LANES)
    with RealCluster(base, socket_lb=False) as rc:
        probers = diffkit.Probers(rc.topo, [p.key for p in base.pods])
        try:
            yield rc, probers, [p.ip for p in base.pods]
        finally:
            probers.close()


stats = diffkit.stats_fixture("policies")


def with_regressions(fn):
    """Every committed regression case, LANES per round (padded with empty cases)."""
    for i in range(0, len(REGRESSIONS), LANES):
        chunk = REGRESSIONS[i:i + LANES]
        fn = example(round_=chunk + [EMPTY_CASE] * (LANES - len(chunk)))(fn)
    return fn


@diffkit.diff_settings(ROUNDS)
@with_regressions
@given(round_=rounds)
def test_real_datapath_verdicts_equal_twin_verdicts_for_generated_policies(real, stats, round_):
    rc, probers, ips = real
    cluster = build(round_)
    assert [p.ip for p in cluster.pods] == ips, "pod IPs must not move between rounds (the topology is fixed)"
    rc.program(cluster)
    diffkit.flush_conntrack(rc)
    rc.drain_events()
    batches = {}
    for lane in range(len(round_)):
        pods = lane_pods(cluster, lane)
        for src in pods:
            batches[src.key] = [(proto, str(dst.ip), port) for dst in pods if dst.key != src.key for proto, port in PORTS]
    running = probers.start_all(batches, TIMEOUT)
    view = ClusterView(cluster)  # the twin answers while the probes wait out their timeout
    want = {}
    for lane in range(len(round_)):
        pods = lane_pods(cluster, lane)
        for src in pods:
            for dst in pods:
                if dst.key == src.key:
                    continue
                for proto, port in PORTS:
                    fv = view.flows.evaluate(view.flows.query(src, dst.ip, Protocol[proto.upper()], port))
                    want[(src.key, str(dst.ip), proto, port)] = (lane, dst.key, fv.verdict.value, fv.explanation)
    got = {}
    for src, rows in diffkit.results(running).items():
        for r in rows:
            got[(src, r["ip"], r["proto"], r["port"])] = diffkit.verdict_of(r)
    stats.cases += len(round_)
    stats.probes += len(got)
    stats.drops += sum(v == "DROPPED" for v in got.values())
    event("some flows dropped" if any(w[2] == "DROPPED" for w in want.values()) else "all forwarded")
    bad = [k for k in want if got.get(k) != want[k][2]]
    if bad:
        evs = diffkit.events_by_flow(rc)
        lanes = sorted({want[k][0] for k in bad})
        lines = [f"twin and real disagree on {len(bad)} probes in {len(lanes)} case(s); "
                 f"seed {diffkit.SEED} (replay: HYPOTHESIS_SEED={diffkit.SEED} make test)"]
        for lane in lanes:
            lines.append(f"--- case (lane {lane}: namespaces {lane_ns(lane)}):\n{case_yaml(round_[lane])}")
            for k in [k for k in bad if want[k][0] == lane][:12]:
                src, ip, proto, port = k
                pnum = int(Protocol[proto.upper()])
                lines.append(f"  probe {src} -> {want[k][1]} ({ip}) {proto}/{port}: twin={want[k][2]} "
                             f"real={got.get(k)} — twin: {want[k][3]}")
                src_ip = str(cluster.pod(src).ip)
                for e in evs.get((src_ip, ip, pnum, port), ["no BPF event for this flow"]):
                    lines.append(f"      {e}")
        pytest.fail("\n".join(lines), pytrace=False)
