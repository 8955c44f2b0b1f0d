"""Materialise a ``World`` on the real kernel and run ``Flow``s through it.

:class:`KernelWorld` is a context manager. On entry it

1. creates a pod namespace and a peer namespace joined by a veth pair (pod end = ``world.interface``),
2. gives the pod its IPs (``/32`` / ``/128``, ``nodad``), a route to the peer and a default route via
   it, and puts the proxy's inbound source address (``::6``) on ``lo`` when it is not already local;
   installs exactly ``world.routing`` (``ip rule`` / ``ip route`` per family) in the pod,
3. loads the world's rulesets with ``iptables-restore`` / ``ip6tables-restore`` inside the pod (text
   from :mod:`meshsolve.iptables`), then its native nftables tables with Debian's ``nft -f`` (their
   own text, a counter in every rule: :mod:`meshsolve.oracle.nft`) in ``Rulesets.nft_load_order``:
   the registration order the model assumes for base chains of equal priority,
4. makes the peer "the outside world": it owns its own address and every remote address the world
   names (service endpoints and VIPs that are not the pod's, DNAT targets, sample addresses of rule
   CIDRs, and each flow's destination when it is remote: local routes on the peer's ``lo``), and one
   real server answers every TCP connection to an address it owns (iptables REDIRECT of destination
   type LOCAL to one port). The peer has routes back to the pod's interface addresses only, so a
   connection from an address only the pod's ``lo`` has (``::6``) is never answered, as on a real
   network,
5. starts one worker process per app (its uid/gid, its listening sockets, ``SO_REUSEPORT`` where a
   socket asks for it; ``SO_MARK`` on its listeners and its connections, and ``CAP_NET_ADMIN`` to set
   it, when the app has a ``mark``), one proxy stand-in (the proxy's uid/gid, ``IP_TRANSPARENT`` listeners when the
   proxy is transparent, ``SO_MARK`` on every socket when the proxy has a ``socket_mark``, its own
   listeners, behaving as ``world.proxy`` says) and the peer (see :mod:`meshsolve.oracle.worker`).
   A peer flow from another address (``Flow.src``, e.g. the node's probe SNAT) is opened from that
   address, which the peer then owns (on its ``lo``; the pod's default route leads back to it).

Each :meth:`KernelWorld.run` then opens the flow's connection from the right process, sends one
request and waits for the answer, and classifies what came back into the interpreter's
:class:`~meshsolve.semantics.trace.Result`, so a differential test can compare the two field by field:

* ``outcome``:
  ``Delivered`` (the app's answer names its socket and the source it saw; a connection the proxy
  ends itself on one of its own listeners is delivered to ``proxy``),
  ``Egress`` (the peer's server saw the connection complete, request and answer, and names the
  destination and the source it saw),
  ``Rejected`` (a REJECT rule's counter moved: the client got an error, ECONNREFUSED / ENETUNREACH /
  EHOSTUNREACH / EACCES / ENOPROTOOPT, which the outcome names; for IPv6 the errno comes with the
  first SYN retransmission, about 1 s later: with a shorter ``connect_timeout`` the outcome says it
  did not come (``NO_ERRNO``). It is not rerun to wait for it: the retransmitted SYN of a connection
  that never got confirmed walks nat again, and the nat rule hits would count it twice),
  ``Refused`` (ECONNREFUSED with no REJECT counted: nothing listens; or the stand-in closed the client
  because the proxy blackholes, or its upstream was refused),
  ``Dropped`` (no answer to the SYN and a DROP rule, a DROP policy or a TPROXY rule without a
  transparent listener counted it; the rule is the one whose counter moved),
  ``Failed`` (the kernel itself: ``connect()`` failed with an errno and no rule counted, e.g. EINVAL
  from a loopback source towards the outside or ENETUNREACH for a multicast destination; or no answer
  and no rule counted: a re-route or martian drop, a source the network cannot answer),
  ``Loop`` (the stand-in saw one (side, original destination) more than ``loop_limit`` times);
  the stand-in's upstream failure is classified the same way (the flow ends as its last connection);
* ``observed``: the sides the stand-in accepted the flow's connections on, in order, up to the first
  repeated sighting (as the interpreter records them);
* ``rule_hits``: every rule (``table::CHAIN#n``, policy = index 0) whose packet counter moved during
  the flow, as often as it moved (nat counts one packet per connection);
* ``trace``: what the stand-in saw (leg 1 when it accepted the client's own connection) and what the
  client got back.

A flow that timed out with no rule counted is run once more with generous bounds before it is
believed. On exit every worker is killed by pid and both namespaces are deleted, also on exceptions
and ``KeyboardInterrupt``; namespaces of runs that were killed outright are swept by the next run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from meshsolve.errors import MeshsolveError, OracleError, UnsupportedError
from meshsolve.model.net import Family, IPAddress, family_of, to_address
from meshsolve.model.routing import LOCAL_TABLE, Route
from meshsolve.model.rules import CtTarget, Drop, Reject, RuleRef, Ruleset, Snat, Tproxy
from meshsolve.model.world import Flow, Socket, World
from meshsolve.oracle.flowspace import remote_addresses, unroutable
from meshsolve.oracle.netns import NamespacePair, ip_batch, run
from meshsolve.oracle.nft import ipset_restore, load_text, parse_nft_counters
from meshsolve.oracle.worker import TUNNEL
from meshsolve.semantics.trace import (
    Delivered,
    Dropped,
    Egress,
    Failed,
    Hop,
    Loop,
    Outcome,
    Refused,
    Rejected,
    Result,
    Side,
    Undetermined,
)

__all__ = ["KERNEL_RULE", "NO_ERRNO", "KernelWorld", "OracleConfig", "parse_counters", "routing_commands", "run_flows"]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Kept for callers that name "no rule": a kernel ``Dropped`` always names the rule that counted.
KERNEL_RULE = RuleRef("kernel", "unknown", 0)
# The errno of a ``Rejected`` whose client gave up before the rejection's ICMP error reached it.
NO_ERRNO = "no errno within the time bound"
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@attrs.frozen
class OracleConfig:
    """Time bounds and limits of the harness (seconds)."""

    connect_timeout: float = 0.3      # the client's SYN answered within this, else "no answer"
    read_timeout: float = 4.0         # the client's wait for an answer after connecting
    upstream_timeout: float = 0.3     # the stand-in's connect timeout upstream
    upstream_read_timeout: float = 3.0
    slow_timeout: float = 2.0         # the second try of a flow that got no answer and no rule counted
    loop_limit: int = 4               # the stand-in cuts a (side, original dst) seen more often
    egress_port: int = 10999          # the port of the peer's server ("the outside world")
    start_timeout: float = 10.0       # workers must report ready within this
    counters: bool = True             # read rule counters around each flow (rule_hits, Dropped rule)


RestoreRenderer = Callable[[Ruleset], str]


def _default_renderer(ruleset: Ruleset) -> str:
    try:
        from meshsolve.iptables import render_restore
    except ImportError as exc:  # the renderer layer is not there yet
        raise OracleError(f"meshsolve.iptables.render_restore is not available: {exc}") from None
    text: str = render_restore(ruleset)
    return text


def _plen(addr: IPAddress) -> int:
    return 32 if addr.version == 4 else 128


def routing_commands(world: World, family: Family, *, interface: str | None = None) -> list[str]:
    """``ip`` batch lines (for ``ip -4``/``ip -6``) that install ``world.routing`` for ``family``:
    its rules (``rule add [not] fwmark V/M lookup T pref P``, or ``from all``) and its routes."""
    out: list[str] = []
    for r in world.routing.rules_for(family):
        sel = "from all" if r.fwmark is None else \
            f"{'not ' if r.invert else ''}fwmark {r.fwmark:#x}/{r.mask:#x}"
        out.append(f"rule add {sel} lookup {r.table} pref {r.priority}")
    for rt in world.routing.routes:
        if rt.family != family:
            continue
        out.append(_route_command(rt, world, interface))
    return out


def _route_command(rt: Route, world: World, interface: str | None) -> str:
    dev = rt.dev
    if dev == world.interface and interface is not None:
        dev = interface
    if dev is None and rt.kind in ("unicast", "local"):
        dev = "lo" if rt.kind == "local" else (interface or world.interface)
    kind = "" if rt.kind == "unicast" else f"{rt.kind} "
    on = f" dev {dev}" if dev is not None and rt.kind in ("unicast", "local") else ""
    return f"route add {kind}{rt.dst}{on} table {rt.table}"


def _dropper_kind(ruleset: Ruleset, ref: RuleRef) -> str | None:
    """``"reject"``, ``"drop"`` (a DROP rule or a DROP policy) or ``"tproxy"`` for a rule that can
    end a connection, else None."""
    if ref.index == 0:
        chain = ruleset.chain(ref.table, ref.chain)
        return "drop" if chain is not None and chain.policy == "DROP" else None
    try:
        rule = ruleset.rule(ref)
    except KeyError:
        return None
    if isinstance(rule.target, Reject):
        return "reject"
    if isinstance(rule.target, Drop):
        return "drop"
    if isinstance(rule.target, Tproxy):
        return "tproxy"
    return None


def _tproxy_drops(world: World, ruleset: Ruleset, ref: RuleRef) -> bool:
    """Whether a TPROXY rule that counted a packet dropped it: its port has no transparent listener."""
    rule = ruleset.rule(ref)
    assert isinstance(rule.target, Tproxy)
    p = world.proxy
    return not p.transparent or rule.target.on_port not in {p.outbound_port, p.inbound_port, *p.own_listeners}


class _Worker:
    """One worker process (``ip netns exec NS python -I -S worker.py ROLE CONFIG``) and its pipes.

    Its stderr goes to an unlinked temporary file (a pipe nobody drains could fill up and block it);
    it is read back only to explain a failure.
    """

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+", prefix="msor-worker-")  # noqa: SIM115 (closed in kill)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.pid = self.proc.pid

    def _stderr_tail(self) -> str:
        with contextlib.suppress(Exception):
            self.stderr.seek(0)
            return self.stderr.read()[-2000:].strip()
        return ""

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            state = "exited" if self.proc.poll() is not None else f"silent for {timeout}s"
            raise OracleError(f"oracle worker {self.name} (pid {self.pid}) {state}: {self._stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise OracleError(f"oracle worker {self.name} (pid {self.pid}) is gone: "
                              f"{self._stderr_tail()}") from None
        return self.read(timeout)

    def kill(self) -> None:
        """Kill this process (by its pid) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _unwind_on_sigterm() -> Any:
    """Make SIGTERM raise ``SystemExit`` (so ``with KernelWorld`` cleans up, as on Ctrl-C) when it
    would otherwise kill the process outright; returns the handler to restore, or None when the
    caller has its own (or this is not the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _terminate)


@attrs.frozen
class _Ending:
    """How one connection ended as seen by its opener: a status of ``worker.client_connect`` and an
    errno (``via`` says whose connection: the client's or the stand-in's upstream)."""

    status: str
    errno: str | None = None
    via: str = "the client"


class KernelWorld:
    """A world materialised in two network namespaces; run flows with :meth:`run`.

    ``renderer`` turns a ``Ruleset`` into ``iptables-restore`` input (default:
    ``meshsolve.iptables.render_restore``); ``restore_text`` instead gives that input directly per family.
    """

    def __init__(self, world: World, config: OracleConfig | None = None, *,
                 renderer: RestoreRenderer | None = None,
                 restore_text: dict[Family, str] | None = None) -> None:
        self.world = world
        self.config = config or OracleConfig()
        self.renderer = renderer or _default_renderer
        self.restore_text = restore_text
        self.pair = NamespacePair(world.interface)
        self.workers: dict[str, _Worker] = {}
        self._flow_no = 0
        self._loaded: dict[str, bool] = {}
        self._nft_loaded = False
        self._nft_last: dict[RuleRef, int] | None = None
        self._last_counters: dict[str, dict[RuleRef, int]] = {}
        self._owned: set[IPAddress] = set()
        self._sources: set[IPAddress] = set()
        self._rulesets = {fam: world.rules.for_family(fam) for fam in ("ipv4", "ipv6")}
        if restore_text is not None:  # the rules that counters name are the ones restored
            from meshsolve.iptables import parse_text

            for fam, text in restore_text.items():
                if text.strip():
                    try:
                        parsed = parse_text(text if fam == "ipv4" else "# ipv6\n" + text, source=f"restore-{fam}")
                    except MeshsolveError:  # iptables-restore will say what is wrong with it
                        continue
                    self._rulesets[fam] = parsed.for_family(fam)
        self.timings: dict[str, float] = {}

    # -- life cycle ---------------------------------------------------------------------------------

    def __enter__(self) -> KernelWorld:
        self._sigterm = _unwind_on_sigterm()
        try:
            self.start()
        except BaseException:
            self._exit()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit()

    def _exit(self) -> None:
        # SIGTERM (kill, a cancelled CI job) unwinds to here like Ctrl-C; a second one during the
        # clean-up is ignored so that it finishes, then the previous handler is back
        restore = getattr(self, "_sigterm", None)
        if restore is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self.close()
        finally:
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)
                self._sigterm = None

    def start(self) -> None:
        t0 = time.monotonic()
        self.pair.create()
        t1 = time.monotonic()
        self._addresses()
        self._rules()
        t2 = time.monotonic()
        self._start_workers()
        t3 = time.monotonic()
        self.timings = {"netns": t1 - t0, "config": t2 - t1, "workers": t3 - t2}

    def close(self) -> None:
        """Kill every worker by pid, then delete both namespaces. Never raises."""
        workers, self.workers = list(self.workers.values()), {}
        for w in workers:
            w.kill()
        self.pair.delete()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(w.pid for w in self.workers.values())

    @property
    def namespaces(self) -> tuple[str, str]:
        return (self.pair.pod, self.pair.peer)

    # -- set-up -------------------------------------------------------------------------------------

    def _addresses(self) -> None:
        w, iface, peer_if = self.world, self.pair.interface, self.pair.peer_interface
        pod_cmds: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
        peer_cmds: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
        for fam in w.families:
            nodad = " nodad" if fam == "ipv6" else ""
            pod, peer = w.pod_ip(fam), w.peer_ip(fam)
            if peer is not None:
                peer_cmds[fam].append(f"addr add {peer}/{_plen(peer)} dev {peer_if}{nodad}")
                self._owned.add(peer)
            for a in w.pod_ips:
                if family_of(a) == fam:
                    pod_cmds[fam].append(f"addr add {a}/{_plen(a)} dev {iface}{nodad}")
                    # the outside world knows the way back to the pod's interface addresses only
                    peer_cmds[fam].append(f"route add {a}/{_plen(a)} dev {peer_if}")
            if peer is not None and pod is not None:
                pod_cmds[fam].append(f"route add {peer}/{_plen(peer)} dev {iface}")
                pod_cmds[fam].append(f"route add default via {peer} dev {iface}")
        # ::6 (any source that is neither loopback nor a pod IP) is not local until put on lo
        for src in (w.proxy.inbound_source_v4, w.proxy.inbound_source_v6):
            if src is not None and not (src.is_loopback or src in w.pod_ips):
                fam = family_of(src)
                nodad = " nodad" if fam == "ipv6" else ""
                pod_cmds[fam].append(f"addr add {src}/{_plen(src)} dev lo{nodad}")
        for fam in ("ipv4", "ipv6"):
            pod_cmds[fam] += routing_commands(w, fam, interface=iface)
        # a source the pod's SNAT gives: the outside world routes it back to the pod (the semantics
        # takes such a connection as answered)
        snat = snat_addresses(w)
        for a in snat:
            fam = family_of(a)
            if fam in w.families and a not in self._owned and not w.is_local(a):
                peer_cmds[fam].append(f"route add {a}/{_plen(a)} via {w.pod_ip(fam)} dev {peer_if}")
                self._owned.add(a)  # the peer routes it back, so it never owns it
        for a in remote_addresses(w):
            if a not in self._owned and w.peer_ip(family_of(a)) is not None:
                peer_cmds[family_of(a)].append(self._own_command(a))
                self._owned.add(a)
        for fam in ("ipv4", "ipv6"):
            opt = "-6" if fam == "ipv6" else "-4"
            ip_batch(self.pair.pod, pod_cmds[fam], what=f"configure the pod's {fam} addresses and routes",
                     options=(opt,))
            ip_batch(self.pair.peer, peer_cmds[fam], what=f"configure the peer's {fam} addresses and routes",
                     options=(opt,))

    @staticmethod
    def _own_command(addr: IPAddress) -> str:
        """The peer owns ``addr``: a local route on its ``lo`` (like an address, without the
        neighbour and source-selection side effects)."""
        return f"route add local {addr}/{_plen(addr)} dev lo table {LOCAL_TABLE}"

    def _own(self, addr: IPAddress) -> None:
        """Make the outside world answer for ``addr`` (a remote destination of a flow; an address the
        peer already has as a source it answers for already)."""
        fam = family_of(addr)
        if addr in self._owned or addr in self._sources or unroutable(addr) or self.world.is_local(addr) \
                or addr.is_loopback or self.world.peer_ip(fam) is None:
            return
        ip_batch(self.pair.peer, [self._own_command(addr)], what=f"let the peer answer for {addr}",
                 options=("-6" if fam == "ipv6" else "-4",))
        self._owned.add(addr)

    def _restore_input(self, fam: Family) -> str:
        if self.restore_text is not None:
            return self.restore_text.get(fam, "")
        rs = self.world.rules.for_family(fam)
        return "" if rs.empty else self.renderer(rs)

    def _rules(self) -> None:
        sets = ipset_restore((self.world.rules.ipv4, self.world.rules.ipv6), self.world.ip_sets)
        if sets:  # the ipsets -m set looks up, before the rules that name them
            run(self.pair.exec_argv(self.pair.pod, ["ipset", "restore"]), input_text=sets,
                what=f"ipset restore in the pod namespace (input:\n{sets})")
        for fam, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
            text = self._restore_input(fam)  # type: ignore[arg-type]
            self._loaded[fam] = bool(text.strip())
            if text.strip():
                run(self.pair.exec_argv(self.pair.pod, [tool]), input_text=text,
                    what=f"{tool} in the pod namespace (input:\n{text})")
        tables = self.world.rules.nft_load_order()  # after iptables': the registration order the model assumes
        if tables:
            text = load_text(tables, self.world.ip_sets)
            run(self.pair.exec_argv(self.pair.pod, ["nft", "-f", "-"]), input_text=text,
                what=f"nft -f in the pod namespace (input:\n{text})")
            self._nft_loaded = True
        # the peer: a connection to any address it owns goes to the one server
        port = self.config.egress_port
        peer_rules = (f"*nat\n-A PREROUTING -i {self.pair.peer_interface} -p tcp -m addrtype --dst-type LOCAL "
                      f"-j REDIRECT --to-ports {port}\nCOMMIT\n")
        for fam, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
            if fam in self.world.families:
                run(self.pair.exec_argv(self.pair.peer, [tool]), input_text=peer_rules,
                    what=f"{tool} in the peer namespace")

    def _spawn(self, name: str, ns: str, role: str, cfg: dict[str, Any]) -> None:
        argv = self.pair.exec_argv(ns, [sys.executable, "-I", "-S", WORKER, role, json.dumps(cfg)])
        self.workers[name] = _Worker(name, argv)

    def _start_workers(self) -> None:
        w, c = self.world, self.config
        for app in w.apps:
            socks = [{"bind": str(s.bind), "port": s.port, "v6only": s.v6only, "reuseport": s.reuseport,
                      "index": i} for i, s in enumerate(app.sockets)]
            mark = app.mark
            self._spawn("app:" + app.name, self.pair.pod, "app",
                        {"name": app.name, "uid": app.uid, "gid": app.gid, "sockets": socks, "mark": mark,
                         "net_admin": mark is not None})
        p = w.proxy
        self._spawn("proxy", self.pair.pod, "proxy", {
            "uid": p.uid, "gid": p.gid, "outbound_port": p.outbound_port, "inbound_port": p.inbound_port,
            "virtual_inbound_dispatch": p.virtual_inbound_dispatch,
            "inbound_ports": None if p.inbound_ports is None else list(p.inbound_ports),
            "inbound_endpoint": p.inbound_endpoint,
            "inbound_source": {f: str(a) for f, a in (("ipv4", p.inbound_source_v4),
                                                       ("ipv6", p.inbound_source_v6)) if a is not None},
            "inbound_original_source": p.inbound_original_source, "upstream_mark": p.upstream_mark,
            "transparent": p.transparent, "socket_mark": p.socket_mark, "own_listeners": list(p.own_listeners),
            "tunnel_port": p.tunnel_port,
            "needs_net_admin": p.transparent or p.inbound_original_source or p.upstream_mark is not None
            or p.socket_mark is not None,
            "outbound": p.outbound, "pod_ips": [str(a) for a in w.pod_ips],
            "services": [{"vip": str(s.vip), "port": s.port,
                          "endpoints": [[str(e.address), e.port] for e in s.endpoints]}
                         for s in w.services],
            "zones": any(_has_zone(self._rulesets[f]) for f in w.families),
            "loop_limit": c.loop_limit, "timeout": c.upstream_timeout,
            "read_timeout": c.upstream_read_timeout, "families": list(w.families),
        })
        self._spawn("peer", self.pair.peer, "peer",
                    {"families": list(w.families), "egress_port": c.egress_port})
        for worker in self.workers.values():
            ready = worker.read(c.start_timeout)
            if not ready.get("ready"):
                raise OracleError(f"oracle worker {worker.name} did not start: {ready}")

    # -- flows --------------------------------------------------------------------------------------

    def _client(self, flow: Flow) -> _Worker:
        if flow.client == "peer":
            if self.world.peer_ip(flow.family) is None:
                raise OracleError(f"the world has no {flow.family} peer address for {flow}")
            return self.workers["peer"]
        if flow.client == "proxy":
            return self.workers["proxy"]
        self.world.app(flow.client)  # raises WorldError for an unknown app
        return self.workers["app:" + flow.client]

    def run(self, flow: Flow) -> Result:
        """Open ``flow``'s connection for real and say what happened, as the interpreter would.

        A connection that got no answer although no rule counted it (a kernel failure, or a stall on
        a loaded machine) is run once more with generous time bounds before it is believed.
        """
        if flow.protocol != "tcp":
            raise UnsupportedError(f"the kernel oracle runs TCP flows only, not {flow}")
        if flow.family not in self.world.families:
            raise OracleError(f"the world has no {flow.family} pod address for {flow}")
        if not self.workers:
            raise OracleError("KernelWorld.run outside its context (not started, or closed)")
        self._own_destinations(flow)
        self._own_source(flow)
        c = self.config
        result, retry = self._run_once(flow, c.connect_timeout, c.upstream_timeout)
        if retry:
            result, _ = self._run_once(flow, c.slow_timeout, c.slow_timeout)
        return result

    def _own_source(self, flow: Flow) -> None:
        """A peer's connection from another address: the peer owns that address (on its ``lo``)."""
        src = flow.src
        if flow.client != "peer" or src is None or src in self._sources or src == self.world.peer_ip(flow.family):
            return
        fam = family_of(src)
        nodad = " nodad" if fam == "ipv6" else ""
        ip_batch(self.pair.peer, [f"addr add {src}/{_plen(src)} dev lo{nodad}"],
                 what=f"give the peer the source {src}", options=("-6" if fam == "ipv6" else "-4",))
        self._sources.add(src)

    def _own_destinations(self, flow: Flow) -> None:
        dst = flow.dst
        if dst.version == 6 and dst in _MAPPED:
            assert isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None
            dst = dst.ipv4_mapped
        if flow.client != "peer":
            self._own(dst)
        svc = self.world.service_at(dst, flow.dport)
        if svc is not None:
            for e in svc.endpoints:
                self._own(e.address)

    def _counter_family(self, flow: Flow) -> Family:
        if flow.client != "peer" and flow.dst.version == 6 and flow.dst in _MAPPED:
            return "ipv4"  # an AF_INET6 socket to ::ffff:a.b.c.d opens an IPv4 connection
        return flow.family

    def _run_once(self, flow: Flow, connect_timeout: float, upstream_timeout: float) -> tuple[Result, bool]:
        c = self.config
        self._flow_no += 1
        token = f"meshsolve-flow-{os.getpid()}-{self._flow_no}"
        proxy = self.workers["proxy"]
        proxy.call({"op": "reset", "flow": self._flow_no, "endpoint": flow.endpoint,
                    "timeout": upstream_timeout}, c.start_timeout)
        self.workers["peer"].call({"op": "seen"}, c.start_timeout)  # forget earlier flows
        client = self._client(flow)
        fam = self._counter_family(flow)
        before: dict[RuleRef, int] = {}
        if c.counters:
            cached = self._last_counters.get(fam)
            before = cached if cached is not None else self._counters(fam)
            before.update(self._nft_before(fam))
        read_timeout = c.read_timeout + 2 * upstream_timeout
        src = str(flow.src) if flow.client == "peer" and flow.src is not None else None
        request = token if flow.inner is None else f"{token} {TUNNEL} {flow.inner}"  # HBONE's CONNECT, in short
        reply = client.call({"op": "connect", "dst": str(flow.dst), "port": flow.dport, "token": request,
                             "timeout": connect_timeout, "read_timeout": read_timeout,
                             "sport": flow.sport, "src": src}, connect_timeout + read_timeout + 5)
        events = proxy.call({"op": "events"}, c.start_timeout)["events"]
        seen = self.workers["peer"].call({"op": "seen"}, c.start_timeout)["seen"]
        hits: tuple[RuleRef, ...] = ()
        if c.counters:
            after = self._counters(fam)
            self._last_counters[fam] = dict(after)  # counters only move during flows
            after.update(self._nft_after(fam))
            hits = tuple(ref for ref in sorted(after, key=_ref_key)
                         for _ in range(after[ref] - before.get(ref, 0)))
        return self._classify(flow, fam, token, reply, events, seen, hits)

    def _counters(self, fam: Family) -> dict[RuleRef, int]:
        """Packet counters of every iptables rule (and, as index 0, every built-in chain's policy) of
        the pod's ``fam`` ruleset, read with ``iptables-save -c``."""
        out: dict[RuleRef, int] = {}
        if self._loaded.get(fam) is True:
            tool = "ip6tables-save" if fam == "ipv6" else "iptables-save"
            text = run(self.pair.exec_argv(self.pair.pod, [tool, "-c"]), what=f"{tool} -c in the pod")
            out.update(parse_counters(text))
        return out

    def _nft_counters(self) -> dict[RuleRef, int]:
        """Packet counters of every native nftables rule (and drop policy, index 0), both families'
        tables at once (an ``inet`` table counts both), read with ``nft -j list ruleset``."""
        if not self._nft_loaded:
            return {}
        text = run(self.pair.exec_argv(self.pair.pod, ["nft", "-j", "list", "ruleset"]),
                   what="nft -j list ruleset in the pod")
        return parse_nft_counters(text)

    def _nft_only(self, counts: dict[RuleRef, int], fam: Family) -> dict[RuleRef, int]:
        keys = {t.key for t in self._rulesets[fam].nft}
        return {ref: n for ref, n in counts.items() if ref.table in keys}

    def _nft_before(self, fam: Family) -> dict[RuleRef, int]:
        if self._nft_last is None:
            self._nft_last = self._nft_counters()
        return self._nft_only(self._nft_last, fam)

    def _nft_after(self, fam: Family) -> dict[RuleRef, int]:
        self._nft_last = self._nft_counters()  # counters only move during flows
        return self._nft_only(self._nft_last, fam)

    def _classify(self, flow: Flow, fam: Family, token: str, reply: dict[str, Any],
                  events: list[dict[str, Any]], seen: list[dict[str, Any]],
                  hits: tuple[RuleRef, ...]) -> tuple[Result, bool]:
        """The interpreter's view of what came back, and whether the flow deserves a slower try."""
        trace: list[Hop] = [Hop(1, "open", f"{flow.client} connects to {flow}")]
        seen_keys: set[tuple[str, str, int]] = set()
        observed: list[Side] = []
        repeated = False
        own = (reply.get("local"), reply.get("local_port"))
        for i, ev in enumerate(events):
            key = (ev["side"], ev["dst"], ev["port"])
            leg = 1 if i == 0 and ev.get("direct") is not False else i + 2
            trace.append(Hop(leg, "proxy", f"stand-in {ev['listener']} listener accepted from "
                                           f"{_hp(ev['peer'], ev['peer_port'])}: side {ev['side']}, original "
                                           f"destination {_hp(ev['dst'], ev['port'])} ({ev.get('how')})"))
            if key in seen_keys:
                repeated = True
            if not repeated:
                observed.append("in" if ev["side"] == "in" else "out")
            seen_keys.add(key)
        ending: _Ending | None = None
        outcome: Outcome
        if reply.get("status") == "data":
            outcome, ending = self._answer(reply, token, seen, repeated, fam, hits)
        else:
            ending = _Ending(reply.get("status", "?"), reply.get("errno"))
        if ending is not None:
            outcome = self._ending(ending, repeated, fam, hits)
        mine = f" (from {_hp(own[0], own[1])})" if own[0] is not None else ""
        trace.append(Hop(len(events) + 1, "socket", f"client{mine} got {_brief(reply)} -> {outcome}"))
        retry = ending is not None and ending.status in ("timeout", "read-timeout") and \
            isinstance(outcome, Failed)
        return Result(flow=flow, outcome=outcome, observed=tuple(observed), trace=tuple(trace),
                      rule_hits=hits), retry

    def _answer(self, reply: dict[str, Any], token: str, seen: list[dict[str, Any]], repeated: bool,
                fam: Family, hits: tuple[RuleRef, ...]) -> tuple[Outcome, _Ending | None]:
        """An answer came back: whose, and does it close the request/response round trip."""
        try:
            msg = json.loads(reply["data"].splitlines()[0])
        except (ValueError, IndexError):
            return Undetermined(f"unexpected answer {reply['data'][:200]!r}"), None
        kind = msg.get("kind")
        if kind in ("app", "egress", "own") and str(msg.get("token") or "").split(" ")[0] != token:
            return Undetermined(f"the answer is not for this request: {msg!r}"), None
        if kind == "own":  # the proxy ended the connection on one of its own listeners
            v6 = fam == "ipv6"
            sock = Socket("::" if v6 else "0.0.0.0", int(msg["port"]), v6only=v6)
            return Delivered("proxy", sock, to_address(msg["peer"])), None
        if kind == "app":
            app = self.world.app(msg["app"])
            return Delivered(app.name, app.sockets[msg["sock"]], to_address(msg["peer"])), None
        if kind == "egress":
            if not any(str(s.get("token") or "").split(" ")[0] == token for s in seen):
                return Undetermined(f"an egress answer the peer's server did not log: {msg!r}"), None
            return Egress(to_address(msg["dst"]), int(msg["port"]), to_address(msg["peer"])), None
        if kind == "proxy-error":
            err = msg.get("error")
            if err == "loop" or (repeated and err in ("refused", "reset", "eof", "read-timeout")):
                return Loop(f"the stand-in saw the same original destination more than "
                            f"{self.config.loop_limit} times on the {msg.get('side')} side"), None
            if err in ("blackhole", "no-endpoint", "no-original-dst"):
                return Refused(), None  # the proxy closes the client's connection
            if err in ("refused", "reset", "eof", "timeout", "read-timeout", "error"):
                return Refused(), _Ending(err, msg.get("errno"), "the stand-in's upstream")
            return Undetermined(f"proxy stand-in: {err} {msg.get('detail') or ''}".strip()), None
        return Undetermined(f"unexpected answer {msg!r}"), None

    def _ending(self, e: _Ending, repeated: bool, fam: Family, hits: tuple[RuleRef, ...]) -> Outcome:
        """A connection that did not complete: which rule, or the kernel itself, ended it."""
        ruleset = self._rulesets[fam]
        kinds = [(ref, _dropper_kind(ruleset, ref)) for ref in dict.fromkeys(hits)]
        reject = next((r for r, k in kinds if k == "reject"), None)
        drop = next((r for r, k in kinds if k == "drop"), None)
        tproxy = next((r for r, k in kinds if k == "tproxy" and _tproxy_drops(self.world, ruleset, r)), None)
        errno_text = f" ({e.errno})" if e.errno else ""
        if e.status in ("refused", "error"):
            if reject is not None:
                return Rejected(reject, e.errno or "ECONNREFUSED")
            if e.status == "refused":
                return Loop("the stand-in saw an original destination again") if repeated else Refused()
            return Failed(f"connect() of {e.via} fails{errno_text}")
        if e.status == "timeout":
            if reject is not None:  # an ICMPv6 error arrives with a retransmission, after the bound
                return Rejected(reject, NO_ERRNO)
            if drop is not None:
                return Dropped(drop)
            if tproxy is not None:  # TPROXY drops a SYN no transparent listener takes
                return Dropped(tproxy)
            return Failed(f"no answer to the SYN of {e.via} and no rule counted it")
        if e.status == "read-timeout":
            if repeated:
                return Loop("time bound: no answer within the read timeout")
            if drop is not None:
                return Dropped(drop)
            if reject is not None:
                return Rejected(reject)
            return Failed(f"{e.via} connected, but no answer came back and no rule counted it")
        if e.status in ("reset", "eof"):
            if repeated:
                return Loop("the stand-in saw an original destination again")
            return Rejected(reject) if reject is not None else Refused()
        return Undetermined(f"client error: {e.status}{errno_text}")


