"""What the seed's container images do on the network, as pure data and functions.

The twin predicts answers from these definitions and the real side serves
them (``harness/apps/server.py`` runs :func:`respond` inside the pod), so an
application's behaviour is written once.

| image contains      | app        | listens                 | behaves like |
|---------------------|------------|-------------------------|--------------|
| traefik/whoami      | whoami     | TCP 80 (HTTP)           | traefik/whoami: echoes hostname, IPs, request |
| cilium/starwars     | deathstar  | TCP 80 (HTTP)           | the Star Wars demo API |
| twin/echo           | echo       | TCP 80, 8080 (HTTP); UDP 53, 5353 (echo) | test peer of the differential tests |
| anything else       | none       | nothing (netshoot, netperf clients) | |

The external host on the node LAN (the seed's 8.8.8.8 / wttr.in) runs
``EXTERNAL_APP`` on TCP 80 and answers ping.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    name: str
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()


APPS = {
    "whoami": App("whoami", (80,)),
    "deathstar": App("deathstar", (80,)),
    "echo": App("echo", (80, 8080), (53, 5353)),
    "none": App("none"),
}
_IMAGES = (("traefik/whoami", "whoami"), ("cilium/starwars", "deathstar"), ("twin/echo", "echo"))


#: What the external host serves, and its hostname in answers.
EXTERNAL_APP = App("echo", (80,))
EXTERNAL_HOSTNAME = "external"


def app_for_image(image: str) -> App:
    for pattern, name in _IMAGES:
        if pattern in image:
            return APPS[name]
    return APPS["none"]


def app_of_pod(pod) -> App:
    for c in pod.containers:
        app = app_for_image(c.image)
        if app.name != "none":
            return app
    return APPS["none"]


DEATHSTAR_API = """{
        "name": "Death Star",
        "hostname": "%s",
        "model": "DS-1 Orbital Battle Station",
        "manufacturer": "Imperial Department of Military Research, Sienar Fleet Systems",
        "cost_in_credits": "1000000000000",
        "length": "120000",
        "crew": "342953",
        "passengers": "843342",
        "cargo_capacity": "1000000000000",
        "hyperdrive_rating": "4.0",
        "starship_class": "Deep Space Mobile Battlestation",
        "api": [
                "GET   /v1",
                "GET   /v1/healthz",
                "POST  /v1/request-landing",
                "PUT   /v1/cargobay",
                "GET   /v1/hyper-matter-reactor/status",
                "PUT   /v1/exhaust-port"
        ]
}
"""


def respond(app: str, hostname: str, method: str, path: str, headers: dict, local_ips: list[str],
            remote: str) -> tuple[int, str]:
    """HTTP status and body an app returns for one request."""
    if app == "whoami":
        lines = [f"Hostname: {hostname}"] + [f"IP: {ip}" for ip in local_ips] + [f"RemoteAddr: {remote}",
                                                                                   f"{method} {path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return 200, "\n".join(lines) + "\n"
    if app == "deathstar":
        route = (method, path.rstrip("/") or "/")
        if route == ("GET", "/v1"):
            return 200, DEATHSTAR_API % hostname
        if route == ("GET", "/v1/healthz"):
            return 200, "OK\n"
        if route == ("POST", "/v1/request-landing"):
            return 200, "Ship landed\n"
        if route == ("PUT", "/v1/cargobay"):
            return 200, "Cargo bay full\n"
        if route == ("GET", "/v1/hyper-matter-reactor/status"):
            return 200, "Status: Online\n"
        if route == ("PUT", "/v1/exhaust-port"):
            return 503, "Panic: deathstar exploded\n\ngoroutine 1 [running]:\nmain.HandleGarbage(0x2080c3f50, 0x2, 0x4, 0x425c0, 0x5, 0xa)\n        /code/src/github.com/empire/deathstar/\n        temp/main.go:9 +0x64\nmain.main()\n        /code/src/github.com/empire/deathstar/\n        temp/main.go:5 +0x85\n"
        return 404, "404 page not found\n"
    if app == "echo":
        return 200, f"echo {hostname} {method} {path}\n"
    raise ValueError(f"app {app!r} serves no HTTP")


def udp_reply(hostname: str, payload: bytes) -> bytes:
    """The echo app's answer to a datagram: the payload, then ``|`` and its hostname
    (so a client behind socket LB can tell which backend answered)."""
    return payload + b"|" + hostname.encode()


#: Body of Cilium's proxy answer to an HTTP request an L7 rule denies.
L7_DENIED_BODY = "Access denied\n"
