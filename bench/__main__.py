"""`python -m bench [--quick]`: see bench/__init__.py and docs/performance.md."""

from bench.main import main

main()
