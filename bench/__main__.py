"""``python -m bench``: run the benchmarks (see docs/benchmarks.md)."""

from bench.cli import main

raise SystemExit(main())
