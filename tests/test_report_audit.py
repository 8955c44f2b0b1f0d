"""Fleet audit: grouping by effective capture set-up, per-pod findings, fast list parsing."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from meshsolve.fleet import _item_chunks, audit, group_pods, load_fleet
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


def test_json_input_and_chunked_yaml_parse(tmp_path: Path) -> None:
    doc = yaml.safe_load(FLEET.read_text())
    j = tmp_path / "fleet.json"
    j.write_text(json.dumps(doc))
    assert [p.config for p in load_fleet(j)] == [p.config for p in load_fleet(FLEET)]
    text = FLEET.read_text()
    chunks = _item_chunks(text, 3)
    assert chunks is not None and len(chunks) == 2  # 4 items, 2 per chunk
    items = [i for c in chunks for i in yaml.safe_load(c)]
    assert items == doc["items"]
    assert _item_chunks("kind: Pod\n", 2) is None
    big = tmp_path / "big.yaml"
    doc["items"] = doc["items"] * 2000  # > 1 MB: parsed in chunks across the pool
    big.write_text(yaml.safe_dump(doc, sort_keys=False))
    with ProcessPoolExecutor(2) as pool:
        pods = load_fleet(big, pool=pool, workers=2)
    assert len(pods) == 8000 and len(group_pods(pods)) == 3


def test_name_lines_index_only_metadata_names() -> None:
    text = "items:\n- kind: Pod\n  metadata:\n    name: a\n  spec:\n    containers:\n    - name: a\n"
    lines = YamlLines(text)
    assert (lines.object_line("a"), lines.object_line("a", 1)) == (4, None)
    assert lines.pair_line("name", "a", 5) == 7  # the container's name, found below the pod's
    json_text = '{\n  "metadata": {\n    "labels": {"x": "y"},\n    "name": "web"\n  },\n  "spec": {}\n}\n'
    assert YamlLines(json_text).object_line("web") == 4
