"""The sidecar proxy's behaviour per Istio version, as a ``meshsolve.model.ProxyBehavior``.

* ≤1.2: one ``virtual`` listener on the proxy port (15001) with ``use_original_dst``: inbound
  captures land there too and are handed to the inbound listener of the original destination
  (``virtual_inbound_dispatch``); the inbound cluster's endpoint is ``127.0.0.1``/``::1``.
  With an explicit inbound port list (the injector's containerPorts) the proxy only has inbound
  listeners for those ports.
* 1.3–1.9: a separate inbound listener (15006); endpoint still localhost.
* ≥1.10: inbound forwards to the original destination (the pod IP) from 127.0.0.6 / ::6
  (``PILOT_ENABLE_INBOUND_PASSTHROUGH``, default on).

In every era the inbound port is wherever the rules send inbound captures: when that is the proxy
port itself (1.0–1.2, or 1.3–1.5 without ``-b '*'``) the single listener dispatches.
The proxy's uid/gid are the first of the configured lists; in TPROXY mode the injector runs the
proxy as uid 0 with gid 1337 (so the gid rules are what recognise it).
"""

from __future__ import annotations

from meshsolve.errors import SpecError
from meshsolve.istio.config import WILDCARD, CaptureConfig, normalise_version
from meshsolve.model.world import ProxyBehavior

__all__ = ["proxy_behavior"]


def _numeric(ids: tuple[str, ...], what: str) -> int:
    for ident in ids:
        if ident.isdigit():
            return int(ident)
    raise SpecError(f"{what}: no numeric id in {','.join(ids)!r}; the proxy's id must be a number")


def proxy_behavior(version: str, config: CaptureConfig) -> ProxyBehavior:
    """What the sidecar of Istio ``version`` does with the connections ``config``'s rules hand it."""
    version = normalise_version(version)
    config = config.evolve(version=version)
    m = config.minor
    gid = _numeric(config.proxy_gids, "proxy gid")
    uid = 0 if config.mode == "TPROXY" else _numeric(config.proxy_uids, "proxy uid")
    inbound = config.effective_inbound_capture_port()
    dispatch = inbound == config.proxy_port
    transparent = config.mode == "TPROXY"  # TPROXY hands connections only to IP_TRANSPARENT listeners
    inbound_ports = None
    if m <= 2 and config.inbound_ports != WILDCARD:
        inbound_ports = tuple(config.inbound_ports)
    if m >= 10:
        return ProxyBehavior(uid=uid, gid=gid, outbound_port=config.proxy_port,
                             inbound_port=None if dispatch else inbound, virtual_inbound_dispatch=dispatch,
                             inbound_ports=inbound_ports, inbound_endpoint="original_dst",
                             inbound_source_v4="127.0.0.6", inbound_source_v6="::6", transparent=transparent)
    return ProxyBehavior(uid=uid, gid=gid, outbound_port=config.proxy_port,
                         inbound_port=None if dispatch else inbound, virtual_inbound_dispatch=dispatch,
                         inbound_ports=inbound_ports, inbound_endpoint="localhost", transparent=transparent)
