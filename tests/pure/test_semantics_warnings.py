"""Inputs Cilium accepts but ignores or rewrites: the twin reproduces them and warns."""
from __future__ import annotations

import pytest

from twinhelp import ClusterView, cnp, docs_text, load, pod, text, view, warnings_of
from twin.model.objects import L2Settings
from twin.semantics.l2 import effective_lease_timings

pytestmark = pytest.mark.pure

BW = "kubernetes.io/egress-bandwidth"


def test_unparseable_bandwidth_annotation_means_no_limit_and_a_warning():
    v = view(docs_text(pod("p", annotations={BW: "10 Mbit"})), values="bandwidthManager: {enabled: true}\n")
    p = v.cluster.pod("default/p")
    bps, note = v.egress_bandwidth(p)
    assert bps is None
    assert "no limit" in note
    w = warnings_of(v.all_findings(), "Pod default/p", f"metadata.annotations[{BW}]")
    assert len(w) == 1 and "10 Mbit" in w[0].message
    assert v.show()["pods"][0]["egress_bandwidth_bps"] is None


def test_valid_bandwidth_annotation_gives_a_limit_and_no_warning():
    v = view(docs_text(pod("p", annotations={BW: "10Mi"})), values="bandwidthManager: {enabled: true}\n")
    assert v.egress_bandwidth(v.cluster.pod("default/p")) == (10_485_760, "")
    assert v.all_findings() == ()


def test_bandwidth_annotation_without_bandwidth_manager_has_no_effect_and_warns():
    v = view(docs_text(pod("p", annotations={BW: "10M"})))
    assert v.egress_bandwidth(v.cluster.pod("default/p"))[0] is None
    assert len(warnings_of(v.all_findings(), "Pod default/p")) == 1


def test_out_of_range_bandwidth_is_applied_unchecked_but_warned_about():
    # 10 bit/s is 1 byte/s in Cilium's map (10 / 8, truncated): enforced as 8 bit/s
    v = view(docs_text(pod("p", annotations={BW: "10"})), values="bandwidthManager: {enabled: true}\n")
    assert v.egress_bandwidth(v.cluster.pod("default/p"))[0] == 8
    w = warnings_of(v.all_findings(), "Pod default/p")
    assert len(w) == 1 and "1 kbit/s" in w[0].message


def test_ingress_bandwidth_annotation_is_ignored_with_a_warning():
    v = view(docs_text(pod("p", annotations={"kubernetes.io/ingress-bandwidth": "10M"})),
             values="bandwidthManager: {enabled: true}\n")
    w = warnings_of(v.all_findings(), "Pod default/p", "metadata.annotations[kubernetes.io/ingress-bandwidth]")
    assert len(w) == 1 and "egress only" in w[0].message


@pytest.mark.parametrize("ld,rd,rp,want", [
    (15, 5, 2, (15, 5, 2)),  # defaults are valid
    (3, 1, 0.2, (3, 1, 0.2)),  # the seed's values are valid
    (0.5, 0.2, 0.05, (1, 0.2, 0.05)),  # LD < 1s -> 1s
    (4, 4, 1, (4, 2, 1)),  # LD <= RD -> RD = LD/2
    (4, 6, 1, (4, 2, 1)),
    (10, 5, 5, (10, 5, 2.5)),  # RD <= 1.2 RP -> RP = RD/2
    (10, 6, 5, (10, 6, 3)),  # 6 <= 1.2*5: boundary counts as invalid
    (0.1, 3, 2, (1, 0.5, 0.25)),  # every rewrite in sequence
])
def test_invalid_lease_timings_are_rewritten_like_cilium(ld, rd, rp, want):
    eff, notes = effective_lease_timings(L2Settings(True, ld, rd, rp))
    got = (eff.lease_duration_s, eff.renew_deadline_s, eff.retry_period_s)
    assert got == pytest.approx(want)
    assert bool(notes) == (got != pytest.approx((ld, rd, rp)))
    # the result always satisfies client-go's validation
    assert eff.lease_duration_s > eff.renew_deadline_s > 1.2 * eff.retry_period_s


