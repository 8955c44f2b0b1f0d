"""The input door beyond the stored corpus: wrappers no stored paste has in full, failures in a table
after the first, the one way containers become apps, socket listings, version inference for every
release. Derived inputs are built from the corpus files or generated rules, never typed as if real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshsolve import UnsupportedError, world_from_dump, worlds_from_manifest_text
from meshsolve.errors import ParseError, SpecError
from meshsolve.inputs import apps_of_pod, default_config, load, read_binds, worlds_of_manifest
from meshsolve.iptables import parse_text, read_text, render_save
from meshsolve.istio import generate
from meshsolve.istio.config import KNOWN_MINORS
from meshsolve.istio.fingerprint import mesh_of_rules, partial_state, versions_of
from meshsolve.model.provenance import Assumed, Given

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
LOG_113 = (CORPUS / "istio-1.13-init-full-log-with-save-unattributed.log").read_text(encoding="utf-8")
STATE_113 = parse_text(LOG_113)


def _body() -> list[str]:
    """The 1.13 log without its prompt line."""
    return LOG_113.splitlines()[1:]


@pytest.mark.parametrize("wrap", [
    lambda ln: f"[pod/mall-admin-6cbfb4bf8f-gbfkl/istio-init] {ln}",      # kubectl logs --prefix
    lambda ln: f"mall-admin-6cbfb4bf8f-gbfkl istio-init {ln}",           # stern
    lambda ln: f"2022-04-21T10:19:44.852472123Z stdout F {ln}",          # CRI (/var/log/pods)
    lambda ln: json.dumps({"log": ln + "\n", "stream": "stdout", "time": "2022-04-21T10:19:44Z"}),  # Docker
    lambda ln: f"    {ln}",                                              # an indented paste
], ids=["kubectl-prefix", "stern", "cri", "docker-json", "indented"])
def test_a_wrapped_log_reads_as_the_bare_log(wrap: object) -> None:
    text = "\n".join(wrap(ln) for ln in _body()) + "\n"  # type: ignore[operator]
    reading = read_text(text, "wrapped.log")
    assert reading.rulesets == STATE_113 and reading.istio_log and not reading.failures
    assert reading.notes and reading.notes[0].startswith("took off ")


def test_cri_partial_lines_are_joined() -> None:
    dump = render_save(generate(default_config("1.13")).ipv4)
    assert dump.startswith("*nat\n")
    lines = ["2024-01-01T00:00:00Z stdout P *n", "2024-01-01T00:00:00Z stdout F at",
             *(f"2024-01-01T00:00:00Z stdout F {ln}" for ln in dump.splitlines()[1:])]
    assert read_text("\n".join(lines), "cri.log").rulesets == parse_text(dump)


def test_logfmt_dump_is_unescaped() -> None:
    dump = render_save(STATE_113.ipv4).replace("\n", "\\n")
    text = (f'time="2024-10-11T07:57:39Z" level=info msg="iptables-save -t nat"\n'
            f'time="2024-10-11T07:57:39Z" level=info msg="{dump}"\n')
    assert read_text(text, "logfmt.log").rulesets == parse_text(render_save(STATE_113.ipv4))


def test_restore_failing_in_the_second_table_installed_the_first() -> None:
    """iptables-restore commits table by table (kernel facts, fact 12): a failure at a line of the
    second table leaves the first one applied."""
    text = "\n".join([
        "Writing following contents to rules file: /tmp/rules.txt",
        "* nat", "-N ISTIO_REDIRECT", "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001", "COMMIT",
        "* mangle", "-N ISTIO_DIVERT", "-A ISTIO_DIVERT -j MARK --set-mark 1337", "COMMIT",
        "iptables-restore --noflush /tmp/rules.txt",
        "iptables-restore: line 7 failed",
        "panic: exit status 1",
    ])
    (failure,) = read_text(text, "init.log").failures
    assert failure.installed == "the nat table of its rules file"
    assert failure.not_installed.startswith("the mangle table of its rules file")
    assert failure.status == 1 and failure.command == "iptables-restore --noflush /tmp/rules.txt"


def test_listing_of_one_chain_takes_its_table_from_the_command() -> None:
    text = ("$ iptables -t nat -S ISTIO_REDIRECT\n-N ISTIO_REDIRECT\n"
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n")
    reading = read_text(text, "one.txt")
    assert reading.rulesets is not None and reading.rulesets.ipv4.chain("nat", "ISTIO_REDIRECT") is not None
    with pytest.raises(ParseError, match="whose table cannot be told"):
        read_text("-N MINE\n-A MINE -j RETURN\n", "one.txt")


def test_other_meshes_and_no_mesh_are_named_not_checked() -> None:
    kuma = (ROOT.parent / "shared" / "reference" / "frontier" / "kuma" / "container"
            / "debian-12-with-multiple-flags.iptables-nft.golden")
    if kuma.exists():
        assert mesh_of_rules(parse_text(kuma.read_text())).kind == "kuma"
        with pytest.raises(UnsupportedError, match="Kuma"):
            world_from_dump(kuma)
    empty = parse_text("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    assert mesh_of_rules(empty).kind == "none"
    docker = parse_text("*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -j DOCKER\n"
                        "-A DOCKER -p tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n")
    assert mesh_of_rules(docker).name.startswith("Docker")


def test_partial_state_names_the_missing_hook() -> None:
    rules = generate(default_config("1.13"))
    text = render_save(rules.ipv4).replace("-A OUTPUT -p tcp -j ISTIO_OUTPUT\n", "")
    assert "ISTIO_OUTPUT captures but nothing jumps to it from OUTPUT" in (partial_state(parse_text(text)) or "")
    assert partial_state(rules) is None
    no_inbound = generate(default_config("1.13").evolve(inbound_ports=()))
    assert partial_state(no_inbound) is None  # -b "": no inbound capture, by configuration


@pytest.mark.parametrize("minor", list(KNOWN_MINORS))
def test_every_release_is_in_the_range_its_own_rules_fit(minor: int) -> None:
    version = f"1.{minor}"
    for ports in ((9080,), (8080, 9090)):
        fits = versions_of(generate(default_config(version, ports)))
        assert version in fits.versions, (version, str(fits))
        assert len(fits.versions) < len(KNOWN_MINORS)


def test_one_way_containers_become_apps() -> None:
    """A container called 'proxy' declaring the sidecar's port: renamed, the port left out, noted; the
    API and the command line's door agree."""
    manifest = ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n---\n"
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n"
                "    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
                "      - name: proxy\n        ports: [{containerPort: 15001}, {containerPort: 9080}]\n")
    (loaded,) = worlds_of_manifest(manifest, version="1.13", source="web.yaml")
    assert loaded.world is not None
    (app,) = loaded.world.apps
    assert app.name == "proxy-container" and [s.port for s in app.sockets] == [9080]
    assert any("skipped the ServiceAccount 'web'" in n for n in loaded.notes)
    assert any("declares port 15001, which the sidecar listens on" in n for n in loaded.notes)
    assert worlds_from_manifest_text(manifest, version="1.13") == (loaded.world,)
    listener = next(p for p in loaded.parts if p.kind == "listener")
    assert isinstance(listener.provenance, Assumed) and "web.yaml:13" in listener.provenance.why


