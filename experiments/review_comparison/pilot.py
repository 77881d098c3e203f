"""The pilot: SGD against SAM (Table 4's rho) at 3 seeds, clean and noisy labels,
for each protocol in review_comparison.PILOT_PROTOCOLS.

It decides which protocol separates the two beyond seed noise before the full
comparison is spent on it (`--rows=b_noise40` launches one row).
"""

from .. import review_comparison as study
from sam_jax.reproduce import registry

COLUMNS = (("sgd", "SGD"), ("sam", "SAM (rho 0.1; 0.05 clean and at 80%)"))
ROWS = tuple((f"{key}_{noise}", f"{label}: {noise_label}")
             for key, (label, _) in study.PILOT_PROTOCOLS.items()
             for noise, noise_label in study.CONDITIONS)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or study.SEEDS

    def runs_for(row, method):
        key, noise = row.split("_", 1)
        # Spelled out as the comparison's grid does, so that its runs at the
        # same values are these (one workdir under one root).
        overrides = ({"sam.rho": study.PAPER_RHO[noise]} if method == "sam"
                     else {"optimizer.learning_rate": 0.1})
        return study.runs(method, noise, overrides, seeds,
                          protocol=study.PILOT_PROTOCOLS[key][1])

    return registry.grid_table(
        "review_comparison.pilot", "Fashion-MNIST pilot: SGD vs SAM, test error %",
        ROWS, COLUMNS, {}, runs_for)
