"""WideResNet-28-10 on CIFAR-10/100: every WRN row of the paper's Table 1.

ARG is a comma-separated list; each item picks one axis (defaults first):
  dataset:  cifar10 | cifar100
  aug:      basic | cutout | autoaugment
  epochs:   200 | 1800          (sets LR and weight decay as in appendix C)
  method:   sam | sgd | sgd2x   (sgd is rho = 0; sgd2x is rho = 0 for twice the
                                 epochs, same LR and weight decay)

  python -m sam_jax.main --config=configs/cifar_wrn.py:cifar100,cutout,1800,sam \
      --workdir=/tmp/wrn_c100_cutout_1800_sam

Paper (appendix C): batch 256, SGD Nesterov 0.9, cosine schedule without warm-up,
weight decay as an L2 term, gradient clipping at 5; 200 epochs LR 0.1 WD 5e-4,
1800 epochs LR 0.05 WD 1e-3; rho 0.05 on CIFAR-10 and 0.1 on CIFAR-100.

m (examples per perturbation, also the BatchNorm batch of each SAM pass) is
pinned to 32: the paper trained on one host with 8 V100s (section 3.1) and the
official code perturbs per device, so m = 256 / 8. Left unset, m would be the
per-device batch, 256 / device count: 256 on one GPU, with other results.
Runs on 1, 2, 4 or 8 devices give the same steps; more devices than 8 need
--config.sam.examples_per_perturbation (m must divide the per-device batch).

sgd2x: each SAM step costs two forward-backward passes, so the paper let each
non-SAM run train twice as many epochs and reported the better of the two
(section 3.1); experiments/table1_cifar.py runs both.

Cutout cuts one 16 px square per image, each drawn on its own (as DeVries &
Taylor); the official code cuts one square at the same place in all the images
of a batch. Per image keeps each image's augmentation independent of the batch
and host layout (docs_fidelity.md).
"""

from sam_jax.config_schema import base_config, parse_config_arg

HYPERPARAMETERS_BY_EPOCHS = {  # epochs -> (learning rate, weight decay)
    200: (0.1, 5e-4),
    1800: (0.05, 1e-3),
}
RHO_BY_DATASET = {"cifar10": 0.05, "cifar100": 0.1}
AXES = {
    "dataset": ("cifar10", "cifar100"),
    "aug": ("basic", "cutout", "autoaugment"),
    "epochs": ("200", "1800"),
    "method": ("sam", "sgd", "sgd2x"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = choice["dataset"]
    config.augmentation = choice["aug"]
    config.model.name = "wrn28_10"
    config.num_epochs = int(choice["epochs"])
    lr, wd = HYPERPARAMETERS_BY_EPOCHS[config.num_epochs]
    config.optimizer.learning_rate = lr
    config.optimizer.weight_decay = wd
    config.sam.rho = RHO_BY_DATASET[config.dataset] if choice["method"] == "sam" else 0.0
    if choice["method"] == "sgd2x":
        config.num_epochs *= 2
    config.batch_size = 256
    config.sam.examples_per_perturbation = 32  # 256 / the paper's 8 GPUs
    config.log_every_steps = 100
    config.eval_every_epochs = 10
    config.checkpoint_every_steps = 2000
    return config
