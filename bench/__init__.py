"""Benchmark: socket load-balancing (cgroup connect4) vs kube-proxy (iptables, nftables).

Run with ``make bench`` (or ``python -m bench.run [--quick]`` as root);
results go to ``bench/results/latest.json`` and ``latest.md``.  Nothing here
is imported by the project's packages.
"""
