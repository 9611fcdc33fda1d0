"""Field schemas of the supported kinds, and a strict validator over them.

A schema is plain data: a ``dict`` maps field names to schemas (``"*"`` admits
any other key), a one-element ``list`` is a list of that schema, and a string
names a scalar type: ``str``, ``int``, ``bool``, ``intstr`` (int or string),
``strmap`` (map of strings), ``any`` (not checked), or ``unsupported`` (a field
Cilium accepts that this twin does not model: rejected with a clear error).
"""
from __future__ import annotations

from typing import Any, Iterator

UNSUPPORTED = "unsupported"

META = {
    "name": "str", "namespace": "str", "labels": "strmap", "annotations": "strmap",
    "generateName": "str", "uid": "any", "resourceVersion": "any", "creationTimestamp": "any",
    "generation": "any", "managedFields": "any", "ownerReferences": "any", "finalizers": "any",
}
SELECTOR = {
    "matchLabels": "strmap",
    "matchExpressions": [{"key": "str", "operator": "str", "values": ["str"]}],
}
CONTAINER = {
    "name": "str", "image": "str", "command": ["str"], "args": ["str"],
    "ports": [{"containerPort": "int", "name": "str", "protocol": "str", "hostPort": "int", "hostIP": "str"}],
    "readinessProbe": {
        "httpGet": {"path": "str", "port": "intstr", "scheme": "str", "host": "str", "httpHeaders": "any"},
        "tcpSocket": {"port": "intstr", "host": "str"},
        "exec": UNSUPPORTED, "grpc": UNSUPPORTED,
        "periodSeconds": "int", "timeoutSeconds": "int", "failureThreshold": "int",
        "successThreshold": "int", "initialDelaySeconds": "int", "terminationGracePeriodSeconds": "int",
    },
    "env": "any", "envFrom": "any", "resources": "any", "livenessProbe": "any",
    "startupProbe": "any", "imagePullPolicy": "str", "securityContext": "any", "volumeMounts": "any",
    "workingDir": "str", "stdin": "bool", "tty": "bool", "lifecycle": "any",
    "terminationMessagePath": "str", "terminationMessagePolicy": "str",
}
AFFINITY_TERM = {"labelSelector": SELECTOR, "topologyKey": "str", "namespaces": ["str"],
                 "namespaceSelector": SELECTOR, "matchLabelKeys": ["str"], "mismatchLabelKeys": ["str"]}
AFFINITY = {
    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [AFFINITY_TERM],
                        "preferredDuringSchedulingIgnoredDuringExecution": "any"},
    "podAffinity": "any", "nodeAffinity": "any",
}
TOLERATION = {"key": "str", "operator": "str", "value": "str", "effect": "str", "tolerationSeconds": "int"}
POD_SPEC = {
    "nodeName": "str", "containers": [CONTAINER], "initContainers": [CONTAINER],
    "terminationGracePeriodSeconds": "int", "affinity": AFFINITY, "tolerations": [TOLERATION],
    "nodeSelector": "strmap", "serviceAccountName": "str", "serviceAccount": "str",
    "restartPolicy": "str", "hostNetwork": "bool", "volumes": "any", "securityContext": "any",
    "dnsPolicy": "str", "schedulerName": "str", "priority": "any", "priorityClassName": "str",
    "automountServiceAccountToken": "bool", "hostname": "str", "subdomain": "str",
    "enableServiceLinks": "bool", "topologySpreadConstraints": "any", "imagePullSecrets": "any",
}
TOP = {"apiVersion": "str", "kind": "str", "metadata": META}

PORT_RULE = {
    "ports": [{"port": "intstr", "endPort": "int", "protocol": "str"}],
    "rules": {
        "http": [{"method": "str", "path": "str", "host": "str", "headers": ["str"],
                  "headerMatches": UNSUPPORTED}],
        "dns": UNSUPPORTED, "kafka": UNSUPPORTED, "l7proto": UNSUPPORTED, "l7": UNSUPPORTED,
    },
    "terminatingTLS": UNSUPPORTED, "originatingTLS": UNSUPPORTED, "serverNames": UNSUPPORTED,
    "listener": UNSUPPORTED,
}
INGRESS = {
    "fromEndpoints": [SELECTOR], "fromEntities": ["str"], "toPorts": [PORT_RULE],
    "fromCIDR": UNSUPPORTED, "fromCIDRSet": UNSUPPORTED, "fromRequires": UNSUPPORTED,
    "fromGroups": UNSUPPORTED, "fromNodes": UNSUPPORTED, "icmps": UNSUPPORTED,
    "authentication": UNSUPPORTED,
}
EGRESS = {
    "toEndpoints": [SELECTOR], "toEntities": ["str"], "toPorts": [PORT_RULE],
    "toCIDR": UNSUPPORTED, "toCIDRSet": UNSUPPORTED, "toRequires": UNSUPPORTED,
    "toFQDNs": UNSUPPORTED, "toServices": UNSUPPORTED, "toGroups": UNSUPPORTED,
    "toNodes": UNSUPPORTED, "icmps": UNSUPPORTED, "authentication": UNSUPPORTED,
}
CNP_RULE = {
    "endpointSelector": SELECTOR, "nodeSelector": SELECTOR,
    "ingress": [INGRESS], "ingressDeny": [INGRESS], "egress": [EGRESS], "egressDeny": [EGRESS],
    "description": "str", "labels": "any",
    "enableDefaultDeny": {"ingress": "bool", "egress": "bool"},
}
IP_BLOCK = {"cidr": "str", "start": "str", "stop": "str"}

