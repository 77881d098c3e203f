"""Figure 3's Hessian study on the digits: how sharp SGD and SAM solutions are.

The clean SGD and SAM runs of label_noise.py, with sharpness logged during
training (config.sharpness: after epoch 1 and every 3 epochs, on a fixed
subset of 128 training examples, BatchNorm in evaluation mode): lambda_max and
lambda_max / lambda_5 of the training loss's Hessian (Lanczos) and m-sharpness
(m = 16, rho = 0.05). The paper's WRN-40-10 (no BatchNorm) trains 300 epochs on
CIFAR-10 and reports epochs 1, 50 and 300; its numbers sit in our rows at the
same point of training (epoch 1, 1/6 of training, the end). What is compared is
the direction: SAM ends with a smaller lambda_max than SGD.
"""

from .. import cpu_scale
from sam_jax.reproduce import registry

EVERY_EPOCHS = 3
EPOCHS = (1, 3, 6, 9, 12, 15)  # after epoch 1 and every 3rd epoch of 15
# Our epoch -> the paper's epoch at the same point of training (1, 50/300, end).
PAPER_EPOCH = {1: 1, 3: 50, 15: 300}
COLUMNS = (("sgd_lmax", "SGD lambda_max"), ("sam_lmax", "SAM lambda_max"),
           ("sgd_ratio", "SGD lambda_max/lambda_5"), ("sam_ratio", "SAM lambda_max/lambda_5"),
           ("sgd_msharp", "SGD m-sharpness"), ("sam_msharp", "SAM m-sharpness"))
QUANTITY = {"lmax": "lambda_max", "ratio": "ratio", "msharp": "m_sharpness"}
# The paper's epoch -> (SGD lmax, SGD lmax/l5, SAM lmax, SAM lmax/l5), PAPER.md.
PAPER = {1: (62.9, 2.5, 18.6, 3.6), 50: (12.5, 1.7, 8.9, 1.9), 300: (24.2, 11.4, 1.0, 2.6)}
OVERRIDES = {"sharpness.every_epochs": EVERY_EPOCHS}


def _paper_cells() -> dict:
    cells = {}
    for epoch, paper_epoch in PAPER_EPOCH.items():
        sgd_lmax, sgd_ratio, sam_lmax, sam_ratio = PAPER[paper_epoch]
        cells.update({(f"epoch{epoch}", "sgd_lmax"): sgd_lmax,
                      (f"epoch{epoch}", "sgd_ratio"): sgd_ratio,
                      (f"epoch{epoch}", "sam_lmax"): sam_lmax,
                      (f"epoch{epoch}", "sam_ratio"): sam_ratio})
    return cells


def _row_label(epoch: int) -> str:
    if epoch in PAPER_EPOCH:
        return f"epoch {epoch} (paper: {PAPER_EPOCH[epoch]})"
    return f"epoch {epoch}"


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or cpu_scale.SEEDS
    rows = [(f"epoch{epoch}", _row_label(epoch)) for epoch in EPOCHS]

    def runs_for(row, column):
        return cpu_scale.runs(column.split("_")[0], "clean", OVERRIDES, seeds)

    def metric_for(row, column):
        return f"sharpness:{row.removeprefix('epoch')}:{QUANTITY[column.split('_')[1]]}"

    return registry.grid_table(
        "cpu_scale.sharpness", "Digits: sharpness during training, SGD vs SAM", rows,
        COLUMNS, _paper_cells(), runs_for, metric_for, unit="eigenvalue / loss",
        notes="Paper: WRN-40-10 without BatchNorm on CIFAR-10, epochs 1 / 50 / 300; "
              "ours: WRN-10-2 with BatchNorm (evaluation mode) on the digits, 15 "
              "epochs. Levels are not comparable; directions are.")
