"""Hypothesis strategies shared by the test tiers: small random clusters and CiliumNetworkPolicies.

Everything is generated as plain manifest dicts (what a user would write in
YAML), so tests load them through the real loader and can also reason about
them directly.  The alphabets are deliberately tiny so that selectors match,
identities are shared and rules overlap often.

* :func:`clusters` - ``{"namespaces", "pods", "policies"}``: 2-8 pods with
  labels from ``LABEL_KEYS`` x ``LABEL_VALUES`` in 1-2 namespaces on the 3
  seed nodes, and 1-4 CiliumNetworkPolicies with random selectors, L3/L4
  rules, ports, endPort, protocol and deny sections (L7 rules on some TCP
  allows; ``l7=False`` leaves L7 out, for datapaths without a proxy).
* :func:`peer_rules` - one ingress/egress rule (allow or deny).
* :func:`to_yaml` - a cluster as one multi-document YAML text.
"""
from __future__ import annotations

import yaml
from hypothesis import strategies as st

LABEL_KEYS = ("app", "role")
LABEL_VALUES = ("a", "b", "c")
NAMESPACES = ("default", "other")
NODES = ("k8s-s", "k8s-w1", "k8s-w2")
NS_LABEL = "io.kubernetes.pod.namespace"
ENTITIES = ("host", "world", "remote-node", "cluster", "all")
#: numeric ports policies use; named ports "http" (TCP 80 or 8080) and "dns" (UDP 53) come from containers
POLICY_PORTS = (0, 53, 79, 80, 81, 443, 5353, 8080, 65535)
HTTP_METHODS = ("GET", "POST", "GET|POST", ".*", "")
HTTP_PATHS = ("/", "/a.*", "/b", "")

labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)


@st.composite
def pods(draw, namespaces=NAMESPACES, min_size=2, max_size=8) -> list[dict]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        lab = draw(labels)
        ns = draw(st.sampled_from(namespaces))
        ports = []
        http = draw(st.sampled_from((None, 80, 8080)))
        if http:
            ports.append({"containerPort": http, "name": "http"})
        if draw(st.booleans()):
            ports.append({"containerPort": 53, "name": "dns", "protocol": "UDP"})
        container = {"name": "c", "image": "twin/echo"}
        if ports:
            container["ports"] = ports
        meta = {"name": f"p{i}", "namespace": ns}
        if lab:
            meta["labels"] = lab
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                    "spec": {"nodeName": draw(st.sampled_from(NODES)), "containers": [container]}})
    return out


def _key(draw, prefix_ok: bool = True) -> str:
    k = draw(st.sampled_from(LABEL_KEYS))
    return draw(st.sampled_from(("", "k8s:", "any:"))) + k if prefix_ok else k


@st.composite
def match_expressions(draw, max_size: int = 2) -> list[dict]:
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        e = {"key": _key(draw), "operator": op}
        if op in ("In", "NotIn"):
            e["values"] = draw(st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2, unique=True))
        out.append(e)
    return out


@st.composite
def selectors(draw, namespaces=NAMESPACES, namespace_label: bool = True) -> dict:
    """A label selector; sometimes naming the namespace label (crossing namespaces for peers)."""
    sel: dict = {}
    ml = {}
    for k, v in draw(labels).items():
        ml[draw(st.sampled_from(("", "k8s:"))) + k] = v
    if namespace_label and draw(st.integers(0, 3)) == 0:
        choice = draw(st.sampled_from(("label", "in", "exists")))
        if choice == "label":
            ml["k8s:" + NS_LABEL] = draw(st.sampled_from(namespaces))
        elif choice == "in":
            sel.setdefault("matchExpressions", []).append(
                {"key": NS_LABEL, "operator": "In",
                 "values": draw(st.lists(st.sampled_from(namespaces), min_size=1, max_size=2, unique=True))})
        else:
            sel.setdefault("matchExpressions", []).append({"key": "k8s:" + NS_LABEL, "operator": "Exists"})
    if ml:
        sel["matchLabels"] = ml
    exprs = draw(match_expressions(max_size=1))
    if exprs:
        sel.setdefault("matchExpressions", []).extend(exprs)
    return sel


