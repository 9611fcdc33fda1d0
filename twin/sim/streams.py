"""One seeded random stream per component.

A component's stream is derived from (run seed, component kind, component
name) only, so adding a component or changing another component's
parameters never shifts its draws: a what-if changes what it changes and
nothing else.  ``random.Random`` seeded with a string hashes it with SHA-512,
which does not depend on ``PYTHONHASHSEED``.
"""
from __future__ import annotations

import random


def stream(seed: int, kind: str, name: str) -> random.Random:
    return random.Random(f"{seed}:{kind}:{name}")
