"""Bottleneck PyramidNet (Han et al. 2017), optionally with ShakeDrop, as in the
official code's pyramidnet.py.

Channels grow by alpha / N per block (N blocks in all), rounded rather than
truncated as in the official code (about 0.2M more parameters than truncating);
pre-activation bottlenecks BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1-BN with 4x expansion;
parameter-free shortcuts (average pool, zero channel padding). ShakeDrop keeps
block l (1-based) with probability 1 - final_death_rate * l / N.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models import layers
from sam_jax.models import shake

BOTTLENECK_EXPANSION = 4


def shakedrop_keep_probabilities(num_blocks: int, final_death_rate: float):
    """Linear decay rule: block l of N is kept with 1 - final_death_rate * l / N."""
    return [1.0 - final_death_rate * block / num_blocks
            for block in range(1, num_blocks + 1)]


def pyramid_shortcut(x, channels: int, strides: int):
    if strides != 1:
        x = nn.avg_pool(x, (strides, strides), (strides, strides))
    return layers.pad_channels(x, channels) if channels != x.shape[-1] else x


class PyramidBottleneck(nn.Module):
    channels: int
    strides: int = 1
    keep_prob: float | None = None  # None: no ShakeDrop
    alpha_range: tuple = (-1.0, 1.0)
    beta_range: tuple = (0.0, 1.0)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, true_gradient: bool = False):
        dtype = self.dtype
        y = layers.batch_norm(train, "bn_1_pre", dtype)(x)
        y = layers.Conv1x1(self.channels, dtype=dtype, name="conv_1x1_contract")(y)
        y = layers.bn_relu(y, train, "bn_1_post", dtype)
        y = layers.Conv3x3(self.channels, strides=self.strides, dtype=dtype,
                           name="conv_3x3")(y)
        y = layers.bn_relu(y, train, "bn_2", dtype)
        y = layers.Conv1x1(self.channels * BOTTLENECK_EXPANSION, dtype=dtype,
                           name="conv_1x1_expand")(y)
        y = layers.batch_norm(train, "bn_3", dtype)(y)
        if self.keep_prob is not None:
            if train:
                y = shake.shake_drop_train(y, self.keep_prob, self.make_rng("dropout"),
                                           self.alpha_range, self.beta_range,
                                           true_gradient)
            else:
                y = shake.shake_drop_eval(y, self.keep_prob, self.alpha_range)
        return pyramid_shortcut(x, y.shape[-1], self.strides) + y


class PyramidNet(nn.Module):
    """PyramidNet-depth, widening factor alpha; depth = 9 * blocks_per_group + 2."""
    depth: int
    alpha: int
    num_classes: int
    shakedrop: bool = False
    final_death_rate: float = 0.5  # ShakeDrop's p_L = 0.5
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False, true_gradient: bool = False):
        """true_gradient: the exact gradient of the forward pass (see shake.py)."""
        if (self.depth - 2) % 9:
            raise ValueError(f"PyramidNet depth={self.depth} must be 9n+2")
        blocks_per_group = (self.depth - 2) // 9
        num_blocks = 3 * blocks_per_group
        keep_probs = (shakedrop_keep_probabilities(num_blocks, self.final_death_rate)
                      if self.shakedrop else [None] * num_blocks)
        x = layers.Conv3x3(16, dtype=self.dtype, name="init_conv")(
            jnp.asarray(x, self.dtype))
        x = layers.batch_norm(train, "init_bn", self.dtype)(x)
        channels = 16.0
        for block in range(num_blocks):
            group, i = divmod(block, blocks_per_group)
            channels += self.alpha / num_blocks
            x = PyramidBottleneck(int(round(channels)),
                                  strides=2 if group > 0 and i == 0 else 1,
                                  keep_prob=keep_probs[block], dtype=self.dtype,
                                  name=f"group{group}_block{i}")(x, train,
                                                                 true_gradient)
        x = layers.bn_relu(x, train, "final_bn", self.dtype)
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, kernel_init=layers.dense_kernel_init,
                     dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
