"""meshsolve.report"""
