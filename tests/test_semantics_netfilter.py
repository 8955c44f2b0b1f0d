"""Chain traversal (jump/goto/return/policy, marks, opaque matches), REDIRECT rewriting, bind acceptance."""

from __future__ import annotations

import attrs
import pytest

from meshsolve.errors import WorldError
from meshsolve.model import (
    Accept,
    AddrtypeMatch,
    App,
    Chain,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    Goto,
    InInterface,
    Jump,
    MarkMatch,
    Masquerade,
    MultiportMatch,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Return,
    Rule,
    Ruleset,
    SetMark,
    SetMatch,
    Snat,
    Socket,
    SocketMatch,
    Table,
    World,
    to_address,
)
from meshsolve.model.nftrules import SocketOwner
from meshsolve.model.path import stages
from meshsolve.semantics import accepting_socket
from meshsolve.semantics import kernel as K
from meshsolve.semantics.netfilter import traverse as walk

_POD = World(pod_ips=("192.0.2.10", "2001:db8::10"), peer_ips=("192.0.2.20", "2001:db8::20"))
ENV4 = K.Env.of(_POD, "ipv4")
ENV6 = K.Env.of(_POD, "ipv6")
_VERDICTS = {K.CONT: "continue", K.DROP: "drop", K.REJECT: "reject", K.NAT: "nat", K.TPROXY: "tproxy",
             K.UNK: "undetermined"}


def Packet(family: str, protocol: str, src: object, dst: object, sport: int | None, dport: int,
           iif: str | None = None, oif: str | None = None, uid: int | None = None,
           gid: int | None = None) -> K.Pkt:
    """A first packet at a hook (``oif`` None: a hook without an output interface)."""
    return K.Pkt(protocol, src, dst, sport, dport, iif, None if oif is None else oif == "lo", uid, gid, 0, 0,
                 False)


@attrs.frozen
class Res:
    verdict: str
    rule: object
    steps: tuple[object, ...]
    reason: str
    packet: K.Pkt
    new_dst: object
    new_dport: object


def traverse(rs: Ruleset, table: str, hook: str, pkt: K.Pkt, env: K.Env) -> Res:
    stage = next(s for s in stages(hook) if s.table == table)  # type: ignore[arg-type]
    d = walk(rs, stage, attrs.evolve(pkt, before_ct=stage.before_conntrack), env)
    nat_like = d.kind in (K.NAT, K.TPROXY)
    return Res(_VERDICTS[d.kind], d.rule, d.steps, d.reason or "", attrs.evolve(pkt, mark=d.mark, ctmark=d.ctmark),
               d.addr if nat_like else None, d.port if nat_like else None)


def out_pkt(dst: str = "198.51.100.1", dport: int = 80, uid: int = 1000, gid: int = 1000,
            **kw: object) -> K.Pkt:
    fam = "ipv6" if ":" in dst else "ipv4"
    src = "2001:db8::10" if fam == "ipv6" else "192.0.2.10"
    base = Packet(fam, "tcp", to_address(src), to_address(dst), None, dport, oif="eth0", uid=uid, gid=gid)
    return attrs.evolve(base, **kw)


def nat(*chains: Chain, family: str = "ipv4") -> Ruleset:
    return Ruleset(family, (Table("nat", chains),))  # type: ignore[arg-type]


def R(*matches: object, target: object = None) -> Rule:
    return Rule(matches, target)  # type: ignore[arg-type]


# --- traversal -------------------------------------------------------------------------------


def test_first_match_wins_and_accept_ends_table() -> None:
    chain = Chain("OUTPUT", (R(target=Accept()), R(target=Drop())), "ACCEPT")
    rs = Ruleset("ipv4", (Table("filter", (chain,)),))
    res = traverse(rs, "filter", "OUTPUT", out_pkt(), ENV4)
    assert res.verdict == "continue"
    assert [str(s.ref) for s in res.steps] == ["filter::OUTPUT#1"]


def test_falling_off_a_user_chain_returns_to_the_caller() -> None:
    rs = Ruleset("ipv4", (Table("filter", (
        Chain("OUTPUT", (R(target=Jump("A")), R(target=Drop())), "ACCEPT"),
        Chain("A", (R(Destination("203.0.113.0/24"), target=Accept()),)),
    )),))
    miss = traverse(rs, "filter", "OUTPUT", out_pkt(), ENV4)
    assert miss.verdict == "drop" and str(miss.rule) == "filter::OUTPUT#2"
    hit = traverse(rs, "filter", "OUTPUT", out_pkt("203.0.113.7"), ENV4)
    assert hit.verdict == "continue" and str(hit.rule) == "filter::A#1"


