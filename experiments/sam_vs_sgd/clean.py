"""sam_vs_sgd.clean: the main table of the clean-label condition (main.py)."""

from .main import get_clean_table as get_table  # noqa: F401
