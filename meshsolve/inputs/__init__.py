"""The door for what users have: one place turns inputs into a ``World`` with the provenance of each
part (``build.py``), for the API, the command line, ``audit`` and the pytest plugin alike.

- ``build.py``: :func:`load` (setup, flags, manifest, rules, binds, routing → :class:`Loaded`),
  :func:`from_ambient_pod` (a pod in Istio's ambient mode), :func:`world_of_pod` (one pod of a
  manifest: the API, the pytest plugin and ``audit``) and :func:`worlds_of_manifest` (one world per pod);
- ``manifest.py``: manifests → pods → apps (:func:`apps_of_pod`, the one place containers become apps);
- ``rules.py``: a rules input → the state to analyse, or the problem that leaves none; the
  listeners the rules make possible;
- ``binds.py``: the apps' listeners from meshsolve's binds YAML or an ``ss``/``netstat`` listing;
- ``properties.py``: the ``--property`` syntax and ``diff`` sides;
- ``meshes.py``: pods and dumps of Linkerd, Kuma and Consul (``--mesh``, or the pod's or dump's own
  mesh) and the cohabitation audit's dumps (:func:`load_cohabitation`);
- ``podlist.py``: a pod listing (``kubectl get pods -A -o json|yaml``) read item by item, each item
  with its own lines (``audit``);
- ``values.py``: :class:`Loaded` and :class:`Problem`.
"""

from meshsolve.inputs.binds import Binds, load_binds, read_binds
from meshsolve.inputs.build import (
    default_config,
    from_ambient_pod,
    from_flags,
    from_rules,
    load,
    possible_listeners,
    world_of_pod,
    worlds_of_manifest,
)
from meshsolve.inputs.manifest import PodApps, apps_of_pod, read_manifest, read_manifest_text
from meshsolve.inputs.meshes import Cohabitation, load_cohabitation, load_mesh
from meshsolve.inputs.properties import (
    check_defaults,
    family_label,
    parse_properties,
    parse_property,
    parse_side,
    property_ports,
)
from meshsolve.inputs.rules import Listeners, RulesRead, listeners_of_rules, read_rules
from meshsolve.inputs.values import Configuration, Loaded, Problem

load_configuration = load  # the earlier name

__all__ = [
    "Binds",
    "Cohabitation",
    "Configuration",
    "Listeners",
    "Loaded",
    "PodApps",
    "Problem",
    "RulesRead",
    "apps_of_pod",
    "check_defaults",
    "default_config",
    "from_ambient_pod",
    "family_label",
    "from_flags",
    "from_rules",
    "listeners_of_rules",
    "load",
    "load_binds",
    "load_cohabitation",
    "load_configuration",
    "load_mesh",
    "parse_properties",
    "parse_property",
    "parse_side",
    "possible_listeners",
    "property_ports",
    "read_binds",
    "read_manifest",
    "read_manifest_text",
    "read_rules",
    "world_of_pod",
    "worlds_of_manifest",
]
