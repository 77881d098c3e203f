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


def epochs_setting(num_epochs: int) -> dict:
    """Evaluated on the test split only at the end (the picks never see it)."""
    return {"num_epochs": num_epochs, "eval_every_epochs": num_epochs}


def runs(method: str, noise: str, overrides: dict, seeds: int) -> tuple:
    """Seeded runs of CONFIG:small,METHOD,NOISE with SETTING + overrides."""
    return registry.seeded_runs(f"{CONFIG}:small,{method},{noise}",
                                {**SETTING, **overrides}, seeds, seed_keys=SEED_KEYS)
