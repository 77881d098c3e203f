"""Figure 3 (left): CIFAR-10 test error % of SAM as a function of m.

m = examples per perturbation (--config.sam.examples_per_perturbation), small
ResNet. The paper shows a plot (smaller m, lower error), not numbers: the cells
have no paper value. 1 seed by default.

  python -m sam_jax.reproduce plan --table=figure3_m_sharpness --root=/tmp/fig3m
"""

from sam_jax.reproduce import registry

SEEDS = 1
M_VALUES = ("1", "4", "16", "64", "256")


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    rows = [(f"m{m}", f"m = {m}") for m in M_VALUES]

    def runs_for(row, column):
        return registry.seeded_runs(f"configs/m_sharpness.py:{row}", seeds=seeds)

    return registry.grid_table(
        "figure3_m_sharpness", "Figure 3: m-sharpness, CIFAR-10 test error %", rows,
        (("sam", "SAM"),), {}, runs_for,
        notes="Paper (a plot, no numbers): smaller m gives lower test error.")
