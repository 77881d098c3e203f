"""SAM over AdamW against AdamW alone on a micro ViT (configs/fashion_mnist_vit.py),
3 seeds: runs, resumes and collects.

    taskset -c 1 python -m experiments.vit_fashion_mnist.study run      # or resume
    python -m experiments.vit_fashion_mnist.study collect               # results.json, table.md

`run` trains the missing runs one after another (seed by seed, AdamW then SAM,
so a partial study is balanced), each with `python -m sam_jax.main`, which
resumes a run from its last checkpoint in its workdir (runs/METHOD_seedS); a
run with a results.json is done and skipped. `collect` writes results.json
(each finished run's final numbers) and table.md from the runs' results.json
files, or, for a run with no local workdir (runs/ is not committed), from its
entry in the committed results.json; it is the one command that makes the table.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RUNS = os.path.join(HERE, "runs")
CONFIG = "configs/fashion_mnist_vit.py"
METHODS = ("adamw", "sam")  # the config's ARG: AdamW alone, SAM (rho 0.05) over AdamW
SEEDS = (0, 1, 2)


def workdir(method: str, seed: int) -> str:
    return os.path.join(RUNS, f"{method}_seed{seed}")


def command(method: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "sam_jax.main", f"--config={CONFIG}:{method}",
            f"--workdir={workdir(method, seed)}", f"--config.seed={seed}"]


RECORD = os.path.join(HERE, "results.json")  # committed; runs/ is not


def read_results(method: str, seed: int):
    """The run's results.json in its local workdir, else its line in the
    committed RECORD (a fresh checkout has no runs/), else None."""
    path = os.path.join(workdir(method, seed), "results.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if os.path.exists(RECORD):
        with open(RECORD) as f:
            for entry in json.load(f)["runs"]:
                if (entry["method"], entry["seed"]) == (method, seed):
                    return entry
    return None


def run(seeds) -> None:
    os.makedirs(RUNS, exist_ok=True)
    for seed in seeds:
        for method in METHODS:
            if read_results(method, seed) is not None:
                print(f"{method} seed {seed}: done", flush=True)
                continue
            os.makedirs(workdir(method, seed), exist_ok=True)
            cmd = command(method, seed)
            print("$ " + " ".join(cmd), flush=True)
            with open(os.path.join(workdir(method, seed), "launch.log"), "a") as log:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            if code:
                sys.exit(f"{method} seed {seed} exited {code}; see its launch.log, "
                         "run the same command to resume")


def collect() -> dict:
    """{"runs": [...finished runs...], "summary": {method: ...}, "paired": ...}."""
    runs = []
    for method in METHODS:
        for seed in SEEDS:
            results = read_results(method, seed)
            if results is not None:
                runs.append({"method": method, "seed": seed,
                             "test_error": results["test_error"],
                             "test_loss": results["test_loss"],
                             "steps": results["steps"],
                             "gradient_evaluations": results["gradient_evaluations"],
                             "train_seconds": results["train_seconds"]})
    summary = {}
    for method in METHODS:
        errors = [r["test_error"] for r in runs if r["method"] == method]
        seconds = [r["train_seconds"] for r in runs if r["method"] == method]
        if errors:
            summary[method] = {
                "seeds": len(errors), "mean_test_error": float(np.mean(errors)),
                "std_test_error": float(np.std(errors, ddof=1)) if len(errors) > 1 else None,
                "mean_train_seconds": float(np.mean(seconds))}
    error = {(r["method"], r["seed"]): r["test_error"] for r in runs}
    both = [s for s in SEEDS if ("sam", s) in error and ("adamw", s) in error]
    differences = [error[("sam", s)] - error[("adamw", s)] for s in both]
    paired = {"seeds": both, "sam_minus_adamw": differences,
              "mean": float(np.mean(differences)) if differences else None,
              "sam_lower": sum(d < 0 for d in differences)}
    return {"config": CONFIG, "runs": runs, "summary": summary, "paired": paired}


def table(collected: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    lines = ["| method | seeds | test error % (mean) | std % | per seed % | train s (mean) |",
             "|---|---|---|---|---|---|"]
    for method, label in (("adamw", "AdamW"), ("sam", "SAM (rho 0.05) over AdamW")):
        s = collected["summary"].get(method)
        if not s:
            lines.append(f"| {label} | 0 | - | - | - | - |")
            continue
        per_seed = ", ".join(pct(r["test_error"]) for r in collected["runs"]
                             if r["method"] == method)
        lines.append(f"| {label} | {s['seeds']} | {pct(s['mean_test_error'])} | "
                     f"{pct(s['std_test_error'])} | {per_seed} | "
                     f"{s['mean_train_seconds']:.0f} |")
    p = collected["paired"]
    if p["seeds"]:
        lines += ["", f"SAM minus AdamW, paired by seed (seeds {p['seeds']}): "
                  + ", ".join(f"{100 * d:+.2f}" for d in p["sam_minus_adamw"])
                  + f" points; mean {100 * p['mean']:+.2f}; SAM lower on "
                  f"{p['sam_lower']} of {len(p['seeds'])} seeds."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "collect"))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args(argv)
    if args.action == "run":
        seeds = [int(s) for s in args.seeds.split(",")]
        bad = [s for s in seeds if s not in SEEDS]
        if bad:
            print(f"error: --seeds: {bad[0]} is not one of the study's seeds "
                  f"{', '.join(map(str, SEEDS))}", file=sys.stderr)
            sys.exit(2)
        run(seeds)
    collected = collect()
    with open(RECORD, "w") as f:
        json.dump(collected, f, indent=2)
        f.write("\n")
    text = table(collected)
    with open(os.path.join(HERE, "table.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
