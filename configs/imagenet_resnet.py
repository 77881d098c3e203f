"""ResNet-50/101/152 on ImageNet: Table 2.

ARG (comma-separated, defaults first):
  model:  resnet50 | resnet101 | resnet152
  epochs: 100 | 200 | 400
  method: sam | sgd | sgd2x         (sgd is rho = 0; sgd2x is rho = 0 for twice
                                     the epochs: 100,sgd2x is 200,sgd)

  python -m sam_jax.main --config=configs/imagenet_resnet.py:resnet101,400 \
      --workdir=gs://bucket/r101_400_sam --config.data_dir=/data/tensorflow_datasets

Appendix C: batch 4096, LR 1.0, cosine, momentum 0.9, weight decay 1e-4, label
smoothing 0.1, rho 0.05; Inception crop + flip at 224 for training, resize and
center crop for evaluation; top-1 and top-5 error. ImageNet must be prepared
with its manual download (see the error message when it is missing).

m (examples per perturbation, also each SAM pass's BatchNorm batch) is pinned
to 128: appendix C.1 trains these models "on Google Cloud TPUv3 32 cores with
a batch size of 4096", and the official code perturbs per device (one TPU core
is one JAX device), so m = 4096 / 32. Unset, it would be 4096 / device count.
It runs on 1, 2, 4, 8, 16 or 32 devices (4096 / devices, a multiple of 128).

sgd2x: a SAM step costs two passes. The paper's Table 2 reports SGD at each
epoch budget (it overfits from 200 to 400 epochs, section 3.1);
experiments/table2_imagenet.py shows SGD at twice SAM's epochs beside it.

The test loss is the plain cross-entropy; the official code's evaluation
applies the training's label smoothing (0.1) to it. Test errors, the paper's
numbers, are the same either way (docs_fidelity.md).
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {
    "model": ("resnet50", "resnet101", "resnet152"),
    "epochs": ("100", "200", "400"),
    "method": ("sam", "sgd", "sgd2x"),
}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "imagenet2012"
    config.augmentation = "basic"  # Inception crop + flip
    config.image_size = 224
    config.model.name = choice["model"]
    config.num_epochs = int(choice["epochs"]) * (2 if choice["method"] == "sgd2x" else 1)
    config.batch_size = 4096
    config.sam.examples_per_perturbation = 128  # 4096 / the paper's 32 TPU cores
    config.eval_batch_size = 4096
    config.label_smoothing = 0.1
    config.optimizer.learning_rate = 1.0
    config.optimizer.weight_decay = 1e-4
    config.sam.rho = 0.05 if choice["method"] == "sam" else 0.0
    config.log_every_steps = 100
    config.eval_every_epochs = 5
    config.checkpoint_every_steps = 2000
    return config
