"""SVHN and Fashion-MNIST: Table 5 (WRN-28-10 and Shake-Shake 26 2x96d).

ARG (comma-separated, defaults first):
  dataset: svhn_cropped | fashion_mnist
  model:   wrn | shake_shake
  aug:     basic | autoaugment
  method:  sam | sgd                 (sgd is rho = 0)

  python -m sam_jax.main --config=configs/svhn_fmnist.py:fashion_mnist,shake_shake \
      --workdir=/tmp/fmnist_shake_sam

Appendix C (LR / WD / rho): SVHN WRN 0.01/5e-4/0.01; SVHN Shake-Shake
0.01/5e-4/0.01; F-MNIST WRN 0.1/5e-4/0.05; F-MNIST Shake-Shake 0.1/5e-4/0.02.
Batch 256, Nesterov 0.9, cosine. The number of epochs is not in PAPER.md: 200
here (the WRN CIFAR default); override with --config.num_epochs.
"""

from sam_jax.config_schema import base_config, parse_config_arg

# (dataset, model) -> (learning rate, weight decay, rho)
HYPERPARAMETERS = {
    ("svhn_cropped", "wrn"): (0.01, 5e-4, 0.01),
    ("svhn_cropped", "shake_shake"): (0.01, 5e-4, 0.01),
    ("fashion_mnist", "wrn"): (0.1, 5e-4, 0.05),
    ("fashion_mnist", "shake_shake"): (0.1, 5e-4, 0.02),
}
MODELS = {"wrn": "wrn28_10", "shake_shake": "shake_shake_26_2x96d"}
AXES = {
    "dataset": ("svhn_cropped", "fashion_mnist"),
    "model": ("wrn", "shake_shake"),
    "aug": ("basic", "autoaugment"),
    "method": ("sam", "sgd"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = choice["dataset"]
    config.augmentation = choice["aug"]
    config.model.name = MODELS[choice["model"]]
    config.num_epochs = 200
    lr, wd, rho = HYPERPARAMETERS[(config.dataset, choice["model"])]
    config.optimizer.learning_rate = lr
    config.optimizer.weight_decay = wd
    config.sam.rho = rho if choice["method"] == "sam" else 0.0
    config.checkpoint_every_steps = 5000
    return config
