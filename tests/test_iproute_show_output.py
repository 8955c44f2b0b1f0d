"""Policy routing read from the text ``ip`` really prints: ``ip rule show`` / ``ip route show table
all`` (and their ``-6`` forms) of a pod with istio-init's TPROXY routing, generated on a real kernel
by ``tests/data/routing/generate.sh`` (which says how; ``generated-with.txt``: kernel and iproute2).
The files are kept byte for byte as ``ip`` wrote them (trailing spaces included)."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from meshsolve.iproute import parse_routing
from meshsolve.model.routing import MAIN_TABLE, Route, Routing, RoutingRule

DATA = Path(__file__).resolve().parent / "data" / "routing"
SHOWN = ("tproxy-ip-rule-show.txt", "tproxy-ip-route-show-table-all.txt", "tproxy-ip6-rule-show.txt",
         "tproxy-ip6-route-show-table-all.txt")
TPROXY_MARK, TPROXY_TABLE = 0x539, 133  # istio-init: ip rule add fwmark 1337 lookup 133


def _text(*names: str) -> str:
    return "".join((DATA / n).read_text(encoding="utf-8") for n in names)


def _istio(*families: str) -> Routing:
    return Routing.tproxy(TPROXY_MARK, table=TPROXY_TABLE, families=families)  # type: ignore[arg-type]


def test_the_files_are_what_ip_prints() -> None:
    """The pasted text is ip's own: tab after the priority, ``fwmark 0x539`` without the full mask,
    IPv4 route lines ending in a space, IPv6 ones with ``metric``/``pref``."""
    rules = _text("tproxy-ip-rule-show.txt")
    assert "32765:\tfrom all fwmark 0x539 lookup 133\n" in rules
    routes = _text("tproxy-ip-route-show-table-all.txt")
    assert "local default dev lo table 133 scope host \n" in routes
    assert "local default dev lo table 133 metric 1024 pref medium\n" in routes


def test_ipv4_show_output_is_istio_s_tproxy_routing_and_the_main_table() -> None:
    """``ip rule show`` + ``ip route show table all``, read as given (IPv4 unless the text says):
    the one fwmark rule, the local default route of table 133, the main table's routes; the kernel's
    own rules, the ``local`` table, broadcast/multicast and link-local routes are left out. The
    IPv6 routes ``ip route show table all`` also lists are read as IPv6, not as IPv4 defaults."""
    got = parse_routing(_text("tproxy-ip-rule-show.txt", "tproxy-ip-route-show-table-all.txt"))
    assert got.rules == (RoutingRule("ipv4", 32765, TPROXY_TABLE, TPROXY_MARK, 0xFFFFFFFF),)
    assert got.rules == _istio("ipv4").rules
    for fam in ("ipv4", "ipv6"):
        assert got.routes_in(fam, TPROXY_TABLE) == _istio(fam).routes  # type: ignore[arg-type]
    assert set(got.routes_in("ipv4", MAIN_TABLE)) == {Route("0.0.0.0/0", "unicast", "eth0"),
                                                      Route("192.0.2.0/24", "unicast", "eth0")}
    assert set(got.routes_in("ipv6", MAIN_TABLE)) == {Route("::/0", "unicast", "eth0"),
                                                      Route("2001:db8::/64", "unicast", "eth0")}
    assert {r.table for r in got.routes} == {TPROXY_TABLE, MAIN_TABLE}
    assert not any(ipaddress.ip_network(r.dst).is_link_local for r in got.routes)


def test_ipv6_show_output_read_as_ipv6() -> None:
    got = parse_routing(_text("tproxy-ip6-rule-show.txt", "tproxy-ip6-route-show-table-all.txt"), family="ipv6")
    assert got.rules == _istio("ipv6").rules
    assert got.routes_in("ipv6", TPROXY_TABLE) == _istio("ipv6").routes
    assert set(got.routes_in("ipv6", MAIN_TABLE)) == {Route("::/0", "unicast", "eth0"),
                                                      Route("2001:db8::/64", "unicast", "eth0")}
    assert got.routes_in("ipv4", TPROXY_TABLE) == () and got.routes_in("ipv4", MAIN_TABLE) == ()


def test_a_pasted_terminal_session_says_each_output_s_family() -> None:
    """The four outputs pasted with their commands (``$ ip -6 rule show``): both families' rules,
    which is what istio-init adds in a dual-stack TPROXY pod."""
    session = "".join(f"$ ip {'-6 ' if '-ip6-' in n else ''}{'rule show' if 'rule' in n else 'route show table all'}\n"
                      + _text(n) for n in SHOWN)
    got = parse_routing(session)
    assert got.rules == _istio("ipv4", "ipv6").rules
    # `ip route show table all` lists the IPv6 routes too, so they come twice: the same routes
    for fam in ("ipv4", "ipv6"):
        assert set(got.routes_in(fam, TPROXY_TABLE)) == set(_istio(fam).routes)  # type: ignore[arg-type]


def test_the_routing_option_gives_the_world_this_routing(tmp_path: Path) -> None:
    """``--routing FILE`` (the inputs' one door) puts what the file says into the world."""
    from meshsolve.inputs import load

    f = tmp_path / "routing.txt"
    f.write_text(_text("tproxy-ip-rule-show.txt", "tproxy-ip-route-show-table-all.txt"), encoding="utf-8")
    flags = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*"]
    loaded = load(istio="1.20", flags=flags, routing=str(f))
    assert loaded.world is not None
    assert loaded.world.routing == parse_routing(f.read_text(encoding="utf-8"))
    assert loaded.world.routing.rules_for("ipv4") == _istio("ipv4").rules
    assert any(p.kind == "routing" and str(f) in str(p.provenance) for p in loaded.parts)



def test_the_routing_option_is_kept_with_a_built_in_set_up(tmp_path: Path) -> None:
    """``--setup E --routing FILE``: the built-in pod with the file's routing (it was dropped)."""
    from meshsolve.inputs import load

    f = tmp_path / "routing.txt"
    f.write_text(_text("tproxy-ip-rule-show.txt", "tproxy-ip-route-show-table-all.txt"), encoding="utf-8")
    loaded = load(setup="E", routing=str(f))
    assert loaded.world is not None and loaded.world.routing == parse_routing(f.read_text(encoding="utf-8"))
    assert any(p.kind == "routing" for p in loaded.parts)
    assert load(setup="E").world.routing != loaded.world.routing  # type: ignore[union-attr]

@pytest.mark.kernel
def test_ip_on_this_machine_still_prints_the_stored_text(tmp_path: Path) -> None:
    """The generator run again (its own namespaces, deleted on exit) prints the same bytes."""
    p = subprocess.run(["sh", str(DATA / "generate.sh"), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for name in SHOWN:
        assert (tmp_path / name).read_text(encoding="utf-8") == _text(name), name
