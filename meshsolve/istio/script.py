"""Render ``Rulesets`` (and the pod's policy routing) as a POSIX shell script a platform team can ship.

The script installs the rules with ``iptables-restore --noflush``, one input per address family,
and never runs ``iptables`` rule by rule: a failure half way through a sequence of commands leaves
a chain without its hook jump, or a jump into a half-filled chain. What it does, in order:

1. **Backend.** ``--backend legacy|nft`` (or ``MESHSOLVE_IPTABLES_BACKEND``) wins. Otherwise it
   decides as Kubernetes' iptables-wrapper does: the kubelet's marker chains
   (``KUBE-IPTABLES-HINT``, ``KUBE-KUBELET-CANARY``) in nf_tables' mangle table mean nf_tables, in
   legacy's tables (read without ``-t``, which would load a legacy table) legacy; else the backend
   whose ``-save`` output holds more rules (``^-`` lines, both families), nf_tables on a tie. When
   only one backend is installed it is used, and plain ``iptables`` when neither suffixed name is.
2. **Input.** Per family and table: our chains declared (``:CHAIN - [0:0]``, which with
   ``--noflush`` creates the chain or flushes it) and filled; a rule of a built-in chain (the hook
   jumps) is added only when ``iptables -C`` does not find it, so a second run adds nothing. Built-in
   chains are never declared, so their policies and the other rules in them stay as they are; other
   chains are never named.
3. **Pre-flight.** ``iptables-restore --test --noflush`` on each family's input: what the parser
   refuses is refused before anything changes.
4. **Snapshot, apply, roll back.** iptables-restore commits each *table* at its ``COMMIT`` (with or
   without ``--noflush``, both backends, docs/kernel-facts.md fact 12), and the two families are two
   processes, so one run cannot be one transaction. The script saves the tables it is about to change
   (``-save -c``, per family), adds the missing policy-routing rules and routes, then restores each
   family's input; when anything fails (a rule the kernel refuses, a killed ``iptables-restore``, a
   signal) it puts every table it touched back from the snapshot (``-restore -c``, which replaces
   each table whole, atomically) and deletes the routing it added. Exit 1: nothing applied; exit 3:
   the rollback itself failed (the message names what is left).
5. **Check.** ``--check`` changes nothing: it reduces the live ``iptables-save`` to our chains (their
   declarations and rules in order) and our rules in the built-in chains (in order, the foreign ones
   left out), does the same to the intended rules, checks each routing rule and route, and exits 1
   with a line diff on drift.

Every value from the rule set reaches the shell inside a quoted here-document (restore input, never
expanded) or ``shlex.quote``; a rule or chain name with a line break is refused, since
iptables-restore input is one rule per line. Exit codes: 0 done (or no drift), 1 not applied (or
drift), 2 usage, a missing tool or an unreadable state, 3 rollback failed.
"""

from __future__ import annotations

import shlex

from meshsolve.errors import UnsupportedError

# rule_text quotes like iptables-save ("\'" inside double quotes); shlex.split misreads that (a comment
# with a quote came out with stray backslashes, or raised ValueError), split_words undoes it exactly
from meshsolve.iptables import rule_text, split_words
from meshsolve.model.net import Family
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import Chain, Rule, Ruleset, Rulesets

__all__ = ["SCRIPT_TABLES", "render_script"]

#: The tables the script may write (the names iptables-restore knows).
SCRIPT_TABLES: tuple[str, ...] = ("raw", "mangle", "nat", "filter", "security")
_SUFFIX = {"ipv4": "4", "ipv6": "6"}
_BREAKS = ("\n", "\r", "\0")


def _q(*tokens: str) -> str:
    return " ".join(shlex.quote(t) for t in tokens)


def _refuse_breaks(text: str, what: str) -> None:
    if any(b in text for b in _BREAKS):
        raise UnsupportedError(f"{what} {text!r} has a line break: iptables-restore input is one rule per line, "
                               "so no script can load it")


