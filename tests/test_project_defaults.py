"""meshsolve.defaults: every default written once, and what the public functions really use."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import meshsolve
import meshsolve.defaults as D
from meshsolve import testing
from meshsolve.analysis.worlds import DEFAULT_PEER, DEFAULT_POD
from meshsolve.istio import CaptureConfig

PKG = Path(meshsolve.__file__).resolve().parent
BOUNDS = {"hops", "max_hops", "timeout_ms", "rlimit"}
# modules being rewritten elsewhere; each still writes a bound as a number and switches to
# meshsolve.defaults with its rewrite (delete its entry then: the test fails while it stays stale)
PENDING: dict[str, set[str]] = {}


def _literal_bounds(path: Path) -> set[str]:
    """Names of parameters and class fields in ``BOUNDS`` whose default is written as a number."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults, strict=True))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            found |= {arg.arg for arg, d in pairs if arg.arg in BOUNDS and isinstance(d, ast.Constant)}
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and node.target.id in BOUNDS and isinstance(node.value, ast.Constant)):
            found.add(node.target.id)
    return found


def test_no_module_writes_a_solver_bound_as_a_number() -> None:
    offences = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel == "defaults.py":
            continue
        got = _literal_bounds(path)
        if got != PENDING.get(rel, set()):
            offences[rel] = sorted(got)
    assert not offences, f"write these defaults as meshsolve.defaults names: {offences}"


def test_defaults_import_nothing_of_meshsolve() -> None:
    tree = ast.parse((PKG / "defaults.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] == "meshsolve"}, imported


def test_public_signatures_use_the_defaults() -> None:
    for fn in (meshsolve.check, meshsolve.audit, meshsolve.diff, testing.assert_holds, testing.assert_captured,
               testing.assert_equivalent):
        params = inspect.signature(fn).parameters
        assert params["hops"].default == D.HOPS, fn.__name__
        assert params["timeout_ms"].default == D.TIMEOUT_MS, fn.__name__
    for fn in (meshsolve.interpret, testing.assert_flow):
        assert inspect.signature(fn).parameters["max_hops"].default == D.HOPS, fn.__name__


def test_worlds_built_from_partial_inputs_use_the_defaults() -> None:
    world = meshsolve.world_from_flags(["-p", str(D.PROXY_OUTBOUND_PORT), "-b", "*"])
    assert [str(a) for a in world.pod_ips] == [D.POD_IP["ipv4"]]
    assert [str(a) for a in world.peer_ips] == [D.PEER_IP["ipv4"]]
    (app,) = world.apps  # the listener standing for every port no rule names
    assert (app.uid, app.gid, [s.port for s in app.sockets]) == (D.APP_UID, D.APP_GID, [D.REPRESENTATIVE_PORT_FLOOR])
    (configured,) = meshsolve.world_from_config(CaptureConfig(inbound_ports="*")).apps
    assert [s.port for s in configured.sockets] == [D.APP_PORT]
    assert (world.proxy.uid, world.proxy.gid) == (D.PROXY_UID, D.PROXY_GID)
    assert {fam: str(a) for fam, a in DEFAULT_POD.items()} == dict(D.POD_IP)
    assert {fam: str(a) for fam, a in DEFAULT_PEER.items()} == dict(D.PEER_IP)
    config = CaptureConfig()
    assert (config.proxy_port, config.proxy_uids, config.proxy_gids) == (
        D.PROXY_OUTBOUND_PORT, (str(D.PROXY_UID),), (str(D.PROXY_GID),))
    assert config.evolve(version="1.22").effective_inbound_capture_port() == D.PROXY_INBOUND_PORT
