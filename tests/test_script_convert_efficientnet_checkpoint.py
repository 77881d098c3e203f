"""scripts/convert_efficientnet_checkpoint.py: a fake released TF EfficientNet
checkpoint (conftest.py) converted and run, against the TF forward pass."""

import functools
import os

import jax
import numpy as np
import tensorflow as tf

from helpers import TF_PREFIX
from helpers import TINY_BLOCKS
from helpers import load_module
from sam_jax import pretrained
from sam_jax.models import get_model


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
