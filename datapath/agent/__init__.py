"""The node agent: one per node, the real side's control loop.

* :mod:`datapath.agent.store`        desired state, versions, and the watch interface
* :mod:`datapath.agent.tables`       the node's tables, computed by the semantics
* :mod:`datapath.agent.reconcilers`  one reconciler per concern (endpoints, ipcache,
                                     policy, services)
* :mod:`datapath.agent.agent`        ``NodeAgent``: owns its node's programs and
                                     maps, watches, reconciles, reports
* :mod:`datapath.agent.l2announcer`  the node's elector process (L2 announcements:
                                     client-go leader election per Lease)
"""
from datapath.agent.agent import L2_LEASES, AgentError, AgentReport, L2Config, NodeAgent
from datapath.agent.reconcilers import NodeHost, Reconciler
from datapath.agent.store import CLUSTER, ENDPOINT_STATES, DesiredState, Store, Watch, WatchSource
from datapath.agent.tables import ClusterTables, TableCache

__all__ = ["AgentError", "AgentReport", "NodeAgent", "L2Config", "L2_LEASES", "NodeHost", "Reconciler", "CLUSTER", "ENDPOINT_STATES",
           "DesiredState", "Store", "Watch", "WatchSource", "ClusterTables", "TableCache"]
