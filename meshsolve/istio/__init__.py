"""What istio-iptables and the sidecar do, per Istio version and option, as data.

- :class:`CaptureConfig` — the capture settings of one pod (validated, frozen);
- :func:`parse_flags` — istio-iptables / istio-iptables.sh argv + environment → config;
- :func:`pods_from_file` / :func:`pods_from_text` — Kubernetes Pod manifests → per-pod config;
- :func:`generate` — config → the ``Rulesets`` Istio installs (1.0 … current);
  :func:`emission` — the same as Istio's ordered ``-A``/``-I`` command stream;
- :func:`to_flags` — config → istio-iptables argv + env; :func:`render_script` — a shell script;
- :func:`proxy_behavior` — the sidecar's ``ProxyBehavior`` for a version and config.
"""

from meshsolve.istio.config import CURRENT, CaptureConfig, from_go_fields, normalise_version
from meshsolve.istio.flags import parse_flags, to_flags
from meshsolve.istio.generate import emission, generate
from meshsolve.istio.pod import PodCapture, pods_from_file, pods_from_text
from meshsolve.istio.proxy import proxy_behavior
from meshsolve.istio.script import render_script

__all__ = [
    "CURRENT",
    "CaptureConfig",
    "PodCapture",
    "emission",
    "from_go_fields",
    "generate",
    "normalise_version",
    "parse_flags",
    "pods_from_file",
    "pods_from_text",
    "proxy_behavior",
    "render_script",
    "to_flags",
]
