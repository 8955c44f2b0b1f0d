"""The sidecar proxy's behaviour per Istio version, as a ``meshsolve.model.ProxyBehavior``.

REDIRECT mode:

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
The proxy's uid/gid are the first of the configured lists.

TPROXY mode (``docs/tproxy.md`` has the sources for each line):

* the injector runs the proxy as uid 0 with gid 1337 and NET_ADMIN, so the gid rules are what
  recognise it; pilot marks the virtual listeners ``transparent`` (``IP_TRANSPARENT``), and the
  world gets the policy routing of istio-init (``fwmark MARK lookup TABLE``, a local default route);
* 1.0–1.8: TPROXY sends inbound connections to the proxy port (15001), the outbound listener. Up to
  1.4 its ``use_original_dst`` still hands them to the per-port inbound listeners (dispatch); from
  1.5 those listeners are folded into the 15006 listener and dropped, so the 15001 listener treats
  an inbound connection as outbound (passthrough to the pod IP);
* ≥1.6: the 15006 listener has Envoy's ``original_src`` filter: its upstream connects from the
  client's own address (``inbound_original_source``); ≥1.9 with mark 1337 on that socket
  (``upstream_mark``; the mark is a constant in pilot, not istio-init's ``-t``), which the
  CONNMARK rules of that era carry to the replies so policy routing brings them back;
* ≥1.9: TPROXY sends inbound connections to the inbound capture port (15006), and the inbound side
  forwards to the pod IP (for 1.9 an inference: an upstream to 127.0.0.1 from the client's address
  cannot be answered, the kernel oracle shows every inbound connection dropped then, while the
  1.9 change was reported working).
"""

from __future__ import annotations

from meshsolve.errors import SpecError
from meshsolve.istio.config import WILDCARD, CaptureConfig, normalise_version
from meshsolve.model.world import ProxyBehavior

__all__ = ["ORIGINAL_SRC_MARK", "proxy_behavior"]

# Envoy original_src's SO_MARK as pilot configures it (a literal, whatever istio-init's -t says)
ORIGINAL_SRC_MARK = 1337


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
    tproxy = config.mode == "TPROXY"
    gid = _numeric(config.proxy_gids, "proxy gid")
    uid = 0 if tproxy else _numeric(config.proxy_uids, "proxy uid")
    inbound = config.effective_inbound_capture_port()
    # where inbound captures land: TPROXY --on-port is the proxy port up to 1.8
    landing = config.proxy_port if tproxy and m <= 8 else inbound
    dispatch = landing == config.proxy_port and not (tproxy and m >= 5)
    inbound_port = None if inbound == config.proxy_port else inbound
    inbound_ports = None
    if m <= 2 and config.inbound_ports != WILDCARD:
        inbound_ports = tuple(config.inbound_ports)
    original_src = tproxy and m >= 6
    mark = ORIGINAL_SRC_MARK if tproxy and m >= 9 else None
    if m >= 10 or (tproxy and m >= 9):
        if m == 9:  # TPROXY 1.9: to the pod IP (docs/tproxy.md: localhost cannot answer the client's address)
            return ProxyBehavior(uid=uid, gid=gid, outbound_port=config.proxy_port, inbound_port=inbound_port,
                                 virtual_inbound_dispatch=dispatch, inbound_ports=inbound_ports,
                                 inbound_endpoint="original_dst", transparent=True, inbound_original_source=True,
                                 upstream_mark=mark)
        return ProxyBehavior(uid=uid, gid=gid, outbound_port=config.proxy_port, inbound_port=inbound_port,
                             virtual_inbound_dispatch=dispatch, inbound_ports=inbound_ports,
                             inbound_endpoint="original_dst", inbound_source_v4="127.0.0.6",
                             inbound_source_v6="::6", transparent=tproxy, inbound_original_source=original_src,
                             upstream_mark=mark)
    return ProxyBehavior(uid=uid, gid=gid, outbound_port=config.proxy_port, inbound_port=inbound_port,
                         virtual_inbound_dispatch=dispatch, inbound_ports=inbound_ports,
                         inbound_endpoint="localhost", transparent=tproxy, inbound_original_source=original_src,
                         upstream_mark=mark)
