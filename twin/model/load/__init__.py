"""Loading manifests and values into a :class:`~twin.model.objects.Cluster`.

Pure: callers read files and pass :class:`~twin.model.yamlsrc.Source` texts.
Validation is strict and complete: every error found is reported (file,
object, field path, value, line), and a cluster is only returned when there
are none.

Modules, in the order a load runs through them:

- ``documents``: parse and dispatch documents by kind; expand Deployments
- ``nodes``, ``pods``, ``services``, ``policies``, ``l2``: one module per kind
- ``values``: Helm values and Go durations
- ``placement``: scheduling, pod and service address allocation
- ``cluster``: the entry points (``build_cluster``, ``parse_policy_source``)
(the explicit size limits on inputs are in :mod:`twin.model.limits`)
"""
from twin.model.load.cluster import build_cluster, parse_policy_source
from twin.model.load.documents import load_documents
from twin.model.load.values import build_values, parse_duration

__all__ = ["build_cluster", "parse_policy_source", "load_documents", "build_values", "parse_duration"]
