"""WideResNet (Zagoruyko & Komodakis 2016) as in the paper's official code.

Pre-activation blocks, parameter-free shortcuts (average pool + zero channel
padding), Kaiming fan-out initialisation; WRN-28-10 has 36.5M parameters.

`batch_norm=False` is the variant of the paper's Hessian study (Figure 3:
WRN-40-10 without BatchNorm): ReLU alone where BatchNorm + ReLU stood, convolutions
with biases, and each block's last convolution initialised to zero (as in
SkipInit / Fixup), so the un-normalised residual stack starts as the identity
instead of doubling its activations' variance at every block.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models import layers


def _norm_relu(x, train: bool, name: str, batch_norm: bool, dtype):
    return layers.bn_relu(x, train, name, dtype) if batch_norm else nn.relu(x)


class WideResnetBlock(nn.Module):
    channels: int
    strides: int = 1
    activate_before_residual: bool = False
    batch_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        if self.activate_before_residual:
            x = _norm_relu(x, train, "init_bn", self.batch_norm, self.dtype)
            block_x = x
        else:
            block_x = _norm_relu(x, train, "init_bn", self.batch_norm, self.dtype)
        block_x = layers.Conv3x3(self.channels, strides=self.strides,
                                 use_bias=not self.batch_norm, dtype=self.dtype,
                                 name="conv1")(block_x)
        block_x = _norm_relu(block_x, train, "bn_2", self.batch_norm, self.dtype)
        last_init = (layers.conv_kernel_init if self.batch_norm
                     else nn.initializers.zeros)
        block_x = layers.Conv3x3(self.channels, use_bias=not self.batch_norm,
                                 kernel_init=last_init, dtype=self.dtype,
                                 name="conv2")(block_x)
        return layers.shortcut_add(block_x, x)


class WideResnet(nn.Module):
    """WRN-depth-width; depth = 6 * blocks_per_group + 4."""
    depth: int
    width: int
    num_classes: int
    batch_norm: bool = True
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResnet depth={self.depth} must be 6n+4")
        blocks_per_group = (self.depth - 4) // 6
        x = layers.Conv3x3(16, use_bias=not self.batch_norm, dtype=self.dtype,
                           name="init_conv")(jnp.asarray(x, self.dtype))
        for group, (channels, strides) in enumerate(
                [(16, 1), (32, 2), (64, 2)]):
            for i in range(blocks_per_group):
                x = WideResnetBlock(
                    channels * self.width, strides if i == 0 else 1,
                    activate_before_residual=(group == 0 and i == 0),
                    batch_norm=self.batch_norm, dtype=self.dtype,
                    name=f"group{group}_block{i}")(x, train)
        x = _norm_relu(x, train, "pre_pool_bn", self.batch_norm, self.dtype)
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, kernel_init=layers.dense_kernel_init,
                     dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
