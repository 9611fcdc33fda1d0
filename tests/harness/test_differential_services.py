"""Differential tier for services: the set of backends that answer through each
service frontend via the real socket LB must equal the twin's LB table (its
active backends that policy lets the client reach and that listen on the
target port), and a frontend without an active backend must fail the way
Cilium's socket LB does (EHOSTUNREACH) on both.

A *case* is a client and four backend pods with generated labels, 1-2
Services (generated selectors, 1-2 ports each with numeric or named
targetPorts, so 0-4 backends each), an endpoint state per backend (ready,
not ready, terminating) and 0-2 CiliumNetworkPolicies on the backends; its
probe set is ``CONNECTIONS`` connections to every frontend.  As in
``test_differential.py`` each case has a lane (its own namespace ``s<i>``;
Service selectors and CNPs only select pods of their own namespace) and one
Hypothesis example (a round) applies ``LANES`` cases at once: the services,
policies and labels by ``RealCluster.program`` (in place), the endpoint
states by ``RealCluster.set_endpoint_state``; then every lane's client
connects at once.

``CONNECTIONS`` = 64 connections per frontend leave one of at most four
active backends unseen by chance with probability at most 4·(3/4)^64 ≈ 4e-8.
"""
from __future__ import annotations

import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

import diffkit
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.model.yamlsrc import Source
from twin.semantics.lb import lb_table
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

LANES = 4
ROUNDS = 100  # x LANES = 400 cases per CI run (x10 with SOAK=1)
CLIENT = ("client", "k8s-s")
# (name, node, container ports): the echo app serves TCP 80/8080 and UDP 53/5353 on every pod;
# the named ports let a Service's targetPort "http"/"dns" resolve per pod (or not at all)
SLOTS = [("b1", "k8s-w1", [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "name": "dns", "protocol": "UDP"}]),
         ("b2", "k8s-w2", [{"containerPort": 8080, "name": "http"}]),
         ("b3", "k8s-w1", []),
         ("b4", "k8s-s", [{"containerPort": 8080, "name": "http"}, {"containerPort": 5353, "name": "dns", "protocol": "UDP"}])]
# (port, targetPort, protocol); 9999 is closed on every pod
SERVICE_PORTS = [(80, 80, "TCP"), (81, 8080, "TCP"), (82, "http", "TCP"), (83, 9999, "TCP"),
                 (53, 53, "UDP"), (5353, 5353, "UDP"), (54, "dns", "UDP")]
STATES = ["ready", "ready", "not-ready", "terminating"]
CONNECTIONS = 64
TIMEOUT = 0.75


def lane_ns(lane: int) -> str:
    return f"s{lane}"


def pod_name(lane: int, slot: str) -> str:
    """Backend names differ between lanes: the name is the echo app's hostname, so an answer
    says which lane's pod it came from."""
    return f"{slot}-{lane}"


def lane_docs(lane: int, case: dict) -> list[dict]:
    ns = lane_ns(lane)
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": CLIENT[0], "namespace": ns, "labels": {"role": "client"}},
             "spec": {"nodeName": CLIENT[1], "containers": [{"name": "c", "image": "twin/echo"}]}}]
    for (name, node, ports), lab in zip(SLOTS, case["labels"]):
        container = {"name": "c", "image": "twin/echo", **({"ports": ports} if ports else {})}
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name(lane, name), "namespace": ns, "labels": dict(lab)},
                     "spec": {"nodeName": node, "containers": [container]}})
    for i, svc in enumerate(case["services"]):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}", "namespace": ns},
                     "spec": {"selector": dict(svc["selector"]),
                              "ports": [{"name": f"p{j}", "port": p, "targetPort": t, "protocol": proto}
                                        for j, (p, t, proto) in enumerate(svc["ports"])]}})
    return docs + diffkit.rename_namespaces(case["policies"], {"default": ns})


def build(cases: list[dict]):
    docs = [d for lane, case in enumerate(cases) for d in lane_docs(lane, case)]
    return build_cluster([Source("<generated round>", yaml.safe_dump_all(docs))])


