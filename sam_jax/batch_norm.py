"""Frozen BatchNorm: every `nn.BatchNorm` normalises with its running statistics.

Finetuning (the paper's Table 3, as in the official code) keeps the pretrained
BatchNorm statistics: in the training step the layers behave as at evaluation
(running mean and variance, nothing updated) while dropout and drop-connect
stay on. Our models tie both to one `train` flag, so instead of changing every
model the layers are intercepted while the step applies the model:

    with frozen_batch_norm():
        logits = model.apply(variables, images, train=True, rngs=...)

Inside, SAM's two passes both see the same (running) statistics, and the
"batch_stats" collection is only read.
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp


def _canonical_axes(ndim: int, axes) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(sorted(a % ndim for a in axes))


def _normalize_with_running_statistics(module: nn.BatchNorm, x):
    """What `module(x)` computes with use_running_average=True."""
    feature_axes = _canonical_axes(x.ndim, module.axis)
    shape = [x.shape[a] if a in feature_axes else 1 for a in range(x.ndim)]
    mean = module.get_variable("batch_stats", "mean").reshape(shape)
    var = module.get_variable("batch_stats", "var").reshape(shape)
    y = (x - mean) * jax.lax.rsqrt(var + module.epsilon)
    if module.use_scale:
        y = y * module.get_variable("params", "scale").reshape(shape)
    if module.use_bias:
        y = y + module.get_variable("params", "bias").reshape(shape)
    return jnp.asarray(y, module.dtype or y.dtype)


def _interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, nn.BatchNorm)
            or module.is_initializing()):
        return next_fun(*args, **kwargs)
    if kwargs.get("mask") is not None:
        raise ValueError("frozen_batch_norm: BatchNorm with a mask is not supported")
    return _normalize_with_running_statistics(module, args[0])


@contextlib.contextmanager
def frozen_batch_norm():
    """Within it, applied BatchNorm layers use (and keep) their running statistics."""
    with nn.intercept_methods(_interceptor):
        yield
