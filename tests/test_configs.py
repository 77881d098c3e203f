"""The files in configs/: each loads and validates, every config behind every
paper table builds and validates, and one SAM step of each model family runs
at a shrunken size on CPU.

Hyper-parameters are checked against numbers typed from PAPER.md, not read
from the config files.
"""

import glob
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import REPO
from helpers import load_any_table
from helpers import load_config
from helpers import load_module
from helpers import slow_except
from sam_jax import data
from sam_jax import parallel
from sam_jax import reproduce
from sam_jax import steps
from sam_jax import train
from sam_jax import validate
from sam_jax.models import get_model


# ------------------------------------------------------------ every config

@pytest.mark.parametrize("path", sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "[!_]*.py"))))
def test_every_config_loads_and_validates(path):
    config = load_config(path)
    config.lock()
    validate.validate_config(config, num_devices=8)


def test_cifar_wrn_config_has_the_papers_hyperparameters():
    c = load_config("configs/cifar_wrn.py:cifar100,cutout,1800,sam")
    assert (c.dataset, c.augmentation, c.num_epochs) == ("cifar100", "cutout", 1800)
    assert (c.optimizer.learning_rate, c.optimizer.weight_decay, c.sam.rho) == (
        0.05, 1e-3, 0.1)
    assert (c.batch_size, c.optimizer.grad_clip_norm, c.optimizer.nesterov) == (
        256, 5.0, True)
    assert load_config("configs/cifar_wrn.py:sgd").sam.rho == 0.0
    with pytest.raises(ValueError, match="unknown config arg 'cifar1000'"):
        load_config("configs/cifar_wrn.py:cifar1000")


def test_imagenet_vit_config_has_chen_et_als_hyperparameters():
    # Typed from Chen, Hsieh & Gong (ICLR 2022) and big_vision's GSAM
    # baseline config (batch 4096, 300 epochs, lr 3e-3, 10k warm-up steps,
    # wd 0.3 "effective wd=0.3*lr", clipping 1.0); rho as the config's
    # docstring says (B/16 0.2, S/16 0.1, to be checked against the paper).
    c = load_config("configs/imagenet_vit.py:vit_b16,sam")
    assert (c.dataset, c.image_size, c.model.name) == ("imagenet2012", 224, "vit_b16")
    assert (c.batch_size, c.num_epochs, c.optimizer.name) == (4096, 300, "adamw")
    assert (c.optimizer.learning_rate, c.optimizer.warmup_steps,
            c.optimizer.weight_decay, c.optimizer.grad_clip_norm) == (3e-3, 10_000, 0.3, 1.0)
    assert (c.optimizer.b1, c.optimizer.b2, c.sam.rho) == (0.9, 0.999, 0.2)
    assert load_config("configs/imagenet_vit.py:vit_s16").sam.rho == 0.1
    assert load_config("configs/imagenet_vit.py:vit_b16,adamw").sam.rho == 0.0
    with pytest.raises(ValueError, match="unknown config arg 'vit_l16'"):
        load_config("configs/imagenet_vit.py:vit_l16")


# ------------------------------------------------------------ m, pinned

# m = examples per perturbation = the official code's per-device batch on the
# paper's hardware, typed from the paper: batch 256 on 8 V100s (section 3.1);
# ImageNet batch 4096 on 32 TPUv3 cores (appendix C.1); finetuning B7 batch
# 1024 on 64 cores, L2 batch 512 on 128 cores (appendix C.2).
PAPER_M = {"configs/cifar_wrn.py": 32, "configs/cifar_shake_shake.py": 32,
           "configs/cifar_pyramidnet.py": 32, "configs/svhn_fmnist.py": 32,
           "configs/label_noise.py": 32, "configs/hessian.py": 32,
           "configs/imagenet_resnet.py": 128}


def every_arg(path):
    """Every ARG of a config file: one value of each axis."""
    axes = load_module(path).AXES
    return [",".join(values) for values in itertools.product(*axes.values())]