def case_yaml(case: dict) -> str:
    return yaml.safe_dump(case, sort_keys=False)


labels = st.fixed_dictionaries({}, optional={"app": st.sampled_from(["a", "b"]), "tier": st.sampled_from(["x", "y"])})
selectors = st.one_of(st.fixed_dictionaries({"app": st.sampled_from(["a", "b"])}),
                      st.fixed_dictionaries({"tier": st.sampled_from(["x", "y"])}),
                      st.fixed_dictionaries({"app": st.sampled_from(["a", "b"]), "tier": st.sampled_from(["x", "y"])}))
services = st.fixed_dictionaries({
    "selector": selectors,
    "ports": st.lists(st.sampled_from(SERVICE_PORTS), min_size=1, max_size=2, unique_by=lambda p: p[0]).map(
        lambda ps: [list(p) for p in ps]),
})
policy = st.builds(
    lambda sel, port, proto, deny, i: {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": f"p{i}", "namespace": "default"},
        "spec": {"endpointSelector": {"matchLabels": sel},
                 ("ingressDeny" if deny else "ingress"): [{
                     "fromEndpoints": [{"matchLabels": {"role": "client"}}],
                     "toPorts": [{"ports": [{"port": str(port), "protocol": proto}]}]}]}},
    selectors, st.sampled_from([80, 8080, 53, 5353, 0]), st.sampled_from(["TCP", "UDP", "ANY"]),
    st.booleans(), st.integers(0, 9))
cases = st.fixed_dictionaries({
    "labels": st.lists(labels, min_size=len(SLOTS), max_size=len(SLOTS)),
    "states": st.lists(st.sampled_from(STATES), min_size=len(SLOTS), max_size=len(SLOTS)),
    "services": st.lists(services, min_size=1, max_size=2),
    "policies": st.lists(policy, max_size=2, unique_by=lambda p: p["metadata"]["name"]),
})
rounds = st.lists(cases, min_size=LANES, max_size=LANES)
REGRESSIONS = diffkit.regressions("service_cases")
EMPTY_CASE = {"labels": [{}] * len(SLOTS), "states": ["ready"] * len(SLOTS), "services": [], "policies": []}


def with_regressions(fn):
    """Every committed regression case, LANES per round (padded with empty cases)."""
    for i in range(0, len(REGRESSIONS), LANES):
        chunk = REGRESSIONS[i:i + LANES]
        fn = example(round_=chunk + [EMPTY_CASE] * (LANES - len(chunk)))(fn)
    return fn


@pytest.fixture(scope="module")
def real():
    base = build([EMPTY_CASE] * LANES)
    with RealCluster(base, socket_lb=True) as rc:
        clients = [f"{lane_ns(lane)}/{CLIENT[0]}" for lane in range(LANES)]
        probers = diffkit.Probers(rc.topo, clients)
        try:
            yield rc, probers, [p.ip for p in base.pods]
        finally:
            probers.close()


stats = diffkit.stats_fixture("services")


def frontends(table, ns: str) -> list:
    return [fe for fe in table.services if fe.service.split("/")[0] == ns]


def twin_reachable(cluster, table, view, lane: int) -> dict:
    """frontend -> (backends that answer, whether the frontend has no active backend)."""
    ns = lane_ns(lane)
    client = f"{ns}/{CLIENT[0]}"
    out = {}
    for fe in frontends(table, ns):
        kind = "udp" if fe.protocol.name == "UDP" else "tcp"
        ok = diffkit.twin_answering(cluster, view, client, fe, kind)
        out[(fe.service, str(fe.frontend_ip), fe.port, kind)] = (ok, not fe.active)
    return out


def answered_by(rows: list, kind: str) -> tuple[set, bool]:
    answered = set()
    for r in rows:
        if r["outcome"] == "answered" and r.get("body"):
            body = r["body"]
            answered.add(body.split("|", 1)[1].strip() if kind == "udp" else body.split()[1])
    unreachable = all("EHOSTUNREACH" in (r.get("detail") or "") or "No route to host" in (r.get("detail") or "")
                      for r in rows)
    return answered, unreachable