def _line(chain: str, rule: Rule, family: Family) -> str:
    text = rule_text(rule, family)
    line = f"-A {chain}" + (f" {text}" if text else "")
    _refuse_breaks(line, "rule")
    return line


def _heredoc(lines: list[str]) -> list[str]:
    """``cat`` of ``lines`` in a quoted here-document (nothing in it is expanded)."""
    end = "MESHSOLVE_END"
    while end in lines:
        end += "_"
    return [f"\tcat <<'{end}'", *lines, end]


def _user_chains(ruleset: Ruleset, table: str) -> list[Chain]:
    t = ruleset.table(table)
    return [] if t is None else [c for c in t.chains if not c.builtin]


def _builtin_rules(ruleset: Ruleset, table: str) -> list[tuple[str, Rule]]:
    t = ruleset.table(table)
    return [] if t is None else [(c.name, r) for c in t.chains if c.builtin for r in c.rules]


def _tables(ruleset: Ruleset) -> list[str]:
    """The tables the script writes for ``ruleset``, in the order of ``SCRIPT_TABLES``."""
    names = {t.name for t in ruleset.tables if any(not c.builtin or c.rules for c in t.chains)}
    unknown = sorted(names - set(SCRIPT_TABLES))
    if unknown:
        raise UnsupportedError(f"table {unknown[0]!r} is not one iptables-restore knows "
                               f"({', '.join(SCRIPT_TABLES)})")
    return [t for t in SCRIPT_TABLES if t in names]


def _family_functions(ruleset: Ruleset) -> list[str]:
    """``input_FAMILY`` (the restore input, built-in rules only where missing) and
    ``intended_FAMILY`` (our part of iptables-save as it should read)."""
    fam = ruleset.family
    n = _SUFFIX[fam]
    restore: list[str] = [f"input_{fam}() {{"]
    intended: list[str] = []
    for table in _tables(ruleset):
        head = [f"*{table}"]
        for c in _user_chains(ruleset, table):
            _refuse_breaks(c.name, "chain name")
            if not c.name or any(ch.isspace() for ch in c.name):
                raise UnsupportedError(f"chain name {c.name!r} is empty or has white space")
            head.append(f":{c.name} - [0:0]")
        body = [_line(c.name, r, fam) for c in _user_chains(ruleset, table) for r in c.rules]
        restore += _heredoc(head + body)
        builtin = _builtin_rules(ruleset, table)
        for chain, rule in builtin:
            args = split_words(rule_text(rule, fam))
            restore.append(f"\tif absent \"$IPT{n}\" {_q(table, chain, *args)}; then "
                           f"printf '%s\\n' {_q(_line(chain, rule, fam))}; fi")
        restore.append("\techo COMMIT")
        intended += head + body + [_line(chain, rule, fam) for chain, rule in builtin]
    restore.append("}")
    return [*restore, f"intended_{fam}() {{", *_heredoc(intended), "}"]


# --- policy routing ----------------------------------------------------------------------------------


def _rule_words(r: RoutingRule) -> list[str]:
    sel = [] if r.fwmark is None else [*(["not"] if r.invert else []), "fwmark", f"{r.fwmark:#x}/{r.mask:#x}"]
    return [*sel, "lookup", str(r.table), "priority", str(r.priority)]


def _route_words(r: Route) -> list[str]:
    kind = [] if r.kind == "unicast" else [r.kind]
    return [*kind, str(r.dst), *(["dev", r.dev] if r.dev else []), "table", str(r.table)]


