"""The words of a rule's arguments: which options exist, how ``[!] --opt value`` items are scanned,
and how one value (number, mark, port, port range, address) is decoded.

Values are decoded as iptables does: numbers in decimal or ``0x`` hex, marks as 32-bit ``V[/M]``,
port ranges ``LO:HI`` (``-`` for target ports) with an open end meaning 0 or 65535. Address lists
(``-s a,b``, which iptables would expand into several rules) and host names (never resolved) are
refused, as is the legacy negation after the option (``-d ! 10.0.0.0/8``), with a message that
shows the modern form.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from meshsolve.errors import MeshsolveError
from meshsolve.iptables.tokens import LineError
from meshsolve.model.net import PortRange

M32 = 0xFFFFFFFF

# Rule-level options (key: what they set).
BASIC = {
    "-s": "s", "--source": "s", "--src": "s",
    "-d": "d", "--destination": "d", "--dst": "d",
    "-i": "i", "--in-interface": "i",
    "-o": "o", "--out-interface": "o",
    "-p": "p", "--protocol": "p",
}
MATCH_OPTS = ("-m", "--match")
JUMP_OPTS = ("-j", "--jump")
GOTO_OPTS = ("-g", "--goto")
COUNTER_OPTS = ("-c", "--set-counters")
TERMINATORS = frozenset(
    [*BASIC, *MATCH_OPTS, *JUMP_OPTS, *GOTO_OPTS, *COUNTER_OPTS, "-f", "--fragment"])
# Options whose value is free text (may look like an option or be '!').
STRING_OPTS = frozenset(["--comment", "--log-prefix", "--nflog-prefix"])
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "dccp")

PORT_ALIASES = {"--sport": "--sport", "--source-port": "--sport",
                "--dport": "--dport", "--destination-port": "--dport"}
_OPT_ALIASES = {
    **PORT_ALIASES,
    "--source-ports": "--sports", "--destination-ports": "--dports",
}
# iptables' own long options (its command table): getopt_long takes an abbreviation only when it is the
# prefix of exactly one long option among these and the loaded modules' (``-m multiport --dport`` is
# ``--dports``; ``--d`` is ambiguous).
BASE_LONG_OPTS = (
    "--append", "--check", "--delete", "--delete-chain", "--destination", "--dst", "--exact", "--flush",
    "--fragment", "--goto", "--help", "--in-interface", "--insert", "--ipv4", "--ipv6", "--jump",
    "--line-numbers", "--list", "--list-rules", "--match", "--modprobe", "--new-chain", "--numeric",
    "--out-interface", "--policy", "--protocol", "--rename-chain", "--replace", "--set-counters",
    "--source", "--src", "--table", "--verbose", "--version", "--wait", "--wait-interval", "--zero",
)


def resolve_long(word: str, options: frozenset[str] | set[str] | dict[str, int]) -> str | None:
    """The option of ``options`` that ``word`` names: itself, or the one option it abbreviates when
    no other long option (``options`` or iptables' own) starts with it, as getopt_long decides."""
    if word in options:
        return word
    if not word.startswith("--") or len(word) < 3 or word in BASE_LONG_OPTS:
        return None
    hits = {o for o in (*options, *BASE_LONG_OPTS) if o.startswith(word)}
    return next(iter(hits)) if len(hits) == 1 and next(iter(hits)) in options else None


_NO_NEGATION = {"--comment", "--suppl-groups", "--transparent", "--nowildcard", "--restore-skmark",
                "--limit-iface-in", "--limit-iface-out", "--ctdir"}


def parse_int(value: str, what: str) -> int:
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(value, 10)
    except ValueError:
        raise LineError(f"expected a number for {what}, got {value!r}") from None


def parse_u32(value: str, what: str) -> int:
    v = parse_int(value, what)
    if not 0 <= v <= M32:
        raise LineError(f"{what} out of range 0..0xffffffff: {value!r}")
    return v


def parse_value_mask(value: str, what: str) -> tuple[int, int | None]:
    if "/" in value:
        v, m = value.split("/", 1)
        return parse_u32(v, what), parse_u32(m, what + " mask")
    return parse_u32(value, what), None


def parse_port_range(value: str, what: str, sep: str = ":") -> PortRange:
    text = value.strip()
    try:
        if sep in text:
            lo, hi = text.split(sep, 1)
            return PortRange(parse_port(lo, what) if lo else 0, parse_port(hi, what) if hi else 65535)
        p = parse_port(text, what)
        return PortRange(p, p)
    except MeshsolveError as exc:
        raise LineError(f"bad port range for {what}: {value!r} ({exc})") from None


def parse_port(value: str, what: str) -> int:
    p = parse_int(value, what)
    if not 0 <= p <= 65535:
        raise LineError(f"port out of range 0..65535 for {what}: {value!r}")
    return p


_OCTET = r"(0|[1-9][0-9]{0,2})"
_DOTTED = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/([0-9]|[12][0-9]|3[0-2]))?")


