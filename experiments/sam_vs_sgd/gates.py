"""The gates, run before any grid (PROTOCOL.md, "Gates"): SGD at the paper's
learning rate must interpolate the clean training subset (at most 1% error on
it, un-augmented, in evaluation mode) and memorise the 80%-noise one (at least
90% of the corrupted labels fitted). Each row is one attempt, in the order they
were run; GATES.md says why each followed the last.

  python -m experiments.sam_vs_sgd.gates --root=ROOT

writes results/gates.md from the runs and gated.json (the model and epochs of
the first attempt that passed both gates), which the grid and the main tables
read.
"""

import argparse
import json
import os
import sys
from typing import Optional

from .. import sam_vs_sgd as study
from sam_jax import workdir as workdir_lib
from sam_jax.errors import BadInputError
from sam_jax.reproduce import collect
from sam_jax.reproduce import registry

# (key, label, model, epochs, augmentation of the noise arm): one per attempt.
ATTEMPTS = (
    ("wrn10_2_e100", "WRN-10-2, 100 epochs", "wrn10_2", 100, "none"),
    ("wrn16_2_e100", "WRN-16-2, 100 epochs", "wrn16_2", 100, "none"),
)
COLUMNS = (("clean_train", "clean: training error %"),
           ("clean_test", "clean: test error %"),
           ("noise80_memorised", "80% noise: corrupted labels fitted %"),
           ("noise80_test", "80% noise: test error %"),
           ("clean_seconds", "clean: train seconds"),
           ("noise80_seconds", "80% noise: train seconds"))
METRIC = {"train": "train_error", "test": "error", "memorised": "memorised",
          "seconds": "train_seconds"}
# The gates' thresholds (PROTOCOL.md).
MAX_CLEAN_TRAIN_ERROR = 1.0
MIN_MEMORISED = 90.0


def attempt_overrides(key: str, noise: str) -> dict:
    _, _, model, epochs, noise_augmentation = next(a for a in ATTEMPTS if a[0] == key)
    overrides = {"model.name": model, "optimizer.learning_rate": 0.1,
                 **study.epochs_setting(epochs)}
    if noise != "clean":
        overrides["augmentation"] = noise_augmentation
    return overrides


def passed(results_by_noise: dict) -> bool:
    """Both gates, from the two runs' results.json."""
    clean, noisy = results_by_noise.get("clean"), results_by_noise.get("noise80")
    return bool(clean and noisy
                and 100 * clean["train_error"] <= MAX_CLEAN_TRAIN_ERROR
                and 100 * (1 - noisy["train_corrupted_error"]) >= MIN_MEMORISED)


def get_table(seeds=None) -> registry.Table:
    del seeds  # one seed: a gate is a property of the setting

    def runs_for(row, column):
        noise = column.split("_")[0]
        return study.runs("sgd", noise, attempt_overrides(row, noise), 1)

    return registry.grid_table(
        "sam_vs_sgd.gates", "SGD gates: interpolation (clean) and memorisation (80% noise)",
        tuple((key, label) for key, label, *_ in ATTEMPTS), COLUMNS, {}, runs_for,
        metric_for=lambda row, column: METRIC[column.split("_", 1)[1]], unit="%")


GATED_PATH = os.path.join(os.path.dirname(__file__), "gated.json")


def _percent(results: Optional[dict], key: str, complement: bool = False) -> str:
    if results is None:
        return "not run yet"
    value = 1 - results[key] if complement else results[key]
    return f"{100 * value:.2f}"


def _seconds(results: Optional[dict]) -> str:
    return "-" if results is None else f"{results['train_seconds']:.0f}"


def record(root: str) -> tuple[str, Optional[dict]]:
    """(the gates' markdown table, the first attempt in ATTEMPTS order that
    passed both gates as {"attempt", "model", "epochs"}, or None)."""
    table = get_table()
    cells, _ = collect.collect_table(table, root)
    by_run = {}
    for result in cells:
        for status in result.runs:
            by_run[status.name] = status.outputs.get("results")
    lines = ["| attempt | clean: training error % | clean: test error % | "
             "80% noise: corrupted labels fitted % | 80% noise: test error % | "
             "clean / 80% noise: train seconds | gates |",
             "|---|---|---|---|---|---|---|"]
    chosen = None
    for key, label, model, epochs, _ in ATTEMPTS:
        results = {}
        for noise in ("clean", "noise80"):
            (run,) = study.runs("sgd", noise, attempt_overrides(key, noise), 1)
            results[noise] = by_run.get(run.name)
        clean, noisy = results["clean"], results["noise80"]
        verdict = ("not finished" if clean is None or noisy is None else
                   "passed" if passed(results) else "failed")
        lines.append("| " + " | ".join([
            label, _percent(clean, "train_error"), _percent(clean, "test_error"),
            _percent(noisy, "train_corrupted_error", complement=True),
            _percent(noisy, "test_error"),
            f"{_seconds(clean)} / {_seconds(noisy)}", verdict]) + " |")
        if chosen is None and verdict == "passed":
            chosen = {"attempt": key, "model": model, "epochs": epochs}
    text = ("Gates: clean training error (un-augmented, evaluation mode) at most "
            f"{MAX_CLEAN_TRAIN_ERROR:g}%; at 80% noise at least {MIN_MEMORISED:g}% of "
            "the corrupted labels fitted. SGD, learning rate 0.1, seed 0.\n\n"
            + "\n".join(lines) + "\n")
    return text, chosen


def read_gated(path: str = GATED_PATH) -> dict:
    """{"model", "epochs"} the gates chose, or BadInputError saying how to get it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadInputError(
            f"{os.path.relpath(path)} does not exist: launch sam_vs_sgd.gates, then python -m "
            "experiments.sam_vs_sgd.gates --root=ROOT") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Records the gates (results/gates.md) "
                                     "and the attempt that passed (gated.json).")
    parser.add_argument("--root", required=True, help="the gates' --root")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                      "results", "gates.md"))
    args = parser.parse_args(argv)
    text, chosen = record(args.root)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    if chosen is None:
        print("error: no attempt has passed both gates yet; gated.json not written",
              file=sys.stderr)
        return 2
    workdir_lib.write_json_atomic(GATED_PATH, chosen)
    print(f"gated: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
