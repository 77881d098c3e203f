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
# The protocols the pilot tried (pilot.py), by key: what each overrides in
# configs/fashion_mnist.py:small. m = the batch (one CPU device): the paper's
# m = 32 runs its groups as a batch of weight sets, which XLA:CPU's
# convolutions make several times slower per step
# (experiments/benchmarks/m_sharpness_group_map.md), past the 4-hour budget.
PILOT_PROTOCOLS = {
    # The `small` config: WRN-10-1 on the first 4,000 training images at
    # 28x28, 10 epochs of batch 128, evaluated once at the end.
    "a": ("4,000 images, 28x28, 10 epochs",
          {"model.name": "wrn10_1", "train_subset": 4000, "num_epochs": 10,
           "batch_size": 128, "eval_every_epochs": 10, "log_every_steps": 31,
           "checkpoint_every_steps": 155}),
    # A quarter of the pixels and a quarter of the images for three times the
    # epochs: SGD has the steps to fit noisy labels, where SAM should differ.
    "b": ("1,000 images, 16x16, 30 epochs",
          {"model.name": "wrn10_1", "train_subset": 1000, "image_size": 16,
           "num_epochs": 30, "batch_size": 128, "eval_every_epochs": 30,
           "log_every_steps": 28, "checkpoint_every_steps": 70}),
    # b separated nothing beyond seed noise: twice the images (less seed noise)
    # and 750 steps, for SGD to fit more of the noisy labels.
    "c": ("2,000 images, 16x16, 50 epochs",
          {"model.name": "wrn10_1", "train_subset": 2000, "image_size": 16,
           "num_epochs": 50, "batch_size": 128, "eval_every_epochs": 50,
           "log_every_steps": 75, "checkpoint_every_steps": 375}),
    # In b, SGD ended far from fitting the noisy labels (training error 54% at
    # 40% noise), the regime where SAM's robustness cannot show. Without
    # augmentation and with 80 epochs, a network of 77k weights can memorise
    # 1,000 images.
    "d": ("1,000 images, 16x16, 80 epochs, no augmentation",
          {"model.name": "wrn10_1", "train_subset": 1000, "image_size": 16,
           "augmentation": "none", "num_epochs": 80, "batch_size": 128,
           "eval_every_epochs": 80, "log_every_steps": 56,
           "checkpoint_every_steps": 280}),
}
# The comparison's protocol: the pilot's choice (README.md, "The pilot").
PROTOCOL_LABEL, PROTOCOL = PILOT_PROTOCOLS["c"]
# How the grid and the condition tables are launched (README.md, "Commands"):
# two local launchers at once, each pinned to one core with taskset, so each
# run's train seconds are one core's.
SECONDS_LABEL = "train seconds (one CPU core per run)"
# Table 4's radius: rho 0.1, 0.05 at 80% noise.
PAPER_RHO = {"clean": 0.05, "noise40": 0.1, "noise80": 0.05}


def runs(method: str, noise: str, overrides: dict, seeds: int,
         protocol: dict = PROTOCOL) -> tuple:
    """Seeded runs of CONFIG:small,METHOD,NOISE with `protocol` + overrides."""
    return registry.seeded_runs(f"{CONFIG}:small,{method},{noise}",
                                {**protocol, **overrides}, seeds, seed_keys=SEED_KEYS)
