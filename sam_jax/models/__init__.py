"""Models, looked up by name: `get_model(name, num_classes, dtype="float32")`.

Every model is a flax.linen Module called as `model.apply(variables, images,
train=...)` with BatchNorm statistics in the "batch_stats" collection and
stochastic layers drawing from the "dropout" RNG stream, so the output is a
pure function of (variables, images, dropout key). `python -m sam_jax.models`
prints every model's parameter count.

`dtype` is the compute dtype (COMPUTE_DTYPES): images are cast to it on entry
and every convolution, dense layer and BatchNorm output computes in it. The
parameters and BatchNorm statistics are float32 whatever it is (so are the
gradients, optimizer state and SAM's perturbation), and the logits come out
float32, so the loss and softmax are float32.
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax.models import efficientnet
from sam_jax.models.pyramidnet import PyramidNet
from sam_jax.models.resnet import IMAGENET_STAGE_SIZES, CifarResNet, ImageNetResNet
from sam_jax.models.shake_shake import ShakeShakeResnet
from sam_jax.models.vit import vit
from sam_jax.models.wide_resnet import WideResnet

CIFAR_SHAPE = (32, 32, 3)
_partial = functools.partial

# bfloat16 has float32's exponent range, so no loss scaling is needed; float16
# would overflow without it and is not offered.
COMPUTE_DTYPES = ("float32", "bfloat16")

# name -> constructor(num_classes, dtype=...) -> Module
MODELS: dict[str, Callable[[int], nn.Module]] = {
    # The paper's CIFAR model, and the smaller ones of the WRN family used by
    # the PyTorch port (WRN-16-8), the Hessian study (WRN-40-10) and laptops.
    **{f"wrn{d}_{w}": _partial(WideResnet, d, w)
       for d, w in [(28, 10), (40, 10), (16, 8), (28, 2), (16, 4), (16, 2),
                    (10, 2), (10, 1)]},
    # Without BatchNorm: the Hessian study's WRN-40-10, and a laptop-size sibling.
    "wrn40_10_nobn": _partial(WideResnet, 40, 10, batch_norm=False),
    "wrn10_2_nobn": _partial(WideResnet, 10, 2, batch_norm=False),
    # Shake-Shake depth 2x(16 * multiplier)d.
    "shake_shake_26_2x96d": _partial(ShakeShakeResnet, 26, 6),
    "shake_shake_8_2x16d": _partial(ShakeShakeResnet, 8, 1),
    # PyramidNet-depth, alpha; bottleneck blocks.
    "pyramidnet_272_200": _partial(PyramidNet, 272, 200),
    "pyramidnet_272_200_shakedrop": _partial(PyramidNet, 272, 200, shakedrop=True),
    "pyramidnet_11_24": _partial(PyramidNet, 11, 24),
    "pyramidnet_11_24_shakedrop": _partial(PyramidNet, 11, 24, shakedrop=True),
    # CIFAR ResNet of the label-noise runs (Table 4), and its smallest sibling.
    "resnet32": _partial(CifarResNet, 32),
    "resnet8": _partial(CifarResNet, 8),
    # ImageNet ResNets (Table 2) and a tiny one with the same stem for tests.
    **{f"resnet{d}": _partial(ImageNetResNet, IMAGENET_STAGE_SIZES[d])
       for d in IMAGENET_STAGE_SIZES},
    "resnet_tiny": _partial(ImageNetResNet, (1, 1, 1, 1), num_filters=8),
    # EfficientNets (Table 3) and a tiny one for tests: 1/4 width, B0's first two
    # stages (3 blocks; the last one residual, so drop-connect is exercised).
    **{f"efficientnet_{v}": _partial(efficientnet.efficientnet, v)
       for v in efficientnet.SCALING},
    "efficientnet_tiny": _partial(efficientnet.EfficientNet, 0.25, 1.0, 0.2,
                                  stages=efficientnet.B0_STAGES[:2]),
    # Vision Transformers (Chen et al.'s ViT-SAM runs) and a micro one with
    # 4 x 4 patches for 28 x 28 / 32 x 32 images (ours: width 64, depth 4).
    "vit_ti16": _partial(vit, "Ti", 16),
    "vit_s16": _partial(vit, "S", 16),
    "vit_b16": _partial(vit, "B", 16),
    "vit_b32": _partial(vit, "B", 32),
    "vit_micro4": _partial(vit, "micro", 4),
}

# Models whose dropout and stochastic depth config.model sets (get_model's
# options); the others have theirs built in.
REGULARISED_MODELS = tuple(name for name in MODELS if name.startswith("vit_"))

# name -> (height, width, channels) the model is meant for.
DEFAULT_INPUT_SHAPES: dict[str, tuple] = {
    **{name: CIFAR_SHAPE for name in MODELS
       if name.startswith(("wrn", "shake_shake", "pyramidnet"))},
    "resnet32": CIFAR_SHAPE,
    "resnet8": CIFAR_SHAPE,
    **{f"resnet{d}": (224, 224, 3) for d in IMAGENET_STAGE_SIZES},
    "resnet_tiny": (64, 64, 3),
    **{f"efficientnet_{v}": (efficientnet.default_resolution(v),) * 2 + (3,)
       for v in efficientnet.SCALING},
    "efficientnet_tiny": (64, 64, 3),
    **{f"vit_{v}": (224, 224, 3) for v in ("ti16", "s16", "b16", "b32")},
    "vit_micro4": CIFAR_SHAPE,
}

# Parameter counts the papers give (PAPER.md; ResNet-32: He et al. 2016, Table 6).
PUBLISHED_PARAMETERS: dict[str, float] = {
    "wrn28_10": 36.5e6,
    "shake_shake_26_2x96d": 26.2e6,
    "pyramidnet_272_200": 26.0e6,
    "pyramidnet_272_200_shakedrop": 26.0e6,
    "resnet32": 0.46e6,
    "resnet50": 25.6e6,
    "resnet101": 44.5e6,
    "resnet152": 60.2e6,
    "efficientnet_b7": 66e6,
    "efficientnet_l2": 480e6,
    "efficientnet_l2_475": 480e6,
    # Dosovitskiy et al. 2021, Table 1 (B: 86M); Touvron et al. 2021 (DeiT),
    # Table 1 (Ti 5.7M, S 22M); at 224 x 224, 1,000 classes, no pre-logits.
    "vit_ti16": 5.7e6,
    "vit_s16": 22.1e6,
    "vit_b16": 86.6e6,
}


def get_model(name: str, num_classes: int, dtype="float32", **options) -> nn.Module:
    """The model `name` computing in `dtype` (a name in COMPUTE_DTYPES or a
    dtype); `options` (dropout_rate, stochastic_depth_rate) for the
    REGULARISED_MODELS."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    if jnp.dtype(dtype).name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {jnp.dtype(dtype).name!r}; allowed: "
                         f"{', '.join(COMPUTE_DTYPES)}")
    if options and name not in REGULARISED_MODELS:
        raise ValueError(f"model {name!r} takes no {', '.join(sorted(options))}; "
                         f"models that do: {', '.join(REGULARISED_MODELS)}")
    return MODELS[name](num_classes=num_classes, dtype=jnp.dtype(dtype), **options)


def options_from_config(config) -> dict:
    """config.model's dropout and stochastic-depth rates that are set (None:
    the model's own, 0 for the ViTs), as get_model's options."""
    rates = {"dropout_rate": config.model.dropout_rate,
             "stochastic_depth_rate": config.model.stochastic_depth_rate}
    return {key: value for key, value in rates.items() if value is not None}


def count_parameters(model: nn.Module, input_shape: tuple) -> int:
    """Size of the "params" collection, from shapes only (nothing is allocated)."""
    variables = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(input_shape))))
    return sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
