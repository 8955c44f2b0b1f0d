"""``meshsolve diff`` compares two set-ups on one pod: every combination of side kinds (built-in
set-up, Istio version, rules dump, pod manifest), ``--binds`` and ``--pod``, the rule's sentence,
and the pod printed in text and JSON."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from meshsolve.analysis.diff import Different, DiffUnknown, diff
from meshsolve.cli import main
from meshsolve.diffsides import Sides, load_sides, pod_of
from meshsolve.istio import generate, parse_flags
from meshsolve.semantics.setups import APP_PORTS, setup_rules_text, setup_world

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "docs/examples/reviews-v1.yaml"
OTHER_POD = """apiVersion: v1
kind: Pod
metadata:
  name: ratings
  namespace: shop
spec:
  containers:
  - name: ratings
    image: ratings:1
    ports:
    - containerPort: 7070
    securityContext:
      runAsUser: 2000
status:
  podIP: 192.0.2.10
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    rules = tmp_path / "e-dump.txt"
    rules.write_text(setup_rules_text("E"), encoding="utf-8")
    other = tmp_path / "ratings.yaml"
    other.write_text(OTHER_POD, encoding="utf-8")
    return {"setup": "E", "istio": "1.2", "rules": f"rules:{rules}", "pod": f"pod:{REVIEWS}",
            "pod2": f"pod:{other}"}


def _ports(sides: Sides) -> tuple[set[int], set[int]]:
    return tuple({s.port for a in w.apps for s in a.sockets} for w in (sides.a.world, sides.b.world))  # type: ignore[return-value]


# (kind of A, kind of B) -> (where the pod comes from, the app ports both sides then have)
COMBINATIONS: dict[tuple[str, str], tuple[str, set[int] | None]] = {
    ("setup", "setup"): ("own", set(APP_PORTS)),
    ("setup", "istio"): ("A", set(APP_PORTS)),
    ("setup", "rules"): ("A", set(APP_PORTS)),
    ("setup", "pod"): ("B", {9080}),
    ("istio", "istio"): ("defaults", {8080}),
    ("istio", "rules"): ("defaults", None),
    ("istio", "pod"): ("B", {9080}),
    ("rules", "rules"): ("defaults", None),
    ("rules", "pod"): ("B", {9080}),
    ("pod", "pod"): ("own", {9080}),
}


@pytest.mark.parametrize(("kinds", "order"), [(k, o) for k in COMBINATIONS for o in ("ab", "ba")],
                         ids=[f"{k[0]}-{k[1]}-{o}" for k in COMBINATIONS for o in ("ab", "ba")])
def test_every_combination_of_side_kinds_is_on_one_pod(kinds: tuple[str, str], order: str,
                                                       files: dict[str, str]) -> None:
    source, ports = COMBINATIONS[kinds]
    a, b = (kinds if order == "ab" else kinds[::-1])
    sides = load_sides(files[a], files[b])
    assert sides.same_pod, sides.rule
    if ports is None:  # neither names a pod: A's own (a dump's stand-in listener, or the default app)
        ports = {s.port for app in load_sides(files[a], files[a]).a.require_world().apps for s in app.sockets}
        assert ports == ({8080} if a == "istio" else {1024})
    assert _ports(sides) == (ports, ports)
    expected = source if source in ("own", "defaults") or order == "ab" else {"A": "B", "B": "A"}[source]
    assert sides.pod_from == expected, sides.rule
    if expected in "AB":
        taker = "B" if expected == "A" else "A"
        assert sides.rule.startswith(f"{taker} (") and f"takes the pod of {expected} (" in sides.rule


def test_an_istio_version_is_derived_again_for_the_pod_it_takes(files: dict[str, str]) -> None:
    """Istio 1.2's injector lists the container ports (-b): on set-up A's pod it captures 9001-9003."""
    sides = load_sides("1.2", "A")
    want = generate(parse_flags(["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b",
                                 "9001,9002,9003", "-d", "15020"], version="1.2"))
    assert sides.a.world.rules.ipv4.chain("nat", "ISTIO_INBOUND") == want.ipv4.chain("nat", "ISTIO_INBOUND")
    assert sides.a.world.proxy.inbound_ports == APP_PORTS
    assert sides.a.label.endswith("for ports 9001,9002,9003")
    assert sides.b.world == setup_world("A")  # the giver is untouched
    # a rules dump takes the pod, and its 1.2 proxy's inbound listeners become the pod's ports
    dump = load_sides(files["rules"], "A", istio="1.2")
    assert dump.a.world.proxy.inbound_ports == APP_PORTS
    assert dump.a.world.rules == load_sides(files["rules"], files["rules"]).a.world.rules


