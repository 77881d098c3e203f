"""A rho sweep on the digits with 40% label noise: test error % against rho.

rho = 0 is SGD (one pass per step); rho 0 and 0.1 are the label-noise table's
runs (shared workdirs). The paper searched rho in {0.01, 0.02, 0.05, 0.1,
0.2, 0.5} per setting (appendix C); with noisy labels its best rho was 0.1
(0.05 at 80% noise). Clean digits are near 2% error for every rho, too close
to the 500-image test set's resolution to rank them, hence the noisy labels.
"""

from .. import cpu_scale
from sam_jax.reproduce import registry

RHOS = (0.0, 0.05, 0.1, 0.2, 0.5)
NOISE = "noise40"


def rho_key(rho: float) -> str:
    return f"rho{rho:g}"


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or cpu_scale.SEEDS
    by_key = {rho_key(rho): rho for rho in RHOS}

    def runs_for(row, column):
        rho = by_key[row]
        if rho == 0.0:  # the SGD runs of the label-noise table
            return cpu_scale.runs("sgd", NOISE, {}, seeds)
        if rho == 0.1:  # quickstart's rho: the SAM runs of the label-noise table
            return cpu_scale.runs("sam", NOISE, {}, seeds)
        return cpu_scale.runs("sam", NOISE, {"sam.rho": rho}, seeds)

    return registry.grid_table(
        "cpu_scale.rho_sweep", "Digits, 40% label noise, rho sweep: test error %",
        tuple((rho_key(rho), f"rho = {rho:g}") for rho in RHOS),
        ((NOISE, "test error % (40% noise)"),), {}, runs_for)
