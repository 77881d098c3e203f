"""Plots sharpness during training (config.sharpness) of groups of runs.

    python scripts/plot_sharpness.py --out=sharpness.png \
        'SGD:/runs/*sgd*_seed*' 'SAM:/runs/*sam*_seed*'

Each argument is LABEL:GLOB; the workdirs matching GLOB are the seeds of one
curve. Reads the "sharpness" records of each workdir's metrics.jsonl and draws
lambda_max, lambda_max / lambda_k and m-sharpness against the epoch: the mean
over the runs, with a band of +- one standard deviation where there are several.
"""

import glob
import sys

from absl import app
from absl import flags
import numpy as np

from sam_jax.reproduce import run_outputs

_OUT = flags.DEFINE_string("out", None, "PNG to write.", required=True)

PANELS = (("lambda_max", r"$\lambda_{max}$"),
          ("ratio", r"$\lambda_{max} / \lambda_k$"),
          ("m_sharpness", "m-sharpness"))


def _ratio_key(record: dict):
    return next((key for key in record if key.startswith("lambda_max_over_")), None)


def curves(workdirs: list[str]) -> dict[str, tuple]:
    """panel -> (epochs, mean, std) over the runs, at the epochs all runs have."""
    per_run = []
    for workdir in workdirs:
        records = run_outputs.read_sharpness_records(workdir) or []
        per_run.append({r["epoch"]: r for r in records if "epoch" in r})
    common = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    result = {}
    for panel, _ in PANELS:
        values = []
        for run in per_run:
            key = _ratio_key(run[common[0]]) if panel == "ratio" and common else panel
            values.append([run[epoch].get(key, np.nan) for epoch in common])
        values = np.asarray(values, dtype=float).reshape(len(per_run), len(common))
        result[panel] = (np.asarray(common), values.mean(axis=0), values.std(axis=0))
    return result


def parse_group(argument: str) -> tuple[str, list[str]]:
    label, sep, pattern = argument.partition(":")
    if not sep or not label:
        raise ValueError(f"bad group {argument!r}: expected LABEL:GLOB")
    workdirs = sorted(glob.glob(pattern))
    if not workdirs:
        raise ValueError(f"group {label!r}: no workdir matches {pattern!r}")
    return label, workdirs


def main(argv):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(argv) < 2:
        raise app.UsageError("give at least one LABEL:GLOB")
    try:
        groups = [parse_group(argument) for argument in argv[1:]]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for index, (label, workdirs) in enumerate(groups):
        data = curves(workdirs)
        for ax, (panel, title) in zip(axes, PANELS):
            epochs, mean, std = data[panel]
            ax.plot(epochs, mean, "o-", color=f"C{index}",
                    label=f"{label} (n={len(workdirs)})")
            if len(workdirs) > 1:
                ax.fill_between(epochs, mean - std, mean + std, color=f"C{index}",
                                alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(_OUT.value, dpi=120)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
