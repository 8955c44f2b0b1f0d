"""The kernel oracle: materialise a ``World`` in network namespaces and run its flows for real.

``KernelWorld`` (a context manager) and ``run_flows`` live in :mod:`meshsolve.oracle.run`; namespace
set-up and clean-up in :mod:`meshsolve.oracle.netns`; the in-namespace processes (app listeners, the
proxy stand-in, the peer) in :mod:`meshsolve.oracle.worker`.
"""
