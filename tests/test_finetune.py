"""Finetuning: frozen BatchNorm, pretrained checkpoints (ours and the released
TF EfficientNets, converted), the head swap, and a short run from a fake one."""

import functools
import importlib.util
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sam_jax
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax import optimizers
from sam_jax import checkpoint
from sam_jax import data
from sam_jax import parallel
from sam_jax import pretrained
from sam_jax import steps
from sam_jax import train
from sam_jax.batch_norm import frozen_batch_norm
from sam_jax.models import get_model
from sam_jax.validate import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(path):
    spec = importlib.util.spec_from_file_location(
        os.path.basename(path).removesuffix(".py"), os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path, arg=None):
    return load_module(path).get_config(arg)


def leaves_with_paths(tree):
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def with_random_statistics(batch_stats, seed):
    """Running statistics that differ from the init (mean 0, var 1)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(rng.uniform(0.5, 1.5, x.shape), np.float32), batch_stats)


# ------------------------------------------------------------ frozen BatchNorm

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


def test_frozen_batch_norm_in_training_is_evaluation_mode():
    model = TinyBatchNormNet()
    images = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    params, batch_stats = tiny_variables(images, 1)
    variables = {"params": params, "batch_stats": batch_stats}
    evaluation = model.apply(variables, images, train=False)
    with frozen_batch_norm():
        logits, mutated = model.apply(variables, images, train=True,
                                      mutable=["batch_stats"])
    np.testing.assert_allclose(logits, evaluation, rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(mutated["batch_stats"]),
                         jax.tree_util.tree_leaves(batch_stats)):
        np.testing.assert_array_equal(got, want)
    # Outside the context the layers use and update the batch statistics again.
    logits, mutated = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert not np.allclose(logits, evaluation)
    assert not np.allclose(mutated["batch_stats"]["BatchNorm_0"]["mean"],
                           batch_stats["BatchNorm_0"]["mean"])


def test_frozen_sam_step_on_8_devices_equals_loop_in_evaluation_mode():
    """Both SAM passes use the running statistics, which stay as they are."""
    model = TinyBatchNormNet()  # no random layers: frozen training is evaluation
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 3, 16).astype(np.int32)
    params, batch_stats = tiny_variables(images, 2)
    rho, wd, lr = 0.1, 1e-5, 0.05
    tx = optax.chain(optax.clip_by_global_norm(5.0),
                     optax.sgd(lr, momentum=0.9, nesterov=True))

    # Reference: one 'device' (2 examples) at a time, evaluation-mode model.
    @jax.jit
    @jax.grad
    def grad(p, x, y):
        logits = model.apply({"params": p, "batch_stats": batch_stats}, x, train=False)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * wd * sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(p))
    grads = []
    for x, y in zip(np.split(images, 8), np.split(labels, 8)):
        g = grad(params, x, y)
        norm = optax.tree.norm(g)
        shifted = jax.tree_util.tree_map(lambda w, v: w + rho * v / norm, params, g)
        grads.append(grad(shifted, x, y))
    mean_grad = jax.tree_util.tree_map(lambda *g: sum(g) / 8, *grads)
    updates, _ = tx.update(mean_grad, tx.init(params), params)
    want = optax.apply_updates(params, updates)

    mesh = parallel.make_mesh()
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, tx, examples_per_perturbation=2, per_device_batch=2,
        weight_decay=wd, label_smoothing=0.0, grad_clip_norm=5.0,
        freeze_batch_norm=True), mesh)
    state = jax.tree_util.tree_map(jnp.copy, steps.new_train_state(
        params, batch_stats, optax.chain(method, tx).init(params)))
    new = step(jax.device_put(state, parallel.replicated(mesh)),
               parallel.global_batch(mesh, {"image": images, "label": labels}),
               jax.random.PRNGKey(0))
    for got, ref in zip(jax.tree_util.tree_leaves(new.params),
                        jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    for got, ref in zip(jax.tree_util.tree_leaves(new.batch_stats),
                        jax.tree_util.tree_leaves(batch_stats)):
        np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------ CIFAR at the model's resolution

def test_in_memory_images_are_resized_to_image_size():
    spec = data.DATASETS["cifar10"]
    rng = np.random.default_rng(0)
    # Constant images stay constant under (bicubic) resizing: the reference is
    # the normalised colour itself.
    colours = rng.integers(0, 256, (5, 1, 1, 3)).astype(np.uint8)
    images = np.broadcast_to(colours, (5, 32, 32, 3)).copy()
    labels = np.arange(5, dtype=np.int32)
    want = (colours.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
    (batch,) = data.eval_batches(images, labels, spec=spec, global_batch_size=8,
                                 image_size=48)
    assert batch["image"].shape == (8, 48, 48, 3)
    np.testing.assert_allclose(batch["image"][:5], np.broadcast_to(want, (5, 48, 48, 3)),
                               atol=1e-4)
    (train_batch,) = data.train_dataset(
        images, labels, spec=spec, augmentation="basic", global_batch_size=4, seed=0,
        start_step=0, num_steps=1, image_size=48).as_numpy_iterator()
    assert train_batch["image"].shape == (4, 48, 48, 3)
    np.testing.assert_allclose(  # crop and flip move nothing in a constant image
        train_batch["image"], np.broadcast_to(want[train_batch["label"]], (4, 48, 48, 3)),
        atol=1e-4)


# ------------------------------------------------------------ released TF EfficientNet

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


def tf_reference_logits(t, images):
    """The TF EfficientNet's inference forward pass, in TF ops on TF names."""
    p = TF_PREFIX

    def bn(x, name):
        return ((x - t[f"{name}/moving_mean"]) / np.sqrt(t[f"{name}/moving_variance"] + 1e-3)
                * t[f"{name}/gamma"] + t[f"{name}/beta"])

    def conv(x, name, stride=1):
        y = tf.nn.conv2d(x, t[f"{name}/kernel"], stride, "SAME")
        return y + t[f"{name}/bias"] if f"{name}/bias" in t else y

    x = conv(images, f"{p}/stem/conv2d", 2)
    x = tf.nn.swish(bn(x, f"{p}/stem/tpu_batch_normalization"))
    for i, (expand, stride) in enumerate(TINY_BLOCKS):
        b, inputs = f"{p}/blocks_{i}", x
        bns = [f"{b}/tpu_batch_normalization{s}" for s in ("", "_1", "_2")]
        if expand:
            x = tf.nn.swish(bn(conv(x, f"{b}/conv2d"), bns.pop(0)))
        x = tf.nn.depthwise_conv2d(x, t[f"{b}/depthwise_conv2d/depthwise_kernel"],
                                   [1, stride, stride, 1], "SAME")
        x = tf.nn.swish(bn(x, bns.pop(0)))
        gates = tf.reduce_mean(x, [1, 2], keepdims=True)
        gates = conv(tf.nn.swish(conv(gates, f"{b}/se/conv2d")), f"{b}/se/conv2d_1")
        x = x * tf.sigmoid(gates)
        x = bn(conv(x, f"{b}/conv2d_1" if expand else f"{b}/conv2d"), bns.pop(0))
        if stride == 1:  # 8 -> 8 filters: identity skip
            x = x + inputs
    x = tf.nn.swish(bn(conv(x, f"{p}/head/conv2d"), f"{p}/head/tpu_batch_normalization"))
    x = tf.reduce_mean(x, [1, 2])
    return (tf.matmul(x, t[f"{p}/head/dense/kernel"]) + t[f"{p}/head/dense/bias"]).numpy()


