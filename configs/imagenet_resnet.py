"""ResNet-50/101/152 on ImageNet: Table 2.

ARG (comma-separated, defaults first):
  model:  resnet50 | resnet101 | resnet152
  epochs: 100 | 200 | 400
  method: sam | sgd                 (sgd is rho = 0)

  python -m sam_jax.main --config=configs/imagenet_resnet.py:resnet101,400 \
      --workdir=gs://bucket/r101_400_sam --config.data_dir=/data/tensorflow_datasets

Appendix C: batch 4096, LR 1.0, cosine, momentum 0.9, weight decay 1e-4, label
smoothing 0.1, rho 0.05; Inception crop + flip at 224 for training, resize and
center crop for evaluation; top-1 and top-5 error. ImageNet must be prepared
with its manual download (see the error message when it is missing).
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {
    "model": ("resnet50", "resnet101", "resnet152"),
    "epochs": ("100", "200", "400"),
    "method": ("sam", "sgd"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "imagenet2012"
    config.augmentation = "basic"  # Inception crop + flip
    config.image_size = 224
    config.model.name = choice["model"]
    config.num_epochs = int(choice["epochs"])
    config.batch_size = 4096
    config.eval_batch_size = 4096
    config.label_smoothing = 0.1
    config.optimizer.learning_rate = 1.0
    config.optimizer.weight_decay = 1e-4
    config.sam.rho = 0.05 if choice["method"] == "sam" else 0.0
    config.log_every_steps = 100
    config.eval_every_epochs = 5
    config.checkpoint_every_steps = 2000
    return config