def test_apps_of_pod_reads_ids_and_gives_lines() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"},
           "spec": {"securityContext": {"runAsUser": 5}, "containers": [
               {"name": "a", "securityContext": {"runAsGroup": 6}, "ports": [{"containerPort": 80}]}]}}
    got = apps_of_pod(pod)
    assert [(a.name, a.uid, a.gid) for a in got.apps] == [("a", 5, 6)]
    assert isinstance(next(p for p in got.parts if p.kind == "app").provenance, Given)


def test_ss_with_uids_gives_the_apps_ids() -> None:
    text = ("State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n"
            'LISTEN 0      128    0.0.0.0:8000       0.0.0.0:*         users:(("web",pid=7,fd=3)) uid:2000\n'
            'LISTEN 0      128    127.0.0.1:15000    0.0.0.0:*         users:(("envoy",pid=9,fd=3)) uid:1337\n')
    b = read_binds(text, "ss.txt")
    assert b.apps is not None and [(a.name, a.uid) for a in b.apps] == [("web", 2000)]
    assert any(isinstance(p.provenance, Given) and p.kind == "app" for p in b.parts)


def test_failed_init_leaves_no_world_but_says_why(tmp_path: Path) -> None:
    loaded = load(rules=str(CORPUS / "istio-1.5to1.10-init-failed-nat-table-istio28897.log"))
    assert loaded.world is None and [p.code for p in loaded.problems] == ["MSH0110"]
    with pytest.raises(SpecError, match="istio-init failed"):
        loaded.require_world()
    with pytest.raises(SpecError, match="istio-init failed"):
        world_from_dump(CORPUS / "istio-1.5to1.10-init-failed-nat-table-istio28897.log")


def test_no_port_from_nowhere_with_rules_alone() -> None:
    """With the rules only, the world's listeners are the ports the rules name, or one standing for
    all of them, each marked assumed; nothing on the old made-up port."""
    for name in ("istio-1.13-init-full-log-with-save-unattributed.log", "istio-1.0.2-nat-S-istioio-blog.txt"):
        loaded = load(rules=str(CORPUS / name))
        assert loaded.world is not None
        ports = [s.port for a in loaded.world.apps for s in a.sockets]
        assert 8080 not in ports and ports
        listeners = [p for p in loaded.parts if p.kind == "listener"]
        assert listeners and all(p.assumed for p in listeners)


def test_one_sidecar_in_either_backend_gets_the_same_listeners_and_answers(capsys: pytest.CaptureFixture[str]) -> None:
    """The same Istio sidecar as iptables-save text and as native nft tables: the rules name the same
    listener stand-in and exempt the same ports (the tunnel port 15008 RETURNs in both), so check
    proves the same properties (no finding about 15008 from the nft copy)."""
    from meshsolve.cli import main
    from meshsolve.inputs.rules import listeners_of_rules, read_rules

    ipt, nft = (read_rules(ROOT / "docs/examples" / f) for f in ("sidecar-ipv4-iptables.txt", "sidecar-ipv4.nft"))
    assert ipt.rulesets is not None and nft.rulesets is not None
    a, b = listeners_of_rules(ipt.rulesets), listeners_of_rules(nft.rulesets)
    assert (a.wildcard, a.representative, a.excluded) == (b.wildcard, b.representative, b.excluded)
    assert 15008 in b.excluded
    summaries = []
    for f in ("sidecar-ipv4-iptables.txt", "sidecar-ipv4.nft"):
        assert main(["check", "--rules", str(ROOT / "docs/examples" / f)]) == 0
        summaries.append(capsys.readouterr().out.strip().splitlines()[-1].split(" for Pod ")[0])
    assert summaries[0] == summaries[1], summaries
