"""L2 announcements in the twin: the Lease API, one elector per (node, lease), the
agent's ARP responder and gratuitous ARP, the LAN's faults, the external host's
ARP cache, and the consistency check.

Components (each with its own random stream and named delays from
:mod:`twin.semantics.delays`):

* :class:`LeaseApi` (``lease-api``): ``coordination.k8s.io/v1`` Leases with a
  ``resourceVersion``; Get / Create / Update, 409 on a stale version or an
  existing name.  One server (a SimPy ``Resource``): requests queue while it
  is busy (``api-lease-read`` / ``api-lease-write`` service time).  A request
  travels ``lease-request-rtt / 2`` each way on one of the node's kept-alive
  connections (:class:`Conn`, urllib3's LIFO pool of the process's one
  ApiClient) and is lost when that connection's packets do not get through
  at that moment (:meth:`Lan.conn_ok`: partition, crash, or the interface it
  was opened on is down — a connection opened over the LAN keeps the LAN
  source address, so with the backup path its re-routed requests get no
  reply); the elector then times out, the client drops the connection, and
  the next request opens a new one over the path that is up.
* :class:`Elector` (``elector``, ``<node>/<lease>``): client-go's algorithm
  driven through :class:`twin.semantics.election.ElectorCore`, as the real
  agents (``datapath.agent.l2announcer``) drive it: candidate loop with
  ``candidate_wait``; holder renewal at once after acquiring and then
  ``holder_wait`` after each renewal returned, each renewal attempting on a
  ``retry_period`` poll timer re-armed at each attempt (apimachinery's
  non-sliding ``loopConditionUntilContext``: a timer that fired during an
  attempt fires right after it) until it succeeds or ``renew_deadline`` has
  passed (lost at the deadline; candidate again, keeping its observed
  record).  Every request
  takes a token from the agent's :class:`~twin.semantics.election.TokenBucket`
  (shared by the node's electors); during a renewal a token that would come
  after the deadline is given back and the attempt fails at once (also when
  the deadline passed while waiting: no request); a renewal's request times
  out at the deadline, a candidate's after ``renew_deadline``.  A fresh
  elector process starts its electors one after another and its first API
  calls warm the client up (``elector-client-warmup``, ``elector-start-second``,
  ``elector-thread-gap``: measured from the real electors' start events).
* :class:`NodeL2` (``l2agent``, per node): watches the API server (after
  ``agent-regenerate``) for the announcements (:func:`twin.semantics.l2.announcements`)
  and runs an elector per announced service this node is a candidate for.
  On acquiring: program the responder (``responder-program``) for the
  service's IPs on the selected interfaces, then send one gratuitous ARP per
  IP and interface (``garp-send``); with the ``responder-missing`` fault
  neither happens.  On losing: withdraw the responder.  Map writes of one
  node are serialised.
* :class:`ExternalHost` (``external``): the Linux neighbour table of the host on
  the LAN (see its docstring), and the source of ``from: external`` traffic
  and ``arping``.

Faults (``fault`` steps) change :class:`Lan`: ``partition``/``heal`` cut/restore
the node's API paths, ``agent-kill`` stops its electors and its agent's
updates (responder entries and LB maps stay), ``node-crash`` also makes the
node drop every frame, ``nic-down`` downs its LAN interface (the API stays
reachable over the backup path when the scenario has one).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import simpy

from twin.model import apps
from twin.model.enums import Direction, Protocol
from twin.model.observations import ArpObservation, FaultRecord, L2Check, LeaseTransition, RequestRecord
from twin.model.scenario import Traffic, service_key
from twin.model.topology import EXTERNAL_HOST_IP
from twin.semantics.election import ElectorCore, LeaseRecord, TokenBucket
from twin.semantics.failover import DELAY_FIRST_PROBE_S, LOCKTIME_S, MCAST_SOLICIT, RETRANS_S, SYN_RTO_S, UCAST_SOLICIT
from twin.semantics.l2 import election_params, lease_name
from twin.semantics.lb import choose, frontend
from twin.semantics.northsouth import north_south_path
from twin.sim.client import request_loop
from twin.sim.world import Component, World

#: ``arping`` sends one who-has per second (iputils arping's default interval)
ARPING_INTERVAL_S = 1.0
#: the kernel redraws ``reachable_time`` from ``base_reachable_time`` every 300 s (neigh_periodic_work)
REACHABLE_REDRAW_S = 300.0


class Lan:
    """Which nodes are up, reachable from the API server, and whose LAN interface is up."""

    def __init__(self, backup_path: bool):
        self.backup_path = backup_path
        self.partitioned: set[str] = set()
        self.crashed: set[str] = set()
        self.nic_down: set[str] = set()

    def lan_up(self, node: str) -> bool:
        """The node sends and receives frames on its LAN interface."""
        return node not in self.crashed and node not in self.nic_down

    def api_reachable(self, node: str) -> bool:
        if node in self.crashed or node in self.partitioned:
            return False
        return node not in self.nic_down or self.backup_path

    def route(self, node: str) -> str:
        """The path a NEW connection from ``node`` to the API server takes: ``lan`` while
        its LAN interface is up, else ``backup`` when the scenario has the backup path."""
        return "backup" if node in self.nic_down and self.backup_path else "lan"

    def conn_ok(self, node: str, conn: "Conn") -> bool:
        """A packet of ``conn`` gets through (both ways) now.  A connection opened over the
        LAN keeps the LAN interface's source address: when that interface is down its
        packets are re-routed over the backup path but the server's replies go to the LAN
        address and are lost, so only connections opened over a path that is up work."""
        if node in self.crashed or node in self.partitioned:
            return False
        if conn.path == "lan":
            return node not in self.nic_down
        return self.backup_path


@dataclass
class Conn:
    """One kept-alive HTTP connection of a node's API client, with the path (source
    address) it was opened on."""

    path: str
    n: int


@dataclass
class Reply:
    status: str  # ok | notfound | conflict | timeout | throttled
    record: LeaseRecord | None = None
    rv: int = 0


class LeaseApi(Component):
    """The Lease subset of the API server (see the module docstring)."""

    kind = "lease-api"

    def __init__(self, world: World, lan: Lan):
        super().__init__(world, "apiserver")
        self.lan = lan
        self.server = simpy.Resource(self.env, capacity=1)
        self.leases: dict[str, tuple[LeaseRecord, int]] = {}
        self.transitions: dict[str, int] = {}
        self.on_write = []  # callbacks (lease) after every write

    def holder(self, lease: str) -> str | None:
        rec = self.leases.get(lease)
        return rec[0].holder if rec and rec[0].holder else None

    def request(self, node: str, conn: Conn, new: bool, rng, delays, op: str, lease: str, timeout: float,
                record: LeaseRecord | None = None, rv: int = 0):
        """One request from ``node``'s elector on connection ``conn`` (``new``: not yet
        connected, a TCP handshake first); returns a :class:`Reply` (``timeout`` when no
        answer came within ``timeout``: the server may still have executed it)."""
        done = self.env.event()
        connect = delays.lan_one_way.sample(rng) * 2 if new else 0.0
        self.env.process(self._serve(node, conn, connect, delays.lease_request.sample(rng), op, lease, record, rv,
                                     done))
        res = yield done | self.env.timeout(max(0.0, timeout))
        return done.value if done in res else Reply("timeout")

    def _serve(self, node, conn, connect, rtt, op, lease, record, rv, done):
        if connect:  # SYN out, SYN-ACK back over the connection's path
            if not self.lan.conn_ok(node, conn):
                return
            yield self.env.timeout(connect)
        if not self.lan.conn_ok(node, conn):
            return
        yield self.env.timeout(rtt / 2)
        if not self.lan.conn_ok(node, conn):
            return
        with self.server.request() as req:
            yield req
            svc = self.delays.api_lease_read if op == "get" else self.delays.api_lease_write
            yield self.env.timeout(svc.sample(self.rng))
            reply = self._execute(node, op, lease, record, rv)
        yield self.env.timeout(rtt / 2)
        if self.lan.conn_ok(node, conn):
            done.succeed(reply)

    def _execute(self, node, op, lease, record, rv) -> Reply:
        cur = self.leases.get(lease)
        if op == "get":
            return Reply("notfound") if cur is None else Reply("ok", cur[0], cur[1])
        if op == "create" and cur is not None:
            return Reply("conflict")
        if op == "update" and (cur is None or cur[1] != rv):
            return Reply("conflict")
        new_rv = 1 if cur is None else cur[1] + 1
        self.leases[lease] = (record, new_rv)
        previous = cur[0].holder if cur and cur[0].holder else None
        self.world.log("lease", lease=lease, op=op, holder=record.holder, rv=new_rv,
                       renew=previous == record.holder)
        if record.holder and record.holder != previous:
            i = self.transitions.get(lease, 0)
            self.transitions[lease] = i + 1
            self.world.obs.leases.append(LeaseTransition(lease, i, round(self.env.now, 6), record.holder, previous,
                                                         record.transitions))
        if record.holder != previous:  # a renewal changes nothing the consistency check looks at
            for cb in self.on_write:
                cb(lease)
        return Reply("ok", record, new_rv)


class Elector(Component):
    """One candidate for one Lease on one node (see the module docstring)."""

    kind = "elector"

    def __init__(self, agent: "NodeL2", lease: str, ips: tuple, interfaces: tuple, delay: float = 0.0):
        super().__init__(agent.world, f"{agent.node}/{lease}")
        self.delay = delay  # the elector process starts its threads one after another
        self.agent, self.lease, self.ips, self.interfaces = agent, lease, ips, interfaces
        self.params = agent.params
        self.core = ElectorCore(agent.node, agent.params)
        self.leading = False
        self.process = self.env.process(self._run())

    def stop(self) -> None:
        if self.process.is_alive:
            self.process.interrupt("stopped")

    def release(self):
        """client-go's ``ReleaseOnCancel`` (as the real elector does when its service is no
        longer announced): an Update with no holder and ``leaseDurationSeconds`` 1."""
        r = yield from self._call("get", None)
        if r.status == "ok" and r.record.holder == self.agent.node:
            rec = LeaseRecord("", 1, r.record.acquire_time, self.env.now, r.record.transitions)
            yield from self._call("update", None, rec, r.rv)

    def _run(self):
        env = self.env
        try:
            if self.delay > 0:
                yield env.timeout(self.delay)
            self.world.log("elector-started", node=self.agent.node, lease=self.lease)
            while True:
                while not (yield from self._attempt(None)):
                    yield env.timeout(self.core.candidate_wait(self.rng))
                self.leading = True
                self.agent.acquired(self)
                while (yield from self._renewal()):
                    yield env.timeout(self.core.holder_wait())
                self.leading = False
                self.agent.lost(self)
        except simpy.Interrupt:
            self.leading = False

    def _renewal(self):
        """One renewal (``PollImmediateUntil`` under the renew deadline): True if it succeeded."""
        env, rp = self.env, self.params.retry_period_s
        start = env.now
        deadline = start + self.params.renew_deadline_s
        fire = start + rp  # the poll timer, armed at the start; re-armed at each attempt (non-sliding)
        if (yield from self._attempt(deadline)):
            return True
        while True:
            if fire >= deadline:  # the context ends first
                yield env.timeout(max(0.0, deadline - env.now))
                return False
            if fire > env.now:
                yield env.timeout(fire - env.now)
            if env.now >= deadline:
                return False
            fire = env.now + rp
            if (yield from self._attempt(deadline)):
                return True

    def _attempt(self, deadline):
        """``tryAcquireOrRenew``: Get, decide with the core, Create/Update."""
        r = yield from self._call("get", deadline)
        if r.status not in ("ok", "notfound"):
            return False
        a = self.core.attempt(r.record, self.env.now)
        if a.write is None:
            return False
        w = yield from self._call("create" if a.create else "update", deadline, a.write, r.rv)
        if w.status != "ok":
            if w.status == "conflict":  # timeouts and throttling are logged where they happen
                self.world.log("lease-attempt-failed", node=self.agent.node, lease=self.lease, op="write",
                               status=w.status)
            return False
        self.core.written(a.write, self.env.now)
        return True

    def _call(self, op, deadline, record=None, rv=0):
        env, bucket = self.env, self.agent.bucket
        warm = self.agent.warm_until
        if warm is not None and env.now < warm and self is not self.agent.warming:
            # another thread's first call holds the interpreter lock: this one runs (and takes
            # its token) only when the warm-up ends, in an order the scheduler picks
            yield env.timeout(warm - env.now + self.delays.elector_thread_gap.sample(self.rng))
        wait = bucket.reserve(env.now)
        if deadline is not None and env.now + wait > deadline:
            bucket.cancel()
            self.world.log("lease-throttled", node=self.agent.node, lease=self.lease, op=op)
            return Reply("throttled")
        if wait > 0:
            yield env.timeout(wait)
        if deadline is not None and env.now >= deadline:  # the context ended while waiting: no request
            self.world.log("lease-throttled", node=self.agent.node, lease=self.lease, op=op)
            return Reply("throttled")
        timeout = (deadline - env.now) if deadline is not None else self.params.renew_deadline_s
        conn, new = self.agent.take_conn()
        r = yield from self.agent.l2.api.request(self.agent.node, conn, new, self.rng, self.delays, op, self.lease,
                                                 timeout, record, rv)
        warm = self.agent.warm_until
        if warm is not None and env.now < warm:  # the fresh process's client holds the interpreter lock
            yield env.timeout(warm - env.now + self.delays.elector_thread_gap.sample(self.rng))
        if r.status == "timeout":  # urllib3 closes a connection whose request failed
            self.world.log("lease-attempt-failed", node=self.agent.node, lease=self.lease, op=op, status="timeout",
                           path=conn.path)
        else:  # an answer (also 404/409) was read in full: the connection is kept alive
            self.agent.pool.append(conn)
        return r


class NodeL2(Component):
    """A node agent's L2 announcer: electors, responder map, gratuitous ARP."""

    kind = "l2agent"

    def __init__(self, l2: "L2", node: str):
        super().__init__(l2.world, node)
        self.l2, self.node = l2, node
        cluster = l2.twin.api.cluster
        self.params = election_params(cluster.values)
        self.bucket = TokenBucket(self.params.qps, self.params.burst, 0.0)
        # the process's one ApiClient: urllib3's pool of kept-alive connections, LIFO
        self.pool: list[Conn] = []
        self.opened = 0
        # a fresh elector process: its first API calls warm the client up (see _start_offsets)
        self.warm_until: float | None = None
        self.warming: Elector | None = None  # the thread whose first call warms the client up
        self.electors: dict[str, Elector] = {}
        self.responder: set[tuple[str, str]] = set()  # (ip, interface)
        self.handled: set[str] = set()  # leases whose acquisition the agent has finished handling
        self.dead = False
        self.responder_missing = False
        self.writer = simpy.Resource(self.env, capacity=1)
        self.inbox = simpy.Store(self.env)
        l2.twin.api.watchers.append(self)
        self._sync(cluster)
        self.env.process(self._watch())

    def notify(self, version, cluster, states) -> None:
        self.inbox.put(cluster)

    def _watch(self):
        while True:
            cluster = yield self.inbox.get()
            yield self.env.timeout(self.delays.agent_regenerate.sample(self.rng))
            if not self.dead:
                self._sync(cluster)

    def _sync(self, cluster) -> None:
        anns = self.l2.twin.api.views.view(cluster).announcements
        want = {}
        for key, a in anns.items():
            if a.announced and self.node in a.candidate_nodes:
                want[a.lease] = (tuple(str(ip) for ip in a.ips), a.interfaces[self.node])
        for lease in list(self.electors):
            if lease not in want:
                e = self.electors.pop(lease)
                leading = e.leading
                e.stop()
                self.world.log("elector-stopped", node=self.node, lease=lease)
                if leading:  # ReleaseOnCancel: withdraw, then give the Lease up
                    self.lost(e)
                    self.env.process(e.release())
        new = [lease for lease in sorted(want) if lease not in self.electors]
        fresh = self.warm_until is None
        for lease, offset in zip(new, self._start_offsets(len(new))):
            ips, ifaces = want[lease]
            self.electors[lease] = Elector(self, lease, ips, ifaces, offset)
            if fresh and self.warming is None:
                self.warming = self.electors[lease]

    def _start_offsets(self, n: int) -> list[float]:
        """When each of ``n`` new elector threads starts (``ElectorProcess.want``: one after
        another, in lease order).  In a fresh process the first thread's first request warms
        the API client up while holding the interpreter lock (``elector-client-warmup``): the
        main thread gets it back once (``elector-start-second``), then only when the warm-up
        ends; threads whose replies arrive meanwhile wait for it too."""
        out, t, rng, d = [], 0.0, self.rng, self.delays
        for k in range(n):
            if k == 0:
                if self.warm_until is None:
                    self.warm_until = self.env.now + d.elector_client_warmup.sample(rng)
            elif k == 1 and self.warm_until is not None and self.env.now < self.warm_until:
                t += d.elector_start_second.sample(rng)
            else:
                t = max(t, (self.warm_until or 0.0) - self.env.now) + d.elector_thread_gap.sample(rng)
            out.append(t)
        return out

    def take_conn(self) -> tuple[Conn, bool]:
        """A connection for one request: the most recently used idle one, or a new one
        opened over the route that is up now (True: it must connect first)."""
        if self.pool:
            return self.pool.pop(), False
        self.opened += 1
        return Conn(self.l2.lan.route(self.node), self.opened), True

    def kill(self) -> None:
        self.dead = True
        for e in self.electors.values():
            e.stop()

    def acquired(self, e: Elector) -> None:
        self.world.log("lease-acquired", node=self.node, lease=e.lease)
        self.env.process(self._announce(e))

    def lost(self, e: Elector) -> None:
        self.world.log("lease-lost", node=self.node, lease=e.lease)
        self.env.process(self._withdraw(e))

    def _announce(self, e: Elector):
        with self.writer.request() as req:
            yield req
            if self.dead:
                return
            if self.responder_missing:
                self.world.log("responder-not-programmed", node=self.node, lease=e.lease)
            else:
                yield self.env.timeout(self.delays.responder_program.sample(self.rng))
                self.responder |= {(ip, i) for ip in e.ips for i in e.interfaces}
                self.world.log("responder-programmed", node=self.node, lease=e.lease, ips=list(e.ips))
            self.handled.add(e.lease)
            self.l2.check(e.lease)
            if self.responder_missing:
                return
            yield self.env.timeout(self.delays.garp_send.sample(self.rng))
            for ip in e.ips:
                for iface in e.interfaces:
                    if iface == self.l2.lan_iface(self.node) and self.l2.lan.lan_up(self.node):
                        self.world.log("garp-sent", node=self.node, ip=ip, interface=iface)
                        self.l2.host.frame_garp(ip, self.node)

    def _withdraw(self, e: Elector):
        with self.writer.request() as req:
            yield req
            if self.dead:
                return
            yield self.env.timeout(self.delays.responder_program.sample(self.rng))
            self.responder -= {(ip, i) for ip in e.ips for i in e.interfaces}
            self.handled.discard(e.lease)
            self.world.log("responder-withdrawn", node=self.node, lease=e.lease)
            self.l2.check(e.lease)

    def answers_arp(self, ip: str) -> bool:
        """Whether this node's responder answers who-has ``ip`` arriving on its LAN interface."""
        return self.l2.lan.lan_up(self.node) and (ip, self.l2.lan_iface(self.node)) in self.responder


