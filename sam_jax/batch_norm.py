"""BatchNorm with statistics from elsewhere: frozen (the running statistics,
for finetuning) or pooled (over the device batch while its groups of m
examples each have their own weights, for m-sharpness without BatchNorm over m
examples).

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


def _batch_statistics(module: nn.BatchNorm, x, pool=lambda v: v):
    """The mean and variance over every axis but the features, in float32;
    `pool` combines each over other parts of the batch (an axis's pmean)."""
    feature_axes = _canonical_axes(x.ndim, module.axis)
    reduce = tuple(a for a in range(x.ndim) if a not in feature_axes)
    x32 = x.astype(jnp.float32)
    mean = pool(jnp.mean(x32, axis=reduce))
    return mean, pool(jnp.mean(jnp.square(x32 - mean.reshape(
        [x.shape[a] if a in feature_axes else 1 for a in range(x.ndim)])), axis=reduce))


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
def pooled_batch_statistics(axis_name: str):
    """Within it, each training BatchNorm normalises with the statistics of its
    input pooled over the vmap axis `axis_name` (gradients flow through them)
    and moves its running statistics towards them. For m-sharpness with
    BatchNorm over the device batch (`config.sam.batch_norm = "device"`): the
    device's groups of m examples are vmapped, each with its own (perturbed)
    weights, and every layer sees the mean and variance of the whole batch,
    as one pass over it would compute them."""
    def interceptor(next_fun, args, kwargs, context):
        if not _is_training_batch_norm(context):
            return next_fun(*args, **kwargs)
        module, x = context.module, args[0]
        if kwargs.get("mask") is not None:
            raise ValueError("pooled_batch_statistics: BatchNorm with a mask is not "
                             "supported")
        # Groups have equal sizes, so the mean of their means is the batch's.
        mean, var = _batch_statistics(module, x,
                                      pool=lambda v: jax.lax.pmean(v, axis_name))
        if module.is_mutable_collection("batch_stats"):
            for name, value in (("mean", mean), ("var", var)):
                running = module.get_variable("batch_stats", name)
                module.put_variable("batch_stats", name,
                                    module.momentum * running + (1 - module.momentum) * value)
        return _normalize(module, x, mean, var)
    with nn.intercept_methods(interceptor):
        yield
