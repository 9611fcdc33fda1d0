"""Pure: the desired-state store's versions and change notifications, and an
agent's reconcile loop over fake reconcilers (no kernel)."""
from __future__ import annotations

import threading

import pytest

from twin.model.objects import Cluster

from datapath.agent.store import ALL_CHANGES, CLUSTER, ENDPOINT_STATES, Store


def test_a_watch_starts_with_the_current_state_marked_all_changed():
    store = Store()
    c = Cluster()
    store.publish(c)
    first = store.watch().next(timeout=1)
    assert first.version == 1 and first.cluster is c and first.changed == ALL_CHANGES


def test_changes_a_watcher_missed_are_folded_into_the_newest_snapshot():
    store = Store()
    c1, c2 = Cluster(), Cluster(namespaces=("default", "x"))
    store.publish(c1)
    w = store.watch()
    w.next(timeout=1)
    store.set_endpoint_state("default/a", "not-ready")
    store.publish(c2)
    store.set_endpoint_state("default/b", "terminating")
    got = w.next(timeout=1)
    assert got.version == 4 and got.cluster is c2
    assert got.changed == {CLUSTER, ENDPOINT_STATES}
    assert got.pods == {"default/a", "default/b"}
    assert dict(got.endpoint_states) == {"default/a": "not-ready", "default/b": "terminating"}
    assert w.next(timeout=0.05) is None, "nothing new: the watch times out"


def test_a_watcher_that_fell_behind_the_history_gets_everything_marked_changed():
    store = Store(history=2)
    store.publish(Cluster())
    w = store.watch()
    w.next(timeout=1)
    for pod in ("default/a", "default/b", "default/c"):
        store.set_endpoint_state(pod, "not-ready")
    assert w.next(timeout=1).changed == ALL_CHANGES


def test_closing_the_store_wakes_a_blocked_watcher():
    store = Store()
    w = store.watch()
    got = []
    th = threading.Thread(target=lambda: got.append(w.next(timeout=30)))
    th.start()
    store.close()
    th.join(timeout=5)
    assert not th.is_alive() and got == [None]


@pytest.mark.parametrize("state", ["ready ", "Ready", "gone"])
def test_unknown_endpoint_states_are_refused(state):
    store = Store()
    store.publish(Cluster())
    with pytest.raises(ValueError, match="must be one of"):
        store.set_endpoint_state("default/a", state)


class FakeReconciler:
    def __init__(self, name, concerns, fail=lambda d: False):
        self.name, self.concerns, self.fail, self.seen = name, frozenset(concerns), fail, []

    def reconcile(self, desired, tables):
        from datapath.errors import MapError
        from datapath.reconcile import ReconcileResult
        self.seen.append(desired.version)
        if self.fail(desired):
            raise MapError(f"injected failure at version {desired.version}")
        return ReconcileResult(added=1)


def fake_agent(store, reconcilers):
    """A NodeAgent whose reconcilers are fakes: its loop runs, no kernel objects."""
    from datapath.agent import NodeAgent, NodeHost

    agent = NodeAgent(NodeHost("n1", "unused", lambda k: k), store)
    agent.reconcilers = reconcilers
    agent.start_watching()
    return agent


def test_the_agent_runs_only_the_reconcilers_a_change_concerns():
    store = Store()
    pol, svc = FakeReconciler("policy", {CLUSTER}), FakeReconciler("services", {CLUSTER, ENDPOINT_STATES})
    agent = fake_agent(store, [pol, svc])
    try:
        agent.wait_for(store.publish(Cluster()), timeout=10)
        report = agent.wait_for(store.set_endpoint_state("default/a", "not-ready"), timeout=10)
        assert set(report.results) == {"services"}
        assert pol.seen == [1] and svc.seen == [1, 2]
    finally:
        agent.close()


def test_a_failed_reconcile_is_reported_then_retried_until_it_succeeds():
    store = Store()
    failures = {"left": 2}

    def fail(_d):
        failures["left"] -= 1
        return failures["left"] >= 0

    rec = FakeReconciler("policy", {CLUSTER}, fail)
    agent = fake_agent(store, [rec])
    try:
        v = store.publish(Cluster())
        first = agent.wait_for(v, timeout=10)
        assert not first.ok and first.error == "policy: injected failure at version 1"
        for _ in range(100):  # retries back off 0.2 s, then 0.5 s
            if any(r.ok for r in agent.reports):
                break
            threading.Event().wait(0.1)
        assert [r.ok for r in agent.reports] == [False, False, True]
        assert rec.seen == [1, 1, 1]
    finally:
        agent.close()


def _cluster(services: int, policy: bool = False):
    import yaml

    from twin.model.build import build_cluster
    from twin.model.yamlsrc import Source

    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
             "spec": {"nodeName": "k8s-w1", "containers": [{"name": "c", "image": "twin/echo"}]}}]
    docs += [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}} for i in range(services)]
    if policy:
        docs.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "p"},
                     "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}})
    return build_cluster([Source("<test>", yaml.safe_dump_all(docs))])


def test_a_cluster_change_that_only_touches_services_names_them():
    store = Store()
    store.publish(_cluster(3))
    w = store.watch()
    w.next(timeout=1)
    store.publish(_cluster(4))  # built afresh: equal objects, one more service
    got = w.next(timeout=1)
    assert got.changed == {CLUSTER} and got.services == {"default/s3"}
    store.publish(_cluster(2))
    assert w.next(timeout=1).services == {"default/s2", "default/s3"}
    store.publish(_cluster(2, policy=True))
    assert w.next(timeout=1).services is None, "a policy changed too: the services changed are not known"
    store.publish(_cluster(3, policy=True))
    store.publish(_cluster(3))
    assert w.next(timeout=1).services is None, "folded with a policy change: not known"
