"""Ambient mode's in-pod capture: istio-cni's rules in the pod and on the node, ztunnel's behaviour
and the pod's policy routing, per Istio version and pod option (``AmbientConfig``)."""

from meshsolve.istio.ambient.config import AmbientConfig
from meshsolve.istio.ambient.iptables import host_rules, host_text, inpod_rules, inpod_text

__all__ = ["AmbientConfig", "host_rules", "host_text", "inpod_rules", "inpod_text"]