def write_tf_checkpoint(prefix, tensors):
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])


@pytest.fixture(scope="module")
def released_checkpoint(tmp_path_factory):
    """A fake released checkpoint: raw weights, their EMA copies (the ones to
    use), an optimizer slot and the step counter; 10 classes."""
    rng = np.random.default_rng(0)
    ema = tiny_tf_variables(rng, num_classes=10)
    tensors = {name: value + 1.0 for name, value in ema.items()}  # raw != EMA
    tensors.update({f"{name}/ExponentialMovingAverage": value
                    for name, value in ema.items()})
    tensors[f"{TF_PREFIX}/stem/conv2d/kernel/RMSProp"] = np.zeros((3, 3, 3, 8), np.float32)
    tensors["global_step"] = np.array(1000, np.int64)
    prefix = str(tmp_path_factory.mktemp("released") / "model.ckpt")
    write_tf_checkpoint(prefix, tensors)
    return prefix, ema


@pytest.fixture(scope="module")
def converted_checkpoint(released_checkpoint, tmp_path_factory):
    script = load_module("scripts/convert_efficientnet_checkpoint.py")
    output = str(tmp_path_factory.mktemp("converted") / "efficientnet_tiny.msgpack")
    assert script.main([f"--checkpoint={released_checkpoint[0]}",
                        "--model=efficientnet_tiny", f"--output={output}"]) == 0
    return output


