"""BatchNorm with statistics from elsewhere: frozen (the running statistics,
for finetuning) or given (the statistics of a larger batch, for m-sharpness
without BatchNorm over m examples).

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


def _normalize(module: nn.BatchNorm, x, mean, var):
    """module's affine normalisation of x with the given mean and variance."""
    feature_axes = _canonical_axes(x.ndim, module.axis)
    shape = [x.shape[a] if a in feature_axes else 1 for a in range(x.ndim)]
    mean, var = mean.reshape(shape), var.reshape(shape)
    y = (x - mean) * jax.lax.rsqrt(var + module.epsilon)
    if module.use_scale:
        y = y * module.get_variable("params", "scale").reshape(shape)
    if module.use_bias:
        y = y + module.get_variable("params", "bias").reshape(shape)
    return jnp.asarray(y, module.dtype or y.dtype)


def _normalize_with_running_statistics(module: nn.BatchNorm, x):
    """What `module(x)` computes with use_running_average=True."""
    return _normalize(module, x, module.get_variable("batch_stats", "mean"),
                      module.get_variable("batch_stats", "var"))


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


def _is_training_batch_norm(context) -> bool:
    module = context.module
    return (context.method_name == "__call__" and isinstance(module, nn.BatchNorm)
            and not module.is_initializing() and not module.use_running_average)


def _batch_statistics(module: nn.BatchNorm, x):
    """The mean and variance over every axis but the features, in float32."""
    feature_axes = _canonical_axes(x.ndim, module.axis)
    reduce = tuple(a for a in range(x.ndim) if a not in feature_axes)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=reduce)
    return mean, jnp.mean(jnp.square(x32 - mean.reshape(
        [x.shape[a] if a in feature_axes else 1 for a in range(x.ndim)])), axis=reduce)


@contextlib.contextmanager
def recording_batch_statistics(store: dict):
    """Within it, each training BatchNorm also records its batch's (mean, var)
    in `store`, keyed by its module path; the layers compute as usual."""
    def interceptor(next_fun, args, kwargs, context):
        if _is_training_batch_norm(context):
            store[tuple(context.module.scope.path)] = _batch_statistics(
                context.module, args[0])
        return next_fun(*args, **kwargs)
    with nn.intercept_methods(interceptor):
        yield


@contextlib.contextmanager
def given_batch_statistics(stats: dict):
    """Within it, each training BatchNorm normalises with the (mean, var) that
    `stats` holds for its module path (constants: no gradient through them),
    and updates nothing. For the per-group passes of m-sharpness with the
    statistics of the device's batch (`config.sam.batch_norm = "device"`)."""
    def interceptor(next_fun, args, kwargs, context):
        if not _is_training_batch_norm(context):
            return next_fun(*args, **kwargs)
        mean, var = stats[tuple(context.module.scope.path)]
        return _normalize(context.module, args[0], jax.lax.stop_gradient(mean),
                          jax.lax.stop_gradient(var))
    with nn.intercept_methods(interceptor):
        yield
