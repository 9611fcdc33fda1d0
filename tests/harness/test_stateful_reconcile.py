"""Stateful differential test: a Hypothesis rule-based state machine applies,
changes and deletes CiliumNetworkPolicies and Services, relabels pods and
marks backends ready / not ready / terminating, in random order, on one live
topology (six pods on three nodes, socket LB on).  After every step:

* the real maps equal the twin's: each node's policy map holds exactly what
  the datapath's compiler makes of the twin's policy table for that node's
  endpoints, and each node's LB maps, decoded, hold exactly the twin's LB
  table (every frontend's active backends in slot order, terminating
  backends listed but in no slot, one reverse-NAT entry per frontend);
* the real verdicts equal the twin's: every ordered pod pair on TCP 80/8080
  and UDP 53 (probes in parallel), and through every service frontend the
  set of backends that answer ``CONNECTIONS`` connections from ``p0``.

Each step rebuilds the desired cluster from its manifests and reconciles the
running maps to it in place (``RealCluster.program``); endpoint states go
through ``RealCluster.set_endpoint_state``.  Seeded like the other
differential tests (``tests/harness/diffkit.py``); Hypothesis prints the
failing sequence of steps, the assertion names the step, the seed and the
differences.
"""
from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import diffkit
import strategies as S
from harness.real import RealCluster, real_unavailable_reason
from twin.model.build import build_cluster
from twin.model.enums import Protocol
from twin.model.yamlsrc import Source
from twin.semantics.lb import lb_table
from twin.semantics.view import ClusterView

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

EXAMPLES, STEPS = 20, 10  # x10 examples with SOAK=1
NODES = {"p0": "k8s-s", "p1": "k8s-w1", "p2": "k8s-w2", "p3": "k8s-w1", "p4": "k8s-w2", "p5": "k8s-s"}
PODS = list(NODES)
# container ports named "http" (TCP) and "dns" (UDP), so named ports in policies and Services resolve per pod
NAMED = {"p0": {"http": 80}, "p1": {"http": 8080}, "p2": {"http": 80, "dns": 53}, "p3": {"dns": 53},
         "p4": {"http": 8080}, "p5": {}}
PORTS = [("tcp", 80), ("tcp", 8080), ("udp", 53)]
SERVICE_PORTS = [(80, 80, "TCP"), (81, 8080, "TCP"), (82, "http", "TCP"), (53, 53, "UDP"), (5353, 5353, "UDP"),
                 (54, "dns", "UDP")]
CLIENT = "default/p0"
TIMEOUT = 0.5


def connections_for(n_active: int) -> int:
    """Connections per frontend so that the chance that one of ``n_active`` backends gets none
    is below 1e-7 (80 for five backends); a handful when there is at most one."""
    if n_active <= 1:
        return 4
    return min(160, math.ceil(math.log(1e-7 / n_active) / math.log(1 - 1 / n_active)))


label_sets = st.fixed_dictionaries({}, optional={"app": st.sampled_from(S.LABEL_VALUES), "role": st.sampled_from(S.LABEL_VALUES)})
service_specs = st.fixed_dictionaries({
    "selector": st.dictionaries(st.sampled_from(S.LABEL_KEYS), st.sampled_from(S.LABEL_VALUES), min_size=1, max_size=2),
    "ports": st.lists(st.sampled_from(SERVICE_PORTS), min_size=1, max_size=2, unique_by=lambda p: p[0]),
})


def manifests(labels: dict, services: dict, policies: dict) -> list[Source]:
    docs = []
    for name, node in NODES.items():
        ports = [{"containerPort": port, "name": pname, **({"protocol": "UDP"} if pname == "dns" else {})}
                 for pname, port in NAMED[name].items()]
        lab = {"role": "client"} if name == "p0" else dict(labels[name])
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": lab},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "image": "twin/echo",
                                                                **({"ports": ports} if ports else {})}]}})
    for name, spec in sorted(services.items()):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"selector": dict(spec["selector"]),
                              "ports": [{"name": f"p{j}", "port": p, "targetPort": t, "protocol": proto}
                                        for j, (p, t, proto) in enumerate(spec["ports"])]}})
    for name, spec in sorted(policies.items()):
        docs.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                     "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    return [Source("<state machine>", yaml.safe_dump_all(docs))]


def expected_lb(table) -> tuple[dict, set]:
    """The twin's LB table as the maps must hold it: frontend -> active backends in order, and
    every backend listed (active or terminating)."""
    fronts, listed = {}, set()
    for fe in table.services:
        fronts[(str(fe.frontend_ip), fe.port, int(fe.protocol))] = [(str(b.ip), b.port) for b in fe.active]
        listed |= {(str(b.ip), b.port, int(b.protocol), b.state) for b in fe.backends}
    return fronts, listed


