"""Adapters that touch the node. Everything above this package deals in plain data."""