def _routing_items(routing: Routing) -> list[tuple[str, str, str, str]]:
    """``(description, show command, add command, delete command)`` per routing rule and route;
    the show command prints something exactly when the item is there."""
    items = []
    for r in routing.rules:
        flag = "-4" if r.family == "ipv4" else "-6"
        words = _rule_words(r)
        show = _q("ip", flag, "rule", "show", *words) + " 2>/dev/null"
        if r.fwmark is None:  # the selector of a rule on every packet also matches fwmark rules
            show += " | grep -v fwmark"
        items.append((f"{r.family} ip rule {' '.join(words)}", show, _q("ip", flag, "rule", "add", *words),
                      _q("ip", flag, "rule", "del", *words)))
    for route in routing.routes:
        flag = "-4" if route.family == "ipv4" else "-6"
        words = _route_words(route)
        show = _q("ip", flag, "route", "show", "table", str(route.table), "exact", str(route.dst), "type",
                  route.kind, *(["dev", route.dev] if route.dev else [])) + " 2>/dev/null"
        items.append((f"{route.family} ip route {' '.join(words)}", show, _q("ip", flag, "route", "add", *words),
                      _q("ip", flag, "route", "del", *words)))
    for desc, *_ in items:
        _refuse_breaks(desc, "routing entry")
    return items


def _routing_functions(routing: Routing) -> list[str]:
    items = _routing_items(routing)
    present = ["routing_present() {", "\tcase $1 in"]
    present += [f"\t\t{i}) [ -n \"$({show})\" ] ;;" for i, (_, show, _, _) in enumerate(items)]
    present += ["\tesac", "}"]
    add = ["routing_add() {", "\tcase $1 in"] + [f"\t\t{i}) {cmd} ;;" for i, (_, _, cmd, _) in enumerate(items)]
    add += ["\tesac", "}"]
    delete = ["routing_del() {", "\tcase $1 in"] + [f"\t\t{i}) {cmd} ;;" for i, (*_, cmd) in enumerate(items)]
    delete += ["\tesac", "}"]
    names = ["routing_name() {", "\tcase $1 in"]
    names += [f"\t\t{i}) printf '%s\\n' {_q(desc)} ;;" for i, (desc, *_) in enumerate(items)]
    names += ["\tesac", "}"]
    if not items:
        return ["routing_present() { :; }", "routing_add() { :; }", "routing_del() { :; }", "routing_name() { :; }"]
    return present + add + delete + names


# --- the fixed part ------------------------------------------------------------------------------------

# awk: the text after a line "@@" reduced to our part, by the iptables-save text before it (the
# intended rules): per table, per chain of ours in intended order, ":CHAIN" when declared and its
# rules; for a built-in chain, only the rules the intended text has, in live order.
_OURS_AWK = r"""
$0 == "@@" { live = 1; t = ""; next }
!live && /^\*/ { t = substr($0, 2); if (!(t in known)) { known[t] = 1; tables[++nt] = t }; next }
!live && /^:/ { c = substr($1, 2); user[t SUBSEP c] = 1; chains[t, ++nc[t]] = c; next }
!live && /^-A / { k = t SUBSEP $2; if (!(k in user) && !(k in builtin)) { builtin[k] = 1; chains[t, ++nc[t]] = $2 }
	mine[t SUBSEP $0] = 1; next }
live && /^\*/ { t = substr($0, 2); next }
live && /^:/ { c = substr($1, 2); if ((t SUBSEP c) in user) declared[t SUBSEP c] = 1; next }
live && /^-A / { k = t SUBSEP $2; m = t SUBSEP $0
	if ((k in user) || ((k in builtin) && (m in mine))) { got[k, ++n[k]] = $0 } }
END { for (i = 1; i <= nt; i++) { t = tables[i]; for (j = 1; j <= nc[t]; j++) { c = chains[t, j]; k = t SUBSEP c
	if ((k in user) && (k in declared)) print fam " " t " :" c
	for (r = 1; r <= n[k]; r++) print fam " " t " " got[k, r] } } }
"""

