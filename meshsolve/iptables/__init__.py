"""meshsolve.iptables"""
