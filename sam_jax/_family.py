"""What every method of the SAM family shares: device axes and groups of
examples, pooling, the report of a step, and the adapter between the grouped
form (one call sees all groups of m examples of a device) and optax's plain
form (one gradient shaped like the weights).

Groups (m-sharpness). A method's update may be called in grouped form:
`grads`, the aux and what `grad_fn` takes and returns carry a leading axis of
G groups; group k perturbs with its own gradient g_k, and the result is the
mean over groups (then over `axis_name`, the device axes). The caller runs
grad_fn's model passes for all groups at once (vmap) or in chunks. The groups
are an explicit array axis, not a named vmap axis: JAX 0.10 cannot run a
collective over a vmap axis inside shard_map, and pooling with a mean over an
axis needs none. The plain form is the grouped form with G = 1.
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

AxisName = Union[str, Sequence[str], None]


# ------------------------------------------------------------------ axes

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


# ------------------------------------------------------------------- groups

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


# --------------------------------------------------------------- tree math

def tree_norm(tree) -> jnp.ndarray:
    """Global L2 norm, accumulated in float32 (bf16 leaves are upcast).

    The leaves are divided by a power of two near their largest |entry| before
    squaring (exact: the result is the plain formula's wherever that neither
    overflows nor underflows), so gradients beyond sqrt(float32 max) ~ 1.8e19,
    or below ~1e-19, still have their true norm rather than inf or 0. An inf or
    NaN entry still gives an inf or NaN norm.
    """
    leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
    leaves = [x for x in leaves if x.size]
    if not leaves:
        return jnp.zeros([], jnp.float32)
    largest = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in leaves])
    # 2^(e - 1) <= largest < 2^e. Clipped so that the scale and its inverse are
    # normal floats (XLA:CPU flushes subnormals to zero), which still keeps the
    # scaled squares in range for any float32 leaves.
    exponent = jnp.clip(jnp.frexp(largest)[1] - 1, -100, 100)
    exponent = jnp.where(jnp.isfinite(largest) & (largest > 0), exponent, 0)
    inverse = jnp.ldexp(jnp.float32(1), -exponent)
    return jnp.ldexp(jnp.sqrt(sum(jnp.sum(jnp.square(x * inverse)) for x in leaves)),
                     exponent)


def tree_vdot(a, b) -> jnp.ndarray:
    return sum(jnp.sum(x.astype(jnp.float32) * y.astype(jnp.float32))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def tree_add(a, b):
    """a + b in a's dtypes (weights + perturbation)."""
    return jax.tree_util.tree_map(lambda x, y: x + y.astype(x.dtype), a, b)


def tree_scale(tree, factor):
    return jax.tree_util.tree_map(lambda x: (factor * x.astype(jnp.float32)), tree)


def add_to_groups(params, e):
    """params (no group axis) + e [G, ...]: the G groups' perturbed weights."""
    return jax.tree_util.tree_map(lambda w, d: w[None] + d.astype(w.dtype), params, e)


def cast_like(tree, like):
    return jax.tree_util.tree_map(lambda x, y: x.astype(y.dtype), tree, like)


# ------------------------------------------------------------ step reports

class StepInfo(NamedTuple):
    """What a method's last update measured (averaged over groups and devices).

    gradient_evaluations: forward + backward passes this step made, counting
      the caller's gradient at w when the method used it.
    rho: the radius (or the method's rho-like scale) used this step.
    grad_norm: ||g|| of the gradient at w (mean over groups; 0 if unused).
    perturbation_norm: ||e|| (mean over groups; 0 without a perturbation).
    cosine: cos(g at w, the returned gradient) per group, averaged.
    perturbation_share: {top-level parameter group: ||e_group||^2 / ||e||^2}.
    aux: with `aux_init`, grad_fn's aux at the point whose gradient was
      returned (the caller's `aux` at w when there was no other evaluation).
    """
    gradient_evaluations: jnp.ndarray
    rho: jnp.ndarray
    grad_norm: jnp.ndarray
    perturbation_norm: jnp.ndarray
    cosine: jnp.ndarray
    perturbation_share: Any
    aux: Any


def top_level_keys(params) -> list:
    return list(params.keys()) if isinstance(params, dict) else []


def perturbation_shares(e, params) -> dict:
    """{top-level key: ||e_key||^2 / ||e||^2} (float32); {} for a non-dict tree."""
    keys = top_level_keys(params)
    if not keys:
        return {}
    squares = {k: jnp.square(tree_norm(e[k])) for k in keys}
    total = sum(squares.values())
    return {k: v / jnp.maximum(total, 1e-30) for k, v in squares.items()}