def test_goto_does_not_push_a_return_point() -> None:
    def rs(link: object) -> Ruleset:
        return Ruleset("ipv4", (Table("filter", (
            Chain("OUTPUT", (R(target=Jump("A")), R(target=Drop())), "ACCEPT"),
            Chain("A", (R(target=link), R(target=Accept()))),
            Chain("B", (R(target=Return()),)),
        )),))
    via_jump = traverse(rs(Jump("B")), "filter", "OUTPUT", out_pkt(), ENV4)
    assert via_jump.verdict == "continue" and str(via_jump.rule) == "filter::A#2"
    via_goto = traverse(rs(Goto("B")), "filter", "OUTPUT", out_pkt(), ENV4)
    assert via_goto.verdict == "drop" and str(via_goto.rule) == "filter::OUTPUT#2"


def test_policy_applies_at_the_end_and_on_return_from_builtin() -> None:
    chain = Chain("OUTPUT", (R(Protocol("udp"), target=Accept()),
                             R(Destination("203.0.113.0/24"), target=Return())), "DROP")
    rs = Ruleset("ipv4", (Table("filter", (chain,)),))
    end = traverse(rs, "filter", "OUTPUT", out_pkt(), ENV4)
    assert end.verdict == "drop" and end.rule is not None and end.rule.index == 0
    assert end.steps[-1].policy == "DROP"
    ret = traverse(rs, "filter", "OUTPUT", out_pkt("203.0.113.1"), ENV4)
    assert ret.verdict == "drop" and [s.policy for s in ret.steps] == [None, "DROP"]


def test_absent_table_accepts_and_missing_chain_is_a_world_error() -> None:
    assert traverse(Ruleset("ipv4"), "mangle", "OUTPUT", out_pkt(), ENV4).verdict == "continue"
    bad = nat(Chain("OUTPUT", (R(target=Jump("NOPE")),), "ACCEPT"))
    with pytest.raises(WorldError, match="NOPE"):
        traverse(bad, "nat", "OUTPUT", out_pkt(), ENV4)


def test_marks_and_connmark_save_restore() -> None:
    rs = Ruleset("ipv4", (Table("mangle", (Chain("OUTPUT", (
        R(target=SetMark(0x539)),
        R(MarkMatch(0x539), target=ConnmarkTarget("save-mark")),
        R(target=SetMark(0, 0xFFFFFFFF)),                      # clear the packet mark
        R(ConnmarkMatch(0x539), target=ConnmarkTarget("restore-mark")),
        R(MarkMatch(0x539), target=Accept()),
        R(target=Drop()),
    ), "ACCEPT"),)),))
    res = traverse(rs, "mangle", "OUTPUT", out_pkt(), ENV4)
    assert res.verdict == "continue" and str(res.rule) == "mangle::OUTPUT#5"
    assert res.packet.mark == 0x539 and res.packet.ctmark == 0x539


def test_opaque_match_is_undetermined_only_when_it_could_decide() -> None:
    opaque = OpaqueMatch("statistic", ("--mode", "random", "--probability", "0.5"))
    rs = nat(Chain("OUTPUT", (
        R(Destination("203.0.113.0/24"), opaque, target=Redirect(15001)),  # fails on -d: skipped
        R(opaque),                                                          # no target: no effect
        R(opaque, target=Redirect(15001)),                                  # could decide
    ), "ACCEPT"))
    res = traverse(rs, "nat", "OUTPUT", out_pkt(), ENV4)
    assert res.verdict == "undetermined" and str(res.rule) == "nat::OUTPUT#3"
    assert "statistic" in res.reason


def test_owner_ids_ranges_names_and_no_socket() -> None:
    rs = nat(Chain("OUTPUT", (R(OwnerMatch(uid="1000-2000"), target=Accept()), R(target=Drop())), "ACCEPT"))
    assert traverse(rs, "nat", "OUTPUT", out_pkt(uid=1500), ENV4).verdict == "continue"
    assert traverse(rs, "nat", "OUTPUT", out_pkt(uid=2500), ENV4).verdict == "drop"
    named = nat(Chain("OUTPUT", (R(OwnerMatch(gid="java"), target=Return()),), "ACCEPT"))
    assert traverse(named, "nat", "OUTPUT", out_pkt(), ENV4).verdict == "undetermined"
    # no local socket (a forwarded/remote packet): only an all-negated owner match holds
    rs2 = nat(Chain("POSTROUTING", (R(OwnerMatch(uid="1337"), target=Drop()),
                                   R(OwnerMatch(uid="1337", uid_negated=True), target=Accept())), "DROP"))
    remote = Packet("ipv4", "tcp", to_address("192.0.2.20"), to_address("192.0.2.10"), None, 80)
    res = traverse(rs2, "nat", "POSTROUTING", remote, ENV4)
    assert res.verdict == "continue" and str(res.rule) == "nat::POSTROUTING#2"


