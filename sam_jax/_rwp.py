"""Random weight perturbation, mixed with the clean gradient: RWP (Li et al.
2022) / m-RWP (Li et al., TMLR 2024), as the authors' code (nblt/RWP,
train_rwp_parallel.py):

  v ~ N(0, (sigma ||W_j||)^2) elementwise, per output filter j of each kernel
      (flax's last axis; the norm over the filter's other axes); for a vector
      (bias, BatchNorm) the norm of the whole vector. Drawn afresh every step.
  g_p = grad L(w + v)
  out = mix * g_p + (1 - mix) * g

g_p does not depend on g: the two passes are independent (one sequential
pass on hardware that runs them side by side). The authors draw the two
gradients from two minibatches; here both use the step's batch, as every
method here does.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax.collectives import AxisName, pmean
from sam_jax.groups import (add_to_groups, broadcast_groups, evaluate, group_mean,
                            num_groups_of, plain_form)


class RWPState(NamedTuple):
    count: jnp.ndarray
    info: StepInfo


def filter_noise(key, params, sigma):
    """v: Gaussian noise with std sigma times each output filter's norm."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noise = []
    for k, w in zip(keys, leaves):
        w32 = w.astype(jnp.float32)
        if w.ndim >= 2:
            norm = jnp.sqrt(jnp.sum(jnp.square(w32), axis=tuple(range(w.ndim - 1)),
                                    keepdims=True))
        else:
            norm = jnp.sqrt(jnp.sum(jnp.square(w32))) + 1e-16
        noise.append(sigma * norm * jax.random.normal(k, w.shape, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, noise)


def rwp(sigma: float, *, mix: float = 0.5, axis_name: AxisName = None,
        grouped: bool = False, aux_init=None,
        seed: int = 0) -> optax.GradientTransformationExtraArgs:
    """m-RWP: mix * grad L(w + v) + (1 - mix) * grad L(w), v filter-wise Gaussian.

    Args:
      sigma: the noise scale relative to each filter's norm (the authors'
        gamma / sigma, 0.01 on CIFAR).
      mix: the weight of the perturbed gradient (the authors' alpha / lambda;
        1 is plain RWP without the clean gradient).
      axis_name, grouped, aux_init: as in `sam_jax.sam`.
      seed: the noise draws, folded with the step (one draw for all groups
        and devices).
    """
    check_number("rwp.sigma", sigma, 0)
    check_number("rwp.mix", mix, 0, 1)
    has_aux = aux_init is not None

    def init_fn(params):
        return RWPState(count=jnp.zeros([], jnp.int32), info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del aux, extra_args
        check_update_args("rwp", params, grad_fn)
        g = updates
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
        v = broadcast_groups(filter_noise(key, params, sigma), num_groups_of(g))
        g_p, aux_out = evaluate(grad_fn, add_to_groups(params, v), axis_name, has_aux)
        out = jax.tree_util.tree_map(
            lambda a, b: (mix * a.astype(jnp.float32)
                          + (1 - mix) * b.astype(jnp.float32)).astype(b.dtype), g_p, g)
        out = optax.tree.cast_like(out, g)
        info = groups_info(evaluations=2, rho=sigma, g=g, e=v, out=out, aux=aux_out,
                           params=params, axis_name=axis_name)
        return pmean(group_mean(out), axis_name), RWPState(
            count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def _build(config, ctx):
    c = config.rwp
    return rwp(c.sigma, mix=c.mix, seed=ctx.seed, **family.common(ctx))


METHOD = family.Method(
    "rwp", "gradient at w + filter-wise Gaussian noise, mixed with g",
    "Li et al. 2022; TMLR 2024", "sam_jax.rwp", {
        "sigma": family.Setting(0.01, "noise std relative to each filter's norm"),
        "mix": family.Setting(0.5, "weight of the perturbed gradient"),
    }, _build, family.fixed_cost("2", "1"), radius="rwp.sigma")
