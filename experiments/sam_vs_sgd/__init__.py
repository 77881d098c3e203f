"""SAM against SGD where the paper's claim lives: Fashion-MNIST in a regime that
interpolates clean labels and memorises noisy ones (issue 27). PROTOCOL.md is
the pre-registered design; README.md has the commands and the results.

Every run is `configs/fashion_mnist.py:small,METHOD,NOISE` with SETTING below
and the model and epochs the gates chose (gates.py; GATES.md records them).
"""

from sam_jax.reproduce import registry

CONFIG = "configs/fashion_mnist.py"
# A seed fixes the initialisation, the data order, the augmentation and the
# noisy label set of every method alike, so differences pair by seed.
SEED_KEYS = ("seed", "label_noise_seed")
TRAIN_EXAMPLES = 10_000  # the first 10,000 images of the training split
VALIDATION_EXAMPLES = 5_000  # its last 5,000, clean: every pick
IMAGE_SIZE = 16
BATCH = 128
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH  # 78: the last partial batch is dropped
# Data and evaluation shared by every run of the study.
SETTING = {
    "train_subset": TRAIN_EXAMPLES, "validation_examples": VALIDATION_EXAMPLES,
    "evaluate_training_set": True, "image_size": IMAGE_SIZE, "batch_size": BATCH,
    "eval_batch_size": 1000, "log_every_steps": STEPS_PER_EPOCH,
    "checkpoint_every_steps": 5 * STEPS_PER_EPOCH,
}
CONDITIONS = (("clean", "clean labels"), ("noise80", "80% noise"))


# The pre-registered design (PROTOCOL.md).
SGD_LEARNING_RATES = (0.025, 0.05, 0.1, 0.2, 0.4)
SAM_RHOS = (0.01, 0.02, 0.05, 0.1, 0.2)
# The grid values every plan of the budget (results/budget.md) runs: the middle
# three of each grid above. sam_vs_sgd.grid_shared launches them alone (the
# same runs as sam_vs_sgd.grid's), so a larger plan adds the other two.
SHARED_GRID = {"sgd": (0.05, 0.1, 0.2), "sam": (0.02, 0.05, 0.1)}
SAM_LEARNING_RATE = 0.1  # the paper's
SAM_M = 32  # examples per perturbation: 4 groups of the batch of 128
LATE_SAM_START = 0.9  # late-phase SAM: SAM for the last 10% of the steps
SWA = {"swa.start_fraction": 0.75, "swa.learning_rate": 0.01}
# Validation errors closer than this (points) to the best tie; the lowest
# validation loss among them wins.
TIE_POINTS = 0.1
# Main runs: seeds 1..n (seed 0 made the picks). n per condition.
SEEDS = {"clean": 6, "noise80": 19}
# Non-inferiority margins, points of test error (X - SAM).
MARGINS = {"clean": 0.25, "noise80": 1.0}
NOISE_AUGMENTATION = "none"  # the 80%-noise arm: nothing augmented


def epochs_setting(num_epochs: int) -> dict:
    """Evaluated on the test split only at the end (the picks never see it)."""
    return {"num_epochs": num_epochs, "eval_every_epochs": num_epochs}


def runs(method: str, noise: str, overrides: dict, seeds) -> tuple:
    """Runs of CONFIG:small,METHOD,NOISE with SETTING + overrides, one per seed
    in `seeds` (a count n: seeds 0..n-1; or the seeds themselves)."""
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    return tuple(registry.make_run(f"{CONFIG}:small,{method},{noise}",
                                   {**SETTING, **overrides}, seed, seed_keys=SEED_KEYS)
                 for seed in seeds)


def condition_overrides(noise: str, model: str, num_epochs: int) -> dict:
    """The gated model and epochs; the noise arm's augmentation."""
    overrides = {"model.name": model, **epochs_setting(num_epochs)}
    if noise != "clean":
        overrides["augmentation"] = NOISE_AUGMENTATION
    return overrides
