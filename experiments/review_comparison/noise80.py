"""review_comparison.noise80: every method at its pick, 3 seeds (see comparison.py)."""

from . import comparison


def get_table(seeds=None):
    return comparison.get_condition_table("noise80", seeds)
