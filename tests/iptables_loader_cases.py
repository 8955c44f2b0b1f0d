"""Restore inputs and what Debian's iptables-restore 1.8.9 (nf_tables) does with each, as measured in
a scratch namespace. One corpus for two suites: the parser tests check that the parser refuses what
the loader refuses for the rule's own syntax; the kernel tests check the loader still does this.

``LOADER_SYNTAX_CASES`` depend only on one rule's words, so the parser must agree with the loader.
``LOADER_PLACEMENT_CASES`` depend on the table or the chain the rule is in; the parser does not (yet)
refuse them, and only the kernel tests use them.
"""

from __future__ import annotations

import attrs

# the loader's message when a NAT target's ports come without a port-carrying protocol
NEED_PORT_PROTOCOL = "Need TCP, UDP, SCTP or DCCP with port specification"


@attrs.frozen
class LoaderCase:
    """One restore input; ``refused`` is part of the loader's message (None: it loads), ``status``
    its exit status and ``line`` the line it names (the parser must name the same one)."""

    name: str
    text: str
    refused: str | None = None
    status: int = 0
    line: int | None = None

    @property
    def tool(self) -> str:
        return "ip6tables-restore" if self.text.startswith("# ipv6") else "iptables-restore"


def _case(name: str, table: str, rule: str, refused: str | None = None, *, ipv6: bool = False,
          status: int = 2) -> LoaderCase:
    head = "# ipv6\n" if ipv6 else ""
    text = f"{head}*{table}\n{rule}\nCOMMIT\n"
    line = text.count("\n") - 1 if refused is not None else None  # the last rule line
    return LoaderCase(name, text, refused, status if refused is not None else 0, line)


LOADER_SYNTAX_CASES: tuple[LoaderCase, ...] = (
    # REDIRECT/MASQUERADE --to-ports and DNAT/SNAT ADDR:PORT need -p tcp|udp|sctp|dccp|icmp, given
    # before -j (its negation does not matter)
    _case("redirect-ports-without-p", "nat", "-A OUTPUT -j REDIRECT --to-ports 15001", NEED_PORT_PROTOCOL),
    _case("redirect-ports-p-all", "nat", "-A OUTPUT -p all -j REDIRECT --to-ports 15001", NEED_PORT_PROTOCOL),
    _case("redirect-ports-p-udplite", "nat", "-A OUTPUT -p udplite -j REDIRECT --to-ports 15001",
          NEED_PORT_PROTOCOL),
    _case("redirect-ports-p-after-target", "nat", "-A OUTPUT -j REDIRECT --to-ports 15001 -p tcp",
          NEED_PORT_PROTOCOL),
    _case("redirect-ports-p-ipv6-icmp", "nat", "-A OUTPUT -p ipv6-icmp -j REDIRECT --to-ports 15001",
          NEED_PORT_PROTOCOL, ipv6=True),
    _case("redirect-ports-without-p-ipv6", "nat", "-A OUTPUT -j REDIRECT --to-ports 15001", NEED_PORT_PROTOCOL,
          ipv6=True),
    _case("redirect-ports-p-tcp", "nat", "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-6", "nat", "-A OUTPUT -p 6 -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-not-p-tcp", "nat", "-A OUTPUT ! -p tcp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-udp", "nat", "-A OUTPUT -p udp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-sctp", "nat", "-A OUTPUT -p sctp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-dccp", "nat", "-A OUTPUT -p dccp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-icmp", "nat", "-A OUTPUT -p icmp -j REDIRECT --to-ports 15001"),
    _case("redirect-ports-p-icmp-ipv6", "nat", "-A OUTPUT -p icmp -j REDIRECT --to-ports 15001", ipv6=True),
    _case("redirect-without-ports", "nat", "-A OUTPUT -j REDIRECT"),
    _case("redirect-random-without-p", "nat", "-A OUTPUT -j REDIRECT --random"),
    _case("masquerade-ports-without-p", "nat", "-A POSTROUTING -j MASQUERADE --to-ports 2000",
          NEED_PORT_PROTOCOL),
    _case("masquerade-ports-p-udp", "nat", "-A POSTROUTING -p udp -j MASQUERADE --to-ports 2000"),
    _case("masquerade-without-ports", "nat", "-A POSTROUTING -j MASQUERADE"),
    _case("dnat-port-without-p", "nat", "-A OUTPUT -j DNAT --to-destination 192.0.2.1:80", NEED_PORT_PROTOCOL),
    _case("dnat-port-only-without-p", "nat", "-A OUTPUT -j DNAT --to-destination :80", NEED_PORT_PROTOCOL),
    _case("dnat-range-port-without-p", "nat", "-A OUTPUT -j DNAT --to-destination 192.0.2.1-192.0.2.5:80-90",
          NEED_PORT_PROTOCOL),
    _case("dnat-port-without-p-ipv6", "nat", "-A OUTPUT -j DNAT --to-destination [2001:db8::1]:80",
          NEED_PORT_PROTOCOL, ipv6=True),
    _case("dnat-port-p-icmp", "nat", "-A OUTPUT -p icmp -j DNAT --to-destination 192.0.2.1:80"),
    _case("dnat-without-port", "nat", "-A OUTPUT -j DNAT --to-destination 192.0.2.1"),
    _case("dnat-without-port-ipv6", "nat", "-A OUTPUT -j DNAT --to-destination 2001:db8::1", ipv6=True),
    _case("snat-port-without-p", "nat", "-A POSTROUTING -j SNAT --to-source 192.0.2.1:80", NEED_PORT_PROTOCOL),
    # words: only double quotes group, and a closing quote ends the word
    _case("comment-unescaped-inner-quotes", "filter",
          '-A INPUT -m comment --comment "say "hi" now" -j ACCEPT', "Bad argument `hi now'"),
    _case("comment-glued-after-closing-quote", "filter", '-A INPUT -m comment --comment "ab"cd -j ACCEPT',
          "Bad argument `cd'"),
    _case("comment-single-quotes-with-space", "filter", "-A INPUT -m comment --comment 'a b' -j ACCEPT",
          "Bad argument `b''"),
    _case("comment-escaped-inner-quotes", "filter", '-A INPUT -m comment --comment "say \\"hi\\" now" -j ACCEPT'),
    _case("comment-escaped-single-quote", "filter", "-A INPUT -m comment --comment \"it\\'s\" -j ACCEPT"),
    _case("comment-single-quotes-are-literal", "filter", "-A INPUT -m comment --comment 'ab' -j ACCEPT"),
    _case("comment-quote-opened-inside-word", "filter", '-A INPUT -m comment --comment ab"cd" -j ACCEPT'),
    _case("comment-backslash-outside-quotes", "filter", "-A INPUT -m comment --comment a\\b -j ACCEPT"),
    _case("comment-backslash-escapes-any-char", "filter", '-A INPUT -m comment --comment "a\\nb" -j ACCEPT'),
    _case("comment-empty", "filter", '-A INPUT -m comment --comment "" -j ACCEPT'),
)

