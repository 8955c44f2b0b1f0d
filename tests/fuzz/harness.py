"""Fuzz harness for meshsolve's parsers: seed corpora, mutators, targets and a verdict per input.

Used by ``tests/test_inputs_parser_fuzz.py`` (short CI profile) and ``benchmarks/fuzz_campaign.py``
(the long campaign). Each *target* takes one mutated input and calls a public parser; the harness
classifies what came back:

- ``ok``      — the parser returned a value;
- ``rejected`` — it raised ``ParseError`` (or ``SpecError``) whose line number, when the input has
  lines, is set and within the input;
- ``refused`` — it raised another ``MeshsolveError`` (``UnsupportedError``, ``WorldError``);
- ``crash``   — anything else escaped, a ``ParseError`` without a valid line number, or the call
  exceeded the per-input time bound.

Seeds are read at run time: the Istio goldens under ``../shared/reference/istio-goldens``, the
repository's own test data (``tests/data``) and this directory's ``corpus/``. Nothing from the
reference material is copied here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml
from hypothesis import strategies as st

from meshsolve.errors import MeshsolveError, ParseError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
SHARED = Path(os.environ.get("MESHSOLVE_SHARED", ROOT.parent / "shared"))
GOLDENS = SHARED / "reference" / "istio-goldens"
DATA = ROOT / "tests" / "data"

#: Wall-clock bound for one parser call (a hang detector; typical calls take ~1 ms).
TIME_BOUND_S = 5.0


# ------------------------------------------------------------------------------------------------
# Seeds


def iptables_seeds() -> list[str]:
    """iptables text in every form: the 35 Istio goldens, the legacy vectors' rule text, own corpus."""
    seeds = [p.read_text(encoding="utf-8") for p in sorted(GOLDENS.rglob("*.golden"))]
    for p in sorted((DATA / "istio-legacy").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("rules"), str):
            seeds.append(doc["rules"])
    seeds += [p.read_text(encoding="utf-8") for p in sorted((CORPUS / "iptables").iterdir())]
    return seeds


def pod_seeds() -> list[str]:
    """Pod manifests: the repository's test pods (good and bad) and own corpus."""
    paths = sorted((DATA / "pods").glob("*.yaml")) + sorted((DATA / "pods" / "bad").glob("*.yaml"))
    paths += sorted((CORPUS / "pods").glob("*.yaml"))
    return [p.read_text(encoding="utf-8") for p in paths]


@attrs.frozen
class FlagSeed:
    version: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


