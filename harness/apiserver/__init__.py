"""The control plane of the L2 scenarios: etcd and the Lease API in the topology's apiserver host.

* :mod:`harness.apiserver.server` -- the HTTP server (the served API subset is in its docstring);
* :mod:`harness.apiserver.etcd` -- starting and stopping Debian's etcd in a namespace;
* :mod:`harness.apiserver.control` -- :class:`ControlPlane`, both together for a run.
"""