def test_invalid_lease_timings_in_values_produce_one_warning_per_rewrite():
    values = "l2announcements:\n  enabled: true\n  leaseDuration: 500ms\n  leaseRenewDeadline: 2s\n  leaseRetryPeriod: 1s\n"
    v = view("", values=values)
    w = [f for f in warnings_of(v.all_findings(), "values") if f.field.startswith("l2announcements")]
    assert len(w) == 3
    assert any("below 1s" in f.message for f in w)
    # each warning names the values file and the line of the timing it is about
    by_field = {f.field: f for f in w}
    assert by_field["l2announcements.leaseDuration"].line == 3
    assert by_field["l2announcements.leaseRenewDeadline"].line == 4
    assert by_field["l2announcements.leaseRetryPeriod"].line == 5  # the field Cilium rewrites
    assert all(f.file == "values.yaml" and "<input>" not in f.render() for f in w)


def test_lease_timings_are_not_reported_when_l2_is_disabled():
    values = "l2announcements:\n  enabled: false\n  leaseDuration: 500ms\n"
    assert [f for f in warnings_of(view("", values=values).all_findings(), "values")
            if f.field.startswith("l2announcements")] == []


POOLS = text("""
    apiVersion: cilium.io/v2alpha1
    kind: CiliumLoadBalancerIPPool
    metadata:
      name: older
    spec:
      blocks:
      - cidr: 10.10.200.0/29
    ---
    apiVersion: cilium.io/v2alpha1
    kind: CiliumLoadBalancerIPPool
    metadata:
      name: newer
    spec:
      blocks:
      - start: 10.10.200.6
        stop: 10.10.200.20
    """)


def lb_service(name: str, labels: dict | None = None, lb_ip: str | None = None) -> dict:
    d = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    if labels:
        d["metadata"]["labels"] = labels
    if lb_ip:
        d["spec"]["loadBalancerIP"] = lb_ip
    return d


def test_overlapping_newer_pool_is_conflicting_allocates_nothing_and_warns():
    svcs = [lb_service(f"s{i}") for i in range(8)]
    v = view(POOLS, docs_text(pod("w", {"app": "web"}), *svcs))
    assert v.allocation.conflicting == ("newer",)
    w = warnings_of(v.all_findings(), "CiliumLoadBalancerIPPool newer")
    assert len(w) == 1 and "older" in w[0].message
    all_ips = [str(ip) for ips in v.allocation.ips.values() for ip in ips]
    # only the older pool's 6 usable addresses are handed out
    assert sorted(all_ips) == [f"10.10.200.{i}" for i in range(1, 7)]
    assert v.allocation.reasons == {"default/s6": "out_of_ips", "default/s7": "out_of_ips"}


def test_pool_order_decides_which_one_conflicts():
    older, newer = POOLS.split("---\n")
    v = view(newer + "---\n" + older, docs_text(lb_service("s0")))
    assert v.allocation.conflicting == ("older",)
    assert [str(i) for i in v.allocation.ips["default/s0"]] == ["10.10.200.6"]


def test_non_overlapping_pools_do_not_conflict():
    other = POOLS.replace("10.10.200.6", "10.10.200.8")
    assert view(other, docs_text(lb_service("s0"))).allocation.conflicting == ()


def test_service_matching_no_pool_gets_no_ip_with_reason_no_pool():
    pool = POOLS.split("---\n")[0].replace("blocks:", "serviceSelector:\n    matchLabels: {color: blue}\n  blocks:")
    v = view(pool, docs_text(pod("w", {"app": "web"}), lb_service("plain"), lb_service("blue", {"color": "blue"})))
    assert "default/plain" not in v.allocation.ips
    assert v.allocation.reasons["default/plain"] == "no_pool"
    w = warnings_of(v.all_findings(), "Service default/plain")
    assert len(w) == 1 and "no_pool" in w[0].message
    assert [str(i) for i in v.allocation.ips["default/blue"]] == ["10.10.200.1"]
    assert v.show()["services"][0]["lb_ips"] == []


