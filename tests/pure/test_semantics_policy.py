"""CiliumNetworkPolicy semantics: enforcement, union, deny precedence, selectors, ports, L7, explanations."""
from __future__ import annotations

import pytest

from twinhelp import ClusterView, L3L4, L7, cnp, docs_text, load, namespace, pod, seed_cluster
from twin.model.enums import Direction, DropReason, MapVerdict, Protocol, ReservedIdentity, Verdict
from twin.semantics.services import backends, target_port

pytestmark = pytest.mark.pure

TCP, UDP, SCTP, ICMP = Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP
WEB_PORTS = [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "name": "dns", "protocol": "UDP"}]
BASE = [
    namespace("other"),
    pod("web", {"app": "web"}, ports=WEB_PORTS, node="k8s-w1"),
    pod("web2", {"app": "web"}, ports=WEB_PORTS, node="k8s-w2"),
    pod("client", {"app": "client", "role": "fe"}, node="k8s-w2"),
    pod("client2", {"app": "client", "role": "be"}, node="k8s-w1"),
    pod("db", {"app": "db"}, ports=[{"containerPort": 5432, "name": "http"}], node="k8s-w2"),
    pod("client", {"app": "client", "role": "fe"}, ns="other", node="k8s-w1"),
    pod("plain", ns="other", node="k8s-s"),
]
WEB = {"matchLabels": {"app": "web"}}


def cluster_with(*policies, values: str | None = None) -> ClusterView:
    return ClusterView(load(docs_text(*BASE, *policies), values=values))


def flow(v: ClusterView, src: str, dst: str, proto: Protocol = TCP, port: int = 80, http=None):
    s = v.cluster.pod(src if "/" in src else f"default/{src}")
    d = v.cluster.pod(dst if "/" in dst else f"default/{dst}")
    return v.flows.evaluate(v.flows.query(s, d.ip, proto, port, http))


def verdict(v, src, dst, proto=TCP, port=80, http=None) -> str:
    return flow(v, src, dst, proto, port, http).verdict.value


def ident(v: ClusterView, key: str) -> int:
    return v.ids.pod_identity(v.cluster.pod(key if "/" in key else f"default/{key}"))


def allow_from(selector: dict | None = None, ports=None, name="p", **extra) -> dict:
    rule: dict = {}
    if selector is not None:
        rule["fromEndpoints"] = [selector]
    if ports is not None:
        rule["toPorts"] = [{"ports": ports}]
    return cnp(name, {"endpointSelector": WEB, "ingress": [rule], **extra})


# ------------------------------------------------------------------ enforcement

def test_without_policies_everything_is_forwarded_by_default_allow():
    v = cluster_with()
    for src in ("client", "db", "other/client"):
        fv = flow(v, src, "web")
        assert fv.verdict == Verdict.FORWARDED
        assert "default allow" in fv.explanation
    assert verdict(v, "web", "db", UDP, 9) == "FORWARDED"


def test_policy_selecting_pod_makes_ingress_default_deny():
    v = cluster_with(allow_from({"matchLabels": {"app": "client"}}))
    fv = flow(v, "db", "web")
    assert fv.verdict == Verdict.DROPPED
    assert fv.drop_direction == Direction.INGRESS
    assert fv.drop_reason == DropReason.POLICY_DENIED
    assert "default deny" in fv.explanation
    assert verdict(v, "client", "web") == "FORWARDED"


def test_ingress_policy_leaves_egress_of_the_selected_pod_and_unselected_pods_alone():
    v = cluster_with(allow_from({"matchLabels": {"app": "client"}}))
    web = ident(v, "web")
    assert v.engine.enforced(web, Direction.INGRESS)
    assert not v.engine.enforced(web, Direction.EGRESS)
    assert verdict(v, "web", "db", TCP, 5432) == "FORWARDED"  # egress of web, ingress of db
    assert verdict(v, "client", "db") == "FORWARDED"


def test_egress_policy_makes_only_egress_default_deny():
    pol = cnp("eg", {"endpointSelector": WEB, "egress": [{"toEndpoints": [{"matchLabels": {"app": "db"}}]}]})
    v = cluster_with(pol)
    assert verdict(v, "web", "db") == "FORWARDED"
    fv = flow(v, "web", "client")
    assert fv.verdict == Verdict.DROPPED and fv.drop_direction == Direction.EGRESS
    assert verdict(v, "client", "web") == "FORWARDED"  # ingress of web still default-allow