def decoded_lb(entries) -> tuple[dict, set, set]:
    """The kernel's LB maps decoded the same way, plus the reverse-NAT frontends."""
    from datapath.constants import BackendState
    masters = {k: v for k, v in entries.services.items() if k.is_master}
    fronts = {}
    for k, v in masters.items():
        slots = [entries.services.get(type(k)(k.address, k.port, k.protocol, i)) for i in range(1, v.count + 1)]
        bes = [entries.backends.get(s.backend_id) if s else None for s in slots]
        fronts[(str(k.address), k.port, int(k.protocol))] = [(str(b.ip), b.port) if b else None for b in bes]
    state = {BackendState.ACTIVE: "active", BackendState.TERMINATING: "terminating"}
    listed = {(str(b.ip), b.port, int(b.protocol), state.get(b.state, str(b.state))) for b in entries.backends.values()}
    revnat = {(str(v.ip), v.port) for v in entries.revnat.values()}
    return fronts, listed, revnat


class ReconcileMachine(RuleBasedStateMachine):
    """Desired state = labels + services + policies + endpoint states; the real side follows it."""

    rc = None  # set by the test: (RealCluster, Probers, Stats)

    def __init__(self):
        super().__init__()
        self.real, self.probers, self.stats = type(self).rc
        self.labels = {p: {} for p in PODS}
        self.services: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}
        self.states = {f"default/{p}": "ready" for p in PODS}
        self.log: list[str] = []
        self.stats.cases += 1
        self.sync("start")

    # -- rules -------------------------------------------------------------------

    @rule(name=st.sampled_from(["pol0", "pol1", "pol2"]), spec=S.policy_specs(("default",), l7=False))
    def apply_policy(self, name, spec):
        what = "change" if name in self.policies else "create"
        self.policies[name] = spec
        self.sync(f"apply CiliumNetworkPolicy {name} ({what})")

    @precondition(lambda self: self.policies)
    @rule(data=st.data())
    def delete_policy(self, data):
        name = data.draw(st.sampled_from(sorted(self.policies)))
        del self.policies[name]
        self.sync(f"delete CiliumNetworkPolicy {name}")

    @rule(name=st.sampled_from(["svc0", "svc1"]), spec=service_specs)
    def apply_service(self, name, spec):
        what = "change" if name in self.services else "create"
        self.services[name] = spec
        self.sync(f"apply Service {name} ({what})")

    @precondition(lambda self: self.services)
    @rule(data=st.data())
    def delete_service(self, data):
        name = data.draw(st.sampled_from(sorted(self.services)))
        del self.services[name]
        self.sync(f"delete Service {name}")

    @rule(pod=st.sampled_from(PODS[1:]), labels=label_sets)
    def relabel(self, pod, labels):
        self.labels[pod] = labels
        self.sync(f"relabel {pod} {labels}")

    @rule(pod=st.sampled_from(PODS[1:]), state=st.sampled_from(["ready", "not-ready", "terminating"]))
    def set_endpoint_state(self, pod, state):
        self.states[f"default/{pod}"] = state
        self.sync(f"endpoint default/{pod} {state}")

    # -- the real side follows -------------------------------------------------------

    def sync(self, what: str) -> None:
        self.log.append(what)
        self.cluster = build_cluster(manifests(self.labels, self.services, self.policies))
        self.real.program(self.cluster)
        current = self.real.states
        for pod, state in self.states.items():
            if current.get(pod, "ready") != state:
                self.real.set_endpoint_state(pod, state)
        self.stats.steps += 1

    def fail(self, what: str, lines: list[str]) -> None:
        doc = yaml.safe_dump({"labels": self.labels, "services": self.services, "policies": self.policies,
                              "endpoint_states": self.states}, sort_keys=False)
        raise AssertionError(f"after step {len(self.log)} ({self.log[-1]}): {what}; seed {diffkit.SEED} "
                             f"(replay: HYPOTHESIS_SEED={diffkit.SEED} make test)\n" + "\n".join(lines)
                             + "\nsteps: " + " -> ".join(self.log) + "\ndesired state:\n" + doc)

    @invariant()
    def maps_equal_twin(self):
        view = ClusterView(self.cluster)
        table = view.engine.policy_table()
        datapaths = getattr(self.real, "datapaths", None)
        if datapaths:
            from datapath.compile import compile_policy
            for node, dp in datapaths.items():
                local = [view.ids.pod_identity(p) for p in self.cluster.pods if p.node == node]
                want = compile_policy(table, endpoint_identities=local)
                got = dp.policy_entries()
                if got != want:
                    extra = sorted(set(got.items()) - set(want.items()))[:10]
                    missing = sorted(set(want.items()) - set(got.items()))[:10]
                    self.fail(f"node {node}'s policy map differs from the twin's policy table",
                              [f"  in the map, not in the twin's table: {e}" for e in extra]
                              + [f"  in the twin's table, not in the map: {e}" for e in missing])
        socklbs = getattr(self.real, "socklbs", None)
        if socklbs:
            fronts, listed = expected_lb(lb_table(self.cluster, self.states, view.allocation))
            for node, lb in socklbs.items():
                got_fronts, got_listed, revnat = decoded_lb(lb.services_entries())
                lines = []
                if got_fronts != fronts:
                    lines += [f"  frontend {k}: twin {fronts.get(k)} map {got_fronts.get(k)}"
                              for k in sorted(set(fronts) | set(got_fronts)) if fronts.get(k) != got_fronts.get(k)]
                if got_listed != listed:
                    lines.append(f"  backends: twin {sorted(listed)} map {sorted(got_listed)}")
                if revnat != {(ip, port) for ip, port, _ in fronts}:
                    lines.append(f"  reverse NAT: map {sorted(revnat)}, twin frontends {sorted(fronts)}")
                if lines:
                    self.fail(f"node {node}'s LB maps differ from the twin's LB table", lines)

    @invariant()
    def verdicts_equal_twin(self):
        cluster = self.cluster
        diffkit.flush_conntrack(self.real)
        self.real.drain_events()
        table = lb_table(cluster, self.states)
        batches = {p.key: [(proto, str(d.ip), port) for d in cluster.pods if d.key != p.key for proto, port in PORTS]
                   for p in cluster.pods}
        fronts = []
        for fe in table.services:
            kind = "udp" if fe.protocol == Protocol.UDP else "tcp"
            n = connections_for(len(fe.active))
            fronts.append((fe, kind, len(batches[CLIENT]), n))
            batches[CLIENT] += [{"proto": "http" if kind == "tcp" else "udp", "ip": str(fe.frontend_ip), "port": fe.port}] * n
        running = self.probers.start_all(batches, TIMEOUT)
        view = ClusterView(cluster)
        want = {}
        for src in cluster.pods:
            for dst in cluster.pods:
                if dst.key != src.key:
                    for proto, port in PORTS:
                        fv = view.flows.evaluate(view.flows.query(src, dst.ip, Protocol[proto.upper()], port))
                        want[(src.key, str(dst.ip), proto, port)] = (fv.verdict.value, fv.explanation)
        got_rows = diffkit.results(running)
        lines, flows = [], set()
        for src, rows in got_rows.items():
            for r in rows[:len(cluster.pods) * len(PORTS) - len(PORTS)]:
                k = (src, r["ip"], r["proto"], r["port"])
                v = diffkit.verdict_of(r)
                self.stats.probes += 1
                self.stats.drops += v == "DROPPED"
                if v != want[k][0]:
                    flows.add((str(cluster.pod(src).ip), r["ip"], int(Protocol[r["proto"].upper()]), r["port"]))
                    lines.append(f"  probe {src} -> {r['ip']} {r['proto']}/{r['port']}: twin={want[k][0]} real={v} — {want[k][1]}")
        client = cluster.pod(CLIENT)
        for fe, kind, start, n in fronts:
            rows = got_rows[CLIENT][start:start + n]
            self.stats.probes += n
            self.stats.drops += sum(r["outcome"] == "timeout" for r in rows)
            ok = diffkit.twin_answering(cluster, view, CLIENT, fe, kind)
            answered = {(r["body"].split("|", 1)[1].strip() if kind == "udp" else r["body"].split()[1])
                        for r in rows if r["outcome"] == "answered" and r.get("body")}
            unreachable = all("EHOSTUNREACH" in (r.get("detail") or "") or "No route to host" in (r.get("detail") or "")
                              for r in rows)
            if answered != ok or (not fe.active and not unreachable):
                flows |= {(str(client.ip), str(b.ip), int(fe.protocol), b.port) for b in fe.backends}
                lines.append(f"  {n} connections {CLIENT} -> {fe.service} {fe.frontend_ip}:{fe.port}/{kind}: "
                             f"twin answers from {sorted(ok)} (no active backend: {not fe.active}), real from "
                             f"{sorted(answered)} (all EHOSTUNREACH: {unreachable}); backends "
                             f"{[(b.pod, b.state) for b in fe.backends]}")
        if lines:
            evs = diffkit.events_by_flow(self.real)
            lines.append("  BPF events of those flows (src ip, dst ip, protocol, port):")
            lines += [f"    {k}: {evs.get(k, ['no BPF event'])}" for k in sorted(flows)][:40]
            self.fail("real verdicts differ from the twin's", lines)


@pytest.fixture(scope="module")
def real():
    base = build_cluster(manifests({p: {} for p in PODS}, {}, {}))
    with RealCluster(base, socket_lb=True) as rc:
        probers = diffkit.Probers(rc.topo, [p.key for p in base.pods])
        try:
            yield rc, probers
        finally:
            probers.close()


def test_maps_and_verdicts_follow_random_policy_and_service_changes(real, differential_log):
    stats = diffkit.Stats("stateful")
    ReconcileMachine.rc = (*real, stats)
    try:
        run_state_machine_as_test(
            diffkit.seeded(ReconcileMachine),
            settings=diffkit.machine_settings(EXAMPLES, STEPS))
    finally:
        ReconcileMachine.rc = None
        differential_log.append(stats.line())
        print("\n" + stats.line())
