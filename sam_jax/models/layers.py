"""Layers shared by the CIFAR models, with the official code's initialisers.

Every model takes a compute `dtype` (float32 or bfloat16, see
sam_jax/models/__init__.py) that its layers compute in; parameters and
BatchNorm statistics are float32 whatever it is (flax's param_dtype default).
"""

import functools
from typing import Any

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
import jax
import jax.numpy as jnp

from sam_jax.models.conv import conv_general_dilated

# The official code's BatchNorm constants (flax.nn defaults of 2020).
BATCHNORM_MOMENTUM = 0.9
BATCHNORM_EPSILON = 1e-5

# Kaiming normal, fan_out mode: the initialisation the paper's models use.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def dense_kernel_init(key, shape, dtype=jnp.float32):
    """U[-1/sqrt(n_out), 1/sqrt(n_out)], as in the AutoAugment WRN the paper uses."""
    limit = 1.0 / shape[1] ** 0.5
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def batch_norm(train: bool, name: str, dtype=jnp.float32) -> nn.BatchNorm:
    """The official BatchNorm; `dtype` is its output's (statistics, scale and
    offset stay float32: flax reduces in float32)."""
    return nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM,
                        epsilon=BATCHNORM_EPSILON, dtype=dtype, name=name)


def bn_relu(x, train: bool, name: str, dtype=jnp.float32):
    return nn.relu(batch_norm(train, name, dtype)(x))


def _promote_keeping_float32_bias(inputs, kernel, bias, dtype=None, inexact=True):
    """flax's promote_dtype for a convolution, except that the bias stays in its
    parameter dtype (float32)."""
    inputs, kernel = promote_dtype(inputs, kernel, dtype=dtype, inexact=inexact)
    return inputs, kernel, bias


class Conv(nn.Conv):
    """nn.Conv with XLA:CPU's slow weight gradient replaced (models/conv.py),
    whose bias is added in float32 and the sum rounded to the compute dtype.

    The bias's gradient sums the output's gradient over every position of the
    batch; in bf16 that sum (XLA:CPU accumulates in bf16) was off by 17% for
    WRN-10-2 without BatchNorm at batch 8, 8x8 images.
    """
    conv_general_dilated: Any = conv_general_dilated
    promote_dtype: Any = _promote_keeping_float32_bias

    def __call__(self, inputs):
        outputs = super().__call__(inputs)
        return outputs if self.dtype is None else outputs.astype(self.dtype)

Conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding="SAME",
                            use_bias=False, kernel_init=conv_kernel_init)


def shortcut_add(block_x, orig_x):
    """Adds the shortcut, average-pooled and zero-padded in channels if needed.

    The official WRN has no 1x1 projection: a parameter-free shortcut.
    """
    stride = orig_x.shape[-2] // block_x.shape[-2]
    if block_x.shape[-1] != orig_x.shape[-1]:
        orig_x = nn.avg_pool(orig_x, (stride, stride), (stride, stride))
        extra = block_x.shape[-1] - orig_x.shape[-1]
        orig_x = jnp.pad(orig_x, [(0, 0), (0, 0), (0, 0), (0, extra)])
    return block_x + orig_x


Conv1x1 = functools.partial(Conv, kernel_size=(1, 1), padding="SAME",
                            use_bias=False, kernel_init=conv_kernel_init)


def subsample(x, stride: int):
    """Every `stride`-th pixel: a 1x1 average pool with that stride."""
    return x[:, ::stride, ::stride, :]


def pad_channels(x, channels: int):
    """Zero-pads the channel axis up to `channels` (parameter-free shortcut)."""
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, channels - x.shape[-1])])