def test_owner_ids_are_read_as_the_model_decoded_them() -> None:
    """The semantics reads the id range the model decoded (``OwnerMatch.uid_range``), not the text:
    a match whose decoded range is made to say otherwise than its token is judged by the range."""
    m = OwnerMatch(uid="1000-2000")
    assert m.uid_range == (1000, 2000)
    object.__setattr__(m, "uid_range", (3000, 3000))  # what a second decoder could disagree with
    rs = nat(Chain("OUTPUT", (R(m, target=Accept()), R(target=Drop())), "ACCEPT"))
    assert traverse(rs, "nat", "OUTPUT", out_pkt(uid=3000), ENV4).verdict == "continue"
    assert traverse(rs, "nat", "OUTPUT", out_pkt(uid=1500), ENV4).verdict == "drop"
    # a name has no decoded range: the world's names resolve it, or it is undetermined
    named = nat(Chain("OUTPUT", (R(OwnerMatch(uid="java"), target=Drop()),), "ACCEPT"))
    env = K.Env.of(_POD, "ipv4", names={"java": 1500})
    assert traverse(named, "nat", "OUTPUT", out_pkt(uid=1500), env).verdict == "drop"
    assert traverse(named, "nat", "OUTPUT", out_pkt(uid=1501), env).verdict == "continue"


def test_ports_multiport_interfaces_addrtype_conntrack() -> None:
    rs = Ruleset("ipv4", (Table("filter", (Chain("OUTPUT", (
        R(Protocol("tcp"), MultiportMatch("dports", ("80", "8000:8100")), target=Jump("WEB")),
        R(OutInterface("eth+"), PortMatch("tcp", dport=22, dport_negated=True),
          AddrtypeMatch(dst_type="LOCAL"), target=Drop()),
        R(InInterface("eth0"), target=Drop()),            # no input interface in OUTPUT: never holds
        R(ConntrackMatch(("NEW",)), OutInterface("lo"), target=Drop()),
        # the kernel picks the source port from 32768-60999: outside it a rule fails, across it the
        # model cannot tell
        R(PortMatch("tcp", sport=5000), target=Drop()),
        R(PortMatch("tcp", sport="40000:50000"), target=Drop()),
    ), "ACCEPT"), Chain("WEB", (R(target=Accept()),)))),))
    assert str(traverse(rs, "filter", "OUTPUT", out_pkt(dport=8050), ENV4).rule) == "filter::WEB#1"
    res = traverse(rs, "filter", "OUTPUT", out_pkt(dport=9000), ENV4)
    assert res.verdict == "undetermined" and str(res.rule) == "filter::OUTPUT#6"
    assert "32768-60999" in res.reason
    local = out_pkt("192.0.2.10", 9000)
    assert str(traverse(rs, "filter", "OUTPUT", local, ENV4).rule) == "filter::OUTPUT#2"
    lo = Packet("ipv4", "tcp", to_address("127.0.0.1"), to_address("127.0.0.1"), None, 9000, oif="lo",
                uid=1000, gid=1000)
    assert str(traverse(rs, "filter", "OUTPUT", lo, ENV4).rule) == "filter::OUTPUT#4"


# --- REDIRECT --------------------------------------------------------------------------------


@pytest.mark.parametrize(("hook", "iif", "dst", "env", "want"), [
    ("OUTPUT", None, "198.51.100.1", ENV4, "127.0.0.1"),
    ("OUTPUT", None, "2001:db8:100::1", ENV6, "::1"),
    ("PREROUTING", "eth0", "192.0.2.10", ENV4, "192.0.2.10"),
    ("PREROUTING", "eth0", "2001:db8::10", ENV6, "2001:db8::10"),
    ("PREROUTING", "lo", "127.0.0.6", ENV4, "127.0.0.1"),
])
def test_redirect_rewrites_destination(hook: str, iif: str | None, dst: str, env: K.Env, want: str) -> None:
    fam = "ipv6" if ":" in dst else "ipv4"
    rs = nat(Chain(hook, (R(Protocol("tcp"), target=Redirect(15001)),), "ACCEPT"), family=fam)
    pkt = Packet(fam, "tcp", to_address("192.0.2.20" if fam == "ipv4" else "2001:db8::20"),  # type: ignore[arg-type]
                 to_address(dst), 40000, 9001, iif=iif, oif="eth0" if hook == "OUTPUT" else None,
                 uid=1000 if hook == "OUTPUT" else None, gid=1000 if hook == "OUTPUT" else None)
    res = traverse(rs, "nat", hook, pkt, env)  # type: ignore[arg-type]
    assert res.verdict == "nat"
    assert res.new_dst == to_address(want) and res.new_dport == 15001
    assert res.packet.src == pkt.src  # the source is unchanged


