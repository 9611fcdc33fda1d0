"""Kept for the harness runner: the analytical kill predictions now live in the
semantics (:func:`twin.semantics.endpoints.kill_predictions`)."""
from __future__ import annotations

from twin.semantics.endpoints import kill_predictions as predictions

__all__ = ["predictions"]
