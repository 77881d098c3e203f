"""The grids (PROTOCOL.md, "Methods"): per condition, SGD's learning rate and
SAM's rho over five values each, seed 0, scored by validation error on the
5,000 held-out training images. The gated model and epochs come from
gated.json (gates.py); the SGD run at rate 0.1 is the gate's own run.

  python -m sam_jax.reproduce launch --table=sam_vs_sgd.grid --root=ROOT
  python -m experiments.sam_vs_sgd.pick --root=ROOT      # writes picks.json
"""

from . import gates
from .. import sam_vs_sgd as study
from sam_jax.reproduce import registry

COLUMNS = tuple((f"v{i}", f"value {i + 1}") for i in range(5))
METHODS = {"sgd": ("optimizer.learning_rate", study.SGD_LEARNING_RATES),
           "sam": ("sam.rho", study.SAM_RHOS)}


def method_overrides(method: str, value, noise: str, gated: dict, epochs_scale=1) -> dict:
    """The overrides of `method` ("sgd" or "sam") at its grid value."""
    overrides = study.condition_overrides(noise, gated["model"],
                                          epochs_scale * gated["epochs"])
    if method == "sgd":
        return {**overrides, "optimizer.learning_rate": value}
    return {**overrides, "optimizer.learning_rate": study.SAM_LEARNING_RATE,
            "sam.rho": value, "sam.examples_per_perturbation": study.SAM_M}


def grid_runs(method: str, value, noise: str, gated: dict) -> tuple:
    return study.runs(method, noise, method_overrides(method, value, noise, gated), 1)


def get_table(seeds=None, gated=None, values=None,
              name: str = "sam_vs_sgd.grid") -> registry.Table:
    """`values`: {method: the grid values to run} (default: all five each)."""
    del seeds  # one seed: the grid picks, the main tables measure
    gated = gated or gates.read_gated()
    grids = {method: (key, tuple((values or {}).get(method, all_values)))
             for method, (key, all_values) in METHODS.items()}
    rows = tuple((f"{method}_{noise}", f"{method.upper()}, {label}: {key} "
                  + " / ".join(registry.format_value(v) for v in values))
                 for noise, label in study.CONDITIONS
                 for method, (key, values) in grids.items())
    columns = COLUMNS[:max(len(v) for _, v in grids.values())]

    def runs_for(row, column):
        method, noise = row.split("_", 1)
        return grid_runs(method, grids[method][1][int(column[1:])], noise, gated)

    return registry.grid_table(
        name, f"SAM against SGD, the grids: validation error % "
        f"({gated['model']}, {gated['epochs']} epochs, seed 0)", rows, columns, {},
        runs_for, lambda row, column: "validation_error", unit="validation error %",
        notes="Each row's values are in its label; picks.json records the picks.")
