"""What meshsolve says about each real pasted artifact of tests/data/corpus/ (SOURCES.md says where
each came from and what a correct tool says about it; CURRENT.md records these answers).

Every corpus file has at least one case here (a test checks that), run through the command line as a
user would: the exit code, what the output must say, and what it must not (a port or an address that
comes from nowhere, an Istio finding about another mesh). Files the search tools cut short are
expected to get the honest "the input ends early" refusal. The solver's choice of witness is never
pinned: the assertions are about what the inputs support.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meshsolve.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the command line in-process: (exit code, stdout and stderr)."""
    code = main([*argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def corpus(name: str) -> str:
    path = CORPUS / name
    assert path.is_file(), name
    return str(path.relative_to(ROOT))


# (file, argv with FILE for the path, exit code, must say (regexes), must not say (regexes))
Case = tuple[str, tuple[str, ...], int, tuple[str, ...], tuple[str, ...]]
NO_ISTIO_FINDING = r"\[MSH01\d\d\]"
L_REFUSAL = r"this is `iptables -L` output.*run `iptables-save` \(or `iptables -t nat -S`\)"
DESCRIBE = r"this is `kubectl describe pod` output.*run `kubectl get pod NAME -o yaml`"
ENDS_EARLY = r"the input ends early"
INVENTED = (r"8080",)  # the port the earlier door made up

CASES: tuple[Case, ...] = (
    # --- rule listings -----------------------------------------------------------------------
    ("istio-1.0.2-nat-S-istioio-blog.txt", ("parse", "FILE"), 0,
     (r"\*nat", r"-A ISTIO_INBOUND -p tcp -m tcp --dport 80 -j ISTIO_IN_REDIRECT", r"skipped the command line"),
     ()),
    ("istio-1.0.2-nat-S-istioio-blog.txt", ("check", "--rules", "FILE"), 79,
     (r"read as an `iptables -S` listing of the nat table", r"Istio version inferred from the rules: 1\.0–1\.2",
      r"an app listens on 0\.0\.0\.0:80 \(assumed: port 80 is inferred from nat::ISTIO_INBOUND#1",
      # the 1.0-1.2 loop (facts §1.8): the proxy's passthrough to its own pod IP is captured again by
      # the lo rule, which comes before the uid RETURN in this era
      r"\[MSH0104\].*rule nat::ISTIO_OUTPUT#1 ! -d 127\.0\.0\.1/32 -o lo -j ISTIO_REDIRECT \[assumes: .*the pod IP"),
     INVENTED),
    ("istio-1.0.2-nat-S-istioio-blog.txt", ("check", "--rules", "FILE", "-p", "reach:peer:80"), 0,
     (r"No issues found: 1 of 1 property proved",), INVENTED),
    ("istio-1.13to1.17-nat-S-fsm-xyz-notes.txt", ("check", "--rules", "FILE"), 0,
     (r"Istio version inferred from the rules: 1\.13–1\.17", r"No issues found",
      r"a listener on 0\.0\.0\.0:1024 stands for an app on any port no rule names \(assumed"), INVENTED),
    ("istio-1.13to1.17-nat-L-fsm-xyz-notes.txt", ("check", "--rules", "FILE"), 65, (L_REFUSAL,), ()),
    ("istio-1.12.0-nat-S-counters-istio36629.txt", ("parse", "FILE", "--counters"), 0,
     (r":PREROUTING ACCEPT \[2386:143232\]", r"\[2384:143040\] -A PREROUTING -p tcp -j ISTIO_INBOUND"), ()),
    ("istio-1.12.0-nat-S-counters-istio36629.txt", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0111\].*not installed whole: ISTIO_REDIRECT has no rule", r"or the listing is cut; nothing is analysed",
      r"no property checked"), (r"\[MSH010\d\]",)),
    ("istio-1.1.5-legacy-warning-repeated-rules-istio15519.txt", ("check", "--rules", "FILE"), 65,
     (r"rule lines outside a \*table \.\.\. COMMIT block", r"the same rules repeat",
      r"iptables-legacy tables also exist; they are not in this text \(`iptables-legacy-save` shows them\)"), ()),
    ("istio-1.0.0-nat-L-v-rootsongjc.txt", ("check", "--rules", "FILE"), 65, (L_REFUSAL,), ()),
    ("istio-L-istio-output-with-log-rule-istio29777.txt", ("parse", "FILE"), 65, (L_REFUSAL,), ()),
    ("istio-vm-nat-L-v-docker-istio27728.txt", ("check", "--rules", "FILE"), 65, (L_REFUSAL,), ()),
    # --- istio-init logs ---------------------------------------------------------------------
    ("istio-1.13-init-full-log-with-save-unattributed.log", ("check", "--rules", "FILE"), 0,
     (r"Istio version inferred from the rules: 1\.13\n", r"No issues found: 6 of 6 properties proved"), INVENTED),
    ("istio-1.13-init-full-log-with-save-unattributed.log", ("parse", "FILE"), 0,
     (r"\*mangle", r"-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"), ()),
    ("istio-1.5-init-log-x-b-bug-istio28106.log", ("check", "--rules", "FILE"), 65,
     (ENDS_EARLY, r"OUTBOUND_IP_RANGES_EXCLUDE=-b: a flag took the next flag \(-b\) as its value"), ()),
    ("istio-1.5to1.10-init-failed-nat-table-istio28897.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*istio-init failed: `iptables-restore --noflush /tmp/iptables-rules-\S+` \(line 3: "
      r"iptables-restore: unable to initialize table 'nat', exit status 2\)",
      r"Not installed by this run: every table of its rules file", r"Nothing is analysed"),
     (r"\[MSH010\d\]",)),
    ("istio-1.12plus-init-failed-openshift-istio42262.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*unable to initialize table 'nat', exit status 2", r"Nothing is analysed"), (r"\[MSH010\d\]",)),
    ("istio-1.12to1.13-init-timestamped-failed-m1-istio36762.log", ("check", "--rules", "FILE"), 65,
     (r"missing COMMIT for table nat .*" + ENDS_EARLY,), ()),
    ("istio-1.14-init-exclude-interfaces-istio40326.log", ("check", "--rules", "FILE"), 65, (ENDS_EARLY,), ()),
    ("istio-1.2x-init-indented-failed-bpf-istio50217.log", ("check", "--rules", "FILE"), 65,
     (r"this istio-init log ends after its header: it shows no rules and no outcome",), ()),
    ("istio-1.9to1.11-argv-pilot-agent-istio-iptables-istio33566.log", ("check", "--rules", "FILE"), 65,
     (r"ends after its header", r"line 1 is the istio-iptables command line `/usr/local/bin/pilot-agent "
      r"istio-iptables -p \"15001\"", r"meshsolve generate --istio VERSION -- FLAGS"), ()),
    ("istio-1.5.2-init-tail-panic-istio23661.log", ("check", "--rules", "FILE"), 0,
     (r"the input starts inside a table \(its `\*nat` line is missing",
      r"Istio version inferred from the rules: 1\.5–1\.6", r"No issues found"), INVENTED),
    ("istio-1.4-init-bashx-chain-exists-istio21030.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*`iptables -t nat -N ISTIO_REDIRECT` \(line 29: iptables: Chain already exists\.\)",
      r"Installed by it: nothing", r"its dump after the failure is cut"), (r"\[MSH010\d\]",)),
    ("istio-1.4.2-init-bashx-chain-exists-istio19717.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*Chain already exists", r"its dump after the failure is cut"), (r"\[MSH010\d\]",)),
    # cut, but the chain list is whole (iptables-save declares every chain before the first rule)
    ("istio-1.4-init-partial-state-istio18014.log", ("check", "--rules", "FILE"), 65,
     (r"missing COMMIT for table nat \(opened at line 40\).*" + ENDS_EARLY,
      r"its chains \(declared before its first rule, so all of them\) are ISTIO_IN_REDIRECT, ISTIO_OUTPUT, "
      r"ISTIO_REDIRECT, without ISTIO_INBOUND, although this run's header asks for inbound capture "
      r"\(INBOUND_PORTS_INCLUDE=\*\): inbound capture was not installed",
      r"its first rule \(line 48\) is in OUTPUT.*PREROUTING holds no rule",
      r"ISTIO_IN_REDIRECT redirects to 15001 \(line 49\), but this run's header says "
      r"PROXY_INBOUND_CAPTURE_PORT=15006: the dump's rules are not this run's"), ()),
    ("istio-1.1-init-bashx-maistra-istio16473.log", ("check", "--rules", "FILE"), 65,
     (r"`bash -x` trace of istio-iptables\.sh stops before the script's final iptables-save dump",), ()),
    ("istio-1.1-init-bashx-no-chain-okd-istio13857.log", ("parse", "FILE"), 0,
     (r"\*filter", r"the log shows a failure: `iptables -t nat -A ISTIO_REDIRECT"), (r"\*nat",)),
    ("istio-1.1-init-bashx-no-chain-okd-istio13857.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*`iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-port 15001` \(line 29: "
      r"iptables: No chain/target/match by that name\.\)",
      r"Installed by it: 1 earlier command of this run took effect \(`iptables -t nat -N ISTIO_REDIRECT`\)",
      r"the iptables-save dump after the failure holds no capture rule"),
     (r"\[MSH010\d\]", r"8080", r"192\.0\.2\.")),
    ("istio-1.6.3-init-failed-line2-edited-istio25792.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*iptables-restore: line 2 failed, exit status 1\)",
      r"Installed by it: nothing \(a rules file opens with its first table, so line 2 is in it\)"), ()),
    ("istio-1.4-init-cri-format-istio19380.log", ("check", "--rules", "FILE"), 65,
     (r"ends after its header",), ()),
    ("istio-1.5-init-docker-json-log-banzai423.log", ("check", "--rules", "FILE"), 65,
     (r"missing COMMIT for table nat \(opened at line 7\).*" + ENDS_EARLY,), ()),
    ("istio-1.2-cni-journald-escaped-istio15895.log", ("check", "--rules", "FILE"), 79,
     (r"\[MSH0110\].*nsenter failed: exit status 3", r"Nothing is analysed"), (r"\[MSH010\d\]",)),
    ("istio-ambient-cni-log-pod-prefix-istio53843.log", ("check", "--rules", "FILE"), 65,
     (r"these are the rules of Istio's ambient mode \(ztunnel's in-pod capture\) \(ISTIO_PRERT \(line 2\)\), "
      r"not Istio's sidecar set-up",), (NO_ISTIO_FINDING,)),
    # --- other meshes ------------------------------------------------------------------------
    ("linkerd-2.11-init-logfmt-debug-linkerd7767.log", ("check", "--rules", "FILE"), 65,
     (r"these are the rules of Linkerd's proxy-init \(PROXY_INIT_REDIRECT \(line 4\)\)",), (NO_ISTIO_FINDING,)),
    ("linkerd-nft-init-logfmt-failed-linkerd13171.log", ("check", "--rules", "FILE"), 65,
     (r"Linkerd's proxy-init",), (NO_ISTIO_FINDING,)),
    # a whole run of Linkerd's commands: checked with Linkerd's proxy (inputs/meshes.py); the commands
    # shown never jump OUTPUT to PROXY_INIT_OUTPUT, so outbound traffic is not captured
    ("linkerd-2021-init-colon-commands-linkerd2proxy1219.log", ("check", "--rules", "FILE"), 79,
     (r"the dump holds linkerd's rules \(its chains PROXY_INIT_OUTPUT, PROXY_INIT_REDIRECT\)",
      r"Error \[MSH0102\].* ends as egress 192\.0\.2\.20:8080 without passing the sidecar's outbound side"), ()),
    ("linkerd-2021-init-colon-commands-linkerd2proxy1219.log", ("parse", "FILE"), 0,
     # iptables 1.8.9 takes `-N CHAIN -m comment --comment x` (measured); parse is mesh-agnostic
     (r"read the 8 iptables commands the log shows it ran", r":PROXY_INIT_REDIRECT - \[0:0\]",
      r"-A PROXY_INIT_REDIRECT -p tcp .*-j REDIRECT --to-ports 4143"), ()),
    ("linkerd-2.11-init-logfmt-debug-linkerd7767.log", ("parse", "FILE"), 65,
     (r"the log runs iptables commands after its last iptables-save dump: the state they left is not shown",),
     ()),
    ("linkerd-2020-init-log-vnL-linkerd4758.log", ("check", "--rules", "FILE"), 65,
     (r"Linkerd's proxy-init",), (NO_ISTIO_FINDING,)),
    ("linkerd-proxy-init-L-line-numbers-proxyinit53.txt", ("check", "--rules", "FILE"), 65,
     (r"Linkerd's proxy-init",), (NO_ISTIO_FINDING,)),
    ("linkerd-proxy-init-L-line-numbers-proxyinit53.txt", ("parse", "FILE"), 65, (L_REFUSAL,), ()),
    ("kuma-1.5-transparent-proxy-dry-run-kuma4050.log", ("check", "--rules", "FILE"), 65,
     (r"these are the rules of Kuma's transparent proxy \(MESH_INBOUND \(line 33\)\)",), (NO_ISTIO_FINDING,)),
    # --- manifests ---------------------------------------------------------------------------
    ("istio-1.12.1-pod-json-httpbin-unattributed.json", ("check", "--pod", "FILE"), 0,
     (r"read the injected istio-init container \(Istio 1\.12\)",
      r"app httpbin listens on 0\.0\.0\.0:80 \(assumed: port 80 is declared \(\S+json:46\), the bind address is not",
      r"No issues found: 6 of 6 properties proved for Pod default/httpbin-74fb669cc6-8g9vf"),
     (r"the pod IP .*assumed",)),
    ("istio-1.12.1-pod-json-httpbin-unattributed.json", ("generate", "--pod", "FILE"), 0,
     (r"# Istio 1\.12 capture rules", r"-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN"), ()),
    ("istio-1.0.0-kube-inject-service-deployment-rootsongjc.yaml", ("check", "--pod", "FILE"), 79,
     (r"skipped the Service 'productpage' \(\S+:1\): it holds no pod", r"Istio 1\.0\)",
      r"app productpage listens on 0\.0\.0\.0:9080", r"for Pod default/productpage-v1"), ()),
    ("istio-1.0.0-kube-inject-service-deployment-rootsongjc.yaml", ("generate", "--pod", "FILE"), 0,
     (r"-b 9080, -d", r"-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT"), (r"--dport 22",)),
    ("istio-testdata-kube-inject-frontend.yaml", ("check", "--pod", "FILE"), 0,
     (r"skipped the Service 'frontend'", r"the sidecar of Istio current \(assumed: nothing in the inputs says "
      r"which Istio; give --istio VERSION\)", r"No issues found"), ()),
    ("istio-1.0.2-describe-pod-istioio-blog.txt", ("check", "--pod", "FILE"), 65, (DESCRIBE,), ()),
    ("istio-0.8-describe-pod-init-crashloop-istio5219.txt", ("check", "--pod", "FILE"), 65, (DESCRIBE,), ()),
    ("istio-1.17.1-describe-pod-init-exit255-istio44118.txt", ("check", "--pod", "FILE"), 65,
     (DESCRIBE, r"a container that exited with code 255"), ()),
    # --- listening sockets -------------------------------------------------------------------
    ("istio-1.10-ss-tanp-peerpod-cc87.txt", ("check", "--istio", "1.10", "--binds", "FILE"), 0,
     (r"read the listening TCP sockets of a `ss` listing", r"the sidecar's own listeners are not apps: envoy "
      r"0\.0\.0\.0:15090, envoy 127\.0\.0\.1:15000, envoy 0\.0\.0\.0:15001, pilot-agent 127\.0\.0\.1:15004",
      r"app nginx runs as uid 1000, gid 1000 \(assumed: the listing shows no uid \(program nginx\)"), ()),
    ("istio-0.2-netstat-pln-istio1822.txt", ("check", "--istio", "1.0", "--binds", "FILE"), 79,
     (r"envoy 127\.0\.0\.1:15000, envoy 0\.0\.0\.0:15001",
      r"app app runs as uid 1000, gid 1000 \(assumed: the listing shows no uid \(another user.s process"), ()),
    ("istio-1.0.3-gateway-netstat-ltnp-istio5726.txt", ("check", "--istio", "current", "--binds", "FILE"), 0,
     (r"no app listens in this listing",), ()),
    ("istio-ambient-netstat-a-istio54781.txt", ("check", "--istio", "current", "--binds", "FILE"), 0,
     (r"ztunnel's in-pod listeners: this pod is in Istio's ambient mode, not a sidecar set-up",), ()),
    ("istio-0.2-netstat-pln-istio1822.txt", ("check", "--rules", "FILE"), 65,
     (r"this is a socket listing \(`ss` / `netstat`\), not iptables rules: give it to --binds",), ()),
)


