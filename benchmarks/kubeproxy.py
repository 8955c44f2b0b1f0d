"""Generated kube-proxy-like iptables-save dumps (the scale benchmark's input).

``kube_dump(n_rules)`` writes the text ``iptables-save`` prints for a pod network namespace holding
Istio's capture chains (``istio.generate``: current version, every inbound port, every outbound
CIDR) *and* the ``nat`` chains kube-proxy (iptables mode) writes for ``S`` ClusterIP services, ``S``
chosen so that the kube-proxy part has about ``n_rules`` rules:

* ``KUBE-SERVICES``: ``-d VIP/32 -p tcp --dport P -j KUBE-SVC-x`` per service, and the NodePort
  catch-all ``-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`` last;
* ``KUBE-SVC-x``: ``! -s 10.244.0.0/16 -d VIP/32 -p tcp --dport P -j KUBE-MARK-MASQ``, then one
  rule per endpoint (``-m statistic --mode random --probability p -j KUBE-SEP-y`` but the last);
* ``KUBE-SEP-y``: ``-s EP/32 -j KUBE-MARK-MASQ`` and ``-p tcp -j DNAT --to-destination EP:PORT``;
* ``KUBE-MARK-MASQ`` / ``KUBE-POSTROUTING`` (MARK 0x4000, MASQUERADE) as kube-proxy writes them.

Services have 1, 2 or 3 endpoints in turn (8 rules a service on average). Istio's jumps come first
in ``PREROUTING``/``OUTPUT``, kube-proxy's after them, so app traffic is captured by the sidecar
and the sidecar's own upstream connections to a ClusterIP are DNATed to an endpoint. (kube-proxy
writes these chains into the *node's* namespace; putting both in one namespace is a synthetic but
honest stress test: every rule is on the path of some packet.) ``statistic`` is not modelled by
meshsolve: it is an opaque match, so proofs hold whatever it decides.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

from meshsolve.iptables import render_save
from meshsolve.istio import CaptureConfig, generate

__all__ = ["ISTIO_CONFIG", "kube_dump", "kube_lines", "service_count", "services"]

ISTIO_CONFIG = CaptureConfig(inbound_ports="*", outbound_cidrs="*")
PORTS = (80, 443, 8080, 9090, 5432, 6379, 3306, 8443)


def _chain_id(prefix: str, text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def services(count: int) -> Iterator[tuple[str, str, int, list[tuple[str, int]]]]:
    """(name, VIP, port, endpoints) of ``count`` services: VIPs in 10.96.0.0/12, pods in 10.244.0.0/16."""
    for i in range(count):
        v = i + 1
        vip = f"10.{96 + (v >> 16) % 16}.{(v >> 8) & 255}.{v & 255}"
        port = PORTS[i % len(PORTS)]
        n_ep = 1 + i % 3
        eps = []
        for j in range(n_ep):
            k = 3 * i + j
            eps.append((f"10.244.{(k >> 8) & 255}.{1 + (k & 127)}", 8000 + (k % 1000)))
        yield f"ns{i % 97}/svc{i}:p{port}", vip, port, eps


def _rules_per_service(n_ep: int) -> int:
    return 2 + 3 * n_ep


def service_count(n_rules: int) -> int:
    """The number of services whose kube-proxy chains hold about ``n_rules`` rules."""
    total = 5  # the fixed kube-proxy rules
    s = 0
    while total < n_rules:
        total += _rules_per_service(1 + s % 3)
        s += 1
    return max(s, 1)


def kube_lines(n_services: int) -> tuple[list[str], list[str]]:
    """(chain declarations, rules) of kube-proxy's nat table for ``n_services`` services."""
    decls = [":KUBE-MARK-MASQ - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
             ":KUBE-SERVICES - [0:0]"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules: list[str] = []
    for name, vip, port, eps in services(n_services):
        svc = _chain_id("KUBE-SVC-", name)
        decls.append(f":{svc} - [0:0]")
        svc_rules.append(f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                         f"-m tcp --dport {port} -j {svc}")
        rules.append(f'-A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment "{name} cluster IP" '
                     f"-m tcp --dport {port} -j KUBE-MARK-MASQ")
        for j, (ep, tport) in enumerate(eps):
            sep = _chain_id("KUBE-SEP-", f"{name}/{ep}:{tport}")
            decls.append(f":{sep} - [0:0]")
            left = len(eps) - j
            stat = f" -m statistic --mode random --probability {1 / left:.11f}" if left > 1 else ""
            rules.append(f'-A {svc} -m comment --comment "{name} -> {ep}:{tport}"{stat} -j {sep}')
            rules.append(f'-A {sep} -s {ep}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            rules.append(f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT '
                         f"--to-destination {ep}:{tport}")
    svc_rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                     'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return decls, rules + svc_rules


def kube_dump(n_rules: int) -> str:
    """iptables-save text: Istio's chains plus kube-proxy's for about ``n_rules`` kube-proxy rules."""
    istio = render_save(generate(ISTIO_CONFIG)).splitlines()
    decls, rules = kube_lines(service_count(n_rules))
    out: list[str] = []
    in_nat = False
    for line in istio:
        if line == "*nat":
            in_nat = True
        if in_nat and line == "COMMIT":
            out.extend(decls)
            out.extend(rules)
            in_nat = False
        out.append(line)
    if not any(line == "*nat" for line in istio):  # pragma: no cover - Istio always writes nat
        out += ["*nat", *decls, *rules, "COMMIT"]
    return "\n".join(out) + "\n"
