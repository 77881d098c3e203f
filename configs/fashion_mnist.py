"""Fashion-MNIST, offline: the paper's Table 5 WRN setting, and `small`, the
laptop-scale protocol of the comparison studies.

The data come from Debian's `dataset-fashion-mnist` package (the original IDX
files in /usr/share/datasets/fashion-mnist; `apt-get install -y
dataset-fashion-mnist`), or SAM_JAX_FASHION_MNIST_DIR, or a prepared tfds
`fashion_mnist` (sam_jax/data/arrays.py). No TensorFlow is imported on this
path.

ARG (comma-separated, defaults first):
  size:   paper | small
  method: any of sam_jax.methods (sam | sgd | asam | gsam | ...)
  noise:  clean | noise20 | noise40 | noise60 | noise80   (symmetric, train only)

  python -m sam_jax.main --config=configs/fashion_mnist.py:paper,sam \
      --workdir=/tmp/fmnist_wrn_sam

paper: WRN-28-10, 200 epochs, batch 256, m = 32 (the paper's 8 GPUs), LR 0.1
  (cosine), WD 5e-4, rho 0.05, basic augmentation (crop with padding 4 and
  flip); Table 5: SAM 3.98% vs SGD 4.57% test error.
small: WRN-10-1 on a fixed subset (the first 4,000 training images), batch
  128, 10 epochs (310 steps), m = per-device batch, the same LR, WD and rho;
  evaluated once, at the end, on the full 10,000-image test set. Protocol a
  of experiments/review_comparison's pilot (its README has the pilot's SGD
  and SAM errors; the comparison itself runs a cheaper protocol).
"""

from sam_jax import methods
from sam_jax.config_schema import base_config, parse_config_arg

AXES = {
    "size": ("paper", "small"),
    "method": tuple(methods.METHODS),
    "noise": ("clean", "noise20", "noise40", "noise60", "noise80"),
}
# Move "sam" first: the default method.
AXES["method"] = ("sam",) + tuple(m for m in AXES["method"] if m != "sam")


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "fashion_mnist"
    config.augmentation = "basic"
    config.method = choice["method"]
    config.label_noise = (0.0 if choice["noise"] == "clean"
                          else int(choice["noise"][5:]) / 100)
    config.optimizer.learning_rate = 0.1
    config.optimizer.weight_decay = 5e-4
    config.sam.rho = 0.05
    if choice["size"] == "paper":
        config.model.name = "wrn28_10"
        config.num_epochs = 200
        config.batch_size = 256
        config.sam.examples_per_perturbation = 32
        config.checkpoint_every_steps = 5000
    else:
        config.model.name = "wrn10_1"
        config.train_subset = 4000
        config.num_epochs = 10
        config.batch_size = 128
        config.eval_batch_size = 1000
        config.log_every_steps = 31
        config.eval_every_epochs = 10
        config.checkpoint_every_steps = 155
    return config
