"""Parse every iptables text form users have into ``Rulesets``; render canonical text back.

Public entry points (other layers call exactly these):

- :func:`parse_text` / :func:`parse_file` → :class:`meshsolve.model.Rulesets` (IPv4 + IPv6), from
  iptables-save output (with or without ``-c`` counters), iptables-restore input (Istio's
  ``* nat`` / ``-N`` / ``-I CHAIN n`` dialect included), istio-iptables dry-run transcripts,
  ``iptables``/``ip6tables`` shell command lines, and ``kubectl logs ... -c istio-init`` output;
- :func:`render_save` → the text iptables-save 1.8.9 (nf_tables) prints, without the date lines;
- :func:`render_restore` → iptables-restore input recreating the ruleset;
- :func:`rule_text` → one rule's canonical arguments (``-A CHAIN`` left out), used by traces;
- :func:`to_json` / :func:`from_json` → the model as JSON with stable keys.
"""

from meshsolve.iptables.jsonio import from_json, to_json, to_jsonable
from meshsolve.iptables.parse import MAX_INPUT_BYTES, MAX_LINE_CHARS, parse_file, parse_rule, parse_text
from meshsolve.iptables.render import TABLE_SAVE_ORDER, render_restore, render_save, rule_text

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LINE_CHARS",
    "TABLE_SAVE_ORDER",
    "from_json",
    "parse_file",
    "parse_rule",
    "parse_text",
    "render_restore",
    "render_save",
    "rule_text",
    "to_json",
    "to_jsonable",
]
