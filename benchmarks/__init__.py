"""meshsolve benchmarks: ``python -m benchmarks.run``; see README.md, section Benchmarks."""
