"""Fleet audit: grouping by effective capture set-up, per-pod findings, the listing streamed with its lines."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from meshsolve.errors import SpecError
from meshsolve.fleet import FleetProgress, audit, group_pods, load_fleet
from meshsolve.inputs import podlist
from meshsolve.inputs.podlist import PodListing
from meshsolve.yamllines import YamlLines

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "docs" / "examples" / "fleet.yaml"


def test_pods_are_grouped_by_capture_set_up() -> None:
    pods = load_fleet(FLEET)
    assert [str(p.subject) for p in pods] == ["Pod bookinfo/reviews-v1", "Pod bookinfo/reviews-v2",
                                              "Pod bookinfo/ratings-v1", "Pod jobs/batch-v1"]
    groups = group_pods(pods)
    assert sorted(len(g) for g in groups.values()) == [1, 1, 2]
    assert pods[0].config == pods[1].config and pods[0].config.version == "1.2"
    assert pods[2].config.version == "1.10"
    assert pods[3].apps[0].uid == 1337
    assert [p.reference for p in pods] == [f"{FLEET}:10", f"{FLEET}:46", f"{FLEET}:68", f"{FLEET}:107"]
    lines = FLEET.read_text().splitlines()
    assert lines[9].strip() == "name: reviews-v1" and lines[106].strip() == "name: batch-v1"


def test_findings_per_pod_with_and_without_a_pool() -> None:
    one = audit(FLEET, jobs=1)
    two = audit(FLEET, jobs=2)
    assert (one.pods, one.groups) == (two.pods, two.groups) == (4, 3)
    # the same witnesses whatever the number of workers (each slice of groups in a fresh process)
    assert [f.line() for f in one.report.findings] == [f.line() for f in two.report.findings]
    for res in (one, two):
        by_pod: dict[str, list[str]] = {}
        for f in res.report.findings:
            by_pod.setdefault(f.subject.name, []).append(f.code)
        assert by_pod == {"reviews-v1": ["MSH0104"], "reviews-v2": ["MSH0104"], "batch-v1": ["MSH0144"]}
        assert res.report.exit_code == 79
        assert len(res.report.checked) == 4 * 6  # the default set plus reach of the one app port


def _listing(items: list[dict[str, object]], fmt: str) -> str:
    """A List laid out as ``kubectl get pods -A -o json|yaml`` writes it (items before kind in JSON)."""
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}},
                          indent=4) + "\n"
    return yaml.safe_dump({"apiVersion": "v1", "items": items, "kind": "List"}, sort_keys=False)


def test_listings_are_streamed_with_the_files_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items read one by one (JSON refilled 64 characters at a time, YAML in batches of 3) give the
    pods, and the name lines, that reading the whole file gives."""
    monkeypatch.setattr(podlist, "CHUNK", 64)
    monkeypatch.setattr(podlist, "YAML_BATCH", 3)
    doc = yaml.safe_load(FLEET.read_text())
    items = [json.loads(json.dumps(dict(i, metadata={**i["metadata"], "namespace": f"ns-{n}"})))  # no YAML aliases
             for n in range(3) for i in doc["items"]]
    for fmt in ("json", "yaml"):
        path = tmp_path / f"fleet.{fmt}"
        text = _listing(items, fmt)
        path.write_text(text)
        listed = list(PodListing(path))
        assert not any(i.whole for i in listed) and [i.doc for i in listed] == items
        pods = load_fleet(path)
        assert [p.config for p in pods] == [p.config for p in load_fleet(FLEET)] * 3
        whole = YamlLines(text)  # the index of the whole text: the n-th pod of a name
        assert [p.reference for p in pods] == [f"{path}:{whole.object_line(p.subject.name, p.nth)}" for p in pods]
        lines = text.splitlines()
        for p in pods:
            assert p.subject.name in lines[int(str(p.reference).rsplit(":", 1)[1]) - 1]
    compact = tmp_path / "compact.json"  # one line: every pod on line 1, no name line found
    compact.write_text(json.dumps({"kind": "List", "items": items}))
    assert [p.config for p in load_fleet(compact)] == [p.config for p in load_fleet(FLEET)] * 3


