"""PyramidNet-272 (alpha 200, bottleneck) on CIFAR-10/100, vanilla or with
ShakeDrop: the PyramidNet rows of Table 1.

ARG (comma-separated, defaults first):
  dataset: cifar10 | cifar100
  aug:     basic | cutout | autoaugment
  variant: vanilla | shakedrop
  method:  sam | sgd | sgd2x         (sgd is rho = 0; sgd2x also twice the epochs)

  python -m sam_jax.main --config=configs/cifar_pyramidnet.py:cifar10,autoaugment,shakedrop \
      --workdir=/tmp/pyramid_sd_c10_aa_sam

Appendix C: vanilla LR 0.05, WD 5e-4, rho 0.05 / 0.2 (CIFAR-10 / -100);
+ShakeDrop LR 0.02 / 0.05, WD 5e-4, rho 0.05 / 0.05. Batch 256, Nesterov 0.9,
cosine, 1800 epochs (the paper's appendix C; not in PAPER.md's table).

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

# (variant, dataset) -> (learning rate, rho)
HYPERPARAMETERS = {
    ("vanilla", "cifar10"): (0.05, 0.05),
    ("vanilla", "cifar100"): (0.05, 0.2),
    ("shakedrop", "cifar10"): (0.02, 0.05),
    ("shakedrop", "cifar100"): (0.05, 0.05),
}
MODEL_BY_VARIANT = {"vanilla": "pyramidnet_272_200",
                    "shakedrop": "pyramidnet_272_200_shakedrop"}
AXES = {
    "dataset": ("cifar10", "cifar100"),
    "aug": ("basic", "cutout", "autoaugment"),
    "variant": ("vanilla", "shakedrop"),
    "method": ("sam", "sgd", "sgd2x"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = choice["dataset"]
    config.augmentation = choice["aug"]
    config.model.name = MODEL_BY_VARIANT[choice["variant"]]
    config.num_epochs = 1800
    lr, rho = HYPERPARAMETERS[(choice["variant"], config.dataset)]
    config.optimizer.learning_rate = lr
    config.optimizer.weight_decay = 5e-4
    config.sam.rho = rho if choice["method"] == "sam" else 0.0
    if choice["method"] == "sgd2x":
        config.num_epochs *= 2
    config.batch_size = 256
    config.sam.examples_per_perturbation = 32  # 256 / the paper's 8 GPUs
    config.checkpoint_every_steps = 5000
    return config
