"""Input handling of L2 announcements and LB-IPAM: an error (exit 2, file,
object, field, line) where Cilium rejects, a warning where it silently
ignores or rewrites, and the twin then behaving as Cilium does."""
from __future__ import annotations

import pytest

from twin.model.load.goregex import GoRegexError, go_compile, translate
from twin.semantics.l2 import election_params, l2_summary, responder_entries
from twin.semantics.view import ClusterView
from twinhelp import docs_text, load, load_errors, only_error, warnings_of

pytestmark = pytest.mark.pure

L2_ON = "l2announcements: {enabled: true}\nexternalIPs: {enabled: true}\n"


def pod(name, labels, node="k8s-w1"):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]}}


def lb(name, labels=None, etp=None, ext=None, stype="LoadBalancer"):
    d = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels or {}},
         "spec": {"type": stype, "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    if etp:
        d["spec"]["externalTrafficPolicy"] = etp
    if ext:
        d["spec"]["externalIPs"] = ext
    return d


def pool(name, blocks, selector=None):
    spec = {"blocks": blocks}
    if selector:
        spec["serviceSelector"] = selector
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": name},
            "spec": spec}


def l2policy(name="l2", interfaces=None, service_selector=None, node_selector=None, ext_ips=False, lb_ips=True):
    spec = {"loadBalancerIPs": lb_ips, "externalIPs": ext_ips}
    if interfaces is not None:
        spec["interfaces"] = interfaces
    if service_selector is not None:
        spec["serviceSelector"] = service_selector
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": name},
            "spec": spec}


def node(name, ifaces, labels=None):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}, "annotations": {"twin.dev/interfaces": ifaces}}}


def view(*docs, values=L2_ON, pod_node=None) -> ClusterView:
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "Node"]
    where = pod_node or (nodes[0] if nodes else "k8s-w1")
    return ClusterView(load(docs_text(pod("w", {"app": "web"}, where), pool("p", [{"cidr": "10.10.200.0/29"}]), *docs),
                            values=values))


# ------------------------------------------------------------------ Go regexps

@pytest.mark.parametrize("rx,go_says", [
    ("(?=ens)", "invalid or unsupported Perl syntax"),       # lookahead
    ("(?<!x)ens", "invalid or unsupported Perl syntax"),     # lookbehind
    ("(?>ens)", "invalid or unsupported Perl syntax"),       # atomic group
    ("ens[0-9]++", "invalid nested repetition operator"),    # possessive (Python 3.11 accepts it)
    ("ens*+", "invalid nested repetition operator"),
    ("(e)\\1", "invalid escape sequence"),                   # backreference
    ("ens\\Z", "invalid escape sequence"),                   # Python's end of string; Go has \z
    ("\\u0065ns", "invalid escape sequence"),
    ("(?x)ens", "invalid or unsupported Perl syntax"),       # verbose flag
    ("(?#note)ens", "invalid or unsupported Perl syntax"),   # comment
    ("e{1001}", "invalid repeat count"),
    ("[ens", "missing closing ]"),
    ("(ens", "missing closing )"),
])
def test_interface_regexes_go_rejects_are_errors_even_where_python_accepts(rx, go_says):
    with pytest.raises(GoRegexError, match=r"(?i)" + go_says.split()[0]):
        translate(rx)
    f = only_error(load_errors(docs_text(l2policy(interfaces=["^eth", rx]))), "spec.interfaces[1]")
    assert f.object == "CiliumL2AnnouncementPolicy l2" and go_says in f.message and f.file == "t0.yaml" and f.line


@pytest.mark.parametrize("rx,name,matches", [
    ("ens5\\z", "ens5", True),                # Go's end of text (Python's re rejects \z before 3.14)
    ("ens5\\z", "ens50", False),
    ("^(?<kind>ens)[0-9]", "ens3", True),     # Go 1.22 named group syntax
    ("\\Qens.5\\E", "ens.5", True),           # literal text
    ("\\Qens.5\\E", "ensX5", False),
    ("^[[:alpha:]]+[[:digit:]]$", "eth0", True),
    ("ens{,2}", "ens{,2}", True),             # not a repeat in Go: a literal
    ("ens{,2}", "en", False),
    ("e(?i)NS", "eNs5", True),                # flags mid-pattern hold to the end of the group
    ("e(?i)NS", "ENS5", False),
    ("\\x{65}ns", "ens5", True),
    ("^*ens", "ens", True),                   # Go lets an anchor repeat
    ("^ens\\d$", "ens\u0663", False),          # Go's \d is ASCII: an Arabic-Indic digit is not one
    ("^ens\\d$", "ens3", True),
    ("^[\\w.]+$", "br\u00e9", False),            # so is \w
])
def test_interface_regexes_go_accepts_match_as_go_matches(rx, name, matches):
    assert (go_compile(rx).search(name) is not None) is matches


