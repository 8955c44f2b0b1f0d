"""meshsolve.semantics"""
