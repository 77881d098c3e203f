"""The paper's rho search: rho in {0.01, ..., 0.5} on a 10% validation split.

Appendix C: rho was chosen per setting on 10% of the training set held out
(--config.validation_split=True); collect shows the validation error per rho.

  python -m sam_jax.reproduce sweep --sweep=experiments/sweeps/rho_search.py \
      --root=/tmp/rho_search --launcher=local
  python -m sam_jax.reproduce collect --sweep=experiments/sweeps/rho_search.py \
      --root=/tmp/rho_search

Another setting: --base_config=configs/cifar_wrn.py:cifar100,cutout,200,sam.
"""

from sam_jax.reproduce.sweeps import product

CONFIG = "configs/cifar_wrn.py:cifar10,basic,200,sam"
SEEDS = 1
METRIC = "validation_error"
RHOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def get_sweep() -> list[dict]:
    return product({"validation_split": [True], "sam.rho": list(RHOS)})
