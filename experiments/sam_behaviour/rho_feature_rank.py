"""Study 7: the rank of the penultimate features against rho.

Andriushchenko et al. (NeurIPS 2023): SAM lowers the rank of the features
(the number of principal components holding 99% of their variance), more so
as rho grows. sam_behaviour.PROTOCOL (batch 256 = m, 10 epochs), rho in
{0 (SGD), 0.02, 0.05, 0.1, 0.2, 0.5}, 3 seeds; the features are the input of
WRN-10-1's classifier (64 dimensions) on the first 1,024 training images,
BatchNorm in evaluation mode, logged by the trainer at the start, half-way
and at the end (config.sharpness.rank_examples), with lambda_max beside.
"""

from .. import sam_behaviour as study
from sam_jax.reproduce import registry

SEEDS = 3
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


def summary(table: registry.Table, cells) -> str:
    """The verdict, by criteria fixed before the runs: the prediction holds if
    every rho > 0 ends with a mean rank at most SGD's and the largest rho
    strictly below it; the ranks' order along rho is reported beside."""
    ranks = {c.cell.row: c.mean for c in cells
             if c.cell.column == "rank" and c.mean is not None}
    order = [row for row, _ in table.rows if row in ranks]
    if "rho0" not in ranks or len(order) < 2:
        return "Verdict: not enough finished runs yet."
    sgd, largest = ranks["rho0"], order[-1]
    holds = (all(ranks[row] <= sgd for row in order[1:]) and largest != "rho0"
             and ranks[largest] < sgd)
    falling = all(ranks[a] >= ranks[b] for a, b in zip(order, order[1:]))
    verdict = ("Mean feature rank at the end along rho "
               + ", ".join(f"{row.removeprefix('rho')}: {ranks[row]:.1f}" for row in order)
               + f". SAM lowers the rank (every rho > 0 at most SGD's, the largest rho "
               f"below it): {'held' if holds else 'did not hold'}; non-increasing in rho: "
               f"{'yes' if falling else 'no'}.")
    return "\n\n".join(filter(None, [verdict, study.wall_clock(cells)]))


def plot(table: registry.Table, cells, path: str) -> None:
    """Feature rank, lambda_max and test error against rho (mean +- std over
    seeds; rho 0 drawn at the left edge of the log axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_position = {(c.cell.row, c.cell.column): c for c in cells}
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    positive = [rho for rho in RHOS if rho > 0]
    x_of = {rho: rho if rho > 0 else positive[0] / 2 for rho in RHOS}
    for ax, column in zip(axes, ("rank", "lmax", "error")):
        points = [(x_of[rho], by_position.get((f"rho{rho:g}", column))) for rho in RHOS]
        points = [(x, c) for x, c in points if c is not None and c.mean is not None]
        if points:
            ax.errorbar([x for x, _ in points], [c.mean for _, c in points],
                        yerr=[c.std or 0.0 for _, c in points], marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xticks([x_of[rho] for rho in RHOS], [f"{rho:g}" for rho in RHOS])
        ax.set_xlabel("rho (0: SGD)")
        ax.set_ylabel(dict(table.columns)[column])
    figure.suptitle(table.title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    return registry.grid_table(
        "sam_behaviour.rho_feature_rank",
        "Fashion-MNIST: penultimate feature rank against rho",
        ROWS, COLUMNS, {}, lambda row, column: row_runs(row, seeds),
        lambda row, column: METRICS[column], unit="the column's quantity",
        summary=summary, plot=plot,
        notes="Rank: principal components holding 99% of the variance of the "
              "64-dimensional features of 1,024 training images.")
