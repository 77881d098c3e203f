"""Collectives over the device axes, the same under shard_map and pmap.

A SAM step takes each device's own gradient (`per_device`) and pools what the
devices computed (`pmean`, in device order over a shard_map axis so that the
sum does not depend on how the devices are spread over processes:
`psum_in_device_order`). `axis_name` is a name, a sequence of names, or None
(no device axis: every function is then the identity).
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp

AxisName = Union[str, Sequence[str], None]


def axis_names(axis_name: AxisName) -> tuple:
    if axis_name is None:
        return ()
    return (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)


def _varying_axes(x) -> frozenset:
    aval = jax.typeof(x)
    if hasattr(aval, "vma"):  # JAX < 0.10
        return frozenset(aval.vma)
    return frozenset(aval.manual_axis_type.varying)


def pmean(tree, axis_name: AxisName):
    """The mean over the named axes, one axis at a time: a leaf may vary along
    one (a device axis) and not another (a group axis it was averaged over
    already), which JAX refuses in a single pmean over both.

    Over a shard_map axis the sum is added in device order (psum_in_device_order),
    so the result does not depend on how the devices are spread over processes."""
    for name in axis_names(axis_name):
        if name in _manual_axes():
            tree = psum_in_device_order(tree, name, mean=True)
        else:
            tree = jax.lax.pmean(tree, name)
    return tree


def _manual_axes() -> frozenset:
    """The axes of the enclosing shard_map (JAX 0.10 runs pmap as one too)."""
    return frozenset(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))


def psum_in_device_order(tree, axis_name: str, mean: bool = False):
    """The sum (or mean) over the shard_map axis `axis_name`, bitwise the same
    for every layout of its devices over processes.

    lax.psum adds in an order the collective implementation picks: XLA:CPU's
    in-process all-reduce and gloo's between processes differ in the last bit,
    and training amplifies one bit into percents within a few steps (a ReLU
    input near 0 changes sign, the gradient jumps). Here floating leaves are
    added in the order of the axis index, 0 to N-1, on every device:
    all_to_all hands device i the i-th slice of every device's values (data
    movement, exact), it adds them in order, and a psum of the slices placed
    in otherwise zero rows gives everyone the whole (exact: one nonzero
    term per element). One all_to_all and one psum per dtype, the traffic of
    about 1.5 all-reduces, and no gathered copy of the whole tree. Leaves that
    do not vary along the axis are their own mean (and N times themselves as
    a sum); other dtypes (integers, exact in any order) use lax.psum.
    """
    size = jax.lax.axis_size(axis_name)
    if size == 1:  # one term: any order is exact
        return (jax.lax.pmean if mean else jax.lax.psum)(tree, axis_name)
    # Whether values carry varying / invariant types along the axis (not under
    # pmap, or shard_map with check_vma=False: then any value may vary).
    typed = axis_name in _varying_axes(jax.lax.axis_index(axis_name))
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    leaves = [jnp.asarray(x) for x in leaves]
    out = list(leaves)
    floating = {}
    for i, x in enumerate(leaves):
        if typed and axis_name not in _varying_axes(x):
            out[i] = x if mean else x * size
        elif jnp.issubdtype(x.dtype, jnp.floating):
            floating.setdefault(x.dtype, []).append(i)
        else:
            out[i] = (jax.lax.pmean if mean else jax.lax.psum)(x, axis_name)
    for dtype, indices in floating.items():
        flat = jnp.concatenate([leaves[i].ravel() for i in indices])
        chunk = -(-flat.size // size)
        rows = jnp.pad(flat, (0, chunk * size - flat.size)).reshape(size, chunk)
        # Row j: device j's values of this device's slice.
        received = jax.lax.all_to_all(rows, axis_name, 0, 0)
        total = received[0]
        for j in range(1, size):  # left to right; XLA does not reassociate
            total = total + received[j]
        placed = jnp.zeros((size, chunk), dtype).at[
            jax.lax.axis_index(axis_name)].set(total)
        flat_sum = jax.lax.psum(placed, axis_name).reshape(-1)
        if mean:
            flat_sum = flat_sum / jnp.asarray(size, dtype)
        offset = 0
        for i in indices:
            out[i] = flat_sum[offset:offset + leaves[i].size].reshape(leaves[i].shape)
            offset += leaves[i].size
    return jax.tree_util.tree_unflatten(treedef, out)


def gather_in_device_order(tree, axis_name: str):
    """Every device's leaves concatenated along their first axis, in the order
    of the axis index, the same (invariant) value on every device: each device
    places its values in otherwise zero rows and a psum adds them (exact: one
    nonzero term per element)."""
    size = jax.lax.axis_size(axis_name)
    index = jax.lax.axis_index(axis_name)

    def gather(x):
        placed = jnp.zeros((size,) + x.shape, x.dtype).at[index].set(x)
        return jax.lax.psum(placed, axis_name).reshape((-1,) + x.shape[1:])
    return jax.tree_util.tree_map(gather, tree)


def per_device(params, axis_name: AxisName):
    """Marks replicated `params` as differing per device along `axis_name`.

    Under `jax.shard_map` (with its default check_vma=True), `jax.grad` with
    respect to replicated weights returns the gradient SUMMED over devices,
    which would silently turn per-device SAM into SAM on the global batch.
    Taking the gradient at `per_device(params, axis_name)` gives each device its
    own gradient, as `pmap` does. Names of `vmap` or `pmap` axes, which have no
    varying / invariant types, are skipped; without an axis it is a no-op.

    Args:
      params: the replicated weights (any pytree).
      axis_name: a mesh axis name, a tuple of them, or None.

    Returns:
      `params`, typed as varying along the `shard_map` axes among `axis_name`.
    """
    # Only shard_map's (manual) axes have the types; vmap's per-example grads
    # are already per-"device".
    manual = set(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))
    names = tuple(name for name in axis_names(axis_name) if name in manual)
    if not names:
        return params

    def cast(x):
        invariant = tuple(n for n in names if n not in _varying_axes(x))
        return jax.lax.pcast(x, invariant, to="varying") if invariant else x
    return jax.tree_util.tree_map(cast, params)