KINDS: dict[tuple[str, str], dict] = {
    ("v1", "Namespace"): {**TOP, "spec": "any", "status": "any"},
    ("v1", "Node"): {**TOP, "spec": {
        "podCIDR": "str", "podCIDRs": ["str"], "unschedulable": "bool", "providerID": "str",
        "taints": [{"key": "str", "value": "str", "effect": "str", "timeAdded": "any"}],
    }, "status": {"addresses": [{"type": "str", "address": "str"}], "*": "any"}},
    ("v1", "Pod"): {**TOP, "spec": POD_SPEC, "status": {"podIP": "str", "*": "any"}},
    ("apps/v1", "Deployment"): {**TOP, "spec": {
        "replicas": "int", "selector": SELECTOR, "template": {"metadata": META, "spec": POD_SPEC},
        "strategy": "any", "minReadySeconds": "int", "revisionHistoryLimit": "int",
        "progressDeadlineSeconds": "int", "paused": "bool",
    }, "status": "any"},
    ("v1", "Service"): {**TOP, "spec": {
        "type": "str", "selector": "strmap", "clusterIP": "str", "clusterIPs": ["str"],
        "ports": [{"name": "str", "port": "int", "targetPort": "intstr", "protocol": "str",
                   "nodePort": "int", "appProtocol": "str"}],
        "externalIPs": ["str"], "loadBalancerIP": "str", "loadBalancerClass": "str",
        "externalTrafficPolicy": "str", "internalTrafficPolicy": "str", "sessionAffinity": "str",
        "sessionAffinityConfig": "any", "ipFamilies": "any", "ipFamilyPolicy": "str",
        "allocateLoadBalancerNodePorts": "bool", "publishNotReadyAddresses": "bool",
        "loadBalancerSourceRanges": ["str"],
    }, "status": "any"},
    ("cilium.io/v2", "CiliumNetworkPolicy"): {**TOP, "spec": CNP_RULE, "specs": [CNP_RULE], "status": "any"},
    ("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy"): {**TOP, "spec": {
        "serviceSelector": SELECTOR, "nodeSelector": SELECTOR, "interfaces": ["str"],
        "externalIPs": "bool", "loadBalancerIPs": "bool",
    }, "status": "any"},
    ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"): {**TOP, "spec": {
        "blocks": [IP_BLOCK], "cidrs": [IP_BLOCK], "allowFirstLastIPs": "str",
        "serviceSelector": SELECTOR, "disabled": "bool",
    }, "status": "any"},
}
# cilium.io/v2 also serves the LB-IPAM pool in newer releases.
KINDS[("cilium.io/v2", "CiliumLoadBalancerIPPool")] = KINDS[("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool")]

_TYPES = {"str": (str,), "int": (int,), "bool": (bool,), "intstr": (int, str)}


def fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def check(data: Any, schema: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Yield (path, message) for every value that does not fit the schema."""
    if schema == "any":
        return
    if schema == UNSUPPORTED:
        yield path, "is a valid Cilium field that this twin does not model yet; remove it or file an issue"
        return
    if isinstance(schema, str):
        if schema == "strmap":
            if not isinstance(data, dict):
                yield path, f"must be a map of strings, got {type(data).__name__} {data!r}"
                return
            for k, v in data.items():
                if not isinstance(v, str):
                    yield path + (k,), f"must be a string (quote it), got {type(v).__name__} {v!r}"
            return
        want = _TYPES[schema]
        if isinstance(data, bool) and bool not in want:
            yield path, f"must be {schema}, got bool {data!r}"
        elif not isinstance(data, want):
            yield path, f"must be {schema}, got {type(data).__name__} {data!r}"
        return
    if isinstance(schema, list):
        if not isinstance(data, list):
            yield path, f"must be a list, got {type(data).__name__} {data!r}"
            return
        for i, item in enumerate(data):
            yield from check(item, schema[0], path + (i,))
        return
    if not isinstance(data, dict):
        yield path, f"must be an object, got {type(data).__name__} {data!r}"
        return
    for k, v in data.items():
        if k in schema:
            if v is None:
                continue
            yield from check(v, schema[k], path + (k,))
        elif "*" in schema:
            continue
        else:
            yield path + (k,), f"unknown field {k!r}"
