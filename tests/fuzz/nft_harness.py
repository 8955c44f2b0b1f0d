"""Fuzz harness for the nftables readers, one seed corpus and runner per form (``commands``: ``nft -f``
input; ``listing``: ``nft list ruleset`` output; ``json``: ``nft -j`` JSON), on top of
``harness.py``'s mutators and verdicts.

Seeds are read at run time: Istio's nft goldens and the local kernel listings under
``../shared/reference/frontier``, Consul's nft test vectors, and this directory's ``corpus/nft*``.
JSON inputs get structural mutations too (a value replaced, a key dropped, a list item duplicated,
deep nesting), so the decoder itself is exercised and not only ``json.loads``. The nft readers may
only answer with a value or a ``ParseError`` that names a line of the input: any other exception,
``MeshsolveError``s included, counts as a crash here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fuzz import harness as H
from hypothesis import strategies as st

FRONTIER = H.SHARED / "reference" / "frontier"
FORMS = ("commands", "listing", "json")

#: Words and values that matter to nft's grammar.
NFT_WORDS: tuple[str, ...] = (
    "add", "insert", "delete", "flush", "create", "replace", "rename", "table", "chain", "rule", "set", "map",
    "element", "ruleset", "index", "position", "handle", "inet", "ip", "ip6", "arp", "bridge", "netdev", "type",
    "hook", "priority", "policy", "device", "nat", "filter", "route", "prerouting", "output", "input",
    "postrouting", "ingress", "dstnat", "srcnat", "mangle", "raw", "-100", "-300", "accept", "drop", "return",
    "jump", "goto", "counter", "redirect", "to", ":15001", "tproxy", "dnat", "snat", "masquerade", "mark",
    "meta", "ct", "state", "zone", "skuid", "skgid", "iifname", "oifname", "l4proto", "nfproto", "th",
    "tcp", "udp", "dport", "sport", "saddr", "daddr", "&", "|", "^", "and", "or", "!=", "==", "<", ">=", "{",
    "}", ";", ",", ".", "@x", "$x", "#", "# handle 7", '"', '"lo"', "*", "-", "/", "0x539", "0xffffffff",
    "0x1ffffffff", "65536", "::1/129", "127.0.0.1/33", "1-0", "established,related", "a | b", "vmap", "log",
    "prefix", "level", "reject", "with", "comment", "define", "include", "list", "nft", "sudo",
)
#: Values a JSON mutation puts somewhere.
JSON_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 65536, 2**32, 2**64, 10**400, 1.5, "", "x", "@", "@x", "tcp", "inet", "ip6",
    "::1/129", "0.0.0.0/0", "lo" * 20, [], {}, [1, 2], {"set": []}, {"range": [5, 1]}, {"prefix": {"addr": 1}},
    {"&": [1]}, {"|": ["established", {"|": []}]}, {"payload": {"protocol": "tcp", "field": "dport"}},
    {"meta": {"key": "mark"}}, {"match": {}}, {"jump": {"target": None}}, {"nftables": []}, "\u202e", "\x00",
)


def _read_all(paths: list[Any]) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in paths]


def seeds(form: str) -> list[str]:
    """The seed corpus of one form."""
    if form == "commands":
        paths = sorted((FRONTIER / "istio-nftables-sidecar").glob("*.golden"))
        paths += sorted((FRONTIER / "istio-ambient-nftables").glob("*.golden"))
        paths += sorted((FRONTIER / "consul").glob("sdk-nftables-*"))
        paths += sorted((H.CORPUS / "nft").iterdir())
    elif form == "listing":
        paths = sorted((FRONTIER / "derived-listings").glob("*.txt")) + sorted((H.CORPUS / "nft-listing").iterdir())
    elif form == "json":
        paths = sorted((FRONTIER / "derived-listings").glob("*.json")) + sorted((H.CORPUS / "nft-json").iterdir())
    else:
        raise ValueError(form)
    return _read_all(paths)


@st.composite
def _mutate_json(draw: st.DrawFn, doc: Any) -> Any:
    """One structural mutation somewhere in a decoded JSON document."""
    path: list[Any] = []
    node = doc
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(node, key=str))) if isinstance(node, dict) else \
            draw(st.integers(0, len(node) - 1))
        path.append(key)
        node = node[key]
    op = draw(st.sampled_from(("replace", "delete", "duplicate", "wrap", "deep")))
    if not path:
        return copy.deepcopy(draw(st.sampled_from(JSON_VALUES))) if op == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "replace":
        parent[last] = copy.deepcopy(draw(st.sampled_from(JSON_VALUES)))  # never share the constants
    elif op == "delete":
        del parent[last]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(last, json.loads(json.dumps(parent[last])))
    elif op == "wrap":
        parent[last] = {draw(st.sampled_from(("set", "range", "&", "|", "elem", "prefix", "concat"))): parent[last]}
    else:
        value: Any = parent[last]
        for _ in range(draw(st.integers(10, 120))):  # deeper than the reader's limit, far within Python's
            value = [value]
        parent[last] = value
    return doc


_CORPUS: dict[str, list[str]] = {}


def _corpus(form: str) -> list[str]:
    if form not in _CORPUS:
        _CORPUS[form] = seeds(form)
    return _CORPUS[form]


@st.composite
def mutated_json(draw: st.DrawFn, form: str = "json") -> str:
    """A JSON seed with 0..4 structural mutations, then maybe text mutations, indented or not."""
    seed_texts = _corpus(form)
    doc = json.loads(seed_texts[draw(st.integers(0, len(seed_texts) - 1))])
    for _ in range(draw(st.integers(0, 4))):
        doc = draw(_mutate_json(doc))
    text = json.dumps(doc, indent=draw(st.sampled_from((None, 1, 2))))
    if draw(st.integers(0, 3)) == 0:
        text = draw(_text_mutation(text))
    return text


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    return draw(H._mutate_once(text))


@st.composite
def mutated_nft_text(draw: st.DrawFn, form: str) -> str:
    """Text mutations of nft seeds, with nft's own words spliced in too."""
    seed_texts = _corpus(form)
    text = seed_texts[draw(st.integers(0, len(seed_texts) - 1))]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 2)) == 0:
            toks = list(H._TOKEN_RE.finditer(text))
            word = draw(st.sampled_from(NFT_WORDS))
            if toks and draw(st.booleans()):
                t = toks[draw(st.integers(0, len(toks) - 1))]
                text = text[:t.start()] + word + text[t.end():]
            else:
                i = draw(st.integers(0, len(text)))
                text = text[:i] + " " + word + " " + text[i:]
        else:
            text = draw(H._mutate_once(text))
    return text


def strategy(form: str) -> st.SearchStrategy[str]:
    """Mutated inputs of one form (the seeds are read once)."""
    _corpus(form)
    return mutated_json(form) if form == "json" else mutated_nft_text(form)


def run_nft(text: str) -> H.Outcome:
    """Parse with the auto-detecting reader; only a value or a located ParseError may come back."""
    from meshsolve.nftables import parse_text

    out = H.classify(lambda: parse_text(text, source="<fuzz>"), lines=H.line_count(text))
    if out.kind == "refused":  # another MeshsolveError escaped: not allowed for these readers
        return H.Outcome("crash", out.detail, out.seconds)
    return out
