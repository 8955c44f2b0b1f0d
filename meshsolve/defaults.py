"""What meshsolve assumes when nobody says otherwise, each value written once.

Every layer may import this module (the model too); it imports nothing of meshsolve. Other modules
name these constants rather than repeat the numbers, so a default changes in one line.

* The solver's bounds: ``HOPS`` (connections one flow is followed for; more is a loop),
  ``TIMEOUT_MS`` and ``RLIMIT`` (one solver call of ``check``/``diff``), ``SYNTH_TIMEOUT_MS`` and
  ``SYNTH_RLIMIT`` (one solver call of the synthesizer).
* Addresses a pod gets when its input has none: ``POD_IP`` and ``PEER_IP`` per family
  (documentation addresses).
* Ids and ports: the sidecar's ``PROXY_UID``/``PROXY_GID`` and listener ports
  ``PROXY_OUTBOUND_PORT``/``PROXY_INBOUND_PORT`` (Istio's defaults), and ``APP_UID``/``APP_GID``/
  ``APP_PORT`` for an app whose ids or port nothing states, and ``REPRESENTATIVE_PORT_FLOOR``, where
  the port that stands for "every port no rule names" starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "APP_GID",
    "APP_PORT",
    "APP_UID",
    "HOPS",
    "PEER_IP",
    "POD_IP",
    "PROXY_GID",
    "PROXY_INBOUND_PORT",
    "PROXY_OUTBOUND_PORT",
    "PROXY_UID",
    "REPRESENTATIVE_PORT_FLOOR",
    "RLIMIT",
    "SYNTH_RLIMIT",
    "SYNTH_TIMEOUT_MS",
    "TIMEOUT_MS",
]

# --- solver bounds ---------------------------------------------------------------------------------

HOPS: Final = 8
"""Connections one flow is followed for (the first one and those the proxy opens); beyond: a loop."""

TIMEOUT_MS: Final = 20_000
"""Time limit of one solver call of ``check``/``diff``, in milliseconds."""

RLIMIT: Final = 50_000_000
"""Z3 resource limit of one solver call of ``check``/``diff`` (deterministic, unlike the time)."""

SYNTH_TIMEOUT_MS: Final = 60_000
"""Time limit of one solver call of the synthesizer, in milliseconds."""

SYNTH_RLIMIT: Final = 500_000_000
"""Z3 resource limit of one solver call of the synthesizer."""

# --- addresses (documentation space), by family ----------------------------------------------------

POD_IP: Final[Mapping[str, str]] = MappingProxyType({"ipv4": "192.0.2.10", "ipv6": "2001:db8::10"})
"""The pod's address when a manifest, dump or flag set gives none."""

PEER_IP: Final[Mapping[str, str]] = MappingProxyType({"ipv4": "192.0.2.20", "ipv6": "2001:db8::20"})
"""The remote peer that connects to the pod."""

# --- ids and ports ---------------------------------------------------------------------------------

PROXY_UID: Final = 1337
"""The sidecar's uid (Istio's default)."""

PROXY_GID: Final = 1337
"""The sidecar's gid (Istio's default)."""

PROXY_OUTBOUND_PORT: Final = 15001
"""The sidecar's outbound listener (istio-iptables ``-p``)."""

PROXY_INBOUND_PORT: Final = 15006
"""The sidecar's inbound listener (istio-iptables ``-z``, Istio 1.3 on)."""

APP_UID: Final = 1000
"""An app's uid when nothing states it (a manifest without ``runAsUser``, a binds entry without uid)."""

APP_GID: Final = 1000
"""An app's gid when nothing states it."""

APP_PORT: Final = 8080
"""The port an app listens on when a world is built from a configuration without apps
(``world_from_config``), and the port a pod's container is assumed to declare when Istio's
injector needs one (1.0–1.2 capture the declared ports only) and no input gives one."""

REPRESENTATIVE_PORT_FLOOR: Final = 1024
"""With no app given and rules that capture every port alike, one listener stands for an app on
any port no rule names: the lowest port from this one up that no rule mentions (``meshsolve.inputs``)."""
