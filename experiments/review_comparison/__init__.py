"""The comparison the review asked for, at laptop scale on Fashion-MNIST.

Every run is `configs/fashion_mnist.py:small,METHOD,NOISE` with the overrides
below, evaluated on the full 10,000-image test set (clean labels). The pilot
(pilot.py: SGD against SAM, 3 seeds, clean / 40% / 80% noise) chose them;
README.md gives its figures and the timings behind the budget.
"""

from sam_jax.reproduce import registry

CONFIG = "configs/fashion_mnist.py"
SEEDS = 3
# A new noisy label set per seed, as a new seed draws new weights and data order.
SEED_KEYS = ("seed", "label_noise_seed")
CONDITIONS = (("clean", "clean labels"), ("noise40", "40% noise"),
              ("noise80", "80% noise"))
# WRN-10-1 on the first 4,000 training images, 10 epochs of batch 128,
# evaluated once at the end. m = the batch (one CPU device): the paper's m = 32
# runs its groups as a batch of weight sets, which XLA:CPU's convolutions make
# several times slower per step (experiments/benchmarks/m_sharpness_group_map.md),
# past the study's 4-hour budget.
PROTOCOL = {"model.name": "wrn10_1", "train_subset": 4000, "num_epochs": 10,
            "batch_size": 128, "eval_every_epochs": 10, "log_every_steps": 31,
            "checkpoint_every_steps": 155}
# Table 4's radius: rho 0.1, 0.05 at 80% noise.
PAPER_RHO = {"clean": 0.05, "noise40": 0.1, "noise80": 0.05}


def runs(method: str, noise: str, overrides: dict, seeds: int) -> tuple:
    """Seeded runs of CONFIG:small,METHOD,NOISE with PROTOCOL + overrides."""
    return registry.seeded_runs(f"{CONFIG}:small,{method},{noise}",
                                {**PROTOCOL, **overrides}, seeds, seed_keys=SEED_KEYS)
