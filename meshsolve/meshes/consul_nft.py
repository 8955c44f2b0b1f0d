"""Consul's native nftables port (``sdk/nftables``) as data: the same ``ConsulConfig`` → the nft
commands and the ruleset they build.

One ``inet`` table (``nat`` in the SDK's test lists; later SDK versions call it ``consul_tproxy``):
the five regular chains of the iptables port, then two base chains of type nat at priority -100,
``CONSUL_NAT_OUTPUT`` (hook output) and ``CONSUL_NAT_PREROUTING`` (hook prerouting), which take the
place of iptables' built-in ``OUTPUT``/``PREROUTING`` jumps. The rules follow the iptables port's
order; the localhost ``RETURN`` is written for both families (``ip daddr 127.0.0.1/32``, ``ip6 daddr
::1/128``) and the uid exclusions are ``insert``ed without an index (the last given comes first).

Checked against the SDK test's two lists (default; excluded uids). Derived, not checked: excluded
ports (``tcp dport P return``) and CIDRs (``ip daddr`` / ``ip6 daddr … return``), inserted like
the uids; the DNS redirect is not modelled (``UnsupportedError``). The semantics does not read this
ruleset yet (nftables syntax is not lowered into the rule model here): it is generated and compared.
"""

from __future__ import annotations

from meshsolve.errors import UnsupportedError
from meshsolve.istio.nft import daddr, dport, jump, owner, ret, tcp
from meshsolve.meshes.consul import DNS, IN_REDIRECT, INBOUND, OUTPUT_CHAIN, REDIRECT, ConsulConfig
from meshsolve.model.net import to_network
from meshsolve.nftables import HookSpec, Redirect, Rule, Ruleset, replay
from meshsolve.nftables.commands import AddChain, AddRule, AddTable, Command

__all__ = ["NAT_OUTPUT", "NAT_PREROUTING", "TABLE", "nft_emission", "nft_generate"]

TABLE = "nat"
NAT_OUTPUT = "CONSUL_NAT_OUTPUT"
NAT_PREROUTING = "CONSUL_NAT_PREROUTING"


def nft_emission(config: ConsulConfig, *, table: str = TABLE) -> tuple[Command, ...]:
    """The SDK's nft commands for ``config``, in order."""
    if config.consul_dns_ip or config.consul_dns_port:
        raise UnsupportedError("Consul's nftables DNS redirect is not modelled")
    c = config

    def add(chain: str, *items: object, insert: bool = False) -> AddRule:
        return AddRule("inet", table, chain, Rule(tuple(items)), insert=insert)  # type: ignore[arg-type]

    out: list[Command] = [AddTable("inet", table)]
    out += [AddChain("inet", table, name) for name in (INBOUND, IN_REDIRECT, OUTPUT_CHAIN, REDIRECT, DNS)]
    out += [AddChain("inet", table, NAT_OUTPUT, HookSpec("nat", "output", -100)),
            AddChain("inet", table, NAT_PREROUTING, HookSpec("nat", "prerouting", -100))]
    out.append(add(REDIRECT, tcp(), Redirect(c.outbound_port)))
    out.append(add(NAT_OUTPUT, tcp(), jump(OUTPUT_CHAIN)))
    out.append(add(OUTPUT_CHAIN, owner("skuid", str(c.proxy_uid)), ret()))
    out.append(add(OUTPUT_CHAIN, daddr(to_network("127.0.0.1/32")), ret()))
    out.append(add(OUTPUT_CHAIN, daddr(to_network("::1/128")), ret()))
    out.append(add(OUTPUT_CHAIN, jump(REDIRECT)))
    for p in c.exclude_outbound_ports:
        out.append(add(OUTPUT_CHAIN, dport(int(p)), ret(), insert=True))
    for net in c.exclude_outbound_cidrs:
        out.append(add(OUTPUT_CHAIN, daddr(net), ret(), insert=True))
    for uid in c.exclude_uids:
        out.append(add(OUTPUT_CHAIN, owner("skuid", str(int(uid))), ret(), insert=True))
    out.append(add(IN_REDIRECT, tcp(), Redirect(c.inbound_port)))
    out.append(add(NAT_PREROUTING, tcp(), jump(INBOUND)))
    out.append(add(INBOUND, tcp(), jump(IN_REDIRECT)))
    for p in c.exclude_inbound_ports:
        out.append(add(INBOUND, dport(int(p)), ret(), insert=True))
    return tuple(out)


def nft_generate(config: ConsulConfig, *, table: str = TABLE) -> Ruleset:
    """The nftables ruleset the SDK's nft port installs for ``config``."""
    return replay(nft_emission(config, table=table), source="consul redirect-traffic (nftables)")
