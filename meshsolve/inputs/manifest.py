"""Pod manifests (``kubectl get pod -o yaml|json``, a ``List``, workloads, ``istioctl kube-inject``
output with Services next to the Deployment) → pods, their capture set-up and their apps.

:func:`apps_of_pod` is the one place a pod's containers become apps: one app per container (the
sidecar's own containers left out), its ids from ``securityContext`` (container over pod, else the
default 1000, *assumed*: the image's own user is not in the manifest), one listening TCP socket on
the wildcard address per declared ``containerPort`` (the port *given*, the bind address *assumed*:
a manifest declares ports, not bind addresses). A container called ``peer`` or ``proxy`` (the
names of flow clients) is renamed ``<name>-container``; a declared port that is one of the
sidecar's listener ports cannot be an app's listener (both cannot bind it) and is left out, as is a
port declared twice in one pod; each with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import MeshsolveError, SpecError
from meshsolve.iptables import refusal, unwrap_text
from meshsolve.istio.pod import MAX_MANIFEST_BYTES, PodCapture, load_workloads, pod_capture
from meshsolve.model.provenance import Assumed, Given, Part
from meshsolve.model.world import App, Socket
from meshsolve.yamllines import YamlLines, yaml_lines

__all__ = ["PodApps", "apps_of_pod", "read_manifest", "read_manifest_text"]

SIDECAR_CONTAINERS = frozenset({"istio-proxy", "istio-init", "istio-validation"})
_RESERVED_NAMES = ("peer", "proxy")


@attrs.frozen
class PodApps:
    """A pod's apps, the parts they are made of, notes, and each app's ``file:line``."""

    apps: tuple[App, ...]
    parts: tuple[Part, ...] = ()
    notes: tuple[str, ...] = ()
    references: tuple[tuple[str, str], ...] = ()


def _int_or(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def apps_of_pod(pod: Mapping[str, Any], *, ipv6: bool = False, proxy_ports: Sequence[int] = (),
                source: str = "<manifest>", text: str = "", nth: int = 0) -> PodApps:
    """The pod's apps (see the module notes). ``text`` (the manifest) gives the lines; ``nth`` says
    which of the pods with this name it is, in a List where names repeat."""
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    bind = "::" if ipv6 else "0.0.0.0"
    lines: YamlLines | None = yaml_lines(text) if text else None
    pod_name = str((pod.get("metadata") or {}).get("name", "pod"))
    pod_line = (lines.object_line(pod_name, nth) or lines.pair_line("name", pod_name)) if lines else None
    real = not source.startswith("<")

    def at(line: int | None) -> Given:
        return Given(source, line) if real else Given(source)

    apps: list[App] = []
    parts: list[Part] = []
    notes: list[str] = []
    refs: list[tuple[str, str]] = []
    taken: set[int] = set()
    for c in spec.get("containers") or ():
        if not isinstance(c, Mapping) or c.get("name") in SIDECAR_CONTAINERS:
            continue
        given_name = str(c.get("name", f"container{len(apps)}"))
        name = given_name
        line = lines.pair_line("name", given_name, pod_line or 0) if lines else None
        if name in _RESERVED_NAMES:
            name = f"{name}-container"
            notes.append(f"container {given_name!r} is called {name!r} here ({given_name!r} names a flow client)")
        ctx = c.get("securityContext") or {}
        uid = _int_or(ctx.get("runAsUser"), _int_or(pod_ctx.get("runAsUser"), None))
        gid = _int_or(ctx.get("runAsGroup"), _int_or(pod_ctx.get("runAsGroup"), None))
        if uid is None or gid is None:
            missing = " and ".join(w for w, v in (("runAsUser", uid), ("runAsGroup", gid)) if v is None)
            parts.append(Part("app", f"app {name} runs as uid {uid if uid is not None else defaults.APP_UID}, "
                                     f"gid {gid if gid is not None else defaults.APP_GID}",
                              Assumed(f"the manifest has no {missing} (the image's user is not in it)",
                                      "give --binds with uid/gid"), (f"uid {defaults.APP_UID}",)))
        else:
            parts.append(Part("app", f"app {name} runs as uid {uid}, gid {gid}",
                              at(lines.key_line("runAsUser", line or 0) if lines else None)))
        sockets: list[Socket] = []
        for p in c.get("ports") or ():
            if not isinstance(p, Mapping) or str(p.get("protocol", "TCP")).upper() != "TCP":
                continue
            port = _int_or(p.get("containerPort"), None)
            if port is None or port < 0:
                continue
            if port in proxy_ports:
                notes.append(f"container {given_name} declares port {port}, which the sidecar listens on: "
                             "not an app listener (the two cannot both bind it)")
                continue
            if port in taken:
                notes.append(f"container {given_name} declares port {port}, already declared in this pod: "
                             "listed once")
                continue
            taken.add(port)
            sockets.append(Socket(bind, port))
            port_line = (lines.pair_line("containerPort", str(port), line or 0) if lines else None) or line
            parts.append(Part("listener", f"app {name} listens on {bind}:{port}",
                              Assumed(f"port {port} is declared ({source}:{port_line}), the bind address "
                                      f"is not (a manifest declares ports, not addresses)",
                                      "give --binds or an `ss -ltnp` listing") if real else
                              Assumed("a manifest declares ports, not bind addresses", "give binds"),
                              (f"{bind}:{port}" if not ipv6 else f"[{bind}]:{port}", f":{port}")))
        apps.append(App(name, uid=uid if uid is not None else defaults.APP_UID,
                        gid=gid if gid is not None else defaults.APP_GID, sockets=tuple(sockets)))
        if line is not None and real:
            refs.append((name, f"{source}:{line}"))
    return PodApps(tuple(apps), tuple(parts), tuple(notes), tuple(refs))


def _refuse_describe(text: str, source: str) -> None:
    """``kubectl describe pod`` output given as a manifest: say so and name what to run instead."""
    try:
        refused = refusal(unwrap_text(text, source), source)
    except MeshsolveError:
        return
    if refused is not None and "describe" in refused.message:
        raise SpecError(refused.message.replace("give that to --pod", "give that instead"), source=source,
                        lineno=refused.lineno, line=refused.line)


def read_manifest_text(text: str, *, version: str | None = None, source: str = "<manifest>"
                       ) -> tuple[tuple[tuple[Mapping[str, Any], PodCapture], ...], tuple[str, ...]]:
    """Every pod of a manifest with its capture set-up, and notes (skipped documents)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise SpecError(f"manifest larger than {MAX_MANIFEST_BYTES} characters", source=source, lineno=1)
    try:
        pods, skipped = load_workloads(text, source)
    except SpecError:
        _refuse_describe(text, source)
        raise
    return tuple((p, pod_capture(p, version=version, source=source, text=text)) for p in pods), skipped


def read_manifest(path: str | Path, *, version: str | None = None
                  ) -> tuple[tuple[tuple[Mapping[str, Any], PodCapture], ...], tuple[str, ...], str]:
    """:func:`read_manifest_text` of a file (``-``: standard input); also returns the text."""
    import sys

    source = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = fh.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise SpecError(f"cannot read manifest: {exc.strerror or exc}", source=source) from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise SpecError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes", source=source, lineno=1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=source,
                            lineno=data.count(b"\n", 0, exc.start) + 1) from None
    pods, notes = read_manifest_text(text, version=version, source=source)
    return pods, notes, text