def test_redirect_ports() -> None:
    def port_of(target: Redirect, dport: int) -> tuple[str, int | None]:
        rs = nat(Chain("OUTPUT", (R(target=target),), "ACCEPT"))
        res = traverse(rs, "nat", "OUTPUT", out_pkt(dport=dport), ENV4)
        return res.verdict, res.new_dport
    assert port_of(Redirect(), 8080) == ("nat", 8080)
    assert port_of(Redirect("8000:8100"), 8080) == ("nat", 8080)
    # outside the range: the range's first free port, which for one connection is its first (kernel fact)
    assert port_of(Redirect("8000:8100"), 9090) == ("nat", 8000)


# --- bind acceptance (kernel-facts: sockets, no iptables) ------------------------------------


def world_with(*sockets: Socket, v6: bool = False) -> World:
    pods = ("192.0.2.10", "2001:db8::10") if v6 else ("192.0.2.10",)
    return World(pod_ips=pods, peer_ips=("192.0.2.20",), apps=(App("app", sockets=sockets),))


@pytest.mark.parametrize(("bind", "dst", "accepted"), [
    ("0.0.0.0", "192.0.2.10", True), ("0.0.0.0", "127.0.0.1", True), ("0.0.0.0", "127.0.0.6", True),
    ("127.0.0.1", "192.0.2.10", False), ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False), ("127.0.0.1", "127.0.0.6", False),
    ("192.0.2.10", "192.0.2.10", True), ("192.0.2.10", "127.0.0.1", False),
    ("0.0.0.0", "198.51.100.1", False),  # not a local address: nothing in the pod accepts it
])
def test_bind_table_ipv4(bind: str, dst: str, accepted: bool) -> None:
    w = world_with(Socket(bind, 9001))
    assert (accepting_socket(w, to_address(dst), 9001) is not None) == accepted
    assert accepting_socket(w, to_address(dst), 9002) is None


@pytest.mark.parametrize(("sock", "dst", "accepted"), [
    (Socket("::", 9001), "2001:db8::10", True), (Socket("::", 9001), "::1", True),
    (Socket("::", 9001), "192.0.2.10", True), (Socket("::", 9001, v6only=True), "192.0.2.10", False),
    (Socket("::", 9001, v6only=True), "127.0.0.1", False),
    (Socket("::1", 9001), "::1", True), (Socket("::1", 9001), "2001:db8::10", False),
    (Socket("2001:db8::10", 9001), "2001:db8::10", True), (Socket("2001:db8::10", 9001), "::1", False),
])
def test_bind_table_ipv6(sock: Socket, dst: str, accepted: bool) -> None:
    w = world_with(sock, v6=True)
    assert (accepting_socket(w, to_address(dst), 9001) is not None) == accepted


def test_more_specific_bind_wins_and_udp_finds_no_socket() -> None:
    # (both binds exist only with SO_REUSEPORT on both and the same uid)
    specific, wild = Socket("127.0.0.1", 9001, reuseport=True), Socket("0.0.0.0", 9001, reuseport=True)
    w = World(pod_ips=("192.0.2.10",), peer_ips=(),
              apps=(App("a", sockets=(wild,)), App("b", sockets=(specific,))))
    assert accepting_socket(w, to_address("127.0.0.1"), 9001) == ("b", specific)
    assert accepting_socket(w, to_address("192.0.2.10"), 9001) == ("a", wild)
    assert accepting_socket(w, to_address("127.0.0.1"), 9001, "udp") is None
    # the proxy's listeners are sockets too
    assert accepting_socket(w, to_address("127.0.0.1"), 15001) == ("proxy", Socket("0.0.0.0", 15001))


# --- what the semantics leaves undecided is exactly the registry's COARSENINGS ----------------------

