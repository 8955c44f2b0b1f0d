"""Verdicts become findings: codes per property, decisive rules, origins with file:line, rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path

import attrs
import pytest

from meshsolve.analysis.check import Proved, Unknown, check
from meshsolve.analysis.properties import NoExposure, NoLoops, Observation, Reachable
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_file
from meshsolve.istio import parse_flags, proxy_behavior
from meshsolve.model.net import to_address
from meshsolve.model.world import App, Socket
from meshsolve.report import (
    Checked,
    Report,
    Subject,
    colour_enabled,
    findings_for,
    lint_world,
    render_json,
    render_text,
)
from meshsolve.report.findings import Finding
from meshsolve.report.run import check_world
from meshsolve.semantics import setup_world

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "examples" / "reviews-v1-iptables.txt"


def only(world, prop):  # type: ignore[no-untyped-def]
    fs = findings_for(world, check(world, prop))
    assert len(fs) == 1, fs
    return fs[0]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_loop_of_the_first_patch_points_at_the_loopback_rule(family: str) -> None:
    w = setup_world("B", family)  # type: ignore[arg-type]
    f = only(w, NoLoops())
    assert f.code == "MSH0104" and f.level == "Error" and f.verdict == "refuted"
    assert f.rule == "nat::ISTIO_OUTPUT#1"
    assert f.outcome is not None and f.outcome.endswith("loop")
    assert f.subject == Subject("Pod", "default", f"setup-B-{family}")
    assert f.reference is None  # built-in rules come from no file
    assert f.line().startswith(f"Error [MSH0104] (Pod default/setup-B-{family}) ")


def test_pod_ip_listener_and_exposure_of_istio_1_2() -> None:
    w = setup_world("A")
    f = only(w, Reachable("peer", 9003))
    assert f.code == "MSH0145" and f.related == "IST0143"
    assert "forwards to 127.0.0.1:9003" in f.message and f.witness == "peer -> 192.0.2.10:9003/tcp"
    g = only(w, NoExposure())
    assert g.code == "MSH0143" and g.level == "Warning" and "binds 127.0.0.1 only" in g.message


def test_reach_of_a_port_nobody_binds_is_the_generic_code() -> None:
    f = only(setup_world("E"), Reachable("peer", 9999))
    assert f.code == "MSH0106" and f.outcome == "in, refused"
    assert "does not reach an app on port 9999" in f.message


def test_lost_server_side_of_the_self_call() -> None:
    w = setup_world("C")
    f = only(w, Observation("app", "198.51.100.1", 9001))
    assert f.code == "MSH0105" and "only client side" in f.message
    assert f.rule == "nat::ISTIO_OUTPUT#1"  # the proxy's own connection returns before capture


def test_proof_gives_no_finding_and_unknown_gives_msh0199() -> None:
    w = setup_world("E")
    assert findings_for(w, check(w, NoLoops())) == ()
    (u,) = findings_for(w, Unknown(NoLoops(), "solver gave up"))
    assert u.code == "MSH0199" and u.verdict == "unknown" and "solver gave up" in u.message
    assert findings_for(w, Proved(NoLoops())) == ()


def test_rules_from_a_file_give_file_and_line() -> None:
    rules = parse_file(RULES)
    cfg = parse_flags(["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "9080"], version="1.2")
    w = world_from_rules(rules, proxy_behavior("1.2", cfg), apps=(App("reviews", sockets=(Socket("0.0.0.0", 9080),)),),
                         pod_ips=(to_address("192.0.2.10"),))
    f = only(w, NoLoops())
    assert f.rule == "nat::ISTIO_OUTPUT#1"
    assert f.reference == f"{RULES}:15"
    assert RULES.read_text().splitlines()[14] == "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ISTIO_REDIRECT"
    assert f.origin == f"Pod default/pod {RULES}:15"


def test_app_running_as_the_proxy_uid_is_msh0144() -> None:
    w = attrs.evolve(setup_world("E"), apps=(App("batch", uid=1337, gid=2000, sockets=()),))
    (f,) = lint_world(w, app_references={"batch": "pod.yaml:7"})
    assert f.code == "MSH0144" and f.related == "IST0144" and f.reference == "pod.yaml:7"
    assert "uid 1337" in f.message
    assert lint_world(setup_world("E")) == ()


def _finding(level: str, verdict: str = "refuted") -> Finding:
    return Finding("MSH0104", level, "m", Subject(), verdict=verdict)  # type: ignore[arg-type]


def test_exit_codes() -> None:
    c = (Checked(Subject(), "p", "proved"),)
    assert Report((), c).exit_code == 0
    assert Report((_finding("Error"),), c).exit_code == 79
    assert Report((_finding("Warning", "unknown"),), c).exit_code == 80
    assert Report((_finding("Error"), _finding("Warning", "unknown")), c).exit_code == 79
    assert Report((_finding("Warning"),), c, failure_threshold="Error").exit_code == 0
    assert Report((_finding("Warning"),), c, failure_threshold="Warning").exit_code == 79


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_rules() -> None:
    assert colour_enabled(_Tty(), {"TERM": "xterm"})
    assert not colour_enabled(io.StringIO(), {"TERM": "xterm"})
    assert not colour_enabled(_Tty(), {"TERM": "xterm", "NO_COLOR": ""})
    assert not colour_enabled(_Tty(), {"TERM": "dumb"})
    r = Report((_finding("Error"),), (Checked(Subject(), "p", "refuted"),))
    coloured = render_text(r, colour=True).splitlines()[0]
    assert coloured == "\x1b[1;31mError\x1b[0m [MSH0104] (Pod default/pod) m"
    assert render_text(r).splitlines()[0] == "Error [MSH0104] (Pod default/pod) m"


def test_report_text_json_and_thresholds() -> None:
    w = setup_world("A")
    r = check_world(w, (Reachable("peer", 9003), NoExposure(), Reachable("peer", 9001)))
    text = render_text(r)
    assert text.splitlines()[-1] == ("2 findings (1 error, 1 warning) for Pod default/setup-A-ipv4: "
                                     "1 proved, 2 refuted, 0 unknown of 3 properties")
    assert [ln.split()[1] for ln in render_text(r, output_threshold="Error").splitlines()[:-1]] == ["[MSH0145]"]
    explained = render_text(r, explain=True)
    assert "    flow peer -> 192.0.2.10:9003/tcp" in explained and "nothing listens on 127.0.0.1:9003" in explained
    doc = json.loads(render_json(r, extra={"configuration": "x"}))
    assert list(doc) == ["schemaVersion", "configuration", "findings", "checked", "summary"]
    assert doc["summary"] == {"proved": 1, "refuted": 2, "unknown": 0, "error": 1, "warning": 1, "info": 0,
                              "suppressed": 0, "exitCode": 79}
    assert [f["code"] for f in doc["findings"]] == ["MSH0145", "MSH0143"]
    assert doc["findings"][0]["documentationUrl"] == "docs/findings.md#msh0145"


def test_suppress_by_code_and_subject() -> None:
    r = check_world(setup_world("A"), (Reachable("peer", 9003), NoExposure()))
    assert [f.code for f in r.suppress(["MSH0145"]).findings] == ["MSH0143"]
    assert r.suppress(["MSH01*=Pod default/setup-A-*"]).findings == ()
    assert r.suppress(["MSH0145=Pod other/*"]).findings == r.findings
    s = r.suppress(["MSH0145", "MSH0143"])
    assert s.suppressed == 2 and s.exit_code == 0
    assert s.summary().startswith("✔ No issues left after suppressing 2: 0 of 2 properties proved")
    assert r.suppress(["MSH0145"]).summary().endswith("(1 suppressed)")
