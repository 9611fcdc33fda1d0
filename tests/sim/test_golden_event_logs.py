"""Sim tier, golden files: the twin's full observation log for each seed scenario at seed 1.

One JSON line per record (the event log first, then flows, requests, holds,
syscalls, kills, predictions and the virtual duration), compared exactly with
``tests/sim/golden/<scenario>.jsonl``.  Any change to the twin's behaviour —
a delay, a component, a draw — shows up here as a diff to review like code;
after an intended change regenerate with ``UPDATE_GOLDEN=1``.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from simhelp import SEED_SCENARIOS, inputs, without_wall
from twin.sim import TwinBackend

pytestmark = pytest.mark.sim
GOLDEN = Path(__file__).with_name("golden")
SEED = 1


def log_lines(name: str) -> list[str]:
    d = without_wall(TwinBackend().run(inputs(name), SEED).as_dict())
    lines = []
    for section, record in (("events", "event"), ("flows", "flow"), ("traffic", "request"), ("holds", "hold"),
                            ("syscalls", "syscalls"), ("kills", "kill"), ("predictions", "prediction")):
        lines += [json.dumps({"record": record, **r}, sort_keys=True, ensure_ascii=False) for r in d[section]]
    lines.append(json.dumps({"record": "end", "virtual_seconds": d["virtual_seconds"]}))
    return lines


@pytest.mark.parametrize("name", SEED_SCENARIOS)
def test_twin_observation_log_equals_the_golden_file(name):
    path = GOLDEN / f"{name}.jsonl"
    text = "\n".join(log_lines(name)) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    want = path.read_text()
    if text != want:
        diff = difflib.unified_diff(want.splitlines(), text.splitlines(), str(path), "this run", lineterm="", n=1)
        pytest.fail(f"{name}: the twin's log differs from {path.name} (UPDATE_GOLDEN=1 to accept):\n"
                    + "\n".join(list(diff)[:40]))
