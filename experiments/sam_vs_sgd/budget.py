"""The study's budget (PROTOCOL.md, "Budget"): the step times of the gated
model on this core, and the core-hours each part of the plan costs.

  taskset -c 0 python -m experiments.sam_vs_sgd.budget \\
      --out=experiments/sam_vs_sgd/results/budget.md

compiles the trainer's SGD step and SAM step (m = 32) of the gated model at
the study's batch and image size (one device, as every run), times
`--steps` steps of each after a warm-up, and multiplies by the steps each
planned run trains. Training seconds only: compilation (about half a minute a
run) and the evaluations are left out. Run it pinned to one quiet core.
"""

import argparse
import importlib.util
import sys
import time

import jax
import numpy as np

from . import gates
from . import grid
from . import main as main_tables
from .. import sam_vs_sgd as study
from sam_jax import declarations
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax.errors import BadInputError
from sam_jax.reproduce import collect
from sam_jax.models import get_model

BUDGET_CORE_HOURS = 15.0  # issue 27


def run_config(run):
    """The config a table run trains with (its file, ARG and overrides)."""
    path, _, arg = declarations.resolve_config(run.config).partition(":")
    spec = importlib.util.spec_from_file_location("study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for key, value in list(run.overrides) + [(k, run.seed) for k in run.seed_keys]:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def seconds_per_step(config, num_steps: int) -> float:
    """The median of `num_steps` timed steps of `config`'s training step."""
    model = get_model(config.model.name, 10, config.dtype)
    mesh = parallel.make_mesh(jax.devices()[:1])
    chain = train.training_chain(config, 1000)
    shape = (config.image_size, config.image_size, 1)
    state = jax.device_put(steps.initial_state(0, model, chain.tx, shape),
                           parallel.replicated(mesh))
    rng = np.random.default_rng(0)
    batch = parallel.global_batch(mesh, {
        "image": rng.standard_normal((config.batch_size,) + shape).astype(np.float32),
        "label": rng.integers(0, 10, config.batch_size).astype(np.int32)})
    key = jax.random.PRNGKey(0)
    step = parallel.shard_train_step(train.train_step_from_config(config, model, chain, 1),
                                     mesh)
    compiled = step.lower(state, batch, key).compile()
    state = jax.block_until_ready(compiled(state, batch, key))  # warm-up
    times = []
    for _ in range(num_steps):
        start = time.perf_counter()
        state = jax.block_until_ready(compiled(state, batch, key))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# Plans, each a set of knobs on the protocol's design: (name, what is cut, noise
# seeds, grid values per method, methods of the noise arm, clean seeds).
ALL_METHODS = tuple(key for key, *_ in main_tables.METHODS)
PRIMARY = ("sgd", "sgd2x", "sam")
PLANS = (
    ("A", "nothing: the protocol as written", None, 5, ALL_METHODS, None),
    ("B", "80% noise: 6 seeds (power for its effect stated, not 2 points)", 6, 5,
     ALL_METHODS, None),
    ("C", "B, and grids of the 3 shared values (SGD lr " + " / ".join(
        map(str, study.SHARED_GRID["sgd"])) + ", SAM rho " + " / ".join(
        map(str, study.SHARED_GRID["sam"])) + ")", 6, 3, ALL_METHODS, None),
    ("D", "C, and late-phase SAM and SWA on clean labels only", 6, 3, PRIMARY, None),
    ("E", "D, and 3 seeds a condition (no power calculation met)", 3, 3, PRIMARY, 3),
)


def per_run_hours(gated: dict, sgd_step: float, sam_step: float) -> dict:
    """Core-hours of one run of each main method."""
    steps_per_run = study.STEPS_PER_EPOCH * gated["epochs"]
    sgd, sam = steps_per_run * sgd_step / 3600, steps_per_run * sam_step / 3600
    late = (1 - study.LATE_SAM_START) * sam + study.LATE_SAM_START * sgd
    return {"sgd": sgd, "sgd2x": 2 * sgd, "sam": sam, "late_sam": late, "swa": sgd}


def plan_hours(gated: dict, sgd_step: float, sam_step: float, noise_seeds, grid_values,
               noise_methods, clean_seeds) -> dict:
    """{part: core-hours} of a plan. The grid's SGD run at 0.1 is the gate's."""
    hours = per_run_hours(gated, sgd_step, sam_step)
    grid_runs = len(study.CONDITIONS) * ((grid_values - 1) * hours["sgd"]
                                         + grid_values * hours["sam"])
    clean = (clean_seeds or study.SEEDS["clean"]) * sum(hours.values())
    noise = ((noise_seeds or study.SEEDS["noise80"])
             * sum(hours[m] for m in noise_methods))
    return {"grids": grid_runs, "clean": clean, "noise80": noise}


def spent_hours(root: str) -> float:
    """Core-hours the gate runs took: their train seconds (wall-clock on a
    shared machine, so an upper bound on the core time they used)."""
    total = 0.0
    for key, *_ in gates.ATTEMPTS:
        for noise, _ in study.CONDITIONS:
            for run in study.runs("sgd", noise, gates.attempt_overrides(key, noise), 1):
                outputs = collect.run_status(run, root).outputs
                seconds = (outputs or {}).get("results", {}).get("train_seconds")
                total += (seconds or 0.0) / 3600
    return total


def report(gated: dict, sgd_step: float, sam_step: float, num_steps: int,
           spent: float) -> str:
    steps_per_run = study.STEPS_PER_EPOCH * gated["epochs"]
    left = BUDGET_CORE_HOURS - spent
    lines = ["# The study's budget", "",
             "Generated by `taskset -c 0 python -m experiments.sam_vs_sgd.budget "
             f"--root=ROOT` on one core: {gated['model']}, batch {study.BATCH}, "
             f"{study.IMAGE_SIZE}x{study.IMAGE_SIZE}, the median of {num_steps} steps; "
             "training seconds only (compilation and evaluations left out).",
             "", f"- SGD step: {1000 * sgd_step:.1f} ms; SAM step (m = {study.SAM_M}): "
             f"{1000 * sam_step:.1f} ms ({sam_step / sgd_step:.2f}x SGD)",
             f"- one run of {gated['epochs']} epochs ({steps_per_run:,} steps): SGD "
             f"{steps_per_run * sgd_step / 60:.1f} min, SAM "
             f"{steps_per_run * sam_step / 60:.1f} min",
             f"- spent on the gates: {spent:.2f} core-hours (their train seconds; "
             f"wall-clock on a shared machine, an upper bound); left of the "
             f"{BUDGET_CORE_HOURS:g}: {left:.2f}", "",
             "| plan | what is cut | grids | clean | 80% noise | total core-hours "
             "| fits what is left |", "|---|---|---|---|---|---|---|"]
    for name, cut, noise_seeds, grid_values, noise_methods, clean_seeds in PLANS:
        parts = plan_hours(gated, sgd_step, sam_step, noise_seeds, grid_values,
                           noise_methods, clean_seeds)
        total = sum(parts.values())
        lines.append(f"| {name} | {cut} | {parts['grids']:.1f} | {parts['clean']:.1f} | "
                     f"{parts['noise80']:.1f} | {total:.1f} | "
                     f"{'yes' if total <= left else f'no ({total / left:.1f}x)'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out")
    parser.add_argument("--root", default="experiments/sam_vs_sgd/runs",
                        help="the study's runs (the gates' train seconds)")
    args = parser.parse_args(argv)
    try:
        gated = gates.read_gated()
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    picks = {noise: {"sgd": 0.1, "sam": 0.05} for noise, _ in study.CONDITIONS}
    (sgd_run,) = main_tables.method_runs("sgd", "clean", picks, gated, (1,))
    (sam_run,) = main_tables.method_runs("sam", "clean", picks, gated, (1,))
    sgd_step = seconds_per_step(run_config(sgd_run), args.steps)
    sam_step = seconds_per_step(run_config(sam_run), args.steps)
    text = report(gated, sgd_step, sam_step, args.steps, spent_hours(args.root))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