def test_a_name_written_before_the_pods_own_name_line_is_not_taken_for_it(tmp_path: Path) -> None:
    """The name line is looked for first in the lines up to the first that holds the name: a label,
    an annotation or a longer name holding it earlier leaves the pod's own ``metadata.name`` line."""
    items = []
    for n, (labels, notes) in enumerate(([{"statefulset.kubernetes.io/pod-name": "web-0"}, {}],
                                               [{}, {"note": "web-1 is the second"}],
                                               [{"app": "web-22"}, {}],
                                               [{}, {}])):
        pod = _pod(f"web-{n}", f"203.0.113.{n + 1}")
        pod["metadata"] = {"annotations": notes, "labels": labels, "name": f"web-{n}", "namespace": "shop"}
        items.append(pod)
    for fmt in ("json", "yaml"):
        path = tmp_path / f"sts.{fmt}"
        text = _listing(items, fmt)
        path.write_text(text)
        whole = YamlLines(text)
        pods = load_fleet(path)
        assert [p.reference for p in pods] == [f"{path}:{whole.object_line(f'web-{n}')}" for n in range(4)]
        lines = text.splitlines()
        for n, p in enumerate(pods):
            line = lines[int(str(p.reference).rsplit(":", 1)[1]) - 1].strip()
            assert line in (f'"name": "web-{n}",', f"name: web-{n}")


def test_other_shapes_are_read_whole(tmp_path: Path) -> None:
    """Several documents, a List holding a workload after its pods (read again, whole), a single pod."""
    doc = yaml.safe_load(FLEET.read_text())
    docs = tmp_path / "docs.yaml"
    docs.write_text(yaml.safe_dump_all(doc["items"], sort_keys=False))
    assert all(i.whole for i in PodListing(docs))
    index = YamlLines(docs.read_text())
    assert [p.reference for p in load_fleet(docs)] == [f"{docs}:{index.object_line(i['metadata']['name'])}"
                                                       for i in doc["items"]]
    assert index.object_line("reviews-v1") == 4
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}}}}
    for fmt in ("json", "yaml"):
        mixed = tmp_path / f"mixed.{fmt}"
        mixed.write_text(_listing([*doc["items"], deployment], fmt))
        assert [p.subject.name for p in load_fleet(mixed)] == [*(i["metadata"]["name"] for i in doc["items"]), "web"]
    dashes = tmp_path / "dashes.yaml"  # an item written ``-`` with its keys below: not kubectl's layout
    dashes.write_text("kind: List\nitems:\n- kind: Pod\n  metadata:\n    name: a\n-\n  kind: Pod\n  metadata:\n    name: b\n")
    assert [(i.whole, len(i.doc["items"])) for i in PodListing(dashes)] == [(True, 2)]
    assert [p.reference for p in load_fleet(dashes)] == [f"{dashes}:5", f"{dashes}:9"]
    one = tmp_path / "pod.json"
    one.write_text(json.dumps(doc["items"][0], indent=2))
    assert [p.reference for p in load_fleet(one)] == [f"{one}:5"]  # {, apiVersion, kind, metadata, name
    with pytest.raises(SpecError, match="no pod in the manifest"):
        empty = tmp_path / "empty.json"
        empty.write_text(json.dumps({"apiVersion": "v1", "items": [], "kind": "List"}))
        load_fleet(empty)


def test_a_bad_pod_deep_in_a_streamed_listing_is_named_by_its_line(tmp_path: Path) -> None:
    items = [_pod(f"p{n}", f"192.0.2.{n + 1}") for n in range(40)]
    items[33]["status"] = {"podIP": "not-an-address"}
    for fmt in ("json", "yaml"):
        path = tmp_path / f"bad.{fmt}"
        path.write_text(_listing(items, fmt))
        with pytest.raises(SpecError) as exc:
            audit(path, jobs=1)
        assert exc.value.lineno is not None and "p33" in path.read_text().splitlines()[exc.value.lineno - 1]


def test_output_does_not_depend_on_jobs_and_progress_is_told(tmp_path: Path) -> None:
    """Eleven groups (two slices of the provers), proven with one worker and with two: the same
    findings in the same order; progress counts every pod read and every group proven."""
    items = [_pod(f"p{n}", f"203.0.113.{n + 1}", exclude=f"198.51.100.{n % 11}/32") for n in range(22)]
    path = tmp_path / "pods.json"
    path.write_text(_listing(items, "json"))
    told: list[FleetProgress] = []
    one = audit(path, jobs=1, progress=told.append)
    two = audit(path, jobs=2)
    assert (one.pods, one.groups) == (two.pods, two.groups) == (22, 11)
    assert [f.line() for f in one.report.findings] == [f.line() for f in two.report.findings]
    assert one.report.checked == two.report.checked and len(one.report.checked) == 22 * 6
    assert [f.subject.name for f in one.report.findings if f.code == "MSH0104"] == [f"p{n}" for n in range(22)]
    assert told[-1].pods == 22 and told[-1].groups == told[-1].proven == 11 and not told[-1].reading
    assert any(t.reading for t in told) and told[-1].read == told[-1].size == path.stat().st_size


