"""Differential tier for L2 announcements: random CiliumL2AnnouncementPolicies
(service and node selectors over a few labels, interface regexes over
``ens5``/``ens6``/``ens7``-like names), one LB-IPAM pool of 1-2 CIDRs and 2-5
LoadBalancer services with random labels, over 3 or 5 nodes.

For every case both sides must agree on

* the LB IPs and which services are announced: the IPs the real agents
  programmed into their ARP responder maps (read from the kernel) are exactly
  the twin's announced IPs (``twin.semantics.l2.announcements`` over
  ``twin.semantics.lbipam.allocate``);
* who answers ARP: for each announced IP exactly one node answers the
  external host's arping, and it is one of the twin's candidate nodes; for
  each allocated IP the twin does not announce, nobody answers.

Cost: a topology per node shape (the node set and their LAN interface names
are the topology; node labels, policies, pools and services change in place
by ``RealCluster.program``), so each shape's cases share one control plane
and one set of agents.  Service names carry the case number, so every case
elects fresh leases.  The seed is printed on failure (``diffkit.SEED``;
``HYPOTHESIS_SEED=N`` replays).
"""
from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

import diffkit
from harness.real import RealCluster, real_unavailable_reason
from harness.realcluster import L2Options
from twin.model.build import build_cluster
from twin.model.yamlsrc import Source
from twin.semantics.l2 import announcements
from twin.semantics.lbipam import allocate

pytestmark = pytest.mark.harness
_reason = real_unavailable_reason()
if _reason:
    pytest.skip(f"real datapath unavailable: {_reason}", allow_module_level=True)

CASES = 10  # per node shape (x SCALE with SOAK=1)
#: node shapes: each node's LAN interface (its uplink); one topology each
SHAPES = {"3 nodes": ("ens5", "ens6", "ens5"), "5 nodes": ("ens5", "ens5", "ens6", "ens7", "ens6")}
#: Cilium's default lease timings and a client rate limit the holders stay well below: this tier is
#: about which services are announced by whom, not throttling (l2-rate-limit.yaml is).  With the
#: seed's 3s/1s/200ms and the default 5 qps, a holder renews each lease with a Get and an Update
#: every 200 ms, so a node holding three leases misses its renew deadlines and its responders flap
#: (cilium#26586): the cases here hold up to five leases on one node.
VALUES = {"kubeProxyReplacement": True, "externalIPs": {"enabled": True},
          "l2announcements": {"enabled": True, "leaseDuration": "15s", "leaseRenewDeadline": "5s",
                              "leaseRetryPeriod": "2s"},
          "k8sClientRateLimit": {"qps": 20, "burst": 40}}
CIDRS = ["10.10.200.0/29", "10.10.201.0/28", "10.10.202.0/30", "10.10.203.8/29"]
REGEXES = ["^ens[0-9]+", "^ens5$", "^ens6$", "ens[67]", "^eth"]
SETTLE_S = 8.0  # a fresh lease is created by the first candidate at once; a few retry periods of slack
#: two who-has one second apart: a node must answer at least one of them (one lost reply on a
#: busy 2-core machine is not a disagreement); the count of distinct answering nodes is what is compared
ARPING_COUNT, ARPING_TIMEOUT_S = 2, 2.0


def node_docs(shape: tuple[str, ...], labels: list[dict]) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": f"node{i}", "labels": dict(lab), "annotations": {"twin.dev/interfaces": iface}}}
            for i, (iface, lab) in enumerate(zip(shape, labels))]


def case_docs(n: int, shape: tuple[str, ...], case: dict) -> list[dict]:
    docs = node_docs(shape, case["node_labels"])
    docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default",
                                                                   "labels": {"app": "web"}},
                 "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "traefik/whoami"}]}})
    for i, pol in enumerate(case["policies"]):
        spec = {"loadBalancerIPs": True, "externalIPs": True}
        if pol["services"]:
            spec["serviceSelector"] = {"matchLabels": dict(pol["services"])}
        if pol["nodes"]:
            spec["nodeSelector"] = {"matchLabels": dict(pol["nodes"])}
        if pol["interfaces"]:
            spec["interfaces"] = list(pol["interfaces"])
        docs.append({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
                     "metadata": {"name": f"pol{i}"}, "spec": spec})
    docs.append({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                 "metadata": {"name": "pool"},
                 "spec": {"allowFirstLastIPs": "Yes" if case["first_last"] else "No",
                          "blocks": [{"cidr": c} for c in case["cidrs"]]}})
    for i, lab in enumerate(case["services"]):
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"c{n}-s{i}", "namespace": "default", "labels": dict(lab)},
                     "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                              "ports": [{"port": 80, "targetPort": 80}]}})
    return docs


def _build(n: int, shape: tuple[str, ...], case: dict):
    return build_cluster([Source("<generated L2 case>", yaml.safe_dump_all(case_docs(n, shape, case)))],
                         Source("<generated values>", yaml.safe_dump(VALUES)))


