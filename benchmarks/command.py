"""The ``meshsolve`` command as its console script runs it, for the benchmarks' child processes:
``cli.entry`` (``cli.main`` on the arguments in older trees, compared with ``--tree``)."""

MAIN = ("import sys, meshsolve.cli as c; e = getattr(c, 'entry', None); "
        "sys.exit(e() if e else c.main(sys.argv[1:]))")
