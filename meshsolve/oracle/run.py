"""Materialise a ``World`` on the real kernel and run ``Flow``s through it.

:class:`KernelWorld` is a context manager. On entry it

1. creates a pod namespace and a peer namespace joined by a veth pair (pod end = ``world.interface``),
2. gives the pod its IPs (``/32`` / ``/128``, ``nodad``) and a default route via the peer, the peer its
   IPs and a route back to the pod; puts the proxy's inbound source address (``::6``) on ``lo`` when it
   is not already local,
3. loads the world's rulesets with ``iptables-restore`` / ``ip6tables-restore`` inside the pod (text
   from :mod:`meshsolve.iptables`), and, when a ruleset uses TPROXY, the policy routing it needs
   (``ip rule add fwmark M lookup 133`` + ``ip route add local default dev lo table 133``),
4. makes the peer answer as "the outside world": every TCP connection arriving on its veth is
   redirected to one responder that reports the original destination it was sent to,
5. starts one worker process per app (its uid/gid, its listening sockets), one proxy stand-in (the
   proxy's uid/gid, behaving as ``world.proxy`` says) and the peer (see :mod:`meshsolve.oracle.worker`).

Each :meth:`KernelWorld.run` then opens the flow's connection from the right process and classifies
what came back into the interpreter's :class:`~meshsolve.semantics.trace.Result`, so a differential
test can compare the two field by field:

* ``outcome``: ``Delivered`` (the app's answer names its socket and the peer address it saw),
  ``Egress`` (the peer's responder answered, naming the original destination), ``Refused`` (RST, or
  the stand-in closed the client because its upstream was refused, failed, or the proxy blackholes),
  ``Loop`` (the stand-in saw one (side, original destination) more than ``loop_limit`` times, or no
  answer within the time bound), ``Dropped`` (no answer to the SYN; the rule is the DROP/REJECT rule or
  DROP policy whose counter moved, ``KERNEL_RULE`` if none did);
* ``observed``: the sides the stand-in accepted the flow's connections on, in order, up to the first
  repeated sighting (as the interpreter records them);
* ``rule_hits``: every rule (``table::CHAIN#n``, policy = index 0) whose packet counter moved during
  the flow, as often as it moved (nat counts one packet per connection);
* ``trace``: what the stand-in saw and what the client got back.

A time-out that no DROP rule counted is run once more with generous bounds before it is believed. On
exit every worker is killed by pid and both namespaces are deleted, also on exceptions and
``KeyboardInterrupt``; namespaces of runs that were killed outright are swept by the next run.
"""

from __future__ import annotations

import contextlib
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

from meshsolve.errors import OracleError, UnsupportedError
from meshsolve.model.net import Family, IPAddress, family_of, to_address
from meshsolve.model.rules import Drop, Reject, RuleRef, Ruleset, Tproxy
from meshsolve.model.world import Flow, Socket, World
from meshsolve.oracle.netns import NamespacePair, ip_batch, run
from meshsolve.semantics.trace import (
    Delivered,
    Dropped,
    Egress,
    Hop,
    Loop,
    Outcome,
    Refused,
    Result,
    Side,
    Undetermined,
)

__all__ = ["KERNEL_RULE", "KernelWorld", "OracleConfig", "parse_counters", "run_flows"]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# The kernel cannot say which rule dropped a connection; kernel ``Dropped`` outcomes carry this.
KERNEL_RULE = RuleRef("kernel", "unknown", 0)
TPROXY_TABLE = 133


@attrs.frozen
class OracleConfig:
    """Time bounds and limits of the harness (seconds)."""

    connect_timeout: float = 0.3      # the client's SYN answered within this, else "dropped"
    read_timeout: float = 4.0         # the client's wait for an answer after connecting
    upstream_timeout: float = 0.3     # the stand-in's connect timeout upstream
    upstream_read_timeout: float = 3.0
    loop_limit: int = 4               # the stand-in cuts a (side, original dst) seen more often
    egress_port: int = 10999          # the peer's "outside world" responder
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


def _uses_tproxy(ruleset: Ruleset) -> tuple[tuple[int, int], ...]:
    """The (mark, mask) pairs of every TPROXY target in the ruleset."""
    marks = []
    for table in ruleset.tables:
        for chain in table.chains:
            for rule in chain.rules:
                if isinstance(rule.target, Tproxy):
                    mark = rule.target.mark if rule.target.mark is not None else 0
                    marks.append((mark, rule.target.mask))
    return tuple(dict.fromkeys(marks))