def test_converted_tf_checkpoint_computes_what_tf_computes(
        released_checkpoint, converted_checkpoint):
    _, ema = released_checkpoint
    variables = pretrained.read_checkpoint(converted_checkpoint, "msgpack")
    model = get_model("efficientnet_tiny", 10)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    # Every parameter and statistic of the model is covered, nothing else.
    pretrained.check_fits(variables, jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                                    images[:1]))
    assert len(jax.tree_util.tree_leaves(variables)) == len(ema)
    logits = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    np.testing.assert_allclose(logits, tf_reference_logits(ema, images),
                               rtol=1e-4, atol=1e-4)
    # Spot checks of the layouts.
    np.testing.assert_array_equal(
        variables["params"]["stage1_block0"]["depthwise_conv"]["kernel"],
        ema[f"{TF_PREFIX}/blocks_1/depthwise_conv2d/depthwise_kernel"].transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(
        variables["batch_stats"]["stage0_block0"]["project_bn"]["var"],
        ema[f"{TF_PREFIX}/blocks_0/tpu_batch_normalization_1/moving_variance"])


def test_conversion_errors_are_one_line(released_checkpoint, tmp_path, capsys):
    script = load_module("scripts/convert_efficientnet_checkpoint.py")
    raw, _ = script.convert(released_checkpoint[0], "efficientnet_tiny", use_ema=False)
    np.testing.assert_array_equal(  # --noema: the raw weights (EMA + 1 here)
        raw["params"]["head"]["bias"],
        released_checkpoint[1][f"{TF_PREFIX}/head/dense/bias"] + 1.0)
    output = str(tmp_path / "x.msgpack")
    for argv, message in [
            ([f"--checkpoint={released_checkpoint[0]}", "--model=efficientnet_b0"],
             "has shape (8,), but batch_stats/stage0_block0/depthwise_bn/mean of "
             "efficientnet_b0 has (32,)"),
            ([f"--checkpoint={released_checkpoint[0]}", "--model=wrn28_10"],
             "unknown model 'wrn28_10'; allowed: efficientnet_b0"),
            ([f"--checkpoint={tmp_path}/nothing.ckpt", "--model=efficientnet_tiny"],
             "cannot read TF checkpoint")]:
        assert script.main(argv + [f"--output={output}"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not os.path.exists(output)


# ------------------------------------------------------------ loading into a model

def finetune_config(path=None, **overrides):
    config = load_config("configs/finetune.py", "efficientnet_tiny,cifar100,sam")
    config.pretrained.path = path
    config.update(dict(batch_size=16, eval_batch_size=16, num_steps=4, image_size=40,
                       log_every_steps=1, checkpoint_every_steps=2), **overrides)
    return config


def test_pretrained_weights_everywhere_but_a_new_head(converted_checkpoint):
    variables = pretrained.read_checkpoint(converted_checkpoint, "msgpack")  # 10 classes
    config = finetune_config(converted_checkpoint)  # CIFAR-100
    model = get_model("efficientnet_tiny", 100)
    tx = train.training_chain(config, 10).tx
    fresh = steps.initial_state(config.seed, model, tx, (40, 40, 3))
    state, head_kept = train.from_pretrained(config, fresh, tx)
    assert not head_kept and int(state.step) == 0
    got, want = leaves_with_paths(state.params), leaves_with_paths(variables["params"])
    fresh_head = leaves_with_paths(fresh.params["head"])
    assert got["['head']['kernel']"].shape == (320, 100)
    for key, value in got.items():
        if key.startswith("['head']"):
            np.testing.assert_array_equal(value, fresh_head[key[len("['head']"):]])
        else:
            np.testing.assert_array_equal(value, want[key])
    for got_stats, want_stats in zip(jax.tree_util.tree_leaves(state.batch_stats),
                                     jax.tree_util.tree_leaves(variables["batch_stats"])):
        np.testing.assert_array_equal(got_stats, want_stats)
    # Same number of classes (ImageNet finetuning of an ImageNet model): the
    # checkpoint's head is kept.
    same_classes = jax.tree_util.tree_map(np.zeros_like, variables)
    merged, head_kept = pretrained.merge(variables, same_classes)
    assert head_kept
    for got_leaf, want_leaf in zip(jax.tree_util.tree_leaves(merged),
                                   jax.tree_util.tree_leaves(variables)):
        np.testing.assert_array_equal(got_leaf, want_leaf)


def test_orbax_checkpoint_of_a_run_is_a_pretrained_format(tmp_path):
    rng = np.random.default_rng(3)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32)},
              "head": {"kernel": rng.normal(size=(4, 10)).astype(np.float32),
                       "bias": np.zeros(10, np.float32)}}
    batch_stats = {"bn": {"mean": rng.normal(size=4).astype(np.float32),
                          "var": rng.uniform(size=4).astype(np.float32)}}
    tx = optax.sgd(0.1, momentum=0.9)
    state = steps.new_train_state(params, batch_stats, tx.init(params))
    manager = checkpoint.make_manager(str(tmp_path))
    checkpoint.save(manager, state.replace(step=jnp.asarray(7, jnp.int32)))
    manager.wait_until_finished()
    for path in (str(tmp_path), str(tmp_path / "checkpoints" / "7")):
        read = pretrained.read_checkpoint(path, "orbax")
        for got, want in zip(jax.tree_util.tree_leaves(read),
                             jax.tree_util.tree_leaves(
                                 {"params": params, "batch_stats": batch_stats})):
            np.testing.assert_array_equal(got, want)