@pytest.mark.parametrize("path", sorted(PAPER_M))
def test_paper_configs_pin_m_whatever_the_device_count(path):
    for arg in every_arg(path):
        config = load_config(f"{path}:{arg}")
        assert config.sam.examples_per_perturbation == PAPER_M[path], arg
        for devices in (1, 2, 4, 8):
            validate.validate_config(config, devices)
    with pytest.raises(validate.ConfigError, match=(
            f"examples_per_perturbation={PAPER_M[path]} must divide the per-device")):
        validate.validate_config(config, 64)  # a per-device batch below m


def test_finetune_configs_pin_the_papers_per_core_batch():
    for arg in every_arg("configs/finetune.py"):
        config = load_config(f"configs/finetune.py:{arg}")
        want = 4 if arg.startswith("efficientnet_l2") else 16  # 512 / 128, 1024 / 64
        assert config.sam.examples_per_perturbation == want, arg
        assert config.sam.group_map == "sequential"
        for devices in (1, 2, 4, 8):
            validate.validate_config(config, devices)


# ------------------------------------------------------------ every table run

def run_config(run):
    """The locked config a table run trains with (as --config.KEY=VALUE sets it)."""
    config = load_config(run.config)
    config.lock()
    for key, value in list(run.overrides) + [(k, run.seed) for k in run.seed_keys]:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.mark.parametrize("table", reproduce.TABLES)
