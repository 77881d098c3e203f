"""Models, looked up by name: `get_model(name, num_classes)`.

Every model is a flax.linen Module called as `model.apply(variables, images,
train=...)` with BatchNorm statistics in the "batch_stats" collection and
stochastic layers drawing from the "dropout" RNG stream.
"""

import functools
from typing import Callable

import flax.linen as nn

from sam_jax.models.wide_resnet import WideResnet

# name -> constructor(num_classes) -> Module
MODELS: dict[str, Callable[[int], nn.Module]] = {
    # The paper's CIFAR model, and the smaller ones of the WRN family used by
    # the PyTorch port (WRN-16-8), the Hessian study (WRN-40-10) and laptops.
    **{f"wrn{d}_{w}": functools.partial(WideResnet, d, w)
       for d, w in [(28, 10), (40, 10), (16, 8), (28, 2), (16, 4), (16, 2),
                    (10, 2), (10, 1)]},
}


def get_model(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes)
