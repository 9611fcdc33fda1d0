"""The `twin` CLI contract: verdict/show/truth-table output shapes and values."""
from __future__ import annotations

import csv
import io
import json

import pytest

from twinhelp import L3L4, L7, SEED_DIR, SEED_VALUES, run_twin

pytestmark = pytest.mark.pure

SEED = [str(SEED_DIR)]
VALUES = ["--values", str(SEED_VALUES)]


def twin_json(*args):
    r = run_twin(*args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_verdict_json_for_a_denied_l7_request_has_the_documented_fields():
    out = twin_json("verdict", *SEED, str(L7), *VALUES, "--from", "default/tiefighter", "--to", "svc:default/deathstar",
                    "--port", "80", "--method", "PUT", "--path", "/v1/exhaust-port", "--json")
    assert {"verdict", "layer", "drop_reason", "http_status", "explanation"} <= set(out)
    assert out["verdict"] == "DROPPED"
    assert out["layer"] == "L7"
    assert out["http_status"] == 403
    assert out["drop_reason"] == "L7 policy denied (HTTP 403)"
    assert len(out["backends"]) == 2
    for b in out["backends"]:
        assert b["verdict"] == "DROPPED" and b["port"] == 80
        assert "CNP default/rule1 spec.ingress[0]" in b["explanation"]


def test_verdict_json_for_a_pod_destination_is_one_flat_record():
    out = twin_json("verdict", *SEED, str(L3L4), *VALUES, "--from", "default/xwing", "--to", "default/tiefighter",
                    "--port", "80", "--json")
    assert out["verdict"] == "FORWARDED"
    assert out["layer"] == "L3/L4"
    assert out["drop_reason"] is None and out["http_status"] is None
    assert out["destination"] == "default/tiefighter"
    assert "default allow" in out["explanation"]


def test_verdict_json_for_an_l3_l4_drop_names_the_policy_reason():
    out = twin_json("verdict", *SEED, str(L3L4), *VALUES, "--from", "xwing", "--to", "svc:default/deathstar",
                    "--port", "80", "--json")
    assert out["verdict"] == "DROPPED"
    assert out["layer"] == "L3/L4"
    assert out["drop_reason"] == "Policy denied"
    assert out["http_status"] is None


def test_verdict_to_a_service_without_backends_is_dropped():
    out = twin_json("verdict", *SEED, *VALUES, "--from", "netpod", "--to", "svc:default/svc1", "--port", "80", "--json")
    assert out["verdict"] == "FORWARDED"  # webpods back svc1
    r = run_twin("verdict", *SEED, *VALUES, "--from", "netpod", "--to", "svc:default/nope", "--port", "80", "--json")
    assert r.returncode == 2 and "no service" in r.stderr


def test_truth_table_json_covers_every_ordered_pod_pair_per_port():
    rows = twin_json("truth-table", *SEED, str(L3L4), *VALUES, "--port", "80", "--port", "81", "--json")
    pods = {r["src"] for r in rows} | {r["dst"] for r in rows}
    assert len(pods) == 9
    assert len(rows) == 9 * 8 * 2
    keys = {"src", "dst", "protocol", "port", "verdict", "drop_reason", "src_identity", "dst_identity", "explanation"}
    assert all(set(r) == keys for r in rows)
    to_ds = [r for r in rows if "/deathstar-" in r["dst"]]
    allowed_srcs = {r["src"] for r in to_ds if r["verdict"] == "FORWARDED" and r["port"] == 80}
    # empire ships (tiefighter and the other deathstar replica) reach the deathstar on 80, nobody on 81
    assert {s.split("/")[1].split("-")[0] for s in allowed_srcs} == {"tiefighter", "deathstar"}
    assert all(r["verdict"] == "DROPPED" for r in to_ds if r["port"] == 81)
    assert all(r["verdict"] == "FORWARDED" for r in rows if "/deathstar-" not in r["dst"])


def test_truth_table_csv_has_a_header_and_the_same_rows_as_json():
    r = run_twin("truth-table", *SEED, str(L3L4), *VALUES, "--port", "80", "--csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    js = twin_json("truth-table", *SEED, str(L3L4), *VALUES, "--port", "80", "--json")
    assert len(rows) == len(js) == 72
    assert [(x["src"], x["dst"], x["verdict"]) for x in rows] == [(x["src"], x["dst"], x["verdict"]) for x in js]
    assert list(rows[0]) == list(js[0])


def test_show_json_has_the_documented_keys_and_seed_values():
    out = twin_json("show", *SEED, str(L3L4), *VALUES, "--json")
    assert {"pods", "services", "findings"} <= set(out)
    for p in out["pods"]:
        assert {"namespace", "name", "node", "ip", "identity", "labels", "egress_bandwidth_bps"} <= set(p)
    for s in out["services"]:
        assert {"namespace", "name", "type", "cluster_ip", "lb_ips", "backends", "l2"} <= set(s)
        assert {"announced", "candidate_nodes"} <= set(s["l2"])
    for f in out["findings"]:
        assert {"severity", "object", "field", "message"} <= set(f)
    pods = {p["name"]: p for p in out["pods"]}
    assert pods["netperf-server"]["egress_bandwidth_bps"] == 10_000_000
    assert pods["netpod"]["ip"] == "172.16.0.10" and pods["netpod"]["node"] == "k8s-s"
    svcs = {s["name"]: s for s in out["services"]}
    assert [svcs[n]["lb_ips"] for n in ("svc1", "svc2", "svc3")] == [["10.10.200.1"], ["10.10.200.2"], ["10.10.200.3"]]
    assert svcs["svc"]["type"] == "ClusterIP" and svcs["svc"]["lb_ips"] == []
    assert len(svcs["deathstar"]["backends"]) == 2
    assert not svcs["svc1"]["l2"]["announced"]
    assert [(f["severity"], f["object"], f["field"]) for f in out["findings"]] == [
        ("warning", "CiliumL2AnnouncementPolicy policy1", "spec.serviceSelector")]


def test_show_and_verdict_exit_2_on_bad_input(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n")
    r = run_twin("show", bad, "--json")
    assert r.returncode == 2
    assert f"{bad}:" in r.stderr and "spec.containers" in r.stderr


@pytest.mark.parametrize("args, named, says", [
    (["--from", "netpod", "--to", "webpod1", "--port", "-1"], "--port", "0..65535"),
    (["--from", "netpod", "--to", "webpod1", "--port", "70000"], "--port", "0..65535"),
    (["--from", "netpod", "--to", "webpod1", "--port", "http"], "--port", "number"),
    (["--from", "netpod", "--to", "webpod1", "--port", "80", "--protocol", "SCTP"], "--protocol", "SCTP"),
    (["--from", "nosuchpod", "--to", "webpod1", "--port", "80"], "--from", "no pod 'default/nosuchpod'"),
    (["--from", "netpod", "--to", "nosuchpod", "--port", "80"], "--to", "no pod 'default/nosuchpod'"),
    (["--from", "netpod", "--to", "svc:default/nosuch", "--port", "80"], "--to", "no service"),
    (["--from", "a/b/c", "--to", "webpod1", "--port", "80"], "--from", "is not NS/POD"),
    (["--from", "/netpod", "--to", "webpod1", "--port", "80"], "--from", "is not NS/POD"),
    (["--from", "netpod", "--to", "svc:", "--port", "80"], "--to", "is not svc:NS/NAME"),
    (["--from", "netpod", "--to", "svc:default/svc", "--port", "81"], "--port", "no port 81"),
    (["--from", "netpod", "--to", "webpod1", "--protocol", "UDP", "--method", "GET"], "--method", "HTTP needs --protocol TCP"),
    (["--from", "netpod", "--to", "webpod1", "--protocol", "ICMP", "--path", "/x"], "--path", "HTTP needs --protocol TCP"),
])
def test_verdict_with_a_bad_argument_exits_2_naming_the_argument(args, named, says):
    r = run_twin("verdict", *SEED, *VALUES, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert named in r.stderr and says in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_truth_table_port_out_of_range_exits_2_naming_the_port():
    r = run_twin("truth-table", *SEED, *VALUES, "--port", "65536")
    assert r.returncode == 2 and "--port" in r.stderr and "Traceback" not in r.stderr


def test_run_of_a_missing_scenario_file_exits_2_naming_it(tmp_path):
    r = run_twin("run", tmp_path / "nope.yaml", "--backend", "twin")
    assert r.returncode == 2 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr


def test_verdict_text_lists_every_backend_of_a_service():
    r = run_twin("verdict", *SEED, *VALUES, "--from", "netpod", "--to", "svc:default/svc", "--port", "80")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[:4] for ln in r.stdout.splitlines()] == [
        ["FORWARDED", "default/netpod", "→", "default/webpod1:"], ["FORWARDED", "default/netpod", "→", "default/webpod2:"]]


def test_an_internal_error_prints_one_line_and_saves_the_traceback_exit_70(monkeypatch, tmp_path, capsys):
    from harness import cli

    def broken(args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cli, "cmd_show", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    code = cli.main(["show", *SEED])
    err = capsys.readouterr().err
    assert code == 70
    assert "twin: internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err
    saved = list(tmp_path.glob("twin-internal-error-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert "Traceback" in saved[0].read_text() and "a bug" in saved[0].read_text()


def test_run_with_an_unwritable_out_directory_exits_2_naming_out_before_running(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run_twin("run", "scenarios/seed-deathstar-l3l4.yaml", "--backend", "twin", "--out", blocker / "sub")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--out" in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def _seed_with_blue_svc1(tmp_path):
    """The seed manifests with svc1 labelled color: blue (what the seed's `kubectl label` does)."""
    for f in SEED_DIR.glob("*.yaml"):
        text = f.read_text()
        if f.name == "l2.yaml":
            text = text.replace("metadata:\n  name: svc1\n", "metadata:\n  name: svc1\n  labels:\n    color: blue\n")
        (tmp_path / f.name).write_text(text)
    return str(tmp_path)


def test_show_json_gives_each_load_balancer_service_its_l2_announcement_and_the_effective_timings(tmp_path):
    from clirun import run_cli
    o = run_cli(["show", _seed_with_blue_svc1(tmp_path), *VALUES, "--json"])
    assert o.code == 0, o.text
    out = json.loads(o.out)
    t = out["l2"]["timings"]
    assert out["l2"]["enabled"] is True
    assert (t["leaseDuration"], t["renewDeadline"], t["retryPeriod"], t["qps"], t["burst"]) == (3.0, 1.0, 0.2, 5.0, 10)
    svcs = {s["name"]: s for s in out["services"]}
    a = svcs["svc1"]["l2"]
    assert svcs["svc1"]["lb_ips"] == ["10.10.200.1"]
    assert a["announced"] is True and a["candidate_nodes"] == ["k8s-w1", "k8s-w2"]  # never the control plane
    assert a["interfaces"] == {"k8s-w1": ["ens5"], "k8s-w2": ["ens5"]}
    assert a["lease"] == "cilium-l2announce-default-svc1" and a["reason"] == ""
    b = svcs["svc2"]["l2"]
    assert b["announced"] is False and "policy1 selects color=blue" in b["reason"]
    assert b["lease"] == "cilium-l2announce-default-svc2"


def test_show_text_has_a_readable_l2_section(tmp_path):
    from clirun import run_cli
    o = run_cli(["show", _seed_with_blue_svc1(tmp_path), *VALUES])
    assert o.code == 0, o.text
    assert "L2 announcements: enabled" in o.out
    assert "lease 3s, renew deadline 1s, retry 200ms; API client 5 qps, burst 10" in o.out
    assert ("default/svc1 (10.10.200.1): announced, lease cilium-l2announce-default-svc1; "
            "candidates: k8s-w1 on ens5; k8s-w2 on ens5") in o.out
    assert "default/svc2 (10.10.200.2): not announced: no CiliumL2AnnouncementPolicy selects the service" in o.out


def test_show_text_names_the_lease_timing_rewrites(tmp_path):
    from clirun import run_cli
    values = tmp_path / "v.yaml"
    values.write_text("l2announcements: {enabled: true, leaseDuration: 2s, leaseRenewDeadline: 3s}\n")
    o = run_cli(["show", str(SEED_DIR), "--values", str(values)])
    assert o.code == 0, o.text
    assert "rewritten by Cilium: leaseRenewDeadline 3s is not below leaseDuration 2s: Cilium uses 1s" in o.out
    assert "lease 2s, renew deadline 1s, retry 500ms" in o.out