node_labels = st.fixed_dictionaries({}, optional={"zone": st.sampled_from(["a", "b"]), "edge": st.just("yes")})
svc_labels = st.fixed_dictionaries({}, optional={"color": st.sampled_from(["blue", "red"]), "tier": st.just("web")})
policies = st.fixed_dictionaries({
    "services": st.one_of(st.just({}), st.fixed_dictionaries({"color": st.sampled_from(["blue", "red"])}),
                          st.just({"tier": "web"})),
    "nodes": st.one_of(st.just({}), st.fixed_dictionaries({"zone": st.sampled_from(["a", "b"])}),
                       st.just({"edge": "yes"})),
    "interfaces": st.lists(st.sampled_from(REGEXES), max_size=2, unique=True),
})


def cases_for(shape):
    return st.fixed_dictionaries({
        "node_labels": st.lists(node_labels, min_size=len(shape), max_size=len(shape)),
        "policies": st.lists(policies, min_size=1, max_size=2),
        "cidrs": st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2, unique=True),
        "first_last": st.booleans(),
        "services": st.lists(svc_labels, min_size=2, max_size=5),
    })


@pytest.fixture(scope="module", params=sorted(SHAPES))
def real(request):
    shape = SHAPES[request.param]
    empty = {"node_labels": [{}] * len(shape), "policies": [], "cidrs": [CIDRS[0]], "first_last": False, "services": []}
    with RealCluster(_build(0, shape, empty), l2=L2Options()) as rc:
        yield rc, shape, [0]


stats = diffkit.stats_fixture("l2")


def twin_side(cluster) -> tuple[dict, dict]:
    """(announced IP -> candidate nodes, allocated IP -> service) by the twin's semantics."""
    alloc = allocate(cluster)
    announced, allocated = {}, {}
    for key, ann in announcements(cluster, alloc).items():
        for ip in alloc.ips.get(key, ()):
            allocated[str(ip)] = key
        if ann.announced:
            for ip in ann.ips:
                announced[str(ip)] = set(ann.candidate_nodes)
    return announced, allocated


def settle(rc, announced: dict, allocated: dict) -> dict:
    """Wait (up to SETTLE_S) until every announced IP is in exactly one node's responder map and no
    other allocated IP is in any; returns the last responder view (IP -> nodes)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        view: dict[str, set] = {}
        for node, pairs in rc.responders().items():
            for ip, _ in pairs:
                view.setdefault(ip, set()).add(node)
        done = all(len(view.get(ip, ())) == 1 for ip in announced) and \
            not any(view.get(ip) for ip in allocated if ip not in announced)
        if done or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


def answering(rc, ip: str) -> list[str]:
    macs = {m.lower(): n for m, n in rc.topo.mac_to_node().items()}
    replies = rc.topo.external_arping(ip, ARPING_COUNT, ARPING_TIMEOUT_S)
    return sorted({macs.get(str(mac).lower(), str(mac)) for _, mac in replies})


@diffkit.diff_settings(CASES)
@given(data=st.data())
def test_lb_ips_announced_services_and_the_arp_answering_node_agree_between_twin_and_real(real, stats, data):
    rc, shape, counter = real
    case = data.draw(cases_for(shape), label="case")
    counter[0] += 1
    cluster = _build(counter[0], shape, case)
    rc.program(cluster)
    announced, allocated = twin_side(cluster)
    view = settle(rc, announced, allocated)
    problems = []
    programmed = {ip for ip, nodes in view.items() if nodes}
    if programmed & set(allocated) != set(announced):
        problems.append(f"responder maps hold {sorted(programmed & set(allocated))}, the twin announces {sorted(announced)}")
    for ip in sorted(allocated):
        got = answering(rc, ip)
        stats.probes += 1
        if ip in announced:
            if len(got) != 1 or got[0] not in announced[ip]:
                problems.append(f"{ip} ({allocated[ip]}): answered by {got}; the twin wants exactly one of "
                                f"{sorted(announced[ip])}")
        elif got:
            problems.append(f"{ip} ({allocated[ip]}): not announced by the twin, answered by {got}")
            stats.drops += 1
    stats.cases += 1
    event(f"{len(announced)} announced of {len(allocated)} allocated IPs")
    if problems:
        holders = rc.lease_holders()
        status = {n: sorted(st.get("held") or {}) for n, st in rc.l2_status().items()}
        attached = {n: dict(getattr(dp, "host_attached", {}) or {}) for n, dp in rc.datapaths.items()}
        pytest.fail(f"twin and real disagree (seed {diffkit.SEED}; replay: HYPOTHESIS_SEED={diffkit.SEED} make test)\n"
                    f"--- case:\n{yaml.safe_dump(case, sort_keys=False)}\n" + "\n".join(problems)
                    + f"\nresponder maps (IP -> nodes): {sorted((ip, sorted(n)) for ip, n in view.items())}"
                    + f"\nlease holders (API): {holders}\nheld (agents): {status}\nhost program on: {attached}",
                    pytrace=False)