# awk: a line diff (longest common subsequence) of the lines before "@@" (intended) and after (live)
_DIFF_AWK = r"""
$0 == "" { next }
$0 == "@@" { side = 1; next }
!side { a[++na] = $0; next }
{ b[++nb] = $0 }
END {
	for (i = na; i >= 0; i--) for (j = nb; j >= 0; j--) {
		if (i == na || j == nb) L[i, j] = 0
		else if (a[i + 1] == b[j + 1]) L[i, j] = L[i + 1, j + 1] + 1
		else L[i, j] = (L[i + 1, j] >= L[i, j + 1]) ? L[i + 1, j] : L[i, j + 1]
	}
	i = 0; j = 0
	while (i < na || j < nb) {
		if (i < na && j < nb && a[i + 1] == b[j + 1]) { i++; j++ }
		else if (j < nb && (i == na || L[i, j + 1] >= L[i + 1, j])) { print "+ " b[j + 1]; j++ }
		else { print "- " a[i + 1]; i++ }
	}
}
"""

# awk: the blocks of the tables named in `want` from an iptables-save -c text; a table the text does
# not have comes out empty (restoring it removes what the apply created)
_TABLES_AWK = r"""
BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) wanted[w[i]] = 1 }
/^\*/ { t = substr($0, 2); keep = (t in wanted); if (keep) seen[t] = 1 }
keep && !/^#/ { print }
/^COMMIT/ { keep = 0 }
END { for (i = 1; i <= n; i++) if (!(w[i] in seen)) { print "*" w[i]; print "COMMIT" } }
"""

_PROLOGUE = r"""
usage() {
	cat <<'MESHSOLVE_USAGE'
usage: sh SCRIPT [--check] [--backend legacy|nft]
  (no argument)  install the rules and routing below; running it again changes nothing
  --check        change nothing: compare the live rules and routing with these, exit 1 on drift
  --backend B    iptables backend: legacy or nft (default: $MESHSOLVE_IPTABLES_BACKEND, else the
                 one this namespace already uses, decided as Kubernetes' iptables-wrapper does)
exit: 0 done or no drift; 1 nothing applied, or drift; 2 usage, missing tool or unreadable state;
      3 the rollback after a failure failed (the rules may be half applied)
MESHSOLVE_USAGE
}
log() { printf 'meshsolve: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

mode=apply
backend=${MESHSOLVE_IPTABLES_BACKEND:-}
while [ $# -gt 0 ]; do
	case $1 in
		--check) mode=check ;;
		--backend) [ $# -ge 2 ] || { usage >&2; exit 2; }; backend=$2; shift ;;
		--backend=*) backend=${1#--backend=} ;;
		-h|--help) usage; exit 0 ;;
		*) log "unknown argument: $1"; usage >&2; exit 2 ;;
	esac
	shift
done

hint='^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) '
why="chosen with --backend or MESHSOLVE_IPTABLES_BACKEND"
if [ -z "$backend" ]; then
	if ! have iptables-nft-restore && ! have iptables-legacy-restore; then
		backend=plain; why="neither iptables-nft nor iptables-legacy is installed"
	elif ! have iptables-legacy-restore; then
		backend=nft; why="iptables-legacy is not installed"
	elif ! have iptables-nft-restore; then
		backend=legacy; why="iptables-nft is not installed"
	elif { iptables-nft-save -t mangle; ip6tables-nft-save -t mangle; } 2>/dev/null | grep -Eq "$hint"; then
		backend=nft; why="the kubelet's marker chain is in nf_tables"
	elif { iptables-legacy-save; ip6tables-legacy-save; } 2>/dev/null | grep -Eq "$hint"; then
		backend=legacy; why="the kubelet's marker chain is in legacy iptables"
	else
		legacy_rules=$({ iptables-legacy-save; ip6tables-legacy-save; } 2>/dev/null | grep -c '^-')
		nft_rules=$({ iptables-nft-save; ip6tables-nft-save; } 2>/dev/null | grep -c '^-')
		if [ "${legacy_rules:-0}" -gt "${nft_rules:-0}" ]; then backend=legacy; else backend=nft; fi
		why="${legacy_rules:-0} legacy rules, ${nft_rules:-0} nf_tables rules"
	fi
fi
case $backend in
	nft) sfx=-nft ;;
	legacy) sfx=-legacy ;;
	plain) sfx= ;;
	*) log "unknown backend '$backend' (legacy or nft)"; exit 2 ;;
esac
IPT4=iptables$sfx SAVE4=iptables$sfx-save RESTORE4=iptables$sfx-restore
IPT6=ip6tables$sfx SAVE6=ip6tables$sfx-save RESTORE6=ip6tables$sfx-restore
log "backend: $backend ($why)"

# true when TABLE's built-in CHAIN does not have the rule ARGS (IPT TABLE CHAIN ARGS...)
absent() {
	_ipt=$1 _table=$2
	shift 2
	! "$_ipt" -w 5 -t "$_table" -C "$@" >/dev/null 2>&1
}
"""

