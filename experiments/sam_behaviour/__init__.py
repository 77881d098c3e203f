"""How SAM behaves during training, and the theory's predictions tested, at
laptop scale on Fashion-MNIST (issue 20; README.md has the commands and what
held).

Every run is `configs/fashion_mnist.py:small,METHOD` (the offline IDX files)
with the overrides below: WRN-10-1 on images resized to 16x16 (a quarter of the
compute of 28x28; the studies are about dynamics, not the best error), a fixed
subset of the training split (its first N images), evaluated on the full
10,000-image test set. The edge-of-stability quantities come from the trainer's
config.sharpness.every_steps log (metrics.jsonl, split "stability").
"""

from sam_jax.reproduce import registry

CONFIG = "configs/fashion_mnist.py"
SEEDS = 3  # the issue: 3 seeds wherever a network trains
IMAGE_SIZE = 16

# Study 1: full-batch GD at a constant learning rate on 512 images (batch =
# the subset, so every step is one full-batch step; no augmentation, momentum,
# weight decay or clipping: plain GD, the setting of the closed-form edges).
# lambda_max of the training loss on the same 512 images every 5 steps.
FULL_BATCH = 512
FULL_BATCH_PROTOCOL = {
    "model.name": "wrn10_1", "image_size": IMAGE_SIZE, "train_subset": FULL_BATCH,
    "batch_size": FULL_BATCH, "augmentation": "none",
    "optimizer.schedule": "constant", "optimizer.learning_rate": 0.1,
    "optimizer.momentum": 0.0, "optimizer.nesterov": False,
    "optimizer.weight_decay": 0.0, "optimizer.grad_clip_norm": 0.0,
    "num_epochs": 120, "eval_every_epochs": 120, "log_every_steps": 10,
    "checkpoint_every_steps": 60,
    "sharpness.every_steps": 5, "sharpness.num_examples": FULL_BATCH,
    "sharpness.lambda_max_iterations": 8,
}

# Studies 5-7: stochastic training as the paper runs it (SGD with Nesterov
# momentum, cosine schedule, basic augmentation, weight decay) on the first
# 4,096 training images, batch 256 (16 steps per epoch), 10 epochs.
SUBSET = 4096
BATCH = 256
STEPS_PER_EPOCH = SUBSET // BATCH
EPOCHS = 10
PROTOCOL = {
    "model.name": "wrn10_1", "image_size": IMAGE_SIZE, "train_subset": SUBSET,
    "batch_size": BATCH, "num_epochs": EPOCHS, "eval_every_epochs": EPOCHS,
    "log_every_steps": STEPS_PER_EPOCH, "checkpoint_every_steps": 5 * STEPS_PER_EPOCH,
}


def runs(method: str, overrides: dict, seeds: int, protocol=None) -> tuple:
    """Seeded runs of CONFIG:small,METHOD with the protocol + overrides."""
    protocol = PROTOCOL if protocol is None else protocol
    return registry.seeded_runs(f"{CONFIG}:small,{method}", {**protocol, **overrides},
                                seeds)


def regime(sgd_test_error=None) -> str:
    """The regime a verdict of studies 5-7 was measured in, said beside it
    (issue 27): the protocol's training length, far from interpolation."""
    error = (f", where SGD's test error is {sgd_test_error:.2f}%"
             if sgd_test_error is not None else "")
    return (f"Regime: measured in the underfitting regime, {EPOCHS} epochs of "
            f"{SUBSET:,} training images{error}, short of fitting the training set "
            "(its error was not recorded here; the earlier comparison, which trained "
            "longer, still had a running training error of the order of its test "
            "error): far from the interpolating solutions the theory describes "
            "(Andriushchenko & Flammarion; Wen, Ma & Li). experiments/sam_vs_sgd "
            "measures SAM where clean labels are interpolated.")


def wall_clock(cells) -> str:
    """One line: the launcher's wall-clock seconds of the table's runs (each
    run's last launch, status.json), their sum in minutes."""
    seconds = {status.name: status.outputs.get("status", {}).get("elapsed_s")
               for result in cells for status in result.runs}
    seconds = [s for s in seconds.values() if s is not None]
    if not seconds:
        return ""
    return (f"Wall-clock time of each run's last launch (status.json; a resumed "
            f"run's earlier attempts not counted): {min(seconds):.0f}-"
            f"{max(seconds):.0f} s per run, {sum(seconds) / 60:.0f} minutes for "
            f"{len(seconds)} runs (several ran side by side on the shared 2 cores).")
