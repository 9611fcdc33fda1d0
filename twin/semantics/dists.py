"""Named, parameterised distributions of delays (pure).

Every delay of the twin is one of these.  Each reports its ``kind`` and
``params()`` (so a run's delays can be printed and compared), draws with
``sample(rng)`` from a ``random.Random`` the caller owns (each twin component
owns its own stream), and gives ``bounds()``: the interval the analytical
predictions in :mod:`twin.semantics.endpoints` use.  Bounded distributions
give their support; an unbounded one gives its central ``1 - 2 * TAIL``
interval and says so.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Union

#: Probability mass left out on each side by ``bounds()`` of an unbounded distribution.
TAIL = 1e-4


@dataclass(frozen=True)
class Constant:
    """Always ``value`` seconds; draws nothing from the stream."""

    value: float

    kind = "constant"

    def __post_init__(self):
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"constant delay must be a finite number ≥ 0, got {self.value!r}")

    def sample(self, rng: random.Random) -> float:
        return self.value

    def bounds(self) -> tuple[float, float]:
        return (self.value, self.value)

    def params(self) -> dict:
        return {"value": self.value}


@dataclass(frozen=True)
class Uniform:
    """Uniform in [lo, hi] seconds (one draw)."""

    lo: float
    hi: float

    kind = "uniform"

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and 0 <= self.lo <= self.hi):
            raise ValueError(f"uniform delay needs 0 ≤ lo ≤ hi, got [{self.lo!r}, {self.hi!r}]")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.lo, self.hi)

    def bounds(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def params(self) -> dict:
        return {"lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class LogNormal:
    """Log-normal given by its median and 99th percentile (how latencies are usually
    reported); unbounded, so ``bounds()`` is the central ``1 - 2 * TAIL`` interval."""

    median: float
    p99: float

    kind = "lognormal"

    def __post_init__(self):
        if not (0 < self.median < self.p99 and math.isfinite(self.p99)):
            raise ValueError(f"lognormal delay needs 0 < median < p99, got {self.median!r}, {self.p99!r}")

    @property
    def mu(self) -> float:
        return math.log(self.median)

    @property
    def sigma(self) -> float:
        return (math.log(self.p99) - self.mu) / NormalDist().inv_cdf(0.99)

    def quantile(self, q: float) -> float:
        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q))

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(self.mu, self.sigma)

    def bounds(self) -> tuple[float, float]:
        return (self.quantile(TAIL), self.quantile(1 - TAIL))

    def params(self) -> dict:
        return {"median": self.median, "p99": self.p99, "bounds_tail": TAIL}


@dataclass(frozen=True)
class Empirical:
    """One of the measured ``samples`` (seconds), each equally likely."""

    samples: tuple[float, ...]

    kind = "empirical"

    def __post_init__(self):
        if not self.samples or any(not (math.isfinite(s) and s >= 0) for s in self.samples):
            raise ValueError("empirical delay needs at least one finite sample ≥ 0")

    def sample(self, rng: random.Random) -> float:
        return self.samples[rng.randrange(len(self.samples))]

    def bounds(self) -> tuple[float, float]:
        return (min(self.samples), max(self.samples))

    def params(self) -> dict:
        s = sorted(self.samples)
        return {"n": len(s), "min": s[0], "median": s[len(s) // 2], "max": s[-1]}


Dist = Union[Constant, Uniform, LogNormal, Empirical]


def describe(dist: Dist) -> dict:
    """``{"dist": kind, **params}`` — how a distribution is reported."""
    return {"dist": dist.kind, **dist.params()}
