"""ResNets (He et al. 2016): ImageNet ResNet-50/101/152 and CIFAR ResNet-32.

ImageNet: the torchvision / flax-examples ResNet v1.5 (7x7 stride-2 stem, ReLU,
3x3 max pool; bottlenecks with the stride on the 3x3 convolution; 1x1 projection
shortcuts where the shape changes; the last BN scale of each block starts at 0).
The official code's fork of the flax example omits the stem's ReLU; we keep it,
as torchvision and today's flax example do. Parameters are the same either way.

CIFAR: the original 6n+2 ResNet (3 stages of n post-activation basic blocks,
16/32/64 channels, parameter-free "option A" shortcuts); ResNet-32 has n = 5 and
0.46M parameters, used by the paper's label-noise runs (Table 4).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models import layers

BOTTLENECK_EXPANSION = 4


def zero_init_batch_norm(train: bool, name: str, dtype=jnp.float32) -> nn.BatchNorm:
    """BN whose scale starts at 0, so each residual block starts as the identity."""
    return nn.BatchNorm(use_running_average=not train, momentum=layers.BATCHNORM_MOMENTUM,
                        epsilon=layers.BATCHNORM_EPSILON, scale_init=nn.initializers.zeros,
                        dtype=dtype, name=name)


class BottleneckBlock(nn.Module):
    channels: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dtype = self.dtype
        out_channels = self.channels * BOTTLENECK_EXPANSION
        y = layers.Conv1x1(self.channels, dtype=dtype, name="conv1")(x)
        y = layers.bn_relu(y, train, "bn1", dtype)
        y = layers.Conv3x3(self.channels, strides=self.strides, dtype=dtype,
                           name="conv2")(y)
        y = layers.bn_relu(y, train, "bn2", dtype)
        y = layers.Conv1x1(out_channels, dtype=dtype, name="conv3")(y)
        y = zero_init_batch_norm(train, "bn3", dtype)(y)
        if x.shape != y.shape:
            x = layers.Conv1x1(out_channels, strides=self.strides, dtype=dtype,
                               name="conv_proj")(x)
            x = layers.batch_norm(train, "bn_proj", dtype)(x)
        return nn.relu(x + y)


class ImageNetResNet(nn.Module):
    """Bottleneck ResNet with `stage_sizes` blocks per stage, widths num_filters * 2^i."""
    stage_sizes: Sequence[int]
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.Conv(self.num_filters, (7, 7), strides=2, padding=[(3, 3), (3, 3)],
                        use_bias=False, kernel_init=layers.conv_kernel_init,
                        dtype=self.dtype, name="conv_init")(jnp.asarray(x, self.dtype))
        x = layers.bn_relu(x, train, "bn_init", self.dtype)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage, num_blocks in enumerate(self.stage_sizes):
            for i in range(num_blocks):
                x = BottleneckBlock(self.num_filters * 2 ** stage,
                                    strides=2 if stage > 0 and i == 0 else 1,
                                    dtype=self.dtype,
                                    name=f"stage{stage}_block{i}")(x, train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(
            jnp.float32)


IMAGENET_STAGE_SIZES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class CifarBasicBlock(nn.Module):
    channels: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = layers.Conv3x3(self.channels, strides=self.strides, dtype=self.dtype,
                           name="conv1")(x)
        y = layers.bn_relu(y, train, "bn1", self.dtype)
        y = layers.Conv3x3(self.channels, dtype=self.dtype, name="conv2")(y)
        y = layers.batch_norm(train, "bn2", self.dtype)(y)
        if x.shape != y.shape:  # option A: subsample and zero-pad, no parameters
            x = layers.pad_channels(layers.subsample(x, self.strides), self.channels)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """ResNet-depth for 32x32 images; depth = 6 * blocks_per_stage + 2."""
    depth: int
    num_classes: int
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 2) % 6:
            raise ValueError(f"CifarResNet depth={self.depth} must be 6n+2")
        blocks_per_stage = (self.depth - 2) // 6
        x = layers.Conv3x3(16, dtype=self.dtype, name="init_conv")(
            jnp.asarray(x, self.dtype))
        x = layers.bn_relu(x, train, "init_bn", self.dtype)
        for stage, channels in enumerate([16, 32, 64]):
            for i in range(blocks_per_stage):
                x = CifarBasicBlock(channels, strides=2 if stage > 0 and i == 0 else 1,
                                    dtype=self.dtype,
                                    name=f"stage{stage}_block{i}")(x, train)
        x = x.mean(axis=(1, 2))
        x = nn.Dense(self.num_classes, kernel_init=layers.dense_kernel_init,
                     dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
