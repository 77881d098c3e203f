"""Study 7: the rank of the penultimate features against rho.

Andriushchenko et al. (NeurIPS 2023): SAM lowers the rank of the features
(the number of principal components holding 99% of their variance), more so
as rho grows. sam_behaviour.PROTOCOL (batch 256 = m, 10 epochs), rho in
{0 (SGD), 0.02, 0.05, 0.1, 0.2, 0.5}, 2 seeds; the features are the input of
WRN-10-1's classifier (64 dimensions) on the first 1,024 training images,
BatchNorm in evaluation mode, logged by the trainer at the start, half-way
and at the end (config.sharpness.rank_examples), with lambda_max beside.
"""

from .. import sam_behaviour as study
from sam_jax.reproduce import registry

SEEDS = 2
RHOS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)
ROWS = tuple((f"rho{rho:g}", f"rho {rho:g}" + (" (SGD)" if rho == 0 else ""))
             for rho in RHOS)
COLUMNS = (("rank", "feature rank (end)"), ("rank_start", "feature rank (start)"),
           ("lmax", "lambda_max (end)"), ("error", "test error %"))
METRICS = {"rank": "stability:feature_rank:last",
           "rank_start": "stability:feature_rank:first",
           "lmax": "stability:lambda_max:last", "error": "error"}
SHARPNESS = {"sharpness.every_steps": study.EPOCHS * study.STEPS_PER_EPOCH // 2,
             "sharpness.num_examples": study.BATCH, "sharpness.rank_examples": 1024,
             "sharpness.lambda_max_iterations": 10}


def row_runs(row: str, seeds: int) -> tuple:
    rho = float(row.removeprefix("rho"))
    if rho == 0:
        return study.runs("sgd", SHARPNESS, seeds)
    return study.runs("sam", {**SHARPNESS, "sam.rho": rho}, seeds)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    return registry.grid_table(
        "sam_behaviour.rho_feature_rank",
        "Fashion-MNIST: penultimate feature rank against rho",
        ROWS, COLUMNS, {}, lambda row, column: row_runs(row, seeds),
        lambda row, column: METRICS[column], unit="the column's quantity",
        notes="Rank: principal components holding 99% of the variance of the "
              "64-dimensional features of 1,024 training images.")
