"""WideResNet-40-10 without BatchNorm on CIFAR-10: the Hessian study of Figure 3.

ARG picks the method (default first):
  method:   sam | sgd           (sgd is rho = 0)

  python -m sam_jax.main --config=configs/hessian.py:sam --workdir=/tmp/hessian_sam

The paper reports lambda_max and lambda_max / lambda_5 of the training loss's
Hessian at epochs 1, 50 and 300; this config logs them (Lanczos, split
"sharpness" of metrics.jsonl) after epoch 1 and every 50 epochs, which
experiments/figure3_hessian.py reads.

Paper: WRN-40-10 without BatchNorm, CIFAR-10, 300 epochs, Lanczos. It gives no
other hyper-parameter for this study; ours are Table 1's CIFAR-10 WRN settings
(batch 256, SGD Nesterov 0.9, cosine, LR 0.1, WD 5e-4, rho 0.05, basic
augmentation) and a 1,024-example fixed subset with 20 Lanczos iterations.

m (examples per perturbation) is pinned to 32 = 256 / 8, the per-device batch
of the paper's 8-GPU runs (no BatchNorm here, so m only groups the
perturbations). Unset, it would be 256 / device count.
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {"method": ("sam", "sgd")}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "cifar10"
    config.augmentation = "basic"
    config.model.name = "wrn40_10_nobn"
    config.num_epochs = 300
    config.optimizer.learning_rate = 0.1
    config.optimizer.weight_decay = 5e-4
    config.sam.rho = 0.05 if choice["method"] == "sam" else 0.0
    config.batch_size = 256
    config.sam.examples_per_perturbation = 32  # 256 / the paper's 8 GPUs
    config.log_every_steps = 100
    config.eval_every_epochs = 10
    config.checkpoint_every_steps = 2000
    config.sharpness.every_epochs = 50
    config.sharpness.num_examples = 1024
    config.sharpness.top_k = 5
    config.sharpness.num_iterations = 20
    return config