@dataclass
class Neigh:
    """One neighbour entry (``struct neighbour``) of the external host."""

    state: str = "none"  # none | incomplete | reachable | stale | delay | probe | failed
    node: str | None = None  # the MAC (as the node owning it)
    confirmed: float = -1e9
    used: float = -1e9
    updated: float = -1e9
    probes: int = 0
    gen: int = 0
    queue: list = field(default_factory=list)


class ExternalHost(Component):
    """The external host's ARP cache: the Linux neighbour state machine
    (``net/core/neighbour.c``, ``net/ipv4/arp.c``, 6.x), with the defaults of
    ``arp_tbl`` (``mcast_solicit`` 3, ``ucast_solicit`` 3, ``app_solicit`` 0,
    ``retrans_time`` 1 s, ``delay_first_probe_time`` 5 s, ``locktime`` 1 s) and
    ``base_reachable_time`` from the scenario:

    * **sending** (``neigh_resolve_output`` → ``__neigh_event_send``): REACHABLE,
      DELAY, PROBE send to the entry's MAC; STALE sends and becomes DELAY (timer
      ``delay_first_probe_time``); NONE/FAILED becomes INCOMPLETE (probes =
      ``ucast_solicit``, so ``arp_solicit`` broadcasts) and queues the packet;
      INCOMPLETE queues it.
    * **timer** (``neigh_timer_handler``): REACHABLE stays while
      ``now ≤ confirmed + reachable_time``, else DELAY if used within
      ``delay_first_probe_time``, else STALE; DELAY becomes REACHABLE if confirmed
      within ``delay_first_probe_time``, else PROBE (probes = 0: unicast to the
      old MAC); INCOMPLETE/PROBE send a probe every ``retrans_time`` and become
      FAILED after ``max_probes`` (PROBE: ``ucast_solicit``; INCOMPLETE:
      ``ucast + mcast``, starting at ``ucast``), dropping the queue.
    * **receiving ARP** (``arp_process``): an existing entry is always updated;
      a new one is created only with ``arp_accept`` and only for a gratuitous
      ARP or a reply.  ``override = now > updated + locktime || is_garp``;
      without override a different MAC on a valid entry is ignored (so the
      first of several back-to-back replies wins); ``updated`` is stamped only
      when the state or the MAC changes.  A unicast reply makes it
      REACHABLE (confirmed now); a request (a gratuitous ARP is a broadcast
      request with sender IP = target IP) or a broadcast reply makes it STALE.
      Resolving an INCOMPLETE entry sends its queue.  With ``garp: ignore`` an
      ARP filter drops gratuitous ARP before ``arp_process`` (the capture still
      records it).
    * **reachability confirmation**: an answered TCP request confirms the entry
      (``tcp_ack`` forward progress → ``dst_confirm_neigh``); a request with no
      answer confirms nothing.
    * ``reachable_time`` is one draw of ``U[0.5, 1.5]·base_reachable_time``,
      redrawn every 300 s (``neigh_periodic_work``).
    """

    kind = "external"

    def __init__(self, l2: "L2"):
        super().__init__(l2.world, "external")
        self.l2 = l2
        ext = l2.world.scenario.settings.external
        self.arp_accept, self.garp_mode, self.base = ext.arp_accept, ext.garp, ext.base_reachable_time_s
        self.reachable_time = self._draw_reachable()
        self.entries: dict[str, Neigh] = {}
        self.garps: dict[str, int] = {}
        self.env.process(self._redraw())

    def _draw_reachable(self) -> float:
        return self.rng.uniform(0.5 * self.base, 1.5 * self.base)

    def _redraw(self):
        while True:
            yield self.env.timeout(REACHABLE_REDRAW_S)
            self.reachable_time = self._draw_reachable()

    def _lan(self) -> float:
        return self.delays.lan_one_way.sample(self.rng)

    # -- the neighbour state machine --------------------------------------------------------

    def _set(self, ip: str, n: Neigh, state: str, timer: float | None) -> None:
        if n.state != state:  # the kernel stamps ``updated`` on every real change (not on no-ops)
            n.updated = self.env.now
            self.world.log("neigh", ip=ip, state=state, node=n.node)
        n.state = state
        n.gen += 1
        if timer is not None:
            gen = n.gen
            ev = self.env.timeout(max(timer, 0.01))
            ev.callbacks.append(lambda _ev: self._timer(ip, n, gen))

    def output(self, ip: str, send) -> None:
        """Send one packet to ``ip``: ``send(node)`` is called when the frame leaves for
        the MAC of ``node`` (now, or when the entry resolves); never if it is dropped."""
        now = self.env.now
        n = self.entries.setdefault(ip, Neigh())
        n.used = now
        if n.state in ("reachable", "delay", "probe"):
            send(n.node)
        elif n.state == "stale":
            self._set(ip, n, "delay", DELAY_FIRST_PROBE_S)
            send(n.node)
        elif n.state in ("none", "failed"):
            n.queue.append(send)
            n.probes = UCAST_SOLICIT
            n.updated = now
            self._set(ip, n, "incomplete", RETRANS_S)
            self._solicit(ip, n)
        else:  # incomplete
            n.queue.append(send)

    def confirm(self, ip: str) -> None:
        n = self.entries.get(ip)
        if n is not None:
            n.confirmed = self.env.now

    def _timer(self, ip: str, n: Neigh, gen: int) -> None:
        if gen != n.gen:
            return
        now, st = self.env.now, n.state
        nxt = None
        if st == "reachable":
            if now <= n.confirmed + self.reachable_time:
                nxt = n.confirmed + self.reachable_time - now
            elif now <= n.used + DELAY_FIRST_PROBE_S:
                self._set(ip, n, "delay", DELAY_FIRST_PROBE_S)
                return
            else:
                self._set(ip, n, "stale", None)
                return
            self._set(ip, n, "reachable", nxt)
            return
        if st == "delay":
            if now <= n.confirmed + DELAY_FIRST_PROBE_S:
                self._set(ip, n, "reachable", n.confirmed + self.reachable_time - now)
                return
            n.probes = 0
            n.updated = now
            self._set(ip, n, "probe", RETRANS_S)
        elif st in ("incomplete", "probe"):
            self._set(ip, n, st, RETRANS_S)
        else:
            return
        max_probes = UCAST_SOLICIT if n.state == "probe" else UCAST_SOLICIT + MCAST_SOLICIT
        if n.probes >= max_probes:
            n.queue.clear()
            self._set(ip, n, "failed", None)
            return
        self._solicit(ip, n)

    def _solicit(self, ip: str, n: Neigh) -> None:
        """``arp_solicit``: unicast to the entry's MAC while probes < ucast_solicit, else broadcast."""
        unicast = n.probes < UCAST_SOLICIT
        n.probes += 1
        targets = [n.node] if unicast else list(self.l2.nodes)
        self.world.log("arp-solicit", ip=ip, to=n.node if unicast else "broadcast")
        for node in targets:
            self._ask(ip, node, on_reply=lambda node_: self.rx_arp(ip, node_, "reply"))

    def _ask(self, ip: str, node: str, on_reply) -> None:
        """A who-has ``ip`` reaches ``node``; its responder answers after the LAN round trip."""
        there, back = self._lan(), self._lan()
        agent = self.l2.nodes.get(node)

        def arrive(_ev):
            if agent is not None and agent.answers_arp(ip):
                self.env.timeout(back).callbacks.append(lambda _e: on_reply(node))
        self.env.timeout(there).callbacks.append(arrive)

    def rx_arp(self, ip: str, node: str, kind: str) -> None:
        """``arp_process`` for an ARP from ``node``'s MAC about ``ip``: ``reply`` (unicast
        to us) or ``garp`` (a gratuitous broadcast request)."""
        now = self.env.now
        n = self.entries.get(ip)
        is_garp = kind == "garp"
        if n is None or n.state == "none":
            if not self.arp_accept:
                return
            n = self.entries.setdefault(ip, Neigh())
        override = now > n.updated + LOCKTIME_S or is_garp
        valid = n.state in ("reachable", "stale", "delay", "probe")
        if valid and n.node != node and not override:
            return
        new = "reachable" if kind == "reply" else "stale"
        was_incomplete = n.state == "incomplete"
        same = valid and n.node == node
        if n.node != node:
            self.world.log("neigh-lladdr", ip=ip, node=node, previous=n.node)
            n.updated = now
        n.node = node
        if new == "reachable":
            n.confirmed = now
            self._set(ip, n, "reachable", self.reachable_time)
        elif not same:
            # same address and a weaker state keep the entry as it is (neigh_update)
            self._set(ip, n, "stale", None)
        if was_incomplete:
            q, n.queue = n.queue, []
            for send in q:
                send(node)

    def frame_garp(self, ip: str, node: str) -> None:
        """A gratuitous ARP from ``node`` leaves now; it reaches us after the LAN."""
        def arrive(_ev):
            i = self.garps.get(ip, 0)
            self.garps[ip] = i + 1
            self.world.obs.arp.append(ArpObservation("garp", "garp", round(self.env.now, 6), ip, (node,), (), -1, i))
            self.world.log("garp-received", ip=ip, node=node, honoured=self.garp_mode == "honour")
            if self.garp_mode == "honour":
                self.rx_arp(ip, node, "garp")
        self.env.timeout(self._lan()).callbacks.append(arrive)

    # -- arping ------------------------------------------------------------------------------

    def arping(self, name: str, ip: str, count: int, step: int):
        """``arping -c count ip``: a broadcast who-has every second; who answered, in order."""
        seen: list[str] = []
        start = self.env.now
        for k in range(count):
            for node in self.l2.nodes:
                self._ask(ip, node, on_reply=lambda node_: (seen.append(node_), self.rx_arp(ip, node_, "reply")))
            yield self.env.timeout(ARPING_INTERVAL_S)
        nodes = tuple(dict.fromkeys(seen))
        self.world.obs.arp.append(ArpObservation(name, "arping", round(start, 6), ip, nodes, (), step))
        self.world.log("arping", arping=name, ip=ip, nodes=list(nodes))