def test_every_table_run_config_builds_and_validates(table, tmp_path):
    runs = load_any_table(table).runs()
    assert runs
    fake_checkpoint = tmp_path / "pretrained.msgpack"
    fake_checkpoint.write_bytes(b"")
    for run in runs:
        config = run_config(run)
        # Runs with m above the per-device batch on 8 devices (m-sharpness,
        # m = 64 or 256) are single-device runs, as their configs say.
        m = config.sam.examples_per_perturbation
        single_device = m is not None and (config.batch_size // 8) % m != 0
        validate.validate_config(config, num_devices=1 if single_device else 8)
        if config.pretrained.required:  # finetuning: the table names the file
            assert config.pretrained.path == f"pretrained/{config.model.name}.msgpack"
            with pytest.raises(validate.ConfigError, match="pretrained/efficientnet_"):
                validate.validate_pretrained(config)  # not converted here
            config.pretrained.path = str(fake_checkpoint)
        validate.validate_pretrained(config)


def test_svhn_fmnist_aa_rows_are_appendix_b1s_augmentations():
    # "For auto-augment, we use the best policy found on this dataset [...] plus
    # cutout. For Fashion-MNIST, the auto-augmentation line correspond to
    # cutout only." (appendix B.1)
    for arg, augmentation in [("svhn_cropped,wrn,basic", "basic"),
                              ("svhn_cropped,shake_shake,autoaugment", "autoaugment_cutout"),
                              ("fashion_mnist,wrn,basic", "basic"),
                              ("fashion_mnist,shake_shake,autoaugment", "cutout")]:
        assert load_config(f"configs/svhn_fmnist.py:{arg}").augmentation == augmentation
    assert data.get_spec("svhn_cropped").autoaugment_policy == "svhn"


@pytest.mark.parametrize("arg, batch, lr, image_size", [
    ("efficientnet_b7,oxford_iiit_pet,sam", 1024, 0.016, 600),
    ("efficientnet_l2,stanford_cars,sgd", 512, 0.008, 800),
    ("efficientnet_l2_475,cifar100,sam", 512, 0.008, 475),
])
def test_finetune_config_has_the_papers_hyperparameters(arg, batch, lr, image_size):
    config = load_config(f"configs/finetune.py:{arg}")
    assert (config.batch_size, config.optimizer.learning_rate, config.image_size) == (
        batch, lr, image_size)
    assert (config.num_steps, config.optimizer.weight_decay, config.optimizer.schedule) == (
        5000, 1e-5, "cosine")
    assert config.sam.rho == (0.05 if arg.endswith("sam") else 0.0)
    assert config.freeze_batch_norm and config.pretrained.required
    imagenet = load_config("configs/finetune.py:efficientnet_b7,imagenet2012,sam")
    assert (imagenet.num_steps, imagenet.num_epochs, imagenet.optimizer.learning_rate,
            imagenet.sam.rho) == (None, 10, 0.1, 0.05)
    with pytest.raises(ValueError, match="unknown config arg 'efficientnet_b9'"):
        load_config("configs/finetune.py:efficientnet_b9")


# ------------------------------------------------------------ one step per family

# family -> (a table row's config, the small registered model of the family).
FAMILIES = {
    "wrn": ("configs/cifar_wrn.py:cifar10,autoaugment,200,sam", "wrn10_1"),
    "shake_shake": ("configs/cifar_shake_shake.py:cifar100,cutout,sam",
                    "shake_shake_8_2x16d"),
    "pyramidnet_shakedrop": ("configs/cifar_pyramidnet.py:cifar100,basic,shakedrop,sam",
                             "pyramidnet_11_24_shakedrop"),
    "resnet_imagenet": ("configs/imagenet_resnet.py:resnet50,100,sam", "resnet_tiny"),
    "efficientnet": ("configs/finetune.py:efficientnet_b7,oxford_flowers102,sam",
                     "efficientnet_tiny"),
    "vit": ("configs/imagenet_vit.py:vit_b16,sam", "vit_micro4"),
}


def quick_variables(model, image_shape, seed=0):
    """The model's variables, from their shapes (jax.eval_shape computes
    nothing) filled with fan-in scaled normals, BN scale / var 1, bias / mean 0.

    The real initialisers compile op by op for longer than the step itself
    on CPU (~10-25 s per model here); their values are not what this tests.
    """
    key = jax.random.PRNGKey(seed)
    shapes = jax.eval_shape(
        lambda x: model.init({"params": key, "dropout": key}, x, train=False),
        jnp.zeros((1,) + tuple(image_shape)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    return variables["params"], variables.get("batch_stats", {})


# wrn in the suite; each family's small model steps in test_models.py too.
@pytest.mark.parametrize("family", slow_except(FAMILIES, ("wrn",)))
def test_one_sam_step_of_each_model_family(family):
    config_and_arg, small_model = FAMILIES[family]
    config = load_config(config_and_arg)
    assert config.sam.rho > 0
    # Shrunk: the family's small model, 2 examples on each of the 8 devices,
    # 32 px images. Data (mock tfds), augmentation, optimizer and SAM settings
    # are the row's.
    config.model.name = small_model
    config.batch_size = 16
    config.sam.examples_per_perturbation = 2  # the configs pin the paper's m
    if config.image_size:
        config.image_size = 32
    config.optimizer.warmup_steps = 0  # a warm-up's first step has rate 0
    validate.validate_config(config, jax.device_count())
    mesh = parallel.make_mesh()
    with tfds.testing.mock_data(num_examples=16):
        inputs = data.prepare_inputs(config, mesh, steps.AXIS)
        batch = next(inputs.train_batches(0, 1))
    model = get_model(small_model, inputs.spec.num_classes)
    chain = train.training_chain(config, total_steps=100)
    params, batch_stats = quick_variables(model, inputs.image_shape)
    state = steps.new_train_state(params, batch_stats, chain.tx.init(params))
    before = jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats))
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, jax.device_count()), mesh)
    state = step(jax.device_put(jax.tree_util.tree_map(jnp.copy, state),
                                parallel.replicated(mesh)),
                 batch, jax.random.PRNGKey(0))
    metrics = jax.device_get(state.metrics_sum)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["clean_loss"])
    assert metrics["grad_norm"] > 0
    assert all(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(before[0])))
    stats_changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(state.batch_stats), jax.tree_util.tree_leaves(before[1]))]
    # Finetuning freezes BatchNorm statistics; the others update them.
    assert not any(stats_changed) if config.freeze_batch_norm else all(stats_changed)
