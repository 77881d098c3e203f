"""The offline default: a small WideResNet with SAM on handwritten digits.

Runs on a laptop with no network in a few minutes: the data set (1,797 8x8
grey digits, fixed 1,297 / 500 train / test split) ships inside scikit-learn.

  python -m sam_jax.main --config=configs/quickstart.py --workdir=/tmp/sam_quickstart

ARG picks the method and the label noise (defaults first):
  method: sam | sgd                 (sgd is rho = 0)
  noise:  clean | noise20 | noise40 | noise60 | noise80
e.g. --config=configs/quickstart.py:sgd,noise40
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {
    "method": ("sam", "sgd"),
    "noise": ("clean", "noise20", "noise40", "noise60", "noise80"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "digits"
    config.augmentation = "basic"  # reflect-pad 1 + random crop; no flip for digits
    config.label_noise = 0.0 if choice["noise"] == "clean" else int(choice["noise"][5:]) / 100
    config.model.name = "wrn16_2"
    config.num_epochs = 30
    config.batch_size = 64
    config.eval_batch_size = 512
    config.optimizer.learning_rate = 0.05
    config.optimizer.weight_decay = 5e-4
    config.sam.rho = 0.1 if choice["method"] == "sam" else 0.0
    config.log_every_steps = 100
    config.eval_every_epochs = 10
    config.checkpoint_every_steps = 200
    return config