def test_an_ipv6_pod_enables_the_ipv6_rules_of_the_side_that_takes_it() -> None:
    sides = load_sides("current", "E", family="ipv6")
    assert sides.same_pod and [a.version for a in sides.a.world.pod_ips] == [6]
    assert not sides.a.world.rules.ipv6.empty


def test_binds_and_pod_options_give_both_sides_one_pod(files: dict[str, str]) -> None:
    binds = str(ROOT / "docs/examples/reviews-v1-binds.yaml")
    sides = load_sides(files["rules"], "1.10", binds=binds)
    assert sides.pod_from == "--binds" and sides.same_pod
    assert [str(s) for s in sides.a.world.apps[0].sockets] == ["192.0.2.10:9080"]
    sides = load_sides(files["rules"], "1.10", pod=str(REVIEWS))
    assert sides.pod_from == "own" and sides.same_pod and _ports(sides) == ({9080}, {9080})


def test_two_different_manifests_keep_their_pods_and_say_so(files: dict[str, str]) -> None:
    sides = load_sides(files["pod"], files["pod2"])
    assert sides.pod_from == "own" and not sides.same_pod
    assert pod_of(sides.a.world) != pod_of(sides.b.world)
    # the solver's witness may be opened by an app only one pod has: unknown, not a crash
    results = diff(sides.a.world, sides.b.world)
    assert any(isinstance(r, Different) and r.flow.client == "peer" for r in results)
    unknown = [r for r in results if isinstance(r, DiffUnknown)]
    assert [r.reason for r in unknown] == \
        ["reviews -> 127.0.0.1:9080/tcp is opened by reviews, an app only A's pod has: the two pods differ"]


def test_the_issue_example_rules_dump_of_e_against_e_is_equivalent(files: dict[str, str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Before, the dump side ran a default app on 8080 and E its apps on 9001-9003: 2 differences."""
    assert main(["diff", files["rules"], "E"]) == 0
    out = capsys.readouterr().out
    assert "EQUIVALENT" in out and "DIFFERENT" not in out
    assert "pod: A (a rules dump) takes the pod of B (a built-in set-up): its apps, services and addresses" in out
    assert "  app app (uid 1000, gid 1000) listening on 0.0.0.0:9001, 127.0.0.1:9002, 192.0.2.10:9003" in out
    assert main(["diff", files["rules"], "E", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pod"]["from"] == "B" and doc["pod"]["same"] is True
    assert doc["pod"]["a"] == doc["pod"]["b"]
    assert doc["pod"]["a"]["apps"] == [{"name": "app", "uid": 1000, "gid": 1000,
                                        "listen": ["0.0.0.0:9001", "127.0.0.1:9002", "192.0.2.10:9003"]}]
    assert [r["verdict"] for r in doc["results"]] == ["equivalent"]


def test_differing_pods_are_printed_in_text_and_json(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    main(["diff", files["pod"], files["pod2"]])
    out = capsys.readouterr().out
    assert "pods differ (both sides are pod manifests: each keeps its own pod)" in out
    assert "  A's pod:\n    pod IP 192.0.2.10; peer 192.0.2.20; interface eth0\n" \
           "    app reviews (uid 1000, gid 1000) listening on 0.0.0.0:9080\n" in out
    assert "  B's pod:\n    pod IP 192.0.2.10; peer 192.0.2.20; interface eth0\n" \
           "    app ratings (uid 2000, gid 1000) listening on 0.0.0.0:7070\n" in out
    main(["diff", files["pod"], files["pod2"], "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["pod"]["from"] == "own" and doc["pod"]["same"] is False
    assert doc["pod"]["b"]["apps"][0]["listen"] == ["0.0.0.0:7070"]


def test_every_kind_pair_is_covered() -> None:
    kinds = ("setup", "istio", "rules", "pod")
    assert {tuple(sorted(p)) for p in itertools.combinations_with_replacement(kinds, 2)} == \
        {tuple(sorted(k)) for k in COMBINATIONS}
