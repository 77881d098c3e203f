"""review_comparison.clean: every method at its pick, 3 seeds (see comparison.py)."""

from . import comparison


def get_table(seeds=None):
    return comparison.get_condition_table("clean", seeds)
