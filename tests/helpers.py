"""Functions and classes that several test files use (fixtures are in
conftest.py). Test files import them with `from helpers import ...`: pytest
puts this directory on sys.path (rootdir-based "prepend" import mode)."""

import dataclasses
import functools
import importlib.util
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits
import tensorflow as tf

from sam_jax import declarations
from sam_jax.reproduce import __main__ as reproduce_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ files


@functools.cache
def load_module(path):
    """A Python file of the checkout (scripts/x.py, configs/x.py) as a module;
    each file is executed once."""
    spec = importlib.util.spec_from_file_location(
        os.path.basename(path).removesuffix(".py"), os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(config_and_arg: str):
    """'configs/x.py:ARG' -> get_config(ARG), the file found as `--config` finds
    it (sam_jax.declarations.resolve_config)."""
    path, _, arg = declarations.resolve_config(config_and_arg).partition(":")
    return load_module(os.path.abspath(path)).get_config(arg or None)


def listing(directory):
    """Every file and directory below `directory`, as sorted relative paths."""
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)


def truncate_files(directory):
    """Cuts every non-empty file below `directory` to half its size (a damaged
    checkpoint); returns how many it cut."""
    damaged = 0
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 0:
                os.truncate(path, os.path.getsize(path) // 2)
                damaged += 1
    return damaged


# ------------------------------------------------------------ images and augmentations


def seed(i):
    return tf.constant([i, 11], tf.int64)


def random_image(shape, key=0):
    return np.random.default_rng(key).integers(0, 256, shape, np.uint8)


def encode(image, image_format):
    if image_format == 'jpeg':
        return tf.io.encode_jpeg(image, quality=95).numpy()
    return tf.io.encode_png(image).numpy()


def eager_and_in_tf_data(fn, image):
    """fn(image) eagerly and inside a Dataset.map; asserts they agree."""
    eager = fn(tf.constant(image)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(fn))).numpy()
    np.testing.assert_array_equal(eager, mapped)
    return eager


def eager_and_in_tf_data_over_seeds(fn, image, num_seeds):
    """[fn(image, seed(i)) for i < num_seeds], eagerly and in one
    Dataset.map (one trace); asserts they agree."""
    eager = [fn(tf.constant(image), seed(i)).numpy() for i in range(num_seeds)]
    mapped = tf.data.Dataset.range(num_seeds).map(
        lambda i: fn(tf.constant(image), tf.stack([i, 11])))
    for got, want in zip(mapped.as_numpy_iterator(), eager):
        np.testing.assert_array_equal(got, want)
    return eager


def reference_normalize(images, spec):
    images = images.astype(np.float32)
    return ((images - np.array(spec.mean, np.float32))
            / np.array(spec.std, np.float32))


def reference_digits_split(split):
    """(uint8 images, labels) of a digits split, straight from sklearn."""
    digits = load_digits()
    permutation = np.random.RandomState(0).permutation(1797)
    indices = {'train': permutation[:1297], 'test': permutation[1297:]}[split]
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    return images[indices], digits.target[indices]


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The DatasetSpec fields the device augmentations read."""
    image_shape: tuple
    mean: tuple
    std: tuple
    flip: bool
    crop_padding: int


# ------------------------------------------------------------ BatchNorm and finetuning


def with_random_statistics(batch_stats, seed):
    """Running statistics that differ from the init (mean 0, var 1)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(rng.uniform(0.5, 1.5, x.shape), np.float32), batch_stats)


