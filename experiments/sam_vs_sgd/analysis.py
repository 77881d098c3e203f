"""The pre-registered analysis (PROTOCOL.md, "Analysis"), from the main tables'
runs, and the study's results page and plot.

  python -m experiments.sam_vs_sgd.analysis --root=ROOT \\
      --out=experiments/sam_vs_sgd/results/verdict.md \\
      --plot=experiments/sam_vs_sgd/results/verdict.png

Per condition: SAM against the better of SGD and SGD 2x, paired by seed (mean
difference, 95% t interval, paired t-test), SAM against each; late-phase SAM
and SWA over SGD against SAM by a paired non-inferiority test at the
protocol's margin; each run's regime (training error, memorised share) beside
its test error; and the verdict in plain words.
"""

import argparse
import math
import sys
from typing import Optional

from scipy import stats

from . import main as main_tables
from .stats import detectable, non_inferior, paired, Paired
from .. import sam_vs_sgd as study
from sam_jax.errors import BadInputError
from sam_jax.reproduce import collect
from sam_jax.reproduce import registry


def values_by_seed(root: str, noise: str) -> dict:
    """{method key: {column: {seed: value}}} from the condition table's runs."""
    table = main_tables.get_condition_table(noise)
    cells, _ = collect.collect_table(table, root)
    values = {}
    for result in cells:
        by_seed = {}
        for run, status in zip(result.cell.runs, result.runs):
            value = registry.METRICS[result.cell.metric](status.outputs)
            if value is not None:
                by_seed[run.seed] = value
        values.setdefault(result.cell.row, {})[result.cell.column] = by_seed
    return values


def _interval(result: Optional[Paired]) -> str:
    if result is None:
        return "fewer than two paired seeds yet"
    return (f"{result.mean:+.2f} points, 95% CI [{result.low:+.2f}, {result.high:+.2f}], "
            f"p = {result.p:.3g}, lower on {result.below}/{result.n} seeds")


def verdict_words(result: Optional[Paired]) -> str:
    if result is None:
        return "not run yet"
    if result.high < 0:
        return "SAM beats SGD"
    if result.low > 0:
        return "SAM is worse than SGD"
    return (f"no difference detected (these {result.n} seeds detect "
            f"{detectable(result.sd, result.n):.2f} points with 80% power)")


def _mean(by_seed: dict) -> Optional[float]:
    return sum(by_seed.values()) / len(by_seed) if by_seed else None


def condition_section(noise: str, values: dict) -> str:
    label = dict(study.CONDITIONS)[noise]
    error = {key: values.get(key, {}).get("error", {}) for key, *_ in main_tables.METHODS}
    means = {key: _mean(v) for key, v in error.items()}
    better = min(("sgd", "sgd2x"), key=lambda k: (means[k] is None,
                                                  means[k] if means[k] is not None else 0))
    primary = paired(error["sam"], error[better])
    lines = [f"### {label}", "",
             f"**{verdict_words(primary)}.** SAM - {main_tables.BY_KEY[better][0]} "
             f"(the better baseline by mean test error): {_interval(primary)}.", "",
             f"- SAM - SGD: {_interval(paired(error['sam'], error['sgd']))}",
             f"- SAM - SGD 2x: {_interval(paired(error['sam'], error['sgd2x']))}"]
    margin = study.MARGINS[noise]
    for key in ("late_sam", "swa"):
        test = non_inferior(error[key], error["sam"], margin)
        name = main_tables.BY_KEY[key][0]
        if test is None:
            lines.append(f"- {name} against SAM: not run yet")
            continue
        upper, ok = test
        lines.append(f"- {name} - SAM: {_interval(paired(error[key], error['sam']))}; "
                     f"one-sided 95% upper bound {upper:+.2f} against the margin "
                     f"{margin:g}: {'non-inferior' if ok else 'not shown non-inferior'}")
    regime_name = main_tables.REGIME[noise][1]
    lines += ["", f"| method | seeds | test error % | {regime_name} | "
              "gradient evaluations (k) | train seconds |", "|---|---|---|---|---|---|"]
    for key, name, *_ in main_tables.METHODS:
        row = values.get(key, {})
        cell = lambda column: ("-" if _mean(row.get(column, {})) is None
                               else f"{_mean(row[column]):.2f}")
        lines.append(f"| {name} | {len(error[key])} | {cell('error')} | {cell('regime')} | "
                     f"{cell('kilo_gradient_evaluations')} | {cell('train_seconds')} |")
    seeds = sorted(set(error["sam"]) | set(error["sgd"]))
    lines += ["", "Per seed, test error % and SAM's differences:", "",
              "| seed | SGD | SGD 2x | SAM | SAM - SGD | SAM - SGD 2x |",
              "|---|---|---|---|---|---|"]
    for seed in seeds:
        get = lambda key: error[key].get(seed)
        show = lambda v: "-" if v is None else f"{v:.2f}"
        diff = lambda a, b: "-" if a is None or b is None else f"{a - b:+.2f}"
        lines.append(f"| {seed} | {show(get('sgd'))} | {show(get('sgd2x'))} | "
                     f"{show(get('sam'))} | {diff(get('sam'), get('sgd'))} | "
                     f"{diff(get('sam'), get('sgd2x'))} |")
    return "\n".join(lines) + "\n"


def report(root: str) -> tuple[str, dict]:
    values = {noise: values_by_seed(root, noise) for noise, _ in study.CONDITIONS}
    text = ("## SAM against SGD: the verdict\n\n"
            f"Generated by `python -m experiments.sam_vs_sgd.analysis --root={root}` "
            "by the analysis PROTOCOL.md fixed before the runs.\n\n"
            + "\n".join(condition_section(noise, values[noise])
                        for noise, _ in study.CONDITIONS))
    return text, values


def plot(values: dict, path: str) -> None:
    """Test error against gradient evaluations, mean and 95% interval over
    seeds, one panel per condition."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(study.CONDITIONS), figsize=(11, 4))
    for ax, (noise, label) in zip(axes, study.CONDITIONS):
        for key, name, *_ in main_tables.METHODS:
            errors = list(values[noise].get(key, {}).get("error", {}).values())
            evaluations = list(values[noise].get(key, {}).get(
                "kilo_gradient_evaluations", {}).values())
            if len(errors) < 2 or not evaluations:
                continue
            mean = sum(errors) / len(errors)
            sd = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1))
            half = stats.t.ppf(0.975, len(errors) - 1) * sd / math.sqrt(len(errors))
            ax.errorbar(sum(evaluations) / len(evaluations), mean, yerr=half,
                        fmt="o", capsize=3, label=name)
        ax.set_title(label)
        ax.set_xlabel("gradient evaluations (thousands)")
        ax.set_ylabel("test error % (mean, 95% CI)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    try:
        text, values = report(args.root)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.plot:
        plot(values, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
