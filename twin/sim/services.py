"""Services in the twin: servers, readiness probers, the endpoint pipeline and
traffic through service frontends (socket LB), in virtual time.

Stages and their delays are those of ``twin.semantics.endpoints``; backend
choice is ``twin.semantics.lb.choose`` on the client node agent's own LB
table, so a node that has not yet heard of a removal still picks the dead
backend, as on a real cluster.
"""
from __future__ import annotations

import ipaddress
import random

import simpy

from twin.model.enums import Protocol
from twin.model.objects import Pod
from twin.model.scenario import Hold, Traffic, service_key
from twin.semantics.endpoints import (PipelineTiming, outage_interval, probe_port, readiness_probe, readmit_window,
                                      removal_interval)
from twin.semantics.lb import NO_BACKEND_ERRNO, choose, frontend
from twin.semantics.probe import ProbeTarget, predict
from twin.model.scenario import Probe


def _u(rng: random.Random, r: tuple[float, float]) -> float:
    return rng.uniform(*r)


class Servers:
    """Which pods' servers are up (kill/restart steps flip them)."""

    def __init__(self):
        self.dead: set[str] = set()

    def alive(self, pod: str) -> bool:
        return pod not in self.dead


class Prober:
    """The kubelet's readiness prober for one pod, on the pod's node."""

    def __init__(self, sim, pod: Pod, pipeline: PipelineTiming, rng: random.Random):
        self.sim, self.pod, self.pipeline, self.rng = sim, pod, pipeline, rng
        self.spec = readiness_probe(pod)
        self.port = probe_port(pod, self.spec)
        self.ready = True
        self.fails = self.succ = 0
        sim.env.process(self._run())

    def _run(self):
        env, spec = self.sim.env, self.spec
        # the prober's phase relative to the scenario is unknown: uniform in one period
        yield env.timeout(spec.initial_delay_s + self.rng.uniform(0, spec.period_s))
        while True:
            alive = self.sim.servers.alive(self.pod.key)
            yield env.timeout(self.rng.uniform(0.0002, 0.002) if alive else _u(self.rng, self.pipeline.refused_probe_s))
            if alive:
                self.succ, self.fails = self.succ + 1, 0
                if not self.ready and self.succ >= spec.success_threshold:
                    self.ready = True
                    env.process(self.sim.pipeline_change(self.pod.key, "ready"))
            else:
                self.fails, self.succ = self.fails + 1, 0
                self.sim.log("probe-failed", pod=self.pod.key, consecutive=self.fails)
                if self.ready and self.fails >= spec.failure_threshold:
                    self.ready = False
                    env.process(self.sim.pipeline_change(self.pod.key, "not-ready"))
            yield env.timeout(spec.period_s)


