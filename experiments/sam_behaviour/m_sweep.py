"""Study 6: m-sharpness with BatchNorm decoupled: test error % against m.

Andriushchenko & Flammarion (ICML 2022) and the paper's Figure 3: smaller m
(examples per perturbation) generalises better. In the official code a group
of m examples is also BatchNorm's batch; here sam.batch_norm="device"
normalises with the statistics of the whole device batch (256) in both passes,
whatever m, so m changes the perturbation alone. sam_behaviour.PROTOCOL (batch
256, 10 epochs), rho 0.05, 3 seeds; SGD on the same protocol for reference.
"""

from .. import sam_behaviour as study
from sam_jax.reproduce import registry

SEEDS = 3
M_VALUES = (1, 4, 16, 64, 256)
ROWS = (("sgd", "SGD"),) + tuple((f"m{m}", f"SAM m={m}") for m in M_VALUES)
COLUMNS = (("error", "test error %"), ("train_seconds", "train seconds"))


def row_runs(row: str, seeds: int) -> tuple:
    if row == "sgd":
        return study.runs("sgd", {}, seeds)
    return study.runs("sam", {"sam.batch_norm": "device",
                              "sam.examples_per_perturbation": int(row[1:])}, seeds)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    return registry.grid_table(
        "sam_behaviour.m_sweep",
        "Fashion-MNIST, m-sharpness with BatchNorm over the device batch",
        ROWS, COLUMNS, {}, lambda row, column: row_runs(row, seeds),
        lambda row, column: column, unit="the column's quantity",
        notes="Batch 256 on one device, rho 0.05, sam.batch_norm='device'; "
              "m = 256 is SAM on the whole batch.")