def test_interfaces_are_matched_with_go_semantics_when_choosing_candidates():
    nodes = [node("n1", "ens5,ens50"), node("n2", "eth0")]
    a = view(*nodes, l2policy(interfaces=["^ens5\\z"]), lb("x"))
    ann = a.announcements["default/x"]
    assert ann.candidate_nodes == ("n1",) and ann.interfaces == {"n1": ("ens5",)}


def test_go_syntax_the_twin_cannot_match_is_an_error_that_says_so():
    f = only_error(load_errors(docs_text(l2policy(interfaces=["\\pL+"]))), "spec.interfaces[0]")
    assert "valid in Go but the twin cannot match" in f.message


# ------------------------------------------------------------------ L2 policy findings

def test_an_interface_regex_matching_no_interface_of_the_selected_nodes_is_a_warning():
    v = view(node("n1", "ens5"), node("n2", "eth0"), l2policy(interfaces=["^ens", "^wlan"]), lb("x"))
    [w] = warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy l2", "spec.interfaces[1]")
    assert "'^wlan' matches no interface" in w.message and "n1: ens5" in w.message
    text = docs_text(pod("w", {"app": "web"}, "n1"), pool("p", [{"cidr": "10.10.200.0/29"}]), node("n1", "ens5"),
                     node("n2", "eth0"), l2policy(interfaces=["^ens", "^wlan"]), lb("x"))
    assert text.splitlines()[w.line - 1].strip() == "- ^wlan"  # the line of the regex itself


def test_a_node_selector_selecting_no_node_is_a_warning_and_nothing_is_announced():
    v = view(l2policy(node_selector={"matchLabels": {"role": "edge"}}), lb("x"))
    assert len(warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy l2", "spec.nodeSelector")) == 1
    assert "no candidate node" in v.announcements["default/x"].reason


def test_a_service_selector_selecting_no_service_is_a_warning():
    v = view(l2policy(service_selector={"matchLabels": {"color": "blue"}}), lb("x"))
    [w] = warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy l2", "spec.serviceSelector")
    assert "selects no service" in w.message
    assert "l2 selects color=blue" in v.announcements["default/x"].reason


def test_a_policy_announcing_neither_kind_of_ip_is_a_warning():
    v = view(l2policy(lb_ips=False, ext_ips=False), lb("x"))
    assert any("announces nothing" in w.message for w in warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy"))
    assert not v.announcements["default/x"].announced


def test_external_ips_announced_while_the_feature_is_off_is_a_warning_and_not_announced():
    v = view(l2policy(ext_ips=True, lb_ips=False), lb("e", stype="ClusterIP", ext=["192.168.10.50"]),
             values="l2announcements: {enabled: true}\n")
    [w] = warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy l2", "spec.externalIPs")
    assert "externalIPs.enabled is false" in w.message and "default/e" in w.message
    assert not v.announcements["default/e"].announced


def test_external_traffic_policy_local_without_a_local_backend_on_a_candidate_is_a_warning():
    # the only backend runs on k8s-w1; the policy only selects the control-plane node
    cp = {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}
    v = view(l2policy(node_selector=cp), lb("x", etp="Local"))
    a = v.announcements["default/x"]
    assert not a.announced and a.reason.startswith("externalTrafficPolicy is Local") and "k8s-s" in a.reason
    [w] = warnings_of(v.all_findings(), "Service default/x", "spec.externalTrafficPolicy")
    assert "not announce" in w.message


# ------------------------------------------------------------------ LB-IPAM findings

def test_overlapping_pools_the_newer_is_conflicting_names_both_and_allocates_nothing():
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}), pool("old", [{"cidr": "10.1.0.0/30"}]),
                                   pool("new", [{"start": "10.1.0.2", "stop": "10.1.0.9"}]), lb("a"), lb("b"),
                                   lb("c"))))
    assert v.allocation.conflicting == ("new",)
    [w] = warnings_of(v.all_findings(), "CiliumLoadBalancerIPPool new")
    assert "overlaps pool old" in w.message and "allocates nothing" in w.message
    assert v.allocation.ips["default/a"] == (__import__("ipaddress").IPv4Address("10.1.0.1"),)
    # the /30 without first and last holds two addresses; the newer pool's are never used
    assert v.allocation.reasons == {"default/c": "out_of_ips"}
    pools = {p["name"]: p for p in v.show()["pools"]}
    assert pools["old"] == {"name": "old", "disabled": False, "conflicting": False, "conflicts_with": [],
                            "ips_total": 2, "ips_available": 0}
    assert pools["new"]["conflicting"] and pools["new"]["conflicts_with"] == ["old"]
    assert pools["new"]["ips_available"] == 0