class ServiceTraffic:
    """Traffic steps of a simulation (requests, loop, hold/check, syscalls)."""

    def __init__(self, sim):
        self.sim = sim
        self.holds: dict[str, dict] = {}
        self.loops: dict[str, simpy.events.Process] = {}

    def _frontend(self, t: Traffic | Hold, src: Pod):
        view = self.sim.views.get(self.sim.api.version, self.sim.api.cluster)
        svc = view.cluster.service(service_key(t.dst))
        proto = Protocol.UDP if getattr(t, "kind", "http") == "udp" else Protocol.TCP
        return svc, proto

    def one_request(self, t: Traffic, index: int) -> dict:
        """Outcome of one request at the current virtual time (no time passes here)."""
        sim = self.sim
        src = sim.api.cluster.pod(t.src)
        svc, proto = self._frontend(t, src)
        agent = sim.agents[src.node]
        fe = frontend(agent.lb, svc.cluster_ip, t.port, proto)
        rec = {"name": t.name, "i": index, "t": round(sim.env.now, 6), "service": svc.key,
               "frontend": f"{svc.cluster_ip}:{t.port}", "backend": None, "outcome": None, "status": None}
        if fe is None:
            rec["outcome"] = "error"
            return rec
        be = choose(fe, sim.rng)
        if be is None:
            rec["outcome"] = NO_BACKEND_ERRNO
            return rec
        rec["backend"] = be.pod
        dst_pod = sim.api.cluster.pod(be.pod)
        probe = Probe(t.name, t.src, be.pod, "http" if t.kind == "http" else "udp", be.port, t.method, t.path)
        pred = predict(agent.view, probe, ProbeTarget(be.pod, be.ip, dst_pod, be.port, svc.key), sim.agents[dst_pod.node].view)
        if pred.verdict != "FORWARDED":
            rec["outcome"] = "timeout"
        elif not sim.servers.alive(be.pod):
            rec["outcome"] = "refused" if proto == Protocol.TCP else "timeout"
        else:
            rec["outcome"], rec["status"] = "answered", pred.http_status
        return rec

    def _cost(self, rec: dict) -> float:
        t = self.sim.config.timing
        if rec["outcome"] == "answered":
            return t.rtt(False) * 3 + t.server_s
        if rec["outcome"] == "timeout":
            return self.sim.scenario.settings.request_timeout_s
        return t.rtt(False)

    def run_requests(self, t: Traffic):
        n = 0
        end = self.sim.env.now + t.duration_s if t.background else None
        while (end is None and n < t.count) or (end is not None and self.sim.env.now < end):
            start = self.sim.env.now
            rec = self.one_request(t, n)
            yield self.sim.env.timeout(self._cost(rec))
            self.sim.result.traffic.append(rec)
            n += 1
            wait = t.interval_s - (self.sim.env.now - start)
            if wait > 0:
                yield self.sim.env.timeout(wait)

    def start_loop(self, t: Traffic) -> None:
        self.loops[t.name] = self.sim.env.process(self.run_requests(t))

    def hold(self, h: Hold):
        """Open connections until one lands on the wanted backend (at most 50 tries)."""
        t = Traffic(h.name, h.src, h.dst, h.port)
        for i in range(50):
            rec = self.one_request(t, i)
            yield self.sim.env.timeout(self._cost(rec))
            if rec["backend"] == h.backend and rec["outcome"] == "answered":
                self.holds[h.name] = {"backend": h.backend, "opened": self.sim.env.now, "attempts": i + 1}
                return
        self.holds[h.name] = {"backend": None, "attempts": 50}

    def check(self, name: str) -> dict:
        h = self.holds[name]
        alive = h["backend"] is not None and self.sim.servers.alive(h["backend"]) and \
            h["backend"] not in self.sim.killed_since.get(name, set())
        return {"hold": name, "backend": h["backend"], "state": "alive" if alive else "closed",
                "t": round(self.sim.env.now, 6)}

    def syscalls(self, t: Traffic) -> dict:
        """What strace and tcpdump in the client show for one request through a ClusterIP."""
        src = self.sim.api.cluster.pod(t.src)
        svc, _ = self._frontend(t, src)
        rec = self.one_request(t, 0)
        be = self.sim.api.cluster.pod(rec["backend"]).ip if rec["backend"] else None
        return {"name": t.name, "connect": f"{svc.cluster_ip}:{t.port}", "getsockname_ip": str(src.ip),
                "getpeername": f"{svc.cluster_ip}:{t.port}",
                "capture_ips": sorted({str(src.ip)} | ({str(be)} if be else set())),
                "capture_has_frontend": False, "outcome": rec["outcome"]}


def predictions(cluster, kills) -> list[dict]:
    """Analytical intervals the runs are checked against (outage and readmission).

    ``kills`` lists (pod key, the loop running during the kill or None).  The
    killed pod's share is 1/n of the loop frontend's active backends.
    """
    from twin.semantics.lb import lb_table
    table = lb_table(cluster)
    out = []
    for pod_key, loop in kills:
        pod = cluster.pod(pod_key)
        spec = readiness_probe(pod)
        interval = loop.interval_s if loop else 0.1
        n = max((len(fe.active) for fe in table.services if any(b.pod == pod_key for b in fe.active)), default=1)
        out.append({"pod": pod_key, "loop": loop.name if loop else None, "share": round(1 / n, 4),
                    "removal_s": removal_interval(spec), "readmit_s": readmit_window(spec, interval, 1 / n),
                    "outage_s": outage_interval(spec, interval, 1 / n),
                    "probe": {"kind": spec.kind, "period_s": spec.period_s, "failure_threshold": spec.failure_threshold,
                              "success_threshold": spec.success_threshold}})
    return out