@pytest.mark.parametrize(("name", "argv", "code", "says", "never"), CASES,
                         ids=[f"{c[0]}-{c[1][0]}-{'-'.join(c[1][1:]).replace('FILE', '')[:30]}" for c in CASES])
def test_what_meshsolve_says_about_each_corpus_file(capsys: pytest.CaptureFixture[str], name: str,
                                                     argv: tuple[str, ...], code: int, says: tuple[str, ...],
                                                     never: tuple[str, ...]) -> None:
    got, out = run(capsys, *(corpus(name) if a == "FILE" else a for a in argv))
    assert got == code, out
    for pattern in says:
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"
    for pattern in never:
        assert not re.search(pattern, out), f"unexpected {pattern!r} in:\n{out}"
    assert "Traceback" not in out


def test_every_corpus_file_has_a_case() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.suffix != ".md"}
    assert files == {c[0] for c in CASES}, files ^ {c[0] for c in CASES}
    assert len(files) == 43


# --- beyond the stored files: what their threads were about ----------------------------------------

def test_the_literal_x_b_argv_reproduces_the_users_symptom(capsys: pytest.CaptureFixture[str]) -> None:
    """istio/istio#28106: ``-x -b '*'``: pflag gives ``-x`` the value ``-b``, the tool skips it as no CIDR,
    ``'*'`` is ignored and ``-b`` is never set: no inbound capture. The generated rules match the ones
    the user's log shows (its rules file, as far as our copy goes)."""
    from meshsolve.iptables import parse_text, render_restore
    from meshsolve.istio import generate
    from meshsolve.istio.flags import read_flags

    argv = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "-b", "*",
            "-d", "15090,15020"]
    code, out = run(capsys, "check", "--istio", "1.5", "-p", "capture-in", "--", *argv)
    assert code == 79 and "[MSH0101]" in out and "without passing the sidecar's inbound side" in out
    assert "ignores '-b'" in out and "not a flag: '*'" in out
    config = read_flags(argv, version="1.5").config
    ours = generate(config).ipv4
    assert ours.chain("nat", "ISTIO_INBOUND") is None  # nothing jumps from PREROUTING either
    log = (CORPUS / "istio-1.5-init-log-x-b-bug-istio28106.log").read_text().splitlines()
    start = log.index("* nat")
    theirs = parse_text("\n".join(log[start:]) + "\nCOMMIT\n").ipv4
    for chain in ("ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"):
        assert theirs.chain("nat", chain).rules == ours.chain("nat", chain).rules  # type: ignore[union-attr]
    shown = theirs.chain("nat", "ISTIO_OUTPUT").rules  # type: ignore[union-attr]
    assert ours.chain("nat", "ISTIO_OUTPUT").rules[:len(shown)] == shown  # type: ignore[union-attr]
    assert "ISTIO_INBOUND" not in render_restore(ours)


