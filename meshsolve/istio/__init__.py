"""meshsolve.istio"""
