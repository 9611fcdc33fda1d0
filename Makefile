# Two commands for a newcomer (see README): `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export BCC_KERNEL_SOURCE ?= $(CURDIR)/.build/kernel-headers

.PHONY: setup demo test test-pure lint-imports clean-kernel

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
