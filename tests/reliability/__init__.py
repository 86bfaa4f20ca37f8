"""Reliability scenarios run inside the test VM: crashes at every step, faults from below,
power cuts, storms and hostile input, each trial followed by one invariant checker.
Booted and reported by tests/vm/reliability_suite.py."""
