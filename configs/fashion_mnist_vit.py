"""A micro ViT on Fashion-MNIST with SAM over AdamW (or AdamW alone): the
laptop-scale counterpart of configs/imagenet_vit.py, trained on one CPU core
in minutes. The data are offline as in configs/fashion_mnist.py.

ARG (comma-separated, defaults first):
  method: sam | adamw               (adamw is rho = 0: AdamW alone)

  python -m sam_jax.main --config=configs/fashion_mnist_vit.py:sam \
      --workdir=/tmp/fmnist_vit_sam

vit_micro4 (width 64, depth 4, 4 heads, MLP 128; 136,906 parameters here)
on the images resized to 16 x 16 (4 x 4 patches: 16 tokens and a class
token; at 28 x 28 a step costs 3x as much), trained on the first 5,000
training images, evaluated once, at the end, on the full 10,000-image test
set. Imagenet_vit's recipe, scaled down (all ours): AdamW b1 0.9, b2 0.999,
peak learning rate 2e-3 after a linear warm-up over the first 10% of the
steps, linear decay to 0, decoupled weight decay 0.05, clipping at global
norm 1.0, batch 128, 12 epochs (468 steps), basic augmentation (random crop
with padding 4 and flip), no dropout; SAM's rho 0.05 with m = the
per-device batch. A run takes minutes on one CPU core; the training seconds
measured on one are in experiments/vit_fashion_mnist/table.md.
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {"method": ("sam", "adamw")}
TRAIN_SUBSET = 5_000
BATCH = 128
EPOCHS = 12


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "fashion_mnist"
    config.augmentation = "basic"
    config.train_subset = TRAIN_SUBSET
    config.image_size = 16
    config.model.name = "vit_micro4"
    config.num_epochs = EPOCHS
    config.batch_size = BATCH
    config.eval_batch_size = 1000
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "linear"
    steps = EPOCHS * (TRAIN_SUBSET // BATCH)
    config.optimizer.warmup_steps = steps // 10
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 0.05
    config.optimizer.grad_clip_norm = 1.0
    config.sam.rho = 0.05 if choice["method"] == "sam" else 0.0
    config.log_every_steps = 39
    config.eval_every_epochs = EPOCHS
    config.checkpoint_every_steps = 117
    return config
