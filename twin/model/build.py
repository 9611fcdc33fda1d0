"""Compatibility re-export: the loader now lives in :mod:`twin.model.load`."""
from __future__ import annotations

from twin.model.load.cluster import build_cluster, parse_policy_source
from twin.model.load.context import Ctx as _Ctx, Pending as _Pending
from twin.model.load.documents import DNS1123, collect as _collect, load_documents
from twin.model.load.policies import ENTITIES, PROTOCOLS, build_policy
from twin.model.load.selectors import OPERATORS, parse_selector, selector_matches
from twin.model.load.values import VALUES_SCHEMA, build_values, parse_duration

__all__ = ["build_cluster", "parse_policy_source", "load_documents", "build_values", "parse_duration",
           "build_policy", "parse_selector", "selector_matches", "DNS1123", "OPERATORS", "PROTOCOLS",
           "ENTITIES", "VALUES_SCHEMA", "_Ctx", "_Pending", "_collect"]
