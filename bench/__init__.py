"""parcelhook's delivery benchmark: `python -m bench` (or `make bench`, `QUICK=1` for a short run).

Every scenario sends to a receiver in another process; see docs/performance.md for the method.
"""
