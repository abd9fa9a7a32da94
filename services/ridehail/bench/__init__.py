"""The benchmarks behind `ridehail bench ...`: each writes JSON (with the machine's load) for docs/bench.

Benchmarks import services and the harness; no service imports them."""
