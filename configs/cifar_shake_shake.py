"""Shake-Shake 26 2x96d on CIFAR-10/100: the Shake-Shake rows of Table 1.

ARG (comma-separated, defaults first):
  dataset: cifar10 | cifar100
  aug:     basic | cutout | autoaugment
  method:  sam | sgd                 (sgd is rho = 0)

  python -m sam_jax.main --config=configs/cifar_shake_shake.py:cifar100,autoaugment \
      --workdir=/tmp/shake_c100_aa_sam

Appendix C: LR 0.02, WD 1e-3, rho 0.02 (CIFAR-10) / 0.05 (CIFAR-100), batch 256,
Nesterov 0.9, cosine. 1800 epochs as in the paper's appendix C (not in PAPER.md's
table; the official code's README trains Shake-Shake for 1800 epochs too).
"""

from sam_jax.config_schema import base_config, parse_config_arg

RHO_BY_DATASET = {"cifar10": 0.02, "cifar100": 0.05}
AXES = {
    "dataset": ("cifar10", "cifar100"),
    "aug": ("basic", "cutout", "autoaugment"),
    "method": ("sam", "sgd"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = choice["dataset"]
    config.augmentation = choice["aug"]
    config.model.name = "shake_shake_26_2x96d"
    config.num_epochs = 1800
    config.optimizer.learning_rate = 0.02
    config.optimizer.weight_decay = 1e-3
    config.sam.rho = RHO_BY_DATASET[config.dataset] if choice["method"] == "sam" else 0.0
    config.checkpoint_every_steps = 5000
    return config