def test_the_argv_run_by_hand_in_istio33566_reads_two_proxy_uids(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "generate", "--istio", "1.10", "--", "-p", "15001", "-z", "15006", "-u", "1337,1338",
                    "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020")
    assert code == 0
    assert "--uid-owner 1337 -j RETURN" in out and "--uid-owner 1338 -j RETURN" in out


def test_a_version_the_rules_contradict_is_a_finding(capsys: pytest.CaptureFixture[str]) -> None:
    """The reviews pod's istio-init image says 1.2; the 1.13 log's rules fit 1.13 only."""
    log = corpus("istio-1.13-init-full-log-with-save-unattributed.log")
    code, out = run(capsys, "check", "--pod", "docs/examples/reviews-v1.yaml", "--rules", log)
    assert code == 79
    assert re.search(r"Warning \[MSH0112\].*The rules fit Istio 1\.13 .*but the image tag of istio-init "
                     r"\(\S+:1\.2\.\d+\) says 1\.2; the sidecar of 1\.2 is used", out)
    code, out = run(capsys, "check", "--istio", "1.13", "--rules", log)
    assert code == 0 and "MSH0112" not in out
    code, out = run(capsys, "check", "--istio", "1.5", "--rules", log)
    assert "[MSH0112]" in out and "but --istio says 1.5" in out