class ExternalClient(Component):
    """A ``requests``/``loop`` step from the external host to a service's first LB IP."""

    kind = "client"

    def __init__(self, twin, name: str):
        super().__init__(twin.world, f"external/{name}")
        self.twin = twin
        self.l2: L2 = twin.l2

    def run_requests(self, t: Traffic):
        yield from request_loop(self.env, self.world, t, self._one)

    def start_loop(self, t: Traffic):
        return self.env.process(self.run_requests(t))

    def _one(self, t: Traffic, index: int):
        env, twin = self.env, self.twin
        timeout = self.world.scenario.settings.request_timeout_s
        svc = twin.api.cluster.service(service_key(t.dst))
        ips = twin.api.view.allocation.ips.get(svc.key, ())
        start = env.now
        base = dict(name=t.name, i=index, t=round(start, 6), service=svc.key)
        if not ips:
            yield env.timeout(timeout)
            return RequestRecord(**base, frontend=f"-:{t.port}", backend=None, outcome="timeout")
        ip = str(ips[0])
        base["frontend"] = f"{ip}:{t.port}"
        done = env.event()
        done.deadline = start + timeout
        k, s = 0, 0.0
        while s < timeout:  # the SYN and its retransmissions (1 s, then doubling) within the timeout
            env.timeout(s).callbacks.append(lambda _e: self.l2.host.output(ip, lambda node: self._frame(node, ip, t, done)))
            s += SYN_RTO_S * (2 ** k)
            k += 1
        res = yield done | env.timeout(timeout)
        if done in res:
            backend, outcome, status = done.value
            return RequestRecord(**base, backend=backend, outcome=outcome, status=status)
        return RequestRecord(**base, backend=None, outcome="timeout")

    def _frame(self, node: str, ip: str, t: Traffic, done) -> None:
        self.env.process(self._deliver(node, ip, t, done))

    def _deliver(self, node: str, ip: str, t: Traffic, done):
        """The SYN reaches ``node`` (the MAC the host's cache named): north-south path."""
        env, twin, lan, d = self.env, self.twin, self.l2.lan, self.delays
        yield env.timeout(d.lan_one_way.sample(self.rng))
        if not lan.lan_up(node):
            return
        agent = twin.agents[node]
        fe = frontend(agent.lb, ipaddress_of(ip), t.port, Protocol.TCP)
        be = choose(fe, self.rng) if fe is not None else None
        if be is None:
            return
        cluster = agent.cluster
        path = north_south_path(cluster, node, be.pod, EXTERNAL_HOST_IP)
        pod = cluster.pod(be.pod)
        if pod.node != node and not lan.lan_up(pod.node):
            return
        view = twin.agents[pod.node].view
        sid = view.ids.identity_of_ip(path.source_seen, pod.node)
        dec = view.engine.decide(view.ids.pod_identity(pod), Direction.INGRESS, sid, Protocol.TCP, be.port,
                                 (t.method, t.path) if t.kind == "http" else None)
        hop = 2 * d.net_cross_node.sample(self.rng) if path.snat else 2 * d.net_same_node.sample(self.rng)
        if not dec.forwarded:
            if dec.http_status:  # L7 denial: the proxy answers
                yield env.timeout(hop + d.lan_one_way.sample(self.rng))
                self._answered(done, ip, be.pod, "answered", dec.http_status)
            return
        if not self.world.servers.alive(be.pod):
            yield env.timeout(hop + d.lan_one_way.sample(self.rng))
            if lan.lan_up(node) and not done.triggered and env.now <= done.deadline:
                done.succeed((be.pod, "refused", None))
            return
        app = apps.app_of_pod(pod)
        status = None
        if t.kind == "http" and be.port in app.tcp_ports:
            status, _ = apps.respond(app.name, pod.name, t.method, t.path, {}, [str(pod.ip)],
                                     f"{path.source_seen}:0")
        yield env.timeout(3 * (hop + 2 * d.lan_one_way.sample(self.rng)) + d.server_answer.sample(self.rng))
        if not lan.lan_up(node) or (pod.node != node and not lan.lan_up(pod.node)):
            return
        self._answered(done, ip, be.pod, "answered", status)

    def _answered(self, done, ip, backend, outcome, status) -> None:
        """The answer reaches the host; after curl gave up (its socket is closed: the late
        SYN-ACK gets a RST) it neither counts nor confirms the ARP entry."""
        if not done.triggered and self.env.now <= done.deadline:
            self.l2.host.confirm(ip)
            done.succeed((backend, outcome, status))


