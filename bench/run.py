"""Socket LB vs kube-proxy benchmark (``make bench``; ``python -m bench.run --quick``).

Measures, side by side in one run (root; bcc; iptables-legacy and nft):

1. connect() latency through the socket LB (``bpf_sock.c`` connect4 on a
   cgroup) with a small and a large service set in the LB maps;
2. the same large set as kube-proxy DNAT rules, iptables-legacy
   (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*) and nftables (kube-proxy's
   nftables mode: verdict map + numgen vmaps), with no socket LB;
3. the time to add one service when the large set exists: the agent's service
   reconcile (only the changed service compiled and written), the raw BPF map
   writes, set_services with the whole table (diffed by frontend),
   iptables-restore (full, --noflush of the new chains, kube-proxy >= 1.28
   partial sync) and nft -f.

Latency configurations run interleaved in rounds (each round runs every
configuration once, in a shuffled order) so that machine noise spreads evenly.
Results: ``<out>/latest.json`` and ``<out>/latest.md`` (default bench/results).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import ipaddress
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results"

from bench import kubeproxy as kp  # noqa: E402
from bench.env import NETNS_DIR, BenchEnv, leftovers, remove_leftovers, sh  # noqa: E402

LATENCY_CONFIGS = ("direct", "socklb_small", "socklb_large", "iptables", "nftables")
GOALS = {
    "socklb_scaling_p50": 1.1,   # p50(large) / p50(small) <= 1.1
    "socklb_scaling_p99": 1.1,   # p99(large) / p99(small) <= 1.1
    "speedup_p99_vs_iptables": 2.0,  # >= 2
    "speedup_p99_vs_nftables": 2.0,  # >= 2
    "add_service_vs_iptables_restore": 100.0,  # >= 100
}


@dataclass
class Params:
    services: int = 10_000
    small: int = 100
    backends: int = 2
    connects: int = 2_000  # measured per configuration (after warm-up)
    rounds: int = 20
    warmup: int = 20  # per configuration and round
    add_repeats: int = 5
    seed: int = 1
    client: str = "auto"  # auto | c | python
    nft_replace: bool = False
    quick: bool = False

    @classmethod
    def quick_mode(cls, **kw: Any) -> "Params":
        base = dict(services=50, small=10, connects=100, rounds=2, warmup=10, add_repeats=2, quick=True)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


# -- small helpers -----------------------------------------------------------------------

def percentile(sorted_vals: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(sorted_vals)))
    return float(sorted_vals[k - 1])


def summarize_ns(samples: Sequence[int]) -> dict[str, float]:
    s = sorted(samples)
    us = 1e-3
    return {
        "n": len(s),
        "p50_us": round(percentile(s, 50) * us, 2),
        "p90_us": round(percentile(s, 90) * us, 2),
        "p99_us": round(percentile(s, 99) * us, 2),
        "mean_us": round(statistics.fmean(s) * us, 2) if s else float("nan"),
        "min_us": round(s[0] * us, 2) if s else float("nan"),
        "max_us": round(s[-1] * us, 2) if s else float("nan"),
    }


def summarize_s(samples: Sequence[float], unit: str) -> dict[str, Any]:
    f = {"ms": 1e3, "us": 1e6}[unit]
    s = sorted(samples)
    return {
        f"median_{unit}": round(statistics.median(s) * f, 3),
        f"min_{unit}": round(s[0] * f, 3),
        f"max_{unit}": round(s[-1] * f, 3),
        "samples": len(s),
    }


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def machine_info(client_impl: str) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    try:
        import bcc  # type: ignore[import-not-found]
        bcc_version = getattr(bcc, "__version__", "unknown")
    except ImportError:
        bcc_version = "not importable"
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "bcc": bcc_version,
        "iptables": _first_line(["iptables-legacy", "--version"]),
        "nft": _first_line(["nft", "--version"]),
        "client": client_impl,
    }


def check_prerequisites() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, cgroups, BPF)")
    try:
        import bcc  # noqa: F401  # type: ignore[import-not-found]
    except ImportError:
        problems.append("python module bcc missing (python3-bpfcc; use .venv/bin/python)")
    for tool in ("iptables-legacy-restore", "iptables-legacy", "nft", "nsenter", "ip"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (Debian packages iptables, nftables, util-linux, iproute2)")
    if problems:
        raise SystemExit("bench: cannot run: " + "; ".join(problems))
    if not os.environ.get("BCC_KERNEL_SOURCE"):
        hdr = ROOT / ".build" / "kernel-headers"
        if (hdr / "include").is_dir():
            os.environ["BCC_KERNEL_SOURCE"] = str(hdr)


# -- the benchmark -----------------------------------------------------------------------

@dataclass
class Bench:
    p: Params
    env: BenchEnv = field(default_factory=BenchEnv)
    log: Callable[[str], None] = lambda m: print(f"bench: {m}", file=sys.stderr, flush=True)
    lbs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    connects_made: dict[str, int] = field(default_factory=dict)
    connects_ok: dict[str, int] = field(default_factory=dict)
    probed_backends: set[str] = field(default_factory=set)  # of services added in add_service()

    def __post_init__(self) -> None:
        self.services = kp.make_services(self.p.services, self.p.backends)
        self.rng = random.Random(self.p.seed)
        n = os.cpu_count() or 1
        # client on the last CPU, the backend listener on CPU 0 (one CPU: no pinning)
        self.client_cpu, self.server_cpu = (n - 1, 0) if n >= 2 else (-1, -1)

    # -- helpers (C, or Python fallback) --------------------------------------------------

    def build_helpers(self) -> str:
        want = self.p.client
        gcc = shutil.which("gcc") or shutil.which("cc")
        if want in ("auto", "c") and gcc:
            out = self.env.tmpdir()
            for name in ("connlat", "acceptd"):
                sh(gcc, "-O2", "-Wall", "-o", str(out / name), str(BENCH / "c" / f"{name}.c"))
            self.connlat = [str(out / "connlat")]
            self.acceptd = [str(out / "acceptd")]
            return f"C helper (bench/c/connlat.c, {_first_line([gcc, '--version'])}): clock_gettime(CLOCK_MONOTONIC) around connect() only"
        if want == "c":
            raise SystemExit("bench: --client c needs gcc")
        py = [sys.executable, str(BENCH / "pyhelpers.py")]
        self.connlat, self.acceptd = py + ["connlat"], py + ["acceptd"]
        self.notes.append("no C compiler: the Python client was used (about 1 us of interpreter overhead per sample)")
        return "Python helper (bench/pyhelpers.py): time.perf_counter_ns() around socket.connect()"

    # -- topology ---------------------------------------------------------------------------

    def setup(self) -> None:
        env = self.env
        env.create_backend(str(kp.BACKEND_NET))
        routes = [str(kp.BACKEND_NET), str(kp.VIP_NET)]
        plain = env.cgroup("plain")
        env.add_client("direct", plain, routes)
        env.add_client("socklb_small", env.cgroup("socklb-small"), routes)
        env.add_client("socklb_large", env.cgroup("socklb-large"), routes)
        env.add_client("iptables", plain, routes)
        env.add_client("nftables", plain, routes)
        self.server = env.popen([*self.acceptd, str(NETNS_DIR / env.backend_netns),
                                 str(kp.TARGET_PORT), str(self.server_cpu)])
        assert self.server.stdout is not None
        if self.server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"backend listener did not start: {self.server.stderr.read() if self.server.stderr else ''}")

    def load_rules(self) -> dict[str, Any]:
        """Program the service set into every configuration; returns load times."""
        from datapath.socklb import NodeSocketLB

        setup: dict[str, Any] = {}
        for name, count in (("socklb_small", self.p.small), ("socklb_large", self.p.services)):
            lb = NodeSocketLB()
            self.lbs[name] = lb
            t0 = time.perf_counter()
            lb.open()
            t1 = time.perf_counter()
            res = lb.set_services(kp.lb_table(self.services[:count]))
            t2 = time.perf_counter()
            lb.attach_cgroup(self.env.clients[name].cgroup)
            setup[f"{name}_compile_load_s"] = round(t1 - t0, 3)
            setup[f"{name}_set_services_s"] = round(t2 - t1, 3)
            setup[f"{name}_map_entries_added"] = res.added
            self.log(f"{name}: {count} services in the LB maps ({res.added} entries, {t2 - t1:.2f} s)")
        ipt = kp.iptables_full(self.services)
        t0 = time.perf_counter()
        self._ns_run("iptables", ["iptables-legacy-restore"], ipt)
        setup["iptables_restore_full_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"iptables: {self.p.services} services restored ({setup['iptables_restore_full_s']} s)")
        nft = kp.nft_full(self.services)
        self.log(f"nftables: loading {self.p.services} services (kube-proxy nftables-mode ruleset; "
                 "slow on this kernel at 10k, see the notes)")
        t0 = time.perf_counter()
        self._ns_run("nftables", ["nft", "-f", "-"], nft, timeout=900)
        setup["nft_load_full_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"nftables: loaded ({setup['nft_load_full_s']} s)")
        return setup

    def _ns_run(self, client: str, cmd: list[str], stdin: str | None = None, timeout: float = 300) -> float:
        """Run ``cmd`` in a client netns (nsenter, no fork of this process); seconds taken."""
        full = self.env.nsenter(self.env.clients[client].netns) + cmd
        t0 = time.perf_counter()
        res = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout)
        took = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {client} failed: {res.stderr.strip()[:2000]}")
        return took

    # -- connect latency --------------------------------------------------------------------

    def _targets(self, config: str, n: int) -> list[tuple[str, int]]:
        if config == "direct":
            out = []
            for _ in range(n):
                ip, port = self.rng.choice(self.rng.choice(self.services).backends)
                out.append((str(ip), port))
            return out
        pool = self.services[: self.p.small] if config == "socklb_small" else self.services
        return [(str(s.vip), s.port) for s in (self.rng.choice(pool) for _ in range(n))]

    def _connect_run(self, config: str, targets: list[tuple[str, int]], warmup: int) -> list[tuple[int, int]]:
        client = self.env.clients[config]
        path = self.env.tmpdir() / f"targets-{config}.txt"
        path.write_text("".join(f"{ip} {port}\n" for ip, port in targets))
        # the helper reports every connect (warm-up 0); the warm-up is dropped here, after
        # counting it for the reach check
        cmd = [*self.connlat, str(client.netns_path), str(client.cgroup), str(path), "0",
               str(self.client_cpu)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 3 * len(targets))
        if res.returncode != 0:
            raise RuntimeError(f"connect client ({config}) failed: {res.stderr.strip()}")
        out = [(int(a), int(b)) for a, b in (line.split() for line in res.stdout.splitlines())]
        if len(out) != len(targets):
            raise RuntimeError(f"connect client ({config}) reported {len(out)} of {len(targets)} connects")
        self.connects_made[config] = self.connects_made.get(config, 0) + len(out)
        self.connects_ok[config] = self.connects_ok.get(config, 0) + sum(1 for _, e in out if not e)
        return out[warmup:]

    def sanity(self) -> None:
        """One connect per configuration must reach a backend before anything is timed."""
        for config in LATENCY_CONFIGS:
            res = self._connect_run(config, self._targets(config, 3), 0)
            bad = [e for _, e in res if e]
            if bad:
                raise RuntimeError(f"{config}: connect failed before measuring (errno {bad[0]}: "
                                   f"{os.strerror(bad[0])}); the configuration does not reach the backend")

    def latency(self) -> dict[str, Any]:
        per_round = max(1, self.p.connects // self.p.rounds)
        samples: dict[str, list[int]] = {c: [] for c in LATENCY_CONFIGS}
        errors: dict[str, int] = {c: 0 for c in LATENCY_CONFIGS}
        # the large-set configurations connect to the same service sequence each round
        for r in range(self.p.rounds):
            shared = self._targets("socklb_large", self.p.warmup + per_round)
            order = list(LATENCY_CONFIGS)
            self.rng.shuffle(order)
            for config in order:
                targets = shared if config in ("socklb_large", "iptables", "nftables") else \
                    self._targets(config, self.p.warmup + per_round)
                for ns, err in self._connect_run(config, targets, self.p.warmup):
                    if err:
                        errors[config] += 1
                    else:
                        samples[config].append(ns)
            self.log(f"latency round {r + 1}/{self.p.rounds} done")
        out = {}
        for config in LATENCY_CONFIGS:
            out[config] = summarize_ns(samples[config]) | {"errors": errors[config]}
        return out

    # -- reach check --------------------------------------------------------------------------

    def stop_server(self) -> dict[tuple[str, str], int]:
        self.server.send_signal(signal.SIGTERM)
        out, err = self.server.communicate(timeout=30)
        lines = out.splitlines()
        if not lines or lines[-1] != "end":
            raise RuntimeError(f"backend listener did not report its counts: {err.strip()}")
        counts = {}
        for line in lines[:-1]:
            src, dst, n = line.split()
            counts[(src, dst)] = int(n)
        return counts

    def reach(self, counts: dict[tuple[str, str], int]) -> dict[str, Any]:
        """Per configuration: connects that succeeded vs connections accepted at the backend,
        and whether every accepted connection went to a backend of a targeted service."""
        all_backends = {str(ip) for s in self.services for ip, _ in s.backends}
        small_backends = {str(ip) for s in self.services[: self.p.small] for ip, _ in s.backends}
        out: dict[str, Any] = {}
        for config, client in self.env.clients.items():
            expected = small_backends if config == "socklb_small" else all_backends
            if config == "socklb_large":
                expected = expected | self.probed_backends
            mine = {dst: n for (src, dst), n in counts.items() if src == client.ip}
            accepted = sum(mine.values())
            unexpected = sum(n for dst, n in mine.items() if dst not in expected)
            made, ok = self.connects_made.get(config, 0), self.connects_ok.get(config, 0)
            out[config] = {
                "connects": made,
                "connects_ok": ok,
                "accepted_at_backend": accepted,
                "distinct_backends": len(mine),
                "unexpected_destination": unexpected,
                "ok": made > 0 and made == ok == accepted and unexpected == 0,
            }
        for config, lb in self.lbs.items():
            # connect4 writes one lb4_sock_revnat entry per translated socket
            out[config]["sock_revnat_entries"] = len(lb.sock_revnat_entries())
            out[config]["ok"] = out[config]["ok"] and \
                out[config]["sock_revnat_entries"] == out[config]["connects"]
        return out

    # -- add one service ---------------------------------------------------------------------

    def add_service(self) -> dict[str, Any]:
        from datapath.maps import lb_backends, lb_revnat, lb_services
        from datapath.reconcile import BccMap

        lb = self.lbs["socklb_large"]
        maps = {c.map_name: BccMap(lb.program.table(c.map_name), c)
                for c in (lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC)}
        n, k = self.p.services, self.p.add_repeats
        svcs = list(self.services)
        res: dict[str, Any] = {}

        # (a) BPF: write just the new service's entries (in reconcile_lb's order). The
        # delta is computed by the project's compiler (untimed); afterwards the kernel
        # must hold exactly the compiled entries, which checks the writes were right.
        times = []
        current = lb.compile(kp.lb_table(svcs))
        tables = {c.map_name: (lb.program.table(c.map_name), c) for c in (lb_services.CODEC, lb_backends.CODEC, lb_revnat.CODEC)}
        for _ in range(k):
            new = kp.service(len(svcs), self.p.backends)
            svcs.append(new)
            desired = lb.compile(kp.lb_table(svcs))
            writes_b = [(key, v) for key, v in desired.backends.items() if current.backends.get(key) != v]
            writes_r = [(key, v) for key, v in desired.revnat.items() if current.revnat.get(key) != v]
            writes_s = [(key, v) for key, v in desired.services.items() if current.services.get(key) != v]
            slots = [(key, v) for key, v in writes_s if not key.is_master]
            masters = [(key, v) for key, v in writes_s if key.is_master]
            gc.collect()
            gc.disable()  # time the map writes, not a collection of the compile's garbage
            try:
                t0 = time.perf_counter()
                for key, v in writes_b:
                    maps["lb4_backends"].update(key, v)
                for key, v in writes_r:
                    maps["lb4_reverse_nat"].update(key, v)
                for key, v in slots + masters:
                    maps["lb4_services"].update(key, v)
                times.append(time.perf_counter() - t0)
            finally:
                gc.enable()
            for name, written in (("lb4_backends", writes_b), ("lb4_reverse_nat", writes_r), ("lb4_services", writes_s)):
                table, codec = tables[name]
                for key, v in written:
                    if codec.decode_value(table[codec.key_to_c(key)]) != v:
                        raise RuntimeError(f"{name}[{key}] does not hold what the compiler computed ({v})")
            lb.set_services(kp.lb_table(svcs))  # the agent's compiler learns the service (same values)
            current = desired
            res["bpf_map_writes_per_service"] = len(writes_b) + len(writes_r) + len(writes_s)
        res["bpf_map_update"] = summarize_s(times, "us")

        # (b) the project's set_services with the whole table: diffed by frontend, only the new
        # frontend compiled and written (the diff itself visits every frontend: O(services))
        times, compiled = [], []
        for _ in range(k):
            svcs.append(kp.service(len(svcs), self.p.backends))
            table = kp.lb_table(svcs)
            t0 = time.perf_counter()
            lb.set_services(table)
            times.append(time.perf_counter() - t0)
            compiled.append(lb.last_frontends_compiled)
        res["bpf_project_set_services"] = summarize_s(times, "ms")
        res["bpf_project_set_services_frontends_compiled"] = max(compiled)

        # (c) the agent's service reconcile: the changed service's frontends (what the agent's
        # services reconciler gets from the semantics for a service event) -> update_services:
        # compile that service, allocate its ids, write its entries in order
        times, writes = [], []
        for _ in range(max(k, 20)):  # microseconds each: more samples for a steadier median
            new = kp.service(len(svcs), self.p.backends)
            svcs.append(new)
            fronts = kp.lb_table([new]).services
            before = lb.map_writes
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                lb.update_services({new.name: fronts})
                times.append(time.perf_counter() - t0)
            finally:
                gc.enable()
            writes.append(lb.map_writes - before)
        res["agent_update_services"] = summarize_s(times, "us")
        res["agent_update_services_map_writes"] = max(writes)
        # the new services answer through the socket LB
        probe = self._connect_run("socklb_large", [(str(s.vip), s.port) for s in svcs[n:]], 0)
        res["bpf_new_services_reachable"] = all(e == 0 for _, e in probe)
        self.probed_backends = {str(ip) for s in svcs[n:] for ip, _ in s.backends}
        self.log("add-service: BPF done")

        # (c) iptables-legacy: full restore (kube-proxy full sync), --noflush of the new chains,
        # and kube-proxy >= 1.28 partial sync (KUBE-SERVICES rewritten + the new chains)
        isvcs = list(self.services)
        full, noflush, partial = [], [], []
        for _ in range(k):
            isvcs.append(kp.service(len(isvcs), self.p.backends))
            full.append(self._ns_run("iptables", ["iptables-legacy-restore"], kp.iptables_full(isvcs)))
        for _ in range(k):
            isvcs.append(kp.service(len(isvcs), self.p.backends))
            noflush.append(self._ns_run("iptables", ["iptables-legacy-restore", "--noflush"],
                                        kp.iptables_add_noflush(isvcs[-1])))
        for _ in range(k):
            isvcs.append(kp.service(len(isvcs), self.p.backends))
            partial.append(self._ns_run("iptables", ["iptables-legacy-restore", "--noflush"],
                                        kp.iptables_partial_sync(isvcs, isvcs[-1])))
        res["iptables_restore_full"] = summarize_s(full, "ms")
        res["iptables_restore_noflush_new_chains"] = summarize_s(noflush, "ms")
        res["iptables_restore_partial_sync"] = summarize_s(partial, "ms")
        rules = self._ns_out("iptables", ["iptables-legacy-save", "-t", "nat"]).count("\n-A KUBE-SERVICES ")
        res["iptables_kube_services_rules_after"] = rules
        self.log("add-service: iptables done")

        # (d) nft: add one service to the table (kube-proxy nftables mode is incremental)
        nsvcs = list(self.services)
        adds = []
        for _ in range(k):
            nsvcs.append(kp.service(len(nsvcs), self.p.backends))
            adds.append(self._ns_run("nftables", ["nft", "-f", "-"], kp.nft_add(nsvcs[-1])))
        res["nft_add_incremental"] = summarize_s(adds, "ms")
        if self.p.nft_replace:
            reps = []
            for _ in range(max(1, k // 2)):
                nsvcs.append(kp.service(len(nsvcs), self.p.backends))
                reps.append(self._ns_run("nftables", ["nft", "-f", "-"], kp.nft_full(nsvcs, replace=True),
                                         timeout=900))
            res["nft_full_replace"] = summarize_s(reps, "ms")
        self.log("add-service: nft done")

        # what starting a process in the netns costs (included in every iptables/nft number)
        spawn = [self._ns_run("iptables", ["true"]) for _ in range(5)]
        res["spawn_baseline_nsenter_true"] = summarize_s(spawn, "ms")
        return res

    def _ns_out(self, client: str, cmd: list[str]) -> str:
        return sh(*self.env.nsenter(self.env.clients[client].netns), *cmd).stdout

    def close(self) -> list[str]:
        problems = []
        for name, lb in list(self.lbs.items()):
            try:
                lb.close()  # detaches from our cgroup, frees programs and maps
            except Exception as exc:  # keep tearing down
                problems.append(f"{name}: {exc}")
        self.lbs.clear()
        return problems + self.env.close()


# -- results ------------------------------------------------------------------------------

def ratios_and_goals(lat: dict[str, Any], add: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    def r(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    small, large = lat["socklb_small"], lat["socklb_large"]
    bpf_us = add["bpf_map_update"]["median_us"]
    agent_us = add["agent_update_services"]["median_us"]
    ratios = {
        "socklb_scaling_p50": r(large["p50_us"], small["p50_us"]),
        "socklb_scaling_p99": r(large["p99_us"], small["p99_us"]),
        "speedup_p50_vs_iptables": r(lat["iptables"]["p50_us"], large["p50_us"]),
        "speedup_p99_vs_iptables": r(lat["iptables"]["p99_us"], large["p99_us"]),
        "speedup_p50_vs_nftables": r(lat["nftables"]["p50_us"], large["p50_us"]),
        "speedup_p99_vs_nftables": r(lat["nftables"]["p99_us"], large["p99_us"]),
        "socklb_overhead_p50_vs_direct": r(large["p50_us"], lat["direct"]["p50_us"]),
        "add_service_vs_iptables_restore": r(add["iptables_restore_full"]["median_ms"] * 1e3, agent_us),
        "map_writes_vs_iptables_restore": r(add["iptables_restore_full"]["median_ms"] * 1e3, bpf_us),
        "agent_add_service_vs_nft_incremental": r(add["nft_add_incremental"]["median_ms"] * 1e3, agent_us),
        "add_service_vs_iptables_noflush": r(add["iptables_restore_noflush_new_chains"]["median_ms"] * 1e3, bpf_us),
        "add_service_vs_iptables_partial_sync": r(add["iptables_restore_partial_sync"]["median_ms"] * 1e3, bpf_us),
        "add_service_vs_nft_incremental": r(add["nft_add_incremental"]["median_ms"] * 1e3, bpf_us),
        "project_set_services_vs_iptables_restore": r(add["iptables_restore_full"]["median_ms"],
                                                      add["bpf_project_set_services"]["median_ms"]),
    }
    goals = {}
    for name, target in GOALS.items():
        value = ratios[name]
        met = value <= target if name.startswith("socklb_scaling") else value >= target
        goals[name] = {"target": ("<= " if name.startswith("socklb_scaling") else ">= ") + str(target),
                       "value": value, "met": bool(met)}
    return ratios, goals


def render_md(res: dict[str, Any]) -> str:
    m, p, lat, add = res["machine"], res["params"], res["connect_latency"], res["add_service"]
    L = [f"# Socket LB vs kube-proxy ({'quick' if p['quick'] else 'full'} run, {m['date']})", "",
         f"Machine: kernel {m['kernel']}, {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
         f"Python {m['python']}, bcc {m['bcc']}, {m['iptables']}, {m['nft']}.  ",
         f"Client: {m['client']}.  ",
         f"{p['services']} services x {p['backends']} backends (small set: {p['small']}); "
         f"{p['connects']} measured connects per configuration in {p['rounds']} interleaved rounds "
         f"(+{p['warmup']} warm-up each).", "",
         "## connect() latency (us)", "",
         "| configuration | services | p50 | p90 | p99 | mean | errors |", "|---|---|---|---|---|---|---|"]
    sizes = {"direct": "- (backend IP)", "socklb_small": p["small"]}
    for c, v in lat.items():
        L.append(f"| {c} | {sizes.get(c, p['services'])} | {v['p50_us']} | {v['p90_us']} | {v['p99_us']} | "
                 f"{v['mean_us']} | {v['errors']} |")
    L += ["", "## Add one service (with the large set installed)", "", "| method | median | min | max |",
          "|---|---|---|---|"]
    for key, v in add.items():
        if isinstance(v, dict) and "samples" in v:
            unit = "us" if "median_us" in v else "ms"
            L.append(f"| {key} | {v['median_' + unit]} {unit} | {v['min_' + unit]} {unit} | {v['max_' + unit]} {unit} |")
    L += ["", "## Goals", "", "| goal | target | value | met |", "|---|---|---|---|"]
    for name, g in res["goals"].items():
        L.append(f"| {name} | {g['target']} | {g['value']} | {'goal met' if g['met'] else 'goal NOT met'} |")
    L += ["", "## Other ratios", ""] + [f"- {k}: {v}" for k, v in res["ratios"].items() if k not in res["goals"]]
    L += ["", "## Reach check (every connect accepted by a backend of a targeted service)", "",
          "| configuration | connects | accepted at backend | distinct backends | sock_revnat entries | ok |",
          "|---|---|---|---|---|---|"]
    for c, v in res["reach"].items():
        L.append(f"| {c} | {v['connects']} | {v['accepted_at_backend']} | {v['distinct_backends']} | "
                 f"{v.get('sock_revnat_entries', '-')} | {'yes' if v['ok'] else 'NO'} |")
    L += ["", "## Setup", ""] + [f"- {k}: {v}" for k, v in res["setup"].items()]
    L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(L) + "\n"


def short_table(res: dict[str, Any]) -> str:
    lat, g = res["connect_latency"], res["goals"]
    rows = [f"{'configuration':<14} {'p50 us':>9} {'p99 us':>9} {'errors':>7}"]
    rows += [f"{c:<14} {v['p50_us']:>9} {v['p99_us']:>9} {v['errors']:>7}" for c, v in lat.items()]
    add = res["add_service"]
    rows += ["", f"add one service: agent reconcile {add['agent_update_services']['median_us']} us, "
                 f"BPF map writes {add['bpf_map_update']['median_us']} us, "
                 f"set_services (whole table) {add['bpf_project_set_services']['median_ms']} ms, "
                 f"iptables-restore full {add['iptables_restore_full']['median_ms']} ms, "
                 f"--noflush {add['iptables_restore_noflush_new_chains']['median_ms']} ms, "
                 f"nft add {add['nft_add_incremental']['median_ms']} ms", ""]
    rows += [f"goal {n}: {v['value']} ({v['target']}) {'goal met' if v['met'] else 'goal NOT met'}" for n, v in g.items()]
    rows.append(f"reach check: {'ok' if all(v['ok'] for v in res['reach'].values()) else 'FAILED'}")
    return "\n".join(rows)


def run(p: Params, out_dir: Path) -> dict[str, Any]:
    check_prerequisites()
    b = Bench(p)
    started = time.perf_counter()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for s in old:
        signal.signal(s, on_signal)
    try:
        client_impl = b.build_helpers()
        b.setup()
        setup = b.load_rules()
        b.sanity()
        lat = b.latency()
        add = b.add_service()
        reach = b.reach(b.stop_server())
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        problems = b.close()
        for s, h in old.items():
            signal.signal(s, h)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if problems:
            print("bench: cleanup problems: " + "; ".join(problems), file=sys.stderr)
    ratios, goals = ratios_and_goals(lat, add)
    notes = list(b.notes) + [
        "Latency: each sample is one connect() of a fresh TCP socket (closed right after); the client "
        "is pinned to the last CPU, the backend listener to CPU 0; percentiles are nearest-rank.",
        "socklb_*: NodeSocketLB (bpf_sock.c connect4) attached to the client's own cgroup2 directory; "
        "no iptables/nft rules in that netns.  direct: the same client connecting to backend IPs, "
        "no LB at all (the floor).",
        "iptables: iptables-legacy nat table, OUTPUT -> KUBE-SERVICES (one rule per service) -> "
        "KUBE-SVC-* (statistic mode random) -> KUBE-SEP-* (DNAT), as kube-proxy's iptables mode writes it.",
        "nftables: kube-proxy's nftables-mode structure written by hand (nft, not iptables-nft): "
        "service-ips verdict map keyed by daddr . l4proto . dport -> service chain with "
        "`numgen random mod N vmap {...}` -> endpoint chains (dnat).",
        "Add one service: the goal add_service_vs_iptables_restore compares kube-proxy's full "
        "iptables-restore with the agent's service reconcile (agent_update_services: "
        "NodeSocketLB.update_services with the changed service's frontends, which compiles that "
        "service alone, allocates its ids and writes its entries in reconcile_lb's order; it is "
        "the call the agent's services reconciler makes for a services-only change.  Not in this "
        "number: the semantics computing the changed service's frontends, and the rest of an agent "
        "reconcile of a new cluster state (its tables, the endpoints/ipcache/policy reconcilers)).  "
        "bpf_map_update = the same "
        "entries written with BccMap directly (the floor).  bpf_project_set_services = "
        "set_services with the whole table: diffed by frontend so only the new one is compiled "
        "and written, but the diff visits every frontend, O(services) in Python.  iptables/nft "
        "numbers are wall time of the tool started in the netns with nsenter "
        "(spawn_baseline_nsenter_true is that start-up alone).",
    ]
    if not p.nft_replace:
        notes.append("nft full reload: not repeated per added service (at 10k services one transaction takes "
                     "about a minute on this kernel); setup.nft_load_full_s is the one full load, "
                     "use --nft-replace to time a replace transaction as well.")
    res = {
        "schema": 1,
        "run_id": b.env.base,
        "params": p.__dict__,
        "machine": machine_info(client_impl),
        "duration_s": round(time.perf_counter() - started, 1),
        "setup": setup,
        "connect_latency": lat,
        "reach": reach,
        "add_service": add,
        "ratios": ratios,
        "goals": goals,
        "notes": notes,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / "latest.md").write_text(render_md(res))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (50 services, 100 connects)")
    ap.add_argument("--services", type=int, help="large service set (default 10000; quick 50)")
    ap.add_argument("--small", type=int, help="small service set (default 100; quick 10)")
    ap.add_argument("--backends", type=int, help="backends per service (default 2)")
    ap.add_argument("--connects", type=int, help="measured connects per configuration (default 2000)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 20)")
    ap.add_argument("--warmup", type=int, help="warm-up connects per configuration and round (default 20)")
    ap.add_argument("--add-repeats", type=int, help="repeats of each add-one-service method (default 5)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--client", choices=("auto", "c", "python"))
    ap.add_argument("--nft-replace", action="store_true", help="also time a full nft replace transaction")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default bench/results)")
    ap.add_argument("--cleanup", action="store_true", help="remove twb-* leftovers of a killed run and exit")
    a = ap.parse_args(argv)
    if a.cleanup:
        for line in remove_leftovers() or ["nothing to remove"]:
            print(line)
        return 0
    kw = dict(services=a.services, small=a.small, backends=a.backends, connects=a.connects, rounds=a.rounds,
              warmup=a.warmup, add_repeats=a.add_repeats, seed=a.seed, client=a.client)
    p = Params.quick_mode(**kw) if a.quick else Params(**{k: v for k, v in kw.items() if v is not None})
    p.nft_replace = a.nft_replace
    if p.small > p.services:
        ap.error("--small must not exceed --services")
    ns, cgs = leftovers()
    if ns or cgs:
        print(f"bench: note: leftovers of an earlier run: {ns + [str(c) for c in cgs]} "
              "(python -m bench.run --cleanup removes them)", file=sys.stderr)
    try:
        res = run(p, a.out)
    except KeyboardInterrupt:
        print("bench: interrupted; everything created was removed", file=sys.stderr)
        return 130
    print(short_table(res))
    print(f"results: {a.out / 'latest.json'} and {a.out / 'latest.md'} ({res['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
