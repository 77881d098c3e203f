"""Label noise on CIFAR-10 with ResNet-32, 200 epochs: Table 4's SGD and SAM rows.

ARG (comma-separated, defaults first):
  noise:  noise20 | noise40 | noise60 | noise80   (symmetric, training labels only)
  method: sam | sgd                               (sgd is rho = 0)

  python -m sam_jax.main --config=configs/label_noise.py:noise80,sam --workdir=/tmp/ln80

The paper: rho 0.1, except 0.05 at 80% noise; clean test accuracy is reported.
Learning rate and weight decay are not in PAPER.md: 0.1 and 5e-4 here (the WRN
CIFAR defaults), batch 256, Nesterov 0.9, cosine, basic augmentation.
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {
    "noise": ("noise20", "noise40", "noise60", "noise80"),
    "method": ("sam", "sgd"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "cifar10"
    config.augmentation = "basic"
    config.label_noise = int(choice["noise"][5:]) / 100
    config.model.name = "resnet32"
    config.num_epochs = 200
    config.optimizer.learning_rate = 0.1
    config.optimizer.weight_decay = 5e-4
    rho = 0.05 if config.label_noise == 0.8 else 0.1
    config.sam.rho = rho if choice["method"] == "sam" else 0.0
    return config