def test_check_fits_names_the_first_mismatch(converted_checkpoint):
    variables = pretrained.read_checkpoint(converted_checkpoint, "msgpack")
    model_variables = jax.eval_shape(get_model("efficientnet_tiny", 100).init,
                                     jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    pretrained.check_fits(variables, model_variables)  # the head may differ

    def edited(edit):
        tree = jax.tree_util.tree_map(np.copy, variables)
        edit(tree)
        return tree
    cases = [
        (lambda t: t["params"]["stem_conv"].update(kernel=np.zeros((3, 3, 3, 4))),
         "params/stem_conv/kernel has shape (3, 3, 3, 4) in it, (3, 3, 3, 8) in the model"),
        (lambda t: t["batch_stats"]["top_bn"].pop("var"),
         "batch_stats/top_bn/var (shape (320,)) is missing from it"),
        (lambda t: t["params"].update(extra={"kernel": np.zeros(2)}),
         "it has params/extra/kernel (shape (2,)), which the model does not"),
    ]
    for edit, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pretrained.check_fits(edited(edit), model_variables)


@pytest.mark.parametrize("case, message", [
    ("unset", "pretrained.path is not set: this finetuning config needs a pretrained "
              "checkpoint"),
    ("missing", "no such file"),
    ("garbage", "cannot be read as format 'msgpack'"),
    ("other_model", "does not fit model 'efficientnet_tiny': it has batch_stats/"),
])
def test_bad_pretrained_checkpoint_is_one_line_and_writes_nothing(
        tmp_path, converted_checkpoint, case, message):
    path = {"unset": None, "missing": str(tmp_path / "nothing.msgpack"),
            "garbage": str(tmp_path / "garbage.msgpack"),
            "other_model": str(tmp_path / "other.msgpack")}[case]
    (tmp_path / "garbage.msgpack").write_bytes(b"not a checkpoint")
    if case == "other_model":
        pretrained.save_msgpack(path, *tiny_variables(np.zeros((1, 6, 6, 2)), 0))
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=32):
        with pytest.raises(ConfigError) as error:
            train.train_and_evaluate(finetune_config(path), str(workdir))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not workdir.exists()