_MAIN = r"""
need() { have "$1" || { log "$1 not found: nothing applied"; exit 2; }; }
for f in $FAMILIES; do
	if [ "$f" = ipv4 ]; then need "$IPT4"; need "$SAVE4"; need "$RESTORE4"
	else need "$IPT6"; need "$SAVE6"; need "$RESTORE6"; fi
done
[ "$ROUTING" -eq 0 ] || need ip

# our part of the live (stdin) or intended iptables-save text of FAMILY, normalised
ours() { { "intended_$1"; echo '@@'; cat; } | awk -v fam="$1" "$OURS_AWK"; }

if [ "$mode" = check ]; then
	for f in $FAMILIES; do
		if [ "$f" = ipv4 ]; then save=$SAVE4; else save=$SAVE6; fi
		"$save" >/dev/null 2>&1 || { log "$save failed: cannot check"; exit 2; }
	done
	want=$(
		for f in $FAMILIES; do "intended_$f" | ours "$f"; done
		i=0; while [ "$i" -lt "$ROUTING" ]; do routing_name "$i"; i=$((i + 1)); done
	)
	live=$(
		for f in $FAMILIES; do
			if [ "$f" = ipv4 ]; then "$SAVE4" 2>/dev/null | ours "$f"; else "$SAVE6" 2>/dev/null | ours "$f"; fi
		done
		i=0; while [ "$i" -lt "$ROUTING" ]; do
			if routing_present "$i"; then routing_name "$i"; fi
			i=$((i + 1))
		done
	)
	if [ "$want" = "$live" ]; then
		log "no drift: the live rules and routing are the intended ones ($backend)"
		exit 0
	fi
	log "drift ($backend): '-' intended but not live, '+' live but not intended"
	printf '%s\n@@\n%s\n' "$want" "$live" | awk "$DIFF_AWK"
	exit 1
fi

# --- apply -------------------------------------------------------------------------------------------
for f in $FAMILIES; do
	if [ "$f" = ipv4 ]; then
		input4=$(input_ipv4) || { log "cannot read the IPv4 rules: nothing applied"; exit 2; }
		printf '%s\n' "$input4" | "$RESTORE4" -w 5 --noflush --test \
			|| { log "$RESTORE4 --test refused the IPv4 rules: nothing applied"; exit 1; }
		snap4=$("$SAVE4" -c 2>/dev/null) || { log "$SAVE4 failed: nothing applied"; exit 2; }
	else
		input6=$(input_ipv6) || { log "cannot read the IPv6 rules: nothing applied"; exit 2; }
		printf '%s\n' "$input6" | "$RESTORE6" -w 5 --noflush --test \
			|| { log "$RESTORE6 --test refused the IPv6 rules: nothing applied"; exit 1; }
		snap6=$("$SAVE6" -c 2>/dev/null) || { log "$SAVE6 failed: nothing applied"; exit 2; }
	fi
done

tried4=0 tried6=0 added=
rollback() {
	trap '' INT TERM HUP
	broken=
	if [ "$tried4" = 1 ]; then
		printf '%s\n' "$snap4" | awk -v want="$TABLES4" "$TABLES_AWK" | "$RESTORE4" -w 5 -c \
			|| broken="$broken IPv4 tables ($TABLES4);"
	fi
	if [ "$tried6" = 1 ]; then
		printf '%s\n' "$snap6" | awk -v want="$TABLES6" "$TABLES_AWK" | "$RESTORE6" -w 5 -c \
			|| broken="$broken IPv6 tables ($TABLES6);"
	fi
	for i in $added; do
		routing_del "$i" || broken="$broken $(routing_name "$i");"
	done
	if [ -n "$broken" ]; then
		log "ROLLBACK FAILED, left half applied:$broken"
		exit 3
	fi
	log "rolled back: nothing applied"
	exit 1
}
trap 'log "interrupted"; rollback' INT TERM HUP

i=0
while [ "$i" -lt "$ROUTING" ]; do
	if ! routing_present "$i"; then
		routing_add "$i" || { log "cannot add $(routing_name "$i")"; rollback; }
		added="$i $added"
	fi
	i=$((i + 1))
done
for f in $FAMILIES; do
	if [ "$f" = ipv4 ]; then
		tried4=1
		printf '%s\n' "$input4" | "$RESTORE4" -w 5 --noflush || { log "$RESTORE4 failed"; rollback; }
	else
		tried6=1
		printf '%s\n' "$input6" | "$RESTORE6" -w 5 --noflush || { log "$RESTORE6 failed"; rollback; }
	fi
done
trap - INT TERM HUP
log "applied ($backend):$SUMMARY"
exit 0
"""


