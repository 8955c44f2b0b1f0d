"""What the real iptables-restore (Debian's iptables 1.8.9, nf_tables) does with inputs the parser
must agree on: tables in any order land in one family, and the rulesets the loader refuses."""

from __future__ import annotations

import pytest
from iptables_kernel import Restored, restore
from iptables_loader_cases import LOADER_PLACEMENT_CASES, LOADER_SYNTAX_CASES, LoaderCase
from test_iptables_parse import NAT_SAVED, UNSORTED_RESTORE, nat_rule_line

from meshsolve.errors import ParseError
from meshsolve.iptables import parse_text, render_save

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


_CHAIN_COMMANDS: list[tuple[str, bool]] = [
    # (commands after `-t nat`, accepted by iptables 1.8.9)
    ("-N X -m comment --comment x", True),
    ("-N X -m tcp --dport 5", True),
    ("-N X\n-A X -j RETURN\n-F X -m comment --comment y\n-X X -m comment --comment y", True),
    ("-N X -p tcp", False),
    ("-N X -s 192.0.2.1", False),
    ("-N X -j RETURN", False),
]


@pytest.mark.parametrize(("commands", "accepted"), _CHAIN_COMMANDS, ids=[c for c, _ in _CHAIN_COMMANDS])
def test_chain_commands_take_match_modules_but_not_rule_options(commands: str, accepted: bool) -> None:
    """``iptables -N CHAIN -m comment --comment x`` (Linkerd's proxy-init) creates the chain and drops
    the match; a rule option after -N is refused. The parser agrees, in command and restore form."""
    import subprocess

    script = "; ".join(f"iptables -t nat {c} || exit $?" for c in commands.splitlines())
    proc = subprocess.run(["unshare", "-n", "sh", "-c", f"{script}; iptables-save -t nat"],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode == 0) == accepted, proc.stderr
    shell = "\n".join(f"iptables -t nat {c}" for c in commands.splitlines())
    restore_form = "*nat\n" + commands + "\nCOMMIT\n"
    for text in (shell, restore_form):
        if accepted:
            ours = parse_text(text).ipv4
            kernel = parse_text("# ipv4\n" + "".join(
                ln + "\n" for ln in proc.stdout.splitlines() if not ln.startswith("#")), source="iptables-save")
            assert ours.table("nat") == kernel.ipv4.table("nat")
        else:
            with pytest.raises(ParseError):
                parse_text(text)
    if accepted:
        done = restore(restore_form)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_nat_addresses_come_back_as_the_parser_reads_them(family: str) -> None:
    """Every written form of ``NAT_SAVED`` loaded at once: iptables-save prints each in the form the
    parser reads it (a range with equal ends as one address or port)."""
    cases = sorted((c for c in NAT_SAVED if c[0] == family), key=lambda c: c[1] != "DNAT")  # PREROUTING first
    text = "*nat\n" + "".join(nat_rule_line(*c[:3]) + "\n" for c in cases) + "COMMIT\n"
    done = restore(text, "iptables-restore" if family == "ipv4" else "ip6tables-restore")
    assert done.returncode == 0, done.stderr
    dump = done.ipv4_dump if family == "ipv4" else done.ipv6_dump
    saved = [ln for ln in dump.splitlines() if ln.startswith("-A ")]
    assert saved == [nat_rule_line(f, t, s) for f, t, _, s in cases]
    ours = parse_text(f"# {family}\n" + text).for_family(family)  # type: ignore[arg-type]
    assert [ln for ln in render_save(ours).splitlines() if ln.startswith("-A ")] == saved
