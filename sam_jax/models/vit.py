"""Vision Transformer (Dosovitskiy et al., ICLR 2021), as google-research/
vision_transformer defines it for ImageNet from scratch: a patch embedding
(a p x p convolution with stride p, with bias), a learned class token and
position embedding, pre-LayerNorm encoder blocks (multi-head self-attention,
then an MLP of two dense layers with GELU), a final LayerNorm and a linear
head on the class token, with no pre-logits layer (so ViT-B/16 at 224 with
1,000 classes has 86.6M parameters, as published).

Initialisers as there: the head's weights and the class token at zero, the
position embedding N(0, 0.02^2), the MLP's kernels Xavier-uniform with biases
N(0, 1e-6^2), attention and embedding LeCun-normal.

Regularisers, all drawn from the "dropout" RNG stream (so SAM's two passes
share them, as the trainer keys that stream by step and group): dropout after
the position embedding, after the attention and in the MLP (`dropout_rate`),
on the attention weights (`attention_dropout_rate`), and stochastic depth
(Huang et al. 2016): each block's residual branches are dropped per example
with probability rising linearly over the depth from 0 to
`stochastic_depth_rate` (timm's rule; the ViT paper has none), the kept
ones scaled by 1 / (1 - p).

`dtype` is the compute dtype (float32 or bfloat16): the parameters stay
float32, the logits come out float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# name -> (hidden size, depth, heads, MLP size): the ViT paper's Table 1, and
# DeiT's Ti and S (Touvron et al. 2021, Table 1).
VARIANTS = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    # Ours, for 28 x 28 and 32 x 32 images on a CPU.
    "micro": (64, 4, 4, 128),
}


def drop_path(x, rate: float, rng):
    """Zeroes whole examples of the residual branch `x` with probability
    `rate`, scaling the others by 1 / (1 - rate)."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class PatchEmbedding(nn.Module):
    """A p x p convolution with stride p, computed as one matrix product of
    the flattened patches (the kernel keeps the convolution's (p, p, C, D)
    shape); XLA:CPU's strided convolution is slower."""
    patch_size: int
    hidden_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        p = self.patch_size
        n, h, w, c = images.shape
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch "
                             f"size {p}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (p, p, c, self.hidden_size), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.hidden_size,),
                          jnp.float32)
        patches = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, (h // p) * (w // p), p * p * c)
        tokens = patches @ kernel.reshape(p * p * c, -1).astype(self.dtype)
        return (tokens + bias.astype(self.dtype)).astype(self.dtype)


class MlpBlock(nn.Module):
    mlp_size: int
    dropout_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dense = lambda size, name: nn.Dense(
            size, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6), name=name)
        y = nn.gelu(dense(self.mlp_size, "Dense_0")(x), approximate=False)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = dense(x.shape[-1], "Dense_1")(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_size: int
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        def residual(branch):
            if train and self.drop_path_rate > 0:
                branch = drop_path(branch, self.drop_path_rate, self.make_rng("dropout"))
            return x + branch

        y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype,
            dropout_rate=self.attention_dropout_rate, deterministic=not train,
            name="MultiHeadDotProductAttention_0")(y, y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = residual(y)
        y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_2")(x)
        y = MlpBlock(self.mlp_size, self.dropout_rate, self.dtype, name="MlpBlock_3")(
            y, train)
        return residual(y)


class VisionTransformer(nn.Module):
    num_classes: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_size: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = PatchEmbedding(self.patch_size, self.hidden_size, self.dtype,
                           name="embedding")(jnp.asarray(images, self.dtype))
        n, length, width = x.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (n, 1, width)),
                             x], axis=1)
        position = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                              (1, length + 1, width), jnp.float32)
        x = (x + position.astype(self.dtype)).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.depth):
            rate = self.stochastic_depth_rate * i / max(self.depth - 1, 1)
            x = EncoderBlock(self.num_heads, self.mlp_size, self.dropout_rate,
                             self.attention_dropout_rate, rate, self.dtype,
                             name=f"encoderblock_{i}")(x, train)
        x = nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype,
                     kernel_init=nn.initializers.zeros, name="head")(x[:, 0])
        return x.astype(jnp.float32)


def vit(variant: str, patch_size: int, num_classes: int, dtype=jnp.float32,
        **options) -> VisionTransformer:
    """ViT-`variant`/`patch_size` (options: the dropout and stochastic-depth rates)."""
    hidden, depth, heads, mlp = VARIANTS[variant]
    return VisionTransformer(num_classes, patch_size, hidden, depth, heads, mlp,
                             dtype=dtype, **options)
