"""What the real iptables-restore (Debian's iptables 1.8.9, nf_tables) does with inputs the parser
must agree on: tables in any order land in one family, and the rulesets the loader refuses."""

from __future__ import annotations

import pytest
from iptables_kernel import Restored, restore
from iptables_loader_cases import LOADER_PLACEMENT_CASES, LOADER_SYNTAX_CASES, LoaderCase
from test_iptables_parse import UNSORTED_RESTORE

from meshsolve.errors import ParseError
from meshsolve.iptables import parse_text

pytestmark = pytest.mark.kernel


def test_unsorted_restore_input_is_one_family_like_the_kernel() -> None:
    """``*nat`` (no ``:CHAIN`` lines) then ``*filter`` with ``:INPUT DROP``: the loader puts both
    into IPv4 and nothing into IPv6; so does the parser."""
    done = restore(UNSORTED_RESTORE)
    assert done.returncode == 0, done.stderr
    assert done.ipv6_dump == ""
    kernel = parse_text("# ipv4\n" + done.ipv4_dump, source="iptables-save")
    ours = parse_text(UNSORTED_RESTORE)
    assert ours.ipv6.empty
    assert ours.ipv4 == kernel.ipv4
    assert kernel.ipv4.chain("filter", "INPUT").policy == "DROP"  # type: ignore[union-attr]


def _names(cases: tuple[LoaderCase, ...]) -> list[str]:
    return [c.name for c in cases]


def _assert_loader_verdict(case: LoaderCase) -> Restored:
    done = restore(case.text, case.tool)
    assert done.returncode == case.status, done.stderr
    if case.refused is None:
        return done
    assert case.refused in done.stderr
    where = f"Error occurred at line: {case.line}" if case.status == 2 else f"line {case.line}: "
    assert where in done.stderr
    return done


@pytest.mark.parametrize("case", LOADER_SYNTAX_CASES, ids=_names(LOADER_SYNTAX_CASES))
def test_parser_refuses_what_the_loader_refuses_for_a_rule_of_its_own(case: LoaderCase) -> None:
    """A refusal that depends only on the rule's words: the parser refuses the same line; what the
    loader accepts, the parser reads as the kernel stored it."""
    done = _assert_loader_verdict(case)
    family = "ipv6" if case.tool.startswith("ip6") else "ipv4"
    if case.refused is not None:
        with pytest.raises(ParseError) as exc:
            parse_text(case.text)
        assert exc.value.lineno == case.line
        return
    dump = done.ipv6_dump if family == "ipv6" else done.ipv4_dump
    kernel = parse_text(f"# {family}\n" + dump, source=case.tool)
    assert parse_text(case.text).for_family(family) == kernel.for_family(family)


@pytest.mark.parametrize("case", LOADER_PLACEMENT_CASES, ids=_names(LOADER_PLACEMENT_CASES))
def test_loader_refusals_that_depend_on_table_or_chain(case: LoaderCase) -> None:
    """Refusals that depend on where the rule is (pinned here; the parser does not apply them)."""
    _assert_loader_verdict(case)
