"""Reliability scenarios run inside the test VM: crashes at every step, faults from below,
power cuts, storms and hostile input, each trial followed by one invariant checker.
Booted and reported by tests/vm/reliability_suite.py."""


def figures_name(scenario: str, provisioning: str) -> str:
    """A scenario's name in the results: a thin node's figures are reported beside a thick one's."""
    return f"{scenario}-thin" if provisioning == "thin" else scenario
