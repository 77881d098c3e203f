"""The paper's experiments at laptop scale, on the offline digits.

Every run is `configs/quickstart.py` (WRN on scikit-learn's 8x8 digits) with
the shrinking overrides below, so the three tables together fit in about an
hour of 2 CPU cores with 3 seeds per cell (see README.md for the command and
the timings behind these settings). Identical runs are shared between the
tables (same workdir under the same --root).
"""

from sam_jax.reproduce import registry

CONFIG = "configs/quickstart.py"
SEEDS = 3
# Shrunk from the quickstart default (WRN-16-2, 30 epochs of batch 64).
SMALL = {"model.name": "wrn10_2", "num_epochs": 15}
# A new noisy label set per seed, as a new seed draws new weights and data order.
SEED_KEYS = ("seed", "label_noise_seed")


def runs(method: str, noise: str, overrides: dict, seeds: int) -> tuple:
    """Seeded runs of configs/quickstart.py:METHOD,NOISE with SMALL + overrides."""
    return registry.seeded_runs(f"{CONFIG}:{method},{noise}", {**SMALL, **overrides},
                                seeds, seed_keys=SEED_KEYS)
