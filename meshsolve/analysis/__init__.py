"""meshsolve.analysis"""
