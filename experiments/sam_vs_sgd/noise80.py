"""sam_vs_sgd.noise80: the main table of the 80%-noise condition (main.py)."""

from .main import get_noise80_table as get_table  # noqa: F401