@diffkit.diff_settings(ROUNDS)
@with_regressions
@given(round_=rounds)
def test_backends_reachable_through_each_service_agree_between_twin_and_real(real, stats, round_):
    rc, probers, ips = real
    cluster = build(round_)
    assert [p.ip for p in cluster.pods] == ips, "pod IPs must not move between rounds (the topology is fixed)"
    rc.program(cluster)
    states = {}
    for lane, case in enumerate(round_):
        for (name, _, _), state in zip(SLOTS, case["states"]):
            states[f"{lane_ns(lane)}/{pod_name(lane, name)}"] = state
    current = rc.states
    for pod, state in states.items():
        if current.get(pod, "ready") != state:
            rc.set_endpoint_state(pod, state)
    diffkit.flush_conntrack(rc)
    rc.drain_events()
    table = lb_table(cluster, states)
    batches, fronts = {}, {}
    for lane in range(len(round_)):
        targets = []
        for fe in frontends(table, lane_ns(lane)):
            kind = "udp" if fe.protocol.name == "UDP" else "tcp"
            key = (fe.service, str(fe.frontend_ip), fe.port, kind)
            fronts.setdefault(lane, []).append(key)
            targets += [{"proto": "http" if kind == "tcp" else "udp", "ip": key[1], "port": fe.port}] * CONNECTIONS
        batches[f"{lane_ns(lane)}/{CLIENT[0]}"] = targets
    running = probers.start_all(batches, TIMEOUT)
    view = ClusterView(cluster)
    want = {}
    for lane in range(len(round_)):
        want.update({k: (lane, *v) for k, v in twin_reachable(cluster, table, view, lane).items()})
    got = {}
    for client, rows in diffkit.results(running).items():
        lane = int(client.split("/")[0][1:])
        for i, key in enumerate(fronts.get(lane, [])):
            got[key] = answered_by(rows[i * CONNECTIONS:(i + 1) * CONNECTIONS], key[3])
            stats.probes += CONNECTIONS
            stats.drops += sum(r["outcome"] == "timeout" for r in rows[i * CONNECTIONS:(i + 1) * CONNECTIONS])
    stats.cases += len(round_)
    event("a frontend without active backends" if any(w[2] for w in want.values()) else "every frontend has a backend")
    event("some backend blocked by policy" if any(c["policies"] for c in round_) else "no policy")
    bad = [fe for fe in want if want[fe][1] != got[fe][0] or (want[fe][2] and not got[fe][1])]
    if bad:
        evs = diffkit.events_by_flow(rc)
        lines = [f"twin and real disagree on {len(bad)} frontends; seed {diffkit.SEED} "
                 f"(replay: HYPOTHESIS_SEED={diffkit.SEED} make test)"]
        for lane in sorted({want[fe][0] for fe in bad}):
            lines.append(f"--- case (lane {lane}: namespace {lane_ns(lane)}; the case's 'default' namespace):\n"
                         f"{case_yaml(round_[lane])}")
            for fe in [fe for fe in bad if want[fe][0] == lane]:
                lines.append(f"  {CONNECTIONS} connections from {lane_ns(lane)}/{CLIENT[0]} to {fe[0]} at {fe[1]}:{fe[2]}/{fe[3]}: "
                             f"twin answers from {sorted(want[fe][1])} (no active backend: {want[fe][2]}), "
                             f"real from {sorted(got[fe][0])} (all EHOSTUNREACH: {got[fe][1]})")
                for b in [s for s in table.services if (s.service, str(s.frontend_ip), s.port) == fe[:3]][0].backends:
                    client_ip = str(cluster.pod(f"{lane_ns(lane)}/{CLIENT[0]}").ip)
                    pnum = 17 if fe[3] == "udp" else 6
                    for e in evs.get((client_ip, str(b.ip), pnum, b.port), [f"no BPF event to {b.pod} {b.ip}:{b.port}"]):
                        lines.append(f"      {b.pod} ({b.state}): {e}")
        pytest.fail("\n".join(lines), pytrace=False)
