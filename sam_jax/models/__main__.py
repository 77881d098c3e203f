"""Prints every registered model's parameter count: `python -m sam_jax.models`
(`--models=wrn28_10,resnet50` for some of them).

Counts come from `jax.eval_shape` on the default input shape, so even
EfficientNet-L2 (480M parameters) allocates nothing. 1000 classes for the
ImageNet models, as published; 10 for the CIFAR ones.
"""

import sys

from absl import flags

from sam_jax import cli
from sam_jax.errors import BadInputError
from sam_jax.models import (DEFAULT_INPUT_SHAPES, MODELS, PUBLISHED_PARAMETERS,
                            count_parameters, get_model)

_MODELS = flags.DEFINE_list("models", [], "Models to count (default: all).")

IMAGENET_CLASSES = 1000
CIFAR_CLASSES = 10


def num_classes_for(input_shape: tuple) -> int:
    return CIFAR_CLASSES if input_shape[0] <= 32 else IMAGENET_CLASSES


def main(argv) -> None:
    if len(argv) > 1:
        raise BadInputError(f"unexpected argument {argv[1]!r}; flags: --models=A,B")
    unknown = [name for name in _MODELS.value if name not in MODELS]
    if unknown:
        raise BadInputError(f"unknown model {unknown[0]!r}; allowed: "
                            f"{', '.join(sorted(MODELS))}")
    print(f"{'model':<30} {'input':<15} {'classes':>7} {'params':>14} "
          f"{'published':>10} {'ratio':>7}")
    for name in _MODELS.value or MODELS:
        shape = DEFAULT_INPUT_SHAPES[name]
        classes = num_classes_for(shape)
        count = count_parameters(get_model(name, classes), shape)
        published = PUBLISHED_PARAMETERS.get(name)
        published_text = f"{published / 1e6:.2f}M" if published else "-"
        ratio_text = f"{count / published:.4f}" if published else "-"
        print(f"{name:<30} {'x'.join(map(str, shape)):<15} {classes:>7} "
              f"{count:>14,} {published_text:>10} {ratio_text:>7}")
        sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
