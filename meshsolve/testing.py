"""Assertions for testing a mesh's capture set-up the way you test code (pytest or plain Python).

Each ``assert_*`` helper asks the solver one question (``meshsolve.check`` / ``meshsolve.diff``; what
a proof covers and assumes is stated there: first TCP connections, the modelled rules, the hop
bound) and returns the answer when it holds. When it does not, it raises a
:class:`Counterexample` — an ``AssertionError`` — whose message carries the violating flow on one
line and its numbered trace, so a failing CI run says *which* connection breaks and *where*::

    from meshsolve import world_from_flags
    from meshsolve.testing import assert_captured, assert_no_loops

    def test_checkout_capture():
        world = world_from_flags(["-p", "15001", "-z", "15006", "-u", "1337", "-i", "*", "-b", "8080"])
        assert_captured(world)
        assert_no_loops(world)

An ``Unknown`` answer (the solver gave up, or only an opaque rule decides) fails with
:class:`Inconclusive` unless ``allow_unknown=True``. With ``soft=True`` a failure is a
:class:`MeshsolveAssertWarning` instead of an exception (the answer is returned either way).

This module is also a pytest plugin (entry point ``meshsolve``): a test that takes the argument
``meshsolve_pod`` runs once per pod of the manifests named by the ini option ``meshsolve_manifests``
or ``--meshsolve-manifest PATH`` (Istio version: ``meshsolve_istio_version`` /
``--meshsolve-istio``), the pod's world as the argument::

    def test_every_pod_is_captured(meshsolve_pod):
        assert_captured(meshsolve_pod)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import meshsolve.defaults as defaults
from meshsolve.errors import MeshsolveError

if TYPE_CHECKING:
    import pytest

    from meshsolve.analysis.check import Verdict
    from meshsolve.analysis.diff import DiffResult
    from meshsolve.analysis.properties import Property
    from meshsolve.model.net import IPAddress
    from meshsolve.model.world import Flow, World
    from meshsolve.semantics.trace import Result

__all__ = [
    "Counterexample",
    "Inconclusive",
    "MeshsolveAssertWarning",
    "MeshsolveAssertionError",
    "assert_bypass",
    "assert_captured",
    "assert_equivalent",
    "assert_flow",
    "assert_holds",
    "assert_no_exposure",
    "assert_no_loops",
    "assert_observed",
    "assert_reachable",
]

class MeshsolveAssertionError(MeshsolveError, AssertionError):
    """A meshsolve assertion did not hold; ``answer`` is the verdict (or diff results) behind it."""

    def __init__(self, message: str, answer: object) -> None:
        super().__init__(message)
        self.answer = answer


class Counterexample(MeshsolveAssertionError):
    """The assertion is false: ``flow`` is a connection that violates it, ``results`` how it ends
    (one interpreter ``Result`` per world, each with its numbered trace)."""

    def __init__(self, message: str, answer: object, flow: Flow, results: tuple[Result, ...]) -> None:
        super().__init__(message, answer)
        self.flow = flow
        self.results = results


class Inconclusive(MeshsolveAssertionError):
    """Neither proved nor refuted: the solver gave up, or only an opaque rule decides (``reason``)."""

    def __init__(self, message: str, answer: object, reason: str) -> None:
        super().__init__(message, answer)
        self.reason = reason


class MeshsolveAssertWarning(UserWarning):
    """A failed assertion reported with ``soft=True``."""


def _where(world: World) -> str:
    fams = "+".join(world.families)
    return f"{world.namespace}/{world.name} ({fams})"


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def _fail(error: MeshsolveAssertionError, soft: bool) -> None:
    __tracebackhide__ = True
    if soft:
        warnings.warn(MeshsolveAssertWarning(str(error)), stacklevel=3)
        return
    raise error


def assert_holds(world: World, prop: Property, *, hops: int = defaults.HOPS,
                 timeout_ms: int = defaults.TIMEOUT_MS, allow_unknown: bool = False,
                 soft: bool = False) -> Verdict:
    """Assert that ``prop`` is ``Proved`` in ``world`` (see ``meshsolve.check`` for what that covers).

    Raises :class:`Counterexample` (the refuting flow and its trace) or :class:`Inconclusive`
    (unless ``allow_unknown``); returns the verdict.
    """
    __tracebackhide__ = True
    from meshsolve.analysis.check import Refuted, Unknown, check
    from meshsolve.smt.query import describe

    verdict = check(world, prop, hops=hops, timeout_ms=timeout_ms)
    if isinstance(verdict, Refuted):
        message = (f"meshsolve: REFUTED {prop.title()}\n"
                   f"  world:    {_where(world)}\n"
                   f"  scope:    {verdict.scope}\n"
                   f"  expected: {describe(verdict.expected)}\n"
                   f"  counterexample: {verdict.flow}  ->  {verdict.result.summary}\n"
                   f"{_indent(str(verdict.result))}")
        _fail(Counterexample(message, verdict, verdict.flow, (verdict.result,)), soft)
    elif isinstance(verdict, Unknown) and not allow_unknown:
        message = (f"meshsolve: UNKNOWN {prop.title()}\n  world:    {_where(world)}\n"
                   f"  reason:   {verdict.reason}")
        _fail(Inconclusive(message, verdict, verdict.reason), soft)
    return verdict


def assert_captured(world: World, direction: Literal["outbound", "inbound", "both"] = "both", *,
                    ports: Sequence[int] | None = None, exclude_ports: Sequence[int] = (),
                    exclude_cidrs: Sequence[str] = (), hops: int = defaults.HOPS,
                    timeout_ms: int = defaults.TIMEOUT_MS, allow_unknown: bool = False,
                    soft: bool = False) -> tuple[Verdict, ...]:
    """Assert the sidecar captures traffic.

    * outbound (``CaptureOutbound``): every first TCP connection a process of the pod that is not the
      proxy (uid and gid differ from the proxy's) opens to a remote address — except to
      ``exclude_cidrs`` or ``exclude_ports`` — lands on the proxy's outbound listener;
    * inbound (``CaptureInbound``): every connection from the remote peer to ``ports`` (default:
      the ports the apps listen on; every port when they listen on none), except ``exclude_ports``,
      lands on the proxy's inbound side.
    """
    __tracebackhide__ = True
    from meshsolve.analysis.properties import CaptureInbound, CaptureOutbound

    out: list[Verdict] = []
    props: list[Property] = []
    if direction in ("outbound", "both"):
        props.append(CaptureOutbound(exclude_ports=tuple(exclude_ports), exclude_cidrs=tuple(exclude_cidrs)))
    if direction in ("inbound", "both"):
        if ports is None:
            app_ports = tuple(sorted({s.port for a in world.apps for s in a.sockets}))
            ports = app_ports or None
        props.append(CaptureInbound(ports=None if ports is None else tuple(ports),
                                    exclude_ports=tuple(exclude_ports)))
    for prop in props:
        out.append(assert_holds(world, prop, hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown,
                                soft=soft))
    return tuple(out)


def assert_reachable(world: World, client: str, port: int, *, dst: str | IPAddress | None = None,
                     app: str | None = None, hops: int = defaults.HOPS, timeout_ms: int = defaults.TIMEOUT_MS,
                     allow_unknown: bool = False, soft: bool = False) -> Verdict:
    """Assert ``client`` (``"peer"``, ``"proxy"`` or an app name) reaches an app socket on ``port``
    (of ``app`` if given) via ``dst`` (default: the pod IP of each family): every such connection,
    whatever its source port and endpoint choice, is delivered there (``Reachable``)."""
    __tracebackhide__ = True
    from meshsolve.analysis.properties import Reachable

    prop = Reachable(client=client, port=port, dst=dst, app=app)
    return assert_holds(world, prop, hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown, soft=soft)


def assert_no_loops(world: World, *, include_proxy_ports: bool = False, hops: int = defaults.HOPS,
                    timeout_ms: int = defaults.TIMEOUT_MS, allow_unknown: bool = False,
                    soft: bool = False) -> Verdict:
    """Assert no first connection — from the peer or from any process in the pod, the proxy included
    — loops through the proxy (``NoLoops``; connections to the proxy's own listener ports are left
    out unless ``include_proxy_ports``, since Envoy refuses those itself)."""
    __tracebackhide__ = True
    from meshsolve.analysis.properties import NoLoops

    prop = NoLoops(include_proxy_ports=include_proxy_ports)
    return assert_holds(world, prop, hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown, soft=soft)


def assert_observed(world: World, client: str, dst: str | IPAddress, port: int, *,
                    sides: Sequence[Literal["out", "in"]] = ("out", "in"), delivered: bool = True,
                    hops: int = defaults.HOPS, timeout_ms: int = defaults.TIMEOUT_MS,
                    allow_unknown: bool = False, soft: bool = False) -> Verdict:
    """Assert every connection of ``client`` to ``dst:port`` is seen by the proxy on each of ``sides``
    (``"out"``: client-side telemetry, ``"in"``: server-side) and, with ``delivered``, is delivered
    to an app (``Observation``). The seed's self-call: ``assert_observed(w, "app", vip, 9001)``."""
    __tracebackhide__ = True
    from meshsolve.analysis.properties import Observation

    prop = Observation(client=client, dst=dst, port=port, sides=tuple(sides), delivered=delivered)
    return assert_holds(world, prop, hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown,
                        soft=soft)


def assert_bypass(world: World, *, hops: int = defaults.HOPS, timeout_ms: int = defaults.TIMEOUT_MS,
                  allow_unknown: bool = False, soft: bool = False) -> Verdict:
    """Assert the proxy's own connections to remote addresses are never captured (``Bypass``)."""
    __tracebackhide__ = True
    from meshsolve.analysis.properties import Bypass

    return assert_holds(world, Bypass(), hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown,
                        soft=soft)


def assert_no_exposure(world: World, *, hops: int = defaults.HOPS, timeout_ms: int = defaults.TIMEOUT_MS,
                       allow_unknown: bool = False, soft: bool = False) -> Verdict:
    """Assert no app socket bound to a loopback address is reachable from the peer (``NoExposure``)."""
    __tracebackhide__ = True
    from meshsolve.analysis.properties import NoExposure

    return assert_holds(world, NoExposure(), hops=hops, timeout_ms=timeout_ms, allow_unknown=allow_unknown,
                        soft=soft)


def assert_equivalent(a: World, b: World, *, labels: tuple[str, str] | None = None,
                      hops: int = defaults.HOPS, timeout_ms: int = defaults.TIMEOUT_MS,
                      allow_unknown: bool = False, soft: bool = False) -> list[DiffResult]:
    """Assert two worlds end every first connection the same way (``meshsolve.diff``: outcome, app
    socket reached, source the app sees, proxy sides observing it; per family and client kind).

    On failure the :class:`Counterexample` carries the first differing flow and both traces; the
    message lists every difference found (one per scope). ``labels`` name the worlds in the message
    (default: their names, or ``a``/``b``).
    """
    __tracebackhide__ = True
    from meshsolve.analysis.diff import Different, DiffUnknown, diff

    la, lb = labels or ((a.name, b.name) if a.name != b.name else ("a", "b"))
    results = diff(a, b, hops=hops, timeout_ms=timeout_ms)
    different = [r for r in results if isinstance(r, Different)]
    unknown = [r for r in results if isinstance(r, DiffUnknown)]
    if different:
        width = max(len(la), len(lb))
        parts = [f"meshsolve: {la} and {lb} are not equivalent ({len(different)} difference"
                 f"{'s' if len(different) > 1 else ''})"]
        for d in different:
            parts += [f"  scope: {d.scope}",
                      f"  counterexample: {d.flow}",
                      f"    {la:<{width}}: {d.a.summary}",
                      f"    {lb:<{width}}: {d.b.summary}",
                      f"  trace in {la}:", _indent(str(d.a), "    "),
                      f"  trace in {lb}:", _indent(str(d.b), "    ")]
        parts += [f"  unknown: {u.scope}: {u.reason}" for u in unknown]
        first = different[0]
        _fail(Counterexample("\n".join(parts), results, first.flow, (first.a, first.b)), soft)
    elif unknown and not allow_unknown:
        reasons = "; ".join(f"{u.scope}: {u.reason}" for u in unknown)
        _fail(Inconclusive(f"meshsolve: {la} and {lb}: equivalence UNKNOWN\n  {reasons}", results, reasons),
              soft)
    return results


def assert_flow(world: World, flow: Flow, expected: str, *, max_hops: int = defaults.HOPS) -> Result:
    """Assert one concrete ``flow`` ends as ``expected``, in the cell notation of ``Result.summary``
    (``"in, app<-127.0.0.6"``, ``"out, in, refused"``, ``"out, egress 203.0.113.5:443"``). Proves
    nothing beyond that flow; the failure message carries its numbered trace."""
    __tracebackhide__ = True
    from meshsolve.semantics.interpret import interpret

    result = interpret(world, flow, max_hops=max_hops)
    if result.summary != expected:
        message = (f"meshsolve: {flow} ends as {result.summary!r}, expected {expected!r}\n"
                   f"  world: {_where(world)}\n{_indent(str(result))}")
        raise Counterexample(message, result, flow, (result,))
    return result


# --- pytest plugin (entry point ``meshsolve``) ------------------------------------------------------

_MANIFESTS_INI = "meshsolve_manifests"
_VERSION_INI = "meshsolve_istio_version"
_POD_ARG = "meshsolve_pod"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshsolve", "meshsolve: capture set-ups as test parameters")
    group.addoption("--meshsolve-manifest", action="append", default=[], metavar="PATH",
                    help="a Kubernetes manifest whose pods parametrize tests taking 'meshsolve_pod' "
                         "(repeatable; adds to the ini option meshsolve_manifests)")
    group.addoption("--meshsolve-istio", default=None, metavar="VERSION",
                    help="Istio version for those pods (default: read from the manifest, else current)")
    parser.addini(_MANIFESTS_INI, "manifests whose pods parametrize 'meshsolve_pod'", type="paths",
                  default=[])
    parser.addini(_VERSION_INI, "Istio version for the meshsolve_pod manifests", default="")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _POD_ARG not in metafunc.fixturenames:
        return
    import pytest

    config = metafunc.config
    paths = [*config.getini(_MANIFESTS_INI), *config.getoption("--meshsolve-manifest")]
    version = config.getoption("--meshsolve-istio") or config.getini(_VERSION_INI) or None
    if not paths:
        metafunc.parametrize(_POD_ARG, [pytest.param(None, marks=pytest.mark.skip(
            reason="no manifests: set the ini option meshsolve_manifests or --meshsolve-manifest"))])
        return
    params = []
    for path in paths:
        for world in _manifest_worlds(str(path), version):
            params.append(pytest.param(world, id=f"{world.namespace}/{world.name}"))
    metafunc.parametrize(_POD_ARG, params)


_WORLD_CACHE: dict[tuple[str, str | None], tuple[World, ...]] = {}


def _manifest_worlds(path: str, version: str | None) -> tuple[World, ...]:
    key = (path, version)
    if key not in _WORLD_CACHE:
        from meshsolve.api import worlds_from_manifest

        _WORLD_CACHE[key] = worlds_from_manifest(path, version=version)
    return _WORLD_CACHE[key]
