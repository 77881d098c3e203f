"""Finetuning a pretrained EfficientNet with and without SAM: Table 3.

ARG (comma-separated, defaults first):
  model:   efficientnet_b7 | efficientnet_l2 | efficientnet_l2_475 |
           efficientnet_b0 .. efficientnet_b6 | efficientnet_tiny (tests)
  dataset: fgvc_aircraft | oxford_flowers102 | oxford_iiit_pet | stanford_cars |
           cifar10 | cifar100 | birdsnap | food101 | imagenet2012
  method:  sam | sgd | sgd2x         (sgd is rho = 0; sgd2x also twice the steps,
                                     or on ImageNet twice the epochs)

The pretrained weights are required: convert a released TF checkpoint once,
then point the run at it (see scripts/convert_efficientnet_checkpoint.py):

  python scripts/convert_efficientnet_checkpoint.py \
      --checkpoint=/ckpt/noisy_student_efficientnet-b7/model.ckpt \
      --model=efficientnet_b7 --output=/ckpt/efficientnet_b7.msgpack
  python -m sam_jax.main --config=configs/finetune.py:efficientnet_b7,oxford_flowers102,sam \
      --config.pretrained.path=/ckpt/efficientnet_b7.msgpack --workdir=/tmp/b7_flowers_sam

Supported checkpoint formats (config.pretrained.format, see sam_jax/pretrained.py):
"msgpack", a {"params", "batch_stats"} file as the conversion script writes it
from the released TF1 EfficientNet checkpoints (tensorflow/tpu
models/official/efficientnet, their ExponentialMovingAverage weights), and
"orbax", a run of this trainer (its workdir or a checkpoints/STEP directory).
The TF checkpoints themselves are not read by the trainer.

Paper (appendix C): weight decay 1e-5, LR 0.016 with batch 1024 (L2: LR 0.008,
batch 512), 5k steps, cosine schedule, BatchNorm statistics frozen; on ImageNet
10 epochs at LR 0.1; rho 0.05. Each model trains and evaluates at its own
resolution (B7 600 px, L2 800 px, L2-475 475 px); CIFAR's 32 px images are
augmented as usual (pad, crop, flip) and then resized up to it. The head is
re-initialised for the data set's classes; the rest starts from the checkpoint.

m (examples per perturbation) is pinned to the per-core batch of the paper's
runs, since the official code perturbs per device (one TPU core is one JAX
device). Appendix C.2: B7 "batch size of 1024 on Google Cloud TPUv3 64
cores", so m = 16; L2 batch 512 on "TPUv3 128 cores", so m = 4 (the smaller
B models here take the B7 setting). BatchNorm is frozen, so m only groups the
perturbations. The groups run one after another (sam.group_map
"sequential"): a device holds the activations of m images at a time, as a
TPU core did, and one gradient sum instead of one per group.

sgd2x is SGD at SAM's cost in passes (twice the steps). The paper does not
run it for Table 3; experiments/table3_finetuning.py adds it beside.
"""

from sam_jax.config_schema import base_config, parse_config_arg
from sam_jax.models import DEFAULT_INPUT_SHAPES, MODELS

EFFICIENTNETS = tuple(name for name in MODELS if name.startswith("efficientnet_"))
L2_MODELS = ("efficientnet_l2", "efficientnet_l2_475")
AXES = {
    "model": ("efficientnet_b7", "efficientnet_l2", "efficientnet_l2_475") + tuple(
        m for m in EFFICIENTNETS if m not in ("efficientnet_b7",) + L2_MODELS),
    "dataset": ("fgvc_aircraft", "oxford_flowers102", "oxford_iiit_pet",
                "stanford_cars", "cifar10", "cifar100", "birdsnap", "food101",
                "imagenet2012"),
    "method": ("sam", "sgd", "sgd2x"),
}
STEPS = 5000
RHO = 0.05
WEIGHT_DECAY = 1e-5
# model -> (batch size, learning rate, TPU cores) of the 5k-step finetuning.
BATCH_LEARNING_RATE_CORES = {"b": (1024, 0.016, 64), "l2": (512, 0.008, 128)}
IMAGENET_EPOCHS = 10
IMAGENET_LEARNING_RATE = 0.1


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.model.name = choice["model"]
    config.dataset = choice["dataset"]
    config.augmentation = "basic"  # Inception crop + flip; CIFAR: pad-crop-flip
    config.image_size = DEFAULT_INPUT_SHAPES[config.model.name][0]

    config.pretrained.required = True  # --config.pretrained.path=... (see above)
    config.pretrained.format = "msgpack"
    config.freeze_batch_norm = True

    batch_size, learning_rate, cores = BATCH_LEARNING_RATE_CORES[
        "l2" if config.model.name in L2_MODELS else "b"]
    config.batch_size = batch_size
    config.sam.examples_per_perturbation = batch_size // cores  # 16, L2: 4
    config.sam.group_map = "sequential"
    config.eval_batch_size = batch_size
    config.optimizer.weight_decay = WEIGHT_DECAY
    config.optimizer.schedule = "cosine"
    config.sam.rho = RHO if choice["method"] == "sam" else 0.0
    length = 2 if choice["method"] == "sgd2x" else 1
    if config.dataset == "imagenet2012":
        config.num_epochs = IMAGENET_EPOCHS * length
        config.optimizer.learning_rate = IMAGENET_LEARNING_RATE
        config.eval_every_epochs = 5
        config.checkpoint_every_steps = 1000
    else:
        config.num_steps = STEPS * length
        config.optimizer.learning_rate = learning_rate
        # An epoch is at least one step: evaluation only at the end (on the
        # small sets a 10-epoch interval would evaluate every few steps).
        config.eval_every_epochs = config.num_steps
        config.checkpoint_every_steps = 500
    config.log_every_steps = 50
    return config
