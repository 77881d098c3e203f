"""The gates, run before any grid (PROTOCOL.md, "Gates"): SGD at the paper's
learning rate must interpolate the clean training subset (at most 1% error on
it, un-augmented, in evaluation mode) and memorise the 80%-noise one (at least
90% of the corrupted labels fitted). Each row is one attempt, in the order they
were run; GATES.md says why each followed the last.
"""

from .. import sam_vs_sgd as study
from sam_jax.reproduce import registry

# (key, label, model, epochs, augmentation of the noise arm): one per attempt.
ATTEMPTS = (
    ("wrn10_2_e100", "WRN-10-2, 100 epochs", "wrn10_2", 100, "none"),
    ("wrn16_2_e100", "WRN-16-2, 100 epochs", "wrn16_2", 100, "none"),
)
COLUMNS = (("clean_train", "clean: training error %"),
           ("clean_test", "clean: test error %"),
           ("noise80_memorised", "80% noise: corrupted labels fitted %"),
           ("noise80_test", "80% noise: test error %"),
           ("clean_seconds", "clean: train seconds"),
           ("noise80_seconds", "80% noise: train seconds"))
METRIC = {"train": "train_error", "test": "error", "memorised": "memorised",
          "seconds": "train_seconds"}
# The gates' thresholds (PROTOCOL.md).
MAX_CLEAN_TRAIN_ERROR = 1.0
MIN_MEMORISED = 90.0


def attempt_overrides(key: str, noise: str) -> dict:
    _, _, model, epochs, noise_augmentation = next(a for a in ATTEMPTS if a[0] == key)
    overrides = {"model.name": model, "optimizer.learning_rate": 0.1,
                 **study.epochs_setting(epochs)}
    if noise != "clean":
        overrides["augmentation"] = noise_augmentation
    return overrides


def get_table(seeds=None) -> registry.Table:
    del seeds  # one seed: a gate is a property of the setting

    def runs_for(row, column):
        noise = column.split("_")[0]
        return study.runs("sgd", noise, attempt_overrides(row, noise), 1)

    return registry.grid_table(
        "sam_vs_sgd.gates", "SGD gates: interpolation (clean) and memorisation (80% noise)",
        tuple((key, label) for key, label, *_ in ATTEMPTS), COLUMNS, {}, runs_for,
        metric_for=lambda row, column: METRIC[column.split("_", 1)[1]], unit="%")
