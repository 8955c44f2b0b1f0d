"""The kind registry as the loader's rule book: every placement the real iptables-restore refuses
(measured: ``tests/iptables_loader_cases.py``, pinned on the kernel by
``tests/test_iptables_restore_kernel.py``) is refused by ``validate_rulesets``, and every one it
loads is accepted, naming the rule and its line."""

from __future__ import annotations

import pytest

from meshsolve.errors import WorldError
from meshsolve.iptables import parse_text
from meshsolve.model.kinds import MATCH_KINDS, TARGET_KINDS, enables_conntrack
from meshsolve.model.world import validate_rulesets
from tests.iptables_loader_cases import LOADER_PLACEMENT_CASES, LoaderCase


@pytest.mark.parametrize("case", LOADER_PLACEMENT_CASES, ids=lambda c: c.name)
def test_validation_refuses_exactly_what_the_loader_refuses(case: LoaderCase) -> None:
    rules = parse_text(case.text, "case.rules")
    if case.refused is None:
        validate_rulesets(rules)
        return
    with pytest.raises(WorldError) as err:
        validate_rulesets(rules)
    assert f"case.rules:{case.line}" in str(err.value)


def test_owner_reached_from_prerouting_is_refused_through_user_chains() -> None:
    text = "*nat\n:X - [0:0]\n-A PREROUTING -j X\n-A X -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n"
    with pytest.raises(WorldError, match="reached from PREROUTING"):
        validate_rulesets(parse_text(text))


def test_what_switches_connection_tracking_on() -> None:
    # seen on the kernel: a nat table of counting rules never runs until something needs conntrack
    assert not enables_conntrack(parse_text("*nat\n-A OUTPUT -p tcp -j RETURN\nCOMMIT\n").ipv4)
    for rule in ("-A OUTPUT -p tcp -j REDIRECT", "-A OUTPUT -m conntrack --ctstate NEW -j RETURN",
                 "-A OUTPUT -m state --state NEW -j RETURN", "-A OUTPUT -j DNAT --to-destination 192.0.2.1"):
        assert enables_conntrack(parse_text(f"*nat\n{rule}\nCOMMIT\n").ipv4), rule
    assert {k.name for k in TARGET_KINDS.values() if k.conntrack} >= {"REDIRECT", "DNAT", "CT", "CONNMARK"}
    assert {k.name for k in MATCH_KINDS.values() if k.conntrack} == {"conntrack", "state", "connmark"}


# --- owner ids are decoded once, in the model ---------------------------------------------------


@pytest.mark.parametrize(("token", "decoded"), [
    ("1337", (1337, 1337)), (" 1000-2000 ", (1000, 2000)), ("0", (0, 0)), ("4294967295", (4294967295, 4294967295)),
    ("java", None), ("istio-proxy", None), ("4294967296", None), ("\u00b2", None), ("1-", None), ("", None),
])
def test_owner_ids_are_decoded_in_the_model(token: str, decoded: tuple[int, int] | None) -> None:
    from meshsolve.model.net import decode_ids
    from meshsolve.model.rules import OwnerMatch, SocketOwner

    assert decode_ids(token) == decoded
    m = OwnerMatch(uid=token, gid=token)
    assert m.uid_range == m.gid_range == decoded
    assert OwnerMatch(uid=token) == OwnerMatch(uid=token)  # the decoded value does not take part in equality
    if token.strip():
        assert SocketOwner("uid", (token, "7")).ranges == tuple(
            decode_ids(t) for t in sorted({token, "7"}))
    assert OwnerMatch().uid_range is None and OwnerMatch().gid_range is None


# --- docs/proofs.md lists exactly the registry's coarsenings --------------------------------------


def test_proofs_md_lists_the_coarsenings_generated_from_the_registry() -> None:
    """The list between the markers is ``coarsenings_markdown()``; refresh it with
    ``MESHSOLVE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_model_kinds.py``."""
    import os
    import re
    from pathlib import Path

    from meshsolve.model.kinds import COARSENINGS, coarsenings_markdown

    page = Path(__file__).resolve().parent.parent / "docs" / "proofs.md"
    text = page.read_text(encoding="utf-8")
    block = re.compile(r"(<!-- coarsenings: generated from meshsolve\.model\.kinds\.COARSENINGS -->\n)(.*?)"
                       r"(<!-- end coarsenings -->\n)", re.S)
    found = block.search(text)
    assert found is not None, "docs/proofs.md has lost its generated list of coarsenings"
    if os.environ.get("MESHSOLVE_UPDATE_DOCS") == "1":
        text = block.sub(lambda m: m.group(1) + coarsenings_markdown() + m.group(3), text)
        page.write_text(text, encoding="utf-8")
        found = block.search(text)
        assert found is not None
    assert found.group(2) == coarsenings_markdown()
    rows = [r for r in found.group(2).splitlines() if r.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [c.rule for c in COARSENINGS]
    # the page names the registry in its prose and its marker, and keeps no hand-written list
    assert text.count("COARSENINGS") == 2
