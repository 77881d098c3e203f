"""The pilot: SGD against SAM (Table 4's rho) at 3 seeds, clean and noisy labels.

It decides whether the protocol (review_comparison.PROTOCOL) separates the two beyond seed
noise before the full comparison is spent on it.
"""

from .. import review_comparison as study
from sam_jax.reproduce import registry

COLUMNS = (("sgd", "SGD"), ("sam", "SAM (rho 0.1; 0.05 clean and at 80%)"))


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or study.SEEDS

    def runs_for(noise, method):
        # Spelled out as the comparison's grid does, so that its runs at the
        # same values are these (one workdir under one root).
        overrides = ({"sam.rho": study.PAPER_RHO[noise]} if method == "sam"
                     else {"optimizer.learning_rate": 0.1})
        return study.runs(method, noise, overrides, seeds)

    return registry.grid_table(
        "review_comparison.pilot", "Fashion-MNIST pilot: SGD vs SAM, test error %",
        study.CONDITIONS, COLUMNS, {}, runs_for)
