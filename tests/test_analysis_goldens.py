"""All 35 Istio golden configurations checked for capture, bypass and no loops.

The rules are the goldens themselves (parsed), the proxy behaves as the current sidecar with the
golden's uid/gid and mode. A refuted property is a finding about that configuration (most goldens
run with ``-i ""``, i.e. no outbound CIDR is captured), so the table pins it rather than hiding it.
Owner *names* (``--gid-owner java``) cannot be resolved without the pod's /etc/group, so a
property they decide is ``unknown`` (naming the rule), never a guess. The same table is in the README (regenerate with ``python -m meshsolve.analysis.goldens``).
"""

from __future__ import annotations

import pytest

from meshsolve.analysis.goldens import GOLDEN_PROPERTIES, check_golden, golden_entries

# file: (capture outbound, bypass, no loops)
EXPECTED = {
    "empty.golden": ("refuted", "proved", "proved"),
    "inbound-ports-include.golden": ("refuted", "proved", "proved"),
    "inbound-ports-wildcard.golden": ("refuted", "proved", "proved"),
    "inbound-ports-tproxy.golden": ("refuted", "proved", "proved"),
    "inbound-ports-wildcard-tproxy.golden": ("refuted", "proved", "proved"),
    "tproxy.golden": ("refuted", "proved", "refuted"),  # a gid-1337 call to pod:53 loops (kernel-checked)
    "ip-range.golden": ("refuted", "proved", "proved"),
    "loopback-outbound-iprange.golden": ("refuted", "proved", "proved"),
    "outbound-ports-include.golden": ("refuted", "proved", "proved"),
    "ipnets.golden": ("refuted", "proved", "proved"),
    "kube-virt-interfaces.golden": ("proved", "proved", "proved"),
    "ipnets-with-kube-virt-interfaces.golden": ("refuted", "proved", "proved"),
    "basic-exclude-nic.golden": ("refuted", "proved", "proved"),
    "drop-invalid.golden": ("refuted", "proved", "proved"),
    "host-ipv4-loopback-cidr.golden": ("refuted", "proved", "proved"),
    "outbound-owner-groups.golden": ("unknown", "proved", "proved"),
    "outbound-owner-groups-exclude.golden": ("unknown", "proved", "proved"),
    "dns-uid-gid.golden": ("refuted", "proved", "proved"),
    "ipv6-empty-inbound-ports.golden": ("refuted", "proved", "proved"),
    "ipv6-inbound-ports.golden": ("refuted", "proved", "proved"),
    "ipv6-virt-interfaces.golden": ("refuted", "proved", "proved"),
    "ipv6-ipnets.golden": ("refuted", "proved", "proved"),
    "ipv6-uid-gid.golden": ("refuted", "proved", "proved"),
    "ipv6-outbound-ports.golden": ("refuted", "proved", "proved"),
    "ipv6-dns-uid-gid.golden": ("refuted", "proved", "proved"),
    "ipv6-dns-outbound-owner-groups.golden": ("unknown", "proved", "proved"),
    "ipv6-dns-outbound-owner-groups-exclude.golden": ("unknown", "proved", "proved"),
    "logging.golden": ("refuted", "proved", "proved"),
    "non-master/pr-59544/outbound-ports-exclude.golden": ("refuted", "proved", "proved"),
    "non-master/pr-59544/outbound-ports-exclude-single.golden": ("refuted", "proved", "proved"),
    "non-master/pr-59544/inbound-wildcard-exclude.golden": ("refuted", "proved", "proved"),
    "non-master/pr-37057-draft/outbound-owner-users.golden": ("unknown", "proved", "proved"),
    "non-master/pr-37057-draft/outbound-owner-users-exclude.golden": ("unknown", "proved", "proved"),
    "non-master/pr-37057-draft/ipv6-dns-outbound-owner-users-outbound-owner-groups.golden": ("unknown", "proved", "proved"),
    "non-master/pr-37057-draft/ipv6-dns-outbound-owner-users-exclude-outbound-owner-groups-exclude.golden": ("unknown", "proved", "proved"),
}


#: The verdicts must not depend on how loaded the machine is: the solver's resource limit (the same
#: work on every machine) bounds each call, and the wall limit is only a backstop. With the default
#: 20 s wall limit the TPROXY goldens' loop proofs gave up on a 2-core machine at load ~10.
LOAD_PROOF_MS = 300_000


def test_all_35_goldens_are_in_the_table(goldens_dir: object) -> None:
    files = [e.file for e in golden_entries()]
    assert len(files) == 35
    assert set(files) == set(EXPECTED)


@pytest.mark.parametrize("entry", golden_entries(), ids=lambda e: e.file)
def test_golden_capture_bypass_no_loops(entry: object) -> None:
    row = check_golden(entry, timeout_ms=LOAD_PROOF_MS)  # type: ignore[arg-type]
    got = tuple(v.kind for v in row.verdicts)
    want = EXPECTED[row.file]
    assert got == want, "\n".join(str(v) for v in row.verdicts)
    assert [type(p).__name__ for p in GOLDEN_PROPERTIES] == ["CaptureOutbound", "Bypass", "NoLoops"]