def test_an_exhausted_pool_is_a_warning_naming_service_pool_and_cilium_reason():
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}), pool("tiny", [{"cidr": "10.1.0.8/32"}]), lb("a"), lb("b"))))
    [w] = warnings_of(v.all_findings(), "Service default/b")
    assert "tiny" in w.message and "out_of_ips" in w.message and "cilium.io/IPAMRequestSatisfied" in w.message


def test_a_requested_ip_taken_or_outside_every_pool_gets_cilium_reasons():
    a = lb("a")
    a["spec"]["loadBalancerIP"] = "10.1.0.1"
    b = lb("b")
    b["spec"]["loadBalancerIP"] = "10.1.0.1"
    c = lb("c")
    c["spec"]["loadBalancerIP"] = "10.9.9.9"
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}), pool("p", [{"cidr": "10.1.0.0/29"}]), a, b, c)))
    assert v.allocation.reasons == {"default/b": "already_allocated", "default/c": "no_pool"}


def test_a_pool_whose_service_selector_selects_no_service_is_a_warning():
    v = ClusterView(load(docs_text(pod("w", {"app": "web"}),
                                   pool("blue", [{"cidr": "10.1.0.0/29"}], selector={"matchLabels": {"color": "blue"}}),
                                   lb("a"))))
    [w] = warnings_of(v.all_findings(), "CiliumLoadBalancerIPPool blue", "spec.serviceSelector")
    assert "selects no LoadBalancer service" in w.message


# ------------------------------------------------------------------ values: timings and rate limit

@pytest.mark.parametrize("field,raw", [("leaseDuration", "3x"), ("leaseRenewDeadline", "-1s"),
                                       ("leaseRetryPeriod", "[1]"), ("leaseDuration", "1e400")])
def test_invalid_lease_durations_are_errors_naming_the_values_field_and_line(field, raw):
    values = f"l2announcements:\n  enabled: true\n  {field}: {raw}\n"
    f = only_error(load_errors(values=values), f"l2announcements.{field}")
    assert f.file == "values.yaml" and f.line == 3 and f.object == "values"


def test_a_bare_number_is_nanoseconds_to_cilium_a_warning_then_the_1s_rewrite():
    c = load(values="l2announcements: {enabled: true, leaseDuration: 3}\n")
    assert any("nanoseconds" in f.message for f in c.findings)
    v = ClusterView(c)
    assert election_params(c.values).lease_duration_s == 1.0
    assert any("below 1s" in f.message for f in v.all_findings())


def test_renew_deadline_not_below_lease_duration_is_rewritten_and_the_rewrite_is_used_everywhere():
    c = load(values="l2announcements: {enabled: true, leaseDuration: 4s, leaseRenewDeadline: 6s, "
                    "leaseRetryPeriod: 500ms}\nk8sClientRateLimit: {qps: 2.5, burst: 4}\n")
    v = ClusterView(c)
    [w] = warnings_of(v.all_findings(), "values", "l2announcements.leaseRenewDeadline")
    assert "Cilium uses 2s" in w.message and w.file == "values.yaml"
    p = election_params(c.values)
    assert (p.lease_duration_s, p.renew_deadline_s, p.retry_period_s, p.qps, p.burst) == (4.0, 2.0, 0.5, 2.5, 4)
    t = v.show()["l2"]["timings"]
    assert (t["leaseDuration"], t["renewDeadline"], t["retryPeriod"], t["qps"], t["burst"]) == (4.0, 2.0, 0.5, 2.5, 4)
    assert t["configured"]["renewDeadline"] == 6.0 and len(t["rewrites"]) == 1


