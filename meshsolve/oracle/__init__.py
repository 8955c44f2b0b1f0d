"""The kernel oracle: materialise a ``World`` in network namespaces and run its flows for real.

- :mod:`meshsolve.oracle.run`: ``KernelWorld`` (a context manager: set-up, ``run(flow) -> Result``,
  guaranteed clean-up) and ``run_flows``;
- :mod:`meshsolve.oracle.netns`: the pod/peer namespace pair, ``sweep_stale``;
- :mod:`meshsolve.oracle.worker`: the in-namespace processes (app listeners, the proxy stand-in, the
  peer / outside world), standard library only;
- :mod:`meshsolve.oracle.compare`: interpreter vs kernel ``differences``, ``explain``,
  ``replay_command``, ``matrix_flows``;
- :mod:`meshsolve.oracle.worldio`: a ``World`` as JSON (for replaying random worlds);
- ``python -m meshsolve.oracle replay ...``: rerun one flow on both sides.

Needs root, iproute2 and Debian's iptables; uses documentation addresses only, inside namespaces
named ``msor<pid>x<n>p|q``.
"""
