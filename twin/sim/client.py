"""Traffic as components: a ``Client`` is one traffic generator in a pod (a
``requests`` burst, a ``loop``, a held keep-alive connection, an strace'd
request), with its own random stream for backend choice.

Backend choice is ``twin.semantics.lb.choose`` on the LB table of the client
node's agent, so a node that has not yet heard of a removal still picks the
dead backend, as on a real cluster.
"""
from __future__ import annotations

from twin.model.enums import Protocol, Verdict
from twin.model.observations import HoldResult, RequestRecord, SyscallFacts
from twin.model.scenario import Hold, Probe, Traffic, service_key
from twin.semantics.lb import NO_BACKEND_ERRNO, choose, frontend
from twin.semantics.probe import ProbeTarget, predict
from twin.sim.world import Component

#: How many connections a ``hold`` opens at most to land on the wanted backend.
HOLD_ATTEMPTS = 50


def request_loop(env, world, t: Traffic, one):
    """The pacing of a ``requests``/``loop`` step, for every kind of client: ``one(t, n)``
    (a SimPy generator returning the RequestRecord) every ``interval``, ``count`` times
    or for ``duration`` when it runs as a loop."""
    n = 0
    end = env.now + t.duration_s if t.background else None
    while (end is None and n < t.count) or (end is not None and env.now < end):
        start = env.now
        rec = yield from one(t, n)
        world.obs.requests.append(rec)
        n += 1
        wait = t.interval_s - (env.now - start)
        if wait > 0:
            yield env.timeout(wait)


class Client(Component):
    kind = "client"

    def __init__(self, twin, src: str, name: str):
        super().__init__(twin.world, f"{src}/{name}")
        self.twin = twin
        self.src = twin.api.cluster.pod(src)
        self.agent = twin.agents[self.src.node]
        self.held: dict | None = None  # a hold: backend, when opened, attempts
        self.backend_killed = False  # the held connection's server was killed since it was opened

    def _service(self, dst: str, kind: str):
        svc = self.twin.api.cluster.service(service_key(dst))
        return svc, (Protocol.UDP if kind == "udp" else Protocol.TCP)

    def one_request(self, t: Traffic, index: int) -> RequestRecord:
        """Outcome of one request at the current virtual time (no time passes here)."""
        twin = self.twin
        svc, proto = self._service(t.dst, t.kind)
        fe = frontend(self.agent.lb, svc.cluster_ip, t.port, proto)
        base = dict(name=t.name, i=index, t=round(self.env.now, 6), service=svc.key,
                    frontend=f"{svc.cluster_ip}:{t.port}")
        if fe is None:
            return RequestRecord(**base, backend=None, outcome="error")
        be = choose(fe, self.rng)
        if be is None:
            return RequestRecord(**base, backend=None, outcome=NO_BACKEND_ERRNO)
        dst_pod = twin.api.cluster.pod(be.pod)
        probe = Probe(t.name, t.src, be.pod, "http" if t.kind == "http" else "udp", be.port, t.method, t.path)
        pred = predict(self.agent.view, probe, ProbeTarget(be.pod, be.ip, dst_pod, be.port, svc.key),
                       twin.agents[dst_pod.node].view)
        if pred.verdict != Verdict.FORWARDED.value:
            return RequestRecord(**base, backend=be.pod, outcome="timeout")
        if not self.world.servers.alive(be.pod):
            return RequestRecord(**base, backend=be.pod, outcome="refused" if proto == Protocol.TCP else "timeout")
        return RequestRecord(**base, backend=be.pod, outcome="answered", status=pred.http_status)

    def _cost(self, rec: RequestRecord) -> float:
        rtt = 2 * self.delays.net_cross_node.sample(self.rng)
        if rec.outcome == "answered":
            return 3 * rtt + self.delays.server_answer.sample(self.rng)
        if rec.outcome == "timeout":
            return self.world.scenario.settings.request_timeout_s
        return rtt

    def run_requests(self, t: Traffic):
        """``count`` requests, or requests for ``duration`` when it runs as a loop, every ``interval``."""
        yield from request_loop(self.env, self.world, t, self._request)

    def _request(self, t: Traffic, n: int):
        rec = self.one_request(t, n)
        yield self.env.timeout(self._cost(rec))
        return rec

    def start_loop(self, t: Traffic):
        return self.env.process(self.run_requests(t))

    def hold(self, h: Hold):
        """Open connections until one lands on the wanted backend (at most HOLD_ATTEMPTS)."""
        t = Traffic(h.name, h.src, h.dst, h.port)
        for i in range(HOLD_ATTEMPTS):
            rec = self.one_request(t, i)
            yield self.env.timeout(self._cost(rec))
            if rec.backend == h.backend and rec.outcome == "answered":
                self.held = {"backend": h.backend, "opened": self.env.now, "attempts": i + 1}
                return
        self.held = {"backend": None, "attempts": HOLD_ATTEMPTS}

    def server_killed(self, pod: str) -> None:
        if self.held and self.held["backend"] == pod:
            self.backend_killed = True

    def check(self, name: str, step: int = -1) -> HoldResult:
        be = self.held["backend"] if self.held else None
        alive = be is not None and self.world.servers.alive(be) and not self.backend_killed
        return HoldResult(hold=name, backend=be, state="alive" if alive else "closed", t=round(self.env.now, 6), step=step)

    def syscalls(self, t: Traffic) -> SyscallFacts:
        """What strace and tcpdump in the client show for one request through a ClusterIP."""
        svc, _ = self._service(t.dst, t.kind)
        rec = self.one_request(t, 0)
        be = self.twin.api.cluster.pod(rec.backend).ip if rec.backend else None
        return SyscallFacts(name=t.name, connect=f"{svc.cluster_ip}:{t.port}", getsockname_ip=str(self.src.ip),
                            getpeername=f"{svc.cluster_ip}:{t.port}",
                            capture_ips=tuple(sorted({str(self.src.ip)} | ({str(be)} if be else set()))),
                            capture_has_frontend=False, outcome=rec.outcome)