def test_policy_selecting_no_pod_warns():
    policy = cnp("lonely", {"endpointSelector": {"matchLabels": {"app": "ghost"}}, "ingress": [{}]})
    v = view(docs_text(pod("p", {"app": "web"}), policy))
    w = warnings_of(v.all_findings(), "CiliumNetworkPolicy default/lonely", "spec.endpointSelector")
    assert len(w) == 1 and "selects no pod" in w[0].message


def test_policy_selecting_pods_of_another_namespace_only_warns():
    policy = cnp("elsewhere", {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    from twinhelp import namespace
    v = view(docs_text(namespace("other"), pod("p", {"app": "web"}, ns="other"), policy))
    assert len(warnings_of(v.all_findings(), "CiliumNetworkPolicy default/elsewhere", "spec.endpointSelector")) == 1


def test_peer_selector_matching_no_pod_warns_with_its_field_path():
    policy = cnp("r", {"endpointSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "ghost"}}]}]})
    v = view(docs_text(pod("p", {"app": "web"}), policy))
    w = warnings_of(v.all_findings(), "CiliumNetworkPolicy default/r")
    assert [f.field for f in w] == ["spec.ingress[0].fromEndpoints[1]"]


def test_peer_selector_warning_in_a_specs_list_names_the_specs_entry():
    policy = cnp("r", specs=[
        {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
        {"endpointSelector": {"matchLabels": {"app": "web"}},
         "egress": [{"toEndpoints": [{"matchLabels": {"app": "ghost"}}]}]}])
    v = view(docs_text(pod("p", {"app": "web"}), policy))
    w = warnings_of(v.all_findings(), "CiliumNetworkPolicy default/r")
    assert [f.field for f in w] == ["specs[1].egress[0].toEndpoints[0]"]


def test_service_selecting_no_pod_warns():
    v = view(docs_text(lb_service("s0")))
    w = warnings_of(v.all_findings(), "Service default/s0", "spec.selector")
    assert len(w) == 1


def test_l2_policy_whose_node_selector_matches_no_node_warns():
    l2 = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": "l2"},
          "spec": {"nodeSelector": {"matchLabels": {"zone": "mars"}}, "loadBalancerIPs": True}}
    v = view(docs_text(l2), values="l2announcements: {enabled: true}\n")
    assert len(warnings_of(v.all_findings(), "CiliumL2AnnouncementPolicy l2", "spec.nodeSelector")) == 1


def test_l2_policies_with_l2_disabled_warn_that_nothing_is_announced():
    l2 = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": "l2"},
          "spec": {"loadBalancerIPs": True}}
    v = view(docs_text(l2))
    assert len(warnings_of(v.all_findings(), "values", "l2announcements.enabled")) == 1


def test_l2_policy_announcing_neither_ip_kind_warns_at_load():
    l2 = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy", "metadata": {"name": "l2"},
          "spec": {"interfaces": ["^ens"]}}
    c = load(docs_text(l2))
    assert len(warnings_of(c.findings, "CiliumL2AnnouncementPolicy l2", "spec")) == 1


def test_reapplied_policy_replaces_the_earlier_one_with_a_warning():
    a = cnp("r", {"endpointSelector": {}, "ingress": [{}]})
    b = cnp("r", {"endpointSelector": {}, "egress": [{}]})
    c = load(docs_text(pod("p"), a, b))
    assert len(c.policies) == 1 and c.policies[0].specs[0].egress and not c.policies[0].specs[0].ingress
    assert len(warnings_of(c.findings, "CiliumNetworkPolicy default/r", "metadata.name")) == 1