class TinyBatchNormNet(nn.Module):
    """BatchNorm with and without scale, no random layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = nn.BatchNorm(use_running_average=not train, use_scale=False)(x.mean(axis=(1, 2)))
        return nn.Dense(3, name="head")(x)


def tiny_variables(images, seed):
    variables = TinyBatchNormNet().init(jax.random.PRNGKey(seed), images[:1])
    return variables["params"], with_random_statistics(variables["batch_stats"], seed)


def finetune_config(path=None, **overrides):
    config = load_config("configs/finetune.py:efficientnet_tiny,cifar100,sam")
    config.pretrained.path = path
    config.update(dict(batch_size=16, eval_batch_size=16, num_steps=4, image_size=40,
                       log_every_steps=1, checkpoint_every_steps=2), **overrides)
    config.sam.examples_per_perturbation = 2  # 16 / 8 devices (the config pins 16)
    return config


# ------------------------------------------------------------ a released TF EfficientNet


TF_PREFIX = "efficientnet-tiny"
# efficientnet_tiny: 8-filter stem, blocks (expansion?, stride) with 8 output
# filters, expansion 6 (48), squeeze to 2; 320-filter top.
TINY_BLOCKS = ((False, 1), (True, 2), (True, 1))


def tiny_tf_variables(rng, num_classes):
    """Random weights under the tensorflow/tpu EfficientNet names, for efficientnet_tiny."""
    v = {}

    def conv(name, shape, bias=False):
        v[f"{name}/kernel"] = rng.normal(0, 0.3, shape)
        if bias:
            v[f"{name}/bias"] = rng.normal(0, 0.1, shape[-1:])

    def bn(name, channels):
        v[f"{name}/gamma"] = rng.uniform(0.5, 1.5, channels)
        v[f"{name}/beta"] = rng.normal(0, 0.1, channels)
        v[f"{name}/moving_mean"] = rng.normal(0, 0.1, channels)
        v[f"{name}/moving_variance"] = rng.uniform(0.5, 1.5, channels)

    p = TF_PREFIX
    conv(f"{p}/stem/conv2d", (3, 3, 3, 8))
    bn(f"{p}/stem/tpu_batch_normalization", 8)
    for i, (expand, _) in enumerate(TINY_BLOCKS):
        b, channels = f"{p}/blocks_{i}", 48 if expand else 8
        bns = [f"{b}/tpu_batch_normalization{s}" for s in ("", "_1", "_2")]
        if expand:
            conv(f"{b}/conv2d", (1, 1, 8, 48))
            bn(bns.pop(0), 48)
        v[f"{b}/depthwise_conv2d/depthwise_kernel"] = rng.normal(0, 0.3, (3, 3, channels, 1))
        bn(bns.pop(0), channels)
        conv(f"{b}/se/conv2d", (1, 1, channels, 2), bias=True)
        conv(f"{b}/se/conv2d_1", (1, 1, 2, channels), bias=True)
        conv(f"{b}/conv2d_1" if expand else f"{b}/conv2d", (1, 1, channels, 8))
        bn(bns.pop(0), 8)
    conv(f"{p}/head/conv2d", (1, 1, 8, 320))
    bn(f"{p}/head/tpu_batch_normalization", 320)
    v[f"{p}/head/dense/kernel"] = rng.normal(0, 0.1, (320, num_classes))
    v[f"{p}/head/dense/bias"] = rng.normal(0, 0.1, (num_classes,))
    return {name: value.astype(np.float32) for name, value in v.items()}


def write_tf_checkpoint(prefix, tensors):
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])


# ------------------------------------------------------------ analysis problems


def quadratic_data(eigenvalues, num_examples, seed=0):
    """Rows a_i with (1/N) sum a_i a_i^T = Q diag(eigenvalues) Q^T, and Q."""
    rng = np.random.default_rng(seed)
    dim = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    u, _ = np.linalg.qr(rng.standard_normal((num_examples, dim)))
    rows = np.sqrt(num_examples) * u @ np.diag(np.sqrt(eigenvalues)) @ q.T
    return rows.astype(np.float32), q @ np.diag(eigenvalues) @ q.T


def quadratic_loss(params, batch):
    """Mean over examples of 0.5 (a_i . x)^2: Hessian (1/N) sum a_i a_i^T."""
    x = ravel_pytree(params)[0]
    return 0.5 * jnp.mean(jnp.square(batch["a"] @ x))


def pieces(batch, sizes):
    bounds = np.cumsum([0] + list(sizes))
    return [{k: v[s:e] for k, v in batch.items()} for s, e in zip(bounds, bounds[1:])]


def mlp_loss(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * batch["y"], axis=-1))


def mlp_problem(seed=0, num_examples=20, inputs=5, hidden=6):
    """Parameters of a tanh MLP (`inputs` -> `hidden` -> 3 classes) and a batch
    with one-hot labels, for mlp_loss."""
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(inputs, hidden)), "b1": rng.normal(size=hidden) * 0.1,
              "w2": rng.normal(size=(hidden, 3)), "b2": rng.normal(size=3) * 0.1}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    batch = {"x": rng.normal(size=(num_examples, inputs)).astype(np.float32),
             "y": np.eye(3, dtype=np.float32)[rng.integers(0, 3, num_examples)]}
    return params, batch


# ------------------------------------------------------------ the reproduction CLI


def run_reproduce_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `python -m sam_jax.reproduce ARGV`, in-process."""
    code = reproduce_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


def load_any_table(name: str):
    """reproduce.load_table(name). Tables whose inputs their own study's runs
    write get stand-ins while those are not there yet (their runs then validate
    all the same): the comparison's condition tables each method's first grid
    value for picks.json; sam_vs_sgd's the first gate attempt for gated.json
    and the first grid values for picks.json."""
    from sam_jax import reproduce
    from sam_jax.errors import BadInputError
    try:
        return reproduce.load_table(name)
    except BadInputError as e:
        stand_in = ((name.startswith("review_comparison.") and "picks.json" in str(e))
                    or (name.startswith("sam_vs_sgd.")
                        and ("gated.json" in str(e) or "picks.json" in str(e))))
        if not stand_in:
            raise
    if name.startswith("sam_vs_sgd."):
        from experiments import sam_vs_sgd as study
        from experiments.sam_vs_sgd import gates, grid, main
        _, _, model, epochs, _ = gates.ATTEMPTS[0]
        gated = {"model": model, "epochs": epochs}
        if name == "sam_vs_sgd.grid":
            return grid.get_table(gated=gated)
        picks = {noise: {method: values[0] for method, (_, values) in grid.METHODS.items()}
                 for noise, _ in study.CONDITIONS}
        return main.get_condition_table(name.split(".")[1], picks=picks, gated=gated)
    from experiments.review_comparison import comparison, methods
    return comparison.get_condition_table(
        name.split(".")[1], picks={m.key: m.grid[0] for m in methods.METHODS})


def slow_except(values, fast) -> list:
    """pytest parameters: `values`, those not in `fast` marked slow (run with
    SAM_JAX_SLOW_TESTS=1; conftest.py). The fast ones cover the code path; the
    slow ones repeat it on costlier models."""
    return [value if value in fast else pytest.param(value, marks=pytest.mark.slow)
            for value in values]


class Interrupted(Exception):
    """A run's training batches ran out mid-run (interrupt_after)."""


def interrupt_after(num_batches, monkeypatch):
    """Makes the training batches die after `num_batches` batches: a run
    stopped mid-way, to be resumed from its last checkpoint."""
    from sam_jax import data
    real = data.prepare_inputs

    def prepare(*args, **kwargs):
        inputs = real(*args, **kwargs)
        real_batches = inputs.train_batches

        def dying(start, stop):
            for i, batch in enumerate(real_batches(start, stop)):
                if i == num_batches:
                    raise Interrupted
                yield batch
        return dataclasses.replace(inputs, train_batches=dying)
    monkeypatch.setattr(data, "prepare_inputs", prepare)