def test_retry_period_too_close_to_renew_deadline_is_halved():
    c = load(values="l2announcements: {enabled: true, leaseDuration: 3s, leaseRenewDeadline: 1s, "
                    "leaseRetryPeriod: 900ms}\n")
    assert election_params(c.values).retry_period_s == 0.5
    assert l2_summary(c)["timings"]["rewrites"]


@pytest.mark.parametrize("rate,field", [("{qps: -1}", "qps"), ("{qps: abc}", "qps"), ("{qps: .nan}", "qps"),
                                        ("{burst: -3}", "burst"), ("{burst: 1.5}", "burst"),
                                        ("{qps: 1000000}", "qps")])
def test_invalid_client_rate_limits_are_errors(rate, field):
    f = only_error(load_errors(values=f"k8sClientRateLimit: {rate}\n"), f"k8sClientRateLimit.{field}")
    assert f.file == "values.yaml" and f.line == 1


def test_zero_qps_and_burst_mean_client_go_defaults_with_a_warning():
    c = load(values="k8sClientRateLimit: {qps: 0, burst: 0}\n")
    assert (c.values.client_qps, c.values.client_burst) == (5.0, 10)
    assert len(warnings_of(c.findings, "values")) == 2


# ------------------------------------------------------------------ helpers

def test_responder_entries_are_the_announced_ips_on_the_nodes_selected_interfaces():
    v = view(node("n1", "ens5,ens6,eth0"), node("n2", "eth0"), l2policy(interfaces=["^ens"]), lb("x"))
    a = v.announcements["default/x"]
    assert responder_entries(a, "n1") == {("10.10.200.1", "ens5"), ("10.10.200.1", "ens6")}
    assert responder_entries(a, "n2") == set()
    v = view(l2policy(service_selector={"matchLabels": {"c": "b"}}), lb("x"))
    assert responder_entries(v.announcements["default/x"], "k8s-w1") == set()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REGEX_TEXT = st.text(alphabet=list("ens05^$.*+?{},|()[]:-\\zZQEpPxbBdwAa<>=!#iUPs1z"), max_size=14)


@settings(max_examples=400, deadline=None)
@given(rx=REGEX_TEXT)
def test_any_interface_regex_is_either_a_go_regexp_error_or_a_pattern_python_compiles(rx):
    import re
    try:
        py = translate(rx)
    except GoRegexError:
        return
    try:
        re.compile(py).search("ens5")  # what the translation accepts, Python compiles...
    except re.error as exc:  # ...except what both reject, only found by Python's compiler
        assert "bad character range" in str(exc) or "redefinition of group name" in str(exc), (rx, py, exc)


def test_lease_traffic_far_above_the_client_qps_is_a_warning_naming_each_candidate_node():
    many = [lb(f"s{i}") for i in range(5)]
    seed_timings = "l2announcements: {enabled: true, leaseDuration: 3s, leaseRenewDeadline: 1s, leaseRetryPeriod: 200ms}\n"
    v = view(l2policy(), *many, values=seed_timings + "k8sClientRateLimit: {qps: 1, burst: 2}\n")
    ws = warnings_of(v.all_findings(), "values", "k8sClientRateLimit.qps")
    assert len(ws) == 3  # every seed node is a candidate for the 5 leases
    assert all("5 lease(s)" in w.message and "cilium#26586" in w.message and w.line == 2 for w in ws)
    # one lease at the seed timings and Cilium's default qps: throttled a little, never past the deadline
    v = view(l2policy(), lb("one"), values=seed_timings)
    assert warnings_of(v.all_findings(), "values", "k8sClientRateLimit.qps") == []


def test_regex_nesting_beyond_gos_limit_is_an_error_and_below_it_too_deep_for_the_twin_says_so():
    with pytest.raises(GoRegexError, match="nests too deeply"):
        go_compile("(?:" * 1001 + "a" + ")" * 1001)
    with pytest.raises(GoRegexError, match="valid in Go"):
        go_compile("(" * 600 + "a" + ")" * 600)


def test_a_service_of_another_load_balancer_class_is_not_announced_and_says_why():
    other = lb("e", stype="ClusterIP", ext=["192.168.10.50"])
    other["spec"]["loadBalancerClass"] = "example.com/metal"
    v = view(l2policy(ext_ips=True), other)
    a = v.announcements["default/e"]
    assert not a.announced and "example.com/metal" in a.reason
    mine = lb("m")
    mine["spec"]["loadBalancerClass"] = "io.cilium/l2-announcer"
    assert view(l2policy(), mine).announcements["default/m"].announced
