"""Explicit limits on inputs (documented in the README, "Input limits").

Each limit guards the twin against an input that would otherwise exhaust
memory or time; exceeding one is an input error naming the limit.
"""
from __future__ import annotations

#: largest manifest, values, scenario or policy file read, in bytes
MAX_FILE_BYTES = 4 * 1024 * 1024
#: deepest nesting of YAML mappings/sequences in one document
MAX_NESTING_DEPTH = 64
#: most YAML nodes reachable through aliases (``*name``) in one file; a
#: "billion laughs" file has a few hundred bytes and expands without bound
MAX_ALIAS_EXPANSION = 10_000
#: most YAML nodes in one file (checked before it is composed, and again after alias expansion)
MAX_YAML_NODES = 300_000
#: most Node objects (the default node addresses fill one /24)
MAX_NODES = 150
#: most addresses in one block of a CiliumLoadBalancerIPPool (the twin enumerates them)
MAX_POOL_ADDRESSES = 65_536
#: most replicas of one Deployment
MAX_REPLICAS = 1_000
#: most pods in a cluster (after Deployment expansion)
MAX_PODS = 10_000
#: most requests of one ``requests`` step, probe ``count`` or loop (duration/interval)
MAX_REQUESTS = 100_000
#: longest duration anywhere in an input (one week), in seconds
MAX_DURATION_S = 7 * 24 * 3600.0
#: k8sClientRateLimit qps and burst above this are refused (a token bucket of a
#: billion tokens is a typo, and virtual time would not cope with it)
MAX_CLIENT_QPS = 100_000
#: longest ``throughput`` step (a real iperf3 run lasts that long)
MAX_THROUGHPUT_S = 300.0
#: most parallel streams of one ``throughput`` step (iperf3 -P)
MAX_PARALLEL_STREAMS = 16
