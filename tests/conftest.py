"""Test-suite wide settings.

* The seed of the differential tier's generated cases: ``HYPOTHESIS_SEED``
  from the environment, else a fresh one, exported so that every test module
  reads the same value (``tests/harness/diffkit.py``).  It is printed in the
  header and in the summary; ``HYPOTHESIS_SEED=N make test`` replays a run.
  ``SOAK=1`` (``make soak``) runs ten times more cases.
* Hypothesis profiles: ``default`` is Hypothesis's own; ``soak`` is loaded by
  ``SOAK=1`` and only drops the per-example deadline (the differential tests
  set their example counts themselves, scaled by ``SOAK``).
* A summary section "differential" with one line per differential test:
  cases, probes, drops, seed and wall time (the ``differential_log`` fixture).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

if not os.environ.get("HYPOTHESIS_SEED", "").strip():
    os.environ["HYPOTHESIS_SEED"] = str(int.from_bytes(os.urandom(4), "big"))
SOAK = os.environ.get("SOAK", "") not in ("", "0")

settings.register_profile("soak", deadline=None)
if SOAK:
    settings.load_profile("soak")

_LINES = pytest.StashKey[list]()


def pytest_configure(config):
    try:
        int(os.environ["HYPOTHESIS_SEED"])
    except ValueError:
        raise pytest.UsageError(f"HYPOTHESIS_SEED={os.environ['HYPOTHESIS_SEED']!r}: must be an integer") from None
    config.stash[_LINES] = []


def pytest_report_header(config):
    seed = os.environ["HYPOTHESIS_SEED"]
    return (f"differential seed: {seed}{' (soak: 10x cases)' if SOAK else ''}; "
            f"replay with HYPOTHESIS_SEED={seed} make test")


@pytest.fixture(scope="session")
def differential_log(pytestconfig) -> list:
    """Differential tests append their one-line result here; the summary prints them."""
    return pytestconfig.stash[_LINES]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_LINES, [])
    seed = os.environ.get("HYPOTHESIS_SEED")
    if lines:
        terminalreporter.section("differential")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"replay: HYPOTHESIS_SEED={seed} make test"
                                    + (" (with SOAK=1)" if SOAK else ""))