def _summary(rulesets: Rulesets, routing: Routing) -> str:
    parts = []
    for rs in (rulesets.ipv4, rulesets.ipv6):
        tables = _tables(rs)
        if tables:
            count = sum(len(c.rules) for t in tables for c in _user_chains(rs, t)) + \
                sum(len(_builtin_rules(rs, t)) for t in tables)
            parts.append(f" {rs.family} {count} rule(s) in {', '.join(tables)}")
    if not routing.empty:
        parts.append(f" {len(routing.rules)} ip rule(s), {len(routing.routes)} route(s)")
    return ";".join(parts) or " nothing to install"


def render_script(rulesets: Rulesets, *, header: str = "", routing: Routing | None = None) -> str:
    """A ``sh`` script installing ``rulesets`` and ``routing`` atomically, idempotently, on the
    backend in use, with ``--check`` (see the module docstring); ``header`` becomes ``#`` comments."""
    routing = routing if routing is not None else Routing()
    for rs in (rulesets.ipv4, rulesets.ipv6):
        if rs.nft:
            raise UnsupportedError(f"the {rs.family} rules hold native nftables tables "
                                   f"({', '.join(t.key for t in rs.nft)}), which an iptables script cannot install")
    families = [rs for rs in (rulesets.ipv4, rulesets.ipv6) if _tables(rs)]
    lines = ["#!/bin/sh", "set -u"]
    lines += [f"# {h}" for h in header.splitlines() if h.strip()]
    lines += ["# Installs the rules below with iptables-restore --noflush, all or nothing (rolled back on",
              "# failure), on the iptables backend in use; '--check' reports drift. 'sh SCRIPT --help'."]
    lines += _PROLOGUE.strip("\n").splitlines()
    for rs in families:
        lines += _family_functions(rs)
    lines += _routing_functions(routing)
    lines += [
        f"FAMILIES={shlex.quote(' '.join(rs.family for rs in families))}",
        f"TABLES4={shlex.quote(' '.join(_tables(rulesets.ipv4)))}",
        f"TABLES6={shlex.quote(' '.join(_tables(rulesets.ipv6)))}",
        f"ROUTING={len(_routing_items(routing))}",
        f"SUMMARY={shlex.quote(_summary(rulesets, routing))}",
        f"OURS_AWK={shlex.quote(_OURS_AWK)}",
        f"DIFF_AWK={shlex.quote(_DIFF_AWK)}",
        f"TABLES_AWK={shlex.quote(_TABLES_AWK)}",
    ]
    lines += _MAIN.strip("\n").splitlines()
    return "\n".join(lines) + "\n"