def test_name_lines_index_only_metadata_names() -> None:
    text = "items:\n- kind: Pod\n  metadata:\n    name: a\n  spec:\n    containers:\n    - name: a\n"
    lines = YamlLines(text)
    assert (lines.object_line("a"), lines.object_line("a", 1)) == (4, None)
    assert lines.pair_line("name", "a", 5) == 7  # the container's name, found below the pod's
    json_text = '{\n  "metadata": {\n    "labels": {"x": "y"},\n    "name": "web"\n  },\n  "spec": {}\n}\n'
    assert YamlLines(json_text).object_line("web") == 4


def _pod(name: str, ip: str | None, exclude: str = "") -> dict[str, object]:
    """An Istio 1.2 pod as its injector wrote it (the app loops through the sidecar)."""
    pod: dict[str, object] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.2.2",
                                     "args": ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                                              "-x", exclude, "-b", "9080", "-d", "15020"]}],
                 "containers": [{"name": "web", "ports": [{"containerPort": 9080}]},
                                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.2.2"}]}}
    if ip is not None:
        pod["status"] = {"podIP": ip, "podIPs": [{"ip": ip}]}
    return pod


def test_each_group_is_proven_on_its_first_pods_own_address() -> None:
    res = audit(FLEET, jobs=1)
    by_pod = {f.subject.name: f for f in res.report.findings if f.code == "MSH0104"}
    # the witness is the pod's own address (status.podIPs, given), not a stand-in
    assert "192.0.2.11" in (by_pod["reviews-v1"].witness or "")
    assert "192.0.2.10" not in by_pod["reviews-v1"].line()
    assert not any("pod IP" in a for a in by_pod["reviews-v1"].assumes)
    # the group's other pod says whose address its witness shows
    assert by_pod["reviews-v2"].witness == by_pod["reviews-v1"].witness
    assert ("shown on the pod IP 192.0.2.11 of Pod bookinfo/reviews-v1 (its group's first pod); this pod's IP "
            "192.0.2.12 lies in the same address ranges of every rule") in by_pod["reviews-v2"].assumes


def test_pods_whose_addresses_the_rules_tell_apart_are_proven_apart(tmp_path: Path) -> None:
    pods = [_pod("inside", "198.51.100.5", "198.51.100.0/24"), _pod("outside", "203.0.113.5", "198.51.100.0/24"),
            _pod("outside-too", "203.0.113.6", "198.51.100.0/24"), _pod("no-status", None, "198.51.100.0/24")]
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}, sort_keys=False))
    fleet = load_fleet(path)
    assert [p.pod_ips and str(p.pod_ips[0]) for p in fleet] == ["198.51.100.5", "203.0.113.5", "203.0.113.6", ()]
    inside, outside, outside_too, no_status = (p.place for p in fleet)
    assert ipaddress.ip_network("198.51.100.0/24") in inside[0][1]
    assert ipaddress.ip_network("198.51.100.0/24") not in outside[0][1] and outside == outside_too
    assert no_status == ()
    assert sorted(len(g) for g in group_pods(fleet).values()) == [1, 1, 2]
    res = audit(path, jobs=1)
    assert res.groups == 3
    loops = {f.subject.name: f for f in res.report.findings if f.code == "MSH0104"}
    assert "198.51.100.5" in (loops["inside"].witness or "")
    assert "203.0.113.5" in (loops["outside"].witness or "")
    # a pod whose manifest has no address is proven on a documentation address, and says so
    assert "192.0.2.10" in (loops["no-status"].witness or "")
    assert any(a == "the pod IP 192.0.2.10" for a in loops["no-status"].assumes)


def test_one_loader_one_way_to_document_lines() -> None:
    from meshsolve.errors import SpecError
    from meshsolve.istio.pod import load_workloads
    from meshsolve.yamllines import yaml_documents

    text = ("# a comment\n---\n---\nkind: Service\napiVersion: v1\nmetadata: {name: s}\n...\n"
            "--- {kind: Pod, metadata: {name: p}}\n---\n\n  # indented comment\nkind: Pod\nmetadata:\n  name: q\n")
    assert [line for _doc, line in yaml_documents(text, "m.yaml")] == [4, 8, 12]
    pods, skipped = load_workloads(text, "m.yaml")
    assert [p["metadata"]["name"] for p in pods] == ["p", "q"]
    assert skipped == ("skipped the Service 's' (m.yaml:4): it holds no pod",)
    try:
        yaml_documents("kind: Pod\n---\nkind: [\n", "bad.yaml")
    except SpecError as exc:
        assert (exc.source, exc.lineno) == ("bad.yaml", 4)
    else:
        raise AssertionError("broken YAML was read")
    assert yaml_documents('{\n  "kind": "Pod"\n}\n', "p.json") == (({"kind": "Pod"}, 1),)


