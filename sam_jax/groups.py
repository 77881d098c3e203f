"""Groups of examples (m-sharpness): the grouped form of a method's update and
its adapter to optax's plain form (one gradient shaped like the weights).

Groups (m-sharpness). A method's update may be called in grouped form:
`grads`, the aux and what `grad_fn` takes and returns carry a leading axis of
G groups; group k perturbs with its own gradient g_k, and the result is the
mean over groups (then over `axis_name`, the device axes). The caller runs
grad_fn's model passes for all groups at once (vmap) or in chunks. The groups
are an explicit array axis, not a named vmap axis: JAX 0.10 cannot run a
collective over a vmap axis inside shard_map, and pooling with a mean over an
axis needs none. The plain form is the grouped form with G = 1.
"""

import jax
import jax.numpy as jnp

from sam_jax.collectives import AxisName, per_device, pmean


def stack(tree):
    """A leading group axis of size 1."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], tree)


def unstack(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def group_mean(tree):
    return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0).astype(x.dtype), tree)


def pool(tree, axis_name: AxisName):
    """The mean over the leading group axis, then over the device axes."""
    return pmean(group_mean(tree), axis_name)


def broadcast_groups(tree, num_groups: int):
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (num_groups,) + jnp.shape(x)), tree)


def num_groups_of(stacked) -> int:
    return jax.tree_util.tree_leaves(stacked)[0].shape[0]


def plain_form(update_fn, grouped: bool):
    """`update_fn` (grouped form) as an update of the form `grouped` says.

    In the plain form, array arguments gain a leading group axis of 1, and
    callables (grad_fn, ...) take and return arrays without it.
    """
    if grouped:
        return update_fn

    def wrap_callable(fn):
        return lambda *args, **kwargs: stack(fn(*unstack(args), **unstack(kwargs)))

    def update(updates, state, params=None, **extra_args):
        extra = {name: (wrap_callable(value) if callable(value) else
                        None if value is None else stack(value))
                 for name, value in extra_args.items()}
        return update_fn(stack(updates), state, params, **extra)

    return update


def add_to_groups(params, e):
    """params (no group axis) + e [G, ...]: the G groups' perturbed weights."""
    return jax.tree_util.tree_map(lambda w, d: w[None] + d.astype(w.dtype), params, e)


def split_aux(output, has_aux: bool):
    return output if has_aux else (output, None)


def evaluate(grad_fn, weights, axis_name: AxisName, has_aux: bool):
    """grad_fn at the groups' `weights`, each device taking its own gradient."""
    return split_aux(grad_fn(per_device(weights, axis_name)), has_aux)
