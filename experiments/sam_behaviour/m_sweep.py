"""Study 6: m-sharpness with BatchNorm decoupled: test error % against m.

Andriushchenko & Flammarion (ICML 2022) and the paper's Figure 3: smaller m
(examples per perturbation) generalises better. In the official code a group
of m examples is also BatchNorm's batch; here sam.batch_norm="device"
normalises with the statistics of the whole device batch (256) in both passes,
whatever m (each group's examples through its own weights, gradients through
the statistics), so m changes the perturbation alone: at rho = 0 every m is
the same step. The first runs (commit 6939b50) held the statistics constant,
without gradients through them; SAM then ended at 41-42% test error at m = 1,
4 and 16 against SGD's 21% and SAM's 22% at m = 256 with BatchNorm over the
group (study 7), and were discarded. sam_behaviour.PROTOCOL (batch
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


def summary(table: registry.Table, cells) -> str:
    """The verdict, by a criterion fixed before the runs: "smaller m is better"
    holds if the mean error falls from m = 256 to the smallest m run by more
    than the two cells' standard deviations together."""
    results = {c.cell.row: c for c in cells
               if c.cell.column == "error" and c.mean is not None}
    order = [row for row, _ in table.rows if row in results and row != "sgd"]
    if "m256" not in results or len(order) < 2:
        return "Verdict: not enough finished runs yet."
    small, large = results[order[0]], results["m256"]
    gap = large.mean - small.mean
    noise = (small.std or 0.0) + (large.std or 0.0)
    best = min(order, key=lambda row: results[row].mean)
    verdict = (f"Test error at m = {order[0][1:]} minus m = 256: {-gap:+.2f} points "
               f"(stds {small.std or 0.0:.2f} and {large.std or 0.0:.2f}); lowest mean "
               f"error at m = {best[1:]}. Smaller m is better: "
               f"{'held' if gap > noise else 'did not hold'}.")
    sgd = results.get("sgd")
    return "\n\n".join(filter(None, [verdict, study.regime(sgd and sgd.mean),
                                       study.wall_clock(cells)]))


def plot(table: registry.Table, cells, path: str) -> None:
    """Test error against m (mean +- std over seeds), SGD as a band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {c.cell.row: c for c in cells
               if c.cell.column == "error" and c.mean is not None}
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    points = [(m, results[f"m{m}"]) for m in M_VALUES if f"m{m}" in results]
    if points:
        ax.errorbar([m for m, _ in points], [c.mean for _, c in points],
                    yerr=[c.std or 0.0 for _, c in points], marker="o", capsize=3,
                    label="SAM (rho 0.05)")
    if "sgd" in results:
        sgd = results["sgd"]
        ax.axhline(sgd.mean, color="k", ls=":", label="SGD")
        ax.axhspan(sgd.mean - (sgd.std or 0.0), sgd.mean + (sgd.std or 0.0),
                   color="k", alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(M_VALUES, [str(m) for m in M_VALUES])
    ax.set_xlabel("m (examples per perturbation)")
    ax.set_ylabel("test error %")
    ax.legend()
    ax.set_title(table.title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    return registry.grid_table(
        "sam_behaviour.m_sweep",
        "Fashion-MNIST, m-sharpness with BatchNorm over the device batch",
        ROWS, COLUMNS, {}, lambda row, column: row_runs(row, seeds),
        lambda row, column: column, unit="the column's quantity", summary=summary,
        plot=plot, notes="Batch 256 on one device, rho 0.05, sam.batch_norm='device'; "
              "m = 256 is SAM on the whole batch.")
