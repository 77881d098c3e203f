"""WideResNet (Zagoruyko & Komodakis 2016) as in the paper's official code.

Pre-activation blocks, parameter-free shortcuts (average pool + zero channel
padding), Kaiming fan-out initialisation; WRN-28-10 has 36.5M parameters.
"""

import flax.linen as nn

from sam_jax.models import layers


class WideResnetBlock(nn.Module):
    channels: int
    strides: int = 1
    activate_before_residual: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        if self.activate_before_residual:
            x = layers.bn_relu(x, train, "init_bn")
            block_x = x
        else:
            block_x = layers.bn_relu(x, train, "init_bn")
        block_x = layers.Conv3x3(self.channels, strides=self.strides,
                                 name="conv1")(block_x)
        block_x = layers.bn_relu(block_x, train, "bn_2")
        block_x = layers.Conv3x3(self.channels, name="conv2")(block_x)
        return layers.shortcut_add(block_x, x)


class WideResnet(nn.Module):
    """WRN-depth-width; depth = 6 * blocks_per_group + 4."""
    depth: int
    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResnet depth={self.depth} must be 6n+4")
        blocks_per_group = (self.depth - 4) // 6
        x = layers.Conv3x3(16, name="init_conv")(x)
        for group, (channels, strides) in enumerate(
                [(16, 1), (32, 2), (64, 2)]):
            for i in range(blocks_per_group):
                x = WideResnetBlock(
                    channels * self.width, strides if i == 0 else 1,
                    activate_before_residual=(group == 0 and i == 0),
                    name=f"group{group}_block{i}")(x, train)
        x = layers.bn_relu(x, train, "pre_pool_bn")
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=layers.dense_kernel_init,
                        name="head")(x)
