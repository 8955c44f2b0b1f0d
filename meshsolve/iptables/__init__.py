"""Parse every iptables text form users have into ``Rulesets``; render canonical text back.

Public entry points (other layers call exactly these):

- :func:`parse_text` / :func:`parse_file` → :class:`meshsolve.model.Rulesets` (IPv4 + IPv6), from
  iptables-save output (with or without ``-c`` counters), iptables-restore input (Istio's
  ``* nat`` / ``-N`` / ``-I CHAIN n`` dialect included), istio-iptables dry-run transcripts,
  ``iptables``/``ip6tables`` shell command lines, and ``kubectl logs ... -c istio-init`` output;
- :func:`read_text` / :func:`read_file` → a :class:`Reading`: the form, the state it shows, notes,
  the :class:`Failure` s a log shows, and whether the input ends early;
- :func:`parse_rule` → one rule's arguments (``-A CHAIN`` left out) as a ``Rule``;
- :func:`split_words` → one line's words with iptables-save's quoting undone (the argument vector of
  an ``iptables`` command for a rule's text);
- :func:`render_save` → the text iptables-save 1.8.9 (nf_tables) prints, without the date lines;
- :func:`render_restore` → iptables-restore input recreating the ruleset;
- :func:`rule_text` → one rule's canonical arguments (``-A CHAIN`` left out), used by traces;
- :func:`to_json` / :func:`from_json` → the model as JSON with stable keys.
"""

from meshsolve.iptables.jsonio import from_json, json_key, to_json, to_jsonable
from meshsolve.iptables.logs import Failure
from meshsolve.iptables.parse import MAX_INPUT_BYTES, file_text, parse_file, parse_text, read_file
from meshsolve.iptables.reading import Reading, read_text, read_unwrapped, refusal, unwrap_text
from meshsolve.iptables.render import TABLE_SAVE_ORDER, render_restore, render_save, rule_text
from meshsolve.iptables.rule import parse_rule
from meshsolve.iptables.tokens import MAX_LINE_CHARS, split_words

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LINE_CHARS",
    "TABLE_SAVE_ORDER",
    "Failure",
    "Reading",
    "file_text",
    "from_json",
    "json_key",
    "parse_file",
    "parse_rule",
    "parse_text",
    "read_file",
    "read_text",
    "read_unwrapped",
    "refusal",
    "unwrap_text",
    "render_restore",
    "render_save",
    "rule_text",
    "split_words",
    "to_json",
    "to_jsonable",
]
