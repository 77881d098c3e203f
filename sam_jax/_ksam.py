"""K-SAM (Ni, Chiang, Geiping, Goldblum, Wilson & Goldstein 2022, "K-SAM:
Sharpness-Aware Minimization at the Speed of SGD", arXiv 2210.12864): both of
SAM's passes on the k examples of highest loss only.

Per group of m examples, from the abstract's rule (no author code was found):
  l_i = l_i(w) for every example (a forward pass: the trainer's per-example
  losses), S = the K = max(1, int(fraction m)) examples of largest l_i,
  g_S = grad of the mean loss over S at w,
  e = rho g_S / ||g_S||,
  out = grad of the mean loss over S at w + e.
The clean gradient the trainer passes in is not used, so its backward pass
is dead code that XLA removes: a step costs a full forward pass and two
forward and backward passes on K of the m examples (XLA's cost analysis of
the compiled training step, wrn10_1, batch 16, one CPU device, fraction 0.5:
1.37 times SGD's flops, SAM's 2.02).

Like ESAM's selection, it needs `example_losses` (the per-example losses at w)
and a grad_fn taking `indices=` (the examples of each group to differentiate
on).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax import _sam
from sam_jax._radius import check_rho, rho_at
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax.collectives import AxisName, per_device, pmean
from sam_jax.groups import (add_to_groups, broadcast_groups, group_mean, num_groups_of,
                            plain_form, split_aux)


class KSAMState(NamedTuple):
    count: jnp.ndarray  # the step, for a radius schedule
    info: StepInfo


def selected_count(fraction: float, group_size: int) -> int:
    """K: the examples of each group in both passes (at least one)."""
    return max(1, int(fraction * group_size))


def ksam(rho: float, *, fraction: float = 0.5, eps: float = 1e-12,
         axis_name: AxisName = None, grouped: bool = False,
         aux_init=None) -> optax.GradientTransformationExtraArgs:
    """K-SAM: SAM's two passes on the highest-loss examples of each group.

    Args:
      rho: SAM's radius (a constant or a schedule of the step).
      fraction: K / m, the share of each group's examples in both passes.
      eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.
    """
    check_rho("ksam", rho)
    check_number("ksam.fraction", fraction, 0, 1, low_open=True)
    has_aux = aux_init is not None

    def init_fn(params):
        return KSAMState(count=jnp.zeros([], jnp.int32),
                         info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None,
                  example_losses=None, **extra_args):
        del aux, extra_args
        check_update_args("ksam", params, grad_fn)
        if example_losses is None:
            raise ValueError("ksam: update needs example_losses= (the per-example "
                             "losses at w)")
        group_size = example_losses.shape[-1]
        count = selected_count(fraction, group_size)
        _, indices = jax.lax.top_k(jax.lax.stop_gradient(example_losses), count)
        at_w = per_device(broadcast_groups(params, num_groups_of(updates)), axis_name)
        g, _ = split_aux(grad_fn(at_w, indices=indices), has_aux)
        g = optax.tree.cast_like(g, updates)
        rho_t = rho_at(rho, state.count)
        e = jax.vmap(lambda g_k: _sam.perturbation(g_k, params, rho_t, eps=eps))(g)
        weights = per_device(add_to_groups(params, e), axis_name)
        out, aux_out = split_aux(grad_fn(weights, indices=indices), has_aux)
        out = optax.tree.cast_like(out, updates)
        info = groups_info(evaluations=2.0 * count / group_size, rho=rho_t, g=g, e=e,
                           out=out, aux=aux_out, params=params, axis_name=axis_name)
        return pmean(group_mean(out), axis_name), KSAMState(
            count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def _build(config, ctx):
    c = config.ksam
    return ksam(family.radius(c.rho, ctx), fraction=c.fraction, **family.common(ctx))


METHOD = family.Method(
    "ksam", "both SAM passes on the highest-loss fraction of each group's examples",
    "Ni et al. 2022 (arXiv 2210.12864)", "sam_jax.ksam", {
        "rho": family.Setting(0.05, "the radius (SAM's CIFAR value; the K-SAM paper's "
                              "own was not read here)"),
        "fraction": family.Setting(0.5, "k / m, the share of each group's examples in "
                                   "both passes (unverified: the paper's value could "
                                   "not be read here)"),
    }, _build,
    lambda c: (f"2 x {c.ksam.fraction:g} (+1 forward)", "3"),
    radius="ksam.rho", example_losses=True)
