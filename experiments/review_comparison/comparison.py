"""The comparison's tables: the grid (each method's hyper-parameter picked on the
held-out 10%), and one table per label condition with error beside cost.

  review_comparison.grid      methods x 3 grid values, validation error %,
                              40% noise, seed 0, the last 10% of the subset held out
  review_comparison.clean     methods x (error, gradient evaluations, seconds),
  review_comparison.noise40   each method at its pick (picks.json), 3 seeds,
  review_comparison.noise80   test error on the full, clean 10,000-image test set

picks.json is written from the grid's runs by
`python -m experiments.review_comparison.pick --root=ROOT`; the condition
tables read it, so the test split never chooses a hyper-parameter.
"""

import json
import math
import os

from .. import review_comparison as study
from . import methods as methods_lib
from sam_jax.errors import BadInputError
from sam_jax.reproduce import registry

PICKS_PATH = os.path.join(os.path.dirname(__file__), "picks.json")
GRID_CONDITION = "noise40"
GRID_COLUMNS = tuple((f"g{i}", f"grid value {i + 1}") for i in range(3))
COST_COLUMNS = (("error", "test error %"),
                ("kilo_gradient_evaluations", "gradient evaluations (k)"),
                ("train_seconds", study.SECONDS_LABEL))
# The paper's Table 5, F-MNIST, WRN-28-10, basic augmentation (200 epochs of
# 60,000 images; ours: study.PROTOCOL).
PAPER = {("sgd", "error"): 4.57, ("sam", "error"): 3.98}


def _is_swa(method: methods_lib.Method) -> bool:
    return "swa.start_fraction" in method.fixed or method.grid_key.startswith("swa.")


def error_metric(method: methods_lib.Method, validation: bool = False) -> str:
    """SWA rows report the averaged weights' error."""
    prefix = "swa_" if _is_swa(method) else ""
    return prefix + ("validation_error" if validation else "error")


def grid_runs(method: methods_lib.Method, value) -> tuple:
    return study.runs(method.method, GRID_CONDITION,
                      {"validation_split": True,
                       **methods_lib.overrides(method, value,
                                               study.PROTOCOL["num_epochs"])}, 1)


def get_grid_table(seeds=None) -> registry.Table:
    del seeds  # one seed: the grid picks, the condition tables measure
    rows = tuple((m.key, f"{m.label}: {m.grid_key} " +
                  " / ".join(registry.format_value(v) for v in m.grid))
                 for m in methods_lib.METHODS)

    def runs_for(row, column):
        method = methods_lib.BY_KEY[row]
        return grid_runs(method, method.grid[int(column[1:])])

    return registry.grid_table(
        "review_comparison.grid", "Fashion-MNIST comparison, the grid: validation "
        "error % at 40% noise (seed 0)", rows, GRID_COLUMNS, {}, runs_for,
        lambda row, column: error_metric(methods_lib.BY_KEY[row], validation=True),
        unit="validation error %",
        notes="Each method's grid values are in its row label; picks.json records "
              "the picks.")


def read_picks(path: str = PICKS_PATH) -> dict:
    """{method key: picked grid value}, or BadInputError saying how to make it."""
    try:
        with open(path) as f:
            picks = json.load(f)
    except FileNotFoundError:
        raise BadInputError(
            f"{path} does not exist: launch review_comparison.grid, then "
            "python -m experiments.review_comparison.pick --root=ROOT") from None
    missing = [m.key for m in methods_lib.METHODS if m.key not in picks]
    if missing:
        raise BadInputError(f"{path} has no pick for {', '.join(missing)}: launch "
                            "review_comparison.grid and pick again")
    return {key: entry["value"] for key, entry in picks.items()}


def condition_runs(method: methods_lib.Method, condition: str, value, seeds: int):
    return study.runs(method.method, condition,
                      methods_lib.overrides(method, value, study.PROTOCOL["num_epochs"]),
                      seeds)


def get_condition_table(condition: str, seeds=None, picks=None) -> registry.Table:
    """`picks` ({method key: value}) defaults to picks.json's."""
    seeds = seeds or study.SEEDS
    picks = picks if picks is not None else read_picks()
    rows = tuple((m.key, f"{m.label} ({m.grid_key} {registry.format_value(picks[m.key])})")
                 for m in methods_lib.METHODS)

    def runs_for(row, column):
        method = methods_lib.BY_KEY[row]
        return condition_runs(method, condition, picks[row], seeds)

    def metric_for(row, column):
        return error_metric(methods_lib.BY_KEY[row]) if column == "error" else column

    label = dict(study.CONDITIONS)[condition]
    return registry.grid_table(
        f"review_comparison.{condition}",
        f"Fashion-MNIST comparison, {label}: test error % and cost", rows,
        COST_COLUMNS, PAPER if condition == "clean" else {}, runs_for, metric_for,
        unit="test error % / thousands of gradient evaluations / seconds",
        notes=("Paper: Table 5, WRN-28-10 on all 60,000 images at 28x28 for 200 "
               f"epochs; ours is WRN-10-1 on {study.PROTOCOL_LABEL}, so only the "
               "ordering compares." if condition == "clean" else ""),
        summary=ranking, plot=pareto_plot)


# ----------------------------------------------------------------- views

def _by_row(cells) -> dict:
    """{row: {column: CellResult}}."""
    rows = {}
    for result in cells:
        rows.setdefault(result.cell.row, {})[result.cell.column] = result
    return rows


