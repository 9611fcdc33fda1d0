"""Endpoint-pipeline arithmetic and LB semantics (pure)."""
from __future__ import annotations

import random

import pytest

from twin.model.objects import ProbeSpec
from twin.semantics.endpoints import (MISS_PROBABILITY, PipelineTiming, outage_interval, readiness_probe,
                                      removal_interval, requests_to_miss)
from twin.semantics.lb import choose, lb_table
from twin.semantics.tables import LBBackend, LBService
from twin.model.enums import Protocol

from twinhelp import load  # noqa: E402

pytestmark = pytest.mark.pure
SPEC = ProbeSpec("tcpSocket", 80, period_s=1.0, timeout_s=1.0, failure_threshold=3, success_threshold=1)


def test_removal_needs_failure_threshold_periods_plus_the_later_stages():
    t = PipelineTiming()
    lo, hi = removal_interval(SPEC, t)
    assert lo == pytest.approx(2.0 + t.refused_probe_s[0] + t.after_detection[0])
    assert hi == pytest.approx(3.0 + t.refused_probe_s[1] + t.after_detection[1])


def test_requests_to_miss_makes_an_unlucky_run_rarer_than_the_miss_probability():
    for share in (0.5, 1 / 3, 0.25):
        k = requests_to_miss(share)
        assert (1 - share) ** k <= MISS_PROBABILITY < (1 - share) ** (k - 1)
    assert requests_to_miss(1.0) == 1


def test_outage_interval_ends_at_removal_and_starts_earlier_by_the_unlucky_run():
    lo, hi = outage_interval(SPEC, 0.1, 0.5)
    rlo, rhi = removal_interval(SPEC)
    assert hi == rhi and lo == pytest.approx(rlo - requests_to_miss(0.5) * 0.1)


def test_pod_without_readiness_probe_gets_the_documented_default_on_its_served_port():
    c = load("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec: {containers: [{name: c, image: traefik/whoami}]}
""")
    spec = readiness_probe(c.pod("default/web"))
    assert (spec.kind, spec.port, spec.period_s, spec.failure_threshold) == ("tcpSocket", 80, 1.0, 3)


def test_readiness_probe_from_the_pod_spec_wins_over_the_default():
    c = load("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: c
    image: traefik/whoami
    readinessProbe: {httpGet: {path: /health, port: 80}, periodSeconds: 2, failureThreshold: 5}
""")
    spec = readiness_probe(c.pod("default/web"))
    assert (spec.kind, spec.path, spec.period_s, spec.failure_threshold, spec.timeout_s) == ("httpGet", "/health", 2.0, 5, 1.0)


def test_not_ready_pods_leave_the_lb_table_and_terminating_ones_are_never_chosen():
    c = load("""
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: w}}
spec: {nodeName: k8s-w1, containers: [{name: c, image: traefik/whoami}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: w}}
spec: {nodeName: k8s-w2, containers: [{name: c, image: traefik/whoami}]}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {selector: {app: w}, ports: [{port: 80}]}
""")
    fe = lb_table(c, {"default/a": "not-ready"}).services[0]
    assert [b.pod for b in fe.backends] == ["default/b"]
    fe = lb_table(c, {"default/a": "terminating"}).services[0]
    rng = random.Random(1)
    assert {choose(fe, rng).pod for _ in range(50)} == {"default/b"}
    assert choose(lb_table(c, {"default/a": "not-ready", "default/b": "not-ready"}).services[0], rng) is None


def test_choose_is_uniform_over_active_backends():
    bes = tuple(LBBackend(f"10.0.0.{i}", 80, Protocol.TCP, f"ns/p{i}") for i in range(4))
    fe = LBService("ns/s", "10.10.0.1", 80, Protocol.TCP, "ClusterIP", bes)
    rng = random.Random(7)
    counts = {b.pod: 0 for b in bes}
    for _ in range(4000):
        counts[choose(fe, rng).pod] += 1
    assert all(900 < n < 1100 for n in counts.values()), counts