def test_audit_reports_a_version_the_pods_own_fields_contradict(tmp_path: Path) -> None:
    pods = [_pod("a", "192.0.2.5"), _pod("b", "192.0.2.6")]
    pods[1]["metadata"]["annotations"] = {"sidecar.istio.io/proxyImage": "docker.io/istio/proxyv2:1.5.4"}  # type: ignore[index]
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}, sort_keys=False))
    res = audit(path, jobs=1)
    said = [(f.subject.name, f.message) for f in res.report.findings if f.code == "MSH0113"]
    assert said == [("b", "Annotation sidecar.istio.io/proxyImage (docker.io/istio/proxyv2:1.5.4) says Istio 1.5, "
                          "but the sidecar of Istio 1.2 is used (inferred from the image tag of istio-init "
                          "(docker.io/istio/proxyv2:1.2.2))")]
    ref = next(f.reference for f in res.report.findings if f.code == "MSH0113")
    assert ref is not None and "proxyImage" in path.read_text().splitlines()[int(ref.rsplit(":", 1)[1]) - 1]
    given = audit(path, jobs=1, version="1.10")  # --istio contradicts both pods' images (and b's annotation)
    assert sorted(f.subject.name for f in given.report.findings if f.code == "MSH0113") == ["a", "a", "b", "b", "b"]


def test_json_written_in_pieces_is_json_dumps_of_the_whole() -> None:
    """``audit -o json`` writes a finding or a check at a time; joined, the pieces are the document
    ``json.dumps(..., indent=2)`` makes (findings with traces, quotes and non-ASCII names, none)."""
    from meshsolve.report.findings import Subject
    from meshsolve.report.render import SCHEMA_VERSION, Checked, Report, json_chunks

    found = audit(FLEET, jobs=1).report
    odd = Report((), tuple(Checked(Subject("Pod", "ns", f'caf\u00e9-"{n}"'), "p\\q", "proved") for n in range(3)))
    for report in (found, found.suppress(["*"]), odd):
        for extra in (None, {"pods": 4, "groups": 3}):
            doc = {"schemaVersion": SCHEMA_VERSION, **(extra or {}),
                   "findings": [f.to_dict() for f in report.findings],
                   "checked": [{"origin": str(c.subject), "property": c.property, "verdict": c.verdict}
                               for c in report.checked],
                   "summary": {**report.counts(), **{k.lower(): v for k, v in report.level_counts().items()},
                               "suppressed": report.suppressed, "exitCode": report.exit_code}}
            assert "".join(json_chunks(report, extra=extra)) == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_json_in_pieces_of_an_empty_report_and_of_checks_in_runs() -> None:
    """No finding and no check; and checks whose subjects come back (runs of one subject)."""
    from meshsolve.report.findings import Subject
    from meshsolve.report.render import Checked, Report, json_chunks

    a, b = Subject("Pod", "ns", "a"), Subject("Pod", "ns", "b")
    for report in (Report((), ()), Report((), tuple(Checked(s, p, v) for s, p, v in (
            (a, "p", "proved"), (a, "q", "refuted"), (b, "p", "proved"), (a, "p", "unknown"))))):
        doc = {"schemaVersion": 1, "findings": [],
               "checked": [{"origin": str(c.subject), "property": c.property, "verdict": c.verdict}
                           for c in report.checked],
               "summary": {**report.counts(), **{k.lower(): v for k, v in report.level_counts().items()},
                           "suppressed": report.suppressed, "exitCode": report.exit_code}}
        assert "".join(json_chunks(report)) == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_set_ups_that_differ_in_one_argument_are_never_one_group(tmp_path: Path) -> None:
    """Two pods alike but for the inbound ports their istio-init captures (``-b``): two set-ups,
    proven apart, with different verdicts; a third pod like the first (another name and address in
    the same ranges) joins the first's group."""
    a, b, c = _pod("a", "203.0.113.5"), _pod("b", "203.0.113.6"), _pod("c", "203.0.113.7")
    init = b["spec"]["initContainers"][0]  # type: ignore[index]
    init["args"] = [x if x != "9080" else "9081" for x in init["args"]]
    path = tmp_path / "pods.json"
    path.write_text(_listing([a, b, c], "json"))
    fleet = load_fleet(path)
    assert [p.setup for p in fleet] == [0, 1, 0]
    assert fleet[0].config != fleet[1].config and fleet[0].config == fleet[2].config
    res = audit(path, jobs=1)
    assert (res.pods, res.groups) == (3, 2)
    verdicts = {(c.subject.name, c.property): c.verdict for c in res.report.checked}
    inbound = "inbound traffic is captured"
    assert {verdicts[(n, inbound)] for n in "ac"} == {"proved"} and verdicts[("b", inbound)] == "refuted"
