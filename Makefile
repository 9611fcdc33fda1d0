# Two commands for a newcomer (see README): `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export BCC_KERNEL_SOURCE ?= $(CURDIR)/.build/kernel-headers

.PHONY: setup demo test test-pure lint-imports clean-kernel bench soak l2-repeat calibrate-bandwidth

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/twin demo --out results/demo

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

test-pure: setup
	$(PY) -m pytest -q -m "pure or sim" tests

clean-kernel: setup
	$(VENV)/bin/twin cleanup

# Socket LB vs kube-proxy (iptables, nftables) benchmark, root only; about 2-3 minutes.
# Results: bench/results/latest.json and latest.md.  BENCH_ARGS=--quick for a small run.
bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.bandwidth $(if $(findstring --quick,$(BENCH_ARGS)),--quick,)

# Re-measure the twin's bandwidth calibration profile on this machine's real datapath (root; about
# 5 minutes): twin/calibration/bandwidth.json. CALIBRATE_ARGS="--repeats 2" for a quick look.
calibrate-bandwidth: setup
	$(PY) -m harness.calibrate $(CALIBRATE_ARGS)

# The differential tier (root) with ten times more generated cases and a fresh seed; not run by
# `make test`. Prints the seed and one line per test (cases, probes, drops, time).
# HYPOTHESIS_SEED=N make soak replays a run.
soak: setup
	SOAK=1 $(PY) -m pytest -q -s tests/harness/test_differential.py tests/harness/test_differential_services.py \
		tests/harness/test_stateful_reconcile.py tests/harness/test_differential_l2.py \
		tests/harness/test_differential_bandwidth.py

# L2 failover timing, root only: scenarios 2 and 3 (lease loss, node crash) run settings.repeats (10)
# times each on the real side, every outage compared with the twin's predicted interval and its Monte Carlo
# samples (two-sample KS test). Results: bench/results/l2-failover.json and .md. REPEAT_ARGS=--repeats 3
# for a quick look. Not a test; about 25 s a real run, 10 minutes in all.
l2-repeat: setup
	$(PY) -m harness.repeat $(REPEAT_ARGS) scenarios/l2-lease-loss.yaml scenarios/l2-node-crash.yaml
