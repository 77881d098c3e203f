"""Figure 3's m-sharpness on the digits: SAM's test error % against m.

m = examples per perturbation (--config.sam.examples_per_perturbation) at a
fixed batch of 128; the last row leaves m unset, i.e. the per-device batch
(the whole batch on one device; the official code's default). SGD on the
same data is the label-noise table's clean SGD cell (batch 64).

BatchNorm normalises each group with its own statistics (as each device does
in the official code), so at m = 1 it normalises over a single 8x8 digit,
2x2 pixels in the last stage: a confound the paper's 32x32 CIFAR images
do not have (the last stage there is 8x8).
"""

from .. import cpu_scale
from sam_jax.reproduce import registry

BATCH = 128
M_VALUES = (1, 4, 16, 64)
ROWS = tuple((f"m{m}", f"m = {m}") for m in M_VALUES) + (
    ("m_device", f"m = per-device batch ({BATCH} on 1 device)"),)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or cpu_scale.SEEDS

    def runs_for(row, column):
        overrides = {"batch_size": BATCH}
        if row != "m_device":
            overrides["sam.examples_per_perturbation"] = int(row[1:])
        return cpu_scale.runs("sam", "clean", overrides, seeds)

    return registry.grid_table(
        "cpu_scale.m_sharpness", "Digits, m-sharpness: test error %", ROWS,
        (("error", "test error %"),), {}, runs_for,
        notes="Paper (Figure 3, CIFAR-10): smaller m gives lower test error.")