# ------------------------------------------------------------ a short finetuning run

class Interrupted(Exception):
    pass


def test_finetune_from_converted_checkpoint_then_resume_without_it(
        tmp_path, converted_checkpoint, monkeypatch, capsys):
    """4 steps on mock CIFAR-100 (100 classes, 32 px resized to 40) from the
    10-class converted checkpoint, cut short in the final evaluation (after the
    step-4 checkpoint); with the pretrained file removed, the rerun resumes
    from its own checkpoint (it must not read the file) and evaluates."""
    path = str(tmp_path / "pretrained.msgpack")
    shutil.copy(converted_checkpoint, path)
    config = finetune_config(path)
    workdir = str(tmp_path / "run")
    real_iterator = data.as_numpy_iterator

    def checked(dataset):
        for batch in real_iterator(dataset):
            assert batch["image"].shape == (16, 40, 40, 3)  # 8 devices x 2
            yield batch

    def interrupted(*args):
        raise Interrupted

    with tfds.testing.mock_data(num_examples=32):
        with monkeypatch.context() as patch:
            patch.setattr(data, "as_numpy_iterator", checked)
            patch.setattr(train, "evaluate", interrupted)
            with pytest.raises(Interrupted):
                train.train_and_evaluate(config, workdir)
        assert "from pretrained" in capsys.readouterr().out
        os.remove(path)
        results = train.train_and_evaluate(config, workdir)
    assert "resuming at step 4/4" in capsys.readouterr().out
    assert results["steps"] == 4 and 0.0 <= results["test_error"] <= 1.0

    assert max(map(int, os.listdir(os.path.join(workdir, "checkpoints")))) == 4
    final = pretrained.read_checkpoint(workdir, "orbax")  # the latest, step 4
    start = pretrained.read_checkpoint(converted_checkpoint, "msgpack")
    assert final["params"]["head"]["kernel"].shape == (320, 100)
    # BatchNorm statistics: still the checkpoint's, bit for bit.
    for got, want in zip(jax.tree_util.tree_leaves(final["batch_stats"]),
                         jax.tree_util.tree_leaves(start["batch_stats"])):
        np.testing.assert_array_equal(got, want)
    # The other weights moved at most 4 steps away from the checkpoint's: with
    # gradients clipped to norm c, Nesterov's step t is lr * |g_t + mu * m_t| <=
    # lr * c * (1 + mu * (1 + mu + ... + mu^(t-1))).
    lr, mu, c = (config.optimizer.learning_rate, config.optimizer.momentum,
                 config.optimizer.grad_clip_norm)
    bound = sum(lr * c * (1 + mu * sum(mu ** k for k in range(t))) for t in (1, 2, 3, 4))
    body = lambda tree: {k: v for k, v in tree.items() if k != "head"}  # noqa: E731
    distance = optax.tree.norm(jax.tree_util.tree_map(
        lambda a, b: a - b, body(final["params"]), body(start["params"])))
    assert 0 < float(distance) <= bound
