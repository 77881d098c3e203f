"""What a method's update measured: `StepInfo`, computed per group and pooled
over groups and devices, and the checks of an update's arguments.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sam_jax._trees import tree_norm, tree_vdot
from sam_jax.groups import pool


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