def _overlap(a: Socket, b: Socket) -> bool:
    """Whether two listening sockets claim a common (address, port)."""
    if a.port != b.port:
        return False

    def covers(w: Socket, o: Socket) -> bool:
        if not w.bind.is_unspecified:
            return False
        return w.bind.version == o.bind.version or (w.bind.version == 6 and not w.v6only)

    return a.bind == b.bind or covers(a, b) or covers(b, a)


def _is_loopback_or_pod(addr: IPAddress, world: World) -> bool:
    return addr.is_loopback or addr in world.pod_ips


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
        self._last_counters: dict[str, dict[RuleRef, int]] = {}
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
        self._check_world()
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

    def _check_world(self) -> None:
        """Refuse worlds the kernel cannot build: two listeners whose binds overlap on one port are
        possible only with SO_REUSEPORT and the same uid (the workers set SO_REUSEPORT)."""
        socks = [(app, s) for app in self.world.apps for s in app.sockets]
        for i, (app1, s1) in enumerate(socks):
            if not (s1.bind.is_unspecified or s1.bind.is_loopback or s1.bind in self.world.pod_ips):
                raise OracleError(f"{app1.name} binds {s1}, which is not an address of the pod")
            for app2, s2 in socks[i + 1:]:
                if _overlap(s1, s2) and (app1.uid != app2.uid or (s1.bind, s1.port) == (s2.bind, s2.port)):
                    raise OracleError(
                        f"{app1.name} ({s1}, uid {app1.uid}) and {app2.name} ({s2}, uid {app2.uid}) cannot "
                        "both listen: overlapping binds need SO_REUSEPORT and the same uid")

    def _addresses(self) -> None:
        w, iface, peer_if = self.world, self.pair.interface, self.pair.peer_interface
        pod_cmds: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
        peer_cmds: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
        for fam in w.families:
            plen, nodad = (128, " nodad") if fam == "ipv6" else (32, "")
            pod, peer = w.pod_ip(fam), w.peer_ip(fam)
            if peer is not None:
                peer_cmds[fam].append(f"addr add {peer}/{plen} dev {peer_if}{nodad}")
            for a in w.pod_ips:
                if family_of(a) == fam:
                    pod_cmds[fam].append(f"addr add {a}/{plen} dev {iface}{nodad}")
                    peer_cmds[fam].append(f"route add {a}/{plen} dev {peer_if}")
            if peer is not None and pod is not None:
                pod_cmds[fam].append(f"route add {peer}/{plen} dev {iface}")
                pod_cmds[fam].append(f"route add default via {peer} dev {iface}")
                # the outside world routes everything back to the pod (e.g. replies to ::6)
                peer_cmds[fam].append(f"route add default via {pod} dev {peer_if}")
        # ::6 (any source that is neither loopback nor a pod IP) is not local until put on lo
        for src in (w.proxy.inbound_source_v4, w.proxy.inbound_source_v6):
            if src is not None and not _is_loopback_or_pod(src, w):
                fam = family_of(src)
                plen, nodad = (128, " nodad") if fam == "ipv6" else (32, "")
                pod_cmds[fam].append(f"addr add {src}/{plen} dev lo{nodad}")
        for fam in ("ipv4", "ipv6"):
            marks = _uses_tproxy(self.world.rules.for_family(fam))
            for mark, mask in marks:
                pod_cmds[fam].append(f"rule add fwmark {mark}/{mask:#x} lookup {TPROXY_TABLE}")
            if marks:
                default = "::/0" if fam == "ipv6" else "0.0.0.0/0"
                pod_cmds[fam].append(f"route add local {default} dev lo table {TPROXY_TABLE}")
        for fam in ("ipv4", "ipv6"):
            opt = "-6" if fam == "ipv6" else "-4"
            ip_batch(self.pair.pod, pod_cmds[fam], what=f"configure the pod's {fam} addresses and routes",
                     options=(opt,))
            ip_batch(self.pair.peer, peer_cmds[fam], what=f"configure the peer's {fam} addresses and routes",
                     options=(opt,))

    def _restore_input(self, fam: Family) -> str:
        if self.restore_text is not None:
            return self.restore_text.get(fam, "")
        rs = self.world.rules.for_family(fam)
        return "" if rs.empty else self.renderer(rs)

    def _rules(self) -> None:
        for fam, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
            text = self._restore_input(fam)  # type: ignore[arg-type]
            self._loaded[fam] = bool(text.strip())
            if text.strip():
                run(self.pair.exec_argv(self.pair.pod, [tool]), input_text=text,
                    what=f"{tool} in the pod namespace (input:\n{text})")
        # the peer: everything arriving on its veth goes to the "outside world" responder
        port = self.config.egress_port
        peer_rules = (f"*nat\n-A PREROUTING -i {self.pair.peer_interface} -p tcp "
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
            socks = [{"bind": str(s.bind), "port": s.port, "v6only": s.v6only, "index": i}
                     for i, s in enumerate(app.sockets)]
            self._spawn("app:" + app.name, self.pair.pod, "app",
                        {"name": app.name, "uid": app.uid, "gid": app.gid, "sockets": socks})
        p = w.proxy
        transparent = any(_uses_tproxy(w.rules.for_family(f)) for f in ("ipv4", "ipv6"))
        self._spawn("proxy", self.pair.pod, "proxy", {
            "uid": p.uid, "gid": p.gid, "outbound_port": p.outbound_port, "inbound_port": p.inbound_port,
            "virtual_inbound_dispatch": p.virtual_inbound_dispatch,
            "inbound_ports": None if p.inbound_ports is None else list(p.inbound_ports),
            "inbound_endpoint": p.inbound_endpoint,
            "inbound_source": {f: str(a) for f, a in (("ipv4", p.inbound_source_v4),
                                                       ("ipv6", p.inbound_source_v6)) if a is not None},
            "outbound": p.outbound, "pod_ips": [str(a) for a in w.pod_ips],
            "services": [{"vip": str(s.vip), "port": s.port,
                          "endpoints": [[str(e.address), e.port] for e in s.endpoints]}
                         for s in w.services],
            "loop_limit": c.loop_limit, "timeout": c.upstream_timeout,
            "read_timeout": c.upstream_read_timeout, "transparent": transparent,
            "families": list(w.families),
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

        A connection that times out is "dropped" only when a DROP rule or policy counted it;
        otherwise (a stall on a loaded machine) the flow is run once more with generous time bounds.
        """
        if flow.protocol != "tcp":
            raise UnsupportedError(f"the kernel oracle runs TCP flows only, not {flow}")
        if flow.family not in self.world.families:
            raise OracleError(f"the world has no {flow.family} pod address for {flow}")
        if not self.workers:
            raise OracleError("KernelWorld.run outside its context (not started, or closed)")
        c = self.config
        result = self._run_once(flow, c.connect_timeout, c.upstream_timeout)
        if isinstance(result.outcome, Dropped) and result.outcome.rule == KERNEL_RULE:
            slow = max(2.0, 4 * c.connect_timeout)
            result = self._run_once(flow, slow, slow)
        return result

    def _run_once(self, flow: Flow, connect_timeout: float, upstream_timeout: float) -> Result:
        c = self.config
        self._flow_no += 1
        proxy = self.workers["proxy"]
        proxy.call({"op": "reset", "flow": self._flow_no, "endpoint": flow.endpoint,
                    "timeout": upstream_timeout}, c.start_timeout)
        client = self._client(flow)
        before: dict[RuleRef, int] = {}
        if c.counters:
            cached = self._last_counters.get(flow.family)
            before = cached if cached is not None else self._counters(flow.family)
        read_timeout = c.read_timeout + 2 * upstream_timeout
        reply = client.call({"op": "connect", "dst": str(flow.dst), "port": flow.dport,
                             "timeout": connect_timeout, "read_timeout": read_timeout,
                             "sport": flow.sport}, connect_timeout + read_timeout + 5)
        events = proxy.call({"op": "events"}, c.start_timeout)["events"]
        hits: tuple[RuleRef, ...] = ()
        if c.counters:
            after = self._counters(flow.family)
            self._last_counters[flow.family] = after  # counters only move during flows
            hits = tuple(ref for ref in sorted(after, key=_ref_key)
                         for _ in range(after[ref] - before.get(ref, 0)))
        return self._classify(flow, reply, events, hits)

    def _counters(self, fam: Family) -> dict[RuleRef, int]:
        """Packet counters of every rule (and, as index 0, every built-in chain's policy) of the
        pod's ``fam`` ruleset, read with ``iptables-save -c``."""
        if self._loaded.get(fam) is not True:
            return {}
        tool = "ip6tables-save" if fam == "ipv6" else "iptables-save"
        text = run(self.pair.exec_argv(self.pair.pod, [tool, "-c"]), what=f"{tool} -c in the pod")
        return parse_counters(text)

    def _classify(self, flow: Flow, reply: dict[str, Any], events: list[dict[str, Any]],
                  hits: tuple[RuleRef, ...] = ()) -> Result:
        trace: list[Hop] = [Hop(1, "open", f"{flow.client} connects to {flow}")]
        seen: set[tuple[str, str, int]] = set()
        observed: list[Side] = []
        repeated = False
        for i, ev in enumerate(events, 1):
            key = (ev["side"], ev["dst"], ev["port"])
            trace.append(Hop(i, "proxy", f"stand-in {ev['listener']} listener accepted from {ev['peer']}: "
                                         f"side {ev['side']}, original destination "
                                         f"{_hp(ev['dst'], ev['port'])}"))
            if key in seen:
                repeated = True
            if not repeated:
                observed.append("in" if ev["side"] == "in" else "out")
            seen.add(key)
        outcome = self._outcome(reply, repeated)
        if isinstance(outcome, Refused | Dropped | Undetermined):
            dropper = self._dropper(flow.family, hits)
            if dropper is not None:
                outcome = Dropped(dropper)
        trace.append(Hop(len(events) + 1, "socket", f"client got {_brief(reply)} -> {outcome}"))
        return Result(flow=flow, outcome=outcome, observed=tuple(observed), trace=tuple(trace),
                      rule_hits=hits)

    def _dropper(self, fam: Family, hits: tuple[RuleRef, ...]) -> RuleRef | None:
        """The DROP/REJECT rule, or DROP policy (index 0), whose counter moved during the flow."""
        ruleset = self.world.rules.for_family(fam)
        for ref in hits:
            if ref.index == 0:
                chain = ruleset.chain(ref.table, ref.chain)
                if chain is not None and chain.policy == "DROP":
                    return ref
                continue
            try:
                rule = ruleset.rule(ref)
            except KeyError:
                continue
            if isinstance(rule.target, Drop | Reject):
                return ref
        return None

    def _outcome(self, reply: dict[str, Any], repeated: bool) -> Outcome:
        status = reply.get("status")
        if status == "refused" or status == "reset":
            return Loop("the stand-in saw an original destination again") if repeated else Refused()
        if status == "timeout":
            return Dropped(KERNEL_RULE)
        if status == "read-timeout":
            return Loop("time bound: no answer within the read timeout")
        if status == "eof":
            return Undetermined("the connection was closed without an answer")
        if status != "data":
            return Undetermined(f"client error: {reply.get('error', status)}")
        try:
            msg = json.loads(reply["data"].splitlines()[0])
        except (ValueError, IndexError):
            return Undetermined(f"unexpected answer {reply['data'][:200]!r}")
        kind = msg.get("kind")
        if kind == "app":
            app = self.world.app(msg["app"])
            return Delivered(app.name, app.sockets[msg["sock"]], to_address(msg["peer"]))
        if kind == "egress":
            return Egress(to_address(msg["dst"]), int(msg["port"]))
        if kind == "proxy-error":
            err = msg.get("error")
            if err == "loop" or repeated:
                return Loop(f"the stand-in saw the same original destination more than "
                            f"{self.config.loop_limit} times on the {msg.get('side')} side")
            if err in ("refused", "reset", "blackhole", "no-endpoint", "eof", "error"):
                # the proxy closes the client's connection when its upstream cannot be opened
                # (refused, or connect() failed outright, e.g. EINVAL for a loopback source bound
                # by the proxy towards a non-local destination)
                return Refused()
            if err == "timeout":
                return Dropped(KERNEL_RULE)
            return Undetermined(f"proxy stand-in: {err} {msg.get('detail') or ''}".strip())
        return Undetermined(f"unexpected answer {msg!r}")


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


def _hp(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _brief(reply: dict[str, Any]) -> str:
    if reply.get("status") == "data":
        return str(reply.get("data", "")).strip()[:200]
    return str(reply.get("status"))


@contextlib.contextmanager
def kernel_world(world: World, config: OracleConfig | None = None, **kw: Any) -> Iterator[KernelWorld]:
    with KernelWorld(world, config, **kw) as kw_:
        yield kw_


def run_flows(world: World, flows: Iterable[Flow], config: OracleConfig | None = None,
              **kw: Any) -> tuple[Result, ...]:
    """Materialise ``world`` once and run every flow in it."""
    with KernelWorld(world, config, **kw) as kworld:
        return tuple(kworld.run(f) for f in flows)