# One rule per declared coarsening (table, hook, the rule, a packet at that hook) that it decides.
_IN_PKT = Packet("ipv4", "tcp", to_address("198.51.100.1"), to_address("192.0.2.10"), 40000, 8080, iif="eth0")
COARSENED: dict[tuple[type, str], tuple[str, str, Rule, K.Pkt]] = {
    (OpaqueMatch, ""): ("filter", "OUTPUT", R(OpaqueMatch("statistic", ("--mode", "nth")), target=Drop()), out_pkt()),
    (PortMatch, "--tcp-option"): ("filter", "OUTPUT", R(Protocol("tcp"), PortMatch("tcp", extra=("--tcp-option", "2")),
                                                       target=Drop()), out_pkt()),
    (OwnerMatch, "NAME"): ("filter", "OUTPUT", R(OwnerMatch(uid="nobody-here"), target=Drop()), out_pkt()),
    (OwnerMatch, "--suppl-groups"): ("filter", "OUTPUT", R(OwnerMatch(gid="5", suppl_groups=True), target=Drop()),
                                     out_pkt(gid=1000)),
    (ConntrackMatch, "options"): ("filter", "OUTPUT", R(ConntrackMatch(("NEW",), extra=("--ctproto", "tcp")),
                                                        target=Drop()), out_pkt()),
    (AddrtypeMatch, "--limit-iface"): ("filter", "OUTPUT", R(AddrtypeMatch(dst_type="LOCAL", limit_iface_out=True),
                                                             target=Drop()), out_pkt()),
    (AddrtypeMatch, "TYPE"): ("filter", "OUTPUT", R(AddrtypeMatch(dst_type="BLACKHOLE"), target=Drop()), out_pkt()),
    (SocketMatch, "--restore-skmark"): ("mangle", "PREROUTING", R(SocketMatch(("--restore-skmark",)), target=Drop()),
                                        _IN_PKT),
    (SocketOwner, "NAME"): ("filter", "OUTPUT", R(SocketOwner("uid", ("nobody-here",)), target=Drop()), out_pkt()),
    (OpaqueTarget, ""): ("filter", "OUTPUT", R(target=OpaqueTarget("NFQUEUE", ("--queue-num", "1"))), out_pkt()),
    (Snat, "options"): ("nat", "POSTROUTING", R(target=Snat("192.0.2.11-192.0.2.12")), out_pkt()),
    (SetMatch, "members"): ("filter", "OUTPUT", R(SetMatch("probes", "dst"), target=Drop()), out_pkt()),
    (Masquerade, ""): ("nat", "POSTROUTING", R(target=Masquerade()), out_pkt()),
    (Dnat, "ADDR-ADDR"): ("nat", "OUTPUT", R(target=Dnat("192.0.2.30-192.0.2.31")), out_pkt()),
    (Dnat, "options"): ("nat", "OUTPUT", R(target=Dnat("192.0.2.30", extra=("--random",))), out_pkt()),
    (CtTarget, "--notrack"): ("raw", "OUTPUT", R(target=CtTarget(notrack=True)), out_pkt()),
    (CtTarget, "options"): ("raw", "OUTPUT", R(target=CtTarget(extra=("--helper", "ftp"))), out_pkt()),
}


def _undecided(key: tuple[type, str]) -> Res:
    table, hook, rule, pkt = COARSENED[key]
    rs = Ruleset("ipv4", (Table(table, (Chain(hook, (rule,), "ACCEPT"),)),))
    return traverse(rs, table, hook, pkt, ENV4)


def test_every_coarsening_is_declared_once_and_has_an_example() -> None:
    from meshsolve.model.kinds import COARSENINGS, MATCH_KINDS, TARGET_KINDS

    keys = [(c.kind, c.option) for c in COARSENINGS]
    assert len(keys) == len(set(keys))
    assert {k for k, _ in keys} <= set(MATCH_KINDS) | set(TARGET_KINDS)
    assert set(COARSENED) == set(keys)


@pytest.mark.parametrize("key", list(COARSENED), ids=lambda k: f"{k[0].__name__}:{k[1] or '*'}")
def test_each_coarsening_is_undetermined_and_read_from_the_registry(key: tuple[type, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is undetermined, not guessed; and the semantics asks the registry: without the
    declaration it refuses to leave the rule undecided (``KeyError``) instead of doing so silently."""
    from meshsolve.model import kinds

    res = _undecided(key)
    assert res.verdict == "undetermined", res
    assert any(w in res.reason for w in ("modelled", "resolved", "picks", "not given")), res.reason
    monkeypatch.setattr(kinds, "_COARSENING_KEYS", {k: v for k, v in kinds._COARSENING_KEYS.items() if k != key})
    with pytest.raises(KeyError, match="not declared in COARSENINGS"):
        _undecided(key)
