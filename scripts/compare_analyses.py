"""Markdown table of several runs' `python -m sam_jax.analysis` results side by side.

    python scripts/compare_analyses.py SGD=/runs/sgd SAM=/runs/sam > compare.md

Each argument is LABEL=WORKDIR; reads WORKDIR/analysis.json (written by
`python -m sam_jax.analysis`) and prints one column per run: the loss, the
top Hessian eigenvalues, m-sharpness for each m, the loss at both ends of
the 1-D filter-normalised slice, and the highest loss on the straight path
between the two runs (when analysed with --other_workdir).
"""

import json
import os
import sys


def _rows(analysis: dict) -> dict[str, str]:
    rows = {"step": str(analysis.get("step", "")),
            "loss (subset)": f"{analysis['loss']:.4g}" if "loss" in analysis else ""}
    hessian = analysis.get("hessian", {})
    if hessian:
        rows["lambda_max"] = f"{hessian['lambda_max']:.4g}"
        rows["lambda_max / lambda_5"] = f"{hessian['lambda_max_over_lambda_5']:.4g}"
    sharpness = analysis.get("msharpness", {})
    for m, value in zip(sharpness.get("m", []), sharpness.get("values", [])):
        rows[f"m-sharpness, m={m} (rho {sharpness['rho']:g})"] = f"{value:.4g}"
    landscape = analysis.get("landscape", {})
    if landscape:
        rows["loss at slice -1 / +1"] = (f"{landscape['losses'][0]:.4g} / "
                                         f"{landscape['losses'][-1]:.4g}")
    path = analysis.get("interpolation", {})
    if path:
        inside = [loss for alpha, loss in zip(path["alphas"], path["losses"])
                  if 0.0 <= alpha <= 1.0]
        rows["max loss on the path to the other run"] = f"{max(inside):.4g}"
    return rows


def compare(runs: list[tuple[str, dict]]) -> str:
    per_run = [(label, _rows(analysis)) for label, analysis in runs]
    names = list(dict.fromkeys(name for _, rows in per_run for name in rows))
    lines = ["| | " + " | ".join(label for label, _ in per_run) + " |",
             "|---|" + "---|" * len(per_run)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(rows.get(name, "") for _, rows in per_run)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    runs = []
    for argument in argv:
        label, sep, workdir = argument.partition("=")
        path = os.path.join(workdir, "analysis.json")
        if not sep or not label or not os.path.isfile(path):
            print(f"error: {argument!r}: expected LABEL=WORKDIR with "
                  "WORKDIR/analysis.json (run python -m sam_jax.analysis first)",
                  file=sys.stderr)
            return 2
        with open(path) as f:
            runs.append((label, json.load(f)))
    if not runs:
        print("error: give at least one LABEL=WORKDIR", file=sys.stderr)
        return 2
    print(compare(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