def ipaddress_of(ip: str):
    import ipaddress
    return ipaddress.IPv4Address(ip)


class L2:
    """The L2 subsystem of one twin run (see the module docstring)."""

    def __init__(self, twin):
        self.twin, self.world, self.env = twin, twin.world, twin.env
        settings = self.world.scenario.settings
        self.lan = Lan(settings.api_backup_path)
        self.api = LeaseApi(self.world, self.lan)
        self.api.on_write.append(lambda lease: self.check(lease))
        self.host = ExternalHost(self)
        self.nodes: dict[str, NodeL2] = {}
        for n in twin.api.cluster.nodes:
            self.nodes[n.name] = NodeL2(self, n.name)
        self.seen: dict[str, L2Check] = {}

    def lan_iface(self, node: str) -> str:
        return self.twin.api.cluster.node(node).uplink

    def holder_of(self, service: str) -> tuple[str | None, str]:
        svc = self.twin.api.cluster.service(service)
        lease = lease_name(svc)
        return self.api.holder(lease), lease

    def fault(self, kind: str, node: str, step: int, lease: str | None) -> None:
        if node not in self.nodes:
            raise ValueError(f"fault {kind}: no node named {node!r}")
        self.world.obs.faults.append(FaultRecord(round(self.env.now, 6), kind, node, step, lease))
        self.world.log("fault", kind=kind, node=node, lease=lease)
        agent = self.nodes[node]
        if kind == "partition":
            self.lan.partitioned.add(node)
        elif kind == "heal":
            self.lan.partitioned.discard(node)
        elif kind in ("agent-kill", "node-crash"):
            agent.kill()
            self.twin.agents[node].dead = True
            if kind == "node-crash":
                self.lan.crashed.add(node)
        elif kind == "nic-down":
            self.lan.nic_down.add(node)
        elif kind == "responder-missing":
            agent.responder_missing = True
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.check()

    def arping(self, name: str, ip: str, count: int, step: int):
        yield from self.host.arping(name, ip, count, step)

    def check(self, only: str | None = None) -> None:
        """The consistency check: lease holders (as the API server says) against each
        live node's responder map and LAN interface.  One record per (problem, lease,
        node), with the time first seen.  It runs whenever something it compares
        changes (a holder, a responder map, a fault) and at every step boundary;
        ``only`` limits it to one lease."""
        now = round(self.env.now, 6)
        anns = self.twin.api.view.announcements
        by_lease = {a.lease: a for a in anns.values()}
        items = [(only, self.api.leases[only])] if only in self.api.leases else sorted(self.api.leases.items())
        for lease, (rec, _) in items:
            node = rec.holder
            agent = self.nodes.get(node)
            a = by_lease.get(lease)
            if agent is None or a is None or node in self.lan.crashed:
                continue
            ips = [str(ip) for ip in a.ips]
            ifaces = a.interfaces.get(node, ())
            if lease in agent.handled or agent.responder_missing:
                if lease in agent.handled and not any((ip, i) in agent.responder for ip in ips for i in ifaces):
                    self._found(L2Check("responder-missing", lease, node, now, None,
                                        f"{node} holds {lease} but its responder answers for none of {', '.join(ips)}"))
            lan = self.lan_iface(node)
            if node in self.lan.nic_down and lan in ifaces:
                self._found(L2Check("interface-down", lease, node, now, lan,
                                    f"{node} holds {lease} (renewing over the backup path) but {lan} is down: "
                                    "nobody answers ARP for its IPs on the LAN (cilium#35507)"))

    def _found(self, c: L2Check) -> None:
        if c.key not in self.seen:
            self.seen[c.key] = c
            self.world.obs.l2_checks.append(c)
            self.world.log("l2-check", problem=c.problem, lease=c.lease, node=c.node, interface=c.interface)
