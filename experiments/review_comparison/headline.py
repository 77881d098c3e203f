"""The comparison's headline: the three label conditions side by side.

  python -m experiments.review_comparison.headline --root=ROOT \\
      --out=experiments/review_comparison/results/headline.md \\
      --plot=experiments/review_comparison/results/headline.png

reads the runs of review_comparison.clean, .noise40 and .noise80 under ROOT (as
`collect` does) and writes, per condition, SAM against SGD and the cheapest
method within SAM's error; every method's test error in the three conditions
in one table; and test error against gradient evaluations, a panel per
condition. The top-level README includes the markdown and shows the plot.
"""

import argparse
import math
import sys

from . import comparison
from .. import review_comparison as study
from sam_jax.errors import BadInputError
from sam_jax.reproduce import collect


def _error(cell) -> str:
    if cell is None:
        return "not run yet"
    spread = f" +- {cell.std:.2f}" if cell.std is not None else ""
    return f"{cell.mean:.2f}{spread}"


def paired_difference(values, reference):
    """Per-seed differences values - reference (each seed: the same
    initialisation, data order and noisy labels for every method): (mean,
    standard error, seeds below the reference), or None unless both have the
    same seeds, at least two."""
    if len(values) != len(reference) or len(values) < 2:
        return None
    differences = [a - b for a, b in zip(values, reference)]
    n = len(differences)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    return mean, std / math.sqrt(n), sum(d < 0 for d in differences)


def _paired(cell, reference) -> str:
    if cell is None or reference is None:
        return "-"
    paired = paired_difference(cell.values, reference.values)
    if paired is None:
        return "-"
    mean, se, below = paired
    return f"{mean:+.2f} +- {se:.2f} ({below}/{len(cell.values)})"


def condition_line(label: str, done: dict, names: dict) -> str:
    """One bullet: SAM against SGD, the best method, the cheapest within SAM's."""
    if "sam" not in done or "sgd" not in done:
        return f"- **{label}**: SAM or SGD has not finished."
    sam, sgd = done["sam"]["error"], done["sgd"]["error"]
    se = comparison.difference_error(sam, sgd)
    gap = sgd.mean - sam.mean
    gap_se = f", {abs(gap) / se:.1f} standard errors" if se > 0 else ""
    best = min(done, key=lambda row: done[row]["error"].mean)
    cheapest = comparison.cheapest_within_sam(done)
    ratio = (done[cheapest]["kilo_gradient_evaluations"].mean
             / done["sam"]["kilo_gradient_evaluations"].mean)
    paired = _paired(sam, sgd)
    return (f"- **{label}**: SAM {_error(sam)} against SGD's {_error(sgd)} "
            f"(SAM {'ahead' if gap > 0 else 'behind'} by {abs(gap):.2f} points{gap_se}; "
            f"paired by seed, SAM - SGD {paired}); "
            f"lowest: {names[best]}, {done[best]['error'].mean:.2f}; "
            f"cheapest within SAM's error: {names[cheapest]}, "
            f"{done[cheapest]['error'].mean:.2f} at {ratio:.2f}x SAM's gradient "
            "evaluations.")


def _relative_cost(results: dict, row: str) -> str:
    """The row's gradient evaluations over SGD's, from the first condition that
    has both (the cost does not depend on the labels)."""
    for condition, _ in study.CONDITIONS:
        done = results.get(condition, {})
        if row in done and "sgd" in done:
            cost = done[row]["kilo_gradient_evaluations"].mean
            return f"{cost / done['sgd']['kilo_gradient_evaluations'].mean:.2f}"
    return "-"