def group_info(*, evaluations, rho, g, e, out, aux, params) -> StepInfo:
    """StepInfo of one group (no group axis): vmap it over the groups.

    `g`, `e` may be None (not computed / no perturbation); then the clean
    gradient's entries are 0.
    """
    reference = out if g is None else g
    anchor = tree_norm(reference)
    # A zero of the anchor's varying type (so both branches of a lax.cond
    # under shard_map match), 0 even where the gradient is not finite.
    zero = jnp.where(True, jnp.float32(0.0), anchor)
    grad_norm = zero if g is None else anchor
    if e is None:
        e_norm, shares = zero, {k: zero for k in top_level_keys(params)}
    else:
        e_norm, shares = tree_norm(e), perturbation_shares(e, params)
    if g is None:
        cosine = zero
    else:
        cosine = tree_vdot(g, out) / jnp.maximum(grad_norm * tree_norm(out), 1e-30)
    return StepInfo(gradient_evaluations=zero + evaluations,
                    rho=zero + jnp.asarray(rho, jnp.float32), grad_norm=grad_norm,
                    perturbation_norm=e_norm, cosine=cosine,
                    perturbation_share=shares, aux=aux)


def groups_info(*, evaluations, rho, g, e, out, aux, params, axis_name) -> StepInfo:
    """group_info over the groups' stacks, pooled over groups and devices."""
    def one(g_k, e_k, out_k, aux_k):
        return group_info(evaluations=evaluations, rho=rho, g=g_k, e=e_k, out=out_k,
                          aux=aux_k, params=params)
    return pool(jax.vmap(one)(g, e, out, aux), axis_name)


def empty_info(params, aux_init=None) -> StepInfo:
    """The initial StepInfo: zeros of the shapes an update writes."""
    zero = jnp.zeros([], jnp.float32)
    aux = None if aux_init is None else jax.tree_util.tree_map(
        lambda x: jnp.zeros(jnp.shape(x), jnp.result_type(x)), aux_init)
    return StepInfo(zero, zero, zero, zero, zero,
                    {k: zero for k in top_level_keys(params)}, aux)


def split_aux(output, has_aux: bool):
    return output if has_aux else (output, None)


def check_update_args(name: str, params, grad_fn, *, has_aux=False, aux=None,
                      needs_aux=False):
    if params is None:
        raise ValueError(f"{name}: update needs params (the weights w)")
    if grad_fn is None:
        raise ValueError(f"{name}: update needs grad_fn=(params -> gradient on the "
                         "same batch)")
    if has_aux and needs_aux and aux is None:
        raise ValueError(f"{name}: with aux_init, update needs aux= (the quantities "
                         "grad_fn returns, at params)")


def evaluate(grad_fn, weights, axis_name: AxisName, has_aux: bool):
    """grad_fn at the groups' `weights`, each device taking its own gradient."""
    return split_aux(grad_fn(per_device(weights, axis_name)), has_aux)


# ---------------------------------------------------------- rho schedules

ScalarOrSchedule = Union[float, Callable]


def check_rho(name: str, rho, key: str = "rho"):
    # A schedule (or a traced value) can only be checked when called; a
    # constant is checked now.
    if not callable(rho) and not isinstance(rho, jax.Array) and not (
            rho >= 0 and rho < float("inf")):
        raise ValueError(f"{name}: {key} must be a finite number >= 0 (or a "
                         f"schedule), got {key}={rho!r}")


def rho_at(rho: ScalarOrSchedule, count):
    return rho(count) if callable(rho) else rho


def may_skip(rho: ScalarOrSchedule) -> str:
    """'never' (rho a constant > 0), 'always' (the constant 0: exactly the base
    optimizer, one pass) or 'when_zero' (a schedule: lax.cond on rho_t > 0, so
    steps at rho_t = 0, e.g. before late-phase SAM starts, cost one pass)."""
    if callable(rho) or isinstance(rho, jax.Array):
        return "when_zero"
    return "always" if rho == 0 else "never"


def with_optional_second_pass(rho_now, skip: str, two_pass, one_pass):
    """two_pass() or one_pass(), chosen statically or by lax.cond on rho_now > 0."""
    if skip == "always":
        return one_pass()
    if skip == "never":
        return two_pass()
    return jax.lax.cond(rho_now > 0, lambda _: two_pass(), lambda _: one_pass(), None)