@functools.lru_cache(maxsize=4096)
def parse_net(value: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if "," in value:
        raise LineError(f"{what}: several addresses in one rule ({value!r}) are not supported; "
                        "write one rule per address")
    m = _DOTTED.fullmatch(value)
    if m is not None:  # the common case, a plain dotted quad: what ip_network would make of it, sooner
        a, b, c, d, prefix = m.groups()
        if max(int(a), int(b), int(c), int(d)) <= 255:
            return ipaddress.IPv4Network(((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d),
                                          32 if prefix is None else int(prefix)), strict=False)
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise LineError(f"{what}: expected an IP address or CIDR (host names are not resolved), "
                        f"got {value!r}") from None


@dataclass
class Opt:
    name: str
    negated: bool
    values: list[str]


def scan_options(toks: list[str], i: int, spec: dict[str, int], where: str
                 ) -> tuple[list[Opt], int]:
    """Consume ``[!] --opt value...`` items known to ``spec`` from ``toks[i:]``; stop at others."""
    opts: list[Opt] = []
    n = len(toks)
    while i < n:
        neg = False
        j = i
        if toks[j] == "!":
            if j + 1 >= n:
                raise LineError(f"'!' at the end of the rule ({where})")
            neg = True
            j += 1
        name = _OPT_ALIASES.get(toks[j], toks[j])
        if name not in spec:
            name = resolve_long(toks[j], spec) or name
        if name not in spec:
            return opts, i
        arity = spec[name]
        if j + arity >= n:
            raise LineError(f"option {toks[j]} ({where}) needs {arity} value(s)")
        values = toks[j + 1:j + 1 + arity]
        for v in values:
            # like getopt, a required value is taken whatever it looks like; only a lone '!'
            # (the legacy '--opt ! value' negation) is refused, except for free-text options
            if v == "!" and name not in STRING_OPTS:
                raise LineError(f"legacy negation after the option is not supported: write "
                                f"'! {toks[j]} ...' instead of '{toks[j]} ! ...'")
        if neg and name in _NO_NEGATION:
            raise LineError(f"option {name} ({where}) cannot be negated")
        if any(o.name == name for o in opts):
            raise LineError(f"option {name} given twice ({where})")
        opts.append(Opt(name, neg, values))
        i = j + 1 + arity
    return opts, i


def collect_raw(toks: list[str], i: int) -> tuple[list[str], int]:
    """Raw tokens of an unmodelled module/target: everything up to the next rule-level option
    (the value of a free-text option such as ``--log-prefix`` is taken whatever it looks like)."""
    out: list[str] = []
    n = len(toks)
    while i < n:
        t = toks[i]
        if t in TERMINATORS or (t == "!" and i + 1 < n and toks[i + 1] in TERMINATORS):
            break
        out.append(t)
        i += 1
        if t in STRING_OPTS and i < n:
            out.append(toks[i])
            i += 1
    return out, i