@st.composite
def port_entries(draw, l7: bool = False) -> dict:
    """One `toPorts[].ports[]` entry.  With l7, only numeric non-zero TCP/ANY ports."""
    if not l7 and draw(st.integers(0, 4)) == 0:
        e: dict = {"port": draw(st.sampled_from(("http", "dns")))}
        proto = draw(st.sampled_from((None, "TCP", "UDP", "ANY")))
        if proto:
            e["protocol"] = proto
        return e
    ports = [p for p in POLICY_PORTS if not (l7 and p == 0)]
    port = draw(st.one_of(st.sampled_from(ports), st.integers(1, 65535)))
    e = {"port": draw(st.sampled_from((port, str(port))))}
    proto = draw(st.sampled_from((None, "TCP", "ANY") if l7 else (None, "TCP", "UDP", "SCTP", "ANY")))
    if proto:
        e["protocol"] = proto
    if port and draw(st.integers(0, 2)) == 0:
        e["endPort"] = min(65535, port + draw(st.sampled_from((0, 1, 2, 100, 1000))))
    return e


@st.composite
def port_rules(draw, deny: bool, l7_ok: bool = True) -> dict:
    l7 = l7_ok and not deny and draw(st.integers(0, 3)) == 0
    pr: dict = {"ports": draw(st.lists(port_entries(l7=l7), min_size=1, max_size=2))}
    if l7:
        http = []
        for _ in range(draw(st.integers(1, 2))):
            h = {}
            m, p = draw(st.sampled_from(HTTP_METHODS)), draw(st.sampled_from(HTTP_PATHS))
            if m:
                h["method"] = m
            if p:
                h["path"] = p
            http.append(h)
        pr["rules"] = {"http": http}
    return pr


@st.composite
def peer_rules(draw, direction: str = "ingress", deny: bool = False, namespaces=NAMESPACES,
               l7: bool = True) -> dict:
    """One entry of ingress/egress/ingressDeny/egressDeny."""
    peer_key, ent_key = ("fromEndpoints", "fromEntities") if direction == "ingress" else ("toEndpoints", "toEntities")
    shape = draw(st.sampled_from(("endpoints", "endpoints", "endpoints", "entities", "both", "l4only", "empty")))
    rule: dict = {}
    if shape in ("endpoints", "both"):
        rule[peer_key] = draw(st.lists(selectors(namespaces), min_size=1, max_size=2))
    if shape in ("entities", "both"):
        rule[ent_key] = draw(st.lists(st.sampled_from(ENTITIES), min_size=1, max_size=2, unique=True))
    if shape == "l4only" or (shape != "empty" and draw(st.booleans())):
        rule["toPorts"] = draw(st.lists(port_rules(deny, l7), min_size=1, max_size=2))
    return rule


SECTIONS = (("ingress", "ingress", False), ("ingressDeny", "ingress", True),
            ("egress", "egress", False), ("egressDeny", "egress", True))


@st.composite
def policy_specs(draw, namespaces=NAMESPACES, l7: bool = True) -> dict:
    spec: dict = {"endpointSelector": draw(selectors(namespaces, namespace_label=draw(st.integers(0, 5)) == 0))}
    present = draw(st.lists(st.sampled_from([s[0] for s in SECTIONS]), min_size=1, max_size=3, unique=True))
    for name, direction, deny in SECTIONS:
        if name in present:
            spec[name] = draw(st.lists(peer_rules(direction, deny, namespaces, l7), min_size=1, max_size=2))
    return spec


@st.composite
def policies(draw, namespaces=NAMESPACES, min_size=1, max_size=4, l7: bool = True) -> list[dict]:
    out = []
    for i in range(draw(st.integers(min_size, max_size))):
        d = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
             "metadata": {"name": f"pol{i}", "namespace": draw(st.sampled_from(namespaces))}}
        if draw(st.integers(0, 4)) == 0:
            d["specs"] = draw(st.lists(policy_specs(namespaces, l7), min_size=1, max_size=2))
        else:
            d["spec"] = draw(policy_specs(namespaces, l7))
        out.append(d)
    return out


@st.composite
def clusters(draw, min_pods=2, max_pods=8, min_policies=1, max_policies=4) -> dict:
    namespaces = NAMESPACES[:draw(st.integers(1, 2))]
    return {"namespaces": list(namespaces),
            "pods": draw(pods(namespaces, min_pods, max_pods)),
            "policies": draw(policies(namespaces, min_policies, max_policies))}


def to_yaml(cluster: dict) -> str:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in cluster["namespaces"]]
    return yaml.safe_dump_all(docs + cluster["pods"] + cluster["policies"], sort_keys=False)
