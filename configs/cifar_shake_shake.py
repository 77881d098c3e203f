"""Shake-Shake 26 2x96d on CIFAR-10/100: the Shake-Shake rows of Table 1.

ARG (comma-separated, defaults first):
  dataset: cifar10 | cifar100
  aug:     basic | cutout | autoaugment
  method:  sam | sgd | sgd2x         (sgd is rho = 0; sgd2x also twice the epochs)

  python -m sam_jax.main --config=configs/cifar_shake_shake.py:cifar100,autoaugment \
      --workdir=/tmp/shake_c100_aa_sam

Appendix C: LR 0.02, WD 1e-3, rho 0.02 (CIFAR-10) / 0.05 (CIFAR-100), batch 256,
Nesterov 0.9, cosine. 1800 epochs as in the paper's appendix C (not in PAPER.md's
table; the official code's README trains Shake-Shake for 1800 epochs too).

m (examples per perturbation, also the BatchNorm batch of each pass, SGD's
included) is pinned to 32 = 256 / 8: the paper trained on 8 V100s and the
official code perturbs per device. Unset, it would be 256 / device count.

sgd2x: each SAM step costs two forward-backward passes, so the paper let each
non-SAM run train twice as many epochs and reported the better of the two
(section 3.1).

Cutout cuts one 16 px square per image, each drawn on its own (as DeVries &
Taylor); the official code cuts one square at the same place in all the images
of a batch. Per image keeps each image's augmentation independent of the batch
and host layout (docs_fidelity.md).
"""

from sam_jax.config_schema import base_config, parse_config_arg

RHO_BY_DATASET = {"cifar10": 0.02, "cifar100": 0.05}
AXES = {
    "dataset": ("cifar10", "cifar100"),
    "aug": ("basic", "cutout", "autoaugment"),
    "method": ("sam", "sgd", "sgd2x"),
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
    if choice["method"] == "sgd2x":
        config.num_epochs *= 2
    config.batch_size = 256
    config.sam.examples_per_perturbation = 32  # 256 / the paper's 8 GPUs
    config.checkpoint_every_steps = 5000
    return config
