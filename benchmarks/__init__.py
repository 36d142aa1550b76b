"""fleetlens benchmark suite: `python -m benchmarks [STAGE ...] [--quick]`.

See docs/benchmarks.md."""
