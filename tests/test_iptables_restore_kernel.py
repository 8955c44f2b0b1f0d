"""What the real iptables-restore (Debian's iptables 1.8.9, nf_tables) does with inputs the parser
must agree on: tables in any order land in one family, and the rulesets the loader refuses."""

from __future__ import annotations

import pytest
from iptables_kernel import restore
from test_iptables_parse import UNSORTED_RESTORE

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