def flag_seeds() -> list[FlagSeed]:
    """istio-iptables argv/env: own corpus, the legacy vectors, the goldens' ``as_flags``."""
    out: list[FlagSeed] = []

    def add(version: Any, args: Any, env: Any) -> None:
        out.append(FlagSeed(str(version), tuple(str(a) for a in args),
                            tuple((str(k), str(v)) for k, v in (env or {}).items())))

    for s in yaml.safe_load((CORPUS / "flags" / "seeds.yaml").read_text(encoding="utf-8")):
        add(s["version"], s["args"], s["env"])
    for p in sorted((DATA / "istio-legacy").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "args" in doc:
            add(doc.get("version", "current"), doc["args"], doc.get("env"))
    manifest = GOLDENS / "MANIFEST.yaml"
    if manifest.is_file():
        for g in yaml.safe_load(manifest.read_text(encoding="utf-8")).get("goldens", []):
            args: list[str] = []
            for item in g.get("as_flags") or ():
                with contextlib.suppress(ValueError):
                    args += shlex.split(str(item))
            add("current", args, {})
    return out


# ------------------------------------------------------------------------------------------------
# Mutators (Hypothesis-driven, so failures shrink and replay)

#: Tokens that tend to matter to these parsers: option names, quoting, shell metacharacters,
#: YAML syntax, huge and odd numbers, unicode look-alikes and controls.
DICTIONARY: tuple[str, ...] = (
    "!", "-A", "-I", "-N", "-X", "-F", "-P", "-j", "-g", "-m", "-p", "-s", "-d", "-i", "-o", "--dport",
    "--sport", "--dports", "--to-ports", "--on-port", "--set-mark", "--set-xmark", "--mark", "--ctstate",
    "--uid-owner", "--gid-owner", "--comment", "*nat", "*mangle", "*filter", "*raw", "*bogus", "COMMIT",
    ":OUTPUT ACCEPT [0:0]", ":X - [0:0]", "[0:0]", "[18446744073709551616:1]", "ISTIO_OUTPUT", "RETURN",
    "REDIRECT", "TPROXY", "NFQUEUE", "MARK", "CONNMARK", "owner", "multiport", "tcp", "udp", "all",
    "0", "-1", "65535", "65536", "4294967295", "4294967296", "0xffffffff", "0x1ffffffff",
    "99999999999999999999999999999999", "1e309", "nan", "0:65535", "65535:0", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
    "0.0.0.0/0", "::/0", "192.0.2.1/33", "2001:db8::/129", "256.1.1.1", "1.2.3", "::ffff:192.0.2.1",
    '"', "'", "\\", "\\\"", "$(touch /tmp/pwn)", "`id`", ";", "&&", "|", "\n", "\r", "\t", "\x00",
    "\u202e", "\u00a0", "\ufeff", "\U0001f600", "\udcff",
    "9" * 4301, "\u00b2", "\u0663\u0661", "\uff11\uff15\uff10\uff10\uff11",  # int() limit; non-ASCII digits
    "-", "--", "*", ",", ",,", "=", "--redirect-dns=maybe", "-b", "-d", "-x", "-u", "-z", "-q", "-k",
    "kind: Pod", "kind: List", "items:", "- ", ": ", "{", "}", "[", "]", "&a", "*a", "<<: *a", "!!binary",
    "!!python/object:os.system", "? ", "|", ">-", "%YAML 1.1", "---", "...", "null", "~", "true", "yes",
    "metadata:", "annotations:", "spec:", "containers:", "initContainers:", "args:", "status:",
    "traffic.sidecar.istio.io/includeInboundPorts", "sidecar.istio.io/interceptionMode",
    "proxy.istio.io/config", "podIP: 192.0.2.1", "podIPs:",
)

_TOKEN_RE = re.compile(r"\S+")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@st.composite
def _mutate_once(draw: st.DrawFn, text: str) -> str:
    op = draw(st.sampled_from(MUTATION_KINDS))
    lines = text.splitlines(keepends=True)
    if op == "byte_flip":
        data = bytearray(_encode(text))
        if not data:
            return text
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return _decode(bytes(data))
    if op == "delete_lines":
        if not lines:
            return text
        i = draw(st.integers(0, len(lines) - 1))
        n = draw(st.integers(1, 3))
        return "".join(lines[:i] + lines[i + n:])
    if op == "duplicate_lines":
        if not lines:
            return text
        i = draw(st.integers(0, len(lines) - 1))
        n = draw(st.integers(1, 3))
        j = draw(st.integers(0, len(lines)))
        return "".join(lines[:j] + lines[i:i + n] + lines[j:])
    if op == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if op == "swap_tokens":
        toks = list(_TOKEN_RE.finditer(text))
        if len(toks) < 2:
            return text
        a, b = sorted((draw(st.integers(0, len(toks) - 1)), draw(st.integers(0, len(toks) - 1))))
        if a == b:
            return text
        ta, tb = toks[a], toks[b]
        return (text[:ta.start()] + tb.group() + text[ta.end():tb.start()] + ta.group() + text[tb.end():])
    if op == "replace_token":
        toks = list(_TOKEN_RE.finditer(text))
        if not toks:
            return text
        t = toks[draw(st.integers(0, len(toks) - 1))]
        new = draw(st.sampled_from(DICTIONARY))
        return text[:t.start()] + new + text[t.end():]
    if op == "insert_token":
        i = draw(st.integers(0, len(text)))
        new = draw(st.sampled_from(DICTIONARY))
        sep = draw(st.sampled_from(("", " ")))
        return text[:i] + sep + new + sep + text[i:]
    if op == "random_unicode":
        i = draw(st.integers(0, len(text)))
        junk = draw(st.text(min_size=1, max_size=12))
        return text[:i] + junk + text[i:]
    if op == "huge_number":
        nums = list(re.finditer(r"\d+", text))
        digits = draw(st.integers(10, 5000))
        big = draw(st.sampled_from(("", "-", "0x"))) + "9" * digits
        if not nums:
            return text + " " + big
        m = nums[draw(st.integers(0, len(nums) - 1))]
        return text[:m.start()] + big + text[m.end():]
    if op == "long_line":
        i = draw(st.integers(0, len(text)))
        unit = draw(st.sampled_from(("A", "-m tcp ", "1,", "!", "[", "{", "- ", "\\", '"')))
        return text[:i] + unit * draw(st.integers(100, 20_000)) + text[i:]
    if op == "splice":
        other = draw(st.sampled_from(DICTIONARY))
        i = draw(st.integers(0, len(lines)))
        return "".join([*lines[:i], other + "\n", *lines[i:]])
    raise AssertionError(op)  # pragma: no cover


MUTATION_KINDS: tuple[str, ...] = (
    "byte_flip", "delete_lines", "duplicate_lines", "truncate", "swap_tokens", "replace_token",
    "insert_token", "random_unicode", "huge_number", "long_line", "splice",
)


@st.composite
def mutated_text(draw: st.DrawFn, seeds: list[str]) -> str:
    """One seed with 0..4 stacked mutations (0 keeps a few pristine seeds in the mix)."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, 4))):
        text = draw(_mutate_once(text))
    return text


@st.composite
def mutated_flags(draw: st.DrawFn, seeds: list[FlagSeed]) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """(version, argv, env) from a seed with token-level and in-token mutations."""
    seed = draw(st.sampled_from(seeds))
    args = list(seed.args)
    env = dict(seed.env)
    version = seed.version
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(("delete", "duplicate", "swap", "replace", "insert", "mutate_token",
                                   "env_set", "env_mutate", "version")))
        if op == "delete" and args:
            del args[draw(st.integers(0, len(args) - 1))]
        elif op == "duplicate" and args:
            i = draw(st.integers(0, len(args) - 1))
            args.insert(draw(st.integers(0, len(args))), args[i])
        elif op == "swap" and len(args) >= 2:
            i, j = draw(st.integers(0, len(args) - 1)), draw(st.integers(0, len(args) - 1))
            args[i], args[j] = args[j], args[i]
        elif op == "replace" and args:
            args[draw(st.integers(0, len(args) - 1))] = draw(st.sampled_from(DICTIONARY))
        elif op == "insert":
            args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from(DICTIONARY) | st.text(max_size=8)))
        elif op == "mutate_token" and args:
            i = draw(st.integers(0, len(args) - 1))
            args[i] = draw(_mutate_once(args[i]))
        elif op == "env_set":
            key = draw(st.sampled_from((
                "ENVOY_PORT", "INBOUND_CAPTURE_PORT", "PROXY_UID", "PROXY_GID", "INBOUND_PORTS_INCLUDE",
                "INBOUND_PORTS_EXCLUDE", "OUTBOUND_IP_RANGES_INCLUDE", "OUTBOUND_IP_RANGES_EXCLUDE",
                "INVALID_DROP", "ISTIO_META_DNS_CAPTURE", "DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK",
                "ENABLE_INBOUND_IPV6", "INBOUND_INTERCEPTION_MODE", "ISTIO_DUAL_STACK", "KUBEVIRT_INTERFACES")))
            env[key] = draw(st.sampled_from(DICTIONARY) | st.text(max_size=8))
        elif op == "env_mutate" and env:
            key = draw(st.sampled_from(sorted(env)))
            env[key] = draw(_mutate_once(env[key]))
        elif op == "version":
            version = draw(st.sampled_from(("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.9", "1.10", "1.25",
                                            "current", "1", "2.0", "1.99", "", "v1.2", "1.2.3", "x")))
    return version, tuple(args), env


# ------------------------------------------------------------------------------------------------
# Running one input


class TimeBoundExceeded(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Interrupt the block with ``TimeBoundExceeded`` after ``seconds`` (main thread, POSIX)."""
    def on_alarm(_sig: int, _frame: object) -> None:
        raise TimeBoundExceeded(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@attrs.frozen
class Outcome:
    kind: str  # ok / rejected / refused / crash
    detail: str = ""
    seconds: float = 0.0


def line_count(text: str) -> int:
    """The highest line number an error may name: lines split at ``\\n`` (the iptables parser's
    numbering, where the empty line after a final newline is where a missing ``COMMIT`` shows) or at
    any unicode line break (YAML's numbering counts ``\\r``, NEL, U+2028 too), whichever is more."""
    return max(text.count("\n") + 1, len(text.splitlines()) + 1)


def classify(call: Callable[[], object], *, lines: int | None,
             time_limit: float = TIME_BOUND_S) -> Outcome:
    """Run ``call`` and classify the result; ``lines`` is the input's line count (None: no lines)."""
    t0 = time.perf_counter()
    try:
        with time_bound(time_limit):
            call()
    except TimeBoundExceeded as exc:
        return Outcome("crash", f"hang: {exc}", time.perf_counter() - t0)
    except ParseError as exc:
        dt = time.perf_counter() - t0
        if lines is not None and (exc.lineno is None or not 1 <= exc.lineno <= lines):
            return Outcome("crash", f"ParseError with line number {exc.lineno} for a {lines}-line input: "
                                    f"{exc.message}", dt)
        if not str(exc).strip():
            return Outcome("crash", "ParseError with an empty message", dt)
        return Outcome("rejected", f"{type(exc).__name__}: {exc.message}", dt)
    except MeshsolveError as exc:
        return Outcome("refused", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    except Exception as exc:  # the very thing being looked for
        return Outcome("crash", f"{type(exc).__name__}: {exc}"[:500], time.perf_counter() - t0)
    return Outcome("ok", "", time.perf_counter() - t0)


def run_iptables(text: str) -> Outcome:
    from meshsolve.iptables import parse_text

    return classify(lambda: parse_text(text, source="<fuzz>"), lines=line_count(text))


def run_pods(text: str) -> Outcome:
    from meshsolve.istio import pods_from_text

    return classify(lambda: pods_from_text(text, source="<fuzz>"), lines=line_count(text))


def run_flags(version: str, args: tuple[str, ...], env: dict[str, str]) -> Outcome:
    from meshsolve.istio import parse_flags

    # argv has no lines: a SpecError need not carry a line number
    return classify(lambda: parse_flags(args, env, version=version), lines=None)


def spec_seeds() -> list[str]:
    """Synthesis specs: the shipped ``specs/*.yaml``."""
    return [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.yaml"))]


def run_spec(text: str) -> Outcome:
    from meshsolve.analysis.spec import parse_spec

    return classify(lambda: parse_spec(text, source="<fuzz>"), lines=line_count(text))
