"""Study 5: Hessian trace and lambda_max over training, SGD against SAM at
m in {4, 16, 64}.

Wen, Ma & Li (ICLR 2023): full-batch SAM lowers lambda_max, stochastic SAM
with small m a trace-like sharpness. Stochastic training
(sam_behaviour.PROTOCOL: batch 256, 10 epochs of 16 steps, cosine schedule),
SAM with rho 0.05 and m examples per perturbation, BatchNorm over the whole
device batch in both passes (sam.batch_norm="device": each group's examples
through its own weights, gradients through the statistics), so that m changes
the perturbation only, not BatchNorm's batch. Every 2 epochs the trainer logs, on
a fixed batch of the first 256 training images (BatchNorm in training mode
over it, the L2 term included), lambda_max (Lanczos, 10 steps warm-started)
and Hutchinson's trace (10 Rademacher probes, the same every time).
"""

from .. import sam_behaviour as study
from sam_jax.reproduce import registry

M_VALUES = (4, 16, 64)
METHODS = (("sgd", "SGD"),) + tuple((f"m{m}", f"SAM m={m}") for m in M_VALUES)
COLUMNS = tuple((f"{method}_{quantity}", f"{label} {name}")
                for quantity, name in (("lmax", "lambda_max"), ("trace", "trace"))
                for method, label in METHODS)
EVERY_EPOCHS = 2
MEASURED = tuple(range(0, study.EPOCHS + 1, EVERY_EPOCHS))
ROWS = tuple((f"epoch{e}", f"epoch {e}") for e in MEASURED) + (
    ("error", "test error % (end)"),)
SHARPNESS = {"sharpness.every_steps": EVERY_EPOCHS * study.STEPS_PER_EPOCH,
             "sharpness.num_examples": study.BATCH,
             "sharpness.lambda_max_iterations": 10, "sharpness.trace_probes": 10}


def method_runs(method: str, seeds: int) -> tuple:
    if method == "sgd":
        return study.runs("sgd", SHARPNESS, seeds)
    return study.runs("sam", {**SHARPNESS, "sam.batch_norm": "device",
                              "sam.examples_per_perturbation": int(method[1:])}, seeds)


def summary(table: registry.Table, cells) -> str:
    """At the end of training, each SAM run's lambda_max and trace relative to
    SGD's; verdicts by criteria fixed before the runs: "SAM lowers the trace"
    holds if every m ends below SGD's trace; "small m acts on the trace more than
    on lambda_max" if at the smallest m the trace's relative drop exceeds
    lambda_max's; "smaller m lowers both" (Andriushchenko & Flammarion) if both
    drops grow strictly as m falls."""
    row = f"epoch{MEASURED[-1]}"
    end = {c.cell.column: c.mean for c in cells if c.cell.row == row and c.mean is not None}
    if "sgd_lmax" not in end or "sgd_trace" not in end:
        return "Verdict: not enough finished runs yet."
    drops = {}
    for m in M_VALUES:
        if f"m{m}_lmax" in end and f"m{m}_trace" in end:
            drops[m] = (1 - end[f"m{m}_lmax"] / end["sgd_lmax"],
                        1 - end[f"m{m}_trace"] / end["sgd_trace"])
    if not drops:
        return "Verdict: not enough finished runs yet."
    lines = [f"At epoch {MEASURED[-1]}, SAM against SGD (relative drop; negative: "
             "higher than SGD): " + "; ".join(
                 f"m={m}: lambda_max {lmax:+.0%}, trace {trace:+.0%}"
                 for m, (lmax, trace) in drops.items()) + "."]
    smallest = min(drops)
    # Smaller m lowers both: each quantity's drop grows strictly as m falls.
    ms = sorted(drops)
    lower = all(drops[a][i] > drops[b][i] for a, b in zip(ms, ms[1:]) for i in (0, 1))
    lines.append(
        "SAM lowers the trace at every m: "
        f"{'held' if all(t > 0 for _, t in drops.values()) else 'did not hold'}; "
        f"at m={smallest} the trace drops more than lambda_max: "
        f"{'held' if drops[smallest][1] > drops[smallest][0] else 'did not hold'}; "
        "smaller m lowers both lambda_max and the trace: "
        f"{'held' if len(ms) > 1 and lower else 'did not hold'}.")
    return "\n\n".join(filter(None, lines + [study.regime(), study.wall_clock(cells)]))


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or study.SEEDS

    def metric_for(row, column):
        if row == "error":
            return "error"
        quantity = {"lmax": "lambda_max", "trace": "trace"}[column.split("_")[1]]
        step = int(row.removeprefix("epoch")) * study.STEPS_PER_EPOCH
        return f"stability:{quantity}:step{step}"

    def runs_for(row, column):
        if row == "error" and column.endswith("_trace"):
            return ()  # the error once per method
        return method_runs(column.split("_")[0], seeds)

    return registry.grid_table(
        "sam_behaviour.trace_and_lambda_max",
        "Fashion-MNIST: lambda_max and Hessian trace over training, SGD vs SAM(m)",
        ROWS, COLUMNS, {}, runs_for, metric_for, unit="the column's quantity",
        plot=plot, summary=summary,
        notes="Batch 256, rho 0.05, sam.batch_norm='device'; measured on a fixed "
              "batch of 256 training images.")


def plot(table: registry.Table, cells, path: str) -> None:
    """lambda_max and the trace against the epoch, one line per method
    (mean +- std over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    by_position = {(c.cell.row, c.cell.column): c for c in cells}
    for ax, quantity, name in ((axes[0], "lmax", "lambda_max"),
                               (axes[1], "trace", "Hessian trace (Hutchinson)")):
        for method, label in METHODS:
            points = [(epoch, by_position.get((f"epoch{epoch}", f"{method}_{quantity}")))
                      for epoch in MEASURED]
            points = [(e, c) for e, c in points if c is not None and c.mean is not None]
            if not points:
                continue
            ax.errorbar([e for e, _ in points], [c.mean for _, c in points],
                        yerr=[c.std or 0.0 for _, c in points], marker="o",
                        capsize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
    figure.suptitle(table.title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
