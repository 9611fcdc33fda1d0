"""Kubelet-style readiness probers for a real run.

One prober thread per backend pod, probing from the pod's node netns as the
kubelet does; a readiness change is published to the desired-state store
(the kubelet's status update), and every node's agent updates its LB maps
on its own.  Kubelets are not Cilium agents: this stays in the harness.

Stage events are logged with CLOCK_MONOTONIC relative to the scenario start,
the same clock the in-pod clients print.
"""
from __future__ import annotations

import random
import socket
import threading
import time

from twin.model.findings import TwinError
from twin.semantics.endpoints import probe_port, probed_backends

__all__ = ["RealPipeline"]


class RealPipeline:
    """One prober thread per backend pod; changes go to ``rc.store``."""

    def __init__(self, rc, t0: float, log: list, seed: int = 1):
        self.rc, self.t0, self.log = rc, t0, log
        self.stop = threading.Event()
        self.threads = []
        rng = random.Random(seed)
        for pod, spec in probed_backends(rc.cluster):
            th = threading.Thread(target=self._run, args=(pod, spec, rng.uniform(0, spec.period_s)),
                                  name=f"prober-{pod.key}", daemon=True)
            self.threads.append(th)
            th.start()

    def _event(self, event: str, t: float | None = None, **kw) -> None:
        now = time.monotonic() if t is None else t
        self.log.append({"t": round(now - self.t0, 6), "event": event, **kw})

    def _probe_once(self, pod, spec) -> bool:
        from datapath.attach import entered_netns
        with entered_netns(self.rc.topo.node_netns(pod.node)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(spec.timeout_s)
        try:
            s.connect((str(pod.ip), probe_port(pod, spec)))
            if spec.kind == "httpGet":
                s.sendall(f"GET {spec.path} HTTP/1.1\r\nHost: {pod.ip}\r\nConnection: close\r\n\r\n".encode())
                head = s.recv(64)
                parts = head.split()
                return len(parts) > 1 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
            return True
        except OSError:
            return False
        finally:
            s.close()

    def _run(self, pod, spec, phase: float) -> None:
        ready, fails, succ = True, 0, 0
        if self.stop.wait(spec.initial_delay_s + phase):
            return
        nxt = time.monotonic()
        while not self.stop.is_set():
            ok = self._probe_once(pod, spec)
            if ok:
                succ, fails = succ + 1, 0
                if not ready and succ >= spec.success_threshold:
                    ready = True
                    self._change(pod.key, "ready")
            else:
                fails, succ = fails + 1, 0
                self._event("probe-failed", pod=pod.key, consecutive=fails)
                if ready and fails >= spec.failure_threshold:
                    ready = False
                    self._change(pod.key, "not-ready")
            # on the kubelet's period; after a slow update, the next tick is now, not a burst of missed ones
            nxt = max(nxt + spec.period_s, time.monotonic())
            self.stop.wait(max(0.0, nxt - time.monotonic()))

    def _change(self, pod: str, state: str) -> None:
        self._event("pod-" + state, pod=pod)
        version = self.rc.store.set_endpoint_state(pod, state)  # in-process kubelet → API: no network hop here
        self._event("status-updated", pod=pod, state=state)
        try:
            reports = self.rc.wait(version)
        except TwinError as exc:
            self._event("agent-error", pod=pod, state=state, error=str(exc))
            return
        lb_nodes = self.rc.socklbs
        for node, r in sorted(reports.items()):
            if node in lb_nodes:
                self._event("agent-lb-updated", t=r.started + r.seconds, node=node, pod=pod, state=state,
                            seconds=r.seconds)

    def close(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=5)
