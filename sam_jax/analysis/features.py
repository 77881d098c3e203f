"""Penultimate features and their rank (Andriushchenko et al., NeurIPS 2023:
"Sharpness-aware minimization leads to low-rank features").

The features are the input of the classifier: every model in sam_jax.models
ends with a Dense layer named "head", and `penultimate_features` reads what
that layer receives by intercepting its call, so no model needs changing. The
rank is the number of principal components that hold 99% of the variance of
the features over a set of examples.
"""

import functools
import flax.linen as nn
import jax
import numpy as np


def feature_rank(features, threshold: float = 0.99) -> int:
    """Principal components holding `threshold` of the variance of `features`.

    Args:
        features: [num_examples, dim]. Each column is centred (the mean over
            the examples removed) before the singular values s_1 >= s_2 >= ...
            are taken.
        threshold: in (0, 1].

    Returns:
        The smallest k with s_1^2 + ... + s_k^2 >= threshold * sum_i s_i^2
        (0 for features that do not vary).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} must be in (0, 1]")
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [num_examples, dim], got {features.shape}")
    centred = features - features.mean(axis=0, keepdims=True)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    total = variances.sum()
    if total == 0:
        return 0
    # A relative slack so that threshold=1 is reached despite rounding.
    cumulative = np.cumsum(variances) / total
    return int(np.searchsorted(cumulative, threshold * (1 - 1e-12)) + 1)


def _is_head(context, head_name: str) -> bool:
    module = context.module
    return (context.method_name == "__call__" and isinstance(module, nn.Dense)
            and module.scope is not None and tuple(module.scope.path) == (head_name,))


@functools.partial(jax.jit, static_argnames=("model", "head_name"))
def features_and_logits(model: nn.Module, variables, images, head_name: str = "head"):
    """(input of the top-level Dense `head_name`, logits), in evaluation mode.

    BatchNorm uses its running statistics and dropout is off
    (`model.apply(variables, images, train=False)`).
    """
    captured = []

    def interceptor(next_fun, args, kwargs, context):
        if _is_head(context, head_name):
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, images, train=False)
    if len(captured) != 1:
        raise ValueError(f"{type(model).__name__} called a top-level Dense named "
                         f"{head_name!r} {len(captured)} times; expected once")
    return captured[0], logits


def penultimate_features(model: nn.Module, variables, images, *,
                         batch_size: int = 256, head_name: str = "head") -> np.ndarray:
    """The input of the model's classifier head for every image: [N, dim] float32.

    `images` are as the model takes them (normalised, not augmented); they are
    run `batch_size` at a time in evaluation mode.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    images = np.asarray(images)
    chunks = [np.asarray(features_and_logits(model, variables,
                                             images[i:i + batch_size],
                                             head_name=head_name)[0], np.float32)
              for i in range(0, len(images), batch_size)]
    if not chunks:
        raise ValueError("images is empty")
    return np.concatenate(chunks)
