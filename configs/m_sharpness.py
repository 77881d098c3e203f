"""m-sharpness on CIFAR-10 (Figure 3, left): test error against m, the number of
examples each SAM perturbation is computed on.

ARG: m1 | m4 | m16 | m64 | m256

  python -m sam_jax.main --config=configs/m_sharpness.py:m16 --workdir=/tmp/m16

The paper trains "a small ResNet" on CIFAR-10; here ResNet-32, 200 epochs,
batch 256, rho 0.05, basic augmentation (choices not in PAPER.md). m must
divide the per-device batch (256 / device count): m256 needs a single device,
or use --config.sam.sync_perturbation=True for one perturbation per batch.
"""

from sam_jax.config_schema import base_config, parse_config_arg

AXES = {"m": ("m1", "m4", "m16", "m64", "m256")}


def get_config(arg=None):
    choice = parse_config_arg(arg, AXES)
    config = base_config()
    config.dataset = "cifar10"
    config.augmentation = "basic"
    config.model.name = "resnet32"
    config.num_epochs = 200
    config.sam.rho = 0.05
    config.sam.examples_per_perturbation = int(choice["m"][1:])
    # m = 1 runs 256 one-example groups: the sequential map keeps memory flat.
    config.sam.group_map = "sequential" if config.sam.examples_per_perturbation < 16 else "vmap"
    return config
