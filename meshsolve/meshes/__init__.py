"""Meshes other than Istio, as profiles in Istio's shape: settings → the rules their init step writes
(``generate``), what their proxy does (``proxy_behavior`` → ``ProxyBehavior``), and pods → settings.

- :mod:`meshsolve.meshes.linkerd` — linkerd2-proxy-init (uid 2102, 4140/4143, ignored ports, the
  inbound-only ``--subnets-to-ignore``; the inbound side targets the original destination from 2.11);
- :mod:`meshsolve.meshes.kuma` — ``kumactl install transparent-proxy`` (uid 5678, Istio ≥1.10's
  loopback structure, its exclusion options, DNS);
- :mod:`meshsolve.meshes.consul` — ``consul connect redirect-traffic`` (the SDK's ``iptables.Config``;
  ``consul_nft`` its nftables port);
- :mod:`meshsolve.meshes.select` — which mesh a pod (:func:`select_mesh`, ``--mesh`` overrides) or a
  dump belongs to, the :class:`MeshSetup` of a pod under it, and which rules are the mesh's own.
"""

from meshsolve.meshes.common import MeshSetup, without_comments
from meshsolve.meshes.select import (
    MESHES,
    MeshChoice,
    default_setup,
    mesh_of_pod,
    mesh_of_rules,
    own_rule,
    owns_chain,
    select_mesh,
    setup_for_pod,
)

__all__ = [
    "MESHES",
    "MeshChoice",
    "MeshSetup",
    "default_setup",
    "mesh_of_pod",
    "mesh_of_rules",
    "own_rule",
    "owns_chain",
    "select_mesh",
    "setup_for_pod",
    "without_comments",
]
