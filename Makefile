# Two commands for a newcomer (see README): `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export BCC_KERNEL_SOURCE ?= $(CURDIR)/.build/kernel-headers

.PHONY: setup demo test test-pure lint-imports clean-kernel bench soak

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

# The differential tier (root) with ten times more generated cases and a fresh seed; not run by
# `make test`. Prints the seed and one line per test (cases, probes, drops, time).
# HYPOTHESIS_SEED=N make soak replays a run.
soak: setup
	SOAK=1 $(PY) -m pytest -q -s tests/harness/test_differential.py tests/harness/test_differential_services.py \
		tests/harness/test_stateful_reconcile.py
