"""meshsolve benchmarks (issue #10): ``python -m benchmarks.run``; see README.md, section Benchmarks."""
