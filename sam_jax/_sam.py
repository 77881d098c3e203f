"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) as optax transforms.

One SAM step at weights w on a batch:
  g     = grad L(w)                        (the gradient the caller passes in)
  e     = rho * g / ||g||                  (SAM; global L2 norm over all leaves)
        = rho * T^2 g / ||T g||, T=|w|+eta (ASAM, Kwon et al. 2021)
  g_sam = grad L(w + e)                    (same batch, same random draws)
and the base optimizer steps at w with g_sam.

Two entry points share the same math:
- `sam(...)`: an optax `GradientTransformationExtraArgs`. Put it first in a chain;
  `update(grads, state, params, grad_fn=...)` returns g_sam.
- `grouped_sam_gradient(...)`: m-sharpness with m independent of the device
  count. The batch is split into groups of m examples, each group perturbs with
  its own gradient, and the groups' g_sam are averaged. Training loops with
  model state (BatchNorm) and metrics use this one, since it returns both passes'
  auxiliary outputs.

Per-device perturbation (the official code's default): inside `pmap`,
`shard_map` or `vmap` with `axis_name`, each device normalises its own gradient
and only g_sam is averaged over the axis. `sync_perturbation=True` averages g
before normalising, i.e. SAM on the global batch.
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

AxisName = Union[str, Sequence[str], None]
ScalarOrSchedule = Union[float, optax.Schedule]


class SAMState(NamedTuple):
    """State of `sam`: the step count, for a rho schedule."""
    count: jnp.ndarray


def _check_hyperparameters(rho, eta, eps):
    # A schedule can only be checked when called; a constant is checked now.
    if not callable(rho) and not rho >= 0:
        raise ValueError(f"sam: rho must be >= 0 (or a schedule), got rho={rho!r}")
    if not eta >= 0:
        raise ValueError(f"sam: eta must be >= 0, got eta={eta!r}")
    if not eps > 0:
        raise ValueError(f"sam: eps must be > 0, got eps={eps!r}")


def _global_norm(tree) -> jnp.ndarray:
    # Accumulate in float32 so bf16 gradients do not overflow or lose the norm.
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def perturbation(grads, params, rho, *, adaptive: bool = False,
                 eta: float = 0.01, eps: float = 1e-12):
    """Returns e, the ascent step of SAM (or ASAM), in the dtype of `params`.

    SAM:  e = rho * g / (||g|| + eps).
    ASAM: e = rho * T^2 g / (||T g|| + eps), T = |w| + eta.
    `eps` keeps a zero gradient finite (e = 0 then).
    """
    if adaptive:
        scale = jax.tree_util.tree_map(
            lambda w: jnp.abs(w.astype(jnp.float32)) + eta, params)
        scaled = jax.tree_util.tree_map(
            lambda t, g: t * g.astype(jnp.float32), scale, grads)
        norm = _global_norm(scaled)
        direction = jax.tree_util.tree_map(lambda t, tg: t * tg, scale, scaled)
    else:
        norm = _global_norm(grads)
        direction = jax.tree_util.tree_map(lambda g: g.astype(jnp.float32), grads)
    factor = rho / (norm + eps)
    return jax.tree_util.tree_map(
        lambda d, w: (factor * d).astype(w.dtype), direction, params)


def per_device(params, axis_name: AxisName):
    """Marks replicated `params` as differing per device along `axis_name`.

    Under `jax.shard_map` (with its default check_vma=True), `jax.grad` with
    respect to replicated weights returns the gradient SUMMED over devices,
    which would silently turn per-device SAM into SAM on the global batch.
    Taking the gradient at `per_device(params, axis_name)` gives each device its
    own gradient, as `pmap` does. It is a no-op under `pmap`, `vmap` or without
    an axis.
    """
    if axis_name is None:
        return params
    try:
        return jax.tree_util.tree_map(
            lambda x: jax.lax.pcast(x, axis_name, to="varying"), params)
    except ValueError:
        # vmap has no varying/invariant types: its per-example grads are
        # already per-"device".
        return params


def _apply(params, e):
    return jax.tree_util.tree_map(lambda w, d: w + d, params, e)


def _pmean(tree, axis_name: AxisName):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _cast_like(tree, like):
    return jax.tree_util.tree_map(lambda x, y: x.astype(y.dtype), tree, like)


def sam(rho: ScalarOrSchedule, *, adaptive: bool = False, eta: float = 0.01,
        eps: float = 1e-12, axis_name: AxisName = None,
        sync_perturbation: bool = False) -> optax.GradientTransformationExtraArgs:
    """SAM as an optax transform: the gradient at w becomes the gradient at w + e(w).

    Use it first in a chain:

        tx = optax.chain(sam_jax.sam(0.05), optax.sgd(0.1, momentum=0.9))
        updates, state = tx.update(grads, state, params, grad_fn=grad_fn)

    where `grads` is the gradient at `params` on the batch and
    `grad_fn(params) -> grads` computes the gradient on the same batch with the
    same random draws (dropout keys) and the same pre-step model state.

    Args:
      rho: radius of the neighbourhood, a float >= 0 or a schedule step -> rho.
        rho = 0 gives exactly the base optimizer's update (no second pass).
      adaptive: ASAM; e = rho * T^2 g / ||T g|| with T = |w| + eta.
      eta: ASAM's offset (0.01 as in the ASAM paper; 0 is the popular PyTorch
        port's formula).
      eps: added to the norm so a zero gradient gives e = 0, never NaN.
      axis_name: inside `pmap` / `shard_map` / `vmap`, each device perturbs with its
        own gradient (m-sharpness with m = per-device batch) and the returned
        gradient is averaged over this axis.
      sync_perturbation: average g over `axis_name` before normalising (SAM on
        the global batch).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update` needs
      `params` and `grad_fn`.
    """
    _check_hyperparameters(rho, eta, eps)
    if sync_perturbation and axis_name is None:
        raise ValueError("sam: sync_perturbation=True needs an axis_name")
    skip_second_pass = not callable(rho) and rho == 0

    def init_fn(params):
        del params
        return SAMState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("sam: update needs params (the weights w)")
        if grad_fn is None:
            raise ValueError("sam: update needs grad_fn=(params -> gradient on the "
                             "same batch)")
        new_state = SAMState(count=optax.safe_increment(state.count))
        if skip_second_pass:
            return _pmean(updates, axis_name), new_state
        rho_now = rho(state.count) if callable(rho) else rho
        g = _pmean(updates, axis_name) if sync_perturbation else updates
        e = perturbation(g, params, rho_now, adaptive=adaptive, eta=eta, eps=eps)
        sam_grads = _pmean(grad_fn(per_device(_apply(params, e), axis_name)),
                           axis_name)
        return _cast_like(sam_grads, updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _sequential(fn):
    """Like jax.vmap(fn) over the leading axis, one slice at a time (lax.map)."""
    return lambda *xs: jax.lax.map(lambda args: fn(*args), xs)


class GroupedSAMOutput(NamedTuple):
    """What `grouped_sam_gradient` returns.

    grads: mean over groups (and over `axis_name`) of the gradient at w + e_k.
    clean_loss, clean_aux: the first (unperturbed) pass, stacked over groups.
    perturbed_loss, perturbed_aux: the second pass, stacked over groups.
    """
    grads: Any
    clean_loss: jnp.ndarray
    clean_aux: Any
    perturbed_loss: jnp.ndarray
    perturbed_aux: Any


GROUP_MAPS = ("vmap", "sequential")


def grouped_sam_gradient(
    loss_fn: Callable[..., Any], params, batch, *, rho, examples_per_perturbation: int,
    adaptive: bool = False, eta: float = 0.01, eps: float = 1e-12,
    axis_name: AxisName = None, sync_perturbation: bool = False,
    group_map: str = "vmap") -> GroupedSAMOutput:
    """SAM gradient with one perturbation per group of m examples (m-sharpness).

    The batch (a pytree whose leaves have a leading example axis) is split into
    G = batch_size / m consecutive groups. Group k runs both passes on its own
    m examples: g_k = grad L_k(w), e_k = e(g_k), returns mean_k grad L_k(w + e_k).
    With m = the per-device batch this is exactly the official per-device
    SAM; inside pmap / shard_map, G * n_devices groups of m form the global batch.

    Args:
      loss_fn: `loss_fn(params, group_batch, group_index) -> (loss, aux)`;
        `group_index` (int32 scalar, 0..G-1 on this device) lets the caller draw
        per-group randomness (dropout) that both passes share; `aux` holds e.g.
        the updated BatchNorm statistics and the logits.
      params: the weights w.
      batch: pytree of arrays with a leading axis divisible by m.
      rho: radius (float or traced scalar).
      examples_per_perturbation: m.
      adaptive, eta, eps: as in `sam`.
      axis_name: the device axis, if any: the gradient is averaged over it (and
        over groups), and `sync_perturbation` averages g over it and the groups.
      sync_perturbation: one perturbation from the mean gradient of all groups
        (and devices) instead of one per group.
      group_map: "vmap" runs the groups in parallel (fast, memory grows with G:
        activations of the whole batch live at once, as with no grouping);
        "sequential" runs them one after another with `lax.map` (memory of one
        group, G small sequential steps: slower on accelerators with spare
        parallelism, same numbers).

    Returns:
      A `GroupedSAMOutput`.
    """
    _check_hyperparameters(rho, eta, eps)
    leaves = jax.tree_util.tree_leaves(batch)
    batch_size = leaves[0].shape[0]
    m = examples_per_perturbation
    if not isinstance(m, int) or m <= 0 or batch_size % m:
        raise ValueError(
            f"examples_per_perturbation={m!r} must be a positive divisor of the "
            f"per-device batch size {batch_size}")
    if group_map not in GROUP_MAPS:
        raise ValueError(f"group_map={group_map!r}; allowed: {', '.join(GROUP_MAPS)}")
    num_groups = batch_size // m
    skip_second_pass = not isinstance(rho, jax.Array) and not callable(rho) and rho == 0
    groups = jax.tree_util.tree_map(
        lambda x: x.reshape((num_groups, m) + x.shape[1:]), batch)
    indices = jnp.arange(num_groups, dtype=jnp.int32)
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    params = per_device(params, axis_name)

    def clean_pass(group, index):
        (loss, aux), g = value_and_grad(params, group, index)
        return g, loss, aux

    def perturbed_pass(group, index, g):
        e = perturbation(g, params, rho, adaptive=adaptive, eta=eta, eps=eps)
        (loss, aux), g_sam = value_and_grad(_apply(params, e), group, index)
        return g_sam, loss, aux

    def mean_over_groups(tree):
        return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), tree)

    if skip_second_pass:
        # rho = 0 is plain gradient descent: one pass, reported as both passes.
        g, clean_loss, clean_aux = (jax.vmap(clean_pass) if group_map == "vmap"
                                    else _sequential(clean_pass))(groups, indices)
        sam_grads = mean_over_groups(g)
        perturbed_loss, perturbed_aux = clean_loss, clean_aux
    elif group_map == "vmap":
        g, clean_loss, clean_aux = jax.vmap(clean_pass)(groups, indices)
        if sync_perturbation:
            g_mean = _pmean(mean_over_groups(g), axis_name)
            perturbed = jax.vmap(perturbed_pass, in_axes=(0, 0, None))(
                groups, indices, g_mean)
        else:
            perturbed = jax.vmap(perturbed_pass)(groups, indices, g)
        sam_grads, perturbed_loss, perturbed_aux = perturbed
        sam_grads = mean_over_groups(sam_grads)
    elif sync_perturbation:
        # Sequential with a shared perturbation needs every group's g first.
        def clean_step(total, xs):
            group, index = xs
            g, loss, aux = clean_pass(group, index)
            return jax.tree_util.tree_map(jnp.add, total, g), (loss, aux)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        g_sum, (clean_loss, clean_aux) = jax.lax.scan(clean_step, zeros,
                                                      (groups, indices))
        g_mean = _pmean(jax.tree_util.tree_map(lambda x: x / num_groups, g_sum),
                        axis_name)

        def perturbed_step(total, xs):
            group, index = xs
            g_sam, loss, aux = perturbed_pass(group, index, g_mean)
            return jax.tree_util.tree_map(jnp.add, total, g_sam), (loss, aux)
        g_sam_sum, (perturbed_loss, perturbed_aux) = jax.lax.scan(
            perturbed_step, zeros, (groups, indices))
        sam_grads = jax.tree_util.tree_map(lambda x: x / num_groups, g_sam_sum)
    else:
        def step(total, xs):
            group, index = xs
            g, clean_loss, clean_aux = clean_pass(group, index)
            g_sam, loss, aux = perturbed_pass(group, index, g)
            total = jax.tree_util.tree_map(jnp.add, total, g_sam)
            return total, (clean_loss, clean_aux, loss, aux)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        g_sam_sum, (clean_loss, clean_aux, perturbed_loss, perturbed_aux) = (
            jax.lax.scan(step, zeros, (groups, indices)))
        sam_grads = jax.tree_util.tree_map(lambda x: x / num_groups, g_sam_sum)

    sam_grads = _pmean(sam_grads, axis_name)
    return GroupedSAMOutput(sam_grads, clean_loss, clean_aux, perturbed_loss,
                            perturbed_aux)