def test_egress_to_outside_the_cluster_is_world_and_needs_an_entity():
    import ipaddress
    world = ipaddress.IPv4Address("192.168.10.200")
    eg = lambda ents: cnp("eg", {"endpointSelector": WEB, "egress": [{"toEntities": ents}]})  # noqa: E731
    for ents, want in ((["cluster"], Verdict.DROPPED), (["world"], Verdict.FORWARDED), (["all"], Verdict.FORWARDED)):
        v = cluster_with(eg(ents))
        fv = v.flows.evaluate(v.flows.query(v.cluster.pod("default/web"), world, TCP, 80))
        assert fv.verdict == want, ents
        assert fv.dst_identity == int(ReservedIdentity.WORLD)


def test_deny_only_policy_also_makes_its_direction_default_deny():
    pol = cnp("d", {"endpointSelector": WEB, "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}]})
    v = cluster_with(pol)
    assert verdict(v, "db", "web") == "DROPPED"
    assert flow(v, "db", "web").drop_reason == DropReason.POLICY_DENY
    assert flow(v, "client", "web").drop_reason == DropReason.POLICY_DENIED


def test_enable_default_deny_false_keeps_the_direction_default_allow():
    pol = allow_from({"matchLabels": {"app": "client"}}, enableDefaultDeny={"ingress": False})
    v = cluster_with(pol)
    assert verdict(v, "db", "web") == "FORWARDED"
    assert verdict(v, "client", "web") == "FORWARDED"


def test_deny_rule_applies_even_when_default_deny_is_disabled():
    pol = cnp("d", {"endpointSelector": WEB, "enableDefaultDeny": {"ingress": False},
                    "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}]})
    v = cluster_with(pol)
    assert verdict(v, "client", "web") == "FORWARDED"
    assert verdict(v, "db", "web") == "DROPPED"


# ------------------------------------------------------------------ union and deny precedence

def test_allows_of_several_policies_are_a_union():
    a = allow_from({"matchLabels": {"app": "client"}}, name="a")
    b = allow_from({"matchLabels": {"app": "db"}}, [{"port": "5432", "protocol": "TCP"}], name="b")
    v = cluster_with(a, b)
    assert verdict(v, "client", "web") == "FORWARDED"
    assert verdict(v, "db", "web", TCP, 5432) == "FORWARDED"
    assert verdict(v, "db", "web", TCP, 80) == "DROPPED"
    # each alone allows only its own part
    assert verdict(cluster_with(a), "db", "web", TCP, 5432) == "DROPPED"
    assert verdict(cluster_with(b), "client", "web") == "DROPPED"


def test_l3_deny_wins_over_l4_allow():
    pol = cnp("p", {"endpointSelector": WEB,
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
                    "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"role": "fe"}}]}]})
    v = cluster_with(pol)
    fv = flow(v, "client", "web")
    assert fv.verdict == Verdict.DROPPED and fv.drop_reason == DropReason.POLICY_DENY
    assert "CNP default/p spec.ingressDeny[0]" in fv.explanation
    assert verdict(v, "client", "web", ICMP, 0) == "DROPPED"
    assert verdict(v, "client2", "web") == "FORWARDED"  # role=be is not denied


def test_l4_deny_wins_over_l3_allow_on_that_port_only():
    pol = cnp("p", {"endpointSelector": WEB,
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
                    "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})
    v = cluster_with(pol)
    fv = flow(v, "client", "web", TCP, 80)
    assert fv.verdict == Verdict.DROPPED and fv.drop_reason == DropReason.POLICY_DENY
    assert verdict(v, "client", "web", TCP, 81) == "FORWARDED"
    assert verdict(v, "client", "web", UDP, 80) == "FORWARDED"
    assert verdict(v, "client", "web", ICMP, 0) == "FORWARDED"


def test_deny_in_another_policy_wins_too():
    allow = allow_from({"matchLabels": {"app": "client"}}, name="allow")
    deny = cnp("deny", {"endpointSelector": {}, "ingressDeny": [{"toPorts": [{"ports": [{"port": "80"}]}]}]})
    v = cluster_with(allow, deny)
    assert verdict(v, "client", "web", TCP, 80) == "DROPPED"
    assert verdict(v, "client", "web", TCP, 8080) == "FORWARDED"


# ------------------------------------------------------------------ selectors and namespaces

def test_endpoint_selector_selects_pods_of_the_policy_namespace_only():
    v = cluster_with(cnp("p", {"endpointSelector": {"matchLabels": {"app": "client"}}, "ingress": [{}]}))
    assert v.engine.enforced(ident(v, "client"), Direction.INGRESS)
    assert not v.engine.enforced(ident(v, "other/client"), Direction.INGRESS)
    assert verdict(v, "web", "client") == "DROPPED"
    assert verdict(v, "web", "other/client") == "FORWARDED"


def test_from_endpoints_matches_the_policy_namespace_only():
    v = cluster_with(allow_from({"matchLabels": {"app": "client"}}))
    assert verdict(v, "client", "web") == "FORWARDED"
    assert verdict(v, "other/client", "web") == "DROPPED"


def test_namespace_label_in_from_endpoints_crosses_namespaces():
    sel = {"matchLabels": {"app": "client", "k8s:io.kubernetes.pod.namespace": "other"}}
    v = cluster_with(allow_from(sel))
    assert verdict(v, "other/client", "web") == "FORWARDED"
    assert verdict(v, "client", "web") == "DROPPED"  # namespace named: default is not other
    sel = {"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "Exists"}],
           "matchLabels": {"app": "client"}}
    v = cluster_with(allow_from(sel))
    assert verdict(v, "other/client", "web") == "FORWARDED"
    assert verdict(v, "client", "web") == "FORWARDED"
    assert verdict(v, "db", "web") == "DROPPED"


def test_namespace_label_in_endpoint_selector_does_not_escape_the_policy_namespace():
    pol = cnp("p", {"endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "other"}},
                    "ingress": [{}]})
    v = cluster_with(pol)
    assert not any(v.engine.enforced(i, Direction.INGRESS) for i in v.ids.pod_identities)


@pytest.mark.parametrize("expr,allowed", [
    ({"key": "role", "operator": "In", "values": ["fe"]}, {"client"}),
    ({"key": "role", "operator": "In", "values": ["fe", "be"]}, {"client", "client2"}),
    ({"key": "role", "operator": "NotIn", "values": ["fe"]}, {"client2", "db", "web2"}),
    ({"key": "role", "operator": "Exists"}, {"client", "client2"}),
    ({"key": "role", "operator": "DoesNotExist"}, {"db", "web2"}),
    ({"key": "any:app", "operator": "In", "values": ["db"]}, {"db"}),
])
def test_match_expressions_select_peers(expr, allowed):
    v = cluster_with(allow_from({"matchExpressions": [expr]}))
    got = {src for src in ("client", "client2", "db", "web2") if verdict(v, src, "web") == "FORWARDED"}
    assert got == allowed


def test_empty_from_endpoints_selector_matches_every_pod_of_the_namespace_but_not_reserved_peers():
    v = cluster_with(allow_from({}))
    assert verdict(v, "db", "web") == "FORWARDED"
    assert verdict(v, "other/client", "web") == "DROPPED"
    web = ident(v, "web")
    assert v.engine.lookup(web, Direction.INGRESS, int(ReservedIdentity.WORLD), TCP, 80) is None


# ------------------------------------------------------------------ rule shapes and ports

def test_l4_only_rule_applies_to_every_peer():
    v = cluster_with(allow_from(None, [{"port": "80", "protocol": "TCP"}]))
    for src in ("client", "db", "other/client", "other/plain"):
        assert verdict(v, src, "web", TCP, 80) == "FORWARDED", src
        assert verdict(v, src, "web", TCP, 81) == "DROPPED", src
    web = ident(v, "web")
    d = v.engine.decide(web, Direction.INGRESS, int(ReservedIdentity.WORLD), TCP, 80)
    assert d.verdict == Verdict.FORWARDED


def test_empty_rule_allows_nothing_but_still_enforces():
    v = cluster_with(cnp("p", {"endpointSelector": WEB, "ingress": [{}]}))
    for src in ("client", "db", "other/client"):
        assert verdict(v, src, "web") == "DROPPED"
        assert verdict(v, src, "web", ICMP, 0) == "DROPPED"


@pytest.mark.parametrize("port,want", [(7999, "DROPPED"), (8000, "FORWARDED"), (8005, "FORWARDED"),
                                       (8010, "FORWARDED"), (8011, "DROPPED")])
def test_port_range_with_end_port_is_inclusive(port, want):
    v = cluster_with(allow_from({}, [{"port": "8000", "endPort": 8010, "protocol": "TCP"}]))
    assert verdict(v, "client", "web", TCP, port) == want
    assert verdict(v, "client", "web", UDP, port) == "DROPPED"


def test_port_zero_means_every_port_of_the_protocol():
    v = cluster_with(allow_from({}, [{"port": "0", "protocol": "UDP"}]))
    assert verdict(v, "client", "web", UDP, 1) == "FORWARDED"
    assert verdict(v, "client", "web", UDP, 65535) == "FORWARDED"
    assert verdict(v, "client", "web", TCP, 80) == "DROPPED"


@pytest.mark.parametrize("proto_field", [None, "ANY"])
def test_protocol_any_expands_to_tcp_udp_sctp_but_not_icmp(proto_field):
    port = {"port": "53"} if proto_field is None else {"port": "53", "protocol": proto_field}
    v = cluster_with(allow_from({}, [port]))
    for proto in (TCP, UDP, SCTP):
        assert verdict(v, "client", "web", proto, 53) == "FORWARDED", proto
        assert verdict(v, "client", "web", proto, 54) == "DROPPED", proto
    assert verdict(v, "client", "web", ICMP, 0) == "DROPPED"


def test_l3_only_allow_allows_icmp_and_every_port():
    v = cluster_with(allow_from({"matchLabels": {"app": "client"}}))
    assert verdict(v, "client", "web", ICMP, 0) == "FORWARDED"
    assert verdict(v, "client", "web", SCTP, 9999) == "FORWARDED"
    e = v.engine.lookup(ident(v, "web"), Direction.INGRESS, ident(v, "client"), ICMP, 0)
    assert e.protocol == Protocol.ANY and e.verdict == MapVerdict.ALLOW


def test_named_port_resolves_against_the_selected_pods_container_ports():
    v = cluster_with(allow_from({}, [{"port": "http", "protocol": "TCP"}]))
    assert verdict(v, "client", "web", TCP, 80) == "FORWARDED"
    assert verdict(v, "client", "web", TCP, 5432) == "DROPPED"
    v = cluster_with(allow_from({}, [{"port": "dns"}]))  # ANY: the container port says UDP
    assert verdict(v, "client", "web", UDP, 53) == "FORWARDED"
    assert verdict(v, "client", "web", TCP, 53) == "DROPPED"


def test_egress_named_port_resolves_against_the_peer():
    pol = cnp("eg", {"endpointSelector": {"matchLabels": {"app": "client"}},
                     "egress": [{"toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}]})
    v = cluster_with(pol)
    assert verdict(v, "client", "web", TCP, 80) == "FORWARDED"
    assert verdict(v, "client", "db", TCP, 5432) == "FORWARDED"
    assert verdict(v, "client", "db", TCP, 80) == "DROPPED"


def test_service_named_target_port_resolves_per_pod():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": "http"}]}}
    c = load(docs_text(*BASE, svc))
    s = c.service("default/s")
    assert sorted(b.address for b in backends(c, s, s.ports[0])) == sorted(
        f"{c.pod(k).ip}:80" for k in ("default/web", "default/web2"))
    assert target_port(c.pod("default/client"), s.ports[0]) is None


# ------------------------------------------------------------------ L7

def l7_policy(extra_rules=()) -> dict:
    return cnp("l7", {"endpointSelector": WEB, "ingress": [
        {"fromEndpoints": [{"matchLabels": {"app": "client"}}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                      "rules": {"http": [{"method": "GET", "path": "/v1/.*"}, {"method": "POST", "path": "/land"}]}}]},
        *extra_rules]})


@pytest.mark.parametrize("method,path,ok", [
    ("GET", "/v1/", True), ("GET", "/v1/x/y", True), ("POST", "/land", True),
    ("GET", "/v2/x", False), ("POST", "/v1/x", False), ("PUT", "/land", False),
    ("GETX", "/v1/", False), ("POST", "/land/more", False),  # whole-value regex match
])
def test_l7_rules_forward_allowed_requests_and_answer_others_with_403(method, path, ok):
    v = cluster_with(l7_policy())
    fv = flow(v, "client", "web", TCP, 80, (method, path))
    assert fv.decision.layer == "L7"
    if ok:
        assert fv.verdict == Verdict.FORWARDED and fv.decision.http_status is None
    else:
        assert fv.verdict == Verdict.DROPPED
        assert fv.decision.http_status == 403
        assert fv.drop_reason == DropReason.L7_DENIED
        assert "403" in fv.explanation


def test_l7_port_without_http_request_is_redirected_not_dropped_and_other_peers_are_dropped():
    v = cluster_with(l7_policy())
    fv = flow(v, "client", "web", TCP, 80)
    assert fv.verdict == Verdict.FORWARDED and fv.decision.layer == "L7"
    assert flow(v, "db", "web", TCP, 80, ("GET", "/v1/")).drop_reason == DropReason.POLICY_DENIED


def test_l4_only_allow_for_same_peer_and_port_wildcards_l7():
    v = cluster_with(l7_policy([{"fromEndpoints": [{"matchLabels": {"role": "fe"}}],
                                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]))
    fv = flow(v, "client", "web", TCP, 80, ("DELETE", "/anything"))
    assert fv.verdict == Verdict.FORWARDED and fv.decision.layer == "L3/L4"
    # client2 (role=be) is not covered by the L4-only rule: L7 still applies
    fv = flow(v, "client2", "web", TCP, 80, ("DELETE", "/anything"))
    assert fv.verdict == Verdict.DROPPED and fv.decision.http_status == 403


def test_l3_only_allow_for_same_peer_wildcards_l7():
    v = cluster_with(l7_policy([{"fromEndpoints": [{"matchLabels": {"role": "fe"}}]}]))
    assert verdict(v, "client", "web", TCP, 80, ("DELETE", "/x")) == "FORWARDED"
    assert verdict(v, "client2", "web", TCP, 80, ("DELETE", "/x")) == "DROPPED"


def test_l7_rules_of_two_policies_on_the_same_port_are_a_union():
    other = cnp("more", {"endpointSelector": WEB, "ingress": [
        {"fromEndpoints": [{"matchLabels": {"app": "client"}}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "DELETE"}]}}]}]})
    v = cluster_with(l7_policy(), other)
    assert verdict(v, "client", "web", TCP, 80, ("DELETE", "/whatever")) == "FORWARDED"
    assert verdict(v, "client", "web", TCP, 80, ("GET", "/v1/a")) == "FORWARDED"
    assert verdict(v, "client", "web", TCP, 80, ("PATCH", "/v1/a")) == "DROPPED"


def test_seed_l7_policy_lets_empire_land_and_forbids_the_exhaust_port():
    v = ClusterView(seed_cluster(L7))
    ds = next(p for p in v.cluster.pods if p.owner == "Deployment/deathstar")
    tie = v.cluster.pod("default/tiefighter")
    ok = v.flows.evaluate(v.flows.query(tie, ds.ip, TCP, 80, ("POST", "/v1/request-landing")))
    assert ok.verdict == Verdict.FORWARDED and ok.decision.layer == "L7"
    bad = v.flows.evaluate(v.flows.query(tie, ds.ip, TCP, 80, ("PUT", "/v1/exhaust-port")))
    assert bad.verdict == Verdict.DROPPED and bad.decision.http_status == 403
    xw = v.cluster.pod("default/xwing")
    assert v.flows.evaluate(v.flows.query(xw, ds.ip, TCP, 80, ("POST", "/v1/request-landing"))).drop_reason \
        == DropReason.POLICY_DENIED


# ------------------------------------------------------------------ host and explanations

def test_host_identity_may_reach_selected_pods_with_allow_localhost():
    v = cluster_with(cnp("p", {"endpointSelector": WEB, "ingress": [{}]}))
    d = v.engine.decide(ident(v, "web"), Direction.INGRESS, int(ReservedIdentity.HOST), TCP, 80)
    assert d.verdict == Verdict.FORWARDED
    assert "allow-localhost" in d.explanation
    d = v.engine.decide(ident(v, "web"), Direction.INGRESS, int(ReservedIdentity.REMOTE_NODE), TCP, 80)
    assert d.verdict == Verdict.DROPPED


def test_host_identity_is_subject_to_policy_when_allow_localhost_is_policy():
    v = cluster_with(cnp("p", {"endpointSelector": WEB, "ingress": [{}]}), values="allowLocalhost: policy\n")
    d = v.engine.decide(ident(v, "web"), Direction.INGRESS, int(ReservedIdentity.HOST), TCP, 80)
    assert d.verdict == Verdict.DROPPED
    v = cluster_with(cnp("p", {"endpointSelector": WEB, "ingress": [{"fromEntities": ["host"]}]}),
                     values="allowLocalhost: policy\n")
    assert v.engine.decide(ident(v, "web"), Direction.INGRESS, int(ReservedIdentity.HOST), TCP, 80).forwarded


def test_host_is_in_the_node_ipcache_as_host_and_other_nodes_as_remote_node():
    v = cluster_with()
    n1, n2 = v.cluster.node("k8s-w1"), v.cluster.node("k8s-w2")
    assert v.ids.identity_of_ip(n1.ip, "k8s-w1") == int(ReservedIdentity.HOST)
    assert v.ids.identity_of_ip(n2.ip, "k8s-w1") == int(ReservedIdentity.REMOTE_NODE)
    assert v.ids.identity_of_ip(v.cluster.pod("default/web").ip, "k8s-w2") == ident(v, "web")


def test_explanation_names_the_policy_and_rule_of_the_seed():
    v = ClusterView(seed_cluster(L3L4))
    ds = next(p for p in v.cluster.pods if p.owner == "Deployment/deathstar")
    ok = v.flows.evaluate(v.flows.query(v.cluster.pod("default/tiefighter"), ds.ip, TCP, 80))
    assert ok.verdict == Verdict.FORWARDED
    assert "CNP default/rule1 spec.ingress[0]" in ok.explanation
    bad = v.flows.evaluate(v.flows.query(v.cluster.pod("default/xwing"), ds.ip, TCP, 80))
    assert bad.verdict == Verdict.DROPPED and bad.drop_direction == Direction.INGRESS
    assert "default deny" in bad.explanation


def test_explanations_distinguish_spec_from_specs_entries():
    pol = cnp("both", {"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]},
              specs=[{"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}]}])
    v = cluster_with(pol)
    assert "CNP default/both spec.ingress[0]" in flow(v, "client", "web").explanation
    assert "CNP default/both specs[0].ingress[0]" in flow(v, "db", "web").explanation
    single = cnp("single", specs=[{"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}]}])
    assert "CNP default/single specs[0].ingress[0]" in flow(cluster_with(single), "db", "web").explanation


def test_pods_with_equal_labels_share_an_identity_and_pod_template_hash_is_ignored():
    v = cluster_with()
    assert ident(v, "web") == ident(v, "web2")
    assert ident(v, "client") != ident(v, "other/client")  # namespace is part of the identity
    assert ident(v, "client") != ident(v, "client2")
    c = seed_cluster()
    v2 = ClusterView(c)
    ds = [v2.ids.pod_identity(p) for p in c.pods if p.owner]
    assert len(set(ds)) == 1
    assert all(i >= 256 for i in v2.ids.pod_identities)


def test_identity_numbers_are_a_pure_function_of_the_cluster():
    a = [ClusterView(seed_cluster()).ids.of_pod[k] for k in sorted(ClusterView(seed_cluster()).ids.of_pod)]
    b = [ClusterView(seed_cluster()).ids.of_pod[k] for k in sorted(ClusterView(seed_cluster()).ids.of_pod)]
    assert a == b


def test_resolved_table_lists_only_enforced_directions_and_uses_rule_texts():
    v = cluster_with(allow_from({"matchLabels": {"app": "client"}}, [{"port": "80", "protocol": "TCP"}]))
    table = v.engine.policy_table()
    web = ident(v, "web")
    ing = table.lookup(web, Direction.INGRESS)
    assert ing.enforced and not table.lookup(web, Direction.EGRESS).enforced
    entries = ing.peers[ident(v, "client")]
    assert [(e.protocol, e.port_lo, e.port_hi, e.verdict) for e in entries] == [(TCP, 80, 80, MapVerdict.ALLOW)]
    assert table.rule_texts[entries[0].rule_ref] == "CNP default/p spec.ingress[0]"
    assert ident(v, "db") not in ing.peers
    assert table.rule_texts[0] == "default deny"
