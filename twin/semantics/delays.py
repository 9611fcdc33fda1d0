"""Every delay of the twin, defined once: its distribution and where it comes from (pure).

The SimPy twin (``twin.sim``) draws from these; the analytical intervals of
:mod:`twin.semantics.endpoints` take their bounds from the same objects, so a
delay cannot differ between the simulation and its prediction.

``origin`` says whether a number was measured on the real side (and where) or
is an assumption.  Most are assumptions about a Cilium cluster (API server,
kubelet, a Cilium agent), which the project's real side does not reproduce:
its "kubelet", endpoint controller and agents run in one process.  The
numbers are the twin's model; none is tuned to make a test pass.  A what-if
changes them with :meth:`Delays.replace` (or per component, see ``twin.sim``).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from twin.semantics.dists import Constant, Dist, LogNormal, Uniform, describe

_FAILOVER_RUN = "scenarios/lb-backend-failover.yaml --backend both, 2026-11-27"
_K8S_CLIENT_RTT = ("measured on this machine 2026-11-28: the kubernetes Python client's CoordinationV1Api "
                   "read_namespaced_lease against a minimal Python HTTP server on loopback (TCP_NODELAY), 500 calls: "
                   "min 0.37 ms, p50 0.58 ms, p99 1.26 ms (a read+replace pair: p50 1.29 ms, p99 1.97 ms). Without "
                   "TCP_NODELAY on the server the same round trip is 44 ms (Nagle + delayed ACK): an API server "
                   "that writes headers and body separately must set it")
_CONTROL_PLANE = ("measured on this machine 2026-11-28 01:13 UTC on the real control plane: the kubernetes Python "
                  "client in k8s-w1's network namespace (RealTopology with l2) against the project's Lease API "
                  "server (harness.apiserver ControlPlane, etcd-backed) across the LAN, 300 alternating "
                  "read_namespaced_lease / replace_namespaced_lease calls of one Lease, one kept-alive connection, "
                  "2-core machine shared with other runs")

_ELECTOR_STARTS = ("measured 2026-11-28 on the real side: 'started' events of datapath.agent.l2announcer "
                   "(ElectorProcess.want starts one thread per lease, in lease order), scenarios/l2-rate-limit.yaml "
                   "--backend both, three runs, two fresh elector processes each")


@dataclass(frozen=True)
class Delay:
    """One named delay: a distribution and its origin."""

    name: str
    dist: Dist
    origin: str

    def sample(self, rng: random.Random) -> float:
        return self.dist.sample(rng)

    def bounds(self) -> tuple[float, float]:
        return self.dist.bounds()

    def describe(self) -> dict:
        return {"delay": self.name, **describe(self.dist), "origin": self.origin}


def _d(name: str, dist: Dist, origin: str):
    return dataclasses.field(default=Delay(name, dist, origin))


@dataclass(frozen=True)
class Delays:
    """The twin's delays (seconds)."""

    api_accept: Delay = _d(
        "api-accept", Constant(5e-3),
        "assumption: the API server admits and stores an object (apply/delete) on a small cluster; "
        "the real side applies in-process and does not have this stage")
    agent_regenerate: Delay = _d(
        "agent-regenerate", Uniform(10e-3, 60e-3),
        "assumption: a Cilium agent's watch delivery plus regeneration of policy or LB maps after a "
        "change. The project's own agent is faster: 0.2-0.7 ms per node to update its LB maps "
        f"(agent-lb-updated.seconds, {_FAILOVER_RUN})")
    kubelet_status: Delay = _d(
        "kubelet-status", Uniform(5e-3, 30e-3),
        "assumption: the kubelet patches the pod's Ready condition at the API server; on the real side "
        f"this is in-process (status-updated 3 us after pod-not-ready, {_FAILOVER_RUN})")
    endpoints_controller: Delay = _d(
        "endpoints-controller", Uniform(2e-3, 20e-3),
        "assumption: the endpoint(slice) controller drops/re-adds the pod and the API server stores it; "
        "in-process on the real side")
    probe_answered: Delay = _d(
        "probe-answered", Uniform(0.2e-3, 2e-3),
        "assumption: a readiness probe of a live server (connect, and the HTTP answer for httpGet)")
    probe_refused: Delay = _d(
        "probe-refused", Uniform(0.5e-3, 10e-3),
        "assumption: a readiness probe of a dead server whose port refuses connections (one round trip "
        "plus the prober's scheduling)")
    net_same_node: Delay = _d(
        "net-one-way-same-node", Constant(30e-6),
        "assumption: one-way latency between pods on one node (veth + BPF); for scale, a connect() round "
        "trip to a backend IP measures p50 16.9 us, p99 28.1 us (bench/results/latest.md, 'direct')")
    net_cross_node: Delay = _d(
        "net-one-way-cross-node", Constant(80e-6),
        "assumption: one-way latency between pods on different nodes (adds the LAN bridge)")
    server_answer: Delay = _d(
        "server-answer", Constant(0.5e-3),
        "assumption: an HTTP server's time to answer a small request")

    # -- L2 announcements (issue 7): the Lease API, the agent's responder, ARP on the LAN --
    lease_request: Delay = _d(
        "lease-request-rtt", LogNormal(0.6e-3, 1.3e-3),
        f"{_K8S_CLIENT_RTT}. Used as one Lease Get/Create/Update as the agent's API client sees it, "
        "without the server's service time: client-side (de)serialisation plus the HTTP round trip (the "
        "LAN's veth/bridge hops add tens of microseconds); each leg is half of one draw")
    api_lease_read: Delay = _d(
        "api-lease-read", LogNormal(1.45e-3, 6.0e-3),
        f"{_CONTROL_PLANE}: Get end to end p10 1.45 ms, p50 2.04 ms, p90 3.35 ms, p99 7.1 ms, max 7.2 ms. "
        "Used as the server's part (lease-request-rtt is drawn on top): median 2.04 - 0.6 ms, p99 set so the "
        "sum's quantiles match (twin sum p10/p50/p90/p99: 1.25/2.11/3.83/6.76 ms); requests queue for the "
        "one server")
    api_lease_write: Delay = _d(
        "api-lease-write", LogNormal(3.6e-3, 13.0e-3),
        f"{_CONTROL_PLANE}: Update (replace) end to end p10 3.05 ms, p50 4.26 ms, p90 7.36 ms, p99 14.5 ms, "
        "max 20.9 ms (an earlier run of 100: p50 4.8, p90 8.6, max 14.5 ms). Used as the server's part "
        "(lease-request-rtt on top; twin sum p10/p50/p90/p99: 2.39/4.24/8.0/13.7 ms); requests queue for the "
        "one server")
    elector_client_warmup: Delay = _d(
        "elector-client-warmup", Uniform(24e-3, 50e-3),
        f"{_ELECTOR_STARTS}: from the first elector's start to the third's, 24.4-49.4 ms (six process starts: "
        "49.4, 25.2, 34.9, 24.4, 44.1, 27.4 ms), against 0.1-3.8 ms between later starts. Read as: a fresh "
        "elector process's first API calls (the kubernetes client's first use) hold the interpreter lock that "
        "long; the main thread starting electors and the threads whose replies arrived wait for it (the first "
        "Get+Create of a fresh process took 36 ms in l2-nic-down against 7 ms warm). The second thread, "
        "started meanwhile, takes its first token only then, in an order the scheduler picks against the first "
        "thread's Create: in 2 of 8 real process starts the first thread's Create took the burst's second token "
        "before the second thread's Get (acquired 44 and 80 ms after its start)")
    elector_start_second: Delay = _d(
        "elector-start-second", Uniform(2e-3, 9e-3),
        f"{_ELECTOR_STARTS}: between the first and the second elector's start 2.1-8.7 ms (4.4, 3.9, 4.6, 2.1, "
        "2.8, 8.7 ms): the interpreter hands the lock back to the main thread once during the first thread's "
        "first request (the 5 ms switch interval)")
    elector_thread_gap: Delay = _d(
        "elector-thread-gap", LogNormal(0.3e-3, 3.8e-3),
        f"{_ELECTOR_STARTS}: between later elector starts, 0.1-3.8 ms (median 0.3 ms); also the order in "
        "which threads waiting for the interpreter lock get it after the warm-up (each waits one draw)")
    responder_program: Delay = _d(
        "responder-program", Uniform(0.1e-3, 2e-3),
        "assumption: the agent writes (or deletes) the responder map entries (IP, ifindex) → MAC after "
        "the elector's callback: one bpf map update per entry from Python plus the callback's hand-off")
    garp_send: Delay = _d(
        "garp-send", Uniform(1e-3, 10e-3),
        "assumption: building and sending one gratuitous ARP request per IP and interface from Python "
        "(scapy's sendp or a raw socket) after the responder is programmed")
    lan_one_way: Delay = _d(
        "lan-one-way", Uniform(20e-6, 100e-6),
        "assumption: one frame between the external host and a node across the LAN bridge (veth + "
        "bridge); an ARP request/reply round trip is two draws")

    def replace(self, **dists: Dist) -> "Delays":
        """These delays with some distributions changed (a what-if); the origin says so."""
        names = {f.name for f in dataclasses.fields(self)}
        changes = {}
        for key, dist in dists.items():
            if key not in names:
                raise ValueError(f"no delay named {key!r} (known: {', '.join(sorted(names))})")
            old: Delay = getattr(self, key)
            changes[key] = Delay(old.name, dist, f"what-if override (model: {describe(old.dist)})")
        return dataclasses.replace(self, **changes)

    def all(self) -> list[Delay]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def describe(self, l2: bool = False) -> list[dict]:
        """Every delay's description; the L2 ones (:data:`L2_DELAYS`) only with ``l2``
        (a run without L2 announcements never draws them)."""
        return [getattr(self, f.name).describe() for f in dataclasses.fields(self) if l2 or f.name not in L2_DELAYS]


#: The delays only runs with L2 announcements use (field names).
L2_DELAYS = ("lease_request", "elector_client_warmup", "elector_start_second", "elector_thread_gap", "api_lease_read", "api_lease_write", "responder_program", "garp_send", "lan_one_way")

#: The twin's model.
DELAYS = Delays()