LOADER_PLACEMENT_CASES: tuple[LoaderCase, ...] = (
    # userspace refusals (exit 2), checked by name: the table for DROP, the built-in chain for -i/-o
    _case("drop-in-nat", "nat", "-A OUTPUT -j DROP",
          'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.'),
    _case("drop-in-nat-user-chain", "nat", ":X - [0:0]\n-A X -j DROP",
          'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.'),
    _case("drop-in-nat-ipv6", "nat", "-A PREROUTING -j DROP",
          'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.', ipv6=True),
    _case("in-interface-in-output", "filter", "-A OUTPUT -i eth0 -j ACCEPT", "Can't use -i with OUTPUT"),
    _case("negated-in-interface-in-output", "filter", "-A OUTPUT ! -i eth0 -j ACCEPT",
          "Can't use -i with OUTPUT"),
    _case("in-interface-in-nat-output", "nat", "-A OUTPUT -i eth0 -j ACCEPT", "Can't use -i with OUTPUT"),
    _case("in-interface-in-postrouting", "nat", "-A POSTROUTING -i eth0 -j ACCEPT",
          "Can't use -i with POSTROUTING"),
    _case("in-interface-in-output-ipv6", "filter", "-A OUTPUT -i eth0 -j ACCEPT", "Can't use -i with OUTPUT",
          ipv6=True),
    _case("out-interface-in-prerouting", "nat", "-A PREROUTING -o eth0 -j ACCEPT",
          "Can't use -o with PREROUTING"),
    _case("out-interface-in-mangle-prerouting", "mangle", "-A PREROUTING -o eth0 -j ACCEPT",
          "Can't use -o with PREROUTING"),
    _case("out-interface-in-input", "filter", "-A INPUT -o eth0 -j ACCEPT", "Can't use -o with INPUT"),
    # ... which a user chain escapes, whoever jumps to it
    _case("in-interface-in-user-chain-from-output", "filter",
          ":X - [0:0]\n-A X -i eth0 -j ACCEPT\n-A OUTPUT -j X"),
    _case("in-and-out-interface-in-forward", "filter", "-A FORWARD -i eth0 -o eth1 -j ACCEPT"),
    # kernel refusal (exit 4): the REJECT target belongs to the filter table, user chains included
    _case("reject-in-mangle", "mangle", "-A OUTPUT -j REJECT",
          "line 2: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT", status=4),
    _case("reject-in-mangle-prerouting", "mangle", "-A PREROUTING -j REJECT",
          "line 2: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING", status=4),
    _case("reject-in-mangle-user-chain", "mangle", ":X - [0:0]\n-A X -j REJECT",
          "line 3: RULE_APPEND failed (Invalid argument): rule in chain X", status=4),
    _case("reject-in-mangle-ipv6", "mangle", "-A OUTPUT -j REJECT",
          "line 3: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT", ipv6=True, status=4),
    _case("reject-in-raw", "raw", "-A OUTPUT -j REJECT",
          "line 2: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT", status=4),
    _case("reject-in-nat", "nat", "-A OUTPUT -j REJECT",
          "line 2: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT", status=4),
    _case("reject-in-filter-user-chain", "filter", ":X - [0:0]\n-A X -j REJECT"),
)
