"""EfficientNet (Tan & Le 2019) B0-B7 and L2, as in the official code's
efficientnet/efficientnet.py (itself the TF reference ported to flax).

MBConv blocks (1x1 expansion, depthwise kxk, squeeze-excitation, 1x1 projection)
with swish; BN momentum 0.99, epsilon 1e-3 (the TF constants); drop-connect on
the residual branch with a rate growing linearly from 0 to 0.2 over the blocks;
dropout before the classifier. Randomness comes from the "dropout" stream.
BN is per device here (the official code syncs it over all devices); the input
resolution is not enforced, so small images work for tests.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax.models.layers import Conv

BATCHNORM_MOMENTUM = 0.99
BATCHNORM_EPSILON = 1e-3
DEPTH_DIVISOR = 8

# Kaiming fan-out as in the TF reference. A depthwise kernel is (k, k, 1, C) in
# flax but (k, k, C, 1) in TF, whose fan-out is k * k: read it from axis -2.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
depthwise_kernel_init = nn.initializers.variance_scaling(
    2.0, "fan_out", "truncated_normal", in_axis=-1, out_axis=-2)
dense_kernel_init = nn.initializers.variance_scaling(1 / 3.0, "fan_out", "uniform")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of B0, before width/depth scaling."""
    kernel_size: int
    num_repeat: int
    input_filters: int
    output_filters: int
    expand_ratio: int
    strides: int
    se_ratio: float = 0.25


B0_STAGES = (
    StageConfig(3, 1, 32, 16, 1, 1),
    StageConfig(3, 2, 16, 24, 6, 2),
    StageConfig(5, 2, 24, 40, 6, 2),
    StageConfig(3, 3, 40, 80, 6, 2),
    StageConfig(5, 3, 80, 112, 6, 1),
    StageConfig(5, 4, 112, 192, 6, 2),
    StageConfig(3, 1, 192, 320, 6, 1),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280

# name -> (width coefficient, depth coefficient, resolution, dropout rate)
SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    "l2": (4.3, 5.3, 800, 0.5),
    "l2_475": (4.3, 5.3, 475, 0.5),  # L2 finetuned at a lower resolution
}


def round_filters(filters: int, width_coefficient: float) -> int:
    """Scales channels, rounded to a multiple of 8, never more than 10% down."""
    scaled = filters * width_coefficient
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR
                  * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    return int(math.ceil(depth_coefficient * repeats))


def drop_connect(x, survival_prob: float, rng):
    """Zeroes whole examples with probability 1 - survival_prob, scales the rest up."""
    keep = jax.random.bernoulli(rng, survival_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / survival_prob, 0.0)


def batch_norm(train: bool, name: str, dtype=jnp.float32) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM,
                        epsilon=BATCHNORM_EPSILON, dtype=dtype, name=name)


def conv(features: int, kernel_size: int = 1, strides: int = 1, name: str = None,
         dtype=jnp.float32):
    return Conv(features, (kernel_size, kernel_size), strides=strides, padding="SAME",
                use_bias=False, kernel_init=conv_kernel_init, dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features: reduce, swish, expand, sigmoid."""
    reduced_filters: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gates = x.mean(axis=(1, 2), keepdims=True)
        gates = Conv(self.reduced_filters, (1, 1), kernel_init=conv_kernel_init,
                     dtype=self.dtype, name="reduce_conv")(gates)
        gates = Conv(x.shape[-1], (1, 1), kernel_init=conv_kernel_init,
                     dtype=self.dtype, name="expand_conv")(nn.swish(gates))
        return x * nn.sigmoid(gates)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck; residual (with drop-connect) when shapes match."""
    input_filters: int
    output_filters: int
    kernel_size: int
    expand_ratio: int
    strides: int
    se_ratio: float
    drop_connect_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs, train: bool):
        dtype = self.dtype
        filters = self.input_filters * self.expand_ratio
        x = inputs
        if self.expand_ratio != 1:
            x = conv(filters, name="expand_conv", dtype=dtype)(x)
            x = nn.swish(batch_norm(train, "expand_bn", dtype)(x))
        x = nn.Conv(filters, (self.kernel_size, self.kernel_size), strides=self.strides,
                    padding="SAME", feature_group_count=filters, use_bias=False,
                    kernel_init=depthwise_kernel_init, dtype=dtype,
                    name="depthwise_conv")(x)
        x = nn.swish(batch_norm(train, "depthwise_bn", dtype)(x))
        # The squeeze width follows the block's input, not its expanded width.
        x = SqueezeExcite(max(1, int(self.input_filters * self.se_ratio)), dtype,
                          name="se")(x)
        x = conv(self.output_filters, name="project_conv", dtype=dtype)(x)
        x = batch_norm(train, "project_bn", dtype)(x)
        if self.strides == 1 and self.input_filters == self.output_filters:
            if train and self.drop_connect_rate > 0:
                x = drop_connect(x, 1.0 - self.drop_connect_rate, self.make_rng("dropout"))
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    width_coefficient: float
    depth_coefficient: float
    dropout_rate: float
    num_classes: int
    drop_connect_rate: float = 0.2
    stages: tuple = B0_STAGES
    dtype: Any = jnp.float32  # compute dtype; logits come out float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        width, dtype = self.width_coefficient, self.dtype
        x = conv(round_filters(STEM_FILTERS, width), 3, 2, name="stem_conv",
                 dtype=dtype)(jnp.asarray(x, dtype))
        x = nn.swish(batch_norm(train, "stem_bn", dtype)(x))
        repeats = [round_repeats(s.num_repeat, self.depth_coefficient) for s in self.stages]
        num_blocks, block = sum(repeats), 0
        for stage_index, (stage, num_repeat) in enumerate(zip(self.stages, repeats)):
            input_filters = round_filters(stage.input_filters, width)
            output_filters = round_filters(stage.output_filters, width)
            for i in range(num_repeat):
                x = MBConvBlock(input_filters if i == 0 else output_filters,
                                output_filters, stage.kernel_size, stage.expand_ratio,
                                stage.strides if i == 0 else 1, stage.se_ratio,
                                self.drop_connect_rate * block / num_blocks, dtype,
                                name=f"stage{stage_index}_block{i}")(x, train)
                block += 1
        x = conv(round_filters(TOP_FILTERS, width), name="top_conv", dtype=dtype)(x)
        x = nn.swish(batch_norm(train, "top_bn", dtype)(x))
        x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, dtype=dtype,
                     name="head")(x)
        return x.astype(jnp.float32)


def efficientnet(variant: str, num_classes: int, dtype=jnp.float32) -> EfficientNet:
    """EfficientNet-`variant` ("b0" ... "b7", "l2", "l2_475")."""
    width, depth, _, dropout = SCALING[variant]
    return EfficientNet(width, depth, dropout, num_classes, dtype=dtype)


def default_resolution(variant: str) -> int:
    return SCALING[variant][2]
