"""Picking a pod's mesh (its init container, sidecar, annotations; ``--mesh`` overrides) and reading
each mesh's settings from the pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsolve.errors import SpecError
from meshsolve.istio.pod import load_pods
from meshsolve.meshes import (
    default_setup,
    kuma,
    linkerd,
    mesh_of_pod,
    mesh_of_rules,
    own_rule,
    select_mesh,
    setup_for_pod,
)
from meshsolve.model import Return, Rule, Source

PODS = Path(__file__).resolve().parent / "data" / "pods"
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _pod(name: str) -> object:
    path = (EXAMPLES / name) if name.startswith("meshes/") else (PODS / name)
    (pod,) = load_pods(path.read_text(encoding="utf-8"), str(path))
    return pod


@pytest.mark.parametrize(("file", "mesh", "evidence"), [
    ("meshes/linkerd.yaml", "linkerd", "init container linkerd-init"),
    ("meshes/linkerd-cni.yaml", "linkerd", "sidecar container linkerd-proxy"),
    ("meshes/kuma.yaml", "kuma", "init container kuma-init"),
    ("meshes/consul.yaml", "consul", "init container consul-connect-inject-init"),
    ("injected-1.10.yaml", "istio", "init container istio-init"),
])
def test_the_pod_names_its_mesh(file: str, mesh: str, evidence: str) -> None:
    choice = mesh_of_pod(_pod(file))  # type: ignore[arg-type]
    assert choice is not None and (choice.mesh, choice.evidence) == (mesh, evidence)


def test_mesh_overrides_and_unknown_names() -> None:
    pod = _pod("meshes/linkerd.yaml")
    assert select_mesh(pod, "Kuma").mesh == "kuma"  # type: ignore[arg-type]
    assert select_mesh(None, None).mesh == "istio"
    with pytest.raises(SpecError, match="unknown mesh 'cilium'"):
        select_mesh(pod, "cilium")  # type: ignore[arg-type]


def test_linkerd_pod_reads_linkerd_init() -> None:
    s = setup_for_pod(_pod("meshes/linkerd.yaml"))  # type: ignore[arg-type]
    assert (s.mesh, s.version, s.basis) == ("linkerd", "stable-2.14.10", "linkerd-init arguments")
    chain = s.rules.ipv4.chain("nat", "PROXY_INIT_REDIRECT")
    assert chain is not None and any(Source("203.0.113.0/24") in r.matches for r in chain.rules)
    assert s.proxy.inbound_endpoint == "original_dst"


def test_linkerd_cni_pod_reads_annotations() -> None:
    s = setup_for_pod(_pod("meshes/linkerd-cni.yaml"))  # type: ignore[arg-type]
    assert s.basis == "annotations (linkerd-cni)" and s.proxy.inbound_endpoint == "localhost"
    cfg, _, _ = linkerd.config_from_pod(_pod("meshes/linkerd-cni.yaml"))  # type: ignore[arg-type]
    assert [str(r) for r in cfg.inbound_ports_to_ignore] == ["4190", "4191", "3306"]
    assert [str(r) for r in cfg.outbound_ports_to_ignore] == ["25", "587"]


def test_kuma_pod_reads_kuma_init() -> None:
    s = setup_for_pod(_pod("meshes/kuma.yaml"))  # type: ignore[arg-type]
    assert (s.mesh, s.version) == ("kuma", "2.9.3")
    cfg, _, _ = kuma.config_from_pod(_pod("meshes/kuma.yaml"))  # type: ignore[arg-type]
    assert cfg.redirect_all_dns and cfg.dns_port == 15053 and cfg.uid == 5678 and cfg.families == ("ipv4",)
    assert s.rules.ipv4.table("raw") is not None  # conntrack zones for DNS
    assert s.proxy.inbound_endpoint == "original_dst" and str(s.proxy.inbound_source_v4) == "127.0.0.6"


def test_consul_pod_reads_the_redirect_traffic_annotation() -> None:
    s = setup_for_pod(_pod("meshes/consul.yaml"))  # type: ignore[arg-type]
    assert s.basis == "annotation consul.hashicorp.com/redirect-traffic-config"
    out = s.rules.ipv4.chain("nat", "CONSUL_PROXY_OUTPUT")
    assert out is not None and len(out.rules) == 4  # uid 5996 excluded above the proxy's own
    assert (s.proxy.uid, s.proxy.inbound_port, s.proxy.inbound_endpoint) == (5995, 20000, "localhost")


def test_istio_pod_goes_through_the_istio_reader() -> None:
    s = setup_for_pod(_pod("injected-1.10.yaml"))  # type: ignore[arg-type]
    assert s.mesh == "istio" and s.basis == "istio-init"
    assert setup_for_pod(_pod("injected-1.10.yaml"), mesh="linkerd").mesh == "linkerd"  # type: ignore[arg-type]


@pytest.mark.parametrize("mesh", ["istio", "linkerd", "kuma", "consul"])
def test_each_default_setup_names_its_own_chains(mesh: str) -> None:
    s = default_setup(mesh)
    choice = mesh_of_rules(s.rules)
    assert choice is not None and choice.mesh == mesh
    nat = s.rules.ipv4.table("nat")
    assert nat is not None
    assert all(own_rule(mesh, "nat", c.name, r, s.rules) for c in nat.chains for r in c.rules)
    foreign = Rule((), Return())
    assert not own_rule(mesh, "nat", "OUTPUT", foreign, s.rules)


def test_a_linkerd_dump_gets_linkerd_s_proxy_and_mesh_overrides_it() -> None:
    from meshsolve.inputs import load_configuration

    dump = str(EXAMPLES / "cohabit" / "linkerd-cni-chain.iptables-save")
    c = load_configuration(rules=dump)
    assert (c.world.proxy.uid, c.world.proxy.outbound_port, c.world.proxy.inbound_port) == (2102, 4140, 4143)
    assert any("linkerd" in n for n in c.notes)
    k = load_configuration(rules=dump, mesh="kuma")
    assert k.world.proxy.uid == 5678 and k.world.rules == c.world.rules  # the dump's rules, kuma's proxy
    with pytest.raises(SpecError, match="cannot be combined"):
        load_configuration(setup="E", mesh="linkerd")
