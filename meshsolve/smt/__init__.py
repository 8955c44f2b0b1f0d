"""meshsolve.smt"""