def headline(results: dict, names: dict) -> str:
    """results: {condition: {row: {column: CellResult}}} (finished rows)."""
    lines = [f"Fashion-MNIST, WRN-10-1 on {study.PROTOCOL_LABEL}, m = the batch of "
             "128, each method at the hyper-parameter its grid picked on held-out "
             "data; test error % on the 10,000 test images, mean +- std over "
             f"{study.SEEDS} seeds. **The regime:** small data, where SGD neither "
             "interpolates the clean labels nor memorises the noisy ones (its "
             "training error stays close to its test error), so this comparison "
             "cannot test the paper's claim about which interpolating solution SAM "
             "finds; experiments/sam_vs_sgd is the study that can.", ""]
    for condition, label in study.CONDITIONS:
        lines.append(condition_line(label, results.get(condition, {}), names))
    lines += ["", "| method | gradient evaluations / SGD's | "
              + " | ".join(label for _, label in study.CONDITIONS) + " |",
              "|---|---|" + "---|" * len(study.CONDITIONS)]
    for row, name in names.items():
        cost = _relative_cost(results, row)
        errors = [_error(results.get(c, {}).get(row, {}).get("error"))
                  for c, _ in study.CONDITIONS]
        lines.append(f"| {name} | {cost} | " + " | ".join(errors) + " |")
    lines += ["", "Each method minus SGD, paired by seed (a seed fixes the "
              "initialisation, the data order and the noisy labels for every method): "
              "mean +- standard error of the per-seed differences in test error "
              f"points (seeds below SGD / seeds). With {study.SEEDS} seeds, even "
              f"{study.SEEDS} of {study.SEEDS} below is a chance event one time in "
              f"{2 ** study.SEEDS}.", "",
              "| method | " + " | ".join(label for _, label in study.CONDITIONS) + " |",
              "|---|" + "---|" * len(study.CONDITIONS)]
    for row, name in names.items():
        if row == "sgd":
            continue
        cells = [_paired(results.get(c, {}).get(row, {}).get("error"),
                         results.get(c, {}).get("sgd", {}).get("error"))
                 for c, _ in study.CONDITIONS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_line(statuses: dict) -> str:
    """The study's compute: {table: [RunStatus]} -> one line from each run's
    last launch (status.json's elapsed_s: wall-clock, compilation and
    evaluation included)."""
    parts, total = [], 0.0
    for table, runs in statuses.items():
        seconds = [r.outputs.get("status", {}).get("elapsed_s") for r in runs]
        seconds = [s for s in seconds if s is not None]
        total += sum(seconds)
        parts.append(f"{table} {len(seconds)} runs, {sum(seconds) / 3600:.2f} h")
    return (f"Compute, from each run's last launch (status.json): "
            f"{'; '.join(parts)}; in all {total / 3600:.2f} core-hours, "
            f"{total / 7200:.2f} hours of wall-clock time on two launchers, one per "
            "core.")


def plot(results: dict, path: str) -> None:
    """Test error against gradient evaluations, a panel per condition."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(study.CONDITIONS),
                                figsize=(6 * len(study.CONDITIONS), 5.5))
    for ax, (condition, label) in zip(axes, study.CONDITIONS):
        done = results.get(condition, {})
        points = [(row, c["kilo_gradient_evaluations"].mean, c["error"].mean,
                   c["error"].std or 0.0) for row, c in done.items()]
        for row, x, y, std in points:
            marked = row == "sam" or row.startswith("sgd")  # drawn on top
            ax.errorbar(x, y, yerr=std, fmt="o", capsize=3, zorder=3 if marked else 2,
                        color="tab:red" if row == "sam" else
                        "tab:blue" if marked else "0.6")
        comparison.label_points(ax, [p[:3] for p in points])
        ax.set_title(label)
        ax.set_xlabel("gradient evaluations (thousands)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test error % (mean +- std over seeds)")
    figure.suptitle("Which method gives SAM's error for less: test error against "
                    "gradient evaluations (SAM red, SGD blue)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the tables' --root")
    parser.add_argument("--out", required=True, help="the markdown to write")
    parser.add_argument("--plot", help="the plot to write (png)")
    args = parser.parse_args(argv)
    results, names, statuses = {}, None, {}
    _, grid_statuses = collect.collect_table(comparison.get_grid_table(), args.root)
    statuses["grid"] = list(grid_statuses.values())
    for condition, _ in study.CONDITIONS:
        try:
            table = comparison.get_condition_table(condition)
        except BadInputError as e:  # no picks.json yet
            print(f"error: {e}", file=sys.stderr)
            return 2
        names = names or dict(table.rows)
        cells, run_statuses = collect.collect_table(table, args.root)
        results[condition] = comparison.finished(cells)
        statuses[condition] = list(run_statuses.values())
    if not any(results.values()):
        print(f"error: no finished run of the condition tables under {args.root}",
              file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        f.write(headline(results, names) + "\n" + cost_line(statuses) + "\n")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
