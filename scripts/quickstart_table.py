"""SGD vs SAM on the offline default (digits), clean and with label noise.

    python scripts/quickstart_table.py --seeds=3 --noise=clean,noise40

Runs `python -m sam_jax.main --config=configs/quickstart.py:METHOD,NOISE` for
every method, noise level and seed (finished runs are skipped, unfinished ones
resume), then writes the table of test accuracy (mean +- std over seeds) to
experiments/quickstart/results.md and the per-run numbers to results.json.
"""

import json
import os
import subprocess
import sys

import numpy as np
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per cell (0 .. seeds-1).")
_NOISE = flags.DEFINE_list("noise", ["clean", "noise40"], "Label-noise settings.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "/tmp/sam_quickstart_table",
                                    "Where the runs' workdirs go.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", os.path.join(REPO, "experiments", "quickstart"),
    "Where results.md and results.json are written.")
METHODS = ("sgd", "sam")


def run_command(method, noise, seed, workdir):
    return [sys.executable, "-m", "sam_jax.main",
            f"--config=configs/quickstart.py:{method},{noise}",
            f"--workdir={workdir}", f"--config.seed={seed}",
            f"--config.label_noise_seed={seed}"]


def main(argv):
    del argv
    runs = []
    for noise in _NOISE.value:
        for method in METHODS:
            for seed in range(_SEEDS.value):
                workdir = os.path.join(_WORKDIR_ROOT.value, f"{method}_{noise}_seed{seed}")
                command = run_command(method, noise, seed, workdir)
                print("$", " ".join(command), flush=True)
                subprocess.run(command, cwd=REPO, check=True)
                with open(os.path.join(workdir, "results.json")) as f:
                    accuracy = 1.0 - json.load(f)["test_error"]
                runs.append(dict(method=method, noise=noise, seed=seed,
                                 test_accuracy=accuracy))

    lines = [
        "Test accuracy (%) on the digits test split (500 images), "
        f"mean +- std over {_SEEDS.value} seeds; configs/quickstart.py "
        "(WRN-16-2, 30 epochs, batch 64, SAM rho 0.1).",
        "",
        "| labels | SGD | SAM |",
        "|---|---|---|",
    ]
    for noise in _NOISE.value:
        cells = []
        for method in METHODS:
            acc = 100 * np.array([r["test_accuracy"] for r in runs
                                  if r["method"] == method and r["noise"] == noise])
            cells.append(f"{acc.mean():.1f} +- {acc.std():.1f} (n={len(acc)})")
        label = "clean" if noise == "clean" else f"{noise[5:]}% symmetric noise"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    command = ("python scripts/quickstart_table.py "
               f"--seeds={_SEEDS.value} --noise={','.join(_NOISE.value)}")
    lines += ["", f"Made by `{command}`."]
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUTPUT_DIR.value, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(_OUTPUT_DIR.value, "results.json"), "w") as f:
        json.dump({"command": command, "runs": runs}, f, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
