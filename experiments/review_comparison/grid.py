"""review_comparison.grid: each method's three grid values at 40% noise, seed 0,
validation error on the held-out 10% (see comparison.py)."""

from .comparison import get_grid_table as get_table  # noqa: F401