def snat_addresses(world: World) -> tuple[IPAddress, ...]:
    """The addresses the world's SNAT rules give a connection's source."""
    out: list[IPAddress] = []
    for fam in ("ipv4", "ipv6"):
        for t in world.rules.for_family(fam).all_tables():
            for c in t.chains:
                for r in c.rules:
                    if isinstance(r.target, Snat) and r.target.spec is not None and r.target.spec.addr is not None:
                        out.append(r.target.spec.addr)
    return tuple(dict.fromkeys(out))


def _has_zone(ruleset: Ruleset) -> bool:
    """Whether a rule of ``ruleset`` puts connections into a conntrack zone other than the default."""
    return any(isinstance(r.target, CtTarget) and r.target.zone for t in ruleset.tables for c in t.chains
               for r in c.rules)


def _ref_key(ref: RuleRef) -> tuple[str, str, int]:
    return (ref.table, ref.chain, ref.index)


def parse_counters(text: str) -> dict[RuleRef, int]:
    """``iptables-save -c`` text → packets per rule (``table::CHAIN#n``, 1-based, in save order,
    which is the order the rules were restored in) and per built-in chain policy (index 0)."""
    out: dict[RuleRef, int] = {}
    table = ""
    seen: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table, seen = line[1:].strip(), {}
        elif line.startswith(":"):
            name, policy, counts = [*line[1:].split(), "", ""][:3]
            if policy != "-" and counts.startswith("["):
                out[RuleRef(table, name, 0)] = int(counts[1:].split(":", 1)[0])
        elif line.startswith("["):
            counts, rest = line.split("]", 1)
            parts = rest.split()
            if len(parts) >= 2 and parts[0] == "-A":
                seen[parts[1]] = seen.get(parts[1], 0) + 1
                out[RuleRef(table, parts[1], seen[parts[1]])] = int(counts[1:].split(":", 1)[0])
    return out


def _hp(addr: str, port: int | None) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _brief(reply: dict[str, Any]) -> str:
    if reply.get("status") == "data":
        return str(reply.get("data", "")).strip()[:200]
    errno_text = f" {reply['errno']}" if reply.get("errno") else ""
    return f"{reply.get('status')}{errno_text}"


@contextlib.contextmanager
def kernel_world(world: World, config: OracleConfig | None = None, **kw: Any) -> Iterator[KernelWorld]:
    with KernelWorld(world, config, **kw) as kw_:
        yield kw_


def run_flows(world: World, flows: Iterable[Flow], config: OracleConfig | None = None,
              progress: Callable[[int], None] | None = None, **kw: Any) -> tuple[Result, ...]:
    """Materialise ``world`` once and run every flow in it (``progress(1)`` after each flow)."""
    out = []
    with KernelWorld(world, config, **kw) as kworld:
        for f in flows:
            out.append(kworld.run(f))
            if progress is not None:
                progress(1)
    return tuple(out)
