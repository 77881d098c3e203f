"""Shake-Shake WRN (Gastaldi 2017) as in the official code's wide_resnet_shakeshake.py.

Two ReLU-conv-BN-ReLU-conv-BN branches per block mixed by shake-shake (per
example, different forward/backward gates in training, 0.5/0.5 in evaluation);
the shortcut, where channels change, is Gastaldi's two 1x1 convolutions, one on
the input shifted by one pixel, concatenated and batch-normalised.
Shake-Shake 26 2x96d: depth 26 (4 blocks per group), width multiplier 6.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models import layers
from sam_jax.models import shake


class ShakeShakeShortcut(nn.Module):
    channels: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        if x.shape[-1] == self.channels:
            return x
        path1 = layers.subsample(x, self.strides)
        path1 = layers.Conv1x1(self.channels // 2, dtype=self.dtype, name="conv_h1")(path1)
        # Shifted by one pixel right and down so the two paths see different pixels.
        path2 = jnp.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])[:, 1:, 1:, :]
        path2 = layers.subsample(path2, self.strides)
        path2 = layers.Conv1x1(self.channels // 2, dtype=self.dtype, name="conv_h2")(path2)
        merged = jnp.concatenate([path1, path2], axis=-1)
        return layers.batch_norm(train, "bn_residual", self.dtype)(merged)


class ShakeShakeBlock(nn.Module):
    channels: int
    strides: int = 1
    dtype: Any = jnp.float32

    def branch(self, x, train: bool, name: str):
        x = nn.relu(x)
        x = layers.Conv3x3(self.channels, strides=self.strides, dtype=self.dtype,
                           name=f"conv_{name}_1")(x)
        x = layers.bn_relu(x, train, f"bn_{name}_1", self.dtype)
        x = layers.Conv3x3(self.channels, dtype=self.dtype, name=f"conv_{name}_2")(x)
        return layers.batch_norm(train, f"bn_{name}_2", self.dtype)(x)

    @nn.compact
    def __call__(self, x, train: bool, true_gradient: bool = False):
        branch_a = self.branch(x, train, "a")
        branch_b = self.branch(x, train, "b")
        if train and not self.is_initializing():
            mixed = shake.shake_shake_train(branch_a, branch_b, self.make_rng("dropout"),
                                            true_gradient)
        else:
            mixed = shake.shake_shake_eval(branch_a, branch_b)
        return ShakeShakeShortcut(self.channels, self.strides, self.dtype,
                                  name="shortcut")(x, train) + mixed


class ShakeShakeResnet(nn.Module):
    """Shake-Shake depth 2xWd: depth = 6 * blocks_per_group + 2, W = 16 * multiplier."""
    depth: int
    width_multiplier: int
    num_classes: int
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False, true_gradient: bool = False):
        """true_gradient: the exact gradient of the forward pass (see shake.py)."""
        if (self.depth - 2) % 6:
            raise ValueError(f"ShakeShakeResnet depth={self.depth} must be 6n+2")
        blocks_per_group = (self.depth - 2) // 6
        x = layers.Conv3x3(16, dtype=self.dtype, name="init_conv")(
            jnp.asarray(x, self.dtype))
        x = layers.batch_norm(train, "init_bn", self.dtype)(x)
        for group, (channels, strides) in enumerate([(16, 1), (32, 2), (64, 2)]):
            for i in range(blocks_per_group):
                x = ShakeShakeBlock(channels * self.width_multiplier,
                                    strides if i == 0 else 1, self.dtype,
                                    name=f"group{group}_block{i}")(x, train,
                                                                   true_gradient)
        x = nn.relu(x)
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, kernel_init=layers.dense_kernel_init,
                     dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