def finished(cells) -> dict:
    """{row: {column: CellResult}} of the rows with an error and a cost."""
    return {row: c for row, c in _by_row(cells).items()
            if c.get("error") and c["error"].mean is not None
            and c.get("kilo_gradient_evaluations")
            and c["kilo_gradient_evaluations"].mean is not None}


def difference_error(a, b) -> float:
    """The standard error of the difference of two cells' means (the seeds'
    noise; a cell without a spread counts as exact)."""
    return math.sqrt(sum((c.std or 0.0) ** 2 / max(len(c.values), 1) for c in (a, b)))


def within(reference, other) -> bool:
    """other's mean error is no worse than reference's plus one standard error
    of the difference of the two means."""
    return other.mean <= reference.mean + difference_error(reference, other)


def cheapest_within_sam(done: dict):
    """The row with the fewest gradient evaluations among those within SAM's
    error (SAM itself qualifies; a row needs two seeds for a spread), or None
    without SAM."""
    if "sam" not in done:
        return None
    candidates = [row for row in done if row == "sam" or (
        len(done[row]["error"].values) > 1
        and within(done["sam"]["error"], done[row]["error"]))]
    return min(candidates, key=lambda row: (done[row]["kilo_gradient_evaluations"].mean,
                                            done[row]["error"].mean))


def ranking(table: registry.Table, cells) -> str:
    """Methods by mean test error, and the cheapest one that matches SAM's."""
    labels = dict(table.rows)
    done = finished(cells)
    if not done:
        return "Ranking: no finished runs yet."
    order = sorted(done, key=lambda row: done[row]["error"].mean)
    lines = ["Ranking by mean test error (gradient evaluations relative to SGD's):", ""]
    sgd_cost = done["sgd"]["kilo_gradient_evaluations"].mean if "sgd" in done else None
    for rank, row in enumerate(order, 1):
        error = done[row]["error"]
        cost = done[row]["kilo_gradient_evaluations"].mean
        relative = f", {cost / sgd_cost:.2f}x SGD's evaluations" if sgd_cost else ""
        spread = f" +- {error.std:.2f}" if error.std is not None else ""
        lines.append(f"{rank}. {labels[row]}: {error.mean:.2f}{spread}{relative}")
    cheapest = cheapest_within_sam(done)
    if cheapest is not None:
        sam = done["sam"]["error"]
        ratio = (done[cheapest]["kilo_gradient_evaluations"].mean
                 / done["sam"]["kilo_gradient_evaluations"].mean)
        lines += ["", f"Cheapest within SAM's error ({sam.mean:.2f}% plus one standard "
                  f"error of the difference): {labels[cheapest]}, "
                  f"{done[cheapest]['error'].mean:.2f}% at {ratio:.2f}x "
                  "SAM's gradient evaluations."]
    return "\n".join(lines)


def spread_labels(xs, ys, x_tolerance: float, gap: float) -> list:
    """Label heights for points (xs, ys): points within x_tolerance of each other
    (chained) share a column, in which labels keep the points' order, stay at or
    above their point and sit at least `gap` apart (the 1,500-evaluation column
    holds most methods)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    columns, column = [], []
    for i in order:
        if column and xs[i] - xs[column[-1]] > x_tolerance:
            columns.append(column)
            column = []
        column.append(i)
    columns += [column] if column else []
    heights = list(ys)
    for column in columns:
        last = -math.inf
        for i in sorted(column, key=lambda i: ys[i]):
            heights[i] = max(ys[i], last + gap)
            last = heights[i]
    return heights


def label_points(ax, points) -> None:
    """Names points [(name, x, y)] to their right, spread apart in columns, and
    widens the x axis to hold the names."""
    if not points:
        return
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x_range = (max(xs) - min(xs)) or 1.0
    y_range = (max(ys) - min(ys)) or 1.0
    heights = spread_labels(xs, ys, 0.12 * x_range, 0.04 * y_range)
    for (name, x, y), height in zip(points, heights):
        ax.annotate(name, (x, y), xytext=(x + 0.03 * x_range, height),
                    textcoords="data", fontsize=8, va="center",
                    arrowprops=dict(arrowstyle="-", lw=0.5, alpha=0.5))
    ax.set_xlim(min(xs) - 0.08 * x_range, max(xs) + 0.3 * x_range)


def pareto_plot(table: registry.Table, cells, path: str) -> None:
    """Test error against gradient evaluations and against seconds, one point
    (mean +- std over seeds) per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = _by_row(cells)
    figure, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    for ax, column, xlabel in (
            (axes[0], "kilo_gradient_evaluations", "gradient evaluations (thousands)"),
            (axes[1], "train_seconds", study.SECONDS_LABEL)):
        points = []
        for index, (row, _) in enumerate(table.rows):
            cost, error = rows.get(row, {}).get(column), rows.get(row, {}).get("error")
            if not (cost and error and cost.mean is not None and error.mean is not None):
                continue
            ax.errorbar(cost.mean, error.mean, xerr=cost.std or 0, yerr=error.std or 0,
                        fmt="o", color=plt.cm.tab20(index % 20), capsize=3, label=row)
            points.append((row, cost.mean, error.mean))
        label_points(ax, points)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test error % (mean +- std over seeds)")
    figure.suptitle(table.title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
